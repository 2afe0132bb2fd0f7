//! The broker checks of the broker workload.
//!
//! On every acknowledged append: a producer batch acknowledged twice (a retry across sessions)
//! names the same offsets both times, no offset is handed to two batches, and no append the
//! workload sends is refused. On every acknowledged offset store: a single consumer's is
//! accepted; a group's is accepted or refused as stale, and the accepted ones' generations
//! never go down in commit order. Every tick, on every replica: no single consumer's stored
//! offset goes back (the workload only moves them forward) and no group generation goes down.
//! At the end, every replica's partition has every acknowledged offset below its end, each
//! consumer's last acknowledged offset, and the group's last accepted offset and generation.

use std::collections::{BTreeMap, BTreeSet};

use galgo_replica::partition::ops::ConsumerKey;
use galgo_replica::partition::reply::PartitionReply;
use galgo_replica::partition::PartitionState;

use crate::checker::Failure;
use crate::client::{stale_generation_current, Ack, BrokerRequest, SHARED_GROUP};

#[derive(Default)]
pub struct BrokerChecker {
    /// (client, producer sequence) → (base offset, count) acknowledged.
    batches: BTreeMap<(u128, u64), (u64, u32)>,
    /// base offset → (end offset, client, sequence) of every acknowledged batch.
    ranges: BTreeMap<u64, (u64, u128, u64)>,
    /// One past the highest acknowledged offset.
    end_max: u64,
    /// Single consumer → (op, offset) of its last acknowledged store.
    consumer_stores: BTreeMap<u32, (u64, u64)>,
    /// Commit op → (generation, offset) of every accepted group store.
    group_stores: BTreeMap<u64, (u64, u64)>,
    /// What each running replica showed last: consumer offsets and group generations.
    seen: BTreeMap<u8, PartitionSeen>,
    /// Offset stores acknowledged as accepted, and group stores refused as stale.
    pub stores_accepted: u64,
    pub stale_refused: u64,
}

#[derive(Default)]
struct PartitionSeen {
    offsets: BTreeMap<ConsumerKey, u64>,
    generations: BTreeMap<u32, u64>,
}

impl BrokerChecker {
    pub fn on_ack(&mut self, ack: &Ack) -> Result<(), Failure> {
        match ack.broker {
            None => Ok(()),
            Some(BrokerRequest::Append { sequence }) => self.on_append(ack, sequence),
            Some(BrokerRequest::StoreOffset {
                consumer,
                offset,
                generation,
            }) => self.on_store(ack, consumer, offset, generation),
        }
    }

    fn on_store(
        &mut self,
        ack: &Ack,
        consumer: ConsumerKey,
        offset: u64,
        generation: Option<u64>,
    ) -> Result<(), Failure> {
        let reply = PartitionReply::decode(&ack.reply);
        match (consumer, generation, reply) {
            (ConsumerKey::Consumer(id), None, Ok(PartitionReply::Done)) => {
                if let Some((op, _)) = self.consumer_stores.get(&id) {
                    if *op >= ack.op {
                        return Err(Failure::Correctness(format!(
                            "consumer {id}: a store committed at op {} after one at op {op}",
                            ack.op
                        )));
                    }
                }
                self.consumer_stores.insert(id, (ack.op, offset));
                self.stores_accepted += 1;
                Ok(())
            }
            (ConsumerKey::Group(_), Some(generation), Ok(PartitionReply::Done)) => {
                let newer_before = self
                    .group_stores
                    .range(..ack.op)
                    .find(|(_, (other, _))| *other > generation);
                let older_after = self
                    .group_stores
                    .range(ack.op + 1..)
                    .find(|(_, (other, _))| *other < generation);
                if let Some((other_op, (other, _))) = newer_before.or(older_after) {
                    return Err(Failure::Correctness(format!(
                        "group offset stores accepted out of generation order: generation {generation} at op {} and generation {other} at op {other_op}",
                        ack.op
                    )));
                }
                self.group_stores.insert(ack.op, (generation, offset));
                self.stores_accepted += 1;
                Ok(())
            }
            (ConsumerKey::Group(_), Some(generation), Ok(PartitionReply::Refused { reason }))
                if stale_generation_current(&reason).is_some_and(|current| generation < current) =>
            {
                self.stale_refused += 1;
                Ok(())
            }
            (consumer, _, reply) => Err(Failure::Correctness(format!(
                "client {:x}: storing offset {offset} for {consumer:?} (generation {generation:?}) answered {reply:?}",
                ack.client
            ))),
        }
    }

    /// Every tick, `replica`'s committed partition: stored offsets of single consumers and
    /// group generations never go back while it runs.
    pub fn check_state(&mut self, replica: u8, state: &PartitionState) -> Result<(), Failure> {
        let seen = self.seen.entry(replica).or_default();
        // The workload never deletes an offset: a key once held stays.
        for (consumer, before) in &seen.offsets {
            let Some(offset) = state.consumer_offsets.get(consumer) else {
                return Err(Failure::Correctness(format!(
                    "replica {replica}: the stored offset of {consumer:?} ({before}) vanished"
                )));
            };
            if matches!(consumer, ConsumerKey::Consumer(_)) && offset < before {
                return Err(Failure::Correctness(format!(
                    "replica {replica}: the stored offset of {consumer:?} went back from {before} to {offset}"
                )));
            }
        }
        for (group, before) in &seen.generations {
            match state.group_generations.get(group) {
                Some(generation) if generation >= before => {}
                held => {
                    return Err(Failure::Correctness(format!(
                        "replica {replica}: consumer group {group}'s generation went back from {before} to {held:?}"
                    )));
                }
            }
        }
        seen.offsets.clone_from(&state.consumer_offsets);
        seen.generations.clone_from(&state.group_generations);
        Ok(())
    }

    /// `replica` restarted: its state is rebuilt from its log, from the beginning.
    pub fn on_restart(&mut self, replica: u8) {
        self.seen.remove(&replica);
    }

    fn on_append(&mut self, ack: &Ack, sequence: u64) -> Result<(), Failure> {
        let (base, count) = match PartitionReply::decode(&ack.reply) {
            Ok(PartitionReply::Appended { base_offset, count }) => (base_offset, count),
            other => {
                return Err(Failure::Correctness(format!(
                    "client {:x} batch {sequence}: an append answered {other:?}",
                    ack.client
                )))
            }
        };
        if count == 0 {
            return Err(Failure::Correctness(format!(
                "client {:x} batch {sequence}: appended with no messages",
                ack.client
            )));
        }
        if let Some(first) = self.batches.get(&(ack.client, sequence)) {
            if *first != (base, count) {
                return Err(Failure::Correctness(format!(
                    "client {:x} batch {sequence} acknowledged at offsets {base}+{count} after {}+{}: a retry was appended twice",
                    ack.client, first.0, first.1
                )));
            }
            return Ok(());
        }
        let end = base + u64::from(count);
        if let Some((other_base, (other_end, client, other_sequence))) =
            self.ranges.range(..end).next_back()
        {
            if *other_end > base {
                return Err(Failure::Correctness(format!(
                    "offsets {base}..{end} of client {:x} batch {sequence} were already handed to client {client:x} batch {other_sequence} ({other_base}..{other_end})",
                    ack.client
                )));
            }
        }
        self.batches.insert((ack.client, sequence), (base, count));
        self.ranges.insert(base, (end, ack.client, sequence));
        self.end_max = self.end_max.max(end);
        Ok(())
    }

    /// Each replica's partition at the end: every acknowledged offset is below its end, and it
    /// holds each consumer's last acknowledged offset and the group's last accepted offset and
    /// newest generation — or those of an `indeterminate` store (its session was evicted and
    /// it was not sent again, so it may have been applied after them).
    pub fn check_final(
        &self,
        partitions: &[(u8, &PartitionState)],
        indeterminate: &[BrokerRequest],
    ) -> Result<(), Failure> {
        // (consumer, offset, generation) of each store that may have been applied last.
        let maybe: Vec<(ConsumerKey, u64, Option<u64>)> = indeterminate
            .iter()
            .filter_map(|request| match request {
                BrokerRequest::StoreOffset {
                    consumer,
                    offset,
                    generation,
                } => Some((*consumer, *offset, *generation)),
                BrokerRequest::Append { .. } => None,
            })
            .collect();
        let group_key = ConsumerKey::Group(SHARED_GROUP);
        for (replica, state) in partitions {
            if state.next_offset < self.end_max {
                return Err(Failure::Correctness(format!(
                    "replica {replica} ends its partition at offset {}, below acknowledged offset {}",
                    state.next_offset,
                    self.end_max - 1
                )));
            }
            // Every consumer the replica holds an offset for, and every one that stored one.
            let mut consumers: BTreeSet<ConsumerKey> =
                state.consumer_offsets.keys().copied().collect();
            consumers.extend(
                self.consumer_stores
                    .keys()
                    .map(|id| ConsumerKey::Consumer(*id)),
            );
            consumers.extend(maybe.iter().map(|(consumer, _, _)| *consumer));
            if !self.group_stores.is_empty() {
                consumers.insert(group_key);
            }
            for consumer in consumers {
                // What the replica holds: the offset, and for the group its generation.
                let held = (
                    state.consumer_offsets.get(&consumer).copied(),
                    match consumer {
                        ConsumerKey::Group(group) => state.group_generations.get(&group).copied(),
                        ConsumerKey::Consumer(_) => None,
                    },
                );
                // The last acknowledged store (with its generation: accepted generations never
                // go down, so the last one's is the newest), or nothing if none was.
                let acknowledged = match consumer {
                    ConsumerKey::Consumer(id) => self
                        .consumer_stores
                        .get(&id)
                        .map(|(_, offset)| (Some(*offset), None)),
                    ConsumerKey::Group(_) => self
                        .group_stores
                        .last_key_value()
                        .map(|(_, (generation, offset))| (Some(*offset), Some(*generation))),
                };
                let allowed = held == acknowledged.unwrap_or((None, None))
                    || maybe.iter().any(|(other, offset, generation)| {
                        *other == consumer && held == (Some(*offset), *generation)
                    });
                if !allowed {
                    return Err(Failure::Correctness(format!(
                        "replica {replica} holds (offset, generation) {held:?} for {consumer:?}, not its last acknowledged store {acknowledged:?} nor an indeterminate one"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(client: u128, sequence: u64, base_offset: u64, count: u32) -> Ack {
        Ack {
            client,
            session: 1,
            request: 1,
            op: 1,
            request_checksum: 0,
            reply: PartitionReply::Appended { base_offset, count }.encode(),
            broker: Some(BrokerRequest::Append { sequence }),
        }
    }

    fn store(
        op: u64,
        consumer: ConsumerKey,
        offset: u64,
        generation: Option<u64>,
        reply: PartitionReply,
    ) -> Ack {
        Ack {
            client: 1,
            session: 1,
            request: 1,
            op,
            request_checksum: 0,
            reply: reply.encode(),
            broker: Some(BrokerRequest::StoreOffset {
                consumer,
                offset,
                generation,
            }),
        }
    }

    fn partition(next_offset: u64) -> PartitionState {
        let mut state = PartitionState::new(8, 8);
        state.next_offset = next_offset;
        state
    }

    #[test]
    fn offsets_handed_out_twice_are_caught() {
        let mut checker = BrokerChecker::default();
        checker.on_ack(&ack(1, 0, 0, 2)).unwrap();
        checker.on_ack(&ack(2, 0, 2, 1)).unwrap();
        assert!(checker.on_ack(&ack(3, 0, 1, 1)).is_err());
        assert!(checker.on_ack(&ack(3, 0, 2, 5)).is_err());
        checker.on_ack(&ack(3, 0, 3, 1)).unwrap();
    }

    #[test]
    fn a_retry_appended_twice_is_caught() {
        let mut checker = BrokerChecker::default();
        checker.on_ack(&ack(1, 4, 10, 2)).unwrap();
        // The same batch again, with its original offsets: a correct dedup.
        checker.on_ack(&ack(1, 4, 10, 2)).unwrap();
        assert!(checker.on_ack(&ack(1, 4, 12, 2)).is_err());
    }

    #[test]
    fn a_refused_append_and_a_short_partition_are_caught() {
        let mut checker = BrokerChecker::default();
        let mut refused = ack(1, 0, 0, 1);
        refused.reply = PartitionReply::refused("ProducerFenced").encode();
        assert!(checker.on_ack(&refused).is_err());
        checker.on_ack(&ack(1, 0, 0, 3)).unwrap();
        checker
            .check_final(&[(0, &partition(3)), (1, &partition(5))], &[])
            .unwrap();
        assert!(checker.check_final(&[(0, &partition(2))], &[]).is_err());
    }

    #[test]
    fn group_stores_accepted_out_of_generation_order_are_caught() {
        let group = ConsumerKey::Group(crate::client::SHARED_GROUP);
        let mut checker = BrokerChecker::default();
        checker
            .on_ack(&store(10, group, 1, Some(2), PartitionReply::Done))
            .unwrap();
        checker
            .on_ack(&store(12, group, 1, Some(2), PartitionReply::Done))
            .unwrap();
        // A stale generation refused: what the partition must do.
        let stale =
            PartitionReply::refused("StaleGeneration { group: 1, generation: 1, current: 2 }");
        checker
            .on_ack(&store(13, group, 1, Some(1), stale))
            .unwrap();
        // A current generation refused as stale: caught.
        let wrong =
            PartitionReply::refused("StaleGeneration { group: 1, generation: 2, current: 2 }");
        assert!(checker
            .on_ack(&store(13, group, 1, Some(2), wrong))
            .is_err());
        // Accepted after a newer generation, or before an older one: caught.
        assert!(checker
            .on_ack(&store(14, group, 1, Some(1), PartitionReply::Done))
            .is_err());
        assert!(checker
            .on_ack(&store(9, group, 1, Some(3), PartitionReply::Done))
            .is_err());
        // A single consumer's store refused: caught.
        let refused = PartitionReply::refused("TooManyConsumers");
        assert!(checker
            .on_ack(&store(15, ConsumerKey::Consumer(1), 0, None, refused))
            .is_err());
    }

    #[test]
    fn stored_offsets_and_generations_going_back_are_caught() {
        let mut checker = BrokerChecker::default();
        let mut state = partition(10);
        state.consumer_offsets.insert(ConsumerKey::Consumer(1), 5);
        state.group_generations.insert(1, 3);
        checker.check_state(0, &state).unwrap();
        let mut back = state.clone();
        back.consumer_offsets.insert(ConsumerKey::Consumer(1), 4);
        assert!(checker.check_state(0, &back).is_err());
        let mut older = state.clone();
        older.group_generations.insert(1, 2);
        assert!(checker.check_state(0, &older).is_err());
        let mut vanished = state.clone();
        vanished.consumer_offsets.clear();
        assert!(checker.check_state(0, &vanished).is_err());
        // A restarted replica rebuilds its state from the start of its log.
        checker.on_restart(0);
        checker.check_state(0, &partition(0)).unwrap();
    }

    #[test]
    fn a_final_state_without_the_last_acknowledged_store_is_caught() {
        let group = ConsumerKey::Group(crate::client::SHARED_GROUP);
        let mut checker = BrokerChecker::default();
        checker.on_ack(&ack(1, 0, 0, 8)).unwrap();
        let consumer = ConsumerKey::Consumer(1);
        checker
            .on_ack(&store(2, consumer, 3, None, PartitionReply::Done))
            .unwrap();
        checker
            .on_ack(&store(3, consumer, 6, None, PartitionReply::Done))
            .unwrap();
        checker
            .on_ack(&store(4, group, 5, Some(1), PartitionReply::Done))
            .unwrap();
        let mut good = partition(8);
        good.consumer_offsets.insert(consumer, 6);
        good.consumer_offsets.insert(group, 5);
        good.group_generations.insert(1, 1);
        checker.check_final(&[(0, &good)], &[]).unwrap();
        let mut lost = good.clone();
        lost.consumer_offsets.insert(consumer, 3);
        assert!(checker.check_final(&[(0, &lost)], &[]).is_err());
        let mut old_generation = good.clone();
        old_generation.group_generations.insert(1, 0);
        assert!(checker.check_final(&[(0, &old_generation)], &[]).is_err());
        // A store whose session was evicted may have been applied after the acknowledged ones.
        let mut evicted = good.clone();
        evicted.consumer_offsets.insert(consumer, 7);
        assert!(checker.check_final(&[(0, &evicted)], &[]).is_err());
        let pending = BrokerRequest::StoreOffset {
            consumer,
            offset: 7,
            generation: None,
        };
        checker.check_final(&[(0, &evicted)], &[pending]).unwrap();
        // An offset for a consumer that never stored one: caught.
        let mut stranger = good.clone();
        stranger
            .consumer_offsets
            .insert(ConsumerKey::Consumer(9), 1);
        assert!(checker.check_final(&[(0, &stranger)], &[]).is_err());
        // The group's offset of one store with the generation of another: caught.
        let pending_group = BrokerRequest::StoreOffset {
            consumer: group,
            offset: 2,
            generation: Some(4),
        };
        let mut mixed = good.clone();
        mixed.consumer_offsets.insert(group, 2);
        assert!(checker
            .check_final(&[(0, &mixed)], &[pending_group])
            .is_err());
        mixed.group_generations.insert(1, 4);
        checker
            .check_final(&[(0, &mixed)], &[pending_group])
            .unwrap();
    }
}
