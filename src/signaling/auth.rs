//! Authorization, protocol version 2 (docs/protocol.md#authorization-protocol-version-2): which offers
//! may open a session and with which role, the device nonce that makes a
//! captured offer useless two minutes later, the session key, and the `mac`
//! on every later message of a signed session.
//!
//! Invariants: everything here is pure (no I/O, no clock: `now` comes in);
//! the offer check runs before any peer connection exists; signatures and
//! macs are compared in constant time (`Mac::verify_slice`); no error, log
//! line or `Debug` output carries a secret. An `open` device (set
//! explicitly by its operator) grants [`Role::Control`] to every offer,
//! whatever `auth` it carries, and its sessions have no key.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::control::config::Role;
use crate::logtext::clip;

type HmacSha256 = Hmac<Sha256>;

/// First line of an offer signature; the version is in the name.
pub const OFFER_CONTEXT: &str = "campeer-offer-v2";
/// First line of the session key derivation.
pub const SESSION_CONTEXT: &str = "campeer-session-v2";
/// First line of every message `mac`.
pub const MESSAGE_CONTEXT: &str = "campeer-msg-v2";
/// First line of the device's own broker password.
pub const MQTT_CONTEXT: &str = "campeer-mqtt-v2";
/// First line of an `ice_request` signature (section 8).
pub const ICE_REQUEST_CONTEXT: &str = "campeer-ice-v2";
/// First line of the `ice` reply's key K_ice.
pub const ICE_KEY_CONTEXT: &str = "campeer-ice-key-v2";
/// First line of each block of the `ice` reply's keystream.
pub const ICE_STREAM_CONTEXT: &str = "campeer-ice-stream-v2";
/// How long one nonce is the current one.
pub const NONCE_PERIOD: Duration = Duration::from_secs(60);
/// Most sids remembered as used (bounded by the offer rate long before).
pub const USED_SIDS_MAX: usize = 4096;

/// One access key: its id, secret and highest role.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: String,
    pub secret: Vec<u8>,
    pub role: Role,
}

// Hand-written: the secret stays out of logs.
impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The `auth` object of an offer, as the signaling layer parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferAuthFields {
    /// The key id (`auth.key`).
    pub key: String,
    /// The claimed role (`auth.role`), exactly as sent: it is signed.
    pub role: String,
    /// The device nonce signed over; `None` for a version-1 `auth`.
    pub nonce: Option<String>,
    /// base64url (no padding) HMAC-SHA256 (`auth.sig`).
    pub sig: String,
}

/// Why an offer was refused. The signaling layer answers all of them with
/// `unauthorized`; the distinct messages are for the device's log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("offer has no auth but the device requires signed offers")]
    Missing,
    #[error("key {}: auth has no nonce (a version-1 signature); sign over the device's nonce (protocol 2)", clip(key))]
    NoNonce { key: String },
    #[error("unknown access key {}", clip(key))]
    UnknownKey { key: String },
    #[error(
        "key {}: role {} is neither \"view\" nor \"control\"",
        clip(key),
        clip(role)
    )]
    BadRole { key: String, role: String },
    #[error(
        "key {}: sig is not 43 characters of base64url without padding",
        clip(key)
    )]
    MalformedSignature { key: String },
    #[error("key {}: signature does not match", clip(key))]
    BadSignature { key: String },
    #[error("key {}: the nonce is unknown or expired; sign over the nonce in the device's current status", clip(key))]
    StaleNonce { key: String },
    #[error("key {}: role {role} is above the key's highest role {max}", clip(key))]
    RoleNotAllowed { key: String, role: Role, max: Role },
}

impl AuthError {
    /// The text sent back to the viewer: fixed per cause, so nothing the
    /// sender chose (its key id, its role text) is echoed to the broker.
    /// The [`Display`](fmt::Display) text, with the key, is for the log
    /// only, through [`crate::logtext::clip`].
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::Missing => "this device requires signed offers (auth)",
            AuthError::NoNonce { .. } => {
                "auth has no nonce; sign over the nonce in the device's status"
            }
            AuthError::UnknownKey { .. } => "the access key is not valid",
            AuthError::BadRole { .. } => "the role must be \"view\" or \"control\"",
            AuthError::MalformedSignature { .. } => "auth.sig is malformed",
            AuthError::BadSignature { .. } => "the signature does not match",
            AuthError::StaleNonce { .. } => {
                "the nonce is unknown or expired; sign over the nonce in the device's current status"
            }
            AuthError::RoleNotAllowed { .. } => "this key may not take that role",
        }
    }

    /// The key id the offer named, if any (for a clipped log line).
    pub fn key(&self) -> Option<&str> {
        match self {
            AuthError::Missing => None,
            AuthError::NoNonce { key }
            | AuthError::UnknownKey { key }
            | AuthError::BadRole { key, .. }
            | AuthError::MalformedSignature { key }
            | AuthError::BadSignature { key }
            | AuthError::StaleNonce { key }
            | AuthError::RoleNotAllowed { key, .. } => Some(key),
        }
    }
}

/// The `auth` of an `ice_request` (section 8): no role, no SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceAuthFields {
    pub key: String,
    pub nonce: String,
    pub sig: String,
}

/// What an authorized `ice_request` gets: the key that asked and K_ice
/// (both `None` on an open device, which answers in clear).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceGrant {
    pub key_id: Option<String>,
    pub key: Option<SessionKey>,
}

/// What an authorized offer grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// The verified key (`None` on an open device).
    pub key_id: Option<String>,
    /// The session key (`None` on an open device).
    pub session_key: Option<SessionKey>,
    /// The nonce the offer was signed over (`None` on an open device).
    pub nonce: Option<String>,
    /// The offer's signature text (`None` on an open device).
    pub sig: Option<String>,
}

/// The device nonce: the current one and the one before it.
#[derive(Clone, Debug)]
pub struct Nonces {
    current: String,
    previous: Option<String>,
    since_us: u64,
}

impl Nonces {
    /// Starts with a nonce made of `bytes` (16 random bytes) at `now_us`.
    pub fn new(bytes: [u8; 16], now_us: u64) -> Self {
        Nonces {
            current: URL_SAFE_NO_PAD.encode(bytes),
            previous: None,
            since_us: now_us,
        }
    }

    /// The nonce the status carries.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Whether an offer may be signed over `nonce`.
    pub fn accepts(&self, nonce: &str) -> bool {
        self.current == nonce || self.previous.as_deref() == Some(nonce)
    }

    /// Whether the current nonce has served its period at `now_us`.
    pub fn due(&self, now_us: u64) -> bool {
        now_us.saturating_sub(self.since_us) >= NONCE_PERIOD.as_micros() as u64
    }

    /// Makes `bytes` the current nonce; the current one becomes the previous.
    pub fn rotate(&mut self, bytes: [u8; 16], now_us: u64) {
        let next = URL_SAFE_NO_PAD.encode(bytes);
        self.previous = Some(std::mem::replace(&mut self.current, next));
        self.since_us = now_us;
    }
}

/// Which way a message goes, as in the `mac` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Viewer to device.
    In,
    /// Device to viewer.
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Context of relay PIN encryption and relay macs (docs/protocol.md).
const RELAY_CONTEXT: &str = "campeer-relay-v2";

/// A session's key K (32 bytes); macs every message after the offer.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// K = HMAC(secret, "campeer-session-v2\n" + sig).
    pub fn derive(secret: &[u8], sig: &str) -> SessionKey {
        let mut mac = hmac(secret);
        mac.update(SESSION_CONTEXT.as_bytes());
        mac.update(b"\n");
        mac.update(sig.as_bytes());
        SessionKey(mac.finalize().into_bytes().into())
    }

    fn hmac(&self, dir: Direction, kind: &str, body: &str) -> HmacSha256 {
        let mut mac = hmac(&self.0);
        for part in [MESSAGE_CONTEXT, dir.as_str(), kind] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac.update(body.as_bytes());
        mac
    }

    /// The `mac` of a message of type `kind` with `body` going `dir`.
    pub fn mac(&self, dir: Direction, kind: &str, body: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.hmac(dir, kind, body).finalize().into_bytes())
    }

    /// Whether `mac` is right for the message, in constant time.
    pub fn verify(&self, dir: Direction, kind: &str, body: &str, mac: Option<&str>) -> bool {
        let Some(bytes) = mac.and_then(decode_sig) else {
            return false;
        };
        self.hmac(dir, kind, body).verify_slice(&bytes).is_ok()
    }

    /// K_ice = HMAC(secret, "campeer-ice-key-v2\n" + sig), the key of an
    /// `ice` reply (section 8); its `mac` is made like any other message's.
    pub fn derive_ice(secret: &[u8], sig: &str) -> SessionKey {
        let mut mac = hmac(secret);
        mac.update(ICE_KEY_CONTEXT.as_bytes());
        mac.update(b"\n");
        mac.update(sig.as_bytes());
        SessionKey(mac.finalize().into_bytes().into())
    }

    /// XORs `data` with the `ice` reply's keystream for `sid`: block i is
    /// HMAC(K, "campeer-ice-stream-v2\n" + sid + "\n" + i). The same call
    /// seals and opens.
    pub fn ice_stream_xor(&self, sid: &str, data: &mut [u8]) {
        for (i, chunk) in data.chunks_mut(32).enumerate() {
            let mut mac = hmac(&self.0);
            for part in [ICE_STREAM_CONTEXT, sid] {
                mac.update(part.as_bytes());
                mac.update(b"\n");
            }
            mac.update(i.to_string().as_bytes());
            let block = mac.finalize().into_bytes();
            for (b, k) in chunk.iter_mut().zip(block.iter()) {
                *b ^= k;
            }
        }
    }

    fn relay_hmac(&self, parts: &[&str]) -> HmacSha256 {
        let mut mac = hmac(&self.0);
        mac.update(RELAY_CONTEXT.as_bytes());
        for p in parts {
            mac.update(b"\n");
            mac.update(p.as_bytes());
        }
        mac
    }

    /// A relay PIN (at most 32 bytes) encrypted for the viewer of `sid`:
    /// b64u(PIN XOR HMAC(K, "campeer-relay-v2\n" + sid)). `None` if longer.
    pub fn seal_pin(&self, sid: &str, pin: &str) -> Option<String> {
        self.pin_pad(sid, pin.as_bytes())
            .map(|b| URL_SAFE_NO_PAD.encode(b))
    }

    /// The PIN back from [`SessionKey::seal_pin`]'s text.
    pub fn open_pin(&self, sid: &str, sealed: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        String::from_utf8(self.pin_pad(sid, &bytes)?).ok()
    }

    fn pin_pad(&self, sid: &str, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() > 32 {
            return None;
        }
        let pad = self.relay_hmac(&[sid]).finalize().into_bytes();
        Some(data.iter().zip(pad.iter()).map(|(a, b)| a ^ b).collect())
    }

    /// The `mac` of a relay object: b64u(HMAC(K, "campeer-relay-v2\n" +
    /// janus + "\n" + mountpoint + "\n" + pin_x)).
    pub fn relay_mac(&self, janus: &str, mountpoint: u64, pin_x: &str) -> String {
        let m = mountpoint.to_string();
        URL_SAFE_NO_PAD.encode(self.relay_hmac(&[janus, &m, pin_x]).finalize().into_bytes())
    }

    /// Whether a relay object's `mac` is right, in constant time.
    pub fn verify_relay(&self, janus: &str, mountpoint: u64, pin_x: &str, mac: &str) -> bool {
        let Some(bytes) = decode_sig(mac) else {
            return false;
        };
        let m = mountpoint.to_string();
        self.relay_hmac(&[janus, &m, pin_x])
            .verify_slice(&bytes)
            .is_ok()
    }
}

/// Decides whether an offer may open a session, and its role; holds the
/// device nonce and the sids already used.
pub struct OfferAuthorizer {
    open: bool,
    keys: HashMap<String, KeyEntry>,
    nonces: Nonces,
    /// sid -> nonce of the accepted offer that opened a session on it.
    used: HashMap<String, String>,
}

// Hand-written: the secrets stay out of logs.
impl fmt::Debug for OfferAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfferAuthorizer")
            .field("mode", &self.mode())
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl OfferAuthorizer {
    /// An authorizer that accepts every offer as `control`.
    pub fn open(nonce: [u8; 16], now_us: u64) -> Self {
        OfferAuthorizer {
            open: true,
            keys: HashMap::new(),
            nonces: Nonces::new(nonce, now_us),
            used: HashMap::new(),
        }
    }

    /// A signed device with `keys` (none: every offer is refused).
    pub fn signed(keys: Vec<KeyEntry>, nonce: [u8; 16], now_us: u64) -> Self {
        let mut a = OfferAuthorizer {
            open: false,
            keys: HashMap::new(),
            nonces: Nonces::new(nonce, now_us),
            used: HashMap::new(),
        };
        a.set_keys(keys);
        a
    }

    /// Replaces the key set (keys added or revoked while running).
    pub fn set_keys(&mut self, keys: Vec<KeyEntry>) {
        self.keys = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
    }

    /// The key ids, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether key `id` exists now.
    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Whether a session opened by key `id` with `role`, whose key was
    /// derived from the offer signature `sig`, may go on under the current
    /// keys: the key still exists with the same secret (a key revoked and
    /// added again under its name has a new one) and its highest role is
    /// still at least `role`.
    pub fn still_allows(&self, id: &str, role: Role, sig: &str, session_key: &SessionKey) -> bool {
        self.keys
            .get(id)
            .is_some_and(|k| role <= k.role && SessionKey::derive(&k.secret, sig) == *session_key)
    }

    /// `"open"` or `"signed"`, as in presence (`auth`).
    pub fn mode(&self) -> &'static str {
        if self.open {
            "open"
        } else {
            "signed"
        }
    }

    /// Open access: no auth, no macs.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The nonce for the status (`None` on an open device).
    pub fn nonce(&self) -> Option<&str> {
        (!self.open).then(|| self.nonces.current())
    }

    /// Whether the nonce should be replaced at `now_us`.
    pub fn nonce_due(&self, now_us: u64) -> bool {
        !self.open && self.nonces.due(now_us)
    }

    /// Replaces the nonce and forgets sids whose nonce is no longer accepted.
    pub fn rotate_nonce(&mut self, bytes: [u8; 16], now_us: u64) {
        self.nonces.rotate(bytes, now_us);
        let nonces = &self.nonces;
        self.used.retain(|_, n| nonces.accepts(n));
    }

    /// Whether an accepted offer already opened a session on `sid` (while
    /// its nonce is still accepted): a new session there is a replay.
    pub fn sid_used(&self, sid: &str) -> bool {
        self.used.contains_key(sid)
    }

    /// Remembers that `grant` opened a session on `sid`. False when the
    /// table of used sids is full (the caller refuses the session).
    pub fn record_session(&mut self, sid: &str, grant: &Grant) -> bool {
        let Some(nonce) = &grant.nonce else {
            return true;
        };
        if self.used.len() >= USED_SIDS_MAX && !self.used.contains_key(sid) {
            return false;
        }
        self.used.insert(sid.to_owned(), nonce.clone());
        true
    }

    /// What this offer grants, or why it may not open a session.
    ///
    /// Checks, in order: `auth` present with a nonce, key known, signature
    /// well-formed and matching (constant time), nonce current or
    /// previous, role known and within the key's highest role.
    pub fn authorize(
        &self,
        device_id: &str,
        sid: &str,
        sdp: &str,
        auth: Option<&OfferAuthFields>,
    ) -> Result<Grant, AuthError> {
        if self.open {
            return Ok(Grant {
                role: Role::Control,
                key_id: None,
                session_key: None,
                nonce: None,
                sig: None,
            });
        }
        let auth = auth.ok_or(AuthError::Missing)?;
        let key_err = || auth.key.clone();
        let nonce = auth
            .nonce
            .as_deref()
            .ok_or_else(|| AuthError::NoNonce { key: key_err() })?;
        let key = self.signed_by(&auth.key, &auth.sig, nonce, |secret| {
            offer_mac(secret, device_id, sid, &auth.role, nonce, sdp)
        })?;
        let role: Role = auth.role.parse().map_err(|()| AuthError::BadRole {
            key: key_err(),
            role: auth.role.clone(),
        })?;
        if role > key.role {
            return Err(AuthError::RoleNotAllowed {
                key: key_err(),
                role,
                max: key.role,
            });
        }
        Ok(Grant {
            role,
            key_id: Some(auth.key.clone()),
            session_key: Some(SessionKey::derive(&key.secret, &auth.sig)),
            nonce: Some(nonce.to_owned()),
            sig: Some(auth.sig.clone()),
        })
    }

    /// The key `key_id` if `sig` is its HMAC as `mac_of(secret)` computes
    /// it (compared in constant time) and `nonce` is current or previous;
    /// the checks every signed request passes, in this order.
    fn signed_by(
        &self,
        key_id: &str,
        sig: &str,
        nonce: &str,
        mac_of: impl FnOnce(&[u8]) -> HmacSha256,
    ) -> Result<&KeyEntry, AuthError> {
        let key_err = || key_id.to_owned();
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| AuthError::UnknownKey { key: key_err() })?;
        let sig =
            decode_sig(sig).ok_or_else(|| AuthError::MalformedSignature { key: key_err() })?;
        mac_of(&key.secret)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature { key: key_err() })?;
        if !self.nonces.accepts(nonce) {
            return Err(AuthError::StaleNonce { key: key_err() });
        }
        Ok(key)
    }

    /// Who may have ICE servers (section 8): on an open device anyone; on
    /// a signed one, an `ice_request` whose `auth` names a key and is
    /// signed over `sid` and a current or previous nonce. Checked like an
    /// offer, in constant time; the errors are the offer's.
    pub fn authorize_ice(
        &self,
        device_id: &str,
        sid: &str,
        auth: Option<&IceAuthFields>,
    ) -> Result<IceGrant, AuthError> {
        if self.open {
            return Ok(IceGrant {
                key_id: None,
                key: None,
            });
        }
        let auth = auth.ok_or(AuthError::Missing)?;
        let key = self.signed_by(&auth.key, &auth.sig, &auth.nonce, |secret| {
            ice_request_mac(secret, device_id, sid, &auth.nonce)
        })?;
        Ok(IceGrant {
            key_id: Some(auth.key.clone()),
            key: Some(SessionKey::derive_ice(&key.secret, &auth.sig)),
        })
    }

    /// Remembers `sid` as used by an `ice_request` signed over `nonce`, so
    /// that neither an offer nor another request may use it. False when
    /// the table of used sids is full.
    pub fn record_ice_sid(&mut self, sid: &str, nonce: &str) -> bool {
        if self.used.len() >= USED_SIDS_MAX && !self.used.contains_key(sid) {
            return false;
        }
        self.used.insert(sid.to_owned(), nonce.to_owned());
        true
    }

    /// Whether `password` is key `id`'s password for the device's own
    /// broker (and the page's `ice.json`), in constant time.
    pub fn check_password(&self, device_id: &str, id: &str, password: &str) -> bool {
        let Some(key) = self.keys.get(id) else {
            return false;
        };
        let Some(given) = decode_sig(password) else {
            return false;
        };
        mqtt_mac(&key.secret, device_id)
            .verify_slice(&given)
            .is_ok()
    }
}

/// `sig` for an offer: b64u(HMAC(secret, "campeer-offer-v2\n" + device_id +
/// "\n" + sid + "\n" + role + "\n" + nonce + "\n" + sdp)).
pub fn sign(
    secret: &[u8],
    device_id: &str,
    sid: &str,
    role: &str,
    nonce: &str,
    sdp: &str,
) -> String {
    URL_SAFE_NO_PAD.encode(
        offer_mac(secret, device_id, sid, role, nonce, sdp)
            .finalize()
            .into_bytes(),
    )
}

/// `sig` for an `ice_request`: b64u(HMAC(secret, "campeer-ice-v2\n" +
/// device_id + "\n" + sid + "\n" + nonce)).
pub fn sign_ice(secret: &[u8], device_id: &str, sid: &str, nonce: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        ice_request_mac(secret, device_id, sid, nonce)
            .finalize()
            .into_bytes(),
    )
}

fn ice_request_mac(secret: &[u8], device_id: &str, sid: &str, nonce: &str) -> HmacSha256 {
    let mut mac = hmac(secret);
    for part in [ICE_REQUEST_CONTEXT, device_id, sid] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.update(nonce.as_bytes());
    mac
}

/// The device's own broker password for a key:
/// b64u(HMAC(secret, "campeer-mqtt-v2\n" + device_id)).
pub fn key_password(secret: &[u8], device_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(mqtt_mac(secret, device_id).finalize().into_bytes())
}

/// Whether `password` is the broker password of the key with `secret`, in
/// constant time.
pub fn password_matches(secret: &[u8], device_id: &str, password: &str) -> bool {
    decode_sig(password)
        .is_some_and(|given| mqtt_mac(secret, device_id).verify_slice(&given).is_ok())
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn mqtt_mac(secret: &[u8], device_id: &str) -> HmacSha256 {
    let mut mac = hmac(secret);
    mac.update(MQTT_CONTEXT.as_bytes());
    mac.update(b"\n");
    mac.update(device_id.as_bytes());
    mac
}

fn offer_mac(
    secret: &[u8],
    device_id: &str,
    sid: &str,
    role: &str,
    nonce: &str,
    sdp: &str,
) -> HmacSha256 {
    let mut mac = hmac(secret);
    for part in [OFFER_CONTEXT, device_id, sid, role, nonce] {
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
mod tests;
