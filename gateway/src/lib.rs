//! Galgo's gateway: the Iggy binary protocol 0.11.0 in front of a Galgo cluster. It
//! authenticates clients against the replicated users, answers reads from the applied
//! metadata, and sends writes to the primary of their group through the routing client.

pub mod clients;
pub mod codes;
pub mod connection;
pub mod credentials;
pub mod frame;
pub mod member_keeper;
pub mod messages;
pub mod metadata_cache;
pub mod options_catalog;
pub mod replies;
pub mod server;
pub mod snapshot_file;
pub mod tls;
mod user_commands;
pub mod users;
pub mod wire;
