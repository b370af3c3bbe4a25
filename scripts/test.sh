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

step "cargo test"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
