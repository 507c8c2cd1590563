//! MessagePack for the native protocol's optional binary frames.
//!
//! Why: at 1,000 browsers the frontend's limit is bytes, not CPU (see
//! docs/performance.md). A sample of M1M3 force telemetry is mostly floats;
//! in JSON each costs its shortest decimal form (often 17–19 characters),
//! in MessagePack 5 bytes when the value is exactly a 32-bit float (as the
//! observatory's `float` fields are) and 9 otherwise. The frame has the
//! same shape as the JSON one, so a client decodes it with any MessagePack
//! library and handles it the same way.
//!
//! Only the subset Meridian writes is here: nil, booleans, integers,
//! floats, strings, arrays and maps. [`transcode_json`] turns the fields
//! JSON stored at ingest into MessagePack without an intermediate tree and
//! with Rust's correctly rounded float parsing, so no value changes;
//! [`decode`] reads any frame back (tests, the bench's load generator, the
//! fuzzer) and is bounded against hostile input.

use crate::{StreamId, TopicId};

/// Deepest nesting [`transcode_json`] and [`decode`] accept. Stored fields
/// are one level deep; anything far deeper is not a sample.
pub const MAX_DEPTH: usize = 64;

/// Why a JSON text could not be turned into MessagePack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    #[error("invalid JSON at byte {at}: {what}")]
    Syntax { at: usize, what: &'static str },
    #[error("JSON nested deeper than MAX_DEPTH = {MAX_DEPTH}")]
    TooDeep,
}

/// Why bytes are not a MessagePack value Meridian reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("MessagePack value truncated at byte {at}")]
    Truncated { at: usize },
    #[error("MessagePack type byte {byte:#04x} at byte {at} is not supported (ext or reserved)")]
    Unsupported { byte: u8, at: usize },
    #[error("MessagePack string at byte {at} is not UTF-8")]
    Utf8 { at: usize },
    #[error("MessagePack nested deeper than MAX_DEPTH = {MAX_DEPTH}")]
    TooDeep,
    #[error("{extra} bytes after the MessagePack value")]
    Trailing { extra: usize },
}

/// A decoded MessagePack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    /// Pairs in the order they were written.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The value under string key `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Any number as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::F32(f) => Some(f as f64),
            Value::F64(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Writes nil.
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

/// Writes an integer in its smallest form.
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Writes a float as a 32-bit float when that loses nothing, else as 64-bit.
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    let narrow = v as f32;
    if narrow as f64 == v || v.is_nan() {
        out.push(0xca);
        out.extend_from_slice(&narrow.to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    write_container_len(out, len, 0x90, 0xdc);
}

pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    write_container_len(out, len, 0x80, 0xde);
}

fn write_container_len(out: &mut Vec<u8>, len: usize, fix: u8, wide16: u8) {
    if len < 16 {
        out.push(fix | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(wide16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(wide16 + 1);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// The four key/value pairs that name a topic in every message: `csc`,
/// `salindex`, `category`, `topic`.
fn write_topic(out: &mut Vec<u8>, topic: &TopicId) {
    write_str(out, "csc");
    write_str(out, topic.csc.csc.as_str());
    write_str(out, "salindex");
    write_uint(out, topic.csc.salindex as u64);
    write_str(out, "category");
    write_str(out, topic.category.as_str());
    write_str(out, "topic");
    write_str(out, &topic.topic);
}

/// One sample of the native protocol as MessagePack: the map
/// [`crate::browser::sample_message`] writes as JSON, same keys, with the
/// stored `fields_json` transcoded. On invalid stored JSON the fields are
/// nil and the error is returned beside the bytes, for the caller to log.
pub fn sample_message(
    topic: &TopicId,
    id: StreamId,
    source_ts: f64,
    ingest_ts: f64,
    frontend_ts: f64,
    fields_json: &str,
) -> (Vec<u8>, Option<TranscodeError>) {
    // Fields are about as long as their JSON minus the float digits saved.
    let mut out = Vec::with_capacity(96 + fields_json.len() / 2);
    write_map_len(&mut out, 10);
    write_str(&mut out, "type");
    write_str(&mut out, "sample");
    write_topic(&mut out, topic);
    write_str(&mut out, "id");
    write_str(&mut out, &id.to_string());
    for (name, ts) in [
        ("source_ts", source_ts),
        ("ingest_ts", ingest_ts),
        ("frontend_ts", frontend_ts),
    ] {
        write_str(&mut out, name);
        if ts.is_finite() {
            // Times keep all 64 bits: a 32-bit float of a Unix time is minutes off.
            out.push(0xcb);
            out.extend_from_slice(&ts.to_be_bytes());
        } else {
            write_nil(&mut out);
        }
    }
    write_str(&mut out, "fields");
    let mark = out.len();
    let err = transcode_json(fields_json, &mut out).err();
    if err.is_some() {
        out.truncate(mark);
        write_nil(&mut out);
    }
    (out, err)
}

/// A data frame as MessagePack: the map `{type: "batch", samples: […], lost: […]}`
/// of [`crate::browser::batch_frame`], with each sample's bytes
/// ([`sample_message`]) spliced as they are.
pub fn batch_frame<'a>(
    samples: impl ExactSizeIterator<Item = &'a [u8]>,
    lost: &[(TopicId, StreamId)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    write_map_len(&mut out, 3);
    write_str(&mut out, "type");
    write_str(&mut out, "batch");
    write_str(&mut out, "samples");
    write_array_len(&mut out, samples.len());
    for s in samples {
        out.extend_from_slice(s);
    }
    write_str(&mut out, "lost");
    write_array_len(&mut out, lost.len());
    for (topic, from) in lost {
        write_map_len(&mut out, 5);
        write_topic(&mut out, topic);
        write_str(&mut out, "from_id");
        write_str(&mut out, &from.to_string());
    }
    out
}

/// Appends the MessagePack form of the JSON value `json` (one value,
/// whitespace around it allowed) to `out`. Integers stay integers; other
/// numbers are parsed exactly and written by [`write_float`].
pub fn transcode_json(json: &str, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
    let mut t = Transcoder {
        text: json.as_bytes(),
        at: 0,
        out,
        scratch: String::new(),
    };
    t.value(0)?;
    t.skip_ws();
    if t.at != t.text.len() {
        return Err(t.syntax("text after the JSON value"));
    }
    Ok(())
}

struct Transcoder<'a, 'o> {
    text: &'a [u8],
    at: usize,
    out: &'o mut Vec<u8>,
    scratch: String,
}

impl Transcoder<'_, '_> {
    fn syntax(&self, what: &'static str) -> TranscodeError {
        TranscodeError::Syntax { at: self.at, what }
    }

    fn skip_ws(&mut self) {
        while matches!(self.text.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), TranscodeError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.syntax("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), TranscodeError> {
        if depth > MAX_DEPTH {
            return Err(TranscodeError::TooDeep);
        }
        self.skip_ws();
        match self.text.get(self.at) {
            None => Err(self.syntax("value expected")),
            Some(b'{') => self.container(depth, true),
            Some(b'[') => self.container(depth, false),
            Some(b'"') => {
                self.string()?;
                write_str(self.out, &self.scratch);
                Ok(())
            }
            Some(b't') => self.literal(b"true").map(|_| write_bool(self.out, true)),
            Some(b'f') => self.literal(b"false").map(|_| write_bool(self.out, false)),
            Some(b'n') => self.literal(b"null").map(|_| write_nil(self.out)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.syntax("value expected")),
        }
    }

    /// An object or array. Its length is known only at the end, so a
    /// 5-byte header is reserved and the body moved back when a shorter
    /// header fits (once per container: fields are one level deep).
    fn container(&mut self, depth: usize, object: bool) -> Result<(), TranscodeError> {
        let close = if object { b'}' } else { b']' };
        self.at += 1;
        let header = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let mut count = 0usize;
        self.skip_ws();
        if self.text.get(self.at) == Some(&close) {
            self.at += 1;
        } else {
            loop {
                if object {
                    self.skip_ws();
                    if self.text.get(self.at) != Some(&b'"') {
                        return Err(self.syntax("object key expected"));
                    }
                    self.string()?;
                    write_str(self.out, &self.scratch);
                    self.skip_ws();
                    if self.text.get(self.at) != Some(&b':') {
                        return Err(self.syntax("':' expected"));
                    }
                    self.at += 1;
                }
                self.value(depth + 1)?;
                count += 1;
                self.skip_ws();
                match self.text.get(self.at) {
                    Some(b',') => self.at += 1,
                    Some(c) if *c == close => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.syntax("',' or end of container expected")),
                }
            }
        }
        let mut head = Vec::with_capacity(5);
        if object {
            write_map_len(&mut head, count);
        } else {
            write_array_len(&mut head, count);
        }
        let body = header + 5;
        self.out[header..header + head.len()].copy_from_slice(&head);
        if head.len() < 5 {
            self.out.copy_within(body.., header + head.len());
            let len = self.out.len() - (5 - head.len());
            self.out.truncate(len);
        }
        Ok(())
    }

    /// A string token into `scratch`, escapes resolved.
    fn string(&mut self) -> Result<(), TranscodeError> {
        self.at += 1;
        self.scratch.clear();
        loop {
            let start = self.at;
            while matches!(self.text.get(self.at), Some(c) if *c != b'"' && *c != b'\\' && *c >= 0x20) {
                self.at += 1;
            }
            // The input is a &str, and the run stops only at ASCII bytes: a whole UTF-8 slice.
            self.scratch
                .push_str(std::str::from_utf8(&self.text[start..self.at]).map_err(|_| self.syntax("UTF-8"))?);
            match self.text.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    let c = match self.text.get(self.at) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let high = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&high) {
                                if !self.text[self.at + 1..].starts_with(b"\\u") {
                                    return Err(self.syntax("unpaired surrogate"));
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err(self.syntax("unpaired surrogate"));
                                }
                                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
                            } else {
                                high
                            };
                            char::from_u32(code).ok_or_else(|| self.syntax("invalid \\u escape"))?
                        }
                        _ => return Err(self.syntax("invalid escape")),
                    };
                    self.scratch.push(c);
                    self.at += 1;
                }
                _ => return Err(self.syntax("unterminated string")),
            }
        }
    }

    /// Four hex digits after `\u`; leaves `at` on the last one.
    fn hex4(&mut self) -> Result<u32, TranscodeError> {
        let digits = self
            .text
            .get(self.at + 1..self.at + 5)
            .ok_or_else(|| self.syntax("truncated \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.syntax("invalid \\u escape"))?;
        let code = u32::from_str_radix(text, 16).map_err(|_| self.syntax("invalid \\u escape"))?;
        self.at += 4;
        Ok(code)
    }

    fn number(&mut self) -> Result<(), TranscodeError> {
        let start = self.at;
        let mut integral = true;
        while let Some(c) = self.text.get(self.at) {
            match c {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => integral = false,
                _ => break,
            }
            self.at += 1;
        }
        let token = std::str::from_utf8(&self.text[start..self.at]).map_err(|_| self.syntax("number"))?;
        if integral {
            if let Ok(i) = token.parse::<i64>() {
                write_int(self.out, i);
                return Ok(());
            }
            if let Ok(u) = token.parse::<u64>() {
                write_uint(self.out, u);
                return Ok(());
            }
        }
        let v: f64 = token.parse().map_err(|_| self.syntax("invalid number"))?;
        write_float(self.out, v);
        Ok(())
    }
}

/// Decodes one MessagePack value that fills `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let v = r.value(0)?;
    if r.at != bytes.len() {
        return Err(DecodeError::Trailing {
            extra: bytes.len() - r.at,
        });
    }
    Ok(v)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(DecodeError::Truncated { at: self.at })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| acc << 8 | *b as u64))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let at = self.at;
        let b = self.take(1)?[0];
        Ok(match b {
            0x00..=0x7f => Value::Int(b as i64),
            0x80..=0x8f => self.map((b & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((b & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.str((b & 0x1f) as usize)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (b - 0xc4))? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xca => Value::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => {
                let u = self.be(1 << (b - 0xcc))?;
                i64::try_from(u).map(Value::Int).unwrap_or(Value::UInt(u))
            }
            0xd0 => Value::Int(self.be(1)? as u8 as i8 as i64),
            0xd1 => Value::Int(self.be(2)? as u16 as i16 as i64),
            0xd2 => Value::Int(self.be(4)? as u32 as i32 as i64),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xd9..=0xdb => {
                let n = self.be(1 << (b - 0xd9))? as usize;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.be(2 << (b - 0xdc))? as usize;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.be(2 << (b - 0xde))? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(b as i8 as i64),
            _ => return Err(DecodeError::Unsupported { byte: b, at }),
        })
    }

    fn str(&mut self, n: usize) -> Result<Value, DecodeError> {
        let at = self.at;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.to_owned()))
            .map_err(|_| DecodeError::Utf8 { at })
    }

    /// Every element takes at least one byte: a length beyond what is left is truncation, found before allocating.
    fn room_for(&self, elements: usize) -> Result<(), DecodeError> {
        if elements > self.bytes.len() - self.at {
            return Err(DecodeError::Truncated { at: self.bytes.len() });
        }
        Ok(())
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        self.room_for(n)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        self.room_for(n.saturating_mul(2))?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            pairs.push((k, v));
        }
        Ok(Value::Map(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Category;

    /// The decoded MessagePack, as the JSON value it stands for (f32 widened).
    fn to_json(v: &Value) -> serde_json::Value {
        match v {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::F32(f) => (*f as f64).into(),
            Value::F64(f) => (*f).into(),
            Value::Str(s) => s.clone().into(),
            Value::Bin(_) => panic!("no binary in transcoded JSON"),
            Value::Array(a) => a.iter().map(to_json).collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_owned(), to_json(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    #[test]
    fn json_values_survive_the_trip_exactly() {
        let json = r#" {"a":[1.5,-2,0.1,1e-7,123456789012,-9007199254740993],
            "s":"caf\u00e9 \"q\" \ud83d\ude00\n", "e":{}, "l":[], "n":null, "t":true, "f":false,
            "u":18446744073709551615, "long":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]} "#;
        let mut out = Vec::new();
        transcode_json(json, &mut out).unwrap();
        let back = to_json(&decode(&out).unwrap());
        let want: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, want);
        // Integers outside f64's exact range stay exact integers.
        assert_eq!(
            decode(&out).unwrap().get("a").unwrap().as_array().unwrap()[5],
            Value::Int(-9007199254740993)
        );
        // Floats are parsed correctly rounded (serde_json's default parser is
        // one unit off for this one): f32::MAX printed by a 64-bit formatter.
        let mut out = Vec::new();
        transcode_json("3.4028234663852886e38", &mut out).unwrap();
        assert_eq!(decode(&out).unwrap(), Value::F32(f32::MAX));
    }

    #[test]
    fn floats_take_four_bytes_only_when_nothing_is_lost() {
        let mut out = Vec::new();
        write_float(&mut out, 0.5);
        assert_eq!(out.len(), 5);
        assert_eq!(decode(&out).unwrap(), Value::F32(0.5));
        let mut out = Vec::new();
        write_float(&mut out, 0.1);
        assert_eq!(decode(&out).unwrap(), Value::F64(0.1));
        // A value that came from a 32-bit float, printed in full by JSON, goes back to 4 bytes.
        let from_f32 = 12.345678_f32 as f64;
        let mut out = Vec::new();
        transcode_json(&format!("{from_f32}"), &mut out).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(decode(&out).unwrap().as_f64(), Some(from_f32));
    }

    #[test]
    fn every_integer_width_round_trips() {
        for v in [
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_int(&mut out, v);
            assert_eq!(decode(&out).unwrap(), Value::Int(v), "{v}");
        }
        let mut out = Vec::new();
        write_uint(&mut out, u64::MAX);
        assert_eq!(decode(&out).unwrap(), Value::UInt(u64::MAX));
        for len in [0, 15, 16, 65535, 65536] {
            let mut out = Vec::new();
            write_array_len(&mut out, len);
            out.extend(std::iter::repeat_n(0xc0, len));
            assert_eq!(decode(&out).unwrap().as_array().unwrap().len(), len);
            let s = "x".repeat(len);
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(decode(&out).unwrap().as_str(), Some(s.as_str()));
        }
    }

    #[test]
    fn a_sample_has_the_json_sample_s_keys_and_values() {
        let topic = TopicId::new(
            "MTM1M3:1".parse().unwrap(),
            Category::Telemetry,
            "forceActuatorData",
        )
        .unwrap();
        let fields = r#"{"xForce":[1.25,-3.5],"timestamp":1764638000.123456}"#;
        let (bytes, err) = sample_message(
            &topic,
            StreamId::new(7, 2),
            1764638000.5,
            1764638000.6,
            f64::NAN,
            fields,
        );
        assert!(err.is_none());
        let json: serde_json::Value = serde_json::from_str(&crate::browser::sample_message(
            &topic,
            StreamId::new(7, 2),
            1764638000.5,
            1764638000.6,
            f64::NAN,
            fields,
        ))
        .unwrap();
        assert_eq!(to_json(&decode(&bytes).unwrap()), json);
        let frame = batch_frame(
            [bytes.as_slice(), bytes.as_slice()].into_iter(),
            &[(topic.clone(), StreamId::new(3, 0))],
        );
        let v = decode(&frame).unwrap();
        assert_eq!(v.get("type").and_then(Value::as_str), Some("batch"));
        assert_eq!(v.get("samples").unwrap().as_array().unwrap().len(), 2);
        let lost = &v.get("lost").unwrap().as_array().unwrap()[0];
        assert_eq!(lost.get("from_id").and_then(Value::as_str), Some("3-0"));
        assert_eq!(
            lost.get("topic").and_then(Value::as_str),
            Some("forceActuatorData")
        );
    }

    /// The frame `web/src/client/testdata/` holds in both encodings: the
    /// TypeScript client's test decodes the MessagePack one with a standard
    /// decoder and expects exactly the JSON one, so the two encoders (and
    /// the two languages) agree. `MERIDIAN_BLESS=1` rewrites the files after
    /// an intended change of the encoding.
    #[test]
    fn the_shared_test_frame_is_current() {
        let topic = TopicId::new(
            "MTM1M3:1".parse().unwrap(),
            Category::Telemetry,
            "forceActuatorData",
        )
        .unwrap();
        let event = TopicId::new("ATDome:0".parse().unwrap(), Category::Event, "logMessage").unwrap();
        let samples = [
            (
                &topic,
                StreamId::new(1764638000123, 0),
                r#"{"xForce":[1.25,-3.5,0.1,12.345678329467773],"fault":false,"count":-7,"big":9007199254740993,"timestamp":1764638000.1001}"#,
            ),
            (
                &event,
                StreamId::new(1764638000124, 3),
                r#"{"level":20,"message":"Dome \"moving\" \u00e9 \ud83d\ude00","traceback":"","extra":null,"empty":[],"none":{}}"#,
            ),
        ];
        let (src, ing, front) = (1764638000.0995, 1764638000.1201, 1764638000.125);
        let json = crate::browser::batch_frame(
            samples
                .iter()
                .map(|(t, id, f)| crate::browser::sample_message(t, *id, src, ing, front, f))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
            &[(event.clone(), StreamId::new(1764638000100, 0))],
        );
        let encoded: Vec<Vec<u8>> = samples
            .iter()
            .map(|(t, id, f)| sample_message(t, *id, src, ing, front, f).0)
            .collect();
        let binary = batch_frame(
            encoded.iter().map(Vec::as_slice),
            &[(event, StreamId::new(1764638000100, 0))],
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/src/client/testdata");
        // Hex text, so the TypeScript test can import it as text.
        let hex: String = binary.iter().map(|b| format!("{b:02x}")).collect();
        if std::env::var_os("MERIDIAN_BLESS").is_some() {
            std::fs::write(dir.join("batch.json"), format!("{json}\n")).unwrap();
            std::fs::write(dir.join("batch.msgpack.hex"), format!("{hex}\n")).unwrap();
        }
        let want_json = std::fs::read_to_string(dir.join("batch.json")).expect("testdata/batch.json");
        let want_hex =
            std::fs::read_to_string(dir.join("batch.msgpack.hex")).expect("testdata/batch.msgpack.hex");
        assert_eq!(
            want_json.trim_end(),
            json,
            "run with MERIDIAN_BLESS=1 after an intended change"
        );
        assert_eq!(
            want_hex.trim_end(),
            hex,
            "run with MERIDIAN_BLESS=1 after an intended change"
        );
        // The binary frame is the JSON one in fewer bytes.
        assert!(binary.len() < json.len(), "{} vs {}", binary.len(), json.len());
    }

    #[test]
    fn invalid_stored_fields_become_nil_and_say_why() {
        let topic = TopicId::new("Test:1".parse().unwrap(), Category::Event, "x").unwrap();
        let (bytes, err) = sample_message(&topic, StreamId::new(1, 0), 1.0, 1.0, 1.0, r#"{"a":[1,}"#);
        assert!(matches!(err, Some(TranscodeError::Syntax { .. })), "{err:?}");
        assert_eq!(decode(&bytes).unwrap().get("fields"), Some(&Value::Nil));
        for bad in [
            "",
            "{",
            "[1 2]",
            r#"{"a" 1}"#,
            "tru",
            "1 2",
            r#""\x""#,
            r#""\ud800""#,
            "-",
        ] {
            assert!(transcode_json(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert_eq!(
            transcode_json(&deep, &mut Vec::new()),
            Err(TranscodeError::TooDeep)
        );
    }

    #[test]
    fn hostile_bytes_are_refused_without_large_allocations() {
        // An array claiming 4 billion elements in 5 bytes.
        assert!(matches!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&[0xc1]),
            Err(DecodeError::Unsupported { byte: 0xc1, .. })
        ));
        assert!(matches!(
            decode(&[0xd4, 0, 0]),
            Err(DecodeError::Unsupported { .. })
        ));
        assert!(matches!(decode(&[0xa1, 0xff]), Err(DecodeError::Utf8 { .. })));
        assert!(matches!(
            decode(&[0xc0, 0xc0]),
            Err(DecodeError::Trailing { extra: 1 })
        ));
        assert!(matches!(decode(&[0x91; 100]), Err(DecodeError::TooDeep)));
    }
}
