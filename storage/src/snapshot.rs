//! Snapshot checkpoints of a state held in memory (the metadata state machine): two files used
//! in turn, so writing a new snapshot never touches the one the superblock names.
//!
//! A checkpoint is: write the snapshot into the file not in use, sync it, then record its
//! `SnapshotRef` in the superblock (the caller's next superblock write). Until that superblock
//! write is durable the old reference, and the old file, stay valid. File layout (version 1):
//! `[64-byte header: magic, version, op, length, checksum of the body][body]`.

use bytes::BytesMut;

use crate::checksum::checksum64;
use crate::disk::{join, Disk};
use crate::error::StorageError;

const MAGIC: [u8; 8] = *b"GALGOSNP";
const VERSION: u32 = 1;
const HEADER_SIZE: usize = 64;
/// The largest snapshot body (the metadata state is small).
pub const SNAPSHOT_SIZE_MAX: u64 = 1 << 30;
/// Bytes of an encoded `SnapshotRef`, for superblock payloads.
pub const SNAPSHOT_REF_SIZE: usize = 32;

/// Names a durable snapshot: which of the two files, the op it covers, its body checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotRef {
    pub file: u8,
    pub op: u64,
    pub length: u64,
    pub checksum: u64,
}

impl SnapshotRef {
    pub fn encode(&self) -> [u8; SNAPSHOT_REF_SIZE] {
        let mut bytes = [0u8; SNAPSHOT_REF_SIZE];
        bytes[0] = self.file;
        bytes[8..16].copy_from_slice(&self.op.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.length.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.checksum.to_le_bytes());
        assert_eq!(SnapshotRef::decode(&bytes), Some(*self));
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<SnapshotRef> {
        if bytes.len() != SNAPSHOT_REF_SIZE || bytes[0] > 1 || bytes[1..8].iter().any(|b| *b != 0) {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(SnapshotRef {
            file: bytes[0],
            op: u64_at(8),
            length: u64_at(16),
            checksum: u64_at(24),
        })
    }
}

fn file_name(dir: &str, file: u8) -> String {
    join(dir, &format!("snapshot.{file}"))
}

/// Writes `body` as the snapshot at `op` into the file `current` does not use; durable on return.
pub async fn write_snapshot<D: Disk>(
    disk: &D,
    dir: &str,
    current: Option<SnapshotRef>,
    op: u64,
    body: &[u8],
) -> Result<SnapshotRef, StorageError> {
    if body.len() as u64 > SNAPSHOT_SIZE_MAX {
        return Err(StorageError::Invalid(format!(
            "snapshot of {} bytes is over {SNAPSHOT_SIZE_MAX}",
            body.len()
        )));
    }
    if current.is_some_and(|c| op < c.op) {
        return Err(StorageError::Invalid(format!(
            "snapshot at op {op} is older than the current one"
        )));
    }
    let file = current.map_or(0, |c| 1 - c.file);
    let reference = SnapshotRef {
        file,
        op,
        length: body.len() as u64,
        checksum: checksum64(&[body]),
    };
    let mut bytes = BytesMut::zeroed(HEADER_SIZE);
    bytes[0..8].copy_from_slice(&MAGIC);
    bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
    bytes[16..48].copy_from_slice(&reference.encode());
    bytes.extend_from_slice(body);
    let name = file_name(dir, file);
    let handle = disk.open(&name, true).await?;
    disk.write_at(handle, 0, bytes.freeze()).await?;
    disk.truncate(handle, (HEADER_SIZE + body.len()) as u64)
        .await?;
    disk.sync(handle)
        .await
        .map_err(|e| StorageError::SyncFailed(e.to_string()))?;
    disk.close(handle).await;
    disk.sync_dir(dir).await?;
    Ok(reference)
}

/// Reads the snapshot `reference` names and verifies it.
pub async fn read_snapshot<D: Disk>(
    disk: &D,
    dir: &str,
    reference: SnapshotRef,
) -> Result<Vec<u8>, StorageError> {
    let handle = disk.open(&file_name(dir, reference.file), false).await?;
    let read = disk
        .read_at(handle, 0, HEADER_SIZE + reference.length as usize)
        .await;
    disk.close(handle).await;
    let damaged = || {
        StorageError::Unrecoverable(format!(
            "snapshot of op {} in {dir:?} is damaged: fetch it from a peer",
            reference.op
        ))
    };
    let bytes = read.map_err(|_| damaged())?;
    let (header, body) = bytes.split_at(HEADER_SIZE);
    let intact = header[0..8] == MAGIC
        && header[8..12] == VERSION.to_le_bytes()
        && SnapshotRef::decode(&header[16..48]) == Some(reference)
        && checksum64(&[body]) == reference.checksum;
    if !intact {
        return Err(damaged());
    }
    Ok(body.to_vec())
}

/// The intact snapshot with the highest op of the two files in `dir`, found without a
/// superblock reference (each file's header names itself); `None` if neither file is intact.
/// For state that is only a cache of work, where losing both costs time and nothing else.
pub async fn read_newest_snapshot<D: Disk>(
    disk: &D,
    dir: &str,
) -> Result<Option<(SnapshotRef, Vec<u8>)>, StorageError> {
    let mut newest: Option<(SnapshotRef, Vec<u8>)> = None;
    for file in 0..2u8 {
        let handle = match disk.open(&file_name(dir, file), false).await {
            Ok(handle) => handle,
            Err(crate::disk::DiskError::NotFound(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        let header = disk.read_at(handle, 0, HEADER_SIZE).await;
        disk.close(handle).await;
        let Some(reference) = header.ok().and_then(|h| SnapshotRef::decode(&h[16..48])) else {
            continue;
        };
        if reference.file != file || reference.length > SNAPSHOT_SIZE_MAX {
            continue;
        }
        if newest.as_ref().is_some_and(|(n, _)| n.op >= reference.op) {
            continue;
        }
        // `read_snapshot` checks the magic, the version, the reference and the body.
        if let Ok(body) = read_snapshot(disk, dir, reference).await {
            newest = Some((reference, body));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_disk::block_on;
    use crate::memory_disk::MemoryDisk;

    #[test]
    fn snapshots_alternate_files_and_damage_is_reported() {
        let disk = MemoryDisk::new(1);
        block_on(async {
            disk.create_dir_all("m").await.unwrap();
            let first = write_snapshot(&disk, "m", None, 10, b"state at 10")
                .await
                .unwrap();
            let second = write_snapshot(&disk, "m", Some(first), 20, b"state at 20")
                .await
                .unwrap();
            assert_ne!(first.file, second.file);
            assert_eq!(
                read_snapshot(&disk, "m", first).await.unwrap(),
                b"state at 10"
            );
            assert_eq!(
                read_snapshot(&disk, "m", second).await.unwrap(),
                b"state at 20"
            );
            assert!(write_snapshot(&disk, "m", Some(second), 5, b"old")
                .await
                .is_err());
            disk.corrupt("m/snapshot.1", 70);
            assert!(matches!(
                read_snapshot(&disk, "m", second).await,
                Err(StorageError::Unrecoverable(_))
            ));
            assert_eq!(SnapshotRef::decode(&second.encode()), Some(second));
        });
    }

    #[test]
    fn the_newest_intact_snapshot_is_found_without_a_reference() {
        let disk = MemoryDisk::new(2);
        block_on(async {
            disk.create_dir_all("c").await.unwrap();
            assert_eq!(read_newest_snapshot(&disk, "c").await.unwrap(), None);
            let first = write_snapshot(&disk, "c", None, 10, b"state at 10")
                .await
                .unwrap();
            let second = write_snapshot(&disk, "c", Some(first), 20, b"state at 20")
                .await
                .unwrap();
            let newest = read_newest_snapshot(&disk, "c").await.unwrap();
            assert_eq!(newest, Some((second, b"state at 20".to_vec())));
            // The newer one damaged: the older one is what is left.
            disk.corrupt(&format!("c/snapshot.{}", second.file), 70);
            let newest = read_newest_snapshot(&disk, "c").await.unwrap();
            assert_eq!(newest, Some((first, b"state at 10".to_vec())));
            disk.corrupt(&format!("c/snapshot.{}", first.file), 70);
            assert_eq!(read_newest_snapshot(&disk, "c").await.unwrap(), None);
        });
    }
}
