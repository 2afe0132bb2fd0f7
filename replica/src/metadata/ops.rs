//! The operations of the metadata group (the bodies of its VSR prepares) and their binary
//! encoding: a version byte, a kind byte, then the fields, every one explicitly sized and
//! bounded. Secrets arrive hashed (the gateway hashes passwords with Argon2 and tokens before
//! it proposes), and time arrives with the prepare, so applying an operation is deterministic.

use crate::codec::{DecodeError, EncodeError, Reader, Writer};

use super::names::Ident;
use super::permissions::Permissions;

pub const OPS_VERSION: u8 = 1;
/// Longest password hash or token hash accepted (an Argon2 PHC string is about 100 bytes).
pub const HASH_LEN_MAX: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged once a replication quorum has it on disk (the default).
    Quorum,
    /// Acknowledged once a replication quorum has it in memory (Iggy's default; named, never
    /// implied).
    Relaxed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicOptions {
    /// Messages older than this (µs) are deleted by retention; `u64::MAX` keeps them.
    pub message_expiry_us: u64,
    /// Retention keeps the topic under this many bytes; `u64::MAX` means no limit.
    pub max_topic_size: u64,
    pub segment_size: u64,
    pub durability: Durability,
    pub consumer_offset_durability: Durability,
}

pub const SEGMENT_SIZE_MIN: u64 = 1 << 20;
pub const SEGMENT_SIZE_MAX: u64 = 1 << 30;

impl Default for TopicOptions {
    fn default() -> TopicOptions {
        TopicOptions {
            message_expiry_us: u64::MAX,
            max_topic_size: u64::MAX,
            segment_size: SEGMENT_SIZE_MAX,
            durability: Durability::Quorum,
            consumer_offset_durability: Durability::Quorum,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Inactive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataOp {
    CreateStream {
        name: String,
    },
    UpdateStream {
        stream: Ident,
        name: String,
    },
    DeleteStream {
        stream: Ident,
    },
    CreateTopic {
        stream: Ident,
        name: String,
        partitions: u32,
        /// Replicas per partition group; 0 means the cluster default.
        replication_factor: u8,
        options: TopicOptions,
    },
    UpdateTopic {
        stream: Ident,
        topic: Ident,
        name: String,
        options: TopicOptions,
    },
    DeleteTopic {
        stream: Ident,
        topic: Ident,
    },
    CreatePartitions {
        stream: Ident,
        topic: Ident,
        count: u32,
    },
    /// Deletes the last `count` partitions.
    DeletePartitions {
        stream: Ident,
        topic: Ident,
        count: u32,
    },
    CreateUser {
        username: String,
        password_hash: String,
        status: UserStatus,
        permissions: Option<Permissions>,
    },
    UpdateUser {
        user: Ident,
        username: Option<String>,
        status: Option<UserStatus>,
    },
    DeleteUser {
        user: Ident,
    },
    UpdatePermissions {
        user: Ident,
        permissions: Option<Permissions>,
    },
    ChangePassword {
        user: Ident,
        password_hash: String,
    },
    CreateToken {
        user: Ident,
        name: String,
        token_hash: String,
        /// Absolute expiry (µs, the prepare clock); `None` never expires.
        expires_at: Option<u64>,
    },
    DeleteToken {
        user: Ident,
        name: String,
    },
    /// Deletes every token whose expiry is at or before the operation's timestamp.
    DeleteExpiredTokens,
    CreateConsumerGroup {
        stream: Ident,
        topic: Ident,
        name: String,
    },
    DeleteConsumerGroup {
        stream: Ident,
        topic: Ident,
        group: Ident,
    },
    JoinConsumerGroup {
        stream: Ident,
        topic: Ident,
        group: Ident,
        member: u128,
    },
    LeaveConsumerGroup {
        stream: Ident,
        topic: Ident,
        group: Ident,
        member: u128,
    },
    /// A client session ended: it leaves every consumer group it was in.
    DropMember {
        member: u128,
    },
    /// These consumer-group members are alive (their gateway still serves them): their idle
    /// clocks restart at this op's timestamp. Unknown ids are ignored.
    TouchMembers {
        members: Vec<u128>,
    },
    /// Members neither joined nor touched for longer than `idle_us` before this op's
    /// timestamp leave every group (their gateway died without saying so).
    ExpireMembers {
        idle_us: u64,
    },
}

/// Members one `TouchMembers` names, at most (a gateway sends several when it serves more).
pub const TOUCH_MEMBERS_MAX: u32 = 1024;

fn put_ident(w: &mut Writer, ident: &Ident) {
    match ident {
        Ident::Id(id) => {
            w.u8(1);
            w.u32(*id);
        }
        Ident::Name(name) => {
            w.u8(2);
            w.short_str(name);
        }
    }
}

fn get_ident(r: &mut Reader, field: &'static str) -> Result<Ident, DecodeError> {
    match r.u8(field)? {
        1 => Ok(Ident::Id(r.u32(field)?)),
        2 => Ok(Ident::Name(r.short_str(field)?)),
        tag => Err(DecodeError::UnknownTag { field, tag }),
    }
}

fn put_durability(w: &mut Writer, durability: Durability) {
    w.u8(match durability {
        Durability::Quorum => 0,
        Durability::Relaxed => 1,
    });
}

fn get_durability(r: &mut Reader) -> Result<Durability, DecodeError> {
    match r.u8("durability")? {
        0 => Ok(Durability::Quorum),
        1 => Ok(Durability::Relaxed),
        tag => Err(DecodeError::UnknownTag {
            field: "durability",
            tag,
        }),
    }
}

pub(super) fn put_options(w: &mut Writer, options: &TopicOptions) {
    w.u64(options.message_expiry_us);
    w.u64(options.max_topic_size);
    w.u64(options.segment_size);
    put_durability(w, options.durability);
    put_durability(w, options.consumer_offset_durability);
}

pub(super) fn get_options(r: &mut Reader) -> Result<TopicOptions, DecodeError> {
    Ok(TopicOptions {
        message_expiry_us: r.u64("message expiry")?,
        max_topic_size: r.u64("max topic size")?,
        segment_size: r.u64("segment size")?,
        durability: get_durability(r)?,
        consumer_offset_durability: get_durability(r)?,
    })
}

pub(super) fn put_status(w: &mut Writer, status: UserStatus) {
    w.u8(match status {
        UserStatus::Active => 1,
        UserStatus::Inactive => 2,
    });
}

pub(super) fn get_status(r: &mut Reader) -> Result<UserStatus, DecodeError> {
    match r.u8("user status")? {
        1 => Ok(UserStatus::Active),
        2 => Ok(UserStatus::Inactive),
        tag => Err(DecodeError::UnknownTag {
            field: "user status",
            tag,
        }),
    }
}

pub(super) fn put_permissions(w: &mut Writer, permissions: &Option<Permissions>) {
    w.bool(permissions.is_some());
    if let Some(permissions) = permissions {
        permissions.encode(w);
    }
}

pub(super) fn get_permissions(r: &mut Reader) -> Result<Option<Permissions>, DecodeError> {
    if r.bool("has permissions")? {
        Ok(Some(Permissions::decode(r)?))
    } else {
        Ok(None)
    }
}

impl MetadataOp {
    /// The op's bytes, or why it breaks a limit of the format (a name over 255 bytes,
    /// permissions for more than `PERMISSION_ENTRIES_MAX` streams).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::default();
        w.u8(OPS_VERSION);
        match self {
            MetadataOp::CreateStream { name } => {
                w.u8(1);
                w.short_str(name);
            }
            MetadataOp::UpdateStream { stream, name } => {
                w.u8(2);
                put_ident(&mut w, stream);
                w.short_str(name);
            }
            MetadataOp::DeleteStream { stream } => {
                w.u8(3);
                put_ident(&mut w, stream);
            }
            MetadataOp::CreateTopic {
                stream,
                name,
                partitions,
                replication_factor,
                options,
            } => {
                w.u8(10);
                put_ident(&mut w, stream);
                w.short_str(name);
                w.u32(*partitions);
                w.u8(*replication_factor);
                put_options(&mut w, options);
            }
            MetadataOp::UpdateTopic {
                stream,
                topic,
                name,
                options,
            } => {
                w.u8(11);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                w.short_str(name);
                put_options(&mut w, options);
            }
            MetadataOp::DeleteTopic { stream, topic } => {
                w.u8(12);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
            }
            MetadataOp::CreatePartitions {
                stream,
                topic,
                count,
            } => {
                w.u8(20);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                w.u32(*count);
            }
            MetadataOp::DeletePartitions {
                stream,
                topic,
                count,
            } => {
                w.u8(21);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                w.u32(*count);
            }
            MetadataOp::CreateUser {
                username,
                password_hash,
                status,
                permissions,
            } => {
                w.u8(30);
                w.short_str(username);
                w.short_str(password_hash);
                put_status(&mut w, *status);
                put_permissions(&mut w, permissions);
            }
            MetadataOp::UpdateUser {
                user,
                username,
                status,
            } => {
                w.u8(31);
                put_ident(&mut w, user);
                w.bool(username.is_some());
                if let Some(username) = username {
                    w.short_str(username);
                }
                w.bool(status.is_some());
                if let Some(status) = status {
                    put_status(&mut w, *status);
                }
            }
            MetadataOp::DeleteUser { user } => {
                w.u8(32);
                put_ident(&mut w, user);
            }
            MetadataOp::UpdatePermissions { user, permissions } => {
                w.u8(33);
                put_ident(&mut w, user);
                put_permissions(&mut w, permissions);
            }
            MetadataOp::ChangePassword {
                user,
                password_hash,
            } => {
                w.u8(34);
                put_ident(&mut w, user);
                w.short_str(password_hash);
            }
            MetadataOp::CreateToken {
                user,
                name,
                token_hash,
                expires_at,
            } => {
                w.u8(40);
                put_ident(&mut w, user);
                w.short_str(name);
                w.short_str(token_hash);
                w.option_u64(*expires_at);
            }
            MetadataOp::DeleteToken { user, name } => {
                w.u8(41);
                put_ident(&mut w, user);
                w.short_str(name);
            }
            MetadataOp::DeleteExpiredTokens => w.u8(42),
            MetadataOp::CreateConsumerGroup {
                stream,
                topic,
                name,
            } => {
                w.u8(50);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                w.short_str(name);
            }
            MetadataOp::DeleteConsumerGroup {
                stream,
                topic,
                group,
            } => {
                w.u8(51);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                put_ident(&mut w, group);
            }
            MetadataOp::JoinConsumerGroup {
                stream,
                topic,
                group,
                member,
            } => {
                w.u8(52);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                put_ident(&mut w, group);
                w.u128(*member);
            }
            MetadataOp::LeaveConsumerGroup {
                stream,
                topic,
                group,
                member,
            } => {
                w.u8(53);
                put_ident(&mut w, stream);
                put_ident(&mut w, topic);
                put_ident(&mut w, group);
                w.u128(*member);
            }
            MetadataOp::DropMember { member } => {
                w.u8(54);
                w.u128(*member);
            }
            MetadataOp::TouchMembers { members } => {
                w.u8(55);
                w.count(members.len(), TOUCH_MEMBERS_MAX, "members to touch");
                for member in members {
                    w.u128(*member);
                }
            }
            MetadataOp::ExpireMembers { idle_us } => {
                w.u8(56);
                w.u64(*idle_us);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataOp, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version("ops version", OPS_VERSION)?;
        let op = match r.u8("operation kind")? {
            1 => MetadataOp::CreateStream {
                name: r.short_str("name")?,
            },
            2 => MetadataOp::UpdateStream {
                stream: get_ident(&mut r, "stream")?,
                name: r.short_str("name")?,
            },
            3 => MetadataOp::DeleteStream {
                stream: get_ident(&mut r, "stream")?,
            },
            10 => MetadataOp::CreateTopic {
                stream: get_ident(&mut r, "stream")?,
                name: r.short_str("name")?,
                partitions: r.u32("partitions")?,
                replication_factor: r.u8("replication factor")?,
                options: get_options(&mut r)?,
            },
            11 => MetadataOp::UpdateTopic {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                name: r.short_str("name")?,
                options: get_options(&mut r)?,
            },
            12 => MetadataOp::DeleteTopic {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
            },
            20 => MetadataOp::CreatePartitions {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                count: r.u32("count")?,
            },
            21 => MetadataOp::DeletePartitions {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                count: r.u32("count")?,
            },
            30 => MetadataOp::CreateUser {
                username: r.short_str("username")?,
                password_hash: r.short_str("password hash")?,
                status: get_status(&mut r)?,
                permissions: get_permissions(&mut r)?,
            },
            31 => MetadataOp::UpdateUser {
                user: get_ident(&mut r, "user")?,
                username: if r.bool("has username")? {
                    Some(r.short_str("username")?)
                } else {
                    None
                },
                status: if r.bool("has status")? {
                    Some(get_status(&mut r)?)
                } else {
                    None
                },
            },
            32 => MetadataOp::DeleteUser {
                user: get_ident(&mut r, "user")?,
            },
            33 => MetadataOp::UpdatePermissions {
                user: get_ident(&mut r, "user")?,
                permissions: get_permissions(&mut r)?,
            },
            34 => MetadataOp::ChangePassword {
                user: get_ident(&mut r, "user")?,
                password_hash: r.short_str("password hash")?,
            },
            40 => MetadataOp::CreateToken {
                user: get_ident(&mut r, "user")?,
                name: r.short_str("name")?,
                token_hash: r.short_str("token hash")?,
                expires_at: r.option_u64("expiry")?,
            },
            41 => MetadataOp::DeleteToken {
                user: get_ident(&mut r, "user")?,
                name: r.short_str("name")?,
            },
            42 => MetadataOp::DeleteExpiredTokens,
            50 => MetadataOp::CreateConsumerGroup {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                name: r.short_str("name")?,
            },
            51 => MetadataOp::DeleteConsumerGroup {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                group: get_ident(&mut r, "group")?,
            },
            52 => MetadataOp::JoinConsumerGroup {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                group: get_ident(&mut r, "group")?,
                member: r.u128("member")?,
            },
            53 => MetadataOp::LeaveConsumerGroup {
                stream: get_ident(&mut r, "stream")?,
                topic: get_ident(&mut r, "topic")?,
                group: get_ident(&mut r, "group")?,
                member: r.u128("member")?,
            },
            54 => MetadataOp::DropMember {
                member: r.u128("member")?,
            },
            55 => {
                let count = r.count("members to touch", TOUCH_MEMBERS_MAX)?;
                let mut members = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    members.push(r.u128("member")?);
                }
                MetadataOp::TouchMembers { members }
            }
            56 => MetadataOp::ExpireMembers {
                idle_us: r.u64("idle time")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "operation kind",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(op)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn every_op() -> Vec<MetadataOp> {
        let s = || Ident::Name("orders".to_string());
        let t = || Ident::Id(3);
        vec![
            MetadataOp::CreateStream {
                name: "orders".into(),
            },
            MetadataOp::UpdateStream {
                stream: Ident::Id(0),
                name: "o2".into(),
            },
            MetadataOp::DeleteStream { stream: s() },
            MetadataOp::CreateTopic {
                stream: s(),
                name: "eu".into(),
                partitions: 6,
                replication_factor: 3,
                options: TopicOptions {
                    durability: Durability::Relaxed,
                    ..TopicOptions::default()
                },
            },
            MetadataOp::UpdateTopic {
                stream: s(),
                topic: t(),
                name: "eu".into(),
                options: TopicOptions::default(),
            },
            MetadataOp::DeleteTopic {
                stream: s(),
                topic: t(),
            },
            MetadataOp::CreatePartitions {
                stream: s(),
                topic: t(),
                count: 2,
            },
            MetadataOp::DeletePartitions {
                stream: s(),
                topic: t(),
                count: 1,
            },
            MetadataOp::CreateUser {
                username: "ann".into(),
                password_hash: "$argon2id$v=19$...".into(),
                status: UserStatus::Active,
                permissions: Some(Permissions::all()),
            },
            MetadataOp::UpdateUser {
                user: Ident::Id(1),
                username: None,
                status: Some(UserStatus::Inactive),
            },
            MetadataOp::DeleteUser { user: Ident::Id(1) },
            MetadataOp::UpdatePermissions {
                user: Ident::Id(1),
                permissions: None,
            },
            MetadataOp::ChangePassword {
                user: Ident::Name("ann".into()),
                password_hash: "h".into(),
            },
            MetadataOp::CreateToken {
                user: Ident::Id(1),
                name: "ci".into(),
                token_hash: "abc".into(),
                expires_at: Some(5),
            },
            MetadataOp::CreateToken {
                user: Ident::Id(1),
                name: "forever".into(),
                token_hash: "def".into(),
                expires_at: None,
            },
            MetadataOp::CreateToken {
                user: Ident::Id(1),
                name: "far".into(),
                token_hash: "ghi".into(),
                expires_at: Some(u64::MAX),
            },
            MetadataOp::DeleteToken {
                user: Ident::Id(1),
                name: "ci".into(),
            },
            MetadataOp::DeleteExpiredTokens,
            MetadataOp::CreateConsumerGroup {
                stream: s(),
                topic: t(),
                name: "g".into(),
            },
            MetadataOp::DeleteConsumerGroup {
                stream: s(),
                topic: t(),
                group: Ident::Id(0),
            },
            MetadataOp::JoinConsumerGroup {
                stream: s(),
                topic: t(),
                group: Ident::Id(0),
                member: u128::MAX - 1,
            },
            MetadataOp::LeaveConsumerGroup {
                stream: s(),
                topic: t(),
                group: Ident::Id(0),
                member: 7,
            },
            MetadataOp::DropMember { member: 7 },
            MetadataOp::TouchMembers {
                members: vec![7, 8],
            },
            MetadataOp::ExpireMembers {
                idle_us: 30_000_000,
            },
        ]
    }

    #[test]
    fn every_operation_round_trips_and_every_truncation_is_refused() {
        for op in every_op() {
            let bytes = op.encode().unwrap();
            assert_eq!(MetadataOp::decode(&bytes).unwrap(), op);
            for cut in 0..bytes.len() {
                assert!(
                    MetadataOp::decode(&bytes[..cut]).is_err(),
                    "{op:?} cut {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                MetadataOp::decode(&longer),
                Err(DecodeError::Trailing { bytes: 1 })
            );
        }
        assert!(matches!(
            MetadataOp::decode(&[OPS_VERSION, 99]),
            Err(DecodeError::UnknownTag { tag: 99, .. })
        ));
        assert!(matches!(
            MetadataOp::decode(&[7, 1]),
            Err(DecodeError::UnknownTag { tag: 7, .. })
        ));
        // Values past the format's limits are an error to encode, never a panic.
        let long = MetadataOp::CreateStream {
            name: "x".repeat(256),
        };
        assert!(long.encode().is_err());
        let mut wide = Permissions::default();
        for stream in 0..=crate::metadata::permissions::PERMISSION_ENTRIES_MAX {
            wide.streams.insert(stream, Default::default());
        }
        let wide = MetadataOp::UpdatePermissions {
            user: Ident::Id(1),
            permissions: Some(wide),
        };
        assert!(wide.encode().is_err());
    }
}
