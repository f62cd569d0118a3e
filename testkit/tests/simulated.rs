//! The deterministic simulation tier: `weft chaos --simulated` runs, in process, on
//! turmoil's network and clock. A seed replays exactly, and every seed of the CI sweep
//! stays linearizable with no acknowledged write lost.

use weft_testkit::simulated::{SimulatedConfig, run};

fn config(seed: u64) -> SimulatedConfig {
    SimulatedConfig { seed, seconds: 10.0, ..SimulatedConfig::default() }
}

#[test]
fn a_seed_replays_its_history_exactly() {
    let (first, h1) = run(&config(7)).expect("run");
    let (second, h2) = run(&config(7)).expect("run");
    assert!(first.ops > 100, "{first:?}");
    assert_eq!(h1, h2, "seed 7 gave two different histories");
    assert_eq!(first.history_hash, second.history_hash);
    let (other, _) = run(&config(8)).expect("run");
    assert_ne!(other.history_hash, first.history_hash, "another seed, another history");
}

/// Seeds `from..from + 25`: linearizable, nothing acknowledged lost.
fn sweep(from: u64) {
    let mut bad = Vec::new();
    for seed in from..from + 25 {
        let (r, _) = run(&config(seed)).expect("run");
        if !r.linearizable || r.lost_acked_writes > 0 {
            bad.push(format!(
                "{} (linearizable {}, lost {}): {:?}",
                r.replay, r.linearizable, r.lost_acked_writes, r.anomaly
            ));
        }
    }
    assert!(bad.is_empty(), "seeds that failed, each with the command that replays it:\n{}", bad.join("\n"));
}

#[test]
fn seeds_1_to_25_are_linearizable_and_lose_nothing() {
    sweep(1);
}

#[test]
fn seeds_26_to_50_are_linearizable_and_lose_nothing() {
    sweep(26);
}
