//! Latency histograms: HdrHistogram from 1 µs to 60 s at 3 significant
//! digits (as CometD's own load client), mergeable across processes.
//!
//! Workers send theirs to the coordinator as `(value, count)` pairs of the
//! non-empty buckets: compact for latency data, and plain JSON.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// A histogram on the wire between processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyBuckets(pub Vec<(u64, u64)>);

/// The quantiles a report quotes, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Latencies {
            histogram: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
                .expect("static bounds are valid"),
        }
    }

    /// Records one latency; values outside the range are clamped, never lost.
    pub fn record_us(&mut self, micros: u64) {
        self.histogram
            .saturating_record(micros.clamp(LOWEST_US, HIGHEST_US));
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share bounds");
    }

    pub fn to_buckets(&self) -> LatencyBuckets {
        LatencyBuckets(
            self.histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn from_buckets(buckets: &LatencyBuckets) -> Self {
        let mut latencies = Latencies::new();
        for &(value, count) in &buckets.0 {
            let _ = latencies
                .histogram
                .record_n(value.clamp(LOWEST_US, HIGHEST_US), count);
        }
        latencies
    }

    pub fn quantiles_ms(&self) -> Quantiles {
        let q = |quantile: f64| self.histogram.value_at_quantile(quantile) as f64 / 1000.0;
        Quantiles {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: self.histogram.max() as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut all = Latencies::new();
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for v in 1..=10_000u64 {
            all.record_us(v * 7);
            if v % 3 == 0 {
                a.record_us(v * 7);
            } else {
                b.record_us(v * 7);
            }
        }
        // Through the wire format, as between processes.
        let mut merged = Latencies::from_buckets(&a.to_buckets());
        merged.merge(&Latencies::from_buckets(&b.to_buckets()));
        assert_eq!(merged.count(), 10_000);
        assert_eq!(merged.quantiles_ms(), all.quantiles_ms());
    }

    #[test]
    fn quantiles_in_milliseconds() {
        let mut l = Latencies::new();
        for v in 1..=1000u64 {
            l.record_us(v * 1000); // 1..1000 ms
        }
        let q = l.quantiles_ms();
        assert!((q.p50 - 500.0).abs() < 1.0, "{q:?}");
        assert!((q.p99 - 990.0).abs() < 1.5, "{q:?}");
        assert!((q.max - 1000.0).abs() < 1.0, "{q:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record_us(0);
        l.record_us(u64::MAX);
        assert_eq!(l.count(), 2);
    }
}
