//! Tests of the metadata state machine: each operation's rules, placement through the state,
//! consumer group rebalances, and, over long random sequences, that a refused operation
//! changes nothing and that replicas applying the same (encoded) operations agree.

use super::ops::tests::every_op;
use super::*;

fn cluster() -> Metadata {
    Metadata::new(vec![0, 1, 2], 3, Limits::default())
}

fn name(s: &str) -> Ident {
    Ident::Name(s.to_string())
}

fn ok(m: &mut Metadata, op: MetadataOp) -> Applied {
    m.apply(&op, 1_000)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

fn create_topic(stream: &str, topic: &str, partitions: u32) -> MetadataOp {
    MetadataOp::CreateTopic {
        stream: name(stream),
        name: topic.to_string(),
        partitions,
        replication_factor: 0,
        options: TopicOptions::default(),
    }
}

#[test]
fn streams_are_named_uniquely_and_reuse_the_lowest_free_id() {
    let mut m = cluster();
    for n in ["a", "b", "c"] {
        ok(&mut m, MetadataOp::CreateStream { name: n.into() });
    }
    assert_eq!(
        m.apply(&MetadataOp::CreateStream { name: "b".into() }, 1),
        Err(MetadataError::StreamNameTaken("b".into()))
    );
    ok(&mut m, MetadataOp::DeleteStream { stream: name("b") });
    assert_eq!(
        ok(&mut m, MetadataOp::CreateStream { name: "d".into() }),
        Applied::StreamCreated { id: 1 }
    );
    assert_eq!(
        m.apply(
            &MetadataOp::UpdateStream {
                stream: Ident::Id(0),
                name: "d".into()
            },
            1
        ),
        Err(MetadataError::StreamNameTaken("d".into()))
    );
    assert!(matches!(
        m.apply(
            &MetadataOp::DeleteStream {
                stream: Ident::Id(9)
            },
            1
        ),
        Err(MetadataError::StreamNotFound(_))
    ));
    assert!(matches!(
        m.apply(
            &MetadataOp::CreateStream {
                name: String::new()
            },
            1
        ),
        Err(MetadataError::InvalidName(_))
    ));
    let mut small = Metadata::new(
        vec![0],
        1,
        Limits {
            streams_max: 1,
            ..Limits::default()
        },
    );
    ok(&mut small, MetadataOp::CreateStream { name: "a".into() });
    assert!(matches!(
        small.apply(&MetadataOp::CreateStream { name: "b".into() }, 1),
        Err(MetadataError::LimitReached(_))
    ));
}

#[test]
fn partitions_spread_their_primaries_evenly_and_get_unique_groups() {
    let mut m = cluster();
    ok(&mut m, MetadataOp::CreateStream { name: "s".into() });
    ok(&mut m, create_topic("s", "t", 6));
    ok(&mut m, create_topic("s", "u", 4));
    ok(
        &mut m,
        MetadataOp::CreatePartitions {
            stream: name("s"),
            topic: name("u"),
            count: 2,
        },
    );
    let mut led = [0u32; 3];
    let mut groups = Vec::new();
    for topic in m.streams[&0].topics.values() {
        assert_eq!(topic.replication_factor, 3);
        for partition in &topic.partitions {
            assert_eq!(partition.placement.members, vec![0, 1, 2]);
            led[usize::from(partition.placement.preferred_primary())] += 1;
            groups.push(partition.group);
        }
    }
    assert_eq!(led, [4, 4, 4]);
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups.len(), 12);
    assert!(!groups.contains(&0), "group 0 is the metadata group");
    ok(
        &mut m,
        MetadataOp::DeletePartitions {
            stream: name("s"),
            topic: name("t"),
            count: 5,
        },
    );
    assert_eq!(m.topic(&name("s"), &name("t")).unwrap().partitions.len(), 1);
    for bad in [
        MetadataOp::DeletePartitions {
            stream: name("s"),
            topic: name("t"),
            count: 2,
        },
        MetadataOp::CreatePartitions {
            stream: name("s"),
            topic: name("t"),
            count: 1001,
        },
        MetadataOp::CreateTopic {
            stream: name("s"),
            name: "v".into(),
            partitions: 1,
            replication_factor: 4,
            options: TopicOptions::default(),
        },
        MetadataOp::CreateTopic {
            stream: name("s"),
            name: "v".into(),
            partitions: 1,
            replication_factor: 1,
            options: TopicOptions {
                segment_size: 1000,
                ..TopicOptions::default()
            },
        },
    ] {
        assert!(
            matches!(m.apply(&bad, 1), Err(MetadataError::InvalidValue(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        m.apply(&create_topic("s", "t", 1), 1),
        Err(MetadataError::TopicNameTaken("t".into()))
    );
}

#[test]
fn the_first_user_is_root_and_root_is_protected() {
    let mut m = cluster();
    let create = |username: &str| MetadataOp::CreateUser {
        username: username.into(),
        password_hash: "$argon2id$hash".into(),
        status: UserStatus::Inactive,
        permissions: None,
    };
    assert_eq!(ok(&mut m, create("root")), Applied::UserCreated { id: 0 });
    assert_eq!(ok(&mut m, create("ann")), Applied::UserCreated { id: 1 });
    let root = m.user(&name("root")).unwrap();
    assert_eq!(root.status, UserStatus::Active);
    assert!(root.allows(Action::ManageUsers));
    let ann = m.user(&name("ann")).unwrap();
    assert!(!ann.allows(Action::ReadStream { stream: 0 }), "inactive");
    assert_eq!(
        m.apply(&create("ann"), 1),
        Err(MetadataError::UsernameTaken("ann".into()))
    );
    for refused in [
        MetadataOp::DeleteUser { user: Ident::Id(0) },
        MetadataOp::UpdatePermissions {
            user: name("root"),
            permissions: None,
        },
        MetadataOp::UpdateUser {
            user: Ident::Id(0),
            username: None,
            status: Some(UserStatus::Inactive),
        },
    ] {
        assert_eq!(m.apply(&refused, 1), Err(MetadataError::RootProtected));
    }
    ok(
        &mut m,
        MetadataOp::UpdateUser {
            user: name("ann"),
            username: Some("anna".into()),
            status: Some(UserStatus::Active),
        },
    );
    ok(
        &mut m,
        MetadataOp::UpdatePermissions {
            user: name("anna"),
            permissions: Some(Permissions {
                global: permissions::GlobalPermissions {
                    read_streams: true,
                    ..Default::default()
                },
                ..Default::default()
            }),
        },
    );
    let anna = m.user(&Ident::Id(1)).unwrap();
    assert!(anna.allows(Action::ReadStream { stream: 0 }));
    assert!(!anna.allows(Action::CreateStream));
    // A grant on a stream goes with the stream: a new stream that reuses its id starts bare.
    ok(
        &mut m,
        MetadataOp::CreateStream {
            name: "payroll".into(),
        },
    );
    let mut granted = Permissions::default();
    granted.streams.insert(0, Default::default());
    ok(
        &mut m,
        MetadataOp::UpdatePermissions {
            user: Ident::Id(1),
            permissions: Some(granted),
        },
    );
    ok(
        &mut m,
        MetadataOp::DeleteStream {
            stream: Ident::Id(0),
        },
    );
    let streams = &m.users[&1].permissions.as_ref().unwrap().streams;
    assert!(streams.is_empty(), "{streams:?}");
    ok(&mut m, MetadataOp::DeleteUser { user: name("anna") });
    assert!(m.user(&Ident::Id(1)).is_err());
}

#[test]
fn tokens_expire_on_the_prepare_clock() {
    let mut m = cluster();
    ok(
        &mut m,
        MetadataOp::CreateUser {
            username: "root".into(),
            password_hash: "h".into(),
            status: UserStatus::Active,
            permissions: None,
        },
    );
    let token = |n: &str, hash: &str, expires_at| MetadataOp::CreateToken {
        user: Ident::Id(0),
        name: n.into(),
        token_hash: hash.into(),
        expires_at,
    };
    assert!(matches!(
        m.apply(&token("old", "h0", Some(500)), 1_000),
        Err(MetadataError::InvalidValue(_))
    ));
    m.apply(&token("ci", "h1", Some(2_000)), 1_000).unwrap();
    m.apply(&token("forever", "h2", None), 1_000).unwrap();
    assert_eq!(
        m.apply(&token("ci", "h3", None), 1_000),
        Err(MetadataError::TokenNameTaken("ci".into()))
    );
    assert!(m.apply(&token("dup", "h1", None), 1_000).is_err());
    assert_eq!(m.user_by_token("h1", 1_999).unwrap().id, 0);
    assert!(m.user_by_token("h1", 2_000).is_none());
    assert!(m.user_by_token("nope", 0).is_none());
    assert_eq!(
        m.apply(&MetadataOp::DeleteExpiredTokens, 2_000),
        Ok(Applied::TokensDeleted { count: 1 })
    );
    assert_eq!(m.users[&0].tokens.len(), 1);
    let mut limited = Metadata::new(
        vec![0],
        1,
        Limits {
            tokens_per_user_max: 1,
            ..Limits::default()
        },
    );
    limited.users = m.users.clone();
    assert!(matches!(
        limited.apply(&token("x", "h9", None), 1_000),
        Err(MetadataError::LimitReached(_))
    ));
    ok(
        &mut m,
        MetadataOp::DeleteToken {
            user: Ident::Id(0),
            name: "forever".into(),
        },
    );
    assert!(m.user_by_token("h2", 0).is_none());
}

#[test]
fn consumer_groups_rebalance_on_every_change_and_never_reuse_ids() {
    let mut m = cluster();
    ok(&mut m, MetadataOp::CreateStream { name: "s".into() });
    ok(&mut m, create_topic("s", "t", 5));
    let group = |m: &Metadata| {
        m.consumer_group(&name("s"), &name("t"), &name("g"))
            .unwrap()
            .clone()
    };
    let join = |member| MetadataOp::JoinConsumerGroup {
        stream: name("s"),
        topic: name("t"),
        group: name("g"),
        member,
    };
    assert_eq!(
        ok(
            &mut m,
            MetadataOp::CreateConsumerGroup {
                stream: name("s"),
                topic: name("t"),
                name: "g".into()
            }
        ),
        Applied::ConsumerGroupCreated { id: 0 }
    );
    assert_eq!(
        ok(&mut m, join(20)),
        Applied::Joined {
            generation: 1,
            partitions: vec![0, 1, 2, 3, 4]
        }
    );
    ok(&mut m, join(10));
    let g = group(&m);
    assert_eq!(g.generation, 2);
    assert_eq!(g.members[&10], vec![0, 2, 4]);
    assert_eq!(g.members[&20], vec![1, 3]);
    // Joining again repeats the assignment without a new generation.
    assert_eq!(
        ok(&mut m, join(20)),
        Applied::Joined {
            generation: 2,
            partitions: vec![1, 3]
        }
    );
    ok(
        &mut m,
        MetadataOp::CreatePartitions {
            stream: name("s"),
            topic: name("t"),
            count: 1,
        },
    );
    let g = group(&m);
    assert_eq!((g.generation, g.members[&20].clone()), (3, vec![1, 3, 5]));
    ok(&mut m, MetadataOp::DropMember { member: 10 });
    let g = group(&m);
    assert_eq!((g.generation, g.members.len()), (4, 1));
    assert_eq!(g.members[&20], vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        m.apply(
            &MetadataOp::LeaveConsumerGroup {
                stream: name("s"),
                topic: name("t"),
                group: name("g"),
                member: 10
            },
            1
        ),
        Err(MetadataError::MemberNotFound(10))
    );
    ok(
        &mut m,
        MetadataOp::DeleteConsumerGroup {
            stream: name("s"),
            topic: name("t"),
            group: Ident::Id(0),
        },
    );
    assert_eq!(
        ok(
            &mut m,
            MetadataOp::CreateConsumerGroup {
                stream: name("s"),
                topic: name("t"),
                name: "g".into()
            }
        ),
        Applied::ConsumerGroupCreated { id: 1 }
    );
}

/// A small xorshift generator: the test's own deterministic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random operation over a few names, so that many of them collide, miss or succeed.
fn random_op(rng: &mut Rng) -> MetadataOp {
    let names = ["a", "b", "c"];
    let pick = |rng: &mut Rng| -> Ident {
        if rng.below(2) == 0 {
            Ident::Id(rng.below(4) as u32)
        } else {
            Ident::Name(names[rng.below(3) as usize].to_string())
        }
    };
    let fresh = |rng: &mut Rng| names[rng.below(3) as usize].to_string();
    match rng.below(25) {
        0 | 1 => MetadataOp::CreateStream { name: fresh(rng) },
        2 => MetadataOp::DeleteStream { stream: pick(rng) },
        3 | 4 => MetadataOp::CreateTopic {
            stream: pick(rng),
            name: fresh(rng),
            partitions: rng.below(5) as u32,
            replication_factor: rng.below(4) as u8,
            options: TopicOptions::default(),
        },
        5 => MetadataOp::DeleteTopic {
            stream: pick(rng),
            topic: pick(rng),
        },
        6 => MetadataOp::CreatePartitions {
            stream: pick(rng),
            topic: pick(rng),
            count: rng.below(3) as u32,
        },
        7 => MetadataOp::DeletePartitions {
            stream: pick(rng),
            topic: pick(rng),
            count: rng.below(3) as u32,
        },
        8 => MetadataOp::CreateUser {
            username: fresh(rng),
            password_hash: "h".into(),
            status: UserStatus::Active,
            permissions: None,
        },
        9 => MetadataOp::CreateConsumerGroup {
            stream: pick(rng),
            topic: pick(rng),
            name: fresh(rng),
        },
        10 | 11 => MetadataOp::JoinConsumerGroup {
            stream: pick(rng),
            topic: pick(rng),
            group: pick(rng),
            member: u128::from(rng.below(4) as u8),
        },
        12 => MetadataOp::LeaveConsumerGroup {
            stream: pick(rng),
            topic: pick(rng),
            group: pick(rng),
            member: u128::from(rng.below(4) as u8),
        },
        13 => MetadataOp::DropMember {
            member: u128::from(rng.below(4) as u8),
        },
        14 => MetadataOp::UpdateStream {
            stream: pick(rng),
            name: fresh(rng),
        },
        15 => MetadataOp::UpdateTopic {
            stream: pick(rng),
            topic: pick(rng),
            name: fresh(rng),
            options: TopicOptions::default(),
        },
        16 => MetadataOp::CreateToken {
            user: pick(rng),
            name: fresh(rng),
            token_hash: format!("h{}", rng.below(4)),
            expires_at: [None, Some(rng.below(400))][rng.below(2) as usize],
        },
        17 => MetadataOp::DeleteToken {
            user: pick(rng),
            name: fresh(rng),
        },
        18 => MetadataOp::DeleteExpiredTokens,
        19 => MetadataOp::UpdatePermissions {
            user: pick(rng),
            permissions: [None, Some(Permissions::default())][rng.below(2) as usize].clone(),
        },
        20 => MetadataOp::ChangePassword {
            user: pick(rng),
            password_hash: fresh(rng),
        },
        21 => MetadataOp::DeleteUser { user: pick(rng) },
        22 => MetadataOp::TouchMembers {
            members: (0..rng.below(3))
                .map(|_| u128::from(rng.below(5) as u8))
                .collect(),
        },
        23 => MetadataOp::ExpireMembers {
            idle_us: rng.below(40),
        },
        _ => MetadataOp::DeleteConsumerGroup {
            stream: pick(rng),
            topic: pick(rng),
            group: pick(rng),
        },
    }
}

/// Stream "s", its topic "t" with `partitions` partitions, and the topic's group "g".
fn with_group(m: &mut Metadata, partitions: u32) {
    ok(m, MetadataOp::CreateStream { name: "s".into() });
    ok(m, create_topic("s", "t", partitions));
    ok(
        m,
        MetadataOp::CreateConsumerGroup {
            stream: name("s"),
            topic: name("t"),
            name: "g".into(),
        },
    );
}

#[test]
fn members_their_gateway_stopped_touching_expire() {
    let mut m = cluster();
    with_group(&mut m, 2);
    let join = |member: u128| MetadataOp::JoinConsumerGroup {
        stream: name("s"),
        topic: name("t"),
        group: name("g"),
        member,
    };
    m.apply(&join(1), 1_000).unwrap();
    m.apply(&join(2), 1_000).unwrap();
    assert_eq!(m.member_seen.len(), 2);
    // Member 1's gateway touches it at 20 s; member 2's gateway is gone.
    m.apply(
        &MetadataOp::TouchMembers {
            members: vec![1, 99],
        },
        20_000_000,
    )
    .unwrap();
    assert!(!m.member_seen.contains_key(&99), "unknown ids are ignored");
    let expire = MetadataOp::ExpireMembers {
        idle_us: 30_000_000,
    };
    // At 30 s nobody is idle for more than 30 s yet.
    m.apply(&expire, 30_000_000).unwrap();
    assert_eq!(m.member_seen.len(), 2);
    // At 31.5 s member 2 is: it leaves, and member 1 gets every partition.
    m.apply(&expire, 31_500_000).unwrap();
    let g = m
        .consumer_group(&name("s"), &name("t"), &name("g"))
        .unwrap();
    assert_eq!(g.members.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(g.members[&1], vec![0, 1]);
    assert_eq!(m.member_seen.keys().copied().collect::<Vec<_>>(), vec![1]);
    m.check().unwrap();
    // Deleting the group forgets its members' clocks.
    ok(
        &mut m,
        MetadataOp::DeleteConsumerGroup {
            stream: name("s"),
            topic: name("t"),
            group: name("g"),
        },
    );
    assert!(m.member_seen.is_empty());
    m.check().unwrap();
}

#[test]
fn refused_operations_change_nothing_and_replicas_agree() {
    let mut applied_ok = 0;
    let mut refused = 0;
    for seed in 1..40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut leader = cluster();
        let mut follower = cluster();
        for step in 0..300u64 {
            let op = random_op(&mut rng);
            let before = leader.clone();
            let result = leader.apply(&op, step);
            match &result {
                Ok(_) => applied_ok += 1,
                Err(_) => {
                    refused += 1;
                    assert_eq!(leader, before, "seed {seed} step {step}: {op:?} refused");
                }
            }
            // The follower applies what went over the wire.
            let decoded = MetadataOp::decode(&op.encode().unwrap()).unwrap();
            assert_eq!(follower.apply(&decoded, step), result);
            assert_eq!(follower, leader, "seed {seed} step {step}");
            leader
                .check()
                .unwrap_or_else(|why| panic!("seed {seed} step {step}: {why}"));
            if step % 50 == 49 {
                // A checkpoint decodes to the same state.
                let bytes = leader.encode_snapshot().unwrap();
                let decoded = Metadata::decode_snapshot(&bytes, Limits::default()).unwrap();
                assert_eq!(decoded, leader, "seed {seed} step {step}");
            }
            for topic in leader.streams.values().flat_map(|s| s.topics.values()) {
                for group in topic.groups.values() {
                    let mut owned: Vec<u32> = group.members.values().flatten().copied().collect();
                    owned.sort_unstable();
                    let expected: Vec<u32> = if group.members.is_empty() {
                        Vec::new()
                    } else {
                        (0..topic.partitions.len() as u32).collect()
                    };
                    assert_eq!(owned, expected, "every partition owned exactly once");
                }
            }
        }
    }
    assert!(
        applied_ok > 1000 && refused > 1000,
        "{applied_ok} applied, {refused} refused"
    );
}

#[test]
fn every_kind_of_operation_applies_to_a_state_that_has_what_it_names() {
    let mut applied = 0;
    for op in every_op() {
        // Stream "orders" with topics 0..=3, users root and ann, group 0 on topic 3.
        let mut m = cluster();
        ok(
            &mut m,
            MetadataOp::CreateStream {
                name: "orders".into(),
            },
        );
        for topic in ["t0", "t1", "t2", "t3"] {
            ok(&mut m, create_topic("orders", topic, 2));
        }
        for username in ["root", "ann"] {
            ok(
                &mut m,
                MetadataOp::CreateUser {
                    username: username.into(),
                    password_hash: "h".into(),
                    status: UserStatus::Active,
                    permissions: None,
                },
            );
        }
        ok(
            &mut m,
            MetadataOp::CreateConsumerGroup {
                stream: name("orders"),
                topic: Ident::Id(3),
                name: "g0".into(),
            },
        );
        let before = m.clone();
        match m.apply(&op, 1) {
            Ok(_) => applied += 1,
            Err(_) => assert_eq!(m, before, "{op:?}"),
        }
    }
    assert!(
        applied * 10 >= every_op().len() * 8,
        "{applied} of {}",
        every_op().len()
    );
}

#[test]
fn a_snapshot_round_trips_refuses_truncation_and_is_checked() {
    let mut m = cluster();
    with_group(&mut m, 3);
    ok(
        &mut m,
        MetadataOp::JoinConsumerGroup {
            stream: name("s"),
            topic: name("t"),
            group: name("g"),
            member: 9,
        },
    );
    ok(
        &mut m,
        MetadataOp::CreateUser {
            username: "root".into(),
            password_hash: "h".into(),
            status: UserStatus::Active,
            permissions: None,
        },
    );
    m.apply(
        &MetadataOp::CreateToken {
            user: Ident::Id(0),
            name: "ci".into(),
            token_hash: "x".into(),
            expires_at: Some(u64::MAX),
        },
        1,
    )
    .unwrap();
    let bytes = m.encode_snapshot().unwrap();
    assert_eq!(
        Metadata::decode_snapshot(&bytes, Limits::default()).unwrap(),
        m
    );
    for cut in 0..bytes.len() {
        assert!(
            Metadata::decode_snapshot(&bytes[..cut], Limits::default()).is_err(),
            "cut {cut}"
        );
    }
    // Tighter limits refuse a checkpoint that holds more.
    let tight = Limits {
        partitions_per_topic_max: 2,
        ..Limits::default()
    };
    assert!(matches!(
        Metadata::decode_snapshot(&bytes, tight),
        Err(crate::codec::DecodeError::TooLong { .. })
    ));
    // Well-formed but impossible states are refused: the checker fires.
    let mut broken = m.clone();
    let topic = broken
        .streams
        .get_mut(&0)
        .unwrap()
        .topics
        .get_mut(&0)
        .unwrap();
    topic.partitions[1].group = topic.partitions[0].group;
    let bytes = broken.encode_snapshot().unwrap();
    assert!(matches!(
        Metadata::decode_snapshot(&bytes, Limits::default()),
        Err(crate::codec::DecodeError::Invalid(_))
    ));
    let mut broken = m.clone();
    let group = broken
        .streams
        .get_mut(&0)
        .unwrap()
        .topics
        .get_mut(&0)
        .unwrap();
    group
        .groups
        .get_mut(&0)
        .unwrap()
        .members
        .get_mut(&9)
        .unwrap()
        .pop();
    assert!(broken.check().is_err(), "an unowned partition is caught");
    let mut broken = m.clone();
    broken.users.get_mut(&0).unwrap().id = 4;
    assert!(broken.check().is_err(), "an id unlike its key is caught");
}
