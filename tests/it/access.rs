//! Who may read what through the daemon's API: reads need a token unless the
//! config opens them, a token scoped to some apps reads and syncs those apps
//! only, a token scoped to some namespaces is refused by the daemons of the
//! others, and artifacts are cached and built within per-client limits.

use crate::common;

use std::time::Duration;

use common::binary::DaemonProcess;
use common::daemon::{READ_TOKEN, TestDaemon};
use common::redis::RedisProc;
use common::{eventually, fixtures, git_repo_from, repo_path};
use redis::Commands;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A `read` token for `payments/api` only: what a child's agent holds.
const CHILD_TOKEN: &str = "child-canary-7d01aa";
/// A `sync` token for the payments apps (configured by its older name, `write`).
const TEAM_TOKEN: &str = "team-canary-52e9b0";

fn hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The server's tokens: `dash` (read, every app), `payments-api` (read,
/// `payments/api`) and `payments-team` (write, `payments` and below).
fn scoped_tokens() -> String {
    format!(
        "server:\n  tokens:\n    - {{name: dash, role: read, sha256: \"{}\"}}\n    - {{name: payments-api, role: read, sha256: \"{}\", apps: [payments/api]}}\n    - {{name: payments-team, role: write, sha256: \"{}\", apps: [payments, \"payments/**\"]}}\n",
        hex(READ_TOKEN),
        hex(CHILD_TOKEN),
        hex(TEAM_TOKEN)
    )
}

async fn request(daemon: &TestDaemon, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut request = reqwest::Client::new().get(daemon.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.bytes().await.expect("body").to_vec())
}

/// The app names of a `GET /api/v1/apps` answer, in its order.
fn listed(body: &[u8]) -> Vec<String> {
    let list: Value = serde_json::from_slice(body).expect("a JSON list");
    list["apps"]
        .as_array()
        .expect("an apps array")
        .iter()
        .map(|a| a["app"].as_str().expect("an app name").to_owned())
        .collect()
}

fn error_of(body: &[u8]) -> String {
    let body: Value = serde_json::from_slice(body).expect("a JSON error");
    body["error"].as_str().expect("an error message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_token_by_default_and_open_only_when_configured() {
    let daemon = TestDaemon::start("", &[]).await;
    for path in [
        "/api/v1/apps",
        "/api/v1/apps/payments/api",
        "/api/v1/apps/payments/api/diff",
        "/api/v1/apps/payments/api/artifact",
        "/api/v1/report",
    ] {
        let (status, body) = request(&daemon, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(error_of(&body).contains("Bearer"), "{path}");
        let (status, _) = request(&daemon, path, Some(READ_TOKEN)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // Opened on purpose: anyone reads; a presented token is still checked.
    let open = TestDaemon::start("server:\n  read_requires_token: false\n", &[]).await;
    let (status, _) = request(&open, "/api/v1/apps/payments/api/artifact", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = request(&open, "/api/v1/apps", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_reads_its_own_apps_only() {
    let daemon = TestDaemon::start(&scoped_tokens(), &[]).await;
    let child = Some(CHILD_TOKEN);

    for path in [
        "/api/v1/apps/payments/api",
        "/api/v1/apps/payments/api/diff",
        "/api/v1/apps/payments/api/artifact",
    ] {
        let (status, _) = request(&daemon, path, child).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // Another app, the parent, the root, a name that does not exist: 403
    // before anything is looked up, so the answer tells nothing of the app.
    for path in [
        "/api/v1/apps/payments/db/artifact",
        "/api/v1/apps/payments",
        "/api/v1/apps/_root/artifact",
        "/api/v1/apps/payments/api2/diff",
        "/api/v1/apps/nope",
    ] {
        let (status, body) = request(&daemon, path, child).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        let message = error_of(&body);
        assert!(
            message.contains("token payments-api may not read app")
                && message.contains("its read scope is payments/api"),
            "{path}: {message}"
        );
        assert!(!message.contains(CHILD_TOKEN), "{message}");
    }

    // The list holds the token's apps only; the report covers every app.
    let (status, body) = request(&daemon, "/api/v1/apps", child).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed(&body), ["payments/api"]);
    let (status, body) = request(&daemon, "/api/v1/report", child).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error_of(&body).contains("every app"), "{}", error_of(&body));

    // The team's write token: its apps' list, and syncs inside its scope only.
    let (_, body) = request(&daemon, "/api/v1/apps", Some(TEAM_TOKEN)).await;
    assert_eq!(listed(&body), ["payments", "payments/api", "payments/db"]);
    let mut conn = daemon.redis.conn();
    let search = "canopy:http:app:{search}:events";
    let before: usize = conn.xlen(search).unwrap();
    let sync = |app: &str| {
        reqwest::Client::new()
            .post(daemon.url(&format!("/api/v1/apps/{app}/sync")))
            .bearer_auth(TEAM_TOKEN)
            .send()
    };
    let response = sync("search").await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let message = error_of(&response.bytes().await.unwrap());
    assert_eq!(
        message,
        "token payments-team may not sync app search: its sync scope is payments, payments/**"
    );
    assert_eq!(conn.xlen::<_, usize>(search).unwrap(), before, "no signal");
    let response = sync("payments/db").await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Each role against the real API: `read` reads, `sync` also syncs and
/// refreshes, `admin` does what `sync` does (no endpoint needs more yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_names_and_the_roles_below() {
    const SYNC: &str = "sync-canary-3f7a1c";
    const ADMIN: &str = "admin-canary-90be24";
    let daemon = TestDaemon::start(
        &format!(
            "server:\n  tokens:\n    - {{name: dash, role: read, sha256: \"{}\"}}\n    - {{name: deployer, role: sync, sha256: \"{}\"}}\n    - {{name: ops, role: admin, sha256: \"{}\"}}\n",
            hex(READ_TOKEN),
            hex(SYNC),
            hex(ADMIN)
        ),
        &[],
    )
    .await;
    let post = |path: &str, token: &str| {
        reqwest::Client::new()
            .post(daemon.url(path))
            .bearer_auth(token)
            .send()
    };
    for (token, may_sync) in [(READ_TOKEN, false), (SYNC, true), (ADMIN, true)] {
        let (status, _) = request(&daemon, "/api/v1/apps/payments/db", Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = request(&daemon, "/api/v1/report", Some(token)).await;
        assert_ne!(
            status,
            StatusCode::FORBIDDEN,
            "an unscoped token reads the report"
        );
        let expected = if may_sync {
            StatusCode::ACCEPTED
        } else {
            StatusCode::FORBIDDEN
        };
        let sync = post("/api/v1/apps/payments/db/sync", token).await.unwrap();
        assert_eq!(sync.status(), expected);
        let refresh = post("/api/v1/refresh", token).await.unwrap();
        assert_eq!(refresh.status(), expected);
        if !may_sync {
            let message = error_of(&refresh.bytes().await.unwrap());
            assert_eq!(message, "token dash may not do this: it needs role sync");
        }
    }
}

/// One config file, two real daemons, one per namespace (environment): the
/// namespace comes from `CANOPY_NAMESPACE` for one and `--namespace` for the
/// other, as a deployment would set it. A token for prod only is refused by
/// the staging daemon, whatever its role, and sends no signal there.
#[test]
fn a_prod_token_is_refused_by_the_staging_daemon() {
    const PROD: &str = "prod-canary-1c6e0f";
    const STAGING: &str = "staging-canary-a4d2b9";
    const OPS: &str = "ops-canary-77e3d5";
    let remote = git_repo_from(&fixtures().join("example"));
    let redis = RedisProc::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "repo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {redis}\nserver:\n  tokens:\n    - {{name: prod-deploy, role: sync, sha256: \"{}\", namespaces: [prod]}}\n    - {{name: staging-deploy, role: sync, sha256: \"{}\", namespaces: [staging]}}\n    - {{name: ops, role: read, sha256: \"{}\", namespaces: [\"*\"]}}\n",
            hex(PROD),
            hex(STAGING),
            hex(OPS),
            repo = repo_path(&remote).display(),
            redis = redis.url(),
        ),
    )
    .unwrap();
    let state = |ns: &str| dir.path().join(ns).display().to_string();
    let prod = DaemonProcess::start(
        &config,
        &[],
        &[
            ("CANOPY_NAMESPACE", "prod"),
            ("CANOPY_STATE_DIR", &state("prod")),
        ],
    );
    let staging = DaemonProcess::start(
        &config,
        &["--namespace", "staging"],
        &[("CANOPY_STATE_DIR", &state("staging"))],
    );
    let client = reqwest::blocking::Client::new();
    for daemon in [&prod, &staging] {
        assert!(
            eventually(Duration::from_secs(30), || {
                client.get(daemon.url("/readyz")).send().unwrap().status() == StatusCode::OK
            }),
            "{}",
            daemon.log()
        );
    }
    let call = |daemon: &DaemonProcess, path: &str, token: &str| {
        let request = if path.ends_with("/sync") {
            client.post(daemon.url(path))
        } else {
            client.get(daemon.url(path))
        };
        let response = request.bearer_auth(token).send().unwrap();
        let status = response.status();
        (status, response.bytes().unwrap().to_vec())
    };
    let signals = |ns: &str| -> usize {
        redis
            .conn()
            .xlen(format!("canopy:{ns}:app:{{payments/db}}:events"))
            .unwrap()
    };
    let staging_signals = signals("staging");

    for path in ["/api/v1/apps", "/api/v1/apps/payments/db/sync"] {
        let (status, body) = call(&staging, path, PROD);
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            error_of(&body),
            "token prod-deploy is not valid in namespace staging: it is valid in prod"
        );
        assert!(!String::from_utf8_lossy(&body).contains(PROD));
    }
    assert_eq!(signals("staging"), staging_signals, "no signal in staging");

    // Each deploy token works in its own namespace, and nowhere else.
    let prod_signals = signals("prod");
    let (status, body) = call(&prod, "/api/v1/apps", PROD);
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["namespace"], "prod");
    let (status, _) = call(&prod, "/api/v1/apps/payments/db/sync", PROD);
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(signals("prod"), prod_signals + 1);
    let (status, _) = call(&staging, "/api/v1/apps/payments/db/sync", STAGING);
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = call(&prod, "/api/v1/apps/payments/db", STAGING);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        error_of(&body).contains("namespace prod"),
        "{}",
        error_of(&body)
    );

    // `*` is every namespace; the role still applies.
    for daemon in [&prod, &staging] {
        let (status, _) = call(daemon, "/api/v1/apps/payments/db", OPS);
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(daemon, "/api/v1/apps/payments/db/sync", OPS);
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            error_of(&body),
            "token ops may not do this: it needs role sync"
        );
    }
}

/// A built artifact is served again from memory: with the mirror gone, the
/// same app and revision still come back, byte for byte; another app does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_built_once_and_served_from_the_cache() {
    let daemon = TestDaemon::start("", &[]).await;
    let path = "/api/v1/apps/payments/api/artifact";
    let (status, first) = request(&daemon, path, Some(READ_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);

    let mirror = daemon.shared.settings.mirror_dir.clone();
    let moved = mirror.with_extension("moved");
    std::fs::rename(&mirror, &moved).unwrap();
    let (status, again) = request(&daemon, path, Some(READ_TOKEN)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&again)
    );
    assert_eq!(again, first);
    let (status, _) = request(&daemon, "/api/v1/apps/search/artifact", Some(READ_TOKEN)).await;
    assert!(
        status.is_server_error(),
        "{status}: not cached, so built, and the mirror is gone"
    );
    std::fs::rename(&moved, &mirror).unwrap();
}

/// Many requests for one artifact at once, by one client: they wait for the
/// single build instead of being refused by the per-client limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_artifact_share_its_build() {
    let daemon = TestDaemon::start("", &[]).await;
    let requests =
        (0..8).map(|_| request(&daemon, "/api/v1/apps/payments/artifact", Some(READ_TOKEN)));
    let answers = futures_util::future::join_all(requests).await;
    let first = &answers[0].1;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
        assert_eq!(body, first);
    }
}
