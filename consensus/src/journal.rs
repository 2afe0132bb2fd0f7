//! The in-memory view of one group's log: per op, the known header and whether the prepare is
//! durably held. The log is append-only and addressed by op (partition segments are the log;
//! ops never wrap), so the durable slot of op `n` is slot `n`.
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
    /// `entries[op]`; `entries[0]` is the root prepare. `entries.len() - 1` is the head op.
    entries: Vec<Entry>,
    ops_max: u64,
}

impl Journal {
    pub fn new(root: Header, ops_max: u64) -> Journal {
        assert_eq!(root.op, 0);
        Journal {
            entries: vec![Entry {
                header: Some(root),
                state: SlotState::Clean,
                faulty: false,
            }],
            ops_max,
        }
    }

    pub fn ops_max(&self) -> u64 {
        self.ops_max
    }

    pub fn head(&self) -> u64 {
        (self.entries.len() - 1) as u64
    }

    pub fn entry(&self, op: u64) -> &Entry {
        self.entries.get(op as usize).unwrap_or(&Entry::EMPTY)
    }

    pub fn entry_mut(&mut self, op: u64) -> &mut Entry {
        assert!(op <= self.head(), "op {op} beyond head {}", self.head());
        &mut self.entries[op as usize]
    }

    pub fn header(&self, op: u64) -> Option<&Header> {
        self.entries
            .get(op as usize)
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
    pub fn set_header(&mut self, header: Header) {
        assert!(header.op >= 1);
        self.extend_to(header.op);
        let entry = &mut self.entries[header.op as usize];
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
        let entry = &mut self.entries[op as usize];
        entry.header = None;
        if entry.state == SlotState::Clean {
            entry.state = SlotState::Missing;
        }
    }

    /// Drops every entry above `op`.
    pub fn truncate_after(&mut self, op: u64) {
        assert!(op <= self.head());
        self.entries.truncate(op as usize + 1);
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
    /// from the head (`head + 1` if the head itself is unknown). Bounded by `floor`.
    pub fn chain_floor(&self, floor: u64) -> u64 {
        let head = self.head();
        if self.header(head).is_none() {
            return head + 1;
        }
        let mut low = head;
        while low > floor {
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
}
