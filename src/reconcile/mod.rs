//! The write loop: poll Git, decide per app what the store lacks, write it with
//! its signal, record the commit; then record the status transitions the read
//! model ([`crate::view`]) finds, with their drift signals. `canopy run --once`
//! is one cycle; the daemon repeats it.
//!
//! Deciding ([`decide`], `drift`) is pure; [`Reconciler`] is the shell that
//! talks to the Git mirror (on the blocking pool) and to Redis. Reading the
//! store for people and scripts is not this module's: it uses the read model,
//! never the other way round.

mod cycle;
pub mod decide;
mod drift;
mod hold;
mod record;
mod run;

pub use cycle::{CycleError, CycleReport, Reconciler};
pub use record::{Recorded, StatusCounts, record_changes, update_statuses, update_statuses_of};
pub use run::{Cycle, STATUS_INTERVAL, Trigger, run};
