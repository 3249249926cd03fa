//! What to signal: the per-app difference between two desired states (DESIGN
//! section 5). Pure: no Git, no Redis, no clock.

use crate::digest::{AppDigest, ManifestLine, Sha256Digest};
use crate::layout::{AppName, AppSpec};
use crate::scan::{Scan, Update};

/// The signals one poll calls for, in app name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub apps: Vec<AppPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPlan {
    pub name: AppName,
    pub change: AppChange,
    /// The app's desired digest before this change (`None`: it did not exist or
    /// was invalid), so a store can tell whether it holds the same baseline.
    pub previous: Option<Sha256Digest>,
    /// Files that differ from the previous desired state (relative to the app).
    pub files: Vec<FileChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppChange {
    /// New in Git, or valid again: `sync`.
    Added,
    /// Content changed: `sync`.
    Modified,
    /// Only `config` or `secrets` of its `app.yaml` changed: `config` (reload).
    ConfigOnly,
    /// Gone from Git: `prune`.
    Removed,
    /// Still in Git but broken now: no signal, its last good state stays desired.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileChange {
    pub path: String,
    pub change: FileChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChangeKind {
    Added,
    Modified,
    Deleted,
}

impl Plan {
    /// Every valid app of a first scan is new.
    pub fn initial(scan: &Scan) -> Plan {
        let apps = scan
            .digests
            .iter()
            .map(|(name, digest)| AppPlan {
                name: name.clone(),
                change: AppChange::Added,
                previous: None,
                files: file_changes(&[], &digest.files),
            })
            .collect();
        Plan { apps }
    }

    /// The plan for an [`Update`] that moved a snapshot to `now`.
    pub fn after(update: &Update, now: &Scan) -> Plan {
        let mut apps = Vec::new();
        for (name, before) in &update.previous {
            let after = now.digests.get(name);
            let exists = now.apps.apps.contains_key(name);
            let (change, files) = match (before, after) {
                (None, None) => continue,
                (None, Some(d)) => (AppChange::Added, file_changes(&[], &d.files)),
                (Some(_), None) if exists => (AppChange::Invalid, Vec::new()),
                (Some((d, _)), None) => (AppChange::Removed, file_changes(&d.files, &[])),
                (Some((old, _)), Some(new)) if old == new => continue,
                (Some((old, old_spec)), Some(new)) => {
                    let files = file_changes(&old.files, &new.files);
                    let app = &now.apps.apps[name];
                    let marker = app.marker.as_deref().map(|m| app.relative(m));
                    let only_marker =
                        matches!(files.as_slice(), [f] if Some(f.path.as_str()) == marker);
                    let change =
                        if only_marker && only_config_changed(old_spec, &app.spec, old, new) {
                            AppChange::ConfigOnly
                        } else {
                            AppChange::Modified
                        };
                    (change, files)
                }
            };
            apps.push(AppPlan {
                name: name.clone(),
                change,
                previous: before.as_ref().map(|(d, _)| d.digest),
                files,
            });
        }
        Plan { apps }
    }
}

/// True if the specs differ only in `config` or `secrets`, and they do differ.
fn only_config_changed(
    old: &AppSpec,
    new: &AppSpec,
    old_digest: &AppDigest,
    new_digest: &AppDigest,
) -> bool {
    let strip = |spec: &AppSpec| AppSpec {
        config: Default::default(),
        secrets: Vec::new(),
        depends_on_line: None,
        ..spec.clone()
    };
    strip(old) == strip(new)
        && (old_digest.config_digest != new_digest.config_digest || old.secrets != new.secrets)
}

/// Merges two sorted manifests into added / modified / deleted paths.
fn file_changes(old: &[ManifestLine], new: &[ManifestLine]) -> Vec<FileChange> {
    merge_manifests(
        old.iter().map(|l| (l.path(), l.hash.sha256)),
        new.iter().map(|l| (l.path(), l.hash.sha256)),
    )
}

/// Merges two manifests, each sorted bytewise by path, into the paths that were
/// added, modified (content hash differs) or deleted. Hashes may be in any form
/// (raw bytes in memory, hex from Redis), as long as both sides use the same one.
pub fn merge_manifests<'a, H: PartialEq>(
    old: impl IntoIterator<Item = (&'a str, H)>,
    new: impl IntoIterator<Item = (&'a str, H)>,
) -> Vec<FileChange> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
    let mut push = |path: &str, change| {
        out.push(FileChange {
            path: path.to_owned(),
            change,
        })
    };
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) => a.0.as_bytes().cmp(b.0.as_bytes()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let (path, _) = old.next().expect("peeked");
                push(path, FileChangeKind::Deleted);
            }
            Ordering::Greater => {
                let (path, _) = new.next().expect("peeked");
                push(path, FileChangeKind::Added);
            }
            Ordering::Equal => {
                let ((_, before), (path, after)) =
                    (old.next().expect("peeked"), new.next().expect("peeked"));
                if before != after {
                    push(path, FileChangeKind::Modified);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::FileHash;

    fn line(path: &str, content: &str) -> ManifestLine {
        ManifestLine::new(path, FileHash::of(content.as_bytes()))
    }

    #[test]
    fn manifests_merge_into_file_changes() {
        let old = [line("a", "1"), line("b", "1"), line("d", "1")];
        let new = [line("b", "2"), line("c", "1"), line("d", "1")];
        let changes = file_changes(&old, &new);
        let kinds: Vec<(&str, FileChangeKind)> = changes
            .iter()
            .map(|f| (f.path.as_str(), f.change))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", FileChangeKind::Deleted),
                ("b", FileChangeKind::Modified),
                ("c", FileChangeKind::Added)
            ]
        );
    }
}
