//! Section 8 checked against figures computed by an independent
//! implementation of the protocol text (Python's hmac, hashlib and json),
//! not by this code.

use super::*;
use crate::control::config::Role;
use crate::signaling::auth::{sign_ice, IceAuthFields, KeyEntry, OfferAuthorizer};

const SECRET: &[u8] = b"ice-test-secret-0123456789";
const DEVICE: &str = "cam1";
const SID: &str = "iceSID01";
const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAA";
// From the independent implementation:
const SIG: &str = "o0i0UX0A2HSwxJFqsGZoQZ2O1Be8KSXS-lGWYyhyQ0w";
const PASSWORD: &str = "nTBa68eEjSfB268BIMaGVomMaQY=";
const SEALED: &str = "LgWS5t8MT3ZxGYC9rvGWL0hC0ZKNbSiezB6uYSD7oERAhsRghFRjFwIdxQqmGE409iwo9vgh_HA1suhSmK1py9BPE8rHGCertWHqV2-kPF3QNiSAs2rpXdZjGjvYRfmSVmnQZZTmJuE0_5kI0wF1wvvpfop9X5htXvxCBwg6fcMkBKbayt0Xg_tn4YnLARDyr4lIyOv31u_umEKDbA";
const MAC: &str = "G49_C64uc5mGpGIgVeTlr9_B0SGnMRzD0Ynrsn2ZLlI";

fn source() -> IceServerSource {
    IceServerSource::new(
        vec![IceServerEntry {
            urls: vec!["stun:198.18.0.1:3478".into()],
            username: None,
            credential: None,
        }],
        Some(TurnRest {
            urls: vec!["turn:198.18.0.1:3478?transport=udp".into()],
            secret: b"turn-shared-secret".to_vec(),
            lifetime: Duration::from_secs(3600),
        }),
    )
}

#[test]
fn the_request_signature_matches_the_protocol_text() {
    assert_eq!(sign_ice(SECRET, DEVICE, SID, NONCE), SIG);
}

#[test]
fn minted_turn_credentials_are_coturns_rest_form() {
    let (servers, expires) = source().mint("phone", 1_700_000_000);
    assert_eq!(expires, 1_700_003_600);
    assert_eq!(servers[0].username.as_deref(), Some("1700003600:phone"));
    assert_eq!(servers[0].credential.as_deref(), Some(PASSWORD));
    assert_eq!(servers[1].urls, ["stun:198.18.0.1:3478"]);
    assert_eq!(servers.len(), 2);
}

#[test]
fn static_servers_alone_never_expire() {
    let s = IceServerSource::new(source().statics.clone(), None);
    let (servers, expires) = s.mint("phone", 1_700_000_000);
    assert_eq!((servers.len(), expires), (1, 0));
}

#[test]
fn the_sealed_reply_matches_the_protocol_text_and_opens() {
    let key = SessionKey::derive_ice(SECRET, SIG);
    let (servers, expires) = source().mint("phone", 1_700_000_000);
    let (msg, mac) = reply(Some(&key), SID, &servers, expires);
    let DeviceMessage::Ice {
        servers_x,
        servers: clear,
        ..
    } = &msg
    else {
        panic!("{msg:?}");
    };
    assert_eq!(servers_x.as_deref(), Some(SEALED));
    assert!(clear.is_none(), "nothing in clear on a signed device");
    assert_eq!(mac.as_deref(), Some(MAC));
    assert_eq!(
        open(Some(&key), SID, &msg, mac.as_deref()),
        Ok((servers, expires))
    );
}

#[test]
fn a_reply_opens_only_with_its_key_sid_and_mac() {
    let key = SessionKey::derive_ice(SECRET, SIG);
    let (servers, expires) = source().mint("phone", 1_700_000_000);
    let (msg, mac) = reply(Some(&key), SID, &servers, expires);
    let other = SessionKey::derive_ice(b"another-secret-0123456789", SIG);
    assert_eq!(
        open(Some(&other), SID, &msg, mac.as_deref()),
        Err(OpenError::BadMac)
    );
    assert_eq!(open(Some(&key), SID, &msg, None), Err(OpenError::BadMac));
    // A changed expiry breaks the mac.
    let DeviceMessage::Ice { servers_x, .. } = msg.clone() else {
        unreachable!()
    };
    let later = DeviceMessage::Ice {
        servers_x,
        servers: None,
        expires: expires + 1,
    };
    assert_eq!(
        open(Some(&key), SID, &later, mac.as_deref()),
        Err(OpenError::BadMac)
    );
    // Another sid's keystream gives garbage, which is refused, not used.
    let (other_sid_msg, other_mac) = reply(Some(&key), "iceSID02", &servers, expires);
    assert!(open(Some(&key), SID, &other_sid_msg, other_mac.as_deref()).is_err());
}

#[test]
fn open_devices_answer_in_clear() {
    let (servers, expires) = source().mint("viewer", 10);
    let (msg, mac) = reply(None, SID, &servers, expires);
    assert!(mac.is_none());
    let text = msg.to_json();
    assert!(
        text.contains("\"servers\":[") && !text.contains("servers_x"),
        "{text}"
    );
    assert_eq!(open(None, SID, &msg, None), Ok((servers, expires)));
}

#[test]
fn the_servers_json_stays_within_4096_bytes() {
    let many: Vec<IceServerEntry> = (0..200)
        .map(|i| IceServerEntry {
            urls: vec![format!("stun:stun{i}.example.org:3478")],
            username: None,
            credential: None,
        })
        .collect();
    let json = servers_json(&many);
    assert!(json.len() <= MAX_SERVERS_JSON, "{}", json.len());
    let kept: Vec<IceServerEntry> = serde_json::from_slice(&json).unwrap();
    assert!(
        kept.len() > 50 && kept[..] == many[..kept.len()],
        "the first ones are kept"
    );
}

#[test]
fn requests_are_checked_like_offers() {
    let keys = vec![KeyEntry {
        id: "phone".into(),
        secret: SECRET.to_vec(),
        role: Role::View,
    }];
    let mut nonce = [0u8; 16];
    nonce[0] = 1;
    let a = OfferAuthorizer::signed(keys, nonce, 0);
    let n = a.nonce().unwrap().to_owned();
    let good = IceAuthFields {
        key: "phone".into(),
        nonce: n.clone(),
        sig: sign_ice(SECRET, DEVICE, SID, &n),
    };
    let g = a
        .authorize_ice(DEVICE, SID, Some(&good))
        .expect("a good request");
    assert_eq!(g.key_id.as_deref(), Some("phone"));
    assert_eq!(g.key, Some(SessionKey::derive_ice(SECRET, &good.sig)));
    assert!(a.authorize_ice(DEVICE, SID, None).is_err(), "no auth");
    assert!(
        a.authorize_ice(DEVICE, "iceSID02", Some(&good)).is_err(),
        "another sid"
    );
    assert!(
        a.authorize_ice("cam2", SID, Some(&good)).is_err(),
        "another device"
    );
    let stale = IceAuthFields {
        nonce: NONCE.into(),
        sig: sign_ice(SECRET, DEVICE, SID, NONCE),
        ..good.clone()
    };
    assert!(
        a.authorize_ice(DEVICE, SID, Some(&stale)).is_err(),
        "a nonce the device never gave"
    );
    let unknown = IceAuthFields {
        key: "nobody".into(),
        ..good.clone()
    };
    assert!(
        a.authorize_ice(DEVICE, SID, Some(&unknown)).is_err(),
        "unknown key"
    );
    let open = OfferAuthorizer::open([0; 16], 0);
    assert_eq!(
        open.authorize_ice(DEVICE, SID, None).map(|g| g.key),
        Ok(None)
    );
}
