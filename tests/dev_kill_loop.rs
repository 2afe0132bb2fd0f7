//! `galgo dev` SIGKILLed 30 times under load: a producer thread appends continuously through
//! the routing client (each call retries, with the same request identity, until the restarted
//! node answers) while the main thread kills the process at random moments and starts it
//! again. At the end the partition log is read from disk: every acknowledged message is there
//! exactly once at its acknowledged offset, offsets are dense, and no offset was handed out
//! twice.

mod common;

use common::{create_topic, dev_command, free_address, read_partition, spawn_logged};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use galgo_consensus::prng::Prng;
use galgo_replica::partition::ops::{PartitionOp, ProducerStamp};
use galgo_replica::partition::reply::PartitionReply;
use galgo_replica::routing::RoutingClient;

const ROUNDS: usize = 30;

/// (offset, payload) of every acknowledged message, in acknowledgement order.
type Acked = Vec<(u64, Vec<u8>)>;
/// galgo dev's cluster id (the embedded configuration).
const CLUSTER: u128 = 1;

fn start(
    data_dir: &Path,
    bus: SocketAddr,
    client: SocketAddr,
    gateway: SocketAddr,
    log: &Path,
) -> Child {
    spawn_logged(
        dev_command(data_dir, bus, client, gateway, "kill-loop"),
        log,
    )
}

#[test]
fn sigkill_loop_on_galgo_dev_loses_no_acknowledged_message() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("galgo-kill-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data_dir = root.join("data");
    let log = root.join("galgo.log");
    let (bus, client_address, gateway) = (free_address(), free_address(), free_address());
    let mut child = start(&data_dir, bus, client_address, gateway, &log);

    let mut client = RoutingClient::new(CLUSTER, 0xD1E, vec![(0, client_address)]);
    let route = create_topic(&mut client, "loop", "t", 1, 1)[0].clone();

    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sequence = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("message {sequence}").into_bytes();
                let op = PartitionOp::Append {
                    base_offset: 0,
                    count: 1,
                    timestamp: 0,
                    producer: Some(ProducerStamp {
                        producer: 7,
                        epoch: 1,
                        sequence,
                    }),
                };
                let reply = client
                    .call_route(&route, op.encode(&payload))
                    .expect("every call is answered once the node is back");
                match PartitionReply::decode(&reply.body).unwrap() {
                    PartitionReply::Appended { base_offset, count } => {
                        assert_eq!(count, 1);
                        acked.lock().unwrap().push((base_offset, payload));
                    }
                    other => panic!("append {sequence} refused: {other:?}"),
                }
                sequence += 1;
            }
            (route.group, client.attempts)
        })
    };

    let mut prng = Prng::from_seed(u64::from(std::process::id()));
    let mut acked_at_kill = Vec::new();
    let mut restart_to_ack = Vec::new();
    for _ in 0..ROUNDS {
        // Under load: the restarted node acknowledges again before it is killed again.
        let before = acked.lock().unwrap().len();
        let restarted = std::time::Instant::now();
        while acked.lock().unwrap().len() == before {
            assert!(
                restarted.elapsed() < Duration::from_secs(30),
                "no acknowledgement after a restart"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        restart_to_ack.push(restarted.elapsed());
        std::thread::sleep(Duration::from_millis(prng.range_inclusive(20, 300)));
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        acked_at_kill.push(acked.lock().unwrap().len());
        child = start(&data_dir, bus, client_address, gateway, &log);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (group, attempts) = producer.join().expect("the producer never failed");
    child.kill().unwrap();
    child.wait().unwrap();

    let acked = acked.lock().unwrap().clone();
    restart_to_ack.sort();
    eprintln!(
        "start to first acknowledgement: median {:?}, max {:?}",
        restart_to_ack[restart_to_ack.len() / 2],
        restart_to_ack[restart_to_ack.len() - 1]
    );
    eprintln!(
        "{ROUNDS} SIGKILL rounds: {} messages acknowledged, {attempts} attempts (acknowledged before each kill: {acked_at_kill:?})",
        acked.len()
    );
    for (index, (offset, _)) in acked.iter().enumerate() {
        assert_eq!(
            *offset, index as u64,
            "an offset handed out twice or skipped"
        );
    }
    let messages = read_partition(&data_dir, group);
    assert!(
        messages.len() >= acked.len(),
        "{} on disk, {} acknowledged",
        messages.len(),
        acked.len()
    );
    assert_eq!(
        &messages[..acked.len()],
        &acked[..],
        "acknowledged messages on disk, in order"
    );
    for (index, (offset, payload)) in messages.iter().enumerate() {
        assert_eq!(*offset, index as u64, "dense offsets on disk");
        assert_eq!(
            messages.iter().filter(|(_, p)| p == payload).count(),
            1,
            "a message stored twice"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
