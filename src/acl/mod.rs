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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    rotation: Option<Rotation>,
    /// Replaced passwords whose grace ends (Unix ms), by app: then they are
    /// dropped from the file and the user.
    expiring: BTreeMap<i64, Vec<AppName>>,
}

/// When passwords are replaced, and how long a replaced one stays valid.
#[derive(Debug)]
struct Rotation {
    schedule: cron::Schedule,
    grace_ms: i64,
    /// The last slot whose rotation finished in this process.
    done: Option<chrono::DateTime<chrono::Utc>>,
}

impl AppUsers {
    pub fn new(credentials_dir: &Path, namespace: &str) -> AppUsers {
        AppUsers {
            dir: CredentialsDir::new(credentials_dir, namespace),
            namespace: namespace.to_owned(),
            pruned: HashMap::new(),
            rotation: None,
            expiring: BTreeMap::new(),
        }
    }

    /// Replaces every app's password at each slot of `schedule` (UTC); the
    /// replaced one stays valid for `grace` (config `redis.acl.rotate`,
    /// `redis.acl.grace`).
    pub fn rotate_on(mut self, schedule: cron::Schedule, grace: Duration) -> AppUsers {
        self.rotation = Some(Rotation {
            schedule,
            grace_ms: i64::try_from(grace.as_millis()).unwrap_or(i64::MAX),
            done: None,
        });
        self
    }

    /// Called every cycle: rotates the passwords when a slot of the schedule
    /// has come (also one missed while no daemon ran), and ends the graces
    /// that are over.
    ///
    /// A rotation sets the user first, accepting the new password and the old
    /// one, and only then writes the file: a child never reads a password
    /// Redis does not accept yet. A daemon killed in between leaves the old
    /// file, whose password still works; the next run rotates that app again
    /// (its file is older than the slot), and the unused password is gone
    /// with the next `ACL SETUSER`, which sets the rules anew.
    pub async fn maintain(&mut self, store: &mut Store) -> Result<(), AclError> {
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis();
        if let Some(rotation) = &self.rotation
            && let Some(slot) = rotation
                .schedule
                .after(&(now + chrono::Duration::milliseconds(1)))
                .next_back()
            && rotation.done.is_none_or(|done| done < slot)
        {
            let grace_ms = rotation.grace_ms;
            let apps: Vec<AppName> = store.app_names().await?.into_iter().collect();
            self.rotate(store, apps, slot.timestamp_millis(), now_ms, grace_ms)
                .await?;
            if let Some(rotation) = self.rotation.as_mut() {
                rotation.done = Some(slot);
            }
        }
        let later = self.expiring.split_off(&(now_ms + 1));
        let due: Vec<AppName> = std::mem::replace(&mut self.expiring, later)
            .into_values()
            .flatten()
            .collect();
        if !due.is_empty() {
            self.end_grace(store, due, now_ms).await?;
        }
        Ok(())
    }

    /// New passwords for the apps whose password was made before `slot_ms`.
    async fn rotate(
        &mut self,
        store: &mut Store,
        apps: Vec<AppName>,
        slot_ms: i64,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<(), AclError> {
        let dir = self.dir.clone();
        let rotated = tokio::task::spawn_blocking(move || {
            let mut rotated = Vec::new();
            for app in apps {
                if let Some(old) = dir.load(&app)?
                    && old.created_at < slot_ms
                {
                    rotated.push((app, old.rotated(now_ms, grace_ms)?));
                }
            }
            Ok::<_, CredentialsError>(rotated)
        })
        .await??;
        if rotated.is_empty() {
            return Ok(());
        }
        let users: Vec<(AppName, Vec<String>)> = rotated
            .iter()
            .map(|(app, credentials)| (app.clone(), credentials.hashes(now_ms)))
            .collect();
        store.set_app_users(&users).await?;
        let dir = self.dir.clone();
        let count = rotated.len();
        let apps: Vec<AppName> = rotated.iter().map(|(app, _)| app.clone()).collect();
        tokio::task::spawn_blocking(move || {
            rotated
                .iter()
                .try_for_each(|(app, credentials)| dir.store(app, credentials))
        })
        .await??;
        self.expiring
            .entry(now_ms.saturating_add(grace_ms))
            .or_default()
            .extend(apps);
        tracing::info!(apps = count, "rotated the apps' Redis passwords");
        Ok(())
    }

    /// Drops the replaced passwords of `apps` whose grace is over: from the
    /// file first (the child already uses the new one), then from the user.
    async fn end_grace(
        &mut self,
        store: &mut Store,
        apps: Vec<AppName>,
        now_ms: i64,
    ) -> Result<(), AclError> {
        let dir = self.dir.clone();
        let users = tokio::task::spawn_blocking(move || {
            let mut users = Vec::new();
            for app in apps {
                if let Some(current) = dir.load(&app)?.and_then(|c| c.expired(now_ms)) {
                    dir.store(&app, &current)?;
                    users.push((app, current.hashes(now_ms)));
                }
            }
            Ok::<_, CredentialsError>(users)
        })
        .await??;
        store.set_app_users(&users).await?;
        Ok(())
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
        let now = now_ms();
        // Files: blocking I/O, off the async workers.
        let users = tokio::task::spawn_blocking(move || {
            apps.into_iter()
                .map(|app| {
                    let user = rules::app_user(&namespace, &app);
                    let credentials = dir.load_or_create(&app, &user, now)?;
                    Ok((app, credentials.hashes(now)))
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
