//! The daemon's configuration (DESIGN section 7): `canopy.yaml`, then `CANOPY_*`
//! environment variables, then flags, later layers winning, loaded into one
//! validated [`Config`] by [`Config::load`]. `examples/canopy.yaml` shows and
//! explains every key.
//!
//! - Unknown keys and bad values are errors located as `file:line:column`; the
//!   file is size-capped before parsing. A bad variable or flag is an error
//!   naming it. Nothing starts on a config that does not load.
//! - Environment variables: see [`ENV_VARS`] (`CANOPY_NAMESPACE`,
//!   `CANOPY_STATE_DIR`, `CANOPY_REPO_URL`, `CANOPY_REPO_REF`, `CANOPY_REPO_PATH`,
//!   `CANOPY_POLL_INTERVAL`, `CANOPY_REDIS_URL`, `CANOPY_LISTEN`).
//! - Secrets are named by `*_env` (a variable) or `*_file` (a file), never
//!   written in the config file; they are read at load into [`Secret`], which
//!   never prints its value. URLs are shown without userinfo, report URLs by
//!   their origin only.
//!
//! This module reads files and variables but starts nothing: what the values
//! mean at run time belongs to the modules that use them.

mod error;
mod file;
mod load;
mod model;
mod oidc;
mod scope;
mod value_ref;
mod values;

pub use crate::protocol::{RedisUrl, Secret};
pub use error::ConfigError;
pub use file::{MAX_CONFIG_BYTES, check_file, parse_schedule};
pub use load::{ENV_VARS, Overrides, default_state_dir, process_env};
pub use model::{
    ApiToken, Config, DEFAULT_CREDENTIALS_DIR, GitAuth, RedisConfig, RepoConfig, ReportConfig,
    Role, ServerConfig, SinkConfig, SinkFormat, WebhooksConfig,
};
pub use oidc::{GrantRule, JwksSource, OidcConfig};
pub use scope::{AppScope, NamespaceScope};
pub use values::{Namespace, SinkUrl, parse_duration, parse_size};

/// The types of `repo.children` and of the `--children` flags, for the CLI.
pub use crate::layout::{Generator, GlobPattern};

/// Every default of the config, in one place.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    pub const NAMESPACE: &str = "default";
    /// Used when neither `XDG_STATE_HOME` nor `HOME` is set: `$XDG_STATE_HOME/canopy`
    /// or `$HOME/.local/state/canopy` come first.
    pub const STATE_DIR_FALLBACK: &str = ".canopy";
    pub const REPO_PATH: &str = ".";
    pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
    pub const REPO_TIMEOUT: Duration = Duration::from_secs(60);
    /// The username sent with a token when none is configured; forges ignore it.
    pub const GIT_USERNAME: &str = "git";
    pub const STREAM_MAXLEN: u64 = 10_000;
    pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
    /// `redis.acl.grace`: a replaced password stays valid this long.
    pub const ACL_GRACE: Duration = Duration::from_secs(600);
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    pub const WEBHOOK_MAX_BODY: u64 = 1 << 20;
    /// Connections served at once; more wait in the kernel's accept queue.
    pub const MAX_CONNECTIONS: usize = 256;
    /// To send a request's head, from the connection's start or, kept alive,
    /// from the end of the previous response (hyper's header-read timeout):
    /// also how long an idle keep-alive connection stays open.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// To send a webhook's whole body. GitHub gives up on a hook after 10 s,
    /// so an honest sender is done long before.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
    /// Bytes of webhook bodies held at once before their signature is checked,
    /// across all requests: 16 bodies of the default `webhooks.max_body`.
    pub const UNVERIFIED_BODY_BUDGET: u64 = 16 << 20;
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const DEPENDS_ON_TIMEOUT: Duration = Duration::from_secs(600);
    /// `server.oidc.algorithms`: what identity providers sign with by default.
    pub const OIDC_ALGORITHMS: [jsonwebtoken::Algorithm; 2] = [
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::Algorithm::ES256,
    ];
    /// `server.oidc.leeway`: clock skew allowed on a token's `exp` and `nbf`.
    pub const OIDC_LEEWAY: Duration = Duration::from_secs(60);
    /// `server.oidc.jwks_max_age`: keys older than this are fetched again.
    pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
    /// `server.oidc.jwks_min_interval`: at most one fetch of the keys per this
    /// interval, however many tokens name an unknown key.
    pub const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(30);
}
