//! What `/healthz` and `/readyz` report: the daemon's last cycle, as the loop
//! records it.

use std::sync::Mutex;

/// Shared between the reconcile loop (writer) and the HTTP server (reader).
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct State {
    /// A cycle has succeeded since start: desired state was written at least once.
    pub ready: bool,
    /// The commit of the last successful cycle.
    pub commit: Option<String>,
    /// The last cycle's error (one line, no secrets), `None` after a success.
    pub last_error: Option<String>,
    /// Failed cycles since the last success.
    pub failures: u32,
}

impl Health {
    pub fn succeeded(&self, commit: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.ready = true;
        state.commit = Some(commit.to_owned());
        state.last_error = None;
        state.failures = 0;
    }

    pub fn failed(&self, error: String) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.last_error = Some(error);
        state.failures += 1;
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
