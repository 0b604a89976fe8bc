#!/usr/bin/env bash
# Builds the viewer page (web/src -> web/dist), which `cargo build` then
# embeds in the binary. Installs the page's npm packages first when they are
# missing or older than package-lock.json. Needs Node.js 18+ and npm.
#
# web/dist is rebuilt only when its inputs changed: web/src/**, package.json,
# package-lock.json, build.mjs and tsconfig.json. Their hash is written to
# web/dist/.inputs.sha256; build.rs compares it with the inputs and refuses
# a release build with a missing or stale page. Leaving an up-to-date dist
# untouched keeps its mtimes, so cargo does not rerun build.rs and relink.
#
# Usage: scripts/build-web.sh [--check] [--force]
#   --check  also type-checks and runs the page's unit tests
#   --force  rebuild even when web/dist is up to date
set -euo pipefail
cd "$(dirname "$0")/../web"

check=0 force=0
for a in "$@"; do
    case "$a" in
        --check) check=1 ;;
        --force) force=1 ;;
        *) sed -n '2,14p' "$0" >&2; exit 2 ;;
    esac
done

# The inputs' hash, as build.rs computes it: sha256 of the lines
# "<sha256 of file>  <path from web/>" for every input file, in byte order
# of their paths.
inputs_hash() {
    { find src -type f; printf '%s\n' package.json package-lock.json build.mjs tsconfig.json; } \
        | LC_ALL=C sort | while IFS= read -r f; do
            printf '%s  %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
        done | sha256sum | cut -d' ' -f1
}

want=$(inputs_hash)
have=$(cat dist/.inputs.sha256 2>/dev/null || true)
fresh=0
if [ -f dist/index.html ] && [ "$want" = "$have" ]; then fresh=1; fi

if [ "$fresh" -eq 1 ] && [ "$force" -eq 0 ] && [ "$check" -eq 0 ]; then
    echo "build-web: web/dist is up to date (inputs ${want:0:12})"
    exit 0
fi

command -v npm >/dev/null || { echo "build-web: npm not found: install Node.js 18 or later (scripts/install-deps.sh does)" >&2; exit 1; }

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "build-web: npm ci"
    npm ci --no-audit --no-fund
fi
if [ "$check" -eq 1 ]; then
    npm test
fi
if [ "$fresh" -eq 1 ] && [ "$force" -eq 0 ]; then
    echo "build-web: web/dist is up to date (inputs ${want:0:12})"
    exit 0
fi
npm run build
# Written last: an interrupted build leaves no stamp, so it is redone.
echo "$want" > dist/.inputs.sha256
echo "build-web: web/dist built (inputs ${want:0:12})"
