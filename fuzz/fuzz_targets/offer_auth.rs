#![no_main]
use campeer::control::config::Role;
use campeer::signaling::auth::{KeyEntry, OfferAuthFields, OfferAuthorizer};
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
    let key_entry = KeyEntry {
        id: "k".into(),
        secret: b"fuzz-secret-0123456789".to_vec(),
        role: Role::Control,
    };
    let authz = OfferAuthorizer::signed(vec![key_entry], [0; 16], 0);
    let nonce = authz.nonce().map(str::to_owned);
    let fields = OfferAuthFields { key: key.into(), role: role.into(), nonce, sig: sig.into() };
    // A random signature must never pass.
    assert!(authz.authorize("cam", "sid-fuzz-1", sdp, Some(&fields)).is_err() || sig.len() == 43);
});
