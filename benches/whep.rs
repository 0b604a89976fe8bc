//! WHEP against MQTT signaling: the same signed device, the same key,
//! sequential `campeer view --whep` and `campeer view` runs, interleaved;
//! time from the offer leaving the viewer (the `POST` for WHEP, the MQTT
//! publish otherwise) to the answer, to `connected` and to the first decoded
//! frame. The WHEP viewer gathers its candidates before the `POST`
//! (non-trickle; host candidates, a few ms), which is not counted.
//! Prints figures, asserts nothing.
//!
//! Run: `cargo bench --bench whep` (CAMPEER_BENCH_QUICK=1: fewer runs).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    let runs = if quick { 8 } else { 30 };
    let dir = TempDir::new("bench-whep");
    let secret = "bench-whep-secret-0123456789";
    let cfg = dir.0.join("signed.toml");
    std::fs::write(
        &cfg,
        format!("[[access.keys]]\nid = \"bench\"\nsecret = \"{secret}\"\nrole = \"control\"\n"),
    )
    .expect("config");
    let key = dir.0.join("bench.key");
    std::fs::write(&key, secret).expect("key");
    let key = key.to_str().expect("utf-8 path");
    let broker = Broker::start();
    let args = [
        "--signed",
        "--config",
        cfg.to_str().expect("utf-8 path"),
        "--size",
        "640x480",
        "--stats-interval",
        "0",
        "--http",
        PAGE_ANY_PORT,
    ];
    let daemon = Daemon::start(&broker, "bench-whep", &args).await;
    let url = format!("http://127.0.0.1:{}/whep", daemon.page_port().await);
    let viewer = [
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
    let mut whep_args = viewer.to_vec();
    whep_args.extend(["--whep", url.as_str()]);
    // [mqtt, whep] x [answer, connected, first frame]
    let mut v: [[Vec<f64>; 3]; 2] = Default::default();
    for i in 0..runs {
        for which in [i % 2, 1 - i % 2] {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let r = if which == 0 {
                view(&broker, "bench-whep", &viewer).await
            } else {
                view(&broker, "bench-whep", &whep_args).await
            };
            if !r["error"].is_null() {
                println!("  run {i} ({}): {}", ["MQTT", "WHEP"][which], r["error"]);
            }
            for (k, field) in ["answer_ms", "connected_ms", "first_frame_ms"]
                .iter()
                .enumerate()
            {
                v[which][k].extend(r[*field].as_f64());
            }
        }
    }
    println!("signed device, 640x480, {runs} runs each, ms from the offer leaving the viewer:");
    println!(
        "  {:6} {:>20} {:>20} {:>26}",
        "", "answer p50/p95", "connected p50/p95", "first frame p50/p95/max"
    );
    for (i, name) in ["MQTT", "WHEP"].iter().enumerate() {
        let [a, c, f] = &mut v[i];
        println!(
            "  {name:6} {:>9.1} / {:>8.1} {:>9.1} / {:>8.1} {:>8.1} / {:>7.1} / {:>7.1}  (n={})",
            pct(a, 0.5),
            pct(a, 0.95),
            pct(c, 0.5),
            pct(c, 0.95),
            pct(f, 0.5),
            pct(f, 0.95),
            pct(f, 1.0),
            f.len()
        );
    }
}
