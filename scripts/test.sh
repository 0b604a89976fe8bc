#!/usr/bin/env bash
# The whole test suite: formatting, lints, the page's unit tests, and every
# Rust unit and integration test (real Mosquitto, real WebRTC peers, Debian's
# headless Chromium, the emulated Raspberry Pi). This is the README's test
# command and what CI runs. It ends with how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- step timing: "== name" starts a step; the summary prints on exit ------
T0=$SECONDS
STEP="" STEP_T0=$SECONDS TIMES=""
step() {
    if [ -n "$STEP" ]; then TIMES="$TIMES$(printf '%6d s  %s' $((SECONDS - STEP_T0)) "$STEP")"$'\n'; fi
    STEP="$1" STEP_T0=$SECONDS
    if [ -n "$1" ]; then echo "== $1"; fi
}
summary() {
    local rc=$?
    step ""
    printf '\n== time per step (exit %d, total %d s)\n%s' "$rc" $((SECONDS - T0)) "$TIMES"
    skips
}
# Every test that did not run says so in one line (tests/common's
# `skipped`): the list of them, empty when nothing was opted out.
skips() {
    local lines
    # Not anchored: under one test thread libtest's "test name ... " may
    # start the line.
    lines=$(cat "${LOGS:-target/test-logs}"/*.log 2>/dev/null \
        | grep -ao 'CAMPEER-SKIPPED: .*' | sort -u || true)
    printf '\n== skipped tests (%d)\n' "$(grep -c . <<<"$lines" || true)"
    if [ -n "$lines" ]; then printf '%s\n' "$lines"; fi
}
trap summary EXIT

# --- a job in the background while the downloads run ----------------------
# cargo-deny compiles for minutes on a cold machine; the installs below
# mostly wait on the network and the disk, so the two overlap.
LOGS=target/test-logs
mkdir -p "$LOGS"
# This run's logs only: the skip summary reads them all.
rm -f "$LOGS"/*.log
bg_pid=""
bg_start() { # name command...
    local name=$1; shift
    echo "test: $name in the background (log: $LOGS/$name.log)"
    "$@" > "$LOGS/$name.log" 2>&1 &
    bg_pid=$!
}
bg_wait() { # name
    [ -n "$bg_pid" ] || return 0
    if ! wait "$bg_pid"; then
        echo "test: $1 failed:" >&2
        tail -n 40 "$LOGS/$1.log" >&2
        exit 1
    fi
    bg_pid=""
}

step "install: build dependencies"
bash scripts/install-deps.sh
if ! cargo deny --version >/dev/null 2>&1; then
    bg_start cargo-deny cargo install --locked cargo-deny@0.20.2 --no-default-features
fi
step "install: browsers, cross toolchains, mmdebstrap, Janus, MSRV, Home Assistant"
bash scripts/install-web-deps.sh
if [ -f scripts/install-cross-deps.sh ]; then bash scripts/install-cross-deps.sh; fi
# tests/fresh_machine.rs makes a fresh Debian root with mmdebstrap.
if ! command -v mmdebstrap >/dev/null; then
    echo "test: installing mmdebstrap"
    SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mmdebstrap
fi
# tests/relay.rs relays through Debian's Janus (the daemon itself does not
# need it, so scripts/install-deps.sh, shared with scripts/run.sh, leaves
# it out). Its own service is not wanted: the test starts Janus itself.
if ! command -v janus >/dev/null; then
    echo "test: installing janus"
    SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends janus
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet janus 2>/dev/null; then
        $SUDO systemctl disable --now janus >/dev/null 2>&1 || true
    fi
fi
# The oldest Rust the crate says it supports, checked with that toolchain.
msrv=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    echo "test: installing Rust $msrv (the MSRV)"
    rustup toolchain install "$msrv" --profile minimal
fi
# tests/homeassistant.rs runs a real Home Assistant from a cached venv.
bash scripts/install-homeassistant.sh
step "viewer page build"
bash scripts/build-web.sh
step "install: cargo-deny (waiting for the background build)"
bg_wait cargo-deny

# A test whose prerequisite is missing fails, unless the developer opted
# out of it by name (CAMPEER_SKIP=browser,janus,..., docs/testing.md); CI
# opts out of nothing. Say so up front when something is opted out.
if [ -n "${CAMPEER_SKIP:-}" ]; then
    if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
        echo "test: CAMPEER_SKIP=$CAMPEER_SKIP under CI: CI opts out of nothing" >&2
        exit 1
    fi
    echo "test: CAMPEER_SKIP=$CAMPEER_SKIP: the tests needing these are skipped (listed at the end)"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
step "viewer page unit tests"
(cd web && npm test --silent)
step "viewer page in Chromium against a stand-in device (protocol v2 rules)"
(cd web && npm run --silent test:page)
# Its own page build replaced web/dist and dropped build-web.sh's stamp:
# restore both before cargo embeds the page.
bash scripts/build-web.sh
step "MSRV: cargo +$msrv check (rust-version in Cargo.toml)"
# What users build (the library and the binary); the dev-dependencies of
# tests and benchmarks are not held to it.
cargo "+$msrv" check --locked --lib --bins --quiet --target-dir target/msrv
step "cargo deny check licenses bans (deny.toml)"
# Advisories need RustSec's database from GitHub, which these machines
# cannot reach: not checked here (docs/testing.md).
cargo deny --locked check licenses bans
step "cross builds (once per run; the emulated Pis and the .deb share them)"
for target in aarch64 armv7; do
    t0=$SECONDS
    bash scripts/cross-build.sh "$target" >/dev/null
    echo "cross build $target: $((SECONDS - t0)) s"
done
# The two longest tests build things for many minutes and wait on nothing
# that a busy machine delays past a deadline: they run last, side by side,
# so that one fills the core the other leaves idle (docs/testing.md).
side_by_side=(sd_image fresh_machine)
step "cargo test (every test but ${side_by_side[*]})"
selected=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    case " ${side_by_side[*]} " in *" $name "*) ;; *) selected+=(--test "$name") ;; esac
done
# Two test threads: the machines have two cores, and media tests want them.
# Its output is kept in a log too, for the skip summary.
cargo test --locked --no-fail-fast --lib --bins "${selected[@]}" -- --test-threads=2 2>&1 \
    | tee "$LOGS/cargo-test.log"
cargo test --locked --doc
step "${side_by_side[*]}, side by side"
bins=$(cargo test --locked --no-run "${side_by_side[@]/#/--test=}" 2>&1 \
    | sed -n 's/^ *Executable tests\/\([a-z_]*\)\.rs (\(.*\))$/\1 \2/p')
pids=()
for name in "${side_by_side[@]}"; do
    bin=$(awk -v n="$name" '$1 == n { print $2 }' <<<"$bins")
    [ -x "$bin" ] || { echo "test: no test binary for tests/$name.rs" >&2; exit 1; }
    echo "test: tests/$name.rs in the background (log: $LOGS/$name.log)"
    "$bin" --test-threads=1 > "$LOGS/$name.log" 2>&1 &
    pids+=($!)
done
failed=()
for i in "${!side_by_side[@]}"; do
    name=${side_by_side[$i]}
    if wait "${pids[$i]}"; then rc=ok; else rc=FAILED; failed+=("$name"); fi
    echo "== tests/$name.rs: $rc"
    cat "$LOGS/$name.log"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test: failed: ${failed[*]}" >&2
    exit 1
fi
