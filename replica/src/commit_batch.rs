//! The commit heartbeats of many groups to one peer as one bus frame. A primary sends every
//! backup a `Commit` (an empty-bodied header) per group and heartbeat; with hundreds of groups
//! per node that is hundreds of 256-byte frames, each with two checksums, per peer and tick.
//! The bus turns the `Commit`s queued for a peer into 48-byte records of one `CommitBatch`
//! message, and the receiving bus turns them back into the very same `Commit` messages, so
//! the consensus core never sees a batch.
//!
//! A `Commit` is batched only if its record rebuilds it exactly (`record_of`); anything else
//! travels as its own frame. Record layout (little-endian):
//! ```text
//!   0 group    u64
//!   8 op       u64
//!  16 commit   u64
//!  24 context  u128  checksum of the committed prepare
//!  40 view     u32
//!  44 replica  u8
//!  45 reserved [u8; 3] zero
//! ```

use galgo_consensus::message::BODY_SIZE_MAX;
use galgo_consensus::{Command, Header, Message};

pub const COMMIT_RECORD_SIZE: usize = 48;
/// Records one batch message carries, at most.
pub const COMMITS_PER_BATCH_MAX: usize = 4096;
const _: () = assert!(COMMITS_PER_BATCH_MAX * COMMIT_RECORD_SIZE <= BODY_SIZE_MAX);

/// What a `Commit` heartbeat says, for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub group: u64,
    pub op: u64,
    pub commit: u64,
    pub context: u128,
    pub view: u32,
    pub replica: u8,
}

impl CommitRecord {
    /// The `Commit` message this record stands for.
    pub fn message(&self, cluster: u128) -> Message {
        let mut header = Header::new(Command::Commit, cluster, self.group);
        header.op = self.op;
        header.commit = self.commit;
        header.context = self.context;
        header.view = self.view;
        header.replica = self.replica;
        Message::new(header, Vec::new())
    }

    fn encode(&self, bytes: &mut Vec<u8>) {
        let start = bytes.len();
        bytes.extend_from_slice(&self.group.to_le_bytes());
        bytes.extend_from_slice(&self.op.to_le_bytes());
        bytes.extend_from_slice(&self.commit.to_le_bytes());
        bytes.extend_from_slice(&self.context.to_le_bytes());
        bytes.extend_from_slice(&self.view.to_le_bytes());
        bytes.push(self.replica);
        bytes.extend_from_slice(&[0u8; 3]);
        assert_eq!(bytes.len() - start, COMMIT_RECORD_SIZE);
    }

    fn decode(bytes: &[u8]) -> Option<CommitRecord> {
        assert_eq!(bytes.len(), COMMIT_RECORD_SIZE);
        if bytes[45..48].iter().any(|b| *b != 0) {
            return None;
        }
        Some(CommitRecord {
            group: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            op: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            commit: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            context: u128::from_le_bytes(bytes[24..40].try_into().expect("16 bytes")),
            view: u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes")),
            replica: bytes[44],
        })
    }
}

/// The record of `message` if it is a `Commit` the record rebuilds exactly (every other
/// header field as `Header::new` leaves it, no body).
pub fn record_of(message: &Message) -> Option<CommitRecord> {
    let header = &message.header;
    if header.command != Command::Commit || !message.body.is_empty() {
        return None;
    }
    let record = CommitRecord {
        group: header.group,
        op: header.op,
        commit: header.commit,
        context: header.context,
        view: header.view,
        replica: header.replica,
    };
    (record.message(header.cluster).header == *header).then_some(record)
}

/// One `CommitBatch` message carrying `records` (1 to `COMMITS_PER_BATCH_MAX`).
pub fn batch_message(cluster: u128, records: &[CommitRecord]) -> Message {
    assert!(!records.is_empty() && records.len() <= COMMITS_PER_BATCH_MAX);
    let mut body = Vec::with_capacity(records.len() * COMMIT_RECORD_SIZE);
    for record in records {
        record.encode(&mut body);
    }
    Message::new(Header::new(Command::CommitBatch, cluster, 0), body)
}

/// The `Commit` messages a received `CommitBatch` carries; `None` if it is malformed (the
/// connection is then closed, as for any bad frame).
pub fn unbatch(batch: &Message) -> Option<Vec<Message>> {
    let header = &batch.header;
    assert_eq!(header.command, Command::CommitBatch);
    let body = &batch.body;
    if body.is_empty()
        || !body.len().is_multiple_of(COMMIT_RECORD_SIZE)
        || body.len() / COMMIT_RECORD_SIZE > COMMITS_PER_BATCH_MAX
        || header.group != 0
    {
        return None;
    }
    body.chunks_exact(COMMIT_RECORD_SIZE)
        .map(|bytes| CommitRecord::decode(bytes).map(|r| r.message(header.cluster)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: u64) -> Message {
        CommitRecord {
            group,
            op: 100 + group,
            commit: 90 + group,
            context: u128::from(group) << 64 | 7,
            view: 3,
            replica: 2,
        }
        .message(9)
    }

    #[test]
    fn commits_cross_a_batch_unchanged() {
        let commits: Vec<Message> = (0..300).map(commit).collect();
        let records: Vec<CommitRecord> = commits.iter().map(|c| record_of(c).unwrap()).collect();
        let batch = batch_message(9, &records);
        assert_eq!(batch.body.len(), 300 * COMMIT_RECORD_SIZE);
        let bytes = batch.encode();
        let decoded = Message::decode(&bytes).unwrap();
        assert_eq!(unbatch(&decoded).unwrap(), commits);
    }

    #[test]
    fn only_commits_a_record_rebuilds_exactly_are_batched() {
        let mut with_field = commit(1);
        with_field.header.timestamp = 5;
        with_field.header.set_checksums(&[]);
        assert_eq!(record_of(&with_field), None);
        let with_body = Message::new(commit(1).header, vec![1]);
        assert_eq!(record_of(&with_body), None);
        let prepare = Message::new(Header::new(Command::Prepare, 9, 1), Vec::new());
        assert_eq!(record_of(&prepare), None);
        assert!(record_of(&commit(1)).is_some());
    }

    #[test]
    fn a_malformed_batch_is_refused() {
        let records = [record_of(&commit(1)).unwrap()];
        let good = batch_message(9, &records);
        let mut short = good.body.to_vec();
        short.pop();
        let mut reserved = good.body.to_vec();
        reserved[46] = 1;
        for body in [short, reserved, Vec::new()] {
            let bad = Message::new(Header::new(Command::CommitBatch, 9, 0), body);
            assert_eq!(unbatch(&bad), None);
        }
        let mut grouped = Header::new(Command::CommitBatch, 9, 4);
        grouped.set_checksums(&good.body);
        let grouped = Message::new(grouped, good.body.to_vec());
        assert_eq!(unbatch(&grouped), None);
    }
}
