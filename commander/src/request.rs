//! The two request bodies that send a command, read into one
//! [`CommandRequest`].
//!
//! - The replaced system's (`POST /cmd/`): `{"csc", "salindex", "cmd":
//!   "cmd_<name>", "params", "identity"?}`; `salindex` may be a number or
//!   a string of digits (its browser client sends `"0"`), the `cmd_` prefix
//!   may be left out, other keys are ignored as it ignored them.
//! - The native one (`POST /v1/commands`): `{"csc", "salindex", "command",
//!   "params"?, "identity"?}`, strict: unknown keys are refused, `params`
//!   defaults to `{}`.
//!
//! What could be read before an error is kept in [`Received`], so a refused
//! request is audited with as much as it said.

use crate::error::RequestError;
use meridian_proto::CscId;
use serde_json::{Map, Value};

/// Most bytes of `identity` kept: it is the caller's free-form claim
/// (`user@host`), recorded in the audit log.
pub const MAX_IDENTITY_LEN: usize = 256;

/// Which body shape to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `POST /cmd/`.
    Love,
    /// `POST /v1/commands`.
    Native,
}

/// A well-formed request to send a command (its parameters are checked
/// against the schema later, see [`crate::params`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub csc: CscId,
    /// Without the `cmd_` prefix.
    pub command: String,
    pub params: Map<String, Value>,
    pub identity: Option<String>,
}

/// What a request said, as far as it could be read: recorded in the
/// audit log whatever the outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Received {
    pub csc: Option<String>,
    pub salindex: Option<u32>,
    pub command: Option<String>,
    pub params: Option<Value>,
    pub identity: Option<String>,
}

/// Reads `body` in `dialect`. Whatever the result, `received` holds what
/// could be read.
pub fn parse(dialect: Dialect, body: &[u8], received: &mut Received) -> Result<CommandRequest, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::BadRequest {
        field: None,
        message: format!("the body is not JSON: {e}"),
    })?;
    let Value::Object(object) = value else {
        return Err(RequestError::BadRequest {
            field: None,
            message: "the body must be a JSON object".into(),
        });
    };
    let command_key = match dialect {
        Dialect::Love => "cmd",
        Dialect::Native => "command",
    };
    // Read everything readable first, so the audit has it even on error.
    received.csc = object.get("csc").and_then(Value::as_str).map(str::to_string);
    received.salindex = object.get("salindex").and_then(salindex);
    received.command = object
        .get(command_key)
        .and_then(Value::as_str)
        .map(|c| c.strip_prefix("cmd_").unwrap_or(c).to_string());
    received.params = object.get("params").cloned();
    received.identity = object
        .get("identity")
        .and_then(Value::as_str)
        .map(|s| truncate(s, MAX_IDENTITY_LEN));

    if dialect == Dialect::Native {
        let known = ["csc", "salindex", "command", "params", "identity"];
        if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(RequestError::field(
                unknown.clone(),
                format!("unknown field; expected {}", known.join(", ")),
            ));
        }
    }
    let required: &[&str] = match dialect {
        Dialect::Love => &["csc", "salindex", "cmd", "params"],
        Dialect::Native => &["csc", "salindex", "command"],
    };
    if let Some(missing) = required.iter().find(|k| !object.contains_key(**k)) {
        let message = match dialect {
            Dialect::Love => format!(
                "Request must have JSON data with the following keys: csc, salindex, cmd, params. Missing: {missing}"
            ),
            Dialect::Native => format!("{missing}: missing"),
        };
        return Err(RequestError::BadRequest {
            field: Some(missing.to_string()),
            message,
        });
    }

    let csc = match &object["csc"] {
        Value::String(s) => s,
        other => {
            return Err(RequestError::field(
                "csc",
                format!("expected a string, got {}", kind(other)),
            ))
        }
    };
    let index = salindex(&object["salindex"]).ok_or_else(|| {
        RequestError::field(
            "salindex",
            format!(
                "expected an integer from 0 to {}, got {}",
                u32::MAX,
                kind(&object["salindex"])
            ),
        )
    })?;
    let csc = CscId::new(csc, index).map_err(|e| RequestError::field("csc", e))?;
    let command = match &object[command_key] {
        Value::String(s) => s.strip_prefix("cmd_").unwrap_or(s),
        other => {
            return Err(RequestError::field(
                command_key,
                format!("expected a string, got {}", kind(other)),
            ))
        }
    };
    if command.is_empty() {
        return Err(RequestError::field(
            command_key,
            "expected a command name, got \"\"",
        ));
    }
    let params = match object.get("params") {
        None => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            return Err(RequestError::field(
                "params",
                format!("expected an object of parameters, got {}", kind(other)),
            ))
        }
    };
    let identity = match object.get("identity") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(truncate(s, MAX_IDENTITY_LEN)),
        Some(other) => {
            return Err(RequestError::field(
                "identity",
                format!("expected a string, got {}", kind(other)),
            ))
        }
    };
    Ok(CommandRequest {
        csc,
        command: command.to_string(),
        params,
        identity,
    })
}

/// A SAL index: a non-negative integer that fits in 32 bits, or a string of
/// one (the replaced browser client sends `"0"`).
fn salindex(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
    .and_then(|i| u32::try_from(i).ok())
}

/// How an error message names what it got: `a string`, `null`, `1.5`.
pub fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn love(body: &str) -> (Result<CommandRequest, RequestError>, Received) {
        let mut received = Received::default();
        (parse(Dialect::Love, body.as_bytes(), &mut received), received)
    }

    #[test]
    fn the_replaced_systems_body_is_read() {
        let (r, _) = love(
            r#"{"csc":"ATDome","salindex":"1","cmd":"cmd_moveAzimuth","params":{"azimuth":90},"identity":"op@summit"}"#,
        );
        let r = r.unwrap();
        assert_eq!(r.csc.to_string(), "ATDome:1");
        assert_eq!(r.command, "moveAzimuth");
        assert_eq!(r.params["azimuth"], 90);
        assert_eq!(r.identity.as_deref(), Some("op@summit"));
    }

    #[test]
    fn errors_name_the_field_and_keep_what_was_read() {
        let (r, received) = love(r#"{"csc":"ATDome","cmd":"cmd_start","params":{}}"#);
        let err = r.unwrap_err();
        assert_eq!(err.field_name(), Some("salindex"));
        assert!(
            err.to_string().starts_with("Request must have JSON data"),
            "{err}"
        );
        assert_eq!(received.csc.as_deref(), Some("ATDome"));
        assert_eq!(received.command.as_deref(), Some("start"));

        let (r, _) = love(r#"{"csc":"ATDome","salindex":-1,"cmd":"cmd_start","params":{}}"#);
        assert_eq!(
            r.unwrap_err().to_string(),
            "salindex: expected an integer from 0 to 4294967295, got -1"
        );
        let (r, _) = love(r#"{"csc":"ATDome","salindex":0,"cmd":"cmd_start","params":[]}"#);
        assert_eq!(
            r.unwrap_err().to_string(),
            "params: expected an object of parameters, got an array of 0"
        );
        let (r, _) = love("{not json");
        assert!(r.unwrap_err().to_string().starts_with("the body is not JSON"));

        let mut received = Received::default();
        let err = parse(
            Dialect::Native,
            br#"{"csc":"Test","salindex":1,"command":"start","cmd":"x"}"#,
            &mut received,
        )
        .unwrap_err();
        assert_eq!(err.field_name(), Some("cmd"));
    }
}
