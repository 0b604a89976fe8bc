//! What signing costs the first frame: the same device, open and signed
//! (protocol version 2: the viewer reads the nonce, signs, macs every
//! message; the device verifies), time from offer to first decoded frame
//! over sequential `campeer view` runs. Prints figures, asserts nothing.
//!
//! Run: `cargo bench --bench signing` (CAMPEER_BENCH_QUICK=1: fewer runs).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    let runs = if quick { 8 } else { 30 };
    let dir = TempDir::new("bench-signing");
    let secret = "bench-signing-secret-0123456789";
    let cfg = dir.0.join("signed.toml");
    std::fs::write(
        &cfg,
        format!("[[access.keys]]\nid = \"bench\"\nsecret = \"{secret}\"\nrole = \"control\"\n"),
    )
    .expect("config");
    let key = dir.0.join("bench.key");
    std::fs::write(&key, secret).expect("key");
    let broker = Broker::start();
    let common = ["--size", "640x480", "--stats-interval", "0"];
    let _open = Daemon::start(&broker, "bench-open", &common).await;
    let mut signed_args = vec!["--signed", "--config", cfg.to_str().expect("utf-8 path")];
    signed_args.extend(common);
    let _signed = Daemon::start(&broker, "bench-signed", &signed_args).await;
    let key = key.to_str().expect("utf-8 path");
    let mut open = Vec::new();
    let mut signed = Vec::new();
    // answer and connected times, for where a difference comes from
    let mut phases: [[Vec<f64>; 2]; 2] = Default::default();
    // Interleaved, each going first in turn, with a pause so the last
    // session's teardown is not counted against the next one.
    let open_args = ["--frames", "3", "--timeout", "20", "--no-audio"];
    let signed_args = [
        "--frames",
        "3",
        "--timeout",
        "20",
        "--no-audio",
        "--key",
        "bench",
        "--secret-file",
        key,
    ];
    for i in 0..runs {
        for which in [i % 2, 1 - i % 2] {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if which == 0 {
                let r = view(&broker, "bench-open", &open_args).await;
                open.extend(r["first_frame_ms"].as_f64());
                phases[0][0].extend(r["answer_ms"].as_f64());
                phases[0][1].extend(r["connected_ms"].as_f64());
            } else {
                let r = view(&broker, "bench-signed", &signed_args).await;
                signed.extend(r["first_frame_ms"].as_f64());
                phases[1][0].extend(r["answer_ms"].as_f64());
                phases[1][1].extend(r["connected_ms"].as_f64());
            }
        }
    }
    println!("offer to first decoded frame, 640x480, {runs} runs each (ms):");
    for (name, v) in [("open", &mut open), ("signed (v2)", &mut signed)] {
        println!(
            "  {name:12} n={:2} p50 {:6.1}  p95 {:6.1}  max {:6.1}",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 1.0)
        );
    }
    for (i, name) in ["open", "signed (v2)"].iter().enumerate() {
        let [a, c] = &mut phases[i];
        println!(
            "  {name:12} answer p50 {:6.1}  connected p50 {:6.1}",
            pct(a, 0.5),
            pct(c, 0.5)
        );
    }
    println!(
        "  difference of medians: {:+.1} ms",
        pct(&mut signed, 0.5) - pct(&mut open, 0.5)
    );
}
