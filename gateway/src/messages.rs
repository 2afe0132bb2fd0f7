//! SendMessages and PollMessages of the Iggy binary protocol 0.11.0: their request bodies,
//! the choice of partition, and the poll reply built from the committed batches a node
//! serves (each batch restamped with its partition, offsets and timestamp, and cut to the
//! offsets asked for).

use galgo_replica::metadata::Ident;
use galgo_storage::iggy_batch;

use crate::codes::{ERROR_INVALID_FORMAT, ERROR_INVALID_PARTITIONS_COUNT};
use crate::wire::{WireError, WireReader};

/// How a send picks its partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Round robin (per connection).
    Balanced,
    PartitionId(u32),
    /// The same key goes to the same partition while the partition count stays.
    Key(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRequest<'a> {
    pub stream: Ident,
    pub topic: Ident,
    pub partitioning: Partitioning,
    /// The batch as the client sent it (checked: layout and every checksum), in the
    /// request's own buffer.
    pub batch: &'a [u8],
    pub message_count: u32,
}

/// Parses and checks a SendMessages body.
pub fn parse_send(body: &[u8]) -> Result<SendRequest<'_>, WireError> {
    let mut r = WireReader::new(body);
    let metadata_length = r.u32("metadata length")? as usize;
    let metadata_start = 4;
    let stream = r.identifier("stream")?;
    let topic = r.identifier("topic")?;
    let kind = r.u8("partitioning kind")?;
    let len = r.u8("partitioning length")?;
    let partitioning = match (kind, len) {
        (1, 0) => Partitioning::Balanced,
        (2, 4) => Partitioning::PartitionId(r.u32("partition id")?),
        (3, 1..=255) => Partitioning::Key(r.take(usize::from(len), "messages key")?.to_vec()),
        _ => {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("partitioning kind {kind} with {len} bytes"),
            ))
        }
    };
    let message_count = r.u32("messages count")?;
    let read = body.len() - r.rest_len() - metadata_start;
    if read != metadata_length {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            format!("metadata length {metadata_length}, but {read} bytes of metadata"),
        ));
    }
    let batch = r.rest();
    let info = iggy_batch::validate(batch)
        .map_err(|error| WireError::new(ERROR_INVALID_FORMAT, format!("batch: {error:?}")))?;
    if info.first_delta != 0 {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            "the first message's offset delta is not 0",
        ));
    }
    if info.message_count != message_count || message_count == 0 {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            format!(
                "{message_count} messages announced, {} in the batch",
                info.message_count
            ),
        ));
    }
    Ok(SendRequest {
        stream,
        topic,
        partitioning,
        batch,
        message_count,
    })
}

/// The partition (0-based) a send goes to among `partitions`; `next` is the connection's
/// round-robin counter.
pub fn choose_partition(
    partitioning: &Partitioning,
    partitions: u32,
    next: &mut u32,
) -> Result<u32, WireError> {
    if partitions == 0 {
        return Err(WireError::new(
            ERROR_INVALID_PARTITIONS_COUNT,
            "the topic has no partitions",
        ));
    }
    match partitioning {
        Partitioning::Balanced => {
            let chosen = *next % partitions;
            *next = next.wrapping_add(1);
            Ok(chosen)
        }
        Partitioning::PartitionId(id) if *id < partitions => Ok(*id),
        Partitioning::PartitionId(id) => Err(WireError::new(
            crate::codes::ERROR_RESOURCE_NOT_FOUND,
            format!("partition {id} of {partitions}"),
        )),
        Partitioning::Key(key) => {
            Ok((twox_hash::XxHash3_64::oneshot(key) % u64::from(partitions)) as u32)
        }
    }
}

/// Where a poll starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Offset(u64),
    Timestamp(u64),
    First,
    Last,
    Next,
}

/// Consumer kinds on the wire.
pub const CONSUMER_KIND_SINGLE: u8 = 1;
pub const CONSUMER_KIND_GROUP: u8 = 2;

/// Whose offset, on which partition of which topic: the head of polls and offset requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerTarget {
    /// `(kind, id)`: kind 1 a consumer, 2 a consumer group.
    pub consumer: (u8, Ident),
    pub stream: Ident,
    pub topic: Ident,
    pub partition: Option<u32>,
}

/// `[Consumer][stream Identifier][topic Identifier][partition flag u8][partition id u32]`.
fn parse_consumer_target(r: &mut WireReader<'_>) -> Result<ConsumerTarget, WireError> {
    let consumer_kind = r.u8("consumer kind")?;
    if !(CONSUMER_KIND_SINGLE..=CONSUMER_KIND_GROUP).contains(&consumer_kind) {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            format!("consumer kind {consumer_kind}"),
        ));
    }
    let consumer = (consumer_kind, r.identifier("consumer")?);
    let stream = r.identifier("stream")?;
    let topic = r.identifier("topic")?;
    let flag = r.u8("partition flag")?;
    let partition_id = r.u32("partition id")?;
    let partition = match flag {
        0 => None,
        1 => Some(partition_id),
        other => {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("partition flag {other}"),
            ))
        }
    };
    Ok(ConsumerTarget {
        consumer,
        stream,
        topic,
        partition,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollRequest {
    pub target: ConsumerTarget,
    pub strategy: Strategy,
    pub count: u32,
    pub auto_commit: bool,
}

pub fn parse_poll(body: &[u8]) -> Result<PollRequest, WireError> {
    let mut r = WireReader::new(body);
    let target = parse_consumer_target(&mut r)?;
    let kind = r.u8("polling strategy")?;
    let value = r.u64("polling value")?;
    let strategy = match kind {
        1 => Strategy::Offset(value),
        2 => Strategy::Timestamp(value),
        3 => Strategy::First,
        4 => Strategy::Last,
        5 => Strategy::Next,
        other => {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("polling strategy {other}"),
            ))
        }
    };
    let count = r.u32("count")?;
    let auto_commit = match r.u8("auto commit")? {
        0 => false,
        1 => true,
        other => {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("auto commit {other}"),
            ))
        }
    };
    r.finish("poll messages")?;
    Ok(PollRequest {
        target,
        strategy,
        count,
        auto_commit,
    })
}

/// A consumer offset request (Get, Store, Delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRequest {
    pub target: ConsumerTarget,
    /// Store only: the offset to store.
    pub offset: Option<u64>,
}

/// Which consumer offset request a body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetRequestKind {
    Get,
    Store,
    Delete,
}

/// The consumer target; then for a store `[offset u64][ack u8]`, for a delete `[ack u8]`.
pub fn parse_offset_request(
    body: &[u8],
    kind: OffsetRequestKind,
) -> Result<OffsetRequest, WireError> {
    let mut r = WireReader::new(body);
    let target = parse_consumer_target(&mut r)?;
    let offset = match kind {
        OffsetRequestKind::Store => Some(r.u64("offset")?),
        OffsetRequestKind::Get | OffsetRequestKind::Delete => None,
    };
    if kind != OffsetRequestKind::Get {
        let ack = r.u8("ack level")?;
        if ack > 1 {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("ack level {ack}"),
            ));
        }
    }
    r.finish("consumer offset")?;
    Ok(OffsetRequest { target, offset })
}

/// DeleteSegments: the topic, the partition (from 0) and how many of its oldest segments go.
pub struct DeleteSegments {
    pub stream: Ident,
    pub topic: Ident,
    pub partition: u32,
    pub count: u32,
}

pub fn parse_delete_segments(body: &[u8]) -> Result<DeleteSegments, WireError> {
    let mut r = WireReader::new(body);
    let stream = r.identifier("stream")?;
    let topic = r.identifier("topic")?;
    let partition = r.u32("partition id")?;
    let count = r.u32("segments count")?;
    r.finish("delete segments")?;
    Ok(DeleteSegments {
        stream,
        topic,
        partition,
        count,
    })
}

/// The poll reply: the 16-byte prefix (partition, the newest offset, the message count), then
/// the stamped batches cut to `start..start + count`.
pub fn poll_reply(
    partition: u32,
    end: u64,
    start: u64,
    count: u32,
    batches: &[galgo_replica::client_protocol::PolledBatch],
) -> (Vec<u8>, u32, Option<u64>) {
    // Sized once: each batch is copied into it once (the reply frame copies it again).
    let capacity = 16 + batches.iter().map(|b| b.bytes.len()).sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&end.saturating_sub(1).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut served = 0u32;
    let mut last = None;
    for batch in batches {
        if served == count {
            break;
        }
        let from = start.max(batch.base_offset);
        let stamp = iggy_batch::SliceStamp {
            partition_id: u64::from(partition),
            base_offset: batch.base_offset,
            base_timestamp: batch.timestamp,
            from,
            max: count - served,
        };
        let Some(kept) = iggy_batch::stamp_slice(&mut out, &batch.bytes, stamp) else {
            continue; // Not an Iggy batch (a routing-client append), or outside the range.
        };
        served += kept;
        let batch_end = batch.base_offset + u64::from(batch.count);
        last = Some(batch_end.min(from + u64::from(kept)) - 1);
    }
    out[12..16].copy_from_slice(&served.to_le_bytes());
    (out, served, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_replica::client_protocol::PolledBatch;

    fn batch(payloads: &[&[u8]]) -> Vec<u8> {
        let messages: Vec<iggy_batch::Message<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| iggy_batch::Message {
                id: i as u128 + 1,
                payload: p,
                user_headers: b"",
                timestamp_delta: 0,
            })
            .collect();
        iggy_batch::build(0, 0, 0, &messages)
    }

    fn send_body(partitioning: &[u8], count: u32, batch: &[u8]) -> Vec<u8> {
        let mut metadata = vec![1, 4, 1, 0, 0, 0, 2, 1, b't'];
        metadata.extend_from_slice(partitioning);
        metadata.extend_from_slice(&count.to_le_bytes());
        let mut body = (metadata.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&metadata);
        body.extend_from_slice(batch);
        body
    }

    #[test]
    fn sends_parse_and_bad_ones_are_refused() {
        let good = batch(&[b"a", b"b"]);
        let body = send_body(&[2, 4, 3, 0, 0, 0], 2, &good);
        let send = parse_send(&body).unwrap();
        assert_eq!(send.stream, Ident::Id(1));
        assert_eq!(send.topic, Ident::Name("t".into()));
        assert_eq!(send.partitioning, Partitioning::PartitionId(3));
        assert_eq!(send.message_count, 2);
        let body = send_body(&[3, 2, b'k', b'1'], 2, &good);
        let keyed = parse_send(&body).unwrap();
        assert_eq!(keyed.partitioning, Partitioning::Key(b"k1".to_vec()));
        // A count that disagrees with the batch, a damaged batch, a bad metadata length.
        assert!(parse_send(&send_body(&[1, 0], 3, &good)).is_err());
        let mut damaged = good.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(parse_send(&send_body(&[1, 0], 2, &damaged)).is_err());
        let mut body = send_body(&[1, 0], 2, &good);
        body[0] += 1;
        assert!(parse_send(&body).is_err());
        assert!(parse_send(&send_body(&[4, 0], 2, &good)).is_err());
        assert!(parse_send(&[1, 2, 3]).is_err());
    }

    #[test]
    fn partitions_are_chosen_within_the_topic() {
        let mut next = 0;
        let picks: Vec<u32> = (0..4)
            .map(|_| choose_partition(&Partitioning::Balanced, 3, &mut next).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        assert_eq!(
            choose_partition(&Partitioning::PartitionId(2), 3, &mut next),
            Ok(2)
        );
        assert!(choose_partition(&Partitioning::PartitionId(3), 3, &mut next).is_err());
        let key = Partitioning::Key(b"user-1".to_vec());
        let first = choose_partition(&key, 3, &mut next).unwrap();
        assert_eq!(choose_partition(&key, 3, &mut next).unwrap(), first);
        assert!(choose_partition(&Partitioning::Balanced, 0, &mut next).is_err());
    }

    #[test]
    fn polls_parse_every_strategy() {
        for (kind, strategy) in [
            (1u8, Strategy::Offset(9)),
            (2, Strategy::Timestamp(9)),
            (3, Strategy::First),
            (4, Strategy::Last),
            (5, Strategy::Next),
        ] {
            let mut body = vec![1, 1, 4, 7, 0, 0, 0, 1, 4, 1, 0, 0, 0, 1, 4, 2, 0, 0, 0, 1];
            body.extend_from_slice(&2u32.to_le_bytes());
            body.push(kind);
            body.extend_from_slice(&9u64.to_le_bytes());
            body.extend_from_slice(&10u32.to_le_bytes());
            body.push(1);
            let poll = parse_poll(&body).unwrap();
            assert_eq!(poll.strategy, strategy);
            assert_eq!(poll.target.partition, Some(2));
            assert!(poll.auto_commit);
            assert_eq!(poll.count, 10);
            let mut bad = body.clone();
            bad[24] = 6;
            assert!(parse_poll(&bad).is_err());
            assert!(parse_poll(&body[..body.len() - 1]).is_err());
        }
    }

    #[test]
    fn poll_replies_cut_batches_to_the_asked_offsets() {
        let batches = vec![
            PolledBatch {
                base_offset: 0,
                count: 3,
                timestamp: 5,
                bytes: batch(&[b"a", b"b", b"c"]).into(),
            },
            PolledBatch {
                base_offset: 3,
                count: 2,
                timestamp: 6,
                bytes: batch(&[b"d", b"e"]).into(),
            },
        ];
        let (reply, served, last) = poll_reply(1, 5, 1, 3, &batches);
        assert_eq!((served, last), (3, Some(3)));
        assert_eq!(&reply[0..4], &1u32.to_le_bytes());
        assert_eq!(&reply[4..12], &4u64.to_le_bytes());
        assert_eq!(&reply[12..16], &3u32.to_le_bytes());
        let first = iggy_batch::validate(&reply[16..16 + 256 + 2 * 49]).unwrap();
        assert_eq!((first.base_offset, first.message_count), (0, 2));
        let (empty, served, last) = poll_reply(0, 5, 5, 10, &[]);
        assert_eq!((empty.len(), served, last), (16, 0, None));
    }
}
