//! The bodies of canopy's fuzz targets: each feeds one input to a parser of
//! untrusted input and panics if an invariant breaks. Returning normally, with
//! an `Ok` or an `Err`, is a pass; a panic, a hang or unbounded memory is a
//! finding.
//!
//! The fuzz targets (`fuzz_targets/*.rs`) call these functions, and so does
//! `tests/it/fuzz_corpus.rs`, which replays `fuzz/corpus/<target>/*` under a
//! plain `cargo test`: so this file uses nothing but canopy and crates canopy's
//! tests already have.

use std::path::{Component, Path, PathBuf};

use chrono::TimeZone as _;

/// A target's body: returns, or panics on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("app_yaml", app_yaml),
    ("canopy_yaml", canopy_yaml),
    ("webhook_payload", webhook_payload),
    ("artifact_tar", artifact_tar),
    ("snapshot_decode", snapshot_decode),
    ("app_name", app_name),
    ("cron_schedule", cron_schedule),
];

/// An error line as canopy prints it: one line, so hostile input cannot forge
/// the lines that follow it (`canopy validate`, logs).
fn assert_one_line(what: &str, message: &str) {
    assert!(
        !message.contains(['\n', '\r']),
        "{what}: error message spans lines: {message:?}"
    );
    assert!(!message.is_empty(), "{what}: empty error message");
}

/// `app.yaml`, as discovery reads it (after its size cap).
pub fn app_yaml(data: &[u8]) {
    if data.len() as u64 > canopy::limits::Limits::default().max_spec_bytes {
        return;
    }
    match canopy::layout::AppSpec::parse(data) {
        Ok(spec) => {
            // Whatever parses holds only values that were validated.
            for name in &spec.depends_on {
                canopy::layout::AppName::parse(name.as_str()).expect("depends_on was validated");
            }
            for glob in spec.include.iter().chain(&spec.exclude) {
                glob.glob();
            }
            if let Some(children) = &spec.children {
                for glob in children.dirs.iter().chain(&children.exclude) {
                    glob.glob();
                }
            }
            for key in spec.config.iter().map(|(k, _)| k).chain(&spec.secrets) {
                assert!(
                    (1..=128).contains(&key.0.len())
                        && key
                            .0
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                    "invalid key {key:?} accepted"
                );
            }
            assert_eq!(
                canopy::layout::AppSpec::parse(data).expect("parsed once"),
                spec,
                "parsing is not deterministic"
            );
        }
        Err(e) => {
            assert_one_line("app.yaml", &e.message);
            // YAML's line breaks: LF, CRLF and a lone CR.
            let lines = data
                .iter()
                .enumerate()
                .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && data.get(i + 1) != Some(&b'\n')))
                .count()
                + 1;
            if let Some(line) = e.line {
                assert!(
                    (1..=lines).contains(&line),
                    "error at line {line} of a {lines}-line file: {e:?}"
                );
            }
        }
    }
}

/// `canopy.yaml`, as `Config::load` reads it (after its size cap); no secret
/// or environment is read.
pub fn canopy_yaml(data: &[u8]) {
    if data.len() as u64 > canopy::config::MAX_CONFIG_BYTES {
        return;
    }
    let path = Path::new("/etc/canopy/canopy.yaml");
    if let Err(e) = canopy::config::check_file(path, data) {
        let message = e.to_string();
        assert!(
            message.starts_with("/etc/canopy/canopy.yaml"),
            "the error does not name the file: {message}"
        );
        assert_one_line("canopy.yaml", &message);
    }
}

/// A push payload of each provider, as the hook reads it once its signature
/// holds. The ref found must be the payload's own `ref` string, and an error
/// must never quote the payload.
pub fn webhook_payload(data: &[u8]) {
    let value: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let expected = value.as_ref().and_then(|v| v.get("ref"));
    for provider in ["github", "gitlab", "gitea", "generic"] {
        match canopy::server::push_payload_ref(provider, data) {
            Ok(Some(pushed)) => assert_eq!(
                Some(&serde_json::Value::String(pushed)),
                expected,
                "{provider}: a ref that is not the payload's"
            ),
            Ok(None) => assert!(
                provider == "generic" && expected.is_none(),
                "{provider}: no ref, yet the payload has {expected:?}"
            ),
            Err(message) => {
                assert_one_line(provider, &message);
                assert!(
                    message.len() < 100,
                    "{provider}: an error that may quote the payload: {message}"
                );
            }
        }
    }
}

/// An artifact tar, as the agent unpacks it: checked, then written into a new
/// directory. Nothing may be created outside that directory, no symlink may
/// lead out of it, and every file written must be one of the tar's.
pub fn artifact_tar(data: &[u8]) {
    // Most mutations break a header's checksum, which the tar reader checks
    // first: fixed up here, they reach the checks behind it.
    let mut data = data.to_vec();
    fix_tar_checksums(&mut data);
    let Ok(files) = canopy::client::unpack_artifact("fuzz", "0", &data) else {
        return;
    };
    // tmpfs where there is one: the write ends in a syncfs.
    let base = Path::new("/dev/shm");
    let scratch = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("a scratch directory");
    let dir = scratch.path().join("version");
    if let Err(e) = files.write_to(&dir) {
        // Files that passed the checks must be writable into an empty
        // directory: anything else is a check that missed something.
        panic!("checked files could not be written: {e}");
    }
    let mut written = 0;
    let mut stack = vec![dir.clone()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("a directory written") {
            let path = entry.expect("an entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("its metadata");
            let relative = path
                .strip_prefix(&dir)
                .expect("under the directory")
                .to_str()
                .expect("UTF-8 paths only");
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            written += 1;
            let (content, _) = files
                .get(relative)
                .unwrap_or_else(|| panic!("{relative} written but not in the tar"));
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("a link");
                assert_eq!(target.as_os_str().as_encoded_bytes(), content);
                let parent = Path::new(relative).parent().unwrap_or(Path::new(""));
                assert!(
                    stays_inside(&parent.join(&target)),
                    "{relative} -> {} leads out of the directory",
                    target.display()
                );
            } else {
                assert_eq!(std::fs::read(&path).expect("its bytes"), content);
            }
        }
    }
    assert_eq!(written, files.len(), "not every file was written");
}

/// Rewrites the checksum of every header block of a ustar/GNU tar, walking
/// headers by their size fields as a reader does.
fn fix_tar_checksums(tar: &mut [u8]) {
    let mut at = 0;
    while let Some(header) = tar.get_mut(at..at + 512) {
        if header.iter().all(|b| *b == 0) {
            return;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_matches(['\0', ' ']), 8).ok())
            .unwrap_or(0);
        let blocks = usize::try_from(size.div_ceil(512)).unwrap_or(usize::MAX);
        at = blocks
            .checked_add(1)
            .and_then(|b| b.checked_mul(512))
            .and_then(|len| at.checked_add(len))
            .unwrap_or(usize::MAX);
    }
}

/// Whether a relative path, resolved lexically, stays inside its directory at
/// every step.
fn stays_inside(path: &Path) -> bool {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A snapshot file: the first byte picks the head (0) or a shard (else), the
/// rest is the file without its CRC-32, which is appended here so the fuzzer
/// reaches the decoder behind the checksum.
pub fn snapshot_decode(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    if kind == 0 {
        let stamp = canopy::snapshot::Stamp {
            commit: "1a2b".to_owned(),
            layout: "sha256:00".to_owned(),
        };
        let _ = canopy::snapshot::decode_head(&bytes, &stamp);
    } else {
        let _ = canopy::snapshot::decode_shard(bytes);
    }
}

/// An app name: accepted exactly when DESIGN's allow-list (section 2) accepts
/// it, and then unchanged by a second parse.
pub fn app_name(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let segment = regex::Regex::new("^[a-z0-9][a-z0-9._-]{0,62}$").expect("a regex");
    let allowed = text == "."
        || (text.len() <= 255
            && text.split('/').count() <= 8
            && text
                .split('/')
                .all(|s| segment.is_match(s) && !s.contains("..")));
    match canopy::layout::AppName::parse(text) {
        Ok(name) => {
            assert!(allowed, "{text:?} accepted, outside the allow-list");
            assert_eq!(name.as_str(), text);
            assert_eq!(canopy::layout::AppName::parse(name.as_str()), Ok(name));
        }
        Err(e) => {
            assert!(!allowed, "{text:?} refused, inside the allow-list: {e}");
            assert_one_line("app name", &e.to_string());
        }
    }
}

/// A report schedule: `expression\ntimezone\n` then 8 bytes of instant. A
/// schedule that parses must give slots in order around any instant.
pub fn cron_schedule(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(expression), Some(zone)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(expression), Ok(zone)) = (std::str::from_utf8(expression), std::str::from_utf8(zone))
    else {
        return;
    };
    let schedule = match canopy::config::parse_schedule("fuzz", expression) {
        Ok(schedule) => schedule,
        Err(message) => return assert_one_line("cron", &message),
    };
    let Ok(timezone) = zone.parse::<chrono_tz::Tz>() else {
        return;
    };
    let mut instant = [0u8; 8];
    let rest = parts.next().unwrap_or_default();
    let n = rest.len().min(8);
    instant[..n].copy_from_slice(&rest[..n]);
    // Any second between 1970 and 2200.
    let seconds = (u64::from_le_bytes(instant) % 7_258_118_400) as i64;
    let now = chrono::Utc
        .timestamp_opt(seconds, 0)
        .single()
        .expect("in range");
    let report = canopy::config::ReportConfig {
        name: "fuzz".to_owned(),
        schedule,
        timezone,
        sinks: Vec::new(),
        allow_private_targets: false,
    };
    if let Some(next) = canopy::report::schedule::next_slot(&report, now) {
        assert!(next > now, "next slot {next} is not after {now}");
    }
    let window = std::time::Duration::from_secs(600);
    if let Some(previous) = canopy::report::schedule::catch_up_slot(&report, now, window) {
        assert!(
            previous <= now && now - previous <= chrono::Duration::seconds(600),
            "catch-up slot {previous} is not within the window before {now}"
        );
    }
}

/// The corpus directory of `target`, for the replay test.
pub fn corpus_dir(root: &Path, target: &str) -> PathBuf {
    root.join("fuzz").join("corpus").join(target)
}
