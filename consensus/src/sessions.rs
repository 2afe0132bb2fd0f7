//! Client sessions: registration through the log, one request in flight per client, at-most-once
//! execution with the latest reply cached, and a bounded table that evicts the oldest session.
//! The table changes only when ops commit, so every replica holds the same table at each op.

use std::collections::BTreeMap;

use crate::header::Header;
use crate::message::Message;

#[derive(Clone, Debug)]
pub struct Session {
    /// The op that committed the client's register.
    pub session: u64,
    /// The latest committed request number.
    pub request: u32,
    pub request_checksum: u128,
    pub reply: Option<Message>,
}

/// How the primary treats an incoming request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    /// New work: prepare it.
    New,
    /// A retry of the latest committed request: resend this reply.
    Resend(Box<Message>),
    /// Unknown client or session evicted/too low: tell the client to re-register.
    Evict(EvictionReason),
    /// Stale, replayed or conflicting: drop silently.
    Drop,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionReason {
    NoSession = 1,
    SessionTooLow = 2,
}

#[derive(Clone, Debug)]
pub struct ClientSessions {
    sessions: BTreeMap<u128, Session>,
    clients_max: usize,
}

impl ClientSessions {
    pub fn new(clients_max: usize) -> ClientSessions {
        assert!(clients_max >= 1);
        ClientSessions {
            sessions: BTreeMap::new(),
            clients_max,
        }
    }

    pub fn get(&self, client: u128) -> Option<&Session> {
        self.sessions.get(&client)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn classify(&self, request: &Header) -> Classification {
        let Some(session) = self.sessions.get(&request.client) else {
            return Classification::Evict(EvictionReason::NoSession);
        };
        if request.session < session.session {
            return Classification::Evict(EvictionReason::SessionTooLow);
        }
        if request.session > session.session {
            return Classification::Drop;
        }
        if request.request < session.request {
            return Classification::Drop;
        }
        if request.request == session.request {
            return match &session.reply {
                Some(reply) if session.request_checksum == request.checksum => {
                    Classification::Resend(Box::new(reply.clone()))
                }
                _ => Classification::Drop,
            };
        }
        if request.request == session.request + 1 {
            Classification::New
        } else {
            Classification::Drop
        }
    }

    /// Commits a register at `op`. Returns the client whose session was evicted to make room.
    pub fn register(&mut self, client: u128, op: u64) -> Option<u128> {
        let mut evicted = None;
        if !self.sessions.contains_key(&client) && self.sessions.len() == self.clients_max {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.session)
                .map(|(client, _)| *client)
                .expect("table is full");
            self.sessions.remove(&oldest);
            evicted = Some(oldest);
        }
        self.sessions.insert(
            client,
            Session {
                session: op,
                request: 0,
                request_checksum: 0,
                reply: None,
            },
        );
        assert!(self.sessions.len() <= self.clients_max);
        evicted
    }

    /// Whether a committed request should execute: its session is current and it is the next
    /// request number. Anything else is a duplicate and must not execute twice.
    pub fn should_execute(&self, request: &Header) -> bool {
        match self.sessions.get(&request.client) {
            Some(session) => {
                session.session == request.session && request.request == session.request + 1
            }
            None => false,
        }
    }

    pub fn record_reply(
        &mut self,
        client: u128,
        request: u32,
        request_checksum: u128,
        reply: Message,
    ) {
        let session = self.sessions.get_mut(&client).expect("session exists");
        assert_eq!(request, session.request + 1, "requests commit in order");
        session.request = request;
        session.request_checksum = request_checksum;
        session.reply = Some(reply);
    }
}

/// Bytes of one session's fixed part in `ClientSessions::encode`.
const SESSION_FIXED_SIZE: usize = 16 + 8 + 4 + 16 + 4;

impl ClientSessions {
    /// The table for a checkpoint: count, then per client (ascending) its id, session,
    /// request, request checksum and cached reply (size 0: none), all little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (client, session) in &self.sessions {
            bytes.extend_from_slice(&client.to_le_bytes());
            bytes.extend_from_slice(&session.session.to_le_bytes());
            bytes.extend_from_slice(&session.request.to_le_bytes());
            bytes.extend_from_slice(&session.request_checksum.to_le_bytes());
            let reply = session
                .reply
                .as_ref()
                .map(Message::encode)
                .unwrap_or_default();
            bytes.extend_from_slice(&(reply.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&reply);
        }
        bytes
    }

    /// A table `encode` made, for a group of at most `clients_max` clients; `None` if the
    /// bytes are not one (a count over the limit, a short entry, a reply that does not verify).
    pub fn decode(bytes: &[u8], clients_max: usize) -> Option<ClientSessions> {
        let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        if count > clients_max {
            return None;
        }
        let mut table = ClientSessions::new(clients_max);
        let mut at = 4usize;
        for _ in 0..count {
            let fixed = bytes.get(at..at + SESSION_FIXED_SIZE)?;
            let client = u128::from_le_bytes(fixed[..16].try_into().ok()?);
            let session = u64::from_le_bytes(fixed[16..24].try_into().ok()?);
            let request = u32::from_le_bytes(fixed[24..28].try_into().ok()?);
            let request_checksum = u128::from_le_bytes(fixed[28..44].try_into().ok()?);
            let reply_size = u32::from_le_bytes(fixed[44..48].try_into().ok()?) as usize;
            at += SESSION_FIXED_SIZE;
            let reply = if reply_size == 0 {
                None
            } else {
                let frame = bytes.get(at..at.checked_add(reply_size)?)?;
                at += reply_size;
                Some(Message::decode(frame).ok()?)
            };
            let entry = Session {
                session,
                request,
                request_checksum,
                reply,
            };
            if table.sessions.insert(client, entry).is_some() {
                return None; // A client twice.
            }
        }
        if at != bytes.len() {
            return None;
        }
        assert!(table.sessions.len() <= clients_max);
        Some(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Command, Header};

    fn request(client: u128, session: u64, number: u32, body: &[u8]) -> Header {
        let mut header = Header::new(Command::Request, 1, 1);
        header.client = client;
        header.session = session;
        header.request = number;
        header.set_checksums(body);
        header
    }

    #[test]
    fn classify_and_execute_at_most_once() {
        let mut sessions = ClientSessions::new(2);
        assert_eq!(
            sessions.classify(&request(7, 1, 1, b"a")),
            Classification::Evict(EvictionReason::NoSession)
        );
        assert_eq!(sessions.register(7, 5), None);
        let first = request(7, 5, 1, b"a");
        assert_eq!(sessions.classify(&first), Classification::New);
        assert!(sessions.should_execute(&first));
        let reply = Message::new(Header::new(Command::Reply, 1, 1), vec![]);
        sessions.record_reply(7, 1, first.checksum, reply.clone());
        assert!(
            !sessions.should_execute(&first),
            "a second commit of the same request must not execute"
        );
        assert_eq!(
            sessions.classify(&first),
            Classification::Resend(Box::new(reply))
        );
        assert_eq!(
            sessions.classify(&request(7, 5, 1, b"other")),
            Classification::Drop
        );
        assert_eq!(
            sessions.classify(&request(7, 5, 3, b"gap")),
            Classification::Drop
        );
        assert_eq!(
            sessions.classify(&request(7, 4, 2, b"old")),
            Classification::Evict(EvictionReason::SessionTooLow)
        );
    }

    #[test]
    fn a_table_comes_back_as_it_was_encoded_and_damage_is_refused() {
        let mut table = ClientSessions::new(4);
        table.register(10, 1);
        table.register(11, 2);
        let request = request(10, 1, 1, b"x");
        let reply = Message::new(Header::new(Command::Reply, 1, 0), b"answer".to_vec());
        table.record_reply(10, 1, request.checksum, reply.clone());
        let bytes = table.encode();
        let back = ClientSessions::decode(&bytes, 4).expect("decodes");
        assert_eq!(back.encode(), bytes);
        let session = back.get(10).unwrap();
        assert_eq!((session.session, session.request), (1, 1));
        assert_eq!(session.reply.as_ref().unwrap().body, reply.body);
        assert_eq!(
            back.classify(&request),
            Classification::Resend(Box::new(reply))
        );
        // More clients than the group allows, a cut, or a damaged reply: refused.
        assert!(ClientSessions::decode(&bytes, 1).is_none());
        for len in 0..bytes.len() {
            assert!(
                ClientSessions::decode(&bytes[..len], 4).is_none(),
                "cut at {len}"
            );
        }
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(ClientSessions::decode(&damaged, 4).is_none());
    }

    #[test]
    fn full_table_evicts_oldest_session() {
        let mut sessions = ClientSessions::new(2);
        sessions.register(1, 10);
        sessions.register(2, 11);
        assert_eq!(sessions.register(3, 12), Some(1));
        assert!(sessions.get(1).is_none());
        assert_eq!(sessions.len(), 2);
    }
}
