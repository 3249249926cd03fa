//! The connection to Redis and the daemon's handle on its namespace.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;

use super::{Keys, LIBRARY, LIBRARY_VERSION, StoreError};
use crate::protocol::{RedisOptions, RedisUrl, open};

/// A namespace of one Redis, as seen by one daemon (or one CLI command). Clones
/// share the connection and the epoch, so the HTTP server writes under the epoch
/// the reconciler holds, including after it claims a new one.
#[derive(Clone)]
pub struct Store {
    pub(super) conn: ConnectionManager,
    pub(super) keys: Keys,
    pub(super) namespace: String,
    /// The epoch this daemon writes under; 0 until [`Store::claim`].
    epoch: Arc<AtomicU64>,
    pub(super) maxlen: u64,
    url: RedisUrl,
}

/// What [`Store::check`] found, when canopy's data is there and the epoch ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Apps whose signal waits for their dependencies.
    pub held: usize,
    /// `meta.commit` when it is not the commit this daemon committed: the last
    /// writes were lost (an AOF `everysec` crash, a failover to a replica that
    /// had not received them), and every app must be compared again.
    pub rolled_back: Option<String>,
}

impl Store {
    /// Connects (within the connect timeout). Loads and claims nothing: readers
    /// (`canopy status`) write nothing; a daemon calls
    /// [`Store::prepare_functions`] before it writes.
    pub async fn connect(options: &RedisOptions) -> Result<Store, StoreError> {
        let (_, conn) = open(options).await?;
        Ok(Store {
            conn,
            keys: Keys::new(&options.namespace),
            namespace: options.namespace.clone(),
            epoch: Arc::default(),
            maxlen: options.stream_maxlen,
            url: options.url.clone(),
        })
    }

    /// The URL (it shows without credentials), for messages.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Makes sure Redis runs this canopy's Functions library: loads it when
    /// Redis holds none (a new Redis, or one that lost its data) or an older
    /// version, in one round trip when it is already there. A newer version is
    /// left alone and refused: an older binary must not swap the library under
    /// a newer daemon.
    pub async fn prepare_functions(&mut self) -> Result<(), StoreError> {
        let loaded: redis::RedisResult<i64> = redis::cmd("FCALL_RO")
            .arg("canopy_version")
            .arg(0)
            .query_async(&mut self.conn)
            .await;
        let loaded = match loaded {
            Ok(version) => Some(version),
            // No library, or one from before versions were declared.
            Err(e) if e.to_string().contains("Function not found") => None,
            Err(e) => return Err(StoreError::Functions(e)),
        };
        match loaded {
            Some(version) if version == LIBRARY_VERSION => Ok(()),
            Some(version) if version > LIBRARY_VERSION => {
                Err(StoreError::NewerLibrary { loaded: version })
            }
            _ => {
                redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg("REPLACE")
                    .arg(LIBRARY)
                    .query_async::<String>(&mut self.conn)
                    .await
                    .map_err(StoreError::Functions)?;
                Ok(())
            }
        }
    }

    /// Takes the next epoch (fencing token): from now on, writes of any daemon
    /// holding an older one are refused. Never goes below this store's last epoch.
    pub async fn claim(&mut self) -> Result<u64, StoreError> {
        let epoch: u64 = redis::cmd("FCALL")
            .arg("canopy_claim")
            .arg(1)
            .arg(self.keys.epoch())
            .arg(self.epoch())
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.classify(e, None))?;
        self.epoch.store(epoch, Ordering::Release);
        Ok(epoch)
    }

    /// One round trip: is canopy's data still there, and is the epoch still ours?
    /// `committed` is the `meta.commit` this daemon expects (the one it found at
    /// start or last wrote). `Err(Lost)` when the epoch key vanished, or `meta`
    /// did after it was committed (a restart without persistence, a flush,
    /// eviction); `Err(Fenced)` when another daemon claimed a newer epoch.
    pub async fn check(&mut self, committed: Option<&str>) -> Result<Checked, StoreError> {
        let replies: Vec<redis::Value> = redis::pipe()
            .ignore_errors()
            .get(self.keys.epoch())
            .hget(self.keys.meta(), "schema")
            .hget(self.keys.meta(), "commit")
            .scard(self.keys.held())
            .query_async(&mut self.conn)
            .await?;
        // `meta` and `held` of another type (written around canopy) read as
        // absent: the next fenced write replaces them. The epoch must read.
        let mut replies = replies.into_iter();
        let epoch: Option<u64> = match replies.next() {
            Some(redis::Value::ServerError(e)) => return Err(redis::RedisError::from(e).into()),
            value => redis::from_redis_value(value.unwrap_or(redis::Value::Nil))
                .map_err(redis::RedisError::from)?,
        };
        let schema: Option<u32> = lenient(replies.next()).flatten();
        let commit: Option<String> = lenient(replies.next()).flatten();
        let held: usize = lenient(replies.next()).unwrap_or(0);
        match epoch {
            None => Err(self.lost()),
            Some(e) if e != self.epoch() => Err(StoreError::Fenced {
                namespace: self.namespace.clone(),
                detail: format!("epoch is {e}, this daemon holds {}", self.epoch()),
            }),
            Some(_) if committed.is_some() && schema.is_none() => Err(self.lost()),
            Some(_) => Ok(Checked {
                held,
                // Only this daemon writes `meta.commit` while it holds the
                // epoch: another value means Redis lost its last writes.
                rolled_back: commit.filter(|stored| committed.is_some_and(|c| c != stored)),
            }),
        }
    }

    pub(super) fn lost(&self) -> StoreError {
        StoreError::Lost {
            namespace: self.namespace.clone(),
        }
    }

    /// Maps a reply of one of canopy's functions to its meaning (see canopy.lua).
    pub(super) fn classify(&self, error: redis::RedisError, app: Option<&str>) -> StoreError {
        let detail = || error.detail().unwrap_or_default().to_owned();
        match error.code() {
            Some("LOST") => self.lost(),
            Some("FENCED") => StoreError::Fenced {
                namespace: self.namespace.clone(),
                detail: detail(),
            },
            Some("CONFLICT") => StoreError::Conflict {
                app: app.unwrap_or_default().to_owned(),
                detail: detail(),
            },
            // A restart without persistence also loses the library itself.
            _ if error.to_string().contains("Function not found") => self.lost(),
            _ => StoreError::Redis(error),
        }
    }
}

/// A reply read as `T`, or `None` if it is an error or another type.
fn lenient<T: redis::FromRedisValue>(reply: Option<redis::Value>) -> Option<T> {
    reply.and_then(|value| redis::from_redis_value(value).ok())
}
