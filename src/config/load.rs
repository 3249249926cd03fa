//! Layering (file, then `CANOPY_*` variables, then flags) and resolution into
//! the validated [`Config`]: defaults filled in, secrets read, contradictions
//! refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{self, FileConfig, SinkFile};
use super::model::{
    Config, GitAuth, RedisConfig, RepoConfig, ReportConfig, ServerConfig, SinkConfig,
    WebhooksConfig,
};
use super::value_ref::ValueRef;
use super::values::{
    Namespace, SinkUrl, parse_listen, parse_nonzero_duration, parse_path, parse_ref,
    parse_repo_path,
};
use super::{ConfigError, defaults};
use crate::layout::{Generator, GlobPattern};
use crate::protocol::{RedisUrl, Secret};
use crate::source::RepoUrl;

/// The environment variables [`Config::load`] reads, each overriding the config
/// file's key of the same meaning. An empty variable counts as unset.
///
/// | variable | config key |
/// |---|---|
/// | `CANOPY_NAMESPACE` | `namespace` |
/// | `CANOPY_STATE_DIR` | `state_dir` |
/// | `CANOPY_REPO_URL` | `repo.url` |
/// | `CANOPY_REPO_REF` | `repo.ref` |
/// | `CANOPY_REPO_PATH` | `repo.path` |
/// | `CANOPY_POLL_INTERVAL` | `repo.poll_interval` |
/// | `CANOPY_REDIS_URL` | `redis.url` |
/// | `CANOPY_LISTEN` | `server.listen` |
pub const ENV_VARS: [&str; 9] = [
    "CANOPY_NAMESPACE",
    "CANOPY_STATE_DIR",
    "CANOPY_REPO_URL",
    "CANOPY_REPO_REF",
    "CANOPY_REPO_PATH",
    "CANOPY_POLL_INTERVAL",
    "CANOPY_REDIS_URL",
    "CANOPY_REDIS_ACL_CREDENTIALS_DIR",
    "CANOPY_LISTEN",
];

/// Values from command-line flags, the last layer. `None` (or an empty list)
/// leaves the value from the file or environment. Error messages refer to the
/// flags by the names given here.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--namespace`
    pub namespace: Option<Namespace>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
    /// `--repo-url`
    pub repo_url: Option<RepoUrl>,
    /// `--repo-ref`
    pub repo_ref: Option<String>,
    /// `--repo-path`
    pub repo_path: Option<String>,
    /// `--children` (repeatable): if not empty, replaces `repo.children`.
    pub children: Vec<GlobPattern>,
    /// `--children-exclude` (repeatable): the exclusions of `--children`.
    pub children_exclude: Vec<GlobPattern>,
    /// `--redis-url`
    pub redis_url: Option<RedisUrl>,
    /// `--credentials-dir`
    pub credentials_dir: Option<PathBuf>,
    /// `--poll-interval`
    pub poll_interval: Option<Duration>,
    /// `--listen`
    pub listen: Option<SocketAddr>,
}

/// The process environment, for [`Config::load`] outside tests. A variable that
/// is not valid UTF-8 counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Loads the configuration: the config file (if any), then the `CANOPY_*`
    /// variables of [`ENV_VARS`], then `overrides`, later layers winning; then
    /// fills in defaults and reads every secret through `env` or from its file.
    ///
    /// `env` is the environment (use [`process_env`]); it is a parameter so tests
    /// never touch the process's own. Nothing is started and nothing is written:
    /// a config that loads is complete and valid.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        resolve(layered(file, env, overrides)?, env, Needs::Everything)
    }

    /// [`Config::load`] for a command that only talks to the daemon's Redis or
    /// API (`status`, `diff`, `report`, `sync`, `agent`): the Redis credentials
    /// must be readable, but the daemon's other secrets need not be on this
    /// machine. An unreadable Git token or webhook secret leaves that setting
    /// out, and report schedules are left out: such a config must never run a
    /// daemon.
    pub fn load_for_redis(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        resolve(layered(file, env, overrides)?, env, Needs::Redis)
    }
}

/// The file, then the environment, then the flags.
fn layered(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<FileConfig, ConfigError> {
    let mut layered = match file {
        Some(path) => file::read(path)?,
        None => FileConfig::default(),
    };
    apply_env(&mut layered, env)?;
    apply_overrides(&mut layered, overrides)?;
    Ok(layered)
}

/// Which secrets must be readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Everything,
    /// Only Redis's: the others are dropped when unreadable.
    Redis,
}

impl Needs {
    /// A secret of a setting that can be left out in [`Needs::Redis`].
    fn optional(
        self,
        secret: Option<Result<Secret, ConfigError>>,
    ) -> Result<Option<Secret>, ConfigError> {
        match (self, secret) {
            (Needs::Redis, Some(Err(_))) => Ok(None),
            (_, secret) => secret.transpose(),
        }
    }
}

fn apply_env(f: &mut FileConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    fn var<T>(
        env: &dyn Fn(&str) -> Option<String>,
        name: &str,
        parse: fn(&str) -> Result<T, String>,
        slot: &mut Option<T>,
    ) -> Result<(), ConfigError> {
        match env(name) {
            Some(text) if !text.is_empty() => {
                *slot = Some(parse(&text).map_err(|message| ConfigError::Env {
                    var: name.to_owned(),
                    message,
                })?);
                Ok(())
            }
            _ => Ok(()),
        }
    }
    var(env, "CANOPY_NAMESPACE", Namespace::parse, &mut f.namespace)?;
    var(env, "CANOPY_STATE_DIR", parse_path, &mut f.state_dir)?;
    var(env, "CANOPY_REPO_URL", RepoUrl::parse, &mut f.repo.url)?;
    var(env, "CANOPY_REPO_REF", parse_ref, &mut f.repo.reference)?;
    var(env, "CANOPY_REPO_PATH", parse_repo_path, &mut f.repo.path)?;
    var(
        env,
        "CANOPY_POLL_INTERVAL",
        parse_nonzero_duration,
        &mut f.repo.poll_interval,
    )?;
    var(env, "CANOPY_REDIS_URL", RedisUrl::parse, &mut f.redis.url)?;
    var(
        env,
        "CANOPY_REDIS_ACL_CREDENTIALS_DIR",
        parse_path,
        &mut f.redis.credentials_dir,
    )?;
    var(env, "CANOPY_LISTEN", parse_listen, &mut f.server.listen)?;
    Ok(())
}

fn apply_overrides(f: &mut FileConfig, o: &Overrides) -> Result<(), ConfigError> {
    let flag = |flag, message| ConfigError::Flag { flag, message };
    if let Some(namespace) = &o.namespace {
        f.namespace = Some(namespace.clone());
    }
    if let Some(dir) = &o.state_dir {
        f.state_dir = Some(dir.clone());
    }
    if let Some(url) = &o.repo_url {
        f.repo.url = Some(url.clone());
    }
    if let Some(reference) = &o.repo_ref {
        f.repo.reference = Some(parse_ref(reference).map_err(|m| flag("--repo-ref", m))?);
    }
    if let Some(path) = &o.repo_path {
        f.repo.path = Some(parse_repo_path(path).map_err(|m| flag("--repo-path", m))?);
    }
    if !o.children.is_empty() {
        f.repo.children = Some(Generator {
            dirs: o.children.clone(),
            exclude: o.children_exclude.clone(),
        });
    } else if !o.children_exclude.is_empty() {
        return Err(flag(
            "--children-exclude",
            "needs --children (it refines the root generator given by --children)".to_owned(),
        ));
    }
    if let Some(dir) = &o.credentials_dir {
        f.redis.credentials_dir = Some(dir.clone());
    }
    if let Some(url) = &o.redis_url {
        f.redis.url = Some(url.clone());
    }
    if let Some(interval) = o.poll_interval {
        if interval.is_zero() {
            return Err(flag(
                "--poll-interval",
                "must be greater than zero".to_owned(),
            ));
        }
        f.repo.poll_interval = Some(interval);
    }
    if let Some(listen) = o.listen {
        f.server.listen = Some(listen);
    }
    Ok(())
}

fn resolve(
    f: FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
    needs: Needs,
) -> Result<Config, ConfigError> {
    let conflict = |key: &str, message: &str| ConfigError::Value {
        key: key.to_owned(),
        message: message.to_owned(),
    };

    let url = f.repo.url.ok_or(ConfigError::MissingRepoUrl)?;
    let auth = match f.repo.auth {
        Some(auth) => needs
            .optional(Some(auth.token.read_secret("repo.auth", env)))?
            .map(|token| {
                Ok::<_, ConfigError>(GitAuth {
                    username: match auth.username {
                        Some(username) => username.read("repo.auth", env)?,
                        None => defaults::GIT_USERNAME.to_owned(),
                    },
                    token,
                })
            })
            .transpose()?,
        None => None,
    };
    if auth.is_some() && url.embedded_credentials().is_some() {
        return Err(conflict(
            "repo.auth",
            "repo.url carries credentials too: give them in one place only",
        ));
    }
    if (auth.is_some() || url.embedded_credentials().is_some())
        && url.as_str().starts_with("http://")
    {
        return Err(conflict(
            "repo.url",
            "credentials would be sent over plain http: use https",
        ));
    }
    let repo = RepoConfig {
        url,
        reference: f.repo.reference,
        path: f
            .repo
            .path
            .unwrap_or_else(|| defaults::REPO_PATH.to_owned()),
        children: f.repo.children,
        marker: f
            .repo
            .marker
            .unwrap_or_else(|| crate::layout::DEFAULT_MARKER.to_owned()),
        poll_interval: f.repo.poll_interval.unwrap_or(defaults::POLL_INTERVAL),
        timeout: f.repo.timeout.unwrap_or(defaults::REPO_TIMEOUT),
        auth,
    };

    let password = f
        .redis
        .password
        .map(|p| p.read_secret("redis", env))
        .transpose()?;
    if password.is_some() && f.redis.url.as_ref().is_some_and(RedisUrl::has_password) {
        return Err(conflict(
            "redis.url",
            "the URL carries a password and redis.password_env or redis.password_file is set: give it in one place only",
        ));
    }
    let redis = RedisConfig {
        url: f.redis.url,
        username: f.redis.username.map(|u| u.read("redis", env)).transpose()?,
        password,
        stream_maxlen: f.redis.stream_maxlen.unwrap_or(defaults::STREAM_MAXLEN),
        connect_timeout: f
            .redis
            .connect_timeout
            .unwrap_or(defaults::REDIS_CONNECT_TIMEOUT),
        response_timeout: f
            .redis
            .response_timeout
            .unwrap_or(defaults::REDIS_RESPONSE_TIMEOUT),
        sync_timeout: f.redis.sync_timeout.unwrap_or(defaults::SYNC_TIMEOUT),
        credentials_dir: f.redis.credentials_dir,
        rotate: f.redis.rotate,
        grace: f.redis.grace.unwrap_or(defaults::ACL_GRACE),
    };

    let hooks = f.webhooks;
    let max_body = hooks.max_body.unwrap_or(defaults::WEBHOOK_MAX_BODY);
    let unverified_body_budget = f
        .server
        .unverified_body_budget
        .unwrap_or(defaults::UNVERIFIED_BODY_BUDGET);
    if unverified_body_budget < max_body {
        return Err(ConfigError::Value {
            key: "server.unverified_body_budget".to_owned(),
            message: format!(
                "{unverified_body_budget} bytes is less than webhooks.max_body ({max_body} bytes): a webhook that large could never be read"
            ),
        });
    }
    let server = ServerConfig {
        listen: f.server.listen.unwrap_or(defaults::LISTEN),
        tokens: f.server.tokens,
        read_requires_token: f.server.read_requires_token.unwrap_or(true),
        max_connections: f
            .server
            .max_connections
            .unwrap_or(defaults::MAX_CONNECTIONS),
        header_timeout: f.server.header_timeout.unwrap_or(defaults::HEADER_TIMEOUT),
        body_timeout: f.server.body_timeout.unwrap_or(defaults::BODY_TIMEOUT),
        unverified_body_budget,
        oidc: f.server.oidc,
    };

    let webhooks = WebhooksConfig {
        github: needs.optional(
            hooks
                .github
                .map(|s| s.0.read_secret("webhooks.github", env)),
        )?,
        gitlab: needs.optional(
            hooks
                .gitlab
                .map(|s| s.0.read_secret("webhooks.gitlab", env)),
        )?,
        gitea: needs.optional(hooks.gitea.map(|s| s.0.read_secret("webhooks.gitea", env)))?,
        generic: needs.optional(
            hooks
                .generic
                .map(|s| s.0.read_secret("webhooks.generic", env)),
        )?,
        max_body,
    };

    let reports = f
        .reports
        .into_iter()
        .filter(|_| needs == Needs::Everything)
        .enumerate()
        .map(|(i, report)| {
            let sinks = report
                .sinks
                .into_iter()
                .enumerate()
                .map(|(j, sink)| resolve_sink(&format!("reports[{i}].sinks[{j}]"), sink, env))
                .collect::<Result<_, _>>()?;
            Ok(ReportConfig {
                name: report.name,
                schedule: report.schedule,
                timezone: report.timezone,
                sinks,
                allow_private_targets: report.allow_private_targets,
            })
        })
        .collect::<Result<_, ConfigError>>()?;

    Ok(Config {
        namespace: f.namespace.unwrap_or_default(),
        state_dir: f.state_dir.unwrap_or_else(|| default_state_dir(env)),
        repo,
        redis,
        server,
        webhooks,
        reports,
        shutdown_grace: f.shutdown_grace.unwrap_or(defaults::SHUTDOWN_GRACE),
        depends_on_timeout: f.depends_on_timeout.unwrap_or(defaults::DEPENDS_ON_TIMEOUT),
    })
}

fn resolve_sink(
    section: &str,
    sink: SinkFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SinkConfig, ConfigError> {
    let url = sink.url.read(section, env)?;
    let url = SinkUrl::parse(&url).map_err(|message| ConfigError::Value {
        key: sink.url.key(section),
        message: format!("{}: {message}", sink.url.origin()),
    })?;
    Ok(SinkConfig {
        url,
        format: sink.format,
        secret: sink
            .secret
            .map(|s: ValueRef| s.read_secret(section, env))
            .transpose()?,
    })
}

/// `$XDG_STATE_HOME/canopy`, else `$HOME/.local/state/canopy` (the XDG default),
/// else `./.canopy`. Relative `XDG_STATE_HOME` or `HOME` values are ignored, as
/// the XDG spec asks. A system service sets `state_dir` (e.g. /var/lib/canopy).
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let absolute = |name| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("canopy");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local/state/canopy");
    }
    PathBuf::from(defaults::STATE_DIR_FALLBACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_follows_xdg() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let both = env(&[("XDG_STATE_HOME", "/x/state"), ("HOME", "/home/u")]);
        assert_eq!(default_state_dir(&both), Path::new("/x/state/canopy"));
        let home = env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/home/u")]);
        assert_eq!(
            default_state_dir(&home),
            Path::new("/home/u/.local/state/canopy")
        );
        assert_eq!(default_state_dir(&env(&[])), Path::new(".canopy"));
    }
}
