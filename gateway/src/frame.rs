//! Client frames of the Iggy binary protocol 0.11.0: a 256-byte little-endian header, then
//! `size - 256` body bytes. Requests are parsed here (and checked: command, size, release,
//! the body checksum when the client set one); replies and evictions are built here.

use std::io::Read;

use crate::codes::{COMMAND_EVICTION, COMMAND_REPLY, COMMAND_REQUEST, OPERATION_NON_REPLICATED};

pub const HEADER_SIZE: usize = 256;

/// A request as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub client: u128,
    pub request_checksum: u128,
    pub request: u64,
    pub operation: u8,
    pub session: u64,
    /// The command code of a non-replicated request (bytes 196..200); 0 otherwise.
    pub code: u32,
    pub body: RequestBody,
}

/// A request's body, read after `HEADROOM` spare bytes of its own buffer: a send's batch
/// becomes a partition append by writing the append's head just before it
/// (`into_append`), so the batch is never copied on its way to the partition's group.
#[derive(Clone, Debug, Default)]
pub struct RequestBody {
    buffer: Vec<u8>,
}

impl RequestBody {
    /// Spare bytes before the body: an append's head (the body's own leading bytes add more).
    pub const HEADROOM: usize = galgo_replica::partition::ops::APPEND_HEAD_SIZE;

    /// A body of exactly `len` bytes read from `stream`. The buffer is not zeroed first (a
    /// socket reads into its spare capacity): zeroing 1 MB per send was 5 % of the gateway's
    /// time. `UnexpectedEof` if the stream ends before `len` bytes.
    fn read_from(stream: &mut impl Read, len: usize) -> std::io::Result<RequestBody> {
        let mut buffer = Vec::with_capacity(Self::HEADROOM + len);
        buffer.resize(Self::HEADROOM, 0);
        stream.take(len as u64).read_to_end(&mut buffer)?;
        if buffer.len() != Self::HEADROOM + len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(RequestBody { buffer })
    }

    pub fn from_slice(body: &[u8]) -> RequestBody {
        let mut buffer = Vec::with_capacity(Self::HEADROOM + body.len());
        buffer.resize(Self::HEADROOM, 0);
        buffer.extend_from_slice(body);
        RequestBody { buffer }
    }

    /// The buffer from `head.len()` bytes before the body's byte `at` to its end, with
    /// `head` written there: the body's tail from `at` (a send's batch) behind a new head,
    /// without copying the tail. The body is gone after this.
    pub fn into_append(self, at: usize, head: &[u8]) -> bytes::Bytes {
        assert!(at <= self.len());
        assert!(head.len() <= Self::HEADROOM);
        let start = Self::HEADROOM + at - head.len();
        let mut buffer = self.buffer;
        buffer[start..start + head.len()].copy_from_slice(head);
        bytes::Bytes::from(buffer).slice(start..)
    }
}

/// Bodies are equal when their bytes are (the headroom is not part of them).
impl PartialEq for RequestBody {
    fn eq(&self, other: &RequestBody) -> bool {
        **self == **other
    }
}

impl Eq for RequestBody {}

impl std::ops::Deref for RequestBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[Self::HEADROOM..]
    }
}

#[derive(Debug)]
pub enum FrameError {
    /// The connection ended or failed (cleanly between frames: `Closed`).
    Closed,
    Io(std::io::Error),
    /// The header declares a size below 256 or above the limit.
    BadSize(u64),
    /// Not a request frame, or a field a client must leave zero is not.
    BadHeader(&'static str),
    /// The client set a body checksum and the body does not match it.
    BadChecksum,
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

fn u128_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + 16].try_into().expect("16 bytes"))
}

/// XXH3-64 of the body, widened: what a client puts in `request_checksum`.
pub fn body_checksum(body: &[u8]) -> u128 {
    u128::from(twox_hash::XxHash3_64::oneshot(body))
}

/// Reads one request of at most `size_max` bytes (header included).
pub fn read_request(stream: &mut impl Read, size_max: u32) -> Result<Request, FrameError> {
    assert!(size_max as usize >= HEADER_SIZE);
    let mut header = [0u8; HEADER_SIZE];
    let mut filled = 0;
    while filled < HEADER_SIZE {
        match stream.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(FrameError::Io(error)),
        }
    }
    let size = u32_at(&header, 48);
    if (size as usize) < HEADER_SIZE || size > size_max {
        return Err(FrameError::BadSize(u64::from(size)));
    }
    let body =
        RequestBody::read_from(stream, size as usize - HEADER_SIZE).map_err(FrameError::Io)?;
    parse(&header, body)
}

fn parse(header: &[u8; HEADER_SIZE], body: RequestBody) -> Result<Request, FrameError> {
    if header[60] != COMMAND_REQUEST {
        return Err(FrameError::BadHeader("not a request (command 5)"));
    }
    if u32_at(header, 56) != 0 {
        return Err(FrameError::BadHeader("release must be 0"));
    }
    let operation = header[176];
    let code = u32_at(header, 196);
    if operation != OPERATION_NON_REPLICATED && code != 0 {
        return Err(FrameError::BadHeader(
            "a command code in a replicated request",
        ));
    }
    let request_checksum = u128_at(header, 144);
    if request_checksum != 0 && request_checksum != body_checksum(&body) {
        return Err(FrameError::BadChecksum);
    }
    let request = Request {
        client: u128_at(header, 128),
        request_checksum,
        request: u64_at(header, 168),
        operation,
        session: u64_at(header, 184),
        code,
        body,
    };
    assert_eq!(request.operation, header[176]);
    Ok(request)
}

/// The status of a reply frame made by `reply` (0: success, else an IggyError code).
pub fn reply_status(frame: &[u8]) -> u32 {
    assert!(frame.len() >= HEADER_SIZE);
    u32_at(frame, 216)
}

/// A reply to `request`: `status` 0 with `body`, or an error code with no body.
pub fn reply(request: &Request, status: u32, body: &[u8]) -> Vec<u8> {
    assert!(status == 0 || body.is_empty(), "an error reply has no body");
    let size = u32::try_from(HEADER_SIZE + body.len()).expect("replies are bounded");
    // The header is built apart and the body appended: zeroing a 1 MB poll reply first was
    // 2.6 % of the gateway's samples under a consumer.
    let mut frame = Vec::with_capacity(HEADER_SIZE + body.len());
    frame.resize(HEADER_SIZE, 0);
    frame[48..52].copy_from_slice(&size.to_le_bytes());
    frame[60] = COMMAND_REPLY;
    frame[128..144].copy_from_slice(&request.request_checksum.to_le_bytes());
    frame[160..176].copy_from_slice(&request.client.to_le_bytes());
    frame[200..208].copy_from_slice(&request.request.to_le_bytes());
    // The client decides from this byte whether a result section comes first.
    frame[208] = request.operation;
    frame[216..220].copy_from_slice(&status.to_le_bytes());
    frame.extend_from_slice(body);
    assert_eq!(u32_at(&frame, 48) as usize, frame.len());
    frame
}

/// An eviction of `client` for `reason` (with the version window when the reason is an
/// incompatible protocol).
pub fn eviction(client: u128, reason: u8, versions: Option<(u32, u32)>) -> Vec<u8> {
    let mut frame = vec![0u8; HEADER_SIZE];
    frame[48..52].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    frame[60] = COMMAND_EVICTION;
    frame[128..144].copy_from_slice(&client.to_le_bytes());
    if let Some((version, version_min)) = versions {
        frame[144..148].copy_from_slice(&version.to_le_bytes());
        frame[148..152].copy_from_slice(&version_min.to_le_bytes());
    }
    frame[255] = reason;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_becomes_an_append_in_its_own_buffer() {
        let body = RequestBody::from_slice(b"meta:BATCH");
        assert_eq!(&body[..], b"meta:BATCH");
        let tail_at = body.as_ptr() as usize + 5;
        let head = [7u8; RequestBody::HEADROOM];
        let op = body.into_append(5, &head);
        assert_eq!(&op[..RequestBody::HEADROOM], &head[..]);
        assert_eq!(&op[RequestBody::HEADROOM..], b"BATCH");
        assert_eq!(
            op.as_ptr() as usize + RequestBody::HEADROOM,
            tail_at,
            "not copied"
        );
        // The whole body behind a head, and an empty tail.
        let op = RequestBody::from_slice(b"xy").into_append(0, b"hh");
        assert_eq!(&op[..], b"hhxy");
        let op = RequestBody::from_slice(b"xy").into_append(2, b"hh");
        assert_eq!(&op[..], b"hh");
    }

    fn request_frame(operation: u8, code: u32, body: &[u8], checksum: bool) -> Vec<u8> {
        let mut frame = vec![0u8; HEADER_SIZE + body.len()];
        frame[48..52].copy_from_slice(&((HEADER_SIZE + body.len()) as u32).to_le_bytes());
        frame[60] = COMMAND_REQUEST;
        frame[128..144].copy_from_slice(&7u128.to_le_bytes());
        if checksum {
            frame[144..160].copy_from_slice(&body_checksum(body).to_le_bytes());
        }
        frame[168..176].copy_from_slice(&3u64.to_le_bytes());
        frame[176] = operation;
        frame[184..192].copy_from_slice(&9u64.to_le_bytes());
        frame[196..200].copy_from_slice(&code.to_le_bytes());
        frame[HEADER_SIZE..].copy_from_slice(body);
        frame
    }

    #[test]
    fn a_request_reads_back_with_its_fields() {
        let frame = request_frame(OPERATION_NON_REPLICATED, 201, b"", false);
        let request = read_request(&mut frame.as_slice(), 1 << 20).unwrap();
        assert_eq!(request.client, 7);
        assert_eq!(request.request, 3);
        assert_eq!(request.session, 9);
        assert_eq!(request.code, 201);
        let frame = request_frame(128, 0, b"\x08stream-1", true);
        let request = read_request(&mut frame.as_slice(), 1 << 20).unwrap();
        assert_eq!(&request.body[..], b"\x08stream-1");
    }

    #[test]
    fn the_checksum_the_0_11_client_computes_matches() {
        // The iggy 0.11.0 client's checksum of CreateStream("stream-1") (its own source).
        assert_eq!(body_checksum(b"\x08stream-1"), 0xb7a8cca7809ed171);
        assert_eq!(body_checksum(b""), 0x2D06800538D394C2);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut frame = request_frame(128, 0, b"abc", true);
        frame[HEADER_SIZE] ^= 1;
        assert!(matches!(
            read_request(&mut frame.as_slice(), 1 << 20),
            Err(FrameError::BadChecksum)
        ));
        let frame = request_frame(128, 0, &[0u8; 600], false);
        assert!(matches!(
            read_request(&mut frame.as_slice(), 512),
            Err(FrameError::BadSize(856))
        ));
        let mut frame = request_frame(2, 1, b"", false);
        frame[48..52].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            read_request(&mut frame.as_slice(), 1 << 20),
            Err(FrameError::BadSize(100))
        ));
        let mut frame = request_frame(2, 1, b"", false);
        frame[60] = COMMAND_REPLY;
        assert!(matches!(
            read_request(&mut frame.as_slice(), 1 << 20),
            Err(FrameError::BadHeader(_))
        ));
        let frame = request_frame(128, 201, b"", false);
        assert!(matches!(
            read_request(&mut frame.as_slice(), 1 << 20),
            Err(FrameError::BadHeader(_))
        ));
        let frame = request_frame(2, 1, b"", false);
        assert!(matches!(
            read_request(&mut &frame[..100], 1 << 20),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_request(&mut &frame[..0], 1 << 20),
            Err(FrameError::Closed)
        ));
        // A body cut short: an error, never a body padded out to its size.
        let frame = request_frame(128, 0, &[5u8; 300], true);
        assert!(matches!(
            read_request(&mut &frame[..HEADER_SIZE + 299], 1 << 20),
            Err(FrameError::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof
        ));
        let request = read_request(&mut frame.as_slice(), 1 << 20).unwrap();
        assert_eq!(&request.body[..], &[5u8; 300][..]);
    }

    #[test]
    fn replies_and_evictions_have_the_layout_the_client_reads() {
        let frame = request_frame(128, 0, b"x", true);
        let request = read_request(&mut frame.as_slice(), 1 << 20).unwrap();
        let ok = reply(&request, 0, b"\0\0\0\0");
        assert_eq!(ok.len(), HEADER_SIZE + 4);
        assert_eq!(u32_at(&ok, 48), 260);
        assert_eq!(ok[60], COMMAND_REPLY);
        assert_eq!(ok[208], 128);
        assert_eq!(u32_at(&ok, 216), 0);
        let refused = reply(&request, 42, b"");
        assert_eq!(u32_at(&refused, 216), 42);
        let evicted = eviction(7, 14, Some((11264, 11264)));
        assert_eq!(evicted.len(), HEADER_SIZE);
        assert_eq!(u32_at(&evicted, 48), 256);
        assert_eq!(evicted[60], COMMAND_EVICTION);
        assert_eq!(u32_at(&evicted, 144), 11264);
        assert_eq!(evicted[255], 14);
    }
}
