//! The embedded Redis: a private `redis-server` started from PATH in the state dir.
//!
//! Owns one `redis-server` process per [`EmbeddedRedis`] and the files it keeps in
//! its directory: the generated `redis.conf`, the socket `redis.sock`, the pid
//! file, the AOF (`appendonlydir/`) and `redis.log`. The server listens on a unix
//! socket in that directory, or on a free loopback port when the socket path is
//! too long for `sun_path`; it never listens on a public address. It is stopped
//! gracefully (`SHUTDOWN`, which flushes the AOF) by [`EmbeddedRedis::stop`] or on
//! drop, and killed if it does not exit in time.
//!
//! `canopy run` uses it when no Redis URL is configured, and the test suite uses it
//! for a private server per test. It must not touch any Redis it did not start:
//! a live server left in the same directory is refused, never killed or adopted.
//! What is stored in the server (keys, functions, ACL users) is not its business.
//!
//! Synchronous std code: the daemon calls it before its runtime work starts, or
//! from `spawn_blocking`.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::protocol::{Secret, redact};

/// Longest absolute socket path used. `sun_path` holds 108 bytes on Linux and 104
/// on macOS, including the terminating NUL; longer paths fall back to TCP.
pub const MAX_SOCKET_PATH: usize = 100;

/// The program run by default, looked up on PATH.
pub const DEFAULT_PROGRAM: &str = "redis-server";

/// Oldest major version accepted: canopy loads its report check as a Function.
const MIN_MAJOR_VERSION: u32 = 7;

const CONFIG_FILE: &str = "redis.conf";
const SOCKET_FILE: &str = "redis.sock";
const PID_FILE: &str = "redis.pid";
const LOG_FILE: &str = "redis.log";

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(20);
/// Connect and reply timeout of one readiness probe or of the `SHUTDOWN` request,
/// so that a stopped or wedged server cannot stall a start or a stop.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a server gets to exit after `SHUTDOWN` before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Loopback ports tried: a port found free may be taken before the server binds it.
const PORT_ATTEMPTS: usize = 5;
/// Lines of `redis.log` quoted when the server fails to start.
const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of `redis.log` to find those lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// Redis never rotates its log; beyond this size the log is moved to `redis.log.1`
/// on start, so a long-lived state dir keeps at most about twice this.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// How to start an [`EmbeddedRedis`].
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// Directory for the socket, config, AOF files and log (created if missing, mode 0700).
    pub dir: PathBuf,
    /// The program to run; default "redis-server" looked up on PATH.
    pub program: PathBuf,
    /// AOF persistence (appendonly yes, appendfsync everysec). Default true.
    pub append_only: bool,
    /// How long to wait for the server to answer PING. Default 10s.
    pub startup_timeout: Duration,
}

impl LaunchOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LaunchOptions {
            dir: dir.into(),
            program: PathBuf::from(DEFAULT_PROGRAM),
            append_only: true,
            startup_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "{} not found{}: install it (Debian/Ubuntu: sudo apt-get install redis-server; \
         macOS: brew install redis) or set redis.url (CANOPY_REDIS_URL) to an existing Redis 7+",
        .program.display(),
        if is_bare_name(.program) { " on PATH" } else { "" }
    )]
    NotFound {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to {action} {}", .path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "a redis-server (pid {pid}) already serves {}: another canopy uses this directory, \
         or one was killed without stopping it; stop that server (kill {pid}) or use another directory",
        .dir.display()
    )]
    AlreadyRunning { dir: PathBuf, pid: u32 },
    #[error("failed to find a free loopback port")]
    FreePort {
        #[source]
        source: io::Error,
    },
    #[error("failed to start {}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} exited during startup ({status}); {log_tail}", .program.display())]
    Exited {
        program: PathBuf,
        status: ExitStatus,
        /// "last lines of <log>:" and those lines.
        log_tail: String,
    },
    // The last probe error is text, not a source: it is a symptom of the silence,
    // and redis-rs errors repeat their I/O cause in both message and source.
    #[error(
        "{} did not answer PING at {url} within {timeout:?} (last attempt: {last_attempt}); \
         {log_tail}",
        .program.display()
    )]
    Timeout {
        program: PathBuf,
        url: String,
        timeout: Duration,
        last_attempt: String,
        /// "last lines of <log>:" and those lines.
        log_tail: String,
    },
    #[error(
        "another server answers at {url} (its config file is {found:?}, not {})",
        .expected.display()
    )]
    Stranger {
        url: String,
        expected: PathBuf,
        found: String,
    },
    #[error(
        "{} is Redis {found}; canopy needs Redis {MIN_MAJOR_VERSION}.0 or newer (it uses Functions): \
         upgrade it or set redis.url (CANOPY_REDIS_URL) to an existing Redis 7+",
        .program.display()
    )]
    UnsupportedVersion { program: PathBuf, found: String },
    #[error("failed to stop redis-server (pid {pid})")]
    Stop {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// A running private `redis-server`, stopped on drop.
#[derive(Debug)]
pub struct EmbeddedRedis {
    /// `None` once stopped.
    child: Option<Child>,
    pid: u32,
    dir: PathBuf,
    url: String,
}

impl EmbeddedRedis {
    /// Starts a server in `options.dir` and returns once it answers PING and is
    /// known to be Redis 7+.
    pub fn start(options: LaunchOptions) -> Result<EmbeddedRedis, LaunchError> {
        let dir = prepare_dir(&options.dir)?;
        if let Some(pid) = live_server_in(&dir) {
            // Two servers on one AOF would corrupt it; removing the socket of a
            // live one would only hide it.
            return Err(LaunchError::AlreadyRunning { dir, pid });
        }
        let socket = dir.join(SOCKET_FILE);
        let use_socket = socket.as_os_str().len() <= MAX_SOCKET_PATH;
        // A unix socket is guarded by its directory's mode; a loopback port is
        // open to every local user, so it gets a password of its own.
        let password = if use_socket {
            Secret::new(String::new())
        } else {
            generate_password()?
        };
        let deadline = Instant::now() + options.startup_timeout;
        let attempts = if use_socket { 1 } else { PORT_ATTEMPTS };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let listen = if use_socket {
                Listen::Unix(socket.clone())
            } else {
                Listen::Tcp {
                    port: free_port()?,
                    password: password.clone(),
                }
            };
            match start_once(&options, &dir, &listen, deadline) {
                Ok(redis) => return Ok(redis),
                // Exited or Stranger on TCP: most likely the port was taken between
                // finding it free and the server binding it.
                Err(error @ (LaunchError::Exited { .. } | LaunchError::Stranger { .. }))
                    if attempt < attempts && Instant::now() < deadline =>
                {
                    tracing::debug!(
                        dir = %dir.display(),
                        error = %crate::error_chain(&error),
                        "embedded redis did not start on a loopback port, trying another"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A URL redis-rs accepts: `redis+unix:///abs/path/redis.sock` or `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Graceful stop: SHUTDOWN (AOF is flushed), wait up to 5 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Result<(), LaunchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = self.pid;
        let stop_error = |source| LaunchError::Stop { pid, source };
        if let Some(status) = child.try_wait().map_err(stop_error)? {
            tracing::warn!(dir = %self.dir.display(), pid, %status, "embedded redis had already exited");
            return Ok(());
        }
        let exited = match request_shutdown(&self.url) {
            // Redis refused (e.g. it could not write the AOF): waiting would not help.
            Err(refusal) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    pid,
                    error = %refusal,
                    "embedded redis refused SHUTDOWN; killing it"
                );
                None
            }
            // Also when the request could not be sent: a stopped (SIGSTOP) or
            // wedged server gets the same grace before it is killed.
            Ok(()) => wait_exit(&mut child, STOP_GRACE).map_err(stop_error)?,
        };
        match exited {
            Some(status) => {
                tracing::info!(dir = %self.dir.display(), url = %redact(&self.url), pid, %status, "embedded redis stopped");
            }
            None => {
                kill(&mut child).map_err(stop_error)?;
                tracing::warn!(dir = %self.dir.display(), url = %redact(&self.url), pid, "embedded redis killed");
            }
        }
        Ok(())
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        // A panicking test or a failed daemon start must not leave a server behind.
        if let Err(error) = self.stop() {
            tracing::warn!(error = %crate::error_chain(&error), "failed to stop embedded redis");
        }
    }
}

enum Listen {
    Unix(PathBuf),
    Tcp { port: u16, password: Secret },
}

impl Listen {
    /// The URL to connect with: for TCP it carries the password, so it is shown
    /// only through `protocol::redact`.
    fn url(&self) -> String {
        match self {
            Listen::Unix(socket) => unix_url(socket),
            Listen::Tcp { port, password } => {
                format!("redis://:{}@127.0.0.1:{port}/0", password.expose())
            }
        }
    }
}

/// A password for the TCP fallback ([`Secret::random`]).
fn generate_password() -> Result<Secret, LaunchError> {
    Secret::random().map_err(|e| LaunchError::File {
        action: "generate a password for",
        path: PathBuf::from("the embedded Redis"),
        source: io::Error::other(e.to_string()),
    })
}

/// One start on `listen`; the child is killed on any failure.
fn start_once(
    options: &LaunchOptions,
    dir: &Path,
    listen: &Listen,
    deadline: Instant,
) -> Result<EmbeddedRedis, LaunchError> {
    let config = dir.join(CONFIG_FILE);
    let log = dir.join(LOG_FILE);
    if let Listen::Unix(socket) = listen {
        // Left by a server that was killed; redis-server refuses to bind over it.
        remove_if_exists(socket, "remove the stale socket")?;
    }
    write_private(
        &config,
        &config_text(dir, listen, options.append_only),
        "write",
    )?;
    let (log_file, log_start) = open_log(&log)?;
    let log_clone = log_file.try_clone().map_err(|source| LaunchError::File {
        action: "open",
        path: log.clone(),
        source,
    })?;
    let spawned = Command::new(&options.program)
        .arg(&config)
        .stdin(Stdio::null())
        // Early errors (a bad config line) go to stderr before `logfile` is opened.
        .stdout(log_file)
        .stderr(log_clone)
        // Its own process group: a Ctrl-C in the terminal must reach canopy only,
        // which then stops Redis last, after its own graceful shutdown.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            return Err(LaunchError::NotFound {
                program: options.program.clone(),
                source,
            });
        }
        Err(source) => {
            return Err(LaunchError::Spawn {
                program: options.program.clone(),
                source,
            });
        }
    };
    let url = listen.url();
    let ready = wait_ready(&mut child, &url, deadline).and_then(|info| {
        check_server(&info, &url, &config)?;
        check_version(&info, &options.program)?;
        Ok(())
    });
    let failure = match ready {
        Ok(()) => {
            let pid = child.id();
            tracing::info!(dir = %dir.display(), url = %redact(&url), pid, "embedded redis started");
            return Ok(EmbeddedRedis {
                child: Some(child),
                pid,
                dir: dir.to_path_buf(),
                url,
            });
        }
        Err(failure) => failure,
    };
    // A server that failed to start has taken no writes: killing it loses nothing.
    if !matches!(child.try_wait(), Ok(Some(_))) {
        let _ = kill(&mut child);
    }
    let log_tail = log_tail(&log, log_start);
    Err(match failure {
        Failure::Exited(status) => LaunchError::Exited {
            program: options.program.clone(),
            status,
            log_tail,
        },
        Failure::Timeout(last_attempt) => LaunchError::Timeout {
            program: options.program.clone(),
            url: redact(&url),
            timeout: options.startup_timeout,
            last_attempt,
            log_tail,
        },
        Failure::Launch(error) => error,
    })
}

enum Failure {
    Exited(ExitStatus),
    /// The last probe error.
    Timeout(String),
    Launch(LaunchError),
}

impl From<LaunchError> for Failure {
    fn from(error: LaunchError) -> Self {
        Failure::Launch(error)
    }
}

/// Polls until the server answers PING, then returns its `INFO server` text.
fn wait_ready(child: &mut Child, url: &str, deadline: Instant) -> Result<String, Failure> {
    let mut last_error = String::from("none");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(Failure::Exited(status)),
            Ok(None) => {}
            // Cannot happen for our own unreaped child; the probe below decides.
            Err(error) => tracing::debug!(%error, "cannot poll embedded redis"),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::Timeout(last_error));
        }
        // Refused connections, a missing socket and `-LOADING` (a large AOF being
        // replayed) all mean "not yet".
        match probe(url, remaining.min(PROBE_TIMEOUT)) {
            Ok(info) => return Ok(info),
            Err(error) => last_error = error.to_string(),
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn probe(url: &str, timeout: Duration) -> redis::RedisResult<String> {
    let mut connection = connect(url, timeout)?;
    redis::cmd("PING").query::<String>(&mut connection)?;
    let info: Vec<u8> = redis::cmd("INFO").arg("server").query(&mut connection)?;
    Ok(String::from_utf8_lossy(&info).into_owned())
}

fn connect(url: &str, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let connection = redis::Client::open(url)?.get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    Ok(connection)
}

/// The server that answered must be the one started with our config: on TCP a
/// stranger may have taken the port first.
fn check_server(info: &str, url: &str, config: &Path) -> Result<(), LaunchError> {
    let found = info_field(info, "config_file").unwrap_or_default();
    if found == config.to_string_lossy() {
        return Ok(());
    }
    Err(LaunchError::Stranger {
        url: redact(url),
        expected: config.to_path_buf(),
        found: found.to_owned(),
    })
}

fn check_version(info: &str, program: &Path) -> Result<(), LaunchError> {
    let found = info_field(info, "redis_version").unwrap_or("unknown");
    let major = found.split('.').next().and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_MAJOR_VERSION => Ok(()),
        _ => Err(LaunchError::UnsupportedVersion {
            program: program.to_path_buf(),
            found: found.to_owned(),
        }),
    }
}

/// A `name:value` line of an `INFO` reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim_end())
    })
}

/// Sends `SHUTDOWN`. `Err` only when Redis answered with an error: success closes
/// the connection without a reply, and a failure to connect or to read is left to
/// the wait that follows.
fn request_shutdown(url: &str) -> Result<(), redis::RedisError> {
    let Ok(mut connection) = connect(url, PROBE_TIMEOUT) else {
        return Ok(());
    };
    match redis::cmd("SHUTDOWN").query::<()>(&mut connection) {
        Err(error) if error.code().is_some() => Err(error),
        _ => Ok(()),
    }
}

/// Waits up to `grace` for the child to exit; its status, or `None` if it still runs.
fn wait_exit(child: &mut Child, grace: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILL, then reap, so no zombie is left either.
fn kill(child: &mut Child) -> io::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Creates the directory (mode 0700: the AOF holds app secrets) and returns its
/// canonical path, which the config, the socket URL and the identity check share.
fn prepare_dir(dir: &Path) -> Result<PathBuf, LaunchError> {
    let file_error = |action, source| LaunchError::File {
        action,
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| file_error("create the directory", source))?;
    // An existing directory keeps its mode otherwise.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| file_error("restrict the permissions of", source))?;
    dir.canonicalize()
        .map_err(|source| file_error("resolve", source))
}

/// The pid of a live server whose working directory is `dir`, from its pid file.
/// Redis chdirs to its `dir`, so the check survives pid reuse. Linux only (it
/// reads /proc); elsewhere nothing is found.
fn live_server_in(dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    (cwd == dir).then_some(pid)
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, LaunchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| LaunchError::FreePort { source })
}

fn config_text(dir: &Path, listen: &Listen, append_only: bool) -> Vec<u8> {
    let mut text =
        b"# Written by canopy on every start of the embedded Redis; edits are lost.\n".to_vec();
    let mut line = |parts: &[&[u8]]| {
        text.extend(parts.join(&b' '));
        text.push(b'\n');
    };
    line(&[b"daemonize", b"no"]);
    line(&[b"dir", &quote(dir)]);
    line(&[b"pidfile", &quote(&dir.join(PID_FILE))]);
    line(&[b"logfile", &quote(&dir.join(LOG_FILE))]);
    line(&[b"bind", b"127.0.0.1"]);
    line(&[b"protected-mode", b"yes"]);
    match listen {
        Listen::Unix(socket) => {
            line(&[b"port", b"0"]);
            line(&[b"unixsocket", &quote(socket)]);
            line(&[b"unixsocketperm", b"700"]);
        }
        Listen::Tcp { port, password } => {
            line(&[b"port", port.to_string().as_bytes()]);
            line(&[b"requirepass", password.expose().as_bytes()]);
        }
    }
    line(&[b"appendonly", if append_only { b"yes" } else { b"no" }]);
    line(&[b"appendfsync", b"everysec"]);
    // No RDB snapshots: the AOF is the only persistence, and none without it.
    line(&[b"save", b"\"\""]);
    text
}

/// A path as a double-quoted redis.conf argument: any byte a line or a quote
/// could break becomes a `\xHH` escape, which Redis decodes.
fn quote(path: &Path) -> Vec<u8> {
    let mut quoted = vec![b'"'];
    for &byte in path.as_os_str().as_bytes() {
        let plain = byte == b' ' || (byte.is_ascii_graphic() && byte != b'"' && byte != b'\\');
        if plain {
            quoted.push(byte);
        } else {
            quoted.extend(format!("\\x{byte:02x}").as_bytes());
        }
    }
    quoted.push(b'"');
    quoted
}

/// `redis+unix://` with the path percent-encoded, so that any path (spaces, `#`,
/// non-UTF-8 bytes) survives URL parsing.
fn unix_url(socket: &Path) -> String {
    let mut url = String::from("redis+unix://");
    for &byte in socket.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url
}

/// A name without a slash, which `Command` looks up on PATH.
fn is_bare_name(program: &Path) -> bool {
    !program.as_os_str().as_bytes().contains(&b'/')
}

fn remove_if_exists(path: &Path, action: &'static str) -> Result<(), LaunchError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(LaunchError::File {
            action,
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

fn write_private(path: &Path, content: &[u8], action: &'static str) -> Result<(), LaunchError> {
    let file_error = |source| LaunchError::File {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error)?;
    io::Write::write_all(&mut file, content).map_err(file_error)
}

/// Opens the log for appending (rotating it when large) and returns its length
/// before this start, where the lines of this start begin.
fn open_log(log: &Path) -> Result<(File, u64), LaunchError> {
    let file_error = |action, source| LaunchError::File {
        action,
        path: log.to_path_buf(),
        source,
    };
    if fs::metadata(log).is_ok_and(|meta| meta.len() > LOG_ROTATE_BYTES) {
        fs::rename(log, log.with_extension("log.1"))
            .map_err(|source| file_error("rotate", source))?;
    }
    let file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log)
        .map_err(|source| file_error("open", source))?;
    let start = file
        .metadata()
        .map_err(|source| file_error("open", source))?
        .len();
    Ok((file, start))
}

/// "last lines of <log>:" and the lines written to the log since `start`, each
/// on its own indented line, for an error message.
fn log_tail(log: &Path, start: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(log).and_then(|mut file| {
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(
            start.max(len.saturating_sub(LOG_TAIL_BYTES)),
        ))?;
        file.read_to_end(&mut bytes)
    });
    let mut tail = format!("last lines of {}:", log.display());
    if let Err(error) = read {
        let _ = write!(tail, " (unreadable: {error})");
        return tail;
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        tail.push_str(" (none)");
    }
    for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
        tail.push_str("\n    ");
        tail.push_str(line);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_url_round_trips_through_redis_rs() {
        for path in [
            "/tmp/canopy/redis.sock",
            "/tmp/with space/#hash?q=1%/redis.sock",
        ] {
            let url = unix_url(Path::new(path));
            let client = redis::Client::open(url.as_str()).expect("valid url");
            assert_eq!(
                client.get_connection_info().addr(),
                &redis::ConnectionAddr::Unix(PathBuf::from(path)),
                "{url}"
            );
        }
        assert_eq!(
            unix_url(Path::new("/var/lib/canopy/redis/redis.sock")),
            "redis+unix:///var/lib/canopy/redis/redis.sock"
        );
    }

    #[test]
    fn config_quotes_paths_that_would_break_a_line() {
        let dir = Path::new("/tmp/a \"b\"\\c\nport 6379");
        let text = config_text(dir, &Listen::Unix(dir.join(SOCKET_FILE)), true);
        let text = String::from_utf8(text).expect("ascii");
        assert!(
            text.contains("dir \"/tmp/a \\x22b\\x22\\x5cc\\x0aport 6379\"\n"),
            "{text}"
        );
        assert!(text.contains("\nport 0\n"), "{text}");
        assert!(!text.contains("\nport 6379"), "{text}");
        assert!(text.contains("\nappendonly yes\n"), "{text}");
        assert!(text.contains("\nunixsocketperm 700\n"), "{text}");
    }

    #[test]
    fn tcp_config_binds_loopback_only() {
        let listen = Listen::Tcp {
            port: 40001,
            password: Secret::new("0123abcd"),
        };
        let text = config_text(Path::new("/d"), &listen, false);
        let text = String::from_utf8(text).expect("ascii");
        assert!(text.contains("\nrequirepass 0123abcd\n"), "{text}");
        assert_eq!(listen.url(), "redis://:0123abcd@127.0.0.1:40001/0");
        assert!(text.contains("\nbind 127.0.0.1\n"), "{text}");
        assert!(text.contains("\nprotected-mode yes\n"), "{text}");
        assert!(text.contains("\nport 40001\n"), "{text}");
        assert!(text.contains("\nappendonly no\n"), "{text}");
        assert!(!text.contains("unixsocket"), "{text}");
    }

    #[test]
    fn versions_before_7_are_refused_by_name() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        let program = Path::new("redis-server");
        assert!(check_version(&info("7.0.15"), program).is_ok());
        assert!(check_version(&info("8.2.1"), program).is_ok());
        for old in ["6.2.14", "garbage"] {
            let error = check_version(&info(old), program).expect_err(old);
            let message = error.to_string();
            assert!(message.contains(&format!("is Redis {old}")), "{message}");
            assert!(message.contains("needs Redis 7.0 or newer"), "{message}");
        }
        let error = check_version("# Server\r\n", program).expect_err("no version");
        assert!(error.to_string().contains("is Redis unknown"), "{error}");
    }

    #[test]
    fn a_stranger_on_the_port_is_detected() {
        let config = Path::new("/state/redis/redis.conf");
        let ours = "# Server\r\nconfig_file:/state/redis/redis.conf\r\n";
        assert!(check_server(ours, "redis://127.0.0.1:1/0", config).is_ok());
        let theirs = "# Server\r\nconfig_file:/etc/redis/redis.conf\r\n";
        let error = check_server(theirs, "redis://127.0.0.1:1/0", config).expect_err("stranger");
        assert!(
            error.to_string().contains("/etc/redis/redis.conf"),
            "{error}"
        );
        assert!(check_server("# Server\r\nconfig_file:\r\n", "u", config).is_err());
    }

    #[test]
    fn log_tail_quotes_only_the_last_lines_of_this_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(LOG_FILE);
        fs::write(&log, "an earlier run\n").expect("write log");
        let start = fs::metadata(&log).expect("log").len();
        let lines: String = (1..=30).map(|n| format!("line {n}\n\n")).collect();
        fs::write(&log, format!("an earlier run\n{lines}")).expect("write log");

        let tail = log_tail(&log, start);
        assert!(tail.starts_with(&format!("last lines of {}:\n    line 11\n", log.display())));
        assert!(tail.ends_with("\n    line 30"), "{tail}");
        assert_eq!(tail.lines().count(), 1 + LOG_TAIL_LINES, "{tail}");
        assert!(!tail.contains("earlier"), "{tail}");

        let nothing = log_tail(&log, fs::metadata(&log).expect("log").len());
        assert!(nothing.ends_with(": (none)"), "{nothing}");
    }

    #[test]
    fn not_found_says_how_to_fix_it() {
        let source = || io::Error::from(io::ErrorKind::NotFound);
        let bare = LaunchError::NotFound {
            program: PathBuf::from("redis-server"),
            source: source(),
        };
        assert!(
            bare.to_string()
                .starts_with("redis-server not found on PATH: install it"),
            "{bare}"
        );
        let path = LaunchError::NotFound {
            program: PathBuf::from("/opt/redis/bin/redis-server"),
            source: source(),
        };
        assert!(
            path.to_string()
                .starts_with("/opt/redis/bin/redis-server not found: install it"),
            "{path}"
        );
    }
}
