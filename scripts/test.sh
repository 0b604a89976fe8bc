#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests
# (real Mosquitto, real WebRTC peers). This is the README's test command and
# what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# Two test threads: the machines have two cores, and media tests want them.
cargo test --locked --no-fail-fast -- --test-threads=2
