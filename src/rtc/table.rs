//! The session table: every live session by sid, authorization (protocol
//! version 2: signed offers, replay refusal, the `mac` of every later
//! message), the limits, early candidates, duplicate offers. One task owns
//! it; nothing here blocks or reads a clock (`now_us` comes in), and its two
//! effects, starting a session and sending a message, go through traits, so
//! the whole decision logic is unit-tested in simulated time (table/tests.rs).

use crate::config::relay::RelayMode;
use crate::encode::pipeline::VideoCodec;
use crate::ratelimit::{LogGate, TokenBucket};
use crate::rtc::offer::{OfferError, OfferSummary};
use crate::rtc::session::{Access, Outbox, SessionEvent, SessionHandle, SessionInput, SessionSpec};
use crate::signaling::auth::{
    AuthError, Direction, Grant, KeyEntry, OfferAuthFields, OfferAuthorizer, SessionKey,
};
use crate::signaling::messages::{
    candidate_body, parse_viewer_envelope, ByeReason, CandidateInit, DeviceMessage, ErrorCode,
    RelayOffer, ViewerMessage, MAX_PAYLOAD,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Most candidates held for a sid with no session yet (docs/protocol.md#opening-a-session).
pub const EARLY_CANDIDATES_MAX: usize = 64;
/// How long early candidates are held.
pub const EARLY_CANDIDATES_TTL: Duration = Duration::from_secs(10);
/// Most sids with early candidates held at once (bounds memory under a flood).
pub const EARLY_SIDS_MAX: usize = 256;
/// Most bytes of early candidates held across every sid.
pub const EARLY_BYTES_MAX: usize = 256 * 1024;
/// Longest candidate line accepted (real ones are under 200 bytes).
pub const CANDIDATE_MAX_LEN: usize = 1024;
/// Most remote candidates one session applies; later ones are ignored.
pub const REMOTE_CANDIDATES_MAX: usize = 64;
/// Most accepted offer signatures remembered per session (renegotiations).
pub const SESSION_SIGS_MAX: usize = 64;
/// How many times the offer rate (and burst) viewers may be handed over to
/// the relay.
pub const HANDOVER_RATE_FACTOR: u32 = 10;
/// Shortest gap between two log lines about messages with a bad `mac`.
const BAD_MAC_LOG_GAP_US: u64 = 1_000_000;

/// Starts sessions: the real one spawns a task with a peer connection;
/// tests record the specs.
pub trait Spawn: Send + Sync {
    fn spawn(&self, spec: SessionSpec, events: mpsc::Sender<SessionEvent>) -> SessionHandle;
}

struct Early {
    /// CLOCK_MONOTONIC µs of the first candidate.
    since_us: u64,
    bytes: usize,
    candidates: Vec<(Option<CandidateInit>, Option<String>)>,
}

/// What the table keeps of a live session besides its handle.
struct Live {
    handle: SessionHandle,
    /// `None` on an open device.
    key: Option<SessionKey>,
    key_id: Option<String>,
    role: crate::control::config::Role,
    /// The latest accepted offer, byte for byte, and its signature.
    latest_sdp: String,
    latest_sig: Option<String>,
    /// Signatures of every accepted offer of this session.
    sigs: Vec<String>,
    remote_candidates: usize,
}

/// Where to watch, as the session table hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayTarget {
    /// Janus's HTTP API for viewers.
    pub janus: String,
    pub mountpoint: u64,
    /// The mountpoint's current PIN (ASCII, at most 32 bytes).
    pub pin: String,
    pub mode: RelayMode,
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
    spawner: Arc<dyn Spawn>,
    outbox: Arc<dyn Outbox>,
    authz: OfferAuthorizer,
    device_id: String,
    limits: TableLimits,
    offers: TokenBucket,
    sessions: HashMap<String, Live>,
    /// Ids of sessions that reached `connected`.
    connected: HashSet<u64>,
    early: HashMap<String, Early>,
    early_bytes: usize,
    next_id: u64,
    events: mpsc::Sender<SessionEvent>,
    /// Messages ignored for a missing or wrong `mac`.
    bad_macs: u64,
    bad_mac_log: LogGate,
    /// Refused offers, logged at most once a second.
    refused_log: LogGate,
    /// Keys that opened at least one session.
    used_keys: HashSet<String>,
    /// Where viewers may be handed over to, while the relay is up.
    relay: Option<RelayTarget>,
    /// Handovers allowed: ten times the offer rate, since one costs an
    /// HMAC and a message, not a peer connection (a crowd arriving at once
    /// is what the relay is for).
    handovers: TokenBucket,
    /// A viewer was handed over since [`SessionTable::take_handed_over`].
    handed_over: bool,
    /// What `ice_request`s get, their per-key limits, and how many were
    /// answered.
    ice: ice::IceService,
    ice_limits: HashMap<String, TokenBucket>,
    ice_replies: u64,
}

impl SessionTable {
    /// A table whose sessions report to `events`.
    pub fn new(
        spawner: Arc<dyn Spawn>,
        outbox: Arc<dyn Outbox>,
        authz: OfferAuthorizer,
        device_id: &str,
        limits: TableLimits,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        SessionTable {
            spawner,
            outbox,
            authz,
            device_id: device_id.to_owned(),
            offers: TokenBucket::new(limits.offer_rate, limits.offer_burst),
            limits: TableLimits {
                max_payload: limits.max_payload.min(MAX_PAYLOAD),
                ..limits
            },
            sessions: HashMap::new(),
            connected: HashSet::new(),
            early: HashMap::new(),
            early_bytes: 0,
            next_id: 1,
            events,
            bad_macs: 0,
            bad_mac_log: LogGate::new(BAD_MAC_LOG_GAP_US),
            refused_log: LogGate::new(BAD_MAC_LOG_GAP_US),
            used_keys: HashSet::new(),
            relay: None,
            handovers: TokenBucket::new(
                limits.offer_rate.saturating_mul(HANDOVER_RATE_FACTOR),
                limits.offer_burst.saturating_mul(HANDOVER_RATE_FACTOR),
            ),
            handed_over: false,
            ice: ice::IceService::default(),
            ice_limits: HashMap::new(),
            ice_replies: 0,
        }
    }

    /// The relay's current mountpoint, or `None` while it is down (or not
    /// configured): viewers are then served directly, within the limits.
    pub fn set_relay(&mut self, relay: Option<RelayTarget>) {
        self.relay = relay;
    }

    /// Whether a viewer was handed over since the last call.
    pub fn take_handed_over(&mut self) -> bool {
        std::mem::take(&mut self.handed_over)
    }

    /// Live sessions (negotiating or connected).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The authorizer (mode, nonce, password checks).
    pub fn authz(&self) -> &OfferAuthorizer {
        &self.authz
    }

    /// Messages ignored so far for a missing or wrong `mac`.
    pub fn bad_macs(&self) -> u64 {
        self.bad_macs
    }

    /// Whether key `id` has opened a session since start.
    pub fn key_used(&self, id: &str) -> bool {
        self.used_keys.contains(id)
    }

    /// Replaces the nonce when due; true when it changed (republish status).
    pub fn rotate_nonce_if_due(&mut self, now_us: u64, fresh: impl FnOnce() -> [u8; 16]) -> bool {
        if !self.authz.nonce_due(now_us) {
            return false;
        }
        self.authz.rotate_nonce(fresh(), now_us);
        debug!("device nonce replaced");
        true
    }

    /// New key set. A session opened with a key that is gone, whose
    /// secret changed, or whose highest role is now below the session's
    /// role is closed: a key's rights hold for its live sessions too.
    /// Returns how many were closed.
    pub fn set_keys(&mut self, keys: Vec<KeyEntry>) -> usize {
        self.authz.set_keys(keys);
        let mut closed = 0;
        for live in self.sessions.values() {
            let Some(id) = &live.key_id else { continue };
            let allowed = match (&live.key, live.sigs.first()) {
                (Some(k), Some(sig)) => self.authz.still_allows(id, live.role, sig, k),
                // Direct (WHEP) sessions: view only, keyed by the HTTP check.
                _ => self.authz.has_key(id),
            };
            if !allowed {
                let why = if self.authz.has_key(id) {
                    "its key's role or secret changed"
                } else {
                    "its key was revoked"
                };
                info!(sid = %live.handle.sid, key = %id, role = %live.role, "closing a session: {why}");
                live.handle.deliver(SessionInput::Close(ByeReason::Closed));
                closed += 1;
            }
        }
        closed
    }

    /// An error to a viewer with no session (cannot carry a mac).
    fn refuse(&self, sid: &str, code: ErrorCode, message: impl Into<String>) {
        let message = bounded_message(message.into());
        log_refusal(sid, code, &message);
        self.outbox.send(
            sid,
            DeviceMessage::Error {
                code,
                message,
                relay: None,
            },
            None,
        );
    }

    /// An error on a live session, with its mac when signed.
    fn refuse_live(&self, sid: &str, code: ErrorCode, message: impl Into<String>) {
        let message = bounded_message(message.into());
        log_refusal(sid, code, &message);
        let msg = DeviceMessage::Error {
            code,
            message,
            relay: None,
        };
        let mac = self
            .sessions
            .get(sid)
            .and_then(|l| seal(l.key.as_ref(), &msg));
        self.outbox.send(sid, msg, mac);
    }

    /// Logs a refused offer, at most once a second (a flood of forged
    /// offers must not flood the journal), with the key id it named
    /// escaped and clipped.
    fn log_refused_offer(&mut self, sid: &str, what: &str, e: &AuthError, now_us: u64) {
        if let Some(held) = self.refused_log.pass(now_us) {
            warn!(%sid, held_back = held, "{what} not authorized: {e}");
        }
    }

    /// Counts and (rate-limited) logs a message ignored for its mac.
    fn bad_mac(&mut self, sid: &str, kind: &str, now_us: u64) {
        self.bad_macs += 1;
        if self.bad_mac_log.pass(now_us).is_some() {
            warn!(%sid, kind, total = self.bad_macs, "ignored a message whose mac is missing or wrong (someone else on the broker?)");
        }
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
        let (msg, mac) = match parse_viewer_envelope(payload) {
            Ok(m) => m,
            Err(e) => {
                // Never answered on a live signed session: a forger could
                // otherwise make the device talk on someone else's session.
                if self.sessions.get(sid).is_some_and(|l| l.key.is_some()) {
                    self.bad_mac(sid, "unparsable", now_us);
                } else {
                    self.refuse(sid, ErrorCode::BadRequest, e.to_string());
                }
                return;
            }
        };
        // Mac check for everything but offers on a live signed session.
        if let Some((kind, body)) = msg.mac_input() {
            if let Some(live) = self.sessions.get(sid) {
                if let Some(key) = &live.key {
                    if !key.verify(Direction::In, kind, &body, mac.as_deref()) {
                        self.bad_mac(sid, kind, now_us);
                        return;
                    }
                }
            }
        }
        match msg {
            ViewerMessage::Offer { sdp, auth } => {
                let fields = auth.map(|a| OfferAuthFields {
                    key: a.key,
                    role: a.role,
                    nonce: a.nonce,
                    sig: a.sig,
                });
                if self.sessions.contains_key(sid) {
                    self.offer_on_live(sid, sdp, fields, now_us)
                } else {
                    self.new_session(sid, sdp, fields, now_us)
                }
            }
            ViewerMessage::Candidate { candidate } => self.candidate(sid, candidate, mac, now_us),
            ViewerMessage::IceRequest { auth } => self.ice_request(sid, auth, now_us),
            ViewerMessage::Bye => {
                if let Some(live) = self.sessions.get(sid) {
                    live.handle.deliver(SessionInput::Bye);
                } else if self.authz.is_open() {
                    self.drop_early(sid);
                    debug!(%sid, "bye for no session");
                } else {
                    // Unverifiable: it must not drop another viewer's early candidates.
                    debug!(%sid, "bye for no session; ignored");
                }
            }
        }
    }

    /// An offer for a sid with a live session: a repeat, or a renegotiation.
    fn offer_on_live(
        &mut self,
        sid: &str,
        sdp: String,
        auth: Option<OfferAuthFields>,
        now_us: u64,
    ) {
        let Some(live) = self.sessions.get(sid) else {
            return;
        };
        let sig = auth.as_ref().map(|a| a.sig.clone());
        if live.latest_sdp == sdp && live.latest_sig == sig {
            // QoS 1 may deliver twice: same answer, no second connection.
            match live.handle.answer() {
                Some(answer) => {
                    info!(%sid, "repeated offer; sending the same answer again");
                    let msg = DeviceMessage::Answer { sdp: answer };
                    let mac = seal(live.key.as_ref(), &msg);
                    self.outbox.send(sid, msg, mac);
                }
                None => {
                    // Still negotiating: the session answers again once
                    // its answer is out.
                    info!(%sid, "repeated offer while negotiating; will answer it again");
                    live.handle.deliver(SessionInput::RepeatAnswer);
                }
            }
            return;
        }
        let grant = match self
            .authz
            .authorize(&self.device_id, sid, &sdp, auth.as_ref())
        {
            Ok(g) => g,
            Err(e) => {
                self.log_refused_offer(sid, "renegotiation", &e, now_us);
                self.refuse_live(sid, ErrorCode::Unauthorized, e.public_message());
                return;
            }
        };
        if live.key.is_some() {
            let why = if grant.key_id != live.key_id || grant.role != live.role {
                Some("a renegotiation must use the session's key and role")
            } else if grant.sig.as_ref().is_some_and(|s| live.sigs.contains(s)) {
                Some("this offer was accepted before; sign a new one")
            } else if live.sigs.len() >= SESSION_SIGS_MAX {
                Some("too many renegotiations on this session; start a new one")
            } else {
                None
            };
            if let Some(why) = why {
                warn!(%sid, "renegotiation refused: {why}");
                self.refuse_live(sid, ErrorCode::Unauthorized, why);
                return;
            }
        }
        let Some(live) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(s) = &grant.sig {
            live.sigs.push(s.clone());
        }
        live.latest_sdp = sdp.clone();
        live.latest_sig = grant.sig;
        live.handle.deliver(SessionInput::Offer(sdp));
    }

    fn new_session(&mut self, sid: &str, sdp: String, auth: Option<OfferAuthFields>, now_us: u64) {
        // Authorization comes first, before any state or peer connection.
        let grant = match self
            .authz
            .authorize(&self.device_id, sid, &sdp, auth.as_ref())
        {
            Ok(g) => g,
            Err(e) => {
                self.log_refused_offer(sid, "offer", &e, now_us);
                self.refuse(sid, ErrorCode::Unauthorized, e.public_message());
                return;
            }
        };
        if self.authz.sid_used(sid) {
            warn!(%sid, "offer refused: an earlier offer already opened a session on this sid (replay?)");
            self.refuse(
                sid,
                ErrorCode::Unauthorized,
                "this sid was used by an earlier session; pick a new sid",
            );
            return;
        }
        if let Some(target) = self.relay_for(&sdp) {
            self.hand_over(sid, target, &grant, now_us);
            return;
        }
        let Some(summary) = self.admit(sid, &sdp, now_us) else {
            return;
        };
        if !self.authz.record_session(sid, &grant) {
            self.refuse(
                sid,
                ErrorCode::Busy,
                "too many recent sessions; try again shortly",
            );
            return;
        }
        let early = self.take_early(sid, grant.session_key.as_ref(), now_us);
        self.start(sid, sdp, summary, grant, early);
    }

    /// The relay to send this (authorized) offer to instead of serving it:
    /// only while the relay is up, only an offer with H.264 (the relay
    /// carries nothing else), and in `overflow` mode only when the
    /// device's own sessions are full.
    fn relay_for(&self, sdp: &str) -> Option<RelayTarget> {
        let target = self.relay.as_ref()?;
        let full = self.sessions.len() >= self.limits.max_sessions;
        if target.mode == RelayMode::Overflow && !full {
            return None;
        }
        let summary = OfferSummary::parse(sdp).ok()?;
        (summary.video_codec() == Some(VideoCodec::H264)).then(|| target.clone())
    }

    /// Refuses the offer with `busy` and where to watch instead; the PIN
    /// sealed under the session key the offer would have had.
    fn hand_over(&mut self, sid: &str, target: RelayTarget, grant: &Grant, now_us: u64) {
        if !self.handovers.try_take(now_us) {
            let why = format!(
                "offers are arriving faster than {} per second; try again shortly",
                self.limits.offer_rate.saturating_mul(HANDOVER_RATE_FACTOR)
            );
            self.refuse(sid, ErrorCode::Busy, why);
            return;
        }
        if !self.authz.record_session(sid, grant) {
            self.refuse(
                sid,
                ErrorCode::Busy,
                "too many recent sessions; try again shortly",
            );
            return;
        }
        let key = grant.session_key.as_ref();
        let offer = match key {
            Some(k) => {
                let Some(pin_x) = k.seal_pin(sid, &target.pin) else {
                    self.refuse(sid, ErrorCode::Internal, "the relay PIN is too long");
                    return;
                };
                RelayOffer {
                    mac: Some(k.relay_mac(&target.janus, target.mountpoint, &pin_x)),
                    janus: target.janus,
                    mountpoint: target.mountpoint,
                    pin: None,
                    pin_x: Some(pin_x),
                }
            }
            None => RelayOffer {
                janus: target.janus,
                mountpoint: target.mountpoint,
                pin: Some(target.pin),
                pin_x: None,
                mac: None,
            },
        };
        info!(%sid, key = grant.key_id.as_deref().unwrap_or("-"), mountpoint = offer.mountpoint,
              sessions = self.sessions.len(), mode = ?target.mode, "handed the viewer over to the relay");
        let msg = DeviceMessage::Error {
            code: ErrorCode::Busy,
            message: "watch through the relay".into(),
            relay: Some(Box::new(offer)),
        };
        let mac = seal(key, &msg);
        self.outbox.send(sid, msg, mac);
        self.handed_over = true;
    }

    /// The limits and the SDP, the last checks before a session starts:
    /// the offer's summary, or `None` when it was refused (and answered).
    fn admit(&mut self, sid: &str, sdp: &str, now_us: u64) -> Option<OfferSummary> {
        if let Some(why) = self.limit_refusal(now_us) {
            self.refuse(sid, ErrorCode::Busy, why);
            return None;
        }
        match OfferSummary::parse(sdp) {
            Ok(s) => Some(s),
            Err(e @ OfferError::NothingToSend) => {
                self.refuse(sid, ErrorCode::Unsupported, e.to_string());
                None
            }
            Err(e) => {
                self.refuse(sid, ErrorCode::BadRequest, e.to_string());
                None
            }
        }
    }

    /// Why a new session may not start now (limits), or `None`.
    fn limit_refusal(&mut self, now_us: u64) -> Option<String> {
        if self.sessions.len() >= self.limits.max_sessions {
            return Some(format!(
                "session limit reached ({} of {})",
                self.sessions.len(),
                self.limits.max_sessions
            ));
        }
        let pending = self.sessions.len() - self.connected.len();
        if pending >= self.limits.max_pending {
            return Some(format!(
                "too many sessions still negotiating ({pending}); try again shortly"
            ));
        }
        if !self.offers.try_take(now_us) {
            return Some(format!(
                "offers are arriving faster than {} per second; try again shortly",
                self.limits.offer_rate
            ));
        }
        None
    }

    fn start(
        &mut self,
        sid: &str,
        sdp: String,
        summary: OfferSummary,
        grant: Grant,
        early: Vec<Option<CandidateInit>>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(k) = &grant.key_id {
            self.used_keys.insert(k.clone());
        }
        info!(%sid, id, role = grant.role.as_str(), key = grant.key_id.as_deref().unwrap_or("-"),
              video = ?summary.video_codec(), audio = summary.audio_opus, data = summary.data_channel,
              early_candidates = early.len(), sessions = self.sessions.len() + 1, "new session");
        let spec = SessionSpec {
            id,
            sid: sid.to_owned(),
            offer: sdp.clone(),
            summary,
            access: Access {
                role: grant.role,
                key_id: grant.key_id.clone(),
            },
            key: grant.session_key.clone(),
            early,
        };
        let handle = self.spawner.spawn(spec, self.events.clone());
        self.sessions.insert(
            sid.to_owned(),
            Live {
                handle,
                key: grant.session_key,
                key_id: grant.key_id,
                role: grant.role,
                latest_sdp: sdp,
                latest_sig: grant.sig.clone(),
                sigs: grant.sig.into_iter().collect(),
                remote_candidates: 0,
            },
        );
    }

    /// The early candidates of `sid` that are fresh and, on a signed
    /// session, carry the right mac.
    fn take_early(
        &mut self,
        sid: &str,
        key: Option<&SessionKey>,
        now_us: u64,
    ) -> Vec<Option<CandidateInit>> {
        let Some(e) = self.drop_early(sid) else {
            return Vec::new();
        };
        if now_us.saturating_sub(e.since_us) > EARLY_CANDIDATES_TTL.as_micros() as u64 {
            return Vec::new();
        }
        let mut kept = Vec::with_capacity(e.candidates.len());
        for (c, mac) in e.candidates {
            let ok = key.is_none_or(|k| {
                k.verify(
                    Direction::In,
                    "candidate",
                    &candidate_body(c.as_ref()),
                    mac.as_deref(),
                )
            });
            if ok {
                kept.push(c);
            } else {
                self.bad_mac(sid, "early candidate", now_us);
            }
        }
        kept
    }

    fn drop_early(&mut self, sid: &str) -> Option<Early> {
        let e = self.early.remove(sid)?;
        self.early_bytes -= e.bytes;
        Some(e)
    }

    fn candidate(&mut self, sid: &str, c: Option<CandidateInit>, mac: Option<String>, now_us: u64) {
        let len = c.as_ref().map_or(0, |c| {
            c.candidate.len() + c.sdp_mid.as_ref().map_or(0, String::len)
        });
        if len > CANDIDATE_MAX_LEN {
            let why = format!("candidate is {len} bytes; the limit is {CANDIDATE_MAX_LEN}");
            if self.sessions.contains_key(sid) {
                self.refuse_live(sid, ErrorCode::BadRequest, why);
            } else {
                self.refuse(sid, ErrorCode::BadRequest, why);
            }
            return;
        }
        if let Some(live) = self.sessions.get_mut(sid) {
            if c.is_some() {
                if live.remote_candidates >= REMOTE_CANDIDATES_MAX {
                    debug!(%sid, "remote candidate limit reached; ignoring");
                    return;
                }
                live.remote_candidates += 1;
            }
            live.handle.deliver(SessionInput::Candidate(c));
            return;
        }
        self.expire(now_us);
        if !self.early.contains_key(sid) && self.early.len() >= EARLY_SIDS_MAX {
            warn!(%sid, "too many sids with early candidates; dropping");
            return;
        }
        let bytes = len + mac.as_ref().map_or(0, String::len) + 64;
        if self.early_bytes + bytes > EARLY_BYTES_MAX {
            warn!(%sid, "early candidates use {} bytes; dropping", self.early_bytes);
            return;
        }
        let e = self.early.entry(sid.to_owned()).or_insert_with(|| Early {
            since_us: now_us,
            bytes: 0,
            candidates: Vec::new(),
        });
        if e.candidates.len() >= EARLY_CANDIDATES_MAX {
            debug!(%sid, "early candidate limit reached; dropping");
            return;
        }
        e.candidates.push((c, mac));
        e.bytes += bytes;
        self.early_bytes += bytes;
    }

    /// Drops early candidates held longer than the limit.
    pub fn expire(&mut self, now_us: u64) {
        let ttl = EARLY_CANDIDATES_TTL.as_micros() as u64;
        let mut freed = 0;
        self.early.retain(|_, e| {
            let keep = now_us.saturating_sub(e.since_us) <= ttl;
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        self.early_bytes -= freed;
    }

    /// Number of sids with early candidates held.
    pub fn early_sids(&self) -> usize {
        self.early.len()
    }

    /// Bytes of early candidates held.
    pub fn early_bytes(&self) -> usize {
        self.early_bytes
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
                if self.sessions.get(&sid).is_some_and(|l| l.handle.id == id) {
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
        for live in self.sessions.values() {
            if reason == ByeReason::Shutdown {
                live.handle.deliver(SessionInput::Shutdown);
            } else {
                live.handle.deliver(SessionInput::Close(reason));
            }
        }
    }
}

/// The `mac` of `msg` under `key` (device to viewer), or `None` unsigned.
pub fn seal(key: Option<&SessionKey>, msg: &DeviceMessage) -> Option<String> {
    let key = key?;
    let (kind, body) = msg.mac_input();
    Some(key.mac(Direction::Out, kind, &body))
}

mod direct;
mod ice;
pub use ice::IceService;

/// Longest `message` in an `error` the device sends, characters.
const MAX_ERROR_MESSAGE: usize = 200;

/// `message` cut to [`MAX_ERROR_MESSAGE`] characters: an error quotes the
/// device's own reasons, but some (a parse error) carry a piece of what
/// the viewer sent, which must not come back at any length.
fn bounded_message(mut message: String) -> String {
    if let Some((i, _)) = message.char_indices().nth(MAX_ERROR_MESSAGE) {
        message.truncate(i);
    }
    message
}

/// Refusals of bad signatures are logged, rate-limited, where they are
/// decided; every other refusal once, here.
fn log_refusal(sid: &str, code: ErrorCode, message: &str) {
    if code == ErrorCode::Unauthorized {
        debug!(%sid, ?code, "refused: {}", crate::logtext::clip(message));
    } else {
        info!(%sid, ?code, "refused: {}", crate::logtext::clip(message));
    }
}

#[cfg(test)]
mod tests;
