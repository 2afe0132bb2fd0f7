//! Reply payloads of the Iggy binary protocol 0.11.0, built from Galgo's metadata: streams,
//! topics with their partitions, the one-node cluster roster, the login answer, server stats.
//!
//! Not tracked yet, and reported as 0: the byte size and message count of streams and topics,
//! and each partition's segment count, size and current offset (they live in the partition
//! groups; reading them needs a query per partition). Topic and partition ids, names, counts,
//! creation times and options are the metadata's.

use galgo_replica::metadata::groups::ConsumerGroup;
use galgo_replica::metadata::{Metadata, Stream, Topic};

use crate::wire::{put_long_str, put_name};

/// Compression of every topic: none (the only one Galgo has). The 0.11.0 client refuses 0.
const COMPRESSION_NONE: u8 = 1;

/// `StreamResponse`: id, created_at, topics, size, messages, name, options (empty).
pub fn stream(out: &mut Vec<u8>, stream: &Stream) {
    out.extend_from_slice(&stream.id.to_le_bytes());
    out.extend_from_slice(&stream.created_at.to_le_bytes());
    let topics = u32::try_from(stream.topics.len()).expect("bounded by the limits");
    out.extend_from_slice(&topics.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // size: not tracked yet
    out.extend_from_slice(&0u64.to_le_bytes()); // messages: not tracked yet
    put_name(out, &stream.name);
    out.extend_from_slice(&0u32.to_le_bytes()); // options: none
}

/// A stream and the headers of its topics (GetStream, CreateStream).
pub fn stream_with_topics(stream_entry: &Stream) -> Vec<u8> {
    let mut out = Vec::new();
    stream(&mut out, stream_entry);
    for topic in stream_entry.topics.values() {
        topic_header(&mut out, topic);
    }
    out
}

/// The topic header: id, created_at, partitions, expiry, compression, max size, size,
/// messages, name, explicit and derived options (both empty).
pub fn topic_header(out: &mut Vec<u8>, topic: &Topic) {
    out.extend_from_slice(&topic.id.to_le_bytes());
    out.extend_from_slice(&topic.created_at.to_le_bytes());
    let partitions = u32::try_from(topic.partitions.len()).expect("bounded by the limits");
    out.extend_from_slice(&partitions.to_le_bytes());
    out.extend_from_slice(&topic.options.message_expiry_us.to_le_bytes());
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(&topic.options.max_topic_size.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // size: not tracked yet
    out.extend_from_slice(&0u64.to_le_bytes()); // messages: not tracked yet
    put_name(out, &topic.name);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// A topic header and its partitions (GetTopic, CreateTopic): each partition is 40 bytes
/// (id, created_at, segments, current offset, size, messages).
pub fn topic_with_partitions(topic: &Topic) -> Vec<u8> {
    let mut out = Vec::new();
    topic_header(&mut out, topic);
    for (index, partition) in topic.partitions.iter().enumerate() {
        let id = u32::try_from(index).expect("bounded by the limits");
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&partition.created_at.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    out
}

/// A consumer group's header: id, partitions, members, name.
pub fn group_header(out: &mut Vec<u8>, group: &ConsumerGroup, partitions: u32) {
    out.extend_from_slice(&group.id.to_le_bytes());
    out.extend_from_slice(&partitions.to_le_bytes());
    let members = u32::try_from(group.members.len()).expect("bounded by the limits");
    out.extend_from_slice(&members.to_le_bytes());
    put_name(out, &group.name);
}

/// A consumer group with its members, each `[id u32][partitions u32][partition ids]` (a
/// member's id is its position in the group: members are client sessions, u128 inside).
pub fn group_details(group: &ConsumerGroup, partitions: u32) -> Vec<u8> {
    let mut out = Vec::new();
    group_header(&mut out, group, partitions);
    for (position, owned) in group.members.values().enumerate() {
        let id = u32::try_from(position).expect("bounded by the limits");
        out.extend_from_slice(&id.to_le_bytes());
        let count = u32::try_from(owned.len()).expect("bounded by the limits");
        out.extend_from_slice(&count.to_le_bytes());
        for partition in owned {
            out.extend_from_slice(&partition.to_le_bytes());
        }
    }
    out
}

/// SyncConsumerGroup: the generation and the member's partitions.
pub fn group_assignment(generation: u64, partitions: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 4 * partitions.len());
    out.extend_from_slice(&generation.to_le_bytes());
    let count = u32::try_from(partitions.len()).expect("bounded by the limits");
    out.extend_from_slice(&count.to_le_bytes());
    for partition in partitions {
        out.extend_from_slice(&partition.to_le_bytes());
    }
    out
}

/// GetTopics: a count, then the topic headers.
pub fn topics(stream: &Stream) -> Vec<u8> {
    let mut out = Vec::new();
    let count = u32::try_from(stream.topics.len()).expect("bounded by the limits");
    out.extend_from_slice(&count.to_le_bytes());
    for topic in stream.topics.values() {
        topic_header(&mut out, topic);
    }
    out
}

/// GetClusterMetadata: a one-node roster, this gateway as the leader and healthy, so Iggy
/// clients never need to know where partitions lead.
pub fn cluster(name: &str, ip: &str, tcp_port: u16, http_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    put_long_str(&mut out, name);
    out.extend_from_slice(&1u32.to_le_bytes());
    put_long_str(&mut out, "gateway");
    put_long_str(&mut out, ip);
    out.extend_from_slice(&tcp_port.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // QUIC: none
    out.extend_from_slice(&http_port.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // WebSocket: none
    out.push(0); // leader
    out.push(0); // healthy
    out
}

/// The login answer: user id, session, protocol version, server version.
pub fn login(user_id: u32, session: u64, protocol_version: u32, server_version: &str) -> Vec<u8> {
    assert!(session != 0, "the 0.11.0 client refuses session 0");
    let mut out = Vec::new();
    out.extend_from_slice(&user_id.to_le_bytes());
    out.extend_from_slice(&session.to_le_bytes());
    out.extend_from_slice(&protocol_version.to_le_bytes());
    put_name(&mut out, server_version);
    out
}

/// What GetStats reports about the process and host (read where the gateway runs).
pub struct ProcessStats {
    pub process_id: u32,
    pub memory_usage: u64,
    pub total_memory: u64,
    pub available_memory: u64,
    pub run_time_us: u64,
    pub start_time_us: u64,
    pub clients: u32,
    pub hostname: String,
    pub os_version: String,
    pub server_version: String,
    /// `MMMmmmppp` (0.1.0 = 1000).
    pub server_semver: u32,
    pub threads: u32,
}

/// GetStats: the 108-byte numeric head, five strings, the version, no cache metrics, threads
/// and disk space (not measured yet: 0). CPU use is not measured yet either (0).
pub fn stats(process: &ProcessStats, metadata: &Metadata) -> Vec<u8> {
    let topics: Vec<&Topic> = metadata
        .streams
        .values()
        .flat_map(|s| s.topics.values())
        .collect();
    let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
    let groups: usize = topics.iter().map(|t| t.groups.len()).sum();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    out.extend_from_slice(&process.process_id.to_le_bytes());
    out.extend_from_slice(&0f32.to_le_bytes());
    out.extend_from_slice(&0f32.to_le_bytes());
    out.extend_from_slice(&process.memory_usage.to_le_bytes());
    out.extend_from_slice(&process.total_memory.to_le_bytes());
    out.extend_from_slice(&process.available_memory.to_le_bytes());
    out.extend_from_slice(&process.run_time_us.to_le_bytes());
    out.extend_from_slice(&process.start_time_us.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // read bytes
    out.extend_from_slice(&0u64.to_le_bytes()); // written bytes
    out.extend_from_slice(&0u64.to_le_bytes()); // messages size
    out.extend_from_slice(&count(metadata.streams.len()).to_le_bytes());
    out.extend_from_slice(&count(topics.len()).to_le_bytes());
    out.extend_from_slice(&count(partitions).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // segments
    out.extend_from_slice(&0u64.to_le_bytes()); // messages
    out.extend_from_slice(&process.clients.to_le_bytes());
    out.extend_from_slice(&count(groups).to_le_bytes());
    assert_eq!(out.len(), 108);
    put_long_str(&mut out, &process.hostname);
    put_long_str(&mut out, "Linux");
    put_long_str(&mut out, &process.os_version);
    put_long_str(&mut out, &process.os_version);
    put_long_str(&mut out, &process.server_version);
    out.extend_from_slice(&process.server_semver.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // cache metrics
    out.extend_from_slice(&process.threads.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // free disk
    out.extend_from_slice(&0u64.to_le_bytes()); // total disk
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_replica::metadata::{Limits, MetadataOp, TopicOptions};

    fn metadata_with_a_topic() -> Metadata {
        let mut metadata = Metadata::new(vec![0], 1, Limits::default());
        metadata
            .apply(&MetadataOp::CreateStream { name: "s".into() }, 5)
            .unwrap();
        metadata
            .apply(
                &MetadataOp::CreateTopic {
                    stream: galgo_replica::metadata::Ident::Name("s".into()),
                    name: "topic".into(),
                    partitions: 3,
                    replication_factor: 0,
                    options: TopicOptions::default(),
                },
                6,
            )
            .unwrap();
        metadata
    }

    #[test]
    fn stream_and_topic_layouts_have_the_0_11_sizes() {
        let metadata = metadata_with_a_topic();
        let stream_entry = metadata.streams.values().next().unwrap();
        let mut out = Vec::new();
        stream(&mut out, stream_entry);
        // 32 fixed bytes, the name (1 + 1), an empty options block (4).
        assert_eq!(out.len(), 32 + 2 + 4);
        assert_eq!(&out[12..16], &1u32.to_le_bytes());
        let topic = stream_entry.topics.values().next().unwrap();
        let mut header = Vec::new();
        topic_header(&mut header, topic);
        // 49 fixed bytes, the name (1 + 5), two empty options blocks.
        assert_eq!(header.len(), 49 + 6 + 8);
        assert_eq!(header[24], COMPRESSION_NONE);
        assert_eq!(topic_with_partitions(topic).len(), header.len() + 3 * 40);
        assert_eq!(topics(stream_entry).len(), 4 + header.len());
    }

    #[test]
    fn login_cluster_and_stats_payloads() {
        let answer = login(3, 9, 11264, "galgo 0.1.0");
        assert_eq!(&answer[0..4], &3u32.to_le_bytes());
        assert_eq!(&answer[4..12], &9u64.to_le_bytes());
        assert_eq!(answer[16] as usize, "galgo 0.1.0".len());
        let roster = cluster("galgo", "127.0.0.1", 8090, 3000);
        assert_eq!(&roster[4..9], b"galgo");
        assert_eq!(&roster[9..13], &1u32.to_le_bytes());
        assert_eq!(roster[roster.len() - 2..], [0, 0]);
        let process = ProcessStats {
            process_id: 1,
            memory_usage: 2,
            total_memory: 3,
            available_memory: 4,
            run_time_us: 5,
            start_time_us: 6,
            clients: 7,
            hostname: "h".into(),
            os_version: "6".into(),
            server_version: "galgo".into(),
            server_semver: 1000,
            threads: 2,
        };
        let body = stats(&process, &metadata_with_a_topic());
        assert_eq!(&body[76..80], &1u32.to_le_bytes());
        assert_eq!(&body[84..88], &3u32.to_le_bytes());
        assert_eq!(&body[100..104], &7u32.to_le_bytes());
    }
}
