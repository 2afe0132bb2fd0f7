//! Consumer groups of a topic: members (client sessions), a generation that every membership
//! or partition change bumps, and the assignment of partitions to members (round robin over
//! members in id order). The partition groups fence offset commits that carry an older
//! generation. The rebalance is eager: every change recomputes the whole assignment.
//! Members have an idle clock (`Metadata::member_seen`): joining or being touched by their
//! gateway restarts it, and `ExpireMembers` drops the members whose gateway stopped touching
//! them (a gateway that died cannot say that its clients left).

use std::collections::BTreeMap;

use super::error::MetadataError;
use super::names::{validate_name, Ident};
use super::ops::MetadataOp;
use super::{Applied, Metadata, Topic};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroup {
    pub id: u32,
    pub name: String,
    pub generation: u64,
    /// Member (client session id) → the partitions it owns in this generation, ascending.
    pub members: BTreeMap<u128, Vec<u32>>,
}

impl ConsumerGroup {
    /// Deals partitions `0..partition_count` over the members in id order and bumps the
    /// generation.
    fn rebalance(&mut self, partition_count: u32) {
        for owned in self.members.values_mut() {
            owned.clear();
        }
        let member_count = self.members.len();
        if member_count > 0 {
            let members: Vec<u128> = self.members.keys().copied().collect();
            for partition in 0..partition_count {
                let owner = members[partition as usize % member_count];
                self.members
                    .get_mut(&owner)
                    .expect("a member")
                    .push(partition);
            }
        }
        self.generation += 1;
        let assigned: usize = self.members.values().map(Vec::len).sum();
        assert_eq!(
            assigned,
            if member_count == 0 {
                0
            } else {
                partition_count as usize
            }
        );
    }
}

/// Recomputes every group of `topic` after its partition count changed.
pub(super) fn rebalance_all(topic: &mut Topic) {
    let partition_count = topic.partitions.len() as u32;
    for group in topic.groups.values_mut() {
        group.rebalance(partition_count);
    }
}

fn group_id(topic: &Topic, group: &Ident) -> Result<u32, MetadataError> {
    super::names::find(&topic.groups, group, |g| &g.name)
        .map(|g| g.id)
        .ok_or_else(|| MetadataError::ConsumerGroupNotFound(group.to_string()))
}

impl Metadata {
    pub fn consumer_group(
        &self,
        stream: &Ident,
        topic: &Ident,
        group: &Ident,
    ) -> Result<&ConsumerGroup, MetadataError> {
        let topic = self.topic(stream, topic)?;
        let id = group_id(topic, group)?;
        Ok(&topic.groups[&id])
    }

    /// The group `group` of a topic, and the topic's partition count.
    fn group_mut(
        &mut self,
        stream: &Ident,
        topic: &Ident,
        group: &Ident,
    ) -> Result<(&mut ConsumerGroup, u32), MetadataError> {
        let topic = self.topic_mut(stream, topic)?;
        let partition_count = topic.partitions.len() as u32;
        let id = group_id(topic, group)?;
        Ok((
            topic.groups.get_mut(&id).expect("resolved"),
            partition_count,
        ))
    }

    /// Removes `member` from every group it is in (rebalancing them) and from the clocks.
    fn drop_member(&mut self, member: u128) {
        for stream in self.streams.values_mut() {
            for topic in stream.topics.values_mut() {
                let partition_count = topic.partitions.len() as u32;
                for group in topic.groups.values_mut() {
                    if group.members.remove(&member).is_some() {
                        group.rebalance(partition_count);
                    }
                }
            }
        }
        self.member_seen.remove(&member);
    }

    /// Keeps the clocks of exactly the members some group still has.
    pub(super) fn forget_departed_members(&mut self) {
        let mut present = std::collections::BTreeSet::new();
        for stream in self.streams.values() {
            for topic in stream.topics.values() {
                for group in topic.groups.values() {
                    present.extend(group.members.keys().copied());
                }
            }
        }
        self.member_seen
            .retain(|member, _| present.contains(member));
    }

    pub(super) fn apply_group_op(
        &mut self,
        op: &MetadataOp,
        timestamp: u64,
    ) -> Result<Applied, MetadataError> {
        let groups_max = self.limits.groups_per_topic_max;
        let members_max = self.limits.members_per_group_max;
        match op {
            MetadataOp::CreateConsumerGroup {
                stream,
                topic,
                name,
            } => {
                validate_name(name)?;
                let topic = self.topic_mut(stream, topic)?;
                if topic.groups.values().any(|g| g.name == *name) {
                    return Err(MetadataError::ConsumerGroupNameTaken(name.clone()));
                }
                if topic.groups.len() as u32 >= groups_max || topic.group_next_id == u32::MAX {
                    return Err(MetadataError::LimitReached(
                        "consumer groups in the topic".to_string(),
                    ));
                }
                let id = topic.group_next_id;
                topic.group_next_id += 1;
                topic.groups.insert(
                    id,
                    ConsumerGroup {
                        id,
                        name: name.clone(),
                        generation: 0,
                        members: BTreeMap::new(),
                    },
                );
                Ok(Applied::ConsumerGroupCreated { id })
            }
            MetadataOp::DeleteConsumerGroup {
                stream,
                topic,
                group,
            } => {
                let topic = self.topic_mut(stream, topic)?;
                let id = group_id(topic, group)?;
                topic.groups.remove(&id);
                Ok(Applied::Done)
            }
            MetadataOp::JoinConsumerGroup {
                stream,
                topic,
                group,
                member,
            } => {
                let (group, partition_count) = self.group_mut(stream, topic, group)?;
                // Joining again changes nothing: the reply repeats the member's assignment.
                if !group.members.contains_key(member) {
                    if group.members.len() as u32 >= members_max {
                        return Err(MetadataError::LimitReached(
                            "members in the consumer group".to_string(),
                        ));
                    }
                    group.members.insert(*member, Vec::new());
                    group.rebalance(partition_count);
                }
                let joined = Applied::Joined {
                    generation: group.generation,
                    partitions: group.members[member].clone(),
                };
                self.member_seen.insert(*member, timestamp);
                Ok(joined)
            }
            MetadataOp::LeaveConsumerGroup {
                stream,
                topic,
                group,
                member,
            } => {
                let (group, partition_count) = self.group_mut(stream, topic, group)?;
                if group.members.remove(member).is_none() {
                    return Err(MetadataError::MemberNotFound(*member));
                }
                group.rebalance(partition_count);
                self.forget_departed_members();
                Ok(Applied::Done)
            }
            MetadataOp::DropMember { member } => {
                self.drop_member(*member);
                Ok(Applied::Done)
            }
            MetadataOp::TouchMembers { members } => {
                for member in members {
                    if let Some(seen) = self.member_seen.get_mut(member) {
                        *seen = (*seen).max(timestamp);
                    }
                }
                Ok(Applied::Done)
            }
            MetadataOp::ExpireMembers { idle_us } => {
                let idle: Vec<u128> = self
                    .member_seen
                    .iter()
                    .filter(|(_, seen)| timestamp.saturating_sub(**seen) > *idle_us)
                    .map(|(member, _)| *member)
                    .collect();
                for member in idle {
                    self.drop_member(member);
                }
                Ok(Applied::Done)
            }
            _ => unreachable!("not a consumer group operation: {op:?}"),
        }
    }
}
