//! The simulated network: one bounded queue per (source, target) path, exponential delays (so
//! packets reorder), loss, replay (duplication), clogging, bit flips, and symmetric or
//! asymmetric partitions of replicas. Packets are frames of bytes; receivers verify checksums.
//! It also keeps PrepareOks it carried and, when a replica later prepares the same op number in
//! a newer view, can deliver those old acknowledgements to it again (a connection's stale queue
//! drained late), the one fault that tests whether a primary counts acks of an older view.

use std::collections::{BTreeMap, VecDeque};

use galgo_consensus::header::HEADER_SIZE;
use galgo_consensus::prng::Prng;
use galgo_consensus::{Command, Header};

use crate::options::{NetworkOptions, PartitionMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Replica(u8),
    Client(usize),
}

#[derive(Clone, Debug)]
struct Packet {
    ready_at: u64,
    sequence: u64,
    frame: Vec<u8>,
}

#[derive(Default, Clone, Debug)]
pub struct NetworkStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub replayed: u64,
    pub stale_acks_replayed: u64,
    pub misrouted: u64,
    pub flipped: u64,
    pub dropped_full: u64,
    pub partitions: u64,
}

pub struct Network {
    options: NetworkOptions,
    prng: Prng,
    replica_count: u8,
    paths: BTreeMap<(Node, Node), Vec<Packet>>,
    clogged_until: BTreeMap<(Node, Node), u64>,
    /// `blocked[(a, b)]`: packets from replica a to replica b are cut.
    blocked: BTreeMap<(u8, u8), bool>,
    partitioned: bool,
    stability: u64,
    sequence: u64,
    /// Recently delivered packets between replicas, for `replay_old`.
    history: VecDeque<(Node, Node, Vec<u8>)>,
    /// PrepareOks sent between replicas, for `replay_stale_acks`, oldest first.
    acks_sent: VecDeque<SentAck>,
    pub faults_enabled: bool,
    pub stats: NetworkStats,
}

/// Packets kept for late replays.
const HISTORY_MAX: usize = 512;
/// PrepareOks kept for stale replays.
const ACKS_SENT_MAX: usize = 1024;

/// A PrepareOk the network carried from `from` to `to`, acknowledging `op` in `view`.
#[derive(Clone, Debug)]
struct SentAck {
    from: u8,
    to: u8,
    view: u32,
    op: u64,
    frame: Vec<u8>,
}
/// Delay bounds, in ticks, of a straggler packet.
const STRAGGLER_DELAY_MIN: u64 = 50;
const STRAGGLER_DELAY_MAX: u64 = 2_000;
/// How far back a late replay reaches, on average, in packets.
const HISTORY_REPLAY_MEAN: f64 = 64.0;

impl Network {
    pub fn new(options: NetworkOptions, seed: u64, replica_count: u8) -> Network {
        Network {
            options,
            prng: Prng::from_seed(seed),
            replica_count,
            paths: BTreeMap::new(),
            clogged_until: BTreeMap::new(),
            blocked: BTreeMap::new(),
            partitioned: false,
            stability: 0,
            history: VecDeque::new(),
            acks_sent: VecDeque::new(),
            sequence: 0,
            faults_enabled: true,
            stats: NetworkStats::default(),
        }
    }

    fn delay(&mut self) -> u64 {
        if !self.faults_enabled {
            return 1;
        }
        if self.prng.chance(self.options.straggler) {
            // A packet stuck in a queue or a retransmission timer: it arrives views later.
            return self
                .prng
                .range_inclusive(STRAGGLER_DELAY_MIN, STRAGGLER_DELAY_MAX);
        }
        self.options
            .delay_min
            .max(self.prng.exponential(self.options.delay_mean))
            .max(1)
    }

    pub fn send(&mut self, now: u64, from: Node, to: Node, frame: Vec<u8>) {
        if let (Node::Replica(source), Node::Replica(target)) = (from, to) {
            self.note_replica_frame(now, source, target, &frame);
        }
        self.enqueue(now, from, to, frame);
    }

    /// Records a PrepareOk; on a Prepare, maybe sends the preparing replica the acks it got
    /// for the same op number in older views again.
    fn note_replica_frame(&mut self, now: u64, from: u8, to: u8, frame: &[u8]) {
        if self.options.replay_stale_acks == 0.0 || frame.len() < HEADER_SIZE {
            return;
        }
        let bytes: &[u8; HEADER_SIZE] = frame[..HEADER_SIZE].try_into().expect("header size");
        let Ok(header) = Header::decode(bytes) else {
            return;
        };
        match header.command {
            Command::PrepareOk => {
                if self.acks_sent.len() == ACKS_SENT_MAX {
                    self.acks_sent.pop_front();
                }
                self.acks_sent.push_back(SentAck {
                    from,
                    to,
                    view: header.view,
                    op: header.op,
                    frame: frame.to_vec(),
                });
            }
            Command::Prepare
                if header.replica == from
                    && self.faults_enabled
                    && self.prng.chance(self.options.replay_stale_acks) =>
            {
                // Each stale ack is delivered again once, then forgotten.
                let mut index = 0;
                while index < self.acks_sent.len() {
                    let ack = &self.acks_sent[index];
                    if ack.to == from && ack.op == header.op && ack.view < header.view {
                        let ack = self.acks_sent.remove(index).expect("index in range");
                        self.stats.stale_acks_replayed += 1;
                        self.enqueue(
                            now,
                            Node::Replica(ack.from),
                            Node::Replica(ack.to),
                            ack.frame,
                        );
                    } else {
                        index += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn enqueue(&mut self, now: u64, from: Node, to: Node, frame: Vec<u8>) {
        self.stats.sent += 1;
        let to = match to {
            Node::Replica(_) if self.faults_enabled && self.prng.chance(self.options.misroute) => {
                // A stale connection or a reused address: it reaches another replica.
                self.stats.misrouted += 1;
                Node::Replica(self.prng.below(u64::from(self.replica_count)) as u8)
            }
            other => other,
        };
        let ready_at = now + self.delay();
        self.sequence += 1;
        let capacity = if self.faults_enabled {
            self.options.path_capacity
        } else {
            4096
        };
        let sequence = self.sequence;
        let path = self.paths.entry((from, to)).or_default();
        if path.len() >= capacity {
            let victim = self.prng.below(path.len() as u64) as usize;
            path.swap_remove(victim);
            self.stats.dropped_full += 1;
        }
        let path = self.paths.get_mut(&(from, to)).expect("inserted");
        path.push(Packet {
            ready_at,
            sequence,
            frame,
        });
    }

    fn cut(&self, from: Node, to: Node) -> bool {
        match (from, to) {
            (Node::Replica(a), Node::Replica(b)) => {
                self.blocked.get(&(a, b)).copied().unwrap_or(false)
            }
            _ => false,
        }
    }

    /// Removes and returns every packet ready at `now`, in a deterministic order.
    pub fn deliver(&mut self, now: u64) -> Vec<(Node, Node, Vec<u8>)> {
        let mut ready = Vec::new();
        let keys: Vec<(Node, Node)> = self.paths.keys().copied().collect();
        for key in keys {
            if self.faults_enabled
                && self
                    .clogged_until
                    .get(&key)
                    .is_some_and(|until| *until > now)
            {
                continue;
            }
            let path = self.paths.get_mut(&key).expect("key exists");
            let mut index = 0;
            while index < path.len() {
                if path[index].ready_at <= now {
                    let packet = path.swap_remove(index);
                    ready.push((packet.sequence, key.0, key.1, packet.frame));
                } else {
                    index += 1;
                }
            }
        }
        ready.sort_by_key(|(sequence, _, _, _)| *sequence);
        let mut delivered = Vec::with_capacity(ready.len());
        for (_, from, to, mut frame) in ready {
            if self.faults_enabled {
                if self.cut(from, to) || self.prng.chance(self.options.loss) {
                    self.stats.lost += 1;
                    continue;
                }
                if self.prng.chance(self.options.replay) {
                    self.stats.replayed += 1;
                    self.send(now, from, to, frame.clone());
                }
                if !frame.is_empty() && self.prng.chance(self.options.bit_flip) {
                    let bit = self.prng.below(frame.len() as u64 * 8);
                    frame[(bit / 8) as usize] ^= 1 << (bit % 8);
                    self.stats.flipped += 1;
                }
            }
            self.stats.delivered += 1;
            if matches!((from, to), (Node::Replica(_), Node::Replica(_))) {
                if self.history.len() == HISTORY_MAX {
                    self.history.pop_front();
                }
                self.history.push_back((from, to, frame.clone()));
            }
            delivered.push((from, to, frame));
        }
        if self.faults_enabled
            && !self.history.is_empty()
            && self.prng.chance(self.options.replay_old)
        {
            // Mostly recent packets: a message of the previous view or two.
            let back =
                (self.prng.exponential(HISTORY_REPLAY_MEAN) as usize).min(self.history.len() - 1);
            let index = self.history.len() - 1 - back;
            let (from, to, frame) = self.history[index].clone();
            self.stats.replayed += 1;
            self.send(now, from, to, frame);
        }
        delivered
    }

    /// Clogs paths and changes partitions.
    pub fn tick(&mut self, now: u64, nodes: &[Node]) {
        if !self.faults_enabled {
            return;
        }
        if self.options.clog_probability > 0.0 {
            for from in nodes {
                for to in nodes {
                    if from != to && self.prng.chance(self.options.clog_probability) {
                        let duration = self.prng.exponential(self.options.clog_mean);
                        self.clogged_until.insert((*from, *to), now + duration);
                    }
                }
            }
        }
        if self.stability > 0 {
            self.stability -= 1;
            return;
        }
        if self.partitioned {
            if self.prng.chance(self.options.unpartition_probability) {
                self.blocked.clear();
                self.partitioned = false;
                self.stability = self.options.unpartition_stability;
            }
        } else if self.options.partition_mode != PartitionMode::None
            && self.replica_count > 1
            && self.prng.chance(self.options.partition_probability)
        {
            self.partition();
            self.stability = self.options.partition_stability;
        }
    }

    fn partition(&mut self) {
        let n = self.replica_count;
        let mut side = vec![false; n as usize];
        match self.options.partition_mode {
            PartitionMode::None => return,
            PartitionMode::UniformSize => {
                let size = self.prng.range_inclusive(1, u64::from(n) - 1) as usize;
                let mut order: Vec<usize> = (0..n as usize).collect();
                for i in (1..order.len()).rev() {
                    let j = self.prng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
                for index in order.into_iter().take(size) {
                    side[index] = true;
                }
            }
            PartitionMode::UniformPartition => {
                for s in side.iter_mut() {
                    *s = self.prng.chance(0.5);
                }
            }
            PartitionMode::IsolateSingle => {
                side[self.prng.below(u64::from(n)) as usize] = true;
            }
        }
        self.stats.partitions += 1;
        for a in 0..n {
            for b in 0..n {
                if side[a as usize] != side[b as usize] {
                    // Asymmetric: the `true` side can still send.
                    let cut = self.options.partition_symmetric || !side[a as usize];
                    self.blocked.insert((a, b), cut);
                }
            }
        }
        self.partitioned = true;
    }

    /// Liveness phase: heal everything, fast and lossless from now on.
    pub fn heal(&mut self) {
        self.faults_enabled = false;
        self.blocked.clear();
        self.partitioned = false;
        self.clogged_until.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_consensus::Message;

    fn options(replay_stale_acks: f64) -> NetworkOptions {
        NetworkOptions {
            delay_min: 1,
            delay_mean: 1.0,
            loss: 0.0,
            replay: 0.0,
            replay_old: 0.0,
            replay_stale_acks,
            straggler: 0.0,
            misroute: 0.0,
            path_capacity: 64,
            clog_probability: 0.0,
            clog_mean: 0.0,
            bit_flip: 0.0,
            partition_mode: PartitionMode::None,
            partition_symmetric: true,
            partition_probability: 0.0,
            unpartition_probability: 0.0,
            partition_stability: 0,
            unpartition_stability: 0,
        }
    }

    fn frame(command: Command, replica: u8, view: u32, op: u64) -> Vec<u8> {
        let mut header = Header::new(command, 1, 1);
        header.replica = replica;
        header.view = view;
        header.op = op;
        header.set_checksums(&[]);
        Message::new(header, Vec::new()).encode()
    }

    /// Delivers everything sent so far; returns the (from, to, command, view, op) of each.
    fn drain(network: &mut Network, now: u64) -> Vec<(Node, Node, Command, u32, u64)> {
        let mut seen = Vec::new();
        for tick in now..now + 100 {
            for (from, to, frame) in network.deliver(tick) {
                let header = Message::decode(&frame).expect("intact").header;
                seen.push((from, to, header.command, header.view, header.op));
            }
        }
        seen
    }

    #[test]
    fn old_view_acks_for_a_reprepared_op_are_delivered_again() {
        let mut network = Network::new(options(1.0), 7, 3);
        let (primary, backup) = (Node::Replica(0), Node::Replica(1));
        network.send(0, backup, primary, frame(Command::PrepareOk, 1, 3, 10));
        network.send(0, backup, primary, frame(Command::PrepareOk, 1, 3, 11));
        assert_eq!(drain(&mut network, 0).len(), 2);
        // The same view again: nothing stale to replay.
        network.send(200, primary, backup, frame(Command::Prepare, 0, 3, 10));
        assert_eq!(drain(&mut network, 200).len(), 1);
        // Op 10 prepared in view 5: the view-3 ack for op 10 (only) comes back, once.
        network.send(400, primary, backup, frame(Command::Prepare, 0, 5, 10));
        let seen = drain(&mut network, 400);
        assert!(seen.contains(&(backup, primary, Command::PrepareOk, 3, 10)));
        assert_eq!(seen.len(), 2);
        assert_eq!(network.stats.stale_acks_replayed, 1);
        network.send(600, primary, backup, frame(Command::Prepare, 0, 6, 10));
        assert_eq!(drain(&mut network, 600).len(), 1);
    }

    #[test]
    fn stale_acks_stay_quiet_when_the_fault_is_off() {
        let mut network = Network::new(options(0.0), 7, 3);
        let (primary, backup) = (Node::Replica(0), Node::Replica(1));
        network.send(0, backup, primary, frame(Command::PrepareOk, 1, 3, 10));
        network.send(0, primary, backup, frame(Command::Prepare, 0, 5, 10));
        assert_eq!(drain(&mut network, 0).len(), 2);
        assert_eq!(network.stats.stale_acks_replayed, 0);
    }
}
