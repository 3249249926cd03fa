//! Layout discovery: markers, generators, names, ownership, parents, dependencies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use globset::{GlobSet, GlobSetBuilder};

use super::paths::{ancestors, join, root_relative, split_last};
use super::{App, AppName, AppSpec, AppTree, Generator, GlobPattern, LayoutOptions, Problem};
use crate::tree::{
    self, BlobCache, Entry, EntryKind, FileHash, ReadError, Tree, Unusable, par_map,
};

/// What a directory turned out to be, before names are checked.
struct Candidate {
    marker: Option<String>,
    spec: AppSpec,
    spec_blob: Option<tree::BlobId>,
    generated: bool,
    problems: Vec<Problem>,
}

/// A source of already parsed specs (from the previous snapshot), so that an
/// unchanged `app.yaml` is not read or parsed again.
pub type KnownSpec<'a> = &'a (dyn Fn(&Entry) -> Option<AppSpec> + Sync);

/// Reads the layout of `entries` (every entry of `tree`, sorted by path) and
/// `unusable` (paths that cannot be entries). Only `app.yaml` files are read,
/// unless `known` has them; their hashes go into `cache` so that digesting does
/// not read them again.
pub fn discover(
    tree: &dyn Tree,
    entries: &[&Entry],
    unusable: &[Unusable],
    options: &LayoutOptions,
    cache: &BlobCache,
    known: KnownSpec<'_>,
) -> Result<AppTree, tree::Error> {
    let root = options.root.trim_matches('/');
    let rel = |path: &'_ str| -> Option<String> { root_relative(root, path).map(str::to_owned) };

    // Directories with a marker file are apps; read their specs on every core.
    let markers: Vec<(&Entry, String)> = entries
        .iter()
        .copied()
        .filter_map(|entry| {
            let path = rel(&entry.path)?;
            let (dir, file) = split_last(&path);
            (file == options.marker).then(|| (entry, dir.to_owned()))
        })
        .collect();
    let parsed = par_map(tree, &markers, |reader, buf, (entry, dir)| {
        match known(entry) {
            Some(spec) => Ok(spec),
            None => read_spec(reader, buf, entry, &display_name(dir), options, cache),
        }
    })?;

    let mut candidates: BTreeMap<String, Candidate> = BTreeMap::new();
    candidates.insert(String::new(), Candidate::generated(false));
    for ((entry, dir), result) in markers.iter().zip(parsed) {
        let mut candidate = Candidate::generated(false);
        candidate.marker = Some(entry.path.to_string());
        match result {
            Ok(spec) => {
                candidate.spec = spec;
                candidate.spec_blob = entry.blob;
            }
            Err(problem) => candidate.problems.push(problem),
        }
        candidates.insert(dir.clone(), candidate);
    }

    // Only generators need the set of directories: skip building it otherwise.
    let has_generator =
        options.root_children.is_some() || candidates.values().any(|c| c.spec.children.is_some());
    if has_generator {
        let dirs = directories(entries.iter().filter_map(|e| rel(&e.path)));
        generate_children(&mut candidates, &dirs, options.root_children.as_ref());
    }

    // Names are checked only now: a generated directory needs a valid name too.
    // Hash maps: ownership looks every file's ancestors up in them. Apps are
    // boxed: a table of 430-byte apps, sized by doubling, would be the largest
    // transient of a scan (7.5 MB at 10,000 apps).
    let mut apps: HashMap<String, Box<App>> = HashMap::with_capacity(candidates.len());
    let mut rejected: HashSet<String> = HashSet::new();
    let mut problems = Vec::new();
    let root_is_empty = !entries
        .iter()
        .any(|e| root_relative(root, &e.path).is_some());
    if !root.is_empty() && root_is_empty {
        problems.push(Problem::in_app(
            super::ROOT,
            format!("the root app's directory {root:?} holds no files"),
        ));
    }
    for (dir, candidate) in candidates {
        match AppName::from_dir(&dir) {
            Ok(name) => {
                apps.insert(
                    dir.clone(),
                    Box::new(App {
                        name,
                        dir: join(root, &dir),
                        parent: None,
                        children: Vec::new(),
                        generated: candidate.generated,
                        marker: candidate.marker,
                        spec: candidate.spec,
                        spec_blob: candidate.spec_blob,
                        files: Vec::new(),
                        problems: candidate.problems,
                        read_problems: Vec::new(),
                    }),
                );
            }
            Err(e) => {
                let problem = match candidate.marker {
                    Some(marker) => Problem::in_file(&dir, marker, e.to_string()),
                    None => Problem::in_app(&dir, format!("generated app: {e}")),
                };
                problems.push(problem);
                rejected.insert(dir);
            }
        }
    }

    assign_files(
        &mut apps,
        &rejected,
        entries,
        unusable,
        root,
        options,
        &mut problems,
    );
    link_parents(&mut apps);
    let mut tree = AppTree {
        apps: apps
            .into_values()
            .map(|app| (app.name.clone(), *app))
            .collect(),
        rejected: rejected.into_iter().collect(),
        problems,
    };
    check_dependencies(&mut tree);
    Ok(tree)
}

impl Candidate {
    fn generated(generated: bool) -> Self {
        Candidate {
            marker: None,
            spec: AppSpec::default(),
            spec_blob: None,
            generated,
            problems: Vec::new(),
        }
    }
}

/// Reads and parses one `app.yaml` (not a symlink, size-capped).
pub(crate) fn read_spec(
    reader: &mut dyn tree::Reader,
    buf: &mut Vec<u8>,
    entry: &Entry,
    app: &str,
    options: &LayoutOptions,
    cache: &BlobCache,
) -> Result<AppSpec, Problem> {
    let problem = |message: String| Problem::in_file(app, &*entry.path, message);
    if entry.kind == EntryKind::Symlink {
        return Err(problem(format!(
            "{} must be a regular file, not a symlink",
            options.marker
        )));
    }
    reader
        .read(entry, options.limits.max_spec_bytes, buf)
        .map_err(|e| match e {
            ReadError::TooLarge { size, max } => problem(format!(
                "{} is {size} bytes, over the cap of {max} bytes",
                options.marker
            )),
            other => problem(crate::error_chain(&other)),
        })?;
    if let Some(id) = entry.blob {
        cache.insert(id, FileHash::of(buf));
    }
    AppSpec::parse(buf).map_err(|e| problem(e.message).at(e.line, e.column))
}

/// Adds the apps made by directory generators. A generator only claims directories
/// whose nearest enclosing `app.yaml` app is its own: it never reaches into another
/// app's subtree.
fn generate_children(
    candidates: &mut BTreeMap<String, Candidate>,
    dirs: &BTreeSet<String>,
    root_children: Option<&Generator>,
) {
    let explicit: BTreeSet<String> = candidates.keys().cloned().collect();
    let mut generated = Vec::new();
    for (dir, candidate) in candidates.iter() {
        let generator = match (&candidate.spec.children, dir.is_empty()) {
            (Some(g), _) => g,
            (None, true) => match root_children {
                Some(g) => g,
                None => continue,
            },
            (None, false) => continue,
        };
        let include = glob_set(&generator.dirs);
        let exclude = glob_set(&generator.exclude);
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        for sub in dirs
            .range(prefix.clone()..)
            .take_while(|d| d.starts_with(&prefix))
        {
            let relative = &sub[prefix.len()..];
            if relative.is_empty() || explicit.contains(sub) {
                continue;
            }
            if !include.is_match(relative) || exclude.is_match(relative) {
                continue;
            }
            let owner = ancestors(sub).skip(1).find(|a| explicit.contains(*a));
            if owner == Some(dir.as_str()) {
                generated.push(sub.clone());
            }
        }
    }
    for dir in generated {
        candidates
            .entry(dir)
            .or_insert_with(|| Candidate::generated(true));
    }
}

/// Gives every file to its nearest enclosing app, filtered by that app's
/// include/exclude globs (the marker file always belongs to its app).
fn assign_files(
    apps: &mut HashMap<String, Box<App>>,
    rejected: &HashSet<String>,
    entries: &[&Entry],
    unusable: &[Unusable],
    root: &str,
    options: &LayoutOptions,
    problems: &mut Vec<Problem>,
) {
    // Apps mostly share a handful of include/exclude lists: compile each list once.
    let mut compiled: Vec<Filter> = Vec::new();
    let mut by_patterns: HashMap<(&[GlobPattern], &[GlobPattern]), usize> = HashMap::new();
    let mut filter_of: HashMap<String, usize> = HashMap::with_capacity(apps.len());
    for (dir, app) in apps.iter() {
        let key = (app.spec.include.as_slice(), app.spec.exclude.as_slice());
        let index = *by_patterns.entry(key).or_insert_with(|| {
            compiled.push(Filter::new(&app.spec));
            compiled.len() - 1
        });
        filter_of.insert(dir.clone(), index);
    }
    drop(by_patterns);
    let max_files = options.limits.max_app_files;
    let mut over_cap: HashSet<String> = HashSet::new();
    for &entry in entries {
        let Some(path) = root_relative(root, &entry.path) else {
            continue;
        };
        let (file_dir, _) = split_last(path);
        let Some(owner) =
            ancestors(file_dir).find(|a| apps.contains_key(*a) || rejected.contains(*a))
        else {
            continue;
        };
        let Some(app) = apps.get_mut(owner) else {
            continue; // inside a directory whose name was rejected
        };
        let relative = app.relative(&entry.path);
        let is_marker = app.marker.as_deref() == Some(&*entry.path);
        if !is_marker && !compiled[filter_of[owner]].admits(relative) {
            continue;
        }
        if app.files.len() < max_files {
            app.files.push(entry.clone());
        } else if over_cap.insert(owner.to_owned()) {
            app.problems.push(Problem::in_app(
                app.name.as_str(),
                format!("app has more than {max_files} files"),
            ));
        }
    }
    // The lists live as long as the snapshot: drop the slack of their doubling.
    for app in apps.values_mut() {
        app.files.shrink_to_fit();
    }
    for unusable in unusable {
        let Some(path) = root_relative(root, &unusable.path) else {
            continue;
        };
        let (file_dir, _) = split_last(path);
        let owner = ancestors(file_dir).find(|a| apps.contains_key(*a) || rejected.contains(*a));
        let app_name = owner.map(display_name).unwrap_or_else(|| ".".to_owned());
        let problem = Problem::in_file(&app_name, &unusable.path, unusable.reason.to_string());
        match owner.and_then(|o| apps.get_mut(o)) {
            Some(app) => app.problems.push(problem),
            None => problems.push(problem),
        }
    }
}

/// Sets each app's parent (nearest enclosing app) and children.
fn link_parents(apps: &mut HashMap<String, Box<App>>) {
    let links: Vec<(String, String)> = apps
        .keys()
        .filter(|dir| !dir.is_empty())
        .filter_map(|dir| {
            let parent = ancestors(dir).skip(1).find(|a| apps.contains_key(*a))?;
            Some((dir.clone(), parent.to_owned()))
        })
        .collect();
    for (child, parent) in links {
        let parent_name = apps[&parent].name.clone();
        let child_name = apps[&child].name.clone();
        if let Some(app) = apps.get_mut(&child) {
            app.parent = Some(parent_name);
        }
        if let Some(app) = apps.get_mut(&parent) {
            app.children.push(child_name);
        }
    }
    for app in apps.values_mut() {
        app.children.sort_unstable();
    }
}

/// `depends_on` must name existing apps, never the app itself or one of its
/// descendants (a parent is always signalled before its children), and never form
/// a cycle: any of these would make the app wait forever.
fn check_dependencies(tree: &mut AppTree) {
    let mut found: Vec<(AppName, String)> = Vec::new();
    for app in tree.apps.values() {
        for dep in &app.spec.depends_on {
            let message = if !tree.apps.contains_key(dep) {
                format!("depends_on: unknown app {dep:?}")
            } else if dep == &app.name || is_descendant(dep, &app.name) {
                format!(
                    "depends_on: {dep:?} is this app or one of its children, which always wait for it"
                )
            } else {
                continue;
            };
            found.push((app.name.clone(), message));
        }
    }
    for cycle in dependency_cycles(tree) {
        let path: Vec<&str> = cycle.iter().map(AppName::as_str).collect();
        let message = format!("depends_on cycle: {} -> {}", path.join(" -> "), path[0]);
        for name in cycle.iter() {
            found.push((name.clone(), message.clone()));
        }
    }
    for (name, message) in found {
        if let Some(app) = tree.apps.get_mut(&name) {
            let line = app.spec.depends_on_line;
            let problem = match &app.marker {
                Some(marker) => Problem::in_file(name.as_str(), marker, message).at(line, None),
                None => Problem::in_app(name.as_str(), message),
            };
            app.problems.push(problem);
        }
    }
}

fn is_descendant(candidate: &AppName, of: &AppName) -> bool {
    of.is_root() || candidate.as_str().starts_with(&format!("{}/", of.as_str()))
}

/// Each elementary cycle reachable by depth-first search, reported once.
fn dependency_cycles(tree: &AppTree) -> Vec<Vec<AppName>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: HashMap<&AppName, Mark> = tree.apps.keys().map(|k| (k, Mark::New)).collect();
    let mut cycles = Vec::new();
    for start in tree.apps.keys() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (app, index of the next dependency to visit).
        let mut stack: Vec<(&AppName, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Active);
        while let Some((app, next)) = stack.last_mut() {
            let deps = &tree.apps[*app].spec.depends_on;
            let Some(dep) = deps.get(*next) else {
                marks.insert(*app, Mark::Done);
                stack.pop();
                continue;
            };
            *next += 1;
            let Some((dep, _)) = tree.apps.get_key_value(dep) else {
                continue;
            };
            match marks[dep] {
                Mark::New => {
                    marks.insert(dep, Mark::Active);
                    stack.push((dep, 0));
                }
                Mark::Active => {
                    let from = stack
                        .iter()
                        .position(|(a, _)| *a == dep)
                        .expect("active apps are on the stack");
                    cycles.push(stack[from..].iter().map(|(a, _)| (*a).clone()).collect());
                }
                Mark::Done => {}
            }
        }
    }
    cycles
}

/// An app's include/exclude globs. `None` means "everything" (the default
/// include), which skips matching on the hot path.
pub(crate) struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Filter {
    pub(crate) fn new(spec: &AppSpec) -> Self {
        let everything = spec.include.iter().any(|g| g.0 == "**");
        Filter {
            include: (!everything).then(|| glob_set(&spec.include)),
            exclude: (!spec.exclude.is_empty()).then(|| glob_set(&spec.exclude)),
        }
    }

    pub(crate) fn admits(&self, relative: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(relative))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(relative))
    }
}

fn glob_set(patterns: &[GlobPattern]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(pattern.glob());
    }
    builder
        .build()
        .expect("every pattern was validated when parsed")
}

/// Every directory that holds an entry, as root-relative paths (`""` excluded).
fn directories(paths: impl Iterator<Item = String>) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        let (dir, _) = split_last(&path);
        for ancestor in ancestors(dir) {
            if ancestor.is_empty() || !dirs.insert(ancestor.to_owned()) {
                break;
            }
        }
    }
    dirs
}

fn display_name(dir: &str) -> String {
    if dir.is_empty() {
        super::ROOT.to_owned()
    } else {
        dir.to_owned()
    }
}
