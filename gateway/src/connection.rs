//! One client connection of the Iggy binary protocol: its login state and the handling of each
//! request, in lockstep (the 0.11.0 client keeps one request in flight). Metadata reads come
//! from a checkpoint of the applied metadata (read after this connection's own writes);
//! metadata writes go to the metadata group through the routing client, which retries across
//! view changes with the same request identity.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use galgo_replica::client_protocol::{
    PartitionRoute, PollQuery, PollStart, POLL_BATCHES_MAX, POLL_BYTES_MAX,
};
use galgo_replica::metadata::machine::MetadataReply;
use galgo_replica::metadata::{
    Action, Applied, Ident, Metadata, MetadataOp, RefusalKind, Stream, UserStatus,
};
use galgo_replica::partition::ops::{ConsumerKey, PartitionOp};
use galgo_replica::partition::reply::PartitionReply;
use galgo_replica::routing::RoutingClient;

use crate::clients::{put_client, GroupKey};
use crate::codes::*;
use crate::credentials::{now_us, password_matches};
use crate::frame::{eviction, reply, Request};
use crate::messages::{
    choose_partition, parse_delete_segments, parse_offset_request, parse_poll, parse_send,
    poll_reply, ConsumerTarget, OffsetRequestKind, PollRequest, Strategy, CONSUMER_KIND_SINGLE,
};
use crate::replies;
use crate::server::Shared;
use crate::users::{token_hash, Credentials};
use crate::wire::{
    result_error, result_ok, topic_options, update_topic_options, WireError, WireReader,
};

/// What to send back: a reply, or an eviction after which the connection closes.
pub enum Outcome {
    Reply(Vec<u8>),
    Evict(Vec<u8>),
}

pub(crate) struct Login {
    pub(crate) session: u64,
    pub(crate) user_id: u32,
    /// User ids are reused after a delete: the login holds only while the id still names
    /// this user.
    pub(crate) username: String,
}

pub struct Connection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) routing: RoutingClient,
    pub(crate) peer: SocketAddr,
    /// This connection's number (GetMe's client id).
    pub(crate) number: u32,
    pub(crate) login: Option<Login>,
    /// The op of this connection's last metadata write: reads see at least that.
    pub(crate) metadata_op: u64,
    /// Partition routes of the topics this connection used, by (stream id, topic id).
    routes: std::collections::BTreeMap<(u32, u32), Vec<PartitionRoute>>,
    /// Round-robin counter of balanced sends.
    balanced: u32,
    /// This connection's identity as a consumer-group member, and whether it joined a group
    /// (then it leaves them all when the connection ends).
    member: u128,
    joined: bool,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        routing: RoutingClient,
        peer: SocketAddr,
        number: u32,
        member: u128,
    ) -> Connection {
        assert!(member != 0);
        Connection {
            shared,
            routing,
            peer,
            number,
            login: None,
            metadata_op: 0,
            routes: std::collections::BTreeMap::new(),
            balanced: 0,
            member,
            joined: false,
        }
    }

    pub fn logged_in(&self) -> bool {
        self.login.is_some()
    }

    /// The connection ended: it leaves every consumer group it joined (best effort; a member
    /// whose leave is lost expires once this gateway stops touching it: `member_keeper`).
    pub fn close(&mut self) {
        if !self.joined {
            return;
        }
        let op = MetadataOp::DropMember {
            member: self.member,
        };
        if let Ok(body) = op.encode() {
            if let Err(error) = self.routing.call_metadata(body) {
                self.shared.log(&format!(
                    "{}: leaving its consumer groups: {error}",
                    self.peer
                ));
            }
        }
    }

    /// Answers `request`; a send takes its body (`RequestBody::into_append`).
    pub fn handle(&mut self, request: &mut Request) -> Outcome {
        match request.operation {
            OPERATION_REGISTER => return self.register(request),
            OPERATION_NON_REPLICATED if request.code == CODE_PING => {
                // Always answered, before login too: a refused ping sends the 0.11.0 client
                // into its reconnect loop.
                return Outcome::Reply(reply(request, 0, &[]));
            }
            OPERATION_NON_REPLICATED
                if matches!(
                    request.code,
                    CODE_LOGIN_USER_LEGACY | CODE_LOGIN_WITH_PAT_LEGACY
                ) =>
            {
                return Outcome::Evict(eviction(request.client, EVICTION_MALFORMED_LOGIN, None));
            }
            _ => {}
        }
        let Some(login) = &self.login else {
            return Outcome::Reply(reply(request, ERROR_UNAUTHENTICATED, &[]));
        };
        if request.session != login.session {
            return Outcome::Reply(reply(request, ERROR_UNAUTHENTICATED, &[]));
        }
        let (user_id, username) = (login.user_id, login.username.clone());
        let answer = match request.operation {
            OPERATION_LOGOUT => {
                self.login = None;
                self.shared.clients.set_user(self.number, None);
                Ok(Vec::new())
            }
            OPERATION_NON_REPLICATED => self.read(request, user_id, &username),
            OPERATION_CREATE_STREAM
            | OPERATION_UPDATE_STREAM
            | OPERATION_DELETE_STREAM
            | OPERATION_CREATE_TOPIC
            | OPERATION_UPDATE_TOPIC
            | OPERATION_DELETE_TOPIC
            | OPERATION_CREATE_PARTITIONS
            | OPERATION_DELETE_PARTITIONS
            | OPERATION_CREATE_CONSUMER_GROUP
            | OPERATION_DELETE_CONSUMER_GROUP
            | OPERATION_JOIN_CONSUMER_GROUP
            | OPERATION_LEAVE_CONSUMER_GROUP => self.write_metadata(request, user_id, &username),
            OPERATION_CREATE_USER..=OPERATION_DELETE_PERSONAL_ACCESS_TOKEN => {
                self.write_user(request, user_id, &username)
            }
            OPERATION_SEND_MESSAGES => self.send(request, user_id, &username),
            OPERATION_DELETE_SEGMENTS => self.delete_segments(request, user_id, &username),
            OPERATION_PURGE_STREAM | OPERATION_PURGE_TOPIC => {
                self.purge(request, user_id, &username)
            }
            OPERATION_STORE_CONSUMER_OFFSET => self.store_offset(request, user_id, &username),
            OPERATION_DELETE_CONSUMER_OFFSET => self.delete_offset(request, user_id, &username),
            _ => Err(WireError::new(
                ERROR_FEATURE_UNAVAILABLE,
                format!("operation {} is not served yet", request.operation),
            )),
        };
        Outcome::Reply(match answer {
            Ok(body) => reply(request, 0, &body),
            Err(error) => {
                self.shared.log(&format!(
                    "{}: operation {} code {}: error {} ({})",
                    self.peer, request.operation, request.code, error.code, error.why
                ));
                reply(request, error.code, &[])
            }
        })
    }

    /// LoginRegister: the version gate, then the credentials against the applied users.
    fn register(&mut self, request: &Request) -> Outcome {
        // A new login replaces the old one, whatever its outcome.
        self.login = None;
        let mut r = WireReader::new(&request.body);
        let Ok(version) = r.u32("protocol version") else {
            return Outcome::Evict(eviction(request.client, EVICTION_MALFORMED_LOGIN, None));
        };
        if !version_accepted(version) {
            return Outcome::Evict(eviction(
                request.client,
                EVICTION_INCOMPATIBLE_PROTOCOL,
                Some((PROTOCOL_VERSION, PROTOCOL_VERSION_MIN)),
            ));
        }
        let credentials = (|| {
            r.name("sdk name")?;
            r.name("sdk version")?;
            crate::users::parse_credentials(r.rest())
        })();
        let Ok(credentials) = credentials else {
            return Outcome::Evict(eviction(request.client, EVICTION_MALFORMED_LOGIN, None));
        };
        let metadata = match self.metadata() {
            Ok(metadata) => metadata,
            Err(error) => return Outcome::Reply(reply(request, error.code, &[])),
        };
        let user = match &credentials {
            Credentials::Password { username, password } => metadata
                .user(&Ident::Name(username.clone()))
                .ok()
                .filter(|user| {
                    user.status == UserStatus::Active
                        && password_matches(&user.password_hash, password)
                }),
            Credentials::Token(token) => metadata.user_by_token(&token_hash(token), now_us()),
        };
        let Some(user) = user else {
            let (who, code) = match &credentials {
                Credentials::Password { username, .. } => {
                    (format!("user {username}"), ERROR_INVALID_CREDENTIALS)
                }
                Credentials::Token(_) => {
                    ("a personal access token".to_string(), ERROR_INVALID_TOKEN)
                }
            };
            self.shared
                .log(&format!("{}: login refused for {who}", self.peer));
            return Outcome::Reply(reply(request, code, &[]));
        };
        let session = self.shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        self.login = Some(Login {
            session,
            user_id: user.id,
            username: user.username.clone(),
        });
        self.shared.clients.set_user(self.number, Some(user.id));
        let payload = replies::login(user.id, session, PROTOCOL_VERSION, &self.shared.version);
        Outcome::Reply(reply(request, 0, &result_ok(&payload)))
    }

    /// The metadata as applied through at least everything this connection saw: reads never
    /// go back, and include the connection's own writes.
    pub(crate) fn metadata(&mut self) -> Result<Arc<Metadata>, WireError> {
        let (applied, metadata) = self
            .routing
            .metadata(self.metadata_op, true)
            .map_err(|error| WireError::new(ERROR_GENERIC, format!("metadata: {error}")))?;
        self.metadata_op = self.metadata_op.max(applied);
        let metadata = Arc::new(metadata);
        self.shared
            .metadata_cache
            .store(applied, metadata.clone(), Instant::now());
        Ok(metadata)
    }

    /// The metadata for a data-path request on `stream`/`topic`: the gateway's cached copy
    /// when it holds this connection's writes and is young; else a checkpoint from any
    /// replica at least as new (so a metadata primary that is down does not stall sends);
    /// and from the primary when neither knows the topic (created a moment ago elsewhere).
    fn data_metadata(&mut self, stream: &Ident, topic: &Ident) -> Result<Arc<Metadata>, WireError> {
        let knows = |metadata: &Metadata| topic_target(metadata, stream, topic).is_ok();
        let now = Instant::now();
        if let Some(cached) = self.shared.metadata_cache.fresh(self.metadata_op, now) {
            if knows(&cached) {
                return Ok(cached);
            }
            return self.metadata();
        }
        let floor = self.metadata_op.max(self.shared.metadata_cache.floor());
        if let Ok((applied, metadata)) = self.routing.metadata(floor, false) {
            let metadata = Arc::new(metadata);
            self.shared
                .metadata_cache
                .store(applied, metadata.clone(), now);
            if knows(&metadata) {
                return Ok(metadata);
            }
        }
        self.metadata()
    }

    fn read(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        if request.code == CODE_POLL_MESSAGES {
            // A single consumer's poll reads the topic from the gateway's cached metadata; a
            // group's needs the current members and generation.
            let poll = parse_poll(&request.body)?;
            let target = &poll.target;
            let metadata = if target.consumer.0 == CONSUMER_KIND_SINGLE {
                self.data_metadata(&target.stream, &target.topic)?
            } else {
                self.metadata()?
            };
            let user = logged_in_user(&metadata, user_id, username)?;
            return self.poll(poll, &metadata, user);
        }
        let metadata = self.metadata()?;
        let user = logged_in_user(&metadata, user_id, username)?;
        let mut r = WireReader::new(&request.body);
        let body = match request.code {
            CODE_GET_STATS => {
                require(user.allows(Action::ReadServers))?;
                replies::stats(&self.shared.process_stats(), &metadata)
            }
            CODE_GET_CLUSTER_METADATA => {
                let (ip, port) = (self.shared.advertised.ip(), self.shared.advertised.port());
                replies::cluster("galgo", &ip.to_string(), port, self.shared.http_port)
            }
            CODE_DESCRIBE_OPTIONS => crate::options_catalog::describe_options(&request.body)?,
            CODE_GET_SNAPSHOT_FILE => {
                require(user.allows(Action::ReadServers))?;
                let types = crate::snapshot_file::parse_request(&request.body)?;
                let sources = crate::snapshot_file::gather(&self.shared, &metadata);
                crate::snapshot_file::archive(&types, &sources)
            }
            CODE_GET_ME => {
                let entry = self.shared.clients.get(self.number).ok_or_else(|| {
                    WireError::new(ERROR_GENERIC, "this connection is not registered")
                })?;
                let mut out = Vec::new();
                put_client(&mut out, self.number, &entry, true);
                out
            }
            CODE_GET_CLIENT => {
                let number = r.u32("client id")?;
                r.finish("get client")?;
                if number != self.number {
                    require(user.allows(Action::ReadServers))?;
                }
                // Empty: no such client on this gateway (the client's Ok(None)).
                let mut out = Vec::new();
                if let Some(entry) = self.shared.clients.get(number) {
                    put_client(&mut out, number, &entry, true);
                }
                out
            }
            CODE_GET_CLIENTS => {
                r.finish("get clients")?;
                require(user.allows(Action::ReadServers))?;
                let mut out = Vec::new();
                for (number, entry) in self.shared.clients.all() {
                    put_client(&mut out, number, &entry, false);
                }
                out
            }
            CODE_GET_USER | CODE_GET_USERS | CODE_GET_PERSONAL_ACCESS_TOKENS => {
                return crate::user_commands::read_users(request, &metadata, user)
            }
            CODE_GET_CONSUMER_GROUP | CODE_SYNC_CONSUMER_GROUP => {
                let stream_ident = r.identifier("stream")?;
                let topic_ident = r.identifier("topic")?;
                let group_ident = r.identifier("consumer group")?;
                r.finish("consumer group")?;
                let target = pollable(&metadata, user, &stream_ident, &topic_ident)?;
                let topic = topic_of(&metadata, &target);
                match find_group(topic, &group_ident) {
                    // Empty: not found (Get), or not a member (Sync).
                    None => Vec::new(),
                    Some(group) if request.code == CODE_GET_CONSUMER_GROUP => {
                        replies::group_details(group, target.partitions)
                    }
                    Some(group) => match group.members.get(&self.member) {
                        Some(owned) => replies::group_assignment(group.generation, owned),
                        None => Vec::new(),
                    },
                }
            }
            CODE_GET_CONSUMER_GROUPS => {
                let stream_ident = r.identifier("stream")?;
                let topic_ident = r.identifier("topic")?;
                r.finish("consumer groups")?;
                let target = pollable(&metadata, user, &stream_ident, &topic_ident)?;
                let mut out = Vec::new();
                for group in topic_of(&metadata, &target).groups.values() {
                    replies::group_header(&mut out, group, target.partitions);
                }
                out
            }
            CODE_GET_CONSUMER_OFFSET => return self.get_offset(&request.body, &metadata, user),
            CODE_GET_STREAM => {
                let ident = r.identifier("stream")?;
                r.finish("get stream")?;
                match find_stream(&metadata, &ident) {
                    Some(stream) if user.allows(Action::ReadStream { stream: stream.id }) => {
                        replies::stream_with_topics(stream)
                    }
                    Some(_) => return Err(unauthorized()),
                    None => Vec::new(), // Empty: not found.
                }
            }
            CODE_GET_STREAMS => {
                r.finish("get streams")?;
                let mut out = Vec::new();
                for stream in metadata.streams.values() {
                    if user.allows(Action::ReadStream { stream: stream.id }) {
                        replies::stream(&mut out, stream);
                    }
                }
                out
            }
            CODE_GET_TOPIC => {
                let stream_ident = r.identifier("stream")?;
                let topic_ident = r.identifier("topic")?;
                r.finish("get topic")?;
                let found = find_stream(&metadata, &stream_ident).and_then(|stream| {
                    let topic = find_topic(stream, &topic_ident)?;
                    Some((stream.id, topic))
                });
                match found {
                    Some((stream, topic)) => {
                        require(user.allows(Action::ReadTopic {
                            stream,
                            topic: topic.id,
                        }))?;
                        replies::topic_with_partitions(topic)
                    }
                    None => Vec::new(),
                }
            }
            CODE_GET_TOPICS => {
                let ident = r.identifier("stream")?;
                r.finish("get topics")?;
                match find_stream(&metadata, &ident) {
                    Some(stream) => {
                        require(user.allows(Action::ReadStream { stream: stream.id }))?;
                        replies::topics(stream)
                    }
                    None => Vec::new(),
                }
            }
            code => {
                return Err(WireError::new(
                    ERROR_FEATURE_UNAVAILABLE,
                    format!("command {code} is not served yet"),
                ))
            }
        };
        Ok(body)
    }

    /// A metadata op: checked against the user's permissions on the applied metadata, then
    /// committed through the metadata group; the reply carries the result section.
    fn write_metadata(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let metadata = self.metadata()?;
        let user = logged_in_user(&metadata, user_id, username)?;
        let mut r = WireReader::new(&request.body);
        // A join or leave that succeeds is recorded for GetMe and GetClient.
        let mut membership: Option<(bool, GroupKey)> = None;
        let (op, action) = match request.operation {
            OPERATION_CREATE_STREAM => {
                let name = r.name("stream name")?;
                if !r.rest().is_empty() {
                    return Err(WireError::new(
                        ERROR_UNSUPPORTED_OPTION_KEY,
                        "streams take no options",
                    ));
                }
                (
                    MetadataOp::CreateStream { name },
                    Some(Action::CreateStream),
                )
            }
            OPERATION_DELETE_STREAM => {
                let stream = r.identifier("stream")?;
                r.finish("delete stream")?;
                let action = Action::ManageStream {
                    stream: stream_of(&metadata, &stream)?.id,
                };
                (MetadataOp::DeleteStream { stream }, Some(action))
            }
            OPERATION_CREATE_TOPIC => {
                let stream = r.identifier("stream")?;
                let partitions = r.u32("partitions count")?;
                let name = r.name("topic name")?;
                let options = topic_options(r.rest())?;
                let action = Action::CreateTopic {
                    stream: stream_of(&metadata, &stream)?.id,
                };
                let op = MetadataOp::CreateTopic {
                    stream,
                    name,
                    partitions,
                    replication_factor: 0,
                    options,
                };
                (op, Some(action))
            }
            OPERATION_UPDATE_STREAM => {
                let stream = r.identifier("stream")?;
                let name = r.name("stream name")?;
                if !r.rest().is_empty() {
                    return Err(WireError::new(
                        ERROR_UNSUPPORTED_OPTION_KEY,
                        "streams take no options",
                    ));
                }
                let action = Action::ManageStream {
                    stream: stream_of(&metadata, &stream)?.id,
                };
                (MetadataOp::UpdateStream { stream, name }, Some(action))
            }
            OPERATION_UPDATE_TOPIC => {
                let stream = r.identifier("stream")?;
                let topic = r.identifier("topic")?;
                let name = r.name("topic name")?;
                let found = stream_of(&metadata, &stream)?;
                let found_topic = find_topic(found, &topic).ok_or_else(|| {
                    WireError::new(ERROR_TOPIC_ID_NOT_FOUND, format!("topic {topic}"))
                })?;
                let options = update_topic_options(found_topic.options, r.rest())?;
                let action = Action::ManageTopic {
                    stream: found.id,
                    topic: found_topic.id,
                };
                let op = MetadataOp::UpdateTopic {
                    stream,
                    topic,
                    name,
                    options,
                };
                (op, Some(action))
            }
            OPERATION_DELETE_TOPIC => {
                let stream = r.identifier("stream")?;
                let topic = r.identifier("topic")?;
                r.finish("delete topic")?;
                let found = stream_of(&metadata, &stream)?;
                let found_topic = find_topic(found, &topic).ok_or_else(|| {
                    WireError::new(ERROR_TOPIC_ID_NOT_FOUND, format!("topic {topic}"))
                })?;
                let action = Action::ManageTopic {
                    stream: found.id,
                    topic: found_topic.id,
                };
                (MetadataOp::DeleteTopic { stream, topic }, Some(action))
            }
            OPERATION_CREATE_PARTITIONS | OPERATION_DELETE_PARTITIONS => {
                let stream = r.identifier("stream")?;
                let topic = r.identifier("topic")?;
                let count = r.u32("partitions count")?;
                r.finish("partitions")?;
                let target = topic_target(&metadata, &stream, &topic)?;
                let action = Action::ManageTopic {
                    stream: target.stream,
                    topic: target.topic,
                };
                let op = if request.operation == OPERATION_CREATE_PARTITIONS {
                    MetadataOp::CreatePartitions {
                        stream,
                        topic,
                        count,
                    }
                } else {
                    MetadataOp::DeletePartitions {
                        stream,
                        topic,
                        count,
                    }
                };
                (op, Some(action))
            }
            OPERATION_CREATE_CONSUMER_GROUP => {
                let stream = r.identifier("stream")?;
                let topic = r.identifier("topic")?;
                let name = r.name("consumer group name")?;
                r.finish("create consumer group")?;
                let target = topic_target(&metadata, &stream, &topic)?;
                let action = Action::ManageTopic {
                    stream: target.stream,
                    topic: target.topic,
                };
                let op = MetadataOp::CreateConsumerGroup {
                    stream,
                    topic,
                    name,
                };
                (op, Some(action))
            }
            OPERATION_DELETE_CONSUMER_GROUP
            | OPERATION_JOIN_CONSUMER_GROUP
            | OPERATION_LEAVE_CONSUMER_GROUP => {
                let stream = r.identifier("stream")?;
                let topic = r.identifier("topic")?;
                let group = r.identifier("consumer group")?;
                r.finish("consumer group")?;
                let target = topic_target(&metadata, &stream, &topic)?;
                // Sent by the id it resolved to here: the client names a group whose name looks
                // like a number by that number.
                let group_id = match find_group(topic_of(&metadata, &target), &group) {
                    Some(found) => found.id,
                    None => {
                        return Err(WireError::new(
                            ERROR_CONSUMER_GROUP_ID_NOT_FOUND,
                            format!("consumer group {group}"),
                        ))
                    }
                };
                let group = Ident::Id(group_id);
                let (stream_id, topic_id) = (target.stream, target.topic);
                let member = self.member;
                membership = Some((
                    request.operation == OPERATION_JOIN_CONSUMER_GROUP,
                    (stream_id, topic_id, group_id),
                ));
                match request.operation {
                    OPERATION_DELETE_CONSUMER_GROUP => (
                        MetadataOp::DeleteConsumerGroup {
                            stream,
                            topic,
                            group,
                        },
                        Some(Action::ManageTopic {
                            stream: stream_id,
                            topic: topic_id,
                        }),
                    ),
                    OPERATION_JOIN_CONSUMER_GROUP => {
                        self.joined = true;
                        (
                            MetadataOp::JoinConsumerGroup {
                                stream,
                                topic,
                                group,
                                member,
                            },
                            Some(Action::Poll {
                                stream: stream_id,
                                topic: topic_id,
                            }),
                        )
                    }
                    _ => (
                        MetadataOp::LeaveConsumerGroup {
                            stream,
                            topic,
                            group,
                            member,
                        },
                        Some(Action::Poll {
                            stream: stream_id,
                            topic: topic_id,
                        }),
                    ),
                }
            }
            other => unreachable!("operation {other} is dispatched elsewhere"),
        };
        // Checked on the metadata this connection read; a stream or topic it does not know is
        // refused above, never sent unchecked.
        if let Some(action) = action {
            require(user.allows(action))?;
        }
        let applied = match self.commit_metadata(&op, request.operation)? {
            Ok(applied) => applied,
            Err(refused) => return Ok(refused),
        };
        match membership {
            Some((true, key)) => self.shared.clients.joined(self.number, key),
            Some((false, key)) => self.shared.clients.left(self.number, key),
            None => {}
        }
        let payload = match applied {
            Applied::StreamCreated { id } => {
                let metadata = self.metadata()?;
                let stream = metadata.streams.get(&id).ok_or_else(|| {
                    WireError::new(ERROR_GENERIC, "the created stream is not in the metadata")
                })?;
                replies::stream_with_topics(stream)
            }
            Applied::ConsumerGroupCreated { id } => {
                let metadata = self.metadata()?;
                let (stream_ident, topic_ident) = match &op {
                    MetadataOp::CreateConsumerGroup { stream, topic, .. } => {
                        (stream.clone(), topic.clone())
                    }
                    _ => unreachable!("a group is created by CreateConsumerGroup"),
                };
                let target = topic_target(&metadata, &stream_ident, &topic_ident)?;
                let group = topic_of(&metadata, &target)
                    .groups
                    .get(&id)
                    .ok_or_else(|| {
                        WireError::new(ERROR_GENERIC, "the created group is not in the metadata")
                    })?;
                replies::group_details(group, target.partitions)
            }
            Applied::TopicCreated { id } => {
                let metadata = self.metadata()?;
                let stream_ident = match &op {
                    MetadataOp::CreateTopic { stream, .. } => stream.clone(),
                    _ => unreachable!("a topic is created by CreateTopic"),
                };
                let topic = find_stream(&metadata, &stream_ident)
                    .and_then(|stream| stream.topics.get(&id))
                    .ok_or_else(|| {
                        WireError::new(ERROR_GENERIC, "the created topic is not in the metadata")
                    })?;
                replies::topic_with_partitions(topic)
            }
            _ => Vec::new(),
        };
        Ok(result_ok(&payload))
    }
}

impl Connection {
    /// Commits `op` through the metadata group: what it applied, or the result section of
    /// its refusal (with the IggyError code for `operation`).
    pub(crate) fn commit_metadata(
        &mut self,
        op: &MetadataOp,
        operation: u8,
    ) -> Result<Result<Applied, Vec<u8>>, WireError> {
        let body = op
            .encode()
            .map_err(|error| WireError::new(ERROR_INVALID_FORMAT, error.0))?;
        let committed = self
            .routing
            .call_metadata(body)
            .map_err(|error| WireError::new(ERROR_GENERIC, format!("metadata: {error}")))?;
        self.metadata_op = self.metadata_op.max(committed.op);
        self.shared.metadata_cache.written(committed.op);
        let decoded = MetadataReply::decode(&committed.body)
            .map_err(|error| WireError::new(ERROR_GENERIC, format!("metadata reply: {error}")))?;
        match decoded {
            MetadataReply::Applied(applied) => Ok(Ok(applied)),
            MetadataReply::Refused { kind, reason } => {
                self.shared
                    .log(&format!("{}: refused: {reason}", self.peer));
                Ok(Err(result_error(refusal_code(kind, operation))))
            }
        }
    }
}

/// The logged-in user, still active and still the one the id named at login.
pub(crate) fn logged_in_user<'a>(
    metadata: &'a Metadata,
    user_id: u32,
    username: &str,
) -> Result<&'a galgo_replica::metadata::users::User, WireError> {
    metadata
        .users
        .get(&user_id)
        .filter(|user| user.username == username && user.status == UserStatus::Active)
        .ok_or_else(|| WireError::new(ERROR_UNAUTHENTICATED, "the user is gone or inactive"))
}

/// The stream `ident` names, or the not-found error.
fn stream_of<'a>(metadata: &'a Metadata, ident: &Ident) -> Result<&'a Stream, WireError> {
    find_stream(metadata, ident)
        .ok_or_else(|| WireError::new(ERROR_STREAM_ID_NOT_FOUND, format!("stream {ident}")))
}

/// What a request on a topic resolved to: its stream and topic ids, names and partition count.
struct TopicTarget {
    stream: u32,
    topic: u32,
    stream_name: String,
    topic_name: String,
    partitions: u32,
    /// The VSR group of each partition (never reused: a topic deleted and created again has
    /// new ones, even under the same ids).
    groups: Vec<u64>,
}

fn topic_target(
    metadata: &Metadata,
    stream: &Ident,
    topic: &Ident,
) -> Result<TopicTarget, WireError> {
    let found = stream_of(metadata, stream)?;
    let found_topic = find_topic(found, topic)
        .ok_or_else(|| WireError::new(ERROR_TOPIC_ID_NOT_FOUND, format!("topic {topic}")))?;
    Ok(TopicTarget {
        stream: found.id,
        topic: found_topic.id,
        stream_name: found.name.clone(),
        topic_name: found_topic.name.clone(),
        partitions: u32::try_from(found_topic.partitions.len()).expect("bounded by the limits"),
        groups: found_topic.partitions.iter().map(|p| p.group).collect(),
    })
}

/// The topic `stream`/`topic` name, once `user` may poll it (reading, storing offsets and
/// consumer groups need the same right).
fn pollable(
    metadata: &Metadata,
    user: &galgo_replica::metadata::users::User,
    stream: &Ident,
    topic: &Ident,
) -> Result<TopicTarget, WireError> {
    let target = topic_target(metadata, stream, topic)?;
    require(user.allows(Action::Poll {
        stream: target.stream,
        topic: target.topic,
    }))?;
    Ok(target)
}

/// Where a consumer's offsets live: its key, the group generation its stores carry (groups
/// only), the partition and the partition's route.
struct ConsumerAt {
    key: ConsumerKey,
    generation: Option<u64>,
    partition: u32,
    route: PartitionRoute,
}

/// The topic a target names (resolved from this same metadata).
fn topic_of<'a>(
    metadata: &'a Metadata,
    target: &TopicTarget,
) -> &'a galgo_replica::metadata::Topic {
    &metadata.streams[&target.stream].topics[&target.topic]
}

/// The group `ident` names: by id or name, and a number that is no group's id also as a name
/// (the 0.11.0 client sends a numeric-looking name as a number).
fn find_group<'a>(
    topic: &'a galgo_replica::metadata::Topic,
    ident: &Ident,
) -> Option<&'a galgo_replica::metadata::groups::ConsumerGroup> {
    galgo_replica::metadata::names::find(&topic.groups, ident, |g| &g.name).or_else(
        || match ident {
            Ident::Id(id) => topic.groups.values().find(|g| g.name == id.to_string()),
            Ident::Name(_) => None,
        },
    )
}

/// A single consumer's key: its numeric id, or for a named consumer the low 32 bits of the
/// name's XXH3 (names and ids share one space of u32 keys).
fn consumer_key(consumer: &(u8, Ident)) -> Result<ConsumerKey, WireError> {
    match consumer {
        (1, Ident::Id(id)) => Ok(ConsumerKey::Consumer(*id)),
        (1, Ident::Name(name)) => Ok(ConsumerKey::Consumer(twox_hash::XxHash3_64::oneshot(
            name.as_bytes(),
        ) as u32)),
        _ => Err(WireError::new(
            ERROR_INVALID_FORMAT,
            "a consumer group is not a single consumer",
        )),
    }
}

fn routing_error(error: galgo_replica::routing::RoutingError) -> WireError {
    WireError::new(ERROR_GENERIC, format!("partition: {error}"))
}

impl Connection {
    /// The route of partition `partition` of a topic (cached per connection; refetched when
    /// the topic's partition groups changed).
    fn route(&mut self, target: &TopicTarget, partition: u32) -> Result<PartitionRoute, WireError> {
        let key = (target.stream, target.topic);
        let fresh = self.routes.get(&key).is_some_and(|routes| {
            routes
                .iter()
                .map(|route| route.group)
                .eq(target.groups.iter().copied())
        });
        if !fresh {
            let routes = self
                .routing
                .topic_routes(&target.stream_name, &target.topic_name)
                .map_err(routing_error)?
                .ok_or_else(|| WireError::new(ERROR_TOPIC_ID_NOT_FOUND, "the topic is gone"))?;
            self.routes.insert(key, routes);
        }
        self.routes[&key]
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| {
                WireError::new(
                    ERROR_RESOURCE_NOT_FOUND,
                    format!("partition {partition} of {}", target.partitions),
                )
            })
    }

    /// SendMessages: the checked batch, appended to the chosen partition through its group.
    fn send(
        &mut self,
        request: &mut Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let send = parse_send(&request.body)?;
        let batch_at = request.body.len() - send.batch.len();
        let batch_len = send.batch.len();
        let metadata = self.data_metadata(&send.stream, &send.topic)?;
        let user = logged_in_user(&metadata, user_id, username)?;
        let target = topic_target(&metadata, &send.stream, &send.topic)?;
        require(user.allows(Action::Send {
            stream: target.stream,
            topic: target.topic,
        }))?;
        let partition =
            choose_partition(&send.partitioning, target.partitions, &mut self.balanced)?;
        let route = self.route(&target, partition)?;
        let head = PartitionOp::Append {
            base_offset: 0,
            count: send.message_count,
            timestamp: 0,
            producer: None,
        }
        .encode(&[]);
        if head.len() + batch_len > galgo_consensus::message::BODY_SIZE_MAX {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!(
                    "a batch of {batch_len} bytes: at most {} per send",
                    galgo_consensus::message::BODY_SIZE_MAX - head.len()
                ),
            ));
        }
        // The batch goes to the group in the buffer it was read into, behind the head.
        let op = std::mem::take(&mut request.body).into_append(batch_at, &head);
        assert_eq!(op.len(), head.len() + batch_len);
        match self.call_partition(&route, op)? {
            PartitionReply::Appended { base_offset, .. } => {
                let mut body = Vec::with_capacity(24);
                body.extend_from_slice(&1u32.to_le_bytes());
                body.extend_from_slice(&target.stream.to_le_bytes());
                body.extend_from_slice(&target.topic.to_le_bytes());
                body.extend_from_slice(&partition.to_le_bytes());
                body.extend_from_slice(&base_offset.to_le_bytes());
                Ok(body)
            }
            other => Err(WireError::new(
                ERROR_GENERIC,
                format!("the partition answered {other:?}"),
            )),
        }
    }

    /// DeleteSegments: the partition's primary turns it into the cut its oldest sealed
    /// segments allow (a replicated op; each replica then deletes those segments). Needs the
    /// right to manage the topic.
    fn delete_segments(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let parsed = parse_delete_segments(&request.body)?;
        let metadata = self.data_metadata(&parsed.stream, &parsed.topic)?;
        let user = logged_in_user(&metadata, user_id, username)?;
        let target = topic_target(&metadata, &parsed.stream, &parsed.topic)?;
        require(user.allows(Action::ManageTopic {
            stream: target.stream,
            topic: target.topic,
        }))?;
        let route = self.route(&target, parsed.partition)?;
        let op = PartitionOp::DeleteSegments {
            count: parsed.count,
        }
        .encode(&[]);
        match self.call_partition(&route, op)? {
            PartitionReply::Done => Ok(Vec::new()),
            PartitionReply::Refused { reason } => Err(WireError::new(
                ERROR_GENERIC,
                format!("deleting segments: {reason}"),
            )),
            other => Err(WireError::new(
                ERROR_GENERIC,
                format!("deleting segments: the partition answered {other:?}"),
            )),
        }
    }

    /// PurgeStream and PurgeTopic (result-framed): every partition of the topic, or of
    /// every topic of the stream, cut at its end (`PartitionOp::Purge`): no message is kept,
    /// offsets go on from there. Needs the right to manage the stream or the topic. A
    /// partition that fails stops the purge there (those before it are purged).
    fn purge(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let mut r = WireReader::new(&request.body);
        let stream = r.identifier("stream")?;
        let topic = if request.operation == OPERATION_PURGE_TOPIC {
            Some(r.identifier("topic")?)
        } else {
            None
        };
        r.finish("purge")?;
        let metadata = self.metadata()?;
        let user = logged_in_user(&metadata, user_id, username)?;
        let found = stream_of(&metadata, &stream)?;
        let topics: Vec<Ident> = match &topic {
            Some(topic) => {
                let target = topic_target(&metadata, &stream, topic)?;
                require(user.allows(Action::ManageTopic {
                    stream: target.stream,
                    topic: target.topic,
                }))?;
                vec![Ident::Id(target.topic)]
            }
            None => {
                require(user.allows(Action::ManageStream { stream: found.id }))?;
                found.topics.keys().map(|id| Ident::Id(*id)).collect()
            }
        };
        for topic in topics {
            let target = topic_target(&metadata, &stream, &topic)?;
            for partition in 0..target.partitions {
                let route = self.route(&target, partition)?;
                match self.call_partition(&route, PartitionOp::Purge.encode(&[]))? {
                    PartitionReply::Done => {}
                    other => {
                        return Err(WireError::new(
                            ERROR_GENERIC,
                            format!("purging partition {partition} of topic {topic}: {other:?}"),
                        ))
                    }
                }
            }
        }
        Ok(result_ok(&[]))
    }

    /// A partition op through its group; its reply.
    fn call_partition(
        &mut self,
        route: &PartitionRoute,
        op: impl Into<bytes::Bytes>,
    ) -> Result<PartitionReply, WireError> {
        let answer = self.routing.call_route(route, op).map_err(routing_error)?;
        PartitionReply::decode(&answer.body)
            .map_err(|error| WireError::new(ERROR_GENERIC, error.to_string()))
    }

    /// A consumer's key, partition and the partition's route, once the user may poll the
    /// topic (reading and storing offsets need the same right).
    fn consumer_route(
        &mut self,
        metadata: &Metadata,
        user: &galgo_replica::metadata::users::User,
        target: &ConsumerTarget,
    ) -> Result<ConsumerAt, WireError> {
        let topic = pollable(metadata, user, &target.stream, &target.topic)?;
        let (key, generation, partition) = match &target.consumer {
            (2, ident) => {
                // A group's offsets are kept per partition and fenced by generation; only a
                // member may use them, on a partition it owns in the current generation.
                let group = find_group(topic_of(metadata, &topic), ident).ok_or_else(|| {
                    WireError::new(ERROR_CONSUMER_GROUP_ID_NOT_FOUND, format!("group {ident}"))
                })?;
                let owned = group.members.get(&self.member).ok_or_else(|| {
                    WireError::new(ERROR_CONSUMER_GROUP_MEMBER_NOT_FOUND, "not a member")
                })?;
                let partition = match target.partition {
                    Some(partition) => partition,
                    None => *owned.first().ok_or_else(|| {
                        WireError::new(ERROR_CONSUMER_GROUP_PARTITION_NOT_OWNED, "no partition")
                    })?,
                };
                if !owned.contains(&partition) {
                    return Err(WireError::new(
                        ERROR_CONSUMER_GROUP_PARTITION_NOT_OWNED,
                        format!("partition {partition} in generation {}", group.generation),
                    ));
                }
                (
                    ConsumerKey::Group(group.id),
                    Some(group.generation),
                    partition,
                )
            }
            consumer => (consumer_key(consumer)?, None, target.partition.unwrap_or(0)),
        };
        let route = self.route(&topic, partition)?;
        Ok(ConsumerAt {
            key,
            generation,
            partition,
            route,
        })
    }

    /// PollMessages: committed batches from the partition's group, stamped and cut to the
    /// offsets asked for; with auto-commit, the consumer's offset is then stored.
    fn poll(
        &mut self,
        poll: PollRequest,
        metadata: &Metadata,
        user: &galgo_replica::metadata::users::User,
    ) -> Result<Vec<u8>, WireError> {
        let at = self.consumer_route(metadata, user, &poll.target)?;
        let (consumer, partition) = (at.key, at.partition);
        let start = match poll.strategy {
            Strategy::Offset(offset) => PollStart::Offset(offset),
            Strategy::First => PollStart::Offset(0),
            Strategy::Last => PollStart::Last(poll.count),
            Strategy::Timestamp(us) => PollStart::Timestamp(us),
            Strategy::Next => PollStart::Next(consumer),
        };
        let query = PollQuery {
            start,
            batches_max: poll.count.clamp(1, POLL_BATCHES_MAX),
            bytes_max: POLL_BYTES_MAX,
        };
        let polled = self.routing.poll(&at.route, query).map_err(routing_error)?;
        let (reply, served, last) = poll_reply(
            partition,
            polled.end,
            polled.start,
            poll.count,
            &polled.batches,
        );
        if let (true, Some(last)) = (poll.auto_commit && served > 0, last) {
            self.commit_offset(&at, last)?;
        }
        Ok(reply)
    }

    fn commit_offset(&mut self, at: &ConsumerAt, offset: u64) -> Result<(), WireError> {
        let op = PartitionOp::StoreConsumerOffset {
            consumer: at.key,
            offset,
            generation: at.generation,
        }
        .encode(&[]);
        match self.call_partition(&at.route, op)? {
            PartitionReply::Done => Ok(()),
            // A rebalance the member has not synced yet: it syncs and retries on 5009.
            PartitionReply::Refused { reason } if reason.starts_with("StaleGeneration") => {
                Err(WireError::new(
                    ERROR_CONSUMER_GROUP_PARTITION_NOT_OWNED,
                    format!("storing offset {offset}: {reason}"),
                ))
            }
            other => Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("storing offset {offset}: {other:?}"),
            )),
        }
    }

    /// A store or delete of a consumer offset: the request, and where its consumer's offsets
    /// live (once the user may poll the topic).
    fn offset_write(
        &mut self,
        request: &Request,
        kind: OffsetRequestKind,
        user_id: u32,
        username: &str,
    ) -> Result<(crate::messages::OffsetRequest, ConsumerAt), WireError> {
        let parsed = parse_offset_request(&request.body, kind)?;
        let metadata = self.metadata()?;
        let user = logged_in_user(&metadata, user_id, username)?;
        let at = self.consumer_route(&metadata, user, &parsed.target)?;
        Ok((parsed, at))
    }

    /// DeleteConsumerOffset (result-framed): error 20 when none is stored.
    fn delete_offset(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let (_, at) = self.offset_write(request, OffsetRequestKind::Delete, user_id, username)?;
        let op = PartitionOp::DeleteConsumerOffset { consumer: at.key }.encode(&[]);
        match self.call_partition(&at.route, op)? {
            PartitionReply::Done => Ok(result_ok(&[])),
            PartitionReply::Refused { reason } if reason.starts_with("ConsumerOffsetNotFound") => {
                Ok(result_error(ERROR_RESOURCE_NOT_FOUND))
            }
            other => Err(WireError::new(
                ERROR_GENERIC,
                format!("deleting an offset: {other:?}"),
            )),
        }
    }

    /// StoreConsumerOffset (result-framed).
    fn store_offset(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let (store, at) =
            self.offset_write(request, OffsetRequestKind::Store, user_id, username)?;
        let offset = store.offset.expect("a store carries its offset");
        match self.commit_offset(&at, offset) {
            Ok(()) => Ok(result_ok(&[])),
            Err(error)
                if error.code == ERROR_INVALID_FORMAT
                    || error.code == ERROR_CONSUMER_GROUP_PARTITION_NOT_OWNED =>
            {
                Ok(result_error(error.code))
            }
            Err(error) => Err(error),
        }
    }

    /// GetConsumerOffset: `[partition][newest offset][stored offset]`, empty when none is
    /// stored.
    fn get_offset(
        &mut self,
        body: &[u8],
        metadata: &Metadata,
        user: &galgo_replica::metadata::users::User,
    ) -> Result<Vec<u8>, WireError> {
        let get = parse_offset_request(body, OffsetRequestKind::Get)?;
        let at = self.consumer_route(metadata, user, &get.target)?;
        let (partition, route) = (at.partition, at.route.clone());
        let query = PollQuery {
            start: PollStart::Next(at.key),
            batches_max: 0,
            bytes_max: 0,
        };
        let polled = self.routing.poll(&route, query).map_err(routing_error)?;
        let Some(stored) = polled.stored else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&polled.end.saturating_sub(1).to_le_bytes());
        out.extend_from_slice(&stored.to_le_bytes());
        Ok(out)
    }
}

pub(crate) fn require(allowed: bool) -> Result<(), WireError> {
    if allowed {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn unauthorized() -> WireError {
    WireError::new(ERROR_UNAUTHORIZED, "not permitted")
}

fn find_stream<'a>(metadata: &'a Metadata, ident: &Ident) -> Option<&'a Stream> {
    galgo_replica::metadata::names::find(&metadata.streams, ident, |s| &s.name)
}

fn find_topic<'a>(stream: &'a Stream, ident: &Ident) -> Option<&'a galgo_replica::metadata::Topic> {
    galgo_replica::metadata::names::find(&stream.topics, ident, |t| &t.name)
}

/// The IggyError code of a metadata refusal, for the operation that was refused.
pub fn refusal_code(kind: RefusalKind, operation: u8) -> u32 {
    match kind {
        RefusalKind::BadRequest => ERROR_INVALID_FORMAT,
        RefusalKind::InvalidName
            if operation == OPERATION_CREATE_STREAM || operation == OPERATION_UPDATE_STREAM =>
        {
            ERROR_INVALID_STREAM_NAME
        }
        RefusalKind::InvalidName
            if operation == OPERATION_CREATE_TOPIC || operation == OPERATION_UPDATE_TOPIC =>
        {
            ERROR_INVALID_TOPIC_NAME
        }
        RefusalKind::InvalidName
            if operation == OPERATION_CREATE_USER || operation == OPERATION_UPDATE_USER =>
        {
            ERROR_INVALID_USERNAME
        }
        RefusalKind::InvalidName if operation == OPERATION_CREATE_PERSONAL_ACCESS_TOKEN => {
            ERROR_INVALID_TOKEN_NAME
        }
        RefusalKind::InvalidName => ERROR_INVALID_FORMAT,
        RefusalKind::StreamNotFound => ERROR_STREAM_ID_NOT_FOUND,
        RefusalKind::StreamNameTaken => ERROR_STREAM_NAME_ALREADY_EXISTS,
        RefusalKind::TopicNotFound => ERROR_TOPIC_ID_NOT_FOUND,
        RefusalKind::TopicNameTaken => ERROR_TOPIC_NAME_ALREADY_EXISTS,
        RefusalKind::InvalidValue if operation == OPERATION_CREATE_TOPIC => {
            ERROR_INVALID_PARTITIONS_COUNT
        }
        RefusalKind::InvalidValue if operation == OPERATION_CREATE_PERSONAL_ACCESS_TOKEN => {
            ERROR_INVALID_TOKEN_EXPIRY
        }
        RefusalKind::InvalidValue
            if operation == OPERATION_CREATE_PARTITIONS
                || operation == OPERATION_DELETE_PARTITIONS =>
        {
            ERROR_INVALID_PARTITIONS_COUNT
        }
        RefusalKind::InvalidValue => ERROR_INVALID_FORMAT,
        RefusalKind::ConsumerGroupNotFound => ERROR_CONSUMER_GROUP_ID_NOT_FOUND,
        RefusalKind::ConsumerGroupNameTaken => ERROR_CONSUMER_GROUP_NAME_ALREADY_EXISTS,
        RefusalKind::MemberNotFound => ERROR_CONSUMER_GROUP_MEMBER_NOT_FOUND,
        RefusalKind::UserNotFound | RefusalKind::TokenNotFound => ERROR_RESOURCE_NOT_FOUND,
        RefusalKind::RootProtected if operation == OPERATION_DELETE_USER => {
            ERROR_CANNOT_DELETE_USER
        }
        RefusalKind::RootProtected if operation == OPERATION_UPDATE_PERMISSIONS => {
            ERROR_CANNOT_CHANGE_PERMISSIONS
        }
        RefusalKind::RootProtected => ERROR_UNAUTHORIZED,
        RefusalKind::UsernameTaken => ERROR_USER_ALREADY_EXISTS,
        RefusalKind::TokenNameTaken => ERROR_TOKEN_ALREADY_EXISTS,
        RefusalKind::LimitReached if operation == OPERATION_CREATE_USER => {
            ERROR_USERS_LIMIT_REACHED
        }
        RefusalKind::LimitReached if operation == OPERATION_CREATE_PERSONAL_ACCESS_TOKEN => {
            ERROR_TOKENS_LIMIT_REACHED
        }
        RefusalKind::LimitReached => ERROR_GENERIC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_the_codes_iggy_clients_know() {
        let cases = [
            (
                RefusalKind::StreamNameTaken,
                OPERATION_CREATE_STREAM,
                ERROR_STREAM_NAME_ALREADY_EXISTS,
            ),
            (
                RefusalKind::InvalidName,
                OPERATION_CREATE_TOPIC,
                ERROR_INVALID_TOPIC_NAME,
            ),
            (
                RefusalKind::StreamNotFound,
                OPERATION_DELETE_TOPIC,
                ERROR_STREAM_ID_NOT_FOUND,
            ),
            (
                RefusalKind::UsernameTaken,
                OPERATION_CREATE_USER,
                ERROR_USER_ALREADY_EXISTS,
            ),
            (
                RefusalKind::RootProtected,
                OPERATION_DELETE_USER,
                ERROR_CANNOT_DELETE_USER,
            ),
            (
                RefusalKind::RootProtected,
                OPERATION_UPDATE_PERMISSIONS,
                ERROR_CANNOT_CHANGE_PERMISSIONS,
            ),
            (
                RefusalKind::LimitReached,
                OPERATION_CREATE_PERSONAL_ACCESS_TOKEN,
                ERROR_TOKENS_LIMIT_REACHED,
            ),
            (
                RefusalKind::TokenNameTaken,
                OPERATION_CREATE_PERSONAL_ACCESS_TOKEN,
                ERROR_TOKEN_ALREADY_EXISTS,
            ),
            (
                RefusalKind::InvalidValue,
                OPERATION_CREATE_PARTITIONS,
                ERROR_INVALID_PARTITIONS_COUNT,
            ),
        ];
        for (kind, operation, code) in cases {
            assert_eq!(
                refusal_code(kind, operation),
                code,
                "{kind:?} on {operation}"
            );
        }
    }
}
