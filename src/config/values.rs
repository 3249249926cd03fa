//! Scalar values of the config, each parsed from text in one place so the config
//! file, `CANOPY_*` variables and flags accept (and reject) exactly the same
//! input. Parse functions return the message only; the caller names the input
//! (`file:line:column`, the variable or the flag).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::protocol::{RedisUrl, UrlParts, redact};

/// Parses `30s`, `5m`, `1h`, `250ms` (a number and a unit; no unit is an error,
/// because `30` could mean anything).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("duration {text:?} needs a unit: ms, s, m or h (e.g. 30s)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a number"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "duration {text:?} has unknown unit {unit:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration {text:?} is out of range"))
}

/// A duration that must not be zero: every duration of the config is an interval
/// or a deadline, and zero would mean a hot loop or an instant failure.
pub(super) fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!(
            "duration {:?} must be greater than zero",
            text.trim()
        ));
    }
    Ok(duration)
}

/// Parses a byte size: a plain number of bytes, or a number with `B`, `KiB`,
/// `MiB` or `GiB` (`1MiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("size {text:?} does not start with a whole number"))?;
    let scale: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "size {text:?} has unknown unit {other:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is out of range"))
}

/// `[a-z0-9][a-z0-9_-]{0,62}`: names that end up in Redis keys, ACL patterns and
/// logs (namespace, report and token names), allow-listed like app names.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: use 1-63 characters of a-z, 0-9, '_', '-', starting with a letter or digit"
        ))
    }
}

/// The namespace of every Redis key and ACL pattern canopy writes
/// (`canopy:<ns>:...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(text: &str) -> Result<Self, String> {
        check_name("namespace", text)?;
        Ok(Namespace(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace(super::defaults::NAMESPACE.to_owned())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Namespace {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Namespace::parse(text)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, "a namespace", Namespace::parse)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, "a Redis URL", RedisUrl::parse)
    }
}

/// An `http://` or `https://` URL that reports are posted to. Such URLs often
/// are credentials themselves (a Slack webhook's path is its secret), so
/// `Display` and `Debug` show only the scheme and host; [`SinkUrl::expose`] is
/// for the request only.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkUrl {
    url: String,
    /// `scheme://host[:port]`, without userinfo.
    origin: String,
    host: String,
}

impl SinkUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let shown = || shorten(&redact(text));
        let parts = UrlParts::split(text)
            .ok_or_else(|| format!("report URL {} has no scheme: use https://", shown()))?;
        let scheme = parts.scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "report URL {} must use http or https, not {scheme:?}",
                shown()
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("report URL {} contains whitespace", shown()));
        }
        let host = parts.host();
        if host.is_empty() {
            return Err(format!("report URL {} has no host", shown()));
        }
        Ok(SinkUrl {
            url: text.to_owned(),
            origin: format!("{scheme}://{}", parts.host_port),
            host: host.to_ascii_lowercase(),
        })
    }

    /// The full URL, to post to. Never log it.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The host name or IP address (without brackets), for the private-target check.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// `https://hooks.slack.com/...`: where it goes, not the secret path.
impl fmt::Display for SinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/...", self.origin)
    }
}

impl fmt::Debug for SinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkUrl(\"{self}\")")
    }
}

impl FromStr for SinkUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        SinkUrl::parse(text)
    }
}

impl<'de> Deserialize<'de> for SinkUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, "an http(s) URL", SinkUrl::parse)
    }
}

/// A URL that failed to parse is shown up to its host only: its path may be a
/// credential.
fn shorten(url: &str) -> String {
    let (origin, rest) = match UrlParts::split(url) {
        Some(parts) => (parts.origin(), parts.rest),
        None => {
            let end = url.find(['/', '?', '#']).unwrap_or(url.len());
            (url[..end].to_owned(), &url[end..])
        }
    };
    if rest.is_empty() {
        url.to_owned()
    } else {
        format!("{origin}/...")
    }
}

pub(super) fn parse_count(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive whole number")),
    }
}

pub(super) fn parse_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() || text.contains('\0') {
        return Err(format!("{text:?} is not a path"));
    }
    Ok(PathBuf::from(text))
}

pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("listen address {text:?} is not an IP address and port, e.g. 127.0.0.1:8080")
    })
}

/// A branch, tag or commit id: checked only for what can never be a ref, gix
/// reports the rest when it fetches.
pub(super) fn parse_ref(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "ref {text:?} must be a branch, tag or commit id without spaces"
        ));
    }
    Ok(text.to_owned())
}

/// The root app's directory inside the repository: relative, without `..`.
pub(super) fn parse_repo_path(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.starts_with('/')
        || text.contains('\\')
        || text.split('/').any(|c| c == "..")
    {
        return Err(format!(
            "path {text:?} must be a directory relative to the repository's top, without '..' (\".\" for the top)"
        ));
    }
    Ok(text.to_owned())
}

/// The marker file name: one path component.
pub(super) fn parse_marker(text: &str) -> Result<String, String> {
    if text.is_empty() || text == "." || text == ".." || text.contains(['/', '\\', '\0']) {
        return Err(format!(
            "marker {text:?} must be a file name, like app.yaml"
        ));
    }
    Ok(text.to_owned())
}

/// The name of an environment variable holding a secret.
pub(super) fn parse_env_name(text: &str) -> Result<String, String> {
    let mut bytes = text.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an environment variable name: use A-Z, a-z, 0-9 and '_'"
        ))
    }
}

/// A token's hash: 64 lowercase hex digits.
pub(super) fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let message = || {
        "sha256 must be 64 lowercase hex digits (e.g. the output of `printf %s \"$TOKEN\" | sha256sum`)"
            .to_owned()
    };
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(message());
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).map_err(|_| message())?;
    Ok(hash)
}

pub(super) fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse().map_err(|_| {
        format!("unknown time zone {text:?}: use an IANA name such as UTC or Europe/Paris")
    })
}

/// Deserializes a scalar through `parse`. The parse runs inside the visitor, so
/// the YAML reader locates a bad value at the value itself (not at its mapping).
/// Numbers are read as their text (`namespace: 1` is the namespace "1").
pub(super) fn parsed<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_str(Text { expecting, parse })
}

/// The most `server.max_connections` accepts.
const MAX_CONNECTIONS: usize = 1_000_000;

/// `Option` fields through [`parsed`]: `#[serde(default, deserialize_with = ...)]`.
pub(super) mod opt {
    use super::*;

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        parsed(d, "a duration such as 30s or 5m", parse_nonzero_duration).map(Some)
    }

    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parsed(d, "a positive whole number", parse_count).map(Some)
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        parsed(d, "a path", parse_path).map(Some)
    }

    /// A request body cap: at least 1 KiB (a push event is larger), at most
    /// 64 MiB (GitHub's payloads stop at 25 MB).
    pub fn body_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parsed(d, "a size such as 1MiB", |text| {
            let size = parse_size(text)?;
            if (1 << 10..=64 << 20).contains(&size) {
                Ok(size)
            } else {
                Err(format!("size {text:?} must be between 1KiB and 64MiB"))
            }
        })
        .map(Some)
    }

    /// Bytes of unverified request bodies held at once: at least 1 KiB (the
    /// least `webhooks.max_body`), at most 64 GiB (a limit, not a hope).
    pub fn budget_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parsed(d, "a size such as 16MiB", |text| {
            let size = parse_size(text)?;
            if (1 << 10..=64 << 30).contains(&size) {
                Ok(size)
            } else {
                Err(format!("size {text:?} must be between 1KiB and 64GiB"))
            }
        })
        .map(Some)
    }

    /// Connections served at once: 1 to [`MAX_CONNECTIONS`], far above what a
    /// process's file descriptors allow.
    pub fn connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        parsed(d, "a whole number of connections", |text| {
            match text.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{text:?} is not a whole number from 1 to {MAX_CONNECTIONS}"
                )),
            }
        })
        .map(Some)
    }

    pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        parsed(d, "an IP address and port", parse_listen).map(Some)
    }

    pub fn reference<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        parsed(d, "a branch, tag or commit id", parse_ref).map(Some)
    }

    pub fn repo_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        parsed(d, "a directory inside the repository", parse_repo_path).map(Some)
    }

    pub fn marker<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        parsed(d, "a file name", parse_marker).map(Some)
    }

    pub fn env_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        parsed(d, "an environment variable name", parse_env_name).map(Some)
    }

    pub fn timezone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<chrono_tz::Tz>, D::Error> {
        parsed(d, "an IANA time zone name", parse_timezone).map(Some)
    }

    pub fn repo_url<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<crate::source::RepoUrl>, D::Error> {
        parsed(d, "a repository URL or path", crate::source::RepoUrl::parse).map(Some)
    }
}

pub(super) fn sha256<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    parsed(d, "64 lowercase hex digits", parse_sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["30", "s", "", "5 m", "-1s", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_nonzero_duration("0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "MiB", "1MB", "1.5MiB", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for good in ["default", "a", "prod-eu_1", &"x".repeat(63)] {
            assert!(check_name("namespace", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Prod",
            "a:b",
            "a*",
            "a b",
            "a.b",
            &"x".repeat(64),
        ] {
            assert!(check_name("namespace", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sink_urls_show_only_their_origin() {
        let url = SinkUrl::parse("https://hooks.slack.com/services/T/B/s3cr3t").unwrap();
        assert_eq!(url.to_string(), "https://hooks.slack.com/...");
        assert_eq!(url.host(), "hooks.slack.com");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(SinkUrl::parse("http://[::1]:8080/x").unwrap().host(), "::1");
        for bad in [
            "ftp://h/s3cr3t",
            "https:///s3cr3t",
            "hooks.slack.com/s3cr3t",
            "https://h/a b",
        ] {
            let err = SinkUrl::parse(bad).unwrap_err();
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn hashes() {
        assert!(parse_sha256(&"ab".repeat(32)).is_ok());
        for bad in ["", &"AB".repeat(32), &"ab".repeat(31), &"zz".repeat(32)] {
            assert!(parse_sha256(bad).is_err(), "{bad}");
        }
    }
}
