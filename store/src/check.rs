//! Argument checks every backend makes before it sends or stores anything,
//! so the in-memory, Redis and Redis Cluster stores refuse the same calls
//! with the same messages (the conformance suite holds them to it).

use crate::contract::{Append, OnceBatch, StoreError};
use std::time::Duration;

/// The longest time to live any store sets: longer ones are cut to this,
/// which is forever in effect and keeps deadlines far from overflowing
/// (Redis refuses expiry times that overflow its millisecond clock).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Refuses entries Redis would refuse (XADD needs at least one field), before
/// anything is stored, so both stores accept the same batches.
pub(crate) fn check_batch(batch: &[Append]) -> Result<(), StoreError> {
    match batch.iter().find(|a| a.fields.is_empty()) {
        Some(a) => Err(StoreError::Refused(format!(
            "an entry for stream {:?} has no fields; a stream entry needs at least one",
            a.key
        ))),
        None => Ok(()),
    }
}

/// [`check_batch`] for every batch of an `append_once`, and their mark TTLs:
/// all checked before anything is stored.
pub(crate) fn check_once_batches(batches: &[OnceBatch]) -> Result<(), StoreError> {
    for batch in batches {
        ttl_millis("mark_ttl", batch.mark_ttl)?;
        for (_, append) in &batch.entries {
            check_batch(std::slice::from_ref(append))?;
        }
    }
    Ok(())
}

/// A time to live in whole milliseconds as both stores set it: rounded up,
/// at most [`MAX_TTL`]. Zero is refused: it would expire the key as it is
/// written, which is a misconfiguration worth hearing about (`what` names
/// the argument in the message).
pub(crate) fn ttl_millis(what: &str, ttl: Duration) -> Result<u64, StoreError> {
    if ttl.is_zero() {
        return Err(StoreError::Refused(format!(
            "{what} is zero; a time to live must be positive"
        )));
    }
    let ms = ttl.min(MAX_TTL).as_nanos().div_ceil(1_000_000);
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// [`ttl_millis`] of an optional TTL (of `hash_set` and `expire`), checked
/// before anything is sent; `None` for none.
pub(crate) fn expire_millis(ttl: Option<Duration>) -> Result<Option<u64>, StoreError> {
    ttl.map(|ttl| ttl_millis("ttl", ttl)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_milliseconds_and_zero_is_refused() {
        assert_eq!(ttl_millis("t", Duration::from_micros(1)).unwrap(), 1);
        assert_eq!(ttl_millis("t", Duration::from_micros(1500)).unwrap(), 2);
        assert_eq!(
            ttl_millis("t", Duration::MAX).unwrap(),
            MAX_TTL.as_millis() as u64
        );
        assert!(matches!(
            ttl_millis("t", Duration::ZERO),
            Err(StoreError::Refused(_))
        ));
    }
}
