//! `canopy run`: the reconcile cycle, once (`--once`) or on the poll interval
//! until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::store::{URL_FILE, embedded_dir, runtime, store_options};
use super::{CliError, EXIT_OK, Output};
use crate::config::{Config, Namespace, Overrides, RedisUrl, process_env};
use crate::layout::GlobPattern;
use crate::reconcile::{
    self, Cycle, CycleReport, Reconciler, Trigger, update_statuses, update_statuses_of,
};
use crate::redis_launch::{EmbeddedRedis, LaunchOptions};
use crate::report::{self, Deliverer, DeliveryOptions};
use crate::server::{
    self, Authenticator, Health, KindLabel, Metrics, ResultLabel, Settings, Shared, StatusLabel,
};
use crate::source::{Mirror, MirrorOptions, Poller, RepoUrl, Schedule};
use crate::store::{SignalKind, Store};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file (every key is optional but repo.url; see examples/canopy.yaml).
    #[arg(long, short = 'c', env = "CANOPY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run one poll-and-reconcile cycle, then exit (0 on success).
    #[arg(long)]
    pub once: bool,
    /// How `--once` reports what it did.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The repository to follow (overrides repo.url and CANOPY_REPO_URL).
    #[arg(long, value_parser = RepoUrl::parse)]
    pub repo_url: Option<RepoUrl>,
    /// Branch, tag or full commit id (repo.ref).
    #[arg(long)]
    pub repo_ref: Option<String>,
    /// The root app's directory inside the repository (repo.path).
    #[arg(long)]
    pub repo_path: Option<String>,
    /// The root app's directory generator (repo.children; repeatable).
    #[arg(long = "children", value_name = "GLOB", value_parser = GlobPattern::parse)]
    pub children: Vec<GlobPattern>,
    /// Directories the root generator skips (repeatable).
    #[arg(long = "children-exclude", value_name = "GLOB", value_parser = GlobPattern::parse)]
    pub children_exclude: Vec<GlobPattern>,
    /// Namespace in Redis (several environments can share one Redis).
    #[arg(long, value_parser = Namespace::parse)]
    pub namespace: Option<Namespace>,
    /// Clone cache and embedded Redis data.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// An existing Redis (default: start a private redis-server in the state dir).
    #[arg(long, value_parser = RedisUrl::parse)]
    pub redis_url: Option<RedisUrl>,
    /// A Redis ACL user per app, its credentials file under this directory
    /// (redis.acl.credentials_dir; on by default with the embedded Redis, in
    /// <state_dir>/credentials).
    #[arg(long, env = "CANOPY_REDIS_ACL_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// The HTTP address (server.listen), e.g. 0.0.0.0:8080; port 0 picks a free
    /// port (logged at start).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// How often to poll, e.g. 30s (jittered; failures back off).
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            namespace: self.namespace.clone(),
            state_dir: self.state_dir.clone(),
            repo_url: self.repo_url.clone(),
            repo_ref: self.repo_ref.clone(),
            repo_path: self.repo_path.clone(),
            children: self.children.clone(),
            children_exclude: self.children_exclude.clone(),
            redis_url: self.redis_url.clone(),
            credentials_dir: self.credentials_dir.clone(),
            poll_interval: self.poll_interval,
            listen: self.listen,
        }
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let config = Config::load(args.config.as_deref(), &process_env, &args.overrides())?;
    std::fs::create_dir_all(&config.state_dir).map_err(|source| CliError::StateDir {
        dir: config.state_dir.clone(),
        source,
    })?;
    // Started before the runtime and stopped after it, by drop, on every path.
    let embedded = match &config.redis.url {
        Some(_) => None,
        None => Some(Embedded::start(&config.state_dir)?),
    };
    let url = match (&config.redis.url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(e)) => {
            RedisUrl::parse(&e.redis.url()).expect("the launcher gives unix:// or redis:// URLs")
        }
        (None, None) => unreachable!("started above"),
    };
    let runtime = runtime()?;
    let result = runtime.block_on(serve(&config, url, args.once, args.output));
    // Do not wait for the blocking pool: its idle threads linger for seconds, and
    // a poll abandoned by a second signal may still hold one. Nothing there needs
    // finishing: a poll only changes the in-memory snapshot.
    runtime.shutdown_background();
    result
}

/// The embedded redis-server and the file that tells `status` where it is.
struct Embedded {
    redis: EmbeddedRedis,
    url_file: PathBuf,
}

impl Embedded {
    fn start(state_dir: &Path) -> Result<Embedded, CliError> {
        let dir = embedded_dir(state_dir);
        let redis = EmbeddedRedis::start(LaunchOptions::new(&dir))?;
        let url_file = dir.join(URL_FILE);
        std::fs::write(&url_file, redis.url()).map_err(|source| CliError::StateDir {
            dir: dir.clone(),
            source,
        })?;
        Ok(Embedded { redis, url_file })
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.url_file);
        if let Err(e) = self.redis.stop() {
            tracing::warn!(error = %crate::error_chain(&e), "failed to stop the embedded redis");
        }
    }
}

async fn serve(
    config: &Config,
    url: RedisUrl,
    once: bool,
    output: Output,
) -> Result<ExitCode, CliError> {
    let repo = &config.repo;
    let mirror = Mirror::open(MirrorOptions {
        url: repo.url.clone(),
        reference: repo.reference.clone().unwrap_or_else(|| "HEAD".to_owned()),
        credentials: repo.credentials(),
        timeout: repo.timeout,
        dir: config.state_dir.join("mirror.git"),
    })?;
    let poller = Poller::new(mirror, repo.layout_options());
    catch_file_size_signal();
    let redis = &config.redis;
    let options = store_options(url, config.namespace.as_str(), Some(&config.redis));
    // Caught before "listening" is logged: whoever waits for it may stop the
    // daemon at once. `--once` keeps the default action (a cron job's kill).
    let mut signals = if once { None } else { StopSignals::install() };
    // `--once` fails fast (its scheduler retries); a daemon waits for Redis
    // instead of exiting into a crash loop, and a signal still stops it.
    let store = match (&mut signals, once) {
        (Some(signals), false) => {
            let connect = patiently("Redis", || Store::connect(&options));
            tokio::select! {
                store = connect => store,
                () = signals.received() => return Ok(ExitCode::from(EXIT_OK)),
            }
        }
        _ => Store::connect(&options).await?,
    };
    // The daemon binds its port before claiming the namespace: a second daemon
    // that cannot listen must not fence the running one.
    let listener = match once {
        true => None,
        false => Some(listen(config.server.listen).await?),
    };
    // Before the namespace is claimed, as the port is: a daemon whose key file
    // is unreadable must not fence the one running.
    let auth = match once {
        true => None,
        false => {
            let auth = Authenticator::new(&config.server, config.namespace.as_str())?;
            auth.start().await?;
            Some(Arc::new(auth))
        }
    };
    let mut reconciler = Reconciler::new(poller, store).await?;
    reconciler.keep_snapshot(config.state_dir.join("snapshot"));
    reconciler.set_depends_on_timeout(config.depends_on_timeout);
    if let Some(dir) = config.redis.credentials_dir_in(&config.state_dir) {
        tracing::info!(dir = %dir.display(), "a Redis ACL user per app, credentials files in dir");
        let mut users = crate::acl::AppUsers::new(&dir, config.namespace.as_str());
        if let Some(schedule) = &config.redis.rotate {
            users = users.rotate_on(schedule.clone(), config.redis.grace);
        }
        reconciler.set_app_users(users);
    }
    let sync_timeout =
        chrono::Duration::from_std(redis.sync_timeout).unwrap_or(chrono::Duration::MAX);

    if once {
        let report = reconciler.cycle().await?;
        // The statuses a write may have changed: those of the apps written, or
        // of every app after a full comparison. Others change only through
        // their children and the clock, which the daemon's periodic evaluation,
        // `canopy status` and `canopy report` see.
        if report.resync {
            update_statuses(reconciler.store(), sync_timeout).await?;
        } else if !report.written_apps.is_empty() {
            update_statuses_of(reconciler.store(), &report.written_apps, sync_timeout).await?;
        }
        reconciler.save_snapshot().await;
        print_report(&report, output)?;
        return Ok(ExitCode::from(EXIT_OK));
    }

    let listener = listener.expect("bound unless --once");
    let shared = Shared {
        store: reconciler.store().clone(),
        trigger: Trigger::default(),
        health: Arc::new(Health::default()),
        metrics: Metrics::new(),
        settings: Arc::new(Settings {
            server: config.server.clone(),
            webhooks: config.webhooks.clone(),
            reference: reconciler.poller().mirror().reference().to_owned(),
            mirror_dir: reconciler.poller().mirror().dir().to_path_buf(),
            layout: repo.layout_options(),
            sync_timeout,
        }),
        artifacts: Arc::default(),
        auth: auth.expect("built unless --once"),
    };
    let (shutdown, abort, stop_server) = (
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    if let Some(signals) = signals {
        tokio::spawn(signals.stop(shutdown.clone(), abort.clone(), "the current cycle"));
    }
    let server = tokio::spawn(server::serve(listener, shared.clone(), stop_server.clone()));
    // Beside the loop, never in `--once`: a schedule needs a running daemon.
    let mut reports = report::spawn(
        reconciler.store(),
        &config.reports,
        Arc::new(Deliverer::new(DeliveryOptions::default())?),
        &report::Options {
            sync_timeout,
            catch_up: report::CATCH_UP_WINDOW,
            clock: report::Clock::system(),
        },
        &shutdown,
    );
    let daemon = reconcile::run(
        &mut reconciler,
        Schedule::new(repo.poll_interval),
        shared.trigger.clone(),
        shutdown.clone(),
        sync_timeout,
        |cycle| observe_cycle(&shared, cycle),
    );
    let grace = config.shutdown_grace;
    let finished = tokio::select! {
        () = daemon => true,
        () = abort.cancelled() => {
            tracing::warn!("exiting at once: the current cycle is abandoned");
            false
        }
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "the current cycle did not finish within the grace period: abandoned");
            false
        }
    };
    if finished {
        // So that the next start plans its first new commit incrementally.
        reconciler.save_snapshot().await;
    }
    stop_server.cancel();
    // They stop on `shutdown`; after an abort, a report being made is abandoned.
    shutdown.cancel();
    reports.abort_all();
    while reports.join_next().await.is_some() {}
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "the HTTP server stopped with an error");
    }
    tracing::info!("stopped");
    Ok(ExitCode::from(EXIT_OK))
}

async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    let error = |source| CliError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    tracing::info!(addr = %bound, "listening");
    Ok(listener)
}

/// Tries `connect` until it succeeds, backing off (1 s doubling to 30 s) and
/// saying why each time: a dependency that is down at start is waited for,
/// never a reason to exit and be restarted in a loop.
pub(super) async fn patiently<T, E, F>(what: &str, mut connect: impl FnMut() -> F) -> T
where
    E: std::error::Error,
    F: Future<Output = Result<T, E>>,
{
    let mut failures = 0;
    loop {
        match connect().await {
            Ok(done) => return done,
            Err(error) => {
                failures += 1;
                let wait = crate::backoff::exponential(
                    std::time::Duration::from_secs(1),
                    failures,
                    std::time::Duration::from_secs(30),
                );
                tracing::warn!(
                    error = %crate::error_chain(&error),
                    retry_in_ms = wait.as_millis() as u64,
                    "{what} unreachable; waiting for it"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Catches SIGXFSZ for the rest of the process's life: a write past the file
/// size limit (`ulimit -f`, systemd's `LimitFSIZE=`) then fails with EFBIG, an
/// I/O error like a full disk's that a cycle reports and retries (or the agent
/// reports as a failed apply), instead of killing the process (the default
/// action) into a restart loop. PostgreSQL ignores it for the same reason. A
/// handler rather than SIG_IGN, which children would inherit: git and hooks
/// get the default action back when they exec.
pub(super) fn catch_file_size_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // tokio never uninstalls a handler: the stream itself is not needed.
    if let Err(e) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        tracing::warn!(error = %e, "cannot catch SIGXFSZ: a file size limit would kill canopy");
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made: made before a
/// process says it is up ("listening", "following"), a signal that follows can
/// never meet the default action (death by signal, no graceful stop).
pub(super) struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// `None` (with a warning) when the handlers cannot be installed.
    pub(super) fn install() -> Option<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(StopSignals { term, int }),
            _ => {
                tracing::warn!("cannot listen for SIGTERM/SIGINT; stop canopy with SIGKILL");
                None
            }
        }
    }

    /// Completes at the next SIGTERM or SIGINT.
    pub(super) async fn received(&mut self) {
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
    }

    /// The first signal stops the loop after the current cycle (a cycle writes
    /// each app atomically, so stopping between cycles loses nothing) or the
    /// agent after its running hook; a second one abandons it. Either way the
    /// embedded Redis is stopped on the way out.
    pub(super) async fn stop(
        mut self,
        shutdown: CancellationToken,
        abort: CancellationToken,
        finishing: &'static str,
    ) {
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        tracing::info!("stopping after {finishing} (signal again to exit at once)");
        shutdown.cancel();
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        abort.cancel();
    }
}

/// Logs a turn of the loop and feeds health and metrics with it.
fn observe_cycle(shared: &Shared, cycle: &Cycle) {
    let metrics = &shared.metrics;
    let result = if cycle.result.is_ok() { "ok" } else { "error" };
    metrics.cycles.get_or_create(&ResultLabel { result }).inc();
    metrics.cycle_seconds.observe(cycle.elapsed.as_secs_f64());
    metrics.consecutive_failures.set(i64::from(cycle.failures));
    match cycle.result {
        Ok(report) => {
            shared.health.succeeded(&report.commit);
            for (kind, count) in &report.kinds {
                let label = KindLabel {
                    kind: (*kind).to_owned(),
                };
                metrics.signals.get_or_create(&label).inc_by(*count as u64);
            }
            if report.changed || report.written > 0 {
                tracing::info!(
                    commit = %report.commit,
                    written = report.written,
                    signals = report.signals,
                    "cycle done"
                );
            }
        }
        Err(e) => shared.health.failed(crate::error_chain(e)),
    }
    if cycle.drift_signals > 0 {
        let label = KindLabel {
            kind: SignalKind::Drift.as_str().to_owned(),
        };
        metrics
            .signals
            .get_or_create(&label)
            .inc_by(cycle.drift_signals);
    }
    for (status, count) in cycle.statuses.into_iter().flatten() {
        let label = StatusLabel {
            status: status.as_str(),
        };
        metrics.apps.get_or_create(&label).set(*count as i64);
    }
}

fn print_report(report: &CycleReport, output: Output) -> Result<(), CliError> {
    use std::io::Write;
    let text = match output {
        Output::Json => serde_json::to_string_pretty(report).expect("a report serializes"),
        Output::Text => {
            let mut text = format!(
                "commit {}: {} apps compared{}, {} written, {} signals",
                report.commit,
                report.checked,
                if report.resync {
                    " (full comparison)"
                } else {
                    ""
                },
                report.written,
                report.signals
            );
            if report.held > 0 {
                text.push_str(&format!(
                    ", {} held until their dependencies are synced",
                    report.held
                ));
            }
            text
        }
    };
    writeln!(std::io::stdout(), "{text}").map_err(CliError::Output)
}
