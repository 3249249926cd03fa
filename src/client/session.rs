//! [`Client`]: one app's side of the Redis protocol. Each method is one protocol
//! step of docs/protocol.md (sections 5 and 6), and nothing decides anything
//! here: what to do with an entry is `follow`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;

use super::ClientError;
use crate::config::Secret;
use crate::layout::AppName;
use crate::store::{AppKeys, CONSUMER_GROUP, Keys, Signal, StoreOptions};

/// Defaults of [`ClientOptions`], documented in one place.
pub mod defaults {
    use std::time::Duration;

    /// The heartbeat key's TTL; it is refreshed every third of it.
    pub const HEARTBEAT_TTL: Duration = Duration::from_secs(30);
    /// An entry pending this long on another consumer is taken over: well above
    /// the agent's default hook timeout (5 minutes), so a slow apply elsewhere is
    /// never run twice at once.
    pub const CLAIM_IDLE: Duration = Duration::from_secs(600);
    /// Deliveries of one entry before it goes to the dead-letter stream.
    pub const MAX_ATTEMPTS: u64 = 5;
    /// Wait before the first retry of a failed entry; doubles up to
    /// [`RETRY_DELAY_MAX`].
    pub const RETRY_DELAY: Duration = Duration::from_secs(5);
    pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(300);
    /// The stream is read at least this often, whatever pub/sub says.
    pub const POLL: Duration = Duration::from_secs(5);
    /// Deadline of one artifact download.
    pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
}

/// `MAXLEN ~` of the dead-letter stream.
const DEAD_MAXLEN: u64 = 1000;

/// How a child follows its app.
#[derive(Clone)]
pub struct ClientOptions {
    /// Redis URL, credentials, namespace and timeouts (the daemon's own type;
    /// `stream_maxlen` is unused here).
    pub redis: StoreOptions,
    pub app: AppName,
    /// The consumer name in the group, and the `reporter` of reports and the
    /// heartbeat. Keep it stable across restarts (a host or pod name): pending
    /// entries come back to the same name at once, to another only after
    /// [`claim_idle`](Self::claim_idle).
    pub consumer: String,
    /// The daemon's base URL (`http://canopy:8080`), for artifacts.
    pub server: Option<String>,
    /// Bearer token for the daemon's API, when reads need one.
    pub token: Option<Secret>,
    pub heartbeat_ttl: Duration,
    pub claim_idle: Duration,
    pub max_attempts: u64,
    pub retry_delay: Duration,
    pub poll: Duration,
    pub download_timeout: Duration,
}

impl ClientOptions {
    /// Options with the [`defaults`].
    pub fn new(redis: StoreOptions, app: AppName, consumer: String) -> ClientOptions {
        ClientOptions {
            redis,
            app,
            consumer,
            server: None,
            token: None,
            heartbeat_ttl: defaults::HEARTBEAT_TTL,
            claim_idle: defaults::CLAIM_IDLE,
            max_attempts: defaults::MAX_ATTEMPTS,
            retry_delay: defaults::RETRY_DELAY,
            poll: defaults::POLL,
            download_timeout: defaults::DOWNLOAD_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("redis", &self.redis)
            .field("app", &self.app)
            .field("consumer", &self.consumer)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// One app's connection to the protocol. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    pub(super) conn: ConnectionManager,
    /// For the pub/sub connection, which cannot share the managed one.
    pub(super) redis: redis::Client,
    pub(super) keys: AppKeys,
    pub(super) options: Arc<ClientOptions>,
    pub(super) http: reqwest::Client,
}

/// One entry of the app's stream, as delivered to this consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    /// Times the group delivered it, this time included. The count lives in
    /// Redis, so it survives a crash of the child.
    pub attempts: u64,
    /// The entry's fields (`kind`, `app`, `generation`, `payload`); `None` when
    /// the entry was trimmed from the stream (`MAXLEN`) while pending.
    pub fields: Option<Vec<(String, String)>>,
}

impl Delivery {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The signal in the `payload` field.
    pub fn signal(&self) -> Result<Signal, String> {
        let payload = self
            .field("payload")
            .ok_or("the entry has no payload field")?;
        serde_json::from_str(payload).map_err(|e| format!("unreadable payload: {e}"))
    }
}

/// What a child reports it runs (`:observed.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Synced,
    Failed,
    Progressing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Synced => "synced",
            Status::Failed => "failed",
            Status::Progressing => "progressing",
        }
    }
}

/// The outcome of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Accepted,
    /// A report of a higher generation is stored (another instance applied a
    /// newer signal): nothing changed, and retrying is pointless.
    Stale(String),
}

/// What the daemon currently wants, from `:desired`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub generation: u64,
    /// `None` once the app was pruned (a tombstone).
    pub digest: Option<String>,
    /// `sync: manual`: the generation grows without a signal.
    pub manual: bool,
    /// The app waits for others (`depends_on`): a newer signal may be held.
    pub depends_on: bool,
}

impl Client {
    /// Connects to Redis. Loads nothing and creates nothing: a child's ACL user
    /// may only touch its own keys.
    pub async fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        let (redis, conn) = crate::store::open(&options.redis).await?;
        let keys = Keys::new(&options.redis.namespace).app(&options.app);
        let http = reqwest::Client::builder()
            .timeout(options.download_timeout)
            .connect_timeout(options.redis.connect_timeout)
            .build()
            .map_err(ClientError::Http)?;
        Ok(Client {
            conn,
            redis,
            keys,
            options: Arc::new(options),
            http,
        })
    }

    pub fn app(&self) -> &AppName {
        &self.options.app
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn keys(&self) -> &AppKeys {
        &self.keys
    }

    pub(super) fn error(
        &self,
        what: &'static str,
    ) -> impl FnOnce(redis::RedisError) -> ClientError {
        let app = self.options.app.to_string();
        move |source| ClientError::Redis { app, what, source }
    }

    /// This consumer's oldest pending entry: one it read but never acknowledged
    /// (it crashed, or the entry failed and waits for a retry). Counts as a
    /// delivery.
    pub async fn read_pending(&self) -> Result<Option<Delivery>, ClientError> {
        let Some(mut delivery) = self.read_group("0").await? else {
            return Ok(None);
        };
        delivery.attempts = self.attempts(&delivery.id).await?;
        Ok(Some(delivery))
    }

    /// A new entry, never delivered to anyone.
    pub async fn read_new(&self) -> Result<Option<Delivery>, ClientError> {
        self.read_group(">").await
    }

    /// Takes over the oldest entry pending on any consumer for longer than
    /// `claim_idle` (a crashed instance with another name). Entries trimmed from
    /// the stream while pending are acknowledged on the way: nothing is left to
    /// process.
    pub async fn claim_stale(&self) -> Result<Option<Delivery>, ClientError> {
        let idle = u64::try_from(self.options.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut cursor = "0-0".to_owned();
        loop {
            let mut command = redis::cmd("XAUTOCLAIM");
            command
                .arg(self.keys.events())
                .arg(CONSUMER_GROUP)
                .arg(&self.options.consumer)
                .arg(idle)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1);
            let reply = self.with_group(&command).await?;
            let Some((next, mut claimed, deleted)) = parse_autoclaim(reply) else {
                return Ok(None);
            };
            for id in deleted {
                self.ack(&id).await?;
            }
            if let Some(mut delivery) = claimed.pop() {
                delivery.attempts = self.attempts(&delivery.id).await?;
                return Ok(Some(delivery));
            }
            if next == "0-0" {
                return Ok(None);
            }
            cursor = next;
        }
    }

    async fn read_group(&self, from: &str) -> Result<Option<Delivery>, ClientError> {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(CONSUMER_GROUP)
            .arg(&self.options.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(self.keys.events())
            .arg(from);
        let reply = self.with_group(&command).await?;
        Ok(parse_read(reply).into_iter().next())
    }

    /// Runs a group command on the app's stream; on `NOGROUP` (the app was never
    /// signalled, its first signal is held, or Redis lost data) creates the group
    /// as the daemon does, at `0`, and tries once more. `Nil` when the group
    /// cannot be created (a user without the right): nothing to read yet.
    async fn with_group(&self, command: &redis::Cmd) -> Result<Value, ClientError> {
        let mut conn = self.conn.clone();
        match command.query_async(&mut conn).await {
            Ok(value) => return Ok(value),
            Err(e) if e.code() == Some("NOGROUP") => {}
            Err(e) => return Err(self.error("reading the app's stream")(e)),
        }
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.events())
            .arg(CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => {
                tracing::debug!(app = %self.options.app, error = %e, "no consumer group yet");
                return Ok(Value::Nil);
            }
        }
        command
            .query_async(&mut conn)
            .await
            .map_err(self.error("reading the app's stream"))
    }

    /// The group's delivery count of a pending entry.
    async fn attempts(&self, id: &str) -> Result<u64, ClientError> {
        let reply: Value = redis::cmd("XPENDING")
            .arg(self.keys.events())
            .arg(CONSUMER_GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.error("reading the delivery count"))?;
        Ok(parse_pending_count(reply).unwrap_or(1))
    }

    pub async fn ack(&self, id: &str) -> Result<(), ClientError> {
        redis::cmd("XACK")
            .arg(self.keys.events())
            .arg(CONSUMER_GROUP)
            .arg(id)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(self.error("acknowledging an entry"))
    }

    /// Moves an entry to `:dead` with the error and acknowledges it, in one
    /// transaction: it is never both lost and acknowledged.
    pub async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), ClientError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let add = pipe
            .cmd("XADD")
            .arg(self.keys.dead())
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_MAXLEN)
            .arg("*")
            .arg("id")
            .arg(&delivery.id);
        for (field, value) in delivery.fields.iter().flatten() {
            if !matches!(field.as_str(), "id" | "error" | "attempts" | "consumer") {
                add.arg(field).arg(value);
            }
        }
        add.arg("error")
            .arg(error)
            .arg("attempts")
            .arg(delivery.attempts)
            .arg("consumer")
            .arg(&self.options.consumer)
            .ignore();
        pipe.cmd("XACK")
            .arg(self.keys.events())
            .arg(CONSUMER_GROUP)
            .arg(&delivery.id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(self.error("dead-lettering an entry"))
    }

    /// `canopy_report`: what this child runs now.
    pub async fn report(
        &self,
        status: Status,
        generation: u64,
        digest: &str,
        revision: &str,
        message: &str,
    ) -> Result<Reported, ClientError> {
        let reply: redis::RedisResult<()> = redis::cmd("FCALL")
            .arg("canopy_report")
            .arg(1)
            .arg(self.keys.observed())
            .arg(generation)
            .arg(digest)
            .arg(revision)
            .arg(status.as_str())
            .arg(message)
            .arg(&self.options.consumer)
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(()) => Ok(Reported::Accepted),
            Err(e) if e.code() == Some("STALE") => {
                Ok(Reported::Stale(e.detail().unwrap_or_default().to_owned()))
            }
            Err(e) if e.code() == Some("ERR") && e.detail().is_some() => {
                Err(ClientError::ReportRefused {
                    app: self.options.app.to_string(),
                    detail: e.detail().unwrap_or_default().to_owned(),
                })
            }
            Err(e) => Err(self.error("reporting")(e)),
        }
    }

    /// Stores the manifest this child runs (path -> sha256 hex), for `canopy diff`.
    pub async fn report_files(&self, manifest: &[(String, String)]) -> Result<(), ClientError> {
        let key = self.keys.observed_files();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for chunk in manifest.chunks(crate::store::BATCH) {
            pipe.hset_multiple(&key, chunk).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(self.error("storing the observed files"))
    }

    /// Refreshes the heartbeat key: the app is `stale` once it expires.
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        let ttl = self.options.heartbeat_ttl.as_millis().max(1);
        redis::cmd("SET")
            .arg(self.keys.heartbeat())
            .arg(&self.options.consumer)
            .arg("PX")
            .arg(u64::try_from(ttl).unwrap_or(u64::MAX))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(self.error("refreshing the heartbeat"))
    }

    /// After a `prune`: deletes this child's keys, so the app is not `orphaned`.
    pub async fn forget(&self) -> Result<(), ClientError> {
        redis::cmd("DEL")
            .arg(self.keys.observed())
            .arg(self.keys.observed_files())
            .arg(self.keys.heartbeat())
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(self.error("deleting the child's keys"))
    }

    /// The app's `config` (`:config`), as the daemon last wrote it.
    pub async fn config(&self) -> Result<BTreeMap<String, String>, ClientError> {
        redis::cmd("HGETALL")
            .arg(self.keys.config())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.error("reading the config"))
    }

    /// The app's secret values (`:secrets`); `None` when this user may not read
    /// them. The values are never logged.
    pub async fn secrets(&self) -> Result<Option<BTreeMap<String, String>>, ClientError> {
        let reply: redis::RedisResult<BTreeMap<String, String>> = redis::cmd("HGETALL")
            .arg(self.keys.secrets())
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(values) => Ok(Some(values)),
            Err(e) if e.code() == Some("NOPERM") => Ok(None),
            Err(e) => Err(self.error("reading the secrets")(e)),
        }
    }

    /// What the daemon wants now; `None` if it never wrote the app.
    pub async fn desired(&self) -> Result<Option<Desired>, ClientError> {
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.desired())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.error("reading the desired state"))?;
        if hash.is_empty() {
            return Ok(None);
        }
        Ok(Some(Desired {
            generation: hash
                .get("generation")
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
            digest: hash.get("digest").cloned(),
            manual: hash.get("sync").map(String::as_str) == Some("manual"),
            depends_on: hash.get("depends_on").is_some_and(|d| !d.is_empty()),
        }))
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// `[id, [field, value, ...] | nil]`.
fn parse_entry(value: Value) -> Option<Delivery> {
    let mut parts = items(value).into_iter();
    let id = text(&parts.next()?)?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(list) => {
            let flat: Vec<String> = items(list).iter().filter_map(text).collect();
            Some(
                flat.chunks_exact(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            )
        }
    };
    Some(Delivery {
        id,
        attempts: 1,
        fields,
    })
}

/// XREADGROUP's reply: `[[stream, [entry, ...]], ...]` (a map under RESP3).
fn parse_read(reply: Value) -> Vec<Delivery> {
    let streams = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        other => items(other)
            .into_iter()
            .filter_map(|s| items(s).into_iter().nth(1))
            .collect::<Vec<_>>(),
    };
    streams
        .into_iter()
        .flat_map(items)
        .filter_map(parse_entry)
        .collect()
}

/// XAUTOCLAIM's reply: `[next cursor, [entry, ...], [deleted id, ...]]`.
fn parse_autoclaim(reply: Value) -> Option<(String, Vec<Delivery>, Vec<String>)> {
    let mut parts = items(reply).into_iter();
    let next = text(&parts.next()?)?;
    let claimed = parts
        .next()
        .map(|v| items(v).into_iter().filter_map(parse_entry).collect())
        .unwrap_or_default();
    let deleted = parts
        .next()
        .map(|v| items(v).iter().filter_map(text).collect())
        .unwrap_or_default();
    Some((next, claimed, deleted))
}

/// XPENDING's extended reply: `[[id, consumer, idle ms, delivery count]]`.
fn parse_pending_count(reply: Value) -> Option<u64> {
    let first = items(reply).into_iter().next()?;
    let count = items(first).into_iter().nth(3)?;
    match count {
        Value::Int(n) => u64::try_from(n).ok(),
        other => text(&other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_replies_are_parsed_including_trimmed_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("canopy:default:app:{a}:events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("kind"),
                        bulk("sync"),
                        bulk("payload"),
                        bulk("{}"),
                    ]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read(reply);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].field("kind"), Some("sync"));
        assert_eq!(entries[1].id, "2-0");
        assert!(entries[1].fields.is_none());
        assert!(parse_read(Value::Nil).is_empty());

        let claim = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("kind"), bulk("prune")]),
            ])]),
            Value::Array(vec![bulk("1-0")]),
        ]);
        let (next, claimed, deleted) = parse_autoclaim(claim).expect("parsed");
        assert_eq!(next, "0-0");
        assert_eq!(claimed[0].field("kind"), Some("prune"));
        assert_eq!(deleted, vec!["1-0".to_owned()]);

        let pending = Value::Array(vec![Value::Array(vec![
            bulk("3-0"),
            bulk("me"),
            Value::Int(10),
            Value::Int(4),
        ])]);
        assert_eq!(parse_pending_count(pending), Some(4));
    }
}
