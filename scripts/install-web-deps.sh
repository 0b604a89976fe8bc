#!/usr/bin/env bash
# Installs what the viewer page and its browser tests need on a fresh Debian
# machine: Debian's Chromium and Firefox ESR (never a downloaded browser), fonts for
# screenshots, ffmpeg (a stand-in for rpicam-vid in tests/exec_source.rs;
# a test tool, so not in the run command's install-deps.sh), coturn and
# nftables (the emulated Internet of tests/common/netlab.rs: a TURN server
# and symmetric NAT; coturn's own service is disabled, the tests start it
# themselves), Node.js and npm when missing, and the page's npm packages
# (mqtt, @noble/hashes, esbuild, typescript, playwright-core, puppeteer-core). Idempotent:
# installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(chromium firefox-esr fonts-dejavu-core ffmpeg coturn nftables)
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-web-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "install-web-deps: Debian packages present"
fi
# Debian enables coturn's service on install: an unconfigured TURN server on
# every address is not wanted on a developer's or CI machine.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet coturn 2>/dev/null; then
    $SUDO systemctl disable --now coturn >/dev/null 2>&1 || true
fi

# The page's packages; playwright-core and puppeteer-core never download a
# browser by themselves.
if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
    echo "install-web-deps: npm ci in web/"
    (cd web && npm ci --no-audit --no-fund)
else
    echo "install-web-deps: web/node_modules up to date"
fi
echo "install-web-deps: done"
