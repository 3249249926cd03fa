//! The poll loop: one poll at a time, on the jittered interval, backing off after
//! failures, and at once (coalesced) when triggered by a webhook or the API.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Poll, Poller, Schedule, SourceError};

/// Asks the poll loop to poll now. Triggers that arrive while a poll runs collapse
/// into one more poll after it: a burst of webhooks costs one fetch.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    pub fn fire(&self) {
        self.0.notify_one();
    }
}

/// Polls until `shutdown` is cancelled; `on_poll` sees every result and the poller
/// (for its state). gix is blocking, so each poll runs on the blocking pool. A
/// poll in progress when shutdown comes is finished, never torn: the snapshot
/// changes only when a poll succeeds as a whole.
pub async fn run_polls<F>(
    mut poller: Poller,
    mut schedule: Schedule,
    trigger: Trigger,
    shutdown: CancellationToken,
    mut on_poll: F,
) -> Poller
where
    F: FnMut(&Result<Poll, SourceError>, &Poller, &Schedule) + Send,
{
    loop {
        let (back, result) = match tokio::task::spawn_blocking(move || {
            let result = poller.poll();
            (poller, result)
        })
        .await
        {
            Ok(done) => done,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        poller = back;
        let delay = schedule.next_delay(result.is_ok(), fastrand::f64());
        if let Err(e) = &result {
            tracing::warn!(
                error = %crate::error_chain(e),
                failures = schedule.failures(),
                retry_in_ms = delay.as_millis() as u64,
                "poll failed; last good state kept"
            );
        }
        on_poll(&result, &poller, &schedule);
        tokio::select! {
            _ = shutdown.cancelled() => return poller,
            _ = tokio::time::sleep(delay) => {}
            _ = trigger.0.notified() => {}
        }
    }
}
