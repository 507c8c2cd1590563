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
//!
//! Each value is also checked against the type the site declares for it
//! ([`CommandSchema::types`], an [`IdlType`]), so nothing the observatory's
//! middleware could not carry is published:
//! - integers within their type: `byte` 0 to 255 (SAL's byte is unsigned),
//!   `short` i16, `int` and `long` i32 (SAL's `long` is 32-bit), `long long`
//!   i64, `unsigned short` u16, `unsigned int` u32;
//! - `float` finite and within ±`f32::MAX` once rounded to 32 bits;
//!   `double` finite;
//! - strings of at most [`MAX_STRING_BYTES`] bytes;
//! - arrays of exactly the declared count.
//!
//! A value out of range is a 400 naming the field, the type and the limit:
//! `params.byte0: -300 is out of range for byte (0 to 255)`.

use crate::error::RequestError;
use crate::request::kind;
use meridian_proto::{FieldSchema, Fields, Value, ValueKind};
use meridian_sim::idl::IdlType;
use meridian_sim::interface::CommandSchema;
use serde_json::{Map, Number, Value as Json};

/// Longest string parameter accepted, in bytes (UTF-8). The site's strings
/// are unbounded in Avro; the longest a command takes is a script's YAML
/// configuration (`ScriptQueue add`), a few KiB. 32 KiB is many times that,
/// and half of [`crate::error::MAX_BODY_BYTES`].
pub const MAX_STRING_BYTES: usize = 32 * 1024;

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
        let declared = schema
            .types
            .get(&field.name)
            .copied()
            .filter(|t| t.kind() == field.kind)
            .unwrap_or(IdlType::widest(field.kind));
        match params.get(&field.name) {
            Some(value) => fields.push((field.name.clone(), convert(field, declared, &name, value)?)),
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

/// Why one value was refused; [`convert`] names the field.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    /// Not the JSON type the kind takes (a string for a number, 1.5 for an integer).
    WrongKind,
    /// The right kind, but outside what the declared type holds; the text
    /// says the value, the type and the limit.
    OutOfRange(String),
}

fn convert(field: &FieldSchema, declared: IdlType, name: &str, value: &Json) -> Result<Value, RequestError> {
    let Some(count) = field.count else {
        return scalar(declared, value).map_err(|problem| match problem {
            Problem::WrongKind => {
                RequestError::field(name, format!("expected {}, got {}", describe(field), kind(value)))
            }
            Problem::OutOfRange(why) => RequestError::field(name, why),
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
        let v = scalar(declared, item).map_err(|problem| {
            let why = match problem {
                Problem::WrongKind => format!("expected {}, got {}", words(field.kind).0, kind(item)),
                Problem::OutOfRange(why) => why,
            };
            RequestError::field(format!("{name}[{i}]"), why)
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

/// One JSON value as a value of `declared`, or why not.
fn scalar(declared: IdlType, value: &Json) -> Result<Value, Problem> {
    match (declared.kind(), value) {
        (ValueKind::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
        (ValueKind::Int, Json::Number(n)) => integer(declared, n).map(Value::Int),
        (ValueKind::Float, Json::Number(n)) => n
            .as_f64()
            .ok_or(Problem::WrongKind)
            .and_then(|x| float(declared, x))
            .map(Value::Float),
        (ValueKind::Str, Json::String(s)) => string(s).map(|()| Value::Str(s.clone())),
        _ => Err(Problem::WrongKind),
    }
}

/// A JSON number as an integer of `declared`: a fraction is the wrong kind,
/// a whole number outside the type's range (above i64 too) out of range.
fn integer(declared: IdlType, n: &Number) -> Result<i64, Problem> {
    let (min, max) = declared.int_range().unwrap_or((i64::MIN, i64::MAX));
    let out_of_range = || Problem::OutOfRange(format!("{n} is out of range for {declared} ({min} to {max})"));
    match n.as_i64() {
        Some(i) if (min..=max).contains(&i) => Ok(i),
        Some(_) => Err(out_of_range()),
        None if n.is_u64() => Err(out_of_range()),
        // A whole number past i64 (below i64::MIN JSON reads as a float).
        None if n
            .as_f64()
            .is_some_and(|x| x.fract() == 0.0 && x.abs() >= I64_BOUND) =>
        {
            Err(out_of_range())
        }
        None => Err(Problem::WrongKind),
    }
}

/// 2^63: whole numbers at or past it in size are outside i64.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// `x` as a value of `declared` (`float` or `double`): finite, and for a
/// `float` finite once rounded to 32 bits.
fn float(declared: IdlType, x: f64) -> Result<f64, Problem> {
    if !x.is_finite() {
        return Err(Problem::OutOfRange(format!(
            "{x} is not a finite number; a {declared} must be one"
        )));
    }
    if declared == IdlType::Float && !(x as f32).is_finite() {
        return Err(Problem::OutOfRange(format!(
            "{x:e} is out of range for float ({:e} to {:e})",
            f32::MIN,
            f32::MAX
        )));
    }
    Ok(x)
}

fn string(s: &str) -> Result<(), Problem> {
    if s.len() > MAX_STRING_BYTES {
        return Err(Problem::OutOfRange(format!(
            "a string of {} bytes is longer than the {MAX_STRING_BYTES} bytes a string parameter may have",
            s.len()
        )));
    }
    Ok(())
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

    /// `setScalars` with every parameter good, `name` set to `value`.
    fn scalars(name: &str, value: serde_json::Value) -> Result<Fields, String> {
        let mut p = serde_json::json!({
            "boolean0": true, "byte0": 1, "short0": 1, "int0": 1, "long0": 1, "longLong0": 1,
            "unsignedShort0": 1, "unsignedInt0": 1, "float0": 1, "double0": 1, "string0": "s"
        });
        p[name] = value;
        check_json("Test", "setScalars", p)
    }

    fn int_of(fields: &Fields, name: &str) -> i64 {
        match fields.iter().find(|(n, _)| n == name) {
            Some((_, Value::Int(i))) => *i,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn integers_are_checked_at_each_types_bounds() {
        let cases: [(&str, &str, i64, i64); 7] = [
            ("byte0", "byte", 0, 255),
            ("short0", "short", -32768, 32767),
            ("int0", "int", -2147483648, 2147483647),
            ("long0", "long", -2147483648, 2147483647),
            ("longLong0", "long long", i64::MIN, i64::MAX),
            ("unsignedShort0", "unsigned short", 0, 65535),
            ("unsignedInt0", "unsigned int", 0, 4294967295),
        ];
        for (name, ty, min, max) in cases {
            for ok in [min, max] {
                let fields =
                    scalars(name, serde_json::json!(ok)).unwrap_or_else(|e| panic!("{name}={ok}: {e}"));
                assert_eq!(int_of(&fields, name), ok);
            }
            // One past each end, in JSON's own digits (i64 ± 1 is not an i64).
            let below = (i128::from(min) - 1).to_string();
            let above = (i128::from(max) + 1).to_string();
            for bad in [below, above] {
                let value: serde_json::Value =
                    serde_json::from_str(&bad).unwrap_or_else(|e| panic!("{bad}: {e}"));
                let err = scalars(name, value).map(|_| ()).unwrap_err();
                // JSON reads a number below i64::MIN as a float, and shows it so.
                let shown = if bad == "-9223372036854775809" {
                    "-9.223372036854776e+18"
                } else {
                    &bad
                };
                assert_eq!(
                    err,
                    format!("params.{name}: {shown} is out of range for {ty} ({min} to {max})")
                );
            }
            assert_eq!(
                scalars(name, serde_json::json!("1")).unwrap_err(),
                format!("params.{name}: expected an integer, got a string")
            );
            assert_eq!(
                scalars(name, serde_json::json!(2.5)).unwrap_err(),
                format!("params.{name}: expected an integer, got 2.5")
            );
        }
        // The two examples.
        assert_eq!(
            scalars("byte0", serde_json::json!(-300)).unwrap_err(),
            "params.byte0: -300 is out of range for byte (0 to 255)"
        );
        assert_eq!(
            scalars("unsignedInt0", serde_json::json!(-1)).unwrap_err(),
            "params.unsignedInt0: -1 is out of range for unsigned int (0 to 4294967295)"
        );
    }

    #[test]
    fn floats_are_finite_and_a_float_fits_in_32_bits() {
        let max32 = f64::from(f32::MAX);
        for ok in [-max32, max32, 1e-45, 0.0] {
            assert!(scalars("float0", serde_json::json!(ok)).is_ok(), "{ok}");
        }
        for bad in [1e39, -1e39, max32 * 1.001] {
            let err = scalars("float0", serde_json::json!(bad)).unwrap_err();
            assert!(
                err.starts_with("params.float0: ")
                    && err.ends_with("is out of range for float (-3.4028235e38 to 3.4028235e38)"),
                "{err}"
            );
        }
        // A double takes what a float cannot.
        assert!(scalars("double0", serde_json::json!(1e300)).is_ok());
        assert!(scalars("double0", serde_json::json!(-f64::MAX)).is_ok());
        // JSON cannot spell NaN or infinity; a value that reaches the check
        // as one is still refused.
        for declared in [IdlType::Float, IdlType::Double] {
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert!(
                    matches!(float(declared, x), Err(Problem::OutOfRange(ref why)) if why.contains("not a finite number")),
                    "{declared} {x}"
                );
            }
        }
        for name in ["float0", "double0"] {
            assert_eq!(
                scalars(name, serde_json::json!(true)).unwrap_err(),
                format!("params.{name}: expected a number, got a boolean")
            );
        }
    }

    #[test]
    fn booleans_and_strings_are_checked() {
        assert_eq!(
            scalars("boolean0", serde_json::json!(1)).unwrap_err(),
            "params.boolean0: expected a boolean, got 1"
        );
        assert_eq!(
            scalars("string0", serde_json::json!(7)).unwrap_err(),
            "params.string0: expected a string, got 7"
        );
        let longest = "x".repeat(MAX_STRING_BYTES);
        assert!(scalars("string0", serde_json::json!(longest)).is_ok());
        assert_eq!(
            scalars("string0", serde_json::json!(format!("{longest}x"))).unwrap_err(),
            format!(
                "params.string0: a string of {} bytes is longer than the {MAX_STRING_BYTES} bytes a string parameter may have",
                MAX_STRING_BYTES + 1
            )
        );
    }

    #[test]
    fn array_elements_are_checked_by_type_and_arrays_by_count() {
        let arrays = |name: &str, value: serde_json::Value| {
            let mut p = serde_json::json!({
                "boolean0": [true, false, true, false, true], "byte0": [1,2,3,4,5], "short0": [1,2,3,4,5],
                "int0": [1,2,3,4,5], "long0": [1,2,3,4,5], "longLong0": [1,2,3,4,5],
                "unsignedShort0": [1,2,3,4,5], "unsignedInt0": [1,2,3,4,5],
                "float0": [1,2,3,4,5], "double0": [1,2,3,4,5]
            });
            p[name] = value;
            check_json("Test", "setArrays", p)
        };
        assert!(arrays("byte0", serde_json::json!([0, 255, 0, 255, 0])).is_ok());
        assert_eq!(
            arrays("byte0", serde_json::json!([0, 255, 256, 1, 1])).unwrap_err(),
            "params.byte0[2]: 256 is out of range for byte (0 to 255)"
        );
        assert_eq!(
            arrays("unsignedShort0", serde_json::json!([1, 1, 1, 1, -1])).unwrap_err(),
            "params.unsignedShort0[4]: -1 is out of range for unsigned short (0 to 65535)"
        );
        assert!(arrays("float0", serde_json::json!([1, 1, 1e39, 1, 1]))
            .unwrap_err()
            .starts_with("params.float0[2]: 1e39 is out of range for float"));
        assert_eq!(
            arrays("short0", serde_json::json!([1, 2, 3, 4, 5, 6])).unwrap_err(),
            "params.short0: expected an array of 5 integers, got an array of 6"
        );
        assert_eq!(
            arrays("boolean0", serde_json::json!([true, false, true, false, 1])).unwrap_err(),
            "params.boolean0[4]: expected a boolean, got 1"
        );
    }

    #[test]
    fn a_parameter_of_unstated_width_is_checked_as_the_widest_of_its_kind() {
        let mut interface = Interface::builtin("Test").unwrap();
        let schema = interface
            .commands
            .iter_mut()
            .find(|c| c.name == "setScalars")
            .unwrap();
        schema.types.clear();
        let mut p = serde_json::json!({
            "boolean0": true, "byte0": -300, "short0": 1, "int0": 1, "long0": 1, "longLong0": 1,
            "unsignedShort0": 1, "unsignedInt0": 1, "float0": 1e39, "double0": 1, "string0": "s"
        });
        let serde_json::Value::Object(map) = p.take() else {
            panic!()
        };
        assert!(check(schema, &map).is_ok());
    }
}
