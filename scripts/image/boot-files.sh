#!/usr/bin/env bash
# Puts the owner's files on the image's boot partition (directory $1):
# campeer.toml (packaging/campeer.toml under a header that says what happens
# to it), campeer-wifi.txt and campeer-README.txt (packaging/image/boot).
# packaging/image/rootfs/usr/lib/campeer/image-setup consumes them at boot.
#   boot-files.sh BOOTFS
set -euo pipefail
bootfs=$1
here="$(dirname "$0")/../.."
{
    cat <<'HEADER'
# campeer.toml on the card's boot partition.
#
# Edit it on any computer before the first boot (or later: put a new one
# here and reboot). At boot the camera checks it, moves it to
# /etc/campeer/campeer.toml and deletes it from this partition; if the
# check fails it keeps its previous configuration and writes the reason to
# campeer-config-error.txt here. campeer-README.txt says more.
#
HEADER
    cat "$here/packaging/campeer.toml"
} > "$bootfs/campeer.toml"
install -m 0644 "$here/packaging/image/boot/campeer-wifi.txt" "$bootfs/campeer-wifi.txt"
install -m 0644 "$here/packaging/image/boot/campeer-README.txt" "$bootfs/campeer-README.txt"
# Windows and macOS editors expect CRLF in a .txt; the setup script strips
# the CRs it reads.
sed -i 's/$/\r/' "$bootfs/campeer-README.txt"
