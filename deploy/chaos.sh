#!/usr/bin/env bash
# chaos.sh [--seconds S] [--json] [--mode durable|volatile|both] [--seed N] [--bin PATH]
#          [--keep]
# The multi-host fault run: brings deploy/compose.yaml's cluster up fresh (deploy/up.sh),
# runs `weft chaos`'s clients and linearizability check from this host against the
# published ports while a nemesis works on the containers (docker kill and start, docker
# pause, link cuts with iptables inside the containers' network namespaces, latency and
# loss with tc netem where the kernel allows it; durable mode adds a whole-cluster kill
# and restart and a rolling replacement of every container), and prints the same summary
# as `weft chaos` (one JSON object with --json; an array for --mode both). Exits non-zero
# unless every run is linearizable with no acknowledged write lost. The cluster is taken
# down after each run unless --keep.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
seconds=60
json=""
mode=durable
seed=1
bin="${WEFT_BIN:-}"
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --json) json="--json"; shift ;;
        --mode) mode="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "chaos.sh: unknown argument $1 (--seconds S, --json, --mode M, --seed N, --bin PATH, --keep)" >&2; exit 2 ;;
    esac
done
case "$mode" in
    durable) modes="durable" ;;
    volatile) modes="volatile" ;;
    both) modes="durable volatile" ;;
    *) echo "chaos.sh: --mode is durable, volatile or both" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
    [ -x "$root/target/release/weft" ] || (cd "$root" && cargo build --release --locked --bin weft >&2)
    bin="$root/target/release/weft"
fi
# nsenter and iptables cut the containers' links; tc shapes them.
need=""
command -v nsenter >/dev/null || need="$need util-linux"
command -v iptables >/dev/null || need="$need iptables"
command -v tc >/dev/null || need="$need iproute2"
# shellcheck disable=SC2086
[ -z "$need" ] || "$here/apt-install.sh" $need

# The image always from this binary: a run tests the code it was built from.
"$here/build-image.sh" --bin "$bin" >/dev/null
outs=()
status=0
for m in $modes; do
    "$here/down.sh" 2>/dev/null || true
    flag=""
    [ "$m" = volatile ] && flag="--volatile"
    # A node silent for 2 s is replaced (the local chaos runs' setting): faults come fast.
    if ! env_line="$(WEFT_DOWN_GRACE=2 "$here/up.sh" $flag --bin "$bin")"; then
        echo "chaos.sh: the $m cluster did not come up; its containers and their last log lines:" >&2
        docker-compose -f "$here/compose.yaml" ps >&2 || true
        docker-compose -f "$here/compose.yaml" logs --tail=20 >&2 || true
        "$here/down.sh" || true
        exit 1
    fi
    eval "$env_line"
    out="$("$bin" chaos --compose "$here/compose.yaml" --mode "$m" --seconds "$seconds" --seed "$seed" $json)" || status=$?
    outs+=("$out")
    if [ "$keep" -eq 0 ]; then
        "$here/down.sh" || true
    fi
done
if [ -n "$json" ] && [ "${#outs[@]}" -gt 1 ]; then
    (IFS=,; printf '[%s]\n' "${outs[*]}")
else
    printf '%s\n' "${outs[@]}"
fi
exit "$status"
