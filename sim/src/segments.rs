//! Segment-journal mode: a replica's journal is Galgo's real one, a `SegmentJournal` on a
//! partition log, on `MemoryDisk` (the storage crate's simulated disk). Its prepare writes
//! and reads are futures polled each tick (the memory disk completes everything after a
//! yield, so polling until nothing moves finishes them); completions reach the replica only
//! once their drawn latency has passed. A crash drops every future mid-flight and loses what
//! the memory disk had not synced. Faults on durable data are targeted by the fault atlas:
//! a byte of a record the atlas allows is flipped, which its checksum catches (the op turns
//! faulty and is repaired from peers).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use galgo_consensus::durable::DurableState;
use galgo_consensus::prng::Prng;
use galgo_consensus::recovery::{RecoveredJournal, RecoveryBugs};
use galgo_consensus::{Completion, Header, Message};
use galgo_replica::journal::{no_messages, CheckpointStart, SegmentJournal, WriteOutcome};
use galgo_storage::{LogConfig, MemoryDisk};

/// Polls of every live future per tick, at most (each round moves every future one step).
const POLL_ROUNDS_MAX: usize = 10_000;

type Journal = SegmentJournal<'static, MemoryDisk>;

enum Outcome {
    /// A prepare write: its op and checksum, and whether it is durable.
    Write {
        op: u64,
        checksum: u128,
        written: bool,
    },
    Read(Option<Box<Message>>),
    Headers(Vec<galgo_consensus::Header>),
    /// Work the host does on its own (zeros ahead of the log's tail): nothing to report.
    Background,
}

struct PendingIo {
    io: u64,
    ready_at: u64,
    future: Option<Pin<Box<dyn Future<Output = Outcome>>>>,
    outcome: Option<Outcome>,
}

/// One replica's segment journal and its in-flight I/O.
pub struct SegmentStore {
    /// Leaked so the journal can borrow it for the whole run; emptied on drop.
    disk: &'static MemoryDisk,
    journal: Option<Rc<Journal>>,
    ios: Vec<PendingIo>,
    pub faults_injected: u64,
    /// Bytes of zeros written ahead of the log's tail (`prepare_ahead`).
    pub zeros_ahead: Rc<std::cell::Cell<u64>>,
    segment_size: u64,
    /// The log's first op as last seen: the disk keeps it while the replica is down.
    first_op: u64,
}

impl Drop for SegmentStore {
    fn drop(&mut self) {
        self.ios.clear();
        self.journal = None;
        self.disk.clear();
    }
}

/// What `step` hands the simulator: the replica's completion and, for a durable write, the
/// op and checksum the durability checker records.
pub struct Completed {
    pub io: u64,
    pub completion: Completion,
    pub durable: Option<(u64, u128)>,
}

fn poll_once<T>(future: &mut Pin<Box<dyn Future<Output = T>>>) -> Option<T> {
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// Runs a future that only waits on the memory disk to completion.
fn run_to_end<T>(future: impl Future<Output = T>) -> T {
    let mut future: Pin<Box<dyn Future<Output = T> + '_>> = Box::pin(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..POLL_ROUNDS_MAX * 100 {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
    panic!("a memory-disk operation never finished");
}

impl SegmentStore {
    pub fn new(seed: u64, crash_tear: f64, segment_size: u64) -> SegmentStore {
        let disk: &'static MemoryDisk = Box::leak(Box::new(MemoryDisk::new(seed)));
        disk.faults.borrow_mut().crash_tear = crash_tear;
        SegmentStore {
            disk,
            journal: None,
            ios: Vec::new(),
            zeros_ahead: Rc::new(std::cell::Cell::new(0)),
            faults_injected: 0,
            segment_size,
            first_op: 1,
        }
    }

    /// Opens the journal from the memory disk (after a crash, what it kept) and the durable
    /// view state; returns the recovered journal for `Replica::open`.
    pub fn open(
        &mut self,
        durable: &DurableState,
        root: Header,
        ops_max: u64,
        recovery_bugs: RecoveryBugs,
        checkpoint: Option<CheckpointStart>,
    ) -> RecoveredJournal {
        assert!(self.journal.is_none() && self.ios.is_empty());
        let config = LogConfig {
            segment_size: self.segment_size,
            ..LogConfig::new("journal")
        };
        let (journal, recovered) = run_to_end(SegmentJournal::open(
            self.disk,
            config,
            durable,
            root,
            ops_max,
            no_messages,
            recovery_bugs,
            checkpoint,
        ))
        .unwrap_or_else(|error| panic!("the segment journal does not open: {error}"));
        self.first_op = journal.log().first_op();
        self.journal = Some(Rc::new(journal));
        recovered
    }

    fn journal(&self) -> Rc<Journal> {
        self.journal.clone().expect("open")
    }

    pub fn submit_write(&mut self, io: u64, ready_at: u64, message: Message) {
        let journal = self.journal();
        let (op, checksum) = (message.header.op, message.header.checksum);
        let ended = Rc::new(std::cell::Cell::new(false));
        let write_ended = ended.clone();
        let future = async move {
            let written = match journal.write_prepare(message).await {
                Ok(WriteOutcome::Written) => true,
                Ok(WriteOutcome::Abandoned) => false,
                Err(error) => panic!("a prepare write failed: {error}"),
            };
            write_ended.set(true);
            Outcome::Write {
                op,
                checksum,
                written,
            }
        };
        self.push(io, ready_at, Box::pin(future));
        // As a node does once a write's completion is on its way: zeros ahead of the tail
        // while the log is idle, as work of its own that reports nothing (a crash then leaves
        // them past the last record for recovery to cut, and the next write may find the log
        // taken by them).
        let journal = self.journal();
        let zeros_ahead = self.zeros_ahead.clone();
        let zeros = async move {
            // Polled again on every step until the write has ended.
            std::future::poll_fn(|_| {
                if ended.get() {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
            let written = journal.log().prepare_ahead().await;
            zeros_ahead.set(zeros_ahead.get() + written);
            Outcome::Background
        };
        self.push(io, ready_at, Box::pin(zeros));
    }

    pub fn submit_read(&mut self, io: u64, ready_at: u64, op: u64) {
        let journal = self.journal();
        let future = async move { Outcome::Read(journal.read_prepare(op).await.map(Box::new)) };
        self.push(io, ready_at, Box::pin(future));
    }

    pub fn submit_read_headers(&mut self, io: u64, ready_at: u64, op_min: u64, op_max: u64) {
        let journal = self.journal();
        let future = async move { Outcome::Headers(journal.read_headers(op_min, op_max).await) };
        self.push(io, ready_at, Box::pin(future));
    }

    fn push(&mut self, io: u64, ready_at: u64, future: Pin<Box<dyn Future<Output = Outcome>>>) {
        self.ios.push(PendingIo {
            io,
            ready_at,
            future: Some(future),
            outcome: None,
        });
    }

    /// Moves every future as far as it goes, then returns the completions whose latency has
    /// passed, in the order they were issued.
    pub fn step(&mut self, now: u64) -> Vec<Completed> {
        for _ in 0..POLL_ROUNDS_MAX {
            let mut moved = false;
            for pending in &mut self.ios {
                if let Some(future) = pending.future.as_mut() {
                    if let Some(outcome) = poll_once(future) {
                        pending.outcome = Some(outcome);
                        pending.future = None;
                        moved = true;
                    }
                }
            }
            if !moved {
                break;
            }
        }
        let mut completed = Vec::new();
        let mut index = 0;
        while index < self.ios.len() {
            let pending = &self.ios[index];
            if pending.outcome.is_none() || pending.ready_at > now {
                index += 1;
                continue;
            }
            let pending = self.ios.remove(index);
            let outcome = pending.outcome.expect("checked");
            completed.push(match outcome {
                Outcome::Background => continue, // Nothing to report.
                Outcome::Write {
                    op,
                    checksum,
                    written,
                } => Completed {
                    io: pending.io,
                    completion: if written {
                        Completion::Written
                    } else {
                        Completion::Abandoned
                    },
                    durable: written.then_some((op, checksum)),
                },
                Outcome::Read(message) => Completed {
                    io: pending.io,
                    completion: Completion::Read(message.map(|m| *m)),
                    durable: None,
                },
                Outcome::Headers(headers) => Completed {
                    io: pending.io,
                    completion: Completion::Headers(headers),
                    durable: None,
                },
            });
        }
        completed
    }

    /// The first op the log holds (1 until a prefix is cut), also while the replica is down.
    pub fn first_op(&self) -> u64 {
        self.first_op
    }

    /// Fault-free retention: deletes the oldest sealed segments whose every op is at or below
    /// `keep_op` (the replica keeps a checkpoint of it, and it is at or below its journal's
    /// base). Skipped while the log is busy. Returns the log's first op afterwards.
    pub fn cut_prefix(&mut self, keep_op: u64) -> u64 {
        let Some(journal) = self.journal.clone() else {
            return 1;
        };
        let log = journal.log();
        let segments_max = log.segments().len();
        for _ in 0..segments_max {
            let oldest = log.segments()[0];
            if !oldest.sealed || oldest.op_end > keep_op + 1 {
                break;
            }
            match run_to_end(log.delete_oldest_segment()) {
                Ok(Some(deleted)) => assert_eq!(deleted.base_op, oldest.base_op),
                Ok(None) | Err(galgo_storage::StorageError::Busy) => break,
                Err(error) => panic!("deleting a segment failed: {error}"),
            }
        }
        self.first_op = log.first_op();
        self.first_op
    }

    /// The process is gone: futures stop mid-flight, unsynced writes are lost or torn.
    pub fn crash(&mut self) {
        self.ios.clear();
        self.journal = None;
        self.disk.crash();
    }

    /// Flips a byte of a durable record the atlas allows damage in (`allowed(op)`).
    pub fn inject_fault(&mut self, prng: &mut Prng, allowed: impl Fn(u64) -> bool) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let log = journal.log();
        let (first_op, op_end) = (log.first_op(), log.op_end());
        if op_end <= first_op {
            return;
        }
        let op = first_op + prng.below(op_end - first_op);
        if !allowed(op) {
            return;
        }
        let Ok(entry) = run_to_end(log.entry(op)) else {
            return;
        };
        let Some(segment) = log.segments().into_iter().rev().find(|s| s.base_op <= op) else {
            return;
        };
        let offset = 64 + prng.below(u64::from(entry.length).max(1));
        self.disk.corrupt(
            &format!("journal/{:020}.log", segment.base_op),
            entry.position + offset,
        );
        self.faults_injected += 1;
    }

    /// Ops after which the journal cut its log since the last call.
    pub fn take_cuts(&self) -> Vec<u64> {
        self.journal
            .as_ref()
            .map_or_else(Vec::new, |j| j.take_cuts())
    }

    pub fn stats(&self) -> galgo_storage::memory_disk::FaultStats {
        self.disk.stats.borrow().clone()
    }
}
