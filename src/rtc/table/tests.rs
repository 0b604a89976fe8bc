//! The table's decisions in simulated time: no broker, no DTLS, no clock.

use super::*;
use crate::control::config::Role;
use crate::signaling::auth::{sign, KeyEntry};
use std::sync::Mutex;

const DEVICE: &str = "cam1";
const SECRET: &[u8] = b"table-secret-0123456789";
const SID: &str = "sessionA1";
const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
const SEC: u64 = 1_000_000;

#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, DeviceMessage, Option<String>)>>,
    spawned: Mutex<Vec<(SessionSpec, mpsc::Receiver<SessionInput>)>>,
}

struct Fakes(Arc<Recorder>);

impl Outbox for Fakes {
    fn send(&self, sid: &str, msg: DeviceMessage, mac: Option<String>) {
        self.0.sent.lock().unwrap().push((sid.to_owned(), msg, mac));
    }
}

impl Spawn for Fakes {
    fn spawn(&self, spec: SessionSpec, _events: mpsc::Sender<SessionEvent>) -> SessionHandle {
        let (tx, rx) = mpsc::channel(256);
        let handle = SessionHandle::new(spec.id, spec.sid.clone(), Arc::new(Mutex::new(None)), tx);
        self.0.spawned.lock().unwrap().push((spec, rx));
        handle
    }
}

struct Bench {
    rec: Arc<Recorder>,
    table: SessionTable,
    _events: mpsc::Receiver<SessionEvent>,
}

fn keys() -> Vec<KeyEntry> {
    vec![
        KeyEntry {
            id: "phone".into(),
            secret: SECRET.to_vec(),
            role: Role::Control,
        },
        KeyEntry {
            id: "wall".into(),
            secret: b"wall-secret-0123456789".to_vec(),
            role: Role::View,
        },
    ]
}

fn bench_with(authz: OfferAuthorizer, max_sessions: usize) -> Bench {
    let rec = Arc::new(Recorder::default());
    let (tx, rx) = mpsc::channel(16);
    let limits = TableLimits {
        max_sessions,
        max_pending: 8,
        max_payload: MAX_PAYLOAD,
        offer_rate: 5,
        offer_burst: 10,
    };
    let table = SessionTable::new(
        Arc::new(Fakes(rec.clone())),
        Arc::new(Fakes(rec.clone())),
        authz,
        DEVICE,
        limits,
        tx,
    );
    Bench {
        rec,
        table,
        _events: rx,
    }
}

fn bench() -> Bench {
    bench_with(OfferAuthorizer::signed(keys(), [0; 16], 0), 4)
}

impl Bench {
    fn nonce(&self) -> String {
        self.table.authz().nonce().expect("signed").to_owned()
    }

    fn offer(
        &self,
        sid: &str,
        key: &str,
        secret: &[u8],
        role: &str,
        sdp: &str,
    ) -> (String, String) {
        let nonce = self.nonce();
        let sig = sign(secret, DEVICE, sid, role, &nonce, sdp);
        let json = serde_json::json!({"type": "offer", "sdp": sdp,
            "auth": {"key": key, "role": role, "nonce": nonce, "sig": sig}});
        (json.to_string(), sig)
    }

    fn send(&mut self, sid: &str, payload: &str, now: u64) {
        self.table.handle_message(sid, payload.as_bytes(), now);
    }

    fn sent(&self) -> Vec<(String, DeviceMessage, Option<String>)> {
        std::mem::take(&mut *self.rec.sent.lock().unwrap())
    }

    fn spawned(&self) -> usize {
        self.rec.spawned.lock().unwrap().len()
    }

    /// Inputs delivered to session number `i` so far.
    fn inputs(&self, i: usize) -> Vec<SessionInput> {
        let mut spawned = self.rec.spawned.lock().unwrap();
        let rx = &mut spawned[i].1;
        let mut out = Vec::new();
        while let Ok(x) = rx.try_recv() {
            out.push(x);
        }
        out
    }

    fn key_of(&self, i: usize) -> SessionKey {
        self.rec.spawned.lock().unwrap()[i]
            .0
            .key
            .clone()
            .expect("signed session")
    }

    /// Opens a signed session on SID; returns its key.
    fn open(&mut self) -> SessionKey {
        let (offer, _) = self.offer(SID, "phone", SECRET, "control", SDP);
        self.send(SID, &offer, SEC);
        assert_eq!(self.spawned(), 1, "{:?}", self.sent());
        self.key_of(0)
    }
}

fn candidate_json(c: &str, mac: Option<&str>) -> String {
    let mut v = serde_json::json!({"type": "candidate",
        "candidate": {"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0}});
    if let Some(m) = mac {
        v["mac"] = m.into();
    }
    v.to_string()
}

fn cand_mac(k: &SessionKey, c: &str) -> String {
    k.mac(Direction::In, "candidate", &format!("{c}\n0\n0"))
}

fn error_code(m: &DeviceMessage) -> Option<ErrorCode> {
    match m {
        DeviceMessage::Error { code, .. } => Some(*code),
        _ => None,
    }
}

const CAND: &str = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";

#[test]
fn a_signed_offer_opens_a_session_with_the_derived_key() {
    let mut b = bench();
    let k = b.open();
    let (_, sig) = b.offer(SID, "phone", SECRET, "control", SDP);
    assert_eq!(k, SessionKey::derive(SECRET, &sig));
    assert!(b.sent().is_empty());
    assert!(b.table.key_used("phone"));
}

#[test]
fn forged_bye_and_candidates_are_ignored_without_reply() {
    let mut b = bench();
    let k = b.open();
    b.send(SID, r#"{"type":"bye"}"#, 2 * SEC);
    b.send(
        SID,
        r#"{"type":"bye","mac":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        2 * SEC,
    );
    for i in 0..50 {
        let forged = format!("candidate:{i} 1 udp 1 203.0.113.{i} 9 typ host");
        b.send(SID, &candidate_json(&forged, None), 2 * SEC);
        b.send(
            SID,
            &candidate_json(&forged, Some(&cand_mac(&k, CAND))),
            2 * SEC,
        );
    }
    b.send(SID, "not json", 2 * SEC);
    assert!(b.inputs(0).is_empty(), "nothing forged reaches the session");
    assert!(b.sent().is_empty(), "no reply to forgeries");
    assert_eq!(b.table.bad_macs(), 103);
    // The viewer's own, mac'd messages still work.
    b.send(
        SID,
        &candidate_json(CAND, Some(&cand_mac(&k, CAND))),
        3 * SEC,
    );
    let bye_mac = k.mac(Direction::In, "bye", "");
    b.send(
        SID,
        &format!(r#"{{"type":"bye","mac":"{bye_mac}"}}"#),
        3 * SEC,
    );
    let inputs = b.inputs(0);
    assert!(
        matches!(inputs[0], SessionInput::Candidate(Some(_))),
        "{inputs:?}"
    );
    assert!(matches!(inputs[1], SessionInput::Bye), "{inputs:?}");
}

#[test]
fn a_replayed_offer_cannot_open_a_second_session() {
    let mut b = bench();
    b.open();
    let (offer, _) = b.offer(SID, "phone", SECRET, "control", SDP);
    // The session ends; the captured offer is replayed on the same sid.
    b.table.handle_event(SessionEvent::Ended {
        id: 1,
        sid: SID.into(),
        reason: None,
    });
    b.send(SID, &offer, 5 * SEC);
    assert_eq!(b.spawned(), 1);
    let sent = b.sent();
    assert_eq!(error_code(&sent[0].1), Some(ErrorCode::Unauthorized));
    assert_eq!(sent[0].2, None, "no session key: no mac");
    // Two nonce periods later the nonce itself has expired.
    let period = crate::signaling::auth::NONCE_PERIOD.as_micros() as u64;
    assert!(b.table.rotate_nonce_if_due(period + 1, || [1; 16]));
    assert!(
        !b.table.rotate_nonce_if_due(period + 2, || [9; 16]),
        "not due yet"
    );
    assert!(b.table.rotate_nonce_if_due(2 * period + 2, || [2; 16]));
    b.send(SID, &offer, 2 * period + 3);
    assert_eq!(b.spawned(), 1);
    let sent = b.sent();
    let DeviceMessage::Error { code, message, .. } = &sent[0].1 else {
        panic!("{sent:?}")
    };
    assert_eq!(*code, ErrorCode::Unauthorized);
    assert!(message.contains("nonce"), "{message}");
}

#[test]
fn a_repeated_offer_gets_the_same_answer_with_its_mac() {
    let mut b = bench();
    let k = b.open();
    // Still negotiating: the session is asked to answer again.
    let (offer, _) = b.offer(SID, "phone", SECRET, "control", SDP);
    b.send(SID, &offer, 2 * SEC);
    assert!(matches!(b.inputs(0)[..], [SessionInput::RepeatAnswer]));
    // Answered: the table repeats it, mac'd.
    let answer = b.table.sessions[SID].handle.answer.clone();
    *answer.lock().unwrap() = Some("v=0 answer".into());
    b.send(SID, &offer, 3 * SEC);
    let sent = b.sent();
    assert_eq!(sent.len(), 1);
    let mac = sent[0].2.clone();
    assert!(k.verify(Direction::Out, "answer", "v=0 answer", mac.as_deref()));
    assert_eq!(b.spawned(), 1);
}

#[test]
fn renegotiation_rules() {
    let mut b = bench();
    let k = b.open();
    let sdp2 = format!("{SDP}a=ice-restart:1\r\n");
    // A view-role offer on the control session: refused with a mac'd error.
    let (other_role, _) = b.offer(SID, "phone", SECRET, "view", &sdp2);
    b.send(SID, &other_role, 2 * SEC);
    // Another key (the wall key, correctly signed): refused.
    let (other_key, _) = b.offer(SID, "wall", b"wall-secret-0123456789", "view", &sdp2);
    b.send(SID, &other_key, 2 * SEC);
    // A forged renegotiation (bad signature): refused.
    let forged = serde_json::json!({"type":"offer","sdp": sdp2,
        "auth":{"key":"phone","role":"control","nonce": b.nonce(),"sig":"A".repeat(43)}})
    .to_string();
    b.send(SID, &forged, 2 * SEC);
    let sent = b.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for (_, m, mac) in &sent {
        assert_eq!(error_code(m), Some(ErrorCode::Unauthorized));
        assert!(k.verify(Direction::Out, "error", "unauthorized", mac.as_deref()));
    }
    assert!(b.inputs(0).is_empty(), "the session is left as it was");
    // A newly signed offer with the same key and role renegotiates.
    let (good, _) = b.offer(SID, "phone", SECRET, "control", &sdp2);
    b.send(SID, &good, 3 * SEC);
    assert!(matches!(&b.inputs(0)[..], [SessionInput::Offer(s)] if *s == sdp2));
    // The first offer again: it was accepted before and is not the latest.
    let (first, _) = b.offer(SID, "phone", SECRET, "control", SDP);
    b.send(SID, &first, 4 * SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
    assert!(b.inputs(0).is_empty());
}

#[test]
fn early_candidates_are_checked_once_the_offer_arrives() {
    let mut b = bench();
    let (offer, sig) = b.offer(SID, "phone", SECRET, "control", SDP);
    let k = SessionKey::derive(SECRET, &sig);
    b.send(SID, &candidate_json(CAND, Some(&cand_mac(&k, CAND))), SEC);
    b.send(
        SID,
        &candidate_json("candidate:2 1 udp 1 203.0.113.9 9 typ host", None),
        SEC,
    );
    b.send(SID, r#"{"type":"bye"}"#, SEC);
    assert_eq!(
        b.table.early_sids(),
        1,
        "an unverifiable bye does not drop them"
    );
    b.send(SID, &offer, 2 * SEC);
    let spawned = b.rec.spawned.lock().unwrap();
    let early = &spawned[0].0.early;
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].as_ref().map(|c| c.candidate.as_str()), Some(CAND));
    drop(spawned);
    assert_eq!(b.table.early_bytes(), 0);
    assert_eq!(b.table.bad_macs(), 1);
}

#[test]
fn early_candidates_are_bounded_and_expire() {
    let mut b = bench();
    for i in 0..(EARLY_CANDIDATES_MAX + 5) {
        b.send(
            SID,
            &candidate_json(&format!("candidate:{i} 1 udp 1 127.0.0.1 9 typ host"), None),
            SEC,
        );
    }
    assert!(b.table.early_bytes() > 0);
    let held = b.table.early_bytes();
    b.table
        .expire(SEC + EARLY_CANDIDATES_TTL.as_micros() as u64 + 1);
    assert_eq!(b.table.early_sids(), 0);
    assert_eq!(b.table.early_bytes(), 0, "{held} bytes freed");
    // Bytes across sids are capped.
    let big = format!(
        "candidate:1 1 udp 1 127.0.0.1 9 typ host {}",
        "x".repeat(960)
    );
    for i in 0..EARLY_SIDS_MAX {
        b.send(&format!("sid{i:06}"), &candidate_json(&big, None), 20 * SEC);
    }
    assert!(b.table.early_bytes() <= EARLY_BYTES_MAX);
    assert!(b.table.early_sids() < EARLY_SIDS_MAX);
}

#[test]
fn long_candidates_and_too_many_candidates_are_refused() {
    let mut b = bench();
    let k = b.open();
    let long = format!(
        "candidate:1 1 udp 1 127.0.0.1 9 typ host {}",
        "x".repeat(CANDIDATE_MAX_LEN)
    );
    b.send(
        SID,
        &candidate_json(&long, Some(&cand_mac(&k, &long))),
        2 * SEC,
    );
    let sent = b.sent();
    assert_eq!(error_code(&sent[0].1), Some(ErrorCode::BadRequest));
    assert!(
        sent[0].2.is_some(),
        "errors on a live signed session carry a mac"
    );
    for i in 0..(REMOTE_CANDIDATES_MAX + 10) {
        let c = format!("candidate:{i} 1 udp 1 127.0.0.1 9 typ host");
        b.send(SID, &candidate_json(&c, Some(&cand_mac(&k, &c))), 2 * SEC);
    }
    assert_eq!(b.inputs(0).len(), REMOTE_CANDIDATES_MAX);
}

#[test]
fn refusals_before_any_session() {
    let mut b = bench();
    let nonce = b.nonce();
    let cases = [
        // No auth.
        (
            serde_json::json!({"type":"offer","sdp":SDP}),
            ErrorCode::Unauthorized,
        ),
        // A version-1 signature (no nonce).
        (
            serde_json::json!({"type":"offer","sdp":SDP,"auth":{"key":"phone","role":"control",
            "sig": crate::signaling::auth::sign(SECRET, DEVICE, SID, "control", "", SDP)}}),
            ErrorCode::Unauthorized,
        ),
        // A made-up nonce, well signed.
        (
            serde_json::json!({"type":"offer","sdp":SDP,"auth":{"key":"phone","role":"control","nonce":"bWFkZS11cA",
            "sig": sign(SECRET, DEVICE, SID, "control", "bWFkZS11cA", SDP)}}),
            ErrorCode::Unauthorized,
        ),
        // A view key asking for control.
        (
            serde_json::json!({"type":"offer","sdp":SDP,"auth":{"key":"wall","role":"control","nonce":nonce,
            "sig": sign(b"wall-secret-0123456789", DEVICE, SID, "control", &nonce, SDP)}}),
            ErrorCode::Unauthorized,
        ),
        (serde_json::json!({"type":"offer"}), ErrorCode::BadRequest),
    ];
    for (msg, want) in cases {
        b.send(SID, &msg.to_string(), SEC);
        let sent = b.sent();
        assert_eq!(error_code(&sent[0].1), Some(want), "{msg}");
        assert_eq!(sent[0].2, None);
    }
    assert_eq!(b.spawned(), 0);
    b.send(SID, &"x".repeat(MAX_PAYLOAD + 1), SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::TooLarge));
}

#[test]
fn the_session_limit_comes_before_any_peer_connection() {
    let mut b = bench_with(OfferAuthorizer::signed(keys(), [0; 16], 0), 1);
    b.open();
    let (offer, _) = b.offer("sessionB2", "phone", SECRET, "control", SDP);
    b.send("sessionB2", &offer, 2 * SEC);
    assert_eq!(b.spawned(), 1);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Busy));
}

#[test]
fn revoking_a_key_closes_its_sessions() {
    let mut b = bench();
    b.open();
    let closed = b.table.set_keys(vec![keys().remove(1)]);
    assert_eq!(closed, 1);
    assert!(matches!(
        b.inputs(0)[..],
        [SessionInput::Close(ByeReason::Closed)]
    ));
    let (offer, _) = b.offer("sessionC3", "phone", SECRET, "control", SDP);
    b.send("sessionC3", &offer, 2 * SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
}

#[test]
fn lowering_a_keys_role_closes_its_control_sessions_only() {
    let mut b = bench();
    b.open(); // phone, control
    let (offer, _) = b.offer("sessionV1", "phone", SECRET, "view", SDP);
    b.send("sessionV1", &offer, SEC);
    assert_eq!(b.spawned(), 2, "{:?}", b.sent());
    let mut lowered = keys();
    lowered[0].role = Role::View;
    assert_eq!(b.table.set_keys(lowered.clone()), 1);
    assert!(matches!(
        b.inputs(0)[..],
        [SessionInput::Close(ByeReason::Closed)]
    ));
    assert!(b.inputs(1).is_empty(), "the view session goes on");
    // The same key set again closes nothing more.
    assert_eq!(
        b.table.set_keys(lowered),
        1,
        "the closing session is still listed until it ends"
    );
}

#[test]
fn a_key_given_a_new_secret_under_its_name_closes_its_sessions() {
    let mut b = bench();
    b.open();
    let mut replaced = keys();
    replaced[0].secret = b"another-secret-0123456789".to_vec();
    assert_eq!(b.table.set_keys(replaced), 1);
    assert!(matches!(
        b.inputs(0)[..],
        [SessionInput::Close(ByeReason::Closed)]
    ));
}

#[test]
fn unchanged_keys_close_nothing() {
    let mut b = bench();
    b.open();
    assert_eq!(b.table.set_keys(keys()), 0);
    assert!(b.inputs(0).is_empty());
}

#[test]
fn a_refusal_echoes_nothing_the_sender_chose() {
    let mut b = bench();
    let long_id = format!("evil{}\nforged", "x".repeat(5000));
    let (offer, _) = b.offer(SID, &long_id, SECRET, "control", SDP);
    b.send(SID, &offer, SEC);
    let (_, msg, _) = &b.sent()[0];
    let DeviceMessage::Error { code, message, .. } = msg else {
        panic!("expected an error, got {msg:?}");
    };
    assert_eq!(*code, ErrorCode::Unauthorized);
    assert!(
        !message.contains("evil") && !message.contains("forged"),
        "{message}"
    );
    assert!(message.len() < 200, "{message}");
}

#[test]
fn open_devices_take_unsigned_messages() {
    let mut b = bench_with(OfferAuthorizer::open([0; 16], 0), 4);
    b.send(
        SID,
        &serde_json::json!({"type":"offer","sdp":SDP}).to_string(),
        SEC,
    );
    assert_eq!(b.spawned(), 1);
    assert!(b.rec.spawned.lock().unwrap()[0].0.key.is_none());
    b.send(SID, &candidate_json(CAND, None), SEC);
    b.send(SID, r#"{"type":"bye"}"#, SEC);
    let inputs = b.inputs(0);
    assert_eq!(inputs.len(), 2, "{inputs:?}");
}

// Sessions opened over HTTP (WHEP): same limits, view role, revocation.

const WHEP_SID: &str = "whep:0123456789abcdef0123456789abcdef";

fn ended(b: &mut Bench, i: usize, sid: &str) {
    let id = b.rec.spawned.lock().unwrap()[i].0.id;
    b.table.handle_event(SessionEvent::Ended {
        id,
        sid: sid.to_owned(),
        reason: Some(ByeReason::Closed),
    });
}

#[test]
fn direct_sessions_are_view_sessions_of_their_key() {
    let mut b = bench();
    b.table
        .open_direct(WHEP_SID, SDP.into(), Some("phone".into()), SEC);
    assert_eq!(b.spawned(), 1, "{:?}", b.sent());
    let spawned = b.rec.spawned.lock().unwrap();
    let spec = &spawned[0].0;
    assert_eq!(
        spec.access.role,
        Role::View,
        "control stays on signed offers"
    );
    assert_eq!(spec.access.key_id.as_deref(), Some("phone"));
    assert!(spec.key.is_none());
}

#[test]
fn direct_and_mqtt_sessions_share_max_sessions() {
    let mut b = bench_with(OfferAuthorizer::signed(keys(), [0; 16], 0), 1);
    b.open();
    b.table
        .open_direct(WHEP_SID, SDP.into(), Some("phone".into()), 2 * SEC);
    assert_eq!(b.spawned(), 1);
    let sent = b.sent();
    assert_eq!(sent[0].0, WHEP_SID);
    assert_eq!(error_code(&sent[0].1), Some(ErrorCode::Busy));
    // The MQTT session ends: the slot is free for WHEP, and then full again.
    ended(&mut b, 0, SID);
    b.table
        .open_direct(WHEP_SID, SDP.into(), Some("phone".into()), 3 * SEC);
    assert_eq!(b.spawned(), 2);
    let (offer, _) = b.offer("sessionB2", "phone", SECRET, "control", SDP);
    b.send("sessionB2", &offer, 3 * SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Busy));
    // Its end (DELETE, failure, timeout) frees the slot.
    ended(&mut b, 1, WHEP_SID);
    let (offer, _) = b.offer("sessionB3", "phone", SECRET, "control", SDP);
    b.send("sessionB3", &offer, 4 * SEC);
    assert_eq!(b.spawned(), 3, "{:?}", b.sent());
}

#[test]
fn direct_sessions_close_when_their_key_is_revoked() {
    let mut b = bench();
    b.table
        .open_direct(WHEP_SID, SDP.into(), Some("wall".into()), SEC);
    assert_eq!(b.table.set_keys(vec![keys().remove(0)]), 1);
    assert!(matches!(
        b.inputs(0)[..],
        [SessionInput::Close(ByeReason::Closed)]
    ));
    // A key revoked before the offer reaches the table: refused.
    b.table.open_direct(
        "whep:ffffffffffffffffffffffffffffffff",
        SDP.into(),
        Some("wall".into()),
        SEC,
    );
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
    // No key on a signed device: refused.
    b.table.open_direct(
        "whep:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        SDP.into(),
        None,
        SEC,
    );
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
    assert_eq!(b.spawned(), 1);
}

#[test]
fn direct_candidates_bye_and_bad_offers() {
    let mut b = bench_with(OfferAuthorizer::open([0; 16], 0), 4);
    b.table
        .open_direct(WHEP_SID, "v=0 garbage".into(), None, SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::BadRequest));
    // No session: candidates are dropped, not held.
    b.table.candidates_direct(
        WHEP_SID,
        vec![Some(
            serde_json::from_str(&format!(r#"{{"candidate":"{CAND}","sdpMid":"0"}}"#)).unwrap(),
        )],
        SEC,
    );
    assert_eq!(b.table.early_sids(), 0);
    b.table.open_direct(WHEP_SID, SDP.into(), None, SEC);
    assert_eq!(b.spawned(), 1);
    // The same sid twice: refused, the first goes on.
    b.table.open_direct(WHEP_SID, SDP.into(), None, SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::BadRequest));
    let c: CandidateInit =
        serde_json::from_str(&format!(r#"{{"candidate":"{CAND}","sdpMid":"0"}}"#)).unwrap();
    let many = vec![Some(c); REMOTE_CANDIDATES_MAX + 10];
    b.table.candidates_direct(WHEP_SID, many, SEC);
    b.table.close_direct(WHEP_SID);
    let inputs = b.inputs(0);
    assert_eq!(inputs.len(), REMOTE_CANDIDATES_MAX + 1);
    assert!(matches!(inputs.last(), Some(SessionInput::Bye)));
}

// The relay: who is handed over, and what they are given.

fn relay(mode: crate::relay::RelayMode) -> Option<crate::relay::RelayTarget> {
    Some(crate::relay::RelayTarget {
        janus: "http://127.0.0.1:8088/janus".into(),
        mountpoint: 77,
        pin: "pin-0123456789".into(),
        mode,
    })
}

fn relay_offer(m: &DeviceMessage) -> Option<&RelayOffer> {
    match m {
        DeviceMessage::Error {
            code: ErrorCode::Busy,
            relay: Some(r),
            ..
        } => Some(r),
        _ => None,
    }
}

#[test]
fn overflow_viewers_get_the_relay_sealed_under_their_session_key() {
    let mut b = bench_with(OfferAuthorizer::signed(keys(), [0; 16], 0), 1);
    b.table.set_relay(relay(crate::relay::RelayMode::Overflow));
    let (first, _) = b.offer(SID, "phone", SECRET, "control", SDP);
    b.send(SID, &first, SEC);
    assert_eq!(b.spawned(), 1, "room left: served directly");
    assert!(!b.table.take_handed_over());
    let (second, sig) = b.offer("sessionB2", "wall", b"wall-secret-0123456789", "view", SDP);
    b.send("sessionB2", &second, SEC);
    assert_eq!(
        b.spawned(),
        1,
        "no peer connection for a handed-over viewer"
    );
    assert!(b.table.take_handed_over());
    let sent = b.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (sid, msg, mac) = &sent[0];
    assert_eq!(sid, "sessionB2");
    let k = SessionKey::derive(b"wall-secret-0123456789", &sig);
    assert!(k.verify(Direction::Out, "error", "busy", mac.as_deref()));
    let r = relay_offer(msg).expect("a relay");
    assert_eq!(
        (r.janus.as_str(), r.mountpoint),
        ("http://127.0.0.1:8088/janus", 77)
    );
    assert!(r.pin.is_none(), "never in clear on a signed device");
    let pin_x = r.pin_x.as_deref().unwrap();
    assert_eq!(
        k.open_pin("sessionB2", pin_x).as_deref(),
        Some("pin-0123456789")
    );
    assert!(k.verify_relay(&r.janus, 77, pin_x, r.mac.as_deref().unwrap()));
    assert!(!k.verify_relay(&r.janus, 78, pin_x, r.mac.as_deref().unwrap()));
    // Another key's K opens nothing.
    let other = SessionKey::derive(SECRET, &sig);
    assert_ne!(
        other.open_pin("sessionB2", pin_x).as_deref(),
        Some("pin-0123456789")
    );
    // The same offer again is a replay, not a second handover.
    b.send("sessionB2", &second, 2 * SEC);
    assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
}

#[test]
fn all_mode_hands_over_h264_offers_only_and_only_while_up() {
    let mut b = bench();
    b.table.set_relay(relay(crate::relay::RelayMode::All));
    let (o, _) = b.offer(SID, "phone", SECRET, "view", SDP);
    b.send(SID, &o, SEC);
    assert_eq!(b.spawned(), 0);
    assert!(relay_offer(&b.sent()[0].1).is_some());
    // VP8 only: the relay cannot carry it; served directly.
    let vp8 = SDP.replace("H264/90000", "VP8/90000");
    let (o, _) = b.offer("sessionC3", "phone", SECRET, "view", &vp8);
    b.send("sessionC3", &o, SEC);
    assert_eq!(b.spawned(), 1);
    // Relay down: everyone direct again.
    b.table.set_relay(None);
    let (o, _) = b.offer("sessionD4", "phone", SECRET, "view", SDP);
    b.send("sessionD4", &o, SEC);
    assert_eq!(b.spawned(), 2);
    assert!(b.sent().iter().all(|(_, m, _)| relay_offer(m).is_none()));
}

#[test]
fn unauthorized_offers_never_learn_the_relay() {
    let mut b = bench_with(OfferAuthorizer::signed(keys(), [0; 16], 0), 1);
    b.table.set_relay(relay(crate::relay::RelayMode::All));
    let (o, _) = b.offer(SID, "phone", b"not-the-secret-at-all", "view", SDP);
    b.send(SID, &o, SEC);
    let unsigned = serde_json::json!({"type":"offer","sdp":SDP}).to_string();
    b.send("sessionE5", &unsigned, SEC);
    let sent = b.sent();
    assert_eq!(sent.len(), 2);
    for (_, m, _) in &sent {
        assert_eq!(error_code(m), Some(ErrorCode::Unauthorized));
        assert!(relay_offer(m).is_none());
        assert!(!m.to_json().contains("8088"), "{m:?}");
    }
    assert!(!b.table.take_handed_over());
}

#[test]
fn open_devices_hand_over_the_pin_in_clear() {
    let mut b = bench_with(OfferAuthorizer::open([0; 16], 0), 4);
    b.table.set_relay(relay(crate::relay::RelayMode::All));
    b.send(
        SID,
        &serde_json::json!({"type":"offer","sdp":SDP}).to_string(),
        SEC,
    );
    let sent = b.sent();
    let r = relay_offer(&sent[0].1).expect("relay");
    assert_eq!(r.pin.as_deref(), Some("pin-0123456789"));
    assert!(r.pin_x.is_none() && r.mac.is_none() && sent[0].2.is_none());
    let json: serde_json::Value = serde_json::from_str(&sent[0].1.to_json()).unwrap();
    assert_eq!(json["relay"]["mountpoint"], 77);
    assert_eq!(json["code"], "busy");
}

mod ice_requests {
    use super::*;
    use crate::signaling::auth::{sign_ice, SessionKey};
    use crate::signaling::ice_servers::{open, IceServerSource, TurnRest};
    use crate::signaling::messages::IceServerEntry;

    fn with_turn(b: &mut Bench) {
        b.table.set_ice_service(IceService {
            source: IceServerSource::new(
                vec![IceServerEntry {
                    urls: vec!["stun:stun.example.org".into()],
                    username: None,
                    credential: None,
                }],
                Some(TurnRest {
                    urls: vec!["turn:turn.example.org".into()],
                    secret: b"shared".to_vec(),
                    lifetime: Duration::from_secs(600),
                }),
            ),
            unix_now: Arc::new(|| 1_800_000_000),
        });
    }

    fn request(b: &Bench, sid: &str, key: &str, secret: &[u8]) -> (String, String) {
        let nonce = b.nonce();
        let sig = sign_ice(secret, DEVICE, sid, &nonce);
        let json = serde_json::json!({"type": "ice_request",
            "auth": {"key": key, "nonce": nonce, "sig": sig}});
        (json.to_string(), sig)
    }

    #[test]
    fn a_signed_request_gets_servers_sealed_for_its_key() {
        let mut b = bench();
        with_turn(&mut b);
        let (req, sig) = request(&b, "iceSid01", "phone", SECRET);
        b.send("iceSid01", &req, SEC);
        let sent = b.sent();
        let (sid, msg, mac) = &sent[0];
        assert_eq!(sid, "iceSid01");
        let key = SessionKey::derive_ice(SECRET, &sig);
        let (servers, expires) = open(Some(&key), sid, msg, mac.as_deref()).expect("opens");
        assert_eq!(expires, 1_800_000_600);
        assert_eq!(servers[0].username.as_deref(), Some("1800000600:phone"));
        assert_eq!(servers.len(), 2);
        assert_eq!(b.spawned(), 0, "no session");
        assert_eq!(b.table.ice_replies(), 1);
    }

    #[test]
    fn bad_requests_get_unauthorized_and_nothing_is_minted() {
        let mut b = bench();
        with_turn(&mut b);
        let no_auth = serde_json::json!({"type": "ice_request"}).to_string();
        let (wrong, _) = request(&b, "iceSid02", "phone", b"not-the-secret-0123456");
        let (unknown, _) = request(&b, "iceSid03", "nobody", SECRET);
        let (other_sid, _) = request(&b, "iceSid04", "phone", SECRET);
        for (sid, req) in [
            ("iceSid01", no_auth),
            ("iceSid02", wrong),
            ("iceSid03", unknown),
            ("iceSid05", other_sid),
        ] {
            b.send(sid, &req, SEC);
            let sent = b.sent();
            assert_eq!(
                error_code(&sent[0].1),
                Some(ErrorCode::Unauthorized),
                "{sid}"
            );
        }
        assert_eq!(b.table.ice_replies(), 0);
    }

    #[test]
    fn a_request_sid_serves_once_and_never_opens_a_session() {
        let mut b = bench();
        let (req, _) = request(&b, "iceSid01", "phone", SECRET);
        b.send("iceSid01", &req, SEC);
        assert!(matches!(b.sent()[0].1, DeviceMessage::Ice { .. }));
        // The same request again (a replay), or a new one on that sid.
        b.send("iceSid01", &req, 2 * SEC);
        assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
        let (offer, _) = b.offer("iceSid01", "phone", SECRET, "view", SDP);
        b.send("iceSid01", &offer, 3 * SEC);
        assert_eq!(error_code(&b.sent()[0].1), Some(ErrorCode::Unauthorized));
        assert_eq!(b.spawned(), 0);
        // A device with nothing to share answers with an empty list.
        let (r, _) = request(&b, "iceSid02", "phone", SECRET);
        b.send("iceSid02", &r, 4 * SEC);
        let reply = b.sent()[0].1.clone();
        let DeviceMessage::Ice { expires, .. } = reply else {
            panic!("no ice reply: {reply:?}");
        };
        assert_eq!(expires, 0);
    }

    #[test]
    fn a_flood_from_one_key_gets_busy_and_others_are_not_held_up() {
        let mut b = bench();
        with_turn(&mut b);
        let mut busy = 0;
        for i in 0..30 {
            let sid = format!("iceFlood{i:02}");
            let (req, _) = request(&b, &sid, "phone", SECRET);
            b.send(&sid, &req, SEC);
            if error_code(&b.sent()[0].1) == Some(ErrorCode::Busy) {
                busy += 1;
            }
        }
        assert_eq!(busy, 20, "a burst of 10, then busy");
        assert_eq!(b.table.ice_replies(), 10);
        let (req, _) = request(&b, "iceWall01", "wall", b"wall-secret-0123456789");
        b.send("iceWall01", &req, SEC);
        assert!(
            matches!(b.sent()[0].1, DeviceMessage::Ice { .. }),
            "another key is served"
        );
        // A minute later the key has ten more.
        let (req, _) = request(&b, "iceLater01", "phone", SECRET);
        b.send("iceLater01", &req, 61 * SEC);
        assert!(matches!(b.sent()[0].1, DeviceMessage::Ice { .. }));
    }

    #[test]
    fn open_devices_answer_anyone_in_clear() {
        let mut b = bench_with(OfferAuthorizer::open([0; 16], 0), 4);
        with_turn(&mut b);
        b.send("iceOpen01", r#"{"type":"ice_request"}"#, SEC);
        let sent = b.sent();
        let (msg, mac) = (&sent[0].1, &sent[0].2);
        assert!(mac.is_none());
        let (servers, _) = open(None, "iceOpen01", msg, None).expect("clear");
        assert_eq!(servers[0].username.as_deref(), Some("1800000600:viewer"));
    }
}
