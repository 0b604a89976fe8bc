//! The WHEP resources and their lifetimes, as a pure state machine: no
//! clock (`now_us` comes in), no I/O. The HTTP side asks it what to do and
//! the session table's messages for `whep:` sids come in through
//! [`Resources::on_device`].
//!
//! A resource is born by `POST /whep` ([`Resources::open`]) and waits for
//! its session's answer and local candidates (the answer goes out whole,
//! with every candidate the device gathered: clients need not trickle). It
//! ends on `DELETE`, when its session ends (bye, ICE/DTLS failure, connect
//! timeout, revoked key, shutdown), when the session refuses the offer, or
//! when no answer came within [`ANSWER_TIMEOUT`].

use crate::ratelimit::TokenBucket;
use crate::signaling::messages::{DeviceMessage, ErrorCode};
use std::collections::HashMap;
use std::time::Duration;

/// How long `POST /whep` waits for the session's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, after the answer, the device's candidate gathering may take
/// before the answer goes out with the candidates it has.
pub const GATHER_WAIT: Duration = Duration::from_secs(2);
/// Most local candidates put into one answer.
pub const LOCAL_CANDIDATES_MAX: usize = 32;
/// Largest `PATCH` body, bytes.
pub const PATCH_MAX_BYTES: usize = 16 * 1024;
/// `PATCH` requests per second per resource, sustained, and as a burst.
pub const PATCH_RATE: u32 = 5;
pub const PATCH_BURST: u32 = 20;

/// The session sid of resource `id` (`:` is never in an MQTT sid).
pub fn sid_of(id: &str) -> String {
    format!("whep:{id}")
}

/// The resource id of a WHEP session's sid.
pub fn id_of(sid: &str) -> Option<&str> {
    sid.strip_prefix("whep:")
}

/// What a waiting `POST /whep` gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer, with the device's candidates in it.
    Answer(String),
    /// The session refused the offer (or never answered).
    Refused(ErrorCode, String),
}

/// Why a `POST /whep` is refused before any session exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenRefusal {
    /// Too many resources at once (memory bound; the session limit is the
    /// table's).
    Full(usize),
}

/// Why a `PATCH` or `DELETE` is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceRefusal {
    NotFound,
    /// A bearer with another key than the resource's.
    WrongKey,
    TooLarge(usize),
    TooFast,
    /// The fragment has another ICE ufrag than the offer: an ICE restart.
    Restart,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the session's answer.
    Offered,
    /// Answered at this time; waiting for the end of gathering.
    Gathering { since_us: u64 },
    /// The answer went out.
    Live,
}

#[derive(Debug)]
struct Resource {
    key_id: Option<String>,
    /// The offer's `a=ice-ufrag`.
    ufrag: Option<String>,
    created_us: u64,
    stage: Stage,
    answer: Option<String>,
    candidates: Vec<String>,
    patches: TokenBucket,
}

/// Every WHEP resource, by id.
#[derive(Debug)]
pub struct Resources {
    map: HashMap<String, Resource>,
    max: usize,
}

impl Resources {
    /// At most `max` resources at once.
    pub fn new(max: usize) -> Self {
        Resources {
            map: HashMap::new(),
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A new resource `id` (random, from the caller) for key `key_id`,
    /// whose offer has ICE ufrag `ufrag`.
    pub fn open(
        &mut self,
        id: &str,
        key_id: Option<String>,
        ufrag: Option<String>,
        now_us: u64,
    ) -> Result<(), OpenRefusal> {
        if self.map.len() >= self.max {
            return Err(OpenRefusal::Full(self.map.len()));
        }
        self.map.insert(
            id.to_owned(),
            Resource {
                key_id,
                ufrag,
                created_us: now_us,
                stage: Stage::Offered,
                answer: None,
                candidates: Vec::new(),
                patches: TokenBucket::new(PATCH_RATE, PATCH_BURST),
            },
        );
        Ok(())
    }

    /// A message the session table sent to resource `id`'s viewer. Returns
    /// the outcome for the waiting `POST`, once there is one.
    pub fn on_device(&mut self, id: &str, msg: DeviceMessage, now_us: u64) -> Option<Outcome> {
        let r = self.map.get_mut(id)?;
        match msg {
            DeviceMessage::Answer { sdp } => {
                if matches!(r.stage, Stage::Offered) {
                    r.answer = Some(sdp);
                    r.stage = Stage::Gathering { since_us: now_us };
                }
                None
            }
            DeviceMessage::Candidate { candidate: Some(c) } => {
                if !matches!(r.stage, Stage::Live) && r.candidates.len() < LOCAL_CANDIDATES_MAX {
                    r.candidates.push(c.candidate);
                }
                None
            }
            DeviceMessage::Candidate { candidate: None } => match r.stage {
                Stage::Gathering { .. } => Some(r.go_live()),
                _ => None,
            },
            DeviceMessage::Error { code, message, .. } => {
                if matches!(r.stage, Stage::Live) {
                    // A refused candidate on a live session: it goes on.
                    return None;
                }
                self.map.remove(id);
                Some(Outcome::Refused(code, message))
            }
            DeviceMessage::Bye { reason } => {
                let live = matches!(r.stage, Stage::Live);
                self.map.remove(id);
                (!live).then(|| {
                    Outcome::Refused(
                        ErrorCode::Internal,
                        format!("the session ended: {reason:?}"),
                    )
                })
            }
            // Only ever sent on an ice_request's sid, never a resource's.
            DeviceMessage::Ice { .. } => None,
        }
    }

    /// Outcomes that are due by time: answers whose gathering took longer
    /// than [`GATHER_WAIT`] (sent with the candidates they have), and
    /// offers unanswered after [`ANSWER_TIMEOUT`] (resource dropped).
    pub fn due(&mut self, now_us: u64) -> Vec<(String, Outcome)> {
        let gather = GATHER_WAIT.as_micros() as u64;
        let answer = ANSWER_TIMEOUT.as_micros() as u64;
        let mut out = Vec::new();
        for (id, r) in self.map.iter_mut() {
            match r.stage {
                Stage::Gathering { since_us } if now_us.saturating_sub(since_us) >= gather => {
                    out.push((id.clone(), r.go_live()));
                }
                Stage::Offered if now_us.saturating_sub(r.created_us) >= answer => {
                    out.push((
                        id.clone(),
                        Outcome::Refused(ErrorCode::Internal, "no answer in time".into()),
                    ));
                }
                _ => {}
            }
        }
        for (id, o) in &out {
            if matches!(o, Outcome::Refused(..)) {
                self.map.remove(id);
            }
        }
        out
    }

    /// May the bearer of `key_id` patch resource `id` with `len` bytes
    /// now? `ufrag`: the fragment's `a=ice-ufrag`, if it has one.
    pub fn admit_patch(
        &mut self,
        id: &str,
        key_id: Option<&str>,
        len: usize,
        ufrag: Option<&str>,
        now_us: u64,
    ) -> Result<(), ResourceRefusal> {
        let r = self.owned(id, key_id)?;
        if len > PATCH_MAX_BYTES {
            return Err(ResourceRefusal::TooLarge(len));
        }
        if ufrag.is_some() && r.ufrag.is_some() && ufrag != r.ufrag.as_deref() {
            return Err(ResourceRefusal::Restart);
        }
        if !r.patches.try_take(now_us) {
            return Err(ResourceRefusal::TooFast);
        }
        Ok(())
    }

    /// Ends resource `id` for the bearer of `key_id` (`DELETE`).
    pub fn delete(&mut self, id: &str, key_id: Option<&str>) -> Result<(), ResourceRefusal> {
        self.owned(id, key_id)?;
        self.map.remove(id);
        Ok(())
    }

    /// Forgets resource `id` (its session ended); true if it was there.
    pub fn forget(&mut self, id: &str) -> bool {
        self.map.remove(id).is_some()
    }

    fn owned(&mut self, id: &str, key_id: Option<&str>) -> Result<&mut Resource, ResourceRefusal> {
        let r = self.map.get_mut(id).ok_or(ResourceRefusal::NotFound)?;
        if r.key_id.as_deref() != key_id {
            return Err(ResourceRefusal::WrongKey);
        }
        Ok(r)
    }
}

impl Resource {
    fn go_live(&mut self) -> Outcome {
        self.stage = Stage::Live;
        let answer = self.answer.take().unwrap_or_default();
        Outcome::Answer(with_candidates(
            &answer,
            &std::mem::take(&mut self.candidates),
        ))
    }
}

/// `sdp` with `candidates` (`candidate:...` lines) and
/// `a=end-of-candidates` added to its first media section (the bundle's
/// transport; the device always bundles), unless they are there already.
pub fn with_candidates(sdp: &str, candidates: &[String]) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().collect();
    let first_m = lines.iter().position(|l| l.starts_with("m="));
    let Some(first_m) = first_m else {
        return sdp.to_owned();
    };
    let end = lines[first_m + 1..]
        .iter()
        .position(|l| l.starts_with("m="))
        .map_or(lines.len(), |p| first_m + 1 + p);
    let section = &lines[first_m..end];
    let mut add: Vec<String> = candidates
        .iter()
        .map(|c| format!("a={}", c.trim()))
        .filter(|c| !section.contains(&c.as_str()))
        .collect();
    if !section.contains(&"a=end-of-candidates") {
        add.push("a=end-of-candidates".into());
    }
    let mut out = String::with_capacity(sdp.len() + add.iter().map(|a| a.len() + 2).sum::<usize>());
    for (i, l) in lines.iter().enumerate() {
        if i == end {
            for a in &add {
                out.push_str(a);
                out.push_str(eol);
            }
        }
        out.push_str(l);
        out.push_str(eol);
    }
    if end == lines.len() {
        for a in &add {
            out.push_str(a);
            out.push_str(eol);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::messages::{ByeReason, CandidateInit};

    const SEC: u64 = 1_000_000;
    const ANSWER: &str = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";

    fn cand(text: &str) -> DeviceMessage {
        DeviceMessage::Candidate {
            candidate: Some(CandidateInit {
                candidate: text.into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            }),
        }
    }

    fn answer() -> DeviceMessage {
        DeviceMessage::Answer { sdp: ANSWER.into() }
    }

    #[test]
    fn the_answer_waits_for_the_end_of_gathering() {
        let mut r = Resources::new(4);
        r.open("a", Some("k".into()), None, 0).unwrap();
        assert_eq!(r.on_device("a", answer(), SEC), None);
        assert_eq!(
            r.on_device("a", cand("candidate:1 1 udp 1 10.0.0.1 5000 typ host"), SEC),
            None
        );
        let Some(Outcome::Answer(sdp)) =
            r.on_device("a", DeviceMessage::Candidate { candidate: None }, SEC)
        else {
            panic!("no answer");
        };
        let video = sdp.split("m=audio").next().unwrap();
        assert!(video.contains("a=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n"));
        assert!(video.contains("a=end-of-candidates\r\n"));
        assert!(sdp.ends_with("a=mid:1\r\n"), "{sdp}");
        // Still there, and live: later errors do not end it.
        assert_eq!(r.len(), 1);
        let err = DeviceMessage::Error {
            code: ErrorCode::BadRequest,
            message: "bad candidate".into(),
            relay: None,
        };
        assert_eq!(r.on_device("a", err, 2 * SEC), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn slow_gathering_sends_what_it_has_after_the_wait() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        r.on_device("a", answer(), SEC);
        r.on_device("a", cand("candidate:1 1 udp 1 10.0.0.1 5000 typ host"), SEC);
        assert!(r.due(SEC + GATHER_WAIT.as_micros() as u64 - 1).is_empty());
        let due = r.due(SEC + GATHER_WAIT.as_micros() as u64);
        assert_eq!(due.len(), 1);
        assert!(matches!(&due[0].1, Outcome::Answer(s) if s.contains("10.0.0.1")));
        // Only once.
        assert!(r.due(100 * SEC).is_empty());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn an_unanswered_offer_times_out_and_is_dropped() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        let t = ANSWER_TIMEOUT.as_micros() as u64;
        assert!(r.due(t - 1).is_empty());
        let due = r.due(t);
        assert!(matches!(&due[..], [(id, Outcome::Refused(ErrorCode::Internal, _))] if id == "a"));
        assert!(r.is_empty());
    }

    #[test]
    fn a_refused_offer_frees_the_resource() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        let busy = DeviceMessage::Error {
            code: ErrorCode::Busy,
            message: "session limit reached (1 of 1)".into(),
            relay: None,
        };
        assert_eq!(
            r.on_device("a", busy, 0),
            Some(Outcome::Refused(
                ErrorCode::Busy,
                "session limit reached (1 of 1)".into()
            ))
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_session_end_frees_the_resource() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        r.on_device("a", answer(), 0);
        r.on_device("a", DeviceMessage::Candidate { candidate: None }, 0);
        let bye = DeviceMessage::Bye {
            reason: ByeReason::Failed,
        };
        // Nobody waits any more: no outcome, but the resource is gone.
        assert_eq!(r.on_device("a", bye, 5 * SEC), None);
        assert!(r.is_empty());
        assert_eq!(r.delete("a", None), Err(ResourceRefusal::NotFound));
    }

    #[test]
    fn a_session_that_ends_before_answering_refuses_the_post() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        let bye = DeviceMessage::Bye {
            reason: ByeReason::Shutdown,
        };
        assert!(matches!(
            r.on_device("a", bye, 0),
            Some(Outcome::Refused(ErrorCode::Internal, _))
        ));
        assert!(r.is_empty());
    }

    #[test]
    fn resources_are_bounded() {
        let mut r = Resources::new(2);
        r.open("a", None, None, 0).unwrap();
        r.open("b", None, None, 0).unwrap();
        assert_eq!(r.open("c", None, None, 0), Err(OpenRefusal::Full(2)));
        assert!(r.forget("a"));
        assert!(!r.forget("a"));
        r.open("c", None, None, 0).unwrap();
    }

    #[test]
    fn only_the_creating_key_patches_or_deletes() {
        let mut r = Resources::new(4);
        r.open("a", Some("phone".into()), Some("uf".into()), 0)
            .unwrap();
        assert_eq!(
            r.admit_patch("a", Some("wall"), 10, None, 0),
            Err(ResourceRefusal::WrongKey)
        );
        assert_eq!(
            r.admit_patch("a", None, 10, None, 0),
            Err(ResourceRefusal::WrongKey)
        );
        assert_eq!(r.delete("a", Some("wall")), Err(ResourceRefusal::WrongKey));
        assert_eq!(
            r.admit_patch("b", Some("phone"), 10, None, 0),
            Err(ResourceRefusal::NotFound)
        );
        assert_eq!(r.admit_patch("a", Some("phone"), 10, None, 0), Ok(()));
        assert_eq!(r.admit_patch("a", Some("phone"), 10, Some("uf"), 0), Ok(()));
        assert_eq!(
            r.admit_patch("a", Some("phone"), 10, Some("new"), 0),
            Err(ResourceRefusal::Restart)
        );
        assert_eq!(r.delete("a", Some("phone")), Ok(()));
        assert_eq!(r.delete("a", Some("phone")), Err(ResourceRefusal::NotFound));
    }

    #[test]
    fn patches_are_bounded_in_size_and_rate() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        assert_eq!(
            r.admit_patch("a", None, PATCH_MAX_BYTES + 1, None, 0),
            Err(ResourceRefusal::TooLarge(PATCH_MAX_BYTES + 1))
        );
        for _ in 0..PATCH_BURST {
            assert_eq!(r.admit_patch("a", None, 100, None, SEC), Ok(()));
        }
        assert_eq!(
            r.admit_patch("a", None, 100, None, SEC),
            Err(ResourceRefusal::TooFast)
        );
        // One second later, PATCH_RATE more.
        for _ in 0..PATCH_RATE {
            assert_eq!(r.admit_patch("a", None, 100, None, 2 * SEC), Ok(()));
        }
        assert_eq!(
            r.admit_patch("a", None, 100, None, 2 * SEC),
            Err(ResourceRefusal::TooFast)
        );
    }

    #[test]
    fn local_candidates_are_bounded() {
        let mut r = Resources::new(4);
        r.open("a", None, None, 0).unwrap();
        r.on_device("a", answer(), 0);
        for i in 0..100 {
            r.on_device(
                "a",
                cand(&format!("candidate:{i} 1 udp 1 10.0.0.1 {i} typ host")),
                0,
            );
        }
        let Some(Outcome::Answer(sdp)) =
            r.on_device("a", DeviceMessage::Candidate { candidate: None }, 0)
        else {
            panic!("no answer");
        };
        assert_eq!(sdp.matches("a=candidate:").count(), LOCAL_CANDIDATES_MAX);
    }

    #[test]
    fn candidates_go_into_the_first_section_once() {
        let sdp = "v=0\nm=video 9 X 1\na=mid:0\na=candidate:1 1 udp 1 h 1 typ host\n";
        let out = with_candidates(
            sdp,
            &[
                "candidate:1 1 udp 1 h 1 typ host".into(),
                "candidate:2 1 udp 1 h 2 typ host".into(),
            ],
        );
        assert_eq!(
            out,
            "v=0\nm=video 9 X 1\na=mid:0\na=candidate:1 1 udp 1 h 1 typ host\na=candidate:2 1 udp 1 h 2 typ host\na=end-of-candidates\n"
        );
        assert_eq!(with_candidates("v=0\r\n", &[]), "v=0\r\n");
    }

    #[test]
    fn sids_are_never_mqtt_sids() {
        let sid = sid_of("0123456789abcdef0123456789abcdef");
        assert!(!crate::signaling::topics::validate_sid(&sid));
        assert_eq!(id_of(&sid), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(id_of("sessionA1"), None);
    }
}
