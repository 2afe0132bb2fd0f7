//! The I/O seam: the `Disk` trait every storage structure is written against, and its errors.
//!
//! A disk is a namespace of files addressed by relative names ("p1/00000000000000000001.log").
//! Writes are positional and become durable only after `sync` on the same file; `sync_dir`
//! makes created and removed names durable. Implementations: `FileDisk` (monoio: io_uring, or
//! epoll with blocking file calls where io_uring is refused) and `MemoryDisk` (in memory, with
//! the simulator's fault model).

use std::fmt;

use bytes::Bytes;

/// A handle to an open file of one disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u32);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// No such file.
    NotFound(String),
    /// The device is full: nothing was written by this call.
    NoSpace,
    /// A read hit a sector the device cannot return (latent sector error).
    ReadFailed { file: FileId, offset: u64 },
    /// A read went past the end of the file.
    ShortRead {
        file: FileId,
        offset: u64,
        len: usize,
    },
    /// Any other I/O error, with the OS's description.
    Io(String),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::NotFound(name) => write!(f, "file not found: {name}"),
            DiskError::NoSpace => write!(f, "no space left on device"),
            DiskError::ReadFailed { file, offset } => {
                write!(f, "read failed: file {} offset {offset}", file.0)
            }
            DiskError::ShortRead { file, offset, len } => {
                write!(f, "short read: file {} offset {offset} len {len}", file.0)
            }
            DiskError::Io(text) => write!(f, "i/o error: {text}"),
        }
    }
}

impl std::error::Error for DiskError {}

impl From<std::io::Error> for DiskError {
    fn from(error: std::io::Error) -> DiskError {
        match error.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => DiskError::NoSpace,
            Some(libc::ENOENT) => DiskError::NotFound(error.to_string()),
            _ => DiskError::Io(error.to_string()),
        }
    }
}

/// Positional file I/O. Single-threaded (monoio shards own their files), so `&self` methods and
/// futures that are not `Send`.
#[allow(async_fn_in_trait)]
pub trait Disk {
    /// Creates `dir` and its parents; durable once `sync_dir` of its parent completes.
    async fn create_dir_all(&self, dir: &str) -> Result<(), DiskError>;
    /// Names (not paths) of the files and directories directly inside `dir`, sorted.
    async fn list(&self, dir: &str) -> Result<Vec<String>, DiskError>;
    /// Opens `name`, creating it empty when `create` is set and it does not exist.
    async fn open(&self, name: &str, create: bool) -> Result<FileId, DiskError>;
    async fn close(&self, file: FileId);
    async fn size(&self, file: FileId) -> Result<u64, DiskError>;
    /// Reads exactly `len` bytes at `offset`.
    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> Result<Vec<u8>, DiskError>;
    /// `read_at` for a large read whose bytes are kept as they are (a record): a disk may read
    /// it another way (straight from the device), and the bytes may sit inside a larger
    /// allocation.
    async fn read_bytes_at(
        &self,
        file: FileId,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, DiskError> {
        self.read_at(file, offset, len).await.map(Bytes::from)
    }
    /// Writes all of `bytes` at `offset`. Not durable until `sync`. A write whose offset,
    /// length and buffer address are multiples of `write_alignment` may bypass the page cache.
    async fn write_at(&self, file: FileId, offset: u64, bytes: Bytes) -> Result<(), DiskError>;
    /// Makes every completed write to `file` durable (fdatasync). An error here means the
    /// kernel may have dropped dirty pages: callers must stop using the file (fsyncgate).
    async fn sync(&self, file: FileId) -> Result<(), DiskError>;
    /// Cuts or extends `file` to `len` bytes. Not durable until `sync`.
    async fn truncate(&self, file: FileId, len: u64) -> Result<(), DiskError>;
    /// Removes `name`. Durable once `sync_dir` of its directory completes.
    async fn remove(&self, name: &str) -> Result<(), DiskError>;
    /// Removes the empty directory `dir`. Durable once `sync_dir` of its parent completes.
    async fn remove_dir(&self, dir: &str) -> Result<(), DiskError>;
    /// Makes created and removed names in `dir` durable.
    async fn sync_dir(&self, dir: &str) -> Result<(), DiskError>;
    /// The block size on which writes go straight to the device (O_DIRECT), or 1 when every
    /// layout is as good as any other. Appenders lay large writes out on it.
    fn write_alignment(&self) -> u64;
    /// Lets the other ready tasks of the runtime that drives this disk run before the caller
    /// goes on (group commit waits a turn for appenders to queue).
    async fn yield_now(&self);
}

/// Joins a directory and a file name into a disk name.
/// A removal's result with "already gone" counted as done (removals that may be repeated
/// after a crash).
pub fn gone(removed: Result<(), DiskError>) -> Result<(), DiskError> {
    match removed {
        Ok(()) | Err(DiskError::NotFound(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The directory part of a disk name ("" for a name at the root).
pub fn parent(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(dir, _)| dir)
}
