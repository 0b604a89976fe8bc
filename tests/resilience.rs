//! Broker faults: a long outage during a live session, and a daemon that
//! dies without saying goodbye (its last will).

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_second_broker_outage_never_stops_the_video() {
    let mut broker = Broker::start();
    let dev = "cam-outage";
    let d = Daemon::start(&broker, dev, &["--size", "320x240", "--fps", "15"]).await;
    // 15 fps for ~70 s of video: the session must outlive the outage.
    let viewer = view_spawn(&broker, dev, &["--frames", "1050", "--timeout", "100"]);
    assert_eq!(
        wait_sessions(broker.port, dev, 1, Duration::from_secs(15)).await,
        Some(1)
    );
    d.wait_connected(1, Duration::from_secs(15)).await;
    broker.kill();
    // The outage itself: a minute without a broker.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let back = Instant::now();
    broker.restart();
    let online = wait_status(
        broker.port,
        "campeer",
        dev,
        |v| v["state"] == "online",
        Duration::from_secs(10),
    )
    .await;
    let took = back.elapsed();
    assert!(online.is_some(), "the device did not come back online");
    assert!(took < Duration::from_secs(5), "back online after {took:?}");
    println!(
        "device online again {:.1} s after the broker returned",
        took.as_secs_f64()
    );
    let r = viewer.await.unwrap();
    assert!(r["error"].is_null(), "{r}");
    assert!(
        r["frames"].as_u64() >= Some(1050),
        "video stopped during the outage: {r}"
    );
    let lost = r["lost_frames"]
        .as_u64()
        .unwrap_or_else(|| panic!("the viewer's report has no lost_frames: {r}"));
    assert!(lost <= 15, "{lost} frames lost during the outage: {r}");
    // And the next offer works.
    let r2 = view(&broker, dev, &["--frames", "20", "--timeout", "20"]).await;
    assert!(r2["frames"].as_u64() >= Some(20), "{r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_is_reported_offline_by_its_last_will() {
    let broker = Broker::start();
    let dev = "cam-will";
    let d = Daemon::start(&broker, dev, &["--size", "320x240"]).await;
    let mut watch = RawClient::connect(broker.port, &[status_topic("campeer", dev)]).await;
    let _ = watch
        .recv_on(&status_topic("campeer", dev), Duration::from_secs(2))
        .await; // retained online
                // SAFETY: kill(2) on our own child: SIGKILL, no clean shutdown at all.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    let off = watch
        .wait_for(
            &status_topic("campeer", dev),
            Duration::from_secs(10),
            |v| v["state"] == "offline",
        )
        .await
        .expect("no last will");
    assert_eq!(off, serde_json::json!({"state": "offline", "device": dev}));
    // Retained: a newcomer sees it too.
    let late = wait_status(
        broker.port,
        "campeer",
        dev,
        |v| v["state"] == "offline",
        Duration::from_secs(5),
    )
    .await;
    assert!(late.is_some());
}
