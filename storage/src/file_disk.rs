//! `FileDisk`: the `Disk` trait on real files under a root directory, driven by monoio.
//!
//! Reads, writes and fdatasync go through monoio, which submits them to io_uring, or, where
//! io_uring is refused (Docker's default seccomp profile), runs them as blocking syscalls on
//! the legacy epoll driver. Control-path calls (open, list, truncate, remove, directory sync)
//! are plain blocking syscalls: they are rare and short.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use crate::disk::{Disk, DiskError, FileId};

/// Open files kept per disk; opening more is an error, never an unbounded table.
pub const FILES_OPEN_MAX: usize = 4096;

struct OpenFile {
    io: Rc<monoio::fs::File>,
    /// A second descriptor of the same file, for size and truncate.
    control: fs::File,
}

pub struct FileDisk {
    root: PathBuf,
    /// On the epoll driver file calls never suspend, so letting other tasks run needs a timer;
    /// on io_uring the I/O itself suspends the caller and yielding costs nothing.
    epoll: bool,
    files: RefCell<BTreeMap<FileId, OpenFile>>,
    next_id: RefCell<u32>,
}

impl FileDisk {
    /// A disk for a runtime built by `block_on` (io_uring where the kernel allows it).
    pub fn new(root: impl Into<PathBuf>) -> FileDisk {
        FileDisk::with_driver(root, !monoio::utils::detect_uring())
    }

    /// A disk for a runtime on the epoll driver (`block_on_epoll`) when `epoll` is set.
    pub fn with_driver(root: impl Into<PathBuf>, epoll: bool) -> FileDisk {
        FileDisk {
            root: root.into(),
            epoll,
            files: RefCell::new(BTreeMap::new()),
            next_id: RefCell::new(0),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        assert!(!name.starts_with('/'), "disk names are relative: {name}");
        assert!(
            !name.split('/').any(|part| part == ".."),
            "no '..' in disk names: {name}"
        );
        self.root.join(name)
    }

    fn io_file(&self, file: FileId) -> Result<Rc<monoio::fs::File>, DiskError> {
        let files = self.files.borrow();
        Ok(files.get(&file).ok_or(closed(file))?.io.clone())
    }
}

impl Disk for FileDisk {
    async fn create_dir_all(&self, dir: &str) -> Result<(), DiskError> {
        fs::create_dir_all(self.path(dir))?;
        Ok(())
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.path(dir))? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn open(&self, name: &str, create: bool) -> Result<FileId, DiskError> {
        if self.files.borrow().len() >= FILES_OPEN_MAX {
            return Err(DiskError::Io(format!(
                "too many open files ({FILES_OPEN_MAX}) while opening {name}"
            )));
        }
        let path = self.path(name);
        let std_file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => DiskError::NotFound(name.to_string()),
                _ => DiskError::from(error),
            })?;
        let control = std_file.try_clone()?;
        let io = monoio::fs::File::from_std(std_file)?;
        let mut next_id = self.next_id.borrow_mut();
        let id = FileId(*next_id);
        *next_id += 1;
        self.files.borrow_mut().insert(
            id,
            OpenFile {
                io: Rc::new(io),
                control,
            },
        );
        Ok(id)
    }

    async fn close(&self, file: FileId) {
        // Dropping the last reference closes both descriptors.
        self.files.borrow_mut().remove(&file);
    }

    async fn size(&self, file: FileId) -> Result<u64, DiskError> {
        let files = self.files.borrow();
        let open = files.get(&file).ok_or(closed(file))?;
        Ok(open.control.metadata()?.len())
    }

    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let io = self.io_file(file)?;
        let (result, buffer) = io.read_exact_at(Vec::with_capacity(len), offset).await;
        match result {
            Ok(()) => Ok(buffer),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(DiskError::ShortRead { file, offset, len })
            }
            Err(error) if error.raw_os_error() == Some(libc::EIO) => {
                Err(DiskError::ReadFailed { file, offset })
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn write_at(&self, file: FileId, offset: u64, bytes: Bytes) -> Result<(), DiskError> {
        let io = self.io_file(file)?;
        let (result, _) = io.write_all_at(bytes, offset).await;
        result?;
        Ok(())
    }

    async fn sync(&self, file: FileId) -> Result<(), DiskError> {
        let io = self.io_file(file)?;
        io.sync_data().await?;
        Ok(())
    }

    async fn truncate(&self, file: FileId, len: u64) -> Result<(), DiskError> {
        let files = self.files.borrow();
        let open = files.get(&file).ok_or(closed(file))?;
        open.control.set_len(len)?;
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), DiskError> {
        fs::remove_file(self.path(name)).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => DiskError::NotFound(name.to_string()),
            _ => DiskError::from(error),
        })
    }

    async fn sync_dir(&self, dir: &str) -> Result<(), DiskError> {
        fs::File::open(self.path(dir))?.sync_all()?;
        Ok(())
    }

    async fn yield_now(&self) {
        // A task that wakes itself is polled again at once on monoio; on epoll a zero timer
        // (about a millisecond: the timer's granularity) lets the other ready tasks run first.
        // The runtime needs its timer enabled, as `block_on` and `block_on_epoll` do.
        if self.epoll {
            monoio::time::sleep(std::time::Duration::ZERO).await;
        }
    }
}

/// The error for a handle closed meanwhile (its segment was removed, say).
fn closed(file: FileId) -> DiskError {
    DiskError::Io(format!("file {} is closed", file.0))
}

/// Runs `future` on a monoio runtime that uses io_uring when the kernel allows it and falls
/// back to epoll otherwise. Returns the output and whether io_uring was used.
pub fn block_on<F: std::future::Future>(future: F) -> (F::Output, bool) {
    let uring = monoio::utils::detect_uring();
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("a monoio runtime (io_uring or epoll)");
    (runtime.block_on(future), uring)
}

/// Runs `future` on monoio's epoll driver, where file I/O is blocking syscalls: the path taken
/// when io_uring is refused, forced (to measure or test it).
pub fn block_on_epoll<F: std::future::Future>(future: F) -> F::Output {
    let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("a monoio epoll runtime");
    runtime.block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("galgo-file-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_reads_truncates_and_lists() {
        let dir = temp_dir("basic");
        let disk = FileDisk::new(&dir);
        let ((), _) = block_on(async {
            disk.create_dir_all("p").await.unwrap();
            let file = disk.open("p/a.log", true).await.unwrap();
            disk.write_at(file, 0, Bytes::from_static(b"hello world"))
                .await
                .unwrap();
            disk.sync(file).await.unwrap();
            assert_eq!(disk.read_at(file, 6, 5).await.unwrap(), b"world");
            assert_eq!(disk.size(file).await.unwrap(), 11);
            assert!(matches!(
                disk.read_at(file, 8, 10).await,
                Err(DiskError::ShortRead { .. })
            ));
            disk.truncate(file, 5).await.unwrap();
            assert_eq!(disk.size(file).await.unwrap(), 5);
            assert_eq!(disk.list("p").await.unwrap(), vec!["a.log".to_string()]);
            assert!(matches!(
                disk.open("p/missing", false).await,
                Err(DiskError::NotFound(_))
            ));
            disk.close(file).await;
            disk.remove("p/a.log").await.unwrap();
            disk.sync_dir("p").await.unwrap();
            assert!(disk.list("p").await.unwrap().is_empty());
        });
        fs::remove_dir_all(&dir).unwrap();
    }
}
