//! A node's in-process client port: how a gateway that runs in the same process as the node
//! (`galgo dev`) reaches the node's shards without a TCP connection. A link carries whole
//! `Message`s through channels, so a request's body goes from the gateway's buffer to the
//! group's journal, and a poll's batches from the log to the gateway, without being encoded,
//! copied through loopback TCP or hashed again on arrival. Each shard owns one directory
//! entry; a link is a bounded request queue into the shard (woken across threads by monoio's
//! `sync` feature) and a bounded reply queue back to the caller's thread. On the shard a link
//! is a `client_port` connection like any other: same client table, same handler, same limits.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::mpsc;
use galgo_consensus::Message;

/// Requests one link may have queued for its shard, at most (a routing client has one in
/// flight; late retries add a few).
const REQUESTS_QUEUED_MAX: usize = 16;
/// Replies queued for one link's reader, at most; a link whose reader falls this far behind
/// is closed, like a TCP connection whose reply queue overflows.
pub const REPLIES_QUEUED_MAX: usize = 64;
/// Links waiting for their shard to take them, at most.
const LINKS_QUEUED_MAX: usize = 64;

/// The shard's ends of a new link.
pub struct LinkEnds {
    pub requests: mpsc::Receiver<Message>,
    pub replies: SyncSender<Message>,
}

/// Where the shards of this process's node take new links: one entry per shard, filled when
/// the shard starts serving (`register`).
#[derive(Debug)]
pub struct LocalPorts {
    node: u8,
    shards: Vec<Mutex<Option<mpsc::Sender<LinkEnds>>>>,
}

impl LocalPorts {
    pub fn new(node: u8, shards: u16) -> Arc<LocalPorts> {
        assert!(shards > 0);
        Arc::new(LocalPorts {
            node,
            shards: (0..shards).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// The node whose shards these are.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// Called by shard `shard` once: the receiver it takes links from.
    pub fn register(&self, shard: u16) -> mpsc::Receiver<LinkEnds> {
        let (sender, receiver) = mpsc::channel(LINKS_QUEUED_MAX);
        let mut entry = self.shards[usize::from(shard)]
            .lock()
            .expect("no thread panics holding it");
        assert!(entry.is_none(), "shard {shard} registered twice");
        *entry = Some(sender);
        receiver
    }

    /// A new link to `shard`; `None` when the shard does not serve links (not started, or
    /// gone) or has too many waiting.
    pub fn connect(&self, shard: u16) -> Option<LocalLink> {
        let mut entry = self.shards.get(usize::from(shard))?.lock().ok()?;
        let sender = entry.as_mut()?;
        let (request_sender, requests) = mpsc::channel(REQUESTS_QUEUED_MAX);
        let (replies, reply_receiver) = std::sync::mpsc::sync_channel(REPLIES_QUEUED_MAX);
        if let Err(error) = sender.try_send(LinkEnds { requests, replies }) {
            if error.is_disconnected() {
                *entry = None;
            }
            return None;
        }
        Some(LocalLink {
            requests: request_sender,
            replies: reply_receiver,
        })
    }
}

/// The caller's ends of a link.
pub struct LocalLink {
    requests: mpsc::Sender<Message>,
    replies: Receiver<Message>,
}

/// Why a link gave no reply.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkFailure {
    TimedOut,
    /// The shard closed the link or is gone: make a new one.
    Broken,
}

impl LocalLink {
    /// Queues `request` for the shard (a clone shares the body).
    pub fn send(&mut self, request: &Message) -> Result<(), LinkFailure> {
        // Sealed by `Message::new` in this process: the header is checked here (cheap), the
        // body's checksum in debug builds, as `Message::frame_parts` does for TCP.
        assert!(request.header.valid_checksum());
        debug_assert!(request.header.valid_checksum_body(&request.body));
        match self.requests.try_send(request.clone()) {
            Ok(()) => Ok(()),
            // A full queue means the shard has not taken this link's earlier requests: as for
            // a TCP write that cannot proceed, give the link up.
            Err(_) => Err(LinkFailure::Broken),
        }
    }

    /// The next reply, waiting at most `timeout`.
    pub fn receive(&mut self, timeout: Duration) -> Result<Message, LinkFailure> {
        match self.replies.recv_timeout(timeout) {
            Ok(message) => Ok(message),
            Err(RecvTimeoutError::Timeout) => Err(LinkFailure::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(LinkFailure::Broken),
        }
    }
}

/// What a shard's link connection does with a reply (`client_port` calls it): `false` when
/// the caller's end is gone or its queue is full (the link is then closed).
pub fn push_reply(replies: &SyncSender<Message>, reply: &Message) -> bool {
    replies.try_send(reply.clone()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_consensus::{Command, Header};

    fn request(n: u32) -> Message {
        let mut header = Header::new(Command::Request, 7, 0);
        header.client = 9;
        header.request = n;
        Message::new(header, vec![n as u8; 100])
    }

    #[test]
    fn a_link_carries_requests_and_replies_and_breaks_when_the_shard_goes() {
        let ports = LocalPorts::new(1, 2);
        assert!(ports.connect(0).is_none(), "no shard registered yet");
        let mut links = ports.register(0);
        let mut link = ports.connect(0).expect("registered");
        let mut ends = links.try_recv().expect("a link");
        link.send(&request(1)).unwrap();
        let got = ends.requests.try_recv().expect("queued");
        assert_eq!(got, request(1));
        assert!(push_reply(&ends.replies, &got));
        assert_eq!(link.receive(Duration::from_millis(10)), Ok(request(1)));
        assert_eq!(
            link.receive(Duration::from_millis(1)),
            Err(LinkFailure::TimedOut)
        );
        drop(ends);
        assert_eq!(
            link.receive(Duration::from_millis(1)),
            Err(LinkFailure::Broken)
        );
        assert_eq!(link.send(&request(2)), Err(LinkFailure::Broken));
        drop(links);
        assert!(ports.connect(0).is_none(), "the shard is gone");
        assert!(ports.connect(5).is_none(), "no such shard");
    }

    #[test]
    fn queues_are_bounded() {
        let ports = LocalPorts::new(1, 1);
        let mut links = ports.register(0);
        let mut link = ports.connect(0).unwrap();
        let ends = links.try_recv().unwrap();
        // The channel takes its bound plus one per sender.
        let mut sent = 0;
        while link.send(&request(sent)).is_ok() {
            sent += 1;
            assert!(sent <= 2 * REQUESTS_QUEUED_MAX as u32, "unbounded");
        }
        assert!(sent as usize >= REQUESTS_QUEUED_MAX);
        for n in 0..REPLIES_QUEUED_MAX {
            assert!(push_reply(&ends.replies, &request(n as u32)));
        }
        assert!(!push_reply(&ends.replies, &request(0)), "full");
        let mut waiting = 0;
        while ports.connect(0).is_some() {
            waiting += 1;
            assert!(waiting <= 2 * LINKS_QUEUED_MAX, "unbounded");
        }
        drop(links);
    }
}
