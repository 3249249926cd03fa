//! Running the user's hook: `sh -c <command>` in its own process group, with the
//! signal's facts in its environment and a deadline. Its stdout goes to the
//! agent's stdout; its stderr goes to the agent's stderr too, and its tail is kept
//! for the `failed` report.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt as _;

/// Bytes of stderr kept for the report (`canopy_report` keeps 4096 of a message).
const STDERR_TAIL: usize = 2048;

/// The agent's own secrets, never passed on to the hook.
const WITHHELD: [&str; 3] = ["CANOPY_TOKEN", "CANOPY_REDIS_PASSWORD", "CANOPY_REDIS_URL"];

#[derive(Debug, Clone)]
pub struct Hook {
    command: String,
    timeout: Duration,
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
/// stops waiting): a hook's children must not outlive an abandoned run.
struct Group {
    pid: Option<Pid>,
}

impl Group {
    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Hook {
    pub fn new(command: impl Into<String>, timeout: Duration) -> Hook {
        Hook {
            command: command.into(),
            timeout,
        }
    }

    /// Runs the hook in `dir` with `env` added; `Ok` when it exits 0.
    pub async fn run(
        &self,
        dir: &std::path::Path,
        env: &[(&str, String)],
    ) -> Result<(), HookError> {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for name in WITHHELD {
            command.env_remove(name);
        }
        let mut child = command.spawn().map_err(|source| HookError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        let mut group = Group {
            pid: child
                .id()
                .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)),
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_stderr(stderr, tail.clone()));
        }
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        let stderr = || {
            let bytes = tail.lock().map(|t| t.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).trim().to_owned()
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
                // The hook is done: what it started in the background is its own.
                group.pid = None;
                // Its last lines may still be in the pipe.
                tokio::time::sleep(Duration::from_millis(20)).await;
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

/// Copies the hook's stderr to the agent's, keeping the last [`STDERR_TAIL`]
/// bytes. Ends when every holder of the pipe closed it.
async fn forward_stderr(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = std::io::Write::write_all(&mut std::io::stderr(), &buf[..n]);
        if let Ok(mut tail) = tail.lock() {
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > STDERR_TAIL {
                let cut = tail.len() - STDERR_TAIL;
                // Start at a character boundary.
                let start = (cut..tail.len())
                    .find(|&i| tail[i] & 0xC0 != 0x80)
                    .unwrap_or(tail.len());
                tail.drain(..start);
            }
        }
    }
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
            .run(dir.path(), &[("CANOPY_KIND", "sync".to_owned())])
            .await
            .expect_err("exit 3");
        let text = err.to_string();
        assert!(text.contains("exited with status 3"), "{text}");
        assert!(text.contains("bad sync"), "{text}");
        hook.run(dir.path(), &[]).await.expect_err("still fails");
        Hook::new("test \"$(pwd)\" = \"$PWD\"", Duration::from_secs(10))
            .run(dir.path(), &[])
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
            .run(dir.path(), &[])
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
}
