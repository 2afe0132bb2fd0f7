//! Secrets the gateway makes and checks: Argon2 password hashes (salted from the OS random
//! source), random personal access tokens, and the wall-clock time tokens expire by. The
//! replicated metadata stores only hashes.

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::RngCore;

/// Random bytes in a personal access token (shown to the client as hex).
const TOKEN_BYTES: usize = 32;

/// An Argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| format!("hashing a password: {error}"))
}

/// Whether `password` matches an Argon2 PHC hash string.
pub fn password_matches(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A new personal access token: 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(token.len(), TOKEN_BYTES * 2);
    token
}

/// µs since the Unix epoch on this host's clock (token expiry; Iggy's timestamps).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_against_their_argon2_hashes() {
        let hash = hash_password(b"secret").unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(password_matches(&hash, b"secret"));
        assert!(!password_matches(&hash, b"secreT"));
        assert!(!password_matches("not a hash", b"secret"));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, hash_password(b"secret").unwrap());
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(now_us() > 1_600_000_000_000_000);
    }
}
