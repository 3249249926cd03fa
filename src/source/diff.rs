//! Tree diff between two commits, as [`Change`]s. Uses gix's low-level tree diff:
//! the high-level one builds an attribute cache of the whole tree on every call,
//! which is O(repository) (notes/gix.md).

use gix::bstr::ByteSlice;
use gix::diff::tree::recorder::Change as GitChange;
use gix::objs::tree::EntryKind as GitKind;

use crate::tree::{Change, Entry, EntryKind, has_git_component};

/// The changes between two trees, or `None` when a changed path is not valid
/// UTF-8 (the caller then rescans in full, which reports the path as unusable).
pub fn diff_trees(
    repo: &gix::Repository,
    old_tree: gix::ObjectId,
    new_tree: gix::ObjectId,
) -> Result<Option<Vec<Change>>, gix::Error> {
    let old = repo.find_tree(old_tree)?;
    let new = repo.find_tree(new_tree)?;
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&old.data, repo.object_hash()),
        gix::objs::TreeRefIter::from_bytes(&new.data, repo.object_hash()),
        &mut gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .map_err(gix::Error::from_error)?;

    let mut changes = Vec::with_capacity(recorder.records.len());
    for record in recorder.records {
        // Directories are not entries: an added or deleted tree shows up as the
        // additions or deletions of its files, which are recorded too.
        let (path, before, after) = match record {
            GitChange::Addition {
                entry_mode,
                oid,
                path,
                ..
            } => (path, None, entry_kind(entry_mode).map(|k| (k, oid))),
            GitChange::Deletion {
                entry_mode, path, ..
            } => (path, entry_kind(entry_mode), None),
            GitChange::Modification {
                previous_entry_mode,
                entry_mode,
                oid,
                path,
                ..
            } => (
                path,
                entry_kind(previous_entry_mode),
                entry_kind(entry_mode).map(|k| (k, oid)),
            ),
        };
        if has_git_component(&path) {
            continue;
        }
        let Ok(path) = path.to_str() else {
            return Ok(None);
        };
        match (before, after) {
            (_, Some((kind, oid))) => changes.push(Change::Upsert(Entry {
                path: path.into(),
                kind,
                blob: Some(oid),
            })),
            (Some(_), None) => changes.push(Change::Remove(path.to_owned())),
            (None, None) => {}
        }
    }
    changes.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(Some(changes))
}

/// The entry kind of a tree entry mode; `None` for directories and submodules.
fn entry_kind(mode: gix::objs::tree::EntryMode) -> Option<EntryKind> {
    match mode.kind() {
        GitKind::Blob => Some(EntryKind::File),
        GitKind::BlobExecutable => Some(EntryKind::Executable),
        GitKind::Link => Some(EntryKind::Symlink),
        GitKind::Tree | GitKind::Commit => None,
    }
}
