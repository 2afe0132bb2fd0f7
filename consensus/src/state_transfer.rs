//! State transfer: how a replica catches up once the ops it lacks are gone from every peer's
//! log (a peer's log starts above op 1 after it dropped a prefix below its checkpoint).
//!
//! * A peer asked for a prepare or headers below its `log_start` answers `LogStart`: its log
//!   start and its `commit_min`.
//! * A replica that cannot apply its next op from such a peer (`commit_min + 1` below the
//!   peer's log start) asks it for a checkpoint, in chunks of at most `BODY_SIZE_MAX` bytes
//!   (`RequestCheckpoint` / `Checkpoint`). The peer encodes its state as of its own
//!   `commit_min` once per transfer and serves the chunks from that encoding.
//! * Any replica's applied state is a committed prefix of the one canonical log, so the
//!   checkpoint of any peer is one the receiver may adopt; the encoding's own checksum and the
//!   op's header (checked against the checksum the sender named) guard the bytes.
//! * Once the last chunk is in, the replica asks its host to install it
//!   (`Action::InstallCheckpoint`) and stops acting: the host saves the checkpoint durably,
//!   cuts the log where it does not hold the checkpoint's op, and opens the replica again
//!   from its disk, which starts it at that op.
//! * A peer keeps one encoding per receiver (two receivers do not restart each other), and
//!   drops it once it went unused for a repair round (a lost last chunk can still be asked
//!   for again).
//! * A transfer with no chunk for a repair round asks for its next chunk again; after
//!   `TRANSFER_STALLS_MAX` such rounds it is dropped, and the next `LogStart` starts another
//!   one (from any peer).
//! * Ops below `commit_min` that this replica lost and that every other replica has dropped
//!   (each reported a log start above them) are given up (`Journal::give_up_to`), so the
//!   journal can still compact past them.

use bytes::Bytes;

use super::{Action, Replica, StateMachine};
use crate::checkpoint::{Checkpoint, CHECKPOINT_SIZE_MAX};
use crate::header::Command;
use crate::message::{Message, BODY_SIZE_MAX};
use crate::sessions::ClientSessions;

/// The largest checkpoint chunk one message carries.
pub const CHECKPOINT_CHUNK_MAX: usize = BODY_SIZE_MAX;
/// Repair rounds without a chunk before a transfer is dropped (each asks again).
const TRANSFER_STALLS_MAX: u8 = 3;

/// A checkpoint being received from one peer.
#[derive(Debug)]
pub(super) struct Transfer {
    from: u8,
    /// The checkpoint's op and its checksum, and the encoding's size, as the first chunk
    /// named them (op 0 until it arrives).
    op: u64,
    op_checksum: u128,
    size: u64,
    bytes: Vec<u8>,
    /// A chunk arrived since the last repair timeout.
    progressed: bool,
    /// Repair rounds in a row without a chunk.
    stalls: u8,
}

/// The encoding a peer serves one receiver's chunks from, built once per transfer.
#[derive(Debug)]
pub(super) struct Served {
    op: u64,
    op_checksum: u128,
    bytes: Bytes,
    /// A chunk was asked for since the last repair timeout.
    used: bool,
}

impl<S: StateMachine> Replica<S> {
    /// The lowest op this replica's log holds (1 unless the host dropped a prefix).
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// The host dropped its log's prefix below `op` (it keeps a checkpoint at or above
    /// `op - 1`), or opened a log that starts there. Peers asking for anything below it get
    /// `LogStart` instead.
    pub fn set_log_start(&mut self, op: u64) {
        assert!(op >= 1);
        assert!(
            op <= self.journal.base() + 1,
            "log start {op} above the journal's base {} + 1",
            self.journal.base()
        );
        assert!(op <= self.commit_min + 1, "log start {op} above commit + 1");
        self.log_start = op;
    }

    /// True once the replica asked its host to install a checkpoint: it does nothing more
    /// until the host opens it again.
    pub fn installing(&self) -> bool {
        self.installing
    }

    pub(super) fn send_log_start(&mut self, to: u8) {
        let mut header = self.header(Command::LogStart);
        header.op = self.log_start;
        header.commit = self.commit_min;
        self.send_replica(to, Message::new(header, Vec::new()));
    }

    pub(super) fn on_log_start(&mut self, header: &crate::header::Header) {
        if header.replica == self.config.replica || header.op <= 1 {
            return;
        }
        let peer_start = header.op;
        let peer_commit = header.commit;
        self.peer_log_start[usize::from(header.replica)] = peer_start;
        if self.commit_min + 1 >= peer_start {
            // We do not need what the peer dropped to go on. Whatever below it we still lack
            // (a damaged record) is given up once no other replica holds it either.
            let others_start = self
                .others()
                .map(|r| self.peer_log_start[usize::from(r)])
                .min()
                .unwrap_or(0);
            self.give_up_below(others_start.min(self.commit_min + 1));
            return;
        }
        if peer_commit <= self.commit_min || self.transfer.is_some() {
            return;
        }
        self.transfer = Some(Transfer {
            from: header.replica,
            op: 0,
            op_checksum: 0,
            size: 0,
            bytes: Vec::new(),
            progressed: true,
            stalls: 0,
        });
        self.send_request_checkpoint(header.replica, 0, 0);
    }

    fn send_request_checkpoint(&mut self, to: u8, op: u64, offset: u64) {
        let mut header = self.header(Command::RequestCheckpoint);
        header.op = op;
        header.commit = offset;
        self.send_replica(to, Message::new(header, Vec::new()));
    }

    /// Serves one chunk of our checkpoint: from the encoding of this receiver's transfer, or
    /// of our state now when it starts one (offset 0).
    pub(super) fn on_request_checkpoint(&mut self, header: &crate::header::Header) {
        let to = header.replica;
        if to == self.config.replica {
            return;
        }
        let offset = header.commit;
        if offset == 0 {
            self.served.remove(&to);
            let Some(checkpoint) = self.checkpoint() else {
                return;
            };
            let Ok(bytes) = checkpoint.encode() else {
                return; // Larger than any checkpoint may be: nothing to offer.
            };
            self.served.insert(
                to,
                Served {
                    op: checkpoint.op,
                    op_checksum: checkpoint.op_checksum,
                    bytes: Bytes::from(bytes),
                    used: true,
                },
            );
        }
        let Some(served) = self.served.get_mut(&to) else {
            return;
        };
        if (header.op != 0 && header.op != served.op) || offset >= served.bytes.len() as u64 {
            return; // Another encoding than the one served now: the receiver starts again.
        }
        served.used = true;
        let size = served.bytes.len();
        let end = (offset as usize + CHECKPOINT_CHUNK_MAX).min(size);
        let chunk = served.bytes.slice(offset as usize..end);
        let (op, op_checksum) = (served.op, served.op_checksum);
        let mut reply = self.header(Command::Checkpoint);
        reply.op = op;
        reply.parent = op_checksum;
        reply.commit = offset;
        reply.context = size as u128;
        self.send_replica(to, Message::new(reply, chunk));
    }

    pub(super) fn on_checkpoint_chunk(&mut self, message: Message) {
        let header = message.header;
        let commit_min = self.commit_min;
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        if header.replica != transfer.from {
            return;
        }
        let fits = header.context > 0 && header.context <= CHECKPOINT_SIZE_MAX as u128;
        let next = header.commit == 0
            || (header.op == transfer.op
                && header.parent == transfer.op_checksum
                && header.context == u128::from(transfer.size)
                && header.commit == transfer.bytes.len() as u64);
        if !fits || !next || header.op <= commit_min {
            self.transfer = None; // Out of order, or no longer ahead of us: start again later.
            return;
        }
        if header.commit == 0 {
            transfer.op = header.op;
            transfer.op_checksum = header.parent;
            transfer.size = header.context as u64;
            transfer.bytes.clear();
        }
        if transfer.bytes.len() + message.body.len() > transfer.size as usize {
            self.transfer = None;
            return;
        }
        transfer.bytes.extend_from_slice(&message.body);
        transfer.progressed = true;
        if (transfer.bytes.len() as u64) < transfer.size {
            let (from, op, offset) = (transfer.from, transfer.op, transfer.bytes.len() as u64);
            self.send_request_checkpoint(from, op, offset);
            return;
        }
        let transfer = self.transfer.take().expect("checked above");
        assert_eq!(transfer.bytes.len() as u64, transfer.size);
        let Ok(mut checkpoint) = Checkpoint::decode(&transfer.bytes) else {
            return;
        };
        if checkpoint.op != transfer.op
            || checkpoint.op_checksum != transfer.op_checksum
            || ClientSessions::decode(&checkpoint.sessions, self.config.clients_max).is_none()
        {
            return;
        }
        // The machine must take it (the open would drop it otherwise, and ask again). A
        // restore that fails leaves the state as it was; one that succeeds is moot, since
        // the replica is done and opens again from disk.
        if !self.state_machine.restore(&checkpoint.machine) {
            return;
        }
        assert!(checkpoint.op > self.commit_min);
        checkpoint.installed = true;
        self.installing = true;
        self.actions.push(Action::InstallCheckpoint { checkpoint });
    }

    /// At each repair timeout: a transfer with no chunk since the last one asks for its next
    /// chunk again, and is dropped after `TRANSFER_STALLS_MAX` such rounds; encodings served
    /// to a peer that asked for nothing since the last one are dropped.
    pub(super) fn check_transfer_progress(&mut self) {
        self.served
            .retain(|_, served| std::mem::take(&mut served.used));
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        if transfer.progressed {
            transfer.progressed = false;
            transfer.stalls = 0;
            return;
        }
        transfer.stalls += 1;
        if transfer.stalls > TRANSFER_STALLS_MAX {
            self.transfer = None;
            return;
        }
        let (from, op, offset) = (transfer.from, transfer.op, transfer.bytes.len() as u64);
        self.send_request_checkpoint(from, op, offset);
    }

    /// Moves the journal's base up to `op - 1` over ops below our commit that we do not hold
    /// and that no other replica holds any more (the caller passes the lowest log start they
    /// reported).
    fn give_up_below(&mut self, op: u64) {
        let base = self.journal.base();
        if op <= base + 1 {
            return;
        }
        let target = op - 1;
        assert!(target <= self.commit_min);
        let writing_from = self.slot_writes.first().copied().unwrap_or(u64::MAX);
        if writing_from <= target || self.journal.header(target).is_none() {
            return;
        }
        let lacking = (base..=target).any(|o| !self.journal.entry(o).present());
        if lacking {
            self.journal.give_up_to(target);
        }
    }
}
