//! `WalRing`: the metadata group's write-ahead log, a fixed ring of prepare slots plus a ring of
//! redundant headers in one file (`reference/vsr.md` §2.3), with its recovery table.
//!
//! File layout (version 1): `[file header 4 KiB][header zone: slot_count × 64 B, padded to
//! 4 KiB][prepare zone: slot_count × slot_size]`. Op `op` lives in slot `op % slot_count`. A write
//! puts the record (64-byte record header of `format` + payload) in its prepare slot, syncs,
//! then writes its 64-byte index entry (`position` = the slot number) in the header zone and
//! syncs; only then may it be acknowledged. A slot may be overwritten only once the op it holds
//! is covered by a durable snapshot: the caller states the checkpoint op with each write.
//!
//! Recovery, per slot: header and prepare intact and equal → `Intact`; header intact, prepare
//! damaged or another op → `Faulty` (repair from a peer, never nack); header damaged or zero,
//! prepare intact for an op that belongs in the slot → `Fixed` (header rewritten); header zero
//! and prepare damaged or empty → `Empty`; header damaged (not zero) and prepare damaged →
//! `Faulty` with the op unknown; header intact for op X and an intact prepare of a later op of
//! the slot → `Fixed` with the later op (an overwrite whose header write was lost). A slot
//! whose surviving op the checkpoint covers is `Empty`: it may be mid-way through an overwrite.

use bytes::Bytes;

use crate::disk::{parent, Disk, FileId};
use crate::error::StorageError;
use crate::format::{
    decode_index_entry, encode_index_entry, encode_record, verified_payload, EntryMeta, FileHeader,
    IndexEntry, INDEX_ENTRY_SIZE, RECORD_HEADER_SIZE,
};
use crate::recovery::read_intact_record;

const WAL_MAGIC: [u8; 8] = *b"GALGOWAL";
const ZONE_ALIGN: u64 = 4096;
/// At most this many slots (1024 in production, as TigerBeetle's journal).
pub const WAL_SLOTS_MAX: u64 = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Empty,
    Intact(EntryMeta),
    /// The header was rewritten from the intact prepare.
    Fixed(EntryMeta),
    /// Held but unreadable; `None` when even the op is unknown.
    Faulty(Option<EntryMeta>),
}

pub struct WalRing<'d, D: Disk> {
    disk: &'d D,
    file: FileId,
    slot_count: u64,
    slot_size: u64,
}

impl<'d, D: Disk> WalRing<'d, D> {
    fn header_zone(&self) -> u64 {
        ZONE_ALIGN
    }

    fn prepare_zone(&self) -> u64 {
        ZONE_ALIGN + (self.slot_count * INDEX_ENTRY_SIZE).div_ceil(ZONE_ALIGN) * ZONE_ALIGN
    }

    /// The largest payload a slot holds.
    pub fn payload_max(&self) -> u64 {
        self.slot_size - RECORD_HEADER_SIZE
    }

    pub fn slot_count(&self) -> u64 {
        self.slot_count
    }

    /// Opens the ring in file `name`, creating it with `slot_count` slots of `slot_size` bytes,
    /// and recovers every slot.
    pub async fn open(
        disk: &'d D,
        name: &str,
        slot_count: u64,
        slot_size: u64,
        checkpoint_op: u64,
    ) -> Result<(WalRing<'d, D>, Vec<SlotState>), StorageError> {
        assert!(slot_count > 0 && slot_count <= WAL_SLOTS_MAX);
        assert!(slot_size > RECORD_HEADER_SIZE && slot_size.is_multiple_of(ZONE_ALIGN));
        let file = disk.open(name, true).await?;
        let ring = WalRing {
            disk,
            file,
            slot_count,
            slot_size,
        };
        let size = disk.size(file).await?;
        let total = ring.prepare_zone() + slot_count * slot_size;
        // The slot geometry is kept in the header's offset field: [slot_count u32][slot KiB u32].
        let geometry = (slot_count << 32) | (slot_size / 1024);
        if size == 0 {
            let header = FileHeader::new(WAL_MAGIC, 0, geometry).encode();
            disk.write_at(file, 0, Bytes::copy_from_slice(&header))
                .await?;
            disk.truncate(file, total).await?;
            disk.sync(file)
                .await
                .map_err(|e| StorageError::SyncFailed(e.to_string()))?;
            disk.sync_dir(parent(name)).await?;
            let slots = vec![SlotState::Empty; slot_count as usize];
            return Ok((ring, slots));
        }
        let header = disk.read_at(file, 0, 64).await?;
        match FileHeader::decode(WAL_MAGIC, &header).map(|h| h.offset_first) {
            Ok(found) if found == geometry && size == total => {}
            Ok(found) => {
                return Err(StorageError::Invalid(format!(
                    "WAL {name} has geometry {found:#x} ({size} bytes), asked for {geometry:#x}"
                )))
            }
            Err(error) => {
                return Err(StorageError::Unrecoverable(format!(
                    "WAL {name} header: {error:?}"
                )))
            }
        }
        let mut slots = Vec::with_capacity(slot_count as usize);
        let headers = disk
            .read_at(
                file,
                ring.header_zone(),
                (slot_count * INDEX_ENTRY_SIZE) as usize,
            )
            .await?;
        for slot in 0..slot_count {
            let raw = &headers[(slot * INDEX_ENTRY_SIZE) as usize..][..INDEX_ENTRY_SIZE as usize];
            let entry = decode_index_entry(raw)
                .ok()
                .filter(|e| e.position == slot && e.meta.op % slot_count == slot);
            let prepare = ring.read_slot(slot).await;
            // An op the checkpoint covers is not needed any more: its slot may be mid-way
            // through being overwritten.
            let needed = |meta: &EntryMeta| meta.op > checkpoint_op;
            let state = match (entry, prepare) {
                (Some(entry), Some((meta, _))) if meta == entry.meta => SlotState::Intact(meta),
                // An overwrite whose prepare landed and whose header did not: never acked, and
                // intact, so it is kept like any prepare whose header write was lost.
                (Some(entry), Some((meta, length))) if meta.op > entry.meta.op => {
                    ring.write_header(slot, meta, length).await?;
                    SlotState::Fixed(meta)
                }
                (Some(entry), _) if !needed(&entry.meta) => SlotState::Empty,
                (Some(entry), _) => SlotState::Faulty(Some(entry.meta)),
                (None, Some((meta, length))) if needed(&meta) => {
                    ring.write_header(slot, meta, length).await?;
                    SlotState::Fixed(meta)
                }
                (None, Some(_)) => SlotState::Empty,
                (None, None) if raw.iter().all(|b| *b == 0) => SlotState::Empty,
                (None, None) => SlotState::Faulty(None),
            };
            slots.push(state);
        }
        Ok((ring, slots))
    }

    /// The meta and payload length of the intact record in `slot`, if it belongs there.
    async fn read_slot(&self, slot: u64) -> Option<(EntryMeta, u32)> {
        let at = self.prepare_zone() + slot * self.slot_size;
        read_intact_record(self.disk, self.file, at, at + self.slot_size)
            .await
            .filter(|(meta, _)| meta.op % self.slot_count == slot)
    }

    async fn write_header(
        &self,
        slot: u64,
        meta: EntryMeta,
        length: u32,
    ) -> Result<(), StorageError> {
        let entry = IndexEntry {
            meta,
            position: slot,
            length,
        };
        let at = self.header_zone() + slot * INDEX_ENTRY_SIZE;
        let bytes = Bytes::copy_from_slice(&encode_index_entry(&entry));
        self.disk.write_at(self.file, at, bytes).await?;
        self.disk
            .sync(self.file)
            .await
            .map_err(|e| StorageError::SyncFailed(e.to_string()))
    }

    /// Writes op `meta.op` durably (prepare, then its redundant header). `checkpoint_op`: the
    /// newest op a durable snapshot covers; the slot's previous op must be at or below it.
    pub async fn write(
        &self,
        meta: EntryMeta,
        payload: &[u8],
        checkpoint_op: u64,
    ) -> Result<(), StorageError> {
        if payload.len() as u64 > self.payload_max() {
            return Err(StorageError::Invalid(format!(
                "metadata prepare of {} bytes is over the slot limit of {}",
                payload.len(),
                self.payload_max()
            )));
        }
        if meta.op > checkpoint_op.saturating_add(self.slot_count) {
            return Err(StorageError::Invalid(format!(
                "op {} would overwrite op {} that no snapshot covers (checkpoint {checkpoint_op})",
                meta.op,
                meta.op - self.slot_count
            )));
        }
        let slot = meta.op % self.slot_count;
        let at = self.prepare_zone() + slot * self.slot_size;
        self.disk
            .write_at(self.file, at, encode_record(&meta, payload))
            .await?;
        self.disk
            .sync(self.file)
            .await
            .map_err(|e| StorageError::SyncFailed(e.to_string()))?;
        self.write_header(slot, meta, payload.len() as u32).await
    }

    /// Reads op `op` back, verified against its header.
    pub async fn read(&self, op: u64) -> Result<Vec<u8>, StorageError> {
        let slot = op % self.slot_count;
        let at = self.header_zone() + slot * INDEX_ENTRY_SIZE;
        let raw = self
            .disk
            .read_at(self.file, at, INDEX_ENTRY_SIZE as usize)
            .await?;
        let entry = decode_index_entry(&raw).map_err(|_| StorageError::Faulty(op))?;
        if entry.meta.op != op {
            return Err(StorageError::NotFound(op));
        }
        let at = self.prepare_zone() + slot * self.slot_size;
        let length = RECORD_HEADER_SIZE as usize + entry.length as usize;
        let bytes = self
            .disk
            .read_at(self.file, at, length)
            .await
            .map_err(|_| StorageError::Faulty(op))?;
        let payload = verified_payload(&bytes, &entry.meta).ok_or(StorageError::Faulty(op))?;
        Ok(payload.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_disk::block_on;
    use crate::memory_disk::MemoryDisk;

    fn meta(op: u64) -> EntryMeta {
        EntryMeta {
            op,
            checksum: u128::from(op) << 64 | 7,
            offset_first: 0,
            message_count: 0,
            timestamp: 0,
        }
    }

    const SLOTS: u64 = 8;
    const SLOT_SIZE: u64 = 4096;

    #[test]
    fn writes_wrap_only_over_checkpointed_ops_and_survive_reopen() {
        let disk = MemoryDisk::new(1);
        block_on(async {
            let (ring, slots) = WalRing::open(&disk, "wal", SLOTS, SLOT_SIZE, 0)
                .await
                .unwrap();
            disk.sync_dir("").await.unwrap();
            assert!(slots.iter().all(|s| *s == SlotState::Empty));
            for op in 1..=SLOTS {
                ring.write(meta(op), &[op as u8; 100], 0).await.unwrap();
            }
            assert!(matches!(
                ring.write(meta(SLOTS + 1), b"x", 0).await,
                Err(StorageError::Invalid(_))
            ));
            ring.write(meta(SLOTS + 1), b"wrapped", 1).await.unwrap();
            assert_eq!(ring.read(SLOTS + 1).await.unwrap(), b"wrapped");
            assert_eq!(ring.read(1).await, Err(StorageError::NotFound(1)));
            disk.crash();
            let (ring, slots) = WalRing::open(&disk, "wal", SLOTS, SLOT_SIZE, 0)
                .await
                .unwrap();
            assert_eq!(slots[1], SlotState::Intact(meta(SLOTS + 1)));
            assert_eq!(slots[2], SlotState::Intact(meta(2)));
            assert_eq!(ring.read(5).await.unwrap(), vec![5u8; 100]);
            assert!(matches!(
                WalRing::open(&disk, "wal", SLOTS * 2, SLOT_SIZE, 0).await,
                Err(StorageError::Invalid(_))
            ));
        });
    }

    #[test]
    fn recovery_tells_faulty_from_fixable_from_empty() {
        let disk = MemoryDisk::new(2);
        block_on(async {
            let (ring, _) = WalRing::open(&disk, "wal", SLOTS, SLOT_SIZE, 0)
                .await
                .unwrap();
            for op in 1..=4 {
                ring.write(meta(op), &[op as u8; 300], 0).await.unwrap();
            }
            let prepare_zone = ring.prepare_zone();
            // Op 1: prepare damaged, header intact. Op 2: header damaged, prepare intact.
            // Op 3: both damaged.
            disk.corrupt("wal", prepare_zone + SLOT_SIZE + 100);
            disk.corrupt("wal", ZONE_ALIGN + 2 * INDEX_ENTRY_SIZE + 5);
            disk.corrupt("wal", prepare_zone + 3 * SLOT_SIZE + 100);
            disk.corrupt("wal", ZONE_ALIGN + 3 * INDEX_ENTRY_SIZE + 5);
            let (ring, slots) = WalRing::open(&disk, "wal", SLOTS, SLOT_SIZE, 0)
                .await
                .unwrap();
            assert_eq!(slots[1], SlotState::Faulty(Some(meta(1))));
            assert_eq!(slots[2], SlotState::Fixed(meta(2)));
            assert_eq!(slots[3], SlotState::Faulty(None));
            assert_eq!(slots[4], SlotState::Intact(meta(4)));
            assert_eq!(slots[5], SlotState::Empty);
            assert_eq!(ring.read(1).await, Err(StorageError::Faulty(1)));
            assert_eq!(ring.read(2).await.unwrap(), vec![2u8; 300]);
        });
    }

    #[test]
    fn an_interrupted_overwrite_keeps_the_newer_prepare_or_frees_the_slot() {
        let disk = MemoryDisk::new(3);
        block_on(async {
            let (ring, _) = WalRing::open(&disk, "wal", SLOTS, SLOT_SIZE, 0)
                .await
                .unwrap();
            for op in 1..=SLOTS {
                ring.write(meta(op), &[op as u8; 50], 0).await.unwrap();
            }
            let prepare_zone = ring.prepare_zone();
            // Op 1 + SLOTS overwrote slot 1's prepare; its header write was lost.
            let newer = meta(1 + SLOTS);
            let record = encode_record(&newer, b"newer");
            disk.write_at(ring.file, prepare_zone + SLOT_SIZE, record)
                .await
                .unwrap();
            // Op 2 + SLOTS was being written over slot 2 when it tore.
            disk.corrupt("wal", prepare_zone + 2 * SLOT_SIZE + 70);
            let (ring, slots) = WalRing::open(&disk, "wal", SLOTS, SLOT_SIZE, 2)
                .await
                .unwrap();
            assert_eq!(slots[1], SlotState::Fixed(newer));
            assert_eq!(
                slots[2],
                SlotState::Empty,
                "op 2 is covered by the checkpoint"
            );
            assert_eq!(ring.read(1 + SLOTS).await.unwrap(), b"newer");
            assert!(ring.write(meta(u64::MAX), b"x", u64::MAX - 1).await.is_ok());
        });
    }
}
