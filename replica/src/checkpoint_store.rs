//! A group's checkpoints on disk: the consensus core's `Checkpoint`, encoded, in the storage
//! crate's pair of snapshot files in the group's checkpoint directory, written in turn so a
//! crash during a write leaves the previous one. While the log keeps every op a checkpoint
//! only saves work when the group opens, so a missing or damaged one costs time, never data:
//! the group then applies its log from an older checkpoint or from op 1. A group whose log
//! starts later (it installed a checkpoint from a peer: state transfer) needs the newest
//! checkpoint at or above its log's start; the previous file stays intact until a newer one
//! is, so one damaged file still leaves the other (if both are lost, the group does not open
//! and says why).

use galgo_consensus::Checkpoint;
use galgo_storage::disk::parent;
use galgo_storage::snapshot::{read_newest_snapshot, write_snapshot, SnapshotRef};
use galgo_storage::{Disk, StorageError};

/// Committed ops between two checkpoints of a group: at most this many are applied again
/// when it opens (each a read of its whole record).
pub const CHECKPOINT_INTERVAL_OPS: u64 = 256;
/// Bytes of committed prepares between two checkpoints of a group, at most: with large ops
/// (1 MB batches) this, not the op count, bounds what an open reads again.
pub const CHECKPOINT_INTERVAL_BYTES: u64 = 64 * 1024 * 1024;

pub struct CheckpointStore {
    dir: String,
    /// The newest intact checkpoint file (the next write goes to the other one).
    current: Option<SnapshotRef>,
    /// The op of the checkpoint in the other file, if this store wrote it (0: not known).
    previous_op: u64,
}

impl CheckpointStore {
    /// Opens (creating) the directory `dir` and reads the newest intact checkpoint in it.
    pub async fn open<D: Disk>(
        disk: &D,
        dir: String,
    ) -> Result<(CheckpointStore, Option<Checkpoint>), StorageError> {
        disk.create_dir_all(&dir).await?;
        disk.sync_dir(parent(&dir)).await?;
        let (current, checkpoint) = match read_newest_snapshot(disk, &dir).await? {
            None => (None, None),
            Some((reference, body)) => match Checkpoint::decode(&body) {
                Ok(checkpoint) if checkpoint.op == reference.op => {
                    (Some(reference), Some(checkpoint))
                }
                // Intact as a file, yet not a checkpoint of that op: as good as none.
                _ => (Some(reference), None),
            },
        };
        Ok((
            CheckpointStore {
                dir,
                current,
                previous_op: 0,
            },
            checkpoint,
        ))
    }

    /// The op of the newest checkpoint saved (0: none).
    pub fn op(&self) -> u64 {
        self.current.map_or(0, |current| current.op)
    }

    /// The op both files' checkpoints cover: either one alone can open the group from it (0
    /// until this store wrote both). A log may drop its ops at or below it.
    pub fn op_both_cover(&self) -> u64 {
        self.previous_op.min(self.op())
    }

    /// Makes `checkpoint` durable as the newest one; the previous one stays intact until it
    /// is. An error leaves the previous one the newest. One not newer than the newest is
    /// refused (`Invalid`).
    pub async fn save<D: Disk>(
        &mut self,
        disk: &D,
        checkpoint: &Checkpoint,
    ) -> Result<(), StorageError> {
        let bytes = self.encode_newer(checkpoint)?;
        self.write(disk, checkpoint.op, &bytes).await
    }

    /// `save`, then the same checkpoint into the other file too: for one installed from a
    /// peer, after which the log starts past every older checkpoint, so that either file
    /// still opens the group if the other is damaged.
    pub async fn save_in_both<D: Disk>(
        &mut self,
        disk: &D,
        checkpoint: &Checkpoint,
    ) -> Result<(), StorageError> {
        let bytes = self.encode_newer(checkpoint)?;
        self.write(disk, checkpoint.op, &bytes).await?;
        self.write(disk, checkpoint.op, &bytes).await
    }

    fn encode_newer(&self, checkpoint: &Checkpoint) -> Result<Vec<u8>, StorageError> {
        if checkpoint.op <= self.op() {
            return Err(StorageError::Invalid(format!(
                "a checkpoint of op {} is not newer than the saved one of op {}",
                checkpoint.op,
                self.op()
            )));
        }
        checkpoint
            .encode()
            .map_err(|error| StorageError::Invalid(format!("checkpoint: {error}")))
    }

    /// Writes `bytes` (a checkpoint of `op`) over the older file, which becomes the newest.
    async fn write<D: Disk>(
        &mut self,
        disk: &D,
        op: u64,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let reference = write_snapshot(disk, &self.dir, self.current, op, bytes).await?;
        assert_eq!(reference.op, op);
        self.previous_op = self.op();
        self.current = Some(reference);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_storage::file_disk::block_on;
    use galgo_storage::MemoryDisk;

    fn checkpoint(op: u64) -> Checkpoint {
        let mut op_header = galgo_consensus::Header::new(galgo_consensus::Command::Prepare, 1, 5);
        op_header.op = op;
        op_header.set_checksums(&[]);
        Checkpoint {
            op,
            op_checksum: op_header.checksum,
            op_header,
            installed: op.is_multiple_of(20),
            sessions: vec![op as u8; 3],
            machine: vec![1, 2, op as u8],
        }
    }

    #[test]
    fn the_newest_checkpoint_survives_a_reopen_and_a_damaged_one_falls_back() {
        let disk = MemoryDisk::new(31);
        block_on(async {
            let (mut store, found) = CheckpointStore::open(&disk, "checkpoint-5".into())
                .await
                .unwrap();
            assert_eq!((found, store.op()), (None, 0));
            store.save(&disk, &checkpoint(10)).await.unwrap();
            store.save(&disk, &checkpoint(20)).await.unwrap();
            let (store, found) = CheckpointStore::open(&disk, "checkpoint-5".into())
                .await
                .unwrap();
            assert_eq!((found, store.op()), (Some(checkpoint(20)), 20));
            // The newer file damaged: the older checkpoint, not an error.
            let newer = store.current.unwrap().file;
            disk.corrupt(&format!("checkpoint-5/snapshot.{newer}"), 70);
            let (mut store, found) = CheckpointStore::open(&disk, "checkpoint-5".into())
                .await
                .unwrap();
            assert_eq!((found, store.op()), (Some(checkpoint(10)), 10));
            // The next save replaces the damaged file, never the intact one.
            store.save(&disk, &checkpoint(30)).await.unwrap();
            let (_, found) = CheckpointStore::open(&disk, "checkpoint-5".into())
                .await
                .unwrap();
            assert_eq!(found, Some(checkpoint(30)));
        });
    }

    #[test]
    fn an_installed_checkpoint_is_in_both_files_and_older_ones_are_refused() {
        let disk = MemoryDisk::new(32);
        block_on(async {
            let (mut store, _) = CheckpointStore::open(&disk, "checkpoint-6".into())
                .await
                .unwrap();
            store.save(&disk, &checkpoint(10)).await.unwrap();
            assert_eq!(store.op_both_cover(), 0, "the other file is not known");
            store.save(&disk, &checkpoint(15)).await.unwrap();
            assert_eq!(store.op_both_cover(), 10);
            assert!(store.save(&disk, &checkpoint(15)).await.is_err());
            assert!(store.save(&disk, &checkpoint(12)).await.is_err());
            store.save_in_both(&disk, &checkpoint(40)).await.unwrap();
            assert_eq!((store.op(), store.op_both_cover()), (40, 40));
            // Either file damaged: the other still holds it.
            let newer = store.current.unwrap().file;
            disk.corrupt(&format!("checkpoint-6/snapshot.{newer}"), 70);
            let (_, found) = CheckpointStore::open(&disk, "checkpoint-6".into())
                .await
                .unwrap();
            assert_eq!(found, Some(checkpoint(40)));
        });
    }
}
