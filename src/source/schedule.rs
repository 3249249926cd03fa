//! When to poll next: the interval with jitter, and capped exponential backoff
//! after failures. Pure, so it is tested without clocks.

use std::time::Duration;

/// Jitter spreads polls of many daemons over ±10% of the interval.
const JITTER: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Duration,
    /// First retry delay after a failure; doubles with each consecutive failure.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    failures: u32,
}

impl Schedule {
    pub fn new(interval: Duration) -> Self {
        Schedule {
            interval,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next poll, after one that succeeded or not. `random`
    /// is uniform in [0, 1).
    pub fn next_delay(&mut self, succeeded: bool, random: f64) -> Duration {
        let base = if succeeded {
            self.failures = 0;
            self.interval
        } else {
            self.failures = self.failures.saturating_add(1);
            crate::backoff::exponential(self.backoff_base, self.failures, self.backoff_cap)
        };
        base.mul_f64(1.0 + JITTER * (2.0 * random - 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_waits_the_jittered_interval() {
        let mut s = Schedule::new(Duration::from_secs(30));
        assert_eq!(s.next_delay(true, 0.5), Duration::from_secs(30));
        assert_eq!(s.next_delay(true, 0.0), Duration::from_secs(27));
        assert!(s.next_delay(true, 0.999) < Duration::from_secs(33));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_reset() {
        let mut s = Schedule::new(Duration::from_secs(30));
        let delays: Vec<u64> = (0..12)
            .map(|_| s.next_delay(false, 0.5).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(s.failures(), 12);
        assert_eq!(s.next_delay(true, 0.5), Duration::from_secs(30));
        assert_eq!(s.failures(), 0);
        assert_eq!(s.next_delay(false, 0.5), Duration::from_secs(1));
    }
}
