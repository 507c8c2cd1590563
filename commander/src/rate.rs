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

pub use meridian_proto::throttle::{AddressLimiter, MAX_ADDRESSES};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets of every token that has made a request.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    /// Requests available now (fractional while refilling).
    available: f64,
    last: Instant,
}

impl RateLimiter {
    /// Takes one request from `token`'s bucket at `now`; if it is empty,
    /// how long until one is available.
    pub fn take(&self, token: &str, rate_per_s: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = f64::from(burst.max(1));
        let bucket = buckets.entry(token.to_string()).or_insert(Bucket {
            available: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.available = (bucket.available + elapsed * rate_per_s).min(burst);
        bucket.last = now;
        if bucket.available >= 1.0 {
            bucket.available -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.available) / rate_per_s))
        }
    }
}

/// `Retry-After` in whole seconds: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take("ops", 2.0, 3, t0).unwrap();
        }
        let wait = limiter.take("ops", 2.0, 3, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
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
        assert_eq!(retry_after_secs(wait), 100);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    }
}
