//! Git servers for tests, built from real `git` programs:
//!
//! - [`GitDaemon`]: `git daemon` serving `git://` (upload-pack only);
//! - [`GitHttpServer`]: smart HTTP, axum on a loopback port running
//!   `git http-backend` as CGI for every request, with optional Basic auth and
//!   a log of the requests it saw;
//! - [`git_client`]: the stock `git` client, hermetic (no user or system config,
//!   no prompts) and bounded in time;
//! - [`bare_clone`]: a bare copy of a fixture repository, ready to serve.
//!
//! Owns the processes, threads and runtimes it starts: each server stops them
//! on drop (process groups are killed, threads joined), and every wait has a
//! deadline, so a stuck client or server fails a test instead of hanging it.
//! Must not touch the caller's git configuration or any repository outside the
//! directories it is given; it never writes to the repositories it serves.

use std::ffi::OsString;
use std::future::IntoFuture;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::percent_decode_str;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(10);
/// How long a server may take to start; generous, the build machine is shared.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped process group gets between SIGTERM and SIGKILL, and a
/// stopped HTTP server's runtime to wind down.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long one `git http-backend` run may take.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`git_client`] lets a command run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest request body the HTTP server reads.
const MAX_BODY: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------
// git daemon

/// `git daemon` serving every repository under a base path over `git://`, on a
/// free port of 127.0.0.1. Upload-pack only: pushes are refused, and a served
/// repository cannot turn receive-pack on. Stopped (with the children it forks
/// per connection) on drop.
pub struct GitDaemon {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl GitDaemon {
    /// Starts serving the repositories under `base_path`, e.g. `base/repo.git`
    /// as [`url("repo.git")`](Self::url). Returns once the daemon accepts
    /// connections.
    pub fn start(base_path: &Path) -> GitDaemon {
        // The daemon compares requested paths with its whitelist after resolving
        // them; a symlinked temp dir would not match an unresolved base.
        let base = base_path
            .canonicalize()
            .unwrap_or_else(|e| panic!("base path {}: {e}", base_path.display()));
        let mut failures = Vec::new();
        // The port is free when picked but may be taken before the daemon binds
        // it; the daemon then exits and another port is tried.
        for _ in 0..5 {
            match Self::try_start(&base, free_port()) {
                Ok(daemon) => return daemon,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("git daemon did not start:\n{}", failures.join("\n---\n"));
    }

    fn try_start(base: &Path, port: u16) -> Result<GitDaemon, String> {
        let mut command = Command::new("git");
        command
            .arg("daemon")
            .args([
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                // Logs "Ready to rumble" once listening: proof that this process,
                // not a stranger that took the port, accepts connections.
                "--verbose",
                "--listen=127.0.0.1",
                "--enable=upload-pack",
                "--forbid-override=receive-pack",
            ])
            .arg(format!("--base-path={}", base.display()))
            .arg(format!("--port={port}"))
            .arg(base);
        hermetic(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so drop can stop the per-connection children too.
            .process_group(0)
            .spawn()
            .expect("spawn git daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        // Detached: it ends at EOF, when the last process of the group is gone.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut daemon = GitDaemon { child, port, log };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "git daemon on port {port} exited with {status}:\n{}",
                    daemon.log()
                ));
            }
            if daemon.log().contains("Ready to rumble")
                && TcpStream::connect_timeout(&daemon.addr(), Duration::from_secs(1)).is_ok()
            {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                // Dropping `daemon` stops it.
                return Err(format!(
                    "git daemon on port {port} not ready after {START_TIMEOUT:?}:\n{}",
                    daemon.log()
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// `git://127.0.0.1:PORT/<repo>`, `repo` relative to the base path.
    pub fn url(&self, repo: &str) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            repo.trim_start_matches('/')
        )
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The daemon's process id, which is also the id of the process group
    /// holding it and the children it forks per connection.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon logged so far (connections, requested services, errors).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------
// smart HTTP

/// One request seen by [`GitHttpServer`]. Credentials are never recorded, only
/// the user they authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// The request path, without the query string, as sent (not decoded).
    pub path: String,
    pub query: String,
    /// The status code of the response.
    pub status: u16,
    /// The Basic-auth user, when the request carried valid credentials.
    pub user: Option<String>,
    /// The `Git-Protocol` header (`version=2` for protocol v2).
    pub git_protocol: Option<String>,
    /// The `Content-Encoding` of the request body (git gzips larger requests).
    pub content_encoding: Option<String>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Body length as received (after de-chunking, before any decompression).
    pub body_len: usize,
}

impl std::fmt::Display for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        write!(f, " -> {}", self.status)
    }
}

struct Shared {
    project_root: PathBuf,
    /// The user and the `Authorization: Basic` token it must send.
    auth: Option<(String, String)>,
    requests: Mutex<Vec<HttpRequest>>,
}

impl Shared {
    fn record(&self, request: HttpRequest) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }
}

/// Smart HTTP on 127.0.0.1 (a free port): `git http-backend` run as CGI per
/// request over the bare repositories under a project root, every repository
/// exported. With `auth`, every request needs matching Basic credentials.
///
/// axum (hyper) does the HTTP, on a current-thread tokio runtime of its own,
/// in a thread of its own: the server works the same under sync tests and
/// under `#[tokio::test]`, whose runtime may be busy or blocked. On drop the
/// runtime is shut down, which closes every open connection and kills running
/// backends (with their process groups), and the thread is joined.
///
/// As with any `http-backend`, receive-pack is on for authenticated requests
/// (`REMOTE_USER` set) and off for anonymous ones.
pub struct GitHttpServer {
    addr: SocketAddr,
    auth: Option<(String, String)>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Starts serving `project_root/<repo>` as [`url("<repo>")`](Self::url).
    /// `auth` is `(user, token)`: the password the client must send.
    pub fn start(project_root: &Path, auth: Option<(String, String)>) -> GitHttpServer {
        let project_root = project_root
            .canonicalize()
            .unwrap_or_else(|e| panic!("project root {}: {e}", project_root.display()));
        // Bound here, so the address is known (and connections queue) before
        // the server thread runs.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            project_root,
            auth: auth
                .as_ref()
                .map(|(user, token)| (user.clone(), BASE64.encode(format!("{user}:{token}")))),
            requests: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the git http server");
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("git-http-server".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("register the listener with tokio");
                    tokio::select! {
                        served = axum::serve(listener, router).into_future() => {
                            if let Err(e) = served {
                                eprintln!("git http test server stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Drops the connection tasks: their sockets close, and the
                // backends they wait for are killed (`kill_on_drop`, group guard).
                runtime.shutdown_timeout(STOP_GRACE);
            })
            .expect("spawn the git http server thread");
        GitHttpServer {
            addr,
            auth,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/<repo>`, `repo` relative to the project root.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{}", self.addr, repo.trim_start_matches('/'))
    }

    /// [`url`](Self::url) with the server's credentials in it
    /// (`http://user:token@127.0.0.1:PORT/<repo>`). Panics without `auth`.
    pub fn authenticated_url(&self, repo: &str) -> String {
        let (user, token) = self.auth.as_ref().expect("server started without auth");
        format!(
            "http://{user}:{token}@{}/{}",
            self.addr,
            repo.trim_start_matches('/')
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request answered so far, in order. A request is recorded before
    /// its response is sent, so once a client is done, all it sent is here.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // Fails only if the server already stopped on its own.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("git http test server: its thread panicked");
        }
    }
}

/// Every request: answered by [`respond`], recorded, and the connection
/// closed after the response (`Connection: close`): one connection carries
/// exactly one logged request, and a client that reads to the end of the
/// connection gets the whole response.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (head, body) = request.into_parts();
    let mut record = HttpRequest {
        method: head.method.to_string(),
        path: head.uri.path().to_owned(),
        query: head.uri.query().unwrap_or_default().to_owned(),
        status: 0,
        user: None,
        git_protocol: header(&head.headers, "git-protocol"),
        content_encoding: header(&head.headers, "content-encoding"),
        chunked: is_chunked(&head.headers),
        body_len: 0,
    };
    let mut response = respond(&shared, &head, body, &mut record).await;
    record.status = response.status().as_u16();
    shared.record(record);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn respond(shared: &Shared, head: &Parts, body: Body, record: &mut HttpRequest) -> Response {
    if let Some((user, expected)) = &shared.auth {
        let authorized = header(&head.headers, "authorization")
            .as_deref()
            .and_then(|value| value.split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("basic") && token.trim() == expected
            });
        if !authorized {
            // A client waiting for "100 Continue" sends no body; any other
            // body is read, so that closing the connection does not reset it
            // before the client reads the answer.
            if !expects_continue(&head.headers)
                && let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await
            {
                record.body_len = body.len();
            }
            return (
                StatusCode::UNAUTHORIZED,
                [
                    (WWW_AUTHENTICATE, "Basic realm=\"canopy-test\""),
                    (CONTENT_TYPE, "text/plain"),
                ],
                "authentication required\n",
            )
                .into_response();
        }
        record.user = Some(user.clone());
    }
    let declared = header(&head.headers, "content-length").and_then(|n| n.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    // Read in full (de-chunked by hyper): CGI wants CONTENT_LENGTH.
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("request body: {e}")),
    };
    record.body_len = body.len();
    match run_backend(shared, head, record.user.as_deref(), &body).await {
        Ok(response) => response,
        Err(message) => plain(StatusCode::BAD_GATEWAY, &message),
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain")],
        format!("{message}\n"),
    )
        .into_response()
}

/// A header as text; `None` when absent or not visible ASCII.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn is_chunked(headers: &HeaderMap) -> bool {
    header(headers, "transfer-encoding").is_some_and(|te| {
        te.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

fn expects_continue(headers: &HeaderMap) -> bool {
    header(headers, "expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Request headers that are not passed to the backend as `HTTP_*`: the
/// credentials, and what CGI carries in variables of its own or HTTP handled.
const NOT_PASSED: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
];

/// Runs `git http-backend` for one request (RFC 3875 CGI): the response it
/// writes, or why there is none.
async fn run_backend(
    shared: &Shared,
    head: &Parts,
    user: Option<&str>,
    body: &[u8],
) -> Result<Response, String> {
    let mut command = Command::new("git");
    command.arg("http-backend");
    hermetic(&mut command);
    command
        .env("GIT_PROJECT_ROOT", &shared.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "canopy-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", head.method.as_str())
        .env(
            "PATH_INFO",
            OsString::from_vec(percent_decode_str(head.uri.path()).collect()),
        )
        .env("QUERY_STRING", head.uri.query().unwrap_or_default());
    if is_chunked(&head.headers) || head.headers.contains_key("content-length") {
        // Known even for chunked requests: the body was read in full.
        command.env("CONTENT_LENGTH", body.len().to_string());
    }
    if let Some(content_type) = header(&head.headers, "content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    if let Some(user) = user {
        command.env("AUTH_TYPE", "Basic").env("REMOTE_USER", user);
    }
    if let Some(protocol) = header(&head.headers, "git-protocol") {
        // Protocol v2 reaches upload-pack this way (http-backend would also
        // derive it from HTTP_GIT_PROTOCOL below).
        command.env("GIT_PROTOCOL", protocol);
    }
    // The other headers as HTTP_*: http-backend inflates gzip bodies itself
    // when HTTP_CONTENT_ENCODING says so.
    for (name, value) in &head.headers {
        let Ok(value) = value.to_str() else { continue };
        if !NOT_PASSED.contains(&name.as_str()) {
            command.env(
                format!(
                    "HTTP_{}",
                    name.as_str().to_ascii_uppercase().replace('-', "_")
                ),
                value,
            );
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so an abandoned backend takes upload-pack with it.
        .process_group(0);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("spawn git http-backend: {e}"))?;
    let group = GroupGuard(child.id());
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Fed while the output is read: the backend may write before it has read
    // all its input. A write error means it stopped reading; its exit status
    // tells the rest.
    let feed = async move {
        let _ = stdin.write_all(body).await;
    };
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    let output = tokio::time::timeout(BACKEND_TIMEOUT, run)
        .await
        .map_err(|_| format!("git http-backend killed after {BACKEND_TIMEOUT:?}"))?
        .map_err(|e| format!("wait for git http-backend: {e}"))?;
    // Exited and reaped: its process group id may be reused from now on.
    group.disarm();
    if !output.stderr.is_empty() {
        eprintln!(
            "git http-backend ({} {}): {}",
            head.method,
            head.uri.path(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    cgi_response(&output.stdout).ok_or_else(|| {
        format!(
            "git http-backend exited with {} without a CGI response: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The response a CGI program wrote: its status (from `Status:`, else 200),
/// its other headers (any `Content-Length` dropped: hyper sets its own) and
/// its body.
fn cgi_response(output: &[u8]) -> Option<Response> {
    let (head_len, separator_len) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|separator| {
            output
                .windows(separator.len())
                .position(|w| w == *separator)
                .map(|at| (at, separator.len()))
        })
        .min()?;
    let head = std::str::from_utf8(&output[..head_len]).ok()?;
    let mut response = Response::new(Body::from(output[head_len + separator_len..].to_vec()));
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse().ok()?;
            *response.status_mut() = StatusCode::from_u16(code).ok()?;
        } else if !name.eq_ignore_ascii_case("content-length") {
            response.headers_mut().append(
                HeaderName::try_from(name).ok()?,
                HeaderValue::try_from(value).ok()?,
            );
        }
    }
    Some(response)
}

/// Kills a process group when dropped, unless disarmed: a backend abandoned
/// mid-request (timeout, server dropped) does not leave upload-pack behind.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            signal_group(group, Signal::KILL);
        }
    }
}

// ---------------------------------------------------------------------------
// processes

/// No user or system git config, no prompts, stable messages; only `PATH` is
/// kept from the environment.
fn hermetic(command: &mut Command) {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
}

/// Sends `signal` to the process group `pgid` (rustix: the crate forbids the
/// unsafe `libc::kill`). False if no process got it.
fn signal_group(pgid: u32, signal: Signal) -> bool {
    i32::try_from(pgid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|group| kill_process_group(group, signal).is_ok())
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Stops a child started with `process_group(0)` and everything in its group:
/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; the child is reaped.
fn stop_group(child: &mut Child) {
    let pgid = child.id();
    signal_group(pgid, Signal::TERM);
    if wait_until(child, Instant::now() + STOP_GRACE).is_none() {
        signal_group(pgid, Signal::KILL);
        let _ = child.wait();
    }
}

/// Runs `command` in its own process group with `stdin` fed to it and its
/// output collected; after `timeout` the whole group is killed and `Err`
/// returned.
fn run_with_stdin(
    command: &mut Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn {command:?}: {e}"))?;
    let pgid = child.id();
    let mut input = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    thread::scope(|scope| {
        // Fed and drained concurrently: the process may write before it has
        // read all its input. A write error means it stopped reading; its exit
        // status tells the rest.
        scope.spawn(move || {
            let _ = input.write_all(stdin);
        });
        let out = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let status = wait_until(&mut child, Instant::now() + timeout);
        if status.is_none() {
            // Killing the group closes the pipes, which ends the threads above.
            signal_group(pgid, Signal::KILL);
            let _ = child.wait();
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            Some(status) => Ok(Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(format!(
                "{command:?} killed after {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&stderr)
            )),
        }
    })
}

/// Runs the stock `git` client in `cwd` with `args` and extra `envs`, hermetic
/// (no user or system config, `GIT_TERMINAL_PROMPT=0`, so a missing credential
/// fails instead of prompting) and killed with its process group after
/// [`CLIENT_TIMEOUT`], which panics. The exit status is the caller's to check.
pub fn git_client(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new("git");
    command.args(args).current_dir(cwd);
    hermetic(&mut command);
    command.envs(envs.iter().copied());
    run_with_stdin(&mut command, &[], CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("git {args:?} in {}: {e}", cwd.display()))
}

/// A bare clone of `source` at `root/name` (e.g. `name = "repo.git"`), ready
/// to be served by [`GitDaemon::start(root)`](GitDaemon::start) or
/// [`GitHttpServer::start(root, ..)`](GitHttpServer::start).
pub fn bare_clone(source: &Path, root: &Path, name: &str) -> PathBuf {
    let source = source.to_str().expect("UTF-8 source path");
    super::git(root, &["clone", "--bare", "--quiet", source, name]);
    root.join(name)
}
