//! The user and token commands of a connection: GetUser, GetUsers and
//! GetPersonalAccessTokens read the applied metadata; CreateUser, UpdateUser, DeleteUser,
//! ChangePassword, UpdatePermissions and Create/DeletePersonalAccessToken are checked here
//! (permissions, current password), hashed here (passwords and tokens never reach the
//! metadata group in clear) and committed through the metadata group.

use galgo_replica::metadata::users::User;
use galgo_replica::metadata::{Action, Applied, Ident, Metadata, MetadataOp};

use crate::codes::*;
use crate::connection::{logged_in_user, require, Connection};
use crate::credentials::{hash_password, new_token, now_us, password_matches};
use crate::frame::Request;
use crate::users::{
    parse_change_password, parse_create_token, parse_create_user, parse_delete_token,
    parse_update_permissions, parse_update_user, put_user, token_hash, tokens, user_details,
    TokenExpiry,
};
use crate::wire::{put_name, result_ok, WireError, WireReader};

/// GetUser (a user may always read itself), GetUsers, GetPersonalAccessTokens (its own).
pub(crate) fn read_users(
    request: &Request,
    metadata: &Metadata,
    me: &User,
) -> Result<Vec<u8>, WireError> {
    let mut r = WireReader::new(&request.body);
    match request.code {
        CODE_GET_USER => {
            let ident = r.identifier("user")?;
            r.finish("get user")?;
            let Ok(user) = metadata.user(&ident) else {
                // Empty: no such user (the client's Ok(None)).
                return Ok(Vec::new());
            };
            if user.id != me.id {
                require(me.allows(Action::ReadUsers))?;
            }
            Ok(user_details(user))
        }
        CODE_GET_USERS => {
            r.finish("get users")?;
            require(me.allows(Action::ReadUsers))?;
            let mut out = Vec::new();
            for user in metadata.users.values() {
                put_user(&mut out, user);
            }
            Ok(out)
        }
        CODE_GET_PERSONAL_ACCESS_TOKENS => {
            r.finish("get personal access tokens")?;
            Ok(tokens(me))
        }
        other => unreachable!("code {other} is not a user read"),
    }
}

fn hashed(password: &[u8]) -> Result<String, WireError> {
    hash_password(password).map_err(|why| WireError::new(ERROR_GENERIC, why))
}

impl Connection {
    /// A user or token write: checked on the applied metadata, then committed.
    pub(crate) fn write_user(
        &mut self,
        request: &Request,
        user_id: u32,
        username: &str,
    ) -> Result<Vec<u8>, WireError> {
        let metadata = self.metadata()?;
        let me = logged_in_user(&metadata, user_id, username)?;
        let body = &request.body;
        // The token shown once to its owner, when this request creates one.
        let mut created_token = None;
        let op = match request.operation {
            OPERATION_CREATE_USER => {
                require(me.allows(Action::ManageUsers))?;
                let create = parse_create_user(body)?;
                MetadataOp::CreateUser {
                    username: create.username,
                    password_hash: hashed(&create.password)?,
                    status: create.status,
                    permissions: create.permissions,
                }
            }
            OPERATION_UPDATE_USER => {
                require(me.allows(Action::ManageUsers))?;
                let update = parse_update_user(body)?;
                MetadataOp::UpdateUser {
                    user: update.user,
                    username: update.username,
                    status: update.status,
                }
            }
            OPERATION_DELETE_USER => {
                require(me.allows(Action::ManageUsers))?;
                let mut r = WireReader::new(body);
                let user = r.identifier("user")?;
                r.finish("delete user")?;
                MetadataOp::DeleteUser { user }
            }
            OPERATION_CHANGE_PASSWORD => {
                let (user, current, new) = parse_change_password(body)?;
                let target = metadata.user(&user).map_err(|_| {
                    WireError::new(ERROR_RESOURCE_NOT_FOUND, format!("user {user}"))
                })?;
                if target.id != me.id {
                    require(me.allows(Action::ManageUsers))?;
                }
                if !password_matches(&target.password_hash, &current) {
                    return Err(WireError::new(
                        ERROR_INVALID_CREDENTIALS,
                        "the current password does not match",
                    ));
                }
                MetadataOp::ChangePassword {
                    user: Ident::Id(target.id),
                    password_hash: hashed(&new)?,
                }
            }
            OPERATION_UPDATE_PERMISSIONS => {
                require(me.allows(Action::ManageUsers))?;
                let (user, permissions) = parse_update_permissions(body)?;
                MetadataOp::UpdatePermissions { user, permissions }
            }
            OPERATION_CREATE_PERSONAL_ACCESS_TOKEN => {
                let (name, expiry) = parse_create_token(body)?;
                let token = new_token();
                let expires_at = match expiry {
                    TokenExpiry::Never => None,
                    TokenExpiry::After(micros) => Some(now_us().saturating_add(micros)),
                };
                let op = MetadataOp::CreateToken {
                    user: Ident::Id(me.id),
                    name,
                    token_hash: token_hash(&token),
                    expires_at,
                };
                created_token = Some(token);
                op
            }
            OPERATION_DELETE_PERSONAL_ACCESS_TOKEN => MetadataOp::DeleteToken {
                user: Ident::Id(me.id),
                name: parse_delete_token(body)?,
            },
            other => unreachable!("operation {other} is not a user write"),
        };
        let applied = match self.commit_metadata(&op, request.operation)? {
            Ok(applied) => applied,
            Err(refused) => return Ok(refused),
        };
        let payload = match applied {
            Applied::UserCreated { id } => {
                let metadata = self.metadata()?;
                let user = metadata.users.get(&id).ok_or_else(|| {
                    WireError::new(ERROR_GENERIC, "the created user is not in the metadata")
                })?;
                user_details(user)
            }
            _ => match created_token {
                Some(token) => {
                    let mut out = Vec::new();
                    put_name(&mut out, &token);
                    out
                }
                None => Vec::new(),
            },
        };
        Ok(result_ok(&payload))
    }
}
