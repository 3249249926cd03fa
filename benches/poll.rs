//! Poll benchmark (DESIGN section 9): canopy's in-process poll against stock git on
//! the same synthetic monorepo, in the same run.
//!
//! ```text
//! cargo bench --bench poll -- --apps 10000 [--runs R] [--polls K] [--json]
//! ```
//!
//! Scenarios and their baselines:
//! - `no_change`: a poll when the remote has nothing new | `git fetch`
//! - `one_app`: one file of one app changed | `git fetch` + `git diff-tree -r`
//! - `hundred_apps`: one file in each of 100 apps | `git fetch` + `git diff-tree -r`
//! - `cold_scan`: a full scan of the tip (fresh blob cache) |
//!   `git ls-tree -r | git cat-file --batch | sha256sum`
//!
//! Then `--polls` consecutive one-commit polls show whether the cost stays flat as
//! the mirror accumulates packs (it is repacked past a threshold).

mod support;

use std::process::ExitCode;
use std::time::Duration;

use canopy::layout::LayoutOptions;
use canopy::scan::scan;
use canopy::source::{Mirror, MirrorOptions, PollOutcome, Poller, RepoUrl};
use canopy::tree::BlobCache;
use support::*;

const HELP: &str = "\
usage: cargo bench --bench poll -- [--apps N] [--runs R] [--polls K] [--json]

  --apps N    apps in the synthetic repository, 6 files each (default 2000)
  --runs R    timed runs per scenario (default 15)
  --polls K   consecutive one-commit polls for the flatness check (default 1000)
  --json      print one JSON summary line last";

fn main() -> ExitCode {
    let Some(args) = BenchArgs::parse(HELP) else {
        return ExitCode::SUCCESS;
    };
    let apps = args.number("--apps", 2000);
    let runs = args.number("--runs", 15).max(1);
    let polls = args.number("--polls", 1000);
    let json = args.json();

    let work = tempfile::Builder::new()
        .prefix("canopy-bench-poll-")
        .tempdir()
        .expect("temp dir");
    let remote = work.path().join("remote");
    let (generated, ()) = time(|| generate(&remote, apps));
    eprintln!("generated {apps} apps in {:.1} s", generated.as_secs_f64());
    let baseline = work.path().join("baseline.git");
    git(
        work.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            &format!("file://{}", remote.display()),
            "baseline.git",
        ],
    );

    let mirror = Mirror::open(MirrorOptions {
        url: RepoUrl::parse(&format!("file://{}", remote.display())).expect("a file URL"),
        reference: "main".to_owned(),
        credentials: None,
        timeout: Duration::from_secs(600),
        dir: work.path().join("state/mirror.git"),
    })
    .expect("open mirror");
    let options = LayoutOptions::default();
    let mut poller = Poller::new(mirror, options.clone());
    let (first, poll) = time(|| poller.poll().expect("first poll"));
    let PollOutcome::Changed { plan, .. } = &poll.outcome else {
        panic!("the first poll plans every app")
    };
    assert_eq!(plan.apps.len(), apps + 1, "every app and the root");
    eprintln!(
        "first poll (clone + full scan): {:.0} ms",
        first.as_secs_f64() * 1e3
    );
    let mut head = poll.commit.to_string();
    // A daemon drops a poll's plan once it is published.
    drop(poll);
    // What a daemon holds: the snapshot, blob cache and mirror handles (the peak
    // below also counts this bench's generator and a second snapshot).
    let resident_after_first_poll = rss_mib();

    let mut scenarios = Vec::new();
    let mut version = 0u64;

    // no_change
    let mut canopy_samples = Vec::new();
    let mut git_samples = Vec::new();
    for _ in 0..runs {
        let (t, poll) = time(|| {
            let poll = poller.poll().expect("poll");
            poller.maintain();
            poll
        });
        assert!(matches!(poll.outcome, PollOutcome::Unchanged));
        canopy_samples.push(t);
        git_samples.push(time_shell(&format!(
            "git -C {} fetch -q origin",
            baseline.display()
        )));
    }
    scenarios.push(Scenario {
        name: "no_change",
        canopy_ms: median_ms(&mut canopy_samples),
        baseline_ms: median_ms(&mut git_samples),
        baseline: "git fetch",
    });

    // one_app and hundred_apps
    for (name, touched) in [("one_app", 1usize), ("hundred_apps", 100)] {
        let mut canopy_samples = Vec::new();
        let mut git_samples = Vec::new();
        for _ in 0..runs {
            version += 1;
            let changes: Vec<(usize, usize)> = (0..touched)
                .map(|k| {
                    (
                        (version as usize * 7919 + k * (apps / touched.max(1))) % apps,
                        1 + k % 5,
                    )
                })
                .collect();
            let new = commit_changes(&remote, &changes, version);
            let (t, poll) = time(|| {
                let poll = poller.poll().expect("poll");
                poller.maintain();
                poll
            });
            match &poll.outcome {
                PollOutcome::Changed { plan, .. } => assert_eq!(plan.apps.len(), touched, "{name}"),
                PollOutcome::Unchanged => panic!("{name}: the poll missed the commit"),
            }
            canopy_samples.push(t);
            git_samples.push(time_shell(&format!(
                "git -C {dir} fetch -q origin && git -C {dir} diff-tree -r {head} {new} > /dev/null",
                dir = baseline.display()
            )));
            head = new;
        }
        scenarios.push(Scenario {
            name,
            canopy_ms: median_ms(&mut canopy_samples),
            baseline_ms: median_ms(&mut git_samples),
            baseline: "git fetch + git diff-tree -r",
        });
    }

    // Where a one-app poll's time goes: the fetch alone, then the rest of a poll
    // (a no-change negotiation, diff, hashing, update and plan).
    let mut fetch_samples = Vec::new();
    let mut rest_samples = Vec::new();
    for _ in 0..runs {
        version += 1;
        commit_changes(&remote, &[((version as usize * 7919) % apps, 3)], version);
        let (t, _) = time(|| poller.mirror().fetch().expect("fetch"));
        fetch_samples.push(t);
        let (t, poll) = time(|| {
            let poll = poller.poll().expect("poll");
            poller.maintain();
            poll
        });
        assert!(matches!(poll.outcome, PollOutcome::Changed { .. }));
        rest_samples.push(t);
        git(&baseline, &["fetch", "-q", "origin"]);
    }
    let split = (median_ms(&mut fetch_samples), median_ms(&mut rest_samples));

    // cold_scan
    let tree = poller
        .mirror()
        .tree(poller.state().expect("polled").0)
        .expect("tree");
    let mut canopy_samples = Vec::new();
    let mut git_samples = Vec::new();
    for _ in 0..runs.min(7) {
        let (t, result) = time(|| scan(&tree, &options, &BlobCache::default()).expect("scan"));
        assert_eq!(result.digests.len(), apps + 1);
        canopy_samples.push(t);
        git_samples.push(time_shell(&format!(
            "git -C {dir} ls-tree -r main | awk '{{print $3}}' | git -C {dir} cat-file --batch | sha256sum",
            dir = baseline.display()
        )));
    }
    scenarios.push(Scenario {
        name: "cold_scan",
        canopy_ms: median_ms(&mut canopy_samples),
        baseline_ms: median_ms(&mut git_samples),
        baseline: "git ls-tree -r | git cat-file --batch | sha256sum",
    });

    let peak_before_polls = peak_rss_mib();

    // Flatness over consecutive one-commit polls. fast-import adds a pack to the
    // remote per commit; a real server repacks, so the remote is repacked (untimed)
    // every 50 commits: only canopy's own cost is under test.
    let mut samples = Vec::with_capacity(polls);
    for n in 0..polls {
        if n % 50 == 0 {
            git(&remote, &["repack", "-a", "-d", "-q"]);
        }
        version += 1;
        commit_changes(&remote, &[((version as usize * 7919) % apps, 2)], version);
        let (t, poll) = time(|| {
            let poll = poller.poll().expect("poll");
            poller.maintain();
            poll
        });
        assert!(matches!(poll.outcome, PollOutcome::Changed { .. }));
        samples.push(t);
    }
    let window = 50.min(polls / 2).max(1);
    let flat = (polls >= 2).then(|| {
        let mut early = samples[..window].to_vec();
        let mut late = samples[polls - window..].to_vec();
        (median_ms(&mut early), median_ms(&mut late))
    });
    let rss = peak_rss_mib();

    print_table(
        &format!("poll benchmark, {apps} apps x 6 files (medians)"),
        &scenarios,
    );
    println!(
        "one_app split: fetch alone {:.2} ms; then a poll of the fetched commit {:.2} ms",
        split.0, split.1
    );
    if let Some((early, late)) = flat {
        println!(
            "{polls} consecutive one-commit polls: median of the first {window} {early:.2} ms, of the last {window} {late:.2} ms; {} packs in the mirror",
            poller.mirror().pack_count()
        );
    }
    println!(
        "resident after the first poll: {resident_after_first_poll:.1} MiB; peak RSS of this process: {rss:.1} MiB ({peak_before_polls:.1} MiB before the consecutive polls); resident now: {:.1} MiB anonymous, {:.1} MiB file-backed",
        proc_status_mib("RssAnon:"),
        proc_status_mib("RssFile:")
    );
    if json {
        let mut summary = serde_json::json!({"apps": apps, "scenarios": scenarios_json(&scenarios), "peak_rss_mib": rss});
        if let Some((early, late)) = flat {
            summary["consecutive_polls"] =
                serde_json::json!({"polls": polls, "first_ms": early, "last_ms": late});
        }
        println!("{summary}");
    }
    drop(work);
    ExitCode::SUCCESS
}
