#!/usr/bin/env bash
# Cross-builds the release binary for a Raspberry Pi, then checks it: `file`
# must name the right machine, and `campeer --version` and `campeer
# check-config board/rpi4.toml` (which starts the async runtime's threads)
# must run under qemu-user against the target's Debian libraries.
#
#   scripts/cross-build.sh aarch64    # 64-bit Raspberry Pi OS: Pi 3, 4, 5, Zero 2 W
#   scripts/cross-build.sh armv7      # 32-bit Raspberry Pi OS: Pi 2, 3, 4, Zero 2 W
#   scripts/cross-build.sh armv6      # Pi Zero / Pi 1: refused, see docs/raspberry-pi.md
#
# A full Rust target triple is accepted too. Needs the toolchains from
# scripts/install-cross-deps.sh (run it first on a fresh machine, or pass
# --install-deps). Extra arguments after the target go to cargo.
#
# Output: target/<triple>/release/campeer (or under $CARGO_TARGET_DIR).
# Prints the path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
if [ "${1:-}" = "--install-deps" ]; then install=1; shift; fi
arg="${1:-}"
[ -n "$arg" ] || { sed -n '2,15p' "$0"; exit 2; }
shift

case "$arg" in
    aarch64 | arm64 | aarch64-unknown-linux-gnu)
        triple=aarch64-unknown-linux-gnu qemu=qemu-aarch64-static
        expect="ARM aarch64" ;;
    armv7 | armhf | armv7-unknown-linux-gnueabihf)
        triple=armv7-unknown-linux-gnueabihf qemu=qemu-arm-static
        expect="ARM, EABI5" ;;
    armv6 | arm | arm-unknown-linux-gnueabihf)
        cat >&2 <<'EOF'
cross-build: arm-unknown-linux-gnueabihf (ARMv6: Pi Zero, Pi Zero W, Pi 1) is not built.
  - rustup's rust-std for arm-unknown-linux-gnueabihf cannot be downloaded on
    these machines (only the Debian, crates.io, PyPI and npm registries are
    reachable), and building std needs nightly (-Zbuild-std).
  - Debian's armhf cross toolchain and armhf libraries (libasound2, libopus,
    libc6) are compiled for ARMv7 + VFPv3-D16 + Thumb-2: linking them into an
    ARMv6 binary gives one that dies with SIGILL on the Pi Zero's ARM1176.
    Raspberry Pi OS's own armhf is ARMv6, but it is not a Debian registry.
  Use a Pi Zero 2 W (aarch64 or armv7) instead, or build on a Pi Zero itself
  with rustup. See docs/raspberry-pi.md.
EOF
        exit 3 ;;
    *) echo "cross-build: unknown target '$arg' (aarch64, armv7)" >&2; exit 2 ;;
esac

if [ "$install" -eq 1 ]; then bash scripts/install-cross-deps.sh; fi

missing=()
case "$triple" in
    aarch64-*) tools=(aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ "$qemu" file pkg-config) ;;
    armv7-*) tools=(arm-linux-gnueabihf-gcc arm-linux-gnueabihf-g++ "$qemu" file pkg-config) ;;
esac
for t in "${tools[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "cross-build: missing ${missing[*]}: run scripts/install-cross-deps.sh (or pass --install-deps)" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1 && ! grep -qx "$triple" <<<"$(rustup target list --installed)"; then
    echo "cross-build: the Rust target $triple is not installed: rustup target add $triple" >&2
    exit 1
fi

# The viewer page is embedded: build it first (a no-op when web/dist is up
# to date); build.rs refuses a release build with a missing or stale page.
bash scripts/build-web.sh

target_dir="${CARGO_TARGET_DIR:-target}"
echo "cross-build: cargo build --release --locked --target $triple $*"
start=$(date +%s)
cargo build --release --locked --target "$triple" --bin campeer "$@"
secs=$(( $(date +%s) - start ))
bin="$target_dir/$triple/release/campeer"

desc=$(file -b "$bin")
echo "cross-build: $bin: $desc"
case "$desc" in
    *"$expect"*) ;;
    *) echo "cross-build: $bin is not an $expect binary" >&2; exit 1 ;;
esac
if grep -q campeer-placeholder "$bin"; then
    echo "cross-build: $bin embeds the placeholder viewer page, not the real one (CAMPEER_ALLOW_PLACEHOLDER_PAGE set?)" >&2
    exit 1
fi
echo "cross-build: the viewer page is embedded"
# Under qemu-user with the target's Debian libraries (multiarch, as on the
# Pi): --version loads every library; check-config also starts the tokio
# runtime (threads, TLS) and parses a board profile.
version=$("$qemu" -L / "$bin" --version)
echo "cross-build: under $qemu: $version"
case "$version" in
    campeer\ *) ;;
    *) echo "cross-build: unexpected --version output" >&2; exit 1 ;;
esac
if ! "$qemu" -L / "$bin" check-config board/rpi4.toml > /dev/null; then
    echo "cross-build: '$bin check-config board/rpi4.toml' failed under $qemu" >&2
    exit 1
fi
echo "cross-build: under $qemu: check-config board/rpi4.toml ok"
echo "cross-build: built in ${secs}s, $(du -h "$bin" | cut -f1) ($(stat -c %s "$bin") bytes)"
echo "$bin"
