//! `GET /api/v1/apps/<app>/artifact?revision=<commit>` (DESIGN sections 6 and 7):
//! one app's files at one revision, as an uncompressed tar, for the child that
//! applies what a signal announced.
//!
//! Files come from the mirror's Git objects, never from a work tree, and the tar
//! is deterministic: the same files give the same bytes. For the app's current
//! desired revision, the manifest stored in Redis says which files make the app
//! and every blob is checked against it; for another revision, the layout of that
//! commit decides, as a poll would. The `Digest` header is computed with
//! `digest`'s manifest code from the very bytes that went into the tar.
//!
//! This module only reads: it never writes Redis or the mirror. Routing is the
//! API's (`api.rs` calls [`handle`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::Shared;
use crate::digest::{AppDigest, ManifestLine, Sha256Digest, digest_apps, manifest_text};
use crate::layout::paths::join;
use crate::layout::{App, AppName, LayoutOptions, discover};
use crate::limits::Limits;
use crate::store::{Store, StoreError};
use crate::tree::{self, BlobCache, Entry, EntryKind, FileHash, GitTree, ReadError, Tree};

/// Tars built at the same time, at most. A tar is held in memory until it is sent
/// (up to the per-app cap, 256 MiB by default), so this bounds the server's
/// memory; it also keeps gix work from taking every core from the reconcile loop.
pub const MAX_BUILDS: usize = 2;

/// How long a request waits for a build slot before it gets a 503.
pub const BUILD_WAIT: Duration = Duration::from_secs(30);

/// Reads of the desired state before giving up, when the daemon keeps writing the
/// app while it is being read.
const READ_ATTEMPTS: usize = 3;

static BUILDS: Semaphore = Semaphore::const_new(MAX_BUILDS);

/// GNU tar's name for the record that carries a link target too long for the
/// header (what GNU tar and the `tar` crate write; every common reader knows it).
const GNU_LONG_LINK: &[u8] = b"././@LongLink";

pub fn routes() -> Router<Shared> {
    Router::new()
}

#[derive(Debug, serde::Deserialize)]
pub struct ArtifactQuery {
    pub revision: Option<String>,
}

/// An app's files at one commit, packed.
#[derive(Debug)]
pub struct Artifact {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The app digest of the tar's files (`sha256:<hex>` of their manifest).
    pub digest: Sha256Digest,
    /// The commit the files come from (40 hex digits).
    pub revision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("revision {0:?} is not a full commit id (40 hex digits)")]
    BadRevision(String),
    #[error("app {app} has no desired state")]
    NoDesiredState { app: AppName },
    #[error("revision {revision} is not in the daemon's mirror of the repository")]
    UnknownRevision { revision: String },
    #[error("revision {revision} is not a commit")]
    NotACommit { revision: String },
    #[error("app {app} does not exist at revision {revision}")]
    NoApp { app: AppName, revision: String },
    #[error("app {app} is invalid at revision {revision} (`canopy validate` tells why)")]
    Invalid { app: AppName, revision: String },
    #[error("file {path} of app {app} at revision {revision} does not match the stored manifest")]
    Mismatch {
        app: AppName,
        path: String,
        revision: String,
    },
    #[error("file {path} of app {app} is in the stored manifest but not at revision {revision}")]
    Missing {
        app: AppName,
        path: String,
        revision: String,
    },
    #[error("file {path:?} of app {app} has an empty, `.` or `..` component: no tar can hold it")]
    BadPath { app: AppName, path: String },
    #[error("the stored manifest of app {app} does not match its stored digest")]
    StoredDigest { app: AppName },
    #[error("the stored desired state of app {app} has an invalid revision {revision:?}")]
    StoredRevision { app: AppName, revision: String },
    #[error("the desired state of app {app} kept changing while it was read; try again")]
    Changing { app: AppName },
    #[error(
        "the files of app {app} at revision {revision} do not give the digest its layout computed"
    )]
    Unstable { app: AppName, revision: String },
    #[error("files of app {app} total over the cap of {max} bytes")]
    TooLarge { app: AppName, max: u64 },
    #[error("too many artifacts are being built; try again")]
    Busy,
    #[error("failed to read the mirror's Git objects")]
    Mirror(#[source] tree::Error),
    #[error("failed to read file {path} of app {app}")]
    Read {
        app: AppName,
        path: String,
        #[source]
        source: ReadError,
    },
    #[error("failed to read the desired state from Redis")]
    Store(#[source] StoreError),
    #[error("failed to write the tar")]
    Tar(#[source] std::io::Error),
    #[error("the artifact build failed")]
    Join(#[source] tokio::task::JoinError),
}

impl ArtifactError {
    pub fn status(&self) -> StatusCode {
        use ArtifactError::*;
        match self {
            BadRevision(_) => StatusCode::BAD_REQUEST,
            NoDesiredState { .. }
            | UnknownRevision { .. }
            | NotACommit { .. }
            | NoApp { .. }
            | Invalid { .. } => StatusCode::NOT_FOUND,
            Changing { .. } | Busy => StatusCode::SERVICE_UNAVAILABLE,
            Mismatch { .. }
            | Missing { .. }
            | BadPath { .. }
            | StoredDigest { .. }
            | StoredRevision { .. }
            | Unstable { .. }
            | TooLarge { .. }
            | Mirror(_)
            | Read { .. }
            | Store(_)
            | Tar(_)
            | Join(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message for the client. Deeper causes stay in the server's log: Git and
    /// I/O errors name the server's own paths.
    fn public_message(&self) -> String {
        match self {
            // A read error's own text says what is wrong with the file (a cap, a
            // symlink target) and names no server path; its causes might.
            ArtifactError::Read { source, .. } => format!("{self}: {source}"),
            _ => self.to_string(),
        }
    }
}

/// `GET /api/v1/apps/<app>/artifact?revision=<commit>`: the app's files as an
/// uncompressed tar (`application/x-tar`).
///
/// Without `revision`, the app's current desired revision. The tar holds exactly
/// the app's own files (no child app's), paths relative to the app directory,
/// in bytewise path order, without directory entries: regular files with mode
/// 0644 (0755 if executable), symlinks as symlink entries holding their target
/// text, mtime 0, uid and gid 0, no user or group names. The same files always
/// give the same bytes.
///
/// Headers: `Digest: sha256:<hex>`, the app digest of exactly these files, and
/// `X-Canopy-Revision: <commit>`. A child verifies what it unpacked by
/// recomputing the digest (DESIGN section 3), in the unpacked directory:
///
/// ```sh
/// find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
///   if [ -L "$f" ]; then h=$(readlink -n "$f" | sha256sum); else h=$(sha256sum < "$f"); fi
///   printf '%s  %s\n' "${h%% *}" "$f"
/// done | sha256sum     # == the hex after `sha256:` in the Digest header
/// ```
///
/// (a symlink's bytes are its target text; with no symlinks this is
/// `find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum`).
///
/// Errors are JSON `{"error": "..."}`: 400 for a `revision` that is not a full
/// commit id; 404 for an app without desired state, a revision the mirror does not
/// have, or an app that does not exist or is invalid at that revision; 503 while
/// builds are saturated; 500 when Git content does not match the stored manifest.
pub async fn handle(shared: Shared, app: AppName, query: ArtifactQuery) -> Response {
    match artifact(&shared, &app, query).await {
        Ok(artifact) => (
            StatusCode::OK,
            [
                (CONTENT_TYPE, "application/x-tar".to_owned()),
                (
                    HeaderName::from_static("digest"),
                    artifact.digest.to_string(),
                ),
                (
                    HeaderName::from_static("x-canopy-revision"),
                    artifact.revision,
                ),
            ],
            artifact.tar,
        )
            .into_response(),
        Err(error) => {
            let status = error.status();
            if status.is_server_error() {
                tracing::error!(%app, error = %crate::error_chain(&error), "artifact request failed");
            } else {
                tracing::debug!(%app, error = %error, "artifact request refused");
            }
            let body = Json(serde_json::json!({ "error": error.public_message() }));
            let mut response = (status, body).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

async fn artifact(
    shared: &Shared,
    app: &AppName,
    query: ArtifactQuery,
) -> Result<Artifact, ArtifactError> {
    let requested = query.revision.as_deref().map(parse_revision).transpose()?;
    let mut store = shared.store.clone();
    let current = match current_state(&mut store, app).await {
        Ok(current) => current,
        // An explicit revision can still be served from Git alone.
        Err(error) if requested.is_some() => {
            tracing::warn!(%app, error = %crate::error_chain(&error),
                "desired state unreadable; reading the revision's layout");
            None
        }
        Err(error) => return Err(error),
    };
    let (commit, current) = match (requested, current) {
        (Some(commit), Some(current)) if current.commit == commit => (commit, Some(current)),
        (Some(commit), _) => (commit, None),
        (None, Some(current)) => (current.commit, Some(current)),
        (None, None) => return Err(ArtifactError::NoDesiredState { app: app.clone() }),
    };

    let permit = tokio::time::timeout(BUILD_WAIT, BUILDS.acquire())
        .await
        .map_err(|_| ArtifactError::Busy)?
        .expect("the build semaphore is never closed");
    let settings = shared.settings.clone();
    let name = app.clone();
    let expected = current.as_ref().map(|c| c.digest.clone());
    let artifact = tokio::task::spawn_blocking(move || {
        // Held by the build itself: a client that hangs up does not free the slot
        // of a build that still runs.
        let _permit = permit;
        let manifest = current.as_ref().map(|c| &c.files);
        build_tar(
            &settings.mirror_dir,
            &settings.layout,
            commit,
            &name,
            manifest,
        )
    })
    .await
    .map_err(ArtifactError::Join)??;
    if let Some(expected) = expected
        && artifact.digest.to_string() != expected
    {
        return Err(ArtifactError::StoredDigest { app: app.clone() });
    }
    Ok(artifact)
}

/// A commit id as the query gives it: exactly 40 hex digits (any case). Names
/// (`main`, `HEAD~1`) are refused: an artifact names the content it serves.
pub fn parse_revision(text: &str) -> Result<gix::ObjectId, ArtifactError> {
    let bad = || ArtifactError::BadRevision(text.chars().take(80).collect());
    if text.len() != 40 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    gix::ObjectId::from_hex(text.to_ascii_lowercase().as_bytes()).map_err(|_| bad())
}

/// The app's current desired state, read consistently.
struct Current {
    commit: gix::ObjectId,
    digest: String,
    /// Path relative to the app directory -> sha256 hex.
    files: BTreeMap<String, String>,
}

/// The fields of the desired hash that identify one write of it.
#[derive(PartialEq, Eq)]
struct Desired {
    commit: gix::ObjectId,
    digest: String,
    generation: Option<String>,
}

/// The desired hash and the manifest are written together but read with two
/// requests: the manifest belongs to the desired state read before it if that
/// state is still the same (same generation) after it.
async fn current_state(store: &mut Store, app: &AppName) -> Result<Option<Current>, ArtifactError> {
    for _ in 0..READ_ATTEMPTS {
        let Some(before) = desired(store, app).await? else {
            return Ok(None);
        };
        let files = store
            .stored_files(app)
            .await
            .map_err(ArtifactError::Store)?;
        if desired(store, app).await?.as_ref() == Some(&before) {
            return Ok(Some(Current {
                commit: before.commit,
                digest: before.digest,
                files,
            }));
        }
    }
    Err(ArtifactError::Changing { app: app.clone() })
}

async fn desired(store: &mut Store, app: &AppName) -> Result<Option<Desired>, ArtifactError> {
    let states = store
        .app_states(&[app])
        .await
        .map_err(ArtifactError::Store)?;
    let Some(mut desired) = states.into_iter().next().map(|s| s.desired) else {
        return Ok(None);
    };
    // A pruned app's hash is a tombstone without a digest.
    let (Some(digest), Some(revision)) = (desired.remove("digest"), desired.remove("revision"))
    else {
        return Ok(None);
    };
    let commit = parse_revision(&revision).map_err(|_| ArtifactError::StoredRevision {
        app: app.clone(),
        revision,
    })?;
    Ok(Some(Desired {
        commit,
        digest,
        generation: desired.remove("generation"),
    }))
}

/// One file to pack.
struct Member {
    /// Path relative to the app directory: the path in the tar and the manifest.
    relative: String,
    entry: Entry,
    /// The sha256 hex its bytes must have.
    sha256: String,
}

/// Packs `app`'s files at `commit` of the repository at `mirror_dir` (opened
/// read-only from its Git objects). With `manifest` (the app's stored manifest:
/// path relative to the app directory -> sha256 hex) exactly those files are
/// packed, each checked against its hash; without, the commit's layout decides
/// which files make the app, as a poll would (the app must exist and be valid).
/// Blocking: call it from `spawn_blocking`.
pub fn build_tar(
    mirror_dir: &Path,
    layout: &LayoutOptions,
    commit: gix::ObjectId,
    app: &AppName,
    manifest: Option<&BTreeMap<String, String>>,
) -> Result<Artifact, ArtifactError> {
    let revision = commit.to_string();
    let tree = open_commit(mirror_dir, commit)?;
    let (members, expected) = match manifest {
        Some(manifest) => (
            from_manifest(&tree, layout, app, manifest, &revision)?,
            None,
        ),
        None => {
            let (members, digest) = from_layout(&tree, layout, app, &revision)?;
            (members, Some(digest))
        }
    };
    let (tar, digest) = pack(&tree, members, &layout.limits, app, &revision)?;
    // Git objects do not change, so this holds unless the code is wrong; it is
    // checked because a child would refuse an artifact whose digest lies.
    if expected.is_some_and(|expected| expected != digest) {
        return Err(ArtifactError::Unstable {
            app: app.clone(),
            revision,
        });
    }
    Ok(Artifact {
        tar,
        digest,
        revision,
    })
}

fn open_commit(mirror_dir: &Path, commit: gix::ObjectId) -> Result<GitTree, ArtifactError> {
    // Isolated, like the mirror itself: no global config, no environment.
    let repo = gix::open::Options::isolated()
        .open(mirror_dir)
        .map_err(|source| {
            ArtifactError::Mirror(tree::Error::OpenRepo {
                path: mirror_dir.to_path_buf(),
                source,
            })
        })?;
    let header = repo
        .to_thread_local()
        .try_find_header(commit)
        .map_err(|source| {
            ArtifactError::Mirror(tree::Error::Objects {
                path: mirror_dir.to_path_buf(),
                source,
            })
        })?;
    let revision = || commit.to_string();
    match header {
        None => Err(ArtifactError::UnknownRevision {
            revision: revision(),
        }),
        Some(h) if h.kind() != gix::object::Kind::Commit => Err(ArtifactError::NotACommit {
            revision: revision(),
        }),
        Some(_) => GitTree::at_commit(repo, mirror_dir, commit).map_err(ArtifactError::Mirror),
    }
}

/// The app's directory inside the tree.
fn app_dir(layout: &LayoutOptions, app: &AppName) -> String {
    join(layout.root.trim_matches('/'), app.dir())
}

fn from_manifest(
    tree: &GitTree,
    layout: &LayoutOptions,
    app: &AppName,
    manifest: &BTreeMap<String, String>,
    revision: &str,
) -> Result<Vec<Member>, ArtifactError> {
    let dir = app_dir(layout, app);
    // One walk of the app's directory (its children's too), not one lookup from
    // the root per file: the cost stays the directory's size.
    let listing = tree
        .list_dir(&dir, layout.limits.max_tree_entries)
        .map_err(ArtifactError::Mirror)?;
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut under: HashMap<&str, &Entry> = listing
        .entries
        .iter()
        .filter_map(|e| Some((e.path.strip_prefix(&prefix)?, e)))
        .collect();
    let mut members = Vec::with_capacity(manifest.len());
    for (relative, sha256) in manifest {
        let entry = under
            .remove(relative.as_str())
            .ok_or_else(|| ArtifactError::Missing {
                app: app.clone(),
                path: relative.clone(),
                revision: revision.to_owned(),
            })?;
        members.push(Member {
            relative: relative.clone(),
            entry: entry.clone(),
            sha256: sha256.clone(),
        });
    }
    Ok(members)
}

/// The app's files and digest at this commit, as a poll computes them. The whole
/// tree is listed and its layout discovered (which files an app owns depends on
/// where its children are), but only this app's files are read and hashed: an
/// old revision costs the app's size, not the repository's content.
fn from_layout(
    tree: &GitTree,
    layout: &LayoutOptions,
    name: &AppName,
    revision: &str,
) -> Result<(Vec<Member>, Sha256Digest), ArtifactError> {
    let cache = BlobCache::default();
    let listing = tree
        .list(layout.limits.max_tree_entries)
        .map_err(ArtifactError::Mirror)?;
    let entries: Vec<&Entry> = listing.entries.iter().collect();
    let apps = discover(tree, &entries, &listing.unusable, layout, &cache, &|_| None)
        .map_err(ArtifactError::Mirror)?;
    let invalid = || ArtifactError::Invalid {
        app: name.clone(),
        revision: revision.to_owned(),
    };
    let app: &App = apps.apps.get(name).ok_or_else(|| ArtifactError::NoApp {
        app: name.clone(),
        revision: revision.to_owned(),
    })?;
    if !app.is_valid() {
        return Err(invalid());
    }
    let symlinks: HashSet<&str> = listing
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
        .map(|e| &*e.path)
        .collect();
    let is_symlink = |path: &str| symlinks.contains(path);
    let digest: AppDigest = digest_apps(tree, &is_symlink, &[app], &cache, &layout.limits)
        .map_err(ArtifactError::Mirror)?
        .remove(name)
        .and_then(Result::ok)
        .ok_or_else(invalid)?;
    let hashes: HashMap<&str, String> = digest
        .files
        .iter()
        .map(|line| (line.path(), line.hash.hex()))
        .collect();
    let members = app
        .files
        .iter()
        .map(|entry| {
            let relative = app.relative(&entry.path);
            Member {
                relative: relative.to_owned(),
                entry: entry.clone(),
                sha256: hashes.get(relative).cloned().unwrap_or_default(),
            }
        })
        .collect();
    Ok((members, digest.digest))
}

/// Reads, checks and packs `members`; returns the tar and the digest of what it
/// holds.
fn pack(
    tree: &GitTree,
    mut members: Vec<Member>,
    limits: &Limits,
    app: &AppName,
    revision: &str,
) -> Result<(Vec<u8>, Sha256Digest), ArtifactError> {
    members.sort_unstable_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
    let mut reader = tree.reader().map_err(ArtifactError::Mirror)?;
    let mut builder = tar::Builder::new(Vec::new());
    let mut lines = Vec::with_capacity(members.len());
    let mut total: u64 = 0;
    let mut buf = Vec::new();
    for member in members {
        // Git trees written with plumbing can hold such names; the `tar` crate
        // would drop `.` components and refuse `..`, so the tar would not hold
        // the manifest's paths.
        if !clean_path(&member.relative) {
            return Err(ArtifactError::BadPath {
                app: app.clone(),
                path: member.relative,
            });
        }
        reader
            .read(&member.entry, limits.max_file_bytes, &mut buf)
            .map_err(|source| ArtifactError::Read {
                app: app.clone(),
                path: member.relative.clone(),
                source,
            })?;
        let hash = FileHash::of(&buf);
        if hash.hex() != member.sha256 {
            return Err(ArtifactError::Mismatch {
                app: app.clone(),
                path: member.relative,
                revision: revision.to_owned(),
            });
        }
        total += hash.size;
        if total > limits.max_app_bytes {
            return Err(ArtifactError::TooLarge {
                app: app.clone(),
                max: limits.max_app_bytes,
            });
        }
        append(&mut builder, &member.relative, member.entry.kind, &buf)
            .map_err(ArtifactError::Tar)?;
        lines.push(ManifestLine::new(member.relative, hash));
    }
    let tar = builder.into_inner().map_err(ArtifactError::Tar)?;
    Ok((tar, Sha256Digest::of(&manifest_text(&lines))))
}

fn clean_path(path: &str) -> bool {
    path.split('/').all(|c| !matches!(c, "" | "." | ".."))
}

/// A header with everything fixed but the kind and size: GNU format (long paths
/// and link targets get GNU's extension records), mtime 0, uid and gid 0, no
/// user or group names.
fn header(kind: EntryKind, size: u64) -> tar::Header {
    let (entry_type, mode) = match kind {
        EntryKind::File => (tar::EntryType::Regular, 0o644),
        EntryKind::Executable => (tar::EntryType::Regular, 0o755),
        EntryKind::Symlink => (tar::EntryType::Symlink, 0o777),
    };
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}

/// Appends one file, or one symlink whose target text is `bytes`. Relative paths
/// come from the layout or were checked (no empty, `.` or `..` component), so the
/// `tar` crate stores them unchanged.
fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: EntryKind,
    bytes: &[u8],
) -> std::io::Result<()> {
    if kind != EntryKind::Symlink {
        let mut header = header(kind, bytes.len() as u64);
        return builder.append_data(&mut header, path, bytes);
    }
    // The target is written byte for byte: the crate's `set_link_name` goes
    // through `Path` and would normalise `a//b` or `a/./b`, changing the bytes
    // the digest covers.
    let mut header = header(kind, 0);
    let slot = &mut header.as_old_mut().linkname;
    if bytes.len() <= slot.len() {
        slot[..bytes.len()].copy_from_slice(bytes);
    } else {
        let mut long = self::header(EntryKind::File, bytes.len() as u64 + 1);
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.as_old_mut().name[..GNU_LONG_LINK.len()].copy_from_slice(GNU_LONG_LINK);
        long.set_cksum();
        builder.append(&long, bytes.chain(&[0u8][..]))?;
        let len = slot.len();
        slot.copy_from_slice(&bytes[..len]);
    }
    builder.append_data(&mut header, path, std::io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;

    use sha2::{Digest as _, Sha256};

    /// A Git repository of `src`, made by `fixtures/make-repo.sh`.
    fn repo_from(src: &Path) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make-repo.sh");
        let status = Command::new(script)
            .arg(src)
            .arg(dir.path().join("repo"))
            .status()
            .expect("run make-repo.sh");
        assert!(status.success(), "make-repo.sh failed");
        dir
    }

    fn example() -> tempfile::TempDir {
        repo_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/example"))
    }

    fn head(repo: &Path) -> gix::ObjectId {
        GitTree::open(repo, "main").expect("open").commit()
    }

    fn name(app: &str) -> AppName {
        AppName::parse(app).expect("valid name")
    }

    /// (path, entry type, mode, bytes or link target) of each entry, in order.
    type Unpacked = Vec<(String, tar::EntryType, u32, Vec<u8>)>;

    /// Reads a tar with the `tar` crate and checks the fixed fields.
    fn unpack(tar: &[u8]) -> Unpacked {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let header = entry.header().clone();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.username_bytes(), Some(&b""[..]));
            assert_eq!(header.groupname_bytes(), Some(&b""[..]));
            let path = String::from_utf8(entry.path_bytes().into_owned()).expect("utf-8");
            let kind = header.entry_type();
            let bytes = if kind == tar::EntryType::Symlink {
                entry.link_name_bytes().expect("target").into_owned()
            } else {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("read");
                data
            };
            out.push((path, kind, header.mode().unwrap(), bytes));
        }
        out
    }

    /// The digest of unpacked files, computed here from scratch as `sha256sum`
    /// would (no escaped names in these fixtures).
    fn digest_of(files: &Unpacked) -> String {
        let mut lines: Vec<String> = files
            .iter()
            .map(|(path, _, _, bytes)| format!("{}  {path}\n", hex::encode(Sha256::digest(bytes))))
            .collect();
        lines.sort_by(|a, b| a[66..].cmp(&b[66..])); // str order is bytewise
        format!("sha256:{}", hex::encode(Sha256::digest(lines.concat())))
    }

    fn scanned(repo: &Path, layout: &LayoutOptions, app: &str) -> AppDigest {
        let tree = GitTree::open(repo, "main").expect("open");
        let scan = crate::scan::scan(&tree, layout, &BlobCache::default()).expect("scan");
        scan.digests[&name(app)].clone()
    }

    fn manifest_of(digest: &AppDigest) -> BTreeMap<String, String> {
        digest
            .files
            .iter()
            .map(|l| (l.path().to_owned(), l.hash.hex()))
            .collect()
    }

    #[test]
    fn an_app_is_its_own_files_with_the_scans_digest() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let commit = head(&repo);
        for app in ["payments/api", "payments", "search", "."] {
            let artifact = build_tar(&repo, &layout, commit, &name(app), None).expect(app);
            let files = unpack(&artifact.tar);
            let expected = scanned(&repo, &layout, app);
            let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
            let want: Vec<&str> = expected.files.iter().map(|l| l.path()).collect();
            assert_eq!(paths, want, "{app}: exactly its files, in path order");
            assert_eq!(artifact.digest, expected.digest, "{app}");
            assert_eq!(digest_of(&files), artifact.digest.to_string(), "{app}");
            assert_eq!(artifact.revision, commit.to_string());
        }
        let payments = unpack(
            &build_tar(&repo, &layout, commit, &name("payments"), None)
                .unwrap()
                .tar,
        );
        assert!(
            payments
                .iter()
                .all(|f| !f.0.starts_with("api/") && !f.0.starts_with("db/"))
        );
    }

    #[test]
    fn the_stored_manifest_gives_the_same_bytes_and_is_checked() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let commit = head(&repo);
        let app = name("payments/api");
        let manifest = manifest_of(&scanned(&repo, &layout, "payments/api"));
        let stored = build_tar(&repo, &layout, commit, &app, Some(&manifest)).unwrap();
        let again = build_tar(&repo, &layout, commit, &app, Some(&manifest)).unwrap();
        let scanned = build_tar(&repo, &layout, commit, &app, None).unwrap();
        assert_eq!(stored.tar, again.tar, "deterministic");
        assert_eq!(stored.tar, scanned.tar, "both ways give the same tar");
        assert_eq!(stored.digest, scanned.digest);

        let mut wrong = manifest.clone();
        wrong.insert("service.yaml".into(), "0".repeat(64));
        let err = build_tar(&repo, &layout, commit, &app, Some(&wrong)).unwrap_err();
        assert!(matches!(err, ArtifactError::Mismatch { ref path, .. } if path == "service.yaml"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.to_string().contains("service.yaml"), "{err}");

        let mut extra = manifest.clone();
        extra.insert("gone.yaml".into(), "0".repeat(64));
        let err = build_tar(&repo, &layout, commit, &app, Some(&extra)).unwrap_err();
        assert!(matches!(err, ArtifactError::Missing { ref path, .. } if path == "gone.yaml"));

        // Redis is not trusted to hold only paths the layout wrote.
        for bad in ["../db/app.yaml", "a//b", "./app.yaml", ".git/config", ""] {
            let mut hostile = manifest.clone();
            hostile.insert(bad.into(), "0".repeat(64));
            let err = build_tar(&repo, &layout, commit, &app, Some(&hostile)).unwrap_err();
            assert!(matches!(err, ArtifactError::Missing { .. }), "{bad}: {err}");
        }
        for bad in ["../x", "a//b", "./a", "a/.", ""] {
            assert!(!clean_path(bad), "{bad}");
        }
        assert!(clean_path("a/.b/c..d"));
    }

    #[test]
    fn a_symlink_is_a_symlink_entry() {
        let dir = example();
        let repo = dir.path().join("repo");
        let artifact = build_tar(
            &repo,
            &LayoutOptions::default(),
            head(&repo),
            &name("payments/db"),
            None,
        )
        .unwrap();
        let files = unpack(&artifact.tar);
        let link = files.iter().find(|f| f.0 == "api-service.yaml").unwrap();
        assert_eq!(link.1, tar::EntryType::Symlink);
        assert_eq!(link.3, b"../api/service.yaml");
        let regular = files.iter().find(|f| f.0 == "statefulset.yaml").unwrap();
        assert_eq!((regular.1, regular.2), (tar::EntryType::Regular, 0o644));
        assert_eq!(digest_of(&files), artifact.digest.to_string());
    }

    #[test]
    fn long_names_odd_link_targets_and_executables_survive_exactly() {
        let src = tempfile::tempdir().unwrap();
        let long = format!("deep/{}/{}.yaml", "d".repeat(90), "f".repeat(60));
        let files: [(&str, &str); 3] = [
            ("app.yaml", ""),
            (&long, "long\n"),
            ("sub/x.yaml", "x: 1\n"),
        ];
        for (path, text) in files {
            let path = src.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let run = src.path().join("run.sh");
        std::fs::write(&run, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let long_target = format!("{}{long}", "./".repeat(40));
        let links = [("odd", "sub//./x.yaml"), ("far", long_target.as_str())];
        for (link, target) in links {
            std::os::unix::fs::symlink(target, src.path().join(link)).unwrap();
        }
        let dir = repo_from(src.path());
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let artifact = build_tar(&repo, &layout, head(&repo), &AppName::root(), None).unwrap();
        let files = unpack(&artifact.tar);
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.0 == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(get(&long).3, b"long\n");
        assert_eq!(get("odd").3, b"sub//./x.yaml");
        assert_eq!(get("far").3, long_target.as_bytes());
        assert_eq!(get("far").1, tar::EntryType::Symlink);
        assert_eq!(
            (get("run.sh").1, get("run.sh").2),
            (tar::EntryType::Regular, 0o755)
        );
        assert_eq!(digest_of(&files), artifact.digest.to_string());
        assert_eq!(artifact.digest, scanned(&repo, &layout, ".").digest);

        // GNU tar reads the same names and targets.
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("a.tar");
        std::fs::write(&archive, &artifact.tar).unwrap();
        let listed = Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .expect("run tar");
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.contains(&format!("far -> {long_target}")),
            "{listed}"
        );
        assert!(listed.contains("odd -> sub//./x.yaml"), "{listed}");
        assert!(listed.contains(&long), "{listed}");
    }

    #[test]
    fn unknown_apps_and_revisions_are_not_found() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let commit = head(&repo);
        let err = build_tar(&repo, &layout, commit, &name("nope"), None).unwrap_err();
        assert!(matches!(err, ArtifactError::NoApp { .. }), "{err}");
        assert_eq!(err.status(), StatusCode::NOT_FOUND);

        let missing = gix::ObjectId::from_hex(&[b'a'; 40]).unwrap();
        let err = build_tar(&repo, &layout, missing, &name("payments"), None).unwrap_err();
        assert!(
            matches!(err, ArtifactError::UnknownRevision { .. }),
            "{err}"
        );
        assert_eq!(err.status(), StatusCode::NOT_FOUND);

        let tree = GitTree::open(&repo, "main").unwrap();
        let blob = tree.list_dir("payments", 100).unwrap().entries[0]
            .blob
            .unwrap();
        let err = build_tar(&repo, &layout, blob, &name("payments"), None).unwrap_err();
        assert!(matches!(err, ArtifactError::NotACommit { .. }), "{err}");
        assert!(
            !err.to_string().contains(&*repo.to_string_lossy()),
            "no server paths: {err}"
        );
    }

    #[test]
    fn apps_are_found_under_the_layout_root() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions {
            root: "payments/".to_owned(),
            ..LayoutOptions::default()
        };
        let commit = head(&repo);
        for app in [".", "db"] {
            let expected = scanned(&repo, &layout, app);
            let manifest = manifest_of(&expected);
            let stored = build_tar(&repo, &layout, commit, &name(app), Some(&manifest)).unwrap();
            let scanned = build_tar(&repo, &layout, commit, &name(app), None).unwrap();
            assert_eq!(stored.digest, expected.digest, "{app}");
            assert_eq!(stored.tar, scanned.tar, "{app}");
        }
        // Under this root `api`'s `depends_on: [payments/db]` names no app.
        let err = build_tar(&repo, &layout, commit, &name("api"), None).unwrap_err();
        assert!(matches!(err, ArtifactError::Invalid { .. }), "{err}");
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        let root = unpack(
            &build_tar(&repo, &layout, commit, &AppName::root(), None)
                .unwrap()
                .tar,
        );
        let paths: Vec<&str> = root.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(paths, ["app.yaml", "kustomization.yaml"]);
    }

    #[test]
    fn a_directory_listing_holds_full_paths_of_that_directory_only() {
        let dir = example();
        let tree = GitTree::open(&dir.path().join("repo"), "main").unwrap();
        let paths = |d: &str| -> Vec<String> {
            let listing = tree.list_dir(d, 1000).unwrap();
            listing
                .entries
                .into_iter()
                .map(|e| e.path.to_string())
                .collect()
        };
        assert_eq!(
            paths("payments/api"),
            [
                "payments/api/NOTES.md",
                "payments/api/app.yaml",
                "payments/api/deployment.yaml",
                "payments/api/service.yaml"
            ]
        );
        assert!(paths("payments/api/app.yaml").is_empty(), "a file");
        assert!(paths("nope").is_empty());
        assert_eq!(paths(""), {
            let all = tree.list(1000).unwrap().entries;
            all.into_iter()
                .map(|e| e.path.to_string())
                .collect::<Vec<_>>()
        });
        assert!(tree.list_dir("payments", 3).is_err(), "capped");
    }

    #[test]
    fn revisions_must_be_full_commit_ids() {
        for bad in [
            "main",
            "HEAD",
            "abc123",
            &"g".repeat(40),
            &"a".repeat(41),
            "",
        ] {
            let err = parse_revision(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        let upper = "ABCDEF0123456789ABCDEF0123456789ABCDEF01";
        assert_eq!(
            parse_revision(upper).unwrap().to_string(),
            upper.to_ascii_lowercase()
        );
    }
}
