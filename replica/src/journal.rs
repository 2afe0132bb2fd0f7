//! `SegmentJournal`: a VSR group's journal kept in a partition log ("segment as WAL"). It runs
//! the consensus core's prepare writes and reads against a `PartitionLog` and rebuilds the
//! core's journal from it at open.
//!
//! The log is append-only by op, while the core writes a prepare whenever it has one: in
//! order, into a gap above the log's end (repair fills the ops below later), or over an op
//! the log holds (the same prepare again, a repair of a faulty one, or, after a view change,
//! another prepare, which cuts the log there first). A write above the end waits, held in
//! memory, for its turn, but only while a write of the op below is under way (the core issues
//! a prepare only on top of one written or being written): a write with nothing coming below
//! it, or whose writer below ended without appending, completes as `Abandoned` and the core
//! writes it again when it can. A held write never waits on a write that was not issued, so
//! held writes cannot fill the core's slot writes while the one they wait for has no room. A
//! cut drops the held writes above it, and they complete as `Abandoned`, never as written. A
//! write completes as written only once its record and index entry are durable, so the
//! core's "prepare and header durable" is one completion (`redundant_headers = false`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::Bytes;
use futures_channel::oneshot;
use galgo_consensus::header::HEADER_SIZE;
use galgo_consensus::recovery::{
    recover_journal, recover_journal_from, RecoveredJournal, RecoveryBugs, SlotRead,
};
use galgo_consensus::{Command, DurableState, Header, Message};
use galgo_storage::{Disk, EntryMeta, LogConfig, PartitionLog, StorageError};

/// Writes held above the log's end, at most: the core keeps at most this many slot writes in
/// flight.
pub const HELD_MAX: usize = 256;
/// Headers one `read_headers` call reads, at most (the core asks for one message's worth).
pub const HEADERS_READ_MAX: u64 = 256;
/// Executor turns a cut or repair waits, at most, for appends in flight to finish.
const EXCLUSIVE_TURNS_MAX: u32 = 100_000;

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The prepare is durable in the log.
    Written,
    /// A later write cut the log below this prepare before it was written.
    Abandoned,
}

/// What a prepare's body means to the log: the first offset and the number of messages it
/// appends (0 for every op that is not a message batch). Given the log's next offset.
pub type MessagesOf = fn(&Message, u64) -> (u64, u32);

/// Every op appends no messages: the metadata group and tests.
pub fn no_messages(_: &Message, next_offset: u64) -> (u64, u32) {
    (next_offset, 0)
}

struct Held {
    turn: oneshot::Sender<WriteOutcome>,
}

/// The checkpoint a journal opens from (one `checkpoint_restores` accepted).
#[derive(Clone, Copy, Debug)]
pub struct CheckpointStart {
    /// The prepare header of the checkpoint's op.
    pub header: Header,
    /// The log offset after that op (where a log cut to start after it starts).
    pub next_offset: u64,
    /// Sent by a peer (`Checkpoint::installed`): the log must hold its op, or start after it.
    pub installed: bool,
}

/// What one attempt at a write decided.
enum Step {
    Done(WriteOutcome),
    /// Wait until the op below is submitted, then try again.
    Hold,
}

pub struct SegmentJournal<'d, D: Disk> {
    disk: &'d D,
    log: PartitionLog<'d, D>,
    messages_of: MessagesOf,
    /// Writes waiting for the log to reach their op: told `Written` when it is their turn
    /// to append, `Abandoned` when a cut drops them.
    held: RefCell<BTreeMap<u64, Held>>,
    /// Checksums of ops submitted and not yet durable.
    queued: RefCell<BTreeMap<u64, u128>>,
    /// How many `write_prepare` calls are under way, by op: a write may be held only while
    /// the op below has one.
    writing: RefCell<BTreeMap<u64, u32>>,
    /// Ops after which the log was cut since the last `take_cuts`.
    cuts: RefCell<Vec<u64>>,
    root_checksum: u128,
    /// The prepare header of the op just below the log's first op, when the log starts
    /// after a checkpoint of that op: the first append chains to it.
    below_start: Option<Header>,
}

impl<'d, D: Disk> SegmentJournal<'d, D> {
    /// Opens the log in `config.dir` and rebuilds the core's journal from it and the durable
    /// view state. Ops the rebuilt journal does not keep (a view change had replaced them
    /// before the crash) are cut from the log.
    ///
    /// `checkpoint` is the prepare header of the op of a checkpoint the replica will open from
    /// (one `checkpoint_restores` accepted). The journal then starts at that op (its header
    /// read back with that checksum), or just below the lowest op under it the log reports
    /// faulty, so that the core still repairs it: the ops below are not read at all. Ops from
    /// there up to the checkpoint's are known by their prepare header alone, read and checked
    /// by its own checksum (the rest of those records is verified by the reads that need it:
    /// a repair, a poll). Every op above it is read and verified whole.
    ///
    /// A log must start after, or hold intact, the op of a checkpoint installed from a peer
    /// (state transfer), and so must a log that starts above op 1. Where it does not (the
    /// install, or a crash, came before the cut), it is cut now: every segment goes and it
    /// starts empty after that op (`PartitionLog::reset_to`). It holds the op when its record
    /// reads back with the checkpoint's checksum, or is damaged with records above it (those
    /// may be acknowledged: they are kept, and the damaged op is known by the checkpoint's
    /// header). A log that starts above op 1 needs a checkpoint at or above the op before its
    /// start: without one it does not open (`Unrecoverable`).
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        disk: &'d D,
        config: LogConfig,
        durable: &DurableState,
        root: Header,
        ops_max: u64,
        messages_of: MessagesOf,
        recovery_bugs: RecoveryBugs,
        checkpoint: Option<CheckpointStart>,
    ) -> Result<(SegmentJournal<'d, D>, RecoveredJournal), StorageError> {
        let dir = config.dir.clone();
        let (log, report) = PartitionLog::open(disk, config, 1, 0).await?;
        let mut faulty: Vec<u64> = report.faulty.iter().map(|f| f.op).collect();
        let mut cut_after = None;
        if let Some(start) = checkpoint.filter(|c| c.installed || log.first_op() > 1) {
            let op = start.header.op;
            let (log_start, op_end) = (log.first_op(), log.op_end());
            if op + 1 < log_start {
                // An older checkpoint than the log's start (the newest file was lost): the
                // ops between are gone. Never cut the log back to it.
                return Err(StorageError::Unrecoverable(format!(
                    "the log in {dir:?} starts at op {log_start}, after the checkpoint of op \
                     {op}: the ops between are gone"
                )));
            }
            let holds = op + 1 == log_start
                || op >= log_start
                    && op < op_end
                    && match read_header(&log, op).await {
                        Some(read) => read.checksum == start.header.checksum,
                        // Damaged: what is above it may be acknowledged, so it stays.
                        None => op + 1 < op_end,
                    };
            let holds =
                holds && !(start.installed && recovery_bugs.cut_log_at_every_installed_open);
            if !holds {
                log.reset_to(op + 1, start.next_offset).await?;
                faulty.clear();
                if op_end > op + 1 {
                    cut_after = Some(op); // A suffix not of the canonical log went too.
                }
            }
        }
        let op_end = log.op_end();
        let log_start = log.first_op();
        // A checkpoint from a peer stands for its op as a cut log's does: the ops below it
        // may be gone from every peer, so the log is never applied from op 1 instead.
        let covered = log_start > 1 || checkpoint.is_some_and(|c| c.installed);
        let checkpoint = checkpoint.map(|c| c.header);
        let checkpoint = checkpoint.as_ref();
        let checkpoint_op = checkpoint.map_or(0, |header| header.op);
        if let Some(header) = checkpoint.filter(|h| covered && h.op >= log_start.max(2)) {
            // Its record read back damaged (it stayed for the records above it): repair it
            // like any faulty op, if a peer still holds it.
            if header.op < op_end
                && !faulty.contains(&header.op)
                && read_header(&log, header.op).await.is_none()
            {
                log.mark_faulty(header.op).await?;
                faulty.push(header.op);
            }
        }
        let base = match checkpoint {
            Some(header) if covered && header.op + 1 >= log_start && header.op < op_end => {
                // A cut log: the checkpoint's header stands for its op whatever the record.
                let held = Some(*header);
                match faulty.iter().filter(|f| **f <= header.op).min() {
                    Some(lowest) if *lowest > log_start => {
                        read_header(&log, lowest - 1).await.or(held)
                    }
                    _ => held,
                }
            }
            Some(header) if log_start > 1 && header.op + 1 == log_start => Some(*header),
            _ if log_start > 1 => {
                return Err(StorageError::Unrecoverable(format!(
                    "the log in {dir:?} starts at op {log_start}, and no checkpoint holds the \
                     ops before it ({})",
                    checkpoint.map_or("none opens".to_string(), |h| format!("one of op {}", h.op)),
                )));
            }
            Some(header) if header.op < op_end && !faulty.contains(&header.op) => {
                let held = read_header(&log, header.op)
                    .await
                    .filter(|read| read.checksum == header.checksum);
                match faulty.iter().filter(|f| **f <= header.op).min() {
                    None => held,
                    Some(lowest) if held.is_some() && *lowest > 1 => {
                        read_header(&log, lowest - 1).await
                    }
                    Some(_) => None,
                }
            }
            _ => None,
        };
        let first_op = base.map_or(1, |header| header.op + 1);
        let mut slots = Vec::with_capacity(op_end.saturating_sub(first_op) as usize);
        for op in first_op..op_end {
            let read = if faulty.contains(&op) {
                (SlotRead::Acknowledged, SlotRead::Corrupt)
            } else {
                let read = if op <= checkpoint_op {
                    read_header(&log, op).await
                } else {
                    read_message(&log, op).await.map(|message| message.header)
                };
                match read {
                    Some(header) => (SlotRead::Valid(header), SlotRead::Valid(header)),
                    None => {
                        // Intact to the log, yet not this op's prepare: faulty, repair it.
                        log.mark_faulty(op).await?;
                        faulty.push(op);
                        (SlotRead::Acknowledged, SlotRead::Corrupt)
                    }
                }
            };
            slots.push(read);
        }
        let mut recovered = match base {
            Some(base) => recover_journal_from(base, ops_max, durable, &slots, recovery_bugs),
            None => recover_journal(root, ops_max, durable, &slots, recovery_bugs),
        };
        if let Some(header) = checkpoint.filter(|_| covered) {
            // In a cut log the checkpoint's op may be damaged below the base chosen to repair
            // an op under it: its header is the checkpoint's (a committed op).
            let journal = &mut recovered.journal;
            if header.op > journal.base() && header.op <= journal.head() {
                if journal.header(header.op).is_none() {
                    journal.set_header(*header);
                }
                if journal.header(header.op).map(|h| h.checksum) != Some(header.checksum) {
                    return Err(StorageError::Unrecoverable(format!(
                        "the log in {dir:?} holds another op {} than its checkpoint's",
                        header.op
                    )));
                }
            }
        }
        assert!(recovered.header_fixes.is_empty(), "no header zone to fix");
        assert!(recovered.journal.base() <= checkpoint_op);
        let journal = SegmentJournal {
            disk,
            log,
            messages_of,
            held: RefCell::new(BTreeMap::new()),
            queued: RefCell::new(BTreeMap::new()),
            writing: RefCell::new(BTreeMap::new()),
            cuts: RefCell::new(Vec::new()),
            root_checksum: root.checksum,
            below_start: checkpoint
                .copied()
                .filter(|header| header.op + 1 == log_start && log_start > 1),
        };
        journal.cuts.borrow_mut().extend(cut_after);
        let head = recovered.journal.head();
        if journal.log.op_end() > head + 1 {
            journal.cut_after(head).await?;
        }
        Ok((journal, recovered))
    }

    pub fn log(&self) -> &PartitionLog<'d, D> {
        &self.log
    }

    /// Makes `message` the durable prepare of its op (see the module comment). While another
    /// write cuts or repairs the log (it answers `Busy`), it waits its turn and tries again;
    /// while the log's op below is not the one `message` chains to, it is held.
    pub async fn write_prepare(&self, message: Message) -> Result<WriteOutcome, StorageError> {
        let op = message.header.op;
        assert!(op >= 1, "the root prepare is never written");
        // Ends this write's turn in `writing` however it ends (a dropped future included).
        let _writing = WritingGuard::enter(self, op);
        for _ in 0..EXCLUSIVE_TURNS_MAX {
            match self.try_write_prepare(&message).await {
                Ok(Step::Done(outcome)) => return Ok(outcome),
                Ok(Step::Hold) => {
                    if !self.writing.borrow().contains_key(&(op - 1)) {
                        // Nothing is coming below: holding would wait for good.
                        return Ok(WriteOutcome::Abandoned);
                    }
                    let (turn, wait) = oneshot::channel();
                    {
                        let mut held = self.held.borrow_mut();
                        if let Some(replaced) = held.insert(op, Held { turn }) {
                            let _ = replaced.turn.send(WriteOutcome::Abandoned);
                        }
                        assert!(
                            held.len() <= HELD_MAX,
                            "more held writes than the core issues"
                        );
                    }
                    // Told `Written` when the op below is submitted or its write ended: then
                    // it tries again.
                    if wait.await.unwrap_or(WriteOutcome::Abandoned) == WriteOutcome::Abandoned {
                        return Ok(WriteOutcome::Abandoned);
                    }
                }
                Err(StorageError::Busy) => self.disk.yield_now().await,
                Err(error) => return Err(error),
            }
        }
        Err(StorageError::Busy)
    }

    async fn try_write_prepare(&self, message: &Message) -> Result<Step, StorageError> {
        let op = message.header.op;
        let checksum = message.header.checksum;
        // An op still queued in the log is waited for first, so what the log holds is known.
        self.wait_while(|| op >= self.log.op_end() && op < self.log.next_append().0)
            .await?;
        let (next_op, _, _) = self.log.next_append();
        if op > next_op {
            return Ok(Step::Hold); // Above a gap.
        }
        if op < next_op {
            // A faulty op's index entry may still read fine: ask the log's faulty list first.
            let faulty = self.log.faulty().iter().any(|f| f.op == op);
            let found = if faulty {
                Err(StorageError::Faulty(op))
            } else {
                self.log.entry(op).await
            };
            let mut repair = faulty;
            match found {
                Ok(entry) if entry.meta.checksum == checksum => {
                    // The same prepare: durable, if its record still reads back intact.
                    if read_message(&self.log, op).await.is_some() {
                        return Ok(Step::Done(WriteOutcome::Written));
                    }
                    self.log.mark_faulty(op).await?;
                    repair = true;
                }
                Ok(_) | Err(StorageError::Faulty(_)) | Err(StorageError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
            if repair {
                if let Some(meta) = self.repair_meta(message, op).await {
                    match self.log.repair(meta, Bytes::from(message.encode())).await {
                        Ok(()) => return Ok(Step::Done(WriteOutcome::Written)),
                        Err(StorageError::Busy) => return Err(StorageError::Busy),
                        // The slot cannot take this prepare in place: replace it below.
                        Err(_) => {}
                    }
                }
            }
        }
        // Append (after cutting whatever the log holds from `op` on), but only on top of the
        // op this prepare chains to: a log may never hold a prepare above a stale one.
        if self.checksum_at(op - 1).await? != Some(message.header.parent) {
            return Ok(Step::Hold);
        }
        if op < next_op {
            // Another prepare at this op: a view change replaced it and what follows.
            self.cut_after(op - 1).await?;
        }
        assert_eq!(self.log.next_append().0, op);
        let meta = self.meta_for(message, op)?;
        // The record's payload is the encoded prepare, header then body, handed over in two
        // parts so the body (up to a 1 MB batch) is copied once, into the write. The core
        // sealed the message (or verified it on receipt): its body is not hashed again here.
        assert!(message.header.valid_checksum());
        assert_eq!(
            message.header.size as usize,
            HEADER_SIZE + message.body.len()
        );
        let head = Bytes::copy_from_slice(&message.header.encode());
        let appending = self.log.submit_parts(meta, head, message.body.clone())?;
        self.queued.borrow_mut().insert(op, checksum);
        // The next held write may queue behind this one now, before it is durable.
        self.give_turn(op + 1);
        self.log.commit_queued().await;
        appending.durable().await?;
        Ok(Step::Done(WriteOutcome::Written))
    }

    /// The checksum of the prepare the log holds at `op` (queued ones included), if known.
    async fn checksum_at(&self, op: u64) -> Result<Option<u128>, StorageError> {
        if op == 0 {
            return Ok(Some(self.root_checksum));
        }
        if let Some(below) = self.below_start.filter(|b| b.op == op) {
            if op + 1 == self.log.first_op() {
                return Ok(Some(below.checksum));
            }
        }
        let op_end = self.log.op_end();
        {
            let mut queued = self.queued.borrow_mut();
            // Ops that became durable are read from the log from now on.
            queued.retain(|queued_op, _| *queued_op >= op_end);
            if let Some(checksum) = queued.get(&op) {
                return Ok(Some(*checksum));
            }
        }
        if op >= op_end {
            return Ok(None);
        }
        if let Some(faulty) = self.log.faulty().into_iter().find(|f| f.op == op) {
            return Ok(faulty.meta.map(|meta| meta.checksum));
        }
        match self.log.entry(op).await {
            Ok(entry) => Ok(Some(entry.meta.checksum)),
            Err(StorageError::Faulty(_)) | Err(StorageError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The prepare of `op` read back and verified, or `None` if it is missing or damaged.
    pub async fn read_prepare(&self, op: u64) -> Option<Message> {
        read_message(&self.log, op).await
    }

    /// The prepare headers of `op_min..=op_max`, ascending: the longest run ending at
    /// `op_max` that reads back intact (each header by its own checksum and the index entry),
    /// as the core's `ReadHeaders` asks. At most `HEADERS_READ_MAX` ops are read.
    pub async fn read_headers(&self, op_min: u64, op_max: u64) -> Vec<Header> {
        assert!(op_min <= op_max && op_max - op_min < HEADERS_READ_MAX);
        let mut headers = Vec::new();
        let mut op = op_max;
        loop {
            match read_header(&self.log, op).await {
                Some(header) => headers.push(header),
                None => break,
            }
            if op == op_min {
                break;
            }
            op -= 1;
        }
        headers.reverse();
        headers
    }

    fn give_turn(&self, op: u64) {
        let held = self.held.borrow_mut().remove(&op);
        if let Some(held) = held {
            let _ = held.turn.send(WriteOutcome::Written);
        }
    }

    /// The meta a repair of faulty `op` with `message` must carry: the entry's own where the
    /// index kept it (`None` if that names another prepare), else one that continues the
    /// previous op (the log checks that it fits its neighbours).
    async fn repair_meta(&self, message: &Message, op: u64) -> Option<EntryMeta> {
        let known = self
            .log
            .faulty()
            .into_iter()
            .find(|f| f.op == op)
            .and_then(|f| f.meta);
        if let Some(meta) = known {
            return (meta.checksum == message.header.checksum).then_some(meta);
        }
        let previous = self.log.entry(op - 1).await.ok();
        let next_offset =
            previous.map_or(0, |p| p.meta.offset_first + u64::from(p.meta.message_count));
        let (offset_first, message_count) = (self.messages_of)(message, next_offset);
        Some(EntryMeta {
            op,
            checksum: message.header.checksum,
            offset_first,
            message_count,
            timestamp: message.header.timestamp,
        })
    }

    /// Waits (a bounded number of executor turns) until `busy` is false.
    async fn wait_while(&self, busy: impl Fn() -> bool) -> Result<(), StorageError> {
        for _ in 0..EXCLUSIVE_TURNS_MAX {
            if !busy() {
                return Ok(());
            }
            self.disk.yield_now().await;
        }
        Err(StorageError::Busy)
    }

    fn meta_for(&self, message: &Message, op: u64) -> Result<EntryMeta, StorageError> {
        let (_, next_offset, timestamp_min) = self.log.next_append();
        let Some(next_offset) = next_offset else {
            return Err(StorageError::Faulty(op - 1));
        };
        let (offset_first, message_count) = (self.messages_of)(message, next_offset);
        Ok(EntryMeta {
            op,
            checksum: message.header.checksum,
            offset_first,
            message_count,
            // The time index needs timestamps that never go back.
            timestamp: message.header.timestamp.max(timestamp_min),
        })
    }

    /// Cuts the log after `op`, then abandons every held write above it. `Busy` while
    /// appends are in flight (the caller waits and decides again).
    async fn cut_after(&self, op: u64) -> Result<(), StorageError> {
        self.log.truncate_after(op).await?;
        self.queued
            .borrow_mut()
            .retain(|queued_op, _| *queued_op <= op);
        self.cuts.borrow_mut().push(op);
        let dropped: Vec<Held> = {
            let mut held = self.held.borrow_mut();
            let above = held.split_off(&(op + 1));
            above.into_values().collect()
        };
        for held in dropped {
            let _ = held.turn.send(WriteOutcome::Abandoned);
        }
        Ok(())
    }

    /// Ops after which the log was cut since the last call (the prepares above are gone).
    pub fn take_cuts(&self) -> Vec<u64> {
        std::mem::take(&mut *self.cuts.borrow_mut())
    }
}

/// One `write_prepare` under way at `op`. When the last write of an op ends, a write held
/// at the op above is told to try again: it goes on if the op below landed, and is abandoned
/// if not.
struct WritingGuard<'j, 'd, D: Disk> {
    journal: &'j SegmentJournal<'d, D>,
    op: u64,
}

impl<'j, 'd, D: Disk> WritingGuard<'j, 'd, D> {
    fn enter(journal: &'j SegmentJournal<'d, D>, op: u64) -> WritingGuard<'j, 'd, D> {
        let mut writing = journal.writing.borrow_mut();
        let count = writing.entry(op).or_insert(0);
        *count += 1;
        assert!(
            *count as usize <= HELD_MAX + 1,
            "more writes of one op than the core issues"
        );
        WritingGuard { journal, op }
    }
}

impl<D: Disk> Drop for WritingGuard<'_, '_, D> {
    fn drop(&mut self) {
        let last = {
            let mut writing = self.journal.writing.borrow_mut();
            let count = writing.get_mut(&self.op).expect("entered");
            assert!(*count > 0);
            *count -= 1;
            let last = *count == 0;
            if last {
                writing.remove(&self.op);
            }
            last
        };
        if last {
            self.journal.give_turn(self.op + 1);
        }
    }
}

/// `op`'s prepare header read alone, checked by its own checksum and against the index entry
/// (the body is not read: its checksum, in the header, is verified by whole reads).
async fn read_header<D: Disk>(log: &PartitionLog<'_, D>, op: u64) -> Option<Header> {
    let (meta, bytes) = log.read_head(op, HEADER_SIZE as u32).await.ok()?;
    let raw: &[u8; HEADER_SIZE] = bytes.get(..HEADER_SIZE)?.try_into().ok()?;
    let header = Header::decode(raw).ok()?;
    (header.op == op && header.checksum == meta.checksum && header.command == Command::Prepare)
        .then_some(header)
}

async fn read_message<D: Disk>(log: &PartitionLog<'_, D>, op: u64) -> Option<Message> {
    let record = log.read(op).await.ok()?;
    let message = Message::decode_bytes(record.payload).ok()?;
    (message.header.op == op && message.header.checksum == record.meta.checksum).then_some(message)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use galgo_consensus::Command;
    use galgo_storage::file_disk::block_on;
    use galgo_storage::futures::join;
    use galgo_storage::MemoryDisk;

    const OPS_MAX: u64 = 10_000;

    fn root() -> Header {
        Header::root(1, 7)
    }

    /// A chain of prepares 1..=count in `view`, each chained to the one before (`salt` makes
    /// another chain).
    pub(crate) fn chain(count: u64, view: u32, salt: u8) -> Vec<Message> {
        fork(&[], count, view, salt)
    }

    /// `prefix`, then prepares up to op `count` chained on it.
    fn fork(prefix: &[Message], count: u64, view: u32, salt: u8) -> Vec<Message> {
        let mut parent = prefix.last().map_or(root().checksum, |m| m.header.checksum);
        let mut chain = prefix.to_vec();
        for op in prefix.len() as u64 + 1..=count {
            let mut header = Header::new(Command::Prepare, 1, 7);
            header.op = op;
            header.view = view;
            header.parent = parent;
            header.timestamp = 1_000 + op;
            let message = Message::new(header, vec![salt, op as u8, 3]);
            parent = message.header.checksum;
            chain.push(message);
        }
        chain
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_size: 2048,
            ..LogConfig::new("g7")
        }
    }

    pub(crate) async fn open<'d>(
        disk: &'d MemoryDisk,
        durable: &DurableState,
    ) -> (SegmentJournal<'d, MemoryDisk>, RecoveredJournal) {
        SegmentJournal::open(
            disk,
            config(),
            durable,
            root(),
            OPS_MAX,
            no_messages,
            RecoveryBugs::default(),
            None,
        )
        .await
        .unwrap()
    }

    /// The log file holding `op` and where its prepare (the record's payload) starts in it.
    async fn prepare_position(journal: &SegmentJournal<'_, MemoryDisk>, op: u64) -> (String, u64) {
        let position = journal.log().entry(op).await.unwrap().position;
        let segment = journal
            .log()
            .segments()
            .iter()
            .rev()
            .find(|s| s.base_op <= op)
            .unwrap()
            .base_op;
        (format!("g7/{segment:020}.log"), position + 64)
    }

    #[test]
    fn prepares_written_in_order_come_back_clean_after_a_crash() {
        let disk = MemoryDisk::new(1);
        let messages = chain(30, 0, 0);
        block_on(async {
            let durable = DurableState::initial();
            let (journal, recovered) = open(&disk, &durable).await;
            assert_eq!(recovered.journal.head(), 0);
            for message in &messages {
                assert_eq!(
                    journal.write_prepare(message.clone()).await.unwrap(),
                    WriteOutcome::Written
                );
            }
            // The same prepare again is already durable.
            assert_eq!(
                journal.write_prepare(messages[4].clone()).await.unwrap(),
                WriteOutcome::Written
            );
            assert!(journal.log().segments().len() > 1, "small segments roll");
            drop(journal);
            disk.crash();
            let (journal, recovered) = open(&disk, &durable).await;
            assert_eq!(recovered.journal.head(), 30);
            for message in &messages {
                let entry = recovered.journal.entry(message.header.op);
                assert!(entry.present());
                assert_eq!(entry.checksum(), Some(message.header.checksum));
                assert_eq!(
                    journal.read_prepare(message.header.op).await.unwrap(),
                    *message
                );
            }
        });
    }

    #[test]
    fn a_write_above_a_gap_waits_for_the_write_below_under_way() {
        let disk = MemoryDisk::new(2);
        let messages = chain(4, 0, 0);
        block_on(async {
            let (journal, _) = open(&disk, &DurableState::initial()).await;
            journal.write_prepare(messages[0].clone()).await.unwrap();
            // Ops 2, 3 and 4 are issued together, each on top of the one being written.
            let (two, (three, four)) = join(
                journal.write_prepare(messages[1].clone()),
                join(
                    journal.write_prepare(messages[2].clone()),
                    journal.write_prepare(messages[3].clone()),
                ),
            )
            .await;
            for outcome in [two, three, four] {
                assert_eq!(outcome.unwrap(), WriteOutcome::Written);
            }
            assert_eq!(journal.log().op_end(), 5);
            assert_eq!(journal.read_prepare(4).await.unwrap(), messages[3]);
        });
    }

    /// Polls `future` up to `polls` times (its wakes are not waited for): `None` if it is
    /// still pending, so a write that would wait for good fails the test instead of hanging it.
    fn poll_bounded<F: std::future::Future>(future: F, polls: u32) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..polls {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return Some(output);
            }
        }
        None
    }

    #[test]
    fn a_write_with_no_write_below_under_way_is_abandoned_not_held() {
        // Before, such a write was held until the op below came, which might be never: with
        // its slot write taken, enough of them left the core no room to write that op (a
        // backup's group stalled with 256 held writes).
        let disk = MemoryDisk::new(7);
        let messages = chain(4, 0, 0);
        let opened = poll_bounded(open(&disk, &DurableState::initial()), 1_000);
        let (journal, _) = opened.expect("the journal opens");
        for message in &messages[..2] {
            let written = poll_bounded(journal.write_prepare(message.clone()), 1_000);
            assert_eq!(written.expect("ends").unwrap(), WriteOutcome::Written);
        }
        // Op 4 above the gap at op 3, which nobody writes.
        let above = poll_bounded(journal.write_prepare(messages[3].clone()), 1_000);
        assert_eq!(above.expect("not held").unwrap(), WriteOutcome::Abandoned);
        // Op 3 on top of a stale op 2 (another chain's): no write of the right op 2 comes.
        let other = chain(3, 1, 5);
        let stale = poll_bounded(journal.write_prepare(other[2].clone()), 1_000);
        assert_eq!(stale.expect("not held").unwrap(), WriteOutcome::Abandoned);
        assert_eq!(
            journal.log().op_end(),
            3,
            "nothing landed above a gap or a stale op"
        );
        // Written in order, both land.
        for message in &messages[2..] {
            let written = poll_bounded(journal.write_prepare(message.clone()), 1_000);
            assert_eq!(written.expect("ends").unwrap(), WriteOutcome::Written);
        }
        assert_eq!(journal.log().op_end(), 5);
    }

    #[test]
    fn another_prepare_cuts_the_log_and_nothing_lands_on_the_replaced_one() {
        let disk = MemoryDisk::new(3);
        let old = chain(5, 0, 0);
        // The view change kept ops 1 and 2 and replaced everything from op 3.
        let new = fork(&old[..2], 8, 1, 9);
        block_on(async {
            let (journal, _) = open(&disk, &DurableState::initial()).await;
            for message in &old {
                journal.write_prepare(message.clone()).await.unwrap();
            }
            // The new op 3 replaces the old one while the new op 4 is issued on top of it.
            let replace = async {
                let outcome = journal.write_prepare(new[2].clone()).await.unwrap();
                assert_eq!(outcome, WriteOutcome::Written);
            };
            let ((), above) = join(replace, journal.write_prepare(new[3].clone())).await;
            assert_eq!(journal.read_prepare(3).await.unwrap(), new[2]);
            // Op 4 was either held and abandoned by the cut (the core writes it again) or
            // appended on the new op 3: never on the old one.
            match above.unwrap() {
                WriteOutcome::Written => {
                    assert_eq!(journal.log().op_end(), 5);
                    assert_eq!(journal.read_prepare(4).await.unwrap(), new[3]);
                }
                WriteOutcome::Abandoned => {
                    assert_eq!(journal.log().op_end(), 4);
                    assert!(journal.read_prepare(4).await.is_none());
                }
            }
        });
    }

    #[test]
    fn a_damaged_prepare_is_faulty_at_open_and_a_write_repairs_it() {
        let disk = MemoryDisk::new(4);
        let messages = chain(6, 0, 0);
        block_on(async {
            let durable = DurableState::initial();
            let (journal, _) = open(&disk, &durable).await;
            for message in &messages {
                journal.write_prepare(message.clone()).await.unwrap();
            }
            let (file, position) = prepare_position(&journal, 6).await;
            drop(journal);
            // A byte inside op 6's prepare, under its record header.
            disk.corrupt(&file, position + 100);
            let (journal, recovered) = open(&disk, &durable).await;
            // The head op is damaged under a valid index entry: faulty, never cut.
            assert_eq!(recovered.journal.head(), 6);
            let entry = recovered.journal.entry(6);
            assert!(entry.faulty && !entry.present());
            assert!(journal.read_prepare(6).await.is_none());
            assert_eq!(
                journal.write_prepare(messages[5].clone()).await.unwrap(),
                WriteOutcome::Written
            );
            assert_eq!(journal.read_prepare(6).await.unwrap(), messages[5]);
        });
    }

    async fn try_open_at<'d>(
        disk: &'d MemoryDisk,
        checkpoint: Option<CheckpointStart>,
    ) -> Result<(SegmentJournal<'d, MemoryDisk>, RecoveredJournal), StorageError> {
        SegmentJournal::open(
            disk,
            config(),
            &DurableState::initial(),
            root(),
            OPS_MAX,
            no_messages,
            RecoveryBugs::default(),
            checkpoint,
        )
        .await
    }

    async fn open_at<'d>(
        disk: &'d MemoryDisk,
        checkpoint: Option<CheckpointStart>,
    ) -> (SegmentJournal<'d, MemoryDisk>, RecoveredJournal) {
        try_open_at(disk, checkpoint).await.unwrap()
    }

    fn start_at(message: &Message, installed: bool) -> Option<CheckpointStart> {
        Some(CheckpointStart {
            header: message.header,
            next_offset: 0,
            installed,
        })
    }

    #[test]
    fn a_journal_opened_from_a_checkpoint_starts_at_its_op_and_reads_nothing_below() {
        let disk = MemoryDisk::new(10);
        let messages = chain(30, 0, 0);
        let other_log = chain(30, 0, 1);
        block_on(async {
            let journal = written(&disk, &messages).await;
            let at_20 = start_at(&messages[19], false);
            let (file, position) = prepare_position(&journal, 7).await;
            drop(journal);
            let (_, recovered) = open_at(&disk, at_20).await;
            assert_eq!(recovered.journal.base(), 20);
            assert_eq!(recovered.journal.head(), 30);
            assert!((20..=30).all(|op| recovered.journal.entry(op).present()));
            // Another log's checkpoint: the whole log is read.
            let (_, recovered) = open_at(&disk, start_at(&other_log[19], false)).await;
            assert_eq!(recovered.journal.base(), 0);
            assert!((1..=30).all(|op| recovered.journal.entry(op).present()));
            // A damaged prepare header below the checkpoint's op: a whole open finds it, an
            // open from the checkpoint does not read it.
            disk.corrupt(&file, position + 100);
            let (_, recovered) = open_at(&disk, start_at(&other_log[19], false)).await;
            assert!(recovered.journal.entry(7).faulty);
            let (_, recovered) = open_at(&disk, at_20).await;
            assert_eq!(recovered.journal.base(), 20);
        });
    }

    #[test]
    fn a_log_behind_an_installed_checkpoint_starts_after_it_once_and_for_good() {
        let disk = MemoryDisk::new(12);
        let messages = chain(30, 0, 0);
        block_on(async {
            drop(written(&disk, &messages[..10]).await);
            // A peer's checkpoint of op 20: the log (ops 1..=10) is cut to start at op 21.
            let installed = start_at(&messages[19], true);
            let (journal, recovered) = open_at(&disk, installed).await;
            assert_eq!((journal.log().first_op(), journal.log().op_end()), (21, 21));
            assert_eq!(
                (recovered.journal.base(), recovered.journal.head()),
                (20, 20)
            );
            // The first append chains to the checkpoint's op, which the log does not hold.
            assert_eq!(
                journal.write_prepare(messages[20].clone()).await.unwrap(),
                WriteOutcome::Written
            );
            drop(journal);
            // Opened again: nothing is cut any more, op 21 is there.
            let (journal, recovered) = open_at(&disk, installed).await;
            assert_eq!((journal.log().first_op(), journal.log().op_end()), (21, 22));
            assert!(recovered.journal.entry(21).present());
            drop(journal);
            // Without the checkpoint a log that starts at op 21 does not open, nor with an
            // older one (its newest file lost): the log is never cut back to it.
            assert!(matches!(
                try_open_at(&disk, None).await,
                Err(StorageError::Unrecoverable(_))
            ));
            for installed in [false, true] {
                assert!(matches!(
                    try_open_at(&disk, start_at(&messages[9], installed)).await,
                    Err(StorageError::Unrecoverable(_))
                ));
            }
            let (journal, _) = open_at(&disk, installed).await;
            assert_eq!((journal.log().first_op(), journal.log().op_end()), (21, 22));
        });
    }

    /// Opens the journal on `disk` and writes `messages` in order.
    async fn written<'d>(
        disk: &'d MemoryDisk,
        messages: &[Message],
    ) -> SegmentJournal<'d, MemoryDisk> {
        let (journal, _) = open_at(disk, None).await;
        for message in messages {
            journal.write_prepare(message.clone()).await.unwrap();
        }
        journal
    }

    #[test]
    fn an_installed_checkpoint_keeps_a_log_that_holds_its_op_or_ops_above_a_damaged_one() {
        let disk = MemoryDisk::new(13);
        let messages = chain(30, 0, 0);
        let other_log = chain(30, 0, 1);
        block_on(async {
            let journal = written(&disk, &messages).await;
            let (file, position) = prepare_position(&journal, 20).await;
            drop(journal);
            // The log holds op 20 intact: kept whole, the journal starts at 20.
            let (journal, recovered) = open_at(&disk, start_at(&messages[19], true)).await;
            assert_eq!((journal.log().first_op(), journal.log().op_end()), (1, 31));
            assert_eq!(
                (recovered.journal.base(), recovered.journal.head()),
                (20, 30)
            );
            drop(journal);
            // Op 20 damaged, ops above it (perhaps acknowledged) held: kept, and op 20 is
            // known by the checkpoint's header.
            disk.corrupt(&file, position + 100);
            let (journal, recovered) = open_at(&disk, start_at(&messages[19], true)).await;
            assert_eq!((journal.log().first_op(), journal.log().op_end()), (1, 31));
            assert_eq!(recovered.journal.base(), 19);
            assert!(recovered.journal.entry(20).faulty);
            assert_eq!(
                recovered.journal.header(20).map(|h| h.checksum),
                Some(messages[19].header.checksum)
            );
            assert!((21..=30).all(|op| recovered.journal.entry(op).present()));
            drop(journal);
        });
        // An intact op 20 of another log (a stale one): everything goes, and the log starts
        // after the checkpoint's op.
        let disk = MemoryDisk::new(14);
        block_on(async {
            drop(written(&disk, &messages).await);
            let (journal, recovered) = open_at(&disk, start_at(&other_log[19], true)).await;
            assert_eq!((journal.log().first_op(), journal.log().op_end()), (21, 21));
            assert_eq!(recovered.journal.base(), 20);
            assert_eq!(journal.take_cuts(), vec![20]);
        });
    }

    #[test]
    fn headers_read_back_as_the_intact_run_below_the_highest_op() {
        let disk = MemoryDisk::new(9);
        let messages = chain(10, 0, 0);
        block_on(async {
            let durable = DurableState::initial();
            let (journal, _) = open(&disk, &durable).await;
            for message in &messages {
                journal.write_prepare(message.clone()).await.unwrap();
            }
            let headers: Vec<Header> = messages.iter().map(|m| m.header).collect();
            assert_eq!(journal.read_headers(3, 8).await, headers[2..8].to_vec());
            assert_eq!(journal.read_headers(10, 10).await, headers[9..10].to_vec());
            let (file, position) = prepare_position(&journal, 5).await;
            drop(journal);
            // A byte of op 5's prepare header.
            disk.corrupt(&file, position + 10);
            let (journal, _) = open(&disk, &durable).await;
            assert_eq!(journal.read_headers(3, 8).await, headers[5..8].to_vec());
            assert_eq!(journal.read_headers(3, 5).await, Vec::<Header>::new());
        });
    }

    #[test]
    fn ops_a_view_change_replaced_before_a_crash_are_cut_at_open() {
        let disk = MemoryDisk::new(5);
        let messages = chain(5, 0, 0);
        block_on(async {
            let (journal, _) = open(&disk, &DurableState::initial()).await;
            for message in &messages {
                journal.write_prepare(message.clone()).await.unwrap();
            }
            drop(journal);
            // The durable view state says log view 1 starts with op 3 as its head: ops 4 and 5,
            // of view 0, were from a log that view change truncated.
            let durable = DurableState {
                view: 1,
                log_view: 1,
                commit_max: 0,
                view_headers: vec![messages[2].header],
            };
            let (journal, recovered) = open(&disk, &durable).await;
            assert_eq!(recovered.journal.head(), 3);
            assert_eq!(journal.log().op_end(), 4, "the log follows the journal");
        });
    }

    #[test]
    fn a_prepare_never_lands_above_another_than_its_parent() {
        // The log holds stale A1, A2; the new chain B1, B2 arrives with B2 first.
        let disk = MemoryDisk::new(6);
        let a = chain(2, 0, 0);
        let b = chain(2, 1, 1);
        block_on(async {
            let (journal, _) = open(&disk, &DurableState::initial()).await;
            for message in &a {
                journal.write_prepare(message.clone()).await.unwrap();
            }
            // B2 must not replace A2 on top of A1: it waits for B1, which cuts A1 and A2.
            let (b2_outcome, b1_outcome) = join(
                journal.write_prepare(b[1].clone()),
                journal.write_prepare(b[0].clone()),
            )
            .await;
            assert_eq!(b1_outcome.unwrap(), WriteOutcome::Written);
            // B2 was held above the gap B1's cut made, then either appended on B1 or
            // abandoned by that cut (the core writes it again): never written above A1.
            if b2_outcome.unwrap() == WriteOutcome::Abandoned {
                let outcome = journal.write_prepare(b[1].clone()).await.unwrap();
                assert_eq!(outcome, WriteOutcome::Written);
            }
            assert_eq!(journal.read_prepare(1).await.unwrap(), b[0]);
            assert_eq!(journal.read_prepare(2).await.unwrap(), b[1]);
            assert_eq!(journal.take_cuts(), vec![0]);
        });
    }
}
