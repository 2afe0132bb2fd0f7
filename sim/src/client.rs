//! A simulated client: registers a session, then sends one request at a time with a random
//! payload, retrying (same request, same bytes) until a reply arrives; re-registers if evicted.
//! In the broker workload most requests are an idempotent producer's append (producer = the
//! client, one epoch, sequence numbers counting its batches); a batch whose session was
//! evicted is sent again, with the same stamp, in the next session, so the partition's
//! producer table (not the VSR session) must keep it from being appended twice. The rest
//! store consumer offsets: the client's own, always at or past the one it stored last, and the
//! shared consumer group's, in a generation drawn at or below one past the newest the client
//! saw accepted (so some are stale and must be refused). An evicted store is sent again too.

use galgo_consensus::header::operation;
use galgo_consensus::prng::Prng;
use galgo_consensus::{Command, Header, Message};
use galgo_replica::metadata::{Ident, MetadataOp, TopicOptions, UserStatus};
use galgo_replica::partition::ops::{ConsumerKey, PartitionOp, ProducerStamp};
use galgo_replica::partition::reply::PartitionReply;

use crate::options::Workload;

#[derive(Clone, Debug)]
pub struct Ack {
    pub client: u128,
    pub session: u64,
    pub request: u32,
    pub op: u64,
    pub request_checksum: u128,
    /// The reply body.
    pub reply: Vec<u8>,
    /// In the broker workload: what the request was.
    pub broker: Option<BrokerRequest>,
}

/// A broker workload request, as the checker needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerRequest {
    /// An append with this producer sequence.
    Append { sequence: u64 },
    /// A consumer offset store (`generation` for the consumer group's).
    StoreOffset {
        consumer: ConsumerKey,
        offset: u64,
        generation: Option<u64>,
    },
}

/// The consumer group every client of the broker workload shares.
pub const SHARED_GROUP: u32 = 1;

/// The group's current generation named by a stale-generation refusal (the partition's error,
/// `StaleGeneration { group, generation, current }`, in its debug form).
pub fn stale_generation_current(reason: &str) -> Option<u64> {
    let rest = reason.strip_prefix("StaleGeneration")?;
    let value = rest.split("current: ").nth(1)?;
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub struct Client {
    pub id: u128,
    cluster: u128,
    group: u64,
    replica_count: u8,
    placement_offset: u8,
    body_max: usize,
    session: u64,
    request: u32,
    view: u32,
    in_flight: Option<Message>,
    sent_at: u64,
    attempts: u32,
    pub evictions: u64,
    pub replies: u64,
    workload: Workload,
    /// Broker workload: the sequence of the next new batch, and the request in flight (kept
    /// across an eviction, to be sent again).
    batch_next: u64,
    broker: Option<(BrokerRequest, Vec<u8>)>,
    /// Broker workload: one past the highest offset acknowledged to this client, the offset
    /// it stored last for itself, and the newest group generation it saw accepted.
    acked_end: u64,
    stored_offset: u64,
    generation_seen: u64,
}

const RETRY_TICKS: u64 = 40;

impl Client {
    pub fn new(
        id: u128,
        cluster: u128,
        group: u64,
        replica_count: u8,
        placement_offset: u8,
        body_max: usize,
        workload: Workload,
    ) -> Client {
        assert!(id != 0);
        Client {
            id,
            cluster,
            group,
            replica_count,
            placement_offset,
            body_max,
            session: 0,
            request: 0,
            view: 0,
            in_flight: None,
            sent_at: 0,
            attempts: 0,
            evictions: 0,
            replies: 0,
            workload,
            batch_next: 0,
            broker: None,
            acked_end: 0,
            stored_offset: 0,
            generation_seen: 0,
        }
    }

    /// The next broker request: the one an eviction interrupted, or a new one — mostly a
    /// batch of 1 to 3 messages, else (once something was acknowledged) an offset store.
    fn next_broker_request(&mut self, payload: Vec<u8>, prng: &mut Prng) -> Vec<u8> {
        if let Some((_, body)) = &self.broker {
            return body.clone();
        }
        let draw = prng.below(10);
        let (request, op) = if self.acked_end == 0 || draw < 6 {
            let sequence = self.batch_next;
            let op = PartitionOp::Append {
                base_offset: 0,
                count: prng.range_inclusive(1, 3) as u32,
                timestamp: 0,
                producer: Some(ProducerStamp {
                    producer: self.id as u64,
                    epoch: 1,
                    sequence,
                }),
            };
            (BrokerRequest::Append { sequence }, op)
        } else if draw < 8 {
            // Its own offset only moves forward.
            let offset = prng.range_inclusive(self.stored_offset, self.acked_end - 1);
            let consumer = ConsumerKey::Consumer(self.id as u32);
            let request = BrokerRequest::StoreOffset {
                consumer,
                offset,
                generation: None,
            };
            let op = PartitionOp::StoreConsumerOffset {
                consumer,
                offset,
                generation: None,
            };
            (request, op)
        } else {
            let offset = prng.below(self.acked_end);
            let generation = prng.range_inclusive(0, self.generation_seen + 1);
            let consumer = ConsumerKey::Group(SHARED_GROUP);
            let request = BrokerRequest::StoreOffset {
                consumer,
                offset,
                generation: Some(generation),
            };
            let op = PartitionOp::StoreConsumerOffset {
                consumer,
                offset,
                generation: Some(generation),
            };
            (request, op)
        };
        let payload = if matches!(request, BrokerRequest::Append { .. }) {
            payload
        } else {
            Vec::new()
        };
        let body = op.encode(&payload);
        self.broker = Some((request, body.clone()));
        body
    }

    /// What an acknowledged broker request tells this client for its next ones.
    fn learn(&mut self, request: BrokerRequest, reply: &[u8]) {
        match (request, PartitionReply::decode(reply)) {
            (
                BrokerRequest::Append { sequence },
                Ok(PartitionReply::Appended { base_offset, count }),
            ) => {
                self.batch_next = sequence + 1;
                self.acked_end = self.acked_end.max(base_offset + u64::from(count));
            }
            (BrokerRequest::Append { sequence }, _) => self.batch_next = sequence + 1,
            (
                BrokerRequest::StoreOffset {
                    offset, generation, ..
                },
                Ok(PartitionReply::Done),
            ) => match generation {
                None => self.stored_offset = offset,
                Some(generation) => {
                    self.generation_seen = self.generation_seen.max(generation);
                }
            },
            (
                BrokerRequest::StoreOffset {
                    generation: Some(_),
                    ..
                },
                Ok(PartitionReply::Refused { reason }),
            ) => {
                // Refused as stale: the refusal names the group's generation; later stores
                // draw around it, so the clients keep competing.
                if let Some(current) = stale_generation_current(&reason) {
                    self.generation_seen = self.generation_seen.max(current);
                }
            }
            (BrokerRequest::StoreOffset { .. }, _) => {}
        }
    }

    pub fn idle(&self) -> bool {
        self.in_flight.is_none()
    }

    /// A broker request whose session was evicted and that was not sent again: it may or may
    /// not have been applied.
    pub fn indeterminate(&self) -> Option<BrokerRequest> {
        match (&self.in_flight, &self.broker) {
            (None, Some((request, _))) => Some(*request),
            _ => None,
        }
    }

    fn primary(&self) -> u8 {
        ((u64::from(self.view) + u64::from(self.placement_offset)) % u64::from(self.replica_count))
            as u8
    }

    /// Starts the next request (or the register) if none is in flight. Returns where to send.
    pub fn start_request(&mut self, now: u64, prng: &mut Prng) -> Vec<(u8, Message)> {
        if self.in_flight.is_some() {
            return Vec::new();
        }
        let mut header = Header::new(Command::Request, self.cluster, self.group);
        header.client = self.id;
        let body = if self.session == 0 {
            header.operation = operation::REGISTER;
            // A fresh nonce makes every register attempt distinct, so a replayed reply to an
            // older register can never be mistaken for this one.
            header.parent = prng.next_u128();
            Vec::new()
        } else {
            header.operation = operation::APPLICATION_MIN;
            header.session = self.session;
            header.request = self.request + 1;
            let size = if self.body_max == 0 {
                0
            } else {
                prng.below(self.body_max as u64 + 1) as usize
            };
            let payload: Vec<u8> = (0..size).map(|_| prng.below(256) as u8).collect();
            match self.workload {
                Workload::Test => payload,
                Workload::Broker => self.next_broker_request(payload, prng),
                Workload::Metadata => metadata_op(self.id, prng)
                    .encode()
                    .expect("generated ops are within the format's limits"),
            }
        };
        let message = Message::new(header, body);
        self.in_flight = Some(message.clone());
        self.sent_at = now;
        self.attempts = 0;
        vec![(self.primary(), message)]
    }

    /// Retries to the presumed primary first, then to every replica.
    pub fn tick(&mut self, now: u64) -> Vec<(u8, Message)> {
        let Some(message) = &self.in_flight else {
            return Vec::new();
        };
        if now < self.sent_at + RETRY_TICKS {
            return Vec::new();
        }
        self.sent_at = now;
        self.attempts += 1;
        if self.attempts % 2 == 1 {
            (0..self.replica_count)
                .map(|r| (r, message.clone()))
                .collect()
        } else {
            vec![(self.primary(), message.clone())]
        }
    }

    /// Handles a reply or eviction. Returns an ack when a request completed.
    pub fn on_message(&mut self, message: &Message) -> Option<Ack> {
        let in_flight = self.in_flight.as_ref()?;
        let header = &message.header;
        if header.client != self.id {
            return None;
        }
        if header.view > self.view {
            self.view = header.view;
        }
        match header.command {
            Command::Reply => {
                if header.context != in_flight.header.checksum
                    || header.request != in_flight.header.request
                {
                    return None; // A late reply to an older request.
                }
                self.replies += 1;
                let request_checksum = in_flight.header.checksum;
                self.in_flight = None;
                if in_flight_is_register(header) {
                    assert!(header.session > 0);
                    self.session = header.session;
                    self.request = 0;
                    return None;
                }
                self.request = header.request;
                let broker = self.broker.take().map(|(request, _)| request);
                if let Some(request) = broker {
                    self.learn(request, &message.body);
                }
                Some(Ack {
                    client: self.id,
                    session: header.session,
                    request: header.request,
                    op: header.op,
                    request_checksum,
                    reply: message.body.to_vec(),
                    broker,
                })
            }
            Command::Eviction => {
                if header.session != in_flight.header.session || self.session == 0 {
                    return None;
                }
                // The in-flight request is indeterminate; start a new session.
                self.evictions += 1;
                self.session = 0;
                self.request = 0;
                self.in_flight = None;
                None
            }
            _ => None,
        }
    }
}

/// A random metadata operation over a few names, so creates, deletes and conflicts meet.
fn metadata_op(client: u128, prng: &mut Prng) -> MetadataOp {
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let mut name = || NAMES[prng.below(NAMES.len() as u64) as usize].to_string();
    let (stream, topic, other) = (name(), name(), name());
    let (stream, topic) = (Ident::Name(stream), Ident::Name(topic));
    let count = prng.range_inclusive(1, 3) as u32;
    match prng.below(12) {
        0 => MetadataOp::CreateStream { name: other },
        1 => MetadataOp::DeleteStream { stream },
        2 | 3 => MetadataOp::CreateTopic {
            stream,
            name: other,
            partitions: count,
            replication_factor: 0,
            options: TopicOptions::default(),
        },
        4 => MetadataOp::DeleteTopic { stream, topic },
        5 => MetadataOp::CreatePartitions {
            stream,
            topic,
            count,
        },
        6 => MetadataOp::DeletePartitions {
            stream,
            topic,
            count,
        },
        7 => MetadataOp::CreateUser {
            username: other,
            password_hash: "hash".to_string(),
            status: UserStatus::Active,
            permissions: None,
        },
        8 => MetadataOp::CreateConsumerGroup {
            stream,
            topic,
            name: other,
        },
        9 => MetadataOp::TouchMembers {
            members: vec![client],
        },
        10 => MetadataOp::ExpireMembers {
            // Up to 20 s of simulated time: members of clients that stopped asking expire.
            idle_us: prng.range_inclusive(0, 20_000_000),
        },
        _ => MetadataOp::JoinConsumerGroup {
            stream,
            topic,
            group: Ident::Name(other),
            member: client,
        },
    }
}

fn in_flight_is_register(reply: &Header) -> bool {
    reply.operation == operation::REGISTER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_generation_is_read_from_a_stale_refusal() {
        let reason = "StaleGeneration { group: 1, generation: 3, current: 12 }";
        assert_eq!(stale_generation_current(reason), Some(12));
        assert_eq!(stale_generation_current("TooManyConsumers"), None);
        assert_eq!(
            stale_generation_current("StaleGeneration { group: 1 }"),
            None
        );
    }
}
