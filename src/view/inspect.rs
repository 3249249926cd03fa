//! The views of the store for people and scripts: the status overview, one app's
//! detail and its diff. Nothing here writes; printing them as text belongs to the
//! CLI.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::statuses::{AppStatus, evaluate, statuses};
use crate::layout::AppName;
use crate::plan::{FileChange, merge_manifests};
use crate::status::Record;
use crate::store::{Store, StoreError};

/// Every app's status (`canopy status --output json`, `GET /api/v1/apps`).
#[derive(Debug, Serialize)]
pub struct Overview {
    pub namespace: String,
    /// The last commit whose desired state is fully written.
    pub commit: Option<String>,
    /// The source's error while the daemon cannot fetch (the last good commit
    /// stays desired).
    pub source_error: Option<SourceProblem>,
    pub apps: Vec<AppStatus>,
}

/// The source's failure while it lasts: the daemon cannot fetch, and the last
/// good commit stays desired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceProblem {
    pub message: String,
    /// RFC 3339.
    pub since: String,
}

pub async fn overview(
    store: &mut Store,
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Result<Overview, StoreError> {
    let meta = store.meta().await?;
    let apps = statuses(store, now, sync_timeout).await?;
    let source_error = meta
        .as_ref()
        .and_then(|m| m.error.clone())
        .map(|(message, at)| SourceProblem {
            message,
            since: DateTime::from_timestamp_millis(at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
    Ok(Overview {
        namespace: store.namespace().to_owned(),
        // `meta` may hold only a source error, before any commit was written.
        commit: meta.map(|m| m.commit).filter(|c| !c.is_empty()),
        source_error,
        apps,
    })
}

/// Everything stored about one app but its secrets (`GET /api/v1/apps/<app>`).
#[derive(Debug, Serialize)]
pub struct AppDetail {
    pub app: AppName,
    /// Evaluated now, as in [`Overview`].
    #[serde(flatten)]
    pub record: Record,
    /// The `desired` hash as stored (a pruned app keeps a tombstone here).
    pub desired: Option<BTreeMap<String, String>>,
    /// The `observed` hash as the child reported it.
    pub observed: Option<BTreeMap<String, String>>,
    /// Whether the child's heartbeat is alive.
    pub heartbeat: bool,
    /// The app's `config` hash.
    pub config: BTreeMap<String, String>,
}

/// `None` when the store holds neither desired nor observed state for `app`.
pub async fn detail(
    store: &mut Store,
    app: &AppName,
    now: DateTime<Utc>,
    sync_timeout: chrono::Duration,
) -> Result<Option<AppDetail>, StoreError> {
    let state = store.app_states(&[app]).await?.remove(0);
    let Some(status) = evaluate(store.keys(), app, &state, now, sync_timeout) else {
        return Ok(None);
    };
    let config = store.app_config(app).await?;
    let sorted =
        |hash: HashMap<String, String>| (!hash.is_empty()).then(|| hash.into_iter().collect());
    Ok(Some(AppDetail {
        app: status.app,
        record: status.record,
        desired: sorted(state.desired),
        observed: sorted(state.observed),
        heartbeat: state.heartbeat.is_some(),
        config,
    }))
}

/// What an app's child runs against what Git wants (`canopy diff`,
/// `GET /api/v1/apps/<app>/diff`).
#[derive(Debug, Serialize)]
pub struct Diff {
    pub app: String,
    pub desired: Option<Side>,
    pub observed: Option<Side>,
    pub in_sync: bool,
    /// Per file, when the child reported its file list (`observed_files`).
    pub files: Option<Vec<FileChange>>,
    /// Desired file count, when the child reported no file list.
    pub desired_files: usize,
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub digest: String,
    pub generation: String,
    pub revision: String,
    /// The child's reported status, for the observed side.
    pub status: Option<String>,
}

/// `None` when the store holds neither a desired nor an observed digest for `app`.
pub async fn diff(store: &mut Store, app: &AppName) -> Result<Option<Diff>, StoreError> {
    let state = store.app_states(&[app]).await?.remove(0);
    let desired_files = store.stored_files(app).await?;
    let observed_files = store.observed_files(app).await?;
    let side = |hash: &HashMap<String, String>, status: bool| {
        let get = |f: &str| hash.get(f).cloned().unwrap_or_default();
        hash.contains_key("digest").then(|| Side {
            digest: get("digest"),
            generation: get("generation"),
            revision: get("revision"),
            status: status.then(|| get("status")),
        })
    };
    let desired = side(&state.desired, false);
    let observed = side(&state.observed, true);
    if desired.is_none() && observed.is_none() {
        return Ok(None);
    }
    let in_sync = matches!((&desired, &observed), (Some(d), Some(o)) if d.digest == o.digest);
    let files = (!observed_files.is_empty()).then(|| {
        merge_manifests(
            observed_files.iter().map(|(p, h)| (p.as_str(), h)),
            desired_files.iter().map(|(p, h)| (p.as_str(), h)),
        )
    });
    Ok(Some(Diff {
        app: app.to_string(),
        desired,
        observed,
        in_sync,
        files,
        desired_files: desired_files.len(),
    }))
}
