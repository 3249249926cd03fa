//! The config file as written: its shape, located parse errors, and the checks
//! that need a whole mapping (one form of a secret, a report's cron expression)
//! or a whole list (unique names). Secrets are only named here; they are read
//! after the environment and flags are layered on.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ConfigError;
use super::model::{ApiToken, SinkFormat};
use super::oidc::OidcConfig;
use super::scope::NamespaceScope;
use super::value_ref::ValueRef;
use super::values::{self, Namespace, opt, parsed};
use crate::layout::Generator;
use crate::protocol::RedisUrl;
use crate::source::RepoUrl;

/// Largest config file read; a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub namespace: Option<Namespace>,
    #[serde(default, deserialize_with = "opt::path")]
    pub state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "crate::yaml::null_as_empty")]
    pub repo: RepoFile,
    #[serde(default, deserialize_with = "crate::yaml::null_as_empty")]
    pub redis: RedisFile,
    #[serde(default, deserialize_with = "crate::yaml::null_as_empty")]
    pub server: ServerFile,
    #[serde(default, deserialize_with = "crate::yaml::null_as_empty")]
    pub webhooks: WebhooksFile,
    #[serde(default, deserialize_with = "unique_names")]
    pub reports: Vec<ReportFile>,
    #[serde(default, deserialize_with = "opt::duration")]
    pub shutdown_grace: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    pub depends_on_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepoFile {
    #[serde(default, deserialize_with = "opt::repo_url")]
    pub url: Option<RepoUrl>,
    #[serde(rename = "ref", default, deserialize_with = "opt::reference")]
    pub reference: Option<String>,
    #[serde(default, deserialize_with = "opt::repo_path")]
    pub path: Option<String>,
    pub children: Option<Generator>,
    #[serde(default, deserialize_with = "opt::marker")]
    pub marker: Option<String>,
    #[serde(default, deserialize_with = "opt::duration")]
    pub poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    pub timeout: Option<Duration>,
    pub auth: Option<GitAuthFile>,
}

/// `repo.auth`: a username (optional, not secret) and a token (required).
#[derive(Debug)]
pub(super) struct GitAuthFile {
    pub username: Option<ValueRef>,
    pub token: ValueRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GitAuthFields {
    username: Option<String>,
    #[serde(default, deserialize_with = "opt::env_name")]
    username_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    username_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt::env_name")]
    token_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    token_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for GitAuthFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(
            d,
            "a mapping with token_env or token_file",
            |f: GitAuthFields| {
                Ok(GitAuthFile {
                    username: ValueRef::at_most_one(
                        "username",
                        f.username,
                        f.username_env,
                        f.username_file,
                    )?,
                    token: ValueRef::exactly_one("token", f.token_env, f.token_file)?,
                })
            },
        )
    }
}

#[derive(Debug, Default)]
pub(super) struct RedisFile {
    pub url: Option<RedisUrl>,
    pub username: Option<ValueRef>,
    pub password: Option<ValueRef>,
    pub stream_maxlen: Option<u64>,
    pub connect_timeout: Option<Duration>,
    pub response_timeout: Option<Duration>,
    pub sync_timeout: Option<Duration>,
    /// `redis.acl.credentials_dir`: a Redis ACL user per app, its credentials
    /// files there.
    pub credentials_dir: Option<PathBuf>,
    /// `redis.acl.rotate`: when the apps' passwords are replaced.
    pub rotate: Option<cron::Schedule>,
    /// `redis.acl.grace`: how long a replaced password stays valid.
    pub grace: Option<Duration>,
}

/// `redis.acl`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFields {
    #[serde(default, deserialize_with = "opt::path")]
    credentials_dir: Option<PathBuf>,
    rotate: Option<String>,
    #[serde(default, deserialize_with = "opt::duration")]
    grace: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisFields {
    url: Option<RedisUrl>,
    username: Option<String>,
    #[serde(default, deserialize_with = "opt::env_name")]
    username_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    username_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt::env_name")]
    password_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt::count")]
    stream_maxlen: Option<u64>,
    #[serde(default, deserialize_with = "opt::duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    response_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    sync_timeout: Option<Duration>,
    acl: Option<AclFields>,
}

impl<'de> Deserialize<'de> for RedisFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(d, "a mapping", |f: RedisFields| {
            Ok(RedisFile {
                url: f.url,
                username: ValueRef::at_most_one(
                    "username",
                    f.username,
                    f.username_env,
                    f.username_file,
                )?,
                password: ValueRef::at_most_one("password", None, f.password_env, f.password_file)?,
                stream_maxlen: f.stream_maxlen,
                connect_timeout: f.connect_timeout,
                response_timeout: f.response_timeout,
                sync_timeout: f.sync_timeout,
                credentials_dir: f.acl.as_ref().and_then(|acl| acl.credentials_dir.clone()),
                rotate: f
                    .acl
                    .as_ref()
                    .and_then(|acl| acl.rotate.as_deref())
                    .map(|cron| parse_schedule("redis.acl.rotate", cron))
                    .transpose()?,
                grace: f.acl.and_then(|acl| acl.grace),
            })
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct ServerFile {
    pub listen: Option<std::net::SocketAddr>,
    pub tokens: Vec<ApiToken>,
    pub read_requires_token: Option<bool>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub unverified_body_budget: Option<u64>,
    pub oidc: Option<OidcConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFields {
    #[serde(default, deserialize_with = "opt::listen")]
    listen: Option<std::net::SocketAddr>,
    #[serde(default, deserialize_with = "unique_names")]
    tokens: Vec<ApiToken>,
    read_requires_token: Option<bool>,
    #[serde(default, deserialize_with = "opt::connections")]
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "opt::duration")]
    header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    body_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt::budget_size")]
    unverified_body_budget: Option<u64>,
    oidc: Option<OidcConfig>,
}

impl<'de> Deserialize<'de> for ServerFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(d, "a mapping", |f: ServerFields| {
            let tokens = f
                .tokens
                .iter()
                .enumerate()
                .map(|(i, token)| (format!("tokens[{i}] ({})", token.name), &token.namespaces));
            let grants = f.oidc.iter().flat_map(|oidc| {
                oidc.grants.iter().enumerate().map(|(i, rule)| {
                    let name = format!("oidc.grants[{i}] ({})", rule.describe());
                    (name, &rule.namespaces)
                })
            });
            all_or_no_namespaces(tokens.chain(grants))?;
            Ok(ServerFile {
                listen: f.listen,
                tokens: f.tokens,
                read_requires_token: f.read_requires_token,
                max_connections: f.max_connections,
                header_timeout: f.header_timeout,
                body_timeout: f.body_timeout,
                unverified_body_budget: f.unverified_body_budget,
                oidc: f.oidc,
            })
        })
    }
}

/// Without `namespaces`, a credential is valid in the namespace of whichever
/// daemon loads the config: in a file shared by the daemons of several
/// environments, in all of them. So once one credential names its namespaces
/// (the file serves several), every one must: a token added later without them
/// is an error, not a token valid in production by accident.
fn all_or_no_namespaces<'a>(
    credentials: impl Iterator<Item = (String, &'a NamespaceScope)>,
) -> Result<(), String> {
    let (named, unnamed): (Vec<_>, Vec<_>) = credentials.partition(|(_, scope)| scope.is_named());
    match (named.first(), unnamed.first()) {
        (Some((named, _)), Some((unnamed, _))) => Err(format!(
            "{unnamed} has no `namespaces` but {named} has: once one token or grant names its \
             namespaces, every one must (`namespaces: [\"*\"]` for every namespace)"
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhooksFile {
    pub github: Option<SecretFile>,
    pub gitlab: Option<TokenFile>,
    pub gitea: Option<SecretFile>,
    pub generic: Option<SecretFile>,
    #[serde(default, deserialize_with = "opt::body_size")]
    pub max_body: Option<u64>,
}

/// `{secret_env: X}` or `{secret_file: /path}`.
#[derive(Debug)]
pub(super) struct SecretFile(pub ValueRef);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFields {
    #[serde(default, deserialize_with = "opt::env_name")]
    secret_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    secret_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SecretFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(
            d,
            "a mapping with secret_env or secret_file",
            |f: SecretFields| {
                ValueRef::exactly_one("secret", f.secret_env, f.secret_file).map(SecretFile)
            },
        )
    }
}

/// `{token_env: X}` or `{token_file: /path}` (GitLab sends a token, not a signature).
#[derive(Debug)]
pub(super) struct TokenFile(pub ValueRef);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFields {
    #[serde(default, deserialize_with = "opt::env_name")]
    token_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    token_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for TokenFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(
            d,
            "a mapping with token_env or token_file",
            |f: TokenFields| {
                ValueRef::exactly_one("token", f.token_env, f.token_file).map(TokenFile)
            },
        )
    }
}

#[derive(Debug)]
pub(super) struct ReportFile {
    pub name: String,
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub sinks: Vec<SinkFile>,
    pub allow_private_targets: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFields {
    #[serde(deserialize_with = "report_name")]
    name: String,
    schedule: String,
    #[serde(default, deserialize_with = "opt::timezone")]
    timezone: Option<chrono_tz::Tz>,
    #[serde(default, deserialize_with = "crate::yaml::null_as_empty")]
    sinks: Vec<SinkFile>,
    #[serde(default)]
    allow_private_targets: bool,
}

impl<'de> Deserialize<'de> for ReportFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The schedule is checked here rather than as a field, so its error can
        // name the report.
        checked_map(d, "a report mapping", |f: ReportFields| {
            Ok(ReportFile {
                schedule: parse_schedule(&format!("report {:?}", f.name), &f.schedule)?,
                name: f.name,
                timezone: f.timezone.unwrap_or(chrono_tz::Tz::UTC),
                sinks: f.sinks,
                allow_private_targets: f.allow_private_targets,
            })
        })
    }
}

/// A cron expression with seconds: `sec min hour day-of-month month day-of-week
/// [year]`, or `@daily` and friends. `what` names it in errors
/// (`report "nightly"`, `redis.acl.rotate`), which are one line whatever the
/// expression holds.
pub fn parse_schedule(what: &str, expression: &str) -> Result<cron::Schedule, String> {
    schedule(what, expression).map_err(|e| crate::one_line(&e))
}

fn schedule(what: &str, expression: &str) -> Result<cron::Schedule, String> {
    let invalid = |why: String| format!("{what}: invalid cron schedule {expression:?}: {why}");
    let fields = expression.split_whitespace().count();
    if fields == 5 {
        // The classic five-field form is the usual mistake: say what to write.
        return Err(invalid(format!(
            "it has 5 fields, canopy's cron has 6 (seconds first): \"0 {expression}\""
        )));
    }
    let schedule =
        cron::Schedule::from_str(expression).map_err(|e| invalid(cron_message(&e.to_string())))?;
    if schedule.upcoming(chrono::Utc).next().is_none() {
        return Err(format!("{what}: cron schedule {expression:?} never fires"));
    }
    Ok(schedule)
}

/// The cron crate's message is the expression, a line with a caret under the
/// fault, then the reason: keep the reason and the caret's position, on one line.
fn cron_message(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let caret = lines
        .iter()
        .position(|l| l.trim() == "^" && l.ends_with('^'));
    match caret {
        Some(i) => {
            let column = lines[i].len();
            let reason = lines[i + 1..].join(" ");
            let reason = reason.trim();
            if reason.is_empty() {
                format!("unexpected text at character {column}")
            } else {
                format!("{reason} (at character {column})")
            }
        }
        None => lines.join(" "),
    }
}

/// One sink: exactly one of `url`, `url_env`, `url_file` (a Slack webhook URL is
/// a secret: keep it out of the file).
#[derive(Debug)]
pub(super) struct SinkFile {
    pub url: ValueRef,
    pub format: SinkFormat,
    pub secret: Option<ValueRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkFields {
    url: Option<values::SinkUrl>,
    #[serde(default, deserialize_with = "opt::env_name")]
    url_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    url_file: Option<PathBuf>,
    format: SinkFormat,
    #[serde(default, deserialize_with = "opt::env_name")]
    secret_env: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    secret_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SinkFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(d, "a sink mapping", |f: SinkFields| {
            let literal = f.url.map(|url| url.expose().to_owned());
            Ok(SinkFile {
                url: ValueRef::at_most_one("url", literal, f.url_env, f.url_file)?
                    .ok_or("set `url`, `url_env` or `url_file`")?,
                format: f.format,
                secret: ValueRef::at_most_one("secret", None, f.secret_env, f.secret_file)?,
            })
        })
    }
}

pub(super) fn token_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parsed(d, "a token name", |name| {
        values::check_name("token name", name).map(|()| name.to_owned())
    })
}

fn report_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parsed(d, "a report name", |name| {
        values::check_name("report name", name).map(|()| name.to_owned())
    })
}

/// Items of a list that must have unique names.
trait Named {
    const KIND: &'static str;
    fn name(&self) -> &str;
}

impl Named for ReportFile {
    const KIND: &'static str = "report";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ApiToken {
    const KIND: &'static str = "token";
    fn name(&self) -> &str {
        &self.name
    }
}

/// A list whose items have unique names. The check runs inside the sequence's
/// visitor so the YAML reader locates a duplicate at the list.
fn unique_names<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Named,
{
    struct Unique<T>(PhantomData<fn() -> T>);
    impl<'de, T: Deserialize<'de> + Named> Visitor<'de> for Unique<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of {}s", T::KIND)
        }
        /// An empty value (`reports:`) is an empty list.
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items: Vec<T> = Vec::new();
            while let Some(item) = seq.next_element::<T>()? {
                if let Some(first) = items.iter().position(|i| i.name() == item.name()) {
                    return Err(de::Error::custom(format!(
                        "duplicate {} name {:?} (items {first} and {})",
                        T::KIND,
                        item.name(),
                        items.len()
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    // `any`, not `seq`: a value of another kind then reaches the visitor, whose
    // error names what was found and what was expected ("invalid type: map,
    // expected a list of tokens").
    d.deserialize_any(Unique(PhantomData))
}

/// Deserializes the mapping as `Fields` (derived, with `deny_unknown_fields`),
/// then `check`s it inside the mapping's visitor: the YAML reader then reports a
/// failed check at the mapping, with its path (`webhooks.github`), instead of at
/// the end of the document.
pub(super) fn checked_map<'de, D, Fields, T, F>(
    d: D,
    expecting: &'static str,
    check: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    Fields: Deserialize<'de>,
    F: FnOnce(Fields) -> Result<T, String>,
{
    struct Checked<F, Fields>(&'static str, F, PhantomData<fn() -> Fields>);
    impl<'de, Fields, T, F> Visitor<'de> for Checked<F, Fields>
    where
        Fields: Deserialize<'de>,
        F: FnOnce(Fields) -> Result<T, String>,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let fields = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.1)(fields).map_err(de::Error::custom)
        }
    }
    // `any`, not `map`: see `unique_names`.
    d.deserialize_any(Checked(expecting, check, PhantomData))
}

/// Reads and parses the config file, size-capped before parsing.
pub(super) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            max: MAX_CONFIG_BYTES,
        });
    }
    parse(path, &bytes)
}

/// Checks config file text as [`Config::load`](super::Config::load) reads it,
/// without the environment, flags or secrets (nothing else is read): `path`
/// names it in errors. Public for the fuzzer.
pub fn check_file(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    parse(path, bytes).map(drop)
}

/// Parses config text; `path` names it in errors.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<FileConfig, ConfigError> {
    let invalid = |line, column, message| ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        invalid(
            Some(line),
            None,
            "the config file is not valid UTF-8".to_owned(),
        )
    })?;
    // An empty (or comment-only) file means every default.
    let config: Option<FileConfig> =
        crate::yaml::from_str(text).map_err(|e| invalid(e.line, e.column, e.message))?;
    Ok(config.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the cron_schedule fuzz target: the five-field hint quoted the
    /// expression raw, so a `\r` in it split the error line.
    #[test]
    fn schedule_errors_are_one_line() {
        for expression in ["0 6 * *;*\r\x000", "0 6 * * *\n", "\u{1b}[2J * * * * *"] {
            let e = parse_schedule("r", expression).unwrap_err();
            assert!(!e.contains(char::is_control), "{e:?}");
        }
        assert_eq!(
            parse_schedule("report \"nightly\"", "0 6 * * *").unwrap_err(),
            "report \"nightly\": invalid cron schedule \"0 6 * * *\": it has 5 fields, \
             canopy's cron has 6 (seconds first): \"0 0 6 * * *\""
        );
    }
}
