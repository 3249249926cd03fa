//! A report sink: a real HTTP server on a loopback port that records every request
//! and answers as told (200, another status, or not at all once stopped).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// What to answer; 200 by default.
    status: Mutex<Option<StatusCode>>,
    /// A `Location` header to answer with.
    location: Mutex<Option<String>>,
}

pub struct Sink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Sink {
    pub async fn start() -> Sink {
        let mut sink = Sink {
            addr: "127.0.0.1:0".parse().expect("an address"),
            shared: Arc::default(),
            server: None,
        };
        sink.serve().await;
        sink
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the sink");
        self.addr = listener.local_addr().expect("an address");
        let router = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&self.shared));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
                .expect("serve the sink");
        });
        self.server = Some((stop, task));
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        *self.shared.status.lock().unwrap() = Some(StatusCode::from_u16(status).expect("a status"));
    }

    /// Answers `status` with `Location: location` from now on.
    pub fn redirect(&self, status: u16, location: &str) {
        self.answer(status);
        *self.shared.location.lock().unwrap() = Some(location.to_owned());
    }

    /// Closes the port: connections are refused until [`Sink::restart`].
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            stop.cancel();
            task.await.expect("the sink stops");
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.serve().await;
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    shared.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    let mut answer = HeaderMap::new();
    if let Some(location) = shared.location.lock().unwrap().as_deref() {
        answer.insert("location", location.parse().expect("a header value"));
    }
    (
        shared.status.lock().unwrap().unwrap_or(StatusCode::OK),
        answer,
    )
}
