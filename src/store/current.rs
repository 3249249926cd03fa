//! One app's current desired state read consistently: the `:desired` hash and
//! the manifest (`:files`) of the same write, for whoever serves the app's files
//! (the artifact endpoint). Read-only.

use std::collections::BTreeMap;

use super::{Store, StoreError};
use crate::layout::AppName;
use crate::tree::full_commit_id;

/// Reads of the desired state before giving up, when the daemon keeps writing the
/// app while it is being read.
const READ_ATTEMPTS: usize = 3;

/// The app's current desired state, read consistently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub commit: gix::ObjectId,
    pub digest: String,
    /// Path relative to the app directory -> sha256 hex.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CurrentError {
    #[error("the stored desired state of app {app} has an invalid revision {revision:?}")]
    StoredRevision { app: AppName, revision: String },
    #[error("the desired state of app {app} kept changing while it was read; try again")]
    Changing { app: AppName },
    #[error("failed to read the desired state from Redis")]
    Store(#[source] StoreError),
}

/// The fields of the desired hash that identify one write of it.
#[derive(PartialEq, Eq)]
struct Desired {
    commit: gix::ObjectId,
    digest: String,
    generation: Option<String>,
}

impl Store {
    /// `app`'s current desired state; `None` when it has none (never written, or
    /// pruned).
    ///
    /// The desired hash and the manifest are written together but read with two
    /// requests: the manifest belongs to the desired state read before it if that
    /// state is still the same (same generation) after it.
    pub async fn current(&mut self, app: &AppName) -> Result<Option<Current>, CurrentError> {
        for _ in 0..READ_ATTEMPTS {
            let Some(before) = desired(self, app).await? else {
                return Ok(None);
            };
            let files = self.stored_files(app).await.map_err(CurrentError::Store)?;
            if desired(self, app).await?.as_ref() == Some(&before) {
                return Ok(Some(Current {
                    commit: before.commit,
                    digest: before.digest,
                    files,
                }));
            }
        }
        Err(CurrentError::Changing { app: app.clone() })
    }
}

async fn desired(store: &mut Store, app: &AppName) -> Result<Option<Desired>, CurrentError> {
    let states = store
        .app_states(&[app])
        .await
        .map_err(CurrentError::Store)?;
    let Some(mut desired) = states.into_iter().next().map(|s| s.desired) else {
        return Ok(None);
    };
    // A pruned app's hash is a tombstone without a digest.
    let (Some(digest), Some(revision)) = (desired.remove("digest"), desired.remove("revision"))
    else {
        return Ok(None);
    };
    let commit = full_commit_id(&revision).ok_or_else(|| CurrentError::StoredRevision {
        app: app.clone(),
        revision,
    })?;
    Ok(Some(Desired {
        commit,
        digest,
        generation: desired.remove("generation"),
    }))
}
