//! Watching from anywhere: the device and the viewer each behind their own
//! symmetric NAT on the test network (tests/common/netlab.rs), Mosquitto
//! and coturn on the Internet side between them.
//!
//! - Without TURN no candidate pair can work (each NAT gives every flow a
//!   new random port and lets in only replies), and the viewer says so.
//! - With TURN on both sides every connection goes through a relay pair and
//!   gets stamped frames; the figures (successes, time to connected and to
//!   the first frame after the offer) are printed and checked against the
//!   issue's targets.
//!
//! Needs root, coturn and nftables (scripts/install-web-deps.sh);
//! `CAMPEER_SKIP=netlab` skips it, saying so. `CAMPEER_REMOTE_N` sets the
//! number of connections through TURN (default 20), `CAMPEER_REMOTE_LOSS`
//! a UDP loss in percent on both routers (figures only: the targets are
//! checked as without loss); `CAMPEER_REMOTE_LOG` a
//! log filter for both ends (e.g. `info,campeer=debug,rtc_ice=trace`) when
//! measuring where the time goes.

mod common;

use common::netlab::{self, Lab, Ns};
use common::{pct, tail, TempDir, BIN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const DEVICE: &str = "cam-remote";
const KEY: &str = "phone";

/// The daemon in the home namespace.
struct HomeDaemon {
    child: Child,
    log: PathBuf,
    secret_file: PathBuf,
}

impl HomeDaemon {
    /// Starts `campeer run` in the home LAN with `ice_servers` (TOML array
    /// of tables, may be empty), signed offers and one view key; waits
    /// until it is on the lab's broker.
    fn start(lab: &Lab, dir: &TempDir, ice_servers: &str) -> HomeDaemon {
        let state = dir.0.join("state");
        let secret_file = add_key(&state, &dir.0);
        let config = dir.0.join("campeer.toml");
        std::fs::write(
            &config,
            format!("[video]\nstamp = true\n\n[webrtc]\ninclude_loopback = false\n{ice_servers}\n"),
        )
        .expect("write config");
        let log = dir.0.join("daemon.log");
        let logf = std::fs::File::create(&log).expect("create log");
        let filter = std::env::var("CAMPEER_REMOTE_LOG").unwrap_or("info,campeer=debug".into());
        let child = lab
            .cmd(Ns::Home, BIN)
            .args(["--log", &filter, "run", "--config"])
            .arg(&config)
            .args(["--mqtt", &lab.mqtt_url(), "--device-id", DEVICE])
            .args(["--video", "test", "--state-dir"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start campeer run");
        let d = HomeDaemon {
            child,
            log,
            secret_file,
        };
        let t = Instant::now();
        while !d.log_text().contains("connected to broker") {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the daemon never reached the lab's broker:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HomeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log (tail) ----\n{}",
                tail(&self.log_text(), 80)
            );
        }
    }
}

/// `campeer keys add` a view key before the daemon starts; returns the
/// file holding its secret.
fn add_key(state: &Path, dir: &Path) -> PathBuf {
    let out = std::process::Command::new(BIN)
        .arg("keys")
        .arg("--state-dir")
        .arg(state)
        .args(["add", KEY, "--role", "view"])
        .output()
        .expect("campeer keys add");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let tag = format!("#pair={KEY}.");
    let at = text
        .find(&tag)
        .unwrap_or_else(|| panic!("no pairing link: {text}"))
        + tag.len();
    let secret: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let path = dir.join("phone.key");
    std::fs::write(&path, format!("{secret}\n")).expect("write secret");
    path
}

/// Runs `campeer view --json` in the viewer namespace; returns its report
/// and its stderr.
async fn view(lab: &Lab, d: &HomeDaemon, extra: &[&str]) -> (Value, String) {
    let filter = std::env::var("CAMPEER_REMOTE_LOG").unwrap_or("warn".into());
    let out = lab
        .tokio_cmd(Ns::Viewer, BIN)
        .args([
            "--log",
            &filter,
            "view",
            "--json",
            "--mqtt",
            &lab.mqtt_url(),
        ])
        .args([
            "--device",
            DEVICE,
            "--key",
            KEY,
            "--role",
            "view",
            "--secret-file",
        ])
        .arg(&d.secret_file)
        .args(["--no-audio", "--no-data"])
        .args(extra)
        .output()
        .await
        .expect("run campeer view");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "viewer printed no JSON ({e}): {stdout}\n{}",
            tail(&stderr, 40)
        )
    });
    (report, stderr)
}

/// A viewer that stays connected for 12 s, in the background.
fn hold_viewer(
    mut cmd: tokio::process::Command,
    lab: &Lab,
    d: &HomeDaemon,
    ice: &str,
) -> tokio::task::JoinHandle<()> {
    cmd.args(["--log", "warn", "view", "--json", "--mqtt", &lab.mqtt_url()])
        .args([
            "--device",
            DEVICE,
            "--key",
            KEY,
            "--role",
            "view",
            "--secret-file",
        ])
        .arg(&d.secret_file)
        .args(["--no-audio", "--no-data", "--hold", "--timeout", "12"])
        .args(["--ice-servers", ice])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start the held viewer");
    tokio::spawn(async move {
        let _ = child.wait().await;
    })
}

/// With `CAMPEER_REMOTE_DUMP=DIR`: keeps a log there, for measuring.
fn dump(name: &str, text: &str) {
    if let Some(dir) = std::env::var_os("CAMPEER_REMOTE_DUMP") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(Path::new(&dir).join(name), text);
    }
}

/// The TOML for the daemon's static TURN server.
fn daemon_turn(lab: &Lab) -> String {
    let (user, pass) = lab.rest_credential("device", Duration::from_secs(3600));
    format!(
        "\n[[webrtc.ice_servers]]\nurls = [\"{}\"]\nusername = \"{user}\"\ncredential = \"{pass}\"\n",
        lab.turn_url()
    )
}

/// The viewer's `--ice-servers` file.
fn viewer_turn(lab: &Lab, dir: &TempDir) -> String {
    let (user, pass) = lab.rest_credential("viewer", Duration::from_secs(3600));
    let path = dir.0.join("ice.json");
    let json =
        serde_json::json!([{"urls": [lab.turn_url()], "username": user, "credential": pass}]);
    std::fs::write(&path, json.to_string()).expect("write ice servers");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_nat_is_symmetric_and_servers_are_reachable_only_from_inside() {
    if !netlab::available("netlab") {
        return;
    }
    let mut lab = Lab::start();
    // Both LANs reach the Internet side's servers through their NAT...
    for ns in [Ns::Home, Ns::Viewer] {
        assert!(lab.can_connect(ns, netlab::SERVER_ADDR, netlab::MQTT_PORT));
        assert!(lab.can_connect(ns, netlab::SERVER_ADDR, netlab::WS_PORT));
    }
    // ...but not each other; the host's own network is left alone.
    assert!(!lab.can_connect(Ns::Viewer, netlab::HOME_LAN, 22));
    assert!(!lab.can_connect(Ns::Viewer, netlab::HOME_WAN, netlab::MQTT_PORT));
    assert!(lab.host_untouched());
    // A TURN REST credential allocates; a wrong one is refused.
    let (user, pass) = lab.rest_credential("probe", Duration::from_secs(60));
    assert!(
        turn_allocates(&lab, &user, &pass),
        "{}",
        lab.log("coturn.log")
    );
    assert!(!turn_allocates(&lab, &user, "d3Jvbmc="));
    // The NAT's mapping depends on the destination (symmetric): one viewer
    // socket sends to two ports of a reflector on the Internet side, which
    // answers with the source address it saw; the ports differ.
    let reflector = lab.in_ns(Ns::Inet, || {
        [4000u16, 4001].map(|port| {
            let s = std::net::UdpSocket::bind((netlab::SERVER_ADDR, port)).expect("bind reflector");
            // Ends 3 s after the last datagram.
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(from.to_string().as_bytes(), from);
                }
            })
        })
    });
    let seen = lab.in_ns(Ns::Viewer, || {
        let s = std::net::UdpSocket::bind((netlab::VIEWER_LAN, 0)).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        [4000u16, 4001].map(|port| {
            s.send_to(b"?", (netlab::SERVER_ADDR, port)).expect("send");
            let mut buf = [0u8; 64];
            let (n, _) = s.recv_from(&mut buf).expect("the reflector answers");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
    });
    drop(reflector);
    assert!(seen[0].starts_with(netlab::VIEWER_WAN), "{seen:?}");
    assert_ne!(
        seen[0], seen[1],
        "one mapping for two destinations: not symmetric"
    );
    // The viewer moves to a new address; the old one is gone, the new one
    // reaches the Internet side.
    let old = lab.viewer_addr().to_owned();
    let new = lab.viewer_change_address();
    let addrs = lab.exec(Ns::Viewer, "ip", &["-o", "-4", "addr"]);
    assert!(
        addrs.contains(&format!("{new}/24")) && !addrs.contains(&format!("{old}/24")),
        "{addrs}"
    );
    assert!(lab.can_connect(Ns::Viewer, netlab::SERVER_ADDR, netlab::MQTT_PORT));
    // Shaping and loss are installed where asked.
    lab.shape(Ns::Viewer, 2000, 16000, 50);
    let q = lab.exec(Ns::Viewer, "tc", &["qdisc", "show"]);
    assert!(q.contains("tbf") && q.contains("2Mbit"), "{q}");
    lab.udp_loss(Ns::ViewerRouter, 100);
    let lost = lab.in_ns(Ns::Viewer, || {
        let s =
            std::net::UdpSocket::bind((netlab::SERVER_ADDR.replace("198.18.0.1", "0.0.0.0"), 0))
                .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(b"?", (netlab::SERVER_ADDR, 4000)).unwrap();
        s.recv_from(&mut [0u8; 64]).is_err()
    });
    assert!(lost, "100 % UDP loss let a datagram through");
    lab.udp_loss(Ns::ViewerRouter, 0);
}

/// A TURN allocation from the viewer's LAN with `user`/`pass`: whether it
/// relayed every test packet (`turnutils_uclient`, at most 10 s: a refused
/// client retries for minutes).
fn turn_allocates(lab: &Lab, user: &str, pass: &str) -> bool {
    let out = lab
        .cmd(Ns::Viewer, "timeout")
        .args(["10", "turnutils_uclient"])
        .args([
            "-y", "-n", "2", "-m", "1", "-l", "100", "-u", user, "-w", pass,
        ])
        .arg(netlab::SERVER_ADDR)
        .output()
        .expect("turnutils_uclient");
    String::from_utf8_lossy(&out.stdout).contains("Total lost packets 0")
        || String::from_utf8_lossy(&out.stderr).contains("Total lost packets 0")
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_with_a_static_turn_user() {
    if !netlab::available("netlab") {
        return;
    }
    let lab = Lab::start_with(netlab::LabOptions {
        static_user: Some(("phone".into(), "correct horse".into())),
    });
    assert!(turn_allocates(&lab, "phone", "correct horse"));
    assert!(!turn_allocates(&lab, "phone", "wrong"));
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_two_symmetric_nats_without_turn_nothing_connects() {
    if !netlab::available("remote") {
        return;
    }
    let lab = Lab::start();
    let dir = TempDir::new("remote-noturn");
    let d = HomeDaemon::start(&lab, &dir, "");
    let (r, stderr) = view(&lab, &d, &["--frames", "5", "--timeout", "12"]).await;
    println!("without TURN: {r}");
    assert_eq!(r["frames"], 0, "{r}");
    assert!(r["connected_ms"].is_null(), "connected without TURN: {r}");
    assert!(
        r["answer_ms"].is_number(),
        "the device never answered: {r}\n{stderr}"
    );
    let why = r["error"].as_str().unwrap_or("");
    assert!(
        why.contains("failed") || why.contains("timeout"),
        "the viewer reports no failure: {r}"
    );
}

/// One viewer run's outcome.
struct Run {
    ok: bool,
    connected_ms: Option<f64>,
    first_frame_ms: Option<f64>,
    pair: String,
    error: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_two_symmetric_nats_turn_connects_every_time() {
    if !netlab::available("remote") {
        return;
    }
    let n: usize = std::env::var("CAMPEER_REMOTE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = Lab::start();
    let dir = TempDir::new("remote-turn");
    let d = HomeDaemon::start(&lab, &dir, &daemon_turn(&lab));
    let ice = viewer_turn(&lab, &dir);
    // CAMPEER_REMOTE_LOSS=P: both routers drop P % of UDP each way.
    let loss: u32 = std::env::var("CAMPEER_REMOTE_LOSS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if loss > 0 {
        lab.udp_loss(Ns::HomeRouter, loss);
        lab.udp_loss(Ns::ViewerRouter, loss);
        println!("UDP loss {loss} % each way on both routers' uplinks");
    }
    let mut runs = Vec::new();
    for i in 0..n {
        let (r, stderr) = view(
            &lab,
            &d,
            &["--frames", "5", "--timeout", "15", "--ice-servers", &ice],
        )
        .await;
        let run = Run {
            ok: r["frames"].as_u64().unwrap_or(0) >= 5
                && r["stamped_frames"].as_u64().unwrap_or(0) > 0,
            connected_ms: r["connected_ms"].as_f64(),
            first_frame_ms: r["first_frame_ms"].as_f64(),
            pair: r["pair"].as_str().unwrap_or("-").to_owned(),
            error: r["error"].as_str().unwrap_or("").to_owned(),
        };
        println!(
            "run {i:2}: ok={} pair={} connected={:?} ms first_frame={:?} ms {}",
            run.ok, run.pair, run.connected_ms, run.first_frame_ms, run.error
        );
        if !run.ok {
            eprintln!("viewer stderr (tail):\n{}", tail(&stderr, 60));
        }
        dump(&format!("viewer-{i}.log"), &stderr);
        runs.push(run);
    }
    // What a relayed session costs the device: one viewer held for 10 s.
    let held = {
        let lab_cmd = lab.tokio_cmd(Ns::Viewer, BIN);
        hold_viewer(lab_cmd, &lab, &d, &ice)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu, rss) = common::measure(d.child.id(), Duration::from_secs(6)).await;
    let _ = held.await;
    println!("one relayed viewer: device CPU {cpu:.1} % of a core, RSS {rss:.1} MiB (debug build)");
    dump("daemon.log", &d.log_text());
    dump("coturn.log", &lab.log("coturn.log"));
    let ok = runs.iter().filter(|r| r.ok).count();
    let mut connected: Vec<f64> = runs.iter().filter_map(|r| r.connected_ms).collect();
    let mut first: Vec<f64> = runs.iter().filter_map(|r| r.first_frame_ms).collect();
    let (c50, c95) = (pct(&mut connected, 0.5), pct(&mut connected, 0.95));
    let (f50, f95) = (pct(&mut first, 0.5), pct(&mut first, 0.95));
    println!(
        "through TURN: {ok}/{n} played; connected p50 {c50:.0} ms p95 {c95:.0} ms; \
         first frame p50 {f50:.0} ms p95 {f95:.0} ms (after the offer)"
    );
    assert_eq!(ok, n, "not every connection through TURN played");
    for r in &runs {
        assert!(
            r.pair.contains("relay"),
            "a session connected without a relay candidate ({}): the NATs are not symmetric",
            r.pair
        );
    }
    if loss == 0 {
        assert!(f50 < 500.0, "first frame p50 {f50:.0} ms (target < 500 ms)");
        assert!(f95 < 1000.0, "first frame p95 {f95:.0} ms (target < 1 s)");
    }
}
