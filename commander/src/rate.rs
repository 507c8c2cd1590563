//! Per-token rate limit: a token bucket per token name.
//!
//! A bucket holds up to `burst` requests and refills at `rate_per_s`; a
//! request takes one. An empty bucket answers with how long until one is
//! back, which becomes `Retry-After`. Pure apart from its lock: the caller
//! passes `now`, so tests use virtual time. Memory is bounded by the number
//! of configured tokens (unknown tokens are refused before this).
//!
//! [`AddressLimiter`] (from `meridian_proto::throttle`, shared with the
//! frontend's WebSocket endpoints) is a bucket per client address, charged
//! by failed authentications and checked *before* a token is compared.

use meridian_proto::throttle::Bucket;
pub use meridian_proto::throttle::{AddressLimiter, MAX_ADDRESSES};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets of every token that has made a request.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one request from `token`'s bucket at `now`; if it is empty,
    /// how long until one is available.
    pub fn take(&self, token: &str, rate_per_s: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(token.to_string())
            .or_insert_with(|| Bucket::full(burst, now));
        bucket.take(rate_per_s, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::throttle::whole_seconds;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take("ops", 2.0, 3, t0).unwrap();
        }
        let wait = limiter.take("ops", 2.0, 3, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(whole_seconds(wait), 1);
        // Another token has its own bucket.
        limiter.take("dome", 2.0, 3, t0).unwrap();
        // Half a second later one request is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        limiter.take("ops", 2.0, 3, t1).unwrap();
        assert!(limiter.take("ops", 2.0, 3, t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.take("ops", 2.0, 3, t2).unwrap();
        }
        assert!(limiter.take("ops", 2.0, 3, t2).is_err());
    }

    #[test]
    fn slow_rates_give_long_retry_after() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.take("slow", 0.01, 1, t0).unwrap();
        let wait = limiter.take("slow", 0.01, 1, t0).unwrap_err();
        assert_eq!(whole_seconds(wait), 100);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
    }
}
