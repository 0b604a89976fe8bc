//! The first frame as users see it, the page's capture-to-display figure,
//! and what VP8 costs the device. Prints figures, asserts nothing.
//!
//! - First frame over page loads: Debian's Chromium, headless, through
//!   tests/browser/driver.mjs, loads the page of a `campeer run` with its own
//!   broker; the page's own `offerToFirstFrameMs` (from the offer leaving the
//!   browser to the first frame shown) and its milestones.
//! - The same over `campeer view` runs (offer published to first decoded
//!   frame), on an external Mosquitto.
//! - Capture to display: the page's stamp-based figures, stage by stage,
//!   pooled over 15 newly started daemons (each a new phase between the
//!   capture clock and the browser's frame clock).
//! - Daemon CPU and RSS with 1 H.264, 1 VP8 and 1+1 `campeer view` viewers
//!   at 640x480 and 1280x720.
//!
//! Run: `cargo bench --profile dev --bench first_frame`
//! (CAMPEER_BENCH_QUICK=1: 8 runs instead of 30, shorter windows).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_campeer");

/// tests/browser/driver.mjs: one JSON command a line, one reply a line.
struct Chromium {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
    next: u64,
}

impl Chromium {
    fn launch() -> Chromium {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("tests/browser/driver.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/browser/driver.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Chromium {
            child,
            stdin,
            out,
            next: 0,
        }
    }

    async fn cmd(&mut self, mut c: Value) -> Result<Value, String> {
        self.next += 1;
        c["id"] = json!(self.next);
        let line = format!("{c}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let reply = tokio::time::timeout(Duration::from_secs(60), self.out.next_line())
            .await
            .map_err(|_| "driver timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("driver ended")?;
        let v: Value = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
        if v["ok"] == json!(true) {
            Ok(v["value"].clone())
        } else {
            Err(v["error"].to_string())
        }
    }

    async fn quit(mut self) {
        let _ = self.cmd(json!({"cmd": "quit"})).await;
        let _ = self.child.wait().await;
    }
}

/// `campeer run` with its own broker and page, open access.
struct PageDaemon {
    child: std::process::Child,
    http: u16,
    _dir: TempDir,
}

impl PageDaemon {
    async fn start() -> PageDaemon {
        let dir = TempDir::new("bench-ff-page");
        // The own broker does not report a port it bound: a picked one.
        // The page server binds any port and logs it (at info).
        let mqtt = free_port();
        let log = dir.0.join("daemon.log");
        let child = std::process::Command::new(BIN)
            .args(["--log", "warn,campeer::daemon=info", "run"])
            .args(["--device-id", "bench-page"])
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .args([
                "--open-access",
                "--size",
                "640x480",
                "--stats-interval",
                "0",
            ])
            .args(["--http", PAGE_ANY_PORT])
            .args(["--broker-listen", &format!("127.0.0.1:{mqtt}")])
            .args(["--broker-ws-listen", ""])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("daemon.log"))
            .spawn()
            .expect("start campeer run");
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let http = wait_page_port(log_text, Duration::from_secs(20)).await;
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "page never served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The device goes online on its broker shortly after the page.
        tokio::time::sleep(Duration::from_secs(1)).await;
        PageDaemon {
            child,
            http,
            _dir: dir,
        }
    }
}

impl Drop for PageDaemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn summary(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "no data".into();
    }
    format!(
        "n={:2} p50 {:6.1}  p95 {:6.1}  max {:6.1}",
        v.len(),
        pct(v, 0.5),
        pct(v, 0.95),
        pct(v, 1.0)
    )
}

/// First frame over `runs` page loads, each in a fresh tab, the device idle
/// in between; then the page's capture-to-display figures over `pages`
/// further loads.
async fn chromium(runs: usize, pages: usize) {
    let d = PageDaemon::start().await;
    let url = format!("http://127.0.0.1:{}/", d.http);
    let mut b = Chromium::launch();
    let mut total = Vec::new();
    // offer -> answer in -> answer applied -> connected -> first frame,
    // from the page's timeline
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut failed = 0;
    for _ in 0..runs {
        let page = match b.cmd(json!({"cmd": "open", "url": url})).await {
            Ok(p) => p,
            Err(e) => {
                println!("  open failed: {e}");
                failed += 1;
                continue;
            }
        };
        let waited = b
            .cmd(json!({"cmd": "wait", "page": page, "timeout": 20000,
                "expr": "window.campeer && window.campeer.offerToFirstFrameMs !== null"}))
            .await;
        if let Err(e) = waited {
            println!("  no first frame: {e}");
            failed += 1;
        } else if let Ok(st) = b
            .cmd(json!({"cmd": "eval", "page": page,
                "expr": "({ms: window.campeer.offerToFirstFrameMs, t: window.campeer.timeline})"}))
            .await
        {
            total.extend(st["ms"].as_f64());
            let t = &st["t"];
            let at = |k: &str| t[k].as_f64();
            for (i, (a, z)) in [
                ("offer", "answer-in"),
                ("answer-in", "answer"),
                ("answer", "connected"),
                ("connected", "frame"),
            ]
            .into_iter()
            .enumerate()
            {
                if let (Some(a), Some(z)) = (at(a), at(z)) {
                    phases[i].push(z - a);
                }
            }
        }
        // The page's own leaving (its pagehide handler sends `bye`), then the
        // tab closed. A tab closed outright does not get its bye out
        // (docs/benchmarks.md), and its session would stream on until ICE
        // timed out, loading the device during the next loads.
        let _ = b
            .cmd(json!({"cmd": "eval", "page": page,
                "expr": "window.dispatchEvent(new Event('pagehide')), 1"}))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = b.cmd(json!({"cmd": "close", "page": page})).await;
        // The session's teardown is not counted against the next load.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    println!("\n== Chromium page loads, 640x480, offer leaving the browser to the first frame shown (ms) ==");
    println!("  first frame           {}", summary(&mut total));
    for (i, name) in [
        "offer -> answer in",
        "answer applied",
        "answer -> connected",
        "connected -> frame",
    ]
    .iter()
    .enumerate()
    {
        println!("  {name:21} {}", summary(&mut phases[i]));
    }
    println!("  failed loads: {failed} of {runs}");

    b.quit().await;
    drop(d);
    display_latency(pages).await;
}

/// The page's capture-to-display figures, stage by stage (web/src/latency.ts),
/// one second (30 frames) from each of `pages` page loads, each from a
/// newly started daemon in a newly started Chromium. The wait for the next
/// paint depends on the phase between the device's capture clock and the
/// browser's frame clock. Both tick off CLOCK_MONOTONIC, so the phase stays
/// put for as long as both run: measured, it followed the daemon's start,
/// not the page load or the browser's. A camera and a display drift through
/// every phase over time; a new daemon per load samples them.
async fn display_latency(pages: usize) {
    const STAGES: [&str; 4] = ["received", "composed", "shown", "expected"];
    let mut pooled: [Vec<f64>; 4] = Default::default();
    let mut page_medians = Vec::new();
    for _ in 0..pages {
        let d = PageDaemon::start().await;
        let url = format!("http://127.0.0.1:{}/", d.http);
        let mut b = Chromium::launch();
        let Ok(page) = b.cmd(json!({"cmd": "open", "url": url})).await else {
            println!("  open failed");
            b.quit().await;
            continue;
        };
        let ready = b
            .cmd(json!({"cmd": "wait", "page": page, "timeout": 20000,
                "expr": "window.campeer.latencyStages.shown.length >= 30"}))
            .await;
        // A fresh window of 30 frames, all taken after the clock settled.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let stages = match ready {
            Ok(_) => b
                .cmd(json!({"cmd": "eval", "page": page, "expr": "window.campeer.latencyStages"}))
                .await
                .unwrap_or(Value::Null),
            Err(e) => {
                println!("  no latency figures: {e}");
                Value::Null
            }
        };
        for (i, stage) in STAGES.iter().enumerate() {
            let v: Vec<f64> = stages[stage]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            if *stage == "shown" && !v.is_empty() {
                page_medians.push(pct(&mut v.clone(), 0.5));
            }
            pooled[i].extend(v);
        }
        // The browser and the daemon both go: no leaving needed.
        b.quit().await;
        drop(d);
    }
    println!(
        "\n== Chromium capture to display, the page's stamp-based figures, 640x480, {pages} daemons x 30 frames (ms) =="
    );
    for (i, name) in [
        "last packet received",
        "handed to compositor",
        "shown (page figure)",
        "Chromium's estimate",
    ]
    .iter()
    .enumerate()
    {
        println!("  {name:21} {}", summary(&mut pooled[i]));
    }
    println!("  shown, each daemon's p50 {}", summary(&mut page_medians));
}

/// First frame over `runs` sequential `campeer view` runs.
async fn cli_view(runs: usize) {
    let broker = Broker::start();
    let _d = Daemon::start(
        &broker,
        "bench-ff",
        &["--size", "640x480", "--stats-interval", "0"],
    )
    .await;
    let mut total = Vec::new();
    let mut answer = Vec::new();
    let mut connected = Vec::new();
    for _ in 0..runs {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = view(
            &broker,
            "bench-ff",
            &["--frames", "3", "--timeout", "20", "--no-audio"],
        )
        .await;
        total.extend(r["first_frame_ms"].as_f64());
        answer.extend(r["answer_ms"].as_f64());
        connected.extend(r["connected_ms"].as_f64());
    }
    println!("\n== campeer view runs, 640x480, offer published to first decoded frame (ms) ==");
    println!("  first frame  {}", summary(&mut total));
    println!("  answer       {}", summary(&mut answer));
    println!("  connected    {}", summary(&mut connected));
}

/// Daemon CPU and RSS per viewer mix and picture size.
async fn codec_cost(window: Duration) {
    let broker = Broker::start();
    println!(
        "\n== daemon CPU (% of one core) / peak RSS, `campeer view` viewers, test source, 30 fps, {} s window ==",
        window.as_secs()
    );
    for size in ["640x480", "1280x720"] {
        let dev = format!("bench-cost-{size}");
        let d = Daemon::start(&broker, &dev, &["--size", size, "--stats-interval", "0"]).await;
        let pid = d.pid();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (idle, idle_rss) = measure(pid, Duration::from_secs(3)).await;
        println!("  {size:9} idle                {idle:5.1}% / {idle_rss:5.1} MiB");
        let frames = (30 * (window.as_secs() + 6)).to_string();
        for (name, codecs) in [
            ("1 H.264", &["h264"][..]),
            ("1 VP8", &["vp8"][..]),
            ("1 H.264 + 1 VP8", &["h264", "vp8"][..]),
        ] {
            let viewers: Vec<_> = codecs
                .iter()
                .map(|c| {
                    view_spawn(
                        &broker,
                        &dev,
                        &[
                            "--frames",
                            &frames,
                            "--timeout",
                            "90",
                            "--no-audio",
                            "--codec",
                            c,
                        ],
                    )
                })
                .collect();
            // Connected, encoders started and settled.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (cpu, rss) = measure(pid, window).await;
            let mut frames_seen = Vec::new();
            for v in viewers {
                let r = v.await.expect("viewer");
                frames_seen.push(r["frames"].to_string());
            }
            println!(
                "  {size:9} {name:19} {cpu:5.1}% / {rss:5.1} MiB   (frames decoded per viewer: {})",
                frames_seen.join(", ")
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    let runs = if quick { 8 } else { 30 };
    let only = std::env::var("CAMPEER_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "chromium" {
        chromium(runs, if quick { 3 } else { 15 }).await;
    }
    if only.is_empty() || only == "view" {
        cli_view(runs).await;
    }
    if only.is_empty() || only == "cost" {
        codec_cost(Duration::from_secs(if quick { 3 } else { 6 })).await;
    }
}
