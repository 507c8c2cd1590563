//! Per-token rate limit: a token bucket per token name.
//!
//! A bucket holds up to `burst` requests and refills at `rate_per_s`; a
//! request takes one. An empty bucket answers with how long until one is
//! back, which becomes `Retry-After`. Pure apart from its lock: the caller
//! passes `now`, so tests use virtual time. Memory is bounded by the number
//! of configured tokens (unknown tokens are refused before this).
//!
//! [`AddressLimiter`] is the same bucket per client address, charged by
//! failed authentications and checked *before* a token is compared, so a
//! stranger guessing or flooding is refused cheaply. Its table holds at
//! most [`MAX_ADDRESSES`] addresses (see [`AddressLimiter`] for eviction).

use std::collections::HashMap;
use std::net::IpAddr;
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

/// Most client addresses [`AddressLimiter`] remembers: about 64 bytes
/// each, so at most about 1 MB however many addresses call.
pub const MAX_ADDRESSES: usize = 16_384;

/// Per-address buckets of failed authentications.
///
/// Eviction when [`MAX_ADDRESSES`] are held and a new address fails: every
/// bucket that has refilled to its burst is dropped first (it is the same
/// as no bucket, so nothing is forgotten); if none has, the bucket that
/// was charged longest ago is dropped (that address gets a fresh burst:
/// an attacker with more than [`MAX_ADDRESSES`] addresses can at most
/// reset the oldest of its own, never grow the table).
#[derive(Default)]
pub struct AddressLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AddressLimiter {
    /// Whether `peer` may try a token now; if not, how long until it may.
    /// Takes nothing from the bucket.
    pub fn check(&self, peer: IpAddr, rate_per_s: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(&peer) {
            None => Ok(()),
            Some(bucket) => {
                let available = bucket.refilled(rate_per_s, burst, now);
                if available >= 1.0 {
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64((1.0 - available) / rate_per_s))
                }
            }
        }
    }

    /// Charges one failed authentication to `peer` at `now`.
    pub fn fail(&self, peer: IpAddr, rate_per_s: f64, burst: u32, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&peer) && buckets.len() >= MAX_ADDRESSES {
            buckets.retain(|_, b| b.refilled(rate_per_s, burst, now) < f64::from(burst.max(1)));
            if buckets.len() >= MAX_ADDRESSES {
                let oldest = buckets.iter().min_by_key(|(_, b)| b.last).map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    buckets.remove(&oldest);
                }
            }
        }
        let full = f64::from(burst.max(1));
        let bucket = buckets.entry(peer).or_insert(Bucket {
            available: full,
            last: now,
        });
        bucket.available = (bucket.refilled(rate_per_s, burst, now) - 1.0).max(0.0);
        bucket.last = now;
    }

    /// Addresses held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Bucket {
    /// What the bucket holds at `now`.
    fn refilled(&self, rate_per_s: f64, burst: u32, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.available + elapsed * rate_per_s).min(f64::from(burst.max(1)))
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
    fn addresses_are_refused_after_their_failures_and_the_table_is_bounded() {
        let limiter = AddressLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limiter.check(a, 1.0, 3, t0).unwrap();
            limiter.fail(a, 1.0, 3, t0);
        }
        assert_eq!(retry_after_secs(limiter.check(a, 1.0, 3, t0).unwrap_err()), 1);
        limiter.check(b, 1.0, 3, t0).unwrap();
        limiter.check(a, 1.0, 3, t0 + Duration::from_secs(1)).unwrap();
        // Never more than MAX_ADDRESSES, however many fail.
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            limiter.fail(IpAddr::from(i.to_be_bytes()), 1.0, 3, t0);
        }
        assert_eq!(limiter.len(), MAX_ADDRESSES);
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
