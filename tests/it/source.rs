//! The Git source against real repositories: fetch, incremental polls,
//! force-push, deleted branches, unreachable remotes and corrupt mirrors.

use crate::common;

use std::path::Path;
use std::time::Duration;

use canopy::layout::LayoutOptions;
use canopy::plan::AppChange;
use canopy::source::{Mirror, MirrorOptions, Poll, PollOutcome, Poller, RepoUrl, SourceError};
use common::git_server;
use common::*;

fn poller(url: &str, reference: &str, state: &Path) -> Poller {
    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(url).unwrap(),
        reference: reference.to_owned(),
        credentials: None,
        timeout: Duration::from_secs(30),
        dir: state.join("mirror.git"),
    })
    .unwrap();
    Poller::new(mirror, LayoutOptions::default())
}

fn changed(poll: &Poll) -> Vec<(String, AppChange)> {
    match &poll.outcome {
        PollOutcome::Unchanged => Vec::new(),
        PollOutcome::Changed { plan, .. } => plan
            .apps
            .iter()
            .map(|a| (a.name.to_string(), a.change))
            .collect(),
    }
}

fn head(repo: &Path) -> String {
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

#[test]
fn polls_are_incremental_and_unchanged_polls_do_nothing() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.display());
    let mut poller = poller(&url, "main", state.path());

    let first = poller.poll().unwrap();
    assert_eq!(first.commit.to_string(), head(&repo));
    assert_eq!(changed(&first).len(), 10, "a first poll plans every app");
    assert!(changed(&first).iter().all(|(_, c)| *c == AppChange::Added));

    let again = poller.poll().unwrap();
    assert!(matches!(again.outcome, PollOutcome::Unchanged));

    std::fs::write(repo.join("payments/api/deployment.yaml"), "replicas: 5\n").unwrap();
    git(&repo, &["commit", "-qam", "scale payments/api"]);
    let poll = poller.poll().unwrap();
    assert_eq!(
        changed(&poll),
        [("payments/api".to_owned(), AppChange::Modified)]
    );
    match poll.outcome {
        PollOutcome::Changed {
            blobs_read, plan, ..
        } => {
            assert_eq!(blobs_read, 1, "only the changed blob is read");
            assert_eq!(plan.apps[0].files.len(), 1);
            assert_eq!(plan.apps[0].files[0].path, "deployment.yaml");
        }
        PollOutcome::Unchanged => unreachable!(),
    }
}

#[test]
fn force_push_to_an_older_tree_signals_the_changed_apps() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let base = head(&repo);
    std::fs::write(repo.join("search/values.yaml"), "shards: 8\n").unwrap();
    git(&repo, &["commit", "-qam", "more shards"]);
    let state = tempfile::tempdir().unwrap();
    let mut poller = poller(&format!("file://{}", repo.display()), "main", state.path());
    poller.poll().unwrap();

    git(&repo, &["reset", "-q", "--hard", &base]);
    let poll = poller.poll().unwrap();
    assert_eq!(poll.commit.to_string(), base);
    assert_eq!(changed(&poll), [("search".to_owned(), AppChange::Modified)]);
}

#[test]
fn tags_and_pinned_commits_are_tracked() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let first = head(&repo);
    git(&repo, &["tag", "-a", "-m", "release", "v1"]);
    std::fs::write(repo.join("search/values.yaml"), "shards: 8\n").unwrap();
    git(&repo, &["commit", "-qam", "after the tag"]);
    let url = format!("file://{}", repo.display());

    let state = tempfile::tempdir().unwrap();
    let tag = poller(&url, "v1", state.path()).poll().unwrap();
    assert_eq!(
        tag.commit.to_string(),
        first,
        "an annotated tag is peeled to its commit"
    );

    let state = tempfile::tempdir().unwrap();
    let mut pinned = poller(&url, &first, state.path());
    assert_eq!(pinned.poll().unwrap().commit.to_string(), first);
    assert!(matches!(
        pinned.poll().unwrap().outcome,
        PollOutcome::Unchanged
    ));
}

#[test]
fn a_deleted_branch_or_unreachable_remote_keeps_the_last_good_state() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    git(&repo, &["branch", "-q", "deploy"]);
    let state = tempfile::tempdir().unwrap();
    let mut poller = poller(
        &format!("file://{}", repo.display()),
        "deploy",
        state.path(),
    );
    let good = poller.poll().unwrap().commit;

    git(&repo, &["branch", "-q", "-D", "deploy"]);
    let err = poller.poll().unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    assert!(
        canopy::error_chain(&err).contains("\"deploy\""),
        "{}",
        canopy::error_chain(&err)
    );
    let (commit, scan) = poller.state().unwrap();
    assert_eq!(commit, good);
    assert_eq!(scan.digests.len(), 10, "nothing is pruned");

    // The remote disappears altogether, then comes back.
    let moved = remote.path().join("elsewhere");
    std::fs::rename(&repo, &moved).unwrap();
    assert!(poller.poll().is_err());
    assert_eq!(poller.state().unwrap().1.digests.len(), 10);
    std::fs::rename(&moved, &repo).unwrap();
    git(&repo, &["branch", "-q", "deploy"]);
    assert!(matches!(
        poller.poll().unwrap().outcome,
        PollOutcome::Unchanged
    ));
}

#[test]
fn a_corrupt_mirror_is_recloned_and_polling_converges() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let mut poller = poller(&format!("file://{}", repo.display()), "main", state.path());
    poller.poll().unwrap();

    // Truncate every pack of the mirror, then push a change.
    let packs = state.path().join("mirror.git/objects/pack");
    for pack in std::fs::read_dir(&packs).unwrap() {
        let path = pack.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            let len = std::fs::metadata(&path).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len / 2).unwrap();
        }
    }
    std::fs::write(repo.join("payments/api/deployment.yaml"), "replicas: 7\n").unwrap();
    git(&repo, &["commit", "-qam", "scale"]);
    let poll = poller.poll().unwrap();
    assert_eq!(poll.commit.to_string(), head(&repo));
    assert_eq!(
        changed(&poll),
        [("payments/api".to_owned(), AppChange::Modified)]
    );
    assert!(!state.path().join("mirror.git.fresh").exists());
    assert!(!state.path().join("mirror.git.old").exists());
}

#[test]
fn packs_are_consolidated_so_polls_stay_flat() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let mut poller = poller(&format!("file://{}", repo.display()), "main", state.path());
    for i in 0..25 {
        std::fs::write(repo.join("search/values.yaml"), format!("shards: {i}\n")).unwrap();
        git(&repo, &["commit", "-qam", "tune"]);
        let poll = poller.poll().unwrap();
        assert_eq!(poll.commit.to_string(), head(&repo));
        poller.maintain();
    }
    assert!(
        poller.mirror().pack_count() <= 17,
        "packs: {}",
        poller.mirror().pack_count()
    );
}

#[test]
fn credentials_never_appear_in_errors() {
    let state = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 (discard) of loopback: the fetch fails.
    let mut poller = poller(
        "https://deploy:tok-canary-91c@127.0.0.1:9/platform.git",
        "main",
        state.path(),
    );
    let err = poller.poll().unwrap_err();
    let text = format!("{} {:?}", canopy::error_chain(&err), err);
    assert!(!text.contains("tok-canary-91c"), "{text}");
    assert!(
        text.contains("127.0.0.1:9"),
        "the error names the remote: {text}"
    );
}

/// A fixture repo with work tree, and its bare copy served as `example.git`.
struct Served {
    source: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Served {
    fn example() -> Served {
        let source = git_repo_from(&fixtures().join("example"));
        let root = tempfile::tempdir().unwrap();
        git_server::bare_clone(&repo_path(&source), root.path(), "example.git");
        Served { source, root }
    }

    /// Commits a change to payments/api and pushes it to the served repository.
    fn push_change(&self) -> String {
        let repo = repo_path(&self.source);
        std::fs::write(repo.join("payments/api/deployment.yaml"), "replicas: 9\n").unwrap();
        git(&repo, &["commit", "-qam", "scale"]);
        let bare = self.root.path().join("example.git");
        git(&repo, &["push", "-q", bare.to_str().unwrap(), "main"]);
        head(&repo)
    }
}

fn poll_twice_across_a_push(
    url: &str,
    served: &Served,
    credentials: Option<canopy::source::Credentials>,
) {
    let state = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(url).unwrap(),
        reference: "main".to_owned(),
        credentials,
        timeout: Duration::from_secs(60),
        dir: state.path().join("mirror.git"),
    })
    .unwrap();
    let mut poller = Poller::new(mirror, LayoutOptions::default());
    let first = poller.poll().unwrap();
    assert_eq!(first.commit.to_string(), head(&repo_path(&served.source)));
    assert!(matches!(
        poller.poll().unwrap().outcome,
        PollOutcome::Unchanged
    ));
    let pushed = served.push_change();
    let poll = poller.poll().unwrap();
    assert_eq!(poll.commit.to_string(), pushed);
    assert_eq!(
        changed(&poll),
        [("payments/api".to_owned(), AppChange::Modified)]
    );
}

#[test]
fn fetches_over_git_protocol() {
    let served = Served::example();
    let daemon = git_server::GitDaemon::start(served.root.path());
    poll_twice_across_a_push(&daemon.url("example.git"), &served, None);
}

#[test]
fn fetches_over_smart_http() {
    let served = Served::example();
    let server = git_server::GitHttpServer::start(served.root.path(), None);
    poll_twice_across_a_push(&server.url("example.git"), &served, None);
    assert!(
        server.requests().iter().all(|r| r.status == 200),
        "{:?}",
        server.requests()
    );
}

#[test]
fn credentials_are_never_sent_over_plain_http() {
    let served = Served::example();
    let server = git_server::GitHttpServer::start(
        served.root.path(),
        Some(("deploy".to_owned(), "tok-canary-5e1".to_owned())),
    );
    let with_credentials = [
        (server.authenticated_url("example.git"), None),
        (
            server.url("example.git"),
            Some(canopy::source::Credentials {
                username: "deploy".to_owned(),
                token: canopy::protocol::Secret::new("tok-canary-5e1"),
            }),
        ),
    ];
    for (url, credentials) in with_credentials {
        let state = tempfile::tempdir().unwrap();
        let err = Mirror::open(MirrorOptions {
            url: RepoUrl::parse(&url).unwrap(),
            reference: "main".to_owned(),
            credentials,
            timeout: Duration::from_secs(60),
            dir: state.path().join("mirror.git"),
        })
        .err()
        .expect("refused");
        let text = format!("{} {:?}", canopy::error_chain(&err), err);
        assert!(
            text.contains("use https") && !text.contains("tok-canary-5e1"),
            "{text}"
        );
    }
    assert!(server.requests().is_empty(), "nothing was sent");

    // Without credentials the server's 401 is a clear fetch error naming the URL.
    let state = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(&server.url("example.git")).unwrap(),
        reference: "main".to_owned(),
        credentials: None,
        timeout: Duration::from_secs(60),
        dir: state.path().join("mirror.git"),
    })
    .unwrap();
    let err = mirror.fetch().unwrap_err();
    assert!(
        canopy::error_chain(&err).contains("127.0.0.1"),
        "{}",
        canopy::error_chain(&err)
    );
}

#[test]
fn a_stalled_remote_times_out() {
    // Accepts connections and never answers (a blackhole).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let state = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(&format!("git://127.0.0.1:{port}/example.git")).unwrap(),
        reference: "main".to_owned(),
        credentials: None,
        timeout: Duration::from_millis(500),
        dir: state.path().join("mirror.git"),
    })
    .unwrap();
    let err = mirror.fetch().unwrap_err();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    // The abandoned fetch still holds the mirror: no second fetch starts meanwhile.
    assert!(matches!(
        mirror.fetch().unwrap_err(),
        SourceError::Busy | SourceError::Timeout { .. }
    ));
    drop(held.join().unwrap());
}

#[test]
fn tree_and_validate_read_remote_urls() {
    let served = Served::example();
    let daemon = git_server::GitDaemon::start(served.root.path());
    let url = daemon.url("example.git");
    let remote = canopy(&["tree", &url, "--rev", "main", "--output", "json"]);
    let local = canopy(&[
        "tree",
        fixtures().join("example").to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(remote.status.success(), "{}", stderr(&remote));
    let apps = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["apps"].clone()
    };
    assert_eq!(apps(&remote), apps(&local), "same content, same digests");
    let validate = canopy(&["validate", &url]);
    assert!(validate.status.success(), "{}", stderr(&validate));
}

#[test]
fn a_ref_that_is_not_a_commit_is_a_clear_error_not_a_reclone_loop() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let tree = git(&repo, &["rev-parse", "HEAD^{tree}"]).trim().to_owned();
    git(&repo, &["tag", "tree-tag", &tree]);
    let state = tempfile::tempdir().unwrap();
    let mut poller = poller(
        &format!("file://{}", repo.display()),
        "tree-tag",
        state.path(),
    );
    for _ in 0..2 {
        let err = poller.poll().unwrap_err();
        assert!(matches!(err, SourceError::NotACommit { .. }), "{err:?}");
    }
    assert!(!state.path().join("mirror.git.old").exists());
}

/// What a daemon killed mid-fetch leaves in its mirror, named as gix and git
/// name them: temporary packs, a `.keep` file, and locks on the tracked ref
/// and on packed-refs. The lock alone would make every later fetch fail. The
/// next process to open the mirror sweeps them all, and its fetch goes
/// through.
#[test]
fn leftovers_of_an_interrupted_fetch_are_swept_when_the_mirror_is_opened() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.display());
    poller(&url, "main", state.path()).poll().unwrap();
    let mirror = state.path().join("mirror.git");
    let clean = paths_under(&mirror);

    std::fs::write(repo.join("search/values.yaml"), "shards: 8\n").unwrap();
    git(&repo, &["commit", "-qam", "more shards"]);
    let pack = mirror.join("objects/pack");
    let leftovers = [
        (pack.join(".tmpAbC123"), "PACK half written"),
        (pack.join("tmp_pack_XyZ789"), "PACK half written"),
        (
            pack.join("pack-0123456789abcdef0123456789abcdef01234567.keep"),
            "",
        ),
        (
            mirror.join("refs/canopy/branch.lock"),
            "0123456789abcdef0123456789abcdef01234567\n",
        ),
        (mirror.join("packed-refs.lock"), ""),
    ];
    for (path, content) in &leftovers {
        std::fs::write(path, content).unwrap();
    }

    let mut poller = poller(&url, "main", state.path());
    for (path, _) in &leftovers {
        assert!(!path.exists(), "{} swept", path.display());
    }
    let poll = poller.poll().unwrap();
    assert_eq!(poll.commit.to_string(), head(&repo));
    let after: Vec<String> = paths_under(&mirror)
        .into_iter()
        .filter(|p| !clean.contains(p))
        .collect();
    assert!(
        after
            .iter()
            .all(|p| p.starts_with("objects/pack/pack-") && !p.ends_with(".keep")),
        "only the fetched pack was added: {after:?}"
    );
}

/// A fetch whose ref update fails (here: a lock another process holds) after
/// its pack was written leaves neither that pack's `.keep` file nor a
/// temporary file: the pack stays usable and can be consolidated later.
#[test]
fn a_fetch_that_fails_after_writing_its_pack_leaves_no_keep_file() {
    let remote = git_repo_from(&fixtures().join("example"));
    let repo = repo_path(&remote);
    let state = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.display());
    let mut poller = poller(&url, "main", state.path());
    poller.poll().unwrap();
    let mirror = state.path().join("mirror.git");

    std::fs::write(repo.join("search/values.yaml"), "shards: 8\n").unwrap();
    git(&repo, &["commit", "-qam", "more shards"]);
    let lock = mirror.join("refs/canopy/branch.lock");
    std::fs::write(&lock, "").unwrap();
    let err = poller.poll().unwrap_err();
    assert!(
        canopy::error_chain(&err).contains("branch.lock"),
        "{}",
        canopy::error_chain(&err)
    );
    let pack: Vec<String> = paths_under(&mirror.join("objects/pack"));
    assert!(
        pack.iter()
            .all(|p| p.starts_with("pack-") && !p.ends_with(".keep")),
        "{pack:?}"
    );
    assert!(
        lock.exists(),
        "a running process's lock is not taken from it"
    );

    std::fs::remove_file(&lock).unwrap();
    assert_eq!(poller.poll().unwrap().commit.to_string(), head(&repo));
}
