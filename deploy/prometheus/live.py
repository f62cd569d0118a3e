#!/usr/bin/env python3
"""live.py WEFT_BINARY: weft's dashboard and alerts against a real Prometheus and a real
playground (run by check.sh, which installs Prometheus and checks the rules first).

1. Starts `weft playground` (5 TLS nodes, metrics on base+10..base+14) in a temporary
   directory, and a Prometheus (Debian's) scraping every node over TLS with root's client
   certificate every second, with deploy/prometheus/alerts.yaml loaded.
2. Waits until every target is up, writes and reads a few keys, checks node 1's exposition
   with `promtool check metrics`, then evaluates every query of deploy/grafana/weft.json
   through Prometheus's HTTP API: each must succeed and return series.
3. Kills node 5 and waits for WeftNodeDown to fire for its target, and for the cluster
   manager's view to count a node down.

Standard library only. Exits non-zero, naming what failed, on any failure.
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(HERE, "..", "grafana", "weft.json")
ALERTS = os.path.join(HERE, "alerts.yaml")


def log(msg):
    print(f"live: {msg}", file=sys.stderr, flush=True)


def free_base():
    """A base port with base..base+14 free on loopback (the playground's gRPC and metrics
    ports), plus one more for Prometheus at base+20."""
    for base in range(27100, 60000, 100):
        ok = True
        for p in list(range(base, base + 15)) + [base + 20]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("live: no free port range")


def wait_for(what, deadline_s, probe, every=0.5):
    """Calls probe() until it returns something truthy; fails after deadline_s."""
    end = time.time() + deadline_s
    last = None
    while time.time() < end:
        try:
            got = probe()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - a probe failing is "not yet"
            last = e
        time.sleep(every)
    raise SystemExit(f"live: timed out after {deadline_s}s waiting for {what} (last error: {last})")


class Prom:
    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path, **params):
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)["result"]


def dashboard_queries():
    with open(DASHBOARD) as f:
        board = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(board.get("panels", []))
    if not exprs:
        raise SystemExit("live: the dashboard has no queries")
    return exprs


def main():
    weft = os.path.abspath(sys.argv[1])
    base = free_base()
    prom_port = base + 20
    work = tempfile.mkdtemp(prefix="weft-prom-")
    procs = []
    try:
        log(f"starting a playground on ports {base}..{base + 14} in {work}")
        pg_out = open(os.path.join(work, "playground.log"), "w")
        pg = subprocess.Popen(
            [weft, "playground", "--data-dir", os.path.join(work, "pg"), "--base-port", str(base)],
            stdout=pg_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(pg)

        def playground_ready():
            if pg.poll() is not None:
                raise SystemExit(f"live: the playground exited: {open(pg_out.name).read()}")
            return "export WEFT_CERTS_DIR=" in open(pg_out.name).read()

        wait_for("the playground", 120, playground_ready)
        certs = os.path.join(work, "pg", "certs")
        targets = [f"127.0.0.1:{base + 10 + i}" for i in range(5)]
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: weft
    scheme: https
    tls_config:
      ca_file: {certs}/ca.crt
      cert_file: {certs}/client.root.crt
      key_file: {certs}/client.root.key
    static_configs:
      - targets: {json.dumps(targets)}
"""
            )
        log(f"starting Prometheus on 127.0.0.1:{prom_port}")
        prom_log = open(os.path.join(work, "prometheus.log"), "w")
        prometheus = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=prom_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(prometheus)
        prom = Prom(prom_port)

        def all_up():
            got = prom.get("/api/v1/targets", state="active")["activeTargets"]
            healthy = [t for t in got if t["health"] == "up"]
            return len(got) == 5 and len(healthy) == 5

        wait_for("every node scraped (5 targets up)", 60, all_up)
        log("every target is up")

        env = dict(os.environ, WEFT_CERTS_DIR=certs)
        endpoint = f"127.0.0.1:{base}"
        for i in range(20):
            subprocess.run(
                [weft, "kv", "--endpoint", endpoint, "put", "--service", "demo", f"k{i}", f"v{i}"],
                env=env,
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [weft, "kv", "--endpoint", endpoint, "get", "--service", "demo", f"k{i}"],
                env=env,
                check=True,
                capture_output=True,
            )

        tls = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
        tls.load_cert_chain(os.path.join(certs, "client.root.crt"), os.path.join(certs, "client.root.key"))
        with urllib.request.urlopen(f"https://{targets[0]}/metrics", context=tls, timeout=10) as r:
            exposition = r.read()
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True)
        if lint.returncode != 0:
            raise SystemExit(f"live: promtool check metrics: {lint.stdout.decode()}{lint.stderr.decode()}")
        log(f"promtool check metrics: node 1's {len(exposition.splitlines())} lines are clean")

        exprs = dashboard_queries()

        def every_query_has_series():
            empty = [(title, e) for title, e in exprs if not prom.query(e)]
            if empty:
                raise RuntimeError(f"no series yet for {empty}")
            return True

        # rate() and increase() need two samples in their window: a few scrapes.
        wait_for(f"all {len(exprs)} dashboard queries to return series", 60, every_query_has_series, every=2)
        log(f"all {len(exprs)} dashboard queries evaluate and return series")

        victim = targets[4]
        node5 = subprocess.run(
            ["pgrep", "-f", "--", f"--listen 127.0.0.1:{base + 4} "], capture_output=True, text=True
        ).stdout.split()
        if len(node5) != 1:
            raise SystemExit(f"live: expected one node-5 process, found {node5}")
        log(f"killing node 5 (pid {node5[0]}, metrics {victim})")
        os.kill(int(node5[0]), signal.SIGKILL)

        def node_down_firing():
            alerts = prom.get("/api/v1/alerts")["alerts"]
            return any(
                a["labels"].get("alertname") == "WeftNodeDown"
                and a["labels"].get("instance") == victim
                and a["state"] == "firing"
                for a in alerts
            )

        def manager_counts_it_down():
            r = prom.query('max(weft_cluster_nodes{state="down"})')
            return r and float(r[0]["value"][1]) == 1.0

        wait_for("the cluster manager to count node 5 down", 60, manager_counts_it_down)
        log("weft_cluster_nodes{state=\"down\"} is 1")
        wait_for("WeftNodeDown firing for node 5", 90, node_down_firing, every=2)
        firing = [a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["alerts"] if a["state"] == "firing"]
        log(f"WeftNodeDown fired for {victim} (firing now: {sorted(set(firing))})")
        print("ok")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
