#!/usr/bin/env bash
# weft against etcd, side by side, on this machine: YCSB workloads A-F on a local etcd
# cluster and a local weft cluster with the same member count, in one run.
#
#   benches/vs-etcd.sh [--json] [any `weft bench kv` flag, e.g. --records 200000 --seconds 20]
#   benches/vs-etcd.sh watch [--json] [any `weft bench watch` flag, e.g. --prefixed]
#
# The second form runs `weft bench watch` against both stores: the same writers and
# watchers, each store's write rate with N watchers as a fraction of its own without.
#
# Pairings (like for like): weft volatile against etcd without fsync, weft durable against
# etcd with its default fsync. Prints one JSON object with --json (both results, `ratios`
# per mode and workload); draws docs/vs-etcd.svg.
#
# Installs what it needs from Debian's packages if missing: etcd (etcd-server) and, for
# building the etcd client, protoc with its well-known types (protobuf-compiler,
# libprotobuf-dev). Building and testing weft itself needs none of them.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'vs-etcd: %s\n' "$*" >&2; }

need_packages=()
command -v etcd >/dev/null 2>&1 || need_packages+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need_packages+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_packages+=(libprotobuf-dev)
deploy/apt-install.sh "${need_packages[@]}"
log "$(etcd --version | head -1)"

log "building weft with etcd support (cargo build --release --features etcd)"
cargo build --release --locked --features etcd >&2

if [ "${1:-}" = "watch" ]; then
    shift
    exec target/release/weft bench watch --target both --etcd-bin "$(command -v etcd)" "$@"
fi

exec target/release/weft bench kv --target both --mode both --members 4 --partitions 1 \
    --etcd-bin "$(command -v etcd)" --svg docs/vs-etcd.svg "$@"
