//! A message: a verified header plus its body, and its wire framing (header bytes then body).

use bytes::Bytes;

use crate::header::{Header, HeaderError, HEADER_SIZE};

/// Largest body a message may carry; frames above this are rejected before allocation.
pub const BODY_SIZE_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    /// Shared, not copied, by clones: a prepare's body goes to the journal, the cache, the
    /// network and the state machine as one buffer.
    pub body: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short,
    Header(HeaderError),
    SizeMismatch { header: u32, frame: usize },
    BodyTooLarge(usize),
    BodyChecksum,
}

impl Message {
    /// Builds a message and seals its checksums.
    pub fn new(mut header: Header, body: impl Into<Bytes>) -> Message {
        let body: Bytes = body.into();
        assert!(body.len() <= BODY_SIZE_MAX);
        header.set_checksums(&body);
        Message { header, body }
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(self.header.valid_checksum_body(&self.body));
        let mut bytes = Vec::with_capacity(HEADER_SIZE + self.body.len());
        bytes.extend_from_slice(&self.header.encode());
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The frame in two parts, header bytes and body, for a vectored write without building
    /// the frame. For a message this process sealed with `new` a moment ago: the header is
    /// checked here, the body's checksum in debug builds (the receiver verifies it always).
    pub fn frame_parts(&self) -> ([u8; HEADER_SIZE], &[u8]) {
        assert!(self.header.valid_checksum());
        assert_eq!(self.header.size as usize, HEADER_SIZE + self.body.len());
        debug_assert!(self.header.valid_checksum_body(&self.body));
        (self.header.encode(), &self.body)
    }

    /// Decodes one whole frame and verifies both checksums; the body is copied out of it.
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        let header = Self::decode_header(frame)?;
        Ok(Message {
            header,
            body: Bytes::copy_from_slice(&frame[HEADER_SIZE..]),
        })
    }

    /// Decodes one whole frame and verifies both checksums; the body shares the frame's buffer.
    pub fn decode_bytes(frame: Bytes) -> Result<Message, DecodeError> {
        let header = Self::decode_header(&frame)?;
        Ok(Message {
            header,
            body: frame.slice(HEADER_SIZE..),
        })
    }

    /// A message from a header already decoded (its checksum verified) and the body read
    /// after it, kept as it is: the size and the body's checksum are verified here.
    pub fn from_parts(header: Header, body: Bytes) -> Result<Message, DecodeError> {
        if header.size as usize != HEADER_SIZE + body.len() {
            return Err(DecodeError::SizeMismatch {
                header: header.size,
                frame: HEADER_SIZE + body.len(),
            });
        }
        if body.len() > BODY_SIZE_MAX {
            return Err(DecodeError::BodyTooLarge(body.len()));
        }
        if !header.valid_checksum_body(&body) {
            return Err(DecodeError::BodyChecksum);
        }
        Ok(Message { header, body })
    }

    /// The verified header of a whole frame whose body matches it.
    fn decode_header(frame: &[u8]) -> Result<Header, DecodeError> {
        if frame.len() < HEADER_SIZE {
            return Err(DecodeError::Short);
        }
        let header_bytes: &[u8; HEADER_SIZE] = frame[..HEADER_SIZE].try_into().expect("sized");
        let header = Header::decode(header_bytes).map_err(DecodeError::Header)?;
        if header.size as usize != frame.len() {
            return Err(DecodeError::SizeMismatch {
                header: header.size,
                frame: frame.len(),
            });
        }
        let body = &frame[HEADER_SIZE..];
        if body.len() > BODY_SIZE_MAX {
            return Err(DecodeError::BodyTooLarge(body.len()));
        }
        if !header.valid_checksum_body(body) {
            return Err(DecodeError::BodyChecksum);
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    #[test]
    fn frame_round_trip_and_corruption() {
        let message = Message::new(Header::new(Command::Request, 1, 2), b"payload".to_vec());
        let frame = message.encode();
        assert_eq!(Message::decode(&frame), Ok(message.clone()));
        let (head, body) = message.frame_parts();
        assert_eq!([&head[..], body].concat(), frame);
        let mut corrupt = frame.clone();
        *corrupt.last_mut().unwrap() ^= 0x10;
        assert_eq!(Message::decode(&corrupt), Err(DecodeError::BodyChecksum));
        assert_eq!(
            Message::decode(&frame[..frame.len() - 1]).unwrap_err(),
            DecodeError::SizeMismatch {
                header: 263,
                frame: 262
            }
        );
        assert_eq!(Message::decode(&frame[..10]), Err(DecodeError::Short));
    }

    #[test]
    fn parts_read_apart_are_checked_like_a_frame() {
        let message = Message::new(Header::new(Command::Request, 1, 2), b"payload".to_vec());
        let body = Bytes::from_static(b"payload");
        assert_eq!(
            Message::from_parts(message.header, body.clone()),
            Ok(message.clone())
        );
        assert_eq!(
            Message::from_parts(message.header, Bytes::from_static(b"paylaod")),
            Err(DecodeError::BodyChecksum)
        );
        assert_eq!(
            Message::from_parts(message.header, body.slice(1..)),
            Err(DecodeError::SizeMismatch {
                header: 263,
                frame: 262
            })
        );
    }
}
