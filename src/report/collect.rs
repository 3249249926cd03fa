//! Reads what a report needs from the store: the status overview (evaluated by
//! `crate::view`, never here), the repository, and the parents of the
//! apps it lists.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::model::{Header, Report, build};
use crate::layout::AppName;
use crate::status::Status;
use crate::store::{Store, StoreError};
use crate::view;

/// A report of the store's state at `now`, for `slot` of report `name`.
pub async fn collect(
    store: &mut Store,
    name: &str,
    slot: DateTime<Utc>,
    late: bool,
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Result<Report, StoreError> {
    let overview = view::overview(store, now, sync_timeout).await?;
    let repo = store.meta().await?.map(|m| m.repo);
    // Parents only of the apps listed: the synced majority costs nothing more.
    let listed: Vec<&AppName> = overview
        .apps
        .iter()
        .filter(|a| a.record.status != Status::Synced)
        .map(|a| &a.app)
        .collect();
    let parents: BTreeMap<String, String> = listed
        .iter()
        .zip(store.parents(&listed).await?)
        .filter_map(|(app, parent)| Some((app.to_string(), parent?)))
        .collect();
    let header = Header {
        name: name.to_owned(),
        slot,
        late,
        generated_at: now,
        repo,
    };
    Ok(build(&header, &overview, &parents))
}
