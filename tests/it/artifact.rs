//! `GET /api/v1/apps/<app>/artifact` against a real daemon (Redis, a Git mirror,
//! the server on port 0): what a child downloads, unpacks and verifies.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::daemon::{NAMESPACE, TestDaemon};
use sha2::{Digest as _, Sha256};

/// A successful artifact response, unpacked into a temp dir.
struct Fetched {
    tar: Vec<u8>,
    digest: String,
    revision: String,
    /// Path relative to the app directory -> file bytes, or a symlink's target.
    files: BTreeMap<String, Content>,
}

#[derive(Debug, PartialEq, Eq)]
enum Content {
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

impl Content {
    fn bytes(&self) -> &[u8] {
        match self {
            Content::File(b) | Content::Symlink(b) => b,
        }
    }
}

fn artifact_path(app: &str, revision: Option<&str>) -> String {
    let query = revision
        .map(|r| format!("?revision={r}"))
        .unwrap_or_default();
    format!("/api/v1/apps/{app}/artifact{query}")
}

async fn fetch(daemon: &TestDaemon, app: &str, revision: Option<&str>) -> Fetched {
    let response = daemon
        .get(&artifact_path(app, revision))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let tar = response.bytes().await.expect("body").to_vec();
    assert_eq!(
        status,
        200,
        "{app} at {revision:?}: {}",
        String::from_utf8_lossy(&tar)
    );
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("ASCII header")
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/x-tar");
    let dir = tempfile::tempdir().expect("temp dir");
    tar::Archive::new(&tar[..])
        .unpack(dir.path())
        .expect("the tar unpacks");
    let mut files = BTreeMap::new();
    read_dir(dir.path(), "", &mut files);
    Fetched {
        tar,
        digest: header("digest"),
        revision: header("x-canopy-revision"),
        files,
    }
}

/// Every file and symlink under `dir`, never following a link.
fn read_dir(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Content>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().into_string().expect("UTF-8 names");
        let path = format!("{prefix}{name}");
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("read link");
            let target = target.into_os_string().into_string().expect("UTF-8");
            out.insert(path, Content::Symlink(target.into_bytes()));
        } else if kind.is_dir() {
            read_dir(&entry.path(), &format!("{path}/"), out);
        } else {
            let bytes = std::fs::read(entry.path()).expect("read file");
            out.insert(path, Content::File(bytes));
        }
    }
}

/// The app digest of unpacked files, recomputed here as DESIGN section 3 defines
/// it: `sha256sum` lines of the files sorted bytewise, then sha256 of that text.
fn digest_of(files: &BTreeMap<String, Content>) -> String {
    // BTreeMap<String, _> is in bytewise order, as `LC_ALL=C sort`.
    let manifest: String = files
        .iter()
        .map(|(path, content)| {
            format!("{}  {path}\n", hex::encode(Sha256::digest(content.bytes())))
        })
        .collect();
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(manifest.as_bytes()))
    )
}

/// The digest `canopy tree --output json` gives `app` in the daemon's repo, at
/// its current commit.
fn tree_digest(daemon: &TestDaemon, app: &str) -> String {
    let repo = daemon.repo.to_str().expect("UTF-8 path");
    let output = common::canopy(&["tree", repo, "--output", "json"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let tree: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    common::tree_json::app(&tree, app).unwrap_or_else(|| panic!("no {app}"))["digest"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

fn head(daemon: &TestDaemon) -> String {
    common::git(&daemon.repo, &["rev-parse", "main"])
        .trim()
        .to_owned()
}

fn names(files: &BTreeMap<String, Content>) -> Vec<&str> {
    files.keys().map(String::as_str).collect()
}

/// Status and `error` message of a failed request.
async fn error(daemon: &TestDaemon, app: &str, revision: Option<&str>) -> (u16, String) {
    let response = daemon
        .get(&artifact_path(app, revision))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    let message = body["error"].as_str().expect("an error message").to_owned();
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_artifact_is_the_apps_own_files_with_a_verifiable_digest() {
    let daemon = TestDaemon::start("", &[]).await;
    let api = fetch(&daemon, "payments/api", None).await;
    // NOTES.md is excluded by the app's `exclude: ["**/*.md"]`.
    assert_eq!(
        names(&api.files),
        ["app.yaml", "deployment.yaml", "service.yaml"]
    );
    let fixture = common::fixtures().join("example/payments/api/deployment.yaml");
    assert_eq!(
        api.files["deployment.yaml"],
        Content::File(std::fs::read(fixture).unwrap())
    );
    assert_eq!(digest_of(&api.files), api.digest);
    assert_eq!(api.digest, tree_digest(&daemon, "payments/api"));
    assert_eq!(api.revision, head(&daemon));

    // A parent's artifact holds none of its children's files.
    let payments = fetch(&daemon, "payments", None).await;
    assert_eq!(names(&payments.files), ["app.yaml", "kustomization.yaml"]);
    assert_eq!(payments.digest, tree_digest(&daemon, "payments"));
    assert_eq!(digest_of(&payments.files), payments.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_revision_serves_the_old_files_and_digest() {
    let mut daemon = TestDaemon::start("", &[]).await;
    let old_commit = head(&daemon);
    let before = fetch(&daemon, "payments/api", None).await;
    let payments_before = fetch(&daemon, "payments", None).await;

    daemon
        .commit_and_cycle(&[("payments/api/deployment.yaml", "replicas: 9\n")])
        .await;
    let new_commit = head(&daemon);
    assert_ne!(old_commit, new_commit);

    let current = fetch(&daemon, "payments/api", None).await;
    assert_eq!(current.revision, new_commit);
    assert_eq!(
        current.files["deployment.yaml"],
        Content::File(b"replicas: 9\n".to_vec())
    );
    assert_eq!(current.digest, tree_digest(&daemon, "payments/api"));
    assert_eq!(digest_of(&current.files), current.digest);
    assert_ne!(current.digest, before.digest);

    let old = fetch(&daemon, "payments/api", Some(&old_commit)).await;
    assert_eq!(old.revision, old_commit);
    assert_eq!(old.digest, before.digest);
    assert_eq!(old.files, before.files);
    assert_eq!(old.tar, before.tar, "the same files give the same bytes");
    assert_eq!(digest_of(&old.files), old.digest);

    // `payments` did not change: its desired revision is still the old commit,
    // and the new commit (read through its layout) holds the same files.
    let payments = fetch(&daemon, "payments", Some(&new_commit)).await;
    assert_eq!(payments.revision, new_commit);
    assert_eq!(payments.digest, payments_before.digest);
    assert_eq!(payments.tar, payments_before.tar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_comes_out_as_a_symlink() {
    let daemon = TestDaemon::start("", &[]).await;
    // fixtures/example/payments/db/schema.sql -> migrations.sql
    let db = fetch(&daemon, "payments/db", None).await;
    assert_eq!(
        db.files["schema.sql"],
        Content::Symlink(b"migrations.sql".to_vec())
    );
    assert!(matches!(db.files["statefulset.yaml"], Content::File(_)));
    assert_eq!(digest_of(&db.files), db.digest);
    assert_eq!(db.digest, tree_digest(&daemon, "payments/db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_give_identical_bytes() {
    let daemon = TestDaemon::start("", &[]).await;
    let first = fetch(&daemon, "search", None).await;
    let second = fetch(&daemon, "search", None).await;
    let explicit = fetch(&daemon, "search", Some(&first.revision)).await;
    assert!(!first.files.is_empty());
    assert_eq!(first.tar, second.tar);
    assert_eq!(first.tar, explicit.tar);
    assert_eq!(first.digest, explicit.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apps_bad_and_unknown_revisions_are_refused() {
    let daemon = TestDaemon::start("", &[]).await;
    let (status, message) = error(&daemon, "nope", None).await;
    assert_eq!(status, 404, "{message}");

    let (status, message) = error(&daemon, "payments/api", Some("main")).await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("40 hex"), "{message}");

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let (status, message) = error(&daemon, "payments/api", Some(unknown)).await;
    assert_eq!(status, 404, "{message}");
    assert!(message.contains(unknown), "{message}");
    assert!(message.contains("not in"), "{message}");
    assert!(!message.contains("/tmp"), "no server paths: {message}");

    let (status, message) = error(&daemon, "nope", Some(&head(&daemon))).await;
    assert_eq!(status, 404, "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_digest_that_git_does_not_give_is_an_error_naming_the_app() {
    let daemon = TestDaemon::start("", &[]).await;
    let key = format!("canopy:{NAMESPACE}:app:{{payments/api}}:desired");
    daemon.redis.cmd(&[
        "HSET",
        &key,
        "digest",
        &format!("sha256:{}", "0".repeat(64)),
    ]);
    let (status, message) = error(&daemon, "payments/api", None).await;
    assert_eq!(status, 500, "{message}");
    assert!(message.contains("payments/api"), "{message}");
    assert!(message.contains("digest the daemon stored"), "{message}");
    assert!(!message.contains("/tmp"), "no server paths: {message}");
}

/// Redis is not trusted to say which files make an app: a file list written
/// there by someone else (a child's file, a path out of the app) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_file_list_in_redis_serves_only_the_apps_own_files() {
    let daemon = TestDaemon::start("", &[]).await;
    let before = fetch(&daemon, "payments", None).await;
    let key = format!("canopy:{NAMESPACE}:app:{{payments}}:files");
    for path in ["api/deployment.yaml", "../search/app.yaml", "db/schema.sql"] {
        daemon.redis.cmd(&["HSET", &key, path, &"0".repeat(64)]);
    }
    daemon.redis.cmd(&["HDEL", &key, "app.yaml"]);
    let after = fetch(&daemon, "payments", Some(&before.revision)).await;
    assert_eq!(after.tar, before.tar);
    assert!(
        names(&after.files).iter().all(|p| !p.contains('/')),
        "{:?}",
        names(&after.files)
    );
}
