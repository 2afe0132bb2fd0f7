//! Byte layouts of the partition log on disk, version 1. Little-endian, fixed offsets.
//!
//! * File header (64 B) opens every `.log` and `.idx` file:
//!   `[0..8 magic][8..12 version u32][12..16 zero][16..24 base_op u64][24..32 offset_first u64]`
//!   `[32..40 truncate_to u64][40..56 zero][56..64 checksum]` (offset_first: the offset the
//!   segment's first record takes; truncate_to, in an `.idx` header: a truncation in progress
//!   that recovery must finish, every op from it on is discarded; 0 when none).
//! * Record (64 B header + payload) in a `.log` file, one per prepare:
//!   `[0..4 magic][4..8 payload length u32][8..16 op][16..32 prepare checksum u128]`
//!   `[32..40 offset_first][40..48 timestamp µs][48..52 message_count u32][52..56 zero]`
//!   `[56..64 checksum over bytes 0..56 and the payload]`.
//! * Index entry (64 B) in a `.idx` file, at `64 + (op − base_op) · 64`, written only after its
//!   record is durable (the redundant header of the record):
//!   `[0..8 op][8..24 prepare checksum][24..32 record position][32..40 offset_first]`
//!   `[40..48 timestamp][48..52 payload length][52..56 message_count][56..64 checksum of 0..56]`.

use crate::checksum::checksum64;

pub const FORMAT_VERSION: u32 = 1;
pub const FILE_HEADER_SIZE: u64 = 64;
pub const RECORD_HEADER_SIZE: u64 = 64;
pub const INDEX_ENTRY_SIZE: u64 = 64;
/// The largest payload one record may carry.
pub const PAYLOAD_SIZE_MAX: u32 = 64 * 1024 * 1024;

pub const LOG_MAGIC: [u8; 8] = *b"GALGOLOG";
pub const INDEX_MAGIC: [u8; 8] = *b"GALGOIDX";
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"GREC");

/// What the log knows of one prepare besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// The VSR op; dense within a partition log.
    pub op: u64,
    /// The prepare's VSR checksum (its identity).
    pub checksum: u128,
    /// Offset of the first message of the batch; dense across ops.
    pub offset_first: u64,
    pub message_count: u32,
    /// The batch timestamp (µs) the primary assigned; non-decreasing across ops.
    pub timestamp: u64,
}

/// An index entry: where the record of `meta.op` lies in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub meta: EntryMeta,
    pub position: u64,
    pub length: u32,
}

impl IndexEntry {
    /// The position just past this entry's record.
    pub fn record_end(&self) -> u64 {
        self.position + RECORD_HEADER_SIZE + u64::from(self.length)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    BadMagic,
    BadVersion(u32),
    BadChecksum,
    BadLength,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// The header of a `.log` or `.idx` file (or of another file kind, by its magic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub base_op: u64,
    pub offset_first: u64,
    /// A truncation in progress: ops from this one on are discarded. 0 when none.
    pub truncate_to: u64,
}

impl FileHeader {
    pub fn new(magic: [u8; 8], base_op: u64, offset_first: u64) -> FileHeader {
        FileHeader {
            magic,
            base_op,
            offset_first,
            truncate_to: 0,
        }
    }

    pub fn encode(&self) -> [u8; FILE_HEADER_SIZE as usize] {
        let mut bytes = [0u8; FILE_HEADER_SIZE as usize];
        bytes[0..8].copy_from_slice(&self.magic);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.base_op.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.offset_first.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.truncate_to.to_le_bytes());
        let checksum = checksum64(&[&bytes[0..56]]);
        bytes[56..64].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(FileHeader::decode(self.magic, &bytes), Ok(*self));
        bytes
    }

    pub fn decode(magic: [u8; 8], bytes: &[u8]) -> Result<FileHeader, DecodeError> {
        assert_eq!(bytes.len(), FILE_HEADER_SIZE as usize);
        if checksum64(&[&bytes[0..56]]) != u64_at(bytes, 56) {
            return Err(DecodeError::BadChecksum);
        }
        if bytes[0..8] != magic {
            return Err(DecodeError::BadMagic);
        }
        let version = u32_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        Ok(FileHeader {
            magic,
            base_op: u64_at(bytes, 16),
            offset_first: u64_at(bytes, 24),
            truncate_to: u64_at(bytes, 32),
        })
    }
}

/// offset_first and timestamp sit at the same place in records and index entries.
fn encode_offset_and_timestamp(bytes: &mut [u8], meta: &EntryMeta) {
    bytes[32..40].copy_from_slice(&meta.offset_first.to_le_bytes());
    bytes[40..48].copy_from_slice(&meta.timestamp.to_le_bytes());
}

/// The 64-byte header of a record carrying `payload`.
pub fn encode_record_header(meta: &EntryMeta, payload: &[u8]) -> [u8; RECORD_HEADER_SIZE as usize] {
    encode_record_header_parts(meta, &[payload])
}

/// `encode_record_header` of the payload made of `parts` in order.
pub fn encode_record_header_parts(
    meta: &EntryMeta,
    parts: &[&[u8]],
) -> [u8; RECORD_HEADER_SIZE as usize] {
    let payload_len: usize = parts.iter().map(|part| part.len()).sum();
    assert!(payload_len <= PAYLOAD_SIZE_MAX as usize);
    let mut bytes = [0u8; RECORD_HEADER_SIZE as usize];
    bytes[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    bytes[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    bytes[8..16].copy_from_slice(&meta.op.to_le_bytes());
    bytes[16..32].copy_from_slice(&meta.checksum.to_le_bytes());
    encode_offset_and_timestamp(&mut bytes, meta);
    bytes[48..52].copy_from_slice(&meta.message_count.to_le_bytes());
    let mut hashed: Vec<&[u8]> = Vec::with_capacity(1 + parts.len());
    hashed.push(&bytes[0..56]);
    hashed.extend_from_slice(parts);
    let checksum = checksum64(&hashed);
    bytes[56..64].copy_from_slice(&checksum.to_le_bytes());
    let decoded = decode_record_header(&bytes).expect("an encoded header decodes");
    assert_eq!(decoded, (*meta, payload_len as u32));
    bytes
}

/// The meta and payload length a record header claims (its checksum covers the payload too:
/// check it with `record_valid`).
pub fn decode_record_header(bytes: &[u8]) -> Result<(EntryMeta, u32), DecodeError> {
    assert_eq!(bytes.len(), RECORD_HEADER_SIZE as usize);
    if u32_at(bytes, 0) != RECORD_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let length = u32_at(bytes, 4);
    if length > PAYLOAD_SIZE_MAX || u32_at(bytes, 52) != 0 {
        return Err(DecodeError::BadLength);
    }
    let meta = EntryMeta {
        op: u64_at(bytes, 8),
        checksum: u128_at(bytes, 16),
        offset_first: u64_at(bytes, 32),
        message_count: u32_at(bytes, 48),
        timestamp: u64_at(bytes, 40),
    };
    Ok((meta, length))
}

/// A whole record (header and payload) in one buffer, ready to write.
pub fn encode_record(meta: &EntryMeta, payload: &[u8]) -> bytes::Bytes {
    let mut record = bytes::BytesMut::with_capacity(RECORD_HEADER_SIZE as usize + payload.len());
    record.extend_from_slice(&encode_record_header(meta, payload));
    record.extend_from_slice(payload);
    record.freeze()
}

/// The payload of `record` (header and payload read in one buffer) if it is intact and is the
/// record `expected` describes.
pub fn verified_payload<'a>(record: &'a [u8], expected: &EntryMeta) -> Option<&'a [u8]> {
    if record.len() < RECORD_HEADER_SIZE as usize {
        return None;
    }
    let (header, payload) = record.split_at(RECORD_HEADER_SIZE as usize);
    let claimed = decode_record_header(header).ok().map(|(meta, _)| meta);
    (record_valid(header, payload) && claimed.as_ref() == Some(expected)).then_some(payload)
}

/// True when `header` (64 B) and `payload` form an intact record.
pub fn record_valid(header: &[u8], payload: &[u8]) -> bool {
    matches!(decode_record_header(header), Ok((_, length)) if length as usize == payload.len())
        && checksum64(&[&header[0..56], payload]) == u64_at(header, 56)
}

pub fn encode_index_entry(entry: &IndexEntry) -> [u8; INDEX_ENTRY_SIZE as usize] {
    let mut bytes = [0u8; INDEX_ENTRY_SIZE as usize];
    bytes[0..8].copy_from_slice(&entry.meta.op.to_le_bytes());
    bytes[8..24].copy_from_slice(&entry.meta.checksum.to_le_bytes());
    bytes[24..32].copy_from_slice(&entry.position.to_le_bytes());
    encode_offset_and_timestamp(&mut bytes, &entry.meta);
    bytes[48..52].copy_from_slice(&entry.length.to_le_bytes());
    bytes[52..56].copy_from_slice(&entry.meta.message_count.to_le_bytes());
    let checksum = checksum64(&[&bytes[0..56]]);
    bytes[56..64].copy_from_slice(&checksum.to_le_bytes());
    assert_eq!(decode_index_entry(&bytes), Ok(*entry));
    bytes
}

pub fn decode_index_entry(bytes: &[u8]) -> Result<IndexEntry, DecodeError> {
    assert_eq!(bytes.len(), INDEX_ENTRY_SIZE as usize);
    if checksum64(&[&bytes[0..56]]) != u64_at(bytes, 56) {
        return Err(DecodeError::BadChecksum);
    }
    let length = u32_at(bytes, 48);
    if length > PAYLOAD_SIZE_MAX {
        return Err(DecodeError::BadLength);
    }
    Ok(IndexEntry {
        meta: EntryMeta {
            op: u64_at(bytes, 0),
            checksum: u128_at(bytes, 8),
            offset_first: u64_at(bytes, 32),
            message_count: u32_at(bytes, 52),
            timestamp: u64_at(bytes, 40),
        },
        position: u64_at(bytes, 24),
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta {
            op: 42,
            checksum: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
            offset_first: 1000,
            message_count: 7,
            timestamp: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_caught() {
        let payload = vec![9u8; 300];
        let header = encode_record_header(&meta(), &payload);
        assert!(record_valid(&header, &payload));
        for bit in (0..(64 + 300) * 8).step_by(13) {
            let mut h = header;
            let mut p = payload.clone();
            if bit < 512 {
                h[bit / 8] ^= 1 << (bit % 8);
            } else {
                p[(bit - 512) / 8] ^= 1 << (bit % 8);
            }
            assert!(!record_valid(&h, &p), "bit {bit} flipped unnoticed");
        }
    }

    #[test]
    fn index_entries_and_file_headers_round_trip_and_detect_damage() {
        let entry = IndexEntry {
            meta: meta(),
            position: 4096,
            length: 300,
        };
        let mut bytes = encode_index_entry(&entry);
        assert_eq!(decode_index_entry(&bytes), Ok(entry));
        bytes[30] ^= 1;
        assert_eq!(decode_index_entry(&bytes), Err(DecodeError::BadChecksum));
        assert_eq!(
            decode_index_entry(&[0u8; 64]),
            Err(DecodeError::BadChecksum)
        );

        let mut header = FileHeader::new(LOG_MAGIC, 77, 5000);
        header.truncate_to = 90;
        let bytes = header.encode();
        assert_eq!(FileHeader::decode(LOG_MAGIC, &bytes), Ok(header));
        assert_eq!(
            FileHeader::decode(INDEX_MAGIC, &bytes),
            Err(DecodeError::BadMagic)
        );
        let mut damaged = bytes;
        damaged[17] ^= 4;
        assert_eq!(
            FileHeader::decode(LOG_MAGIC, &damaged),
            Err(DecodeError::BadChecksum)
        );
    }
}
