//! The reconcile cycle: poll Git, decide per app what the store lacks, write it
//! with its signal, record the commit. `canopy run --once` is one cycle; the
//! daemon repeats it.
//!
//! Deciding ([`decide`]) is pure; [`Reconciler`] is the shell that talks to the
//! Git mirror (on the blocking pool) and to Redis.

mod cycle;
pub mod decide;
mod drift;
mod hold;
pub mod inspect;
mod observe;
mod run;

pub use cycle::{CycleError, CycleReport, Reconciler};
pub use observe::{AppStatus, Recorded, every_app, record_changes, statuses, statuses_of};
pub use run::{
    Cycle, STATUS_INTERVAL, StatusCounts, Trigger, run, update_statuses, update_statuses_of,
};
