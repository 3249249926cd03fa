//! Which files of which commit make an app: the layout of that commit,
//! discovered as a poll would, from the app's own directory when that is enough
//! (its current desired state, whose digest is known) or from the whole tree.
//! Reads Git objects only; nothing here trusts a file list stored in Redis.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::ArtifactError;
use crate::digest::{Sha256Digest, Surroundings, digest_apps};
use crate::layout::paths::join;
use crate::layout::{App, AppName, AppTree, LayoutOptions, discover};
use crate::tree::{self, BlobCache, Entry, EntryKind, GitTree, Listing, Tree};

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
    let listing = tree
        .list(layout.limits.max_tree_entries)
        .map_err(ArtifactError::Mirror)?;
    let apps = discover_in(tree, &listing, layout)?;
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
    members_of(tree, layout, &listing, &apps, app)?.ok_or_else(invalid)
}

/// The same from the app's own directory alone, laid out as if it were the
/// root: its cost is the directory's size, not the repository's. It is exact
/// unless an ancestor's generator makes apps inside this (generated) app, so
/// the caller compares the digest with one computed by a poll and falls back to
/// [`from_layout`] when they differ. `None` when the directory holds no app
/// files or they cannot be digested.
///
/// The file list never comes from Redis: Git and the layout decide what the
/// app owns, the stored digest only confirms it.
pub(super) fn from_own_dir(
    tree: &GitTree,
    layout: &LayoutOptions,
    name: &AppName,
) -> Result<Option<(Vec<Member>, Sha256Digest)>, ArtifactError> {
    let dir = app_dir(layout, name);
    let listing = tree
        .list_dir(&dir, layout.limits.max_tree_entries)
        .map_err(ArtifactError::Mirror)?;
    let own = LayoutOptions {
        root: dir,
        // A generator of the configuration belongs to the real root only; any
        // other app's generator is in its own app.yaml, read as the root's.
        root_children: name
            .is_root()
            .then(|| layout.root_children.clone())
            .flatten(),
        ..layout.clone()
    };
    let apps = discover_in(tree, &listing, &own)?;
    match apps.apps.get(&AppName::root()) {
        Some(app) => members_of(tree, &own, &listing, &apps, app),
        None => Ok(None),
    }
}

fn discover_in(
    tree: &GitTree,
    listing: &Listing,
    layout: &LayoutOptions,
) -> Result<AppTree, ArtifactError> {
    let entries: Vec<&Entry> = listing.entries.iter().collect();
    discover(
        tree,
        &entries,
        &listing.unusable,
        layout,
        &BlobCache::default(),
        &|_| None,
    )
    .map_err(ArtifactError::Mirror)
}

/// `app`'s files with the hashes a digest of them computed, and that digest;
/// `None` if they cannot be digested (a symlink leaving the app, a cap).
fn members_of(
    tree: &GitTree,
    layout: &LayoutOptions,
    listing: &Listing,
    apps: &AppTree,
    app: &App,
) -> Result<Option<(Vec<Member>, Sha256Digest)>, ArtifactError> {
    let symlinks: HashSet<&str> = listing
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
        .map(|e| &*e.path)
        .collect();
    let is_symlink = |path: &str| symlinks.contains(path);
    let surroundings = Surroundings::of(&is_symlink, layout, apps);
    let cache = BlobCache::default();
    let Some(digest) = digest_apps(tree, &surroundings, &[app], &cache, &layout.limits)
        .map_err(ArtifactError::Mirror)?
        .remove(&app.name)
        .and_then(Result::ok)
    else {
        return Ok(None);
    };
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
    Ok(Some((members, digest.digest)))
}
