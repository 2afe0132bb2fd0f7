//! What a partition group answers a request with, and its encoding (the body of the VSR reply,
//! also carried inside an `Answer` op): a version byte, a kind byte, then the fields.

use crate::codec::{short_prefix, DecodeError, Reader, Writer};

pub const REPLY_VERSION: u8 = 1;
/// Longest refusal reason kept (the codec's short string).
pub const REASON_LEN_MAX: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionReply {
    /// The batch's messages have offsets `base_offset ..< base_offset + count` (also the
    /// answer to a retry of a batch already appended).
    Appended { base_offset: u64, count: u32 },
    /// A consumer offset was stored or deleted.
    Done,
    /// Nothing changed, for this reason.
    Refused { reason: String },
}

impl PartitionReply {
    /// A refusal; a reason longer than the format allows is cut at a character boundary.
    pub fn refused(reason: impl Into<String>) -> PartitionReply {
        let reason = reason.into();
        PartitionReply::Refused {
            reason: short_prefix(&reason).to_string(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(REPLY_VERSION);
        match self {
            PartitionReply::Appended { base_offset, count } => {
                w.u8(1);
                w.u64(*base_offset);
                w.u32(*count);
            }
            PartitionReply::Done => w.u8(2),
            PartitionReply::Refused { reason } => {
                w.u8(3);
                w.short_str(reason);
            }
        }
        w.finish().expect("reasons are cut to the format's limit")
    }

    pub fn decode(bytes: &[u8]) -> Result<PartitionReply, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("partition reply version", REPLY_VERSION)?;
        let reply = match r.u8("partition reply kind")? {
            1 => PartitionReply::Appended {
                base_offset: r.u64("base offset")?,
                count: r.u32("count")?,
            },
            2 => PartitionReply::Done,
            3 => PartitionReply::Refused {
                reason: r.short_str("reason")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "partition reply kind",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_truncations_are_refused() {
        let long = "é".repeat(200);
        for reply in [
            PartitionReply::Appended {
                base_offset: 7,
                count: 3,
            },
            PartitionReply::Done,
            PartitionReply::refused("producer fenced"),
            PartitionReply::refused(long),
        ] {
            let bytes = reply.encode();
            assert_eq!(PartitionReply::decode(&bytes).unwrap(), reply);
            for cut in 0..bytes.len() {
                assert!(PartitionReply::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        let PartitionReply::Refused { reason } = PartitionReply::refused("é".repeat(200)) else {
            unreachable!()
        };
        assert!(reason.len() <= REASON_LEN_MAX && reason.chars().all(|c| c == 'é'));
    }
}
