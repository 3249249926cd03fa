//! `GET /api/v1/apps/<app>/artifact?revision=<commit>` (DESIGN sections 6 and
//! 7): the HTTP side of [`crate::artifact`]. It reads the app's current desired
//! state from the store, builds the tar on the blocking pool, a bounded number
//! at a time, and answers with the tar and its `Digest`.
//!
//! This module only reads: it never writes Redis or the mirror. Routing is the
//! API's (`api.rs` calls [`handle`]); error answers are [`ApiError`]'s.

use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::Shared;
use super::error::{ApiError, artifact_status};
use crate::artifact::{Artifact, ArtifactError, build_tar, parse_revision};
use crate::layout::AppName;

/// Tars built at the same time, at most. A tar is held in memory until it is sent
/// (up to the per-app cap, 256 MiB by default), so this bounds the server's
/// memory; it also keeps gix work from taking every core from the reconcile loop.
pub const MAX_BUILDS: usize = 2;

/// How long a request waits for a build slot before it gets a 503.
pub const BUILD_WAIT: Duration = Duration::from_secs(30);

static BUILDS: Semaphore = Semaphore::const_new(MAX_BUILDS);

pub fn routes() -> Router<Shared> {
    Router::new()
}

#[derive(Debug, serde::Deserialize)]
pub struct ArtifactQuery {
    pub revision: Option<String>,
}

/// `GET /api/v1/apps/<app>/artifact?revision=<commit>`: the app's files as an
/// uncompressed tar (`application/x-tar`).
///
/// Without `revision`, the app's current desired revision. The tar holds exactly
/// the app's own files (no child app's), paths relative to the app directory,
/// in bytewise path order, without directory entries: regular files with mode
/// 0644 (0755 if executable), symlinks as symlink entries holding their target
/// text, mtime 0, uid and gid 0, no user or group names. The same files always
/// give the same bytes.
///
/// Headers: `Digest: sha256:<hex>`, the app digest of exactly these files, and
/// `X-Canopy-Revision: <commit>`. A child verifies what it unpacked by
/// recomputing the digest (DESIGN section 3), in the unpacked directory:
///
/// ```sh
/// find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
///   if [ -L "$f" ]; then h=$(readlink -n "$f" | sha256sum); else h=$(sha256sum < "$f"); fi
///   printf '%s  %s\n' "${h%% *}" "$f"
/// done | sha256sum     # == the hex after `sha256:` in the Digest header
/// ```
///
/// (a symlink's bytes are its target text; with no symlinks this is
/// `find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum`).
///
/// Errors are JSON `{"error": "..."}`: 400 for a `revision` that is not a full
/// commit id; 404 for an app without desired state, a revision the mirror does not
/// have, or an app that does not exist or is invalid at that revision; 503 while
/// builds are saturated; 500 when Git content does not match the stored manifest.
pub async fn handle(
    shared: Shared,
    app: AppName,
    query: ArtifactQuery,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "artifact",
        %app,
        revision = query.revision.as_deref().unwrap_or("current"),
    );
    let artifact = artifact(&shared, &app, query).instrument(span).await.inspect_err(|error| {
        if artifact_status(error).is_server_error() {
            tracing::error!(%app, error = %crate::error_chain(error), "artifact request failed");
        } else {
            tracing::debug!(%app, error = %error, "artifact request refused");
        }
    })?;
    Ok((
        StatusCode::OK,
        [
            (CONTENT_TYPE, "application/x-tar".to_owned()),
            (
                HeaderName::from_static("digest"),
                artifact.digest.to_string(),
            ),
            (
                HeaderName::from_static("x-canopy-revision"),
                artifact.revision,
            ),
        ],
        artifact.tar,
    )
        .into_response())
}

async fn artifact(
    shared: &Shared,
    app: &AppName,
    query: ArtifactQuery,
) -> Result<Artifact, ArtifactError> {
    let requested = query.revision.as_deref().map(parse_revision).transpose()?;
    let mut store = shared.store.clone();
    let current = match store.current(app).await {
        Ok(current) => current,
        // An explicit revision can still be served from Git alone.
        Err(error) if requested.is_some() => {
            tracing::warn!(%app, error = %crate::error_chain(&error),
                "desired state unreadable; reading the revision's layout");
            None
        }
        Err(error) => return Err(error.into()),
    };
    let (commit, current) = match (requested, current) {
        (Some(commit), Some(current)) if current.commit == commit => (commit, Some(current)),
        (Some(commit), _) => (commit, None),
        (None, Some(current)) => (current.commit, Some(current)),
        (None, None) => return Err(ArtifactError::NoDesiredState { app: app.clone() }),
    };

    let permit = tokio::time::timeout(BUILD_WAIT, BUILDS.acquire())
        .await
        .map_err(|_| ArtifactError::Busy)?
        .expect("the build semaphore is never closed");
    let settings = shared.settings.clone();
    let name = app.clone();
    let expected = current.as_ref().map(|c| c.digest.clone());
    let span = tracing::Span::current();
    let artifact = tokio::task::spawn_blocking(move || {
        let _artifact = span.enter();
        // Held by the build itself: a client that hangs up does not free the slot
        // of a build that still runs.
        let _permit = permit;
        let manifest = current.as_ref().map(|c| &c.files);
        build_tar(
            &settings.mirror_dir,
            &settings.layout,
            commit,
            &name,
            manifest,
        )
    })
    .await
    .map_err(ArtifactError::Join)??;
    if let Some(expected) = expected
        && artifact.digest.to_string() != expected
    {
        return Err(ArtifactError::StoredDigest { app: app.clone() });
    }
    Ok(artifact)
}
