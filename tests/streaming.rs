//! End-to-end video: the real daemon, a real Mosquitto, real WebRTC viewers
//! (the project's own client, which decodes the H.264 and reads the stamps).

mod common;

use common::*;
use std::time::Duration;

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("report has no {k}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_viewer_receives_stamped_video() {
    let broker = Broker::start();
    let _d = Daemon::start(&broker, "cam-one", &["--size", "640x480", "--fps", "30"]).await;
    let r = view(&broker, "cam-one", &["--frames", "120", "--timeout", "30"]).await;
    assert!(r["error"].is_null(), "viewer error: {r}");
    assert!(u(&r, "frames") >= 120, "{r}");
    assert_eq!(u(&r, "width"), 640);
    assert_eq!(u(&r, "height"), 480);
    // Every decoded picture carried a readable stamp, and counters only went up.
    assert_eq!(u(&r, "stamped_frames"), u(&r, "frames"), "{r}");
    assert_eq!(u(&r, "out_of_order"), 0, "{r}");
    assert!(u(&r, "last_counter") > u(&r, "first_counter"), "{r}");
    assert!(u(&r, "lost_frames") <= 3, "lost frames on loopback: {r}");
    let p50 = r["latency_p50_ms"].as_f64().expect("latency measured");
    assert!(p50 > 0.0 && p50 < 1000.0, "implausible latency {p50}: {r}");
    assert!(r["first_frame_ms"].as_f64().is_some(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_eight_viewers_all_receive_video() {
    let broker = Broker::start();
    let _d = Daemon::start(
        &broker,
        "cam-many",
        &[
            "--size",
            "320x240",
            "--fps",
            "15",
            "--max-sessions",
            "8",
            "--bitrate",
            "300000",
        ],
    )
    .await;
    for n in [2usize, 8] {
        let viewers: Vec<_> = (0..n)
            .map(|_| view_spawn(&broker, "cam-many", &["--frames", "45", "--timeout", "40"]))
            .collect();
        for v in viewers {
            let r = v.await.expect("viewer task");
            assert!(r["error"].is_null(), "{n} viewers: {r}");
            assert!(u(&r, "frames") >= 45, "{n} viewers: {r}");
            assert_eq!(u(&r, "width"), 320);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_are_answered() {
    // With a 100 s GOP, the only keyframes are the one each new session
    // forces and the ones PLIs force: a PLI after 30 frames must bring an IDR
    // within a few frames.
    let broker = Broker::start();
    let d = Daemon::start(
        &broker,
        "cam-pli",
        &["--size", "320x240", "--keyframe-interval", "3000"],
    )
    .await;
    let r = view(
        &broker,
        "cam-pli",
        &["--frames", "60", "--pli-at", "30", "--timeout", "20"],
    )
    .await;
    assert!(u(&r, "frames") >= 60, "{r}");
    assert_eq!(u(&r, "pli_sent_at_frame"), 30, "{r}");
    let after = u(&r, "pli_to_keyframe_frames");
    assert!(
        (1..=5).contains(&after),
        "the keyframe came {after} frames after the PLI: {r}"
    );
    // The first IDR, perhaps a second one for the join request racing the
    // encoder's wake-up IDR, and the one the PLI asked for: never more.
    let k = u(&r, "keyframes");
    assert!((2..=3).contains(&k), "{k} keyframes: {r}");
    assert!(
        d.log_text().contains("keyframe requested by viewer"),
        "no PLI log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_neither_stops_video_nor_loses_the_next_offer() {
    let mut broker = Broker::start();
    let d = Daemon::start(
        &broker,
        "cam-restart",
        &["--size", "320x240", "--fps", "30"],
    )
    .await;
    let viewer = view_spawn(
        &broker,
        "cam-restart",
        &["--frames", "240", "--timeout", "40"],
    );
    // Let the session connect, then take the broker away for a while.
    wait_sessions(broker.port, "cam-restart", 1, Duration::from_secs(15))
        .await
        .expect("session up");
    d.wait_connected(1, Duration::from_secs(15)).await;
    broker.kill();
    // The outage itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let r = viewer.await.unwrap();
    assert!(
        u(&r, "frames") >= 240,
        "video stopped during the outage: {r}"
    );
    assert!(u(&r, "lost_frames") <= 5, "{r}");
    // The device is back online (its presence says so) and answers the
    // next offer.
    wait_status(
        broker.port,
        "campeer",
        "cam-restart",
        |v| v["state"] == "online",
        Duration::from_secs(20),
    )
    .await
    .expect("the device came back online after the broker restart");
    let r2 = view(
        &broker,
        "cam-restart",
        &["--frames", "30", "--timeout", "20"],
    )
    .await;
    assert!(r2["error"].is_null() && u(&r2, "frames") >= 30, "{r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_bye_publishes_offline_and_exits_fast() {
    let broker = Broker::start();
    let mut d = Daemon::start(&broker, "cam-term", &["--size", "320x240"]).await;
    let viewer = view_spawn(&broker, "cam-term", &["--hold", "--timeout", "30"]);
    wait_sessions(broker.port, "cam-term", 1, Duration::from_secs(15))
        .await
        .expect("session up");
    let mut watcher = RawClient::connect(broker.port, &[status_topic("campeer", "cam-term")]).await;
    let _ = watcher
        .recv_on(&status_topic("campeer", "cam-term"), Duration::from_secs(2))
        .await; // retained online
    let (status, took) = d.terminate();
    assert!(status.expect("exited").success(), "exit status");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let off = watcher
        .wait_for(
            &status_topic("campeer", "cam-term"),
            Duration::from_secs(3),
            |v| v["state"] == "offline",
        )
        .await
        .expect("offline status published");
    assert_eq!(off["device"], "cam-term");
    let r = viewer.await.unwrap();
    assert_eq!(r["bye"], "shutdown", "{r}");
}
