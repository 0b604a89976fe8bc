#!/usr/bin/env bash
# Refreshes the README's screenshot (docs/viewer.png): runs the browser test
# that plays video in Debian's headless Chromium with CAMPEER_WRITE_SCREENSHOT=1,
# so it writes there instead of into the target dir. Review and commit the
# new picture by hand. Needs what scripts/install-web-deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-web.sh
export CAMPEER_WRITE_SCREENSHOT=1
cargo test --locked --test browser -- --exact page_plays_live_video_through_the_embedded_broker
git status --short docs/viewer.png
