//! RELIABILITY row 22: submodules, hooks and filters in the repository are
//! never fetched or run.
//!
//! canopy reads Git objects and never checks anything out, so nothing that
//! Git runs on checkout (filters, hooks) or for submodules can run. The
//! tests make that observable: a repository whose `.gitattributes` assigns a
//! filter driver and whose `.gitmodules` names a submodule served over HTTP,
//! and an environment whose global Git config (`GIT_CONFIG_GLOBAL`) defines
//! that driver and sets `core.hooksPath` to hooks that each leave a marker.
//! The trap is shown to be armed: a stock `git clone --recurse-submodules` in
//! the same environment leaves markers and fetches the submodule. Every
//! canopy path that reads the repository (`tree` on a directory, a commit
//! and a URL, `run --once`, the daemon's full and incremental polls, an
//! artifact, the agent applying it) leaves none and never contacts the
//! submodule's server.
//!
//! A gitlink (the tree entry of a submodule) is part of no app: ignored, as
//! if absent, in a full scan and in an incremental poll alike.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use canopy::layout::LayoutOptions;
use canopy::scan::Scan;
use canopy::source::{Mirror, MirrorOptions, Poller, RepoUrl};
use common::agent::{Stack, TOKEN, WAIT, files_under, hex_of};
use common::git_server::{GitHttpServer, bare_clone, git_client};
use common::tree_json::app;
use common::*;
use sha2::{Digest as _, Sha256};

const INGRESS: &str = "platform/ingress";
/// Where the hostile repository puts its submodule: inside an app.
const GITLINK: &str = "platform/ingress/vendored";

/// Every hook of githooks(5), Git 2.47.
const HOOKS: &[&str] = &[
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
];

/// The trap: a global Git config whose filter, diff and merge drivers,
/// fsmonitor and hooks each leave a marker file named after themselves, and
/// an HTTP server for the submodule that records every request.
struct Trap {
    dir: tempfile::TempDir,
    server: GitHttpServer,
    /// The submodule's repository (a work tree), served as `sub.git`.
    sub: PathBuf,
}

impl Trap {
    fn new() -> Trap {
        let dir = tempfile::tempdir().expect("temp dir");
        let markers = dir.path().join("markers");
        let hooks = dir.path().join("hooks");
        let served = dir.path().join("served");
        for d in [&markers, &hooks, &served] {
            std::fs::create_dir(d).expect("mkdir");
        }
        // Leaves `markers/<name>`, then passes its input through (a smudge or
        // clean filter that does nothing else).
        let trap = dir.path().join("trap");
        executable(
            &trap,
            &format!("#!/bin/sh\ntouch '{}'/\"$1\"\ncat\n", markers.display()),
        );
        for hook in HOOKS {
            executable(
                &hooks.join(hook),
                &format!("#!/bin/sh\ntouch '{}/hook-{hook}'\n", markers.display()),
            );
        }
        let t = trap.display();
        std::fs::write(
            dir.path().join("gitconfig"),
            format!(
                "[filter \"canopy-trap\"]\n\tclean = '{t}' filter-clean\n\tsmudge = '{t}' filter-smudge\n\trequired = true\n\
                 [filter \"canopy-trap-process\"]\n\tprocess = '{t}' filter-process\n\
                 [diff \"canopy-trap\"]\n\ttextconv = '{t}' diff-textconv\n\tcommand = '{t}' diff-command\n\
                 [merge \"canopy-trap\"]\n\tdriver = '{t}' merge-driver\n\
                 [core]\n\thooksPath = {hooks}\n\tfsmonitor = '{t}' fsmonitor\n\
                 [submodule]\n\trecurse = true\n\
                 [fetch]\n\trecurseSubmodules = true\n\
                 [user]\n\tname = trap\n\temail = trap@canopy.invalid\n",
                hooks = hooks.display(),
            ),
        )
        .expect("write the global config");

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        git(&sub, &["init", "-q", "-b", "main"]);
        write_files(&sub, &[("vendored.yaml", "kind: Vendored\n")]);
        git(&sub, &["add", "-A"]);
        git(&sub, &["commit", "-qm", "one"]);
        let server = GitHttpServer::start(&served, None);
        let trap = Trap { dir, server, sub };
        trap.publish_sub();
        trap
    }

    /// The environment that arms the trap: the global config, and nothing
    /// from the system's.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "GIT_CONFIG_GLOBAL".to_owned(),
                self.dir.path().join("gitconfig").display().to_string(),
            ),
            ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".to_owned()),
        ]
    }

    /// The markers left so far.
    fn markers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("markers"))
            .expect("read markers")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The requests for the submodule's repository.
    fn sub_requests(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path.contains("sub.git"))
            .map(ToString::to_string)
            .collect()
    }

    /// (Re)publishes the submodule's commits as `served/sub.git`.
    fn publish_sub(&self) {
        let served = self.dir.path().join("served");
        let _ = std::fs::remove_dir_all(served.join("sub.git"));
        bare_clone(&self.sub, &served, "sub.git");
    }

    /// A new commit of the submodule; its id.
    fn sub_commit(&self, content: &str) -> String {
        write_files(&self.sub, &[("vendored.yaml", content)]);
        git(&self.sub, &["commit", "-qam", "more"]);
        self.publish_sub();
        git(&self.sub, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    fn sub_head(&self) -> String {
        git(&self.sub, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Serves a bare copy of `repo` as `<name>`; its URL.
    fn serve(&self, repo: &Path, name: &str) -> String {
        bare_clone(repo, &self.dir.path().join("served"), name);
        self.server.url(name)
    }
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Commits the hostile parts into `repo` (the example): `.gitattributes` at
/// the root and in the ingress app assigning the trap's drivers, `.gitmodules`
/// naming the submodule on the trap's server, and the gitlink inside the
/// ingress app. (The test's own `git` has no global config: nothing runs.)
fn make_hostile(repo: &Path, trap: &Trap) {
    let attributes = "* filter=canopy-trap diff=canopy-trap merge=canopy-trap\n*.md filter=canopy-trap-process\n";
    write_files(
        repo,
        &[
            (".gitattributes", attributes),
            ("platform/ingress/.gitattributes", attributes),
            ("platform/ingress/README.md", "# ingress\n"),
            (
                ".gitmodules",
                &format!(
                    "[submodule \"vendored\"]\n\tpath = {GITLINK}\n\turl = {}\n",
                    trap.server.url("sub.git")
                ),
            ),
        ],
    );
    git(repo, &["add", "-A"]);
    set_gitlink(repo, &trap.sub_head());
    git(
        repo,
        &["commit", "-qm", "a submodule, filters and attributes"],
    );
}

/// Points the gitlink at `id` in the index.
fn set_gitlink(repo: &Path, id: &str) {
    git(
        repo,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{id},{GITLINK}"),
        ],
    );
}

/// The digest (and file count) of the ingress app's own files at `rev`,
/// computed from Git objects with the stock git CLI (DESIGN section 3): blobs
/// only, the gitlink left out, content unfiltered.
fn git_digest(repo: &Path, rev: &str) -> (String, usize) {
    let listing = git(
        repo,
        &["ls-tree", "-r", "-z", rev, "--", &format!("{INGRESS}/")],
    );
    let mut lines = Vec::new();
    for record in listing.split('\0').filter(|r| !r.is_empty()) {
        let (meta, path) = record.split_once('\t').expect("ls-tree record");
        let [_mode, kind, id] = meta.split(' ').collect::<Vec<_>>()[..] else {
            panic!("ls-tree record {record:?}")
        };
        if kind != "blob" {
            continue;
        }
        let content = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["cat-file", "blob", id])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git cat-file")
            .stdout;
        let rel = path
            .strip_prefix(&format!("{INGRESS}/"))
            .expect("under the app");
        lines.push((rel.to_owned(), hex::encode(Sha256::digest(&content))));
    }
    lines.sort();
    let manifest: String = lines
        .iter()
        .map(|(path, sha)| format!("{sha}  {path}\n"))
        .collect();
    (
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(manifest.as_bytes()))
        ),
        lines.len(),
    )
}

/// The raw bytes of the ingress app's blobs at `rev`, by path inside the app:
/// what an agent must install.
fn git_files(repo: &Path, rev: &str) -> BTreeMap<String, Vec<u8>> {
    let listing = git(
        repo,
        &[
            "ls-tree",
            "-r",
            "--name-only",
            rev,
            "--",
            &format!("{INGRESS}/"),
        ],
    );
    listing
        .lines()
        .filter(|path| *path != GITLINK)
        .map(|path| {
            let content = Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["cat-file", "blob", &format!("{rev}:{path}")])
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .output()
                .expect("git cat-file")
                .stdout;
            let rel = path
                .strip_prefix(&format!("{INGRESS}/"))
                .expect("under the app");
            (rel.to_owned(), content)
        })
        .collect()
}

/// `canopy <args>` in the trap's environment.
fn canopy_in(trap: &Trap, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .envs(trap.env())
        .env_remove("CANOPY_LOG")
        .env_remove("RUST_LOG")
        .env_remove("CANOPY_CONFIG")
        .output()
        .expect("run canopy")
}

/// The ingress app of `canopy tree <source> [--rev main] --output json`.
fn tree_ingress(trap: &Trap, source: &str, rev: bool) -> (String, u64) {
    let mut args = vec!["tree", source, "--output", "json"];
    if rev {
        args.extend(["--rev", "main"]);
    }
    let output = canopy_in(trap, &args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "tree {source}: {}",
        stderr(&output)
    );
    let tree: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let ingress = app(&tree, INGRESS).unwrap_or_else(|| panic!("no {INGRESS}: {tree}"));
    (
        ingress["digest"].as_str().expect("a digest").to_owned(),
        ingress["files"].as_u64().expect("files"),
    )
}

/// The trap works: stock Git, in the same environment, runs the filter
/// driver and the hooks and fetches the submodule when it checks the
/// repository out. Without this, the markers' absence would prove nothing.
#[test]
fn the_trap_catches_a_stock_git_checkout() {
    let trap = Trap::new();
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    make_hostile(&repo, &trap);
    let url = trap.serve(&repo, "hostile.git");
    let env = trap.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = git_client(
        trap.dir.path(),
        &["clone", "-q", "--recurse-submodules", &url, "checkout"],
        &env,
    );
    let markers = trap.markers();
    for marker in ["filter-smudge", "filter-process", "hook-post-checkout"] {
        assert!(
            markers.iter().any(|m| m == marker),
            "{marker} in {markers:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !trap.sub_requests().is_empty(),
        "the submodule was fetched: {:?}",
        trap.server.requests()
    );
}

#[test]
fn no_filter_hook_or_submodule_runs_in_tree_run_the_daemon_or_the_agent() {
    let trap = Trap::new();
    let env = trap.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_with("untrusted", &env_refs, |repo| make_hostile(repo, &trap));
    let repo = stack.repo.clone();
    let (expected, files) = git_digest(&repo, "main");
    assert_eq!(
        files, 4,
        "app.yaml, controller.yaml, .gitattributes, README.md"
    );

    // canopy tree: the work tree (nothing at the gitlink's path: the test's
    // commits check nothing out there), the commit, and the repository
    // fetched over HTTP.
    let url = trap.serve(&repo, "hostile.git");
    for (source, rev) in [
        (repo.to_str().unwrap(), false),
        (repo.to_str().unwrap(), true),
        (url.as_str(), true),
    ] {
        assert_eq!(
            tree_ingress(&trap, source, rev),
            (expected.clone(), files as u64),
            "tree {source} (--rev: {rev})"
        );
    }

    // canopy run --once, into a namespace of its own on the same Redis.
    let state = tempfile::tempdir().unwrap();
    let out = canopy_in(
        &trap,
        &[
            "run",
            "--once",
            "--repo-url",
            &format!("file://{}", repo.display()),
            "--repo-ref",
            "main",
            "--state-dir",
            state.path().to_str().unwrap(),
            "--redis-url",
            &stack.redis.url(),
            "--namespace",
            "once",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let once: String = ::redis::Commands::hget(
        &mut stack.redis.conn(),
        format!("canopy:once:app:{{{INGRESS}}}:desired"),
        "digest",
    )
    .unwrap();
    assert_eq!(once, expected, "run --once");

    // The daemon's first cycle (a full scan), and the agent applying it.
    assert_eq!(stack.desired_digest(INGRESS), expected, "the daemon");
    let agent = stack.agent(INGRESS, "ingress-1", "true", &[]);
    let applied = |rev: &str| {
        let digest = stack.desired_digest(INGRESS);
        eventually(WAIT, || stack.synced(INGRESS))
            && agent.current() == Some(agent.dir.join("versions").join(hex_of(&digest)))
            && files_under(&agent.current().unwrap()) == git_files(&repo, rev)
    };
    assert!(applied("main"), "{}", stack.explain(INGRESS, &[&agent]));

    // An incremental poll: a file and the gitlink change together.
    let moved = trap.sub_commit("kind: Vendored\nversion: 2\n");
    write_files(
        &repo,
        &[("platform/ingress/controller.yaml", "replicas: 4\n")],
    );
    git(&repo, &["add", "platform/ingress/controller.yaml"]);
    set_gitlink(&repo, &moved);
    git(&repo, &["commit", "-qm", "bump"]);
    stack.refresh();
    let (expected, _) = git_digest(&repo, "main");
    assert!(
        eventually(WAIT, || stack.desired_digest(INGRESS) == expected),
        "{}",
        stack.explain(INGRESS, &[&agent])
    );
    assert!(applied("main"), "{}", stack.explain(INGRESS, &[&agent]));
    let head = stack.head();
    let artifact = reqwest::blocking::Client::new()
        .get(
            stack
                .daemon
                .url(&format!("/api/v1/apps/{INGRESS}/artifact?revision={head}")),
        )
        .bearer_auth(TOKEN)
        .send()
        .expect("GET the artifact");
    assert_eq!(artifact.status(), 200);
    assert_eq!(artifact.headers()["digest"].to_str().unwrap(), expected);
    let mut entries: Vec<String> = ::tar::Archive::new(&artifact.bytes().unwrap()[..])
        .entries()
        .expect("a tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [".gitattributes", "README.md", "app.yaml", "controller.yaml"]
    );

    // Only the gitlink moves: nothing changes, nothing is signalled.
    let events = stack.key(INGRESS, "events");
    let signalled =
        |conn: &mut ::redis::Connection| -> u64 { ::redis::Commands::xlen(conn, &events).unwrap() };
    let before = signalled(&mut stack.redis.conn());
    let moved = trap.sub_commit("kind: Vendored\nversion: 3\n");
    set_gitlink(&repo, &moved);
    git(&repo, &["commit", "-qm", "bump the submodule only"]);
    let head = stack.head();
    stack.refresh();
    let meta = format!("canopy:{}:meta", stack.namespace);
    assert!(
        eventually(WAIT, || {
            let commit: Option<String> =
                ::redis::Commands::hget(&mut stack.redis.conn(), &meta, "commit").unwrap();
            commit.as_deref() == Some(head.as_str())
        }),
        "{}",
        stack.daemon.log()
    );
    assert_eq!(stack.desired_digest(INGRESS), expected);
    assert_eq!(signalled(&mut stack.redis.conn()), before);

    assert_eq!(trap.markers(), Vec::<String>::new(), "nothing ran");
    assert_eq!(
        trap.sub_requests(),
        Vec::<String>::new(),
        "the submodule was never fetched"
    );
}

fn poller(repo: &Path, state: &Path) -> Poller {
    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(&format!("file://{}", repo.display())).unwrap(),
        reference: "main".to_owned(),
        credentials: None,
        timeout: Duration::from_secs(30),
        dir: state.join("mirror.git"),
    })
    .unwrap();
    Poller::new(mirror, LayoutOptions::default())
}

/// What a snapshot publishes: every entry path, every app with its digest.
fn published(scan: &Scan) -> String {
    let entries: Vec<&str> = scan.entries.keys().map(|p| &**p).collect();
    let apps: BTreeMap<String, String> = scan
        .apps
        .apps
        .keys()
        .map(|name| {
            let digest = scan
                .digests
                .get(name)
                .map_or("invalid".to_owned(), |d| format!("{:?}", d.digest));
            (name.to_string(), digest)
        })
        .collect();
    format!("{entries:#?}\n{apps:#?}")
}

fn has_app(scan: &Scan, name: &str) -> bool {
    scan.apps.apps.keys().any(|app| app.as_str() == name)
}

fn has_entry(scan: &Scan, path: &str) -> bool {
    scan.entries.contains_key(path)
}

/// Replaces whatever `path` is in the index by a gitlink to `id`, and commits.
fn commit_gitlink(repo: &Path, path: &str, id: &str) {
    git(
        repo,
        &["rm", "-r", "-q", "--cached", "--ignore-unmatch", path],
    );
    git(
        repo,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{id},{path}"),
        ],
    );
    git(repo, &["commit", "-qm", &format!("gitlink at {path}")]);
}

/// Replaces the gitlink at `path` by the files under it in the work tree.
fn commit_files_back(repo: &Path, path: &str) {
    git(repo, &["rm", "-q", "--cached", path]);
    git(repo, &["add", path]);
    git(repo, &["commit", "-qm", &format!("files at {path}")]);
}

/// A gitlink is part of no app, whatever it replaces or is replaced by: an
/// app directory turned into a submodule is gone (pruned, like a removed
/// directory), a file turned into one is removed from its app, a moved
/// gitlink changes nothing; and each incremental poll publishes exactly what
/// a full scan of the same commit does.
#[test]
fn gitlinks_are_ignored_alike_by_incremental_polls_and_full_scans() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let mut incremental = poller(&repo, state.path());
    incremental.poll().unwrap();
    let (one, two) = (
        "1111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222",
    );
    type Step<'a> = (&'a str, Box<dyn Fn() + 'a>, fn(&Scan) -> bool);
    let steps: Vec<Step> = vec![
        (
            "an app directory becomes a gitlink",
            Box::new(|| commit_gitlink(&repo, INGRESS, one)),
            |s| !has_app(s, INGRESS) && !has_entry(s, "platform/ingress/app.yaml"),
        ),
        (
            "the gitlink moves",
            Box::new(|| commit_gitlink(&repo, INGRESS, two)),
            |s| !has_app(s, INGRESS) && !has_entry(s, INGRESS),
        ),
        (
            "the gitlink becomes the app directory again",
            Box::new(|| commit_files_back(&repo, INGRESS)),
            |s| has_app(s, INGRESS),
        ),
        (
            "a file becomes a gitlink",
            Box::new(|| commit_gitlink(&repo, "search/values.yaml", one)),
            |s| has_app(s, "search") && !has_entry(s, "search/values.yaml"),
        ),
        (
            "the gitlink becomes the file again",
            Box::new(|| commit_files_back(&repo, "search/values.yaml")),
            |s| has_entry(s, "search/values.yaml"),
        ),
        (
            "a generated app's directory becomes a gitlink",
            Box::new(|| commit_gitlink(&repo, "search/indexers/orders", one)),
            |s| !has_app(s, "search/indexers/orders"),
        ),
        (
            "and back",
            Box::new(|| commit_files_back(&repo, "search/indexers/orders")),
            |s| has_app(s, "search/indexers/orders"),
        ),
    ];
    for (what, step, expect) in steps {
        step();
        incremental.poll().unwrap();
        let fresh_state = tempfile::tempdir().unwrap();
        let mut fresh = poller(&repo, fresh_state.path());
        fresh.poll().unwrap();
        let (_, got) = incremental.state().unwrap();
        let (_, want) = fresh.state().unwrap();
        assert_eq!(published(got), published(want), "{what}");
        assert!(expect(want), "{what}:\n{}", published(want));
    }
}
