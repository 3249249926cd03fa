//! The real `canopy run` binary as a daemon: a temp config, its log captured,
//! stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::eventually;

pub struct DaemonProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
}

impl DaemonProcess {
    /// Starts `canopy run --config <config> --listen 127.0.0.1:0 <extra>` and waits
    /// until it logs the address it listens on.
    pub fn start(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> DaemonProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(extra)
            .env("CANOPY_LOG", "canopy=info")
            .env("CANOPY_LOG_FORMAT", "json")
            .env_remove("CANOPY_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start canopy run");
        let stderr = child.stderr.take().expect("piped");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        let found = eventually(Duration::from_secs(60), || {
            addr = log.lock().unwrap().iter().find_map(|line| listening(line));
            addr.is_some()
        });
        let mut daemon = DaemonProcess {
            child,
            log,
            addr: "0.0.0.0:0".parse().expect("an address"),
        };
        assert!(found, "canopy run did not start:\n{}", daemon.log());
        daemon.addr = addr.expect("found");
        daemon
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of a JSON log line `{"fields":{"addr":"127.0.0.1:1234","message":"listening"}}`.
fn listening(line: &str) -> Option<SocketAddr> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &json["fields"];
    (fields["message"] == "listening").then(|| fields["addr"].as_str()?.parse().ok())?
}
