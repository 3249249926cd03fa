//! The daemon's HTTP surface (DESIGN sections 7 and 8): health and readiness,
//! Prometheus metrics, the read and write API, app artifacts and push webhooks.
//!
//! The server never writes desired state: the API can only ask the reconcile loop
//! to poll now (`refresh`, webhooks) or re-signal an app's current desired state
//! (`sync`). It binds no address itself: [`serve`] takes a bound listener and a
//! shutdown token, so tests bind port 0 and stop it cleanly. Every error answer
//! goes through one type, `error::ApiError`.
//!
//! What an unauthenticated client can make it spend is bounded: connections,
//! the time to send a request's head (`connections`), and the bytes and time
//! of bodies read before they are verified (`budget`, `webhooks`).

mod api;
mod artifact;
mod auth;
mod budget;
mod connections;
mod error;
mod health;
mod metrics;
mod webhooks;

use std::sync::Arc;

use axum::Router;

pub use artifact::Artifacts;
pub use auth::{Authenticator, JwtRefusal, KeysError};
pub use connections::serve;
pub use health::{Health, State as HealthState};
pub use metrics::{KindLabel, Metrics, ResultLabel, StatusLabel, WebhookLabel};
pub use webhooks::push_payload_ref;

use crate::config::{ServerConfig, WebhooksConfig};
use crate::layout::LayoutOptions;
use crate::reconcile::Trigger;
use crate::store::Store;

/// What every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    /// A clone of the daemon's store: same connection, same epoch.
    pub store: Store,
    /// Asks the reconcile loop to poll now.
    pub trigger: Trigger,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    /// Built artifacts and the limits on building them.
    pub artifacts: Arc<Artifacts>,
    /// Who may call what: the credentials, and the identity provider's keys.
    pub auth: Arc<Authenticator>,
}

/// The configuration the server needs, resolved at start.
pub struct Settings {
    pub server: ServerConfig,
    pub webhooks: WebhooksConfig,
    /// The tracked ref as configured (`main`, `refs/tags/v1`, `HEAD`, a commit):
    /// pushes to other refs are acknowledged and ignored.
    pub reference: String,
    /// The mirror's directory: artifacts are read from its Git objects.
    pub mirror_dir: std::path::PathBuf,
    pub layout: LayoutOptions,
    pub sync_timeout: chrono::Duration,
}

/// Every route.
pub fn router(shared: Shared) -> Router {
    let budget = budget::BodyBudget::new(shared.settings.server.unverified_body_budget);
    Router::new()
        .merge(api::routes())
        .merge(artifact::routes())
        .merge(webhooks::routes(budget))
        .with_state(shared)
}
