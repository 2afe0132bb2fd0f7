//! One simulated cluster run: replicas, disks, network and clients in one thread, driven by one
//! seed in 10 ms ticks. A safety phase injects faults until enough requests are acknowledged;
//! a liveness phase then heals everything and requires the cluster to finish all work.

use std::collections::BTreeMap;

use galgo_consensus::durable::DurableState;
use galgo_consensus::header::HEADER_SIZE;
use galgo_consensus::prng::Prng;
use galgo_consensus::quorums::Quorums;
use galgo_consensus::recovery::{recover_journal, RecoveryBugs, SlotRead};
use galgo_consensus::{
    checkpoint_held, checkpoint_restores, Action, Bug, Bugs, Checkpoint, Command, Completion,
    Config, Header, IoId, Message, Peer, Replica, StateMachine, Status, Timeouts,
};

use crate::broker_checker::BrokerChecker;
use crate::checker::{Checker, Failure};
use crate::client::{BrokerRequest, Client};
use crate::disk::{Disk, FaultAtlas, WriteTarget, Zone};
use crate::network::{Network, Node};
use crate::options::Options;
use crate::segments::SegmentStore;
use crate::state_machine::TestStateMachine;
use galgo_replica::journal::CheckpointStart;

const CLUSTER: u128 = 0x6a1_6a1;
const GROUP: u64 = 1;
const OPS_MAX: u64 = 1 << 14;
const TICK_NANOS: u64 = 10_000_000;
const REQUEST_PROBABILITY: f64 = 0.3;

#[derive(Default, Debug, Clone)]
pub struct RunStats {
    pub ticks: u64,
    pub acks: usize,
    pub crashes: u64,
    pub restarts: u64,
    /// Checkpoints saved, and restarts that opened from one.
    pub checkpoints: u64,
    pub checkpoint_opens: u64,
    pub pauses: u64,
    pub view_max: u32,
    pub commit_max: u64,
    pub liveness_ticks: u64,
    /// The highest journal base any replica compacted to, and the reads of compacted ops'
    /// headers and prepares served to peers from disk.
    pub journal_base_max: u64,
    pub compacted_header_reads: u64,
    pub compacted_prepare_reads: u64,
    /// Log prefixes dropped (fault-free retention), and checkpoints installed from a peer
    /// (state transfer).
    pub prefix_cuts: u64,
    pub transfers: u64,
}

pub struct Simulator {
    options: Options,
    bugs: Bugs,
    prng: Prng,
    now: u64,
    network: Network,
    disks: Vec<Disk>,
    /// Segment-journal mode: each replica's journal (the slot disks keep the superblocks).
    segments: Option<Vec<SegmentStore>>,
    replicas: Vec<Option<Replica<TestStateMachine>>>,
    paused: Vec<bool>,
    /// Each replica's saved checkpoint, as its bytes (written whole and synced: a crash keeps
    /// it; the storage fault rate may flip a byte of it), and the op it was taken at.
    checkpoints: Vec<Option<(u64, Vec<u8>)>>,
    superblock_sequence: Vec<u64>,
    incarnation: u64,
    clients: Vec<Client>,
    checker: Checker,
    broker_checker: BrokerChecker,
    /// Prepare writes in flight: (replica, io) → (op, checksum), for the durability checker.
    prepare_writes: BTreeMap<(u8, u64), (u64, u128)>,
    faults: bool,
    pub stats: RunStats,
}

impl Simulator {
    pub fn new(options: Options, bugs: Bugs) -> Simulator {
        let mut prng = Prng::from_seed(options.seed ^ 0x5eed);
        let n = options.replica_count;
        let quorums = Quorums::new(n);
        let atlas = FaultAtlas::new(prng.next_u64(), n, quorums.replication);
        let network = Network::new(options.network.clone(), prng.next_u64(), n);
        let mut disks = Vec::new();
        for replica in 0..n {
            let mut disk = Disk::new(
                replica,
                options.storage.clone(),
                atlas.clone(),
                prng.next_u64(),
            );
            disk.write_superblock_now(DurableState::initial().encode(1));
            disks.push(disk);
        }
        let clients = (0..options.clients)
            .map(|index| {
                Client::new(
                    index as u128 + 1,
                    CLUSTER,
                    GROUP,
                    n,
                    options.placement_offset,
                    options.request_body_max,
                    options.workload,
                )
            })
            .collect();
        let segments = options.segment_journal.then(|| {
            (0..n)
                .map(|_| {
                    SegmentStore::new(
                        prng.next_u64(),
                        options.storage.crash_tear,
                        options.segment_size,
                    )
                })
                .collect()
        });
        let mut simulator = Simulator {
            segments,
            checker: Checker::new(Header::root(CLUSTER, GROUP), n, quorums.replication),
            broker_checker: BrokerChecker::default(),
            prepare_writes: BTreeMap::new(),
            options,
            bugs,
            prng,
            now: 0,
            network,
            disks,
            replicas: Vec::new(),
            paused: vec![false; n as usize],
            checkpoints: vec![None; n as usize],
            superblock_sequence: vec![1; n as usize],
            incarnation: 0,
            clients,
            faults: true,
            stats: RunStats::default(),
        };
        for replica in 0..n {
            let opened = simulator.open_replica(replica);
            simulator.replicas.push(Some(opened));
        }
        simulator
    }

    fn config(&self, replica: u8) -> Config {
        Config {
            cluster: CLUSTER,
            group: GROUP,
            replica_count: self.options.replica_count,
            replica,
            placement_offset: self.options.placement_offset,
            pipeline_max: self.options.pipeline_max,
            request_queue_max: self.options.clients_max,
            clients_max: self.options.clients_max,
            ops_max: OPS_MAX,
            journal_keep_ops: self.options.journal_keep_ops,
            redundant_headers: !self.options.segment_journal,
            return_leadership: self.options.return_leadership,
            timeouts: Timeouts::default(),
            bugs: self.bugs,
        }
    }

    /// Opens a replica from what its disk holds (protocol-aware recovery).
    fn open_replica(&mut self, replica: u8) -> Replica<TestStateMachine> {
        let disk = &mut self.disks[replica as usize];
        let mut best: Option<(u64, DurableState)> = None;
        for bytes in disk.read_superblock().into_iter().flatten() {
            if let Ok((sequence, state)) = DurableState::decode(&bytes) {
                if best.as_ref().is_none_or(|(s, _)| sequence > *s) {
                    best = Some((sequence, state));
                }
            }
        }
        let (sequence, durable) = best.expect("every superblock copy is unreadable");
        // Rewrite every copy so the state we act on can never be lost to an older quorum.
        let sequence = sequence.max(self.superblock_sequence[replica as usize]) + 1;
        self.superblock_sequence[replica as usize] = sequence;
        disk.write_superblock_now(durable.encode(sequence));

        let recovery_bugs = RecoveryBugs {
            truncate_at_first_corrupt: self.bugs.has(Bug::TruncateAtFirstCorrupt),
            cut_log_at_every_installed_open: self.bugs.has(Bug::CutLogAtEveryInstalledOpen),
        };
        let root = Header::root(CLUSTER, GROUP);
        // A checkpoint that does not decode (a flipped byte) or restore is as good as none.
        let mut machine = TestStateMachine::new(self.options.workload);
        let checkpoint = self.checkpoints[replica as usize]
            .as_ref()
            .and_then(|(_, bytes)| Checkpoint::decode(bytes).ok())
            .filter(|c| checkpoint_restores(c, self.options.clients_max, &mut machine));

        let recovered = match self.segments.as_mut() {
            Some(segments) => {
                let recovered = segments[replica as usize].open(
                    &durable,
                    root,
                    OPS_MAX,
                    recovery_bugs,
                    checkpoint.as_ref().map(|c| CheckpointStart {
                        header: c.op_header,
                        next_offset: machine.log_offset_end(),
                        installed: c.installed,
                    }),
                );
                for after_op in segments[replica as usize].take_cuts() {
                    self.checker.on_prepares_cut(replica, after_op);
                }
                recovered
            }
            None => {
                let slots = self.read_slots(replica);
                recover_journal(root, OPS_MAX, &durable, &slots, recovery_bugs)
            }
        };
        // The log must hold the checkpoint's op as it was; else the log is applied from op 1 on
        // a machine the checkpoint did not restore.
        let workload = self.options.workload;
        let checkpoint = checkpoint_held(checkpoint, &recovered, &mut machine, || {
            TestStateMachine::new(workload)
        });
        // What recovery found intact is durable here, whether or not its write completed
        // before the crash (an in-flight write may land).
        for op in recovered.journal.base().max(1)..=recovered.journal.head() {
            let entry = recovered.journal.entry(op);
            if entry.present() {
                let checksum = entry.checksum().expect("present");
                self.checker.on_prepare_durable(replica, op, checksum);
            }
        }
        self.incarnation += 1;
        let seed = self.options.seed ^ self.incarnation.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut opened = Replica::open_from(
            self.config(replica),
            machine,
            durable,
            recovered,
            seed,
            checkpoint.as_ref(),
        );
        if let Some(segments) = self.segments.as_ref() {
            opened.set_log_start(segments[replica as usize].first_op());
        }
        if opened.commit_min() > 0 {
            self.stats.checkpoint_opens += 1;
        }

        opened
    }

    /// Saves a checkpoint of each running replica whose commit moved `checkpoint_interval`
    /// ops past its last one.
    fn save_checkpoints(&mut self) {
        let interval = self.options.checkpoint_interval;
        if interval == 0 {
            return;
        }
        for r in 0..self.options.replica_count as usize {
            let Some(replica) = self.replicas[r].as_ref() else {
                continue;
            };
            let last = self.checkpoints[r].as_ref().map_or(0, |(op, _)| *op);
            if replica.commit_min() < last + interval {
                continue;
            }
            let Some(checkpoint) = replica.checkpoint() else {
                continue;
            };
            let bytes = checkpoint.encode().expect("a small state");
            assert_eq!(Checkpoint::decode(&bytes).as_ref(), Ok(&checkpoint));
            self.checkpoints[r] = Some((checkpoint.op, bytes));
            self.stats.checkpoints += 1;
        }
    }

    /// What the slot disk holds for each op, read back as recovery sees it.
    fn read_slots(&mut self, replica: u8) -> Vec<(SlotRead, SlotRead)> {
        let disk = &mut self.disks[replica as usize];
        let slot_count = disk.slot_count().min(OPS_MAX + 1);
        let mut slots = Vec::with_capacity(slot_count as usize);
        for op in 1..slot_count {
            let header = match disk.read_slot(Zone::Header, op) {
                None => SlotRead::Empty,
                Some(bytes) if bytes.iter().all(|b| *b == 0) => SlotRead::Empty,
                Some(bytes) => match bytes
                    .get(..HEADER_SIZE)
                    .and_then(|raw| raw.try_into().ok())
                    .map(Header::decode)
                {
                    Some(Ok(header)) if header.op == op && header.command == Command::Prepare => {
                        SlotRead::Valid(header)
                    }
                    _ => SlotRead::Corrupt,
                },
            };
            let prepare = match disk.read_slot(Zone::Prepare, op) {
                None => SlotRead::Empty,
                Some(bytes) => match Message::decode(&bytes) {
                    Ok(message)
                        if message.header.op == op
                            && message.header.command == Command::Prepare =>
                    {
                        SlotRead::Valid(message.header)
                    }
                    _ => SlotRead::Corrupt,
                },
            };
            slots.push((header, prepare));
        }
        slots
    }

    fn execute(&mut self, replica: u8, actions: Vec<Action>) {
        for action in actions {
            self.count_compacted_read(replica, &action);
            match action {
                Action::InstallCheckpoint { checkpoint } => {
                    // As a host does: the checkpoint durable first, then the replica opens
                    // again from its disk (here a crash and a restart: what was in flight is
                    // lost, which a restart must survive anyway). Its open cuts the log.
                    assert!(self.segments.is_some(), "only segment logs drop prefixes");
                    let bytes = checkpoint.encode().expect("a small state");
                    self.checkpoints[replica as usize] = Some((checkpoint.op, bytes));
                    self.stats.transfers += 1;
                    self.crash(replica);
                    self.restart(replica);
                    return; // The old replica's other actions went with it.
                }
                Action::Send { to, message } => {
                    let to = match to {
                        Peer::Replica(r) => Node::Replica(r),
                        Peer::Client(id) => {
                            let index = (id - 1) as usize;
                            assert!(index < self.clients.len());
                            Node::Client(index)
                        }
                    };
                    self.network
                        .send(self.now, Node::Replica(replica), to, message.encode());
                }
                Action::WritePrepare { io, message } if self.segments.is_some() => {
                    let ready_at = self.now + self.disks[replica as usize].write_latency();
                    let segments = self.segments.as_mut().expect("segment mode");
                    segments[replica as usize].submit_write(io.0, ready_at, message);
                }
                Action::WritePrepare { io, message } => {
                    let op = message.header.op;
                    self.prepare_writes
                        .insert((replica, io.0), (op, message.header.checksum));
                    self.disks[replica as usize].submit_write(
                        self.now,
                        io.0,
                        WriteTarget::Slot {
                            zone: Zone::Prepare,
                            op,
                        },
                        message.encode(),
                    );
                }
                Action::WriteHeader { .. } if self.segments.is_some() => {
                    panic!("a segment journal has no header zone (redundant_headers is off)")
                }
                Action::WriteHeader { io, header } => {
                    let mut sector = header.encode().to_vec();
                    sector.resize(512, 0);
                    self.disks[replica as usize].submit_write(
                        self.now,
                        io.0,
                        WriteTarget::Slot {
                            zone: Zone::Header,
                            op: header.op,
                        },
                        sector,
                    );
                }
                Action::ReadPrepare { io, op } if self.segments.is_some() => {
                    let ready_at = self.now + self.disks[replica as usize].read_latency();
                    let segments = self.segments.as_mut().expect("segment mode");
                    segments[replica as usize].submit_read(io.0, ready_at, op);
                }
                Action::ReadPrepare { io, op } => {
                    self.disks[replica as usize].submit_read(self.now, io.0, op)
                }
                Action::ReadHeaders { io, op_min, op_max } if self.segments.is_some() => {
                    let ready_at = self.now + self.disks[replica as usize].read_latency();
                    let segments = self.segments.as_mut().expect("segment mode");
                    segments[replica as usize].submit_read_headers(io.0, ready_at, op_min, op_max);
                }
                Action::ReadHeaders { io, op_min, op_max } => {
                    self.disks[replica as usize].submit_read_headers(self.now, io.0, op_min, op_max)
                }
                Action::PersistState { io, state } => {
                    let sequence = self.superblock_sequence[replica as usize] + 1;
                    self.superblock_sequence[replica as usize] = sequence;
                    self.disks[replica as usize].submit_write(
                        self.now,
                        io.0,
                        WriteTarget::Superblock,
                        state.encode(sequence),
                    );
                }
            }
        }
    }

    /// Counts reads of compacted ops (below the replica's journal base), for the run's stats.
    fn count_compacted_read(&mut self, replica: u8, action: &Action) {
        let Some(base) = self.replicas[replica as usize]
            .as_ref()
            .map(|r| r.journal().base())
        else {
            return;
        };
        match action {
            Action::ReadHeaders { .. } => self.stats.compacted_header_reads += 1,
            Action::ReadPrepare { op, .. } if *op < base => self.stats.compacted_prepare_reads += 1,
            _ => {}
        }
    }

    fn alive(&self, replica: u8) -> bool {
        self.replicas[replica as usize].is_some() && !self.paused[replica as usize]
    }

    fn step_network(&mut self) -> Result<(), Failure> {
        for (from, to, frame) in self.network.deliver(self.now) {
            let Ok(message) = Message::decode(&frame) else {
                continue; // Corrupted in flight: checksums catch it, it counts as loss.
            };
            match to {
                Node::Replica(r) => {
                    if !self.alive(r) {
                        continue;
                    }
                    if message.header.command == Command::Request
                        && !matches!(from, Node::Client(_))
                    {
                        continue;
                    }
                    let actions = self.replicas[r as usize]
                        .as_mut()
                        .expect("alive")
                        .on_message(message);
                    self.execute(r, actions);
                }
                Node::Client(index) => {
                    if let Some(ack) = self.clients[index].on_message(&message) {
                        self.stats.acks += 1;
                        self.broker_checker.on_ack(&ack)?;
                        self.checker.on_ack(ack)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn step_disks(&mut self) {
        for r in 0..self.options.replica_count {
            if !self.alive(r) {
                continue;
            }
            let done = self.disks[r as usize].complete_writes(self.now);
            for io in done {
                if let Some((op, checksum)) = self.prepare_writes.remove(&(r, io)) {
                    self.checker.on_prepare_durable(r, op, checksum);
                }
                let actions = self.replicas[r as usize]
                    .as_mut()
                    .expect("alive")
                    .on_io_complete(IoId(io), Completion::Written);
                self.execute(r, actions);
            }
            let reads = self.disks[r as usize].complete_reads(self.now);
            for (io, op, bytes) in reads {
                let message =
                    bytes
                        .and_then(|bytes| Message::decode(&bytes).ok())
                        .filter(|message| {
                            message.header.op == op && message.header.command == Command::Prepare
                        });
                let actions = self.replicas[r as usize]
                    .as_mut()
                    .expect("alive")
                    .on_io_complete(IoId(io), Completion::Read(message));
                self.execute(r, actions);
            }
            for (io, slots) in self.disks[r as usize].complete_header_reads(self.now) {
                // Ascending from the highest op down to the first slot that does not decode
                // as that op's prepare header.
                let mut headers: Vec<Header> = slots
                    .iter()
                    .map_while(|(op, bytes)| {
                        let raw: &[u8; HEADER_SIZE] = bytes.get(..HEADER_SIZE)?.try_into().ok()?;
                        Header::decode(raw)
                            .ok()
                            .filter(|h| h.op == *op && h.command == Command::Prepare)
                    })
                    .collect();
                headers.reverse();
                let actions = self.replicas[r as usize]
                    .as_mut()
                    .expect("alive")
                    .on_io_complete(IoId(io), Completion::Headers(headers));
                self.execute(r, actions);
            }
            let (completed, cuts) = match self.segments.as_mut() {
                Some(segments) => {
                    let completed = segments[r as usize].step(self.now);
                    (completed, segments[r as usize].take_cuts())
                }
                None => (Vec::new(), Vec::new()),
            };
            for after_op in cuts {
                self.checker.on_prepares_cut(r, after_op);
            }
            for done in completed {
                if let Some((op, checksum)) = done.durable {
                    self.checker.on_prepare_durable(r, op, checksum);
                }
                let actions = self.replicas[r as usize]
                    .as_mut()
                    .expect("alive")
                    .on_io_complete(IoId(done.io), done.completion);
                self.execute(r, actions);
            }
        }
    }

    fn check(&mut self) -> Result<(), Failure> {
        for r in 0..self.options.replica_count {
            let Some(replica) = self.replicas[r as usize].as_mut() else {
                continue;
            };
            let committed = replica.take_committed();
            self.checker.check_commits(r, &committed)?;
            self.checker
                .check_state(r, &replica.state_machine().history)?;
            self.checker.check_view(r, replica.view())?;
            if let Some(partition) = replica.state_machine().partition.as_ref() {
                self.broker_checker.check_state(r, partition.state())?;
            }
            self.stats.view_max = self.stats.view_max.max(replica.view());
            self.stats.journal_base_max = self.stats.journal_base_max.max(replica.journal().base());
            self.stats.commit_max = self.stats.commit_max.max(replica.commit_min());
        }
        Ok(())
    }

    fn tick_faults(&mut self) {
        let o = &self.options;
        let (crash_p, restart_p, pause_p, unpause_p) = (
            o.crash_probability,
            o.restart_probability,
            o.pause_probability,
            o.unpause_probability,
        );
        for r in 0..self.options.replica_count {
            let index = r as usize;
            match &self.replicas[index] {
                Some(replica) => {
                    let crash = if replica.io_pending() {
                        (crash_p * 10.0).min(1.0)
                    } else {
                        crash_p
                    };
                    if self.prng.chance(crash) {
                        self.crash(r);
                    } else if self.paused[index] {
                        if self.prng.chance(unpause_p) {
                            self.paused[index] = false;
                        }
                    } else if self.prng.chance(pause_p) {
                        self.paused[index] = true;
                        self.stats.pauses += 1;
                    }
                    // Damage to durable records, where the atlas allows it.
                    let damage_p = self.options.storage.write_fault / 10.0;
                    let log_cut = self
                        .segments
                        .as_ref()
                        .is_some_and(|segments| segments[index].first_op() > 1);
                    if let Some((_, bytes)) = self.checkpoints[index].as_mut() {
                        // A checkpoint is a cache of work while the log holds every op:
                        // damage only costs a longer open. A replica whose log starts later
                        // needs it (a node keeps it in two files; one survives).
                        if !log_cut && self.prng.chance(damage_p) {
                            let at = self.prng.below(bytes.len() as u64) as usize;
                            bytes[at] ^= 1 << self.prng.below(8);
                        }
                    }
                    if self.replicas[index].is_some()
                        && self.prng.chance(self.options.prefix_cut_probability)
                    {
                        self.cut_prefix(r);
                    }
                    if let Some(segments) = self.segments.as_mut() {
                        if self.replicas[index].is_some() && self.prng.chance(damage_p) {
                            let disk = &self.disks[index];
                            segments[index]
                                .inject_fault(&mut self.prng, |op| disk.allows_fault(op));
                        }
                    }
                }
                None => {
                    if self.prng.chance(restart_p) {
                        self.restart(r);
                    }
                }
            }
        }
    }

    /// The replica's process is gone: unsynced writes are lost or torn.
    fn crash(&mut self, replica: u8) {
        let index = replica as usize;
        self.replicas[index] = None;
        self.paused[index] = false;
        self.disks[index].crash();
        if let Some(segments) = self.segments.as_mut() {
            segments[index].crash();
        }
        self.prepare_writes.retain(|(r, _), _| *r as usize != index);
        self.stats.crashes += 1;
    }

    /// Fault-free retention on one replica: its log drops the whole segments at or below
    /// both its saved checkpoint (one that restores) and its journal's base.
    fn cut_prefix(&mut self, replica: u8) {
        let index = replica as usize;
        let Some(running) = self.replicas[index].as_ref() else {
            return;
        };
        let mut machine = TestStateMachine::new(self.options.workload);
        let checkpoint_op = self.checkpoints[index]
            .as_ref()
            .and_then(|(_, bytes)| Checkpoint::decode(bytes).ok())
            .filter(|c| checkpoint_restores(c, self.options.clients_max, &mut machine))
            .map_or(0, |c| c.op);
        let keep_op = checkpoint_op.min(running.journal().base());
        let Some(segments) = self.segments.as_mut() else {
            return;
        };
        let before = segments[index].first_op();
        let first_op = segments[index].cut_prefix(keep_op);
        if first_op > before {
            self.stats.prefix_cuts += 1;
            self.replicas[index]
                .as_mut()
                .expect("running")
                .set_log_start(first_op);
        }
    }

    fn restart(&mut self, replica: u8) {
        let opened = self.open_replica(replica);
        self.replicas[replica as usize] = Some(opened);
        self.checker.on_restart(replica);
        self.broker_checker.on_restart(replica);
        self.stats.restarts += 1;
    }

    fn tick(&mut self, workload: bool) -> Result<(), Failure> {
        self.now += 1;
        self.step_network()?;
        self.step_disks();
        let realtime = self.now * TICK_NANOS;
        for r in 0..self.options.replica_count {
            if self.alive(r) {
                let actions = self.replicas[r as usize]
                    .as_mut()
                    .expect("alive")
                    .on_tick(realtime);
                self.execute(r, actions);
            }
        }
        let replica_count = self.options.replica_count;
        for index in 0..self.clients.len() {
            let mut sends = self.clients[index].tick(self.now);
            if workload && self.clients[index].idle() && self.prng.chance(REQUEST_PROBABILITY) {
                sends.extend(self.clients[index].start_request(self.now, &mut self.prng));
            }
            for (to, message) in sends {
                assert!(to < replica_count);
                self.network.send(
                    self.now,
                    Node::Client(index),
                    Node::Replica(to),
                    message.encode(),
                );
            }
        }
        let nodes: Vec<Node> = (0..replica_count).map(Node::Replica).collect();
        self.network.tick(self.now, &nodes);
        self.check()?;
        self.save_checkpoints();
        if self.faults {
            self.tick_faults();
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        if self.clients.iter().any(|c| !c.idle()) {
            return false;
        }
        let replicas: Vec<&Replica<TestStateMachine>> = self.replicas.iter().flatten().collect();
        if replicas.len() != self.options.replica_count as usize {
            return false;
        }
        let primary = replicas
            .iter()
            .find(|r| r.status() == Status::Normal && r.is_primary());
        let Some(primary) = primary else {
            return false;
        };
        replicas.iter().all(|r| {
            r.status() == Status::Normal
                && r.view() == primary.view()
                && r.commit_min() == primary.commit_max()
                && r.head() == primary.head()
        }) && primary.commit_max() == primary.head()
    }

    /// Runs the whole seed: safety phase, then liveness phase, then final checks.
    pub fn run(&mut self) -> Result<(), Failure> {
        while self.stats.acks < self.options.requests_max
            && self.now < self.options.ticks_max_requests
        {
            self.tick(true)?;
        }
        // Liveness: heal the network, stop new faults, bring every replica back.
        self.faults = false;
        self.network.heal();
        for disk in &mut self.disks {
            disk.faults_enabled = false;
        }
        for r in 0..self.options.replica_count {
            self.paused[r as usize] = false;
            if self.replicas[r as usize].is_none() {
                self.restart(r);
            }
        }
        let liveness_start = self.now;
        while !self.converged() {
            if self.now - liveness_start > self.options.ticks_max_convergence {
                let summary: Vec<String> = self
                    .replicas
                    .iter()
                    .flatten()
                    .map(|r| {
                        // The last committed op and the first uncommitted ones, each with the
                        // low 16 bits of its checksum, its slot state and `!` if faulty.
                        let uncommitted: Vec<String> = (r.commit_min().max(1)..=r.head())
                            .take(9)
                            .map(|op| {
                                let e = r.journal().entry(op);
                                format!(
                                    "{op}:{}{:?}{}",
                                    e.header
                                        .map(|h| format!("{:04x}v{}", h.checksum as u16, h.view))
                                        .unwrap_or_else(|| "-".to_string()),
                                    e.state,
                                    if e.faulty { "!" } else { "" }
                                )
                            })
                            .collect();
                        format!(
                            "r{} {:?} view {} log_view {} head {} commit {}/{} [{}] pipeline {:?}",
                            r.replica(),
                            r.status(),
                            r.view(),
                            r.log_view(),
                            r.head(),
                            r.commit_min(),
                            r.commit_max(),
                            uncommitted.join(" "),
                            r.pipeline_summary()
                        )
                    })
                    .collect();
                let busy = self.clients.iter().filter(|c| !c.idle()).count();
                return Err(Failure::Liveness(format!(
                    "the healed cluster did not converge within {} ticks ({busy} clients waiting): {}",
                    self.options.ticks_max_convergence,
                    summary.join("; ")
                )));
            }
            self.tick(false)?;
        }
        self.stats.liveness_ticks = self.now - liveness_start;
        self.stats.ticks = self.now;
        let commit_mins: Vec<(u8, u64)> = self
            .replicas
            .iter()
            .flatten()
            .map(|r| (r.replica(), r.commit_min()))
            .collect();
        self.checker.check_final(&commit_mins)?;
        let partitions: Vec<(u8, &galgo_replica::partition::PartitionState)> = self
            .replicas
            .iter()
            .flatten()
            .filter_map(|r| {
                let partition = r.state_machine().partition.as_ref()?;
                Some((r.replica(), partition.state()))
            })
            .collect();
        let indeterminate: Vec<BrokerRequest> = self
            .clients
            .iter()
            .filter_map(|c| c.indeterminate())
            .collect();
        self.broker_checker
            .check_final(&partitions, &indeterminate)?;
        Ok(())
    }

    pub fn network_stats(&self) -> &crate::network::NetworkStats {
        &self.network.stats
    }

    /// Broker workload: offset stores accepted, and group stores refused as stale.
    pub fn broker_store_stats(&self) -> Option<(u64, u64)> {
        (self.options.workload == crate::options::Workload::Broker).then_some((
            self.broker_checker.stores_accepted,
            self.broker_checker.stale_refused,
        ))
    }

    /// In segment-journal mode: records damaged by faults, and writes torn by crashes.
    /// Records damaged by injected faults, records torn on crash, and bytes of zeros written
    /// ahead of the logs' tails, over every replica's segment journal.
    pub fn segment_fault_stats(&self) -> Option<(u64, u64, u64)> {
        let segments = self.segments.as_ref()?;
        let damaged = segments.iter().map(|s| s.faults_injected).sum();
        let torn = segments.iter().map(|s| s.stats().torn).sum();
        let zeros = segments.iter().map(|s| s.zeros_ahead.get()).sum();
        Some((damaged, torn, zeros))
    }

    pub fn disk_stats(&self) -> Vec<crate::disk::DiskStats> {
        self.disks.iter().map(|d| d.stats.clone()).collect()
    }
}
