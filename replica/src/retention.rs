//! Deleting a partition's oldest segments (Iggy's DeleteSegments) as replicated ops.
//!
//! * **Deciding** (`segments_cut`, on the primary at prepare time): deleting the `count`
//!   oldest sealed segments keeps the log from the first offset of the segment after them.
//!   Only segments whose every op all replicas have applied count (`replicas_commit_min`), so
//!   no replica that is merely behind ever needs an op a DeleteSegments deleted from a peer
//!   (a purge, `PartitionOp::Purge`, cuts at the end whatever was applied); the cut is
//!   replicated as `RetentionCut { first_offset }` and moves the partition's first offset on
//!   every replica alike (polls start there).
//! * **Deleting** (`prunable_segments`, on every replica, on its ticks): whole sealed segments
//!   wholly below the applied first offset go, oldest first, but only those at or below both
//!   saved checkpoint files and the journal's base, so an open never needs them; the
//!   replica's log start then moves (`Replica::set_log_start`).

use std::cell::Cell;
use std::rc::Rc;

use galgo_storage::{Disk, SegmentInfo};

use crate::journal::SegmentJournal;
use crate::partition::machine::RetentionView;

/// Segments deleted by one pruning pass, at most (the rest wait for the next tick).
pub const PRUNE_SEGMENTS_MAX: usize = 16;

/// Where deleting the `count` oldest sealed segments of `segments` (oldest first) cuts, not
/// counting those wholly below `first_offset` (cut before, not yet deleted) and only over
/// segments whose ops are at or below `applied_everywhere`. See `RetentionView`.
pub fn segments_cut(
    segments: &[SegmentInfo],
    count: u32,
    first_offset: u64,
    applied_everywhere: Option<u64>,
) -> Result<Option<u64>, String> {
    let Some(applied_everywhere) = applied_everywhere else {
        return Err("not the partition's primary".to_string());
    };
    let live: Vec<&SegmentInfo> = segments
        .iter()
        .filter(|s| !(s.sealed && below(s, first_offset)))
        .collect();
    let sealed = live.iter().take_while(|s| s.sealed).count();
    let wanted = sealed.min(count as usize);
    if wanted == 0 {
        return Ok(None);
    }
    let allowed = live
        .iter()
        .take(wanted)
        .take_while(|s| s.op_end - 1 <= applied_everywhere)
        .count();
    if allowed == 0 {
        return Err(format!(
            "a replica has not applied the oldest segment yet (ops below {}; applied by all \
             through op {applied_everywhere}): try again",
            live[0].op_end
        ));
    }
    // The active segment is never counted, so the one after the last deleted exists.
    Ok(Some(live[allowed].offset_first))
}

/// The view a partition's primary decides DeleteSegments from: `segments_cut` over its log's
/// segments and `applied_everywhere` (`GroupHost::applied_everywhere`). It holds the journal
/// weakly, so a stopped group's files can close.
pub fn retention_view<D: Disk + 'static>(
    journal: &Rc<SegmentJournal<'static, D>>,
    applied_everywhere: Rc<Cell<Option<u64>>>,
) -> RetentionView {
    let journal = Rc::downgrade(journal);
    Rc::new(move |count, first_offset| {
        let journal = journal
            .upgrade()
            .ok_or_else(|| "the partition is stopping".to_string())?;
        segments_cut(
            &journal.log().segments(),
            count,
            first_offset,
            applied_everywhere.get(),
        )
    })
}

/// How many of the oldest segments of `segments` may be deleted now: sealed, with every
/// message below `first_offset`, and every op at or below `keep_op` (the op both checkpoint
/// files cover and the journal's base, whichever is lower).
pub fn prunable_segments(segments: &[SegmentInfo], first_offset: u64, keep_op: u64) -> usize {
    segments
        .iter()
        .take(PRUNE_SEGMENTS_MAX)
        .take_while(|s| s.sealed && below(s, first_offset) && s.op_end - 1 <= keep_op)
        .count()
}

/// Every message of `segment` is below `first_offset`, and it starts below it (one without
/// messages right at the cut holds ops after it).
fn below(segment: &SegmentInfo, first_offset: u64) -> bool {
    segment.offset_first < first_offset && segment.offset_end <= first_offset
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four segments of 10 ops and 100 offsets each, the last active.
    fn segments() -> Vec<SegmentInfo> {
        (0..4u64)
            .map(|i| SegmentInfo {
                base_op: 1 + i * 10,
                op_end: 11 + i * 10,
                offset_first: i * 100,
                offset_end: (i + 1) * 100,
                size: 1000,
                timestamp_last: 0,
                sealed: i < 3,
            })
            .collect()
    }

    #[test]
    fn a_cut_keeps_the_segment_after_the_deleted_ones_and_never_the_active_one() {
        let s = segments();
        assert_eq!(segments_cut(&s, 1, 0, Some(40)), Ok(Some(100)));
        assert_eq!(segments_cut(&s, 2, 0, Some(40)), Ok(Some(200)));
        assert_eq!(segments_cut(&s, 9, 0, Some(40)), Ok(Some(300)));
        // Segments already cut are not counted again.
        assert_eq!(segments_cut(&s, 1, 100, Some(40)), Ok(Some(200)));
        assert_eq!(segments_cut(&s, 1, 300, Some(40)), Ok(None));
    }

    #[test]
    fn a_cut_never_takes_ops_a_replica_has_not_applied() {
        let s = segments();
        // Replicas applied through op 15: only the first segment (ops 1..=10) may go.
        assert_eq!(segments_cut(&s, 3, 0, Some(15)), Ok(Some(100)));
        assert!(segments_cut(&s, 3, 0, Some(5)).is_err());
        assert!(segments_cut(&s, 3, 0, None).is_err());
    }

    #[test]
    fn pruning_stops_at_the_first_offset_the_checkpoint_and_the_base() {
        let s = segments();
        assert_eq!(prunable_segments(&s, 250, 40), 2);
        assert_eq!(prunable_segments(&s, 300, 40), 3);
        assert_eq!(prunable_segments(&s, 300, 19), 1);
        assert_eq!(prunable_segments(&s, 99, 40), 0);
        assert_eq!(
            prunable_segments(&s, 1000, 1000),
            3,
            "never the active segment"
        );
        assert_eq!(prunable_segments(&s, 0, 1000), 0, "nothing before any cut");
        // A segment without messages right at the cut holds ops after it: kept.
        let mut empty_at_cut = segments();
        empty_at_cut[1].offset_first = 100;
        empty_at_cut[1].offset_end = 100;
        assert_eq!(prunable_segments(&empty_at_cut, 100, 40), 1);
    }
}
