//! A deterministic workload for crash tests and benchmarks: the batch of each op is a function
//! of the op alone (Iggy 0.11.0 layout), so a checker can recompute what must be on disk.

use bytes::Bytes;

use crate::checksum::checksum64;
use crate::format::EntryMeta;
use crate::iggy_batch::{self, Message};

/// Messages in op `op`'s batch: 1 to 4.
pub fn message_count(op: u64) -> u32 {
    1 + (op % 4) as u32
}

/// The offset of the first message of op `op` when the log starts at op 1, offset 0.
pub fn offset_first(op: u64) -> u64 {
    assert!(op >= 1);
    let before = op - 1;
    // Ops 1..=before carry 1 + o % 4 messages: o % 4 cycles 1, 2, 3, 0 (sum 6 per 4 ops).
    before + 6 * (before / 4) + [0, 1, 3, 6][(before % 4) as usize]
}

/// The batch of op `op`, with payloads of 1 to `payload_max` bytes per message.
pub fn batch(op: u64, payload_max: u64) -> (EntryMeta, Bytes) {
    let count = message_count(op);
    let payloads: Vec<Vec<u8>> = (0..u64::from(count))
        .map(|m| {
            let length = 1 + (op.wrapping_mul(7919) + m * 104_729) % payload_max;
            vec![(op + m) as u8; length as usize]
        })
        .collect();
    let messages: Vec<Message<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(m, payload)| Message {
            id: u128::from(op) << 8 | m as u128,
            payload,
            user_headers: b"",
            timestamp_delta: m as u32,
        })
        .collect();
    let timestamp = 1_000_000 + op * 1_000;
    let bytes = iggy_batch::build(0, offset_first(op), timestamp, &messages);
    let meta = EntryMeta {
        op,
        checksum: u128::from(checksum64(&[&bytes])),
        offset_first: offset_first(op),
        message_count: count,
        timestamp,
    };
    (meta, Bytes::from(bytes))
}

/// The crash-test batch of op `op` (messages up to 4 KiB).
pub fn expected_batch(op: u64) -> (EntryMeta, Bytes) {
    batch(op, 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_dense() {
        for op in 1..50u64 {
            assert_eq!(
                offset_first(op + 1),
                offset_first(op) + u64::from(message_count(op))
            );
        }
        let (meta, bytes) = expected_batch(9);
        assert_eq!(
            iggy_batch::validate(&bytes).unwrap().message_count,
            meta.message_count
        );
    }
}
