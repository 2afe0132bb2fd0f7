//! `galgo-storage-crashload`: appends Iggy-layout batches to a partition log under load and
//! prints each op as soon as it is durable, until killed. The crash test SIGKILLs it at random
//! moments and checks that every op it printed survived. Batches are a function of their op
//! (`expected_batch`), so a checker can tell an invented or altered record from a real one.

use std::io::Write;
use std::rc::Rc;

use clap::Parser;
use galgo_storage::file_disk::{block_on, block_on_epoll};
use galgo_storage::{FileDisk, LogConfig, PartitionLog};

#[derive(Parser)]
#[command(
    about = "Append to a partition log under load, printing each durable op (crash-test load)"
)]
struct Cli {
    /// Directory holding the log (created if missing).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Appends in flight at once (group commit covers them together).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    segment_size: u64,
    /// Run on monoio's epoll driver (the fallback when io_uring is refused).
    #[arg(long)]
    epoll: bool,
    /// Stop after this many ops (default: run until killed).
    #[arg(long)]
    ops: Option<u64>,
    /// After each durable op, write zeros ahead of the tail while the log is idle, as a node
    /// does (`PartitionLog::prepare_ahead`), so kills also land among zeros.
    #[arg(long)]
    prepare_ahead: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(error) = std::fs::create_dir_all(&cli.dir) {
        eprintln!("cannot create {}: {error}", cli.dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let disk: &'static FileDisk = Box::leak(Box::new(FileDisk::new(&cli.dir)));
    let (result, uring) = if cli.epoll {
        (block_on_epoll(run(disk, &cli)), false)
    } else {
        block_on(run(disk, &cli))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crashload (io_uring: {uring}): {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(disk: &'static FileDisk, cli: &Cli) -> Result<(), galgo_storage::StorageError> {
    let config = LogConfig {
        segment_size: cli.segment_size,
        ..LogConfig::new("p")
    };
    let (log, report) = PartitionLog::open(disk, config, 1, 0).await?;
    eprintln!(
        "opened: ops {}..{}, faulty {}, fixed {}, torn bytes {}",
        log.first_op(),
        log.op_end(),
        report.faulty.len(),
        report.fixed.len(),
        report.torn_bytes
    );
    let log = Rc::new(log);
    let mut stdout = std::io::stdout().lock();
    let mut op = log.op_end();
    let stop = cli.ops.map_or(u64::MAX, |n| op + n);
    let committer = {
        let log = log.clone();
        monoio::spawn(async move { log.run_committer().await })
    };
    let mut inflight = std::collections::VecDeque::new();
    loop {
        while inflight.len() < cli.window && op < stop {
            let (meta, payload) = galgo_storage::workload::expected_batch(op);
            inflight.push_back((op, log.submit(meta, payload)?));
            op += 1;
        }
        let Some((done, appending)) = inflight.pop_front() else {
            break;
        };
        appending.durable().await?;
        // Only printed once durable: the crash test holds the log to it.
        writeln!(stdout, "{done}").and_then(|_| stdout.flush()).ok();
        if cli.prepare_ahead {
            log.prepare_ahead().await;
        }
    }
    log.stop_committer();
    committer.await;
    Ok(())
}
