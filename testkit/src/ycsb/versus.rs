//! `weft bench kv --target both`: weft and etcd side by side in one run, on local clusters
//! of the same member count, like for like: weft volatile against etcd without fsync, weft
//! durable against etcd with its default fsync. Each cluster runs alone while it is
//! measured (etcd first, then weft, per mode), loaded with the same records and driven by
//! the same load generator. The figures go into one report with `ratios` (weft/etcd
//! throughput per workload) and an SVG chart drawn with `plotters`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::clusters::{run_etcd, run_weft};
use super::{KvConfig, KvReport, Workload};

use crate::Error;

/// Everything a comparison needs.
pub struct VersusConfig {
    /// The weft binary (for its node processes).
    pub exe: PathBuf,
    /// The etcd binary.
    pub etcd: PathBuf,
    /// Members of each cluster.
    pub members: usize,
    /// weft partitions of the benchmark service.
    pub partitions: u32,
    /// Durable (true) and/or volatile (false) pairings, in this order.
    pub durable: Vec<bool>,
    /// The load generator's settings.
    pub kv: KvConfig,
    /// The workloads, in order.
    pub workloads: Vec<Workload>,
    /// TLS on both sides: weft's nodes and clients, etcd's peers and clients.
    pub tls: bool,
}

/// One like-for-like pairing.
#[derive(Debug, Serialize)]
pub struct Pairing {
    /// `volatile` or `durable`.
    pub mode: &'static str,
    /// How etcd's fsync was set for this pairing.
    pub etcd_fsync: String,
    /// Workload letter to weft/etcd throughput.
    pub ratios: BTreeMap<&'static str, f64>,
    /// Workload letter to weft p99 / etcd p99 over all operations (at most 1 is the target).
    pub p99_ratios: BTreeMap<&'static str, f64>,
    /// weft's figures.
    pub weft: KvReport,
    /// etcd's figures.
    pub etcd: KvReport,
}

/// The whole comparison.
#[derive(Debug, Serialize)]
pub struct VersusReport {
    /// Members of each cluster.
    pub members: usize,
    /// weft partitions (each replicated min(4, members) ways).
    pub partitions: u32,
    /// Mode to (workload letter to weft/etcd throughput).
    pub ratios: BTreeMap<&'static str, BTreeMap<&'static str, f64>>,
    /// The smallest throughput ratio of all.
    pub min_ratio: f64,
    /// Whether weft's p99 was at most etcd's in every workload of every pairing.
    pub p99_not_higher: bool,
    /// The pairings in full.
    pub pairings: Vec<Pairing>,
}

const SERVICE: &str = "ycsb";

/// Runs every pairing of `cfg`.
pub async fn versus(cfg: &VersusConfig) -> Result<VersusReport, Error> {
    let mut pairings = Vec::new();
    for &durable in &cfg.durable {
        let mode = if durable { "durable" } else { "volatile" };
        let (etcd, fsync) = run_etcd(&cfg.etcd, cfg.members, durable, cfg.tls, &cfg.kv, &cfg.workloads).await?;
        let weft =
            run_weft(&cfg.exe, cfg.members, durable, cfg.tls, SERVICE, cfg.partitions, &cfg.kv, &cfg.workloads).await?;
        let mut ratios = BTreeMap::new();
        let mut p99_ratios = BTreeMap::new();
        for (w, e) in weft.workloads.iter().zip(&etcd.workloads) {
            ratios.insert(w.workload, w.ops_per_s / e.ops_per_s.max(1e-9));
            p99_ratios.insert(w.workload, w.p99_ms / e.p99_ms.max(1e-9));
        }
        pairings.push(Pairing { mode, etcd_fsync: fsync, ratios, p99_ratios, weft, etcd });
    }
    let ratios = pairings.iter().map(|p| (p.mode, p.ratios.clone())).collect();
    let min_ratio = pairings.iter().flat_map(|p| p.ratios.values().copied()).fold(f64::INFINITY, f64::min);
    let p99_not_higher = pairings.iter().flat_map(|p| p.p99_ratios.values()).all(|r| *r <= 1.0);
    Ok(VersusReport { members: cfg.members, partitions: cfg.partitions, ratios, min_ratio, p99_not_higher, pairings })
}

/// Draws `report` as grouped bars (weft and etcd throughput per workload, the ratio above
/// each pair), one panel per pairing, into the SVG file `path`.
pub fn chart(report: &VersusReport, path: &Path) -> Result<(), Error> {
    let err = |e: &dyn std::fmt::Display| Error::Chart(e.to_string());
    let width = 520 * report.pairings.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, report.pairings.len().max(1)));
    let weft_color = RGBColor(0x2b, 0x6c, 0xb0);
    let etcd_color = RGBColor(0xc0, 0x5a, 0x2b);
    for (panel, p) in panels.iter().zip(&report.pairings) {
        let names: Vec<&str> = p.weft.workloads.iter().map(|w| w.workload).collect();
        let top = p.weft.workloads.iter().chain(&p.etcd.workloads).map(|w| w.ops_per_s).fold(1.0, f64::max) * 1.18;
        let n = names.len() as f64;
        let caption = format!("{} (etcd fsync {})", p.mode, p.etcd_fsync);
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..top)
            .map_err(|e| err(&e))?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).map(|s| s.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len())
            .x_label_formatter(&label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("operations per second")
            .draw()
            .map_err(|e| err(&e))?;
        let bars = |reports: &[super::WorkloadReport], from: f64, to: f64, color: RGBColor| {
            reports
                .iter()
                .enumerate()
                .map(move |(i, w)| {
                    Rectangle::new([(i as f64 + from, 0.0), (i as f64 + to, w.ops_per_s)], color.filled())
                })
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(bars(&p.weft.workloads, -0.38, 0.0, weft_color))
            .map_err(|e| err(&e))?
            .label("weft")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], weft_color.filled()));
        chart
            .draw_series(bars(&p.etcd.workloads, 0.0, 0.38, etcd_color))
            .map_err(|e| err(&e))?
            .label("etcd")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], etcd_color.filled()));
        let texts = p.weft.workloads.iter().enumerate().map(|(i, w)| {
            let ratio = p.ratios.get(w.workload).copied().unwrap_or(0.0);
            Text::new(format!("{ratio:.1}x"), (i as f64 - 0.36, w.ops_per_s + top * 0.05), ("sans-serif", 12))
        });
        chart.draw_series(texts).map_err(|e| err(&e))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
