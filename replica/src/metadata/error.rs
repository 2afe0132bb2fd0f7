//! Why a metadata operation was refused. A refused operation changes nothing.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    InvalidName(String),
    StreamNotFound(String),
    StreamNameTaken(String),
    TopicNotFound(String),
    TopicNameTaken(String),
    UserNotFound(String),
    UsernameTaken(String),
    TokenNotFound(String),
    TokenNameTaken(String),
    ConsumerGroupNotFound(String),
    ConsumerGroupNameTaken(String),
    MemberNotFound(u128),
    /// A count or size outside what the operation allows (partitions, segment size, ...).
    InvalidValue(String),
    /// A table is at its limit (streams, topics, users, tokens, groups, members).
    LimitReached(String),
    /// The root user cannot be deleted, deactivated or stripped of permissions.
    RootProtected,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::InvalidName(why) => write!(f, "invalid name: {why}"),
            MetadataError::StreamNotFound(s) => write!(f, "stream {s} not found"),
            MetadataError::StreamNameTaken(s) => write!(f, "a stream named {s} exists"),
            MetadataError::TopicNotFound(s) => write!(f, "topic {s} not found"),
            MetadataError::TopicNameTaken(s) => write!(f, "a topic named {s} exists"),
            MetadataError::UserNotFound(s) => write!(f, "user {s} not found"),
            MetadataError::UsernameTaken(s) => write!(f, "a user named {s} exists"),
            MetadataError::TokenNotFound(s) => write!(f, "token {s} not found"),
            MetadataError::TokenNameTaken(s) => write!(f, "a token named {s} exists"),
            MetadataError::ConsumerGroupNotFound(s) => write!(f, "consumer group {s} not found"),
            MetadataError::ConsumerGroupNameTaken(s) => {
                write!(f, "a consumer group named {s} exists")
            }
            MetadataError::MemberNotFound(m) => write!(f, "member {m} is not in the group"),
            MetadataError::InvalidValue(why) => write!(f, "invalid value: {why}"),
            MetadataError::LimitReached(what) => write!(f, "limit reached: {what}"),
            MetadataError::RootProtected => write!(f, "the root user cannot be changed so"),
        }
    }
}

impl std::error::Error for MetadataError {}
