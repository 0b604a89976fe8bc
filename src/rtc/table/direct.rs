//! Sessions opened by an HTTP request (WHEP, `crate::web::whep`) instead of a
//! signed MQTT offer. The request was authorized by its bearer token before
//! it got here; what remains is the table's: the same `max_sessions`,
//! `max_pending` and offer-rate limits, the same offer check, the same
//! spawner (and so the same encode-once media), and the same closing when
//! the key is revoked (`set_keys` looks at `key_id`). Refusals go out
//! through the outbox under the session's sid, like any other.

use super::SessionTable;
use crate::control::config::Role;

use crate::rtc::session::SessionInput;
use crate::signaling::auth::Grant;
use crate::signaling::messages::{CandidateInit, ErrorCode};
use tracing::debug;

impl SessionTable {
    /// Opens a `view` session for an offer that arrived over HTTP.
    /// `key_id`: the bearer's key (`None` on an open device). The sid is
    /// chosen by the caller and must not be a valid MQTT sid, so no MQTT
    /// message can ever address this session.
    pub fn open_direct(&mut self, sid: &str, sdp: String, key_id: Option<String>, now_us: u64) {
        if self.sessions.contains_key(sid) {
            self.refuse(sid, ErrorCode::BadRequest, "this session exists already");
            return;
        }
        // The key may have been revoked between the HTTP check and now.
        let key_ok = match &key_id {
            Some(id) => self.authz.has_key(id),
            None => self.authz.is_open(),
        };
        if !key_ok {
            self.refuse(sid, ErrorCode::Unauthorized, "the access key is not valid");
            return;
        }
        let Some(summary) = self.admit(sid, &sdp, now_us) else {
            return;
        };
        let grant = Grant {
            role: Role::View,
            key_id,
            session_key: None,
            nonce: None,
            sig: None,
        };
        self.start(sid, sdp, summary, grant, Vec::new());
    }

    /// Remote candidates for a direct session (bounded like MQTT ones); a
    /// sid with no session is ignored (no early candidates here: the
    /// offer always comes first).
    pub fn candidates_direct(&mut self, sid: &str, cs: Vec<Option<CandidateInit>>, now_us: u64) {
        if !self.sessions.contains_key(sid) {
            debug!(%sid, "candidates for no session; ignored");
            return;
        }
        for c in cs {
            self.candidate(sid, c, None, now_us);
        }
    }

    /// Ends a direct session as if its viewer said `bye`.
    pub fn close_direct(&mut self, sid: &str) {
        if let Some(live) = self.sessions.get(sid) {
            live.handle.deliver(SessionInput::Bye);
        }
    }
}
