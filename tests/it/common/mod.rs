//! Shared test harness: fixture repositories and the real `canopy` binary.

pub mod agent;
pub mod binary;
pub mod daemon;
pub mod git_server;
pub mod idp;
pub mod process;
pub mod reconcile;
pub mod redis;
pub mod sink;
pub mod tree_json;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A Git repository (with work tree, branch `main`, one deterministic commit)
/// holding the content of `src`, made by `fixtures/make-repo.sh`.
pub fn git_repo_from(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let status = Command::new(fixtures().join("make-repo.sh"))
        .arg(src)
        .arg(&repo)
        .status()
        .expect("run fixtures/make-repo.sh");
    assert!(
        status.success(),
        "make-repo.sh failed for {}",
        src.display()
    );
    dir
}

/// The path of the repository inside a directory made by [`git_repo_from`].
pub fn repo_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("repo")
}

/// Runs the real binary with `args`; stdout and stderr captured.
pub fn canopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .env_remove("CANOPY_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run canopy")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `files` (path, content) under `root`, creating directories.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("file paths have a parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write fixture file");
    }
}

/// Runs `git` in `repo` with deterministic identity and dates.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "canopy tests")
        .env("GIT_AUTHOR_EMAIL", "tests@canopy.invalid")
        .env("GIT_COMMITTER_NAME", "canopy tests")
        .env("GIT_COMMITTER_EMAIL", "tests@canopy.invalid")
        .env("GIT_AUTHOR_DATE", "2026-01-02T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-02T00:00:00Z")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// HMAC-SHA256 of `body` keyed with `secret`, as lowercase hex: how webhook
/// senders sign a delivery (GitHub's `X-Hub-Signature-256` and the generic
/// hook put `sha256=` before it, Gitea sends it bare) and how canopy signs the
/// reports it posts. Computed here with the `hmac` crate, never with canopy's
/// own code, so a test compares canopy against an independent signature.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit as _, Mac as _};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// How tests connect to their private Redis: no credentials, short timeouts.
pub fn store_options(url: &str, namespace: &str) -> canopy::protocol::RedisOptions {
    canopy::protocol::RedisOptions {
        url: canopy::protocol::RedisUrl::parse(url).expect("a test Redis URL"),
        username: None,
        password: None,
        namespace: namespace.to_owned(),
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(5),
        stream_maxlen: 1000,
    }
}

/// Polls `predicate` (every 10 ms) until it holds or `timeout` passes; whether it
/// held. For waiting on another process; never a bare sleep.
pub fn eventually(timeout: Duration, mut predicate: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`eventually`] for async tests: waits without blocking the runtime.
pub async fn eventually_async(timeout: Duration, mut predicate: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every path under `root` (relative, `/` for directories), not following
/// symlinks: what a directory holds, to see that nothing was added or left behind.
pub fn paths_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            // Gone since it was listed (another process's temporary file): it
            // was not there to stay.
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").display();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                out.push(format!("{rel}/"));
                dirs.push(path);
            } else {
                out.push(rel.to_string());
            }
        }
    }
    out.sort();
    out
}

/// Whether process `pid` no longer exists, not even as an unreaped zombie.
/// Linux: reads /proc.
pub fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// [`sign`] is what the webhook and report tests trust: it must be HMAC-SHA256
/// itself, not merely agree with canopy (RFC 4231, test case 2).
#[test]
fn sign_is_hmac_sha256() {
    assert_eq!(
        sign("Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
