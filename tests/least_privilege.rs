//! A view key only views, whatever the path: one signed device with a
//! simulated output (`mock:light`), a control key and a view key, a real
//! Mosquitto and real WebRTC viewers. The view key tries to change the
//! output through an MQTT-signaled session (as a view session, and by
//! asking for control), through WHEP (a view-only session with a control
//! channel of its own), and through the snapshot endpoint (every method
//! but GET); after each try the control key reads the output back, and it
//! is still off. The control key then switches it, which shows the output
//! could change. The relay path (Debian's Janus) and a role lowered under
//! a live session are tried below; Home Assistant's path is in
//! tests/homeassistant.rs.
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
    light_of(broker, DEVICE, owner).await
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
    let cfg = write(
        &dir.0,
        "campeer.toml",
        &format!(
            "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n\n\
             [http]\nlisten = \"{PAGE_ANY_PORT}\"\n\n\
             [[gpio]]\nname = \"light\"\nline = \"mock:light\"\ndirection = \"output\"\ninitial = false\n\n\
             [[access.keys]]\nid = \"owner\"\nsecret = \"{OWNER}\"\nrole = \"control\"\n\n\
             [[access.keys]]\nid = \"guest\"\nsecret = \"{GUEST}\"\nrole = \"view\"\n"
        ),
    );
    let d = Daemon::start(&broker, DEVICE, &["--signed", "--config", &cfg]).await;
    let http = d.page_port().await;
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

/// A key's rights hold for its live sessions too: `campeer keys set-role`
/// lowers the admin key to view while its control session is open, and
/// that session ends at once (`bye` `closed`), long before its own
/// timeout; the key may then view but no longer control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_a_keys_role_ends_its_control_sessions_at_once() {
    let dir = TempDir::new("least-role");
    let broker = Broker::start();
    let device = "cam-least-role";
    let cfg = write(
        &dir.0,
        "campeer.toml",
        "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n",
    );
    let d = Daemon::start(&broker, device, &["--signed", "--config", &cfg]).await;
    let state = d.state_dir();
    let keys: toml::Value =
        toml::from_str(&std::fs::read_to_string(state.join("keys.toml")).unwrap()).unwrap();
    let admin = keys["keys"][0]["secret"]
        .as_str()
        .expect("the admin key")
        .to_owned();
    let admin_file = write(&dir.0, "admin.key", &admin);
    let as_admin = |role: &'static str| {
        vec![
            "--no-audio".to_owned(),
            "--key".into(),
            "admin".into(),
            "--secret-file".into(),
            admin_file.clone(),
            "--role".into(),
            role.into(),
        ]
    };
    let mut held: Vec<String> = as_admin("control");
    held.extend(["--hold", "--timeout", "30"].map(String::from));
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let holder = view_spawn(&broker, device, &held);
    d.wait_connected(1, Duration::from_secs(15)).await;

    let t = std::time::Instant::now();
    let out = std::process::Command::new(BIN)
        .args([
            "keys",
            "--state-dir",
            &state.to_string_lossy(),
            "set-role",
            "admin",
            "view",
        ])
        .output()
        .expect("campeer keys set-role");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = tokio::time::timeout(Duration::from_secs(10), holder)
        .await
        .expect("the control session did not end after the role change")
        .expect("viewer task");
    assert_eq!(r["bye"], "closed", "{r}");
    println!(
        "control session ended {} ms after set-role",
        t.elapsed().as_millis()
    );

    // Control is refused now; view still works.
    let control: Vec<String> = as_admin("control");
    let control: Vec<&str> = control.iter().map(String::as_str).collect();
    let r = view(&broker, device, &control).await;
    assert_eq!(r["error_code"], "unauthorized", "{r}");
    let mut watch: Vec<String> = as_admin("view");
    watch.extend(["--frames", "5"].map(String::from));
    let watch: Vec<&str> = watch.iter().map(String::as_str).collect();
    let r = view(&broker, device, &watch).await;
    assert!(r["frames"].as_u64().unwrap_or(0) >= 5, "{r}");
}

/// The relay path: with the device's one slot taken, the view key's offer
/// (asking for a control call) is handed to Debian's Janus; it watches
/// there, but the relay carries media only, so its call is never answered
/// and the output stays off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_key_on_the_relay_cannot_change_an_output() {
    if !common::prerequisite("janus", common::janus::missing()) {
        return;
    }
    let janus = common::janus::Janus::start();
    let dir = TempDir::new("least-relay");
    let broker = Broker::start();
    let device = "cam-least-relay";
    let cfg = write(
        &dir.0,
        "campeer.toml",
        &format!(
            "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n\n\
             [webrtc]\nmax_sessions = 1\n\n\
             [[gpio]]\nname = \"light\"\nline = \"mock:light\"\ndirection = \"output\"\ninitial = false\n\n\
             [[access.keys]]\nid = \"owner\"\nsecret = \"{OWNER}\"\nrole = \"control\"\n\n\
             [[access.keys]]\nid = \"guest\"\nsecret = \"{GUEST}\"\nrole = \"view\"\n\n\
             [relay]\nenabled = true\njanus_url = \"{}\"\nadmin_key = \"{}\"\nmode = \"overflow\"\n",
            janus.url(),
            janus.admin_key
        ),
    );
    let d = Daemon::start(&broker, device, &["--signed", "--config", &cfg]).await;
    let up = wait_status(
        broker.port,
        "campeer",
        device,
        |v| v["relay"]["state"] == "up",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        up.is_some(),
        "the relay never came up:\n{}",
        tail(&d.log_text(), 30)
    );
    let owner = write(&dir.0, "owner.key", OWNER);
    let guest = write(&dir.0, "guest.key", GUEST);
    let holder = view_spawn(
        &broker,
        device,
        &[
            "--no-audio",
            "--key",
            "owner",
            "--secret-file",
            &owner,
            "--role",
            "control",
            "--hold",
            "--timeout",
            "12",
        ],
    );
    wait_sessions(broker.port, device, 1, Duration::from_secs(15))
        .await
        .expect("the owner took the device's one slot");

    let r = view(
        &broker,
        device,
        &[
            "--no-audio",
            "--key",
            "guest",
            "--secret-file",
            &guest,
            "--role",
            "view",
            "--frames",
            "20",
            "--timeout",
            "12",
            "--call",
            "gpio.toggle",
            TOGGLE,
        ],
    )
    .await;
    assert!(
        r["relay_mountpoint"].is_u64(),
        "the guest was not handed to the relay: {r}"
    );
    assert!(
        r["frames"].as_u64().unwrap_or(0) >= 20,
        "no video through the relay: {r}"
    );
    assert!(
        r["calls"][0]["response"].is_null() && r["control_open"] == false,
        "{r}"
    );

    let held = holder.await.expect("holder");
    assert!(held["frames"].as_u64().unwrap_or(0) > 0, "{held}");
    wait_sessions(broker.port, device, 0, Duration::from_secs(15))
        .await
        .expect("the owner's session ended");
    assert!(
        !light_of(&broker, device, &owner).await,
        "the relay path changed the light"
    );
}

/// [`light`] for another device.
async fn light_of(broker: &Broker, device: &str, owner: &str) -> bool {
    let r = view(
        broker,
        device,
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
