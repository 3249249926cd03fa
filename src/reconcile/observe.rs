//! Every app's status, from what the store holds: desired (daemon), observed and
//! heartbeat (child), and the previous status record. Reading and interpreting
//! the hashes is here; what a status means is `crate::status` (pure).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::drift;
use crate::layout::AppName;
use crate::status::{self, Desired, Observed, Record, ReportedState, SyncMode};
use crate::store::{AppState, DriftWrite, StatusWrite, Store, StoreError};

/// One app's status and the facts behind it.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub app: AppName,
    #[serde(flatten)]
    pub record: Record,
    pub desired: Option<Desired>,
    pub observed: Option<Observed>,
    /// Whether the status differs from the stored record (a transition).
    #[serde(skip)]
    pub changed: bool,
    /// The drift signal the transition calls for (see `drift::transition`).
    #[serde(skip)]
    pub drift: Option<DriftWrite>,
}

/// Evaluates every app in Git and every app a child reports for. A hash that
/// cannot be read (a child wrote garbage) makes its part absent, with a warning:
/// one bad report never hides the others.
pub async fn statuses(
    store: &mut Store,
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Result<Vec<AppStatus>, StoreError> {
    let apps = every_app(store).await?;
    let names: Vec<&AppName> = apps.iter().collect();
    statuses_of(store, &names, now, sync_timeout).await
}

/// Every app in Git and every app a child reports for, in name order.
pub async fn every_app(store: &mut Store) -> Result<BTreeSet<AppName>, StoreError> {
    Ok(store
        .app_names()
        .await?
        .into_iter()
        .chain(store.observed_apps().await?)
        .collect())
}

/// The statuses of `names` only.
pub async fn statuses_of(
    store: &mut Store,
    names: &[&AppName],
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Result<Vec<AppStatus>, StoreError> {
    let states = store.app_states(names).await?;
    // Sized up front: statuses are large, and a vector doubled to 10,000 of
    // them is 8 MB, twice that while it grows.
    let mut out = Vec::with_capacity(names.len());
    out.extend(
        names
            .iter()
            .zip(states)
            .filter_map(|(app, state)| evaluate(app, &state, now, sync_timeout)),
    );
    Ok(out)
}

/// One app's status from its stored state; `None` when the store holds neither
/// desired nor observed state for it.
pub(super) fn evaluate(
    app: &AppName,
    state: &AppState,
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Option<AppStatus> {
    let desired = parsed(app, "desired", desired(state));
    let observed = parsed(app, "observed", observed(&state.observed));
    let previous = parsed(app, "status", record(&state.record));
    let inputs = status::Inputs {
        desired: desired.as_ref(),
        observed: observed.as_ref(),
        heartbeat: state.heartbeat.is_some(),
        now,
        sync_timeout,
    };
    let record = status::evaluate(&inputs, previous.as_ref())?;
    let changed = previous.as_ref().map(|p| p.status) != Some(record.status);
    let drift = drift::transition(&drift::Facts {
        app,
        record: &record,
        previous: previous.as_ref(),
        signalled: state.record.get("drift_key").map(String::as_str),
        desired: desired.as_ref(),
        desired_hash: &state.desired,
        observed: observed.as_ref(),
        now,
    });
    Some(AppStatus {
        app: app.clone(),
        record,
        desired,
        observed,
        changed,
        drift,
    })
}

/// What [`record_changes`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Status records written: apps whose status changed.
    pub records: usize,
    /// Drift signals published: changes into a drift status.
    pub drift: usize,
    /// Resolutions published: back to `synced` after a drift.
    pub resolved: usize,
}

impl Recorded {
    /// Adds what a later call recorded.
    pub fn absorb(&mut self, later: Recorded) {
        self.records += later.records;
        self.drift += later.drift;
        self.resolved += later.resolved;
    }

    /// Signals of kind `drift` published, resolutions included.
    pub fn signals(&self) -> usize {
        self.drift + self.resolved
    }
}

/// Stores the records of apps whose status changed, each with its drift signal
/// (fenced: only the daemon). A transition already signalled (by a retry, or
/// another daemon that evaluated the same state) is not published again.
pub async fn record_changes(
    store: &mut Store,
    statuses: &[AppStatus],
) -> Result<Recorded, StoreError> {
    let changed: Vec<&AppStatus> = statuses.iter().filter(|s| s.changed).collect();
    let writes: Vec<StatusWrite> = changed
        .iter()
        .map(|s| StatusWrite {
            app: s.app.clone(),
            fields: record_fields(&s.record),
            drift: s.drift.clone(),
        })
        .collect();
    let published = store.record_statuses(&writes).await?;
    let mut recorded = Recorded {
        records: writes.len(),
        ..Recorded::default()
    };
    for (status, _) in changed.iter().zip(published).filter(|(_, sent)| *sent) {
        let resolved = status
            .drift
            .as_ref()
            .and_then(|d| d.signal.drift.as_ref())
            .is_some_and(|d| d.resolved);
        let record = &status.record;
        if resolved {
            recorded.resolved += 1;
            tracing::info!(app = %status.app, status = %record.status, reason = %record.reason, "drift resolved");
        } else {
            recorded.drift += 1;
            tracing::info!(app = %status.app, status = %record.status, reason = %record.reason, "drift signalled");
        }
    }
    Ok(recorded)
}

fn record_fields(record: &Record) -> Vec<(&'static str, String)> {
    vec![
        ("status", record.status.as_str().to_owned()),
        ("since", record.since.timestamp_millis().to_string()),
        (
            "unsynced_since",
            record
                .unsynced_since
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
        ),
        ("reason", record.reason.clone()),
    ]
}

fn parsed<T>(app: &AppName, what: &str, result: Result<Option<T>, String>) -> Option<T> {
    result.unwrap_or_else(|e| {
        tracing::warn!(%app, "ignoring unreadable {what} state: {e}");
        None
    })
}

fn field<'a>(hash: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    hash.get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("field {name} is missing"))
}

fn number(hash: &HashMap<String, String>, name: &str) -> Result<u64, String> {
    let text = field(hash, name)?;
    text.parse()
        .map_err(|_| format!("field {name} is not a number: {:?}", shorten(text)))
}

fn millis(hash: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, String> {
    let text = field(hash, name)?;
    text.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| format!("field {name} is not a time in Unix ms: {:?}", shorten(text)))
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

/// `None` for an app never written or pruned (a tombstone has no digest).
fn desired(state: &AppState) -> Result<Option<Desired>, String> {
    let hash = &state.desired;
    if !hash.contains_key("digest") {
        return Ok(None);
    }
    Ok(Some(Desired {
        digest: field(hash, "digest")?.to_owned(),
        generation: number(hash, "generation")?,
        sync: match hash.get("sync").map(String::as_str) {
            Some("manual") => SyncMode::Manual,
            _ => SyncMode::Auto,
        },
        since: millis(hash, "signalled_at")?,
    }))
}

fn observed(hash: &HashMap<String, String>) -> Result<Option<Observed>, String> {
    if hash.is_empty() {
        return Ok(None);
    }
    Ok(Some(Observed {
        digest: field(hash, "digest")?.to_owned(),
        generation: number(hash, "generation")?,
        state: field(hash, "status")?
            .parse::<ReportedState>()
            .map_err(|e| e.to_string())?,
        message: hash.get("message").cloned().unwrap_or_default(),
        at: millis(hash, "at")?,
    }))
}

fn record(hash: &HashMap<String, String>) -> Result<Option<Record>, String> {
    if hash.is_empty() {
        return Ok(None);
    }
    let unsynced_since = match hash.get("unsynced_since").map(String::as_str) {
        None | Some("") => None,
        Some(_) => Some(millis(hash, "unsynced_since")?),
    };
    Ok(Some(Record {
        status: field(hash, "status")?
            .parse()
            .map_err(|e: status::ParseError| e.to_string())?,
        since: millis(hash, "since")?,
        unsynced_since,
        reason: hash.get("reason").cloned().unwrap_or_default(),
    }))
}
