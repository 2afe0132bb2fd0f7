//! A replica's checkpoint: the replicated state as of one committed op (the client sessions
//! and the state machine's own snapshot), so that a replica that opens starts applying after
//! that op instead of from op 1. While the log keeps every op, a checkpoint only saves work:
//! one that does not decode, or names an op the journal does not hold with that checksum, is
//! ignored and the replica applies its log from the start. A replica whose log starts above
//! op 1 (it installed a checkpoint sent by a peer: state transfer) needs its checkpoint; it
//! carries the op's whole prepare header, so the journal can start at that op without
//! holding its record.
//!
//! ```text
//!   0 checksum      u128  over bytes 16..size
//!  16 magic         u32   "gchk"
//!  20 version       u16
//!  22 flags         u16   bit 0: installed from a peer (state transfer); others zero
//!  24 size          u64   of the whole encoding
//!  32 op            u64   the last op applied (>= 1)
//!  40 op_checksum   u128  that op's prepare header checksum
//!  56 sessions_size u32
//!  60 machine_size  u32
//!  64 op_header     256 bytes: that op's prepare header (version 2)
//! 320 sessions      sessions_size bytes (`ClientSessions::encode`)
//!  .. machine       machine_size bytes (`StateMachine::snapshot`)
//! ```

use crate::checksum::checksum;
use crate::header::{Command, Header, HEADER_SIZE};

pub const CHECKPOINT_MAGIC: u32 = 0x6763_686b; // "gchk"
/// 2: the op's prepare header follows the fixed fields (version 1 is refused, so read as no
/// checkpoint: the log it was taken from still starts at op 1).
pub const CHECKPOINT_VERSION: u16 = 2;
const FIXED_SIZE: usize = 64 + HEADER_SIZE;
const FLAG_INSTALLED: u16 = 1;
/// The largest checkpoint encoded or decoded (a corrupt size never allocates more).
pub const CHECKPOINT_SIZE_MAX: usize = 256 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last op the state reflects.
    pub op: u64,
    /// The checksum of that op's prepare header: ties the checkpoint to one log.
    pub op_checksum: u128,
    /// That op's prepare header (`op_checksum` is its checksum).
    pub op_header: Header,
    /// Sent by a peer (state transfer), not taken here: the log must start after its op,
    /// and is cut at open where it does not hold that op.
    pub installed: bool,
    pub sessions: Vec<u8>,
    pub machine: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    TooShort,
    BadMagic,
    BadVersion(u16),
    BadSize,
    BadChecksum,
    /// The op's header does not decode or is not that op's prepare.
    BadHeader,
    TooLarge(usize),
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::TooShort => write!(f, "shorter than a checkpoint header"),
            CheckpointError::BadMagic => write!(f, "not a checkpoint (magic)"),
            CheckpointError::BadVersion(v) => write!(f, "checkpoint version {v} is unknown"),
            CheckpointError::BadSize => write!(f, "the sizes do not add up"),
            CheckpointError::BadChecksum => write!(f, "checksum mismatch"),
            CheckpointError::BadHeader => write!(f, "the op's header is not its prepare's"),
            CheckpointError::TooLarge(size) => {
                write!(f, "{size} bytes, more than {CHECKPOINT_SIZE_MAX}")
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

impl Checkpoint {
    /// The encoding; `TooLarge` past `CHECKPOINT_SIZE_MAX`.
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        assert!(self.op >= 1, "op 0 is the root: nothing to save");
        assert_eq!(self.op_header.op, self.op);
        assert_eq!(self.op_header.checksum, self.op_checksum);
        assert_eq!(self.op_header.command, Command::Prepare);
        let size = FIXED_SIZE + self.sessions.len() + self.machine.len();
        if size > CHECKPOINT_SIZE_MAX {
            return Err(CheckpointError::TooLarge(size));
        }
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&u16::from(self.installed).to_le_bytes());
        bytes.extend_from_slice(&(size as u64).to_le_bytes());
        bytes.extend_from_slice(&self.op.to_le_bytes());
        bytes.extend_from_slice(&self.op_checksum.to_le_bytes());
        bytes.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.machine.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&self.op_header.encode());
        assert_eq!(bytes.len(), FIXED_SIZE);
        bytes.extend_from_slice(&self.sessions);
        bytes.extend_from_slice(&self.machine);
        assert_eq!(bytes.len(), size);
        let sum = checksum(&bytes[16..]);
        bytes[..16].copy_from_slice(&sum.to_le_bytes());
        Ok(bytes)
    }

    /// Decodes an encoding (trailing bytes past its size are ignored: a file may be longer).
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        if bytes.len() < FIXED_SIZE {
            return Err(CheckpointError::TooShort);
        }
        let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u128_at = |at: usize| u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16"));
        if u32_at(16) != CHECKPOINT_MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        if u16_at(20) != CHECKPOINT_VERSION {
            return Err(CheckpointError::BadVersion(u16_at(20)));
        }
        let size = u64_at(24);
        if size > CHECKPOINT_SIZE_MAX as u64 {
            return Err(CheckpointError::TooLarge(size as usize));
        }
        let size = size as usize;
        let (sessions_size, machine_size) = (u32_at(56) as usize, u32_at(60) as usize);
        if size < FIXED_SIZE
            || size > bytes.len()
            || FIXED_SIZE + sessions_size + machine_size != size
            || u16_at(22) & !FLAG_INSTALLED != 0
        {
            return Err(CheckpointError::BadSize);
        }
        if checksum(&bytes[16..size]) != u128_at(0) {
            return Err(CheckpointError::BadChecksum);
        }
        let op = u64_at(32);
        if op == 0 {
            return Err(CheckpointError::BadSize);
        }
        let header_bytes: &[u8; HEADER_SIZE] = bytes[64..FIXED_SIZE].try_into().expect("sized");
        // Covered by the checksum above: a mismatch here is a bug in the writer, not damage.
        let op_header = Header::decode(header_bytes).map_err(|_| CheckpointError::BadHeader)?;
        if op_header.op != op
            || op_header.checksum != u128_at(40)
            || op_header.command != Command::Prepare
        {
            return Err(CheckpointError::BadHeader);
        }
        let sessions_end = FIXED_SIZE + sessions_size;
        let checkpoint = Checkpoint {
            op,
            op_checksum: u128_at(40),
            op_header,
            installed: u16_at(22) & FLAG_INSTALLED != 0,
            sessions: bytes[FIXED_SIZE..sessions_end].to_vec(),
            machine: bytes[sessions_end..size].to_vec(),
        };
        assert_eq!(
            FIXED_SIZE + checkpoint.sessions.len() + checkpoint.machine.len(),
            size
        );
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut op_header = Header::new(Command::Prepare, 7, 1);
        op_header.op = 42;
        op_header.set_checksums(b"");
        Checkpoint {
            op: 42,
            op_checksum: op_header.checksum,
            op_header,
            installed: true,
            sessions: vec![1, 2, 3],
            machine: vec![9; 100],
        }
    }

    #[test]
    fn a_checkpoint_comes_back_as_it_was_encoded() {
        let bytes = sample().encode().unwrap();
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), sample());
        // A longer file (an older, larger checkpoint under it) decodes the same.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[7; 50]);
        assert_eq!(Checkpoint::decode(&longer).unwrap(), sample());
    }

    #[test]
    fn any_flipped_bit_or_cut_is_refused() {
        let bytes = sample().encode().unwrap();
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            assert!(Checkpoint::decode(&damaged).is_err(), "byte {index}");
        }
        for len in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }
}
