//! The probes and the JSON API (DESIGN section 7): `/healthz`, `/readyz`,
//! `/metrics`, `/api/v1/apps...`, `/api/v1/report` and `POST /api/v1/refresh`.
//!
//! Reads are the views of `crate::view`, the same values `canopy status`
//! and `canopy diff` print. The only writes are asking the loop to poll now
//! (`refresh`) and re-signalling an app's current desired state (`sync`): the API
//! never changes desired state. Who may call what is [`super::auth`]'s job.
//! Errors are [`ApiError`]s: `{"error": "<message>"}` with their status.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::auth::{ReadAccess, SyncAccess};
use super::error::ApiError;
use super::{HealthState, KindLabel, Shared};
use crate::config::Role;
use crate::error_chain;
use crate::layout::AppName;
use crate::view;

/// How long `/readyz` waits for Redis to answer a PING: a probe must answer fast,
/// and a Redis that takes longer is not one to send traffic through.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The Prometheus text format's content type.
/// prometheus-client writes OpenMetrics text (`# EOF`, `_total` samples of a
/// family declared without it): say so, so Prometheus parses it as such.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/apps", get(list_apps))
        // App names contain `/`: one wildcard, whose last segment may name an
        // action (see `Action::split`).
        .route("/api/v1/apps/{*rest}", get(get_app).post(post_app))
        .route("/api/v1/refresh", post(refresh))
        .route("/api/v1/report", get(latest_report))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Readiness {
    // Serialized only: `flatten`'s poor error messages are a deserializing problem.
    #[serde(flatten)]
    health: HealthState,
    /// `ok`, or why Redis did not answer.
    redis: String,
}

/// Ready after the first successful cycle, and while Redis answers.
async fn readyz(State(shared): State<Shared>) -> Response {
    let health = shared.health.snapshot();
    let mut store = shared.store.clone();
    let redis = match tokio::time::timeout(READY_PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!(
            "Redis did not answer within {} ms",
            READY_PING_TIMEOUT.as_millis()
        )),
    };
    let status = if health.ready && redis.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        health,
        redis: redis.err().unwrap_or_else(|| "ok".to_owned()),
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        shared.metrics.render(),
    )
        .into_response()
}

/// `GET /api/v1/apps`: the apps the grant covers (a scoped token sees its own).
async fn list_apps(
    ReadAccess(grant): ReadAccess,
    State(shared): State<Shared>,
) -> Result<Response, ApiError> {
    let mut store = shared.store.clone();
    let now = chrono::Utc::now();
    let mut overview = view::overview(&mut store, now, shared.settings.sync_timeout).await?;
    overview.apps.retain(|status| grant.allows(&status.app));
    Ok(Json(overview).into_response())
}

/// `GET /api/v1/report`: the newest stored report, as stored (docs/reports.md).
async fn latest_report(
    ReadAccess(grant): ReadAccess,
    State(shared): State<Shared>,
) -> Result<Response, ApiError> {
    // A report names every app that drifted: only an unscoped grant reads it.
    grant.check_all(Role::Read)?;
    let mut store = shared.store.clone();
    let report = store.latest_report().await?;
    let report = report.ok_or_else(|| ApiError::NoReport {
        namespace: store.namespace().to_owned(),
    })?;
    Ok(([(CONTENT_TYPE, "application/json")], report).into_response())
}

/// What a path under `/api/v1/apps/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Detail,
    Diff,
    Artifact,
    Sync,
}

impl Action {
    /// `payments/api/diff` -> (`payments/api`, Diff). A last segment that names
    /// an action is always read as one, so an app whose own name ends in
    /// `/diff`, `/artifact` or `/sync` has no detail path (its other actions
    /// still work: `.../sync/diff`). A one-segment name is always an app.
    fn split(rest: &str) -> (&str, Action) {
        [
            ("/diff", Action::Diff),
            ("/artifact", Action::Artifact),
            ("/sync", Action::Sync),
        ]
        .into_iter()
        .find_map(|(suffix, action)| rest.strip_suffix(suffix).map(|app| (app, action)))
        .unwrap_or((rest, Action::Detail))
    }
}

/// The app and action of a wildcard path; 400 for a name that is not valid.
fn target(path: Result<Path<String>, PathRejection>) -> Result<(String, Action), ApiError> {
    let Path(rest) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (app, action) = Action::split(&rest);
    Ok((app.to_owned(), action))
}

fn app_name(name: &str) -> Result<AppName, ApiError> {
    if name == crate::protocol::ROOT_ALIAS {
        // Never a valid app name (segments start with a letter or digit).
        return Ok(AppName::root());
    }
    AppName::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn unknown_app(shared: &Shared, app: AppName) -> ApiError {
    ApiError::UnknownApp {
        app,
        namespace: shared.store.namespace().to_owned(),
    }
}

/// `GET /api/v1/apps/<app>[/diff|/artifact]`.
async fn get_app(
    ReadAccess(grant): ReadAccess,
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<super::artifact::ArtifactQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (name, action) = target(path)?;
    let app = app_name(&name)?;
    grant.check(Role::Read, &app)?;
    let mut store = shared.store.clone();
    match action {
        Action::Detail => {
            let now = chrono::Utc::now();
            let detail = view::detail(&mut store, &app, now, shared.settings.sync_timeout).await?;
            let detail = detail.ok_or_else(|| unknown_app(&shared, app))?;
            Ok(Json(detail).into_response())
        }
        Action::Diff => {
            let diff = view::diff(&mut store, &app).await?;
            let diff = diff.ok_or_else(|| unknown_app(&shared, app))?;
            Ok(Json(diff).into_response())
        }
        Action::Artifact => {
            let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
            super::artifact::handle(shared, &grant, app, query).await
        }
        Action::Sync => Err(ApiError::MethodNotAllowed { allow: "POST" }),
    }
}

/// `POST /api/v1/apps/<app>/sync`: the only POST under `/api/v1/apps/`.
async fn post_app(
    SyncAccess(grant): SyncAccess,
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (name, action) = target(path)?;
    let app = app_name(&name)?;
    if action != Action::Sync {
        return Err(ApiError::MethodNotAllowed { allow: "GET" });
    }
    grant.check(Role::Sync, &app)?;
    let now = chrono::Utc::now().timestamp_millis();
    let signal = shared
        .store
        .clone()
        .signal_now(&app, now)
        .await?
        .ok_or_else(|| ApiError::NoDesiredState {
            app: app.clone(),
            namespace: shared.store.namespace().to_owned(),
        })?;
    shared
        .metrics
        .signals
        .get_or_create(&KindLabel {
            kind: signal.kind.as_str().to_owned(),
        })
        .inc();
    tracing::info!(%app, client = grant.client(), generation = signal.generation, "sync signalled on request");
    Ok((StatusCode::ACCEPTED, Json(signal)).into_response())
}

/// `POST /api/v1/refresh`: poll now. Requests that arrive while a cycle runs
/// collapse into one more cycle after it. Role `sync` on any app will do: a
/// poll changes no app by itself, and whoever may sync an app may want its new
/// commit seen now.
async fn refresh(SyncAccess(grant): SyncAccess, State(shared): State<Shared>) -> Response {
    shared.trigger.fire();
    tracing::info!(client = grant.client(), "refresh requested");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "refresh requested"})),
    )
        .into_response()
}
