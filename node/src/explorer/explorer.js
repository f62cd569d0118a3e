// weft's cluster explorer: reads /api/cluster every 2 s and draws it. Read-only; builds
// the page with DOM calls and textContent only (names come from the cluster, never parsed
// as HTML). A bearer token is taken from the address's fragment (#token=...) or the form,
// and kept in this tab's sessionStorage.
"use strict";

const EVERY_MS = 2000;

function tokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("weft-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("weft-token");
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fill(id, ...children) {
  const target = document.getElementById(id);
  target.replaceChildren(...children);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function plural(n, what) {
  return n + " " + what + (n === 1 ? "" : "s");
}

function summary(c) {
  const count = (s) => c.nodes.filter((n) => n.state === s).length;
  fill("summary",
    el("span", { "data-manager": c.manager_node }, "manager: node " + c.manager_node),
    el("span", {}, "nodes: " + count("up") + " up, " + count("draining") + " draining, " + count("down") + " down"),
    el("span", {}, plural(c.services.length, "service") + ", " + plural(c.partitions.length, "partition")),
    el("span", { class: "dim" }, "map v" + c.map_version + " via node " + c.serving_node + ", " + new Date().toLocaleTimeString()));
}

function alarms(c) {
  if (c.alarms.length === 0) return fill("alarms", el("li", { class: "none" }, "none"));
  fill("alarms", ...c.alarms.map((a) => el("li", { "data-alarm": "" }, a)));
}

function domains(c) {
  const uds = new Map();
  for (const n of c.nodes) {
    if (!uds.has(n.ud)) uds.set(n.ud, []);
    uds.get(n.ud).push(n);
  }
  const boxes = [...uds.keys()].sort().map((ud) =>
    el("div", { class: "ud", "data-ud": ud }, el("h3", {}, "UD " + ud),
      ...uds.get(ud).map((n) =>
        el("div", { class: "node", "data-node": n.id, "data-state": n.state, "data-replicas": n.replicas, "data-primaries": n.primaries },
          el("span", { class: "name" }, "node " + n.id), el("span", { class: "state " + n.state }, n.state),
          n.map_role === "primary" ? el("span", { class: "state" }, " manager") : "",
          el("div", { class: "facts" }, "FD " + n.fd + " \u00b7 " + n.addr),
          el("div", { class: "facts" }, n.replicas + " replicas, " + n.primaries + " primaries \u00b7 " +
            bytes(n.memory_bytes) + " engine memory \u00b7 " + n.requests_per_s.toFixed(0) + " req/s")))));
  fill("domains", ...boxes);
}

function rebuilds(c) {
  if (c.rebuilds.length === 0) return fill("rebuilds", el("p", { class: "dim" }, "none"));
  const rows = c.rebuilds.map((r) => {
    const pct = r.primary_last_log_index > 0 ? Math.min(100, 100 * r.applied_index / r.primary_last_log_index) : 0;
    return el("tr", { "data-rebuild": r.partition },
      el("td", {}, r.service + " #" + r.partition), el("td", {}, "node " + r.node), el("td", {}, r.reason),
      el("td", {}, bytes(r.snapshot_bytes) + ", " + r.snapshot_records + " records"),
      el("td", {}, el("span", { class: "bar" }, el("div", { style: "width:" + pct.toFixed(0) + "%" })),
        " applied " + r.applied_index + " / " + r.primary_last_log_index));
  });
  fill("rebuilds", el("table", {}, el("tr", {}, ...["partition", "on", "why", "snapshot received", "caught up"].map((h) => el("th", {}, h))), ...rows));
}

function upgrade(c) {
  const u = c.upgrade;
  if (!u) return fill("upgrade", el("p", { class: "dim", "data-upgrade": "none" }, "no upgrade walk in flight"));
  const pct = u.uds.length ? 100 * u.walked / u.uds.length : 0;
  fill("upgrade", el("div", { "data-upgrade": u.walked + "/" + u.uds.length },
    el("span", { class: "bar" }, el("div", { style: "width:" + pct.toFixed(0) + "%" })),
    " " + u.walked + " of " + u.uds.length + " UDs walked" + (u.walked < u.uds.length ? "; UD " + u.uds[u.walked] + ": " + u.phase : "") +
    (u.paused ? " (PAUSED)" : "") + (u.waiting ? "; waiting for " + u.waiting : "") + "; " + u.stand_ins + " stand-ins"));
}

function services(c) {
  const blocks = c.services.map((s) => {
    const parts = c.partitions.filter((p) => p.service === s.name);
    const rows = parts.map((p) => el("tr", { "data-partition": p.id },
      el("td", {}, "#" + p.id), el("td", {}, p.index),
      el("td", {}, ...p.replicas.map((r) => el("span", { class: "replica", "data-partition": p.id, "data-node": r.node, "data-role": r.role },
        "node " + r.node + " " + r.role))),
      el("td", {}, p.moving ? "moving: " + p.moving : (p.created ? "" : "being created"))));
    return el("div", { "data-service": s.name },
      el("h3", {}, s.name + " ", el("span", { class: "dim" }, s.partitions + " partitions \u00d7 " + s.replicas + " replicas")),
      el("table", {}, el("tr", {}, ...["partition", "index", "replicas", ""].map((h) => el("th", {}, h))), ...rows));
  });
  fill("services", ...blocks);
}

async function refresh() {
  const token = sessionStorage.getItem("weft-token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  let r;
  try {
    r = await fetch("/api/cluster", { headers, cache: "no-store" });
  } catch (e) {
    return showError("cannot reach this node: " + e);
  }
  if (r.status === 401) {
    document.getElementById("login").hidden = false;
    document.getElementById("login-why").textContent = await r.text();
    return;
  }
  if (!r.ok) return showError("this node answered " + r.status + ": " + (await r.text()));
  const c = await r.json();
  document.getElementById("login").hidden = true;
  document.getElementById("error").hidden = true;
  summary(c); alarms(c); domains(c); rebuilds(c); upgrade(c); services(c);
  document.body.setAttribute("data-loaded", "1");
}

function showError(text) {
  const e = document.getElementById("error");
  e.textContent = text;
  e.hidden = false;
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("weft-token", document.getElementById("token").value.trim());
  refresh();
});

tokenFromFragment();
refresh();
setInterval(refresh, EVERY_MS);
