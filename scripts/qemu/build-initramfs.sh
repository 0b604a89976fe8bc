#!/usr/bin/env bash
# Builds everything an emulated Raspberry Pi of tests/qemu_pi.rs boots:
#
#   scripts/qemu/build-initramfs.sh raspi3b   # default: arm64 kernel, Pi 3 Model B,
#                                             # the aarch64 build, board qemu-raspi3b
#   scripts/qemu/build-initramfs.sh raspi2b   # armhf (armmp) kernel, Pi 2 Model B,
#                                             # the armv7 build, board qemu-raspi2b
#
# Output, in target/qemu/<machine>/:
#   vmlinuz, <board>.dtb   Debian's kernel and the board's device tree, both
#                          from the linux-image package
#   initramfs.cpio         busybox, the cross-built campeer (daemon and
#                          viewer), its libraries, aplay, a tone, the kernel
#                          modules, /init (scripts/qemu/init)
#   boot.env               QEMU= MACHINE= KERNEL= DTB= INITRD= ... for the test
#
# Debian packages come from the registry with `apt-get download` (multiarch:
# scripts/install-cross-deps.sh adds the architectures) and are cached under
# target/qemu/debs; nothing is installed. The campeer binary is the release
# cross build (target/<triple>/release/campeer, or CAMPEER_QEMU_BIN=path);
# build it first with scripts/cross-build.sh (the test does).
#
# Modules: vivid (the camera), snd-aloop (the microphone) and bcm2835-rng
# (entropy, so the guest's getrandom() does not wait), with what they need
# (modprobe --show-depends), indexed by depmod in the image. The Pi's GPIO
# (pinctrl-bcm2835), its UART (amba-pl011) and debugfs are built into
# Debian's kernels.
#
# Prints the boot.env path last.
set -euo pipefail
cd "$(dirname "$0")/../.."
root_dir=$(pwd)

machine="${1:-raspi3b}"
case "$machine" in
    raspi3b)
        arch=arm64 triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu
        kflavour=arm64 dtbname=bcm2837-rpi-3-b.dtb qemu=qemu-system-aarch64
        board=qemu-raspi3b expect="ARM aarch64" ;;
    raspi2b)
        arch=armhf triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf
        kflavour=armmp dtbname=bcm2836-rpi-2-b.dtb qemu=qemu-system-arm
        board=qemu-raspi2b expect="ARM, EABI5" ;;
    *) echo "build-initramfs: unknown machine '$machine' (raspi3b, raspi2b)" >&2; exit 2 ;;
esac

top="${CARGO_TARGET_DIR:-$root_dir/target}/qemu"
case "$top" in /*) ;; *) top="$root_dir/$top" ;; esac
out="$top/$machine"
debs="$top/debs"
mkdir -p "$out" "$debs"

say() { echo "build-initramfs: $*"; }
die() { echo "build-initramfs: $*" >&2; exit 1; }

for t in apt-get apt-cache dpkg-deb cpio depmod modprobe "$gnu-readelf" "$gnu-strip" perl file; do
    command -v "$t" >/dev/null 2>&1 || die "$t is missing: run scripts/install-cross-deps.sh"
done
grep -qx "$arch" <<<"$(dpkg --print-foreign-architectures)" \
    || die "dpkg has no $arch architecture: run scripts/install-cross-deps.sh"

# --- the binary -------------------------------------------------------------
bin="${CAMPEER_QEMU_BIN:-${CARGO_TARGET_DIR:-target}/$triple/release/campeer}"
[ -x "$bin" ] || die "$bin is missing: build it with scripts/cross-build.sh first"
grep -q "$expect" <<<"$(file -b "$bin")" || die "$bin is not an $expect binary"

# --- Debian packages ----------------------------------------------------------
# fetch PKG: the newest cached .deb of PKG for $arch, downloading it if absent.
fetch() {
    local pkg=$1 f
    f=$(ls -1 "$debs/${pkg}"_*_"$arch".deb 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$f" ]; then
        say "apt-get download $pkg:$arch" >&2
        (cd "$debs" && apt-get download -q "$pkg:$arch" >/dev/null 2>"$debs/.err") \
            || die "apt-get download $pkg:$arch failed: $(cat "$debs/.err") (apt-get update? scripts/install-cross-deps.sh)"
        f=$(ls -1 "$debs/${pkg}"_*_"$arch".deb | sort -V | tail -n1)
    fi
    echo "$f"
}

# The kernel: whatever linux-image-$kflavour depends on now; a cached one if
# the package lists cannot say (an offline re-run).
kpkg=$(apt-cache depends "linux-image-$kflavour:$arch" 2>/dev/null \
    | sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*-$kflavour\)\(:$arch\)\?\$/\1/p" | head -n1)
if [ -z "$kpkg" ]; then
    cached=$(ls -1 "$debs"/linux-image-[0-9]*-"$kflavour"_*_"$arch".deb 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$cached" ] || die "cannot find linux-image-$kflavour:$arch in the package lists: run scripts/install-cross-deps.sh (apt-get update)"
    kpkg=$(basename "$cached" | cut -d_ -f1)
fi
kdeb=$(fetch "$kpkg")
kver=${kpkg#linux-image-}
bbdeb=$(fetch busybox-static)
audeb=$(fetch alsa-utils)
# The daemon's own MQTT broker is Mosquitto, run by the daemon.
mqdeb=$(fetch mosquitto)

kdir="$top/kernel-$kver"
if [ ! -f "$kdir/.done" ]; then
    say "unpacking $(basename "$kdeb")"
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg-deb -x "$kdeb" "$kdir"
    depmod -b "$kdir" "$kver"
    touch "$kdir/.done"
fi
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"
dtb=$(find "$kdir/usr/lib/linux-image-$kver" -name "$dtbname" | head -n1)
[ -n "$dtb" ] || die "$dtbname is not in $kpkg"
cp "$dtb" "$out/$dtbname"
# A random seed for the kernel (/chosen/rng-seed; the kernel trusts it,
# CONFIG_RANDOM_TRUST_BOOTLOADER=y): without it the armv7 guest's random
# pool takes from seconds to minutes to initialise under TCG, and every
# getrandom() (the daemon's first secrets) waits for it. A test seed, made
# fresh on every build: nothing secret is derived from it outside the guest.
fdtput -t bx "$out/$dtbname" /chosen rng-seed $(od -An -tx1 -N64 /dev/urandom)

# --- the image ----------------------------------------------------------------
img="$out/initramfs"
rm -rf "$img"
mkdir -p "$img"/{bin,sbin,usr/bin,usr/sbin,lib,etc/campeer,proc,sys,dev,tmp,run,root,usr/share}

tmpx="$out/x"
rm -rf "$tmpx"
mkdir -p "$tmpx/bb" "$tmpx/au"
dpkg-deb -x "$bbdeb" "$tmpx/bb"
dpkg-deb -x "$audeb" "$tmpx/au"
install -m 0755 "$tmpx/bb/bin/busybox" "$img/bin/busybox"
ln -s busybox "$img/bin/sh"
install -m 0755 "$tmpx/au/usr/bin/aplay" "$img/usr/bin/aplay"
mkdir -p "$tmpx/mq"
dpkg-deb -x "$mqdeb" "$tmpx/mq"
install -m 0755 "$tmpx/mq/usr/sbin/mosquitto" "$img/usr/sbin/mosquitto"
# Users the daemon runs Mosquitto as (it drops root to one of them).
printf 'root:x:0:0:root:/root:/bin/sh\nmosquitto:x:100:101:mosquitto:/nonexistent:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$img/etc/passwd"
printf 'root:x:0:\nmosquitto:x:101:\nnogroup:x:65534:\n' > "$img/etc/group"
# Debug info off (line tables are most of the binary); symbols stay for
# backtraces.
"$gnu-strip" --strip-debug -o "$img/usr/bin/campeer" "$bin"
install -m 0755 scripts/qemu/init "$img/init"
install -m 0644 "board/$board.toml" "$img/etc/campeer/$board.toml"
echo "$board" > "$img/etc/campeer/board"

# Shared libraries: the NEEDED closure of the dynamic binaries, from the
# target's multiarch packages on this machine (libc6, libasound2, libopus0,
# libstdc++6 for $arch, installed by scripts/install-cross-deps.sh): one
# glibc, loader included, as on the Pi.
libpath=("/lib/$gnu" "/usr/lib/$gnu" "$tmpx/libs/lib/$gnu" "$tmpx/libs/usr/lib/$gnu")
mkdir -p "$tmpx/libs"
# A library this machine lacks for $arch (Mosquitto's): the package that
# holds it on the host (mosquitto is installed here for the tests), for
# $arch, unpacked beside the image.
fetch_lib() {
    local pkg
    pkg=$(dpkg -S "*/$1" 2>/dev/null | head -n1 | cut -d: -f1) || true
    [ -n "$pkg" ] || return 1
    dpkg-deb -x "$(fetch "$pkg")" "$tmpx/libs"
}
find_lib() {
    local d
    for d in "${libpath[@]}"; do
        if [ -e "$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    return 1
}
declare -A seen=()
queue=("$img/usr/bin/campeer" "$img/usr/bin/aplay" "$img/usr/sbin/mosquitto")
while [ "${#queue[@]}" -gt 0 ]; do
    f=${queue[0]}
    queue=("${queue[@]:1}")
    for need in $("$gnu-readelf" -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [ -n "${seen[$need]:-}" ] && continue
        seen[$need]=1
        src=$(find_lib "$need") || { fetch_lib "$need" && src=$(find_lib "$need"); } || die "library $need (needed by $(basename "$f")) not found in ${libpath[*]}: run scripts/install-cross-deps.sh"
        cp -L "$src" "$img/lib/$need"
        queue+=("$img/lib/$need")
    done
done
# The loader, where the binary's PT_INTERP says (/lib/ld-linux-*.so.*).
interp=$("$gnu-readelf" -l "$img/usr/bin/campeer" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || die "campeer has no program interpreter (static?)"
mkdir -p "$img$(dirname "$interp")"
cp -L "$(find_lib "$(basename "$interp")")" "$img$interp"
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
    deps=$(modprobe -d "$kdir" -S "$kver" --show-depends "$m") || die "no module $m in $kpkg"
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        rel=${path#"$kdir"/}
        rel=${rel#usr/}
        mkdir -p "$img/$(dirname "$rel")"
        cp "$path" "$img/$rel"
    done <<<"$deps"
done
cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$img/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$img" "$kver"

(cd "$img" && find . -print0 | LC_ALL=C sort -z | cpio --null --quiet -o -H newc --owner 0:0) > "$out/initramfs.cpio"
cat > "$out/boot.env" <<EOF
QEMU=$qemu
MACHINE=$machine
KERNEL=$out/vmlinuz
DTB=$out/$dtbname
INITRD=$out/initramfs.cpio
KERNEL_RELEASE=$kver
BOARD=$board
EOF
say "$machine: kernel $kver, $dtbname, initramfs $(du -h "$out/initramfs.cpio" | cut -f1) ($(find "$img" -type f | wc -l) files)"
echo "$out/boot.env"
