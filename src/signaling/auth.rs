//! Offer authorization (PROTOCOL.md section 5): which offers may open a
//! session, and with which role.
//!
//! Invariants: the check is pure (no I/O after construction) and runs before
//! any peer connection exists; signatures are compared in constant time
//! (`Mac::verify_slice`); no error, log line or `Debug` output carries a
//! secret. With no keys the device is `open` and every offer gets
//! [`Role::Control`], whatever `auth` it carries.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::control::config::{AccessConfig, ConfigError, Role, MIN_SECRET_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The first line of every signed message; the version is in the name.
pub const SIGNATURE_CONTEXT: &str = "campeer-offer-v1";

/// The `auth` object of an offer, as the signaling layer parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferAuthFields {
    /// The key id (`auth.key`).
    pub key: String,
    /// The claimed role (`auth.role`), exactly as sent: it is signed.
    pub role: String,
    /// base64url (no padding) HMAC-SHA256 (`auth.sig`).
    pub sig: String,
}

/// Why an offer was refused. The signaling layer answers all of them with
/// `unauthorized`; the distinct messages are for the device's log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("offer has no auth but the device requires signed offers")]
    Missing,
    #[error("unknown access key {key:?}")]
    UnknownKey { key: String },
    #[error("key {key:?}: role {role:?} is neither \"view\" nor \"control\"")]
    BadRole { key: String, role: String },
    #[error("key {key:?}: sig is not 43 characters of base64url without padding")]
    MalformedSignature { key: String },
    #[error("key {key:?}: signature does not match")]
    BadSignature { key: String },
    #[error("key {key:?}: role {role} is above the key's highest role {max}")]
    RoleNotAllowed { key: String, role: Role, max: Role },
}

/// Why the authorizer could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("access: {0}")]
    Config(#[from] ConfigError),
    #[error("access key {key:?}: cannot read secret_file {}: {source}", path.display())]
    SecretFile {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "access key {key:?}: secret_file {} holds fewer than {} bytes",
        path.display(),
        MIN_SECRET_LEN
    )]
    SecretFileTooShort { key: String, path: PathBuf },
}

struct Key {
    secret: Vec<u8>,
    max: Role,
}

/// Decides whether an offer may open a session, and its role.
pub struct OfferAuthorizer {
    keys: HashMap<String, Key>,
}

// Hand-written: the secrets stay out of logs.
impl fmt::Debug for OfferAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("OfferAuthorizer")
            .field("mode", &self.mode())
            .field("keys", &ids)
            .finish()
    }
}

impl OfferAuthorizer {
    /// An authorizer that accepts every offer as `control`.
    pub fn open() -> Self {
        OfferAuthorizer {
            keys: HashMap::new(),
        }
    }

    /// Validates `access` and reads every `secret_file` (once, now). A file's
    /// single trailing newline (`\n` or `\r\n`) is not part of the secret.
    pub fn from_config(access: &AccessConfig) -> Result<Self, AuthSetupError> {
        access.validate()?;
        let mut keys = HashMap::with_capacity(access.keys.len());
        for key in &access.keys {
            let secret = match (&key.secret, &key.secret_file) {
                (Some(secret), _) => secret.as_bytes().to_vec(),
                (None, Some(path)) => {
                    let mut bytes =
                        std::fs::read(path).map_err(|source| AuthSetupError::SecretFile {
                            key: key.id.clone(),
                            path: path.clone(),
                            source,
                        })?;
                    if bytes.ends_with(b"\n") {
                        bytes.pop();
                        if bytes.ends_with(b"\r") {
                            bytes.pop();
                        }
                    }
                    if bytes.len() < MIN_SECRET_LEN {
                        return Err(AuthSetupError::SecretFileTooShort {
                            key: key.id.clone(),
                            path: path.clone(),
                        });
                    }
                    bytes
                }
                // validate() guarantees exactly one source.
                (None, None) => {
                    return Err(ConfigError::SecretSource { id: key.id.clone() }.into());
                }
            };
            keys.insert(
                key.id.clone(),
                Key {
                    secret,
                    max: key.role,
                },
            );
        }
        Ok(OfferAuthorizer { keys })
    }

    /// `"open"` or `"signed"`, as in presence (`auth`).
    pub fn mode(&self) -> &'static str {
        if self.is_open() {
            "open"
        } else {
            "signed"
        }
    }

    /// No keys configured.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The role of the session this offer opens, or why it may not.
    ///
    /// Checks, in order: `auth` present, key known, signature well-formed
    /// and matching (constant time), role known and within the key's
    /// highest role. The key's limit is only revealed to a signer.
    pub fn authorize(
        &self,
        device_id: &str,
        sid: &str,
        sdp: &str,
        auth: Option<&OfferAuthFields>,
    ) -> Result<Role, AuthError> {
        if self.is_open() {
            return Ok(Role::Control);
        }
        let auth = auth.ok_or(AuthError::Missing)?;
        let key = self
            .keys
            .get(&auth.key)
            .ok_or_else(|| AuthError::UnknownKey {
                key: auth.key.clone(),
            })?;
        let sig = decode_sig(&auth.sig).ok_or_else(|| AuthError::MalformedSignature {
            key: auth.key.clone(),
        })?;
        mac(&key.secret, device_id, sid, &auth.role, sdp)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature {
                key: auth.key.clone(),
            })?;
        let role: Role = auth.role.parse().map_err(|()| AuthError::BadRole {
            key: auth.key.clone(),
            role: auth.role.clone(),
        })?;
        if role > key.max {
            return Err(AuthError::RoleNotAllowed {
                key: auth.key.clone(),
                role,
                max: key.max,
            });
        }
        Ok(role)
    }
}

/// `sig` for an offer: base64url without padding of
/// HMAC-SHA256(secret, "campeer-offer-v1\n" + device_id + "\n" + sid + "\n" + role + "\n" + sdp).
pub fn sign(secret: &[u8], device_id: &str, sid: &str, role: &str, sdp: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        mac(secret, device_id, sid, role, sdp)
            .finalize()
            .into_bytes(),
    )
}

fn mac(secret: &[u8], device_id: &str, sid: &str, role: &str, sdp: &str) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    for part in [SIGNATURE_CONTEXT, device_id, sid, role] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.update(sdp.as_bytes());
    mac
}

/// 32 bytes from exactly 43 base64url characters, or `None`.
fn decode_sig(sig: &str) -> Option<Vec<u8>> {
    if sig.len() != 43 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(sig).ok()?;
    (bytes.len() == 32).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::AccessKey;

    const SECRET: &str = "test-secret-0123456789";
    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";
    const SID: &str = "abcdEFGH1234";

    // Computed independently with:
    // printf 'campeer-offer-v1\ncam1\nabcdEFGH1234\ncontrol\nv=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n' \
    //   | openssl dgst -sha256 -hmac 'test-secret-0123456789' -binary | base64 | tr '+/' '-_' | tr -d '='
    const VECTOR_SIG: &str = "I366IcUgjPuLernFOOv1HONyR5al-_STRN0LDYgwzEw";

    fn key(id: &str, secret: &str, role: Role) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: Some(secret.into()),
            secret_file: None,
            role,
        }
    }

    fn authorizer() -> OfferAuthorizer {
        OfferAuthorizer::from_config(&AccessConfig {
            keys: vec![
                key("phone", SECRET, Role::Control),
                key("wall", "another-secret-abcdef", Role::View),
            ],
        })
        .expect("valid config")
    }

    fn fields(key: &str, role: &str, sig: &str) -> OfferAuthFields {
        OfferAuthFields {
            key: key.into(),
            role: role.into(),
            sig: sig.into(),
        }
    }

    #[test]
    fn sign_matches_openssl_vector() {
        assert_eq!(
            sign(SECRET.as_bytes(), "cam1", SID, "control", SDP),
            VECTOR_SIG
        );
    }

    #[test]
    fn accepts_the_vector() {
        let a = authorizer();
        assert_eq!(a.mode(), "signed");
        let auth = fields("phone", "control", VECTOR_SIG);
        assert_eq!(
            a.authorize("cam1", SID, SDP, Some(&auth)),
            Ok(Role::Control)
        );
    }

    #[test]
    fn view_role_on_a_control_key() {
        let a = authorizer();
        let sig = sign(SECRET.as_bytes(), "cam1", SID, "view", SDP);
        let auth = fields("phone", "view", &sig);
        assert_eq!(a.authorize("cam1", SID, SDP, Some(&auth)), Ok(Role::View));
    }

    #[test]
    fn every_signed_part_matters() {
        let a = authorizer();
        let auth = fields("phone", "control", VECTOR_SIG);
        let bad = |r| matches!(r, Err(AuthError::BadSignature { .. }));
        assert!(bad(a.authorize("cam2", SID, SDP, Some(&auth))));
        assert!(bad(a.authorize("cam1", "abcdEFGH1235", SDP, Some(&auth))));
        assert!(bad(a.authorize("cam1", SID, "v=0\r\n", Some(&auth))));
        // Claiming another role than the one signed.
        let other_role = fields("phone", "view", VECTOR_SIG);
        assert!(bad(a.authorize("cam1", SID, SDP, Some(&other_role))));
        // Same signature, other key.
        let other_key = fields("wall", "control", VECTOR_SIG);
        assert!(bad(a.authorize("cam1", SID, SDP, Some(&other_key))));
    }

    #[test]
    fn refusals_are_distinct() {
        let a = authorizer();
        assert_eq!(a.authorize("cam1", SID, SDP, None), Err(AuthError::Missing));
        assert_eq!(
            a.authorize(
                "cam1",
                SID,
                SDP,
                Some(&fields("tablet", "view", VECTOR_SIG))
            ),
            Err(AuthError::UnknownKey {
                key: "tablet".into()
            })
        );
        for sig in [
            "",
            "abc",
            &format!("{VECTOR_SIG}="),
            &VECTOR_SIG.replace('I', "+"),
        ] {
            assert_eq!(
                a.authorize("cam1", SID, SDP, Some(&fields("phone", "control", sig))),
                Err(AuthError::MalformedSignature {
                    key: "phone".into()
                }),
                "sig {sig:?}"
            );
        }
        // A well-signed but unknown role.
        let sig = sign(SECRET.as_bytes(), "cam1", SID, "admin", SDP);
        assert!(matches!(
            a.authorize("cam1", SID, SDP, Some(&fields("phone", "admin", &sig))),
            Err(AuthError::BadRole { .. })
        ));
        // A view key claiming control, correctly signed.
        let sig = sign(b"another-secret-abcdef", "cam1", SID, "control", SDP);
        assert_eq!(
            a.authorize("cam1", SID, SDP, Some(&fields("wall", "control", &sig))),
            Err(AuthError::RoleNotAllowed {
                key: "wall".into(),
                role: Role::Control,
                max: Role::View
            })
        );
    }

    #[test]
    fn open_mode_grants_control() {
        for a in [
            OfferAuthorizer::open(),
            OfferAuthorizer::from_config(&AccessConfig::default()).expect("empty is valid"),
        ] {
            assert_eq!(a.mode(), "open");
            assert_eq!(a.authorize("cam1", SID, SDP, None), Ok(Role::Control));
            let junk = fields("x", "view", "junk");
            assert_eq!(
                a.authorize("cam1", SID, SDP, Some(&junk)),
                Ok(Role::Control)
            );
        }
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("campeer-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("phone.key");
        std::fs::write(&path, format!("{SECRET}\r\n")).expect("write key");
        let a = OfferAuthorizer::from_config(&AccessConfig {
            keys: vec![AccessKey {
                id: "phone".into(),
                secret: None,
                secret_file: Some(path.clone()),
                role: Role::Control,
            }],
        })
        .expect("readable key file");
        let auth = fields("phone", "control", VECTOR_SIG);
        assert_eq!(
            a.authorize("cam1", SID, SDP, Some(&auth)),
            Ok(Role::Control)
        );

        std::fs::write(&path, "short\n").expect("write key");
        let err = OfferAuthorizer::from_config(&AccessConfig {
            keys: vec![AccessKey {
                id: "phone".into(),
                secret: None,
                secret_file: Some(path.clone()),
                role: Role::Control,
            }],
        })
        .expect_err("too short");
        assert!(err.to_string().contains("phone.key"), "{err}");
        assert!(!err.to_string().contains("short\n"));

        let missing = dir.join("missing.key");
        let err = OfferAuthorizer::from_config(&AccessConfig {
            keys: vec![AccessKey {
                id: "phone".into(),
                secret: None,
                secret_file: Some(missing),
                role: Role::Control,
            }],
        })
        .expect_err("missing file");
        assert!(err.to_string().contains("missing.key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_config_is_refused() {
        let err = OfferAuthorizer::from_config(&AccessConfig {
            keys: vec![key("phone", "short", Role::View)],
        })
        .expect_err("short secret");
        assert!(matches!(
            err,
            AuthSetupError::Config(ConfigError::SecretTooShort { .. })
        ));
    }

    #[test]
    fn debug_and_errors_never_show_secrets() {
        let a = authorizer();
        let shown = format!("{a:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("phone"));
        let err = a
            .authorize(
                "cam1",
                SID,
                SDP,
                Some(&fields("phone", "control", "A".repeat(43).as_str())),
            )
            .expect_err("wrong sig");
        assert!(!err.to_string().contains(SECRET));
    }
}
