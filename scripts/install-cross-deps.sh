#!/usr/bin/env bash
# Installs what a fresh Debian bookworm (amd64) machine needs to cross-build
# campeer for the Raspberry Pi and to run the emulated-Pi test:
#
# - the Debian cross toolchains (gcc/g++ for aarch64-linux-gnu and
#   arm-linux-gnueabihf) and their C libraries;
# - the target libraries the crate links (libasound2-dev, libopus-dev,
#   libvpx-dev) for
#   arm64 and armhf, as multiarch packages next to the host's own -dev
#   packages (both are Multi-Arch: same on bookworm, so they co-install as
#   long as every architecture has the same version);
# - qemu-user-static (the cargo runners in .cargo/config.toml) and
#   qemu-system-arm (tests/qemu_pi.rs boots a Raspberry Pi 3 with it);
# - host tools the initramfs builder uses: cpio, kmod (modprobe/depmod),
#   file.
#
# Idempotent: adds the foreign architectures once and installs only what is
# missing. Needs root (or sudo). The 32-bit ARMv6 target
# (arm-unknown-linux-gnueabihf, Pi Zero/1) is not covered: see
# docs/raspberry-pi.md, "ARMv6".
#
# Note on time_t: bookworm's armhf userland uses a 32-bit time_t (the 64-bit
# time_t transition is Debian trixie's). Rust's libc crate assumes 32-bit on
# armv7-unknown-linux-gnueabihf too, so the two agree here; alsa-sys probes
# the ALSA headers and follows them either way.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

need_update=0
for arch in arm64 armhf; do
    if ! grep -qx "$arch" <<<"$(dpkg --print-foreign-architectures)"; then
        echo "install-cross-deps: adding dpkg architecture $arch"
        $SUDO dpkg --add-architecture "$arch"
        need_update=1
    fi
done

host=$(dpkg --print-architecture)
PKGS=(
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross
    libasound2-dev:arm64 libopus-dev:arm64 libvpx-dev:arm64
    libasound2-dev:armhf libopus-dev:armhf libvpx-dev:armhf
    # The C++ runtime for qemu-user runs and the initramfs, from the same
    # multiarch glibc as libasound (not the cross toolchain's older copy).
    libstdc++6:arm64 libstdc++6:armhf
    # The host's own -dev packages: multiarch -dev packages must all be of
    # one version, so install the host's in the same transaction.
    "libasound2-dev:$host" "libopus-dev:$host" "libvpx-dev:$host"
    pkg-config clang cmake nasm
    qemu-user-static qemu-system-arm
    cpio kmod file xz-utils zstd
    # A fresh random seed in each emulated Pi's device tree (fdtput), and
    # the .deb's checks (tests/package.rs).
    device-tree-compiler lintian
    # systemd-analyze and systemd-sysusers for tests/systemd_unit.rs.
    systemd
)

missing=()
for p in "${PKGS[@]}"; do
    case "$p" in \#*) continue ;; esac
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-cross-deps: installing ${missing[*]}"
    need_update=1
fi
if [ "$need_update" -eq 1 ]; then
    # A mirror in the middle of a sync can fail one index; apt then keeps the
    # old one, which is fine unless a package is really missing (the install
    # below says so).
    $SUDO apt-get update -qq || echo "install-cross-deps: apt-get update reported errors; trying the install anyway"
fi
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "install-cross-deps: Debian packages present"
fi

for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    if command -v rustup >/dev/null 2>&1 && ! grep -qx "$t" <<<"$(rustup target list --installed)"; then
        echo "install-cross-deps: rustup target add $t"
        rustup target add "$t"
    fi
done
echo "install-cross-deps: done"
