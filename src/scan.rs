//! A full scan of one snapshot: tree -> layout -> digests. `canopy tree`,
//! `canopy validate` and a daemon's first poll all start here.

use std::collections::BTreeMap;

use crate::digest::{AppDigest, digest_apps};
use crate::layout::{App, AppName, AppTree, LayoutOptions, discover};
use crate::tree::{self, BlobCache, Tree};

/// The apps of a snapshot and the digest of every valid one.
#[derive(Debug)]
pub struct Scan {
    /// Where the snapshot came from (`commit 1a2b... of repo`, `directory ./x`).
    pub source: String,
    /// The commit id, for Git snapshots.
    pub revision: Option<String>,
    pub apps: AppTree,
    pub digests: BTreeMap<AppName, AppDigest>,
}

impl Scan {
    pub fn has_problems(&self) -> bool {
        !self.apps.all_problems().is_empty()
    }
}

/// Lists, discovers and digests everything. Problems of single apps end up in the
/// result; only a tree that cannot be read at all is an error.
pub fn scan(
    tree: &dyn Tree,
    options: &LayoutOptions,
    cache: &BlobCache,
) -> Result<Scan, tree::Error> {
    let listing = tree.list(options.limits.max_tree_entries)?;
    let mut apps = discover(tree, &listing, options, cache)?;
    let valid: Vec<&App> = apps.apps.values().filter(|a| a.is_valid()).collect();
    let results = digest_apps(tree, &listing, &valid, cache, &options.limits)?;
    let mut digests = BTreeMap::new();
    for (name, result) in results {
        match result {
            Ok(digest) => {
                digests.insert(name, digest);
            }
            Err(problems) => {
                if let Some(app) = apps.apps.get_mut(&name) {
                    app.problems.extend(problems);
                }
            }
        }
    }
    Ok(Scan {
        source: tree.describe(),
        revision: tree.revision(),
        apps,
        digests,
    })
}
