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
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or refuses with `M_LIMIT_EXCEEDED` and when to retry.
    pub fn check(&self, key: &str) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget idle, full buckets so the map stays bounded.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
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
