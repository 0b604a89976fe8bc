//! Protocol version 2 under attack (docs/protocol.md#authorization-protocol-version-2), against a real
//! Mosquitto and a real signed device, while a legitimate viewer streams:
//! another party on the broker forges `bye`s, candidates, a renegotiation,
//! an answer and a `bye` to the viewer, replays a captured offer, signs over
//! a made-up nonce or with version 1, and asks a view key for control. The
//! viewer's frames keep arriving and every refusal is the documented one.

mod common;

use campeer::signaling::auth::sign;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const DEV: &str = "cam-attack";
const PHONE: &str = "attack-phone-secret-0123456789";
const GUEST: &str = "attack-guest-secret-0123456789";

fn setup(dir: &TempDir) -> (String, String, String) {
    let cfg = dir.0.join("campeer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[video]\nwidth = 320\nheight = 240\n\n\
             [[access.keys]]\nid = \"phone\"\nsecret = \"{PHONE}\"\nrole = \"control\"\n\n\
             [[access.keys]]\nid = \"guest\"\nsecret = \"{GUEST}\"\nrole = \"view\"\n"
        ),
    )
    .unwrap();
    let phone = dir.0.join("phone.key");
    std::fs::write(&phone, PHONE).unwrap();
    let guest = dir.0.join("guest.key");
    std::fs::write(&guest, GUEST).unwrap();
    (
        cfg.to_string_lossy().into_owned(),
        phone.to_string_lossy().into_owned(),
        guest.to_string_lossy().into_owned(),
    )
}

fn offer_sdp() -> String {
    vp8_only_offer().replace(
        "VP8/90000",
        "H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f",
    )
}

/// Publishes `msg` on `sid`'s in topic and returns the device's reply, if any.
async fn ask(attacker: &mut RawClient, sid: &str, msg: &Value) -> Option<Value> {
    let out = out_topic(DEV, sid);
    // Forget what the topic carried before (the victim's own session).
    while attacker
        .recv_on(&out, Duration::from_millis(200))
        .await
        .is_some()
    {}
    attacker.publish(&in_topic(DEV, sid), msg.to_string()).await;
    attacker.recv_on(&out, Duration::from_secs(3)).await
}

async fn nonce(port: u16) -> String {
    let st = wait_status(port, "campeer", DEV, |v| v["nonce"].is_string(), T)
        .await
        .expect("a signed device publishes a nonce");
    assert_eq!(st["protocol"], 2, "{st}");
    assert_eq!(st["auth"], "signed", "{st}");
    st["nonce"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_and_replays_change_nothing_for_a_streaming_viewer() {
    let dir = TempDir::new("attack");
    let (cfg, phone, _guest) = setup(&dir);
    let broker = Broker::start();
    let d = Daemon::start(&broker, DEV, &["--signed", "--config", &cfg]).await;

    // The attacker watches every session topic (no ACL on this broker).
    let victim_sid = sid();
    let mut attacker = RawClient::connect(
        broker.port,
        &[
            format!("campeer/{DEV}/session/+/in"),
            format!("campeer/{DEV}/session/+/out"),
        ],
    )
    .await;
    let viewer = view_spawn(
        &broker,
        DEV,
        &[
            "--key",
            "phone",
            "--secret-file",
            &phone,
            "--sid",
            &victim_sid,
            "--hold",
            "--timeout",
            "14",
            "--no-audio",
        ],
    );
    assert_eq!(wait_sessions(broker.port, DEV, 1, T).await, Some(1));
    // Capture the victim's signed offer as it goes by.
    let in_t = in_topic(DEV, &victim_sid);
    let captured = attacker
        .wait_for(&in_t, T, |v| v["type"] == "offer")
        .await
        .expect("the offer was seen on the broker");
    assert!(captured["auth"]["nonce"].is_string(), "{captured}");
    d.wait_connected(1, T).await; // streaming now

    // 1. bye without and with a wrong mac.
    attacker.publish(&in_t, r#"{"type":"bye"}"#).await;
    attacker
        .publish(
            &in_t,
            json!({"type":"bye","mac": "A".repeat(43)}).to_string(),
        )
        .await;
    // 2. 50 forged candidates pointing the device at other addresses.
    for i in 0..50 {
        let c = json!({"type":"candidate","candidate":{"candidate":
            format!("candidate:{i} 1 udp 2130706431 192.0.2.{i} 9 typ host"),"sdpMid":"0","sdpMLineIndex":0},
            "mac": "B".repeat(43)});
        attacker.publish(&in_t, c.to_string()).await;
    }
    // 3. A forged renegotiation (right key id, wrong signature).
    let n = nonce(broker.port).await;
    let reneg = json!({"type":"offer","sdp": offer_sdp(),
        "auth":{"key":"phone","role":"control","nonce": n,"sig": "C".repeat(43)}});
    attacker.publish(&in_t, reneg.to_string()).await;
    // 4. A forged answer and bye to the viewer.
    let out_t = out_topic(DEV, &victim_sid);
    attacker
        .publish(&out_t, json!({"type":"answer","sdp":"v=0\r\n"}).to_string())
        .await;
    attacker
        .publish(
            &out_t,
            json!({"type":"bye","reason":"shutdown"}).to_string(),
        )
        .await;
    attacker
        .publish(
            &out_t,
            json!({"type":"bye","reason":"closed","mac":"D".repeat(43)}).to_string(),
        )
        .await;

    let r = viewer.await.unwrap();
    assert!(r["error"].is_null(), "the viewer was disturbed: {r}");
    assert!(r["bye"].is_null(), "a forged bye ended the viewer: {r}");
    assert!(
        r["frames"].as_u64().expect("frames reported") >= 150,
        "frames stopped arriving: {r}"
    );
    assert_eq!(r["lost_frames"].as_u64(), Some(0), "{r}");
    // The forged answer and the two forged byes, at least.
    assert!(
        r["unverified"].as_u64().expect("unverified reported") >= 3,
        "{r}"
    );
    let log = d.log_text();
    assert!(
        log.contains("mac is missing or wrong"),
        "forgeries not logged:\n{log}"
    );
    assert!(log.contains("renegotiation not authorized"), "{log}");
    // The forged candidates' addresses with their port 9 (the machine's
    // own address may be in 192.0.2.0/24 too, with a real port).
    let forged = (0..50).find(|i| {
        let addr = format!("192.0.2.{i}");
        log.match_indices(&addr).any(|(at, _)| {
            let rest = &log[at + addr.len()..];
            let port9 =
                |r: &str| r.starts_with('9') && !r[1..].starts_with(|c: char| c.is_ascii_digit());
            rest.strip_prefix(':').is_some_and(port9) || rest.strip_prefix(' ').is_some_and(port9)
        })
    });
    assert_eq!(forged, None, "a forged candidate reached ICE:\n{log}");

    // 5. The captured offer, replayed after its session ended.
    assert_eq!(wait_sessions(broker.port, DEV, 0, T).await, Some(0));
    let reply = ask(&mut attacker, &victim_sid, &captured)
        .await
        .expect("the replay is answered");
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    // ... and on a fresh sid (the signature covers the sid).
    let other = sid();
    let reply = ask(&mut attacker, &other, &captured)
        .await
        .expect("answered");
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert!(!log.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_offer_is_refused_unauthorized_before_any_session() {
    let dir = TempDir::new("attack-offers");
    let (cfg, _phone, _guest) = setup(&dir);
    let broker = Broker::start();
    let d = Daemon::start(&broker, DEV, &["--signed", "--config", &cfg]).await;
    let mut attacker =
        RawClient::connect(broker.port, &[format!("campeer/{DEV}/session/+/out")]).await;
    let sdp = offer_sdp();
    let n = nonce(broker.port).await;

    let s = sid();
    let made_up = "bWFkZS11cC1ub25jZQ";
    let cases = vec![
        ("no auth", s.clone(), json!({"type":"offer","sdp":sdp})),
        (
            "made-up nonce",
            s.clone(),
            json!({"type":"offer","sdp":sdp,"auth":{"key":"phone","role":"control",
            "nonce": made_up, "sig": sign(PHONE.as_bytes(), DEV, &s, "control", made_up, &sdp)}}),
        ),
        (
            "version-1 signature",
            s.clone(),
            json!({"type":"offer","sdp":sdp,"auth":{"key":"phone","role":"control",
            "sig": v1_sig(PHONE, &s, "control", &sdp)}}),
        ),
        (
            "view key asking for control",
            s.clone(),
            json!({"type":"offer","sdp":sdp,"auth":{"key":"guest","role":"control",
            "nonce": n, "sig": sign(GUEST.as_bytes(), DEV, &s, "control", &n, &sdp)}}),
        ),
        (
            "unknown key",
            s.clone(),
            json!({"type":"offer","sdp":sdp,"auth":{"key":"mallory","role":"view",
            "nonce": n, "sig": sign(GUEST.as_bytes(), DEV, &s, "view", &n, &sdp)}}),
        ),
    ];
    for (what, sid, msg) in cases {
        let reply = ask(&mut attacker, &sid, &msg).await.unwrap_or(Value::Null);
        assert_eq!(reply["code"], "unauthorized", "{what}: {reply}");
        assert!(
            reply["mac"].is_null(),
            "{what}: a refusal before any session has no mac"
        );
    }
    assert!(!d.log_text().contains("new session"), "{}", d.log_text());
    // The right signature over the current nonce is accepted (the control case).
    let good = json!({"type":"offer","sdp":sdp,"auth":{"key":"guest","role":"view",
        "nonce": n, "sig": sign(GUEST.as_bytes(), DEV, &s, "view", &n, &sdp)}});
    let reply = ask(&mut attacker, &s, &good).await.expect("answered");
    assert_eq!(reply["type"], "answer", "{reply}");
    assert!(
        reply["mac"].is_string(),
        "the answer carries a mac: {reply}"
    );
}

/// A version-1 signature (no nonce line), as an old client would send it.
fn v1_sig(secret: &str, sid: &str, role: &str, sdp: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("campeer-offer-v1\n{DEV}\n{sid}\n{role}\n{sdp}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The device's own broker (the default): a holder of the view key tries
/// to end or steer the control key's session. The broker's ACL stops the
/// messages to the viewer; the device's macs stop the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_key_holder_on_the_own_broker_cannot_touch_another_session() {
    let dir = TempDir::new("attack-own");
    let (cfg, phone, _guest) = setup(&dir);
    // The device's own broker reads its port from the command line and
    // does not report it: a picked free port. No page server (`--http ""`).
    let mqtt = free_port();
    let log = dir.0.join("daemon.log");
    let mut child = std::process::Command::new(BIN)
        .args([
            "--log",
            "info,campeer=debug",
            "run",
            "--config",
            &cfg,
            "--device-id",
            DEV,
        ])
        .args([
            "--broker-listen",
            &format!("127.0.0.1:{mqtt}"),
            "--broker-ws-listen",
            "",
        ])
        .args(["--http", ""])
        .args(["--state-dir", &dir.0.join("state").to_string_lossy()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start campeer");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let t = std::time::Instant::now();
    while !log_text().contains("online as") {
        assert!(t.elapsed() < T, "never online:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("mqtt://127.0.0.1:{mqtt}");
    let guest_pw = campeer::signaling::auth::key_password(GUEST.as_bytes(), DEV);
    let victim_sid = sid();
    let in_t = in_topic(DEV, &victim_sid);
    let out_t = out_topic(DEV, &victim_sid);
    // The attacker holds the view key: it may read status and outs, write ins.
    let mut attacker = RawClient::connect_as(
        mqtt,
        &[format!("campeer/{DEV}/session/+/out")],
        Some(("guest", &guest_pw)),
    )
    .await;
    let args: Vec<String> = [
        "--key",
        "phone",
        "--secret-file",
        &phone,
        "--sid",
        &victim_sid,
        "--hold",
        "--timeout",
        "10",
        "--no-audio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let viewer = {
        let url = url.clone();
        tokio::spawn(async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            view_at(&url, DEV, &a).await
        })
    };
    // Its answer passes by: the viewer is streaming.
    attacker
        .wait_for(&out_t, T, |v| v["type"] == "answer")
        .await
        .expect("the victim's session answered");
    let t = std::time::Instant::now();
    while !log_text().contains(CONNECTED) {
        assert!(t.elapsed() < T, "never connected:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    attacker.publish(&in_t, r#"{"type":"bye"}"#).await;
    attacker
        .publish(
            &in_t,
            json!({"type":"candidate","candidate":{"candidate":
            "candidate:1 1 udp 2130706431 192.0.2.7 9 typ host","sdpMid":"0","sdpMLineIndex":0}})
            .to_string(),
        )
        .await;
    // Writing to the viewer's out topic is not allowed by the ACL: dropped.
    attacker
        .publish(
            &out_t,
            json!({"type":"bye","reason":"shutdown"}).to_string(),
        )
        .await;
    let r = viewer.await.unwrap();
    assert!(r["error"].is_null(), "{r}");
    assert!(r["bye"].is_null(), "{r}");
    assert!(r["frames"].as_u64().expect("frames") >= 100, "{r}");
    assert_eq!(
        r["unverified"].as_u64(),
        Some(0),
        "the ACL kept the forgery off the out topic: {r}"
    );
    assert!(
        log_text().contains("mac is missing or wrong"),
        "{}",
        log_text()
    );
    // No key at all: the broker refuses the login outright.
    let stranger = std::process::Command::new(BIN)
        .args([
            "--log",
            "warn",
            "view",
            "--json",
            "--mqtt",
            &url,
            "--device",
            DEV,
            "--no-video",
            "--timeout",
            "5",
        ])
        .output()
        .expect("run campeer view");
    let said = String::from_utf8_lossy(&stranger.stderr);
    assert!(!stranger.status.success(), "a stranger got in: {said}");
    assert!(
        said.to_lowercase().contains("refused") || said.contains("NotAuthorized"),
        "{said}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
