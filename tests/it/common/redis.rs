//! [`RedisProc`]: a private `redis-server` per test, started by canopy's own
//! launcher ([`canopy::redis_launch`]) in a temp dir that lives as long as it does.
//!
//! A test can SIGKILL it, freeze it (SIGSTOP/SIGCONT) and restart it with or
//! without its data, always at the same URL, so clients reconnect to "the same
//! Redis" as they would in production. It always listens on a unix socket (its
//! temp dir is kept short for that): a loopback port could not be kept across a
//! restart. Stopped on drop, resumed first if frozen.
//!
//! Signals go through the `kill` program: the crate forbids `unsafe`, so no
//! `libc::kill`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use canopy::redis_launch::{EmbeddedRedis, LaunchOptions, MAX_SOCKET_PATH};
use tempfile::TempDir;

use super::{eventually, process_gone};

/// Generous: the build machine is shared and may be busy compiling.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect and response timeout of [`RedisProc::conn`]: a stuck test fails
/// instead of hanging.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`RedisProc::restart`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Same dir, same files: the AOF is replayed.
    Keep,
    /// The data files are removed first, as after a restart without persistence:
    /// keys, consumer groups, functions and ACL users are gone.
    Wipe,
}

pub struct RedisProc {
    redis: EmbeddedRedis,
    options: LaunchOptions,
    paused: bool,
    // Declared last, so dropped last: the server stops before its dir goes.
    dir: TempDir,
}

impl RedisProc {
    /// A server with AOF persistence.
    pub fn start() -> RedisProc {
        RedisProc::start_with(true)
    }

    pub fn start_with(append_only: bool) -> RedisProc {
        let dir = short_temp_dir();
        let mut options = LaunchOptions::new(dir.path());
        options.append_only = append_only;
        options.startup_timeout = START_TIMEOUT;
        let redis = launch(&options);
        assert!(
            redis.url().starts_with("redis+unix://"),
            "RedisProc needs a unix socket to keep its URL across restarts: {}",
            redis.url()
        );
        RedisProc {
            redis,
            options,
            paused: false,
            dir,
        }
    }

    pub fn url(&self) -> String {
        self.redis.url()
    }

    pub fn pid(&self) -> u32 {
        self.redis.pid()
    }

    pub fn dir(&self) -> &Path {
        self.redis.dir()
    }

    /// Makes every write durable before it is acknowledged: `appendfsync
    /// always` writes (and fsyncs) the AOF before any reply of the same event
    /// loop turn goes out, so whatever a client has seen survives
    /// [`kill`](Self::kill). The launcher's `everysec` usually writes before
    /// replying too, but may postpone the write by up to 2 s while a background
    /// fsync runs: a test that needs "seen means kept" sets this. Lasts until
    /// the next [`restart`](Self::restart) (which reads the launcher's config).
    pub fn fsync_always(&self) {
        self.cmd(&["CONFIG", "SET", "appendfsync", "always"]);
    }

    /// SIGKILL: no shutdown, no final AOF flush (what was written to the AOF
    /// file survives; see [`fsync_always`](Self::fsync_always) for what that
    /// is). Returns once the process is gone.
    pub fn kill(&mut self) {
        let pid = self.pid();
        signal(pid, "KILL");
        self.paused = false;
        // Reaps the dead child (no SHUTDOWN reaches a killed process).
        self.redis.stop().expect("reap the killed redis-server");
        assert!(
            eventually(Duration::from_secs(10), || process_gone(pid)),
            "redis-server {pid} still exists after SIGKILL"
        );
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&mut self) {
        signal(self.pid(), "STOP");
        self.paused = true;
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&mut self) {
        signal(self.pid(), "CONT");
        self.paused = false;
    }

    /// Stops the server (gracefully, unless [`kill`](Self::kill)ed before) and
    /// starts a new one on the same dir and URL.
    pub fn restart(&mut self, persistence: Persistence) {
        let url = self.url();
        if self.paused {
            self.resume();
        }
        self.redis.stop().expect("stop redis-server");
        if persistence == Persistence::Wipe {
            wipe_data(self.dir.path());
        }
        self.redis = launch(&self.options);
        assert_eq!(self.redis.url(), url, "restart keeps the URL");
    }

    /// A sync connection with connect and response timeouts.
    pub fn conn(&self) -> redis::Connection {
        let connection = redis::Client::open(self.url())
            .expect("launcher URL parses")
            .get_connection_with_timeout(CONN_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()));
        connection
            .set_read_timeout(Some(CONN_TIMEOUT))
            .expect("set read timeout");
        connection
            .set_write_timeout(Some(CONN_TIMEOUT))
            .expect("set write timeout");
        connection
    }

    pub async fn async_conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("launcher URL parses")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Runs one command on a new connection; panics on an error reply.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let (name, rest) = args.split_first().expect("a command name");
        let mut command = redis::cmd(name);
        for arg in rest {
            command.arg(*arg);
        }
        command
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        // A frozen server would sit out the whole stop grace before being killed.
        if self.paused {
            signal(self.pid(), "CONT");
        }
    }
}

fn launch(options: &LaunchOptions) -> EmbeddedRedis {
    EmbeddedRedis::start(options.clone()).unwrap_or_else(|e| {
        panic!(
            "start redis-server in {}: {}",
            options.dir.display(),
            canopy::error_chain(&e)
        )
    })
}

/// A temp dir whose socket path fits `sun_path`: under $TMPDIR when it is short
/// enough, else under /tmp.
fn short_temp_dir() -> TempDir {
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("redis-");
        builder
    };
    let dir = builder.tempdir().expect("temp dir");
    let socket = dir
        .path()
        .canonicalize()
        .expect("temp dir resolves")
        .join("redis.sock");
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        return dir;
    }
    builder.tempdir_in("/tmp").expect("temp dir in /tmp")
}

/// The files Redis persists to; the config, log and socket stay.
fn wipe_data(dir: &Path) {
    for name in ["appendonlydir", "appendonly.aof", "dump.rdb"] {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("remove {}: {e}", path.display())
            }
            _ => {}
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}
