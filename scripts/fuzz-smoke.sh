#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short, fixed time. Exit status is non-zero if any
# target finds a crash; the input that crashed is left in fuzz/artifacts/<target>/.
#
# Only stable Rust is available, so nightly-only flags (sanitizers, coverage passes) are enabled
# with RUSTC_BOOTSTRAP=1, which lets a stable compiler accept them.
#
#   scripts/fuzz-smoke.sh                      # each target 20 s (the CI smoke run)
#   FUZZ_SECONDS=3600 scripts/fuzz-smoke.sh    # a longer run by hand
#   FUZZ_TARGETS=decompress FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
# or directly: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run record_batch -- -max_total_time=3600
#
# Env: FUZZ_SECONDS (20), FUZZ_TARGETS (all), FUZZ_RSS_MB (2048), CARGO_BUILD_JOBS (2).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-20}"
rss_mb="${FUZZ_RSS_MB:-2048}"
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

# Seed corpora from the real-client fixtures, so that the fuzzer starts from valid batches and
# valid compressed payloads instead of having to discover the formats.
fixtures="$root/crates/conflux-wire/tests/fixtures/records"
mkdir -p corpus/record_batch corpus/decompress corpus/decode_request
cp -n "$fixtures"/*.bin corpus/record_batch/ 2>/dev/null || true
python3 - "$fixtures" corpus/decompress <<'PY'
import pathlib, sys
fixtures, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for path in fixtures.glob("*.bin"):
    batch = path.read_bytes()
    codec = batch[22] & 7  # low attribute bits; the records start after the 61-byte header
    (out / path.name).write_bytes(bytes([codec]) + batch[61:])
PY
# Request frames captured from real clients (hex, without the size prefix).
for hex in "$root"/crates/conflux-wire/tests/fixtures/*.hex; do
    python3 -c 'import sys; open(sys.argv[2], "wb").write(bytes.fromhex("".join(open(sys.argv[1]).read().split())))' \
        "$hex" "corpus/decode_request/$(basename "$hex" .hex)"
done

cargo fuzz build
for target in $targets; do
    echo "=== fuzzing $target for ${seconds}s" >&2
    cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 \
        -print_final_stats=1
done
echo "fuzz smoke passed:" $targets >&2
