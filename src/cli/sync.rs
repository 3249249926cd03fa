//! `canopy sync <app>`: ask the daemon to signal an app's current desired state
//! now (the way to deploy a `sync: manual` app, or to re-send a signal).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::store::{daemon_url, runtime};
use super::{CliError, EXIT_OK, Output};
use crate::config::{Config, Overrides, process_env};
use crate::layout::AppName;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The app, e.g. payments/db.
    #[arg(value_parser = AppName::parse)]
    pub app: AppName,
    /// The daemon's base URL (default: from the config's server.listen).
    #[arg(long, env = "CANOPY_SERVER")]
    pub server: Option<String>,
    /// The daemon's config file, to find server.listen.
    #[arg(long, short = 'c', env = "CANOPY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The bearer token: a static token with role `sync` or `admin` on the app
    /// (server.tokens holds its sha256), or the identity provider's JWT.
    #[arg(long, env = "CANOPY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: SyncArgs) -> Result<ExitCode, CliError> {
    let listen = match &args.config {
        Some(path) => Some(
            Config::load_for_redis(Some(path), &process_env, &Overrides::default())?
                .server
                .listen,
        ),
        None => None,
    };
    let base = daemon_url(args.server.as_deref(), listen);
    let app = if args.app.is_root() {
        crate::protocol::ROOT_ALIAS
    } else {
        args.app.as_str()
    };
    let url = format!("{base}/api/v1/apps/{app}/sync");
    let runtime = runtime()?;
    let (status, body) = runtime
        .block_on(async {
            let mut request = reqwest::Client::new().post(&url);
            if let Some(token) = &args.token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .map_err(|source| CliError::Api {
            url: base.clone(),
            source,
        })?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return Err(CliError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    let text = match args.output {
        Output::Json => body,
        Output::Text => {
            let signal: crate::store::Signal =
                serde_json::from_str(&body).map_err(|e| CliError::Refused {
                    status: status.as_u16(),
                    message: format!("unexpected answer: {e}"),
                })?;
            format!(
                "signalled {} (generation {}, {})",
                signal.app,
                signal.generation,
                signal.digest.as_deref().unwrap_or("-")
            )
        }
    };
    writeln!(std::io::stdout(), "{text}").map_err(CliError::Output)?;
    Ok(ExitCode::from(EXIT_OK))
}
