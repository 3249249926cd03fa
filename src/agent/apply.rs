//! [`Agent`]: what a signal does to the agent's directory, as a
//! [`Handler`] of the client's loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Hook, Releases};
use crate::client::{Applied, Client, ClientError, Handler, HandlerError, Signal};
use crate::protocol::Secret;

/// Defaults of `canopy agent`, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);
    /// Versions kept on disk, the current one included.
    pub const KEEP: usize = 3;
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The agent's directory (see [`Releases`]).
    pub dir: PathBuf,
    /// Run with `sh -c` after each change.
    pub exec: String,
    pub hook_timeout: Duration,
    pub keep: usize,
    /// The agent's credentials (Redis password, API token): never in the
    /// hook's environment, redacted from what it prints into a report.
    pub secrets: Vec<Secret>,
}

pub struct Agent {
    releases: Releases,
    hook: Hook,
    keep: usize,
    /// What [`Releases::applied`] says, kept in memory.
    running: Option<String>,
}

impl Agent {
    pub fn new(options: &AgentOptions) -> Result<Agent, ClientError> {
        let releases = Releases::open(&options.dir)?;
        let running = releases.applied();
        let hook = Hook::new(options.exec.clone(), options.hook_timeout)
            .with_pid_file(releases.hook_pid_file())
            .with_secrets(options.secrets.clone());
        if let Some(pid) = hook.reap_abandoned() {
            tracing::warn!(pid, "killed a hook that a previous agent left running");
        }
        Ok(Agent {
            releases,
            hook,
            keep: options.keep.max(1),
            running,
        })
    }

    pub fn releases(&self) -> &Releases {
        &self.releases
    }

    /// The hook's environment for `signal`, with `dir` as `CANOPY_DIR`, and the
    /// app's secret values (to redact from the hook's stderr).
    async fn environment(
        &self,
        client: &Client,
        signal: &Signal,
        dir: &Path,
    ) -> Result<(Vec<(&'static str, String)>, Vec<String>), HandlerError> {
        let config = client.config().await?;
        let secrets = client.secrets().await?;
        let values: Vec<String> = secrets.iter().flatten().map(|(_, v)| v.clone()).collect();
        let (config_path, secrets_path) = {
            let releases = self.releases.clone();
            tokio::task::spawn_blocking(move || releases.write_config(&config, secrets.as_ref()))
                .await??
        };
        let mut env = vec![
            ("CANOPY_APP", signal.app.clone()),
            ("CANOPY_KIND", signal.kind.to_string()),
            ("CANOPY_REVISION", signal.revision.clone()),
            ("CANOPY_DIGEST", signal.digest.clone().unwrap_or_default()),
            ("CANOPY_GENERATION", signal.generation.to_string()),
            ("CANOPY_DIR", dir.display().to_string()),
            ("CANOPY_APP_CONFIG", config_path.display().to_string()),
        ];
        if let Some(path) = secrets_path {
            env.push(("CANOPY_APP_SECRETS", path.display().to_string()));
        }
        Ok((env, values))
    }

    fn succeeded(&mut self, digest: &str) -> Result<(), HandlerError> {
        self.releases.set_applied(digest)?;
        self.running = Some(digest.to_owned());
        Ok(())
    }
}

impl Handler for Agent {
    fn running(&self) -> Option<String> {
        self.running.clone()
    }

    /// Download and verify, unpack into a new version, repoint `current`, run the
    /// hook; if it fails, `current` goes back to what still runs.
    async fn sync(&mut self, client: &Client, signal: &Signal) -> Result<Applied, HandlerError> {
        let digest = signal.digest.clone().ok_or("the signal names no digest")?;
        let files = client.download(&signal.revision, &digest).await?;
        let manifest = files.manifest();
        let count = files.len();
        let version = {
            let releases = self.releases.clone();
            tokio::task::spawn_blocking(move || releases.install(&files)).await??
        };
        let previous = self.releases.current();
        self.releases.switch(&version)?;
        let (env, secrets) = self.environment(client, signal, &version).await?;
        if let Err(error) = self.hook.run(&version, &env, &secrets).await {
            match previous.filter(|p| p != &version) {
                Some(previous) => self.releases.switch(&previous)?,
                None => tracing::info!(app = %signal.app, "no previous version to return to"),
            }
            return Err(error.into());
        }
        self.succeeded(&digest)?;
        let releases = self.releases.clone();
        let keep = self.keep;
        if let Err(e) = tokio::task::spawn_blocking(move || releases.remove_old(keep)).await? {
            tracing::warn!(app = %signal.app, error = %crate::error_chain(&e), "cannot remove old versions");
        }
        Ok(Applied {
            message: format!("applied {count} files at {}", short(&signal.revision)),
            manifest: Some(manifest),
        })
    }

    /// Installs the signal's files and runs the hook with `CANOPY_KIND=config`,
    /// which tells it a reload is enough. The files are installed all the same:
    /// `app.yaml` is one of the app's files, so a config change is a new digest,
    /// and reporting a digest whose files are not in place (the old `app.yaml`,
    /// or older files still after a dead-lettered sync) would show Synced on
    /// what does not run.
    async fn config(&mut self, client: &Client, signal: &Signal) -> Result<Applied, HandlerError> {
        let applied = self.sync(client, signal).await?;
        Ok(Applied {
            message: format!("reloaded the config at {}", short(&signal.revision)),
            ..applied
        })
    }

    /// Run the hook (when something was applied), then remove everything.
    async fn prune(&mut self, client: &Client, signal: &Signal) -> Result<(), HandlerError> {
        if let Some(current) = self.releases.current() {
            let (env, secrets) = self.environment(client, signal, &current).await?;
            self.hook.run(&current, &env, &secrets).await?;
        }
        let releases = self.releases.clone();
        tokio::task::spawn_blocking(move || releases.remove_all()).await??;
        self.running = None;
        Ok(())
    }
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}
