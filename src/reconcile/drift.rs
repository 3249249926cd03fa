//! Drift signals: which status transitions are signalled, and with what. Pure:
//! the evaluation hands over what it already read, and `canopy_status` carries
//! the result out, publishing each transition once (docs/protocol.md, "Drift
//! signals").

use chrono::{DateTime, Utc};

use crate::layout::AppName;
use crate::protocol::{DesiredRecord, Drift, Signal, SignalKind};
use crate::status::{Desired, Observed, Record, Status};
use crate::store::DriftWrite;

/// What one app's evaluation found, as far as drift is concerned.
pub(super) struct Facts<'a> {
    pub app: &'a AppName,
    pub record: &'a Record,
    pub previous: Option<&'a Record>,
    /// The stored record's `drift_key`: the last transition signalled.
    pub signalled: Option<&'a str>,
    pub desired: Option<&'a Desired>,
    /// The stored `:desired` record, for the payload's parent, revision, config
    /// digest and wave (a prune's tombstone holds only the revision that removed
    /// the app).
    pub stored: Option<&'a DesiredRecord>,
    pub observed: Option<&'a Observed>,
    pub now: DateTime<Utc>,
}

/// The drift signal this evaluation calls for: a change of status into a drift
/// status ([`Status::is_drift`]), or into `synced` while the last signalled
/// transition was a drift (a resolution, also when the app passed through
/// `progressing` on its way back). `None` when the status did not change, or the
/// stored record shows this very transition was signalled already. The signal's
/// `epoch` is left 0: the store sets the one it writes under.
pub(super) fn transition(facts: &Facts) -> Option<DriftWrite> {
    let record = facts.record;
    let previous_status = facts.previous.map(|p| p.status);
    if previous_status == Some(record.status) {
        return None;
    }
    let signalled = facts.signalled.filter(|k| !k.is_empty());
    let resolved = match record.status {
        status if status.is_drift() => false,
        Status::Synced if open_drift(signalled, previous_status) => true,
        _ => return None,
    };
    let key = key(record.status, facts.desired, facts.observed);
    if signalled == Some(key.as_str()) {
        return None;
    }
    let in_git = facts.stored.and_then(|r| r.app.as_ref());
    let signal = Signal {
        kind: SignalKind::Drift,
        app: facts.app.to_string(),
        parent: in_git
            .and_then(|a| a.parent.as_ref())
            .map(ToString::to_string),
        // An orphaned app's tombstone keeps the commit that removed it.
        revision: facts.stored.map(|r| r.revision.clone()).unwrap_or_default(),
        digest: facts.desired.map(|d| d.digest.clone()),
        previous_digest: facts.observed.map(|o| o.digest.clone()),
        config_digest: facts.desired.and(in_git).map(|a| a.config_digest.clone()),
        generation: facts.desired.map_or(0, |d| d.generation),
        wave: in_git.map_or(0, |a| a.wave),
        changed: Vec::new(),
        changed_total: 0,
        at: facts.now.timestamp_millis(),
        epoch: 0,
        drift: Some(Drift {
            status: record.status,
            previous_status,
            reason: record.reason.clone(),
            since: record.since.timestamp_millis(),
            unsynced_since: record.unsynced_since.map(|t| t.timestamp_millis()),
            resolved,
        }),
    };
    Some(DriftWrite { key, signal })
}

/// Whether a drift is signalled and not yet resolved. A record written before
/// drift signals existed has no key: its status says it.
fn open_drift(signalled: Option<&str>, previous: Option<Status>) -> bool {
    match signalled {
        Some(key) => !key.starts_with(RESOLVED_PREFIX),
        None => previous.is_some_and(Status::is_drift),
    }
}

const RESOLVED_PREFIX: &str = "synced|";

/// `<status>|<desired digest or ->|<observed digest or ->|<desired generation>`:
/// no time in it, so evaluating the same state again (or from another daemon)
/// gives the same key; a new desired or observed digest, or a new generation,
/// gives another.
fn key(status: Status, desired: Option<&Desired>, observed: Option<&Observed>) -> String {
    format!(
        "{}|{}|{}|{}",
        status.as_str(),
        desired.map_or("-", |d| d.digest.as_str()),
        observed.map_or("-", |o| o.digest.as_str()),
        desired.map_or(0, |d| d.generation),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::records::DesiredApp;
    use crate::status::{ReportedState, SyncMode};

    const A: &str = "sha256:aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
    const B: &str = "sha256:bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
    const CFG: &str = "sha256:cccccccccccc3333333333333333333333333333333333333333333333333333";
    const REV: &str = "abc123abc123abc123abc123abc123abc123abc1";
    const REMOVED_AT: &str = "def456def456def456def456def456def456def4";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("in range")
    }

    fn record(status: Status, since: i64) -> Record {
        Record {
            status,
            since: t(since),
            unsynced_since: (status != Status::Synced).then(|| t(since)),
            reason: format!("{status} because"),
        }
    }

    fn desired(digest: &str, generation: u64) -> Desired {
        Desired {
            digest: digest.to_owned(),
            generation,
            sync: SyncMode::Auto,
            since: t(0),
        }
    }

    fn observed(digest: &str) -> Observed {
        Observed {
            digest: digest.to_owned(),
            generation: 1,
            state: ReportedState::Synced,
            message: String::new(),
            at: t(5),
        }
    }

    struct Case {
        app: AppName,
        record: Record,
        previous: Option<Record>,
        signalled: Option<String>,
        desired: Option<Desired>,
        stored: Option<DesiredRecord>,
        observed: Option<Observed>,
    }

    impl Case {
        fn new(status: Status, previous: Option<Status>) -> Case {
            let stored = DesiredRecord {
                generation: 3,
                revision: REV.to_owned(),
                signalled_at: 0,
                app: Some(DesiredApp {
                    digest: A.to_owned(),
                    config_digest: CFG.to_owned(),
                    parent: Some(AppName::parse("payments").expect("valid name")),
                    wave: 2,
                    files: 1,
                    sync: SyncMode::Auto,
                    depends_on: Vec::new(),
                }),
            };
            Case {
                app: AppName::parse("payments/api").expect("valid name"),
                record: record(status, 100),
                previous: previous.map(|s| record(s, 10)),
                signalled: None,
                desired: Some(desired(A, 3)),
                stored: Some(stored),
                observed: Some(observed(B)),
            }
        }

        fn signalled(mut self, key: &str) -> Case {
            self.signalled = Some(key.to_owned());
            self
        }

        fn run(&self) -> Option<DriftWrite> {
            transition(&Facts {
                app: &self.app,
                record: &self.record,
                previous: self.previous.as_ref(),
                signalled: self.signalled.as_deref(),
                desired: self.desired.as_ref(),
                stored: self.stored.as_ref(),
                observed: self.observed.as_ref(),
                now: t(200),
            })
        }
    }

    #[test]
    fn entering_a_drift_status_is_signalled_with_the_desired_state() {
        let write = Case::new(Status::OutOfSync, Some(Status::Progressing))
            .run()
            .expect("a drift");
        assert_eq!(write.key, format!("out_of_sync|{A}|{B}|3"));
        let signal = write.signal;
        assert_eq!(signal.kind, SignalKind::Drift);
        assert_eq!(
            (signal.digest.as_deref(), signal.previous_digest.as_deref()),
            (Some(A), Some(B)),
            "digest is desired, previous_digest is what the child runs"
        );
        assert_eq!(signal.parent.as_deref(), Some("payments"));
        assert_eq!(signal.revision, REV);
        assert_eq!(signal.config_digest.as_deref(), Some(CFG));
        assert_eq!((signal.generation, signal.wave), (3, 2));
        assert_eq!((signal.changed.len(), signal.changed_total), (0, 0));
        assert_eq!(signal.at, t(200).timestamp_millis());
        assert_eq!(
            signal.drift,
            Some(Drift {
                status: Status::OutOfSync,
                previous_status: Some(Status::Progressing),
                reason: "out_of_sync because".to_owned(),
                since: t(100).timestamp_millis(),
                unsynced_since: Some(t(100).timestamp_millis()),
                resolved: false,
            })
        );
    }

    #[test]
    fn every_drift_status_and_only_those_is_signalled() {
        for status in Status::ALL {
            let from = if status == Status::Synced {
                Status::Missing
            } else {
                Status::Synced
            };
            let write = Case::new(status, Some(from)).run();
            assert_eq!(write.is_some(), status.is_drift(), "{from} -> {status}");
        }
        // The first record of an app counts as a transition too.
        assert!(Case::new(Status::Stale, None).run().is_some());
        assert!(Case::new(Status::Missing, None).run().is_none());
    }

    #[test]
    fn no_transition_no_signal() {
        // Unchanged status: the record is not even rewritten.
        assert!(
            Case::new(Status::OutOfSync, Some(Status::OutOfSync))
                .run()
                .is_none()
        );
        // The same transition already signalled (a retry, a second daemon).
        let key = format!("failed|{A}|{B}|3");
        assert!(
            Case::new(Status::Failed, Some(Status::Progressing))
                .signalled(&key)
                .run()
                .is_none()
        );
        // The same status for another desired state is a new drift.
        assert!(
            Case::new(Status::Failed, Some(Status::Progressing))
                .signalled(&format!("failed|{A}|{B}|2"))
                .run()
                .is_some()
        );
    }

    #[test]
    fn back_to_synced_resolves_an_open_drift_only() {
        let mut case = Case::new(Status::Synced, Some(Status::Stale));
        case.observed = Some(observed(A));
        case.record.unsynced_since = None;
        let open = case.signalled(&format!("stale|{A}|{A}|3"));
        let write = open.run().expect("a resolution");
        assert_eq!(write.key, format!("synced|{A}|{A}|3"));
        let drift = write.signal.drift.expect("a drift object");
        assert!(drift.resolved);
        assert_eq!(
            (drift.status, drift.previous_status, drift.unsynced_since),
            (Status::Synced, Some(Status::Stale), None)
        );

        // Through progressing (a new commit fixed it): still resolved.
        let via = Case::new(Status::Synced, Some(Status::Progressing))
            .signalled(&format!("out_of_sync|{B}|{A}|2"));
        assert!(via.run().is_some_and(|w| w.signal.drift.unwrap().resolved));
        // A first deploy, or a drift already resolved: nothing to resolve.
        assert!(
            Case::new(Status::Synced, Some(Status::Progressing))
                .run()
                .is_none()
        );
        assert!(
            Case::new(Status::Synced, Some(Status::Progressing))
                .signalled(&format!("synced|{B}|{B}|2"))
                .run()
                .is_none()
        );
        // A record from before drift signals: its status tells.
        assert!(
            Case::new(Status::Synced, Some(Status::OutOfSync))
                .run()
                .is_some()
        );
    }

    #[test]
    fn an_orphan_has_no_desired_digest() {
        let mut case = Case::new(Status::Orphaned, Some(Status::Synced));
        case.desired = None;
        // A prune's tombstone: generation and the revision that removed it.
        case.stored = Some(DesiredRecord {
            generation: 4,
            revision: REMOVED_AT.to_owned(),
            signalled_at: 0,
            app: None,
        });
        let write = case.run().expect("a drift");
        assert_eq!(write.key, format!("orphaned|-|{B}|0"));
        let signal = write.signal;
        assert_eq!(
            (signal.digest, signal.config_digest, signal.parent),
            (None, None, None)
        );
        assert_eq!(
            (signal.generation, signal.revision.as_str()),
            (0, REMOVED_AT)
        );
        assert_eq!(signal.previous_digest.as_deref(), Some(B));
    }

    #[test]
    fn other_kinds_serialize_without_a_drift_field() {
        let mut signal = Case::new(Status::Stale, None).run().unwrap().signal;
        let json: serde_json::Value = serde_json::from_str(&signal.to_json()).unwrap();
        assert_eq!(json["drift"]["status"], "stale");
        assert_eq!(json["drift"]["previous_status"], serde_json::Value::Null);
        signal.kind = SignalKind::Sync;
        signal.drift = None;
        let text = signal.to_json();
        assert!(!text.contains("drift"), "{text}");
        let back: Signal = serde_json::from_str(&text).unwrap();
        assert_eq!(back, signal);
    }
}
