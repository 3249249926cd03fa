//! Drift signals against a real redis-server and a real Git repository: one
//! `drift` signal per status transition into out_of_sync, failed, stale or
//! orphaned, one resolution when the app is synced again, nothing on repeated
//! evaluations or retried writes, and nothing from a fenced daemon.

use crate::common;

use std::time::Duration;

use canopy::reconcile::{Reconciler, Recorded, record_changes, update_statuses};
use canopy::status::Status;
use canopy::store::{Signal, SignalKind, StoreError};
use canopy::view::statuses;
use common::reconcile::{NS, Setup, app_key, signals_in};
use common::*;

/// A digest no version of the example has.
const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000bad";

impl Setup {
    /// The drift signals in the namespace's events stream.
    fn drifts(&self) -> Vec<Signal> {
        drifts_in(&mut self.redis.conn(), &format!("canopy:{NS}:events"))
    }

    /// The drift signals in one app's stream.
    fn app_drifts(&self, app: &str) -> Vec<Signal> {
        drifts_in(&mut self.redis.conn(), &app_key(app, "events"))
    }

    fn desired_digest(&self, app: &str) -> String {
        self.hash(&app_key(app, "desired"))["digest"].clone()
    }

    /// A child's report through `canopy_report`, with a live heartbeat.
    fn report(&self, app: &str, generation: u64, digest: &str, status: &str, message: &str) {
        let reply = self.redis.cmd(&[
            "FCALL",
            "canopy_report",
            "1",
            &app_key(app, "observed"),
            &generation.to_string(),
            digest,
            "rev",
            status,
            message,
            "agent-1",
        ]);
        assert_eq!(reply, ::redis::Value::Okay);
        self.redis
            .cmd(&["SET", &app_key(app, "heartbeat"), "agent-1", "EX", "60"]);
    }
}

/// The `drift` entries of a stream, checking that the flat fields match the
/// payload.
fn drifts_in(conn: &mut ::redis::Connection, key: &str) -> Vec<Signal> {
    signals_in(conn, key)
        .into_iter()
        .filter(|signal| signal.kind == SignalKind::Drift)
        .collect()
}

/// No sync timeout: a child on another digest is out of sync at once.
async fn evaluate(reconciler: &mut Reconciler) -> Recorded {
    let (_, recorded) = update_statuses(reconciler.store(), chrono::Duration::zero())
        .await
        .unwrap();
    recorded
}

/// The one drift signal of `app` in both streams, after `before` entries of
/// the namespace stream.
fn only_drift(setup: &Setup, app: &str, before: usize) -> Signal {
    let new = &setup.drifts()[before..];
    assert_eq!(new.len(), 1, "one drift signal: {new:?}");
    let app_stream = setup.app_drifts(app);
    assert_eq!(
        app_stream.last(),
        Some(&new[0]),
        "the app stream has it too"
    );
    assert_eq!(new[0].app, app);
    new[0].clone()
}

#[tokio::test]
async fn out_of_sync_is_signalled_once_then_resolved_once() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    let commit = reconciler.cycle().await.unwrap().commit;
    // No child reported: every app is missing, which is not drift.
    let recorded = evaluate(&mut reconciler).await;
    assert!(recorded.records > 0);
    assert_eq!(recorded.signals(), 0);
    assert!(setup.drifts().is_empty());

    // The child runs something else, and the (zero) sync timeout is over.
    let desired = setup.desired_digest("search");
    setup.report("search", 1, OTHER, "synced", "deployed by hand");
    let recorded = evaluate(&mut reconciler).await;
    assert_eq!((recorded.drift, recorded.resolved), (1, 0));
    let signal = only_drift(&setup, "search", 0);
    assert_eq!(signal.digest.as_deref(), Some(desired.as_str()));
    assert_eq!(signal.previous_digest.as_deref(), Some(OTHER));
    assert_eq!(signal.revision, commit);
    assert_eq!(signal.parent.as_deref(), Some("."));
    assert_eq!(signal.generation, 1);
    assert_eq!(signal.epoch, reconciler.store().epoch());
    assert!(signal.config_digest.is_some());
    assert!(signal.changed.is_empty() && signal.changed_total == 0);
    let drift = signal.drift.expect("a drift object");
    assert_eq!(drift.status, Status::OutOfSync);
    assert_eq!(drift.previous_status, Some(Status::Missing));
    assert!(!drift.resolved);
    assert!(
        drift.reason.contains("not synced within"),
        "{}",
        drift.reason
    );
    assert!(drift.unsynced_since.is_some_and(|u| u <= drift.since));
    let record = setup.hash(&app_key("search", "status"));
    assert_eq!(record["status"], "out_of_sync");
    assert_eq!(
        record["drift_key"],
        format!("out_of_sync|{desired}|{OTHER}|1")
    );

    // Evaluating again adds nothing.
    for _ in 0..3 {
        assert_eq!(evaluate(&mut reconciler).await, Recorded::default());
    }
    assert_eq!(setup.drifts().len(), 1);
    assert_eq!(setup.app_drifts("search").len(), 1);

    // The child applies the desired digest: one resolution.
    setup.report("search", 1, &desired, "synced", "ok");
    let recorded = evaluate(&mut reconciler).await;
    assert_eq!((recorded.drift, recorded.resolved), (0, 1));
    let resolution = only_drift(&setup, "search", 1);
    assert_eq!(resolution.digest.as_deref(), Some(desired.as_str()));
    assert_eq!(
        resolution.previous_digest.as_deref(),
        Some(desired.as_str())
    );
    let drift = resolution.drift.expect("a drift object");
    assert!(drift.resolved);
    assert_eq!(
        (drift.status, drift.previous_status, drift.unsynced_since),
        (Status::Synced, Some(Status::OutOfSync), None)
    );
    for _ in 0..3 {
        assert_eq!(evaluate(&mut reconciler).await.signals(), 0);
    }
    assert_eq!(setup.drifts().len(), 2);
    assert_eq!(setup.app_drifts("search").len(), 2);
}

#[tokio::test]
async fn a_retried_write_publishes_the_transition_once() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    evaluate(&mut reconciler).await;
    setup.report("search", 1, OTHER, "synced", "");
    // One evaluation written twice, as a retry after a lost reply would: the
    // second write finds the drift key already stored (checked in Redis, not by
    // the evaluation, which saw none).
    let all = statuses(
        reconciler.store(),
        chrono::Utc::now(),
        chrono::Duration::zero(),
    )
    .await
    .unwrap();
    let first = record_changes(reconciler.store(), &all).await.unwrap();
    let again = record_changes(reconciler.store(), &all).await.unwrap();
    assert_eq!(first.drift, 1);
    assert_eq!((again.records, again.signals()), (first.records, 0));
    assert_eq!(setup.drifts().len(), 1);
    assert_eq!(setup.app_drifts("search").len(), 1);
}

#[tokio::test]
async fn stale_failed_and_orphaned_are_each_signalled_once() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let search = setup.desired_digest("search");
    let platform = setup.desired_digest("platform");
    setup.report("search", 1, &search, "synced", "ok");
    evaluate(&mut reconciler).await;
    assert!(setup.drifts().is_empty(), "synced from the start: no drift");

    // The heartbeat expires.
    setup.redis.cmd(&["DEL", &app_key("search", "heartbeat")]);
    assert_eq!(evaluate(&mut reconciler).await.drift, 1);
    let stale = only_drift(&setup, "search", 0);
    let drift = stale.drift.expect("a drift object");
    assert_eq!(
        (drift.status, drift.previous_status),
        (Status::Stale, Some(Status::Synced))
    );
    assert!(drift.reason.starts_with("no heartbeat"), "{}", drift.reason);

    // A child fails the current generation.
    setup.report("platform", 1, &platform, "failed", "apply: quota exceeded");
    assert_eq!(evaluate(&mut reconciler).await.drift, 1);
    let failed = only_drift(&setup, "platform", 1);
    assert_eq!(failed.digest.as_deref(), Some(platform.as_str()));
    let drift = failed.drift.expect("a drift object");
    assert_eq!(drift.status, Status::Failed);
    assert!(drift.reason.contains("quota exceeded"), "{}", drift.reason);

    // A child reports for an app Git never had (no signal carried a generation
    // above 0 for it: canopy_report refuses any higher one).
    setup.report("ghost", 0, OTHER, "synced", "");
    assert_eq!(evaluate(&mut reconciler).await.drift, 1);
    let orphan = only_drift(&setup, "ghost", 2);
    assert_eq!(orphan.digest, None);
    assert_eq!(orphan.config_digest, None);
    assert_eq!(orphan.generation, 0);
    assert_eq!(orphan.previous_digest.as_deref(), Some(OTHER));
    let drift = orphan.drift.expect("a drift object");
    assert_eq!(
        (drift.status, drift.previous_status),
        (Status::Orphaned, None)
    );
    assert_eq!(
        setup.hash(&app_key("ghost", "status"))["drift_key"],
        format!("orphaned|-|{OTHER}|0")
    );

    for _ in 0..3 {
        assert_eq!(evaluate(&mut reconciler).await.signals(), 0);
    }
    assert_eq!(setup.drifts().len(), 3);
    for app in ["search", "platform", "ghost"] {
        assert_eq!(setup.app_drifts(app).len(), 1, "{app}");
    }

    // Stale again after recovering: a new transition, signalled again.
    setup.report("search", 1, &search, "synced", "ok");
    assert_eq!(evaluate(&mut reconciler).await.resolved, 1);
    setup.redis.cmd(&["DEL", &app_key("search", "heartbeat")]);
    assert_eq!(evaluate(&mut reconciler).await.drift, 1);
    assert_eq!(setup.app_drifts("search").len(), 3);
}

#[tokio::test]
async fn a_pruned_app_whose_child_still_reports_is_orphaned() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let digest = setup.desired_digest("search/indexers/orders");
    setup.report("search/indexers/orders", 1, &digest, "synced", "ok");
    evaluate(&mut reconciler).await;
    git(&setup.repo, &["rm", "-rq", "search/indexers"]);
    git(&setup.repo, &["commit", "-qm", "drop indexers"]);
    let removed = reconciler.cycle().await.unwrap().commit;
    assert_eq!(evaluate(&mut reconciler).await.drift, 1);
    let orphan = only_drift(&setup, "search/indexers/orders", 0);
    assert_eq!(orphan.digest, None);
    assert_eq!(orphan.revision, removed, "the commit that removed it");
    assert_eq!(orphan.previous_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(
        orphan.drift.map(|d| (d.status, d.previous_status)),
        // The prune deleted the status record: the history starts afresh.
        Some((Status::Orphaned, None))
    );
}

#[tokio::test]
async fn a_fenced_daemon_writes_no_record_and_no_signal() {
    let setup = Setup::new();
    let mut old = setup.reconciler().await;
    old.cycle().await.unwrap();
    evaluate(&mut old).await;
    setup.report("search", 1, OTHER, "synced", "");
    let _new = setup.reconciler().await; // claims a newer epoch
    let streams = (setup.drifts(), setup.app_drifts("search"));

    let error = update_statuses(old.store(), chrono::Duration::zero())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Fenced { .. }), "{error:?}");
    assert_eq!(
        setup.hash(&app_key("search", "status"))["status"],
        "missing",
        "the record is unchanged"
    );
    assert!(
        !setup
            .hash(&app_key("search", "status"))
            .contains_key("drift_key")
    );
    assert_eq!((setup.drifts(), setup.app_drifts("search")), streams);

    // The transition was there to signal: the current daemon does it.
    let mut new = _new;
    assert_eq!(evaluate(&mut new).await.drift, 1);
    assert_eq!(only_drift(&setup, "search", 0).epoch, new.store().epoch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_hands_drift_signal_counts_to_its_caller() {
    use canopy::reconcile::{Trigger, run};
    use canopy::source::Schedule;
    use std::sync::{Arc, Mutex};
    use tokio_util::sync::CancellationToken;

    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    let (trigger, shutdown) = (Trigger::default(), CancellationToken::new());
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let log = Arc::clone(&seen);
    let (stop, fire) = (shutdown.clone(), trigger.clone());
    let task = tokio::spawn(async move {
        run(
            &mut reconciler,
            // An hour between cycles: every turn here is a trigger's.
            Schedule::new(Duration::from_secs(3600)),
            trigger,
            stop,
            chrono::Duration::zero(),
            move |cycle| log.lock().unwrap().push(cycle.drift_signals),
        )
        .await;
    });
    let turns = |n: usize| {
        let seen = Arc::clone(&seen);
        move || seen.lock().unwrap().len() >= n
    };
    assert!(eventually_async(Duration::from_secs(30), turns(1)).await);
    // Wait for the evaluation after the first write (every app missing).
    assert!(
        eventually_async(Duration::from_secs(30), || {
            setup
                .hash(&app_key("search", "status"))
                .contains_key("status")
        })
        .await
    );
    setup.report("search", 1, OTHER, "synced", "");
    // A write makes the task evaluate at once.
    setup.commit(&[("platform/values.yaml", "x: 1\n")], "platform");
    fire.fire();
    assert!(
        eventually_async(Duration::from_secs(30), || setup.drifts().len() == 1).await,
        "the status task signals the drift"
    );
    // The next turn hands over the count.
    fire.fire();
    assert!(
        eventually_async(Duration::from_secs(30), || {
            seen.lock().unwrap().iter().sum::<u64>() == 1
        })
        .await,
        "{:?}",
        seen.lock().unwrap()
    );
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(seen.lock().unwrap().iter().sum::<u64>(), 1);
    assert_eq!(setup.drifts().len(), 1);
}

#[tokio::test]
async fn status_counts_are_those_of_every_app() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    setup.report("search", 1, OTHER, "synced", "deployed by hand");
    let timeout = chrono::Duration::zero();
    let all = statuses(reconciler.store(), chrono::Utc::now(), timeout)
        .await
        .unwrap();
    let (counts, _) = update_statuses(reconciler.store(), timeout).await.unwrap();
    assert_eq!(counts.len(), Status::ALL.len(), "every status, zeros too");
    for (status, n) in &counts {
        let want = all.iter().filter(|s| s.record.status == *status).count();
        assert_eq!(*n, want, "{status:?}");
    }
    assert!(counts.contains(&(Status::OutOfSync, 1)), "{counts:?}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<usize>(), all.len());
}
