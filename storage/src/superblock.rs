//! The superblock: what a replica cannot rebuild from its peers (view, log view, membership,
//! checkpoint), kept as `SUPERBLOCK_COPIES` copies in one file.
//!
//! An update writes the copies one at a time with an fdatasync after each, so a crash tears at
//! most one copy and leaves either the new or the previous state on a read quorum. Open picks the
//! highest sequence that a quorum of intact, identical copies agrees on, not the highest copy:
//! a lone copy (one torn write that happened to verify, or a misdirected write) cannot win.
//!
//! Copy layout (version 2, 8 KiB each, room for a VSR view state with its view headers): `[0..8 magic][8..12 version u32][12..16 payload length
//! u32][16..24 sequence u64][24..56 zero][56..64 checksum of 0..56 and the payload][payload]`.

use bytes::{Bytes, BytesMut};

use crate::checksum::checksum64;
use crate::disk::{parent, Disk, FileId};
use crate::error::StorageError;

pub const SUPERBLOCK_COPIES: u64 = 4;
/// Intact identical copies needed to trust a state.
pub const SUPERBLOCK_QUORUM: usize = 2;
pub const SUPERBLOCK_COPY_SIZE: u64 = 8192;
const HEADER_SIZE: usize = 64;
pub const SUPERBLOCK_PAYLOAD_MAX: usize = SUPERBLOCK_COPY_SIZE as usize - HEADER_SIZE;
const MAGIC: [u8; 8] = *b"GALGOSB\0";
const VERSION: u32 = 2;

pub struct Superblock<'d, D: Disk> {
    disk: &'d D,
    file: FileId,
    sequence: u64,
}

fn encode_copy(sequence: u64, payload: &[u8]) -> Bytes {
    assert!(payload.len() <= SUPERBLOCK_PAYLOAD_MAX);
    let mut bytes = BytesMut::zeroed(SUPERBLOCK_COPY_SIZE as usize);
    bytes[0..8].copy_from_slice(&MAGIC);
    bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
    bytes[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes[16..24].copy_from_slice(&sequence.to_le_bytes());
    bytes[HEADER_SIZE..HEADER_SIZE + payload.len()].copy_from_slice(payload);
    let checksum = checksum64(&[&bytes[0..56], payload]);
    bytes[56..64].copy_from_slice(&checksum.to_le_bytes());
    let bytes = bytes.freeze();
    assert_eq!(decode_copy(&bytes), Some((sequence, payload.to_vec())));
    bytes
}

fn decode_copy(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
    if bytes.len() != SUPERBLOCK_COPY_SIZE as usize || bytes[0..8] != MAGIC {
        return None;
    }
    if u32::from_le_bytes(bytes[8..12].try_into().ok()?) != VERSION {
        return None;
    }
    let length = u32::from_le_bytes(bytes[12..16].try_into().ok()?) as usize;
    if length > SUPERBLOCK_PAYLOAD_MAX {
        return None;
    }
    let payload = &bytes[HEADER_SIZE..HEADER_SIZE + length];
    let checksum = u64::from_le_bytes(bytes[56..64].try_into().ok()?);
    if checksum64(&[&bytes[0..56], payload]) != checksum {
        return None;
    }
    Some((
        u64::from_le_bytes(bytes[16..24].try_into().ok()?),
        payload.to_vec(),
    ))
}

/// The state a quorum of copies agrees on, with the highest sequence.
fn choose(copies: &[Option<(u64, Vec<u8>)>]) -> Option<(u64, Vec<u8>)> {
    let mut best: Option<&(u64, Vec<u8>)> = None;
    for candidate in copies.iter().flatten() {
        let votes = copies.iter().flatten().filter(|c| *c == candidate).count();
        if votes >= SUPERBLOCK_QUORUM && best.is_none_or(|b| candidate.0 > b.0) {
            best = Some(candidate);
        }
    }
    best.cloned()
}

impl<'d, D: Disk> Superblock<'d, D> {
    /// Opens (creating) the superblock file `name`; returns the current (sequence, payload), or
    /// `None` for a new superblock. Copies exist but no quorum agrees: `Unrecoverable`.
    pub async fn open(
        disk: &'d D,
        name: &str,
    ) -> Result<(Superblock<'d, D>, Option<(u64, Vec<u8>)>), StorageError> {
        let file = disk.open(name, true).await?;
        let size = disk.size(file).await?;
        if size == 0 {
            disk.sync_dir(parent(name)).await?;
        }
        let mut copies = Vec::new();
        let mut damaged = 0;
        for copy in 0..SUPERBLOCK_COPIES {
            let at = copy * SUPERBLOCK_COPY_SIZE;
            if at + SUPERBLOCK_COPY_SIZE > size {
                copies.push(None);
                continue;
            }
            let bytes = disk.read_at(file, at, SUPERBLOCK_COPY_SIZE as usize).await;
            let decoded = bytes.as_ref().ok().and_then(|b| decode_copy(b));
            let blank = bytes.as_ref().is_ok_and(|b| b.iter().all(|x| *x == 0));
            if decoded.is_none() && !blank {
                damaged += 1;
            }
            copies.push(decoded);
        }
        let current = choose(&copies);
        let mut superblock = Superblock {
            disk,
            file,
            sequence: 0,
        };
        let Some(current) = current else {
            // Only the first write, cut short by a crash, leaves no quorum legitimately: at most
            // one torn copy and no intact copy newer than sequence 1.
            let first_write = damaged <= 1 && copies.iter().flatten().all(|c| c.0 == 1);
            if !first_write {
                return Err(StorageError::Unrecoverable(format!(
                    "superblock {name}: no quorum of intact copies ({damaged} damaged)"
                )));
            }
            return Ok((superblock, None));
        };
        superblock.sequence = current.0;
        // Copies that disagree (an update a crash cut short, a damaged copy) are rewritten with
        // the state chosen, so a second crash cannot leave an older state a quorum. Copies of
        // the chosen quorum are never touched: a write torn by power loss can garble a sector.
        let bytes = encode_copy(current.0, &current.1);
        for (copy, found) in (0..SUPERBLOCK_COPIES).zip(&copies) {
            if found.as_ref() != Some(&current) {
                superblock.write_copy(copy, &bytes).await?;
            }
        }
        Ok((superblock, Some(current)))
    }

    async fn write_copy(&self, copy: u64, bytes: &Bytes) -> Result<(), StorageError> {
        let at = copy * SUPERBLOCK_COPY_SIZE;
        self.disk.write_at(self.file, at, bytes.clone()).await?;
        self.disk
            .sync(self.file)
            .await
            .map_err(|e| StorageError::SyncFailed(e.to_string()))
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Closes the file, for a superblock that is done (its group was stopped).
    pub async fn close(self) {
        self.disk.close(self.file).await;
    }

    /// Writes `payload` as the next state; durable when this returns.
    pub async fn write(&mut self, payload: &[u8]) -> Result<u64, StorageError> {
        if payload.len() > SUPERBLOCK_PAYLOAD_MAX {
            return Err(StorageError::Invalid(format!(
                "superblock payload of {} bytes is over {SUPERBLOCK_PAYLOAD_MAX}",
                payload.len()
            )));
        }
        let sequence = self.sequence + 1;
        let bytes = encode_copy(sequence, payload);
        for copy in 0..SUPERBLOCK_COPIES {
            self.write_copy(copy, &bytes).await?;
        }
        self.sequence = sequence;
        Ok(sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_disk::block_on;
    use crate::memory_disk::MemoryDisk;

    #[test]
    fn a_crash_mid_update_leaves_the_old_or_the_new_state() {
        for seed in 0..64 {
            let disk = MemoryDisk::new(seed);
            disk.faults.borrow_mut().crash_tear = 0.5;
            block_on(async {
                let (mut superblock, none) = Superblock::open(&disk, "sb").await.unwrap();
                disk.sync_dir("").await.unwrap();
                assert!(none.is_none());
                superblock.write(b"state one").await.unwrap();
                // An update cut short after `copies` copies, one of them maybe torn.
                let copies = seed % SUPERBLOCK_COPIES;
                let next = encode_copy(2, b"state two");
                for copy in 0..copies {
                    disk.write_at(superblock.file, copy * SUPERBLOCK_COPY_SIZE, next.clone())
                        .await
                        .unwrap();
                    disk.sync(superblock.file).await.unwrap();
                }
                disk.write_at(superblock.file, copies * SUPERBLOCK_COPY_SIZE, next.clone())
                    .await
                    .unwrap();
                disk.crash();
                let (_, state) = Superblock::open(&disk, "sb").await.unwrap();
                let (sequence, payload) = state.expect("a state survives");
                assert!(
                    (sequence, payload.as_slice()) == (1, b"state one".as_slice())
                        || (sequence, payload.as_slice()) == (2, b"state two".as_slice()),
                    "seed {seed}: sequence {sequence}"
                );
            });
        }
    }

    #[test]
    fn one_damaged_copy_is_outvoted_and_a_lone_newer_copy_does_not_win() {
        let disk = MemoryDisk::new(1);
        block_on(async {
            let (mut superblock, _) = Superblock::open(&disk, "sb").await.unwrap();
            superblock.write(b"a").await.unwrap();
            superblock.write(b"b").await.unwrap();
            disk.corrupt("sb", 64);
            let lone = encode_copy(9, b"lone");
            disk.write_at(superblock.file, SUPERBLOCK_COPY_SIZE, lone)
                .await
                .unwrap();
            let (_, state) = Superblock::open(&disk, "sb").await.unwrap();
            assert_eq!(state, Some((2, b"b".to_vec())));
        });
    }

    #[test]
    fn two_crashes_in_a_row_never_bring_an_older_state_back() {
        let disk = MemoryDisk::new(3);
        block_on(async {
            let (mut superblock, _) = Superblock::open(&disk, "sb").await.unwrap();
            superblock.write(b"s1").await.unwrap();
            // An update to s2 cut after two copies: [s2, s2, s1, s1].
            let s2 = encode_copy(2, b"s2");
            for copy in 0..2 {
                disk.write_at(superblock.file, copy * SUPERBLOCK_COPY_SIZE, s2.clone())
                    .await
                    .unwrap();
            }
            disk.sync(superblock.file).await.unwrap();
            disk.crash();
            let (superblock, state) = Superblock::open(&disk, "sb").await.unwrap();
            assert_eq!(state, Some((2, b"s2".to_vec())));
            // An update to s3 cut after one copy: without the repair at open this would leave
            // [s3, s2, s1, s1] and s1 would win.
            let s3 = encode_copy(3, b"s3");
            disk.write_at(superblock.file, 0, s3).await.unwrap();
            disk.sync(superblock.file).await.unwrap();
            disk.crash();
            let (_, state) = Superblock::open(&disk, "sb").await.unwrap();
            assert_eq!(state, Some((2, b"s2".to_vec())));
        });
    }

    #[test]
    fn a_damaged_superblock_is_not_mistaken_for_a_new_one() {
        let disk = MemoryDisk::new(4);
        block_on(async {
            let (mut superblock, _) = Superblock::open(&disk, "sb").await.unwrap();
            superblock.write(b"state").await.unwrap();
            for copy in 0..3 {
                disk.corrupt("sb", copy * SUPERBLOCK_COPY_SIZE + 64);
            }
            assert!(matches!(
                Superblock::open(&disk, "sb").await,
                Err(StorageError::Unrecoverable(_))
            ));
        });
    }
}
