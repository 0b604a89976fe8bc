//! Every method, error code and role rule of docs/protocol.md#the-control-data-channel, against
//! embedded-hal-mock pins (outputs) and scripted inputs.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use embedded_hal_mock::eh1::MockError;

use super::*;
use crate::control::config::{Bias, Direction, Edge, GpioConfig};
use crate::control::gpio::Pin;

const T0: u64 = 1_000_000_000;

fn cfg(name: &str, direction: Direction) -> GpioConfig {
    GpioConfig {
        name: name.into(),
        line: format!("LINE_{name}"),
        direction,
        initial: false,
        active_low: false,
        safe: false,
        bias: Bias::AsIs,
        edge: Edge::Both,
        debounce_ms: 20,
        max_on_ms: None,
        revert_on_end: false,
    }
}

struct Rig {
    ctx: ControlContext,
    gate: Mock,
    door: Mock,
    keyframes: Arc<AtomicUsize>,
}

impl Rig {
    /// Output `gate` (initially low) expecting `gate` after its initial set;
    /// input `door` expecting `door`.
    fn new(gate: &[T], door: &[T]) -> Rig {
        let mut script = vec![T::set(State::Low)];
        script.extend_from_slice(gate);
        let gate = Mock::new(&script);
        let door = Mock::new(door);
        let bank = GpioBank::new(vec![
            (
                cfg("gate", Direction::Output),
                Pin::Output(Box::new(gate.clone())),
            ),
            (
                cfg("door", Direction::Input),
                Pin::Input(Box::new(door.clone())),
            ),
        ])
        .expect("valid bank");
        let keyframes = Arc::new(AtomicUsize::new(0));
        let counter = keyframes.clone();
        let ctx = ControlContext::new(
            bank,
            Arc::new(|| json!({"state": "online", "device": "cam1"})),
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        Rig {
            ctx,
            gate,
            door,
            keyframes,
        }
    }

    fn session(&self, role: Role) -> RpcSession {
        RpcSession::new("sidABCDEFGH", Some("phone".into()), role, &self.ctx.limits)
    }

    fn done(mut self) {
        self.gate.done();
        self.door.done();
    }
}

fn call(session: &mut RpcSession, rig: &Rig, text: &str) -> Value {
    let reply = session.handle_at(text, &rig.ctx, T0).expect("a reply");
    serde_json::from_str(&reply).expect("replies are JSON")
}

fn request(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string()
}

fn result(reply: &Value) -> &Value {
    assert_eq!(reply["jsonrpc"], "2.0");
    assert!(reply.get("error").is_none(), "unexpected error: {reply}");
    &reply["result"]
}

fn code(reply: &Value) -> i64 {
    assert_eq!(reply["jsonrpc"], "2.0");
    assert!(reply.get("result").is_none(), "unexpected result: {reply}");
    assert!(reply["error"]["message"].is_string(), "{reply}");
    reply["error"]["code"].as_i64().expect("numeric code")
}

#[test]
fn ping_reports_the_device_clock() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::View);
    let reply = call(
        &mut s,
        &rig,
        r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#,
    );
    assert_eq!(reply["id"], "a");
    assert_eq!(result(&reply), &json!({"now_us": T0}));
    rig.done();
}

#[test]
fn device_info_is_the_presence_object() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::View);
    let reply = call(&mut s, &rig, &request("device.info", Value::Null));
    assert_eq!(
        result(&reply),
        &json!({"state": "online", "device": "cam1"})
    );
    rig.done();
}

#[test]
fn video_keyframe_asks_the_encoder() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::View);
    let reply = call(&mut s, &rig, &request("video.keyframe", json!({})));
    assert_eq!(result(&reply), &json!({}));
    assert_eq!(rig.keyframes.load(Ordering::SeqCst), 1);
    rig.done();
}

#[test]
fn gpio_list_and_get_are_view_methods() {
    let rig = Rig::new(
        &[T::get_state(State::High), T::get_state(State::High)],
        &[T::get(State::Low), T::get(State::High)],
    );
    let mut s = rig.session(Role::View);
    let reply = call(&mut s, &rig, &request("gpio.list", json!([])));
    assert_eq!(
        result(&reply),
        &json!([
            {"name": "gate", "direction": "output", "value": true},
            {"name": "door", "direction": "input", "value": false},
        ])
    );
    let reply = call(&mut s, &rig, &request("gpio.get", json!({"name": "gate"})));
    assert_eq!(result(&reply), &json!({"name": "gate", "value": true}));
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.get", json!({"name": "door", "extra": 1})),
    );
    assert_eq!(result(&reply), &json!({"name": "door", "value": true}));
    rig.done();
}

#[test]
fn gpio_set_and_toggle_change_outputs_and_notify() {
    let rig = Rig::new(
        &[
            T::get_state(State::Low),
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::Low),
        ],
        &[],
    );
    let mut rx = rig.ctx.gpio.subscribe();
    let mut s = rig.session(Role::Control);
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.set", json!({"name": "gate", "value": true})),
    );
    assert_eq!(result(&reply), &json!({"name": "gate", "value": true}));
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.toggle", json!({"name": "gate"})),
    );
    assert_eq!(result(&reply), &json!({"name": "gate", "value": false}));
    let first = rx.try_recv().expect("a change");
    let note: Value = serde_json::from_str(&notification(&first)).expect("JSON");
    assert_eq!(note["jsonrpc"], "2.0");
    assert_eq!(note["method"], "gpio.changed");
    assert!(note.get("id").is_none(), "notifications have no id");
    assert_eq!(note["params"]["name"], "gate");
    assert_eq!(note["params"]["value"], true);
    assert!(note["params"]["ts_us"].as_u64().is_some_and(|t| t > 0));
    assert!(!rx.try_recv().expect("a second change").value);
    rig.done();
}

#[tokio::test(start_paused = true)]
async fn gpio_pulse_answers_at_once_and_restores_after_the_session_is_gone() {
    let rig = Rig::new(
        &[
            T::get_state(State::Low),
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::Low),
        ],
        &[],
    );
    let mut rx = rig.ctx.gpio.subscribe();
    let mut s = rig.session(Role::Control);
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.pulse", json!({"name": "gate", "ms": 200})),
    );
    assert_eq!(result(&reply), &json!({"name": "gate", "value": true}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A second pulse on the same line replaces the first.
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.pulse", json!({"name": "gate", "ms": 200})),
    );
    assert_eq!(result(&reply), &json!({"name": "gate", "value": true}));
    drop(s);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.try_recv().expect("pulse start").value);
    assert!(rx.try_recv().is_err(), "first pulse's restore was replaced");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(!rx.try_recv().expect("restored").value);
    rig.done();
}

#[test]
fn view_sessions_may_not_change_outputs() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::View);
    for (method, params) in [
        ("gpio.set", json!({"name": "gate", "value": true})),
        ("gpio.toggle", json!({"name": "gate"})),
        ("gpio.pulse", json!({"name": "gate", "ms": 10})),
        // Forbidden comes before params and names are looked at.
        ("gpio.set", json!({"name": "nope"})),
    ] {
        assert_eq!(
            code(&call(&mut s, &rig, &request(method, params))),
            FORBIDDEN,
            "{method}"
        );
    }
    rig.done();
}

#[test]
fn control_sessions_may_call_view_methods() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::Control);
    for method in ["ping", "device.info", "video.keyframe"] {
        result(&call(&mut s, &rig, &request(method, Value::Null)));
    }
    rig.done();
}

#[test]
fn parse_errors_answer_with_null_id() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::View);
    for text in ["{", "", "nul", "{\"jsonrpc\":\"2.0\",\"id\":1,"] {
        let reply = call(&mut s, &rig, text);
        assert_eq!(code(&reply), PARSE_ERROR, "{text:?}");
        assert_eq!(reply["id"], Value::Null);
    }
    rig.done();
}

#[test]
fn invalid_requests() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::Control);
    let cases = [
        // Batches are refused.
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Value::Null),
        ("[]", Value::Null),
        ("42", Value::Null),
        (r#""ping""#, Value::Null),
        ("null", Value::Null),
        (r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#, json!(3)),
        (r#"{"id":3,"method":"ping"}"#, json!(3)),
        (r#"{"jsonrpc":2.0,"id":3,"method":"ping"}"#, json!(3)),
        (r#"{"jsonrpc":"2.0","id":"x","method":5}"#, json!("x")),
        (r#"{"jsonrpc":"2.0","id":"x"}"#, json!("x")),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            Value::Null,
        ),
        (r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, Value::Null),
        (
            r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
            Value::Null,
        ),
        // Invalid even without an id: JSON-RPC answers with id null.
        (r#"{"jsonrpc":"2.0"}"#, Value::Null),
    ];
    for (text, id) in cases {
        let reply = call(&mut s, &rig, text);
        assert_eq!(code(&reply), INVALID_REQUEST, "{text}");
        assert_eq!(reply["id"], id, "{text}");
    }
    rig.done();
}

#[test]
fn oversized_messages_are_refused_unread() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::Control);
    let padding = "x".repeat(rig.ctx.limits.max_message_bytes);
    let text =
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"p": padding}}).to_string();
    let reply = call(&mut s, &rig, &text);
    assert_eq!(code(&reply), INVALID_REQUEST);
    assert_eq!(reply["id"], Value::Null);
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("16384")),
        "{reply}"
    );
    rig.done();
}

#[test]
fn unknown_methods() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::Control);
    for method in ["gpio.delete", "PING", "", "rpc.discover"] {
        assert_eq!(
            code(&call(&mut s, &rig, &request(method, Value::Null))),
            METHOD_NOT_FOUND
        );
    }
    rig.done();
}

#[test]
fn invalid_params() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::Control);
    let cases = [
        ("gpio.get", Value::Null),
        ("gpio.get", json!(["gate"])),
        ("gpio.get", json!({})),
        ("gpio.get", json!({"name": 5})),
        ("gpio.set", json!({"name": "gate"})),
        ("gpio.set", json!({"name": "gate", "value": 1})),
        ("gpio.set", json!({"name": "gate", "value": "true"})),
        ("gpio.toggle", json!("gate")),
        ("gpio.pulse", json!({"name": "gate"})),
        ("gpio.pulse", json!({"name": "gate", "ms": 0})),
        ("gpio.pulse", json!({"name": "gate", "ms": 60_001})),
        ("gpio.pulse", json!({"name": "gate", "ms": -5})),
        ("gpio.pulse", json!({"name": "gate", "ms": 1.5})),
        ("gpio.pulse", json!({"name": "gate", "ms": "100"})),
        ("ping", json!(5)),
        ("gpio.list", json!("all")),
        // Inputs cannot be driven.
        ("gpio.set", json!({"name": "door", "value": true})),
        ("gpio.toggle", json!({"name": "door"})),
        ("gpio.pulse", json!({"name": "door", "ms": 10})),
    ];
    for (method, params) in cases {
        let reply = call(&mut s, &rig, &request(method, params.clone()));
        assert_eq!(code(&reply), INVALID_PARAMS, "{method} {params}");
        assert_eq!(reply["id"], 7);
    }
    rig.done();
}

#[test]
fn unknown_control_names() {
    let rig = Rig::new(&[], &[]);
    let mut s = rig.session(Role::Control);
    for (method, params) in [
        ("gpio.get", json!({"name": "nope"})),
        ("gpio.get", json!({"name": "gpiochip0:17"})),
        ("gpio.get", json!({"name": "GPIO17"})),
        ("gpio.set", json!({"name": "nope", "value": true})),
        ("gpio.toggle", json!({"name": "/dev/gpiochip0"})),
        ("gpio.pulse", json!({"name": "nope", "ms": 10})),
    ] {
        assert_eq!(
            code(&call(&mut s, &rig, &request(method, params))),
            UNKNOWN_CONTROL,
            "{method}"
        );
    }
    rig.done();
}

#[test]
fn hardware_errors() {
    let err = MockError::Io(ErrorKind::Other);
    let rig = Rig::new(
        &[
            T::get_state(State::Low),
            T::set(State::High).with_error(err.clone()),
            T::get_state(State::Low).with_error(err.clone()),
        ],
        &[T::get(State::Low).with_error(err)],
    );
    let mut s = rig.session(Role::Control);
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.set", json!({"name": "gate", "value": true})),
    );
    assert_eq!(code(&reply), HARDWARE_ERROR);
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("gate") && !message.contains("Io"),
        "{message}"
    );
    assert_eq!(
        code(&call(
            &mut s,
            &rig,
            &request("gpio.toggle", json!({"name": "gate"}))
        )),
        HARDWARE_ERROR
    );
    assert_eq!(
        code(&call(
            &mut s,
            &rig,
            &request("gpio.get", json!({"name": "door"}))
        )),
        HARDWARE_ERROR
    );
    rig.done();
}

#[test]
fn after_shutdown_changes_are_hardware_errors() {
    let rig = Rig::new(&[T::get_state(State::Low), T::set(State::Low)], &[]);
    rig.ctx.gpio.safe_all().expect("safe");
    let mut s = rig.session(Role::Control);
    let reply = call(
        &mut s,
        &rig,
        &request("gpio.set", json!({"name": "gate", "value": true})),
    );
    assert_eq!(code(&reply), HARDWARE_ERROR);
    rig.done();
}

#[test]
fn notifications_are_executed_but_never_answered() {
    let rig = Rig::new(&[T::get_state(State::Low), T::set(State::High)], &[]);
    let mut s = rig.session(Role::Control);
    let set = r#"{"jsonrpc":"2.0","method":"gpio.set","params":{"name":"gate","value":true}}"#;
    assert_eq!(s.handle_at(set, &rig.ctx, T0), None);
    let ping = r#"{"jsonrpc":"2.0","method":"ping"}"#;
    assert_eq!(s.handle_at(ping, &rig.ctx, T0), None);
    // Errors in notifications are not answered either.
    let bad = r#"{"jsonrpc":"2.0","method":"nope"}"#;
    assert_eq!(s.handle_at(bad, &rig.ctx, T0), None);
    let forbidden = r#"{"jsonrpc":"2.0","method":"gpio.toggle","params":{"name":"gate"}}"#;
    let mut viewer = rig.session(Role::View);
    assert_eq!(viewer.handle_at(forbidden, &rig.ctx, T0), None);
    // An explicit null id is a request.
    let null_id = r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#;
    let reply: Value =
        serde_json::from_str(&s.handle_at(null_id, &rig.ctx, T0).expect("reply")).expect("JSON");
    assert_eq!(reply["id"], Value::Null);
    result(&reply);
    rig.done();
}

#[test]
fn rate_limit_is_a_token_bucket() {
    let rig = Rig::new(&[], &[]);
    let limits = RpcLimits {
        max_message_bytes: 1024,
        rate_per_sec: 10,
        burst: 3,
    };
    let mut s = RpcSession::new("sidABCDEFGH", None, Role::View, &limits);
    let ping = request("ping", Value::Null);
    let at = |s: &mut RpcSession, t: u64| -> Value {
        serde_json::from_str(&s.handle_at(&ping, &rig.ctx, t).expect("a reply")).expect("JSON")
    };
    for _ in 0..3 {
        result(&at(&mut s, T0));
    }
    let limited = at(&mut s, T0);
    assert_eq!(code(&limited), RATE_LIMITED);
    assert_eq!(limited["id"], 7);
    // 10/s: one token every 100 ms.
    assert_eq!(code(&at(&mut s, T0 + 99_000)), RATE_LIMITED);
    result(&at(&mut s, T0 + 100_000));
    assert_eq!(code(&at(&mut s, T0 + 100_000)), RATE_LIMITED);
    // Garbage and notifications use tokens; limited ones get no answer.
    assert_eq!(s.handle_at("{", &rig.ctx, T0 + 100_000), None);
    let note = r#"{"jsonrpc":"2.0","method":"ping"}"#;
    assert_eq!(s.handle_at(note, &rig.ctx, T0 + 100_000), None);
    // A long quiet spell refills only up to the burst.
    for _ in 0..3 {
        result(&at(&mut s, T0 + 60_000_000));
    }
    assert_eq!(code(&at(&mut s, T0 + 60_000_000)), RATE_LIMITED);
    rig.done();
}

#[test]
fn token_bucket_edges() {
    let mut b = TokenBucket::new(20, 40);
    assert_eq!((0..50).filter(|_| b.try_take(5)).count(), 40);
    // The clock going back adds nothing and does not wrap.
    assert!(!b.try_take(0));
    assert!(!b.try_take(5));
    assert!(b.try_take(50_005));
    let mut none = TokenBucket::new(0, 0);
    assert!(!none.try_take(u64::MAX));
    let mut huge = TokenBucket::new(u32::MAX, u32::MAX);
    assert!(huge.try_take(0));
    assert!(huge.try_take(u64::MAX));
}

#[test]
fn binary_messages_are_invalid_requests() {
    let reply: Value = serde_json::from_str(&binary_refused()).expect("JSON");
    assert_eq!(code(&reply), INVALID_REQUEST);
    assert_eq!(reply["id"], Value::Null);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn state_changing_calls_are_audited() {
    let rig = Rig::new(
        &[T::get_state(State::Low), T::set(State::High)],
        &[T::get(State::Low)],
    );
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut s = rig.session(Role::Control);
        call(
            &mut s,
            &rig,
            &request("gpio.set", json!({"name": "gate", "value": true})),
        );
        call(&mut s, &rig, &request("gpio.get", json!({"name": "door"})));
        let mut viewer = rig.session(Role::View);
        call(
            &mut viewer,
            &rig,
            &request("gpio.toggle", json!({"name": "gate"})),
        );
    });
    let log = String::from_utf8(captured.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .expect("UTF-8 log");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("audit")).collect();
    assert_eq!(
        lines.len(),
        2,
        "set and the refused toggle, not get:\n{log}"
    );
    for needle in [
        "sid=sidABCDEFGH",
        "key=phone",
        "method=\"gpio.set\"",
        r#""value":true"#,
        "role=control",
    ] {
        assert!(
            lines[0].contains(needle),
            "{needle} missing in {}",
            lines[0]
        );
    }
    assert!(
        lines[1].contains("method=\"gpio.toggle\"") && lines[1].contains("-32001"),
        "{}",
        lines[1]
    );
    rig.done();
}

/// A context whose one output `strike` (a SimPin) has `max_on_ms` and
/// `revert_on_end`.
fn guarded_context() -> (ControlContext, crate::control::gpio::SimPin) {
    let sim = crate::control::gpio::SimPin::new(false);
    let mut strike = cfg("strike", Direction::Output);
    strike.max_on_ms = Some(250);
    strike.revert_on_end = true;
    let bank = GpioBank::new(vec![(strike, Pin::Output(Box::new(sim.clone())))]).expect("bank");
    let ctx = ControlContext::new(bank, Arc::new(|| json!({})), Arc::new(|| {}));
    (ctx, sim)
}

#[tokio::test(start_paused = true)]
async fn capped_pulses_say_so_and_sessions_own_what_they_drive() {
    let (ctx, sim) = guarded_context();
    let mut s = RpcSession::new("sidABCDEFGH", None, Role::Control, &ctx.limits).for_session(11);
    let text = request("gpio.pulse", json!({"name": "strike", "ms": 1000}));
    let reply: Value = serde_json::from_str(&s.handle_at(&text, &ctx, T0).expect("reply")).unwrap();
    assert_eq!(
        reply["result"],
        json!({"name": "strike", "value": true, "capped_ms": 250})
    );
    tokio::time::sleep(std::time::Duration::from_millis(251)).await;
    assert!(!sim.is_high_now(), "cut at max_on_ms");
    // An uncapped pulse has no capped_ms.
    let text = request("gpio.pulse", json!({"name": "strike", "ms": 100}));
    let reply: Value = serde_json::from_str(&s.handle_at(&text, &ctx, T0).expect("reply")).unwrap();
    assert_eq!(reply["result"], json!({"name": "strike", "value": true}));
    tokio::time::sleep(std::time::Duration::from_millis(101)).await;
    // The session's set belongs to session 11: its end reverts it.
    let text = request("gpio.set", json!({"name": "strike", "value": true}));
    s.handle_at(&text, &ctx, T0).expect("reply");
    assert!(sim.is_high_now());
    ctx.gpio.session_ended(12);
    assert!(sim.is_high_now());
    ctx.gpio.session_ended(11);
    assert!(!sim.is_high_now(), "reverted when its session ended");
}
