//! The test state machine: an append-only log of client payloads, summarised by a running hash.
//! Its history of (op, state hash) lets the checker compare replicas op by op.
//!
//! It also exercises the primary's projection: `prepare` stamps each application op with the
//! number of application ops before it, counted on the projected state, and `apply` asserts
//! the stamp equals the committed count. A primary that stamped against a stale projection
//! (after a view change, say) fails that assertion on every replica that applies the op.
//!
//! In the broker workload it also runs Galgo's partition state machine behind the stamp: the
//! reply is the partition's, and a stamped append that applying refuses (offsets that do not
//! continue the log, a producer stamp the state disagrees with) fails an assertion.

use bytes::Bytes;
use galgo_consensus::checksum::checksum;
use galgo_consensus::header::operation;
use galgo_consensus::StateMachine;
use galgo_replica::metadata::machine::MetadataMachine;
use galgo_replica::metadata::{Limits, Metadata};
use galgo_replica::partition::machine::PartitionMachine;
use galgo_replica::partition::ops::PartitionOp;
use galgo_replica::partition::reply::PartitionReply;
use galgo_replica::partition::PartitionState;

use crate::options::Workload;

/// Bytes of the stamp `prepare` puts before the request body.
pub const STAMP_SIZE: usize = 8;

/// Consumers and producers the simulated partition remembers: more than the clients, so no
/// producer is ever forgotten.
const PARTITION_TABLES_MAX: u32 = 64;

#[derive(Default)]
pub struct TestStateMachine {
    pub count: u64,
    pub hash: u128,
    /// Application ops applied.
    pub applications: u64,
    /// Application ops applied or prepared on the projected state (primary only).
    projected_applications: u64,
    /// (op, hash after op) for every executed op, drained by the checker.
    pub history: Vec<(u64, u128)>,
    /// The broker workload's partition.
    pub partition: Option<PartitionMachine>,
    /// The metadata workload's metadata.
    pub metadata: Option<MetadataMachine>,
}

impl TestStateMachine {
    pub fn new(workload: Workload) -> TestStateMachine {
        TestStateMachine {
            partition: (workload == Workload::Broker).then(|| {
                PartitionMachine::new(PartitionState::new(
                    PARTITION_TABLES_MAX,
                    PARTITION_TABLES_MAX,
                ))
            }),
            metadata: (workload == Workload::Metadata)
                .then(|| MetadataMachine::new(Metadata::new(vec![0, 1, 2], 3, Limits::default()))),
            ..TestStateMachine::default()
        }
    }
}

impl StateMachine for TestStateMachine {
    fn apply(&mut self, op: u64, timestamp: u64, operation: u8, body: &[u8]) -> Vec<u8> {
        if operation >= operation::APPLICATION_MIN {
            assert!(
                body.len() >= STAMP_SIZE,
                "op {op}: an application op carries its stamp"
            );
            let stamp = u64::from_le_bytes(body[..STAMP_SIZE].try_into().expect("8 bytes"));
            assert_eq!(
                stamp, self.applications,
                "op {op}: stamped on a projection that does not match the committed state"
            );
            self.applications += 1;
        }
        let mut input = Vec::with_capacity(body.len() + 41);
        input.extend_from_slice(&self.hash.to_le_bytes());
        input.extend_from_slice(&op.to_le_bytes());
        input.extend_from_slice(&timestamp.to_le_bytes());
        input.push(operation);
        input.extend_from_slice(body);
        self.hash = checksum(&input);
        self.count += 1;
        self.history.push((op, self.hash));
        if let (Some(partition), true) = (
            self.partition.as_mut(),
            operation >= operation::APPLICATION_MIN,
        ) {
            let request = &body[STAMP_SIZE..];
            let reply = partition.apply(op, timestamp, operation, request);
            let stamped_append = matches!(
                PartitionOp::decode(request),
                Ok((PartitionOp::Append { .. }, _))
            );
            if stamped_append {
                assert!(
                    !matches!(
                        PartitionReply::decode(&reply),
                        Ok(PartitionReply::Refused { .. })
                    ),
                    "op {op}: a stamped append was refused on apply: {:?}",
                    PartitionReply::decode(&reply)
                );
            }
            return reply;
        }
        if let (Some(metadata), true) = (
            self.metadata.as_mut(),
            operation >= operation::APPLICATION_MIN,
        ) {
            let reply = metadata.apply(op, timestamp, operation, &body[STAMP_SIZE..]);
            // Every reachable state keeps the metadata's invariants (ids, names, placements,
            // group assignments): checked after every op on every replica.
            if let Err(broken) = metadata.metadata.check() {
                panic!("op {op}: the metadata broke an invariant: {broken}");
            }
            return reply;
        }
        let mut reply = Vec::with_capacity(24);
        reply.extend_from_slice(&self.count.to_le_bytes());
        reply.extend_from_slice(&self.hash.to_le_bytes());
        reply
    }

    fn prepare(&mut self, op: u64, timestamp: u64, operation: u8, body: Bytes) -> Bytes {
        let body = match self.partition.as_mut() {
            Some(partition) => partition.prepare(op, timestamp, operation, body),
            None => body,
        };
        let mut stamped = Vec::with_capacity(STAMP_SIZE + body.len());
        stamped.extend_from_slice(&self.projected_applications.to_le_bytes());
        stamped.extend_from_slice(&body);
        self.projected_applications += 1;
        stamped.into()
    }

    fn reset_projection(&mut self) {
        self.projected_applications = self.applications;
        if let Some(partition) = self.partition.as_mut() {
            partition.reset_projection();
        }
    }

    /// Count, hash and applications, then the partition's and the metadata's own snapshots
    /// (each a u32 size, `u32::MAX` for none). The history is the checker's, not state.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self.count.to_le_bytes());
        bytes.extend_from_slice(&self.hash.to_le_bytes());
        bytes.extend_from_slice(&self.applications.to_le_bytes());
        let parts = [
            self.partition.as_ref().map(|p| p.snapshot()),
            self.metadata.as_ref().map(|m| m.snapshot()),
        ];
        for part in parts {
            match part {
                None => bytes.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(snapshot) => {
                    let snapshot = snapshot?;
                    bytes.extend_from_slice(&(snapshot.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(&snapshot);
                }
            }
        }
        Some(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> bool {
        let Some((fixed, mut rest)) = snapshot.split_at_checked(32) else {
            return false;
        };
        let count = u64::from_le_bytes(fixed[..8].try_into().expect("8"));
        let hash = u128::from_le_bytes(fixed[8..24].try_into().expect("16"));
        let applications = u64::from_le_bytes(fixed[24..32].try_into().expect("8"));
        // The partition's part, then the metadata's, as `snapshot` wrote them.
        let mut parts: [Option<&[u8]>; 2] = [None, None];
        for part in &mut parts {
            let Some((size, after)) = rest.split_at_checked(4) else {
                return false;
            };
            rest = after;
            let size = u32::from_le_bytes(size.try_into().expect("4"));
            if size != u32::MAX {
                let Some((bytes, after)) = rest.split_at_checked(size as usize) else {
                    return false;
                };
                *part = Some(bytes);
                rest = after;
            }
        }
        let [partition, metadata] = parts;
        // Both parts as this workload has them, or the snapshot is not of this machine (a
        // workload runs one of the two at most, so at most one restore below can change state).
        if !rest.is_empty()
            || partition.is_some() != self.partition.is_some()
            || metadata.is_some() != self.metadata.is_some()
        {
            return false;
        }
        if let (Some(bytes), Some(machine)) = (partition, self.partition.as_mut()) {
            if !machine.restore(bytes) {
                return false;
            }
        }
        if let (Some(bytes), Some(machine)) = (metadata, self.metadata.as_mut()) {
            if !machine.restore(bytes) {
                return false;
            }
        }
        self.count = count;
        self.hash = hash;
        self.applications = applications;
        self.projected_applications = applications;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projected_stamps_apply_in_order() {
        let mut primary = TestStateMachine::default();
        let mut backup = TestStateMachine::default();
        primary.reset_projection();
        let first = primary.prepare(1, 1, operation::APPLICATION_MIN, Bytes::from_static(b"a"));
        let second = primary.prepare(2, 2, operation::APPLICATION_MIN, Bytes::from_static(b"b"));
        for machine in [&mut primary, &mut backup] {
            machine.apply(1, 1, operation::APPLICATION_MIN, &first);
            machine.apply(2, 2, operation::APPLICATION_MIN, &second);
        }
        assert_eq!(primary.hash, backup.hash);
        assert_eq!(backup.applications, 2);
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_other_bytes_are_refused() {
        let mut primary = TestStateMachine::new(Workload::Broker);
        primary.reset_projection();
        let op = primary.prepare(1, 1, operation::APPLICATION_MIN, Bytes::from_static(b"a"));
        primary.apply(1, 1, operation::APPLICATION_MIN, &op);
        let snapshot = primary.snapshot().expect("a snapshot");
        let mut restored = TestStateMachine::new(Workload::Broker);
        assert!(restored.restore(&snapshot));
        assert_eq!(
            (restored.count, restored.hash, restored.applications),
            (primary.count, primary.hash, primary.applications)
        );
        // Cut, extended, or of another workload: refused, nothing changed.
        let mut other = TestStateMachine::new(Workload::Test);
        assert!(!other.restore(&snapshot));
        assert!(!restored.restore(&snapshot[..snapshot.len() - 1]));
        let mut longer = snapshot.clone();
        longer.push(0);
        assert!(!restored.restore(&longer));
        assert_eq!(other.count, 0);
    }

    #[test]
    #[should_panic(expected = "stamped on a projection")]
    fn a_stamp_from_a_stale_projection_fires() {
        let mut primary = TestStateMachine::default();
        primary.reset_projection();
        let _dropped = primary.prepare(1, 1, operation::APPLICATION_MIN, Bytes::from_static(b"a"));
        // A new view dropped op 1, but the projection was not reset: op 1 again is stamped 1.
        let stale = primary.prepare(1, 2, operation::APPLICATION_MIN, Bytes::from_static(b"b"));
        let mut backup = TestStateMachine::default();
        backup.apply(1, 2, operation::APPLICATION_MIN, &stale);
    }
}
