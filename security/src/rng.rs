//! Randomness a simulation can seed: the draws weft makes that shape what a cluster does
//! (openraft's election timeouts through `replica/src/runtime.rs`, client session ids, node
//! incarnations). On a real node nothing seeds it and every draw comes from the operating
//! system's generator; `weft chaos --simulated` seeds the thread its simulation runs on,
//! so a seed replays. Keys, tokens and certificate serials never come from here.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// From now on, this thread's draws come from `seed`, in order.
pub fn seed_thread(seed: u64) {
    SEEDED.with(|s| *s.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// This thread's draws come from the operating system again.
pub fn unseed_thread() {
    SEEDED.with(|s| *s.borrow_mut() = None);
}

/// Whether this thread runs a seeded simulation. Work weft would hand to another thread
/// (snapshot encoding and decoding) then runs on the calling task instead, so its result
/// arrives at the same simulated moment in every run (`replica/src/transport.rs`).
pub fn seeded() -> bool {
    SEEDED.with(|s| s.borrow().is_some())
}

/// A random `u64`: the next from this thread's seed, if it has one.
pub fn random_u64() -> u64 {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => rng.random(),
        None => rand::random(),
    })
}
