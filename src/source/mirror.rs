//! The local bare mirror of the tracked repository: created on first use, fetched
//! with gix, repaired by re-cloning when it is corrupt, and repacked so that poll
//! cost stays flat (gix never repacks; notes/gix.md).
//!
//! gix is blocking: call these from a blocking thread, never an async worker.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use gix::bstr::ByteSlice;
use gix::remote::Direction;

use super::url::{Credentials, RepoUrl};
use super::{SourceError, diff};
use crate::tree::{Change, GitTree};

/// Where the tracked ref lands in the mirror.
const BRANCH_REF: &str = "refs/canopy/branch";
const TAG_REF: &str = "refs/canopy/tag";
/// Connecting to a `git://` server never takes longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Past this many packs, a fetch is followed by a repack (each fetch adds one).
const MAX_PACKS: usize = 16;
/// A repack merges the small packs of recent fetches: seconds at most. One
/// that takes longer (a stuck disk, a huge mirror) is killed, and the mirror
/// stays as it was (git swaps packs in only when done); the next cycle retries.
const REPACK_TIMEOUT: Duration = Duration::from_secs(300);

/// What to mirror and how.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    pub url: RepoUrl,
    /// A branch, a tag, a full `refs/...` name, `HEAD` (the remote's default
    /// branch) or a full commit id.
    pub reference: String,
    /// HTTP(S) credentials; those embedded in the URL are used when this is `None`.
    pub credentials: Option<Credentials>,
    /// Whole-fetch deadline.
    pub timeout: Duration,
    /// The bare repository's directory.
    pub dir: PathBuf,
}

pub struct Mirror {
    options: MirrorOptions,
    repo: gix::ThreadSafeRepository,
    /// Set while a fetch runs (its thread may outlive a timed-out call) or a
    /// repack does.
    busy: Arc<AtomicBool>,
}

/// The right to run the one fetch or repack of a mirror; released on drop.
struct Slot(Arc<AtomicBool>);

impl Slot {
    fn take(busy: &Arc<AtomicBool>) -> Option<Slot> {
        busy.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Slot(Arc::clone(busy)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The tracked ref, as understood from the configured string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tracked {
    /// A branch or tag name (or full ref name): whichever the remote has.
    Name(String),
    Commit(gix::ObjectId),
}

impl Mirror {
    /// Opens the mirror in `options.dir`, creating an empty bare repository first if
    /// there is none. Nothing is fetched yet.
    pub fn open(options: MirrorOptions) -> Result<Mirror, SourceError> {
        let has_credentials =
            options.credentials.is_some() || options.url.embedded_credentials().is_some();
        if has_credentials && options.url.as_str().starts_with("http://") {
            // A token sent over plain HTTP is a token given away.
            return Err(SourceError::InsecureCredentials {
                url: options.url.to_string(),
            });
        }
        // Before this process fetches, anything in flight there is a
        // leftover of one that was killed (see `sweep`).
        sweep(&options.dir, Sweep::Everything);
        let repo = open_or_init(&options.dir)?;
        Ok(Mirror {
            options,
            repo,
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn url(&self) -> &RepoUrl {
        &self.options.url
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// The tracked ref as configured.
    pub fn reference(&self) -> &str {
        &self.options.reference
    }

    /// Fetches the tracked ref and returns the commit it points to. A pinned
    /// commit that the mirror already has costs no network round trip.
    pub fn fetch(&self) -> Result<gix::ObjectId, SourceError> {
        let tracked = tracked(&self.options.reference);
        if let Tracked::Commit(id) = &tracked
            && self.repo.to_thread_local().find_commit(*id).is_ok()
        {
            return Ok(*id);
        }
        let specs = match &tracked {
            Tracked::Name(name) if name.starts_with("refs/") || name == "HEAD" => {
                vec![format!("+{name}:{BRANCH_REF}")]
            }
            Tracked::Name(name) => vec![
                format!("+refs/heads/{name}:{BRANCH_REF}"),
                format!("+refs/tags/{name}:{TAG_REF}"),
            ],
            Tracked::Commit(_) => vec![
                "+refs/heads/*:refs/canopy/all/heads/*".to_owned(),
                "+refs/tags/*:refs/canopy/all/tags/*".to_owned(),
            ],
        };
        let mappings = self.fetch_with_deadline(specs)?;
        let repo = self.repo.to_thread_local();
        let tip = match tracked {
            Tracked::Commit(id) if repo.has_object(id) => id,
            Tracked::Commit(id) => {
                return Err(SourceError::RefNotFound {
                    url: self.options.url.to_string(),
                    reference: id.to_string(),
                });
            }
            Tracked::Name(name) => {
                let found = [BRANCH_REF, TAG_REF]
                    .iter()
                    .find_map(|local| mappings.iter().find(|(l, _)| l == local).map(|(_, id)| *id));
                let Some(id) = found else {
                    return Err(SourceError::RefNotFound {
                        url: self.options.url.to_string(),
                        reference: name,
                    });
                };
                id
            }
        };
        // The objects were just fetched: a tip that does not peel to a commit is a
        // misconfigured ref (a tag of a tree), not a broken mirror to re-clone.
        peel_to_commit(&repo, tip).map_err(|_| SourceError::NotACommit {
            url: self.options.url.to_string(),
            reference: self.options.reference.clone(),
        })
    }

    /// Runs the fetch on its own thread so that a stalled remote cannot hold the
    /// caller past the deadline; the thread is interrupted and finishes on its own.
    fn fetch_with_deadline(
        &self,
        specs: Vec<String>,
    ) -> Result<Vec<(String, gix::ObjectId)>, SourceError> {
        // A fetch that timed out may still be running: never start a second one.
        let slot = Slot::take(&self.busy).ok_or(SourceError::Busy)?;
        let interrupt = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel(1);
        let repo = self.repo.clone();
        let url = self.options.url.clone();
        let credentials = self
            .options
            .credentials
            .clone()
            .or_else(|| url.embedded_credentials().cloned());
        let stop = Arc::clone(&interrupt);
        let timeout = self.options.timeout;
        let dir = self.options.dir.clone();
        std::thread::Builder::new()
            .name("canopy-fetch".to_owned())
            .spawn(move || {
                let result = fetch_refspecs(
                    &repo.to_thread_local(),
                    &url,
                    &specs,
                    credentials,
                    timeout,
                    &stop,
                );
                if result.is_err() {
                    // Still holding the slot: nothing else writes there now.
                    sweep(&dir, Sweep::PacksOnly);
                }
                // Free before answering, so the caller's next fetch finds it free.
                drop(slot);
                let _ = tx.send(result);
            })
            .map_err(|e| SourceError::Io {
                what: "failed to start the fetch thread".to_owned(),
                source: e,
            })?;
        match rx.recv_timeout(self.options.timeout) {
            Ok(result) => result.map_err(|source| {
                let source = scrub(source, self.secret());
                // gix reports a ref missing on the remote only as this message.
                if source.0.contains("None of the refspec") {
                    SourceError::RefNotFound {
                        url: self.options.url.to_string(),
                        reference: self.options.reference.clone(),
                    }
                } else {
                    SourceError::Fetch {
                        url: self.options.url.to_string(),
                        source,
                    }
                }
            }),
            Err(_) => {
                interrupt.store(true, Ordering::Relaxed);
                Err(SourceError::Timeout {
                    url: self.options.url.to_string(),
                    timeout: self.options.timeout,
                })
            }
        }
    }

    fn secret(&self) -> Option<String> {
        self.options
            .credentials
            .as_ref()
            .or(self.options.url.embedded_credentials())
            .map(|c| c.token.expose().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// The snapshot of `commit`.
    pub fn tree(&self, commit: gix::ObjectId) -> Result<GitTree, SourceError> {
        GitTree::at_commit(self.repo.clone(), &self.options.dir, commit).map_err(|source| {
            SourceError::Local {
                dir: self.options.dir.clone(),
                source: Box::new(source),
            }
        })
    }

    /// The changes from `old` to `new` (commits), or `None` if the diff holds a
    /// path that is not UTF-8 (rescan in full).
    pub fn diff(
        &self,
        old: gix::ObjectId,
        new: gix::ObjectId,
    ) -> Result<Option<Vec<Change>>, SourceError> {
        let repo = self.repo.to_thread_local();
        let tree_of = |id| -> Result<gix::ObjectId, gix::Error> {
            Ok(repo.find_commit(id)?.tree_id()?.detach())
        };
        let (old_tree, new_tree) = (tree_of(old), tree_of(new));
        let result = match (old_tree, new_tree) {
            (Ok(a), Ok(b)) => diff::diff_trees(&repo, a, b),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        result.map_err(|source| self.local_error(source))
    }

    /// Whether the mirror has `commit` (a previous poll's commit may be gone after
    /// a re-clone or a force-push).
    pub fn has_commit(&self, commit: gix::ObjectId) -> bool {
        self.repo.to_thread_local().find_commit(commit).is_ok()
    }

    /// Number of pack files: each fetch adds one.
    pub fn pack_count(&self) -> usize {
        std::fs::read_dir(self.options.dir.join("objects/pack"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Consolidates packs when fetches have accumulated too many; returns whether
    /// it did. Uses `git repack --geometric` (git 2.33+), which runs no hooks or
    /// filters.
    pub fn maintain(&mut self) -> Result<bool, SourceError> {
        if self.pack_count() <= MAX_PACKS {
            return Ok(false);
        }
        // Not while a timed-out fetch still writes to the mirror: next time.
        let Some(_slot) = Slot::take(&self.busy) else {
            return Ok(false);
        };
        let mut repack = std::process::Command::new("git");
        repack
            .arg("-C")
            .arg(&self.options.dir)
            // Geometric: only the small packs fetches added are merged, not the
            // clone's big one, so upkeep costs what was fetched, not the repo.
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "repack",
                "-d",
                "-q",
                "--geometric=2",
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        run_within(repack, REPACK_TIMEOUT).map_err(|source| SourceError::Io {
            what: format!("git repack failed in {}", self.options.dir.display()),
            source,
        })?;
        self.repo = open_or_init(&self.options.dir)?;
        Ok(true)
    }

    /// Replaces a corrupt mirror: a fresh clone is fetched into a temporary
    /// directory and swapped in only once it is complete.
    pub fn reclone(&mut self) -> Result<gix::ObjectId, SourceError> {
        let dir = self.options.dir.clone();
        let fresh = with_suffix(&dir, ".fresh");
        let old = with_suffix(&dir, ".old");
        for leftover in [&fresh, &old] {
            remove_dir(leftover)?;
        }
        let replacement = Mirror::open(MirrorOptions {
            dir: fresh.clone(),
            ..self.options.clone()
        })?;
        let tip = replacement.fetch()?;
        drop(replacement);
        let io = |what: String| move |source| SourceError::Io { what, source };
        if dir.exists() {
            std::fs::rename(&dir, &old)
                .map_err(io(format!("failed to move {} aside", dir.display())))?;
        }
        std::fs::rename(&fresh, &dir).map_err(io(format!(
            "failed to move the new clone to {}",
            dir.display()
        )))?;
        remove_dir(&old)?;
        self.repo = open_or_init(&dir)?;
        Ok(tip)
    }

    fn local_error(&self, source: gix::Error) -> SourceError {
        SourceError::Local {
            dir: self.options.dir.clone(),
            source: Box::new(source),
        }
    }
}

/// Runs `command` to completion within `timeout`, else kills it. `Err` carries
/// its stderr when it fails.
fn run_within(mut command: std::process::Command, timeout: Duration) -> std::io::Result<()> {
    use std::io::Read as _;
    use std::process::Stdio;

    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read on the side, so that a chatty child cannot fill the pipe and stall.
    let mut stderr = child.stderr.take().expect("piped above");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish within {timeout:?}: killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&stderr).trim().to_owned(),
        ))
    }
}

fn tracked(reference: &str) -> Tracked {
    match crate::tree::full_commit_id(reference) {
        Some(id) => Tracked::Commit(id),
        None => Tracked::Name(reference.to_owned()),
    }
}

/// What [`sweep`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Temporary packs and `.keep` files.
    PacksOnly,
    /// Those, and lock files.
    Everything,
}

/// Removes what an interrupted fetch or repack leaves in a mirror: temporary
/// packs (gix's `.tmp*`, git's `tmp_*` and `.tmp-*`); `.keep` files (gix keeps
/// a new pack until the refs point into it, and leaves the file when that
/// fails; a kept pack is never consolidated); and, with
/// [`Sweep::Everything`], lock files: a process killed while updating a ref
/// leaves `<ref>.lock`, and every later update of that ref fails on it
/// (forever: it is not the kind of damage a re-clone is tried for).
///
/// Only this process writes to its mirror, and only while it holds the fetch
/// slot: whatever is in flight when it holds the slot, or before its first
/// fetch, is a leftover. A lock is only swept before the first fetch: a
/// failed fetch has released its own. Best effort: what cannot be removed is
/// logged, and the fetch says what it trips over.
fn sweep(dir: &Path, what: Sweep) {
    let pack = |name: &str| {
        name.starts_with(".tmp") || name.starts_with("tmp_") || name.ends_with(".keep")
    };
    remove_files(&dir.join("objects/pack"), &pack, false);
    if what == Sweep::Everything {
        let lock = |name: &str| name.ends_with(".lock");
        // HEAD.lock, config.lock, packed-refs.lock; then every ref's.
        remove_files(dir, &lock, false);
        remove_files(&dir.join("refs"), &lock, true);
    }
}

/// Removes the files of `dir` (and, if `deep`, of its subdirectories) whose
/// name matches.
fn remove_files(dir: &Path, matches: &dyn Fn(&str) -> bool, deep: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if deep {
                remove_files(&path, matches, deep);
            }
        } else if entry.file_name().to_str().is_some_and(matches) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a leftover of an interrupted fetch")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover of an interrupted fetch")
                }
            }
        }
    }
}

fn open_or_init(dir: &Path) -> Result<gix::ThreadSafeRepository, SourceError> {
    let local = |source: gix::Error| SourceError::Local {
        dir: dir.to_path_buf(),
        source: Box::new(source),
    };
    if !dir.join("HEAD").exists() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| SourceError::Io {
                what: format!("failed to create {}", parent.display()),
                source,
            })?;
        }
        gix::init_bare(dir).map_err(local)?;
    }
    // Isolated: the user's global and system Git config (credential helpers, URL
    // rewrites, proxies) must not change what the daemon fetches.
    gix::open::Options::isolated().open(dir).map_err(local)
}

/// One fetch of `specs` from `url` into `repo`; returns (local ref, remote id) of
/// every refspec that matched.
fn fetch_refspecs(
    repo: &gix::Repository,
    url: &RepoUrl,
    specs: &[String],
    credentials: Option<Credentials>,
    io_timeout: Duration,
    interrupt: &AtomicBool,
) -> Result<Vec<(String, gix::ObjectId)>, gix::Error> {
    let parsed =
        gix::url::parse(url.as_str().as_bytes().as_bstr()).map_err(gix::Error::from_error)?;
    let remote = repo
        .remote_at(parsed.clone())?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(
            specs.iter().map(|s| s.as_bytes().as_bstr()),
            Direction::Fetch,
        )?;
    if parsed.scheme == gix::url::Scheme::Git {
        let transport =
            git_daemon_transport(&parsed, io_timeout).map_err(gix::Error::from_error)?;
        receive(
            remote.to_connection_with_transport(transport),
            credentials,
            interrupt,
        )
    } else {
        receive(remote.connect(Direction::Fetch)?, credentials, interrupt)
    }
}

/// A `git://` connection with TCP_NODELAY and I/O timeouts. gix's own leaves Nagle
/// on and writes pkt-lines in small sends, which costs ~40 ms per round trip
/// (notes/gix.md), and has no read timeout, so a half-open peer would hang it.
fn git_daemon_transport(
    url: &gix::Url,
    io_timeout: Duration,
) -> std::io::Result<
    gix::protocol::transport::client::git::blocking_io::Connection<TcpStream, TcpStream>,
> {
    let host = url.host().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "git:// URL without a host",
        )
    })?;
    let port = url.port;
    let address = (host, port.unwrap_or(9418))
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address"))?;
    let stream = TcpStream::connect_timeout(&address, io_timeout.min(CONNECT_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    Ok(
        gix::protocol::transport::client::git::blocking_io::Connection::new(
            stream.try_clone()?,
            stream,
            gix::protocol::transport::Protocol::V2,
            url.path.clone(),
            Some((host.to_owned(), port)),
            gix::protocol::transport::client::git::ConnectMode::Daemon,
            false,
        ),
    )
}

fn receive<T>(
    mut connection: gix::remote::Connection<'_, '_, '_, T>,
    credentials: Option<Credentials>,
    interrupt: &AtomicBool,
) -> Result<Vec<(String, gix::ObjectId)>, gix::Error>
where
    T: gix::protocol::transport::client::blocking_io::Transport,
{
    // Never prompt and never run credential helpers: only configured credentials.
    connection.set_credentials(move |action| match (action, &credentials) {
        (gix::credentials::helper::Action::Get(context), Some(c)) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: c.username.clone(),
                    password: c.token.expose().to_owned(),
                    oauth_refresh_token: None,
                },
                next: context.into(),
            }))
        }
        _ => Ok(None),
    });
    let outcome = connection
        .prepare_fetch(gix::progress::Discard, Default::default())?
        .receive(gix::progress::Discard, interrupt)?;
    Ok(outcome
        .ref_map
        .mappings
        .iter()
        .filter_map(|m| {
            let local = m.local.as_ref()?.to_str().ok()?.to_owned();
            Some((local, m.remote.as_id()?.to_owned()))
        })
        .collect())
}

fn peel_to_commit(repo: &gix::Repository, id: gix::ObjectId) -> Result<gix::ObjectId, gix::Error> {
    Ok(repo.find_object(id)?.peel_to_commit()?.id)
}

/// Removes every occurrence of `secret` from an error's messages.
fn scrub(error: gix::Error, secret: Option<String>) -> super::Scrubbed {
    let mut text = crate::error_chain(&error);
    if let Some(secret) = secret {
        text = text.replace(&secret, "<redacted>");
    }
    super::Scrubbed(text)
}

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_dir(dir: &Path) -> Result<(), SourceError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SourceError::Io {
            what: format!("failed to remove {}", dir.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let started = std::time::Instant::now();
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("30");
        let error = run_within(sleep, Duration::from_millis(200)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));

        let mut fails = std::process::Command::new("sh");
        fails.args(["-c", "echo broken >&2; exit 3"]);
        let error = run_within(fails, Duration::from_secs(30)).unwrap_err();
        assert_eq!(error.to_string(), "broken");
        let ok = std::process::Command::new("true");
        run_within(ok, Duration::from_secs(30)).unwrap();
    }
}
