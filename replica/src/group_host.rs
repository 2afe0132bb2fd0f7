//! `GroupHost`: runs one VSR group's consensus core on a node. Everything that happens to the
//! group (a tick, a message from a peer or a client, an I/O completion) is an event in one
//! bounded inbox, handled in order by one task; the core's actions go out to the message bus,
//! to spawned journal and superblock tasks, or to the clients' reply queue. Time enters with
//! each tick event (its timer, or its node's, reads the wall clock), never inside the core.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use galgo_consensus::{
    Action, Checkpoint, Completion, IoId, Message, Peer, Replica, StateMachine, Status,
};
use galgo_storage::{Disk, StorageError};

use crate::bus::Bus;
use crate::checkpoint_store::CheckpointStore;
use crate::journal::{SegmentJournal, WriteOutcome};
use crate::read_ahead::{ReadAhead, ReadAheadBudget};
use crate::view_state::ViewStateStore;

pub const TICK: Duration = Duration::from_millis(10);
/// How long an installed checkpoint's save waits for a save in flight, in ticks (30 s).
const INSTALL_WAIT_TICKS_MAX: u32 = 3_000;
/// Events waiting for the group's task, at most; a message that finds the inbox full is
/// dropped (VSR retransmits), an I/O completion never is (it is counted in the bound).
pub const INBOX_MAX: usize = 65_536;

pub enum Event {
    /// A tick, at `realtime` (ns since the epoch: the wall clock enters here).
    Tick {
        realtime: u64,
    },
    Message(Message),
    Completed(IoId, Completion),
    /// The node is stopping: a primary hands its leadership over to the next view.
    HandOver,
}

pub struct Inbox {
    events: VecDeque<Event>,
    waiter: Option<Waker>,
    pub dropped: u64,
    /// Set when the host is dropped: the group's task ends.
    closed: bool,
}

impl Inbox {
    /// Ends the group's task: queued events are dropped and no more are taken.
    fn close(&mut self) {
        self.closed = true;
        self.events.clear();
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }

    fn push(&mut self, event: Event) {
        if self.closed {
            return;
        }
        let completion = matches!(event, Event::Completed(..));
        if self.events.len() >= INBOX_MAX && !completion {
            self.dropped += 1;
            return;
        }
        self.events.push_back(event);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }
}

/// Where a group's ticks come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticks {
    /// Its own timer task.
    Own,
    /// Whoever hosts it delivers `Event::Tick` every `TICK` (a node: one timer per shard for
    /// all its groups).
    Delivered,
}

/// Takes each reply to a client (the node hands it to the client's connection).
pub type ReplySink = Rc<dyn Fn(Message)>;

pub struct GroupHost<S: StateMachine, D: Disk + 'static> {
    pub replica: RefCell<Replica<S>>,
    journal: Rc<SegmentJournal<'static, D>>,
    /// Taken by the one persist in flight (the core never issues two).
    view_state: Rc<RefCell<Option<ViewStateStore<'static, D>>>>,
    bus: Rc<Bus>,
    /// The node of each replica index of this group (`Peer::Replica(i)` is `members[i]`).
    members: Vec<u8>,
    /// Its own `Rc`, so the group's task can wait on it without keeping the host alive: a
    /// host dropped by its node stops before the next event.
    inbox: Rc<RefCell<Inbox>>,
    /// Where replies to clients go; without one they wait in `replies`.
    reply_sink: Option<ReplySink>,
    /// Replies to clients when there is no sink (whoever drains it).
    pub replies: RefCell<VecDeque<Message>>,
    pub replies_max: usize,
    pub replies_dropped: std::cell::Cell<u64>,
    /// Where and how often the group saves checkpoints (none: it never does).
    checkpointing: RefCell<Option<Checkpointing<D>>>,
    /// A partition's read-ahead for its consumers (none: polls read every record themselves).
    read_ahead: RefCell<Option<Rc<ReadAhead>>>,
    /// The core installed a checkpoint from a peer and it is saved: whoever hosts the group
    /// must stop it and open it again from its files (`reopen_wanted`).
    reopen_wanted: std::cell::Cell<bool>,
    /// `Replica::replicas_commit_min` after the last event (read by a `RetentionView` while
    /// the replica is borrowed).
    applied_everywhere: Rc<std::cell::Cell<Option<u64>>>,
    /// A pass deleting segments below the partition's first offset is under way.
    pruning: std::cell::Cell<bool>,
    /// An installed checkpoint's save is under way (disk work: see `io_idle`).
    installing: Rc<std::cell::Cell<bool>>,
}

/// A group's checkpoints: the store (taken by the one save in flight) and when the next is due.
struct Checkpointing<D: Disk + 'static> {
    disk: &'static D,
    store: Rc<RefCell<Option<CheckpointStore>>>,
    interval: u64,
    /// Bytes of committed prepares after which a save is due whatever their count.
    interval_bytes: u64,
    /// The commit at which the next save starts (moved on at each start, so a failing disk
    /// is tried once per interval, not on every tick).
    next_due: std::cell::Cell<u64>,
    /// Bytes of the prepares committed since the last save started.
    bytes_since: std::cell::Cell<u64>,
}

impl<S: StateMachine + 'static, D: Disk + 'static> GroupHost<S, D> {
    /// Starts the group's task and its ticker on the current monoio runtime.
    pub fn start(
        replica: Replica<S>,
        journal: SegmentJournal<'static, D>,
        view_state: ViewStateStore<'static, D>,
        bus: Rc<Bus>,
        members: Vec<u8>,
        reply_sink: Option<ReplySink>,
        ticks: Ticks,
    ) -> Rc<GroupHost<S, D>> {
        assert_eq!(members.len(), usize::from(replica.replica_count()));
        let host = Rc::new(GroupHost {
            replica: RefCell::new(replica),
            journal: Rc::new(journal),
            view_state: Rc::new(RefCell::new(Some(view_state))),
            bus,
            members,
            reply_sink,
            inbox: Rc::new(RefCell::new(Inbox {
                events: VecDeque::new(),
                waiter: None,
                dropped: 0,
                closed: false,
            })),
            replies: RefCell::new(VecDeque::new()),
            replies_max: 4096,
            replies_dropped: std::cell::Cell::new(0),
            checkpointing: RefCell::new(None),
            read_ahead: RefCell::new(None),
            reopen_wanted: std::cell::Cell::new(false),
            applied_everywhere: Rc::new(std::cell::Cell::new(None)),
            pruning: std::cell::Cell::new(false),
            installing: Rc::new(std::cell::Cell::new(false)),
        });
        if ticks == Ticks::Own {
            let ticker = Rc::downgrade(&host);
            monoio::spawn(async move {
                loop {
                    monoio::time::sleep(TICK).await;
                    let Some(host) = ticker.upgrade() else {
                        return;
                    };
                    host.deliver(Event::Tick {
                        realtime: realtime_now(),
                    });
                }
            });
        }
        let (runner, inbox) = (Rc::downgrade(&host), host.inbox.clone());
        monoio::spawn(async move {
            loop {
                let Some(event) = next_event(&inbox).await else {
                    return;
                };
                let Some(host) = runner.upgrade() else {
                    return;
                };
                host.handle(event);
            }
        });
        host
    }

    /// Saves a checkpoint into `store` each time the group's commit moved `interval` ops, or
    /// `interval_bytes` of prepares, past the last one (on a tick, the save in its own task).
    /// An open reads every op above the checkpoint whole, so the bytes bound what a restart
    /// reads when ops are large.
    pub fn keep_checkpoints(
        &self,
        disk: &'static D,
        store: CheckpointStore,
        interval: u64,
        interval_bytes: u64,
    ) {
        assert!(interval > 0 && interval_bytes > 0);
        let next_due = store.op() + interval;
        *self.checkpointing.borrow_mut() = Some(Checkpointing {
            disk,
            store: Rc::new(RefCell::new(Some(store))),
            interval,
            interval_bytes,
            next_due: std::cell::Cell::new(next_due),
            bytes_since: std::cell::Cell::new(0),
        });
    }

    /// `committed_bytes`: the sizes of the prepares committed since the last call.
    fn save_checkpoint_if_due(&self, replica: &Replica<S>, committed_bytes: u64) {
        let checkpointing = self.checkpointing.borrow();
        let Some(checkpointing) = checkpointing.as_ref() else {
            return;
        };
        let bytes_since = checkpointing
            .bytes_since
            .get()
            .saturating_add(committed_bytes);
        checkpointing.bytes_since.set(bytes_since);
        if replica.commit_min() < checkpointing.next_due.get()
            && bytes_since < checkpointing.interval_bytes
        {
            return;
        }
        let Some(mut store) = checkpointing.store.borrow_mut().take() else {
            return; // A save is in flight.
        };
        let Some(checkpoint) = replica.checkpoint().filter(|c| c.op > store.op()) else {
            *checkpointing.store.borrow_mut() = Some(store);
            return;
        };
        checkpointing
            .next_due
            .set(checkpoint.op + checkpointing.interval);
        checkpointing.bytes_since.set(0);
        let (slot, disk, group) = (
            checkpointing.store.clone(),
            checkpointing.disk,
            replica.group(),
        );
        monoio::spawn(async move {
            // Not fatal, even a failed sync: the file is checked when read, and the log keeps
            // every op, so a checkpoint lost costs only a longer open.
            if let Err(error) = store.save(disk, &checkpoint).await {
                eprintln!(
                    "galgo: group {group}: the checkpoint at op {} was not saved: {error}",
                    checkpoint.op
                );
            }
            *slot.borrow_mut() = Some(store);
        });
    }

    /// True once a checkpoint sent by a peer (state transfer) is saved, or its save failed:
    /// the core does nothing more, and the group must be stopped and opened again from its
    /// files (its open cuts the log to start after the checkpoint's op; after a failed save
    /// it opens as it was, and asks again).
    pub fn reopen_wanted(&self) -> bool {
        self.reopen_wanted.get()
    }

    /// Saves `checkpoint` (state transfer) as the group's newest, then asks to be opened
    /// again (`reopen_wanted`). Waits for a save in flight to end first.
    fn install_checkpoint(self: &Rc<Self>, checkpoint: Checkpoint) {
        let group = self.replica.borrow().group();
        let saving = self
            .checkpointing
            .borrow()
            .as_ref()
            .map(|c| (c.store.clone(), c.disk));
        let host = Rc::downgrade(self);
        let installing = self.installing.clone();
        installing.set(true);
        monoio::spawn(async move {
            let op = checkpoint.op;
            let saved = match saving {
                None => Err("this group keeps no checkpoints".to_string()),
                Some((slot, disk)) => {
                    let mut store = None;
                    for _ in 0..INSTALL_WAIT_TICKS_MAX {
                        store = slot.borrow_mut().take();
                        if store.is_some() {
                            break;
                        }
                        monoio::time::sleep(TICK).await;
                    }
                    match store {
                        None => Err("a checkpoint save in flight did not end".to_string()),
                        Some(mut store) => {
                            let saved = store.save_in_both(disk, &checkpoint).await;
                            *slot.borrow_mut() = Some(store);
                            saved.map_err(|error| error.to_string())
                        }
                    }
                }
            };
            match saved {
                Ok(()) => eprintln!(
                    "galgo: group {group}: installed a checkpoint of op {op} from a peer; \
                     reopening the group"
                ),
                Err(error) => eprintln!(
                    "galgo: group {group}: the checkpoint of op {op} from a peer was not \
                     saved ({error}); reopening the group as it was"
                ),
            }
            installing.set(false);
            if let Some(host) = host.upgrade() {
                host.reopen_wanted.set(true);
            }
        });
    }

    /// The lowest op every replica has applied, as this primary last knew it (`None` on a
    /// backup), for a `RetentionView`.
    pub fn applied_everywhere(&self) -> Rc<std::cell::Cell<Option<u64>>> {
        self.applied_everywhere.clone()
    }

    /// Deletes, in a task of its own, the whole segments below the machine's first offset
    /// that both saved checkpoint files and the journal's base allow
    /// (`retention::prunable_segments`), then moves the replica's log start. A pass that
    /// finds the log busy stops; the next tick tries again.
    fn prune_segments_if_cut(self: &Rc<Self>, replica: &Replica<S>) {
        let first_offset = replica.state_machine().log_offset_start();
        if first_offset == 0 || self.pruning.get() || self.inbox.borrow().closed {
            return;
        }
        // Both checkpoint files must cover what goes, so a damaged one leaves the other.
        let checkpoint_op = self
            .checkpointing
            .borrow()
            .as_ref()
            .and_then(|c| c.store.borrow().as_ref().map(|store| store.op_both_cover()));
        let Some(checkpoint_op) = checkpoint_op else {
            return; // No checkpoints kept, or a save in flight: the ops must stay.
        };
        if self.journal.log().first_offset() >= first_offset {
            return; // Nothing held below the cut (checked without listing the segments).
        }
        let keep_op = checkpoint_op.min(replica.journal().base());
        let segments = self.journal.log().segments();
        if crate::retention::prunable_segments(&segments, first_offset, keep_op) == 0 {
            return;
        }
        self.pruning.set(true);
        let (host, journal) = (Rc::downgrade(self), self.journal.clone());
        let group = replica.group();
        monoio::spawn(async move {
            let mut deleted = 0;
            for _ in 0..crate::retention::PRUNE_SEGMENTS_MAX {
                let segments = journal.log().segments();
                if crate::retention::prunable_segments(&segments, first_offset, keep_op) == 0 {
                    break;
                }
                match journal.log().delete_oldest_segment().await {
                    Ok(Some(_)) => deleted += 1,
                    Ok(None) | Err(StorageError::Busy) => break,
                    Err(error) => {
                        eprintln!("galgo: group {group}: deleting a retained segment: {error}");
                        break;
                    }
                }
            }
            let first_op = journal.log().first_op();
            drop(journal);
            if let Some(host) = host.upgrade() {
                if deleted > 0 {
                    host.replica.borrow_mut().set_log_start(first_op);
                }
                host.pruning.set(false);
            }
        });
    }

    /// Stops the group: its task ends and handles no more events (those queued are dropped),
    /// so the core starts no new disk work. What is in flight finishes (see `io_idle`).
    pub fn stop(&self) {
        self.inbox.borrow_mut().close();
    }

    /// True while none of the group's disk work is under way or queued: no prepare write or
    /// read (each holds the journal), no view state write, no checkpoint save. A stopped
    /// group's files are closed only then.
    pub fn io_idle(&self) -> bool {
        let checkpoint_saving = self
            .checkpointing
            .borrow()
            .as_ref()
            .is_some_and(|c| c.store.borrow().is_none());
        Rc::strong_count(&self.journal) == 1
            && self.view_state.borrow().is_some()
            && !checkpoint_saving
            && !self.installing.get()
    }

    /// Closes the group's log and superblock files, for a stopped group whose disk work is
    /// done (`io_idle`). The host takes no more work.
    pub async fn close_files(&self) -> Result<(), StorageError> {
        assert!(self.io_idle(), "no disk work under way");
        self.journal.log().close().await?;
        let view_state = self.view_state.borrow_mut().take();
        if let Some(view_state) = view_state {
            view_state.close().await;
        }
        Ok(())
    }

    /// Gives the group a read-ahead for its consumers' polls.
    pub fn read_ahead_with(&self, budget: Rc<ReadAheadBudget>) {
        *self.read_ahead.borrow_mut() = Some(Rc::new(ReadAhead::new(budget)));
    }

    pub fn read_ahead(&self) -> Option<Rc<ReadAhead>> {
        self.read_ahead.borrow().clone()
    }

    /// The group's journal (its log), for reads of committed records.
    pub fn journal(&self) -> &Rc<SegmentJournal<'static, D>> {
        &self.journal
    }

    /// Hands the group an event (a peer's or a client's message, a tick).
    pub fn deliver(&self, event: Event) {
        self.inbox.borrow_mut().push(event);
    }

    fn handle(self: &Rc<Self>, event: Event) {
        let actions = {
            let mut replica = self.replica.borrow_mut();
            let before = (replica.view(), replica.status());
            let actions = match event {
                Event::Tick { realtime } => {
                    // The simulator's checker reads the journal's cuts and the committed
                    // headers; a node does not, and must not let them pile up.
                    let _ = self.journal.take_cuts();
                    let committed_bytes = replica
                        .take_committed()
                        .iter()
                        .map(|header| u64::from(header.size))
                        .sum();
                    self.save_checkpoint_if_due(&replica, committed_bytes);
                    self.prune_segments_if_cut(&replica);
                    replica.on_tick(realtime)
                }
                Event::Message(message) => replica.on_message(message),
                Event::Completed(io, completion) => replica.on_io_complete(io, completion),
                Event::HandOver => replica.hand_over_leadership(),
            };
            if (replica.view(), replica.status()) != before {
                self.log_view_change(&replica, before);
            }
            self.applied_everywhere.set(replica.replicas_commit_min());
            actions
        };
        for action in actions {
            self.execute(action);
        }
    }

    /// One line on stderr when the group's view or status changed (rare: a failover, a
    /// hand-over, leadership returning), so an operator can follow its leadership.
    fn log_view_change(&self, replica: &Replica<S>, (view, status): (u32, Status)) {
        let primary = self.members[usize::from(replica.primary_index(replica.view()))];
        let node = self.members[usize::from(replica.replica())];
        eprintln!(
            "galgo: group {} on node {node}: view {view} {status:?} -> view {} {:?} (primary node {primary}{}), commit {} head {}",
            replica.group(),
            replica.view(),
            replica.status(),
            if replica.is_primary() { ", here" } else { "" },
            replica.commit_min(),
            replica.head(),
        );
    }

    fn execute(self: &Rc<Self>, action: Action) {
        match action {
            Action::Send {
                to: Peer::Replica(peer),
                message,
            } => self.bus.send(self.members[usize::from(peer)], &message),
            Action::Send {
                to: Peer::Client(_),
                message,
            } => {
                if let Some(sink) = &self.reply_sink {
                    sink(message);
                    return;
                }
                let mut replies = self.replies.borrow_mut();
                if replies.len() < self.replies_max {
                    replies.push_back(message);
                } else {
                    self.replies_dropped.set(self.replies_dropped.get() + 1);
                }
            }
            Action::WritePrepare { io, message } => {
                let (host, journal) = (Rc::downgrade(self), self.journal.clone());
                monoio::spawn(async move {
                    let completion = match journal.write_prepare(message).await {
                        Ok(WriteOutcome::Written) => Completion::Written,
                        Ok(WriteOutcome::Abandoned) => Completion::Abandoned,
                        // The log is poisoned or broken: the process must stop; recovery
                        // decides what survived.
                        Err(error) => panic!("prepare write failed: {error}"),
                    };
                    let Some(host) = host.upgrade() else {
                        return; // The group stopped: no zeros for its files.
                    };
                    host.deliver(Event::Completed(io, completion));
                    drop(host);
                    // The completion is on its way: while the log is idle (a lockstep
                    // producer's round trip), write zeros ahead of its tail so the next
                    // appends overwrite blocks instead of growing the file. Only on io_uring:
                    // on the epoll fallback every file write blocks the shard's thread.
                    if monoio::utils::detect_uring() {
                        journal.log().prepare_ahead().await;
                    }
                });
            }
            Action::ReadPrepare { io, op } => {
                let (host, journal) = (Rc::downgrade(self), self.journal.clone());
                monoio::spawn(async move {
                    let read = journal.read_prepare(op).await;
                    if let Some(host) = host.upgrade() {
                        host.deliver(Event::Completed(io, Completion::Read(read)));
                    }
                });
            }
            Action::ReadHeaders { io, op_min, op_max } => {
                let (host, journal) = (Rc::downgrade(self), self.journal.clone());
                monoio::spawn(async move {
                    let headers = journal.read_headers(op_min, op_max).await;
                    if let Some(host) = host.upgrade() {
                        host.deliver(Event::Completed(io, Completion::Headers(headers)));
                    }
                });
            }
            Action::WriteHeader { .. } => {
                unreachable!("a segment journal runs without a header zone")
            }
            Action::InstallCheckpoint { checkpoint } => self.install_checkpoint(checkpoint),
            Action::PersistState { io, state } => {
                let (host, store) = (Rc::downgrade(self), self.view_state.clone());
                monoio::spawn(async move {
                    let mut taken = store
                        .borrow_mut()
                        .take()
                        .expect("the core keeps one view state write in flight");
                    if let Err(error) = taken.persist(&state).await {
                        panic!("view state write failed: {error}");
                    }
                    *store.borrow_mut() = Some(taken);
                    if let Some(host) = host.upgrade() {
                        host.deliver(Event::Completed(io, Completion::Written));
                    }
                });
            }
        }
    }
}

impl<S: StateMachine, D: Disk + 'static> Drop for GroupHost<S, D> {
    fn drop(&mut self) {
        // Ends the group's task, which waits on the inbox (it holds no strong reference).
        self.inbox.borrow_mut().close();
    }
}

/// The wall clock in nanoseconds since the epoch (0 if it reads before it).
pub fn realtime_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The next event for the group's task, or `None` once its host is gone.
async fn next_event(inbox: &RefCell<Inbox>) -> Option<Event> {
    std::future::poll_fn(|cx| {
        let mut inbox = inbox.borrow_mut();
        if inbox.closed {
            return Poll::Ready(None);
        }
        match inbox.events.pop_front() {
            Some(event) => Poll::Ready(Some(event)),
            None => {
                inbox.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}
