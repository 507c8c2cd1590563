//! Field values of a sample.
//!
//! On QUIC a value is a tagged enum (bincode needs the tag); in the store and
//! towards browsers it is plain JSON (`1.5`, `[1.0, 2.0]`, `"text"`), written
//! once at ingest so a frontend never re-encodes it.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

/// One field's value, shaped like the observatory's XML types: scalars and
/// fixed-size arrays of booleans, integers and floats, and strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bools(Vec<bool>),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

/// The type of a field in a topic schema; arrays carry their length in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    Bool,
    Int,
    Float,
    Str,
}

impl Value {
    /// The element kind of this value, and its array length if it is an array.
    pub fn kind(&self) -> (ValueKind, Option<usize>) {
        match self {
            Value::Bool(_) => (ValueKind::Bool, None),
            Value::Int(_) => (ValueKind::Int, None),
            Value::Float(_) => (ValueKind::Float, None),
            Value::Str(_) => (ValueKind::Str, None),
            Value::Bools(v) => (ValueKind::Bool, Some(v.len())),
            Value::Ints(v) => (ValueKind::Int, Some(v.len())),
            Value::Floats(v) => (ValueKind::Float, Some(v.len())),
        }
    }

    /// Reads a plain JSON value back (e.g. command parameters from a browser).
    /// Mixed or nested arrays and objects have no Value and return `None`.
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        use serde_json::Value as J;
        Some(match v {
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64()?),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => {
                if items.iter().all(|i| i.is_boolean()) && !items.is_empty() {
                    Value::Bools(items.iter().filter_map(|i| i.as_bool()).collect())
                } else if items.iter().all(|i| i.is_i64()) && !items.is_empty() {
                    Value::Ints(items.iter().filter_map(|i| i.as_i64()).collect())
                } else if items.iter().all(|i| i.is_number()) {
                    Value::Floats(items.iter().filter_map(|i| i.as_f64()).collect())
                } else {
                    return None;
                }
            }
            J::Null | J::Object(_) => return None,
        })
    }
}

/// The fields of one sample, in the order of the topic's schema.
pub type Fields = Vec<(String, Value)>;

/// Serializes a value as plain JSON, without the enum tag.
pub struct JsonValue<'a>(pub &'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn seq<S: Serializer, T: Serialize>(s: S, items: &[T]) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(items.len()))?;
            for i in items {
                seq.serialize_element(i)?;
            }
            seq.end()
        }
        match self.0 {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            // serde_json writes non-finite floats as null, which JSON can carry.
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(t) => s.serialize_str(t),
            Value::Bools(v) => seq(s, v),
            Value::Ints(v) => seq(s, v),
            Value::Floats(v) => seq(s, v),
        }
    }
}

/// Serializes fields as one JSON object `{"name": value, …}`.
pub struct JsonFields<'a>(pub &'a Fields);

impl Serialize for JsonFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, &JsonValue(value))?;
        }
        map.end()
    }
}

/// The JSON text of a sample's fields, as stored and as sent to browsers.
pub fn fields_to_json(fields: &Fields) -> String {
    // Serializing maps of strings and numbers into a String cannot fail.
    serde_json::to_string(&JsonFields(fields)).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_plain_json_in_schema_order() {
        let fields: Fields = vec![
            ("b".into(), Value::Float(1.5)),
            ("a".into(), Value::Floats(vec![1.0, 2.5])),
            ("s".into(), Value::Str("x\"y".into())),
            ("n".into(), Value::Float(f64::NAN)),
        ];
        assert_eq!(
            fields_to_json(&fields),
            r#"{"b":1.5,"a":[1.0,2.5],"s":"x\"y","n":null}"#
        );
    }

    #[test]
    fn json_values_read_back() {
        let v: serde_json::Value = serde_json::json!([1, 2.5]);
        assert_eq!(Value::from_json(&v), Some(Value::Floats(vec![1.0, 2.5])));
        assert_eq!(Value::from_json(&serde_json::json!(3)), Some(Value::Int(3)));
        assert_eq!(Value::from_json(&serde_json::json!({"a": 1})), None);
    }
}
