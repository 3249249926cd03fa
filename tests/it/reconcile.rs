//! The reconcile cycle against a real redis-server and a real Git repository:
//! the key schema, one signal per (app, digest) transition across polls and
//! restarts, prunes, config-only changes, fencing and recovery from Redis losing
//! its data.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ::redis::Commands;
use canopy::layout::{AppName, LayoutOptions};
use canopy::plan::FileChangeKind;
use canopy::reconcile::CycleError;
use canopy::store::{Signal, SignalKind, StoreError};
use common::reconcile::{NS, Setup, app_key, signals_in};
use common::redis::Persistence;
use common::*;

impl Setup {
    fn signals(&self) -> Vec<Signal> {
        signals_in(&mut self.redis.conn(), &format!("canopy:{NS}:events"))
    }
}

/// name -> digest, from `canopy tree --output json` of a path.
fn tree_digests(path: &Path) -> BTreeMap<String, String> {
    let out = canopy(&["tree", path.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| {
            Some((
                a["name"].as_str()?.to_owned(),
                a["digest"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn kinds(signals: &[Signal]) -> Vec<(String, SignalKind)> {
    signals.iter().map(|s| (s.app.clone(), s.kind)).collect()
}

#[tokio::test]
async fn first_cycle_writes_every_app_and_signals_each_once() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    let report = reconciler.cycle().await.unwrap();
    let expected = tree_digests(&setup.repo);
    assert!(report.resync && report.changed);
    assert_eq!(report.written, expected.len());

    let members: std::collections::BTreeSet<String> = setup
        .redis
        .conn()
        .smembers(format!("canopy:{NS}:apps"))
        .unwrap();
    assert_eq!(members, expected.keys().cloned().collect());
    for (app, digest) in &expected {
        let desired = setup.hash(&app_key(app, "desired"));
        assert_eq!(&desired["digest"], digest, "{app}");
        assert_eq!(desired["generation"], "1");
        assert_eq!(desired["revision"], report.commit);
        let files = setup.hash(&app_key(app, "files"));
        assert_eq!(files.len().to_string(), desired["files"]);
    }
    let config = setup.hash(&app_key("payments/api", "config"));
    assert!(!config.is_empty(), "the example's payments/api has config");

    let signals = setup.signals();
    // The manual-sync app gets desired state but no signal.
    let manual: Vec<&String> = expected
        .keys()
        .filter(|a| setup.hash(&app_key(a, "desired"))["sync"] == "manual")
        .collect();
    assert_eq!(manual.len(), 1, "the example has one manual app");
    assert_eq!(signals.len(), expected.len() - 1);
    assert!(
        signals
            .iter()
            .all(|s| s.kind == SignalKind::Sync && s.generation == 1)
    );
    assert!(signals.iter().all(|s| s.previous_digest.is_none()));
    let root = signals.iter().position(|s| s.app == ".").unwrap();
    assert_eq!(root, 0, "parents are signalled before their children");
    for signal in &signals {
        assert_eq!(signal.digest.as_ref(), expected.get(&signal.app));
        assert_eq!(signal.changed.len(), signal.changed_total);
        let app_stream = signals_in(&mut setup.redis.conn(), &app_key(&signal.app, "events"));
        assert_eq!(app_stream, std::slice::from_ref(signal));
        let groups: ::redis::streams::StreamInfoGroupsReply = setup
            .redis
            .conn()
            .xinfo_groups(app_key(&signal.app, "events"))
            .unwrap();
        assert_eq!(groups.groups[0].name, "canopy");
    }
    let meta = setup.hash(&format!("canopy:{NS}:meta"));
    assert_eq!(meta["commit"], report.commit);
    assert_eq!(meta["schema"], "1");
}

#[tokio::test]
async fn repeated_polls_and_restarts_emit_nothing_new() {
    let setup = Setup::new();
    let mut first = setup.reconciler().await;
    first.cycle().await.unwrap();
    let before = setup.signals().len();
    let again = first.cycle().await.unwrap();
    assert!(!again.changed && again.written == 0);
    drop(first);

    // A restart: new process state, same Redis, same commit. The store already
    // holds this commit's desired state: nothing is scanned or signalled, and the
    // epoch moves on.
    let epoch_before: u64 = setup
        .redis
        .conn()
        .get(format!("canopy:{NS}:epoch"))
        .unwrap();
    let mut restarted = setup.reconciler().await;
    let report = restarted.cycle().await.unwrap();
    assert_eq!((report.checked, report.written), (0, 0), "{report:?}");
    assert!(
        restarted.poller().state().is_none(),
        "no scan for an unchanged tip"
    );
    assert_eq!(setup.signals().len(), before);
    let epoch: u64 = setup
        .redis
        .conn()
        .get(format!("canopy:{NS}:epoch"))
        .unwrap();
    assert_eq!(epoch, epoch_before + 1);

    // The first change after the restart compares every app with the store and
    // signals only the changed one.
    setup.commit(&[("search/values.yaml", "shards: 3\n")], "shards");
    let report = restarted.cycle().await.unwrap();
    assert!(report.resync && report.changed);
    let new = &setup.signals()[before..];
    assert_eq!(kinds(new), [("search".to_owned(), SignalKind::Sync)]);

    // Other layout options (here: another marker file) do not trust the stored
    // commit: the tree is scanned and compared again.
    drop(restarted);
    let layout = LayoutOptions {
        marker: "canopy.yaml".to_owned(),
        ..LayoutOptions::default()
    };
    let mut other = setup
        .reconciler_of(&setup.repo, setup.state.path(), layout)
        .await;
    let report = other.cycle().await.unwrap();
    assert!(other.poller().state().is_some(), "{report:?}");
    assert!(
        report.written > 0,
        "without app.yaml markers the apps are pruned"
    );
}

#[tokio::test]
async fn one_changed_app_gets_one_signal_with_its_files() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let before = setup.signals().len();
    let old = setup.hash(&app_key("payments/api", "desired"));

    setup.commit(
        &[("payments/api/deployment.yaml", "replicas: 7\n")],
        "scale",
    );
    let report = reconciler.cycle().await.unwrap();
    assert!(
        !report.resync,
        "an ordinary poll only looks at the planned apps"
    );
    assert_eq!((report.checked, report.written, report.signals), (1, 1, 1));
    let signals = setup.signals();
    let new = &signals[before..];
    assert_eq!(kinds(new), [("payments/api".to_owned(), SignalKind::Sync)]);
    let signal = &new[0];
    assert_eq!(signal.generation, 2);
    assert_eq!(signal.previous_digest.as_ref(), Some(&old["digest"]));
    assert_eq!(signal.changed.len(), 1);
    assert_eq!(signal.changed[0].path, "deployment.yaml");
    assert_eq!(
        signal.digest.as_ref(),
        tree_digests(&setup.repo).get("payments/api")
    );
    assert_eq!(signal.epoch, reconciler.store().epoch());
}

#[tokio::test]
async fn config_only_change_is_a_config_signal() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let before = setup.signals().len();
    let spec = std::fs::read_to_string(setup.repo.join("payments/api/app.yaml")).unwrap();
    assert!(
        spec.contains("LOG_LEVEL: info"),
        "the fixture has config to change"
    );
    let changed = spec.replacen("LOG_LEVEL: info", "LOG_LEVEL: debug, NEW_FLAG: on", 1);
    setup.commit(&[("payments/api/app.yaml", &changed)], "config");
    reconciler.cycle().await.unwrap();
    let new = &setup.signals()[before..];
    assert_eq!(
        kinds(new),
        [("payments/api".to_owned(), SignalKind::Config)]
    );
    let config = setup.hash(&app_key("payments/api", "config"));
    assert_eq!(
        (config["LOG_LEVEL"].as_str(), config["NEW_FLAG"].as_str()),
        ("debug", "on")
    );
}

#[tokio::test]
async fn removed_app_is_pruned_and_keeps_its_generation_growing() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let statuses = canopy::view::statuses(
        reconciler.store(),
        chrono::Utc::now(),
        chrono::Duration::minutes(5),
    )
    .await
    .unwrap();
    canopy::reconcile::record_changes(reconciler.store(), &statuses)
        .await
        .unwrap();
    let before = setup.signals().len();

    git(&setup.repo, &["rm", "-rq", "search/indexers"]);
    git(&setup.repo, &["commit", "-qm", "drop indexers"]);
    reconciler.cycle().await.unwrap();
    let pruned = &setup.signals()[before..];
    assert!(!pruned.is_empty());
    assert!(
        pruned
            .iter()
            .all(|s| s.kind == SignalKind::Prune && s.digest.is_none())
    );
    assert!(
        pruned.iter().all(|s| s.parent.as_deref() == Some("search")),
        "a prune names the parent the app had: {pruned:?}"
    );
    for signal in pruned {
        let members: Vec<String> = setup
            .redis
            .conn()
            .smembers(format!("canopy:{NS}:apps"))
            .unwrap();
        assert!(!members.contains(&signal.app));
        let tombstone = setup.hash(&app_key(&signal.app, "desired"));
        assert_eq!(tombstone["generation"], "2");
        assert!(!tombstone.contains_key("digest"));
        assert!(setup.hash(&app_key(&signal.app, "files")).is_empty());
        assert!(
            setup.hash(&app_key(&signal.app, "status")).is_empty(),
            "its status history ends with it"
        );
    }

    // Back again: a sync with a higher generation, so a child's old reports
    // cannot pass for the new one.
    git(&setup.repo, &["revert", "--no-edit", "HEAD"]);
    let n = setup.signals().len();
    reconciler.cycle().await.unwrap();
    let back = &setup.signals()[n..];
    assert_eq!(back.len(), pruned.len());
    assert!(
        back.iter()
            .all(|s| s.kind == SignalKind::Sync && s.generation == 3)
    );
}

#[tokio::test]
async fn redis_losing_its_data_is_rebuilt_from_git() {
    let mut setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let epoch = reconciler.store().epoch();
    let expected = tree_digests(&setup.repo);

    setup.redis.restart(Persistence::Wipe);
    assert!(
        setup.hash(&format!("canopy:{NS}:meta")).is_empty(),
        "the restart wiped Redis"
    );
    // The first attempt may see the dropped connection (and a slow machine may
    // see the source busy, which still repairs the store from the last good tree);
    // the daemon retries on its schedule, and within a few cycles all is back.
    let mut converged = false;
    for _ in 0..4 {
        if reconciler.cycle().await.is_ok() {
            converged = true;
            break;
        }
    }
    assert!(converged, "recovers within four cycles");
    assert!(
        reconciler.store().epoch() > epoch,
        "epochs keep growing across a loss"
    );
    for (app, digest) in &expected {
        assert_eq!(&setup.hash(&app_key(app, "desired"))["digest"], digest);
    }
    // Children see duplicates, never a gap: every auto app is signalled again.
    assert_eq!(setup.signals().len(), expected.len() - 1);
}

/// Every key of the namespace, dumped: what a replica or an AOF file held at
/// this moment.
fn dump_namespace(setup: &Setup) -> BTreeMap<String, Vec<u8>> {
    let mut conn = setup.redis.conn();
    let keys: Vec<String> = conn.keys(format!("canopy:{NS}:*")).unwrap();
    keys.into_iter()
        .map(|key| {
            let dump: Vec<u8> = ::redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
            (key, dump)
        })
        .collect()
}

/// Puts the namespace back as `dump` had it: the writes since are lost, as in
/// an AOF `everysec` crash or a failover to a replica that lagged.
fn lose_writes_since(setup: &Setup, dump: &BTreeMap<String, Vec<u8>>) {
    let mut conn = setup.redis.conn();
    let keys: Vec<String> = conn.keys(format!("canopy:{NS}:*")).unwrap();
    for key in keys {
        let _: () = conn.del(&key).unwrap();
    }
    for (key, value) in dump {
        let _: () = ::redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(value.as_slice())
            .query(&mut conn)
            .unwrap();
    }
}

#[tokio::test]
async fn lost_last_writes_are_written_and_signalled_again() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let before = dump_namespace(&setup);
    let stream = app_key("payments/api", "events");

    setup.commit(
        &[("payments/api/deployment.yaml", "replicas: 9\n")],
        "scale",
    );
    reconciler.cycle().await.unwrap();
    let wanted = tree_digests(&setup.repo)["payments/api"].clone();
    let signals = signals_in(&mut setup.redis.conn(), &stream).len();

    lose_writes_since(&setup, &before);
    assert_ne!(
        setup.hash(&app_key("payments/api", "desired"))["digest"],
        wanted
    );
    let report = reconciler.cycle().await.unwrap();
    assert!(!report.changed, "the tip did not move: {report:?}");
    assert!(report.resync, "meta.commit went back: every app compared");
    assert_eq!(
        setup.hash(&app_key("payments/api", "desired"))["digest"],
        wanted
    );
    let after = signals_in(&mut setup.redis.conn(), &stream);
    assert_eq!(after.len(), signals, "the lost signal is made again, once");
    assert_eq!(
        after.last().unwrap().digest.as_deref(),
        Some(wanted.as_str())
    );
    assert_eq!(
        setup.hash(&format!("canopy:{NS}:meta"))["commit"],
        git(&setup.repo, &["rev-parse", "main"]).trim()
    );
    let report = reconciler.cycle().await.unwrap();
    assert_eq!(
        (report.resync, report.written),
        (false, 0),
        "then quiet again"
    );
}

/// A loss no check can see (here one app's record changed behind the daemon's
/// back) is repaired by the periodic full comparison, and only by it.
#[tokio::test]
async fn the_periodic_full_comparison_repairs_what_no_check_saw() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let key = app_key("search", "desired");
    let wanted = setup.hash(&key)["digest"].clone();
    let _: () = setup
        .redis
        .conn()
        .hset(&key, "digest", format!("sha256:{}", "1".repeat(64)))
        .unwrap();

    let report = reconciler.cycle().await.unwrap();
    assert!(!report.resync, "not yet time for a full comparison");
    assert_ne!(setup.hash(&key)["digest"], wanted);

    reconciler.set_full_compare_every(Duration::ZERO);
    let report = reconciler.cycle().await.unwrap();
    assert!(report.resync);
    assert_eq!((report.written, report.signals), (1, 1), "{report:?}");
    assert_eq!(setup.hash(&key)["digest"], wanted);
}

#[tokio::test]
async fn a_newer_epoch_fences_the_old_daemon() {
    let setup = Setup::new();
    let mut old = setup.reconciler().await;
    old.cycle().await.unwrap();
    let _new = setup.reconciler().await; // claims a newer epoch
    let before = setup.signals().len();
    setup.commit(
        &[("payments/api/deployment.yaml", "replicas: 9\n")],
        "scale",
    );
    let error = old.cycle().await.unwrap_err();
    assert!(
        matches!(error, CycleError::Store(StoreError::Fenced { .. })),
        "{error:?}"
    );
    assert_eq!(
        setup.signals().len(),
        before,
        "a fenced daemon writes nothing"
    );
}

#[tokio::test]
async fn a_failed_write_is_retried_as_a_full_comparison() {
    let mut setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    setup.commit(
        &[("payments/api/deployment.yaml", "replicas: 4\n")],
        "scale",
    );
    setup.redis.kill();
    assert!(reconciler.cycle().await.is_err(), "Redis is down");
    setup.redis.restart(Persistence::Keep);
    let before = setup.signals().len();
    let mut report = None;
    for _ in 0..3 {
        if let Ok(r) = reconciler.cycle().await {
            report = Some(r);
            break;
        }
    }
    let report = report.expect("converges after Redis is back");
    assert!(!report.changed, "the poll itself had succeeded before");
    assert!(
        report.resync,
        "what the failure skipped is found by comparing everything"
    );
    let new = &setup.signals()[before..];
    assert_eq!(kinds(new), [("payments/api".to_owned(), SignalKind::Sync)]);
    // The store's baseline is older than the snapshot's: the change is found by
    // comparing with the stored manifest.
    let changed: Vec<(&str, FileChangeKind)> = new[0]
        .changed
        .iter()
        .map(|f| (f.path.as_str(), f.change))
        .collect();
    assert_eq!(changed, [("deployment.yaml", FileChangeKind::Modified)]);
}

#[tokio::test]
async fn canopy_report_refuses_stale_and_malformed_reports() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    // Generation 2 desired, so that a report of 2 is the newest one possible.
    setup.commit(&[("payments/api/deployment.yaml", "replicas: 2\n")], "two");
    reconciler.cycle().await.unwrap();
    let key = app_key("payments/api", "observed");
    let digest = setup.hash(&app_key("payments/api", "desired"))["digest"].clone();
    let report = |generation: &str, digest: &str, status: &str| -> ::redis::RedisResult<String> {
        ::redis::cmd("FCALL")
            .arg("canopy_report")
            .arg(1)
            .arg(&key)
            .arg(generation)
            .arg(digest)
            .arg("rev")
            .arg(status)
            .arg("applied")
            .arg("agent-1")
            .query(&mut setup.redis.conn())
    };
    assert_eq!(report("2", &digest, "synced").unwrap(), "OK");
    let stored = setup.hash(&key);
    assert_eq!(
        (stored["generation"].as_str(), stored["status"].as_str()),
        ("2", "synced")
    );
    assert!(stored["at"].parse::<i64>().unwrap() > 1_600_000_000_000);

    let stale = report("1", &digest, "failed").unwrap_err();
    assert_eq!(stale.code(), Some("STALE"), "{stale}");
    assert_eq!(setup.hash(&key), stored, "a stale report changes nothing");
    for (generation, digest, status) in [
        ("x", digest.as_str(), "synced"),
        ("2", "sha256:nothex", "synced"),
        ("2", digest.as_str(), "great"),
    ] {
        let error = report(generation, digest, status).unwrap_err();
        assert_eq!(error.code(), Some("ERR"), "{error}");
    }
    assert_eq!(setup.hash(&key), stored);
}

#[tokio::test]
async fn a_lost_functions_library_alone_is_restored() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    setup.redis.cmd(&["FUNCTION", "FLUSH"]);
    setup.commit(
        &[("payments/api/deployment.yaml", "replicas: 6\n")],
        "scale",
    );
    let before = setup.signals().len();
    assert!(
        reconciler.cycle().await.is_err(),
        "the write finds the library gone"
    );
    reconciler.cycle().await.unwrap();
    let new = &setup.signals()[before..];
    assert!(
        new.iter()
            .any(|s| s.app == "payments/api" && s.kind == SignalKind::Sync),
        "{:?}",
        kinds(new)
    );
}

#[tokio::test]
async fn a_report_with_bad_text_does_not_hide_other_apps() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let digest = setup.hash(&app_key("payments/api", "desired"))["digest"].clone();
    // 4095 ASCII bytes then a 3-byte character: the 4 KiB cap must not cut it.
    let message = format!("{}€", "x".repeat(4095));
    setup.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        &app_key("payments/api", "observed"),
        "1",
        &digest,
        "rev",
        "failed",
        &message,
        "agent",
    ]);
    let stored: String = setup
        .redis
        .conn()
        .hget(app_key("payments/api", "observed"), "message")
        .unwrap();
    assert_eq!(
        stored.len(),
        4095,
        "cut before the character, not inside it"
    );
    // Someone else writes invalid UTF-8 into another app's observed hash.
    let _: () = setup
        .redis
        .conn()
        .hset(app_key("search", "observed"), "message", &b"\xff\xfe"[..])
        .unwrap();
    let all = canopy::view::statuses(
        reconciler.store(),
        chrono::Utc::now(),
        chrono::Duration::minutes(5),
    )
    .await
    .unwrap();
    assert_eq!(all.len(), tree_digests(&setup.repo).len());
}

#[tokio::test]
async fn a_lost_desired_hash_never_lowers_the_generation_below_the_childs_report() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let digest = setup.hash(&app_key("payments/api", "desired"))["digest"].clone();
    let observed = app_key("payments/api", "observed");
    // The app's history had reached generation 5, and the child applied it.
    setup.redis.cmd(&[
        "HSET",
        &app_key("payments/api", "desired"),
        "generation",
        "5",
    ]);
    setup.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        &observed,
        "5",
        &digest,
        "rev",
        "synced",
        "ok",
        "agent",
    ]);
    // A partial loss: the desired hash is gone, the child's report is not. After
    // a restart, the next change compares every app and finds it.
    setup
        .redis
        .cmd(&["DEL", &app_key("payments/api", "desired")]);
    drop(reconciler);
    let before = setup.signals().len();
    let mut restarted = setup.reconciler().await;
    setup.commit(&[("payments/db/values.yaml", "size: 2\n")], "db");
    restarted.cycle().await.unwrap();
    let new: Vec<Signal> = setup.signals()[before..]
        .iter()
        .filter(|s| s.app == "payments/api")
        .cloned()
        .collect();
    assert_eq!(kinds(&new), [("payments/api".to_owned(), SignalKind::Sync)]);
    assert_eq!(new[0].generation, 6, "above the reported generation 5");
    let reply = setup.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        &observed,
        "6",
        &digest,
        "rev",
        "synced",
        "ok",
        "agent",
    ]);
    assert_eq!(
        reply,
        ::redis::Value::Okay,
        "the child can report the new generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_cycles_on_trigger_and_backs_off_on_errors() {
    use canopy::reconcile::{Trigger, run};
    use canopy::source::Schedule;
    use std::sync::{Arc, Mutex};
    use tokio_util::sync::CancellationToken;

    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    // An hour between cycles: anything sooner is the trigger's doing.
    let schedule = Schedule::new(Duration::from_secs(3600));
    let (trigger, shutdown) = (Trigger::default(), CancellationToken::new());
    let seen: Arc<Mutex<Vec<(bool, usize)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let (stop, fire) = (shutdown.clone(), trigger.clone());
    let task = tokio::spawn(async move {
        run(
            &mut reconciler,
            schedule,
            trigger,
            stop,
            chrono::Duration::minutes(5),
            move |cycle| {
                let r = cycle.result.as_ref().expect("cycles succeed");
                log.lock().unwrap().push((r.changed, r.signals));
            },
        )
        .await;
    });
    let count = |n: usize| {
        let seen = Arc::clone(&seen);
        move || seen.lock().unwrap().len() >= n
    };
    assert!(
        eventually_async(Duration::from_secs(30), count(1)).await,
        "the first cycle runs at once"
    );
    setup.commit(&[("search/values.yaml", "shards: 16\n")], "shards");
    fire.fire();
    assert!(
        eventually_async(Duration::from_secs(30), count(2)).await,
        "a trigger cycles now"
    );
    // Beside the loop, statuses are evaluated and recorded after a write.
    assert!(
        eventually_async(Duration::from_secs(30), || {
            setup
                .hash(&app_key("search", "status"))
                .get("status")
                .is_some_and(|s| s == "missing")
        })
        .await
    );
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(seen.lock().unwrap()[..2], [(true, 9), (true, 1)]);

    // Failing cycles back off and keep going; the loop never exits on its own.
    let state = tempfile::tempdir().unwrap();
    let mut broken = setup
        .reconciler_of(
            &state.path().join("none.git"),
            state.path(),
            LayoutOptions::default(),
        )
        .await;
    let mut schedule = Schedule::new(Duration::from_secs(3600));
    schedule.backoff_base = Duration::from_millis(5);
    schedule.backoff_cap = Duration::from_millis(20);
    let shutdown = CancellationToken::new();
    let failures = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&failures);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        run(
            &mut broken,
            schedule,
            Trigger::default(),
            stop,
            chrono::Duration::minutes(5),
            move |cycle| {
                assert!(cycle.result.is_err());
                *counter.lock().unwrap() = cycle.failures;
            },
        )
        .await;
    });
    assert!(eventually_async(Duration::from_secs(30), || *failures.lock().unwrap() >= 5).await);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_restart_that_skipped_scanning_still_rebuilds_a_lost_redis() {
    let mut setup = Setup::new();
    setup.reconciler().await.cycle().await.unwrap();
    let mut restarted = setup.reconciler().await;
    restarted.cycle().await.unwrap();
    assert!(
        restarted.poller().state().is_none(),
        "the unchanged tip was not scanned"
    );

    setup.redis.restart(Persistence::Wipe);
    let expected = tree_digests(&setup.repo);
    let mut rebuilt = false;
    for _ in 0..4 {
        let _ = restarted.cycle().await;
        if setup
            .hash(&format!("canopy:{NS}:meta"))
            .contains_key("commit")
        {
            rebuilt = true;
            break;
        }
    }
    assert!(rebuilt, "rebuilt within four cycles");
    for (app, digest) in &expected {
        assert_eq!(&setup.hash(&app_key(app, "desired"))["digest"], digest);
    }
}

#[tokio::test]
async fn a_manual_app_is_signalled_only_when_asked() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let manual = AppName::parse("payments/db").unwrap();
    assert!(setup.signals().iter().all(|s| s.app != "payments/db"));
    let desired = setup.hash(&app_key("payments/db", "desired"));

    let signal = reconciler
        .store()
        .signal_now(&manual, 1_800_000_000_000)
        .await
        .unwrap()
        .expect("the app has desired state");
    assert_eq!(signal.digest.as_ref(), Some(&desired["digest"]));
    assert_eq!(signal.generation.to_string(), desired["generation"]);
    let signals = setup.signals();
    assert_eq!(
        signals.last(),
        Some(&signal),
        "on the events stream as sent"
    );
    assert_eq!(
        signals_in(&mut setup.redis.conn(), &app_key("payments/db", "events")),
        [signal]
    );
    let after = setup.hash(&app_key("payments/db", "desired"));
    assert_eq!(after["signalled_at"], "1800000000000");

    let unknown = AppName::parse("nope").unwrap();
    assert_eq!(
        reconciler.store().signal_now(&unknown, 0).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn an_app_waits_for_its_dependencies_then_its_held_signal_goes_out() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.set_depends_on_timeout(Duration::from_secs(3600));
    let report = reconciler.cycle().await.unwrap();
    // payments/api depends on payments/db (manual), search/query on
    // search/indexers/products: both wait, their desired state already written.
    assert_eq!(report.held, 2, "{report:?}");
    let held = |app: &str| !setup.signals().iter().any(|s| s.app == app);
    assert!(held("payments/api") && held("search/query"));
    assert!(
        setup
            .hash(&app_key("payments/api", "desired"))
            .contains_key("digest")
    );

    // Nothing changes while the dependency has not reported.
    assert_eq!(reconciler.cycle().await.unwrap().released, 0);

    // The dependency is signalled and reports the digest: the held signal goes
    // out as it was written (with its file list), exactly once.
    let db = AppName::parse("payments/db").unwrap();
    let signal = reconciler
        .store()
        .signal_now(&db, 0)
        .await
        .unwrap()
        .unwrap();
    setup.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        &app_key("payments/db", "observed"),
        &signal.generation.to_string(),
        signal.digest.as_deref().unwrap(),
        &signal.revision,
        "synced",
        "ok",
        "agent",
    ]);
    // Reported but without a heartbeat, the child is stale: still held.
    assert_eq!(reconciler.cycle().await.unwrap().released, 0);
    setup.redis.cmd(&[
        "SET",
        &app_key("payments/db", "heartbeat"),
        "agent",
        "EX",
        "60",
    ]);
    let report = reconciler.cycle().await.unwrap();
    assert_eq!((report.released, report.released_after_timeout), (1, 0));
    let api: Vec<Signal> = setup
        .signals()
        .into_iter()
        .filter(|s| s.app == "payments/api")
        .collect();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].kind, SignalKind::Sync);
    assert_eq!(
        api[0].changed_total, 3,
        "the held payload keeps its file list"
    );
    assert_eq!(reconciler.cycle().await.unwrap().released, 0, "once");

    // The other one times out and is signalled anyway.
    reconciler.set_depends_on_timeout(Duration::ZERO);
    let report = reconciler.cycle().await.unwrap();
    assert_eq!((report.released, report.released_after_timeout), (1, 1));
    assert!(!held("search/query"));
    let members: Vec<String> = setup
        .redis
        .conn()
        .smembers(format!("canopy:{NS}:held"))
        .unwrap();
    assert!(members.is_empty());
}

/// A cycle dropped while its poll runs on the blocking pool (a shutdown that
/// abandons it) must leave the poller to the next cycle, not lose it.
#[tokio::test]
async fn a_cycle_dropped_mid_poll_leaves_the_poller_to_the_next() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    // `timeout` polls the cycle once, which lends the poller to the blocking
    // pool and waits; the elapsed deadline then drops the cycle.
    let abandoned = tokio::time::timeout(Duration::ZERO, reconciler.cycle()).await;
    assert!(abandoned.is_err(), "the cycle finished in its first poll");
    let report = reconciler.cycle().await.expect("the next cycle runs");
    assert!(report.written > 0, "{report:?}");
    assert!(reconciler.poller().state().is_some());
    reconciler.save_snapshot().await;
}

/// What `FCALL canopy_report` answers for one app's `:observed` key.
fn report_reply(
    conn: &mut ::redis::Connection,
    keys: &[&str],
    generation: &str,
) -> Result<(), ::redis::RedisError> {
    let digest = format!("sha256:{}", "a".repeat(64));
    let mut cmd = ::redis::cmd("FCALL");
    cmd.arg("canopy_report").arg(keys.len()).arg(keys);
    cmd.arg(generation)
        .arg(digest)
        .arg("rev")
        .arg("synced")
        .arg("ok")
        .arg("x")
        .query(conn)
}

/// A report no daemon could use is refused by `canopy_report` itself: a
/// generation outside u64 or above the desired one (the reproduction that once
/// wedged every later cycle), a key that is not an `:observed` key.
#[tokio::test]
async fn canopy_report_refuses_generations_no_signal_carried() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let mut conn = setup.redis.conn();
    let observed = app_key("platform/ingress", "observed");
    let desired = app_key("platform/ingress", "desired");
    for generation in [
        "999999999999999999999",
        "18446744073709551616",
        "2",
        "-1",
        "1e3",
    ] {
        let error = report_reply(&mut conn, &[&observed], generation).unwrap_err();
        assert!(
            error.to_string().contains("generation"),
            "{generation}: {error}"
        );
    }
    let error = report_reply(&mut conn, &[&desired], "1").unwrap_err();
    assert!(error.to_string().contains(":observed"), "{error}");
    let other = app_key("search", "desired");
    let error = report_reply(&mut conn, &[&observed, &other], "1").unwrap_err();
    assert!(error.to_string().contains(":desired"), "{error}");
    assert!(setup.hash(&observed).is_empty(), "nothing was written");
    // The generation the signal carried, with or without the desired key.
    report_reply(&mut conn, &[&observed], "1").unwrap();
    report_reply(&mut conn, &[&observed, &desired], "01").unwrap();
    assert_eq!(setup.hash(&observed)["generation"], "1");
}

/// Hardening: whatever a child writes around `canopy_report` into the keys it
/// may write (garbage in every field, keys of another type), a commit touching
/// its app and others writes and signals every one of them, and the status of
/// the app with garbage says why.
/// The daemon's own keys, of another type (written around canopy, before ACLs
/// keep anyone else out): each write replaces what it finds, so no app, and no
/// namespace-wide key, wedges the cycle for good.
#[tokio::test]
async fn daemon_keys_of_another_type_are_replaced_by_the_next_write() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let mut conn = setup.redis.conn();
    let _: () = conn.set(app_key("search", "desired"), "a string").unwrap();
    let _: () = conn.set(app_key("search", "events"), "x").unwrap();
    let _: () = conn.set(app_key("search", "status"), "x").unwrap();
    let _: () = conn.del(app_key("platform", "events")).unwrap();
    let _: () = conn.rpush(app_key("platform", "events"), "x").unwrap();
    for key in ["events", "apps", "held"] {
        let _: () = conn.set(format!("canopy:{NS}:{key}"), "x").unwrap();
    }

    setup.commit(
        &[
            ("search/values.yaml", "replicas: 4\n"),
            ("platform/namespaces.yaml", "names: [c]\n"),
        ],
        "touch two apps",
    );
    let report = reconciler.cycle().await.expect("the cycle is not wedged");
    assert!(report.written >= 2, "{report:?}");
    let digests = tree_digests(&setup.repo);
    for app in ["search", "platform"] {
        assert_eq!(
            setup.hash(&app_key(app, "desired"))["digest"],
            digests[app],
            "{app}"
        );
        let signals = signals_in(&mut conn, &app_key(app, "events"));
        assert_eq!(
            signals.last().and_then(|s| s.digest.clone()).as_deref(),
            Some(digests[app].as_str()),
            "{app}"
        );
    }
    let apps: Vec<String> = conn.smembers(format!("canopy:{NS}:apps")).unwrap();
    assert!(apps.contains(&"search".to_owned()), "{apps:?}");
    assert!(
        !setup.signals().is_empty(),
        "the events stream is a stream again"
    );
    let report = reconciler.cycle().await.unwrap();
    assert_eq!(report.written, 0, "then quiet: {report:?}");
}

#[tokio::test]
async fn garbage_in_a_childs_keys_is_that_apps_problem_only() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let mut conn = setup.redis.conn();
    let garbage: &[(&str, &[u8])] = &[
        ("generation", b"999999999999999999999"),
        ("digest", b"not a digest"),
        ("revision", b"\xff\xfe"),
        ("status", b"fine"),
        ("message", b"\xc3"),
        ("reporter", b""),
        ("at", b"noon"),
    ];
    let _: () = conn
        .hset_multiple(app_key("platform/ingress", "observed"), garbage)
        .unwrap();
    let _: () = conn
        .hset_multiple(app_key("platform/ingress", "observed_files"), garbage)
        .unwrap();
    let _: () = conn
        .set(app_key("platform/ingress", "heartbeat"), b"\xff")
        .unwrap();
    // Keys of another type than the protocol's.
    let _: () = conn.set(app_key("search", "observed"), "a string").unwrap();
    let _: () = conn
        .hset(app_key("search", "heartbeat"), "a", "hash")
        .unwrap();
    let _: () = conn.set(app_key("search", "observed_files"), "x").unwrap();
    let _: () = conn.set(app_key("search", "dead"), "x").unwrap();

    let before = setup.signals().len();
    setup.commit(
        &[
            ("platform/ingress/deployment.yaml", "replicas: 9\n"),
            ("search/values.yaml", "shards: 9\n"),
            ("platform/namespaces.yaml", "names: [a, b]\n"),
        ],
        "touch three apps",
    );
    let report = reconciler.cycle().await.expect("the cycle is not wedged");
    assert_eq!(report.written, 3, "{report:?}");
    let signalled: Vec<String> = setup.signals()[before..]
        .iter()
        .map(|s| s.app.clone())
        .collect();
    for app in ["platform/ingress", "search", "platform"] {
        assert!(signalled.iter().any(|s| s == app), "{app}: {signalled:?}");
    }
    // The next generation is above the stored one, not the child's garbage.
    let desired = setup.hash(&app_key("platform/ingress", "desired"));
    assert_eq!(desired["generation"], "2");

    canopy::reconcile::update_statuses(reconciler.store(), chrono::Duration::zero())
        .await
        .expect("statuses are evaluated");
    for (app, field) in [
        ("platform/ingress", "field generation of"),
        ("search", "observed"),
    ] {
        let status = setup.hash(&app_key(app, "status"));
        assert_eq!(status["status"], "failed", "{app}: {status:?}");
        assert!(
            status["reason"].contains("unreadable report") && status["reason"].contains(field),
            "{app}: {status:?}"
        );
    }
    let platform = setup.hash(&app_key("platform", "status"));
    assert_ne!(platform["status"], "failed", "{platform:?}");
}

/// Read-only commands load nothing, and a daemon never replaces a newer
/// library: an older binary must not swap the Functions under a newer daemon.
#[tokio::test]
async fn the_functions_library_is_loaded_by_daemons_only_and_never_downgraded() {
    let setup = Setup::new();
    let libraries = |setup: &Setup| -> Vec<::redis::Value> {
        let ::redis::Value::Array(list) = setup.redis.cmd(&["FUNCTION", "LIST"]) else {
            panic!("FUNCTION LIST answers an array");
        };
        list
    };
    let url = setup.redis.url();
    for command in ["status", "diff", "report"] {
        let mut args = vec![command, "--redis-url", &url, "--namespace", NS];
        if command == "diff" {
            args.insert(1, "platform");
        }
        let out = canopy(&args);
        assert!(libraries(&setup).is_empty(), "{command}: {}", stderr(&out));
    }

    let newer = canopy::store::LIBRARY.replace(
        &format!("local VERSION = {}\n", canopy::store::LIBRARY_VERSION),
        "local VERSION = 999\n",
    );
    setup.redis.cmd(&["FUNCTION", "LOAD", &newer]);
    let store = canopy::store::Store::connect(&store_options(&setup.redis.url(), NS))
        .await
        .unwrap();
    let mut probe = store.clone();
    let error = probe.prepare_functions().await.unwrap_err();
    assert!(
        matches!(error, StoreError::NewerLibrary { loaded: 999 }),
        "{error}"
    );
    let version = setup.redis.cmd(&["FCALL_RO", "canopy_version", "0"]);
    assert_eq!(version, ::redis::Value::Int(999), "left as it was");

    // An older (or versionless) library is replaced, in one call.
    setup.redis.cmd(&["FUNCTION", "FLUSH"]);
    let older = canopy::store::LIBRARY.replace(
        &format!("local VERSION = {}\n", canopy::store::LIBRARY_VERSION),
        "local VERSION = 1\n",
    );
    setup.redis.cmd(&["FUNCTION", "LOAD", &older]);
    probe.prepare_functions().await.unwrap();
    let version = setup.redis.cmd(&["FCALL_RO", "canopy_version", "0"]);
    assert_eq!(version, ::redis::Value::Int(canopy::store::LIBRARY_VERSION));
}

/// A desired hash that is unreadable (written around canopy) is rewritten from
/// Git on the next change, expecting the generation canopy_apply finds there:
/// no conflict every cycle, and the generation keeps growing.
#[tokio::test]
async fn an_unreadable_desired_hash_is_rewritten_not_fought_over() {
    let setup = Setup::new();
    let mut reconciler = setup.reconciler().await;
    reconciler.cycle().await.unwrap();
    let desired = app_key("platform/ingress", "desired");
    setup
        .redis
        .cmd(&["HSET", &desired, "wave", "x", "generation", "4"]);
    setup.commit(
        &[("platform/ingress/deployment.yaml", "replicas: 5\n")],
        "five",
    );
    let report = reconciler.cycle().await.expect("no conflict");
    assert_eq!(report.written, 1, "{report:?}");
    let hash = setup.hash(&desired);
    assert_eq!(hash["generation"], "5", "{hash:?}");
    assert_eq!(hash["wave"], "0", "rewritten from Git: {hash:?}");
}
