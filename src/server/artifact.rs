//! `GET /api/v1/apps/<app>/artifact?revision=<commit>` (DESIGN sections 6 and
//! 7): the HTTP side of [`crate::artifact`]. It reads the app's current desired
//! state from the store, builds the tar on the blocking pool, a bounded number
//! at a time, and answers with the tar and its `Digest`.
//!
//! This module only reads: it never writes Redis or the mirror. Routing is the
//! API's (`api.rs` calls [`handle`]); error answers are [`ApiError`]'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_cache::sync::Cache;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::Shared;
use super::auth::Grant;
use super::error::{ApiError, artifact_status};
use crate::artifact::{Artifact, ArtifactError, build_tar, parse_revision};
use crate::layout::AppName;

/// Tars built at the same time, at most. A tar is held in memory until it is sent
/// (up to the per-app cap, 256 MiB by default), so this bounds the server's
/// memory; it also keeps gix work from taking every core from the reconcile loop.
pub const MAX_BUILDS: usize = 2;

/// Builds one client (a token, or every anonymous caller together) may have in
/// flight: fewer than [`MAX_BUILDS`], so no single client can take every slot.
/// Cached artifacts cost no build and are not counted.
pub const MAX_BUILDS_PER_CLIENT: usize = 1;
const _: () = assert!(MAX_BUILDS_PER_CLIENT < MAX_BUILDS);

/// How long a request waits for a build slot before it gets a 503.
pub const BUILD_WAIT: Duration = Duration::from_secs(30);

/// Bytes of built tars kept for the next request. Children of one app fetch the
/// same revision after each signal: all but the first are served from memory.
pub const CACHE_BYTES: u64 = 32 << 20;

/// Artifacts kept, roughly; the byte budget usually binds first.
const CACHE_ITEMS: usize = 4096;

/// An app at a revision. Not keyed by digest: the digest leaves out file modes,
/// so two revisions with one digest may pack differently; and an app's desired
/// revision moves only when its files change, so a revision key misses no more.
type Key = (AppName, gix::ObjectId);

#[derive(Clone)]
struct TarBytes;

impl quick_cache::Weighter<Key, Arc<Artifact>> for TarBytes {
    fn weight(&self, _: &Key, artifact: &Arc<Artifact>) -> u64 {
        // Never zero: zero-weight items are never evicted.
        artifact.tar.len() as u64 + 1
    }
}

/// The artifact endpoint's state: built tars, build slots and who holds them.
pub struct Artifacts {
    cache: Cache<Key, Arc<Artifact>, TarBytes>,
    slots: Arc<Semaphore>,
    /// Builds in flight (or waiting for a slot) per client.
    building: Mutex<HashMap<String, usize>>,
}

impl Default for Artifacts {
    fn default() -> Self {
        Artifacts {
            cache: Cache::with_weighter(CACHE_ITEMS, CACHE_BYTES, TarBytes),
            slots: Arc::new(Semaphore::new(MAX_BUILDS)),
            building: Mutex::new(HashMap::new()),
        }
    }
}

/// A client's claim on one of its [`MAX_BUILDS_PER_CLIENT`]; released on drop.
struct ClientBuild {
    artifacts: Arc<Artifacts>,
    client: String,
}

impl Artifacts {
    fn claim(self: &Arc<Self>, client: &str) -> Result<ClientBuild, ArtifactError> {
        let mut building = self
            .building
            .lock()
            .expect("never poisoned: no panics inside");
        let count = building.entry(client.to_owned()).or_default();
        if *count >= MAX_BUILDS_PER_CLIENT {
            return Err(ArtifactError::ClientBusy {
                client: client.to_owned(),
                max: MAX_BUILDS_PER_CLIENT,
            });
        }
        *count += 1;
        Ok(ClientBuild {
            artifacts: self.clone(),
            client: client.to_owned(),
        })
    }
}

impl Drop for ClientBuild {
    fn drop(&mut self) {
        let mut building = self
            .artifacts
            .building
            .lock()
            .expect("never poisoned: no panics inside");
        if let Some(count) = building.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                building.remove(&self.client);
            }
        }
    }
}

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
    grant: &Grant,
    app: AppName,
    query: ArtifactQuery,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "artifact",
        %app,
        revision = query.revision.as_deref().unwrap_or("current"),
        client = grant.client(),
    );
    let artifact = artifact(&shared, grant, &app, query)
        .instrument(span)
        .await
        .inspect_err(|error| {
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
                artifact.revision.clone(),
            ),
        ],
        artifact.tar.clone(),
    )
        .into_response())
}

/// The artifact for the request: from the cache, or built once however many
/// requests ask for it at the same time.
async fn artifact(
    shared: &Shared,
    grant: &Grant,
    app: &AppName,
    query: ArtifactQuery,
) -> Result<Arc<Artifact>, ArtifactError> {
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
        Err(source) => {
            return Err(ArtifactError::Store {
                app: app.clone(),
                source,
            });
        }
    };
    // The digest the daemon stored for the app at exactly this commit, if any.
    let (commit, stored) = match (requested, current) {
        (Some(commit), Some(current)) if current.commit == commit => (commit, Some(current.digest)),
        (Some(commit), _) => (commit, None),
        (None, Some(current)) => (current.commit, Some(current.digest)),
        (None, None) => return Err(ArtifactError::NoDesiredState { app: app.clone() }),
    };

    let artifacts = &shared.artifacts;
    let key = (app.clone(), commit);
    let artifact = match artifacts.cache.get_value_or_guard_async(&key).await {
        Ok(cached) => cached,
        Err(guard) => {
            let built = Arc::new(build(shared, grant, app, commit, stored.clone()).await?);
            // `insert` fails only if the entry was replaced meanwhile: serve ours.
            let _ = guard.insert(built.clone());
            built
        }
    };
    if let Some(stored) = stored
        && artifact.digest.to_string() != stored
    {
        return Err(ArtifactError::StoredDigest {
            app: app.clone(),
            revision: commit.to_string(),
        });
    }
    Ok(artifact)
}

/// Builds on the blocking pool, within the client's and the server's limits.
async fn build(
    shared: &Shared,
    grant: &Grant,
    app: &AppName,
    commit: gix::ObjectId,
    stored: Option<String>,
) -> Result<Artifact, ArtifactError> {
    let artifacts = &shared.artifacts;
    let claim = artifacts.claim(grant.client())?;
    let permit = tokio::time::timeout(BUILD_WAIT, artifacts.slots.clone().acquire_owned())
        .await
        .map_err(|_| ArtifactError::Busy)?
        .expect("the build semaphore is never closed");
    let settings = shared.settings.clone();
    let name = app.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _artifact = span.enter();
        // Held by the build itself: a client that hangs up does not free the
        // server's slot, or its own, while the build still runs.
        let _held = (permit, claim);
        build_tar(
            &settings.mirror_dir,
            &settings.layout,
            commit,
            &name,
            stored.as_deref(),
        )
    })
    .await
    .map_err(ArtifactError::Join)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_of_builds() {
        let artifacts = Arc::new(Artifacts::default());
        let first = artifacts.claim("payments-api").expect("a first build");
        let refused = artifacts.claim("payments-api").err().expect("refused");
        assert!(
            matches!(refused, ArtifactError::ClientBusy { ref client, max: MAX_BUILDS_PER_CLIENT } if client == "payments-api"),
            "{refused}"
        );
        // Another client is not held back by this one.
        let other = artifacts.claim("anonymous").expect("another client");
        drop(first);
        let again = artifacts.claim("payments-api").expect("released on drop");
        drop((other, again));
        assert!(
            artifacts.building.lock().unwrap().is_empty(),
            "no leftovers"
        );
    }
}
