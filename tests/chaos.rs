//! `weft chaos` end to end: real `weft node` processes killed, paused, restarted and
//! partitioned (one at a time; in durable mode also the whole cluster restarted once and
//! an upgrade walk), replicas and primaries moved, nodes drained, while eight clients
//! read, write and compare-and-set; the history must be linearizable with no
//! acknowledged write lost, in durable and in volatile mode.
//!
//! The schedule's seed is 1 unless `WEFT_CHAOS_SEED` names another; a failure prints
//! the seed and the anomaly's window, and `weft chaos --seed N --mode M` replays the
//! schedule (timing still varies).

mod common;

use common::weft;
use serde_json::Value;

#[test]
fn chaos_history_is_linearizable_in_both_modes() {
    let seed = std::env::var("WEFT_CHAOS_SEED").unwrap_or_else(|_| "1".into());
    let (ok, out, err) = weft(&["chaos", "--seconds", "20", "--mode", "both", "--seed", &seed, "--json"]);
    let reports: Vec<Value> = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("chaos printed no report ({e}); ok={ok}\nstdout: {out}\nstderr: {err}"));
    assert_eq!(reports.len(), 2, "one report per mode: {out}");
    for r in &reports {
        let mode = r["mode"].as_str().unwrap_or("?");
        assert_eq!(r["linearizable"], Value::Bool(true), "seed {seed}, {mode}: not linearizable: {r}");
        assert_eq!(r["lost_acked_writes"], 0, "seed {seed}, {mode}: acknowledged writes lost: {r}");
        assert!(r["ops"].as_u64().unwrap_or(0) > 1000, "{mode}: too few operations to mean anything: {r}");
        let faults: u64 = r["faults"].as_object().map(|f| f.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
        assert!(faults >= 3, "{mode}: the schedule injected only {faults} faults: {r}");
        if mode == "durable" {
            assert_eq!(r["faults"]["cluster_restart"], 1, "durable runs restart the whole cluster once: {r}");
            assert_eq!(r["faults"]["upgrade_walk"], 1, "durable runs walk an upgrade once: {r}");
        }
    }
    assert!(ok, "weft chaos exited non-zero although both reports pass: {err}");
}
