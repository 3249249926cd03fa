//! What the benchmarks share: a deterministic synthetic monorepo made with
//! `git fast-import`, stock-git helpers, medians and peak memory.
#![allow(dead_code)] // each bench uses a different part

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const TEAMS: usize = 16;
pub const FILES_PER_APP: usize = 6;
/// 2026-01-01T00:00:00Z, as in fixtures/make-repo.sh.
pub const EPOCH: u64 = 1_767_225_600;
const IDENTITY: &str = "canopy bench <bench@canopy.invalid>";

/// The directory of app `i`: `team-03/app-00042`.
pub fn app_dir(i: usize) -> String {
    format!("team-{:02}/app-{i:05}", i % TEAMS)
}

/// The content of file `f` of app `i` at `version`: a few hundred bytes of YAML,
/// distinct per app so that no two apps share blobs.
pub fn file_content(i: usize, f: usize, version: u64) -> (String, String) {
    let dir = app_dir(i);
    match f {
        0 => (
            format!("{dir}/app.yaml"),
            format!(
                "labels: {{team: team-{:02}}}\nconfig: {{APP_ID: \"{i}\"}}\n",
                i % TEAMS
            ),
        ),
        _ => {
            let mut text = format!(
                "# file {f} of app {i}, version {version}\napiVersion: v1\nkind: ConfigMap\n"
            );
            let _ = write!(
                text,
                "metadata: {{name: app-{i:05}-{f}, namespace: team-{:02}}}\ndata:\n",
                i % TEAMS
            );
            for k in 0..8 {
                let _ = writeln!(text, "  key{k}: \"value-{i}-{f}-{k}-{version}\"");
            }
            (format!("{dir}/file-{f}.yaml"), text)
        }
    }
}

/// Creates a non-bare repository at `dir` with one commit on `main` holding
/// `apps` apps of [`FILES_PER_APP`] files each.
pub fn generate(dir: &Path, apps: usize) {
    git(
        dir.parent().expect("a parent"),
        &["init", "-q", "-b", "main", dir.to_str().expect("UTF-8")],
    );
    // Streamed: a 10,000-app stream built in memory (about 20 MB) would, once
    // freed, raise glibc's mmap threshold and so change how the measured code's
    // allocations are placed.
    fast_import(dir, |out| {
        write!(
            out,
            "commit refs/heads/main\ncommitter {IDENTITY} {EPOCH} +0000\ndata 9\ngenerate\n"
        )?;
        for i in 0..apps {
            for f in 0..FILES_PER_APP {
                write_file(out, i, f, 0)?;
            }
        }
        Ok(())
    });
}

/// Commits new versions of the given (app, file) pairs on `main`; returns the
/// commit id.
pub fn commit_changes(dir: &Path, changes: &[(usize, usize)], version: u64) -> String {
    fast_import(dir, |out| {
        write!(
            out,
            "commit refs/heads/main\ncommitter {IDENTITY} {} +0000\ndata 7\nchange\nfrom refs/heads/main^0\n",
            EPOCH + version
        )?;
        for &(i, f) in changes {
            write_file(out, i, f, version)?;
        }
        Ok(())
    });
    git(dir, &["rev-parse", "main"]).trim().to_owned()
}

/// The fast-import command that sets file `f` of app `i` to its `version`.
fn write_file(
    out: &mut dyn std::io::Write,
    i: usize,
    f: usize,
    version: u64,
) -> std::io::Result<()> {
    let (path, content) = file_content(i, f, version);
    write!(
        out,
        "M 100644 inline {path}\ndata {}\n{content}\n",
        content.len()
    )
}

/// Runs `git fast-import` in `dir` on the stream `write` produces.
fn fast_import(dir: &Path, write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["fast-import", "--quiet", "--force"])
        .envs(isolated_git_env())
        .stdin(Stdio::piped())
        .spawn()
        .expect("run git fast-import");
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
    write(&mut stdin)
        .and_then(|()| stdin.flush())
        .expect("feed git fast-import");
    drop(stdin);
    assert!(
        child.wait().expect("wait for git fast-import").success(),
        "git fast-import failed"
    );
}

fn isolated_git_env() -> [(&'static str, &'static str); 2] {
    [
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
    ]
}

/// Runs git in `dir`; its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(isolated_git_env())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell pipeline (bash, pipefail) and returns how long it took.
pub fn time_shell(script: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .envs(isolated_git_env())
        .stdout(Stdio::null())
        .status()
        .expect("run bash");
    let elapsed = started.elapsed();
    assert!(status.success(), "baseline failed: {script}");
    elapsed
}

pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let value = f();
    (started.elapsed(), value)
}

pub fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// This process's peak resident memory (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

/// This process's resident memory now (VmRSS), in MiB.
pub fn rss_mib() -> f64 {
    proc_status_mib("VmRSS:")
}

/// A field of `/proc/self/status` in kB (`VmRSS:`, `RssAnon:`...), in MiB.
pub fn proc_status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `--name VALUE` from the arguments.
pub fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A bench's command line: `--name N` numbers and `--json`.
pub struct BenchArgs(Vec<String>);

impl BenchArgs {
    /// The process's arguments, or `None` after printing `help` for `-h`/`--help`.
    pub fn parse(help: &str) -> Option<BenchArgs> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            println!("{help}");
            return None;
        }
        Some(BenchArgs(args))
    }

    /// `--name N`, or `default`; panics on a value that is not a number.
    pub fn number(&self, name: &str, default: usize) -> usize {
        arg_value(&self.0, name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
    }

    pub fn json(&self) -> bool {
        self.0.iter().any(|a| a == "--json")
    }
}

/// One timed scenario: canopy against a stock-tool baseline measured in the same run.
pub struct Scenario {
    pub name: &'static str,
    pub canopy_ms: f64,
    pub baseline_ms: f64,
    pub baseline: &'static str,
}

pub fn print_table(title: &str, scenarios: &[Scenario]) {
    println!("{title}");
    println!(
        "{:<14} {:>11} {:>12} {:>7}  baseline",
        "scenario", "canopy ms", "baseline ms", "ratio"
    );
    for s in scenarios {
        println!(
            "{:<14} {:>11.2} {:>12.2} {:>7.3}  {}",
            s.name,
            s.canopy_ms,
            s.baseline_ms,
            s.canopy_ms / s.baseline_ms,
            s.baseline
        );
    }
}

/// `{name: {canopy_ms, baseline_ms, ratio}}` for a `--json` summary.
pub fn scenarios_json(scenarios: &[Scenario]) -> serde_json::Value {
    let mut entries = serde_json::Map::new();
    for s in scenarios {
        entries.insert(
            s.name.to_owned(),
            serde_json::json!({"canopy_ms": s.canopy_ms, "baseline_ms": s.baseline_ms, "ratio": s.canopy_ms / s.baseline_ms}),
        );
    }
    serde_json::Value::Object(entries)
}
