#!/usr/bin/env bash
# Runs campeer's main job on a fresh machine: installs what is missing,
# builds the viewer page and the daemon, and runs the daemon with its
# embedded MQTT broker and viewer page on the stamped test pattern (or
# /dev/video0 when a camera is present), a 440 Hz test tone (muted in the
# page until you unmute) and two simulated GPIO lines (examples/demo.toml).
# Open the printed URL. Ctrl-C stops it.
# Extra arguments go to `campeer run` (e.g. --size 1280x720).
#
# Each step is skipped when its result is up to date (installed packages,
# web/dist, the release binary), so a second run starts in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# rustup's installer puts cargo in ~/.cargo/bin, on the PATH only of login
# shells started after it ran.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

bash scripts/install-deps.sh
bash scripts/build-web.sh
cargo build --release --locked --bin campeer
BIN="${CARGO_TARGET_DIR:-target}/release/campeer"

VIDEO="test"
if [ -e /dev/video0 ]; then VIDEO="v4l2:/dev/video0"; fi
HTTP="${CAMPEER_HTTP:-0.0.0.0:8080}"
PORT="${HTTP##*:}"

echo
echo "campeer: open http://localhost:$PORT/ (or http://$(hostname -I 2>/dev/null | awk '{print $1}'):$PORT/ from another machine)"
echo "campeer: or watch from a shell: $BIN view --device demo --frames 300 --key admin --secret-file <file holding the secret>"
echo "campeer: the device is paired by default: open the pairing link it prints below"
echo "campeer: (printed to a terminal only; with output redirected, $BIN pair prints it)"
echo "campeer: (already paired browsers just open the page; $BIN pair prints the link again)"
echo
# Pairing links name this machine as the browser here reaches it.
export CAMPEER_PAIR_HOST="${CAMPEER_PAIR_HOST:-localhost}"
exec "$BIN" run --config examples/demo.toml --device-id demo --video "$VIDEO" --http "$HTTP" "$@"
