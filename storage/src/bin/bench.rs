//! `galgo-storage-bench`: durable append throughput of the partition log for 64 KiB and 1 MiB
//! batches next to the raw direct-write bandwidth of the same disk, measured in the same run,
//! and the latency of reads by offset. Wall-clock timing lives here, never in the log itself.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use galgo_storage::aligned::{align_up, AlignedBuffer};
use galgo_storage::file_disk::{block_on, block_on_epoll};
use galgo_storage::iggy_batch::{self, Message};
use galgo_storage::{EntryMeta, FileDisk, LogConfig, PartitionLog};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(about = "Measure durable append throughput against raw disk bandwidth, and read latency")]
struct Cli {
    /// Directory on the disk to measure (files are created under it and removed after).
    #[arg(long)]
    dir: PathBuf,
    /// MiB written by each measurement.
    #[arg(long, default_value_t = 512)]
    mib: u64,
    /// Appends in flight at once, one run per value: 8 is one partition's VSR pipeline; more
    /// in flight puts more bytes under each fdatasync.
    #[arg(long, value_delimiter = ',', default_values_t = [8usize, 32])]
    producers: Vec<usize>,
    /// Use monoio's epoll driver (blocking file syscalls), as when io_uring is refused.
    #[arg(long)]
    epoll: bool,
    /// Reads by offset to time after each append run.
    #[arg(long, default_value_t = 20_000)]
    reads: u64,
    /// Microseconds each producer waits after an append is durable before its next, like a
    /// lockstep client's round trip (0: none). Throughput then counts the waits too: compare
    /// append latencies.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    think_us: u64,
    /// During each wait, write zeros ahead of the log's tail, as a node does between prepares
    /// (`PartitionLog::prepare_ahead`).
    #[arg(long)]
    prepare_ahead: bool,
}

const MIB: u64 = 1 << 20;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.mib == 0 || cli.producers.is_empty() || cli.producers.contains(&0) {
        eprintln!("--mib and --producers must be at least 1");
        return std::process::ExitCode::FAILURE;
    }
    let dir = cli.dir.join(format!("galgo-bench-{}", std::process::id()));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {error}", dir.display());
        return std::process::ExitCode::FAILURE;
    }
    println!(
        "galgo-storage-bench: {} MiB per run, {:?} appends in flight, dir {}",
        cli.mib,
        cli.producers,
        dir.display()
    );
    let mut failed = false;
    let runs = cli
        .producers
        .iter()
        .flat_map(|p| [(*p, 64 * 1024u64), (*p, MIB)]);
    for (producers, batch_size) in runs {
        // The raw bandwidth is measured right before and right after each append run (this
        // kind of disk drifts), and the ratio uses their mean.
        let raw_before = match raw_direct_write(&dir, cli.mib, MIB, false) {
            Ok(raw) => raw,
            Err(error) => {
                eprintln!("raw direct write failed: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let run_dir = dir.join(format!("log-{batch_size}"));
        std::fs::create_dir_all(&run_dir).expect("a run directory");
        let disk: &'static FileDisk = Box::leak(Box::new(FileDisk::new(&run_dir)));
        let (result, uring) = if cli.epoll {
            (
                block_on_epoll(append_run(disk, batch_size, producers, &cli)),
                false,
            )
        } else {
            block_on(append_run(disk, batch_size, producers, &cli))
        };
        let raw_after = raw_direct_write(&dir, cli.mib, MIB, false).unwrap_or(raw_before);
        let raw = (raw_before + raw_after) / 2.0;
        println!(
            "raw O_DIRECT sequential write, 1 MiB blocks, one fdatasync: {raw_before:.1} MiB/s before, {raw_after:.1} MiB/s after"
        );
        match result {
            Ok(stats) => {
                let label = if batch_size == MIB { "1 MiB" } else { "64 KiB" };
                println!(
                    "durable append {label:>6} batches, {producers:>2} in flight ({}): {:.1} MiB/s = {:.2} of raw, {:.0} batches/s, {} fdatasync pairs | append latency p50 {} p99 {} p999 {} µs",
                    if uring { "io_uring" } else { "epoll fallback" },
                    stats.mib_per_s,
                    stats.mib_per_s / raw,
                    stats.batches_per_s,
                    stats.groups,
                    stats.append.value_at_quantile(0.5),
                    stats.append.value_at_quantile(0.99),
                    stats.append.value_at_quantile(0.999),
                );
                // The same bytes per fdatasync as the log's groups, written raw: what the disk
                // gives for durable writes of that size, so the log's own cost shows apart.
                let group_bytes = align_up(stats.bytes / stats.groups.max(1), 4096).min(64 * MIB);
                match raw_direct_write(&dir, cli.mib, group_bytes, true) {
                    Ok(matched) => println!(
                        "raw O_DIRECT, fdatasync after every {} KiB (the log's mean group): {matched:.1} MiB/s; the log reaches {:.2} of it",
                        group_bytes / 1024,
                        stats.mib_per_s / matched,
                    ),
                    Err(error) => eprintln!("raw durable write failed: {error}"),
                }
                println!(
                    "read by offset (find + read + checksum) {label:>6}: p50 {} p99 {} p999 {} µs over {} reads",
                    stats.read.value_at_quantile(0.5),
                    stats.read.value_at_quantile(0.99),
                    stats.read.value_at_quantile(0.999),
                    stats.read.len(),
                );
            }
            Err(error) => {
                eprintln!("append run with {batch_size}-byte batches failed: {error}");
                failed = true;
            }
        }
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Writes `mib` MiB sequentially with O_DIRECT in aligned `block`-byte writes, with an
/// fdatasync after every write when `sync_each` is set, else one at the end. MiB/s.
fn raw_direct_write(dir: &Path, mib: u64, block: u64, sync_each: bool) -> std::io::Result<f64> {
    assert!(block > 0 && block.is_multiple_of(4096));
    let path = dir.join("raw.bin");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let mut buffer = AlignedBuffer::zeroed(block as usize);
    for (i, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let writes = (mib * MIB).div_ceil(block);
    let start = Instant::now();
    let mut result = Ok(());
    for i in 0..writes {
        result = file.write_all_at(buffer.as_ref(), i * block);
        if result.is_ok() && sync_each {
            result = file.sync_data();
        }
        if result.is_err() {
            break;
        }
    }
    let result = result.and_then(|()| file.sync_data());
    let elapsed = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result.map(|()| (writes * block) as f64 / MIB as f64 / elapsed)
}

struct RunStats {
    bytes: u64,
    mib_per_s: f64,
    batches_per_s: f64,
    groups: u64,
    append: Histogram<u64>,
    read: Histogram<u64>,
}

async fn append_run(
    disk: &'static FileDisk,
    batch_size: u64,
    producers: usize,
    cli: &Cli,
) -> Result<RunStats, galgo_storage::StorageError> {
    let (log, _) = PartitionLog::open(disk, LogConfig::new("p"), 1, 0).await?;
    let log = Rc::new(log);
    let payload_size =
        batch_size as usize - iggy_batch::BATCH_HEADER_SIZE - iggy_batch::FRAME_HEADER_SIZE;
    let payload = vec![0xa5u8; payload_size];
    let message = Message {
        id: 1,
        payload: &payload,
        user_headers: b"",
        timestamp_delta: 0,
    };
    let batch = Bytes::from(iggy_batch::build(0, 0, 0, &[message]));
    assert_eq!(batch.len() as u64, batch_size);
    let batches = (cli.mib * MIB).div_ceil(batch_size);
    let next_op = Rc::new(std::cell::Cell::new(1u64));
    let start = Instant::now();
    let committer = {
        let log = log.clone();
        monoio::spawn(async move { log.run_committer().await })
    };
    let (think, prepare_ahead) = (
        std::time::Duration::from_micros(cli.think_us),
        cli.prepare_ahead,
    );
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (log, next_op, batch) = (log.clone(), next_op.clone(), batch.clone());
        tasks.push(monoio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("a histogram");
            loop {
                let op = next_op.get();
                if op > batches {
                    return Ok::<_, galgo_storage::StorageError>(latency);
                }
                next_op.set(op + 1);
                let meta = EntryMeta {
                    op,
                    checksum: u128::from(op),
                    offset_first: op - 1,
                    message_count: 1,
                    timestamp: op,
                };
                let sent = Instant::now();
                log.submit(meta, batch.clone())?.durable().await?;
                let durable = Instant::now();
                latency
                    .record((durable - sent).as_micros() as u64)
                    .expect("in range");
                if prepare_ahead {
                    log.prepare_ahead().await;
                }
                let left = think.saturating_sub(durable.elapsed());
                if !left.is_zero() {
                    monoio::time::sleep(left).await;
                }
            }
        }));
    }
    let mut append = Histogram::<u64>::new(3).expect("a histogram");
    for task in tasks {
        append.add(task.await?).expect("same bounds");
    }
    log.stop_committer();
    committer.await;
    let elapsed = start.elapsed().as_secs_f64();
    let written = batches * batch_size;
    let mut read = Histogram::<u64>::new(3).expect("a histogram");
    let mut prng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..cli.reads {
        prng ^= prng << 13;
        prng ^= prng >> 7;
        prng ^= prng << 17;
        let offset = prng % batches;
        let started = Instant::now();
        let op = log.find_offset(offset).await?.expect("a written offset");
        let record = log.read(op).await?;
        read.record(started.elapsed().as_micros() as u64)
            .expect("in range");
        assert_eq!(record.meta.offset_first, offset);
    }
    Ok(RunStats {
        bytes: written,
        mib_per_s: written as f64 / MIB as f64 / elapsed,
        batches_per_s: batches as f64 / elapsed,
        groups: log.groups_committed(),
        append,
        read,
    })
}
