//! `canopy run` as a daemon, through the real binary: readiness, a refresh that
//! publishes a commit's signal, `canopy sync` of a manual app, and SIGTERM.

use crate::common;

use std::time::Duration;

use common::binary::DaemonProcess;
use common::redis::RedisProc;
use common::*;
use sha2::{Digest, Sha256};

const TOKEN: &str = "test-write-token";
const GH_SECRET: &str = "webhook-secret";

struct Setup {
    redis: RedisProc,
    _remote: tempfile::TempDir,
    repo: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup::with("1h")
    }

    /// A daemon config polling every `poll_interval`, with a write token and a
    /// GitHub webhook secret (`GH_SECRET`).
    fn with(poll_interval: &str) -> Setup {
        let remote = git_repo_from(&fixtures().join("example"));
        let repo = repo_path(&remote);
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisProc::start();
        let config = format!(
            "namespace: e2e\nstate_dir: {state}\nshutdown_grace: 5s\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: {poll_interval}\nredis:\n  url: {redis}\nserver:\n  tokens: [{{name: ci, role: write, sha256: \"{sha}\"}}]\nwebhooks:\n  github: {{secret_env: GH_SECRET}}\n  gitlab: {{token_env: GH_SECRET}}\n  gitea: {{secret_env: GH_SECRET}}\n  generic: {{secret_env: GH_SECRET}}\n",
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
        DaemonProcess::start(
            &self.dir.path().join("canopy.yaml"),
            &[],
            &[("GH_SECRET", GH_SECRET)],
        )
    }

    fn commit(&self, files: &[(&str, &str)]) {
        write_files(&self.repo, files);
        git(&self.repo, &["commit", "-qam", "change"]);
    }

    /// Every app's desired digest.
    fn desired_digests(&self) -> std::collections::BTreeMap<String, String> {
        let mut conn = self.redis.conn();
        let apps: Vec<String> = ::redis::Commands::smembers(&mut conn, "canopy:e2e:apps").unwrap();
        apps.into_iter()
            .map(|app| {
                let digest: String = ::redis::Commands::hget(
                    &mut conn,
                    format!("canopy:e2e:app:{{{app}}}:desired"),
                    "digest",
                )
                .unwrap();
                (app, digest)
            })
            .collect()
    }

    /// The last processed commit, as the daemon recorded it.
    fn meta_commit(&self) -> String {
        ::redis::Commands::hget(&mut self.redis.conn(), "canopy:e2e:meta", "commit").unwrap()
    }

    /// `canopy status` (text) with this setup's config.
    fn status_text(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["status", "--config"])
            .arg(self.dir.path().join("canopy.yaml"))
            .env("GH_SECRET", GH_SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
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

/// `POST /api/v1/refresh` with the write token; the status code.
fn refresh(daemon: &DaemonProcess) -> u16 {
    reqwest::blocking::Client::new()
        .post(daemon.url("/api/v1/refresh"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::get(url).unwrap()
}

/// `/readyz`: its status code and body.
fn readyz(daemon: &DaemonProcess) -> (u16, serde_json::Value) {
    let response = get(&daemon.url("/readyz"));
    (response.status().as_u16(), response.json().unwrap())
}

/// Waits for `/readyz`: the first cycle is done.
fn wait_ready(daemon: &DaemonProcess) {
    assert!(
        eventually(Duration::from_secs(30), || get(&daemon.url("/readyz"))
            .status()
            == 200),
        "ready after the first cycle:\n{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_serves_signals_on_refresh_and_stops_on_sigterm() {
    let setup = Setup::new();
    let mut daemon = setup.daemon();
    wait_ready(&daemon);
    // payments/db is manual; payments/api and search/query wait for their
    // dependencies to report synced.
    assert_eq!(setup.signals().len(), 7);

    // A commit, then a refresh: the one changed app is signalled without waiting
    // for the (hour-long) poll interval.
    write_files(&setup.repo, &[("search/values.yaml", "shards: 32\n")]);
    git(&setup.repo, &["commit", "-qam", "shards"]);
    assert_eq!(refresh(&daemon), 202);
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
    // A live child: a stale one would not count as synced.
    setup.redis.cmd(&[
        "SET",
        "canopy:e2e:app:{payments/db}:heartbeat",
        "db-agent",
        "EX",
        "60",
    ]);
    assert_eq!(refresh(&daemon), 202);
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
fn a_daemon_stopped_by_sigterm_leaves_a_snapshot_the_next_run_moves_on_from() {
    let setup = Setup::new();
    let mut daemon = setup.daemon();
    wait_ready(&daemon);
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{}", daemon.log());
    assert!(setup.dir.path().join("state/snapshot/head").is_file());

    setup.commit(&[("platform/ingress/controller.yaml", "replicas: 5\n")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["run", "--once", "--output", "json", "--config"])
        .arg(setup.dir.path().join("canopy.yaml"))
        .env_remove("CANOPY_LOG")
        .env("GH_SECRET", GH_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["resync"], &report["checked"], &report["signals"]),
        (&false.into(), &1.into(), &1.into()),
        "{report}"
    );
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
    assert_eq!(refresh(&daemon), 202);
    let status = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["status", "--config"])
            .arg(setup.dir.path().join("canopy.yaml"))
            .env("GH_SECRET", GH_SECRET)
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
    assert_eq!(refresh(&daemon), 202);
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

#[test]
fn a_push_is_signalled_within_one_poll_interval_in_wave_and_parent_order() {
    let setup = Setup::with("1s");
    let daemon = setup.daemon();
    assert!(
        eventually(Duration::from_secs(30), || setup.signals().len() == 7),
        "{}",
        daemon.log()
    );
    // The example's waves: search/query has wave 1, everything else 0; parents
    // first within a wave. (payments/api and search/query wait for dependencies.)
    let order: Vec<String> = setup.signals().into_iter().map(|(app, _)| app).collect();
    assert_eq!(order[0], ".", "the root first: {order:?}");
    for (parent, child) in [
        ("payments", "payments/api"),
        ("search", "search/indexers/orders"),
        ("platform", "platform/ingress"),
    ] {
        if let (Some(p), Some(c)) = (
            order.iter().position(|a| a == parent),
            order.iter().position(|a| a == child),
        ) {
            assert!(p < c, "{parent} before {child}: {order:?}");
        }
    }

    let started = std::time::Instant::now();
    setup.commit(&[("platform/ingress/controller.yaml", "replicas: 5\n")]);
    assert!(
        eventually(Duration::from_secs(10), || setup.signals().len() == 8),
        "{}",
        daemon.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within a poll interval (1 s, jittered) and a cycle"
    );
    assert_eq!(
        setup.signals()[7],
        ("platform/ingress".to_owned(), "sync".to_owned())
    );
}

#[test]
fn a_signed_github_push_fetches_at_once_and_forgeries_fetch_nothing() {
    let setup = Setup::new(); // an hour between polls
    let daemon = setup.daemon();
    assert!(eventually(Duration::from_secs(30), || setup
        .signals()
        .len()
        == 7));
    setup.commit(&[("platform/ingress/controller.yaml", "replicas: 6\n")]);
    let body = r#"{"ref":"refs/heads/main"}"#;
    let signature = |secret: &str| format!("sha256={}", sign(secret, body.as_bytes()));
    let client = reqwest::blocking::Client::new();
    let hook = |signature: &str, delivery: &str| {
        client
            .post(daemon.url("/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .unwrap()
            .status()
    };
    // Forged: refused, and nothing is fetched.
    assert_eq!(hook(&signature("not-the-secret"), "d-0"), 401);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(setup.signals().len(), 7, "a forged hook fetches nothing");

    let started = std::time::Instant::now();
    assert_eq!(hook(&signature(GH_SECRET), "d-1"), 202);
    assert!(
        eventually(Duration::from_secs(10), || setup.signals().len() == 8),
        "{}",
        daemon.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not at the next poll"
    );
    // A replay of the same delivery: deduplicated, no fetch.
    assert_eq!(hook(&signature(GH_SECRET), "d-1"), 200);
    let metrics = get(&daemon.url("/metrics")).text().unwrap();
    assert!(
        metrics
            .contains(r#"canopy_webhook_requests_total{provider="github",result="triggered"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"canopy_webhook_requests_total{provider="github",result="duplicate"} 1"#),
        "{metrics}"
    );
}

#[test]
fn sigterm_during_the_first_cycle_exits_0_and_leaves_no_half_written_app() {
    // A repository big enough that the first cycle is still running when the
    // signal comes (1,000 apps of 2 files).
    let src = tempfile::tempdir().unwrap();
    let files: Vec<(String, String)> = (0..1000)
        .flat_map(|i| {
            [
                (
                    format!("team-{}/app-{i:04}/app.yaml", i % 10),
                    format!("wave: {}\n", i % 3),
                ),
                (
                    format!("team-{}/app-{i:04}/deploy.yaml", i % 10),
                    format!("replicas: {i}\n"),
                ),
            ]
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_files(src.path(), &refs);
    let remote = git_repo_from(src.path());
    let mut setup = Setup::new();
    let config = std::fs::read_to_string(setup.dir.path().join("canopy.yaml"))
        .unwrap()
        .replace(
            &setup.repo.display().to_string(),
            &repo_path(&remote).display().to_string(),
        );
    std::fs::write(setup.dir.path().join("canopy.yaml"), config).unwrap();
    setup.repo = repo_path(&remote);

    let mut daemon = setup.daemon();
    daemon.signal("TERM");
    let status = daemon
        .wait(Duration::from_secs(15))
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}\n{}", daemon.log());

    // Whatever was written is whole: every listed app has its desired hash and
    // exactly the files it announces.
    let mut conn = setup.redis.conn();
    let apps: Vec<String> = ::redis::Commands::smembers(&mut conn, "canopy:e2e:apps").unwrap();
    for app in &apps {
        let desired: std::collections::HashMap<String, String> =
            ::redis::Commands::hgetall(&mut conn, format!("canopy:e2e:app:{{{app}}}:desired"))
                .unwrap();
        let files: usize =
            ::redis::Commands::hlen(&mut conn, format!("canopy:e2e:app:{{{app}}}:files")).unwrap();
        assert!(desired.contains_key("digest"), "{app}: {desired:?}");
        assert_eq!(desired["files"], files.to_string(), "{app}");
    }
    eprintln!(
        "{} of 1001 apps were written before the daemon stopped",
        apps.len()
    );
}

#[test]
fn signed_gitlab_gitea_and_generic_pushes_fetch_at_once() {
    let setup = Setup::new(); // an hour between polls
    let daemon = setup.daemon();
    assert!(eventually(Duration::from_secs(30), || setup
        .signals()
        .len()
        == 7));
    let body = r#"{"ref":"refs/heads/main"}"#;
    let hmac = sign(GH_SECRET, body.as_bytes());
    let client = reqwest::blocking::Client::new();
    let hooks: [(&str, Vec<(&str, String)>); 3] = [
        (
            "/hooks/gitlab",
            vec![
                ("X-Gitlab-Event", "Push Hook".to_owned()),
                ("X-Gitlab-Token", GH_SECRET.to_owned()),
            ],
        ),
        (
            "/hooks/gitea",
            vec![
                ("X-Gitea-Event", "push".to_owned()),
                ("X-Gitea-Signature", hmac.clone()),
            ],
        ),
        (
            "/hooks/generic",
            vec![("X-Canopy-Signature", format!("sha256={hmac}"))],
        ),
    ];
    for (n, (path, headers)) in hooks.into_iter().enumerate() {
        setup.commit(&[(
            "platform/ingress/controller.yaml",
            &format!("replicas: {}\n", 10 + n),
        )]);
        let before = setup.signals().len();
        let mut request = client.post(daemon.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        assert_eq!(request.send().unwrap().status(), 202, "{path}");
        assert!(
            eventually(Duration::from_secs(10), || setup.signals().len()
                == before + 1),
            "{path}: no fetch\n{}",
            daemon.log()
        );
    }
}

#[test]
fn a_second_daemon_that_cannot_listen_does_not_fence_the_first() {
    let setup = Setup::new();
    let daemon = setup.daemon();
    assert!(eventually(Duration::from_secs(30), || setup
        .signals()
        .len()
        == 7));
    let epoch: u64 = ::redis::Commands::get(&mut setup.redis.conn(), "canopy:e2e:epoch").unwrap();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["run", "--listen", &daemon.addr.to_string(), "--config"])
        .arg(setup.dir.path().join("canopy.yaml"))
        .env("GH_SECRET", GH_SECRET)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        stderr(&second).contains("failed to listen on"),
        "{}",
        stderr(&second)
    );
    let after: u64 = ::redis::Commands::get(&mut setup.redis.conn(), "canopy:e2e:epoch").unwrap();
    assert_eq!(after, epoch, "the running daemon keeps its epoch");
}

/// A daemon started while Redis is down waits for it, backing off, instead of
/// exiting into a crash loop; once Redis is there it goes on as usual.
#[test]
fn a_daemon_started_while_redis_is_down_waits_for_it() {
    let mut setup = Setup::new();
    setup.redis.kill();
    let config = setup.dir.path().join("canopy.yaml");
    let daemon = std::thread::scope(|scope| {
        let redis = &mut setup.redis;
        scope.spawn(move || {
            // The outage the daemon starts into: long enough for a few tries.
            std::thread::sleep(Duration::from_secs(3));
            redis.restart(common::redis::Persistence::Keep);
        });
        DaemonProcess::start(&config, &[], &[("GH_SECRET", GH_SECRET)])
    });
    assert!(
        daemon.log().contains("Redis unreachable; waiting for it"),
        "{}",
        daemon.log()
    );
    wait_ready(&daemon);
    assert!(!setup.signals().is_empty(), "the first cycle wrote");
}

/// The file size limit of [`a_fetch_that_cannot_write_its_pack_fails_cleanly_and_recovers`]:
/// above every file the daemon writes for the example repository (its first
/// pack and the snapshot are a few KiB), far below the new commit's pack.
const FSIZE_LIMIT: u64 = 64 << 10;

/// RELIABILITY row 17: the disk fills up while a fetch writes its pack.
///
/// How the disk is "filled": RLIMIT_FSIZE, set with prlimit on the running
/// daemon below the size of the next commit's pack, so the pack write fails
/// halfway as on a full disk (EFBIG instead of ENOSPC: the same write, the
/// same error path, the same cleanup). A size-limited tmpfs would need
/// CAP_SYS_ADMIN, which unprivileged containers (where CI often runs, even as
/// root) do not have; a file size limit needs no privilege, and it is exact:
/// the pack, the one file above the limit, fails, nothing else does.
///
/// The poll fails with an error saying so in `/readyz`, `canopy status` and
/// `/metrics`; the same process keeps retrying with backoff; the last good
/// commit stays desired and its artifacts are served; the mirror holds
/// exactly what it held before (no temporary pack, no lock file); once the
/// limit is lifted the daemon moves on to the new commit.
#[test]
fn a_fetch_that_cannot_write_its_pack_fails_cleanly_and_recovers() {
    let setup = Setup::new();
    let mut daemon = setup.daemon();
    wait_ready(&daemon);
    let good = git(&setup.repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let desired = || setup.desired_digests();
    let before = desired();
    let mirror = setup.dir.path().join("state/mirror.git");
    let mirror_before = paths_under(&mirror);

    daemon.limit_file_size(Some(FSIZE_LIMIT));
    // 1 MiB that does not compress: its pack cannot be written under the limit.
    let mut rng = fastrand::Rng::with_seed(17);
    let bundle: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
        .take(1 << 20)
        .collect();
    std::fs::write(setup.repo.join("payments/api/bundle.bin"), &bundle).unwrap();
    git(&setup.repo, &["add", "-A"]);
    git(&setup.repo, &["commit", "-qm", "a bundle"]);
    let new = git(&setup.repo, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(refresh(&daemon), 202);

    // Retried on its own, with backoff (1 s, then 2 s): two failures.
    assert!(
        eventually(Duration::from_secs(15), || readyz(&daemon).1["failures"]
            .as_u64()
            .is_some_and(|n| n >= 2)),
        "{:?}\n{}",
        readyz(&daemon),
        daemon.log()
    );
    let (code, body) = readyz(&daemon);
    let error = body["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains(&format!(
            "failed to fetch from file://{}",
            setup.repo.display()
        )) && error.contains("File too large"),
        "{body}"
    );
    assert_eq!(code, 200, "still ready: the last good state is served");
    assert_eq!(get(&daemon.url("/healthz")).status(), 200);
    assert!(!daemon.exited(), "the same process, not a crash loop");
    let status = setup.status_text();
    assert!(
        status.starts_with("source error since") && status.contains("File too large"),
        "{status}"
    );
    let metrics = get(&daemon.url("/metrics")).text().unwrap();
    assert!(
        metrics.contains("canopy_cycles_total{result=\"error\"}")
            && !metrics.contains("canopy_consecutive_failures 0"),
        "{metrics}"
    );

    // The last good state: desired in Redis, served as artifacts.
    assert_eq!(desired(), before);
    assert_eq!(setup.meta_commit(), good);
    let artifact = reqwest::blocking::Client::new()
        .get(daemon.url(&format!(
            "/api/v1/apps/payments/api/artifact?revision={good}"
        )))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(artifact.status(), 200);
    assert_eq!(
        artifact.headers()["digest"].to_str().unwrap(),
        before["payments/api"]
    );
    // Nothing left behind. (`eventually`: a retry may be writing right now.)
    assert!(
        eventually(Duration::from_secs(10), || paths_under(&mirror)
            == mirror_before),
        "{:#?}\nbefore: {mirror_before:#?}",
        paths_under(&mirror)
    );

    // Space returns: the next cycle (asked for at once) converges.
    daemon.limit_file_size(None);
    assert_eq!(refresh(&daemon), 202);
    assert!(
        eventually(Duration::from_secs(15), || setup.meta_commit() == new),
        "{:?}\n{}",
        readyz(&daemon),
        daemon.log()
    );
    let after = desired();
    assert_ne!(after["payments/api"], before["payments/api"]);
    let unchanged = |digests: &std::collections::BTreeMap<String, String>| {
        let mut digests = digests.clone();
        digests.remove("payments/api");
        digests
    };
    assert_eq!(unchanged(&after), unchanged(&before));
    assert!(
        eventually(Duration::from_secs(10), || readyz(&daemon).1["last_error"]
            .is_null()),
        "{:?}",
        readyz(&daemon)
    );
    assert!(setup.status_text().starts_with("commit "));
    assert!(!daemon.exited());
}
