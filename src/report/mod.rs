//! Drift reports (DESIGN sections 1, 7 and 8; docs/reports.md): every app that is
//! not synced, since when, grouped by parent.
//!
//! - [`model`]: the [`Report`] value, built by a pure function from the status
//!   overview of `reconcile::inspect`. Statuses are evaluated there, never here.
//! - [`render`]: JSON, Markdown, Slack and terminal text (pure).
//!
//! This module does not emit drift signals (that is the reconciler's) and never
//! writes desired state.

pub mod model;
pub mod render;

pub use model::{ON_DEMAND, Report};
