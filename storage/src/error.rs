//! Errors of the storage structures.

use std::fmt;

use crate::disk::DiskError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The disk refused an operation; nothing already durable was damaged.
    Disk(DiskError),
    /// fdatasync failed: the process must stop, and recovery decides what survived. The log
    /// refuses every later call.
    SyncFailed(String),
    /// An earlier sync failure poisoned this log.
    Poisoned,
    /// The request breaks a precondition (op or offset not next, timestamp going back, ...).
    Invalid(String),
    /// Too many appends queued for the next group commit; retry after some complete.
    QueueFull,
    /// Another operation needs the log idle (truncate while appends are in flight).
    Busy,
    /// The op is not in the log (deleted by retention, truncated or never written).
    NotFound(u64),
    /// The op's record or index entry is damaged: repair it from a peer.
    Faulty(u64),
    /// On-disk state this version cannot recover locally (two damaged copies of one entry,
    /// files of another format): the replica needs its peers (state sync).
    Unrecoverable(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Disk(error) => write!(f, "{error}"),
            StorageError::SyncFailed(text) => write!(f, "fdatasync failed: {text}"),
            StorageError::Poisoned => write!(f, "the log stopped after a failed fdatasync"),
            StorageError::Invalid(text) => write!(f, "invalid request: {text}"),
            StorageError::QueueFull => write!(f, "too many appends in flight"),
            StorageError::Busy => write!(f, "the log is busy with appends"),
            StorageError::NotFound(op) => write!(f, "op {op} is not in the log"),
            StorageError::Faulty(op) => write!(f, "op {op} is damaged on this disk"),
            StorageError::Unrecoverable(text) => write!(f, "unrecoverable: {text}"),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<DiskError> for StorageError {
    fn from(error: DiskError) -> StorageError {
        StorageError::Disk(error)
    }
}
