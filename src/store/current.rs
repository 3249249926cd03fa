//! One app's current desired state as whoever serves the app's files (the
//! artifact endpoint) needs it: the commit and the digest. Read-only.
//!
//! The manifest (`:files`) is deliberately not read: which files make the app
//! is Git's and the layout's to say, and the stored digest confirms it.

use super::{Store, StoreError};
use crate::layout::AppName;
use crate::protocol::DesiredRecord;
use crate::tree::full_commit_id;

/// The app's current desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub commit: gix::ObjectId,
    pub digest: String,
}

impl Store {
    /// `app`'s current desired state; `None` when it has none (never written, or
    /// pruned). One `HMGET`: the commit and digest of the same write.
    pub async fn current(&mut self, app: &AppName) -> Result<Option<Current>, StoreError> {
        let key = self.keys.app(app).desired();
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(DesiredRecord::FIELDS)
            .query_async(&mut self.conn)
            .await?;
        let record = DesiredRecord::from_fetched(&key, &values)?;
        Ok(record.and_then(|record| {
            let digest = record.app?.digest;
            let commit =
                full_commit_id(&record.revision).expect("the decoder accepts full commit ids only");
            Some(Current { commit, digest })
        }))
    }
}
