//! Who is calling, and whether they may send this command.
//!
//! A caller presents `Authorization: Bearer <token>` (or the replaced
//! system's `Authorization: Token <token>`). Each token of
//! `commander.tokens` has a name, which is what the audit log and the logs
//! record, and scopes: the CSC instances and commands it may send. A token
//! with no CSCs is read-only. Messages name the token by its name and never
//! echo what was sent.

use crate::error::RequestError;
use axum::http::{header, HeaderMap};
use meridian_config::commander::{CommanderConfig, CscPattern};
use meridian_proto::CscId;
use std::sync::Arc;

/// A known token's holder and what it may do.
#[derive(Debug)]
pub struct Caller {
    /// `commander.tokens[].name`.
    pub name: String,
    cscs: Vec<CscPattern>,
    /// Command names, or `"*"`.
    commands: Vec<String>,
    /// Sustained requests per second and burst of this token's bucket.
    pub rate_per_s: f64,
    pub burst: u32,
}

impl Caller {
    /// Whether this caller may send `command` to `csc`; a 403 saying which
    /// CSC or command is not allowed otherwise.
    pub fn authorize(&self, csc: &CscId, command: &str) -> Result<(), RequestError> {
        if self.cscs.is_empty() {
            return Err(RequestError::Forbidden(format!(
                "token {:?} is read-only: it may not send commands",
                self.name
            )));
        }
        let (name, index) = (csc.csc.as_str(), csc.salindex);
        if !self.cscs.iter().any(|p| p.matches(name, index)) {
            return Err(RequestError::Forbidden(format!(
                "token {:?} may not command {csc}",
                self.name
            )));
        }
        if !self.commands.iter().any(|c| c == "*" || c == command) {
            return Err(RequestError::Forbidden(format!(
                "token {:?} may not send {command} to {csc}",
                self.name
            )));
        }
        Ok(())
    }
}

/// The tokens of `commander.tokens`.
pub struct Tokens {
    entries: Vec<(Vec<u8>, Arc<Caller>)>,
}

impl Tokens {
    /// From a validated configuration (a pattern that does not parse,
    /// impossible after validation, matches nothing).
    pub fn from_config(config: &CommanderConfig) -> Tokens {
        let entries = config
            .tokens
            .iter()
            .map(|t| {
                let caller = Caller {
                    name: t.name.clone(),
                    cscs: t.cscs.iter().filter_map(|c| CscPattern::parse(c).ok()).collect(),
                    commands: t.commands.clone(),
                    rate_per_s: t.rate_limit_per_s.unwrap_or(config.rate_limit_per_s),
                    burst: t.rate_limit_burst.unwrap_or(config.rate_limit_burst),
                };
                (t.token.as_bytes().to_vec(), Arc::new(caller))
            })
            .collect();
        Tokens { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller the `Authorization` header identifies, or a 401 saying
    /// what is wrong with it (never echoing it).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, RequestError> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            RequestError::Unauthenticated(
                "no Authorization header: send `Authorization: Bearer <token>`".into(),
            )
        })?;
        let malformed = || {
            RequestError::Unauthenticated(
                "the Authorization header must be `Bearer <token>` or `Token <token>`".into(),
            )
        };
        let value = value.to_str().map_err(|_| malformed())?;
        let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
        let token = token.trim();
        if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            || token.is_empty()
        {
            return Err(malformed());
        }
        // Compare with every token, in time independent of where they differ.
        let mut found = None;
        for (secret, caller) in &self.entries {
            if constant_time_eq(secret, token.as_bytes()) {
                found = Some(caller.clone());
            }
        }
        found.ok_or_else(|| RequestError::Unauthenticated("unknown token".into()))
    }
}

/// Why `headers` failed [`Tokens::authenticate`] (without comparing
/// anything): for counting refusals.
pub fn refusal_of(headers: &HeaderMap) -> crate::refusal::Refusal {
    use crate::refusal::Refusal;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Refusal::NoToken;
    };
    let well_formed = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        ((scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            && !token.trim().is_empty())
        .then_some(())
    });
    match well_formed {
        Some(()) => Refusal::UnknownToken,
        None => Refusal::MalformedToken,
    }
}

/// Equality whose time depends on the lengths only, not on the first
/// differing byte, so a token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> Tokens {
        let config: meridian_config::Config = meridian_config::Config::from_toml_str(
            r#"
            [commander]
            tokens = [
              { name = "ops", token = "t-ops", cscs = ["*"] },
              { name = "dome", token = "t-dome", cscs = ["ATDome"], commands = ["moveAzimuth"] },
              { name = "one", token = "t-one", cscs = ["Test:2"] },
              { name = "viewer", token = "t-view" },
            ]
            "#,
        )
        .unwrap();
        Tokens::from_config(&config.commander)
    }

    fn auth(value: Option<&str>) -> Result<Arc<Caller>, RequestError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        tokens().authenticate(&headers)
    }

    #[test]
    fn bearer_and_token_schemes_are_accepted_and_errors_never_echo() {
        assert_eq!(auth(Some("Bearer t-ops")).unwrap().name, "ops");
        assert_eq!(auth(Some("Token t-dome")).unwrap().name, "dome");
        assert_eq!(auth(Some("bearer  t-ops ")).unwrap().name, "ops");
        for bad in [
            None,
            Some("t-ops"),
            Some("Basic t-ops"),
            Some("Bearer "),
            Some("Bearer t-opsX"),
        ] {
            let err = auth(bad).unwrap_err();
            assert_eq!(err.status(), 401, "{bad:?}");
            assert!(!err.to_string().contains("t-ops"), "{err}");
        }
    }

    #[test]
    fn scopes_name_what_is_not_allowed() {
        let csc = |s: &str| s.parse::<CscId>().unwrap();
        let ops = auth(Some("Bearer t-ops")).unwrap();
        ops.authorize(&csc("MTM1M3:0"), "enable").unwrap();
        let dome = auth(Some("Bearer t-dome")).unwrap();
        dome.authorize(&csc("ATDome:3"), "moveAzimuth").unwrap();
        let err = dome.authorize(&csc("MTM1M3:0"), "moveAzimuth").unwrap_err();
        assert_eq!(err.to_string(), "token \"dome\" may not command MTM1M3:0");
        let err = dome.authorize(&csc("ATDome:0"), "enable").unwrap_err();
        assert_eq!(err.to_string(), "token \"dome\" may not send enable to ATDome:0");
        let one = auth(Some("Bearer t-one")).unwrap();
        one.authorize(&csc("Test:2"), "enable").unwrap();
        assert_eq!(one.authorize(&csc("Test:1"), "enable").unwrap_err().status(), 403);
        let viewer = auth(Some("Bearer t-view")).unwrap();
        let err = viewer.authorize(&csc("Test:1"), "enable").unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }
}
