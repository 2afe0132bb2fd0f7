//! The 256-byte message header shared by every consensus message and every journal entry.
//!
//! Layout (little-endian, explicit sizes):
//! ```text
//!   0 checksum        u128  over bytes 16..256 of this header
//!  16 checksum_body   u128  over the body
//!  32 cluster         u128
//!  48 parent          u128  prepare: checksum of the previous prepare (hash chain)
//!  64 client          u128
//!  80 context         u128  prepare/reply: request checksum; prepare_ok/get_prepare: prepare checksum;
//!                           commit: checksum of the committed prepare;
//!                           do_view_change: op of the head its log view started with
//!  96 group           u64
//! 104 op              u64
//! 112 commit          u64
//! 120 timestamp       u64
//! 128 session         u64
//! 136 size            u32   header + body bytes
//! 140 view            u32
//! 144 log_view        u32
//! 148 request         u32
//! 152 command         u8
//! 153 replica         u8    the original author
//! 154 operation       u8
//! 155 protocol        u8
//! 156 flags           u8    start_view_change: flags::SENDER_IN_VIEW_CHANGE
//! 157 reserved        [u8; 3] zero
//! 160 present_bitset  u128  do_view_change only
//! 176 nack_bitset     u128  do_view_change only
//! 192 canonical_bitset u128  do_view_change only
//! 208 reserved        [u8; 48] zero
//! ```

use crate::checksum::checksum;

pub const HEADER_SIZE: usize = 256;
pub const PROTOCOL_VERSION: u8 = 1;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Command {
    Reserved = 0,
    Request = 1,
    Prepare = 2,
    PrepareOk = 3,
    Reply = 4,
    Commit = 5,
    StartViewChange = 6,
    DoViewChange = 7,
    StartView = 8,
    RequestStartView = 9,
    RequestHeaders = 10,
    Headers = 11,
    RequestPrepare = 12,
    Eviction = 13,
    /// Many groups' `Commit` heartbeats to one peer in one frame: the replica bus packs and
    /// unpacks it (`replica/src/commit_batch.rs`); the core never sees one.
    CommitBatch = 14,
    /// A peer asked for ops below this replica's log start (`op`); `commit` is its
    /// `commit_min`, which it can send as a checkpoint (state transfer).
    LogStart = 15,
    /// Asks for a chunk of the peer's checkpoint: `op` the checkpoint's op (0: its newest),
    /// `commit` the byte offset.
    RequestCheckpoint = 16,
    /// A chunk of an encoded checkpoint: `op` its op, `parent` that op's checksum, `commit`
    /// the chunk's byte offset, `context` the encoding's whole size.
    Checkpoint = 17,
}

impl Command {
    pub fn from_u8(value: u8) -> Option<Command> {
        Some(match value {
            0 => Command::Reserved,
            1 => Command::Request,
            2 => Command::Prepare,
            3 => Command::PrepareOk,
            4 => Command::Reply,
            5 => Command::Commit,
            6 => Command::StartViewChange,
            7 => Command::DoViewChange,
            8 => Command::StartView,
            9 => Command::RequestStartView,
            10 => Command::RequestHeaders,
            11 => Command::Headers,
            12 => Command::RequestPrepare,
            13 => Command::Eviction,
            14 => Command::CommitBatch,
            15 => Command::LogStart,
            16 => Command::RequestCheckpoint,
            17 => Command::Checkpoint,
            _ => return None,
        })
    }
}

/// Operations below `OPERATION_APPLICATION_MIN` belong to the protocol itself.
pub mod operation {
    /// The root prepare at op 0.
    pub const ROOT: u8 = 1;
    /// Registers a client session; the session number is the op that committed it.
    pub const REGISTER: u8 = 2;
    /// First operation code handed to the state machine.
    pub const APPLICATION_MIN: u8 = 16;
}

/// Bits of `Header::flags`.
pub mod flags {
    /// start_view_change: the sender is in view-change status for `view` (it has left the
    /// view before). Without it, the sender is a normal replica of `view - 1` voting to leave.
    pub const SENDER_IN_VIEW_CHANGE: u8 = 1;
    pub const ALL: u8 = SENDER_IN_VIEW_CHANGE;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub checksum: u128,
    pub checksum_body: u128,
    pub cluster: u128,
    pub parent: u128,
    pub client: u128,
    pub context: u128,
    pub group: u64,
    pub op: u64,
    pub commit: u64,
    pub timestamp: u64,
    pub session: u64,
    pub size: u32,
    pub view: u32,
    pub log_view: u32,
    pub request: u32,
    pub command: Command,
    pub replica: u8,
    pub operation: u8,
    pub protocol: u8,
    pub flags: u8,
    pub present_bitset: u128,
    pub nack_bitset: u128,
    pub canonical_bitset: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The header's checksum does not match its bytes.
    Checksum,
    /// All 256 bytes are zero: nothing was ever written there.
    Zero,
    UnknownCommand(u8),
    Protocol(u8),
    ReservedNotZero,
    Size(u32),
}

fn put_u128(bytes: &mut [u8], at: usize, value: u128) {
    bytes[at..at + 16].copy_from_slice(&value.to_le_bytes());
}
fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}
fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}
fn get_u128(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}
fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

impl Header {
    /// A header with every field zero except the command; callers fill in the rest and
    /// then call `set_checksums`.
    pub fn new(command: Command, cluster: u128, group: u64) -> Header {
        Header {
            checksum: 0,
            checksum_body: 0,
            cluster,
            parent: 0,
            client: 0,
            context: 0,
            group,
            op: 0,
            commit: 0,
            timestamp: 0,
            session: 0,
            size: HEADER_SIZE as u32,
            view: 0,
            log_view: 0,
            request: 0,
            command,
            replica: 0,
            operation: 0,
            protocol: PROTOCOL_VERSION,
            flags: 0,
            present_bitset: 0,
            nack_bitset: 0,
            canonical_bitset: 0,
        }
    }

    fn encode_without_checksum(&self, bytes: &mut [u8; HEADER_SIZE]) {
        bytes.fill(0);
        put_u128(bytes, 16, self.checksum_body);
        put_u128(bytes, 32, self.cluster);
        put_u128(bytes, 48, self.parent);
        put_u128(bytes, 64, self.client);
        put_u128(bytes, 80, self.context);
        put_u64(bytes, 96, self.group);
        put_u64(bytes, 104, self.op);
        put_u64(bytes, 112, self.commit);
        put_u64(bytes, 120, self.timestamp);
        put_u64(bytes, 128, self.session);
        put_u32(bytes, 136, self.size);
        put_u32(bytes, 140, self.view);
        put_u32(bytes, 144, self.log_view);
        put_u32(bytes, 148, self.request);
        bytes[152] = self.command as u8;
        bytes[153] = self.replica;
        bytes[154] = self.operation;
        bytes[155] = self.protocol;
        bytes[156] = self.flags;
        put_u128(bytes, 160, self.present_bitset);
        put_u128(bytes, 176, self.nack_bitset);
        put_u128(bytes, 192, self.canonical_bitset);
    }

    /// Computes `checksum_body` from `body`, `size`, then the header checksum.
    pub fn set_checksums(&mut self, body: &[u8]) {
        self.size = (HEADER_SIZE + body.len()) as u32;
        self.checksum_body = checksum(body);
        self.checksum = self.compute_checksum();
    }

    fn compute_checksum(&self) -> u128 {
        let mut bytes = [0u8; HEADER_SIZE];
        self.encode_without_checksum(&mut bytes);
        checksum(&bytes[16..])
    }

    pub fn valid_checksum(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    pub fn valid_checksum_body(&self, body: &[u8]) -> bool {
        self.size as usize == HEADER_SIZE + body.len() && self.checksum_body == checksum(body)
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        assert!(
            self.valid_checksum(),
            "encoding a header whose checksum is stale"
        );
        let mut bytes = [0u8; HEADER_SIZE];
        self.encode_without_checksum(&mut bytes);
        put_u128(&mut bytes, 0, self.checksum);
        bytes
    }

    /// Decodes and verifies a header. Never panics on arbitrary input.
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Result<Header, HeaderError> {
        if bytes.iter().all(|byte| *byte == 0) {
            return Err(HeaderError::Zero);
        }
        let checksum_stored = get_u128(bytes, 0);
        if checksum(&bytes[16..]) != checksum_stored {
            return Err(HeaderError::Checksum);
        }
        let command =
            Command::from_u8(bytes[152]).ok_or(HeaderError::UnknownCommand(bytes[152]))?;
        if bytes[155] != PROTOCOL_VERSION {
            return Err(HeaderError::Protocol(bytes[155]));
        }
        if bytes[156] & !flags::ALL != 0
            || bytes[157..160].iter().any(|b| *b != 0)
            || bytes[208..].iter().any(|b| *b != 0)
        {
            return Err(HeaderError::ReservedNotZero);
        }
        let size = get_u32(bytes, 136);
        if (size as usize) < HEADER_SIZE {
            return Err(HeaderError::Size(size));
        }
        let header = Header {
            checksum: checksum_stored,
            checksum_body: get_u128(bytes, 16),
            cluster: get_u128(bytes, 32),
            parent: get_u128(bytes, 48),
            client: get_u128(bytes, 64),
            context: get_u128(bytes, 80),
            group: get_u64(bytes, 96),
            op: get_u64(bytes, 104),
            commit: get_u64(bytes, 112),
            timestamp: get_u64(bytes, 120),
            session: get_u64(bytes, 128),
            size,
            view: get_u32(bytes, 140),
            log_view: get_u32(bytes, 144),
            request: get_u32(bytes, 148),
            command,
            replica: bytes[153],
            operation: bytes[154],
            protocol: bytes[155],
            flags: bytes[156],
            present_bitset: get_u128(bytes, 160),
            nack_bitset: get_u128(bytes, 176),
            canonical_bitset: get_u128(bytes, 192),
        };
        debug_assert!(header.valid_checksum());
        Ok(header)
    }

    /// The root prepare (op 0) every replica of a group starts from: same bytes everywhere.
    pub fn root(cluster: u128, group: u64) -> Header {
        let mut header = Header::new(Command::Prepare, cluster, group);
        header.operation = operation::ROOT;
        header.set_checksums(&[]);
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut header = Header::new(Command::Prepare, 9, 77);
        header.parent = 5;
        header.op = 12;
        header.commit = 11;
        header.view = 3;
        header.client = u128::MAX - 1;
        header.request = 4;
        header.operation = operation::APPLICATION_MIN;
        header.set_checksums(b"hello");
        header
    }

    #[test]
    fn round_trip() {
        let header = sample();
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), Ok(header));
        assert!(header.valid_checksum_body(b"hello"));
        assert!(!header.valid_checksum_body(b"hellp"));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = sample().encode();
        for bit in 0..HEADER_SIZE * 8 {
            let mut corrupt = bytes;
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&corrupt).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn zero_is_distinguished() {
        assert_eq!(Header::decode(&[0u8; HEADER_SIZE]), Err(HeaderError::Zero));
    }

    #[test]
    fn root_is_deterministic() {
        assert_eq!(Header::root(1, 2), Header::root(1, 2));
        assert_ne!(Header::root(1, 2).checksum, Header::root(1, 3).checksum);
    }
}
