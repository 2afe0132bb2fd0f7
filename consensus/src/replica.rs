//! One replica of one VSR group, sans-IO: `on_message`, `on_tick` and `on_io_complete` take
//! inputs and return `Action`s (send, write prepare, write header, read prepare, persist view
//! state). The state machine is applied synchronously through the `StateMachine` trait.
//!
//! Durability rules enforced here:
//! * `PrepareOk(op)` leaves only after the prepare and its redundant header are durable.
//! * No replica message of view `v` leaves before `v` is durable (`view_durable`), except the
//!   StartViewChange vote, which carries no state.
//! * A new primary persists `log_view = view` and the canonical suffix before StartView.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::bugs::{Bug, Bugs};
use crate::checkpoint::Checkpoint;
use crate::durable::{known_canonical, DurableState, VIEW_HEADERS_MAX};
use crate::header::{flags, operation, Command, Header};
use crate::journal::{Journal, SlotState};
use crate::message::Message;
use crate::prng::Prng;
use crate::quorums::{Quorums, REPLICAS_MAX};
use bytes::Bytes;

use crate::recovery::RecoveredJournal;
use crate::sessions::{Classification, ClientSessions};
use crate::timeout::Timeout;
use crate::view_change::{choose_log, ChoiceParams, Dvc, DvcEntry, LogChoice, DVC_ENTRIES_MAX};

#[path = "state_transfer.rs"]
mod state_transfer;
pub use state_transfer::CHECKPOINT_CHUNK_MAX;

/// The deterministic application the log drives.
pub trait StateMachine {
    /// Executes one committed operation and returns the reply body.
    fn apply(&mut self, op: u64, timestamp: u64, operation: u8, body: &[u8]) -> Vec<u8>;

    /// On the primary only: turns a client's request body into the body prepared as op `op`
    /// (an application's stamps: offsets, a decision on a retried batch), against a projected
    /// state, the committed state with every op this primary prepared since the last
    /// `reset_projection` applied. The result must fit in a message body. By default the
    /// request body is prepared unchanged.
    fn prepare(&mut self, op: u64, timestamp: u64, operation: u8, body: Bytes) -> Bytes {
        let _ = (op, timestamp, operation);
        body
    }

    /// The projection starts again from the committed state: called on a primary before its
    /// first `prepare` of a view, once every op it inherited from earlier views is applied.
    fn reset_projection(&mut self) {}

    /// The state after the last applied op, for a checkpoint; `None` when this machine keeps
    /// none (its replica then applies the log from op 1 at every open).
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the state with one `snapshot` made; false, with the state unchanged, if the
    /// bytes are not one.
    fn restore(&mut self, snapshot: &[u8]) -> bool {
        let _ = snapshot;
        false
    }

    /// Where the log's offsets go on after the last applied op: a log cut to start after a
    /// checkpoint (state transfer) starts there. A partition: its next message offset; a
    /// log without messages: 0.
    fn log_offset_end(&self) -> u64 {
        0
    }

    /// The first log offset the applied state keeps (retention moved it): whole segments of
    /// the log below it may be deleted. 0: everything is kept.
    fn log_offset_start(&self) -> u64 {
        0
    }
}

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub prepare: u64,
    pub commit_message: u64,
    pub normal_heartbeat: u64,
    pub start_view_change_window: u64,
    pub view_change_message: u64,
    pub view_change_status: u64,
    pub repair: u64,
    /// How long the preferred primary must stay caught up before leadership returns to it.
    pub leadership_return: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            prepare: 25,
            commit_message: 10,
            normal_heartbeat: 50,
            start_view_change_window: 500,
            view_change_message: 20,
            view_change_status: 200,
            repair: 10,
            leadership_return: 100,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: u128,
    pub group: u64,
    pub replica_count: u8,
    pub replica: u8,
    /// `primary(view) = (view + placement_offset) % replica_count`.
    pub placement_offset: u8,
    pub pipeline_max: usize,
    pub request_queue_max: usize,
    pub clients_max: usize,
    /// Highest op the log may hold.
    pub ops_max: u64,
    /// Journal entries kept in memory below `commit_min`; older ones are compacted (see
    /// `Journal::compact`) and served from disk. At least `JOURNAL_KEEP_OPS_MIN`;
    /// `u64::MAX` never compacts.
    pub journal_keep_ops: u64,
    /// Write each prepare's header again in a separate redundant header zone after the
    /// prepare (a slot journal). A log that keeps its own redundant record and makes it
    /// durable with the prepare (partition segments) sets this false: a prepare's completion
    /// then means both.
    pub redundant_headers: bool,
    /// Leadership returns to the preferred primary (`placement_offset`, the primary of view 0)
    /// once it has stayed caught up for `timeouts.leadership_return` ticks: the primary starts
    /// a view change to the next view it leads.
    pub return_leadership: bool,
    pub timeouts: Timeouts,
    pub bugs: Bugs,
}

impl Config {
    pub fn validate(&self) {
        assert!(self.replica_count >= 1 && self.replica_count <= REPLICAS_MAX);
        assert!(self.replica < self.replica_count);
        assert!(self.pipeline_max >= 1 && self.pipeline_max + 2 <= VIEW_HEADERS_MAX);
        assert!(self.clients_max >= 1);
        assert!(self.ops_max >= 1);
        assert!(self.journal_keep_ops >= JOURNAL_KEEP_OPS_MIN);
    }
}

/// The fewest journal entries a replica keeps below its commit point. Safety does not need
/// them (a DVC leaves out entries below the base, which lie at or below the commit it reports,
/// and a journal opened from a checkpoint has its base at its commit); they let a view change
/// (`2 * pipeline_max + 1` DVC entries, `VIEW_HEADERS_MAX` StartView headers) and peers a few
/// ops behind work from memory instead of disk.
pub const JOURNAL_KEEP_OPS_MIN: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    Replica(u8),
    Client(u128),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IoId(pub u64);

#[derive(Clone, Debug)]
pub enum Action {
    Send {
        to: Peer,
        message: Message,
    },
    /// Write the whole prepare into the prepare slot of `message.header.op`.
    WritePrepare {
        io: IoId,
        message: Message,
    },
    /// Write the redundant header slot of `header.op`.
    WriteHeader {
        io: IoId,
        header: Header,
    },
    /// Read the prepare slot of `op` back.
    ReadPrepare {
        io: IoId,
        op: u64,
    },
    /// Read the headers of the durable prepares `op_min..=op_max` back (ops below the
    /// journal's base, to serve a peer; see `Completion::Headers`).
    ReadHeaders {
        io: IoId,
        op_min: u64,
        op_max: u64,
    },
    /// Write the durable view state (the superblock).
    PersistState {
        io: IoId,
        state: DurableState,
    },
    /// A checkpoint a peer sent (state transfer), for an op above `commit_min`: save it
    /// durably as the newest checkpoint, cut the log if it does not hold that op intact with
    /// its checksum (the log then starts after it), and open the replica again from disk.
    /// The replica does nothing more (`installing`); completions still due are dropped.
    InstallCheckpoint {
        checkpoint: Checkpoint,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Completion {
    Written,
    /// A prepare write the log dropped without making it durable (a later write truncated
    /// the log below it): the slot is free again.
    Abandoned,
    /// The prepare read back and verified by the host, or `None` if unreadable or corrupt.
    Read(Option<Message>),
    /// Headers read back for `ReadHeaders`, ascending: the longest run ending at its
    /// `op_max` whose every header read back intact and of its op (empty if none did).
    Headers(Vec<Header>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Normal,
    ViewChange,
}

#[derive(Clone, Debug)]
enum PendingIo {
    WritePrepare { op: u64, checksum: u128 },
    WriteHeader { op: u64, checksum: u128 },
    Read { op: u64, purpose: ReadPurpose },
    ReadHeaders { to: u8, op_min: u64, op_max: u64 },
    Persist { view: u32, log_view: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadPurpose {
    Commit,
    /// For a peer's repair, which named the prepare's checksum.
    Serve {
        to: u8,
        checksum: u128,
    },
}

/// A disk read for a peer's repair.
#[derive(Clone, Copy, Debug)]
enum ServeRead {
    Prepare { op: u64, to: u8, checksum: u128 },
    Headers { to: u8, op_min: u64, op_max: u64 },
}

#[derive(Clone, Debug)]
struct PipelineEntry {
    op: u64,
    checksum: u128,
    ok_from: u8,
}

const REPAIR_BUDGET: usize = 8;
/// Prepare requests out at once between two repair timeouts, at most.
const REPAIR_REQUESTED_MAX: usize = 64;
const HEADERS_PER_MESSAGE_MAX: u64 = 64;
const READS_COMMIT_MAX: usize = 8;
const READS_SERVE_MAX: usize = 4;
/// Reads for peers waiting for one of the `READS_SERVE_MAX` to finish, at most; beyond it a
/// request is dropped (the peer asks again at its repair timeout).
const SERVE_WAITING_MAX: usize = 64;
/// Most slot write chains in flight at once.
const SLOT_WRITES_MAX: usize = 256;

pub struct Replica<S: StateMachine> {
    config: Config,
    quorums: Quorums,
    state_machine: S,
    /// The state machine's projection covers every op in the pipeline: the primary may
    /// prepare. False from the start of each view until the inherited ops are applied.
    projection_ready: bool,
    prng: Prng,

    status: Status,
    view: u32,
    log_view: u32,
    view_durable: u32,
    log_view_durable: u32,
    commit_min: u64,
    commit_max: u64,
    journal: Journal,
    /// Prepare bodies held in memory, by op (bounded; the pipeline's are pinned).
    cache: BTreeMap<u64, Message>,
    cache_max: usize,
    pipeline: VecDeque<PipelineEntry>,
    request_queue: VecDeque<Message>,
    sessions: ClientSessions,
    prepare_timestamp: u64,
    realtime: u64,

    /// StartViewChange votes: for `view + 1` while normal, for `view` during a view change.
    svc_votes: u8,
    /// In view-change status: replicas that, as normal replicas of our view, voted to leave
    /// it. With `svc_votes` they decide whether this view change may escalate on timeout.
    leave_votes: u8,
    /// Ops with a write chain (prepare, then header) in flight: at most one per slot.
    slot_writes: BTreeSet<u64>,
    dvcs: BTreeMap<u8, Dvc>,
    /// New primary: the canonical log is chosen and installed; repairing before StartView.
    log_chosen: bool,
    /// Backup that jumped to a newer view and waits for its StartView.
    awaiting_start_view: bool,
    /// The canonical suffix as of `log_view` (persisted with the view state).
    view_headers: Vec<Header>,
    repair_sources: BTreeMap<u64, u8>,

    io_next: u64,
    ios: BTreeMap<IoId, PendingIo>,
    persist_in_flight: bool,
    persist_wanted: bool,
    reads_commit: usize,
    reads_serve: usize,
    /// Reads for peers waiting for a free read, oldest first.
    serve_waiting: VecDeque<ServeRead>,

    prepare_timeout: Timeout,
    commit_message_timeout: Timeout,
    normal_heartbeat_timeout: Timeout,
    svc_window_timeout: Timeout,
    view_change_message_timeout: Timeout,
    view_change_status_timeout: Timeout,
    repair_timeout: Timeout,
    leadership_return_timeout: Timeout,
    /// Each replica's `commit_min` as its latest PrepareOk of this view reported it.
    peer_commit: [u64; REPLICAS_MAX as usize],
    /// The tick (`ticks`) of each replica's latest PrepareOk of this view, 0 for none.
    peer_ack_tick: [u64; REPLICAS_MAX as usize],
    /// Ticks since open (a count, not a clock).
    ticks: u64,
    /// Ops whose prepare was requested since the last repair timeout, and of whom.
    repair_requested: BTreeMap<u64, u8>,
    /// `repair_requested` as the last repair timeout found it: who did not answer (see
    /// `repair_target`).
    repair_retry: BTreeMap<u64, u8>,

    actions: Vec<Action>,
    /// Headers of ops committed (applied) since the host last drained them.
    committed: Vec<Header>,

    /// The lowest op the host's log holds (see `state_transfer`).
    log_start: u64,
    /// A checkpoint being received, and the one being served to a peer.
    transfer: Option<state_transfer::Transfer>,
    /// Per peer: the encoding its transfer is served from.
    served: BTreeMap<u8, state_transfer::Served>,
    /// Each peer's log start as its latest `LogStart` reported it (0: none yet).
    peer_log_start: [u64; REPLICAS_MAX as usize],
    /// A received checkpoint is being installed: the replica is done.
    installing: bool,
}

/// Whether `checkpoint` restores: its sessions decode for `clients_max` and `machine` takes
/// its snapshot (and then holds it). A host that recovers its journal from the checkpoint's
/// op (`recover_journal_from`) must know this first: the ops below are then never read, so
/// the replica could not apply them instead.
pub fn checkpoint_restores<S: StateMachine>(
    checkpoint: &Checkpoint,
    clients_max: usize,
    machine: &mut S,
) -> bool {
    checkpoint.op > 0
        && ClientSessions::decode(&checkpoint.sessions, clients_max).is_some()
        && machine.restore(&checkpoint.machine)
}

/// The checkpoint `open_from` may start from: `checkpoint` if the recovered journal holds its
/// op with its checksum. Otherwise none, and `machine` (which `checkpoint_restores` filled)
/// is replaced by `fresh()`, so the log is applied from op 1 on an untouched machine.
pub fn checkpoint_held<S: StateMachine>(
    checkpoint: Option<Checkpoint>,
    recovered: &RecoveredJournal,
    machine: &mut S,
    fresh: impl FnOnce() -> S,
) -> Option<Checkpoint> {
    let checkpoint = checkpoint?;
    let held = recovered.journal.header(checkpoint.op).map(|h| h.checksum);
    if held == Some(checkpoint.op_checksum) {
        return Some(checkpoint);
    }
    *machine = fresh();
    None
}

impl<S: StateMachine> Replica<S> {
    /// Opens a replica from its durable state and recovered journal (a fresh replica passes
    /// `DurableState::initial()` and an empty journal).
    pub fn open(
        config: Config,
        state_machine: S,
        durable: DurableState,
        recovered: RecoveredJournal,
        seed: u64,
    ) -> Replica<S> {
        Replica::open_from(config, state_machine, durable, recovered, seed, None)
    }

    /// `open`, starting from `checkpoint` (see `restore_checkpoint`) when there is one and it
    /// belongs to this log.
    pub fn open_from(
        config: Config,
        state_machine: S,
        durable: DurableState,
        recovered: RecoveredJournal,
        seed: u64,
        checkpoint: Option<&Checkpoint>,
    ) -> Replica<S> {
        let RecoveredJournal {
            journal,
            header_fixes,
        } = recovered;
        config.validate();
        assert_eq!(journal.ops_max(), config.ops_max);
        let timeouts = config.timeouts.clone();
        let quorums = Quorums::new(config.replica_count);
        let sessions = ClientSessions::new(config.clients_max);
        let cache_max = config.pipeline_max * 4 + 32;
        let mut replica = Replica {
            quorums,
            state_machine,
            projection_ready: false,
            prng: Prng::from_seed(seed ^ u64::from(config.replica).wrapping_mul(0x9e37_79b9)),
            status: Status::Normal,
            view: durable.view,
            log_view: durable.log_view,
            view_durable: durable.view,
            log_view_durable: durable.log_view,
            commit_min: 0,
            commit_max: durable.commit_max.min(journal.head()),
            journal,
            cache: BTreeMap::new(),
            cache_max,
            pipeline: VecDeque::new(),
            request_queue: VecDeque::new(),
            sessions,
            prepare_timestamp: 0,
            realtime: 0,
            svc_votes: 0,
            leave_votes: 0,
            slot_writes: BTreeSet::new(),
            dvcs: BTreeMap::new(),
            log_chosen: false,
            awaiting_start_view: false,
            view_headers: durable.view_headers.clone(),
            repair_sources: BTreeMap::new(),
            io_next: 1,
            ios: BTreeMap::new(),
            persist_in_flight: false,
            persist_wanted: false,
            reads_commit: 0,
            reads_serve: 0,
            serve_waiting: VecDeque::new(),
            prepare_timeout: Timeout::new("prepare", timeouts.prepare),
            commit_message_timeout: Timeout::new("commit_message", timeouts.commit_message),
            normal_heartbeat_timeout: Timeout::new("normal_heartbeat", timeouts.normal_heartbeat),
            svc_window_timeout: Timeout::new("svc_window", timeouts.start_view_change_window),
            view_change_message_timeout: Timeout::new(
                "view_change_message",
                timeouts.view_change_message,
            ),
            view_change_status_timeout: Timeout::new(
                "view_change_status",
                timeouts.view_change_status,
            ),
            repair_timeout: Timeout::new("repair", timeouts.repair),
            repair_requested: BTreeMap::new(),
            repair_retry: BTreeMap::new(),
            leadership_return_timeout: Timeout::new(
                "leadership return",
                timeouts.leadership_return,
            ),
            peer_commit: [0; REPLICAS_MAX as usize],
            peer_ack_tick: [0; REPLICAS_MAX as usize],
            ticks: 0,
            actions: Vec::new(),
            committed: Vec::new(),
            log_start: 1,
            transfer: None,
            served: BTreeMap::new(),
            peer_log_start: [0; REPLICAS_MAX as usize],
            installing: false,
            config,
        };
        if let Some(checkpoint) = checkpoint {
            replica.restore_checkpoint(checkpoint);
        }
        assert!(
            replica.commit_min >= replica.journal.base(),
            "a journal recovered above op 0 needs the checkpoint of its base (see checkpoint_restores)"
        );
        replica.prepare_timestamp = replica
            .journal
            .header(replica.journal.head())
            .map(|h| h.timestamp)
            .unwrap_or(0);
        replica.repair_timeout.start();
        assert!(
            replica.config.redundant_headers || header_fixes.is_empty(),
            "a log without a header zone has no header to fix"
        );
        for op in header_fixes {
            // Rewrite the redundant header of an intact prepare (recovery's "fix").
            assert!(replica.journal.entry(op).present());
            replica.slot_writes.insert(op);
            replica.write_header(op);
        }
        if replica.primary_index(replica.view) == replica.config.replica {
            // A primary never resumes its view on open: it cannot know what it prepared in that
            // view before a crash (a fresh cluster too: a replica cannot tell a first start from
            // a restart after losing unsynced writes), so preparing again could fork the view.
            replica.transition_to_view_change(replica.view + 1);
        } else if replica.log_view == replica.view {
            replica.status = Status::Normal;
            replica
                .normal_heartbeat_timeout
                .start_with_jitter(&mut replica.prng);
            replica.svc_window_timeout.start();
            // Catch up on the head quickly.
            replica.awaiting_start_view = replica.view > 0 || replica.journal.head() > 0;
            if replica.awaiting_start_view {
                replica.send_request_start_view();
            }
        } else {
            replica.status = Status::ViewChange;
            replica.svc_votes = replica.bit(replica.config.replica);
            replica.view_change_message_timeout.start();
            replica
                .view_change_status_timeout
                .start_with_jitter(&mut replica.prng);
        }
        replica
    }

    /// Starts from `checkpoint` if it is of this log: its op is in the journal with the same
    /// checksum (a committed op, so canonical), its sessions decode for this group and the
    /// state machine takes its snapshot. Then ops up to it count as applied and are not read
    /// again. Otherwise nothing changes and the log is applied from op 1.
    fn restore_checkpoint(&mut self, checkpoint: &Checkpoint) {
        assert_eq!(self.commit_min, 0, "a checkpoint is restored at open only");
        if checkpoint.op == 0 || checkpoint.op > self.journal.head() {
            return;
        }
        let op_checksum = self.journal.header(checkpoint.op).map(|h| h.checksum);
        if op_checksum != Some(checkpoint.op_checksum) {
            return;
        }
        let Some(sessions) = ClientSessions::decode(&checkpoint.sessions, self.config.clients_max)
        else {
            return;
        };
        if !self.state_machine.restore(&checkpoint.machine) {
            return;
        }
        self.sessions = sessions;
        self.commit_min = checkpoint.op;
        self.commit_max = self.commit_max.max(checkpoint.op);
        assert!(self.commit_min <= self.journal.head());
    }

    /// A checkpoint of the state as of `commit_min`: `None` before the first op or when the
    /// state machine keeps no snapshot. The host stores it for `open_from`.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        if self.commit_min == 0 {
            return None;
        }
        let machine = self.state_machine.snapshot()?;
        let op_header = *self.journal.header(self.commit_min)?;
        Some(Checkpoint {
            op: self.commit_min,
            op_checksum: op_header.checksum,
            op_header,
            installed: false,
            sessions: self.sessions.encode(),
            machine,
        })
    }

    // ----- accessors used by hosts and checkers -----

    pub fn replica(&self) -> u8 {
        self.config.replica
    }
    pub fn replica_count(&self) -> u8 {
        self.config.replica_count
    }
    pub fn group(&self) -> u64 {
        self.config.group
    }
    pub fn status(&self) -> Status {
        self.status
    }
    pub fn view(&self) -> u32 {
        self.view
    }
    pub fn log_view(&self) -> u32 {
        self.log_view
    }
    pub fn commit_min(&self) -> u64 {
        self.commit_min
    }
    pub fn commit_max(&self) -> u64 {
        self.commit_max
    }
    pub fn head(&self) -> u64 {
        self.journal.head()
    }
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// On a normal primary: the lowest `commit_min` among all replicas, each as its latest
    /// PrepareOk of this view reported it (0 for one that has not acknowledged in this
    /// view). Ops at or below it are applied everywhere, so no replica needs them from a
    /// peer's log to catch up (unless it loses its disk). `None` on any other replica.
    pub fn replicas_commit_min(&self) -> Option<u64> {
        if self.status != Status::Normal || !self.is_primary() {
            return None;
        }
        let peers = self
            .others()
            .map(|r| self.peer_commit[usize::from(r)])
            .min()
            .unwrap_or(u64::MAX);
        Some(peers.min(self.commit_min))
    }
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// For a host wiring its own views into the machine (they must never change what `apply`
    /// does: that is the replicated state).
    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.state_machine
    }
    pub fn sessions(&self) -> &ClientSessions {
        &self.sessions
    }
    pub fn is_primary(&self) -> bool {
        self.primary_index(self.view) == self.config.replica
    }
    pub fn primary_index(&self, view: u32) -> u8 {
        ((u64::from(view) + u64::from(self.config.placement_offset))
            % u64::from(self.config.replica_count)) as u8
    }
    /// The pipeline as (op, acknowledging replicas bitset), for diagnostics.
    pub fn pipeline_summary(&self) -> Vec<(u64, u8)> {
        self.pipeline.iter().map(|e| (e.op, e.ok_from)).collect()
    }

    /// True when the replica has I/O or view-state writes outstanding.
    pub fn io_pending(&self) -> bool {
        !self.ios.is_empty()
    }
    /// The ops applied since the last call, in order.
    pub fn take_committed(&mut self) -> Vec<Header> {
        std::mem::take(&mut self.committed)
    }

    // ----- inputs -----

    pub fn on_tick(&mut self, realtime: u64) -> Vec<Action> {
        if self.installing {
            return Vec::new();
        }
        self.realtime = realtime;
        self.ticks += 1;
        for timeout in [
            &mut self.prepare_timeout,
            &mut self.commit_message_timeout,
            &mut self.normal_heartbeat_timeout,
            &mut self.svc_window_timeout,
            &mut self.view_change_message_timeout,
            &mut self.view_change_status_timeout,
            &mut self.repair_timeout,
            &mut self.leadership_return_timeout,
        ] {
            timeout.tick();
        }
        if self.prepare_timeout.fired() {
            self.on_prepare_timeout();
        }
        if self.commit_message_timeout.fired() {
            self.commit_message_timeout.start();
            self.send_commit_heartbeat();
        }
        if self.normal_heartbeat_timeout.fired() {
            self.on_normal_heartbeat_timeout();
        }
        if self.svc_window_timeout.fired() {
            self.svc_window_timeout.start();
            if self.status == Status::Normal {
                self.svc_votes = 0;
            }
        }
        if self.view_change_message_timeout.fired() {
            self.view_change_message_timeout.start();
            self.send_view_change_messages();
        }
        if self.view_change_status_timeout.fired() {
            self.on_view_change_status_timeout();
        }
        self.check_leadership_return();
        // Also here, not only as ops commit: a replica opened with a long log compacts it
        // without waiting for the next commit.
        self.compact_journal();
        if self.repair_timeout.fired() {
            self.repair_timeout.start();
            // Whatever is still missing is requested again.
            self.repair_retry = std::mem::take(&mut self.repair_requested);
            self.check_transfer_progress();
            self.repair();
        }
        std::mem::take(&mut self.actions)
    }

    /// A primary about to stop hands its leadership over: it starts a view change to the next
    /// view, which another replica leads, so the group moves on at once instead of after the
    /// backups' heartbeat timeout. Its log goes into the view change like any replica's, so
    /// nothing it prepared is lost. A backup, a replica in a view change and a group of one
    /// do nothing.
    pub fn hand_over_leadership(&mut self) -> Vec<Action> {
        if self.status == Status::Normal && self.is_primary() && self.config.replica_count > 1 {
            self.transition_to_view_change(self.view + 1);
        }
        std::mem::take(&mut self.actions)
    }

    pub fn on_message(&mut self, message: Message) -> Vec<Action> {
        if self.installing {
            return Vec::new();
        }
        let header = &message.header;
        if header.cluster != self.config.cluster || header.group != self.config.group {
            return Vec::new();
        }
        if header.command != Command::Request && header.replica >= self.config.replica_count {
            return Vec::new();
        }
        match header.command {
            Command::Request => self.on_request(message),
            Command::Prepare => self.on_prepare(message),
            Command::PrepareOk => self.on_prepare_ok(&message.header),
            Command::Commit => self.on_commit(&message.header),
            Command::StartViewChange => self.on_start_view_change(&message.header),
            Command::DoViewChange => self.on_do_view_change(message),
            Command::StartView => self.on_start_view(message),
            Command::RequestStartView => self.on_request_start_view(&message.header),
            Command::RequestHeaders => self.on_request_headers(&message.header),
            Command::Headers => self.on_headers(message),
            Command::RequestPrepare => self.on_request_prepare(&message.header),
            Command::LogStart => self.on_log_start(&message.header),
            Command::RequestCheckpoint => self.on_request_checkpoint(&message.header),
            Command::Checkpoint => self.on_checkpoint_chunk(message),
            Command::Reply | Command::Eviction | Command::CommitBatch | Command::Reserved => {}
        }
        std::mem::take(&mut self.actions)
    }

    pub fn on_io_complete(&mut self, io: IoId, completion: Completion) -> Vec<Action> {
        let pending = self.ios.remove(&io).expect("completion for an unknown io");
        if self.installing {
            return Vec::new();
        }
        match (pending, completion) {
            (PendingIo::WritePrepare { op, checksum }, Completion::Written) => {
                self.on_prepare_written(op, checksum)
            }
            (PendingIo::WritePrepare { op, .. }, Completion::Abandoned) => {
                self.slot_write_abandoned(op)
            }
            (PendingIo::WriteHeader { op, checksum }, Completion::Written) => {
                self.on_header_written(op, checksum)
            }
            (PendingIo::Read { op, purpose }, Completion::Read(result)) => {
                self.on_prepare_read(op, purpose, result)
            }
            (PendingIo::ReadHeaders { to, op_min, op_max }, Completion::Headers(headers)) => {
                self.on_headers_read(to, op_min, op_max, headers)
            }
            (PendingIo::Persist { view, log_view }, Completion::Written) => {
                self.on_persisted(view, log_view)
            }
            (pending, completion) => panic!("completion {completion:?} does not match {pending:?}"),
        }
        std::mem::take(&mut self.actions)
    }

    // ----- helpers -----

    fn bit(&self, replica: u8) -> u8 {
        assert!(replica < self.config.replica_count);
        1 << replica
    }

    fn io(&mut self, pending: PendingIo) -> IoId {
        let io = IoId(self.io_next);
        self.io_next += 1;
        self.ios.insert(io, pending);
        io
    }

    fn header(&self, command: Command) -> Header {
        let mut header = Header::new(command, self.config.cluster, self.config.group);
        header.view = self.view;
        header.replica = self.config.replica;
        header
    }

    /// Sends to a replica, holding back anything of a view that is not yet durable.
    fn send_replica(&mut self, to: u8, message: Message) {
        assert_ne!(to, self.config.replica);
        if message.header.command != Command::StartViewChange && self.view_durable < self.view {
            return;
        }
        self.actions.push(Action::Send {
            to: Peer::Replica(to),
            message,
        });
    }

    fn broadcast(&mut self, message: Message) {
        for replica in 0..self.config.replica_count {
            if replica != self.config.replica {
                self.send_replica(replica, message.clone());
            }
        }
    }

    fn others(&self) -> impl Iterator<Item = u8> + '_ {
        (0..self.config.replica_count).filter(move |r| *r != self.config.replica)
    }

    fn random_other(&mut self) -> Option<u8> {
        if self.config.replica_count == 1 {
            return None;
        }
        let pick = self.prng.below(u64::from(self.config.replica_count) - 1) as u8;
        Some(if pick >= self.config.replica {
            pick + 1
        } else {
            pick
        })
    }

    fn cache_insert(&mut self, message: Message) {
        let op = message.header.op;
        self.cache.insert(op, message);
        while self.cache.len() > self.cache_max {
            let pinned_from = self
                .commit_min
                .min(self.pipeline.front().map(|e| e.op).unwrap_or(u64::MAX));
            let evict = self
                .cache
                .keys()
                .next()
                .copied()
                .filter(|o| *o <= pinned_from && *o != op);
            match evict {
                Some(evict) => {
                    self.cache.remove(&evict);
                }
                None => break,
            }
        }
    }

    fn cached(&self, op: u64) -> Option<&Message> {
        let checksum = self.journal.header(op)?.checksum;
        self.cache
            .get(&op)
            .filter(|m| m.header.checksum == checksum)
    }

    // ----- durable view state -----

    fn persist(&mut self) {
        if self.persist_in_flight {
            self.persist_wanted = true;
            return;
        }
        self.persist_in_flight = true;
        let state = DurableState {
            view: self.view,
            log_view: self.log_view,
            commit_max: self.commit_max,
            view_headers: self.view_headers.clone(),
        };
        let io = self.io(PendingIo::Persist {
            view: self.view,
            log_view: self.log_view,
        });
        self.actions.push(Action::PersistState { io, state });
    }

    fn on_persisted(&mut self, view: u32, log_view: u32) {
        assert!(self.persist_in_flight);
        self.persist_in_flight = false;
        assert!(view >= self.view_durable && log_view >= self.log_view_durable);
        let log_view_advanced = log_view > self.log_view_durable;
        self.view_durable = view;
        self.log_view_durable = log_view;
        if self.persist_wanted {
            self.persist_wanted = false;
            self.persist();
        }
        if log_view_advanced {
            // Prepares held back by `write_prepare` may be written now.
            self.repair();
        }
        if self.view_durable < self.view {
            return;
        }
        match self.status {
            Status::ViewChange => {
                if self.is_primary() && self.log_chosen {
                    self.try_become_normal_primary();
                } else {
                    self.send_view_change_messages();
                    if self.is_primary() {
                        self.try_choose_log();
                    }
                }
            }
            Status::Normal => {
                if !self.is_primary() && self.log_view_durable == self.view {
                    self.send_prepare_oks_for_uncommitted();
                }
            }
        }
    }

    // ----- normal operation: primary -----

    /// On a primary that is not the preferred one: once the preferred replica has stayed
    /// caught up (its acks report a commit within a pipeline of ours) and alive (it acked
    /// a prepare within a heartbeat timeout) for the return timeout,
    /// start a view change to the next view it leads. Backups join a view change above their
    /// view, so leadership moves in one view change, with no timeout to wait out.
    fn check_leadership_return(&mut self) {
        let preferred = self.config.placement_offset;
        let eligible = self.config.return_leadership
            && self.status == Status::Normal
            && self.is_primary()
            && self.config.replica != preferred;
        if !eligible {
            self.leadership_return_timeout.stop();
            return;
        }
        let caught_up = self.peer_commit[usize::from(preferred)]
            .saturating_add(self.config.pipeline_max as u64)
            >= self.commit_min;
        // And alive: it acknowledged a prepare within a heartbeat timeout. A commit that
        // stands still (an idle group, or a producer held up elsewhere) keeps an old ack
        // "caught up" forever, and leadership would move to a node that is gone, again and
        // again (found by deploy/chaos: the metadata group cycling through a paused node).
        // So an idle group keeps its primary until writes flow again.
        let last_ack = self.peer_ack_tick[usize::from(preferred)];
        let alive = last_ack > 0 && self.ticks - last_ack <= self.config.timeouts.normal_heartbeat;
        if !caught_up || !alive {
            self.leadership_return_timeout.stop();
            return;
        }
        if !self.leadership_return_timeout.running {
            self.leadership_return_timeout.start();
            return;
        }
        if !self.leadership_return_timeout.fired() {
            return;
        }
        self.leadership_return_timeout.stop();
        let n = u32::from(self.config.replica_count);
        let view = (self.view + 1..=self.view + n)
            .find(|v| self.primary_index(*v) == preferred)
            .expect("every replica leads one of n consecutive views");
        self.transition_to_view_change(view);
    }

    fn start_primary_timers(&mut self) {
        self.peer_commit = [0; REPLICAS_MAX as usize];
        self.peer_ack_tick = [0; REPLICAS_MAX as usize];
        self.leadership_return_timeout.stop();
        self.normal_heartbeat_timeout.stop();
        self.view_change_message_timeout.stop();
        self.view_change_status_timeout.stop();
        self.commit_message_timeout.start();
        if !self.pipeline.is_empty() {
            self.prepare_timeout.start();
        }
    }

    fn on_request(&mut self, request: Message) {
        if request.header.client == 0 {
            return;
        }
        if self.status != Status::Normal || !self.is_primary() || self.view_durable < self.view {
            return;
        }
        // Sessions must reflect every committed op before classifying a request.
        if self.commit_min < self.commit_max {
            return;
        }
        let in_flight = self
            .pipeline
            .iter()
            .filter_map(|entry| self.cache.get(&entry.op))
            .chain(self.request_queue.iter())
            .any(|m| m.header.client == request.header.client);
        if in_flight {
            return;
        }
        if request.header.operation == operation::REGISTER {
            if request.header.request != 0 || !request.body.is_empty() {
                return;
            }
            if let Some(session) = self
                .sessions
                .get(request.header.client)
                .filter(|s| s.request == 0)
            {
                // A retry of a registration that committed (its reply was lost or late): the
                // same session again, not a second one that would evict the first.
                let mut reply = self.header(Command::Reply);
                reply.client = request.header.client;
                reply.session = session.session;
                reply.op = session.session;
                reply.commit = session.session;
                reply.context = request.header.checksum;
                reply.operation = operation::REGISTER;
                self.actions.push(Action::Send {
                    to: Peer::Client(request.header.client),
                    message: Message::new(reply, Vec::new()),
                });
                return;
            }
        } else {
            if request.header.operation < operation::APPLICATION_MIN {
                return;
            }
            match self.sessions.classify(&request.header) {
                Classification::New => {}
                Classification::Resend(reply) => {
                    self.actions.push(Action::Send {
                        to: Peer::Client(request.header.client),
                        message: *reply,
                    });
                    return;
                }
                Classification::Evict(reason) => {
                    let mut header = self.header(Command::Eviction);
                    header.client = request.header.client;
                    header.request = reason as u32;
                    header.session = request.header.session;
                    self.actions.push(Action::Send {
                        to: Peer::Client(request.header.client),
                        message: Message::new(header, Vec::new()),
                    });
                    return;
                }
                Classification::Drop => return,
            }
        }
        if self.pipeline.len() < self.config.pipeline_max && self.may_prepare(&request.header) {
            self.prepare(request);
        } else if self.request_queue.len() < self.config.request_queue_max {
            self.request_queue.push_back(request);
        }
    }

    /// Whether `request` may be prepared now. An application request is stamped by the state
    /// machine's projection, which must then know the outcome of every op before it: none
    /// inherited from an earlier view still unapplied, and no registration in the pipeline
    /// (one may evict a session, and the request would then not execute).
    fn may_prepare(&mut self, request: &Header) -> bool {
        if request.operation == operation::REGISTER {
            return true;
        }
        let registering = self.pipeline.iter().any(|entry| {
            self.journal
                .header(entry.op)
                .is_some_and(|h| h.operation == operation::REGISTER)
        });
        !registering && self.ready_to_prepare()
    }

    /// Whether the state machine's projection may stamp a new prepare; makes it so once every
    /// op inherited from an earlier view is applied (the pipeline then holds only our ops).
    fn ready_to_prepare(&mut self) -> bool {
        if self.projection_ready {
            return true;
        }
        if !self.pipeline.is_empty() || self.commit_min != self.commit_max {
            return false;
        }
        self.state_machine.reset_projection();
        self.projection_ready = true;
        true
    }

    fn prepare(&mut self, request: Message) {
        assert!(self.status == Status::Normal && self.is_primary());
        assert!(self.pipeline.len() < self.config.pipeline_max);
        let head = self.journal.head();
        let op = head + 1;
        if op > self.config.ops_max {
            return; // The log is full: the request is dropped and the client retries.
        }
        let parent = self
            .journal
            .header(head)
            .expect("primary knows its head")
            .checksum;
        self.prepare_timestamp = self.prepare_timestamp.saturating_add(1).max(self.realtime);
        let mut header = self.header(Command::Prepare);
        header.parent = parent;
        header.client = request.header.client;
        header.session = request.header.session;
        header.request = request.header.request;
        header.operation = request.header.operation;
        header.context = request.header.checksum;
        header.op = op;
        header.commit = self.commit_max;
        header.timestamp = self.prepare_timestamp;
        let body = if header.operation >= operation::APPLICATION_MIN {
            assert!(self.projection_ready);
            // `Message::new` asserts the body still fits a message.
            self.state_machine
                .prepare(op, header.timestamp, header.operation, request.body)
        } else {
            request.body
        };
        let message = Message::new(header, body);
        let checksum = message.header.checksum;
        self.journal.set_header(message.header);
        self.cache_insert(message.clone());
        self.pipeline.push_back(PipelineEntry {
            op,
            checksum,
            ok_from: 0,
        });
        self.write_prepare(op);
        self.broadcast(message);
        if !self.prepare_timeout.running {
            self.prepare_timeout.start();
        }
        // A one-replica group commits on its own durable write; nothing else to wait for.
    }

    fn on_prepare_ok(&mut self, header: &Header) {
        if self.status != Status::Normal || !self.is_primary() {
            return;
        }
        let old_view_bug = self.config.bugs.has(Bug::CountOldViewPrepareOks);
        if header.view != self.view && !(old_view_bug && header.view < self.view) {
            return;
        }
        if header.view == self.view && header.replica < self.config.replica_count {
            let commit = &mut self.peer_commit[usize::from(header.replica)];
            *commit = (*commit).max(header.commit);
            self.peer_ack_tick[usize::from(header.replica)] = self.ticks;
        }
        let from = self.bit(header.replica);
        let matched_by_op_only = old_view_bug && header.view < self.view;
        if let Some(entry) = self
            .pipeline
            .iter_mut()
            .find(|e| e.op == header.op && (matched_by_op_only || e.checksum == header.context))
        {
            entry.ok_from |= from;
        }
        self.commit_pipeline();
    }

    fn commit_pipeline(&mut self) {
        let quorum = if self.config.bugs.has(Bug::CommitWithoutQuorum) {
            1
        } else {
            self.quorums.replication
        };
        // Older committed ops first (after a view change they may still be being read back).
        self.commit_journal();
        while let Some(front) = self.pipeline.front() {
            if front.ok_from.count_ones() < u32::from(quorum) || front.op != self.commit_max + 1 {
                break;
            }
            let op = front.op;
            self.commit_max = op;
            self.commit_journal();
            if self.commit_min < op {
                break; // Still applying older ops; the entry stays until it is applied.
            }
            // commit_journal removed the applied entries from the pipeline.
            assert!(self.pipeline.front().is_none_or(|e| e.op > op));
        }
        while self.commit_min == self.commit_max && self.pipeline.len() < self.config.pipeline_max {
            let Some(front) = self.request_queue.front() else {
                break;
            };
            if !self.may_prepare(&front.header.clone()) {
                break;
            }
            let request = self.request_queue.pop_front().expect("front exists");
            if request.header.operation != operation::REGISTER
                && !self.sessions.should_execute(&request.header)
            {
                // A registration committed while it waited and changed its session: it would
                // not execute. Dropped; the client retries or registers again.
                continue;
            }
            self.prepare(request);
        }
        if self.pipeline.is_empty() {
            self.prepare_timeout.stop();
        }
    }

    fn on_prepare_timeout(&mut self) {
        if self.status != Status::Normal || !self.is_primary() || self.pipeline.is_empty() {
            self.prepare_timeout.stop();
            return;
        }
        self.prepare_timeout.backoff(&mut self.prng);
        let entries: Vec<PipelineEntry> = self.pipeline.iter().cloned().collect();
        for entry in entries {
            let Some(message) = self
                .cache
                .get(&entry.op)
                .filter(|m| m.header.checksum == entry.checksum)
                .cloned()
            else {
                continue;
            };
            let missing: Vec<u8> = self
                .others()
                .filter(|r| entry.ok_from & (1 << r) == 0)
                .collect();
            for replica in missing {
                self.send_replica(replica, message.clone());
            }
        }
    }

    fn send_commit_heartbeat(&mut self) {
        if self.status != Status::Normal || !self.is_primary() {
            self.commit_message_timeout.stop();
            return;
        }
        let mut header = self.header(Command::Commit);
        header.commit = self.commit_max;
        header.op = self.journal.head();
        header.context = self
            .journal
            .header(self.commit_max)
            .map(|h| h.checksum)
            .unwrap_or(0);
        self.broadcast(Message::new(header, Vec::new()));
    }

    // ----- normal operation: backup -----

    fn on_prepare(&mut self, message: Message) {
        let header = message.header;
        if header.op == 0 || header.op > self.config.ops_max {
            return;
        }
        let from_primary_of_view = header.replica == self.primary_index(header.view);
        if header.view > self.view && from_primary_of_view {
            self.jump_to_view(header.view);
            return;
        }
        if header.view == self.view && from_primary_of_view && !self.is_primary() {
            match self.status {
                Status::Normal => {
                    self.normal_heartbeat_timeout.reset_if_running();
                    self.accept_prepare_from_primary(message);
                }
                Status::ViewChange => {
                    // The view started without us hearing StartView.
                    self.await_start_view();
                }
            }
            return;
        }
        self.accept_repaired_prepare(message);
    }

    /// A prepare of the current view from its primary is canonical.
    fn accept_prepare_from_primary(&mut self, message: Message) {
        let header = message.header;
        assert_eq!(header.view, self.view);
        self.commit_max = self.commit_max.max(header.commit);
        let op = header.op;
        if op < self.journal.base() {
            // Committed and durable here; this primary's log is canonical, so the prepare is
            // the one we hold. A new primary whose commit is behind ours needs the ack.
            self.send_prepare_ok_for(&header);
            return;
        }
        if op <= self.commit_min {
            let entry = self.journal.entry(op);
            if entry.checksum() != Some(header.checksum) {
                return;
            }
            if entry.present() {
                // Our view's primary does not know we committed it yet: it needs our ack.
                self.send_prepare_ok(op);
            } else {
                // We applied it from memory before it was durable here, and it left the
                // cache: this is the primary answering our repair request.
                self.accept_repaired_prepare(message);
            }
            return;
        }
        if op < self.journal.head() {
            if let Some(next) = self.journal.header(op + 1) {
                if next.parent != header.checksum {
                    // Entries above are not of this log.
                    self.journal.truncate_after(op);
                }
            }
        }
        if op > 1 && op - 1 <= self.journal.head() {
            if let Some(previous) = self.journal.header(op - 1) {
                if previous.checksum != header.parent {
                    self.journal.forget_header(op - 1);
                }
            }
        }
        self.journal.set_header(header);
        self.cache_insert(message);
        match self.journal.entry(op).state {
            SlotState::Clean => self.send_prepare_ok(op),
            SlotState::Missing => self.write_prepare(op),
            SlotState::Writing => {}
        }
        // An answer to our repair request (the primary re-sends its own view's prepares).
        self.repair_onwards(op);
        self.commit_progress();
    }

    /// A prepare sent in answer to a repair request: accepted only if we expect its checksum.
    fn accept_repaired_prepare(&mut self, message: Message) {
        let header = message.header;
        let op = header.op;
        if op > self.journal.head() || op == 0 || op < self.journal.base() {
            return; // Below the base: committed and held here.
        }
        let expected = self.expected_checksum(op);
        if expected != Some(header.checksum) {
            return;
        }
        if self.journal.entry(op).present() {
            // A primary re-replicating an op prepared in an older view: ack it again (the
            // ack counts only for this exact checksum, in this view). Also when we already
            // committed it: the new primary may not know that it committed.
            self.send_prepare_ok(op);
            return;
        }
        self.journal.set_header(header);
        self.cache_insert(message);
        if self.journal.entry(op).state == SlotState::Missing || self.journal.entry(op).faulty {
            let entry = self.journal.entry_mut(op);
            if entry.state == SlotState::Clean {
                entry.state = SlotState::Missing;
            }
            if entry.state == SlotState::Missing {
                self.write_prepare(op);
            }
        }
        self.repair_onwards(op);
        self.commit_progress();
        if self.log_chosen {
            self.try_become_normal_primary();
        }
    }

    /// The checksum the op must have: from the chain above it, or its own known header.
    fn expected_checksum(&self, op: u64) -> Option<u128> {
        if op < self.journal.head() {
            if let Some(next) = self.journal.header(op + 1) {
                return Some(next.parent);
            }
        }
        self.journal.header(op).map(|h| h.checksum)
    }

    fn on_commit(&mut self, header: &Header) {
        if header.replica != self.primary_index(header.view)
            || header.replica == self.config.replica
        {
            return;
        }
        if header.view > self.view {
            self.jump_to_view(header.view);
            return;
        }
        if header.view < self.view {
            return;
        }
        if self.status == Status::ViewChange {
            // The primary of our view is normal: the view started without us hearing StartView.
            self.await_start_view();
            return;
        }
        self.normal_heartbeat_timeout.reset_if_running();
        self.commit_max = self.commit_max.max(header.commit);
        if header.commit <= self.journal.head() && header.commit > self.commit_min {
            if let Some(known) = self.journal.header(header.commit) {
                if known.checksum != header.context {
                    self.journal.forget_header(header.commit);
                }
            }
        }
        if header.op > self.journal.head() || self.commit_max > self.journal.head() {
            let op_max = header.op.max(self.commit_max);
            self.send_request_headers(
                self.primary_index(self.view),
                self.journal.head() + 1,
                op_max,
            );
        }
        self.commit_progress();
    }

    fn send_prepare_ok(&mut self, op: u64) {
        let Some(prepare) = self.journal.header(op).copied() else {
            return;
        };
        self.send_prepare_ok_for(&prepare);
    }

    /// Acknowledges `prepare`, durable in our log.
    fn send_prepare_ok_for(&mut self, prepare: &Header) {
        // An ack promises the prepare is in our log for this view: the log view must be
        // durable, or a crash would let recovery read the prepare as a stale write of an older
        // log view and drop it. `on_persisted` sends the acks held back here.
        if self.status != Status::Normal
            || self.is_primary()
            || self.log_view != self.view
            || self.log_view_durable != self.view
        {
            return;
        }
        let op = prepare.op;
        let mut header = self.header(Command::PrepareOk);
        header.op = op;
        header.context = prepare.checksum;
        header.parent = prepare.parent;
        header.commit = self.commit_min;
        header.timestamp = prepare.timestamp;
        let primary = self.primary_index(self.view);
        self.send_replica(primary, Message::new(header, Vec::new()));
    }

    fn send_prepare_oks_for_uncommitted(&mut self) {
        let head = self.journal.head();
        let from = self
            .commit_max
            .saturating_add(1)
            .max(head.saturating_sub(self.config.pipeline_max as u64) + 1);
        for op in from..=head {
            if self.journal.entry(op).present() {
                self.send_prepare_ok(op);
            }
        }
    }

    fn on_normal_heartbeat_timeout(&mut self) {
        if self.status != Status::Normal || self.is_primary() {
            self.normal_heartbeat_timeout.stop();
            return;
        }
        self.normal_heartbeat_timeout.backoff(&mut self.prng);
        // Vote for the next view; change only on a view-change quorum of votes.
        self.svc_votes |= self.bit(self.config.replica);
        let mut header = self.header(Command::StartViewChange);
        header.view = self.view + 1;
        self.broadcast(Message::new(header, Vec::new()));
        self.check_svc_quorum_normal();
    }

    fn check_svc_quorum_normal(&mut self) {
        let own = self.bit(self.config.replica);
        if self.status == Status::Normal
            && self.svc_votes & own != 0
            && self.svc_votes.count_ones() >= u32::from(self.quorums.view_change)
        {
            let next = self.view + 1;
            self.transition_to_view_change(next);
        }
    }

    // ----- writes and reads -----

    fn write_prepare(&mut self, op: u64) {
        let entry = self.journal.entry(op);
        if entry.state != SlotState::Missing {
            return;
        }
        let Some(message) = self.cached(op).cloned() else {
            return;
        };
        if message.header.view > self.log_view_durable {
            // Until our log view is durable, a crash would leave a journal holding prepares
            // of a view newer than the log view it reports, and its nacks would lie. The
            // prepare stays cached; `on_persisted` writes it.
            return;
        }
        if self.slot_writes.contains(&op) {
            // An older write chain to this slot is in flight (the slot was truncated and
            // reused): two writes to one sector may land in either order. Its completion
            // writes this one.
            return;
        }
        if self.slot_writes.len() >= SLOT_WRITES_MAX {
            return; // The repair timer retries.
        }
        if !self.config.redundant_headers && op > 1 && !self.below_is_written_chain(&message) {
            // An append-only log takes ops in order: a prepare above a gap (or above another
            // prepare than its parent) would wait there and could land long after a view
            // change replaced it, with no header zone to tell recovery it is stale. It is
            // written once the op below is (`on_header_written`).
            return;
        }
        self.slot_writes.insert(op);
        let checksum = message.header.checksum;
        self.journal.entry_mut(op).state = SlotState::Writing;
        let io = self.io(PendingIo::WritePrepare { op, checksum });
        self.actions.push(Action::WritePrepare { io, message });
        if self.config.bugs.has(Bug::AckBeforeDurable) {
            self.on_prepare_durable(op, checksum);
        }
    }

    /// The op below `message` is its parent, durable here or being written.
    fn below_is_written_chain(&self, message: &Message) -> bool {
        let below = message.header.op - 1;
        let Some(parent) = self.journal.header(below).map(|h| h.checksum) else {
            return false;
        };
        if parent != message.header.parent {
            return false;
        }
        self.journal.entry(below).present()
            || self.ios.values().any(|io| {
                matches!(io, PendingIo::WritePrepare { op, checksum }
                    if *op == below && *checksum == parent)
            })
    }

    fn on_prepare_written(&mut self, op: u64, checksum: u128) {
        assert!(self.slot_writes.contains(&op));
        if op > self.journal.head() || self.journal.entry(op).checksum() != Some(checksum) {
            // The slot was truncated or given another header meanwhile: write that instead.
            self.slot_write_abandoned(op);
            return;
        }
        if !self.config.redundant_headers {
            // The log made its own redundant record durable with the prepare.
            self.on_header_written(op, checksum);
            return;
        }
        self.write_header(op);
    }

    /// Writes the redundant header of `op`, the second half of its slot's write chain.
    fn write_header(&mut self, op: u64) {
        assert!(self.slot_writes.contains(&op));
        let header = self.journal.entry(op).header.expect("a header to write");
        let io = self.io(PendingIo::WriteHeader {
            op,
            checksum: header.checksum,
        });
        self.actions.push(Action::WriteHeader { io, header });
    }

    /// A slot's write chain ended without making `op` durable: the slot is free again.
    fn slot_write_abandoned(&mut self, op: u64) {
        let removed = self.slot_writes.remove(&op);
        assert!(removed);
        if op <= self.journal.head() {
            let entry = self.journal.entry_mut(op);
            if entry.state == SlotState::Writing {
                entry.state = SlotState::Missing;
            }
            self.write_prepare(op);
        }
    }

    fn on_header_written(&mut self, op: u64, checksum: u128) {
        if op > self.journal.head() || self.journal.entry(op).checksum() != Some(checksum) {
            self.slot_write_abandoned(op);
            return;
        }
        let removed = self.slot_writes.remove(&op);
        assert!(removed);
        let entry = self.journal.entry_mut(op);
        entry.state = SlotState::Clean;
        entry.faulty = false;
        if !self.config.bugs.has(Bug::AckBeforeDurable) {
            self.on_prepare_durable(op, checksum);
        }
        if !self.config.redundant_headers && op < self.journal.head() {
            // The op above may have waited for this one (an append-only log).
            self.write_prepare(op + 1);
        }
        if self.log_chosen {
            self.try_become_normal_primary();
        }
    }

    /// The prepare at `op` is durable here: count or send the acknowledgement.
    fn on_prepare_durable(&mut self, op: u64, checksum: u128) {
        if self.status != Status::Normal {
            return;
        }
        if self.is_primary() {
            let own = self.bit(self.config.replica);
            if let Some(entry) = self
                .pipeline
                .iter_mut()
                .find(|e| e.op == op && e.checksum == checksum)
            {
                entry.ok_from |= own;
            }
            self.commit_pipeline();
        } else if self.view_durable == self.view {
            self.send_prepare_ok(op);
        }
    }

    fn read_prepare(&mut self, op: u64, purpose: ReadPurpose) {
        let io = self.io(PendingIo::Read { op, purpose });
        match purpose {
            ReadPurpose::Commit => self.reads_commit += 1,
            ReadPurpose::Serve { .. } => self.reads_serve += 1,
        }
        self.actions.push(Action::ReadPrepare { io, op });
    }

    fn reading_for_commit(&self, op: u64) -> bool {
        self.ios.values().any(
            |p| matches!(p, PendingIo::Read { op: o, purpose: ReadPurpose::Commit } if *o == op),
        )
    }

    fn on_prepare_read(&mut self, op: u64, purpose: ReadPurpose, result: Option<Message>) {
        let expected = match purpose {
            ReadPurpose::Commit => {
                self.reads_commit -= 1;
                self.journal.entry(op).checksum()
            }
            ReadPurpose::Serve { checksum, .. } => {
                self.reads_serve -= 1;
                self.serve_next();
                Some(checksum)
            }
        };
        match result {
            Some(message)
                if Some(message.header.checksum) == expected && message.header.op == op =>
            {
                match purpose {
                    ReadPurpose::Commit => {
                        self.cache_insert(message);
                        self.commit_progress();
                        if self.log_chosen {
                            self.try_become_normal_primary();
                        }
                    }
                    ReadPurpose::Serve { to, .. } => self.send_replica(to, message),
                }
            }
            _ => {
                // Corrupt or misdirected on disk: this replica lost the prepare. Repair it (below
                // the base the journal no longer tracks the op: a peer asks another replica).
                if op <= self.journal.head()
                    && op >= self.journal.base()
                    && self.journal.entry(op).checksum() == expected
                    && self.journal.entry(op).state == SlotState::Clean
                {
                    let entry = self.journal.entry_mut(op);
                    entry.state = SlotState::Missing;
                    entry.faulty = true;
                }
            }
        }
    }

    // ----- commit path -----

    /// Applies whatever can be applied: on a normal primary through the pipeline (which also
    /// catches up older committed ops), elsewhere up to `commit_max`.
    fn commit_progress(&mut self) {
        if self.status == Status::Normal && self.is_primary() {
            self.commit_pipeline();
        } else {
            self.commit_journal();
        }
    }

    fn commit_journal(&mut self) {
        let head = self.journal.head();
        let target = self.commit_max.min(head);
        if self.commit_min >= target {
            return;
        }
        // In a view change the log below the head is not yet known to be canonical.
        if self.status != Status::Normal && !self.log_chosen {
            return;
        }
        let floor = self.journal.chain_floor(self.commit_min);
        if floor > self.commit_min + 1 {
            return; // A hash-chain break above commit_min: repair headers first.
        }
        while self.commit_min < target {
            let op = self.commit_min + 1;
            if let Some(message) = self.cached(op).cloned() {
                self.apply(message);
                continue;
            }
            // Prefetch a few reads from the journal.
            let mut prefetch = op;
            while prefetch <= target
                && self.reads_commit < READS_COMMIT_MAX
                && prefetch < op + READS_COMMIT_MAX as u64
            {
                if self.journal.entry(prefetch).present()
                    && self.cached(prefetch).is_none()
                    && !self.reading_for_commit(prefetch)
                {
                    self.read_prepare(prefetch, ReadPurpose::Commit);
                }
                prefetch += 1;
            }
            break;
        }
        if self.is_primary() && self.status == Status::Normal && !self.pipeline.is_empty() {
            // Entries committed while older ops were being applied.
            while let Some(front) = self.pipeline.front() {
                if front.op <= self.commit_min {
                    self.pipeline.pop_front();
                } else {
                    break;
                }
            }
        }
        self.compact_journal();
    }

    /// Bounds the journal's memory: once `2 * journal_keep_ops` entries lie below
    /// `commit_min`, forgets all but the last `journal_keep_ops` of them. Stops below any op
    /// not durable here (it still needs repair) or with a write chain in flight; every op
    /// below `commit_min` is committed, applied and canonical.
    fn compact_journal(&mut self) {
        let keep = self.config.journal_keep_ops;
        let base = self.journal.base();
        if self.commit_min.saturating_sub(base) < keep.saturating_mul(2) {
            return;
        }
        let target = self.commit_min - keep;
        let writing_from = self.slot_writes.first().copied().unwrap_or(u64::MAX);
        if !self.journal.entry(base).present() || writing_from <= base {
            return;
        }
        let mut op = base;
        // Bounded by `target - base`, which is at most `commit_min`.
        while op < target && op + 1 < writing_from && self.journal.entry(op + 1).present() {
            op += 1;
        }
        if op > base {
            self.journal.compact(op);
            assert!(self.journal.base() + keep <= self.commit_min);
        }
    }

    fn apply(&mut self, message: Message) {
        let header = message.header;
        assert_eq!(header.op, self.commit_min + 1);
        assert_eq!(
            Some(header.checksum),
            self.journal.header(header.op).map(|h| h.checksum)
        );
        let reply_body = match header.operation {
            operation::REGISTER => {
                self.sessions.register(header.client, header.op);
                Some(Vec::new())
            }
            operation::ROOT => None,
            _ => {
                if self.sessions.should_execute(&header) {
                    Some(self.state_machine.apply(
                        header.op,
                        header.timestamp,
                        header.operation,
                        &message.body,
                    ))
                } else {
                    None
                }
            }
        };
        self.commit_min = header.op;
        self.committed.push(header);
        if let Some(body) = reply_body {
            let mut reply = self.header(Command::Reply);
            reply.client = header.client;
            reply.session = if header.operation == operation::REGISTER {
                header.op
            } else {
                header.session
            };
            reply.request = header.request;
            reply.op = header.op;
            reply.commit = header.op;
            reply.timestamp = header.timestamp;
            reply.context = header.context;
            reply.operation = header.operation;
            let reply = Message::new(reply, body);
            if header.operation != operation::REGISTER {
                self.sessions.record_reply(
                    header.client,
                    header.request,
                    header.context,
                    reply.clone(),
                );
            }
            if self.status == Status::Normal && self.is_primary() {
                self.actions.push(Action::Send {
                    to: Peer::Client(header.client),
                    message: reply,
                });
            }
        }
    }

    // ----- view change -----

    fn transition_to_view_change(&mut self, view: u32) {
        assert!(view > self.view);
        self.view = view;
        self.status = Status::ViewChange;
        self.log_chosen = false;
        self.awaiting_start_view = false;
        self.dvcs.clear();
        self.repair_sources.clear();
        self.svc_votes = self.bit(self.config.replica);
        self.leave_votes = 0;
        self.pipeline.clear();
        self.request_queue.clear();
        self.prepare_timeout.stop();
        self.commit_message_timeout.stop();
        self.normal_heartbeat_timeout.stop();
        self.view_change_message_timeout.start();
        self.view_change_status_timeout
            .start_with_jitter(&mut self.prng);
        self.persist();
        self.send_view_change_messages();
        if self.quorums.view_change == 1 && self.is_primary() {
            self.try_choose_log();
        }
    }

    /// Our view started without us (its primary is normal): ask for its StartView. Votes
    /// gathered to enter the view are forgotten, so that only replicas still changing this
    /// view after now (its primary may be gone) can make us escalate.
    fn await_start_view(&mut self) {
        if self.awaiting_start_view {
            return;
        }
        self.awaiting_start_view = true;
        self.svc_votes = 0;
        self.send_request_start_view();
    }

    /// A backup learns of a newer view it did not take part in: wait for its StartView.
    fn jump_to_view(&mut self, view: u32) {
        assert!(view > self.view);
        self.transition_to_view_change(view);
        self.svc_votes = 0;
        self.awaiting_start_view = !self.is_primary();
        self.send_request_start_view();
    }

    fn send_view_change_messages(&mut self) {
        if self.status != Status::ViewChange {
            self.view_change_message_timeout.stop();
            return;
        }
        if self.awaiting_start_view {
            self.send_request_start_view();
            return;
        }
        if self.svc_votes & self.bit(self.config.replica) != 0 {
            let vote = self.view_change_vote();
            self.broadcast(vote);
        }
        if self.svc_votes.count_ones() >= u32::from(self.quorums.view_change) && !self.is_primary()
        {
            let dvc = self.build_dvc_message();
            let primary = self.primary_index(self.view);
            self.send_replica(primary, dvc);
        }
    }

    /// Our StartViewChange for the view we are changing to (sent in view-change status).
    fn view_change_vote(&self) -> Message {
        assert_eq!(self.status, Status::ViewChange);
        let mut header = self.header(Command::StartViewChange);
        header.flags = flags::SENDER_IN_VIEW_CHANGE;
        Message::new(header, Vec::new())
    }

    /// A view change that has not completed in time moves on to the next view, but only when
    /// a view-change quorum wants to leave this one: a replica that is alone (partitioned, or
    /// restarted as primary) must not climb views by itself, or its SVCs would drag a healthy
    /// cluster through one view change after another.
    fn on_view_change_status_timeout(&mut self) {
        let own = self.bit(self.config.replica);
        let leaving = self.svc_votes | self.leave_votes | own;
        if leaving.count_ones() >= u32::from(self.quorums.view_change) {
            let next = self.view + 1;
            self.transition_to_view_change(next);
        } else {
            self.view_change_status_timeout.backoff(&mut self.prng);
            self.send_view_change_messages();
        }
    }

    fn on_start_view_change(&mut self, header: &Header) {
        if header.replica == self.config.replica {
            return;
        }
        let from = self.bit(header.replica);
        let sender_in_view_change = header.flags & flags::SENDER_IN_VIEW_CHANGE != 0;
        if !sender_in_view_change && header.view == 0 {
            return;
        }
        // The view the sender is in: a normal sender votes to leave `header.view - 1`.
        let sender_view = if sender_in_view_change {
            header.view
        } else {
            header.view - 1
        };
        match self.status {
            Status::Normal => {
                if sender_in_view_change && header.view > self.view {
                    // A view change is under way above us: join it (the sender could never
                    // come back to our view).
                    self.transition_to_view_change(header.view);
                } else if sender_in_view_change && header.view == self.view {
                    // The sender missed the start of our view.
                    if self.is_primary() {
                        self.send_start_view(Some(header.replica));
                    }
                } else if !sender_in_view_change && header.view == self.view + 1 {
                    self.svc_votes |= from;
                    self.check_svc_quorum_normal();
                } else if !sender_in_view_change && sender_view > self.view {
                    // The sender is normal in a newer view: we missed its start.
                    self.jump_to_view(sender_view);
                }
            }
            Status::ViewChange => {
                if header.view < self.view && self.svc_votes & self.bit(self.config.replica) != 0 {
                    // Tell a replica behind us which view change is under way.
                    let vote = self.view_change_vote();
                    self.send_replica(header.replica, vote);
                }
                if sender_view > self.view {
                    if sender_in_view_change {
                        self.transition_to_view_change(header.view);
                    } else {
                        self.jump_to_view(sender_view);
                    }
                    return;
                }
                if !sender_in_view_change && sender_view == self.view {
                    // A normal replica of our view wants to leave it: our view started
                    // without us, and its primary may be gone.
                    self.leave_votes |= from;
                    if !self.is_primary() {
                        self.await_start_view();
                    }
                    return;
                }
                if header.view == self.view {
                    let before = self.svc_votes.count_ones();
                    self.svc_votes |= from;
                    // While waiting for StartView the votes only count toward escalation: a
                    // replica in view-change status for our view after we learned it started
                    // means its primary may be gone.
                    if !self.awaiting_start_view
                        && before < u32::from(self.quorums.view_change)
                        && self.svc_votes.count_ones() >= u32::from(self.quorums.view_change)
                    {
                        self.send_view_change_messages();
                        if self.is_primary() {
                            self.try_choose_log();
                        }
                    }
                }
            }
        }
    }

    fn build_dvc(&self) -> Dvc {
        // The canonical head may lie up to a pipeline below ours (our log may be from an older
        // view that prepared further), and the new primary decides every op up to a pipeline
        // below the canonical head: cover both.
        let head = self.journal.head();
        let count = head.min(2 * self.config.pipeline_max as u64 + 1);
        assert!(count as usize <= DVC_ENTRIES_MAX);
        // Not below the base: a compacted entry has no header and would read as a nack. Those
        // ops are at or below our commit_min, which the DVC reports, so the new primary
        // decides none of them (a journal opened from a checkpoint has its base that close).
        let first = (head + 1 - count).max(self.journal.base());
        let entries = (first..=head)
            .map(|op| {
                let entry = self.journal.entry(op);
                let present = entry.present();
                DvcEntry {
                    op,
                    header: entry.header,
                    present,
                    nack: !entry.faulty && !present,
                    canonical: entry
                        .header
                        .is_some_and(|h| self.canonical_in_log_view(&h, head)),
                }
            })
            .collect();
        Dvc {
            replica: self.config.replica,
            log_view: self.log_view,
            op: head,
            log_view_head: self.view_headers.last().map_or(0, |h| h.op),
            commit_min: self.commit_min,
            entries,
        }
    }

    /// Whether a journal header is known canonical for our log view: prepared in it, or
    /// installed when it started (the durable view headers), or our head (everything above the
    /// log view's start was prepared in it, and recovery drops anything else).
    fn canonical_in_log_view(&self, header: &Header, head: u64) -> bool {
        if header.view > self.log_view {
            return false;
        }
        header.op == head || known_canonical(header, self.log_view, &self.view_headers)
    }

    fn build_dvc_message(&self) -> Message {
        let dvc = self.build_dvc();
        let (body, bits) = dvc.encode_body();
        let mut header = self.header(Command::DoViewChange);
        header.log_view = self.log_view;
        header.op = dvc.op;
        header.commit = dvc.commit_min;
        header.present_bitset = bits.present;
        header.nack_bitset = bits.nack;
        header.canonical_bitset = bits.canonical;
        header.context = u128::from(dvc.log_view_head);
        Message::new(header, body)
    }

    fn on_do_view_change(&mut self, message: Message) {
        let header = message.header;
        if header.view < self.view || self.primary_index(header.view) != self.config.replica {
            return;
        }
        if header.view > self.view {
            self.transition_to_view_change(header.view);
        }
        if self.status == Status::Normal {
            // The sender missed our StartView.
            self.send_start_view(Some(header.replica));
            return;
        }
        if self.log_chosen {
            return;
        }
        let Some(dvc) = Dvc::decode(&header, &message.body) else {
            return;
        };
        self.dvcs.insert(header.replica, dvc);
        self.svc_votes |= self.bit(header.replica);
        self.try_choose_log();
    }

    fn try_choose_log(&mut self) {
        if self.status != Status::ViewChange
            || !self.is_primary()
            || self.log_chosen
            || self.view_durable < self.view
        {
            return;
        }
        let own = self.build_dvc();
        self.dvcs.insert(self.config.replica, own);
        if self.dvcs.len() < self.quorums.view_change as usize {
            return;
        }
        let dvcs: Vec<Dvc> = self.dvcs.values().cloned().collect();
        let nack_quorum = if self.config.bugs.has(Bug::TruncateWithoutNackQuorum) {
            1
        } else {
            self.quorums.nack
        };
        let params = ChoiceParams {
            replica_count: self.config.replica_count,
            nack_quorum,
            pipeline_max: self.config.pipeline_max as u64,
        };
        let choice = choose_log(&dvcs, &params);
        match choice {
            LogChoice::Ready {
                head,
                commit_max,
                headers,
                sources,
                timestamp_max,
            } => self.install_chosen_log(head, commit_max, headers, sources, timestamp_max),
            LogChoice::Awaiting { .. } | LogChoice::Deadlocked { .. } => {}
        }
    }

    fn install_chosen_log(
        &mut self,
        head: u64,
        commit_max: u64,
        headers: Vec<Header>,
        sources: BTreeMap<u64, u8>,
        timestamp_max: u64,
    ) {
        assert!(commit_max <= head);
        assert!(
            head == 0 || headers.last().is_some_and(|h| h.op == head),
            "the chosen log names its head"
        );
        if self.journal.head() > head {
            self.journal.truncate_after(head);
        }
        for header in &headers {
            if header.op > 0 {
                self.journal.set_header(*header);
            }
        }
        assert!(self.journal.head() >= head);
        if self.journal.head() > head {
            self.journal.truncate_after(head);
        }
        self.commit_max = self.commit_max.max(commit_max);
        self.prepare_timestamp = self.prepare_timestamp.max(timestamp_max);
        self.log_view = self.view;
        self.view_headers = headers
            .iter()
            .rev()
            .take(VIEW_HEADERS_MAX)
            .rev()
            .copied()
            .collect();
        self.repair_sources = sources;
        self.log_chosen = true;
        self.persist();
        self.repair();
        self.commit_progress();
        self.try_become_normal_primary();
    }

    fn try_become_normal_primary(&mut self) {
        if !self.log_chosen
            || self.status != Status::ViewChange
            || self.log_view_durable < self.view
        {
            return;
        }
        let head = self.journal.head();
        // Everything up to the head must be canonical, and the uncommitted ops held here.
        if self.journal.chain_floor(self.commit_max) > self.commit_max.max(1).min(head) && head > 0
        {
            return;
        }
        for op in self.commit_max + 1..=head {
            if !self.journal.entry(op).present() {
                return;
            }
            if self.cached(op).is_none() {
                if !self.reading_for_commit(op) && self.reads_commit < READS_COMMIT_MAX {
                    self.read_prepare(op, ReadPurpose::Commit);
                }
                return;
            }
        }
        self.log_chosen = false;
        self.status = Status::Normal;
        self.projection_ready = false;
        self.dvcs.clear();
        self.repair_sources.clear();
        let own = self.bit(self.config.replica);
        self.pipeline = (self.commit_max + 1..=head)
            .map(|op| PipelineEntry {
                op,
                checksum: self.journal.header(op).expect("present").checksum,
                ok_from: own,
            })
            .collect();
        self.start_primary_timers();
        self.send_start_view(None);
        self.commit_progress();
        self.commit_pipeline();
    }

    fn start_view_message(&self) -> Message {
        let head = self.journal.head();
        let floor = self.journal.chain_floor(0);
        let first = head
            .saturating_sub(VIEW_HEADERS_MAX as u64 - 1)
            .max(floor)
            .max(1);
        let mut body = Vec::new();
        for op in first..=head {
            body.extend_from_slice(&self.journal.header(op).expect("chained").encode());
        }
        let mut header = self.header(Command::StartView);
        header.op = head;
        header.commit = self.commit_max;
        Message::new(header, body)
    }

    fn send_start_view(&mut self, to: Option<u8>) {
        assert!(self.status == Status::Normal && self.is_primary());
        let message = self.start_view_message();
        match to {
            Some(replica) => self.send_replica(replica, message),
            None => self.broadcast(message),
        }
    }

    fn on_request_start_view(&mut self, header: &Header) {
        if header.view == self.view
            && self.status == Status::Normal
            && self.is_primary()
            && header.replica != self.config.replica
        {
            self.send_start_view(Some(header.replica));
        }
    }

    fn send_request_start_view(&mut self) {
        if self.is_primary() {
            return;
        }
        let header = self.header(Command::RequestStartView);
        let primary = self.primary_index(self.view);
        self.send_replica(primary, Message::new(header, Vec::new()));
    }

    fn on_start_view(&mut self, message: Message) {
        let header = message.header;
        if header.view < self.view
            || header.replica != self.primary_index(header.view)
            || header.replica == self.config.replica
        {
            return;
        }
        let Some(headers) = decode_headers(&message.body, header.op) else {
            return;
        };
        if headers.last().map(|h| h.op) != Some(header.op) && header.op != 0 {
            return;
        }
        let same_view_normal = header.view == self.view && self.status == Status::Normal;
        if !same_view_normal {
            if header.view > self.view {
                self.view = header.view;
            }
            if self.journal.head() > header.op {
                self.journal.truncate_after(header.op);
            }
            self.status = Status::Normal;
            self.log_view = self.view;
            self.log_chosen = false;
            self.awaiting_start_view = false;
            self.svc_votes = 0;
            self.dvcs.clear();
            self.pipeline.clear();
            self.request_queue.clear();
            self.view_headers = headers.clone();
            self.view_change_message_timeout.stop();
            self.view_change_status_timeout.stop();
            self.prepare_timeout.stop();
            self.commit_message_timeout.stop();
            self.normal_heartbeat_timeout
                .start_with_jitter(&mut self.prng);
            self.svc_window_timeout.start();
        } else {
            self.awaiting_start_view = false;
            self.normal_heartbeat_timeout.reset_if_running();
        }
        for view_header in &headers {
            if view_header.op < self.journal.head() {
                if let Some(next) = self.journal.header(view_header.op + 1) {
                    if next.parent != view_header.checksum
                        && !headers.iter().any(|h| h.op == view_header.op + 1)
                    {
                        self.journal.truncate_after(view_header.op);
                    }
                }
            }
            self.journal.set_header(*view_header);
        }
        self.commit_max = self
            .commit_max
            .max(header.commit)
            .min(self.journal.head().max(self.commit_max));
        if !same_view_normal {
            self.persist();
        } else if self.log_view_durable == self.view {
            self.send_prepare_oks_for_uncommitted();
        }
        self.repair();
        self.commit_progress();
    }

    // ----- repair -----

    fn repair(&mut self) {
        let repairing = match self.status {
            Status::Normal => true,
            Status::ViewChange => self.log_chosen,
        };
        if !repairing {
            return;
        }
        let head = self.journal.head();
        let mut budget = REPAIR_BUDGET;
        let primary = self.primary_index(self.view);
        let trusted_primary =
            (!self.is_primary() && self.status == Status::Normal).then_some(primary);

        if let Some(primary) = trusted_primary {
            if self.commit_max > head {
                self.send_request_headers(primary, head + 1, self.commit_max);
                budget -= 1;
            }
        }
        // Header breaks: walk down from the head along the hash chain.
        let floor = self.journal.chain_floor(0);
        if floor > self.journal.base().max(1) && floor <= head + 1 {
            let broken = floor - 1;
            let unanswered = self.repair_retry.get(&broken).copied();
            if let Some(next) = self.journal.header(floor).copied() {
                if let Some(target) = self.repair_target(unanswered, trusted_primary) {
                    self.send_request_prepare(target, broken, next.parent);
                    if self.repair_requested.len() < REPAIR_REQUESTED_MAX {
                        self.repair_requested.insert(broken, target);
                    }
                    budget = budget.saturating_sub(1);
                }
            }
            let low = broken.saturating_sub(HEADERS_PER_MESSAGE_MAX - 1).max(1);
            if let Some(target) = self.repair_target(unanswered, trusted_primary) {
                self.send_request_headers(target, low, broken);
                budget = budget.saturating_sub(1);
            }
        }
        // Prepares: oldest first, from the lowest op the chain covers.
        self.repair_prepares(floor.max(1), head, budget, trusted_primary);
        self.commit_progress();
        if self.log_chosen {
            self.try_become_normal_primary();
        }
    }

    /// A repaired prepare of `op` arrived: request the next missing ones at once rather than
    /// at the next repair timeout, keeping up to `REPAIR_REQUESTED_MAX` requests out (catch-up
    /// runs at the speed of round trips, not of the timer).
    fn repair_onwards(&mut self, op: u64) {
        if self.repair_requested.remove(&op).is_none() || self.status != Status::Normal {
            return;
        }
        let trusted_primary = (!self.is_primary()).then_some(self.primary_index(self.view));
        // A window from the lowest request still out: prepares above a gap wait in the cache
        // until it is filled, so the window bounds what catch-up holds in memory.
        let from = self
            .repair_requested
            .first_key_value()
            .map(|(first, _)| *first)
            .unwrap_or(op + 1)
            .min(op + 1);
        let to = self
            .journal
            .head()
            .min(from.saturating_add(REPAIR_REQUESTED_MAX as u64));
        self.repair_prepares(from, to, REPAIR_BUDGET, trusted_primary);
    }

    /// Writes or requests the missing prepares in `from..=to` whose checksum is known, up to
    /// `budget` requests, skipping ops already requested since the last repair timeout.
    fn repair_prepares(
        &mut self,
        from: u64,
        to: u64,
        mut budget: usize,
        trusted_primary: Option<u8>,
    ) {
        let mut op = from;
        while op <= to && budget > 0 && self.repair_requested.len() < REPAIR_REQUESTED_MAX {
            if self.repair_requested.contains_key(&op) {
                op += 1;
                continue;
            }
            let entry = self.journal.entry(op);
            if !entry.present() && entry.state != SlotState::Writing {
                if let Some(checksum) = entry.checksum() {
                    if self
                        .cache
                        .get(&op)
                        .is_some_and(|m| m.header.checksum == checksum)
                    {
                        let entry = self.journal.entry_mut(op);
                        entry.state = SlotState::Missing;
                        self.write_prepare(op);
                    } else {
                        let target = match self.repair_sources.get(&op) {
                            Some(holders) => self.pick_from(*holders),
                            None => {
                                let unanswered = self.repair_retry.get(&op).copied();
                                self.repair_target(unanswered, trusted_primary)
                            }
                        };
                        if let Some(target) = target {
                            self.send_request_prepare(target, op, checksum);
                            self.repair_requested.insert(op, target);
                            budget -= 1;
                        }
                    }
                }
            }
            op += 1;
        }
    }

    /// Where to ask for an op's prepare or headers: the primary of our view when we trust one
    /// (it holds every op), else any other replica; never the replica that left the same
    /// request unanswered last round (`unanswered`), when there is another. So a request the
    /// primary did not answer goes to a backup (the primary no longer repairs its own copy of
    /// a compacted op: if that copy is damaged only another replica can serve it), and one a
    /// dead primary did not answer goes to the new primary, not to the dead one again.
    fn repair_target(&mut self, unanswered: Option<u8>, trusted_primary: Option<u8>) -> Option<u8> {
        match trusted_primary {
            Some(primary) if unanswered != Some(primary) => Some(primary),
            _ => {
                let candidates: Vec<u8> =
                    self.others().filter(|r| Some(*r) != unanswered).collect();
                if candidates.is_empty() {
                    return self.random_other();
                }
                Some(candidates[self.prng.below(candidates.len() as u64) as usize])
            }
        }
    }

    fn pick_from(&mut self, holders: u8) -> Option<u8> {
        let candidates: Vec<u8> = self.others().filter(|r| holders & (1 << r) != 0).collect();
        if candidates.is_empty() {
            return self.random_other();
        }
        Some(candidates[self.prng.below(candidates.len() as u64) as usize])
    }

    fn send_request_prepare(&mut self, to: u8, op: u64, checksum: u128) {
        let mut header = self.header(Command::RequestPrepare);
        header.op = op;
        header.context = checksum;
        self.send_replica(to, Message::new(header, Vec::new()));
    }

    fn send_request_headers(&mut self, to: u8, op_min: u64, op_max: u64) {
        if op_min > op_max {
            return;
        }
        let op_min = op_min
            .max(op_max.saturating_sub(HEADERS_PER_MESSAGE_MAX - 1))
            .max(1);
        let mut header = self.header(Command::RequestHeaders);
        header.commit = op_min;
        header.op = op_max;
        self.send_replica(to, Message::new(header, Vec::new()));
    }

    fn on_request_prepare(&mut self, header: &Header) {
        if header.replica == self.config.replica
            || header.replica >= self.config.replica_count
            || header.op == 0
            || header.op > self.journal.head()
        {
            return;
        }
        if header.op < self.log_start {
            self.send_log_start(header.replica);
            return;
        }
        let read = ServeRead::Prepare {
            op: header.op,
            to: header.replica,
            checksum: header.context,
        };
        if header.op < self.journal.base() {
            // Compacted: committed and durable here. The read is checked against the checksum
            // the peer named, which it took from the canonical chain.
            self.serve(read);
            return;
        }
        let entry = self.journal.entry(header.op);
        if entry.checksum() != Some(header.context) {
            return;
        }
        if let Some(message) = self.cached(header.op).cloned() {
            self.send_replica(header.replica, message);
        } else if entry.present() {
            self.serve(read);
        }
    }

    /// Starts `read` now if fewer than `READS_SERVE_MAX` are under way, else queues it.
    fn serve(&mut self, read: ServeRead) {
        if self.reads_serve < READS_SERVE_MAX {
            self.start_serve_read(read);
        } else if self.serve_waiting.len() < SERVE_WAITING_MAX {
            self.serve_waiting.push_back(read);
        }
    }

    fn serve_next(&mut self) {
        assert!(self.reads_serve < READS_SERVE_MAX);
        if let Some(read) = self.serve_waiting.pop_front() {
            self.start_serve_read(read);
        }
    }

    fn start_serve_read(&mut self, read: ServeRead) {
        match read {
            ServeRead::Prepare { op, to, checksum } => {
                self.read_prepare(op, ReadPurpose::Serve { to, checksum });
            }
            ServeRead::Headers { to, op_min, op_max } => {
                let io = self.io(PendingIo::ReadHeaders { to, op_min, op_max });
                self.reads_serve += 1;
                self.actions
                    .push(Action::ReadHeaders { io, op_min, op_max });
            }
        }
        assert!(self.reads_serve <= READS_SERVE_MAX);
    }

    fn on_request_headers(&mut self, header: &Header) {
        if header.replica == self.config.replica || header.replica >= self.config.replica_count {
            return;
        }
        let op_max = header.op.min(self.journal.head());
        let op_min = header.commit.max(1);
        if op_min > op_max || op_max - op_min >= HEADERS_PER_MESSAGE_MAX {
            return;
        }
        // Below the log start only the base's header is held (in memory).
        let held_from = self.log_start.min(self.journal.base()).max(1);
        if op_min < held_from {
            self.send_log_start(header.replica);
        }
        let op_min = op_min.max(held_from);
        if op_min > op_max {
            return;
        }
        // Only headers hash-chained from our head, so we never spread stale ones.
        let chain_floor = self.journal.chain_floor(0);
        let base = self.journal.base();
        if op_min < base && chain_floor == base {
            // Below the base the chain is our committed log on disk: read it back.
            self.serve(ServeRead::Headers {
                to: header.replica,
                op_min,
                op_max: op_max.min(base - 1),
            });
        }
        let floor = chain_floor.max(op_min);
        if floor > op_max {
            return;
        }
        let mut body = Vec::new();
        for op in floor..=op_max {
            body.extend_from_slice(&self.journal.header(op).expect("chained").encode());
        }
        self.send_headers(header.replica, op_max, body);
    }

    fn send_headers(&mut self, to: u8, op_max: u64, body: Vec<u8>) {
        let mut reply = self.header(Command::Headers);
        reply.op = op_max;
        reply.commit = self.commit_max;
        reply.log_view = self.log_view;
        reply.operation = u8::from(self.status == Status::Normal && self.is_primary());
        self.send_replica(to, Message::new(reply, body));
    }

    /// Headers of compacted ops read back for a peer: sent if they are one hash chain of the
    /// requested ops (and link to the journal's entry above them, when it is held).
    fn on_headers_read(&mut self, to: u8, op_min: u64, op_max: u64, headers: Vec<Header>) {
        self.reads_serve -= 1;
        self.serve_next();
        assert!(headers.len() as u64 <= op_max + 1 - op_min);
        let first_op = op_max + 1 - headers.len() as u64;
        let mut parent: Option<u128> = None;
        for (expected_op, header) in (first_op..).zip(headers.iter()) {
            assert_eq!(header.op, expected_op, "the host reads the ops asked for");
            assert_eq!(header.command, Command::Prepare);
            if parent.is_some_and(|parent| parent != header.parent) {
                return; // Not one chain: a stale record on disk. The peer asks elsewhere.
            }
            parent = Some(header.checksum);
        }
        if let (Some(last), Some(above)) = (headers.last(), self.journal.header(op_max + 1)) {
            if above.parent != last.checksum {
                return;
            }
        }
        if headers.is_empty() {
            return;
        }
        let mut body = Vec::with_capacity(headers.len() * crate::header::HEADER_SIZE);
        for header in &headers {
            body.extend_from_slice(&header.encode());
        }
        self.send_headers(to, op_max, body);
    }

    fn on_headers(&mut self, message: Message) {
        let header = message.header;
        let Some(headers) = decode_headers(&message.body, header.op) else {
            return;
        };
        // A normal primary of our own view is the canonical log.
        let trusted = header.operation == 1
            && header.view == self.view
            && header.replica == self.primary_index(self.view)
            && self.status == Status::Normal
            && !self.is_primary();
        let floor_before = self.journal.chain_floor(0);
        let covered_before = (self.journal.head() + 1).saturating_sub(floor_before);
        for candidate in headers.iter().rev() {
            let op = candidate.op;
            if op <= self.journal.base() || op > self.config.ops_max {
                continue; // Ops at or below the base are committed and held here.
            }
            if trusted {
                if op > self.journal.head() {
                    self.journal.extend_to(op);
                }
                if op < self.journal.head() {
                    if let Some(next) = self.journal.header(op + 1) {
                        if next.parent != candidate.checksum {
                            self.journal.forget_header(op + 1);
                        }
                    }
                }
                self.journal.set_header(*candidate);
            } else if op < self.journal.head()
                && self
                    .journal
                    .header(op + 1)
                    .is_some_and(|next| next.parent == candidate.checksum)
            {
                self.journal.set_header(*candidate);
            }
        }
        if trusted {
            self.commit_max = self.commit_max.max(header.commit.min(self.journal.head()));
            // Catching up: while each batch lengthens the chain, ask for the one below it at
            // once instead of at the next repair timeout.
            let floor = self.journal.chain_floor(0);
            let covered = (self.journal.head() + 1).saturating_sub(floor);
            if covered > covered_before && floor > self.journal.base().max(1) {
                let broken = floor - 1;
                let low = broken.saturating_sub(HEADERS_PER_MESSAGE_MAX - 1).max(1);
                self.send_request_headers(header.replica, low, broken);
            }
        }
        self.commit_progress();
    }
}

/// Headers in a StartView/Headers body: ascending, contiguous, each verified, ending at `head`.
fn decode_headers(body: &[u8], head: u64) -> Option<Vec<Header>> {
    use crate::header::HEADER_SIZE;
    if !body.len().is_multiple_of(HEADER_SIZE)
        || body.len() / HEADER_SIZE > HEADERS_PER_MESSAGE_MAX as usize
    {
        return None;
    }
    let mut headers = Vec::with_capacity(body.len() / HEADER_SIZE);
    for chunk in body.chunks_exact(HEADER_SIZE) {
        let raw: &[u8; HEADER_SIZE] = chunk.try_into().ok()?;
        let header = Header::decode(raw).ok()?;
        if header.command != Command::Prepare {
            return None;
        }
        if let Some(previous) = headers.last() {
            let previous: &Header = previous;
            if header.op != previous.op + 1 || header.parent != previous.checksum {
                return None;
            }
        }
        headers.push(header);
    }
    if let Some(last) = headers.last() {
        if last.op != head {
            return None;
        }
    }
    Some(headers)
}
