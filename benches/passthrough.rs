//! Passthrough benchmark: prints figures, asserts nothing.
//!
//! The release daemon reads video from Debian's ffmpeg (`exec:` source,
//! standing in for rpicam-vid) in two ways at the same size and rate:
//! raw I420 that campeer encodes with openh264, and H.264 Annex B from
//! ffmpeg's libx264 that campeer passes through (as it would the Pi's
//! hardware encoder's). It prints the daemon's CPU (ffmpeg is another
//! process and not counted) with 1 and 8 viewers, and, for passthrough,
//! the time to the first decoded frame with a keyframe every 1 s and every
//! 0.5 s (a joining viewer waits for the source's next keyframe).
//!
//! Run: `cargo bench --bench passthrough` (env CAMPEER_BENCH_QUICK=1 for a
//! short run). Needs ffmpeg (scripts/install-deps.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const TESTSRC: &str = "ffmpeg -hide_banner -nostdin -loglevel error -re -f lavfi -i testsrc2=size={width}x{height}:rate={fps}";
const RAW: &str = "-pix_fmt yuv420p -f rawvideo -";
const H264: &str = "-pix_fmt yuv420p -c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g {keyframe_interval} -bf 0 -f h264 -";

struct Setup {
    w: u32,
    h: u32,
    passthrough: bool,
    keyframe_interval: u32,
}

async fn start(broker: &Broker, dir: &TempDir, dev: &str, s: &Setup) -> Daemon {
    let (tail, format) = if s.passthrough {
        (H264, "h264")
    } else {
        (RAW, "i420")
    };
    let path = dir.0.join(format!("{dev}.toml"));
    let text = format!(
        "[video]\nsource = {:?}\nexec_format = {format:?}\nwidth = {}\nheight = {}\nfps = 30\n\
         keyframe_interval = {}\nbitrate = {}\n",
        format!("exec:{TESTSRC} {tail}"),
        s.w,
        s.h,
        s.keyframe_interval,
        if s.w >= 1280 { 2_500_000 } else { 1_000_000 },
    );
    std::fs::write(&path, text).expect("write config");
    let p = path.to_string_lossy().into_owned();
    Daemon::start(broker, dev, &["--config", &p, "--max-sessions", "8"]).await
}

/// Daemon CPU% (of one core) with 1 and 8 viewers.
async fn cpu(s: &Setup, quick: bool) -> Vec<(usize, f64, u64)> {
    let broker = Broker::start();
    let dir = TempDir::new("bench-pt");
    let dev = format!("pt-{}x{}-{}", s.w, s.h, s.passthrough);
    let d = start(&broker, &dir, &dev, s).await;
    let window = Duration::from_secs(if quick { 3 } else { 6 });
    let frames = if quick { "150" } else { "300" };
    let mut rows = Vec::new();
    for n in [1usize, 8] {
        let viewers: Vec<_> = (0..n)
            .map(|_| view_spawn(&broker, &dev, &["--frames", frames, "--timeout", "60"]))
            .collect();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let (cpu, _) = measure(d.pid(), window).await;
        let mut got = 0;
        for v in viewers {
            let r: Value = v.await.expect("viewer");
            got += r["frames"].as_u64().unwrap_or(0);
        }
        rows.push((n, cpu, got));
    }
    rows
}

/// Time to first decoded frame (ms) over sequential viewers.
async fn first_frame(s: &Setup, runs: usize) -> Vec<f64> {
    let broker = Broker::start();
    let dir = TempDir::new("bench-pt-ttff");
    let dev = format!("ttff-{}", s.keyframe_interval);
    let _d = start(&broker, &dir, &dev, s).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = Vec::new();
    for _ in 0..runs {
        let r = view(&broker, &dev, &["--frames", "3", "--timeout", "20"]).await;
        if let Some(v) = r["first_frame_ms"].as_f64() {
            out.push(v);
        }
        // Join at a different point of the keyframe interval each time.
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    println!(
        "campeer passthrough benchmark on {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for (w, h) in [(640, 480), (1280, 720)] {
        println!("\n== {w}x{h}@30 from ffmpeg (exec:), daemon CPU% of one core ==");
        println!("viewers | openh264 (raw I420 in) | passthrough (H.264 in) | frames decoded (openh264 / passthrough)");
        let enc = cpu(
            &Setup {
                w,
                h,
                passthrough: false,
                keyframe_interval: 30,
            },
            quick,
        )
        .await;
        let pt = cpu(
            &Setup {
                w,
                h,
                passthrough: true,
                keyframe_interval: 30,
            },
            quick,
        )
        .await;
        for ((n, c1, g1), (_, c2, g2)) in enc.iter().zip(&pt) {
            println!("{n:>7} | {c1:>22.1} | {c2:>22.1} | {g1} / {g2}");
        }
    }
    let runs = if quick { 6 } else { 15 };
    println!(
        "\n== passthrough 640x480@30: time to first decoded frame (offer published -> picture) =="
    );
    for (gop, label) in [(30, "1 s"), (15, "0.5 s")] {
        let t = first_frame(
            &Setup {
                w: 640,
                h: 480,
                passthrough: true,
                keyframe_interval: gop,
            },
            runs,
        )
        .await;
        println!(
            "keyframe every {label} ({gop} frames), {} runs: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            t.len(),
            pct(&mut t.clone(), 0.5),
            pct(&mut t.clone(), 0.95),
            t.iter().cloned().fold(0.0, f64::max)
        );
    }
    let mut t = first_frame(
        &Setup {
            w: 640,
            h: 480,
            passthrough: false,
            keyframe_interval: 30,
        },
        runs,
    )
    .await;
    println!(
        "openh264 for comparison (IDR on demand), {} runs: p50 {:.0} ms, p95 {:.0} ms",
        t.len(),
        pct(&mut t.clone(), 0.5),
        pct(&mut t, 0.95)
    );
}
