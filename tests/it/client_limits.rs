//! The child's downloads are bounded (security review, low findings): against
//! a fake daemon (a real HTTP server on a loopback port) that sends an endless
//! artifact, an endless error body, or never answers, `Client::download` fails
//! with an error naming the daemon's URL (never its credentials), within its
//! limits, having read a bounded amount.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use canopy::client::{Client, ClientError, ClientOptions};
use canopy::layout::AppName;
use common::redis::RedisProc;

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
const CREDENTIAL: &str = "s3cret-canary-9e2";

/// Far more than any bounded read takes, far less than an unbounded one: the
/// loopback socket buffers hold a few MiB, and the fake daemon produces
/// hundreds of MiB a second for as long as it is read.
const SENT_BOUND: u64 = 64 << 20;

/// What the fake daemon does with every request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 and a body that never ends.
    EndlessArtifact,
    /// 500 and a body that never ends.
    EndlessError,
    /// Reads the request and never answers.
    Silent,
}

/// A fake daemon on a loopback port; the bytes of body it has produced.
async fn fake_daemon(behaviour: Behaviour) -> (SocketAddr, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let handler = move || {
        let sent = counter.clone();
        async move {
            let (status, chunk) = match behaviour {
                Behaviour::EndlessArtifact => (StatusCode::OK, Bytes::from(vec![0u8; 64 << 10])),
                Behaviour::EndlessError => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from("daemon exploded ".repeat(4096)),
                ),
                Behaviour::Silent => std::future::pending().await,
            };
            let endless = futures_util::stream::unfold((), move |()| {
                let chunk = chunk.clone();
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                async move { Some((Ok::<_, std::io::Error>(chunk), ())) }
            });
            Response::builder()
                .status(status)
                .header("digest", DIGEST)
                .body(Body::from_stream(endless))
                .expect("a valid response")
        }
    };
    let router = axum::Router::new().route("/api/v1/apps/{*rest}", axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, sent)
}

/// A client of `payments/api` downloading from `server`, with a whole-download
/// deadline far above what a bounded failure takes.
async fn client(
    redis: &RedisProc,
    server: String,
    adjust: impl FnOnce(&mut ClientOptions),
) -> Client {
    let app = AppName::parse("payments/api").expect("valid name");
    let mut options = ClientOptions::new(
        common::store_options(&redis.url(), "limits"),
        app,
        "tester".to_owned(),
    );
    options.server = Some(server);
    options.download_timeout = Duration::from_secs(60);
    adjust(&mut options);
    Client::connect(options).await.expect("connect")
}

/// A failed download: the error, its whole text, and how long it took.
async fn failed_download(client: &Client) -> (ClientError, String, Duration) {
    let started = Instant::now();
    let error = client
        .download(REVISION, DIGEST)
        .await
        .expect_err("the download fails");
    let text = canopy::error_chain(&error);
    (error, text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_artifact_fails_at_the_cap_naming_the_url() {
    let redis = RedisProc::start();
    let (addr, sent) = fake_daemon(Behaviour::EndlessArtifact).await;
    let client = client(&redis, format!("http://{addr}"), |options| {
        options.max_artifact_bytes = 1 << 20;
    })
    .await;
    let (error, text, took) = failed_download(&client).await;
    assert!(
        matches!(&error, ClientError::TooLarge { limit, .. } if *limit == 1 << 20),
        "{text}"
    );
    assert_eq!(
        text,
        format!(
            "the files of app payments/api at {REVISION} from http://{addr} exceed 1048576 bytes"
        )
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < SENT_BOUND, "the client read on: {sent} bytes sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_read_only_for_a_snippet() {
    let redis = RedisProc::start();
    let (addr, sent) = fake_daemon(Behaviour::EndlessError).await;
    let client = client(&redis, format!("http://{addr}"), |_| {}).await;
    let (error, text, took) = failed_download(&client).await;
    let ClientError::DownloadStatus {
        status,
        detail,
        url,
        ..
    } = &error
    else {
        panic!("{text}")
    };
    assert_eq!(
        (*status, url.as_str()),
        (500, format!("http://{addr}").as_str())
    );
    assert!(
        detail.starts_with("daemon exploded daemon exploded"),
        "{detail}"
    );
    assert!(
        detail.chars().count() <= 300,
        "{} chars",
        detail.chars().count()
    );
    assert!(
        text.starts_with(&format!("the daemon at http://{addr} answered 500 for the files of app payments/api at {REVISION}: daemon exploded")),
        "{text}"
    );
    // Unbounded, the body would have been read until the 60 s deadline.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent < SENT_BOUND, "the client read on: {sent} bytes sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_never_answers_times_out_naming_the_url_without_credentials() {
    let redis = RedisProc::start();
    let (addr, _) = fake_daemon(Behaviour::Silent).await;
    let client = client(
        &redis,
        format!("http://agent:{CREDENTIAL}@{addr}"),
        |options| options.read_timeout = Duration::from_secs(1),
    )
    .await;
    let (error, text, took) = failed_download(&client).await;
    assert!(matches!(error, ClientError::Download { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "failed to download the files of app payments/api at {REVISION} from http://{addr}: "
        )),
        "{text}"
    );
    assert!(text.contains("timed out"), "{text}");
    assert!(!text.contains(CREDENTIAL), "{text}");
    assert!(!format!("{error:?}").contains(CREDENTIAL), "{error:?}");
    // The read timeout, not the 60 s deadline of the whole download.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
