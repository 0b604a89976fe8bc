#!/usr/bin/env bash
# mmdebstrap customize hook of scripts/build-image.sh: turns the installed
# root ($1) into the appliance. Enables what it runs, turns off what writes
# to the card on a timer, and removes everything that would make two builds
# differ or that must be made on the device itself (machine-id, logs).
#   customize.sh ROOT
set -euo pipefail
root=$1
in_root() { chroot "$root" "$@"; }

# Kernel modules no Raspberry Pi can use: other SoCs' and PCIe graphics,
# InfiniBand, PCIe network cards (the Pi 4's own Ethernet, broadcom/genet,
# stays; USB adapters are under drivers/net/usb), the kernel's self-tests.
kmods=$(echo "$root"/usr/lib/modules/*/kernel)
for d in gpu/drm/amd gpu/drm/nouveau gpu/drm/radeon gpu/drm/msm gpu/drm/tegra \
    gpu/drm/rockchip gpu/drm/sun4i gpu/drm/meson gpu/drm/mediatek gpu/drm/imx \
    gpu/drm/exynos gpu/drm/etnaviv gpu/drm/panfrost gpu/drm/lima gpu/drm/hisilicon \
    gpu/drm/ast gpu/drm/mgag200 gpu/drm/arm infiniband; do
    rm -rf "${kmods:?}/drivers/$d"
done
find "$kmods/drivers/net/ethernet" -mindepth 1 -maxdepth 1 ! -name broadcom -exec rm -rf {} +
rm -f "$kmods"/lib/test_*.ko
for k in "$root"/usr/lib/modules/*; do chroot "$root" depmod "$(basename "$k")"; done

# The initrd, once, now that every package's hooks are in (hold-initramfs.sh
# kept update-initramfs from running during the installs). raspi-firmware's
# post-update hook copies it, the kernel and the device trees to
# /boot/firmware and writes config.txt and cmdline.txt.
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
rm -f "$root"/boot/initrd.img-*
chroot "$root" update-initramfs -c -k all

# File systems: the root by label, checked and repaired at boot; the boot
# partition for the owner's files; /tmp in RAM.
cat > "$root/etc/fstab" <<'FSTAB'
# campeer image. Nothing writes to the card while the camera streams: the
# journal is in RAM (journald.conf.d/campeer-image.conf), /tmp is a tmpfs.
LABEL=campeer-root  /               ext4  rw,noatime,errors=remount-ro,commit=30  0 1
LABEL=CAMPEERBOOT   /boot/firmware  vfat  rw,noatime,fmask=0077,dmask=0077,flush  0 2
FSTAB
cp "$root/usr/share/systemd/tmp.mount" "$root/etc/systemd/system/tmp.mount"

# The name until the first boot sets campeer-XXXX.
echo campeer > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcampeer\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# DNS through systemd-resolved.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service avahi-daemon.service campeer-setup.service \
    campeer.service tmp.mount >/dev/null 2>&1
# Timers that write to the card for a desktop's sake.
systemctl --root="$root" disable apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
systemctl --root="$root" mask e2scrub_reap.service >/dev/null 2>&1 || true
# The stock Mosquitto service would hold port 1883 (campeer runs its own).
systemctl --root="$root" disable mosquitto.service >/dev/null 2>&1 || true
# wpa_supplicant's D-Bus service is for desktops' network managers; wlan0
# has its own instance (wpa_supplicant@wlan0, started by udev). Enabled,
# it held network.target, and so the camera, for over a minute under
# emulation.
systemctl --root="$root" disable wpa_supplicant.service >/dev/null 2>&1 || true

# No console login: root's password stays locked (no secret in the image);
# the owner reaches the camera through its page.
in_root passwd --lock root >/dev/null

# Made on the device at its first boot, never in the image.
echo uninitialized > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
rm -f "$root/var/lib/systemd/random-seed" "$root/etc/ssh/ssh_host_"*

rm -rf "$root/tmp/campeer-image."*

# What differs between two builds and is not needed: logs, caches, backups.
find "$root/var/log" -type f -delete
rm -rf "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"* \
    "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old \
    "$root/var/cache/ldconfig/aux-cache" "$root/etc/"*- 2>/dev/null || true
