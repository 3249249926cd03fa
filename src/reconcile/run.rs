//! The daemon's loop: one cycle at a time, on the jittered poll interval, backing
//! off after failures, and at once (coalesced) when triggered by a webhook or the
//! API. Statuses are evaluated after a cycle that wrote something and at least
//! every [`STATUS_INTERVAL`], never on every idle poll.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::{StatusCounts, update_statuses};
use super::{CycleError, CycleReport, Reconciler};
use crate::source::Schedule;
use crate::store::Store;

/// How often statuses are re-evaluated when nothing was written: children report
/// on their own time, so statuses move without a commit. Evaluation reads every
/// app, so it stays off the idle poll path.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Asks the loop to cycle now. Triggers that arrive while a cycle runs collapse
/// into one more cycle after it: a burst of webhooks costs one fetch.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    pub fn fire(&self) {
        self.0.notify_one();
    }

    /// Completes when the trigger fires, or at once if it fired since the last
    /// wait, and consumes that request: what the loop waits on.
    pub async fn fired(&self) {
        self.0.notified().await;
    }
}

/// What one turn of the loop did, for logs, metrics and health.
pub struct Cycle<'a> {
    pub result: &'a Result<CycleReport, CycleError>,
    pub elapsed: Duration,
    /// How many apps have each status, when an evaluation finished since the
    /// last turn.
    pub statuses: Option<&'a StatusCounts>,
    /// Drift signals (resolutions included) the evaluations beside the loop
    /// published since the last turn.
    pub drift_signals: u64,
    /// Failed cycles in a row, and the delay before the next one.
    pub failures: u32,
    pub next_in: Duration,
}

/// What the status task hands the loop after each evaluation.
#[derive(Debug, Default)]
struct Evaluated {
    counts: StatusCounts,
    /// Drift signals published since the task started: a running total, so
    /// the loop misses none when several evaluations finish between two turns
    /// (the watch channel keeps only the last value).
    drift_signals: u64,
}

/// Cycles until `shutdown` is cancelled; `on_cycle` sees every turn. A failure
/// is never fatal: the last good state stays desired and the next cycle comes
/// after the backoff.
///
/// Statuses are evaluated beside the loop, not in it: an evaluation reads every
/// app (hundreds of milliseconds at 10,000 apps) and must not delay the next
/// fetch a webhook asks for. A cycle that wrote something asks for one at once.
pub async fn run<F>(
    reconciler: &mut Reconciler,
    mut schedule: Schedule,
    trigger: Trigger,
    shutdown: CancellationToken,
    sync_timeout: chrono::Duration,
    mut on_cycle: F,
) where
    F: FnMut(&Cycle),
{
    let evaluate = Arc::new(Notify::new());
    let (statuses_tx, mut statuses_rx) = watch::channel(Arc::new(Evaluated::default()));
    let mut drift_seen = 0;
    let evaluator = tokio::spawn(evaluate_statuses(
        reconciler.store().clone(),
        sync_timeout,
        Arc::clone(&evaluate),
        statuses_tx,
        shutdown.clone(),
    ));
    loop {
        let started = Instant::now();
        let result = reconciler.cycle().await;
        let elapsed = started.elapsed();
        if result
            .as_ref()
            .is_ok_and(|r| r.written > 0 || r.released > 0)
        {
            evaluate.notify_one();
        }
        let delay = schedule.next_delay(result.is_ok(), fastrand::f64());
        if let Err(e) = &result {
            tracing::warn!(
                error = %crate::error_chain(e),
                failures = schedule.failures(),
                retry_in_ms = delay.as_millis() as u64,
                "cycle failed; last good state kept"
            );
        }
        let evaluated = statuses_rx
            .has_changed()
            .unwrap_or(false)
            .then(|| Arc::clone(&statuses_rx.borrow_and_update()));
        let drift_signals = evaluated.as_ref().map_or(0, |e| {
            let new = e.drift_signals - drift_seen;
            drift_seen = e.drift_signals;
            new
        });
        on_cycle(&Cycle {
            result: &result,
            elapsed,
            statuses: evaluated.as_deref().map(|e| &e.counts),
            drift_signals,
            failures: schedule.failures(),
            next_in: delay,
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
            _ = trigger.fired() => {}
        }
    }
    let _ = evaluator.await;
}

/// Evaluates statuses every [`STATUS_INTERVAL`], and at once when asked.
async fn evaluate_statuses(
    mut store: Store,
    sync_timeout: chrono::Duration,
    asked: Arc<Notify>,
    results: watch::Sender<Arc<Evaluated>>,
    shutdown: CancellationToken,
) {
    let mut drift_signals = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            _ = asked.notified() => {}
        }
        match update_statuses(&mut store, sync_timeout).await {
            // Only the counts are kept: the daemon's memory must not hold a
            // second copy of every app.
            Ok((counts, recorded)) => {
                drift_signals += recorded.signals() as u64;
                results.send_replace(Arc::new(Evaluated {
                    counts,
                    drift_signals,
                }));
            }
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "status evaluation failed"),
        }
    }
}
