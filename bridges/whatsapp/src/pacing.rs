//! Pacing of sends to the Cloud API's throughput ceiling.
//!
//! Meta caps each business number's throughput (80 messages per second by default, up to
//! 1,000 for upgraded numbers) and answers `130429` beyond it. Sending at the ceiling, never
//! above, keeps every message flowing instead of trading sends for refusals and back-offs.
//!
//! [`Pacer`] is a GCRA (a token bucket without the bookkeeping): each send takes the next
//! slot `interval` after the previous one, and up to `burst` slots may be taken ahead of time,
//! so a short pause is caught up without exceeding the rate over any second.

use std::time::Duration;

use tokio::time::Instant;

/// Hands out send slots at a steady rate.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// How far ahead of now slots may be taken.
    tolerance: Duration,
    /// When the next slot is due (theoretical arrival time).
    next: Instant,
}

impl Pacer {
    /// `per_second` sends a second, at most `burst` of them back to back.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            next: Instant::now(),
        }
    }

    /// Takes a slot at `now`, or tells when the next one is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let next = self.next.max(now);
        if next > now + self.tolerance {
            return Err(next - self.tolerance);
        }
        self.next = next + self.interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_slot_per_interval() {
        let mut pacer = Pacer::new(100.0, 3);
        let start = Instant::now();
        assert_eq!(pacer.take(start), Ok(()));
        assert_eq!(pacer.take(start), Ok(()));
        assert_eq!(pacer.take(start), Ok(()));
        let free_at = pacer.take(start).unwrap_err();
        assert_eq!(free_at, start + Duration::from_millis(10));
        assert_eq!(pacer.take(free_at), Ok(()));
        assert_eq!(pacer.take(free_at), Err(start + Duration::from_millis(20)));
    }

    #[test]
    fn a_second_holds_at_most_the_rate_plus_the_burst() {
        let mut pacer = Pacer::new(1000.0, 50);
        let start = Instant::now();
        let mut taken = 0;
        let mut now = start;
        while now < start + Duration::from_secs(1) {
            match pacer.take(now) {
                Ok(()) => taken += 1,
                Err(at) => now = at,
            }
        }
        assert!((1000..=1050).contains(&taken), "{taken} slots in a second");
    }
}
