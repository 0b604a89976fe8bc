#!/usr/bin/env bash
# mmdebstrap essential hook of scripts/build-image.sh: while the packages
# install, update-initramfs does nothing. Under qemu-user every run costs
# minutes, and the kernel's postinst and two packages' triggers would each
# run it; customize.sh puts it back and makes the initrd once, at the end,
# with every package's hooks in place.
#   hold-initramfs.sh ROOT
set -euo pipefail
root=$1
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# campeer image build: held until the end (scripts/image/hold-initramfs.sh)\nexit 0\n' \
    > "$root/usr/sbin/update-initramfs"
chmod 0755 "$root/usr/sbin/update-initramfs"
