//! Galgo's storage: on-disk formats and the I/O seam. Partition logs are chains of segments
//! written once per prepare ("segment as WAL") with a redundant index for protocol-aware
//! recovery; superblocks are kept as several copies; every structure is written against the
//! `Disk` trait, which has a real implementation (monoio: io_uring or epoll) and an in-memory
//! one with the simulator's fault model. Nothing here reads a clock or the OS random source.

pub mod aligned;
pub mod checksum;
pub mod disk;
pub mod error;
pub mod file_disk;
pub mod format;
pub mod futures;
mod group_commit;
pub mod iggy_batch;
pub mod log;
#[cfg(test)]
mod log_tests;
pub mod memory_disk;
pub mod prepare_ahead;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod superblock;
mod truncation;
pub mod wal_ring;
pub mod workload;

pub use disk::{Disk, DiskError, FileId};
pub use error::StorageError;
pub use file_disk::FileDisk;
pub use format::{EntryMeta, IndexEntry};
pub use log::{remove_log_dir, Appending, LogConfig, PartitionLog, Record, Retention, SegmentInfo};
pub use memory_disk::MemoryDisk;
