//! Snapshot latency at 720p: the JPEG encode alone (in process, the test
//! pattern), and `GET /snapshot.jpg` end to end against a real daemon
//! streaming the 720p test pattern (open access, loopback). Prints
//! figures, asserts nothing.
//!
//! Run: `cargo bench --bench snapshot` (CAMPEER_BENCH_QUICK=1: fewer runs).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn report(what: &str, ms: &mut [f64], bytes: usize) {
    println!(
        "{what}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} runs, {bytes} bytes",
        pct(ms, 0.5),
        pct(ms, 0.95),
        pct(ms, 1.0),
        ms.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    let runs = if quick { 10 } else { 50 };
    let mut pattern = campeer::media::test_pattern::TestPattern::new(1280, 720, 30).unwrap();
    let frame = pattern.render(1, 0);
    for (label, width) in [("encode 1280x720", None), ("encode 640x360", Some(640))] {
        let mut ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let s = campeer::snapshot::encode(&frame, width, campeer::snapshot::QUALITY).unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = s.jpeg.len();
        }
        report(label, &mut ms, bytes);
    }

    let dir = TempDir::new("bench-snapshot");
    let cfg = dir.0.join("c.toml");
    std::fs::write(&cfg, format!("[http]\nlisten = \"{PAGE_ANY_PORT}\"\n")).unwrap();
    let broker = Broker::start();
    let d = Daemon::start(
        &broker,
        "bench-snap",
        &[
            "--size",
            "1280x720",
            "--config",
            cfg.to_str().unwrap(),
            "--stats-interval",
            "0",
        ],
    )
    .await;
    let http = d.page_port().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .unwrap();
        s.write_all(b"GET /snapshot.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(
            buf.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..40.min(buf.len())])
        );
        bytes = buf.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report(
        "GET /snapshot.jpg 1280x720 (daemon, loopback)",
        &mut ms,
        bytes,
    );
}
