//! `canopy run --once`, `canopy status` and `canopy diff` through the real binary,
//! against a real redis-server (given by URL, or the embedded one).

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::redis::RedisProc;
use common::*;

fn canopy_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
    cmd.args(args);
    for var in [
        "CANOPY_LOG",
        "RUST_LOG",
        "CANOPY_CONFIG",
        "CANOPY_REDIS_URL",
        "CANOPY_NAMESPACE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run canopy")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(output), stderr(output)))
}

fn once(repo: &Path, state: &Path, redis_url: &str) -> Output {
    once_in(repo, state, redis_url, "cli")
}

fn once_in(repo: &Path, state: &Path, redis_url: &str, namespace: &str) -> Output {
    canopy_env(
        &[
            "run",
            "--once",
            "--output",
            "json",
            "--repo-url",
            &format!("file://{}", repo.display()),
            "--state-dir",
            state.to_str().unwrap(),
            "--redis-url",
            redis_url,
            "--namespace",
            namespace,
        ],
        &[],
    )
}

#[test]
fn run_once_then_status_and_diff() {
    let redis = RedisProc::start();
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();

    let first = once(&repo, state.path(), &redis.url());
    assert!(first.status.success(), "{}", stderr(&first));
    let report = json(&first);
    assert_eq!(report["written"], 10);
    // Not signalled yet: the manual app (payments/db), and the two apps whose
    // dependencies have not reported synced (payments/api, search/query).
    assert_eq!(report["signals"], 7, "{report}");
    assert_eq!(report["held"], 2, "{report}");

    // Same commit again: nothing new, exit 0.
    let again = json(&once(&repo, state.path(), &redis.url()));
    assert_eq!(
        (again["written"].as_u64(), again["signals"].as_u64()),
        (Some(0), Some(0))
    );

    let read = ["--redis-url", &redis.url(), "--namespace", "cli"];
    let status = canopy_env(
        &[&["status", "--output", "json"][..], &read[..]].concat(),
        &[],
    );
    assert!(status.status.success(), "{}", stderr(&status));
    let status = json(&status);
    let apps = status["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 10);
    assert!(apps.iter().all(|a| a["status"] == "missing"), "{status:#}");
    assert_eq!(status["commit"], report["commit"]);

    // The child of payments/api reports the desired digest: Synced, and diff agrees.
    let digest = apps.iter().find(|a| a["app"] == "payments/api").unwrap()["desired"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        "canopy:cli:app:{payments/api}:observed",
        "1",
        &digest,
        "rev",
        "synced",
        "ok",
        "agent-1",
    ]);
    redis.cmd(&[
        "SET",
        "canopy:cli:app:{payments/api}:heartbeat",
        "agent-1",
        "EX",
        "60",
    ]);
    let text = canopy_env(&[&["status"][..], &read[..]].concat(), &[]);
    let line = stdout(&text)
        .lines()
        .find(|l| l.starts_with("payments/api "))
        .unwrap()
        .to_owned();
    assert!(line.contains("synced"), "{line}");
    let diff = canopy_env(&[&["diff", "payments/api"][..], &read[..]].concat(), &[]);
    assert_eq!(diff.status.code(), Some(0), "{}", stdout(&diff));
    assert!(stdout(&diff).ends_with("in sync\n"));

    // Another app differs: exit 1, and the reason names the missing report.
    let diff = canopy_env(&[&["diff", "payments/db"][..], &read[..]].concat(), &[]);
    assert_eq!(diff.status.code(), Some(1));
    assert!(stdout(&diff).contains("observed  -"), "{}", stdout(&diff));
    let unknown = canopy_env(&[&["diff", "nope"][..], &read[..]].concat(), &[]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("app nope is not known in namespace cli"));
}

/// Each app's desired digest and generation in `namespace`.
fn desired(redis: &RedisProc, namespace: &str) -> Vec<(String, String)> {
    let mut conn = redis.conn();
    let mut apps: Vec<String> =
        ::redis::Commands::smembers(&mut conn, format!("canopy:{namespace}:apps")).unwrap();
    apps.sort();
    apps.into_iter()
        .map(|app| {
            let key = format!("canopy:{namespace}:app:{{{app}}}:desired");
            let digest: String = ::redis::Commands::hget(&mut conn, key, "digest").unwrap();
            (app, digest)
        })
        .collect()
}

#[test]
fn run_once_moves_on_from_the_snapshot_of_the_last_run() {
    let redis = RedisProc::start();
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let run = || {
        let out = once(&repo, state.path(), &redis.url());
        assert!(out.status.success(), "{}", stderr(&out));
        json(&out)
    };
    let commit = |files: &[(&str, &str)], message: &str| {
        write_files(&repo, files);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", message]);
    };
    let first = run();
    assert_eq!(first["resync"], true);
    assert!(state.path().join("snapshot/head").is_file());

    // A modified file: only its app is read and compared.
    commit(
        &[("platform/ingress/controller.yaml", "replicas: 3\n")],
        "scale",
    );
    let report = run();
    assert_eq!(
        (&report["resync"], &report["checked"], &report["signals"]),
        (&false.into(), &1.into(), &1.into()),
        "{report}"
    );
    // A removed file, then a new app: the whole snapshot is decoded, still
    // compared app by app.
    std::fs::remove_file(repo.join("platform/namespaces.yaml")).unwrap();
    commit(&[], "drop namespaces");
    let report = run();
    assert_eq!(
        (&report["resync"], &report["checked"]),
        (&false.into(), &1.into())
    );
    commit(
        &[("tools/app.yaml", ""), ("tools/job.yaml", "kind: Job\n")],
        "tools",
    );
    let report = run();
    assert_eq!(report["resync"], false, "{report}");
    assert_eq!(report["kinds"]["sync"], 1, "{report}");
    // A corrupt snapshot is a full comparison, which signals nothing twice.
    std::fs::write(state.path().join("snapshot/head"), b"garbage").unwrap();
    commit(
        &[("platform/ingress/controller.yaml", "replicas: 4\n")],
        "scale",
    );
    let report = run();
    assert_eq!(
        (&report["resync"], &report["signals"]),
        (&true.into(), &1.into()),
        "{report}"
    );
    commit(&[("search/values.yaml", "shards: 9\n")], "shards");
    assert_eq!(run()["checked"], 1);

    // Whatever path each run took, the store holds what a fresh scan finds.
    let fresh = tempfile::tempdir().unwrap();
    let out = once_in(&repo, fresh.path(), &redis.url(), "fresh");
    assert!(out.status.success(), "{}", stderr(&out));
    let moved = desired(&redis, "cli");
    assert_eq!(moved.len(), 11);
    assert_eq!(moved, desired(&redis, "fresh"));
}

#[test]
fn run_once_starts_and_stops_its_own_redis() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.display());
    let args = [
        "run",
        "--once",
        "--repo-url",
        &url,
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    let out = canopy_env(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("10 written, 7 signals, 2 held until their dependencies are synced"),
        "{}",
        stdout(&out)
    );
    assert!(
        state.path().join("redis/appendonlydir").is_dir(),
        "AOF is on"
    );
    assert!(
        !state.path().join("redis/url").exists(),
        "the embedded Redis was stopped"
    );

    // Its data survived (AOF): a second run signals nothing.
    let out = canopy_env(&args, &[]);
    assert!(
        stdout(&out).contains("0 written, 0 signals"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn run_without_redis_server_says_how_to_get_one() {
    let state = tempfile::tempdir().unwrap();
    let out = canopy_env(
        &[
            "run",
            "--once",
            "--repo-url",
            "file:///nowhere",
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("apt-get install redis-server") && err.contains("redis.url"),
        "{err}"
    );
}

#[test]
fn run_reports_a_bad_config_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canopy.yaml");
    std::fs::write(&config, "repo:\n  url: file:///x\n  pol_interval: 5s\n").unwrap();
    let out = canopy_env(
        &["run", "--once", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("canopy.yaml:3:"), "{err}");
    assert!(err.contains("pol_interval"), "{err}");
}

#[test]
fn run_once_fails_cleanly_when_the_remote_is_unreachable() {
    let redis = RedisProc::start();
    let state = tempfile::tempdir().unwrap();
    let out = once(Path::new("/nonexistent/repo"), state.path(), &redis.url());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/repo"),
        "{}",
        stderr(&out)
    );
    let apps: Vec<String> =
        ::redis::Commands::smembers(&mut redis.conn(), "canopy:cli:apps").unwrap();
    assert!(apps.is_empty(), "nothing is written without a tree");
}
