//! The embedded Redis launcher against a real `redis-server` (from PATH), and the
//! `RedisProc` harness built on it.

use crate::common;

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canopy::redis_launch::{EmbeddedRedis, LaunchError, LaunchOptions, MAX_SOCKET_PATH};
use common::process_gone;
use common::redis::{Persistence, RedisProc};
use redis::Value;

const TIMEOUT: Duration = Duration::from_secs(10);

fn options(dir: &Path) -> LaunchOptions {
    let mut options = LaunchOptions::new(dir);
    // Generous: the build machine is shared.
    options.startup_timeout = Duration::from_secs(30);
    options
}

/// Starts, retrying while a program just written by the test is "text file busy":
/// a fork in another test thread can hold its write descriptor for a moment.
fn try_start(options: &LaunchOptions) -> Result<EmbeddedRedis, LaunchError> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match EmbeddedRedis::start(options.clone()) {
            Err(LaunchError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

fn start(options: &LaunchOptions) -> EmbeddedRedis {
    try_start(options).unwrap_or_else(|e| panic!("start: {}", canopy::error_chain(&e)))
}

/// A blocking connection. A connect that a signal interrupted (EINTR: this
/// process reaps the servers it starts) is tried again; any other failure is
/// returned at once.
fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    let interrupted = std::io::Error::from_raw_os_error(libc::EINTR).to_string();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let connection =
            redis::Client::open(url).and_then(|c| c.get_connection_with_timeout(TIMEOUT));
        match connection {
            Err(e) if attempts < 3 && e.is_io_error() && e.to_string().contains(&interrupted) => {}
            Err(e) => return Err(e),
            Ok(connection) => {
                connection.set_read_timeout(Some(TIMEOUT))?;
                return Ok(connection);
            }
        }
    }
}

fn set(url: &str, key: &str, value: &str) {
    let mut connection = connect(url).expect("connect");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut connection)
        .expect("SET");
}

fn get(url: &str, key: &str) -> Option<String> {
    let mut connection = connect(url).expect("connect");
    redis::cmd("GET")
        .arg(key)
        .query(&mut connection)
        .expect("GET")
}

/// An executable `#!/bin/sh` script.
fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-redis-server");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

#[test]
fn serves_on_a_private_socket_in_its_dir_until_stopped() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("state").join("redis");
    let mut redis = start(&options(&dir));

    let dir = dir.canonicalize().expect("dir was created");
    assert_eq!(redis.dir(), dir);
    let mode = fs::metadata(&dir).expect("dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the AOF holds secrets: {mode:o}");
    let socket = dir.join("redis.sock");
    assert_eq!(redis.url(), format!("redis+unix://{}", socket.display()));
    assert!(socket.exists());

    let mut connection = connect(&redis.url()).expect("connect");
    let pong: String = redis::cmd("PING").query(&mut connection).expect("PING");
    assert_eq!(pong, "PONG");
    set(&redis.url(), "greeting", "hello");
    assert_eq!(get(&redis.url(), "greeting").as_deref(), Some("hello"));

    let pid = redis.pid();
    assert!(!process_gone(pid));
    redis.stop().expect("stop");
    assert!(process_gone(pid), "stop waits for the server and reaps it");
    assert!(!socket.exists(), "the socket is removed on shutdown");
    assert!(connect(&redis.url()).is_err(), "nothing answers any more");
    redis.stop().expect("a second stop does nothing");
}

#[test]
fn aof_keeps_keys_across_a_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut first = start(&options(temp.path()));
    set(&first.url(), "kept", "yes");
    first.stop().expect("stop");

    let second = start(&options(temp.path()));
    assert_eq!(second.url(), first.url());
    assert_eq!(get(&second.url(), "kept").as_deref(), Some("yes"));
}

#[test]
fn without_aof_a_restart_loses_keys() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut options = options(temp.path());
    options.append_only = false;
    let mut first = start(&options);
    set(&first.url(), "lost", "yes");
    first.stop().expect("stop");

    let second = start(&options);
    assert_eq!(get(&second.url(), "lost"), None);
}

#[test]
fn a_missing_redis_server_says_how_to_install_one_or_point_at_redis() {
    let temp = tempfile::tempdir().expect("temp dir");
    for program in [
        "/nonexistent/redis-server",
        "canopy-test-redis-server-not-on-path",
    ] {
        let mut options = options(temp.path());
        options.program = program.into();
        let error = try_start(&options).expect_err(program);
        assert!(matches!(error, LaunchError::NotFound { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with(program), "{message}");
        assert!(
            message.contains("apt-get install redis-server"),
            "{message}"
        );
        assert!(message.contains("brew install redis"), "{message}");
        assert!(message.contains("redis.url"), "{message}");
    }
}

#[test]
fn a_server_that_exits_at_once_fails_fast_with_its_status_and_log() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut options = options(temp.path());
    options.program = script(
        temp.path(),
        "echo \"fatal: cannot use config $1\" >&2\nexit 3",
    );
    let started = Instant::now();
    let error = try_start(&options).expect_err("the program exits");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, LaunchError::Exited { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("exited during startup"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(
        message.contains("fatal: cannot use config") && message.contains("redis.conf"),
        "the log tail shows what the server said: {message}"
    );

    options.program = "/bin/false".into();
    let message = try_start(&options).expect_err("false exits").to_string();
    assert!(message.contains("exit status: 1"), "{message}");
}

#[test]
fn a_server_that_never_answers_times_out_and_is_killed() {
    let temp = tempfile::tempdir().expect("temp dir");
    let pid_file = temp.path().join("fake.pid");
    let mut options = options(temp.path());
    options.program = script(
        temp.path(),
        &format!("echo $$ > '{}'\nexec sleep 60", pid_file.display()),
    );
    options.startup_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = try_start(&options).expect_err("nothing answers");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, LaunchError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("did not answer PING"), "{error}");
    let pid: u32 = fs::read_to_string(&pid_file)
        .expect("the script ran")
        .trim()
        .parse()
        .expect("a pid");
    assert!(process_gone(pid), "the unanswering program was killed");
}

#[test]
fn dropping_or_panicking_never_leaves_a_server_behind() {
    let temp = tempfile::tempdir().expect("temp dir");
    let redis = start(&options(&temp.path().join("dropped")));
    let pid = redis.pid();
    drop(redis);
    assert!(process_gone(pid), "drop stops and reaps the server");

    let pid = Cell::new(None);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let redis = start(&options(&temp.path().join("panicked")));
        pid.set(Some(redis.pid()));
        panic!("a failing test");
    }));
    assert!(panicked.is_err());
    let pid = pid.get().expect("the server started");
    assert!(process_gone(pid), "unwinding stops the server");
}

#[test]
fn a_dir_too_long_for_a_socket_falls_back_to_loopback_tcp() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("d".repeat(60)).join("e".repeat(60));
    assert!(dir.join("redis.sock").as_os_str().len() > MAX_SOCKET_PATH);
    let mut redis = start(&options(&dir));
    let url = redis.url();
    assert!(url.starts_with("redis://:"), "a password of its own: {url}");
    let shown = canopy::protocol::redact(&url);
    assert!(shown.starts_with("redis://127.0.0.1:"), "{shown}");
    assert!(!dir.join("redis.sock").exists());
    set(&url, "over", "tcp");
    assert_eq!(get(&url, "over").as_deref(), Some("tcp"));
    // Any other local user reaches the port, not the data.
    let mut anonymous = connect(&shown).expect("the port accepts connections");
    let refused = redis::cmd("GET")
        .arg("over")
        .query::<Option<String>>(&mut anonymous)
        .expect_err("no password, no data");
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    let password = url["redis://:".len()..url.find('@').expect("userinfo")].to_owned();
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    assert!(!log.contains(&password), "the log holds no password");
    redis.stop().expect("stop");
    assert!(connect(&url).is_err(), "the port is closed after stop");
}

#[test]
fn a_dir_with_spaces_quotes_and_url_characters_works() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("my \"state\" #1 %20?");
    let mut redis = start(&options(&dir));
    let url = redis.url();
    assert!(url.starts_with("redis+unix://"), "{url}");
    set(&url, "odd", "path");
    assert_eq!(get(&url, "odd").as_deref(), Some("path"));
    assert!(dir.join("redis.sock").exists(), "the socket is in that dir");
    redis.stop().expect("stop");

    let redis = start(&options(&dir));
    assert_eq!(
        get(&redis.url(), "odd").as_deref(),
        Some("path"),
        "AOF found"
    );
}

#[test]
fn a_live_server_in_the_same_dir_is_refused_not_replaced() {
    let temp = tempfile::tempdir().expect("temp dir");
    let first = start(&options(temp.path()));
    set(&first.url(), "owner", "first");

    let error = try_start(&options(temp.path())).expect_err("dir in use");
    assert!(
        matches!(error, LaunchError::AlreadyRunning { pid, .. } if pid == first.pid()),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&first.pid().to_string()),
        "{error}"
    );
    assert_eq!(
        get(&first.url(), "owner").as_deref(),
        Some("first"),
        "the first server still serves its socket"
    );
}

#[test]
fn redis_proc_kill_and_restart_keeps_or_wipes_data() {
    let mut redis = RedisProc::start();
    let url = redis.url();
    assert!(redis.dir().join("redis.sock").exists());
    assert_eq!(redis.cmd(&["SET", "k", "v"]), Value::Okay);
    let pid = redis.pid();

    redis.kill();
    assert!(process_gone(pid));
    assert!(connect(&url).is_err());

    redis.restart(Persistence::Keep);
    assert_ne!(redis.pid(), pid);
    assert_eq!(redis.url(), url);
    assert_eq!(
        redis.cmd(&["GET", "k"]),
        Value::BulkString(b"v".to_vec()),
        "acknowledged writes survive SIGKILL through the AOF"
    );

    redis.restart(Persistence::Wipe);
    assert_eq!(redis.url(), url);
    assert_eq!(redis.cmd(&["GET", "k"]), Value::Nil);
}

#[test]
fn redis_proc_pause_times_out_commands_until_resumed() {
    let response_timeout = Duration::from_millis(500);
    let mut redis = RedisProc::start();
    let connection = redis.conn();
    connection
        .set_read_timeout(Some(response_timeout))
        .expect("set timeout");
    let mut connection = connection;

    redis.pause();
    let started = Instant::now();
    let error = redis::cmd("PING")
        .query::<String>(&mut connection)
        .expect_err("a frozen server answers nothing");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));

    redis.resume();
    let mut fresh = redis.conn();
    fresh
        .set_read_timeout(Some(response_timeout))
        .expect("set timeout");
    let pong: String = redis::cmd("PING").query(&mut fresh).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn redis_proc_without_aof_loses_data_on_restart() {
    let mut redis = RedisProc::start_with(false);
    redis.cmd(&["SET", "k", "v"]);
    redis.restart(Persistence::Keep);
    assert_eq!(redis.cmd(&["GET", "k"]), Value::Nil);
}

#[tokio::test]
async fn redis_proc_async_connection_reaches_the_same_server() {
    let redis = RedisProc::start();
    let mut connection = redis.async_conn().await;
    redis::cmd("SET")
        .arg("from")
        .arg("async")
        .query_async::<()>(&mut connection)
        .await
        .expect("SET");
    assert_eq!(
        redis.cmd(&["GET", "from"]),
        Value::BulkString(b"async".to_vec())
    );
}
