//! Galgo's broker. So far: the metadata state machine (streams, topics, partitions and their
//! replica sets, users, permissions, personal access tokens, consumer groups) and the binary
//! codec of its operations. Everything here is deterministic: time comes in with each
//! operation (the primary's prepare timestamp), secrets arrive already hashed, maps are
//! ordered, so every replica that applies the same operations holds the same state.

pub mod codec;
pub mod metadata;
