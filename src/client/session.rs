//! [`Client`]: one app's side of the Redis protocol. Each method is one protocol
//! step of docs/protocol.md (sections 5 and 6), and nothing decides anything
//! here: what to do with an entry is `follow`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};

use super::ClientError;
use crate::layout::AppName;
use crate::protocol::{AppKeys, CONSUMER_GROUP, DesiredRecord, Keys, RedisOptions, Secret, Signal};
use crate::status::ReportedState;

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
    /// Deadline to open a connection to the daemon.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest wait for the daemon's next bytes, the first included: it builds
    /// a tar from Git objects before it answers, in well under a second for
    /// usual apps.
    pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Largest artifact downloaded: what the daemon serves at most, its
    /// per-app cap on content plus the tar's headers.
    pub const MAX_ARTIFACT_BYTES: u64 = crate::limits::Limits::DEFAULT.max_tar_bytes();
}

/// `MAXLEN ~` of the dead-letter stream.
const DEAD_MAXLEN: u64 = 1000;

/// Manifest entries per `HSET` when storing the observed files.
const FILES_PER_HSET: usize = 500;

/// Opens the connections of `options`, with the credentials file's username
/// and password when it names one.
async fn open(options: &ClientOptions) -> Result<Connections, ClientError> {
    let mut redis = options.redis.clone();
    let mut password = None;
    if let Some(path) = &options.credentials_file {
        let credentials = crate::protocol::credentials::read(path)?
            .ok_or_else(|| ClientError::NoCredentials { path: path.clone() })?;
        redis.username = Some(credentials.username);
        redis.password = Some(credentials.password.clone());
        password = Some(credentials.password);
    }
    let (client, conn) = crate::protocol::open(&redis).await?;
    Ok(Connections {
        conn,
        redis: client,
        password,
    })
}

/// How a child follows its app. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Redis URL, credentials, namespace and timeouts (`stream_maxlen` is unused
    /// here).
    pub redis: RedisOptions,
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
    /// The app's credentials file (`redis.acl.credentials_dir`): when set, its
    /// `username` and `password` replace those of [`redis`](Self::redis).
    pub credentials_file: Option<std::path::PathBuf>,
    pub heartbeat_ttl: Duration,
    pub claim_idle: Duration,
    pub max_attempts: u64,
    pub retry_delay: Duration,
    pub poll: Duration,
    /// Deadline of a whole artifact download.
    pub download_timeout: Duration,
    /// Deadline to connect to the daemon.
    pub connect_timeout: Duration,
    /// Longest silence of the daemon while downloading.
    pub read_timeout: Duration,
    /// Largest artifact accepted, in bytes; a larger one fails without
    /// being read further.
    pub max_artifact_bytes: u64,
}

impl ClientOptions {
    /// Options with the [`defaults`].
    pub fn new(redis: RedisOptions, app: AppName, consumer: String) -> ClientOptions {
        ClientOptions {
            redis,
            app,
            consumer,
            server: None,
            token: None,
            credentials_file: None,
            heartbeat_ttl: defaults::HEARTBEAT_TTL,
            claim_idle: defaults::CLAIM_IDLE,
            max_attempts: defaults::MAX_ATTEMPTS,
            retry_delay: defaults::RETRY_DELAY,
            poll: defaults::POLL,
            download_timeout: defaults::DOWNLOAD_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            read_timeout: defaults::READ_TIMEOUT,
            max_artifact_bytes: defaults::MAX_ARTIFACT_BYTES,
        }
    }
}

/// One app's connection to the protocol. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    /// Replaced when the credentials file gets a new password
    /// ([`Client::refresh_credentials`]): every clone sees the new one.
    connections: Arc<RwLock<Connections>>,
    pub(super) keys: AppKeys,
    pub(super) options: Arc<ClientOptions>,
    pub(super) http: reqwest::Client,
}

/// The connections of a client, opened with one password.
#[derive(Clone)]
struct Connections {
    conn: ConnectionManager,
    /// For the pub/sub connection, which cannot share the managed one.
    redis: redis::Client,
    /// The password they were opened with, from the credentials file.
    password: Option<Secret>,
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

/// The outcome of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Accepted,
    /// A report of a higher generation is stored (another instance applied a
    /// newer signal): nothing changed, and retrying is pointless.
    Stale(String),
}

impl Client {
    /// Connects to Redis. Loads nothing and creates nothing: a child's ACL user
    /// may only touch its own keys.
    pub async fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        let connections = open(&options).await?;
        let keys = Keys::new(&options.redis.namespace).app(&options.app);
        let http = reqwest::Client::builder()
            .timeout(options.download_timeout)
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(ClientError::Http)?;
        Ok(Client {
            connections: Arc::new(RwLock::new(connections)),
            keys,
            options: Arc::new(options),
            http,
        })
    }

    pub fn app(&self) -> &AppName {
        &self.options.app
    }

    /// The managed connection (cheap: clones share it).
    pub(super) fn conn(&self) -> ConnectionManager {
        self.connections
            .read()
            .expect("never poisoned")
            .conn
            .clone()
    }

    /// A client for a pub/sub connection, with the current credentials.
    pub(super) fn pubsub_client(&self) -> redis::Client {
        self.connections
            .read()
            .expect("never poisoned")
            .redis
            .clone()
    }

    /// Reads the credentials file again ([`ClientOptions::credentials_file`])
    /// and, if its password changed (a rotation), opens new connections with it
    /// and uses them from now on; `Ok(true)` then. Connections already open
    /// stay authenticated, so nothing in flight is lost; a failure keeps the
    /// old connections, which work through the rotation's grace.
    pub async fn refresh_credentials(&self) -> Result<bool, ClientError> {
        let Some(path) = &self.options.credentials_file else {
            return Ok(false);
        };
        let fresh = crate::protocol::credentials::read(path)?;
        let current = self
            .connections
            .read()
            .expect("never poisoned")
            .password
            .clone();
        if fresh.is_none() || fresh.map(|c| c.password) == current {
            return Ok(false);
        }
        let connections = open(&self.options).await?;
        *self.connections.write().expect("never poisoned") = connections;
        Ok(true)
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
            if reply == Value::Nil {
                return Ok(None);
            }
            let reply: StreamAutoClaimReply = self.typed("XAUTOCLAIM", reply)?;
            for id in &reply.deleted_ids {
                self.ack(id).await?;
            }
            if let Some(entry) = reply.claimed.into_iter().next() {
                let mut delivery = self.delivery(entry)?;
                delivery.attempts = self.attempts(&delivery.id).await?;
                return Ok(Some(delivery));
            }
            if reply.next_stream_id == "0-0" {
                return Ok(None);
            }
            cursor = reply.next_stream_id;
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
        if reply == Value::Nil {
            return Ok(None);
        }
        let reply: StreamReadReply = self.typed("XREADGROUP", reply)?;
        reply
            .keys
            .into_iter()
            .flat_map(|key| key.ids)
            .next()
            .map(|entry| self.delivery(entry))
            .transpose()
    }

    /// A reply of the type its command promises, or an error naming the command:
    /// never a guess.
    fn typed<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        reply: Value,
    ) -> Result<T, ClientError> {
        redis::from_redis_value(reply).map_err(|e| ClientError::Reply {
            app: self.options.app.to_string(),
            command,
            detail: e.to_string(),
        })
    }

    /// An entry as delivered. Its fields are text (canopy writes nothing else);
    /// none at all means the entry was trimmed while pending (`XADD` never writes
    /// an entry without fields).
    fn delivery(&self, entry: StreamId) -> Result<Delivery, ClientError> {
        let fields = if entry.map.is_empty() {
            None
        } else {
            let mut fields = Vec::with_capacity(entry.map.len());
            for (name, value) in entry.map {
                let value: String = self.typed("a stream entry", value)?;
                fields.push((name, value));
            }
            Some(fields)
        };
        Ok(Delivery {
            id: entry.id,
            attempts: 1,
            fields,
        })
    }

    /// Runs a group command on the app's stream; on `NOGROUP` (the app was never
    /// signalled, its first signal is held, or Redis lost data) creates the group
    /// as the daemon does, at `0`, and tries once more. `Nil` when the group
    /// cannot be created (a user without the right): nothing to read yet.
    async fn with_group(&self, command: &redis::Cmd) -> Result<Value, ClientError> {
        let mut conn = self.conn();
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
            .query_async(&mut self.conn())
            .await
            .map_err(self.error("reading the delivery count"))?;
        let reply: StreamPendingCountReply = self.typed("XPENDING", reply)?;
        // Just delivered to this consumer, so pending unless someone acknowledged
        // it meanwhile: then there is nothing to process, and the next read says so.
        let pending = reply.ids.first().ok_or_else(|| ClientError::Reply {
            app: self.options.app.to_string(),
            command: "XPENDING",
            detail: format!("entry {id} is no longer pending"),
        })?;
        Ok(pending.times_delivered as u64)
    }

    pub async fn ack(&self, id: &str) -> Result<(), ClientError> {
        redis::cmd("XACK")
            .arg(self.keys.events())
            .arg(CONSUMER_GROUP)
            .arg(id)
            .query_async::<()>(&mut self.conn())
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
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(self.error("dead-lettering an entry"))
    }

    /// `canopy_report`: what this child runs now.
    pub async fn report(
        &self,
        status: ReportedState,
        generation: u64,
        digest: &str,
        revision: &str,
        message: &str,
    ) -> Result<Reported, ClientError> {
        // Both keys declared: the function reads the desired generation, and
        // ACL key checks and Redis Cluster go by the declared keys.
        let reply: redis::RedisResult<()> = redis::cmd("FCALL")
            .arg("canopy_report")
            .arg(2)
            .arg(self.keys.observed())
            .arg(self.keys.desired())
            .arg(generation)
            .arg(digest)
            .arg(revision)
            .arg(status.as_str())
            .arg(message)
            .arg(&self.options.consumer)
            .query_async(&mut self.conn())
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
        for chunk in manifest.chunks(FILES_PER_HSET) {
            pipe.hset_multiple(&key, chunk).ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
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
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(self.error("refreshing the heartbeat"))
    }

    /// After a `prune`: deletes this child's keys, so the app is not `orphaned`.
    pub async fn forget(&self) -> Result<(), ClientError> {
        redis::cmd("DEL")
            .arg(self.keys.observed())
            .arg(self.keys.observed_files())
            .arg(self.keys.heartbeat())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(self.error("deleting the child's keys"))
    }

    /// The app's `config` (`:config`), as the daemon last wrote it.
    pub async fn config(&self) -> Result<BTreeMap<String, String>, ClientError> {
        redis::cmd("HGETALL")
            .arg(self.keys.config())
            .query_async(&mut self.conn())
            .await
            .map_err(self.error("reading the config"))
    }

    /// The app's secret values (`:secrets`); `None` when this user may not read
    /// them. The values are never logged.
    pub async fn secrets(&self) -> Result<Option<BTreeMap<String, String>>, ClientError> {
        let reply: redis::RedisResult<BTreeMap<String, String>> = redis::cmd("HGETALL")
            .arg(self.keys.secrets())
            .query_async(&mut self.conn())
            .await;
        match reply {
            Ok(values) => Ok(Some(values)),
            Err(e) if e.code() == Some("NOPERM") => Ok(None),
            Err(e) => Err(self.error("reading the secrets")(e)),
        }
    }

    /// What the daemon wants now; `None` if it never wrote the app.
    pub async fn desired(&self) -> Result<Option<DesiredRecord>, ClientError> {
        let key = self.keys.desired();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(self.error("reading the desired state"))?;
        Ok(DesiredRecord::decode(&key, &hash)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RedisUrl;
    use crate::redis_launch::{EmbeddedRedis, LaunchOptions};

    async fn client(redis: &EmbeddedRedis, consumer: &str) -> Client {
        let options = RedisOptions {
            url: RedisUrl::parse(&redis.url()).expect("the launcher's URL"),
            username: None,
            password: None,
            namespace: "t".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            stream_maxlen: 100,
        };
        let app = AppName::parse("payments/api").expect("valid name");
        let mut options = ClientOptions::new(options, app, consumer.to_owned());
        options.claim_idle = Duration::ZERO;
        Client::connect(options).await.expect("connect")
    }

    /// The typed replies of a real Redis, including the shapes a hand-written
    /// parser got wrong: a pending entry trimmed from the stream (`[id, nil]`),
    /// and `XAUTOCLAIM`'s deleted ids.
    #[tokio::test(flavor = "current_thread")]
    async fn stream_replies_are_typed_including_trimmed_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = EmbeddedRedis::start(LaunchOptions::new(dir.path().join("redis")))
            .expect("redis-server starts");
        let me = client(&redis, "me").await;
        let mut conn = me.conn();
        let stream = me.keys().events();
        assert!(
            me.read_new()
                .await
                .expect("no group yet is no entry")
                .is_none()
        );
        for kind in ["sync", "config"] {
            let _: String = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("kind")
                .arg(kind)
                .arg("payload")
                .arg("{}")
                .query_async(&mut conn)
                .await
                .expect("XADD");
        }

        let first = me.read_new().await.expect("read").expect("an entry");
        assert_eq!((first.attempts, first.field("kind")), (1, Some("sync")));
        let again = me.read_pending().await.expect("read").expect("pending");
        assert_eq!((again.id.as_str(), again.attempts), (first.id.as_str(), 2));
        assert_eq!(again.field("payload"), Some("{}"));

        let _: u64 = redis::cmd("XTRIM")
            .arg(&stream)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("XTRIM");
        let trimmed = me.read_pending().await.expect("read").expect("pending");
        assert_eq!(trimmed.id, first.id);
        assert!(trimmed.fields.is_none(), "{trimmed:?}");

        // Another consumer finds the trimmed entry among XAUTOCLAIM's deleted ids
        // and acknowledges it: nothing is left pending.
        let other = client(&redis, "other").await;
        assert!(other.claim_stale().await.expect("claim").is_none());
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(CONSUMER_GROUP)
            .arg("-")
            .arg("+")
            .arg(10)
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        assert!(pending.ids.is_empty(), "{pending:?}");
    }
}
