//! ICE servers for viewers over signaling (docs/protocol.md, "ICE servers
//! for viewers"): what a viewer that cannot reach the device's HTTP server
//! gets in answer to an `ice_request`.
//!
//! The device hands out its static `webrtc.ice_servers` and, when
//! `webrtc.turn_rest` is set, TURN credentials minted for the request in
//! the TURN REST form that coturn's `use-auth-secret` checks: user name
//! `<expiry>:<key id>`, password base64(HMAC-SHA1(shared secret, user
//! name)). The shared secret itself never leaves the device.
//!
//! On a signed device the servers travel sealed for the requesting key
//! (XOR with a keystream under K_ice, plus a `mac`); on an open device in
//! clear. Everything here is pure: the time comes in as `now_unix`.

use super::auth::{Direction, SessionKey};
use super::messages::{DeviceMessage, IceServerEntry};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::fmt;
use std::time::Duration;

/// Largest servers JSON handed out, bytes (the protocol's limit).
pub const MAX_SERVERS_JSON: usize = 4096;

/// TURN REST credentials minted per request.
#[derive(Clone)]
pub struct TurnRest {
    /// The TURN server's `turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: Vec<u8>,
    /// How long minted credentials work.
    pub lifetime: Duration,
}

// Hand-written: the shared secret stays out of logs.
impl fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// What the device hands out: its static servers and, if set, minted
/// TURN credentials.
#[derive(Clone, Debug, Default)]
pub struct IceServerSource {
    statics: Vec<IceServerEntry>,
    rest: Option<TurnRest>,
}

impl IceServerSource {
    pub fn new(statics: Vec<IceServerEntry>, rest: Option<TurnRest>) -> Self {
        IceServerSource { statics, rest }
    }

    /// The servers for `name` (a key id, or `device`) at `now_unix`, and
    /// the Unix time their credentials stop working (0: static servers
    /// only, which do not expire). Minted servers come first.
    pub fn mint(&self, name: &str, now_unix: u64) -> (Vec<IceServerEntry>, u64) {
        let mut servers = Vec::with_capacity(self.statics.len() + 1);
        let mut expires = 0;
        if let Some(rest) = &self.rest {
            expires = now_unix.saturating_add(rest.lifetime.as_secs());
            let (username, credential) = rest_credential(&rest.secret, expires, name);
            servers.push(IceServerEntry {
                urls: rest.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers.extend(self.statics.iter().cloned());
        (servers, expires)
    }
}

/// coturn's REST credential: user `<expiry>:<name>`, password
/// base64(HMAC-SHA1(secret, user)).
pub fn rest_credential(secret: &[u8], expiry: u64, name: &str) -> (String, String) {
    let user = format!("{expiry}:{name}");
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(user.as_bytes());
    let password = STANDARD.encode(mac.finalize().into_bytes());
    (user, password)
}

/// The servers' JSON, at most [`MAX_SERVERS_JSON`] bytes: servers are
/// left out from the end until it fits.
pub fn servers_json(servers: &[IceServerEntry]) -> Vec<u8> {
    let mut n = servers.len();
    loop {
        let text = serde_json::to_vec(&servers[..n]).unwrap_or_else(|_| b"[]".to_vec());
        if text.len() <= MAX_SERVERS_JSON || n == 0 {
            return text;
        }
        n -= 1;
    }
}

/// The `ice` reply for `sid`: sealed under `key` with its `mac` on a signed
/// device, in clear (no mac) when `key` is `None`.
pub fn reply(
    key: Option<&SessionKey>,
    sid: &str,
    servers: &[IceServerEntry],
    expires: u64,
) -> (DeviceMessage, Option<String>) {
    let mut json = servers_json(servers);
    let Some(key) = key else {
        let servers = serde_json::from_slice(&json).unwrap_or_default();
        let msg = DeviceMessage::Ice {
            servers_x: None,
            servers: Some(servers),
            expires,
        };
        return (msg, None);
    };
    key.ice_stream_xor(sid, &mut json);
    let msg = DeviceMessage::Ice {
        servers_x: Some(URL_SAFE_NO_PAD.encode(&json)),
        servers: None,
        expires,
    };
    let (kind, body) = msg.mac_input();
    let mac = key.mac(Direction::Out, kind, &body);
    (msg, Some(mac))
}

/// Why a viewer did not take an `ice` reply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the ice reply's mac does not verify")]
    BadMac,
    #[error("the ice reply is malformed: {0}")]
    Malformed(&'static str),
}

/// The viewer's side of [`reply`]: the servers and their expiry, only if
/// the `mac` verifies under K_ice (signed) or when in clear (`key` None).
pub fn open(
    key: Option<&SessionKey>,
    sid: &str,
    msg: &DeviceMessage,
    mac: Option<&str>,
) -> Result<(Vec<IceServerEntry>, u64), OpenError> {
    let DeviceMessage::Ice {
        servers_x,
        servers,
        expires,
    } = msg
    else {
        return Err(OpenError::Malformed("not an ice message"));
    };
    let Some(key) = key else {
        return servers
            .clone()
            .map(|s| (s, *expires))
            .ok_or(OpenError::Malformed("no servers"));
    };
    let (kind, body) = msg.mac_input();
    if !key.verify(Direction::Out, kind, &body, mac) {
        return Err(OpenError::BadMac);
    }
    let sealed = servers_x
        .as_deref()
        .ok_or(OpenError::Malformed("no servers_x"))?;
    let mut bytes = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| OpenError::Malformed("servers_x is not base64url"))?;
    if bytes.len() > MAX_SERVERS_JSON {
        return Err(OpenError::Malformed("servers_x is over 4096 bytes"));
    }
    key.ice_stream_xor(sid, &mut bytes);
    let servers = serde_json::from_slice(&bytes)
        .map_err(|_| OpenError::Malformed("servers are not an RTCIceServer array"))?;
    Ok((servers, *expires))
}

#[cfg(test)]
mod tests;
