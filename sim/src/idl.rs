//! [`IdlType`]: a field's type as the site declares it (`IDL_Type` in the
//! XML, a kind word in the compact definitions), and the values it can hold.
//!
//! proto carries every integer as an i64 and every float as an f64
//! ([`ValueKind`]); the site's types are narrower (`byte` is 0 to 255, SAL's
//! `long` is 32-bit). A command parameter is checked against its `IdlType`
//! before it is sent (the commander does, see its `params` module), so a
//! value the observatory's middleware could not carry is refused at the door
//! instead of being wrapped or rejected by a CSC.

use meridian_proto::ValueKind;

/// The site's types (the 11 of `ts_xml`, plus the IDL spellings the XML
/// reader also accepts: `octet`, `char`, `unsigned long`, `unsigned long long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdlType {
    Boolean,
    /// Unsigned 8-bit (SAL's `byte` is an `octet`): 0 to 255.
    Byte,
    /// i16.
    Short,
    /// i32.
    Int,
    /// i32: SAL's `long` is 32-bit (Avro `int`).
    Long,
    /// i64.
    LongLong,
    /// u16.
    UnsignedShort,
    /// u32.
    UnsignedInt,
    /// u32 (IDL's `unsigned long`).
    UnsignedLong,
    /// 0 to `i64::MAX`: the u64 range that proto's i64 can carry.
    UnsignedLongLong,
    /// 32-bit: finite and within ±`f32::MAX` once rounded to f32.
    Float,
    /// 64-bit.
    Double,
    /// `string` or `char`.
    String,
}

impl IdlType {
    /// The type of a site spelling (`"unsigned  short"` too), `None` if it is
    /// not one the site uses.
    pub fn parse(idl_type: &str) -> Option<IdlType> {
        let words: Vec<&str> = idl_type.split_whitespace().collect();
        Some(match words.as_slice() {
            ["boolean"] => IdlType::Boolean,
            ["byte"] | ["octet"] => IdlType::Byte,
            ["short"] => IdlType::Short,
            ["int"] => IdlType::Int,
            ["long"] => IdlType::Long,
            ["long", "long"] => IdlType::LongLong,
            ["unsigned", "short"] => IdlType::UnsignedShort,
            ["unsigned", "int"] => IdlType::UnsignedInt,
            ["unsigned", "long"] => IdlType::UnsignedLong,
            ["unsigned", "long", "long"] => IdlType::UnsignedLongLong,
            ["float"] => IdlType::Float,
            ["double"] => IdlType::Double,
            ["string"] | ["char"] => IdlType::String,
            _ => return None,
        })
    }

    /// The site's spelling, as error messages name the type.
    pub fn name(self) -> &'static str {
        match self {
            IdlType::Boolean => "boolean",
            IdlType::Byte => "byte",
            IdlType::Short => "short",
            IdlType::Int => "int",
            IdlType::Long => "long",
            IdlType::LongLong => "long long",
            IdlType::UnsignedShort => "unsigned short",
            IdlType::UnsignedInt => "unsigned int",
            IdlType::UnsignedLong => "unsigned long",
            IdlType::UnsignedLongLong => "unsigned long long",
            IdlType::Float => "float",
            IdlType::Double => "double",
            IdlType::String => "string",
        }
    }

    /// How proto carries it.
    pub fn kind(self) -> ValueKind {
        match self {
            IdlType::Boolean => ValueKind::Bool,
            IdlType::Float | IdlType::Double => ValueKind::Float,
            IdlType::String => ValueKind::Str,
            _ => ValueKind::Int,
        }
    }

    /// The widest type of `kind`: what a field of unstated width is checked as.
    pub fn widest(kind: ValueKind) -> IdlType {
        match kind {
            ValueKind::Bool => IdlType::Boolean,
            ValueKind::Int => IdlType::LongLong,
            ValueKind::Float => IdlType::Double,
            ValueKind::Str => IdlType::String,
        }
    }

    /// The smallest and largest value of an integer type, `None` for the others.
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            IdlType::Byte => (0, u8::MAX.into()),
            IdlType::Short => (i16::MIN.into(), i16::MAX.into()),
            IdlType::Int | IdlType::Long => (i32::MIN.into(), i32::MAX.into()),
            IdlType::LongLong => (i64::MIN, i64::MAX),
            IdlType::UnsignedShort => (0, u16::MAX.into()),
            IdlType::UnsignedInt | IdlType::UnsignedLong => (0, u32::MAX.into()),
            IdlType::UnsignedLongLong => (0, i64::MAX),
            IdlType::Boolean | IdlType::Float | IdlType::Double | IdlType::String => return None,
        })
    }
}

impl std::fmt::Display for IdlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_site_spelling_parses_to_its_kind_and_back() {
        for (text, ty, kind) in [
            ("boolean", IdlType::Boolean, ValueKind::Bool),
            ("byte", IdlType::Byte, ValueKind::Int),
            ("long  long", IdlType::LongLong, ValueKind::Int),
            ("unsigned int", IdlType::UnsignedInt, ValueKind::Int),
            ("float", IdlType::Float, ValueKind::Float),
            ("string", IdlType::String, ValueKind::Str),
        ] {
            assert_eq!(IdlType::parse(text), Some(ty), "{text}");
            assert_eq!(ty.kind(), kind);
            assert_eq!(IdlType::parse(ty.name()), Some(ty));
        }
        assert_eq!(IdlType::parse("quad"), None);
        assert_eq!(IdlType::Byte.int_range(), Some((0, 255)));
        assert_eq!(IdlType::Long.int_range(), Some((-2147483648, 2147483647)));
        assert_eq!(IdlType::Double.int_range(), None);
    }
}
