//! A node's client port: TCP connections from routing clients and gateways, and in-process
//! links from a gateway in the same process (`local_port`). Each TCP connection reads whole
//! consensus messages (checked by `frame::read_frame`) and hands requests to the node; replies
//! come back through the `ClientTable`, which maps a client id to the connection it last spoke
//! on, and wait in that connection's bounded queue for its writer (a link's replies go
//! straight into its bounded channel, as messages). A connection that sends a bad frame is
//! closed; so is one whose queue overflows (a client that does not read its replies).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::mpsc::SyncSender;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_channel::mpsc;
use galgo_consensus::message::BODY_SIZE_MAX;
use galgo_consensus::Message;
use monoio::io::{AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

use crate::frame::{read_frame, FrameRead};
use crate::local_port::{self, LinkEnds};

/// Connections open at once, at most.
pub const CONNECTIONS_MAX: usize = 256;
/// Client ids one connection may speak for, at most.
const IDS_PER_CONNECTION_MAX: usize = 64;
/// Reply bytes waiting for one connection's writer, at most.
const REPLY_BYTES_QUEUED_MAX: usize = 64 << 20;
/// A connection that sends no whole frame for this long is closed.
const IDLE_MAX: Duration = Duration::from_secs(600);
/// Client ids the table routes replies to, at most.
pub const CLIENT_IDS_MAX: usize = 16_384;
/// Replies waiting for one connection's writer, at most.
const REPLIES_QUEUED_MAX: usize = 4096;
/// A reply write must finish this soon.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

pub struct Connection {
    id: u64,
    replies: RefCell<VecDeque<Vec<u8>>>,
    replies_bytes: Cell<usize>,
    /// Client ids this connection spoke for.
    ids: Cell<usize>,
    waiter: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    /// An in-process link's reply channel: its replies go there as messages, not frames.
    link: Option<SyncSender<Message>>,
}

impl Connection {
    fn new(id: u64, link: Option<SyncSender<Message>>) -> Connection {
        Connection {
            id,
            replies: RefCell::new(VecDeque::new()),
            replies_bytes: Cell::new(0),
            ids: Cell::new(0),
            waiter: RefCell::new(None),
            closed: Cell::new(false),
            link,
        }
    }

    fn push(&self, reply: &Message) {
        if let Some(link) = &self.link {
            if !local_port::push_reply(link, reply) {
                // Its reader is gone or does not keep up.
                self.close();
            }
            return;
        }
        let frame = reply.encode();
        let mut replies = self.replies.borrow_mut();
        if replies.len() >= REPLIES_QUEUED_MAX
            || self.replies_bytes.get() + frame.len() > REPLY_BYTES_QUEUED_MAX
        {
            // A client that does not read its replies.
            drop(replies);
            self.close();
            return;
        }
        self.replies_bytes
            .set(self.replies_bytes.get() + frame.len());
        replies.push_back(frame);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn next_reply(&self) -> Option<Vec<u8>> {
        std::future::poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(None);
            }
            match self.replies.borrow_mut().pop_front() {
                Some(frame) => {
                    self.replies_bytes
                        .set(self.replies_bytes.get() - frame.len());
                    Poll::Ready(Some(frame))
                }
                None => {
                    *self.waiter.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// Which connection each client id's replies go to.
#[derive(Default)]
pub struct ClientTable {
    routes: RefCell<BTreeMap<u128, Weak<Connection>>>,
    open: Cell<usize>,
    next_id: Cell<u64>,
    /// Replies for a client with no open connection, dropped (the client retries).
    pub dropped: Cell<u64>,
}

impl ClientTable {
    /// A new connection (a link's when `link` is its reply channel); `None` at the limit.
    fn open_connection(&self, link: Option<SyncSender<Message>>) -> Option<Rc<Connection>> {
        if self.open.get() >= CONNECTIONS_MAX {
            return None;
        }
        self.open.set(self.open.get() + 1);
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Some(Rc::new(Connection::new(id, link)))
    }

    fn close_connection(&self, connection: &Connection) {
        connection.close();
        self.forget(connection);
        self.open.set(self.open.get() - 1);
    }

    /// A request that arrived on `connection`: its client's replies go there from now on,
    /// and an answer the node gives at once goes back on it.
    fn take_request(
        &self,
        connection: &Rc<Connection>,
        handler: &RequestHandler,
        message: Message,
    ) {
        if message.header.client != 0 {
            self.register(message.header.client, connection);
        }
        if let Some(reply) = handler(message) {
            connection.push(&reply);
        }
    }

    /// Sends `reply` to the connection its client last spoke on.
    pub fn deliver(&self, reply: &Message) {
        let connection = self
            .routes
            .borrow()
            .get(&reply.header.client)
            .and_then(Weak::upgrade);
        match connection {
            Some(connection) if !connection.closed.get() => connection.push(reply),
            _ => self.dropped.set(self.dropped.get() + 1),
        }
    }

    fn register(&self, client: u128, connection: &Rc<Connection>) {
        let mut routes = self.routes.borrow_mut();
        let known = routes
            .get(&client)
            .and_then(Weak::upgrade)
            .is_some_and(|c| c.id == connection.id);
        if known {
            return;
        }
        if connection.ids.get() >= IDS_PER_CONNECTION_MAX {
            return; // Its replies for more ids are dropped.
        }
        connection.ids.set(connection.ids.get() + 1);
        if routes.len() >= CLIENT_IDS_MAX && !routes.contains_key(&client) {
            // Forget the ids of closed connections first; if none, this client gets no replies.
            routes.retain(|_, c| c.upgrade().is_some_and(|c| !c.closed.get()));
            if routes.len() >= CLIENT_IDS_MAX {
                return;
            }
        }
        routes.insert(client, Rc::downgrade(connection));
    }

    fn forget(&self, connection: &Connection) {
        self.routes
            .borrow_mut()
            .retain(|_, c| c.upgrade().is_some_and(|c| c.id != connection.id));
    }
}

/// What the node does with a client's message; `Some(reply)` is answered at once.
pub type RequestHandler = Rc<dyn Fn(Message) -> Option<Message>>;

/// Accepts client connections on `listener` until the table's node goes away.
pub async fn serve(
    listener: TcpListener,
    table: Rc<ClientTable>,
    cluster: u128,
    handler: RequestHandler,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            monoio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some(connection) = table.open_connection(None) else {
            continue; // Dropping the stream closes it.
        };
        let _ = stream.set_nodelay(true);
        let (table, handler) = (table.clone(), handler.clone());
        monoio::spawn(async move {
            run_connection(stream, &table, &connection, cluster, &handler).await;
            table.close_connection(&connection);
        });
    }
}

async fn run_connection(
    stream: TcpStream,
    table: &Rc<ClientTable>,
    connection: &Rc<Connection>,
    cluster: u128,
    handler: &RequestHandler,
) {
    let (mut reader, mut writer) = stream.into_split();
    let writing = connection.clone();
    let writer_task = monoio::spawn(async move {
        while let Some(frame) = writing.next_reply().await {
            let written = monoio::time::timeout(WRITE_DEADLINE, writer.write_all(frame)).await;
            if !matches!(written, Ok((Ok(_), _))) {
                writing.close();
                return;
            }
        }
    });
    // Ends when the client closes, sends a bad frame, or its replies overflowed.
    while !connection.closed.get() {
        let message = match monoio::time::timeout(IDLE_MAX, read_frame(&mut reader, cluster)).await
        {
            Ok(FrameRead::Message(message)) => message,
            Ok(FrameRead::Closed | FrameRead::Rejected) | Err(_) => break,
        };
        table.take_request(connection, handler, message);
    }
    connection.close();
    writer_task.await;
}

/// Serves the in-process links `links` brings (`local_port::LocalPorts::register`) until the
/// process's gateway side is gone; each is a connection of `table` like a TCP one.
pub async fn serve_local(
    mut links: mpsc::Receiver<LinkEnds>,
    table: Rc<ClientTable>,
    cluster: u128,
    handler: RequestHandler,
) {
    while let Some(ends) = next(&mut links).await {
        let Some(connection) = table.open_connection(Some(ends.replies)) else {
            continue; // Dropping the ends breaks the link.
        };
        let (table, handler) = (table.clone(), handler.clone());
        monoio::spawn(async move {
            run_link(ends.requests, &table, &connection, cluster, &handler).await;
            table.close_connection(&connection);
        });
    }
}

/// The next item of a channel, `None` once every sender is gone.
async fn next<T>(receiver: &mut mpsc::Receiver<T>) -> Option<T> {
    use futures_core::Stream;
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *receiver).poll_next(cx)).await
}

async fn run_link(
    mut requests: mpsc::Receiver<Message>,
    table: &Rc<ClientTable>,
    connection: &Rc<Connection>,
    cluster: u128,
    handler: &RequestHandler,
) {
    // Ends when the caller drops its end, or its replies overflowed.
    while !connection.closed.get() {
        let message = match monoio::time::timeout(IDLE_MAX, next(&mut requests)).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => break,
        };
        // Sealed by `Message::new` in this process: what `read_frame` checks of a TCP frame
        // besides the checksums (which cannot have changed in memory).
        if message.header.cluster != cluster || message.body.len() > BODY_SIZE_MAX {
            break;
        }
        table.take_request(connection, handler, message);
    }
}
