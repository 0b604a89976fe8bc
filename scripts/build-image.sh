#!/usr/bin/env bash
# Builds the SD-card image people flash to a Raspberry Pi 3, 4 or Zero 2 W:
#
#   scripts/build-image.sh arm64
#
# Output, in target/image/ (or $CAMPEER_IMAGE_DIR):
#   campeer-<version>-arm64.img.xz   what people write to the card (not made
#                                    with CAMPEER_IMAGE_XZ=0)
#   campeer-<version>-arm64.img      the same, uncompressed (the tests boot it)
#   campeer-<version>-arm64.manifest every file of the root file system:
#                                    path, type, mode, owner, size, sha256
#                                    (two builds are compared with it)
#
# From Debian packages only, no Docker: mmdebstrap makes the root file
# system (bookworm, main and non-free-firmware) and runs the arm64
# packages' maintainer scripts through qemu-user (binfmt_misc); the campeer
# .deb comes from scripts/build-deb.sh. Debian's arm64 kernel and
# raspi-firmware (the Pi's boot firmware, whose kernel hook copies the
# kernel, initrd and device trees to /boot/firmware and writes config.txt
# and cmdline.txt). The files in packaging/image/rootfs are laid over it
# (network, journal in RAM, watchdog, the first-boot service), and those in
# packaging/image/boot go on the boot partition for the owner to edit.
#
# The card: an MBR with a FAT32 boot partition (CAMPEERBOOT, 256 MiB) and
# an ext4 root (campeer-root) sized to its contents; the first boot grows it
# to fill the card. Partitions are made as files and placed into the image
# (sfdisk, mkfs.vfat + mtools, mkfs.ext4 -d): no loop device, no mount.
#
# No secret is in the image, and every build of the same commit is the same
# file: no machine-id, no host keys, no keys of campeer's (its first start
# makes them), mtimes clamped to the commit's time (SOURCE_DATE_EPOCH),
# fixed file system ids. Downloaded packages are kept in
# target/image-debs (or $CAMPEER_IMAGE_DEBS), so a second build needs no
# network. CAMPEER_IMAGE_DEB=path puts that campeer package in the image
# instead of building one (two builds at once must not both write it).
#
# Needs root (mmdebstrap's root mode keeps file owners; mkfs.ext4 -d copies
# them). Installs what it lacks: mmdebstrap, qemu-user-static, dosfstools,
# mtools, fdisk, e2fsprogs, xz-utils, arch-test; registers qemu-aarch64 with
# binfmt_misc when it is not.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

say() { echo "build-image: $*"; }
die() { echo "build-image: $*" >&2; exit 1; }

case "${1:-}" in
    arm64 | aarch64) arch=arm64 qemu_name=aarch64 kflavour=arm64 kernel_arch=arm64 ;;
    armhf | armv7)
        die "armhf is not built: the image is arm64 only (Pi 3, 4, Zero 2 W all run 64-bit); use the armhf .deb on 32-bit Raspberry Pi OS (docs/image.md)" ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap keeps file owners only as root)"

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
out="${CAMPEER_IMAGE_DIR:-${CARGO_TARGET_DIR:-$root_dir/target}/image}"
case "$out" in /*) ;; *) out="$root_dir/$out" ;; esac
# Downloaded packages, shared by every build of this work tree (two builds
# running at once each need a directory of their own).
debs="${CAMPEER_IMAGE_DEBS:-${CARGO_TARGET_DIR:-$root_dir/target}/image-debs}"
case "$debs" in /*) ;; *) debs="$root_dir/$debs" ;; esac
mkdir -p "$out" "$debs"
name="campeer-$version-$arch"
t_start=$SECONDS

# --- tools ---------------------------------------------------------------------
need=()
for t in mmdebstrap:mmdebstrap qemu-$qemu_name-static:qemu-user-static mkfs.vfat:dosfstools \
    mcopy:mtools sfdisk:fdisk mkfs.ext4:e2fsprogs xz:xz-utils arch-test:arch-test; do
    command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Foreign maintainer scripts run through qemu-user: binfmt_misc must know it.
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" \
    || die "cannot mount binfmt_misc (needed to run $arch maintainer scripts)"
if [ ! -e "$binfmt/qemu-$qemu_name" ]; then
    conf=/usr/lib/binfmt.d/qemu-$qemu_name.conf
    [ -f "$conf" ] || die "$conf is missing (qemu-user-static)"
    say "registering qemu-$qemu_name with binfmt_misc"
    # A build running beside this one may have registered it meanwhile.
    cat "$conf" > "$binfmt/register" 2>/dev/null || [ -e "$binfmt/qemu-$qemu_name" ] \
        || die "cannot register qemu-$qemu_name with binfmt_misc"
fi

# --- the campeer package -------------------------------------------------------
if [ -n "${CAMPEER_IMAGE_DEB:-}" ]; then
    deb=$CAMPEER_IMAGE_DEB
    [ -f "$deb" ] || die "CAMPEER_IMAGE_DEB=$deb: no such package"
else
    deb=$(bash scripts/build-deb.sh "$arch" | tail -n1)
    [ -f "$deb" ] || die "scripts/build-deb.sh did not make a package"
fi
deb=$(realpath "$deb")  # mmdebstrap takes a package file by its absolute path
say "package: $deb"

# --- the root file system ------------------------------------------------------
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
rootfs="$out/rootfs-$arch"
# CAMPEER_IMAGE_REUSE_ROOTFS=1 (for working on this script): keep the root
# file system of the last build and redo only the steps after mmdebstrap.
if [ "${CAMPEER_IMAGE_REUSE_ROOTFS:-}" = 1 ] && [ -d "$rootfs/usr" ]; then
    say "reusing $rootfs (CAMPEER_IMAGE_REUSE_ROOTFS=1)"
else
    # A build that was killed may have left mmdebstrap's mounts (proc, sys,
    # dev/pts) in the old root: undo them before deleting it, and never cross
    # into another file system.
    findmnt -rn -o TARGET | { grep "^$rootfs/" || true; } | sort -r | xargs -r -n1 umount -l
    rm -rf --one-file-system "$rootfs"
    # apt inside the new root installs the package from the same path as
    # outside: a directory under /tmp, made here and (by a setup hook) in the new
    # root; customize.sh removes it there.
    deb_dir=$(mktemp -d /tmp/campeer-image.XXXXXX)
    trap 'rm -rf "$deb_dir"' EXIT
    chroot_deb=$deb_dir/$(basename "$deb")
    cp "$deb" "$chroot_deb"
    pkgs=(
        # boot: kernel, the Pi's firmware, initrd, file system tools
        linux-image-$kflavour raspi-firmware initramfs-tools zstd e2fsprogs fdisk dosfstools
        systemd-sysv udev kmod dbus
        # network: cable (systemd-networkd) and Wi-Fi (wpa_supplicant and the
        # Pi's Broadcom and Cypress firmware), names (avahi: <hostname>.local),
        # time (timesyncd)
        systemd-resolved systemd-timesyncd wpasupplicant firmware-brcm80211
        wireless-regdb iw avahi-daemon libnss-mdns
        # the camera: campeer and its own broker; V4L2 and ALSA tools for the owner
        "$chroot_deb" mosquitto v4l-utils alsa-utils gpiod
    )
    say "mmdebstrap: bookworm $arch, ${#pkgs[@]} packages and what they need (log: $out/mmdebstrap.log)"
    t0=$SECONDS
    mmdebstrap --mode=root --arch="$arch" --variant=minbase \
        --include="$(IFS=,; echo "${pkgs[*]}")" \
        --aptopt='Acquire::Languages "none"' \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='force-confold' --dpkgopt='force-confdef' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-include=/usr/share/doc/campeer/*' \
        --skip=essential/unlink \
        --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives/" \
        --setup-hook="sync-in '$debs' /var/cache/apt/archives/" \
        --setup-hook="bash '$root_dir/scripts/image/overlay.sh' \"\$1\" '$kernel_arch'" \
        --setup-hook="mkdir -p \"\$1$deb_dir\" && cp '$deb' \"\$1$chroot_deb\"" \
        --essential-hook="bash '$root_dir/scripts/image/hold-initramfs.sh' \"\$1\"" \
        --customize-hook="sync-out /var/cache/apt/archives '$debs'" \
        --customize-hook="bash '$root_dir/scripts/image/customize.sh' \"\$1\"" \
        bookworm "$rootfs" \
        "deb http://deb.debian.org/debian bookworm main non-free-firmware" \
        "deb http://deb.debian.org/debian bookworm-updates main non-free-firmware" \
        "deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware" \
        > "$out/mmdebstrap.log" 2>&1 \
        || { tail -n 40 "$out/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    say "root file system in $((SECONDS - t0)) s: $(du -sh "$rootfs" | cut -f1)"
fi

# --- the boot partition's files ------------------------------------------------
bootfs="$out/bootfs-$arch"
if [ -n "$(ls -A "$rootfs/boot/firmware")" ]; then
    rm -rf "$bootfs"
    mv "$rootfs/boot/firmware" "$bootfs"
    mkdir -m 0755 "$rootfs/boot/firmware"
fi
for f in 'vmlinuz-*' 'initrd.img-*' config.txt cmdline.txt bootcode.bin start.elf start4.elf \
    bcm2837-rpi-3-b.dtb bcm2711-rpi-4-b.dtb bcm2837-rpi-zero-2-w.dtb; do
    # shellcheck disable=SC2086 # the patterns are meant to match
    [ -e "$(echo "$bootfs"/$f)" ] || die "raspi-firmware left no $f on the boot partition: $(ls "$bootfs" | tr '\n' ' ')"
done
bash scripts/image/boot-files.sh "$bootfs"

# Every file's mtime clamped to the commit's time: the same commit makes the
# same file systems.
find "$rootfs" "$bootfs" -newermt "@$SOURCE_DATE_EPOCH" -print0 \
    | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

# The manifest: what two builds compare.
(cd "$rootfs" && { find . -type d -printf '%p d %m %U:%G\n'
    find . ! -type d -printf '%p %y %m %U:%G %s %l\n'; } | LC_ALL=C sort) > "$out/$name.files"
(cd "$rootfs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) > "$out/$name.sums"
cat "$out/$name.files" "$out/$name.sums" > "$out/$name.manifest"
rm "$out/$name.files" "$out/$name.sums"

# --- the card ------------------------------------------------------------------
mib=$((1024 * 1024))
boot_mib=256
root_kib=$(du -sk --apparent-size "$rootfs" | cut -f1)
# Room for the inodes and the journal, and a little to spare until the
# first boot grows it.
root_mib=$(( (root_kib * 11 / 10) / 1024 + 64 ))
img="$out/$name.img"
rm -f "$img" "$img.xz" "$out/boot.vfat" "$out/root.ext4"
say "boot partition: ${boot_mib} MiB FAT32; root: ${root_mib} MiB ext4 (contents $((root_kib / 1024)) MiB)"

mkfs.vfat -F 32 -n CAMPEERBOOT -i C4E9B007 -C "$out/boot.vfat" $((boot_mib * 1024)) >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$out/boot.vfat" "$bootfs"/* ::/
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -L campeer-root \
    -U 7e3c0a51-9d2b-4c8e-8f1a-c4e9c4e9c4e9 \
    -E hash_seed=7e3c0a51-9d2b-4c8e-8f1a-c4e9c4e9c4e9,root_owner=0:0 \
    -d "$rootfs" "$out/root.ext4" "${root_mib}M"

total_mib=$((4 + boot_mib + root_mib))
truncate -s $((total_mib * mib)) "$img"
sfdisk -q "$img" <<EOF
label: dos
label-id: 0xc4e9c4e9
unit: sectors

start=$((4 * 2048)), size=$((boot_mib * 2048)), type=c, bootable
start=$(((4 + boot_mib) * 2048)), size=$((root_mib * 2048)), type=83
EOF
dd if="$out/boot.vfat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$out/root.ext4" of="$img" bs=1M seek=$((4 + boot_mib)) conv=notrunc,sparse status=none
rm -f "$out/boot.vfat" "$out/root.ext4"

if [ "${CAMPEER_IMAGE_XZ:-1}" = 1 ]; then
    # -3: a third of -6's time for a few percent more size (most of the
    # card is empty space, which any level compresses to nothing).
    t0=$SECONDS
    xz -T0 -3 --keep --force "$img"
    say "compressed in $((SECONDS - t0)) s"
    say "$name.img: $(du -h --apparent-size "$img" | cut -f1) raw, $(du -h "$img.xz" | cut -f1) xz; sha256 $(sha256sum "$img.xz" | cut -c1-16)"
else
    say "$name.img: $(du -h --apparent-size "$img" | cut -f1) raw, not compressed (CAMPEER_IMAGE_XZ=0)"
fi
say "built in $((SECONDS - t_start)) s"
echo "$img"
