//! Digests are verifiable with coreutils, identical whether read from a directory
//! or from Git, and never re-hash an unchanged blob.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use canopy::layout::LayoutOptions;
use canopy::scan::{Scan, scan};
use canopy::tree::{BlobCache, DirTree, GitTree};
use common::*;

/// The coreutils computation of DESIGN section 3, run in `dir` with `prune`d
/// child app directories left out. NUL-separated and with `--` so that names with
/// spaces, quotes or a leading dash reach sha256sum intact.
fn coreutils_digest(dir: &Path, prune: &[&str]) -> String {
    let prunes: String = prune
        .iter()
        .map(|p| format!("-path ./{p} -prune -o "))
        .collect();
    let script = format!(
        "find . {prunes}-type f -print | sed 's|^\\./||' | LC_ALL=C sort | tr '\\n' '\\0' \
         | xargs -0 sha256sum -- | sha256sum"
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(&script)
        .current_dir(dir)
        .output()
        .expect("run sha256sum pipeline");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("sha256sum prints ASCII");
    format!(
        "sha256:{}",
        text.split_whitespace().next().expect("a digest")
    )
}

fn digests(scan: &Scan) -> BTreeMap<String, String> {
    scan.digests
        .iter()
        .map(|(name, d)| (name.to_string(), d.digest.to_string()))
        .collect()
}

fn scan_dir(dir: &Path) -> Scan {
    scan(
        &DirTree::new(dir),
        &LayoutOptions::default(),
        &BlobCache::default(),
    )
    .expect("scan directory")
}

#[test]
fn plain_directory_apps_equal_the_coreutils_computation() {
    let example = fixtures().join("example");
    let scan = scan_dir(&example);
    let d = digests(&scan);
    assert_eq!(
        d["platform/ingress"],
        coreutils_digest(&example.join("platform/ingress"), &[])
    );
    assert_eq!(
        d["platform"],
        coreutils_digest(&example.join("platform"), &["ingress"])
    );
    assert_eq!(
        d["search/indexers/orders"],
        coreutils_digest(&example.join("search/indexers/orders"), &[])
    );
}

#[test]
fn awkward_file_names_sort_and_escape_like_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    // '-' < '.' < '/' bytewise: `a-b` and `a.b` sort before the directory `a/`,
    // unlike a naive per-directory walk. Backslashes are escaped by sha256sum.
    write_files(
        dir.path(),
        &[
            ("app.yaml", ""),
            ("a/b", "1"),
            ("a-b", "2"),
            ("a.b", "3"),
            ("B upper", "4"),
            ("with space.yaml", "5"),
            ("back\\slash", "6"),
            ("ünïcode.txt", "7"),
            ("-leading-dash", "8"),
            ("empty", ""),
        ],
    );
    let scan = scan_dir(dir.path());
    assert_eq!(digests(&scan)["."], coreutils_digest(dir.path(), &[]));
}

#[test]
fn directory_git_worktree_and_bare_repository_give_identical_digests() {
    let example = fixtures().join("example");
    let repo_dir = git_repo_from(&example);
    let repo = repo_path(&repo_dir);
    let bare = repo_dir.path().join("bare.git");
    git(
        repo_dir.path(),
        &["clone", "-q", "--bare", "repo", "bare.git"],
    );

    let from_dir = scan_dir(&example);
    let options = LayoutOptions::default();
    let from_git = scan(
        &GitTree::open(&repo, "main").unwrap(),
        &options,
        &BlobCache::default(),
    )
    .unwrap();
    let from_bare = scan(
        &GitTree::open(&bare, "HEAD").unwrap(),
        &options,
        &BlobCache::default(),
    )
    .unwrap();

    assert_eq!(digests(&from_dir).len(), 10);
    assert_eq!(digests(&from_dir), digests(&from_git));
    assert_eq!(digests(&from_dir), digests(&from_bare));
    for (name, d) in &from_dir.digests {
        assert_eq!(d.files, from_git.digests[name].files, "manifest of {name}");
        assert_eq!(
            d.config_digest, from_git.digests[name].config_digest,
            "config of {name}"
        );
    }
    assert_eq!(
        from_git.revision.as_deref(),
        Some(git(&repo, &["rev-parse", "main"]).trim())
    );

    // The binary agrees, in both forms, and JSON carries the full digests.
    let dir_json = canopy(&["tree", example.to_str().unwrap(), "--output", "json"]);
    let git_json = canopy(&[
        "tree",
        repo.to_str().unwrap(),
        "--rev",
        "main",
        "--output",
        "json",
    ]);
    let parse = |out: &std::process::Output| -> BTreeMap<String, String> {
        assert!(out.status.success(), "{}", stderr(out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_owned(),
                    a["digest"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(parse(&dir_json), digests(&from_dir));
    assert_eq!(parse(&git_json), digests(&from_dir));
}

#[test]
fn symlinks_are_hashed_by_their_target_text() {
    let example = fixtures().join("example");
    let scan = scan_dir(&example);
    let db = &scan.digests[&canopy::layout::AppName::parse("payments/db").unwrap()];
    let link = db
        .files
        .iter()
        .find(|f| f.path() == "schema.sql")
        .expect("the symlink is in the manifest");
    let target = std::fs::read_link(example.join("payments/db/schema.sql")).unwrap();
    assert_eq!(
        link.hash,
        canopy::tree::FileHash::of(target.to_str().unwrap().as_bytes())
    );
}

#[test]
fn config_digest_is_sha256_of_sorted_compact_json() {
    let scan = scan_dir(&fixtures().join("example"));
    let api = &scan.digests[&canopy::layout::AppName::parse("payments/api").unwrap()];
    let expected = canopy::digest::Sha256Digest::of(br#"{"LOG_LEVEL":"info","replicas":"3"}"#);
    assert_eq!(api.config_digest, expected);
    let none = &scan.digests[&canopy::layout::AppName::parse("search/query").unwrap()];
    assert_eq!(none.config_digest, canopy::digest::Sha256Digest::of(b"{}"));
}

#[test]
fn an_unchanged_blob_is_never_hashed_twice() {
    let repo_dir = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&repo_dir);
    let options = LayoutOptions::default();
    let cache = BlobCache::default();
    let first = scan(&GitTree::open(&repo, "main").unwrap(), &options, &cache).unwrap();
    let (_, misses_first) = cache.stats();
    assert!(misses_first > 0);

    // A second commit changes one file of one app.
    std::fs::write(repo.join("payments/api/service.yaml"), "changed\n").unwrap();
    git(&repo, &["commit", "-qam", "change one file"]);
    let second = scan(&GitTree::open(&repo, "main").unwrap(), &options, &cache).unwrap();
    let (_, misses_second) = cache.stats();
    // app.yaml files are read for parsing but hashed into the cache then; of the
    // other files only the changed blob misses.
    assert_eq!(misses_second - misses_first, 1);

    let changed: Vec<&str> = first
        .digests
        .iter()
        .filter(|(name, d)| second.digests[*name].digest != d.digest)
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(changed, ["payments/api"]);
}
