//! How a canopy process reaches Redis: the URL (shown without credentials),
//! the credentials and timeouts, and the one function that opens a managed,
//! reconnecting connection. The daemon's store and the child library both
//! connect through [`open`]; neither loads nor claims anything here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::secret::{Secret, UrlParts, redact};

/// How to reach Redis. Secrets arrive resolved; `Debug` never shows them (the
/// URL's userinfo included).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: RedisUrl,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub namespace: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// `MAXLEN ~` of the app streams and `canopy:<ns>:events` (the daemon's
    /// writes only).
    pub stream_maxlen: u64,
}

/// Reconnect attempts of one request before it fails; the caller's own backoff
/// takes over from there, so a Redis outage never blocks a loop for long.
const RECONNECT_RETRIES: usize = 3;
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid Redis URL {url}")]
    Url {
        url: RedisUrl,
        #[source]
        source: redis::RedisError,
    },
    #[error("failed to connect to Redis at {url}")]
    Connect {
        url: RedisUrl,
        #[source]
        source: redis::RedisError,
    },
}

/// Opens a managed connection (reconnecting, with the options' timeouts) and
/// returns the client too, for connections of another kind (pub/sub).
pub async fn open(
    options: &RedisOptions,
) -> Result<(redis::Client, ConnectionManager), ConnectError> {
    let url_error = |source| ConnectError::Url {
        url: options.url.clone(),
        source,
    };
    let mut info = options
        .url
        .expose()
        .into_connection_info()
        .map_err(url_error)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &options.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &options.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(url_error)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(RECONNECT_MAX_DELAY);
    let conn = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|source| ConnectError::Connect {
            url: options.url.clone(),
            source,
        })?;
    Ok((client, conn))
}

/// A Redis URL as configured. It may carry a password in its userinfo (prefer
/// `redis.password_env`): `Display` and `Debug` never show the userinfo, and
/// [`RedisUrl::expose`] is for the connection only.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Accepts `redis://`, `rediss://`, `unix://` and `redis+unix://` URLs.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let scheme = UrlParts::split(text)
            .map(|parts| parts.scheme)
            .ok_or_else(|| {
                format!(
                    "Redis URL {} has no scheme: use redis://host:port/db, rediss://, or unix:///path",
                    redact(text)
                )
            })?;
        if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(format!(
                "unsupported Redis URL scheme {scheme:?} in {}: use redis, rediss, unix or redis+unix",
                redact(text)
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("Redis URL {} contains whitespace", redact(text)));
        }
        Ok(RedisUrl(text.to_owned()))
    }

    /// The URL with its credentials, to connect with. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The password in the URL's userinfo, if any (to keep it out of what the
    /// process passes on, like any other credential).
    pub fn password(&self) -> Option<Secret> {
        let info = self.userinfo()?;
        let (_, password) = info.split_once(':')?;
        (!password.is_empty()).then(|| Secret::new(password))
    }

    /// True if the URL carries a password (`redis://:pw@host` or `redis://u:pw@host`).
    pub fn has_password(&self) -> bool {
        self.userinfo().is_some_and(|info| info.contains(':'))
    }

    fn userinfo(&self) -> Option<&str> {
        UrlParts::split(&self.0)?.userinfo
    }
}

/// Shows the URL without userinfo.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", redact(&self.0))
    }
}

impl FromStr for RedisUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        RedisUrl::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_hide_userinfo() {
        let url = RedisUrl::parse("redis://u:pa55@127.0.0.1:6379/0").unwrap();
        assert!(url.has_password());
        assert_eq!(url.to_string(), "redis://127.0.0.1:6379/0");
        assert!(!format!("{url:?}").contains("pa55"));
        assert_eq!(url.expose(), "redis://u:pa55@127.0.0.1:6379/0");
        assert!(!RedisUrl::parse("redis://h:1/0").unwrap().has_password());
        assert!(RedisUrl::parse("unix:///run/redis.sock").is_ok());
        let err = RedisUrl::parse("http://u:pa55@h").unwrap_err();
        assert!(
            err.contains("unsupported") && !err.contains("pa55"),
            "{err}"
        );
    }
}
