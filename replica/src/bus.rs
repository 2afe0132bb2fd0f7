//! The replica message bus: consensus messages between the nodes of a cluster over TCP, for
//! every group at once (the header names the group).
//!
//! Each node dials every peer for what it sends and accepts what peers send it: one outgoing
//! connection per peer, reconnected with a bounded backoff when it breaks, behind a bounded
//! queue (full: the message is dropped and counted; VSR retransmits). A connection opens with a
//! hello that names the cluster and the sending node; then frames are whole consensus messages,
//! each checked (header checksum, size limit, body checksum) before it is delivered. A bad
//! hello or frame closes that connection and nothing else. Inbound messages wait in one bounded
//! queue for `recv`. Frames queued for a peer while its writer was busy (the heartbeats and
//! commits of every group in one tick) leave in one write of up to 256 KiB, and the `Commit`
//! heartbeats among them leave as one `CommitBatch` frame of 48-byte records, the newest per
//! group (`commit_batch.rs`), which the receiving bus turns back into `Commit` messages.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use galgo_consensus::{Command, Message};

use crate::commit_batch::{batch_message, record_of, unbatch, CommitRecord, COMMITS_PER_BATCH_MAX};
use crate::frame::{read_frame, FrameRead};
use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

/// "galb".
const HELLO_MAGIC: u32 = 0x6761_6c62;
/// 3: `CommitBatch` frames (a node of version 2 would close the connection on one).
/// 4: `LogStart`, `RequestCheckpoint` and `Checkpoint` (state transfer).
const HELLO_VERSION: u16 = 4;
const HELLO_SIZE: usize = 32;
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(10);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);
/// A hello must arrive this soon after a connection opens, and a frame write finish this soon.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// Inbound connections open at once, at most (peers need one each; the rest are strays).
const INBOUND_MAX: usize = 256;

#[derive(Clone, Debug)]
pub struct BusConfig {
    pub cluster: u128,
    pub node: u8,
    /// This bus's shard of its node, and the node's shard count (every node runs as many).
    pub shard: u16,
    pub shards: u16,
    /// Every other node and the address its bus listens on.
    pub peers: Vec<(u8, SocketAddr)>,
    /// Messages queued per peer while its connection is down or slow.
    pub send_queue_max: usize,
    /// Messages received and not yet taken by `recv`.
    pub recv_queue_max: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    pub sent: u64,
    pub received: u64,
    /// Dropped because a queue was full.
    pub dropped: u64,
    /// Connections closed for a bad hello or frame.
    pub rejected: u64,
    pub connects: u64,
    /// Inbound connections refused because `INBOUND_MAX` were open.
    pub refused: u64,
    /// `Commit` messages sent inside `CommitBatch` frames (counted in `sent` too), and the
    /// batch frames themselves.
    pub commits_batched: u64,
    pub commit_batches: u64,
}

/// What waits in a peer's queue: an encoded frame, or a `Commit` to batch.
enum Outgoing {
    Frame(Vec<u8>),
    Commit(CommitRecord),
}

/// A bounded queue with one waiting consumer.
struct Queue<T> {
    items: VecDeque<T>,
    max: usize,
    waiter: Option<Waker>,
}

impl<T> Queue<T> {
    fn new(max: usize) -> Queue<T> {
        assert!(max > 0);
        Queue {
            items: VecDeque::new(),
            max,
            waiter: None,
        }
    }

    /// Appends `item` unless full; wakes the consumer.
    fn push(&mut self, item: T) -> bool {
        if self.items.len() >= self.max {
            return false;
        }
        self.items.push_back(item);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
        true
    }
}

async fn pop<T>(queue: &RefCell<Queue<T>>, stopped: &Cell<bool>) -> Option<T> {
    std::future::poll_fn(|cx| {
        if stopped.get() {
            return Poll::Ready(None);
        }
        let mut queue = queue.borrow_mut();
        match queue.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None => {
                queue.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

/// Bytes one write to a peer carries, at most (a frame larger than this goes alone).
const BATCH_BYTES_MAX: usize = 256 * 1024;

/// One write's worth for a peer: `first` and what is queued behind it, frames up to
/// `BATCH_BYTES_MAX` and commits up to `COMMITS_PER_BATCH_MAX` groups, as one buffer.
struct Write {
    bytes: Vec<u8>,
    /// Messages it carries (a batched `Commit` counts as one).
    messages: u64,
    commits_batched: u64,
    commit_batches: u64,
}

fn take_write(queue: &RefCell<Queue<Outgoing>>, first: Outgoing, cluster: u128) -> Write {
    let mut queue = queue.borrow_mut();
    let mut bytes = Vec::new();
    let mut messages = 0;
    // The newest commit per group: an older one of the same group says less.
    let mut commits: BTreeMap<u64, CommitRecord> = BTreeMap::new();
    let mut commits_taken = 0;
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match item {
            Outgoing::Frame(frame) => bytes.extend_from_slice(&frame),
            Outgoing::Commit(record) => {
                commits.insert(record.group, record);
                commits_taken += 1;
            }
        }
        messages += 1;
        let fits = match queue.items.front() {
            Some(Outgoing::Frame(frame)) => bytes.len() + frame.len() <= BATCH_BYTES_MAX,
            Some(Outgoing::Commit(record)) => {
                commits.len() < COMMITS_PER_BATCH_MAX || commits.contains_key(&record.group)
            }
            None => false,
        };
        if fits {
            next = queue.items.pop_front();
        }
    }
    let mut commit_batches = 0;
    if !commits.is_empty() {
        let records: Vec<CommitRecord> = commits.into_values().collect();
        bytes.extend_from_slice(&batch_message(cluster, &records).encode());
        commit_batches = 1;
    }
    Write {
        bytes,
        messages,
        commits_batched: commits_taken,
        commit_batches,
    }
}

struct Shared {
    config: BusConfig,
    outgoing: BTreeMap<u8, RefCell<Queue<Outgoing>>>,
    incoming: RefCell<Queue<(u8, Message)>>,
    stats: RefCell<BusStats>,
    stopped: Cell<bool>,
    inbound: Cell<usize>,
}

/// A running bus; dropping it stops its tasks (they notice at their next wake).
pub struct Bus {
    shared: Rc<Shared>,
    local: SocketAddr,
}

impl Bus {
    /// Listens on `listen` (port 0 picks one: see `local_addr`) and starts a sender task per
    /// peer and the accept loop. Must run inside a monoio runtime.
    pub fn start(config: BusConfig, listen: SocketAddr) -> std::io::Result<Bus> {
        assert!(config.send_queue_max > 0 && config.recv_queue_max > 0);
        assert!(config.peers.iter().all(|(id, _)| *id != config.node));
        // No SO_REUSEPORT (monoio's default): a second bus on one address must fail to bind,
        // not share the port and split the connections.
        let options = monoio::net::ListenerOpts::default().reuse_port(false);
        let listener = TcpListener::bind_with_config(listen, &options)?;
        let local = listener.local_addr()?;
        let outgoing = config
            .peers
            .iter()
            .map(|(id, _)| (*id, RefCell::new(Queue::new(config.send_queue_max))))
            .collect();
        let shared = Rc::new(Shared {
            incoming: RefCell::new(Queue::new(config.recv_queue_max)),
            outgoing,
            stats: RefCell::new(BusStats::default()),
            stopped: Cell::new(false),
            inbound: Cell::new(0),
            config,
        });
        for (peer, address) in shared.config.peers.clone() {
            monoio::spawn(send_loop(shared.clone(), peer, address));
        }
        monoio::spawn(accept_loop(shared.clone(), listener));
        Ok(Bus { shared, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Queues `message` for `peer`; a full queue or an unknown peer drops it (counted).
    pub fn send(&self, peer: u8, message: &Message) {
        let queued = match self.shared.outgoing.get(&peer) {
            Some(queue) => queue.borrow_mut().push(match record_of(message) {
                Some(record) => Outgoing::Commit(record),
                None => Outgoing::Frame(message.encode()),
            }),
            None => false,
        };
        if !queued {
            self.shared.stats.borrow_mut().dropped += 1;
        }
    }

    /// The next message from a peer: (its node id, the message).
    pub async fn recv(&self) -> (u8, Message) {
        pop(&self.shared.incoming, &self.shared.stopped)
            .await
            .expect("a running bus is not stopped")
    }

    pub fn stats(&self) -> BusStats {
        self.shared.stats.borrow().clone()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.shared.stopped.set(true);
        // The accept loop waits for a connection: give it one, so it sees the stop and closes
        // the listener. Other tasks see it at their next wake (a frame, a closed connection,
        // the end of a delay or deadline).
        let _ = std::net::TcpStream::connect_timeout(&self.local, Duration::from_millis(100));
        for queue in self.shared.outgoing.values() {
            if let Some(waker) = queue.borrow_mut().waiter.take() {
                waker.wake();
            }
        }
    }
}

/// Runs `future` until it finishes, unless the bus has stopped (`None`, checked whenever the
/// task wakes).
async fn unless_stopped<T>(shared: &Shared, future: impl Future<Output = T>) -> Option<T> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        if shared.stopped.get() {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

/// `future`, unless the bus stops or `IO_DEADLINE` passes first (both `None`).
async fn within_deadline<T>(shared: &Shared, future: impl Future<Output = T>) -> Option<T> {
    unless_stopped(shared, monoio::time::timeout(IO_DEADLINE, future))
        .await
        .and_then(Result::ok)
}

fn hello(config: &BusConfig) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HELLO_SIZE);
    bytes.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&HELLO_VERSION.to_le_bytes());
    bytes.push(config.node);
    bytes.extend_from_slice(&config.shard.to_le_bytes());
    bytes.extend_from_slice(&config.shards.to_le_bytes());
    bytes.resize(16, 0);
    let cluster = config.cluster;
    bytes.extend_from_slice(&cluster.to_le_bytes());
    assert_eq!(bytes.len(), HELLO_SIZE);
    bytes
}

/// The sending node a hello names, if it is one of ours for our cluster and the same shard
/// of a node with as many shards (shard s of every node talks to shard s of the others).
fn parse_hello(bytes: &[u8], config: &BusConfig) -> Option<u8> {
    assert_eq!(bytes.len(), HELLO_SIZE);
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
    let node = bytes[6];
    let shard = u16::from_le_bytes(bytes[7..9].try_into().expect("2 bytes"));
    let shards = u16::from_le_bytes(bytes[9..11].try_into().expect("2 bytes"));
    let cluster = u128::from_le_bytes(bytes[16..32].try_into().expect("16 bytes"));
    let known = config.peers.iter().any(|(id, _)| *id == node);
    (magic == HELLO_MAGIC
        && version == HELLO_VERSION
        && cluster == config.cluster
        && known
        && shard == config.shard
        && shards == config.shards)
        .then_some(node)
}

/// Why a hello from a node of our cluster was refused for its shards, if that is why.
fn shard_mismatch(bytes: &[u8], config: &BusConfig) -> Option<String> {
    let cluster = u128::from_le_bytes(bytes[16..32].try_into().expect("16 bytes"));
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != HELLO_MAGIC || cluster != config.cluster {
        return None;
    }
    let shard = u16::from_le_bytes(bytes[7..9].try_into().expect("2 bytes"));
    let shards = u16::from_le_bytes(bytes[9..11].try_into().expect("2 bytes"));
    (shard != config.shard || shards != config.shards).then(|| {
        format!(
            "node {} connected as shard {shard} of {shards} to our shard {} of {}: every node must run the same replica.shards",
            bytes[6], config.shard, config.shards
        )
    })
}

async fn send_loop(shared: Rc<Shared>, peer: u8, address: SocketAddr) {
    let mut delay = RECONNECT_DELAY_MIN;
    while !shared.stopped.get() {
        if let Some(Ok(mut stream)) =
            within_deadline(&shared, TcpStream::connect_addr(address)).await
        {
            let _ = stream.set_nodelay(true);
            shared.stats.borrow_mut().connects += 1;
            let hello = hello(&shared.config);
            if let Some((Ok(_), _)) = within_deadline(&shared, stream.write_all(hello)).await {
                let queue = &shared.outgoing[&peer];
                while let Some(first) = pop(queue, &shared.stopped).await {
                    // Every frame already queued for this peer (the heartbeats and commits of
                    // many groups in one tick) goes out in the same write.
                    let write = take_write(queue, first, shared.config.cluster);
                    match within_deadline(&shared, stream.write_all(write.bytes)).await {
                        Some((Ok(_), _)) => {
                            let mut stats = shared.stats.borrow_mut();
                            stats.sent += write.messages;
                            stats.commits_batched += write.commits_batched;
                            stats.commit_batches += write.commit_batches;
                            drop(stats);
                            // A connection that carries frames resets the backoff.
                            delay = RECONNECT_DELAY_MIN;
                        }
                        // Lost with the connection (or stuck past the deadline); VSR
                        // retransmits.
                        _ => break,
                    }
                }
            }
        }
        // Not up yet, refused, or gone: try again later, backing off.
        if unless_stopped(&shared, monoio::time::sleep(delay))
            .await
            .is_none()
        {
            return;
        }
        delay = (delay * 2).min(RECONNECT_DELAY_MAX);
    }
}

async fn accept_loop(shared: Rc<Shared>, listener: TcpListener) {
    while let Some(accepted) = unless_stopped(&shared, listener.accept()).await {
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, say: wait a little rather than spin.
            let _ = unless_stopped(&shared, monoio::time::sleep(RECONNECT_DELAY_MIN)).await;
            continue;
        };
        if shared.inbound.get() >= INBOUND_MAX {
            shared.stats.borrow_mut().refused += 1;
            continue; // Dropping the stream closes it.
        }
        shared.inbound.set(shared.inbound.get() + 1);
        let task_shared = shared.clone();
        monoio::spawn(async move {
            receive_loop(&task_shared, stream).await;
            task_shared.inbound.set(task_shared.inbound.get() - 1);
        });
    }
}

async fn receive_loop(shared: &Shared, mut stream: TcpStream) {
    let read = within_deadline(shared, stream.read_exact(vec![0u8; HELLO_SIZE])).await;
    let Some((Ok(_), bytes)) = read else {
        return;
    };
    let Some(peer) = parse_hello(&bytes, &shared.config) else {
        shared.stats.borrow_mut().rejected += 1;
        if let Some(why) = shard_mismatch(&bytes, &shared.config) {
            // A misconfigured cluster never forms: say why where the operator looks.
            eprintln!("galgo: bus: {why}");
        }
        return;
    };
    loop {
        let message =
            match unless_stopped(shared, read_frame(&mut stream, shared.config.cluster)).await {
                Some(FrameRead::Message(message)) => message,
                // Stopped, or the peer closed the connection.
                None | Some(FrameRead::Closed) => return,
                Some(FrameRead::Rejected) => {
                    shared.stats.borrow_mut().rejected += 1;
                    return;
                }
            };
        let messages = if message.header.command == Command::CommitBatch {
            match unbatch(&message) {
                Some(commits) => commits,
                None => {
                    shared.stats.borrow_mut().rejected += 1;
                    return;
                }
            }
        } else {
            vec![message]
        };
        for message in messages {
            let queued = shared.incoming.borrow_mut().push((peer, message));
            let mut stats = shared.stats.borrow_mut();
            if queued {
                stats.received += 1;
            } else {
                stats.dropped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_consensus::{Command, Header};

    fn message(group: u64, body: &[u8]) -> Message {
        Message::new(Header::new(Command::Prepare, 9, group), body.to_vec())
    }

    fn config(node: u8, peers: Vec<(u8, SocketAddr)>) -> BusConfig {
        BusConfig {
            cluster: 9,
            node,
            shard: 0,
            shards: 1,
            peers,
            send_queue_max: 1024,
            recv_queue_max: 1024,
        }
    }

    fn free_address() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn messages_cross_in_order_and_a_late_peer_is_reached_by_reconnecting() {
        let (a_address, b_address) = (free_address(), free_address());
        let ((), _) = galgo_storage::file_disk::block_on(async move {
            let a = Bus::start(config(0, vec![(1, b_address)]), a_address).unwrap();
            // B is not up yet: A queues and keeps trying.
            for i in 0..100u32 {
                a.send(1, &message(u64::from(i % 3), &i.to_le_bytes()));
            }
            monoio::time::sleep(Duration::from_millis(50)).await;
            let b = Bus::start(config(1, vec![(0, a_address)]), b_address).unwrap();
            for i in 0..100u32 {
                let (from, received) = b.recv().await;
                assert_eq!(from, 0);
                assert_eq!(received.body[..], i.to_le_bytes());
                assert_eq!(received.header.group, u64::from(i % 3));
            }
            b.send(0, &message(7, b"back"));
            let (from, received) = a.recv().await;
            assert_eq!((from, &received.body[..]), (1, b"back".as_slice()));
            assert_eq!(a.stats().sent, 100);
            assert!(a.stats().connects >= 1);
            // An unknown peer or a full queue drops, and says so.
            a.send(5, &message(0, b"nobody"));
            assert_eq!(a.stats().dropped, 1);
        });
    }

    fn commit(group: u64, commit: u64) -> Message {
        crate::commit_batch::CommitRecord {
            group,
            op: commit + 1,
            commit,
            context: u128::from(commit) * 31,
            view: 2,
            replica: 0,
        }
        .message(9)
    }

    #[test]
    fn commits_queued_for_a_peer_leave_as_one_batch_of_the_newest_per_group() {
        let (a_address, b_address) = (free_address(), free_address());
        let ((), _) = galgo_storage::file_disk::block_on(async move {
            let a = Bus::start(config(0, vec![(1, b_address)]), a_address).unwrap();
            // B is not up yet: everything queues, then leaves in one write.
            for round in 1..=2u64 {
                for group in 0..100u64 {
                    a.send(1, &commit(group, 10 * round));
                }
                a.send(1, &message(7, &round.to_le_bytes()));
            }
            monoio::time::sleep(Duration::from_millis(50)).await;
            let b = Bus::start(config(1, vec![(0, a_address)]), b_address).unwrap();
            let mut commits = BTreeMap::new();
            let mut others = Vec::new();
            while others.len() < 2 || commits.len() < 100 {
                let (from, received) = b.recv().await;
                assert_eq!(from, 0);
                if received.header.command == Command::Commit {
                    // The very message a sent, rebuilt from its record.
                    let group = received.header.group;
                    assert!(received == commit(group, 10) || received == commit(group, 20));
                    commits.insert(group, received.header.commit);
                } else {
                    others.push(received.body.to_vec());
                }
            }
            assert_eq!(others, vec![1u64.to_le_bytes(), 2u64.to_le_bytes()]);
            assert!(commits.values().all(|commit| *commit == 20));
            let stats = a.stats();
            assert_eq!(stats.commits_batched, 200);
            assert_eq!(stats.sent, 202);
            assert!(
                stats.commit_batches >= 1 && stats.commit_batches <= 2,
                "{stats:?}"
            );
            // Fewer messages arrived than were sent: the older commit of each group was
            // dropped in its batch.
            assert_eq!(b.stats().received, 102);
        });
    }

    #[test]
    fn garbage_and_strangers_close_their_connection_and_nothing_else() {
        let (a_address, b_address) = (free_address(), free_address());
        let ((), _) = galgo_storage::file_disk::block_on(async move {
            let b = Bus::start(config(1, vec![(0, a_address)]), b_address).unwrap();
            // A stranger from another cluster.
            let mut stranger = TcpStream::connect_addr(b_address).await.unwrap();
            let other_cluster = BusConfig {
                cluster: 8,
                ..config(0, vec![])
            };
            let _ = stranger.write_all(hello(&other_cluster)).await;
            // A known node whose shards do not pair with ours.
            let mut unpaired = TcpStream::connect_addr(b_address).await.unwrap();
            let other_shards = BusConfig {
                shard: 1,
                shards: 2,
                ..config(0, vec![])
            };
            let _ = unpaired.write_all(hello(&other_shards)).await;
            // A known node that then sends a frame with a broken checksum.
            let mut liar = TcpStream::connect_addr(b_address).await.unwrap();
            let _ = liar.write_all(hello(&config(0, vec![]))).await;
            let mut frame = message(1, b"abc").encode();
            let last = frame.len() - 1;
            frame[last] ^= 1; // A body byte: the body checksum fails.
            let _ = liar.write_all(frame).await;
            // An honest node still gets through.
            let a = Bus::start(config(0, vec![(1, b_address)]), a_address).unwrap();
            a.send(1, &message(1, b"fine"));
            let (_, received) = b.recv().await;
            assert_eq!(&received.body[..], b"fine");
            for _ in 0..100 {
                if b.stats().rejected == 3 {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(b.stats().rejected, 3);
            assert_eq!(b.stats().received, 1);
        });
    }
}
