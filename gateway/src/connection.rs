//! One client connection of the Iggy binary protocol: its login state and the handling of each
//! request, in lockstep (the 0.11.0 client keeps one request in flight). Metadata reads come
//! from a checkpoint of the applied metadata (read after this connection's own writes);
//! metadata writes go to the metadata group through the routing client, which retries across
//! view changes with the same request identity.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use galgo_replica::metadata::machine::MetadataReply;
use galgo_replica::metadata::{
    Action, Applied, Ident, Metadata, MetadataOp, RefusalKind, Stream, UserStatus,
};
use galgo_replica::routing::RoutingClient;

use crate::codes::*;
use crate::frame::{eviction, reply, Request};
use crate::replies;
use crate::server::Shared;
use crate::wire::{result_error, result_ok, topic_options, WireError, WireReader};

/// A login context (unused by Galgo) is accepted up to this size.
const LOGIN_CONTEXT_MAX: u32 = 4096;

/// What to send back: a reply, or an eviction after which the connection closes.
pub enum Outcome {
    Reply(Vec<u8>),
    Evict(Vec<u8>),
}

struct Login {
    session: u64,
    user_id: u32,
    /// User ids are reused after a delete: the login holds only while the id still names
    /// this user.
    username: String,
}

pub struct Connection {
    shared: Arc<Shared>,
    routing: RoutingClient,
    peer: SocketAddr,
    /// This connection's number (GetMe's client id).
    number: u32,
    login: Option<Login>,
    /// The op of this connection's last metadata write: reads see at least that.
    metadata_op: u64,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        routing: RoutingClient,
        peer: SocketAddr,
        number: u32,
    ) -> Connection {
        Connection {
            shared,
            routing,
            peer,
            number,
            login: None,
            metadata_op: 0,
        }
    }

    pub fn logged_in(&self) -> bool {
        self.login.is_some()
    }

    pub fn handle(&mut self, request: &Request) -> Outcome {
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
                Ok(Vec::new())
            }
            OPERATION_NON_REPLICATED => self.read(request, user_id, &username),
            OPERATION_CREATE_STREAM
            | OPERATION_DELETE_STREAM
            | OPERATION_CREATE_TOPIC
            | OPERATION_DELETE_TOPIC => self.write_metadata(request, user_id, &username),
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
            let username = r.name("username")?;
            let len = r.u8("password")?;
            let password = r.take(usize::from(len), "password")?.to_vec();
            let context = r.u32("context length")?;
            if context > LOGIN_CONTEXT_MAX {
                return Err(WireError::new(
                    ERROR_INVALID_FORMAT,
                    "a login context too long",
                ));
            }
            r.take(context as usize, "context")?;
            r.finish("login")?;
            Ok((username, password))
        })();
        let Ok((username, password)) = credentials else {
            // Not a username and password: a personal access token login, or garbage.
            return Outcome::Reply(reply(request, ERROR_FEATURE_UNAVAILABLE, &[]));
        };
        let metadata = match self.metadata() {
            Ok(metadata) => metadata,
            Err(error) => return Outcome::Reply(reply(request, error.code, &[])),
        };
        let user = metadata.user(&Ident::Name(username.clone())).ok();
        let verified = user.is_some_and(|user| {
            user.status == UserStatus::Active && password_matches(&user.password_hash, &password)
        });
        let Some(user) = user.filter(|_| verified) else {
            self.shared
                .log(&format!("{}: login refused for user {username}", self.peer));
            return Outcome::Reply(reply(request, ERROR_INVALID_CREDENTIALS, &[]));
        };
        let session = self.shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        self.login = Some(Login {
            session,
            user_id: user.id,
            username: user.username.clone(),
        });
        let payload = replies::login(user.id, session, PROTOCOL_VERSION, &self.shared.version);
        Outcome::Reply(reply(request, 0, &result_ok(&payload)))
    }

    /// The metadata as applied through at least everything this connection saw: reads never
    /// go back, and include the connection's own writes.
    fn metadata(&mut self) -> Result<Metadata, WireError> {
        let (applied, metadata) = self
            .routing
            .metadata(self.metadata_op)
            .map_err(|error| WireError::new(ERROR_GENERIC, format!("metadata: {error}")))?;
        self.metadata_op = self.metadata_op.max(applied);
        Ok(metadata)
    }

    fn read(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
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
            CODE_GET_ME => replies::me(self.number, Some(user_id), &self.peer.to_string()),
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
            other => unreachable!("operation {other} is dispatched elsewhere"),
        };
        // Checked on the metadata this connection read; a stream or topic it does not know is
        // refused above, never sent unchecked.
        if let Some(action) = action {
            require(user.allows(action))?;
        }
        let body = op
            .encode()
            .map_err(|error| WireError::new(ERROR_INVALID_FORMAT, error.0))?;
        let committed = self
            .routing
            .call_metadata(body)
            .map_err(|error| WireError::new(ERROR_GENERIC, format!("metadata: {error}")))?;
        self.metadata_op = self.metadata_op.max(committed.op);
        let decoded = MetadataReply::decode(&committed.body)
            .map_err(|error| WireError::new(ERROR_GENERIC, format!("metadata reply: {error}")))?;
        let applied = match decoded {
            MetadataReply::Applied(applied) => applied,
            MetadataReply::Refused { kind, reason } => {
                self.shared
                    .log(&format!("{}: refused: {reason}", self.peer));
                return Ok(result_error(refusal_code(kind, request.operation)));
            }
        };
        let payload = match applied {
            Applied::StreamCreated { id } => {
                let metadata = self.metadata()?;
                let stream = metadata.streams.get(&id).ok_or_else(|| {
                    WireError::new(ERROR_GENERIC, "the created stream is not in the metadata")
                })?;
                replies::stream_with_topics(stream)
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

/// The logged-in user, still active and still the one the id named at login.
fn logged_in_user<'a>(
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

fn require(allowed: bool) -> Result<(), WireError> {
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
        RefusalKind::InvalidName if operation == OPERATION_CREATE_STREAM => {
            ERROR_INVALID_STREAM_NAME
        }
        RefusalKind::InvalidName if operation == OPERATION_CREATE_TOPIC => ERROR_INVALID_TOPIC_NAME,
        RefusalKind::InvalidName => ERROR_INVALID_FORMAT,
        RefusalKind::StreamNotFound => ERROR_STREAM_ID_NOT_FOUND,
        RefusalKind::StreamNameTaken => ERROR_STREAM_NAME_ALREADY_EXISTS,
        RefusalKind::TopicNotFound => ERROR_TOPIC_ID_NOT_FOUND,
        RefusalKind::TopicNameTaken => ERROR_TOPIC_NAME_ALREADY_EXISTS,
        RefusalKind::InvalidValue if operation == OPERATION_CREATE_TOPIC => {
            ERROR_INVALID_PARTITIONS_COUNT
        }
        RefusalKind::InvalidValue => ERROR_INVALID_FORMAT,
        RefusalKind::UserNotFound
        | RefusalKind::TokenNotFound
        | RefusalKind::ConsumerGroupNotFound
        | RefusalKind::MemberNotFound => ERROR_RESOURCE_NOT_FOUND,
        RefusalKind::RootProtected => ERROR_UNAUTHORIZED,
        RefusalKind::UsernameTaken
        | RefusalKind::TokenNameTaken
        | RefusalKind::ConsumerGroupNameTaken
        | RefusalKind::LimitReached => ERROR_GENERIC,
    }
}

/// Whether `password` matches an Argon2 PHC hash string.
pub fn password_matches(hash: &str, password: &[u8]) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_against_argon2_hashes() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(b"secret", &salt)
            .unwrap()
            .to_string();
        assert!(password_matches(&hash, b"secret"));
        assert!(!password_matches(&hash, b"Secret"));
        assert!(!password_matches("not a hash", b"secret"));
    }

    #[test]
    fn refusals_map_to_the_codes_iggy_clients_know() {
        assert_eq!(
            refusal_code(RefusalKind::StreamNameTaken, OPERATION_CREATE_STREAM),
            ERROR_STREAM_NAME_ALREADY_EXISTS
        );
        assert_eq!(
            refusal_code(RefusalKind::InvalidName, OPERATION_CREATE_TOPIC),
            ERROR_INVALID_TOPIC_NAME
        );
        assert_eq!(
            refusal_code(RefusalKind::StreamNotFound, OPERATION_DELETE_TOPIC),
            ERROR_STREAM_ID_NOT_FOUND
        );
    }
}
