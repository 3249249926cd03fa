//! One task per configured report: wait for the next slot of its cron schedule
//! (in its time zone), claim the slot in Redis so that one daemon only makes it,
//! build the report, store it, deliver it, record each sink's outcome.
//!
//! Missed slots (docs/reports.md, "Missed slots"): never replayed, with one
//! exception: at start, the most recent slot is made once, flagged `late`, if it
//! is no older than the catch-up window and no daemon claimed it. A slot that
//! passes while the previous one is still being made is skipped.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::collect::collect;
use super::deliver::{Deliverer, DeliveryOutcome};
use super::render;
use crate::config::ReportConfig;
use crate::store::Store;

/// How old the most recent slot may be at start and still be made (late).
pub const CATCH_UP_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How long a slot claim outlives the catch-up window: covers clocks that
/// disagree between daemons.
const CLAIM_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The wall clock, optionally shifted: tests move "now" to a chosen instant
/// without waiting for it (sleeps still take real time).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: chrono::Duration,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `now` at this moment, and runs on from there.
    pub fn starting_at(now: DateTime<Utc>) -> Clock {
        Clock {
            offset: now - Utc::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// What every report task shares.
#[derive(Debug, Clone)]
pub struct Options {
    /// As `redis.sync_timeout`: how statuses are evaluated.
    pub sync_timeout: chrono::Duration,
    pub catch_up: Duration,
    pub clock: Clock,
}

/// The first slot strictly after `after`, in the report's time zone.
pub fn next_slot(report: &ReportConfig, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&report.timezone);
    report
        .schedule
        .after(&local)
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// The slot to make late at start: the most recent one at or before `now`, if it
/// is at most `window` old.
pub fn catch_up_slot(
    report: &ReportConfig,
    now: DateTime<Utc>,
    window: Duration,
) -> Option<DateTime<Utc>> {
    // `after(t)` iterates both ways from t; backwards it gives the slots before t.
    let local = (now + chrono::Duration::milliseconds(1)).with_timezone(&report.timezone);
    let previous = report
        .schedule
        .after(&local)
        .next_back()?
        .with_timezone(&Utc);
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    (previous <= now && now - previous <= window).then_some(previous)
}

/// Starts one task per report; they stop when `shutdown` is cancelled.
pub fn spawn(
    store: &Store,
    reports: &[ReportConfig],
    deliverer: Arc<Deliverer>,
    options: &Options,
    shutdown: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for report in reports {
        let scheduler = Scheduler::new(
            report.clone(),
            store.clone(),
            Arc::clone(&deliverer),
            options.clone(),
        );
        tasks.spawn(scheduler.run(shutdown.clone()));
    }
    tasks
}

/// What became of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Claimed, built, stored and delivered (each sink's outcome is recorded).
    Made,
    /// Another daemon (or an earlier run) claimed it.
    Taken,
    /// Redis failed before the report was built (logged); the slot is lost.
    Failed,
}

/// The task of one report.
pub struct Scheduler {
    report: ReportConfig,
    store: Store,
    deliverer: Arc<Deliverer>,
    options: Options,
    /// Stored in the slot claims: which daemon made a slot.
    owner: String,
}

impl Scheduler {
    pub fn new(
        report: ReportConfig,
        store: Store,
        deliverer: Arc<Deliverer>,
        options: Options,
    ) -> Scheduler {
        let owner = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
        Scheduler {
            report,
            store,
            deliverer,
            options,
            owner,
        }
    }

    /// Runs until `shutdown`; a slot being made then is abandoned (its claim
    /// stays: the slot is not made twice).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let clock = self.options.clock;
        let name = self.report.name.clone();
        tracing::info!(report = %name, schedule = self.report.schedule.source(), timezone = %self.report.timezone, "report scheduled");
        let start = clock.now();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.catch_up(start) => {}
        }
        let mut after = start;
        loop {
            let Some(slot) = next_slot(&self.report, after) else {
                tracing::info!(report = %name, "the schedule has no more slots");
                return;
            };
            // The clock may run slow against the timer: sleep until it says so.
            loop {
                let now = clock.now();
                if now >= slot {
                    break;
                }
                let wait = (slot - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.make(slot, false) => {}
            }
            let now = clock.now();
            let skipped = skipped(&self.report, slot, now);
            if skipped > 0 {
                tracing::warn!(report = %name, skipped, "slots passed while a report was being made: skipped");
            }
            after = now.max(slot);
        }
    }

    /// The missed-slot policy, at start (`now`): makes the most recent slot if it
    /// is within the catch-up window and nobody made it. `None`: no slot is due.
    pub async fn catch_up(&mut self, now: DateTime<Utc>) -> Option<Made> {
        let slot = catch_up_slot(&self.report, now, self.options.catch_up)?;
        Some(self.make(slot, slot < now).await)
    }

    /// Makes the report of `slot` if this daemon claims it. Failures are logged;
    /// the next slot comes whatever happens to this one.
    pub async fn make(&mut self, slot: DateTime<Utc>, late: bool) -> Made {
        let name = self.report.name.clone();
        let ttl = self.options.catch_up + CLAIM_MARGIN;
        match self
            .store
            .claim_report_slot(&name, slot.timestamp_millis(), &self.owner, ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(report = %name, %slot, "slot already made by another daemon");
                return Made::Taken;
            }
            Err(e) => {
                tracing::warn!(report = %name, %slot, error = %crate::error_chain(&e), "cannot claim the report slot; skipped");
                return Made::Failed;
            }
        }
        let now = self.options.clock.now();
        let report = match collect(
            &mut self.store,
            &name,
            slot,
            late,
            now,
            self.options.sync_timeout,
        )
        .await
        {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(report = %name, %slot, error = %crate::error_chain(&e), "cannot build the report; slot skipped");
                return Made::Failed;
            }
        };
        if let Err(e) = self
            .store
            .store_report(&name, &report.slot, &render::json(&report))
            .await
        {
            // Delivered anyway: the sinks need not suffer from Redis.
            tracing::warn!(report = %name, %slot, error = %crate::error_chain(&e), "cannot store the report");
        }
        tracing::info!(report = %name, slot = %report.slot, late, not_synced = report.counts.not_synced, "report made");
        let report = Arc::new(report);
        let mut deliveries = JoinSet::new();
        for (index, sink) in self.report.sinks.iter().enumerate() {
            let (deliverer, report, sink) = (
                Arc::clone(&self.deliverer),
                Arc::clone(&report),
                sink.clone(),
            );
            let allow = self.report.allow_private_targets;
            deliveries
                .spawn(async move { (index, deliverer.deliver(&sink, &report, allow).await) });
        }
        while let Some(done) = deliveries.join_next().await {
            let Ok((index, outcome)) = done else {
                continue;
            };
            self.record(index, &outcome).await;
        }
        Made::Made
    }

    async fn record(&mut self, index: usize, outcome: &DeliveryOutcome) {
        let json = serde_json::to_string(outcome).expect("an outcome serializes");
        if let Err(e) = self
            .store
            .record_delivery(&self.report.name, index, &json)
            .await
        {
            tracing::warn!(report = %self.report.name, sink = %outcome.sink, error = %crate::error_chain(&e), "cannot record the delivery outcome");
        }
    }
}

/// How many slots fall strictly between `slot` and `now` (counted up to 1000).
fn skipped(report: &ReportConfig, slot: DateTime<Utc>, now: DateTime<Utc>) -> usize {
    let local = slot.with_timezone(&report.timezone);
    report
        .schedule
        .after(&local)
        .take(1000)
        .take_while(|t| t.with_timezone(&Utc) <= now)
        .count()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn report(schedule: &str, timezone: chrono_tz::Tz) -> ReportConfig {
        ReportConfig {
            name: "morning".to_owned(),
            schedule: cron::Schedule::from_str(schedule).expect("valid cron"),
            timezone,
            sinks: Vec::new(),
            allow_private_targets: false,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn next_slots_follow_the_time_zone() {
        let utc = report("0 0 6 * * *", chrono_tz::Tz::UTC);
        assert_eq!(
            next_slot(&utc, at("2026-03-01T05:59:59Z")),
            Some(at("2026-03-01T06:00:00Z"))
        );
        // Strictly after: a slot that has just been made is not made again.
        assert_eq!(
            next_slot(&utc, at("2026-03-01T06:00:00Z")),
            Some(at("2026-03-02T06:00:00Z"))
        );
        let paris = report("0 0 6 * * *", chrono_tz::Europe::Paris);
        assert_eq!(
            next_slot(&paris, at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T05:00:00Z"))
        );
        // Summer time: 06:00 in Paris is 04:00 UTC.
        assert_eq!(
            next_slot(&paris, at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T04:00:00Z"))
        );
    }

    #[test]
    fn only_the_most_recent_slot_is_caught_up_and_only_within_the_window() {
        let daily = report("0 0 6 * * *", chrono_tz::Tz::UTC);
        // Down over 06:00, back at 06:05: the 06:00 report is made, late.
        assert_eq!(
            catch_up_slot(&daily, at("2026-03-01T06:05:00Z"), WINDOW),
            Some(at("2026-03-01T06:00:00Z"))
        );
        assert_eq!(
            catch_up_slot(&daily, at("2026-03-01T06:10:00Z"), WINDOW),
            Some(at("2026-03-01T06:00:00Z"))
        );
        // Back at 06:11, or days later: nothing is replayed.
        assert_eq!(
            catch_up_slot(&daily, at("2026-03-01T06:10:01Z"), WINDOW),
            None
        );
        assert_eq!(
            catch_up_slot(&daily, at("2026-03-04T05:00:00Z"), WINDOW),
            None
        );
        // Started exactly on a slot: that slot.
        assert_eq!(
            catch_up_slot(&daily, at("2026-03-01T06:00:00Z"), WINDOW),
            Some(at("2026-03-01T06:00:00Z"))
        );
        // Many slots missed (every minute, down for an hour): only the last one.
        let minutely = report("0 * * * * *", chrono_tz::Tz::UTC);
        assert_eq!(
            catch_up_slot(&minutely, at("2026-03-01T07:00:30Z"), WINDOW),
            Some(at("2026-03-01T07:00:00Z"))
        );
        assert_eq!(
            catch_up_slot(&daily, at("2026-03-01T06:05:00Z"), Duration::ZERO),
            None
        );
    }

    #[test]
    fn skipped_slots_are_counted() {
        let secondly = report("* * * * * *", chrono_tz::Tz::UTC);
        let slot = at("2026-03-01T06:00:00Z");
        assert_eq!(skipped(&secondly, slot, at("2026-03-01T06:00:00.500Z")), 0);
        assert_eq!(skipped(&secondly, slot, at("2026-03-01T06:00:03.500Z")), 3);
    }
}
