//! The node's Prometheus metrics, gathered in one registry per node (a process may embed
//! several nodes; every series carries `node="<id>"`), for the metrics port
//! (`crate::metrics`) to serve as Prometheus text (format 0.0.4).
//!
//! What is exported, by who asks:
//! - requests: `weft_requests_total{service,method,code}`, `weft_request_duration_seconds`
//!   (unary calls), `weft_streams_open{service,method}` (see [`requests`]);
//! - per replica (`partition`, `replica`): role, term, commit, applied and last log index,
//!   log entries kept, leader changes (times it became primary), proposals in flight,
//!   read-index rounds, quiesced, engine memory and records, requests;
//! - snapshots and rebuilds: bytes sent and received, sends and installs by outcome, their
//!   durations, in progress (`weft_replica::stats::SnapshotStats`);
//! - per node: replicas, primaries, engine memory, process memory, CPU and file descriptors
//!   (`process_*`), build (`weft_build_info`), readiness, connections, append streams,
//!   refused requests, TLS handshakes refused, certificate expiry;
//! - cluster-wide (`weft_cluster_*`): only from the node that is the cluster manager now
//!   (`weft_cluster_manager` is 1 there, 0 elsewhere), so a dashboard reads them with
//!   `max(...)`: nodes by state, partitions under-replicated, quorum lost, alarms, moves in
//!   flight and done, imbalance and its threshold, the upgrade walk's progress.
//!
//! Values are what the node holds when scraped; nothing here asks another node, wakes a
//! quiesced group or waits. Counts are whole numbers well below 2^53, so each is exact in
//! Prometheus's float and printed without an exponent. Never depends on the metrics port's
//! HTTP side, which only asks for [`Telemetry::render`].

mod requests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use weft_proto::v1 as pb;
use weft_replica::Host;
use weft_security::credentials::Credentials;
use weft_security::gate::Gate;
use weft_security::server::ConnStats;

pub use requests::RequestMetrics;

use crate::manager::Manager;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    /// The node's replicas.
    pub host: Arc<Host>,
    /// The node's cluster-manager role.
    pub manager: Arc<Manager>,
    /// The gRPC port's gate: its refusals.
    pub gate: Arc<Gate>,
    /// The gRPC port's connections.
    pub conns: Arc<ConnStats>,
    /// The node's credentials (`None`: `--insecure`).
    pub tls: Option<Arc<Credentials>>,
    /// Whether the node is ready.
    pub health: Arc<crate::health::Health>,
}

/// One node's metrics.
pub struct Telemetry {
    registry: Registry,
    requests: RequestMetrics,
}

impl Telemetry {
    /// The registry of node `node`, reading `sources` when scraped.
    pub fn new(node: u64, sources: Sources) -> prometheus::Result<Arc<Self>> {
        let labels = HashMap::from([("node".to_string(), node.to_string())]);
        let registry = Registry::new_custom(None, Some(labels))?;
        let requests = RequestMetrics::new(&registry)?;
        for c in sources.host.peers().snapshots().collectors() {
            registry.register(c)?;
        }
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let build = IntGaugeVec::new(
            Opts::new("weft_build_info", "1, labelled with the running weft's version."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        registry.register(Box::new(Scraped(sources)))?;
        Ok(Arc::new(Telemetry { registry, requests }))
    }

    /// The request counters, for the gRPC server's layer.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Every series now, as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into memory fails only on a family the encoder cannot write (none here:
        // every one is built above); a scrape then gets what was written.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The figures read from the node's state at each scrape.
struct Scraped(Sources);

/// One series: its labels (beyond `node`) and value.
type Row = (Vec<(&'static str, String)>, f64);

/// Families being built for one scrape.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn add(&mut self, kind: MetricType, name: &str, help: &str, rows: impl IntoIterator<Item = Row>) {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        let metrics = rows
            .into_iter()
            .map(|(labels, v)| {
                let mut m = proto::Metric::default();
                m.set_label(
                    labels
                        .into_iter()
                        .map(|(k, v)| {
                            let mut l = proto::LabelPair::default();
                            l.set_name(k.to_string());
                            l.set_value(v);
                            l
                        })
                        .collect(),
                );
                match kind {
                    MetricType::COUNTER => {
                        let mut c = proto::Counter::default();
                        c.set_value(v);
                        m.set_counter(c);
                    }
                    _ => {
                        let mut g = proto::Gauge::default();
                        g.set_value(v);
                        m.set_gauge(g);
                    }
                }
                m
            })
            .collect();
        family.set_metric(metrics);
        self.0.push(family);
    }

    fn gauge(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = Row>) {
        self.add(MetricType::GAUGE, name, help, rows);
    }

    fn counter(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = Row>) {
        self.add(MetricType::COUNTER, name, help, rows);
    }

    /// A gauge with one unlabelled series.
    fn one(&mut self, name: &str, help: &str, v: f64) {
        self.gauge(name, help, [(Vec::new(), v)]);
    }
}

impl Collector for Scraped {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked: its families depend on what the node holds (the cluster's only on the
        // manager's node), as Go's client allows for collectors without descriptors.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f = Families::default();
        replicas(&mut f, &self.0.host);
        node(&mut f, &self.0);
        cluster(&mut f, &self.0.manager);
        f.0
    }
}

fn replicas(f: &mut Families, host: &Host) {
    let replicas = host.list();
    let statuses: Vec<(Arc<pb::ReplicaStatus>, &weft_replica::Replica)> =
        replicas.iter().map(|r| (r.status(), r.as_ref())).collect();
    let primaries = statuses.iter().filter(|(s, _)| s.role == pb::Role::Primary as i32).count();
    f.one("weft_node_replicas", "Replicas this node hosts.", statuses.len() as f64);
    f.one("weft_node_primaries", "Primaries this node hosts.", primaries as f64);
    f.one(
        "weft_node_engine_memory_bytes",
        "Engine memory of every replica here (the process's is process_resident_memory_bytes).",
        statuses.iter().map(|(s, _)| s.memory_bytes as f64).sum(),
    );
    f.one("weft_node_append_streams", "Raft append streams from peer nodes open here.", host.append_streams() as f64);
    type Of = fn(&pb::ReplicaStatus, &weft_replica::Replica) -> f64;
    let mut per = |kind: MetricType, name: &str, help: &str, of: Of| {
        let rows = statuses
            .iter()
            .map(|(s, r)| (vec![("partition", s.partition.to_string()), ("replica", s.replica.to_string())], of(s, r)));
        f.add(kind, name, help, rows);
    };
    use MetricType::{COUNTER, GAUGE};
    per(GAUGE, "weft_replica_is_primary", "1 when the replica is its partition's primary.", |s, _| {
        f64::from(u8::from(s.role == pb::Role::Primary as i32))
    });
    per(GAUGE, "weft_replica_term", "Raft term.", |s, _| s.term as f64);
    per(GAUGE, "weft_replica_commit_index", "Last committed log index.", |_, r| r.figures().committed_index() as f64);
    per(GAUGE, "weft_replica_applied_index", "Last applied log index.", |s, _| s.applied_index as f64);
    per(GAUGE, "weft_replica_last_log_index", "Last log index.", |s, _| s.last_log_index as f64);
    per(GAUGE, "weft_replica_log_entries", "Log entries kept (last index less the purged one).", |s, r| {
        s.last_log_index.saturating_sub(r.figures().purged_index()) as f64
    });
    per(
        COUNTER,
        "weft_replica_leader_changes_total",
        "Times this replica became its partition's primary (summed over a partition's replicas: its leader changes).",
        |_, r| r.figures().became_primary() as f64,
    );
    per(GAUGE, "weft_replica_proposals_in_flight", "Log entries of writes being committed now.", |_, r| {
        r.proposals_in_flight() as f64
    });
    per(COUNTER, "weft_replica_read_index_rounds_total", "Read-index rounds for linearizable reads.", |_, r| {
        r.figures().read_rounds() as f64
    });
    per(
        GAUGE,
        "weft_replica_quiesced",
        "1 while the replica's group is quiesced (idle, its timers stopped).",
        |s, _| f64::from(u8::from(s.quiesced)),
    );
    per(GAUGE, "weft_replica_memory_bytes", "Engine memory of the replica.", |s, _| s.memory_bytes as f64);
    per(GAUGE, "weft_replica_records", "Records in the replica.", |s, _| s.records as f64);
    per(GAUGE, "weft_replica_snapshot_bytes", "Snapshot bytes received in the current or last install.", |s, _| {
        s.snapshot_bytes as f64
    });
    per(
        COUNTER,
        "weft_replica_requests_total",
        "Client reads and writes the replica served since it opened.",
        |s, _| s.requests as f64,
    );
}

fn node(f: &mut Families, src: &Sources) {
    f.one("weft_node_ready", "1 when the node is ready (as /readyz and the health protocol say).", {
        f64::from(u8::from(src.health.ready().is_ok()))
    });
    let r = &src.gate.refusals;
    let refusals = [
        ("unauthenticated", &r.unauthenticated),
        ("permission_denied", &r.permission_denied),
        ("resource_exhausted", &r.resource_exhausted),
        ("deadline_exceeded", &r.deadline_exceeded),
    ];
    f.counter(
        "weft_node_refused_requests_total",
        "Requests refused before any service saw them, by gRPC code.",
        refusals.iter().map(|(code, v)| (vec![("code", code.to_string())], v.load(Ordering::Relaxed) as f64)),
    );
    let c = &src.conns;
    f.gauge(
        "weft_node_connections",
        "Open connections on the gRPC port, by peer kind.",
        [("client", &c.client_connections), ("node", &c.node_connections)]
            .into_iter()
            .map(|(kind, v)| (vec![("peer", kind.to_string())], v.load(Ordering::Relaxed) as f64)),
    );
    let one = |v: u64| [(Vec::new(), v as f64)];
    f.counter(
        "weft_node_tls_handshakes_failed_total",
        "TLS handshakes refused: no, foreign or expired certificate, timeout, garbage.",
        one(c.handshakes_failed.load(Ordering::Relaxed)),
    );
    f.counter(
        "weft_node_connections_refused_total",
        "Connections closed on arrival or served only to refuse (over the connection limits, plaintext).",
        one(c.connections_dropped.load(Ordering::Relaxed)
            + c.connections_over_limit.load(Ordering::Relaxed)
            + c.plaintext_connections.load(Ordering::Relaxed)),
    );
    f.counter(
        "weft_node_idle_connections_closed_total",
        "Connections closed after no request for the idle timeout.",
        one(c.idle_closed.load(Ordering::Relaxed)),
    );
    if let Some(creds) = &src.tls {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let cur = creds.current();
        f.gauge(
            "weft_node_certificate_expiry_seconds",
            "Seconds until the node's certificate (cert=\"node\") or its CA (cert=\"ca\") expires.",
            [("node", cur.not_after_unix - now), ("ca", cur.ca_not_after_unix - now)]
                .into_iter()
                .map(|(which, v)| (vec![("cert", which.to_string())], v as f64)),
        );
    }
    f.one("weft_node_insecure", "1 when the node runs --insecure (no TLS, no authentication).", {
        f64::from(u8::from(src.tls.is_none()))
    });
}

fn cluster(f: &mut Families, manager: &Manager) {
    let g = manager.gauges();
    f.one(
        "weft_cluster_manager",
        "1 on the node that is the cluster manager now (the only one exporting weft_cluster_*), else 0.",
        f64::from(u8::from(g.is_some())),
    );
    let Some(g) = g else { return };
    f.gauge(
        "weft_cluster_nodes",
        "Nodes in the cluster map, by state (up, draining, down).",
        [("up", g.nodes_up), ("draining", g.nodes_draining), ("down", g.nodes_down)]
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n as f64)),
    );
    f.one("weft_cluster_partitions", "Partitions created.", g.partitions as f64);
    f.one(
        "weft_cluster_partitions_under_replicated",
        "Partitions with fewer voters reporting in than their service's replica count.",
        g.under_replicated as f64,
    );
    f.one("weft_cluster_quorum_lost", "Partitions that lost their write quorum.", g.quorum_lost as f64);
    f.one("weft_cluster_alarms", "Standing cluster alarms (weft ctl status lists them).", g.alarms as f64);
    f.one("weft_cluster_moves_in_flight", "Replica moves in flight.", g.moves_in_flight as f64);
    f.counter(
        "weft_cluster_moves_done_total",
        "Replica moves this cluster manager finished (from zero on each manager failover).",
        [(Vec::new(), g.moves_done as f64)],
    );
    f.one(
        "weft_cluster_imbalance",
        "Most over least replicas (or engine memory) per up node, as weft ctl rebalance measures it.",
        g.imbalance,
    );
    f.one("weft_cluster_imbalance_threshold", "The imbalance past which a rebalance moves replicas.", {
        g.imbalance_threshold
    });
    f.one("weft_cluster_upgrade_in_progress", "1 while an upgrade walk is in flight.", {
        f64::from(u8::from(g.upgrade_in_progress))
    });
    f.one(
        "weft_cluster_upgrade_domains",
        "UDs in the upgrade walk in flight (0 without one).",
        g.upgrade_domains_total as f64,
    );
    f.one("weft_cluster_upgrade_domains_walked", "UDs the walk in flight has finished.", g.upgrade_domains_done as f64);
    f.one(
        "weft_cluster_upgrade_partitions_waiting",
        "Partitions with a stand-in replica the walk keeps while their replica's UD is down.",
        g.upgrade_partitions_waiting as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest term the wire accepts (`weft_replica`'s `TERM_MAX`, 2^48) prints as the
    /// integer it is, not in exponent form or rounded (the old exposition printed 2^64-1 as
    /// 18446744073709552000).
    #[test]
    fn large_counts_print_as_exact_integers() {
        let mut f = Families::default();
        let term = 1u64 << 48;
        f.gauge("weft_replica_term", "Raft term.", [(vec![("partition", "7".to_string())], term as f64)]);
        let mut out = Vec::new();
        TextEncoder::new().encode(&f.0, &mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains(&format!("weft_replica_term{{partition=\"7\"}} {term}\n")), "{text}");
    }
}
