//! `canopy agent --app <name> --exec <command> --dir <path>`: the reference child.
//! It follows the app's signals until SIGTERM, applying each one to `--dir` and
//! running the hook (crate::agent), and reports what it runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::store::{StoreArgs, daemon_url, runtime};
use super::{CliError, EXIT_OK};
use crate::agent::{Agent, AgentOptions};
use crate::client::{self, Client, ClientOptions};
use crate::config::{Secret, parse_duration, parse_size};
use crate::layout::AppName;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The app to follow, e.g. payments/api (`.` for the root app).
    #[arg(long, env = "CANOPY_APP", value_parser = AppName::parse)]
    pub app: AppName,
    /// The hook, run with `sh -c` in the new version's directory after each
    /// change, with CANOPY_APP, CANOPY_KIND, CANOPY_REVISION, CANOPY_DIGEST,
    /// CANOPY_GENERATION, CANOPY_DIR and CANOPY_APP_CONFIG in its environment.
    #[arg(long, env = "CANOPY_EXEC")]
    pub exec: String,
    /// The agent's directory: versions/, the `current` symlink, config.json.
    #[arg(long, env = "CANOPY_AGENT_DIR")]
    pub dir: PathBuf,
    /// The daemon's base URL, for the app's files (default: from the config's
    /// server.listen, else http://127.0.0.1:8080).
    #[arg(long, env = "CANOPY_SERVER")]
    pub server: Option<String>,
    /// A bearer token for the daemon's API, to fetch artifacts: role `read`,
    /// scoped to the app, is enough.
    #[arg(long, env = "CANOPY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The app's Redis credentials file, written by the daemon under its
    /// redis.acl.credentials_dir (`canopy creds path <app>` prints it): its
    /// username and password replace any other.
    #[arg(long, env = "CANOPY_REDIS_CREDENTIALS")]
    pub redis_credentials: Option<PathBuf>,
    /// This agent's name in the app's consumer group and in its reports. Keep it
    /// stable across restarts: its unacknowledged signals come back to it at once
    /// (default: the host name).
    #[arg(long, env = "CANOPY_CONSUMER")]
    pub consumer: Option<String>,
    /// A hook running longer is killed (with its process group) and fails.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub hook_timeout: Duration,
    /// Deliveries of a failing signal before it goes to the dead-letter stream.
    #[arg(long, default_value_t = client::defaults::MAX_ATTEMPTS)]
    pub max_attempts: u64,
    /// Wait before retrying a failed signal; doubles on each failure (up to 5m).
    /// With the default 5 attempts, a signal is dead-lettered after about 75 s
    /// of failures.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub retry_delay: Duration,
    /// Heartbeat TTL: the app shows `stale` this long after the agent stops.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub heartbeat_ttl: Duration,
    /// Take over signals pending this long on another consumer (a crashed agent
    /// with another name). Keep it above --hook-timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub claim_idle: Duration,
    /// Read the stream at least this often, whatever pub/sub says.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub poll: Duration,
    /// Versions kept in the directory, the current one included.
    #[arg(long, default_value_t = crate::agent::defaults::KEEP)]
    pub keep: usize,
    /// On SIGTERM, how long a running hook may take to finish.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// The largest artifact (tar of the app's files) downloaded, e.g. 64MiB;
    /// a larger one fails the signal without being read further (default: the
    /// daemon's per-app cap, 256 MiB of files, plus their tar headers).
    #[arg(long, value_parser = artifact_size)]
    pub max_artifact_size: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: AgentArgs) -> Result<ExitCode, CliError> {
    let target = args.store.target()?;
    let consumer = args.consumer.clone().unwrap_or_else(host_name);
    let mut options = ClientOptions::new(target.store, args.app.clone(), consumer);
    options.server = Some(daemon_url(args.server.as_deref(), target.listen));
    options.token = args.token.clone().map(Secret::new);
    options.credentials_file = args.redis_credentials.clone();
    // Read now too, so the password is withheld from the hook like the others
    // (the client reads the file again when it connects).
    let credentials = match &args.redis_credentials {
        Some(path) => crate::protocol::credentials::read(path)
            .map_err(|e| CliError::Client(e.into()))?
            .map(|c| c.password),
        None => None,
    };
    options.heartbeat_ttl = args.heartbeat_ttl;
    options.claim_idle = args.claim_idle;
    options.max_attempts = args.max_attempts.max(1);
    options.retry_delay = args.retry_delay;
    options.poll = args.poll;
    if let Some(max) = args.max_artifact_size {
        options.max_artifact_bytes = max;
    }
    let secrets = [
        options.redis.password.clone(),
        options.redis.url.password(),
        options.token.clone(),
        credentials,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut agent = Agent::new(&AgentOptions {
        dir: args.dir.clone(),
        exec: args.exec.clone(),
        hook_timeout: args.hook_timeout,
        keep: args.keep,
        secrets,
    })
    .map_err(CliError::Client)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        super::run::catch_file_size_signal();
        let mut signals = super::run::StopSignals::install();
        let connect = super::run::patiently("Redis", || Client::connect(options.clone()));
        let client = match &mut signals {
            Some(signals) => tokio::select! {
                client = connect => client,
                () = signals.received() => return Ok(()),
            },
            None => connect.await,
        };
        tracing::info!(app = %args.app, consumer = %client.options().consumer, dir = %args.dir.display(), "following");
        let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
        if let Some(signals) = signals {
            tokio::spawn(signals.stop(shutdown.clone(), abort.clone(), "the running hook"));
        }
        let grace = args.grace;
        tokio::select! {
            () = client::follow(&client, &mut agent, shutdown.clone()) => {}
            () = abort.cancelled() => tracing::warn!("exiting at once: the running hook is killed"),
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "the hook did not finish within the grace period: killed; its signal will be delivered again");
            }
        }
        tracing::info!("stopped");
        Ok::<_, CliError>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::from(EXIT_OK))
}

/// A size of at least one byte: zero would refuse every artifact.
fn artifact_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(format!("size {text:?} must be greater than zero")),
        size => Ok(size),
    }
}

/// The kernel's host name: stable across restarts of the agent on one machine
/// (a pod's name in Kubernetes).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "canopy-agent".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_sizes_are_sizes_above_zero() {
        assert_eq!(artifact_size("64MiB"), Ok(64 << 20));
        assert_eq!(artifact_size("4096"), Ok(4096));
        for bad in ["0", "0KiB", "1MB", "-1", ""] {
            assert!(artifact_size(bad).is_err(), "{bad}");
        }
    }
}
