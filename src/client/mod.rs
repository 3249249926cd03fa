//! The child side of canopy's protocol (DESIGN section 6, docs/protocol.md
//! sections 5 and 6), as a library a service embeds to follow its app.
//!
//! - [`Client`] speaks the protocol for one app: reads the app's signal stream as
//!   a member of the consumer group `canopy`, reports with `canopy_report`, keeps
//!   the heartbeat, dead-letters, and downloads the app's files from the daemon.
//! - [`Files`] are an app's files at one revision, verified against the signal's
//!   digest before anything is written to disk.
//! - [`follow`] is the loop that ties them together with at-least-once semantics:
//!   own pending entries first (a crash), then entries idle too long on other
//!   consumers (`XAUTOCLAIM`), then new ones; duplicates of the running digest are
//!   reported again without applying; failures are retried with backoff and
//!   dead-lettered after a bounded number of attempts. Pub/sub only wakes it up.
//!
//! What "applying" means is the embedding service's: it implements [`Handler`].
//! `canopy agent` (crate::agent) is the reference implementation. This module never
//! writes the daemon's keys: only `:observed` (through `canopy_report`),
//! `:observed_files`, `:heartbeat` and `:dead`, exactly what a child's ACL allows.

mod artifact;
mod error;
mod follow;
mod session;

pub use crate::protocol::{DesiredRecord, RedisOptions, Signal, SignalKind};
pub use crate::status::ReportedState;
pub use crate::tree::EntryKind;
pub(crate) use artifact::sync_dir;
pub use artifact::{Files, unpack_artifact};
pub use error::ClientError;
pub use follow::{Applied, Handler, HandlerError, follow};
pub use session::defaults;
pub use session::{Client, ClientOptions, Delivery, Reported};
