//! Protocol-aware recovery of one segment at open: the decision table of TigerBeetle's journal
//! (`reference/vsr.md` §2.4) adapted to segments.
//!
//! The write order is: records, fdatasync, index entries, fdatasync, and only then may the
//! prepare be acknowledged. So a valid index entry proves its record was durable, and a record
//! with no index entry was never acknowledged. Per op:
//!
//! | index entry | record                 | decision                                          |
//! |-------------|------------------------|---------------------------------------------------|
//! | valid       | valid, same meta       | keep                                              |
//! | valid       | damaged or other op    | **faulty**: keep the entry, repair from a peer    |
//! | damaged     | valid, expected op     | **fix**: rewrite the entry from the record        |
//! | damaged     | damaged, a valid entry follows | **faulty**, meta unknown, slot known      |
//! | never written (zeros, or past the end) | valid | fix (the entry write was lost)     |
//! | never written | damaged, at the tail | **torn tail**: cut (it was never acknowledged)    |
//! | damaged     | damaged, at the tail   | unrecoverable locally (two faults in one slot)    |
//!
//! The index file is grown by runs of zeros ahead of its entries (so an index fdatasync has no
//! new file size to commit); those zeros are entries never written, and recovery cuts them.
//!
//! Records after the last index entry are kept while they are valid and continue the log (their
//! entries are rewritten); the first one that is not is a torn tail and is cut. Records of
//! sealed segments are verified when read, not at open (`verify_records == false`).

use bytes::Bytes;

use crate::aligned::{align_up, DIRECT_BLOCK};
use crate::disk::{Disk, DiskError, FileId};
use crate::error::StorageError;
use crate::format::{
    decode_index_entry, decode_record_header, encode_index_entry, record_valid, EntryMeta,
    FileHeader, IndexEntry, FILE_HEADER_SIZE, INDEX_ENTRY_SIZE, INDEX_MAGIC, LOG_MAGIC,
    PAYLOAD_SIZE_MAX, RECORD_HEADER_SIZE,
};
use crate::segment::{idx_name, log_name, Segment};

/// An op this replica holds but cannot read: consensus must repair it from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultyEntry {
    pub op: u64,
    /// Known when the index entry survived.
    pub meta: Option<EntryMeta>,
    pub position: u64,
    pub length: u32,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub faulty: Vec<FaultyEntry>,
    /// Ops whose index entry was rewritten from an intact record.
    pub fixed: Vec<u64>,
    /// Bytes cut from the end of the log file (a torn tail, never acknowledged).
    pub torn_bytes: u64,
}

/// A recovered segment, or what its files say when they cannot be opened as one.
pub enum Opened {
    Segment {
        segment: Box<Segment>,
        report: RecoveryReport,
    },
    /// A crash while the segment was being created: both files are at most a header long.
    Unfinished,
}

/// The record at `position` of `file` if it is intact and ends by `end`: its meta and payload
/// length (the header is read first, to learn the length).
pub(crate) async fn read_intact_record<D: Disk>(
    disk: &D,
    file: FileId,
    position: u64,
    end: u64,
) -> Option<(EntryMeta, u32)> {
    if position + RECORD_HEADER_SIZE > end {
        return None;
    }
    let header = disk
        .read_at(file, position, RECORD_HEADER_SIZE as usize)
        .await
        .ok()?;
    let (meta, length) = decode_record_header(&header).ok()?;
    if position + RECORD_HEADER_SIZE + u64::from(length) > end {
        return None;
    }
    let payload = disk
        .read_bytes_at(file, position + RECORD_HEADER_SIZE, length as usize)
        .await
        .ok()?;
    record_valid(&header, &payload).then_some((meta, length))
}

/// The record at `position` of `segment` if it is intact and is `op`'s.
async fn read_record<D: Disk>(
    disk: &D,
    segment: &Segment,
    position: u64,
    op: u64,
    log_size: u64,
) -> Option<(EntryMeta, u32)> {
    read_intact_record(disk, segment.log, position, log_size)
        .await
        .filter(|(meta, _)| meta.op == op)
}

/// Index entries to rewrite, and the report they go into.
struct Fixes {
    report: RecoveryReport,
    rewrites: Vec<IndexEntry>,
    index_interval_bytes: u64,
}

impl Fixes {
    /// Keeps an intact record whose index entry is missing or damaged; the entry is rewritten.
    fn keep(&mut self, segment: &mut Segment, meta: EntryMeta, position: u64, length: u32) {
        let entry = IndexEntry {
            meta,
            position,
            length,
        };
        self.report.fixed.push(meta.op);
        self.rewrites.push(entry);
        segment.push(entry, self.index_interval_bytes);
    }
}

/// The truncation in progress that the `.idx` header of segment `base_op` records, if any (a
/// damaged header says nothing here; `open_segment` reports it).
pub async fn truncation_mark<D: Disk>(
    disk: &D,
    dir: &str,
    base_op: u64,
) -> Result<Option<u64>, StorageError> {
    let idx = disk.open(&idx_name(dir, base_op), false).await?;
    let bytes = disk.read_at(idx, 0, FILE_HEADER_SIZE as usize).await;
    disk.close(idx).await;
    let mark = bytes
        .ok()
        .and_then(|b| FileHeader::decode(INDEX_MAGIC, &b).ok())
        .map(|h| h.truncate_to)
        .filter(|t| *t != 0);
    Ok(mark)
}

/// Reads `entry_count` index entries; where the disk cannot read the whole range (a latent
/// sector error), reads them one by one and makes the unreadable ones damaged entries.
async fn read_index<D: Disk>(
    disk: &D,
    idx: FileId,
    entry_count: u64,
) -> Result<Vec<u8>, StorageError> {
    let len = (entry_count * INDEX_ENTRY_SIZE) as usize;
    match disk.read_at(idx, FILE_HEADER_SIZE, len).await {
        Ok(raw) => Ok(raw),
        Err(DiskError::ReadFailed { .. }) => {
            let mut raw = Vec::with_capacity(len);
            for k in 0..entry_count {
                let at = FILE_HEADER_SIZE + k * INDEX_ENTRY_SIZE;
                match disk.read_at(idx, at, INDEX_ENTRY_SIZE as usize).await {
                    Ok(entry) => raw.extend_from_slice(&entry),
                    // Not zero: an entry that was written and is now damaged.
                    Err(DiskError::ReadFailed { .. }) => {
                        raw.extend_from_slice(&[0xff; INDEX_ENTRY_SIZE as usize])
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            Ok(raw)
        }
        Err(error) => Err(error.into()),
    }
}

/// Opens and recovers the segment starting at `base_op` in `dir`.
pub async fn open_segment<D: Disk>(
    disk: &D,
    dir: &str,
    base_op: u64,
    verify_records: bool,
    index_interval_bytes: u64,
) -> Result<Opened, StorageError> {
    let idx = disk.open(&idx_name(dir, base_op), false).await?;
    let log = disk.open(&log_name(dir, base_op), false).await?;
    let idx_size = disk.size(idx).await?;
    let log_size = disk.size(log).await?;
    let header = |file, size| async move {
        if size < FILE_HEADER_SIZE {
            return Err(DiskError::ShortRead {
                file,
                offset: 0,
                len: FILE_HEADER_SIZE as usize,
            });
        }
        disk.read_at(file, 0, FILE_HEADER_SIZE as usize).await
    };
    let idx_header = header(idx, idx_size).await.ok();
    let log_header = header(log, log_size).await.ok();
    let idx_decoded = idx_header
        .as_deref()
        .map(|h| FileHeader::decode(INDEX_MAGIC, h));
    let log_decoded = log_header
        .as_deref()
        .map(|h| FileHeader::decode(LOG_MAGIC, h));
    let (offset_first, truncate_to) = match (idx_decoded, log_decoded) {
        (Some(Ok(i)), Some(Ok(l)))
            if i.base_op == base_op
                && l.base_op == base_op
                && i.offset_first == l.offset_first
                && (i.truncate_to == 0 || i.truncate_to >= base_op) =>
        {
            (i.offset_first, i.truncate_to)
        }
        _ if idx_size <= FILE_HEADER_SIZE && log_size <= FILE_HEADER_SIZE => {
            disk.close(idx).await;
            disk.close(log).await;
            return Ok(Opened::Unfinished);
        }
        _ => {
            return Err(StorageError::Unrecoverable(format!(
                "segment {base_op} in {dir:?}: damaged or foreign file headers"
            )))
        }
    };
    // A truncation a crash interrupted: nothing from `truncate_to` on is kept.
    let op_limit = if truncate_to == 0 {
        u64::MAX
    } else {
        truncate_to
    };
    let mut segment = Segment::empty(base_op, offset_first, log, idx);
    let entry_count =
        ((idx_size - FILE_HEADER_SIZE) / INDEX_ENTRY_SIZE).min(op_limit.saturating_sub(base_op));
    let raw = read_index(disk, idx, entry_count).await?;
    let slots: Vec<&[u8]> = raw.chunks_exact(INDEX_ENTRY_SIZE as usize).collect();
    let decoded: Vec<Option<IndexEntry>> = slots
        .iter()
        .zip(base_op..)
        .map(|(bytes, op)| decode_index_entry(bytes).ok().filter(|e| e.meta.op == op))
        .collect();
    let mut fixes = Fixes {
        report: RecoveryReport::default(),
        rewrites: Vec::new(),
        index_interval_bytes,
    };
    let mut position = FILE_HEADER_SIZE;
    let mut kept = 0u64;
    for (k, entry) in decoded.iter().enumerate() {
        let op = base_op + k as u64;
        match entry {
            Some(entry) if entry.position == position => {
                if verify_records {
                    let intact = read_record(disk, &segment, position, op, log_size).await;
                    if intact != Some((entry.meta, entry.length)) {
                        fixes.report.faulty.push(FaultyEntry {
                            op,
                            meta: Some(entry.meta),
                            position,
                            length: entry.length,
                        });
                    }
                }
                segment.push(*entry, index_interval_bytes);
            }
            _ => match read_record(disk, &segment, position, op, log_size).await {
                Some((meta, length)) => fixes.keep(&mut segment, meta, position, length),
                None => {
                    let later_valid = decoded[k + 1..].iter().any(Option::is_some);
                    if !later_valid && slots[k].iter().all(|b| *b == 0) {
                        break; // Never written: the record is a torn tail.
                    }
                    let next = decoded.get(k + 1).copied().flatten();
                    let Some(next) = next.filter(|n| {
                        n.position >= position + RECORD_HEADER_SIZE
                            && n.position - position - RECORD_HEADER_SIZE
                                <= u64::from(PAYLOAD_SIZE_MAX)
                            && n.position <= log_size
                    }) else {
                        return Err(StorageError::Unrecoverable(format!(
                            "segment {base_op} in {dir:?}: op {op} lost both its record and \
                             its index entry"
                        )));
                    };
                    fixes.report.faulty.push(FaultyEntry {
                        op,
                        meta: None,
                        position,
                        length: (next.position - position - RECORD_HEADER_SIZE) as u32,
                    });
                    segment.op_end = op + 1;
                    segment.log_size = next.position;
                }
            },
        }
        position = segment.log_size;
        kept = k as u64 + 1;
    }
    assert_eq!(segment.op_end, base_op + kept);
    // Records past the last index entry: kept while intact and continuing the log.
    while segment.op_end < op_limit {
        let op = segment.op_end;
        let Some((meta, length)) = read_record(disk, &segment, position, op, log_size).await else {
            break;
        };
        if meta.offset_first != segment.offset_end()
            || segment
                .last
                .is_some_and(|l| meta.timestamp < l.meta.timestamp)
        {
            break;
        }
        fixes.keep(&mut segment, meta, position, length);
        position = segment.log_size;
    }
    let idx_end = segment.index_position(segment.op_end);
    if !fixes.rewrites.is_empty() || idx_size != idx_end {
        for entry in &fixes.rewrites {
            let bytes = encode_index_entry(entry);
            let at = segment.index_position(entry.meta.op);
            disk.write_at(idx, at, Bytes::copy_from_slice(&bytes))
                .await?;
        }
        disk.truncate(idx, idx_end).await?;
        disk.sync(idx)
            .await
            .map_err(|e| StorageError::SyncFailed(e.to_string()))?;
    }
    segment.idx_file_end = idx_end;
    if log_size > segment.log_size {
        if !is_zero_padding(disk, log, segment.log_size, log_size).await {
            fixes.report.torn_bytes = log_size - segment.log_size;
        }
        disk.truncate(log, segment.log_size).await?;
        disk.sync(log)
            .await
            .map_err(|e| StorageError::SyncFailed(e.to_string()))?;
    }
    if truncate_to != 0 {
        // The cut is durable: the truncation is finished.
        let header = FileHeader::new(INDEX_MAGIC, base_op, offset_first).encode();
        disk.write_at(idx, 0, Bytes::copy_from_slice(&header))
            .await?;
        disk.sync(idx)
            .await
            .map_err(|e| StorageError::SyncFailed(e.to_string()))?;
    }
    assert!(
        segment.is_empty()
            || segment
                .last
                .is_some_and(|l| l.meta.op + 1 == segment.op_end)
    );
    Ok(Opened::Segment {
        segment: Box::new(segment),
        report: fixes.report,
    })
}

/// Whether `[end, file_size)` of `log` is zeros a writer of this log leaves past its last
/// record, not a torn record: the padding of an aligned group write (under one direct-I/O
/// block) or zeros written ahead (`prepare_ahead`, at most its window past the block).
pub async fn is_zero_padding<D: Disk>(disk: &D, log: FileId, end: u64, file_size: u64) -> bool {
    assert!(file_size > end);
    if file_size > align_up(end, DIRECT_BLOCK) + crate::prepare_ahead::AHEAD_MAX {
        return false;
    }
    let mut at = end;
    // Bounded: the span is at most a block plus the window, read a chunk at a time.
    while at < file_size {
        let length = (file_size - at).min(crate::prepare_ahead::CHUNK_MAX);
        match disk.read_at(log, at, length as usize).await {
            Ok(bytes) if bytes.iter().all(|b| *b == 0) => at += length,
            _ => return false,
        }
    }
    true
}
