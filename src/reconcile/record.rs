//! Recording statuses: the transitions the read model found (`crate::view`)
//! are written to the apps' status records, each with the drift signal it calls
//! for. The daemon's only writes outside a cycle; fenced like every other.

use super::drift;
use crate::layout::AppName;
use crate::status::{Record, Status};
use crate::store::{BATCH, DriftWrite, StatusWrite, Store, StoreError};
use crate::view::{AppStatus, every_app, statuses_of};

/// Apps per status (every status, zeros included), in [`Status::ALL`] order.
pub type StatusCounts = Vec<(Status, usize)>;

/// Evaluates every app's status and records the transitions, with their drift
/// signals; returns how many apps have each status. A batch of apps at a time:
/// the statuses of 10,000 apps at once were about 13 MB of heap.
pub async fn update_statuses(
    store: &mut Store,
    sync_timeout: chrono::Duration,
) -> Result<(StatusCounts, Recorded), StoreError> {
    let apps = every_app(store).await?;
    let names: Vec<&AppName> = apps.iter().collect();
    let now = chrono::Utc::now();
    let mut counts: StatusCounts = Status::ALL.into_iter().map(|s| (s, 0)).collect();
    let mut recorded = Recorded::default();
    for batch in names.chunks(BATCH) {
        let some = statuses_of(store, batch, now, sync_timeout).await?;
        for app in &some {
            if let Some((_, n)) = counts.iter_mut().find(|(s, _)| *s == app.record.status) {
                *n += 1;
            }
        }
        recorded.absorb(record_changes(store, &some).await?);
    }
    Ok((counts, recorded))
}

/// [`update_statuses`] for `apps` only: what a cycle that wrote them changed.
pub async fn update_statuses_of(
    store: &mut Store,
    apps: &[AppName],
    sync_timeout: chrono::Duration,
) -> Result<Recorded, StoreError> {
    let names: Vec<&AppName> = apps.iter().collect();
    let some = statuses_of(store, &names, chrono::Utc::now(), sync_timeout).await?;
    record_changes(store, &some).await
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
    let changed: Vec<&AppStatus> = statuses.iter().filter(|s| s.changed()).collect();
    let writes: Vec<StatusWrite> = changed
        .iter()
        .map(|s| StatusWrite {
            app: s.app.clone(),
            fields: record_fields(&s.record),
            drift: drift_write(s),
        })
        .collect();
    let published = store.record_statuses(&writes).await?;
    let mut recorded = Recorded {
        records: writes.len(),
        ..Recorded::default()
    };
    let sent = changed.iter().zip(&writes).zip(published);
    for ((status, write), _) in sent.filter(|(_, sent)| *sent) {
        let resolved = write
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

/// The drift signal an app's transition calls for (see `drift::transition`).
fn drift_write(status: &AppStatus) -> Option<DriftWrite> {
    let transition = status.transition.as_deref()?;
    drift::transition(&drift::Facts {
        app: &status.app,
        record: &status.record,
        previous: transition.previous.as_ref(),
        signalled: transition.signalled.as_deref(),
        desired: status.desired.as_ref(),
        stored: transition.stored.as_ref(),
        observed: status.observed.as_ref(),
        now: transition.at,
    })
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
