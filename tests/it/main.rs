//! The integration tests, as one test binary: every file here is a module of
//! it, and `common` is the harness they share.
//!
//! One binary instead of one per file: the crate and its dependencies are
//! linked once instead of about twenty times, and the tests of all files run
//! in parallel with each other instead of file after file. Nothing in the
//! harness is process-global, so tests of different files do not interfere.
//!
//! A new test file is a new `mod` line below. Snapshots live in `snapshots/`
//! next to this file, named `it__<module>__<name>.snap`. Proptest regressions
//! live in `<module>.proptest-regressions` next to the module's file only if
//! its config says `FileFailurePersistence::WithSource` (see incremental.rs):
//! because of this `main.rs`, proptest's default looks in
//! `tests/proptest-regressions/` instead.

mod common;

mod access;
mod acl;
mod agent;
mod artifact;
mod child_app;
mod cli_run;
mod client_limits;
mod config;
mod daemon;
mod digest;
mod drift;
mod fuzz_corpus;
mod git_server;
mod hostile;
mod http_limits;
mod incremental;
mod layout;
mod oidc;
mod reconcile;
mod redis_launch;
mod report;
mod server;
mod source;
mod submodules;
mod validate;
mod webhooks;
