//! The consensus core on a partition log: a one-replica group whose journal is a
//! `SegmentJournal` on the in-memory disk, its view state in a superblock on the same disk,
//! takes requests, crashes (losing unsynced writes), reopens from both, and goes on with every acknowledged
//! request applied exactly once, in order.

use std::collections::VecDeque;

use galgo_consensus::header::operation;
use galgo_consensus::recovery::RecoveryBugs;
use galgo_consensus::{
    Action, Bugs, Command, Completion, Config, Header, Message, Peer, Replica, StateMachine,
    Timeouts,
};
use galgo_replica::journal::{no_messages, SegmentJournal, WriteOutcome};
use galgo_replica::view_state::ViewStateStore;
use galgo_storage::file_disk::block_on;
use galgo_storage::{LogConfig, MemoryDisk};

const CLUSTER: u128 = 3;
const GROUP: u64 = 5;
const OPS_MAX: u64 = 100_000;
const CLIENT: u128 = 77;

#[derive(Default)]
struct Bodies {
    applied: Vec<Vec<u8>>,
}

impl StateMachine for Bodies {
    fn apply(&mut self, _op: u64, _timestamp: u64, operation: u8, body: &[u8]) -> Vec<u8> {
        if operation >= operation::APPLICATION_MIN {
            self.applied.push(body.to_vec());
        }
        body.to_vec()
    }
}

fn config() -> Config {
    Config {
        cluster: CLUSTER,
        group: GROUP,
        replica_count: 1,
        replica: 0,
        placement_offset: 0,
        pipeline_max: 8,
        request_queue_max: 64,
        clients_max: 4,
        ops_max: OPS_MAX,
        journal_keep_ops: galgo_consensus::JOURNAL_KEEP_OPS_MIN,
        redundant_headers: false,
        return_leadership: false,
        timeouts: Timeouts::default(),
        bugs: Bugs::none(),
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_size: 4096,
        ..LogConfig::new("group-5")
    }
}

/// A host: runs the replica's actions against the journal until none is left.
struct Host<'d> {
    replica: Replica<Bodies>,
    journal: SegmentJournal<'d, MemoryDisk>,
    /// The durable view state, in a superblock on the same disk.
    view_state: ViewStateStore<'d, MemoryDisk>,
    replies: Vec<Message>,
}

impl<'d> Host<'d> {
    async fn open(disk: &'d MemoryDisk) -> Host<'d> {
        let (view_state, durable) = ViewStateStore::open(disk, "group-5.superblock")
            .await
            .unwrap();
        let root = Header::root(CLUSTER, GROUP);
        let (journal, recovered) = SegmentJournal::open(
            disk,
            log_config(),
            &durable,
            root,
            OPS_MAX,
            no_messages,
            RecoveryBugs::default(),
            None,
        )
        .await
        .unwrap();
        let mut replica = Replica::open(config(), Bodies::default(), durable, recovered, 1);
        let actions = replica.on_tick(0);
        let mut host = Host {
            replica,
            journal,
            view_state,
            replies: Vec::new(),
        };
        host.run(actions).await;
        host
    }

    async fn run(&mut self, actions: Vec<Action>) {
        let mut pending = VecDeque::from(actions);
        let mut steps = 0;
        while let Some(action) = pending.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "runaway actions");
            let (io, completion) = match action {
                Action::Send { to, message } => {
                    assert_eq!(
                        to,
                        Peer::Client(CLIENT),
                        "one replica sends to clients only"
                    );
                    self.replies.push(message);
                    continue;
                }
                Action::WritePrepare { io, message } => {
                    let outcome = self.journal.write_prepare(message).await.unwrap();
                    let completion = match outcome {
                        WriteOutcome::Written => Completion::Written,
                        WriteOutcome::Abandoned => Completion::Abandoned,
                    };
                    (io, completion)
                }
                Action::WriteHeader { .. } => panic!("no header zone: redundant_headers is off"),
                Action::InstallCheckpoint { .. } => {
                    panic!("a group of one has no peer to send a checkpoint")
                }
                Action::ReadPrepare { io, op } => {
                    (io, Completion::Read(self.journal.read_prepare(op).await))
                }
                Action::ReadHeaders { io, op_min, op_max } => (
                    io,
                    Completion::Headers(self.journal.read_headers(op_min, op_max).await),
                ),
                Action::PersistState { io, state } => {
                    self.view_state.persist(&state).await.unwrap();
                    (io, Completion::Written)
                }
            };
            pending.extend(self.replica.on_io_complete(io, completion));
        }
    }

    async fn tick(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let actions = self.replica.on_tick(0);
            self.run(actions).await;
        }
    }

    /// Sends `request` until its reply comes (a bounded number of ticks).
    async fn call(&mut self, request: &Message) -> Message {
        for _ in 0..200 {
            let actions = self.replica.on_message(request.clone());
            self.run(actions).await;
            if let Some(reply) = self.replies.iter().find(|r| {
                r.header.command == Command::Reply && r.header.context == request.header.checksum
            }) {
                return reply.clone();
            }
            self.tick(5).await;
        }
        panic!("no reply to request {}", request.header.request);
    }
}

fn register() -> Message {
    let mut header = Header::new(Command::Request, CLUSTER, GROUP);
    header.client = CLIENT;
    header.operation = operation::REGISTER;
    Message::new(header, Vec::new())
}

fn request(session: u64, number: u32) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER, GROUP);
    header.client = CLIENT;
    header.operation = operation::APPLICATION_MIN;
    header.session = session;
    header.request = number;
    Message::new(header, format!("request {number}").into_bytes())
}

#[test]
fn a_replica_on_a_segment_journal_survives_crashes_without_losing_an_acknowledged_request() {
    let disk = MemoryDisk::new(11);
    disk.faults.borrow_mut().crash_tear = 0.5;
    block_on(async {
        let mut host = Host::open(&disk).await;
        host.tick(20).await;
        let session = host.call(&register()).await.header.session;
        let mut acknowledged: Vec<Vec<u8>> = Vec::new();
        let mut number = 1;
        for round in 0..4 {
            for _ in 0..25 {
                let request = request(session, number);
                host.call(&request).await;
                acknowledged.push(request.body.to_vec());
                number += 1;
            }
            assert_eq!(
                host.replica.state_machine().applied,
                acknowledged,
                "round {round}"
            );
            // Crash: unsynced writes are lost or torn; the log and the superblock stay.
            drop(host);
            disk.crash();
            host = Host::open(&disk).await;
            host.tick(50).await;
            // The reopened replica replays its log: every acknowledged request, once, in order.
            assert_eq!(
                host.replica.state_machine().applied,
                acknowledged,
                "after crash {round}"
            );
        }
        assert!(
            host.journal.log().segments().len() > 3,
            "the log rolled segments"
        );
        assert_eq!(host.replica.commit_min(), host.journal.log().op_end() - 1);
    });
}
