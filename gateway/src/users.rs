//! Users, permissions and personal access tokens on the Iggy 0.11.0 wire: the request bodies
//! of CreateUser, UpdateUser, ChangePassword, UpdatePermissions, CreatePersonalAccessToken and
//! the token login, the user and token replies, and the permission blob with its "has next"
//! markers. Pure functions; every malformed body is a `WireError`, never a panic.

use std::collections::BTreeMap;

use galgo_replica::metadata::{
    GlobalPermissions, Ident, Permissions, StreamPermissions, TopicPermissions, User, UserStatus,
    PERMISSION_ENTRIES_MAX, ROOT_USER_ID,
};

use crate::codes::{ERROR_INVALID_FORMAT, ERROR_INVALID_PASSWORD, ERROR_INVALID_USERNAME};
use crate::wire::{put_long_str, put_name, WireError, WireReader};

/// Username and password lengths, in bytes, as the 0.11.0 client checks them.
pub const USERNAME_LEN_MIN: usize = 3;
pub const USERNAME_LEN_MAX: usize = 50;
pub const PASSWORD_LEN_MIN: usize = 3;
pub const PASSWORD_LEN_MAX: usize = 100;
/// A permission blob is at most this long (every stream and topic entry at its limit fits
/// far below it; anything longer is garbage).
const PERMISSIONS_BYTES_MAX: u32 = 1 << 20;

/// UserStatus on the wire: 1 active, 2 inactive.
pub fn status_byte(status: UserStatus) -> u8 {
    match status {
        UserStatus::Active => 1,
        UserStatus::Inactive => 2,
    }
}

fn status_from(byte: u8) -> Result<UserStatus, WireError> {
    match byte {
        1 => Ok(UserStatus::Active),
        2 => Ok(UserStatus::Inactive),
        other => Err(WireError::new(
            crate::codes::ERROR_INVALID_USER_STATUS,
            format!("user status {other}"),
        )),
    }
}

fn check_username(username: &str) -> Result<(), WireError> {
    if !(USERNAME_LEN_MIN..=USERNAME_LEN_MAX).contains(&username.len()) {
        return Err(WireError::new(
            ERROR_INVALID_USERNAME,
            format!(
                "a username of {} bytes ({USERNAME_LEN_MIN} to {USERNAME_LEN_MAX})",
                username.len()
            ),
        ));
    }
    Ok(())
}

/// `[len u8][bytes]`, checked as a password.
fn password(r: &mut WireReader, what: &str) -> Result<Vec<u8>, WireError> {
    let len = usize::from(r.u8(what)?);
    let bytes = r.take(len, what)?.to_vec();
    if !(PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&len) {
        return Err(WireError::new(
            ERROR_INVALID_PASSWORD,
            format!("a {what} of {len} bytes ({PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX})"),
        ));
    }
    Ok(bytes)
}

/// The options block that ends a CreateUser or UpdateUser body: Galgo keeps no user options,
/// so only an empty block is taken.
fn no_options(r: &mut WireReader, what: &str) -> Result<(), WireError> {
    if r.rest_len() != 0 {
        return Err(WireError::new(
            crate::codes::ERROR_UNSUPPORTED_OPTION_KEY,
            format!("{what}: users take no options"),
        ));
    }
    Ok(())
}

/// `[has u8]` then, when set, `[len u32][permission blob of len bytes]`.
fn optional_permissions(r: &mut WireReader) -> Result<Option<Permissions>, WireError> {
    if r.u8("has permissions")? == 0 {
        return Ok(None);
    }
    let len = r.u32("permissions length")?;
    if len > PERMISSIONS_BYTES_MAX {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            format!("a permission blob of {len} bytes"),
        ));
    }
    let blob = r.take(len as usize, "permissions")?;
    let mut inner = WireReader::new(blob);
    let permissions = parse_permissions(&mut inner)?;
    inner.finish("permissions")?;
    Ok(Some(permissions))
}

fn flags<const N: usize>(r: &mut WireReader, what: &str) -> Result<[bool; N], WireError> {
    let mut out = [false; N];
    for flag in &mut out {
        *flag = r.u8(what)? != 0;
    }
    Ok(out)
}

/// The permission blob: ten global flags, then streams and their topics, each list ended by
/// a 0 marker (1 = another entry follows).
pub fn parse_permissions(r: &mut WireReader) -> Result<Permissions, WireError> {
    let global = GlobalPermissions::from_flags(flags(r, "global permissions")?);
    let mut streams = BTreeMap::new();
    let mut more_streams = r.u8("has streams")? != 0;
    while more_streams {
        if streams.len() as u32 >= PERMISSION_ENTRIES_MAX {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("more than {PERMISSION_ENTRIES_MAX} streams with permissions"),
            ));
        }
        let stream_id = r.u32("stream id")?;
        let stream_flags = flags(r, "stream permissions")?;
        let mut topics = BTreeMap::new();
        let mut more_topics = r.u8("has topics")? != 0;
        while more_topics {
            if topics.len() as u32 >= PERMISSION_ENTRIES_MAX {
                return Err(WireError::new(
                    ERROR_INVALID_FORMAT,
                    format!("more than {PERMISSION_ENTRIES_MAX} topics with permissions"),
                ));
            }
            let topic_id = r.u32("topic id")?;
            topics.insert(
                topic_id,
                TopicPermissions::from_flags(flags(r, "topic permissions")?),
            );
            more_topics = r.u8("has next topic")? != 0;
        }
        streams.insert(
            stream_id,
            StreamPermissions::from_flags(stream_flags, topics),
        );
        more_streams = r.u8("has next stream")? != 0;
    }
    Ok(Permissions { global, streams })
}

pub fn put_permissions(out: &mut Vec<u8>, permissions: &Permissions) {
    out.extend(permissions.global.flags().map(u8::from));
    out.push(u8::from(!permissions.streams.is_empty()));
    let stream_count = permissions.streams.len();
    for (index, (id, s)) in permissions.streams.iter().enumerate() {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend(s.flags().map(u8::from));
        out.push(u8::from(!s.topics.is_empty()));
        let topic_count = s.topics.len();
        for (topic_index, (topic_id, t)) in s.topics.iter().enumerate() {
            out.extend_from_slice(&topic_id.to_le_bytes());
            out.extend(t.flags().map(u8::from));
            out.push(u8::from(topic_index + 1 < topic_count));
        }
        out.push(u8::from(index + 1 < stream_count));
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct CreateUser {
    pub username: String,
    pub password: Vec<u8>,
    pub status: UserStatus,
    pub permissions: Option<Permissions>,
}

/// `[username][password u8-len][status u8][has permissions u8][len u32][blob][options]`.
pub fn parse_create_user(body: &[u8]) -> Result<CreateUser, WireError> {
    let mut r = WireReader::new(body);
    let username = r.name("username")?;
    check_username(&username)?;
    let password = password(&mut r, "password")?;
    let status = status_from(r.u8("user status")?)?;
    let permissions = optional_permissions(&mut r)?;
    no_options(&mut r, "create user")?;
    Ok(CreateUser {
        username,
        password,
        status,
        permissions,
    })
}

#[derive(Debug, PartialEq, Eq)]
pub struct UpdateUser {
    pub user: Ident,
    pub username: Option<String>,
    pub status: Option<UserStatus>,
}

/// `[user id][has username u8][username][has status u8][status u8][options]`.
pub fn parse_update_user(body: &[u8]) -> Result<UpdateUser, WireError> {
    let mut r = WireReader::new(body);
    let user = r.identifier("user")?;
    let username = match r.u8("has username")? {
        0 => None,
        _ => {
            let username = r.name("username")?;
            check_username(&username)?;
            Some(username)
        }
    };
    let status = match r.u8("has status")? {
        0 => None,
        _ => Some(status_from(r.u8("user status")?)?),
    };
    no_options(&mut r, "update user")?;
    Ok(UpdateUser {
        user,
        username,
        status,
    })
}

/// `[user id][current password u8-len][new password u8-len]`.
pub fn parse_change_password(body: &[u8]) -> Result<(Ident, Vec<u8>, Vec<u8>), WireError> {
    let mut r = WireReader::new(body);
    let user = r.identifier("user")?;
    let current = password(&mut r, "current password")?;
    let new = password(&mut r, "new password")?;
    r.finish("change password")?;
    Ok((user, current, new))
}

/// `[user id][has permissions u8][len u32][blob]`.
pub fn parse_update_permissions(body: &[u8]) -> Result<(Ident, Option<Permissions>), WireError> {
    let mut r = WireReader::new(body);
    let user = r.identifier("user")?;
    let permissions = optional_permissions(&mut r)?;
    r.finish("update permissions")?;
    Ok((user, permissions))
}

/// How long a new token lives, as the request put it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenExpiry {
    Never,
    /// µs from now.
    After(u64),
}

/// `[name][expiry u64]`: 0 is the server default (never, here), u64::MAX never, else µs.
pub fn parse_create_token(body: &[u8]) -> Result<(String, TokenExpiry), WireError> {
    let mut r = WireReader::new(body);
    let name = r.name("token name")?;
    let expiry = match r.u64("token expiry")? {
        0 | u64::MAX => TokenExpiry::Never,
        micros => TokenExpiry::After(micros),
    };
    r.finish("create personal access token")?;
    Ok((name, expiry))
}

/// `[name]`.
pub fn parse_delete_token(body: &[u8]) -> Result<String, WireError> {
    let mut r = WireReader::new(body);
    let name = r.name("token name")?;
    r.finish("delete personal access token")?;
    Ok(name)
}

/// What follows the version info of a LoginRegister body.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    Password { username: String, password: Vec<u8> },
    Token(String),
}

/// A login context (unused by Galgo) is accepted up to this size.
const LOGIN_CONTEXT_MAX: u32 = 4096;

fn login_context(r: &mut WireReader) -> Result<(), WireError> {
    let context = r.u32("context length")?;
    if context > LOGIN_CONTEXT_MAX {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            "a login context too long",
        ));
    }
    r.take(context as usize, "context")?;
    Ok(())
}

/// The credentials after the version info: `[username][password u8-len][context]`, or, when
/// that shape does not fit the bytes, `[token][context]` (the 0.11.0 client sends both logins
/// as the same operation with no command code).
pub fn parse_credentials(rest: &[u8]) -> Result<Credentials, WireError> {
    let as_password = (|| {
        let mut r = WireReader::new(rest);
        let username = r.name("username")?;
        let len = r.u8("password")?;
        let password = r.take(usize::from(len), "password")?.to_vec();
        login_context(&mut r)?;
        r.finish("login")?;
        Ok(Credentials::Password { username, password })
    })();
    if as_password.is_ok() {
        return as_password;
    }
    let mut r = WireReader::new(rest);
    let token = r.name("personal access token")?;
    login_context(&mut r)?;
    r.finish("login with a personal access token")?;
    Ok(Credentials::Token(token))
}

/// `[id u32][created_at u64][status u8][username][options len u32 = 0]`.
pub fn put_user(out: &mut Vec<u8>, user: &User) {
    out.extend_from_slice(&user.id.to_le_bytes());
    out.extend_from_slice(&user.created_at.to_le_bytes());
    out.push(status_byte(user.status));
    put_name(out, &user.username);
    put_long_str(out, "");
}

/// A user with its permissions: none is `00 00 00 00`, some is `01`, the blob's length and
/// the blob. The root user reports every permission.
pub fn user_details(user: &User) -> Vec<u8> {
    let mut out = Vec::new();
    put_user(&mut out, user);
    let permissions = if user.id == ROOT_USER_ID {
        Some(Permissions::all())
    } else {
        user.permissions.clone()
    };
    match permissions {
        None => out.extend_from_slice(&0u32.to_le_bytes()),
        Some(permissions) => {
            let mut blob = Vec::new();
            put_permissions(&mut blob, &permissions);
            out.push(1);
            out.extend_from_slice(&u32::try_from(blob.len()).expect("small").to_le_bytes());
            out.extend_from_slice(&blob);
        }
    }
    out
}

/// GetPersonalAccessTokens: `[name][expires_at u64, µs; 0 = never]` per token, by name.
pub fn tokens(user: &User) -> Vec<u8> {
    let mut out = Vec::new();
    for token in user.tokens.values() {
        put_name(&mut out, &token.name);
        out.extend_from_slice(&token.expires_at.unwrap_or(0).to_le_bytes());
    }
    out
}

/// The stored form of a token: a BLAKE2b-256 digest in hex (tokens are random, so no salt
/// is needed, and the digest finds the user in one lookup).
pub fn token_hash(token: &str) -> String {
    use blake2::digest::consts::U32;
    use blake2::{Blake2b, Digest};
    let digest = Blake2b::<U32>::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_permissions() -> Permissions {
        let mut p = Permissions::default();
        p.global.manage_servers = true;
        p.global.manage_users = true;
        p.global.manage_streams = true;
        p.global.manage_topics = true;
        p.global.poll_messages = true;
        let mut s1 = StreamPermissions {
            manage_stream: true,
            read_stream: true,
            poll_messages: true,
            send_messages: true,
            ..StreamPermissions::default()
        };
        s1.topics.insert(
            2,
            TopicPermissions {
                manage_topic: true,
                poll_messages: true,
                ..TopicPermissions::default()
            },
        );
        s1.topics.insert(
            3,
            TopicPermissions {
                read_topic: true,
                send_messages: true,
                ..TopicPermissions::default()
            },
        );
        p.streams.insert(1, s1);
        p.streams.insert(
            5,
            StreamPermissions {
                read_stream: true,
                read_topics: true,
                ..StreamPermissions::default()
            },
        );
        p
    }

    #[test]
    fn permissions_match_the_clients_worked_example() {
        // The 53-byte example worked out from iggy_binary_protocol 0.11.0's WirePermissions:
        // global flags alternating from true, stream 1 with topics 2 and 3, stream 5 bare.
        let p = sample_permissions();
        let mut out = Vec::new();
        put_permissions(&mut out, &p);
        assert_eq!(out.len(), 11 + (12 + 9 * 2) + 12);
        let example: Vec<u8> = [
            &[1u8, 0, 1, 0, 1, 0, 1, 0, 1, 0][..],
            &[1],
            &[1, 0, 0, 0, 1, 1, 0, 0, 1, 1],
            &[1],
            &[2, 0, 0, 0, 1, 0, 1, 0],
            &[1],
            &[3, 0, 0, 0, 0, 1, 0, 1],
            &[0],
            &[1],
            &[5, 0, 0, 0, 0, 1, 0, 1, 0, 0],
            &[0],
            &[0],
        ]
        .concat();
        assert_eq!(out, example);
        let mut r = WireReader::new(&out);
        assert_eq!(parse_permissions(&mut r).unwrap(), p);
        r.finish("permissions").unwrap();
    }

    #[test]
    fn truncated_or_endless_permission_blobs_are_refused() {
        let mut out = Vec::new();
        put_permissions(&mut out, &sample_permissions());
        for cut in 0..out.len() {
            assert!(parse_permissions(&mut WireReader::new(&out[..cut])).is_err());
        }
        // "Another stream follows", forever: bounded by the entry limit, then refused.
        let mut endless = vec![0u8; 10];
        endless.push(1);
        for id in 0..=PERMISSION_ENTRIES_MAX {
            endless.extend_from_slice(&id.to_le_bytes());
            endless.extend_from_slice(&[0; 6]);
            endless.push(0);
            endless.push(1);
        }
        let error = parse_permissions(&mut WireReader::new(&endless)).unwrap_err();
        assert!(error.why.contains("more than"), "{error:?}");
    }

    #[test]
    fn create_user_bodies_decode_as_the_client_sends_them() {
        // "user1", "secret", active, no permissions, no options.
        let body = [
            5, b'u', b's', b'e', b'r', b'1', 6, b's', b'e', b'c', b'r', b'e', b't', 1, 0,
        ];
        assert_eq!(
            parse_create_user(&body).unwrap(),
            CreateUser {
                username: "user1".into(),
                password: b"secret".to_vec(),
                status: UserStatus::Active,
                permissions: None,
            }
        );
        let mut with = body[..13].to_vec();
        with.push(2);
        with.push(1);
        let mut blob = Vec::new();
        put_permissions(&mut blob, &sample_permissions());
        with.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        with.extend_from_slice(&blob);
        let parsed = parse_create_user(&with).unwrap();
        assert_eq!(parsed.status, UserStatus::Inactive);
        assert_eq!(parsed.permissions, Some(sample_permissions()));
        // Too short a password, a bad status, options, a lying blob length.
        let short = [5, b'u', b's', b'e', b'r', b'1', 2, b'a', b'b', 1, 0];
        assert_eq!(
            parse_create_user(&short).unwrap_err().code,
            ERROR_INVALID_PASSWORD
        );
        let mut bad_status = body;
        bad_status[13] = 7;
        assert!(parse_create_user(&bad_status).is_err());
        let mut options = body.to_vec();
        options.extend_from_slice(&[2, 1, 0, 0, 0, b'k']);
        assert!(parse_create_user(&options).is_err());
        let mut lying = body[..14].to_vec();
        lying.push(1);
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_create_user(&lying).is_err());
        let tiny_name = [2, b'a', b'b', 6, b's', b'e', b'c', b'r', b'e', b't', 1, 0];
        assert_eq!(
            parse_create_user(&tiny_name).unwrap_err().code,
            ERROR_INVALID_USERNAME
        );
    }

    #[test]
    fn update_user_and_password_bodies_decode() {
        let body = [1, 4, 7, 0, 0, 0, 1, 3, b'b', b'o', b'b', 1, 2];
        assert_eq!(
            parse_update_user(&body).unwrap(),
            UpdateUser {
                user: Ident::Id(7),
                username: Some("bob".into()),
                status: Some(UserStatus::Inactive),
            }
        );
        let neither = [1, 4, 7, 0, 0, 0, 0, 0];
        assert_eq!(parse_update_user(&neither).unwrap().username, None);
        let change = [
            2, 3, b'b', b'o', b'b', 3, b'o', b'l', b'd', 3, b'n', b'e', b'w',
        ];
        let (user, current, new) = parse_change_password(&change).unwrap();
        assert_eq!(user, Ident::Name("bob".into()));
        assert_eq!(
            (current.as_slice(), new.as_slice()),
            (&b"old"[..], &b"new"[..])
        );
        assert!(parse_change_password(&change[..12]).is_err());
    }

    #[test]
    fn both_login_shapes_are_told_apart() {
        let password = [
            4, b'i', b'g', b'g', b'y', 4, b'p', b'a', b's', b's', 0, 0, 0, 0,
        ];
        assert_eq!(
            parse_credentials(&password).unwrap(),
            Credentials::Password {
                username: "iggy".into(),
                password: b"pass".to_vec()
            }
        );
        let token = [3, b't', b'o', b'k', 0, 0, 0, 0];
        assert_eq!(
            parse_credentials(&token).unwrap(),
            Credentials::Token("tok".into())
        );
        assert!(parse_credentials(&[3, b't', b'o']).is_err());
        assert!(parse_credentials(&[]).is_err());
    }

    #[test]
    fn token_expiry_and_listing_follow_the_client() {
        let mut body = vec![2, b't', b'1'];
        body.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            parse_create_token(&body).unwrap(),
            ("t1".into(), TokenExpiry::Never)
        );
        body[3..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_create_token(&body).unwrap().1, TokenExpiry::Never);
        body[3..].copy_from_slice(&5_000_000u64.to_le_bytes());
        assert_eq!(
            parse_create_token(&body).unwrap().1,
            TokenExpiry::After(5_000_000)
        );
        let mut user = User {
            id: 1,
            username: "bob".into(),
            password_hash: "h".into(),
            status: UserStatus::Active,
            permissions: None,
            created_at: 9,
            tokens: BTreeMap::new(),
        };
        user.tokens.insert(
            "t1".into(),
            galgo_replica::metadata::Token {
                name: "t1".into(),
                token_hash: "x".into(),
                expires_at: None,
            },
        );
        assert_eq!(tokens(&user), vec![2, b't', b'1', 0, 0, 0, 0, 0, 0, 0, 0]);
        let details = user_details(&user);
        assert_eq!(
            details,
            [
                &[1u8, 0, 0, 0][..],
                &9u64.to_le_bytes(),
                &[1, 3, b'b', b'o', b'b', 0, 0, 0, 0, 0, 0, 0, 0]
            ]
            .concat()
        );
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
        assert_eq!(token_hash("abc").len(), 64);
    }
}
