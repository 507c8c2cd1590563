//! The `NAME` / `NAME:INDEX` form of a CSC instance in configuration.

/// Longest CSC name accepted, in bytes; the same limit as
/// `meridian_proto::topic::MAX_NAME_LEN`, so a name that passes here is
/// not rejected later by the wire protocol.
pub const MAX_CSC_NAME_LEN: usize = 64;

/// Parses a CSC instance as written in configuration: `NAME` or
/// `NAME:INDEX`.
///
/// `NAME` is 1 to [`MAX_CSC_NAME_LEN`] ASCII letters, digits or `_`;
/// `INDEX` is the SAL index, a decimal `u32`. A bare `NAME` means index 0,
/// the middleware's convention for a CSC that is not indexed.
///
/// The error is a short reason meant to be shown after the value, e.g.
/// `index "x" is not an integer from 0 to 4294967295`.
pub fn parse_csc(s: &str) -> Result<(String, u32), String> {
    let (name, index) = match s.split_once(':') {
        Some((name, index)) => (name, Some(index)),
        None => (s, None),
    };
    check_name("CSC name", name)?;
    let index = match index {
        None => 0,
        Some(index) => parse_index(index)?,
    };
    Ok((name.to_string(), index))
}

/// Checks a CSC or topic name: the character set and length the wire
/// protocol accepts. `what` starts the error message.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.len() > MAX_CSC_NAME_LEN {
        return Err(format!(
            "the {what} is {} bytes long, the limit is {MAX_CSC_NAME_LEN}",
            name.len()
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "the {what} {name:?} has characters other than ASCII letters, digits and _"
        ));
    }
    Ok(())
}

/// `u32::from_str` also takes a leading `+`; configuration takes digits only.
fn parse_index(index: &str) -> Result<u32, String> {
    let reason = || format!("index {index:?} is not an integer from 0 to {}", u32::MAX);
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(reason());
    }
    index.parse().map_err(|_| reason())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_name_and_name_index() {
        assert_eq!(parse_csc("Test:1"), Ok(("Test".to_string(), 1)));
        assert_eq!(parse_csc("MTM1M3"), Ok(("MTM1M3".to_string(), 0)));
        assert_eq!(
            parse_csc("AT_Dome:4294967295"),
            Ok(("AT_Dome".to_string(), u32::MAX))
        );
    }

    #[test]
    fn rejects_malformed_with_a_reason() {
        for bad in [
            "",
            ":1",
            "Test:",
            "Test:x",
            "Test:+1",
            "Test:-1",
            "Test:1:2",
            "Te st",
            "Test:4294967296",
            " Test",
        ] {
            let err = parse_csc(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad:?}");
        }
        assert!(parse_csc(&"a".repeat(65)).unwrap_err().contains("65 bytes"));
        assert!(parse_csc("Test:x").unwrap_err().contains("\"x\""));
    }
}
