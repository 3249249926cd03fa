//! Fenced, batched writes of desired state and signals.

use redis::Value;

use super::{BATCH, Signal, SignalKind, Store, StoreError};
use crate::layout::AppName;
use crate::protocol::{DesiredRecord, ObservedRecord};

/// Everything one app's write changes, decided by `reconcile` and carried out
/// here atomically by `canopy_apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppWrite {
    pub app: AppName,
    /// The generation read from the store before deciding (0: none): the write is
    /// refused if the store holds another one by now.
    pub expected_generation: u64,
    pub op: WriteOp,
    /// The `desired` hash, replaced whole (a tombstone for a prune).
    pub desired: Vec<(&'static str, String)>,
    /// The `files` hash (path -> sha256 hex), replaced whole; empty for a prune.
    pub files: Vec<(String, String)>,
    /// The `config` hash, replaced whole; empty for a prune.
    pub config: Vec<(String, String)>,
    /// The signal to publish with it; `None` for a manual app (desired changes,
    /// nothing is signalled until someone asks).
    pub signal: Option<Signal>,
    /// Keep the signal in the store instead of publishing it, until the app's
    /// dependencies report Synced ([`Store::publish`] releases it).
    pub hold: bool,
}

/// One app's status record, written by [`Store::record_statuses`] when its
/// status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusWrite {
    pub app: AppName,
    /// The record's fields (`status`, `since`, `unsynced_since`, `reason`).
    pub fields: Vec<(&'static str, String)>,
    /// The drift signal the transition calls for, if any.
    pub drift: Option<DriftWrite>,
}

/// A drift signal (or resolution) and the key that makes it go out once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftWrite {
    /// The transition without any time in it (status, digests, generation):
    /// published only if the record's stored `drift_key` differs, then stored.
    pub key: String,
    pub signal: Signal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Put,
    Prune,
}

/// What [`Store::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Apps written.
    pub written: usize,
    /// Signals published.
    pub signals: usize,
    /// Signals published, per kind (`sync`, `config`, `prune`).
    pub kinds: std::collections::BTreeMap<&'static str, usize>,
    /// Signals held for dependencies.
    pub held: usize,
    /// Apps that were not written because the store changed under canopy
    /// (`StoreError::Conflict`); the others were written.
    pub conflicts: Vec<StoreError>,
}

impl Applied {
    /// Adds what a later call applied.
    pub fn absorb(&mut self, later: Applied) {
        self.written += later.written;
        self.signals += later.signals;
        for (kind, count) in later.kinds {
            *self.kinds.entry(kind).or_default() += count;
        }
        self.held += later.held;
        self.conflicts.extend(later.conflicts);
    }
}

impl Store {
    /// Writes every app in order, [`BATCH`] apps per round trip. Each app is
    /// written whole or not at all. Stops at the first batch that fails as a whole
    /// (connection lost, Redis lost canopy's data, fenced): apps of earlier batches
    /// stay written, which is safe because writing an app twice is a no-op.
    pub async fn apply(&mut self, writes: &[AppWrite]) -> Result<Applied, StoreError> {
        let mut applied = Applied::default();
        for batch in writes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for write in batch {
                pipe.add_command(self.apply_command(write));
            }
            let replies: Vec<Value> = pipe.query_async(&mut self.conn).await?;
            for (write, reply) in batch.iter().zip(replies) {
                match reply {
                    Value::ServerError(e) => {
                        match self.classify(e.into(), Some(write.app.as_str())) {
                            conflict @ StoreError::Conflict { .. } => {
                                applied.conflicts.push(conflict)
                            }
                            fatal => return Err(fatal),
                        }
                    }
                    _ => {
                        applied.written += 1;
                        match &write.signal {
                            Some(_) if write.hold => applied.held += 1,
                            Some(signal) => {
                                applied.signals += 1;
                                *applied.kinds.entry(signal.kind.as_str()).or_default() += 1;
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        Ok(applied)
    }

    fn apply_command(&self, write: &AppWrite) -> redis::Cmd {
        let keys = self.keys.app(&write.app);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("canopy_apply")
            .arg(9)
            .arg(self.keys.epoch())
            .arg(keys.desired())
            .arg(keys.files())
            .arg(keys.config())
            .arg(keys.events())
            .arg(self.keys.events())
            .arg(self.keys.apps())
            .arg(keys.status())
            .arg(self.keys.held())
            .arg(self.epoch())
            .arg(write.expected_generation)
            .arg(match write.op {
                WriteOp::Put => "put",
                WriteOp::Prune => "prune",
            })
            .arg(write.app.as_str())
            .arg(self.maxlen)
            .arg(keys.signal());
        match &write.signal {
            Some(signal) => cmd
                .arg(signal.to_json())
                .arg(signal.kind.as_str())
                .arg(signal.generation),
            None => cmd.arg("").arg("").arg(""),
        };
        cmd.arg(if write.hold { "1" } else { "0" });
        cmd.arg(write.desired.len() * 2);
        for (field, value) in &write.desired {
            cmd.arg(*field).arg(value);
        }
        for pairs in [&write.files, &write.config] {
            cmd.arg(pairs.len() * 2);
            for (field, value) in pairs {
                cmd.arg(field).arg(value);
            }
        }
        cmd
    }

    /// Signals `app`'s current desired state again (manual sync): a `sync` signal
    /// with the stored digest and generation, `previous_digest` being what the
    /// child reported. Nothing else changes. `Ok(None)`: the app has no desired
    /// state (unknown or pruned).
    pub async fn signal_now(
        &mut self,
        app: &AppName,
        now: i64,
    ) -> Result<Option<Signal>, StoreError> {
        let keys = self.keys.app(app);
        let (desired, observed): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .cmd("HMGET")
            .arg(keys.desired())
            .arg(DesiredRecord::FIELDS)
            .cmd("HMGET")
            .arg(keys.observed())
            .arg(ObservedRecord::FIELDS)
            .query_async(&mut self.conn)
            .await?;
        let desired = DesiredRecord::from_fetched(&keys.desired(), &desired)?;
        let observed = ObservedRecord::from_fetched(&keys.observed(), &observed)?;
        let Some((record, wanted)) = desired.as_ref().and_then(|d| Some((d, d.app.as_ref()?)))
        else {
            return Ok(None);
        };
        let signal = Signal {
            kind: SignalKind::Sync,
            app: app.to_string(),
            parent: wanted.parent.as_ref().map(ToString::to_string),
            revision: record.revision.clone(),
            digest: Some(wanted.digest.clone()),
            previous_digest: observed.map(|o| o.digest),
            config_digest: Some(wanted.config_digest.clone()),
            generation: record.generation,
            wave: wanted.wave,
            changed: Vec::new(),
            changed_total: 0,
            at: now,
            epoch: self.epoch(),
            drift: None,
        };
        Ok(self.publish(app, &signal).await?.then_some(signal))
    }

    /// Publishes `signal` for `app`'s current desired state (its generation must
    /// still be the stored one) and ends any hold; `Ok(false)` if the app has no
    /// desired state any more.
    pub async fn publish(&mut self, app: &AppName, signal: &Signal) -> Result<bool, StoreError> {
        let keys = self.keys.app(app);
        let result = redis::cmd("FCALL")
            .arg("canopy_signal")
            .arg(5)
            .arg(self.keys.epoch())
            .arg(keys.desired())
            .arg(keys.events())
            .arg(self.keys.events())
            .arg(self.keys.held())
            .arg(self.epoch())
            .arg(signal.generation)
            .arg(self.maxlen)
            .arg(keys.signal())
            .arg(signal.to_json())
            .arg(signal.kind.as_str())
            .arg(signal.at)
            .arg(app.as_str())
            .query_async::<String>(&mut self.conn)
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("NOAPP") => Ok(false),
            Err(e) => Err(self.classify(e, Some(app.as_str()))),
        }
    }

    /// Records the commit whose desired state is now fully written (fenced).
    pub async fn commit(&mut self, meta: &super::Meta) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("canopy_hset")
            .arg(2)
            .arg(self.keys.epoch())
            .arg(self.keys.meta())
            .arg(self.epoch());
        for (field, value) in meta.fields() {
            cmd.arg(field).arg(value);
        }
        cmd.query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| self.classify(e, None))
    }

    /// Records the source's error in `meta` (`None` clears it), so `canopy status`
    /// and the API show it. Fenced like every daemon write. The text must not
    /// hold secrets (source errors never do: URLs are shown without userinfo).
    pub async fn record_error(&mut self, error: Option<&str>, now: i64) -> Result<(), StoreError> {
        let (text, at) = match error {
            Some(text) => (text, now.to_string()),
            None => ("", String::new()),
        };
        redis::cmd("FCALL")
            .arg("canopy_hset")
            .arg(2)
            .arg(self.keys.epoch())
            .arg(self.keys.meta())
            .arg(self.epoch())
            .arg("error")
            .arg(text)
            .arg("error_at")
            .arg(at)
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| self.classify(e, None))
    }

    /// Writes status records, each with the drift signal its transition calls
    /// for, [`BATCH`] per round trip (`canopy_status`: fenced, record and signal
    /// together). For each record, whether its drift signal went out: `false`
    /// when it had none, or when the record already holds that drift key (the
    /// transition was signalled before: a retry, another evaluation of the same
    /// state). Each signal's `epoch` is set to this store's, the one the write is
    /// fenced with. Stops at the first failure, like [`Store::apply`]: records of
    /// earlier batches stay written, and writing one again is a no-op.
    pub async fn record_statuses(
        &mut self,
        records: &[StatusWrite],
    ) -> Result<Vec<bool>, StoreError> {
        let mut published = Vec::with_capacity(records.len());
        for batch in records.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for record in batch {
                pipe.add_command(self.status_command(record));
            }
            let replies: Vec<Value> = pipe.query_async(&mut self.conn).await?;
            for (record, reply) in batch.iter().zip(replies) {
                match reply {
                    Value::ServerError(e) => {
                        return Err(self.classify(e.into(), Some(record.app.as_str())));
                    }
                    // `OK`: no signal; a stream entry id: the signal went out.
                    Value::Okay => published.push(false),
                    _ => published.push(true),
                }
            }
        }
        Ok(published)
    }

    fn status_command(&self, record: &StatusWrite) -> redis::Cmd {
        let keys = self.keys.app(&record.app);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("canopy_status")
            .arg(4)
            .arg(self.keys.epoch())
            .arg(keys.status())
            .arg(keys.events())
            .arg(self.keys.events())
            .arg(self.epoch())
            .arg(self.maxlen)
            .arg(keys.signal())
            .arg(record.app.as_str());
        match &record.drift {
            Some(drift) => {
                let signal = Signal {
                    epoch: self.epoch(),
                    ..drift.signal.clone()
                };
                cmd.arg(&drift.key)
                    .arg(signal.to_json())
                    .arg(signal.generation)
            }
            None => cmd.arg("").arg("").arg(""),
        };
        for (field, value) in &record.fields {
            cmd.arg(*field).arg(value);
        }
        cmd
    }
}
