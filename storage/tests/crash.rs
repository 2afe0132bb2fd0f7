//! Crash test: `galgo-storage-crashload` appends under load and prints each op once durable; it
//! is SIGKILLed at a random moment, 60 times (every other round on the epoll fallback; half the
//! rounds write zeros ahead of the tail while idle, as a node does). After each kill the log is
//! reopened and must hold
//! every printed op, exactly the expected bytes for every op it holds (nothing invented, no
//! gap), an index that agrees with a full scan of the files, and no faulty entry.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use galgo_storage::file_disk::block_on;
use galgo_storage::workload::expected_batch;
use galgo_storage::{FileDisk, LogConfig, PartitionLog};

const ROUNDS: u64 = 60;

/// xorshift, seeded per run: the kill moments differ between runs, and the seed is printed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_moments_never_loses_a_durable_op() {
    let dir = std::env::temp_dir().join(format!("galgo-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut prng = seed;
    let mut durable_max = 0u64;
    let mut ops_checked = 0u64;
    for round in 0..ROUNDS {
        let mut command = Command::new(env!("CARGO_BIN_EXE_galgo-storage-crashload"));
        if round % 2 == 1 {
            command.arg("--epoll");
        }
        if round % 4 >= 2 {
            command.arg("--prepare-ahead");
        }
        let mut child = command
            .arg("--dir")
            .arg(&dir)
            .arg("--segment-size")
            .arg("262144")
            .arg("--window")
            .arg((1 + next(&mut prng) % 32).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the load");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let op: u64 = line.trim().parse().expect("an op per line");
                assert!(
                    last.is_none_or(|l| op == l + 1),
                    "durable ops are printed in order"
                );
                last = Some(op);
            }
            last
        });
        std::thread::sleep(Duration::from_millis(20 + next(&mut prng) % 200));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let reported = reader.join().unwrap();
        if let Some(op) = reported {
            assert!(op > durable_max || durable_max == 0 || op >= durable_max);
            durable_max = durable_max.max(op);
        }
        let disk = FileDisk::new(&dir);
        let (checked, _) = block_on(async {
            let config = LogConfig {
                segment_size: 262_144,
                ..LogConfig::new("p")
            };
            let (log, report) = PartitionLog::open(&disk, config, 1, 0).await.unwrap();
            assert!(report.faulty.is_empty(), "round {round}: {report:?}");
            assert!(
                log.op_end() > durable_max,
                "round {round}: op {durable_max} was reported durable, the log ends at {}",
                log.op_end()
            );
            assert_eq!(log.first_op(), 1);
            let records = log
                .verify()
                .await
                .expect("the index agrees with a full scan");
            assert_eq!(records, log.op_end() - 1);
            // Every op held is exactly the expected batch; reads of the newest ops of this round.
            let from = log.op_end().saturating_sub(200).max(1);
            for op in from..log.op_end() {
                let record = log.read(op).await.unwrap();
                let (meta, payload) = expected_batch(op);
                assert_eq!(record.meta, meta, "round {round} op {op}");
                assert_eq!(record.payload, payload.to_vec(), "round {round} op {op}");
            }
            log.op_end() - from
        });
        ops_checked += checked;
    }
    assert!(
        durable_max > ROUNDS,
        "the load made progress: {durable_max} ops"
    );
    println!("{ROUNDS} SIGKILL rounds, {durable_max} ops durable, {ops_checked} reads checked");
    std::fs::remove_dir_all(&dir).unwrap();
}
