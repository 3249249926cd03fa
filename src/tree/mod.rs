//! The "tree of entries" abstraction: the files and symlinks of one snapshot of a
//! repository, read either from a plain directory or from a Git commit.
//!
//! Everything above this module (layout, digests) sees only [`Entry`] values and a
//! [`Reader`], so a directory and the same content committed to Git give the same
//! result through the same code. This module owns the guarantee that no read ever
//! follows a symlink: a symlink's bytes are its target text, and a target that is
//! absolute, escapes the tree or points into `.git` is refused before anyone sees it.
//! Which app a link belongs to is not this module's knowledge: the digest step
//! confines each link to its app's directory through [`Bounds`].
//!
//! Directories are not entries: they are implied by file paths, exactly as in Git,
//! so an empty directory on disk is invisible in both implementations.

mod dir;
mod git;
mod hash;
mod mem;
mod parallel;
mod symlink;

use std::path::PathBuf;
use std::sync::Arc;

pub use dir::DirTree;
pub use git::{GitTree, full_commit_id};
pub use hash::{BlobCache, FileHash, hash_entry};
pub use mem::MemTree;
pub use parallel::par_map;
pub use symlink::{Bounds, SymlinkError, resolve as resolve_symlink};

/// Object id of a Git blob; present for entries read from Git.
pub type BlobId = gix::ObjectId;

/// One file or symlink of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path from the tree's root, `/`-separated, valid UTF-8, never containing a
    /// `.git` component. Shared: a snapshot holds each path in its entry map (key
    /// and value) and in the owning app's file list, 60,000 of them at 10,000 apps.
    pub path: Arc<str>,
    pub kind: EntryKind,
    /// The Git blob id, which identifies the content; `None` for directory trees.
    pub blob: Option<BlobId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Executable,
    Symlink,
}

/// A path that exists in the tree but cannot be an entry (not UTF-8, a FIFO...).
/// Listed rather than dropped so that the app owning it can be reported as broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// The path, with invalid UTF-8 replaced by U+FFFD for display.
    pub path: String,
    pub reason: UnusableReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnusableReason {
    #[error("path is not valid UTF-8")]
    NotUtf8,
    #[error("not a regular file, directory or symlink")]
    SpecialFile,
}

/// One path that differs between two snapshots of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The path now holds this entry (added, or its content or kind changed).
    Upsert(Entry),
    /// The path no longer holds an entry.
    Remove(String),
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Upsert(entry) => &entry.path,
            Change::Remove(path) => path,
        }
    }
}

/// Every entry of a tree, sorted bytewise by path.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub unusable: Vec<Unusable>,
}

impl Listing {
    /// Fails once the listing holds `max` paths, usable or not: a tree of a million
    /// unusable names must not grow a listing without bound either.
    pub(crate) fn check_room(
        &self,
        max: usize,
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        if self.entries.len() + self.unusable.len() >= max {
            return Err(Error::TooManyEntries { what: what(), max });
        }
        Ok(())
    }
}

/// A snapshot of a repository that can be listed and read, from several threads.
pub trait Tree: Sync {
    /// Human-readable origin for messages, e.g. `directory ./repo` or `commit 1a2b3c4 of ./repo`.
    fn describe(&self) -> String;
    /// The commit id for Git trees.
    fn revision(&self) -> Option<String>;
    /// Lists every entry; fails if there are more than `max_entries`.
    fn list(&self, max_entries: usize) -> Result<Listing, Error>;
    /// A reader for the calling thread.
    fn reader(&self) -> Result<Box<dyn Reader + '_>, Error>;
}

/// Reads entries' bytes; one per thread.
pub trait Reader {
    /// Replaces `buf` with the entry's bytes (a symlink's target text). Fails without
    /// reading the content when it is larger than `max_bytes`.
    fn read(&mut self, entry: &Entry, max_bytes: u64, buf: &mut Vec<u8>) -> Result<(), ReadError>;
}

/// Failure to list a tree or to open it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open Git repository {path}")]
    OpenRepo {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("revision {rev:?} not found in {path}")]
    Revision {
        rev: String,
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("failed to read Git objects of {path}")]
    Objects {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("{what} has more than {max} entries")]
    TooManyEntries { what: String, max: usize },
}

/// Failure to read one entry. The caller adds the entry's path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("file is {size} bytes, over the cap of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error(transparent)]
    Symlink(#[from] SymlinkError),
    #[error("failed to read file")]
    Io(#[source] std::io::Error),
    #[error("failed to read Git object {id}")]
    Git {
        id: BlobId,
        #[source]
        source: gix::Error,
    },
    #[error("Git object {id} is a {kind}, not a blob")]
    NotABlob { id: BlobId, kind: gix::object::Kind },
}

/// True if any `/`-separated component of `path` is `.git`: such paths are never
/// part of a tree, whatever Git or the disk holds.
pub fn has_git_component(path: &[u8]) -> bool {
    path.split(|b| *b == b'/').any(|c| c == b".git")
}
