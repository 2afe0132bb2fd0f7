//! Reading one consensus message off a stream (monoio), checked before anyone sees it:
//! the header's checksum and cluster, a size within limits, then the body's checksum. Shared
//! by the replica bus and the client port.

use galgo_consensus::header::HEADER_SIZE;
use galgo_consensus::message::BODY_SIZE_MAX;
use galgo_consensus::{Header, Message};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncReadRentExt};

// Returned once per frame and matched at once: boxing the message would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum FrameRead {
    Message(Message),
    /// The peer closed the connection, or reading failed.
    Closed,
    /// A frame that is not a valid message of this cluster: close the connection.
    Rejected,
}

pub async fn read_frame<S: AsyncReadRent>(stream: &mut S, cluster: u128) -> FrameRead {
    let (read, head) = stream.read_exact(vec![0u8; HEADER_SIZE]).await;
    if read.is_err() {
        return FrameRead::Closed;
    }
    let header_bytes: &[u8; HEADER_SIZE] = head[..].try_into().expect("a whole header");
    let header = match Header::decode(header_bytes) {
        Ok(header) if header.cluster == cluster => header,
        _ => return FrameRead::Rejected,
    };
    let size = header.size as usize;
    if !(HEADER_SIZE..=HEADER_SIZE + BODY_SIZE_MAX).contains(&size) {
        return FrameRead::Rejected;
    }
    // The body is read into its own buffer and kept as the message's body, not copied.
    // Into spare capacity, not a zeroed buffer (zeroing 1 MB per frame was 7 % of a shard's
    // time under a 1 MB-batch producer).
    let mut body = Vec::new();
    let body_len = size - HEADER_SIZE;
    if body_len > 0 {
        let buffer = Vec::with_capacity(body_len).slice_mut(0..body_len);
        let (read, read_body) = stream.read_exact(buffer).await;
        if read.is_err() {
            return FrameRead::Closed;
        }
        body = read_body.into_inner();
        assert_eq!(body.len(), body_len);
    }
    match Message::from_parts(header, body.into()) {
        Ok(message) => FrameRead::Message(message),
        Err(_) => FrameRead::Rejected,
    }
}
