//! `PartitionLog`: a partition's replicated log as a chain of segments ("segment as WAL").
//!
//! Each prepare is appended once, as one record, to the active segment; its index entry (the
//! redundant header) follows once the record is durable. Appends are group-committed: the first
//! caller to find no flush running becomes the flusher and writes every queued append in one
//! write per file (laid out on the disk's direct-I/O block, see `group_commit`), one fdatasync
//! of the log, then one write and one fdatasync of the index; the appends that arrive
//! meanwhile wait for the next round. Segments seal when the next record
//! would pass `segment_size`; whole sealed segments can be deleted for retention. Only durable
//! records are ever visible to reads.

use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::disk::{gone, join, parent, Disk, DiskError};
use crate::error::StorageError;
use crate::format::{
    encode_index_entry, encode_record, encode_record_header_parts, verified_payload, EntryMeta,
    IndexEntry, PAYLOAD_SIZE_MAX, RECORD_HEADER_SIZE,
};
use crate::recovery::{
    open_segment, read_intact_record, truncation_mark, FaultyEntry, Opened, RecoveryReport,
};
use crate::segment::{idx_name, log_name, parse_name, read_entries, Segment, SparsePoint};

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The disk directory that holds this partition's segments.
    pub dir: String,
    /// A segment seals when the next record would make it larger (default 1 GiB).
    pub segment_size: u64,
    /// Log bytes between two points of the sparse in-memory index.
    pub index_interval_bytes: u64,
    /// Appends queued for the next group commit, at most.
    pub pending_max: usize,
    /// Payload bytes queued for the next group commit, at most.
    pub pending_bytes_max: u64,
}

impl LogConfig {
    pub fn new(dir: impl Into<String>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_size: 1 << 30,
            index_interval_bytes: 16 * 1024,
            pending_max: 4096,
            pending_bytes_max: 256 << 20,
        }
    }
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub meta: EntryMeta,
    /// The payload, sharing the buffer the record was read into.
    pub payload: Bytes,
}

/// A summary of one segment, for retention decisions and status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_op: u64,
    pub op_end: u64,
    /// The offsets of its messages: `offset_first..offset_end`.
    pub offset_first: u64,
    pub offset_end: u64,
    pub size: u64,
    /// The batch timestamp of its last record (0 when empty).
    pub timestamp_last: u64,
    pub sealed: bool,
}

/// Retention limits; `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age_us: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// An append queued by `submit`.
pub struct Appending(oneshot::Receiver<Result<(), StorageError>>);

impl Appending {
    /// Waits until the append is durable (or failed).
    pub async fn durable(self) -> Result<(), StorageError> {
        self.0.await.unwrap_or(Err(StorageError::Poisoned))
    }
}

pub(crate) struct Pending {
    pub(crate) meta: EntryMeta,
    /// The payload is `payload_head` then `payload` (a caller's header and body, written
    /// without being joined first); `payload_head` is empty for a one-part payload.
    pub(crate) payload_head: Bytes,
    pub(crate) payload: Bytes,
    /// The record header, checksum included, computed by the appender (off the flusher).
    pub(crate) header: [u8; RECORD_HEADER_SIZE as usize],
    pub(crate) done: oneshot::Sender<Result<(), StorageError>>,
}

impl Pending {
    /// Bytes of the whole payload (both parts).
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_head.len() + self.payload.len()
    }
}

pub(crate) struct State {
    pub(crate) segments: Vec<Segment>,
    /// The end of the last record written to the active segment (durable or not).
    pub(crate) written_end: u64,
    /// The active log's bytes from the last block boundary up to `written_end`, as the last
    /// group wrote them, for the next aligned group write; `None` means read them back.
    pub(crate) tail: Option<crate::group_commit::TailBlock>,
    /// The next append must carry this op, offset (when known) and a timestamp at least this.
    pub(crate) next_op: u64,
    pub(crate) next_offset: Option<u64>,
    pub(crate) timestamp_min: u64,
    pub(crate) pending: Vec<Pending>,
    pub(crate) pending_bytes: u64,
    pub(crate) flushing: bool,
    /// Wakes the flusher's task when an append is queued (its write stage may be waiting).
    pub(crate) flush_waker: Option<std::task::Waker>,
    /// Wakes a waiting `run_committer` when an append is queued or it is told to stop.
    pub(crate) committer_waker: Option<std::task::Waker>,
    pub(crate) committer_stop: bool,
    pub(crate) poisoned: bool,
    /// Ops recovery or reads found damaged, with what is known of their slot.
    pub(crate) faulty: BTreeMap<u64, FaultyEntry>,
    /// Group commits completed since open (each one log and one index fdatasync per segment).
    pub(crate) groups_committed: u64,
    /// A truncation, retention or repair is running: appends are refused meanwhile.
    pub(crate) exclusive: bool,
}

impl State {
    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    /// The segment whose records end the durable log: the last one holding records (a segment
    /// that a group in flight just created holds none yet), or the first one.
    fn durable_tail(&self) -> &Segment {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.is_empty())
            .unwrap_or(&self.segments[0])
    }

    /// The op, offset (unknown while the last op is faulty with an unknown meta) and minimum
    /// timestamp the next append after the durable log must carry.
    pub(crate) fn durable_next(&self) -> (u64, Option<u64>, u64) {
        let tail = self.durable_tail();
        let timestamp = self
            .segments
            .iter()
            .rev()
            .find_map(|s| s.last.map(|l| l.meta.timestamp))
            .unwrap_or(0);
        let last_known = tail.is_empty() || tail.last.is_some_and(|l| l.meta.op + 1 == tail.op_end);
        let offset = last_known.then(|| tail.offset_end());
        (tail.op_end, offset, timestamp)
    }

    /// Starts an operation that needs the log to itself (truncation, retention, repair).
    pub(crate) fn begin_exclusive(&mut self) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if self.flushing || !self.pending.is_empty() || self.exclusive {
            return Err(StorageError::Busy);
        }
        self.exclusive = true;
        Ok(())
    }

    pub(crate) fn segment_of(&self, op: u64) -> Option<&Segment> {
        let after = self.segments.partition_point(|s| s.base_op <= op);
        let segment = self.segments.get(after.checked_sub(1)?)?;
        (op < segment.op_end).then_some(segment)
    }
}

pub struct PartitionLog<'d, D: Disk> {
    pub(crate) disk: &'d D,
    pub(crate) config: LogConfig,
    pub(crate) state: RefCell<State>,
    /// Group write buffers, reused.
    pub(crate) buffers: crate::aligned::BufferPool,
}

/// Holds the log for an exclusive operation; releases it when dropped.
pub(crate) struct Exclusive<'a> {
    state: &'a RefCell<State>,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.state.borrow_mut().exclusive = false;
    }
}

impl<D: Disk> PartitionLog<'_, D> {
    pub(crate) fn exclusive(&self) -> Result<Exclusive<'_>, StorageError> {
        self.state.borrow_mut().begin_exclusive()?;
        Ok(Exclusive { state: &self.state })
    }
}

pub(crate) fn sync_failed(error: DiskError) -> StorageError {
    StorageError::SyncFailed(error.to_string())
}

impl<'d, D: Disk> PartitionLog<'d, D> {
    /// Opens the log in `config.dir`, recovering every segment; creates it when the directory
    /// holds none, starting at `first_op` and `first_offset`.
    pub async fn open(
        disk: &'d D,
        config: LogConfig,
        first_op: u64,
        first_offset: u64,
    ) -> Result<(PartitionLog<'d, D>, RecoveryReport), StorageError> {
        assert!(config.segment_size > RECORD_HEADER_SIZE * 2);
        assert!(config.pending_max > 0 && config.index_interval_bytes > 0);
        disk.create_dir_all(&config.dir).await?;
        let names = disk.list(&config.dir).await?;
        let mut bases: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
        for name in &names {
            if let Some((base, extension)) = parse_name(name) {
                let slot = bases.entry(base).or_default();
                if extension == "log" {
                    slot.0 = true;
                } else {
                    slot.1 = true;
                }
            }
        }
        // A truncation a crash interrupted removes every segment after the one it marked
        // before that segment is recovered (which finishes the cut and clears the mark).
        let mut marked = None;
        for (&base, &(has_log, has_idx)) in &bases {
            if has_log && has_idx && truncation_mark(disk, &config.dir, base).await?.is_some() {
                marked = Some(base);
            }
        }
        if let Some(marked) = marked {
            let later: Vec<u64> = bases
                .range((
                    std::ops::Bound::Excluded(marked),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(b, _)| *b)
                .collect();
            for base in later.into_iter().rev() {
                remove_segment_files(disk, &config.dir, base).await?;
                bases.remove(&base);
            }
        }
        let oldest = bases.keys().next().copied();
        let newest = bases.keys().next_back().copied();
        let mut segments: Vec<Segment> = Vec::new();
        let mut report = RecoveryReport::default();
        let mut discard_from = None;
        for (&base, &(has_log, has_idx)) in &bases {
            let is_newest = Some(base) == newest;
            if !(has_log && has_idx) {
                // The newest: a crash between creating its two files. The oldest: a crash
                // between removing its two files for retention.
                if is_newest || Some(base) == oldest {
                    remove_segment_files(disk, &config.dir, base).await?;
                    continue;
                }
                if discard_from.is_some() {
                    continue; // Removed with the rest of the discarded tail below.
                }
                return Err(StorageError::Unrecoverable(format!(
                    "segment {base} in {:?} lacks its {} file",
                    config.dir,
                    if has_log { "index" } else { "log" }
                )));
            }
            let opened = open_segment(
                disk,
                &config.dir,
                base,
                is_newest,
                config.index_interval_bytes,
            )
            .await?;
            match opened {
                Opened::Segment {
                    segment,
                    report: segment_report,
                } => {
                    let segment = *segment;
                    // No index entry of this segment was durable: none of its records was
                    // acknowledged.
                    let unacknowledged = segment_report.faulty.is_empty()
                        && segment_report.fixed.len() as u64 == segment.op_end - segment.base_op;
                    if discard_from.is_some() || !continues(&segments, &segment) {
                        // A crash cut the group that sealed the previous segment before that
                        // segment's records landed: this segment and every later one (later
                        // rolls of the same group) are discarded, if none holds an
                        // acknowledged record.
                        disk.close(segment.log).await;
                        disk.close(segment.idx).await;
                        if !unacknowledged {
                            return Err(StorageError::Unrecoverable(format!(
                                "segment {base} in {:?} holds acknowledged records but does \
                                 not continue the log before it",
                                config.dir
                            )));
                        }
                        discard_from.get_or_insert(base);
                        continue;
                    }
                    report.faulty.extend(segment_report.faulty);
                    report.fixed.extend(segment_report.fixed);
                    report.torn_bytes += segment_report.torn_bytes;
                    segments.push(segment);
                }
                Opened::Unfinished if is_newest || discard_from.is_some() => {
                    discard_from.get_or_insert(base);
                }
                Opened::Unfinished => {
                    return Err(StorageError::Unrecoverable(format!(
                        "sealed segment {base} in {:?} is empty",
                        config.dir
                    )))
                }
            }
        }
        if let Some(first) = discard_from {
            let later: Vec<u64> = bases.range(first..).map(|(b, _)| *b).collect();
            for base in later.into_iter().rev() {
                remove_segment_files(disk, &config.dir, base).await?;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(disk, &config.dir, first_op, first_offset).await?);
        }
        let written_end = segments.last().expect("a segment").log_size;
        let mut state = State {
            segments,
            written_end,
            tail: None,
            next_op: 0,
            next_offset: None,
            timestamp_min: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            flushing: false,
            flush_waker: None,
            committer_waker: None,
            committer_stop: false,
            poisoned: false,
            faulty: report.faulty.iter().map(|f| (f.op, *f)).collect(),
            groups_committed: 0,
            exclusive: false,
        };
        (state.next_op, state.next_offset, state.timestamp_min) = state.durable_next();
        Ok((
            PartitionLog {
                disk,
                config,
                state: RefCell::new(state),
                buffers: crate::aligned::BufferPool::default(),
            },
            report,
        ))
    }

    /// Appends one prepare and returns once it and its index entry are durable.
    pub async fn append(&self, meta: EntryMeta, payload: Bytes) -> Result<(), StorageError> {
        let appending = self.submit(meta, payload)?;
        self.commit_queued().await;
        appending.durable().await
    }

    /// Queues one prepare for the next group commit, checking it continues the log. Ops queue
    /// in call order; `commit_queued` (by any caller) makes them durable.
    pub fn submit(&self, meta: EntryMeta, payload: Bytes) -> Result<Appending, StorageError> {
        self.submit_parts(meta, Bytes::new(), payload)
    }

    /// `submit` of the payload `head` then `body`, as one record: the parts are copied once,
    /// into the write, never joined in a buffer of their own first.
    pub fn submit_parts(
        &self,
        meta: EntryMeta,
        head: Bytes,
        body: Bytes,
    ) -> Result<Appending, StorageError> {
        let payload_len = head.len() + body.len();
        let mut state = self.state.borrow_mut();
        if state.poisoned {
            return Err(StorageError::Poisoned);
        }
        if state.exclusive {
            return Err(StorageError::Busy);
        }
        if meta.op != state.next_op {
            return Err(StorageError::Invalid(format!(
                "op {} appended where op {} is next",
                meta.op, state.next_op
            )));
        }
        if let Some(next_offset) = state.next_offset.filter(|o| *o != meta.offset_first) {
            return Err(StorageError::Invalid(format!(
                "offset {} appended where offset {next_offset} is next",
                meta.offset_first
            )));
        }
        if meta.timestamp < state.timestamp_min {
            return Err(StorageError::Invalid(format!(
                "timestamp {} is older than {}",
                meta.timestamp, state.timestamp_min
            )));
        }
        if payload_len > PAYLOAD_SIZE_MAX as usize {
            return Err(StorageError::Invalid(format!(
                "payload of {payload_len} bytes is over the limit of {PAYLOAD_SIZE_MAX}"
            )));
        }
        if state.pending.len() >= self.config.pending_max
            || state.pending_bytes + payload_len as u64 > self.config.pending_bytes_max
        {
            return Err(StorageError::QueueFull);
        }
        let (sender, receiver) = oneshot::channel();
        state.pending_bytes += payload_len as u64;
        state.next_op += 1;
        state.next_offset = Some(meta.offset_first + u64::from(meta.message_count));
        state.timestamp_min = meta.timestamp;
        let header = encode_record_header_parts(&meta, &[&head, &body]);
        state.pending.push(Pending {
            meta,
            header,
            payload_head: head,
            payload: body,
            done: sender,
        });
        for waker in [state.flush_waker.take(), state.committer_waker.take()]
            .into_iter()
            .flatten()
        {
            waker.wake();
        }
        Ok(Appending(receiver))
    }

    /// Commits appends as they are queued, until `stop_committer`: run it as a task of its own
    /// (one per log) and appenders need only `submit` and wait for `durable`. Its groups are as
    /// large as the appends in flight, which an appender that flushes (`commit_queued`) cannot
    /// have: its own next append waits for the flush it runs.
    pub async fn run_committer(&self) {
        loop {
            let flush = std::future::poll_fn(|cx| {
                let mut state = self.state.borrow_mut();
                if state.committer_stop {
                    // Stopped once: a later `run_committer` runs again.
                    state.committer_stop = false;
                    return std::task::Poll::Ready(false);
                }
                if !state.pending.is_empty() && !state.flushing {
                    state.flushing = true;
                    return std::task::Poll::Ready(true);
                }
                state.committer_waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            })
            .await;
            if !flush {
                return;
            }
            self.flush().await;
        }
    }

    /// Makes `run_committer` return once its current flush is done.
    pub fn stop_committer(&self) {
        let mut state = self.state.borrow_mut();
        state.committer_stop = true;
        if let Some(waker) = state.committer_waker.take() {
            waker.wake();
        }
    }

    /// Makes every queued append durable, a group at a time, unless another caller is already
    /// doing so (it then covers them: it loops until the queue is empty).
    pub async fn commit_queued(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.flushing {
                return;
            }
            state.flushing = true;
        }
        self.flush().await;
    }

    /// The durable ops are `[first_op, op_end)`.
    pub fn first_op(&self) -> u64 {
        self.state.borrow().segments[0].base_op
    }

    /// The first message offset the log holds (its oldest segment's).
    pub fn first_offset(&self) -> u64 {
        self.state.borrow().segments[0].offset_first
    }

    pub fn op_end(&self) -> u64 {
        self.state.borrow().durable_next().0
    }

    /// What the next `submit` must carry: its op, its offset (unknown while the last op is
    /// faulty) and a timestamp at least this. Queued appends count.
    pub fn next_append(&self) -> (u64, Option<u64>, u64) {
        let state = self.state.borrow();
        (state.next_op, state.next_offset, state.timestamp_min)
    }

    /// The offset the next message takes, when known (unknown while the last op is faulty).
    pub fn offset_end(&self) -> Option<u64> {
        self.state.borrow().durable_next().1
    }

    /// Group commits completed since open.
    pub fn groups_committed(&self) -> u64 {
        self.state.borrow().groups_committed
    }

    pub fn faulty(&self) -> Vec<FaultyEntry> {
        self.state.borrow().faulty.values().copied().collect()
    }

    /// The index entry of a durable op.
    pub async fn entry(&self, op: u64) -> Result<IndexEntry, StorageError> {
        if self
            .state
            .borrow()
            .faulty
            .get(&op)
            .is_some_and(|f| f.meta.is_none())
        {
            return Err(StorageError::Faulty(op));
        }
        let (idx, at, last) = {
            let state = self.state.borrow();
            let segment = state.segment_of(op).ok_or(StorageError::NotFound(op))?;
            (segment.idx, segment.index_position(op), segment.last)
        };
        if let Some(last) = last.filter(|l| l.meta.op == op) {
            return Ok(last);
        }
        let bytes = self
            .disk
            .read_at(idx, at, crate::format::INDEX_ENTRY_SIZE as usize)
            .await;
        match bytes {
            Ok(bytes) => match crate::format::decode_index_entry(&bytes) {
                Ok(entry) if entry.meta.op == op => Ok(entry),
                _ => Err(StorageError::Faulty(op)),
            },
            Err(DiskError::ReadFailed { .. } | DiskError::ShortRead { .. }) => {
                Err(StorageError::Faulty(op))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Records that `op`'s record is damaged though it passed the log's own checks (a layer
    /// above found its contents wrong), so that `repair` accepts a copy.
    pub async fn mark_faulty(&self, op: u64) -> Result<(), StorageError> {
        let entry = self.entry(op).await?;
        let _ = self.found_faulty(entry);
        Ok(())
    }

    /// Records that a read found `entry`'s record damaged, so that `repair` accepts a copy.
    fn found_faulty(&self, entry: IndexEntry) -> StorageError {
        let op = entry.meta.op;
        let mut state = self.state.borrow_mut();
        if state.segment_of(op).is_some() {
            state.faulty.entry(op).or_insert(FaultyEntry {
                op,
                meta: Some(entry.meta),
                position: entry.position,
                length: entry.length,
            });
        }
        StorageError::Faulty(op)
    }

    /// Reads the record of `op`, verifying its checksum against its index entry.
    pub async fn read(&self, op: u64) -> Result<Record, StorageError> {
        let entry = self.entry(op).await?;
        let log = {
            let state = self.state.borrow();
            state.segment_of(op).ok_or(StorageError::NotFound(op))?.log
        };
        let length = RECORD_HEADER_SIZE as usize + entry.length as usize;
        let bytes = match self.disk.read_bytes_at(log, entry.position, length).await {
            Ok(bytes) => bytes,
            Err(DiskError::ReadFailed { .. } | DiskError::ShortRead { .. }) => {
                return Err(self.found_faulty(entry));
            }
            Err(error) => return Err(error.into()),
        };
        assert_eq!(bytes.len(), length);
        let Some(payload) = verified_payload(&bytes, &entry.meta) else {
            return Err(self.found_faulty(entry));
        };
        let payload_len = payload.len();
        Ok(Record {
            meta: entry.meta,
            payload: bytes.slice(bytes.len() - payload_len..),
        })
    }

    /// The first `len` bytes (at most) of `op`'s payload, read without verifying the record:
    /// for a caller that checks what it reads itself (a prepare header's own checksum) and
    /// leaves the rest of the record to the reads that need it, which verify it.
    pub async fn read_head(&self, op: u64, len: u32) -> Result<(EntryMeta, Vec<u8>), StorageError> {
        let entry = self.entry(op).await?;
        let log = {
            let state = self.state.borrow();
            state.segment_of(op).ok_or(StorageError::NotFound(op))?.log
        };
        let head = len.min(entry.length) as usize;
        let at = entry.position + RECORD_HEADER_SIZE;
        let bytes = match self.disk.read_at(log, at, head).await {
            Ok(bytes) => bytes,
            Err(DiskError::ReadFailed { .. } | DiskError::ShortRead { .. }) => {
                return Err(self.found_faulty(entry));
            }
            Err(error) => return Err(error.into()),
        };
        assert_eq!(bytes.len(), head);
        Ok((entry.meta, bytes))
    }

    /// The op whose batch holds message `offset`; the first op when `offset` precedes the log
    /// (retention deleted it); `None` when `offset` is at or past the end.
    pub async fn find_offset(&self, offset: u64) -> Result<Option<u64>, StorageError> {
        self.find(
            |e| e.offset_first <= offset,
            |e| offset < e.meta.offset_first + u64::from(e.meta.message_count),
        )
        .await
    }

    /// The first op whose batch timestamp is at or after `timestamp` (µs), or `None`.
    pub async fn find_timestamp(&self, timestamp: u64) -> Result<Option<u64>, StorageError> {
        self.find(
            |e| e.timestamp < timestamp,
            |e| e.meta.timestamp >= timestamp,
        )
        .await
    }

    /// Finds the first durable op for which `hit` holds, knowing that `below` holds for a
    /// prefix of the log's sparse points and `hit` for a suffix of its entries. Reads the index
    /// one sparse interval at a time, starting at the last point below.
    async fn find(
        &self,
        below: impl Fn(&SparsePoint) -> bool,
        hit: impl Fn(&IndexEntry) -> bool,
    ) -> Result<Option<u64>, StorageError> {
        // Segments are named by their first op, not by their place in the list: retention may
        // remove one while this waits for the disk.
        let bases: Vec<u64> = {
            let state = self.state.borrow();
            let first = state
                .segments
                .partition_point(|s| s.sparse.first().is_some_and(&below))
                .saturating_sub(1);
            state.segments[first..].iter().map(|s| s.base_op).collect()
        };
        for base_op in bases {
            let mut from = None;
            loop {
                let range = {
                    let state = self.state.borrow();
                    let Some(segment) = state.segments.iter().find(|s| s.base_op == base_op) else {
                        break; // Removed meanwhile: its messages are gone.
                    };
                    let from = *from.get_or_insert_with(|| segment.sparse_range(&below).0);
                    let next = segment.sparse.partition_point(|p| p.op <= from);
                    let to = segment
                        .sparse
                        .get(next)
                        .map_or(segment.op_end, |p| p.op.min(segment.op_end));
                    (from < to).then_some((segment.idx, from, to))
                };
                let Some((idx, start, to)) = range else {
                    break;
                };
                for entry in read_entries(self.disk, idx, base_op, start, to).await? {
                    match entry {
                        Ok(entry) if hit(&entry) => return Ok(Some(entry.meta.op)),
                        Ok(_) => {}
                        Err(op) => return Err(StorageError::Faulty(op)),
                    }
                }
                from = Some(to);
            }
        }
        Ok(None)
    }

    /// Rewrites a faulty op from a peer's copy: the same prepare has the same bytes, so it goes
    /// back into its own slot.
    pub async fn repair(&self, meta: EntryMeta, payload: Bytes) -> Result<(), StorageError> {
        let _exclusive = self.exclusive()?;
        let (faulty, log, idx, at) = {
            let state = self.state.borrow();
            let faulty = *state
                .faulty
                .get(&meta.op)
                .ok_or(StorageError::Invalid(format!(
                    "op {} is not faulty",
                    meta.op
                )))?;
            let segment = state
                .segment_of(meta.op)
                .ok_or(StorageError::NotFound(meta.op))?;
            (
                faulty,
                segment.log,
                segment.idx,
                segment.index_position(meta.op),
            )
        };
        if faulty.meta.is_some_and(|m| m != meta) || faulty.length as usize != payload.len() {
            return Err(StorageError::Invalid(format!(
                "the repair of op {} does not match its slot",
                meta.op
            )));
        }
        if faulty.meta.is_none() {
            // Only the slot is known: the copy must also fit between its neighbours.
            let previous = match meta.op.checked_sub(1) {
                Some(op) if op >= self.first_op() => self.entry(op).await.ok(),
                _ => None,
            };
            let next = self.entry(meta.op + 1).await.ok();
            let offset_end = meta.offset_first + u64::from(meta.message_count);
            let fits = previous.is_none_or(|p| {
                p.meta.offset_first + u64::from(p.meta.message_count) == meta.offset_first
                    && p.meta.timestamp <= meta.timestamp
            }) && next.is_none_or(|n| {
                n.meta.offset_first == offset_end && meta.timestamp <= n.meta.timestamp
            });
            if !fits {
                return Err(StorageError::Invalid(format!(
                    "the repair of op {} does not fit between its neighbours",
                    meta.op
                )));
            }
        }
        let entry = IndexEntry {
            meta,
            position: faulty.position,
            length: faulty.length,
        };
        // The next group must not carry a stale copy of a block this rewrite changes.
        self.state.borrow_mut().tail = None;
        self.disk
            .write_at(log, faulty.position, encode_record(&meta, &payload))
            .await?;
        self.disk.sync(log).await.map_err(sync_failed)?;
        let bytes = Bytes::copy_from_slice(&encode_index_entry(&entry));
        self.disk.write_at(idx, at, bytes).await?;
        self.disk.sync(idx).await.map_err(sync_failed)?;
        let mut state = self.state.borrow_mut();
        state.faulty.remove(&meta.op);
        // The exclusive hold kept the segment in place; it ends with this op when it was last.
        let segment_index = state.segments.partition_point(|s| s.base_op <= meta.op) - 1;
        let segment = &mut state.segments[segment_index];
        if segment.op_end == meta.op + 1 {
            segment.last = Some(entry);
        }
        Ok(())
    }

    /// Scans every segment's log file from its first byte and checks that the records found
    /// are exactly the index entries, with intact checksums, and that nothing follows the last
    /// one. Returns the number of records. For tests, and for an operator's `verify` command.
    pub async fn verify(&self) -> Result<u64, StorageError> {
        let segments: Vec<(u64, u64, u64, crate::disk::FileId, crate::disk::FileId)> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .map(|s| (s.base_op, s.op_end, s.log_size, s.log, s.idx))
                .collect()
        };
        let mut records = 0u64;
        for (base_op, op_end, log_size, log, idx) in segments {
            let corrupt =
                |what: String| StorageError::Unrecoverable(format!("segment {base_op}: {what}"));
            let file_size = self.disk.size(log).await?;
            let padded = file_size > log_size
                && crate::recovery::is_zero_padding(self.disk, log, log_size, file_size).await;
            if file_size != log_size && !padded {
                return Err(corrupt(format!(
                    "log file is {file_size} bytes, the index says {log_size}"
                )));
            }
            let entries = read_entries(self.disk, idx, base_op, base_op, op_end).await?;
            let mut position = crate::format::FILE_HEADER_SIZE;
            for entry in entries {
                let entry =
                    entry.map_err(|op| corrupt(format!("index entry of op {op} is damaged")))?;
                let (meta, length) = read_intact_record(self.disk, log, position, log_size)
                    .await
                    .ok_or_else(|| corrupt(format!("the record at {position} is damaged")))?;
                let scanned = IndexEntry {
                    meta,
                    position,
                    length,
                };
                if scanned != entry {
                    return Err(corrupt(format!(
                        "scan found {scanned:?}, index has {entry:?}"
                    )));
                }
                position = scanned.record_end();
                records += 1;
            }
            if position != log_size {
                return Err(corrupt(format!(
                    "records end at {position}, the file at {log_size}"
                )));
            }
        }
        Ok(records)
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        let state = self.state.borrow();
        let count = state.segments.len();
        state
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentInfo {
                base_op: s.base_op,
                op_end: s.op_end,
                offset_first: s.offset_first,
                offset_end: s.offset_end(),
                size: s.log_size + s.index_position(s.op_end),
                timestamp_last: s.last.map_or(0, |l| l.meta.timestamp),
                sealed: i + 1 < count,
            })
            .collect()
    }

    /// Deletes the oldest sealed segment; returns its info, or `None` if only the active one
    /// is left.
    pub async fn delete_oldest_segment(&self) -> Result<Option<SegmentInfo>, StorageError> {
        let _exclusive = self.exclusive()?;
        let (info, log, idx) = {
            let state = self.state.borrow();
            if state.segments.len() < 2 {
                return Ok(None);
            }
            let oldest = &state.segments[0];
            (self.segments()[0], oldest.log, oldest.idx)
        };
        {
            let mut state = self.state.borrow_mut();
            state.segments.remove(0);
            state.faulty.retain(|f, _| *f >= info.op_end);
        }
        self.disk.close(log).await;
        self.disk.close(idx).await;
        // A crash between the two unlinks leaves the oldest segment half there; open removes it.
        // A failed unlink leaves a segment memory forgot: only a reopen sorts that out.
        if let Err(error) = remove_segment_files(self.disk, &self.config.dir, info.base_op).await {
            self.state.borrow_mut().poisoned = true;
            return Err(error);
        }
        Ok(Some(info))
    }
}

impl<D: Disk> PartitionLog<'_, D> {
    /// Closes every segment's files, for a log that is done (its group was stopped). Refused
    /// while an append, flush or exclusive operation is under way; afterwards every append is
    /// refused and every read fails.
    pub async fn close(&self) -> Result<(), StorageError> {
        let files: Vec<_> = {
            let mut state = self.state.borrow_mut();
            state.begin_exclusive()?;
            // Left set: the log takes no more work.
            state.poisoned = true;
            state.segments.iter().flat_map(|s| [s.log, s.idx]).collect()
        };
        for file in files {
            self.disk.close(file).await;
        }
        Ok(())
    }
}

/// Removes a closed log's directory `dir` and everything in it (the log of a deleted group).
/// Idempotent: a crash part way leaves less of the same directory, and a second call finishes.
pub async fn remove_log_dir<D: Disk>(disk: &D, dir: &str) -> Result<(), StorageError> {
    let names = match disk.list(dir).await {
        Ok(names) => names,
        Err(DiskError::NotFound(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for name in names {
        gone(disk.remove(&join(dir, &name)).await)?;
    }
    disk.sync_dir(dir).await?;
    gone(disk.remove_dir(dir).await)?;
    disk.sync_dir(parent(dir)).await?;
    Ok(())
}

/// True when `segment` starts where the last of `segments` ends (or is the first).
fn continues(segments: &[Segment], segment: &Segment) -> bool {
    segments.last().is_none_or(|previous| {
        previous.op_end == segment.base_op && previous.offset_end() == segment.offset_first
    })
}

/// How many of the oldest sealed segments `retention` removes at time `now_us`: a pure
/// function, so the replicated retention op can compute it the same way on every replica.
pub fn retention_count(segments: &[SegmentInfo], retention: Retention, now_us: u64) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.size).sum();
    let mut count = 0;
    for segment in segments.iter().filter(|s| s.sealed) {
        let too_old = retention
            .max_age_us
            .is_some_and(|age| segment.timestamp_last.saturating_add(age) < now_us);
        let too_big = retention.max_bytes.is_some_and(|max| total > max);
        if !(too_old || too_big) {
            break;
        }
        total -= segment.size;
        count += 1;
    }
    count
}

pub(crate) async fn remove_segment_files<D: Disk>(
    disk: &D,
    dir: &str,
    base: u64,
) -> Result<(), StorageError> {
    // The index first: an index without its log is never left behind as a sealed segment.
    for name in [idx_name(dir, base), log_name(dir, base)] {
        gone(disk.remove(&name).await)?;
    }
    disk.sync_dir(dir).await?;
    Ok(())
}
