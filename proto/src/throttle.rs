//! A bounded table of token buckets per client address, charged by failed
//! authentications: after a burst of failures an address is refused
//! *before* its token or password is compared, until its bucket refills.
//! Used by the commander (every route needing a token) and the frontend
//! (its WebSocket endpoints' tokens and the LOVE password).
//!
//! No I/O and no clock: the caller passes `now`, so tests use virtual time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: up to `burst` at once, refilled at `rate_per_s`. The
/// commander's per-token limit and [`AddressLimiter`] both count with it.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Requests available now (fractional while refilling).
    available: f64,
    last: Instant,
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
        let bucket = buckets.entry(peer).or_insert_with(|| Bucket::full(burst, now));
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
    /// A bucket holding its whole `burst` at `now`.
    pub fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            available: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// What the bucket holds at `now`.
    pub fn refilled(&self, rate_per_s: f64, burst: u32, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.available + elapsed * rate_per_s).min(f64::from(burst.max(1)))
    }

    /// Takes one at `now`; if the bucket is empty, how long until one is back.
    pub fn take(&mut self, rate_per_s: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        self.available = self.refilled(rate_per_s, burst, now);
        self.last = now;
        if self.available >= 1.0 {
            self.available -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.available) / rate_per_s))
        }
    }
}

/// `Retry-After` in whole seconds for a wait: rounded up, at least 1.
pub fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(whole_seconds(limiter.check(a, 1.0, 3, t0).unwrap_err()), 1);
        limiter.check(b, 1.0, 3, t0).unwrap();
        limiter.check(a, 1.0, 3, t0 + Duration::from_secs(1)).unwrap();
        // Never more than MAX_ADDRESSES, however many fail.
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            limiter.fail(IpAddr::from(i.to_be_bytes()), 1.0, 3, t0);
        }
        assert_eq!(limiter.len(), MAX_ADDRESSES);
    }
}
