//! A partition state machine's checkpoint (the message bytes are the segments themselves):
//! offsets, consumer offsets, group generations and the producer table, with every count
//! bounded before anything is allocated and the state's invariants checked after decoding.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, EncodeError, Reader, Writer};

use super::ops::{get_consumer, put_consumer};
use super::producers::{ProducerEntry, ProducerTable};
use super::PartitionState;

pub const PARTITION_SNAPSHOT_VERSION: u8 = 1;

impl PartitionState {
    pub fn encode_snapshot(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::default();
        w.u8(PARTITION_SNAPSHOT_VERSION);
        w.u64(self.next_offset);
        w.u64(self.first_offset);
        w.u64(self.last_timestamp);
        w.u32(self.consumer_offsets.len() as u32);
        for (consumer, offset) in &self.consumer_offsets {
            put_consumer(&mut w, consumer);
            w.u64(*offset);
        }
        w.u32(self.group_generations.len() as u32);
        for (group, generation) in &self.group_generations {
            w.u32(*group);
            w.u64(*generation);
        }
        w.u32(self.producers.entries.len() as u32);
        for (producer, entry) in &self.producers.entries {
            w.u64(*producer);
            w.u32(entry.epoch);
            w.u64(entry.last_sequence);
            w.u64(entry.last_base_offset);
            w.u32(entry.last_count);
            w.u64(entry.last_op);
        }
        w.finish()
    }

    /// Decodes a checkpoint under the given table limits and checks it.
    pub fn decode_snapshot(
        bytes: &[u8],
        consumers_max: u32,
        producers_max: u32,
    ) -> Result<PartitionState, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("partition snapshot version", PARTITION_SNAPSHOT_VERSION)?;
        let mut state = PartitionState::new(consumers_max, producers_max);
        state.next_offset = r.u64("next offset")?;
        state.first_offset = r.u64("first offset")?;
        state.last_timestamp = r.u64("last timestamp")?;
        for _ in 0..r.count("consumer offsets", consumers_max)? {
            let consumer = get_consumer(&mut r)?;
            let offset = r.u64("consumer offset")?;
            if state.consumer_offsets.insert(consumer, offset).is_some() {
                return Err(DecodeError::Invalid(format!("{consumer:?} twice")));
            }
        }
        for _ in 0..r.count("group generations", consumers_max)? {
            let group = r.u32("group")?;
            let generation = r.u64("generation")?;
            if state.group_generations.insert(group, generation).is_some() {
                return Err(DecodeError::Invalid(format!("group {group} twice")));
            }
        }
        let mut entries = BTreeMap::new();
        for _ in 0..r.count("producers", producers_max)? {
            let producer = r.u64("producer")?;
            let entry = ProducerEntry {
                epoch: r.u32("epoch")?,
                last_sequence: r.u64("last sequence")?,
                last_base_offset: r.u64("last base offset")?,
                last_count: r.u32("last count")?,
                last_op: r.u64("last op")?,
            };
            if entries.insert(producer, entry).is_some() {
                return Err(DecodeError::Invalid(format!("producer {producer} twice")));
            }
        }
        state.producers = ProducerTable {
            entries,
            producers_max,
        };
        r.finish()?;
        state.check().map_err(DecodeError::Invalid)?;
        Ok(state)
    }

    /// The invariants every state reachable by `apply` holds.
    pub fn check(&self) -> Result<(), String> {
        if self.first_offset > self.next_offset {
            return Err(format!(
                "first offset {} past the end {}",
                self.first_offset, self.next_offset
            ));
        }
        if let Some((consumer, offset)) = self
            .consumer_offsets
            .iter()
            .find(|(_, offset)| **offset >= self.next_offset)
        {
            return Err(format!("{consumer:?} at {offset}, past the end"));
        }
        if self.consumer_offsets.len() as u32 > self.consumers_max
            || self.group_generations.len() as u32 > self.consumers_max
            || self.producers.entries.len() as u32 > self.producers.producers_max
        {
            return Err("a table over its limit".to_string());
        }
        for (producer, entry) in &self.producers.entries {
            let end = entry.last_base_offset + u64::from(entry.last_count);
            if entry.last_count == 0 || end > self.next_offset {
                return Err(format!(
                    "producer {producer}'s last batch is not in the log"
                ));
            }
        }
        Ok(())
    }
}
