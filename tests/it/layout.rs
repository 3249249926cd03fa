//! Layout conventions (DESIGN section 2) on the example repository and variations.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use canopy::layout::{AppName, Generator, GlobPattern, LayoutOptions};
use canopy::scan::{Scan, scan};
use canopy::tree::{BlobCache, DirTree};
use common::*;

fn scan_with(dir: &Path, options: &LayoutOptions) -> Scan {
    scan(&DirTree::new(dir), options, &BlobCache::default()).expect("scan")
}

fn name(s: &str) -> AppName {
    AppName::parse(s).unwrap()
}

fn files(scan: &Scan, app: &str) -> Vec<String> {
    scan.digests[&name(app)]
        .files
        .iter()
        .map(|f| f.path().to_owned())
        .collect()
}

fn digests(scan: &Scan) -> BTreeMap<String, String> {
    scan.digests
        .iter()
        .map(|(n, d)| (n.to_string(), d.digest.to_string()))
        .collect()
}

/// A copy of the example repository that a test may change.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("example/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn example_tree_has_the_documented_shape() {
    let scan = scan_with(&fixtures().join("example"), &LayoutOptions::default());
    assert!(
        scan.apps.all_problems().is_empty(),
        "{:?}",
        scan.apps.all_problems()
    );
    let shape: Vec<(String, Option<String>, bool)> = scan
        .apps
        .apps
        .values()
        .map(|a| {
            (
                a.name.to_string(),
                a.parent.as_ref().map(|p| p.to_string()),
                a.generated,
            )
        })
        .collect();
    let expected = [
        (".", None, false),
        ("payments", Some("."), false),
        ("payments/api", Some("payments"), false),
        ("payments/db", Some("payments"), false),
        ("platform", Some("."), false),
        ("platform/ingress", Some("platform"), false),
        ("search", Some("."), false),
        ("search/indexers/orders", Some("search"), true),
        ("search/indexers/products", Some("search"), true),
        ("search/query", Some("search"), false),
    ];
    let expected: Vec<(String, Option<String>, bool)> = expected
        .iter()
        .map(|(n, p, g)| (n.to_string(), p.map(str::to_owned), *g))
        .collect();
    assert_eq!(shape, expected);
    assert_eq!(scan.apps.apps[&name("search")].children.len(), 3);

    // Ownership: nearest enclosing app, filtered by its include/exclude.
    assert_eq!(
        files(&scan, "."),
        ["README.md", "app.yaml", "docs/runbook.md"]
    );
    assert_eq!(
        files(&scan, "payments/api"),
        ["app.yaml", "deployment.yaml", "service.yaml"]
    );
    // `include: ["*.yaml"]` does not cross directories: the excluded legacy
    // indexer's files belong to no app, and notes.txt is not included.
    assert_eq!(files(&scan, "search"), ["app.yaml", "values.yaml"]);
    assert_eq!(files(&scan, "search/indexers/orders"), ["cronjob.yaml"]);
}

#[test]
fn a_change_moves_only_the_owning_apps_digest() {
    let dir = example_copy();
    let before = digests(&scan_with(dir.path(), &LayoutOptions::default()));

    std::fs::write(
        dir.path().join("payments/api/deployment.yaml"),
        "replicas: 4\n",
    )
    .unwrap();
    let after = digests(&scan_with(dir.path(), &LayoutOptions::default()));
    let changed: Vec<&String> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    assert_eq!(
        changed,
        ["payments/api"],
        "a child change never re-signals the parent"
    );

    // Excluded files are part of no app: editing them changes nothing.
    std::fs::write(dir.path().join("payments/api/NOTES.md"), "edited\n").unwrap();
    std::fs::write(
        dir.path().join("search/indexers/legacy-v1/cronjob.yaml"),
        "x\n",
    )
    .unwrap();
    assert_eq!(
        digests(&scan_with(dir.path(), &LayoutOptions::default())),
        after
    );
}

#[test]
fn a_new_marker_makes_a_child_that_takes_its_files_from_the_parent() {
    let dir = example_copy();
    std::fs::write(dir.path().join("docs/app.yaml"), "labels: {team: docs}\n").unwrap();
    let scan = scan_with(dir.path(), &LayoutOptions::default());
    assert_eq!(files(&scan, "."), ["README.md", "app.yaml"]);
    assert_eq!(files(&scan, "docs"), ["app.yaml", "runbook.md"]);
    assert_eq!(scan.apps.apps[&name("docs")].parent, Some(AppName::root()));
}

#[test]
fn root_generator_serves_a_repo_without_canopy_files() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("README.md", "flux-style repo"),
            ("kubernetes/apps/default/echo/ks.yaml", "a"),
            ("kubernetes/apps/default/echo/app/helmrelease.yaml", "b"),
            ("kubernetes/apps/media/plex/ks.yaml", "c"),
            ("kubernetes/apps/media/old-thing/ks.yaml", "d"),
            ("kubernetes/flux/config.yaml", "e"),
        ],
    );
    let glob = |s: &str| GlobPattern::parse(s).unwrap();
    let options = LayoutOptions {
        root_children: Some(Generator {
            dirs: vec![glob("kubernetes/apps/*/*")],
            exclude: vec![glob("**/old-*")],
        }),
        ..LayoutOptions::default()
    };
    let scan = scan_with(dir.path(), &options);
    let names: Vec<&str> = scan.apps.apps.keys().map(AppName::as_str).collect();
    assert_eq!(
        names,
        [
            ".",
            "kubernetes/apps/default/echo",
            "kubernetes/apps/media/plex"
        ]
    );
    assert_eq!(
        files(&scan, "kubernetes/apps/default/echo"),
        ["app/helmrelease.yaml", "ks.yaml"]
    );
    assert_eq!(
        files(&scan, "."),
        [
            "README.md",
            "kubernetes/apps/media/old-thing/ks.yaml",
            "kubernetes/flux/config.yaml"
        ]
    );

    // The same through the CLI flags.
    let out = canopy(&[
        "tree",
        dir.path().to_str().unwrap(),
        "--children",
        "kubernetes/apps/*/*",
        "--children-exclude",
        "**/old-*",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli_names: Vec<&str> = json["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(cli_names, names);
}

#[test]
fn a_generator_never_reaches_into_another_apps_subtree() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("app.yaml", "children: {dirs: ['*', '*/*']}\n"),
            ("team/app.yaml", "wave: 1\n"),
            ("team/svc/deploy.yaml", "x"),
            ("loose/deploy.yaml", "y"),
            ("loose/sub/deploy.yaml", "z"),
        ],
    );
    let scan = scan_with(dir.path(), &LayoutOptions::default());
    let names: Vec<&str> = scan.apps.apps.keys().map(AppName::as_str).collect();
    // `team/svc` lies inside the explicit app `team`: not the root's to generate.
    assert_eq!(names, [".", "loose", "loose/sub", "team"]);
    assert_eq!(
        scan.apps.apps[&name("loose/sub")].parent,
        Some(name("loose"))
    );
    assert_eq!(files(&scan, "team"), ["app.yaml", "svc/deploy.yaml"]);
}

#[test]
fn root_path_and_marker_name_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("outside.yaml", "not part of the tree"),
            ("deploy/canopy.yml", ""),
            ("deploy/web/canopy.yml", "wave: 2\n"),
            ("deploy/web/app.yaml", "just a file here"),
            ("deploy/web/index.yaml", "w"),
        ],
    );
    let options = LayoutOptions {
        root: "deploy".to_owned(),
        marker: "canopy.yml".to_owned(),
        ..LayoutOptions::default()
    };
    let scan = scan_with(dir.path(), &options);
    let names: Vec<&str> = scan.apps.apps.keys().map(AppName::as_str).collect();
    assert_eq!(names, [".", "web"]);
    assert_eq!(scan.apps.apps[&name("web")].dir, "deploy/web");
    assert_eq!(files(&scan, "."), ["canopy.yml"]);
    assert_eq!(
        files(&scan, "web"),
        ["app.yaml", "canopy.yml", "index.yaml"]
    );
}

#[test]
fn text_tree_of_the_example() {
    let out = canopy(&["tree", "fixtures/example"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}
