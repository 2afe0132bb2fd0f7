//! The metadata state as one checkpoint: its encoding (versioned, every count bounded by the
//! limits before anything is allocated) and the invariants a decoded state must hold, so a
//! checkpoint that decodes is one the state machine could have produced.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, EncodeError, Reader, Writer};

use super::groups::ConsumerGroup;
use super::ops::{
    get_options, get_permissions, get_status, put_options, put_permissions, put_status,
};
use super::placement::Placement;
use super::users::{Token, User};
use super::{Limits, Metadata, Partition, Stream, Topic, NODES_MAX};

/// Version 2: members' idle clocks.
pub const SNAPSHOT_VERSION: u8 = 2;

fn invalid(why: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(why.into())
}

impl Metadata {
    pub fn encode_snapshot(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::default();
        w.u8(SNAPSHOT_VERSION);
        w.u32(self.nodes.len() as u32);
        for node in &self.nodes {
            w.u8(*node);
        }
        w.u8(self.replication_default);
        w.u64(self.partition_group_next);
        w.u32(self.streams.len() as u32);
        for stream in self.streams.values() {
            w.u32(stream.id);
            w.short_str(&stream.name);
            w.u64(stream.created_at);
            w.u32(stream.topics.len() as u32);
            for topic in stream.topics.values() {
                encode_topic(&mut w, topic);
            }
        }
        w.u32(self.users.len() as u32);
        for user in self.users.values() {
            w.u32(user.id);
            w.short_str(&user.username);
            w.short_str(&user.password_hash);
            put_status(&mut w, user.status);
            put_permissions(&mut w, &user.permissions);
            w.u64(user.created_at);
            w.u32(user.tokens.len() as u32);
            for token in user.tokens.values() {
                w.short_str(&token.name);
                w.short_str(&token.token_hash);
                w.option_u64(token.expires_at);
            }
        }
        w.u32(self.member_seen.len() as u32);
        for (member, seen) in &self.member_seen {
            w.u128(*member);
            w.u64(*seen);
        }
        w.finish()
    }

    /// Decodes a checkpoint written by `encode_snapshot`, under `limits`, and checks it.
    pub fn decode_snapshot(bytes: &[u8], limits: Limits) -> Result<Metadata, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("snapshot version", SNAPSHOT_VERSION)?;
        let node_count = r.count("nodes", NODES_MAX as u32)?;
        let mut nodes = Vec::with_capacity(node_count as usize);
        for _ in 0..node_count {
            nodes.push(r.u8("node")?);
        }
        let replication_default = r.u8("replication default")?;
        let partition_group_next = r.u64("next partition group")?;
        let mut streams = BTreeMap::new();
        for _ in 0..r.count("streams", limits.streams_max)? {
            let id = r.u32("stream id")?;
            let name = r.short_str("stream name")?;
            let created_at = r.u64("stream created at")?;
            let mut topics = BTreeMap::new();
            for _ in 0..r.count("topics", limits.topics_per_stream_max)? {
                let topic = decode_topic(&mut r, &limits)?;
                if topics.insert(topic.id, topic).is_some() {
                    return Err(invalid(format!("two topics with one id in stream {id}")));
                }
            }
            let stream = Stream {
                id,
                name,
                created_at,
                topics,
            };
            if streams.insert(id, stream).is_some() {
                return Err(invalid(format!("two streams with id {id}")));
            }
        }
        let mut users = BTreeMap::new();
        for _ in 0..r.count("users", limits.users_max)? {
            let id = r.u32("user id")?;
            let username = r.short_str("username")?;
            let password_hash = r.short_str("password hash")?;
            let status = get_status(&mut r)?;
            let permissions = get_permissions(&mut r)?;
            let created_at = r.u64("user created at")?;
            let mut tokens = BTreeMap::new();
            for _ in 0..r.count("tokens", limits.tokens_per_user_max)? {
                let token = Token {
                    name: r.short_str("token name")?,
                    token_hash: r.short_str("token hash")?,
                    expires_at: r.option_u64("token expiry")?,
                };
                if tokens.insert(token.name.clone(), token).is_some() {
                    return Err(invalid(format!("two tokens with one name for user {id}")));
                }
            }
            let user = User {
                id,
                username,
                password_hash,
                status,
                permissions,
                created_at,
                tokens,
            };
            if users.insert(id, user).is_some() {
                return Err(invalid(format!("two users with id {id}")));
            }
        }
        let mut member_seen = BTreeMap::new();
        let members_max = limits
            .members_per_group_max
            .saturating_mul(limits.groups_per_topic_max)
            .saturating_mul(limits.topics_per_stream_max)
            .saturating_mul(limits.streams_max);
        for _ in 0..r.count("member clocks", members_max)? {
            let member = r.u128("member")?;
            let seen = r.u64("member seen")?;
            if member_seen.insert(member, seen).is_some() {
                return Err(invalid(format!("two clocks for member {member:x}")));
            }
        }
        r.finish()?;
        let metadata = Metadata {
            limits,
            nodes,
            replication_default,
            streams,
            users,
            partition_group_next,
            member_seen,
        };
        metadata.check().map_err(DecodeError::Invalid)?;
        Ok(metadata)
    }

    /// The invariants every state reachable by `apply` holds. Names unique per scope, ids
    /// matching their keys, placements on cluster nodes, partition groups unique and below the
    /// next one, every partition of a group with members owned exactly once.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes.is_empty() || self.nodes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("nodes are not ascending and distinct".to_string());
        }
        if self.replication_default == 0 {
            return Err("replication default 0".to_string());
        }
        let mut partition_groups = BTreeSet::new();
        let mut stream_names = BTreeSet::new();
        for (id, stream) in &self.streams {
            if stream.id != *id || !stream_names.insert(&stream.name) {
                return Err(format!("stream {id}: id or name repeated"));
            }
            let mut topic_names = BTreeSet::new();
            for (topic_id, topic) in &stream.topics {
                if topic.id != *topic_id || !topic_names.insert(&topic.name) {
                    return Err(format!("topic {id}/{topic_id}: id or name repeated"));
                }
                if topic.replication_factor == 0
                    || usize::from(topic.replication_factor) > self.nodes.len()
                {
                    return Err(format!("topic {id}/{topic_id}: replication factor"));
                }
                for partition in &topic.partitions {
                    let placement = &partition.placement;
                    let members_ok = placement.members.len()
                        == usize::from(topic.replication_factor)
                        && placement.members.windows(2).all(|w| w[0] < w[1])
                        && placement
                            .members
                            .iter()
                            .all(|m| self.nodes.binary_search(m).is_ok())
                        && usize::from(placement.placement_offset) < placement.members.len();
                    if !members_ok {
                        return Err(format!("topic {id}/{topic_id}: a partition's placement"));
                    }
                    if partition.group == 0
                        || partition.group >= self.partition_group_next
                        || !partition_groups.insert(partition.group)
                    {
                        return Err(format!("partition group {} repeated", partition.group));
                    }
                }
                let mut group_names = BTreeSet::new();
                for (group_id, group) in &topic.groups {
                    if group.id != *group_id
                        || group.id >= topic.group_next_id
                        || !group_names.insert(&group.name)
                    {
                        return Err(format!("consumer group {group_id}: id or name"));
                    }
                    let mut owned: Vec<u32> = group.members.values().flatten().copied().collect();
                    owned.sort_unstable();
                    let expected: Vec<u32> = if group.members.is_empty() {
                        Vec::new()
                    } else {
                        (0..topic.partitions.len() as u32).collect()
                    };
                    if owned != expected {
                        return Err(format!("consumer group {group_id}: assignment"));
                    }
                }
            }
        }
        let mut members = BTreeSet::new();
        for stream in self.streams.values() {
            for topic in stream.topics.values() {
                for group in topic.groups.values() {
                    members.extend(group.members.keys().copied());
                }
            }
        }
        if !members.iter().eq(self.member_seen.keys()) {
            return Err("member clocks do not match the groups' members".to_string());
        }
        let mut usernames = BTreeSet::new();
        for (id, user) in &self.users {
            if user.id != *id || !usernames.insert(&user.username) {
                return Err(format!("user {id}: id or name repeated"));
            }
            if user.tokens.iter().any(|(name, token)| token.name != *name) {
                return Err(format!("user {id}: a token under another name"));
            }
        }
        Ok(())
    }
}

fn encode_topic(w: &mut Writer, topic: &Topic) {
    w.u32(topic.id);
    w.short_str(&topic.name);
    w.u64(topic.created_at);
    put_options(w, &topic.options);
    w.u8(topic.replication_factor);
    w.u32(topic.group_next_id);
    w.u32(topic.partitions.len() as u32);
    for partition in &topic.partitions {
        w.u64(partition.group);
        w.u64(partition.created_at);
        w.u8(partition.placement.members.len() as u8);
        for member in &partition.placement.members {
            w.u8(*member);
        }
        w.u8(partition.placement.placement_offset);
    }
    w.u32(topic.groups.len() as u32);
    for group in topic.groups.values() {
        w.u32(group.id);
        w.short_str(&group.name);
        w.u64(group.generation);
        w.u32(group.members.len() as u32);
        for (member, partitions) in &group.members {
            w.u128(*member);
            w.u32(partitions.len() as u32);
            for partition in partitions {
                w.u32(*partition);
            }
        }
    }
}

fn decode_topic(r: &mut Reader, limits: &Limits) -> Result<Topic, DecodeError> {
    let id = r.u32("topic id")?;
    let name = r.short_str("topic name")?;
    let created_at = r.u64("topic created at")?;
    let options = get_options(r)?;
    let replication_factor = r.u8("replication factor")?;
    let group_next_id = r.u32("next consumer group id")?;
    let mut partitions = Vec::new();
    for _ in 0..r.count("partitions", limits.partitions_per_topic_max)? {
        let group = r.u64("partition group")?;
        let created_at = r.u64("partition created at")?;
        let member_count = r.u8("members")?;
        if usize::from(member_count) > NODES_MAX {
            return Err(invalid(format!(
                "{member_count} members in a partition group"
            )));
        }
        let mut members = Vec::with_capacity(usize::from(member_count));
        for _ in 0..member_count {
            members.push(r.u8("member")?);
        }
        let placement_offset = r.u8("placement offset")?;
        partitions.push(Partition {
            group,
            placement: Placement {
                members,
                placement_offset,
            },
            created_at,
        });
    }
    let mut groups = BTreeMap::new();
    for _ in 0..r.count("consumer groups", limits.groups_per_topic_max)? {
        let group_id = r.u32("consumer group id")?;
        let group_name = r.short_str("consumer group name")?;
        let generation = r.u64("generation")?;
        let mut members = BTreeMap::new();
        for _ in 0..r.count("members", limits.members_per_group_max)? {
            let member = r.u128("member")?;
            let mut owned = Vec::new();
            for _ in 0..r.count("owned partitions", limits.partitions_per_topic_max)? {
                owned.push(r.u32("owned partition")?);
            }
            if members.insert(member, owned).is_some() {
                return Err(invalid(format!("member {member} twice in a group")));
            }
        }
        let group = ConsumerGroup {
            id: group_id,
            name: group_name,
            generation,
            members,
        };
        if groups.insert(group_id, group).is_some() {
            return Err(invalid(format!("two consumer groups with id {group_id}")));
        }
    }
    Ok(Topic {
        id,
        name,
        created_at,
        options,
        replication_factor,
        partitions,
        groups,
        group_next_id,
    })
}
