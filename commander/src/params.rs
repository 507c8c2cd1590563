//! Command parameters checked against the command's schema (from the CSC's
//! interface definition) before anything is sent, and converted to the
//! kinds the schema declares.
//!
//! The rules are the middleware's ([`meridian_sim::interface::Interface::check_params`]),
//! with messages that name the request field: a parameter the command does
//! not have, a missing number or flag (a missing string means the default,
//! as in the observatory's commands), a wrong kind, an array of the wrong
//! length or with a wrong element. An integer is accepted for a float (JSON
//! does not tell `1` from `1.0`); a float is not accepted for an integer.

use crate::error::RequestError;
use crate::request::kind;
use meridian_proto::{FieldSchema, Fields, Value, ValueKind};
use meridian_sim::interface::CommandSchema;
use serde_json::{Map, Value as Json};

/// The parameters as the middleware takes them, in the schema's order; a
/// 400 naming `params.<name>` (or `params.<name>[i]`) otherwise.
pub fn check(schema: &CommandSchema, params: &Map<String, Json>) -> Result<Fields, RequestError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !schema.params.iter().any(|p| p.name == **k))
    {
        let expected = if schema.params.is_empty() {
            format!("{} takes no parameters", schema.name)
        } else {
            let names: Vec<&str> = schema.params.iter().map(|p| p.name.as_str()).collect();
            format!("{} takes {}", schema.name, names.join(", "))
        };
        return Err(RequestError::field(
            format!("params.{unknown}"),
            format!("not a parameter of {}; {expected}", schema.name),
        ));
    }
    let mut fields = Fields::new();
    for field in &schema.params {
        let name = format!("params.{}", field.name);
        match params.get(&field.name) {
            Some(value) => fields.push((field.name.clone(), convert(field, &name, value)?)),
            None if field.kind == ValueKind::Str => {}
            None => {
                return Err(RequestError::field(
                    name,
                    format!("missing; expected {}", describe(field)),
                ))
            }
        }
    }
    Ok(fields)
}

/// "a number", "an array of 5 integers": what the schema wants.
fn describe(field: &FieldSchema) -> String {
    let (one, many) = words(field.kind);
    match field.count {
        None => one.to_string(),
        Some(n) => format!("an array of {n} {many}"),
    }
}

fn words(kind: ValueKind) -> (&'static str, &'static str) {
    match kind {
        ValueKind::Bool => ("a boolean", "booleans"),
        ValueKind::Int => ("an integer", "integers"),
        ValueKind::Float => ("a number", "numbers"),
        ValueKind::Str => ("a string", "strings"),
    }
}

fn convert(field: &FieldSchema, name: &str, value: &Json) -> Result<Value, RequestError> {
    let Some(count) = field.count else {
        return scalar(field.kind, value).ok_or_else(|| {
            RequestError::field(name, format!("expected {}, got {}", describe(field), kind(value)))
        });
    };
    let Json::Array(items) = value else {
        return Err(RequestError::field(
            name,
            format!("expected {}, got {}", describe(field), kind(value)),
        ));
    };
    if items.len() != count as usize {
        return Err(RequestError::field(
            name,
            format!("expected {}, got an array of {}", describe(field), items.len()),
        ));
    }
    let mut values = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let v = scalar(field.kind, item).ok_or_else(|| {
            RequestError::field(
                format!("{name}[{i}]"),
                format!("expected {}, got {}", words(field.kind).0, kind(item)),
            )
        })?;
        values.push(v);
    }
    Ok(match field.kind {
        ValueKind::Bool => Value::Bools(values.into_iter().filter_map(as_bool).collect()),
        ValueKind::Int => Value::Ints(values.into_iter().filter_map(as_int).collect()),
        // Strings are never arrays (see the interface module): an array
        // of them is read as floats, which cannot happen.
        ValueKind::Float | ValueKind::Str => Value::Floats(values.into_iter().filter_map(as_float).collect()),
    })
}

fn scalar(kind: ValueKind, value: &Json) -> Option<Value> {
    match (kind, value) {
        (ValueKind::Bool, Json::Bool(b)) => Some(Value::Bool(*b)),
        (ValueKind::Int, Json::Number(n)) => n.as_i64().map(Value::Int),
        (ValueKind::Float, Json::Number(n)) => n.as_f64().map(Value::Float),
        (ValueKind::Str, Json::String(s)) => Some(Value::Str(s.clone())),
        _ => None,
    }
}

fn as_bool(v: Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

fn as_int(v: Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(i),
        _ => None,
    }
}

fn as_float(v: Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_sim::interface::Interface;

    fn check_json(csc: &str, command: &str, params: serde_json::Value) -> Result<Fields, String> {
        let interface = Interface::builtin(csc).unwrap();
        let schema = interface.command(command).unwrap();
        let serde_json::Value::Object(map) = params else {
            panic!()
        };
        check(schema, &map).map_err(|e| {
            assert_eq!(e.status(), 400);
            e.to_string()
        })
    }

    #[test]
    fn good_parameters_take_the_schemas_kinds() {
        let fields = check_json("Test", "wait", serde_json::json!({"duration": 2, "ack": 303})).unwrap();
        assert_eq!(
            fields,
            vec![
                ("ack".into(), Value::Int(303)),
                ("duration".into(), Value::Float(2.0))
            ]
        );
        let fields = check_json(
            "Test",
            "setArrays",
            serde_json::json!({
                "boolean0": [true, false, true, false, true], "byte0": [1,2,3,4,5], "short0": [1,2,3,4,5],
                "int0": [1,2,3,4,5], "long0": [1,2,3,4,5], "longLong0": [1,2,3,4,5],
                "unsignedShort0": [1,2,3,4,5], "unsignedInt0": [1,2,3,4,5],
                "float0": [1,2,3,4,5.5], "double0": [0.5,2,3,4,5]
            }),
        )
        .unwrap();
        assert!(fields.contains(&("float0".into(), Value::Floats(vec![1.0, 2.0, 3.0, 4.0, 5.5]))));
        // A missing string is the command's default.
        assert_eq!(
            check_json("Test", "start", serde_json::json!({})).unwrap(),
            vec![]
        );
    }

    #[test]
    fn every_mistake_names_the_field() {
        let cases = [
            (
                serde_json::json!({"duration": "soon", "ack": 1}),
                "params.duration: expected a number, got a string",
            ),
            (
                serde_json::json!({"duration": 1}),
                "params.ack: missing; expected an integer",
            ),
            (
                serde_json::json!({"duration": 1, "ack": 1.5}),
                "params.ack: expected an integer, got 1.5",
            ),
            (
                serde_json::json!({"duration": 1, "ack": 1, "dureation": 2}),
                "params.dureation: not a parameter of wait; wait takes ack, duration",
            ),
        ];
        for (params, want) in cases {
            assert_eq!(check_json("Test", "wait", params).unwrap_err(), want);
        }
        let err = check_json("Test", "enable", serde_json::json!({"force": true})).unwrap_err();
        assert_eq!(
            err,
            "params.force: not a parameter of enable; enable takes no parameters"
        );
        let arrays = |int0: serde_json::Value| {
            let mut p = serde_json::json!({
                "boolean0": [true, false, true, false, true], "byte0": [1,2,3,4,5], "short0": [1,2,3,4,5],
                "long0": [1,2,3,4,5], "longLong0": [1,2,3,4,5],
                "unsignedShort0": [1,2,3,4,5], "unsignedInt0": [1,2,3,4,5],
                "float0": [1,2,3,4,5], "double0": [1,2,3,4,5]
            });
            p["int0"] = int0;
            check_json("Test", "setArrays", p).unwrap_err()
        };
        assert_eq!(
            arrays(serde_json::json!([1, 2, 3])),
            "params.int0: expected an array of 5 integers, got an array of 3"
        );
        assert_eq!(
            arrays(serde_json::json!([1, 2, "3", 4, 5])),
            "params.int0[2]: expected an integer, got a string"
        );
        assert_eq!(
            arrays(serde_json::json!(7)),
            "params.int0: expected an array of 5 integers, got 7"
        );
    }
}
