#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 20, what CI runs); all targets unless some
# are named. Each run starts from the committed seeds in
# fuzz/corpus/<target>/, which it only reads: the inputs it finds go to a
# temporary directory, removed at the end (set KINDLING_FUZZ_KEEP=DIR to
# keep them in DIR/<target>/ instead, for example to grow the seeds). A
# crash, a failed invariant or a hang (10 s on one input) stops the
# script with a failure and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-20}
shift $(($# > 0 ? 1 : 0))
case $seconds in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "error: the fuzz targets need the nightly toolchain (cargo-fuzz's sanitizer flags);" >&2
    echo "       install it with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# -a: debug assertions (integer overflow checks) in the code under test.
flags=(-a)
echo "==> building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build "${flags[@]}"
# cargo-fuzz has no --locked: a build that had to update the fuzz
# workspace's lock file (the crates' dependencies changed) would leave the
# work tree dirty, so say so instead.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
    ! git diff --quiet -- Cargo.lock; then
    echo "error: fuzz/Cargo.lock was out of date and the build updated it;" >&2
    echo "       review and commit the update (git diff fuzz/Cargo.lock)" >&2
    exit 1
fi

if [ -n "${KINDLING_FUZZ_KEEP:-}" ]; then
    out=$KINDLING_FUZZ_KEEP
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

failed=()
for target in "${targets[@]}"; do
    echo "==> $target: ${seconds}s from corpus/$target"
    mkdir -p "$out/$target"
    seeds=()
    [ -d "corpus/$target" ] && seeds=("corpus/$target")
    log="$out/$target.log"
    # The first corpus directory receives new inputs; the seeds are read.
    if cargo +nightly fuzz run "${flags[@]}" "$target" "$out/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        edges=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        echo "    ok: ${runs:-?} runs, ${edges:-?} edges"
    else
        # The panic or sanitizer report, then libFuzzer's summary.
        grep -E -m 3 -A 8 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log" || true
        grep -E -A 3 '^SUMMARY|^artifact_prefix' "$log" || tail -n 30 "$log"
        echo "    FAILED: $target (input in fuzz/artifacts/$target/)"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
echo "==> all ${#targets[@]} fuzz targets ran ${seconds}s each without a failure"
