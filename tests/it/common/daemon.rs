//! An in-process daemon for HTTP tests: a real Redis, a real Git repository, a
//! reconciler that has run its first cycle, and the server on a loopback port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy::config::{Config, Overrides};
use canopy::reconcile::{Reconciler, Trigger};
use canopy::server::{Authenticator, Health, Metrics, Settings, Shared};
use canopy::source::{Mirror, MirrorOptions, Poller};
use canopy::store::Store;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::redis::RedisProc;
use super::{fixtures, git, git_repo_from, repo_path, write_files};

pub const NAMESPACE: &str = "http";

pub struct TestDaemon {
    pub config: Config,
    pub redis: RedisProc,
    pub repo: PathBuf,
    pub reconciler: Reconciler,
    pub shared: Shared,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    _remote: tempfile::TempDir,
    _state: tempfile::TempDir,
}

/// A `read` token, named `dash`: [`TestDaemon::get`] presents it. A config
/// without a `server:` section gets it; one with its own should configure it
/// too (`server::server_config` does).
pub const READ_TOKEN: &str = "r-canary-0b77de";

impl TestDaemon {
    /// `config_yaml` is a canopy.yaml without `repo.url` (it is added), e.g. with
    /// `server.tokens` or `webhooks`; secrets are read from `env`. Without a
    /// `server:` section, the server has the read token [`READ_TOKEN`].
    pub async fn start(config_yaml: &str, env: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::start_in(NAMESPACE, config_yaml, env).await
    }

    /// [`TestDaemon::start`] for a daemon of `namespace`, as `--namespace`
    /// would set it: its keys and its answer to tokens of other namespaces.
    pub async fn start_in(namespace: &str, config_yaml: &str, env: &[(&str, &str)]) -> TestDaemon {
        let remote = git_repo_from(&fixtures().join("example"));
        let repo = repo_path(&remote);
        let state = tempfile::tempdir().expect("temp dir");
        let file = state.path().join("canopy.yaml");
        let mut yaml = format!(
            "repo:\n  url: file://{}\n  ref: main\n{config_yaml}",
            repo.display()
        );
        if !config_yaml.lines().any(|line| line.starts_with("server:")) {
            yaml.push_str(&format!(
                "server:\n  tokens: [{{name: dash, role: read, sha256: \"{}\"}}]\n",
                hex::encode(sha2::Sha256::digest(READ_TOKEN))
            ));
        }
        std::fs::write(&file, yaml).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let config = Config::load(Some(&file), &lookup, &Overrides::default()).expect("config");

        let redis = RedisProc::start();
        let mirror_dir = state.path().join("mirror.git");
        let mirror = Mirror::open(MirrorOptions {
            url: config.repo.url.clone(),
            reference: "main".to_owned(),
            credentials: None,
            timeout: Duration::from_secs(30),
            dir: mirror_dir.clone(),
        })
        .expect("mirror");
        let store = Store::connect(&super::store_options(&redis.url(), namespace))
            .await
            .expect("connect");
        let mut reconciler = Reconciler::new(
            Poller::new(mirror, config.repo.layout_options()),
            store.clone(),
        )
        .await
        .expect("reconciler");
        reconciler.set_depends_on_timeout(Duration::ZERO);
        let report = reconciler.cycle().await.expect("first cycle");
        let auth = Authenticator::new(&config.server, namespace).expect("authenticator");
        auth.start().await.expect("identity provider keys");
        let health = Arc::new(Health::default());
        health.succeeded(&report.commit);
        let shared = Shared {
            store,
            trigger: Trigger::default(),
            health,
            metrics: Metrics::new(),
            settings: Arc::new(Settings {
                server: config.server.clone(),
                webhooks: config.webhooks.clone(),
                reference: "main".to_owned(),
                mirror_dir,
                layout: config.repo.layout_options(),
                sync_timeout: chrono::Duration::minutes(5),
            }),
            artifacts: Arc::default(),
            auth: Arc::new(auth),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        tokio::spawn(canopy::server::serve(
            listener,
            shared.clone(),
            shutdown.clone(),
        ));
        TestDaemon {
            config,
            redis,
            repo,
            reconciler,
            shared,
            addr,
            shutdown,
            _remote: remote,
            _state: state,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` with the read token.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(READ_TOKEN)
    }

    /// Commits `files` to the remote and runs one cycle.
    pub async fn commit_and_cycle(&mut self, files: &[(&str, &str)]) {
        write_files(&self.repo, files);
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", "change"]);
        self.reconciler.cycle().await.expect("cycle");
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
