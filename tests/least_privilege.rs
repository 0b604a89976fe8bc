//! A view key only views, whatever the path: one signed device with a
//! simulated output (`mock:light`), a control key and a view key, a real
//! Mosquitto and real WebRTC viewers. The view key tries to change the
//! output through an MQTT-signaled session (as a view session, and by
//! asking for control), through WHEP (a view-only session with a control
//! channel of its own), and through the snapshot endpoint (every method
//! but GET); after each try the control key reads the output back, and it
//! is still off. The control key then switches it, which shows the output
//! could change. Home Assistant's path is in tests/homeassistant.rs, the
//! relay's in tests/relay.rs.
//!
//! Needs Mosquitto (scripts/install-deps.sh).

mod common;

use campeer::http_client::Exchange;
use common::*;
use hyper::Method;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const DEVICE: &str = "cam-least";
const OWNER: &str = "least-owner-secret-0123456789";
const GUEST: &str = "least-guest-secret-0123456789";
const TOGGLE: &str = r#"{"name":"light"}"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_string_lossy().into_owned()
}

/// The control key reads the light back.
async fn light(broker: &Broker, owner: &str) -> bool {
    let r = view(
        broker,
        DEVICE,
        &[
            "--no-video",
            "--no-audio",
            "--key",
            "owner",
            "--secret-file",
            owner,
            "--role",
            "control",
            "--call",
            "gpio.get",
            TOGGLE,
        ],
    )
    .await;
    r["calls"][0]["response"]["result"]["value"]
        .as_bool()
        .unwrap_or_else(|| panic!("the owner could not read the light: {r}"))
}

/// The JSON-RPC error code of call `i` of a report, failing when it has none.
fn error_code(r: &Value, i: usize) -> i64 {
    r["calls"][i]["response"]["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("call {i} was not refused: {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_key_cannot_change_an_output_on_any_path() {
    let dir = TempDir::new("least");
    let broker = Broker::start();
    let http = free_port();
    let cfg = write(
        &dir.0,
        "campeer.toml",
        &format!(
            "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\n\
             [[gpio]]\nname = \"light\"\nline = \"mock:light\"\ndirection = \"output\"\ninitial = false\n\n\
             [[access.keys]]\nid = \"owner\"\nsecret = \"{OWNER}\"\nrole = \"control\"\n\n\
             [[access.keys]]\nid = \"guest\"\nsecret = \"{GUEST}\"\nrole = \"view\"\n"
        ),
    );
    let d = Daemon::start(&broker, DEVICE, &["--signed", "--config", &cfg]).await;
    let owner = write(&dir.0, "owner.key", OWNER);
    let guest = write(&dir.0, "guest.key", GUEST);
    let changes = [
        ("gpio.toggle", TOGGLE),
        ("gpio.set", r#"{"name":"light","value":true}"#),
        ("gpio.pulse", r#"{"name":"light","ms":5000}"#),
    ];
    let mut calls: Vec<&str> = Vec::new();
    for (m, p) in changes {
        calls.extend(["--call", m, p]);
    }

    // 1. MQTT signaling, as a view session: every change refused (-32001).
    let mut args = vec![
        "--no-video",
        "--no-audio",
        "--key",
        "guest",
        "--secret-file",
        &guest,
        "--role",
        "view",
    ];
    args.extend(&calls);
    let r = view(&broker, DEVICE, &args).await;
    for i in 0..changes.len() {
        assert_eq!(error_code(&r, i), -32001, "MQTT view session: {r}");
    }
    assert!(
        !light(&broker, &owner).await,
        "a view session changed the light"
    );

    // 2. MQTT signaling, asking for control: the offer itself is refused.
    let mut args = vec![
        "--no-video",
        "--no-audio",
        "--timeout",
        "10",
        "--key",
        "guest",
        "--secret-file",
        &guest,
        "--role",
        "control",
    ];
    args.extend(&calls);
    let r = view(&broker, DEVICE, &args).await;
    assert!(
        r["error_code"] == "unauthorized",
        "a view key asking for control was not refused: {r}"
    );
    assert!(r["calls"][0]["response"].is_null(), "{r}");
    assert!(
        !light(&broker, &owner).await,
        "a control request changed the light"
    );

    // 3. WHEP with the view key's credential: a view-only session, whose
    // own control channel refuses every change.
    let whep_url = format!("http://127.0.0.1:{http}/whep");
    let token = whep_credentials(&dir.0, &cfg, &d, "guest");
    let mut args = vec!["--whep", &whep_url, "--timeout", "15"];
    args.extend(token.iter().map(String::as_str));
    args.extend(&calls);
    let r = view_at(&broker.url(), DEVICE, &args).await;
    assert_eq!(r["http_status"], 201, "WHEP refused the view key: {r}");
    for i in 0..changes.len() {
        assert_eq!(error_code(&r, i), -32001, "WHEP session: {r}");
    }
    assert!(
        !light(&broker, &owner).await,
        "a WHEP session changed the light"
    );

    // 4. The snapshot endpoint: GET gives a picture, nothing else is
    // allowed, and nothing changes.
    let snap = url::Url::parse(&format!("http://127.0.0.1:{http}/snapshot.jpg")).unwrap();
    let bearer = http_bearer(&token);
    let mut got = None;
    for _ in 0..50 {
        let r = Exchange {
            bearer: Some(&bearer),
            max_body: 1 << 20,
            ..Exchange::new(Method::GET, &snap)
        }
        .send()
        .await
        .expect("GET /snapshot.jpg");
        if r.status != 503 {
            got = Some(r.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        got.map(|s| s.as_u16()),
        Some(200),
        "the view key's snapshot"
    );
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = Exchange {
            bearer: Some(&bearer),
            content_type: Some("application/json"),
            body: r#"{"name":"light","value":true}"#.into(),
            ..Exchange::new(method.clone(), &snap)
        }
        .send()
        .await
        .expect("snapshot request");
        assert_eq!(r.status, 405, "{method} /snapshot.jpg");
    }
    assert!(
        !light(&broker, &owner).await,
        "the snapshot path changed the light"
    );

    // The output could change: the control key switches it.
    let r = view(
        &broker,
        DEVICE,
        &[
            "--no-video",
            "--no-audio",
            "--key",
            "owner",
            "--secret-file",
            &owner,
            "--role",
            "control",
            "--call",
            "gpio.toggle",
            TOGGLE,
        ],
    )
    .await;
    assert_eq!(r["calls"][0]["response"]["result"]["value"], true, "{r}");
    assert!(light(&broker, &owner).await);
}

/// `campeer view --whep` arguments with a fresh WHEP token of key `id`
/// (`campeer keys token add`), written to a file.
fn whep_credentials(dir: &Path, cfg: &str, d: &Daemon, id: &str) -> Vec<String> {
    let state = d.state_dir();
    let out = std::process::Command::new(BIN)
        .args([
            "keys",
            "--config",
            cfg,
            "--state-dir",
            &state.to_string_lossy(),
        ])
        .args(["token", "add", id])
        .output()
        .expect("campeer keys token add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.len() > 40, "a token: {token:?}");
    let file = write(dir, &format!("{id}.token"), &token);
    // The running daemon reloads its key file within a second or two.
    let t = std::time::Instant::now();
    while !d
        .log_text()
        .contains("WHEP/snapshot tokens changed; reloaded")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the daemon never reloaded its keys"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vec!["--token-file".into(), file]
}

/// The token in the file [`whep_credentials`] wrote.
fn http_bearer(args: &[String]) -> String {
    std::fs::read_to_string(&args[1])
        .expect("token file")
        .trim()
        .to_owned()
}
