//! The operations of a partition group and their encoding. An append's encoding is a fixed
//! 64-byte head followed by the message batch, so the batch can be served from a stored
//! record without copying.

use crate::codec::{DecodeError, Reader, Writer};

pub const PARTITION_OPS_VERSION: u8 = 1;
/// Bytes before the batch in an encoded append.
pub const APPEND_HEAD_SIZE: usize = 64;

/// Whose offset: a single consumer, or a consumer group (by id in its topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerKey {
    Consumer(u32),
    Group(u32),
}

/// An idempotent producer's identity and the sequence number of this batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer: u64,
    pub epoch: u32,
    pub sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionOp {
    /// A batch of `count` messages at `base_offset`, stamped `timestamp` by the primary.
    Append {
        base_offset: u64,
        count: u32,
        timestamp: u64,
        producer: Option<ProducerStamp>,
    },
    StoreConsumerOffset {
        consumer: ConsumerKey,
        offset: u64,
        /// The consumer group generation the commit was made in (groups only).
        generation: Option<u64>,
    },
    DeleteConsumerOffset {
        consumer: ConsumerKey,
    },
    /// Messages below `first_offset` go (whole sealed segments, decided by the primary).
    RetentionCut {
        first_offset: u64,
    },
    /// A request the primary answered without changing the partition (a retried batch, or a
    /// refusal), prepared so the answer is in the log like every other: `reply` is an encoded
    /// `PartitionReply`, returned as is on apply.
    Answer {
        reply: Vec<u8>,
    },
    /// A client's request to delete the `count` oldest sealed segments (Iggy's
    /// DeleteSegments). Never applied: the primary turns it into the `RetentionCut` its
    /// segments allow, or an `Answer`.
    DeleteSegments {
        count: u32,
    },
    /// A client's request to remove every message (Iggy's PurgeTopic and PurgeStream).
    /// Never applied: the primary turns it into the `RetentionCut` at the partition's end
    /// (offsets go on from there), or an answer.
    Purge,
}

/// Longest encoded reply an `Answer` carries.
pub const ANSWER_LEN_MAX: u32 = 1024;

pub(crate) fn put_consumer(w: &mut Writer, consumer: &ConsumerKey) {
    match consumer {
        ConsumerKey::Consumer(id) => {
            w.u8(1);
            w.u32(*id);
        }
        ConsumerKey::Group(id) => {
            w.u8(2);
            w.u32(*id);
        }
    }
}

pub(crate) fn get_consumer(r: &mut Reader) -> Result<ConsumerKey, DecodeError> {
    match r.u8("consumer kind")? {
        1 => Ok(ConsumerKey::Consumer(r.u32("consumer id")?)),
        2 => Ok(ConsumerKey::Group(r.u32("consumer group id")?)),
        tag => Err(DecodeError::UnknownTag {
            field: "consumer kind",
            tag,
        }),
    }
}

impl PartitionOp {
    /// The op's bytes; an append is followed by `batch`.
    pub fn encode(&self, batch: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(PARTITION_OPS_VERSION);
        match self {
            PartitionOp::Append {
                base_offset,
                count,
                timestamp,
                producer,
            } => {
                w.u8(1);
                w.u64(*base_offset);
                w.u32(*count);
                w.u64(*timestamp);
                w.bool(producer.is_some());
                let producer = producer.unwrap_or(ProducerStamp {
                    producer: 0,
                    epoch: 0,
                    sequence: 0,
                });
                w.u64(producer.producer);
                w.u32(producer.epoch);
                w.u64(producer.sequence);
                assert!(w.bytes.len() <= APPEND_HEAD_SIZE);
                w.bytes.resize(APPEND_HEAD_SIZE, 0);
                w.bytes.extend_from_slice(batch);
            }
            PartitionOp::StoreConsumerOffset {
                consumer,
                offset,
                generation,
            } => {
                assert!(batch.is_empty());
                w.u8(2);
                put_consumer(&mut w, consumer);
                w.u64(*offset);
                w.option_u64(*generation);
            }
            PartitionOp::DeleteConsumerOffset { consumer } => {
                assert!(batch.is_empty());
                w.u8(3);
                put_consumer(&mut w, consumer);
            }
            PartitionOp::RetentionCut { first_offset } => {
                assert!(batch.is_empty());
                w.u8(4);
                w.u64(*first_offset);
            }
            PartitionOp::Answer { reply } => {
                assert!(batch.is_empty());
                assert!(reply.len() <= ANSWER_LEN_MAX as usize);
                w.u8(5);
                w.long_bytes(reply);
            }
            PartitionOp::DeleteSegments { count } => {
                assert!(batch.is_empty());
                w.u8(6);
                w.u32(*count);
            }
            PartitionOp::Purge => {
                assert!(batch.is_empty());
                w.u8(7);
            }
        }
        w.bytes
    }

    /// The op and, for an append, the batch bytes after its head.
    pub fn decode(bytes: &[u8]) -> Result<(PartitionOp, &[u8]), DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("partition ops version", PARTITION_OPS_VERSION)?;
        match r.u8("partition operation kind")? {
            1 => {
                let base_offset = r.u64("base offset")?;
                let count = r.u32("count")?;
                let timestamp = r.u64("timestamp")?;
                let has_producer = r.bool("has producer")?;
                let stamp = ProducerStamp {
                    producer: r.u64("producer")?,
                    epoch: r.u32("epoch")?,
                    sequence: r.u64("sequence")?,
                };
                if bytes.len() < APPEND_HEAD_SIZE {
                    return Err(DecodeError::Short {
                        field: "append head",
                    });
                }
                let op = PartitionOp::Append {
                    base_offset,
                    count,
                    timestamp,
                    producer: has_producer.then_some(stamp),
                };
                Ok((op, &bytes[APPEND_HEAD_SIZE..]))
            }
            2 => {
                let op = PartitionOp::StoreConsumerOffset {
                    consumer: get_consumer(&mut r)?,
                    offset: r.u64("offset")?,
                    generation: r.option_u64("generation")?,
                };
                r.finish()?;
                Ok((op, &[]))
            }
            3 => {
                let op = PartitionOp::DeleteConsumerOffset {
                    consumer: get_consumer(&mut r)?,
                };
                r.finish()?;
                Ok((op, &[]))
            }
            4 => {
                let op = PartitionOp::RetentionCut {
                    first_offset: r.u64("first offset")?,
                };
                r.finish()?;
                Ok((op, &[]))
            }
            5 => {
                let op = PartitionOp::Answer {
                    reply: r.long_bytes("answer", ANSWER_LEN_MAX)?,
                };
                r.finish()?;
                Ok((op, &[]))
            }
            6 => {
                let op = PartitionOp::DeleteSegments {
                    count: r.u32("segments count")?,
                };
                r.finish()?;
                Ok((op, &[]))
            }
            7 => {
                r.finish()?;
                Ok((PartitionOp::Purge, &[]))
            }
            tag => Err(DecodeError::UnknownTag {
                field: "partition operation kind",
                tag,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_and_truncations_are_refused() {
        let batch = b"the batch bytes".as_slice();
        let cases = [
            (
                PartitionOp::Append {
                    base_offset: 10,
                    count: 3,
                    timestamp: 99,
                    producer: Some(ProducerStamp {
                        producer: 7,
                        epoch: 2,
                        sequence: 40,
                    }),
                },
                batch,
            ),
            (
                PartitionOp::Append {
                    base_offset: 0,
                    count: 1,
                    timestamp: 0,
                    producer: None,
                },
                batch,
            ),
            (
                PartitionOp::StoreConsumerOffset {
                    consumer: ConsumerKey::Group(3),
                    offset: 5,
                    generation: Some(u64::MAX),
                },
                &[][..],
            ),
            (
                PartitionOp::StoreConsumerOffset {
                    consumer: ConsumerKey::Consumer(3),
                    offset: 5,
                    generation: None,
                },
                &[][..],
            ),
            (
                PartitionOp::DeleteConsumerOffset {
                    consumer: ConsumerKey::Consumer(1),
                },
                &[][..],
            ),
            (PartitionOp::RetentionCut { first_offset: 4 }, &[][..]),
            (PartitionOp::DeleteSegments { count: 3 }, &[][..]),
            (PartitionOp::Purge, &[][..]),
            (
                PartitionOp::Answer {
                    reply: b"an encoded reply".to_vec(),
                },
                &[][..],
            ),
        ];
        for (op, batch) in cases {
            let bytes = op.encode(batch);
            assert_eq!(PartitionOp::decode(&bytes).unwrap(), (op.clone(), batch));
            if matches!(op, PartitionOp::Append { .. }) {
                assert_eq!(
                    &bytes[APPEND_HEAD_SIZE..],
                    batch,
                    "the batch follows the head"
                );
                for cut in 0..APPEND_HEAD_SIZE {
                    assert!(PartitionOp::decode(&bytes[..cut]).is_err(), "cut {cut}");
                }
            } else {
                for cut in 0..bytes.len() {
                    assert!(PartitionOp::decode(&bytes[..cut]).is_err(), "cut {cut}");
                }
                let mut longer = bytes.clone();
                longer.push(1);
                assert!(PartitionOp::decode(&longer).is_err());
            }
        }
    }
}
