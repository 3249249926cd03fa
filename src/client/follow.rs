//! [`follow`]: the at-least-once loop of a child (docs/protocol.md section 5).
//!
//! One entry at a time, oldest first: this consumer's own pending entry (after a
//! crash, or a failure waiting for its retry), else an entry idle too long on
//! another consumer (`XAUTOCLAIM`), else a new one. A signal for the digest the
//! child already runs is reported again and acknowledged without applying. A
//! failure is reported `failed` and retried with exponential backoff; after
//! `max_attempts` deliveries it goes to `:dead`. Redis errors never end the loop:
//! it backs off and reads the stream again, so a reconnect loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::session::defaults::RETRY_DELAY_MAX;
use super::{Client, ClientError, Delivery, Reported};
use crate::backoff::exponential;
use crate::protocol::{Signal, SignalKind};
use crate::status::{ReportedState, SyncMode};

/// What a handler's failure says; it becomes the report's `message`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The result of applying a signal.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The report's `message` (what was done).
    pub message: String,
    /// The manifest now running (path -> sha256 hex), stored in
    /// `:observed_files` for `canopy diff`; `None` leaves it as it is.
    pub manifest: Option<Vec<(String, String)>>,
}

/// What "applying" means to the embedding service.
pub trait Handler: Send {
    /// The digest this child runs now: a signal for it is a duplicate.
    fn running(&self) -> Option<String>;

    /// The app's files changed (`sync`), or it drifted from its desired digest
    /// (`drift`): run what the signal names, at `signal.revision`.
    fn sync(
        &mut self,
        client: &Client,
        signal: &Signal,
    ) -> impl Future<Output = Result<Applied, HandlerError>> + Send;

    /// Only the app's `config` or secrets changed: reload them.
    fn config(
        &mut self,
        client: &Client,
        signal: &Signal,
    ) -> impl Future<Output = Result<Applied, HandlerError>> + Send;

    /// The app was removed from Git: tear it down. The child's keys are deleted
    /// after it returns `Ok`.
    fn prune(
        &mut self,
        client: &Client,
        signal: &Signal,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Follows the client's app until `shutdown`. The entry being applied when it is
/// cancelled is finished first (the caller bounds how long it waits).
pub async fn follow<H: Handler>(client: &Client, handler: &mut H, shutdown: CancellationToken) {
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let beating = Arc::new(AtomicBool::new(true));
    let waker = tokio::spawn(wake_on_messages(client.clone(), wake.clone(), stop.clone()));
    let heart = tokio::spawn(keep_heartbeat(
        client.clone(),
        beating.clone(),
        stop.clone(),
    ));
    let mut follower = Follower {
        client,
        handler,
        beating,
        retry_at: None,
    };
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let wait = match follower.step().await {
            Ok(Some(wait)) => {
                failures = 0;
                wait
            }
            Ok(None) => {
                failures = 0;
                continue;
            }
            Err(e) => {
                failures += 1;
                let wait = exponential(
                    Duration::from_millis(500),
                    failures,
                    Duration::from_secs(30),
                );
                tracing::warn!(app = %client.app(), error = %crate::error_chain(&e), ?wait, "reading signals failed; retrying");
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    stop.cancel();
    let _ = tokio::join!(waker, heart);
}

struct Follower<'a, H> {
    client: &'a Client,
    handler: &'a mut H,
    /// Off after a prune, until the app is applied again.
    beating: Arc<AtomicBool>,
    /// When this consumer's failed pending entry may be tried again.
    retry_at: Option<Instant>,
}

impl<H: Handler> Follower<'_, H> {
    /// Processes one entry: `Ok(None)` if it did (look for the next at once),
    /// `Ok(Some(wait))` if there was nothing to do for now.
    async fn step(&mut self) -> Result<Option<Duration>, ClientError> {
        let poll = self.client.options().poll;
        if self.client.refresh_credentials().await? {
            tracing::info!(app = %self.client.app(), "the credentials file has a new password: reconnected with it");
        }
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if now < at {
                return Ok(Some(at - now));
            }
        }
        let delivery = match self.client.read_pending().await? {
            Some(d) => d,
            None => match self.client.claim_stale().await? {
                Some(d) => d,
                None => match self.client.read_new().await? {
                    Some(d) => d,
                    None => return Ok(Some(poll)),
                },
            },
        };
        self.retry_at = None;
        self.process(&delivery).await?;
        Ok(None)
    }

    async fn process(&mut self, delivery: &Delivery) -> Result<(), ClientError> {
        let client = self.client;
        let app = client.app().as_str();
        if delivery.fields.is_none() {
            tracing::info!(app, id = %delivery.id, "entry trimmed from the stream before it was processed");
            return client.ack(&delivery.id).await;
        }
        let signal = match delivery.signal() {
            Ok(signal) if signal.app == app => signal,
            Ok(signal) => {
                let error = format!("a signal for app {} on this app's stream", signal.app);
                return self.dead_letter(delivery, None, &error).await;
            }
            Err(error) => return self.dead_letter(delivery, None, &error).await,
        };
        let max = client.options().max_attempts;
        if delivery.attempts > max {
            let error = format!(
                "delivered {} times without success (the child may have crashed while applying it)",
                delivery.attempts
            );
            return self.dead_letter(delivery, Some(&signal), &error).await;
        }
        let span = tracing::info_span!(
            "apply",
            app,
            kind = %signal.kind,
            generation = signal.generation,
            entry = %delivery.id,
            attempt = delivery.attempts,
        );
        let outcome = match signal.kind {
            SignalKind::Prune => self.prune(&signal).instrument(span).await,
            SignalKind::Sync | SignalKind::Config | SignalKind::Drift => {
                self.apply(delivery, &signal).instrument(span).await?
            }
        };
        match outcome {
            Ok(()) => client.ack(&delivery.id).await,
            Err(error) if delivery.attempts >= max => {
                let error = format!("failed {} times: {error}", delivery.attempts);
                self.dead_letter(delivery, Some(&signal), &error).await
            }
            Err(error) => {
                let wait = exponential(
                    client.options().retry_delay,
                    delivery.attempts as u32,
                    RETRY_DELAY_MAX,
                );
                tracing::warn!(app, id = %delivery.id, attempt = delivery.attempts, %error, ?wait, "signal failed; retrying");
                self.retry_at = Some(Instant::now() + wait);
                Ok(())
            }
        }
    }

    /// `Ok(Err(message))`: the handler failed (reported); the entry stays pending.
    async fn apply(
        &mut self,
        delivery: &Delivery,
        signal: &Signal,
    ) -> Result<Result<(), String>, ClientError> {
        let client = self.client;
        let app = client.app().as_str();
        // A drift of an orphaned app names no desired digest: nothing to run.
        let Some(digest) = signal.digest.as_deref() else {
            tracing::info!(app, kind = %signal.kind, "signal without a desired digest: nothing to apply");
            return Ok(Ok(()));
        };
        if self.handler.running().as_deref() == Some(digest) {
            if signal.kind != SignalKind::Drift {
                let message = format!("already running {digest}");
                self.report(ReportedState::Synced, signal, digest, &message)
                    .await?;
            }
            tracing::info!(app, %digest, generation = signal.generation, "already running this digest");
            return Ok(Ok(()));
        }
        if signal.kind == SignalKind::Drift && !self.reapplies(signal).await? {
            tracing::info!(app, status = ?signal.drift.as_ref().map(|d| d.status), "drift noted; nothing to apply");
            return Ok(Ok(()));
        }
        if let Some(newer) = self.superseded(signal).await? {
            tracing::info!(
                app,
                generation = signal.generation,
                newer,
                "superseded by a newer signal; skipped"
            );
            return Ok(Ok(()));
        }
        let message = format!("applying {} ({})", short(digest), signal.kind);
        if let Reported::Stale(detail) = self
            .report(ReportedState::Progressing, signal, digest, &message)
            .await?
        {
            tracing::info!(app, generation = signal.generation, %detail, "a newer report exists; skipped");
            return Ok(Ok(()));
        }
        tracing::info!(app, id = %delivery.id, kind = %signal.kind, generation = signal.generation, %digest, "applying");
        let result = match signal.kind {
            SignalKind::Config => self.handler.config(client, signal).await,
            _ => self.handler.sync(client, signal).await,
        };
        match result {
            Ok(applied) => {
                self.beating.store(true, Ordering::Release);
                client.heartbeat().await?;
                self.report(ReportedState::Synced, signal, digest, &applied.message)
                    .await?;
                if let Some(manifest) = &applied.manifest {
                    client.report_files(manifest).await?;
                }
                tracing::info!(app, %digest, generation = signal.generation, "synced");
                Ok(Ok(()))
            }
            Err(error) => {
                let message = crate::error_chain(&*error);
                let running = self.handler.running();
                let reported = running.as_deref().unwrap_or(digest);
                self.report(ReportedState::Failed, signal, reported, &message)
                    .await?;
                Ok(Err(message))
            }
        }
    }

    async fn prune(&mut self, signal: &Signal) -> Result<(), String> {
        let app = self.client.app().as_str();
        tracing::info!(app, revision = %signal.revision, "pruning");
        match self.handler.prune(self.client, signal).await {
            Ok(()) => {
                self.beating.store(false, Ordering::Release);
                if let Err(e) = self.client.forget().await {
                    return Err(crate::error_chain(&e));
                }
                tracing::info!(app, "pruned");
                Ok(())
            }
            Err(error) => {
                let message = crate::error_chain(&*error);
                if let Some(running) = self.handler.running() {
                    let _ = self
                        .report(ReportedState::Failed, signal, &running, &message)
                        .await;
                }
                Err(message)
            }
        }
    }

    /// Whether a drift signal asks this child to apply the desired digest again:
    /// only `out_of_sync` (the child runs another digest) of an `auto` app.
    /// `failed`, `stale` and `orphaned` are the child's own doing or absence, and a
    /// manual app waits for `canopy sync` (docs/protocol.md, "Drift signals").
    async fn reapplies(&self, signal: &Signal) -> Result<bool, ClientError> {
        let out_of_sync = signal
            .drift
            .as_ref()
            .is_some_and(|d| !d.resolved && d.status == crate::status::Status::OutOfSync);
        if !out_of_sync {
            return Ok(false);
        }
        let desired = self.client.desired().await?;
        Ok(desired
            .and_then(|d| d.app)
            .is_some_and(|app| app.sync == SyncMode::Auto))
    }

    /// The generation of a newer signal that makes this one pointless, if one is
    /// surely queued: only for an `auto` app without `depends_on`, whose every
    /// new desired state is signalled at once (docs/protocol.md section 5).
    async fn superseded(&self, signal: &Signal) -> Result<Option<u64>, ClientError> {
        Ok(self.client.desired().await?.and_then(|desired| {
            let app = desired.app.as_ref()?;
            (app.sync == SyncMode::Auto
                && app.depends_on.is_empty()
                && desired.generation > signal.generation)
                .then_some(desired.generation)
        }))
    }

    async fn report(
        &self,
        status: ReportedState,
        signal: &Signal,
        digest: &str,
        message: &str,
    ) -> Result<Reported, ClientError> {
        let reported = self
            .client
            .report(status, signal.generation, digest, &signal.revision, message)
            .await?;
        if let Reported::Stale(detail) = &reported {
            tracing::debug!(app = %self.client.app(), %detail, "report refused as stale");
        }
        Ok(reported)
    }

    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        signal: Option<&Signal>,
        error: &str,
    ) -> Result<(), ClientError> {
        let client = self.client;
        tracing::error!(app = %client.app(), id = %delivery.id, attempts = delivery.attempts, error, "signal dead-lettered");
        if let Some(signal) = signal {
            let digest = self.handler.running().or_else(|| signal.digest.clone());
            if let Some(digest) = digest {
                let message = format!("dead-lettered: {error}");
                self.report(ReportedState::Failed, signal, &digest, &message)
                    .await?;
            }
        }
        client.dead_letter(delivery, error).await
    }
}

/// Wakes the loop on each message of the app's channel, and after every
/// (re)subscribe, since messages sent while disconnected are gone. The loop reads
/// the stream anyway every `poll`: pub/sub only makes it sooner.
async fn wake_on_messages(client: Client, wake: Arc<Notify>, stop: CancellationToken) {
    let channel = client.keys().signal();
    let connect_timeout = client.options().redis.connect_timeout;
    let mut failures = 0u32;
    loop {
        let subscribed = async {
            let mut pubsub =
                tokio::time::timeout(connect_timeout, client.pubsub_client().get_async_pubsub())
                    .await
                    .map_err(|_| "timed out connecting".to_owned())?
                    .map_err(|e| e.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let subscribed = tokio::select! {
            () = stop.cancelled() => return,
            s = subscribed => s,
        };
        match subscribed {
            Ok(pubsub) => {
                failures = 0;
                wake.notify_one();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(_) => wake.notify_one(),
                            None => break,
                        },
                    }
                }
                tracing::info!(app = %client.app(), "pub/sub connection lost; resubscribing");
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(app = %client.app(), %error, "cannot subscribe to the app's channel");
            }
        }
        let wait = exponential(
            Duration::from_millis(200),
            failures,
            Duration::from_secs(10),
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn keep_heartbeat(client: Client, beating: Arc<AtomicBool>, stop: CancellationToken) {
    let every = (client.options().heartbeat_ttl / 3).max(Duration::from_millis(100));
    loop {
        if beating.load(Ordering::Acquire)
            && let Err(e) = client.heartbeat().await
        {
            tracing::warn!(app = %client.app(), error = %crate::error_chain(&e), "heartbeat failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
