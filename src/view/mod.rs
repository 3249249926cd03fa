//! The read model: what the store says about each app, as people and scripts
//! see it. It owns reading an app's stored hashes (desired, observed, heartbeat,
//! status record) and evaluating them with the status model
//! ([`crate::status`], pure), and the views built on that: the status overview,
//! one app's detail and its diff. `canopy status`, `canopy diff`, drift reports
//! and the HTTP API serve these same values, so their JSON cannot drift apart.
//!
//! It never writes. Recording a status transition and its drift signal is the
//! reconciler's (`crate::reconcile`), which uses this module; this module uses
//! nothing of the reconciler. Printing the views as text belongs to the CLI and
//! the reports.

mod inspect;
mod statuses;

pub use inspect::{AppDetail, Diff, Overview, Side, SourceProblem, detail, diff, overview};
pub use statuses::{AppStatus, Transition, evaluate, every_app, statuses, statuses_of};
