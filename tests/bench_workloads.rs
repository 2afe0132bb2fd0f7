//! `galgo bench` in each workload shape against `galgo dev`: it must finish, read back
//! exactly what it wrote, and print its figures (a consumer that misses or misreads a batch
//! makes the command fail).

mod common;

use common::{dev_command, free_address};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_bench_workload_runs_against_galgo_dev() {
    let root = std::env::temp_dir().join(format!("galgo-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (bus, client, gateway) = (free_address(), free_address(), free_address());
    let log = std::fs::File::create(root.join("dev.log")).unwrap();
    let mut dev = dev_command(&root.join("data"), bus, client, gateway, "bench-secret")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("galgo dev starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(gateway).is_err() {
        assert!(Instant::now() < deadline, "galgo dev never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let nodes = format!("[{{ id = 0, address = \"{bus}\", client_address = \"{client}\" }}]");
    for (workload, expect) in [
        ("pinned-producer", vec!["producers (quorum-durable)"]),
        ("pinned-consumer", vec!["fill (producers)", "consumers:"]),
        (
            "end-to-end",
            vec!["producers (quorum-durable)", "end to end"],
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_galgo"))
            .args(["bench", "--workload", workload])
            .args(["--producers", "2", "--consumers", "2", "--partitions", "2"])
            .args(["--batches", "20", "--messages-per-batch", "10"])
            .args(["--message-size", "100", "--rate-limit", "50"])
            .env("GALGO_CLUSTER_NODES", &nodes)
            .env("GALGO_REPLICA_SHARDS", "2")
            .output()
            .expect("galgo bench runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{workload}: {stdout}\n{stderr}");
        for line in expect {
            assert!(stdout.contains(line), "{workload}: no '{line}' in {stdout}");
        }
        assert!(stdout.contains("p9999"), "{stdout}");
        // 2 producers x 20 batches x 10 messages.
        assert!(stdout.contains("400 messages"), "{workload}: {stdout}");
    }
    // Bad input is refused with a message, not a panic.
    let refused = Command::new(env!("CARGO_BIN_EXE_galgo"))
        .args(["bench", "--workload", "pinned-consumer", "--consumers", "9"])
        .args(["--partitions", "2"])
        .env("GALGO_CLUSTER_NODES", &nodes)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("more consumers than partitions"));
    let _ = dev.kill();
    let _ = dev.wait();
    let _ = std::fs::remove_dir_all(&root);
}
