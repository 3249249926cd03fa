//! `GET /api/v1/apps/<app>/artifact?revision=<commit>` (DESIGN sections 6 and
//! 7): the HTTP side of [`crate::artifact`]. It reads the app's current desired
//! state from the store, builds the tar on the blocking pool, a bounded number
//! at a time, and answers with the tar and its `Digest`.
//!
//! This module only reads: it never writes Redis or the mirror. Routing is the
//! API's (`api.rs` calls [`handle`]).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::Shared;
use crate::artifact::{Artifact, ArtifactError, build_tar, parse_revision};
use crate::layout::AppName;
use crate::store::CurrentError;

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
pub async fn handle(shared: Shared, app: AppName, query: ArtifactQuery) -> Response {
    match artifact(&shared, &app, query).await {
        Ok(artifact) => (
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
            .into_response(),
        Err(error) => {
            let status = status(&error);
            if status.is_server_error() {
                tracing::error!(%app, error = %crate::error_chain(&error), "artifact request failed");
            } else {
                tracing::debug!(%app, error = %error, "artifact request refused");
            }
            let body = Json(serde_json::json!({ "error": public_message(&error) }));
            let mut response = (status, body).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

fn status(error: &ArtifactError) -> StatusCode {
    use ArtifactError::*;
    match error {
        BadRevision(_) => StatusCode::BAD_REQUEST,
        NoDesiredState { .. }
        | UnknownRevision { .. }
        | NotACommit { .. }
        | NoApp { .. }
        | Invalid { .. } => StatusCode::NOT_FOUND,
        Current(CurrentError::Changing { .. }) | Busy => StatusCode::SERVICE_UNAVAILABLE,
        Mismatch { .. }
        | Missing { .. }
        | BadPath { .. }
        | StoredDigest { .. }
        | Current(CurrentError::StoredRevision { .. } | CurrentError::Store(_))
        | Unstable { .. }
        | TooLarge { .. }
        | Mirror(_)
        | Read { .. }
        | Tar(_)
        | Join(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message for the client. Deeper causes stay in the server's log: Git and
/// I/O errors name the server's own paths.
fn public_message(error: &ArtifactError) -> String {
    match error {
        // A read error's own text says what is wrong with the file (a cap, a
        // symlink target) and names no server path; its causes might.
        ArtifactError::Read { source, .. } => format!("{error}: {source}"),
        _ => error.to_string(),
    }
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
    let artifact = tokio::task::spawn_blocking(move || {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_errors_say_whose_fault_it_is() {
        let app = || AppName::parse("payments").expect("valid name");
        let revision = || "a".repeat(40);
        assert_eq!(
            status(&ArtifactError::BadRevision("main".to_owned())),
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
            assert_eq!(status(&not_found), StatusCode::NOT_FOUND);
        }
        assert_eq!(
            status(&ArtifactError::Mismatch {
                app: app(),
                path: "service.yaml".to_owned(),
                revision: revision(),
            }),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        for busy in [
            ArtifactError::Busy,
            ArtifactError::Current(CurrentError::Changing { app: app() }),
        ] {
            assert_eq!(status(&busy), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
