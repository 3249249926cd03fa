//! Which files of which commit make an app: the app's stored manifest (its
//! current desired state, every file then checked against its hash), or the
//! layout of that commit, discovered as a poll would. Reads Git objects only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::ArtifactError;
use crate::digest::{AppDigest, Sha256Digest, Surroundings, digest_apps};
use crate::layout::paths::join;
use crate::layout::{App, AppName, LayoutOptions, discover};
use crate::tree::{self, BlobCache, Entry, EntryKind, GitTree, Tree};

/// One file to pack.
pub(super) struct Member {
    /// Path relative to the app directory: the path in the tar and the manifest.
    pub relative: String,
    pub entry: Entry,
    /// The sha256 hex its bytes must have.
    pub sha256: String,
}

pub(super) fn open_commit(
    mirror_dir: &Path,
    commit: gix::ObjectId,
) -> Result<GitTree, ArtifactError> {
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

pub(super) fn from_manifest(
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
pub(super) fn from_layout(
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
    let surroundings = Surroundings::of(&is_symlink, layout, &apps);
    let digest: AppDigest = digest_apps(tree, &surroundings, &[app], &cache, &layout.limits)
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
