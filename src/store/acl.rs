//! Redis ACL users of the namespace's apps: created, updated and deleted as
//! the daemon says (`acl` decides the rules and keeps the passwords). Only
//! users named `canopy:<ns>:app:...` are ever touched. One pipelined round
//! trip per batch of apps.

use redis::Value;

use super::{BATCH, Store, StoreError};
use crate::acl::rules::{app_of_user, app_rules, app_user};
use crate::layout::AppName;

impl Store {
    /// Sets each app's user to exactly its rules, accepting the passwords whose
    /// sha256 are given (two during a rotation's grace).
    pub async fn set_app_users(
        &mut self,
        users: &[(AppName, Vec<String>)],
    ) -> Result<(), StoreError> {
        for batch in users.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (app, hashes) in batch {
                pipe.cmd("ACL")
                    .arg("SETUSER")
                    .arg(app_user(&self.namespace, app))
                    .arg(app_rules(&self.keys, app, hashes))
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.conn).await?;
        }
        Ok(())
    }

    /// Deletes the users of `apps` (those that exist).
    pub async fn delete_app_users(&mut self, apps: &[AppName]) -> Result<(), StoreError> {
        for batch in apps.chunks(BATCH) {
            let names: Vec<String> = batch
                .iter()
                .map(|app| app_user(&self.namespace, app))
                .collect();
            redis::cmd("ACL")
                .arg("DELUSER")
                .arg(names)
                .query_async::<Value>(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// The apps of this namespace that have a user.
    pub async fn app_users(&mut self) -> Result<Vec<AppName>, StoreError> {
        let users: Vec<String> = redis::cmd("ACL")
            .arg("USERS")
            .query_async(&mut self.conn)
            .await?;
        Ok(users
            .iter()
            .filter_map(|user| app_of_user(&self.namespace, user))
            .collect())
    }
}
