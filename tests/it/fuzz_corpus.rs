//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz
//! targets' own bodies (`fuzz/src/lib.rs`), so a plain `cargo test` catches a
//! regression on any input the fuzzer ever kept or crashed on, without
//! cargo-fuzz or a nightly feature. Each target has its own test.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::path::Path;

/// Runs every corpus file of `target`; a failing input is named.
fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = checks::corpus_dir(Path::new(env!("CARGO_MANIFEST_DIR")), target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    // A target whose corpus went missing would pass without testing anything.
    assert!(
        inputs.len() >= 2,
        "{}: corpus is nearly empty",
        dir.display()
    );
    for input in inputs {
        let data = std::fs::read(&input).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", input.display());
    }
}

macro_rules! replays {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target));
        }
    )*};
}

replays!(
    app_yaml,
    canopy_yaml,
    webhook_payload,
    artifact_tar,
    snapshot_decode,
    app_name,
    cron_schedule,
);

/// Every target has a corpus and a test above; a target added to the fuzz
/// crate without either fails here.
#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let this = include_str!("fuzz_corpus.rs");
    for (target, _) in checks::TARGETS {
        let dir = checks::corpus_dir(Path::new(env!("CARGO_MANIFEST_DIR")), target);
        assert!(dir.is_dir(), "{}: no corpus", dir.display());
        assert!(
            this.contains(&format!("    {target},\n")),
            "{target}: no replay test"
        );
    }
}
