//! Group commit of a partition log's appends, pipelined two groups deep.
//!
//! The flusher (whichever appender found no flush running) repeats: take every queued append
//! as the next group and write its records, while, at the same time, the previous group is
//! finished: fdatasync of the log, then its index entries are written and fdatasynced, then its
//! appends complete. So one fdatasync covers every write that arrived while the previous one
//! was in flight, and the disk is never idle while the next group is copied out. The record
//! before index order of each group is kept: an index entry is written only after the
//! fdatasync that covers its record. Any failure fails every group in flight and every queued
//! append, and cuts the files back to the durable log; a failed fdatasync poisons the log.

use bytes::{Bytes, BytesMut};

use crate::disk::Disk;
use crate::error::StorageError;
use crate::format::{
    encode_index_entry, encode_record_header, IndexEntry, FILE_HEADER_SIZE, RECORD_HEADER_SIZE,
};
use crate::futures::join;
use crate::log::{remove_segment_files, sync_failed, PartitionLog, Pending};
use crate::segment::Segment;

/// Payloads at least this large are written from the caller's buffer instead of being copied
/// into the group's buffer.
const PAYLOAD_COPY_MAX: usize = 256 * 1024;
/// Executor turns the flusher waits, at most, for appenders to queue before taking a group.
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

/// A group whose records are written but not yet known durable.
pub(crate) struct Written {
    group: Vec<Pending>,
    /// (segment index, entry) per append, in op order.
    layout: Vec<(usize, IndexEntry)>,
}

impl Written {
    fn touched(&self) -> Vec<usize> {
        let mut touched: Vec<usize> = self.layout.iter().map(|(s, _)| *s).collect();
        touched.dedup();
        touched
    }
}

impl<D: Disk> PartitionLog<'_, D> {
    /// Writes queued appends, a group at a time, until none is left or in flight.
    pub(crate) async fn flush(&self) {
        let mut guard = FlushGuard {
            state: &self.state,
            finished: false,
        };
        let mut in_flight: Option<Written> = None;
        loop {
            // Appenders woken by the last group queue their next appends before this one is
            // taken, so groups stay as large as the appends in flight: yield while the queue
            // still grows (a bounded number of turns).
            for _ in 0..GATHER_TURNS_MAX {
                let queued = self.state.borrow().pending.len();
                self.disk.yield_now().await;
                if self.state.borrow().pending.len() == queued {
                    break;
                }
            }
            let group = {
                let mut state = self.state.borrow_mut();
                state.pending_bytes = 0;
                std::mem::take(&mut state.pending)
            };
            if group.is_empty() && in_flight.is_none() {
                self.state.borrow_mut().flushing = false;
                guard.finished = true;
                return;
            }
            let write_next = async {
                if group.is_empty() {
                    Ok(None)
                } else {
                    self.write_records(group).await.map(Some)
                }
            };
            let finish_previous = async {
                match in_flight.take() {
                    Some(written) => self.finish(written).await,
                    None => Ok(()),
                }
            };
            let (next, previous) = join(write_next, finish_previous).await;
            match (next, previous) {
                (Ok(next), Ok(())) => in_flight = next,
                (next, previous) => {
                    let mut failed: Vec<Pending> = Vec::new();
                    let mut error = None;
                    if let Err((group, e)) = previous {
                        failed.extend(group);
                        error = Some(e);
                    }
                    match next {
                        Ok(Some(written)) => failed.extend(written.group),
                        Ok(None) => {}
                        Err((group, e)) => {
                            failed.extend(group);
                            error = error.or(Some(e));
                        }
                    }
                    self.fail(failed, error.expect("one of the two failed"))
                        .await;
                }
            }
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
            let size = RECORD_HEADER_SIZE + pending.payload.len() as u64;
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
                length: pending.payload.len() as u32,
            };
            end = entry.record_end();
            layout.push((index, entry));
        }
        let written = Written { group, layout };
        // Per segment, records go out in contiguous writes: small ones copied together into
        // one buffer, large payloads handed to the disk as they are (no copy).
        for segment_index in written.touched() {
            let file = self.state.borrow().segments[segment_index].log;
            let mut chunks: Vec<(u64, Bytes)> = Vec::new();
            let mut buffer = BytesMut::new();
            let mut buffer_start = None;
            for ((s, entry), pending) in written.layout.iter().zip(&written.group) {
                if *s != segment_index {
                    continue;
                }
                buffer_start.get_or_insert(entry.position);
                buffer.extend_from_slice(&encode_record_header(&entry.meta, &pending.payload));
                if pending.payload.len() >= PAYLOAD_COPY_MAX {
                    let start = buffer_start.take().expect("set above");
                    chunks.push((start, buffer.split().freeze()));
                    chunks.push((entry.position + RECORD_HEADER_SIZE, pending.payload.clone()));
                } else {
                    buffer.extend_from_slice(&pending.payload);
                }
            }
            if let Some(start) = buffer_start {
                chunks.push((start, buffer.freeze()));
            }
            for (at, bytes) in chunks {
                if let Err(error) = self.disk.write_at(file, at, bytes).await {
                    return Err((written.group, error.into()));
                }
            }
        }
        self.state.borrow_mut().written_end = end;
        Ok(written)
    }

    /// Makes a written group durable (log fdatasync, index write, index fdatasync), then
    /// publishes its entries and completes its appends.
    async fn finish(&self, written: Written) -> Result<(), (Vec<Pending>, StorageError)> {
        let touched = written.touched();
        for &segment_index in &touched {
            let file = self.state.borrow().segments[segment_index].log;
            if let Err(error) = self.disk.sync(file).await {
                return Err((written.group, sync_failed(error)));
            }
        }
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
            if let Err(error) = self.disk.write_at(file, at, buffer.freeze()).await {
                return Err((written.group, error.into()));
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
            if matches!(
                error,
                StorageError::SyncFailed(_) | StorageError::Unrecoverable(_)
            ) {
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
        state.written_end = log_size;
        (state.next_op, state.next_offset, state.timestamp_min) = state.durable_next();
        state.exclusive = false;
    }
}
