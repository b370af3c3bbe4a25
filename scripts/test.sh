#!/usr/bin/env bash
# The project's test command (README): formatting, lints, docs, and every
# test tier that this machine can run. Installs what it needs.
#
#   KINDLING_REQUIRE_KVM=1   fail (instead of skip) tests that need /dev/kvm
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component"
    fi
done
if ! command -v gcc >/dev/null; then
    step "installing gcc (builds the test guest)"
    apt-get update -qq && apt-get install -y -qq gcc
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "build the example VMM (release)"
cargo build --release --example microvm --locked

step "build the jailer (release)"
cargo build --release -p kindling-jailer --locked

step "cargo test"
# Plain `cargo test` builds the examples as binaries, which the CLI tests
# run (with --all-targets they would be built as test harnesses instead).
cargo test --workspace --locked

step "the API against Firecracker's OpenAPI document (schemathesis, a few minutes at most)"
# Pinned: a new release may add checks; update deliberately.
SCHEMATHESIS_VERSION=4.32.5
venv=target/schemathesis-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
SCHEMATHESIS="$venv/bin/schemathesis" \
    KINDLING_API_MICROVM=target/x86_64-unknown-linux-gnu/debug/examples/microvm \
    bash tests/api/schemathesis.sh

step "benchmarks in test mode (one quick iteration each)"
cargo test --workspace --benches --locked

step "fuzz targets: build every one, run each for 20 s from its seeds (scripts/fuzz.sh)"
# Needs the nightly toolchain (fails with a message if it is missing) and
# installs cargo-fuzz if needed; leaves the work tree as it was.
bash scripts/fuzz.sh 20

step "end-to-end tier: real Linux in a nested, emulated machine (tests/e2e)"
KINDLING_E2E_MICROVM=target/x86_64-unknown-linux-gnu/release/examples/microvm bash tests/e2e/run.sh
