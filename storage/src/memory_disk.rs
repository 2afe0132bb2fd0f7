//! `MemoryDisk`: the `Disk` trait in memory, with the simulator's fault model.
//!
//! Each file keeps its durable bytes and the writes made since the last `sync`. `crash()`
//! applies each unsynced write fully, not at all, or torn (a random subset of its sectors), and
//! forgets names created or removed since the last `sync_dir`. Faults, drawn from a seed:
//! corrupted reads (a flipped bit in what a read returns), corrupted writes (a flipped bit
//! stored), misdirected writes (landing some sectors away), latent sector errors (reads of a
//! sector fail), a space limit (writes past it fail with `NoSpace`, writing nothing) and
//! failing syncs. Targeted faults (`corrupt`, `make_latent`) let tests hit one exact byte.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::disk::{parent, Disk, DiskError, FileId};
use crate::futures::yield_once;

pub const SECTOR_SIZE: u64 = 512;

/// Probabilities of random faults, per call.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultOptions {
    pub read_corrupt: f64,
    pub write_corrupt: f64,
    pub write_misdirect: f64,
    pub latent_on_write: f64,
    /// On crash, the chance that an unsynced write is torn rather than kept or lost whole.
    pub crash_tear: f64,
}

#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    pub reads_corrupted: u64,
    pub writes_corrupted: u64,
    pub writes_misdirected: u64,
    pub latent: u64,
    pub torn: u64,
    pub lost: u64,
    pub syncs: u64,
}

#[derive(Clone, Debug, Default)]
struct MemoryFile {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes); a truncate is (len, None).
    unsynced: Vec<(u64, Option<Vec<u8>>)>,
    latent: BTreeSet<u64>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, MemoryFile>,
    /// Names whose creation is durable (sync_dir of their directory after creation).
    names_durable: BTreeSet<String>,
    /// Names removed since the last sync_dir: they come back on crash.
    removed: BTreeMap<String, MemoryFile>,
    dirs: BTreeSet<String>,
    open: BTreeMap<FileId, String>,
    next_id: u32,
    prng: u64,
    bytes_used: u64,
    fail_next_sync: bool,
    /// Syncs that still succeed before every later one fails (`None`: no such fault).
    syncs_left: Option<u64>,
}

pub struct MemoryDisk {
    state: RefCell<State>,
    pub faults: RefCell<FaultOptions>,
    pub stats: RefCell<FaultStats>,
    /// Total bytes the disk holds; a write that would pass it fails with `NoSpace`.
    pub space_limit: RefCell<u64>,
    /// What `write_alignment` reports: 1 by default, 4096 to make appenders lay writes out as
    /// they do for O_DIRECT (the memory disk itself accepts any layout).
    pub write_alignment: std::cell::Cell<u64>,
}

impl MemoryDisk {
    pub fn new(seed: u64) -> MemoryDisk {
        MemoryDisk {
            state: RefCell::new(State {
                prng: seed ^ 0x9e37_79b9_7f4a_7c15,
                ..State::default()
            }),
            faults: RefCell::new(FaultOptions::default()),
            stats: RefCell::new(FaultStats::default()),
            space_limit: RefCell::new(u64::MAX),
            write_alignment: std::cell::Cell::new(1),
        }
    }

    /// Forgets every file (the disk is empty again), keeping the fault options and the
    /// random stream: frees what a finished simulation held.
    pub fn clear(&self) {
        let mut state = self.state.borrow_mut();
        let prng = state.prng;
        *state = State {
            prng,
            ..State::default()
        };
    }

    /// Loses what is not durable: every open handle becomes invalid.
    pub fn crash(&self) {
        let faults = *self.faults.borrow();
        let mut stats = self.stats.borrow_mut();
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.open.clear();
        let removed = std::mem::take(&mut state.removed);
        for (name, file) in removed {
            if state.names_durable.contains(&name) {
                state.files.insert(name, file);
            }
        }
        let names: Vec<String> = state.files.keys().cloned().collect();
        for name in names {
            if !state.names_durable.contains(&name) {
                state.files.remove(&name);
                continue;
            }
            let mut file = state.files.remove(&name).expect("listed");
            let mut bytes = file.durable.clone();
            for (offset, write) in std::mem::take(&mut file.unsynced) {
                let roll = next_unit(&mut state.prng);
                match write {
                    None => {
                        if roll < 0.5 {
                            bytes.resize(offset as usize, 0);
                        }
                    }
                    Some(data) => {
                        if roll < faults.crash_tear {
                            stats.torn += 1;
                            let sectors = (data.len() as u64).div_ceil(SECTOR_SIZE);
                            for sector in 0..sectors {
                                if next_unit(&mut state.prng) < 0.5 {
                                    let from = (sector * SECTOR_SIZE) as usize;
                                    let to = (from + SECTOR_SIZE as usize).min(data.len());
                                    put(&mut bytes, offset + from as u64, &data[from..to]);
                                }
                            }
                        } else if roll < faults.crash_tear + (1.0 - faults.crash_tear) / 2.0 {
                            stats.lost += 1;
                        } else {
                            put(&mut bytes, offset, &data);
                        }
                    }
                }
            }
            file.durable = bytes.clone();
            file.current = bytes;
            state.files.insert(name, file);
        }
        state.bytes_used = state.files.values().map(|f| f.current.len() as u64).sum();
    }

    /// Flips one bit of the stored byte at `offset` of `name` (durable and current).
    pub fn corrupt(&self, name: &str, offset: u64) {
        let mut state = self.state.borrow_mut();
        let file = state.files.get_mut(name).expect("file exists");
        for bytes in [&mut file.durable, &mut file.current] {
            if let Some(byte) = bytes.get_mut(offset as usize) {
                *byte ^= 0x10;
            }
        }
    }

    /// Makes every later read covering the sector of `offset` in `name` fail.
    pub fn make_latent(&self, name: &str, offset: u64) {
        let mut state = self.state.borrow_mut();
        let file = state.files.get_mut(name).expect("file exists");
        file.latent.insert(offset / SECTOR_SIZE);
    }

    /// The next `sync` fails (as fdatasync does after a lost dirty page).
    pub fn fail_next_sync(&self) {
        self.state.borrow_mut().fail_next_sync = true;
    }

    /// `count` more syncs succeed, then every sync fails until `heal` (a disk that dies).
    pub fn fail_syncs_after(&self, count: u64) {
        self.state.borrow_mut().syncs_left = Some(count);
    }

    pub fn heal(&self) {
        let mut state = self.state.borrow_mut();
        state.syncs_left = None;
        state.fail_next_sync = false;
    }

    /// The durable length of `name`, for tests.
    pub fn durable_len(&self, name: &str) -> Option<u64> {
        let state = self.state.borrow();
        state.files.get(name).map(|f| f.durable.len() as u64)
    }

    /// Handles open now (not closed and not invalidated by a crash).
    pub fn open_count(&self) -> usize {
        self.state.borrow().open.len()
    }

    /// The name behind an open handle (a crash or a close invalidates handles). A file removed
    /// while still open is gone for its handle too.
    fn name_of(state: &State, file: FileId) -> Result<String, DiskError> {
        let name = state.open.get(&file).cloned();
        name.filter(|n| state.files.contains_key(n))
            .ok_or(DiskError::Io(format!("file {} is closed", file.0)))
    }
}

fn next_u64(prng: &mut u64) -> u64 {
    // splitmix64
    *prng = prng.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *prng;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn next_unit(prng: &mut u64) -> f64 {
    (next_u64(prng) >> 11) as f64 / (1u64 << 53) as f64
}

fn put(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

impl Disk for MemoryDisk {
    async fn create_dir_all(&self, dir: &str) -> Result<(), DiskError> {
        let mut state = self.state.borrow_mut();
        let mut path = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            path = crate::disk::join(&path, part);
            state.dirs.insert(path.clone());
        }
        Ok(())
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let state = self.state.borrow();
        if !dir.is_empty() && !state.dirs.contains(dir) {
            return Err(DiskError::NotFound(dir.to_string()));
        }
        // Files and directories, as a real directory lists them.
        let names: BTreeSet<String> = state
            .files
            .keys()
            .chain(state.dirs.iter())
            .filter(|name| parent(name) == dir)
            .map(|name| name.rsplit('/').next().expect("a name").to_string())
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn open(&self, name: &str, create: bool) -> Result<FileId, DiskError> {
        let mut state = self.state.borrow_mut();
        if !state.files.contains_key(name) {
            if !create {
                return Err(DiskError::NotFound(name.to_string()));
            }
            let dir = parent(name);
            if !dir.is_empty() && !state.dirs.contains(dir) {
                return Err(DiskError::NotFound(dir.to_string()));
            }
            state.files.insert(name.to_string(), MemoryFile::default());
        }
        let id = FileId(state.next_id);
        state.next_id += 1;
        state.open.insert(id, name.to_string());
        Ok(id)
    }

    async fn close(&self, file: FileId) {
        self.state.borrow_mut().open.remove(&file);
    }

    async fn size(&self, file: FileId) -> Result<u64, DiskError> {
        let state = self.state.borrow();
        let name = Self::name_of(&state, file)?;
        Ok(state.files[&name].current.len() as u64)
    }

    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let read_corrupt = self.faults.borrow().read_corrupt;
        let mut state = self.state.borrow_mut();
        let name = Self::name_of(&state, file)?;
        let stored = &state.files[&name];
        let end = offset as usize + len;
        if end > stored.current.len() {
            return Err(DiskError::ShortRead { file, offset, len });
        }
        if len > 0 {
            let first = offset / SECTOR_SIZE;
            let last = (end as u64 - 1) / SECTOR_SIZE;
            if stored.latent.range(first..=last).next().is_some() {
                return Err(DiskError::ReadFailed { file, offset });
            }
        }
        let mut bytes = stored.current[offset as usize..end].to_vec();
        if len > 0 && next_unit(&mut state.prng) < read_corrupt {
            let bit = next_u64(&mut state.prng) % (len as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.borrow_mut().reads_corrupted += 1;
        }
        Ok(bytes)
    }

    async fn write_at(&self, file: FileId, offset: u64, bytes: Bytes) -> Result<(), DiskError> {
        yield_once().await;
        let faults = *self.faults.borrow();
        let space_limit = *self.space_limit.borrow();
        let mut stats = self.stats.borrow_mut();
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let name = Self::name_of(state, file)?;
        let current_len = state.files[&name].current.len() as u64;
        let growth = (offset + bytes.len() as u64).saturating_sub(current_len);
        if state.bytes_used + growth > space_limit {
            return Err(DiskError::NoSpace);
        }
        state.bytes_used += growth;
        let mut data = bytes.to_vec();
        let mut target = offset;
        if !data.is_empty() && next_unit(&mut state.prng) < faults.write_corrupt {
            let bit = next_u64(&mut state.prng) % (data.len() as u64 * 8);
            data[(bit / 8) as usize] ^= 1 << (bit % 8);
            stats.writes_corrupted += 1;
        }
        if next_unit(&mut state.prng) < faults.write_misdirect {
            let shift = (1 + next_u64(&mut state.prng) % 8) * SECTOR_SIZE;
            target = if next_u64(&mut state.prng).is_multiple_of(2) || offset < shift {
                offset + shift
            } else {
                offset - shift
            };
            stats.writes_misdirected += 1;
        }
        let stored = state.files.get_mut(&name).expect("open file exists");
        if !data.is_empty() && next_unit(&mut state.prng) < faults.latent_on_write {
            let sector = (target + next_u64(&mut state.prng) % data.len() as u64) / SECTOR_SIZE;
            stored.latent.insert(sector);
            stats.latent += 1;
        }
        put(&mut stored.current, target, &data);
        // A rewritten sector is readable again unless the fault above just marked it.
        stored.unsynced.push((target, Some(data)));
        Ok(())
    }

    async fn sync(&self, file: FileId) -> Result<(), DiskError> {
        yield_once().await;
        let mut state = self.state.borrow_mut();
        if state.fail_next_sync {
            state.fail_next_sync = false;
            return Err(DiskError::Io("injected fdatasync failure".to_string()));
        }
        match &mut state.syncs_left {
            Some(0) => return Err(DiskError::Io("injected fdatasync failure".to_string())),
            Some(left) => *left -= 1,
            None => {}
        }
        let name = Self::name_of(&state, file)?;
        self.stats.borrow_mut().syncs += 1;
        let stored = state.files.get_mut(&name).expect("open file exists");
        stored.durable = stored.current.clone();
        stored.unsynced.clear();
        Ok(())
    }

    async fn truncate(&self, file: FileId, len: u64) -> Result<(), DiskError> {
        let mut state = self.state.borrow_mut();
        let name = Self::name_of(&state, file)?;
        let stored = state.files.get_mut(&name).expect("open file exists");
        let before = stored.current.len() as u64;
        stored.current.resize(len as usize, 0);
        stored.unsynced.push((len, None));
        state.bytes_used = state.bytes_used - before + len;
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), DiskError> {
        let mut state = self.state.borrow_mut();
        let Some(file) = state.files.remove(name) else {
            return Err(DiskError::NotFound(name.to_string()));
        };
        state.bytes_used -= file.current.len() as u64;
        state.removed.insert(name.to_string(), file);
        Ok(())
    }

    async fn remove_dir(&self, dir: &str) -> Result<(), DiskError> {
        let mut state = self.state.borrow_mut();
        if !state.dirs.contains(dir) {
            return Err(DiskError::NotFound(dir.to_string()));
        }
        let prefix = format!("{dir}/");
        let occupied = state.files.keys().any(|name| name.starts_with(&prefix))
            || state.dirs.iter().any(|other| other.starts_with(&prefix));
        if occupied {
            return Err(DiskError::Io(format!("directory {dir} is not empty")));
        }
        state.dirs.remove(dir);
        Ok(())
    }

    fn write_alignment(&self) -> u64 {
        self.write_alignment.get()
    }

    async fn yield_now(&self) {
        yield_once().await;
    }

    async fn sync_dir(&self, dir: &str) -> Result<(), DiskError> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let created: Vec<String> = state
            .files
            .keys()
            .filter(|n| parent(n) == dir)
            .cloned()
            .collect();
        state.names_durable.extend(created);
        let removed: Vec<String> = state
            .removed
            .keys()
            .filter(|n| parent(n) == dir)
            .cloned()
            .collect();
        for name in removed {
            state.removed.remove(&name);
            state.names_durable.remove(&name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_disk::block_on;

    #[test]
    fn crash_keeps_synced_and_drops_unsynced_names() {
        let disk = MemoryDisk::new(1);
        block_on(async {
            disk.create_dir_all("d").await.unwrap();
            let a = disk.open("d/a", true).await.unwrap();
            disk.write_at(a, 0, Bytes::from_static(b"durable"))
                .await
                .unwrap();
            disk.sync(a).await.unwrap();
            disk.sync_dir("d").await.unwrap();
            let b = disk.open("d/b", true).await.unwrap();
            disk.write_at(b, 0, Bytes::from_static(b"gone"))
                .await
                .unwrap();
            disk.sync(b).await.unwrap();
            disk.crash();
            assert_eq!(disk.list("d").await.unwrap(), vec!["a".to_string()]);
            let a = disk.open("d/a", false).await.unwrap();
            assert_eq!(disk.read_at(a, 0, 7).await.unwrap(), b"durable");
        });
    }

    #[test]
    fn torn_writes_keep_a_subset_of_sectors() {
        let disk = MemoryDisk::new(7);
        disk.faults.borrow_mut().crash_tear = 1.0;
        block_on(async {
            let a = disk.open("a", true).await.unwrap();
            disk.sync_dir("").await.unwrap();
            disk.write_at(a, 0, Bytes::from(vec![1u8; 8 * 512]))
                .await
                .unwrap();
            disk.crash();
            let a = disk.open("a", false).await.unwrap();
            let len = disk.size(a).await.unwrap() as usize;
            let bytes = disk.read_at(a, 0, len).await.unwrap();
            let kept = bytes
                .chunks(512)
                .filter(|c| c.iter().all(|b| *b == 1))
                .count();
            assert!(kept < 8, "a torn write keeps only some sectors");
            assert_eq!(disk.stats.borrow().torn, 1);
        });
    }

    #[test]
    fn latent_sectors_fail_reads_and_space_limit_refuses_writes() {
        let disk = MemoryDisk::new(3);
        block_on(async {
            let a = disk.open("a", true).await.unwrap();
            disk.write_at(a, 0, Bytes::from(vec![5u8; 2048]))
                .await
                .unwrap();
            disk.make_latent("a", 1000);
            assert!(disk.read_at(a, 0, 512).await.is_ok());
            assert!(matches!(
                disk.read_at(a, 900, 200).await,
                Err(DiskError::ReadFailed { .. })
            ));
            *disk.space_limit.borrow_mut() = 3000;
            assert_eq!(
                disk.write_at(a, 2048, Bytes::from(vec![0u8; 2000])).await,
                Err(DiskError::NoSpace)
            );
            assert_eq!(
                disk.size(a).await.unwrap(),
                2048,
                "a refused write writes nothing"
            );
            disk.fail_next_sync();
            assert!(disk.sync(a).await.is_err());
        });
    }
}
