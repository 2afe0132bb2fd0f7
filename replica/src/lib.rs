//! Galgo's broker. So far: the metadata state machine (streams, topics, partitions and their
//! replica sets, users, permissions, personal access tokens, consumer groups), the partition
//! state machine (offsets and timestamps stamped at prepare time, consumer offsets, the
//! idempotent producer table, retention cuts) and the binary codec of their operations. Everything here is deterministic: time comes in with each
//! operation (the primary's prepare timestamp), secrets arrive already hashed, maps are
//! ordered, so every replica that applies the same operations holds the same state.

pub mod admin;
pub mod bus;
pub mod checkpoint_store;
pub mod client_port;
pub mod client_protocol;
pub mod codec;
pub mod commit_batch;
pub mod config;
pub mod frame;
pub mod group_files;
pub mod group_host;
pub mod journal;
pub mod local_port;
pub mod metadata;
pub mod node;
pub mod partition;
pub mod read_ahead;
pub mod retention;
pub mod routing;
pub mod view_state;
