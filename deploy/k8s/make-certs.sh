#!/usr/bin/env bash
# make-certs.sh [--namespace NS] [--nodes N] [--cluster-domain D] [--out DIR]: the cluster
# CA, root's client certificate, and a certificate for each of the StatefulSet's nodes
# (node i is pod weft-(i-1), valid for its name under the headless service weft-peers, for
# the service weft, and for 127.0.0.1, which its pre-stop hook dials), in DIR (default
# deploy/k8s/certs); then prints the Secret `weft-certs` (ca.crt, node-N.crt, node-N.key)
# as YAML on stdout, for `kubectl apply -f -`. Keep ca.key out of the cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ns=default
nodes=5
domain=cluster.local
out="$here/certs"
weft="${WEFT_BIN:-weft}"
while [ $# -gt 0 ]; do
    case "$1" in
        --namespace) ns="$2"; shift 2 ;;
        --nodes) nodes="$2"; shift 2 ;;
        --cluster-domain) domain="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "make-certs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f "$out/ca.key" ] || { "$weft" cert create-ca --certs-dir "$out" >&2; "$weft" cert create-client --certs-dir "$out" root >&2; }
printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: weft-certs\n  namespace: %s\ntype: Opaque\ndata:\n' "$ns"
printf '  ca.crt: %s\n' "$(base64 -w0 < "$out/ca.crt")"
for i in $(seq 1 "$nodes"); do
    d="$out/node-$i"
    if [ ! -f "$d/node.crt" ]; then
        mkdir -p "$d"
        cp "$out/ca.crt" "$d/"
        pod="weft-$((i - 1))"
        "$weft" cert create-node --certs-dir "$d" --ca-key "$out/ca.key" --id "$i" \
            --host "$pod.weft-peers.$ns.svc.$domain" --host "$pod.weft-peers.$ns.svc" --host "$pod.weft-peers" \
            --host "weft.$ns.svc.$domain" --host "weft.$ns.svc" --host weft --host 127.0.0.1 --host localhost >&2
    fi
    printf '  node-%s.crt: %s\n' "$i" "$(base64 -w0 < "$d/node.crt")"
    printf '  node-%s.key: %s\n' "$i" "$(base64 -w0 < "$d/node.key")"
done
