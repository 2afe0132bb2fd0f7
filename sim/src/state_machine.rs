//! The test state machine: an append-only log of client payloads, summarised by a running hash.
//! Its history of (op, state hash) lets the checker compare replicas op by op.

use galgo_consensus::checksum::checksum;
use galgo_consensus::StateMachine;

#[derive(Default, Clone, Debug)]
pub struct TestStateMachine {
    pub count: u64,
    pub hash: u128,
    /// (op, hash after op) for every executed op, drained by the checker.
    pub history: Vec<(u64, u128)>,
}

impl StateMachine for TestStateMachine {
    fn apply(&mut self, op: u64, timestamp: u64, operation: u8, body: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(body.len() + 41);
        input.extend_from_slice(&self.hash.to_le_bytes());
        input.extend_from_slice(&op.to_le_bytes());
        input.extend_from_slice(&timestamp.to_le_bytes());
        input.push(operation);
        input.extend_from_slice(body);
        self.hash = checksum(&input);
        self.count += 1;
        self.history.push((op, self.hash));
        let mut reply = Vec::with_capacity(24);
        reply.extend_from_slice(&self.count.to_le_bytes());
        reply.extend_from_slice(&self.hash.to_le_bytes());
        reply
    }
}
