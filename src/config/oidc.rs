//! `server.oidc`: bearer tokens issued by an identity provider (OpenID Connect
//! ID or access tokens, JWTs), and the rules that map their claims (`sub`,
//! `groups`, ...) to the same role × apps × namespaces grants as static tokens.
//!
//! Only what the config says is read here, and nothing is fetched: the keys are
//! the server's business (`server::auth`). No setting is secret: the keys that
//! verify a token are public.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use serde::de::Deserializer;

use super::file::checked_map;
use super::model::Role;
use super::scope::{AppScope, NamespaceScope};
use super::values::{opt, parse_duration, parsed};
use crate::protocol::UrlParts;

/// The identity provider's tokens (`server.oidc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// A value the token's `aud` must hold (canopy's client id at the provider).
    pub audience: String,
    /// Where the provider's public keys (a JWK set) are read.
    pub jwks: JwksSource,
    /// The signature algorithms accepted; RSA and ECDSA only.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Keys older than this are fetched again before use (a removed key stops
    /// working within this time).
    pub jwks_max_age: Duration,
    /// At most one fetch per this interval, however many tokens name a key
    /// that is not known: an unknown `kid` cannot make canopy hammer the
    /// provider.
    pub jwks_min_interval: Duration,
    /// Claim rules; a token gets the union of the grants of every rule it
    /// matches.
    pub grants: Vec<GrantRule>,
}

/// A JWK set's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `https://` (or `http://` on a loopback address), fetched with a GET.
    Url(String),
    /// A JSON file holding the set, read again when it may have changed.
    File(PathBuf),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url(url) => f.write_str(url),
            JwksSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `{claim: groups, value: payments-team, role: sync, apps: [...], namespaces:
/// [...]}` or `{sub: <subject>, role: admin}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    pub claim: String,
    /// Matches a string claim equal to it, or an array claim holding it.
    pub value: String,
    pub role: Role,
    pub apps: AppScope,
    pub namespaces: NamespaceScope,
}

impl GrantRule {
    /// How the rule is named in messages: `groups=payments-team`.
    pub fn describe(&self) -> String {
        format!("{}={}", self.claim, self.value)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcFields {
    #[serde(deserialize_with = "issuer")]
    issuer: String,
    #[serde(deserialize_with = "audience")]
    audience: String,
    #[serde(default, deserialize_with = "jwks_url")]
    jwks_url: Option<String>,
    #[serde(default, deserialize_with = "opt::path")]
    jwks_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "algorithms")]
    algorithms: Option<Vec<Algorithm>>,
    #[serde(default, deserialize_with = "leeway")]
    leeway: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    jwks_max_age: Option<Duration>,
    #[serde(default, deserialize_with = "opt::duration")]
    jwks_min_interval: Option<Duration>,
    grants: Vec<GrantRule>,
}

impl<'de> Deserialize<'de> for OidcConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use super::defaults;
        checked_map(
            d,
            "a mapping with issuer, audience, jwks_url or jwks_file, and grants",
            |f: OidcFields| {
                let jwks = match (f.jwks_url, f.jwks_file) {
                    (Some(url), None) => JwksSource::Url(url),
                    (None, Some(path)) => JwksSource::File(path),
                    (Some(_), Some(_)) => {
                        return Err("set only one of `jwks_url` and `jwks_file`".into());
                    }
                    (None, None) => {
                        return Err("set `jwks_url` (the provider's JWK set, `jwks_uri` in its discovery document) or `jwks_file`".into());
                    }
                };
                if f.grants.is_empty() {
                    return Err("`grants` needs at least one rule: without one no token is allowed anything".into());
                }
                let jwks_max_age = f.jwks_max_age.unwrap_or(defaults::JWKS_MAX_AGE);
                let jwks_min_interval = f.jwks_min_interval.unwrap_or(defaults::JWKS_MIN_INTERVAL);
                if jwks_min_interval > jwks_max_age {
                    return Err(format!(
                        "jwks_min_interval ({jwks_min_interval:?}) is longer than jwks_max_age ({jwks_max_age:?})"
                    ));
                }
                Ok(OidcConfig {
                    issuer: f.issuer,
                    audience: f.audience,
                    jwks,
                    algorithms: f
                        .algorithms
                        .unwrap_or_else(|| defaults::OIDC_ALGORITHMS.to_vec()),
                    leeway: f.leeway.unwrap_or(defaults::OIDC_LEEWAY),
                    jwks_max_age,
                    jwks_min_interval,
                    grants: f.grants,
                })
            },
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFields {
    #[serde(default, deserialize_with = "claim_value")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "claim_name")]
    claim: Option<String>,
    #[serde(default, deserialize_with = "claim_value")]
    value: Option<String>,
    role: Role,
    #[serde(default)]
    apps: AppScope,
    #[serde(default)]
    namespaces: NamespaceScope,
}

impl<'de> Deserialize<'de> for GrantRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(d, "a grant rule mapping", |f: GrantFields| {
            let (claim, value) = match (f.sub, f.claim, f.value) {
                (Some(sub), None, None) => ("sub".to_owned(), sub),
                (None, Some(claim), Some(value)) => (claim, value),
                (Some(_), _, _) => {
                    return Err("set either `sub` or `claim` and `value`, not both".into());
                }
                (None, Some(_), None) => return Err("`claim` needs a `value` to match".into()),
                (None, None, Some(_)) => {
                    return Err("`value` needs the `claim` it is matched against".into());
                }
                (None, None, None) => {
                    return Err("set `sub` (one user) or `claim` and `value` (e.g. claim: groups, value: payments-team)".into());
                }
            };
            Ok(GrantRule {
                claim,
                value,
                role: f.role,
                apps: f.apps,
                namespaces: f.namespaces,
            })
        })
    }
}

fn issuer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parsed(d, "the issuer URL", |text| {
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "issuer {text:?} must be the provider's issuer URL, as its tokens' `iss` holds it"
            ));
        }
        Ok(text.to_owned())
    })
}

fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parsed(d, "the audience (canopy's client id)", |text| {
        if text.is_empty() {
            return Err("the audience must not be empty".to_owned());
        }
        Ok(text.to_owned())
    })
}

fn claim_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parsed(d, "a claim name", |text| {
        if text.is_empty() {
            return Err("a claim name must not be empty".to_owned());
        }
        Ok(text.to_owned())
    })
    .map(Some)
}

fn claim_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parsed(d, "a claim value", |text| {
        if text.is_empty() {
            return Err("a claim value must not be empty".to_owned());
        }
        Ok(text.to_owned())
    })
    .map(Some)
}

/// Clock skew: zero is allowed (a strict clock), at most 5 minutes.
fn leeway<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parsed(d, "a duration such as 60s", |text| {
        let leeway = parse_duration(text)?;
        if leeway > Duration::from_secs(300) {
            return Err(format!("leeway {text:?} must be at most 5m"));
        }
        Ok(leeway)
    })
    .map(Some)
}

/// The JWK set's URL: `https://`, or `http://` to a loopback address only (keys
/// fetched in clear over a network could be swapped on the way). No userinfo:
/// a JWK set is public.
pub(super) fn parse_jwks_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let parts = UrlParts::split(text)
        .ok_or_else(|| format!("JWKS URL {text:?} has no scheme: use https://"))?;
    if parts.userinfo.is_some() {
        return Err("the JWKS URL must not carry credentials: a JWK set is public".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("JWKS URL {text:?} contains whitespace"));
    }
    let host = parts.host();
    if host.is_empty() {
        return Err(format!("JWKS URL {text:?} has no host"));
    }
    match parts.scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(text.to_owned()),
        "http" if is_loopback(host) => Ok(text.to_owned()),
        "http" => Err(format!(
            "JWKS URL {text:?} must use https (http is accepted for a loopback address only)"
        )),
        scheme => Err(format!("JWKS URL {text:?} must use https, not {scheme:?}")),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn jwks_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parsed(d, "an https URL", parse_jwks_url).map(Some)
}

/// One accepted signature algorithm: RSA (RS*, PS*) or ECDSA (ES256, ES384).
/// `none` and the HMAC algorithms are refused: canopy verifies tokens with the
/// provider's public keys, and an HMAC "key" taken from a public key is the
/// classic algorithm-confusion forgery.
pub(super) fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    if text.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" means an unsigned token: it is never accepted".to_owned());
    }
    let algorithm = Algorithm::from_str(text).map_err(|_| {
        format!("unknown algorithm {text:?}: use RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384")
    })?;
    match algorithm.family() {
        AlgorithmFamily::Rsa | AlgorithmFamily::Ec => Ok(algorithm),
        AlgorithmFamily::Hmac => Err(format!(
            "algorithm {text} needs a shared secret: canopy verifies the provider's tokens with its public keys only (use RS256 or ES256)"
        )),
        _ => Err(format!(
            "algorithm {text} is not supported: use RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384"
        )),
    }
}

fn algorithms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Algorithm>>, D::Error> {
    use serde::de::{self, SeqAccess, Visitor};
    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<Algorithm>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of algorithms such as [RS256, ES256]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Algorithm>, A::Error> {
            let mut algorithms = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                let algorithm = parse_algorithm(&name).map_err(de::Error::custom)?;
                if !algorithms.contains(&algorithm) {
                    algorithms.push(algorithm);
                }
            }
            if algorithms.is_empty() {
                return Err(de::Error::custom("list at least one algorithm"));
            }
            Ok(algorithms)
        }
    }
    d.deserialize_seq(List).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_urls_are_https_or_loopback() {
        for good in [
            "https://idp.example.com/keys",
            "http://127.0.0.1:8080/keys",
            "http://[::1]:9/k",
            "http://localhost/k",
        ] {
            assert_eq!(parse_jwks_url(good).as_deref(), Ok(good));
        }
        for (bad, needle) in [
            ("http://idp.example.com/keys", "must use https"),
            ("ftp://idp/keys", "not \"ftp\""),
            ("idp.example.com/keys", "no scheme"),
            ("https://user:pw@idp/keys", "credentials"),
            ("https:///keys", "no host"),
        ] {
            let err = parse_jwks_url(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[test]
    fn only_public_key_algorithms_are_accepted() {
        for good in ["RS256", "RS512", "PS256", "ES256", "ES384"] {
            assert!(parse_algorithm(good).is_ok(), "{good}");
        }
        for (bad, needle) in [
            ("none", "unsigned"),
            ("None", "unsigned"),
            ("HS256", "shared secret"),
            ("HS512", "shared secret"),
            ("EdDSA", "not supported"),
            ("rs256", "unknown algorithm"),
        ] {
            let err = parse_algorithm(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
