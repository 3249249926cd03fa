//! The real `canopy run` binary as a daemon: a temp config, its log captured,
//! stopped by SIGTERM.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::eventually;
use super::process::{Capture, Spawned};

pub struct DaemonProcess {
    process: Spawned,
    pub addr: SocketAddr,
}

impl DaemonProcess {
    /// Starts `canopy run --config <config> --listen 127.0.0.1:0 <extra>` and waits
    /// until it logs the address it listens on (or exits: its log says why).
    pub fn start(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> DaemonProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(extra)
            .env("CANOPY_LOG", "canopy=info")
            .env("CANOPY_LOG_FORMAT", "json")
            .env_remove("CANOPY_REDIS_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = Spawned::start(&mut cmd, Capture::Stderr, "canopy run");
        let mut addr = None;
        eventually(Duration::from_secs(60), || {
            addr = process.find_line(|line| listening(line));
            addr.is_some() || process.exited()
        });
        let addr = addr.unwrap_or_else(|| panic!("canopy run did not start:\n{}", process.log()));
        DaemonProcess { process, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Deref for DaemonProcess {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.process
    }
}

impl DerefMut for DaemonProcess {
    fn deref_mut(&mut self) -> &mut Spawned {
        &mut self.process
    }
}

/// The address of a JSON log line `{"fields":{"addr":"127.0.0.1:1234","message":"listening"}}`.
fn listening(line: &str) -> Option<SocketAddr> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &json["fields"];
    (fields["message"] == "listening").then(|| fields["addr"].as_str()?.parse().ok())?
}
