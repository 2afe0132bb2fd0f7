//! Tests of the partition state machine: stamping on the primary's projected state, retries of
//! in-flight and committed batches, producer fencing and eviction, consumer offsets fenced by
//! generation, retention cuts, and that a refused op changes nothing.

use super::*;

fn state() -> PartitionState {
    PartitionState::new(4, 2)
}

fn producer(producer: u64, epoch: u32, sequence: u64) -> Option<ProducerStamp> {
    Some(ProducerStamp {
        producer,
        epoch,
        sequence,
    })
}

/// The primary's step: stamp on the projected state, apply the prepared op to it.
fn prepare(
    projected: &mut PartitionState,
    op_number: u64,
    count: u32,
    stamp: Option<ProducerStamp>,
    now: u64,
) -> Result<(Stamp, Option<PartitionOp>), PartitionError> {
    let decided = projected.stamp(count, stamp, now)?;
    let Stamp::Fresh {
        base_offset,
        timestamp,
    } = decided
    else {
        return Ok((decided, None));
    };
    let op = PartitionOp::Append {
        base_offset,
        count,
        timestamp,
        producer: stamp,
    };
    projected.apply(&op, op_number).unwrap();
    Ok((decided, Some(op)))
}

#[test]
fn offsets_are_dense_and_timestamps_never_go_back() {
    let mut projected = state();
    let mut committed = state();
    let clock = [100, 50, 300, 300, 10];
    let mut expected_offset = 0;
    let mut last_timestamp = 0;
    for (op_number, now) in (1u64..).zip(clock.iter()) {
        let count = op_number as u32;
        let (stamp, op) = prepare(&mut projected, op_number, count, None, *now).unwrap();
        let Stamp::Fresh {
            base_offset,
            timestamp,
        } = stamp
        else {
            panic!("no producer, no duplicate")
        };
        assert_eq!(base_offset, expected_offset);
        assert_eq!(timestamp, (*now).max(last_timestamp));
        expected_offset += u64::from(count);
        last_timestamp = timestamp;
        // A replica applies the same op when it commits.
        committed.apply(&op.unwrap(), op_number).unwrap();
    }
    assert_eq!(committed, projected);
    assert_eq!(committed.next_offset, 15);
    assert_eq!(committed.last_timestamp, 300);
    assert!(matches!(
        committed.stamp(0, None, 0),
        Err(PartitionError::InvalidBatch(_))
    ));
    // An append that does not continue the log is refused.
    let before = committed.clone();
    let gap = PartitionOp::Append {
        base_offset: 16,
        count: 1,
        timestamp: 400,
        producer: None,
    };
    assert!(matches!(
        committed.apply(&gap, 9),
        Err(PartitionError::Discontinuous { .. })
    ));
    assert_eq!(committed, before);
}

#[test]
fn a_retried_batch_gets_its_original_offsets_in_flight_or_committed() {
    let mut projected = state();
    let (first, _) = prepare(&mut projected, 1, 3, producer(7, 1, 0), 10).unwrap();
    assert_eq!(
        first,
        Stamp::Fresh {
            base_offset: 0,
            timestamp: 10
        }
    );
    // The retry arrives while the first is still only prepared: the projected state knows.
    let (retry, op) = prepare(&mut projected, 2, 3, producer(7, 1, 0), 11).unwrap();
    assert_eq!(
        retry,
        Stamp::Duplicate {
            base_offset: 0,
            count: 3,
            op: 1
        }
    );
    assert!(op.is_none(), "nothing is prepared for a duplicate");
    let (next, _) = prepare(&mut projected, 2, 2, producer(7, 1, 1), 12).unwrap();
    assert_eq!(
        next,
        Stamp::Fresh {
            base_offset: 3,
            timestamp: 12
        }
    );
    assert!(matches!(
        projected.stamp(1, producer(7, 1, 5), 13),
        Err(PartitionError::OutOfOrderSequence {
            expected: 2,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        projected.stamp(1, producer(7, 1, 0), 13),
        Err(PartitionError::OutOfOrderSequence { .. })
    ));
    // A new epoch fences the old one and starts at 0.
    assert!(matches!(
        projected.stamp(1, producer(7, 2, 100), 14),
        Err(PartitionError::OutOfOrderSequence { expected: 0, .. })
    ));
    prepare(&mut projected, 3, 1, producer(7, 2, 0), 14).unwrap();
    assert!(matches!(
        projected.stamp(1, producer(7, 1, 2), 15),
        Err(PartitionError::ProducerFenced {
            epoch: 1,
            current: 2,
            ..
        })
    ));
    // A replica refuses a duplicate that a faulty primary prepared.
    let mut replica = projected.clone();
    let duplicate = PartitionOp::Append {
        base_offset: replica.next_offset,
        count: 1,
        timestamp: 20,
        producer: producer(7, 2, 0),
    };
    assert!(matches!(
        replica.apply(&duplicate, 4),
        Err(PartitionError::InvalidBatch(_))
    ));
    assert_eq!(replica, projected);
}

#[test]
fn the_producer_table_evicts_the_longest_idle_producer() {
    let mut projected = state();
    prepare(&mut projected, 1, 1, producer(1, 0, 0), 0).unwrap();
    prepare(&mut projected, 2, 1, producer(2, 0, 0), 0).unwrap();
    prepare(&mut projected, 3, 1, producer(1, 0, 1), 0).unwrap();
    prepare(&mut projected, 4, 1, producer(3, 0, 0), 0).unwrap();
    let ids: Vec<u64> = projected.producers.entries.keys().copied().collect();
    assert_eq!(ids, vec![1, 3], "producer 2 was idle longest");
    // A forgotten producer is told so rather than having its retry appended again.
    assert_eq!(
        projected.stamp(1, producer(2, 0, 1), 0),
        Err(PartitionError::UnknownProducer { producer: 2 })
    );
    assert_eq!(
        projected.stamp(1, producer(9, 0, 4), 0),
        Err(PartitionError::UnknownProducer { producer: 9 })
    );
}

#[test]
fn consumer_offsets_stay_in_range_and_groups_are_fenced_by_generation() {
    let mut s = state();
    let store = |consumer, offset, generation| PartitionOp::StoreConsumerOffset {
        consumer,
        offset,
        generation,
    };
    assert!(matches!(
        s.apply(&store(ConsumerKey::Consumer(1), 0, None), 1),
        Err(PartitionError::OffsetOutOfRange { .. })
    ));
    prepare(&mut s, 1, 10, None, 0).unwrap();
    s.apply(&store(ConsumerKey::Consumer(1), 9, None), 2)
        .unwrap();
    s.apply(&store(ConsumerKey::Consumer(1), 3, None), 3)
        .expect("an explicit store may rewind");
    assert!(matches!(
        s.apply(&store(ConsumerKey::Consumer(1), 10, None), 4),
        Err(PartitionError::OffsetOutOfRange {
            offset: 10,
            end: 10
        })
    ));
    let group = ConsumerKey::Group(5);
    for (consumer, generation) in [(group, None), (ConsumerKey::Consumer(1), Some(1))] {
        assert!(matches!(
            s.apply(&store(consumer, 4, generation), 5),
            Err(PartitionError::InvalidConsumer(_))
        ));
    }
    s.apply(&store(group, 4, Some(3)), 5).unwrap();
    let before = s.clone();
    assert_eq!(
        s.apply(&store(group, 8, Some(2)), 6),
        Err(PartitionError::StaleGeneration {
            group: 5,
            generation: 2,
            current: 3
        })
    );
    assert_eq!(s, before);
    s.apply(&store(group, 8, Some(4)), 7).unwrap();
    assert_eq!(s.consumer_offsets[&group], 8);
    assert_eq!(s.group_generations[&5], 4);
    for id in 2..4 {
        s.apply(&store(ConsumerKey::Consumer(id), 1, None), 8)
            .unwrap();
    }
    assert_eq!(
        s.apply(&store(ConsumerKey::Consumer(9), 1, None), 9),
        Err(PartitionError::TooManyConsumers)
    );
    s.apply(
        &PartitionOp::DeleteConsumerOffset {
            consumer: ConsumerKey::Consumer(2),
        },
        10,
    )
    .unwrap();
    assert_eq!(
        s.apply(
            &PartitionOp::DeleteConsumerOffset {
                consumer: ConsumerKey::Consumer(2),
            },
            11,
        ),
        Err(PartitionError::ConsumerOffsetNotFound(
            ConsumerKey::Consumer(2)
        ))
    );
}

#[test]
fn retention_cuts_only_move_forward_and_stay_below_the_end() {
    let mut s = state();
    prepare(&mut s, 1, 10, None, 0).unwrap();
    s.apply(&PartitionOp::RetentionCut { first_offset: 6 }, 2)
        .unwrap();
    assert_eq!(s.first_offset, 6);
    for bad in [5, 11] {
        assert!(matches!(
            s.apply(&PartitionOp::RetentionCut { first_offset: bad }, 3),
            Err(PartitionError::OffsetOutOfRange { .. })
        ));
    }
    s.apply(&PartitionOp::RetentionCut { first_offset: 10 }, 4)
        .unwrap();
}

#[test]
fn a_refused_op_changes_nothing_and_a_replica_applying_the_encoded_ops_agrees() {
    let mut refused = 0;
    let mut applied = 0;
    for seed in 1..30u64 {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut primary = state();
        let mut replica = state();
        for op_number in 1..400u64 {
            let op = match next(5) {
                0 | 1 => {
                    let stamp = (next(2) == 0).then(|| ProducerStamp {
                        producer: next(3),
                        epoch: next(2) as u32,
                        sequence: next(4),
                    });
                    match primary.stamp(1 + next(3) as u32, stamp, next(1000)) {
                        Ok(Stamp::Fresh {
                            base_offset,
                            timestamp,
                        }) => PartitionOp::Append {
                            base_offset,
                            count: 1 + next(3) as u32,
                            timestamp,
                            producer: stamp,
                        },
                        _ => continue,
                    }
                }
                2 => PartitionOp::StoreConsumerOffset {
                    consumer: if next(2) == 0 {
                        ConsumerKey::Consumer(next(6) as u32)
                    } else {
                        ConsumerKey::Group(next(2) as u32)
                    },
                    offset: next(primary.next_offset + 3),
                    // Mostly right (a group's carries one), sometimes not.
                    generation: match next(8) {
                        0 => None,
                        1 => Some(u64::MAX),
                        g => Some(g),
                    },
                },
                3 => PartitionOp::DeleteConsumerOffset {
                    consumer: ConsumerKey::Consumer(next(6) as u32),
                },
                _ => PartitionOp::RetentionCut {
                    first_offset: next(primary.next_offset + 2),
                },
            };
            let before = primary.clone();
            let result = primary.apply(&op, op_number);
            if result.is_err() {
                refused += 1;
                assert_eq!(
                    primary, before,
                    "seed {seed}: refused {op:?} changed the state"
                );
            } else {
                applied += 1;
            }
            let bytes = op.encode(if matches!(op, PartitionOp::Append { .. }) {
                b"batch"
            } else {
                b""
            });
            let (decoded, _) = PartitionOp::decode(&bytes).unwrap();
            assert_eq!(replica.apply(&decoded, op_number), result);
            assert_eq!(replica, primary);
            primary
                .check()
                .unwrap_or_else(|why| panic!("seed {seed} op {op_number}: {why}"));
            if op_number % 40 == 0 {
                let bytes = primary.encode_snapshot().unwrap();
                let decoded = PartitionState::decode_snapshot(&bytes, 4, 2).unwrap();
                assert_eq!(decoded, primary);
            }
        }
    }
    assert!(
        applied > 1000 && refused > 500,
        "{applied} applied, {refused} refused"
    );
}

#[test]
fn a_checkpoint_round_trips_refuses_truncation_and_is_checked() {
    let mut s = state();
    prepare(&mut s, 1, 5, producer(3, 1, 0), 10).unwrap();
    s.apply(
        &PartitionOp::StoreConsumerOffset {
            consumer: ConsumerKey::Group(2),
            offset: 4,
            generation: Some(7),
        },
        2,
    )
    .unwrap();
    let bytes = s.encode_snapshot().unwrap();
    assert_eq!(PartitionState::decode_snapshot(&bytes, 4, 2).unwrap(), s);
    for cut in 0..bytes.len() {
        assert!(PartitionState::decode_snapshot(&bytes[..cut], 4, 2).is_err());
    }
    assert!(
        PartitionState::decode_snapshot(&bytes, 0, 2).is_err(),
        "a smaller consumer limit refuses it"
    );
    let mut broken = s.clone();
    broken.consumer_offsets.insert(ConsumerKey::Consumer(1), 5);
    assert!(broken.check().is_err(), "an offset at the end is caught");
    let mut broken = s.clone();
    broken.first_offset = 6;
    let bytes = broken.encode_snapshot().unwrap();
    assert!(matches!(
        PartitionState::decode_snapshot(&bytes, 4, 2),
        Err(crate::codec::DecodeError::Invalid(_))
    ));
    let mut broken = s.clone();
    broken.next_offset = 2;
    broken.consumer_offsets.clear();
    assert!(
        broken.check().is_err(),
        "a producer batch past the end is caught"
    );
}
