//! Deleting a stream removes its partition groups' files from `galgo dev`'s data directory:
//! at once while the node runs, and, for files a stopped node left behind, when it starts
//! again. The files of live groups, and of group ids the metadata never allocated, stay. A
//! request for a deleted group is answered at once with `OPERATION_NOT_PRIMARY`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{create_topic, dev_command, free_address, read_partition, spawn_logged};
use galgo_consensus::header::HEADER_SIZE;
use galgo_consensus::{Command, Header, Message};
use galgo_replica::client_protocol::PartitionRoute;
use galgo_replica::client_protocol::{OPERATION_BROKER, OPERATION_NOT_PRIMARY};
use galgo_replica::metadata::machine::MetadataReply;
use galgo_replica::metadata::{Ident, MetadataOp};
use galgo_replica::node::{shard_address, shard_of};
use galgo_replica::partition::ops::PartitionOp;
use galgo_replica::partition::reply::PartitionReply;
use galgo_replica::routing::RoutingClient;
use std::io::{Read, Write};

/// `galgo dev`'s cluster id.
const CLUSTER: u128 = 1;
const DEADLINE: Duration = Duration::from_secs(20);

fn start(data_dir: &Path, addresses: [std::net::SocketAddr; 3], log: &Path) -> Child {
    let [bus, client, gateway] = addresses;
    spawn_logged(
        dev_command(data_dir, bus, client, gateway, "deleted-groups"),
        log,
    )
}

/// The names in `data_dir` that belong to partition group `group`.
fn files_of(data_dir: &Path, group: u64) -> Vec<String> {
    let names = [
        format!("group-{group}"),
        format!("checkpoint-{group}"),
        format!("superblock-{group}"),
    ];
    names
        .into_iter()
        .filter(|name| data_dir.join(name).exists())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn append(client: &mut RoutingClient, route: &PartitionRoute, payload: &[u8]) {
    let op = PartitionOp::Append {
        base_offset: 0,
        count: 1,
        timestamp: 0,
        producer: None,
    };
    let reply = client.call_route(route, op.encode(payload)).unwrap();
    assert!(matches!(
        PartitionReply::decode(&reply.body).unwrap(),
        PartitionReply::Appended { .. }
    ));
}

/// Sends one append for `group` to the node's client port (the group's shard) on a raw
/// connection; returns the answer's header and the request's checksum.
fn raw_request(client_port: std::net::SocketAddr, group: u64) -> (Header, u128) {
    let mut header = Header::new(Command::Request, CLUSTER, group);
    header.client = 0xDE3;
    header.request = 1;
    header.operation = OPERATION_BROKER;
    let op = PartitionOp::Append {
        base_offset: 0,
        count: 1,
        timestamp: 0,
        producer: None,
    };
    let request = Message::new(header, op.encode(b"late").to_vec());
    let address = shard_address(client_port, shard_of(group, 2)).unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let (head, body) = request.frame_parts();
    stream.write_all(&head).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = [0u8; HEADER_SIZE];
    stream.read_exact(&mut answer).unwrap();
    (Header::decode(&answer).unwrap(), request.header.checksum)
}

#[test]
fn a_deleted_stream_leaves_no_partition_files_behind() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("galgo-deleted-groups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (data_dir, log) = (root.join("data"), root.join("galgo.log"));
    let addresses = [free_address(), free_address(), free_address()];
    let mut child = start(&data_dir, addresses, &log);

    let mut client = RoutingClient::new(CLUSTER, 0xDE1, vec![(0, addresses[1])]);
    let kept = create_topic(&mut client, "kept", "t", 2, 1);
    let dropped = create_topic(&mut client, "dropped", "t", 3, 1);
    for route in kept.iter().chain(&dropped) {
        append(
            &mut client,
            route,
            format!("to group {}", route.group).as_bytes(),
        );
    }
    for route in kept.iter().chain(&dropped) {
        assert_eq!(
            files_of(&data_dir, route.group).len(),
            3,
            "log, checkpoints, superblock"
        );
    }

    let delete = MetadataOp::DeleteStream {
        stream: Ident::Name("dropped".into()),
    };
    let reply = client.call_metadata(delete.encode().unwrap()).unwrap();
    assert!(matches!(
        MetadataReply::decode(&reply.body),
        Ok(MetadataReply::Applied(_))
    ));
    let started = Instant::now();
    wait_until("the deleted groups' files are removed", || {
        dropped
            .iter()
            .all(|r| files_of(&data_dir, r.group).is_empty())
    });
    eprintln!("removed {:?} after the delete", started.elapsed());
    // A request for a group the node no longer runs is answered at once, not dropped.
    let answer = raw_request(addresses[1], dropped[1].group);
    assert_eq!(answer.0.command, Command::Reply);
    assert_eq!(answer.0.operation, OPERATION_NOT_PRIMARY);
    assert_eq!(answer.0.context, answer.1, "it answers that very request");
    for route in &kept {
        assert_eq!(files_of(&data_dir, route.group).len(), 3);
    }

    // Files a node left behind (a removal cut short by a crash), and files of a group id the
    // metadata never handed out (which nothing may take for deleted).
    child.kill().unwrap();
    child.wait().unwrap();
    let leftover = dropped[0].group;
    let unknown = 1_000;
    for group in [leftover, unknown] {
        std::fs::create_dir_all(data_dir.join(format!("group-{group}"))).unwrap();
        std::fs::create_dir_all(data_dir.join(format!("checkpoint-{group}"))).unwrap();
        std::fs::write(
            data_dir.join(format!("group-{group}/00000000000000000001.log")),
            b"old",
        )
        .unwrap();
        std::fs::write(
            data_dir.join(format!("checkpoint-{group}/snapshot.0")),
            b"old",
        )
        .unwrap();
        std::fs::write(data_dir.join(format!("superblock-{group}")), b"old").unwrap();
    }
    child = start(&data_dir, addresses, &log);
    wait_until("the leftover files are removed at start", || {
        files_of(&data_dir, leftover).is_empty()
    });
    // The node is up: a live partition takes appends again.
    let mut client = RoutingClient::new(CLUSTER, 0xDE2, vec![(0, addresses[1])]);
    append(&mut client, &kept[0], b"after the restart");
    assert_eq!(files_of(&data_dir, unknown).len(), 3);
    child.kill().unwrap();
    child.wait().unwrap();

    // The live groups kept every message.
    assert_eq!(read_partition(&data_dir, kept[0].group).len(), 2);
    assert_eq!(read_partition(&data_dir, kept[1].group).len(), 1);
    let _ = std::fs::remove_dir_all(&root);
}
