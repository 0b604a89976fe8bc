#!/usr/bin/env bash
# Counts the aarch64 instructions openh264 spends per encoded frame, the
# basis of the Pi CPU estimates in docs/raspberry-pi.md ("What the Pi
# costs"). Not part of the test suite: it takes many minutes.
#
#   scripts/pi-cpu-estimate.sh [WxH ...]      (default: 640x480 1280x720)
#
# How: tools/encode-cost (openh264 alone, configured as campeer's encoder,
# with the same NEON assembly the Pi runs) is cross-built for aarch64 and
# run under qemu-user with one guest instruction per translation block
# (-singlestep) and every executed block logged (-d nochain,exec), so the
# log has exactly one line per guest instruction executed. Debian's qemu
# ships no TCG plugins (and perf has no hardware counters in this VM), so
# this is the counting method available. It encodes 1 and then 4 frames of
# ffmpeg's testsrc2 at 30 fps; (count(4) - count(1)) / 3 is the cost of a
# steady-state P frame, with start-up, initialisation and the first IDR
# cancelled out. Needs scripts/install-cross-deps.sh and ffmpeg.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ "${#sizes[@]}" -gt 0 ] || sizes=(640x480 1280x720)

triple=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR="$PWD/target/encode-cost"
(cd tools/encode-cost && cargo build --release --target "$triple")
bin="$CARGO_TARGET_DIR/$triple/release/encode-cost"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # W H N FILE BITRATE
    local fifo="$work/log-$1-$3"
    mkfifo "$fifo"
    grep -c '^Trace' < "$fifo" > "$fifo.count" &
    local reader=$!
    qemu-aarch64-static -L / -singlestep -d nochain,exec -D "$fifo" \
        "$bin" "$1" "$2" "$3" 30 "$5" < "$4" > /dev/null 2>&1
    wait "$reader"
    cat "$fifo.count"
}

for s in "${sizes[@]}"; do
    w=${s%x*} h=${s#*x}
    bitrate=1000000; [ "$w" -ge 1280 ] && bitrate=2500000
    yuv="$work/$s.yuv"
    ffmpeg -hide_banner -loglevel error -f lavfi -i "testsrc2=size=${s}:rate=30" \
        -frames:v 4 -pix_fmt yuv420p -f rawvideo -y "$yuv"
    one=$(count "$w" "$h" 1 "$yuv" "$bitrate")
    four=$(count "$w" "$h" 4 "$yuv" "$bitrate")
    per=$(( (four - one) / 3 ))
    echo "$s: 1 frame $one, 4 frames $four instructions: $per per P frame ($(( per * 30 / 1000000 )) M instructions a second at 30 fps)"
done
