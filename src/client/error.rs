//! What can go wrong on the child side. Messages name the app, the revision and
//! the daemon URL (never a token); causes go in `source`.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::protocol::{ConnectError, RecordError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Credentials(#[from] crate::protocol::credentials::CredentialsError),
    #[error("credentials file {} does not exist (yet): the daemon writes it when it creates the app's Redis user", .path.display())]
    NoCredentials { path: std::path::PathBuf },
    /// Redis answered something the command never returns: refused, not guessed.
    #[error("unexpected reply to {command} for app {app}: {detail}")]
    Reply {
        app: String,
        command: &'static str,
        detail: String,
    },
    /// The app's desired state in Redis is unusable.
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("Redis request for app {app} failed: {what}")]
    Redis {
        app: String,
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// `canopy_report` refused the arguments (`ERR ...`): a bug in the caller.
    #[error("canopy_report refused the report of app {app}: {detail}")]
    ReportRefused { app: String, detail: String },
    #[error("failed to build the HTTP client for artifacts")]
    Http(#[source] reqwest::Error),
    #[error("no daemon URL to download the files of app {app} from (set --server)")]
    NoServer { app: String },
    #[error("invalid daemon URL {url:?}")]
    ServerUrl { url: String },
    #[error("failed to download the files of app {app} at {revision} from {url}")]
    Download {
        app: String,
        revision: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the daemon at {url} answered {status} for the files of app {app} at {revision}: {detail}"
    )]
    DownloadStatus {
        app: String,
        revision: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the files of app {app} at {revision} from {url} exceed {limit} bytes")]
    TooLarge {
        app: String,
        revision: String,
        url: String,
        limit: u64,
    },
    /// The artifact is not what the signal announced: refused before any use.
    #[error("the files of app {app} at {revision} have digest {actual}, expected {expected}{}", header.as_ref().map(|h| format!(" (the daemon's Digest header says {h})")).unwrap_or_default())]
    DigestMismatch {
        app: String,
        revision: String,
        expected: String,
        actual: String,
        header: Option<String>,
    },
    #[error("the files of app {app} at {revision} are not a valid tar")]
    Tar {
        app: String,
        revision: String,
        #[source]
        source: std::io::Error,
    },
    /// Refused before anything is written. `path` is the entry's; for a symlink,
    /// `why` never holds its target (it may name a secret path).
    #[error("the files of app {app} at {revision} hold an unsafe entry {path:?}: {why}")]
    UnsafeEntry {
        app: String,
        revision: String,
        path: String,
        why: Cow<'static, str>,
    },
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
