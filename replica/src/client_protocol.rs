//! What crosses a node's client port besides VSR requests and replies: the operation numbers
//! of the broker's requests, and the queries a node answers itself (where a topic's partition
//! groups are, how a group stands, committed messages, the applied metadata), with their
//! encodings. Frames are whole consensus messages.

use crate::codec::{DecodeError, EncodeError, Reader, Writer};
use crate::partition::ops::{get_consumer, put_consumer, ConsumerKey};

/// A metadata op (`MetadataOp` encoding) to group 0, or a partition op (`PartitionOp`
/// encoding) to a partition's group.
pub const OPERATION_BROKER: u8 = 16;
/// To group 0, answered by the node from its applied metadata (not replicated, may lag):
/// body `TopicQuery`, reply body `TopicRoutes`.
pub const OPERATION_TOPIC_ROUTES: u8 = 250;

/// To group 0, answered by the node itself: how its replica of one group stands. Body
/// `GroupStatusQuery`, reply body `GroupStatus`.
pub const OPERATION_GROUP_STATUS: u8 = 251;

/// The node's answer to a request (`OPERATION_BROKER` or a register) its replica of the group
/// cannot take now: the group is not placed here or not open yet (a topic just created), or
/// the replica is a backup or changing view. Empty body. The client asks the next member at
/// once (pausing after a whole round) instead of waiting out its attempt timeout.
pub const OPERATION_NOT_PRIMARY: u8 = 254;

/// Version 3: polled batches carry their timestamp.
const QUERY_VERSION: u8 = 3;

/// To group 0, answered by the node from its applied metadata: the whole metadata state as a
/// checkpoint (`Metadata::encode_snapshot`), if the node applied at least the op asked for.
/// Body `MetadataQuery`, reply body `MetadataAnswer`.
pub const OPERATION_METADATA: u8 = 253;
/// Checkpoint bytes one answer carries, at most (a message body is 1 MiB).
pub const METADATA_BYTES_MAX: u32 = 1_000_000;

/// To a partition's group (header group = the partition's), answered by the node from its
/// committed log: messages from an offset. Body `PollQuery`, reply body `PollReply`.
pub const OPERATION_POLL: u8 = 252;
/// Batches one poll reply carries, at most.
pub const POLL_BATCHES_MAX: u32 = 1024;
/// Bytes of batches one poll reply carries, each counted with its `POLLED_BATCH_OVERHEAD`: the
/// largest batch (a whole prepare body but the append head) always fits alone, and the reply
/// (with its `POLL_REPLY_HEAD` bytes) stays within a message body.
pub const POLL_BYTES_MAX: u32 =
    (galgo_consensus::message::BODY_SIZE_MAX - crate::partition::ops::APPEND_HEAD_SIZE) as u32;
/// Encoded bytes of one polled batch besides its own: base offset, count, timestamp, length.
pub const POLLED_BATCH_OVERHEAD: usize = 8 + 4 + 8 + 4;
/// Encoded bytes of a poll reply besides its batches.
pub const POLL_REPLY_HEAD: usize = 1 + 1 + 8 + 8 + 9 + 4;
const _: () = assert!(
    POLL_BYTES_MAX as usize + POLLED_BATCH_OVERHEAD + POLL_REPLY_HEAD
        <= galgo_consensus::message::BODY_SIZE_MAX
);

/// Where a poll starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollStart {
    Offset(u64),
    /// The last `n` messages: from the committed end minus `n`.
    Last(u32),
    /// The first batch stamped at or after this time (µs since the epoch).
    Timestamp(u64),
    /// One past the consumer's stored offset (from the start if it stored none).
    Next(ConsumerKey),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollQuery {
    pub start: PollStart,
    /// Batches at most (0 to `POLL_BATCHES_MAX`; 0 asks only for the positions).
    pub batches_max: u32,
    /// Batch bytes at most (the first batch is sent whole even past it, within
    /// `POLL_BYTES_MAX`).
    pub bytes_max: u32,
}

impl PollQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        match self.start {
            PollStart::Offset(offset) => {
                w.u8(1);
                w.u64(offset);
            }
            PollStart::Last(count) => {
                w.u8(2);
                w.u32(count);
            }
            PollStart::Timestamp(timestamp) => {
                w.u8(3);
                w.u64(timestamp);
            }
            PollStart::Next(consumer) => {
                w.u8(4);
                put_consumer(&mut w, &consumer);
            }
        }
        w.u32(self.batches_max);
        w.u32(self.bytes_max);
        w.finish().expect("fixed size")
    }

    pub fn decode(bytes: &[u8]) -> Result<PollQuery, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("poll query version", QUERY_VERSION)?;
        let start = match r.u8("poll start")? {
            1 => PollStart::Offset(r.u64("offset")?),
            2 => PollStart::Last(r.u32("last count")?),
            3 => PollStart::Timestamp(r.u64("timestamp")?),
            4 => PollStart::Next(get_consumer(&mut r)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "poll start",
                    tag,
                })
            }
        };
        let query = PollQuery {
            start,
            batches_max: r.u32("batches max")?,
            bytes_max: r.u32("bytes max")?,
        };
        r.finish()?;
        // 0 batches: only the positions (the end, the start, a stored offset).
        if query.batches_max > POLL_BATCHES_MAX {
            return Err(DecodeError::Invalid(format!(
                "{} batches (at most {POLL_BATCHES_MAX})",
                query.batches_max
            )));
        }
        Ok(query)
    }
}

/// One committed batch: `count` messages from `base_offset`, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolledBatch {
    pub base_offset: u64,
    pub count: u32,
    /// The primary's stamp (µs since the epoch).
    pub timestamp: u64,
    /// The batch, sharing the buffer it was read into.
    pub bytes: bytes::Bytes,
}

/// What a node serves for a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Polled {
    /// The committed end: the next offset to be appended.
    pub end: u64,
    /// The offset the poll started from (batches may begin before it).
    pub start: u64,
    /// For `PollStart::Next`: the consumer's stored offset, if any.
    pub stored: Option<u64>,
    pub batches: Vec<PolledBatch>,
}

/// A node's answer to a poll: `None` when it does not run the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollReply(pub Option<Polled>);

impl PollReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        w.bool(self.0.is_some());
        let (end, start, stored, batches) = match &self.0 {
            Some(polled) => (
                polled.end,
                polled.start,
                polled.stored,
                polled.batches.as_slice(),
            ),
            None => (0, 0, None, &[][..]),
        };
        assert!(batches.len() <= POLL_BATCHES_MAX as usize);
        w.u64(end);
        w.u64(start);
        w.option_u64(stored);
        w.u32(batches.len() as u32);
        for batch in batches {
            w.u64(batch.base_offset);
            w.u32(batch.count);
            w.u64(batch.timestamp);
            w.long_bytes(&batch.bytes);
        }
        w.finish().expect("bounded")
    }

    pub fn decode(bytes: &[u8]) -> Result<PollReply, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("poll reply version", QUERY_VERSION)?;
        let known = r.bool("group known")?;
        let end = r.u64("end")?;
        let start = r.u64("start")?;
        let stored = r.option_u64("stored offset")?;
        let count = r.count("batches", POLL_BATCHES_MAX)?;
        let mut batches = Vec::with_capacity(count as usize);
        for _ in 0..count {
            batches.push(PolledBatch {
                base_offset: r.u64("base offset")?,
                count: r.u32("count")?,
                timestamp: r.u64("timestamp")?,
                bytes: r.long_bytes("batch", POLL_BYTES_MAX)?.into(),
            });
        }
        r.finish()?;
        if !known && (end != 0 || !batches.is_empty()) {
            return Err(DecodeError::Invalid(
                "batches for an unknown group".to_string(),
            ));
        }
        Ok(PollReply(known.then_some(Polled {
            end,
            start,
            stored,
            batches,
        })))
    }
}
/// Partitions one `TopicRoutes` page lists, at most (16 bytes or fewer each: a page stays far
/// below a message body's limit).
pub const ROUTES_PER_PAGE: u32 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicQuery {
    pub stream: String,
    pub topic: String,
    /// The first partition of the page asked for.
    pub first: u32,
}

impl TopicQuery {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        w.short_str(&self.stream);
        w.short_str(&self.topic);
        w.u32(self.first);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<TopicQuery, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("topic query version", QUERY_VERSION)?;
        let query = TopicQuery {
            stream: r.short_str("stream")?,
            topic: r.short_str("topic")?,
            first: r.u32("first partition")?,
        };
        r.finish()?;
        Ok(query)
    }
}

/// One partition's replication group: `members[(view + placement_offset) % n]` leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRoute {
    pub group: u64,
    pub members: Vec<u8>,
    pub placement_offset: u8,
    /// The shard of each member that runs the group: its client port is the node's + shard.
    pub shard: u16,
}

/// One page of a topic's partitions, in order: `routes[i]` is partition `first + i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesPage {
    /// Partitions the topic has.
    pub total: u32,
    pub first: u32,
    pub routes: Vec<PartitionRoute>,
}

/// A node's answer to a `TopicQuery`, or `None` when the node does not know the topic (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRoutes(pub Option<RoutesPage>);

impl TopicRoutes {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        w.bool(self.0.is_some());
        let (total, first, routes) = match &self.0 {
            Some(page) => (page.total, page.first, page.routes.as_slice()),
            None => (0, 0, &[][..]),
        };
        assert!(routes.len() <= ROUTES_PER_PAGE as usize);
        w.u32(total);
        w.u32(first);
        w.u32(routes.len() as u32);
        for route in routes {
            w.u64(route.group);
            w.u8(route.placement_offset);
            w.u16(route.shard);
            w.u8(u8::try_from(route.members.len()).expect("at most 64 nodes"));
            for member in &route.members {
                w.u8(*member);
            }
        }
        w.finish().expect("no field can pass a limit")
    }

    pub fn decode(bytes: &[u8]) -> Result<TopicRoutes, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("topic routes version", QUERY_VERSION)?;
        let known = r.bool("topic known")?;
        let total = r.u32("partitions in the topic")?;
        let first = r.u32("first partition")?;
        let count = r.count("partitions", ROUTES_PER_PAGE)?;
        let mut routes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let group = r.u64("group")?;
            let placement_offset = r.u8("placement offset")?;
            let shard = r.u16("shard")?;
            let members = r.u8("members")?;
            if usize::from(members) > crate::config::NODES_MAX {
                return Err(DecodeError::Invalid(format!("{members} members")));
            }
            let members: Vec<u8> = (0..members)
                .map(|_| r.u8("member"))
                .collect::<Result<_, _>>()?;
            if members.is_empty() || usize::from(placement_offset) >= members.len() {
                return Err(DecodeError::Invalid(format!(
                    "placement offset {placement_offset} of {} members",
                    members.len()
                )));
            }
            routes.push(PartitionRoute {
                group,
                members,
                placement_offset,
                shard,
            });
        }
        r.finish()?;
        if !known && (total != 0 || first != 0 || !routes.is_empty()) {
            return Err(DecodeError::Invalid(
                "routes listed for an unknown topic".to_string(),
            ));
        }
        if u64::from(first) + routes.len() as u64 > u64::from(total) {
            return Err(DecodeError::Invalid(format!(
                "partitions {first}..+{} of {total}",
                routes.len()
            )));
        }
        Ok(TopicRoutes(known.then_some(RoutesPage {
            total,
            first,
            routes,
        })))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataQuery {
    /// The node answers with its state only once it applied this op (a reader's own writes
    /// are then in what it reads).
    pub applied_at_least: u64,
    /// Only the metadata group's primary (in a normal view) answers: it has applied every op
    /// any client saw acknowledged (a user created through another gateway can log in).
    pub from_primary: bool,
}

impl MetadataQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        w.u64(self.applied_at_least);
        w.bool(self.from_primary);
        w.finish().expect("fixed size")
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataQuery, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("metadata query version", QUERY_VERSION)?;
        let query = MetadataQuery {
            applied_at_least: r.u64("applied at least")?,
            from_primary: r.bool("from primary")?,
        };
        r.finish()?;
        Ok(query)
    }
}

/// A node's answer to a `MetadataQuery`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataAnswer {
    /// The checkpoint of the metadata as applied through op `applied`.
    State { applied: u64, checkpoint: Vec<u8> },
    /// The node has applied only through `applied` (or runs no metadata group: 0).
    Behind { applied: u64 },
    /// The checkpoint has `size` bytes, more than one answer carries.
    TooLarge { size: u64 },
}

impl MetadataAnswer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        match self {
            MetadataAnswer::State {
                applied,
                checkpoint,
            } => {
                assert!(checkpoint.len() <= METADATA_BYTES_MAX as usize);
                w.u8(1);
                w.u64(*applied);
                w.long_bytes(checkpoint);
            }
            MetadataAnswer::Behind { applied } => {
                w.u8(2);
                w.u64(*applied);
            }
            MetadataAnswer::TooLarge { size } => {
                w.u8(3);
                w.u64(*size);
            }
        }
        w.finish().expect("bounded by METADATA_BYTES_MAX")
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataAnswer, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("metadata answer version", QUERY_VERSION)?;
        let answer = match r.u8("metadata answer kind")? {
            1 => MetadataAnswer::State {
                applied: r.u64("applied")?,
                checkpoint: r.long_bytes("checkpoint", METADATA_BYTES_MAX)?,
            },
            2 => MetadataAnswer::Behind {
                applied: r.u64("applied")?,
            },
            3 => MetadataAnswer::TooLarge {
                size: r.u64("size")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "metadata answer kind",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(answer)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStatusQuery {
    pub group: u64,
}

impl GroupStatusQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        w.u64(self.group);
        w.finish().expect("fixed size")
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupStatusQuery, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("group status query version", QUERY_VERSION)?;
        let query = GroupStatusQuery {
            group: r.u64("group")?,
        };
        r.finish()?;
        Ok(query)
    }
}

/// One node's replica of a group, as that node sees it (`None`: it does not run the group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub view: u32,
    pub normal: bool,
    pub primary: bool,
    pub commit_min: u64,
    pub commit_max: u64,
    pub head: u64,
    /// Every op up to this one is durable in the node's log.
    pub durable_through: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStatus(pub Option<ReplicaStatus>);

impl GroupStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(QUERY_VERSION);
        w.bool(self.0.is_some());
        if let Some(status) = self.0 {
            w.u32(status.view);
            w.bool(status.normal);
            w.bool(status.primary);
            w.u64(status.commit_min);
            w.u64(status.commit_max);
            w.u64(status.head);
            w.u64(status.durable_through);
        }
        w.finish().expect("fixed size")
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupStatus, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("group status version", QUERY_VERSION)?;
        let status = if r.bool("group known")? {
            Some(ReplicaStatus {
                view: r.u32("view")?,
                normal: r.bool("normal")?,
                primary: r.bool("primary")?,
                commit_min: r.u64("commit min")?,
                commit_max: r.u64("commit max")?,
                head: r.u64("head")?,
                durable_through: r.u64("durable through")?,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(GroupStatus(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_answers_round_trip_and_truncations_are_refused() {
        let query = MetadataQuery {
            applied_at_least: 7,
            from_primary: true,
        };
        assert_eq!(MetadataQuery::decode(&query.encode()).unwrap(), query);
        for answer in [
            MetadataAnswer::State {
                applied: 9,
                checkpoint: b"abc".to_vec(),
            },
            MetadataAnswer::Behind { applied: 3 },
            MetadataAnswer::TooLarge { size: 2_000_000 },
        ] {
            let bytes = answer.encode();
            assert_eq!(MetadataAnswer::decode(&bytes).unwrap(), answer);
            for cut in 0..bytes.len() {
                assert!(MetadataAnswer::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        let mut unknown = MetadataAnswer::Behind { applied: 3 }.encode();
        unknown[1] = 9;
        assert!(MetadataAnswer::decode(&unknown).is_err());
    }

    #[test]
    fn polls_round_trip_and_truncations_are_refused() {
        let query = PollQuery {
            start: PollStart::Offset(5),
            batches_max: 3,
            bytes_max: 100,
        };
        for start in [
            PollStart::Offset(5),
            PollStart::Last(4),
            PollStart::Timestamp(1_700_000_000_000_000),
            PollStart::Next(ConsumerKey::Consumer(3)),
            PollStart::Next(ConsumerKey::Group(2)),
        ] {
            let query = PollQuery { start, ..query };
            let bytes = query.encode();
            assert_eq!(PollQuery::decode(&bytes).unwrap(), query);
            for cut in 0..bytes.len() {
                assert!(PollQuery::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        let too_many = PollQuery {
            batches_max: POLL_BATCHES_MAX + 1,
            ..query
        };
        assert!(PollQuery::decode(&too_many.encode()).is_err());
        for reply in [
            PollReply(None),
            PollReply(Some(Polled {
                end: 9,
                start: 9,
                stored: None,
                batches: vec![],
            })),
            PollReply(Some(Polled {
                end: 9,
                start: 6,
                stored: Some(5),
                batches: vec![PolledBatch {
                    base_offset: 5,
                    count: 2,
                    timestamp: 7,
                    bytes: bytes::Bytes::from_static(b"xy"),
                }],
            })),
        ] {
            let bytes = reply.encode();
            assert_eq!(PollReply::decode(&bytes).unwrap(), reply);
            for cut in 0..bytes.len() {
                assert!(PollReply::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn group_status_round_trips_and_truncations_are_refused() {
        let query = GroupStatusQuery { group: 9 };
        assert_eq!(GroupStatusQuery::decode(&query.encode()).unwrap(), query);
        for status in [
            GroupStatus(None),
            GroupStatus(Some(ReplicaStatus {
                view: 3,
                normal: true,
                primary: false,
                commit_min: 10,
                commit_max: 12,
                head: 13,
                durable_through: 11,
            })),
        ] {
            let bytes = status.encode();
            assert_eq!(GroupStatus::decode(&bytes).unwrap(), status);
            for cut in 0..bytes.len() {
                assert!(GroupStatus::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn queries_and_routes_round_trip_and_truncations_are_refused() {
        let query = TopicQuery {
            stream: "orders".into(),
            topic: "eu".into(),
            first: 7,
        };
        let bytes = query.encode().unwrap();
        assert_eq!(TopicQuery::decode(&bytes).unwrap(), query);
        for cut in 0..bytes.len() {
            assert!(TopicQuery::decode(&bytes[..cut]).is_err());
        }
        for routes in [
            TopicRoutes(None),
            TopicRoutes(Some(RoutesPage {
                total: 0,
                first: 0,
                routes: vec![],
            })),
            TopicRoutes(Some(RoutesPage {
                total: 9,
                first: 7,
                routes: vec![
                    PartitionRoute {
                        group: 1,
                        members: vec![0, 1, 2],
                        placement_offset: 2,
                        shard: 1,
                    },
                    PartitionRoute {
                        group: 2,
                        members: vec![1],
                        placement_offset: 0,
                        shard: 0,
                    },
                ],
            })),
        ] {
            let bytes = routes.encode();
            assert_eq!(TopicRoutes::decode(&bytes).unwrap(), routes);
            for cut in 0..bytes.len() {
                assert!(TopicRoutes::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
    }
}
