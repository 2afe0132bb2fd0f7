//! Protocol-aware recovery (PAR) of the journal at startup: a pure decision per slot from what
//! was read back from the redundant header zone and the prepare zone, then a pass that rebuilds
//! the in-memory journal against the durable view state.
//!
//! Write order is: prepare, then its redundant header, then `PrepareOk`. So a valid header means
//! the prepare was written before it and may have been acknowledged; a corrupt entry in the
//! middle of the log is *faulty* (repair from peers, never vote to truncate it), and only a
//! torn write at the very head, whose header write never completed, may be cut.

use crate::durable::{known_canonical, DurableState};
use crate::header::Header;
use crate::journal::{Entry, Journal, SlotState};

/// What reading one zone of one slot produced.
// Held briefly, one pair per slot during recovery: boxing the header would cost an allocation
// per slot for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRead {
    /// All zero: never written.
    Empty,
    /// Bytes present but the checksum (header or body) fails, or it is for another op.
    Corrupt,
    Valid(Header),
    /// A log that keeps its own redundant record (partition segments: the index entry) says a
    /// prepare was durable here, but it can be read neither from the prepare nor from that
    /// record. Only in the header position.
    Acknowledged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Never held anything: may be nacked.
    Nil,
    /// Header and prepare agree: durable and clean.
    Clean(Header),
    /// The prepare is intact and ours, but the redundant header zone does not hold its header
    /// (a header write torn, lost or never started): clean, and the header zone must be
    /// rewritten, or a later recovery could no longer tell this prepare is ours.
    Fix(Header),
    /// May have been prepared and acknowledged, and is lost: repair, never nack.
    Faulty(Option<Header>),
    /// A torn write at the head that was never acknowledged: truncate.
    Cut,
}

/// The decision table. `at_head` is true for the highest slot that holds any bytes.
///
/// It relies on the write order and on the fault model (as TigerBeetle's does): a disk fault
/// damages at most one of the two zones of a slot, and a torn write only hits writes in flight.
///
/// `canonical` tells whether a header is known canonical for the durable log view (prepared
/// in it, or named by its durable view headers).
pub fn decide(
    header: SlotRead,
    prepare: SlotRead,
    at_head: bool,
    canonical: impl Fn(&Header) -> bool,
) -> Decision {
    use SlotRead::*;
    match (header, prepare) {
        (_, Acknowledged) => unreachable!("Acknowledged is a header-position read"),
        // The prepare is intact: its own log already checked it against its record.
        (Acknowledged, Valid(p)) => Decision::Clean(p),
        // Durable once and maybe acknowledged, at the head too: repair, never nack or cut.
        (Acknowledged, Empty | Corrupt) => Decision::Faulty(None),
        (Empty, Empty) => Decision::Nil,
        (Valid(h), Valid(p)) if h.checksum == p.checksum => Decision::Clean(p),
        // Both intact but different: a crash between a rewrite's prepare and header writes, or
        // a lost write. A header's view does not order them (a later view change may pick an
        // op of an older view). If the log view names the prepare, the header is of an older
        // log view, so acknowledging it here is impossible: hold the prepare. Otherwise either
        // may have been acknowledged.
        (Valid(_), Valid(p)) if canonical(&p) => Decision::Fix(p),
        (Valid(h), Valid(_)) if canonical(&h) => Decision::Faulty(Some(h)),
        (Valid(_), Valid(_)) => Decision::Faulty(None),
        // The header is written only after the prepare: the prepare was lost or damaged after
        // it may have been acknowledged.
        (Valid(h), Empty | Corrupt) => Decision::Faulty(Some(h)),
        // The intact prepare is the newest write of the slot (its header write was torn, lost
        // or never started); it may not have been acknowledged, but holding it is safe.
        (Empty | Corrupt, Valid(p)) => Decision::Fix(p),
        // No header was ever completed here, so no PrepareOk was ever sent for this slot: a
        // torn or lost prepare of an op this replica never acknowledged.
        (Empty, Corrupt) | (Corrupt, Empty) => Decision::Nil,
        // Nothing intact: a torn pair at the head was never acknowledged; in the middle it may
        // have been (a damaged header over a damaged prepare).
        (Corrupt, Corrupt) => {
            if at_head {
                Decision::Cut
            } else {
                Decision::Faulty(None)
            }
        }
    }
}

/// Options that only simulator builds may turn on, to prove the checkers catch them.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoveryBugs {
    /// Treat the first faulty slot as the end of the log (no PAR).
    pub truncate_at_first_corrupt: bool,
    /// A segment journal cuts its log at every open from a checkpoint installed from a peer
    /// (`Bug::CutLogAtEveryInstalledOpen`).
    pub cut_log_at_every_installed_open: bool,
}

/// What recovery hands the replica.
#[derive(Clone, Debug)]
pub struct RecoveredJournal {
    pub journal: Journal,
    /// Ops whose prepare is intact but whose redundant header zone must be rewritten.
    pub header_fixes: Vec<u64>,
}

/// Rebuilds the journal from durable state and per-slot reads (`slots[i]` is op `i + 1`).
pub fn recover_journal(
    root: Header,
    ops_max: u64,
    durable: &DurableState,
    slots: &[(SlotRead, SlotRead)],
    bugs: RecoveryBugs,
) -> RecoveredJournal {
    assert_eq!(root.op, 0);
    recover_journal_from(root, ops_max, durable, slots, bugs)
}

/// `recover_journal` above `base`: the root, or a committed op durable here (the op of the
/// checkpoint the replica opens from), which becomes the journal's base. `slots[i]` is op
/// `base.op + 1 + i`; nothing below the base is read or held.
pub fn recover_journal_from(
    base: Header,
    ops_max: u64,
    durable: &DurableState,
    slots: &[(SlotRead, SlotRead)],
    bugs: RecoveryBugs,
) -> RecoveredJournal {
    assert!(base.op + slots.len() as u64 <= ops_max);
    let first_op = base.op + 1;
    let mut journal = Journal::starting_at(base, ops_max);
    let mut header_fixes = Vec::new();

    // Above the log view's head, every op of the log was prepared in the log view itself:
    // anything else there is from a log a view change truncated before the crash, as good as
    // never written.
    let view_head = durable
        .view_headers
        .last()
        .map(|header| header.op)
        .unwrap_or(0);
    let current = |op: u64, read: SlotRead| match read {
        SlotRead::Valid(header) if op > view_head && header.view != durable.log_view => {
            SlotRead::Empty
        }
        other => other,
    };
    let slots: Vec<(SlotRead, SlotRead)> = slots
        .iter()
        .enumerate()
        .map(|(index, (header, prepare))| {
            let op = first_op + index as u64;
            (current(op, *header), current(op, *prepare))
        })
        .collect();

    // The highest slot with any bytes at all is the only one a torn write may have hit.
    let last_written = slots
        .iter()
        .rposition(|(header, prepare)| *header != SlotRead::Empty || *prepare != SlotRead::Empty);
    let Some(last_written) = last_written else {
        install_view_headers(&mut journal, durable);
        return RecoveredJournal {
            journal,
            header_fixes,
        };
    };

    let mut decisions: Vec<Decision> = slots[..=last_written]
        .iter()
        .enumerate()
        .map(|(index, (header, prepare))| {
            let canonical = |candidate: &Header| {
                known_canonical(candidate, durable.log_view, &durable.view_headers)
            };
            decide(*header, *prepare, index == last_written, canonical)
        })
        .collect();
    while matches!(decisions.last(), Some(Decision::Nil) | Some(Decision::Cut)) {
        decisions.pop();
    }

    if bugs.truncate_at_first_corrupt {
        if let Some(first) = decisions
            .iter()
            .position(|d| matches!(d, Decision::Faulty(_)))
        {
            decisions.truncate(first);
        }
    }

    for (index, decision) in decisions.iter().enumerate() {
        let op = first_op + index as u64;
        journal.extend_to(op);
        let entry = journal.entry_mut(op);
        *entry = match decision {
            Decision::Nil | Decision::Cut => Entry::EMPTY,
            Decision::Clean(header) | Decision::Fix(header) => {
                assert_eq!(header.op, op);
                if matches!(decision, Decision::Fix(_)) {
                    header_fixes.push(op);
                }
                Entry {
                    header: Some(*header),
                    state: SlotState::Clean,
                    faulty: false,
                }
            }
            Decision::Faulty(header) => {
                assert!(header.is_none_or(|h| h.op == op));
                Entry {
                    header: *header,
                    state: SlotState::Missing,
                    faulty: true,
                }
            }
        };
    }
    install_view_headers(&mut journal, durable);
    // A fix is only wanted where the recovered entry still holds that prepare.
    header_fixes.retain(|op| journal.entry(*op).present());
    RecoveredJournal {
        journal,
        header_fixes,
    }
}

/// The durable view headers are canonical for the log view: they override what the slots say.
fn install_view_headers(journal: &mut Journal, durable: &DurableState) {
    for header in &durable.view_headers {
        if header.op <= journal.base() {
            continue; // Committed, and held as the base or below it.
        }
        journal.extend_to(header.op);
        let entry = journal.entry_mut(header.op);
        if entry.checksum() != Some(header.checksum) {
            // The slot holds something else. An intact, consistent other prepare proves this
            // one was never acknowledged here: its prepare write would have replaced it, and
            // losing that write as well as its header write is two damaged zones. A faulty
            // slot may have acknowledged it, so it stays faulty.
            *entry = Entry {
                header: Some(*header),
                state: SlotState::Missing,
                faulty: entry.faulty,
            };
        }
    }
    if let Some(head) = durable.view_headers.last() {
        if head.op > 0 && journal.head() > head.op {
            // Entries above the view head must have been prepared in the log view.
            let keep = (head.op + 1..=journal.head())
                .take_while(|op| {
                    journal
                        .entry(*op)
                        .header
                        .is_none_or(|h| h.view >= durable.log_view)
                })
                .count() as u64;
            journal.truncate_after(head.op + keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    fn header(op: u64, view: u32) -> Header {
        let mut header = Header::new(Command::Prepare, 1, 1);
        header.op = op;
        header.view = view;
        header.set_checksums(&[op as u8]);
        header
    }

    #[test]
    fn decision_table() {
        use SlotRead::*;
        let a = header(3, 1);
        let b = header(3, 2);
        let none = |_: &Header| false;
        assert_eq!(decide(Empty, Empty, false, none), Decision::Nil);
        assert_eq!(decide(Valid(a), Valid(a), false, none), Decision::Clean(a));
        assert_eq!(
            decide(Valid(a), Valid(b), true, none),
            Decision::Faulty(None)
        );
        assert_eq!(
            decide(Valid(b), Valid(a), false, none),
            Decision::Faulty(None)
        );
        // The durable view headers name the canonical one of the two.
        assert_eq!(
            decide(Valid(a), Valid(b), false, |h: &Header| h.checksum
                == b.checksum),
            Decision::Fix(b)
        );
        assert_eq!(
            decide(Valid(a), Valid(b), false, |h: &Header| h.checksum
                == a.checksum),
            Decision::Faulty(Some(a))
        );
        assert_eq!(
            decide(Valid(a), Corrupt, true, none),
            Decision::Faulty(Some(a))
        );
        assert_eq!(
            decide(Valid(a), Empty, false, none),
            Decision::Faulty(Some(a))
        );
        assert_eq!(decide(Empty, Valid(a), false, none), Decision::Fix(a));
        assert_eq!(decide(Corrupt, Valid(a), true, none), Decision::Fix(a));
        assert_eq!(decide(Corrupt, Valid(a), false, none), Decision::Fix(a));
        assert_eq!(decide(Empty, Corrupt, true, none), Decision::Nil);
        assert_eq!(decide(Empty, Corrupt, false, none), Decision::Nil);
        assert_eq!(decide(Corrupt, Empty, false, none), Decision::Nil);
        assert_eq!(decide(Corrupt, Corrupt, true, none), Decision::Cut);
        // A segment log's faulty entry is never cut, even at the head.
        assert_eq!(
            decide(Acknowledged, Corrupt, true, none),
            Decision::Faulty(None)
        );
        assert_eq!(
            decide(Acknowledged, Empty, false, none),
            Decision::Faulty(None)
        );
        assert_eq!(
            decide(Acknowledged, Valid(a), true, none),
            Decision::Clean(a)
        );
        assert_eq!(
            decide(Corrupt, Corrupt, false, none),
            Decision::Faulty(None)
        );
    }

    #[test]
    fn corrupt_middle_is_faulty_not_truncated() {
        let root = Header::root(1, 1);
        let slots = vec![
            (SlotRead::Valid(header(1, 0)), SlotRead::Valid(header(1, 0))),
            (SlotRead::Valid(header(2, 0)), SlotRead::Corrupt),
            (SlotRead::Valid(header(3, 0)), SlotRead::Valid(header(3, 0))),
        ];
        let durable = DurableState::initial();
        let journal = recover_journal(root, 16, &durable, &slots, RecoveryBugs::default()).journal;
        assert_eq!(journal.head(), 3);
        assert!(journal.entry(2).faulty);
        assert!(journal.entry(3).present());

        // The injected bug (no PAR) truncates at the corrupt slot: the test shows it differs.
        let buggy = recover_journal(
            root,
            16,
            &durable,
            &slots,
            RecoveryBugs {
                truncate_at_first_corrupt: true,
                ..RecoveryBugs::default()
            },
        )
        .journal;
        assert_eq!(buggy.head(), 1);
    }

    #[test]
    fn torn_head_is_cut() {
        let root = Header::root(1, 1);
        let slots = vec![
            (SlotRead::Valid(header(1, 0)), SlotRead::Valid(header(1, 0))),
            (SlotRead::Corrupt, SlotRead::Corrupt),
        ];
        let journal = recover_journal(
            root,
            16,
            &DurableState::initial(),
            &slots,
            RecoveryBugs::default(),
        )
        .journal;
        assert_eq!(journal.head(), 1);
    }

    #[test]
    fn intact_prepare_under_a_stale_header_is_kept_and_its_header_fixed() {
        let root = Header::root(1, 1);
        let durable = DurableState {
            view: 3,
            log_view: 3,
            commit_max: 0,
            view_headers: vec![header(1, 3)],
        };
        // Op 1: the view-3 prepare landed, its header write did not (the zone holds view 1's).
        // Op 2: the header zone is torn over an intact prepare of the log view.
        let slots = vec![
            (SlotRead::Valid(header(1, 1)), SlotRead::Valid(header(1, 3))),
            (SlotRead::Corrupt, SlotRead::Valid(header(2, 3))),
            (SlotRead::Valid(header(3, 3)), SlotRead::Valid(header(3, 3))),
        ];
        let recovered = recover_journal(root, 16, &durable, &slots, RecoveryBugs::default());
        assert_eq!(recovered.journal.head(), 3);
        assert!((1..=3).all(|op| recovered.journal.entry(op).present()));
        assert_eq!(recovered.header_fixes, vec![1, 2]);
    }

    #[test]
    fn stale_ops_above_view_head_are_dropped() {
        let root = Header::root(1, 1);
        let durable = DurableState {
            view: 2,
            log_view: 2,
            commit_max: 1,
            view_headers: vec![header(1, 0)],
        };
        let slots = vec![
            (SlotRead::Valid(header(1, 0)), SlotRead::Valid(header(1, 0))),
            (SlotRead::Valid(header(2, 1)), SlotRead::Valid(header(2, 1))),
        ];
        let journal = recover_journal(root, 16, &durable, &slots, RecoveryBugs::default()).journal;
        assert_eq!(journal.head(), 1);
        let slots = vec![
            (SlotRead::Valid(header(1, 0)), SlotRead::Valid(header(1, 0))),
            (SlotRead::Valid(header(2, 2)), SlotRead::Valid(header(2, 2))),
        ];
        let journal = recover_journal(root, 16, &durable, &slots, RecoveryBugs::default()).journal;
        assert_eq!(journal.head(), 2);
    }
}
