//! Reads: what the daemon needs to decide writes, and what `status` and `diff`
//! show. Batched like the writes: one round trip per [`BATCH`] apps.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redis::{AsyncCommands, Value};

use super::{BATCH, Store, StoreError, StoredDesired};
use crate::layout::AppName;
use crate::protocol::records;
use crate::protocol::{DesiredRecord, ObservedRecord, SCHEMA_VERSION};
use crate::status::ReportedState;

/// The values of one `HMGET`, in the order of the fields asked for.
type Fetched = Vec<Option<String>>;

/// The one field of `:observed` that deciding a write needs.
const GENERATION: &[&str] = &["generation"];

/// Keys per SCAN step when looking for observed states.
const SCAN_COUNT: usize = 5000;

/// `canopy:<ns>:meta`: which commit the stored desired state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The repository URL, without credentials.
    pub repo: String,
    pub reference: String,
    /// The last commit whose desired state is fully written.
    pub commit: String,
    /// What else decides the desired state of a commit (canopy's version and the
    /// layout options), as a digest: a restart may trust `commit` only if equal.
    pub layout: String,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// The source's last error while it lasts (the last good commit stays
    /// desired), and since when (Unix ms). Written by [`Store::record_error`],
    /// never by a commit.
    pub error: Option<(String, i64)>,
}

impl Meta {
    /// Whether both describe the same source: repository, ref and layout.
    pub fn same_source(&self, other: &Meta) -> bool {
        (&self.repo, &self.reference, &self.layout)
            == (&other.repo, &other.reference, &other.layout)
    }

    pub(super) fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("schema", SCHEMA_VERSION.to_string()),
            ("repo", self.repo.clone()),
            ("ref", self.reference.clone()),
            ("commit", self.commit.clone()),
            ("layout", self.layout.clone()),
            ("updated_at", self.updated_at.to_string()),
        ]
    }
}

/// An app whose signal waits for its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldApp {
    pub app: AppName,
    pub depends_on: Vec<AppName>,
    /// The held signal (JSON), as written with the desired state.
    pub payload: Option<String>,
    /// When the desired state was written (Unix ms).
    pub since: i64,
}

/// Everything stored about one app, as raw hashes (status and diff interpret it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppState {
    pub desired: HashMap<String, String>,
    pub observed: HashMap<String, String>,
    /// Why `:observed` could not be read at all (a key of another type).
    pub observed_error: Option<String>,
    /// The heartbeat's value (the reporter id), if it has not expired.
    pub heartbeat: Option<String>,
    /// The daemon's status record.
    pub record: HashMap<String, String>,
}

impl Store {
    /// The stored desired state of each app (None: never written).
    pub async fn stored_desired(
        &mut self,
        apps: &[&AppName],
    ) -> Result<Vec<Option<StoredDesired>>, StoreError> {
        let mut out = Vec::with_capacity(apps.len());
        for batch in apps.chunks(BATCH) {
            let mut pipe = redis::pipe();
            // A child's key of the wrong type fails its own command only.
            pipe.ignore_errors();
            for app in batch {
                let keys = self.keys.app(app);
                pipe.cmd("HMGET")
                    .arg(keys.desired())
                    .arg(DesiredRecord::FIELDS)
                    .hget(keys.observed(), "generation");
            }
            let replies: Vec<Value> = pipe.query_async(&mut self.conn).await?;
            let mut replies = replies.into_iter();
            for app in batch {
                let keys = self.keys.app(app);
                let (desired, observed) = (next(&mut replies), next(&mut replies));
                let (desired_key, observed_key) = (keys.desired(), keys.observed());
                let desired = fetched(desired, &desired_key);
                let readable_generation = desired.as_ref().ok().and_then(|values| {
                    let fields = records::Fetched {
                        names: DesiredRecord::FIELDS,
                        values,
                    };
                    records::generation_of(&desired_key, &fields).ok().flatten()
                });
                let desired = desired.and_then(|values| {
                    DesiredRecord::from_fetched(&desired_key, &values).map_err(|e| e.to_string())
                });
                let observed = fetched(observed, &observed_key).and_then(|values| {
                    let fields = records::Fetched {
                        names: GENERATION,
                        values: &values,
                    };
                    records::generation_of(&observed_key, &fields).map_err(|e| e.to_string())
                });
                out.push(StoredDesired::from_records(
                    desired,
                    readable_generation,
                    observed,
                ));
            }
        }
        Ok(out)
    }

    /// An app's stored manifest: path -> sha256 hex.
    pub async fn stored_files(
        &mut self,
        app: &AppName,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.conn.hgetall(self.keys.app(app).files()).await?)
    }

    /// The stored manifests of several apps, [`BATCH`] per round trip.
    pub async fn stored_files_of(
        &mut self,
        apps: &[&AppName],
    ) -> Result<Vec<BTreeMap<String, String>>, StoreError> {
        let mut out = Vec::with_capacity(apps.len());
        for batch in apps.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for app in batch {
                pipe.hgetall(self.keys.app(app).files());
            }
            let replies: Vec<BTreeMap<String, String>> = pipe.query_async(&mut self.conn).await?;
            out.extend(replies);
        }
        Ok(out)
    }

    /// Apps whose signal is held for their dependencies, with what deciding to
    /// release it needs.
    pub async fn held(&mut self) -> Result<Vec<HeldApp>, StoreError> {
        let raw: Vec<String> = self.conn.smembers(self.keys.held()).await?;
        let names: Vec<AppName> = valid_names(raw, "held set").into_iter().collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for app in &names {
            pipe.cmd("HMGET")
                .arg(self.keys.app(app).desired())
                .arg(&["depends_on", "held_payload", "signalled_at"][..]);
        }
        let replies: Vec<(Option<String>, Option<String>, Option<String>)> =
            pipe.query_async(&mut self.conn).await?;
        Ok(names
            .into_iter()
            .zip(replies)
            .map(|(app, (depends_on, payload, since))| HeldApp {
                depends_on: valid_names(
                    depends_on
                        .unwrap_or_default()
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    "depends_on",
                )
                .into_iter()
                .collect(),
                payload,
                since: since.and_then(|s| s.parse().ok()).unwrap_or_default(),
                app,
            })
            .collect())
    }

    /// Whether each app runs its current desired digest: its child reported
    /// `synced` with it and its heartbeat is alive.
    pub async fn synced_now(&mut self, apps: &[&AppName]) -> Result<Vec<bool>, StoreError> {
        if apps.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for app in apps {
            let keys = self.keys.app(app);
            pipe.cmd("HMGET")
                .arg(keys.desired())
                .arg(DesiredRecord::FIELDS)
                .cmd("HMGET")
                .arg(keys.observed())
                .arg(ObservedRecord::FIELDS)
                .exists(keys.heartbeat());
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn).await?;
        let mut replies = replies.into_iter();
        Ok(apps
            .iter()
            .map(|app| {
                let keys = self.keys.app(app);
                let (desired, observed) = (next(&mut replies), next(&mut replies));
                let alive = redis::from_redis_value::<bool>(next(&mut replies)).unwrap_or(false);
                let (desired_key, observed_key) = (keys.desired(), keys.observed());
                let desired = fetched(desired, &desired_key).and_then(|values| {
                    DesiredRecord::from_fetched(&desired_key, &values).map_err(|e| e.to_string())
                });
                let observed = fetched(observed, &observed_key).and_then(|values| {
                    ObservedRecord::from_fetched(&observed_key, &values).map_err(|e| e.to_string())
                });
                // Synced as `canopy status` would say it: a stale child is not,
                // nor one whose records cannot be read (its status says why).
                match (desired, observed) {
                    (Ok(Some(desired)), Ok(Some(observed))) => {
                        alive
                            && desired.digest() == Some(observed.digest.as_str())
                            && observed.status == ReportedState::Synced
                    }
                    _ => false,
                }
            })
            .collect())
    }

    /// The manifest a child says it runs (empty if it reports none).
    pub async fn observed_files(
        &mut self,
        app: &AppName,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self
            .conn
            .hgetall(self.keys.app(app).observed_files())
            .await?)
    }

    /// An app's `config` hash (never its secrets).
    pub async fn app_config(
        &mut self,
        app: &AppName,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.conn.hgetall(self.keys.app(app).config()).await?)
    }

    /// One PING: whether Redis answers at all (readiness). Bounded by the
    /// connection's response timeout; callers that need a shorter bound wrap it.
    pub async fn ping(&mut self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// The names in `canopy:<ns>:apps`. Names that are not valid app names (written
    /// by someone else) are skipped with a warning: they must never reach a key.
    pub async fn app_names(&mut self) -> Result<BTreeSet<AppName>, StoreError> {
        let raw: Vec<String> = self.conn.smembers(self.keys.apps()).await?;
        Ok(valid_names(raw, "canopy apps set"))
    }

    /// Apps that have observed state (children reported), whether or not they are
    /// still in Git: a SCAN, for `status` and reports, never on the poll path.
    pub async fn observed_apps(&mut self) -> Result<BTreeSet<AppName>, StoreError> {
        let pattern = self.keys.app_pattern("observed");
        // A large COUNT: the keyspace holds several keys per app, and the default
        // (10) would cost one round trip per few apps.
        let options = redis::ScanOptions::default()
            .with_pattern(pattern)
            .with_count(SCAN_COUNT);
        let mut iter: redis::AsyncIter<String> = self.conn.scan_options(options).await?;
        let mut raw = Vec::new();
        while let Some(key) = iter.next_item().await {
            if let Some(app) = self.keys.app_of(&key?) {
                raw.push(app.to_owned());
            }
        }
        drop(iter);
        Ok(valid_names(raw, "observed keys"))
    }

    pub async fn meta(&mut self) -> Result<Option<Meta>, StoreError> {
        let fields: HashMap<String, String> = self.conn.hgetall(self.keys.meta()).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let get = |f: &str| fields.get(f).cloned().unwrap_or_default();
        Ok(Some(Meta {
            repo: get("repo"),
            reference: get("ref"),
            commit: get("commit"),
            layout: get("layout"),
            updated_at: get("updated_at").parse().unwrap_or_default(),
            error: Some(get("error"))
                .filter(|e| !e.is_empty())
                .map(|e| (e, get("error_at").parse().unwrap_or_default())),
        }))
    }

    /// Desired, observed, heartbeat and status record of each app.
    pub async fn app_states(&mut self, apps: &[&AppName]) -> Result<Vec<AppState>, StoreError> {
        let mut out = Vec::with_capacity(apps.len());
        for batch in apps.chunks(BATCH) {
            let mut pipe = redis::pipe();
            // A child's key of the wrong type answers an error for that command
            // alone; it must not fail the batch.
            pipe.ignore_errors();
            for app in batch {
                let keys = self.keys.app(app);
                pipe.hgetall(keys.desired())
                    .hgetall(keys.observed())
                    .get(keys.heartbeat())
                    .hgetall(keys.status());
            }
            let replies: Vec<Value> = pipe.query_async(&mut self.conn).await?;
            let mut replies = replies.into_iter();
            for app in batch {
                let keys = self.keys.app(app);
                let r = &mut replies;
                let (desired, observed, heartbeat, record) = (next(r), next(r), next(r), next(r));
                let daemon_hash = |value, key: String| {
                    hash(value, &key).unwrap_or_else(|e| {
                        tracing::warn!(%app, error = %e, "ignoring an unreadable hash");
                        HashMap::new()
                    })
                };
                let (observed, observed_error) = match hash(observed, &keys.observed()) {
                    Ok(observed) => (observed, None),
                    Err(e) => (HashMap::new(), Some(e)),
                };
                out.push(AppState {
                    desired: daemon_hash(desired, keys.desired()),
                    observed,
                    observed_error,
                    heartbeat: match heartbeat {
                        Value::Nil => None,
                        // Of another type, it still exists: the child is there.
                        Value::ServerError(_) => Some(String::new()),
                        value => Some(
                            redis::from_redis_value::<Vec<u8>>(value)
                                .map(|h| String::from_utf8_lossy(&h).into_owned())
                                .unwrap_or_default(),
                        ),
                    },
                    record: daemon_hash(record, keys.status()),
                });
            }
        }
        Ok(out)
    }
}

/// The next reply of a pipeline (`Nil` past its end, which a pipeline of known
/// length never reaches).
fn next(replies: &mut impl Iterator<Item = Value>) -> Value {
    replies.next().unwrap_or(Value::Nil)
}

/// The values of an `HMGET` (or one `HGET`) of a pipeline sent with
/// `ignore_errors`; `Err` names the key when Redis refused the command (a key of
/// another type) or a value is not text.
fn fetched(value: Value, key: &str) -> Result<Fetched, String> {
    match value {
        Value::ServerError(e) => Err(format!("{key}: {}", redis::RedisError::from(e))),
        Value::Nil => Ok(vec![None]),
        Value::BulkString(_) => redis::from_redis_value::<Option<String>>(value)
            .map(|v| vec![v])
            .map_err(|e| format!("{key}: {e}")),
        value => redis::from_redis_value(value).map_err(|e| format!("{key}: {e}")),
    }
}

/// One hash of a pipeline sent with `ignore_errors`, bytes first and text after:
/// a child that wrote invalid UTF-8 must not make anything unreadable. `Err`
/// names the key when Redis refused the command (a key of another type).
fn hash(value: Value, key: &str) -> Result<HashMap<String, String>, String> {
    let bytes: HashMap<Vec<u8>, Vec<u8>> = match value {
        Value::ServerError(e) => return Err(format!("{key}: {}", redis::RedisError::from(e))),
        value => redis::from_redis_value(value).map_err(|e| format!("{key}: {e}"))?,
    };
    Ok(lossy(bytes))
}

fn lossy(hash: HashMap<Vec<u8>, Vec<u8>>) -> HashMap<String, String> {
    hash.into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

fn valid_names(raw: Vec<String>, what: &str) -> BTreeSet<AppName> {
    raw.into_iter()
        .filter_map(|name| match AppName::parse(&name) {
            Ok(app) => Some(app),
            Err(e) => {
                tracing::warn!(%e, "ignoring an invalid app name in {what}");
                None
            }
        })
        .collect()
}
