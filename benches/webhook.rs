//! Webhook-to-signal latency and idle memory of the real daemon (issue 5).
//!
//! ```text
//! cargo bench --bench webhook -- --apps 10000 [--pushes 20] [--json]
//! ```
//!
//! Starts `canopy run` (release build) on a synthetic repository with an hour
//! between polls and a running redis-server, then for each push: commits one
//! change to one app, sends a signed GitHub push webhook and measures the time
//! until the signal is in `canopy:<ns>:events` (median and worst). Also reports
//! the daemon's resident memory once idle after the first cycle.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use canopy::redis_launch::{EmbeddedRedis, LaunchOptions};
use hmac::{Hmac, KeyInit, Mac};
use redis::Commands;
use sha2::Sha256;
use support::*;

const HELP: &str = "\
usage: cargo bench --bench webhook -- [--apps N] [--pushes P] [--json]

  --apps N     apps in the synthetic repository, 6 files each (default 2000)
  --pushes P   signed pushes to time (default 20)
  --json       print one JSON summary line last";

const SECRET: &str = "bench-secret";

fn main() -> ExitCode {
    let Some(args) = BenchArgs::parse(HELP) else {
        return ExitCode::SUCCESS;
    };
    let apps = args.number("--apps", 2000);
    let pushes = args.number("--pushes", 20).max(1);
    let json = args.json();

    let work = tempfile::Builder::new()
        .prefix("canopy-bench-webhook-")
        .tempdir()
        .expect("temp dir");
    let remote = work.path().join("remote");
    generate(&remote, apps);
    let redis = EmbeddedRedis::start(LaunchOptions::new(work.path().join("redis")))
        .expect("start redis-server");
    let config = work.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "namespace: bench\nstate_dir: {}\nrepo:\n  url: file://{}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {}\nwebhooks:\n  github: {{secret_env: GH_SECRET}}\n",
            work.path().join("state").display(),
            remote.display(),
            redis.url()
        ),
    )
    .expect("write config");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("GH_SECRET", SECRET)
        .env("CANOPY_LOG", "canopy=info")
        .env("CANOPY_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start canopy run");
    let pid = daemon.id();
    // The address, from the "listening" log line; the rest of the log is drained.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = daemon.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["fields"]["message"] == "listening"
            {
                let _ = tx.send(
                    json["fields"]["addr"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("daemon listening");
    let base = format!("http://{addr}");
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/readyz"))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "daemon never ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "first cycle done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = process_rss_mib(pid);

    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_connection()
        .expect("connect");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut samples = Vec::with_capacity(pushes);
    for version in 1..=pushes as u64 {
        commit_changes(&remote, &[((version as usize * 7919) % apps, 1)], version);
        let before: usize = conn.xlen("canopy:bench:events").expect("xlen");
        let t0 = Instant::now();
        let status = client
            .post(format!("{base}/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", format!("bench-{version}"))
            .header("X-Hub-Signature-256", &signature)
            .body(body)
            .send()
            .expect("webhook")
            .status();
        assert_eq!(status, 202, "webhook accepted");
        while conn.xlen::<_, usize>("canopy:bench:events").expect("xlen") == before {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no signal after the webhook"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        samples.push(t0.elapsed());
    }
    let worst = samples.iter().max().copied().unwrap_or_default();
    let median = median_ms(&mut samples);
    println!(
        "webhook to signal, {apps} apps x 6 files, {pushes} signed pushes: median {median:.1} ms, worst {:.1} ms; idle daemon resident {idle_rss:.1} MiB",
        worst.as_secs_f64() * 1e3
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"apps": apps, "pushes": pushes, "median_ms": median, "worst_ms": worst.as_secs_f64() * 1e3, "idle_rss_mib": idle_rss})
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = daemon.wait();
    drop(redis);
    ExitCode::SUCCESS
}

/// VmRSS of another process, in MiB.
fn process_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
