//! What the store holds about an app, as far as deciding what to write needs it.

use crate::protocol::DesiredRecord;

/// The stored desired state that decides whether an app must be written again,
/// and the generation its child last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDesired {
    /// `None` for a pruned app (its hash is a tombstone that keeps the generation)
    /// or when only the child's report is left.
    pub digest: Option<String>,
    pub config_digest: Option<String>,
    /// The desired hash's generation; 0 when there is none.
    pub generation: u64,
    /// Parent and wave as last written, for a prune's signal (the app is gone
    /// from Git, so only the store still knows them).
    pub parent: Option<String>,
    pub wave: i32,
    /// The generation in the child's `observed` hash (0: none). A new generation
    /// must exceed it too, or the child's next report would be refused as stale
    /// after Redis lost the desired hash but kept the report.
    pub observed_generation: u64,
}

impl StoredDesired {
    /// `None` when neither the desired hash nor a report exists. Either may be
    /// unusable (written around canopy; the error names the key): an unreadable
    /// desired hash is rewritten from Git as if absent, expecting the generation
    /// `canopy_apply` will find there (`readable_generation`, 0 when that is
    /// garbage too), so the rewrite is not refused as a conflict; an unreadable
    /// report generation counts as none. Both are logged, never an error: one
    /// app's garbage must not stop the others' writes.
    pub fn from_records(
        desired: Result<Option<DesiredRecord>, String>,
        readable_generation: Option<u64>,
        observed_generation: Result<Option<u64>, String>,
    ) -> Option<StoredDesired> {
        let (record, unreadable) = match desired {
            Ok(record) => (record, None),
            Err(error) => {
                tracing::warn!(%error, "unreadable desired state: rewritten from Git");
                (None, Some(readable_generation.unwrap_or(0)))
            }
        };
        let observed_generation = observed_generation.unwrap_or_else(|error| {
            tracing::warn!(%error, "unreadable report generation: ignored");
            None
        });
        if record.is_none() && unreadable.is_none() && observed_generation.is_none() {
            return None;
        }
        let app = record.as_ref().and_then(|r| r.app.as_ref());
        Some(StoredDesired {
            digest: app.map(|a| a.digest.clone()),
            config_digest: app.map(|a| a.config_digest.clone()),
            generation: record
                .as_ref()
                .map_or(unreadable.unwrap_or(0), |r| r.generation),
            parent: app.and_then(|a| a.parent.as_ref()).map(ToString::to_string),
            wave: app.map_or(0, |a| a.wave),
            observed_generation: observed_generation.unwrap_or(0),
        })
    }

    /// The generation of the next write: above everything stored and reported.
    pub fn next_generation(&self) -> u64 {
        self.generation
            .max(self.observed_generation)
            .saturating_add(1)
    }
}
