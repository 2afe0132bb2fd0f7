//! A VSR group's durable view state (view, log view, commit max, view headers) kept in a
//! storage superblock: what the consensus core's `PersistState` action writes and what a
//! replica reopens from. Several copies, quorum reads (see `galgo_storage::superblock`).

use galgo_consensus::durable::{DurableState, DURABLE_SIZE_MAX};
use galgo_storage::superblock::{Superblock, SUPERBLOCK_PAYLOAD_MAX};
use galgo_storage::{Disk, StorageError};

pub struct ViewStateStore<'d, D: Disk> {
    superblock: Superblock<'d, D>,
}

impl<'d, D: Disk> ViewStateStore<'d, D> {
    /// Closes the superblock file, for a group that is done.
    pub async fn close(self) {
        self.superblock.close().await;
    }

    /// Opens (creating) the superblock file `name`: the state last persisted, or the initial
    /// state of a new group.
    pub async fn open(
        disk: &'d D,
        name: &str,
    ) -> Result<(ViewStateStore<'d, D>, DurableState), StorageError> {
        const { assert!(DURABLE_SIZE_MAX <= SUPERBLOCK_PAYLOAD_MAX) };
        let (superblock, current) = Superblock::open(disk, name).await?;
        let state = match current {
            None => DurableState::initial(),
            Some((_, payload)) => {
                let (_, state) = DurableState::decode(&payload).map_err(|error| {
                    StorageError::Unrecoverable(format!(
                        "superblock {name} holds no view state: {error:?}"
                    ))
                })?;
                state
            }
        };
        Ok((ViewStateStore { superblock }, state))
    }

    /// Makes `state` durable; returns when it is.
    pub async fn persist(&mut self, state: &DurableState) -> Result<(), StorageError> {
        let sequence = self.superblock.sequence() + 1;
        let payload = state.encode(sequence);
        assert_eq!(
            DurableState::decode(&payload).map(|(_, s)| s).as_ref(),
            Ok(state)
        );
        self.superblock.write(&payload).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_consensus::durable::VIEW_HEADERS_MAX;
    use galgo_consensus::{Command, Header};
    use galgo_storage::file_disk::block_on;
    use galgo_storage::MemoryDisk;

    #[test]
    fn the_view_state_survives_a_crash_with_every_view_header() {
        let disk = MemoryDisk::new(21);
        disk.faults.borrow_mut().crash_tear = 1.0;
        let headers: Vec<Header> = (1..=VIEW_HEADERS_MAX as u64)
            .map(|op| {
                let mut header = Header::new(Command::Prepare, 1, 2);
                header.op = op;
                header.set_checksums(&[op as u8]);
                header
            })
            .collect();
        let state = DurableState {
            view: 7,
            log_view: 6,
            commit_max: 3,
            view_headers: headers,
        };
        block_on(async {
            let (mut store, initial) = ViewStateStore::open(&disk, "vsr").await.unwrap();
            assert_eq!(initial, DurableState::initial());
            store.persist(&state).await.unwrap();
            disk.crash();
            let (mut store, reopened) = ViewStateStore::open(&disk, "vsr").await.unwrap();
            assert_eq!(reopened, state);
            let next = DurableState {
                view: 8,
                ..state.clone()
            };
            store.persist(&next).await.unwrap();
            disk.crash();
            assert_eq!(ViewStateStore::open(&disk, "vsr").await.unwrap().1, next);
        });
    }
}
