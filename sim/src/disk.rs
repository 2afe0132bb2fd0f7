//! The simulated disk of one replica: a superblock zone (4 copies), a redundant header zone
//! (one slot per op) and a prepare zone (one slot per op). Writes and reads complete after a
//! drawn latency. Faults: torn writes on crash, write corruption, misdirected writes (landing
//! on another slot of the same zone), lost writes, and latent sector errors that corrupt every
//! later read of a slot. A fault atlas confines damage so that every op is faulty on at most
//! `replication quorum − 1` replicas; superblock copies only suffer crash tears.

use std::collections::{BTreeMap, BTreeSet};

use galgo_consensus::checksum::checksum;
use galgo_consensus::prng::Prng;

use crate::options::StorageOptions;

pub const SUPERBLOCK_COPIES: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Zone {
    Header,
    Prepare,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteTarget {
    Slot { zone: Zone, op: u64 },
    Superblock,
}

#[derive(Clone, Debug)]
pub struct PendingWrite {
    pub io: u64,
    pub target: WriteTarget,
    pub bytes: Vec<u8>,
    pub ready_at: u64,
}

/// One header slot read back: its op and bytes.
pub type HeaderSlot = (u64, Vec<u8>);

#[derive(Clone, Debug)]
pub struct PendingRead {
    pub io: u64,
    pub op: u64,
    pub ready_at: u64,
    /// Headers of `header_ops_from..=op` (read from the header zone), not a prepare.
    pub header_ops_from: Option<u64>,
}

/// Which replicas may suffer faults on which op: a deterministic function of the seed.
#[derive(Clone, Debug)]
pub struct FaultAtlas {
    seed: u64,
    replica_count: u8,
    faulty_max: u8,
}

impl FaultAtlas {
    pub fn new(seed: u64, replica_count: u8, replication_quorum: u8) -> FaultAtlas {
        FaultAtlas {
            seed,
            replica_count,
            faulty_max: replication_quorum - 1,
        }
    }

    /// True if `replica` may have faults at `op`.
    pub fn allows(&self, replica: u8, op: u64) -> bool {
        if self.faulty_max == 0 {
            return false;
        }
        // Choose `faulty_max` consecutive replicas starting at a per-op offset.
        let start = (checksum(&[self.seed.to_le_bytes(), op.to_le_bytes()].concat())
            % u128::from(self.replica_count)) as u8;
        (0..self.faulty_max).any(|k| (start + k) % self.replica_count == replica)
    }
}

#[derive(Default, Clone, Debug)]
pub struct DiskStats {
    pub writes: u64,
    pub reads: u64,
    pub torn: u64,
    pub corrupted: u64,
    pub misdirected: u64,
    pub lost: u64,
    pub latent: u64,
}

pub struct Disk {
    replica: u8,
    options: StorageOptions,
    atlas: FaultAtlas,
    prng: Prng,
    headers: Vec<Option<Vec<u8>>>,
    prepares: Vec<Option<Vec<u8>>>,
    superblock: [Option<Vec<u8>>; SUPERBLOCK_COPIES],
    latent: BTreeSet<(Zone, u64)>,
    /// The one zone of each op that faults have damaged: a fault never hits both zones of a
    /// slot (the recovery decision table relies on it, as TigerBeetle's does).
    damaged: BTreeMap<u64, Zone>,
    pub writes: Vec<PendingWrite>,
    pub reads: Vec<PendingRead>,
    pub faults_enabled: bool,
    pub stats: DiskStats,
}

impl Disk {
    pub fn new(replica: u8, options: StorageOptions, atlas: FaultAtlas, seed: u64) -> Disk {
        Disk {
            replica,
            options,
            atlas,
            prng: Prng::from_seed(seed),
            headers: Vec::new(),
            prepares: Vec::new(),
            superblock: Default::default(),
            latent: BTreeSet::new(),
            damaged: BTreeMap::new(),
            writes: Vec::new(),
            reads: Vec::new(),
            faults_enabled: true,
            stats: DiskStats::default(),
        }
    }

    /// A write's latency in ticks, drawn as the slot disk's own (1 once faults stop).
    pub fn write_latency(&mut self) -> u64 {
        self.latency(
            self.options.write_latency_min,
            self.options.write_latency_mean,
        )
    }

    pub fn read_latency(&mut self) -> u64 {
        self.latency(
            self.options.read_latency_min,
            self.options.read_latency_mean,
        )
    }

    /// Whether the atlas lets faults damage this replica's copy of `op` now.
    pub fn allows_fault(&self, op: u64) -> bool {
        self.faults_enabled && self.atlas.allows(self.replica, op)
    }

    fn latency(&mut self, min: u64, mean: f64) -> u64 {
        if !self.faults_enabled {
            return 1;
        }
        min.max(self.prng.exponential(mean)).max(1)
    }

    pub fn submit_write(&mut self, now: u64, io: u64, target: WriteTarget, bytes: Vec<u8>) {
        if let WriteTarget::Slot { .. } = target {
            // Two writes in flight to one sector may land in either order on a real disk; the
            // replica must never issue them.
            assert!(
                self.writes.iter().all(|w| w.target != target),
                "replica {} issued a second write to {target:?} while one is in flight",
                self.replica
            );
        }
        let ready_at = now
            + self.latency(
                self.options.write_latency_min,
                self.options.write_latency_mean,
            );
        self.writes.push(PendingWrite {
            io,
            target,
            bytes,
            ready_at,
        });
    }

    pub fn submit_read(&mut self, now: u64, io: u64, op: u64) {
        self.push_read(now, io, op, None);
    }

    /// A read of the header slots of `op_min..=op_max`; `complete_header_reads` returns it.
    pub fn submit_read_headers(&mut self, now: u64, io: u64, op_min: u64, op_max: u64) {
        assert!(op_min <= op_max);
        self.push_read(now, io, op_max, Some(op_min));
    }

    fn push_read(&mut self, now: u64, io: u64, op: u64, header_ops_from: Option<u64>) {
        let ready_at = now
            + self.latency(
                self.options.read_latency_min,
                self.options.read_latency_mean,
            );
        self.reads.push(PendingRead {
            io,
            op,
            ready_at,
            header_ops_from,
        });
    }

    fn zone_mut(&mut self, zone: Zone) -> &mut Vec<Option<Vec<u8>>> {
        match zone {
            Zone::Header => &mut self.headers,
            Zone::Prepare => &mut self.prepares,
        }
    }

    fn store(&mut self, zone: Zone, op: u64, bytes: Vec<u8>) {
        let slots = self.zone_mut(zone);
        let index = op as usize;
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(bytes);
    }

    fn may_fault(&self, zone: Zone, op: u64) -> bool {
        self.faults_enabled
            && self.atlas.allows(self.replica, op)
            && self.damaged.get(&op).is_none_or(|z| *z == zone)
    }

    fn mark_damaged(&mut self, zone: Zone, op: u64) {
        assert!(self.damaged.get(&op).is_none_or(|z| *z == zone));
        self.damaged.insert(op, zone);
    }

    fn corrupt(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.is_empty() {
            return vec![0xff];
        }
        let at = self.prng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << self.prng.below(8);
        bytes
    }

    /// Completes the writes that are due, applying faults. Returns their io ids.
    pub fn complete_writes(&mut self, now: u64) -> Vec<u64> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.writes.len() {
            if self.writes[index].ready_at > now {
                index += 1;
                continue;
            }
            let write = self.writes.remove(index);
            self.stats.writes += 1;
            done.push(write.io);
            match write.target {
                WriteTarget::Superblock => {
                    for copy in self.superblock.iter_mut() {
                        *copy = Some(write.bytes.clone());
                    }
                }
                WriteTarget::Slot { zone, op } => self.land_slot_write(zone, op, write.bytes),
            }
        }
        done
    }

    fn land_slot_write(&mut self, zone: Zone, op: u64, bytes: Vec<u8>) {
        if self.may_fault(zone, op) {
            if self.prng.chance(self.options.lost_write) {
                self.stats.lost += 1;
                self.mark_damaged(zone, op);
                return;
            }
            if self.prng.chance(self.options.misdirect) {
                // Lands on a nearby slot of the same zone, if the atlas allows damage there too.
                let offset = self.prng.range_inclusive(1, 3);
                let other = if self.prng.chance(0.5) {
                    op + offset
                } else {
                    op.saturating_sub(offset).max(1)
                };
                if other != op && self.may_fault(zone, other) {
                    self.stats.misdirected += 1;
                    self.mark_damaged(zone, op);
                    self.mark_damaged(zone, other);
                    self.store(zone, other, bytes);
                    return;
                }
            }
            if self.prng.chance(self.options.write_fault) {
                self.stats.corrupted += 1;
                self.mark_damaged(zone, op);
                let bytes = self.corrupt(bytes);
                self.store(zone, op, bytes);
                return;
            }
        }
        self.store(zone, op, bytes);
    }

    /// Completes due reads: `(io, op, bytes)`; bytes may be corrupted by latent errors.
    pub fn complete_reads(&mut self, now: u64) -> Vec<(u64, u64, Option<Vec<u8>>)> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.reads.len() {
            if self.reads[index].ready_at > now || self.reads[index].header_ops_from.is_some() {
                index += 1;
                continue;
            }
            let read = self.reads.remove(index);
            self.stats.reads += 1;
            let bytes = self.read_slot(Zone::Prepare, read.op);
            done.push((read.io, read.op, bytes));
        }
        done
    }

    /// Header reads whose latency has passed: each io with the header slots of its ops read
    /// from `op_max` down, stopping at the first slot never written (`None` for it).
    pub fn complete_header_reads(&mut self, now: u64) -> Vec<(u64, Vec<HeaderSlot>)> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.reads.len() {
            let read = &self.reads[index];
            if read.ready_at > now || read.header_ops_from.is_none() {
                index += 1;
                continue;
            }
            let read = self.reads.remove(index);
            let op_min = read.header_ops_from.expect("a header read");
            let mut slots = Vec::new();
            for op in (op_min..=read.op).rev() {
                self.stats.reads += 1;
                match self.read_slot(Zone::Header, op) {
                    Some(bytes) => slots.push((op, bytes)),
                    None => break,
                }
            }
            done.push((read.io, slots));
        }
        done
    }

    /// Reads a slot now (used at runtime and on recovery).
    pub fn read_slot(&mut self, zone: Zone, op: u64) -> Option<Vec<u8>> {
        let written = match zone {
            Zone::Header => self.headers.get(op as usize).is_some_and(Option::is_some),
            Zone::Prepare => self.prepares.get(op as usize).is_some_and(Option::is_some),
        };
        if written
            && self.may_fault(zone, op)
            && !self.latent.contains(&(zone, op))
            && self.prng.chance(self.options.read_fault)
        {
            self.mark_damaged(zone, op);
            self.latent.insert((zone, op));
            self.stats.latent += 1;
        }
        let slots = match zone {
            Zone::Header => &self.headers,
            Zone::Prepare => &self.prepares,
        };
        let bytes = slots.get(op as usize).cloned().flatten()?;
        if self.latent.contains(&(zone, op)) {
            // Deterministic damage, seeded by the pristine bytes: retries do not heal it.
            let mut damaged = bytes;
            let at = (checksum(&damaged) % damaged.len().max(1) as u128) as usize;
            if let Some(byte) = damaged.get_mut(at) {
                *byte ^= 0x5a;
            }
            return Some(damaged);
        }
        Some(bytes)
    }

    pub fn slot_count(&self) -> u64 {
        self.headers.len().max(self.prepares.len()) as u64
    }

    /// The newest intact superblock copy (copies suffer crash tears only).
    pub fn read_superblock(&self) -> Vec<Option<Vec<u8>>> {
        self.superblock.to_vec()
    }

    /// Writes every superblock copy at once (formatting, and repairing copies on open).
    pub fn write_superblock_now(&mut self, bytes: Vec<u8>) {
        for copy in self.superblock.iter_mut() {
            *copy = Some(bytes.clone());
        }
    }

    /// A crash: writes in flight tear (a fresh slot, or where the atlas allows), land, or vanish.
    pub fn crash(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        for write in writes {
            match write.target {
                WriteTarget::Superblock => {
                    // Copies are written in order: some landed, one may be torn.
                    let landed = self.prng.below(SUPERBLOCK_COPIES as u64 + 1) as usize;
                    for copy in 0..landed {
                        self.superblock[copy] = Some(write.bytes.clone());
                    }
                    if landed < SUPERBLOCK_COPIES && self.prng.chance(self.options.crash_tear) {
                        let torn = self.corrupt(write.bytes.clone());
                        self.superblock[landed] = Some(torn);
                        self.stats.torn += 1;
                    }
                }
                WriteTarget::Slot { zone, op } => {
                    let fresh = match zone {
                        Zone::Header => self.headers.get(op as usize).is_none_or(Option::is_none),
                        Zone::Prepare => self.prepares.get(op as usize).is_none_or(Option::is_none),
                    };
                    // A torn write of a fresh slot was never acknowledged; tearing a rewrite of
                    // an acknowledged slot is damage, and the atlas must allow it.
                    let allowed = fresh || self.may_fault(zone, op);
                    if allowed && self.prng.chance(self.options.crash_tear) {
                        if !fresh {
                            self.mark_damaged(zone, op);
                        }
                        let torn = self.corrupt(write.bytes);
                        self.store(zone, op, torn);
                        self.stats.torn += 1;
                    } else if self.prng.chance(0.5) {
                        self.store(zone, op, write.bytes);
                    }
                }
            }
        }
        self.reads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    #[test]
    fn atlas_limits_faulty_replicas_per_op() {
        let atlas = FaultAtlas::new(7, 3, 2);
        for op in 0..500 {
            let faulty = (0..3).filter(|r| atlas.allows(*r, op)).count();
            assert_eq!(faulty, 1);
        }
        let atlas = FaultAtlas::new(7, 1, 1);
        assert!(!atlas.allows(0, 5));
    }

    #[test]
    #[should_panic(expected = "second write")]
    fn two_writes_in_flight_to_one_slot_are_refused() {
        let options = Options::swarm(1).storage;
        let mut disk = Disk::new(0, options, FaultAtlas::new(3, 3, 2), 9);
        let target = WriteTarget::Slot {
            zone: Zone::Header,
            op: 4,
        };
        disk.submit_write(0, 1, target, vec![1]);
        disk.submit_write(0, 2, target, vec![2]);
    }

    #[test]
    fn latent_errors_are_sticky_and_caught_by_checksums() {
        let mut options = Options::swarm(1).storage;
        options.read_fault = 1.0;
        let atlas = FaultAtlas::new(3, 2, 2);
        let replica = (0..2).find(|r| atlas.allows(*r, 4)).unwrap();
        let mut disk = Disk::new(replica, options, atlas, 9);
        let message = galgo_consensus::Message::new(
            galgo_consensus::Header::new(galgo_consensus::Command::Prepare, 1, 1),
            vec![1, 2, 3],
        );
        disk.store(Zone::Prepare, 4, message.encode());
        let first = disk.read_slot(Zone::Prepare, 4).unwrap();
        let second = disk.read_slot(Zone::Prepare, 4).unwrap();
        assert_eq!(first, second, "a latent error is deterministic");
        assert!(
            galgo_consensus::Message::decode(&first).is_err(),
            "checksums catch it"
        );
    }
}
