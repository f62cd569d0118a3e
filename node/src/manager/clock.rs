//! The manager's clock: tokio's, as a std `Instant`.
//!
//! The pure decision code in `weft-cluster-manager` takes times as std `Instant` values;
//! the manager reads them from tokio's clock, so that a paused or simulated runtime
//! (`weft chaos --simulated`) drives grace periods, stall counts and deadlines with its own
//! time, and a real runtime with real time. The manager reads the std clock once, as the
//! anchor of [`unix_ms`].

use std::time::Instant;

/// Now, on the runtime's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Milliseconds since the Unix epoch, for times kept in the map for people and tools to
/// read (an upgrade walk's start and end): the std wall clock read once, then advanced by
/// the runtime's clock, so that durations between two readings are the runtime's (a
/// simulated walk's restart time is simulated time) and the manager reads the std clock
/// only that once.
pub fn unix_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<(u64, Instant)> = std::sync::OnceLock::new();
    let (wall, at) = *ANCHOR.get_or_init(|| {
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        (wall, now())
    });
    wall.saturating_add(now().saturating_duration_since(at).as_millis() as u64)
}
