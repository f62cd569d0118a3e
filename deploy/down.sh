#!/usr/bin/env bash
# down.sh: stops deploy/compose.yaml's cluster and deletes its containers, network and
# volumes (its certificates in deploy/certs stay, for the next up.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
docker-compose -f "$here/compose.yaml" down -v --timeout 5 >&2
