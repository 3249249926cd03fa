//! What an unauthenticated client can make the HTTP server spend (security
//! review M5): connections (`server.max_connections`) and time to send a
//! request head (`server.header_timeout`, which also closes idle keep-alive
//! connections). Each test configures short limits and speaks raw HTTP/1.1
//! over TCP, as an attacker would.

use crate::common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use common::binary::DaemonProcess;
use common::daemon::TestDaemon;
use common::redis::RedisProc;
use common::{eventually_async, fixtures, git_repo_from, repo_path};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
