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
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
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
        let len = u8::try_from(value.len()).expect("short strings are at most 255 bytes");
        self.u8(len);
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// A byte string of at most u32::MAX bytes, prefixed by its length as a u32.
    pub fn long_bytes(&mut self, value: &[u8]) {
        self.u32(u32::try_from(value.len()).expect("at most u32::MAX bytes"));
        self.bytes.extend_from_slice(value);
    }
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
        let bytes = writer.bytes;
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8("a").unwrap(), 7);
        assert_eq!(reader.u32("b").unwrap(), 70_000);
        assert_eq!(reader.u64("c").unwrap(), u64::MAX);
        assert_eq!(reader.u128("d").unwrap(), 1 << 100);
        assert!(reader.bool("e").unwrap());
        assert_eq!(reader.short_str("f").unwrap(), "héllo");
        assert_eq!(reader.long_bytes("g", 3).unwrap(), b"abc");
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
                reader.long_bytes("g", 3)
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
    }
}
