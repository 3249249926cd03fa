//! Least privilege on the Redis backbone (DESIGN section 8): a Redis ACL user
//! per app, reaching its own keys and channel only, with its password in a
//! file of its own that its child mounts.
//!
//! - `rules`: user names and `ACL SETUSER` rules (pure).
//! - `protocol::credentials`: the files: where, how written, how read (a
//!   child reads them too: their format is part of the protocol).
//! - [`AppUsers`]: the daemon's side, called by the reconcile cycle: a user and
//!   a file for every app before its desired state is written (so a child can
//!   read its first signal), users of pruned apps deleted after a grace (so it
//!   can read its prune signal), and all of it compared again on every full
//!   comparison (start, Redis losing data, every few minutes).
//!
//! The Redis commands are the store's (`store/acl.rs`); this module decides.

pub mod rules;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::protocol::credentials::{Credentials, CredentialsDir, CredentialsError};

use crate::layout::AppName;
use crate::store::{Store, StoreError};

/// How long a pruned app's user outlives the prune: its child still reads the
/// `prune` signal and cleans up with it.
pub const PRUNE_GRACE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("failed to keep the apps' credentials files")]
    Credentials(#[from] CredentialsError),
    #[error("failed to set the apps' Redis ACL users")]
    Store(#[from] StoreError),
    #[error("the credentials task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// The apps' users and credentials files of one namespace.
#[derive(Debug)]
pub struct AppUsers {
    dir: CredentialsDir,
    namespace: String,
    /// Apps pruned by this process, and when.
    pruned: HashMap<AppName, Instant>,
}

impl AppUsers {
    pub fn new(credentials_dir: &Path, namespace: &str) -> AppUsers {
        AppUsers {
            dir: CredentialsDir::new(credentials_dir, namespace),
            namespace: namespace.to_owned(),
            pruned: HashMap::new(),
        }
    }

    /// A user and a credentials file for each of `apps` (kept as they are if
    /// they exist). Call before their desired state is written.
    pub async fn ensure(&mut self, store: &mut Store, apps: &[AppName]) -> Result<(), AclError> {
        if apps.is_empty() {
            return Ok(());
        }
        for app in apps {
            self.pruned.remove(app);
        }
        let dir = self.dir.clone();
        let namespace = self.namespace.clone();
        let apps = apps.to_vec();
        // Files: blocking I/O, off the async workers.
        let users = tokio::task::spawn_blocking(move || {
            apps.into_iter()
                .map(|app| {
                    let user = rules::app_user(&namespace, &app);
                    let credentials = dir.load_or_create(&app, &user)?;
                    Ok((app, vec![credentials.password_hash()]))
                })
                .collect::<Result<Vec<_>, CredentialsError>>()
        })
        .await??;
        store.set_app_users(&users).await?;
        Ok(())
    }

    /// `apps` were pruned: their users and files go after [`PRUNE_GRACE`].
    pub fn pruned(&mut self, apps: &[AppName]) {
        let now = Instant::now();
        for app in apps {
            self.pruned.entry(app.clone()).or_insert(now);
        }
    }

    /// Every app of `current` gets its user (again: Redis may have lost it);
    /// users of other apps are deleted with their files, once past the grace
    /// of a prune this process saw (at once for those it did not see).
    pub async fn reconcile_all(
        &mut self,
        store: &mut Store,
        current: &[AppName],
    ) -> Result<(), AclError> {
        self.ensure(store, current).await?;
        let current: BTreeSet<&AppName> = current.iter().collect();
        let now = Instant::now();
        let gone: Vec<AppName> = store
            .app_users()
            .await?
            .into_iter()
            .filter(|app| !current.contains(app))
            .filter(|app| {
                self.pruned
                    .get(app)
                    .is_none_or(|at| now.duration_since(*at) >= PRUNE_GRACE)
            })
            .collect();
        store.delete_app_users(&gone).await?;
        for app in &gone {
            self.dir.remove(app)?;
            self.pruned.remove(app);
        }
        if !gone.is_empty() {
            tracing::info!(users = gone.len(), "deleted the Redis users of pruned apps");
        }
        Ok(())
    }
}
