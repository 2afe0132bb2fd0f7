//! The broker checks of the broker workload, on every acknowledged append: a producer batch
//! acknowledged twice (a retry across sessions) names the same offsets both times, no offset
//! is handed to two batches, and no append the workload sends is refused. At the end, every
//! replica's partition has every acknowledged offset below its end.

use std::collections::BTreeMap;

use galgo_replica::partition::reply::PartitionReply;

use crate::checker::Failure;
use crate::client::Ack;

#[derive(Default)]
pub struct BrokerChecker {
    /// (client, producer sequence) → (base offset, count) acknowledged.
    batches: BTreeMap<(u128, u64), (u64, u32)>,
    /// base offset → (end offset, client, sequence) of every acknowledged batch.
    ranges: BTreeMap<u64, (u64, u128, u64)>,
    /// One past the highest acknowledged offset.
    end_max: u64,
}

impl BrokerChecker {
    pub fn on_ack(&mut self, ack: &Ack) -> Result<(), Failure> {
        let Some(sequence) = ack.batch else {
            return Ok(());
        };
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

    /// `next_offsets`: each replica's partition end. Every acknowledged offset is below it.
    pub fn check_final(&self, next_offsets: &[(u8, u64)]) -> Result<(), Failure> {
        for (replica, next_offset) in next_offsets {
            if *next_offset < self.end_max {
                return Err(Failure::Correctness(format!(
                    "replica {replica} ends its partition at offset {next_offset}, below acknowledged offset {}",
                    self.end_max - 1
                )));
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
            batch: Some(sequence),
        }
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
        checker.check_final(&[(0, 3), (1, 5)]).unwrap();
        assert!(checker.check_final(&[(0, 2)]).is_err());
    }
}
