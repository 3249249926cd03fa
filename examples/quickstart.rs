//! `cargo run --example quickstart`: canopy's main job on the bundled example, in a
//! few seconds, with nothing to set up but `git` and `redis-server` on PATH.
//!
//! It turns `fixtures/example` into a Git repository, starts `canopy run` on it
//! (the daemon, in this process, with its embedded Redis and its HTTP API) and a
//! `canopy agent` as the child of one app, commits a change to that app and asks
//! the daemon to fetch now, shows the one signal that arrives, the agent applying
//! it and reporting back, and prints `canopy status`: the whole loop. Everything
//! lives in a temporary directory removed on exit.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use canopy::cli::Cli;
use canopy::plan::FileChangeKind;
use canopy::store::{Keys, Signal};
use clap::Parser;
use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use sha2::{Digest, Sha256};

type Error = Box<dyn std::error::Error>;

/// The app whose file the quickstart changes, and whose child the agent is.
const APP: &str = "platform/ingress";
/// A sync token for the daemon's API; the config holds only its sha256.
const TOKEN: &str = "quickstart-token";
/// The agent's token: it reads its own app's files, and nothing else.
const AGENT_TOKEN: &str = "quickstart-agent-token";

/// The quickstart's own commit: fixed identity and date, and none of the user's Git
/// configuration (hooks, signing), like `fixtures/make-repo.sh`.
const GIT_ENV: [(&str, &str); 8] = [
    ("GIT_AUTHOR_NAME", "quickstart"),
    ("GIT_AUTHOR_EMAIL", "quickstart@canopy.invalid"),
    ("GIT_COMMITTER_NAME", "quickstart"),
    ("GIT_COMMITTER_EMAIL", "quickstart@canopy.invalid"),
    ("GIT_AUTHOR_DATE", "2026-01-01T00:01:00Z"),
    ("GIT_COMMITTER_DATE", "2026-01-01T00:01:00Z"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
];

#[tokio::main]
async fn main() -> ExitCode {
    match quickstart().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {}", canopy::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

async fn quickstart() -> Result<(), Error> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("platform");
    let state = tmp.path().join("state");

    // 1. The bundled example as a Git repository (one deterministic commit on `main`).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    run(Command::new(fixtures.join("make-repo.sh"))
        .arg(fixtures.join("example"))
        .arg(&repo))?;

    // 2. A config: the repository, a loopback port for the API, a write token
    //    and a read token scoped to the agent's app (their sha256), an hour
    //    between polls (the API triggers them here). No redis.url: the daemon
    //    starts its own redis-server in the state dir.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = tmp.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\n\
             server:\n  listen: 127.0.0.1:{port}\n  tokens:\n\
             \x20   - {{name: quickstart, role: sync, sha256: \"{sha}\"}}\n\
             \x20   - {{name: agent, role: read, sha256: \"{agent_sha}\", apps: [{APP}]}}\n",
            state = state.display(),
            repo = repo.display(),
            sha = hex::encode(Sha256::digest(TOKEN)),
            agent_sha = hex::encode(Sha256::digest(AGENT_TOKEN)),
        ),
    )?;
    println!(
        "canopy quickstart: `canopy run --config {}`",
        config.display()
    );
    println!(
        "  (fixtures/example as a Git repo, a private redis-server, the API on 127.0.0.1:{port})\n"
    );

    // 3. The daemon: exactly what `canopy run --config canopy.yaml` does.
    let cli = Cli::try_parse_from(["canopy", "run", "--config", config.to_str().ok_or("path")?])?;
    let daemon =
        std::thread::spawn(move || canopy::cli::run(cli).map_err(|e| canopy::error_chain(&e)));
    let api = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = wait_for("the daemon to be ready", || async {
        let ready = http.get(format!("{api}/readyz")).send().await;
        daemon.is_finished() || ready.is_ok_and(|r| r.status().is_success())
    })
    .await;
    if daemon.is_finished() {
        // It could not start (no redis-server, say): its error says why.
        return Err(daemon
            .join()
            .map_err(|_| "the daemon panicked")?
            .err()
            .unwrap_or_default()
            .into());
    }
    ready?;
    // 4. The child of one app: `canopy agent`, also in this process. It reads the
    //    app's signals, downloads and verifies its files from the daemon, swaps
    //    them in, runs its hook and reports back.
    let agent_dir = tmp.path().join("agent");
    let agent = Cli::try_parse_from([
        "canopy",
        "agent",
        "--config",
        config.to_str().ok_or("path")?,
        "--app",
        APP,
        "--dir",
        agent_dir.to_str().ok_or("path")?,
        "--consumer",
        "quickstart",
        "--token",
        AGENT_TOKEN,
        "--exec",
        HOOK,
    ])?;
    let agent =
        std::thread::spawn(move || canopy::cli::run(agent).map_err(|e| canopy::error_chain(&e)));
    let result = walkthrough(&repo, &state, &config, &api, &http, &agent_dir).await;

    // 9. Stop both as a service manager would (SIGTERM), whatever happened: the
    //    agent finishes its hook, the daemon its cycle; the daemon stops its
    //    redis-server; `tmp` is removed on drop.
    run(Command::new("kill").args(["-TERM", &std::process::id().to_string()]))?;
    agent.join().map_err(|_| "the agent panicked")??;
    daemon.join().map_err(|_| "the daemon panicked")??;
    result
}

/// The agent's hook: what a real one would do with the files (`kubectl apply`,
/// a reload), this one prints.
const HOOK: &str = r#"printf '  [hook] %s of %s, generation %s: %s files in %s\n' "$CANOPY_KIND" "$CANOPY_APP" "$CANOPY_GENERATION" "$(find . -type f | wc -l)" "$CANOPY_DIR""#;

/// Steps 5 to 8, against the running daemon and agent.
async fn walkthrough(
    repo: &Path,
    state: &Path,
    config: &Path,
    api: &str,
    http: &reqwest::Client,
    agent_dir: &Path,
) -> Result<(), Error> {
    // 5. The first poll wrote every app's desired state and signalled it, except
    //    a `sync: manual` app and apps waiting for their `depends_on` to sync.
    let url = std::fs::read_to_string(state.join("redis/url"))?;
    let mut conn = redis::Client::open(url.trim())?
        .get_multiplexed_async_connection()
        .await?;
    let keys = Keys::new("default");
    let first = signals(&mut conn, &keys.events()).await?;
    println!("first poll: {} signals", first.len());
    for signal in &first {
        print_signal(signal);
    }
    let app_keys = keys.app(&canopy::layout::AppName::parse(APP)?);
    let first_digest = first
        .iter()
        .find(|s| s.app == APP)
        .and_then(|s| s.digest.clone())
        .ok_or("no signal for the quickstart's app")?;
    let synced = synced_at(&mut conn, &app_keys.observed(), &first_digest).await?;
    println!("the agent of {APP} applied generation {synced}");

    // 6. One commit that touches one app, then a webhook-like nudge (POST
    //    /api/v1/refresh): one signal, for that app only.
    let file = repo.join(APP).join("controller.yaml");
    let text = std::fs::read_to_string(&file)?;
    std::fs::write(&file, text.replace("replicas: 2", "replicas: 3"))?;
    run(Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["commit", "-qam", "platform/ingress: 3 replicas"])
        .envs(GIT_ENV))?;
    let pushed = Instant::now();
    let refresh = http
        .post(format!("{api}/api/v1/refresh"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    println!(
        "\ncommit: {APP}/controller.yaml, replicas 2 -> 3; POST /api/v1/refresh: {}",
        refresh.status()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let all = signals(&mut conn, &keys.events()).await?;
        if all.len() > first.len() {
            break all[first.len()..].to_vec();
        }
        if Instant::now() > deadline {
            return Err("timed out waiting for the signal".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for signal in &new {
        print_signal(signal);
        for file in &signal.changed {
            println!("      changed: {} {}", change(file.change), file.path);
        }
    }

    // 7. The agent applies it: new files in a new version directory, `current`
    //    repointed, the hook run, `synced` reported with the new digest.
    let signal = new.last().ok_or("the commit produced no signal")?;
    let digest = signal
        .digest
        .as_deref()
        .ok_or("a sync signal has a digest")?;
    let generation = synced_at(&mut conn, &app_keys.observed(), digest).await?;
    let current = std::fs::read_link(agent_dir.join("current"))?;
    println!(
        "\n{APP} is synced at generation {generation}, {} ms after the refresh; \
         {}/current -> {}",
        pushed.elapsed().as_millis(),
        agent_dir.display(),
        current.display()
    );
    println!("`canopy status`:");
    let status = Cli::try_parse_from([
        "canopy",
        "status",
        "--config",
        config.to_str().ok_or("path")?,
    ])?;
    // The CLI blocks on its own runtime: run it off this one's workers.
    tokio::task::spawn_blocking(move || {
        canopy::cli::run(status).map_err(|e| canopy::error_chain(&e))
    })
    .await??;

    // 8. Where to go from here.
    println!(
        "\nwhat to try next:
  cargo run -- run --repo-url <url> --state-dir /tmp/canopy   # follow your own repo
  cargo run -- status --state-dir /tmp/canopy                 # meanwhile: every app's status
  redis-cli -s /tmp/canopy/redis/redis.sock XREAD BLOCK 0 STREAMS canopy:default:events '$'
  CANOPY_TOKEN=<a read token for the app, see docs/api.md> \\
    cargo run -- agent --app <app> --dir /tmp/app --exec ./apply.sh --state-dir /tmp/canopy
  docs/api.md: the HTTP API and push webhooks; docs/protocol.md: write a child app"
    );

    Ok(())
}

/// Polls `check` every 50 ms for up to 30 s.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out waiting for {what}").into())
}

/// Waits until the child reports `synced` at `digest`; its generation.
async fn synced_at(
    conn: &mut MultiplexedConnection,
    observed: &str,
    digest: &str,
) -> Result<String, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, reported, generation): (Option<String>, Option<String>, Option<String>) =
            redis::pipe()
                .hget(observed, "status")
                .hget(observed, "digest")
                .hget(observed, "generation")
                .query_async(conn)
                .await?;
        if status.as_deref() == Some("synced") && reported.as_deref() == Some(digest) {
            return Ok(generation.unwrap_or_default());
        }
        if status.as_deref() == Some("failed") {
            return Err(format!("the agent failed to apply {digest}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for the agent to apply {digest}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every signal in a stream, oldest first (the JSON `payload` field of each entry).
async fn signals(conn: &mut MultiplexedConnection, key: &str) -> Result<Vec<Signal>, Error> {
    let reply: StreamRangeReply = conn.xrange_all(key).await?;
    let mut out = Vec::new();
    for entry in &reply.ids {
        let payload: String = entry.get("payload").ok_or("a signal without payload")?;
        out.push(serde_json::from_str(&payload)?);
    }
    Ok(out)
}

fn print_signal(signal: &Signal) {
    let (kind, app, generation) = (signal.kind.as_str(), &signal.app, signal.generation);
    let digest = signal.digest.as_deref().map_or("-", |d| short(d, 19));
    println!("  {kind:<6} {app:<24} generation {generation}  {digest}");
}

fn change(kind: FileChangeKind) -> &'static str {
    match kind {
        FileChangeKind::Added => "added",
        FileChangeKind::Modified => "modified",
        FileChangeKind::Deleted => "deleted",
    }
}

fn short(text: &str, len: usize) -> &str {
    &text[..text.len().min(len)]
}

/// Runs a command to completion; its stderr becomes the error if it fails.
fn run(command: &mut Command) -> Result<(), Error> {
    let shown = format!("{:?}", command.get_program());
    let out = command
        .output()
        .map_err(|e| format!("failed to run {shown} (is git installed?): {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{shown} failed ({}): {}", out.status, stderr.trim()).into());
    }
    Ok(())
}
