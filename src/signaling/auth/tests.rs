use super::*;

const SECRET: &str = "test-secret-0123456789";
const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";
const SID: &str = "abcdEFGH1234";
/// 16 zero bytes, b64u.
const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAA";

// The vectors were computed independently with openssl (b64u = base64 | tr '+/' '-_' | tr -d '='):
// printf 'campeer-offer-v2\ncam1\nabcdEFGH1234\ncontrol\nAAAAAAAAAAAAAAAAAAAAAA\nv=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n' \
//   | openssl dgst -sha256 -hmac 'test-secret-0123456789' -binary | b64u
const VECTOR_SIG: &str = "PEMg79ChYlt2-j1tw2oBtRf2z-nP0mGa7PqYRVrIMx0";
// K: printf "campeer-session-v2\n$SIG" | openssl dgst -sha256 -hmac "$SECRET" -binary | xxd -p -c64
const VECTOR_K: &str = "0b9a3bf9af0fefce9b9f2fb04e3822e4f2aed8e2819fd961a50afeb67a00f059";
// printf 'campeer-msg-v2\nout\nbye\nclosed' | openssl dgst -sha256 -mac HMAC -macopt hexkey:$K -binary | b64u
const VECTOR_BYE_MAC: &str = "0OlVgOm12Tuf8fKdGIjRitB5WP7W8HOmBz7LDsLncx0";
// printf 'campeer-msg-v2\nin\ncandidate\ncandidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n0\n0' | ... hexkey:$K
const VECTOR_CANDIDATE_MAC: &str = "LfwtEkdJBJj597VRz-MHMB0sEpuydG2lTFR28WgCYNw";
// printf 'campeer-mqtt-v2\ncam1' | openssl dgst -sha256 -hmac "$SECRET" -binary | b64u
const VECTOR_MQTT_PASSWORD: &str = "nTVzd4YCok8dq5X1Z1HNSUPLa-CQdfGyGo86PQDn6n8";

fn key(id: &str, secret: &str, role: Role) -> KeyEntry {
    KeyEntry {
        id: id.into(),
        secret: secret.as_bytes().to_vec(),
        role,
    }
}

fn authorizer() -> OfferAuthorizer {
    OfferAuthorizer::signed(
        vec![
            key("phone", SECRET, Role::Control),
            key("wall", "another-secret-abcdef", Role::View),
        ],
        [0; 16],
        1_000,
    )
}

fn fields(key: &str, role: &str, sig: &str) -> OfferAuthFields {
    OfferAuthFields {
        key: key.into(),
        role: role.into(),
        nonce: Some(NONCE.into()),
        sig: sig.into(),
    }
}

#[test]
fn vectors_match_openssl() {
    assert_eq!(
        sign(SECRET.as_bytes(), "cam1", SID, "control", NONCE, SDP),
        VECTOR_SIG
    );
    let k = SessionKey::derive(SECRET.as_bytes(), VECTOR_SIG);
    let hex: String = k.0.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, VECTOR_K);
    assert_eq!(k.mac(Direction::Out, "bye", "closed"), VECTOR_BYE_MAC);
    let body = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n0\n0";
    assert_eq!(
        k.mac(Direction::In, "candidate", body),
        VECTOR_CANDIDATE_MAC
    );
    assert_eq!(
        key_password(SECRET.as_bytes(), "cam1"),
        VECTOR_MQTT_PASSWORD
    );
}

#[test]
fn accepts_the_vector_and_derives_the_session_key() {
    let a = authorizer();
    assert_eq!(a.mode(), "signed");
    assert_eq!(a.nonce(), Some(NONCE));
    let g = a
        .authorize(
            "cam1",
            SID,
            SDP,
            Some(&fields("phone", "control", VECTOR_SIG)),
        )
        .expect("authorized");
    assert_eq!(g.role, Role::Control);
    assert_eq!(g.key_id.as_deref(), Some("phone"));
    assert_eq!(g.nonce.as_deref(), Some(NONCE));
    let k = g.session_key.expect("a signed session has a key");
    assert!(k.verify(Direction::Out, "bye", "closed", Some(VECTOR_BYE_MAC)));
    // Direction, type and body all matter; a missing or malformed mac fails.
    assert!(!k.verify(Direction::In, "bye", "closed", Some(VECTOR_BYE_MAC)));
    assert!(!k.verify(Direction::Out, "error", "closed", Some(VECTOR_BYE_MAC)));
    assert!(!k.verify(Direction::Out, "bye", "failed", Some(VECTOR_BYE_MAC)));
    assert!(!k.verify(Direction::Out, "bye", "closed", None));
    assert!(!k.verify(Direction::Out, "bye", "closed", Some("short")));
}

#[test]
fn view_role_on_a_control_key() {
    let a = authorizer();
    let sig = sign(SECRET.as_bytes(), "cam1", SID, "view", NONCE, SDP);
    let g = a
        .authorize("cam1", SID, SDP, Some(&fields("phone", "view", &sig)))
        .expect("authorized");
    assert_eq!(g.role, Role::View);
}

#[test]
fn every_signed_part_matters() {
    let a = authorizer();
    let auth = fields("phone", "control", VECTOR_SIG);
    let bad = |r: Result<Grant, AuthError>| matches!(r, Err(AuthError::BadSignature { .. }));
    assert!(bad(a.authorize("cam2", SID, SDP, Some(&auth))));
    assert!(bad(a.authorize("cam1", "abcdEFGH1235", SDP, Some(&auth))));
    assert!(bad(a.authorize("cam1", SID, "v=0\r\n", Some(&auth))));
    assert!(bad(a.authorize(
        "cam1",
        SID,
        SDP,
        Some(&fields("phone", "view", VECTOR_SIG))
    )));
    assert!(bad(a.authorize(
        "cam1",
        SID,
        SDP,
        Some(&fields("wall", "control", VECTOR_SIG))
    )));
    let other_nonce = OfferAuthFields {
        nonce: Some("BBBBBBBBBBBBBBBBBBBBBB".into()),
        ..auth
    };
    assert!(bad(a.authorize("cam1", SID, SDP, Some(&other_nonce))));
}

#[test]
fn refusals_are_distinct() {
    let a = authorizer();
    assert_eq!(a.authorize("cam1", SID, SDP, None), Err(AuthError::Missing));
    let v1 = OfferAuthFields {
        nonce: None,
        ..fields("phone", "control", VECTOR_SIG)
    };
    assert_eq!(
        a.authorize("cam1", SID, SDP, Some(&v1)),
        Err(AuthError::NoNonce {
            key: "phone".into()
        })
    );
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
        &VECTOR_SIG.replace('P', "+"),
    ] {
        assert_eq!(
            a.authorize("cam1", SID, SDP, Some(&fields("phone", "control", sig))),
            Err(AuthError::MalformedSignature {
                key: "phone".into()
            }),
            "sig {sig:?}"
        );
    }
    let sig = sign(SECRET.as_bytes(), "cam1", SID, "admin", NONCE, SDP);
    assert!(matches!(
        a.authorize("cam1", SID, SDP, Some(&fields("phone", "admin", &sig))),
        Err(AuthError::BadRole { .. })
    ));
    let sig = sign(b"another-secret-abcdef", "cam1", SID, "control", NONCE, SDP);
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
fn a_made_up_nonce_is_refused_even_when_well_signed() {
    let a = authorizer();
    let made_up = "ZZZZZZZZZZZZZZZZZZZZZZ";
    let sig = sign(SECRET.as_bytes(), "cam1", SID, "control", made_up, SDP);
    let auth = OfferAuthFields {
        nonce: Some(made_up.into()),
        ..fields("phone", "control", &sig)
    };
    assert_eq!(
        a.authorize("cam1", SID, SDP, Some(&auth)),
        Err(AuthError::StaleNonce {
            key: "phone".into()
        })
    );
}

#[test]
fn nonces_rotate_every_period_and_the_previous_one_still_counts() {
    let mut a = authorizer();
    let period = NONCE_PERIOD.as_micros() as u64;
    assert!(!a.nonce_due(1_000 + period - 1));
    assert!(a.nonce_due(1_000 + period));
    let auth = fields("phone", "control", VECTOR_SIG);
    a.rotate_nonce([1; 16], 1_000 + period);
    assert_ne!(a.nonce(), Some(NONCE));
    // Signed over the previous nonce: still accepted.
    assert!(a.authorize("cam1", SID, SDP, Some(&auth)).is_ok());
    a.rotate_nonce([2; 16], 1_000 + 2 * period);
    assert_eq!(
        a.authorize("cam1", SID, SDP, Some(&auth)),
        Err(AuthError::StaleNonce {
            key: "phone".into()
        })
    );
}

#[test]
fn used_sids_are_forgotten_with_their_nonce() {
    let mut a = authorizer();
    let g = a
        .authorize(
            "cam1",
            SID,
            SDP,
            Some(&fields("phone", "control", VECTOR_SIG)),
        )
        .expect("authorized");
    assert!(!a.sid_used(SID));
    assert!(a.record_session(SID, &g));
    assert!(a.sid_used(SID));
    a.rotate_nonce([1; 16], 2_000);
    assert!(
        a.sid_used(SID),
        "its nonce is the previous one: still accepted"
    );
    a.rotate_nonce([2; 16], 3_000);
    assert!(
        !a.sid_used(SID),
        "its nonce expired, so the offer cannot be replayed anyway"
    );
}

#[test]
fn used_sids_are_bounded() {
    let mut a = authorizer();
    let g = a
        .authorize(
            "cam1",
            SID,
            SDP,
            Some(&fields("phone", "control", VECTOR_SIG)),
        )
        .expect("authorized");
    for i in 0..USED_SIDS_MAX {
        assert!(a.record_session(&format!("sid{i:08}"), &g));
    }
    assert!(!a.record_session("onemoresid", &g));
}

#[test]
fn open_mode_grants_control_without_a_key() {
    let a = OfferAuthorizer::open([0; 16], 0);
    assert_eq!(a.mode(), "open");
    assert_eq!(a.nonce(), None);
    assert!(!a.nonce_due(u64::MAX));
    let g = a.authorize("cam1", SID, SDP, None).expect("open");
    assert_eq!(g.role, Role::Control);
    assert_eq!(g.session_key, None);
    let junk = fields("x", "view", "junk");
    assert_eq!(
        a.authorize("cam1", SID, SDP, Some(&junk)).map(|g| g.role),
        Ok(Role::Control)
    );
}

#[test]
fn a_signed_device_without_keys_refuses_everyone() {
    let a = OfferAuthorizer::signed(Vec::new(), [0; 16], 0);
    assert_eq!(a.mode(), "signed");
    assert!(matches!(
        a.authorize(
            "cam1",
            SID,
            SDP,
            Some(&fields("phone", "control", VECTOR_SIG))
        ),
        Err(AuthError::UnknownKey { .. })
    ));
}

#[test]
fn revoked_keys_stop_working() {
    let mut a = authorizer();
    let auth = fields("phone", "control", VECTOR_SIG);
    assert!(a.authorize("cam1", SID, SDP, Some(&auth)).is_ok());
    a.set_keys(vec![key("wall", "another-secret-abcdef", Role::View)]);
    assert!(!a.has_key("phone"));
    assert_eq!(
        a.authorize("cam1", SID, SDP, Some(&auth)),
        Err(AuthError::UnknownKey {
            key: "phone".into()
        })
    );
}

#[test]
fn broker_passwords_are_checked() {
    let a = authorizer();
    assert!(a.check_password("cam1", "phone", VECTOR_MQTT_PASSWORD));
    assert!(!a.check_password("cam2", "phone", VECTOR_MQTT_PASSWORD));
    assert!(!a.check_password("cam1", "wall", VECTOR_MQTT_PASSWORD));
    assert!(!a.check_password("cam1", "nobody", VECTOR_MQTT_PASSWORD));
    assert!(!a.check_password("cam1", "phone", "short"));
}

#[test]
fn debug_and_errors_never_show_secrets() {
    let a = authorizer();
    let shown = format!("{a:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("phone"));
    let k = SessionKey::derive(SECRET.as_bytes(), VECTOR_SIG);
    assert!(!format!("{k:?}").contains("0b9a"));
    let e = key("phone", SECRET, Role::View);
    assert!(!format!("{e:?}").contains(SECRET));
    let err = a
        .authorize(
            "cam1",
            SID,
            SDP,
            Some(&fields("phone", "control", &"A".repeat(43))),
        )
        .expect_err("wrong sig");
    assert!(!err.to_string().contains(SECRET));
}

/// The relay extension's vector, computed independently (node:crypto and
/// openssl) for the page's tests: both sides must agree byte for byte.
#[test]
fn relay_pin_and_mac_match_the_independent_vector() {
    let k = SessionKey::derive(b"s3cret-key", "abc");
    let janus = "http://127.0.0.1:8088/janus";
    let pin_x = k.seal_pin("sid12345abcd", "pin-0123456789").unwrap();
    assert_eq!(pin_x, "tU6_i4IHSggPy1AErL4");
    assert_eq!(
        k.relay_mac(janus, 77, &pin_x),
        "46BVHrT-WkaBmTAsOrU8fpra9b3cYxFhfNyly36tzwM"
    );
    assert_eq!(
        k.mac(Direction::Out, "error", "busy"),
        "bRDbuQEEJLM5-pEpvTrp45MAbUIxe2856Nh_fg465EM"
    );
    assert_eq!(
        k.open_pin("sid12345abcd", &pin_x).as_deref(),
        Some("pin-0123456789")
    );
    assert!(
        k.seal_pin("s", &"x".repeat(33)).is_none(),
        "at most 32 bytes"
    );
    assert!(k.verify_relay(
        janus,
        77,
        &pin_x,
        "46BVHrT-WkaBmTAsOrU8fpra9b3cYxFhfNyly36tzwM"
    ));
    assert!(!k.verify_relay(
        janus,
        77,
        &pin_x,
        "46BVHrT-WkaBmTAsOrU8fpra9b3cYxFhfNyly36tzwm"
    ));
}
