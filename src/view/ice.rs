//! The viewer's `ice_request` (docs/protocol.md, "ICE servers for
//! viewers"): before its offer, the viewer asks the device for its
//! STUN/TURN servers on a sid of their own, and uses them only if the
//! reply's `mac` verifies (signed devices) or it came in clear from an
//! open device. A device that does not know the message, refuses it or
//! does not answer in time leaves the viewer with no servers: it still
//! connects wherever a direct path exists.

use super::random_sid;
use super::signal::ViewerSignal;
use crate::signaling::auth::{sign_ice, SessionKey};
use crate::signaling::ice_servers;
use crate::signaling::messages::{DeviceMessage, IceAuth, IceServerEntry, ViewerMessage};
use std::time::Duration;
use tracing::{info, warn};

/// How long the viewer waits for the device's `ice` reply.
const ICE_WAIT: Duration = Duration::from_secs(3);

/// What the viewer got: the servers and when they expire (0: never).
pub struct IceReply {
    pub servers: Vec<IceServerEntry>,
    pub expires: u64,
}

/// Asks the device for ICE servers. `key`: the key id, its secret and the
/// device's current nonce on a signed device; `None` on an open one.
pub async fn request(
    sig: &mut ViewerSignal,
    device: &str,
    key: Option<(&str, &[u8], &str)>,
) -> Option<IceReply> {
    let sid = random_sid();
    let (auth, ice_key) = match key {
        Some((id, secret, nonce)) => {
            let s = sign_ice(secret, device, &sid, nonce);
            let k = SessionKey::derive_ice(secret, &s);
            let auth = IceAuth {
                key: id.to_owned(),
                nonce: nonce.to_owned(),
                sig: s,
            };
            (Some(auth), Some(k))
        }
        None => (None, None),
    };
    let msg = ViewerMessage::IceRequest { auth };
    let (reply, mac) = sig.ask_on_side_sid(&sid, &msg, ICE_WAIT).await?;
    match &reply {
        DeviceMessage::Ice { .. } => {}
        DeviceMessage::Error { code, message, .. } => {
            warn!(?code, "the device gave no ICE servers: {message}");
            return None;
        }
        other => {
            warn!(?other, "unexpected reply to ice_request");
            return None;
        }
    }
    match ice_servers::open(ice_key.as_ref(), &sid, &reply, mac.as_deref()) {
        Ok((servers, expires)) => {
            info!(
                servers = servers.len(),
                expires, "ICE servers from the device"
            );
            Some(IceReply { servers, expires })
        }
        Err(e) => {
            warn!("ignored the device's ICE servers: {e}");
            None
        }
    }
}
