//! `ice_request` (docs/protocol.md, "ICE servers for viewers"): a viewer
//! asks for its STUN/TURN servers before it offers. Checked like an offer
//! (signature over the sid and a current nonce, constant time), limited
//! per key, answered once per sid; the sid is then used, so neither an
//! offer nor a second request may take it. Nothing is minted for a request
//! that fails any check.

use super::SessionTable;
use crate::ratelimit::TokenBucket;
use crate::signaling::auth::IceAuthFields;
use crate::signaling::ice_servers::{self, IceServerSource};
use crate::signaling::messages::{ErrorCode, IceAuth};
use std::sync::Arc;
use tracing::{debug, info};

/// Requests one key may make: a burst, then one every few seconds. A
/// page asks once per load and keeps the answer until it expires.
const PER_KEY_BURST: u32 = 10;
const PER_KEY_PER_MINUTE: u32 = 10;
/// Most keys tracked for the limit (every one is a verified key; an open
/// device uses one bucket for everyone).
const TRACKED_KEYS_MAX: usize = 1024;

/// What the table hands out, and the wall clock minted credentials are
/// dated by (Unix seconds; a function so tests can fix it).
#[derive(Clone)]
pub struct IceService {
    pub source: IceServerSource,
    pub unix_now: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Default for IceService {
    fn default() -> Self {
        IceService {
            source: IceServerSource::default(),
            unix_now: Arc::new(crate::clock::unix_secs),
        }
    }
}

impl SessionTable {
    /// What `ice_request`s get from now on.
    pub fn set_ice_service(&mut self, service: IceService) {
        self.ice = service;
    }

    /// How many ICE server sets were handed out since start.
    pub fn ice_replies(&self) -> u64 {
        self.ice_replies
    }

    pub(super) fn ice_request(&mut self, sid: &str, auth: Option<IceAuth>, now_us: u64) {
        if self.sessions.contains_key(sid) || self.authz.sid_used(sid) {
            self.refuse(
                sid,
                ErrorCode::Unauthorized,
                "this sid was used before; pick a new sid for an ice_request",
            );
            return;
        }
        let fields = auth.map(|a| IceAuthFields {
            key: a.key,
            nonce: a.nonce,
            sig: a.sig,
        });
        let grant = match self
            .authz
            .authorize_ice(&self.device_id, sid, fields.as_ref())
        {
            Ok(g) => g,
            Err(e) => {
                self.log_refused_offer(sid, "ice_request", &e, now_us);
                self.refuse(sid, ErrorCode::Unauthorized, e.public_message());
                return;
            }
        };
        let name = grant.key_id.clone().unwrap_or_else(|| "viewer".into());
        if !self.ice_bucket(&name).try_take(now_us) {
            self.refuse(
                sid,
                ErrorCode::Busy,
                "too many ice_requests for this key; keep the servers until they expire",
            );
            return;
        }
        if let Some(f) = &fields {
            if !self.authz.record_ice_sid(sid, &f.nonce) {
                self.refuse(
                    sid,
                    ErrorCode::Busy,
                    "too many recent requests; try again shortly",
                );
                return;
            }
        }
        let (servers, expires) = self.ice.source.mint(&name, (self.ice.unix_now)());
        let (msg, mac) = ice_servers::reply(grant.key.as_ref(), sid, &servers, expires);
        self.ice_replies += 1;
        info!(%sid, key = %name, servers = servers.len(), expires, "ICE servers handed out");
        self.outbox.send(sid, msg, mac);
    }

    fn ice_bucket(&mut self, name: &str) -> &mut TokenBucket {
        if self.ice_limits.len() >= TRACKED_KEYS_MAX && !self.ice_limits.contains_key(name) {
            debug!("ice_request limits: forgetting every key's count (table full)");
            self.ice_limits.clear();
        }
        self.ice_limits.entry(name.to_owned()).or_insert_with(|| {
            // Whole tokens per second cannot say "10 a minute": the bucket
            // is refilled at 1/s and sized so a minute gives at most
            // PER_KEY_BURST + PER_KEY_PER_MINUTE.
            TokenBucket::per_minute(PER_KEY_PER_MINUTE, PER_KEY_BURST)
        })
    }
}
