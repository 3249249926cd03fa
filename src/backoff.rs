//! Capped exponential backoff, the one formula every retry loop uses (polls
//! after a failure, a child's retries and reconnects, report deliveries).

use std::time::Duration;

/// `base * 2^(attempt - 1)`, at most `cap`: `base` for the first retry (and for
/// attempt 0), doubling after. Never overflows, whatever `attempt`.
pub fn exponential(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (0..=7)
            .map(|n| exponential(base, n, cap).as_secs())
            .collect();
        assert_eq!(waits, [2, 2, 4, 8, 16, 32, 60, 60]);
        for n in [31, 32, 33, 1000, u32::MAX] {
            assert_eq!(exponential(base, n, cap), cap, "attempt {n}");
        }
        let huge = Duration::from_secs(u64::MAX / 2);
        assert_eq!(exponential(huge, 40, Duration::MAX), Duration::MAX);
    }
}
