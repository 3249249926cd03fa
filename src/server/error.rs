//! The one place that turns what went wrong into an HTTP answer: the status
//! code, the public message and the header some refusals carry, chosen in
//! [`ApiError::answer`]. Every error body is `{"error": "<message>"}`.
//!
//! Handlers, extractors and webhooks say what went wrong (a value of
//! [`ApiError`]); they never pick a status or write an error body themselves.
//! Public messages never hold a secret, a token or a server path: deeper
//! causes of internal failures stay in the server's log.

use std::time::Duration;

use axum::Json;
use axum::http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::Denied;
use super::webhooks::Unauthorized;
use crate::artifact::ArtifactError;
use crate::config::Role;
use crate::error_chain;
use crate::layout::AppName;
use crate::store::StoreError;

/// A request the server refuses or cannot serve.
#[derive(Debug)]
pub enum ApiError {
    /// A path, query or app name the server cannot use; the text says why.
    BadRequest(String),
    /// The store holds nothing about `app`.
    UnknownApp { app: AppName, namespace: String },
    /// `app` has no desired state to signal.
    NoDesiredState { app: AppName, namespace: String },
    /// No report was stored yet.
    NoReport { namespace: String },
    /// The path exists, for the `allow`ed method only.
    MethodNotAllowed { allow: &'static str },
    /// Redis failed or refused: the daemon cannot answer now, the request may be
    /// retried. The message never holds credentials (the store strips them).
    Store(StoreError),
    /// The bearer token is missing, wrong or too weak.
    Denied(Denied),
    /// An artifact could not be served.
    Artifact(ArtifactError),
    /// A webhook request was refused before it could trigger anything.
    Webhook(Refused),
}

/// Why a webhook request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The provider `provider` has no secret configured.
    NotConfigured {
        provider: &'static str,
    },
    TooLarge {
        max: u64,
    },
    /// The body did not arrive within `after`.
    Timeout {
        after: Duration,
    },
    /// Reading the body would go past the server's budget of unverified body
    /// bytes (`server.unverified_body_budget`).
    Busy,
    BadRequest(String),
    Unauthorized(Unauthorized),
}

/// What an error answers.
struct Answer {
    status: StatusCode,
    message: String,
    header: Option<(HeaderName, &'static str)>,
}

impl Answer {
    fn new(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
            header: None,
        }
    }

    fn with(self, name: HeaderName, value: &'static str) -> Answer {
        Answer {
            header: Some((name, value)),
            ..self
        }
    }
}

impl ApiError {
    /// The status, public message and extra header of every error.
    fn answer(&self) -> Answer {
        match self {
            ApiError::BadRequest(reason) => Answer::new(StatusCode::BAD_REQUEST, reason),
            ApiError::UnknownApp { app, namespace } => Answer::new(
                StatusCode::NOT_FOUND,
                format!("app {app} is not known in namespace {namespace}"),
            ),
            ApiError::NoDesiredState { app, namespace } => Answer::new(
                StatusCode::NOT_FOUND,
                format!("app {app} has no desired state in namespace {namespace}"),
            ),
            ApiError::NoReport { namespace } => Answer::new(
                StatusCode::NOT_FOUND,
                format!("no report stored yet in namespace {namespace}"),
            ),
            ApiError::MethodNotAllowed { allow } => Answer::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("this endpoint only answers {allow}"),
            )
            .with(ALLOW, allow),
            ApiError::Store(error) => {
                Answer::new(StatusCode::SERVICE_UNAVAILABLE, error_chain(error))
            }
            ApiError::Denied(denied) => denied_answer(denied),
            ApiError::Artifact(error) => {
                let answer = Answer::new(artifact_status(error), artifact_message(error));
                // Saturated, or this client's builds are: worth trying again
                // in a moment.
                if matches!(
                    answer.status,
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                ) {
                    answer.with(RETRY_AFTER, "1")
                } else {
                    answer
                }
            }
            ApiError::Webhook(refused) => refused_answer(refused),
        }
    }
}

fn denied_answer(denied: &Denied) -> Answer {
    let unauthorized = |message: &str| {
        Answer::new(StatusCode::UNAUTHORIZED, message).with(WWW_AUTHENTICATE, "Bearer")
    };
    match denied {
        Denied::Missing => {
            unauthorized("this endpoint needs an Authorization: Bearer <token> header")
        }
        Denied::Malformed => unauthorized("the Authorization header must be Bearer <token>"),
        Denied::Unknown => unauthorized("the bearer token is not valid"),
        Denied::Jwt(refusal) => unauthorized(&refusal.to_string()),
        Denied::NoGrant { who } => Answer::new(
            StatusCode::FORBIDDEN,
            format!(
                "{who} may not do anything here: no rule of server.oidc.grants matches its claims"
            ),
        ),
        Denied::WrongNamespace {
            who,
            namespace,
            valid_in,
        } => Answer::new(
            StatusCode::FORBIDDEN,
            format!("{who} is not valid in namespace {namespace}: it is valid in {valid_in}"),
        ),
        Denied::Forbidden { who, needed } => Answer::new(
            StatusCode::FORBIDDEN,
            format!("{who} may not do this: it needs role {needed}"),
        ),
        Denied::OutOfScope {
            who,
            needed,
            app,
            scope,
        } => Answer::new(
            StatusCode::FORBIDDEN,
            format!(
                "{who} may not {} app {app}: its {needed} scope is {scope}",
                verb(*needed)
            ),
        ),
        Denied::NotEveryApp { who, needed, scope } => Answer::new(
            StatusCode::FORBIDDEN,
            format!(
                "{who} may not {} this: the answer covers every app and its {needed} scope is {scope}",
                verb(*needed)
            ),
        ),
    }
}

/// What role `needed` lets a caller do to an app, for messages.
fn verb(needed: Role) -> &'static str {
    match needed {
        Role::Read => "read",
        Role::Sync => "sync",
        Role::Admin => "administer",
    }
}

/// Also what the artifact handler logs by: a 5xx is the server's fault.
pub(super) fn artifact_status(error: &ArtifactError) -> StatusCode {
    use ArtifactError::*;
    match error {
        BadRevision(_) => StatusCode::BAD_REQUEST,
        NoDesiredState { .. }
        | UnknownRevision { .. }
        | NotACommit { .. }
        | NoApp { .. }
        | Invalid { .. } => StatusCode::NOT_FOUND,
        Busy | Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ClientBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
        Mismatch { .. }
        | BadPath { .. }
        | StoredDigest { .. }
        | Unstable { .. }
        | TooLarge { .. }
        | Mirror(_)
        | Read { .. }
        | Tar(_)
        | Join(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Deeper causes stay in the server's log: Git and I/O errors name the server's
/// own paths.
fn artifact_message(error: &ArtifactError) -> String {
    match error {
        // A read error's own text says what is wrong with the file (a cap, a
        // symlink target) and names no server path; its causes might.
        ArtifactError::Read { source, .. } => format!("{error}: {source}"),
        _ => error.to_string(),
    }
}

fn refused_answer(refused: &Refused) -> Answer {
    match refused {
        Refused::NotConfigured { provider } => Answer::new(
            StatusCode::NOT_FOUND,
            format!("webhook {provider} is not configured"),
        ),
        Refused::TooLarge { max } => Answer::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {max} bytes"),
        ),
        Refused::Timeout { after } => Answer::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {}", seconds(*after)),
        ),
        // Others' bodies fill the budget; it frees as they are verified or
        // time out.
        Refused::Busy => Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many webhook bodies are being received at once; retry later",
        )
        .with(RETRY_AFTER, "1"),
        Refused::BadRequest(reason) => Answer::new(StatusCode::BAD_REQUEST, reason),
        // A forge does not answer challenges: no `WWW-Authenticate`.
        Refused::Unauthorized(reason) => Answer::new(StatusCode::UNAUTHORIZED, reason.to_string()),
    }
}

/// `10 s`, or `250 ms` below a second.
fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let Answer {
            status,
            message,
            header,
        } = self.answer();
        if let ApiError::Store(_) = self {
            tracing::warn!(error = %message, "API request failed in Redis");
        }
        let mut response = (status, Json(Body { error: message })).into_response();
        if let Some((name, value)) = header {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::Store(error)
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        ApiError::Denied(denied)
    }
}

impl From<ArtifactError> for ApiError {
    fn from(error: ArtifactError) -> ApiError {
        ApiError::Artifact(error)
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> ApiError {
        ApiError::Webhook(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("a small body");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn every_error_body_is_one_error_field() {
        let app = AppName::parse("payments/api").expect("valid name");
        let response = ApiError::UnknownApp {
            app,
            namespace: "prod".to_owned(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body(response).await,
            r#"{"error":"app payments/api is not known in namespace prod"}"#
        );
        let response = ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "POST");
    }

    #[test]
    fn artifact_errors_say_whose_fault_it_is() {
        let app = || AppName::parse("payments").expect("valid name");
        let revision = || "a".repeat(40);
        let status = |error| ApiError::Artifact(error).answer().status;
        assert_eq!(
            status(ArtifactError::BadRevision("main".to_owned())),
            StatusCode::BAD_REQUEST
        );
        for not_found in [
            ArtifactError::NoApp {
                app: app(),
                revision: revision(),
            },
            ArtifactError::UnknownRevision {
                revision: revision(),
            },
            ArtifactError::NotACommit {
                revision: revision(),
            },
            ArtifactError::Invalid {
                app: app(),
                revision: revision(),
            },
        ] {
            assert_eq!(status(not_found), StatusCode::NOT_FOUND);
        }
        assert_eq!(
            status(ArtifactError::Mismatch {
                app: app(),
                path: "service.yaml".to_owned(),
                revision: revision(),
            }),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        for (busy, status) in [
            (ArtifactError::Busy, StatusCode::SERVICE_UNAVAILABLE),
            (
                ArtifactError::ClientBusy {
                    client: "payments-api".to_owned(),
                    max: 1,
                },
                StatusCode::TOO_MANY_REQUESTS,
            ),
        ] {
            let answer = ApiError::Artifact(busy).answer();
            assert_eq!(answer.status, status);
            assert_eq!(answer.header, Some((RETRY_AFTER, "1")));
        }
    }
}
