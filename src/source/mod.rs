//! The Git source (DESIGN section 4): a local mirror of the tracked repository,
//! polled for new commits, and the incremental path from a commit to a plan.
//!
//! A poll with no new commit costs one ref negotiation. A new commit costs a tree
//! diff plus reading only the changed blobs. A fetch error never touches the last
//! good snapshot: nothing is pruned because a remote was unreachable.

mod diff;
mod mirror;
mod poller;
mod schedule;
mod url;

use std::path::PathBuf;
use std::time::Duration;

pub use diff::diff_trees;
pub use mirror::{Mirror, MirrorOptions};
pub use poller::{Method, Poll, PollOutcome, Poller};
pub use schedule::Schedule;
pub use url::{Credentials, RepoUrl, redact};

/// Failure of one poll. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to fetch from {url}")]
    Fetch {
        url: String,
        #[source]
        source: Scrubbed,
    },
    #[error("fetch from {url} did not finish within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("ref {reference:?} not found on {url}")]
    RefNotFound { url: String, reference: String },
    #[error("refusing to send credentials over plain http to {url}: use https")]
    InsecureCredentials { url: String },
    #[error("ref {reference:?} on {url} does not point to a commit")]
    NotACommit { url: String, reference: String },
    #[error("a previous fetch is still running")]
    Busy,
    #[error("the local mirror in {dir} is unreadable")]
    Local {
        dir: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// True if the local mirror (not the remote) is at fault: re-cloning helps.
    pub fn is_local(&self) -> bool {
        matches!(self, SourceError::Local { .. })
    }
}

/// An error message with credentials removed.
#[derive(Debug)]
pub struct Scrubbed(pub String);

impl std::fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}
