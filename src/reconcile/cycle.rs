//! One poll-and-reconcile cycle, and what carries over between cycles.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::Instrument as _;

/// How often every app is compared with the store, even when no check saw a
/// loss: a comparison reads every app's desired record (one pipelined round
/// trip per batch: milliseconds at 10,000 apps), and rewrites and re-signals
/// any app whose stored state is not the snapshot's.
pub const FULL_COMPARE_EVERY: Duration = Duration::from_secs(600);

use super::decide::{self, Changed, Context, Decision, Scope, Target};
use super::hold::{self, Release};
use crate::acl::{AclError, AppUsers};
use crate::layout::AppName;
use crate::plan::Plan;
use crate::snapshot::Stamp;
use crate::source::{Method, Poll, PollOutcome, Poller, SourceError};
use crate::store::{AppWrite, Applied, BATCH, Checked, Meta, Signal, Store, StoreError, WriteOp};

/// Drives cycles. Owns the poller (Git side) and the store (Redis side).
pub struct Reconciler {
    /// `None` while lent to the blocking pool: then `lent` holds the task that
    /// has it.
    poller: Option<Poller>,
    /// The blocking task running on the poller. A cycle dropped mid-poll (a
    /// shutdown that abandons it) leaves the task here; the next use of the
    /// poller waits for it to hand the poller back.
    lent: Option<tokio::task::JoinHandle<Poller>>,
    store: Store,
    /// Compare every app with the store on the next cycle, not just the planned
    /// ones: set at start, after Redis lost data, and after any failed write, so
    /// nothing a failure skipped is ever forgotten.
    resync: bool,
    /// The `meta.commit` the store should hold: the one found at start, then
    /// each commit this reconciler wrote. `None` before either (the absence of
    /// `meta` is then no loss); another value in Redis means lost writes.
    committed: Option<String>,
    /// Compare every app with the store this often even when nothing says
    /// anything was lost: the net under losses no check can see.
    full_compare_every: Duration,
    last_full_compare: Instant,
    depends_on_timeout: Duration,
    /// A write found canopy's data or Functions library gone: recover before the
    /// next write even if the epoch key looks fine (a `FUNCTION FLUSH` alone).
    lost: bool,
    /// The source error last recorded in `meta`.
    source_error: Option<String>,
    /// Where the snapshot of the committed state is kept for the next process.
    snapshot: Option<PathBuf>,
    /// The commit whose desired state the store holds, once this reconciler
    /// wrote it (`meta.commit`).
    committed_commit: Option<gix::ObjectId>,
    /// The commit of the snapshot file, as last saved or loaded.
    saved: Option<gix::ObjectId>,
    /// The apps' Redis users and credentials files, when ACLs are on.
    users: Option<AppUsers>,
}

/// What one cycle did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CycleReport {
    pub commit: String,
    /// The tip moved since the last processed commit.
    pub changed: bool,
    /// Every app was compared with the store (first cycle, recovery).
    pub resync: bool,
    /// Apps compared with the store.
    pub checked: usize,
    pub written: usize,
    pub signals: usize,
    /// Signals per kind.
    pub kinds: std::collections::BTreeMap<&'static str, usize>,
    /// Signals held until the apps' dependencies report Synced.
    pub held: usize,
    /// The apps written (their statuses may have changed).
    #[serde(skip)]
    pub written_apps: Vec<AppName>,
    /// Held signals published this cycle, and of those, how many because the
    /// wait timed out.
    pub released: usize,
    pub released_after_timeout: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{0} apps changed in Redis while canopy wrote them; they are compared again next cycle"
    )]
    Conflicts(usize, #[source] StoreError),
    #[error(transparent)]
    Acl(#[from] AclError),
}

impl Reconciler {
    /// Claims an epoch: from now on only this reconciler writes the namespace.
    /// If the store already holds the desired state of some commit of this same
    /// source (same repository, ref, layout options and canopy version), polls
    /// skip scanning while the tip is still that commit.
    pub async fn new(mut poller: Poller, mut store: Store) -> Result<Reconciler, StoreError> {
        store.prepare_functions().await?;
        let epoch = store.claim().await?;
        tracing::info!(epoch, namespace = store.namespace(), "claimed epoch");
        let meta = store.meta().await?;
        // Cleared by the first successful poll if the source recovered meanwhile.
        let meta_error = meta.as_ref().and_then(|m| m.error.clone()).map(|(e, _)| e);
        let baseline = meta.filter(|m| m.same_source(&meta_of(&poller, &m.commit, m.updated_at)));
        let committed = baseline.as_ref().map(|meta| meta.commit.clone());
        if let Some(meta) = baseline {
            tracing::info!(commit = %meta.commit, "the store holds this commit's desired state");
            poller.set_baseline(gix::ObjectId::from_hex(meta.commit.as_bytes()).ok());
        }
        Ok(Reconciler {
            poller: Some(poller),
            lent: None,
            store,
            resync: true,
            committed,
            full_compare_every: FULL_COMPARE_EVERY,
            last_full_compare: Instant::now(),
            lost: false,
            depends_on_timeout: crate::config::defaults::DEPENDS_ON_TIMEOUT,
            source_error: meta_error,
            snapshot: None,
            committed_commit: None,
            saved: None,
            users: None,
        })
    }

    /// Keeps the snapshot of each committed state in `path`, and starts from the
    /// one there if it holds the store's commit: the first new commit is then
    /// planned incrementally, as in a running daemon, instead of after a full
    /// scan. A missing, stale or corrupt file only means that scan. The file is
    /// read by the first poll that finds a new commit.
    pub fn keep_snapshot(&mut self, path: PathBuf) {
        self.snapshot = Some(path.clone());
        let Some(commit) = self.poller().baseline() else {
            return;
        };
        let stamp = stamp_of(self.poller(), commit);
        self.poller
            .as_mut()
            .expect("no cycle ran yet")
            .restore(commit, path, stamp);
        // The store holds exactly the baseline's state (`meta.commit`), so only
        // what changes from it needs comparing. Should the file not hold it,
        // the poll scans everything, and a full scan compares every app.
        self.resync = false;
        self.saved = Some(commit);
    }

    /// How long a held signal waits for its dependencies (config
    /// `depends_on_timeout`).
    pub fn set_depends_on_timeout(&mut self, timeout: Duration) {
        self.depends_on_timeout = timeout;
    }

    /// Keeps a Redis ACL user and a credentials file per app (config
    /// `redis.acl.credentials_dir`); every app is compared on the next cycle.
    pub fn set_app_users(&mut self, users: AppUsers) {
        self.users = Some(users);
        self.resync = true;
    }

    /// How often every app is compared with the store although nothing was
    /// seen lost ([`FULL_COMPARE_EVERY`] by default).
    pub fn set_full_compare_every(&mut self, every: Duration) {
        self.full_compare_every = every;
    }

    /// The poller. Between cycles it is always here: a cycle takes it back
    /// before it returns, and one dropped mid-poll before the next use.
    pub fn poller(&self) -> &Poller {
        self.poller
            .as_ref()
            .expect("the poller is back after every completed cycle")
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Polls, then brings the store up to the new desired state. A source error
    /// still lets the store be repaired from the last good snapshot (Redis lost
    /// data while the remote is down), and is returned afterwards.
    pub async fn cycle(&mut self) -> Result<CycleReport, CycleError> {
        let span = tracing::info_span!(
            "cycle",
            namespace = self.store.namespace(),
            epoch = self.store.epoch(),
        );
        self.cycle_in_span().instrument(span).await
    }

    async fn cycle_in_span(&mut self) -> Result<CycleReport, CycleError> {
        let poll = self.poll().await;
        if let Ok(Poll {
            outcome:
                PollOutcome::Changed {
                    method: Method::FullScan,
                    ..
                },
            ..
        }) = &poll
        {
            // Whatever the scan was planned against (perhaps nothing), the store
            // may hold apps it does not know: compare every app.
            self.resync = true;
        }
        let plan = match &poll {
            Ok(Poll {
                outcome: PollOutcome::Changed { plan, .. },
                ..
            }) => Some(plan),
            _ => None,
        };
        let mut report = self.reconcile(plan).await?;
        self.show_source_error(poll.as_ref().err()).await;
        let poll = poll?;
        if matches!(poll.outcome, PollOutcome::Changed { .. }) {
            // After the signals are out: a repack must not delay them.
            self.blocking(Poller::maintain).await;
        }
        report.commit = poll.commit.to_string();
        report.changed = matches!(poll.outcome, PollOutcome::Changed { .. });
        Ok(report)
    }

    /// Keeps `meta.error` in step with the source, so `canopy status` and the API
    /// show a failing remote (writing only when it starts, changes or ends). A
    /// store that cannot take it is already failing the cycle: nothing more to do.
    async fn show_source_error(&mut self, error: Option<&SourceError>) {
        let text = error.map(|e| crate::error_chain(e));
        if text == self.source_error {
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        if self.store.record_error(text.as_deref(), now).await.is_ok() {
            self.source_error = text;
        }
    }

    async fn poll(&mut self) -> Result<Poll, SourceError> {
        self.blocking(Poller::poll).await
    }

    /// Saves the snapshot of the state the store now holds, unless the file
    /// already has it: after `--once`, and when the daemon stops (saving after
    /// every cycle would cost a running daemon as much as a new process saves).
    /// A failure costs the next process a full scan, nothing else.
    pub async fn save_snapshot(&mut self) {
        let (Some(path), Some(commit)) = (self.snapshot.clone(), self.committed_commit) else {
            return;
        };
        self.take_back().await;
        if self.saved == Some(commit) {
            return;
        }
        let stamp = stamp_of(self.poller(), commit);
        let started = Instant::now();
        // `false`: the poller is past the stored commit (a write failed), and
        // there is nothing to save until the store holds its state.
        let saved = self
            .blocking(move |poller| poller.save_snapshot(&path, &stamp, commit))
            .await;
        match saved {
            Ok(false) => {}
            Ok(true) => {
                tracing::debug!(
                    %commit,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "snapshot saved"
                );
                self.saved = Some(commit);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "could not save the snapshot: the next process will scan the repository"
            ),
        }
    }

    /// Runs `work` on the poller on the blocking pool (gix and git are blocking).
    /// Cancellation-safe: dropped while `work` runs, the task keeps the poller
    /// and the next call takes it back first.
    async fn blocking<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Poller) -> T + Send + 'static,
    ) -> T {
        self.take_back().await;
        let mut poller = self.poller.take().expect("taken back above");
        let (sender, result) = tokio::sync::oneshot::channel();
        // The blocking thread's spans (a poll's) belong to the caller's cycle.
        let span = tracing::Span::current();
        self.lent = Some(tokio::task::spawn_blocking(move || {
            let _cycle = span.enter();
            // The receiver is gone only if the caller was dropped: the work is
            // still done (a poll's snapshot stays consistent), its result unused.
            let _ = sender.send(work(&mut poller));
            poller
        }));
        let result = result.await;
        self.take_back().await;
        result.expect("the task sends its result unless `work` panicked, which take_back resumed")
    }

    /// Waits for a blocking task that still has the poller. The handle is kept
    /// until it completes, so this is cancellation-safe too.
    async fn take_back(&mut self) {
        if let Some(task) = self.lent.as_mut() {
            let done = task.await;
            self.lent = None;
            match done {
                Ok(poller) => self.poller = Some(poller),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
    }

    /// The store side of a cycle, against the poller's current snapshot. Whatever
    /// fails here is compared again, with every app, next cycle.
    async fn reconcile(&mut self, plan: Option<&Plan>) -> Result<CycleReport, CycleError> {
        let result = self.try_reconcile(plan).await;
        if let Err(e) = &result {
            self.resync = true;
            if matches!(e, CycleError::Store(StoreError::Lost { .. })) {
                self.committed = None;
                self.lost = true;
            }
        }
        result
    }

    async fn try_reconcile(&mut self, plan: Option<&Plan>) -> Result<CycleReport, CycleError> {
        let mut report = CycleReport::default();
        let held = match self.store.check(self.committed.as_deref()).await {
            Err(StoreError::Lost { .. }) => {
                self.recover().await?;
                0
            }
            Ok(_) if self.lost => {
                self.recover().await?;
                0
            }
            Ok(Checked {
                held,
                rolled_back: Some(stored),
            }) => {
                tracing::warn!(
                    stored = %stored,
                    committed = self.committed.as_deref().unwrap_or_default(),
                    "Redis lost this daemon's last writes (meta.commit went back); \
                     comparing every app to write them and their signals again"
                );
                self.resync = true;
                held
            }
            other => other?.held,
        };
        if self.last_full_compare.elapsed() >= self.full_compare_every {
            self.resync = true;
        }
        // Comparing every app needs every app, not the part a poll from a
        // restored snapshot decoded.
        if self.resync && self.poller().is_partial() {
            self.blocking(Poller::materialize).await;
        }
        // Without a snapshot (nothing fetched yet, or a restart whose tip the
        // store already holds) there is nothing to write.
        if self.poller().state().is_some() && (plan.is_some() || self.resync) {
            self.write(plan, &mut report).await?;
            self.resync = false;
        }
        if held + report.held > 0 {
            self.release_held(&mut report).await?;
        }
        if let Some(users) = self.users.as_mut() {
            users.maintain(&mut self.store).await?;
        }
        Ok(report)
    }

    /// Publishes the held signals whose dependencies now report Synced, or that
    /// waited `depends_on_timeout`.
    async fn release_held(&mut self, report: &mut CycleReport) -> Result<(), StoreError> {
        let held = self.store.held().await?;
        let deps: BTreeSet<&AppName> = held.iter().flat_map(|h| &h.depends_on).collect();
        let deps: Vec<&AppName> = deps.into_iter().collect();
        let synced: HashMap<&AppName, bool> = deps
            .iter()
            .copied()
            .zip(self.store.synced_now(&deps).await?)
            .collect();
        let now = chrono::Utc::now().timestamp_millis();
        let timeout = i64::try_from(self.depends_on_timeout.as_millis()).unwrap_or(i64::MAX);
        for app in &held {
            let release = hold::release(app, &synced, now, timeout);
            if release == Release::Wait {
                continue;
            }
            let Some(mut signal) = app
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str::<Signal>(p).ok())
            else {
                tracing::warn!(app = %app.app, "held signal unreadable: the next change signals again");
                continue;
            };
            signal.at = now;
            signal.epoch = self.store.epoch();
            if let Release::TimedOut(waiting) = &release {
                let waiting: Vec<&str> = waiting.iter().map(AppName::as_str).collect();
                tracing::warn!(
                    app = %app.app,
                    waiting_on = ?waiting,
                    timeout_s = self.depends_on_timeout.as_secs(),
                    "dependencies not synced in time: signalled anyway"
                );
                report.released_after_timeout += 1;
            }
            if self.store.publish(&app.app, &signal).await? {
                report.released += 1;
                *report.kinds.entry(signal.kind.as_str()).or_default() += 1;
                report.signals += 1;
            }
        }
        Ok(())
    }

    /// Redis lost canopy's data: restore the library and the epoch, then rebuild
    /// everything from Git. Children see duplicates at most.
    async fn recover(&mut self) -> Result<(), StoreError> {
        tracing::warn!(
            namespace = self.store.namespace(),
            "Redis lost canopy's data: rebuilding desired state from Git"
        );
        self.store.prepare_functions().await?;
        let epoch = self.store.claim().await?;
        tracing::info!(epoch, "claimed epoch");
        self.resync = true;
        self.committed = None;
        self.lost = false;
        // The baseline described data that is gone: the next poll scans.
        if let Some(poller) = self.poller.as_mut() {
            poller.set_baseline(None);
        }
        Ok(())
    }

    async fn write(
        &mut self,
        plan: Option<&Plan>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        let poller = self
            .poller
            .as_ref()
            .expect("the poller is back after the poll");
        let (commit, scan) = poller.state().expect("checked by the caller");
        let stored_names = if self.resync {
            self.store.app_names().await?
        } else {
            Default::default()
        };
        let scope = match plan {
            Some(plan) if !self.resync => Scope::Plan(plan),
            _ => Scope::Everything {
                stored: &stored_names,
            },
        };
        report.resync = matches!(scope, Scope::Everything { .. });
        // A partial state would prune every app it does not hold.
        assert!(
            !(report.resync && poller.is_partial()),
            "a full comparison needs the whole state"
        );
        let targets = decide::targets(scan, scope);
        let names: Vec<_> = targets.iter().map(Target::name).collect();
        let stored = self.store.stored_desired(&names).await?;
        report.checked = targets.len();

        let context = Context {
            revision: commit.to_string(),
            epoch: self.store.epoch(),
            now: chrono::Utc::now().timestamp_millis(),
        };
        let decisions: Vec<_> = targets
            .iter()
            .zip(&stored)
            .filter_map(
                |(target, stored)| match decide::decide(target, stored.as_ref()) {
                    Decision::Write { kind, changed } => {
                        Some((target, stored.as_ref(), kind, changed))
                    }
                    Decision::Skip => None,
                },
            )
            .collect();
        // Stored manifests only for apps whose baseline is not the snapshot's
        // (restart, recovery), all in batched round trips.
        let against: Vec<&AppName> = decisions
            .iter()
            .filter(|d| d.3 == Changed::AgainstStored)
            .map(|d| d.0.name())
            .collect();
        let mut stored_files = self.store.stored_files_of(&against).await?.into_iter();
        // Built and applied one batch at a time: a first cycle writes every app,
        // and 10,000 writes at once (manifests in hex, signals) were the largest
        // transient of a daemon's life, about 25 MB that glibc then kept.
        let mut applied = Applied::default();
        let mut decisions = decisions.into_iter().peekable();
        while decisions.peek().is_some() {
            let writes: Vec<AppWrite> = decisions
                .by_ref()
                .take(BATCH)
                .map(|(target, stored, kind, changed)| {
                    let span = tracing::debug_span!(
                        "app",
                        app = %target.name(),
                        %kind,
                        generation = tracing::field::Empty,
                    )
                    .entered();
                    let changed = match changed {
                        Changed::Known(files) => files,
                        Changed::AgainstStored => {
                            let files = stored_files.next().expect("one manifest per such app");
                            decide::changes_against_stored(target, &files)
                        }
                    };
                    let write = decide::write(target, stored, kind, changed, &context);
                    // One line per signal at debug (a first cycle writes every
                    // app), and a summary at info.
                    if let Some(signal) = &write.signal {
                        span.record("generation", signal.generation);
                        tracing::debug!(
                            held = write.hold,
                            digest = signal.digest.as_deref().unwrap_or("-"),
                            revision = %signal.revision,
                            "signal"
                        );
                    }
                    write
                })
                .collect();
            if let Some(users) = self.users.as_mut() {
                // Before the signal: the child needs its user to read it.
                users
                    .ensure(&mut self.store, &apps_of(&writes, WriteOp::Put))
                    .await?;
            }
            applied.absorb(self.store.apply(&writes).await?);
            if let Some(users) = self.users.as_mut() {
                users.pruned(&apps_of(&writes, WriteOp::Prune));
            }
            report
                .written_apps
                .extend(writes.iter().map(|w| w.app.clone()));
        }
        if report.resync
            && let Some(users) = self.users.as_mut()
        {
            let apps = self.store.app_names().await?;
            let apps: Vec<AppName> = apps.into_iter().collect();
            users.reconcile_all(&mut self.store, &apps).await?;
        }
        report.written = applied.written;
        report.signals = applied.signals;
        report.kinds = applied.kinds.clone();
        report.held = applied.held;
        tracing::info!(
            revision = %context.revision,
            checked = report.checked,
            written = report.written,
            signals = report.signals,
            held = report.held,
            resync = report.resync,
            "store updated"
        );
        let conflicts = applied.conflicts.len();
        if let Some(first) = applied.conflicts.into_iter().next() {
            return Err(CycleError::Conflicts(conflicts, first));
        }
        self.store
            .commit(&meta_of(poller, &commit.to_string(), context.now))
            .await?;
        self.committed = Some(commit.to_string());
        self.committed_commit = Some(commit);
        if report.resync {
            self.last_full_compare = Instant::now();
        }
        Ok(())
    }
}

/// The apps of `writes` whose operation is `op`.
fn apps_of(writes: &[AppWrite], op: WriteOp) -> Vec<AppName> {
    writes
        .iter()
        .filter(|w| w.op == op)
        .map(|w| w.app.clone())
        .collect()
}

/// Which desired state a snapshot of `commit` holds: the same fingerprint as
/// `meta`, so a snapshot is used exactly when the store's meta would be.
fn stamp_of(poller: &Poller, commit: gix::ObjectId) -> Stamp {
    let commit = commit.to_string();
    Stamp {
        layout: meta_of(poller, &commit, 0).layout,
        commit,
    }
}

/// The meta a poller's source gets for `commit`.
fn meta_of(poller: &Poller, commit: &str, updated_at: i64) -> Meta {
    let mirror = poller.mirror();
    let layout = format!("{} {:?}", env!("CARGO_PKG_VERSION"), poller.options());
    Meta {
        repo: mirror.url().to_string(),
        reference: mirror.reference().to_owned(),
        commit: commit.to_owned(),
        layout: crate::digest::Sha256Digest::of(layout.as_bytes()).to_string(),
        updated_at,
        error: None,
    }
}
