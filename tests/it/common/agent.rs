//! End-to-end harness for the child side: a private Redis, the real `canopy run`
//! daemon on a `file://` copy of `fixtures/example`, and real `canopy agent`
//! processes ([`AgentProcess`]) with their JSON logs captured.
//!
//! [`Stack`] owns everything of one test (its own Redis and namespace); it is
//! all stopped on drop.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::binary::DaemonProcess;
use super::process::{Capture, Spawned};
use super::redis::RedisProc;
use super::{eventually, fixtures, git, git_repo_from, repo_path, sign, write_files};

/// The daemon's write token (for `POST /api/v1/refresh` and artifact reads).
pub const TOKEN: &str = "agent-test-token";
/// The secret of the daemon's GitHub webhook.
pub const GH_SECRET: &str = "agent-webhook-secret";
/// Long enough for a shared, busy build machine; a healthy run takes a second.
pub const WAIT: Duration = Duration::from_secs(30);

/// One test's world: Redis, a repository, the daemon.
pub struct Stack {
    pub namespace: String,
    pub repo: PathBuf,
    pub daemon: DaemonProcess,
    /// Added to the environment of the daemon and of every agent.
    env: Vec<(String, String)>,
    /// Holds the agents' directories and hook files.
    pub work: tempfile::TempDir,
    _config_dir: tempfile::TempDir,
    _remote: tempfile::TempDir,
    // Last: the daemon stops (on drop) before its Redis.
    pub redis: RedisProc,
}

impl Stack {
    /// Starts Redis and the daemon (polling once an hour: changes come by
    /// refresh or webhook) and waits for its first cycle.
    pub fn start(namespace: &str) -> Stack {
        Stack::start_with(namespace, &[], |_| {})
    }

    /// [`start`](Self::start), with `prepare` run on the repository (to commit
    /// what the daemon's first cycle must see) before the daemon starts, and
    /// `env` added to the environment of the daemon and of every agent.
    pub fn start_with(namespace: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Stack {
        let remote = git_repo_from(&fixtures().join("example"));
        let repo = repo_path(&remote);
        prepare(&repo);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config_dir = tempfile::tempdir().expect("temp dir");
        let redis = RedisProc::start();
        let config = format!(
            "namespace: {namespace}\nstate_dir: {state}\nshutdown_grace: 5s\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {redis}\nserver:\n  tokens: [{{name: ci, role: write, sha256: \"{sha}\"}}]\nwebhooks:\n  github: {{secret_env: GH_SECRET}}\n",
            state = config_dir.path().join("state").display(),
            repo = repo.display(),
            redis = redis.url(),
            sha = hex::encode(Sha256::digest(TOKEN.as_bytes())),
        );
        let file = config_dir.path().join("canopy.yaml");
        std::fs::write(&file, config).expect("write the daemon config");
        let mut daemon_env = vec![("GH_SECRET", GH_SECRET)];
        daemon_env.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let daemon = DaemonProcess::start(&file, &[], &daemon_env);
        let stack = Stack {
            namespace: namespace.to_owned(),
            repo,
            daemon,
            env,
            work: tempfile::tempdir().expect("temp dir"),
            _config_dir: config_dir,
            _remote: remote,
            redis,
        };
        assert!(
            eventually(WAIT, || stack.desired("platform/ingress").is_some()),
            "the daemon's first cycle:\n{}",
            stack.daemon.log()
        );
        stack
    }

    /// A path under the test's work directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `canopy agent` for `app` as `consumer`, with short timings; `extra`
    /// (flag, value, flag, value...) overrides or adds flags.
    pub fn agent(&self, app: &str, consumer: &str, exec: &str, extra: &[&str]) -> AgentProcess {
        self.agent_via(&self.daemon.url(""), app, consumer, exec, extra)
    }

    /// [`agent`](Self::agent) downloading from `server` (a proxy).
    pub fn agent_via(
        &self,
        server: &str,
        app: &str,
        consumer: &str,
        exec: &str,
        extra: &[&str],
    ) -> AgentProcess {
        let dir = self.agent_dir(app);
        let dir_arg = dir.display().to_string();
        let redis_url = self.redis.url();
        let mut flags: Vec<(&str, &str)> = vec![
            ("--app", app),
            ("--exec", exec),
            ("--dir", &dir_arg),
            ("--server", server),
            ("--redis-url", &redis_url),
            ("--namespace", &self.namespace),
            ("--consumer", consumer),
            ("--max-attempts", "3"),
            ("--retry-delay", "100ms"),
            ("--heartbeat-ttl", "2s"),
            ("--claim-idle", "1s"),
            ("--poll", "500ms"),
            ("--hook-timeout", "20s"),
            ("--grace", "5s"),
            ("--keep", "3"),
        ];
        assert!(extra.len().is_multiple_of(2), "flag-value pairs: {extra:?}");
        for pair in extra.chunks(2) {
            match flags.iter_mut().find(|(flag, _)| *flag == pair[0]) {
                Some(flag) => flag.1 = pair[1],
                None => flags.push((pair[0], pair[1])),
            }
        }
        let mut args = vec!["agent"];
        args.extend(flags.iter().flat_map(|(flag, value)| [*flag, *value]));
        AgentProcess::start(&args, dir, &self.env)
    }

    /// The directory of `app`'s agents (one per app, shared across restarts).
    pub fn agent_dir(&self, app: &str) -> PathBuf {
        self.path(&format!("agent-{}", app.replace('/', "-")))
    }

    /// Writes `files` into the repository and commits them (no push needed: the
    /// daemon fetches the `file://` repository itself).
    pub fn commit(&self, files: &[(&str, &str)]) -> String {
        write_files(&self.repo, files);
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", "change"]);
        self.head()
    }

    /// Removes `paths` from the repository and commits.
    pub fn commit_removal(&self, paths: &[&str]) -> String {
        let mut args = vec!["rm", "-q"];
        args.extend(paths);
        git(&self.repo, &args);
        git(&self.repo, &["commit", "-qm", "remove"]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// `POST /api/v1/refresh` with the write token: fetch now.
    pub fn refresh(&self) {
        let status = reqwest::blocking::Client::new()
            .post(self.daemon.url("/api/v1/refresh"))
            .bearer_auth(TOKEN)
            .send()
            .expect("POST /api/v1/refresh")
            .status();
        assert_eq!(status, 202, "refresh:\n{}", self.daemon.log());
    }

    /// A signed GitHub push webhook (`delivery` must be unique): fetch now.
    pub fn github_push(&self, delivery: &str) {
        let body = r#"{"ref":"refs/heads/main"}"#;
        let signature = format!("sha256={}", sign(GH_SECRET, body.as_bytes()));
        let status = reqwest::blocking::Client::new()
            .post(self.daemon.url("/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .expect("POST /hooks/github")
            .status();
        assert_eq!(status, 202, "webhook:\n{}", self.daemon.log());
    }

    pub fn key(&self, app: &str, suffix: &str) -> String {
        format!("canopy:{}:app:{{{app}}}:{suffix}", self.namespace)
    }

    fn hash(&self, key: &str) -> HashMap<String, String> {
        ::redis::Commands::hgetall(&mut self.redis.conn(), key).expect("HGETALL")
    }

    /// `:desired` of `app`, once the daemon wrote it.
    pub fn desired(&self, app: &str) -> Option<HashMap<String, String>> {
        Some(self.hash(&self.key(app, "desired"))).filter(|h| h.contains_key("digest"))
    }

    pub fn desired_digest(&self, app: &str) -> String {
        self.desired(app).expect("desired")["digest"].clone()
    }

    /// `:observed` of `app`: what its child reported last.
    pub fn observed(&self, app: &str) -> HashMap<String, String> {
        self.hash(&self.key(app, "observed"))
    }

    /// Whether the child reported `status` for `digest`.
    pub fn observed_is(&self, app: &str, status: &str, digest: &str) -> bool {
        let observed = self.observed(app);
        observed.get("status").map(String::as_str) == Some(status)
            && observed.get("digest").map(String::as_str) == Some(digest)
    }

    /// Whether the child reported `synced` for the current desired digest.
    pub fn synced(&self, app: &str) -> bool {
        self.desired(app)
            .is_some_and(|d| self.observed_is(app, "synced", &d["digest"]))
    }

    /// The entries of `:dead`, oldest first.
    pub fn dead(&self, app: &str) -> Vec<HashMap<String, String>> {
        let reply: ::redis::streams::StreamRangeReply =
            ::redis::Commands::xrange_all(&mut self.redis.conn(), self.key(app, "dead"))
                .expect("XRANGE");
        reply
            .ids
            .iter()
            .map(|entry| {
                entry
                    .map
                    .keys()
                    .map(|k| (k.clone(), entry.get(k).unwrap_or_default()))
                    .collect()
            })
            .collect()
    }

    /// Entries pending in the app's consumer group (read, never acknowledged).
    pub fn pending(&self, app: &str) -> u64 {
        let reply: ::redis::Value = ::redis::cmd("XPENDING")
            .arg(self.key(app, "events"))
            .arg("canopy")
            .query(&mut self.redis.conn())
            .expect("XPENDING");
        match reply {
            ::redis::Value::Array(items) => match items.first() {
                Some(::redis::Value::Int(n)) => *n as u64,
                other => panic!("XPENDING summary: {other:?}"),
            },
            other => panic!("XPENDING summary: {other:?}"),
        }
    }

    /// Whether every entry of the app's group is acknowledged, waiting for it: a
    /// child acknowledges after it reports, so `synced` is visible first.
    pub fn acknowledged(&self, app: &str) -> bool {
        eventually(WAIT, || self.pending(app) == 0)
    }

    /// `canopy status --output json` (the real binary, straight from Redis):
    /// app -> status.
    pub fn status(&self) -> BTreeMap<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["status", "--output", "json", "--redis-url"])
            .arg(self.redis.url())
            .args(["--namespace", &self.namespace])
            .env_remove("CANOPY_CONFIG")
            .env_remove("CANOPY_LOG")
            .output()
            .expect("run canopy status");
        assert!(
            out.status.success(),
            "canopy status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("canopy status prints JSON");
        json["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .map(|app| {
                (
                    app["app"].as_str().expect("app name").to_owned(),
                    app["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    }

    /// `canopy status` of one app.
    pub fn status_of(&self, app: &str) -> String {
        self.status().remove(app).unwrap_or_default()
    }

    /// What Redis holds for `app`, and the logs: for failure messages.
    pub fn explain(&self, app: &str, agents: &[&AgentProcess]) -> String {
        let mut text = format!(
            "desired {:?}\nobserved {:?}\ndead {:?}\n",
            self.desired(app),
            self.observed(app),
            self.dead(app)
        );
        for agent in agents {
            text.push_str(&format!("--- agent log\n{}\n", agent.log()));
        }
        text.push_str(&format!("--- daemon log\n{}", self.daemon.log()));
        text
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.daemon.signal("TERM");
        let _ = self.daemon.wait(Duration::from_secs(10));
    }
}

/// A running `canopy agent`, its output (JSON log lines, the hook's output)
/// captured. Killed on drop.
pub struct AgentProcess {
    process: Spawned,
    pub dir: PathBuf,
}

impl AgentProcess {
    /// `canopy agent <args>`, with `env` added to its environment.
    pub fn start(args: &[&str], dir: PathBuf, env: &[(String, String)]) -> AgentProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.args(args)
            .env("CANOPY_LOG", "canopy=info")
            .env("CANOPY_LOG_FORMAT", "json")
            // A token in the agent's environment: the hook must never see it.
            .env("CANOPY_TOKEN", TOKEN)
            .env_remove("CANOPY_CONFIG")
            .env_remove("CANOPY_REDIS_URL")
            .env_remove("CANOPY_REDIS_PASSWORD")
            .env_remove("CANOPY_APP")
            .env_remove("CANOPY_CONSUMER")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let process = Spawned::start(&mut cmd, Capture::Both, "canopy agent");
        AgentProcess { process, dir }
    }

    /// The version `<dir>/current` points at, as an absolute path.
    pub fn current(&self) -> Option<PathBuf> {
        let target = std::fs::read_link(self.dir.join("current")).ok()?;
        Some(self.dir.join(target))
    }
}

impl Deref for AgentProcess {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.process
    }
}

impl DerefMut for AgentProcess {
    fn deref_mut(&mut self) -> &mut Spawned {
        &mut self.process
    }
}

/// Every regular file under `root` (relative path -> bytes), not following
/// symlinks.
pub fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let bytes = std::fs::read(&path).expect("read");
                out.insert(rel.display().to_string(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A hex digest's version directory name: `sha256:<hex>` -> `<hex>`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// An HTTP proxy in front of the daemon for the agents' downloads: while
/// [`tamper`](Self::tamper) is on, it flips one byte of the tar's file content;
/// while [`replace`](Self::replace) holds a tar, it serves that one instead,
/// with the `Digest` header given (a daemon, or a man in the middle, that
/// sends what it likes). Otherwise the `Digest` header is passed on unchanged.
/// One request per connection.
pub struct TamperProxy {
    pub addr: SocketAddr,
    faults: Faults,
}

impl TamperProxy {
    pub fn start(upstream: SocketAddr) -> TamperProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("address");
        let faults = Faults::default();
        let shared = faults.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let faults = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream, &faults);
                });
            }
        });
        TamperProxy { addr, faults }
    }

    /// Serves `tar` with the `Digest` header `digest` as every artifact from
    /// now on.
    pub fn replace(&self, tar: Vec<u8>, digest: &str) {
        *self.faults.replacement.lock().unwrap() = Some(Replacement {
            tar,
            digest: digest.to_owned(),
        });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn tamper(&self, on: bool) {
        self.faults.tamper.store(on, Ordering::SeqCst);
    }

    pub fn tampered(&self) -> u32 {
        *self.faults.tampered.lock().unwrap()
    }
}

/// What the proxy does to artifacts (shared with its connection threads).
#[derive(Clone, Default)]
struct Faults {
    tamper: Arc<AtomicBool>,
    replacement: Arc<Mutex<Option<Replacement>>>,
    /// Artifact responses served tampered or replaced.
    tampered: Arc<Mutex<u32>>,
}

/// A tar served instead of the daemon's, with its `Digest` header.
#[derive(Clone)]
struct Replacement {
    tar: Vec<u8>,
    digest: String,
}

/// Reads one request (head only: the agent sends GETs), replays it upstream with
/// reqwest, and answers with `Connection: close`.
fn serve(mut stream: TcpStream, upstream: SocketAddr, faults: &Faults) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let mut request = reqwest::blocking::Client::new().get(format!("http://{upstream}{target}"));
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            request = request.header("authorization", value.trim());
        }
    }
    let response = request.send().map_err(std::io::Error::other)?;
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            )
        })
        .map(|(name, value)| {
            (
                name.to_string(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut body = response.bytes().map_err(std::io::Error::other)?.to_vec();
    let artifact = target.contains("/artifact") && status.is_success();
    let replacement = faults.replacement.lock().unwrap().clone();
    if let Some(replacement) = replacement.filter(|_| artifact) {
        body = replacement.tar;
        for (name, value) in &mut headers {
            if name == "digest" {
                value.clone_from(&replacement.digest);
            }
        }
        *faults.tampered.lock().unwrap() += 1;
    } else if faults.tamper.load(Ordering::SeqCst) && artifact {
        // The first file's content starts after its 512-byte header (the
        // daemon's tars hold files and symlinks only, no directories).
        if let Some(byte) = body.get_mut(512) {
            *byte ^= 0x01;
            *faults.tampered.lock().unwrap() += 1;
        }
    }
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(out.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}
