//! Soak and flood benchmark: prints figures, asserts nothing.
//!
//! Soak: N connect/disconnect cycles (default 500) of a real viewer; the
//! daemon's RSS, open fds and threads before and after.
//! Flood: 100 offers/s plus garbage for 20 s against a signed device; the
//! daemon's CPU and RSS meanwhile, and an honest viewer's time to first
//! frame during it.
//!
//! Run: `cargo bench --bench soak` (CAMPEER_SOAK_CYCLES=50 for a short run).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

async fn soak(cycles: usize) {
    let broker = Broker::start();
    let dev = "soak";
    let d = Daemon::start(&broker, dev, &["--size", "320x240", "--max-sessions", "4"]).await;
    let pid = d.pid();
    // Warm up: the first sessions allocate caches that stay.
    for _ in 0..5 {
        view(&broker, dev, &["--frames", "5", "--timeout", "20"]).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, rss0) = sample(pid);
    let (fds0, thr0) = fds_and_threads(pid);
    let t = Instant::now();
    let mut failed = 0;
    for i in 0..cycles {
        let r = view(&broker, dev, &["--frames", "5", "--timeout", "20"]).await;
        if !r["error"].is_null() || r["frames"].as_u64() < Some(5) {
            failed += 1;
        }
        if (i + 1) % 100 == 0 {
            let (_, rss) = sample(pid);
            let (fds, thr) = fds_and_threads(pid);
            println!(
                "  after {:>4} cycles: RSS {rss:.1} MiB, fds {fds}, threads {thr}",
                i + 1
            );
        }
    }
    // Sessions close asynchronously; give the last one a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, rss1) = sample(pid);
    let (fds1, thr1) = fds_and_threads(pid);
    println!(
        "soak: {cycles} connect/disconnect cycles in {:.0} s ({failed} failed)\n  \
         RSS {rss0:.1} -> {rss1:.1} MiB (drift {:+.1} MiB), fds {fds0} -> {fds1}, threads {thr0} -> {thr1}",
        t.elapsed().as_secs_f64(),
        rss1 - rss0
    );
}

async fn flood() {
    let dir = TempDir::new("flood-bench");
    let cfg = dir.0.join("campeer.toml");
    std::fs::write(
        &cfg,
        "[video]\nwidth = 640\nheight = 480\n\n[webrtc]\nmax_sessions = 4\n\n\
         [[access.keys]]\nid = \"owner\"\nsecret = \"flood-bench-secret-0123456789\"\nrole = \"control\"\n",
    )
    .unwrap();
    let secret = dir.0.join("owner.key");
    std::fs::write(&secret, "flood-bench-secret-0123456789").unwrap();
    let broker = Broker::start();
    let dev = "flood";
    let d = Daemon::start(&broker, dev, &["--config", cfg.to_str().unwrap()]).await;
    let pid = d.pid();
    let (idle_cpu, idle_rss) = measure(pid, Duration::from_secs(3)).await;
    let flooder = RawClient::connect(broker.port, &[]).await;
    let offer =
        vp8_only_offer().replace("VP8/90000", "H264/90000\r\na=fmtp:96 packetization-mode=1");
    let task = tokio::spawn(async move {
        let t = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(20) {
            tick.tick().await;
            let payload = match n % 3 {
                0 => json!({"type": "offer", "sdp": offer}).to_string(),
                1 => json!({"type": "offer", "sdp": offer, "auth": {"key": "owner", "role": "view", "sig": "x"}}).to_string(),
                _ => "{garbage".to_owned(),
            };
            flooder.publish(&in_topic("flood", &sid()), payload).await;
            n += 1;
        }
        n
    });
    let measuring = tokio::spawn(measure(pid, Duration::from_secs(18)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ttff = Vec::new();
    for _ in 0..5 {
        let r = view(
            &broker,
            dev,
            &[
                "--key",
                "owner",
                "--secret-file",
                secret.to_str().unwrap(),
                "--frames",
                "5",
                "--timeout",
                "20",
            ],
        )
        .await;
        if let Some(v) = r["first_frame_ms"].as_f64() {
            ttff.push(v);
        }
    }
    let (cpu, rss) = measuring.await.unwrap();
    let sent = task.await.unwrap();
    ttff.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "flood: {sent} messages in 20 s (offers unsigned / badly signed / garbage)\n  \
         daemon idle CPU {idle_cpu:.1}%, RSS {idle_rss:.1} MiB; during the flood CPU {cpu:.1}% of one core, peak RSS {rss:.1} MiB\n  \
         honest signed viewer during the flood: time to first frame {:?} ms ({} of 5 succeeded)",
        ttff.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
        ttff.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cycles = std::env::var("CAMPEER_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    soak(cycles).await;
    flood().await;
}
