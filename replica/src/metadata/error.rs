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

/// What kind of refusal a reply carries, so a gateway can answer with its protocol's error code
/// (the reason text is for people). Encoded as a u8 in the metadata reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request did not decode.
    BadRequest = 0,
    InvalidName = 1,
    StreamNotFound = 2,
    StreamNameTaken = 3,
    TopicNotFound = 4,
    TopicNameTaken = 5,
    UserNotFound = 6,
    UsernameTaken = 7,
    TokenNotFound = 8,
    TokenNameTaken = 9,
    ConsumerGroupNotFound = 10,
    ConsumerGroupNameTaken = 11,
    MemberNotFound = 12,
    InvalidValue = 13,
    LimitReached = 14,
    RootProtected = 15,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 16] = [
        RefusalKind::BadRequest,
        RefusalKind::InvalidName,
        RefusalKind::StreamNotFound,
        RefusalKind::StreamNameTaken,
        RefusalKind::TopicNotFound,
        RefusalKind::TopicNameTaken,
        RefusalKind::UserNotFound,
        RefusalKind::UsernameTaken,
        RefusalKind::TokenNotFound,
        RefusalKind::TokenNameTaken,
        RefusalKind::ConsumerGroupNotFound,
        RefusalKind::ConsumerGroupNameTaken,
        RefusalKind::MemberNotFound,
        RefusalKind::InvalidValue,
        RefusalKind::LimitReached,
        RefusalKind::RootProtected,
    ];

    pub fn from_u8(value: u8) -> Option<RefusalKind> {
        RefusalKind::ALL
            .into_iter()
            .find(|kind| *kind as u8 == value)
    }
}

impl MetadataError {
    pub fn kind(&self) -> RefusalKind {
        match self {
            MetadataError::InvalidName(_) => RefusalKind::InvalidName,
            MetadataError::StreamNotFound(_) => RefusalKind::StreamNotFound,
            MetadataError::StreamNameTaken(_) => RefusalKind::StreamNameTaken,
            MetadataError::TopicNotFound(_) => RefusalKind::TopicNotFound,
            MetadataError::TopicNameTaken(_) => RefusalKind::TopicNameTaken,
            MetadataError::UserNotFound(_) => RefusalKind::UserNotFound,
            MetadataError::UsernameTaken(_) => RefusalKind::UsernameTaken,
            MetadataError::TokenNotFound(_) => RefusalKind::TokenNotFound,
            MetadataError::TokenNameTaken(_) => RefusalKind::TokenNameTaken,
            MetadataError::ConsumerGroupNotFound(_) => RefusalKind::ConsumerGroupNotFound,
            MetadataError::ConsumerGroupNameTaken(_) => RefusalKind::ConsumerGroupNameTaken,
            MetadataError::MemberNotFound(_) => RefusalKind::MemberNotFound,
            MetadataError::InvalidValue(_) => RefusalKind::InvalidValue,
            MetadataError::LimitReached(_) => RefusalKind::LimitReached,
            MetadataError::RootProtected => RefusalKind::RootProtected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_kinds_round_trip_through_their_byte() {
        for (index, kind) in RefusalKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as u8 as usize, index);
            assert_eq!(RefusalKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(RefusalKind::from_u8(RefusalKind::ALL.len() as u8), None);
    }
}
