//! Safety checkers, run every tick: one canonical committed chain (every replica's committed ops
//! must match it and extend it by hash chain), identical state-machine states per op, no request
//! committed twice, no acknowledged request lost or replaced, per-session replies in order,
//! views that never go back while a replica runs, and no op committed before a replication
//! quorum of replicas made its prepare durable (Galgo's promise: an acknowledged write is on a
//! quorum's disks).

use std::collections::BTreeMap;

use galgo_consensus::header::operation;
use galgo_consensus::Header;

use crate::client::Ack;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Correctness(String),
    Liveness(String),
}

pub struct Checker {
    /// `canonical[op]`: the committed header at `op`; `canonical[0]` is the root.
    canonical: Vec<Header>,
    state_hashes: BTreeMap<u64, u128>,
    requests: BTreeMap<(u128, u64, u32), u64>,
    acks: Vec<Ack>,
    last_ack: BTreeMap<u128, (u64, u32)>,
    history_cursor: Vec<usize>,
    views: Vec<u32>,
    replication_quorum: u8,
    /// `(op, checksum)` → replicas whose write of that prepare completed (or that recovered it
    /// intact): what each replica was entitled to acknowledge.
    durable_prepares: BTreeMap<(u64, u128), u8>,
}

impl Checker {
    pub fn new(root: Header, replica_count: u8, replication_quorum: u8) -> Checker {
        Checker {
            canonical: vec![root],
            state_hashes: BTreeMap::new(),
            requests: BTreeMap::new(),
            acks: Vec::new(),
            last_ack: BTreeMap::new(),
            history_cursor: vec![0; replica_count as usize],
            views: vec![0; replica_count as usize],
            replication_quorum,
            durable_prepares: BTreeMap::new(),
        }
    }

    pub fn on_restart(&mut self, replica: u8) {
        self.history_cursor[replica as usize] = 0;
        self.views[replica as usize] = 0;
    }

    /// `replica` holds the prepare `(op, checksum)` durably: its write completed, or recovery
    /// found it intact.
    pub fn on_prepare_durable(&mut self, replica: u8, op: u64, checksum: u128) {
        *self.durable_prepares.entry((op, checksum)).or_default() |= 1 << replica;
    }

    /// `replica`'s log no longer holds any prepare above `after_op` (it was cut there).
    pub fn on_prepares_cut(&mut self, replica: u8, after_op: u64) {
        for (_, holders) in self.durable_prepares.range_mut((after_op + 1, 0)..) {
            *holders &= !(1 << replica);
        }
    }

    /// Checks ops that `replica` committed since the last call.
    pub fn check_commits(&mut self, replica: u8, committed: &[Header]) -> Result<(), Failure> {
        for header in committed {
            let op = header.op;
            if op < self.canonical.len() as u64 {
                let canonical = &self.canonical[op as usize];
                if canonical.checksum != header.checksum {
                    return Err(Failure::Correctness(format!(
                        "replica {replica} committed op {op} as {:032x} (view {}) but the canonical chain has {:032x} (view {})",
                        header.checksum, header.view, canonical.checksum, canonical.view
                    )));
                }
            } else if op == self.canonical.len() as u64 {
                let parent = self.canonical.last().expect("root").checksum;
                if header.parent != parent {
                    return Err(Failure::Correctness(format!("replica {replica} committed op {op} that does not extend the canonical chain")));
                }
                let holders = self
                    .durable_prepares
                    .get(&(op, header.checksum))
                    .copied()
                    .unwrap_or(0);
                if holders.count_ones() < u32::from(self.replication_quorum) {
                    return Err(Failure::Correctness(format!(
                        "op {op} was committed (first by replica {replica}) while only replicas {holders:#b} had its prepare durable (replication quorum {})",
                        self.replication_quorum
                    )));
                }
                if header.operation >= operation::APPLICATION_MIN {
                    let key = (header.client, header.session, header.request);
                    if let Some(first) = self.requests.insert(key, op) {
                        return Err(Failure::Correctness(format!(
                            "request {} of client {:x} session {} committed twice (ops {first} and {op})",
                            header.request, header.client, header.session
                        )));
                    }
                }
                self.canonical.push(*header);
            } else {
                return Err(Failure::Correctness(format!(
                    "replica {replica} committed op {op} above the canonical head {}",
                    self.canonical.len() - 1
                )));
            }
        }
        Ok(())
    }

    pub fn check_state(&mut self, replica: u8, history: &[(u64, u128)]) -> Result<(), Failure> {
        let cursor = &mut self.history_cursor[replica as usize];
        for (op, hash) in &history[*cursor..] {
            match self.state_hashes.get(op) {
                Some(expected) if expected != hash => {
                    return Err(Failure::Correctness(format!(
                        "replica {replica} state after op {op} differs from another replica's"
                    )));
                }
                Some(_) => {}
                None => {
                    self.state_hashes.insert(*op, *hash);
                }
            }
        }
        *cursor = history.len();
        Ok(())
    }

    pub fn check_view(&mut self, replica: u8, view: u32) -> Result<(), Failure> {
        let last = &mut self.views[replica as usize];
        if view < *last {
            return Err(Failure::Correctness(format!(
                "replica {replica} view went back from {last} to {view}"
            )));
        }
        *last = view;
        Ok(())
    }

    /// Records a reply the client accepted; it must name a committed op holding its request.
    pub fn on_ack(&mut self, ack: Ack) -> Result<(), Failure> {
        if let Some((session, request)) = self.last_ack.get(&ack.client) {
            if *session == ack.session && *request >= ack.request {
                return Err(Failure::Correctness(format!(
                    "client {:x} got reply for request {} after {}",
                    ack.client, ack.request, request
                )));
            }
        }
        self.last_ack.insert(ack.client, (ack.session, ack.request));
        self.verify_ack(&ack)?;
        self.acks.push(ack);
        Ok(())
    }

    fn verify_ack(&self, ack: &Ack) -> Result<(), Failure> {
        let Some(header) = self.canonical.get(ack.op as usize) else {
            return Err(Failure::Correctness(format!(
                "client {:x} acknowledged at op {} which no replica committed",
                ack.client, ack.op
            )));
        };
        if header.client != ack.client
            || header.request != ack.request
            || header.context != ack.request_checksum
        {
            return Err(Failure::Correctness(format!(
                "acknowledged request {} of client {:x} at op {} was lost: the canonical op holds another request",
                ack.request, ack.client, ack.op
            )));
        }
        Ok(())
    }

    /// At the end: every acknowledged request is still in the canonical chain and committed on
    /// every listed replica (given as its commit_min).
    pub fn check_final(&self, commit_mins: &[(u8, u64)]) -> Result<(), Failure> {
        for ack in &self.acks {
            self.verify_ack(ack)?;
            for (replica, commit_min) in commit_mins {
                if *commit_min < ack.op {
                    return Err(Failure::Liveness(format!(
                        "replica {replica} did not commit acknowledged op {}",
                        ack.op
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
    use galgo_consensus::Command;

    fn header(op: u64, parent: u128, salt: u8) -> Header {
        let mut header = Header::new(Command::Prepare, 1, 1);
        header.op = op;
        header.parent = parent;
        header.client = 5;
        header.session = 1;
        header.request = op as u32;
        header.operation = operation::APPLICATION_MIN;
        header.context = u128::from(op) + 1000;
        header.set_checksums(&[salt]);
        header
    }

    /// A checker where every given prepare is durable on replica 0 (quorum 1).
    fn durable_on_one(replica_count: u8, headers: &[Header]) -> Checker {
        let mut checker = Checker::new(Header::root(1, 1), replica_count, 1);
        for header in headers {
            checker.on_prepare_durable(0, header.op, header.checksum);
        }
        checker
    }

    #[test]
    fn divergent_commit_fires() {
        let root = Header::root(1, 1);
        let a = header(1, root.checksum, 0);
        let b = header(1, root.checksum, 1);
        let mut checker = durable_on_one(2, &[a, b]);
        assert!(checker.check_commits(0, &[a]).is_ok());
        assert!(matches!(
            checker.check_commits(1, &[b]),
            Err(Failure::Correctness(_))
        ));
    }

    #[test]
    fn broken_chain_and_duplicate_fire() {
        let root = Header::root(1, 1);
        let mut checker = durable_on_one(1, &[header(1, 42, 0)]);
        assert!(matches!(
            checker.check_commits(0, &[header(1, 42, 0)]),
            Err(Failure::Correctness(_))
        ));
        let first = header(1, root.checksum, 0);
        let mut second = header(2, first.checksum, 0);
        second.request = 1;
        second.set_checksums(&[0]);
        let mut checker = durable_on_one(1, &[first, second]);
        assert!(matches!(
            checker.check_commits(0, &[first, second]),
            Err(Failure::Correctness(_))
        ));
    }

    #[test]
    fn lost_ack_and_state_divergence_fire() {
        let root = Header::root(1, 1);
        let first = header(1, root.checksum, 0);
        let mut checker = durable_on_one(2, &[first]);
        checker.check_commits(0, &[first]).unwrap();
        let wrong = Ack {
            client: 5,
            session: 1,
            request: 1,
            op: 1,
            request_checksum: 7,
            reply: Vec::new(),
            broker: None,
        };
        assert!(matches!(
            checker.on_ack(wrong),
            Err(Failure::Correctness(_))
        ));
        let missing = Ack {
            client: 6,
            session: 1,
            request: 1,
            op: 9,
            request_checksum: 7,
            reply: Vec::new(),
            broker: None,
        };
        assert!(matches!(
            checker.on_ack(missing),
            Err(Failure::Correctness(_))
        ));
        checker.check_state(0, &[(1, 11)]).unwrap();
        assert!(matches!(
            checker.check_state(1, &[(1, 12)]),
            Err(Failure::Correctness(_))
        ));
        checker.check_view(0, 5).unwrap();
        assert!(checker.check_view(0, 4).is_err());
    }

    #[test]
    fn commit_before_a_durable_quorum_fires() {
        let root = Header::root(1, 1);
        let first = header(1, root.checksum, 0);
        let mut checker = Checker::new(root, 3, 2);
        checker.on_prepare_durable(0, 1, first.checksum);
        // Replica 1 made a different prepare at op 1 durable: it does not count.
        checker.on_prepare_durable(1, 1, first.checksum ^ 1);
        assert!(matches!(
            checker.check_commits(0, &[first]),
            Err(Failure::Correctness(_))
        ));
        checker.on_prepare_durable(2, 1, first.checksum);
        checker.check_commits(0, &[first]).unwrap();
    }
}
