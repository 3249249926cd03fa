//! Running the user's hook: `sh -c <command>` in its own process group, with the
//! signal's facts in its environment and a deadline. Its stdout goes to the
//! agent's stdout and its stderr to the agent's stderr, both with every secret
//! value redacted ([`super::output`]); the tail of its stderr is kept for the
//! `failed` report.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};

use super::output::{self, REDACTED, Sink};
use crate::protocol::Secret;

/// How long the hook's output may still drain once it exited (a background
/// child it left may hold the pipes open).
const DRAIN: Duration = Duration::from_millis(100);

/// The agent's own credential variables, never passed on to the hook (nor is
/// any other variable holding one of its secrets, whatever its name).
const WITHHELD: [&str; 3] = ["CANOPY_TOKEN", "CANOPY_REDIS_PASSWORD", "CANOPY_REDIS_URL"];

#[derive(Debug, Clone)]
pub struct Hook {
    command: String,
    timeout: Duration,
    /// Where the running hook's process group is recorded, so that an agent
    /// restarted after a SIGKILL stops a hook its predecessor left running
    /// instead of running a second one beside it ([`Hook::reap_abandoned`]).
    pid_file: Option<PathBuf>,
    /// The agent's credentials (Redis password, API token): withheld from the
    /// hook's environment by value and redacted from its stderr.
    secrets: Vec<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("failed to start the hook {command:?}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the hook {how}{}", tail_text(stderr))]
    Failed { how: String, stderr: String },
    #[error(
        "the hook did not finish within {timeout:?} and was killed{}",
        tail_text(stderr)
    )]
    TimedOut { timeout: Duration, stderr: String },
}

fn tail_text(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

/// Kills the hook's whole group if the run is abandoned (timeout, or the agent
/// stops waiting): a hook's children must not outlive an abandoned run. Removes
/// the pid file once the run is over either way.
struct Group {
    pid: Option<Pid>,
    pid_file: Option<PathBuf>,
}

impl Group {
    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }

    /// The run finished: what the hook started in the background is its own.
    fn release(&mut self) {
        self.pid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        if let Some(file) = &self.pid_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `<pid> <start time>`: the start time (in clock ticks since boot) tells the
/// hook's shell from a later process that got the same pid.
fn identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

impl Hook {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Hook {
        Hook {
            command: command.into(),
            timeout,
            pid_file: None,
            secrets: Vec::new(),
        }
    }

    /// The agent's credentials, which the hook must never see or echo into a
    /// report (the report's message is shown by the API, reports and Slack).
    pub fn with_secrets(mut self, secrets: Vec<Secret>) -> Hook {
        self.secrets = secrets;
        self
    }

    /// Records each running hook's process group in `file`.
    pub fn with_pid_file(mut self, file: PathBuf) -> Hook {
        self.pid_file = Some(file);
        self
    }

    /// Kills the process group of a hook that a previous agent left running (it
    /// was SIGKILLed mid-hook: nothing could stop its children), so the signal's
    /// redelivery does not run the hook twice at once. Returns its pid.
    pub fn reap_abandoned(&self) -> Option<u32> {
        let file = self.pid_file.as_ref()?;
        let recorded = std::fs::read_to_string(file).ok()?;
        let _ = std::fs::remove_file(file);
        let pid: u32 = recorded.split_whitespace().next()?.parse().ok()?;
        // The shell is alive under another identity: its pid was reused, and
        // the group is someone else's.
        if identity(pid).is_some_and(|now| now != recorded.trim()) {
            return None;
        }
        let group = Pid::from_raw(i32::try_from(pid).ok()?)?;
        kill_process_group(group, Signal::KILL).ok().map(|()| pid)
    }

    /// Runs the hook in `dir` with `env` added; `Ok` when it exits 0. Values in
    /// `also_secret` (the app's secrets of this run) are redacted from its
    /// stderr like the agent's own.
    pub async fn run(
        &self,
        dir: &std::path::Path,
        env: &[(&str, String)],
        also_secret: &[String],
    ) -> Result<(), HookError> {
        let secrets: Vec<String> = self
            .secrets
            .iter()
            .map(|s| s.expose().to_owned())
            .chain(also_secret.iter().cloned())
            .filter(|s| !s.is_empty())
            .collect();
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .current_dir(dir)
            .env_clear()
            .envs(inherited(std::env::vars_os(), &self.secrets))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| HookError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        let mut group = Group {
            pid: child
                .id()
                .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)),
            pid_file: self.pid_file.clone(),
        };
        if let (Some(file), Some(id)) = (&self.pid_file, child.id().and_then(identity)) {
            let _ = std::fs::write(file, format!("{id}\n"));
        }
        let tail = Arc::new(Mutex::new(Vec::new()));
        let mut forwards = tokio::task::JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            forwards.spawn(output::forward(stdout, Sink::Stdout, secrets.clone(), None));
        }
        if let Some(stderr) = child.stderr.take() {
            let tail = Some(tail.clone());
            forwards.spawn(output::forward(stderr, Sink::Stderr, secrets.clone(), tail));
        }
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        // Its last lines may still be in the pipes.
        let _ = tokio::time::timeout(DRAIN, async {
            while forwards.join_next().await.is_some() {}
        })
        .await;
        let stderr = || {
            let bytes = tail.lock().map(|t| t.clone()).unwrap_or_default();
            // Already redacted as it streamed; again, in case the tail's cut
            // left half a secret next to its other half.
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            redact(String::from_utf8_lossy(&bytes).trim(), &secrets)
        };
        match waited {
            Err(_) => {
                group.kill();
                let _ = child.wait().await;
                Err(HookError::TimedOut {
                    timeout: self.timeout,
                    stderr: stderr(),
                })
            }
            Ok(Err(source)) => Err(HookError::Spawn {
                command: self.command.clone(),
                source,
            }),
            Ok(Ok(status)) => {
                group.release();
                if status.success() {
                    return Ok(());
                }
                let how = match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => format!("failed ({status})"),
                };
                Err(HookError::Failed {
                    how,
                    stderr: stderr(),
                })
            }
        }
    }
}

/// The agent's environment as the hook may see it: without the credential
/// variables, and without any variable whose value holds one of `secrets` (a
/// password named by a config's `password_env`, a URL with userinfo).
fn inherited(
    parent: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    secrets: &[Secret],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    parent
        .filter(|(name, value)| {
            let value = value.to_string_lossy();
            !WITHHELD.iter().any(|w| name == w)
                && !secrets
                    .iter()
                    .any(|s| !s.expose().is_empty() && value.contains(s.expose()))
        })
        .collect()
}

/// `text` with every occurrence of each secret replaced by [`REDACTED`].
fn redact(text: &str, secrets: &[&str]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, REDACTED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_hook_reports_its_status_and_stderr_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = Hook::new(
            "echo starting >&2; echo \"bad $CANOPY_KIND\" >&2; exit 3",
            Duration::from_secs(10),
        );
        let err = hook
            .run(dir.path(), &[("CANOPY_KIND", "sync".to_owned())], &[])
            .await
            .expect_err("exit 3");
        let text = err.to_string();
        assert!(text.contains("exited with status 3"), "{text}");
        assert!(text.contains("bad sync"), "{text}");
        hook.run(dir.path(), &[], &[])
            .await
            .expect_err("still fails");
        Hook::new("test \"$(pwd)\" = \"$PWD\"", Duration::from_secs(10))
            .run(dir.path(), &[], &[])
            .await
            .expect("runs in the directory");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survived");
        let command = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let started = std::time::Instant::now();
        let err = Hook::new(command, Duration::from_millis(300))
            .run(dir.path(), &[], &[])
            .await
            .expect_err("timed out");
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "the hook's background child was killed too"
        );
    }

    #[tokio::test]
    async fn a_hook_left_running_by_a_killed_agent_is_reaped_on_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("hook.pid");
        let marker = dir.path().join("survived");
        let command = format!("sleep 2; touch {}", marker.display());
        let hook = Hook::new(command, Duration::from_secs(30)).with_pid_file(pid_file.clone());
        // The agent "dies" mid-hook: the run is leaked without its guard running
        // (as under SIGKILL), leaving the group and the pid file behind.
        let run_dir = dir.path().to_path_buf();
        let running = Box::pin(async move { hook.run(&run_dir, &[], &[]).await });
        let mut running = tokio::spawn(running);
        let recorded = async {
            while !pid_file.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), recorded)
            .await
            .expect("the pid file is written");
        let recorded = std::fs::read_to_string(&pid_file).expect("pid file");
        let restarted = Hook::new("true", Duration::from_secs(1)).with_pid_file(pid_file.clone());
        let reaped = restarted
            .reap_abandoned()
            .expect("the abandoned hook is reaped");
        assert!(recorded.starts_with(&format!("{reaped} ")));
        assert!(!pid_file.exists());
        let outcome = tokio::time::timeout(Duration::from_secs(10), &mut running)
            .await
            .expect("the killed hook's run ends")
            .expect("no panic");
        assert!(outcome.is_err(), "killed by signal");
        assert!(!marker.exists(), "the abandoned hook never finished");
        assert_eq!(restarted.reap_abandoned(), None, "nothing left to reap");
    }
}

#[cfg(test)]
mod secrets {
    use super::*;
    use std::ffi::OsString;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn credential_variables_are_withheld_by_name_and_by_value() {
        let parent = vars(&[
            ("PATH", "/usr/bin"),
            ("CANOPY_TOKEN", "t0ken"),
            ("CANOPY_REDIS_URL", "redis://h/0"),
            ("MY_REDIS_PW", "s3cret-pw"),
            ("DSN", "redis://:s3cret-pw@h:6379/0"),
            ("HOME", "/home/agent"),
        ]);
        let kept = inherited(parent.into_iter(), &[Secret::new("s3cret-pw")]);
        assert_eq!(kept, vars(&[("PATH", "/usr/bin"), ("HOME", "/home/agent")]));
    }

    #[tokio::test]
    async fn secrets_printed_by_the_hook_never_reach_the_report() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hook = Hook::new(
            "echo \"auth s3cret-pw failed, db=app-secret-1\" >&2; exit 1",
            Duration::from_secs(10),
        )
        .with_secrets(vec![Secret::new("s3cret-pw")]);
        let error = hook
            .run(dir.path(), &[], &["app-secret-1".to_owned()])
            .await
            .expect_err("fails")
            .to_string();
        assert!(
            error.contains("auth *** failed, db=***") && !error.contains("s3cret"),
            "{error}"
        );
    }
}
