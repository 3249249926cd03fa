//! Every app's status, from what the store holds: desired (daemon), observed and
//! heartbeat (child), and the previous status record. Reading and interpreting
//! the hashes is here; what a status means is `crate::status` (pure); recording
//! a transition and its drift signal is the reconciler's (`reconcile::record`).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::layout::AppName;
use crate::status::{self, Desired, Observed, Record, ReportedState, SyncMode};
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
    /// The `:desired` fields a signal's payload copies (`SIGNAL_FIELDS`). Only
    /// these: the hash may hold a whole held signal.
    pub desired_hash: HashMap<String, String>,
    /// When the evaluation ran.
    pub at: DateTime<Utc>,
}

/// The `:desired` fields a [`Transition`] keeps: those a signal's payload copies
/// (a prune's tombstone holds only the revision).
const SIGNAL_FIELDS: [&str; 4] = ["parent", "revision", "config_digest", "wave"];

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
pub fn evaluate(
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
    let transition = changed.then(|| {
        Box::new(Transition {
            previous,
            signalled: state.record.get("drift_key").cloned(),
            desired_hash: SIGNAL_FIELDS
                .iter()
                .filter_map(|&f| Some((f.to_owned(), state.desired.get(f)?.clone())))
                .collect(),
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
