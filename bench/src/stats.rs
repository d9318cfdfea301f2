//! Latency percentiles (HdrHistogram, microseconds) and error tallies, both mergeable across
//! tasks so each task records without sharing a lock.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies from 1 µs to 10 min at 3 significant digits.
pub struct Latency(Histogram<u64>);

/// What a JSON report shows of a latency distribution.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, elapsed: Duration) {
        // Out-of-range values are clamped rather than dropped so a stall still shows as a max.
        self.0.saturating_record(elapsed.as_micros().max(1) as u64);
    }

    pub fn merge(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("histograms share their bounds");
    }

    pub fn summary(&self) -> Summary {
        let h = &self.0;
        Summary {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

impl Summary {
    /// `p50 1.23 ms, p99 4.56 ms, max 7.89 ms` for the human line.
    pub fn brief(&self) -> String {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Counts by kind: HTTP statuses, connection errors, close codes, error frames.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_default() += 1;
    }

    pub fn add_n(&mut self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            *self.0.entry(kind.into()).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        for (kind, n) in &other.0 {
            self.add_n(kind.clone(), *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `503×3, connect_refused×1` for the human line.
    pub fn brief(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, n)| format!("{k}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rounds a rate for the report: two decimals are plenty.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
