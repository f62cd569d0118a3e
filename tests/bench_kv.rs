//! `weft bench kv` end to end: the YCSB workloads against a local weft cluster of real
//! node processes (and, built with `--features etcd`, against a local etcd cluster side
//! by side, which needs the `etcd` binary that benches/vs-etcd.sh installs).

mod common;

use common::weft;
use serde_json::Value;

/// The operation types each workload must have issued.
fn expected_ops(workload: &str) -> &'static [&'static str] {
    match workload {
        "A" | "B" => &["read", "update"],
        "C" => &["read"],
        "D" => &["insert", "read"],
        "E" => &["insert", "scan"],
        "F" => &["read", "read_modify_write"],
        _ => &[],
    }
}

fn check_run(run: &Value) {
    let workloads = run["workloads"].as_array().unwrap_or_else(|| panic!("no workloads: {run}"));
    let names: Vec<&str> = workloads.iter().filter_map(|w| w["workload"].as_str()).collect();
    assert_eq!(names, ["A", "B", "C", "F", "D", "E"], "the default order: {run}");
    for w in workloads {
        let name = w["workload"].as_str().unwrap_or("?");
        assert_eq!(w["errors"], 0, "{name}: failed operations: {w}");
        assert!(w["ops"].as_u64().unwrap_or(0) >= 200, "{name}: too few operations: {w}");
        let ops: Vec<&str> =
            w["per_op"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(ops, expected_ops(name), "{name}: operation types: {w}");
        let p50 = w["per_op"][ops[0]]["p50_ms"].as_f64().unwrap_or(0.0);
        let p999 = w["per_op"][ops[0]]["p999_ms"].as_f64().unwrap_or(0.0);
        assert!(p50 > 0.0 && p999 >= p50, "{name}: latencies {w}");
    }
    let e = &workloads[5];
    assert!(
        e["scanned"].as_u64().unwrap_or(0) > e["per_op"]["scan"]["count"].as_u64().unwrap_or(u64::MAX),
        "scans of 1-100 records return records: {e}"
    );
}

#[test]
fn every_workload_runs_against_a_local_weft_cluster() {
    let (ok, out, err) = weft(&[
        "bench",
        "kv",
        "--records",
        "2000",
        "--seconds",
        "1.5",
        "--clients",
        "16",
        "--partitions",
        "2",
        "--json",
    ]);
    assert!(ok, "weft bench kv failed: {err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let runs = report["runs"].as_array().unwrap_or_else(|| panic!("no runs: {report}"));
    assert_eq!(runs.len(), 1);
    assert!(runs[0]["target"].as_str().is_some_and(|t| t.starts_with("weft")), "{report}");
    check_run(&runs[0]);
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let (ok, _, err) = weft(&["bench", "kv", "--records", "0"]);
    assert!(!ok && err.contains("must be positive"), "{err}");
    let (ok, _, err) = weft(&["bench", "kv", "--svg", "x.svg"]);
    assert!(!ok && err.contains("--target both"), "{err}");
    let (ok, _, err) = weft(&["bench", "kv", "--endpoints", "127.0.0.1:1", "--seconds", "1"]);
    assert!(!ok && err.contains("cluster map"), "{err}");
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_targets_name_the_build_that_has_them() {
    let (ok, _, err) = weft(&["bench", "kv", "--target", "etcd"]);
    assert!(!ok && err.contains("--features etcd"), "{err}");
}

#[cfg(feature = "etcd")]
#[test]
fn weft_and_etcd_side_by_side_with_ratios_and_a_chart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("chart.svg");
    let svg_arg = svg.display().to_string();
    let args = ["bench", "kv", "--target", "both", "--records", "2000", "--seconds", "1.5", "--clients", "16"];
    let (ok, out, err) = weft(&[&args[..], &["--svg", &svg_arg, "--json"]].concat());
    assert!(ok, "weft bench kv --target both failed: {err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let pairing = &report["pairings"][0];
    assert_eq!(pairing["mode"], "volatile", "{report}");
    check_run(&pairing["weft"]);
    check_run(&pairing["etcd"]);
    for w in ["A", "B", "C", "D", "E", "F"] {
        let r = report["ratios"]["volatile"][w].as_f64().unwrap_or(0.0);
        let weft = pairing["weft"]["workloads"].as_array().and_then(|a| a.iter().find(|x| x["workload"] == w)).cloned();
        let etcd = pairing["etcd"]["workloads"].as_array().and_then(|a| a.iter().find(|x| x["workload"] == w)).cloned();
        let (weft, etcd) = (weft.unwrap_or_default(), etcd.unwrap_or_default());
        let expect = weft["ops_per_s"].as_f64().unwrap_or(0.0) / etcd["ops_per_s"].as_f64().unwrap_or(1.0);
        assert!((r - expect).abs() < 1e-9 * expect.max(1.0), "{w}: ratio {r}, figures say {expect}");
    }
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.contains("<svg") && chart.contains("weft") && chart.contains("etcd"), "{chart}");
}
