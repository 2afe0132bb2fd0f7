//! Body primitives of the Iggy binary protocol 0.11.0: a bounds-checked reader (identifiers,
//! names, integers), the options block of CreateTopic, and the writers replies use. Every
//! malformed input is an error carrying the IggyError code to answer with, never a panic.

use galgo_replica::metadata::{Durability, Ident, TopicOptions};

use crate::codes::{
    ERROR_INVALID_FORMAT, ERROR_INVALID_OPTION_VALUE, ERROR_OPTIONS_BLOCK_TOO_LARGE,
    ERROR_UNSUPPORTED_OPTION_KEY,
};

/// Options one block may hold, and its bytes, at most.
pub const OPTIONS_MAX: usize = 1024;
pub const OPTIONS_BYTES_MAX: usize = 100_000;

/// A request the gateway cannot take: the IggyError code to answer with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub code: u32,
    pub why: String,
}

impl WireError {
    pub fn new(code: u32, why: impl Into<String>) -> WireError {
        WireError {
            code,
            why: why.into(),
        }
    }

    fn format(why: impl Into<String>) -> WireError {
        WireError::new(ERROR_INVALID_FORMAT, why)
    }
}

pub struct WireReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> WireReader<'a> {
    pub fn new(bytes: &'a [u8]) -> WireReader<'a> {
        WireReader { bytes, at: 0 }
    }

    pub fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| WireError::format(format!("{what}: the body ends early")))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// `[len u8][utf8]`, 1 to 255 bytes.
    pub fn name(&mut self, what: &str) -> Result<String, WireError> {
        let len = self.u8(what)?;
        if len == 0 {
            return Err(WireError::format(format!("{what}: an empty name")));
        }
        let bytes = self.take(usize::from(len), what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| WireError::format(format!("{what}: not UTF-8")))
    }

    /// `[kind u8][len u8][value]`: 1 = numeric (4 bytes), 2 = string (1 to 255 bytes).
    pub fn identifier(&mut self, what: &str) -> Result<Ident, WireError> {
        let kind = self.u8(what)?;
        let len = self.u8(what)?;
        match (kind, len) {
            (1, 4) => Ok(Ident::Id(self.u32(what)?)),
            (2, 1..=255) => {
                let bytes = self.take(usize::from(len), what)?;
                let name = String::from_utf8(bytes.to_vec())
                    .map_err(|_| WireError::format(format!("{what}: not UTF-8")))?;
                Ok(Ident::Name(name))
            }
            _ => Err(WireError::new(
                crate::codes::ERROR_INVALID_FORMAT,
                format!("{what}: identifier kind {kind} with {len} bytes"),
            )),
        }
    }

    /// Bytes not read yet.
    pub fn rest_len(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    /// Every byte must have been read.
    pub fn finish(&self, what: &str) -> Result<(), WireError> {
        if self.at != self.bytes.len() {
            return Err(WireError::format(format!(
                "{what}: {} bytes past the end",
                self.bytes.len() - self.at
            )));
        }
        Ok(())
    }
}

/// One value of an options block.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OptionValue {
    String(String),
    Bool(bool),
    U32(u32),
    U64(u64),
}

/// Parses an options block (`[kind u8][len u32][bytes]` key, then value, repeated) into
/// string keys and typed values: no duplicates, bounded in entries and bytes.
fn parse_options(bytes: &[u8]) -> Result<Vec<(String, OptionValue)>, WireError> {
    if bytes.len() > OPTIONS_BYTES_MAX {
        return Err(WireError::new(
            ERROR_OPTIONS_BLOCK_TOO_LARGE,
            format!("an options block of {} bytes", bytes.len()),
        ));
    }
    let mut r = WireReader::new(bytes);
    let mut options: Vec<(String, OptionValue)> = Vec::new();
    while r.at < bytes.len() {
        if options.len() == OPTIONS_MAX {
            return Err(WireError::new(
                ERROR_OPTIONS_BLOCK_TOO_LARGE,
                format!("more than {OPTIONS_MAX} options"),
            ));
        }
        let (key_kind, key) = tlv(&mut r)?;
        if key_kind != 2 {
            return Err(WireError::format("an option key that is not a string"));
        }
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| WireError::format("an option key that is not UTF-8"))?;
        let (value_kind, value) = tlv(&mut r)?;
        let value = match (value_kind, value.len()) {
            (2, _) => OptionValue::String(
                String::from_utf8(value.to_vec())
                    .map_err(|_| WireError::format("an option value that is not UTF-8"))?,
            ),
            (3, 1) if value[0] <= 1 => OptionValue::Bool(value[0] == 1),
            (11, 4) => OptionValue::U32(u32::from_le_bytes(value.try_into().expect("4"))),
            (12, 8) => OptionValue::U64(u64::from_le_bytes(value.try_into().expect("8"))),
            _ => {
                return Err(WireError::new(
                    ERROR_INVALID_OPTION_VALUE,
                    format!(
                        "option {key}: value kind {value_kind} of {} bytes",
                        value.len()
                    ),
                ))
            }
        };
        if options.iter().any(|(other, _)| *other == key) {
            return Err(WireError::format(format!("option {key} given twice")));
        }
        options.push((key, value));
    }
    Ok(options)
}

fn tlv<'a>(r: &mut WireReader<'a>) -> Result<(u8, &'a [u8]), WireError> {
    let kind = r.u8("option kind")?;
    let len = r.u32("option length")?;
    if kind == 0 || !(1..=255).contains(&len) {
        return Err(WireError::format(format!(
            "an option of kind {kind} with {len} bytes"
        )));
    }
    Ok((kind, r.take(len as usize, "option")?))
}

fn durability(key: &str, value: &OptionValue) -> Result<Durability, WireError> {
    match value {
        // Iggy's "replicated" (acknowledged once replicated) and "persisted" (once on disk):
        // Galgo acknowledges on a quorum's disks, which keeps both promises. Relaxed durability
        // is never implied by a client default; it is asked for by name.
        OptionValue::String(s) if s == "replicated" || s == "persisted" => Ok(Durability::Quorum),
        OptionValue::String(s) if s == "relaxed" => Ok(Durability::Relaxed),
        _ => Err(WireError::new(
            ERROR_INVALID_OPTION_VALUE,
            format!("{key}: {value:?} (replicated, persisted or relaxed)"),
        )),
    }
}

fn u64_option(key: &str, value: &OptionValue) -> Result<u64, WireError> {
    match value {
        OptionValue::U64(v) => Ok(*v),
        OptionValue::U32(v) => Ok(u64::from(*v)),
        _ => Err(WireError::new(
            ERROR_INVALID_OPTION_VALUE,
            format!("{key}: {value:?} (an integer)"),
        )),
    }
}

/// The topic options an options block sets, over the defaults. Both generations of keys are
/// taken: `enforce_fsync` (older servers) and `durability` / `consumer_offset_durability`
/// (0.11.0 clients send both of these always).
pub fn topic_options(bytes: &[u8]) -> Result<TopicOptions, WireError> {
    update_topic_options(TopicOptions::default(), bytes)
}

/// `base` with the options an options block sets (UpdateTopic changes only what it names).
pub fn update_topic_options(base: TopicOptions, bytes: &[u8]) -> Result<TopicOptions, WireError> {
    let mut options = base;
    for (key, value) in parse_options(bytes)? {
        match key.as_str() {
            "durability" => options.durability = durability(&key, &value)?,
            "consumer_offset_durability" => {
                options.consumer_offset_durability = durability(&key, &value)?
            }
            "enforce_fsync" => match value {
                // Galgo always writes durably before acknowledging; either value is kept.
                OptionValue::Bool(_) => {}
                other => {
                    return Err(WireError::new(
                        ERROR_INVALID_OPTION_VALUE,
                        format!("enforce_fsync: {other:?} (a bool)"),
                    ))
                }
            },
            "message_expiry" => {
                // 0 is the server default (never), u64::MAX never.
                let us = u64_option(&key, &value)?;
                options.message_expiry_us = if us == 0 { u64::MAX } else { us };
            }
            "max_topic_size" => {
                let size = u64_option(&key, &value)?;
                options.max_topic_size = if size == 0 { u64::MAX } else { size };
            }
            "segment_size" => {
                let size = u64_option(&key, &value)?;
                if size != 0 {
                    options.segment_size = size;
                }
            }
            "compression_algorithm" => match value {
                OptionValue::String(s) if s == "none" => {}
                other => {
                    return Err(WireError::new(
                        ERROR_INVALID_OPTION_VALUE,
                        format!("compression_algorithm: {other:?} (only none is supported)"),
                    ))
                }
            },
            // Iggy's write-buffer knobs: Galgo writes each batch durably as it comes.
            "messages_required_to_save" | "size_of_messages_required_to_save" => {
                u64_option(&key, &value)?;
            }
            "preallocate_segments" => {}
            _ => {
                return Err(WireError::new(
                    ERROR_UNSUPPORTED_OPTION_KEY,
                    format!("unknown option {key}"),
                ))
            }
        }
    }
    Ok(options)
}

/// Appends `[len u8][bytes]` (names are at most 255 bytes; longer ones are cut at a
/// character boundary, which only a bug upstream could need).
pub fn put_name(out: &mut Vec<u8>, name: &str) {
    let mut end = name.len().min(255);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&name.as_bytes()[..end]);
}

/// Appends `[len u32][utf8]`.
pub fn put_long_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).expect("short").to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The result section of a successful result-framed reply (`count = 0`), then `payload`.
pub fn result_ok(payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + payload.len());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(payload);
    body
}

/// The result section of a committed refusal: one entry holding the error code.
pub fn result_error(code: u32) -> Vec<u8> {
    assert!(code != 0);
    let mut body = Vec::with_capacity(12);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&code.to_le_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(out: &mut Vec<u8>, key: &str, kind: u8, value: &[u8]) {
        out.push(2);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.push(kind);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }

    #[test]
    fn identifiers_and_names_read_back_and_malformed_ones_are_refused() {
        let mut bytes = vec![1, 4, 7, 0, 0, 0, 2, 3];
        bytes.extend_from_slice(b"abc");
        bytes.push(2);
        bytes.extend_from_slice(b"xy");
        let mut r = WireReader::new(&bytes);
        assert_eq!(r.identifier("stream").unwrap(), Ident::Id(7));
        assert_eq!(
            r.identifier("topic").unwrap(),
            Ident::Name("abc".to_string())
        );
        assert_eq!(r.name("name").unwrap(), "xy");
        r.finish("body").unwrap();
        for bad in [
            &[1u8, 3, 0, 0, 0][..],
            &[2, 0],
            &[3, 1, 0],
            &[2, 5, b'a'],
            &[2, 1, 0xff],
        ] {
            let error = WireReader::new(bad).identifier("x").unwrap_err();
            assert_eq!(error.code, ERROR_INVALID_FORMAT);
        }
        assert!(WireReader::new(&[0]).name("n").is_err());
        assert!(WireReader::new(&[1, 2]).finish("b").is_err());
    }

    #[test]
    fn the_0_11_default_topic_options_are_taken() {
        // The block the 0.11.0 client sends for a topic created with defaults.
        let mut block = Vec::new();
        option(&mut block, "consumer_offset_durability", 2, b"replicated");
        option(&mut block, "durability", 2, b"replicated");
        assert_eq!(block.len(), 76);
        assert_eq!(topic_options(&block).unwrap(), TopicOptions::default());
        assert_eq!(topic_options(&[]).unwrap(), TopicOptions::default());
        let mut set = Vec::new();
        option(&mut set, "message_expiry", 12, &5_000_000u64.to_le_bytes());
        option(&mut set, "enforce_fsync", 3, &[1]);
        option(&mut set, "durability", 2, b"relaxed");
        let options = topic_options(&set).unwrap();
        assert_eq!(options.message_expiry_us, 5_000_000);
        assert_eq!(options.durability, Durability::Relaxed);
    }

    #[test]
    fn bad_options_are_refused_with_their_codes() {
        let mut unknown = Vec::new();
        option(&mut unknown, "colour", 2, b"red");
        assert_eq!(
            topic_options(&unknown).unwrap_err().code,
            ERROR_UNSUPPORTED_OPTION_KEY
        );
        let mut bad_value = Vec::new();
        option(&mut bad_value, "durability", 2, b"maybe");
        assert_eq!(
            topic_options(&bad_value).unwrap_err().code,
            ERROR_INVALID_OPTION_VALUE
        );
        let mut twice = Vec::new();
        option(&mut twice, "durability", 2, b"replicated");
        option(&mut twice, "durability", 2, b"replicated");
        assert!(topic_options(&twice).is_err());
        let mut cut = Vec::new();
        option(&mut cut, "durability", 2, b"replicated");
        cut.pop();
        assert!(topic_options(&cut).is_err());
        assert_eq!(
            topic_options(&vec![0u8; OPTIONS_BYTES_MAX + 1])
                .unwrap_err()
                .code,
            ERROR_OPTIONS_BLOCK_TOO_LARGE
        );
    }

    #[test]
    fn result_sections_have_the_0_11_layout() {
        assert_eq!(result_ok(b"x"), b"\0\0\0\0x");
        assert_eq!(result_error(1012), [1, 0, 0, 0, 0, 0, 0, 0, 0xf4, 3, 0, 0]);
    }
}
