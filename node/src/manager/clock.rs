//! The manager's clock: tokio's, as a std `Instant`.
//!
//! The pure decision code in `weft-cluster-manager` takes times as std `Instant` values;
//! the manager reads them from tokio's clock, so that a paused or simulated runtime
//! (`weft chaos --simulated`) drives grace periods, stall counts and deadlines with its own
//! time, and a real runtime with real time. Nothing in the manager reads the std clock.

use std::time::Instant;

/// Now, on the runtime's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
