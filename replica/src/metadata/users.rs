//! Users, their permissions and their personal access tokens. Passwords and tokens are stored
//! only as the hashes the gateway computed before proposing the operation; the gateway checks
//! a login against them. User 0, created first, is root: it keeps every permission and cannot
//! be deleted or deactivated.

use std::collections::BTreeMap;

use super::error::MetadataError;
use super::names::{lowest_free_id, validate_name, Ident};
use super::ops::{MetadataOp, UserStatus, HASH_LEN_MAX};
use super::permissions::Permissions;
use super::{Applied, Metadata};

pub const ROOT_USER_ID: u32 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub username: String,
    pub password_hash: String,
    pub status: UserStatus,
    pub permissions: Option<Permissions>,
    pub created_at: u64,
    pub tokens: BTreeMap<String, Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub token_hash: String,
    /// µs on the prepare clock; `None` never expires.
    pub expires_at: Option<u64>,
}

impl User {
    /// Whether the user may do `action` (an inactive user may do nothing).
    pub fn allows(&self, action: super::Action) -> bool {
        self.status == UserStatus::Active
            && (self.id == ROOT_USER_ID
                || self.permissions.as_ref().is_some_and(|p| p.allows(action)))
    }
}

fn validate_hash(hash: &str) -> Result<(), MetadataError> {
    if hash.is_empty() || hash.len() > HASH_LEN_MAX {
        return Err(MetadataError::InvalidValue(format!(
            "a hash of {} bytes (1 to {HASH_LEN_MAX})",
            hash.len()
        )));
    }
    Ok(())
}

impl Metadata {
    pub fn user_id(&self, user: &Ident) -> Result<u32, MetadataError> {
        super::names::find(&self.users, user, |u| &u.username)
            .map(|u| u.id)
            .ok_or_else(|| MetadataError::UserNotFound(user.to_string()))
    }

    pub fn user(&self, user: &Ident) -> Result<&User, MetadataError> {
        let id = self.user_id(user)?;
        Ok(&self.users[&id])
    }

    /// The active user a token hash belongs to, if the token has not expired at `now`.
    pub fn user_by_token(&self, token_hash: &str, now: u64) -> Option<&User> {
        self.users.values().find(|u| {
            u.status == UserStatus::Active
                && u.tokens
                    .values()
                    .any(|t| t.token_hash == token_hash && t.expires_at.is_none_or(|e| now < e))
        })
    }

    pub(super) fn apply_user_op(
        &mut self,
        op: &MetadataOp,
        timestamp: u64,
    ) -> Result<Applied, MetadataError> {
        match op {
            MetadataOp::CreateUser {
                username,
                password_hash,
                status,
                permissions,
            } => {
                validate_name(username)?;
                validate_hash(password_hash)?;
                if self.users.values().any(|u| u.username == *username) {
                    return Err(MetadataError::UsernameTaken(username.clone()));
                }
                let id = lowest_free_id(&self.users, self.limits.users_max)
                    .ok_or_else(|| MetadataError::LimitReached("users".to_string()))?;
                // Root is whoever is created first; it always holds every permission.
                let (status, permissions) = if id == ROOT_USER_ID {
                    (UserStatus::Active, Some(Permissions::all()))
                } else {
                    (*status, permissions.clone())
                };
                self.users.insert(
                    id,
                    User {
                        id,
                        username: username.clone(),
                        password_hash: password_hash.clone(),
                        status,
                        permissions,
                        created_at: timestamp,
                        tokens: BTreeMap::new(),
                    },
                );
                Ok(Applied::UserCreated { id })
            }
            MetadataOp::UpdateUser {
                user,
                username,
                status,
            } => {
                let id = self.user_id(user)?;
                if let Some(username) = username {
                    validate_name(username)?;
                    if self
                        .users
                        .values()
                        .any(|u| u.username == *username && u.id != id)
                    {
                        return Err(MetadataError::UsernameTaken(username.clone()));
                    }
                }
                if id == ROOT_USER_ID && *status == Some(UserStatus::Inactive) {
                    return Err(MetadataError::RootProtected);
                }
                let stored = self.users.get_mut(&id).expect("resolved");
                if let Some(username) = username {
                    stored.username = username.clone();
                }
                if let Some(status) = status {
                    stored.status = *status;
                }
                Ok(Applied::Done)
            }
            MetadataOp::DeleteUser { user } => {
                let id = self.user_id(user)?;
                if id == ROOT_USER_ID {
                    return Err(MetadataError::RootProtected);
                }
                self.users.remove(&id);
                Ok(Applied::Done)
            }
            MetadataOp::UpdatePermissions { user, permissions } => {
                let id = self.user_id(user)?;
                if id == ROOT_USER_ID {
                    return Err(MetadataError::RootProtected);
                }
                self.users.get_mut(&id).expect("resolved").permissions = permissions.clone();
                Ok(Applied::Done)
            }
            MetadataOp::ChangePassword {
                user,
                password_hash,
            } => {
                validate_hash(password_hash)?;
                let id = self.user_id(user)?;
                self.users.get_mut(&id).expect("resolved").password_hash = password_hash.clone();
                Ok(Applied::Done)
            }
            MetadataOp::CreateToken {
                user,
                name,
                token_hash,
                expires_at,
            } => {
                validate_name(name)?;
                validate_hash(token_hash)?;
                if expires_at.is_some_and(|e| e <= timestamp) {
                    return Err(MetadataError::InvalidValue(
                        "a token that has already expired".to_string(),
                    ));
                }
                let id = self.user_id(user)?;
                if self
                    .users
                    .values()
                    .any(|u| u.tokens.values().any(|t| t.token_hash == *token_hash))
                {
                    return Err(MetadataError::InvalidValue(
                        "a token with this hash exists".to_string(),
                    ));
                }
                let tokens = &mut self.users.get_mut(&id).expect("resolved").tokens;
                if tokens.contains_key(name) {
                    return Err(MetadataError::TokenNameTaken(name.clone()));
                }
                if tokens.len() as u32 >= self.limits.tokens_per_user_max {
                    return Err(MetadataError::LimitReached(format!(
                        "tokens per user ({})",
                        self.limits.tokens_per_user_max
                    )));
                }
                tokens.insert(
                    name.clone(),
                    Token {
                        name: name.clone(),
                        token_hash: token_hash.clone(),
                        expires_at: *expires_at,
                    },
                );
                Ok(Applied::Done)
            }
            MetadataOp::DeleteToken { user, name } => {
                let id = self.user_id(user)?;
                let tokens = &mut self.users.get_mut(&id).expect("resolved").tokens;
                if tokens.remove(name).is_none() {
                    return Err(MetadataError::TokenNotFound(name.clone()));
                }
                Ok(Applied::Done)
            }
            MetadataOp::DeleteExpiredTokens => {
                let mut count = 0u32;
                for user in self.users.values_mut() {
                    let before = user.tokens.len();
                    user.tokens
                        .retain(|_, t| t.expires_at.is_none_or(|e| timestamp < e));
                    count += (before - user.tokens.len()) as u32;
                }
                Ok(Applied::TokensDeleted { count })
            }
            _ => unreachable!("not a user operation: {op:?}"),
        }
    }
}
