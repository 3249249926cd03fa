//! canopy's wire protocol (DESIGN section 5, docs/protocol.md): what the daemon,
//! the child library and the HTTP server agree on, and nothing that decides or
//! does anything.
//!
//! - [`keys`]: every Redis key and channel name, and the consumer group;
//! - [`signal`]: the signal payload and its kinds;
//! - [`records`]: one strict decoder per stored hash (`:desired`, `:observed`);
//! - [`connection`]: how a process reaches Redis ([`RedisOptions`], [`open`]);
//! - [`secret`]: [`Secret`] and URL redaction, so no credential reaches a log;
//! - [`credentials`]: an app's Redis credentials file: where it is, how the
//!   daemon writes it and how a child reads it.
//!
//! A leaf: it depends on the app-name allow-list (`layout::AppName`) and the
//! pure status and plan types only, never on store, client, server or config, so
//! a child needs this module and a Redis connection, nothing of the daemon.

pub mod connection;
pub mod credentials;
pub mod keys;
pub mod records;
pub mod secret;
pub mod signal;

pub use connection::{ConnectError, RedisOptions, RedisUrl, open};
pub use keys::{AppKeys, CONSUMER_GROUP, Keys, SCHEMA_VERSION};
pub use records::{DesiredRecord, ObservedRecord, RecordError};
pub use secret::{Secret, UrlParts, redact};
pub use signal::{Drift, MAX_CHANGED, Signal, SignalKind};

/// In URLs the root app `.` is spelled `_root`: HTTP clients remove `.` path
/// segments (RFC 3986 dot-segment removal), so `/api/v1/apps/./sync` would name
/// no app. `_` cannot start an app name, so the alias never collides with one.
pub const ROOT_ALIAS: &str = "_root";

/// Whether `text` is a full commit id as canopy spells one: 40 hex digits (any
/// case). Anything shorter is a name (a branch, a tag), never an abbreviation.
pub fn is_commit_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
