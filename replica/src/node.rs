//! A Galgo node's shard (`galgo replica`, and the replica half of `galgo dev`): a node runs one
//! shard per configured shard, each a monoio runtime on its own thread owning its groups and
//! their files. Shard 0 holds the node's replica of the metadata group (group 0, over every
//! node); partition group `g` lives on shard `g % shards` of each node it is placed on. Each
//! shard has its own replica bus (port + shard, talking to the same shard of the other nodes)
//! and client port (port + shard): nothing on the data path crosses threads. Shard 0 publishes
//! the groups the applied metadata places on this node (`SharedPlacements`, a lock taken only
//! when they change); every shard starts and stops its own. A stopped group's files are
//! closed, and removed once the metadata has deleted the group (`group_files`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use galgo_consensus::header::HEADER_SIZE;
use galgo_consensus::recovery::RecoveryBugs;
use galgo_consensus::{
    checkpoint_held, checkpoint_restores, Bugs, Command, Config as GroupConfig, Header, Message,
    Replica, StateMachine, Timeouts,
};
use galgo_storage::{Disk, FileDisk, LogConfig, StorageError};

use crate::bus::{Bus, BusConfig};
use crate::checkpoint_store::{
    CheckpointStore, CHECKPOINT_INTERVAL_BYTES, CHECKPOINT_INTERVAL_OPS,
};
use crate::client_port::{self, ClientTable, RequestHandler};
use crate::client_protocol::{
    GroupStatus, GroupStatusQuery, MetadataAnswer, MetadataQuery, PartitionRoute, PollQuery,
    PollReply, PollStart, Polled, PolledBatch, ReplicaStatus, RoutesPage, TopicQuery, TopicRoutes,
    METADATA_BYTES_MAX, OPERATION_BROKER, OPERATION_GROUP_STATUS, OPERATION_METADATA,
    OPERATION_NOT_PRIMARY, OPERATION_POLL, OPERATION_TOPIC_ROUTES, POLLED_BATCH_OVERHEAD,
    POLL_BYTES_MAX, ROUTES_PER_PAGE,
};
use crate::config::Config;
use crate::group_files::{
    checkpoint_dir, group_of_file, log_dir, remove_group_files, superblock_name, DeletedGroups,
};
use crate::group_host::{realtime_now, Event, GroupHost, ReplySink, Ticks, TICK};
use crate::journal::{CheckpointStart, MessagesOf, SegmentJournal};
use crate::local_port::LocalPorts;
use crate::metadata::machine::MetadataMachine;
use crate::metadata::{Ident, Limits, Metadata, Placement};
use crate::partition::machine::PartitionMachine;
use crate::partition::ops::{PartitionOp, APPEND_HEAD_SIZE};
use crate::partition::PartitionState;
use crate::read_ahead::{ReadAhead, ReadAheadBudget};
use crate::retention::retention_view;
use crate::view_state::ViewStateStore;

/// The metadata group's id.
pub const METADATA_GROUP: u64 = 0;
/// Highest op a group's log may hold.
pub const OPS_MAX: u64 = 1 << 32;
/// Journal entries a group keeps in memory below its commit point (between this and twice
/// this, about 200 bytes each); older ops are served from the log on disk.
pub const JOURNAL_KEEP_OPS: u64 = 256;
const PIPELINE_MAX: usize = 8;
const REQUEST_QUEUE_MAX: usize = 256;
/// Client sessions per group.
const CLIENTS_MAX: usize = 1024;
/// Consumers and idempotent producers a partition remembers.
const CONSUMERS_MAX: u32 = 10_000;
const PRODUCERS_MAX: u32 = 10_000;
/// How long the node waits for its listen addresses to become free at start.
const BIND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a stopped group's disk work may take before its files are left open (and, if it
/// was deleted, on disk until the node restarts), in ticks.
const RETIRE_TICKS_MAX: u32 = 3_000;
/// The exit status of a node that stops so that its metadata group opens from a checkpoint
/// it installed from a peer (its supervisor restarts it).
pub const EXIT_REOPEN: i32 = 75;
/// Messages queued per peer on the bus, and received but not yet routed.
const BUS_QUEUE_MAX: usize = 65_536;

#[derive(Debug)]
pub enum NodeError {
    Io(String, std::io::Error),
    Storage(String, StorageError),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Io(what, error) => write!(f, "{what}: {error}"),
            NodeError::Storage(what, error) => write!(f, "{what}: {error:?}"),
        }
    }
}

impl std::error::Error for NodeError {}

pub type MetadataHost = Rc<GroupHost<MetadataMachine, FileDisk>>;
pub type PartitionHost = Rc<GroupHost<PartitionMachine, FileDisk>>;

/// Committed ops a partition replica may still have to apply and count as caught up.
const CATCH_UP_LAG_MAX: u64 = 64;

/// The partition groups the applied metadata places on this node, published by shard 0 for
/// every shard (the control path: read only when `version` moves).
#[derive(Default)]
pub struct SharedPlacements {
    version: AtomicU64,
    groups: Mutex<Published>,
}

/// What shard 0 publishes: the groups placed on this node and which groups are deleted.
#[derive(Default)]
struct Published {
    placed: BTreeMap<u64, Placement>,
    deleted: DeletedGroups,
}

impl SharedPlacements {
    fn publish(&self, placed: BTreeMap<u64, Placement>, deleted: DeletedGroups) {
        *self.groups.lock().expect("no shard panics holding it") = Published { placed, deleted };
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// `address` with its port moved up by `shard`; `None` past port 65535.
pub fn shard_address(address: SocketAddr, shard: u16) -> Option<SocketAddr> {
    let port = address.port().checked_add(shard)?;
    Some(SocketAddr::new(address.ip(), port))
}

/// The shard of a node that runs partition group `group`.
pub fn shard_of(group: u64, shards: u16) -> u16 {
    assert!(shards >= 1);
    (group % u64::from(shards)) as u16
}

pub struct Node {
    pub config: Config,
    pub shard: u16,
    pub shards: u16,
    placements: Arc<SharedPlacements>,
    cluster: u128,
    disk: &'static FileDisk,
    bus: Rc<Bus>,
    clients: Rc<ClientTable>,
    /// Shard 0 only.
    pub metadata: Option<MetadataHost>,
    pub partitions: RefCell<BTreeMap<u64, PartitionHost>>,
    /// Partition groups being opened.
    starting: RefCell<BTreeSet<u64>>,
    /// Partition groups stopped whose files are not closed yet.
    retiring: RefCell<BTreeSet<u64>>,
    /// What this shard's partitions hold read ahead for their consumers.
    read_ahead_budget: Rc<ReadAheadBudget>,
    /// A sweep for deleted groups' files is running; newer placements came meanwhile.
    sweeping: Cell<bool>,
    sweep_again: Cell<bool>,
    /// The published placements version this shard last started and stopped groups for.
    placements_seen: Cell<Option<u64>>,
    /// Shard 0: the metadata's placements version last published.
    metadata_placements_seen: Cell<Option<u64>>,
    pub client_address: SocketAddr,
}

fn metadata_messages(_: &Message, next_offset: u64) -> (u64, u32) {
    (next_offset, 0)
}

/// Seeds a group's consensus randomness (timeout jitter); not a source of state.
fn seed(node: u8, group: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(node) << 56) ^ group.rotate_left(17)
}

impl Node {
    /// Opens the data directory and every group's files, binds the bus and the client port
    /// (and, with `local`, takes in-process links from a gateway in this process), and starts
    /// the node's tasks on the current monoio runtime.
    pub async fn start(
        config: Config,
        shard: u16,
        shards: u16,
        placements: Arc<SharedPlacements>,
        local: Option<Arc<LocalPorts>>,
    ) -> Result<Rc<Node>, NodeError> {
        assert!(shard < shards);
        let data_dir = config.replica.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| NodeError::Io(format!("creating {}", data_dir.display()), e))?;
        let disk = FileDisk::new(&data_dir);
        let disk: &'static FileDisk = Box::leak(Box::new(if config.storage.direct_io {
            disk
        } else {
            disk.buffered()
        }));
        let cluster = u128::from(config.cluster.id);
        let me = config.replica.id;
        let mut nodes: Vec<u8> = config.cluster.nodes.iter().map(|n| n.id).collect();
        nodes.sort_unstable();
        let peers = config
            .cluster
            .nodes
            .iter()
            .filter(|n| n.id != me)
            .map(|n| {
                let address = n.address.parse().expect("checked: a socket address");
                let address =
                    shard_address(address, shard).expect("checked: shard ports fit under 65536");
                (n.id, address)
            })
            .collect();
        let bus_config = BusConfig {
            cluster,
            node: me,
            shard,
            shards,
            peers,
            send_queue_max: BUS_QUEUE_MAX,
            recv_queue_max: BUS_QUEUE_MAX,
        };
        let bus_address =
            shard_address(config.own_address(), shard).expect("checked: shard ports fit");
        let bus = Rc::new(
            bind_with_patience(&format!("the replica bus on {bus_address}"), || {
                Bus::start(bus_config.clone(), bus_address)
            })
            .await?,
        );
        let client_address =
            shard_address(config.own_client_address(), shard).expect("checked: shard ports fit");
        let client_options = monoio::net::ListenerOpts::default().reuse_port(false);
        let listener = bind_with_patience(&format!("the client port on {client_address}"), || {
            monoio::net::TcpListener::bind_with_config(client_address, &client_options)
        })
        .await?;
        let clients = Rc::new(ClientTable::default());
        let replication = config.cluster.replication;
        let metadata_nodes = nodes.clone();
        let metadata_machine = move || {
            MetadataMachine::new(Metadata::new(
                metadata_nodes.clone(),
                replication,
                Limits::default(),
            ))
        };
        let metadata = if shard == 0 {
            let host = open_group(
                disk,
                cluster,
                METADATA_GROUP,
                me,
                &Placement {
                    members: nodes,
                    placement_offset: 0,
                },
                metadata_machine,
                metadata_messages,
                config.storage.segment_size,
                bus.clone(),
                reply_sink(&clients),
            )
            .await?;
            Some(host)
        } else {
            None
        };
        let node = Rc::new(Node {
            config,
            shard,
            shards,
            placements,
            cluster,
            disk,
            bus: bus.clone(),
            clients: clients.clone(),
            metadata,
            partitions: RefCell::new(BTreeMap::new()),
            starting: RefCell::new(BTreeSet::new()),
            placements_seen: Cell::new(None),
            retiring: RefCell::new(BTreeSet::new()),
            read_ahead_budget: Rc::default(),
            sweeping: Cell::new(false),
            sweep_again: Cell::new(false),
            metadata_placements_seen: Cell::new(None),
            client_address,
        });
        let dispatcher = Rc::downgrade(&node);
        monoio::spawn(async move {
            loop {
                let (_, message) = bus.recv().await;
                let Some(node) = dispatcher.upgrade() else {
                    return;
                };
                node.route(message);
            }
        });
        let syncer = Rc::downgrade(&node);
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(TICK).await;
                let Some(node) = syncer.upgrade() else {
                    return;
                };
                // One timer per shard ticks every group it runs.
                node.tick_groups();
                node.reopen_installed_groups();
                node.sync_partitions();
            }
        });
        let handler_node = Rc::downgrade(&node);
        let handler: RequestHandler = Rc::new(move |message| {
            let node = handler_node.upgrade()?;
            node.on_client_message(message)
        });
        if let Some(local) = local {
            assert_eq!(local.node(), me, "the local ports are this node's");
            let links = local.register(shard);
            monoio::spawn(client_port::serve_local(
                links,
                clients.clone(),
                cluster,
                handler.clone(),
            ));
        }
        monoio::spawn(client_port::serve(listener, clients, cluster, handler));
        Ok(node)
    }

    /// A message from a peer: to its group, if this node runs it (else dropped: VSR
    /// retransmits, and the group may be starting).
    fn route(&self, message: Message) {
        if message.header.group == METADATA_GROUP {
            if let Some(metadata) = &self.metadata {
                metadata.deliver(Event::Message(message));
            }
        } else if let Some(host) = self.partitions.borrow().get(&message.header.group) {
            host.deliver(Event::Message(message));
        }
    }

    /// Hands a client's request to its group's replica if that replica is the group's primary
    /// in a normal view; else answers `OPERATION_NOT_PRIMARY` at once (a backup would drop
    /// it, and the client would wait out its attempt timeout before asking the next member).
    fn route_request(&self, message: Message) -> Option<Message> {
        assert_eq!(message.header.command, Command::Request);
        fn takes_requests<S: StateMachine>(replica: &Replica<S>) -> bool {
            replica.status() == galgo_consensus::Status::Normal && replica.is_primary()
        }
        let group = message.header.group;
        if group == METADATA_GROUP {
            if let Some(metadata) = &self.metadata {
                if takes_requests(&metadata.replica.borrow()) {
                    metadata.deliver(Event::Message(message));
                    return None;
                }
            }
        } else if let Some(host) = self.partitions.borrow().get(&group) {
            if takes_requests(&host.replica.borrow()) {
                host.deliver(Event::Message(message));
                return None;
            }
        }
        let mut header = Header::new(Command::Reply, self.cluster, group);
        header.client = message.header.client;
        header.context = message.header.checksum;
        header.request = message.header.request;
        header.operation = OPERATION_NOT_PRIMARY;
        Some(Message::new(header, Vec::new()))
    }

    fn on_client_message(&self, message: Message) -> Option<Message> {
        if message.header.command != Command::Request {
            return None;
        }
        if message.header.group == METADATA_GROUP {
            match message.header.operation {
                OPERATION_TOPIC_ROUTES => return Some(self.answer_topic_routes(&message)),
                OPERATION_GROUP_STATUS => return Some(self.answer_group_status(&message)),
                OPERATION_METADATA => return Some(self.answer_metadata(&message)),
                _ => {}
            }
        }
        if message.header.operation == OPERATION_POLL {
            self.poll(message);
            return None;
        }
        let operation = message.header.operation;
        if operation == OPERATION_BROKER
            || operation == galgo_consensus::header::operation::REGISTER
        {
            return self.route_request(message);
        }
        None
    }

    /// Answers a poll from this shard's committed log of the partition, in a task (reads are
    /// disk I/O); the reply goes to the client's connection. Only batches of applied ops are
    /// served: offsets below the applied state's end, ops at or below `commit_min`.
    fn poll(&self, request: Message) {
        let group = request.header.group;
        let query = PollQuery::decode(&request.body);
        let host = self.partitions.borrow().get(&group).cloned();
        let (cluster, clients) = (self.cluster, self.clients.clone());
        monoio::spawn(async move {
            let reply = match (host, query) {
                // `None` also for offsets this replica's log does not hold (it installed a
                // checkpoint past them): the client asks another replica.
                (Some(host), Ok(query)) => read_committed(&host, query).await,
                _ => None,
            };
            let mut header = Header::new(Command::Reply, cluster, group);
            header.client = request.header.client;
            header.context = request.header.checksum;
            header.request = request.header.request;
            header.operation = OPERATION_POLL;
            clients.deliver(&Message::new(header, PollReply(reply).encode()));
        });
    }

    /// How this node's replica of a group stands.
    fn answer_group_status(&self, request: &Message) -> Message {
        let status = GroupStatusQuery::decode(&request.body)
            .ok()
            .and_then(|query| self.replica_status(query.group));
        self.node_reply(
            request,
            OPERATION_GROUP_STATUS,
            GroupStatus(status).encode(),
        )
    }

    pub fn replica_status(&self, group: u64) -> Option<ReplicaStatus> {
        fn status<S: StateMachine>(replica: &Replica<S>) -> ReplicaStatus {
            ReplicaStatus {
                view: replica.view(),
                normal: replica.status() == galgo_consensus::Status::Normal,
                primary: replica.is_primary(),
                commit_min: replica.commit_min(),
                commit_max: replica.commit_max(),
                head: replica.head(),
                // A scan of the journal: fine for a status query, not for a hot path.
                durable_through: (replica.journal().base().max(1)..=replica.head())
                    .find(|op| !replica.journal().entry(*op).present())
                    .map_or(replica.head(), |op| op - 1),
            }
        }
        if group == METADATA_GROUP {
            return self
                .metadata
                .as_ref()
                .map(|metadata| status(&metadata.replica.borrow()));
        }
        let partitions = self.partitions.borrow();
        let host = partitions.get(&group)?;
        let replica = host.replica.borrow();
        Some(status(&replica))
    }

    /// A reply the node makes itself (not through a group), to the requesting client.
    fn node_reply(&self, request: &Message, operation: u8, body: Vec<u8>) -> Message {
        let mut header = Header::new(Command::Reply, self.cluster, METADATA_GROUP);
        header.client = request.header.client;
        header.context = request.header.checksum;
        header.request = request.header.request;
        header.session = request.header.session;
        header.operation = operation;
        header.view = self
            .metadata
            .as_ref()
            .map_or(0, |metadata| metadata.replica.borrow().view());
        Message::new(header, body)
    }

    /// This node's applied metadata as a checkpoint, if it applied the op the reader asks for
    /// (only shard 0 runs the metadata group; other shards answer that they are behind).
    fn answer_metadata(&self, request: &Message) -> Message {
        let answer = match (MetadataQuery::decode(&request.body), &self.metadata) {
            (Ok(query), Some(metadata)) => {
                let replica = metadata.replica.borrow();
                let applied = replica.commit_min();
                let leads = replica.is_primary()
                    && replica.status() == galgo_consensus::Status::Normal
                    && replica.commit_min() == replica.commit_max();
                if applied < query.applied_at_least || (query.from_primary && !leads) {
                    MetadataAnswer::Behind { applied }
                } else {
                    match replica.state_machine().metadata.encode_snapshot() {
                        Ok(checkpoint) if checkpoint.len() <= METADATA_BYTES_MAX as usize => {
                            MetadataAnswer::State {
                                applied,
                                checkpoint,
                            }
                        }
                        Ok(checkpoint) => MetadataAnswer::TooLarge {
                            size: checkpoint.len() as u64,
                        },
                        // Only a value past the format's limits fails to encode, which applied
                        // ops never make; answered as too large, never a crash on a read.
                        Err(_) => MetadataAnswer::TooLarge { size: u64::MAX },
                    }
                }
            }
            _ => MetadataAnswer::Behind { applied: 0 },
        };
        self.node_reply(request, OPERATION_METADATA, answer.encode())
    }

    /// The routes of a topic, from this node's applied metadata.
    fn answer_topic_routes(&self, request: &Message) -> Message {
        let routes = match (TopicQuery::decode(&request.body), &self.metadata) {
            (Ok(query), Some(metadata)) => {
                let replica = metadata.replica.borrow();
                let metadata = &replica.state_machine().metadata;
                metadata
                    .topic(&Ident::Name(query.stream), &Ident::Name(query.topic))
                    .ok()
                    .map(|topic| RoutesPage {
                        total: topic.partitions.len() as u32,
                        first: query.first.min(topic.partitions.len() as u32),
                        routes: topic
                            .partitions
                            .iter()
                            .skip(query.first as usize)
                            .take(ROUTES_PER_PAGE as usize)
                            .map(|p| PartitionRoute {
                                group: p.group,
                                members: p.placement.members.clone(),
                                placement_offset: p.placement.placement_offset,
                                shard: shard_of(p.group, self.shards),
                            })
                            .collect(),
                    })
            }
            _ => None,
        };
        self.node_reply(
            request,
            OPERATION_TOPIC_ROUTES,
            TopicRoutes(routes).encode(),
        )
    }

    fn tick_groups(&self) {
        // One clock read per shard tick, for every group.
        let realtime = realtime_now();
        if let Some(metadata) = &self.metadata {
            metadata.deliver(Event::Tick { realtime });
        }
        for host in self.partitions.borrow().values() {
            host.deliver(Event::Tick { realtime });
        }
    }

    /// On shard 0: publishes the groups the applied metadata places on this node when they
    /// may have changed.
    fn publish_placements(&self) {
        let Some(metadata) = &self.metadata else {
            return;
        };
        let version = metadata.replica.borrow().state_machine().placements_version;
        if self.metadata_placements_seen.get() == Some(version) {
            return;
        }
        let me = self.config.replica.id;
        let (placed, deleted) = {
            let replica = metadata.replica.borrow();
            let metadata = &replica.state_machine().metadata;
            let partitions = || {
                metadata
                    .streams
                    .values()
                    .flat_map(|stream| stream.topics.values())
                    .flat_map(|topic| topic.partitions.iter())
            };
            let placed: BTreeMap<u64, Placement> = partitions()
                .filter(|partition| partition.placement.members.contains(&me))
                .map(|partition| (partition.group, partition.placement.clone()))
                .collect();
            let live = partitions().map(|partition| partition.group).collect();
            (
                placed,
                DeletedGroups::new(metadata.partition_group_next, live),
            )
        };
        self.placements.publish(placed, deleted);
        self.metadata_placements_seen.set(Some(version));
    }

    /// Starts this shard's partition groups that the published placements hold, stops the
    /// others.
    fn sync_partitions(self: &Rc<Self>) {
        self.publish_placements();
        let version = self.placements.version.load(Ordering::Acquire);
        if self.placements_seen.get() == Some(version) {
            return;
        }
        let me = self.config.replica.id;
        let (wanted, deleted): (BTreeMap<u64, Placement>, DeletedGroups) = {
            let published = self
                .placements
                .groups
                .lock()
                .expect("no shard panics holding it");
            let wanted = published
                .placed
                .iter()
                .filter(|(group, _)| shard_of(**group, self.shards) == self.shard)
                .map(|(group, placement)| (*group, placement.clone()))
                .collect();
            (wanted, published.deleted.clone())
        };
        let stopped: Vec<(u64, PartitionHost)> = {
            let mut partitions = self.partitions.borrow_mut();
            let gone: Vec<u64> = partitions
                .keys()
                .filter(|group| !wanted.contains_key(group))
                .copied()
                .collect();
            gone.into_iter()
                .filter_map(|group| partitions.remove(&group).map(|host| (group, host)))
                .collect()
        };
        for (group, host) in stopped {
            self.retire(group, host, deleted.is_deleted(group));
        }
        self.sweep_deleted_groups(deleted);
        for (group, placement) in wanted {
            if self.partitions.borrow().contains_key(&group)
                || self.retiring.borrow().contains(&group)
                || !self.starting.borrow_mut().insert(group)
            {
                continue; // A group being retired opens again once it is closed.
            }
            let node = Rc::downgrade(self);
            let (disk, cluster, bus, sink) = (
                self.disk,
                self.cluster,
                self.bus.clone(),
                reply_sink(&self.clients),
            );
            let segment_size = self.config.storage.segment_size;
            monoio::spawn(async move {
                let machine =
                    || PartitionMachine::new(PartitionState::new(CONSUMERS_MAX, PRODUCERS_MAX));
                let opened = open_group(
                    disk,
                    cluster,
                    group,
                    me,
                    &placement,
                    machine,
                    crate::partition::machine::messages_of,
                    segment_size,
                    bus,
                    sink,
                )
                .await;
                let Some(node) = node.upgrade() else {
                    return;
                };
                node.starting.borrow_mut().remove(&group);
                match opened {
                    Ok(host) => {
                        host.read_ahead_with(node.read_ahead_budget.clone());
                        let view = retention_view(host.journal(), host.applied_everywhere());
                        host.replica
                            .borrow_mut()
                            .state_machine_mut()
                            .set_retention_view(view);
                        node.partitions.borrow_mut().insert(group, host);
                        // Look at the placements again next tick: they may have moved on
                        // while this group opened (a group no longer placed here stops).
                        node.placements_seen.set(None);
                    }
                    // A group that cannot open its files: the node runs on without it and the
                    // operator sees why (the other replicas keep the group available).
                    Err(error) => {
                        eprintln!("galgo: partition group {group} did not start: {error}")
                    }
                }
            });
        }
        self.placements_seen.set(Some(version));
    }

    /// Stops a group no longer placed here (or one to open again), closes its files once its
    /// disk work is done, and removes them when the metadata deleted the group.
    fn retire(self: &Rc<Self>, group: u64, host: PartitionHost, deleted: bool) {
        host.stop();
        self.retiring.borrow_mut().insert(group);
        let (node, disk) = (Rc::downgrade(self), self.disk);
        monoio::spawn(async move {
            // Reads and polls hold the host; writes, reads and saves hold its files.
            let mut ticks = 0;
            while Rc::strong_count(&host) > 1 || !host.io_idle() {
                if ticks == RETIRE_TICKS_MAX {
                    // It stays `retiring`: nothing opens or sweeps its files meanwhile.
                    eprintln!(
                        "galgo: partition group {group} stopped, but its disk work did not end \
                         within {:?}: its files stay, and it stays stopped, until the node \
                         restarts",
                        TICK * RETIRE_TICKS_MAX
                    );
                    return;
                }
                monoio::time::sleep(TICK).await;
                ticks += 1;
            }
            let closed = host.close_files().await;
            drop(host);
            match closed {
                Ok(()) if deleted => remove_deleted_group(disk, group).await,
                Ok(()) => {}
                Err(error) => {
                    eprintln!("galgo: partition group {group} stopped; closing its log: {error}")
                }
            }
            if let Some(node) = node.upgrade() {
                node.retiring.borrow_mut().remove(&group);
                // A group still placed here (one reopened after a state transfer) opens now.
                node.placements_seen.set(None);
            }
        });
    }

    /// Stops every partition group that installed a checkpoint from a peer (state transfer)
    /// so that it opens again from its files (`sync_partitions` reopens it once it is
    /// closed). The metadata group cannot be reopened in place: the node exits, so that its
    /// supervisor restarts it and the group opens from the checkpoint.
    fn reopen_installed_groups(self: &Rc<Self>) {
        if self.metadata.as_ref().is_some_and(|m| m.reopen_wanted()) {
            eprintln!(
                "galgo: the metadata group installed a checkpoint from a peer; the node exits \
                 so that it opens from it when restarted"
            );
            std::process::exit(EXIT_REOPEN);
        }
        let reopening: Vec<(u64, PartitionHost)> = self
            .partitions
            .borrow_mut()
            .extract_if(.., |_, host| host.reopen_wanted())
            .collect();
        for (group, host) in reopening {
            self.retire(group, host, false);
        }
    }

    /// Removes the files this shard's deleted groups left in the data directory (a group
    /// deleted while the node was down, or a removal a crash cut short). Groups running,
    /// opening or being retired are left to their own tasks.
    fn sweep_deleted_groups(self: &Rc<Self>, deleted: DeletedGroups) {
        if self.sweeping.replace(true) {
            // The running sweep has the placements looked at again when it ends.
            self.sweep_again.set(true);
            return;
        }
        let (node, disk) = (Rc::downgrade(self), self.disk);
        monoio::spawn(async move {
            let names = match disk.list("").await {
                Ok(names) => names,
                Err(error) => {
                    eprintln!("galgo: listing the data directory: {error}");
                    Vec::new()
                }
            };
            let found: BTreeSet<u64> = names
                .iter()
                .filter_map(|name| group_of_file(name))
                .filter(|group| deleted.is_deleted(*group))
                .collect();
            for group in found {
                let Some(node) = node.upgrade() else {
                    return;
                };
                let busy = shard_of(group, node.shards) != node.shard
                    || node.partitions.borrow().contains_key(&group)
                    || node.starting.borrow().contains(&group)
                    || node.retiring.borrow().contains(&group);
                drop(node);
                if !busy {
                    remove_deleted_group(disk, group).await;
                }
            }
            if let Some(node) = node.upgrade() {
                node.sweeping.set(false);
                if node.sweep_again.replace(false) {
                    node.placements_seen.set(None);
                }
            }
        });
    }

    /// The node is about to stop: every group of more than one replica that this shard leads
    /// hands its leadership over (call again for a group that elected it once more).
    pub fn hand_over_leadership(&self) {
        if let Some(metadata) = &self.metadata {
            metadata.deliver(Event::HandOver);
        }
        for host in self.partitions.borrow().values() {
            host.deliver(Event::HandOver);
        }
    }

    /// Groups of more than one replica whose normal primary is this shard's replica.
    pub fn groups_led(&self) -> usize {
        fn leads<S: StateMachine>(replica: &Replica<S>) -> bool {
            replica.replica_count() > 1
                && replica.is_primary()
                && replica.status() == galgo_consensus::Status::Normal
        }
        let metadata = self
            .metadata
            .as_ref()
            .is_some_and(|host| leads(&host.replica.borrow()));
        let partitions = self
            .partitions
            .borrow()
            .values()
            .filter(|host| leads(&host.replica.borrow()))
            .count();
        usize::from(metadata) + partitions
    }

    /// Partition groups the applied metadata places on this shard that are not serving yet:
    /// not open, changing view, or applied more than `CATCH_UP_LAG_MAX` ops below what they
    /// know is committed (catching up after a restart; under load a replica applies a
    /// pipeline or so behind), plus one on shard 0 while its metadata replica is applying or
    /// its placements are unpublished. 0 means this shard's share of the node is ready.
    pub fn partitions_not_ready(&self) -> usize {
        let placed: Vec<u64> = self
            .placements
            .groups
            .lock()
            .expect("no shard panics holding it")
            .placed
            .keys()
            .copied()
            .filter(|group| shard_of(*group, self.shards) == self.shard)
            .collect();
        // Shard 0 also waits for its metadata replica to apply what it knows is committed and
        // for the placements of that state to be published: until then `placed` may be empty
        // or old (a node that just opened would look ready before knowing its groups).
        let metadata_behind = self.metadata.as_ref().map_or(0, |metadata| {
            let replica = metadata.replica.borrow();
            let version = replica.state_machine().placements_version;
            let behind = replica.commit_min() < replica.commit_max()
                || self.metadata_placements_seen.get() != Some(version);
            usize::from(behind)
        });
        let partitions = self.partitions.borrow();
        metadata_behind
            + placed
                .iter()
                .filter(|group| match partitions.get(group) {
                    None => true,
                    Some(host) => {
                        let replica = host.replica.borrow();
                        replica.status() != galgo_consensus::Status::Normal
                            || replica.commit_min() + CATCH_UP_LAG_MAX < replica.commit_max()
                    }
                })
                .count()
    }

    /// The partition groups this node runs, with whether it leads each.
    pub fn partition_roles(&self) -> Vec<(u64, bool)> {
        self.partitions
            .borrow()
            .iter()
            .map(|(group, host)| (*group, host.replica.borrow().is_primary()))
            .collect()
    }
}

/// Binds with `bind`, retrying while the address is in use for up to `BIND_PATIENCE`: a
/// predecessor killed a moment ago may still hold its listener (with io_uring, the kernel
/// closes a dead process's ring, and the sockets it holds, after the process is gone).
async fn bind_with_patience<T>(
    what: &str,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> Result<T, NodeError> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        match bind() {
            Ok(bound) => return Ok(bound),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < BIND_PATIENCE =>
            {
                if !said {
                    eprintln!("galgo: {what} is in use; retrying for up to {BIND_PATIENCE:?}");
                    said = true;
                }
                monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => return Err(NodeError::Io(format!("binding {what}"), error)),
        }
    }
}

/// The committed batches from `query.offset`, within its bounds, and the committed end.
/// `None` when the batches asked for are kept by the partition but not by this replica's log
/// (it installed a checkpoint from a peer past them, docs/replica.md: state transfer).
async fn read_committed(host: &PartitionHost, query: PollQuery) -> Option<Polled> {
    let (end, first, commit_min, stored) = {
        let replica = host.replica.borrow();
        let state = replica.state_machine().state();
        let stored = match query.start {
            PollStart::Next(consumer) => state.consumer_offsets.get(&consumer).copied(),
            _ => None,
        };
        (
            state.next_offset,
            state.first_offset,
            replica.commit_min(),
            stored,
        )
    };
    let journal = host.journal().clone();
    // Where the batches start: an offset and the op holding it, or nothing to serve.
    let (start, found) = match query.start {
        PollStart::Offset(offset) => {
            // Below the first offset kept: from there (retention deleted the rest).
            let offset = offset.max(first);
            (offset, journal.log().find_offset(offset).await)
        }
        PollStart::Last(count) => {
            let offset = end.saturating_sub(u64::from(count)).max(first);
            (offset, journal.log().find_offset(offset).await)
        }
        PollStart::Next(_) => {
            let offset = stored
                .map_or(first, |stored| stored.saturating_add(1))
                .max(first);
            (offset, journal.log().find_offset(offset).await)
        }
        // Prepare timestamps (the time index's) are nanoseconds; batches carry microseconds.
        PollStart::Timestamp(us) => {
            let by_time = journal.log().find_timestamp(us.saturating_mul(1000)).await;
            // Never before the first offset kept (its segment may not be deleted yet).
            let at_first = journal.log().find_offset(first).await;
            let found = match (by_time, at_first) {
                (Ok(Some(by_time)), Ok(Some(at_first))) => Ok(Some(by_time.max(at_first))),
                (by_time, _) => by_time,
            };
            (first, found)
        }
    };
    let mut polled = Polled {
        end,
        start,
        stored,
        batches: Vec::new(),
    };
    if start >= end {
        return Some(polled);
    }
    if start < journal.log().first_offset() {
        return None;
    }
    let Ok(Some(mut op)) = found else {
        return Some(polled);
    };
    let mut timestamp_start = None;
    let read_ahead = host.read_ahead();
    let mut next_op = None;
    let batches = &mut polled.batches;
    let bytes_max = query.bytes_max.min(POLL_BYTES_MAX) as usize;
    let mut bytes = 0usize;
    while op <= commit_min && batches.len() < query.batches_max as usize {
        if !batches.is_empty() {
            // A record that cannot fit is not read: its index entry gives its size.
            if let Ok(entry) = journal.log().entry(op).await {
                let batch_len =
                    (entry.length as usize).saturating_sub(HEADER_SIZE + APPEND_HEAD_SIZE);
                if bytes + batch_len + POLLED_BATCH_OVERHEAD > bytes_max {
                    break;
                }
            }
        }
        let Some(prepare) = committed_prepare(&journal, read_ahead.as_deref(), op).await else {
            break; // Faulty here (being repaired): the client polls again.
        };
        op += 1;
        if prepare.header.operation != OPERATION_BROKER {
            continue;
        }
        let Ok((
            PartitionOp::Append {
                base_offset,
                count,
                timestamp,
                ..
            },
            batch,
        )) = PartitionOp::decode(&prepare.body)
        else {
            continue;
        };
        if base_offset >= end {
            break;
        }
        if base_offset + u64::from(count) <= first {
            continue; // Cut by retention, its segment not deleted yet.
        }
        if let PollStart::Timestamp(us) = query.start {
            if timestamp < us {
                continue; // Before the asked time (the index points at or before it).
            }
        }
        let first = batches.is_empty();
        let cost = batch.len() + POLLED_BATCH_OVERHEAD;
        if (!first && bytes + cost > bytes_max) || batch.len() > POLL_BYTES_MAX as usize {
            break;
        }
        bytes += cost;
        if let PollStart::Timestamp(_) = query.start {
            timestamp_start.get_or_insert(base_offset);
        }
        batches.push(PolledBatch {
            base_offset,
            count,
            timestamp,
            bytes: prepare.body.slice(prepare.body.len() - batch.len()..),
        });
        next_op = Some(op);
    }
    // The consumer's next poll most likely starts at the op after the last one served.
    if let (Some(read_ahead), Some(next)) = (&read_ahead, next_op) {
        if next <= host.replica.borrow().commit_min() {
            read_ahead.start(&journal, next);
        }
    }
    if let Some(start) = timestamp_start {
        polled.start = start;
    }
    Some(polled)
}

/// The prepare of committed `op`: the one read ahead if the partition holds it, else read now.
async fn committed_prepare(
    journal: &SegmentJournal<'static, FileDisk>,
    read_ahead: Option<&ReadAhead>,
    op: u64,
) -> Option<Message> {
    if let Some(read_ahead) = read_ahead {
        if let Some(prepare) = read_ahead.take(op).await {
            return prepare;
        }
    }
    journal.read_prepare(op).await
}

fn reply_sink(clients: &Rc<ClientTable>) -> ReplySink {
    let clients: Weak<ClientTable> = Rc::downgrade(clients);
    Rc::new(move |reply: Message| {
        if let Some(clients) = clients.upgrade() {
            clients.deliver(&reply);
        }
    })
}

/// Removes a deleted group's files, saying so (a failure leaves them to the next sweep).
async fn remove_deleted_group(disk: &'static FileDisk, group: u64) {
    match remove_group_files(disk, group).await {
        Ok(()) => eprintln!("galgo: removed the files of deleted partition group {group}"),
        Err(error) => {
            eprintln!("galgo: removing the files of deleted partition group {group}: {error}")
        }
    }
}

/// Opens one group's superblock and log, recovers its journal and starts its host.
#[allow(clippy::too_many_arguments)]
async fn open_group<S: StateMachine + 'static>(
    disk: &'static FileDisk,
    cluster: u128,
    group: u64,
    me: u8,
    placement: &Placement,
    new_machine: impl Fn() -> S,
    messages_of: MessagesOf,
    segment_size: u64,
    bus: Rc<Bus>,
    sink: ReplySink,
) -> Result<Rc<GroupHost<S, FileDisk>>, NodeError> {
    let replica_index = placement
        .members
        .iter()
        .position(|m| *m == me)
        .expect("placed on this node") as u8;
    let (view_state, durable) = ViewStateStore::open(disk, &superblock_name(group))
        .await
        .map_err(|e| NodeError::Storage(format!("group {group}: superblock"), e))?;
    let (checkpoints, checkpoint) = CheckpointStore::open(disk, checkpoint_dir(group))
        .await
        .map_err(|e| NodeError::Storage(format!("group {group}: checkpoint"), e))?;
    // Only a checkpoint that restores lets the journal start at its op (the ops below are
    // then not read); one that does not is ignored and the log is applied from op 1.
    let mut machine = new_machine();
    let checkpoint = checkpoint.filter(|c| checkpoint_restores(c, CLIENTS_MAX, &mut machine));
    let (journal, recovered) = SegmentJournal::open(
        disk,
        LogConfig {
            segment_size,
            ..LogConfig::new(log_dir(group))
        },
        &durable,
        Header::root(cluster, group),
        OPS_MAX,
        messages_of,
        RecoveryBugs::default(),
        checkpoint.as_ref().map(|c| CheckpointStart {
            header: c.op_header,
            next_offset: machine.log_offset_end(),
            installed: c.installed,
        }),
    )
    .await
    .map_err(|e| NodeError::Storage(format!("group {group}: log"), e))?;
    let checkpoint = checkpoint_held(checkpoint, &recovered, &mut machine, &new_machine);
    let config = GroupConfig {
        cluster,
        group,
        replica_count: placement.members.len() as u8,
        replica: replica_index,
        placement_offset: placement.placement_offset,
        pipeline_max: PIPELINE_MAX,
        request_queue_max: REQUEST_QUEUE_MAX,
        clients_max: CLIENTS_MAX,
        ops_max: OPS_MAX,
        journal_keep_ops: JOURNAL_KEEP_OPS,
        redundant_headers: false,
        return_leadership: true,
        timeouts: Timeouts::default(),
        bugs: Bugs::none(),
    };
    let mut replica = Replica::open_from(
        config,
        machine,
        durable,
        recovered,
        seed(me, group),
        checkpoint.as_ref(),
    );
    replica.set_log_start(journal.log().first_op());
    let host = GroupHost::start(
        replica,
        journal,
        view_state,
        bus,
        placement.members.clone(),
        Some(sink),
        Ticks::Delivered,
    );
    host.keep_checkpoints(
        disk,
        checkpoints,
        CHECKPOINT_INTERVAL_OPS,
        CHECKPOINT_INTERVAL_BYTES,
    );
    Ok(host)
}
