//! A partition group's state machine as the consensus core drives it. A request is an encoded
//! `PartitionOp`; for an append the client's offset and timestamp fields are placeholders.
//! On the primary, `prepare` decides the request against the projected state: a fresh batch
//! is stamped with its base offset and timestamp; a retried batch, or a request the state
//! would refuse, becomes an `Answer` op carrying the reply, so every replica answers alike.
//! `apply` applies committed ops to the committed state and returns the encoded reply.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use galgo_consensus::{Message, StateMachine};

use super::ops::{PartitionOp, ANSWER_LEN_MAX, APPEND_HEAD_SIZE};
use super::reply::PartitionReply;
use super::{PartitionState, Stamp};
use crate::client_protocol::OPERATION_BROKER;

pub struct PartitionMachine {
    committed: PartitionState,
    /// The primary's view: `committed` with every op it prepared since the last reset.
    projected: PartitionState,
    /// Where a DeleteSegments of the oldest `count` segments cuts (see `RetentionView`);
    /// without one, DeleteSegments is refused.
    retention_view: Option<RetentionView>,
}

/// The host's answer to "where would deleting the oldest `count` sealed segments, not
/// counting those wholly below `first_offset` (already cut), cut?", read on the primary at
/// prepare time (the cut it decides is then replicated as an op): `Ok(Some(offset))` the
/// first offset kept, `Ok(None)` nothing to delete, `Err` why not now.
pub type RetentionView = Rc<dyn Fn(u32, u64) -> Result<Option<u64>, String>>;

impl PartitionMachine {
    pub fn new(state: PartitionState) -> PartitionMachine {
        PartitionMachine {
            projected: state.clone(),
            committed: state,
            retention_view: None,
        }
    }

    /// Lets this primary decide DeleteSegments from its host's segments.
    pub fn set_retention_view(&mut self, view: RetentionView) {
        self.retention_view = Some(view);
    }

    pub fn state(&self) -> &PartitionState {
        &self.committed
    }
}

fn answer(reply: PartitionReply) -> Vec<u8> {
    let reply = reply.encode();
    assert!(reply.len() <= ANSWER_LEN_MAX as usize);
    PartitionOp::Answer { reply }.encode(&[])
}

/// The log's view of a prepare of a partition group: the first offset and the number of
/// messages it appends. The same rule as `apply`: only a broker op's append adds messages.
pub fn messages_of(message: &Message, next_offset: u64) -> (u64, u32) {
    if message.header.operation != OPERATION_BROKER {
        return (next_offset, 0);
    }
    match PartitionOp::decode(&message.body) {
        Ok((
            PartitionOp::Append {
                base_offset, count, ..
            },
            _,
        )) => (base_offset, count),
        _ => (next_offset, 0),
    }
}

/// The request's append with its fixed-size head replaced by the primary's `stamped` one: in
/// the request's own buffer when nothing else holds it (the batch is not copied).
fn restamp(request: Bytes, stamped: &PartitionOp) -> Bytes {
    let head = stamped.encode(&[]);
    assert_eq!(head.len(), APPEND_HEAD_SIZE);
    assert!(request.len() >= APPEND_HEAD_SIZE, "decoded as an append");
    let mut body = BytesMut::from(request);
    body[..APPEND_HEAD_SIZE].copy_from_slice(&head);
    body.freeze()
}

/// Prepare timestamps are nanoseconds; partitions keep microseconds.
fn micros(timestamp_ns: u64) -> u64 {
    timestamp_ns / 1000
}

impl StateMachine for PartitionMachine {
    fn prepare(&mut self, op: u64, timestamp: u64, operation: u8, body: Bytes) -> Bytes {
        if operation != OPERATION_BROKER {
            return answer(PartitionReply::refused(format!(
                "unknown operation {operation}"
            )))
            .into();
        }
        // An append's batch stays where it is: only its head is restamped (`restamp`).
        let request = match PartitionOp::decode(&body) {
            Ok((request, _batch)) => request,
            Err(error) => {
                return answer(PartitionReply::refused(format!("bad request: {error}"))).into()
            }
        };
        let prepared: Vec<u8> = match request {
            PartitionOp::Append {
                count, producer, ..
            } => match self.projected.stamp(count, producer, micros(timestamp)) {
                Ok(Stamp::Fresh {
                    base_offset,
                    timestamp,
                }) => {
                    let stamped = PartitionOp::Append {
                        base_offset,
                        count,
                        timestamp,
                        producer,
                    };
                    self.projected
                        .apply(&stamped, op)
                        .expect("a fresh stamp continues the projected log");
                    return restamp(body, &stamped);
                }
                Ok(Stamp::Duplicate {
                    base_offset, count, ..
                }) => answer(PartitionReply::Appended { base_offset, count }),
                Err(error) => answer(PartitionReply::refused(format!("{error:?}"))),
            },
            PartitionOp::RetentionCut { .. } | PartitionOp::Answer { .. } => answer(
                PartitionReply::refused("retention cuts and answers are decided by the primary"),
            ),
            PartitionOp::Purge => {
                let first_offset = self.projected.next_offset;
                if first_offset == self.projected.first_offset {
                    answer(PartitionReply::Done) // Nothing kept to remove.
                } else {
                    let cut = PartitionOp::RetentionCut { first_offset };
                    self.projected
                        .apply(&cut, op)
                        .expect("a cut at the end is in range");
                    return cut.encode(&[]).into();
                }
            }
            PartitionOp::DeleteSegments { count } => {
                let decided = match self.retention_view.as_ref() {
                    None => Err("this partition cannot delete segments".to_string()),
                    Some(view) => view(count, self.projected.first_offset),
                };
                match decided {
                    Ok(Some(first_offset)) if first_offset > self.projected.first_offset => {
                        let cut = PartitionOp::RetentionCut { first_offset };
                        match self.projected.apply(&cut, op) {
                            Ok(()) => return cut.encode(&[]).into(),
                            Err(error) => answer(PartitionReply::refused(format!("{error:?}"))),
                        }
                    }
                    // Already cut there (or nothing sealed to delete).
                    Ok(_) => answer(PartitionReply::Done),
                    Err(reason) => answer(PartitionReply::refused(reason)),
                }
            }
            other => match self.projected.apply(&other, op) {
                Ok(()) => return body,
                Err(error) => answer(PartitionReply::refused(format!("{error:?}"))),
            },
        };
        prepared.into()
    }

    fn reset_projection(&mut self) {
        self.projected = self.committed.clone();
    }

    fn log_offset_end(&self) -> u64 {
        self.committed.next_offset
    }

    fn log_offset_start(&self) -> u64 {
        self.committed.first_offset
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        self.committed.encode_snapshot().ok()
    }

    fn restore(&mut self, snapshot: &[u8]) -> bool {
        let limits = (
            self.committed.consumers_max,
            self.committed.producers.producers_max,
        );
        match PartitionState::decode_snapshot(snapshot, limits.0, limits.1) {
            Ok(state) => {
                self.projected = state.clone();
                self.committed = state;
                true
            }
            Err(_) => false,
        }
    }

    fn apply(&mut self, op: u64, _timestamp: u64, operation: u8, body: &[u8]) -> Vec<u8> {
        if operation != OPERATION_BROKER {
            // Prepared as a refusal; changes nothing (and `messages_of` counts no messages).
            return PartitionReply::refused(format!("unknown operation {operation}")).encode();
        }
        let decoded = match PartitionOp::decode(body) {
            Ok((decoded, _batch)) => decoded,
            // Only a primary bug could commit this; every replica refuses it alike.
            Err(error) => return PartitionReply::refused(format!("bad op: {error}")).encode(),
        };
        if let PartitionOp::Answer { reply } = &decoded {
            return reply.clone();
        }
        match self.committed.apply(&decoded, op) {
            Ok(()) => match decoded {
                PartitionOp::Append {
                    base_offset, count, ..
                } => PartitionReply::Appended { base_offset, count },
                _ => PartitionReply::Done,
            },
            Err(error) => PartitionReply::refused(format!("{error:?}")),
        }
        .encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::ops::{ConsumerKey, ProducerStamp};

    fn append(count: u32, producer: Option<ProducerStamp>) -> Vec<u8> {
        PartitionOp::Append {
            base_offset: 0,
            count,
            timestamp: 0,
            producer,
        }
        .encode(b"batch")
    }

    fn reply(bytes: &[u8]) -> PartitionReply {
        PartitionReply::decode(bytes).unwrap()
    }

    #[test]
    fn delete_segments_and_purge_become_the_cut_the_primary_decides_or_an_answer() {
        let delete = |count| Bytes::from(PartitionOp::DeleteSegments { count }.encode(&[]));
        let mut primary = PartitionMachine::new(PartitionState::new(16, 16));
        primary.reset_projection();
        for op in 1..=3u64 {
            let prepared = primary.prepare(op, op * 1_000, 16, Bytes::from(append(5, None)));
            primary.apply(op, op * 1_000, 16, &prepared);
        }
        // Without a view of the host's segments: refused.
        let prepared = primary.prepare(4, 4_000, 16, delete(1));
        assert!(matches!(
            reply(&primary.apply(4, 4_000, 16, &prepared)),
            PartitionReply::Refused { .. }
        ));
        let asked = Rc::new(std::cell::Cell::new((0u32, 0u64)));
        let seen = asked.clone();
        primary.set_retention_view(Rc::new(move |count, first_offset| {
            seen.set((count, first_offset));
            match count {
                1 => Ok(Some(10)),
                2 => Ok(None),
                _ => Err("not now".to_string()),
            }
        }));
        let prepared = primary.prepare(5, 5_000, 16, delete(1));
        assert_eq!(asked.get(), (1, 0));
        assert_eq!(
            PartitionOp::decode(&prepared).unwrap().0,
            PartitionOp::RetentionCut { first_offset: 10 }
        );
        assert_eq!(
            reply(&primary.apply(5, 5_000, 16, &prepared)),
            PartitionReply::Done
        );
        assert_eq!(primary.state().first_offset, 10);
        assert_eq!(primary.log_offset_start(), 10);
        // The same cut again (or nothing to delete): done, nothing prepared to change.
        for (op, count) in [(6u64, 1u32), (7, 2)] {
            let prepared = primary.prepare(op, op * 1_000, 16, delete(count));
            assert!(matches!(
                PartitionOp::decode(&prepared).unwrap().0,
                PartitionOp::Answer { .. }
            ));
            assert_eq!(
                reply(&primary.apply(op, 0, 16, &prepared)),
                PartitionReply::Done
            );
        }
        assert_eq!(
            asked.get(),
            (2, 10),
            "the view is told the first offset kept"
        );
        let prepared = primary.prepare(8, 8_000, 16, delete(3));
        assert!(matches!(
            reply(&primary.apply(8, 8_000, 16, &prepared)),
            PartitionReply::Refused { .. }
        ));
        // A purge cuts at the end: nothing is kept, offsets go on from there.
        let purge = Bytes::from(PartitionOp::Purge.encode(&[]));
        let prepared = primary.prepare(10, 10_000, 16, purge.clone());
        assert_eq!(
            PartitionOp::decode(&prepared).unwrap().0,
            PartitionOp::RetentionCut { first_offset: 15 }
        );
        assert_eq!(
            reply(&primary.apply(10, 0, 16, &prepared)),
            PartitionReply::Done
        );
        assert_eq!(primary.state().first_offset, 15);
        let prepared = primary.prepare(11, 11_000, 16, purge);
        assert!(matches!(
            PartitionOp::decode(&prepared).unwrap().0,
            PartitionOp::Answer { .. }
        ));
        primary.apply(11, 0, 16, &prepared);
        let prepared = primary.prepare(12, 12_000, 16, Bytes::from(append(1, None)));
        assert!(matches!(
            PartitionOp::decode(&prepared).unwrap().0,
            PartitionOp::Append {
                base_offset: 15,
                ..
            }
        ));
        primary.apply(12, 0, 16, &prepared);
        // A DeleteSegments committed as it is (only a primary bug could) changes nothing.
        assert!(matches!(
            reply(&primary.apply(13, 13_000, 16, &delete(1))),
            PartitionReply::Refused { .. }
        ));
        assert_eq!(primary.state().first_offset, 15);
    }

    #[test]
    fn a_restored_snapshot_is_the_committed_and_the_projected_state() {
        let mut primary = PartitionMachine::new(PartitionState::new(16, 16));
        primary.reset_projection();
        for (op, count) in [(1u64, 3u32), (2, 4)] {
            let prepared = primary.prepare(op, op * 1_000, 16, Bytes::from(append(count, None)));
            primary.apply(op, op * 1_000, 16, &prepared);
        }
        let snapshot = primary.snapshot().expect("a partition keeps snapshots");
        let mut restored = PartitionMachine::new(PartitionState::new(16, 16));
        assert!(restored.restore(&snapshot));
        assert_eq!(restored.state(), primary.state());
        assert_eq!(restored.state().next_offset, 7);
        // The projection starts from the restored state: the next batch follows offset 6.
        let prepared = restored.prepare(3, 3_000, 16, Bytes::from(append(1, None)));
        let (stamped, _) = PartitionOp::decode(&prepared).unwrap();
        assert!(matches!(
            stamped,
            PartitionOp::Append { base_offset: 7, .. }
        ));
        // Bytes that are not a snapshot change nothing.
        let before = restored.state().clone();
        assert!(!restored.restore(&snapshot[..snapshot.len() - 1]));
        assert!(!restored.restore(b"garbage"));
        assert_eq!(restored.state(), &before);
    }

    #[test]
    fn a_fresh_append_is_restamped_in_its_own_buffer() {
        let mut primary = PartitionMachine::new(PartitionState::new(16, 16));
        primary.reset_projection();
        let request = Bytes::from(append(3, None));
        let at = request.as_ptr();
        let prepared = primary.prepare(1, 5_000, 16, request);
        assert_eq!(prepared.as_ptr(), at, "the batch was not copied");
        let (op, batch) = PartitionOp::decode(&prepared).unwrap();
        assert_eq!(batch, b"batch");
        assert_eq!(
            op,
            PartitionOp::Append {
                base_offset: 0,
                count: 3,
                timestamp: 5,
                producer: None
            }
        );
        // A buffer someone else still holds is copied, not changed under them.
        let request = Bytes::from(append(2, None));
        let held = request.clone();
        let prepared = primary.prepare(2, 6_000, 16, request);
        assert_ne!(prepared.as_ptr(), held.as_ptr());
        assert_eq!(&held[..], &append(2, None)[..]);
        assert_eq!(
            PartitionOp::decode(&prepared).unwrap().0,
            PartitionOp::Append {
                base_offset: 3,
                count: 2,
                timestamp: 6,
                producer: None
            }
        );
    }

    #[test]
    fn the_primary_stamps_on_its_projection_and_replicas_apply_alike() {
        let mut primary = PartitionMachine::new(PartitionState::new(16, 16));
        let mut backup = PartitionMachine::new(PartitionState::new(16, 16));
        primary.reset_projection();
        let producer = Some(ProducerStamp {
            producer: 9,
            epoch: 1,
            sequence: 0,
        });
        let first = primary.prepare(1, 5_000, 16, append(3, producer).into());
        // Prepared before op 1 commits: the projection already counts op 1's messages.
        let second = primary.prepare(2, 6_000, 16, append(2, None).into());
        // A retry of the producer's last batch: answered with its offsets, nothing appended.
        let retry = primary.prepare(3, 7_000, 16, append(3, producer).into());
        let stale = PartitionOp::StoreConsumerOffset {
            consumer: ConsumerKey::Consumer(1),
            offset: 99,
            generation: None,
        }
        .encode(&[]);
        let refused = primary.prepare(4, 8_000, 16, stale.into());
        for machine in [&mut primary, &mut backup] {
            assert_eq!(
                reply(&machine.apply(1, 5_000, 16, &first)),
                PartitionReply::Appended {
                    base_offset: 0,
                    count: 3
                }
            );
            assert_eq!(
                reply(&machine.apply(2, 6_000, 16, &second)),
                PartitionReply::Appended {
                    base_offset: 3,
                    count: 2
                }
            );
            assert_eq!(
                reply(&machine.apply(3, 7_000, 16, &retry)),
                PartitionReply::Appended {
                    base_offset: 0,
                    count: 3
                }
            );
            assert!(matches!(
                reply(&machine.apply(4, 8_000, 16, &refused)),
                PartitionReply::Refused { .. }
            ));
        }
        assert_eq!(primary.state(), backup.state());
        assert_eq!(backup.state().next_offset, 5);
        assert_eq!(backup.state().last_timestamp, 6);
    }

    #[test]
    fn an_append_under_another_operation_is_refused_and_counts_no_messages() {
        let mut primary = PartitionMachine::new(PartitionState::new(4, 4));
        primary.reset_projection();
        let prepared = primary.prepare(1, 1, OPERATION_BROKER + 1, append(3, None).into());
        assert!(matches!(
            reply(&primary.apply(1, 1, OPERATION_BROKER + 1, &prepared)),
            PartitionReply::Refused { .. }
        ));
        assert_eq!(primary.state().next_offset, 0);
        let mut header = galgo_consensus::Header::new(galgo_consensus::Command::Prepare, 1, 1);
        header.operation = OPERATION_BROKER + 1;
        let message = Message::new(header, append(3, None));
        assert_eq!(messages_of(&message, 0), (0, 0));
        header.operation = OPERATION_BROKER;
        let message = Message::new(header, append(3, None));
        assert_eq!(messages_of(&message, 0), (0, 3));
        // The next real append continues at offset 0, where the log is.
        let next = primary.prepare(2, 2, OPERATION_BROKER, append(1, None).into());
        assert_eq!(
            reply(&primary.apply(2, 2, OPERATION_BROKER, &next)),
            PartitionReply::Appended {
                base_offset: 0,
                count: 1
            }
        );
    }

    #[test]
    fn garbage_and_primary_only_ops_are_refused_not_applied() {
        let mut primary = PartitionMachine::new(PartitionState::new(4, 4));
        primary.reset_projection();
        for body in [
            b"not an op".to_vec(),
            PartitionOp::RetentionCut { first_offset: 0 }.encode(&[]),
            PartitionOp::Answer {
                reply: PartitionReply::Done.encode(),
            }
            .encode(&[]),
        ] {
            let prepared = primary.prepare(1, 1, 16, body.into());
            assert!(matches!(
                reply(&primary.apply(1, 1, 16, &prepared)),
                PartitionReply::Refused { .. }
            ));
        }
        assert_eq!(primary.state(), &PartitionState::new(4, 4));
    }
}
