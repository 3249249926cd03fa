//! One poll: fetch, then move the desired state to the new commit incrementally.

use std::collections::HashSet;
use std::time::Instant;

use super::{Mirror, SourceError};
use crate::layout::LayoutOptions;
use crate::plan::Plan;
use crate::scan::{Scan, Update, scan};
use crate::tree::{BlobCache, BlobId};

/// The desired state at the last processed commit, and how to reach the next one.
pub struct Poller {
    mirror: Mirror,
    options: LayoutOptions,
    cache: BlobCache,
    state: Option<(gix::ObjectId, Scan)>,
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
            baseline: None,
        }
    }

    /// See [`Poller::poll`]: `None` forgets it (the store lost what it described).
    pub fn set_baseline(&mut self, commit: Option<gix::ObjectId>) {
        self.baseline = commit;
    }

    pub fn options(&self) -> &LayoutOptions {
        &self.options
    }

    /// The last processed commit and its desired state.
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
