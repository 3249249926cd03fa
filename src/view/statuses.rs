//! Every app's status, from what the store holds: desired (daemon), observed and
//! heartbeat (child), and the previous status record. Reading and interpreting
//! the hashes is here; what a status means is `crate::status` (pure); recording
//! a transition and its drift signal is the reconciler's (`reconcile::record`).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::layout::AppName;
use crate::protocol::{DesiredRecord, Keys, ObservedRecord, RecordError};
use crate::status::{self, Desired, Observed, Record};
use crate::store::{AppState, Store, StoreError};

/// One app's status and the facts behind it.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub app: AppName,
    #[serde(flatten)]
    pub record: Record,
    pub desired: Option<Desired>,
    pub observed: Option<Observed>,
    /// Set when the status differs from the stored record: what the store held
    /// before, for whoever records the transition. Boxed and absent otherwise:
    /// most evaluations find no transition, and an overview holds every app.
    #[serde(skip)]
    pub transition: Option<Box<Transition>>,
}

impl AppStatus {
    /// Whether the status differs from the stored record (a transition).
    pub fn changed(&self) -> bool {
        self.transition.is_some()
    }
}

/// What the store held before an evaluation that found a transition. The read
/// model hands these facts over and never acts on them: whether a transition is
/// signalled, and with what, is the reconciler's decision.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The stored record; `None` for an app evaluated for the first time.
    pub previous: Option<Record>,
    /// The stored record's `drift_key`: the last transition signalled.
    pub signalled: Option<String>,
    /// The stored `:desired` record (a tombstone's too), for what a signal's
    /// payload copies; `None` when there is none or it is unreadable.
    pub stored: Option<DesiredRecord>,
    /// When the evaluation ran.
    pub at: DateTime<Utc>,
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
    let keys = store.keys();
    // Sized up front: statuses are large, and a vector doubled to 10,000 of
    // them is 8 MB, twice that while it grows.
    let mut out = Vec::with_capacity(names.len());
    out.extend(
        names
            .iter()
            .zip(states)
            .filter_map(|(app, state)| evaluate(keys, app, &state, now, sync_timeout)),
    );
    Ok(out)
}

/// One app's status from its stored state; `None` when the store holds neither
/// desired nor observed state for it.
pub fn evaluate(
    keys: &Keys,
    app: &AppName,
    state: &AppState,
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Option<AppStatus> {
    let keys = keys.app(app);
    let stored = parsed(app, DesiredRecord::decode(&keys.desired(), &state.desired));
    let desired = stored.as_ref().and_then(desired);
    let (observed, unreadable_report) = match (
        &state.observed_error,
        ObservedRecord::decode(&keys.observed(), &state.observed),
    ) {
        (Some(error), _) => (None, Some(error.clone())),
        (None, Ok(record)) => (record.and_then(observed), None),
        (None, Err(e)) => (None, Some(e.to_string())),
    };
    let previous = parsed(app, record(&keys.status(), &state.record));
    let inputs = status::Inputs {
        desired: desired.as_ref(),
        observed: observed.as_ref(),
        unreadable_report: unreadable_report.as_deref(),
        heartbeat: state.heartbeat.is_some(),
        now,
        sync_timeout,
    };
    let record = status::evaluate(&inputs, previous.as_ref())?;
    let changed = previous.as_ref().map(|p| p.status) != Some(record.status);
    let transition = changed.then(|| {
        Box::new(Transition {
            previous,
            signalled: state.record.get("drift_key").cloned(),
            stored,
            at: now,
        })
    });
    Some(AppStatus {
        app: app.clone(),
        record,
        desired,
        observed,
        transition,
    })
}

fn parsed<T>(app: &AppName, result: Result<Option<T>, RecordError>) -> Option<T> {
    result.unwrap_or_else(|e| {
        tracing::warn!(%app, error = %e, "ignoring an unreadable record");
        None
    })
}

/// What the status model needs of an app in Git; `None` for a tombstone.
fn desired(record: &DesiredRecord) -> Option<Desired> {
    let app = record.app.as_ref()?;
    Some(Desired {
        digest: app.digest.clone(),
        generation: record.generation,
        sync: app.sync,
        since: millis(record.signalled_at)?,
    })
}

fn observed(record: ObservedRecord) -> Option<Observed> {
    Some(Observed {
        at: millis(record.at)?,
        digest: record.digest,
        generation: record.generation,
        state: record.status,
        message: record.message,
    })
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// The daemon's own status record (`:status`).
fn record(key: &str, hash: &HashMap<String, String>) -> Result<Option<Record>, RecordError> {
    if hash.is_empty() {
        return Ok(None);
    }
    let error = |field: &'static str, problem: String| RecordError {
        key: key.to_owned(),
        field,
        problem,
    };
    let time = |field: &'static str| -> Result<DateTime<Utc>, RecordError> {
        let text = hash.get(field).map_or("", String::as_str);
        text.parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| error(field, format!("{:?} is not a time in Unix ms", clip(text))))
    };
    let unsynced_since = match hash.get("unsynced_since").map(String::as_str) {
        None | Some("") => None,
        Some(_) => Some(time("unsynced_since")?),
    };
    Ok(Some(Record {
        status: hash
            .get("status")
            .map_or("", String::as_str)
            .parse()
            .map_err(|e: status::ParseError| error("status", e.to_string()))?,
        since: time("since")?,
        unsynced_since,
        reason: hash.get("reason").cloned().unwrap_or_default(),
    }))
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}
