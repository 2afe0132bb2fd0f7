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
//!   log for itself (`flushing`) while its one chunk is in flight, so a group write never
//!   overlaps zeros being written. An append (or a truncation or repair, which get `Busy`)
//!   that comes meanwhile waits at most that one chunk; the zeros' writer then flushes what
//!   was queued (as `commit_queued` would have).
//! * It stays a bounded window ahead of the tail: four times the last record, at least
//!   `AHEAD_MIN` and at most `AHEAD_MAX`, never past the segment's size, and not at all when
//!   the next record of that size would not fit the segment (it would roll). One call writes
//!   one chunk of at most `CHUNK_MAX`: a lockstep producer calls it once per record, which
//!   keeps the window filled; the log is never held longer than one chunk's write.
//! * The file's size is the truth of how far zeros reach (no state to go stale across
//!   truncations, repairs, failures or a new segment). The zeros are never synced here: the
//!   next log fdatasync carries their size, once per chunk instead of once per group.
//! * Recovery cuts zeros past the last record like any tail (`recovery::is_zero_padding`
//!   tells them from a torn record), and a crash can only leave zeros or records there. A
//!   write error (the disk full) ends the attempt and damages nothing: appends go on
//!   growing the file as before.
//! * A call must run to its end: dropped while its write is in flight, that write could still
//!   land after later records, so the drop poisons the log (as a dropped flush does).

use crate::aligned::{align_down, align_up};
use crate::disk::Disk;
use crate::format::RECORD_HEADER_SIZE;
use crate::log::PartitionLog;

/// The window ahead of the tail, at least (for small records) and at most (per log).
pub const AHEAD_MIN: u64 = 64 << 10;
pub const AHEAD_MAX: u64 = 4 << 20;
/// Zeros written by one write, at most: what an append queued meanwhile may wait for.
pub const CHUNK_MAX: u64 = 1 << 20;
/// The window in records: the next few appends find their blocks written.
const AHEAD_RECORDS: u64 = 4;

/// Clears `flushing` if the attempt ends without handing it to a flush; poisons the log if it
/// was dropped with a write in flight.
struct Holding<'a, 'd, D: Disk> {
    log: &'a PartitionLog<'d, D>,
    writing: bool,
    handed_over: bool,
}

impl<D: Disk> Drop for Holding<'_, '_, D> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        let wakers = {
            let mut state = self.log.state.borrow_mut();
            state.flushing = false;
            if self.writing {
                // The write may still complete, after records written at its offsets.
                state.poisoned = true;
            }
            [state.flush_waker.take(), state.committer_waker.take()]
        };
        // A committer that found the log taken waits to be woken.
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl<'d, D: Disk> PartitionLog<'d, D> {
    /// Writes one chunk of zeros past the active log's last record, towards the window (see
    /// the module comment), if the log is idle. Returns the bytes of zeros written. Appends
    /// queued meanwhile are flushed before it returns. It never fails (zeros are only a
    /// speed-up) and must not be cancelled.
    pub async fn prepare_ahead(&self) -> u64 {
        let (file, alignment, window_end) = {
            let mut state = self.state.borrow_mut();
            if state.poisoned || state.flushing || state.exclusive || !state.pending.is_empty() {
                return 0;
            }
            let active = state.active();
            let last_length = active.last.map_or(0, |last| u64::from(last.length));
            let written_end = state.written_end;
            if written_end + RECORD_HEADER_SIZE + last_length > self.config.segment_size {
                return 0; // The next record of that size rolls to a new segment.
            }
            let alignment = self.disk.write_alignment().max(1);
            let ahead = (AHEAD_RECORDS * last_length).clamp(AHEAD_MIN, AHEAD_MAX);
            let window_end = align_down(
                (align_up(written_end, alignment) + ahead).min(self.config.segment_size),
                alignment,
            );
            let file = active.log;
            state.flushing = true;
            (file, alignment, window_end)
        };
        let mut holding = Holding {
            log: self,
            writing: false,
            handed_over: false,
        };
        let mut written = 0u64;
        // Zeros are only a speed-up: an error ends the attempt, and appends go on growing the
        // file themselves (a failed write wrote zeros or nothing).
        if let Ok(size) = self.disk.size(file).await {
            let start = align_up(size.max(self.state.borrow().written_end), alignment);
            if start < window_end && self.state.borrow().pending.is_empty() {
                let length = (window_end - start).min(CHUNK_MAX);
                assert!(length > 0 && length.is_multiple_of(alignment));
                let mut buffer = self.buffers.take(length as usize);
                buffer.as_mut_slice().fill(0);
                holding.writing = true;
                let result = self.disk.write_at(file, start, buffer.freeze()).await;
                holding.writing = false;
                if result.is_ok() {
                    written = length;
                }
            }
        }
        if !self.state.borrow().pending.is_empty() {
            // Appends arrived while the log was held: flush them, as `commit_queued` would.
            holding.handed_over = true;
            drop(holding);
            self.flush().await;
        }
        written
    }
}
