#!/usr/bin/env bash
# The whole test suite: formatting, lints, the page's unit tests, and every
# Rust unit and integration test (real Mosquitto, real WebRTC peers, Debian's
# headless Chromium, the emulated Raspberry Pi). This is the README's test
# command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/install-web-deps.sh
if [ -f scripts/install-cross-deps.sh ]; then bash scripts/install-cross-deps.sh; fi
bash scripts/build-web.sh
# tests/fresh_machine.rs makes a fresh Debian root with mmdebstrap.
if ! command -v mmdebstrap >/dev/null; then
    echo "test: installing mmdebstrap"
    SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mmdebstrap
fi

# The oldest Rust the crate says it supports, checked with that toolchain;
# and cargo-deny, from crates.io the first time.
msrv=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    echo "test: installing Rust $msrv (the MSRV)"
    rustup toolchain install "$msrv" --profile minimal
fi
if ! cargo deny --version >/dev/null 2>&1; then
    echo "test: installing cargo-deny"
    cargo install --locked cargo-deny@0.20.2 --no-default-features
fi
# tests/homeassistant.rs runs a real Home Assistant from a cached venv.
bash scripts/install-homeassistant.sh

# Browser tests fail (rather than skip) when Chromium is missing.
export CAMPEER_REQUIRE_BROWSER=1
# So does the Home Assistant test when its venv is missing.
export CAMPEER_REQUIRE_HOMEASSISTANT=1
export CAMPEER_REQUIRE_FRESH_MACHINE=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== viewer page unit tests"
(cd web && npm test --silent)
echo "== viewer page in Chromium against a stand-in device (protocol v2 rules)"
(cd web && npm run --silent test:page)
# Its own page build replaced web/dist and dropped build-web.sh's stamp:
# restore both before cargo embeds the page.
bash scripts/build-web.sh
echo "== MSRV: cargo +$msrv check (rust-version in Cargo.toml)"
cargo "+$msrv" check --locked --all-targets --quiet --target-dir target/msrv
echo "== cargo deny check licenses bans (deny.toml)"
# Advisories need RustSec's database from GitHub, which these machines
# cannot reach: not checked here (docs/testing.md).
cargo deny --locked check licenses bans
echo "== cross builds (once per run; the emulated Pis and the .deb share them)"
for target in aarch64 armv7; do
    t0=$SECONDS
    bash scripts/cross-build.sh "$target" >/dev/null
    echo "cross build $target: $((SECONDS - t0)) s"
done
echo "== cargo test"
# Two test threads: the machines have two cores, and media tests want them.
cargo test --locked --no-fail-fast -- --test-threads=2
