//! Three replicas of one VSR group in one process, each with its own directory of real files
//! (`FileDisk`: O_DIRECT segment log and superblock) and its own message bus on 127.0.0.1: a
//! client's requests are committed over TCP; the primary is killed (its tasks and bus go, its
//! files stay) and the other two go on; it restarts from its files and catches up; every
//! replica applies the same requests in order. Prints the time from the kill to the next
//! acknowledged write.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use galgo_consensus::header::operation;
use galgo_consensus::recovery::RecoveryBugs;
use galgo_consensus::{Bugs, Command, Config, Header, Message, Replica, StateMachine, Timeouts};
use galgo_replica::bus::{Bus, BusConfig};
use galgo_replica::group_host::{Event, GroupHost, Ticks};
use galgo_replica::journal::{no_messages, SegmentJournal};
use galgo_replica::view_state::ViewStateStore;
use galgo_storage::file_disk::block_on;
use galgo_storage::{FileDisk, LogConfig};

const CLUSTER: u128 = 0x3;
const GROUP: u64 = 1;
const OPS_MAX: u64 = 100_000;
const CLIENT: u128 = 5;

#[derive(Default)]
struct Bodies {
    applied: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl StateMachine for Bodies {
    fn apply(&mut self, _op: u64, _timestamp: u64, operation: u8, body: &[u8]) -> Vec<u8> {
        if operation >= operation::APPLICATION_MIN {
            self.applied.borrow_mut().push(body.to_vec());
        }
        Vec::new()
    }
}

fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn request(session: u64, number: u32, operation: u8) -> Message {
    let mut header = Header::new(Command::Request, CLUSTER, GROUP);
    header.client = CLIENT;
    header.operation = operation;
    header.session = session;
    header.request = number;
    let body = if operation == operation::REGISTER {
        Vec::new()
    } else {
        format!("request {number}").into_bytes()
    };
    Message::new(header, body)
}

/// Sends `request` to every replica until one replies (a client that does not know the
/// primary), within a bound.
async fn call(hosts: &[Rc<GroupHost<Bodies, FileDisk>>], request: &Message) -> Message {
    for _ in 0..500 {
        for host in hosts {
            host.deliver(Event::Message(request.clone()));
        }
        for _ in 0..20 {
            monoio::time::sleep(Duration::from_millis(5)).await;
            for host in hosts {
                let reply = host
                    .replies
                    .borrow()
                    .iter()
                    .find(|r| r.header.context == request.header.checksum)
                    .cloned();
                if let Some(reply) = reply {
                    return reply;
                }
            }
        }
    }
    panic!("no reply to request {}", request.header.request);
}

type Host = Rc<GroupHost<Bodies, FileDisk>>;

/// Starts node `node`: its bus, superblock and journal on `dir`, its replica and host, and the
/// dispatcher that hands the group every message from a peer. Retries the bind while a
/// killed predecessor's listener is still closing.
async fn start_node(
    node: u8,
    dir: &std::path::Path,
    addresses: &[SocketAddr],
) -> (Host, Rc<RefCell<Vec<Vec<u8>>>>) {
    std::fs::create_dir_all(dir).unwrap();
    let disk: &'static FileDisk = Box::leak(Box::new(FileDisk::new(dir)));
    let peers: Vec<(u8, SocketAddr)> = (0..3u8)
        .filter(|p| *p != node)
        .map(|p| (p, addresses[p as usize]))
        .collect();
    let mut bus = None;
    for _ in 0..200 {
        let config = BusConfig {
            cluster: CLUSTER,
            node,
            shard: 0,
            shards: 1,
            peers: peers.clone(),
            send_queue_max: 4096,
            recv_queue_max: 4096,
        };
        match Bus::start(config, addresses[node as usize]) {
            Ok(started) => {
                bus = Some(Rc::new(started));
                break;
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let bus = bus.expect("the listener address frees up");
    let (view_state, durable) = ViewStateStore::open(disk, "superblock").await.unwrap();
    let (journal, recovered) = SegmentJournal::open(
        disk,
        LogConfig::new("group-1"),
        &durable,
        Header::root(CLUSTER, GROUP),
        OPS_MAX,
        no_messages,
        RecoveryBugs::default(),
        None,
    )
    .await
    .unwrap();
    let bodies = Bodies::default();
    let applied = bodies.applied.clone();
    let config = Config {
        cluster: CLUSTER,
        group: GROUP,
        replica_count: 3,
        replica: node,
        placement_offset: 0,
        pipeline_max: 8,
        request_queue_max: 64,
        clients_max: 8,
        ops_max: OPS_MAX,
        journal_keep_ops: galgo_consensus::JOURNAL_KEEP_OPS_MIN,
        redundant_headers: false,
        return_leadership: false,
        timeouts: Timeouts::default(),
        bugs: Bugs::none(),
    };
    let replica = Replica::open(config, bodies, durable, recovered, u64::from(node) + 1);
    let host = GroupHost::start(
        replica,
        journal,
        view_state,
        bus.clone(),
        vec![0, 1, 2],
        None,
        Ticks::Own,
    );
    let dispatch = Rc::downgrade(&host);
    monoio::spawn(async move {
        loop {
            let (_, message) = bus.recv().await;
            // A killed node's dispatcher ends here, and its bus with it.
            let Some(host) = dispatch.upgrade() else {
                return;
            };
            host.deliver(Event::Message(message));
        }
    });
    (host, applied)
}

#[test]
fn three_replicas_over_tcp_and_real_disks_commit_survive_a_primary_kill_and_catch_up() {
    let root = std::env::temp_dir().join(format!("galgo-three-nodes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let addresses: Vec<SocketAddr> = (0..3).map(|_| free_address()).collect();
    let root_for_run = root.clone();
    let ((), _) = block_on(async move {
        let mut hosts: Vec<Option<Host>> = Vec::new();
        let mut applied = Vec::new();
        for node in 0..3u8 {
            let (host, bodies) =
                start_node(node, &root_for_run.join(node.to_string()), &addresses).await;
            hosts.push(Some(host));
            applied.push(bodies);
        }
        let running =
            |hosts: &[Option<Host>]| -> Vec<Host> { hosts.iter().flatten().cloned().collect() };
        let register = call(&running(&hosts), &request(0, 0, operation::REGISTER)).await;
        let session = register.header.session;
        let mut expected = Vec::new();
        for number in 1..=20 {
            let request = request(session, number, operation::APPLICATION_MIN);
            call(&running(&hosts), &request).await;
            expected.push(request.body.clone());
        }
        // Kill the primary: its host, tasks and bus go; its files stay.
        let primary = (0..3)
            .find(|n| hosts[*n].as_ref().unwrap().replica.borrow().is_primary())
            .expect("a primary");
        hosts[primary] = None;
        let killed = std::time::Instant::now();
        let mut gap = None;
        for number in 21..=40 {
            let request = request(session, number, operation::APPLICATION_MIN);
            call(&running(&hosts), &request).await;
            gap.get_or_insert(killed.elapsed());
            expected.push(request.body.clone());
        }
        eprintln!(
            "primary {primary} killed: next acknowledged write after {:?}",
            gap.unwrap()
        );
        // Restart it from its files: it catches up on what it missed.
        let (host, bodies) = start_node(
            primary as u8,
            &root_for_run.join(primary.to_string()),
            &addresses,
        )
        .await;
        hosts[primary] = Some(host);
        applied[primary] = bodies;
        for number in 41..=45 {
            let request = request(session, number, operation::APPLICATION_MIN);
            call(&running(&hosts), &request).await;
            expected.push(request.body.clone());
        }
        for _ in 0..1000 {
            if applied.iter().all(|a| *a.borrow() == expected) {
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        for (node, bodies) in applied.iter().enumerate() {
            assert_eq!(*bodies.borrow(), expected, "replica {node}");
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}
