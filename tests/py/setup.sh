#!/usr/bin/env bash
# Makes the Python environment tests/health.rs runs its reflection client in, and prints
# the path of its python. Installs Python's venv from Debian's packages if missing, then
# tests/py/requirements.txt from PyPI into $CARGO_TARGET_DIR (default target)/py-venv.
# Safe to run again: it reinstalls only when requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { printf 'py-setup: %s\n' "$*" >&2; }

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    deploy/apt-install.sh python3 python3-venv
fi

venv="${CARGO_TARGET_DIR:-target}/py-venv"
stamp="$venv/requirements.txt"
# Tests run in parallel and each may call this: one makes the environment, the others wait.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if ! cmp -s tests/py/requirements.txt "$stamp" 2>/dev/null; then
    log "creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/py/requirements.txt >&2
    cp tests/py/requirements.txt "$stamp"
fi
echo "$(cd "$venv" && pwd)/bin/python"
