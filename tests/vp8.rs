//! VP8 end to end: the real daemon, a real Mosquitto, and the project's own
//! viewer offering VP8 only (`campeer view --codec vp8`, what a browser
//! without H.264 offers). The viewer decodes with libvpx and reads the frame
//! stamps, so a passing run proves the stamps survive VP8.

mod common;

use common::*;

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("report has no {k}: {v}"))
}

fn assert_stamped_video(r: &serde_json::Value, frames: u64, what: &str) {
    assert!(r["error"].is_null(), "{what}: viewer error: {r}");
    assert!(u(r, "frames") >= frames, "{what}: {r}");
    assert_eq!(u(r, "width"), 640, "{what}");
    assert_eq!(u(r, "stamped_frames"), u(r, "frames"), "{what}: {r}");
    assert_eq!(u(r, "out_of_order"), 0, "{what}: {r}");
    assert!(
        r["last_counter"].as_u64() > r["first_counter"].as_u64(),
        "{what}: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_only_viewer_gets_stamped_vp8_and_the_encoder_stops_after_it() {
    let broker = Broker::start();
    let d = Daemon::start(&broker, "cam-vp8", &["--size", "640x480", "--fps", "30"]).await;
    let r = view(
        &broker,
        "cam-vp8",
        &["--codec", "vp8", "--frames", "90", "--timeout", "30"],
    )
    .await;
    assert_stamped_video(&r, 90, "VP8 viewer");
    let log = d.log_text();
    assert!(
        log.contains("codec=Vp8"),
        "the session sent VP8; log:\n{log}"
    );
    assert!(
        log.contains("VP8 encoder started"),
        "the VP8 encoder ran; log:\n{log}"
    );
    // With the viewer gone, the VP8 encoder stops.
    let t = std::time::Instant::now();
    while !d.log_text().contains("VP8 encoder stopped") {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "the VP8 encoder kept running with no VP8 viewer; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_vp8_viewers_at_once_share_one_encoder_each() {
    let broker = Broker::start();
    let d = Daemon::start(&broker, "cam-mixed", &["--size", "640x480", "--fps", "30"]).await;
    // An H.264 viewer alone: no VP8 encoder at all (H.264 is preferred when
    // both are offered, and the viewer offers both).
    let r = view(&broker, "cam-mixed", &["--frames", "30", "--timeout", "30"]).await;
    assert_stamped_video(&r, 30, "H.264 viewer alone");
    assert!(
        !d.log_text().contains("VP8 encoder started"),
        "VP8 encoded without a VP8 viewer; log:\n{}",
        d.log_text()
    );
    let args = ["--frames", "90", "--timeout", "40"];
    let h1 = view_spawn(&broker, "cam-mixed", &args);
    let v1 = view_spawn(
        &broker,
        "cam-mixed",
        &[&args[..], &["--codec", "vp8"]].concat(),
    );
    let v2 = view_spawn(
        &broker,
        "cam-mixed",
        &[&args[..], &["--codec", "vp8"]].concat(),
    );
    assert_stamped_video(&h1.await.expect("viewer"), 90, "H.264 viewer");
    assert_stamped_video(&v1.await.expect("viewer"), 90, "first VP8 viewer");
    assert_stamped_video(&v2.await.expect("viewer"), 90, "second VP8 viewer");
    let log = d.log_text();
    assert_eq!(log.matches("codec=Vp8").count(), 2, "log:\n{log}");
    assert_eq!(log.matches("codec=H264").count(), 2, "log:\n{log}");
    // Two VP8 viewers at once, one encoder.
    assert_eq!(
        log.matches("VP8 encoder started").count(),
        1,
        "one VP8 encoder for two overlapping VP8 viewers; log:\n{log}"
    );
}
