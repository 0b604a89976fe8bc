#!/usr/bin/env bash
# Installs the Home Assistant that tests/homeassistant.rs runs, in a venv
# cached outside the work tree (CAMPEER_HA_VENV, default
# /var/cache/campeer-tests/homeassistant), with CPython 3.13.
# HA 2025.4 is the newest release that installs on Python 3.13.0. Pinned:
# the core, its frontend (HA will not start without it) and the MQTT
# integration's client library, at the versions HA 2025.4.4 pins itself.
# Installed with uv (from PyPI, into its own small venv beside the HA one):
# it downloads in parallel, about 4 minutes cold here where pip took 21
# (mostly waiting on one download at a time); warm: nothing to do.
set -euo pipefail

VENV="${CAMPEER_HA_VENV:-/var/cache/campeer-tests/homeassistant}"
PINS=(homeassistant==2025.4.4 home-assistant-frontend==20250411.0 paho-mqtt==2.1.0)
STAMP="$VENV/.campeer-pins"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${PINS[*]}" ]; then
    exit 0
fi

find_python() {
    if [ -n "${CAMPEER_PYTHON313:-}" ]; then echo "$CAMPEER_PYTHON313"; return; fi
    for p in "$HOME"/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do
        if [ -x "$p" ]; then echo "$p"; return; fi
    done
    if command -v python3.13 >/dev/null && python3.13 --version >/dev/null 2>&1; then
        command -v python3.13; return
    fi
    echo "install-homeassistant: no Python 3.13 found (set CAMPEER_PYTHON313)" >&2
    exit 1
}

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python)
    echo "install-homeassistant: making $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
UV_VENV="$VENV-uv"
if [ ! -x "$UV_VENV/bin/uv" ]; then
    PY=$(find_python)
    "$PY" -m venv "$UV_VENV"
    "$UV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv==0.13.9
fi
echo "install-homeassistant: uv pip install ${PINS[*]}"
"$UV_VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "${PINS[@]}"
echo "${PINS[*]}" > "$STAMP"
echo "install-homeassistant: done in $(( $(date +%s) - start )) s"
