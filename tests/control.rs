//! Data-channel control (docs/protocol.md#authorization-protocol-version-2 and #the-control-data-channel) over a real broker and
//! real WebRTC data channels, with simulated GPIO lines (`mock:`).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn config(dir: &TempDir, extra: &str) -> String {
    let path = dir.0.join("campeer.toml");
    let text = format!(
        "[video]\nwidth = 320\nheight = 240\n\n\
         [[gpio]]\nname = \"led\"\nline = \"mock:led\"\ndirection = \"output\"\n\n\
         [[gpio]]\nname = \"door\"\nline = \"mock:door\"\ndirection = \"input\"\n\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn secret_file(dir: &TempDir, name: &str, secret: &str) -> String {
    let p = dir.0.join(name);
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

const KEYS: &str = "[[access.keys]]\nid = \"phone\"\nsecret = \"0123456789abcdef-phone\"\nrole = \"control\"\n\n\
                    [[access.keys]]\nid = \"guest\"\nsecret = \"0123456789abcdef-guest\"\nrole = \"view\"\n";

fn result(call: &Value) -> &Value {
    &call["response"]["result"]
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toggle_is_seen_by_its_caller_and_by_another_session() {
    let dir = TempDir::new("ctl");
    let broker = Broker::start();
    let cfg = config(&dir, "");
    let d = Daemon::start(&broker, "cam-ctl", &["--config", &cfg]).await;
    let watcher = view_spawn(
        &broker,
        "cam-ctl",
        &["--no-video", "--hold", "--timeout", "6"],
    );
    assert_eq!(wait_sessions(broker.port, "cam-ctl", 1, T).await, Some(1));
    assert!(
        d.wait_log(": control channel sid=", 1, T).await,
        "the watcher's control channel never opened"
    );
    let r = view(
        &broker,
        "cam-ctl",
        &[
            "--no-video",
            "--call",
            "gpio.toggle",
            r#"{"name":"led"}"#,
            "--call",
            "gpio.list",
            "-",
            "--call",
            "device.info",
            "-",
        ],
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let calls = r["calls"].as_array().unwrap();
    assert_eq!(
        result(&calls[0]),
        &serde_json::json!({"name": "led", "value": true}),
        "{r}"
    );
    let list = result(&calls[1]).as_array().expect("gpio.list result");
    assert!(
        list.iter()
            .any(|c| c["name"] == "led" && c["value"] == true && c["direction"] == "output"),
        "{r}"
    );
    assert!(
        list.iter()
            .any(|c| c["name"] == "door" && c["direction"] == "input"),
        "{r}"
    );
    let info = result(&calls[2]);
    assert_eq!(info["device"], "cam-ctl");
    assert_eq!(
        info["controls"].as_array().map(|c| c.len()),
        Some(2),
        "{info}"
    );
    let changed = |v: &Value| {
        v["notifications"].as_array().is_some_and(|n| {
            n.iter().any(|m| {
                m["method"] == "gpio.changed"
                    && m["params"]["name"] == "led"
                    && m["params"]["value"] == true
                    && m["params"]["ts_us"].as_u64().is_some()
            })
        })
    };
    assert!(changed(&r), "the caller got no gpio.changed: {r}");
    let w = watcher.await.unwrap();
    assert!(changed(&w), "the other session got no gpio.changed: {w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_rpc_errors_and_the_session_stays_up() {
    let dir = TempDir::new("ctl-bad");
    let broker = Broker::start();
    let cfg = config(&dir, "");
    let _d = Daemon::start(&broker, "cam-rpc", &["--config", &cfg]).await;
    let r = view(
        &broker,
        "cam-rpc",
        &[
            "--no-video",
            "--send-raw",
            "{not json",
            "--send-raw",
            r#"[{"jsonrpc":"2.0","id":9,"method":"ping"}]"#,
            "--call",
            "no.such.method",
            "-",
            "--call",
            "gpio.set",
            r#"{"name":"led"}"#,
            "--call",
            "gpio.get",
            r#"{"name":"garage"}"#,
            "--call",
            "gpio.pulse",
            r#"{"name":"led","ms":0}"#,
            "--call",
            "gpio.set",
            r#"{"name":"door","value":true}"#,
            "--call",
            "ping",
            "-",
        ],
    )
    .await;
    let other = r["control_other"].as_array().unwrap();
    let codes: Vec<i64> = other.iter().map(error_code).collect();
    assert!(codes.contains(&-32700), "parse error missing: {r}");
    assert!(codes.contains(&-32600), "batch refusal missing: {r}");
    let calls = r["calls"].as_array().unwrap();
    assert_eq!(error_code(&calls[0]["response"]), -32601, "{r}");
    assert_eq!(error_code(&calls[1]["response"]), -32602, "{r}");
    assert_eq!(error_code(&calls[2]["response"]), -32002, "{r}");
    assert_eq!(error_code(&calls[3]["response"]), -32602, "{r}");
    assert_eq!(
        error_code(&calls[4]["response"]),
        -32602,
        "driving an input: {r}"
    );
    assert!(
        result(&calls[5])["now_us"].as_u64().is_some(),
        "the session did not survive: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_offers_roles_and_refusals() {
    let dir = TempDir::new("ctl-auth");
    let broker = Broker::start();
    let cfg = config(&dir, KEYS);
    let d = Daemon::start(&broker, "cam-auth", &["--signed", "--config", &cfg]).await;
    let status = wait_status(
        broker.port,
        "campeer",
        "cam-auth",
        |v| v["state"] == "online",
        T,
    )
    .await
    .unwrap();
    assert_eq!(status["auth"], "signed");

    let phone = secret_file(&dir, "phone.key", "0123456789abcdef-phone");
    let guest = secret_file(&dir, "guest.key", "0123456789abcdef-guest");
    let wrong = secret_file(&dir, "wrong.key", "0123456789abcdef-WRONG");

    // The right key with the control role may toggle.
    let ok = view(
        &broker,
        "cam-auth",
        &[
            "--no-video",
            "--key",
            "phone",
            "--secret-file",
            &phone,
            "--role",
            "control",
            "--call",
            "gpio.toggle",
            r#"{"name":"led"}"#,
        ],
    )
    .await;
    assert!(ok["error"].is_null(), "{ok}");
    assert_eq!(result(&ok["calls"][0])["value"], true, "{ok}");

    // A view session may read but not act.
    let v = view(
        &broker,
        "cam-auth",
        &[
            "--no-video",
            "--key",
            "guest",
            "--secret-file",
            &guest,
            "--role",
            "view",
            "--call",
            "gpio.toggle",
            r#"{"name":"led"}"#,
            "--call",
            "gpio.get",
            r#"{"name":"led"}"#,
        ],
    )
    .await;
    assert_eq!(error_code(&v["calls"][0]["response"]), -32001, "{v}");
    assert_eq!(result(&v["calls"][1])["value"], true, "{v}");

    let before = d.log_text().matches("new session").count();
    // No auth, a wrong signature, an unknown key, a role above the key's: all unauthorized.
    for extra in [
        vec![],
        vec![
            "--key",
            "phone",
            "--secret-file",
            &wrong,
            "--role",
            "control",
        ],
        vec!["--key", "nobody", "--secret-file", &phone, "--role", "view"],
        vec![
            "--key",
            "guest",
            "--secret-file",
            &guest,
            "--role",
            "control",
        ],
    ] {
        let mut args = vec!["--no-video", "--timeout", "10"];
        args.extend(extra.iter().copied());
        let r = view(&broker, "cam-auth", &args).await;
        assert_eq!(r["error_code"], "unauthorized", "{args:?}: {r}");
        assert!(r["connected_ms"].is_null());
    }
    // None of them got as far as a session (no peer connection was made).
    assert_eq!(d.log_text().matches("new session").count(), before);
    assert_eq!(wait_sessions(broker.port, "cam-auth", 0, T).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_go_to_their_safe_value_on_shutdown_and_presence_lists_controls() {
    let dir = TempDir::new("ctl-safe");
    let broker = Broker::start();
    let cfg = config(&dir, "");
    let mut d = Daemon::start(&broker, "cam-safe", &["--config", &cfg]).await;
    let st = wait_status(
        broker.port,
        "campeer",
        "cam-safe",
        |v| v["state"] == "online",
        T,
    )
    .await
    .unwrap();
    assert_eq!(
        st["controls"],
        serde_json::json!([{"name":"led","direction":"output"},{"name":"door","direction":"input"}])
    );
    let r = view(
        &broker,
        "cam-safe",
        &[
            "--no-video",
            "--call",
            "gpio.set",
            r#"{"name":"led","value":true}"#,
        ],
    )
    .await;
    assert_eq!(result(&r["calls"][0])["value"], true, "{r}");
    let (status, _) = d.terminate();
    assert!(status.unwrap().success());
    let log = d.log_text();
    assert!(log.contains("audit"), "no audit line for gpio.set");
    assert!(log.contains("every output is at its safe value"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_pulse_exits_fast_with_outputs_safe() {
    let dir = TempDir::new("ctl-pulse");
    let broker = Broker::start();
    let cfg = config(&dir, "");
    let mut d = Daemon::start(&broker, "cam-pulse", &["--config", &cfg]).await;
    let r = view(
        &broker,
        "cam-pulse",
        &[
            "--no-video",
            "--call",
            "gpio.pulse",
            r#"{"name":"led","ms":10000}"#,
        ],
    )
    .await;
    assert_eq!(
        result(&r["calls"][0])["value"],
        true,
        "the pulse answers at once: {r}"
    );
    let (status, took) = d.terminate();
    assert!(status.unwrap().success());
    assert!(
        took < Duration::from_secs(2),
        "shutdown took {took:?} during a 10 s pulse"
    );
    assert!(d.log_text().contains("every output is at its safe value"));
}
