//! Abuse: a flood of offers and garbage from many sids. The daemon must stay
//! responsive (an honest, signed viewer still gets video), never exceed its
//! session limit, and keep its memory bounded.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let (_, mib) = proc_sample(pid)
        .unwrap_or_else(|| panic!("cannot read the RSS of the daemon (pid {pid}): has it exited?"));
    (mib * 1024.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_offers_and_garbage_does_not_lock_out_an_honest_viewer() {
    let dir = TempDir::new("flood");
    let cfg = dir.0.join("campeer.toml");
    std::fs::write(
        &cfg,
        "[video]\nwidth = 320\nheight = 240\n\n[webrtc]\nmax_sessions = 3\n\n\
         [[access.keys]]\nid = \"owner\"\nsecret = \"flood-test-secret-0123456789\"\nrole = \"control\"\n",
    )
    .unwrap();
    let secret = dir.0.join("owner.key");
    std::fs::write(&secret, "flood-test-secret-0123456789").unwrap();
    let broker = Broker::start();
    let dev = "cam-flood";
    let d = Daemon::start(
        &broker,
        dev,
        &["--signed", "--config", cfg.to_str().unwrap()],
    )
    .await;
    let rss_before = rss_kib(d.pid());

    // Watch the session count the device publishes.
    let mut status = RawClient::connect(broker.port, &[status_topic("campeer", dev)]).await;
    let flooder = RawClient::connect(broker.port, &[]).await;
    let offer = vp8_only_offer().replace(
        "VP8/90000",
        "H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f",
    );
    let flood_for = Duration::from_secs(20);
    let flood = tokio::spawn(async move {
        let t = Instant::now();
        let mut n = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while t.elapsed() < flood_for {
            tick.tick().await;
            let s = sid();
            let payload = match n % 4 {
                0 => json!({"type": "offer", "sdp": offer}).to_string(),
                1 => json!({"type": "offer", "sdp": offer, "auth": {"key": "owner", "role": "control", "sig": "AAAA"}}).to_string(),
                2 => "{garbage".to_owned(),
                _ => json!({"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0"}}).to_string(),
            };
            flooder.publish(&in_topic("cam-flood", &s), payload).await;
            n += 1;
        }
        n
    });

    // An honest viewer in the middle of the flood.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = view(
        &broker,
        dev,
        &[
            "--key",
            "owner",
            "--secret-file",
            secret.to_str().unwrap(),
            "--frames",
            "30",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(
        r["error"].is_null(),
        "honest viewer failed during the flood: {r}"
    );
    assert!(r["frames"].as_u64() >= Some(30), "{r}");
    let ffm = r["first_frame_ms"].as_f64().unwrap();
    println!("honest viewer during the flood: first frame after {ffm:.0} ms");

    let sent = flood.await.unwrap();
    assert!(sent >= 1500, "the flood sent only {sent} messages");
    // Every status published during the flood stayed within the limit.
    // (At least the retained one from before the flood; each must carry
    // its session count.)
    let mut max_sessions = 0;
    let mut statuses = 0;
    while let Some(v) = status
        .recv_on(&status_topic("campeer", dev), Duration::from_millis(200))
        .await
    {
        let n = v["sessions"]
            .as_u64()
            .unwrap_or_else(|| panic!("a status without a session count: {v}"));
        max_sessions = max_sessions.max(n);
        statuses += 1;
    }
    assert!(statuses > 0, "no status message from the device at all");
    assert!(
        max_sessions <= 3,
        "sessions exceeded the limit: {max_sessions}"
    );
    let rss_after = rss_kib(d.pid());
    println!("flood: {sent} messages; daemon RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 30 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(!d.log_text().contains("panicked"));
}
