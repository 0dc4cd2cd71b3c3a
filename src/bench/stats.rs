//! Latency statistics.
//!
//! Scenarios record raw samples as `u64` microseconds into plain vectors while
//! they run (cheap, no locking, no histogram buckets to tune) and only compute
//! percentiles once the measurement is over, so the bookkeeping never competes
//! with the requests being measured.

use serde_json::{Value, json};
use std::time::Duration;

/// Converts a duration to whole microseconds, saturating instead of wrapping.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of an ascending slice, `p` in `0.0..=100.0`.
///
/// Nearest-rank always returns an observed sample (never an interpolation), so
/// `p100` is the maximum and `p50` of `[1, 2]` is `1`. Returns `None` on an
/// empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // rank is 1-based: ceil(p/100 * n), at least 1.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx])
}

/// Summary of a set of microsecond samples, reported in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub count: usize,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl Summary {
    /// Sorts `samples` in place and summarises them. An empty input yields a
    /// summary with `count == 0` and all values zero.
    pub fn from_samples(samples: &mut [u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        let pct = |p| percentile(samples, p).unwrap_or(0);
        Summary {
            count: samples.len(),
            min_us: samples[0],
            p50_us: pct(50.0),
            p90_us: pct(90.0),
            p99_us: pct(99.0),
            max_us: samples[samples.len() - 1],
            mean_us: (sum / samples.len() as u128) as u64,
        }
    }

    /// One-line human form: `p50 1.23  p90 4.56  p99 7.89  max 10.11 ms`.
    pub fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".to_string();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  max {} ms  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.count
        )
    }

    /// JSON form with millisecond floats, for `--json`.
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "min_ms": ms_f(self.min_us),
            "p50_ms": ms_f(self.p50_us),
            "p90_ms": ms_f(self.p90_us),
            "p99_ms": ms_f(self.p99_us),
            "max_ms": ms_f(self.max_us),
            "mean_ms": ms_f(self.mean_us),
        })
    }
}

/// Microseconds as fractional milliseconds.
pub fn ms_f(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Microseconds as a short human millisecond string (3 significant-ish digits).
pub fn ms(us: u64) -> String {
    let v = ms_f(us);
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_summarises() {
        let mut v = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        let s = Summary::from_samples(&mut v);
        assert_eq!(s.count, 5);
        assert_eq!(s.min_us, 1_000);
        assert_eq!(s.p50_us, 3_000);
        assert_eq!(s.p99_us, 5_000);
        assert_eq!(s.max_us, 5_000);
        assert_eq!(s.mean_us, 3_000);
        assert_eq!(v, vec![1_000, 2_000, 3_000, 4_000, 5_000]);
        assert_eq!(s.to_json()["p50_ms"], json!(3.0));
    }

    #[test]
    fn empty_summary() {
        let s = Summary::from_samples(&mut []);
        assert_eq!(s.count, 0);
        assert_eq!(s.human(), "no samples");
    }

    #[test]
    fn ms_formatting() {
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(ms(12_345), "12.3");
        assert_eq!(ms(123_456), "123");
        assert_eq!(micros(Duration::from_millis(3)), 3_000);
    }
}
