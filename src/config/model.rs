//! The validated configuration: what the rest of canopy reads. Every value here
//! has been checked and every secret read; defaults are filled in from
//! [`super::defaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::oidc::OidcConfig;
use super::scope::{AppScope, NamespaceScope};

/// `redis.acl.credentials_dir`'s default under the state dir, with the
/// embedded Redis.
pub const DEFAULT_CREDENTIALS_DIR: &str = "credentials";
use super::values::{Namespace, SinkUrl};
use crate::layout::{Generator, LayoutOptions};
use crate::protocol::RedisUrl;
use crate::protocol::Secret;
use crate::source::{Credentials, RepoUrl};

/// The whole configuration (DESIGN section 7), from the config file, `CANOPY_*`
/// variables and flags. See [`Config::load`](super::Config::load).
#[derive(Debug, Clone)]
pub struct Config {
    /// Prefix of every Redis key and ACL pattern: `canopy:<namespace>:...`.
    pub namespace: Namespace,
    /// Clone cache and the embedded Redis's data.
    pub state_dir: PathBuf,
    pub repo: RepoConfig,
    pub redis: RedisConfig,
    pub server: ServerConfig,
    pub webhooks: WebhooksConfig,
    pub reports: Vec<ReportConfig>,
    /// How long a SIGTERM waits for the current poll before exiting.
    pub shutdown_grace: Duration,
    /// How long an app with `depends_on` waits for its dependencies to report
    /// Synced before it is signalled anyway (and the wait is reported).
    pub depends_on_timeout: Duration,
}

/// The tracked repository (`repo:`).
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// Without userinfo; credentials embedded in the URL are kept apart by
    /// [`RepoUrl`]. See [`RepoConfig::credentials`].
    pub url: RepoUrl,
    /// `ref`: a branch, tag or commit id; `None` tracks the remote's HEAD.
    pub reference: Option<String>,
    /// The root app's directory inside the repository, as configured (`.` is the top).
    pub path: String,
    /// The root app's directory generator when the root has no `children` of its own.
    pub children: Option<Generator>,
    /// The file that makes a directory an app.
    pub marker: String,
    /// Between polls (jittered; errors back off from it).
    pub poll_interval: Duration,
    /// Deadline of one fetch.
    pub timeout: Duration,
    pub auth: Option<GitAuth>,
}

impl RepoConfig {
    /// The HTTP credentials: `repo.auth`, or userinfo embedded in `repo.url` (the
    /// two are never both set: loading refuses it).
    pub fn credentials(&self) -> Option<Credentials> {
        match &self.auth {
            Some(auth) => Some(Credentials {
                username: auth.username.clone(),
                token: auth.token.clone(),
            }),
            None => self.url.embedded_credentials().cloned(),
        }
    }

    /// The layout options for this repository, with the default limits.
    pub fn layout_options(&self) -> LayoutOptions {
        let root = self.path.trim_start_matches("./").trim_matches('/');
        LayoutOptions {
            root: if root == "." {
                String::new()
            } else {
                root.to_owned()
            },
            marker: self.marker.clone(),
            root_children: self.children.clone(),
            ..LayoutOptions::default()
        }
    }
}

/// HTTP(S) credentials for the repository (`repo.auth`).
#[derive(Debug, Clone)]
pub struct GitAuth {
    /// Not secret; `git` unless configured (forges ignore it for token auth).
    pub username: String,
    pub token: Secret,
}

/// The Redis backbone (`redis:`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `None`: start the embedded `redis-server`.
    pub url: Option<RedisUrl>,
    pub username: Option<String>,
    /// From `password_env`/`password_file`; a password in the URL's userinfo stays
    /// in [`RedisUrl::expose`] instead (never both).
    pub password: Option<Secret>,
    /// `MAXLEN ~` of each app's signal stream.
    pub stream_maxlen: u64,
    pub connect_timeout: Duration,
    /// Deadline of one command (a stalled Redis fails a poll instead of hanging it).
    pub response_timeout: Duration,
    /// How long a signalled child has to report the new digest before its app is
    /// OutOfSync.
    pub sync_timeout: Duration,
    /// `redis.acl.credentials_dir`: a Redis ACL user per app, each with its
    /// credentials file under this directory. `None`: no per-app users, unless
    /// the embedded Redis is used ([`RedisConfig::credentials_dir_in`]).
    pub credentials_dir: Option<PathBuf>,
    /// `redis.acl.rotate`: when every app's password is replaced (a cron
    /// schedule with seconds, UTC); `None`: never.
    pub rotate: Option<cron::Schedule>,
    /// `redis.acl.grace`: how long a replaced password stays valid, so a child
    /// has time to read its new file.
    pub grace: Duration,
}

impl RedisConfig {
    /// Where the apps' credentials files go, if per-app ACL users are on: the
    /// configured directory, or `<state_dir>/credentials` with the embedded
    /// Redis (which turns them on by default).
    pub fn credentials_dir_in(&self, state_dir: &std::path::Path) -> Option<PathBuf> {
        match (&self.credentials_dir, &self.url) {
            (Some(dir), _) => Some(dir.clone()),
            (None, None) => Some(state_dir.join(DEFAULT_CREDENTIALS_DIR)),
            (None, Some(_)) => None,
        }
    }

    /// The URL for logs and status output, without userinfo; `None` for the
    /// embedded Redis.
    pub fn display_url(&self) -> Option<String> {
        self.url.as_ref().map(|url| url.to_string())
    }
}

/// The HTTP server (`server:`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    /// If true (the default), the read API (`/api/v1/apps...`, artifacts, the
    /// report) needs a token too; health and metrics never do. `false` opens
    /// reads to anyone who reaches the listener, by explicit choice only.
    pub read_requires_token: bool,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Deadline to send a request's head, counted from the connection's start
    /// or from the end of the previous response on a kept-alive connection
    /// (so it also closes idle keep-alive connections).
    pub header_timeout: Duration,
    /// Deadline to send a webhook's whole body (408 past it).
    pub body_timeout: Duration,
    /// Bytes of request bodies held at once, over all requests, before they
    /// are verified: a webhook beyond it is answered 503 instead of read.
    /// Never below `webhooks.max_body` (loading checks).
    pub unverified_body_budget: u64,
    /// Bearer tokens from an identity provider, mapped to grants by their
    /// claims; `None`: static tokens only.
    pub oidc: Option<OidcConfig>,
}

/// An API bearer token, stored as the sha256 of the token: the config never holds
/// the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// For logs and audit.
    #[serde(deserialize_with = "super::file::token_name")]
    pub name: String,
    pub role: Role,
    #[serde(deserialize_with = "super::values::sha256")]
    pub sha256: [u8; 32],
    /// The apps the token may read and sync (`apps: ["payments/**"]`); every
    /// app when omitted. A child's token names its own app only.
    #[serde(default)]
    pub apps: AppScope,
    /// The namespaces (environments) the token is valid in; the daemon's own
    /// when omitted. A daemon refuses a token that is not valid in its own.
    #[serde(default)]
    pub namespaces: NamespaceScope,
}

/// What a credential may do, within its app scope. Each role includes the ones
/// before it: `admin` ⊇ `sync` ⊇ `read`, so roles compare by what they allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the API: status, diff, artifacts (and the report, unscoped).
    Read,
    /// Also ask for a `refresh`, and `sync` the apps in scope. `write`, the
    /// role's first name, is still accepted in the config file.
    #[serde(alias = "write")]
    Sync,
    /// Also operator actions (suspend, pin) as they are added; today it allows
    /// exactly what `sync` allows.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Sync => "sync",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Push webhooks (`webhooks:`); an unconfigured forge's endpoint answers 404.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// `X-Hub-Signature-256` HMAC key.
    pub github: Option<Secret>,
    /// `X-Gitlab-Token` value.
    pub gitlab: Option<Secret>,
    /// `X-Gitea-Signature` HMAC key.
    pub gitea: Option<Secret>,
    /// HMAC-SHA256 key of `/hooks/generic`.
    pub generic: Option<Secret>,
    /// Largest request body accepted, in bytes (413 past it).
    pub max_body: u64,
}

/// A scheduled drift report (`reports[]`).
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub name: String,
    /// Parsed from a cron expression with seconds; [`cron::Schedule::source`]
    /// gives the text back.
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub sinks: Vec<SinkConfig>,
    /// Deliver to loopback, link-local and private addresses too (checked when
    /// delivering, after name resolution).
    pub allow_private_targets: bool,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub url: SinkUrl,
    pub format: SinkFormat,
    /// Signs the JSON body (HMAC-SHA256) when set.
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// A Slack-compatible incoming webhook message.
    Slack,
    /// The report as JSON.
    Json,
    /// The report as Markdown text.
    Markdown,
}
