#!/usr/bin/env bash
# Builds the Debian package for a Raspberry Pi:
#
#   scripts/build-deb.sh arm64     # 64-bit Raspberry Pi OS (aarch64 build)
#   scripts/build-deb.sh armhf     # 32-bit Raspberry Pi OS on ARMv7 boards
#
# (aarch64/armv7 are accepted as names too.) Cross-builds the binary with
# scripts/cross-build.sh (a no-op when it is up to date; CAMPEER_BIN=path
# packages a given binary instead), then assembles with dpkg-deb (no
# debhelper needed):
#
#   /usr/bin/campeer                          the daemon (stripped)
#   /lib/systemd/system/campeer.service       systemd/campeer.service
#   /usr/lib/sysusers.d/campeer.conf          systemd/campeer.sysusers
#   /lib/udev/rules.d/60-campeer-gpio.rules   systemd/60-campeer-gpio.rules
#   /etc/campeer/campeer.toml                 packaging/campeer.toml (conffile)
#   /usr/share/doc/campeer/                   docs and board profiles
#   /usr/share/man/man1/campeer*.1.gz         manual pages  } generated from the
#   bash, zsh and fish completions            }  clap definitions
#                                                (cargo run --example manual)
#
# The maintainer scripts (packaging/deb/) create the campeer user in the
# video, audio and gpio groups (and the gpio group where it is missing),
# and enable and start the service. Output: target/deb/campeer_VERSION_ARCH.deb
# (its path is the last line printed). lintian runs when installed
# (tests/package.rs requires it to be clean but for the override in
# packaging/deb/lintian-overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    arm64 | aarch64 | aarch64-unknown-linux-gnu)
        arch=arm64 triple=aarch64-unknown-linux-gnu short=aarch64 gnu=aarch64-linux-gnu ;;
    armhf | armv7 | armv7-unknown-linux-gnueabihf)
        arch=armhf triple=armv7-unknown-linux-gnueabihf short=armv7 gnu=arm-linux-gnueabihf ;;
    armv6 | arm-unknown-linux-gnueabihf)
        bash scripts/cross-build.sh armv6 ;;  # explains why not, and fails
    *) sed -n '2,22p' "$0"; exit 2 ;;
esac

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }

bin="${CAMPEER_BIN:-${CARGO_TARGET_DIR:-target}/$triple/release/campeer}"
if [ -z "${CAMPEER_BIN:-}" ]; then
    # Always through cargo: a no-op when the binary is up to date, and never
    # a stale binary in the package.
    bash scripts/cross-build.sh "$short"
fi
[ -x "$bin" ] || { echo "build-deb: $bin is missing" >&2; exit 1; }
if grep -q campeer-placeholder "$bin"; then
    echo "build-deb: $bin embeds the placeholder viewer page, not the real one: run scripts/build-web.sh and rebuild" >&2
    exit 1
fi

out=target/deb
stage="$out/stage-$arch"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
    "$stage/usr/lib/sysusers.d" "$stage/lib/udev/rules.d" "$stage/etc/campeer" \
    "$stage/usr/share/doc/campeer/board" "$stage/usr/share/man/man1" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/lintian/overrides"

# The binary, stripped as dh_strip would (the symbols stay in the build tree).
"$gnu-strip" --remove-section=.comment --remove-section=.note --strip-unneeded \
    -o "$stage/usr/bin/campeer" "$bin"
chmod 0755 "$stage/usr/bin/campeer"

install -m 0644 systemd/campeer.service "$stage/lib/systemd/system/campeer.service"
install -m 0644 systemd/campeer.sysusers "$stage/usr/lib/sysusers.d/campeer.conf"
install -m 0644 systemd/60-campeer-gpio.rules "$stage/lib/udev/rules.d/60-campeer-gpio.rules"
install -m 0640 packaging/campeer.toml "$stage/etc/campeer/campeer.toml"
install -m 0644 board/*.toml "$stage/usr/share/doc/campeer/board/"
for d in README.md docs/raspberry-pi.md docs/configuration.md docs/protocol.md docs/viewer.md; do
    [ -f "$d" ] && install -m 0644 "$d" "$stage/usr/share/doc/campeer/"
done
# Manual pages and completions, from the command-line definitions (a host
# build of examples/manual.rs: the pages are the same for every target).
gen="$out/manual"
rm -rf "$gen"
cargo run --quiet --locked --example manual -- "$gen" >/dev/null
for page in "$gen"/man1/*.1; do
    gzip -9n < "$page" > "$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 "$gen/completions/campeer.bash" "$stage/usr/share/bash-completion/completions/campeer"
install -m 0644 "$gen/completions/_campeer" "$stage/usr/share/zsh/vendor-completions/_campeer"
install -m 0644 "$gen/completions/campeer.fish" "$stage/usr/share/fish/vendor_completions.d/campeer.fish"
chmod 0644 "$stage"/usr/share/man/man1/*.gz
install -m 0644 packaging/deb/lintian-overrides "$stage/usr/share/lintian/overrides/campeer"

year=$(date -u -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y)
cat > "$stage/usr/share/doc/campeer/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: campeer

Files: *
Copyright: $year the campeer developers
License: MIT or Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0. The MIT license: permission is
 hereby granted, free of charge, to any person obtaining a copy of this
 software and associated documentation files, to deal in the software
 without restriction, subject to the copyright notice being included in all
 copies; the software is provided "as is", without warranty of any kind.
EOF
printf 'campeer (%s) unstable; urgency=medium\n\n  * Package built by scripts/build-deb.sh.\n\n -- campeer developers <campeer@invalid.example>  %s\n' \
    "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n > "$stage/usr/share/doc/campeer/changelog.gz"

for f in preinst postinst prerm postrm; do
    install -m 0755 "packaging/deb/$f" "$stage/DEBIAN/$f"
done
install -m 0644 packaging/deb/conffiles "$stage/DEBIAN/conffiles"

# Depends from the binary's own NEEDED libraries and the target's shlibs
# (dpkg-shlibdeps reads the arm64/armhf multiarch packages installed by
# scripts/install-cross-deps.sh); a fixed list if that is not possible.
depends=""
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: campeer\n\nPackage: campeer\nArchitecture: any\n' > "$tmp/debian/control"
if (cd "$tmp" && DEB_HOST_ARCH="$arch" DEB_HOST_MULTIARCH="$gnu" \
        dpkg-shlibdeps -O -l"/usr/lib/$gnu" "$OLDPWD/$stage/usr/bin/campeer") \
        > "$tmp/shlibs.out" 2> "$tmp/shlibs.err"; then
    depends=$(sed -n 's/^shlibs:Depends=//p' "$tmp/shlibs.out")
fi
if [ -z "$depends" ]; then
    echo "build-deb: dpkg-shlibdeps failed, using a fixed Depends: $(head -c 300 "$tmp/shlibs.err")" >&2
    depends="libasound2 (>= 1.1.0), libc6 (>= 2.34), libgcc-s1 (>= 4.2), libopus0 (>= 1.1), libstdc++6 (>= 5), libvpx7 (>= 1.12.0)"
fi
depends="$depends, adduser"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" packaging/deb/control.in > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"

deb="$out/campeer_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "build-deb: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed 's/^/  /'
dpkg-deb --contents "$deb" | awk '{print "  " $1, $2, $6}'
if command -v lintian >/dev/null 2>&1; then
    # The one intended finding (0640 configuration) is overridden in the
    # package; anything else lintian says is printed here.
    echo "build-deb: lintian:"
    lintian --tag-display-limit 0 "$deb" 2>&1 | sed 's/^/  /' || true
fi
echo "$deb"
