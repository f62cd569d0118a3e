//! weft patch (see WEFT-PATCH.md): the histogram type of [`RuntimeStats`], holding nothing
//! until a value is recorded, and recording nothing without the `runtime-stats` feature.
//! openraft's own built fifteen bucket arrays per group at start (about 9 KiB), which a
//! host of thousands of idle groups paid for statistics it never reads.
//!
//! [`RuntimeStats`]: super::RuntimeStats

use base2histogram::PercentileStats;

/// A lazily allocated [`base2histogram::Histogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram<T = ()>(Option<Box<base2histogram::Histogram<T>>>);

impl<T> Default for Histogram<T> {
    fn default() -> Self {
        Histogram(None)
    }
}

impl<T> Histogram<T> {
    /// An empty histogram (the bucket width is that of the default scale).
    pub fn new() -> Self {
        Histogram(None)
    }

    /// An empty histogram; the arguments are kept for the callers' sake.
    pub fn with_log_scale(_width: usize, _slot_limit: usize) -> Self {
        Histogram(None)
    }

    /// Records `value` once.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `value` `count` times (only with the `runtime-stats` feature).
    pub fn record_n(&mut self, value: u64, count: u64) {
        if cfg!(feature = "runtime-stats") {
            self.0.get_or_insert_with(|| Box::new(base2histogram::Histogram::new())).record_n(value, count);
        }
    }

    /// The histogram itself (an empty one if nothing was recorded).
    pub fn to_base(&self) -> base2histogram::Histogram<T>
    where T: Clone {
        match &self.0 {
            Some(h) => (**h).clone(),
            None => base2histogram::Histogram::new(),
        }
    }

    /// Percentiles of what was recorded (those of an empty histogram if nothing was).
    pub fn percentile_stats(&self) -> PercentileStats {
        match &self.0 {
            Some(h) => h.percentile_stats(),
            None => base2histogram::Histogram::<T>::new().percentile_stats(),
        }
    }
}
