//! What Meridian stores under its keys ([`crate::keys`]): the fields of a
//! topic stream's entry ([`StoredSample`]), of an instance state hash
//! ([`InstanceState`]) and of an audit entry ([`AUDIT_ENTRY`]), written and
//! read only through here, as the field/value pairs the store takes.
//!
//! Every writer of a topic stream (the ingest, the compatibility endpoint's
//! producers, the ScriptQueue deriver) writes a [`StoredSample`], and every
//! reader (frontends, the deriver) reads one, so the two cannot drift. The
//! field names are what deployed stores hold: changing one orphans data.

use crate::stream_id::StreamId;
use crate::topic::SalIndex;

/// Field of the producer's sequence number (only Meridian's ingest writes it).
pub const SEQ: &str = "seq";
/// Field of the time the CSC published the sample, Unix seconds.
pub const SOURCE_TS: &str = "src";
/// Field of the time the writer received it, Unix seconds.
pub const INGEST_TS: &str = "ing";
/// Field of the instance's SAL index, in the stream of an aggregated CSC.
pub const SALINDEX: &str = "salindex";
/// Field of the last input a derived entry applied (the deriver's own entries).
pub const UPTO: &str = "upto";
/// Field of the sample's values: a JSON object.
pub const FIELDS: &str = "f";

/// Field of an audit stream entry ([`crate::keys::AUDIT`]): the entry as JSON.
pub const AUDIT_ENTRY: &str = "entry";

/// Why stored fields are not a [`StoredSample`] (or an [`InstanceState`]): an
/// entry no Meridian writer wrote. Readers skip it and say which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredError {
    /// A field every writer writes is absent.
    #[error("stored entry has no {field:?} field")]
    Missing { field: &'static str },
    /// A field does not parse as what it holds.
    #[error("stored entry's {field:?} field is {value:?}, not {expected}")]
    Malformed {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// One sample as a topic stream entry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    /// The producer's sequence number ([`SEQ`]); `None` for entries of the
    /// replaced system's producers and of the deriver.
    pub seq: Option<u64>,
    /// When the CSC published it, Unix seconds ([`SOURCE_TS`]).
    pub source_ts: f64,
    /// When the writer received it, Unix seconds ([`INGEST_TS`]).
    pub ingest_ts: f64,
    /// The publishing instance ([`SALINDEX`]), in the one stream of every
    /// instance of an aggregated CSC; `None` elsewhere.
    pub salindex: Option<SalIndex>,
    /// The last input a derived entry applied ([`UPTO`]); `None` but for the deriver's entries.
    pub upto: Option<StreamId>,
    /// The values, a JSON object as text ([`FIELDS`]); passed on as it is, not checked here.
    pub fields: String,
}

impl StoredSample {
    /// The entry's field/value pairs, in the order every writer has always
    /// used: `seq`, `src`, `ing`, `salindex`, `upto`, `f` (absent ones left out).
    pub fn into_fields(self) -> Vec<(String, String)> {
        let ingest_ts = self.ingest_ts.to_string();
        self.into_fields_stamped(&ingest_ts)
    }

    /// [`StoredSample::into_fields`] with `ingest_ts` already formatted
    /// (`self.ingest_ts.to_string()`): the ingest stamps a whole batch with
    /// one time, and formatting it once per batch rather than per sample
    /// saves a float formatting (a few hundred ns) on its hot path.
    pub fn into_fields_stamped(self, ingest_ts: &str) -> Vec<(String, String)> {
        debug_assert_eq!(ingest_ts, self.ingest_ts.to_string());
        let mut out = Vec::with_capacity(6);
        if let Some(seq) = self.seq {
            out.push((SEQ.to_string(), seq.to_string()));
        }
        out.push((SOURCE_TS.to_string(), self.source_ts.to_string()));
        out.push((INGEST_TS.to_string(), ingest_ts.to_string()));
        if let Some(index) = self.salindex {
            out.push((SALINDEX.to_string(), index.to_string()));
        }
        if let Some(upto) = self.upto {
            out.push((UPTO.to_string(), upto.to_string()));
        }
        out.push((FIELDS.to_string(), self.fields));
        out
    }

    /// Reads an entry's field/value pairs; `src`, `ing` and `f` are
    /// required, the others optional, and any present must parse. Unknown
    /// fields are ignored.
    pub fn from_fields(pairs: &[(String, String)]) -> Result<StoredSample, StoredError> {
        let get = |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let required = |name| get(name).ok_or(StoredError::Missing { field: name });
        Ok(StoredSample {
            seq: get(SEQ)
                .map(|v| parse(SEQ, v, "an unsigned integer"))
                .transpose()?,
            source_ts: parse(SOURCE_TS, required(SOURCE_TS)?, "Unix seconds")?,
            ingest_ts: parse(INGEST_TS, required(INGEST_TS)?, "Unix seconds")?,
            salindex: get(SALINDEX)
                .map(|v| parse(SALINDEX, v, "a SAL index"))
                .transpose()?,
            upto: get(UPTO).map(|v| parse(UPTO, v, "a stream id")).transpose()?,
            fields: required(FIELDS)?.to_string(),
        })
    }
}

/// The state hash of one instance of an aggregated CSC ([`crate::keys::instance`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceState {
    /// When its last `state` event was received, Unix seconds (`updated`):
    /// the sweeper removes state left without an end for too long.
    pub updated: f64,
    /// The `state` field of that event (`state`), if it was an integer.
    pub state: Option<i64>,
}

/// Field of [`InstanceState::updated`].
pub const INSTANCE_UPDATED: &str = "updated";
/// Field of [`InstanceState::state`].
pub const INSTANCE_STATE: &str = "state";

impl InstanceState {
    /// The hash's field/value pairs: `updated`, then `state` if known.
    pub fn into_fields(self) -> Vec<(String, String)> {
        let mut out = vec![(INSTANCE_UPDATED.to_string(), self.updated.to_string())];
        if let Some(state) = self.state {
            out.push((INSTANCE_STATE.to_string(), state.to_string()));
        }
        out
    }

    /// Reads the hash's field/value pairs; `updated` is required.
    pub fn from_fields(pairs: &[(String, String)]) -> Result<InstanceState, StoredError> {
        let get = |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let updated = get(INSTANCE_UPDATED).ok_or(StoredError::Missing {
            field: INSTANCE_UPDATED,
        })?;
        Ok(InstanceState {
            updated: parse(INSTANCE_UPDATED, updated, "Unix seconds")?,
            state: get(INSTANCE_STATE)
                .map(|v| parse(INSTANCE_STATE, v, "an integer"))
                .transpose()?,
        })
    }
}

fn parse<T: std::str::FromStr>(
    field: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<T, StoredError> {
    value.parse().map_err(|_| StoredError::Malformed {
        field,
        value: value.chars().take(64).collect(),
        expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sample() -> StoredSample {
        StoredSample {
            seq: Some(42),
            source_ts: 1764638000.5,
            ingest_ts: 1764638000.625,
            salindex: Some(100_001),
            upto: Some(StreamId::new(1764638000123, 4)),
            fields: r#"{"state":3}"#.into(),
        }
    }

    #[test]
    fn a_sample_round_trips_through_its_fields() {
        let full = sample();
        assert_eq!(
            StoredSample::from_fields(&full.clone().into_fields()),
            Ok(full.clone())
        );
        let stamped = full.clone().into_fields_stamped(&full.ingest_ts.to_string());
        assert_eq!(stamped, full.clone().into_fields());
        let bare = StoredSample {
            seq: None,
            salindex: None,
            upto: None,
            ..sample()
        };
        assert_eq!(StoredSample::from_fields(&bare.clone().into_fields()), Ok(bare));
    }

    /// The field names and order deployed stores hold.
    #[test]
    fn fields_keep_their_stored_names_and_order() {
        assert_eq!(
            sample().into_fields(),
            pairs(&[
                ("seq", "42"),
                ("src", "1764638000.5"),
                ("ing", "1764638000.625"),
                ("salindex", "100001"),
                ("upto", "1764638000123-4"),
                ("f", r#"{"state":3}"#),
            ])
        );
        assert_eq!(AUDIT_ENTRY, "entry");
        let state = InstanceState {
            updated: 12.5,
            state: Some(8),
        };
        assert_eq!(
            state.clone().into_fields(),
            pairs(&[("updated", "12.5"), ("state", "8")])
        );
        assert_eq!(
            InstanceState::from_fields(&state.clone().into_fields()),
            Ok(state)
        );
    }

    #[test]
    fn a_missing_or_malformed_field_is_named() {
        let missing = |name: &str| {
            let p: Vec<_> = sample()
                .into_fields()
                .into_iter()
                .filter(|(k, _)| k != name)
                .collect();
            StoredSample::from_fields(&p).unwrap_err()
        };
        for field in [SOURCE_TS, INGEST_TS, FIELDS] {
            assert_eq!(missing(field), StoredError::Missing { field });
            assert!(missing(field).to_string().contains(field));
        }
        // The optional fields may be absent.
        let bare: Vec<_> = sample()
            .into_fields()
            .into_iter()
            .filter(|(k, _)| ![SEQ, SALINDEX, UPTO].contains(&k.as_str()))
            .collect();
        let read = StoredSample::from_fields(&bare).unwrap();
        assert_eq!((read.seq, read.salindex, read.upto), (None, None, None));
        let bad = |name: &str, value: &str| {
            let p: Vec<_> = sample()
                .into_fields()
                .into_iter()
                .map(|(k, v)| if k == name { (k, value.to_string()) } else { (k, v) })
                .collect();
            StoredSample::from_fields(&p).unwrap_err()
        };
        for field in [SEQ, SOURCE_TS, INGEST_TS, SALINDEX, UPTO] {
            let err = bad(field, "x");
            assert!(
                matches!(err, StoredError::Malformed { field: f, .. } if f == field),
                "{err}"
            );
            assert!(err.to_string().contains(&format!("{field:?}")), "{err}");
        }
        assert_eq!(
            InstanceState::from_fields(&pairs(&[("state", "3")])),
            Err(StoredError::Missing {
                field: INSTANCE_UPDATED
            })
        );
        assert!(matches!(
            InstanceState::from_fields(&pairs(&[("updated", "soon")])),
            Err(StoredError::Malformed { field: "updated", .. })
        ));
    }
}
