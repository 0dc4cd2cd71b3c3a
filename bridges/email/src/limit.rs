//! The per-sender limit of the SMTP listener: a token bucket per sender address.
//!
//! A sender over it gets `450` at `MAIL FROM`: a real MTA keeps the mail and retries later, so
//! nothing a person wrote is lost, while a script that floods the desk (or a loop with another
//! auto-responder) is slowed to the hourly rate. Buckets live in memory; a restart forgives.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Buckets kept at most; beyond it the fullest (least recently limited) are forgotten, so a
/// flood of forged senders cannot grow the map without bound.
const MAX_BUCKETS: usize = 100_000;

pub struct SenderLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl SenderLimiter {
    pub fn new(per_hour: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_hour) / 3600.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one mail from `sender`'s bucket; false when it is empty.
    pub fn allow(&self, sender: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS {
            let per_second = self.per_second;
            let burst = self.burst;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets
            .entry(sender.to_ascii_lowercase())
            .or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_gets_its_burst_then_waits_others_do_not() {
        let limiter = SenderLimiter::new(60, 3);
        assert!((0..3).all(|_| limiter.allow("flood@example.org")));
        assert!(!limiter.allow("flood@example.org"));
        assert!(!limiter.allow("FLOOD@example.org"));
        assert!(limiter.allow("ana@example.org"));
    }
}
