//! A bounded little-endian binary codec for replicated operations: every integer has an
//! explicit width, every string and list a length prefix checked against a limit, and a
//! reader never reads past its input (a short or oversized field is an error, not a panic).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Short { field: &'static str },
    /// A length prefix passed its limit.
    TooLong {
        field: &'static str,
        len: u64,
        max: u64,
    },
    /// A string was not UTF-8.
    NotUtf8 { field: &'static str },
    /// An enum tag (operation kind, status, ...) this version does not know.
    UnknownTag { field: &'static str, tag: u8 },
    /// Bytes left over after the last field.
    Trailing { bytes: usize },
    /// Well-formed fields that break an invariant of what they encode.
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { field } => write!(f, "input ends inside {field}"),
            DecodeError::TooLong { field, len, max } => {
                write!(f, "{field} is {len} long, the limit is {max}")
            }
            DecodeError::NotUtf8 { field } => write!(f, "{field} is not UTF-8"),
            DecodeError::UnknownTag { field, tag } => write!(f, "unknown {field} {tag}"),
            DecodeError::Trailing { bytes } => write!(f, "{bytes} bytes after the last field"),
            DecodeError::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a value cannot be encoded (it breaks a limit of the format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Appends fields to a byte vector. A field that breaks a limit of the format is recorded and
/// `finish` returns the first such error instead of the bytes.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
    error: Option<EncodeError>,
}

impl Writer {
    /// Records that the value being encoded breaks a limit; `finish` will fail.
    pub fn fail(&mut self, why: String) {
        self.error.get_or_insert(EncodeError(why));
    }

    /// The bytes, or the first limit a field broke.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.bytes),
        }
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    /// A string of at most 255 bytes, prefixed by its length as a u8.
    pub fn short_str(&mut self, value: &str) {
        match u8::try_from(value.len()) {
            Ok(len) => {
                self.u8(len);
                self.bytes.extend_from_slice(value.as_bytes());
            }
            Err(_) => self.fail(format!("a string of {} bytes (at most 255)", value.len())),
        }
    }

    /// An optional u64: a presence byte, then the value.
    pub fn option_u64(&mut self, value: Option<u64>) {
        self.bool(value.is_some());
        self.u64(value.unwrap_or(0));
    }

    /// The length of a list of `what` as a u32; past `max` the encoding fails (the reader's
    /// `count` refuses the same lengths).
    pub fn count(&mut self, len: usize, max: u32, what: &str) {
        match u32::try_from(len) {
            Ok(len) if len <= max => self.u32(len),
            _ => self.fail(format!("{len} {what} (at most {max})")),
        }
    }

    /// A byte string of at most u32::MAX bytes, prefixed by its length as a u32.
    pub fn long_bytes(&mut self, value: &[u8]) {
        self.u32(u32::try_from(value.len()).expect("at most u32::MAX bytes"));
        self.bytes.extend_from_slice(value);
    }
}

/// The longest prefix of `text` a short string holds (255 bytes), cut at a character
/// boundary: for human-readable reasons, where a cut is better than an error.
pub fn short_prefix(text: &str) -> &str {
    let mut end = text.len().min(usize::from(u8::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads fields from a byte slice, front to back.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Short { field });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let bytes = self.take(2, field)?;
        Ok(u16::from_le_bytes(bytes.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(4, field)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(8, field)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    pub fn u128(&mut self, field: &'static str) -> Result<u128, DecodeError> {
        let bytes = self.take(16, field)?;
        Ok(u128::from_le_bytes(bytes.try_into().expect("16 bytes")))
    }

    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { field, tag }),
        }
    }

    pub fn short_str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(field)?;
        let bytes = self.take(usize::from(len), field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 { field })
    }

    pub fn long_bytes(&mut self, field: &'static str, max: u32) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(field)?;
        if len > max {
            return Err(DecodeError::TooLong {
                field,
                len: u64::from(len),
                max: u64::from(max),
            });
        }
        Ok(self.take(len as usize, field)?.to_vec())
    }

    pub fn option_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        let present = self.bool(field)?;
        let value = self.u64(field)?;
        Ok(present.then_some(value))
    }

    /// A format's version byte, which must be `expected`.
    pub fn version(&mut self, field: &'static str, expected: u8) -> Result<(), DecodeError> {
        match self.u8(field)? {
            version if version == expected => Ok(()),
            tag => Err(DecodeError::UnknownTag { field, tag }),
        }
    }

    /// A list count, checked against `max` before anything is allocated for it.
    pub fn count(&mut self, field: &'static str, max: u32) -> Result<u32, DecodeError> {
        let count = self.u32(field)?;
        if count > max {
            return Err(DecodeError::TooLong {
                field,
                len: u64::from(count),
                max: u64::from(max),
            });
        }
        Ok(count)
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                bytes: self.bytes.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_bad_input_is_an_error() {
        let mut writer = Writer::default();
        writer.u8(7);
        writer.u32(70_000);
        writer.u64(u64::MAX);
        writer.u128(1 << 100);
        writer.bool(true);
        writer.short_str("héllo");
        writer.long_bytes(b"abc");
        writer.option_u64(Some(u64::MAX));
        writer.option_u64(None);
        let bytes = writer.finish().unwrap();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8("a").unwrap(), 7);
        assert_eq!(reader.u32("b").unwrap(), 70_000);
        assert_eq!(reader.u64("c").unwrap(), u64::MAX);
        assert_eq!(reader.u128("d").unwrap(), 1 << 100);
        assert!(reader.bool("e").unwrap());
        assert_eq!(reader.short_str("f").unwrap(), "héllo");
        assert_eq!(reader.long_bytes("g", 3).unwrap(), b"abc");
        assert_eq!(reader.option_u64("h").unwrap(), Some(u64::MAX));
        assert_eq!(reader.option_u64("i").unwrap(), None);
        reader.finish().unwrap();

        // Every truncation of the input fails cleanly.
        for cut in 0..bytes.len() {
            let mut reader = Reader::new(&bytes[..cut]);
            let result = (|| {
                reader.u8("a")?;
                reader.u32("b")?;
                reader.u64("c")?;
                reader.u128("d")?;
                reader.bool("e")?;
                reader.short_str("f")?;
                reader.long_bytes("g", 3)?;
                reader.option_u64("h")?;
                reader.option_u64("i")
            })();
            assert!(
                matches!(result, Err(DecodeError::Short { .. })),
                "cut {cut}"
            );
        }
        let mut reader = Reader::new(&[2]);
        assert_eq!(
            reader.bool("flag"),
            Err(DecodeError::UnknownTag {
                field: "flag",
                tag: 2
            })
        );
        let mut reader = Reader::new(&[9, 0, 0, 0]);
        assert!(matches!(
            reader.count("list", 8),
            Err(DecodeError::TooLong { len: 9, .. })
        ));
        let mut reader = Reader::new(&[2, 0xff, 0xfe]);
        assert_eq!(
            reader.short_str("name"),
            Err(DecodeError::NotUtf8 { field: "name" })
        );
        assert_eq!(
            Reader::new(&[1]).finish(),
            Err(DecodeError::Trailing { bytes: 1 })
        );
        let mut writer = Writer::default();
        writer.short_str(&"x".repeat(256));
        writer.u8(1);
        assert!(
            writer.finish().is_err(),
            "an over-long string is an error, not a panic"
        );
    }
}
