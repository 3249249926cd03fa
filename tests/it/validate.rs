//! `canopy validate` and `canopy tree` on the checked-in invalid fixtures
//! (`fixtures/invalid/<case>/`, described in fixtures/README.md).
//!
//! Each case is run twice through the real binary: on the directory as it is on
//! disk, and on the same content committed to Git (`--rev main`). Both must exit 1
//! with the same problem lines (snapshotted), and the valid sibling apps of the bad
//! one must still get digests: one bad app never takes the others down.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::tree_json::{app, apps, assert_digested, assert_invalid};
use common::{canopy, fixtures, git_repo_from, repo_path, stderr, stdout};
use serde_json::Value;

/// What one fixture must produce.
struct Case {
    /// Directory under `fixtures/invalid/`.
    name: &'static str,
    /// Apps that must still be valid, with a digest.
    valid: &'static [&'static str],
    /// Apps that exist (their name is fine) but are invalid: no digest.
    invalid: &'static [&'static str],
    /// Directories rejected for their name: reported, never an app.
    rejected: &'static [&'static str],
    /// Text that must never appear in any output (symlink targets).
    secret: &'static [&'static str],
}

impl Case {
    const fn new(
        name: &'static str,
        valid: &'static [&'static str],
        invalid: &'static [&'static str],
    ) -> Self {
        Case {
            name,
            valid,
            invalid,
            rejected: &[],
            secret: &[],
        }
    }
}

/// The same snapshot read two ways: `canopy <command> <source> [--rev main]`.
struct Source<'a> {
    label: &'static str,
    path: &'a Path,
    rev: Option<&'static str>,
}

impl Source<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let path = self.path.to_str().expect("test paths are UTF-8");
        let mut all = vec![args[0], path];
        all.extend_from_slice(&args[1..]);
        if let Some(rev) = self.rev {
            all.extend_from_slice(&["--rev", rev]);
        }
        canopy(&all)
    }

    /// stdout and stderr with the source path replaced, so that nothing that
    /// depends on the machine reaches a snapshot or an assertion message.
    fn redact(&self, text: &str) -> String {
        text.replace(
            self.path.to_str().expect("test paths are UTF-8"),
            "[source]",
        )
    }
}

fn run_case(case: &Case) {
    let dir = fixtures().join("invalid").join(case.name);
    assert!(dir.is_dir(), "missing fixture {}", dir.display());
    let repo_dir = git_repo_from(&dir);
    let repo = repo_path(&repo_dir);
    let sources = [
        Source {
            label: "directory",
            path: &dir,
            rev: None,
        },
        Source {
            label: "git",
            path: &repo,
            rev: Some("main"),
        },
    ];

    let mut problem_lines = Vec::new();
    let mut digests = Vec::new();
    for source in &sources {
        let what = format!("{} ({})", case.name, source.label);

        let validate = source.run(&["validate"]);
        let out = source.redact(&stdout(&validate));
        let err = source.redact(&stderr(&validate));
        assert_eq!(
            validate.status.code(),
            Some(1),
            "{what}: validate exit code\n{out}{err}"
        );
        let count = out.lines().count();
        assert!(count > 0, "{what}: no problem lines on stdout\n{err}");
        assert!(
            err.contains(&format!("{count} problem(s) in ")),
            "{what}: stderr should count {count} problems: {err}"
        );
        problem_lines.push(out);

        // Which apps the problems are about: exactly the bad ones.
        let json = source.run(&["validate", "--output", "json"]);
        assert_eq!(
            json.status.code(),
            Some(1),
            "{what}: validate --output json exit code"
        );
        let report: Value =
            serde_json::from_slice(&json.stdout).expect("validate --output json is JSON");
        assert_eq!(report["valid"], false, "{what}");
        let blamed: BTreeSet<&str> = report["problems"]
            .as_array()
            .expect("problems is an array")
            .iter()
            .map(|p| p["app"].as_str().expect("every problem here names its app"))
            .collect();
        let bad: BTreeSet<&str> = case.invalid.iter().chain(case.rejected).copied().collect();
        assert_eq!(blamed, bad, "{what}: apps named by problems");

        let (tree_output, tree, tree_digests) = tree_json(source, &what);
        check_apps(case, &tree, &what);
        digests.push(tree_digests);

        // Symlink targets are never printed, by any command in any format.
        let text_tree = source.run(&["tree"]);
        for secret in case.secret {
            for output in [&validate, &json, &tree_output, &text_tree] {
                assert!(
                    !stdout(output).contains(secret) && !stderr(output).contains(secret),
                    "{what}: {secret:?} leaked into the output"
                );
            }
        }
    }

    assert_eq!(
        problem_lines[0], problem_lines[1],
        "{}: the directory and its Git commit must report the same problems",
        case.name
    );
    assert_eq!(
        digests[0], digests[1],
        "{}: the directory and its Git commit must give the same digests",
        case.name
    );
    insta::with_settings!({
        description => format!("canopy validate fixtures/invalid/{} (stdout)", case.name),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(case.name, problem_lines[0]);
    });
}

fn json_output(source: &Source<'_>) -> Output {
    source.run(&["tree", "--output", "json"])
}

/// `canopy tree --output json`: the document, and every app's name and digest.
fn tree_json(source: &Source<'_>, what: &str) -> (Output, Value, Vec<(String, Option<String>)>) {
    let output = json_output(source);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: tree exit code\n{}",
        source.redact(&stderr(&output))
    );
    let tree: Value = serde_json::from_slice(&output.stdout).expect("tree --output json is JSON");
    let digests = apps(&tree)
        .map(|app| {
            let name = app["name"].as_str().expect("apps have a name").to_owned();
            (name, app["digest"].as_str().map(str::to_owned))
        })
        .collect();
    (output, tree, digests)
}

/// The valid apps have digests, the invalid ones none, the rejected ones do not
/// exist, and nothing else is an app.
fn check_apps(case: &Case, tree: &Value, what: &str) {
    let names: BTreeSet<&str> = apps(tree)
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    let expected: BTreeSet<&str> = case.valid.iter().chain(case.invalid).copied().collect();
    assert_eq!(names, expected, "{what}: the apps of the tree");
    for name in case.valid {
        assert_digested(tree, name, what);
        let app = app(tree, name).expect("listed above");
        assert!(app["files"].as_u64().is_some(), "{what}: {name}: {app}");
    }
    for name in case.invalid {
        assert_invalid(tree, name, what);
    }
    for name in case.rejected {
        assert!(
            app(tree, name).is_none(),
            "{what}: {name} must never be an app"
        );
    }
}

/// The table of `fixtures/invalid/`: `test_name: Case { .. },` rows, each
/// becoming a test that runs [`run_case`] on its row, and [`CASES`], every row.
macro_rules! cases {
    ($($row:ident: $case:expr,)*) => {
        /// Every row of the table.
        const CASES: &[Case] = &[$($case,)*];
        $(
            #[test]
            fn $row() {
                run_case(&$case);
            }
        )*
    };
}

// One row per fixture; failure messages start with the fixture's name.
cases! {
    unknown_key: Case::new("unknown-key", &[".", "orders"], &["billing", "catalog"]),
    yaml_syntax: Case::new("yaml-syntax", &[".", "ok"], &["indent", "unclosed"]),
    bad_name: Case {
        rejected: &["Payments", "apps/Legacy"],
        ..Case::new("bad-name", &[".", "apps/orders", "shipping"], &[])
    },
    bad_glob: Case::new("bad-glob", &[".", "ok"], &["exports", "reports"]),
    depends_unknown: Case::new("depends-unknown", &[".", "api"], &["web"]),
    depends_cycle: Case::new("depends-cycle", &[".", "c"], &["a", "b"]),
    config_not_scalar: Case::new("config-not-scalar", &[".", "api"], &["worker"]),
    symlink_escape: Case {
        secret: &["/etc/passwd", "passwd", "outside", ".git/config"],
        ..Case::new(
            "symlink-escape",
            &[".", "linked", "nested/inner"],
            &["leaky", "linked-marker", "nested"],
        )
    },
    alias_bomb: Case::new("alias-bomb", &[".", "ok"], &["bomb"]),
    deep_nesting: Case::new("deep-nesting", &[".", "ok"], &["block", "flow"]),
}

/// A problem line gives its location once, in the `file:line:column:` prefix.
/// An unclosed flow collection's error carries two locations: where the error
/// is (the prefix, not repeated) and where the collection started (kept: it is
/// what the author needs to find).
#[test]
fn yaml_syntax_errors_give_their_location_once() {
    let dir = fixtures().join("invalid/yaml-syntax");
    let output = canopy(&["validate", dir.to_str().expect("UTF-8")]);
    let lines = stdout(&output);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for line in lines.lines() {
        let mut parts = line.splitn(4, ':');
        let (_, row, column, message) = (parts.next(), parts.next(), parts.next(), parts.next());
        let own = format!(
            "at line {} column {}",
            row.expect("a line"),
            column.expect("a column")
        );
        let message = message.expect("a message");
        assert!(
            !message.contains(&own),
            "location repeated in the message: {line}"
        );
    }
    assert!(
        lines.contains("while parsing a flow mapping at line"),
        "where the unclosed mapping started is kept: {lines}"
    );
}

/// The files of a directory rejected for its name are claimed and ignored: they
/// do not fall to the parent, whose digest would otherwise change.
#[test]
fn bad_name_files_do_not_fall_to_the_parent() {
    let dir = fixtures().join("invalid/bad-name");
    let output = canopy(&["tree", dir.to_str().expect("UTF-8"), "--output", "json"]);
    let tree: Value = serde_json::from_slice(&output.stdout).expect("tree JSON");
    let root = app(&tree, ".").expect("root app");
    assert_eq!(root["files"], 1, "the root owns only its app.yaml: {root}");
    assert_eq!(
        root["children"],
        serde_json::json!(["apps/orders", "shipping"])
    );
    let orders = app(&tree, "apps/orders").expect("generated app");
    assert_eq!(orders["generated"], true);
}

/// The in-app symlink is part of its app, hashed as its target text. It climbs
/// with `..` within its app; the very same target text one level up
/// (`leaky/hop`, where `../shared` is the root app's) is refused.
#[test]
fn in_app_symlink_is_part_of_its_app() {
    let dir = fixtures().join("invalid/symlink-escape");
    let output = canopy(&["tree", dir.to_str().expect("UTF-8"), "--output", "json"]);
    let tree: Value = serde_json::from_slice(&output.stdout).expect("tree JSON");
    let linked = app(&tree, "linked").expect("linked app");
    assert_eq!(
        linked["files"], 4,
        "app.yaml, deployment.yaml, overlay/base.yaml (a symlink), shared/base.yaml: {linked}"
    );
    let target = "../shared/base.yaml";
    assert_eq!(
        std::fs::read_link(dir.join("linked/overlay/base.yaml")).expect("a symlink"),
        Path::new(target)
    );
    assert_eq!(
        std::fs::read_link(dir.join("leaky/hop")).expect("a symlink"),
        Path::new(target)
    );
    assert_eq!(
        linked["bytes"].as_u64(),
        Some(
            size_of("linked/app.yaml")
                + size_of("linked/deployment.yaml")
                + target.len() as u64
                + size_of("linked/shared/base.yaml")
        )
    );

    fn size_of(path: &str) -> u64 {
        std::fs::metadata(fixtures().join("invalid/symlink-escape").join(path))
            .expect("fixture file")
            .len()
    }
}

/// The fixtures are small on purpose: the hostile parts are structure, not size.
#[test]
fn deep_nesting_fixtures_stay_small() {
    for app in ["flow", "block"] {
        let path = fixtures()
            .join("invalid/deep-nesting")
            .join(app)
            .join("app.yaml");
        let len = std::fs::metadata(&path).expect("fixture").len();
        assert!(len < 40 << 10, "{} is {len} bytes", path.display());
    }
}

/// Every case directory has a row in [`CASES`], and every row a directory.
#[test]
fn every_fixture_is_tested() {
    let tested: BTreeSet<&str> = CASES.iter().map(|case| case.name).collect();
    let present: BTreeSet<String> = std::fs::read_dir(fixtures().join("invalid"))
        .expect("fixtures/invalid")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("ASCII names")
        })
        .collect();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    assert_eq!(present, tested);
}

#[test]
fn example_validates() {
    let dir = fixtures().join("example");
    let repo_dir = git_repo_from(&dir);
    let repo = repo_path(&repo_dir);
    for source in [
        Source {
            label: "directory",
            path: &dir,
            rev: None,
        },
        Source {
            label: "git",
            path: &repo,
            rev: Some("main"),
        },
    ] {
        let output = source.run(&["validate"]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}{}",
            source.label,
            stdout(&output),
            stderr(&output)
        );
        assert!(
            stdout(&output).contains("no problems"),
            "{}",
            stdout(&output)
        );
        let tree = json_output(&source);
        assert_eq!(tree.status.code(), Some(0), "{}", source.label);
        let tree: Value = serde_json::from_slice(&tree.stdout).expect("tree JSON");
        assert_eq!(tree["problems"], serde_json::json!([]));
        assert_eq!(apps(&tree).count(), 10, "{}", source.label);
        for app in apps(&tree) {
            assert_eq!(app["valid"], true, "{}: {app}", source.label);
        }
    }
}
