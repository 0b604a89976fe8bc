#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine lacks to build and test
# campeer. Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: the test broker, the assembler openh264 uses on x86,
# pkg-config with the ALSA and Opus headers the alsa and opus crates link,
# and openssl (the TLS tests make their certificates with it).
PKGS=(mosquitto nasm pkg-config libasound2-dev libopus-dev libclang-dev clang openssl ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "install-deps: Debian packages present"
fi

# The system mosquitto service is not needed (tests start their own brokers).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "install-deps: cargo not found (install Rust with rustup)"; exit 1; }
echo "install-deps: done"
