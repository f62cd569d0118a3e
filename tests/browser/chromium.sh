#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's chromium package
# (deploy/apt-install.sh) if none is on PATH. tests/explorer.rs loads the cluster explorer
# in it.
set -euo pipefail
cd "$(dirname "$0")/../.."
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; exit 0; fi
done
deploy/apt-install.sh chromium
command -v chromium
