#!/usr/bin/env bash
# Runs campeer's main job on a fresh machine: installs what is missing,
# builds, and starts the daemon on the test pattern (or /dev/video0 when a
# camera is present) with a loopback Mosquitto. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked

PORT="${CAMPEER_MQTT_PORT:-1883}"
VIDEO="test"
if [ -e /dev/video0 ]; then VIDEO="v4l2:/dev/video0"; fi

mosquitto -p "$PORT" >/tmp/campeer-mosquitto.log 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
sleep 0.3

echo "campeer: broker mqtt://127.0.0.1:$PORT, video $VIDEO"
echo "campeer: watch from another shell with:"
echo "    ./target/release/campeer view --mqtt mqtt://127.0.0.1:$PORT --device demo --frames 300"
./target/release/campeer run --mqtt "mqtt://127.0.0.1:$PORT" --device-id demo --video "$VIDEO" "$@"
