//! The files a partition group keeps on a node (its log directory, checkpoint directory and
//! superblock file), their names, and their removal once the metadata has deleted the group.
//!
//! A group is deleted when the applied metadata has allocated its id and no stream or topic
//! holds it any more. The applied metadata is always a committed prefix, and group ids are
//! never reused, so a group found deleted at any prefix stays deleted: the test is safe even
//! while the metadata replica is still replaying its log at open (it then knows fewer ids).

use std::collections::BTreeSet;

use galgo_storage::disk::gone;
use galgo_storage::{remove_log_dir, Disk, StorageError};

/// The directory of group `group`'s partition log.
pub fn log_dir(group: u64) -> String {
    format!("group-{group}")
}

/// The directory of group `group`'s checkpoints.
pub fn checkpoint_dir(group: u64) -> String {
    format!("checkpoint-{group}")
}

/// The file of group `group`'s view state (its superblock).
pub fn superblock_name(group: u64) -> String {
    format!("superblock-{group}")
}

/// The group a name in the data directory belongs to, if it is one of a group's files.
pub fn group_of_file(name: &str) -> Option<u64> {
    let (kind, id) = name.split_once('-')?;
    if !matches!(kind, "group" | "checkpoint" | "superblock") {
        return None;
    }
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let group: u64 = id.parse().ok()?;
    // Canonical spelling only ("group-07" is not group 7's).
    (group.to_string() == id).then_some(group)
}

/// Which partition groups the applied metadata has deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletedGroups {
    /// Every partition group id below this one has been allocated.
    pub group_next: u64,
    /// The partition groups that exist (on any node).
    pub live: BTreeSet<u64>,
}

impl DeletedGroups {
    pub fn new(group_next: u64, live: BTreeSet<u64>) -> DeletedGroups {
        assert!(live.iter().all(|group| *group < group_next));
        DeletedGroups { group_next, live }
    }

    /// True when `group` was allocated and has been deleted since. The metadata group (0) is
    /// never deleted.
    pub fn is_deleted(&self, group: u64) -> bool {
        group != crate::node::METADATA_GROUP
            && group < self.group_next
            && !self.live.contains(&group)
    }
}

/// Removes every file of group `group`: its log, its checkpoints, then its superblock. The
/// group must be stopped with its files closed. A crash part way leaves fewer of the same
/// files, which a later call removes.
pub async fn remove_group_files<D: Disk>(disk: &D, group: u64) -> Result<(), StorageError> {
    remove_log_dir(disk, &log_dir(group)).await?;
    remove_log_dir(disk, &checkpoint_dir(group)).await?;
    gone(disk.remove(&superblock_name(group)).await)?;
    disk.sync_dir("").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_storage::file_disk::block_on;
    use galgo_storage::{MemoryDisk, PartitionLog};

    #[test]
    fn names_parse_back_to_their_group_and_nothing_else_does() {
        for group in [1, 7, 42, u64::MAX] {
            assert_eq!(group_of_file(&log_dir(group)), Some(group));
            assert_eq!(group_of_file(&checkpoint_dir(group)), Some(group));
            assert_eq!(group_of_file(&superblock_name(group)), Some(group));
        }
        for name in [
            "group-",
            "group-07",
            "group-1x",
            "group--1",
            "groups-1",
            "metadata",
            "checkpoint",
            "superblock-18446744073709551616",
            "lost+found",
        ] {
            assert_eq!(group_of_file(name), None, "{name}");
        }
    }

    #[test]
    fn only_allocated_groups_no_topic_holds_are_deleted() {
        let deleted = DeletedGroups::new(10, BTreeSet::from([2, 5]));
        assert!(deleted.is_deleted(1) && deleted.is_deleted(9));
        assert!(!deleted.is_deleted(2) && !deleted.is_deleted(5));
        // Not yet allocated as far as this metadata knows: maybe created by a later op.
        assert!(!deleted.is_deleted(10) && !deleted.is_deleted(11));
        assert!(!deleted.is_deleted(crate::node::METADATA_GROUP));
        // A replica that has applied nothing knows of no group, so deletes none.
        let fresh = DeletedGroups::new(1, BTreeSet::new());
        assert!((0..100).all(|group| !fresh.is_deleted(group)));
    }

    #[test]
    fn a_group_s_files_are_removed_and_no_other_s() {
        let disk = MemoryDisk::new(3);
        block_on(async {
            for group in [3, 4] {
                let (log, _) =
                    PartitionLog::open(&disk, galgo_storage::LogConfig::new(log_dir(group)), 1, 0)
                        .await
                        .unwrap();
                log.close().await.unwrap();
                disk.create_dir_all(&checkpoint_dir(group)).await.unwrap();
                for name in [
                    format!("{}/snapshot.0", checkpoint_dir(group)),
                    superblock_name(group),
                ] {
                    let file = disk.open(&name, true).await.unwrap();
                    disk.close(file).await;
                }
            }
            disk.sync_dir("").await.unwrap();
            remove_group_files(&disk, 3).await.unwrap();
            let left = disk.list("").await.unwrap();
            assert_eq!(left.iter().filter_map(|n| group_of_file(n)).max(), Some(4));
            assert!(left.iter().all(|n| group_of_file(n) != Some(3)), "{left:?}");
            assert_eq!(
                disk.list(&checkpoint_dir(4)).await.unwrap(),
                vec!["snapshot.0"]
            );
            // Again: nothing left to remove is not an error.
            remove_group_files(&disk, 3).await.unwrap();
            // A crash after the removal brings nothing back.
            disk.crash();
            let left = disk.list("").await.unwrap();
            assert!(left.iter().all(|n| group_of_file(n) != Some(3)), "{left:?}");
        });
    }
}
