//! How much one caller may make the server do: token buckets for rates (sends, logins, URL
//! previews) and per-user slots for requests that last ([`slots`]).
//!
//! In memory on purpose: a restart forgiving everyone is harmless, and a lookup must cost
//! nanoseconds on the send path.

mod slots;

pub use slots::{UserSlot, UserSlots};

use std::{collections::HashMap, time::Instant};

use crate::error::{Error, Result};
use parking_lot::Mutex;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<String, Bucket>,
    /// The size at which full buckets are forgotten next. Doubling it after each sweep keeps the
    /// sweeps' cost constant per insertion, whatever callers do; the map holds at most twice
    /// the keys that used the limiter recently.
    sweep_at: usize,
}

/// Keys kept before the first sweep.
const FIRST_SWEEP: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }

    /// Takes one token for `key`, or refuses with `M_LIMIT_EXCEEDED` and when to retry.
    pub fn check(&self, key: &str) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.map.len() >= buckets.sweep_at {
            // Forget buckets that refilled: they are the same as no bucket.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.map.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
            buckets.sweep_at = (2 * buckets.map.len()).max(FIRST_SWEEP);
        }
        let bucket = buckets.map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - bucket.tokens) / self.per_second * 1000.0).ceil() as u64;
            Err(Error::limit_exceeded(wait_ms.max(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_hint() {
        let limiter = RateLimiter::new(1.0, 3);
        for _ in 0..3 {
            limiter.check("u").unwrap();
        }
        let err = limiter.check("u").unwrap_err();
        assert_eq!(err.errcode(), "M_LIMIT_EXCEEDED");
        assert!(err.body()["retry_after_ms"].as_u64().unwrap() > 0);
        // Another key has its own bucket.
        limiter.check("v").unwrap();
    }
}
