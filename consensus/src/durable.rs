//! The replica's durable view state (what the superblock holds for one group) and its
//! versioned, checksummed encoding.
//!
//! ```text
//!   0 checksum     u128  over bytes 16..size
//!  16 version      u32
//!  20 size         u32
//!  24 sequence     u64   incremented on every write
//!  32 view         u32
//!  36 log_view     u32
//!  40 commit_max   u64
//!  48 count        u32   view headers that follow
//!  52 reserved     [u8; 12] zero
//!  64 view headers count × 256 bytes, ascending by op
//! ```

use crate::checksum::checksum;
use crate::header::{Header, HEADER_SIZE};

pub const DURABLE_VERSION: u32 = 1;
pub const VIEW_HEADERS_MAX: usize = 16;
const FIXED_SIZE: usize = 64;
pub const DURABLE_SIZE_MAX: usize = FIXED_SIZE + VIEW_HEADERS_MAX * HEADER_SIZE;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableState {
    pub view: u32,
    pub log_view: u32,
    pub commit_max: u64,
    /// The canonical suffix of the log as of `log_view`, ascending, the head last.
    pub view_headers: Vec<Header>,
}

/// Whether `header` is known canonical for `log_view`: prepared in that view (only its primary
/// made those), or one of the view headers installed when the log view started. Recovery and
/// DoViewChange both rely on this one rule.
pub fn known_canonical(header: &Header, log_view: u32, view_headers: &[Header]) -> bool {
    header.view == log_view
        || view_headers
            .iter()
            .any(|v| v.op == header.op && v.checksum == header.checksum)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurableError {
    Zero,
    Checksum,
    Version(u32),
    Size,
    Header,
}

impl DurableState {
    pub fn initial() -> DurableState {
        DurableState {
            view: 0,
            log_view: 0,
            commit_max: 0,
            view_headers: Vec::new(),
        }
    }

    pub fn encode(&self, sequence: u64) -> Vec<u8> {
        assert!(self.log_view <= self.view);
        assert!(self.view_headers.len() <= VIEW_HEADERS_MAX);
        assert!(self
            .view_headers
            .windows(2)
            .all(|pair| pair[0].op < pair[1].op));
        let size = FIXED_SIZE + self.view_headers.len() * HEADER_SIZE;
        let mut bytes = vec![0u8; size];
        bytes[16..20].copy_from_slice(&DURABLE_VERSION.to_le_bytes());
        bytes[20..24].copy_from_slice(&(size as u32).to_le_bytes());
        bytes[24..32].copy_from_slice(&sequence.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.view.to_le_bytes());
        bytes[36..40].copy_from_slice(&self.log_view.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.commit_max.to_le_bytes());
        bytes[48..52].copy_from_slice(&(self.view_headers.len() as u32).to_le_bytes());
        for (index, header) in self.view_headers.iter().enumerate() {
            let at = FIXED_SIZE + index * HEADER_SIZE;
            bytes[at..at + HEADER_SIZE].copy_from_slice(&header.encode());
        }
        let sum = checksum(&bytes[16..]);
        bytes[0..16].copy_from_slice(&sum.to_le_bytes());
        bytes
    }

    /// Decodes `(sequence, state)`; trailing bytes after `size` are ignored (sector padding).
    pub fn decode(bytes: &[u8]) -> Result<(u64, DurableState), DurableError> {
        if bytes.len() < FIXED_SIZE {
            return Err(DurableError::Size);
        }
        if bytes[..FIXED_SIZE].iter().all(|b| *b == 0) {
            return Err(DurableError::Zero);
        }
        let size = u32::from_le_bytes(bytes[20..24].try_into().expect("4")) as usize;
        if !(FIXED_SIZE..=DURABLE_SIZE_MAX).contains(&size) || size > bytes.len() {
            return Err(DurableError::Size);
        }
        let stored = u128::from_le_bytes(bytes[0..16].try_into().expect("16"));
        if checksum(&bytes[16..size]) != stored {
            return Err(DurableError::Checksum);
        }
        let version = u32::from_le_bytes(bytes[16..20].try_into().expect("4"));
        if version != DURABLE_VERSION {
            return Err(DurableError::Version(version));
        }
        let count = u32::from_le_bytes(bytes[48..52].try_into().expect("4")) as usize;
        if count > VIEW_HEADERS_MAX || FIXED_SIZE + count * HEADER_SIZE != size {
            return Err(DurableError::Size);
        }
        let mut view_headers = Vec::with_capacity(count);
        for index in 0..count {
            let at = FIXED_SIZE + index * HEADER_SIZE;
            let raw: &[u8; HEADER_SIZE] = bytes[at..at + HEADER_SIZE].try_into().expect("sized");
            view_headers.push(Header::decode(raw).map_err(|_| DurableError::Header)?);
        }
        let state = DurableState {
            view: u32::from_le_bytes(bytes[32..36].try_into().expect("4")),
            log_view: u32::from_le_bytes(bytes[36..40].try_into().expect("4")),
            commit_max: u64::from_le_bytes(bytes[40..48].try_into().expect("8")),
            view_headers,
        };
        if state.log_view > state.view {
            return Err(DurableError::Size);
        }
        Ok((
            u64::from_le_bytes(bytes[24..32].try_into().expect("8")),
            state,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let state = DurableState {
            view: 7,
            log_view: 6,
            commit_max: 99,
            view_headers: vec![Header::root(1, 2)],
        };
        let mut bytes = state.encode(5);
        bytes.resize(4096, 0);
        assert_eq!(DurableState::decode(&bytes), Ok((5, state)));
        bytes[40] ^= 1;
        assert_eq!(DurableState::decode(&bytes), Err(DurableError::Checksum));
        assert_eq!(DurableState::decode(&[0u8; 512]), Err(DurableError::Zero));
    }
}
