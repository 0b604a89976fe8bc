//! The signaling contract (docs/protocol.md: Names, Topics, Presence, Opening a session) against the real daemon
//! and a real Mosquitto: errors, limits, duplicates, cleanup, presence.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// A hand-made H.264 offer whose ICE can never complete (no real peer).
fn h264_offer_that_never_connects() -> String {
    "v=0\r\no=- 5 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
     m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
     a=ice-ufrag:wxyz\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
     a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
     a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n\
     a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        .to_owned()
}

async fn expect_error(
    c: &mut RawClient,
    device: &str,
    sid: &str,
    payload: Vec<u8>,
    code: &str,
) -> Value {
    c.publish(&in_topic(device, sid), payload).await;
    let v = c
        .recv_on(&out_topic(device, sid), T)
        .await
        .unwrap_or_else(|| panic!("no reply for a message that should get {code}"));
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_the_right_error_and_leave_no_session() {
    let broker = Broker::start();
    let d = Daemon::start(&broker, "cam-bad", &["--size", "320x240"]).await;
    let dev = "cam-bad";
    let s = sid();
    let mut c = RawClient::connect(broker.port, &[format!("campeer/{dev}/session/+/out")]).await;

    expect_error(&mut c, dev, &s, b"{not json".to_vec(), "bad_request").await;
    expect_error(&mut c, dev, &s, b"[1,2]".to_vec(), "bad_request").await;
    expect_error(
        &mut c,
        dev,
        &s,
        br#"{"type":"offer"}"#.to_vec(),
        "bad_request",
    )
    .await;
    expect_error(
        &mut c,
        dev,
        &s,
        br#"{"type":"offer","sdp":42}"#.to_vec(),
        "bad_request",
    )
    .await;
    expect_error(
        &mut c,
        dev,
        &s,
        br#"{"type":"dance"}"#.to_vec(),
        "bad_request",
    )
    .await;
    expect_error(
        &mut c,
        dev,
        &s,
        br#"{"type":"candidate"}"#.to_vec(),
        "bad_request",
    )
    .await;
    let garbage = json!({"type": "offer", "sdp": "this is not SDP"}).to_string();
    expect_error(&mut c, dev, &s, garbage.into_bytes(), "bad_request").await;
    // VP9 alone: a codec the device cannot send (VP8 it can, since issue 11).
    let vp9 = json!({"type": "offer", "sdp": vp9_only_offer()}).to_string();
    expect_error(&mut c, dev, &s, vp9.into_bytes(), "unsupported").await;
    let big = json!({"type": "offer", "sdp": "x".repeat(70 * 1024)}).to_string();
    expect_error(&mut c, dev, &s, big.into_bytes(), "too_large").await;

    // A bad sid (too short) that is still one topic level gets bad_request on its own topic.
    expect_error(
        &mut c,
        dev,
        "short",
        br#"{"type":"bye"}"#.to_vec(),
        "bad_request",
    )
    .await;

    // Nothing was left behind, and the daemon still serves a real viewer.
    assert_eq!(wait_sessions(broker.port, dev, 0, T).await, Some(0));
    let r = view(&broker, dev, &["--frames", "20", "--timeout", "20"]).await;
    assert!(
        r["error"].is_null() && r["frames"].as_u64() >= Some(20),
        "{r}"
    );
    assert!(!d.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_offers_are_stale_and_dropped() {
    // A retained message reaches the device with the retain flag set only when
    // it subscribes after the message was stored: exactly the stale case.
    let broker = Broker::start();
    let dev = "cam-stale";
    let s = sid();
    let c = RawClient::connect(broker.port, &[]).await;
    let offer = json!({"type":"offer","sdp":h264_offer_that_never_connects()}).to_string();
    c.publish_retained(&in_topic(dev, &s), offer).await;
    let mut watch = RawClient::connect(broker.port, &[out_topic(dev, &s)]).await;
    let d = Daemon::start(&broker, dev, &["--size", "320x240"]).await;
    assert!(
        watch
            .recv_on(&out_topic(dev, &s), Duration::from_secs(3))
            .await
            .is_none(),
        "the device answered a retained (stale) offer"
    );
    assert_eq!(wait_sessions(broker.port, dev, 0, T).await, Some(0));
    assert!(
        d.log_text().contains("retained"),
        "no log line for the dropped message"
    );
    c.publish_retained(&in_topic(dev, &s), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_max_sessions_get_busy() {
    let broker = Broker::start();
    let _d = Daemon::start(
        &broker,
        "cam-busy",
        &["--size", "320x240", "--max-sessions", "1"],
    )
    .await;
    let holder = view_spawn(&broker, "cam-busy", &["--hold", "--timeout", "25"]);
    assert_eq!(wait_sessions(broker.port, "cam-busy", 1, T).await, Some(1));
    let r = view(&broker, "cam-busy", &["--frames", "10", "--timeout", "10"]).await;
    assert_eq!(r["error_code"], "busy", "{r}");
    assert_eq!(r["frames"], 0);
    // Still one session: the refused offer created nothing.
    assert_eq!(wait_sessions(broker.port, "cam-busy", 1, T).await, Some(1));
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_offer_gets_the_same_answer_and_no_second_session() {
    let broker = Broker::start();
    let _d = Daemon::start(&broker, "cam-dup", &["--size", "320x240"]).await;
    let r = view(
        &broker,
        "cam-dup",
        &["--frames", "30", "--repeat-offer", "--timeout", "20"],
    )
    .await;
    assert!(r["frames"].as_u64() >= Some(30), "{r}");
    assert_eq!(
        r["answers"], 2,
        "the repeated offer must be answered again: {r}"
    );
    assert_eq!(r["answers_differ"], false, "{r}");
    // The session count never went above one (the viewer has left now).
    assert_eq!(wait_sessions(broker.port, "cam-dup", 0, T).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_frees_the_session_at_once() {
    let broker = Broker::start();
    let _d = Daemon::start(
        &broker,
        "cam-bye",
        &["--size", "320x240", "--connect-timeout", "60"],
    )
    .await;
    let r = view(&broker, "cam-bye", &["--frames", "10", "--timeout", "20"]).await;
    assert!(r["frames"].as_u64() >= Some(10), "{r}");
    // The viewer sent bye on leaving; the session goes well before any timeout.
    assert_eq!(
        wait_sessions(broker.port, "cam-bye", 0, Duration::from_secs(3)).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_never_connects_is_closed_with_timeout() {
    let broker = Broker::start();
    let dev = "cam-never";
    let _d = Daemon::start(
        &broker,
        dev,
        &["--size", "320x240", "--connect-timeout", "2"],
    )
    .await;
    let s = sid();
    let mut c = RawClient::connect(broker.port, &[out_topic(dev, &s)]).await;
    c.publish(
        &in_topic(dev, &s),
        json!({"type":"offer","sdp":h264_offer_that_never_connects()}).to_string(),
    )
    .await;
    let answer = c
        .wait_for(&out_topic(dev, &s), T, |v| v["type"] == "answer")
        .await
        .expect("answer");
    assert!(answer["sdp"].as_str().unwrap().contains("H264"), "{answer}");
    let bye = c
        .wait_for(&out_topic(dev, &s), T, |v| v["type"] == "bye")
        .await
        .expect("bye");
    assert_eq!(bye["reason"], "timeout");
    assert_eq!(wait_sessions(broker.port, dev, 0, T).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_is_cleaned_up() {
    let broker = Broker::start();
    let dev = "cam-vanish";
    let d = Daemon::start(
        &broker,
        dev,
        &["--size", "320x240", "--disconnected-timeout", "2"],
    )
    .await;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--log",
            "warn",
            "view",
            "--hold",
            "--timeout",
            "60",
            "--mqtt",
            &broker.url(),
            "--device",
            dev,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_sessions(broker.port, dev, 1, T).await, Some(1));
    d.wait_connected(1, T).await;
    child.kill().await.unwrap(); // SIGKILL: no bye, no ICE goodbye
    assert_eq!(
        wait_sessions(broker.port, dev, 0, Duration::from_secs(20)).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_candidates_are_held_until_the_offer() {
    let broker = Broker::start();
    let dev = "cam-early";
    let _d = Daemon::start(&broker, dev, &["--size", "320x240"]).await;
    // The viewer sends its offer late; candidates for its sid arriving first
    // must not produce errors nor sessions.
    let s = sid();
    let mut c = RawClient::connect(broker.port, &[out_topic(dev, &s)]).await;
    let cand = json!({"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}});
    c.publish(&in_topic(dev, &s), cand.to_string()).await;
    assert!(c
        .recv_on(&out_topic(dev, &s), Duration::from_secs(1))
        .await
        .is_none());
    c.publish(
        &in_topic(dev, &s),
        json!({"type":"offer","sdp":h264_offer_that_never_connects()}).to_string(),
    )
    .await;
    let v = c
        .wait_for(&out_topic(dev, &s), T, |v| v["type"] != "candidate")
        .await
        .unwrap();
    assert_eq!(v["type"], "answer", "{v}");
    c.publish(&in_topic(dev, &s), r#"{"type":"bye"}"#).await;
    assert_eq!(wait_sessions(broker.port, dev, 0, T).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_retained_and_describes_the_device() {
    let broker = Broker::start();
    let _d = Daemon::start(
        &broker,
        "cam-pres",
        &["--size", "320x240", "--fps", "15", "--max-sessions", "3"],
    )
    .await;
    let v = wait_status(
        broker.port,
        "campeer",
        "cam-pres",
        |v| v["state"] == "online",
        T,
    )
    .await
    .unwrap();
    assert_eq!(v["device"], "cam-pres");
    assert_eq!(v["max_sessions"], 3);
    assert_eq!(v["sessions"], 0);
    assert_eq!(v["auth"], "open");
    assert_eq!(v["video"]["codec"], "H264");
    assert_eq!(v["video"]["width"], 320);
    assert_eq!(v["video"]["fps"], 15);
    assert!(v["audio"].is_null());
    assert!(v["version"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_starts_with_the_broker_down_and_serves_when_it_appears() {
    let mut broker = Broker::start();
    broker.kill();
    let d = Daemon::spawn(&broker, "cam-late", &["--size", "320x240"]);
    assert!(
        d.wait_log("cannot reach the broker", 1, Duration::from_secs(20))
            .await,
        "the daemon never tried the missing broker; log:\n{}",
        d.log_text()
    );
    broker.restart();
    let v = wait_status(
        broker.port,
        "campeer",
        "cam-late",
        |v| v["state"] == "online",
        Duration::from_secs(15),
    )
    .await;
    assert!(v.is_some(), "never came online: {}", d.log_text());
    let r = view(&broker, "cam-late", &["--frames", "10", "--timeout", "20"]).await;
    assert!(r["frames"].as_u64() >= Some(10), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_negotiation_exits_cleanly() {
    let broker = Broker::start();
    let dev = "cam-term-neg";
    let mut d = Daemon::start(&broker, dev, &["--size", "320x240"]).await;
    let s = sid();
    let mut c = RawClient::connect(
        broker.port,
        &[out_topic(dev, &s), status_topic("campeer", dev)],
    )
    .await;
    c.publish(
        &in_topic(dev, &s),
        json!({"type":"offer","sdp":h264_offer_that_never_connects()}).to_string(),
    )
    .await;
    c.wait_for(&out_topic(dev, &s), T, |v| v["type"] == "answer")
        .await
        .expect("answer");
    let (status, took) = d.terminate();
    assert!(status.expect("exited").success());
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let bye = c
        .wait_for(&out_topic(dev, &s), T, |v| v["type"] == "bye")
        .await
        .expect("bye");
    assert_eq!(bye["reason"], "shutdown");
    let off = c
        .wait_for(&status_topic("campeer", dev), T, |v| {
            v["state"] == "offline"
        })
        .await;
    assert!(off.is_some(), "no offline status");
}
