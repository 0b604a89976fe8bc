#![no_main]
use campeer::control::config::{AccessConfig, AccessKey, Role};
use campeer::signaling::auth::{OfferAuthFields, OfferAuthorizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (key, role, sig, sdp) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let access = AccessConfig {
        keys: vec![AccessKey {
            id: "k".into(),
            secret: Some("fuzz-secret-0123456789".into()),
            secret_file: None,
            role: Role::Control,
        }],
    };
    let authz = OfferAuthorizer::from_config(&access).expect("valid keys");
    let fields = OfferAuthFields { key: key.into(), role: role.into(), sig: sig.into() };
    // A random signature must never pass.
    assert!(authz.authorize("cam", "sid-fuzz-1", sdp, Some(&fields)).is_err() || sig.len() == 43);
});
