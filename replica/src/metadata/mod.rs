//! The metadata state machine: streams, topics, partitions and their replica sets, users,
//! permissions, personal access tokens and consumer groups. `apply` takes one committed
//! operation and the prepare's timestamp and either changes the state or refuses with an
//! error that changes nothing. Streams, topics and partitions live here; users and tokens in
//! `users.rs`, consumer groups in `groups.rs`.

pub mod error;
pub mod groups;
pub mod machine;
pub mod names;
pub mod ops;
pub mod permissions;
pub mod placement;
pub mod snapshot;
pub mod users;

use std::collections::BTreeMap;

pub use error::{MetadataError, RefusalKind};
pub use names::Ident;
pub use ops::{Durability, MetadataOp, TopicOptions, UserStatus};
pub use permissions::{
    Action, GlobalPermissions, Permissions, StreamPermissions, TopicPermissions,
    PERMISSION_ENTRIES_MAX,
};
pub use placement::Placement;
pub use users::{Token, User, ROOT_USER_ID};

use groups::ConsumerGroup;
use names::{lowest_free_id, validate_name};
use ops::{SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN};

/// Nodes a cluster may have (a replica set's size must fit a u8 with room to spare).
pub const NODES_MAX: usize = 64;
/// Replicas of one group, at most (the consensus core's limit).
pub const REPLICATION_MAX: usize = galgo_consensus::quorums::REPLICAS_MAX as usize;

/// Table sizes; an operation that would pass one is refused with `LimitReached`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub streams_max: u32,
    pub topics_per_stream_max: u32,
    pub partitions_per_topic_max: u32,
    /// Partitions one create or delete may add or remove (Iggy: 1000).
    pub partitions_per_request_max: u32,
    pub users_max: u32,
    pub tokens_per_user_max: u32,
    pub groups_per_topic_max: u32,
    pub members_per_group_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            streams_max: 1 << 20,
            topics_per_stream_max: 4096,
            partitions_per_topic_max: 100_000,
            partitions_per_request_max: 1000,
            users_max: 10_000,
            tokens_per_user_max: 100,
            groups_per_topic_max: 4096,
            members_per_group_max: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    pub id: u32,
    pub name: String,
    pub created_at: u64,
    pub topics: BTreeMap<u32, Topic>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub id: u32,
    pub name: String,
    pub created_at: u64,
    pub options: TopicOptions,
    pub replication_factor: u8,
    /// Partition `i` is `partitions[i]`.
    pub partitions: Vec<Partition>,
    pub groups: BTreeMap<u32, ConsumerGroup>,
    /// Consumer group ids are never reused within a topic.
    pub group_next_id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The VSR group that replicates this partition (unique in the cluster, never reused).
    pub group: u64,
    pub placement: Placement,
    pub created_at: u64,
}

/// What an applied operation created or decided, for the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    StreamCreated {
        id: u32,
    },
    TopicCreated {
        id: u32,
    },
    PartitionsCreated {
        first: u32,
        count: u32,
    },
    UserCreated {
        id: u32,
    },
    ConsumerGroupCreated {
        id: u32,
    },
    /// The member's partitions in the group's current generation.
    Joined {
        generation: u64,
        partitions: Vec<u32>,
    },
    /// How many tokens an expiry sweep deleted.
    TokensDeleted {
        count: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub limits: Limits,
    /// Cluster nodes (ascending): where partition groups are placed.
    pub nodes: Vec<u8>,
    /// Replicas per partition when a topic does not say (capped at the node count).
    pub replication_default: u8,
    pub streams: BTreeMap<u32, Stream>,
    pub users: BTreeMap<u32, User>,
    /// The next partition group id; group 0 is the metadata group itself.
    pub partition_group_next: u64,
    /// Every consumer-group member (of any group) → when it last joined or was touched (µs,
    /// the prepare clock). Its keys are exactly the members of all groups.
    pub member_seen: BTreeMap<u128, u64>,
}

impl Metadata {
    /// An empty state for a cluster of `nodes` (ascending, distinct, at least one).
    pub fn new(nodes: Vec<u8>, replication_default: u8, limits: Limits) -> Metadata {
        assert!(!nodes.is_empty() && nodes.len() <= NODES_MAX);
        assert!(
            nodes.windows(2).all(|w| w[0] < w[1]),
            "nodes ascending and distinct"
        );
        assert!(replication_default >= 1);
        Metadata {
            limits,
            nodes,
            replication_default,
            streams: BTreeMap::new(),
            users: BTreeMap::new(),
            partition_group_next: 1,
            member_seen: BTreeMap::new(),
        }
    }

    /// Applies one committed operation at `timestamp` (µs, the prepare's). A refused operation
    /// leaves the state as it was.
    pub fn apply(&mut self, op: &MetadataOp, timestamp: u64) -> Result<Applied, MetadataError> {
        let applied = self.apply_op(op, timestamp)?;
        // Deleting a stream, topic or group takes its members' memberships with it.
        if matches!(
            op,
            MetadataOp::DeleteStream { .. }
                | MetadataOp::DeleteTopic { .. }
                | MetadataOp::DeleteConsumerGroup { .. }
        ) {
            self.forget_departed_members();
        }
        Ok(applied)
    }

    fn apply_op(&mut self, op: &MetadataOp, timestamp: u64) -> Result<Applied, MetadataError> {
        match op {
            MetadataOp::CreateStream { name } => self.create_stream(name, timestamp),
            MetadataOp::UpdateStream { stream, name } => {
                validate_name(name)?;
                let id = self.stream_id(stream)?;
                if self.streams.values().any(|s| s.name == *name && s.id != id) {
                    return Err(MetadataError::StreamNameTaken(name.clone()));
                }
                self.streams.get_mut(&id).expect("resolved").name = name.clone();
                Ok(Applied::Done)
            }
            MetadataOp::DeleteStream { stream } => {
                let id = self.stream_id(stream)?;
                self.streams.remove(&id);
                // Ids are reused: grants on this one must not carry over to the next stream.
                for user in self.users.values_mut() {
                    if let Some(permissions) = &mut user.permissions {
                        permissions.streams.remove(&id);
                    }
                }
                Ok(Applied::Done)
            }
            MetadataOp::CreateTopic {
                stream,
                name,
                partitions,
                replication_factor,
                options,
            } => self.create_topic(
                stream,
                name,
                *partitions,
                *replication_factor,
                options,
                timestamp,
            ),
            MetadataOp::UpdateTopic {
                stream,
                topic,
                name,
                options,
            } => {
                validate_name(name)?;
                validate_options(options)?;
                let (s, t) = self.topic_id(stream, topic)?;
                let topics = &mut self.streams.get_mut(&s).expect("resolved").topics;
                if topics.values().any(|x| x.name == *name && x.id != t) {
                    return Err(MetadataError::TopicNameTaken(name.clone()));
                }
                let topic = topics.get_mut(&t).expect("resolved");
                topic.name = name.clone();
                topic.options = *options;
                Ok(Applied::Done)
            }
            MetadataOp::DeleteTopic { stream, topic } => {
                let (s, t) = self.topic_id(stream, topic)?;
                self.streams
                    .get_mut(&s)
                    .expect("resolved")
                    .topics
                    .remove(&t);
                for user in self.users.values_mut() {
                    if let Some(stream) = user
                        .permissions
                        .as_mut()
                        .and_then(|p| p.streams.get_mut(&s))
                    {
                        stream.topics.remove(&t);
                    }
                }
                Ok(Applied::Done)
            }
            MetadataOp::CreatePartitions {
                stream,
                topic,
                count,
            } => self.create_partitions(stream, topic, *count, timestamp),
            MetadataOp::DeletePartitions {
                stream,
                topic,
                count,
            } => self.delete_partitions(stream, topic, *count),
            MetadataOp::CreateUser { .. }
            | MetadataOp::UpdateUser { .. }
            | MetadataOp::DeleteUser { .. }
            | MetadataOp::UpdatePermissions { .. }
            | MetadataOp::ChangePassword { .. }
            | MetadataOp::CreateToken { .. }
            | MetadataOp::DeleteToken { .. }
            | MetadataOp::DeleteExpiredTokens => self.apply_user_op(op, timestamp),
            MetadataOp::CreateConsumerGroup { .. }
            | MetadataOp::DeleteConsumerGroup { .. }
            | MetadataOp::JoinConsumerGroup { .. }
            | MetadataOp::LeaveConsumerGroup { .. }
            | MetadataOp::DropMember { .. }
            | MetadataOp::TouchMembers { .. }
            | MetadataOp::ExpireMembers { .. } => self.apply_group_op(op, timestamp),
        }
    }

    pub fn stream_id(&self, stream: &Ident) -> Result<u32, MetadataError> {
        names::find(&self.streams, stream, |s| &s.name)
            .map(|s| s.id)
            .ok_or_else(|| MetadataError::StreamNotFound(stream.to_string()))
    }

    /// (stream id, topic id).
    pub fn topic_id(&self, stream: &Ident, topic: &Ident) -> Result<(u32, u32), MetadataError> {
        let s = self.stream_id(stream)?;
        names::find(&self.streams[&s].topics, topic, |t| &t.name)
            .map(|t| (s, t.id))
            .ok_or_else(|| MetadataError::TopicNotFound(topic.to_string()))
    }

    /// The topic with resolved ids `s` and `t`.
    fn topic_at_mut(&mut self, s: u32, t: u32) -> &mut Topic {
        let stream = self.streams.get_mut(&s).expect("a resolved stream");
        stream.topics.get_mut(&t).expect("a resolved topic")
    }

    fn topic_mut(&mut self, stream: &Ident, topic: &Ident) -> Result<&mut Topic, MetadataError> {
        let (s, t) = self.topic_id(stream, topic)?;
        Ok(self.topic_at_mut(s, t))
    }

    pub fn topic(&self, stream: &Ident, topic: &Ident) -> Result<&Topic, MetadataError> {
        let (s, t) = self.topic_id(stream, topic)?;
        Ok(&self.streams[&s].topics[&t])
    }

    fn create_stream(&mut self, name: &str, timestamp: u64) -> Result<Applied, MetadataError> {
        validate_name(name)?;
        if self.streams.values().any(|s| s.name == name) {
            return Err(MetadataError::StreamNameTaken(name.to_string()));
        }
        let id = lowest_free_id(&self.streams, self.limits.streams_max)
            .ok_or_else(|| MetadataError::LimitReached("streams".to_string()))?;
        self.streams.insert(
            id,
            Stream {
                id,
                name: name.to_string(),
                created_at: timestamp,
                topics: BTreeMap::new(),
            },
        );
        Ok(Applied::StreamCreated { id })
    }

    fn create_topic(
        &mut self,
        stream: &Ident,
        name: &str,
        partitions: u32,
        replication_factor: u8,
        options: &TopicOptions,
        timestamp: u64,
    ) -> Result<Applied, MetadataError> {
        validate_name(name)?;
        validate_options(options)?;
        let s = self.stream_id(stream)?;
        self.check_partition_request(partitions, 0)?;
        let node_count = self.nodes.len() as u8;
        let replication_factor = match replication_factor {
            0 => self
                .replication_default
                .min(node_count)
                .min(REPLICATION_MAX as u8),
            r if r > node_count || usize::from(r) > REPLICATION_MAX => {
                return Err(MetadataError::InvalidValue(format!(
                    "replication factor {r} with {node_count} nodes (at most {REPLICATION_MAX})"
                )))
            }
            r => r,
        };
        let topics = &self.streams[&s].topics;
        if topics.values().any(|t| t.name == name) {
            return Err(MetadataError::TopicNameTaken(name.to_string()));
        }
        let id = lowest_free_id(topics, self.limits.topics_per_stream_max)
            .ok_or_else(|| MetadataError::LimitReached("topics in the stream".to_string()))?;
        let topic = Topic {
            id,
            name: name.to_string(),
            created_at: timestamp,
            options: *options,
            replication_factor,
            partitions: Vec::new(),
            groups: BTreeMap::new(),
            group_next_id: 0,
        };
        self.streams
            .get_mut(&s)
            .expect("resolved")
            .topics
            .insert(id, topic);
        self.add_partitions(s, id, partitions, timestamp);
        Ok(Applied::TopicCreated { id })
    }

    fn check_partition_request(&self, count: u32, existing: u32) -> Result<(), MetadataError> {
        if count > self.limits.partitions_per_request_max {
            return Err(MetadataError::InvalidValue(format!(
                "{count} partitions in one request (at most {})",
                self.limits.partitions_per_request_max
            )));
        }
        if u64::from(existing) + u64::from(count) > u64::from(self.limits.partitions_per_topic_max)
        {
            return Err(MetadataError::LimitReached(format!(
                "partitions per topic ({})",
                self.limits.partitions_per_topic_max
            )));
        }
        Ok(())
    }

    /// How many partition groups each node prefers to lead, in `nodes` order.
    fn led_counts(&self) -> Vec<u32> {
        let mut led = vec![0u32; self.nodes.len()];
        for stream in self.streams.values() {
            for topic in stream.topics.values() {
                for partition in &topic.partitions {
                    let primary = partition.placement.preferred_primary();
                    let index = self.nodes.binary_search(&primary).expect("a cluster node");
                    led[index] += 1;
                }
            }
        }
        led
    }

    fn add_partitions(&mut self, s: u32, t: u32, count: u32, timestamp: u64) {
        let mut led = self.led_counts();
        let replication_factor = self.streams[&s].topics[&t].replication_factor;
        let mut added = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let placement = placement::place(&self.nodes, &led, replication_factor);
            let index = self
                .nodes
                .binary_search(&placement.preferred_primary())
                .expect("a cluster node");
            led[index] += 1;
            added.push(Partition {
                group: self.partition_group_next,
                placement,
                created_at: timestamp,
            });
            self.partition_group_next += 1;
        }
        let topic = self.topic_at_mut(s, t);
        topic.partitions.extend(added);
        groups::rebalance_all(topic);
    }

    fn create_partitions(
        &mut self,
        stream: &Ident,
        topic: &Ident,
        count: u32,
        timestamp: u64,
    ) -> Result<Applied, MetadataError> {
        let (s, t) = self.topic_id(stream, topic)?;
        if count == 0 {
            return Err(MetadataError::InvalidValue("0 partitions".to_string()));
        }
        let existing = self.streams[&s].topics[&t].partitions.len() as u32;
        self.check_partition_request(count, existing)?;
        self.add_partitions(s, t, count, timestamp);
        Ok(Applied::PartitionsCreated {
            first: existing,
            count,
        })
    }

    fn delete_partitions(
        &mut self,
        stream: &Ident,
        topic: &Ident,
        count: u32,
    ) -> Result<Applied, MetadataError> {
        let (s, t) = self.topic_id(stream, topic)?;
        let existing = self.streams[&s].topics[&t].partitions.len() as u32;
        if count == 0 || count > existing {
            return Err(MetadataError::InvalidValue(format!(
                "delete {count} of {existing} partitions"
            )));
        }
        self.check_partition_request(count, 0)?;
        let topic = self.topic_at_mut(s, t);
        topic.partitions.truncate((existing - count) as usize);
        groups::rebalance_all(topic);
        Ok(Applied::Done)
    }
}

fn validate_options(options: &TopicOptions) -> Result<(), MetadataError> {
    if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&options.segment_size) {
        return Err(MetadataError::InvalidValue(format!(
            "segment size {} (from {SEGMENT_SIZE_MIN} to {SEGMENT_SIZE_MAX})",
            options.segment_size
        )));
    }
    if options.message_expiry_us == 0 {
        return Err(MetadataError::InvalidValue(
            "message expiry 0 (u64::MAX keeps messages)".to_string(),
        ));
    }
    if options.max_topic_size < options.segment_size {
        return Err(MetadataError::InvalidValue(format!(
            "max topic size {} below the segment size {}",
            options.max_topic_size, options.segment_size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
