//! The retry policy: the one place that decides how long to wait before trying again.
//!
//! Capped exponential backoff with full jitter (a uniform wait between zero and
//! `min(cap, base * 2^attempt)`), a `Retry-After` from the server taking precedence, and
//! a deadline the caller passes in: no wait ever ends past it.

use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;

/// How many times to try a transient failure, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry.
    pub base_delay: Duration,
    /// No backoff is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Stop: attempts are used up, or the wait would end past the deadline.
    GiveUp,
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff ceiling before retry number `retry` (0-based): `min(cap, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A full-jitter wait before retry number `retry`: uniform in `[0, ceiling]`.
    pub fn jittered(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// Decide after attempt number `attempt` (1-based) failed transiently. A server's
    /// `Retry-After` replaces the jittered backoff; the wait must end before `deadline`.
    pub fn decide(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        now: Instant,
        deadline: Instant,
        rng: &mut impl Rng,
    ) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::GiveUp;
        }
        let wait = retry_after.unwrap_or_else(|| self.jittered(attempt - 1, rng));
        match now.checked_add(wait) {
            Some(resume) if resume < deadline => Decision::RetryAfter(wait),
            _ => Decision::GiveUp,
        }
    }
}

/// Read a `Retry-After` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let ceilings: Vec<u128> = (0..6).map(|r| policy.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn retry_after_wins_and_attempts_run_out() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(
            policy.decide(1, Some(Duration::from_secs(3)), now, deadline, &mut rng),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            policy.decide(policy.max_attempts, None, now, deadline, &mut rng),
            Decision::GiveUp
        );
        assert_eq!(
            RetryPolicy::none().decide(1, None, now, deadline, &mut rng),
            Decision::GiveUp
        );
    }

    #[test]
    fn no_wait_ends_past_the_deadline() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            policy.decide(
                1,
                Some(Duration::from_secs(30)),
                now,
                now + Duration::from_secs(10),
                &mut rng
            ),
            Decision::GiveUp
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_zero_and_the_ceiling(
            seed: u64,
            retry in 0u32..40,
            base_ms in 1u64..5_000,
            cap_ms in 1u64..60_000,
        ) {
            let policy = RetryPolicy {
                max_attempts: 50,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(cap_ms),
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let wait = policy.jittered(retry, &mut rng);
            prop_assert!(wait <= policy.ceiling(retry));
            prop_assert!(policy.ceiling(retry) <= Duration::from_millis(cap_ms));
        }
    }
}
