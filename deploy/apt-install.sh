#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs Debian packages with apt-get, as root or through sudo,
# quietly and without recommended extras. The one way the project's scripts (benches,
# tests, deploy checks) install a tool that is missing; they decide what is missing.
set -euo pipefail
[ $# -gt 0 ] || exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { printf 'apt-install: need root or sudo to install: %s\n' "$*" >&2; exit 1; }
    sudo="sudo"
fi
printf 'apt-install: installing %s from Debian'"'"'s packages\n' "$*" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
