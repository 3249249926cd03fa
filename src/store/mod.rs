//! The Redis backbone (DESIGN section 5): canopy's key schema, its Functions
//! library, fenced and batched writes of desired state and signals, and the reads
//! that `status`, `diff`, the artifact endpoint and the daemon need.
//!
//! This module speaks Redis and nothing else: what to write is decided by
//! `reconcile` (pure), and this module only carries it out. Every write that
//! others treat as truth goes through a function of `canopy.lua` that checks the
//! daemon's epoch first, one app per call, so an app is never half-written.

mod acl;
mod connect;
mod current;
mod desired;
mod read;
mod report;
mod write;

pub use connect::{Checked, Store};
pub use current::Current;
pub use desired::StoredDesired;
pub use read::{AppState, HeldApp, Meta};
pub use report::REPORTS_MAXLEN;
pub use write::{AppWrite, Applied, DriftWrite, StatusWrite, WriteOp};

/// The protocol types the store's callers pass in and get back.
pub use crate::protocol::{
    AppKeys, CONSUMER_GROUP, Drift, Keys, MAX_CHANGED, RedisOptions, SCHEMA_VERSION, Signal,
    SignalKind,
};

use crate::protocol::{ConnectError, RecordError};

/// The Functions library (loaded by [`Store::prepare_functions`]).
pub const LIBRARY: &str = include_str!("canopy.lua");

/// The library's version, as its `canopy_version` function answers it: a
/// daemon loads its library over an older one, never over a newer one.
pub const LIBRARY_VERSION: i64 = 3;

/// Writes and reads are sent in pipelines of this many apps: one round trip per
/// batch, never one per app, with bounded memory per request.
pub const BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("Redis request failed")]
    Redis(#[from] redis::RedisError),
    #[error("failed to load canopy's Functions library (Redis 7 or later is required)")]
    Functions(#[source] redis::RedisError),
    /// A newer canopy loaded its library: this one must not replace it.
    #[error(
        "Redis holds canopy's Functions library version {loaded}, newer than this canopy's \
         {LIBRARY_VERSION}: upgrade this canopy"
    )]
    NewerLibrary { loaded: i64 },
    /// The epoch key or the Functions library is gone: Redis lost canopy's data
    /// (a restart without persistence, a FLUSHALL). The daemon rebuilds from Git.
    #[error("Redis lost canopy's data in namespace {namespace}")]
    Lost { namespace: String },
    /// Another daemon claimed a newer epoch: this one must not write.
    #[error("another canopy daemon took over namespace {namespace}: {detail}")]
    Fenced { namespace: String, detail: String },
    /// The stored generation is not the one read before writing: something else
    /// wrote the app. Nothing was written; the next cycle re-reads everything.
    #[error("app {app} changed in Redis while canopy was writing it: {detail}")]
    Conflict { app: String, detail: String },
    #[error("unexpected reply from Redis for {what}: {detail}")]
    Reply { what: String, detail: String },
    /// A stored record canopy cannot use (written by someone else, or by a
    /// child: their values are hostile).
    #[error("unusable record in Redis")]
    Record(#[from] RecordError),
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_library_declares_the_version_the_code_expects() {
        let line = format!("local VERSION = {}\n", super::LIBRARY_VERSION);
        assert!(super::LIBRARY.contains(&line), "canopy.lua lacks {line:?}");
    }
}
