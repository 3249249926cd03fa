//! `canopy creds path <app>`: where an app's Redis credentials file is, so an
//! operator can mount it into the app's child (a Kubernetes Secret, a Vault
//! template) or point `canopy agent --redis-credentials` at it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CliError;
use crate::config::{self, Namespace, process_env};
use crate::layout::AppName;
use crate::protocol::credentials::CredentialsDir;

#[derive(Debug, Args)]
pub struct CredsArgs {
    #[command(subcommand)]
    pub command: CredsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// Print the path of an app's credentials file (it exists once the daemon
    /// has created the app's Redis user).
    Path(PathArgs),
}

#[derive(Debug, Args)]
pub struct PathArgs {
    /// The app, e.g. payments/api (`.` for the root app).
    #[arg(value_parser = AppName::parse)]
    pub app: AppName,
    /// The daemon's config file: its `redis.acl.credentials_dir` (or, with the
    /// embedded Redis, its `state_dir`) and `namespace` are used.
    #[arg(long, short = 'c', env = "CANOPY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The daemon's redis.acl.credentials_dir.
    #[arg(long, env = "CANOPY_REDIS_ACL_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// The namespace (environment).
    #[arg(long, env = "CANOPY_NAMESPACE", value_parser = Namespace::parse)]
    pub namespace: Option<Namespace>,
    /// The daemon's state dir (its embedded Redis keeps credentials there).
    #[arg(long, env = "CANOPY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(args: CredsArgs) -> Result<ExitCode, CliError> {
    let CredsCommand::Path(args) = args.command;
    let config = super::store::redis_config(args.config.as_deref())?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| config.as_ref().map(|c| c.namespace.clone()));
    let namespace = namespace
        .as_ref()
        .map_or(config::defaults::NAMESPACE, Namespace::as_str);
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.state_dir.clone()))
        .unwrap_or_else(|| config::default_state_dir(&process_env));
    let dir = match (&args.credentials_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config
            .redis
            .credentials_dir_in(&state_dir)
            .ok_or(CliError::NoCredentialsDir)?,
        (None, None) => state_dir.join(config::DEFAULT_CREDENTIALS_DIR),
    };
    println!(
        "{}",
        CredentialsDir::new(&dir, namespace)
            .path(&args.app)
            .display()
    );
    Ok(ExitCode::SUCCESS)
}
