//! An incremental update always equals a full rescan of the new snapshot, and its
//! plan names exactly the apps whose desired state changed (DESIGN section 4),
//! also when each step starts from a snapshot saved and loaded again.

use std::collections::BTreeMap;

use canopy::layout::{Generator, GlobPattern, LayoutOptions};
use canopy::plan::{AppChange, Plan};
use canopy::scan::{Scan, scan};
use canopy::snapshot::{self, Saved, Stamp};
use canopy::tree::{BlobCache, EntryKind, MemTree};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const DIRS: &[&str] = &[
    "", "a", "a/b", "a/b/c", "d", "d/e", "gen", "gen/x", "gen/y", "gen/x/z", "Bad",
];
const FILES: &[&str] = &["app.yaml", "f1.yaml", "f2.md", "link"];
const SPECS: &[&str] = &[
    "",
    "exclude: ['*.md']\n",
    "children: {dirs: ['*']}\n",
    "children: {dirs: ['*'], exclude: ['y']}\n",
    "include: ['*.yaml']\n",
    "config: {A: 1}\n",
    "config: {A: 2}\nsecrets: [s]\n",
    "wave: 3\nsync: manual\n",
    "depends_on: [a]\n",
    "depends_on: [d]\n",
    "bad_key: 1\n",
];
/// Whether a link is acceptable depends on where nested apps are: the
/// directories below `a`, `d`, `gen` and the root may become apps (or
/// rejected ones, `Bad`) and stop being so, with or without files.
const TARGETS: &[&str] = &[
    "f1.yaml",
    "../f1.yaml",
    "/etc/passwd",
    "../../../../x",
    "link",
    "f2.md",
    "b/f1.yaml",
    "e/../f1.yaml",
    "x/f1.yaml",
    "Bad/f1.yaml",
];

#[derive(Debug, Clone)]
enum Op {
    Put {
        dir: usize,
        file: usize,
        content: usize,
    },
    Remove {
        dir: usize,
        file: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..DIRS.len(), 0..FILES.len(), 0..12usize).prop_map(|(dir, file, content)| Op::Put { dir, file, content }),
        1 => (0..DIRS.len(), 0..FILES.len()).prop_map(|(dir, file)| Op::Remove { dir, file }),
    ]
}

fn path(dir: usize, file: usize) -> String {
    match DIRS[dir] {
        "" => FILES[file].to_owned(),
        d => format!("{d}/{}", FILES[file]),
    }
}

fn apply(tree: &mut MemTree, op: &Op) {
    match *op {
        Op::Put { dir, file, content } => {
            let path = path(dir, file);
            match FILES[file] {
                "app.yaml" => tree.put(
                    &path,
                    EntryKind::File,
                    SPECS[content % SPECS.len()].as_bytes(),
                ),
                "link" => tree.put(
                    &path,
                    EntryKind::Symlink,
                    TARGETS[content % TARGETS.len()].as_bytes(),
                ),
                _ => tree.put(
                    &path,
                    EntryKind::File,
                    format!("content {content}\n").as_bytes(),
                ),
            }
        }
        Op::Remove { dir, file } => tree.remove(&path(dir, file)),
    }
}

/// Everything observable about a snapshot, for comparison.
fn observable(scan: &Scan) -> String {
    let mut out = String::new();
    for app in scan.apps.apps.values() {
        out.push_str(&format!(
            "{} parent={:?} children={:?} generated={} marker={:?} spec={:?} files={:?} problems={:?} read={:?} digest={:?}\n",
            app.name,
            app.parent,
            app.children,
            app.generated,
            app.marker,
            app.spec,
            app.files.iter().map(|f| (&f.path, f.kind, f.blob)).collect::<Vec<_>>(),
            app.problems,
            app.read_problems,
            scan.digests.get(&app.name),
        ));
    }
    out.push_str(&format!(
        "rejected={:?} problems={:?}\n",
        scan.apps.rejected, scan.apps.problems
    ));
    out
}

/// `scan` saved as `stamp` in a new directory, and read back.
fn save_and_read(scan: &Scan, stamp: &Stamp) -> (tempfile::TempDir, Saved) {
    let dir = tempfile::tempdir().unwrap();
    snapshot::save(dir.path(), stamp, scan).unwrap();
    let saved = Saved::read(dir.path(), stamp).unwrap();
    (dir, saved)
}

fn options(root_generator: bool) -> LayoutOptions {
    LayoutOptions {
        root_children: root_generator.then(|| Generator {
            dirs: vec![GlobPattern::parse("gen/*").unwrap()],
            exclude: vec![],
        }),
        ..LayoutOptions::default()
    }
}

/// `cases` per test, with failures saved to and replayed from
/// `incremental.proptest-regressions` next to this file. Proptest's default
/// (`SourceParallel`) would look for `tests/proptest-regressions/incremental.txt`
/// instead, because `tests/it/` holds a `main.rs`.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn incremental_update_equals_full_rescan(
        initial in proptest::collection::vec(op(), 0..25),
        steps in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..6),
        root_generator in any::<bool>(),
    ) {
        let options = options(root_generator);
        let cache = BlobCache::default();
        let mut tree = MemTree::new();
        for op in &initial {
            apply(&mut tree, op);
        }
        let mut incremental = scan(&tree, &options, &cache).unwrap();
        for (i, step) in steps.iter().enumerate() {
            let before_full = scan(&tree, &options, &BlobCache::default()).unwrap();
            let mut next = tree.clone();
            for op in step {
                apply(&mut next, op);
            }
            let changes = tree.diff(&next);
            // The snapshot a new process would find before this step.
            let before = Stamp { commit: format!("step {i}"), layout: "l".to_owned() };
            let (dir, mut saved) = save_and_read(&incremental, &before);
            let update = incremental.update(&next, &changes, &options, &cache).unwrap();
            // A snapshot saved and loaded again (a new process) is the same
            // snapshot, and the next step goes on from the loaded copy.
            let after = Stamp { commit: format!("step {}", i + 1), layout: "l".to_owned() };
            let (copy, _) = save_and_read(&incremental, &after);
            let loaded = snapshot::load(copy.path(), &after).unwrap();
            prop_assert_eq!(&loaded, &incremental);
            let full = scan(&next, &options, &BlobCache::default()).unwrap();
            prop_assert_eq!(observable(&incremental), observable(&full), "changes: {:?}", changes);

            // The plan covers exactly the apps whose desired digest changed.
            let plan = Plan::after(&update, &incremental);
            let planned: BTreeMap<String, AppChange> =
                plan.apps.iter().map(|a| (a.name.to_string(), a.change)).collect();
            for name in before_full.digests.keys().chain(full.digests.keys()) {
                let differs = before_full.digests.get(name) != full.digests.get(name);
                prop_assert_eq!(differs, planned.contains_key(name.as_str()), "app {} in {:?}", name, planned);
            }

            // A new process that moves only the part of the saved snapshot that
            // the changes touch plans the same, and saves the same snapshot.
            if let Some(mut part) = saved.part(&options.root, &changes).unwrap()
                && let Some(moved) = part.update_in_place(&next, &changes, &options, &BlobCache::default()).unwrap()
            {
                prop_assert_eq!(&Plan::after(&moved, &part), &plan);
                saved.save_moved(&after, &part).unwrap();
                prop_assert_eq!(&snapshot::load(dir.path(), &after).unwrap(), &incremental);
            }
            tree = next;
            incremental = loaded;
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Commits that only modify files, as most do: a new process moves the part
    /// of the saved snapshot they touch, and must plan and save exactly what the
    /// whole snapshot would.
    #[test]
    fn a_restored_part_moves_like_the_whole_snapshot(
        initial in proptest::collection::vec(op(), 5..40),
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), 0..12usize), 1..4),
        root_generator in any::<bool>(),
    ) {
        let options = options(root_generator);
        let mut tree = MemTree::new();
        for op in &initial {
            apply(&mut tree, op);
        }
        let whole = scan(&tree, &options, &BlobCache::default()).unwrap();
        let existing: Vec<(usize, usize)> = (0..DIRS.len())
            .flat_map(|dir| (0..FILES.len()).map(move |file| (dir, file)))
            .filter(|&(dir, file)| whole.entries.contains_key(path(dir, file).as_str()))
            .collect();
        prop_assume!(!existing.is_empty());
        let mut next = tree.clone();
        for (pick, content) in &picks {
            let (dir, file) = *pick.get(&existing);
            apply(&mut next, &Op::Put { dir, file, content: *content });
        }
        let changes = tree.diff(&next);
        let before = Stamp { commit: "before".to_owned(), layout: "l".to_owned() };
        let after = Stamp { commit: "after".to_owned(), layout: "l".to_owned() };
        let (dir, mut saved) = save_and_read(&whole, &before);

        let mut moved_whole = whole.clone();
        let update = moved_whole.update(&next, &changes, &options, &BlobCache::default()).unwrap();
        let plan = Plan::after(&update, &moved_whole);
        if let Some(mut part) = saved.part(&options.root, &changes).unwrap()
            && let Some(moved) = part.update_in_place(&next, &changes, &options, &BlobCache::default()).unwrap()
        {
            prop_assert!(!update.relayout);
            prop_assert_eq!(&Plan::after(&moved, &part), &plan);
            saved.save_moved(&after, &part).unwrap();
            prop_assert_eq!(&snapshot::load(dir.path(), &after).unwrap(), &moved_whole);
        }
    }
}

#[test]
fn a_one_file_change_stays_in_place_and_reads_one_blob() {
    let options = LayoutOptions::default();
    let cache = BlobCache::default();
    let mut tree = MemTree::new();
    for i in 0..50 {
        tree.put(&format!("team/app-{i}/app.yaml"), EntryKind::File, b"");
        tree.put(
            &format!("team/app-{i}/deploy.yaml"),
            EntryKind::File,
            format!("v1 {i}").as_bytes(),
        );
    }
    let mut snapshot = scan(&tree, &options, &cache).unwrap();
    let (_, misses) = cache.stats();

    let mut next = tree.clone();
    next.put("team/app-7/deploy.yaml", EntryKind::File, b"v2");
    let update = snapshot
        .update(&next, &tree.diff(&next), &options, &cache)
        .unwrap();
    assert!(!update.relayout);
    assert_eq!(cache.stats().1 - misses, 1, "only the changed blob is read");
    let plan = Plan::after(&update, &snapshot);
    assert_eq!(plan.apps.len(), 1);
    assert_eq!(plan.apps[0].name.as_str(), "team/app-7");
    assert_eq!(plan.apps[0].change, AppChange::Modified);
}

#[test]
fn config_only_changes_are_planned_as_config() {
    let options = LayoutOptions::default();
    let cache = BlobCache::default();
    let mut tree = MemTree::new();
    tree.put(
        "svc/app.yaml",
        EntryKind::File,
        b"config: {LOG_LEVEL: info}\n",
    );
    tree.put("svc/deploy.yaml", EntryKind::File, b"x");
    let mut snapshot = scan(&tree, &options, &cache).unwrap();

    let mut next = tree.clone();
    next.put(
        "svc/app.yaml",
        EntryKind::File,
        b"config: {LOG_LEVEL: debug}\n",
    );
    let update = snapshot
        .update(&next, &tree.diff(&next), &options, &cache)
        .unwrap();
    assert!(
        !update.relayout,
        "a config change does not touch the layout"
    );
    let plan = Plan::after(&update, &snapshot);
    assert_eq!(plan.apps.len(), 1);
    assert_eq!(plan.apps[0].change, AppChange::ConfigOnly);

    // A change of sync policy is not a config reload.
    let mut third = next.clone();
    third.put(
        "svc/app.yaml",
        EntryKind::File,
        b"config: {LOG_LEVEL: debug}\nsync: manual\n",
    );
    let update = snapshot
        .update(&third, &next.diff(&third), &options, &cache)
        .unwrap();
    assert_eq!(
        Plan::after(&update, &snapshot).apps[0].change,
        AppChange::Modified
    );
}

#[test]
fn removing_an_app_plans_a_prune_and_moves_its_files_to_the_parent() {
    let options = LayoutOptions::default();
    let cache = BlobCache::default();
    let mut tree = MemTree::new();
    tree.put("app.yaml", EntryKind::File, b"");
    tree.put("svc/app.yaml", EntryKind::File, b"");
    tree.put("svc/deploy.yaml", EntryKind::File, b"x");
    let mut snapshot = scan(&tree, &options, &cache).unwrap();

    let mut next = tree.clone();
    next.remove("svc/app.yaml");
    let update = snapshot
        .update(&next, &tree.diff(&next), &options, &cache)
        .unwrap();
    assert!(update.relayout);
    let plan = Plan::after(&update, &snapshot);
    let changes: Vec<(&str, AppChange)> = plan
        .apps
        .iter()
        .map(|a| (a.name.as_str(), a.change))
        .collect();
    assert_eq!(
        changes,
        [(".", AppChange::Modified), ("svc", AppChange::Removed)]
    );
}

/// A link may not point into a nested app, and a nested app can appear in a
/// directory that held none of the parent's files: the parent's files do not
/// change, yet its link becomes invalid, and valid again when the child goes.
/// The update must see it as a full scan does, and plan it.
#[test]
fn a_nested_app_appearing_under_a_link_target_invalidates_the_parent() {
    let options = LayoutOptions::default();
    let cache = BlobCache::default();
    let mut tree = MemTree::new();
    tree.put("team/app.yaml", EntryKind::File, b"");
    tree.put("team/deploy.yaml", EntryKind::File, b"x");
    tree.put("team/link", EntryKind::Symlink, b"db/schema.sql");
    let mut snapshot = scan(&tree, &options, &cache).unwrap();
    let team = canopy::layout::AppName::parse("team").unwrap();
    assert!(
        snapshot.digests.contains_key(&team),
        "a dangling in-app link"
    );

    let mut with_child = tree.clone();
    with_child.put("team/db/app.yaml", EntryKind::File, b"");
    with_child.put("team/db/schema.sql", EntryKind::File, b"create");
    let update = snapshot
        .update(&with_child, &tree.diff(&with_child), &options, &cache)
        .unwrap();
    assert_eq!(snapshot, scan(&with_child, &options, &cache).unwrap());
    assert!(!snapshot.digests.contains_key(&team));
    let plan = Plan::after(&update, &snapshot);
    let change = plan.apps.iter().find(|a| a.name == team).map(|a| a.change);
    assert_eq!(change, Some(AppChange::Invalid));

    let update = snapshot
        .update(&tree, &with_child.diff(&tree), &options, &cache)
        .unwrap();
    assert_eq!(snapshot, scan(&tree, &options, &cache).unwrap());
    let plan = Plan::after(&update, &snapshot);
    let change = plan.apps.iter().find(|a| a.name == team).map(|a| a.change);
    assert_eq!(change, Some(AppChange::Added), "valid again: signalled");
}
