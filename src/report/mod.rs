//! Drift reports (DESIGN sections 1, 7 and 8; docs/reports.md): on each slot of
//! a cron schedule, every app that is not synced, since when, grouped by parent;
//! stored in Redis and posted to the report's sinks.
//!
//! - [`model`]: the [`Report`] value, built by a pure function from the status
//!   overview of `crate::view`. Statuses are evaluated there, never here.
//! - [`render`]: JSON, Markdown, Slack and terminal text (pure).
//! - [`collect`]: reads what a report needs from the store.
//! - [`schedule`]: one task per report: slots, the one-daemon-per-slot claim,
//!   the missed-slot policy.
//! - [`deliver`] and [`guard`]: posting to sinks, safely (timeouts, retries, no
//!   redirects, no loopback/private/metadata addresses unless allowed).
//!
//! This module does not emit drift signals (that is the reconciler's) and never
//! writes desired state.

pub mod collect;
pub mod deliver;
pub mod guard;
pub mod model;
pub mod render;
pub mod schedule;

pub use collect::collect;
pub use deliver::{Deliverer, DeliveryOptions, DeliveryOutcome, SIGNATURE_HEADER, SLOT_HEADER};
pub use model::{ON_DEMAND, Report};
pub use schedule::{CATCH_UP_WINDOW, Clock, Made, Options, Scheduler, spawn};
