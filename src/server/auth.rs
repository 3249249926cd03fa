//! Bearer tokens for the API (DESIGN sections 7 and 8), as axum extractors: a
//! handler that takes [`SyncAccess`] runs only for a credential with role
//! `sync` (or `admin`) on some app, one that takes [`ReadAccess`] for any
//! credential, unless `server.read_requires_token` is explicitly `false` (then
//! for anyone). Health, readiness and metrics take neither.
//!
//! Roles are ordered, `admin` ⊇ `sync` ⊇ `read`, and each comes with an app
//! scope (`apps: ["payments/**"]`): what a request may do is its [`Grant`], and
//! a handler asks [`Grant::check`] (or filters a list by [`Grant::allows`])
//! before it touches an app. So a child's token reads its own app's artifacts
//! and state, and nothing else.
//!
//! The config holds only each token's sha256: a presented token is hashed and
//! compared with every configured digest in constant time, so neither the answer
//! time nor any log line tells how much of a guess was right. The token itself is
//! never logged or echoed; only the configured token's name is, for audit.

use std::fmt;

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

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credential (only when reads are explicitly open).
    Anonymous,
    /// A configured token, by its name.
    Token(String),
}

impl Identity {
    /// The name logs and per-client limits know the caller by.
    fn client(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::Token(name) => name,
        }
    }
}

/// How refusals name the caller: `token ci`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("an anonymous request"),
            Identity::Token(name) => write!(f, "token {name}"),
        }
    }
}

/// One thing a grant allows: `role` (and the roles below it) on `apps`.
#[derive(Debug, Clone)]
struct Allowance {
    role: Role,
    apps: AppScope,
}

/// Who is asking, and what they may do: a request's credential, resolved.
///
/// A grant is a union of allowances: it may do what a role needs on an app if
/// any one allowance has that role, or a higher one, and covers the app.
#[derive(Debug, Clone)]
pub struct Grant {
    identity: Identity,
    allowances: Vec<Allowance>,
}

impl Grant {
    /// The name logs and per-client limits know the caller by.
    pub fn client(&self) -> &str {
        self.identity.client()
    }

    /// Reads of every app, for anyone: reads are open.
    fn anonymous() -> Grant {
        Grant {
            identity: Identity::Anonymous,
            allowances: vec![Allowance {
                role: Role::Read,
                apps: AppScope::all(),
            }],
        }
    }

    /// What `token` allows in `namespace`: a token not valid there is refused
    /// as a whole, whatever it could do elsewhere.
    fn of(token: &ApiToken, namespace: &str) -> Result<Grant, Denied> {
        let identity = Identity::Token(token.name.clone());
        if !token.namespaces.allows(namespace) {
            return Err(Denied::WrongNamespace {
                who: identity.to_string(),
                namespace: namespace.to_owned(),
                valid_in: token.namespaces.to_string(),
            });
        }
        Ok(Grant {
            identity,
            allowances: vec![Allowance {
                role: token.role,
                apps: token.apps.clone(),
            }],
        })
    }

    /// The allowances with at least role `needed`.
    fn with(&self, needed: Role) -> impl Iterator<Item = &Allowance> {
        self.allowances.iter().filter(move |a| a.role >= needed)
    }

    /// May it do what `needed` allows on `app`?
    pub fn may(&self, needed: Role, app: &AppName) -> bool {
        self.with(needed).any(|a| a.apps.allows(app))
    }

    /// May it read `app`? (What a list of apps is filtered by.)
    pub fn allows(&self, app: &AppName) -> bool {
        self.may(Role::Read, app)
    }

    /// `Ok` if the grant allows `needed` on `app`, else a 403 naming the caller
    /// and its scope for that role.
    pub fn check(&self, needed: Role, app: &AppName) -> Result<(), ApiError> {
        if self.may(needed, app) {
            return Ok(());
        }
        self.check_role(needed)?;
        Err(ApiError::Denied(Denied::OutOfScope {
            who: self.identity.to_string(),
            needed,
            app: app.clone(),
            scope: self.scope(needed),
        }))
    }

    /// `Ok` if the grant allows `needed` on every app (what a whole-namespace
    /// answer, such as the drift report, needs): one allowance must be
    /// unscoped, since no set of patterns can be known to cover apps to come.
    pub fn check_all(&self, needed: Role) -> Result<(), ApiError> {
        if self.with(needed).any(|a| a.apps.is_all()) {
            return Ok(());
        }
        self.check_role(needed)?;
        Err(ApiError::Denied(Denied::NotEveryApp {
            who: self.identity.to_string(),
            needed,
            scope: self.scope(needed),
        }))
    }

    /// `Ok` if the grant allows `needed` on some app: what an action that
    /// names no app (`refresh`) needs.
    pub fn check_role(&self, needed: Role) -> Result<(), Denied> {
        if self.with(needed).next().is_some() {
            return Ok(());
        }
        Err(Denied::Forbidden {
            who: self.identity.to_string(),
            needed,
        })
    }

    /// The apps the grant allows `needed` on, as the config wrote them.
    fn scope(&self, needed: Role) -> String {
        let mut patterns: Vec<String> = Vec::new();
        for allowance in self.with(needed) {
            let scope = allowance.apps.to_string();
            if !patterns.contains(&scope) {
                patterns.push(scope);
            }
        }
        patterns.join(", ")
    }
}

/// The request may read the API, within its grant.
#[derive(Debug)]
pub struct ReadAccess(pub Grant);

/// The request's credential has role `sync` (or above) on some app: it may ask
/// for a refresh, or a sync of the apps its grant covers for `sync`.
#[derive(Debug)]
pub struct SyncAccess(pub Grant);

impl FromRequestParts<Shared> for ReadAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let server = &shared.settings.server;
        // Open reads still honour a presented token: its scope applies, and a
        // wrong one is refused rather than silently ignored.
        if !server.read_requires_token && !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(ReadAccess(Grant::anonymous()));
        }
        let grant = authenticate(&parts.headers, &server.tokens, shared.store.namespace())?;
        grant.check_role(Role::Read)?;
        Ok(ReadAccess(grant))
    }
}

impl FromRequestParts<Shared> for SyncAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let tokens = &shared.settings.server.tokens;
        let grant = authenticate(&parts.headers, tokens, shared.store.namespace())?;
        grant.check_role(Role::Sync)?;
        Ok(SyncAccess(grant))
    }
}

/// Why a request was refused (answered by [`ApiError::Denied`]). `who` is how
/// the caller is named ([`Identity`]'s text), never its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header: 401.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`: 401.
    Malformed,
    /// A token no configured digest matches: 401.
    Unknown,
    /// A known caller not valid in the daemon's `namespace`: 403.
    WrongNamespace {
        who: String,
        namespace: String,
        valid_in: String,
    },
    /// A known caller without role `needed` on any app: 403.
    Forbidden { who: String, needed: Role },
    /// A known caller whose scope for role `needed` does not cover `app`: 403.
    OutOfScope {
        who: String,
        needed: Role,
        app: AppName,
        scope: String,
    },
    /// A caller whose scope for `needed` is not every app asked for an answer
    /// that covers every app: 403.
    NotEveryApp {
        who: String,
        needed: Role,
        scope: String,
    },
}

/// The grant, in the daemon's `namespace`, of the credential presented in
/// `headers`.
fn authenticate(
    headers: &HeaderMap,
    tokens: &[ApiToken],
    namespace: &str,
) -> Result<Grant, Denied> {
    let header = headers.get(AUTHORIZATION).ok_or(Denied::Missing)?;
    let presented = bearer(header).ok_or(Denied::Malformed)?;
    let token = find(tokens, presented).ok_or(Denied::Unknown)?;
    Grant::of(token, namespace)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamespaceScope;
    use axum::http::StatusCode;
    use axum::http::header::WWW_AUTHENTICATE;
    use axum::response::IntoResponse;

    fn token(name: &str, role: Role, secret: &str) -> ApiToken {
        ApiToken {
            name: name.to_owned(),
            role,
            sha256: Sha256::digest(secret.as_bytes()).into(),
            apps: AppScope::all(),
            namespaces: NamespaceScope::default(),
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

    fn app(name: &str) -> AppName {
        AppName::parse(name).expect("a valid name")
    }

    #[test]
    fn tokens_are_matched_by_digest() {
        let tokens = [
            token("dash", Role::Read, "r3ad"),
            token("ci", Role::Sync, "wr1te"),
        ];
        let name =
            |h: &str| authenticate(&headers(h), &tokens, "prod").map(|g| g.client().to_owned());
        assert_eq!(name("Bearer wr1te").as_deref(), Ok("ci"));
        assert_eq!(name("bearer  wr1te ").as_deref(), Ok("ci"));
        assert_eq!(name("Bearer r3ad").as_deref(), Ok("dash"));
        assert_eq!(name("Bearer wr1tE"), Err(Denied::Unknown));
        assert_eq!(name("Bearer "), Err(Denied::Malformed));
        assert_eq!(name("Basic d3IxdGU="), Err(Denied::Malformed));
        assert_eq!(name("wr1te"), Err(Denied::Malformed));
        assert_eq!(
            authenticate(&HeaderMap::new(), &tokens, "prod").map(|g| g.client().to_owned()),
            Err(Denied::Missing)
        );
        assert_eq!(
            authenticate(&headers("Bearer wr1te"), &[], "prod").map(|g| g.client().to_owned()),
            Err(Denied::Unknown)
        );
    }

    /// Roles are ordered: each allows what the ones below it allow, and no more.
    #[test]
    fn each_role_includes_the_roles_below_it() {
        let api = app("payments/api");
        for (role, allowed) in [
            (Role::Read, [true, false, false]),
            (Role::Sync, [true, true, false]),
            (Role::Admin, [true, true, true]),
        ] {
            let grant = Grant::of(&token("t", role, "x"), "prod").unwrap();
            for (needed, allowed) in [Role::Read, Role::Sync, Role::Admin]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(grant.may(needed, &api), allowed, "{role} for {needed}");
                assert_eq!(
                    grant.check_role(needed).is_ok(),
                    allowed,
                    "{role} for {needed}"
                );
            }
        }
        let read = Grant::of(&token("dash", Role::Read, "x"), "prod").unwrap();
        assert_eq!(
            read.check_role(Role::Sync),
            Err(Denied::Forbidden {
                who: "token dash".to_owned(),
                needed: Role::Sync
            })
        );
    }

    /// Several allowances combine as a union per (role, app): reads of every
    /// app and syncs of the payments apps allow both, and nothing else.
    #[test]
    fn allowances_combine_as_a_union() {
        let grant = Grant {
            identity: Identity::Token("team".to_owned()),
            allowances: vec![
                Allowance {
                    role: Role::Read,
                    apps: AppScope::all(),
                },
                Allowance {
                    role: Role::Sync,
                    apps: AppScope::of(&["payments/**"]).unwrap(),
                },
                Allowance {
                    role: Role::Sync,
                    apps: AppScope::of(&["payments"]).unwrap(),
                },
            ],
        };
        assert!(grant.may(Role::Read, &app("search")));
        assert!(grant.may(Role::Sync, &app("payments")));
        assert!(grant.may(Role::Sync, &app("payments/db")));
        assert!(!grant.may(Role::Sync, &app("search")));
        assert!(!grant.may(Role::Admin, &app("payments")));
        assert!(grant.check_all(Role::Read).is_ok());
        let Err(ApiError::Denied(denied)) = grant.check(Role::Sync, &app("search")) else {
            panic!("search is out of the sync scope");
        };
        assert_eq!(
            denied,
            Denied::OutOfScope {
                who: "token team".to_owned(),
                needed: Role::Sync,
                app: app("search"),
                scope: "payments/**, payments".to_owned(),
            }
        );
        let Err(ApiError::Denied(denied)) = grant.check_all(Role::Sync) else {
            panic!("no unscoped sync");
        };
        assert!(matches!(denied, Denied::NotEveryApp { .. }), "{denied:?}");
        let Err(ApiError::Denied(denied)) = grant.check(Role::Admin, &app("payments")) else {
            panic!("no admin");
        };
        assert!(matches!(denied, Denied::Forbidden { .. }), "{denied:?}");
    }

    #[test]
    fn a_token_is_refused_outside_its_namespaces() {
        let scope = |yaml: &str| serde_yaml::from_str::<NamespaceScope>(yaml).unwrap();
        let prod = ApiToken {
            namespaces: scope("[prod, prod-eu]"),
            ..token("deploy", Role::Sync, "x")
        };
        assert!(Grant::of(&prod, "prod").is_ok() && Grant::of(&prod, "prod-eu").is_ok());
        assert_eq!(
            Grant::of(&prod, "staging").map(|g| g.client().to_owned()),
            Err(Denied::WrongNamespace {
                who: "token deploy".to_owned(),
                namespace: "staging".to_owned(),
                valid_in: "prod, prod-eu".to_owned(),
            })
        );
        let every = ApiToken {
            namespaces: scope("['*']"),
            ..token("ops", Role::Admin, "x")
        };
        assert!(Grant::of(&every, "staging").is_ok());
        assert!(Grant::of(&token("own", Role::Read, "x"), "anything").is_ok());
    }

    #[tokio::test]
    async fn a_refusal_never_echoes_the_token() {
        let tokens = [token("dash", Role::Read, "r3ad")];
        for (value, status) in [
            ("Bearer s3cret-guess", StatusCode::UNAUTHORIZED),
            ("Token s3cret-guess", StatusCode::UNAUTHORIZED),
            ("Bearer r3ad", StatusCode::FORBIDDEN),
        ] {
            let denied = authenticate(&headers(value), &tokens, "prod")
                .and_then(|grant| grant.check_role(Role::Sync))
                .expect_err("refused");
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
