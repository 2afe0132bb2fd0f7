//! Zeros written ahead of the active log's tail while the log is idle, so the next appends
//! overwrite blocks the file already has instead of growing it.
//!
//! On ext4 (and on this machine's virtual disk) a direct write onto blocks a file never had
//! costs about twice one onto written blocks: the filesystem allocates them and the next
//! fdatasync commits the new size and extents (`fio`, 1 MiB, one in flight: 0.54–0.80 ms
//! write and 0.18–0.27 ms fdatasync against 0.32–0.40 and 0.06–0.10 ms; `docs/storage.md`).
//! Writing zeros costs the device as much as writing data, so it only pays when the device
//! would otherwise sit idle: a lockstep producer leaves it idle for most of each round trip,
//! a saturated log never is. Hence the rules:
//!
//! * `prepare_ahead` runs only when nothing is queued, flushing or exclusive, and takes the
//!   log for itself (`flushing`) while a chunk is in flight, so a group write never overlaps
//!   zeros being written. An append queued meanwhile waits at most one chunk; the zeros'
//!   writer then flushes it (as `commit_queued` would have).
//! * It stays a bounded window ahead of the tail: four times the last record, at least
//!   `AHEAD_MIN` and at most `AHEAD_MAX`, never past the segment's size, in chunks of at most
//!   `CHUNK_MAX`, and stops as soon as an append is queued.
//! * The file's size is the truth of how far zeros reach (no state to go stale across
//!   truncations, repairs, failures or a new segment). The zeros are never synced here: the
//!   next log fdatasync carries their size, once per chunk instead of once per group.
//! * Recovery cuts zeros past the last record like any tail (`recovery::is_zero_padding`
//!   tells them from a torn record), and a crash can only leave zeros or records there. A
//!   write error (the disk full) ends the attempt and damages nothing: appends go on
//!   growing the file as before.

use crate::aligned::{align_down, align_up};
use crate::disk::Disk;
use crate::log::PartitionLog;

/// The window ahead of the tail, at least (for small records) and at most (per log).
pub const AHEAD_MIN: u64 = 64 << 10;
pub const AHEAD_MAX: u64 = 4 << 20;
/// Zeros written by one write, at most: what an append queued meanwhile may wait for.
pub const CHUNK_MAX: u64 = 1 << 20;
/// The window in records: the next few appends find their blocks written.
const AHEAD_RECORDS: u64 = 4;

/// Clears `flushing` if the attempt ends (or is dropped) without handing it to a flush.
struct Holding<'a, 'd, D: Disk> {
    log: &'a PartitionLog<'d, D>,
    handed_over: bool,
}

impl<D: Disk> Drop for Holding<'_, '_, D> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.log.state.borrow_mut().flushing = false;
        }
    }
}

impl<'d, D: Disk> PartitionLog<'d, D> {
    /// Writes zeros past the active log's last record, up to the window (see the module
    /// comment), while the log stays idle. Returns the bytes of zeros written. Appends queued
    /// meanwhile are flushed before it returns. It never fails: zeros are only a speed-up.
    pub async fn prepare_ahead(&self) -> u64 {
        let (file, alignment, window_end) = {
            let mut state = self.state.borrow_mut();
            if state.poisoned || state.flushing || state.exclusive || !state.pending.is_empty() {
                return 0;
            }
            let active = state.active();
            let last_length = active.last.map_or(0, |last| u64::from(last.length));
            let alignment = self.disk.write_alignment().max(1);
            let ahead = (AHEAD_RECORDS * last_length).clamp(AHEAD_MIN, AHEAD_MAX);
            let window_end = align_down(
                (align_up(state.written_end, alignment) + ahead).min(self.config.segment_size),
                alignment,
            );
            let file = active.log;
            state.flushing = true;
            (file, alignment, window_end)
        };
        let mut holding = Holding {
            log: self,
            handed_over: false,
        };
        let mut written = 0u64;
        // Bounded: each turn writes a chunk of at most CHUNK_MAX towards a window of at most
        // AHEAD_MAX.
        for _ in 0..AHEAD_MAX.div_ceil(CHUNK_MAX) + 1 {
            if !self.state.borrow().pending.is_empty() {
                break;
            }
            let size = match self.disk.size(file).await {
                Ok(size) => size,
                // Zeros are only a speed-up: an error ends the attempt, and appends go on
                // growing the file themselves (a failed write wrote zeros or nothing).
                Err(_) => break,
            };
            let start = align_up(size.max(self.state.borrow().written_end), alignment);
            if start >= window_end {
                break;
            }
            let length = (window_end - start).min(CHUNK_MAX);
            assert!(length > 0 && length.is_multiple_of(alignment));
            let mut buffer = self.buffers.take(length as usize);
            buffer.as_mut_slice().fill(0);
            if self
                .disk
                .write_at(file, start, buffer.freeze())
                .await
                .is_err()
            {
                break;
            }
            written += length;
        }
        let queued = !self.state.borrow().pending.is_empty();
        if queued {
            // Appends arrived while the log was held: flush them, as `commit_queued` would.
            holding.handed_over = true;
            drop(holding);
            self.flush().await;
        }
        written
    }
}
