#!/usr/bin/env bash
# Measures the line coverage of the test suite with cargo-llvm-cov and
# prints it per architecture scope (see README "Coverage"):
#   x86_64  : everything;
#   aarch64 : the architecture-independent code (x86_64 modules excluded).
# Installs cargo-llvm-cov and Debian's llvm-22 (matching rustc's LLVM) if
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v llvm-cov-22 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq llvm-22
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
    cargo install cargo-llvm-cov --locked
fi
export LLVM_COV=llvm-cov-22 LLVM_PROFDATA=llvm-profdata-22
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/coverage"

# The CLI tests run the example binary, so build it instrumented too and
# collect every process's profile.
# shellcheck disable=SC1090
source <(cargo llvm-cov show-env --export-prefix)
cargo llvm-cov clean --workspace
cargo build --example microvm
cargo test --workspace

# Merge every process's profile, then report over every instrumented binary
# (cargo-llvm-cov's own report step finds no files with this layout).
dir="$CARGO_TARGET_DIR"
llvm-profdata-22 merge -sparse "$dir"/*.profraw -o "$dir/kindling.profdata"
objects=()
for f in "$dir"/x86_64-unknown-linux-gnu/debug/deps/* "$dir"/x86_64-unknown-linux-gnu/debug/examples/microvm "$dir"/x86_64-unknown-linux-gnu/debug/kindling-jailer; do
    if [ -f "$f" ] && [ -x "$f" ] && [[ "$f" != *.so ]]; then
        objects+=(-object "$f")
    fi
done
# Test-only code (the test guest crate, tests, benches, examples, test image
# builders) and dependencies are not counted.
ignore='(\.cargo/registry|/rustc/|guest/|tests/|benches/|examples/|test_images\.rs|test_aml\.rs)'
report() {
    llvm-cov-22 report -instr-profile="$dir/kindling.profdata" "${objects[@]}" \
        -ignore-filename-regex="$1" | awk '/^TOTAL/ {print $10}'
}
x86=$(report "$ignore")
arch_independent=$(report "$ignore|/x86_64/")
echo "coverage: x86_64 ${x86} (lines), architecture-independent ${arch_independent} (lines)"
