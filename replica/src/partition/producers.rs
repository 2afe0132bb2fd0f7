//! The idempotent producer table of a partition: per producer id, its epoch and the sequence
//! and offsets of its last batch, so that a retried batch (same producer, epoch and sequence,
//! after a reconnect or a view change) is answered with its original offsets instead of being
//! appended again. Bounded: when full, the producer idle longest (oldest last op) is dropped.

use std::collections::BTreeMap;

use super::ops::ProducerStamp;
use super::PartitionError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: u32,
    pub last_sequence: u64,
    pub last_base_offset: u64,
    pub last_count: u32,
    /// The op number of the last batch: the eviction order.
    pub last_op: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerTable {
    pub entries: BTreeMap<u64, ProducerEntry>,
    pub producers_max: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerCheck {
    Fresh,
    /// The producer's last batch again, first prepared as op `op` (reply with its offsets
    /// once that op is committed, never before: a view change may still drop it).
    Duplicate {
        base_offset: u64,
        count: u32,
        op: u64,
    },
}

impl ProducerTable {
    pub fn new(producers_max: u32) -> ProducerTable {
        assert!(producers_max > 0);
        ProducerTable {
            entries: BTreeMap::new(),
            producers_max,
        }
    }

    /// Whether a batch with `stamp` is new, the last batch again, or refused. A new producer
    /// or a new epoch starts at sequence 0 (so a producer this table forgot, by eviction, is
    /// told so instead of having a retry appended twice); within an epoch sequences go up by
    /// one. Only the last batch is remembered: a retry of an earlier one is out of order.
    pub fn check(&self, stamp: &ProducerStamp) -> Result<ProducerCheck, PartitionError> {
        let Some(entry) = self.entries.get(&stamp.producer) else {
            return if stamp.sequence == 0 {
                Ok(ProducerCheck::Fresh)
            } else {
                Err(PartitionError::UnknownProducer {
                    producer: stamp.producer,
                })
            };
        };
        if stamp.epoch < entry.epoch {
            return Err(PartitionError::ProducerFenced {
                producer: stamp.producer,
                epoch: stamp.epoch,
                current: entry.epoch,
            });
        }
        if stamp.epoch > entry.epoch {
            return if stamp.sequence == 0 {
                Ok(ProducerCheck::Fresh)
            } else {
                Err(PartitionError::OutOfOrderSequence {
                    producer: stamp.producer,
                    expected: 0,
                    got: stamp.sequence,
                })
            };
        }
        // Saturating: 2^64 batches of one epoch cannot happen, and must not panic if forged.
        let expected = entry.last_sequence.saturating_add(1);
        if stamp.sequence == entry.last_sequence {
            Ok(ProducerCheck::Duplicate {
                base_offset: entry.last_base_offset,
                count: entry.last_count,
                op: entry.last_op,
            })
        } else if stamp.sequence == expected {
            Ok(ProducerCheck::Fresh)
        } else {
            // Older than the last batch (its offsets are no longer kept) or ahead of it.
            Err(PartitionError::OutOfOrderSequence {
                producer: stamp.producer,
                expected,
                got: stamp.sequence,
            })
        }
    }

    /// Records a fresh batch of `stamp`'s producer.
    pub fn record(&mut self, stamp: &ProducerStamp, base_offset: u64, count: u32, op: u64) {
        if !self.entries.contains_key(&stamp.producer)
            && self.entries.len() as u32 >= self.producers_max
        {
            let (idle, _) = self
                .entries
                .iter()
                .min_by_key(|(id, e)| (e.last_op, **id))
                .expect("the table is full, so not empty");
            let idle = *idle;
            self.entries.remove(&idle);
        }
        self.entries.insert(
            stamp.producer,
            ProducerEntry {
                epoch: stamp.epoch,
                last_sequence: stamp.sequence,
                last_base_offset: base_offset,
                last_count: count,
                last_op: op,
            },
        );
        assert!(self.entries.len() as u32 <= self.producers_max);
    }
}
