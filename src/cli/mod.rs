//! The command line: one file per command. Commands return an exit code or a
//! [`CliError`]; `main` prints the error's cause chain.

mod agent;
mod creds;
mod diff;
#[cfg(test)]
mod docs;
mod report;
mod run;
mod source;
mod status;
mod store;
mod sync;
mod tree;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use source::SourceArgs;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The command ran and found problems (invalid apps).
pub const EXIT_PROBLEMS: u8 = 1;
/// The command could not run (unreadable input, bad arguments).
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "canopy",
    version,
    about = "GitOps reconciler for the app-of-apps pattern on a Redis backbone"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "CANOPY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the app tree of a directory or Git repository, with digests.
    Tree(tree::TreeArgs),
    /// Check the layout and every app.yaml; exit 1 if anything is wrong.
    Validate(validate::ValidateArgs),
    /// Follow the repository: poll, write desired state to Redis, signal the apps
    /// that changed. Without redis.url, starts a private redis-server.
    Run(run::RunArgs),
    /// Every app's status (synced, progressing, out of sync, ...), from Redis.
    Status(status::StatusArgs),
    /// Desired vs observed state of one app, from Redis; exit 1 if they differ.
    Diff(diff::DiffArgs),
    /// Ask the running daemon to signal an app now (deploys a manual app).
    Sync(sync::SyncArgs),
    /// Follow one app as its child: apply each signal to a directory, run a hook,
    /// report what runs (the reference child of DESIGN section 6).
    Agent(agent::AgentArgs),
    /// A drift report now, from Redis: every app not synced, grouped by parent.
    Report(report::ReportArgs),
    /// The apps' Redis credentials files (redis.acl.credentials_dir).
    Creds(creds::CredsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "per-app Redis users are off: the config sets redis.url without redis.acl.credentials_dir"
    )]
    NoCredentialsDir,
    #[error("failed to read {source_desc}")]
    Tree {
        source_desc: String,
        #[source]
        source: crate::tree::Error,
    },
    #[error("invalid --children glob")]
    Glob(#[source] GlobError),
    #[error("source {0} is neither a directory nor a Git repository")]
    NotASource(String),
    #[error("failed to write output")]
    Output(#[source] std::io::Error),
    #[error("invalid repository URL: {0}")]
    Url(String),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("failed to create a scratch directory")]
    Scratch(#[source] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("failed to create the state directory {}", dir.display())]
    StateDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] crate::redis_launch::LaunchError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cycle(#[from] crate::reconcile::CycleError),
    #[error("failed to listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to reach the daemon at {url}")]
    Api {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the daemon answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("failed to start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(
        "no Redis to read: pass --redis-url or --config, or start `canopy run` (its embedded Redis lives in {})",
        state_dir.display()
    )]
    NoRedis { state_dir: std::path::PathBuf },
    #[error(transparent)]
    Client(crate::client::ClientError),
    #[error(transparent)]
    ReportClient(#[from] crate::report::deliver::HttpClientError),
    #[error("server.oidc")]
    Keys(#[from] crate::server::KeysError),
    #[error("app {app} is not known in namespace {namespace}")]
    UnknownApp { app: String, namespace: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GlobError(pub String);

/// Filters come from `CANOPY_LOG` (or `RUST_LOG`), e.g. `canopy=debug`; warnings by default.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CANOPY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling `run` twice) is harmless: ignore it.
    let _ = match cli.log_format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Tree(args) => tree::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Run(args) => run::run(args),
        Command::Status(args) => status::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Report(args) => report::run(args),
        Command::Creds(args) => creds::run(args),
    }
}
