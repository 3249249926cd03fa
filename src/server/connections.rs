//! The accept loop: what the server spends per client before any request is
//! authenticated (RELIABILITY: the server faces the internet for webhooks).
//!
//! - At most `server.max_connections` connections are served at once. A slot
//!   is taken before `accept`, so further connections wait in the kernel's
//!   accept queue (or are refused by it when that is full): no task, buffer
//!   or file descriptor is spent on them.
//! - A client has `server.header_timeout` to send a request's head, counted
//!   from the connection's start or, on a kept-alive connection, from the end
//!   of the previous response (hyper's header-read timer): a slowloris client
//!   is cut off, and an idle keep-alive connection closes after as long.
//! - A request head is at most [`MAX_HEAD_BYTES`] (431 past it), and hyper
//!   buffers about [`MAX_BUF_BYTES`] per connection.
//!
//! Bodies are bounded where they are read (webhooks: size, time and the
//! shared [`BodyBudget`](super::budget::BodyBudget)). On shutdown, idle
//! connections are closed and requests in flight finish (hyper-util's
//! graceful shutdown).

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Shared, router};

/// hyper's read and write buffer per connection (its default is about
/// 400 KiB): request heads are a few KiB, webhooks and artifacts stream
/// through it in pieces.
const MAX_BUF_BYTES: usize = 64 << 10;

/// The largest request line and headers. The buffer's cap alone is not
/// exact: a head that arrives in one large read is parsed before the buffer's
/// size is checked.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// After an accept error other than the peer's (out of file descriptors), the
/// loop pauses this long instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router(shared)` on `listener` until `shutdown` is cancelled; then
/// closes idle connections and waits for requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let settings = shared.settings.server.clone();
    let open = shared.metrics.connections.clone();
    let slots = std::sync::Arc::new(Semaphore::new(settings.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_BUF_BYTES)
        .max_header_size(MAX_HEAD_BYTES);
    let service = TowerToHyperService::new(router(shared));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let slot = Slot::new(slot, open.clone());
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// One connection's place among `server.max_connections`, counted in
/// `canopy_http_connections` while it is open.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: Gauge) -> Slot {
        open.inc();
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A connection the peer reset before it was accepted is nobody's problem;
/// anything else (no file descriptors left) is logged, and the loop pauses.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "failed to accept an HTTP connection");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
