#!/usr/bin/env bash
# Builds everything the emulated Raspberry Pi 3 of tests/qemu_pi.rs boots:
#
#   target/qemu/vmlinuz                 Debian's arm64 kernel (linux-image-*-arm64)
#   target/qemu/bcm2837-rpi-3-b.dtb     the Pi 3 Model B device tree, same package
#   target/qemu/initramfs.cpio          busybox, the cross-built campeer (daemon
#                                       and viewer), its libraries, aplay, a
#                                       tone, the kernel modules, /init
#   target/qemu/boot.env                KERNEL= DTB= INITRD= for the test
#
# Debian packages come from the registry with `apt-get download` (arm64
# multiarch: scripts/install-cross-deps.sh adds the architecture) and are
# cached under target/qemu/debs; nothing is installed. The campeer binary is
# target/aarch64-unknown-linux-gnu/release/campeer, cross-built by
# scripts/cross-build.sh when missing (or CAMPEER_QEMU_BIN=path).
#
# Modules: vivid (the camera), snd-aloop (the microphone) and bcm2835-rng
# (entropy, so the guest's getrandom() does not wait), with what they need
# (modprobe --show-depends), indexed by depmod in the image. The Pi's GPIO
# (pinctrl-bcm2835), its UART (amba-pl011) and debugfs are built into
# Debian's kernel.
#
# Usage: scripts/qemu/build-initramfs.sh [--rebuild-bin]
# Prints the boot.env path last.
set -euo pipefail
cd "$(dirname "$0")/../.."
root_dir=$(pwd)

rebuild_bin=0
if [ "${1:-}" = "--rebuild-bin" ]; then rebuild_bin=1; fi

out="${CARGO_TARGET_DIR:-$root_dir/target}/qemu"
case "$out" in /*) ;; *) out="$root_dir/$out" ;; esac
debs="$out/debs"
mkdir -p "$debs"

say() { echo "build-initramfs: $*"; }
die() { echo "build-initramfs: $*" >&2; exit 1; }

for t in apt-get apt-cache dpkg-deb cpio depmod modprobe aarch64-linux-gnu-readelf perl; do
    command -v "$t" >/dev/null 2>&1 || die "$t is missing: run scripts/install-cross-deps.sh"
done
grep -qx arm64 <<<"$(dpkg --print-foreign-architectures)" \
    || die "dpkg has no arm64 architecture: run scripts/install-cross-deps.sh"

# --- the binary -------------------------------------------------------------
bin="${CAMPEER_QEMU_BIN:-${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release/campeer}"
if [ -z "${CAMPEER_QEMU_BIN:-}" ]; then
    if [ "$rebuild_bin" -eq 1 ] || [ ! -x "$bin" ]; then
        bash scripts/cross-build.sh aarch64
    fi
fi
[ -x "$bin" ] || die "$bin is missing"
grep -q "ARM aarch64" <<<"$(file -b "$bin")" || die "$bin is not an aarch64 binary"

# --- Debian packages ----------------------------------------------------------
# fetch PKG: the newest cached .deb of PKG (arm64), downloading it if absent.
fetch() {
    local pkg=$1 f
    f=$(ls -1 "$debs/${pkg}"_*_arm64.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$f" ]; then
        say "apt-get download $pkg:arm64"
        (cd "$debs" && apt-get download -q "$pkg:arm64" >/dev/null 2>"$debs/.err") \
            || die "apt-get download $pkg:arm64 failed: $(cat "$debs/.err") (apt-get update? scripts/install-cross-deps.sh)"
        f=$(ls -1 "$debs/${pkg}"_*_arm64.deb | sort -V | tail -n1)
    fi
    echo "$f"
}

# The kernel: whatever linux-image-arm64 depends on now; a cached one if the
# package lists cannot say (an offline re-run).
kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*-arm64\)\(:arm64\)\?$/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
    cached=$(ls -1 "$debs"/linux-image-[0-9]*-arm64_*_arm64.deb 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$cached" ] || die "cannot find linux-image-arm64:arm64 in the package lists: run scripts/install-cross-deps.sh (apt-get update)"
    kpkg=$(basename "$cached" | cut -d_ -f1)
fi
kdeb=$(fetch "$kpkg")
kver=${kpkg#linux-image-}
bbdeb=$(fetch busybox-static)
audeb=$(fetch alsa-utils)

kdir="$out/kernel-$kver"
if [ ! -f "$kdir/.done" ]; then
    say "unpacking $(basename "$kdeb")"
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg-deb -x "$kdeb" "$kdir"
    depmod -b "$kdir" "$kver"
    touch "$kdir/.done"
fi
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"
dtb=$(ls "$kdir"/usr/lib/linux-image-"$kver"/broadcom/bcm2837-rpi-3-b.dtb)
cp "$dtb" "$out/bcm2837-rpi-3-b.dtb"

# --- the image ----------------------------------------------------------------
img="$out/initramfs"
rm -rf "$img"
mkdir -p "$img"/{bin,sbin,usr/bin,usr/sbin,lib,etc/campeer,proc,sys,dev,tmp,run,root,usr/share}
ln -s lib "$img/lib64"

tmpx="$out/x"
rm -rf "$tmpx"
mkdir -p "$tmpx/bb" "$tmpx/au"
dpkg-deb -x "$bbdeb" "$tmpx/bb"
dpkg-deb -x "$audeb" "$tmpx/au"
install -m 0755 "$tmpx/bb/bin/busybox" "$img/bin/busybox"
ln -s busybox "$img/bin/sh"
install -m 0755 "$tmpx/au/usr/bin/aplay" "$img/usr/bin/aplay"
# Debug info off (line tables are 50 MB of the 60); symbols stay for backtraces.
aarch64-linux-gnu-strip --strip-debug -o "$img/usr/bin/campeer" "$bin"
install -m 0755 scripts/qemu/init "$img/init"
install -m 0644 board/qemu-raspi3b.toml "$img/etc/campeer/qemu-raspi3b.toml"

# Shared libraries: the NEEDED closure of the dynamic binaries, from the
# arm64 multiarch packages on this machine (libc6:arm64, libasound2:arm64,
# libopus0:arm64, ... installed by scripts/install-cross-deps.sh).
libpath=(/lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/aarch64-linux-gnu/lib)
find_lib() {
    local d
    for d in "${libpath[@]}"; do
        if [ -e "$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    return 1
}
declare -A seen=()
queue=("$img/usr/bin/campeer" "$img/usr/bin/aplay")
while [ "${#queue[@]}" -gt 0 ]; do
    f=${queue[0]}
    queue=("${queue[@]:1}")
    for need in $(aarch64-linux-gnu-readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [ -n "${seen[$need]:-}" ] && continue
        seen[$need]=1
        src=$(find_lib "$need") || die "library $need (needed by $(basename "$f")) not found in ${libpath[*]}: run scripts/install-cross-deps.sh"
        cp -L "$src" "$img/lib/$need"
        queue+=("$img/lib/$need")
    done
done
# The loader, where the binaries' PT_INTERP says.
interp=$(aarch64-linux-gnu-readelf -l "$img/usr/bin/campeer" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || die "campeer has no program interpreter (static?)"
cp -L "$(find_lib "$(basename "$interp")")" "$img/lib/$(basename "$interp")"
[ "$(dirname "$interp")" = /lib ] || { mkdir -p "$img$(dirname "$interp")"; ln -sf "/lib/$(basename "$interp")" "$img$interp"; }
say "libraries: ${!seen[*]}"

# alsa-lib reads its configuration even for hw: devices.
[ -f /usr/share/alsa/alsa.conf ] || die "/usr/share/alsa/alsa.conf is missing (libasound2-data)"
cp -a /usr/share/alsa "$img/usr/share/alsa"

# The tone the guest plays into the loopback card: one second of 1000 Hz,
# 48 kHz, mono, S16_LE, about -6 dBFS; played in a loop it is continuous.
perl -e 'binmode STDOUT; for my $i (0..47999) { print pack("s<", int(16000 * sin(2 * 3.14159265358979 * 1000 * $i / 48000))) }' > "$img/tone.raw"

# Kernel modules and their dependencies, depmod'ed in the image.
mods=(vivid snd-aloop bcm2835-rng)
mkdir -p "$img/lib/modules/$kver"
for m in "${mods[@]}"; do
    modprobe -d "$kdir" -S "$kver" --show-depends "$m" | while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        rel=${path#"$kdir"/}
        rel=${rel#usr/}
        mkdir -p "$img/$(dirname "$rel")"
        cp "$path" "$img/$rel"
    done
done
cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$img/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$img" "$kver"
echo "$kver" > "$img/etc/kernel-release"

(cd "$img" && find . -print0 | LC_ALL=C sort -z | cpio --null --quiet -o -H newc --owner 0:0) > "$out/initramfs.cpio"
cat > "$out/boot.env" <<EOF
KERNEL=$out/vmlinuz
DTB=$out/bcm2837-rpi-3-b.dtb
INITRD=$out/initramfs.cpio
KERNEL_RELEASE=$kver
EOF
say "kernel $kver, initramfs $(du -h "$out/initramfs.cpio" | cut -f1) ($(find "$img" -type f | wc -l) files)"
echo "$out/boot.env"
