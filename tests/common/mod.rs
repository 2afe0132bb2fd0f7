//! Helpers shared by the tests that start `galgo` processes: free listen addresses for nodes
//! (room for their shards' ports), the `galgo dev` command on such addresses, creating a
//! topic, and reading a partition's messages back from a node's data directory once the node
//! is stopped.

// Each test binary includes this module and uses only some of its helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use galgo_consensus::Message;
use galgo_replica::client_protocol::{PartitionRoute, OPERATION_BROKER};
use galgo_replica::partition::ops::PartitionOp;
use galgo_replica::routing::RoutingClient;
use galgo_storage::file_disk::block_on;
use galgo_storage::{FileDisk, LogConfig, PartitionLog};

/// Ports each node address needs free: one per shard.
const SHARD_PORTS: u16 = 4;

/// A free address whose next `SHARD_PORTS - 1` ports are free too, below the ephemeral range
/// (which starts at 32768 on Linux): a port the kernel hands out to outgoing connections could
/// be taken by one while a killed node restarts.
pub fn free_address() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 5) as u16 * 2_000;
    loop {
        // Ten ports apart: a node's shards listen on the port and the ones after it.
        let port = base + (NEXT.fetch_add(1, Ordering::Relaxed) % 200) * 10;
        let free = (port..port + SHARD_PORTS)
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
}

/// `galgo dev` on `data_dir` with its replica bus, client port and gateway on the given
/// addresses, two shards whatever the machine (the addresses leave room for four), and root's
/// password `root_password`.
pub fn dev_command(
    data_dir: &Path,
    bus: SocketAddr,
    client: SocketAddr,
    gateway: SocketAddr,
    root_password: &str,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_galgo"));
    command
        .arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .env(
            "GALGO_CLUSTER_NODES",
            format!("[{{ id = 0, address = \"{bus}\", client_address = \"{client}\" }}]"),
        )
        .env("GALGO_GATEWAY_TCP_ADDRESS", gateway.to_string())
        // Its own HTTP port: tests of one binary run side by side.
        .env("GALGO_GATEWAY_HTTP_ADDRESS", free_address().to_string())
        .env("GALGO_ROOT_PASSWORD", root_password)
        .env("GALGO_REPLICA_SHARDS", "2");
    command
}

/// Starts `command` with its stdout and stderr appended to `log`.
pub fn spawn_logged(mut command: Command, log: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    command
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("galgo starts")
}

/// The messages of a partition log on disk: (offset, payload) of every append, in log order.
pub fn read_partition(dir: &Path, group: u64) -> Vec<(u64, Vec<u8>)> {
    let disk = FileDisk::new(dir);
    let (messages, _) = block_on(async {
        let (log, _report) =
            PartitionLog::open(&disk, LogConfig::new(format!("group-{group}")), 1, 0)
                .await
                .expect("the log opens");
        let mut messages = Vec::new();
        for op in log.first_op()..log.op_end() {
            let record = log.read(op).await.expect("a readable record");
            let prepare = Message::decode(&record.payload).expect("a prepare");
            if prepare.header.operation != OPERATION_BROKER {
                continue;
            }
            if let Ok((PartitionOp::Append { base_offset, .. }, batch)) =
                PartitionOp::decode(&prepare.body)
            {
                messages.push((base_offset, batch.to_vec()));
            }
        }
        messages
    });
    messages
}

/// Creates stream `stream` and its topic `topic`, and returns the topic's partition routes.
pub fn create_topic(
    client: &mut RoutingClient,
    stream: &str,
    topic: &str,
    partitions: u32,
    replication_factor: u8,
) -> Vec<PartitionRoute> {
    galgo_replica::admin::create_stream_and_topic(
        client,
        stream,
        topic,
        partitions,
        replication_factor,
    )
    .expect("the topic is created and routable")
}
