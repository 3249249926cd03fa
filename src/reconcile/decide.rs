//! What to write for each app, given the new desired state and what the store
//! holds. Pure: the store's answers come in as values.
//!
//! The store, not the in-memory snapshot, is the baseline: a write happens only
//! when the stored digest differs, so re-planning the same commit (a retry, a
//! restart, a duplicate webhook) signals nothing, and whatever Redis lost is
//! written again.

use std::collections::BTreeSet;

use crate::digest::AppDigest;
use crate::layout::{App, AppName, SyncPolicy};
use crate::plan::{AppChange, AppPlan, FileChange, FileChangeKind, Plan, merge_manifests};
use crate::scan::Scan;
use crate::store::{AppWrite, MAX_CHANGED, Signal, SignalKind, StoredDesired, WriteOp};

/// Which apps a cycle looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Only the apps a poll's plan names: the normal, incremental case.
    Plan(&'a Plan),
    /// Every app in Git plus every app the store lists (first cycle, after Redis
    /// lost data or a failed write): the store is compared with Git as a whole.
    Everything { stored: &'a BTreeSet<AppName> },
}

/// An app to compare with the store.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// In Git with a digest.
    Put {
        app: &'a App,
        digest: &'a AppDigest,
        plan: Option<&'a AppPlan>,
    },
    /// Gone from Git.
    Prune {
        name: &'a AppName,
        plan: Option<&'a AppPlan>,
    },
}

impl Target<'_> {
    pub fn name(&self) -> &AppName {
        match self {
            Target::Put { app, .. } => &app.name,
            Target::Prune { name, .. } => name,
        }
    }
}

/// The targets of a scope, in signal order: puts parents first (by depth, then
/// wave, then name), then prunes children first. Invalid apps (in Git, no digest)
/// are never targets: their last good state stays desired.
pub fn targets<'a>(scan: &'a Scan, scope: Scope<'a>) -> Vec<Target<'a>> {
    let target = |name: &'a AppName, plan: Option<&'a AppPlan>| -> Option<Target<'a>> {
        match (scan.apps.apps.get(name), scan.digests.get(name)) {
            (Some(app), Some(digest)) => Some(Target::Put { app, digest, plan }),
            (Some(_), None) => None,
            (None, _) => Some(Target::Prune { name, plan }),
        }
    };
    let mut out: Vec<Target> = match scope {
        Scope::Plan(plan) => plan
            .apps
            .iter()
            .filter(|p| p.change != AppChange::Invalid)
            .filter_map(|p| target(&p.name, Some(p)))
            .collect(),
        Scope::Everything { stored } => {
            let names: BTreeSet<&AppName> = scan.apps.apps.keys().chain(stored).collect();
            names.into_iter().filter_map(|n| target(n, None)).collect()
        }
    };
    out.sort_by_cached_key(|t| match t {
        Target::Put { app, .. } => (
            0,
            effective_wave(scan, app),
            depth(&app.name),
            i64::from(app.spec.wave),
            app.name.clone(),
        ),
        Target::Prune { name, .. } => (1, 0, -depth(name), 0, (*name).clone()),
    });
    out
}

/// An app's wave, raised to its parent's: lower waves go first, and a parent
/// always precedes its children even when a child asks for a lower wave. Among
/// equal effective waves, shallower apps go first, then lower own waves, so
/// siblings raised to their parent's wave keep their relative order (a `wave: -1`
/// app under a root of wave 0 goes before its wave-0 siblings).
fn effective_wave(scan: &Scan, app: &App) -> i64 {
    let mut wave = i64::from(app.spec.wave);
    let mut parent = app.parent.as_ref();
    while let Some(name) = parent {
        let Some(up) = scan.apps.apps.get(name) else {
            break;
        };
        wave = wave.max(i64::from(up.spec.wave));
        parent = up.parent.as_ref();
    }
    wave
}

fn depth(name: &AppName) -> i64 {
    if name.is_root() {
        0
    } else {
        name.as_str().split('/').count() as i64
    }
}

/// Whether a target needs a write, and what its signal says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The store already holds this desired state.
    Skip,
    Write {
        kind: SignalKind,
        changed: Changed,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Known(Vec<FileChange>),
    /// The store's baseline is not the snapshot's (a restart, lost data): compare
    /// with the stored manifest, which the caller reads for these apps only.
    AgainstStored,
}

pub fn decide(target: &Target, stored: Option<&StoredDesired>) -> Decision {
    let stored_digest = stored.and_then(|s| s.digest.as_deref());
    match *target {
        Target::Put { digest, plan, .. } => {
            let new = digest.digest.to_string();
            let Some(old) = stored_digest else {
                let added = digest
                    .files
                    .iter()
                    .map(|l| FileChange {
                        path: l.path().to_owned(),
                        change: FileChangeKind::Added,
                    })
                    .collect();
                return Decision::Write {
                    kind: SignalKind::Sync,
                    changed: Changed::Known(added),
                };
            };
            if old == new
                && stored.and_then(|s| s.config_digest.as_deref())
                    == Some(digest.config_digest.to_string().as_str())
            {
                return Decision::Skip;
            }
            match plan {
                // The store holds exactly the state the plan started from.
                Some(p) if p.previous.map(|d| d.to_string()).as_deref() == Some(old) => {
                    Decision::Write {
                        kind: if p.change == AppChange::ConfigOnly {
                            SignalKind::Config
                        } else {
                            SignalKind::Sync
                        },
                        changed: Changed::Known(p.files.clone()),
                    }
                }
                // Whether only config changed cannot be told from a digest: a full
                // `sync` is the safe superset of a `config` reload.
                _ => Decision::Write {
                    kind: SignalKind::Sync,
                    changed: Changed::AgainstStored,
                },
            }
        }
        Target::Prune { plan, .. } => match (stored_digest, plan) {
            (None, _) => Decision::Skip,
            (Some(old), Some(p)) if p.previous.map(|d| d.to_string()).as_deref() == Some(old) => {
                Decision::Write {
                    kind: SignalKind::Prune,
                    changed: Changed::Known(p.files.clone()),
                }
            }
            (Some(_), _) => Decision::Write {
                kind: SignalKind::Prune,
                changed: Changed::AgainstStored,
            },
        },
    }
}

/// The file changes of a target against a stored manifest (path -> sha256 hex).
pub fn changes_against_stored(
    target: &Target,
    stored: &std::collections::BTreeMap<String, String>,
) -> Vec<FileChange> {
    let old = stored.iter().map(|(p, h)| (p.as_str(), h.clone()));
    match target {
        Target::Put { digest, .. } => {
            merge_manifests(old, digest.files.iter().map(|l| (l.path(), l.hash.hex())))
        }
        Target::Prune { .. } => merge_manifests(old, std::iter::empty()),
    }
}

/// Where and when a cycle writes.
#[derive(Debug, Clone)]
pub struct Context {
    pub revision: String,
    pub epoch: u64,
    /// Unix milliseconds.
    pub now: i64,
}

/// The write for a target that [`decide`] said needs one.
pub fn write(
    target: &Target,
    stored: Option<&StoredDesired>,
    kind: SignalKind,
    mut changed: Vec<FileChange>,
    context: &Context,
) -> AppWrite {
    let expected_generation = stored.map_or(0, |s| s.generation);
    let generation = stored.map_or(1, StoredDesired::next_generation);
    let changed_total = changed.len();
    changed.truncate(MAX_CHANGED);
    let mut signal = Signal {
        kind,
        app: target.name().to_string(),
        // A pruned app is gone from Git: its parent and wave come from the store.
        parent: stored.and_then(|s| s.parent.clone()),
        revision: context.revision.clone(),
        digest: None,
        previous_digest: stored.and_then(|s| s.digest.clone()),
        config_digest: None,
        generation,
        wave: stored.map_or(0, |s| s.wave),
        changed,
        changed_total,
        at: context.now,
        epoch: context.epoch,
        drift: None,
    };
    match *target {
        Target::Put { app, digest, .. } => {
            signal.parent = app.parent.as_ref().map(ToString::to_string);
            signal.digest = Some(digest.digest.to_string());
            signal.config_digest = Some(digest.config_digest.to_string());
            signal.wave = app.spec.wave;
            let desired = vec![
                ("digest", digest.digest.to_string()),
                ("config_digest", digest.config_digest.to_string()),
                ("revision", context.revision.clone()),
                ("generation", generation.to_string()),
                ("parent", signal.parent.clone().unwrap_or_default()),
                ("wave", app.spec.wave.to_string()),
                ("files", digest.files.len().to_string()),
                ("sync", sync_policy(app.spec.sync).to_owned()),
                ("depends_on", join_names(&app.spec.depends_on)),
                ("signalled_at", context.now.to_string()),
            ];
            let manual = app.spec.sync == SyncPolicy::Manual;
            AppWrite {
                app: app.name.clone(),
                expected_generation,
                op: WriteOp::Put,
                desired,
                files: digest
                    .files
                    .iter()
                    .map(|l| (l.path().to_owned(), l.hash.hex()))
                    .collect(),
                config: app
                    .spec
                    .config
                    .iter()
                    .map(|(k, v)| (k.0.clone(), v.0.clone()))
                    .collect(),
                signal: (!manual).then_some(signal),
                // Published once the dependencies report Synced (see `hold`).
                hold: !manual && !app.spec.depends_on.is_empty(),
            }
        }
        Target::Prune { name, .. } => AppWrite {
            app: name.clone(),
            expected_generation,
            op: WriteOp::Prune,
            // A tombstone: the generation must keep growing if the app comes back.
            desired: vec![
                ("generation", generation.to_string()),
                ("revision", context.revision.clone()),
                ("removed_at", context.now.to_string()),
                ("signalled_at", context.now.to_string()),
            ],
            files: Vec::new(),
            config: Vec::new(),
            signal: Some(signal),
            hold: false,
        },
    }
}

fn sync_policy(policy: SyncPolicy) -> &'static str {
    match policy {
        SyncPolicy::Auto => "auto",
        SyncPolicy::Manual => "manual",
    }
}

fn join_names(names: &[AppName]) -> String {
    names
        .iter()
        .map(AppName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LayoutOptions;
    use crate::scan::scan;
    use crate::tree::{BlobCache, EntryKind, MemTree};

    #[test]
    fn lower_waves_go_first_but_never_before_a_parent() {
        let mut tree = MemTree::new();
        for (path, content) in [
            ("app.yaml", "wave: 0\n"),
            ("late/app.yaml", "wave: 5\n"),
            // Asks for wave 1, but its parent is in wave 5: it waits for it.
            ("late/child/app.yaml", "wave: 1\n"),
            ("early/app.yaml", "wave: 2\n"),
            ("early/deep/app.yaml", "wave: 2\n"),
            // Asks for wave -1: still after the root, its parent, but before
            // its wave-0 siblings.
            ("first/app.yaml", "wave: -1\n"),
            ("alpha/app.yaml", "wave: 0\n"),
        ] {
            tree.put(path, EntryKind::File, content.as_bytes());
        }
        let scan = scan(&tree, &LayoutOptions::default(), &BlobCache::default()).unwrap();
        let stored = BTreeSet::new();
        let order: Vec<String> = targets(&scan, Scope::Everything { stored: &stored })
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(
            order,
            [
                ".",
                "first",
                "alpha",
                "early",
                "early/deep",
                "late",
                "late/child"
            ]
        );
    }
}
