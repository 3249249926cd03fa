//! `canopy run` as a daemon, through the real binary: readiness, a refresh that
//! publishes a commit's signal, `canopy sync` of a manual app, and SIGTERM.

mod common;

use std::time::Duration;

use common::binary::DaemonProcess;
use common::redis::RedisProc;
use common::*;
use sha2::{Digest, Sha256};

const TOKEN: &str = "test-write-token";

struct Setup {
    redis: RedisProc,
    _remote: tempfile::TempDir,
    repo: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let remote = git_repo_from(&fixtures().join("example"));
        let repo = repo_path(&remote);
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisProc::start();
        let config = format!(
            "namespace: e2e\nstate_dir: {state}\nshutdown_grace: 5s\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {redis}\nserver:\n  tokens: [{{name: ci, role: write, sha256: \"{sha}\"}}]\n",
            state = dir.path().join("state").display(),
            repo = repo.display(),
            redis = redis.url(),
            sha = hex::encode(Sha256::digest(TOKEN.as_bytes())),
        );
        std::fs::write(dir.path().join("canopy.yaml"), config).unwrap();
        Setup {
            redis,
            _remote: remote,
            repo,
            dir,
        }
    }

    fn daemon(&self) -> DaemonProcess {
        DaemonProcess::start(&self.dir.path().join("canopy.yaml"), &[], &[])
    }

    fn signals(&self) -> Vec<(String, String)> {
        let reply: ::redis::streams::StreamRangeReply =
            ::redis::Commands::xrange_all(&mut self.redis.conn(), "canopy:e2e:events").unwrap();
        reply
            .ids
            .iter()
            .map(|e| (e.get("app").unwrap(), e.get("kind").unwrap()))
            .collect()
    }
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::get(url).unwrap()
}

#[test]
fn the_daemon_serves_signals_on_refresh_and_stops_on_sigterm() {
    let setup = Setup::new();
    let mut daemon = setup.daemon();
    assert!(
        eventually(Duration::from_secs(30), || get(&daemon.url("/readyz"))
            .status()
            == 200),
        "ready after the first cycle:\n{}",
        daemon.log()
    );
    // payments/db is manual; payments/api and search/query wait for their
    // dependencies to report synced.
    assert_eq!(setup.signals().len(), 7);

    // A commit, then a refresh: the one changed app is signalled without waiting
    // for the (hour-long) poll interval.
    write_files(&setup.repo, &[("search/values.yaml", "shards: 32\n")]);
    git(&setup.repo, &["commit", "-qam", "shards"]);
    let client = reqwest::blocking::Client::new();
    let refresh = client
        .post(daemon.url("/api/v1/refresh"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(refresh.status(), 202);
    assert!(
        eventually(Duration::from_secs(30), || setup.signals().len() == 8),
        "{}",
        daemon.log()
    );
    assert_eq!(setup.signals()[7], ("search".to_owned(), "sync".to_owned()));

    // The manual app, deployed on request through the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["sync", "payments/db", "--server", &daemon.url("")])
        .env("CANOPY_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("signalled payments/db"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        setup.signals()[8],
        ("payments/db".to_owned(), "sync".to_owned())
    );

    // Its child reports the digest applied: payments/api, held for it, goes out
    // on the next cycle.
    let desired: std::collections::HashMap<String, String> = ::redis::Commands::hgetall(
        &mut setup.redis.conn(),
        "canopy:e2e:app:{payments/db}:desired",
    )
    .unwrap();
    setup.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        "canopy:e2e:app:{payments/db}:observed",
        &desired["generation"],
        &desired["digest"],
        &desired["revision"],
        "synced",
        "applied",
        "db-agent",
    ]);
    let refresh = client
        .post(daemon.url("/api/v1/refresh"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(refresh.status(), 202);
    assert!(
        eventually(Duration::from_secs(30), || setup.signals().len() == 10),
        "{}",
        daemon.log()
    );
    assert_eq!(
        setup.signals()[9],
        ("payments/api".to_owned(), "sync".to_owned())
    );
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["sync", "payments/db", "--server", &daemon.url("")])
        .env("CANOPY_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    assert!(
        !stderr(&refused).contains("wrong"),
        "the token is never echoed"
    );

    // 7 from the first cycle, 1 after the refresh, 1 asked for through the API,
    // 1 released.
    let metrics = get(&daemon.url("/metrics")).text().unwrap();
    assert!(
        metrics.contains("canopy_signals_total{kind=\"sync\"} 10"),
        "{metrics}"
    );

    daemon.signal("TERM");
    let status = daemon
        .wait(Duration::from_secs(10))
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("stopped"));
}

#[test]
fn an_unreachable_remote_keeps_the_daemon_up_and_unready() {
    let setup = Setup::new();
    std::fs::rename(&setup.repo, setup.repo.with_extension("moved")).unwrap();
    let daemon = setup.daemon();
    assert!(eventually(Duration::from_secs(30), || daemon
        .log()
        .contains("cycle failed")));
    let ready = get(&daemon.url("/readyz"));
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().unwrap();
    assert!(
        body["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("repo"),
        "{body}"
    );
    assert_eq!(
        get(&daemon.url("/healthz")).status(),
        200,
        "alive, not crash-looping"
    );
    assert!(
        setup.signals().is_empty(),
        "nothing is written without a tree"
    );
}

#[test]
fn a_source_error_shows_in_status_until_the_remote_is_back() {
    let setup = Setup::new();
    let mut daemon = setup.daemon();
    assert!(eventually(Duration::from_secs(30), || get(
        &daemon.url("/readyz")
    )
    .status()
        == 200));
    let moved = setup.repo.with_extension("moved");
    std::fs::rename(&setup.repo, &moved).unwrap();
    let client = reqwest::blocking::Client::new();
    let refresh = || {
        client
            .post(daemon.url("/api/v1/refresh"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(refresh(), 202);
    let status = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["status", "--config"])
            .arg(setup.dir.path().join("canopy.yaml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(
        eventually(Duration::from_secs(30), || status()
            .starts_with("source error since")),
        "{}\n{}",
        status(),
        daemon.log()
    );
    assert_eq!(
        setup.signals().len(),
        7,
        "the last good state stays, nothing pruned"
    );

    std::fs::rename(&moved, &setup.repo).unwrap();
    assert_eq!(refresh(), 202);
    assert!(
        eventually(Duration::from_secs(30), || status().starts_with("commit ")),
        "{}",
        status()
    );
    daemon.signal("TERM");
    assert!(
        daemon
            .wait(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}
