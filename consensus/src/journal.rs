//! The in-memory view of one group's log: per op, the known header and whether the prepare is
//! durably held. The log is append-only and addressed by op (partition segments are the log;
//! ops never wrap), so the durable slot of op `n` is slot `n`.
//!
//! Memory is bounded by compaction: `compact(op)` forgets every entry below `op`, which becomes
//! the journal's `base`. Only ops that are committed, applied and durable here are compacted
//! (the replica decides), so everything below the base is canonical and on disk: it reads as
//! `Entry::COMPACTED` (no header, never written again), headers for it are ignored, and the
//! hash chain counts as complete once it reaches the base.
//!
//! Per entry:
//! * `header`: the header this replica believes is canonical for the op (None: unknown).
//! * `state`: `Missing` (no durable prepare for `header`), `Writing` (write in flight), `Clean`.
//! * `faulty`: this replica may have prepared (and acknowledged) the op and lost it, so it must
//!   never vote to truncate it (protocol-aware recovery).

use crate::header::Header;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Missing,
    Writing,
    Clean,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub header: Option<Header>,
    pub state: SlotState,
    pub faulty: bool,
}

impl Entry {
    pub const EMPTY: Entry = Entry {
        header: None,
        state: SlotState::Missing,
        faulty: false,
    };

    /// Below the base: durable and committed, forgotten by the journal. Clean, so nothing
    /// writes it again; no header, so nothing repairs or acknowledges it.
    pub const COMPACTED: Entry = Entry {
        header: None,
        state: SlotState::Clean,
        faulty: false,
    };

    pub fn checksum(&self) -> Option<u128> {
        self.header.map(|header| header.checksum)
    }

    /// Holds a durable, intact prepare for its header.
    pub fn present(&self) -> bool {
        self.header.is_some() && self.state == SlotState::Clean && !self.faulty
    }
}

#[derive(Clone, Debug)]
pub struct Journal {
    /// `entries[op - base]`; `entries[0]` is the root prepare or, after compaction, the entry
    /// of the base op (its header known, its prepare durable). Never empty.
    entries: Vec<Entry>,
    /// The lowest op held: 0 until the first compaction.
    base: u64,
    ops_max: u64,
}

impl Journal {
    pub fn new(root: Header, ops_max: u64) -> Journal {
        assert_eq!(root.op, 0);
        Journal::starting_at(root, ops_max)
    }

    /// A journal whose base is `base`: the root, or a committed op durable here (a replica
    /// opened from a checkpoint of that op). Its entry is clean; nothing below it is held.
    pub fn starting_at(base: Header, ops_max: u64) -> Journal {
        assert!(base.op <= ops_max);
        Journal {
            entries: vec![Entry {
                header: Some(base),
                state: SlotState::Clean,
                faulty: false,
            }],
            base: base.op,
            ops_max,
        }
    }

    pub fn ops_max(&self) -> u64 {
        self.ops_max
    }

    pub fn head(&self) -> u64 {
        self.base + (self.entries.len() - 1) as u64
    }

    /// The lowest op whose entry is held (see the module comment).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// How many entries are held in memory (never zero: the base's is always held).
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    pub fn entry(&self, op: u64) -> &Entry {
        if op < self.base {
            return &Entry::COMPACTED;
        }
        self.entries
            .get((op - self.base) as usize)
            .unwrap_or(&Entry::EMPTY)
    }

    pub fn entry_mut(&mut self, op: u64) -> &mut Entry {
        assert!(op <= self.head(), "op {op} beyond head {}", self.head());
        assert!(op >= self.base, "op {op} below the base {}", self.base);
        &mut self.entries[(op - self.base) as usize]
    }

    pub fn header(&self, op: u64) -> Option<&Header> {
        if op < self.base {
            return None;
        }
        self.entries
            .get((op - self.base) as usize)
            .and_then(|entry| entry.header.as_ref())
    }

    /// Extends the log with empty entries up to `op` (a new head).
    pub fn extend_to(&mut self, op: u64) {
        assert!(
            op <= self.ops_max,
            "log full: op {op} > ops_max {}",
            self.ops_max
        );
        while self.head() < op {
            self.entries.push(Entry::EMPTY);
        }
    }

    /// Installs `header` as the canonical header for its op. A different header replaces the
    /// old one and the slot is no longer clean; the same header keeps the slot's state.
    /// Headers below the base are ignored: those ops are committed and held.
    pub fn set_header(&mut self, header: Header) {
        assert!(header.op >= 1);
        if header.op < self.base {
            return;
        }
        self.extend_to(header.op);
        let entry = self.entry_mut(header.op);
        if entry.checksum() == Some(header.checksum) {
            return;
        }
        entry.header = Some(header);
        if entry.state == SlotState::Clean {
            entry.state = SlotState::Missing;
        }
        // An in-flight write of the old header finishes later; its completion sees the
        // checksum changed and re-writes.
    }

    /// Forgets a header that turned out not to be canonical (a broken hash chain).
    pub fn forget_header(&mut self, op: u64) {
        assert!(op >= 1 && op <= self.head());
        assert!(op > self.base, "the base op {} is committed", self.base);
        let entry = self.entry_mut(op);
        entry.header = None;
        if entry.state == SlotState::Clean {
            entry.state = SlotState::Missing;
        }
    }

    /// Drops every entry above `op`.
    /// Committed ops are never truncated, so `op` is at or above the base.
    pub fn truncate_after(&mut self, op: u64) {
        assert!(op <= self.head());
        assert!(
            op >= self.base,
            "truncation at {op} below the base {}",
            self.base
        );
        self.entries.truncate((op - self.base) as usize + 1);
    }

    /// Forgets every entry below `op`, which becomes the base. The caller guarantees that
    /// every op in `base..=op` is committed, applied and durable here, and that `op`'s
    /// header is hash-chained to the entries above it.
    pub fn compact(&mut self, op: u64) {
        assert!(op >= self.base && op <= self.head());
        let entry = self.entry(op);
        assert!(
            entry.present(),
            "compaction to op {op}, which is not durable"
        );
        self.entries.drain(..(op - self.base) as usize);
        self.base = op;
        assert_eq!(self.entries[0].header.map(|h| h.op), Some(op));
    }

    /// Forgets every entry below `op` as `compact` does, for ops this replica lost (a damaged
    /// record) that no peer holds any more (all dropped them below their checkpoints): they
    /// are committed and applied, and nobody can repair them. `op`'s header must be known;
    /// its entry becomes the base, clean, though the record behind it may be unreadable (a
    /// peer's read of it then fails its checksum and is not answered).
    pub fn give_up_to(&mut self, op: u64) {
        assert!(op >= self.base && op <= self.head());
        assert!(self.header(op).is_some(), "the new base {op} has no header");
        self.entries.drain(..(op - self.base) as usize);
        self.base = op;
        self.entries[0].state = SlotState::Clean;
        self.entries[0].faulty = false;
        assert_eq!(self.entries[0].header.map(|h| h.op), Some(op));
    }

    /// True when the header at `op` is linked to the one at `op + 1` (or `op` is the head).
    pub fn chained_to_next(&self, op: u64) -> bool {
        if op >= self.head() {
            return true;
        }
        match (self.header(op), self.header(op + 1)) {
            (Some(header), Some(next)) => next.parent == header.checksum,
            _ => false,
        }
    }

    /// Lowest op `low` such that every header in `low..=head` is known and hash-chained down
    /// from the head (`head + 1` if the head itself is unknown). Bounded by `floor` and by the
    /// base: a chain that reaches the base is complete.
    pub fn chain_floor(&self, floor: u64) -> u64 {
        let head = self.head();
        if self.header(head).is_none() {
            return head + 1;
        }
        let mut low = head;
        while low > floor.max(self.base) {
            let below = low - 1;
            match self.header(below) {
                Some(header) if self.header(low).expect("known").parent == header.checksum => {
                    low = below
                }
                _ => break,
            }
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Command, Header};

    fn chain(count: u64) -> Vec<Header> {
        let mut headers = vec![Header::root(1, 1)];
        for op in 1..=count {
            let mut header = Header::new(Command::Prepare, 1, 1);
            header.op = op;
            header.parent = headers.last().unwrap().checksum;
            header.set_checksums(&op.to_le_bytes());
            headers.push(header);
        }
        headers
    }

    #[test]
    fn chain_floor_stops_at_a_break() {
        let headers = chain(6);
        let mut journal = Journal::new(headers[0], 100);
        for header in &headers[1..] {
            journal.set_header(*header);
        }
        assert_eq!(journal.chain_floor(0), 0);
        journal.forget_header(3);
        assert_eq!(journal.chain_floor(0), 4);
        assert!(!journal.chained_to_next(2));
        journal.set_header(headers[3]);
        assert_eq!(journal.chain_floor(2), 2);
        journal.truncate_after(4);
        assert_eq!(journal.head(), 4);
    }

    fn clean_journal(count: u64) -> (Journal, Vec<Header>) {
        let headers = chain(count);
        let mut journal = Journal::new(headers[0], 100);
        for header in &headers[1..] {
            journal.set_header(*header);
            journal.entry_mut(header.op).state = SlotState::Clean;
        }
        (journal, headers)
    }

    #[test]
    fn compaction_forgets_the_entries_below_the_base() {
        let (mut journal, headers) = clean_journal(8);
        journal.compact(5);
        assert_eq!((journal.base(), journal.head(), journal.held()), (5, 8, 4));
        assert_eq!(journal.entry(4), &Entry::COMPACTED);
        assert_eq!(journal.header(4), None);
        assert_eq!(journal.header(5), Some(&headers[5]));
        assert!(journal.entry(5).present());
        // A chain that reaches the base is complete.
        assert_eq!(journal.chain_floor(0), 5);
        // Headers of compacted ops are ignored; ops above extend as before.
        let mut other = headers[3];
        other.checksum ^= 1;
        journal.set_header(other);
        assert_eq!(journal.entry(3), &Entry::COMPACTED);
        journal.truncate_after(6);
        assert_eq!(journal.head(), 6);
        journal.set_header(headers[7]);
        assert_eq!(journal.head(), 7);
        assert_eq!(journal.chain_floor(0), 5);
    }

    #[test]
    #[should_panic(expected = "below the base")]
    fn a_truncation_below_the_base_is_refused() {
        let (mut journal, _) = clean_journal(8);
        journal.compact(5);
        journal.truncate_after(4);
    }

    #[test]
    #[should_panic(expected = "not durable")]
    fn compaction_to_an_op_not_durable_is_refused() {
        let (mut journal, _) = clean_journal(8);
        journal.entry_mut(6).state = SlotState::Missing;
        journal.compact(6);
    }
}
