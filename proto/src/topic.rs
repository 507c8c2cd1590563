//! Topic naming, in one place.
//!
//! A topic is identified by the CSC that publishes it, the CSC's SAL index,
//! its category (telemetry or event) and its name. Their store keys are
//! spelled in [`crate::keys`].
//!
//! CSCs in [`AGGREGATED_CSCS`] (Scripts: a new SAL index for every run) are
//! the exception to one stream per topic and instance: all their instances
//! share one stream per topic, keyed without the index, each entry naming
//! its instance, plus one small state hash per instance that expires after
//! the instance ends. A night of Scripts then adds entries, not keys.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest CSC or topic name accepted; the observatory's names are far shorter.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty: give the CSC or topic name.
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{what} is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong { what: &'static str, len: usize },
    /// Only ASCII letters, digits and `_` are allowed, as in the XML interface definitions.
    #[error("{what} {name:?} has a character other than A-Z, a-z, 0-9 and _")]
    BadChar { what: &'static str, name: String },
    /// `CSC:index` could not be parsed.
    #[error("{0:?} is not of the form CSC:index (e.g. Test:1)")]
    BadCscId(String),
}

fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            len: name.len(),
        });
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(NameError::BadChar {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The name of a Commandable SAL Component, e.g. `MTM1M3`, `ScriptQueue`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Csc(String);

impl Csc {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_name("CSC name", &name)?;
        Ok(Csc(name))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Csc {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Csc::new(s)
    }
}
impl From<Csc> for String {
    fn from(c: Csc) -> String {
        c.0
    }
}
impl fmt::Display for Csc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SAL index of a CSC instance; 0 for CSCs that are not indexed.
pub type SalIndex = u32;

/// One running CSC instance: `Test:1`, `MTM1M3:0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CscId {
    pub csc: Csc,
    pub salindex: SalIndex,
}

impl CscId {
    pub fn new(csc: &str, salindex: SalIndex) -> Result<Self, NameError> {
        Ok(CscId {
            csc: Csc::new(csc)?,
            salindex,
        })
    }
    /// Whether all instances of this CSC share one set of streams.
    pub fn is_aggregated(&self) -> bool {
        AGGREGATED_CSCS.contains(&self.csc.as_str())
    }
}

/// CSCs whose instances share one set of streams (see the module doc).
pub const AGGREGATED_CSCS: &[&str] = &["Script"];

impl fmt::Display for CscId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.csc, self.salindex)
    }
}

impl FromStr for CscId {
    type Err = NameError;
    /// `Test:1`, or `Test` alone for index 0.
    fn from_str(s: &str) -> Result<Self, NameError> {
        match s.split_once(':') {
            None => CscId::new(s, 0),
            Some((name, idx)) => {
                let salindex = idx.parse().map_err(|_| NameError::BadCscId(s.to_string()))?;
                CscId::new(name, salindex)
            }
        }
    }
}

/// Telemetry is sampled and may be conflated; events are kept one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Telemetry,
    Event,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Telemetry => "telemetry",
            Category::Event => "event",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "telemetry" => Ok(Category::Telemetry),
            "event" => Ok(Category::Event),
            other => Err(format!(
                "category {other:?} is neither \"telemetry\" nor \"event\""
            )),
        }
    }
}

/// A topic of one CSC instance: what a browser subscribes to and what one store stream holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicId {
    pub csc: CscId,
    pub category: Category,
    pub topic: String,
}

impl TopicId {
    pub fn new(csc: CscId, category: Category, topic: &str) -> Result<Self, NameError> {
        check_name("topic name", topic)?;
        Ok(TopicId {
            csc,
            category,
            topic: topic.to_string(),
        })
    }

    /// This topic's field in the [`crate::keys::CATALOG`] hash: `CSC:idx/category/topic`,
    /// with `*` for the index of an aggregated CSC (every instance).
    pub fn catalog_field(&self) -> String {
        if self.csc.is_aggregated() {
            format!("{}:*/{}/{}", self.csc.csc, self.category, self.topic)
        } else {
            self.to_string()
        }
    }

    /// Parses a [`TopicId::catalog_field`]; `None` for the index of an
    /// aggregated CSC's entry (every instance).
    pub fn from_catalog_field(field: &str) -> Option<(Csc, Option<SalIndex>, Category, String)> {
        let mut parts = field.splitn(3, '/');
        let (csc, category, topic) = (parts.next()?, parts.next()?, parts.next()?);
        let (name, index) = csc.split_once(':')?;
        let index = if index == "*" {
            None
        } else {
            Some(index.parse().ok()?)
        };
        Some((
            Csc::new(name).ok()?,
            index,
            category.parse().ok()?,
            topic.to_string(),
        ))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.csc, self.category, self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_errors_say_why() {
        assert!(matches!(Csc::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            Csc::new("a".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        let err = Csc::new("ATDome}x").unwrap_err();
        assert!(err.to_string().contains("ATDome}x"), "{err}");
        assert!("Test:x".parse::<CscId>().is_err());
        assert_eq!("Test".parse::<CscId>().unwrap().salindex, 0);
    }
}
