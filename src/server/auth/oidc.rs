//! Identity-provider tokens (`server.oidc`): a JWT is verified (signature by
//! one of the provider's keys, algorithm, `iss`, `aud`, `exp`, `nbf`), then
//! its claims are matched against the configured rules to give its grant.
//!
//! A token is refused with a [`JwtRefusal`], whose text says why without
//! quoting more than the token's own header fields; the token itself is never
//! logged or echoed. The identity logs know a token by is its `sub`.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::{Keys, KeysError, Lookup};
use crate::config::{GrantRule, OidcConfig};

/// The largest bearer token verified as a JWT: providers' are a few KiB, and
/// a bigger one costs base64 and JSON work for nothing.
const MAX_JWT_BYTES: usize = 16 << 10;

/// Header fields quoted in refusals are cut to this many characters.
const QUOTED_CHARS: usize = 40;

/// Why a JWT was refused: 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtRefusal {
    /// Not a JWT canopy can read (bad base64 or JSON in its header), or
    /// larger than [`MAX_JWT_BYTES`].
    Unreadable,
    /// `alg` is not one of the configured algorithms (`none` never is).
    Algorithm {
        alg: String,
        accepted: String,
    },
    /// No `kid` in the header.
    NoKeyId,
    /// `kid` is not in the provider's key set, even after reading it again.
    UnknownKey {
        kid: String,
        read_failed: bool,
    },
    /// The key named by `kid` is not for `alg` (an RSA key and ES256, an
    /// EC P-256 key and ES384, a key whose own `alg` differs).
    KeyMismatch {
        kid: String,
        alg: String,
    },
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim(String),
    BadClaim(String),
    /// Anything else the JWT library refuses (an unknown critical header...).
    Invalid,
}

impl fmt::Display for JwtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtRefusal::Unreadable => f.write_str(
                "the bearer token is not valid: it is no configured token, and not a readable JWT",
            ),
            JwtRefusal::Algorithm { alg, accepted } if alg.eq_ignore_ascii_case("none") => write!(
                f,
                "the JWT is unsigned (alg \"none\"): only {accepted} signatures are accepted"
            ),
            JwtRefusal::Algorithm { alg, accepted } => write!(
                f,
                "the JWT's algorithm {:?} is not accepted: only {accepted} are",
                quoted(alg)
            ),
            JwtRefusal::NoKeyId => {
                f.write_str("the JWT names no signing key (no kid in its header)")
            }
            JwtRefusal::UnknownKey { kid, read_failed } => {
                write!(
                    f,
                    "the JWT's signing key {:?} is not among the identity provider's keys",
                    quoted(kid)
                )?;
                if *read_failed {
                    f.write_str(" (which could not be read again just now)")?;
                }
                Ok(())
            }
            JwtRefusal::KeyMismatch { kid, alg } => write!(
                f,
                "the JWT's algorithm {alg} does not fit its signing key {:?}",
                quoted(kid)
            ),
            JwtRefusal::BadSignature => f.write_str("the JWT's signature is not valid"),
            JwtRefusal::Expired => f.write_str("the JWT has expired"),
            JwtRefusal::NotYetValid => f.write_str("the JWT is not valid yet (nbf)"),
            JwtRefusal::WrongIssuer => {
                f.write_str("the JWT was issued by another issuer than the configured one (iss)")
            }
            JwtRefusal::WrongAudience => {
                f.write_str("the JWT is meant for another audience than canopy's (aud)")
            }
            JwtRefusal::MissingClaim(claim) => write!(f, "the JWT has no {claim} claim"),
            JwtRefusal::BadClaim(claim) => write!(f, "the JWT's {claim} claim is malformed"),
            JwtRefusal::Invalid => f.write_str("the JWT is not valid"),
        }
    }
}

/// A header field as a refusal quotes it: the provider's, or an attacker's.
fn quoted(text: &str) -> String {
    text.chars().take(QUOTED_CHARS).collect()
}

/// A JWT that verified: who it is, and its claims, for the rules.
pub(super) struct Verified {
    pub subject: String,
    claims: Map<String, Value>,
}

impl Verified {
    /// The rules whose claim the token carries with the rule's value: equal to
    /// a string claim, or held by an array claim (`groups`).
    pub fn matching<'r>(&self, rules: &'r [GrantRule]) -> Vec<&'r GrantRule> {
        rules
            .iter()
            .filter(|rule| match self.claims.get(&rule.claim) {
                Some(Value::String(value)) => *value == rule.value,
                Some(Value::Array(values)) => values
                    .iter()
                    .any(|v| v.as_str() == Some(rule.value.as_str())),
                _ => false,
            })
            .collect()
    }
}

/// Verifies the provider's tokens. Shared by every request.
pub(super) struct Verifier {
    pub config: OidcConfig,
    keys: Keys,
}

/// The header fields read before verifying: `alg` as text, so that `none` or
/// an algorithm the JWT library does not know gets its own answer.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

impl Verifier {
    pub fn new(config: &OidcConfig) -> Result<Verifier, KeysError> {
        Ok(Verifier {
            keys: Keys::new(config)?,
            config: config.clone(),
        })
    }

    /// Reads the keys now (at start).
    pub async fn load_keys(&self) -> Result<usize, KeysError> {
        self.keys.load().await
    }

    /// The token's identity and claims, if it verifies.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtRefusal> {
        if token.len() > MAX_JWT_BYTES {
            return Err(JwtRefusal::Unreadable);
        }
        let header = token.split('.').next().unwrap_or_default();
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(JwtRefusal::Unreadable)?;
        let accepted = || {
            let names: Vec<String> = self
                .config
                .algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect();
            names.join(", ")
        };
        let algorithm = self
            .config
            .algorithms
            .iter()
            .copied()
            .find(|a| format!("{a:?}") == header.alg)
            .ok_or_else(|| JwtRefusal::Algorithm {
                alg: header.alg.clone(),
                accepted: accepted(),
            })?;
        let kid = header.kid.ok_or(JwtRefusal::NoKeyId)?;
        let key = match self.keys.get(&kid).await {
            Lookup::Found(key) => key,
            Lookup::Unknown { read_failed } => {
                return Err(JwtRefusal::UnknownKey { kid, read_failed });
            }
        };
        if !key.fits(algorithm) {
            return Err(JwtRefusal::KeyMismatch {
                kid,
                alg: format!("{algorithm:?}"),
            });
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.decoding,
            &self.validation(algorithm),
        )
        .map_err(|e| refusal(e.kind()))?;
        let subject = match data.claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            Some(_) => return Err(JwtRefusal::BadClaim("sub".to_owned())),
            None => return Err(JwtRefusal::MissingClaim("sub".to_owned())),
        };
        Ok(Verified {
            subject,
            claims: data.claims,
        })
    }

    /// One algorithm, the one the header names and the key fits: the JWT
    /// library then refuses any other.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(str::to_owned)
            .collect::<HashSet<_>>();
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation
    }
}

fn refusal(kind: &ErrorKind) -> JwtRefusal {
    match kind {
        ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
        ErrorKind::ExpiredSignature => JwtRefusal::Expired,
        ErrorKind::ImmatureSignature => JwtRefusal::NotYetValid,
        ErrorKind::InvalidIssuer => JwtRefusal::WrongIssuer,
        ErrorKind::InvalidAudience => JwtRefusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => JwtRefusal::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => JwtRefusal::BadClaim(claim.clone()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => JwtRefusal::Unreadable,
        _ => JwtRefusal::Invalid,
    }
}

/// Whether a bearer token has the shape of a JWT (JWS compact form): three
/// base64url parts. Only such a token is verified as one; anything else that
/// matches no configured token is simply unknown.
pub(super) fn looks_like_jwt(token: &[u8]) -> bool {
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let parts: Vec<&[u8]> = token.split(|b| *b == b'.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|part| part.iter().all(base64url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_base64url_parts_look_like_a_jwt() {
        assert!(looks_like_jwt(b"eyJh.eyJz.c2ln"));
        assert!(
            looks_like_jwt(b"eyJh.eyJz."),
            "an empty signature is still read as one"
        );
        for not in [
            &b"plain-token"[..],
            b"a.b",
            b"a.b.c.d",
            b".b.c",
            b"a..c",
            b"a.b+/.c",
            b"a.b.c=",
        ] {
            assert!(!looks_like_jwt(not), "{}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn refusals_quote_header_fields_cut_short() {
        let refusal = JwtRefusal::UnknownKey {
            kid: "k".repeat(500),
            read_failed: true,
        };
        let text = refusal.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            text.ends_with("(which could not be read again just now)"),
            "{text}"
        );
        let none = JwtRefusal::Algorithm {
            alg: "none".to_owned(),
            accepted: "RS256, ES256".to_owned(),
        };
        assert_eq!(
            none.to_string(),
            "the JWT is unsigned (alg \"none\"): only RS256, ES256 signatures are accepted"
        );
    }
}
