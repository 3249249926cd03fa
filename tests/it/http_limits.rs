//! What an unauthenticated client can make the HTTP server spend (security
//! review M5): connections (`server.max_connections`), time to send a request
//! head (`server.header_timeout`, which also closes idle keep-alive
//! connections), and bytes of webhook bodies held before they are verified
//! (`server.unverified_body_budget`, with `server.body_timeout`). Each test
//! configures short limits and speaks raw HTTP/1.1 over TCP, as an attacker
//! would.

use crate::common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use common::binary::DaemonProcess;
use common::daemon::TestDaemon;
use common::redis::RedisProc;
use common::{eventually_async, fixtures, git_repo_from, repo_path, sign};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SECRET: &str = "limits-canary-5d1e";
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: canopy\r\n\r\n";
const HEALTHY: &str = r#"{"status":"ok"}"#;

/// Reads from `stream` until what was read contains `needle`, the server
/// closes, or `wait` passes; what was read.
async fn read_until(stream: &mut TcpStream, needle: &str, wait: Duration) -> String {
    let mut read = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&read).contains(needle) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&read).into_owned()
}

/// Whether the server closed `stream` (end of file or reset) within `wait`,
/// having sent nothing more.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "the server sent {:?} instead of closing",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => false,
    }
}

/// A connection on which `/healthz` was answered: open, kept alive, idle.
async fn idle_connection(daemon: &TestDaemon) -> TcpStream {
    let mut stream = TcpStream::connect(daemon.addr).await.expect("connect");
    stream.write_all(HEALTHZ).await.expect("send");
    let response = read_until(&mut stream, HEALTHY, Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    stream
}

/// `canopy_http_connections`, as `/metrics` would show it.
fn open_connections(daemon: &TestDaemon) -> i64 {
    daemon.shared.metrics.connections.get()
}

/// (a) The real daemon, configured with `server.header_timeout: 2s`: a client
/// that sends its request head one byte a second never completes it, and is
/// disconnected; the daemon serves the next client as usual.
#[test]
fn a_client_trickling_its_request_head_is_disconnected() {
    let remote = git_repo_from(&fixtures().join("example"));
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisProc::start();
    let config = dir.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "namespace: limits\nstate_dir: {state}\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {redis}\nserver:\n  header_timeout: 2s\n",
            state = dir.path().join("state").display(),
            repo = repo_path(&remote).display(),
            redis = redis.url(),
        ),
    )
    .expect("write the config");
    let daemon = DaemonProcess::start(&config, &[], &[]);

    // A head that takes a minute at this pace; the first ~2 s of it arrive.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: canopy\r\nX-Slow: {}\r\n\r\n",
        "x".repeat(60)
    );
    let mut stream = std::net::TcpStream::connect(daemon.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let started = Instant::now();
    let mut sent = 0;
    let disconnected = loop {
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        if sent < head.len() {
            if stream.write_all(&head.as_bytes()[sent..=sent]).is_err() {
                break true;
            }
            sent += 1;
        }
        // The pause between bytes: a read that waits a second for the server.
        let mut buf = [0u8; 1024];
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => panic!(
                "answered an incomplete head: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
    };
    assert!(
        disconnected,
        "still connected after {:?} and {sent} bytes",
        started.elapsed()
    );
    assert!(sent < head.len(), "the whole head was sent: {sent} bytes");

    let response = reqwest::blocking::get(daemon.url("/healthz")).expect("healthz");
    assert_eq!(response.status(), 200);
    drop(redis);
}

/// An idle keep-alive connection is closed after `server.header_timeout`,
/// counted from the end of its last response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let daemon = TestDaemon::start("server:\n  header_timeout: 1s\n", &[]).await;
    let mut idle = idle_connection(&daemon).await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "an idle connection stays open"
    );
    assert!(
        eventually_async(Duration::from_secs(5), || open_connections(&daemon) == 0).await,
        "{} connections still counted",
        open_connections(&daemon)
    );
}

/// (b) With `server.max_connections: 3`, three idle kept-alive connections
/// take every slot: a fourth connection's request waits (a flood of others
/// too, without a connection or task more), until one idle connection closes.
/// Then the server serves again, and once all are closed, as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_request_waits_until_a_connection_closes() {
    const MAX: i64 = 3;
    let daemon = TestDaemon::start(
        "server:\n  max_connections: 3\n  header_timeout: 60s\n",
        &[],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..MAX {
        idle.push(idle_connection(&daemon).await);
    }
    assert_eq!(open_connections(&daemon), MAX);

    let mut waiting = TcpStream::connect(daemon.addr)
        .await
        .expect("the kernel queues the connection");
    waiting.write_all(HEALTHZ).await.expect("send");
    let mut flood = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(daemon.addr).await.expect("queued");
        stream.write_all(HEALTHZ).await.expect("send");
        flood.push(stream);
    }
    let early = read_until(&mut waiting, HEALTHY, Duration::from_millis(500)).await;
    assert_eq!(early, "", "served past max_connections");
    assert_eq!(open_connections(&daemon), MAX, "connections past the cap");

    // One slot frees: the waiting request (or one of the flood, first in the
    // kernel's queue) is served; the cap still holds.
    drop(idle.pop());
    let served = read_until(&mut waiting, HEALTHY, Duration::from_secs(10)).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served:?}");
    assert!(open_connections(&daemon) <= MAX);

    drop(idle);
    drop(waiting);
    drop(flood);
    assert!(
        eventually_async(Duration::from_secs(10), || open_connections(&daemon) == 0).await,
        "{} connections still counted",
        open_connections(&daemon)
    );
    let response = reqwest::get(daemon.url("/healthz")).await.expect("healthz");
    assert_eq!(response.status(), 200);
}

/// A webhook head declaring a 1 KiB body, with only its first bytes: the
/// server holds its share of the budget until the body times out.
fn slow_webhook(delivery: usize) -> String {
    format!(
        "POST /hooks/github HTTP/1.1\r\nHost: canopy\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: slow-{delivery}\r\nX-Hub-Signature-256: sha256={}\r\n\
         Content-Length: 1024\r\n\r\n{{\"ref\":",
        "0".repeat(64)
    )
}

/// (c) `webhooks.max_body: 1KiB` and `server.unverified_body_budget: 4KiB`:
/// of twelve unauthenticated webhooks with large, slow bodies, four are read
/// (and time out after `server.body_timeout`), the eight beyond the budget
/// are answered 503 with Retry-After at once, and so is a chunked one;
/// `/healthz` answers meanwhile. Once the slow ones are gone, the budget is
/// back: a real delivery is read and triggers a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bodies_past_the_unverified_budget_are_503_at_once() {
    let daemon = TestDaemon::start(
        "server:\n  unverified_body_budget: 4KiB\n  body_timeout: 3s\nwebhooks:\n  github: {secret_env: GH}\n  max_body: 1KiB\n",
        &[("GH", SECRET)],
    )
    .await;
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for delivery in 0..12 {
        let addr = daemon.addr;
        let answers = answers.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(slow_webhook(delivery).as_bytes())
                .await
                .expect("send");
            // The rest of the body never comes.
            let response = read_until(&mut stream, "\r\n\r\n", Duration::from_secs(20)).await;
            let _ = answers.send(response);
        });
    }
    let mut busy = Vec::new();
    while busy.len() < 8 {
        let response = tokio::time::timeout(Duration::from_secs(10), answered.recv())
            .await
            .expect("eight answers come at once")
            .expect("a sender is alive");
        assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
        assert!(response.contains("retry-after: 1\r\n"), "{response:?}");
        busy.push(response);
    }

    // The four within the budget are still being read: nothing else answers
    // yet, and a chunked body finds the budget full at its first chunk.
    let mut chunked = TcpStream::connect(daemon.addr).await.expect("connect");
    chunked
        .write_all(
            b"POST /hooks/github HTTP/1.1\r\nHost: canopy\r\nX-GitHub-Event: push\r\n\
              X-Hub-Signature-256: sha256=00\r\nTransfer-Encoding: chunked\r\n\r\n\
              10\r\n{\"ref\":\"refs/he\r\n",
        )
        .await
        .expect("send");
    let response = read_until(&mut chunked, "\r\n\r\n", Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    let healthz = reqwest::Client::new()
        .get(daemon.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers while the budget is full");
    assert_eq!(healthz.status(), 200);
    assert!(
        answered.try_recv().is_err(),
        "a body within the budget was answered early"
    );

    for _ in 0..4 {
        let response = tokio::time::timeout(Duration::from_secs(15), answered.recv())
            .await
            .expect("the slow bodies time out")
            .expect("a sender is alive");
        assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    }
    assert_eq!(crate::webhooks::count(&daemon, "github", "busy"), 9);
    assert_eq!(crate::webhooks::count(&daemon, "github", "timeout"), 4);

    // The budget was given back: a delivery of the largest accepted size is read.
    let body = format!(r#"{{"ref":"refs/heads/main","pad":"{}"}}"#, "x".repeat(990));
    assert_eq!(body.len(), 1024);
    let response = reqwest::Client::new()
        .post(daemon.url("/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "after")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", sign(SECRET, body.as_bytes())),
        )
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 202);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), daemon.shared.trigger.fired())
            .await
            .is_ok()
    );
}

/// hyper buffers at most 64 KiB of a connection: a request head that does not
/// fit is refused with 431, not buffered, and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_64_kib_is_431() {
    let daemon = TestDaemon::start("", &[]).await;
    let mut stream = TcpStream::connect(daemon.addr).await.expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: canopy\r\nX-Big: {}\r\n\r\n",
        "x".repeat(70 << 10)
    );
    // The server may close before the whole head is written.
    let _ = stream.write_all(head.as_bytes()).await;
    let response = read_until(&mut stream, "\r\n\r\n", Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:?}");
    let response = reqwest::get(daemon.url("/healthz")).await.expect("healthz");
    assert_eq!(response.status(), 200);
}
