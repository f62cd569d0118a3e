//! At most [`LogBudget::PER_WINDOW`] log lines about refusals per ten seconds, then one line
//! counting those left out: a flood of bad requests or handshakes cannot fill a disk with
//! logs, and an operator still sees that it happened.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A window's log allowance.
#[derive(Debug)]
pub struct LogBudget {
    /// Window start, lines logged in it, lines left out of it.
    state: Mutex<(Instant, u32, u64)>,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget { state: Mutex::new((Instant::now(), 0, 0)) }
    }
}

impl LogBudget {
    /// Lines logged per window.
    pub const PER_WINDOW: u32 = 20;
    /// A window's length.
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// Whether one more line may be logged now (`false`: it is counted as left out).
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut s = self.state.lock();
        if now.saturating_duration_since(s.0) >= Self::WINDOW {
            if s.2 > 0 {
                tracing::warn!(left_out = s.2, "refusals not logged in the last ten seconds");
            }
            *s = (now, 0, 0);
        }
        if s.1 < Self::PER_WINDOW {
            s.1 += 1;
            true
        } else {
            s.2 += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_lines_then_counts_the_rest() {
        let b = LogBudget::default();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| b.allow_at(t0)).count();
        assert_eq!(allowed, LogBudget::PER_WINDOW as usize);
        assert_eq!(b.state.lock().2, 100 - u64::from(LogBudget::PER_WINDOW));
        assert!(b.allow_at(t0 + LogBudget::WINDOW), "a new window allows again");
        assert_eq!(b.state.lock().2, 0);
    }
}
