//! One app's current desired state read consistently: the `:desired` hash and
//! the manifest (`:files`) of the same write, for whoever serves the app's files
//! (the artifact endpoint). Read-only.

use std::collections::BTreeMap;

use super::{Store, StoreError};
use crate::layout::AppName;
use crate::protocol::DesiredRecord;
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
    #[error("the desired state of app {app} kept changing while it was read; try again")]
    Changing { app: AppName },
    #[error("failed to read the desired state from Redis")]
    Store(#[source] StoreError),
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
                let commit = full_commit_id(&before.revision)
                    .expect("the decoder accepts full commit ids only");
                let digest = before.app.map(|a| a.digest).expect("filtered on it");
                return Ok(Some(Current {
                    commit,
                    digest,
                    files,
                }));
            }
        }
        Err(CurrentError::Changing { app: app.clone() })
    }
}

/// The app's desired record, if it is in Git (not a tombstone).
async fn desired(store: &mut Store, app: &AppName) -> Result<Option<DesiredRecord>, CurrentError> {
    let key = store.keys.app(app).desired();
    let values: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&key)
        .arg(DesiredRecord::FIELDS)
        .query_async(&mut store.conn)
        .await
        .map_err(|e| CurrentError::Store(e.into()))?;
    let record =
        DesiredRecord::from_fetched(&key, &values).map_err(|e| CurrentError::Store(e.into()))?;
    Ok(record.filter(|r| r.app.is_some()))
}
