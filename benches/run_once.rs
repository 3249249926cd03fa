//! Whole-process benchmark of `canopy run --once` (issue 4): start-up, fetch,
//! reconcile and Redis writes, against stock git on the same remote in the same
//! run.
//!
//! ```text
//! cargo bench --bench run_once -- --apps 10000 [--runs R] [--json]
//! ```
//!
//! Scenarios and their baselines (targets in parentheses):
//! - `cold`: the first run (clone, full scan, every app written and signalled);
//!   reported, no baseline.
//! - `no_change`: a run when the remote has nothing new | `git fetch` (<= 1.2x)
//! - `one_app`: one file of one app changed | `git fetch` + `git diff-tree -r` (<= 0.6x)
//! - `no_change_embedded`: as `no_change`, but the process also starts and stops
//!   its own redis-server (AOF replay included) | `git fetch` (reported only)
//!
//! Redis for the first three is a redis-server this bench starts beforehand, as a
//! deployment would have one running.

mod support;

use std::path::Path;
use std::process::{Command, ExitCode};

use canopy::redis_launch::{EmbeddedRedis, LaunchOptions};
use support::*;

const HELP: &str = "\
usage: cargo bench --bench run_once -- [--apps N] [--runs R] [--json]

  --apps N    apps in the synthetic repository, 6 files each (default 2000)
  --runs R    timed runs per scenario (default 9)
  --json      print one JSON summary line last";

fn main() -> ExitCode {
    let Some(args) = BenchArgs::parse(HELP) else {
        return ExitCode::SUCCESS;
    };
    let apps = args.number("--apps", 2000);
    let runs = args.number("--runs", 9).max(1);
    let json = args.json();

    let work = tempfile::Builder::new()
        .prefix("canopy-bench-once-")
        .tempdir()
        .expect("temp dir");
    let remote = work.path().join("remote");
    let (generated, ()) = time(|| generate(&remote, apps));
    eprintln!("generated {apps} apps in {:.1} s", generated.as_secs_f64());
    let url = format!("file://{}", remote.display());
    let baseline = work.path().join("baseline.git");
    git(
        work.path(),
        &["clone", "-q", "--mirror", &url, "baseline.git"],
    );
    let redis = EmbeddedRedis::start(LaunchOptions::new(work.path().join("redis")))
        .expect("start redis-server");
    let redis_url = redis.url();
    let state = work.path().join("state");
    let once = |state: &Path, redis_url: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.args(["run", "--once", "--repo-url", &url, "--namespace", "bench"])
            .arg("--state-dir")
            .arg(state)
            .env_remove("CANOPY_CONFIG")
            .env_remove("CANOPY_REDIS_URL");
        if let Some(redis_url) = redis_url {
            cmd.args(["--redis-url", redis_url]);
        }
        let (t, out) = time(|| cmd.output().expect("run canopy"));
        assert!(
            out.status.success(),
            "canopy run --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (t, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let fetch = || time_shell(&format!("git -C {} fetch -q origin", baseline.display()));

    let (cold, report) = once(&state, Some(&redis_url));
    eprintln!(
        "cold run: {:.0} ms ({})",
        cold.as_secs_f64() * 1e3,
        report.trim()
    );
    let mut scenarios = Vec::new();

    let (mut canopy_samples, mut git_samples) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, report) = once(&state, Some(&redis_url));
        assert!(report.contains("0 written, 0 signals"), "{report}");
        canopy_samples.push(t);
        git_samples.push(fetch());
    }
    scenarios.push(Scenario {
        name: "no_change",
        canopy_ms: median_ms(&mut canopy_samples),
        baseline_ms: median_ms(&mut git_samples),
        baseline: "git fetch",
    });

    let (mut canopy_samples, mut git_samples) = (Vec::new(), Vec::new());
    let mut head = git(&remote, &["rev-parse", "main"]).trim().to_owned();
    for version in 1..=runs as u64 {
        let new = commit_changes(&remote, &[((version as usize * 7919) % apps, 1)], version);
        let (t, report) = once(&state, Some(&redis_url));
        assert!(
            report.contains(", 1 signals"),
            "one app signalled: {report}"
        );
        canopy_samples.push(t);
        git_samples.push(time_shell(&format!(
            "git -C {b} fetch -q origin && git -C {b} diff-tree -r {head} {new}",
            b = baseline.display()
        )));
        head = new;
    }
    scenarios.push(Scenario {
        name: "one_app",
        canopy_ms: median_ms(&mut canopy_samples),
        baseline_ms: median_ms(&mut git_samples),
        baseline: "git fetch + git diff-tree -r",
    });

    // The embedded default: the process starts redis-server itself.
    let embedded_state = work.path().join("embedded");
    once(&embedded_state, None);
    let (mut canopy_samples, mut git_samples) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        canopy_samples.push(once(&embedded_state, None).0);
        git_samples.push(fetch());
    }
    scenarios.push(Scenario {
        name: "no_change_embedded",
        canopy_ms: median_ms(&mut canopy_samples),
        baseline_ms: median_ms(&mut git_samples),
        baseline: "git fetch",
    });

    print_table(
        &format!(
            "canopy run --once, whole process, {apps} apps x 6 files (medians of {runs}); cold run {:.0} ms",
            cold.as_secs_f64() * 1e3
        ),
        &scenarios,
    );
    if json {
        let summary = serde_json::json!({
            "apps": apps,
            "cold_ms": cold.as_secs_f64() * 1e3,
            "scenarios": scenarios_json(&scenarios),
        });
        println!("{summary}");
    }
    drop(redis);
    ExitCode::SUCCESS
}
