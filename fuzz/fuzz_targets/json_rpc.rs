#![no_main]
use campeer::control::config::Role;
use campeer::control::gpio::GpioBank;
use campeer::control::rpc::{ControlContext, RpcSession};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ctx = ControlContext::new(GpioBank::empty(), Arc::new(|| serde_json::Value::Null), Arc::new(|| {}));
    let mut s = RpcSession::new("fuzzsid1", None, Role::Control, &ctx.limits);
    if let Some(reply) = s.handle_at(text, &ctx, 1) {
        let v: serde_json::Value = serde_json::from_str(&reply).expect("replies are JSON");
        assert_eq!(v["jsonrpc"], "2.0");
    }
});
