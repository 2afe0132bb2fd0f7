//! Hand-built scenarios for the replica: a tiny cluster with instant in-memory disks and a
//! network the test controls message by message (drop, hold, replay, forge). Each test drives
//! one situation the issue names and checks the outcome the protocol promises.

use std::collections::{BTreeMap, VecDeque};

use galgo_consensus::header::operation;
use galgo_consensus::journal::SlotState;
use galgo_consensus::recovery::{
    recover_journal, recover_journal_from, RecoveredJournal, RecoveryBugs, SlotRead,
};
use galgo_consensus::{
    Action, Bugs, Checkpoint, Command, Completion, Config, DurableState, Header, Journal, Message,
    Peer, Replica, StateMachine, Status, Timeouts, JOURNAL_KEEP_OPS_MIN,
};

const CLUSTER: u128 = 7;
const GROUP: u64 = 1;
const OPS_MAX: u64 = 1024;
const CLIENT: u128 = 42;
/// Bound on messages delivered by one `settle` call.
const DELIVERIES_MAX: usize = 100_000;

/// Counts executions per (session, request) so a test can prove at-most-once execution.
#[derive(Default)]
struct CountingStateMachine {
    applied: Vec<(u64, Vec<u8>)>,
}

impl StateMachine for CountingStateMachine {
    fn apply(&mut self, op: u64, _timestamp: u64, _operation: u8, body: &[u8]) -> Vec<u8> {
        self.applied.push((op, body.to_vec()));
        body.to_vec()
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        for (op, body) in &self.applied {
            bytes.extend_from_slice(&op.to_le_bytes());
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(body);
        }
        Some(bytes)
    }

    fn restore(&mut self, mut snapshot: &[u8]) -> bool {
        let mut applied = Vec::new();
        while !snapshot.is_empty() {
            if snapshot.len() < 12 {
                return false;
            }
            let op = u64::from_le_bytes(snapshot[..8].try_into().unwrap());
            let len = u32::from_le_bytes(snapshot[8..12].try_into().unwrap()) as usize;
            let Some(body) = snapshot.get(12..12 + len) else {
                return false;
            };
            applied.push((op, body.to_vec()));
            snapshot = &snapshot[12 + len..];
        }
        self.applied = applied;
        true
    }
}

/// One replica's disk: prepare and header zones by op, plus the durable view state.
#[derive(Default, Clone)]
struct MemoryDisk {
    prepares: BTreeMap<u64, Message>,
    headers: BTreeMap<u64, Header>,
    corrupt_prepares: Vec<u64>,
    durable: Option<DurableState>,
    /// The lowest op held (0 or 1: the whole log); below it everything was dropped.
    log_start: u64,
}

impl MemoryDisk {
    /// Drops every op below `op` (retention, or a log cut for an installed checkpoint).
    fn drop_below(&mut self, op: u64) {
        self.prepares.retain(|o, _| *o >= op);
        self.headers.retain(|o, _| *o >= op);
        self.corrupt_prepares.retain(|o| *o >= op);
        self.log_start = self.log_start.max(op);
    }
}

#[derive(Clone, Debug)]
struct Envelope {
    from: Peer,
    to: Peer,
    message: Message,
}

/// What the network does with one message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Deliver,
    Drop,
    /// Deliver it, and a second copy right after (a duplicate).
    Duplicate,
}

type Filter = Box<dyn FnMut(&Envelope) -> Verdict>;

struct Cluster {
    replica_count: u8,
    replicas: Vec<Option<Replica<CountingStateMachine>>>,
    disks: Vec<MemoryDisk>,
    network: VecDeque<Envelope>,
    filter: Filter,
    /// Every message a replica ever sent, for tests that replay or inspect them.
    sent: Vec<Envelope>,
    replies: Vec<Message>,
    bugs: Bugs,
    /// `Config::return_leadership` of replicas started from now on.
    return_leadership: bool,
    /// The checkpoint each replica opens from at its next start.
    checkpoints: Vec<Option<Checkpoint>>,
    /// Checkpoints installed from a peer (state transfer).
    installs: u64,
}

impl Cluster {
    fn new(replica_count: u8, bugs: Bugs) -> Cluster {
        let mut cluster = Cluster {
            replica_count,
            replicas: (0..replica_count).map(|_| None).collect(),
            disks: vec![MemoryDisk::default(); replica_count as usize],
            network: VecDeque::new(),
            filter: Box::new(|_| Verdict::Deliver),
            sent: Vec::new(),
            replies: Vec::new(),
            bugs,
            return_leadership: false,
            checkpoints: vec![None; replica_count as usize],
            installs: 0,
        };
        for replica in 0..replica_count {
            cluster.start(replica);
        }
        cluster
    }

    fn config(&self, replica: u8) -> Config {
        Config {
            cluster: CLUSTER,
            group: GROUP,
            replica_count: self.replica_count,
            replica,
            placement_offset: 0,
            pipeline_max: 4,
            request_queue_max: 16,
            clients_max: 4,
            ops_max: OPS_MAX,
            journal_keep_ops: JOURNAL_KEEP_OPS_MIN,
            redundant_headers: true,
            return_leadership: self.return_leadership,
            timeouts: Timeouts::default(),
            bugs: self.bugs,
        }
    }

    /// Opens a replica from its disk, running recovery as a real host would.
    fn start(&mut self, replica: u8) {
        let disk = &self.disks[replica as usize];
        let durable = disk.durable.clone().unwrap_or_else(DurableState::initial);
        let head = disk
            .prepares
            .keys()
            .chain(disk.headers.keys())
            .max()
            .copied()
            .unwrap_or(0);
        // A log cut below a checkpoint starts at that checkpoint's op.
        let checkpoint_base = self.checkpoints[replica as usize]
            .as_ref()
            .filter(|c| disk.log_start > 1 && c.op + 1 >= disk.log_start)
            .map(|c| c.op_header);
        let first_op = checkpoint_base.map_or(1, |base| base.op + 1);
        let slots: Vec<(SlotRead, SlotRead)> = (first_op..=head)
            .map(|op| {
                let header = disk
                    .headers
                    .get(&op)
                    .map_or(SlotRead::Empty, |h| SlotRead::Valid(*h));
                let prepare = if disk.corrupt_prepares.contains(&op) {
                    SlotRead::Corrupt
                } else {
                    disk.prepares
                        .get(&op)
                        .map_or(SlotRead::Empty, |m| SlotRead::Valid(m.header))
                };
                (header, prepare)
            })
            .collect();
        let recovered: RecoveredJournal = if let Some(base) = checkpoint_base {
            recover_journal_from(base, OPS_MAX, &durable, &slots, RecoveryBugs::default())
        } else if head == 0 {
            RecoveredJournal {
                journal: Journal::new(Header::root(CLUSTER, GROUP), OPS_MAX),
                header_fixes: Vec::new(),
            }
        } else {
            recover_journal(
                Header::root(CLUSTER, GROUP),
                OPS_MAX,
                &durable,
                &slots,
                RecoveryBugs::default(),
            )
        };
        let mut opened = Replica::open_from(
            self.config(replica),
            CountingStateMachine::default(),
            durable,
            recovered,
            u64::from(replica) + 1,
            self.checkpoints[replica as usize].as_ref(),
        );
        opened.set_log_start(disk.log_start.max(1));
        let actions = opened.on_tick(0);
        self.replicas[replica as usize] = Some(opened);
        self.execute(replica, actions);
    }

    /// A crash: the process is gone; its disk stays as it is (all writes were durable).
    fn crash(&mut self, replica: u8) {
        self.replicas[replica as usize] = None;
        self.network.retain(|e| e.to != Peer::Replica(replica));
    }

    fn replica(&self, replica: u8) -> &Replica<CountingStateMachine> {
        self.replicas[replica as usize].as_ref().expect("running")
    }

    fn execute(&mut self, replica: u8, actions: Vec<Action>) {
        let mut pending = VecDeque::from(actions);
        let mut steps = 0;
        while let Some(action) = pending.pop_front() {
            steps += 1;
            assert!(steps < DELIVERIES_MAX, "runaway action loop");
            let disk = &mut self.disks[replica as usize];
            let (io, completion) = match action {
                Action::Send { to, message } => {
                    let envelope = Envelope {
                        from: Peer::Replica(replica),
                        to,
                        message,
                    };
                    self.sent.push(envelope.clone());
                    match to {
                        Peer::Client(_) => self.replies.push(envelope.message),
                        Peer::Replica(_) => self.network.push_back(envelope),
                    }
                    continue;
                }
                Action::WritePrepare { io, message } => {
                    disk.corrupt_prepares.retain(|op| *op != message.header.op);
                    disk.prepares.insert(message.header.op, message);
                    (io, Completion::Written)
                }
                Action::WriteHeader { io, header } => {
                    disk.headers.insert(header.op, header);
                    (io, Completion::Written)
                }
                Action::ReadPrepare { io, op } => {
                    let read = if disk.corrupt_prepares.contains(&op) {
                        None
                    } else {
                        disk.prepares.get(&op).cloned()
                    };
                    (io, Completion::Read(read))
                }
                Action::ReadHeaders { io, op_min, op_max } => {
                    // The longest run ending at op_max whose headers are on the disk.
                    let mut headers: Vec<Header> = (op_min..=op_max)
                        .rev()
                        .map_while(|op| disk.headers.get(&op).copied())
                        .collect();
                    headers.reverse();
                    (io, Completion::Headers(headers))
                }
                Action::PersistState { io, state } => {
                    disk.durable = Some(state);
                    (io, Completion::Written)
                }
                Action::InstallCheckpoint { checkpoint } => {
                    // As a host does: the checkpoint saved, the log cut below it, the replica
                    // opened again from its disk.
                    let op = checkpoint.op;
                    if disk.prepares.get(&op).map(|m| m.header.checksum)
                        != Some(checkpoint.op_checksum)
                    {
                        disk.drop_below(op + 1);
                    }
                    self.checkpoints[replica as usize] = Some(checkpoint);
                    self.installs += 1;
                    self.crash(replica);
                    self.start(replica);
                    return;
                }
            };
            let more = self.replicas[replica as usize]
                .as_mut()
                .expect("running")
                .on_io_complete(io, completion);
            pending.extend(more);
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        let Peer::Replica(to) = envelope.to else {
            return;
        };
        let Some(replica) = self.replicas[to as usize].as_mut() else {
            return;
        };
        let actions = replica.on_message(envelope.message);
        self.execute(to, actions);
    }

    /// Delivers queued messages through the filter until the network is empty.
    fn settle(&mut self) {
        let mut delivered = 0;
        while let Some(envelope) = self.network.pop_front() {
            delivered += 1;
            assert!(delivered < DELIVERIES_MAX, "the network never settles");
            match (self.filter)(&envelope) {
                Verdict::Drop => {}
                Verdict::Deliver => self.deliver(envelope),
                Verdict::Duplicate => {
                    self.deliver(envelope.clone());
                    self.deliver(envelope);
                }
            }
        }
    }

    /// Runs `ticks` ticks, settling the network after each.
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for replica in 0..self.replica_count {
                if let Some(running) = self.replicas[replica as usize].as_mut() {
                    let actions = running.on_tick(0);
                    self.execute(replica, actions);
                }
            }
            self.settle();
        }
    }

    fn primary(&self) -> Option<u8> {
        self.replicas
            .iter()
            .flatten()
            .find(|r| r.status() == Status::Normal && r.is_primary())
            .map(|r| r.replica())
    }

    /// Sends a client request to every running replica (a client that does not know the
    /// primary), as the first attempt or a retry.
    fn send_request(&mut self, request: &Message) {
        for replica in 0..self.replica_count {
            if self.replicas[replica as usize].is_some() {
                self.network.push_back(Envelope {
                    from: Peer::Client(CLIENT),
                    to: Peer::Replica(replica),
                    message: request.clone(),
                });
            }
        }
        self.settle();
    }

    fn reply_to(&self, request: &Message) -> Option<&Message> {
        self.replies.iter().find(|r| {
            r.header.command == Command::Reply && r.header.context == request.header.checksum
        })
    }

    /// Registers a client; returns its session.
    fn register_client(&mut self, client: u128) -> u64 {
        let mut header = Header::new(Command::Request, CLUSTER, GROUP);
        header.client = client;
        header.operation = operation::REGISTER;
        header.parent = 99;
        let register = Message::new(header, Vec::new());
        for _ in 0..50 {
            self.send_request(&register);
            if let Some(reply) = self.reply_to(&register) {
                return reply.header.session;
            }
            self.run(10);
        }
        panic!("register never completed");
    }

    fn register(&mut self) -> u64 {
        self.register_client(CLIENT)
    }
}

fn request(session: u64, number: u32, body: &[u8]) -> Message {
    client_request(CLIENT, session, number, body)
}

fn client_request(client: u128, session: u64, number: u32, body: &[u8]) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER, GROUP);
    header.client = client;
    header.operation = operation::APPLICATION_MIN;
    header.session = session;
    header.request = number;
    Message::new(header, body.to_vec())
}

/// Applied application bodies of one replica, in op order.
fn applied(cluster: &Cluster, replica: u8) -> Vec<Vec<u8>> {
    cluster
        .replica(replica)
        .state_machine()
        .applied
        .iter()
        .filter(|(_, body)| !body.is_empty())
        .map(|(_, body)| body.clone())
        .collect()
}

fn started(replica_count: u8) -> Cluster {
    let mut cluster = Cluster::new(replica_count, Bugs::none());
    cluster.run(200);
    assert!(cluster.primary().is_some(), "the cluster elects a primary");
    cluster
}

#[test]
fn a_fresh_cluster_elects_a_primary_and_commits() {
    let mut cluster = started(3);
    let session = cluster.register();
    let first = request(session, 1, b"one");
    cluster.send_request(&first);
    cluster.run(20);
    assert_eq!(
        cluster.reply_to(&first).map(|r| r.body.to_vec()),
        Some(b"one".to_vec())
    );
    for replica in 0..3 {
        assert_eq!(applied(&cluster, replica), vec![b"one".to_vec()]);
    }
}

#[test]
fn view_change_with_prepares_in_flight_keeps_every_acknowledged_request() {
    let mut cluster = started(3);
    let clients: Vec<(u128, u64)> = (1..=4u128)
        .map(|client| (client, cluster.register_client(client)))
        .collect();
    let primary = cluster.primary().expect("primary");
    // Backups get prepares but their PrepareOks are lost: the pipeline fills up.
    cluster.filter = Box::new(|e| {
        if e.message.header.command == Command::PrepareOk {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    let requests: Vec<Message> = clients
        .iter()
        .map(|(client, session)| client_request(*client, *session, 1, &[*client as u8; 3]))
        .collect();
    for request in &requests {
        cluster.send_request(request);
    }
    cluster.run(3);
    let primary_state = cluster.replica(primary);
    assert_eq!(
        primary_state.head() - primary_state.commit_min(),
        4,
        "four prepares in flight"
    );
    assert!(requests.iter().all(|r| cluster.reply_to(r).is_none()));
    // The primary dies with them in flight; the network heals; clients retry.
    cluster.crash(primary);
    cluster.filter = Box::new(|_| Verdict::Deliver);
    cluster.run(600);
    let new_primary = cluster.primary().expect("a new primary");
    assert_ne!(new_primary, primary);
    for request in &requests {
        for _ in 0..40 {
            if cluster.reply_to(request).is_some() {
                break;
            }
            cluster.send_request(request);
            cluster.run(10);
        }
        assert!(cluster.reply_to(request).is_some());
    }
    // The in-flight prepares survived the view change: each executed exactly once, in the order
    // the old primary prepared them, on both survivors.
    let expected: Vec<Vec<u8>> = requests.iter().map(|r| r.body.to_vec()).collect();
    for replica in (0..3).filter(|r| *r != primary) {
        assert_eq!(applied(&cluster, replica), expected);
    }
}

#[test]
fn duplicated_and_replayed_messages_execute_once() {
    let mut cluster = started(3);
    let session = cluster.register();
    // Every message between replicas arrives twice.
    cluster.filter = Box::new(|_| Verdict::Duplicate);
    let requests: Vec<Message> = (1..=5)
        .map(|n| request(session, n, format!("d{n}").as_bytes()))
        .collect();
    for request in &requests {
        for _ in 0..20 {
            cluster.send_request(request);
            cluster.run(5);
            if cluster.reply_to(request).is_some() {
                break;
            }
        }
        assert!(cluster.reply_to(request).is_some());
    }
    // Replay the whole history of replica messages once more, then an old request and the
    // latest one.
    let history: Vec<Envelope> = cluster.sent.clone();
    for envelope in history {
        if matches!(envelope.to, Peer::Replica(_)) {
            cluster.network.push_back(envelope);
        }
    }
    cluster.settle();
    let replies_before = cluster.replies.len();
    cluster.send_request(&requests[0]);
    cluster.send_request(&requests[4]);
    cluster.run(20);
    let expected: Vec<Vec<u8>> = requests.iter().map(|r| r.body.to_vec()).collect();
    for replica in 0..3 {
        assert_eq!(applied(&cluster, replica), expected, "replica {replica}");
    }
    // The latest request got its cached reply, not a second execution; the older one got
    // nothing (its client has moved on).
    let late: Vec<&Message> = cluster.replies[replies_before..].iter().collect();
    assert!(late
        .iter()
        .any(|r| r.header.context == requests[4].header.checksum));
    assert!(!late
        .iter()
        .any(|r| r.header.context == requests[0].header.checksum));
}

/// A primary cut off from its backups has an op waiting for a quorum; a replayed PrepareOk
/// for that op from an older view (for another prepare then) arrives. Returns whether the
/// primary committed the op.
fn old_view_prepare_ok_commits(bugs: Bugs) -> bool {
    let mut cluster = Cluster::new(3, bugs);
    cluster.run(200);
    assert!(cluster.primary().is_some(), "the cluster elects a primary");
    let session = cluster.register();
    let primary = cluster.primary().expect("primary");
    let view = cluster.replica(primary).view();
    assert!(view >= 1);
    // The backups are cut off from the primary: nothing they send reaches it.
    cluster.filter = Box::new(move |e| {
        if e.to == Peer::Replica(primary) && matches!(e.from, Peer::Replica(_)) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    cluster.send_request(&request(session, 1, b"x"));
    cluster.run(3);
    let op = cluster.replica(primary).head();
    let commit_before = cluster.replica(primary).commit_min();
    assert_eq!(commit_before, op - 1, "the op waits for a quorum");
    let backup = (primary + 1) % 3;
    let mut replayed = Header::new(Command::PrepareOk, CLUSTER, GROUP);
    replayed.replica = backup;
    replayed.view = view - 1;
    replayed.op = op;
    replayed.context = 12345;
    cluster.deliver(Envelope {
        from: Peer::Replica(backup),
        to: Peer::Replica(primary),
        message: Message::new(replayed, Vec::new()),
    });
    cluster.replica(primary).commit_min() > commit_before
}

#[test]
fn prepare_ok_from_an_older_view_is_not_counted() {
    assert!(
        !old_view_prepare_ok_commits(Bugs::none()),
        "an old-view PrepareOk must not count toward the quorum"
    );
}

#[cfg(feature = "bug-injection")]
#[test]
fn the_injected_bug_counts_the_old_view_prepare_ok() {
    // With the bug injected the same scenario commits without a quorum: the test above can fail.
    assert!(old_view_prepare_ok_commits(Bugs::inject(
        galgo_consensus::Bug::CountOldViewPrepareOks
    )));
}

#[test]
fn a_primary_hands_over_leadership_before_it_stops() {
    let mut cluster = started(3);
    let session = cluster.register();
    let old = cluster.primary().expect("primary");
    let view = cluster.replica(old).view();
    let first = request(session, 1, b"before");
    cluster.send_request(&first);
    cluster.run(5);
    assert!(cluster.reply_to(&first).is_some());
    let actions = cluster.replicas[old as usize]
        .as_mut()
        .expect("running")
        .hand_over_leadership();
    cluster.execute(old, actions);
    cluster.settle();
    // Well inside the backups' heartbeat timeout: the view moved because the primary asked.
    cluster.run(20);
    let new = cluster.primary().expect("a new primary");
    assert_ne!(new, old);
    assert!(cluster.replica(new).view() > view);
    cluster.crash(old);
    let second = request(session, 2, b"after");
    cluster.send_request(&second);
    cluster.run(5);
    assert!(cluster.reply_to(&second).is_some());
    let expected = vec![b"before".to_vec(), b"after".to_vec()];
    assert_eq!(applied(&cluster, new), expected);
    // A backup asked to hand over does nothing.
    let backup = (0..3).find(|r| *r != new && *r != old).expect("a backup");
    let view_now = cluster.replica(backup).view();
    let actions = cluster.replicas[backup as usize]
        .as_mut()
        .expect("running")
        .hand_over_leadership();
    assert!(actions.is_empty());
    assert_eq!(cluster.replica(backup).view(), view_now);
}

/// A backup cut off for a while times out again and again (its heartbeat timeout backs off
/// to many times its base). Once it hears its primary again it must wait only the base
/// timeout to notice the primary's next failure: a view change needs its vote, so a
/// backed-off backup would hold the whole group up (found by deploy/chaos: 4–8 s failovers
/// after earlier faults).
#[test]
fn a_backup_that_heard_its_primary_again_notices_the_next_failure_in_one_timeout() {
    let mut cluster = started(3);
    let session = cluster.register();
    let primary = cluster.primary().expect("primary");
    let isolated = (primary + 1) % 3;
    cluster.filter = Box::new(move |envelope: &Envelope| {
        let touches =
            envelope.to == Peer::Replica(isolated) || envelope.from == Peer::Replica(isolated);
        if touches {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    // Long enough for every backoff step of its heartbeat timeout (base 50 ticks).
    cluster.run(4000);
    assert_eq!(
        cluster.primary(),
        Some(primary),
        "the majority kept its primary"
    );
    cluster.filter = Box::new(|_| Verdict::Deliver);
    let first = request(session, 1, b"healed");
    cluster.send_request(&first);
    // Past two start-view-change windows: the votes it cast while cut off are forgotten.
    let window = Timeouts::default().start_view_change_window;
    cluster.run(2 * window + 100);
    assert!(cluster.reply_to(&first).is_some());
    assert_eq!(cluster.replica(isolated).status(), Status::Normal);
    let view = cluster.replica(isolated).view();

    cluster.crash(primary);
    let heartbeat = Timeouts::default().normal_heartbeat;
    let mut ticks = 0;
    while cluster.primary().is_none_or(|p| p == primary) {
        assert!(
            ticks < heartbeat * 3,
            "no new primary {ticks} ticks after the primary failed (heartbeat timeout {heartbeat})"
        );
        cluster.run(1);
        ticks += 1;
    }
    assert!(cluster.replica(isolated).view() > view);
}

/// Leadership returns to the preferred replica (0) while writes flow (its acks say it is
/// alive and caught up), and never moves to it while it is down, even with the group idle: a
/// commit that stands still must not make a dead replica look caught up (found by
/// deploy/chaos: the metadata group handed to a paused node again and again).
#[test]
fn leadership_returns_to_a_live_preferred_replica_and_never_to_a_dead_one() {
    let mut cluster = Cluster::new(3, Bugs::none());
    cluster.return_leadership = true;
    for replica in 0..3 {
        cluster.start(replica);
    }
    cluster.run(200);
    let session = cluster.register();
    let mut number = 0;
    let mut write_for = |cluster: &mut Cluster, ticks: u64| {
        for _ in 0..ticks / 10 {
            number += 1;
            cluster.send_request(&request(session, number, b"w"));
            cluster.run(10);
        }
    };
    write_for(&mut cluster, 400);
    assert_eq!(
        cluster.primary(),
        Some(0),
        "leadership returned to the preferred replica"
    );

    cluster.crash(0);
    cluster.run(400);
    let primary = cluster.primary().expect("a new primary");
    assert_ne!(primary, 0);
    // Replica 0 comes back and acks a few writes (caught up, in this view), then dies again
    // before leadership returned, and the group goes idle: its last ack stays "caught up".
    cluster.start(0);
    write_for(&mut cluster, 60);
    assert_eq!(cluster.primary(), Some(primary), "not back yet");
    cluster.crash(0);
    let view = cluster.replica(primary).view();
    cluster.run(2000);
    assert_eq!(
        cluster.replica(primary).view(),
        view,
        "the view moved on while the preferred replica was down"
    );
    assert_eq!(cluster.primary(), Some(primary));

    cluster.start(0);
    write_for(&mut cluster, 600);
    assert_eq!(
        cluster.primary(),
        Some(0),
        "leadership back once it returned"
    );
}

#[test]
fn lagging_replica_elected_primary_keeps_committed_ops() {
    let mut cluster = started(3);
    let session = cluster.register();
    let primary = cluster.primary().expect("primary");
    // The replica that leads the next view misses every prepare.
    let next = (cluster.replica(primary).view() + 1) % 3;
    let lagging = next as u8;
    assert_ne!(lagging, primary);
    cluster.filter = Box::new(move |e| {
        if e.to == Peer::Replica(lagging) && e.message.header.command == Command::Prepare {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    let requests: Vec<Message> = (1..=3)
        .map(|n| request(session, n, format!("l{n}").as_bytes()))
        .collect();
    for request in &requests {
        cluster.send_request(request);
        cluster.run(5);
        assert!(cluster.reply_to(request).is_some());
    }
    let committed = cluster.replica(primary).commit_min();
    assert!(cluster.replica(lagging).commit_min() < committed);
    // The primary dies; the lagging replica leads the next view.
    cluster.crash(primary);
    cluster.filter = Box::new(|_| Verdict::Deliver);
    cluster.run(600);
    assert_eq!(cluster.primary(), Some(lagging));
    assert!(cluster.replica(lagging).commit_min() >= committed);
    let expected: Vec<Vec<u8>> = requests.iter().map(|r| r.body.to_vec()).collect();
    assert_eq!(applied(&cluster, lagging), expected);
}

#[test]
fn old_primary_with_the_only_corrupt_copy_of_an_uncommitted_prepare() {
    let mut cluster = started(3);
    let session = cluster.register();
    let primary = cluster.primary().expect("primary");
    // The primary prepares a request no backup ever receives.
    cluster.filter = Box::new(move |e| {
        if e.message.header.command == Command::Prepare {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    let lost = request(session, 1, b"lost");
    cluster.send_request(&lost);
    cluster.run(3);
    let op = cluster.replica(primary).head();
    assert!(cluster.reply_to(&lost).is_none());
    // It crashes, and its only copy of that prepare is corrupt on disk.
    cluster.crash(primary);
    cluster.disks[primary as usize].corrupt_prepares.push(op);
    cluster.filter = Box::new(|_| Verdict::Deliver);
    cluster.start(primary);
    {
        let restarted = cluster.replica(primary);
        assert!(
            restarted.journal().entry(op).faulty,
            "recovery marks it faulty, not absent"
        );
        assert_eq!(restarted.journal().entry(op).state, SlotState::Missing);
    }
    cluster.run(800);
    // A nack quorum (the two backups never had it) truncates it; the cluster goes on.
    assert!(cluster.primary().is_some());
    let retry = request(session, 1, b"lost");
    for _ in 0..40 {
        if cluster.reply_to(&retry).is_some() {
            break;
        }
        cluster.send_request(&retry);
        cluster.run(10);
    }
    assert!(cluster.reply_to(&retry).is_some());
    for replica in 0..3 {
        assert_eq!(
            applied(&cluster, replica),
            vec![b"lost".to_vec()],
            "replica {replica}"
        );
    }
}

/// Commits `count` requests numbered from `first`, one at a time.
fn commit_requests(cluster: &mut Cluster, session: u64, first: u32, count: u32) {
    for number in first..first + count {
        let request = request(session, number, format!("request {number}").as_bytes());
        for _ in 0..50 {
            cluster.send_request(&request);
            if cluster.reply_to(&request).is_some() {
                break;
            }
            cluster.run(10);
        }
        assert!(
            cluster.reply_to(&request).is_some(),
            "request {number} committed"
        );
    }
}

#[test]
fn a_replica_opened_from_its_checkpoint_applies_only_the_ops_after_it() {
    let mut cluster = Cluster::new(3, Bugs::none());
    cluster.run(5);
    let session = cluster.register();
    commit_requests(&mut cluster, session, 1, 5);
    cluster.run(20);
    let checkpoint = cluster.replica(1).checkpoint().expect("a checkpoint");
    assert!(
        checkpoint.op >= 6,
        "the register and five requests: op {}",
        checkpoint.op
    );
    commit_requests(&mut cluster, session, 6, 3);
    cluster.run(20);
    cluster.crash(1);
    cluster.checkpoints[1] = Some(checkpoint.clone());
    cluster.start(1);
    assert!(
        cluster.replica(1).commit_min() >= checkpoint.op,
        "ops up to the checkpoint count as applied at open"
    );
    commit_requests(&mut cluster, session, 9, 2);
    // Restored state plus the ops after the checkpoint, each once: the same as a replica that
    // applied everything.
    assert_replica_1_applied_as_replica_0(&mut cluster, 10);
}

/// After the network settles, replica 1 has applied exactly what replica 0 has: `count` ops.
fn assert_replica_1_applied_as_replica_0(cluster: &mut Cluster, count: usize) {
    cluster.run(50);
    let expected = &cluster.replica(0).state_machine().applied;
    assert_eq!(expected.len(), count);
    assert_eq!(&cluster.replica(1).state_machine().applied, expected);
}

#[test]
fn a_checkpoint_of_another_log_is_ignored() {
    let mut cluster = Cluster::new(3, Bugs::none());
    cluster.run(5);
    let session = cluster.register();
    commit_requests(&mut cluster, session, 1, 4);
    cluster.run(20);
    let mut forged = cluster.replica(1).checkpoint().expect("a checkpoint");
    // The op's checksum names another prepare, and the state carries an op never committed:
    // used, it would show in the applied list.
    forged.op_checksum ^= 1;
    forged.machine = CountingStateMachine {
        applied: vec![(1, b"never committed".to_vec())],
    }
    .snapshot()
    .unwrap();
    cluster.crash(1);
    cluster.checkpoints[1] = Some(forged);
    cluster.start(1);
    assert_eq!(
        cluster.replica(1).commit_min(),
        0,
        "applies its log from op 1"
    );
    commit_requests(&mut cluster, session, 5, 1);
    assert_replica_1_applied_as_replica_0(&mut cluster, 5);
}

#[test]
fn a_replica_that_lost_its_disk_catches_up_from_the_others_compacted_logs() {
    let mut cluster = Cluster::new(3, Bugs::none());
    cluster.run(5);
    let session = cluster.register();
    commit_requests(&mut cluster, session, 1, 5);
    cluster.crash(2);
    cluster.disks[2] = MemoryDisk::default();
    let total = 4 * JOURNAL_KEEP_OPS_MIN as u32;
    commit_requests(&mut cluster, session, 6, total - 5);
    cluster.run(20);
    for replica in [0, 1] {
        let journal = cluster.replica(replica).journal();
        let commit_min = cluster.replica(replica).commit_min();
        assert!(
            journal.base() + JOURNAL_KEEP_OPS_MIN <= commit_min,
            "replica {replica} compacted: base {} commit {commit_min}",
            journal.base()
        );
        assert!(
            journal.held() as u64 <= 3 * JOURNAL_KEEP_OPS_MIN,
            "replica {replica} holds {} entries",
            journal.held()
        );
    }
    let sent_before = cluster.sent.len();
    cluster.start(2);
    cluster.run(400);
    assert_eq!(applied(&cluster, 2).len(), total as usize);
    assert_eq!(applied(&cluster, 2), applied(&cluster, 0));
    // Headers of compacted ops came from the others' disks.
    let base_min = [0, 1]
        .iter()
        .map(|r| cluster.replica(*r).journal().base())
        .min()
        .expect("two replicas");
    let from_disk = cluster.sent[sent_before..]
        .iter()
        .filter(|e| {
            e.to == Peer::Replica(2)
                && e.message.header.command == Command::Headers
                && e.message.header.op < base_min
        })
        .count();
    assert!(from_disk > 0, "no headers of compacted ops were served");
}

/// Commits requests `first..first + count` carrying `size` bytes each.
fn commit_large_requests(cluster: &mut Cluster, session: u64, first: u32, count: u32, size: usize) {
    for number in first..first + count {
        let mut body = format!("request {number} ").into_bytes();
        body.resize(size, number as u8);
        let request = request(session, number, &body);
        for _ in 0..50 {
            cluster.send_request(&request);
            if cluster.reply_to(&request).is_some() {
                break;
            }
            cluster.run(10);
        }
        assert!(cluster.reply_to(&request).is_some(), "request {number}");
    }
}

/// Replicas 0 and 1 keep a checkpoint of their commit and drop their logs below their
/// journals' bases (retention): nobody can repair those ops any more.
fn drop_prefixes_of_replicas_0_and_1(cluster: &mut Cluster) {
    for replica in [0u8, 1] {
        let running = cluster.replica(replica);
        let checkpoint = running.checkpoint().expect("a checkpoint");
        let base = running.journal().base();
        assert!(base > 1, "replica {replica} compacted its journal");
        cluster.checkpoints[replica as usize] = Some(checkpoint);
        cluster.disks[replica as usize].drop_below(base + 1);
        cluster.replicas[replica as usize]
            .as_mut()
            .expect("running")
            .set_log_start(base + 1);
    }
}

#[test]
fn a_replica_behind_every_peers_log_start_catches_up_by_state_transfer_in_chunks() {
    let mut cluster = Cluster::new(3, Bugs::none());
    cluster.run(5);
    let session = cluster.register();
    commit_requests(&mut cluster, session, 1, 5);
    cluster.crash(2);
    cluster.disks[2] = MemoryDisk::default();
    // 3 × 64 requests of 12 KiB: a state of over 2 MiB, sent in 1 MiB chunks.
    let total = 3 * JOURNAL_KEEP_OPS_MIN as u32;
    commit_large_requests(&mut cluster, session, 6, total - 5, 12 * 1024);
    cluster.run(20);
    drop_prefixes_of_replicas_0_and_1(&mut cluster);
    let sent_before = cluster.sent.len();
    cluster.start(2);
    cluster.run(400);
    assert_eq!(cluster.installs, 1, "one checkpoint installed");
    let chunks = cluster.sent[sent_before..]
        .iter()
        .filter(|e| e.to == Peer::Replica(2) && e.message.header.command == Command::Checkpoint)
        .count();
    assert!(chunks >= 3, "the state came in {chunks} chunks");
    // Whatever it lacks below the checkpoint's op no peer holds: given up, not asked for
    // forever (its journal's base moved past it).
    assert!(cluster.replica(2).journal().base() > 0);
    assert_eq!(applied(&cluster, 2).len(), total as usize);
    assert_eq!(applied(&cluster, 2), applied(&cluster, 0));
    // It goes on with the group: new requests reach all three.
    commit_requests(&mut cluster, session, total + 1, 3);
    cluster.run(50);
    assert_eq!(applied(&cluster, 2), applied(&cluster, 0));
    assert_eq!(applied(&cluster, 2).len(), total as usize + 3);
}

/// Replica 2, asked to start a transfer from replica 0 (a `LogStart` far above its commit),
/// then handed `chunk` as replica 0's answer.
fn offer_checkpoint_chunk(cluster: &mut Cluster, chunk: Message) {
    let view = cluster.replica(2).view();
    let mut log_start = Header::new(Command::LogStart, CLUSTER, GROUP);
    log_start.replica = 0;
    log_start.view = view;
    log_start.op = 1000;
    log_start.commit = 999;
    cluster.deliver(Envelope {
        from: Peer::Replica(0),
        to: Peer::Replica(2),
        message: Message::new(log_start, Vec::new()),
    });
    cluster.deliver(Envelope {
        from: Peer::Replica(0),
        to: Peer::Replica(2),
        message: chunk,
    });
}

#[test]
fn a_checkpoint_chunk_that_does_not_match_its_encoding_is_never_installed() {
    let mut cluster = started(3);
    let session = cluster.register();
    commit_requests(&mut cluster, session, 1, 3);
    cluster.run(20);
    let mut checkpoint = cluster.replica(0).checkpoint().expect("a checkpoint");
    // A state far ahead of replica 2, so that it would take it.
    checkpoint.op += 100;
    checkpoint.op_header.op = checkpoint.op;
    checkpoint.op_header.set_checksums(&[]);
    checkpoint.op_checksum = checkpoint.op_header.checksum;
    let encoded = checkpoint.encode().unwrap();
    let view = cluster.replica(2).view();
    let chunk = |op_checksum: u128, body: Vec<u8>| {
        let mut header = Header::new(Command::Checkpoint, CLUSTER, GROUP);
        header.replica = 0;
        header.view = view;
        header.op = checkpoint.op;
        header.parent = op_checksum;
        header.context = encoded.len() as u128;
        Message::new(header, body)
    };
    // The op's checksum the sender named is not the encoding's.
    let misnamed = chunk(checkpoint.op_checksum ^ 1, encoded.clone());
    // A flipped byte inside the encoding (the message's own checksum is sound).
    let mut flipped = encoded.clone();
    flipped[encoded.len() / 2] ^= 0x40;
    let damaged = chunk(checkpoint.op_checksum, flipped);
    for bad in [misnamed, damaged] {
        offer_checkpoint_chunk(&mut cluster, bad);
        assert_eq!(cluster.installs, 0);
        assert!(!cluster.replica(2).installing());
        cluster.run(5); // A repair round: the stalled transfer is dropped.
        cluster.run(Timeouts::default().repair);
    }
    // The same chunk, sound: installed (so the two above were refused for their faults).
    let sound = chunk(checkpoint.op_checksum, encoded.clone());
    offer_checkpoint_chunk(&mut cluster, sound);
    assert_eq!(cluster.installs, 1);
}
