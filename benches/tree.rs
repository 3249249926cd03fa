//! Cold-scan benchmark (DESIGN section 9: "Cold scan of 10,000 apps: <= 0.6x `git
//! ls-tree -r | git cat-file --batch | sha256sum`").
//!
//! ```text
//! cargo build --release                      # the binary scenario runs target/release/canopy
//! cargo bench --bench tree -- --apps 10000 [--json] [--runs R] [--phases]
//! ```
//!
//! A synthetic monorepo (N apps of 6 small YAML files under a few team directories,
//! one commit with fixed identities and dates, so the same commit id everywhere) is
//! generated once per N with `git fast-import` into `target/bench-tree/` and reused.
//! One discarded round warms the page cache, then `--runs` rounds each run every
//! scenario once in turn; the table shows medians and each one's ratio to the
//! stock-git baseline. The scan is checked once per run against the apps generated,
//! against `sha256sum` on a checked-out copy and against the binary's JSON; any
//! mismatch aborts with exit code 1.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use canopy::digest::{Surroundings, digest_apps};
use canopy::layout::{App, AppName, AppSpec, LayoutOptions, discover};
use canopy::scan::{Scan, scan};
use canopy::tree::{BlobCache, Entry, EntryKind, FileHash, GitTree, Tree, par_map};
use gix::objs::Find as _;

/// Bump when the generated content changes: cached repositories are keyed by it.
const GENERATOR_VERSION: u32 = 1;
const TEAMS: usize = 16;
const FILES_PER_APP: usize = 6;
const DEFAULT_RUNS: usize = 7;
/// 2026-01-01T00:00:00Z, as in fixtures/make-repo.sh.
const EPOCH: u64 = 1_767_225_600;
const IDENTITY: &str = "canopy bench <bench@canopy.invalid>";

/// The scenario every ratio is relative to.
const BASELINE: &str = "git_lstree_catfile_sha256sum";

const HELP: &str = "\
Cold-scan benchmark of canopy against stock git and coreutils.

usage: cargo build --release && cargo bench --bench tree -- --apps N [options]

  --apps N     apps in the synthetic repository (required), 6 files each
  --runs R     timed rounds after one discarded warm-up round (default 7); each
               round runs every scenario once, so outside load hits all alike
  --json       print one JSON summary line last
  --phases     also time, in-process: list, discover, digest_apps, and the parts
               of their cost (blob reads on 1 and all cores, sha256, app.yaml
               parsing, gix header lookups vs object reads)
  -h, --help   this text

The binary scenario runs target/release/canopy, which `cargo bench` does not
build: run `cargo build --release` first. Repositories are cached in
target/bench-tree/; delete that directory to regenerate them.";

type Result<T, E = String> = std::result::Result<T, E>;

struct Args {
    apps: usize,
    runs: usize,
    json: bool,
    phases: bool,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench tree: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbench tree: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)` asks for the help text.
fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let mut args = Args {
        apps: 0,
        runs: DEFAULT_RUNS,
        json: false,
        phases: false,
    };
    let number = |flag: &str, value: Option<String>| -> Result<usize> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{flag}: expected a positive integer, got {value:?}"))
    };
    while let Some(arg) = raw.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        match flag.as_str() {
            "--apps" => args.apps = number("--apps", inline.or_else(|| raw.next()))?,
            "--runs" => args.runs = number("--runs", inline.or_else(|| raw.next()))?,
            "--json" => args.json = true,
            "--phases" => args.phases = true,
            "-h" | "--help" => return Ok(None),
            // `cargo bench` passes `--bench` to every harness-less bench.
            "--bench" => {}
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if args.apps == 0 {
        return Err("--apps N is required".to_owned());
    }
    Ok(Some(args))
}

fn run(args: &Args) -> Result<()> {
    let target = target_dir()?;
    let binary = target.join("release").join("canopy");
    if !binary.is_file() {
        return Err(format!(
            "{} is missing: run `cargo build --release` before `cargo bench --bench tree`",
            binary.display()
        ));
    }
    warn_if_stale(&binary);

    let started = Instant::now();
    let fixture = Fixture::prepare(&target.join("bench-tree"), args.apps)?;
    eprintln!(
        "repository {} ({} apps, {} files, {} bytes of content, pack {:.1} MiB, commit {}): ready in {:.1} s",
        fixture.repo.display(),
        args.apps,
        fixture.files,
        fixture.bytes,
        mib(fixture.pack_bytes),
        fixture.commit,
        started.elapsed().as_secs_f64()
    );

    verify(&fixture, &binary)?;
    eprintln!(
        "verified: {} apps + root, sampled digest matches sha256sum",
        args.apps
    );

    let runs = args.runs;
    let outside = OutsideLoad::start();
    let repo = &fixture.repo;
    let scenarios: Vec<Scenario> = vec![
        (
            "canopy_scan_inprocess",
            Box::new(|| timed(|| scan_once(repo))),
        ),
        (
            "canopy_tree_binary",
            Box::new(|| timed(|| run_quiet(&mut canopy_command(&binary, repo)))),
        ),
        (
            BASELINE,
            Box::new(|| {
                timed(|| {
                    run_quiet(&mut bash(
                        r#"git -C "$1" ls-tree -r HEAD | awk '{print $3}' | git -C "$1" cat-file --batch | sha256sum"#,
                        [repo],
                    ))
                })
            }),
        ),
        (
            "git_lstree",
            Box::new(|| timed(|| run_quiet(&mut bash(r#"git -C "$1" ls-tree -r HEAD"#, [repo])))),
        ),
        (
            "git_catfile_batch",
            Box::new(|| {
                timed(|| {
                    run_quiet(&mut bash(
                        r#"git -C "$1" cat-file --batch < "$2""#,
                        [repo, &fixture.blob_list],
                    ))
                })
            }),
        ),
        (
            "find_xargs_sha256sum_checkout",
            Box::new(|| {
                timed(|| {
                    run_quiet(&mut bash(
                        r#"find "$1" -type f -print0 | xargs -0 sha256sum"#,
                        [&fixture.checkout],
                    ))
                })
            }),
        ),
    ];
    eprintln!("timing: {runs} rounds of every scenario in turn, after one discarded warm-up round");
    let results = measure_interleaved(runs, scenarios)?;
    let busy = outside.and_then(|o| o.percent());
    if let Some(busy) = busy.filter(|b| *b > 5.0) {
        eprintln!(
            "warning: other processes used {busy:.0}% of the CPUs while timing: figures are skewed"
        );
    }
    for (name, stats) in &results {
        eprintln!("  {name:<36} {:>9.1} ms", stats.median_ms());
    }
    let peak_rss_kib = peak_rss_kib(&binary, &fixture.repo)?;

    let mut phases = Vec::new();
    if args.phases {
        eprintln!("timing phases in-process:");
        phases = measure_phases(&fixture.repo, runs)?;
    }

    let median = |name: &str| -> f64 {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.median_ms())
            .expect("every scenario named here was measured above")
    };
    let baseline_ms = median(BASELINE);
    println!(
        "{}",
        table(&fixture, runs, &results, baseline_ms, peak_rss_kib, busy)
    );
    if !phases.is_empty() {
        println!("{}", phase_table(&phases, median("canopy_scan_inprocess")));
    }
    if args.json {
        let scenario = |name: &str| {
            let canopy_ms = median(name);
            serde_json::json!({
                "canopy_ms": round3(canopy_ms),
                "baseline_ms": round3(baseline_ms),
                "ratio": round3(canopy_ms / baseline_ms),
            })
        };
        let summary = serde_json::json!({
            "apps": args.apps,
            "files": fixture.files,
            "bytes": fixture.bytes,
            "scenarios": {
                "cold_scan_inprocess": scenario("canopy_scan_inprocess"),
                "cold_tree_binary": scenario("canopy_tree_binary"),
            },
            "peak_rss_mib": round3(peak_rss_kib as f64 / 1024.0),
        });
        println!("{summary}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The synthetic repository

/// A generated bare repository, its checkout and what was generated.
struct Fixture {
    apps: usize,
    repo: PathBuf,
    /// `git --work-tree` checkout of HEAD, for the coreutils baselines.
    checkout: PathBuf,
    /// Every blob id of HEAD, one a line: the input of `git cat-file --batch`.
    blob_list: PathBuf,
    files: usize,
    bytes: u64,
    pack_bytes: u64,
    commit: String,
}

impl Fixture {
    /// Reuses `cache/v<version>-apps-<N>` if present; else generates it under a
    /// temporary name and renames it, so a present directory is always complete.
    fn prepare(cache: &Path, apps: usize) -> Result<Self> {
        let dir = cache.join(format!("v{GENERATOR_VERSION}-apps-{apps}"));
        if !dir.is_dir() {
            let tmp = cache.join(format!(".tmp-apps-{apps}-{}", std::process::id()));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| io_error("remove", &tmp, e))?;
            }
            std::fs::create_dir_all(&tmp).map_err(|e| io_error("create", &tmp, e))?;
            let generated = generate(&tmp, apps).and_then(|()| {
                match std::fs::rename(&tmp, &dir) {
                    Ok(()) => Ok(()),
                    // Another run generated the same repository meanwhile.
                    Err(_) if dir.is_dir() => Ok(()),
                    Err(e) => Err(io_error("rename", &tmp, e)),
                }
            });
            if tmp.exists() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            generated?;
        }
        let (files, bytes) = (0..apps).fold((0, 0), |(files, bytes), i| {
            let app = app_files(i);
            (
                files + app.len(),
                bytes + app.iter().map(|(_, c)| c.len() as u64).sum::<u64>(),
            )
        });
        let repo = dir.join("repo.git");
        let pack_bytes = std::fs::read_dir(repo.join("objects/pack"))
            .map_err(|e| io_error("list", &repo, e))?
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .map(|meta| meta.len())
            .sum();
        let commit = output(git(&repo).args(["rev-parse", "HEAD"]))?
            .trim()
            .to_owned();
        Ok(Fixture {
            apps,
            checkout: dir.join("checkout"),
            blob_list: dir.join("blobs.txt"),
            repo,
            files,
            bytes,
            pack_bytes,
            commit,
        })
    }

    fn sample_app(&self) -> usize {
        self.apps * 7 / 13
    }
}

fn generate(dir: &Path, apps: usize) -> Result<()> {
    let repo = dir.join("repo.git");
    run_quiet(
        git(dir)
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&repo),
    )?;

    let mut child = git(&repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to start git fast-import: {e}"))?;
    {
        let stdin = child.stdin.take().expect("stdin was requested as a pipe");
        let mut out = BufWriter::with_capacity(1 << 20, stdin);
        fast_import_stream(&mut out, apps)
            .map_err(|e| format!("writing to git fast-import: {e}"))?;
        out.flush()
            .map_err(|e| format!("writing to git fast-import: {e}"))?;
    }
    let status = child.wait().map_err(|e| format!("git fast-import: {e}"))?;
    if !status.success() {
        return Err(format!("git fast-import failed: {status}"));
    }

    // The index of this checkout lives next to it, not inside the bare repository.
    let checkout = dir.join("checkout");
    std::fs::create_dir(&checkout).map_err(|e| io_error("create", &checkout, e))?;
    let mut work_tree = OsString::from("--work-tree=");
    work_tree.push(&checkout);
    run_quiet(
        git(&repo)
            .env("GIT_INDEX_FILE", dir.join("checkout.index"))
            .arg(work_tree)
            .args(["checkout", "HEAD", "--", "."]),
    )?;

    let list = output(&mut bash(
        r#"git -C "$1" ls-tree -r HEAD | awk '{print $3}'"#,
        [&repo],
    ))?;
    let blobs = dir.join("blobs.txt");
    std::fs::write(&blobs, list).map_err(|e| io_error("write", &blobs, e))
}

/// One commit on `main` holding every file inline.
fn fast_import_stream(out: &mut impl std::io::Write, apps: usize) -> std::io::Result<()> {
    let message = format!("synthetic monorepo: {apps} apps\n");
    write!(
        out,
        "commit refs/heads/main\nauthor {IDENTITY} {EPOCH} +0000\ncommitter {IDENTITY} {EPOCH} +0000\ndata {}\n{message}",
        message.len()
    )?;
    for i in 0..apps {
        let dir = app_dir(i);
        for (name, content) in app_files(i) {
            write!(
                out,
                "M 100644 inline {dir}/{name}\ndata {}\n",
                content.len()
            )?;
            out.write_all(content.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.write_all(b"done\n")
}

fn app_dir(i: usize) -> String {
    format!("team-{:02}/app-{i:05}", i % TEAMS)
}

/// splitmix64: cheap, deterministic per-app variation.
fn mix(i: usize, salt: u64) -> u64 {
    let mut z = (i as u64 ^ salt.rotate_left(32)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The six files of app `i`, a few hundred bytes each, distinct from every other
/// app's (each names its app and carries per-app values).
fn app_files(i: usize) -> [(&'static str, String); FILES_PER_APP] {
    let team = format!("team-{:02}", i % TEAMS);
    let name = format!("app-{i:05}");
    let tier = ["frontend", "backend", "batch"][i % 3];
    let replicas = 1 + mix(i, 1) % 5;
    let image = format!("{:016x}", mix(i, 2));
    let port = 8000 + mix(i, 3) % 1000;
    let mut spec = format!(
        "# {team}/{name}: synthetic app of the canopy tree bench.\n\
         sync: {}\nwave: {}\n",
        if i.is_multiple_of(7) {
            "manual"
        } else {
            "auto"
        },
        i % 3
    );
    if i % 10 == 1 {
        let _ = writeln!(spec, "depends_on: [{}]", app_dir(i - 1));
    }
    // Some apps filter their files, as real ones do (each such app compiles a glob).
    if i.is_multiple_of(5) {
        spec.push_str("exclude: [\"**/*.md\", \"**/*.txt\"]\n");
    }
    let _ = write!(
        spec,
        "config:\n  LOG_LEVEL: info\n  replicas: {replicas}\n  APP_ID: \"{name}\"\n  \
         FEATURES: \"{:08x}\"\n\
         secrets: [db_password]\n\
         labels: {{team: {team}, tier: {tier}}}\n",
        mix(i, 4) as u32
    );
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app: {name}, team: {team}}}\n\
         spec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    \
         metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: {name}\n          \
         image: registry.invalid/{team}/{name}:{image}\n          ports: [{{containerPort: {port}}}]\n"
    );
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{app: {name}, team: {team}}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports:\n    - name: http\n      port: 80\n      \
         targetPort: {port}\n      protocol: TCP\n  type: ClusterIP\n"
    );
    let configmap = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\n  labels: {{app: {name}}}\n\
         data:\n  LISTEN_ADDR: \"0.0.0.0:{port}\"\n  UPSTREAM: \"http://{}.{team}.svc:80\"\n  \
         CACHE_TTL_SECONDS: \"{}\"\n  BUILD: \"{image}\"\n  TIER: {tier}\n",
        app_dir(mix(i, 5) as usize % (i + 1)).replace('/', "-"),
        60 + mix(i, 6) % 3600
    );
    let hpa = format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: {name}\n\
         spec:\n  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n  \
         minReplicas: {replicas}\n  maxReplicas: {}\n  metrics:\n    - type: Resource\n      resource:\n        \
         name: cpu\n        target: {{type: Utilization, averageUtilization: {}}}\n",
        replicas * 4,
        50 + mix(i, 7) % 40
    );
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {team}\n\
         commonLabels:\n  app.kubernetes.io/name: {name}\n  app.kubernetes.io/part-of: {team}\n\
         resources:\n  - deployment.yaml\n  - service.yaml\n  - configmap.yaml\n  - hpa.yaml\n\
         images:\n  - name: registry.invalid/{team}/{name}\n    newTag: \"{image}\"\n"
    );
    [
        ("app.yaml", spec),
        ("configmap.yaml", configmap),
        ("deployment.yaml", deployment),
        ("hpa.yaml", hpa),
        ("kustomization.yaml", kustomization),
        ("service.yaml", service),
    ]
}

// ---------------------------------------------------------------------------
// Correctness, once per run

fn verify(fixture: &Fixture, binary: &Path) -> Result<()> {
    let scan = scan_once(&fixture.repo)?;
    let problems: Vec<String> = scan
        .apps
        .all_problems()
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "the synthetic repository has {} problems, first: {}",
            problems.len(),
            problems[0]
        ));
    }
    let expected_apps = fixture.apps + 1;
    if scan.apps.apps.len() != expected_apps || scan.digests.len() != expected_apps {
        return Err(format!(
            "scan found {} apps and {} digests, expected {} (N + root)",
            scan.apps.apps.len(),
            scan.digests.len(),
            expected_apps
        ));
    }
    let (files, bytes) = scan
        .digests
        .values()
        .fold((0, 0), |(f, b), d| (f + d.files.len(), b + d.bytes));
    if (files, bytes) != (fixture.files, fixture.bytes) {
        return Err(format!(
            "scan digested {files} files / {bytes} bytes, generated {} / {}",
            fixture.files, fixture.bytes
        ));
    }

    let sample = app_dir(fixture.sample_app());
    let name = AppName::parse(&sample).map_err(|e| format!("sample app name: {e}"))?;
    let canopy_digest = scan
        .digests
        .get(&name)
        .ok_or_else(|| format!("no digest for sampled app {sample}"))?
        .digest
        .to_string();
    let coreutils = output(
        bash(
            r#"cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum"#,
            [fixture.checkout.join(&sample)],
        )
        .env("LC_ALL", "C"),
    )?;
    let coreutils_digest = format!(
        "sha256:{}",
        coreutils.split_whitespace().next().unwrap_or_default()
    );
    if canopy_digest != coreutils_digest {
        return Err(format!(
            "digest of {sample}: canopy::scan says {canopy_digest}, sha256sum on the checkout says {coreutils_digest}"
        ));
    }

    // The binary must agree with the library it was built from.
    let json = output(&mut canopy_command(binary, &fixture.repo))?;
    let tree: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("canopy tree --output json: {e}"))?;
    let apps = tree["apps"]
        .as_array()
        .ok_or("canopy tree --output json has no apps array")?;
    let binary_digest = apps
        .iter()
        .find(|app| app["name"] == sample.as_str())
        .and_then(|app| app["digest"].as_str());
    if apps.len() != expected_apps || binary_digest != Some(canopy_digest.as_str()) {
        return Err(format!(
            "canopy tree binary: {} apps (expected {expected_apps}), digest of {sample} {binary_digest:?} \
             (expected {canopy_digest}); is target/release/canopy stale?",
            apps.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Scenarios

/// A full cold scan: open the repository, fresh blob cache, every blob read and hashed.
fn scan_once(repo: &Path) -> Result<Scan> {
    let tree = GitTree::open(repo, "HEAD").map_err(|e| canopy::error_chain(&e))?;
    scan(&tree, &LayoutOptions::default(), &BlobCache::default())
        .map_err(|e| canopy::error_chain(&e))
}

fn canopy_command(binary: &Path, repo: &Path) -> Command {
    let mut command = Command::new(binary);
    command.args(["tree"]).arg(repo).args(["--output", "json"]);
    // The CLI reads these: keep the caller's environment out of the measurement.
    for var in [
        "CANOPY_REPO_PATH",
        "CANOPY_LOG",
        "CANOPY_LOG_FORMAT",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
}

/// Peak resident set of one `canopy tree` run, in KiB: GNU time's `%M` when
/// /usr/bin/time exists, else the child's `VmHWM` polled from /proc.
fn peak_rss_kib(binary: &Path, repo: &Path) -> Result<u64> {
    let time = Path::new("/usr/bin/time");
    if time.is_file() {
        let report = std::env::temp_dir().join(format!("canopy-bench-rss-{}", std::process::id()));
        let mut command = Command::new(time);
        command.args(["-f", "%M", "-o"]).arg(&report).arg(binary);
        command.args(canopy_command(binary, repo).get_args());
        for var in [
            "CANOPY_REPO_PATH",
            "CANOPY_LOG",
            "CANOPY_LOG_FORMAT",
            "RUST_LOG",
        ] {
            command.env_remove(var);
        }
        run_quiet(&mut command)?;
        let text = std::fs::read_to_string(&report).map_err(|e| io_error("read", &report, e))?;
        let _ = std::fs::remove_file(&report);
        return text
            .trim()
            .parse()
            .map_err(|_| format!("/usr/bin/time -f %M printed {text:?}"));
    }
    let mut child = canopy_command(binary, repo)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            let hwm = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if !status.success() {
                return Err(format!("{} failed: {status}", binary.display()));
            }
            return Ok(peak);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Times the steps of a scan separately, plus raw blob reads and sha256 alone.
fn measure_phases(repo: &Path, runs: usize) -> Result<Vec<(&'static str, Stats)>> {
    let options = LayoutOptions::default();
    let max = options.limits.max_file_bytes;
    let fail = |e: canopy::tree::Error| canopy::error_chain(&e);
    let mut samples: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let mut order = Vec::new();
    for run in 0..=runs {
        let mut lap = Lap::new();
        let tree = GitTree::open(repo, "HEAD").map_err(fail)?;
        lap.mark("open");
        let listing = tree.list(options.limits.max_tree_entries).map_err(fail)?;
        lap.mark("list");
        // As `scan` does: entries by path, then discover and digest.
        let entries: BTreeMap<std::sync::Arc<str>, Entry> = listing
            .entries
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        let list: Vec<&Entry> = entries.values().collect();
        lap.mark("index entries by path");
        let cache = BlobCache::default();
        let apps =
            discover(&tree, &list, &listing.unusable, &options, &cache, &|_| None).map_err(fail)?;
        lap.mark("discover (reads app.yaml)");
        let valid: Vec<&App> = apps.apps.values().filter(|a| a.is_valid()).collect();
        let is_symlink = |p: &str| entries.get(p).is_some_and(|e| e.kind == EntryKind::Symlink);
        let surroundings = Surroundings::of(&is_symlink, &options, &apps);
        let digests =
            digest_apps(&tree, &surroundings, &valid, &cache, &options.limits).map_err(fail)?;
        lap.mark("digest_apps (other 5 files)");
        drop((digests, apps));
        lap.skip();

        // Raw object reads, no hashing: single thread (keeping a copy of each blob
        // for the sha256 phase, a negligible cost), then on every core.
        let mut reader = tree.reader().map_err(fail)?;
        let mut contents = Vec::with_capacity(list.len());
        let mut buf = Vec::new();
        for entry in &list {
            reader
                .read(entry, max, &mut buf)
                .map_err(|e| format!("{}: {}", entry.path, canopy::error_chain(&e)))?;
            contents.push(buf.clone());
        }
        lap.mark("read all blobs, 1 thread");
        let mut reads = par_map(&tree, &list, |reader, buf, entry| {
            reader.read(entry, max, buf).is_ok()
        })
        .map_err(fail)?;
        lap.mark("read all blobs, par_map");
        if !reads.all(|ok| ok) {
            return Err("a blob failed to read".to_owned());
        }
        let mut checksum = 0u8;
        for content in &contents {
            checksum ^= FileHash::of(content).sha256[0];
        }
        lap.mark("sha256 all contents, 1 thread");
        std::hint::black_box(checksum);

        let specs: Vec<&Vec<u8>> = list
            .iter()
            .zip(&contents)
            .filter(|(entry, _)| entry.path.ends_with("/app.yaml"))
            .map(|(_, content)| content)
            .collect();
        lap.skip();
        for text in &specs {
            AppSpec::parse(text).map_err(|e| format!("app.yaml: {}", e.message))?;
        }
        lap.mark("AppSpec::parse all app.yaml, 1 thread");

        // What one canopy read costs in gix terms: a header lookup (size cap and
        // kind, before inflating) and then the object itself.
        let ids: Vec<gix::ObjectId> = list.iter().filter_map(|e| e.blob).collect();
        let local = gix::open::Options::isolated()
            .open(repo)
            .map_err(|e| format!("gix open: {e}"))?
            .to_thread_local();
        lap.skip();
        for id in &ids {
            local
                .find_header(*id)
                .map_err(|e| format!("find_header {id}: {e}"))?;
        }
        lap.mark("gix find_header only, 1 thread");
        for id in &ids {
            local
                .objects
                .try_find(id, &mut buf)
                .map_err(|e| format!("try_find {id}: {e}"))?
                .ok_or_else(|| format!("object {id} is missing"))?;
        }
        lap.mark("gix objects.try_find only, 1 thread");

        if run > 0 {
            for (name, elapsed) in lap.laps {
                if !samples.contains_key(name) {
                    order.push(name);
                }
                samples.entry(name).or_default().push(elapsed);
            }
        }
    }
    let mut out = Vec::new();
    for name in order {
        let stats = Stats::new(samples.remove(name).unwrap_or_default());
        eprintln!("  {name:<36} {:>9.1} ms", stats.median_ms());
        out.push((name, stats));
    }
    Ok(out)
}

/// Consecutive intervals of one run.
struct Lap {
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Lap {
    fn new() -> Self {
        Lap {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    fn skip(&mut self) {
        self.last = Instant::now();
    }
}

// ---------------------------------------------------------------------------
// Measurement and reporting

struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Stats { sorted: samples }
    }

    fn median_ms(&self) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return f64::NAN;
        }
        let mid = if n % 2 == 1 {
            self.sorted[n / 2]
        } else {
            (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2
        };
        mid.as_secs_f64() * 1e3
    }

    fn min_ms(&self) -> f64 {
        self.sorted
            .first()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    fn max_ms(&self) -> f64 {
        self.sorted
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }
}

/// A named, self-timing benchmark step.
type Scenario<'a> = (&'static str, Box<dyn FnMut() -> Result<Duration> + 'a>);

/// Runs `f`, timing it; what it returns is dropped outside the timed interval.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<Duration> {
    let start = Instant::now();
    let out = f()?;
    let elapsed = start.elapsed();
    drop(out);
    Ok(elapsed)
}

/// One discarded warm-up round, then `runs` rounds, each running every scenario
/// once in turn, so that a burst of outside load hits all of them alike.
fn measure_interleaved(
    runs: usize,
    mut scenarios: Vec<Scenario<'_>>,
) -> Result<Vec<(&'static str, Stats)>> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); scenarios.len()];
    for round in 0..=runs {
        for ((_, run), samples) in scenarios.iter_mut().zip(&mut samples) {
            let elapsed = run()?;
            if round > 0 {
                samples.push(elapsed);
            }
        }
    }
    Ok(scenarios
        .into_iter()
        .zip(samples)
        .map(|((name, _), samples)| (name, Stats::new(samples)))
        .collect())
}

/// Measures how much CPU time other processes used while the bench was timing:
/// machine-wide busy time (/proc/stat) minus this process's and its waited-for
/// children's (/proc/self/stat), both in clock ticks.
struct OutsideLoad {
    machine: (u64, u64),
    own: u64,
}

impl OutsideLoad {
    fn start() -> Option<Self> {
        Some(OutsideLoad {
            machine: Self::machine()?,
            own: Self::own()?,
        })
    }

    /// Percentage of all cores' time used by other work since `start`.
    fn percent(&self) -> Option<f64> {
        let (total, busy) = Self::machine()?;
        let total = total.saturating_sub(self.machine.0).max(1);
        let busy = busy.saturating_sub(self.machine.1);
        let outside = busy.saturating_sub(Self::own()?.saturating_sub(self.own));
        Some(100.0 * outside as f64 / total as f64)
    }

    /// (total, busy) ticks of all cores.
    fn machine() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((total, total - idle))
    }

    /// utime + stime + cutime + cstime of this process.
    fn own() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<u64> = after_comm
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse().ok())
            .collect();
        (fields.len() == 4).then(|| fields.iter().sum())
    }
}

fn table(
    fixture: &Fixture,
    runs: usize,
    results: &[(&str, Stats)],
    baseline_ms: f64,
    rss_kib: u64,
    busy: Option<f64>,
) -> String {
    let busy = busy.map_or("unknown".to_owned(), |b| format!("{b:.0}%"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncold scan: {} apps, {} files, {} bytes ({:.1} MiB) of content, pack {:.1} MiB\n\
         {runs} interleaved runs, medians; other processes used {busy} of the CPUs meanwhile; \
         ratio = median / {BASELINE}",
        fixture.apps,
        fixture.files,
        fixture.bytes,
        mib(fixture.bytes),
        mib(fixture.pack_bytes)
    );
    let _ = writeln!(
        out,
        "{:<36} {:>10} {:>10} {:>10} {:>7}",
        "scenario", "median ms", "min ms", "max ms", "ratio"
    );
    for (name, stats) in results {
        let _ = writeln!(
            out,
            "{name:<36} {:>10.1} {:>10.1} {:>10.1} {:>6.2}x",
            stats.median_ms(),
            stats.min_ms(),
            stats.max_ms(),
            stats.median_ms() / baseline_ms
        );
    }
    let _ = write!(
        out,
        "peak RSS of `canopy tree --output json`: {:.1} MiB",
        rss_kib as f64 / 1024.0
    );
    out
}

fn phase_table(phases: &[(&str, Stats)], scan_ms: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nphases in-process (medians; share of canopy_scan_inprocess {scan_ms:.1} ms)"
    );
    let _ = writeln!(out, "{:<36} {:>10} {:>7}", "phase", "median ms", "share");
    for (name, stats) in phases {
        let _ = writeln!(
            out,
            "{name:<36} {:>10.1} {:>6.0}%",
            stats.median_ms(),
            100.0 * stats.median_ms() / scan_ms
        );
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------
// Processes and paths

/// `git` isolated from the caller's global and system config, run on `repo`.
fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .arg("-C")
        .arg(repo);
    command
}

/// `bash -c SCRIPT` with `args` as `$1`, `$2`..., pipefail on, and the same
/// isolated git environment as [`git`].
fn bash<S: AsRef<OsStr>>(script: &str, args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new("bash");
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .arg("-c")
        .arg(format!("set -eo pipefail; {script}"))
        .arg("bench");
    command.args(args);
    command
}

/// Runs with stdout discarded; fails on a non-zero exit.
fn run_quiet(command: &mut Command) -> Result<()> {
    let status = command
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed: {status}", describe(command)))
    }
}

/// Runs and returns stdout; fails on a non-zero exit.
fn output(command: &mut Command) -> Result<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", describe(command)))?;
    let mut text = String::new();
    child
        .stdout
        .take()
        .expect("stdout was requested as a pipe")
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", describe(command)))?;
    let status = child
        .wait()
        .map_err(|e| format!("{}: {e}", describe(command)))?;
    if status.success() {
        Ok(text)
    } else {
        Err(format!("{} failed: {status}", describe(command)))
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("failed to {what} {}: {e}", path.display())
}

/// The bench executable is `<target>/release/deps/tree-<hash>`.
fn target_dir() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the bench executable: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("unexpected bench executable path {}", exe.display()))
}

/// Warns when a source file is newer than the release binary: the binary scenario
/// would then measure other code than the in-process one.
fn warn_if_stale(binary: &Path) {
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(binary) else {
        return;
    };
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![manifest_dir.join("src"), manifest_dir.join("Cargo.toml")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| Some(e.ok()?.path())));
            }
        } else if let Some(time) = modified(&path)
            && newest.as_ref().is_none_or(|(t, _)| time > *t)
        {
            newest = Some((time, path));
        }
    }
    if let Some((time, path)) = newest
        && time > built
    {
        eprintln!(
            "warning: {} is newer than {}: run `cargo build --release` so both canopy scenarios measure the same code",
            path.display(),
            binary.display()
        );
    }
}
