//! A service that follows its canopy app by embedding `canopy::client`, with no
//! agent and no restart: it keeps the app's files in memory, reloads its config
//! when a `config` signal arrives, and prints what it runs.
//!
//! ```console
//! $ CANOPY_TOKEN=<a read token scoped to the app> cargo run --example child_app -- \
//!     --app platform/ingress --redis-url redis+unix:///tmp/canopy/redis/redis.sock \
//!     --server http://127.0.0.1:8080
//! ```
//!
//! Stop it with Ctrl-C. `canopy status` shows the app `synced` while it runs and
//! `stale` once its heartbeat expires after it stops.

use std::collections::BTreeMap;

use canopy::client::{
    self, Applied, Client, ClientOptions, Files, Handler, HandlerError, RedisOptions, Signal,
};
use canopy::layout::AppName;
use canopy::protocol::{RedisUrl, Secret};
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The app this service runs.
    #[arg(long, value_parser = AppName::parse)]
    app: AppName,
    #[arg(long, env = "CANOPY_REDIS_URL")]
    redis_url: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The daemon's base URL, for the app's files.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A bearer token for the daemon's API (role `read`, scoped to the app is
    /// enough): artifacts need one unless the daemon opened reads.
    #[arg(long, env = "CANOPY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// What the service runs: the files of one digest, and the config.
#[derive(Default)]
struct Service {
    files: Option<Files>,
    config: BTreeMap<String, String>,
}

impl Service {
    fn print(&self, what: &str) {
        let files = self.files.as_ref();
        println!(
            "{what}: {} ({} files), config {:?}",
            files.map_or("nothing".to_owned(), Files::digest),
            files.map_or(0, Files::len),
            self.config
        );
    }
}

impl Handler for Service {
    fn running(&self) -> Option<String> {
        self.files.as_ref().map(Files::digest)
    }

    /// New files: download them (verified against the signal's digest), swap
    /// them in, re-read the config.
    async fn sync(&mut self, client: &Client, signal: &Signal) -> Result<Applied, HandlerError> {
        let digest = signal.digest.as_deref().ok_or("no digest")?;
        let files = client.download(&signal.revision, digest).await?;
        let manifest = files.manifest();
        self.files = Some(files);
        self.config = client.config().await?;
        self.print("running");
        Ok(Applied {
            message: format!("serving {} files", manifest.len()),
            manifest: Some(manifest),
        })
    }

    /// Only the config changed: reload it in place, keep serving.
    async fn config(&mut self, client: &Client, signal: &Signal) -> Result<Applied, HandlerError> {
        if self.files.is_none() {
            return self.sync(client, signal).await;
        }
        self.config = client.config().await?;
        self.print("config reloaded");
        Ok(Applied {
            message: "config reloaded without a restart".to_owned(),
            manifest: None,
        })
    }

    async fn prune(&mut self, _client: &Client, _signal: &Signal) -> Result<(), HandlerError> {
        *self = Service::default();
        self.print("pruned");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let redis = RedisOptions {
        url: RedisUrl::parse(&args.redis_url)?,
        username: None,
        password: std::env::var("CANOPY_REDIS_PASSWORD").ok().map(Secret::new),
        namespace: args.namespace,
        connect_timeout: std::time::Duration::from_secs(5),
        response_timeout: std::time::Duration::from_secs(5),
        stream_maxlen: 0,
    };
    let mut options = ClientOptions::new(redis, args.app, "child-app-example".to_owned());
    options.server = Some(args.server);
    options.token = args.token.map(Secret::new);
    let client = Client::connect(options).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    println!("following {}; Ctrl-C to stop", client.app());
    client::follow(&client, &mut Service::default(), shutdown).await;
    Ok(())
}
