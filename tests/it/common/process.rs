//! A real process of the test: one of its output streams captured line by line,
//! signals by name, a bounded wait, and SIGKILL on drop so nothing outlives the
//! test. The daemon, agent and example harnesses wrap it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which output stream to capture; the other goes to /dev/null. `Both`
/// interleaves them line by line, in no guaranteed order between the two.
#[derive(Clone, Copy)]
pub enum Capture {
    Stdout,
    Stderr,
    Both,
}

pub struct Spawned {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    pub fn start(cmd: &mut Command, capture: Capture, what: &str) -> Spawned {
        cmd.stdin(Stdio::null());
        let piped = |captured: bool| {
            if captured {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        let (stdout, stderr) = match capture {
            Capture::Stdout => (true, false),
            Capture::Stderr => (false, true),
            Capture::Both => (true, true),
        };
        cmd.stdout(piped(stdout)).stderr(piped(stderr));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut streams: Vec<Box<dyn Read + Send>> = Vec::new();
        if let Some(out) = child.stdout.take() {
            streams.push(Box::new(out));
        }
        if let Some(err) = child.stderr.take() {
            streams.push(Box::new(err));
        }
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in streams {
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Spawned { child, lines }
    }

    /// Every captured line so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first captured line for which `f` gives something.
    pub fn find_line<T>(&self, f: impl FnMut(&String) -> Option<T>) -> Option<T> {
        self.lines.lock().unwrap().iter().find_map(f)
    }

    /// Whether a captured line starts with `start` and contains `containing`.
    pub fn printed(&self, start: &str, containing: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(start) && l.contains(containing))
    }

    /// Whether a JSON log line has this `message`.
    pub fn logged(&self, message: &str) -> bool {
        self.logged_times(message) > 0
    }

    /// How many JSON log lines have this `message`.
    pub fn logged_times(&self, message: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .is_ok_and(|json| json["fields"]["message"] == message)
            })
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sets the process's file size limit (RLIMIT_FSIZE, soft; `None`: no
    /// limit), as the test runner's own hard limit allows. Past it, a write
    /// fails with EFBIG (and SIGXFSZ, fatal unless handled): the one way to make
    /// a running process's big writes fail that needs no privilege, unlike
    /// mounting a full filesystem. Only files the process writes itself from
    /// now on (and children it starts later) are affected; pipes never are.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        use rustix::process::{Pid, Resource, Rlimit, getrlimit, prlimit};
        let pid = Pid::from_raw(self.pid() as i32).expect("a child's pid is positive");
        let maximum = getrlimit(Resource::Fsize).maximum;
        let current = match (bytes, maximum) {
            (Some(bytes), Some(max)) => Some(bytes.min(max)),
            (Some(bytes), None) => Some(bytes),
            (None, max) => max,
        };
        prlimit(Some(pid), Resource::Fsize, Rlimit { current, maximum })
            .unwrap_or_else(|e| panic!("prlimit --fsize on {}: {e}", self.pid()));
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
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
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.exited() {
            self.kill();
        }
    }
}
