#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time and fails on the first
# crash, hang or memory blow-up: the CI pass (.ci/run) and a quick local check.
#
#   scripts/fuzz.sh [seconds-per-target]    (default 10; 7 targets)
#
# Longer local runs: see README.md, "Fuzzing". New inputs the fuzzer finds go
# to a scratch directory, never into fuzz/corpus/: the committed corpus only
# changes by hand (a minimized crash, a seed).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;;
esac

# cargo-fuzz, pinned: installed from crates.io when missing or another version.
cargo_fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

# cargo fuzz passes nightly-only flags to rustc (-Zsanitizer, the sancov
# passes); RUSTC_BOOTSTRAP lets the stable toolchain accept them, for this
# build only. No sanitizer: canopy forbids unsafe code, and what the targets
# look for (panics, hangs, memory) libFuzzer catches without one, at a build
# and run cost well below AddressSanitizer's.
export RUSTC_BOOTSTRAP=1
# cargo fuzz's default build: optimized, with debug assertions and overflow
# checks.
flags=(--sanitizer none)
targets=$(cd fuzz && cargo fuzz list)

cd fuzz
cargo fuzz build "${flags[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
  mkdir -p "$scratch/$target"
  echo "fuzz: $target for ${seconds}s"
  # -timeout: one input may take at most 10 s (a hang otherwise);
  # -rss_limit_mb: the process may not grow past 2 GiB.
  if ! cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1; then
    tail -n 60 "$scratch/$target.log"
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$scratch/$target.log" || true
done
echo "fuzz: $(echo "$targets" | wc -w) targets, ${seconds}s each, no crash"
