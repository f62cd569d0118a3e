#!/usr/bin/env bash
# check.sh WEFT_BINARY: the dashboard and the alerts, tested against a real Prometheus.
#
# Installs Debian's prometheus package if promtool or prometheus is missing, checks the
# rules (promtool check rules) and runs their unit tests (promtool test rules, each alert
# fired on synthetic series), then live.py: a playground of WEFT_BINARY scraped by a real
# Prometheus, every dashboard query evaluated, a node killed and WeftNodeDown seen firing.
# tests/prometheus.rs runs it; it exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
weft="${1:?usage: check.sh WEFT_BINARY}"

need=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)
"$here/../apt-install.sh" "${need[@]}"

promtool check rules "$here/alerts.yaml"
(cd "$here" && promtool test rules alerts_test.yaml)
exec python3 "$here/live.py" "$weft"
