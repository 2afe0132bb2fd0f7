//! Group commit of a partition log's appends, in two concurrent stages.
//!
//! The flusher (the committer task, or an appender that found no flush running) runs a write
//! stage and a sync stage side by side. The write stage takes every queued append as a group
//! and writes its records (laid out on the disk's direct-I/O block), again and again. The sync
//! stage works in rounds. Each round takes every group written so far and fdatasyncs the log
//! for them; at the same time it writes and fdatasyncs the index entries of the groups whose
//! log fdatasync finished in the round before, and completes their appends. So one fdatasync
//! covers every write that completed while the previous one was in flight, and under load the
//! log's and the index's fdatasyncs overlap instead of taking turns. The record before index
//! order is kept: an index entry is written only after the fdatasync that covers its record.
//! The index file grows by 64 KiB of zeros at a time, written ahead of the entries, so most
//! index fdatasyncs flush data only and commit no file size to the filesystem's journal.
//! The write stage waits while the bytes written and not yet durable pass the queue's byte
//! limit. Any failure fails every group not yet durable and every queued append, and cuts the
//! files back to the durable log; a failed fdatasync poisons it.

use std::cell::{Cell, RefCell};
use std::task::Poll;

use bytes::{Bytes, BytesMut};

use crate::aligned::{align_down, align_up};
use crate::disk::{Disk, FileId};
use crate::error::StorageError;
use crate::format::{
    encode_index_entry, IndexEntry, FILE_HEADER_SIZE, INDEX_ENTRY_SIZE, RECORD_HEADER_SIZE,
};
use crate::futures::join;
use crate::log::{remove_segment_files, sync_failed, PartitionLog, Pending};
use crate::segment::{Segment, INDEX_ZEROS_AHEAD};

/// Payloads at least this large are written from the caller's buffer instead of being copied
/// into the group's buffer.
const PAYLOAD_COPY_MAX: usize = 256 * 1024;
/// The largest single direct write (and pooled buffer): a group larger than this goes out in
/// several writes.
const DIRECT_CHUNK: u64 = 8 << 20;
/// Executor turns the write stage waits, at most, for appenders to queue before taking a group.
const GATHER_TURNS_MAX: usize = 64;

/// Poisons the log if a flush is dropped before it finished (its caller was cancelled): the
/// groups it held are neither durable nor failed, and only a reopen can tell.
struct FlushGuard<'a> {
    state: &'a std::cell::RefCell<crate::log::State>,
    finished: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let queued = {
                let mut state = self.state.borrow_mut();
                state.poisoned = true;
                state.flushing = false;
                std::mem::take(&mut state.pending)
            };
            for pending in queued {
                let _ = pending.done.send(Err(StorageError::Poisoned));
            }
        }
    }
}

/// The active log's bytes from the last block boundary to the end of the last group written:
/// the next aligned group write starts at that boundary and writes them again, unchanged.
pub(crate) struct TailBlock {
    file: FileId,
    end: u64,
    bytes: Vec<u8>,
}

/// Consecutive byte slices laid end to end from file offset `start`: what a group writes.
struct Stream<'a> {
    start: u64,
    parts: Vec<&'a [u8]>,
}

impl Stream<'_> {
    fn end(&self) -> u64 {
        self.start + self.parts.iter().map(|p| p.len() as u64).sum::<u64>()
    }

    /// Copies the bytes at file offset `from` into `target`; past the end, zeros.
    fn copy(&self, from: u64, target: &mut [u8]) {
        assert!(from >= self.start);
        let mut skip = from - self.start;
        let mut filled = 0usize;
        for part in &self.parts {
            if filled == target.len() {
                break;
            }
            if skip >= part.len() as u64 {
                skip -= part.len() as u64;
                continue;
            }
            let part = &part[skip as usize..];
            skip = 0;
            let n = part.len().min(target.len() - filled);
            target[filled..filled + n].copy_from_slice(&part[..n]);
            filled += n;
        }
        target[filled..].fill(0);
    }
}

/// A group whose records are written but not yet known durable.
pub(crate) struct Written {
    group: Vec<Pending>,
    /// (segment index, entry) per append, in op order.
    layout: Vec<(usize, IndexEntry)>,
}

impl Written {
    fn payload_bytes(&self) -> u64 {
        payload_bytes(&self.group)
    }

    fn touched(&self) -> Vec<usize> {
        let mut touched: Vec<usize> = self.layout.iter().map(|(s, _)| *s).collect();
        touched.dedup();
        touched
    }
}

/// What the two stages of a flush share: groups written and waiting for their fdatasync, and
/// the failure that stops both.
#[derive(Default)]
struct Stages {
    written: RefCell<Vec<Written>>,
    /// Payload bytes written and not yet durable, the group being synced included (the write
    /// stage waits while they pass the queue's byte limit).
    unsynced_bytes: Cell<u64>,
    syncing: Cell<bool>,
    writer_done: Cell<bool>,
    /// The groups the stages held when they failed, and the error to report; both stop.
    failed: RefCell<Option<(Vec<Pending>, StorageError)>>,
}

impl Stages {
    /// `bytes` of written groups became durable and completed.
    fn settle(&self, bytes: u64) {
        let unsynced = self.unsynced_bytes.get();
        assert!(bytes <= unsynced);
        self.unsynced_bytes.set(unsynced - bytes);
    }

    /// A written group failed before it completed.
    fn fail_unsynced(&self, (group, error): (Vec<Pending>, StorageError)) {
        self.settle(payload_bytes(&group));
        self.record_failure((group, error));
    }

    /// Adds a stage's failure to any the other stage recorded: every group fails, and an error
    /// that poisons the log (a failed fdatasync) wins over one that does not.
    fn record_failure(&self, (group, error): (Vec<Pending>, StorageError)) {
        let mut failed = self.failed.borrow_mut();
        match failed.as_mut() {
            None => *failed = Some((group, error)),
            Some((groups, recorded)) => {
                groups.extend(group);
                if poisons(&error) && !poisons(recorded) {
                    *recorded = error;
                }
            }
        }
    }
}

/// Payload bytes of `group`'s appends (what the write stage's byte limit counts).
fn payload_bytes(group: &[Pending]) -> u64 {
    group.iter().map(|p| p.payload_len() as u64).sum()
}

/// Whether `error` leaves the log unusable until a reopen.
fn poisons(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::SyncFailed(_) | StorageError::Unrecoverable(_)
    )
}

impl<D: Disk> PartitionLog<'_, D> {
    /// Writes and syncs queued appends until none is left or in flight.
    pub(crate) async fn flush(&self) {
        let mut guard = FlushGuard {
            state: &self.state,
            finished: false,
        };
        let stages = Stages::default();
        join(self.write_stage(&stages), self.sync_stage(&stages)).await;
        let failed = stages.failed.take();
        let unsynced: Vec<Pending> = stages
            .written
            .take()
            .into_iter()
            .flat_map(|written| written.group)
            .collect();
        if let Some((mut group, error)) = failed {
            group.extend(unsynced);
            // `fail` takes every queued append, and no new one is accepted until it is done.
            self.fail(group, error).await;
            let mut state = self.state.borrow_mut();
            assert!(state.pending.is_empty());
            state.flushing = false;
            guard.finished = true;
            return;
        }
        assert!(
            unsynced.is_empty(),
            "the sync stage drains what was written"
        );
        guard.finished = true;
    }

    /// Takes every queued append as a group and writes its records, again and again, while
    /// the sync stage makes earlier groups durable. Ends, clearing `flushing`, when nothing is
    /// queued, written or syncing (or a stage failed).
    async fn write_stage(&self, stages: &Stages) {
        loop {
            let go = self
                .wait_for(|state| {
                    if stages.failed.borrow().is_some() {
                        return Some(false);
                    }
                    let backlog = !stages.written.borrow().is_empty()
                        && stages.unsynced_bytes.get() >= self.config.pending_bytes_max;
                    if !state.pending.is_empty() && !backlog {
                        return Some(true);
                    }
                    let idle = !stages.syncing.get() && stages.written.borrow().is_empty();
                    if state.pending.is_empty() && idle {
                        state.flushing = false;
                        return Some(false);
                    }
                    None
                })
                .await;
            if go {
                // Appenders woken by the last group queue their next appends before this
                // group is taken: yield while the queue still grows (a bounded number of turns).
                for _ in 0..GATHER_TURNS_MAX {
                    let queued = self.state.borrow().pending.len();
                    self.disk.yield_now().await;
                    if self.state.borrow().pending.len() == queued {
                        break;
                    }
                }
            }
            // The sync stage may have failed meanwhile: then `fail` takes what is queued.
            if !go || stages.failed.borrow().is_some() {
                stages.writer_done.set(true);
                self.wake_flusher();
                return;
            }
            let group = {
                let mut state = self.state.borrow_mut();
                state.pending_bytes = 0;
                std::mem::take(&mut state.pending)
            };
            let bytes = payload_bytes(&group);
            match self.write_records(group).await {
                Ok(written) => {
                    stages
                        .unsynced_bytes
                        .set(stages.unsynced_bytes.get() + bytes);
                    stages.written.borrow_mut().push(written);
                }
                Err(failure) => {
                    // `flushing` stays set: `flush` cuts the files back first.
                    stages.record_failure(failure);
                    stages.writer_done.set(true);
                    self.wake_flusher();
                    return;
                }
            }
            self.wake_flusher();
        }
    }

    /// Makes the groups written so far durable in rounds, until the write stage is done and
    /// nothing written is left. A round fdatasyncs the log for the newly written groups while
    /// it indexes the groups the previous round made durable in the log (`log_durable`).
    async fn sync_stage(&self, stages: &Stages) {
        let mut log_durable: Option<Written> = None;
        loop {
            let waiting_for_index = log_durable.is_some();
            let batch = self
                .wait_for(|_| {
                    let mut written = stages.written.borrow_mut();
                    if stages.failed.borrow().is_some() {
                        return Some(None);
                    }
                    if !written.is_empty() {
                        stages.syncing.set(true);
                        return Some(Some(std::mem::take(&mut *written)));
                    }
                    if waiting_for_index {
                        // Nothing new to sync: index what is durable in the log, alone.
                        return Some(Some(Vec::new()));
                    }
                    stages.writer_done.get().then_some(None)
                })
                .await;
            let Some(batch) = batch else {
                if let Some(unindexed) = log_durable.take() {
                    // The write stage failed: this group fails with the rest, unindexed.
                    stages.fail_unsynced((unindexed.group, StorageError::Poisoned));
                }
                stages.syncing.set(false);
                return;
            };
            let mut merged = Written {
                group: Vec::new(),
                layout: Vec::new(),
            };
            for written in batch {
                merged.group.extend(written.group);
                merged.layout.extend(written.layout);
            }
            let to_index = log_durable.take();
            let (synced, indexed) = join(
                async {
                    if merged.group.is_empty() {
                        Ok(None)
                    } else {
                        self.sync_log(merged).await.map(Some)
                    }
                },
                async {
                    match to_index {
                        Some(written) => {
                            let bytes = written.payload_bytes();
                            self.index(written).await.map(|()| bytes)
                        }
                        None => Ok(0),
                    }
                },
            )
            .await;
            match indexed {
                Ok(bytes) => stages.settle(bytes),
                Err(failure) => stages.fail_unsynced(failure),
            }
            match synced {
                Ok(next) => log_durable = next,
                Err(failure) => stages.fail_unsynced(failure),
            }
            if stages.failed.borrow().is_some() {
                if let Some(unindexed) = log_durable.take() {
                    // Its index entries were never written: it fails with the rest (the error
                    // recorded first is the one reported).
                    stages.fail_unsynced((unindexed.group, StorageError::Poisoned));
                }
            }
            // A group durable in the log but not indexed keeps the flush going.
            stages.syncing.set(log_durable.is_some());
            self.wake_flusher();
        }
    }

    /// Waits until `ready` returns `Some`, checking it again whenever the flusher is woken
    /// (an append queued, or the other stage moved on).
    async fn wait_for<T>(&self, mut ready: impl FnMut(&mut crate::log::State) -> Option<T>) -> T {
        std::future::poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            match ready(&mut state) {
                Some(value) => Poll::Ready(value),
                None => {
                    state.flush_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn wake_flusher(&self) {
        let waker = self.state.borrow_mut().flush_waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Lays out and writes the records of `group` (not yet synced).
    async fn write_records(
        &self,
        group: Vec<Pending>,
    ) -> Result<Written, (Vec<Pending>, StorageError)> {
        assert!(!group.is_empty());
        let mut layout: Vec<(usize, IndexEntry)> = Vec::with_capacity(group.len());
        let mut end = self.state.borrow().written_end;
        for pending in &group {
            let size = RECORD_HEADER_SIZE + pending.payload_len() as u64;
            // A segment with records seals when the next one would pass the size.
            let roll = end > FILE_HEADER_SIZE && end + size > self.config.segment_size;
            if roll {
                let created = Segment::create(
                    self.disk,
                    &self.config.dir,
                    pending.meta.op,
                    pending.meta.offset_first,
                )
                .await;
                let segment = match created {
                    Ok(segment) => segment,
                    Err(error) => return Err((group, error)),
                };
                end = segment.log_size;
                let mut state = self.state.borrow_mut();
                state.segments.push(segment);
                state.written_end = end;
            }
            let index = self.state.borrow().segments.len() - 1;
            let entry = IndexEntry {
                meta: pending.meta,
                position: end,
                length: pending.payload_len() as u32,
            };
            end = entry.record_end();
            layout.push((index, entry));
        }
        let written = Written { group, layout };
        for segment_index in written.touched() {
            let file = self.state.borrow().segments[segment_index].log;
            let records: Vec<(&IndexEntry, &Pending)> = written
                .layout
                .iter()
                .zip(&written.group)
                .filter(|((s, _), _)| *s == segment_index)
                .map(|((_, entry), pending)| (entry, pending))
                .collect();
            if let Err(error) = self.write_segment_records(file, &records).await {
                return Err((written.group, error));
            }
        }
        self.state.borrow_mut().written_end = end;
        Ok(written)
    }

    /// Writes the contiguous `records` of one segment's log file. Where the disk writes
    /// blocks directly, they go out from the block boundary before the first record (that
    /// block's earlier bytes written again, unchanged, from the copy the last group kept) to
    /// the boundary after the last one (zeros, which recovery tells from a torn record), in
    /// chunks of at most `DIRECT_CHUNK`. Without that copy (the first group after an open, a
    /// repair, a truncation or a new segment) or in a segment's first block (never rewrite
    /// its synced header), small records are copied into one buffer and large payloads
    /// written from the caller's, unaligned. Bytes read back from the disk are never written.
    async fn write_segment_records(
        &self,
        file: FileId,
        records: &[(&IndexEntry, &Pending)],
    ) -> Result<(), StorageError> {
        let start = records.first().expect("at least one record").0.position;
        let end = records.last().expect("at least one record").0.record_end();
        assert!(end > start);
        let alignment = self.disk.write_alignment();
        let block_start = align_down(start, alignment);
        let cached = self
            .state
            .borrow_mut()
            .tail
            .take()
            .filter(|tail| tail.file == file && tail.end == start);
        let prefix = match cached {
            Some(tail) => Some(tail.bytes),
            None if block_start == start => Some(Vec::new()),
            None => None,
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * records.len());
        let aligned = alignment > 1 && block_start > 0 && prefix.is_some();
        let stream_start = if aligned { block_start } else { start };
        if aligned {
            parts.push(prefix.as_deref().expect("checked above"));
        }
        for (_, pending) in records {
            parts.push(&pending.header);
            parts.push(&pending.payload_head);
            parts.push(&pending.payload);
        }
        let stream = Stream {
            start: stream_start,
            parts,
        };
        assert_eq!(stream.end(), end, "records are contiguous");
        if aligned {
            let total = align_up(end, alignment) - block_start;
            let mut at = 0u64;
            while at < total {
                let length = (total - at).min(DIRECT_CHUNK);
                let mut buffer = self.buffers.take(length as usize);
                stream.copy(block_start + at, buffer.as_mut_slice());
                self.disk
                    .write_at(file, block_start + at, buffer.freeze())
                    .await?;
                at += length;
            }
        } else {
            self.write_unaligned(file, records).await?;
        }
        // The new partial last block, for the next group: only bytes this group wrote, and
        // never a segment's first block.
        let tail_start = align_down(end, alignment);
        if alignment > 1 && tail_start >= stream_start.max(alignment) {
            let mut bytes = vec![0u8; (end - tail_start) as usize];
            stream.copy(tail_start, &mut bytes);
            self.state.borrow_mut().tail = Some(TailBlock { file, end, bytes });
        }
        Ok(())
    }

    /// Writes `records` where they go, small ones copied into one buffer, large payloads
    /// from the caller's buffer.
    async fn write_unaligned(
        &self,
        file: FileId,
        records: &[(&IndexEntry, &Pending)],
    ) -> Result<(), StorageError> {
        let mut chunks: Vec<(u64, Bytes)> = Vec::new();
        let mut buffer = BytesMut::new();
        let mut buffer_start = None;
        for (entry, pending) in records {
            buffer_start.get_or_insert(entry.position);
            buffer.extend_from_slice(&pending.header);
            buffer.extend_from_slice(&pending.payload_head);
            if pending.payload.len() >= PAYLOAD_COPY_MAX {
                let at = buffer_start.take().expect("set above");
                chunks.push((at, buffer.split().freeze()));
                let body_at =
                    entry.position + RECORD_HEADER_SIZE + pending.payload_head.len() as u64;
                chunks.push((body_at, pending.payload.clone()));
            } else {
                buffer.extend_from_slice(&pending.payload);
            }
        }
        if let Some(at) = buffer_start {
            chunks.push((at, buffer.freeze()));
        }
        for (at, bytes) in chunks {
            self.disk.write_at(file, at, bytes).await?;
        }
        Ok(())
    }

    /// Makes a written group's records durable (fdatasync of each log file it touched).
    async fn sync_log(&self, written: Written) -> Result<Written, (Vec<Pending>, StorageError)> {
        for segment_index in written.touched() {
            let file = self.state.borrow().segments[segment_index].log;
            if let Err(error) = self.disk.sync(file).await {
                return Err((written.group, sync_failed(error)));
            }
        }
        Ok(written)
    }

    /// Writes and fdatasyncs the index entries of a group whose records are durable, then
    /// publishes its entries and completes its appends.
    async fn index(&self, written: Written) -> Result<(), (Vec<Pending>, StorageError)> {
        let touched = written.touched();
        for &segment_index in &touched {
            let (file, at) = {
                let state = self.state.borrow();
                let segment = &state.segments[segment_index];
                let first = written.layout.iter().find(|(s, _)| *s == segment_index);
                (
                    segment.idx,
                    segment.index_position(first.expect("touched").1.meta.op),
                )
            };
            let mut buffer = BytesMut::new();
            for (s, entry) in &written.layout {
                if *s == segment_index {
                    buffer.extend_from_slice(&encode_index_entry(entry));
                }
            }
            // Past the zeros written ahead: grow the file by a run of zeros in the same write,
            // so the next groups' index fdatasyncs commit no new file size.
            let entries_end = at + buffer.len() as u64;
            let file_end = self.state.borrow().segments[segment_index].idx_file_end;
            let grown_end = if entries_end > file_end {
                // Never past the most entries the segment can hold (each record is at least
                // its header), so tiny test segments stay tiny.
                let entries_max = self.config.segment_size / RECORD_HEADER_SIZE + 1;
                let index_max = FILE_HEADER_SIZE + entries_max * INDEX_ENTRY_SIZE;
                let grown_end = align_up(entries_end, INDEX_ZEROS_AHEAD)
                    .min(index_max)
                    .max(entries_end);
                buffer.resize((grown_end - at) as usize, 0);
                Some(grown_end)
            } else {
                None
            };
            if let Err(error) = self.disk.write_at(file, at, buffer.freeze()).await {
                return Err((written.group, error.into()));
            }
            if let Some(grown_end) = grown_end {
                self.state.borrow_mut().segments[segment_index].idx_file_end = grown_end;
            }
        }
        for &segment_index in &touched {
            let file = self.state.borrow().segments[segment_index].idx;
            if let Err(error) = self.disk.sync(file).await {
                return Err((written.group, sync_failed(error)));
            }
        }
        {
            let mut state = self.state.borrow_mut();
            for (segment_index, entry) in written.layout {
                state.segments[segment_index].push(entry, self.config.index_interval_bytes);
            }
            state.groups_committed += 1;
        }
        for pending in written.group {
            let _ = pending.done.send(Ok(()));
        }
        Ok(())
    }

    /// Fails `failed` and every queued append, and cuts the files back to the durable log.
    async fn fail(&self, failed: Vec<Pending>, error: StorageError) {
        let queued = {
            let mut state = self.state.borrow_mut();
            // No append is accepted until the durable end is known again (below).
            state.exclusive = true;
            state.pending_bytes = 0;
            if poisons(&error) {
                state.poisoned = true;
            }
            std::mem::take(&mut state.pending)
        };
        for pending in failed.into_iter().chain(queued) {
            let _ = pending.done.send(Err(error.clone()));
        }
        // Segments created for the failed groups hold nothing durable.
        loop {
            let doomed = {
                let state = self.state.borrow();
                let active = state.active();
                (state.segments.len() > 1 && active.is_empty()).then_some((
                    active.base_op,
                    active.log,
                    active.idx,
                ))
            };
            let Some((base, log, idx)) = doomed else {
                break;
            };
            self.disk.close(log).await;
            self.disk.close(idx).await;
            self.state.borrow_mut().segments.pop();
            // A segment left behind would not continue the log: only a reopen sorts it out.
            if remove_segment_files(self.disk, &self.config.dir, base)
                .await
                .is_err()
            {
                self.state.borrow_mut().poisoned = true;
            }
        }
        let (log, idx, log_size, idx_end) = {
            let state = self.state.borrow();
            let active = state.active();
            (
                active.log,
                active.idx,
                active.log_size,
                active.index_position(active.op_end),
            )
        };
        // Best effort: what stays past the durable end is a torn tail to recovery.
        let _ = self.disk.truncate(idx, idx_end).await;
        let _ = self.disk.truncate(log, log_size).await;
        let mut state = self.state.borrow_mut();
        // Unknown after a failed truncate: grow the file again on the next index write.
        let active = state.segments.len() - 1;
        state.segments[active].idx_file_end = idx_end;
        state.written_end = log_size;
        state.tail = None;
        (state.next_op, state.next_offset, state.timestamp_min) = state.durable_next();
        state.exclusive = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_copies_across_parts_and_zero_fills_past_its_end() {
        let stream = Stream {
            start: 100,
            parts: vec![b"abc", b"", b"defg"],
        };
        assert_eq!(stream.end(), 107);
        let mut target = [9u8; 6];
        stream.copy(102, &mut target);
        assert_eq!(&target, b"cdefg\0");
        let mut target = [9u8; 2];
        stream.copy(100, &mut target);
        assert_eq!(&target, b"ab");
    }

    fn pending(
        op: u64,
    ) -> (
        Pending,
        futures_channel::oneshot::Receiver<Result<(), StorageError>>,
    ) {
        let (done, receiver) = futures_channel::oneshot::channel();
        let meta = crate::format::EntryMeta {
            op,
            checksum: 1,
            offset_first: op,
            message_count: 1,
            timestamp: op,
        };
        let payload = Bytes::from_static(b"x");
        let header = crate::format::encode_record_header(&meta, &payload);
        (
            Pending {
                meta,
                payload_head: Bytes::new(),
                payload,
                header,
                done,
            },
            receiver,
        )
    }

    #[test]
    fn two_failures_fail_both_groups_and_a_failed_sync_wins() {
        let stages = Stages::default();
        let (first, _a) = pending(1);
        let (second, _b) = pending(2);
        stages.record_failure((
            vec![first],
            StorageError::Disk(crate::disk::DiskError::NoSpace),
        ));
        stages.record_failure((vec![second], StorageError::SyncFailed("eio".into())));
        let (groups, error) = stages.failed.take().unwrap();
        assert_eq!(groups.len(), 2);
        assert!(poisons(&error), "{error:?}");
        let (third, _c) = pending(3);
        stages.record_failure((vec![third], StorageError::SyncFailed("eio".into())));
        let (fourth, _d) = pending(4);
        stages.record_failure((
            vec![fourth],
            StorageError::Disk(crate::disk::DiskError::NoSpace),
        ));
        assert!(poisons(&stages.failed.take().unwrap().1));
    }
}
