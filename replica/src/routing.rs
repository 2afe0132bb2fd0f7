//! The routing client: how a gateway (or a test, or a tool) reaches a Galgo cluster's groups
//! through the nodes' client ports. It keeps one VSR client session per group, sends each
//! request to the node it believes leads the group (from the group's placement and the view
//! of the last reply), and on silence, a closed connection or a refused one tries the next
//! member, with the same request identity (client, session, request number): the group's
//! session table makes a retried request execute at most once, and a retry of a request that
//! already committed gets the original reply. Blocking (std sockets), one request in flight
//! per client; the gateway runs one per connection. A client given its process's
//! `LocalPorts` reaches that node's shards through in-process links instead of TCP.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use galgo_consensus::header::{operation, HEADER_SIZE};
use galgo_consensus::message::BODY_SIZE_MAX;
use galgo_consensus::{Command, Header, Message};

use crate::client_protocol::{
    GroupStatus, GroupStatusQuery, MetadataAnswer, MetadataQuery, PartitionRoute, PollQuery,
    PollReply, Polled, ReplicaStatus, TopicQuery, TopicRoutes, OPERATION_BROKER,
    OPERATION_GROUP_STATUS, OPERATION_METADATA, OPERATION_NOT_PRIMARY, OPERATION_POLL,
    OPERATION_TOPIC_ROUTES,
};
use crate::local_port::{LinkFailure, LocalLink, LocalPorts};
use crate::metadata::{Limits, Metadata};
use crate::node::{shard_address, METADATA_GROUP};

/// How long one node gets to answer before the next member is tried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a call keeps trying before it gives up.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// How long one write may block: a node cut off by a partition stops acknowledging, and once
/// the socket's send buffer is full a write without a limit would wait for the partition to
/// heal instead of moving on to the other members.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause after a round of members that all failed to answer.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub enum RoutingError {
    /// No member answered within the deadline.
    Timeout { group: u64, attempts: u32 },
    /// The group dropped this client's session (its table was full): register again.
    Evicted { group: u64 },
    /// A node does not know of the node id a placement names.
    UnknownNode(u8),
    /// A request that cannot be encoded, or a reply that does not decode.
    Protocol(String),
}

impl fmt::Display for RoutingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutingError::Timeout { group, attempts } => write!(
                f,
                "group {group}: no answer after {attempts} attempts in {CALL_DEADLINE:?}"
            ),
            RoutingError::Evicted { group } => write!(f, "group {group}: session evicted"),
            RoutingError::UnknownNode(node) => write!(f, "node {node} is not in the client's list"),
            RoutingError::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for RoutingError {}

struct Session {
    session: u64,
    request: u32,
}

pub struct RoutingClient {
    cluster: u128,
    client: u128,
    nodes: BTreeMap<u8, SocketAddr>,
    /// One connection per (node, shard): shard s of a node listens on its port + s.
    connections: BTreeMap<(u8, u16), Link>,
    /// This process's node, reached through in-process links.
    local: Option<Arc<LocalPorts>>,
    /// The shard that runs each partition group (from its route; 0 when unknown).
    shards: BTreeMap<u64, u16>,
    sessions: BTreeMap<u64, Session>,
    /// The last view each group replied in: its primary is `members[(view + offset) % n]`.
    views: BTreeMap<u64, u32>,
    /// Attempts made by every call so far (a retry count, for reports).
    pub attempts: u64,
    /// Queries sent so far (node-answered requests take their request number from it).
    queries: u32,
    /// How long one node gets to answer before the next member is tried.
    attempt_timeout: Duration,
}

/// The reply to `request`, and the view it came from.
pub struct Reply {
    pub body: bytes::Bytes,
    pub view: u32,
    pub op: u64,
}

impl RoutingClient {
    /// A client with identity `client` (non-zero, unique per client: the groups' session
    /// tables key on it) for a cluster whose nodes' client ports are `nodes`.
    pub fn new(cluster: u128, client: u128, nodes: Vec<(u8, SocketAddr)>) -> RoutingClient {
        assert!(client != 0, "client 0 is reserved");
        RoutingClient {
            cluster,
            client,
            nodes: nodes.into_iter().collect(),
            connections: BTreeMap::new(),
            local: None,
            shards: BTreeMap::new(),
            sessions: BTreeMap::new(),
            views: BTreeMap::new(),
            attempts: 0,
            queries: 0,
            attempt_timeout: ATTEMPT_TIMEOUT,
        }
    }

    /// Waits `timeout` for each node's answer instead of `ATTEMPT_TIMEOUT` (large requests
    /// to a node whose disk is slow need longer before another member is worth trying).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> RoutingClient {
        assert!(timeout > Duration::ZERO);
        self.attempt_timeout = timeout;
        self
    }

    /// Reaches node `local.node()` through in-process links (a gateway in the node's process).
    pub fn with_local_ports(mut self, local: Arc<LocalPorts>) -> RoutingClient {
        assert!(
            self.nodes.contains_key(&local.node()),
            "a node of the cluster"
        );
        self.local = Some(local);
        self
    }

    /// The view of the last reply from `group`, if it ever replied.
    pub fn last_view(&self, group: u64) -> Option<u32> {
        self.views.get(&group).copied()
    }

    /// Where a topic's partitions are, from the first node that knows the topic (paged; all
    /// pages from that node).
    pub fn topic_routes(
        &mut self,
        stream: &str,
        topic: &str,
    ) -> Result<Option<Vec<PartitionRoute>>, RoutingError> {
        let nodes: Vec<u8> = self.nodes.keys().copied().collect();
        let mut answered = false;
        'nodes: for node in nodes {
            let mut routes: Vec<PartitionRoute> = Vec::new();
            // One page per round; a topic has at most u32::MAX partitions.
            loop {
                let query = TopicQuery {
                    stream: stream.to_string(),
                    topic: topic.to_string(),
                    first: routes.len() as u32,
                };
                let body = query.encode().map_err(|e| RoutingError::Protocol(e.0))?;
                let request = self.query(METADATA_GROUP, OPERATION_TOPIC_ROUTES, body);
                let Some(reply) = self.exchange(node, 0, &request) else {
                    continue 'nodes;
                };
                match TopicRoutes::decode(&reply.body) {
                    Ok(TopicRoutes(Some(page))) if page.first as usize == routes.len() => {
                        let done = page.routes.is_empty()
                            || page.first as usize + page.routes.len() >= page.total as usize;
                        for route in &page.routes {
                            self.shards.insert(route.group, route.shard);
                        }
                        routes.extend(page.routes);
                        if done {
                            return Ok(Some(routes));
                        }
                    }
                    Ok(TopicRoutes(None)) => {
                        answered = true;
                        continue 'nodes;
                    }
                    // A page that does not follow (the topic changed meanwhile) or garbage.
                    _ => continue 'nodes,
                }
            }
        }
        if answered {
            return Ok(None);
        }
        Err(RoutingError::Timeout {
            group: METADATA_GROUP,
            attempts: self.nodes.len() as u32,
        })
    }

    /// A query a node answers itself; each gets its own request number, so a late answer to
    /// an earlier query is never taken for this one's.
    fn query(&mut self, group: u64, operation: u8, body: Vec<u8>) -> Message {
        self.queries = self.queries.wrapping_add(1);
        let mut header = Header::new(Command::Request, self.cluster, group);
        header.client = self.client;
        header.operation = operation;
        header.request = self.queries;
        Message::new(header, body)
    }

    /// How `node`'s replica of `group` stands (`Ok(None)`: the node does not run it);
    /// `Err` when the node does not answer within one attempt.
    pub fn group_status(
        &mut self,
        node: u8,
        group: u64,
    ) -> Result<Option<ReplicaStatus>, RoutingError> {
        let request = self.query(
            METADATA_GROUP,
            OPERATION_GROUP_STATUS,
            GroupStatusQuery { group }.encode(),
        );
        let shard = self.shard(group)?;
        let reply = self
            .exchange(node, shard, &request)
            .ok_or(RoutingError::Timeout {
                group: METADATA_GROUP,
                attempts: 1,
            })?;
        GroupStatus::decode(&reply.body)
            .map(|status| status.0)
            .map_err(|e| RoutingError::Protocol(e.to_string()))
    }

    /// Committed messages of a partition from `query.offset`: the group's committed end and
    /// the batches, from its presumed primary first, then any member that runs the group (a
    /// replica serves only what it has applied, never above the commit).
    pub fn poll(
        &mut self,
        route: &PartitionRoute,
        query: PollQuery,
    ) -> Result<Polled, RoutingError> {
        self.shards.insert(route.group, route.shard);
        let n = route.members.len() as u64;
        let view = u64::from(self.views.get(&route.group).copied().unwrap_or(0));
        // Each member up to three times.
        for attempt in 0..3 * n {
            let index = (view + u64::from(route.placement_offset) + attempt) % n;
            let node = route.members[index as usize];
            let request = self.query(route.group, OPERATION_POLL, query.encode());
            let Some(reply) = self.exchange(node, route.shard, &request) else {
                continue;
            };
            match PollReply::decode(&reply.body) {
                Ok(PollReply(Some(polled))) => return Ok(polled),
                Ok(PollReply(None)) => continue, // That node does not run the group (yet).
                Err(error) => return Err(RoutingError::Protocol(error.to_string())),
            }
        }
        Err(RoutingError::Timeout {
            group: route.group,
            attempts: (3 * n) as u32,
        })
    }

    /// The metadata as some node applied it through at least op `applied_at_least` (pass the
    /// `op` of this client's last metadata reply to read its own writes) — only the metadata
    /// primary's when `from_primary` — with the op it was applied through. The presumed
    /// primary is asked first, then every node, until the deadline.
    pub fn metadata(
        &mut self,
        applied_at_least: u64,
        from_primary: bool,
    ) -> Result<(u64, Metadata), RoutingError> {
        let members: Vec<u8> = self.nodes.keys().copied().collect();
        let n = members.len() as u64;
        assert!(n > 0);
        let deadline = Instant::now() + CALL_DEADLINE;
        let mut attempts = 0u32;
        while Instant::now() < deadline {
            let view = u64::from(self.views.get(&METADATA_GROUP).copied().unwrap_or(0));
            for index in 0..n {
                let node = members[((view + index) % n) as usize];
                attempts += 1;
                let body = MetadataQuery {
                    applied_at_least,
                    from_primary,
                }
                .encode();
                let request = self.query(METADATA_GROUP, OPERATION_METADATA, body);
                let Some(reply) = self.exchange(node, 0, &request) else {
                    continue;
                };
                match MetadataAnswer::decode(&reply.body) {
                    Ok(MetadataAnswer::State {
                        applied,
                        checkpoint,
                    }) => {
                        let metadata = Metadata::decode_snapshot(&checkpoint, Limits::default())
                            .map_err(|e| RoutingError::Protocol(e.to_string()))?;
                        return Ok((applied, metadata));
                    }
                    Ok(MetadataAnswer::Behind { .. }) => continue,
                    Ok(MetadataAnswer::TooLarge { size }) => {
                        return Err(RoutingError::Protocol(format!(
                            "the metadata checkpoint has {size} bytes, more than one answer carries"
                        )))
                    }
                    // Garbage from one node: ask the next.
                    Err(_) => continue,
                }
            }
            std::thread::sleep(RETRY_PAUSE);
        }
        Err(RoutingError::Timeout {
            group: METADATA_GROUP,
            attempts,
        })
    }

    /// A metadata op (an encoded `MetadataOp`) through group 0, over every node.
    pub fn call_metadata(&mut self, body: Vec<u8>) -> Result<Reply, RoutingError> {
        let members: Vec<u8> = self.nodes.keys().copied().collect();
        self.call(METADATA_GROUP, &members, 0, body)
    }

    /// One request to a group: registers a session first if there is none, then sends until
    /// a member replies. Partition groups go through `call_route`, which names their shard.
    fn call(
        &mut self,
        group: u64,
        members: &[u8],
        placement_offset: u8,
        body: impl Into<bytes::Bytes>,
    ) -> Result<Reply, RoutingError> {
        assert!(!members.is_empty() && usize::from(placement_offset) < members.len());
        self.register(group, members, placement_offset)?;
        let session = &self.sessions[&group];
        let mut header = Header::new(Command::Request, self.cluster, group);
        header.client = self.client;
        header.session = session.session;
        header.request = session.request + 1;
        header.operation = OPERATION_BROKER;
        let request = Message::new(header, body);
        let reply = self.send_until_reply(group, members, placement_offset, &request);
        match &reply {
            Ok(_) => self.sessions.get_mut(&group).expect("registered").request += 1,
            // After a timeout the request may yet commit: its number is spent, and a different
            // request under it would be dropped as a mismatched duplicate for good. A new
            // session starts afresh (an idempotent producer's stamps still dedupe the batch).
            Err(RoutingError::Evicted { .. } | RoutingError::Timeout { .. }) => {
                self.sessions.remove(&group);
            }
            Err(_) => {}
        }
        reply
    }

    /// Opens a session with `group` unless one is open (`call` does this on its first use).
    fn register(
        &mut self,
        group: u64,
        members: &[u8],
        placement_offset: u8,
    ) -> Result<(), RoutingError> {
        if self.sessions.contains_key(&group) {
            return Ok(());
        }
        let mut header = Header::new(Command::Request, self.cluster, group);
        header.client = self.client;
        header.operation = operation::REGISTER;
        let register = Message::new(header, Vec::new());
        let reply = self.send_until_reply(group, members, placement_offset, &register)?;
        self.sessions.insert(
            group,
            Session {
                session: reply.op,
                request: 0,
            },
        );
        Ok(())
    }

    fn send_until_reply(
        &mut self,
        group: u64,
        members: &[u8],
        placement_offset: u8,
        request: &Message,
    ) -> Result<Reply, RoutingError> {
        for member in members {
            if !self.nodes.contains_key(member) {
                return Err(RoutingError::UnknownNode(*member));
            }
        }
        let shard = self.shard(group)?;
        let started = Instant::now();
        let n = members.len() as u64;
        let view = u64::from(self.views.get(&group).copied().unwrap_or(0));
        let mut attempt = 0u32;
        while started.elapsed() < CALL_DEADLINE {
            let index = (view + u64::from(placement_offset) + u64::from(attempt)) % n;
            let node = members[index as usize];
            attempt += 1;
            self.attempts += 1;
            if attempt > 1 && (attempt - 1).is_multiple_of(members.len() as u32) {
                // Every member tried without an answer (down, or electing): pause before the
                // next round rather than spin on refused connections.
                std::thread::sleep(RETRY_PAUSE);
            }
            match self.exchange(node, shard, request) {
                Some(reply) if reply.header.command == Command::Eviction => {
                    return Err(RoutingError::Evicted { group });
                }
                // That node does not run the group (yet): the next member, without waiting.
                Some(reply) if reply.header.operation == OPERATION_NOT_PRIMARY => {}
                Some(reply) => {
                    self.views.insert(group, reply.header.view);
                    return Ok(Reply {
                        view: reply.header.view,
                        op: if request.header.operation == operation::REGISTER {
                            reply.header.session
                        } else {
                            reply.header.op
                        },
                        body: reply.body,
                    });
                }
                None => {}
            }
        }
        Err(RoutingError::Timeout {
            group,
            attempts: attempt,
        })
    }

    /// Sends `request` to `node` and waits up to the attempt timeout for its reply (or this
    /// client's eviction); `None` on silence or a broken connection.
    fn exchange(&mut self, node: u8, shard: u16, request: &Message) -> Option<Message> {
        let sent = match self.connection(node, shard)? {
            // Sealed by `Message::new` in this client; header and body go out without a copy.
            Link::Tcp(stream) => {
                let (head, body) = request.frame_parts();
                write_all_vectored(stream, &head, body).is_ok()
            }
            Link::Local(link) => link.send(request).is_ok(),
        };
        if !sent {
            self.connections.remove(&(node, shard));
            return None;
        }
        let deadline = Instant::now() + self.attempt_timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let received = match self.connections.get_mut(&(node, shard))? {
                Link::Tcp(stream) => receive_tcp(stream, left, self.cluster),
                Link::Local(link) => link.receive(left),
            };
            match received {
                Ok(message) => {
                    let answers = message.header.context == request.header.checksum
                        && message.header.command == Command::Reply;
                    let evicts = message.header.command == Command::Eviction
                        && message.header.client == self.client
                        && message.header.group == request.header.group;
                    if answers || evicts {
                        return Some(message);
                    }
                    // A late reply to an earlier attempt: skip it.
                }
                Err(LinkFailure::TimedOut) => return None,
                Err(LinkFailure::Broken) => {
                    self.connections.remove(&(node, shard));
                    return None;
                }
            }
        }
    }

    fn connection(&mut self, node: u8, shard: u16) -> Option<&mut Link> {
        if !self.connections.contains_key(&(node, shard)) {
            let link = match &self.local {
                Some(local) if local.node() == node => Link::Local(local.connect(shard)?),
                _ => {
                    let address = shard_address(*self.nodes.get(&node)?, shard)?;
                    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).ok()?;
                    let _ = stream.set_nodelay(true);
                    // Without the limit a write could block until a partition heals.
                    stream.set_write_timeout(Some(WRITE_TIMEOUT)).ok()?;
                    Link::Tcp(stream)
                }
            };
            self.connections.insert((node, shard), link);
        }
        self.connections.get_mut(&(node, shard))
    }

    /// The shard that runs `group` on its nodes (the metadata group's is 0); an error for a
    /// partition group whose route this client has not seen.
    fn shard(&self, group: u64) -> Result<u16, RoutingError> {
        if group == METADATA_GROUP {
            return Ok(0);
        }
        self.shards.get(&group).copied().ok_or_else(|| {
            RoutingError::Protocol(format!(
                "the shard of group {group} is unknown: use its route (call_route, register_route) or topic_routes first"
            ))
        })
    }

    /// `call` for a partition, through its route (which names the shard that runs it).
    pub fn call_route(
        &mut self,
        route: &PartitionRoute,
        body: impl Into<bytes::Bytes>,
    ) -> Result<Reply, RoutingError> {
        self.shards.insert(route.group, route.shard);
        self.call(route.group, &route.members, route.placement_offset, body)
    }

    /// `register` for a partition, through its route.
    pub fn register_route(&mut self, route: &PartitionRoute) -> Result<(), RoutingError> {
        self.shards.insert(route.group, route.shard);
        self.register(route.group, &route.members, route.placement_offset)
    }
}

/// How this client reaches one shard of one node.
enum Link {
    Tcp(TcpStream),
    Local(LocalLink),
}

/// The next whole message on `stream`, waiting at most `left` for its first byte.
fn receive_tcp(
    stream: &mut TcpStream,
    left: Duration,
    cluster: u128,
) -> Result<Message, LinkFailure> {
    if stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .is_err()
    {
        return Err(LinkFailure::Broken);
    }
    read_message(stream, cluster)
}

/// One whole, checked message (a timeout only before its first byte is clean; one in the
/// middle of a frame breaks the connection, since the stream is then out of step).
fn read_message(stream: &mut TcpStream, cluster: u128) -> Result<Message, LinkFailure> {
    let mut head = [0u8; HEADER_SIZE];
    let mut filled = 0;
    while filled < HEADER_SIZE {
        match stream.read(&mut head[filled..]) {
            Ok(0) => return Err(LinkFailure::Broken),
            Ok(read) => filled += read,
            Err(e)
                if filled == 0
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                return Err(LinkFailure::TimedOut)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(LinkFailure::Broken),
        }
    }
    let header = Header::decode(&head).map_err(|_| LinkFailure::Broken)?;
    let size = header.size as usize;
    if header.cluster != cluster || !(HEADER_SIZE..=HEADER_SIZE + BODY_SIZE_MAX).contains(&size) {
        return Err(LinkFailure::Broken);
    }
    let mut body = vec![0u8; size - HEADER_SIZE];
    // The rest of the frame is on its way: wait for it without the attempt's deadline.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    stream
        .read_exact(&mut body)
        .map_err(|_| LinkFailure::Broken)?;
    Message::from_parts(header, body.into()).map_err(|_| LinkFailure::Broken)
}

/// Writes of one frame before giving up (a blocking socket takes a frame in a few).
const WRITE_ROUNDS_MAX: usize = 1 << 16;

/// Writes `head` then `body` with as few syscalls as the socket takes.
fn write_all_vectored(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    use std::io::IoSlice;
    let total = head.len() + body.len();
    let mut written = 0usize;
    // Each round writes at least one byte, fails, or was interrupted by a signal.
    for _ in 0..WRITE_ROUNDS_MAX {
        if written == total {
            return Ok(());
        }
        let slices = if written < head.len() {
            [IoSlice::new(&head[written..]), IoSlice::new(body)]
        } else {
            [
                IoSlice::new(&body[written - head.len()..]),
                IoSlice::new(&[]),
            ]
        };
        match stream.write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::other(format!(
        "{written} of {total} bytes written in {WRITE_ROUNDS_MAX} rounds"
    )))
}
