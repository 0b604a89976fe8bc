//! Streaming benchmark: prints figures, asserts nothing.
//!
//! For each size it runs the release daemon on the test source against a
//! real Mosquitto, then real viewers (`campeer view`, separate processes),
//! and prints: capture-to-packet-sent on the device (from the daemon's stats
//! lines), capture-to-decode latency p50/p95, time to first frame p50/p95,
//! and the daemon's CPU% (of one core) and RSS idle and with 1, 4 and 8
//! viewers.
//!
//! Run: `cargo bench --bench streaming` (env CAMPEER_BENCH_QUICK=1 for a short run).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// The last "stats" line's send_p50_us / send_p95_us from the daemon log.
fn send_latency(log: &str) -> Option<(f64, f64)> {
    let line = log.lines().rev().find(|l| {
        l.contains(" stats") && l.contains("send_samples=") && !l.contains("send_samples=0")
    })?;
    let field = |k: &str| -> Option<f64> {
        let i = line.find(k)? + k.len();
        line[i..]
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()?
            .parse()
            .ok()
    };
    Some((field("send_p50_us=")?, field("send_p95_us=")?))
}

async fn run_size(w: u32, h: u32, quick: bool) {
    let broker = Broker::start();
    let dev = format!("bench-{w}x{h}");
    let size = format!("{w}x{h}");
    let d = Daemon::start(
        &broker,
        &dev,
        &[
            "--size",
            &size,
            "--fps",
            "30",
            "--max-sessions",
            "8",
            "--stats-interval",
            "2",
            "--bitrate",
            if w >= 1280 { "2500000" } else { "1000000" },
        ],
    )
    .await;
    let pid = d.pid();
    let window = Duration::from_secs(if quick { 3 } else { 6 });
    let frames = if quick { "150" } else { "300" };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_cpu, idle_rss) = measure(pid, window).await;

    // Time to first frame, sequential viewers.
    let mut ttff = Vec::new();
    for _ in 0..(if quick { 5 } else { 15 }) {
        let r = view(&broker, &dev, &["--frames", "3", "--timeout", "20"]).await;
        if let Some(v) = r["first_frame_ms"].as_f64() {
            ttff.push(v);
        }
    }

    let mut rows = Vec::new();
    for n in [1usize, 4, 8] {
        let viewers: Vec<_> = (0..n)
            .map(|_| view_spawn(&broker, &dev, &["--frames", frames, "--timeout", "60"]))
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (cpu, rss) = measure(pid, window).await;
        let mut lat50 = Vec::new();
        let mut lat95 = Vec::new();
        let mut lost = 0u64;
        let mut got = 0u64;
        for v in viewers {
            let r: Value = v.await.expect("viewer");
            if let (Some(a), Some(b)) = (r["latency_p50_ms"].as_f64(), r["latency_p95_ms"].as_f64())
            {
                lat50.push(a);
                lat95.push(b);
            }
            // Every report has both; one without them is a broken viewer,
            // not a viewer that lost nothing.
            let count = |k: &str| {
                r[k].as_u64()
                    .unwrap_or_else(|| panic!("a viewer's report has no {k}: {r}"))
            };
            lost += count("lost_frames");
            got += count("frames");
        }
        let send = send_latency(&d.log_text());
        rows.push((
            n,
            cpu,
            rss,
            pct(&mut lat50, 0.5),
            pct(&mut lat95, 0.5),
            got,
            lost,
            send,
        ));
    }

    println!("\n== {w}x{h}@30, test source, loopback ==");
    println!("idle: CPU {idle_cpu:.1}% of one core, RSS {idle_rss:.1} MiB");
    println!(
        "time to first frame (offer published -> first decoded frame, {} runs): p50 {:.0} ms, p95 {:.0} ms",
        ttff.len(),
        pct(&mut ttff.clone(), 0.5),
        pct(&mut ttff, 0.95)
    );
    println!("viewers | daemon CPU% | daemon RSS MiB | capture->decode p50 / p95 ms | capture->sent p50 / p95 ms | frames | lost");
    for (n, cpu, rss, l50, l95, got, lost, send) in rows {
        let send = send
            .map(|(a, b)| format!("{:.2} / {:.2}", a / 1000.0, b / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!("{n:>7} | {cpu:>11.1} | {rss:>14.1} | {l50:>14.1} / {l95:<11.1} | {send:>26} | {got:>6} | {lost}");
    }
}

/// CPU with audio on: the same 640x480 stream plus Opus from a test tone.
async fn with_audio(quick: bool) {
    let broker = Broker::start();
    let d = Daemon::start(
        &broker,
        "bench-audio",
        &["--size", "640x480", "--fps", "30", "--audio", "tone:440"],
    )
    .await;
    let pid = d.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_cpu, _) = measure(pid, Duration::from_secs(3)).await;
    let secs = if quick { "6" } else { "10" };
    let viewer = view_spawn(
        &broker,
        "bench-audio",
        &["--frames", "1", "--audio-secs", secs, "--timeout", "60"],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let window = Duration::from_secs(if quick { 3 } else { 6 });
    let (cpu, rss) = measure(pid, window).await;
    let r: Value = viewer.await.expect("viewer");
    println!("\n== 640x480@30 + Opus (tone:440, mono 32 kbit/s), 1 viewer ==");
    println!(
        "daemon CPU idle {idle_cpu:.1}% (capture and Opus encode run without viewers), with the viewer {cpu:.1}%, RSS {rss:.1} MiB; \
         viewer: {} audio packets, dominant {:.1} Hz, largest gap {:.0} ms",
        r["audio"]["packets"],
        r["audio"]["dominant_hz"].as_f64().unwrap_or(f64::NAN),
        r["audio"]["max_arrival_gap_ms"].as_f64().unwrap_or(f64::NAN)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "campeer streaming benchmark on {} cores, {cpu}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for (w, h) in [(640, 480), (1280, 720)] {
        run_size(w, h, quick).await;
    }
    with_audio(quick).await;
}
