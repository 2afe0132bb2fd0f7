//! Galgo's consensus: Viewstamped Replication for one replication group, sans-IO.
//!
//! A `Replica` takes messages, ticks and I/O completions and returns `Action`s; it never reads a
//! clock, the OS random source, thread identity or HashMap iteration order, so the simulator can
//! run it deterministically and the node runtime can drive it with real disks and sockets.

pub mod bugs;
pub mod checkpoint;
pub mod checksum;
pub mod durable;
pub mod header;
pub mod journal;
pub mod message;
pub mod prng;
pub mod quorums;
pub mod recovery;
pub mod replica;
pub mod sessions;
pub mod timeout;
pub mod view_change;

pub use bugs::{Bug, Bugs};
pub use checkpoint::Checkpoint;
pub use durable::DurableState;
pub use header::{Command, Header};
pub use journal::Journal;
pub use message::Message;
pub use replica::{
    checkpoint_held, checkpoint_restores, Action, Completion, Config, IoId, Peer, Replica,
    StateMachine, Status, Timeouts, JOURNAL_KEEP_OPS_MIN,
};
