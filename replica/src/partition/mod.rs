//! The partition state machine: what a partition's VSR group agrees on besides the message
//! bytes themselves. Offsets and timestamps are assigned by the primary when it prepares an
//! append (`stamp`, against its projected state: the committed state with every prepared op
//! applied), so an offset is a function of the log prefix and every replica computes the same.
//! Applying then checks that the stamps continue the log. Also here: stored consumer offsets
//! (per consumer and per consumer group, the latter fenced by generation), the idempotent
//! producer table, and retention cuts as committed ops.

pub mod machine;
pub mod ops;
pub mod producers;
pub mod reply;
pub mod snapshot;

use std::collections::BTreeMap;

pub use ops::{ConsumerKey, PartitionOp, ProducerStamp};
pub use producers::{ProducerCheck, ProducerTable};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionError {
    /// A request the primary decides (DeleteSegments, Purge) committed as it was.
    Undecided,
    /// An append's stamps do not continue the log (a primary bug or a corrupt prepare).
    Discontinuous {
        expected_offset: u64,
        got: u64,
    },
    /// A batch with no messages, or more than a batch may hold.
    InvalidBatch(String),
    /// The producer's epoch is older than one already seen: a newer instance took over.
    ProducerFenced {
        producer: u64,
        epoch: u32,
        current: u32,
    },
    /// A producer this partition does not know (never seen, or forgotten by eviction) sent a
    /// batch other than its first: it must start a new epoch at sequence 0.
    UnknownProducer {
        producer: u64,
    },
    /// A sequence number skipped ahead: batches in between are missing.
    OutOfOrderSequence {
        producer: u64,
        expected: u64,
        got: u64,
    },
    /// A consumer group offset from a generation older than one already seen.
    StaleGeneration {
        group: u32,
        generation: u64,
        current: u64,
    },
    /// An offset past the last message (or before the first kept one, for a retention cut).
    OffsetOutOfRange {
        offset: u64,
        end: u64,
    },
    ConsumerOffsetNotFound(ConsumerKey),
    /// The consumer offset table is full.
    TooManyConsumers,
    /// A group's offset without its generation, or a single consumer's with one.
    InvalidConsumer(String),
}

/// What the primary decided for an append request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Prepare it with these stamps.
    Fresh { base_offset: u64, timestamp: u64 },
    /// A retry of the producer's last batch, first prepared as op `op`: prepare nothing, and
    /// reply with its offsets once `op` is committed (it may still be only prepared).
    Duplicate {
        base_offset: u64,
        count: u32,
        op: u64,
    },
}

pub const MESSAGES_PER_BATCH_MAX: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// The offset the next message gets.
    pub next_offset: u64,
    /// The first offset retention keeps (messages below it are deleted or being deleted).
    pub first_offset: u64,
    /// The timestamp of the last batch: the next one is stamped no earlier.
    pub last_timestamp: u64,
    pub consumer_offsets: BTreeMap<ConsumerKey, u64>,
    /// The newest generation each consumer group committed an offset with.
    pub group_generations: BTreeMap<u32, u64>,
    pub producers: ProducerTable,
    pub consumers_max: u32,
}

impl PartitionState {
    pub fn new(consumers_max: u32, producers_max: u32) -> PartitionState {
        PartitionState {
            next_offset: 0,
            first_offset: 0,
            last_timestamp: 0,
            consumer_offsets: BTreeMap::new(),
            group_generations: BTreeMap::new(),
            producers: ProducerTable::new(producers_max),
            consumers_max,
        }
    }

    /// The primary's decision for an append of `count` messages at `now` (µs): the offsets and
    /// timestamp to prepare it with, or the original result of a retried batch. Call it on the
    /// projected state and apply the prepared op to that state before the next call.
    pub fn stamp(
        &self,
        count: u32,
        producer: Option<ProducerStamp>,
        now: u64,
    ) -> Result<Stamp, PartitionError> {
        if count == 0 || count > MESSAGES_PER_BATCH_MAX {
            return Err(PartitionError::InvalidBatch(format!(
                "{count} messages (1 to {MESSAGES_PER_BATCH_MAX})"
            )));
        }
        if let Some(producer) = producer {
            match self.producers.check(&producer)? {
                ProducerCheck::Fresh => {}
                ProducerCheck::Duplicate {
                    base_offset,
                    count,
                    op,
                } => {
                    return Ok(Stamp::Duplicate {
                        base_offset,
                        count,
                        op,
                    });
                }
            }
        }
        Ok(Stamp::Fresh {
            base_offset: self.next_offset,
            timestamp: now.max(self.last_timestamp),
        })
    }

    /// Applies a committed (or, on the primary's projected state, a prepared) op at op number
    /// `op`. A refused op changes nothing.
    pub fn apply(&mut self, op: &PartitionOp, op_number: u64) -> Result<(), PartitionError> {
        match op {
            PartitionOp::Append {
                base_offset,
                count,
                timestamp,
                producer,
            } => {
                if *base_offset != self.next_offset || *timestamp < self.last_timestamp {
                    return Err(PartitionError::Discontinuous {
                        expected_offset: self.next_offset,
                        got: *base_offset,
                    });
                }
                if *count == 0 || *count > MESSAGES_PER_BATCH_MAX {
                    return Err(PartitionError::InvalidBatch(format!("{count} messages")));
                }
                if let Some(producer) = producer {
                    // The primary stamped it as fresh; a replica must agree.
                    if self.producers.check(producer)? != ProducerCheck::Fresh {
                        return Err(PartitionError::InvalidBatch(
                            "a duplicate batch was prepared".to_string(),
                        ));
                    }
                    self.producers
                        .record(producer, *base_offset, *count, op_number);
                }
                self.next_offset += u64::from(*count);
                self.last_timestamp = *timestamp;
                Ok(())
            }
            PartitionOp::StoreConsumerOffset {
                consumer,
                offset,
                generation,
            } => {
                if self.next_offset == 0 || *offset >= self.next_offset {
                    return Err(PartitionError::OffsetOutOfRange {
                        offset: *offset,
                        end: self.next_offset,
                    });
                }
                let generation = match (consumer, generation) {
                    (ConsumerKey::Group(group), Some(generation)) => Some((*group, *generation)),
                    (ConsumerKey::Consumer(_), None) => None,
                    _ => {
                        return Err(PartitionError::InvalidConsumer(format!(
                            "{consumer:?} with generation {generation:?}: a group's offset \
                             carries its generation, a single consumer's none"
                        )))
                    }
                };
                // Fenced against the newest generation this partition has seen; the gateway
                // also checks the member's generation and assignment against the metadata.
                if let Some((group, generation)) = generation {
                    match self.group_generations.get(&group) {
                        Some(current) if generation < *current => {
                            return Err(PartitionError::StaleGeneration {
                                group,
                                generation,
                                current: *current,
                            });
                        }
                        Some(_) => {}
                        None if self.group_generations.len() as u32 >= self.consumers_max => {
                            return Err(PartitionError::TooManyConsumers);
                        }
                        None => {}
                    }
                }
                if !self.consumer_offsets.contains_key(consumer)
                    && self.consumer_offsets.len() as u32 >= self.consumers_max
                {
                    return Err(PartitionError::TooManyConsumers);
                }
                if let Some((group, generation)) = generation {
                    self.group_generations.insert(group, generation);
                }
                self.consumer_offsets.insert(*consumer, *offset);
                Ok(())
            }
            PartitionOp::DeleteConsumerOffset { consumer } => {
                if self.consumer_offsets.remove(consumer).is_none() {
                    return Err(PartitionError::ConsumerOffsetNotFound(*consumer));
                }
                Ok(())
            }
            PartitionOp::RetentionCut { first_offset } => {
                if *first_offset < self.first_offset || *first_offset > self.next_offset {
                    return Err(PartitionError::OffsetOutOfRange {
                        offset: *first_offset,
                        end: self.next_offset,
                    });
                }
                self.first_offset = *first_offset;
                Ok(())
            }
            // Decided on the primary; changes nothing.
            PartitionOp::Answer { .. } => Ok(()),
            // Turned into a cut or an answer by the primary; only a primary bug commits it.
            PartitionOp::DeleteSegments { .. } | PartitionOp::Purge => {
                Err(PartitionError::Undecided)
            }
        }
    }
}

#[cfg(test)]
mod tests;
