//! An in-process reconciler on a private Redis and a `file://` copy of
//! `fixtures/example`, in namespace [`NS`]: the shared fixture of the tests that
//! drive cycles and status evaluation directly. Test files add their own
//! methods to [`Setup`]; they share one impl, so names must differ between files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy::layout::LayoutOptions;
use canopy::protocol::RedisOptions;
use canopy::reconcile::Reconciler;
use canopy::source::{Mirror, MirrorOptions, Poller, RepoUrl};
use canopy::store::{Signal, Store};

use super::redis::RedisProc;
use super::{fixtures, git, git_repo_from, repo_path, store_options, write_files};

pub const NS: &str = "test";

pub struct Setup {
    pub redis: RedisProc,
    _remote: tempfile::TempDir,
    pub repo: PathBuf,
    pub state: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let remote = git_repo_from(&fixtures().join("example"));
        Setup {
            redis: RedisProc::start(),
            repo: repo_path(&remote),
            _remote: remote,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// A daemon's reconciler on the fixture: claims a new epoch on this Redis.
    pub async fn reconciler(&self) -> Reconciler {
        self.reconciler_of(&self.repo, self.state.path(), LayoutOptions::default())
            .await
    }

    pub async fn reconciler_of(
        &self,
        repo: &Path,
        state: &Path,
        layout: LayoutOptions,
    ) -> Reconciler {
        let options = store_options(&self.redis.url(), NS);
        self.reconciler_as(repo, state, layout, &options).await
    }

    /// [`reconciler_of`](Self::reconciler_of), connected with `options` (a
    /// Redis user of its own, say).
    pub async fn reconciler_as(
        &self,
        repo: &Path,
        state: &Path,
        layout: LayoutOptions,
        options: &RedisOptions,
    ) -> Reconciler {
        let mirror = Mirror::open(MirrorOptions {
            url: RepoUrl::parse(&format!("file://{}", repo.display())).unwrap(),
            reference: "main".to_owned(),
            credentials: None,
            timeout: Duration::from_secs(30),
            dir: state.join("mirror.git"),
        })
        .unwrap();
        let store = Store::connect(options).await.unwrap();
        let mut reconciler = Reconciler::new(Poller::new(mirror, layout), store)
            .await
            .unwrap();
        // No waiting for dependencies here (the example's payments/api depends on
        // a manual app); the hold has its own test.
        reconciler.set_depends_on_timeout(Duration::ZERO);
        reconciler
    }

    /// A hash of this Redis, e.g. an app's `:desired`.
    pub fn hash(&self, key: &str) -> HashMap<String, String> {
        ::redis::Commands::hgetall(&mut self.redis.conn(), key).unwrap()
    }

    pub fn commit(&self, files: &[(&str, &str)], message: &str) {
        write_files(&self.repo, files);
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", message]);
    }
}

/// The key of one of `app`'s Redis entries in namespace [`NS`], e.g. `desired`.
pub fn app_key(app: &str, suffix: &str) -> String {
    format!("canopy:{NS}:app:{{{app}}}:{suffix}")
}

/// Every signal of a stream, oldest first, checking that each entry's flat
/// fields (`kind`, `app`, `generation`) match its payload.
pub fn signals_in(conn: &mut ::redis::Connection, key: &str) -> Vec<Signal> {
    let reply: ::redis::streams::StreamRangeReply =
        ::redis::Commands::xrange_all(conn, key).unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let payload: String = entry.get("payload").unwrap();
            let signal: Signal = serde_json::from_str(&payload).unwrap();
            let kind: String = entry.get("kind").unwrap();
            let app: String = entry.get("app").unwrap();
            let generation: u64 = entry.get("generation").unwrap();
            assert_eq!(
                (kind.as_str(), app.as_str(), generation),
                (signal.kind.as_str(), signal.app.as_str(), signal.generation)
            );
            signal
        })
        .collect()
}
