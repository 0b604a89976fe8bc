#!/usr/bin/env bash
# Builds the viewer page (web/src -> web/dist), which `cargo build` then
# embeds in the binary. Installs the page's npm packages first when they are
# missing or older than package-lock.json. Needs Node.js 18+ and npm.
# Usage: scripts/build-web.sh [--check]   (--check also type-checks and runs
# the page's unit tests)
set -euo pipefail
cd "$(dirname "$0")/../web"

command -v npm >/dev/null || { echo "build-web: npm not found: install Node.js 18 or later" >&2; exit 1; }

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "build-web: npm ci"
    npm ci --no-audit --no-fund
fi
if [ "${1:-}" = "--check" ]; then
    npm test
fi
npm run build
