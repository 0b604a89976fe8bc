//! WHEP and snapshot tokens: view-only bearer credentials of their own,
//! one key may have several.
//!
//! A token reads `<id>.<secret>`: `id` is 16 hex digits, public (it names
//! the token in `campeer keys token list` and `revoke`), `secret` is 32
//! random bytes in base64url. The store keeps only the SHA-256 of the
//! whole token, so the key file never holds a usable token; the token is
//! shown once, when made. A token works while its key exists: revoking
//! the key removes its tokens, revoking a token leaves the key alone.

use super::GENERATED_SECRET_BYTES;
use crate::signaling::auth::KeyEntry;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Hex digits in a token id (8 random bytes).
pub const TOKEN_ID_LEN: usize = 16;
/// Base64url characters in a token's secret part.
const TOKEN_SECRET_LEN: usize = 43;
/// Most tokens in one store (the file stays small; each check is a scan).
pub const MAX_TOKENS: usize = 256;

/// One token as the store keeps it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoredToken {
    /// Public id, 16 hex digits.
    pub id: String,
    /// The key it belongs to.
    pub key: String,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    /// When it was made, Unix seconds.
    #[serde(default)]
    pub created: u64,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A token just made: what to store, and the token to show once.
pub struct NewToken {
    pub stored: StoredToken,
    pub token: String,
}

/// Makes a token for `key`.
pub fn generate(key: &str, now_unix: u64) -> NewToken {
    let mut id = [0u8; TOKEN_ID_LEN / 2];
    let mut secret = [0u8; GENERATED_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let id = hex(&id);
    let token = format!("{id}.{}", URL_SAFE_NO_PAD.encode(secret));
    NewToken {
        stored: StoredToken {
            id,
            key: key.into(),
            sha256: hex(&Sha256::digest(token.as_bytes())),
            created: now_unix,
        },
        token,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A stored token's fields, checked when the file is read.
pub fn check_stored(t: &StoredToken) -> Result<(), String> {
    if !is_hex(&t.id, TOKEN_ID_LEN) {
        return Err(format!(
            "token id {:?} is not {TOKEN_ID_LEN} hex digits",
            t.id
        ));
    }
    if !is_hex(&t.sha256, 64) {
        return Err(format!("token {}: sha256 is not 64 hex digits", t.id));
    }
    Ok(())
}

/// The id part of a well-formed token (`None` for anything else).
pub fn token_id(token: &str) -> Option<&str> {
    let (id, secret) = token.split_once('.')?;
    let secret_ok = secret.len() == TOKEN_SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (is_hex(id, TOKEN_ID_LEN) && secret_ok).then_some(id)
}

/// The key a presented token belongs to, when it is one of `tokens` and
/// its key is among `keys` (in force now). The hash comparison takes the
/// same time wherever the first difference is.
pub fn check<'a>(tokens: &[StoredToken], keys: &'a [KeyEntry], token: &str) -> Option<&'a str> {
    let id = token_id(token)?;
    let stored = tokens.iter().find(|t| t.id == id)?;
    let given = hex(&Sha256::digest(token.as_bytes()));
    let diff = given
        .bytes()
        .zip(stored.sha256.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 || given.len() != stored.sha256.len() {
        return None;
    }
    keys.iter()
        .find(|k| k.id == stored.key)
        .map(|k| k.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Role;

    fn key(id: &str) -> KeyEntry {
        KeyEntry {
            id: id.into(),
            secret: b"0123456789abcdef0123".to_vec(),
            role: Role::Control,
        }
    }

    #[test]
    fn a_token_is_checked_by_its_hash_and_needs_its_key() {
        let a = generate("phone", 1);
        let b = generate("phone", 2);
        assert_eq!(token_id(&a.token), Some(a.stored.id.as_str()));
        assert!(
            !a.stored.sha256.contains(&a.token[17..]),
            "only the hash is kept"
        );
        check_stored(&a.stored).expect("well formed");
        let keys = vec![key("phone")];
        let tokens = vec![a.stored.clone(), b.stored.clone()];
        assert_eq!(check(&tokens, &keys, &a.token), Some("phone"));
        assert_eq!(check(&tokens, &keys, &b.token), Some("phone"));
        // One character changed in the secret.
        let mut forged = a.token.clone();
        let last = forged.pop().expect("char");
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(check(&tokens, &keys, &forged), None);
        // Another token's id with this token's secret.
        let swapped = format!("{}{}", b.stored.id, &a.token[TOKEN_ID_LEN..]);
        assert_eq!(check(&tokens, &keys, &swapped), None);
        // Revoked token; revoked key.
        assert_eq!(check(&tokens[1..], &keys, &a.token), None);
        assert_eq!(check(&tokens, &[key("tablet")], &a.token), None);
        // The old `<key>:<password>` bearer and junk are no tokens.
        for bad in ["phone:abc", "", ".", "zz.zz", &a.token[..40]] {
            assert_eq!(check(&tokens, &keys, bad), None, "{bad}");
        }
    }
}
