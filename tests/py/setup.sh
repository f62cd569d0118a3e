#!/usr/bin/env bash
# Makes the Python environment tests/health.rs runs its reflection client in, and prints
# the path of its python. Installs Python's venv from Debian's packages if missing, then
# tests/py/requirements.txt from PyPI into $CARGO_TARGET_DIR (default target)/py-venv.
# Safe to run again: it reinstalls only when requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { printf 'py-setup: %s\n' "$*" >&2; }

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install python3-venv"; exit 1; }
        sudo="sudo"
    fi
    log "installing python3 and python3-venv from Debian's packages"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
fi

venv="${CARGO_TARGET_DIR:-target}/py-venv"
stamp="$venv/requirements.txt"
if ! cmp -s tests/py/requirements.txt "$stamp" 2>/dev/null; then
    log "creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/py/requirements.txt >&2
    cp tests/py/requirements.txt "$stamp"
fi
echo "$(cd "$venv" && pwd)/bin/python"
