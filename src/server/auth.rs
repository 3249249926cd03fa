//! Bearer tokens for the API (DESIGN sections 7 and 8), as axum extractors: a
//! handler that takes [`WriteAccess`] runs only for a `write` token, one that
//! takes [`ReadAccess`] only for a `read` or `write` token, unless
//! `server.read_requires_token` is explicitly `false` (then for anyone). Health,
//! readiness and metrics take neither.
//!
//! A token may be scoped to some apps (`apps: ["payments/**"]`): both accesses
//! carry the scope, and a handler asks [`ReadAccess::check`] (or filters a list
//! by [`ReadAccess::allows`]) before it touches an app. So a child's token reads
//! its own app's artifacts and state, and nothing else.
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
use crate::config::{ApiToken, AppScope, Role};
use crate::layout::AppName;

/// Who is asking, and for which apps: what a request's credential grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The configured name of the token used; `None` for an anonymous read
    /// (only when reads are explicitly open).
    pub token: Option<String>,
    pub apps: AppScope,
}

impl Grant {
    /// The name logs and per-client limits know the caller by.
    pub fn client(&self) -> &str {
        self.token.as_deref().unwrap_or("anonymous")
    }

    pub fn allows(&self, app: &AppName) -> bool {
        self.apps.allows(app)
    }

    /// `Ok` if the grant covers `app`, else a 403 naming the token and its scope.
    pub fn check(&self, app: &AppName) -> Result<(), ApiError> {
        if self.allows(app) {
            return Ok(());
        }
        Err(ApiError::Denied(Denied::OutOfScope {
            token: self.client().to_owned(),
            app: app.clone(),
            scope: self.apps.to_string(),
        }))
    }

    /// `Ok` if the grant covers every app (what a whole-namespace answer, such
    /// as the drift report, needs).
    pub fn check_all(&self) -> Result<(), ApiError> {
        if self.apps.is_all() {
            return Ok(());
        }
        Err(ApiError::Denied(Denied::NotEveryApp {
            token: self.client().to_owned(),
            scope: self.apps.to_string(),
        }))
    }

    fn of(token: &ApiToken) -> Grant {
        Grant {
            token: Some(token.name.clone()),
            apps: token.apps.clone(),
        }
    }
}

/// The request may read the API, within its grant.
#[derive(Debug)]
pub struct ReadAccess(pub Grant);

/// The request carries a `write` token: it may ask for a refresh, or a sync of
/// the apps its grant covers.
#[derive(Debug)]
pub struct WriteAccess(pub Grant);

impl FromRequestParts<Shared> for ReadAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let server = &shared.settings.server;
        // Open reads still honour a presented token: its scope applies, and a
        // wrong one is refused rather than silently ignored.
        if !server.read_requires_token && !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(ReadAccess(Grant {
                token: None,
                apps: AppScope::all(),
            }));
        }
        let token = authorize(&parts.headers, &server.tokens, Role::Read)?;
        Ok(ReadAccess(Grant::of(token)))
    }
}

impl FromRequestParts<Shared> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let token = authorize(&parts.headers, &shared.settings.server.tokens, Role::Write)?;
        Ok(WriteAccess(Grant::of(token)))
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
    /// A known token whose app scope does not cover `app`: 403.
    OutOfScope {
        token: String,
        app: AppName,
        scope: String,
    },
    /// A scoped token asked for an answer that covers every app: 403.
    NotEveryApp { token: String, scope: String },
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
            apps: AppScope::all(),
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
