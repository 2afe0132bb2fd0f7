//! The numbers of the Iggy binary protocol 0.11.0 that the gateway speaks: frame commands,
//! operations, command codes, error codes and eviction reasons.

/// Frame commands (header offset 60).
pub const COMMAND_REQUEST: u8 = 5;
pub const COMMAND_REPLY: u8 = 8;
pub const COMMAND_EVICTION: u8 = 13;

/// Operations (request header offset 176).
pub const OPERATION_REGISTER: u8 = 1;
pub const OPERATION_NON_REPLICATED: u8 = 2;
pub const OPERATION_LOGOUT: u8 = 3;
pub const OPERATION_CREATE_STREAM: u8 = 128;
pub const OPERATION_UPDATE_STREAM: u8 = 129;
pub const OPERATION_DELETE_STREAM: u8 = 130;
pub const OPERATION_CREATE_TOPIC: u8 = 132;
pub const OPERATION_UPDATE_TOPIC: u8 = 133;
pub const OPERATION_DELETE_TOPIC: u8 = 134;
pub const OPERATION_CREATE_PARTITIONS: u8 = 136;
pub const OPERATION_DELETE_PARTITIONS: u8 = 137;
pub const OPERATION_CREATE_CONSUMER_GROUP: u8 = 139;
pub const OPERATION_DELETE_CONSUMER_GROUP: u8 = 140;
pub const OPERATION_CREATE_USER: u8 = 141;
pub const OPERATION_UPDATE_USER: u8 = 142;
pub const OPERATION_DELETE_USER: u8 = 143;
pub const OPERATION_CHANGE_PASSWORD: u8 = 144;
pub const OPERATION_UPDATE_PERMISSIONS: u8 = 145;
pub const OPERATION_CREATE_PERSONAL_ACCESS_TOKEN: u8 = 146;
pub const OPERATION_DELETE_PERSONAL_ACCESS_TOKEN: u8 = 147;
pub const OPERATION_JOIN_CONSUMER_GROUP: u8 = 148;
pub const OPERATION_LEAVE_CONSUMER_GROUP: u8 = 149;
/// Not result-framed (see `result_framed`): its reply is empty.
pub const OPERATION_DELETE_SEGMENTS: u8 = 138;
pub const OPERATION_PURGE_STREAM: u8 = 131;
pub const OPERATION_PURGE_TOPIC: u8 = 135;
pub const OPERATION_SEND_MESSAGES: u8 = 160;
/// Offsets are stored through the partition's quorum whatever ack level (0 or 1) is asked.
pub const OPERATION_STORE_CONSUMER_OFFSET: u8 = 161;
pub const OPERATION_DELETE_CONSUMER_OFFSET: u8 = 162;

/// Replies to these operations carry a result section before their payload.
pub fn result_framed(operation: u8) -> bool {
    matches!(operation, 64..=68 | 128..=149 | 161 | 162) && operation != OPERATION_DELETE_SEGMENTS
}

/// Command codes (bytes 196..200 of a non-replicated request; implied by the operation
/// otherwise).
pub const CODE_PING: u32 = 1;
pub const CODE_GET_STATS: u32 = 10;
pub const CODE_GET_SNAPSHOT_FILE: u32 = 11;
pub const CODE_GET_CLUSTER_METADATA: u32 = 12;
pub const CODE_DESCRIBE_OPTIONS: u32 = 13;
pub const CODE_GET_ME: u32 = 20;
pub const CODE_GET_CLIENT: u32 = 21;
pub const CODE_GET_CLIENTS: u32 = 22;
pub const CODE_GET_USER: u32 = 31;
pub const CODE_GET_USERS: u32 = 32;
pub const CODE_GET_PERSONAL_ACCESS_TOKENS: u32 = 41;
pub const CODE_LOGIN_USER_LEGACY: u32 = 38;
pub const CODE_LOGIN_WITH_PAT_LEGACY: u32 = 44;
pub const CODE_GET_STREAM: u32 = 200;
pub const CODE_GET_STREAMS: u32 = 201;
pub const CODE_GET_TOPIC: u32 = 300;
pub const CODE_GET_TOPICS: u32 = 301;
pub const CODE_POLL_MESSAGES: u32 = 100;
pub const CODE_GET_CONSUMER_OFFSET: u32 = 120;
pub const CODE_GET_CONSUMER_GROUP: u32 = 600;
pub const CODE_GET_CONSUMER_GROUPS: u32 = 601;
pub const CODE_SYNC_CONSUMER_GROUP: u32 = 606;

/// The name a request is counted under in the metrics: its operation, or for a
/// non-replicated request its command code ("other" for anything the gateway does not serve,
/// so a client cannot grow the label set).
pub fn command_name(operation: u8, code: u32) -> &'static str {
    match operation {
        OPERATION_REGISTER => "login",
        OPERATION_LOGOUT => "logout",
        OPERATION_CREATE_STREAM => "create_stream",
        OPERATION_UPDATE_STREAM => "update_stream",
        OPERATION_DELETE_STREAM => "delete_stream",
        OPERATION_CREATE_TOPIC => "create_topic",
        OPERATION_UPDATE_TOPIC => "update_topic",
        OPERATION_DELETE_TOPIC => "delete_topic",
        OPERATION_CREATE_PARTITIONS => "create_partitions",
        OPERATION_DELETE_PARTITIONS => "delete_partitions",
        OPERATION_CREATE_CONSUMER_GROUP => "create_consumer_group",
        OPERATION_DELETE_CONSUMER_GROUP => "delete_consumer_group",
        OPERATION_CREATE_USER => "create_user",
        OPERATION_UPDATE_USER => "update_user",
        OPERATION_DELETE_USER => "delete_user",
        OPERATION_CHANGE_PASSWORD => "change_password",
        OPERATION_UPDATE_PERMISSIONS => "update_permissions",
        OPERATION_CREATE_PERSONAL_ACCESS_TOKEN => "create_personal_access_token",
        OPERATION_DELETE_PERSONAL_ACCESS_TOKEN => "delete_personal_access_token",
        OPERATION_JOIN_CONSUMER_GROUP => "join_consumer_group",
        OPERATION_LEAVE_CONSUMER_GROUP => "leave_consumer_group",
        OPERATION_DELETE_SEGMENTS => "delete_segments",
        OPERATION_PURGE_STREAM => "purge_stream",
        OPERATION_PURGE_TOPIC => "purge_topic",
        OPERATION_SEND_MESSAGES => "send_messages",
        OPERATION_STORE_CONSUMER_OFFSET => "store_consumer_offset",
        OPERATION_DELETE_CONSUMER_OFFSET => "delete_consumer_offset",
        OPERATION_NON_REPLICATED => match code {
            CODE_PING => "ping",
            CODE_GET_STATS => "get_stats",
            CODE_GET_SNAPSHOT_FILE => "get_snapshot_file",
            CODE_GET_CLUSTER_METADATA => "get_cluster_metadata",
            CODE_DESCRIBE_OPTIONS => "describe_options",
            CODE_GET_ME => "get_me",
            CODE_GET_CLIENT => "get_client",
            CODE_GET_CLIENTS => "get_clients",
            CODE_GET_USER => "get_user",
            CODE_GET_USERS => "get_users",
            CODE_GET_PERSONAL_ACCESS_TOKENS => "get_personal_access_tokens",
            CODE_GET_STREAM => "get_stream",
            CODE_GET_STREAMS => "get_streams",
            CODE_GET_TOPIC => "get_topic",
            CODE_GET_TOPICS => "get_topics",
            CODE_POLL_MESSAGES => "poll_messages",
            CODE_GET_CONSUMER_OFFSET => "get_consumer_offset",
            CODE_GET_CONSUMER_GROUP => "get_consumer_group",
            CODE_GET_CONSUMER_GROUPS => "get_consumer_groups",
            CODE_SYNC_CONSUMER_GROUP => "sync_consumer_group",
            _ => "other",
        },
        _ => "other",
    }
}

/// IggyError codes the gateway answers with.
pub const ERROR_GENERIC: u32 = 1;
pub const ERROR_INVALID_COMMAND: u32 = 3;
pub const ERROR_INVALID_FORMAT: u32 = 4;
pub const ERROR_FEATURE_UNAVAILABLE: u32 = 5;
pub const ERROR_RESOURCE_NOT_FOUND: u32 = 20;
pub const ERROR_UNAUTHENTICATED: u32 = 40;
pub const ERROR_UNAUTHORIZED: u32 = 41;
pub const ERROR_INVALID_CREDENTIALS: u32 = 42;
pub const ERROR_INVALID_USERNAME: u32 = 43;
pub const ERROR_INVALID_PASSWORD: u32 = 44;
pub const ERROR_INVALID_USER_STATUS: u32 = 45;
pub const ERROR_USER_ALREADY_EXISTS: u32 = 46;
pub const ERROR_CANNOT_DELETE_USER: u32 = 48;
pub const ERROR_CANNOT_CHANGE_PERMISSIONS: u32 = 49;
pub const ERROR_INVALID_TOKEN_NAME: u32 = 50;
pub const ERROR_TOKEN_ALREADY_EXISTS: u32 = 51;
pub const ERROR_TOKENS_LIMIT_REACHED: u32 = 52;
pub const ERROR_INVALID_TOKEN: u32 = 53;
pub const ERROR_USERS_LIMIT_REACHED: u32 = 55;
pub const ERROR_INVALID_TOKEN_EXPIRY: u32 = 56;
pub const ERROR_TRANSIENT_NOT_COMMITTED: u32 = 57;
pub const ERROR_STREAM_ID_NOT_FOUND: u32 = 1009;
pub const ERROR_STREAM_NAME_ALREADY_EXISTS: u32 = 1012;
pub const ERROR_INVALID_STREAM_NAME: u32 = 1013;
pub const ERROR_TOPIC_ID_NOT_FOUND: u32 = 2010;
pub const ERROR_TOPIC_NAME_ALREADY_EXISTS: u32 = 2013;
pub const ERROR_INVALID_TOPIC_NAME: u32 = 2014;
pub const ERROR_INVALID_PARTITIONS_COUNT: u32 = 2019;
pub const ERROR_UNSUPPORTED_OPTION_KEY: u32 = 4041;
pub const ERROR_INVALID_OPTION_VALUE: u32 = 4042;
pub const ERROR_OPTIONS_BLOCK_TOO_LARGE: u32 = 4043;
pub const ERROR_CONSUMER_GROUP_ID_NOT_FOUND: u32 = 5000;
pub const ERROR_CONSUMER_GROUP_NAME_ALREADY_EXISTS: u32 = 5004;
pub const ERROR_CONSUMER_GROUP_MEMBER_NOT_FOUND: u32 = 5006;
pub const ERROR_CONSUMER_GROUP_PARTITION_NOT_OWNED: u32 = 5009;
pub const ERROR_INVALID_SESSION: u32 = 14001;

/// Eviction reasons (eviction header offset 255).
pub const EVICTION_NO_SESSION: u8 = 1;
pub const EVICTION_INVALID_REQUEST_OPERATION: u8 = 4;
pub const EVICTION_INVALID_REQUEST_BODY: u8 = 5;
pub const EVICTION_INVALID_REQUEST_BODY_SIZE: u8 = 6;
pub const EVICTION_SESSION_TOO_LOW: u8 = 7;
pub const EVICTION_INVALID_CREDENTIALS: u8 = 9;
pub const EVICTION_USER_INACTIVE: u8 = 11;
pub const EVICTION_STALE_CLIENT: u8 = 13;
pub const EVICTION_INCOMPATIBLE_PROTOCOL: u8 = 14;
pub const EVICTION_MALFORMED_LOGIN: u8 = 15;

/// The protocol version this gateway speaks, packed `major << 20 | minor << 10 | patch`.
pub const PROTOCOL_VERSION: u32 = 11 << 10;
/// The oldest client version it accepts: the same major.minor, any patch.
pub const PROTOCOL_VERSION_MIN: u32 = PROTOCOL_VERSION & !0x3ff;

/// Whether a client speaking `version` may log in: at least the oldest accepted, and no newer
/// major.minor than ours.
pub fn version_accepted(version: u32) -> bool {
    version >= PROTOCOL_VERSION_MIN && version >> 10 <= PROTOCOL_VERSION >> 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_gate_takes_any_patch_of_0_11_only() {
        assert_eq!(PROTOCOL_VERSION, 11264);
        assert!(version_accepted(11264));
        assert!(version_accepted(11264 + 3));
        assert!(!version_accepted(10 << 10));
        assert!(!version_accepted(12 << 10));
        assert!(!version_accepted(1 << 20));
    }

    #[test]
    fn result_framing_follows_the_operation() {
        assert!(result_framed(OPERATION_CREATE_STREAM));
        assert!(result_framed(161));
        assert!(!result_framed(138));
        assert!(!result_framed(OPERATION_NON_REPLICATED));
        assert!(!result_framed(OPERATION_SEND_MESSAGES));
        assert!(!result_framed(OPERATION_LOGOUT));
    }
}
