//! The signal payload of DESIGN section 5: JSON in the stream field `payload` and
//! on the app's pub/sub channel. Child apps in any language parse it; its field
//! names and meanings are documented in docs/protocol.md and must not change
//! without bumping `keys::SCHEMA_VERSION`.

use serde::{Deserialize, Serialize};

use crate::plan::FileChange;
use crate::status::Status;

/// At most this many entries in `changed`; `changed_total` has the full count.
/// A new app of 20,000 files would otherwise put a megabyte into every stream.
pub const MAX_CHANGED: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The app's content changed: fetch and apply.
    Sync,
    /// Only its `config` or `secrets` changed: reload, no redeploy.
    Config,
    /// The app was removed from Git.
    Prune,
    /// Observed state diverged from desired (emitted by drift detection).
    Drift,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Sync => "sync",
            SignalKind::Config => "config",
            SignalKind::Prune => "prune",
            SignalKind::Drift => "drift",
        }
    }
}

impl std::fmt::Display for SignalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub kind: SignalKind,
    pub app: String,
    /// `None` for the root app.
    pub parent: Option<String>,
    /// The commit the desired state comes from.
    pub revision: String,
    /// The new desired digest; `None` for `prune`.
    pub digest: Option<String>,
    /// The desired digest before this signal; `None` for a new app.
    pub previous_digest: Option<String>,
    pub config_digest: Option<String>,
    /// Per app, only grows. Report it back with `canopy_report`.
    pub generation: u64,
    pub wave: i32,
    /// Files that differ from the previous desired state (at most [`MAX_CHANGED`]).
    pub changed: Vec<FileChange>,
    pub changed_total: usize,
    /// When the daemon emitted it, Unix milliseconds.
    pub at: i64,
    /// The emitting daemon's epoch (fencing token).
    pub epoch: u64,
    /// Only in `drift` signals: the status transition behind it. Absent (not
    /// `null`) from every other kind, so their payloads stay as they were.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drift: Option<Drift>,
}

/// The `drift` object of a `drift` signal (docs/protocol.md, "Drift signals").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The app's status now: `out_of_sync`, `failed`, `stale` or `orphaned`, or
    /// `synced` for a resolution.
    pub status: Status,
    /// The status before this transition; `None` for the app's first record.
    pub previous_status: Option<Status>,
    /// One line explaining `status`.
    pub reason: String,
    /// When `status` began, Unix milliseconds.
    pub since: i64,
    /// When the app last left `synced`, Unix milliseconds; `None` for a resolution.
    pub unsynced_since: Option<i64>,
    /// Whether this signal ends a drift (the app is `synced` again).
    pub resolved: bool,
}

impl Signal {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a signal always serializes")
    }
}
