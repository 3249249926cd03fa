//! Who may call the API (DESIGN sections 7 and 8): bearer credentials, turned
//! into a [`Grant`] by axum extractors. A handler that takes [`SyncAccess`]
//! runs only for a credential with role `sync` (or `admin`) on some app, one
//! that takes [`ReadAccess`] for any credential, unless
//! `server.read_requires_token` is explicitly `false` (then for anyone).
//! Health, readiness and metrics take neither.
//!
//! Roles are ordered, `admin` ⊇ `sync` ⊇ `read`, and each comes with an app
//! scope (`apps: ["payments/**"]`) and the namespaces it is valid in: what a
//! request may do in this daemon's namespace is its [`Grant`], and a handler
//! asks [`Grant::check`] (or filters a list by [`Grant::allows`]) before it
//! touches an app. So a child's token reads its own app's artifacts and state,
//! and nothing else.
//!
//! Two kinds of credential, told apart safely: a presented token whose sha256
//! is a configured token's is that token (every digest is compared, each in
//! constant time, so neither the answer time nor any log line tells how much of
//! a guess was right); anything else with the shape of a JWT is verified as the
//! identity provider's (`oidc`), and its claims map to grants. A JWT is never
//! taken for a static token unless it is one, byte for byte. Credentials are
//! never logged or echoed: logs name a token by its configured name and a JWT
//! by its `sub`.

mod keys;
mod oidc;

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use hmac::digest::{CtOutput, Output};
use sha2::{Digest, Sha256};

use super::Shared;
use super::error::ApiError;
use crate::config::{ApiToken, AppScope, GrantRule, Role, ServerConfig};
use crate::layout::AppName;

pub use keys::KeysError;
pub use oidc::JwtRefusal;

/// Turns a request's credential into its grant, in one daemon's namespace.
/// Shared by every request.
pub struct Authenticator {
    tokens: Vec<ApiToken>,
    read_requires_token: bool,
    namespace: String,
    oidc: Option<oidc::Verifier>,
}

impl Authenticator {
    /// The credentials of `server`, for a daemon serving `namespace`. Nothing
    /// is read yet: see [`Authenticator::start`].
    pub fn new(server: &ServerConfig, namespace: &str) -> Result<Authenticator, KeysError> {
        Ok(Authenticator {
            tokens: server.tokens.clone(),
            read_requires_token: server.read_requires_token,
            namespace: namespace.to_owned(),
            oidc: server.oidc.as_ref().map(oidc::Verifier::new).transpose()?,
        })
    }

    /// Reads the identity provider's keys, if one is configured. A daemon
    /// stops on a key file it cannot read (a mistake to fix before it serves),
    /// but not on a provider it cannot reach: that is logged, and the keys are
    /// read again when a token needs them. Either way no token is let in
    /// without a key that verifies it.
    pub async fn start(&self) -> Result<(), KeysError> {
        let Some(verifier) = &self.oidc else {
            return Ok(());
        };
        match verifier.load_keys().await {
            Ok(keys) => {
                tracing::info!(source = %verifier.config.jwks, keys, "identity provider keys read");
                Ok(())
            }
            Err(error) if matches!(verifier.config.jwks, crate::config::JwksSource::Url(_)) => {
                tracing::warn!(error = %crate::error_chain(&error),
                    "identity provider keys could not be read: its tokens are refused until they are");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The grant, in this daemon's namespace, of the credential in `headers`.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Grant, Denied> {
        let header = headers.get(AUTHORIZATION).ok_or(Denied::Missing)?;
        let presented = bearer(header).ok_or(Denied::Malformed)?;
        if let Some(token) = find(&self.tokens, presented) {
            return Grant::of(token, &self.namespace);
        }
        let Some(verifier) = &self.oidc else {
            return Err(Denied::Unknown);
        };
        if !oidc::looks_like_jwt(presented) {
            return Err(Denied::Unknown);
        }
        // ASCII, as `looks_like_jwt` checked.
        let jwt = std::str::from_utf8(presented).map_err(|_| Denied::Unknown)?;
        let verified = verifier.verify(jwt).await.map_err(|refusal| {
            tracing::debug!(reason = %refusal, "identity provider token refused");
            Denied::Jwt(refusal)
        })?;
        let grant = Grant::of_claims(&verified, &verifier.config.grants, &self.namespace);
        match &grant {
            Ok(grant) => {
                tracing::debug!(client = grant.client(), "identity provider token accepted")
            }
            Err(denied) => tracing::debug!(client = %format!("oidc:{}", verified.subject), ?denied,
                "identity provider token has no grant here"),
        }
        grant
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credential (only when reads are explicitly open).
    Anonymous,
    /// A configured token, by its name.
    Token(String),
    /// An identity provider's token, by its `sub`.
    Subject(String),
}

impl Identity {
    /// The name logs and per-client limits know the caller by: a token's
    /// name, or `oidc:<sub>` (token names have no `:`, so the two never meet).
    fn client(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".to_owned(),
            Identity::Token(name) => name.clone(),
            Identity::Subject(sub) => format!("oidc:{sub}"),
        }
    }
}

/// How refusals name the caller: `token ci`, `subject "alice"`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("an anonymous request"),
            Identity::Token(name) => write!(f, "token {name}"),
            // Quoted: a subject is the provider's text, of any characters.
            Identity::Subject(sub) => write!(f, "subject {sub:?}"),
        }
    }
}

/// One thing a grant allows: `role` (and the roles below it) on `apps`.
#[derive(Debug, Clone)]
struct Allowance {
    role: Role,
    apps: AppScope,
}

/// Who is asking, and what they may do in this daemon's namespace: a
/// request's credential, resolved.
///
/// A grant is a union of allowances: it may do what a role needs on an app if
/// any one allowance has that role, or a higher one, and covers the app. No
/// allowance takes away what another gives.
#[derive(Debug, Clone)]
pub struct Grant {
    identity: Identity,
    client: String,
    allowances: Vec<Allowance>,
}

impl Grant {
    fn new(identity: Identity, allowances: Vec<Allowance>) -> Grant {
        Grant {
            client: identity.client(),
            identity,
            allowances,
        }
    }

    /// The name logs and per-client limits know the caller by.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Reads of every app, for anyone: reads are open.
    fn anonymous() -> Grant {
        let read = Allowance {
            role: Role::Read,
            apps: AppScope::all(),
        };
        Grant::new(Identity::Anonymous, vec![read])
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
        let allowance = Allowance {
            role: token.role,
            apps: token.apps.clone(),
        };
        Ok(Grant::new(identity, vec![allowance]))
    }

    /// What a verified JWT allows in `namespace`: the union of the grants of
    /// every rule its claims match whose namespaces hold `namespace`.
    fn of_claims(
        verified: &oidc::Verified,
        rules: &[GrantRule],
        namespace: &str,
    ) -> Result<Grant, Denied> {
        let identity = Identity::Subject(verified.subject.clone());
        let matching = verified.matching(rules);
        if matching.is_empty() {
            return Err(Denied::NoGrant {
                who: identity.to_string(),
            });
        }
        let allowances: Vec<Allowance> = matching
            .iter()
            .filter(|rule| rule.namespaces.allows(namespace))
            .map(|rule| Allowance {
                role: rule.role,
                apps: rule.apps.clone(),
            })
            .collect();
        if allowances.is_empty() {
            let mut valid_in: Vec<String> = Vec::new();
            for rule in &matching {
                let namespaces = rule.namespaces.to_string();
                if !valid_in.contains(&namespaces) {
                    valid_in.push(namespaces);
                }
            }
            return Err(Denied::WrongNamespace {
                who: identity.to_string(),
                namespace: namespace.to_owned(),
                valid_in: valid_in.join(", "),
            });
        }
        Ok(Grant::new(identity, allowances))
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
        let auth = &shared.auth;
        // Open reads still honour a presented token: its scope applies, and a
        // wrong one is refused rather than silently ignored.
        if !auth.read_requires_token && !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(ReadAccess(Grant::anonymous()));
        }
        let grant = auth.authenticate(&parts.headers).await?;
        grant.check_role(Role::Read)?;
        Ok(ReadAccess(grant))
    }
}

impl FromRequestParts<Shared> for SyncAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let grant = shared.auth.authenticate(&parts.headers).await?;
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
    /// A token no configured digest matches, and no JWT: 401.
    Unknown,
    /// A JWT that does not verify: 401, with the reason.
    Jwt(JwtRefusal),
    /// A verified JWT that no `oidc.grants` rule matches: 403.
    NoGrant { who: String },
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

    fn authenticator(tokens: Vec<ApiToken>) -> Authenticator {
        Authenticator {
            tokens,
            read_requires_token: true,
            namespace: "prod".to_owned(),
            oidc: None,
        }
    }

    #[tokio::test]
    async fn tokens_are_matched_by_digest() {
        let auth = authenticator(vec![
            token("dash", Role::Read, "r3ad"),
            token("ci", Role::Sync, "wr1te"),
        ]);
        let client = async |h: &str| {
            let grant = auth.authenticate(&headers(h)).await;
            grant.map(|g| g.client().to_owned())
        };
        assert_eq!(client("Bearer wr1te").await.as_deref(), Ok("ci"));
        assert_eq!(client("bearer  wr1te ").await.as_deref(), Ok("ci"));
        assert_eq!(client("Bearer r3ad").await.as_deref(), Ok("dash"));
        assert_eq!(client("Bearer wr1tE").await, Err(Denied::Unknown));
        // Without `oidc`, something shaped like a JWT is just unknown.
        assert_eq!(client("Bearer eyJh.eyJz.c2ln").await, Err(Denied::Unknown));
        assert_eq!(client("Bearer ").await, Err(Denied::Malformed));
        assert_eq!(client("Basic d3IxdGU=").await, Err(Denied::Malformed));
        assert_eq!(client("wr1te").await, Err(Denied::Malformed));
        let missing = auth.authenticate(&HeaderMap::new()).await;
        assert_eq!(missing.map(|g| g.client().to_owned()), Err(Denied::Missing));
        let none = authenticator(vec![])
            .authenticate(&headers("Bearer wr1te"))
            .await;
        assert_eq!(none.map(|g| g.client().to_owned()), Err(Denied::Unknown));
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
        let grant = Grant::new(
            Identity::Token("team".to_owned()),
            vec![
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
        );
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
        let scope = |yaml: &str| {
            crate::yaml::from_str::<NamespaceScope>(yaml)
                .unwrap()
                .expect("a document")
        };
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
        let auth = authenticator(vec![token("dash", Role::Read, "r3ad")]);
        for (value, status) in [
            ("Bearer s3cret-guess", StatusCode::UNAUTHORIZED),
            ("Token s3cret-guess", StatusCode::UNAUTHORIZED),
            ("Bearer r3ad", StatusCode::FORBIDDEN),
        ] {
            let denied = auth
                .authenticate(&headers(value))
                .await
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
