#!/usr/bin/env bash
# mmdebstrap setup hook of scripts/build-image.sh: lays packaging/image/rootfs
# over the new root ($1) before any package is installed, so the kernel and
# initramfs hooks already read the image's settings (KERNEL_ARCH and the root
# partition for raspi-firmware, every board's drivers in the initrd).
#   overlay.sh ROOT KERNEL_ARCH
set -euo pipefail
root=$1 kernel_arch=$2
src="$(dirname "$0")/../../packaging/image/rootfs"
cp -a --no-preserve=ownership "$src/." "$root/"
sed -i "s/@KERNEL_ARCH@/$kernel_arch/" "$root/etc/default/raspi-firmware"
chmod 0755 "$root/usr/lib/campeer/"*
# The boot partition's mount point: raspi-firmware writes into it.
mkdir -p "$root/boot/firmware"
