//! Push webhooks against the real server (RELIABILITY rows 25-26): verified,
//! deduplicated, size-capped and time-boxed, and only ever a request to fetch.

use crate::common;

use std::time::Duration;

use common::daemon::TestDaemon;
use common::sign;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "topsecret-canary-7f3a";
const PUSH_MAIN: &str =
    r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;

/// Every provider configured, each with its own secret variable.
const ALL_HOOKS: &str = "webhooks:\n  github: {secret_env: GH}\n  gitlab: {token_env: GL}\n  gitea: {secret_env: GT}\n  generic: {secret_env: GN}\n";
const ENV: &[(&str, &str)] = &[
    ("GH", SECRET),
    ("GL", SECRET),
    ("GT", SECRET),
    ("GN", SECRET),
];

async fn daemon() -> TestDaemon {
    TestDaemon::start(ALL_HOOKS, ENV).await
}

/// A GitHub delivery: `event`, `delivery` id, body signed with `secret`.
fn github(daemon: &TestDaemon, event: &str, delivery: &str, body: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(daemon.url("/hooks/github"))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", sign(SECRET, body.as_bytes())),
        )
        .header("Content-Type", "application/json")
        .body(body.to_owned())
}

/// Sends `request`; returns the status and the JSON body, after checking that
/// the secret is nowhere in the response.
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(!text.contains(SECRET), "secret in response: {text}");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// Whether the reconcile loop was asked to fetch (consumes the request).
async fn fired(daemon: &TestDaemon) -> bool {
    tokio::time::timeout(Duration::from_millis(200), daemon.shared.trigger.fired())
        .await
        .is_ok()
}

/// `canopy_webhook_requests_total{provider, result}` in the exposition text.
pub(crate) fn count(daemon: &TestDaemon, provider: &str, result: &str) -> u64 {
    let series =
        format!("canopy_webhook_requests_total{{provider=\"{provider}\",result=\"{result}\"}} ");
    daemon
        .shared
        .metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_to_the_tracked_branch_requests_a_fetch() {
    let daemon = daemon().await;
    let (status, body) = send(github(&daemon, "push", "d-1", PUSH_MAIN)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"status": "fetch requested"}));
    assert!(fired(&daemon).await);
    assert_eq!(count(&daemon, "github", "triggered"), 1);
    // A push to a tag of the tracked name moves it too (the mirror fetches both).
    let tag = r#"{"ref":"refs/tags/main"}"#;
    let (status, _) = send(github(&daemon, "push", "d-2", tag)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fired(&daemon).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_401_and_fetch_nothing() {
    let daemon = daemon().await;
    let client = reqwest::Client::new();
    let hook = || {
        client
            .post(daemon.url("/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "forged")
            .body(PUSH_MAIN)
    };
    let good = sign(SECRET, PUSH_MAIN.as_bytes());
    let cases = [
        ("missing", hook(), "missing X-Hub-Signature-256 header"),
        (
            "wrong",
            hook().header(
                "X-Hub-Signature-256",
                format!("sha256={}", sign("not-the-secret", PUSH_MAIN.as_bytes())),
            ),
            "X-Hub-Signature-256 does not match",
        ),
        (
            "other body",
            hook().header(
                "X-Hub-Signature-256",
                format!("sha256={}", sign(SECRET, b"{}")),
            ),
            "X-Hub-Signature-256 does not match",
        ),
        (
            "sha1 only",
            hook().header("X-Hub-Signature", format!("sha1={}", &good[..40])),
            "missing X-Hub-Signature-256 header; the SHA-1 X-Hub-Signature alone is not accepted",
        ),
        (
            "malformed hex",
            hook().header("X-Hub-Signature-256", format!("sha256={}xyz", &good[..61])),
            "X-Hub-Signature-256 is not sha256=<64 hex digits>",
        ),
        (
            "no prefix",
            hook().header("X-Hub-Signature-256", good.clone()),
            "X-Hub-Signature-256 is not sha256=<64 hex digits>",
        ),
        (
            "truncated",
            hook().header("X-Hub-Signature-256", format!("sha256={}", &good[..32])),
            "X-Hub-Signature-256 is not sha256=<64 hex digits>",
        ),
        (
            "the secret itself",
            hook().header("X-Hub-Signature-256", format!("sha256={SECRET}")),
            "X-Hub-Signature-256 is not sha256=<64 hex digits>",
        ),
    ];
    let n = cases.len() as u64;
    for (case, request, error) in cases {
        let (status, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(body, json!({"error": error}), "{case}");
    }
    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "github", "unauthorized"), n);
    assert_eq!(count(&daemon, "github", "triggered"), 0);

    // A forged request did not take up its delivery id: the real one still fetches.
    let (status, _) = send(github(&daemon, "push", "forged", PUSH_MAIN)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fired(&daemon).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_other_events_and_other_refs_fetch_nothing() {
    let daemon = daemon().await;
    let (status, body) = send(github(&daemon, "ping", "p-1", r#"{"zen":"hi"}"#)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "pong"})));

    let (status, body) = send(github(&daemon, "issues", "i-1", r#"{"action":"opened"}"#)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body,
        json!({"status": "ignored", "reason": "event issues is not a push"})
    );

    let other = r#"{"ref":"refs/heads/other"}"#;
    let (status, body) = send(github(&daemon, "push", "o-1", other)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body,
        json!({"status": "ignored", "reason": "push to refs/heads/other, tracking main"})
    );

    for (payload, error) in [
        ("{\"ref\": ", "payload is not valid JSON (line 1, column 8)"),
        ("{}", "push payload has no ref"),
    ] {
        let (status, body) = send(github(&daemon, "push", "m-1", payload)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{payload}");
        assert_eq!(body, json!({"error": error}));
    }

    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "github", "ping"), 1);
    assert_eq!(count(&daemon, "github", "ignored"), 2);
    assert_eq!(count(&daemon, "github", "bad_request"), 2);
    assert_eq!(count(&daemon, "github", "triggered"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_is_a_duplicate() {
    let daemon = daemon().await;
    let (status, _) = send(github(&daemon, "push", "same", PUSH_MAIN)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fired(&daemon).await);
    let (status, body) = send(github(&daemon, "push", "same", PUSH_MAIN)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "duplicate"}))
    );
    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "github", "triggered"), 1);
    assert_eq!(count(&daemon, "github", "duplicate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_copies_of_a_delivery_fetch_once() {
    let daemon = daemon().await;
    let requests: Vec<_> = (0..100)
        .map(|_| tokio::spawn(send(github(&daemon, "push", "burst", PUSH_MAIN))))
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("request task").0);
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let duplicates = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!((accepted, duplicates), (1, 99), "{statuses:?}");
    assert_eq!(count(&daemon, "github", "triggered"), 1);
    assert_eq!(count(&daemon, "github", "duplicate"), 99);
    assert!(fired(&daemon).await);
    assert!(!fired(&daemon).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_cap_is_413() {
    let daemon = TestDaemon::start(
        "webhooks:\n  github: {secret_env: GH}\n  max_body: 1KiB\n",
        &[("GH", SECRET)],
    )
    .await;
    // Just under the cap is fine.
    let padded = format!(r#"{{"ref":"refs/heads/main","pad":"{}"}}"#, "x".repeat(980));
    assert!(padded.len() <= 1024);
    let (status, _) = send(github(&daemon, "push", "small", &padded)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fired(&daemon).await);

    // Declared by Content-Length: refused before reading.
    let big = format!(
        r#"{{"ref":"refs/heads/main","pad":"{}"}}"#,
        "x".repeat(2048)
    );
    let (status, body) = send(github(&daemon, "push", "big", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        json!({"error": "request body is larger than 1024 bytes"})
    );

    // Chunked, so only counting while reading finds out.
    let signature = format!("sha256={}", sign(SECRET, big.as_bytes()));
    let mut request = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: canopy\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: chunked\r\nX-Hub-Signature-256: {signature}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in big.as_bytes().chunks(512) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).unwrap());
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "github", "too_large"), 2);
}

/// On tokio's paused clock (a current-thread runtime, so the server runs on
/// it too): the body timeout, the one-byte-a-second client and the deadlines
/// are all in-process timers, so the test takes milliseconds instead of the
/// ten seconds of the timeout. Auto-advance only jumps to the next timer when
/// no task can run and no socket is ready, so every byte sent over loopback
/// reaches the server before the clock moves on.
#[tokio::test]
async fn a_trickling_body_times_out() {
    let daemon = daemon().await;
    // After the setup: Redis and Git are real and keep real time.
    tokio::time::pause();
    let signature = format!("sha256={}", sign(SECRET, PUSH_MAIN.as_bytes()));
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: canopy\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: slow\r\nX-Hub-Signature-256: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        PUSH_MAIN.len()
    );
    let (mut read_half, mut write_half) =
        tokio::io::split(tokio::net::TcpStream::connect(daemon.addr).await.unwrap());
    write_half.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    // One byte a second: each arrives well within any idle timeout, the whole
    // body never does.
    let trickle = async {
        for byte in PUSH_MAIN.as_bytes()[..5].iter() {
            if write_half.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Then silence, with the connection left open.
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut response = Vec::new();
        let _ = read_half.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    };
    let response = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            response = read => response,
            _ = trickle => unreachable!(),
        }
    })
    .await
    .expect("the server gave up on the body");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "github", "timeout"), 1);
}

/// The status line and headers of a response on `stream`, and whatever body
/// came with them until the server closed.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_compares_its_token() {
    let daemon = daemon().await;
    let client = reqwest::Client::new();
    let hook = |token: &str, event: &str, uuid: &str, body: &str| {
        client
            .post(daemon.url("/hooks/gitlab"))
            .header("X-Gitlab-Token", token)
            .header("X-Gitlab-Event", event)
            .header("X-Gitlab-Event-UUID", uuid)
            .body(body.to_owned())
    };
    let (status, body) = send(hook("wrong", "Push Hook", "g-1", PUSH_MAIN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "X-Gitlab-Token does not match"}));
    assert!(!fired(&daemon).await);

    let (status, body) = send(hook(SECRET, "Push Hook", "g-1", PUSH_MAIN)).await;
    assert_eq!(
        (status, body),
        (StatusCode::ACCEPTED, json!({"status": "fetch requested"}))
    );
    assert!(fired(&daemon).await);
    let (status, _) = send(hook(SECRET, "Push Hook", "g-1", PUSH_MAIN)).await;
    assert_eq!(status, StatusCode::OK);

    let tag = r#"{"ref":"refs/tags/v9"}"#;
    let (status, body) = send(hook(SECRET, "Tag Push Hook", "g-2", tag)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "ignored");
    let (status, body) = send(hook(SECRET, "Issue Hook", "g-3", "{}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "ignored");
    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "gitlab", "unauthorized"), 1);
    assert_eq!(count(&daemon, "gitlab", "triggered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_and_generic_hooks_are_signed_too() {
    let daemon = daemon().await;
    let client = reqwest::Client::new();
    let gitea = |signature: String| {
        client
            .post(daemon.url("/hooks/gitea"))
            .header("X-Gitea-Event", "push")
            .header("X-Gitea-Delivery", "t-1")
            .header("X-Gitea-Signature", signature)
            .body(PUSH_MAIN)
    };
    let (status, _) = send(gitea(sign("wrong", PUSH_MAIN.as_bytes()))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!fired(&daemon).await);
    let (status, body) = send(gitea(sign(SECRET, PUSH_MAIN.as_bytes()))).await;
    assert_eq!(
        (status, body),
        (StatusCode::ACCEPTED, json!({"status": "fetch requested"}))
    );
    assert!(fired(&daemon).await);

    let generic = |signature: String, body: &str| {
        client
            .post(daemon.url("/hooks/generic"))
            .header("X-Canopy-Signature", signature)
            .body(body.to_owned())
    };
    // No body at all: "fetch now".
    let (status, _) = send(generic(format!("sha256={}", sign(SECRET, b"")), "")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fired(&daemon).await);
    let other = r#"{"ref":"refs/heads/other"}"#;
    let (status, body) = send(generic(
        format!("sha256={}", sign(SECRET, other.as_bytes())),
        other,
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "ignored");
    let (status, _) = send(generic(sign(SECRET, b""), "")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the sha256= prefix is required"
    );
    assert!(!fired(&daemon).await);
    assert_eq!(count(&daemon, "gitea", "triggered"), 1);
    assert_eq!(count(&daemon, "generic", "triggered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_provider_is_404() {
    let daemon =
        TestDaemon::start("webhooks:\n  github: {secret_env: GH}\n", &[("GH", SECRET)]).await;
    for provider in ["gitlab", "gitea", "generic"] {
        let (status, body) = send(
            reqwest::Client::new()
                .post(daemon.url(&format!("/hooks/{provider}")))
                .body(PUSH_MAIN),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"error": format!("webhook {provider} is not configured")})
        );
    }
    assert!(!fired(&daemon).await);
    // Webhooks are POST only.
    let response = reqwest::get(daemon.url("/hooks/github")).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
