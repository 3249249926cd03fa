//! The Redis backbone (DESIGN section 5): canopy's key schema, its Functions
//! library, fenced and batched writes of desired state and signals, and the reads
//! that `status`, `diff`, the artifact endpoint and the daemon need.
//!
//! This module speaks Redis and nothing else: what to write is decided by
//! `reconcile` (pure), and this module only carries it out. Every write that
//! others treat as truth goes through a function of `canopy.lua` that checks the
//! daemon's epoch first, one app per call, so an app is never half-written.

mod connect;
mod current;
mod desired;
mod keys;
mod read;
mod report;
mod signal;
mod write;

pub use connect::{Store, StoreOptions, open};
pub use current::{Current, CurrentError};
pub use desired::StoredDesired;
pub use keys::{AppKeys, CONSUMER_GROUP, Keys, SCHEMA_VERSION};
pub use read::{AppState, HeldApp, Meta};
pub use report::REPORTS_MAXLEN;
pub use signal::{Drift, MAX_CHANGED, Signal, SignalKind};
pub use write::{AppWrite, Applied, DriftWrite, StatusWrite, WriteOp};

/// The Functions library, loaded with `FUNCTION LOAD REPLACE`.
pub const LIBRARY: &str = include_str!("canopy.lua");

/// Writes and reads are sent in pipelines of this many apps: one round trip per
/// batch, never one per app, with bounded memory per request.
pub const BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL {url}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("failed to connect to Redis at {url}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis request failed")]
    Redis(#[from] redis::RedisError),
    #[error("failed to load canopy's Functions library (Redis 7 or later is required)")]
    Functions(#[source] redis::RedisError),
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
}
