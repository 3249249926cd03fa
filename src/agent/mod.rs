//! `canopy agent`: the reference child (DESIGN section 6). It follows one app
//! with [`crate::client`] and applies each signal to a directory:
//!
//! - [`Releases`] owns the directory: verified files of each digest in
//!   `versions/<hex>/`, the `current` symlink (repointed atomically, by rename),
//!   the app's `config.json` and `secrets.json`, and `applied`, the digest whose
//!   hook last succeeded (what the agent runs, across restarts).
//! - [`Hook`] runs the user's command in its own process group, with a timeout,
//!   keeping the tail of its stderr for the failure report; `output` forwards
//!   what it prints with every secret value redacted.
//! - [`Agent`] is the [`Handler`](crate::client::Handler) that ties them
//!   together: download, verify, unpack, switch, run the hook; roll `current`
//!   back when the hook fails.

mod apply;
mod hook;
mod output;
mod releases;

pub use apply::{Agent, AgentOptions, defaults};
pub use hook::{Hook, HookError};
pub use releases::Releases;
