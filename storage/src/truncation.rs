//! `truncate_after`: removing a partition log's uncommitted suffix (ops a view change
//! discarded), crash-safely.
//!
//! The cut is first recorded in the `.idx` header of the segment that keeps `op` (its
//! `truncate_to`), then later segments are removed, newest first, then that segment's index and
//! log are cut, then the mark is cleared. A crash anywhere in between leaves the mark, and
//! recovery finishes the cut before anything else: discarded ops never come back.
//!
//! `reset_to`: emptying a log that must start at a later op (its replica installed a
//! checkpoint of the op before it): every segment is removed, newest first, then an empty one
//! is created at the new first op. A crash part way leaves a shorter prefix of the old log
//! (recovery opens it as it is) or no segment at all; the caller's recovery compares the log
//! with its checkpoint and resets again.

use bytes::Bytes;

use crate::disk::Disk;
use crate::error::StorageError;
use crate::format::{FileHeader, IndexEntry, FILE_HEADER_SIZE, INDEX_MAGIC};
use crate::log::{remove_segment_files, sync_failed, PartitionLog};

impl<D: Disk> PartitionLog<'_, D> {
    /// Removes every op after `op`. The log must be idle (`Busy` otherwise). An error after the
    /// cut began poisons the log: reopening it finishes the cut.
    pub async fn truncate_after(&self, op: u64) -> Result<(), StorageError> {
        let _exclusive = self.exclusive()?;
        let Some(op_end) = op.checked_add(1) else {
            return Ok(()); // Nothing is after u64::MAX.
        };
        let (first_op, durable_end) = {
            let state = self.state.borrow();
            (state.segments[0].base_op, state.durable_next().0)
        };
        if op_end < first_op {
            return Err(StorageError::Invalid(format!(
                "op {op} is below the log's first op {first_op}"
            )));
        }
        if op_end >= durable_end {
            return Ok(());
        }
        // Where the kept segment ends: after `op`'s record, known from its entry or, for an op
        // faulty with an unknown meta, from its slot.
        let (keep_index, base_op, offset_first) = {
            let state = self.state.borrow();
            let index = state.segments.partition_point(|s| s.base_op <= op_end) - 1;
            let segment = &state.segments[index];
            (index, segment.base_op, segment.offset_first)
        };
        // The new last op must be whole: recovery sizes a slot whose entry and record are both
        // lost from the entry after it, which the cut removes. `entry` answers `Faulty` for
        // such an op: repair it first.
        let keep_last: Option<IndexEntry> = if op_end > base_op {
            Some(self.entry(op).await?)
        } else {
            None
        };
        let log_end = keep_last.map_or(FILE_HEADER_SIZE, |entry| entry.record_end());
        let result = self
            .cut(keep_index, op_end, log_end, base_op, offset_first)
            .await;
        let mut state = self.state.borrow_mut();
        if let Err(error) = result {
            state.poisoned = true;
            return Err(error);
        }
        let segment = state.segments.last_mut().expect("the kept segment");
        assert_eq!(segment.base_op, base_op);
        segment.op_end = op_end;
        segment.log_size = log_end;
        segment.sparse.retain(|p| p.op < op_end);
        segment.last = keep_last;
        state.written_end = log_end;
        state.tail = None;
        state.faulty.retain(|f, _| *f < op_end);
        (state.next_op, state.next_offset, state.timestamp_min) = state.durable_next();
        Ok(())
    }

    /// Removes every segment and starts the log again, empty, at `first_op` and
    /// `first_offset`. The log must be idle (`Busy` otherwise). An error part way poisons the
    /// log: reopen it (and reset again).
    pub async fn reset_to(&self, first_op: u64, first_offset: u64) -> Result<(), StorageError> {
        assert!(first_op >= 1);
        let _exclusive = self.exclusive()?;
        let result = self.remove_all_then_create(first_op, first_offset).await;
        let mut state = self.state.borrow_mut();
        if let Err(error) = result {
            state.poisoned = true;
            return Err(error);
        }
        assert_eq!(state.segments.len(), 1);
        let segment = &state.segments[0];
        assert!(segment.base_op == first_op && segment.is_empty());
        state.written_end = segment.log_size;
        state.tail = None;
        state.faulty.clear();
        (state.next_op, state.next_offset, state.timestamp_min) = state.durable_next();
        assert_eq!(state.next_op, first_op);
        Ok(())
    }

    /// Removes every segment's files, newest first, then creates the new segment. The
    /// state keeps the old segments (their files closed) until the new one exists, so a log
    /// poisoned part way still has segments to answer with errors.
    async fn remove_all_then_create(
        &self,
        first_op: u64,
        first_offset: u64,
    ) -> Result<(), StorageError> {
        let old: Vec<(u64, crate::disk::FileId, crate::disk::FileId)> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .rev()
                .map(|s| (s.base_op, s.log, s.idx))
                .collect()
        };
        for (base, log, idx) in old {
            self.disk.close(idx).await;
            self.disk.close(log).await;
            remove_segment_files(self.disk, &self.config.dir, base).await?;
        }
        let segment =
            crate::segment::Segment::create(self.disk, &self.config.dir, first_op, first_offset)
                .await?;
        self.state.borrow_mut().segments = vec![segment];
        Ok(())
    }

    async fn cut(
        &self,
        keep_index: usize,
        op_end: u64,
        log_end: u64,
        base_op: u64,
        offset_first: u64,
    ) -> Result<(), StorageError> {
        let (idx, log, idx_end) = {
            let state = self.state.borrow();
            let segment = &state.segments[keep_index];
            (segment.idx, segment.log, segment.index_position(op_end))
        };
        let mut header = FileHeader::new(INDEX_MAGIC, base_op, offset_first);
        header.truncate_to = op_end;
        let marked = Bytes::copy_from_slice(&header.encode());
        self.disk.write_at(idx, 0, marked).await?;
        self.disk.sync(idx).await.map_err(sync_failed)?;
        loop {
            let newest = {
                let state = self.state.borrow();
                (state.segments.len() > keep_index + 1).then(|| {
                    let newest = state.active();
                    (newest.base_op, newest.log, newest.idx)
                })
            };
            let Some((base, newest_log, newest_idx)) = newest else {
                break;
            };
            self.disk.close(newest_idx).await;
            self.disk.close(newest_log).await;
            self.state.borrow_mut().segments.pop();
            remove_segment_files(self.disk, &self.config.dir, base).await?;
        }
        self.disk.truncate(idx, idx_end).await?;
        self.disk.sync(idx).await.map_err(sync_failed)?;
        self.state.borrow_mut().segments[keep_index].idx_file_end = idx_end;
        self.disk.truncate(log, log_end).await?;
        self.disk.sync(log).await.map_err(sync_failed)?;
        let cleared =
            Bytes::copy_from_slice(&FileHeader::new(INDEX_MAGIC, base_op, offset_first).encode());
        self.disk.write_at(idx, 0, cleared).await?;
        self.disk.sync(idx).await.map_err(sync_failed)?;
        Ok(())
    }
}
