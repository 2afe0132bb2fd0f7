//! DoViewChange contents and the new primary's choice of the canonical log (VSR with
//! TigerBeetle's refinements): the DVCs with the highest `log_view` are canonical; uncommitted
//! ops are truncated only when a nack quorum proves no replication quorum can hold them; an op
//! that is neither provably absent nor held intact somewhere makes the primary wait.

use std::collections::BTreeMap;

use crate::header::{Header, HEADER_SIZE};

/// One op as reported in a DVC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DvcEntry {
    pub op: u64,
    /// The sender's header for the op, if it knows one.
    pub header: Option<Header>,
    /// The sender durably holds an intact prepare for `header`.
    pub present: bool,
    /// The sender never acknowledged any prepare at this op in its log view other than
    /// (possibly) `header` — it is not faulty there.
    pub nack: bool,
    /// The sender knows `header` is canonical for its log view: prepared in that view, or
    /// installed from that view's start (its durable view headers), or its head.
    pub canonical: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dvc {
    pub replica: u8,
    pub log_view: u32,
    /// The sender's head op.
    pub op: u64,
    /// The head its log view started with: every op above it in its log was prepared in the
    /// log view itself.
    pub log_view_head: u64,
    pub commit_min: u64,
    /// Ascending, contiguous, ending at `op`.
    pub entries: Vec<DvcEntry>,
}

/// Most entries a DVC carries (bitsets are u128).
pub const DVC_ENTRIES_MAX: usize = 128;

impl Dvc {
    pub fn entry(&self, op: u64) -> Option<&DvcEntry> {
        let first = self.entries.first()?.op;
        if op < first || op > self.op {
            return None;
        }
        self.entries.get((op - first) as usize)
    }

    /// Headers of this DVC that are canonical for its log view: those the sender marked
    /// canonical and those hash-chained down from one of them. Anything else may be stale from
    /// an older view. A header of a view above the log view is never trusted.
    pub fn chained_headers(&self) -> Vec<Header> {
        let mut trusted = Vec::new();
        let mut expected_parent: Option<u128> = None;
        for entry in self.entries.iter().rev() {
            let Some(header) = entry.header else {
                expected_parent = None;
                continue;
            };
            let canonical = header.view <= self.log_view
                && (entry.canonical || expected_parent == Some(header.checksum));
            if canonical {
                expected_parent = Some(header.parent);
                trusted.push(header);
            } else {
                expected_parent = None;
            }
        }
        trusted.reverse();
        trusted
    }

    /// Body bytes: one 256-byte header per entry (all zero for unknown), ascending by op; the
    /// present, nack and canonical bits go in the message header.
    pub fn encode_body(&self) -> (Vec<u8>, DvcBits) {
        assert!(self.entries.len() <= DVC_ENTRIES_MAX);
        let mut body = Vec::with_capacity(self.entries.len() * HEADER_SIZE);
        let mut bits = DvcBits::default();
        for (index, entry) in self.entries.iter().enumerate() {
            match entry.header {
                Some(header) => body.extend_from_slice(&header.encode()),
                None => body.extend_from_slice(&[0u8; HEADER_SIZE]),
            }
            assert!(entry.header.is_some() || !(entry.present || entry.canonical));
            assert!(!(entry.present && entry.nack));
            if entry.present {
                bits.present |= 1 << index;
            }
            if entry.nack {
                bits.nack |= 1 << index;
            }
            if entry.canonical {
                bits.canonical |= 1 << index;
            }
        }
        (body, bits)
    }

    /// Rebuilds a DVC from a received message; `None` if the body is inconsistent.
    pub fn decode(message_header: &Header, body: &[u8]) -> Option<Dvc> {
        if !body.len().is_multiple_of(HEADER_SIZE) || body.len() / HEADER_SIZE > DVC_ENTRIES_MAX {
            return None;
        }
        let count = (body.len() / HEADER_SIZE) as u64;
        if count > message_header.op + 1 {
            return None;
        }
        let first = message_header.op + 1 - count;
        let mut entries = Vec::with_capacity(count as usize);
        for index in 0..count {
            let op = first + index;
            let raw: &[u8; HEADER_SIZE] = body[(index as usize) * HEADER_SIZE..][..HEADER_SIZE]
                .try_into()
                .ok()?;
            let header = if raw.iter().all(|b| *b == 0) {
                None
            } else {
                let header = Header::decode(raw).ok()?;
                if header.op != op {
                    return None;
                }
                Some(header)
            };
            let present = message_header.present_bitset & (1 << index) != 0;
            let nack = message_header.nack_bitset & (1 << index) != 0;
            let canonical = message_header.canonical_bitset & (1 << index) != 0;
            if (present || canonical) && header.is_none() || present && nack {
                return None;
            }
            entries.push(DvcEntry {
                op,
                header,
                present,
                nack,
                canonical,
            });
        }
        Some(Dvc {
            replica: message_header.replica,
            log_view: message_header.log_view,
            op: message_header.op,
            log_view_head: u64::try_from(message_header.context).ok()?,
            commit_min: message_header.commit,
            entries,
        })
    }
}

/// The per-entry bits of a DVC, carried in the message header (bit i = entry i).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DvcBits {
    pub present: u128,
    pub nack: u128,
    pub canonical: u128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogChoice {
    /// The canonical log: `headers` cover `(commit_max, head]` at least, ascending; `sources`
    /// lists, per uncommitted op, the replicas holding it intact.
    Ready {
        head: u64,
        commit_max: u64,
        headers: Vec<Header>,
        sources: BTreeMap<u64, u8>,
        timestamp_max: u64,
    },
    /// An op is neither held intact nor nacked by a quorum: wait for more DVCs.
    Awaiting { op: u64 },
    /// Every replica answered and an op still cannot be decided.
    Deadlocked { op: u64 },
}

pub struct ChoiceParams {
    pub replica_count: u8,
    pub nack_quorum: u8,
    pub pipeline_max: u64,
}

/// Chooses the canonical log from a view-change quorum of DVCs.
pub fn choose_log(dvcs: &[Dvc], params: &ChoiceParams) -> LogChoice {
    assert!(!dvcs.is_empty());
    let log_view = dvcs
        .iter()
        .map(|dvc| dvc.log_view)
        .max()
        .expect("non-empty");
    let canonical: Vec<&Dvc> = dvcs.iter().filter(|dvc| dvc.log_view == log_view).collect();

    // Canonical headers: chained headers of the canonical DVCs. They must agree.
    let mut headers: BTreeMap<u64, Header> = BTreeMap::new();
    for dvc in &canonical {
        for header in dvc.chained_headers() {
            if let Some(existing) = headers.insert(header.op, header) {
                assert_eq!(
                    existing.checksum, header.checksum,
                    "canonical DVCs disagree at op {} (log_view {log_view})",
                    header.op
                );
            }
        }
    }
    let head = canonical.iter().map(|dvc| dvc.op).max().expect("non-empty");
    let head_header = headers.get(&head).copied();

    // Every op at or below this bound is committed somewhere.
    let mut commit_max = dvcs
        .iter()
        .map(|dvc| dvc.commit_min)
        .max()
        .expect("non-empty");
    if let Some(head_header) = head_header {
        commit_max = commit_max.max(head_header.commit);
    }
    commit_max = commit_max
        .max(head.saturating_sub(params.pipeline_max))
        .min(head);

    // Commits happen in op order, so an op that a nack quorum proves never committed means no
    // op above it committed either: truncate from the lowest such op.
    // Above a canonical DVC's log-view head, every op of the canonical log was prepared in
    // the log view itself.
    let log_view_head = canonical
        .iter()
        .map(|dvc| dvc.log_view_head)
        .min()
        .expect("non-empty");
    let mut head_new = head;
    for op in commit_max + 1..=head {
        let canonical_view = match headers.get(&op) {
            Some(header) => Some(header.view),
            None if op > log_view_head => Some(log_view),
            None => None,
        };
        let nacks = dvcs
            .iter()
            .filter(|dvc| nacked(dvc, op, headers.get(&op), canonical_view))
            .count() as u8;
        if nacks >= params.nack_quorum {
            head_new = op - 1;
            break;
        }
    }

    // Every remaining uncommitted op needs its canonical header and at least one intact copy.
    let mut sources = BTreeMap::new();
    for op in commit_max + 1..=head_new {
        let Some(canonical_header) = headers.get(&op) else {
            return undecided(dvcs, params, op);
        };
        let mut holders = 0u8;
        for dvc in dvcs {
            if let Some(entry) = dvc.entry(op) {
                if entry.present
                    && entry.header.map(|h| h.checksum) == Some(canonical_header.checksum)
                {
                    holders |= 1 << dvc.replica;
                }
            }
        }
        if holders == 0 {
            return undecided(dvcs, params, op);
        }
        sources.insert(op, holders);
    }

    // The new head must be known, or there is nothing to chain new prepares to.
    if head_new > 0 && !headers.contains_key(&head_new) {
        return undecided(dvcs, params, head_new);
    }
    let timestamp_max = headers.values().map(|h| h.timestamp).max().unwrap_or(0);
    let chosen: Vec<Header> = headers
        .range(..=head_new)
        .map(|(_, header)| *header)
        .collect();
    LogChoice::Ready {
        head: head_new,
        commit_max,
        headers: chosen,
        sources,
        timestamp_max,
    }
}

fn undecided(dvcs: &[Dvc], params: &ChoiceParams, op: u64) -> LogChoice {
    if dvcs.len() >= params.replica_count as usize {
        LogChoice::Deadlocked { op }
    } else {
        LogChoice::Awaiting { op }
    }
}

/// Whether `dvc` proves it never acknowledged `canonical` at its op (with no canonical header
/// known, whether it proves it never acknowledged anything there). `canonical_view` is the
/// view the canonical prepare was made in, when known.
fn nacked(dvc: &Dvc, op: u64, canonical: Option<&Header>, canonical_view: Option<u32>) -> bool {
    if op > dvc.op {
        // Its log is shorter: it never prepared the op in its log view.
        return true;
    }
    if canonical_view.is_some_and(|view| dvc.log_view < view) {
        // A replica acknowledges a prepare only in a log view at or above the prepare's view.
        return true;
    }
    match dvc.entry(op) {
        None => false,
        Some(entry) => {
            if entry.present {
                // It holds *some* prepare intact: a nack only if it is a different one.
                match canonical {
                    Some(canonical) => entry.header.map(|h| h.checksum) != Some(canonical.checksum),
                    None => false,
                }
            } else {
                entry.nack
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    fn chain(ops: u64, view: u32, salt: u8) -> Vec<Header> {
        let mut headers = vec![Header::root(1, 1)];
        for op in 1..=ops {
            let mut header = Header::new(Command::Prepare, 1, 1);
            header.op = op;
            header.view = view;
            header.commit = op.saturating_sub(3);
            header.parent = headers.last().unwrap().checksum;
            header.set_checksums(&[salt, op as u8]);
            headers.push(header);
        }
        headers
    }

    fn dvc(
        replica: u8,
        log_view: u32,
        headers: &[Header],
        head: u64,
        commit_min: u64,
        state: &[(u64, bool, bool)],
    ) -> Dvc {
        let first = head.saturating_sub(8).max(1);
        let entries = (first..=head)
            .map(|op| {
                let (present, nack) = state
                    .iter()
                    .find(|(o, _, _)| *o == op)
                    .map(|(_, p, n)| (*p, *n))
                    .unwrap_or((true, false));
                let header = if present || !nack {
                    Some(headers[op as usize])
                } else {
                    None
                };
                DvcEntry {
                    op,
                    header,
                    present,
                    nack,
                    canonical: header.is_some_and(|h| op == head || h.view == log_view),
                }
            })
            .collect();
        Dvc {
            replica,
            log_view,
            op: head,
            log_view_head: 0,
            commit_min,
            entries,
        }
    }

    fn params() -> ChoiceParams {
        ChoiceParams {
            replica_count: 3,
            nack_quorum: 2,
            pipeline_max: 8,
        }
    }

    #[test]
    fn keeps_ops_held_by_any_quorum_member() {
        let headers = chain(10, 1, 0);
        // Replica 0 has up to 10, replica 1 only up to 8 (shorter log: nacks 9 and 10).
        let dvcs = vec![
            dvc(0, 1, &headers, 10, 7, &[]),
            dvc(1, 1, &headers, 8, 7, &[]),
        ];
        match choose_log(&dvcs, &params()) {
            LogChoice::Ready {
                head, commit_max, ..
            } => {
                // Two nacks? Only replica 1 nacks 9 and 10; replica 0 holds them: keep.
                assert_eq!(head, 10);
                assert_eq!(commit_max, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_corrupt_copy_on_old_primary_is_truncated_by_nack_quorum() {
        let headers = chain(10, 1, 0);
        // The old primary (replica 0) holds op 10 but its copy is corrupt (faulty: no nack);
        // replicas 1 and 2 never got op 10 (shorter logs): a nack quorum, so truncate.
        let old_primary = dvc(0, 1, &headers, 10, 8, &[(10, false, false)]);
        let one = dvc(1, 1, &headers, 9, 8, &[]);
        let two = dvc(2, 1, &headers, 9, 8, &[]);
        match choose_log(&[old_primary.clone(), one.clone()], &params()) {
            LogChoice::Awaiting { op: 10 } => {}
            other => panic!("with one nack it must wait: {other:?}"),
        }
        match choose_log(&[old_primary, one, two], &params()) {
            LogChoice::Ready { head, .. } => assert_eq!(head, 9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn faulty_entries_do_not_count_as_nacks() {
        let headers = chain(10, 1, 0);
        // Replica 1 lost op 10 (faulty, no nack), replica 2 is shorter. One nack only.
        let dvcs = vec![
            dvc(1, 1, &headers, 10, 8, &[(10, false, false)]),
            dvc(2, 1, &headers, 9, 8, &[]),
        ];
        assert_eq!(choose_log(&dvcs, &params()), LogChoice::Awaiting { op: 10 });
    }

    #[test]
    fn highest_log_view_wins_and_older_different_headers_nack() {
        let old = chain(10, 1, 0);
        let mut new = chain(8, 1, 0);
        // In view 2, ops 9..10 were replaced by different prepares.
        let tail = chain(10, 2, 9);
        for op in 9..=10u64 {
            let mut header = tail[op as usize];
            header.parent = new.last().unwrap().checksum;
            header.set_checksums(&[7, op as u8]);
            new.push(header);
        }
        let dvcs = vec![dvc(0, 1, &old, 10, 8, &[]), dvc(1, 2, &new, 10, 8, &[])];
        match choose_log(&dvcs, &params()) {
            LogChoice::Ready { head, headers, .. } => {
                assert_eq!(head, 10);
                assert_eq!(headers.last().unwrap().checksum, new[10].checksum);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncates_above_the_lowest_nacked_op() {
        let headers = chain(10, 1, 0);
        // Op 8 is held by nobody intact and nacked by a quorum; op 9 is present on one replica
        // but cannot have committed without op 8.
        let zero = dvc(0, 1, &headers, 10, 7, &[(8, false, false)]);
        let one = dvc(1, 1, &headers, 9, 7, &[(8, false, true)]);
        let two = dvc(2, 1, &headers, 7, 7, &[]);
        match choose_log(&[zero, one, two], &params()) {
            LogChoice::Ready { head, .. } => assert_eq!(head, 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dvc_body_round_trip() {
        let headers = chain(5, 1, 0);
        let original = dvc(2, 1, &headers, 5, 3, &[(4, false, true), (5, false, false)]);
        let (body, bits) = original.encode_body();
        let mut message_header = Header::new(Command::DoViewChange, 1, 1);
        message_header.replica = 2;
        message_header.log_view = 1;
        message_header.op = 5;
        message_header.commit = 3;
        message_header.present_bitset = bits.present;
        message_header.nack_bitset = bits.nack;
        message_header.canonical_bitset = bits.canonical;
        message_header.context = u128::from(original.log_view_head);
        assert_eq!(Dvc::decode(&message_header, &body), Some(original));
        // A canonical mark on a blank entry is inconsistent.
        message_header.canonical_bitset |= 1 << 3;
        assert_eq!(Dvc::decode(&message_header, &body), None);
    }

    #[test]
    fn marked_old_view_header_below_a_nacked_gap_becomes_the_head() {
        // One replica: op 8 was installed from an older view (marked canonical from the durable
        // view headers), op 9 was torn (nacked), op 10 is the head of the log view.
        let old = chain(8, 1, 0);
        let mut headers = old.clone();
        let newer = chain(10, 2, 5);
        headers.push(newer[9]);
        headers.push(newer[10]);
        let mut single = dvc(0, 2, &headers, 10, 6, &[(9, false, true)]);
        let params = ChoiceParams {
            replica_count: 1,
            nack_quorum: 1,
            pipeline_max: 8,
        };
        // Without the mark the old-view op 8 is not trusted: the view change cannot finish.
        assert_eq!(
            choose_log(std::slice::from_ref(&single), &params),
            LogChoice::Deadlocked { op: 8 }
        );
        single
            .entries
            .iter_mut()
            .for_each(|e| e.canonical |= e.op <= 8);
        match choose_log(&[single], &params) {
            LogChoice::Ready { head, headers, .. } => {
                assert_eq!(head, 8);
                assert_eq!(headers.last().unwrap().checksum, old[8].checksum);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replica_behind_the_log_view_nacks_ops_prepared_in_it() {
        // Replica 0 (log view 9, which started at head 3) lost op 4 entirely; replica 1 stayed
        // in log view 8 with a longer log. Op 4 was prepared in view 9, which replica 1 never
        // joined, so it never acknowledged it: with two replicas that is a nack quorum.
        let old = chain(6, 8, 0);
        let mut lagging = dvc(1, 8, &old, 6, 3, &[]);
        lagging.entries.iter_mut().for_each(|e| e.canonical = true);
        let mut primary = dvc(0, 9, &old, 4, 3, &[(4, false, false)]);
        primary.log_view_head = 3;
        primary.entries.retain(|e| e.op <= 4);
        primary.entries.last_mut().unwrap().header = None;
        // Its durable view headers (ops up to 3) are canonical for log view 9.
        primary
            .entries
            .iter_mut()
            .for_each(|e| e.canonical = e.op <= 3);
        let params = ChoiceParams {
            replica_count: 2,
            nack_quorum: 1,
            pipeline_max: 8,
        };
        match choose_log(&[primary.clone(), lagging.clone()], &params) {
            LogChoice::Ready { head, .. } => assert_eq!(head, 3),
            other => panic!("{other:?}"),
        }
        // Had log view 9 started above op 4, op 4 could be replica 1's prepare: wait.
        primary.log_view_head = 4;
        assert_eq!(
            choose_log(&[primary, lagging], &params),
            LogChoice::Deadlocked { op: 4 }
        );
    }

    #[test]
    fn headers_of_a_view_above_the_log_view_are_never_trusted() {
        let headers = chain(6, 3, 0);
        let mut stale = dvc(0, 2, &headers, 6, 2, &[]);
        stale.entries.iter_mut().for_each(|e| e.canonical = true);
        assert!(stale.chained_headers().is_empty());
    }
}
