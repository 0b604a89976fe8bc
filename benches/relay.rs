//! Relay benchmark: prints figures, asserts nothing.
//!
//! The release daemon on the test source (640x480, 30 fps, 1 Mbit/s, no
//! audio) with `max_sessions = 1` and a relay to Debian's Janus (the
//! project's example configuration), a real Mosquitto, and viewers that are
//! `campeer view` processes decoding every frame. Three cases:
//! 1 viewer served directly; 1 direct and 20 relayed; 20 relayed only
//! (`relay.mode = "all"`). For each: the daemon's CPU (% of one core) and
//! RSS, its upstream (encoded media handed to sessions and to the relay,
//! from its stats lines), and Janus's CPU. The viewers share the machine's
//! cores with both servers.
//!
//! Run: `cargo bench --bench relay` (CAMPEER_BENCH_QUICK=1: shorter).

#[path = "../tests/common/mod.rs"]
mod common;

use common::janus::{self, Janus};
use common::*;
use std::time::Duration;

const DEVICE: &str = "bench-relay";
const KEY: &str = "0123456789abcdef-bench";

/// (seconds since start of day, video_kbytes, relay_kbytes) of each stats line.
fn stats(log: &str) -> Vec<(f64, f64, f64)> {
    log.lines()
        .filter(|l| l.contains(" stats "))
        .filter_map(|l| {
            let t = l.get(11..26)?;
            let mut p = t.split(':');
            let secs = p.next()?.parse::<f64>().ok()? * 3600.0
                + p.next()?.parse::<f64>().ok()? * 60.0
                + p.next()?.trim_end_matches('Z').parse::<f64>().ok()?;
            let field = |k: &str| -> f64 {
                l.find(k)
                    .and_then(|i| l[i + k.len()..].split(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            Some((secs, field("video_kbytes="), field("relay_kbytes=")))
        })
        .collect()
}

/// Upstream kbit/s (direct, relay) over the last `n` stats intervals.
fn upstream(log: &str, n: usize) -> (f64, f64) {
    let s = stats(log);
    if s.len() < n + 1 {
        return (f64::NAN, f64::NAN);
    }
    let (a, b) = (s[s.len() - 1 - n], s[s.len() - 1]);
    let dt = b.0 - a.0;
    (8.0 * (b.1 - a.1) / dt, 8.0 * (b.2 - a.2) / dt)
}

fn config(dir: &TempDir, janus: &Janus, mode: &str) -> String {
    let path = dir.0.join(format!("{mode}.toml"));
    std::fs::write(
        &path,
        format!(
            "[video]\nwidth = 640\nheight = 480\nfps = 30\nbitrate = 1000000\n\n\
             [webrtc]\nmax_sessions = 1\n\n\
             [[access.keys]]\nid = \"bench\"\nsecret = \"{KEY}\"\nrole = \"view\"\n\n\
             [relay]\nenabled = true\njanus_url = \"{}\"\nadmin_key = \"{}\"\nmode = \"{mode}\"\n",
            janus.url(),
            janus.admin_key
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

struct Case<'a> {
    name: &'a str,
    mode: &'a str,
    direct: bool,
    relayed: usize,
}

async fn run(case: &Case<'_>, window: Duration) {
    let janus = Janus::start();
    let broker = Broker::start();
    let dir = TempDir::new("bench-relay");
    let cfg = config(&dir, &janus, case.mode);
    let key = dir.0.join("bench.key");
    std::fs::write(&key, KEY).unwrap();
    let key = key.to_string_lossy().into_owned();
    let d = Daemon::start(
        &broker,
        DEVICE,
        &["--signed", "--config", &cfg, "--stats-interval", "2"],
    )
    .await;
    wait_status(
        broker.port,
        "campeer",
        DEVICE,
        |v| v["relay"]["state"] == "up",
        Duration::from_secs(20),
    )
    .await
    .expect("relay up");
    let hold = (window.as_secs() + 25).to_string();
    let args = [
        "--key",
        "bench",
        "--secret-file",
        &key,
        "--role",
        "view",
        "--no-audio",
        "--hold",
        "--timeout",
        &hold,
    ];
    let mut viewers = vec![];
    if case.direct {
        viewers.push(view_spawn(&broker, DEVICE, &args));
        d.wait_connected(1, Duration::from_secs(20)).await;
    }
    for _ in 0..case.relayed {
        viewers.push(view_spawn(&broker, DEVICE, &args));
    }
    if case.relayed > 0 {
        let want = case.relayed as u64;
        wait_status(
            broker.port,
            "campeer",
            DEVICE,
            |v| v["relay"]["viewers"].as_u64() == Some(want),
            Duration::from_secs(40),
        )
        .await
        .expect("every relayed viewer watching");
    }
    // Settle, then measure the daemon and Janus over the same window.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (dev, jan) = tokio::join!(measure(d.pid(), window), measure(janus.pid(), window));
    let intervals = (window.as_secs() / 2).max(1) as usize;
    let (direct_kbps, relay_kbps) = upstream(&d.log_text(), intervals);
    println!(
        "{:<28} device CPU {:>5.1}%  RSS {:>5.1} MiB  upstream direct {:>6.0} kbit/s  to Janus {:>6.0} kbit/s  Janus CPU {:>5.1}%",
        case.name, dev.0, dev.1, direct_kbps, relay_kbps, jan.0
    );
    for v in viewers {
        v.abort();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !common::prerequisite("janus", janus::missing()) {
        return;
    }
    let quick = std::env::var_os("CAMPEER_BENCH_QUICK").is_some();
    let window = Duration::from_secs(if quick { 4 } else { 10 });
    println!(
        "relay: 640x480 30 fps 1 Mbit/s test source, viewers decode every frame, window {} s",
        window.as_secs()
    );
    let cases = [
        Case {
            name: "1 direct viewer",
            mode: "overflow",
            direct: true,
            relayed: 0,
        },
        Case {
            name: "1 direct + 20 relayed",
            mode: "overflow",
            direct: true,
            relayed: 20,
        },
        Case {
            name: "20 relayed (mode all)",
            mode: "all",
            direct: false,
            relayed: 20,
        },
    ];
    for c in &cases {
        run(c, window).await;
    }
}
