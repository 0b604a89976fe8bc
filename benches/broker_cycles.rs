//! Session open/close cycles through the device's own broker: prints
//! figures, asserts nothing.
//!
//! Runs `campeer run --video none` with one access key and its own
//! Mosquitto. Each cycle is what a viewer does on the wire: connect with
//! the key (a fresh client id), subscribe to its sid's `out`, publish a
//! signed offer to `in`, wait for the device's reply on `out`, disconnect.
//! The offers carry a wrong signature, so the device answers
//! `unauthorized` without building a peer connection: the cycle exercises
//! the broker and the daemon's signaling path, not WebRTC (the soak bench
//! covers that). Prints the RSS of the daemon and of Mosquitto before and
//! after.
//!
//! Run: `cargo bench --bench broker_cycles` (CAMPEER_BROKER_CYCLES=1000
//! for a short run).

#[path = "../tests/common/mod.rs"]
mod common;

use campeer::broker::key_password;
use common::*;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::time::{Duration, Instant};

const DEVICE: &str = "bench";
const KEY: &str = "viewer";
const SECRET: &str = "bench-secret-0123456789";

fn mosquitto_child(pid: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let close = stat.rfind(')')?;
        let name = &stat[stat.find('(').map_or(0, |i| i + 1)..close];
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if name == "mosquitto" && ppid == Some(pid) {
            return Some(p);
        }
    }
    None
}

/// One viewer cycle; true if the device replied on `out`.
async fn cycle(port: u16, password: &str, i: usize) -> bool {
    let sid = format!("b{i:012}x{:08x}", rand::random::<u32>());
    let mut o = MqttOptions::new(format!("v-{sid}"), "127.0.0.1", port);
    o.set_credentials(KEY, password);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    let (c, mut el) = AsyncClient::new(o, 16);
    let out = format!("campeer/{DEVICE}/session/{sid}/out");
    let offer = serde_json::json!({
        "type": "offer",
        "sdp": vp8_only_offer(),
        "auth": {"key": KEY, "role": "view", "nonce": "AAAAAAAAAAAAAAAAAAAAAA", "sig": "A".repeat(43)},
    })
    .to_string();
    let run = async {
        let mut subscribed = false;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    c.subscribe(out.clone(), QoS::AtLeastOnce).await.ok()?;
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) if !subscribed => {
                    subscribed = true;
                    c.publish(
                        format!("campeer/{DEVICE}/session/{sid}/in"),
                        QoS::AtLeastOnce,
                        false,
                        offer.clone(),
                    )
                    .await
                    .ok()?;
                }
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == out => return Some(()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    let ok = tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .ok()
        .flatten()
        .is_some();
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    ok
}

fn rss(pid: Option<u32>) -> f64 {
    pid.and_then(proc_sample).map_or(f64::NAN, |(_, r)| r)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cycles: usize = std::env::var("CAMPEER_BROKER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = TempDir::new("broker-cycles");
    let conf = dir.0.join("campeer.toml");
    std::fs::write(
        &conf,
        format!("[[access.keys]]\nid = \"{KEY}\"\nsecret = \"{SECRET}\"\nrole = \"view\"\n"),
    )
    .expect("write config");
    let port = free_port();
    let log = dir.0.join("daemon.log");
    let mut child = std::process::Command::new(BIN)
        .args(["--log", "warn", "run", "--config"])
        .arg(&conf)
        .args(["--device-id", DEVICE, "--video", "none", "--http", ""])
        .args([
            "--broker-listen",
            &format!("127.0.0.1:{port}"),
            "--broker-ws-listen",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start campeer");
    let pid = child.id();
    let password = key_password(SECRET.as_bytes(), DEVICE);

    // Online when a cycle gets its reply.
    let t = Instant::now();
    while !cycle(port, &password, 0).await {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!(
                "the daemon never answered; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mosq = mosquitto_child(pid);
    // Warm up: allocators and caches settle.
    for i in 1..=200 {
        cycle(port, &password, i).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (d0, m0) = (rss(Some(pid)), rss(mosq));
    let (fds0, thr0) = fds_and_threads(pid);
    let t = Instant::now();
    let mut failed = 0;
    for i in 0..cycles {
        if !cycle(port, &password, 1000 + i).await {
            failed += 1;
        }
        if (i + 1) % 2000 == 0 {
            println!(
                "  after {:>5} cycles: daemon RSS {:.1} MiB, mosquitto RSS {:.1} MiB",
                i + 1,
                rss(Some(pid)),
                rss(mosq)
            );
        }
    }
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (d1, m1) = (rss(Some(pid)), rss(mosq));
    let (fds1, thr1) = fds_and_threads(pid);
    println!(
        "broker_cycles: {cycles} session open/close cycles through the own broker in {secs:.0} s \
         ({:.0}/s, {failed} without a reply)\n  \
         daemon RSS {d0:.1} -> {d1:.1} MiB ({:+.1} MiB), fds {fds0} -> {fds1}, threads {thr0} -> {thr1}\n  \
         mosquitto RSS {m0:.1} -> {m1:.1} MiB ({:+.1} MiB)",
        cycles as f64 / secs,
        d1 - d0,
        m1 - m0
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
}
