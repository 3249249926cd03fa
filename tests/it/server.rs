//! The daemon's HTTP surface against a real Redis and Git repository.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::daemon::{NAMESPACE, READ_TOKEN, TestDaemon};
use common::{canopy, stdout};
use redis::Commands;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

const WRITE_TOKEN: &str = "w-canary-41f9c2";

/// `server:` with a write token `ci` and a read token `dash`.
fn server_config(read_requires_token: bool) -> String {
    let hex = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
    format!(
        "server:\n  read_requires_token: {read_requires_token}\n  tokens:\n    - {{name: ci, role: write, sha256: \"{}\"}}\n    - {{name: dash, role: read, sha256: \"{}\"}}\n",
        hex(WRITE_TOKEN),
        hex(READ_TOKEN)
    )
}

async fn with_tokens() -> TestDaemon {
    TestDaemon::start(&server_config(false), &[]).await
}

/// Sends `request`; the status and the JSON body, after checking that no token
/// is echoed.
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(
        !text.contains(WRITE_TOKEN) && !text.contains(READ_TOKEN),
        "token in response: {text}"
    );
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// `GET path` with the read token.
async fn get(daemon: &TestDaemon, path: &str) -> (StatusCode, Value) {
    send(daemon.get(path)).await
}

fn post(daemon: &TestDaemon, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new().post(daemon.url(path));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Whether the trigger was fired since it was last consumed: `fire` stores a
/// permit before the response is sent, so a short wait is enough either way.
async fn trigger_fired(daemon: &TestDaemon, wait: Duration) -> bool {
    tokio::time::timeout(wait, daemon.shared.trigger.fired())
        .await
        .is_ok()
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_path_is_404() {
    let daemon = TestDaemon::start("", &[]).await;
    let response = reqwest::get(daemon.url("/nope")).await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_need_no_token_even_when_reads_do() {
    let daemon = TestDaemon::start(&server_config(true), &[]).await;
    let (status, body) = get(&daemon, "/healthz").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    let (status, body) = get(&daemon, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The loop records cycles (not running here): the endpoint shows the live values.
    let ok = canopy::server::ResultLabel { result: "ok" };
    daemon.shared.metrics.cycles.get_or_create(&ok).inc();
    let response = reqwest::get(daemon.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("canopy_cycles_total{result=\"ok\"} 1\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_needs_a_first_sync_and_a_redis_that_answers() {
    let mut daemon = TestDaemon::start("", &[]).await;
    let (status, body) = get(&daemon, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["redis"], "ok");
    assert_eq!(body["failures"], 0);
    assert_eq!(body["commit"].as_str().map(str::len), Some(40), "{body}");

    daemon.redis.pause();
    let started = std::time::Instant::now();
    let (status, body) = get(&daemon, "/readyz").await;
    let waited = started.elapsed();
    daemon.redis.resume();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert_ne!(body["redis"], "ok", "{body}");
    assert!(waited < Duration::from_secs(3), "took {waited:?}");
    let (status, body) = get(&daemon, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "after resume: {body}");

    // A daemon that has not synced yet: Redis answers, but it is not ready.
    let fresh = canopy::server::Shared {
        health: Arc::new(canopy::server::Health::default()),
        ..daemon.shared.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(canopy::server::serve(
        listener,
        fresh,
        daemon.shutdown.clone(),
    ));
    let response = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["ready"], &body["redis"], &body["commit"]),
        (&Value::Bool(false), &Value::from("ok"), &Value::Null),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_listed_as_canopy_status_prints_them() {
    let daemon = TestDaemon::start("", &[]).await;
    let (status, body) = get(&daemon, "/api/v1/apps").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["namespace"], NAMESPACE);
    let apps = body["apps"].as_array().unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a["app"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            ".",
            "payments",
            "payments/api",
            "payments/db",
            "platform",
            "platform/ingress",
            "search",
            "search/indexers/orders",
            "search/indexers/products",
            "search/query"
        ]
    );
    assert!(apps.iter().all(|a| a["status"] == "missing"), "{body:#}");
    assert!(
        apps.iter().all(|a| a["desired"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")),
        "{body:#}"
    );

    let cli = canopy(&[
        "status",
        "--output",
        "json",
        "--redis-url",
        &daemon.redis.url(),
        "--namespace",
        NAMESPACE,
    ]);
    assert!(cli.status.success(), "{}", common::stderr(&cli));
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    assert_eq!(cli, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_in_detail_with_its_config_and_no_secrets() {
    let daemon = TestDaemon::start("", &[]).await;
    let (status, body) = get(&daemon, "/api/v1/apps/payments/api").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["app"], "payments/api");
    assert_eq!(body["status"], "missing");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let desired = &body["desired"];
    assert!(
        desired["digest"].as_str().unwrap().starts_with("sha256:"),
        "{body}"
    );
    assert_eq!(desired["generation"], "1");
    assert_eq!(desired["files"], "3");
    assert_eq!(desired["parent"], "payments");
    assert_eq!(body["observed"], Value::Null);
    assert_eq!(body["heartbeat"], false);
    assert_eq!(body["config"]["LOG_LEVEL"], "info");
    assert_eq!(body["config"]["replicas"], "3");
    assert!(!body.to_string().contains("db_password"), "{body}");

    let (status, parent) = get(&daemon, "/api/v1/apps/payments").await;
    assert_eq!(status, StatusCode::OK, "{parent}");
    assert_eq!(parent["app"], "payments");

    // HTTP clients drop a `.` path segment: the root app is `_root` in URLs.
    let (status, root) = get(&daemon, "/api/v1/apps/_root").await;
    assert_eq!(status, StatusCode::OK, "{root}");
    assert_eq!(root["app"], ".");
    let (status, diff) = get(&daemon, "/api/v1/apps/_root/diff").await;
    assert_eq!((status, &diff["app"]), (StatusCode::OK, &Value::from(".")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_is_what_canopy_diff_prints() {
    let daemon = TestDaemon::start("", &[]).await;
    let (status, body) = get(&daemon, "/api/v1/apps/payments/api/diff").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["app"], "payments/api");
    assert_eq!(body["in_sync"], false);
    assert_eq!(body["observed"], Value::Null);
    assert_eq!(body["desired_files"], 3);
    let digest = body["desired"]["digest"].as_str().unwrap().to_owned();

    // The child reports the desired digest: in sync, as the CLI also says.
    daemon.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        "canopy:http:app:{payments/api}:observed",
        "1",
        &digest,
        "rev",
        "synced",
        "ok",
        "agent-1",
    ]);
    let (status, body) = get(&daemon, "/api/v1/apps/payments/api/diff").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["in_sync"], true, "{body}");
    assert_eq!(body["observed"]["status"], "synced");
    let cli = canopy(&[
        "diff",
        "payments/api",
        "--output",
        "json",
        "--redis-url",
        &daemon.redis.url(),
        "--namespace",
        NAMESPACE,
    ]);
    assert!(cli.status.success(), "{}", common::stderr(&cli));
    assert_eq!(serde_json::from_str::<Value>(&stdout(&cli)).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apps_are_404_and_invalid_names_400() {
    let daemon = TestDaemon::start("", &[]).await;
    for path in ["/api/v1/apps/payments/nope", "/api/v1/apps/nope/diff"] {
        let (status, body) = get(&daemon, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(error_of(&body).contains("nope"), "{path}: {body}");
    }
    for (path, named) in [
        ("/api/v1/apps/Payments", "Payments"),
        ("/api/v1/apps/payments/-x/diff", "-x"),
        ("/api/v1/apps/a%2A", "a*"),
        ("/api/v1/apps/payments/", "payments/"),
    ] {
        let (status, body) = get(&daemon, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(error_of(&body).contains(named), "{path}: {body}");
    }
    // Sync is a POST, and only sync is.
    let response = daemon
        .get("/api/v1/apps/payments/db/sync")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_needs_role_sync_and_fires_the_trigger() {
    let daemon = with_tokens().await;
    let wait = Duration::from_millis(50);

    let response = post(&daemon, "/api/v1/refresh", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, body) = send(post(&daemon, "/api/v1/refresh", Some("not-a-token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(post(&daemon, "/api/v1/refresh", Some(READ_TOKEN))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        error_of(&body),
        "token dash may not do this: it needs role sync"
    );
    assert!(
        !trigger_fired(&daemon, wait).await,
        "refused requests fired it"
    );

    let (status, body) = send(post(&daemon, "/api/v1/refresh", Some(WRITE_TOKEN))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, serde_json::json!({"status": "refresh requested"}));
    assert!(trigger_fired(&daemon, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_signals_a_manual_app_on_its_stream() {
    let daemon = with_tokens().await;
    let stream = "canopy:http:app:{payments/db}:events";
    let mut conn = daemon.redis.conn();
    let before: usize = conn.xlen(stream).unwrap();

    for token in [None, Some(READ_TOKEN)] {
        let (status, body) = send(post(&daemon, "/api/v1/apps/payments/db/sync", token)).await;
        assert!(status.is_client_error(), "{token:?}: {status} {body}");
    }
    let (status, body) = send(post(&daemon, "/api/v1/apps/nope/sync", Some(WRITE_TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(conn.xlen::<_, usize>(stream).unwrap(), before);

    let (status, signal) = send(post(
        &daemon,
        "/api/v1/apps/payments/db/sync",
        Some(WRITE_TOKEN),
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{signal}");
    assert_eq!(signal["kind"], "sync");
    assert_eq!(signal["app"], "payments/db");
    assert_eq!(signal["generation"], 1);
    assert_eq!(conn.xlen::<_, usize>(stream).unwrap(), before + 1);
    let last: redis::streams::StreamRangeReply = conn.xrevrange_count(stream, "+", "-", 1).unwrap();
    let payload: String = last.ids[0].get("payload").expect("a payload field");
    assert_eq!(serde_json::from_str::<Value>(&payload).unwrap(), signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_token_when_configured_to() {
    let daemon = TestDaemon::start(&server_config(true), &[]).await;
    for path in ["/api/v1/apps", "/api/v1/apps/payments/api/diff"] {
        let response = reqwest::get(daemon.url(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        for token in [READ_TOKEN, WRITE_TOKEN] {
            let request = reqwest::Client::new()
                .get(daemon.url(path))
                .bearer_auth(token);
            let (status, body) = send(request).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
}
