//! ICE servers over signaling (docs/protocol.md, "ICE servers for
//! viewers") against a real Mosquitto and the real daemon: a signed
//! viewer (`campeer view`) asks before its offer and gets the static STUN
//! server and TURN credentials minted for its key, sealed for it; forged,
//! unsigned, replayed and flooding requests get `unauthorized` or `busy`
//! and nothing is minted for them. The credentials themselves are checked
//! against coturn in tests/remote.rs.
//!
//! Needs Mosquitto (scripts/install-deps.sh).

mod common;

use campeer::signaling::auth::sign_ice;
use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const DEVICE: &str = "cam-ice";
const SECRET: &str = "ice-phone-secret-0123456789";
const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_minted_servers_and_forgers_get_nothing() {
    let dir = TempDir::new("ice");
    let broker = Broker::start();
    let turn_secret = dir.0.join("turn.secret");
    std::fs::write(&turn_secret, "coturn-shared-secret\n").unwrap();
    std::fs::set_permissions(&turn_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.0.join("campeer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\n\n\
             [[webrtc.ice_servers]]\nurls = \"stun:198.18.0.1:3478\"\n\n\
             [webrtc.turn_rest]\nurls = [\"turn:198.18.0.1:3478?transport=udp\"]\n\
             secret_file = \"{}\"\nlifetime_secs = 600\n\n\
             [[access.keys]]\nid = \"phone\"\nsecret = \"{SECRET}\"\nrole = \"view\"\n",
            turn_secret.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        &broker,
        DEVICE,
        &["--signed", "--config", &cfg.to_string_lossy()],
    )
    .await;
    let key = dir.0.join("phone.key");
    std::fs::write(&key, SECRET).unwrap();
    let key = key.to_string_lossy().into_owned();

    // A signed viewer: two servers (TURN first), expiring in 600 s, and
    // video as usual (the lab's addresses are unreachable here, so the
    // session connects over its host candidates).
    let now = campeer::clock::unix_secs();
    let r = view(
        &broker,
        DEVICE,
        &[
            "--key",
            "phone",
            "--secret-file",
            &key,
            "--role",
            "view",
            "--frames",
            "10",
        ],
    )
    .await;
    assert_eq!(r["ice_servers"], 2, "{r}");
    let expires = r["ice_expires"].as_u64().expect("an expiry");
    assert!(
        (now + 590..=now + 620).contains(&expires),
        "expires {expires}, now {now}"
    );
    assert!(r["frames"].as_u64().unwrap_or(0) >= 10, "{r}");
    assert!(d.wait_log("ICE servers handed out", 1, T).await);

    // Forged, unsigned and replayed requests, from a raw MQTT client.
    let status = wait_status(
        broker.port,
        "campeer",
        DEVICE,
        |v| v["nonce"].is_string(),
        T,
    )
    .await
    .expect("status");
    let nonce = status["nonce"].as_str().unwrap().to_owned();
    let filters = vec![format!("campeer/{DEVICE}/session/+/out")];
    let mut raw = RawClient::connect(broker.port, &filters).await;
    let good = |sid: &str| {
        json!({"type": "ice_request", "auth": {"key": "phone", "nonce": nonce,
            "sig": sign_ice(SECRET.as_bytes(), DEVICE, sid, &nonce)}})
    };
    let forged = json!({"type": "ice_request", "auth": {"key": "phone", "nonce": nonce,
        "sig": sign_ice(b"a-guessed-secret-0123456", DEVICE, "iceForge1", &nonce)}});
    let cases = [
        ("iceForge1", forged, "unauthorized"),
        ("iceNoAuth", json!({"type": "ice_request"}), "unauthorized"),
        ("iceGood01", good("iceGood01"), "ice"),
        ("iceGood01", good("iceGood01"), "unauthorized"), // a replay
        ("iceOther1", good("iceGood01"), "unauthorized"), // another sid's signature
    ];
    for (sid, msg, want) in cases {
        raw.publish(&in_topic(DEVICE, sid), msg.to_string()).await;
        let got = raw
            .recv_on(&out_topic(DEVICE, sid), T)
            .await
            .expect("a reply");
        let kind = if got["type"] == "error" {
            got["code"].clone()
        } else {
            got["type"].clone()
        };
        assert_eq!(kind, want, "{sid}: {got}");
        if want == "ice" {
            assert!(
                got["servers_x"].is_string() && got["servers"].is_null(),
                "sealed: {got}"
            );
            assert!(
                !got.to_string().contains("1:phone"),
                "no user name in clear: {got}"
            );
        }
    }

    // A flood from one key: a burst is served, then `busy`.
    let mut busy = 0;
    for i in 0..15 {
        let sid = format!("iceFlood{i:02}");
        raw.publish(&in_topic(DEVICE, &sid), good(&sid).to_string())
            .await;
        let got = raw
            .recv_on(&out_topic(DEVICE, &sid), T)
            .await
            .expect("a reply");
        if got["code"] == "busy" {
            busy += 1;
        }
    }
    assert!(busy >= 5, "only {busy} of 15 were refused busy");
    // One viewer, one good request and the rest of the burst of 10 (one
    // more if the test took over 6 s: the key regains one a 6 s).
    let handed = d.log_text().matches("ICE servers handed out").count();
    assert!((10..=11).contains(&handed), "{handed} handed out");
    assert!(!d.log_text().contains("coturn-shared-secret"));
}
