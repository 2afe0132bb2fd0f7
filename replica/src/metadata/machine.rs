//! The metadata group's state machine as the consensus core drives it: a request is an
//! encoded `MetadataOp`, applied at the prepare's timestamp; the reply is a `MetadataReply`.
//! Metadata ops need no stamping at prepare time (ids are chosen deterministically on apply),
//! so the core's default `prepare` passes requests through. `placements_version` moves on
//! every applied op that may add or remove partition groups, so the node knows when to look.

use galgo_consensus::StateMachine;

use crate::codec::{short_prefix, DecodeError, Reader, Writer};

use super::ops::MetadataOp;
use super::{Applied, Metadata, RefusalKind};

/// Version 2: a refusal carries its kind.
pub const REPLY_VERSION: u8 = 2;
/// Partitions listed in one `Joined` reply, at most.
const JOINED_PARTITIONS_MAX: u32 = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataReply {
    Applied(Applied),
    /// Refused: nothing changed. `reason` is for people (cut to 255 bytes on the wire).
    Refused {
        kind: RefusalKind,
        reason: String,
    },
}

impl MetadataReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(REPLY_VERSION);
        match self {
            MetadataReply::Refused { kind, reason } => {
                w.u8(0);
                w.u8(*kind as u8);
                w.short_str(short_prefix(reason));
            }
            MetadataReply::Applied(applied) => match applied {
                Applied::Done => w.u8(1),
                Applied::StreamCreated { id } => {
                    w.u8(2);
                    w.u32(*id);
                }
                Applied::TopicCreated { id } => {
                    w.u8(3);
                    w.u32(*id);
                }
                Applied::PartitionsCreated { first, count } => {
                    w.u8(4);
                    w.u32(*first);
                    w.u32(*count);
                }
                Applied::UserCreated { id } => {
                    w.u8(5);
                    w.u32(*id);
                }
                Applied::ConsumerGroupCreated { id } => {
                    w.u8(6);
                    w.u32(*id);
                }
                Applied::Joined {
                    generation,
                    partitions,
                } => {
                    w.u8(7);
                    w.u64(*generation);
                    w.u32(u32::try_from(partitions.len()).expect("bounded by the limits"));
                    for partition in partitions {
                        w.u32(*partition);
                    }
                }
                Applied::TokensDeleted { count } => {
                    w.u8(8);
                    w.u32(*count);
                }
            },
        }
        w.finish().expect("reasons are cut to the format's limit")
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataReply, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("metadata reply version", REPLY_VERSION)?;
        let reply = match r.u8("metadata reply kind")? {
            0 => {
                let tag = r.u8("refusal kind")?;
                let kind = RefusalKind::from_u8(tag).ok_or(DecodeError::UnknownTag {
                    field: "refusal kind",
                    tag,
                })?;
                MetadataReply::Refused {
                    kind,
                    reason: r.short_str("reason")?,
                }
            }
            1 => MetadataReply::Applied(Applied::Done),
            2 => MetadataReply::Applied(Applied::StreamCreated { id: r.u32("id")? }),
            3 => MetadataReply::Applied(Applied::TopicCreated { id: r.u32("id")? }),
            4 => MetadataReply::Applied(Applied::PartitionsCreated {
                first: r.u32("first")?,
                count: r.u32("count")?,
            }),
            5 => MetadataReply::Applied(Applied::UserCreated { id: r.u32("id")? }),
            6 => MetadataReply::Applied(Applied::ConsumerGroupCreated { id: r.u32("id")? }),
            7 => {
                let generation = r.u64("generation")?;
                let count = r.count("partitions", JOINED_PARTITIONS_MAX)?;
                let mut partitions = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    partitions.push(r.u32("partition")?);
                }
                MetadataReply::Applied(Applied::Joined {
                    generation,
                    partitions,
                })
            }
            8 => MetadataReply::Applied(Applied::TokensDeleted {
                count: r.u32("count")?,
            }),
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "metadata reply kind",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(reply)
    }
}

pub struct MetadataMachine {
    pub metadata: Metadata,
    /// Moves on every applied op that may have added or removed a partition group.
    pub placements_version: u64,
}

impl MetadataMachine {
    pub fn new(metadata: Metadata) -> MetadataMachine {
        MetadataMachine {
            metadata,
            placements_version: 0,
        }
    }
}

impl StateMachine for MetadataMachine {
    fn snapshot(&self) -> Option<Vec<u8>> {
        self.metadata.encode_snapshot().ok()
    }

    fn restore(&mut self, snapshot: &[u8]) -> bool {
        match Metadata::decode_snapshot(snapshot, self.metadata.limits.clone()) {
            Ok(metadata) => {
                self.metadata = metadata;
                // The placements may be any others now.
                self.placements_version += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn apply(&mut self, _op: u64, timestamp: u64, _operation: u8, body: &[u8]) -> Vec<u8> {
        let op = match MetadataOp::decode(body) {
            Ok(op) => op,
            Err(error) => {
                return MetadataReply::Refused {
                    kind: RefusalKind::BadRequest,
                    reason: format!("bad request: {error}"),
                }
                .encode()
            }
        };
        let places = matches!(
            op,
            MetadataOp::CreateTopic { .. }
                | MetadataOp::DeleteTopic { .. }
                | MetadataOp::DeleteStream { .. }
                | MetadataOp::CreatePartitions { .. }
                | MetadataOp::DeletePartitions { .. }
        );
        // Prepare timestamps are nanoseconds; metadata keeps microseconds.
        let reply = match self.metadata.apply(&op, timestamp / 1000) {
            Ok(applied) => {
                if places {
                    self.placements_version += 1;
                }
                MetadataReply::Applied(applied)
            }
            Err(error) => MetadataReply::Refused {
                kind: error.kind(),
                reason: error.to_string(),
            },
        };
        reply.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Ident, Limits, TopicOptions};

    #[test]
    fn replies_round_trip_and_truncations_are_refused() {
        for reply in [
            MetadataReply::Refused {
                kind: RefusalKind::StreamNotFound,
                reason: "stream 1 not found".into(),
            },
            MetadataReply::Refused {
                kind: RefusalKind::InvalidName,
                reason: "é".repeat(300),
            },
            MetadataReply::Applied(Applied::Done),
            MetadataReply::Applied(Applied::StreamCreated { id: 1 }),
            MetadataReply::Applied(Applied::TopicCreated { id: 2 }),
            MetadataReply::Applied(Applied::PartitionsCreated { first: 3, count: 4 }),
            MetadataReply::Applied(Applied::UserCreated { id: 5 }),
            MetadataReply::Applied(Applied::ConsumerGroupCreated { id: 6 }),
            MetadataReply::Applied(Applied::Joined {
                generation: 7,
                partitions: vec![0, 2],
            }),
            MetadataReply::Applied(Applied::TokensDeleted { count: 8 }),
        ] {
            let bytes = reply.encode();
            let decoded = MetadataReply::decode(&bytes).unwrap();
            if let MetadataReply::Refused { kind, reason } = &reply {
                assert!(reason.starts_with(match &decoded {
                    MetadataReply::Refused { kind: same, reason } if same == kind => {
                        reason.as_str()
                    }
                    _ => panic!("a refusal decodes as one, of its kind"),
                }));
            } else {
                assert_eq!(decoded, reply);
            }
            for cut in 0..bytes.len() {
                assert!(MetadataReply::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn applying_creates_and_moves_the_placements_version() {
        let mut machine = MetadataMachine::new(Metadata::new(vec![0, 1, 2], 3, Limits::default()));
        let create_stream = MetadataOp::CreateStream { name: "s".into() }
            .encode()
            .unwrap();
        assert_eq!(
            MetadataReply::decode(&machine.apply(1, 1_000, 16, &create_stream)).unwrap(),
            MetadataReply::Applied(Applied::StreamCreated { id: 0 })
        );
        assert_eq!(machine.placements_version, 0);
        let create_topic = MetadataOp::CreateTopic {
            stream: Ident::Name("s".into()),
            name: "t".into(),
            partitions: 6,
            replication_factor: 0,
            options: TopicOptions::default(),
        }
        .encode()
        .unwrap();
        assert_eq!(
            MetadataReply::decode(&machine.apply(2, 2_000, 16, &create_topic)).unwrap(),
            MetadataReply::Applied(Applied::TopicCreated { id: 0 })
        );
        assert_eq!(machine.placements_version, 1);
        // Again: refused (the name is taken), nothing moves.
        assert!(matches!(
            MetadataReply::decode(&machine.apply(3, 3_000, 16, &create_topic)).unwrap(),
            MetadataReply::Refused {
                kind: RefusalKind::TopicNameTaken,
                ..
            }
        ));
        assert_eq!(machine.placements_version, 1);
        assert!(matches!(
            MetadataReply::decode(&machine.apply(4, 4_000, 16, b"junk")).unwrap(),
            MetadataReply::Refused {
                kind: RefusalKind::BadRequest,
                ..
            }
        ));
    }
}
