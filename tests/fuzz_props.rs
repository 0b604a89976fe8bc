//! Property-based fuzzing of every parser that takes outside input. Runs in
//! CI with a bounded number of cases (PROPTEST_CASES raises it); the
//! coverage-guided cargo-fuzz targets in fuzz/ cover the same entry points
//! for longer runs.

use campeer::config::Config;
use campeer::control::config::Role;
use campeer::control::gpio::GpioBank;
use campeer::control::rpc::{ControlContext, RpcSession};
use campeer::rtc::offer::OfferSummary;
use campeer::signaling::auth::{sign, KeyEntry, OfferAuthFields, OfferAuthorizer};
use campeer::signaling::messages::{parse_device_message, parse_viewer_message};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

/// JSON-ish text: mostly near-valid messages, some pure noise.
fn jsonish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\{\"(type|jsonrpc|id|method|params|sdp|candidate|auth)\":(\"[a-z.]{0,12}\"|[0-9]{1,20}|null|true|\\[\\]|\\{\\}|-?[0-9]\\.[0-9]e[0-9]{1,3})(,\"[a-z]{1,8}\":(\"x\"|1|null|\\{\"name\":\"led\"\\}))*\\}",
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn ctx() -> ControlContext {
    ControlContext::new(GpioBank::empty(), Arc::new(|| Value::Null), Arc::new(|| {}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn signaling_parsers_never_panic(text in jsonish()) {
        let _ = parse_viewer_message(text.as_bytes());
        let _ = parse_device_message(text.as_bytes());
    }

    #[test]
    fn viewer_messages_that_parse_round_trip(text in jsonish()) {
        if let Ok(m) = parse_viewer_message(text.as_bytes()) {
            let again = parse_viewer_message(m.to_json().as_bytes());
            prop_assert_eq!(again.ok(), Some(m));
        }
    }

    #[test]
    fn json_rpc_always_answers_well_formed(text in jsonish()) {
        let ctx = ctx();
        let mut s = RpcSession::new("fuzzsid1", None, Role::View, &ctx.limits);
        if let Some(reply) = s.handle_at(&text, &ctx, 1_000_000) {
            let v: Value = serde_json::from_str(&reply).expect("replies are JSON");
            prop_assert_eq!(&v["jsonrpc"], "2.0");
            prop_assert!(v.get("result").is_some() != v.get("error").is_some(), "{}", reply);
        }
    }

    #[test]
    fn sdp_summary_never_panics(text in any::<String>(), prefix in "(v=0\r\n)?(m=(video|audio|application) [0-9]{1,5} [A-Z/]{3,16} [0-9 ]{0,8}\r\n)?(a=(rtpmap|fmtp|mid):[^\r\n]{0,30}\r\n){0,4}") {
        let _ = OfferSummary::parse(&format!("{prefix}{text}"));
    }

    #[test]
    fn config_parsing_and_validation_never_panic(text in "(\\[(mqtt|video|audio|webrtc|access)\\]\n)?([a-z_]{1,12} = (\"[^\"\n]{0,12}\"|-?[0-9]{1,12}|true|\\[\\]))?\n?[^\u{0}]{0,40}") {
        if let Ok(c) = Config::from_toml_str(&text, "fuzz.toml") {
            let _ = c.validate();
        }
    }

    #[test]
    fn only_the_right_signature_authorizes(sid in "[A-Za-z0-9_-]{8,20}", sdp in ".{0,64}", sig in "[A-Za-z0-9_-]{0,50}", role in "(view|control|admin|)") {
        let key = KeyEntry { id: "k".into(), secret: b"fuzz-secret-0123456789".to_vec(), role: Role::View };
        let authz = OfferAuthorizer::signed(vec![key], [7; 16], 0);
        let nonce = authz.nonce().unwrap().to_owned();
        let right = sign(b"fuzz-secret-0123456789", "cam", &sid, &role, &nonce, &sdp);
        let fields = OfferAuthFields { key: "k".into(), role: role.clone(), nonce: Some(nonce.clone()), sig: sig.clone() };
        let verdict = authz.authorize("cam", &sid, &sdp, Some(&fields));
        if sig != right {
            prop_assert!(verdict.is_err());
        }
        let good = OfferAuthFields { key: "k".into(), role: role.clone(), nonce: Some(nonce), sig: right };
        prop_assert_eq!(authz.authorize("cam", &sid, &sdp, Some(&good)).is_ok(), role == "view");
    }
}
