//! The status model: (desired, observed, heartbeat, time) -> per-app status (DESIGN
//! sections 5 and 8).
//!
//! Pure: no Redis, no clock reads (`now` is an input), so every rule is tested with
//! plain values. This module owns what a status means and the [`Record`] kept
//! between evaluations; reading and writing that record (a Redis hash) belongs to
//! the store, acting on drift to the reconciler and reports, printing to the CLI
//! and the reports (with the text helpers of `crate::present`, which the reasons
//! written here use too).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::present::{age, clip, format_age, short_digest};

/// An app's status, as `canopy status`, reports and drift signals show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The child applied the desired digest.
    Synced,
    /// Signalled, and the child is still within its sync timeout.
    Progressing,
    /// The child runs something other than the desired digest, past its timeout
    /// (auto) or waiting for `canopy sync` (manual).
    OutOfSync,
    /// The child never reported.
    Missing,
    /// The child reported a failure of the current generation.
    Failed,
    /// The child's heartbeat expired.
    Stale,
    /// A child still reports for an app that is no longer in Git.
    Orphaned,
}

/// How an app's new digests reach its child (`sync:` in `app.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Signalled as soon as Git changes.
    Auto,
    /// Signalled only by `canopy sync <app>`.
    Manual,
}

/// The `status` field of a child's report (`canopy_report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedState {
    Synced,
    Failed,
    Progressing,
}

/// `as_str`, `Display` and `FromStr` from one table, so the text stored in Redis,
/// printed by the CLI and written by serde cannot disagree (a test holds serde to
/// it). `Display` pads, so `{:<12}` lines up table columns.
macro_rules! text_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;

            fn from_str(text: &str) -> Result<Self, ParseError> {
                match text {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(ParseError {
                        what: $what,
                        text: clip(text, 64),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

text_enum!(Status, "status", {
    Synced => "synced",
    Progressing => "progressing",
    OutOfSync => "out_of_sync",
    Missing => "missing",
    Failed => "failed",
    Stale => "stale",
    Orphaned => "orphaned",
});

text_enum!(SyncMode, "sync mode", { Auto => "auto", Manual => "manual" });

text_enum!(ReportedState, "reported state", {
    Synced => "synced",
    Failed => "failed",
    Progressing => "progressing",
});

/// Text read back from Redis (or typed by a user) that names no known value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}, expected one of: {}", .expected.join(", "))]
pub struct ParseError {
    what: &'static str,
    /// Clipped: the text may come from a child, and errors must stay one line.
    text: String,
    expected: &'static [&'static str],
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Synced,
        Status::Progressing,
        Status::OutOfSync,
        Status::Missing,
        Status::Failed,
        Status::Stale,
        Status::Orphaned,
    ];

    /// The statuses that raise drift signals: Git and the running app disagree,
    /// and nothing in flight will fix it. Progressing is expected to resolve on its
    /// own within the timeout; Missing is a child that was never deployed, which a
    /// first rollout shows for every app and is not divergence from a known state.
    pub fn is_drift(self) -> bool {
        matches!(
            self,
            Status::OutOfSync | Status::Failed | Status::Stale | Status::Orphaned
        )
    }
}

/// What the daemon wants (from `canopy:<ns>:app:{app}:desired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub digest: String,
    pub generation: u64,
    pub sync: SyncMode,
    /// When the current digest was signalled (auto) or became desired (manual).
    #[serde(deserialize_with = "rfc3339::deserialize")]
    pub since: DateTime<Utc>,
}

/// What the child reported (`canopy:<ns>:app:{app}:observed`, via `canopy_report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub digest: String,
    pub generation: u64,
    pub state: ReportedState,
    pub message: String,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    pub at: DateTime<Utc>,
}

/// Everything one evaluation looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// None: the app is not in Git now.
    pub desired: Option<&'a Desired>,
    /// None: the child never reported, or its report cannot be read.
    pub observed: Option<&'a Observed>,
    /// Why the child's report cannot be read, when it exists but is unusable
    /// (written around `canopy_report`): naming the key and the field.
    pub unreadable_report: Option<&'a str>,
    /// The heartbeat key exists (not expired).
    pub heartbeat: bool,
    pub now: DateTime<Utc>,
    /// How long an auto app may take from signal to a synced report.
    pub sync_timeout: Duration,
}

/// The daemon's record of an app's status, kept between evaluations (stored in
/// Redis as a hash). Invariant, whatever the inputs:
/// `unsynced_since <= since <= now` and `unsynced_since.is_none() == (status == Synced)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub status: Status,
    /// When the current status began.
    #[serde(deserialize_with = "rfc3339::deserialize")]
    pub since: DateTime<Utc>,
    /// When the app last left Synced: what "out of sync for 3h" counts from. None
    /// exactly while Synced. An app not seen Synced since the daemon began tracking
    /// it counts from the start of its first recorded status, so a child that never
    /// converges still shows how long it has been unsynced.
    #[serde(default, deserialize_with = "rfc3339::deserialize_option")]
    pub unsynced_since: Option<DateTime<Utc>>,
    /// A short human explanation, one line.
    pub reason: String,
}

impl Record {
    /// How long the app has not been Synced (None while Synced), for "out of sync
    /// for 3h" with [`format_age`].
    pub fn unsynced_for(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.unsynced_since
            .map(|left| (now - left).max(Duration::zero()))
    }
}

/// The status of one app now, given the record of the previous evaluation.
///
/// Returns None when there is nothing to track: the app is not in Git and no child
/// reports for it. The daemon walks the union of desired and observed keys, so it
/// never asks this for an app it knows; but when a removed app's child deletes its
/// `observed` key, None is also the right answer ("drop the stored record"), and an
/// Option makes the caller decide instead of this function panicking or inventing
/// a status (library code never panics, STYLE).
pub fn evaluate(inputs: &Inputs, previous: Option<&Record>) -> Option<Record> {
    let Verdict {
        status,
        evidence,
        reason,
    } = classify(inputs)?;
    let since = since(status, evidence, previous, inputs.now);
    let unsynced_since = unsynced_since(status, since, previous);
    Some(Record {
        status,
        since,
        unsynced_since,
        reason,
    })
}

/// A status, the earliest moment the inputs show it held, and why.
struct Verdict {
    status: Status,
    evidence: DateTime<Utc>,
    reason: String,
}

/// The status rules, in precedence order: the first that matches wins.
fn classify(inputs: &Inputs) -> Option<Verdict> {
    let now = inputs.now;
    let verdict = |status, evidence, reason| {
        Some(Verdict {
            status,
            evidence,
            reason,
        })
    };

    // 1. Not in Git but a child still reports: Orphaned, whatever the child says,
    //    because nothing it runs is wanted any more. When it began (the poll that
    //    removed the app) is not recorded here, so the first evaluation says now.
    let Some(desired) = inputs.desired else {
        if let (None, Some(error)) = (inputs.observed, inputs.unreadable_report) {
            let reason = format!("not in Git; child's report unreadable: {error}");
            return verdict(Status::Orphaned, now, clip(&reason, MAX_MESSAGE_CHARS));
        }
        let observed = inputs.observed?;
        let reason = format!(
            "not in Git; child last reported {} {} ago",
            short_digest(&observed.digest),
            age(now, observed.at),
        );
        return verdict(Status::Orphaned, now, reason);
    };

    // 2. A report that cannot be read is the child's failure, never a reason to
    //    fail anything else; the first evaluation that sees it says now.
    if let Some(error) = inputs.unreadable_report {
        let reason = format!("unreadable report: {error}");
        return verdict(Status::Failed, now, clip(&reason, MAX_MESSAGE_CHARS));
    }

    // 2b. Never reported: there is no child state to judge, heartbeat or not (a
    //    heartbeat without a report says nothing about what runs). Counted from the
    //    moment the digest was signalled or became desired.
    let Some(observed) = inputs.observed else {
        return verdict(Status::Missing, desired.since, "never reported".to_owned());
    };

    // 3. No heartbeat: nobody is home, which is more urgent than whatever it last
    //    said (a Synced report from a dead child is not Synced). The expiry moment is
    //    not recorded anywhere, so the first evaluation says now.
    if !inputs.heartbeat {
        let reason = format!(
            "no heartbeat; last report {} ago ({})",
            age(now, observed.at),
            observed.state,
        );
        return verdict(Status::Stale, now, reason);
    }

    // 4. A failure of the current (or a newer) generation. A failure of an older
    //    generation says nothing about the current one: the child has not tried it
    //    yet, so the rules below judge it.
    if observed.state == ReportedState::Failed && observed.generation >= desired.generation {
        let reason = if observed.message.is_empty() {
            "hook failed (no message)".to_owned()
        } else {
            format!(
                "hook failed: {}",
                clip(&observed.message, MAX_MESSAGE_CHARS)
            )
        };
        return verdict(Status::Failed, observed.at, reason);
    }

    // 5. Digest equality makes Synced, not generation: a child that applied the
    //    same digest under an older generation (a signal repeated for the same
    //    content) runs exactly what Git wants.
    if observed.digest == desired.digest && observed.state == ReportedState::Synced {
        let reason = format!(
            "child applied {} (generation {})",
            short_digest(&observed.digest),
            observed.generation,
        );
        return verdict(Status::Synced, observed.at, reason);
    }

    // 6. Auto apps were signalled at `desired.since` and get `sync_timeout` to
    //    converge before the difference counts as drift. Manual apps are never
    //    signalled by a Git change, so they have nothing to wait for.
    let deadline = deadline(desired.since, inputs.sync_timeout);
    if desired.sync == SyncMode::Auto && now < deadline {
        let reason = format!(
            "signalled {} ago, within the {} sync timeout",
            age(now, desired.since),
            format_age(inputs.sync_timeout),
        );
        return verdict(Status::Progressing, desired.since, reason);
    }

    // 7. Otherwise Git and the child disagree: another digest, or the desired one
    //    not applied (still progressing, or only failed in an older generation),
    //    past the timeout or with no signal to wait for. It has been so since the
    //    timeout ran out (auto) or the digest became desired (manual), but not
    //    before the report that shows it: a child that was Synced and then reports
    //    another digest (someone deployed by hand) drifted at that report, not when
    //    the digest it left was signalled.
    let started = match desired.sync {
        SyncMode::Auto => deadline,
        SyncMode::Manual => desired.since,
    };
    let describe = format!(
        "child reports digest {} (generation {}{}), desired {} (generation {})",
        short_digest(&observed.digest),
        observed.generation,
        match observed.state {
            ReportedState::Synced => "",
            ReportedState::Failed => ", failed",
            ReportedState::Progressing => ", progressing",
        },
        short_digest(&desired.digest),
        desired.generation,
    );
    let reason = match desired.sync {
        SyncMode::Auto => format!(
            "{describe}; not synced within the {} sync timeout",
            format_age(inputs.sync_timeout),
        ),
        // A child already on the desired digest was clearly synced by hand and is
        // still at it (or failed an older generation): "waiting for `canopy sync`"
        // would send the user to do what they already did.
        SyncMode::Manual if observed.digest == desired.digest => describe,
        SyncMode::Manual => format!("manual sync: waiting for `canopy sync`; {describe}"),
    };
    verdict(Status::OutOfSync, started.max(observed.at), reason)
}

/// When the status began.
///
/// A status does not restart while it holds: the previous `since` is kept. A new
/// status starts at the earliest moment the evidence supports, but not before the
/// previous status began (that one held from its `since` until at least the last
/// evaluation, so whatever follows it began later), and never after now (a clock
/// that went back, or a future timestamp written by a child, must not produce a
/// status that begins in the future).
fn since(
    status: Status,
    evidence: DateTime<Utc>,
    previous: Option<&Record>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let since = match previous {
        Some(previous) if previous.status == status => previous.since,
        Some(previous) => evidence.max(previous.since),
        None => evidence,
    };
    since.min(now)
}

/// When the app last left Synced; None while Synced.
///
/// Leaving Synced now: the new status's start. Already unsynced: the previous
/// record's moment, or, for a record that lacks it, the previous status's start
/// (the app has been unsynced at least since then). Never after `since`: the app
/// left Synced no later than the current unsynced status began.
fn unsynced_since(
    status: Status,
    since: DateTime<Utc>,
    previous: Option<&Record>,
) -> Option<DateTime<Utc>> {
    if status == Status::Synced {
        return None;
    }
    let left = match previous {
        // Checked before `unsynced_since`: a Synced record has none, and one that
        // does (written by hand or by a bug) must not make this stretch look older.
        Some(previous) if previous.status == Status::Synced => since,
        Some(previous) => previous.unsynced_since.unwrap_or(previous.since),
        None => since,
    };
    Some(left.min(since))
}

/// The end of an auto app's sync timeout. A negative timeout counts as zero, and a
/// deadline past chrono's range never comes.
fn deadline(signalled: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    signalled
        .checked_add_signed(timeout.max(Duration::zero()))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A child's failure message is kept to this many characters in a reason.
const MAX_MESSAGE_CHARS: usize = 200;

/// Times are RFC 3339 text in JSON. chrono's `serde` feature writes them as
/// canopy always did (`AutoSi` precision, `Z` for UTC); reading them back goes
/// through here, because chrono's own `Deserialize` accepts more than RFC 3339
/// (a space for the `T`, for one) and its errors do not quote the text, and an
/// error must name its input.
mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub fn deserialize_option<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse(&text))
            .transpose()
    }

    fn parse<E: serde::de::Error>(text: &str) -> Result<DateTime<Utc>, E> {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|e| E::custom(format!("bad RFC 3339 time {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReportedState::{Failed, Progressing, Synced};
    use proptest::prelude::*;

    const A: &str = "sha256:aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
    const B: &str = "sha256:bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("in range")
    }

    fn timeout() -> Duration {
        Duration::minutes(5)
    }

    fn desired(digest: &str, generation: u64, sync: SyncMode, since: i64) -> Desired {
        Desired {
            digest: digest.to_owned(),
            generation,
            sync,
            since: t(since),
        }
    }

    fn auto(digest: &str, generation: u64, since: i64) -> Desired {
        desired(digest, generation, SyncMode::Auto, since)
    }

    fn observed(digest: &str, generation: u64, state: ReportedState, at: i64) -> Observed {
        Observed {
            digest: digest.to_owned(),
            generation,
            state,
            message: String::new(),
            at: t(at),
        }
    }

    fn inputs<'a>(
        desired: Option<&'a Desired>,
        observed: Option<&'a Observed>,
        heartbeat: bool,
        now: i64,
    ) -> Inputs<'a> {
        Inputs {
            desired,
            observed,
            unreadable_report: None,
            heartbeat,
            now: t(now),
            sync_timeout: timeout(),
        }
    }

    fn eval(inputs: Inputs) -> Record {
        evaluate(&inputs, None).expect("an app")
    }

    fn record(status: Status, since: i64, unsynced_since: Option<i64>) -> Record {
        Record {
            status,
            since: t(since),
            unsynced_since: unsynced_since.map(t),
            reason: String::new(),
        }
    }

    // Rule 1 and its edges.

    #[test]
    fn observed_app_not_in_git_is_orphaned() {
        let o = observed(A, 3, Synced, 100);
        let r = eval(inputs(None, Some(&o), true, 1000));
        assert_eq!(r.status, Status::Orphaned);
        assert_eq!(r.since, t(1000));
        assert_eq!(
            r.reason,
            "not in Git; child last reported sha256:aaaaaaaaaaaa… 15m ago"
        );
    }

    #[test]
    fn orphaned_beats_stale() {
        let o = observed(A, 3, Failed, 100);
        let r = eval(inputs(None, Some(&o), false, 1000));
        assert_eq!(r.status, Status::Orphaned);
    }

    #[test]
    fn neither_in_git_nor_observed_is_nothing_to_track() {
        let i = inputs(None, None, true, 1000);
        assert_eq!(evaluate(&i, None), None);
        let previous = record(Status::Orphaned, 10, Some(10));
        assert_eq!(evaluate(&i, Some(&previous)), None);
    }

    // Rule 2.

    #[test]
    fn never_reported_is_missing_from_the_signal() {
        let d = auto(A, 1, 100);
        let r = eval(inputs(Some(&d), None, true, 1000));
        assert_eq!(r.status, Status::Missing);
        assert_eq!(r.since, t(100));
        assert_eq!(r.reason, "never reported");
    }

    #[test]
    fn missing_beats_stale() {
        let d = auto(A, 1, 100);
        let r = eval(inputs(Some(&d), None, false, 1000));
        assert_eq!(r.status, Status::Missing);
    }

    #[test]
    fn missing_within_the_sync_timeout_is_still_missing() {
        let d = auto(A, 1, 990);
        let r = eval(inputs(Some(&d), None, true, 1000));
        assert_eq!(r.status, Status::Missing);
    }

    // Rule 3.

    #[test]
    fn expired_heartbeat_is_stale_even_when_synced() {
        let d = auto(A, 2, 100);
        let o = observed(A, 2, Synced, 200);
        let r = eval(inputs(Some(&d), Some(&o), false, 1000));
        assert_eq!(r.status, Status::Stale);
        assert_eq!(r.since, t(1000));
        assert_eq!(r.reason, "no heartbeat; last report 13m ago (synced)");
    }

    #[test]
    fn stale_beats_failed() {
        let d = auto(A, 2, 100);
        let o = observed(A, 2, Failed, 200);
        let r = eval(inputs(Some(&d), Some(&o), false, 1000));
        assert_eq!(r.status, Status::Stale);
    }

    // Rule 4.

    #[test]
    fn failure_of_the_current_generation_is_failed() {
        let d = auto(B, 4, 100);
        let mut o = observed(B, 4, Failed, 200);
        o.message = "exit status 1".to_owned();
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.since, t(200));
        assert_eq!(r.reason, "hook failed: exit status 1");
    }

    #[test]
    fn failure_of_a_newer_generation_is_failed() {
        let d = auto(B, 4, 100);
        let o = observed(A, 5, Failed, 200);
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.reason, "hook failed (no message)");
    }

    #[test]
    fn failure_of_the_current_generation_is_failed_within_the_timeout() {
        let d = auto(B, 4, 100);
        let o = observed(B, 4, Failed, 110);
        let r = eval(inputs(Some(&d), Some(&o), true, 120));
        assert_eq!(r.status, Status::Failed);
    }

    #[test]
    fn failure_of_an_older_generation_within_the_timeout_is_progressing() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Failed, 50);
        let r = eval(inputs(Some(&d), Some(&o), true, 112));
        assert_eq!(r.status, Status::Progressing);
        assert_eq!(r.since, t(100));
        assert_eq!(r.reason, "signalled 12s ago, within the 5m sync timeout");
    }

    #[test]
    fn failure_of_an_older_generation_past_the_timeout_is_out_of_sync() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Failed, 50);
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::OutOfSync);
        assert_eq!(
            r.reason,
            "child reports digest sha256:aaaaaaaaaaaa… (generation 3, failed), \
             desired sha256:bbbbbbbbbbbb… (generation 4); not synced within the 5m sync timeout"
        );
    }

    #[test]
    fn failure_message_is_clipped_on_a_char_boundary_and_kept_on_one_line() {
        let d = auto(B, 4, 100);
        let mut o = observed(B, 4, Failed, 200);
        o.message = format!("line one\nline two\x1b[31m{}", "é".repeat(300));
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        let message = r.reason.strip_prefix("hook failed: ").expect("prefix");
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.starts_with("line one line two [31mééé"));
        assert!(message.ends_with("é…"));
        assert!(!r.reason.chars().any(char::is_control));
    }

    // Rule 5.

    #[test]
    fn same_digest_reported_synced_is_synced() {
        let d = auto(A, 2, 100);
        let o = observed(A, 2, Synced, 130);
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::Synced);
        assert_eq!(r.since, t(130));
        assert_eq!(r.unsynced_since, None);
        assert_eq!(
            r.reason,
            "child applied sha256:aaaaaaaaaaaa… (generation 2)"
        );
    }

    #[test]
    fn same_digest_under_an_older_generation_is_synced() {
        let d = auto(A, 5, 100);
        let o = observed(A, 3, Synced, 50);
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::Synced);
    }

    #[test]
    fn same_generation_with_another_digest_is_not_synced() {
        let d = auto(B, 4, 100);
        let o = observed(A, 4, Synced, 200);
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::OutOfSync);
    }

    #[test]
    fn same_digest_still_progressing_is_not_synced() {
        let d = auto(A, 4, 100);
        let o = observed(A, 4, Progressing, 150);
        assert_eq!(
            eval(inputs(Some(&d), Some(&o), true, 200)).status,
            Status::Progressing
        );
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.status, Status::OutOfSync);
        assert!(
            r.reason.contains("(generation 4, progressing)"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn manual_app_on_the_desired_digest_is_synced() {
        let d = desired(A, 2, SyncMode::Manual, 100);
        let o = observed(A, 2, Synced, 130);
        assert_eq!(
            eval(inputs(Some(&d), Some(&o), true, 1000)).status,
            Status::Synced
        );
    }

    // Rules 6 and 7.

    #[test]
    fn auto_app_is_progressing_until_the_timeout_and_out_of_sync_from_it() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Synced, 50);
        let just_before = eval(inputs(Some(&d), Some(&o), true, 100 + 299));
        assert_eq!(just_before.status, Status::Progressing);
        let at_deadline = eval(inputs(Some(&d), Some(&o), true, 100 + 300));
        assert_eq!(at_deadline.status, Status::OutOfSync);
        // It became out of sync when the timeout ran out, not at the signal.
        assert_eq!(at_deadline.since, t(400));
    }

    #[test]
    fn manual_app_with_another_digest_is_out_of_sync_and_waits_for_canopy_sync() {
        let d = desired(B, 4, SyncMode::Manual, 100);
        let o = observed(A, 3, Synced, 50);
        // Within what would be the sync timeout of an auto app: no Progressing.
        let r = eval(inputs(Some(&d), Some(&o), true, 110));
        assert_eq!(r.status, Status::OutOfSync);
        assert_eq!(r.since, t(100));
        assert_eq!(
            r.reason,
            "manual sync: waiting for `canopy sync`; child reports digest \
             sha256:aaaaaaaaaaaa… (generation 3), desired sha256:bbbbbbbbbbbb… (generation 4)"
        );
    }

    #[test]
    fn manual_app_already_applying_the_desired_digest_is_not_told_to_sync() {
        let d = desired(B, 4, SyncMode::Manual, 100);
        let o = observed(B, 4, Progressing, 150);
        let r = eval(inputs(Some(&d), Some(&o), true, 200));
        assert_eq!(r.status, Status::OutOfSync);
        assert!(!r.reason.contains("canopy sync"), "{}", r.reason);
    }

    #[test]
    fn out_of_sync_starts_no_earlier_than_the_report_that_shows_it() {
        // Synced on A since long ago; then someone deploys C by hand.
        let d = auto(A, 2, 100);
        let o = observed("sha256:cccccccccccc3333", 2, Synced, 5000);
        let r = eval(inputs(Some(&d), Some(&o), true, 6000));
        assert_eq!(r.status, Status::OutOfSync);
        assert_eq!(r.since, t(5000));
        assert!(
            r.reason
                .starts_with("child reports digest sha256:cccccccccccc… (generation 2)"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_huge_timeout_is_progressing_forever_and_a_negative_one_is_zero() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Synced, 50);
        let mut i = inputs(Some(&d), Some(&o), true, 10_000);
        i.sync_timeout = Duration::MAX;
        assert_eq!(eval(i).status, Status::Progressing);
        i.sync_timeout = Duration::seconds(-60);
        i.now = t(100);
        assert_eq!(eval(i).status, Status::OutOfSync);
    }

    // `since`.

    #[test]
    fn since_is_carried_while_the_status_holds_and_reset_when_it_changes() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Synced, 50);
        let first = eval(inputs(Some(&d), Some(&o), true, 500));
        assert_eq!((first.status, first.since), (Status::OutOfSync, t(400)));

        // A later report of the same wrong digest: still out of sync since 400.
        let o = observed(A, 3, Synced, 900);
        let second = evaluate(&inputs(Some(&d), Some(&o), true, 1000), Some(&first)).expect("app");
        assert_eq!((second.status, second.since), (Status::OutOfSync, t(400)));

        // The child applies B: Synced from its report.
        let o = observed(B, 4, Synced, 1100);
        let third = evaluate(&inputs(Some(&d), Some(&o), true, 1200), Some(&second)).expect("app");
        assert_eq!((third.status, third.since), (Status::Synced, t(1100)));
    }

    #[test]
    fn a_new_status_does_not_begin_before_the_previous_one() {
        // Stale since 900; the heartbeat returns and the last report (at 200) was
        // Synced. Synced did not begin at 200: the app was Stale until after 900.
        let d = auto(A, 2, 100);
        let o = observed(A, 2, Synced, 200);
        let previous = record(Status::Stale, 900, Some(900));
        let r = evaluate(&inputs(Some(&d), Some(&o), true, 1000), Some(&previous)).expect("app");
        assert_eq!((r.status, r.since), (Status::Synced, t(900)));
    }

    #[test]
    fn since_is_never_after_now() {
        // A signal time in the future (clocks disagree).
        let d = auto(B, 4, 2000);
        let r = eval(inputs(Some(&d), None, true, 1000));
        assert_eq!((r.status, r.since), (Status::Missing, t(1000)));
        // A previous record from the future.
        let previous = record(Status::Missing, 5000, Some(5000));
        let r = evaluate(&inputs(Some(&d), None, true, 1000), Some(&previous)).expect("app");
        assert_eq!(r.since, t(1000));
        assert_eq!(r.unsynced_since, Some(t(1000)));
    }

    // `unsynced_since`.

    #[test]
    fn unsynced_since_is_carried_until_synced_again() {
        let d = auto(A, 2, 100);
        let synced = observed(A, 2, Synced, 150);
        let r0 = eval(inputs(Some(&d), Some(&synced), true, 200));
        assert_eq!((r0.status, r0.unsynced_since), (Status::Synced, None));

        // Git moves to B at 1000: the app leaves Synced.
        let d = auto(B, 3, 1000);
        let r1 = evaluate(&inputs(Some(&d), Some(&synced), true, 1010), Some(&r0)).expect("app");
        assert_eq!(r1.status, Status::Progressing);
        assert_eq!(r1.since, t(1000));
        assert_eq!(r1.unsynced_since, Some(t(1000)));

        // The timeout passes.
        let r2 = evaluate(&inputs(Some(&d), Some(&synced), true, 1400), Some(&r1)).expect("app");
        assert_eq!((r2.status, r2.since), (Status::OutOfSync, t(1300)));
        assert_eq!(r2.unsynced_since, Some(t(1000)));

        // The child then fails generation 3.
        let failed = observed(B, 3, Failed, 1500);
        let r3 = evaluate(&inputs(Some(&d), Some(&failed), true, 1600), Some(&r2)).expect("app");
        assert_eq!((r3.status, r3.since), (Status::Failed, t(1500)));
        assert_eq!(r3.unsynced_since, Some(t(1000)));
        assert_eq!(
            r3.unsynced_for(t(1000 + 3 * 3600)),
            Some(Duration::hours(3))
        );

        // And finally applies it.
        let ok = observed(B, 3, Synced, 1700);
        let r4 = evaluate(&inputs(Some(&d), Some(&ok), true, 1800), Some(&r3)).expect("app");
        assert_eq!((r4.status, r4.since), (Status::Synced, t(1700)));
        assert_eq!(r4.unsynced_since, None);
        assert_eq!(r4.unsynced_for(t(1800)), None);
    }

    #[test]
    fn unsynced_since_without_history_is_the_status_start() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Synced, 50);
        let r = eval(inputs(Some(&d), Some(&o), true, 1000));
        assert_eq!(r.unsynced_since, Some(r.since));
    }

    #[test]
    fn unsynced_since_missing_from_an_unsynced_record_is_its_status_start() {
        let d = auto(B, 4, 100);
        let o = observed(A, 3, Synced, 50);
        let previous = record(Status::Progressing, 100, None);
        let r = evaluate(&inputs(Some(&d), Some(&o), true, 1000), Some(&previous)).expect("app");
        assert_eq!((r.status, r.since), (Status::OutOfSync, t(400)));
        assert_eq!(r.unsynced_since, Some(t(100)));
    }

    #[test]
    fn a_synced_record_with_unsynced_since_does_not_age_the_new_stretch() {
        let d = auto(B, 4, 1000);
        let o = observed(A, 3, Synced, 50);
        let previous = record(Status::Synced, 60, Some(10));
        let r = evaluate(&inputs(Some(&d), Some(&o), true, 1010), Some(&previous)).expect("app");
        assert_eq!(r.unsynced_since, Some(t(1000)));
    }

    // The other API.

    #[test]
    fn every_status_round_trips_through_text_and_serde() {
        for status in Status::ALL {
            let text = status.to_string();
            assert_eq!(text.parse::<Status>(), Ok(status));
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<Status>(&json).expect("parses"),
                status
            );
        }
        assert_eq!(Status::OutOfSync.to_string(), "out_of_sync");
        assert_eq!(format!("{:<12}|", Status::Stale), "stale       |");
        let distinct: std::collections::HashSet<_> = Status::ALL.into_iter().collect();
        assert_eq!(distinct.len(), Status::ALL.len());
    }

    #[test]
    fn sync_mode_and_reported_state_round_trip() {
        for mode in [SyncMode::Auto, SyncMode::Manual] {
            assert_eq!(mode.to_string().parse::<SyncMode>(), Ok(mode));
            let json = serde_json::to_string(&mode).expect("serializes");
            assert_eq!(json, format!("\"{mode}\""));
        }
        for state in [Synced, Failed, Progressing] {
            assert_eq!(state.to_string().parse::<ReportedState>(), Ok(state));
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{state}\""));
        }
    }

    #[test]
    fn unknown_text_is_a_clear_error() {
        let e = "OutOfSync".parse::<Status>().expect_err("case matters");
        assert_eq!(
            e.to_string(),
            "unknown status \"OutOfSync\", expected one of: synced, progressing, \
             out_of_sync, missing, failed, stale, orphaned"
        );
        let e = "ok\n"
            .repeat(100)
            .parse::<ReportedState>()
            .expect_err("unknown");
        let text = e.to_string();
        assert!(
            text.starts_with("unknown reported state \"ok ok ok"),
            "{text}"
        );
        assert!(!text.contains('\n') && text.len() < 200, "{text}");
    }

    #[test]
    fn drift_statuses() {
        let drift: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_drift()).collect();
        assert_eq!(
            drift,
            [
                Status::OutOfSync,
                Status::Failed,
                Status::Stale,
                Status::Orphaned
            ]
        );
    }

    #[test]
    fn records_serialize_with_rfc3339_times() {
        let r = Record {
            status: Status::OutOfSync,
            since: t(400),
            unsynced_since: Some(DateTime::from_timestamp(1_700_000_100, 5).expect("ok")),
            reason: "why".to_owned(),
        };
        let json = serde_json::to_string(&r).expect("serializes");
        assert_eq!(
            json,
            r#"{"status":"out_of_sync","since":"2023-11-14T22:20:00Z","unsynced_since":"2023-11-14T22:15:00.000000005Z","reason":"why"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&json).expect("parses"), r);

        let synced = record(Status::Synced, 1, None);
        let json = serde_json::to_string(&synced).expect("serializes");
        assert!(json.contains(r#""unsynced_since":null"#), "{json}");
        assert_eq!(
            serde_json::from_str::<Record>(&json).expect("parses"),
            synced
        );
        let without = r#"{"status":"synced","since":"2023-11-14T22:13:21+00:00","reason":""}"#;
        assert_eq!(
            serde_json::from_str::<Record>(without).expect("parses"),
            synced
        );

        let bad = r#"{"status":"synced","since":"yesterday","reason":""}"#;
        let e = serde_json::from_str::<Record>(bad).expect_err("bad time");
        assert!(
            e.to_string().contains("bad RFC 3339 time \"yesterday\""),
            "{e}"
        );
    }

    // Properties over arbitrary inputs and previous records.

    fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            8 => (-20_000i64..20_000, 0u32..2).prop_map(|(s, n)| {
                DateTime::from_timestamp(1_700_000_000 + s, n * 500_000_000).expect("in range")
            }),
            1 => Just(DateTime::<Utc>::MAX_UTC),
            1 => Just(DateTime::<Utc>::MIN_UTC),
        ]
    }

    fn any_digest() -> impl Strategy<Value = String> {
        prop_oneof![Just(A.to_owned()), Just(B.to_owned()), "\\PC{0,30}"]
    }

    fn any_desired() -> impl Strategy<Value = Desired> {
        (
            any_digest(),
            0u64..4,
            prop_oneof![Just(SyncMode::Auto), Just(SyncMode::Manual)],
            any_time(),
        )
            .prop_map(|(digest, generation, sync, since)| Desired {
                digest,
                generation,
                sync,
                since,
            })
    }

    fn any_observed() -> impl Strategy<Value = Observed> {
        (
            any_digest(),
            0u64..4,
            prop_oneof![Just(Synced), Just(Failed), Just(Progressing)],
            "\\PC{0,300}",
            any_time(),
        )
            .prop_map(|(digest, generation, state, message, at)| Observed {
                digest,
                generation,
                state,
                message,
                at,
            })
    }

    fn any_record() -> impl Strategy<Value = Record> {
        (
            prop::sample::select(Status::ALL.to_vec()),
            any_time(),
            prop::option::of(any_time()),
        )
            .prop_map(|(status, since, unsynced_since)| Record {
                status,
                since,
                unsynced_since,
                reason: String::new(),
            })
    }

    fn any_timeout() -> impl Strategy<Value = Duration> {
        prop_oneof![
            8 => (-60i64..3600).prop_map(Duration::seconds),
            1 => Just(Duration::MAX),
            1 => Just(Duration::MIN),
        ]
    }

    proptest! {
        /// Whatever the inputs and the stored record (which may be corrupt or come
        /// from a clock that went back), the result keeps the record's invariant and
        /// evaluating again changes nothing: the daemon may evaluate as often as it
        /// likes without statuses restarting or ages moving.
        #[test]
        fn records_are_consistent_and_evaluation_is_idempotent(
            desired in prop::option::of(any_desired()),
            observed in prop::option::of(any_observed()),
            heartbeat in any::<bool>(),
            now in any_time(),
            sync_timeout in any_timeout(),
            previous in prop::option::of(any_record()),
        ) {
            let inputs = Inputs {
                desired: desired.as_ref(),
                observed: observed.as_ref(),
                unreadable_report: None,
                heartbeat,
                now,
                sync_timeout,
            };
            let Some(r) = evaluate(&inputs, previous.as_ref()) else {
                prop_assert!(desired.is_none() && observed.is_none());
                return Ok(());
            };
            prop_assert!(r.since <= now);
            prop_assert_eq!(r.unsynced_since.is_none(), r.status == Status::Synced);
            if let Some(left) = r.unsynced_since {
                prop_assert!(left <= r.since);
            }
            prop_assert!(!r.reason.is_empty());
            prop_assert!(!r.reason.chars().any(char::is_control));

            let again = evaluate(&inputs, Some(&r));
            prop_assert_eq!(again.as_ref(), Some(&r));

            // The status and its reason come from the inputs alone; the previous
            // record only dates them.
            let fresh = evaluate(&inputs, None).expect("an app");
            prop_assert_eq!(fresh.status, r.status);
            prop_assert_eq!(fresh.reason, r.reason);
        }
    }
}
