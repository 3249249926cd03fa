//! Git servers for tests, built from real `git` programs and std only:
//!
//! - [`GitDaemon`]: `git daemon` serving `git://` (upload-pack only);
//! - [`GitHttpServer`]: smart HTTP, a small HTTP/1.1 server that runs
//!   `git http-backend` as CGI for every request, with optional Basic auth and a
//!   log of the requests it saw;
//! - [`git_client`]: the stock `git` client, hermetic (no user or system config,
//!   no prompts) and bounded in time;
//! - [`bare_clone`]: a bare copy of a fixture repository, ready to serve.
//!
//! Owns the processes and threads it starts: each server stops them on drop
//! (process groups are killed, threads joined), and every wait has a deadline, so
//! a stuck client or server fails a test instead of hanging it.
//! Must not touch the caller's git configuration or any repository outside the
//! directories it is given; it never writes to the repositories it serves.
//!
//! The HTTP server answers every request with `Connection: close` and closes the
//! connection: no keep-alive, which keeps request framing trivially correct and
//! makes one connection carry exactly one logged request.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(10);
/// How long a server may take to start; generous, the build machine is shared.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped process group gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Read and write timeout on HTTP connections: a stuck client frees its thread.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `git http-backend` run may take.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`git_client`] lets a command run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

const MAX_HEADER_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// What is read and thrown away after a response so that unread request bytes
/// do not turn the close into a reset that loses the response.
const MAX_DRAIN: u64 = 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// The user and the expected `Authorization: Basic` token.
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
/// Stops accepting, closes open connections and joins its threads on drop.
///
/// As with any `http-backend`, receive-pack is on for authenticated requests
/// (`REMOTE_USER` set) and off for anonymous ones.
pub struct GitHttpServer {
    addr: SocketAddr,
    auth: Option<(String, String)>,
    shared: Arc<Shared>,
    shutdown: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Starts serving `project_root/<repo>` as [`url("<repo>")`](Self::url).
    /// `auth` is `(user, token)`: the password the client must send.
    pub fn start(project_root: &Path, auth: Option<(String, String)>) -> GitHttpServer {
        let project_root = project_root
            .canonicalize()
            .unwrap_or_else(|e| panic!("project root {}: {e}", project_root.display()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            project_root,
            auth: auth
                .as_ref()
                .map(|(user, token)| (user.clone(), base64(format!("{user}:{token}").as_bytes()))),
            requests: Mutex::new(Vec::new()),
        });
        let shutdown = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let shared = Arc::clone(&shared);
            let shutdown = Arc::clone(&shutdown);
            thread::spawn(move || accept_loop(listener, &shutdown, &shared))
        };
        GitHttpServer {
            addr,
            auth,
            shared,
            shutdown,
            accept_thread: Some(accept_thread),
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
        self.shutdown.store(true, Ordering::SeqCst);
        // Unblocks `accept`, which then sees the flag. If even this connection
        // fails, the listener is gone already and the thread with it.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shutdown: &AtomicBool, shared: &Arc<Shared>) {
    // A clone of each live connection, so shutdown can close it under its thread.
    let mut connections: Vec<(JoinHandle<()>, TcpStream)> = Vec::new();
    for stream in listener.incoming() {
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(peer) = stream.try_clone() else {
            continue;
        };
        let (finished, live) = connections.into_iter().partition(|(t, _)| t.is_finished());
        connections = live;
        join_all(finished);
        let shared = Arc::clone(shared);
        let thread = thread::spawn(move || handle_connection(stream, &shared));
        connections.push((thread, peer));
    }
    drop(listener);
    for (_, stream) in &connections {
        let _ = stream.shutdown(Shutdown::Both);
    }
    join_all(connections);
}

fn join_all(connections: Vec<(JoinHandle<()>, TcpStream)>) {
    for (thread, _) in connections {
        if thread.join().is_err() {
            eprintln!("git http test server: a connection thread panicked");
        }
    }
}

fn handle_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    if let Err(e) = serve(&mut reader, &mut writer, shared) {
        // Answer malformed requests; anything else is a broken connection.
        let status = match e.kind() {
            io::ErrorKind::InvalidData => Some("400 Bad Request"),
            io::ErrorKind::FileTooLarge => Some("413 Content Too Large"),
            _ => None,
        };
        if let Some(status) = status {
            let _ = write_response(&mut writer, status, &[], format!("{e}\n").as_bytes());
        }
    }
    // Lingering close: read what the client may still send until it closes,
    // so that the close does not become a reset that discards the response.
    let _ = writer.flush();
    let _ = writer.shutdown(Shutdown::Write);
    let _ = reader.get_ref().set_read_timeout(Some(DRAIN_TIMEOUT));
    let _ = io::copy(&mut reader.take(MAX_DRAIN), &mut io::sink());
}

/// A parsed request line and headers (names lowercased).
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
    }

    fn has_body(&self) -> bool {
        self.is_chunked() || self.header("content-length").is_some()
    }

    fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

fn serve(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    shared: &Shared,
) -> io::Result<()> {
    let Some(head) = read_head(reader)? else {
        return Ok(()); // closed before a request, like the shutdown wake-up
    };
    let mut record = HttpRequest {
        method: head.method.clone(),
        path: head.path.clone(),
        query: head.query.clone(),
        status: 0,
        user: None,
        git_protocol: head.header("git-protocol").map(str::to_owned),
        content_encoding: head.header("content-encoding").map(str::to_owned),
        chunked: head.is_chunked(),
        body_len: 0,
    };
    if let Some((user, expected)) = &shared.auth {
        let authorized = head
            .header("authorization")
            .and_then(|value| value.split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("basic") && token.trim() == expected
            });
        if !authorized {
            // A client waiting for "100 Continue" sends no body; any other body
            // is read so that the client gets to read the answer.
            if !head.expects_continue() {
                record.body_len = read_body(reader, &head)?.len();
            }
            record.status = 401;
            shared.record(record);
            return write_response(
                writer,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", "Basic realm=\"canopy-test\""),
                    ("Content-Type", "text/plain"),
                ],
                b"authentication required\n",
            );
        }
        record.user = Some(user.clone());
    }
    if head.expects_continue() {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(reader, &head)?;
    record.body_len = body.len();
    let (status, headers, response_body) =
        match run_backend(shared, &head, record.user.as_deref(), &body) {
            Ok(response) => response,
            Err(message) => (
                "502 Bad Gateway".to_owned(),
                vec![("Content-Type".to_owned(), "text/plain".to_owned())],
                format!("{message}\n").into_bytes(),
            ),
        };
    record.status = status
        .split_whitespace()
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    shared.record(record);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = if head.method == "HEAD" {
        &[][..]
    } else {
        &response_body
    };
    write_response(writer, &status, &headers, body)
}

fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_HEADER_LINE)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        let message = if line.is_empty() {
            "connection closed mid-request"
        } else {
            "line too long or unterminated"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, message));
    }
    let line = String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "header is not UTF-8"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    if reader.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let request_line = read_line(reader)?;
    let invalid = |message: &str| io::Error::new(io::ErrorKind::InvalidData, message.to_owned());
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(invalid("unsupported request line"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    }))
}

/// The request body, de-chunked; empty when the request has no body.
fn read_body(reader: &mut BufReader<TcpStream>, head: &Head) -> io::Result<Vec<u8>> {
    let too_large = || io::Error::new(io::ErrorKind::FileTooLarge, "request body too large");
    let invalid = |message: &str| io::Error::new(io::ErrorKind::InvalidData, message.to_owned());
    let mut body = Vec::new();
    if head.is_chunked() {
        loop {
            let line = read_line(reader)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader)?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(too_large());
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            if !read_line(reader)?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }
    if let Some(length) = head.header("content-length") {
        let length: usize = length.parse().map_err(|_| invalid("bad Content-Length"))?;
        if length > MAX_BODY {
            return Err(too_large());
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

type CgiResponse = (String, Vec<(String, String)>, Vec<u8>);

/// Runs `git http-backend` for one request: its status line, headers and body.
fn run_backend(
    shared: &Shared,
    head: &Head,
    user: Option<&str>,
    body: &[u8],
) -> Result<CgiResponse, String> {
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
        .env("REQUEST_METHOD", &head.method)
        .env("PATH_INFO", percent_decode(&head.path))
        .env("QUERY_STRING", &head.query);
    if head.has_body() {
        // Known even for chunked requests: the body was read in full.
        command.env("CONTENT_LENGTH", body.len().to_string());
    }
    if let Some(content_type) = head.header("content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    if let Some(user) = user {
        command.env("AUTH_TYPE", "Basic").env("REMOTE_USER", user);
    }
    // The remaining headers as HTTP_*: `Git-Protocol` (HTTP_GIT_PROTOCOL) is how
    // protocol v2 reaches upload-pack, and http-backend inflates gzip bodies
    // itself when HTTP_CONTENT_ENCODING says so.
    for (name, value) in &head.headers {
        let skip = [
            "authorization",
            "proxy-authorization",
            "content-type",
            "content-length",
            "transfer-encoding",
            "connection",
            "expect",
        ];
        if !skip.contains(&name.as_str()) {
            command.env(
                format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")),
                value,
            );
        }
    }
    let output = run_with_stdin(&mut command, body, BACKEND_TIMEOUT)?;
    if !output.stderr.is_empty() {
        eprintln!(
            "git http-backend ({} {}): {}",
            head.method,
            head.path,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    parse_cgi(&output.stdout).ok_or_else(|| {
        format!(
            "git http-backend exited with {} without a CGI response: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Splits CGI output into status line (from `Status:`, else 200), the other
/// headers (any `Content-Length` dropped: the caller sets its own) and body.
fn parse_cgi(output: &[u8]) -> Option<CgiResponse> {
    let (head_len, sep_len) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| {
            output
                .windows(sep.len())
                .position(|w| w == *sep)
                .map(|at| (at, sep.len()))
        })
        .min()?;
    let head = std::str::from_utf8(&output[..head_len]).ok()?;
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            status = value.to_owned();
        } else if !name.eq_ignore_ascii_case("content-length") {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    Some((status, headers, output[head_len + sep_len..].to_vec()))
}

fn write_response(
    writer: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut response = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut response = response.into_bytes();
    response.extend_from_slice(body);
    writer.write_all(&response)?;
    writer.flush()
}

fn percent_decode(path: &str) -> OsString {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    OsString::from_vec(decoded)
}

/// Standard base64 with padding, for comparing `Authorization: Basic` values.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
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

/// Sends `signal` to the process group `pgid` with the `kill` program (the
/// crate forbids the unsafe `libc::kill`). False if no process got it.
fn signal_group(pgid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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
    signal_group(pgid, "TERM");
    if wait_until(child, Instant::now() + STOP_GRACE).is_none() {
        signal_group(pgid, "KILL");
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
            signal_group(pgid, "KILL");
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
