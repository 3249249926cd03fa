//! What to signal: the per-app difference between two desired states (DESIGN
//! section 5). Pure: no Git, no Redis, no clock.

use crate::digest::{AppDigest, ManifestLine};
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileChange {
    pub path: String,
    pub change: FileChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.path.as_bytes().cmp(b.path.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        let (path, change) = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                (&old[i - 1].path, Some(FileChangeKind::Deleted))
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (&new[j - 1].path, Some(FileChangeKind::Added))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                let modified = old[i - 1].hash != new[j - 1].hash;
                (
                    &new[j - 1].path,
                    modified.then_some(FileChangeKind::Modified),
                )
            }
        };
        if let Some(change) = change {
            out.push(FileChange {
                path: path.clone(),
                change,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::FileHash;

    fn line(path: &str, content: &str) -> ManifestLine {
        ManifestLine {
            path: path.to_owned(),
            hash: FileHash::of(content.as_bytes()),
        }
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
