//! The desired state of one snapshot: every entry, the app tree and each valid
//! app's digest. A first poll builds it with a full [`scan`]; later polls move it
//! to the next commit with [`Scan::update`], which costs work proportional to the
//! change: only changed blobs are read, and only the apps that own a changed path
//! are digested again, unless the change can alter the layout (an `app.yaml`'s
//! layout keys, a directory appearing under a generator), in which case the
//! layout is recomputed in memory from the entries, still without re-reading
//! unchanged blobs or re-parsing unchanged `app.yaml` files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::digest::{AppDigest, Surroundings, digest_apps};
use crate::layout::paths::{ancestors, join, root_relative, split_last};
use crate::layout::{
    App, AppName, AppSpec, AppTree, Filter, LayoutOptions, Problem, discover, read_spec,
};
use crate::tree::{self, BlobCache, Bounds, Change, Entry, EntryKind, Tree, Unusable, hash_entry};

/// The apps of a snapshot and the digest of every valid one.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Where the snapshot came from (`commit 1a2b... of repo`, `directory ./x`).
    pub source: String,
    /// The commit id, for Git snapshots.
    pub revision: Option<String>,
    /// Every entry of the tree, by path.
    pub entries: BTreeMap<Arc<str>, Entry>,
    pub unusable: Vec<Unusable>,
    pub apps: AppTree,
    pub digests: BTreeMap<AppName, AppDigest>,
}

/// What an update touched: the previous desired state of every app that may have
/// changed (`None`: it did not exist or was invalid). Apps not listed are unchanged.
#[derive(Debug, Default)]
pub struct Update {
    pub previous: BTreeMap<AppName, Option<(AppDigest, AppSpec)>>,
    /// Whether the layout was recomputed (for logs and metrics).
    pub relayout: bool,
}

impl Update {
    /// The update that turns `old` into `new`, found by comparing every app: for a
    /// full rescan that must still be planned against the previous state.
    pub fn between(old: &Scan, new: &Scan) -> Update {
        let names: BTreeSet<&AppName> = old.apps.apps.keys().chain(new.apps.apps.keys()).collect();
        let mut update = Update {
            relayout: true,
            ..Update::default()
        };
        for name in names {
            let before = old.digests.get(name);
            let old_spec = old.apps.apps.get(name).map(|a| &a.spec);
            if before != new.digests.get(name)
                || old_spec != new.apps.apps.get(name).map(|a| &a.spec)
            {
                let previous = before.map(|d| (d.clone(), old_spec.cloned().unwrap_or_default()));
                update.previous.insert(name.clone(), previous);
            }
        }
        update
    }
}

impl Scan {
    pub fn has_problems(&self) -> bool {
        !self.apps.all_problems().is_empty()
    }

    fn is_symlink(&self, path: &str) -> bool {
        self.entries
            .get(path)
            .is_some_and(|e| e.kind == EntryKind::Symlink)
    }

    /// Moves this snapshot to `tree`, which differs from it by `changes` (a Git
    /// tree diff). On error nothing has changed.
    pub fn update(
        &mut self,
        tree: &dyn Tree,
        changes: &[Change],
        options: &LayoutOptions,
        cache: &BlobCache,
    ) -> Result<Update, tree::Error> {
        if let Some(update) = self.update_in_place(tree, changes, options, cache)? {
            return Ok(update);
        }
        let update = self.relayout(tree, changes, options, cache)?;
        self.source = tree.describe();
        self.revision = tree.revision();
        Ok(update)
    }

    /// [`Scan::update`] when `changes` leave the layout alone; `None`, with
    /// nothing changed, when the layout must be recomputed. It reads only the
    /// entries of changed paths, the apps owning them and their ancestors, and
    /// the rejected directories, so it also works on a part of a snapshot that
    /// holds those (`snapshot::Saved::part`).
    pub fn update_in_place(
        &mut self,
        tree: &dyn Tree,
        changes: &[Change],
        options: &LayoutOptions,
        cache: &BlobCache,
    ) -> Result<Option<Update>, tree::Error> {
        let Some(in_place) = self.plan_in_place(tree, changes, options, cache)? else {
            return Ok(None);
        };
        let update = self.commit_in_place(tree, changes, in_place, options, cache)?;
        self.source = tree.describe();
        self.revision = tree.revision();
        Ok(Some(update))
    }

    /// Decides whether `changes` leave the layout alone; if so, returns the new
    /// file list (and spec, for a changed `app.yaml`) of each app they touch.
    fn plan_in_place(
        &self,
        tree: &dyn Tree,
        changes: &[Change],
        options: &LayoutOptions,
        cache: &BlobCache,
    ) -> Result<Option<BTreeMap<AppName, Touched>>, tree::Error> {
        let root = options.root.trim_matches('/');
        let changed: HashMap<&str, &Change> = changes.iter().map(|c| (c.path(), c)).collect();
        // Every directory that still holds an upserted path after the change.
        let mut kept_dirs: HashSet<&str> = HashSet::new();
        for change in changes.iter().filter(|c| matches!(c, Change::Upsert(_))) {
            kept_dirs.extend(ancestors(split_last(change.path()).0));
        }
        let mut touched: BTreeMap<AppName, Touched> = BTreeMap::new();
        let mut reader = None;
        let mut buf = Vec::new();
        for change in changes {
            let Some(path) = root_relative(root, change.path()) else {
                continue;
            };
            if self.flips_generated_dir(change, root, &changed, &kept_dirs, options) {
                return Ok(None);
            }
            let (dir, file) = split_last(path);
            let Some(owner_dir) = ancestors(dir).find(|a| self.is_app_dir(a)) else {
                continue;
            };
            let is_marker = file == options.marker;
            if is_marker && owner_dir != dir {
                return Ok(None); // a new app
            }
            if self.apps.rejected.contains(owner_dir) {
                if is_marker {
                    return Ok(None); // its files go back to the parent
                }
                continue;
            }
            let owner = AppName::from_dir(owner_dir).expect("apps have valid names");
            let app = &self.apps.apps[&owner];
            let mut new_spec = None;
            if is_marker {
                // Only a modified app.yaml that still parses, with the same layout
                // keys, stays in place; anything else re-parents files or apps.
                let Change::Upsert(entry) = change else {
                    return Ok(None);
                };
                if app.marker.is_none() || !app.is_valid() {
                    return Ok(None);
                }
                let reader = match &mut reader {
                    Some(r) => r,
                    None => reader.insert(tree.reader()?),
                };
                match read_spec(
                    reader.as_mut(),
                    &mut buf,
                    entry,
                    owner.as_str(),
                    options,
                    cache,
                ) {
                    Ok(spec) if spec.same_layout(&app.spec) => new_spec = Some((spec, entry.blob)),
                    _ => return Ok(None),
                }
            } else if !Filter::new(&app.spec).admits(app.relative(change.path())) {
                continue;
            }
            let entry = touched.entry(owner).or_insert_with(|| Touched {
                files: app.files.clone(),
                spec: None,
            });
            if new_spec.is_some() {
                entry.spec = new_spec;
            }
            apply(&mut entry.files, change);
            let cap = options.limits.max_app_files;
            if entry.files.len() > cap || app.files.len() >= cap {
                return Ok(None); // the file cap is a layout problem
            }
        }
        Ok(Some(touched))
    }

    /// True if `change` makes a directory appear or vanish where a directory
    /// generator of an enclosing app could match it.
    fn flips_generated_dir(
        &self,
        change: &Change,
        root: &str,
        changed: &HashMap<&str, &Change>,
        kept_dirs: &HashSet<&str>,
        options: &LayoutOptions,
    ) -> bool {
        let path = root_relative(root, change.path()).expect("caller checked");
        let adds = matches!(change, Change::Upsert(_)) && !self.entries.contains_key(change.path());
        let removes = matches!(change, Change::Remove(_));
        if !adds && !removes {
            return false;
        }
        for d in ancestors(split_last(path).0).filter(|d| !d.is_empty()) {
            let full = join(root, d);
            let prefix = format!("{full}/");
            let mut before = self
                .entries
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(&prefix));
            let flips = if adds {
                before.next().is_none()
            } else {
                !kept_dirs.contains(full.as_str())
                    && before.all(|(p, _)| matches!(changed.get(&**p), Some(Change::Remove(_))))
            };
            if !flips {
                return false; // then its ancestors do not flip either
            }
            let generator_above = ancestors(d).skip(1).any(|a| {
                AppName::from_dir(a)
                    .ok()
                    .and_then(|n| self.apps.apps.get(&n))
                    .is_some_and(|app| {
                        app.spec.children.is_some()
                            || (a.is_empty() && options.root_children.is_some())
                    })
            });
            if generator_above || self.is_app_dir(d) {
                return true;
            }
        }
        false
    }

    fn is_app_dir(&self, dir: &str) -> bool {
        self.apps.rejected.contains(dir)
            || AppName::from_dir(dir).is_ok_and(|n| self.apps.apps.contains_key(&n))
    }

    fn commit_in_place(
        &mut self,
        tree: &dyn Tree,
        changes: &[Change],
        touched: BTreeMap<AppName, Touched>,
        options: &LayoutOptions,
        cache: &BlobCache,
    ) -> Result<Update, tree::Error> {
        let candidates: Vec<App> = touched
            .into_iter()
            .map(|(name, t)| {
                let mut app = self.apps.apps[&name].clone();
                app.files = t.files;
                if let Some((spec, blob)) = t.spec {
                    app.spec = spec;
                    app.spec_blob = blob;
                }
                app
            })
            .collect();
        let changed: HashMap<&str, &Change> = changes.iter().map(|c| (c.path(), c)).collect();
        let is_symlink = |p: &str| match changed.get(p) {
            Some(Change::Upsert(e)) => e.kind == EntryKind::Symlink,
            Some(Change::Remove(_)) => false,
            None => self.is_symlink(p),
        };
        let refs: Vec<&App> = candidates.iter().collect();
        let surroundings = Surroundings::of(&is_symlink, options, &self.apps);
        let mut results = digest_apps(tree, &surroundings, &refs, cache, &options.limits)?;

        // Nothing below can fail: the snapshot moves as a whole.
        apply_to_entries(&mut self.entries, changes);
        let mut update = Update::default();
        for mut app in candidates {
            let name = app.name.clone();
            let before = self.digests.remove(&name);
            let old_spec = self.apps.apps[&name].spec.clone();
            update
                .previous
                .insert(name.clone(), before.map(|d| (d, old_spec)));
            app.read_problems.clear();
            // Invalid apps are not digested: they get no result.
            match results.remove(&name) {
                Some(Ok(digest)) => {
                    self.digests.insert(name.clone(), digest);
                }
                Some(Err(problems)) => app.read_problems = problems,
                None => {}
            }
            self.apps.apps.insert(name, app);
        }
        Ok(update)
    }

    /// Recomputes the layout from the updated entries, reusing parsed specs and
    /// digests of apps whose files did not change.
    fn relayout(
        &mut self,
        tree: &dyn Tree,
        changes: &[Change],
        options: &LayoutOptions,
        cache: &BlobCache,
    ) -> Result<Update, tree::Error> {
        let mut entries = self.entries.clone();
        apply_to_entries(&mut entries, changes);
        let specs: HashMap<&str, (&AppSpec, tree::BlobId)> = self
            .apps
            .apps
            .values()
            .filter_map(|app| Some((app.marker.as_deref()?, (&app.spec, app.spec_blob?))))
            .collect();
        let known = |entry: &Entry| {
            let (spec, blob) = specs.get(&*entry.path)?;
            (Some(*blob) == entry.blob).then(|| (*spec).clone())
        };
        let list: Vec<&Entry> = entries.values().collect();
        let mut apps = discover(tree, &list, &self.unusable, options, cache, &known)?;

        let mut reused = BTreeMap::new();
        let mut stale: Vec<&App> = Vec::new();
        let same_rejected = self.apps.rejected == apps.rejected;
        for app in apps.apps.values().filter(|a| a.is_valid()) {
            let old = self.apps.apps.get(&app.name);
            match (old, self.digests.get(&app.name)) {
                (Some(old), Some(digest)) if same_content(old, app, same_rejected) => {
                    reused.insert(app.name.clone(), digest.clone());
                }
                _ => stale.push(app),
            }
        }
        let is_symlink = |p: &str| entries.get(p).is_some_and(|e| e.kind == EntryKind::Symlink);
        let surroundings = Surroundings::of(&is_symlink, options, &apps);
        let results = digest_apps(tree, &surroundings, &stale, cache, &options.limits)?;

        let mut digests = reused;
        file_results(results, &mut digests, &mut apps);
        let new = Scan {
            source: tree.describe(),
            revision: tree.revision(),
            entries,
            unusable: self.unusable.clone(),
            apps,
            digests,
        };
        let update = Update::between(self, &new);
        *self = new;
        Ok(update)
    }
}

/// The new state of one app that an in-place update touches.
struct Touched {
    files: Vec<Entry>,
    /// A re-parsed `app.yaml` and the blob it came from.
    spec: Option<(AppSpec, Option<tree::BlobId>)>,
}

/// Applies a tree diff to the entries of a snapshot.
fn apply_to_entries(entries: &mut BTreeMap<Arc<str>, Entry>, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Upsert(entry) => {
                entries.insert(entry.path.clone(), entry.clone());
            }
            Change::Remove(path) => {
                entries.remove(path.as_str());
            }
        }
    }
}

/// Applies one change to a sorted file list.
fn apply(files: &mut Vec<Entry>, change: &Change) {
    let found = files.binary_search_by(|e| (*e.path).cmp(change.path()));
    match (change, found) {
        (Change::Upsert(entry), Ok(i)) => files[i] = entry.clone(),
        (Change::Upsert(entry), Err(i)) => files.insert(i, entry.clone()),
        (Change::Remove(_), Ok(i)) => {
            files.remove(i);
        }
        (Change::Remove(_), Err(_)) => {}
    }
}

/// Same files (path, kind, blob) and config: the digest cannot differ. Entries
/// without blob ids (directories) never count as unchanged. Whether a symlink
/// is acceptable also depends on where nested apps are (see [`Surroundings`]):
/// an app with one is unchanged only if its children and the rejected
/// directories are too, since a nested app may appear in a directory that held
/// none of the app's files.
fn same_content(old: &App, new: &App, same_rejected: bool) -> bool {
    let has_link = || new.files.iter().any(|f| f.kind == EntryKind::Symlink);
    old.spec.config == new.spec.config
        && old.files.len() == new.files.len()
        && ((old.children == new.children && same_rejected) || !has_link())
        && old
            .files
            .iter()
            .zip(&new.files)
            .all(|(a, b)| a.blob.is_some() && a == b)
}

/// Files each result of `digest_apps`: a digest, or the app's read problems.
fn file_results(
    results: BTreeMap<AppName, Result<AppDigest, Vec<Problem>>>,
    digests: &mut BTreeMap<AppName, AppDigest>,
    apps: &mut AppTree,
) {
    for (name, result) in results {
        match result {
            Ok(digest) => {
                digests.insert(name, digest);
            }
            Err(problems) => {
                if let Some(app) = apps.apps.get_mut(&name) {
                    app.read_problems = problems;
                }
            }
        }
    }
}

/// Hashes the blobs of `entries` into `cache`, until `stop` is set: the reads
/// a first scan's digest step would make, done while the layout is still being
/// worked out. Only files under the root app count. Markers are left to
/// discovery, which reads them anyway, and symlinks to the digest step (their
/// hash depends on where they are). Errors are left to the digest step too,
/// which reads those files again and reports them on their app.
fn prehash(
    tree: &dyn Tree,
    entries: &[&Entry],
    options: &LayoutOptions,
    cache: &BlobCache,
    stop: &AtomicBool,
) {
    let Ok(mut reader) = tree.reader() else {
        return;
    };
    let mut buf = Vec::new();
    let root = options.root.trim_matches('/');
    let worth_it = |e: &&&Entry| {
        e.kind != EntryKind::Symlink
            && e.blob.is_some()
            && root_relative(root, &e.path).is_some_and(|p| split_last(p).1 != options.marker)
    };
    let max = options.limits.max_file_bytes;
    for chunk in entries.chunks(64) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        for entry in chunk.iter().filter(worth_it) {
            let _ = hash_entry(reader.as_mut(), entry, cache, max, Bounds::TREE, &mut buf);
        }
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
    let entries: BTreeMap<Arc<str>, Entry> = listing
        .entries
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let list: Vec<&Entry> = entries.values().collect();
    // Much of discovery runs on one core; on a first scan the other hashes
    // blobs meanwhile. A warm cache (a daemon's rescan) already holds nearly
    // every blob: prehashing would only read files that include/exclude globs
    // leave out of every app, as far as it got before discovery ended.
    let cold = cache.is_empty();
    let stop = AtomicBool::new(false);
    let mut apps = std::thread::scope(|s| {
        if cold {
            s.spawn(|| prehash(tree, &list, options, cache, &stop));
        }
        let apps = discover(tree, &list, &listing.unusable, options, cache, &|_| None);
        stop.store(true, Ordering::Relaxed);
        apps
    })?;
    let valid: Vec<&App> = apps.apps.values().filter(|a| a.is_valid()).collect();
    let is_symlink = |p: &str| entries.get(p).is_some_and(|e| e.kind == EntryKind::Symlink);
    let surroundings = Surroundings::of(&is_symlink, options, &apps);
    let results = digest_apps(tree, &surroundings, &valid, cache, &options.limits)?;
    let mut digests = BTreeMap::new();
    file_results(results, &mut digests, &mut apps);
    Ok(Scan {
        source: tree.describe(),
        revision: tree.revision(),
        entries,
        unusable: listing.unusable,
        apps,
        digests,
    })
}
