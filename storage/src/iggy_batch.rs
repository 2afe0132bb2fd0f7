//! The Iggy 0.11.0 message batch layout (`reference/iggy.md` §2.6), the payload of a partition
//! prepare: a 256-byte batch header, then frames of [48-byte header][payload][user headers].
//!
//! Batch header: `[0..8 partition_id][8..16 base_offset][16..24 base_timestamp µs]`
//! `[24..32 origin_timestamp µs][32..40 batch_length][40..48 batch_checksum][48..52
//! message_count u32][52..256 zero]`. Frame header: `[0..8 checksum][8..24 id u128][24..28
//! offset_delta u32][28..32 timestamp_delta u32][32..36 user_headers_length u32][36..40
//! payload_length u32][40..48 zero]`. Frame checksum: xxh3-64 over frame bytes 8..48, payload and
//! user headers. Batch checksum: xxh3-64 over header bytes 0..40 and 48..52 (the six meta
//! fields and the message count), then each frame's checksum field — as the iggy 0.11.0 client
//! computes it (its `calculate_batch_checksum`), checked by the gateway's compatibility test.
//!
//! A client sends partition id, base offset and base timestamp as 0; the server stamps them
//! (`stamp_slice`, which also cuts a stored batch to the offsets a poll asks for).

use crate::checksum::checksum64;

pub const BATCH_HEADER_SIZE: usize = 256;
pub const FRAME_HEADER_SIZE: usize = 48;
pub const MESSAGE_PAYLOAD_MAX: u32 = 64_000_000;
pub const USER_HEADERS_MAX: u32 = 100_000;

/// One message to put in a batch.
pub struct Message<'a> {
    pub id: u128,
    pub payload: &'a [u8],
    pub user_headers: &'a [u8],
    pub timestamp_delta: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: u64,
    pub base_timestamp: u64,
    pub message_count: u32,
    /// The first message's offset delta (0 in a batch as a client sends it).
    pub first_delta: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    TooShort,
    LengthMismatch {
        header: u64,
        actual: u64,
    },
    ReservedNotZero,
    FramesDoNotTile,
    MessageTooLarge,
    BadFrameChecksum(u32),
    BadBatchChecksum,
    /// A message's offset delta does not follow the one before it (offsets would repeat or
    /// run into the next batch).
    BadOffsetDelta(u32),
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn batch_checksum(header: &[u8], frame_checksums: &[u64]) -> u64 {
    let sums: Vec<u8> = frame_checksums
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    checksum64(&[&header[0..40], &header[48..52], &sums])
}

/// Builds a stamped batch of `messages` (offset deltas are their indexes).
pub fn build(
    partition_id: u64,
    base_offset: u64,
    base_timestamp: u64,
    messages: &[Message<'_>],
) -> Vec<u8> {
    let blob: usize = messages
        .iter()
        .map(|m| FRAME_HEADER_SIZE + m.payload.len() + m.user_headers.len())
        .sum();
    let mut bytes = vec![0u8; BATCH_HEADER_SIZE];
    bytes.reserve(blob);
    let mut frame_checksums = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        assert!(message.payload.len() <= MESSAGE_PAYLOAD_MAX as usize);
        assert!(message.user_headers.len() <= USER_HEADERS_MAX as usize);
        let mut frame = [0u8; FRAME_HEADER_SIZE];
        frame[8..24].copy_from_slice(&message.id.to_le_bytes());
        frame[24..28].copy_from_slice(&(index as u32).to_le_bytes());
        frame[28..32].copy_from_slice(&message.timestamp_delta.to_le_bytes());
        frame[32..36].copy_from_slice(&(message.user_headers.len() as u32).to_le_bytes());
        frame[36..40].copy_from_slice(&(message.payload.len() as u32).to_le_bytes());
        let checksum = checksum64(&[&frame[8..48], message.payload, message.user_headers]);
        frame[0..8].copy_from_slice(&checksum.to_le_bytes());
        frame_checksums.push(checksum);
        bytes.extend_from_slice(&frame);
        bytes.extend_from_slice(message.payload);
        bytes.extend_from_slice(message.user_headers);
    }
    bytes[0..8].copy_from_slice(&partition_id.to_le_bytes());
    bytes[8..16].copy_from_slice(&base_offset.to_le_bytes());
    bytes[16..24].copy_from_slice(&base_timestamp.to_le_bytes());
    bytes[24..32].copy_from_slice(&base_timestamp.to_le_bytes());
    let batch_length = bytes.len() as u64;
    bytes[32..40].copy_from_slice(&batch_length.to_le_bytes());
    bytes[48..52].copy_from_slice(&(messages.len() as u32).to_le_bytes());
    let checksum = batch_checksum(&bytes[..BATCH_HEADER_SIZE], &frame_checksums);
    bytes[40..48].copy_from_slice(&checksum.to_le_bytes());
    assert_eq!(
        validate(&bytes).map(|i| i.message_count),
        Ok(messages.len() as u32)
    );
    bytes
}

/// Checks a batch's layout and every checksum: what a gateway does to a batch a client sent.
pub fn validate(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    check(bytes, Frames::Hashed)
}

/// Checks a batch's layout and its batch checksum over the frame checksums the frames carry,
/// without hashing every message again: for bytes already protected by a checksum of their
/// own (a stored record, verified when it was read back), where hashing 1000 messages per
/// poll twice was the consumer's largest CPU cost in the gateway.
pub fn validate_layout(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    check(bytes, Frames::AsStored)
}

/// How `check` takes each message's checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frames {
    /// Computed from the message and compared with the one in its frame.
    Hashed,
    /// Taken from the frame as it is (the batch checksum still covers it).
    AsStored,
}

fn check(bytes: &[u8], frames: Frames) -> Result<BatchInfo, BatchError> {
    if bytes.len() < BATCH_HEADER_SIZE {
        return Err(BatchError::TooShort);
    }
    let header = &bytes[..BATCH_HEADER_SIZE];
    let length = u64_at(header, 32);
    if length != bytes.len() as u64 {
        return Err(BatchError::LengthMismatch {
            header: length,
            actual: bytes.len() as u64,
        });
    }
    if header[52..].iter().any(|b| *b != 0) {
        return Err(BatchError::ReservedNotZero);
    }
    let message_count = u32_at(header, 48);
    let mut first_delta = None;
    let mut frame_checksums = Vec::new();
    let mut at = BATCH_HEADER_SIZE;
    for index in 0..message_count {
        if at + FRAME_HEADER_SIZE > bytes.len() {
            return Err(BatchError::FramesDoNotTile);
        }
        let frame = &bytes[at..at + FRAME_HEADER_SIZE];
        let headers_length = u32_at(frame, 32);
        let payload_length = u32_at(frame, 36);
        if payload_length > MESSAGE_PAYLOAD_MAX || headers_length > USER_HEADERS_MAX {
            return Err(BatchError::MessageTooLarge);
        }
        if frame[40..48].iter().any(|b| *b != 0) {
            return Err(BatchError::ReservedNotZero);
        }
        // Deltas count up by one from the first: a client's start at 0, a slice served to a
        // reader keeps the deltas of the stored batch it was cut from.
        let delta = u32_at(frame, 24);
        let first = *first_delta.get_or_insert(delta);
        if first.checked_add(index) != Some(delta) {
            return Err(BatchError::BadOffsetDelta(index));
        }
        let end = at + FRAME_HEADER_SIZE + payload_length as usize + headers_length as usize;
        if end > bytes.len() {
            return Err(BatchError::FramesDoNotTile);
        }
        let stored = u64_at(frame, 0);
        if frames == Frames::Hashed
            && checksum64(&[&frame[8..48], &bytes[at + FRAME_HEADER_SIZE..end]]) != stored
        {
            return Err(BatchError::BadFrameChecksum(index));
        }
        frame_checksums.push(stored);
        at = end;
    }
    if at != bytes.len() {
        return Err(BatchError::FramesDoNotTile);
    }
    if batch_checksum(header, &frame_checksums) != u64_at(header, 40) {
        return Err(BatchError::BadBatchChecksum);
    }
    Ok(BatchInfo {
        base_offset: u64_at(header, 8),
        base_timestamp: u64_at(header, 16),
        message_count,
        first_delta: first_delta.unwrap_or(0),
    })
}

/// Where a stored batch is served: the partition and the base offset and timestamp it is
/// stamped with, and the offsets `from..from + max` a reader asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceStamp {
    pub partition_id: u64,
    pub base_offset: u64,
    pub base_timestamp: u64,
    pub from: u64,
    pub max: u32,
}

/// A stored batch stamped for a reader, appended to `out` (a reply being built, so the batch
/// is copied once): partition id, base offset and base timestamp set, only the messages whose
/// offsets (base offset + offset delta) lie in `from..from + max` kept, message count, length
/// and batch checksum recomputed. The original deltas stay, so message checksums stay valid.
/// Returns the messages kept; `None`, with `out` as it was, if no message is in the range or
/// the bytes are not a valid batch (every batch a gateway stores was checked whole on
/// arrival, and the log checks its record's checksum on every read, so only the layout and
/// the batch checksum are checked here, before and after; other writers' bytes need not be
/// batches).
pub fn stamp_slice(out: &mut Vec<u8>, bytes: &[u8], stamp: SliceStamp) -> Option<u32> {
    let SliceStamp {
        partition_id,
        base_offset,
        base_timestamp,
        from,
        max,
    } = stamp;
    if max == 0 || validate_layout(bytes).is_err() {
        return None;
    }
    let start = out.len();
    let kept = stamp_frames(out, bytes, base_offset, from, max);
    let Some((kept, frame_checksums)) = kept else {
        out.truncate(start);
        return None;
    };
    let stamped = &mut out[start..];
    stamped[0..8].copy_from_slice(&partition_id.to_le_bytes());
    stamped[8..16].copy_from_slice(&base_offset.to_le_bytes());
    stamped[16..24].copy_from_slice(&base_timestamp.to_le_bytes());
    let length = stamped.len() as u64;
    stamped[32..40].copy_from_slice(&length.to_le_bytes());
    stamped[48..52].copy_from_slice(&kept.to_le_bytes());
    let checksum = batch_checksum(&stamped[..BATCH_HEADER_SIZE], &frame_checksums);
    stamped[40..48].copy_from_slice(&checksum.to_le_bytes());
    // A valid batch cut at message boundaries and restamped stays valid.
    assert_eq!(
        validate_layout(stamped).map(|info| info.message_count),
        Ok(kept)
    );
    Some(kept)
}

/// Appends the batch header and the frames of `bytes` whose offsets lie in `from..from + max`
/// to `out`; their count and frame checksums, or `None` if none is in range or the frames do
/// not tile (the caller cuts `out` back).
fn stamp_frames(
    out: &mut Vec<u8>,
    bytes: &[u8],
    base_offset: u64,
    from: u64,
    max: u32,
) -> Option<(u32, Vec<u64>)> {
    let message_count = u32_at(bytes, 48);
    let until = from.saturating_add(u64::from(max));
    out.extend_from_slice(&bytes[..BATCH_HEADER_SIZE]);
    let mut frame_checksums = Vec::new();
    let mut at = BATCH_HEADER_SIZE;
    for _ in 0..message_count {
        if at + FRAME_HEADER_SIZE > bytes.len() {
            return None;
        }
        let frame = &bytes[at..at + FRAME_HEADER_SIZE];
        let length =
            FRAME_HEADER_SIZE as u64 + u64::from(u32_at(frame, 32)) + u64::from(u32_at(frame, 36));
        let end = at.checked_add(usize::try_from(length).ok()?)?;
        if end > bytes.len() {
            return None;
        }
        let offset = base_offset.checked_add(u64::from(u32_at(frame, 24)))?;
        if (from..until).contains(&offset) {
            frame_checksums.push(u64_at(frame, 0));
            out.extend_from_slice(&bytes[at..end]);
        }
        at = end;
    }
    if frame_checksums.is_empty() {
        return None;
    }
    let kept = u32::try_from(frame_checksums.len()).expect("at most message_count");
    Some((kept, frame_checksums))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stamp_slice` into a reply of its own, stamped with (partition, base offset, base
    /// timestamp) for the offsets `from..from + max`.
    fn stamped(
        bytes: &[u8],
        base: (u64, u64, u64),
        (from, max): (u64, u32),
    ) -> Option<(Vec<u8>, u32)> {
        let mut out = Vec::new();
        let kept = stamp_slice(&mut out, bytes, slice_stamp(base, from, max))?;
        Some((out, kept))
    }

    fn slice_stamp(
        (partition_id, base_offset, base_timestamp): (u64, u64, u64),
        from: u64,
        max: u32,
    ) -> SliceStamp {
        SliceStamp {
            partition_id,
            base_offset,
            base_timestamp,
            from,
            max,
        }
    }

    #[test]
    fn built_batches_validate_and_damage_is_named() {
        let payloads = [b"first".as_slice(), b"second".as_slice(), b"".as_slice()];
        let messages: Vec<Message<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Message {
                id: i as u128,
                payload: p,
                user_headers: b"",
                timestamp_delta: 0,
            })
            .collect();
        let batch = build(1, 100, 5_000, &messages);
        assert_eq!(
            validate(&batch),
            Ok(BatchInfo {
                base_offset: 100,
                base_timestamp: 5_000,
                message_count: 3,
                first_delta: 0,
            })
        );
        assert_eq!(validate_layout(&batch), validate(&batch));
        let mut damaged = batch.clone();
        damaged[BATCH_HEADER_SIZE + FRAME_HEADER_SIZE] ^= 1;
        assert_eq!(validate(&damaged), Err(BatchError::BadFrameChecksum(0)));
        // A damaged payload under an intact frame passes the layout check (its record's own
        // checksum is what catches it on a read); a damaged frame checksum does not, since
        // the batch checksum covers the frame checksums.
        assert!(validate_layout(&damaged).is_ok());
        let mut damaged = batch.clone();
        damaged[BATCH_HEADER_SIZE] ^= 1;
        assert_eq!(validate_layout(&damaged), Err(BatchError::BadBatchChecksum));
        let mut damaged = batch.clone();
        damaged[100] = 1;
        assert_eq!(validate(&damaged), Err(BatchError::ReservedNotZero));
        // Message 1 claiming delta 0: refused, even with its checksum made to match.
        let mut repeated = batch.clone();
        let second = BATCH_HEADER_SIZE + FRAME_HEADER_SIZE + payloads[0].len();
        repeated[second + 24..second + 28].copy_from_slice(&0u32.to_le_bytes());
        let end = second + FRAME_HEADER_SIZE + payloads[1].len();
        let checksum = checksum64(&[&repeated[second + 8..end]]);
        repeated[second..second + 8].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(validate(&repeated), Err(BatchError::BadOffsetDelta(1)));
        assert!(stamped(&repeated, (0, 0, 0), (0, 10)).is_none());
        assert!(matches!(
            validate(&batch[..batch.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut damaged = batch;
        damaged[10] ^= 1;
        assert_eq!(validate(&damaged), Err(BatchError::BadBatchChecksum));
    }

    /// A batch as the iggy 0.11.0 client sends it: one message, id 1, payload "hello", origin
    /// timestamp 1 000 000 µs, partition id, base offset and base timestamp 0.
    fn client_batch() -> Vec<u8> {
        let mut frame = [0u8; FRAME_HEADER_SIZE];
        frame[8..24].copy_from_slice(&1u128.to_le_bytes());
        frame[36..40].copy_from_slice(&5u32.to_le_bytes());
        let frame_checksum = checksum64(&[&frame[8..48], b"hello"]);
        frame[0..8].copy_from_slice(&frame_checksum.to_le_bytes());
        let mut batch = vec![0u8; BATCH_HEADER_SIZE];
        batch[24..32].copy_from_slice(&1_000_000u64.to_le_bytes());
        batch[32..40].copy_from_slice(&309u64.to_le_bytes());
        batch[40..48].copy_from_slice(&0x3aa0_6eab_1f47_26dcu64.to_le_bytes());
        batch[48..52].copy_from_slice(&1u32.to_le_bytes());
        batch.extend_from_slice(&frame);
        batch.extend_from_slice(b"hello");
        batch
    }

    #[test]
    fn the_checksums_are_the_iggy_0_11_clients() {
        // Vectors worked out from the 0.11.0 client's source (its message and batch checksum
        // functions), independently of this module.
        let batch = client_batch();
        assert_eq!(u64_at(&batch, BATCH_HEADER_SIZE), 0xb9bf_bddb_9ea5_5c8e);
        assert_eq!(
            validate(&batch),
            Ok(BatchInfo {
                base_offset: 0,
                base_timestamp: 0,
                message_count: 1,
                first_delta: 0,
            })
        );
        // Stamped by the server with base timestamp 1.7e15 µs.
        let (stamped, _) = stamped(&batch, (0, 0, 1_700_000_000_000_000), (0, 10)).unwrap();
        assert_eq!(u64_at(&stamped, 40), 0x7352_938a_bc7b_28a2);
        assert_eq!(
            u64_at(&stamped, 24),
            1_000_000,
            "the origin timestamp is kept"
        );
    }

    #[test]
    fn stamped_slices_keep_the_asked_offsets_and_validate() {
        let payloads = [b"a".as_slice(), b"bb".as_slice(), b"ccc".as_slice()];
        let messages: Vec<Message<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Message {
                id: i as u128 + 1,
                payload: p,
                user_headers: b"",
                timestamp_delta: 0,
            })
            .collect();
        let batch = build(0, 0, 0, &messages);
        let (whole, count) = stamped(&batch, (4, 10, 99), (0, 100)).unwrap();
        assert_eq!(count, 3);
        assert_eq!(
            validate(&whole),
            Ok(BatchInfo {
                base_offset: 10,
                base_timestamp: 99,
                message_count: 3,
                first_delta: 0,
            })
        );
        assert_eq!(u64_at(&whole, 0), 4);
        // Offsets 11 and 12 only, then 11 only.
        let (tail, count) = stamped(&batch, (4, 10, 99), (11, 100)).unwrap();
        assert_eq!(count, 2);
        assert_eq!(tail.len(), batch.len() - FRAME_HEADER_SIZE - 1);
        assert_eq!(validate(&tail).unwrap().message_count, 2);
        let (middle, count) = stamped(&batch, (4, 10, 99), (11, 1)).unwrap();
        assert_eq!(count, 1);
        assert_eq!(&middle[BATCH_HEADER_SIZE + FRAME_HEADER_SIZE..], b"bb");
        assert!(stamped(&batch, (4, 10, 99), (13, 5)).is_none());
        assert!(stamped(&batch[..300], (4, 10, 99), (0, 5)).is_none());
        // Appended to a reply: the same bytes after what was there; nothing on a miss.
        let mut reply = vec![1, 2, 3];
        let stamp = |from, max| slice_stamp((4, 10, 99), from, max);
        assert_eq!(stamp_slice(&mut reply, &batch, stamp(11, 100)), Some(2));
        assert_eq!((&reply[..3], &reply[3..]), (&[1u8, 2, 3][..], &tail[..]));
        let before = reply.clone();
        assert_eq!(stamp_slice(&mut reply, &batch, stamp(13, 5)), None);
        assert_eq!(stamp_slice(&mut reply, &batch[..300], stamp(0, 5)), None);
        assert_eq!(reply, before);
    }
}
