//! canopy: a GitOps reconciler for the app-of-apps pattern on a Redis backbone.
//!
//! Data flows one way: [`tree`] (a snapshot of the repository) -> [`layout`] (the
//! app tree) -> [`digest`] (desired state) -> later stages.

#![forbid(unsafe_code)]

pub mod digest;
pub mod layout;
pub mod limits;
pub mod tree;

/// `text` with its control characters escaped (`\n` as `\\n`), for a message
/// that quotes untrusted input: printed as one line (`file:line:column:
/// message`), it must not be able to continue with lines of the input's
/// choosing (`canopy validate`, logs).
pub(crate) fn one_line(text: &str) -> String {
    if !text.contains(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `error: cause: cause`, for messages that must fit on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
pub mod acl;
pub mod agent;
pub mod artifact;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod plan;
pub mod present;
pub mod protocol;
pub mod reconcile;
pub mod redis_launch;
pub mod report;
pub mod scan;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod store;
pub mod view;
mod yaml;
