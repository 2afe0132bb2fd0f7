//! Tests of `PartitionLog` on the in-memory disk: appends, lookups, segment rolls, group
//! commit, and recovery from torn tails, damaged records and index entries, full disks and
//! failed syncs.

use std::future::Future;

use bytes::Bytes;

use crate::file_disk::block_on;
use crate::format::{EntryMeta, FILE_HEADER_SIZE, INDEX_ENTRY_SIZE, RECORD_HEADER_SIZE};
use crate::log::{
    remove_log_dir, retention_count, LogConfig, PartitionLog, Retention, SegmentInfo,
};
use crate::memory_disk::MemoryDisk;
use crate::segment::{idx_name, log_name};
use crate::{Disk, DiskError, StorageError};

const DIR: &str = "p";

fn config() -> LogConfig {
    LogConfig {
        segment_size: 4096,
        index_interval_bytes: 512,
        ..LogConfig::new(DIR)
    }
}

/// Op `op` (from 1) carries `op % 3` messages, timestamps 10 µs apart, 100 + op bytes.
fn meta(op: u64) -> EntryMeta {
    let offset_first: u64 = (1..op).map(|o| o % 3).sum();
    EntryMeta {
        op,
        checksum: u128::from(op) * 0x1_0000_0001,
        offset_first,
        message_count: (op % 3) as u32,
        timestamp: 1_000 + op * 10,
    }
}

fn payload(op: u64) -> Bytes {
    Bytes::from(vec![op as u8; 100 + op as usize])
}

/// A memory disk on which appenders lay their writes out as for O_DIRECT (the last partial
/// block written again by the next group), as they do on a real disk; on 512-byte blocks, so
/// that the tests' 4 KiB segments have blocks past their first.
fn aligned_disk(seed: u64) -> MemoryDisk {
    let disk = MemoryDisk::new(seed);
    disk.write_alignment.set(512);
    disk
}

async fn append_range(log: &PartitionLog<'_, MemoryDisk>, ops: std::ops::Range<u64>) {
    for op in ops {
        log.append(meta(op), payload(op)).await.unwrap();
    }
}

async fn open(
    disk: &MemoryDisk,
) -> (
    PartitionLog<'_, MemoryDisk>,
    crate::recovery::RecoveryReport,
) {
    PartitionLog::open(disk, config(), 1, 0).await.unwrap()
}

#[test]
fn appends_read_back_across_segments_and_reopen() {
    let disk = aligned_disk(1);
    block_on(async {
        let (log, report) = open(&disk).await;
        assert!(report.faulty.is_empty());
        append_range(&log, 1..101).await;
        assert!(log.segments().len() > 3, "4 KiB segments roll");
        for op in 1..101 {
            let record = log.read(op).await.unwrap();
            assert_eq!((record.meta, record.payload), (meta(op), payload(op)));
        }
        drop(log);
        disk.crash();
        let (log, report) = open(&disk).await;
        assert_eq!(report, Default::default());
        assert_eq!((log.first_op(), log.op_end()), (1, 101));
        assert_eq!(log.read(77).await.unwrap().meta, meta(77));
        assert!(matches!(
            log.read(101).await,
            Err(StorageError::NotFound(101))
        ));
        log.append(meta(101), payload(101)).await.unwrap();
        assert!(matches!(
            log.append(meta(103), payload(103)).await,
            Err(StorageError::Invalid(_))
        ));
    });
}

#[test]
fn offsets_and_timestamps_are_found_in_every_segment() {
    let disk = aligned_disk(2);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..201).await;
        for op in 1..201 {
            let m = meta(op);
            for offset in m.offset_first..m.offset_first + u64::from(m.message_count) {
                assert_eq!(
                    log.find_offset(offset).await.unwrap(),
                    Some(op),
                    "offset {offset}"
                );
            }
            assert_eq!(log.find_timestamp(m.timestamp).await.unwrap(), Some(op));
            assert_eq!(log.find_timestamp(m.timestamp - 5).await.unwrap(), Some(op));
        }
        let end = log.offset_end().unwrap();
        assert_eq!(log.find_offset(end).await.unwrap(), None);
        assert_eq!(log.find_timestamp(u64::MAX).await.unwrap(), None);
        assert_eq!(log.find_timestamp(0).await.unwrap(), Some(1));
    });
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let disk = aligned_disk(3);
    block_on(async {
        let (log, _) = open(&disk).await;
        let syncs_before = disk.stats.borrow().syncs;
        let appends = (1..65u64).map(|op| log.append(meta(op), payload(op)));
        let results = join_all(appends).await;
        assert!(results.iter().all(Result::is_ok));
        let syncs = disk.stats.borrow().syncs - syncs_before;
        // Segment creation syncs too; without group commit this would be 128 or more.
        assert!(syncs < 64, "{syncs} syncs for 64 appends");
        assert_eq!(log.op_end(), 65);
    });
}

/// Polls every future to completion on one thread (they are not `Send`).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut handles: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (handle, output) in handles.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match handle.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("completed")).collect()
}

#[test]
fn a_torn_tail_is_cut_and_durable_records_stay() {
    for seed in 0..32 {
        let disk = aligned_disk(seed);
        disk.faults.borrow_mut().crash_tear = 1.0;
        block_on(async {
            let (log, _) = open(&disk).await;
            append_range(&log, 1..11).await;
            let active = log.segments().last().copied().unwrap();
            // A record of op 11 written but never synced, then the crash tears it.
            let file = disk
                .open(&log_name(DIR, active.base_op), false)
                .await
                .unwrap();
            let size = disk.size(file).await.unwrap();
            let record = crate::format::encode_record(&meta(11), &payload(11));
            disk.write_at(file, size, record).await.unwrap();
            drop(log);
            disk.crash();
            let (log, report) = open(&disk).await;
            assert!(report.faulty.is_empty(), "seed {seed}: {report:?}");
            // Either the torn record survived whole (kept, its entry fixed) or it is cut.
            assert!(log.op_end() == 11 || (log.op_end() == 12 && report.fixed == vec![11]));
            for op in 1..log.op_end() {
                assert_eq!(log.read(op).await.unwrap().meta, meta(op));
            }
            log.append(meta(log.op_end()), payload(log.op_end()))
                .await
                .unwrap();
        });
    }
}

#[test]
fn a_damaged_record_is_faulty_never_cut_and_repair_restores_it() {
    let disk = aligned_disk(4);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..11).await;
        let entry = log.entry(5).await.unwrap();
        let base = log.segments().last().unwrap().base_op;
        assert!(base <= 5, "op 5 is in the active segment");
        disk.corrupt(
            &log_name(DIR, base),
            entry.position + RECORD_HEADER_SIZE + 3,
        );
        assert_eq!(log.read(5).await, Err(StorageError::Faulty(5)));
        drop(log);
        let (log, report) = open(&disk).await;
        assert_eq!(report.faulty.len(), 1);
        assert_eq!(
            (report.faulty[0].op, report.faulty[0].meta),
            (5, Some(meta(5)))
        );
        assert_eq!(log.op_end(), 11, "nothing after the damaged record is lost");
        assert_eq!(log.read(6).await.unwrap().meta, meta(6));
        log.repair(meta(5), payload(5)).await.unwrap();
        assert_eq!(log.read(5).await.unwrap().payload, payload(5).to_vec());
        assert!(log.faulty().is_empty());
    });
}

#[test]
fn a_damaged_index_entry_is_fixed_from_its_record() {
    let disk = aligned_disk(5);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..11).await;
        let base = log.segments().last().unwrap().base_op;
        let at = FILE_HEADER_SIZE + (6 - base) * INDEX_ENTRY_SIZE + 10;
        disk.corrupt(&idx_name(DIR, base), at);
        drop(log);
        let (log, report) = open(&disk).await;
        assert_eq!(report.fixed, vec![6]);
        assert!(report.faulty.is_empty());
        assert_eq!(log.read(6).await.unwrap().meta, meta(6));
        drop(log);
        let (_, report) = open(&disk).await;
        assert_eq!(report, Default::default(), "the fix is durable");
    });
}

/// Damages both the index entry and the record of `op` (in the active segment).
async fn lose_entry_and_record(disk: &MemoryDisk, log: &PartitionLog<'_, MemoryDisk>, op: u64) {
    let base = log.segments().last().unwrap().base_op;
    let entry = log.entry(op).await.unwrap();
    let entry_at = FILE_HEADER_SIZE + (op - base) * INDEX_ENTRY_SIZE;
    disk.corrupt(&idx_name(DIR, base), entry_at);
    disk.corrupt(&log_name(DIR, base), entry.position + 8);
}

#[test]
fn both_copies_damaged_in_the_middle_is_faulty_with_unknown_meta() {
    let disk = aligned_disk(6);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..11).await;
        lose_entry_and_record(&disk, &log, 7).await;
        drop(log);
        let (log, report) = open(&disk).await;
        assert_eq!(report.faulty.len(), 1);
        assert_eq!(report.faulty[0].op, 7);
        assert_eq!(report.faulty[0].meta, None);
        assert_eq!(report.faulty[0].length as usize, payload(7).len());
        assert_eq!(log.read(7).await, Err(StorageError::Faulty(7)));
        assert_eq!(log.read(8).await.unwrap().meta, meta(8));
        let mut misfit = meta(7);
        misfit.offset_first += 1;
        assert!(matches!(
            log.repair(misfit, payload(7)).await,
            Err(StorageError::Invalid(_))
        ));
        log.repair(meta(7), payload(7)).await.unwrap();
        assert_eq!(log.read(7).await.unwrap().meta, meta(7));
    });
}

#[test]
fn random_read_corruption_is_always_caught() {
    let disk = aligned_disk(7);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..31).await;
        disk.faults.borrow_mut().read_corrupt = 1.0;
        for op in 1..31 {
            assert_eq!(log.read(op).await, Err(StorageError::Faulty(op)));
        }
        disk.faults.borrow_mut().read_corrupt = 0.0;
        disk.make_latent(
            &log_name(DIR, log.segments()[0].base_op),
            FILE_HEADER_SIZE + 10,
        );
        assert_eq!(log.read(1).await, Err(StorageError::Faulty(1)));
    });
}

#[test]
fn a_full_disk_fails_the_append_and_keeps_what_is_durable() {
    let disk = aligned_disk(8);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..6).await;
        let used: u64 = ["00000000000000000001.log", "00000000000000000001.idx"]
            .iter()
            .map(|n| disk.durable_len(&crate::disk::join(DIR, n)).unwrap())
            .sum();
        *disk.space_limit.borrow_mut() = used + 50;
        assert_eq!(
            log.append(meta(6), payload(6)).await,
            Err(StorageError::Disk(DiskError::NoSpace))
        );
        assert_eq!(log.op_end(), 6);
        assert_eq!(log.read(5).await.unwrap().meta, meta(5));
        *disk.space_limit.borrow_mut() = u64::MAX;
        log.append(meta(6), payload(6)).await.unwrap();
        drop(log);
        let (log, report) = open(&disk).await;
        assert_eq!(report, Default::default());
        assert_eq!(log.op_end(), 7);
    });
}

#[test]
fn a_failed_sync_stops_the_log() {
    let disk = aligned_disk(9);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..3).await;
        disk.fail_next_sync();
        assert!(matches!(
            log.append(meta(3), payload(3)).await,
            Err(StorageError::SyncFailed(_))
        ));
        assert_eq!(
            log.append(meta(3), payload(3)).await,
            Err(StorageError::Poisoned)
        );
        assert_eq!(log.read(2).await.unwrap().meta, meta(2), "reads go on");
    });
}

#[test]
fn truncation_removes_the_suffix_across_segments() {
    let disk = aligned_disk(10);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..101).await;
        let segments_before = log.segments().len();
        log.truncate_after(40).await.unwrap();
        assert_eq!(log.op_end(), 41);
        assert!(log.segments().len() < segments_before);
        assert_eq!(log.offset_end(), Some(meta(41).offset_first));
        assert!(matches!(
            log.read(41).await,
            Err(StorageError::NotFound(41))
        ));
        append_range(&log, 41..60).await;
        drop(log);
        let (log, report) = open(&disk).await;
        assert_eq!(report, Default::default());
        assert_eq!(log.op_end(), 60);
        assert_eq!(log.read(59).await.unwrap().meta, meta(59));
    });
}

#[test]
fn a_reset_log_starts_empty_at_its_new_first_op_also_after_reopen() {
    let disk = aligned_disk(30);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..60).await;
        assert!(log.segments().len() > 1);
        // Op 80 is where a checkpoint of op 79 leaves the log: ops 60..80 were never here.
        log.reset_to(80, meta(80).offset_first).await.unwrap();
        assert_eq!((log.first_op(), log.op_end()), (80, 80));
        assert_eq!(log.offset_end(), Some(meta(80).offset_first));
        assert_eq!(log.first_offset(), meta(80).offset_first);
        assert!(matches!(
            log.read(59).await,
            Err(StorageError::NotFound(59))
        ));
        append_range(&log, 80..90).await;
        drop(log);
        let (log, report) = open(&disk).await;
        assert_eq!(report, Default::default());
        assert_eq!((log.first_op(), log.op_end()), (80, 90));
        assert_eq!(log.read(85).await.unwrap().meta, meta(85));
        let names = disk.list(DIR).await.unwrap();
        assert!(names
            .iter()
            .all(|name| !name.starts_with("00000000000000000001")));
        // A reset at the op the active segment already starts at replaces that segment too.
        log.reset_to(80, meta(80).offset_first).await.unwrap();
        assert_eq!((log.first_op(), log.op_end()), (80, 80));
    });
}

#[test]
fn retention_deletes_whole_sealed_segments_oldest_first() {
    let disk = aligned_disk(11);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..101).await;
        let segments = log.segments();
        let count = retention_count(
            &segments,
            Retention {
                max_age_us: None,
                max_bytes: Some(8192),
            },
            0,
        );
        assert!(count > 0 && count < segments.len());
        for _ in 0..count {
            log.delete_oldest_segment().await.unwrap().unwrap();
        }
        assert!(log.segments().iter().map(|s| s.size).sum::<u64>() <= 8192);
        let first = log.first_op();
        assert!(matches!(
            log.read(first - 1).await,
            Err(StorageError::NotFound(_))
        ));
        assert_eq!(log.find_offset(0).await.unwrap(), Some(first));
        drop(log);
        let (log, _) = open(&disk).await;
        assert_eq!(log.first_op(), first);
    });
}

#[test]
fn a_closed_log_takes_no_more_work_and_its_directory_can_be_removed() {
    let disk = aligned_disk(12);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..41).await;
        assert!(log.segments().len() > 1);
        disk.create_dir_all("other").await.unwrap();
        let other = disk.open("other/keep", true).await.unwrap();
        disk.write_at(other, 0, Bytes::from_static(b"kept"))
            .await
            .unwrap();
        assert!(disk.open_count() > 1);
        log.close().await.unwrap();
        assert_eq!(disk.open_count(), 1, "every segment file is closed");
        assert!(matches!(
            log.append(meta(41), payload(41)).await,
            Err(StorageError::Poisoned)
        ));
        assert!(log.read(7).await.is_err());
        remove_log_dir(&disk, DIR).await.unwrap();
        assert!(matches!(disk.list(DIR).await, Err(DiskError::NotFound(_))));
        // Idempotent, and nothing outside the directory is touched.
        remove_log_dir(&disk, DIR).await.unwrap();
        assert_eq!(disk.list("other").await.unwrap(), vec!["keep".to_string()]);
        // A crash after the removal does not bring the log back: the directory is empty.
        disk.crash();
        let (log, _) = open(&disk).await;
        assert_eq!((log.first_op(), log.op_end()), (1, 1));
    });
}

#[test]
fn retention_by_age_and_size_never_takes_the_active_segment() {
    let info = |base_op, timestamp_last, sealed| SegmentInfo {
        base_op,
        op_end: base_op + 10,
        offset_first: base_op * 2,
        offset_end: base_op * 2 + 20,
        size: 100,
        timestamp_last,
        sealed,
    };
    let segments = [info(1, 10, true), info(11, 20, true), info(21, 30, false)];
    let age = |max_age_us| Retention {
        max_age_us: Some(max_age_us),
        max_bytes: None,
    };
    assert_eq!(retention_count(&segments, age(5), 26), 2);
    assert_eq!(retention_count(&segments, age(5), 17), 1);
    assert_eq!(retention_count(&segments, age(100), 1000), 2);
    let size = |max| Retention {
        max_age_us: None,
        max_bytes: Some(max),
    };
    assert_eq!(retention_count(&segments, size(250), 0), 1);
    assert_eq!(retention_count(&segments, size(0), 0), 2);
    assert_eq!(
        retention_count(&segments, Retention::default(), u64::MAX),
        0
    );
}

#[test]
fn a_new_segment_whose_sealing_group_was_cut_is_discarded() {
    let disk = aligned_disk(12);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..6).await;
        drop(log);
        // The group that would have sealed the segment created the next one (for op 9), then
        // the process died before ops 6..9 reached the old segment.
        let next = crate::segment::Segment::create(&disk, DIR, 9, meta(9).offset_first).await;
        next.unwrap();
        let (log, report) = open(&disk).await;
        assert_eq!(log.segments().len(), 1);
        assert_eq!(log.op_end(), 6);
        assert!(report.faulty.is_empty());
        log.append(meta(6), payload(6)).await.unwrap();
    });
}

#[test]
fn a_full_disk_under_concurrent_appends_fails_a_suffix_and_keeps_every_acknowledged_op() {
    for limit in [2_000u64, 4_000, 6_000, 8_000] {
        let disk = aligned_disk(limit);
        block_on(async {
            let (log, _) = open(&disk).await;
            *disk.space_limit.borrow_mut() = limit;
            let log_ref = &log;
            let appends = (1..41u64).map(|op| async move {
                let log = log_ref;
                let appending = log.submit(meta(op), payload(op));
                log.commit_queued().await;
                match appending {
                    Ok(appending) => appending.durable().await,
                    Err(error) => Err(error),
                }
            });
            let results = join_all(appends).await;
            let acked = results.iter().take_while(|r| r.is_ok()).count() as u64;
            assert!(acked < 40, "the limit stops the appends: {results:?}");
            assert!(
                results[acked as usize..].iter().all(|r| r.is_err()),
                "failures are a suffix"
            );
            assert_eq!(log.op_end(), acked + 1);
            assert_eq!(log.verify().await.unwrap(), acked);
            drop(log);
            disk.crash();
            let (log, report) = open(&disk).await;
            assert!(report.faulty.is_empty());
            assert!(
                log.op_end() > acked,
                "every acknowledged op survives the crash"
            );
            assert_eq!(log.verify().await.unwrap(), log.op_end() - 1);
        });
    }
}

#[test]
fn a_crash_at_any_step_of_a_truncation_never_brings_discarded_ops_back() {
    for syncs in 0..12 {
        let disk = aligned_disk(20 + syncs);
        block_on(async {
            let (log, _) = open(&disk).await;
            append_range(&log, 1..101).await;
            disk.fail_syncs_after(syncs);
            let result = log.truncate_after(40).await;
            drop(log);
            disk.crash();
            disk.heal();
            let (log, report) = open(&disk).await;
            assert!(report.faulty.is_empty(), "syncs {syncs}: {report:?}");
            // The mark's own sync is the first: once it is durable, the cut always finishes.
            if syncs == 0 {
                assert!(log.op_end() == 41 || log.op_end() == 101, "syncs {syncs}");
            } else {
                assert_eq!(log.op_end(), 41, "syncs {syncs}: {result:?}");
            }
            assert_eq!(log.verify().await.unwrap(), log.op_end() - 1);
            let end = log.op_end();
            log.append(meta(end), payload(end)).await.unwrap();
        });
    }
}

#[test]
fn damage_a_read_finds_in_a_sealed_segment_can_be_repaired() {
    let disk = aligned_disk(13);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..101).await;
        let entry = log.entry(3).await.unwrap();
        disk.corrupt(&log_name(DIR, 1), entry.position + RECORD_HEADER_SIZE + 1);
        assert_eq!(log.read(3).await, Err(StorageError::Faulty(3)));
        assert_eq!(log.faulty().len(), 1);
        log.repair(meta(3), payload(3)).await.unwrap();
        assert_eq!(log.read(3).await.unwrap().meta, meta(3));
    });
}

#[test]
fn appends_wait_out_a_truncation_and_retention_leftovers_are_cleaned() {
    let disk = aligned_disk(14);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..101).await;
        let appending = async {
            crate::futures::yield_once().await;
            log.submit(meta(101), payload(101)).err()
        };
        let (truncated, refused) = crate::futures::join(log.truncate_after(50), appending).await;
        truncated.unwrap();
        assert_eq!(refused, Some(StorageError::Busy));
        assert_eq!(log.op_end(), 51);
        // Retention removed the oldest segment's index, then the process died.
        disk.remove(&idx_name(DIR, 1)).await.unwrap();
        disk.sync_dir(DIR).await.unwrap();
        drop(log);
        let (log, _) = open(&disk).await;
        assert!(log.first_op() > 1);
        assert_eq!(log.op_end(), 51);
        assert_eq!(log.verify().await.unwrap(), 51 - log.first_op());
    });
}

#[test]
fn the_index_grows_by_zeros_ahead_which_recovery_reads_as_never_written() {
    let disk = aligned_disk(17);
    block_on(async {
        let config = LogConfig {
            segment_size: 1 << 20,
            ..config()
        };
        let (log, _) = PartitionLog::open(&disk, config.clone(), 1, 0)
            .await
            .unwrap();
        append_range(&log, 1..11).await;
        let idx = idx_name(DIR, 1);
        let entries_end = FILE_HEADER_SIZE + 10 * INDEX_ENTRY_SIZE;
        let grown = disk.durable_len(&idx).unwrap();
        assert!(grown > entries_end, "zeros written ahead: {grown}");
        // More groups write below the grown end: the file keeps its length.
        append_range(&log, 11..21).await;
        assert_eq!(disk.durable_len(&idx).unwrap(), grown);
        drop(log);
        disk.crash();
        let (log, report) = PartitionLog::open(&disk, config.clone(), 1, 0)
            .await
            .unwrap();
        assert!(report.faulty.is_empty(), "{report:?}");
        assert_eq!(report.torn_bytes, 0);
        assert_eq!(log.op_end(), 21);
        assert_eq!(
            disk.durable_len(&idx).unwrap(),
            FILE_HEADER_SIZE + 20 * INDEX_ENTRY_SIZE,
            "recovery cuts the zeros"
        );
        append_range(&log, 21..31).await;
        for op in 1..31 {
            assert_eq!(log.read(op).await.unwrap().meta, meta(op));
        }
    });
    // A tiny segment's index never grows past the entries it can hold.
    let disk = aligned_disk(18);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..41).await;
        let index_max = FILE_HEADER_SIZE + (4096 / RECORD_HEADER_SIZE + 1) * INDEX_ENTRY_SIZE;
        for segment in log.segments() {
            let len = disk.durable_len(&idx_name(DIR, segment.base_op)).unwrap();
            assert!(len <= index_max, "{len} > {index_max}");
        }
    });
}

#[test]
fn a_segment_that_cannot_be_created_leaves_nothing_behind() {
    let disk = aligned_disk(15);
    block_on(async {
        let (log, _) = open(&disk).await;
        // Append until the next op would roll a new segment.
        let mut op = 1;
        loop {
            // The log's end, not its file's (an aligned disk pads the last block with zeros).
            let size = log.segments().last().unwrap().size;
            if size + RECORD_HEADER_SIZE + payload(op).len() as u64 > 4096 {
                break;
            }
            log.append(meta(op), payload(op)).await.unwrap();
            op += 1;
        }
        let segments = log.segments().len();
        let files_before = disk.list(DIR).await.unwrap();
        // Room for nothing more: the roll fails at the new segment's first header.
        let used: u64 = files_before
            .iter()
            .map(|n| disk.durable_len(&crate::disk::join(DIR, n)).unwrap())
            .sum();
        *disk.space_limit.borrow_mut() = used + 1;
        let error = log.append(meta(op), payload(op)).await.unwrap_err();
        assert_eq!(error, StorageError::Disk(DiskError::NoSpace));
        assert_eq!(log.segments().len(), segments);
        assert_eq!(
            disk.list(DIR).await.unwrap(),
            files_before,
            "no stray segment files"
        );
        *disk.space_limit.borrow_mut() = u64::MAX;
        log.append(meta(op), payload(op)).await.unwrap();
        drop(log);
        let (log, report) = open(&disk).await;
        assert!(report.faulty.is_empty());
        assert_eq!(log.op_end(), op + 1);
    });
}

#[test]
fn truncating_to_an_op_whose_slot_is_lost_asks_for_its_repair_first() {
    let disk = aligned_disk(16);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..11).await;
        lose_entry_and_record(&disk, &log, 7).await;
        drop(log);
        let (log, _) = open(&disk).await;
        assert_eq!(log.truncate_after(7).await, Err(StorageError::Faulty(7)));
        log.repair(meta(7), payload(7)).await.unwrap();
        log.truncate_after(7).await.unwrap();
        assert_eq!(log.op_end(), 8);
    });
}

#[test]
fn several_segments_left_by_one_cut_group_are_all_discarded() {
    let disk = aligned_disk(17);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..6).await;
        drop(log);
        // A group large enough to roll twice created segments 9 and 12, then the process died.
        crate::segment::Segment::create(&disk, DIR, 9, meta(9).offset_first)
            .await
            .unwrap();
        crate::segment::Segment::create(&disk, DIR, 12, meta(12).offset_first)
            .await
            .unwrap();
        let (log, _) = open(&disk).await;
        assert_eq!(log.segments().len(), 1);
        assert_eq!(log.op_end(), 6);
        assert_eq!(disk.list(DIR).await.unwrap().len(), 2);
    });
}

#[test]
fn the_unaligned_layout_appends_and_recovers_too() {
    // Alignment 1: records written as they are (a buffered disk, or a tail that cannot be read).
    let disk = MemoryDisk::new(31);
    block_on(async {
        let (log, _) = open(&disk).await;
        let appends = (1..40u64).map(|op| log.append(meta(op), payload(op)));
        assert!(join_all(appends).await.iter().all(Result::is_ok));
        drop(log);
        disk.crash();
        let (log, report) = open(&disk).await;
        assert_eq!(report, Default::default());
        assert_eq!(log.op_end(), 40);
        assert_eq!(log.verify().await.unwrap(), 39);
    });
}

#[test]
fn a_torn_rewrite_of_the_last_block_never_damages_acknowledged_records() {
    // The group after an acknowledged one writes its last partial block again; a crash that
    // tears that write, sector by sector, leaves the acknowledged bytes as they were.
    for seed in 0..40 {
        let disk = aligned_disk(seed);
        disk.faults.borrow_mut().crash_tear = 1.0;
        block_on(async {
            let (log, _) = open(&disk).await;
            append_range(&log, 1..5).await;
            disk.fail_next_sync();
            assert!(log.append(meta(5), payload(5)).await.is_err());
            drop(log);
            disk.crash();
            let (log, _) = open(&disk).await;
            // Op 5 was never acknowledged: it may survive whole, or not at all.
            let op_end = log.op_end();
            assert!(op_end == 5 || op_end == 6, "seed {seed}: {op_end}");
            assert!(log.faulty().is_empty(), "seed {seed}");
            assert_eq!(log.verify().await.unwrap(), op_end - 1, "seed {seed}");
            for op in 1..op_end {
                assert_eq!(log.read(op).await.unwrap().payload, payload(op).to_vec());
            }
        });
    }
}

#[test]
fn a_repair_in_a_block_later_groups_write_again_stays_repaired() {
    // Groups write the block they start in again from the copy the last group kept, never
    // from bytes read back: damage found at open is not carried along, and a repair (which
    // drops the copy) is not undone by the groups after it.
    let disk = aligned_disk(32);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..6).await;
        let entry = log.entry(5).await.unwrap();
        assert_eq!(entry.position / 512, 1, "op 5 is in the second block");
        drop(log);
        disk.corrupt(&log_name(DIR, 1), entry.position + RECORD_HEADER_SIZE + 3);
        let (log, report) = open(&disk).await;
        assert_eq!(report.faulty.len(), 1);
        append_range(&log, 6..8).await;
        assert_eq!(log.read(5).await, Err(StorageError::Faulty(5)));
        log.repair(meta(5), payload(5)).await.unwrap();
        append_range(&log, 8..10).await;
        assert_eq!(log.read(5).await.unwrap().payload, payload(5).to_vec());
        drop(log);
        disk.crash();
        let (log, report) = open(&disk).await;
        assert!(report.faulty.is_empty());
        assert_eq!(log.verify().await.unwrap(), 9);
    });
}

#[test]
fn a_committer_task_commits_what_appenders_submit_and_stops_when_told() {
    let disk = aligned_disk(33);
    block_on(async {
        let (log, _) = open(&disk).await;
        let syncs_before = disk.stats.borrow().syncs;
        let appenders = async {
            let submitted: Vec<_> = (1..33u64)
                .map(|op| log.submit(meta(op), payload(op)).unwrap())
                .collect();
            for appending in submitted {
                appending.durable().await.unwrap();
            }
            log.stop_committer();
        };
        crate::futures::join(log.run_committer(), appenders).await;
        let syncs = disk.stats.borrow().syncs - syncs_before;
        assert!(syncs < 32, "{syncs} syncs for 32 appends");
        assert_eq!(log.op_end(), 33);
        // A committer started again after a stop runs again.
        let appending = log.submit(meta(33), payload(33)).unwrap();
        let appender = async {
            appending.durable().await.unwrap();
            log.stop_committer();
        };
        crate::futures::join(log.run_committer(), appender).await;
        assert_eq!(log.verify().await.unwrap(), 33);
    });
}

/// A payload submitted in two parts is the same record as the one-part payload of both
/// parts joined: the same bytes on disk, read back whole, on direct and on unaligned writes,
/// small parts and a body large enough to be written from its own buffer.
#[test]
fn a_two_part_payload_is_the_record_of_its_parts_joined() {
    let big = LogConfig {
        segment_size: 4 << 20,
        ..config()
    };
    for alignment in [512u64, 1] {
        let joined_disk = MemoryDisk::new(40);
        let parts_disk = MemoryDisk::new(40);
        joined_disk.write_alignment.set(alignment);
        parts_disk.write_alignment.set(alignment);
        block_on(async {
            let (joined, _) = PartitionLog::open(&joined_disk, big.clone(), 1, 0)
                .await
                .unwrap();
            let (parts, _) = PartitionLog::open(&parts_disk, big.clone(), 1, 0)
                .await
                .unwrap();
            for (op, body_len) in [(1u64, 300usize), (2, 300 * 1024), (3, 5), (4, 0)] {
                let head = Bytes::from(vec![0xA0 + op as u8; 256]);
                let body = Bytes::from(vec![op as u8; body_len]);
                let mut whole = head.to_vec();
                whole.extend_from_slice(&body);
                let meta = EntryMeta {
                    op,
                    checksum: u128::from(op),
                    offset_first: 0,
                    message_count: 0,
                    timestamp: op,
                };
                joined
                    .append(meta, Bytes::from(whole.clone()))
                    .await
                    .unwrap();
                let appending = parts.submit_parts(meta, head, body).unwrap();
                parts.commit_queued().await;
                appending.durable().await.unwrap();
                assert_eq!(&parts.read(op).await.unwrap().payload[..], &whole[..]);
            }
            let name = log_name(DIR, 1);
            for disk in [&joined_disk, &parts_disk] {
                disk.crash();
            }
            let mut contents = Vec::new();
            for disk in [&joined_disk, &parts_disk] {
                let file = disk.open(&name, false).await.unwrap();
                let size = disk.size(file).await.unwrap();
                contents.push(disk.read_at(file, 0, size as usize).await.unwrap());
            }
            assert!(contents[0].len() > 300 * 1024);
            assert_eq!(contents[0], contents[1]);
        });
    }
}

/// A log on 1 MiB segments with ops 1..=`ops` appended, for the zeros-ahead tests.
async fn log_with_ops(disk: &MemoryDisk, ops: u64) -> PartitionLog<'_, MemoryDisk> {
    let (log, _) = open_big(disk).await;
    append_range(&log, 1..ops + 1).await;
    log
}

#[test]
fn zeros_ahead_are_overwritten_by_appends_and_cut_at_reopen() {
    use crate::prepare_ahead::{AHEAD_MAX, AHEAD_MIN};
    let disk = aligned_disk(41);
    block_on(async {
        let log = log_with_ops(&disk, 10).await;
        let name = log_name(DIR, 1);
        let records_end = disk.durable_len(&name).unwrap();
        let zeros = log.prepare_ahead().await;
        assert!((AHEAD_MIN - 512..=AHEAD_MAX).contains(&zeros), "{zeros}");
        let active = log.state.borrow().active().log;
        let file = log.disk.size(active).await.unwrap();
        assert!(
            file >= records_end + AHEAD_MIN - 512,
            "{file} {records_end}"
        );
        // Up to the window: a second call writes nothing more.
        assert_eq!(log.prepare_ahead().await, 0);
        // Appends land on the zeros, read back, and a full scan accepts what follows them.
        append_range(&log, 11..21).await;
        for op in 1..21 {
            assert_eq!(log.read(op).await.unwrap().payload, payload(op));
        }
        assert_eq!(log.verify().await.unwrap(), 20);
        assert!(
            log.prepare_ahead().await > 0,
            "the window moved with the tail"
        );
        drop(log);
        disk.crash();
        let (log, report) = open_big(&disk).await;
        assert!(report.faulty.is_empty(), "{report:?}");
        assert_eq!(report.torn_bytes, 0, "zeros are not a torn record");
        assert_eq!(log.op_end(), 21);
        let segment_end = log.state.borrow().active().log_size;
        assert_eq!(disk.durable_len(&name).unwrap(), segment_end, "cut");
        for op in 1..21 {
            assert_eq!(log.read(op).await.unwrap().payload, payload(op));
        }
    });
}

async fn open_big(
    disk: &MemoryDisk,
) -> (
    PartitionLog<'_, MemoryDisk>,
    crate::recovery::RecoveryReport,
) {
    let config = LogConfig {
        segment_size: 1 << 20,
        ..config()
    };
    PartitionLog::open(disk, config, 1, 0).await.unwrap()
}

#[test]
fn zeros_ahead_wait_for_an_idle_log_and_flush_what_queued_meanwhile() {
    let disk = aligned_disk(42);
    block_on(async {
        let log = log_with_ops(&disk, 4).await;
        // An append queued and not yet flushed: the log is not idle, nothing is written.
        let queued = log.submit(meta(5), payload(5)).unwrap();
        assert_eq!(log.prepare_ahead().await, 0);
        log.commit_queued().await;
        queued.durable().await.unwrap();
        // An append that arrives while zeros are in flight waits for them, and the zeros'
        // writer flushes it (its own `commit_queued` finds the log taken and returns).
        let (zeros, ()) = crate::futures::join(log.prepare_ahead(), async {
            log.append(meta(6), payload(6)).await.unwrap();
        })
        .await;
        assert!(zeros > 0);
        assert_eq!(log.op_end(), 7);
        assert_eq!(log.read(6).await.unwrap().payload, payload(6));
        assert_eq!(log.verify().await.unwrap(), 6);
    });
}

#[test]
fn zeros_ahead_never_pass_the_segment_size() {
    let disk = aligned_disk(43);
    block_on(async {
        let (log, _) = open(&disk).await;
        append_range(&log, 1..101).await;
        assert!(log.segments().len() > 3);
        log.prepare_ahead().await;
        append_range(&log, 101..105).await;
        log.prepare_ahead().await;
        let files: Vec<_> = log.state.borrow().segments.iter().map(|s| s.log).collect();
        for file in files {
            let size = log.disk.size(file).await.unwrap();
            assert!(size <= 4096, "a 4 KiB segment's log is {size} bytes");
        }
        drop(log);
        disk.crash();
        let (log, report) = open(&disk).await;
        assert!(
            report.faulty.is_empty() && report.torn_bytes == 0,
            "{report:?}"
        );
        assert_eq!(log.op_end(), 105);
    });
}

/// The check that tells zeros from a torn record still fires on anything that is not zeros.
#[test]
fn bytes_other_than_zeros_past_the_last_record_are_reported_torn() {
    let disk = aligned_disk(44);
    block_on(async {
        let log = log_with_ops(&disk, 10).await;
        log.prepare_ahead().await;
        let file = log.state.borrow().active().log;
        let end = log.disk.size(file).await.unwrap();
        // A stray byte far into the zeros, made durable.
        log.disk
            .write_at(file, end - 100, Bytes::from_static(&[7]))
            .await
            .unwrap();
        log.disk.sync(file).await.unwrap();
        drop(log);
        disk.crash();
        let (log, report) = open_big(&disk).await;
        assert!(report.torn_bytes > 0, "{report:?}");
        assert!(report.faulty.is_empty());
        assert_eq!(log.op_end(), 11, "the cut takes nothing acknowledged");
    });
}

/// A zeros write dropped in flight could still land after later records: the log is poisoned.
#[test]
fn zeros_ahead_dropped_in_flight_poison_the_log() {
    let disk = aligned_disk(45);
    block_on(async {
        let log = log_with_ops(&disk, 4).await;
        {
            let mut zeros = std::pin::pin!(log.prepare_ahead());
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            // The memory disk's write yields once: the zeros are in flight.
            assert!(zeros.as_mut().poll(&mut context).is_pending());
        }
        assert!(matches!(
            log.submit(meta(5), payload(5)),
            Err(StorageError::Poisoned)
        ));
    });
}
