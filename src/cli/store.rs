//! How the read-only commands (`status`, `diff`) find the Redis of a daemon: the
//! flags, else the config file, else the environment, else the embedded Redis
//! that `canopy run` keeps in its state dir.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::config::{self, Config, Namespace, Overrides, RedisConfig, RedisUrl, process_env};
use crate::protocol::{RedisOptions, Secret};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The daemon's config file: its `redis`, `namespace` and `state_dir` are used.
    #[arg(long, short = 'c', env = "CANOPY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The Redis to read (default: the config's, else the embedded Redis of the
    /// state dir). A password belongs in CANOPY_REDIS_PASSWORD, not in the URL.
    #[arg(long, env = "CANOPY_REDIS_URL", value_parser = RedisUrl::parse)]
    pub redis_url: Option<RedisUrl>,
    /// The namespace (environment) to read.
    #[arg(long, env = "CANOPY_NAMESPACE", value_parser = Namespace::parse)]
    pub namespace: Option<Namespace>,
    /// Where `canopy run` keeps the embedded Redis, when no URL is given.
    #[arg(long, env = "CANOPY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// What a read-only command needs from the config.
pub struct Target {
    pub store: RedisOptions,
    pub sync_timeout: Duration,
    /// The daemon's HTTP address, when a config file was given.
    pub listen: Option<std::net::SocketAddr>,
}

impl StoreArgs {
    pub fn target(&self) -> Result<Target, CliError> {
        let config = redis_config(self.config.as_deref())?;
        let redis = config.as_ref().map(|c| &c.redis);
        let namespace = self
            .namespace
            .clone()
            .or_else(|| config.as_ref().map(|c| c.namespace.clone()));
        let url = match self
            .redis_url
            .clone()
            .or_else(|| redis.and_then(|r| r.url.clone()))
        {
            Some(url) => url,
            None => {
                let state_dir = self
                    .state_dir
                    .clone()
                    .or_else(|| config.as_ref().map(|c| c.state_dir.clone()))
                    .unwrap_or_else(|| config::default_state_dir(&process_env));
                embedded_url(&state_dir)?
            }
        };
        let mut store = store_options(
            url,
            namespace
                .as_ref()
                .map_or(config::defaults::NAMESPACE, |n| n.as_str()),
            redis,
        );
        if redis.is_none() {
            store.username = process_env("CANOPY_REDIS_USER");
            store.password = process_env("CANOPY_REDIS_PASSWORD").map(Secret::new);
        }
        Ok(Target {
            store,
            sync_timeout: redis.map_or(config::defaults::SYNC_TIMEOUT, |r| r.sync_timeout),
            listen: config.as_ref().map(|c| c.server.listen),
        })
    }

    pub fn connect(
        &self,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(Store, Duration), CliError> {
        let target = self.target()?;
        let store = runtime.block_on(Store::connect(&target.store))?;
        Ok((store, target.sync_timeout))
    }
}

/// The config file's settings that a command reading Redis needs, if a file
/// is given (only its Redis secrets must be readable).
pub fn redis_config(path: Option<&std::path::Path>) -> Result<Option<Config>, CliError> {
    path.map(|path| Config::load_for_redis(Some(path), &process_env, &Overrides::default()))
        .transpose()
        .map_err(CliError::from)
}

/// How to reach the store: the config's `redis` settings, or the defaults.
pub fn store_options(url: RedisUrl, namespace: &str, redis: Option<&RedisConfig>) -> RedisOptions {
    use config::defaults;
    RedisOptions {
        url,
        username: redis.and_then(|r| r.username.clone()),
        password: redis.and_then(|r| r.password.clone()),
        namespace: namespace.to_owned(),
        connect_timeout: redis.map_or(defaults::REDIS_CONNECT_TIMEOUT, |r| r.connect_timeout),
        response_timeout: redis.map_or(defaults::REDIS_RESPONSE_TIMEOUT, |r| r.response_timeout),
        stream_maxlen: redis.map_or(defaults::STREAM_MAXLEN, |r| r.stream_maxlen),
    }
}

/// The daemon's base URL: `--server`, else from its `server.listen` (a wildcard
/// address reached on loopback), else the default listen address.
pub fn daemon_url(server: Option<&str>, listen: Option<std::net::SocketAddr>) -> String {
    if let Some(server) = server {
        return server.trim_end_matches('/').to_owned();
    }
    let mut addr = listen.unwrap_or(config::defaults::LISTEN);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// Where `canopy run` keeps the embedded Redis of `state_dir`.
pub fn embedded_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("redis")
}

/// The file in [`embedded_dir`] holding the embedded Redis's URL while it runs
/// (a unix socket, or a loopback port when the socket path would be too long).
pub const URL_FILE: &str = "url";

fn embedded_url(state_dir: &std::path::Path) -> Result<RedisUrl, CliError> {
    std::fs::read_to_string(embedded_dir(state_dir).join(URL_FILE))
        .ok()
        .and_then(|url| RedisUrl::parse(&url).ok())
        .ok_or_else(|| CliError::NoRedis {
            state_dir: state_dir.to_path_buf(),
        })
}

pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}
