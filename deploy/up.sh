#!/usr/bin/env bash
# up.sh [--volatile] [--bin PATH] [--rebuild] [--wait S]: starts deploy/compose.yaml's
# 5-node cluster and waits until every node reports healthy (the gRPC health protocol).
#   - certificates in deploy/certs (made once, kept): the cluster CA, root's client
#     certificate, and node-N/ for each node, valid for weftN, localhost and 127.0.0.1;
#   - the image weft:dev (deploy/build-image.sh) when it is missing or with --rebuild,
#     from --bin, else WEFT_BIN, else a release build;
#   - durable nodes unless --volatile.
# Prints the `export WEFT_CERTS_DIR=...` that `weft kv` and `weft ctl` on the host need.
# deploy/down.sh stops the cluster and deletes its volumes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${WEFT_BIN:-}"
rebuild=0
durable=true
wait_s=120
while [ $# -gt 0 ]; do
    case "$1" in
        --volatile) durable=false; shift ;;
        --bin) bin="$2"; shift 2 ;;
        --rebuild) rebuild=1; shift ;;
        --wait) wait_s="$2"; shift 2 ;;
        *) echo "up.sh: unknown argument $1 (--volatile, --bin PATH, --rebuild, --wait S)" >&2; exit 2 ;;
    esac
done
command -v docker-compose >/dev/null || { echo "up.sh: docker-compose is not installed" >&2; exit 1; }
if [ -z "$bin" ]; then
    [ -x "$root/target/release/weft" ] || (cd "$root" && cargo build --release --locked --bin weft >&2)
    bin="$root/target/release/weft"
fi

certs="$here/certs"
if [ ! -f "$certs/ca.key" ]; then
    "$bin" cert create-ca --certs-dir "$certs" >/dev/null
    "$bin" cert create-client --certs-dir "$certs" root >/dev/null
fi
for i in 1 2 3 4 5; do
    d="$certs/node-$i"
    if [ ! -f "$d/node.crt" ]; then
        mkdir -p "$d"
        cp "$certs/ca.crt" "$d/ca.crt"
        "$bin" cert create-node --certs-dir "$d" --ca-key "$certs/ca.key" --id "$i" \
            --host "weft$i" --host localhost --host 127.0.0.1 >/dev/null
    fi
    # The containers run as uid 10001: their key must be theirs to read.
    if [ "$(id -u)" -eq 0 ]; then
        chown -R 10001:10001 "$d"
    else
        echo "up.sh: not root, so $d/node.key is made readable to all for the containers' user" >&2
        chmod 0644 "$d/node.key"
    fi
done

if [ "$rebuild" -eq 1 ] || ! docker image inspect "${WEFT_IMAGE:-weft:dev}" >/dev/null 2>&1; then
    "$here/build-image.sh" --bin "$bin" --tag "${WEFT_IMAGE:-weft:dev}" >/dev/null
fi

WEFT_DURABLE="$durable" docker-compose -f "$here/compose.yaml" up -d >&2
deadline=$((SECONDS + wait_s))
while :; do
    healthy=0
    for i in 1 2 3 4 5; do
        s="$(docker inspect -f '{{.State.Health.Status}}' "weft$i" 2>/dev/null || true)"
        [ "$s" = healthy ] && healthy=$((healthy + 1))
    done
    [ "$healthy" -eq 5 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "up.sh: only $healthy of 5 nodes healthy after ${wait_s}s; docker-compose -f $here/compose.yaml logs" >&2
        exit 1
    fi
    sleep 1
done
echo "up.sh: 5 nodes healthy (durable: $durable); node 1 is 127.0.0.1:7100" >&2
echo "export WEFT_CERTS_DIR=$certs"
