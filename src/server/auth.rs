//! Bearer tokens for the API (DESIGN sections 7 and 8), as axum extractors: a
//! handler that takes [`WriteAccess`] runs only for a `write` token, one that
//! takes [`ReadAccess`] only for a `read` or `write` token when
//! `server.read_requires_token` is set (else for anyone). Health, readiness and
//! metrics take neither.
//!
//! The config holds only each token's sha256: a presented token is hashed and
//! compared with every configured digest in constant time, so neither the answer
//! time nor any log line tells how much of a guess was right. The token itself is
//! never logged or echoed; only the configured token's name is, for audit.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use hmac::digest::{CtOutput, Output};
use sha2::{Digest, Sha256};

use super::Shared;
use super::error::ApiError;
use crate::config::{ApiToken, Role};

/// The request may read the API.
#[derive(Debug)]
pub struct ReadAccess;

/// The request carries a `write` token: it may ask for a refresh or a sync.
#[derive(Debug)]
pub struct WriteAccess {
    /// The configured name of the token used, for audit logs.
    pub token: String,
}

impl FromRequestParts<Shared> for ReadAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let server = &shared.settings.server;
        if server.read_requires_token {
            authorize(&parts.headers, &server.tokens, Role::Read)?;
        }
        Ok(ReadAccess)
    }
}

impl FromRequestParts<Shared> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let token = authorize(&parts.headers, &shared.settings.server.tokens, Role::Write)?;
        Ok(WriteAccess {
            token: token.name.clone(),
        })
    }
}

/// Why a request was refused (answered by [`ApiError::Denied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header: 401.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`: 401.
    Malformed,
    /// A token no configured digest matches: 401.
    Unknown,
    /// A known token whose role is too weak: 403.
    Forbidden { token: String, needed: Role },
}

/// The configured token presented in `headers`, if its role allows `needed`.
fn authorize<'t>(
    headers: &HeaderMap,
    tokens: &'t [ApiToken],
    needed: Role,
) -> Result<&'t ApiToken, Denied> {
    let header = headers.get(AUTHORIZATION).ok_or(Denied::Missing)?;
    let presented = bearer(header).ok_or(Denied::Malformed)?;
    let token = find(tokens, presented).ok_or(Denied::Unknown)?;
    if allows(token.role, needed) {
        Ok(token)
    } else {
        Err(Denied::Forbidden {
            token: token.name.clone(),
            needed,
        })
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 9110).
fn bearer(header: &HeaderValue) -> Option<&[u8]> {
    let value = header.as_bytes();
    let (scheme, token) = value.split_at_checked(b"Bearer ".len())?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"Bearer ") && !token.is_empty()).then_some(token)
}

/// The configured token whose digest is the presented token's. Every digest is
/// compared, each in constant time (`CtOutput`'s equality), whatever matched.
fn find<'t>(tokens: &'t [ApiToken], presented: &[u8]) -> Option<&'t ApiToken> {
    let presented = CtOutput::<Sha256>::new(Sha256::digest(presented));
    tokens.iter().fold(None, |found, token| {
        let matches = CtOutput::<Sha256>::new(Output::<Sha256>::from(token.sha256)) == presented;
        found.or(matches.then_some(token))
    })
}

fn allows(role: Role, needed: Role) -> bool {
    match needed {
        Role::Read => true,
        Role::Write => role == Role::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::http::header::WWW_AUTHENTICATE;
    use axum::response::IntoResponse;

    fn token(name: &str, role: Role, secret: &str) -> ApiToken {
        ApiToken {
            name: name.to_owned(),
            role,
            sha256: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(value).expect("valid header"),
        );
        headers
    }

    #[test]
    fn tokens_are_matched_by_digest_and_role() {
        let tokens = [
            token("dash", Role::Read, "r3ad"),
            token("ci", Role::Write, "wr1te"),
        ];
        let name =
            |h: &str, needed| authorize(&headers(h), &tokens, needed).map(|t| t.name.as_str());
        assert_eq!(name("Bearer wr1te", Role::Write), Ok("ci"));
        assert_eq!(name("bearer  wr1te ", Role::Read), Ok("ci"));
        assert_eq!(name("Bearer r3ad", Role::Read), Ok("dash"));
        assert_eq!(
            name("Bearer r3ad", Role::Write),
            Err(Denied::Forbidden {
                token: "dash".to_owned(),
                needed: Role::Write
            })
        );
        assert_eq!(name("Bearer wr1tE", Role::Read), Err(Denied::Unknown));
        assert_eq!(name("Bearer ", Role::Read), Err(Denied::Malformed));
        assert_eq!(name("Basic d3IxdGU=", Role::Read), Err(Denied::Malformed));
        assert_eq!(name("wr1te", Role::Read), Err(Denied::Malformed));
        assert_eq!(
            authorize(&HeaderMap::new(), &tokens, Role::Read).map(|t| t.name.as_str()),
            Err(Denied::Missing)
        );
        assert_eq!(
            authorize(&headers("Bearer wr1te"), &[], Role::Read).map(|t| t.name.as_str()),
            Err(Denied::Unknown)
        );
    }

    #[tokio::test]
    async fn a_refusal_never_echoes_the_token() {
        let tokens = [token("dash", Role::Read, "r3ad")];
        for (value, status) in [
            ("Bearer s3cret-guess", StatusCode::UNAUTHORIZED),
            ("Token s3cret-guess", StatusCode::UNAUTHORIZED),
            ("Bearer r3ad", StatusCode::FORBIDDEN),
        ] {
            let denied = authorize(&headers(value), &tokens, Role::Write).expect_err("refused");
            let response = ApiError::Denied(denied).into_response();
            assert_eq!(response.status(), status, "{value}");
            let challenge = response.headers().get(WWW_AUTHENTICATE);
            assert_eq!(
                challenge.is_some(),
                status == StatusCode::UNAUTHORIZED,
                "{value}"
            );
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .expect("a small body");
            let body = String::from_utf8_lossy(&body);
            assert!(body.starts_with(r#"{"error":""#), "{body}");
            assert!(!body.contains("s3cret") && !body.contains("r3ad"), "{body}");
        }
    }
}
