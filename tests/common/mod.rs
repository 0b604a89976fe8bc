//! Test harness: a real Mosquitto on a free loopback port, the real daemon
//! binary, the real viewer client, and a raw MQTT client for hand-made
//! (and malformed) messages.

#![allow(dead_code)]

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub mod janus;
pub mod netlab;

pub const BIN: &str = env!("CARGO_BIN_EXE_campeer");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "campeer-test-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command for a script that runs cargo itself (the cross builds): the
/// variables `cargo test` sets for test processes (CARGO_PKG_*,
/// CARGO_MANIFEST_DIR, OUT_DIR, ...) are removed, so the nested cargo sees
/// the environment the test command's own cross-build step had and finds
/// that build fresh instead of redoing it. OUT_DIR matters most: ring's
/// build script reruns when it changes (`CARGO_LOG=
/// cargo::core::compiler::fingerprint=info` showed it), and with ring
/// everything above it, minutes of release build per target.
pub fn cargo_script(script: &std::path::Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || matches!(
                k.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// Whether a test may go on, given what it needs and why that is missing
/// (`None`: present). A test the developer opted out of by name
/// (`CAMPEER_SKIP=browser,janus`; docs/testing.md lists the names) does
/// not run, present or not: it prints one line,
/// `CAMPEER-SKIPPED: <test> (<name>): <why>`, and this returns false.
/// Otherwise a missing prerequisite fails the test with `missing`, which
/// says how to install it.
pub fn prerequisite(name: &str, missing: Option<String>) -> bool {
    if opted_out(name) {
        let why = missing.unwrap_or_else(|| format!("CAMPEER_SKIP={name} (it is installed)"));
        skipped(name, &why);
        return false;
    }
    if let Some(why) = missing {
        panic!("{why}\n(to skip the tests that need it instead, set CAMPEER_SKIP={name})");
    }
    true
}

/// Says that the running test did not run, in the one format scripts/test.sh
/// collects: `CAMPEER-SKIPPED: <test> (<name>): <why>`. Written to stderr
/// directly, so libtest's capture of a passing test's output keeps it.
pub fn skipped(name: &str, why: &str) {
    let test = format!(
        "{}::{}",
        test_binary(),
        std::thread::current().name().unwrap_or("?")
    );
    let line = format!("CAMPEER-SKIPPED: {test} ({name}): {why}\n");
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Whether `CAMPEER_SKIP` (comma-separated names) names `name`.
pub fn opted_out(name: &str) -> bool {
    std::env::var("CAMPEER_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|n| n.trim() == name)
}

/// The integration test's name (tests/NAME.rs), from its binary's name
/// (`NAME-<hash>`).
fn test_binary() -> String {
    let exe = std::env::args().next().unwrap_or_default();
    let stem = std::path::Path::new(&exe)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, _hash)) => name.to_owned(),
        None => stem,
    }
}

/// Where a test daemon's page server listens: a port the kernel picks, read
/// back from the daemon's log with `wait_page_port` (never 8080, which
/// parallel tests would race for).
pub const PAGE_ANY_PORT: &str = "127.0.0.1:0";

/// The port in the daemon's `viewer page url=http://HOST:PORT/` line (the
/// last one: a restarted daemon logs it again).
pub fn page_port_in(log: &str) -> Option<u16> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" viewer page url="))?;
    let url = line.split("url=").nth(1)?.split_whitespace().next()?;
    url.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}

/// Waits until the daemon whose log `log` reads has bound its page server,
/// and returns the port; panics with the log if it does not within
/// `timeout`.
pub async fn wait_page_port(log: impl Fn() -> String, timeout: Duration) -> u16 {
    let t = Instant::now();
    loop {
        let text = log();
        if let Some(port) = page_port_in(&text) {
            return port;
        }
        assert!(
            t.elapsed() < timeout,
            "the daemon never said where its page server listens; log:\n{}",
            tail(&text, 40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port picked by binding and releasing it: another process may take
/// it before the test binds it again. Only for servers that cannot bind
/// port 0 and say which port they got (Mosquitto, Janus); the daemon's page
/// server uses `PAGE_ANY_PORT`.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn mosquitto_path() -> String {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if std::path::Path::new(p).exists() {
            return p.to_owned();
        }
    }
    panic!("mosquitto is not installed: run scripts/install-deps.sh (apt-get install mosquitto)");
}

/// A Mosquitto broker listening on 127.0.0.1:port.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        let dir = TempDir::new("broker");
        let mut b = Broker {
            port,
            child: None,
            dir,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let conf = self.dir.0.join("mosquitto.conf");
        // set_tcp_nodelay as the own broker has it: without it Mosquitto
        // holds the answer ~40 ms behind a delayed ACK (docs/benchmarks.md).
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                self.port
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(mosquitto_path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the file after `--config` in `args` sets `http.listen`.
fn config_sets_page(args: &[&str]) -> bool {
    let Some(at) = args.iter().position(|a| *a == "--config") else {
        return false;
    };
    let text = std::fs::read_to_string(args[at + 1]).expect("read the test's --config");
    let table: toml::Table = text.parse().expect("the test's --config is TOML");
    table.get("http").and_then(|h| h.get("listen")).is_some()
}

/// The daemon binary, run as a child process.
/// What the daemon logs when a session's ICE and DTLS are up.
pub const CONNECTED: &str = ": connected sid=";

pub struct Daemon {
    pub device: String,
    pub prefix: String,
    child: Option<Child>,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    /// Starts `campeer run` against `broker` with extra flags, and waits until
    /// it reports online.
    pub async fn start(broker: &Broker, device: &str, extra: &[&str]) -> Daemon {
        let d = Self::spawn(broker, device, extra);
        let status = wait_status(
            broker.port,
            &d.prefix,
            device,
            |v| v["state"] == "online",
            Duration::from_secs(20),
        )
        .await;
        assert!(
            status.is_some(),
            "daemon never came online; log:\n{}",
            d.log_text()
        );
        d
    }

    /// Starts the daemon without waiting for it. Tests that are not about
    /// authorization run it open (`--open-access`); `--signed` among
    /// `extra` (taken out) keeps it signed. Generated keys go to the
    /// daemon's own temp dir (`state_dir()`).
    pub fn spawn(broker: &Broker, device: &str, extra: &[&str]) -> Daemon {
        let dir = TempDir::new("daemon");
        let log = dir.0.join("daemon.log");
        let logf = std::fs::File::create(&log).expect("create log");
        let signed = extra.contains(&"--signed");
        // No page server unless the test asks for one (`--http`, or
        // `http.listen` in its `--config`): tests that need none must not
        // race for a port.
        let http: &[&str] = if extra.contains(&"--http") || config_sets_page(extra) {
            &[]
        } else {
            &["--http", ""]
        };
        let extra: Vec<&str> = extra.iter().copied().filter(|a| *a != "--signed").collect();
        let state = dir.0.join("state");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--log",
            "info,campeer=debug",
            "run",
            "--mqtt",
            &broker.url(),
            "--device-id",
            device,
            "--state-dir",
            &state.to_string_lossy(),
        ])
        .args(if signed {
            &[][..]
        } else {
            &["--open-access"][..]
        })
        .args(http)
        .args(&extra)
        .stdout(Stdio::null())
        .stderr(logf);
        let child = cmd.spawn().expect("start campeer");
        Daemon {
            device: device.to_owned(),
            prefix: "campeer".into(),
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port its page server bound (started with `--http` and
    /// `PAGE_ANY_PORT`).
    pub async fn page_port(&self) -> u16 {
        wait_page_port(|| self.log_text(), Duration::from_secs(20)).await
    }

    /// Waits until the daemon has logged `needle` at least `n` times: the
    /// event a test waits for (a session connected, a control channel
    /// open, a failed broker connection), rather than a guessed sleep.
    pub async fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_count(|| self.log_text(), needle, n, timeout).await
    }

    /// Waits until `n` sessions have connected (ICE and DTLS up) since the
    /// daemon started.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) {
        assert!(
            self.wait_log(CONNECTED, n, timeout).await,
            "{n} session(s) never connected; log:\n{}",
            self.log_text()
        );
    }

    /// The daemon's state directory (keys.toml lives there).
    pub fn state_dir(&self) -> PathBuf {
        self._dir.0.join("state")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for exit; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (Option<std::process::ExitStatus>, Duration) {
        let Some(mut c) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        let t = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return (Some(st), t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                return (c.wait().ok(), t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log ({}) ----\n{}",
                self.device,
                self.log_text()
            );
        }
    }
}

/// Runs `campeer view --json` and returns its report.
pub async fn view(broker: &Broker, device: &str, extra: &[&str]) -> Value {
    view_at(&broker.url(), device, extra).await
}

/// Runs `campeer view --json` against the broker at `url`.
pub async fn view_at(url: &str, device: &str, extra: &[&str]) -> Value {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--log", "warn", "view", "--json", "--mqtt", url, "--device", device,
        ])
        .args(extra)
        .output()
        .await
        .expect("run campeer view");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "viewer printed no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Starts a viewer in the background.
pub fn view_spawn(broker: &Broker, device: &str, extra: &[&str]) -> tokio::task::JoinHandle<Value> {
    let url = broker.url();
    let device = device.to_owned();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::spawn(async move {
        let out = tokio::process::Command::new(BIN)
            .args([
                "--log", "warn", "view", "--json", "--mqtt", &url, "--device", &device,
            ])
            .args(&extra)
            .output()
            .await
            .expect("run campeer view");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "viewer printed no JSON ({e}): {stdout} / {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    })
}

/// A raw MQTT client speaking for one sid.
pub struct RawClient {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl RawClient {
    /// Connects and subscribes to `filters`; returns after the broker acknowledged them.
    pub async fn connect(port: u16, filters: &[String]) -> RawClient {
        Self::connect_as(port, filters, None).await
    }

    /// Connects with a user name and password (the own broker's key login).
    pub async fn connect_as(
        port: u16,
        filters: &[String],
        login: Option<(&str, &str)>,
    ) -> RawClient {
        let mut opts =
            MqttOptions::new(format!("test-{}", rand::random::<u32>()), "127.0.0.1", port);
        if let Some((user, pass)) = login {
            opts.set_credentials(user, pass);
        }
        opts.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el): (AsyncClient, EventLoop) = AsyncClient::new(opts, 64);
        for f in filters {
            client
                .subscribe(f.clone(), QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        let mut acks = 0;
        while acks < filters.len() {
            match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => acks += 1,
                Ok(Ok(_)) => {}
                other => panic!("raw client cannot connect: {other:?}"),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.retain));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        RawClient { client, rx, task }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .expect("publish");
    }

    /// The next message on `topic` within `timeout`, as JSON.
    pub async fn recv_on(&mut self, topic: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (t, p, _) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            if t == topic {
                return Some(serde_json::from_slice(&p).unwrap_or(Value::Null));
            }
        }
    }

    /// Waits for a message on `topic` that satisfies `pred`.
    pub async fn wait_for(
        &mut self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_on(topic, left).await?;
            if pred(&v) {
                return Some(v);
            }
        }
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn status_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/{device}/status")
}

pub fn in_topic(device: &str, sid: &str) -> String {
    format!("campeer/{device}/session/{sid}/in")
}

pub fn out_topic(device: &str, sid: &str) -> String {
    format!("campeer/{device}/session/{sid}/out")
}

/// Waits for a status message satisfying `pred` (retained ones count).
pub async fn wait_status(
    port: u16,
    prefix: &str,
    device: &str,
    pred: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> Option<Value> {
    let topic = status_topic(prefix, device);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut c = RawClient::connect(port, std::slice::from_ref(&topic)).await;
        if let Some(v) = c.wait_for(&topic, Duration::from_millis(1500), &pred).await {
            return Some(v);
        }
    }
    None
}

/// The retained status's `sessions` count, waiting until it equals `want` (or timing out).
pub async fn wait_sessions(port: u16, device: &str, want: u64, timeout: Duration) -> Option<u64> {
    let v = wait_status(
        port,
        "campeer",
        device,
        |v| v["sessions"].as_u64() == Some(want),
        timeout,
    )
    .await?;
    v["sessions"].as_u64()
}

/// A valid random session id.
pub fn sid() -> String {
    format!("t{:015x}", rand::random::<u64>() >> 4)
}

/// A browser-like offer made by the viewer client's own engine, for hand-made signaling.
pub fn vp8_only_offer() -> String {
    "v=0\r\no=- 4 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
     m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
     a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
     a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
     a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
        .to_owned()
}

/// An offer whose only video codec is VP9, which the device cannot send.
pub fn vp9_only_offer() -> String {
    vp8_only_offer().replace("VP8/90000", "VP9/90000")
}

// ---- process figures, for benchmarks and bounded-growth tests ----

/// The `q` quantile (0..=1) of `v` (sorted in place); NaN when empty.
pub fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// (utime + stime in seconds, RSS in MiB) of a process.
pub fn proc_sample(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(((ut + st) / clock_ticks(), rss_kb / 1024.0))
}

/// Like `proc_sample`, for a process that must be alive: one that exited
/// (or is a zombie, without a VmRSS) panics, so that a dead daemon never
/// reads as zero CPU, zero memory or no leak.
pub fn sample(pid: u32) -> (f64, f64) {
    proc_sample(pid).unwrap_or_else(|| panic!("process {pid} is gone: no figures to read"))
}

/// CPU% of one core and peak RSS over `window`; panics when the process
/// dies meanwhile.
pub async fn measure(pid: u32, window: Duration) -> (f64, f64) {
    let t0 = Instant::now();
    let (c0, mut rss) = sample(pid);
    let step = Duration::from_millis(250);
    while t0.elapsed() < window {
        tokio::time::sleep(step).await;
        rss = rss.max(sample(pid).1);
    }
    let (c1, _) = sample(pid);
    (100.0 * (c1 - c0) / t0.elapsed().as_secs_f64(), rss)
}

/// Open file descriptors and threads of a process; panics when it is gone.
pub fn fds_and_threads(pid: u32) -> (usize, usize) {
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("process {pid} is gone: no /proc/{pid}/{what} ({e})"))
    };
    (count("fd"), count("task"))
}

/// The lines a child prints on its piped stdout and stderr, both on one
/// channel, read on two threads (the emulated Pis' serial consoles). The
/// channel closes when the child has closed both.
pub fn output_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(stream);
            let mut buf = Vec::new();
            while r
                .read_until(b'\n', &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// The last `n` lines of `text` (for failure messages).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `text()` holds `needle` at least `n` times (a log the test
/// reads again every 20 ms); false after `timeout`.
pub async fn wait_count(
    text: impl Fn() -> String,
    needle: &str,
    n: usize,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while text().matches(needle).count() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// `campeer keys ARGS` (`--state-dir state`, and `--config` when given):
/// its standard output; the command must succeed.
pub fn keys_cmd(
    state: &std::path::Path,
    config: Option<&std::path::Path>,
    args: &[&str],
) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("keys").args(args).arg("--state-dir").arg(state);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().expect("run campeer keys");
    assert!(
        out.status.success(),
        "campeer keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `campeer pair --state-dir state`: the admin key's `id.secret` from the
/// pairing link it prints (the daemon prints it only to a terminal).
pub fn pair_text(state: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .arg("pair")
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run campeer pair");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "campeer pair: {text}");
    let at = text
        .find("#pair=")
        .unwrap_or_else(|| panic!("no link: {text}"))
        + 6;
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

/// A daemon the test started itself with its own command line: killed
/// when dropped, its log printed when the test failed.
pub struct ChildDaemon {
    pub child: Child,
    pub log: PathBuf,
    /// Kept alive as long as the daemon (its state and log may be there).
    pub dir: Option<TempDir>,
}

impl ChildDaemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log_text());
        }
    }
}
