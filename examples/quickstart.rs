//! `cargo run --example quickstart`: canopy's main job on the bundled example, in a
//! few seconds, with nothing to set up but `git` and `redis-server` on PATH.
//!
//! It builds the pieces `canopy run` builds (a private redis-server, a Git mirror,
//! a poller, the store, the reconciler), polls `fixtures/example`, commits a change
//! to one app, polls again, then plays that app's child reporting back. Everything
//! lives in a temporary directory that is removed on exit.

use std::path::Path;
use std::process::{Command, ExitCode};

use canopy::config::defaults;
use canopy::layout::{AppName, LayoutOptions};
use canopy::plan::FileChangeKind;
use canopy::reconcile::{Reconciler, statuses};
use canopy::redis_launch::{EmbeddedRedis, LaunchOptions};
use canopy::source::{Mirror, MirrorOptions, Poller, RepoUrl};
use canopy::status::SyncMode;
use canopy::store::{Signal, Store, StoreOptions};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

type Error = Box<dyn std::error::Error>;

/// The app whose file the quickstart changes, and whose child it plays.
const APP: &str = "platform/ingress";

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
    println!("canopy quickstart: fixtures/example as a Git repo, a private redis-server\n");

    // 2. The embedded Redis, as `canopy run` starts it when no redis.url is set.
    //    On any error, drop order closes the connections, stops it, removes `tmp`.
    let mut redis = EmbeddedRedis::start(LaunchOptions::new(state.join("redis")))?;
    let url = redis.url();

    // 3. The same pieces `canopy run` wires together.
    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(&format!("file://{}", repo.display()))?,
        reference: "main".to_owned(),
        credentials: None,
        timeout: defaults::REPO_TIMEOUT,
        dir: state.join("mirror.git"),
    })?;
    let poller = Poller::new(mirror, LayoutOptions::default());
    let store = Store::connect(&StoreOptions {
        url: url.clone(),
        username: None,
        password: None,
        namespace: defaults::NAMESPACE.to_owned(),
        connect_timeout: defaults::REDIS_CONNECT_TIMEOUT,
        response_timeout: defaults::REDIS_RESPONSE_TIMEOUT,
        stream_maxlen: defaults::STREAM_MAXLEN,
    })
    .await?;
    let keys = store.keys().clone();
    let mut reconciler = Reconciler::new(poller, store).await?;
    // A plain connection of our own, to read what any subscriber would read.
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;

    // 4. First poll: every app is new: its desired state is written, and it is signalled
    //    unless its app.yaml says `sync: manual`.
    let report = reconciler.cycle().await?;
    let apps = reconciler.store().app_names().await?.len();
    let first = signals(&mut conn, &keys.events()).await?;
    let (commit, count) = (short(&report.commit, 7), first.len());
    println!("first poll (commit {commit}): {apps} apps, {count} signals");
    for signal in &first {
        print_signal(signal);
    }
    let sync_timeout = chrono::Duration::from_std(defaults::SYNC_TIMEOUT)?;
    for app in statuses(reconciler.store(), chrono::Utc::now(), sync_timeout).await? {
        if app.desired.is_some_and(|d| d.sync == SyncMode::Manual) {
            let app = app.app.as_str();
            println!("  (none for {app}: `sync: manual`, signalled on request only)");
        }
    }
    for held in reconciler.store().held().await? {
        let deps: Vec<&str> = held.depends_on.iter().map(|d| d.as_str()).collect();
        let app = held.app.as_str();
        println!(
            "  (held for {app}: signalled once {} report synced)",
            deps.join(", ")
        );
    }

    // 5. One commit that touches one app: one signal, for that app only.
    let deployment = repo.join(APP).join("controller.yaml");
    let text = std::fs::read_to_string(&deployment)?;
    std::fs::write(&deployment, text.replace("replicas: 2", "replicas: 3"))?;
    run(Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["commit", "-qam", "platform/ingress: 3 replicas"])
        .envs(GIT_ENV))?;
    let report = reconciler.cycle().await?;
    let all = signals(&mut conn, &keys.events()).await?;
    let new = &all[first.len()..];
    let (commit, checked, count) = (short(&report.commit, 7), report.checked, new.len());
    println!("\ncommit {commit} changes {APP}/controller.yaml");
    println!("second poll: {checked} app compared, {count} signal");
    for signal in new {
        print_signal(signal);
        for file in &signal.changed {
            println!("      changed: {} {}", change(file.change), file.path);
        }
    }

    // 6. Play the app's child: report the signalled digest as applied (through
    //    canopy's Redis Function, which refuses stale generations) and keep a heartbeat.
    let signal = new.last().ok_or("the commit produced no signal")?;
    let app_keys = keys.app(&AppName::parse(APP)?);
    let (generation, digest) = (signal.generation.to_string(), signal.digest.clone());
    // FCALL canopy_report 1 <key> <generation> <digest> <revision> <status> <message> <reporter>
    let fcall = [
        "canopy_report",
        "1",
        &app_keys.observed(),
        &generation,
        digest.as_deref().unwrap_or_default(),
        &signal.revision,
        "synced",
        "applied by quickstart",
        "quickstart",
    ];
    let reply: String = redis::cmd("FCALL")
        .arg(&fcall[..])
        .query_async(&mut conn)
        .await?;
    let _: () = conn.set_ex(app_keys.heartbeat(), "quickstart", 60).await?;
    let all = statuses(reconciler.store(), chrono::Utc::now(), sync_timeout).await?;
    println!("\n{APP}'s child reported ({reply}); every app's status now:");
    for app in &all {
        let (name, record) = (app.app.as_str(), &app.record);
        println!("  {name:<24} {:<12} {}", record.status, record.reason);
    }

    // 7. Where to go from here.
    println!(
        "\nwhat to try next:
  cargo run -- run --repo-url <url> --state-dir /tmp/canopy   # follow your own repo
  cargo run -- status --state-dir /tmp/canopy                 # meanwhile: every app's status
  redis-cli -s /tmp/canopy/redis/redis.sock XREAD BLOCK 0 STREAMS canopy:default:events '$'
  docs/protocol.md: write a child app in any language"
    );

    // 8. Close the connections, stop Redis (gracefully); `tmp` is removed on drop.
    drop((reconciler, conn));
    Ok(redis.stop()?)
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
