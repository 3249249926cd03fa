//! Hostile repository content built at run time (RELIABILITY rows 20, 21, 23, 24):
//! oversized files and app.yaml, too many files, non-UTF-8 and forbidden names,
//! symlinks out of the repo, FIFOs, nested `.git` directories.
//!
//! Each input is read as a plain directory and, where Git can hold it, as a commit
//! (`--rev main`). The rule checked everywhere: the bad app is reported with a
//! clear error naming it, no panic, and every other app still gets its digest.
//! Caps too large to reach cheaply are lowered through the library API instead.

use crate::common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use canopy::layout::{AppName, LayoutOptions};
use canopy::limits::Limits;
use canopy::scan::Scan;
use canopy::tree::{BlobCache, DirTree, GitTree};
use common::tree_json::{app, app_names, assert_digested, assert_invalid};
use common::{canopy, git, stderr, stdout, write_files};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------
// Harness

/// A work tree that is also a Git repository, so one set of files is read both
/// ways: as a directory (canopy skips `.git`) and as the commit `main`.
struct Repo {
    temp: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Repo {
    fn new() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let path = temp.path().join("repo");
        std::fs::create_dir(&path).expect("mkdir repo");
        Repo { temp, path }
    }

    /// The temp dir around the repository: "outside the repo".
    fn outside(&self) -> &Path {
        self.temp.path()
    }

    fn write(&self, files: &[(&str, &str)]) {
        write_files(&self.path, files);
    }

    /// Commits everything in the work tree as `main` (deterministic identity and
    /// dates). Large files are stored uncompressed: the content does not matter.
    fn commit(&self) {
        git(&self.path, &["init", "-q", "-b", "main"]);
        git(&self.path, &["-c", "core.looseCompression=0", "add", "-A"]);
        git(
            &self.path,
            &["commit", "-q", "--no-verify", "-m", "hostile input"],
        );
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }

    /// `canopy <command> <repo> [args]` on the work tree, then on the commit.
    fn both(&self, command: &str, args: &[&str]) -> [(&'static str, Output); 2] {
        let mut dir = vec![command, self.arg()];
        dir.extend_from_slice(args);
        let mut commit = dir.clone();
        commit.extend_from_slice(&["--rev", "main"]);
        [("directory", canopy(&dir)), ("git", canopy(&commit))]
    }

    /// A scan of the work tree and one of the commit, with `limits`.
    fn scan_both(&self, limits: Limits) -> [(&'static str, Scan); 2] {
        let options = LayoutOptions {
            limits,
            ..LayoutOptions::default()
        };
        let scan = |tree: &dyn canopy::tree::Tree| {
            canopy::scan::scan(tree, &options, &BlobCache::default()).expect("scan")
        };
        let commit = GitTree::open(&self.path, "main").expect("open the commit");
        [
            ("directory", scan(&DirTree::new(&self.path))),
            ("git", scan(&commit)),
        ]
    }
}

/// Writes a file of `len` bytes that starts with `head` without writing them all
/// (the rest is a hole of zeros).
fn sparse_file(path: &Path, head: &[u8], len: u64) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    let mut file = std::fs::File::create(path).expect("create");
    file.write_all(head).expect("write");
    file.set_len(len).expect("extend");
}

fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    let link = link.as_ref();
    std::fs::create_dir_all(link.parent().expect("has a parent")).expect("mkdir");
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn tree_json(output: &Output, what: &str) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: tree --output json is not JSON ({e}): {}",
            stderr(output)
        )
    })
}

fn problem_lines(output: &Output) -> Vec<String> {
    stdout(output).lines().map(str::to_owned).collect()
}

fn name(name: &str) -> AppName {
    AppName::parse(name).expect("valid test app name")
}

/// The problems of one app in a library scan (layout and read problems alike), as
/// `file:line: message` text.
fn problems_of(scan: &Scan, app: &str) -> Vec<String> {
    assert!(scan.apps.apps.contains_key(&name(app)), "no app {app}");
    scan.apps
        .all_problems()
        .into_iter()
        .filter(|p| p.app.as_deref() == Some(app))
        .map(ToString::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Rows 23 and 24: caps on file size, file count, per-app bytes, app.yaml size
// and tree entries, one row each

/// How a repository over a cap must come out.
enum Over {
    /// `app` is refused with exactly `problems` and gets no digest; every app
    /// of `digested` gets its digest, and no other app has a problem.
    App {
        app: &'static str,
        problems: &'static [&'static str],
        digested: &'static [&'static str],
    },
    /// The whole tree is refused (it is not listed without bound), with an
    /// error containing `error`.
    Tree { error: &'static str },
}

/// One row of the cap table ([`caps!`]).
struct Cap {
    /// Writes the repository (committed as `main` afterwards).
    files: fn(&Repo),
    /// The caps scanned with: the defaults, or lowered where reaching the
    /// default would be slow. Rows at the defaults also go through the CLI.
    limits: Limits,
    over: Over,
    /// Further checks on every scan under `limits` (`what` names the scan).
    also: fn(what: &str, scan: &Scan),
}

/// The cap table: `test_name: Cap { .. },` rows, each becoming a test that runs
/// [`check_cap`] on its row.
macro_rules! caps {
    ($($(#[$doc:meta])* $row:ident: $cap:expr,)*) => {$(
        $(#[$doc])*
        #[test]
        fn $row() {
            check_cap(stringify!($row), &$cap);
        }
    )*};
}

/// Files `<dir>/fNNN.yaml` (`count` of them).
fn numbered(repo: &Repo, dir: &str, count: usize) {
    let files: Vec<(String, String)> = (0..count)
        .map(|i| (format!("{dir}/f{i:03}.yaml"), format!("n: {i}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    repo.write(&refs);
}

// The rows: one per cap, some caps at two points. Each row is a test of its
// own, named after what it shows.
caps! {
    /// A 20 MB file is over the default 8 MiB cap: the error names the file,
    /// and the app next to it is digested as usual.
    file_over_the_default_size_cap_is_named_and_others_continue: Cap {
        files: |repo| {
            repo.write(&[
                ("big/app.yaml", "labels: {team: data}\n"),
                ("big/deployment.yaml", "kind: Deployment\n"),
                ("small/app.yaml", "wave: 1\n"),
                ("small/deployment.yaml", "kind: Deployment\n"),
            ]);
            sparse_file(&repo.path.join("big/model.bin"), b"weights", 20 << 20);
        },
        limits: Limits::default(),
        over: Over::App {
            app: "big",
            problems: &["big/model.bin: file is 20971520 bytes, over the cap of 8388608 bytes"],
            digested: &[".", "small"],
        },
        also: |_, _| {},
    },
    /// A file over a lowered file cap is named, whether or not its hash is
    /// cached (every row is also scanned with a warm cache).
    file_over_a_lowered_size_cap_is_named: Cap {
        files: |repo| {
            repo.write(&[
                ("app.yaml", "wave: 0\n"),
                ("a/app.yaml", "wave: 1\n"),
                ("a/big.txt", &"y".repeat(2000)),
                ("b/app.yaml", "wave: 1\n"),
                ("b/small.txt", "y\n"),
            ]);
        },
        limits: Limits {
            max_file_bytes: 1000,
            ..Limits::default()
        },
        over: Over::App {
            app: "a",
            problems: &["a/big.txt: file is 2000 bytes, over the cap of 1000 bytes"],
            digested: &[".", "b"],
        },
        also: |_, _| {},
    },
    /// With the per-app file cap lowered to 100, an app of 150 files is
    /// refused and one of exactly 100 files (its app.yaml included) is not.
    app_over_a_lowered_file_count_cap_is_refused: Cap {
        files: |repo| {
            repo.write(&[
                ("many/app.yaml", "wave: 1\n"),
                ("full/app.yaml", "wave: 1\n"),
                ("few/app.yaml", "wave: 1\n"),
                ("few/a.yaml", "a: 1\n"),
            ]);
            numbered(repo, "many", 149);
            numbered(repo, "full", 99);
        },
        limits: Limits {
            max_app_files: 100,
            ..Limits::default()
        },
        over: Over::App {
            app: "many",
            problems: &["app many: app has more than 100 files"],
            digested: &[".", "full", "few"],
        },
        also: |what, scan| {
            assert_eq!(scan.digests[&name("full")].files.len(), 100, "{what}");
            assert_eq!(scan.digests[&name("few")].files.len(), 2, "{what}");
        },
    },
    /// One app over the file cap is one problem, however far over it is: with
    /// the default cap of 20,000, a 100,000-file app would otherwise print
    /// 80,000 lines.
    file_count_cap_is_reported_once: Cap {
        files: |repo| {
            numbered(repo, "many", 30);
            repo.write(&[("many/app.yaml", "wave: 1\n")]);
        },
        limits: Limits {
            max_app_files: 10,
            ..Limits::default()
        },
        over: Over::App {
            app: "many",
            problems: &["app many: app has more than 10 files"],
            digested: &["."],
        },
        also: |_, _| {},
    },
    /// The per-app byte cap counts the app's files together, each under the
    /// file cap.
    app_over_a_lowered_byte_cap_is_refused: Cap {
        files: |repo| {
            let chunk = "x".repeat(600);
            repo.write(&[
                ("heavy/app.yaml", "wave: 1\n"),
                ("heavy/a.txt", &chunk),
                ("heavy/b.txt", &chunk),
                ("light/app.yaml", "wave: 1\n"),
                ("light/a.txt", &chunk),
            ]);
        },
        limits: Limits {
            max_app_bytes: 1000,
            max_file_bytes: 700,
            ..Limits::default()
        },
        over: Over::App {
            app: "heavy",
            problems: &["app heavy: app files total 1208 bytes, over the cap of 1000 bytes"],
            digested: &[".", "light"],
        },
        also: |what, scan| assert_eq!(scan.digests[&name("light")].bytes, 608, "{what}"),
    },
    /// A 50 MB app.yaml is refused by its size before parsing, with the size
    /// in the message; the other apps are digested.
    app_yaml_of_50_mb_is_refused_by_size: Cap {
        files: |repo| {
            repo.write(&[
                ("huge/deployment.yaml", "kind: Deployment\n"),
                ("fine/app.yaml", "wave: 1\n"),
                ("fine/deployment.yaml", "kind: Deployment\n"),
            ]);
            sparse_file(
                &repo.path.join("huge/app.yaml"),
                b"labels: {team: huge}\n#",
                50 << 20,
            );
        },
        limits: Limits::default(),
        over: Over::App {
            app: "huge",
            problems: &[
                "huge/app.yaml: app.yaml is 52428800 bytes, over the cap of 262144 bytes",
            ],
            digested: &[".", "fine"],
        },
        also: |_, _| {},
    },
    /// Past the whole-tree entry cap the snapshot is refused as a whole, with
    /// an error naming the cap, instead of being listed without bound.
    tree_over_a_lowered_entry_cap_is_refused: Cap {
        files: |repo| {
            let files: Vec<(String, String)> = (0..20)
                .map(|i| (format!("f{i:02}.yaml"), "x: 1\n".into()))
                .collect();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, c)| (p.as_str(), c.as_str()))
                .collect();
            repo.write(&refs);
        },
        limits: Limits {
            max_tree_entries: 10,
            ..Limits::default()
        },
        over: Over::Tree {
            error: "more than 10 entries",
        },
        also: |_, _| {},
    },
    /// Paths that cannot be entries (not UTF-8) still count toward the entry
    /// cap: otherwise a tree of a million such names is listed without bound.
    unusable_paths_count_toward_the_entry_cap: Cap {
        files: |repo| {
            repo.write(&[("app.yaml", "wave: 0\n")]);
            for i in 0..20u8 {
                std::fs::write(
                    repo.path
                        .join(std::ffi::OsStr::from_bytes(&[b'f', 0xff, b'a' + i])),
                    "x",
                )
                .expect("write");
            }
        },
        limits: Limits {
            max_tree_entries: 10,
            ..Limits::default()
        },
        over: Over::Tree {
            error: "more than 10 entries",
        },
        also: |_, _| {},
    },
}

/// One row of the cap table: each row's repository is read as a directory, as
/// a commit, and as a commit whose blob hashes are all cached already (a warm
/// cache must not bypass a cap); rows at the default caps also through
/// `canopy validate` and `canopy tree` on the directory and the commit. Every
/// failure message starts with `row`.
fn check_cap(row: &str, cap: &Cap) {
    let repo = Repo::new();
    (cap.files)(&repo);
    repo.commit();
    let commit = GitTree::open(&repo.path, "main").expect("open the commit");

    // Under the default caps first: it fills the cache, and for a lowered
    // cap it shows that the cap, nothing else, is what the row is about.
    let warm = BlobCache::default();
    let relaxed = canopy::scan::scan(&commit, &LayoutOptions::default(), &warm)
        .unwrap_or_else(|e| panic!("{row}: under the default caps: {e}"));
    assert!(!warm.is_empty(), "{row}: the cache is warm");
    let lowered = cap.limits != Limits::default();
    if let (true, Over::App { app, .. }) = (lowered, &cap.over) {
        assert!(
            relaxed.digests.contains_key(&name(app)),
            "{row}: {app} is fine under the default caps"
        );
    }

    let options = LayoutOptions {
        limits: cap.limits,
        ..LayoutOptions::default()
    };
    let scans = [
        (
            "directory",
            canopy::scan::scan(&DirTree::new(&repo.path), &options, &BlobCache::default()),
        ),
        (
            "git",
            canopy::scan::scan(&commit, &options, &BlobCache::default()),
        ),
        (
            "git, warm cache",
            canopy::scan::scan(&commit, &options, &warm),
        ),
    ];
    for (how, scan) in scans {
        let what = format!("{row} ({how})");
        match &cap.over {
            Over::App {
                app,
                problems,
                digested,
            } => {
                let scan = scan.unwrap_or_else(|e| panic!("{what}: scan: {e}"));
                assert_eq!(problems_of(&scan, app), *problems, "{what}");
                assert!(
                    !scan.digests.contains_key(&name(app)),
                    "{what}: {app} must not get a digest"
                );
                for other in *digested {
                    assert!(
                        scan.digests.contains_key(&name(other)),
                        "{what}: {other} must get its digest"
                    );
                }
                let others: Vec<_> = scan
                    .apps
                    .all_problems()
                    .into_iter()
                    .filter(|p| p.app.as_deref() != Some(app))
                    .collect();
                assert!(others.is_empty(), "{what}: {others:?}");
                (cap.also)(&what, &scan);
            }
            Over::Tree { error } => match scan {
                Ok(_) => panic!(
                    "{what}: listed over a cap of {}",
                    cap.limits.max_tree_entries
                ),
                Err(e) => assert!(e.to_string().contains(error), "{what}: {e}"),
            },
        }
    }

    // At the default caps, the real binary too.
    let Over::App {
        app,
        problems,
        digested,
    } = &cap.over
    else {
        return;
    };
    if lowered {
        return;
    }
    for (how, output) in repo.both("validate", &[]) {
        let what = format!("{row} (validate, {how})");
        assert_eq!(output.status.code(), Some(1), "{what}: {}", stderr(&output));
        assert_eq!(problem_lines(&output), *problems, "{what}");
    }
    for (how, output) in repo.both("tree", &["--output", "json"]) {
        let what = format!("{row} (tree, {how})");
        let tree = tree_json(&output, &what);
        assert_invalid(&tree, app, &what);
        for other in *digested {
            assert_digested(&tree, other, &what);
        }
    }
}

// ---------------------------------------------------------------------------
// Row 24: non-UTF-8 paths

/// A file whose name is not UTF-8 makes its app invalid with a problem naming the
/// app and the file; no panic, the other apps are fine.
#[test]
fn non_utf8_file_name_is_a_problem_of_its_app() {
    let repo = Repo::new();
    repo.write(&[
        ("latin1/app.yaml", "wave: 1\n"),
        ("latin1/deployment.yaml", "kind: Deployment\n"),
        ("fine/app.yaml", "wave: 1\n"),
        ("fine/deployment.yaml", "kind: Deployment\n"),
    ]);
    // "café.yaml" in Latin-1: 0xE9 alone is not UTF-8.
    let bad = repo
        .path
        .join("latin1")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.yaml"));
    std::fs::write(&bad, "kind: ConfigMap\n").expect("write non-UTF-8 name");
    repo.commit();
    let listed = git(&repo.path, &["ls-tree", "-r", "--name-only", "-z", "main"]);
    assert_eq!(
        listed
            .split('\0')
            .filter(|p| p.starts_with("latin1/"))
            .count(),
        3,
        "committed"
    );

    for (what, output) in repo.both("validate", &[]) {
        assert_eq!(output.status.code(), Some(1), "{what}: {}", stderr(&output));
        assert_eq!(
            problem_lines(&output),
            ["latin1/caf\u{fffd}.yaml: path is not valid UTF-8"],
            "{what}"
        );
    }
    for (what, output) in repo.both("validate", &["--output", "json"]) {
        let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(report["problems"][0]["app"], "latin1", "{what}: {report}");
    }
    for (what, output) in repo.both("tree", &["--output", "json"]) {
        let tree = tree_json(&output, what);
        assert_invalid(&tree, "latin1", what);
        assert_digested(&tree, "fine", what);
        assert_digested(&tree, ".", what);
    }
}

// ---------------------------------------------------------------------------
// Row 23: YAML nesting (its size is a cap, above)

/// The flow-depth check runs before the YAML parser, in linear time, so deep
/// nesting never costs what the parser would spend on it. An apostrophe inside a plain scalar (`it's`) must
/// not make the check skip what follows as if it were quoted: 100,000 brackets
/// hidden that way (200 KB, under the app.yaml cap) took serde_yaml about a
/// minute to parse. 2,000 levels show the same thing instantly; the column is
/// the 33rd bracket.
#[test]
fn flow_nesting_after_an_apostrophe_is_refused_before_parsing() {
    let depth = 2000;
    let doc = format!(
        "labels: {{a: [it's, {}{}, ok']}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let repo = Repo::new();
    repo.write(&[("sneaky/app.yaml", &doc), ("fine/app.yaml", "wave: 1\n")]);
    let output = canopy(&["validate", repo.arg()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        problem_lines(&output),
        ["sneaky/app.yaml:1:50: collections nested deeper than 32 levels"]
    );
}

// ---------------------------------------------------------------------------
// Row 21: symlinks

const CANARY: &str = "canary-target-7f3a";

/// Hostile symlinks whose targets exist (so following one would succeed) are
/// refused; their target text never reaches stdout, stderr or logs, in any
/// command or format. The in-app link next to them works.
#[test]
fn symlink_targets_never_appear_in_any_output() {
    let repo = Repo::new();
    let secret_dir = repo.outside().join(CANARY);
    std::fs::create_dir(&secret_dir).expect("mkdir");
    std::fs::write(secret_dir.join("secret.txt"), "password=hunter2\n").expect("write");
    repo.write(&[
        ("leaky/app.yaml", "wave: 1\n"),
        ("linked/app.yaml", "wave: 1\n"),
        ("linked/shared/base.yaml", "kind: ConfigMap\n"),
        ("shared/base.yaml", "kind: ConfigMap\n"),
        (&format!("shared/{CANARY}.yaml"), "kind: Secret\n"),
    ]);
    let leaky = repo.path.join("leaky");
    symlink(secret_dir.join("secret.txt"), leaky.join("absolute"));
    symlink(format!("../../{CANARY}/secret.txt"), leaky.join("escape"));
    symlink(format!("../.git/{CANARY}"), leaky.join("into-git"));
    symlink("../shared", leaky.join("hop"));
    symlink(format!("hop/{CANARY}.yaml"), leaky.join("chain"));
    symlink(format!("../shared/{CANARY}.yaml"), leaky.join("sideways"));
    symlink(
        "../shared/base.yaml",
        repo.path.join("linked/overlay/base.yaml"),
    );
    repo.commit();
    std::fs::write(repo.path.join(".git").join(CANARY), "[core]\n").expect("write into .git");

    let expected = [
        "leaky/absolute: symlink target is an absolute path",
        "leaky/chain: symlink target goes through another symlink (chains are not allowed)",
        "leaky/escape: symlink target leaves its app's directory",
        "leaky/hop: symlink target leaves its app's directory",
        "leaky/into-git: symlink target points into .git",
        "leaky/sideways: symlink target leaves its app's directory",
    ];
    let commands: [&[&str]; 4] = [
        &["validate"],
        &["validate", "--output", "json"],
        &["tree"],
        &["tree", "--output", "json"],
    ];
    for args in commands {
        for rev in [None, Some("main")] {
            let mut all = vec![args[0], repo.arg()];
            all.extend_from_slice(&args[1..]);
            if let Some(rev) = rev {
                all.extend_from_slice(&["--rev", rev]);
            }
            let what = format!("canopy {}", all.join(" "));
            // Verbose logging too: a target must not be logged either.
            let output = Command::new(env!("CARGO_BIN_EXE_canopy"))
                .args(&all)
                .env("CANOPY_LOG", "trace")
                .output()
                .expect("run canopy");
            let (out, err) = (stdout(&output), stderr(&output));
            assert_eq!(output.status.code(), Some(1), "{what}: {err}");
            for text in [&out, &err] {
                assert!(!text.contains(CANARY), "{what}: the target leaked:\n{text}");
                assert!(
                    !text.contains("hunter2"),
                    "{what}: the target was read:\n{text}"
                );
            }
            // The links are reported (by path) where problems are printed.
            let printed = if args == ["tree"] { &err } else { &out };
            for line in expected {
                let path = line.split(':').next().expect("path");
                assert!(
                    printed.contains(path),
                    "{what}: {path} not reported:\n{printed}"
                );
            }
            if args == ["validate"] {
                assert_eq!(problem_lines(&output), expected, "{what}");
            }
            if args == ["tree", "--output", "json"] {
                let tree = tree_json(&output, &what);
                assert_invalid(&tree, "leaky", &what);
                assert_digested(&tree, "linked", &what);
                assert_digested(&tree, ".", &what);
            }
        }
    }
}

/// A symlink to a directory is one entry, hashed as its target text: canopy never
/// descends into it, so an `app.yaml` behind it makes no app. A link to a
/// directory outside the repo is refused, and so is one to another app's
/// directory.
#[test]
fn symlinked_directory_is_not_descended_into() {
    let repo = Repo::new();
    let outside = repo.outside().join("elsewhere");
    write_files(
        &outside,
        &[("app.yaml", "wave: 1\n"), ("secret.yaml", "kind: Secret\n")],
    );
    repo.write(&[
        ("real/app.yaml", "wave: 1\n"),
        ("real/deployment.yaml", "kind: Deployment\n"),
        ("viewer/app.yaml", "wave: 2\n"),
        ("viewer/base/deployment.yaml", "kind: Deployment\n"),
        ("peeker/app.yaml", "wave: 2\n"),
        ("crosser/app.yaml", "wave: 2\n"),
    ]);
    symlink("base", repo.path.join("viewer/mirror"));
    symlink(&outside, repo.path.join("peeker/view"));
    symlink("../real", repo.path.join("crosser/view"));
    repo.commit();

    // What `sha256sum` prints in viewer/ if `mirror` is a file holding "base".
    let manifest = format!(
        "{}  app.yaml\n{}  base/deployment.yaml\n{}  mirror\n",
        hex::encode(Sha256::digest(b"wave: 2\n")),
        hex::encode(Sha256::digest(b"kind: Deployment\n")),
        hex::encode(Sha256::digest(b"base"))
    );
    let expected = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(manifest.as_bytes()))
    );

    for (what, output) in repo.both("tree", &["--output", "json"]) {
        let tree = tree_json(&output, what);
        assert_eq!(
            app_names(&tree),
            BTreeSet::from([".", "crosser", "peeker", "real", "viewer"].map(String::from)),
            "{what}: no app behind a symlink"
        );
        let viewer = app(&tree, "viewer").expect("viewer");
        assert_eq!(viewer["files"], 3, "{what}: {viewer}");
        assert_eq!(viewer["digest"], expected.as_str(), "{what}: {viewer}");
        assert_digested(&tree, "real", what);
        assert_invalid(&tree, "peeker", what);
        assert_invalid(&tree, "crosser", what);
    }
    for (what, output) in repo.both("validate", &[]) {
        assert_eq!(
            problem_lines(&output),
            [
                "crosser/view: symlink target leaves its app's directory",
                "peeker/view: symlink target is an absolute path"
            ],
            "{what}"
        );
    }
}

/// `validate` prints exactly `expected` (by link path, never the target),
/// `tree` marks each of `invalid` INVALID and gives each of `digested` a digest;
/// as a directory and as a commit alike.
fn assert_links_refused(repo: &Repo, expected: &[&str], invalid: &[&str], digested: &[&str]) {
    for (what, output) in repo.both("validate", &[]) {
        assert_eq!(output.status.code(), Some(1), "{what}: {}", stderr(&output));
        assert_eq!(problem_lines(&output), expected, "{what}");
    }
    for (what, output) in repo.both("tree", &[]) {
        let text = stdout(&output);
        for app in invalid {
            let line = text
                .lines()
                .find(|l| {
                    l.trim_start_matches(['│', '├', '└', '─', ' '])
                        .starts_with(&format!("{app} "))
                })
                .unwrap_or_else(|| panic!("{what}: no line for {app}:\n{text}"));
            assert!(line.contains("INVALID"), "{what}: {line}");
        }
        for line in expected {
            let path = line.split(':').next().expect("path");
            assert!(
                stderr(&output).contains(path),
                "{what}: {path} not reported"
            );
        }
    }
    for (what, output) in repo.both("tree", &["--output", "json"]) {
        let tree = tree_json(&output, what);
        for app in invalid {
            assert_invalid(&tree, app, what);
        }
        for app in digested {
            assert_digested(&tree, app, what);
        }
    }
}

/// A link is confined to its own app's directory, not to the repository: on
/// the agent side the app's files live in `<dir>/versions/<hex>/`, so `a/b/c`
/// shipping `../../../outside` (a file of the root app here) would reach the
/// agent's own files or a sibling agent's. Leaving the app's directory at any
/// step counts, even to come back into it (`../c/...` leaves the version
/// directory once unpacked). The sibling whose link climbs with `..` without
/// leaving its app still gets its digest.
#[test]
fn a_link_that_leaves_its_app_is_refused_even_inside_the_repo() {
    let repo = Repo::new();
    repo.write(&[
        ("outside", "kind: Secret\n"),
        ("a/b/c/app.yaml", "wave: 1\n"),
        ("a/b/c/deployment.yaml", "kind: Deployment\n"),
        ("a/b/d/app.yaml", "wave: 1\n"),
        ("a/b/d/base/deployment.yaml", "kind: Deployment\n"),
    ]);
    symlink("../../../outside", repo.path.join("a/b/c/x"));
    symlink("../c/deployment.yaml", repo.path.join("a/b/c/y"));
    symlink(
        "../base/deployment.yaml",
        repo.path.join("a/b/d/overlay/deployment.yaml"),
    );
    repo.commit();

    assert_links_refused(
        &repo,
        &[
            "a/b/c/x: symlink target leaves its app's directory",
            "a/b/c/y: symlink target leaves its app's directory",
        ],
        &["a/b/c"],
        &[".", "a/b/d"],
    );
    for (what, scan) in repo.scan_both(Limits::default()) {
        let d = &scan.digests[&name("a/b/d")];
        let link = d
            .files
            .iter()
            .find(|f| f.path() == "overlay/deployment.yaml");
        assert_eq!(
            link.map(|f| f.hash),
            Some(canopy::tree::FileHash::of(b"../base/deployment.yaml")),
            "{what}: the in-app link is hashed as its target text"
        );
    }
}

/// A parent's link into a nested app's directory is refused: it stays inside
/// the parent's directory tree, but those files are the child's, not in the
/// parent's artifact, so the link would dangle (or worse) where the parent is
/// applied. The same holds for a directory whose app name is invalid (its files
/// belong to no app), and for the root app, whose own directory is the whole
/// repository minus its children.
#[test]
fn a_link_into_a_nested_app_is_refused() {
    let repo = Repo::new();
    repo.write(&[
        ("docs/index.yaml", "kind: ConfigMap\n"),
        ("parent/app.yaml", "wave: 1\n"),
        ("parent/deployment.yaml", "kind: Deployment\n"),
        ("parent/child/app.yaml", "wave: 2\n"),
        ("parent/child/secret.yaml", "kind: Secret\n"),
        ("parent/Bad/app.yaml", "wave: 2\n"),
        ("parent/Bad/secret.yaml", "kind: Secret\n"),
        ("team/app.yaml", "wave: 1\n"),
        ("team/deployment.yaml", "kind: Deployment\n"),
    ]);
    symlink("child/secret.yaml", repo.path.join("parent/peek"));
    symlink("child", repo.path.join("parent/door"));
    symlink("sub/../child/secret.yaml", repo.path.join("parent/detour"));
    symlink("Bad/secret.yaml", repo.path.join("parent/rejected"));
    symlink("deployment.yaml", repo.path.join("parent/fine"));
    // The root app: its own file deep down is fine, a child's file is not.
    symlink("docs/index.yaml", repo.path.join("index.yaml"));
    symlink("team/deployment.yaml", repo.path.join("peek"));
    repo.commit();

    let bad_name = "parent/Bad/app.yaml: app name \"parent/Bad\": segment \"Bad\" must be 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit, and must not contain '..'";
    assert_links_refused(
        &repo,
        &[
            bad_name,
            "parent/detour: symlink target points into the directory of a nested app",
            "parent/door: symlink target points into the directory of a nested app",
            "parent/peek: symlink target points into the directory of a nested app",
            "parent/rejected: symlink target points into the directory of a nested app",
            "peek: symlink target points into the directory of a nested app",
        ],
        &[".", "parent"],
        &["parent/child", "team"],
    );
}

// ---------------------------------------------------------------------------
// Special files and nested `.git`

/// A FIFO is reported, never opened (opening one for reading would block
/// forever, so this test finishing is part of the check); other apps are fine.
#[test]
fn fifo_is_reported_not_read() {
    let repo = Repo::new();
    repo.write(&[
        ("pipes/app.yaml", "wave: 1\n"),
        ("pipes/deployment.yaml", "kind: Deployment\n"),
        ("fine/app.yaml", "wave: 1\n"),
    ]);
    let status = Command::new("mkfifo")
        .arg(repo.path.join("pipes/queue"))
        .status()
        .expect("run mkfifo");
    assert!(status.success());

    let output = canopy(&["validate", repo.arg()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        problem_lines(&output),
        ["pipes/queue: not a regular file, directory or symlink"]
    );
    let output = canopy(&["tree", repo.arg(), "--output", "json"]);
    let tree = tree_json(&output, "directory");
    assert_invalid(&tree, "pipes", "directory");
    assert_digested(&tree, "fine", "directory");
    assert_digested(&tree, ".", "directory");
}

/// `.git` directories (and `.git` files of linked work trees) inside the tree are
/// not part of any app: their `app.yaml` makes no app, their files count nowhere.
#[test]
fn nested_git_directories_on_disk_are_ignored() {
    let repo = Repo::new();
    repo.write(&[
        ("sub/app.yaml", "wave: 1\n"),
        ("sub/deployment.yaml", "kind: Deployment\n"),
        ("sub/.git/HEAD", "ref: refs/heads/main\n"),
        ("sub/.git/config", "[core]\n"),
        ("sub/.git/app.yaml", "wave: 9\n"),
        ("sub/.git/hooks/nested/app.yaml", "wave: 9\n"),
        ("wt/app.yaml", "wave: 1\n"),
        ("wt/.git", "gitdir: /nowhere\n"),
    ]);
    let clean = Repo::new();
    clean.write(&[
        ("sub/app.yaml", "wave: 1\n"),
        ("sub/deployment.yaml", "kind: Deployment\n"),
        ("wt/app.yaml", "wave: 1\n"),
    ]);

    let output = canopy(&["tree", repo.arg(), "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let tree = tree_json(&output, "directory");
    let reference = tree_json(&canopy(&["tree", clean.arg(), "--output", "json"]), "clean");
    assert_eq!(
        app_names(&tree),
        BTreeSet::from([".", "sub", "wt"].map(String::from))
    );
    for name in [".", "sub", "wt"] {
        let (app, want) = (
            app(&tree, name).expect("app"),
            app(&reference, name).expect("app"),
        );
        assert_eq!(
            app["digest"], want["digest"],
            "{name}: same as without any .git: {app}"
        );
        assert_eq!(app["files"], want["files"], "{name}");
    }
}

/// A commit can hold `.git` trees (written with plumbing: porcelain refuses them)
/// and gitlinks (embedded repositories). Neither is part of any app.
#[test]
fn git_trees_named_dot_git_and_gitlinks_are_ignored() {
    let repo = Repo::new();
    git(&repo.path, &["init", "-q", "-b", "main"]);
    let blob = |text: &str| git_stdin(&repo.path, &["hash-object", "-w", "--stdin"], text);
    let marker = blob("wave: 9\n");
    let config = blob("[core]\n");
    let app_yaml = blob("wave: 1\n");
    let deployment = blob("kind: Deployment\n");
    let readme = blob("# top\n");
    let mktree = |lines: &[String]| git_stdin(&repo.path, &["mktree"], &(lines.join("\n") + "\n"));
    let dot_git = mktree(&[
        format!("100644 blob {marker}\tapp.yaml"),
        format!("100644 blob {config}\tconfig"),
    ]);
    let sub = mktree(&[
        format!("040000 tree {dot_git}\t.git"),
        format!("100644 blob {app_yaml}\tapp.yaml"),
        format!("100644 blob {deployment}\tdeployment.yaml"),
    ]);
    // Any commit id will do for a gitlink: canopy must never look it up.
    let gitlink = "1111111111111111111111111111111111111111";
    let top = mktree(&[
        format!("040000 tree {dot_git}\t.git"),
        format!("100644 blob {readme}\tREADME.md"),
        format!("040000 tree {sub}\tsub"),
        format!("160000 commit {gitlink}\tvendored"),
    ]);
    let commit = git(&repo.path, &["commit-tree", "-m", "hostile tree", &top]);
    git(
        &repo.path,
        &["update-ref", "refs/heads/main", commit.trim()],
    );
    let listed = git(&repo.path, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        listed.contains("sub/.git/app.yaml") && listed.contains("vendored"),
        "{listed}"
    );

    let output = canopy(&["tree", repo.arg(), "--rev", "main", "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let tree = tree_json(&output, "git");
    assert_eq!(
        app_names(&tree),
        BTreeSet::from([".", "sub"].map(String::from))
    );
    assert_eq!(
        app(&tree, ".").expect("root")["files"],
        1,
        "only README.md: {tree}"
    );
    assert_eq!(app(&tree, "sub").expect("sub")["files"], 2, "{tree}");
}

/// `git` with `input` on stdin; returns trimmed stdout.
fn git_stdin(repo: &Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run git");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait for git");
    assert!(output.status.success(), "git {args:?}: {}", stderr(&output));
    stdout(&output).trim().to_owned()
}

// ---------------------------------------------------------------------------
// Row 20: app names

/// Directories whose names are not valid app names are rejected with a problem
/// naming them, and never get a digest; their files do not fall to the parent.
#[test]
fn hostile_app_names_are_rejected_never_digested() {
    let long = vec!["a".repeat(50); 6].join("/"); // 305 bytes, every segment fine
    let segment64 = "b".repeat(64);
    let bad_dirs = [
        "a*",
        "x[1]",
        "Foo",
        "foo:bar",
        "caf\u{e9}",
        "\u{5e94}\u{7528}",
        long.as_str(),
        segment64.as_str(),
        "gen/Upper",
        "gen/q?",
    ];
    let repo = Repo::new();
    repo.write(&[
        ("app.yaml", "children: {dirs: [\"gen/*\"]}\n"),
        ("good/app.yaml", "wave: 1\n"),
        ("gen/ok/deployment.yaml", "kind: Deployment\n"),
        ("gen/Upper/deployment.yaml", "kind: Deployment\n"),
        ("gen/q?/deployment.yaml", "kind: Deployment\n"),
        // `../x` cannot be a directory; as a dependency it is refused all the same.
        ("dep/app.yaml", "depends_on: [good, \"../x\"]\n"),
    ]);
    for dir in &bad_dirs[..8] {
        repo.write(&[
            (&format!("{dir}/app.yaml"), "wave: 1\n"),
            (&format!("{dir}/deployment.yaml"), "kind: Deployment\n"),
        ]);
    }
    repo.commit();

    for (what, output) in repo.both("validate", &["--output", "json"]) {
        assert_eq!(output.status.code(), Some(1), "{what}: {}", stderr(&output));
        let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let problems = report["problems"].as_array().expect("problems");
        let blamed: BTreeSet<&str> = problems
            .iter()
            .map(|p| p["app"].as_str().expect("app"))
            .collect();
        let mut expected: BTreeSet<&str> = bad_dirs.into_iter().collect();
        expected.insert("dep");
        assert_eq!(blamed, expected, "{what}: {report:#}");
        for problem in problems {
            let message = problem["message"].as_str().expect("message");
            let app = problem["app"].as_str().expect("app");
            if app == "dep" {
                assert!(message.contains("\"../x\""), "{what}: {message}");
            } else if app == long {
                assert!(
                    message.contains("305 bytes, over the limit of 255"),
                    "{what}: {message}"
                );
            } else {
                assert!(message.contains(&format!("{app:?}")), "{what}: {message}");
            }
        }
    }
    for (what, output) in repo.both("tree", &["--output", "json"]) {
        let tree = tree_json(&output, what);
        assert_eq!(
            app_names(&tree),
            BTreeSet::from([".", "dep", "gen/ok", "good"].map(String::from)),
            "{what}: only valid names are apps"
        );
        assert_digested(&tree, ".", what);
        assert_digested(&tree, "good", what);
        assert_digested(&tree, "gen/ok", what);
        assert_invalid(&tree, "dep", what);
        assert_eq!(
            app(&tree, ".").expect("root")["files"],
            1,
            "{what}: only the root's app.yaml"
        );
    }
}
