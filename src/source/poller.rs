//! One poll: fetch, then move the desired state to the new commit incrementally.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use super::{Mirror, SourceError};
use crate::layout::LayoutOptions;
use crate::plan::Plan;
use crate::scan::{Scan, Update, scan};
use crate::snapshot::{Miss, Saved, Stamp};
use crate::tree::{BlobCache, BlobId, EntryKind, GitTree};

/// The desired state at the last processed commit, and how to reach the next one.
pub struct Poller {
    mirror: Mirror,
    options: LayoutOptions,
    cache: BlobCache,
    /// The last processed commit and its desired state; only a part of it
    /// while `partial`.
    state: Option<(gix::ObjectId, Scan)>,
    /// The file of a snapshot saved by an earlier process, said to hold the
    /// baseline's state: read by the first poll that finds a new commit.
    pending: Option<(gix::ObjectId, PathBuf, Stamp)>,
    /// That snapshot, read but not decoded: the first new commit decodes only
    /// what it touches. Kept while the state is its part.
    restored: Option<(gix::ObjectId, Saved)>,
    /// `state` holds only the apps the last poll touched (and their
    /// ancestors), moved on from `restored`; [`Poller::materialize`] makes it
    /// whole.
    partial: bool,
    /// A commit whose desired state is already stored elsewhere (the Redis meta of
    /// a previous run). While there is no snapshot and the tip is still this
    /// commit, a poll is `Unchanged` without scanning: a restart with nothing new
    /// costs one fetch.
    baseline: Option<gix::ObjectId>,
}

/// What one poll did.
#[derive(Debug)]
pub struct Poll {
    pub commit: gix::ObjectId,
    pub outcome: PollOutcome,
}

#[derive(Debug)]
pub enum PollOutcome {
    /// The tip is the last processed commit: nothing else was done.
    Unchanged,
    Changed {
        plan: Plan,
        /// How the new state was computed: a full scan (first poll, or the last
        /// commit is unknown), a layout recomputation, or in place.
        method: Method,
        /// Files whose content was read and hashed.
        blobs_read: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    FullScan,
    Relayout,
    InPlace,
}

impl Poller {
    pub fn new(mirror: Mirror, options: LayoutOptions) -> Self {
        Poller {
            mirror,
            options,
            cache: BlobCache::default(),
            state: None,
            pending: None,
            restored: None,
            partial: false,
            baseline: None,
        }
    }

    /// See [`Poller::poll`]: `None` forgets it (the store lost what it described).
    pub fn set_baseline(&mut self, commit: Option<gix::ObjectId>) {
        self.baseline = commit;
    }

    pub fn baseline(&self) -> Option<gix::ObjectId> {
        self.baseline
    }

    /// Starts from the snapshot in `path`, if it holds `stamp`, the desired
    /// state of `commit` saved by an earlier process: the next new commit is
    /// then planned incrementally, and when it only modifies files, from the
    /// few apps it touches. Read only once a poll finds a new commit.
    pub fn restore(&mut self, commit: gix::ObjectId, path: PathBuf, stamp: Stamp) {
        self.state = None;
        self.partial = false;
        self.restored = None;
        self.pending = Some((commit, path, stamp));
        self.baseline = Some(commit);
    }

    /// True if [`Poller::state`] holds only the apps the last poll touched.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Makes a partial state whole. Should the restored snapshot fail to
    /// decode, the state is dropped and the next new commit scans everything.
    pub fn materialize(&mut self) {
        if !self.partial {
            return;
        }
        self.partial = false;
        let (Some((commit, part)), Some((_, mut saved))) =
            (self.state.take(), self.restored.take())
        else {
            return;
        };
        match saved.merged(Some(&part)) {
            Ok(scan) => self.state = Some((commit, scan)),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "restored snapshot unreadable: the next new commit scans everything");
                self.baseline = Some(commit);
            }
        }
    }

    /// Saves the state of `commit` to `path` as `stamp`; `false` when the state
    /// is not that commit's (a poll went past what the store holds).
    pub fn save_snapshot(
        &mut self,
        path: &std::path::Path,
        stamp: &Stamp,
        commit: gix::ObjectId,
    ) -> std::io::Result<bool> {
        let Some((state, scan)) = &self.state else {
            return Ok(false);
        };
        if *state != commit {
            return Ok(false);
        }
        match (&mut self.restored, self.partial) {
            (Some((_, saved)), true) => saved.save_moved(stamp, scan)?,
            _ => crate::snapshot::save(path, stamp, scan)?,
        }
        Ok(true)
    }

    pub fn options(&self) -> &LayoutOptions {
        &self.options
    }

    /// The last processed commit and its desired state: only the apps the last
    /// poll touched while [`Poller::is_partial`], which is all its plan needs.
    pub fn state(&self) -> Option<(gix::ObjectId, &Scan)> {
        self.state.as_ref().map(|(c, s)| (*c, s))
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Fetches and, if the tip moved, computes the new desired state and the plan.
    /// On error the previous state is kept as it was.
    pub fn poll(&mut self) -> Result<Poll, SourceError> {
        let span =
            tracing::info_span!("poll", url = %self.mirror.url(), commit = tracing::field::Empty);
        let _enter = span.enter();
        let started = Instant::now();
        let commit = match self.mirror.fetch() {
            Err(e) if e.is_local() => {
                tracing::warn!(error = %crate::error_chain(&e), "local mirror unreadable: re-cloning");
                self.mirror.reclone()?
            }
            other => other?,
        };
        span.record("commit", tracing::field::display(commit));
        let last = self.state.as_ref().map(|(last, _)| *last).or(self.baseline);
        if last == Some(commit) {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "no change"
            );
            return Ok(Poll {
                commit,
                outcome: PollOutcome::Unchanged,
            });
        }
        let (_, misses_before) = self.cache.stats();
        let result = match self.advance(commit) {
            Err(e) if e.is_local() => {
                tracing::warn!(error = %crate::error_chain(&e), "local mirror unreadable: re-cloning");
                let commit = self.mirror.reclone()?;
                self.advance(commit)
            }
            other => other,
        };
        let (plan, method) = result?;
        let blobs_read = self.cache.stats().1 - misses_before;
        self.trim_cache();
        tracing::info!(
            apps = plan.apps.len(),
            ?method,
            blobs_read,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "new commit"
        );
        Ok(Poll {
            commit,
            outcome: PollOutcome::Changed {
                plan,
                method,
                blobs_read,
            },
        })
    }

    /// Moves the state to `commit`; commits the new state only on success.
    fn advance(&mut self, commit: gix::ObjectId) -> Result<(Plan, Method), SourceError> {
        let tree = self.mirror.tree(commit)?;
        if let Some(planned) = self.advance_restored(&tree, commit)? {
            return Ok(planned);
        }
        self.materialize();
        let local = |source: crate::tree::Error| SourceError::Local {
            dir: self.mirror.dir().to_path_buf(),
            source: Box::new(source),
        };
        if let Some((last, scan)) = &mut self.state
            && self.mirror.has_commit(*last)
            && let Some(changes) = self.mirror.diff(*last, commit)?
        {
            // `update` leaves the scan untouched when it fails.
            let update = scan
                .update(&tree, &changes, &self.options, &self.cache)
                .map_err(local)?;
            let plan = Plan::after(&update, scan);
            let method = if update.relayout {
                Method::Relayout
            } else {
                Method::InPlace
            };
            *last = commit;
            return Ok((plan, method));
        }
        // First poll, or the last commit is unknown to the mirror: a full scan,
        // planned against whatever state there was.
        let new = scan(&tree, &self.options, &self.cache).map_err(local)?;
        let plan = match &self.state {
            Some((_, old)) => Plan::after(&Update::between(old, &new), &new),
            None => Plan::initial(&new),
        };
        self.state = Some((commit, new));
        Ok((plan, Method::FullScan))
    }

    /// The first new commit after [`Poller::restore`]: in place on the part of
    /// the snapshot it touches when it only modifies files; otherwise the whole
    /// snapshot is decoded into `state` and `None` lets the usual path go on.
    fn advance_restored(
        &mut self,
        tree: &GitTree,
        commit: gix::ObjectId,
    ) -> Result<Option<(Plan, Method)>, SourceError> {
        if self.state.is_some() {
            return Ok(None);
        }
        if let Some((commit, path, stamp)) = self.pending.take() {
            let started = Instant::now();
            match Saved::read(&path, &stamp) {
                Ok(saved) => {
                    tracing::debug!(
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "snapshot read"
                    );
                    self.restored = Some((commit, saved));
                }
                Err(Miss::Missing) => {}
                Err(miss) => tracing::info!(
                    path = %path.display(),
                    reason = %crate::error_chain(&miss),
                    "snapshot not used: scanning everything"
                ),
            }
        }
        let Some((last, saved)) = &mut self.restored else {
            return Ok(None);
        };
        let last = *last;
        let changes = match self.mirror.has_commit(last) {
            true => self.mirror.diff(last, commit)?,
            false => None,
        };
        if let Some(changes) = changes {
            match saved.part(&self.options.root, &changes) {
                Ok(Some(mut part)) => {
                    prime(&self.cache, &part);
                    let update = part
                        .update_in_place(tree, &changes, &self.options, &self.cache)
                        .map_err(|source| SourceError::Local {
                            dir: self.mirror.dir().to_path_buf(),
                            source: Box::new(source),
                        })?;
                    if let Some(update) = update {
                        let plan = Plan::after(&update, &part);
                        self.state = Some((commit, part));
                        self.partial = true;
                        return Ok(Some((plan, Method::InPlace)));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "restored snapshot unreadable: scanning everything");
                    self.restored = None;
                    return Ok(None);
                }
            }
        }
        let (_, mut saved) = self.restored.take().expect("checked above");
        match saved.merged(None) {
            Ok(scan) => self.state = Some((last, scan)),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "restored snapshot unreadable: scanning everything");
            }
        }
        Ok(None)
    }

    /// Consolidates the mirror's packs when fetches have piled them up, so poll
    /// cost stays flat. Not part of [`Poller::poll`]: a repack of a large mirror
    /// takes a while, and the caller runs it after the poll's results are out.
    pub fn maintain(&mut self) {
        if let Err(e) = self.mirror.maintain() {
            // Slower polls, not wrong ones: report and carry on.
            tracing::warn!(error = %crate::error_chain(&e), "mirror maintenance failed");
        }
    }

    /// Keeps the blob cache to roughly the current snapshot, so that a long-lived
    /// daemon's memory follows the repository's size, not its history.
    fn trim_cache(&mut self) {
        let Some((_, scan)) = &self.state else {
            return;
        };
        if self.cache.len() <= 2 * scan.entries.len() + 1024 {
            return;
        }
        let live: HashSet<BlobId> = scan.entries.values().filter_map(|e| e.blob).collect();
        self.cache.retain(|id| live.contains(id));
    }
}

/// Puts the file hashes of `scan`'s digests in `cache`, so that re-digesting
/// one of its apps reads only the blobs that changed.
fn prime(cache: &BlobCache, scan: &Scan) {
    for (name, digest) in &scan.digests {
        let Some(app) = scan.apps.apps.get(name) else {
            continue;
        };
        if app.files.len() != digest.files.len() {
            continue;
        }
        for (file, line) in app.files.iter().zip(&digest.files) {
            if let (EntryKind::File | EntryKind::Executable, Some(blob)) = (file.kind, file.blob) {
                cache.insert(blob, line.hash);
            }
        }
    }
}
