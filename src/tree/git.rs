//! A tree read from one commit of a local Git repository (bare or not), from Git
//! objects only: the work tree, index, hooks, filters and submodules are never
//! touched. Blob ids travel with the entries so content hashes can be cached.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gix::bstr::ByteSlice;
use gix::objs::Find;
use gix::objs::tree::EntryKind as GitKind;
use gix::traverse::tree::Recorder;

use super::{
    BlobId, Entry, EntryKind, Error, Listing, ReadError, Reader, Tree, Unusable, UnusableReason,
    has_git_component, symlink,
};

/// A full commit id: exactly 40 hex digits (any case). Names (`main`, `HEAD~1`)
/// and abbreviations are not ids: whoever names content by its commit must name
/// exactly one.
pub fn full_commit_id(text: &str) -> Option<gix::ObjectId> {
    if !crate::protocol::is_commit_id(text) {
        return None;
    }
    gix::ObjectId::from_hex(text.to_ascii_lowercase().as_bytes()).ok()
}

pub struct GitTree {
    repo: gix::ThreadSafeRepository,
    path: PathBuf,
    commit: gix::ObjectId,
    tree: gix::ObjectId,
}

impl GitTree {
    /// Opens `path` (a repository or its work tree) at `rev` (anything `git
    /// rev-parse` accepts that peels to a commit).
    pub fn open(path: &Path, rev: &str) -> Result<Self, Error> {
        // Isolated: no global or system config, no environment overrides. Reading
        // objects needs none of it, and a hostile config must not change behaviour.
        let repo = gix::open::Options::isolated()
            .open(path)
            .map_err(|source| Error::OpenRepo {
                path: path.to_path_buf(),
                source,
            })?;
        let (commit, tree) = {
            let local = repo.to_thread_local();
            let revision = |source| Error::Revision {
                rev: rev.to_owned(),
                path: path.to_path_buf(),
                source,
            };
            let commit = local
                .rev_parse_single(rev.as_bytes().as_bstr())
                .and_then(|id| id.object())
                .and_then(|object| object.peel_to_commit())
                .map_err(revision)?;
            let tree = commit.tree_id().map_err(revision)?.detach();
            (commit.id, tree)
        };
        Ok(GitTree {
            repo,
            path: path.to_path_buf(),
            commit,
            tree,
        })
    }

    /// The snapshot of `commit` in an already open repository (a mirror).
    pub fn at_commit(
        repo: gix::ThreadSafeRepository,
        path: &Path,
        commit: gix::ObjectId,
    ) -> Result<Self, Error> {
        let tree = repo
            .to_thread_local()
            .find_commit(commit)
            .and_then(|c| c.tree_id().map(|id| id.detach()))
            .map_err(|source| Error::Objects {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(GitTree {
            repo,
            path: path.to_path_buf(),
            commit,
            tree,
        })
    }

    pub fn commit(&self) -> gix::ObjectId {
        self.commit
    }

    /// Like [`Tree::list`], but only the entries under directory `dir`
    /// (tree-relative, `/`-separated; `""` is the whole tree), with their full
    /// paths: costs the size of that directory, not of the tree. Empty when `dir`
    /// is not a directory.
    pub fn list_dir(&self, dir: &str, max_entries: usize) -> Result<Listing, Error> {
        let repo = self.repo.to_thread_local();
        let root = repo
            .find_tree(self.tree)
            .map_err(|e| self.objects_error(e))?;
        if dir.is_empty() {
            return self.list_tree(root, "", max_entries);
        }
        if has_git_component(dir.as_bytes()) {
            return Ok(Listing::default());
        }
        let found = root
            .lookup_entry(dir.split('/'))
            .map_err(|e| self.objects_error(e))?;
        let Some(found) = found.filter(|e| e.mode().kind() == GitKind::Tree) else {
            return Ok(Listing::default());
        };
        let tree = repo
            .find_tree(found.object_id())
            .map_err(|e| self.objects_error(e))?;
        self.list_tree(tree, &format!("{dir}/"), max_entries)
    }

    /// Every entry of `tree`, whose paths are `prefix` + the path inside it.
    fn list_tree(
        &self,
        tree: gix::Tree<'_>,
        prefix: &str,
        max_entries: usize,
    ) -> Result<Listing, Error> {
        let mut recorder = Recorder::default();
        tree.traverse()
            .breadthfirst(&mut recorder)
            .map_err(|e| self.objects_error(e))?;
        let mut listing = Listing::default();
        let mut filepath = Vec::new();
        for record in recorder.records {
            let kind = match record.mode.kind() {
                GitKind::Blob => EntryKind::File,
                GitKind::BlobExecutable => EntryKind::Executable,
                GitKind::Link => EntryKind::Symlink,
                // Submodules are never fetched: a gitlink is not part of any app.
                GitKind::Tree | GitKind::Commit => continue,
            };
            filepath.clear();
            filepath.extend_from_slice(prefix.as_bytes());
            filepath.extend_from_slice(&record.filepath);
            if has_git_component(&filepath) {
                continue;
            }
            listing.check_room(max_entries, || self.describe())?;
            let path = match filepath.to_str() {
                Ok(path) => Arc::<str>::from(path),
                Err(_) => {
                    listing.unusable.push(Unusable {
                        path: filepath.to_str_lossy().into_owned(),
                        reason: UnusableReason::NotUtf8,
                    });
                    continue;
                }
            };
            listing.entries.push(Entry {
                path,
                kind,
                blob: Some(record.oid),
            });
        }
        // Breadth-first order is not path order; manifests need bytewise order.
        listing.entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    /// Whether `path` looks like a Git repository (bare, or a work tree's `.git`).
    pub fn is_repository(path: &Path) -> bool {
        gix::discover::is_git(path).is_ok() || gix::discover::is_git(&path.join(".git")).is_ok()
    }

    fn objects_error(&self, source: gix::Error) -> Error {
        Error::Objects {
            path: self.path.clone(),
            source,
        }
    }
}

impl Tree for GitTree {
    fn describe(&self) -> String {
        format!(
            "commit {} of {}",
            self.commit.to_hex_with_len(12),
            self.path.display()
        )
    }

    fn revision(&self) -> Option<String> {
        Some(self.commit.to_string())
    }

    fn list(&self, max_entries: usize) -> Result<Listing, Error> {
        let repo = self.repo.to_thread_local();
        let tree = repo
            .find_tree(self.tree)
            .map_err(|e| self.objects_error(e))?;
        self.list_tree(tree, "", max_entries)
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>, Error> {
        Ok(Box::new(GitReader {
            repo: self.repo.to_thread_local(),
        }))
    }
}

struct GitReader {
    repo: gix::Repository,
}

impl Reader for GitReader {
    fn read(&mut self, entry: &Entry, max_bytes: u64, buf: &mut Vec<u8>) -> Result<(), ReadError> {
        let id: BlobId = entry
            .blob
            .expect("entries listed from a Git tree always carry their blob id");
        let git = |source| ReadError::Git { id, source };
        // The header gives the size without inflating: a huge blob is refused unread.
        let header = self.repo.find_header(id).map_err(git)?;
        if header.kind() != gix::object::Kind::Blob {
            return Err(ReadError::NotABlob {
                id,
                kind: header.kind(),
            });
        }
        if header.size() > max_bytes {
            return Err(ReadError::TooLarge {
                size: header.size(),
                max: max_bytes,
            });
        }
        let data = self
            .repo
            .objects
            .try_find(&id, buf)
            .map_err(git)?
            .ok_or_else(|| {
                git(gix::Error::from_error(std::io::Error::other(
                    "object is missing",
                )))
            })?;
        let len = data.data.len();
        buf.truncate(len);
        if entry.kind == EntryKind::Symlink {
            symlink::resolve(&entry.path, buf, symlink::Bounds::TREE)?;
        }
        Ok(())
    }
}
