//! `canopy agent` end to end (issue 6): the real daemon, real agents, a private
//! Redis per test. Push -> signal -> the agent applies -> Synced, and the faults
//! of the child side (RELIABILITY.md 6, 7, 8): a failing hook, a crash before
//! the ack, a lost pub/sub connection, a tampered artifact, a stopped agent;
//! and Redis killed and restarted from its AOF under them (row 2).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::agent::{AgentProcess, Stack, TamperProxy, WAIT, files_under, hex_of};
use common::redis::Persistence;
use common::{eventually, paths_under, process_gone};
use sha2::Digest as _;

const INGRESS: &str = "platform/ingress";
const ORDERS: &str = "search/indexers/orders";
const PRODUCTS: &str = "search/indexers/products";

/// `'<path>'` for a hook command (temp paths hold no quote).
fn q(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// The lines of a file the hook appends to; none if it was never written.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// How many lines of `path` are exactly `line`.
fn count(path: &Path, line: &str) -> usize {
    lines(path).iter().filter(|l| *l == line).count()
}

/// The hook environments logged by [`env_hook`], one map per run.
fn hook_runs(path: &Path) -> Vec<BTreeMap<String, String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split("---\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// A hook that appends its CANOPY_* environment and working directory to `log`.
fn env_hook(log: &Path) -> String {
    format!(
        "{{ env | grep ^CANOPY_ | sort; echo PWD=$(pwd); echo ---; }} >> {}",
        q(log)
    )
}

/// What a successful sync leaves: `current` is the desired digest's version,
/// holding exactly the app's files in the repository; `applied` names it.
fn assert_applied(stack: &Stack, agent: &AgentProcess, app: &str) {
    let digest = stack.desired_digest(app);
    let version = agent.dir.join("versions").join(hex_of(&digest));
    assert_eq!(agent.current(), Some(version.clone()), "{app}: current");
    // Leaf apps: every file of their directory in the repository is theirs.
    assert_eq!(
        files_under(&version),
        files_under(&stack.repo.join(app)),
        "{app}: the version holds the repository's files"
    );
    let applied = std::fs::read_to_string(agent.dir.join("applied")).expect("applied");
    assert_eq!(applied.trim(), digest, "{app}: applied");
}

/// The hook's last run saw the signal's facts, and none of the agent's secrets.
fn assert_last_hook_env(stack: &Stack, agent: &AgentProcess, app: &str, log: &Path, runs: usize) {
    let all = hook_runs(log);
    assert_eq!(all.len(), runs, "{app}: hook runs: {all:#?}");
    let env = all.last().expect("a run");
    let desired = stack.desired(app).expect("desired");
    let dir = agent.dir.join("versions").join(hex_of(&desired["digest"]));
    let expect = [
        ("CANOPY_APP", app.to_owned()),
        ("CANOPY_KIND", "sync".to_owned()),
        ("CANOPY_REVISION", stack.head()),
        ("CANOPY_DIGEST", desired["digest"].clone()),
        ("CANOPY_GENERATION", desired["generation"].clone()),
        ("CANOPY_DIR", dir.display().to_string()),
        (
            "CANOPY_APP_CONFIG",
            agent.dir.join("config.json").display().to_string(),
        ),
        ("PWD", dir.display().to_string()),
    ];
    for (name, value) in expect {
        assert_eq!(env.get(name), Some(&value), "{app}: {name} in {env:#?}");
    }
    for secret in ["CANOPY_TOKEN", "CANOPY_REDIS_URL", "CANOPY_REDIS_PASSWORD"] {
        assert!(
            !env.contains_key(secret),
            "{app}: {secret} leaked: {env:#?}"
        );
    }
}

#[test]
fn two_agents_for_two_apps_converge_to_synced_after_the_first_cycle_and_a_push() {
    let stack = Stack::start("two");
    let logs = [stack.path("ingress-env"), stack.path("orders-env")];
    let agents: Vec<AgentProcess> = [INGRESS, ORDERS]
        .iter()
        .zip(&logs)
        .map(|(app, log)| stack.agent(app, &format!("{app}-1"), &env_hook(log), &[]))
        .collect();
    let apps = [INGRESS, ORDERS];

    // The first cycle's signals.
    for (app, agent) in apps.iter().zip(&agents) {
        assert!(
            eventually(WAIT, || stack.synced(app)),
            "{app} synced after the first cycle:\n{}",
            stack.explain(app, &[agent])
        );
    }
    for ((app, agent), log) in apps.iter().zip(&agents).zip(&logs) {
        assert_applied(&stack, agent, app);
        assert_last_hook_env(&stack, agent, app, log, 1);
    }
    let first: Vec<String> = apps.iter().map(|a| stack.desired_digest(a)).collect();

    // One push changing both apps, then a refresh.
    stack.commit(&[
        ("platform/ingress/controller.yaml", "replicas: 7\n"),
        (
            "search/indexers/orders/cronjob.yaml",
            "schedule: \"*/5 * * * *\"\n",
        ),
    ]);
    stack.refresh();
    for ((app, agent), old) in apps.iter().zip(&agents).zip(&first) {
        assert!(
            eventually(WAIT, || stack.desired_digest(app) != *old
                && stack.synced(app)),
            "{app} synced after the push:\n{}",
            stack.explain(app, &[agent])
        );
    }
    for ((app, agent), log) in apps.iter().zip(&agents).zip(&logs) {
        assert_applied(&stack, agent, app);
        assert_last_hook_env(&stack, agent, app, log, 2);
        let observed = stack.observed(app);
        assert_eq!(observed["reporter"], format!("{app}-1"));
        assert_eq!(observed["revision"], stack.head());
        assert!(stack.acknowledged(app), "{app}: every entry acknowledged");
        assert!(stack.dead(app).is_empty(), "{app}: nothing dead-lettered");
        // The previous version is kept (--keep 3).
        let versions = std::fs::read_dir(agent.dir.join("versions"))
            .unwrap()
            .count();
        assert_eq!(versions, 2, "{app}: versions kept");
    }
    // The daemon's view, through the real CLI (evaluated live from Redis).
    let status = stack.status();
    for app in apps {
        assert_eq!(
            status.get(app).map(String::as_str),
            Some("synced"),
            "{status:?}"
        );
    }
}

#[test]
fn a_failing_hook_is_reported_retried_and_dead_lettered_then_a_fix_syncs() {
    let stack = Stack::start("fail");
    let runs = stack.path("runs");
    let hook = format!(
        "echo \"$CANOPY_DIGEST\" >> {}; if [ -e broken ]; then echo 'starting the ingress' >&2; echo \"boom: broken config in $CANOPY_APP\" >&2; exit 3; fi",
        q(&runs)
    );
    let agent = stack.agent(INGRESS, "ingress-1", &hook, &["--max-attempts", "3"]);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let good = stack.desired_digest(INGRESS);

    // A push that breaks the hook.
    stack.commit(&[("platform/ingress/broken", "yes\n")]);
    stack.refresh();
    assert!(
        eventually(WAIT, || !stack.dead(INGRESS).is_empty()),
        "dead-lettered:\n{}",
        stack.explain(INGRESS, &[&agent])
    );
    let bad = stack.desired_digest(INGRESS);
    assert_ne!(bad, good);
    let desired = stack.desired(INGRESS).unwrap();
    let dead = stack.dead(INGRESS);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let entry = &dead[0];
    assert_eq!(entry["kind"], "sync");
    assert_eq!(entry["app"], INGRESS);
    assert_eq!(entry["generation"], desired["generation"]);
    assert_eq!(entry["attempts"], "3");
    assert_eq!(entry["consumer"], "ingress-1");
    assert!(entry["payload"].contains(&bad), "{entry:#?}");
    for needle in [
        "exited with status 3",
        "boom: broken config in platform/ingress",
    ] {
        assert!(entry["error"].contains(needle), "{needle}: {entry:#?}");
    }
    assert_eq!(stack.pending(INGRESS), 0, "acknowledged once dead-lettered");
    // Retried after the first and second failures, with backoff; the third
    // went to `:dead`.
    assert!(
        eventually(WAIT, || agent.logged("signal dead-lettered")),
        "{}",
        agent.log()
    );
    assert_eq!(
        agent.logged_times("signal failed; retrying"),
        2,
        "{}",
        agent.log()
    );
    assert_eq!(agent.logged_times("signal dead-lettered"), 1);

    // Reported failed, with the stderr tail, for the current generation.
    let observed = stack.observed(INGRESS);
    assert_eq!(observed["status"], "failed", "{observed:#?}");
    assert_eq!(observed["generation"], desired["generation"]);
    for needle in [
        "exited with status 3",
        "starting the ingress",
        "boom: broken config in platform/ingress",
    ] {
        assert!(
            observed["message"].contains(needle),
            "{needle}: {observed:#?}"
        );
    }
    assert_eq!(stack.status_of(INGRESS), "failed");
    // The failed version was switched back: what runs is still the good one.
    assert_eq!(
        agent.current(),
        Some(agent.dir.join("versions").join(hex_of(&good)))
    );
    assert_eq!(
        std::fs::read_to_string(agent.dir.join("applied"))
            .unwrap()
            .trim(),
        good
    );

    // A fix, pushed: synced again.
    stack.commit_removal(&["platform/ingress/broken"]);
    stack.commit(&[("platform/ingress/controller.yaml", "replicas: 3\n")]);
    stack.refresh();
    assert!(
        eventually(WAIT, || stack.desired_digest(INGRESS) != bad
            && stack.synced(INGRESS)),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let fixed = stack.desired_digest(INGRESS);
    assert_applied(&stack, &agent, INGRESS);
    assert_eq!(stack.status_of(INGRESS), "synced");
    // No hot loop: exactly one run per delivery of the failing signal, none
    // after it was dead-lettered.
    assert_eq!(count(&runs, &bad), 3, "{:?}", lines(&runs));
    assert_eq!(count(&runs, &good), 1, "{:?}", lines(&runs));
    assert_eq!(count(&runs, &fixed), 1, "{:?}", lines(&runs));
    assert!(stack.acknowledged(INGRESS));
}

/// A hook that blocks (after touching `started`) until `release` exists, unless
/// `gate` exists; each run appends its digest to `runs`.
fn blocking_hook(stack: &Stack) -> String {
    format!(
        "echo $$ > {pid}; echo \"$CANOPY_DIGEST\" >> {runs}; if [ ! -e {gate} ]; then touch {started}; while [ ! -e {release} ]; do sleep 0.02; done; fi; echo \"$CANOPY_DIGEST\" > {finished}",
        pid = q(&stack.path("hook.pid")),
        runs = q(&stack.path("runs")),
        gate = q(&stack.path("gate")),
        started = q(&stack.path("started")),
        release = q(&stack.path("release")),
        finished = q(&stack.path("finished")),
    )
}

fn touch(path: &Path) {
    std::fs::write(path, "").unwrap();
}

/// SIGKILLs the blocked hook's process group, as when the whole pod dies with
/// the agent: no orphan outlives the test.
fn kill_hook(stack: &Stack) {
    let pid = std::fs::read_to_string(stack.path("hook.pid")).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", pid.trim())])
        .status();
}

fn remove(stack: &Stack, names: &[&str]) {
    for name in names {
        let _ = std::fs::remove_file(stack.path(name));
    }
}

#[test]
fn an_agent_killed_before_the_ack_gets_the_entry_again_or_another_takes_it_over() {
    let stack = Stack::start("crash");
    let hook = blocking_hook(&stack);
    let runs = stack.path("runs");
    // A long --claim-idle: the entry can only come back as this consumer's own.
    let same = ["--claim-idle", "60s"];
    let mut first = stack.agent(INGRESS, "ingress-1", &hook, &same);
    assert!(
        eventually(WAIT, || stack.path("started").exists()),
        "{}",
        stack.explain(INGRESS, &[&first])
    );
    let digest = stack.desired_digest(INGRESS);
    assert_eq!(stack.pending(INGRESS), 1, "read, not acknowledged");
    first.kill();
    kill_hook(&stack);
    // The next runs pass the gate.
    touch(&stack.path("gate"));
    assert_eq!(stack.observed(INGRESS)["status"], "progressing");

    let restarted = stack.agent(INGRESS, "ingress-1", &hook, &same);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "redelivered to the same consumer at once:\n{}",
        stack.explain(INGRESS, &[&first, &restarted])
    );
    assert_eq!(count(&runs, &digest), 2, "{:?}", lines(&runs));
    assert!(stack.acknowledged(INGRESS));
    assert!(stack.dead(INGRESS).is_empty());
    assert_applied(&stack, &restarted, INGRESS);

    // The same crash, but the agent comes back under another name: it takes the
    // entry over once it has been idle for --claim-idle (1s).
    remove(&stack, &["gate", "release", "started"]);
    stack.commit(&[("platform/ingress/controller.yaml", "replicas: 4\n")]);
    stack.refresh();
    assert!(
        eventually(WAIT, || stack.path("started").exists()),
        "{}",
        stack.explain(INGRESS, &[&restarted])
    );
    let second = stack.desired_digest(INGRESS);
    assert_ne!(second, digest);
    let mut restarted = restarted;
    restarted.kill();
    kill_hook(&stack);
    touch(&stack.path("gate"));
    let other = stack.agent(INGRESS, "ingress-2", &hook, &["--claim-idle", "1s"]);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "taken over by another consumer:\n{}",
        stack.explain(INGRESS, &[&restarted, &other])
    );
    assert_eq!(stack.observed(INGRESS)["reporter"], "ingress-2");
    assert_eq!(count(&runs, &second), 2, "{:?}", lines(&runs));
    assert!(stack.acknowledged(INGRESS));
    assert!(stack.dead(INGRESS).is_empty());
    assert_applied(&stack, &other, INGRESS);
}

/// The digest of the newest entry of `app`'s stream, if any.
fn last_signalled(stack: &Stack, app: &str) -> Option<String> {
    let last: ::redis::streams::StreamRangeReply = ::redis::Commands::xrevrange_count(
        &mut stack.redis.conn(),
        stack.key(app, "events"),
        "+",
        "-",
        1,
    )
    .expect("XREVRANGE");
    let payload: String = last.ids.first()?.get("payload")?;
    let signal: serde_json::Value = serde_json::from_str(&payload).expect("JSON payload");
    signal["digest"].as_str().map(str::to_owned)
}

/// RELIABILITY row 2: Redis is SIGKILLed and restarted from its AOF while one
/// child holds a read but unacknowledged entry and another child is down with
/// a signal published for it a moment before the kill. `appendfsync always`
/// (see [`RedisProc::fsync_always`](common::redis::RedisProc::fsync_always)):
/// everything the test saw was in the AOF file before the kill. After the
/// restart the pending entry is redelivered to the restarted agent (same
/// consumer: its own pending entries are re-read first), which applies it
/// again; the other agent finds its signal and applies it. Both end synced at
/// the desired digest, every entry acknowledged.
#[test]
fn after_a_redis_kill_and_aof_restart_pending_and_just_published_signals_are_delivered() {
    let mut stack = Stack::start("aof");
    stack.redis.fsync_always();

    // ingress: read, hook running, killed before the ack.
    let hook = blocking_hook(&stack);
    let runs = stack.path("runs");
    let same = ["--claim-idle", "60s"];
    let mut ingress = stack.agent(INGRESS, "ingress-1", &hook, &same);
    assert!(
        eventually(WAIT, || stack.path("started").exists()),
        "{}",
        stack.explain(INGRESS, &[&ingress])
    );
    let pending_digest = stack.desired_digest(INGRESS);
    assert_eq!(stack.pending(INGRESS), 1, "read, not acknowledged");
    ingress.kill();
    kill_hook(&stack);
    touch(&stack.path("gate"));

    // orders: synced, then down while its next signal is published.
    let orders_runs = stack.path("orders-runs");
    let orders_hook = format!("echo \"$CANOPY_DIGEST\" >> {}", q(&orders_runs));
    let mut orders = stack.agent(ORDERS, "orders-1", &orders_hook, &[]);
    assert!(
        eventually(WAIT, || stack.synced(ORDERS)),
        "{}",
        stack.explain(ORDERS, &[&orders])
    );
    let before = stack.desired_digest(ORDERS);
    orders.kill();
    stack.commit(&[(
        "search/indexers/orders/cronjob.yaml",
        "schedule: \"*/7 * * * *\"\n",
    )]);
    stack.refresh();
    assert!(
        eventually(WAIT, || last_signalled(&stack, ORDERS)
            .is_some_and(|d| d != before)),
        "{}",
        stack.explain(ORDERS, &[&orders])
    );
    let published = stack.desired_digest(ORDERS);
    assert_eq!(last_signalled(&stack, ORDERS), Some(published.clone()));

    // At once, no graceful shutdown: only the AOF file holds the data.
    stack.redis.kill();
    stack.redis.restart(Persistence::Keep);
    assert_eq!(stack.pending(INGRESS), 1, "the read entry is still pending");
    assert_eq!(
        last_signalled(&stack, ORDERS),
        Some(published.clone()),
        "the signal published before the kill is still in the stream"
    );

    let ingress = stack.agent(INGRESS, "ingress-1", &hook, &same);
    let orders = stack.agent(ORDERS, "orders-1", &orders_hook, &[]);
    assert!(
        eventually(WAIT, || stack.observed_is(
            INGRESS,
            "synced",
            &pending_digest
        )),
        "the pending entry is redelivered and applied:\n{}",
        stack.explain(INGRESS, &[&ingress])
    );
    assert!(
        stack.synced(INGRESS),
        "{}",
        stack.explain(INGRESS, &[&ingress])
    );
    assert_eq!(count(&runs, &pending_digest), 2, "{:?}", lines(&runs));
    assert_applied(&stack, &ingress, INGRESS);
    assert!(stack.acknowledged(INGRESS));
    assert!(
        eventually(WAIT, || stack.observed_is(ORDERS, "synced", &published)),
        "the signal published before the kill is applied:\n{}",
        stack.explain(ORDERS, &[&orders])
    );
    assert!(stack.synced(ORDERS));
    assert_eq!(lines(&orders_runs), vec![before, published]);
    assert_applied(&stack, &orders, ORDERS);
    assert!(stack.acknowledged(ORDERS));
    for app in [INGRESS, ORDERS] {
        assert!(stack.dead(app).is_empty(), "{app}: nothing dead-lettered");
    }
}

#[test]
fn an_agent_catches_up_from_the_stream_while_its_pubsub_connection_is_killed() {
    let stack = Stack::start("pubsub");
    let runs = stack.path("runs");
    let hook = format!("echo \"$CANOPY_DIGEST\" >> {}", q(&runs));
    let agent = stack.agent(INGRESS, "ingress-1", &hook, &[]);
    let channel = stack.key(INGRESS, "signal");
    let subscribers = || -> i64 {
        let reply: Vec<(String, i64)> = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query(&mut stack.redis.conn())
            .unwrap();
        reply[0].1
    };
    assert!(
        eventually(WAIT, || stack.synced(INGRESS) && subscribers() == 1),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let first = stack.desired_digest(INGRESS);

    // Kill every pub/sub connection, again and again, while the change goes out.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let mut conn = stack.redis.conn();
        std::thread::spawn(move || {
            let mut killed = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let n: i64 = ::redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query(&mut conn)
                    .unwrap();
                killed += n;
                std::thread::sleep(Duration::from_millis(5));
            }
            killed
        })
    };
    assert!(
        eventually(WAIT, || agent
            .logged("pub/sub connection lost; resubscribing")),
        "{}",
        agent.log()
    );
    stack.commit(&[("platform/ingress/controller.yaml", "replicas: 9\n")]);
    stack.refresh();
    let caught_up = eventually(WAIT, || {
        stack.desired_digest(INGRESS) != first && stack.synced(INGRESS)
    });
    stop.store(true, Ordering::SeqCst);
    let killed = killer.join().unwrap();
    assert!(caught_up, "{}", stack.explain(INGRESS, &[&agent]));
    assert!(killed >= 1, "pub/sub connections killed: {killed}");
    assert_applied(&stack, &agent, INGRESS);
    // It subscribes again once left alone.
    assert!(eventually(WAIT, || subscribers() == 1), "{}", agent.log());
    assert_eq!(lines(&runs).len(), 2, "{:?}", lines(&runs));
}

/// The ingress agent, downloading through a [`TamperProxy`] (two attempts per
/// signal), synced through it while it is honest. Its hook appends each digest
/// it runs to `runs`.
struct Proxied {
    proxy: TamperProxy,
    agent: AgentProcess,
    runs: PathBuf,
    /// The digest it runs.
    good: String,
}

fn ingress_behind_a_proxy(stack: &Stack) -> Proxied {
    let proxy = TamperProxy::start(stack.daemon.addr);
    let runs = stack.path("runs");
    let hook = format!("echo \"$CANOPY_DIGEST\" >> {}", q(&runs));
    let agent = stack.agent_via(
        &proxy.url(),
        INGRESS,
        "ingress-1",
        &hook,
        &["--max-attempts", "2"],
    );
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "through an honest proxy:\n{}",
        stack.explain(INGRESS, &[&agent])
    );
    let good = stack.desired_digest(INGRESS);
    Proxied {
        proxy,
        agent,
        runs,
        good,
    }
}

/// What a refused artifact leaves once dead-lettered: each delivery came
/// through the proxy's fault, `failed` is reported with the digest still run,
/// the report and the dead letter both say why (`says`), the hook never ran
/// again, and the entry is acknowledged.
fn assert_refused(stack: &Stack, proxied: &Proxied, says: &dyn Fn(&str) -> bool) {
    assert!(proxied.proxy.tampered() >= 2, "each delivery got the fault");
    let observed = stack.observed(INGRESS);
    assert_eq!(observed["status"], "failed", "{observed:#?}");
    assert_eq!(
        observed["digest"], proxied.good,
        "reports the digest it still runs"
    );
    for text in [&observed["message"], &stack.dead(INGRESS)[0]["error"]] {
        assert!(says(text), "says why: {text}");
    }
    assert_eq!(lines(&proxied.runs), vec![proxied.good.clone()]);
    assert!(stack.acknowledged(INGRESS));
}

#[test]
fn a_tampered_artifact_is_refused_and_reported_and_nothing_runs() {
    let stack = Stack::start("tamper");
    let proxied = ingress_behind_a_proxy(&stack);
    let (agent, good) = (&proxied.agent, &proxied.good);

    proxied.proxy.tamper(true);
    stack.commit(&[("platform/ingress/controller.yaml", "replicas: 11\n")]);
    stack.refresh();
    assert!(
        eventually(WAIT, || !stack.dead(INGRESS).is_empty()),
        "{}",
        stack.explain(INGRESS, &[agent])
    );
    let bad = stack.desired_digest(INGRESS);
    assert_ne!(&bad, good);
    assert_refused(&stack, &proxied, &|text| {
        text.contains("have digest sha256:") && text.contains(&format!("expected {bad}"))
    });
    assert_eq!(stack.status_of(INGRESS), "failed");
    // Nothing was unpacked, `current` never moved.
    assert_eq!(
        agent.current(),
        Some(agent.dir.join("versions").join(hex_of(good)))
    );
    assert!(!agent.dir.join("versions").join(hex_of(&bad)).exists());
}

/// `--max-artifact-size` reaches the download: an artifact past it fails the
/// signal with an error naming the daemon and the cap, and nothing runs.
#[test]
fn an_artifact_past_max_artifact_size_is_refused_and_reported() {
    let stack = Stack::start("artifact-cap");
    let runs = stack.path("runs");
    // Any tar is at least 2 KiB: a 512-byte header and a block per file, and
    // two blocks at the end.
    let agent = stack.agent(
        INGRESS,
        "ingress-1",
        &format!("echo run >> {}", q(&runs)),
        &["--max-attempts", "1", "--max-artifact-size", "1KiB"],
    );
    assert!(
        eventually(WAIT, || !stack.dead(INGRESS).is_empty()),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let observed = stack.observed(INGRESS);
    assert_eq!(observed["status"], "failed", "{observed:#?}");
    let says = format!("from {} exceed 1024 bytes", stack.daemon.url(""));
    for text in [&observed["message"], &stack.dead(INGRESS)[0]["error"]] {
        assert!(text.contains(&says), "{text}");
    }
    assert!(lines(&runs).is_empty(), "the hook ran");
    assert_eq!(agent.current(), None);
}

/// RELIABILITY row 21 across the wire: `search/indexers/orders`, three levels
/// deep, links `../../../platform/namespaces.yaml`. Inside the repository, but
/// once unpacked in an agent's `versions/<hex>/` it would name whatever lies
/// three levels up. The daemon refuses the app, so nothing is signalled and its
/// last good state stays desired; the sibling's in-app link syncs and is
/// applied as a link.
#[test]
fn a_link_out_of_its_app_is_never_signalled_and_a_sibling_in_app_link_syncs() {
    let stack = Stack::start("links");
    let runs = stack.path("runs");
    let hook = format!("echo \"$CANOPY_APP $CANOPY_DIGEST\" >> {}", q(&runs));
    let orders = stack.agent(ORDERS, "orders-1", &hook, &[]);
    let products = stack.agent(PRODUCTS, "products-1", &hook, &[]);
    assert!(
        eventually(WAIT, || stack.synced(ORDERS) && stack.synced(PRODUCTS)),
        "{}",
        stack.explain(ORDERS, &[&orders, &products])
    );
    let (orders_before, products_before) =
        (stack.desired_digest(ORDERS), stack.desired_digest(PRODUCTS));
    let orders_versions = paths_under(&orders.dir.join("versions"));

    let link = |target: &str, path: &str| {
        std::os::unix::fs::symlink(target, stack.repo.join(path)).expect("symlink");
    };
    link(
        "../../../platform/namespaces.yaml",
        &format!("{ORDERS}/peek.yaml"),
    );
    link("cronjob.yaml", &format!("{PRODUCTS}/latest.yaml"));
    stack.commit(&[]);
    stack.refresh();
    assert!(
        eventually(WAIT, || stack.desired_digest(PRODUCTS) != products_before
            && stack.synced(PRODUCTS)),
        "{}",
        stack.explain(PRODUCTS, &[&products])
    );
    assert_applied(&stack, &products, PRODUCTS);
    let version = products.current().expect("current");
    assert_eq!(
        std::fs::read_link(version.join("latest.yaml")).expect("a symlink"),
        Path::new("cronjob.yaml")
    );

    // The same cycle left orders alone: no signal, no new version.
    assert_eq!(stack.desired_digest(ORDERS), orders_before);
    assert!(
        stack.synced(ORDERS),
        "{}",
        stack.explain(ORDERS, &[&orders])
    );
    assert_eq!(
        lines(&runs)
            .iter()
            .filter(|l| l.starts_with(&format!("{ORDERS} ")))
            .count(),
        1,
        "{:?}",
        lines(&runs)
    );
    assert_eq!(paths_under(&orders.dir.join("versions")), orders_versions);
}

/// Defence in depth: the agent checks every link again, whatever the daemon
/// says. A forged signal whose digest matches a hand-built tar (so the digest
/// check passes) that holds `escape -> ../../escape` (the agent's own
/// directory, seen from `versions/<hex>/`) is refused as an unsafe entry naming
/// the link, before anything is written: the agent's directory is as it was,
/// the hook never runs, and the signal is dead-lettered.
#[test]
fn a_tar_with_a_link_out_of_its_version_directory_is_refused_before_anything_is_written() {
    let stack = Stack::start("unsafe-link");
    let proxied = ingress_behind_a_proxy(&stack);
    let (agent, good) = (&proxied.agent, &proxied.good);
    let before = paths_under(&agent.dir);

    let controller = b"replicas: 1\n";
    let mut tar = ::tar::Builder::new(Vec::new());
    let mut header = ::tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(controller.len() as u64);
    tar.append_data(&mut header, "controller.yaml", &controller[..])
        .expect("append");
    let mut header = ::tar::Header::new_gnu();
    header.set_entry_type(::tar::EntryType::Symlink);
    header.set_size(0);
    tar.append_link(&mut header, "escape", "../../escape")
        .expect("append the link");
    let tar = tar.into_inner().expect("tar");
    let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    let manifest = format!(
        "{}  controller.yaml\n{}  escape\n",
        sha(controller),
        sha(b"../../escape")
    );
    let forged = format!("sha256:{}", sha(manifest.as_bytes()));
    proxied.proxy.replace(tar, &forged);

    // The daemon's last signal, with the forged digest.
    let events = stack.key(INGRESS, "events");
    let mut redis = stack.redis.conn();
    let last: ::redis::streams::StreamRangeReply =
        ::redis::Commands::xrevrange_count(&mut redis, &events, "+", "-", 1).expect("XREVRANGE");
    let payload: String = last.ids[0].get("payload").expect("payload");
    let mut signal: serde_json::Value = serde_json::from_str(&payload).expect("JSON");
    signal["digest"] = forged.clone().into();
    signal["previous_digest"] = good.clone().into();
    let fields = [
        ("kind", "sync".to_owned()),
        ("app", INGRESS.to_owned()),
        ("generation", signal["generation"].to_string()),
        ("payload", signal.to_string()),
    ];
    let _: String = ::redis::Commands::xadd(&mut redis, &events, "*", &fields).expect("XADD");

    assert!(
        eventually(WAIT, || !stack.dead(INGRESS).is_empty()
            || stack.observed_is(INGRESS, "synced", &forged)),
        "{}",
        stack.explain(INGRESS, &[agent])
    );
    assert_refused(&stack, &proxied, &|text| {
        text.contains("unsafe entry \"escape\": symlink target leaves its app's directory")
            && !text.contains("../../escape")
    });
    assert_eq!(paths_under(&agent.dir), before, "nothing was written");
    assert!(std::fs::symlink_metadata(agent.dir.join("escape")).is_err());
}

#[test]
fn a_stopped_agent_exits_0_and_its_app_shows_stale_once_the_heartbeat_expires() {
    let stack = Stack::start("stale");
    let mut agent = stack.agent(INGRESS, "ingress-1", "true", &["--heartbeat-ttl", "2s"]);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)
            && stack.status_of(INGRESS) == "synced"),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let heartbeat = stack.key(INGRESS, "heartbeat");
    let ttl: i64 = ::redis::Commands::pttl(&mut stack.redis.conn(), &heartbeat).unwrap();
    assert!(ttl > 0 && ttl <= 2000, "heartbeat PX 2s: {ttl}");

    agent.signal("TERM");
    let status = agent.wait(WAIT).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    // (Its last lines may still be in the pipe.)
    assert!(
        eventually(WAIT, || agent.logged("stopped")),
        "{}",
        agent.log()
    );
    assert!(
        eventually(WAIT, || stack.status_of(INGRESS) == "stale"),
        "{:?}",
        stack.status()
    );
    let exists: bool = ::redis::Commands::exists(&mut stack.redis.conn(), &heartbeat).unwrap();
    assert!(!exists);
    // Its last report is kept: only the heartbeat says it is gone.
    assert_eq!(stack.observed(INGRESS)["status"], "synced");
}

#[test]
fn sigterm_lets_a_running_hook_finish_and_report_within_the_grace_period() {
    let stack = Stack::start("grace");
    let hook = blocking_hook(&stack);
    let mut agent = stack.agent(INGRESS, "ingress-1", &hook, &["--grace", "20s"]);
    assert!(
        eventually(WAIT, || stack.path("started").exists()),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let digest = stack.desired_digest(INGRESS);
    agent.signal("TERM");
    assert!(
        eventually(WAIT, || agent.logged(
            "stopping after the running hook (signal again to exit at once)"
        )),
        "{}",
        agent.log()
    );
    assert!(agent.wait(Duration::ZERO).is_none(), "waits for the hook");
    touch(&stack.path("release"));
    let status = agent.wait(WAIT).expect("exits once the hook is done");
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert_eq!(
        std::fs::read_to_string(stack.path("finished"))
            .unwrap()
            .trim(),
        digest
    );
    assert!(
        stack.observed_is(INGRESS, "synced", &digest),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    assert_eq!(stack.pending(INGRESS), 0, "acknowledged before exiting");
    assert_applied(&stack, &agent, INGRESS);

    // A hook still running when the grace period ends is killed (its process
    // group too), the agent exits 0, and the entry stays pending for next time.
    remove(&stack, &["release", "started", "finished"]);
    stack.commit(&[("platform/ingress/controller.yaml", "replicas: 8\n")]);
    stack.refresh();
    let mut agent = stack.agent(INGRESS, "ingress-1", &hook, &["--grace", "300ms"]);
    assert!(
        eventually(WAIT, || stack.path("started").exists()),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let pid: u32 = std::fs::read_to_string(stack.path("hook.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    agent.signal("TERM");
    let status = agent.wait(WAIT).expect("exits after the grace period");
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(
        eventually(WAIT, || process_gone(pid)),
        "the hook was killed with the agent"
    );
    assert!(!stack.path("finished").exists());
    assert_eq!(
        stack.pending(INGRESS),
        1,
        "delivered again on the next start"
    );
    assert_eq!(stack.observed(INGRESS)["status"], "progressing");
}

/// Not a check: measures push -> signed webhook -> the agent's `synced` report,
/// 20 times. `cargo test --test agent -- --ignored --nocapture push_to_synced`.
#[test]
#[ignore]
fn push_to_synced_latency() {
    let stack = Stack::start("latency");
    let agent = stack.agent(INGRESS, "ingress-1", "true", &["--poll", "5s"]);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    let (mut times, mut signalled, mut commits) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..20 {
        let before = stack.desired_digest(INGRESS);
        let started = Instant::now();
        stack.commit(&[(
            "platform/ingress/controller.yaml",
            &format!("replicas: {}\n", 100 + i),
        )]);
        commits.push(started.elapsed());
        stack.github_push(&format!("latency-{i}"));
        let deadline = started + WAIT;
        let mut desired_at = None;
        loop {
            if desired_at.is_none() && stack.desired_digest(INGRESS) != before {
                desired_at = Some(started.elapsed());
            }
            let observed = stack.observed(INGRESS);
            if observed.get("status").map(String::as_str) == Some("synced")
                && observed.get("digest").is_some_and(|d| *d != before)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                stack.explain(INGRESS, &[&agent])
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(started.elapsed());
        signalled.push(desired_at.unwrap_or(started.elapsed()));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        ms((v[9] + v[10]) / 2)
    };
    eprintln!(
        "git commit + signed webhook -> agent's synced report, 20 runs: median {:.1} ms (git commit {:.1} ms, desired state written {:.1} ms)",
        median(times.clone()),
        median(commits),
        median(signalled),
    );
    times.sort();
    eprintln!(
        "min {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(times[0]),
        ms(times[17]),
        ms(times[19])
    );
}

/// A config-only change is still a new digest (`app.yaml` is one of the app's
/// files): the agent reports it synced only once that digest's files are what
/// `current` holds, and tells the hook it is a config change.
#[test]
fn a_config_change_is_reported_only_once_its_files_are_installed() {
    let stack = Stack::start("config");
    let log = stack.path("ingress-env");
    let agent = stack.agent(INGRESS, "ingress-1", &env_hook(&log), &[]);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "synced after the first cycle:\n{}",
        stack.explain(INGRESS, &[&agent])
    );
    let first = stack.desired_digest(INGRESS);

    stack.commit(&[(
        "platform/ingress/app.yaml",
        "config: {CLASS: nginx, REPLICAS: \"2\"}\n",
    )]);
    stack.refresh();
    assert!(
        eventually(WAIT, || stack.desired_digest(INGRESS) != first
            && stack.synced(INGRESS)),
        "synced after the config change:\n{}",
        stack.explain(INGRESS, &[&agent])
    );
    assert_applied(&stack, &agent, INGRESS);
    let runs = hook_runs(&log);
    assert_eq!(
        runs.last()
            .and_then(|env| env.get("CANOPY_KIND"))
            .map(String::as_str),
        Some("config"),
        "{runs:#?}"
    );
}

/// Whatever the hook prints, on stdout or stderr and however the pipe splits
/// it, the agent's own output carries its credentials redacted.
#[test]
fn a_credential_printed_by_the_hook_is_redacted_from_the_agents_output() {
    let stack = Stack::start("redact");
    // The hook builds the token from pieces (its command holds no token) and
    // prints it in two writes, 200 ms apart, then once on stderr.
    let hook = "t=agent-test; printf '%s-' \"$t\"; sleep 0.2; printf 'token\\n'; \
                printf 'err %s-token end\\n' \"$t\" >&2";
    let agent = stack.agent(INGRESS, "redact-1", hook, &[]);
    assert!(
        eventually(WAIT, || stack.synced(INGRESS)),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    assert!(
        eventually(WAIT, || agent.log().contains("err *** end")),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.lines().any(|line| line == "***"),
        "stdout redacted: {log}"
    );
    assert!(!log.contains(common::agent::TOKEN), "{log}");
}
