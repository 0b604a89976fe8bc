//! The session table: every live session by sid, the session limit, early
//! candidates, duplicate offers. One task owns it; nothing here blocks.

use crate::ratelimit::TokenBucket;
use crate::rtc::offer::{OfferError, OfferSummary};
use crate::rtc::session::{
    self, Access, SessionContext, SessionEvent, SessionHandle, SessionInput, SessionSpec,
};
use crate::signaling::auth::{OfferAuthFields, OfferAuthorizer};
use crate::signaling::messages::{
    parse_viewer_message, ByeReason, CandidateInit, DeviceMessage, ErrorCode, ViewerMessage,
    MAX_PAYLOAD,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Most candidates held for a sid with no session yet (PROTOCOL.md section 3).
pub const EARLY_CANDIDATES_MAX: usize = 64;
/// How long early candidates are held.
pub const EARLY_CANDIDATES_TTL: Duration = Duration::from_secs(10);
/// Most sids with early candidates held at once (bounds memory under a flood).
pub const EARLY_SIDS_MAX: usize = 256;

struct Early {
    /// CLOCK_MONOTONIC µs of the first candidate.
    since_us: u64,
    candidates: Vec<Option<CandidateInit>>,
}

/// Limits the table enforces.
#[derive(Clone, Debug)]
pub struct TableLimits {
    /// Most sessions, negotiating or connected.
    pub max_sessions: usize,
    /// Most sessions still negotiating (not yet connected).
    pub max_pending: usize,
    /// Largest signaling payload, bytes.
    pub max_payload: usize,
    /// New offers per second, sustained, and as a burst.
    pub offer_rate: u32,
    pub offer_burst: u32,
}

/// See the module documentation.
pub struct SessionTable {
    ctx: Arc<SessionContext>,
    authz: OfferAuthorizer,
    device_id: String,
    limits: TableLimits,
    offers: TokenBucket,
    sessions: HashMap<String, SessionHandle>,
    /// Ids of sessions that reached `connected`.
    connected: std::collections::HashSet<u64>,
    early: HashMap<String, Early>,
    next_id: u64,
    events: mpsc::Sender<SessionEvent>,
}

impl SessionTable {
    /// A table whose sessions report to `events`.
    pub fn new(
        ctx: Arc<SessionContext>,
        authz: OfferAuthorizer,
        device_id: &str,
        limits: TableLimits,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        SessionTable {
            ctx,
            authz,
            device_id: device_id.to_owned(),
            offers: TokenBucket::new(limits.offer_rate, limits.offer_burst),
            limits: TableLimits {
                max_payload: limits.max_payload.min(MAX_PAYLOAD),
                ..limits
            },
            sessions: HashMap::new(),
            connected: Default::default(),
            early: HashMap::new(),
            next_id: 1,
            events,
        }
    }

    /// Live sessions (negotiating or connected).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn refuse(&self, sid: &str, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        info!(%sid, ?code, "refused: {message}");
        self.ctx
            .outbox
            .send(sid, DeviceMessage::Error { code, message });
    }

    /// One message from a viewer on `B/session/{sid}/in` (sid already validated).
    pub fn handle_message(&mut self, sid: &str, payload: &[u8], now_us: u64) {
        if payload.len() > self.limits.max_payload {
            self.refuse(
                sid,
                ErrorCode::TooLarge,
                format!(
                    "payload is {} bytes; the limit is {}",
                    payload.len(),
                    self.limits.max_payload
                ),
            );
            return;
        }
        let msg = match parse_viewer_message(payload) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(sid, ErrorCode::BadRequest, e.to_string());
                return;
            }
        };
        match msg {
            ViewerMessage::Offer { sdp, auth } => {
                let fields = auth.map(|a| OfferAuthFields {
                    key: a.key,
                    role: a.role,
                    sig: a.sig,
                });
                self.offer(sid, sdp, fields, now_us)
            }
            ViewerMessage::Candidate { candidate } => self.candidate(sid, candidate, now_us),
            ViewerMessage::Bye => {
                if let Some(s) = self.sessions.get(sid) {
                    s.deliver(SessionInput::Bye);
                } else {
                    self.early.remove(sid);
                    debug!(%sid, "bye for no session");
                }
            }
        }
    }

    fn offer(&mut self, sid: &str, sdp: String, auth: Option<OfferAuthFields>, now_us: u64) {
        // Authorization comes first, before any state or peer connection.
        let role = match self
            .authz
            .authorize(&self.device_id, sid, &sdp, auth.as_ref())
        {
            Ok(role) => role,
            Err(e) => {
                let key = auth.as_ref().map(|a| a.key.as_str()).unwrap_or("-");
                warn!(%sid, %key, "offer not authorized: {e}");
                self.refuse(sid, ErrorCode::Unauthorized, e.to_string());
                return;
            }
        };
        let access = Access {
            role,
            key_id: auth.filter(|_| !self.authz.is_open()).map(|a| a.key),
        };
        if let Some(s) = self.sessions.get(sid) {
            if s.opening_offer == sdp {
                // QoS 1 may deliver twice: same answer, no second connection.
                match s.answer() {
                    Some(answer) => {
                        info!(%sid, "repeated offer; sending the same answer again");
                        self.ctx
                            .outbox
                            .send(sid, DeviceMessage::Answer { sdp: answer });
                    }
                    None => {
                        // Still negotiating: the session answers again once
                        // its answer is out (inputs wait for negotiation).
                        info!(%sid, "repeated offer while negotiating; will answer it again");
                        s.deliver(SessionInput::RepeatAnswer);
                    }
                }
            } else {
                s.deliver(SessionInput::Offer(sdp));
            }
            return;
        }
        if self.sessions.len() >= self.limits.max_sessions {
            self.refuse(
                sid,
                ErrorCode::Busy,
                format!(
                    "session limit reached ({} of {})",
                    self.sessions.len(),
                    self.limits.max_sessions
                ),
            );
            return;
        }
        let pending = self.sessions.len() - self.connected.len();
        if pending >= self.limits.max_pending {
            self.refuse(
                sid,
                ErrorCode::Busy,
                format!("too many sessions still negotiating ({pending}); try again shortly"),
            );
            return;
        }
        if !self.offers.try_take(now_us) {
            self.refuse(
                sid,
                ErrorCode::Busy,
                format!(
                    "offers are arriving faster than {} per second; try again shortly",
                    self.limits.offer_rate
                ),
            );
            return;
        }
        let summary = match OfferSummary::parse(&sdp) {
            Ok(s) => s,
            Err(e @ OfferError::NothingToSend) => {
                self.refuse(sid, ErrorCode::Unsupported, e.to_string());
                return;
            }
            Err(e) => {
                self.refuse(sid, ErrorCode::BadRequest, e.to_string());
                return;
            }
        };
        let early = self
            .early
            .remove(sid)
            .filter(|e| {
                now_us.saturating_sub(e.since_us) <= EARLY_CANDIDATES_TTL.as_micros() as u64
            })
            .map(|e| e.candidates)
            .unwrap_or_default();
        let id = self.next_id;
        self.next_id += 1;
        info!(%sid, id, role = access.role.as_str(), video = summary.video_h264, audio = summary.audio_opus, data = summary.data_channel,
              early_candidates = early.len(), sessions = self.sessions.len() + 1, "new session");
        let spec = SessionSpec {
            id,
            sid: sid.to_owned(),
            offer: sdp,
            summary,
            access,
            early,
        };
        let handle = session::spawn(self.ctx.clone(), spec, self.events.clone());
        self.sessions.insert(sid.to_owned(), handle);
    }

    fn candidate(&mut self, sid: &str, c: Option<CandidateInit>, now_us: u64) {
        if let Some(s) = self.sessions.get(sid) {
            s.deliver(SessionInput::Candidate(c));
            return;
        }
        self.expire(now_us);
        if !self.early.contains_key(sid) && self.early.len() >= EARLY_SIDS_MAX {
            warn!(%sid, "too many sids with early candidates; dropping");
            return;
        }
        let e = self.early.entry(sid.to_owned()).or_insert_with(|| Early {
            since_us: now_us,
            candidates: Vec::new(),
        });
        if e.candidates.len() >= EARLY_CANDIDATES_MAX {
            debug!(%sid, "early candidate limit reached; dropping");
            return;
        }
        e.candidates.push(c);
    }

    /// Drops early candidates held longer than the limit.
    pub fn expire(&mut self, now_us: u64) {
        let ttl = EARLY_CANDIDATES_TTL.as_micros() as u64;
        self.early
            .retain(|_, e| now_us.saturating_sub(e.since_us) <= ttl);
    }

    /// Number of sids with early candidates held.
    pub fn early_sids(&self) -> usize {
        self.early.len()
    }

    /// A session reported something. Returns true if the session count changed.
    pub fn handle_event(&mut self, ev: SessionEvent) -> bool {
        match ev {
            SessionEvent::Connected { id, .. } => {
                self.connected.insert(id);
                false
            }
            SessionEvent::Ended { id, sid, reason } => {
                self.connected.remove(&id);
                if self.sessions.get(&sid).is_some_and(|s| s.id == id) {
                    self.sessions.remove(&sid);
                    debug!(%sid, ?reason, sessions = self.sessions.len(), "session removed");
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Tells every session to end with `reason`.
    pub fn close_all(&mut self, reason: ByeReason) {
        for s in self.sessions.values() {
            if reason == ByeReason::Shutdown {
                s.deliver(SessionInput::Shutdown);
            } else {
                s.deliver(SessionInput::Close(reason));
            }
        }
    }
}
