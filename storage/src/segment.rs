//! One segment of a partition log: a `.log` file of records and its `.idx` file of redundant
//! index entries, named by the segment's first op, plus the sparse in-memory index that finds
//! an op, an offset or a timestamp in O(log n) and one bounded read.

use bytes::Bytes;

use crate::disk::{join, Disk, DiskError, FileId};
use crate::error::StorageError;
use crate::format::{
    decode_index_entry, FileHeader, IndexEntry, FILE_HEADER_SIZE, INDEX_ENTRY_SIZE, INDEX_MAGIC,
    LOG_MAGIC,
};
use crate::log::sync_failed;

/// One sparse index point: the first op at or after each `index_interval_bytes` of log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparsePoint {
    pub op: u64,
    pub offset_first: u64,
    pub timestamp: u64,
    pub position: u64,
}

#[derive(Debug)]
pub struct Segment {
    pub base_op: u64,
    /// The offset the segment's first record takes (from the file header).
    pub offset_first: u64,
    pub log: FileId,
    pub idx: FileId,
    /// Durable contents: ops `[base_op, op_end)`, log bytes `[0, log_size)`.
    pub op_end: u64,
    pub log_size: u64,
    pub sparse: Vec<SparsePoint>,
    /// The last durable entry, if any.
    pub last: Option<IndexEntry>,
    /// How long this process last made the index file: entries, then zeros written ahead
    /// (`INDEX_ZEROS_AHEAD`). Index writes below it do not grow the file, so their fdatasync
    /// has no file size to commit. Recovery reads the zeros as entries never written.
    pub idx_file_end: u64,
}

/// Bytes of zeros the index file is grown by at once, ahead of its entries.
pub const INDEX_ZEROS_AHEAD: u64 = 64 * 1024;

pub fn log_name(dir: &str, base_op: u64) -> String {
    join(dir, &format!("{base_op:020}.log"))
}

pub fn idx_name(dir: &str, base_op: u64) -> String {
    join(dir, &format!("{base_op:020}.idx"))
}

/// Parses "00000000000000000042.log" into (42, "log").
pub fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if extension != "log" && extension != "idx" {
        return None;
    }
    // Far beyond any real op: keeps `base + k` arithmetic on names from overflowing.
    let base: u64 = stem.parse().ok()?;
    (base <= u64::MAX / 2).then_some((base, extension))
}

impl Segment {
    /// Creates both files with their headers and makes them and their names durable. On an
    /// error it removes what it created; a failed sync, or a failed clean-up, is fatal
    /// (`SyncFailed` / `Unrecoverable`), since a stray segment would confuse recovery.
    pub async fn create<D: Disk>(
        disk: &D,
        dir: &str,
        base_op: u64,
        offset_first: u64,
    ) -> Result<Segment, StorageError> {
        let mut opened = Vec::new();
        let result = async {
            for (name, magic) in [
                (idx_name(dir, base_op), INDEX_MAGIC),
                (log_name(dir, base_op), LOG_MAGIC),
            ] {
                let file = disk.open(&name, true).await?;
                opened.push(file);
                let header = FileHeader::new(magic, base_op, offset_first).encode();
                disk.write_at(file, 0, Bytes::copy_from_slice(&header))
                    .await?;
                disk.truncate(file, FILE_HEADER_SIZE).await?;
                disk.sync(file).await.map_err(sync_failed)?;
            }
            disk.sync_dir(dir).await.map_err(sync_failed)?;
            Ok::<(), StorageError>(())
        }
        .await;
        if let Err(error) = result {
            for file in opened {
                disk.close(file).await;
            }
            for name in [idx_name(dir, base_op), log_name(dir, base_op)] {
                match disk.remove(&name).await {
                    Ok(()) | Err(DiskError::NotFound(_)) => {}
                    Err(cleanup) => {
                        return Err(StorageError::Unrecoverable(format!(
                            "creating segment {base_op} failed ({error}) and so did removing \
                             {name}: {cleanup}"
                        )))
                    }
                }
            }
            if let Err(cleanup) = disk.sync_dir(dir).await {
                return Err(sync_failed(cleanup));
            }
            return Err(error);
        }
        let (idx, log) = (opened[0], opened[1]);
        Ok(Segment::empty(base_op, offset_first, log, idx))
    }

    /// A segment with no records yet, over open files.
    pub fn empty(base_op: u64, offset_first: u64, log: FileId, idx: FileId) -> Segment {
        Segment {
            base_op,
            offset_first,
            log,
            idx,
            op_end: base_op,
            log_size: FILE_HEADER_SIZE,
            sparse: Vec::new(),
            last: None,
            idx_file_end: FILE_HEADER_SIZE,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.op_end == self.base_op
    }

    pub fn index_position(&self, op: u64) -> u64 {
        assert!(op >= self.base_op);
        FILE_HEADER_SIZE + (op - self.base_op) * INDEX_ENTRY_SIZE
    }

    /// The offset the next record of this segment takes.
    pub fn offset_end(&self) -> u64 {
        self.last.map_or(self.offset_first, |e| {
            e.meta.offset_first + u64::from(e.meta.message_count)
        })
    }

    /// Records a durable entry: the segment's contents now end with it.
    pub fn push(&mut self, entry: IndexEntry, index_interval_bytes: u64) {
        assert_eq!(entry.meta.op, self.op_end, "ops are dense");
        assert_eq!(entry.position, self.log_size, "records are contiguous");
        let due = self
            .sparse
            .last()
            .is_none_or(|p| entry.position >= p.position + index_interval_bytes);
        if due {
            self.sparse.push(SparsePoint {
                op: entry.meta.op,
                offset_first: entry.meta.offset_first,
                timestamp: entry.meta.timestamp,
                position: entry.position,
            });
        }
        self.op_end = entry.meta.op + 1;
        self.log_size = entry.record_end();
        self.last = Some(entry);
    }

    /// The ops `[from, to)` between two sparse points around `key`: the range one read of the
    /// index covers. `key` picks the last point whose value is at or below the target.
    pub fn sparse_range(&self, at_or_below: impl Fn(&SparsePoint) -> bool) -> (u64, u64) {
        let after = self.sparse.partition_point(at_or_below);
        let from = if after == 0 {
            self.base_op
        } else {
            self.sparse[after - 1].op
        };
        let to = self.sparse.get(after).map_or(self.op_end, |p| p.op);
        (from, to)
    }

    /// Reads the index entries of ops `[from, to)`; damaged ones come back as `Err(op)`.
    pub async fn read_entries<D: Disk>(
        &self,
        disk: &D,
        from: u64,
        to: u64,
    ) -> Result<Vec<Result<IndexEntry, u64>>, DiskError> {
        assert!(self.base_op <= from && from <= to && to <= self.op_end);
        read_entries(disk, self.idx, self.base_op, from, to).await
    }
}

/// Reads the index entries of ops `[from, to)` of the index file `idx` whose first op is
/// `base_op`; damaged ones come back as `Err(op)`.
pub async fn read_entries<D: Disk>(
    disk: &D,
    idx: FileId,
    base_op: u64,
    from: u64,
    to: u64,
) -> Result<Vec<Result<IndexEntry, u64>>, DiskError> {
    assert!(base_op <= from && from <= to);
    if from == to {
        return Ok(Vec::new());
    }
    let at = FILE_HEADER_SIZE + (from - base_op) * INDEX_ENTRY_SIZE;
    let bytes = disk
        .read_at(idx, at, ((to - from) * INDEX_ENTRY_SIZE) as usize)
        .await?;
    let entries = bytes
        .chunks_exact(INDEX_ENTRY_SIZE as usize)
        .zip(from..to)
        .map(|(chunk, op)| match decode_index_entry(chunk) {
            Ok(entry) if entry.meta.op == op => Ok(entry),
            _ => Err(op),
        })
        .collect();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let name = log_name("", 42);
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_name(&name), Some((42, "log")));
        assert_eq!(parse_name("00000000000000000042.idx"), Some((42, "idx")));
        assert_eq!(parse_name("42.log"), None);
        assert_eq!(parse_name("0000000000000000004x.log"), None);
        assert_eq!(parse_name("00000000000000000042.tmp"), None);
    }
}
