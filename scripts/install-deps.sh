#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine lacks to build and test
# campeer. Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: C and C++ compilers and the linker (build-essential;
# openh264 is C++), the MQTT broker, the assembler openh264 uses on x86,
# pkg-config with the ALSA, Opus and libvpx (VP8) headers the alsa, opus and
# env-libvpx-sys crates link,
# libclang for bindgen (the v4l crate generates its V4L2 bindings at build
# time), openssl (the TLS tests make their certificates with it), CA
# certificates (npm's registry is HTTPS), and Node.js with npm to build the
# viewer page, unless a node and npm are already on the PATH (e.g. from
# nodesource or nvm). libvpx-dev: VP8 for browsers without H.264.
PKGS=(build-essential mosquitto nasm pkg-config libasound2-dev libopus-dev libvpx-dev libclang-dev clang openssl ca-certificates)
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    # A partly failed update (one mirror's index mid-sync) still leaves
    # usable lists; the install below fails if something is really missing.
    $SUDO apt-get update -qq || echo "install-deps: apt-get update reported errors, installing anyway" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "install-deps: Debian packages present"
fi

# The system mosquitto service is not needed (tests start their own brokers).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "install-deps: cargo not found: install Rust 1.85 or later with rustup (https://rustup.rs); Debian's rustc is too old" >&2; exit 1; }
echo "install-deps: done"
