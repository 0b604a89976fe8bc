//! The viewer page in a real headless browser (Debian's Chromium, driven by
//! playwright-core through tests/browser/driver.mjs) against the real
//! daemon: the page loads from the daemon's HTTP server, connects to the
//! broker over WebSocket, plays the video, reads the frame stamps, switches
//! an output, and recovers when the daemon restarts. Also with an external
//! Mosquitto, and with a device that requires signed offers.
//!
//! Needs /usr/bin/chromium (or CAMPEER_CHROMIUM), node, and web/node_modules
//! (scripts/install-web-deps.sh). Without them the tests fail with the
//! install command, unless the developer opted out with
//! `CAMPEER_SKIP=browser` (`firefox` for the Firefox test; docs/testing.md).
//!
//! CAMPEER_BROWSER_INPROC=1 hosts the embedded broker and the HTTP server in
//! the test process (campeer::broker, campeer::web) and runs the daemon with
//! `--mqtt` against it: the page against the daemon without the daemon's own
//! `--http` wiring.
//!
//! Figures (time to first frame, the page's latency) are printed: run with
//! `cargo test --test browser -- --nocapture` to see them.

mod common;

use common::{free_port, wait_page_port, TempDir, BIN, PAGE_ANY_PORT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One browser test at a time: each runs a daemon encoding 640x480 and a
/// Chromium decoding it, which is what two cores can carry.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEVICE: &str = "cam-web";
const SECRET: &str = "correct-horse-battery-staple";
const VIEW_SECRET: &str = "wall-panel-secret-0001";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CAMPEER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn firefox_path() -> PathBuf {
    std::env::var_os("CAMPEER_FIREFOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/firefox-esr"))
}

/// Why the Firefox tests cannot run here, if they cannot (on top of the
/// Chromium prerequisites).
fn missing_firefox() -> Option<String> {
    if !firefox_path().exists() {
        return Some(format!(
            "{} not found (scripts/install-web-deps.sh installs Debian's firefox-esr)",
            firefox_path().display()
        ));
    }
    if !root().join("web/node_modules/puppeteer-core").is_dir() {
        return Some(
            "web/node_modules/puppeteer-core missing (scripts/install-web-deps.sh)".into(),
        );
    }
    None
}

/// Like `prerequisites`, for a test that drives Firefox too.
async fn firefox_prerequisites() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if !common::prerequisite("firefox", missing_firefox()) {
        return None;
    }
    prerequisites().await
}

/// Why the browser tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !chromium_path().exists() {
        return Some(format!(
            "{} not found (scripts/install-web-deps.sh installs Debian's chromium)",
            chromium_path().display()
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.map(|o| o.status.success()).unwrap_or(false) {
        return Some("node not found (scripts/install-web-deps.sh)".into());
    }
    if !root().join("web/node_modules/playwright-core").is_dir() {
        return Some(
            "web/node_modules/playwright-core missing (scripts/install-web-deps.sh)".into(),
        );
    }
    if !campeer::web::page_built() {
        return Some("the viewer page is not embedded (scripts/build-web.sh, then rebuild)".into());
    }
    None
}

/// Serializes the browser tests; `None` when they cannot run and the
/// developer opted out (`CAMPEER_SKIP=browser`); without that, a missing
/// browser fails the test.
async fn prerequisites() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if !common::prerequisite("browser", missing_prerequisite()) {
        return None;
    }
    Some(SERIAL.lock().await)
}

// ---------------------------------------------------------------------------
// The browser

struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next: u64,
    log: PathBuf,
    _dir: TempDir,
}

impl Browser {
    async fn launch() -> Browser {
        Self::launch_with("driver.mjs").await
    }

    /// Debian's Firefox ESR over WebDriver BiDi (tests/browser/firefox.mjs).
    async fn launch_firefox() -> Browser {
        Self::launch_with("firefox.mjs").await
    }

    async fn launch_with(driver: &str) -> Browser {
        let dir = TempDir::new("browser");
        let log = dir.0.join("browser.log");
        let logf = std::fs::File::create(&log).expect("create browser log");
        let mut child = Command::new("node")
            .arg(root().join("tests/browser").join(driver))
            .env("CAMPEER_CHROMIUM", chromium_path())
            .env("CAMPEER_FIREFOX", firefox_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(logf)
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/browser/driver.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Browser {
            child,
            stdin,
            lines,
            next: 1,
            log,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one command; its value, or the driver's error.
    async fn cmd(&mut self, mut c: Value, limit: Duration) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        c["id"] = json!(id);
        let line = format!("{c}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("driver gone: {e}; log:\n{}", self.log_text()))?;
        let deadline = tokio::time::Instant::now() + limit + Duration::from_secs(15);
        loop {
            let l = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return Err(format!("driver ended; log:\n{}", self.log_text()))
                }
                Err(_) => return Err(format!("driver did not answer {c}")),
            };
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            if v["id"] != json!(id) {
                continue;
            }
            return if v["ok"] == json!(true) {
                Ok(v["value"].clone())
            } else {
                Err(v["error"].as_str().unwrap_or("unknown error").to_owned())
            };
        }
    }

    async fn must(&mut self, c: Value, limit: Duration) -> Value {
        let what = c.to_string();
        match self.cmd(c, limit).await {
            Ok(v) => v,
            Err(e) => panic!(
                "browser command {what} failed: {e}\n---- browser log ----\n{}",
                self.log_text()
            ),
        }
    }

    async fn open(&mut self, url: &str) -> u64 {
        let v = self
            .must(json!({"cmd": "open", "url": url}), Duration::from_secs(30))
            .await;
        v.as_u64().expect("a page number")
    }

    async fn eval(&mut self, page: u64, expr: &str) -> Value {
        self.must(
            json!({"cmd": "eval", "page": page, "expr": expr}),
            Duration::from_secs(10),
        )
        .await
    }

    /// Waits until `expr` is truthy in the page; its value then.
    async fn wait(&mut self, page: u64, expr: &str, timeout: Duration) -> Value {
        let c = json!({"cmd": "wait", "page": page, "expr": expr, "timeout": timeout.as_millis() as u64});
        match self.cmd(c, timeout).await {
            Ok(v) => v,
            Err(e) => {
                let st = self.cmd(json!({"cmd": "eval", "page": page, "expr": "JSON.stringify(window.campeer)"}), Duration::from_secs(5)).await;
                panic!(
                    "waiting for `{expr}`: {e}\npage state: {}\n---- browser log ----\n{}",
                    st.unwrap_or_else(|e| json!(e)),
                    self.log_text()
                )
            }
        }
    }

    async fn front(&mut self, page: u64) {
        self.must(
            json!({"cmd": "front", "page": page}),
            Duration::from_secs(10),
        )
        .await;
    }

    async fn click(&mut self, page: u64, selector: &str) {
        self.must(
            json!({"cmd": "click", "page": page, "selector": selector}),
            Duration::from_secs(10),
        )
        .await;
    }

    async fn fill(&mut self, page: u64, selector: &str, value: &str) {
        self.must(
            json!({"cmd": "fill", "page": page, "selector": selector, "value": value}),
            Duration::from_secs(10),
        )
        .await;
    }

    async fn screenshot(&mut self, page: u64, path: &Path) {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("screenshot folder");
        }
        self.must(
            json!({"cmd": "screenshot", "page": page, "path": path}),
            Duration::from_secs(20),
        )
        .await;
    }

    async fn quit(mut self) {
        let _ = self
            .cmd(json!({"cmd": "quit"}), Duration::from_secs(10))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

// ---------------------------------------------------------------------------
// The daemon and its brokers

/// Where the daemon's MQTT comes from.
enum BrokerKind {
    /// The daemon's embedded broker (`--broker-listen`, `--broker-ws-listen`).
    Embedded,
    /// A Mosquitto with a WebSocket listener (`--mqtt`, `--mqtt-ws-url`).
    Mosquitto,
}

/// A Mosquitto with a TCP and a WebSocket listener on loopback.
struct WsMosquitto {
    tcp: u16,
    ws: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

impl WsMosquitto {
    fn start() -> WsMosquitto {
        let mut m = WsMosquitto {
            tcp: free_port(),
            ws: free_port(),
            child: None,
            dir: TempDir::new("mosquitto-ws"),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let conf = self.dir.0.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nlistener {} 127.0.0.1\nprotocol websockets\n\
                 allow_anonymous true\npersistence false\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                self.tcp, self.ws
            ),
        )
        .expect("write mosquitto.conf");
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: scripts/install-deps.sh");
        self.child = Some(
            std::process::Command::new(exe)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mosquitto"),
        );
        wait_port(self.tcp);
        wait_port(self.ws);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WsMosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "nothing listens on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the test process hosts itself in CAMPEER_BROWSER_INPROC mode.
struct InProc {
    broker: Option<campeer::broker::ManagedBroker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The daemon under test, with the ports it was given.
struct Stack {
    http: u16,
    _mqtt: u16,
    /// The extra WebSocket port (`--broker-ws-listen`); the page uses /mqtt.
    _ws: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
    log: PathBuf,
    restarts: u32,
    _inproc: Option<InProc>,
    dir: TempDir,
    /// The config sets http.tls_cert: the page is served over HTTPS.
    tls: bool,
}

impl Stack {
    /// Starts the daemon (test pattern, 640x480) with `config` as its file;
    /// returns once it serves HTTP and reports online.
    async fn start(kind: BrokerKind, mosquitto: Option<&WsMosquitto>, config: &str) -> Stack {
        let dir = TempDir::new("web-daemon");
        let conf = dir.0.join("campeer.toml");
        std::fs::write(&conf, config).expect("write campeer.toml");
        let mut args: Vec<String> = vec![
            "--log".into(),
            "info,campeer=debug".into(),
            "run".into(),
            "--config".into(),
            conf.to_string_lossy().into_owned(),
            "--device-id".into(),
            DEVICE.into(),
            "--size".into(),
            "640x480".into(),
            "--state-dir".into(),
            dir.0.join("state").to_string_lossy().into_owned(),
        ];
        let inproc_mode = std::env::var_os("CAMPEER_BROWSER_INPROC").is_some();
        // The daemon's page server binds any port (`http` 0 until `ready`
        // reads it from the log); the brokers' listeners read theirs from
        // the command line and do not report them: picked free ports.
        let (mqtt, ws, http, inproc) = match kind {
            BrokerKind::Mosquitto => {
                let m = mosquitto.expect("a Mosquitto for BrokerKind::Mosquitto");
                args.extend([
                    "--mqtt".into(),
                    format!("mqtt://127.0.0.1:{}", m.tcp),
                    "--mqtt-ws-url".into(),
                    format!("ws://127.0.0.1:{}/", m.ws),
                    "--http".into(),
                    PAGE_ANY_PORT.into(),
                ]);
                (m.tcp, m.ws, 0, None)
            }
            BrokerKind::Embedded if inproc_mode => {
                let (mqtt, ws, http, inproc) = host_in_process(config).await;
                let b = inproc.broker.as_ref().expect("a broker");
                args.extend(["--mqtt".into(), inproc_mqtt_url(b)]);
                (mqtt, ws, http, Some(inproc))
            }
            BrokerKind::Embedded => {
                let (mqtt, ws) = (free_port(), free_port());
                args.extend([
                    "--http".into(),
                    PAGE_ANY_PORT.into(),
                    "--broker-listen".into(),
                    format!("127.0.0.1:{mqtt}"),
                    "--broker-ws-listen".into(),
                    format!("127.0.0.1:{ws}"),
                ]);
                (mqtt, ws, 0, None)
            }
        };
        let log = dir.0.join("daemon.log");
        let mut s = Stack {
            http,
            _mqtt: mqtt,
            _ws: ws,
            args,
            child: None,
            log,
            restarts: 0,
            _inproc: inproc,
            dir,
            tls: config.contains("tls_cert"),
        };
        s.spawn();
        s.ready().await;
        s
    }

    fn spawn(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let child = std::process::Command::new(BIN)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start campeer");
        self.child = Some(child);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for /healthz and for the device's online presence.
    async fn ready(&mut self) {
        if self.http == 0 {
            // The first start: the port the page server bound, kept for
            // the restarts (the page reconnects to the same address).
            self.http = wait_page_port(|| self.log_text(), Duration::from_secs(30)).await;
            if let Some(i) = self.args.iter().position(|a| a == "--http") {
                self.args[i + 1] = format!("127.0.0.1:{}", self.http);
            }
        }
        let t = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "campeer exited ({st}) while starting; log:\n{}",
                        self.log_text()
                    );
                }
            }
            let up = if self.tls {
                // No plain /healthz on a TLS port: the daemon's own word
                // that it serves https, and a listening port.
                self.log_text().contains("https://")
                    && tokio::net::TcpStream::connect(("127.0.0.1", self.http))
                        .await
                        .is_ok()
            } else {
                http_get(self.http, "/healthz")
                    .await
                    .is_some_and(|(code, _)| code == 200)
            };
            if up {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no HTTP on port {}; log:\n{}",
                self.http,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The daemon logs "online as" once its own link is up (a signed
        // own broker admits no anonymous status reader).
        let want = self.restarts as usize + 1;
        let t = Instant::now();
        while self.log_text().matches("online as").count() < want {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the daemon never reported online; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/", self.http)
    }

    /// The state directory (keys.toml).
    fn state_dir(&self) -> PathBuf {
        self.dir.0.join("state")
    }

    /// `id.secret` of a stored key.
    fn stored_key(&self, id: &str) -> String {
        let text = std::fs::read_to_string(self.state_dir().join("keys.toml")).expect("keys.toml");
        let doc: toml::Value = toml::from_str(&text).expect("keys.toml parses");
        let key = doc["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["id"].as_str() == Some(id)))
            .unwrap_or_else(|| panic!("no key {id} in keys.toml"));
        format!("{id}.{}", key["secret"].as_str().expect("secret"))
    }

    /// Runs `campeer keys ...` against this daemon's state directory.
    fn keys(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(BIN)
            .arg("keys")
            .args(args)
            .arg("--state-dir")
            .arg(self.state_dir())
            .output()
            .expect("campeer keys");
        assert!(
            out.status.success(),
            "campeer keys {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Stops the daemon: SIGTERM (a clean shutdown) or SIGKILL (a crash).
    fn stop(&mut self, crash: bool) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if crash {
            let _ = c.kill();
        } else {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Stops the daemon and starts it again with the same flags and ports.
    async fn restart(&mut self, crash: bool) {
        self.stop(crash);
        self.restarts += 1;
        if let Some(inproc) = self._inproc.as_mut() {
            // The embedded broker lives and dies with the daemon: so here.
            let old = inproc.broker.take().expect("a broker");
            let (tcp, ws) = (old.tcp_addr(), old.ws_addr());
            drop(old);
            let b = campeer::broker::ManagedBroker::start(inproc_settings(tcp, ws), &[])
                .expect("the embedded broker again, on the same ports");
            if let Some(i) = self.args.iter().position(|a| a == "--mqtt") {
                self.args[i + 1] = inproc_mqtt_url(&b);
            }
            inproc.broker = Some(b);
        }
        self.spawn();
        self.ready().await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop(true);
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log ({}) ----\n{}",
                self.dir.0.display(),
                self.log_text()
            );
        }
    }
}

/// CAMPEER_BROWSER_INPROC: the embedded broker and the page served from here.
/// Returns the broker's TCP and WebSocket ports, the page's port, and what
/// to keep.
async fn host_in_process(config: &str) -> (u16, u16, u16, InProc) {
    use std::net::{Ipv4Addr, SocketAddr};
    let lo = |p| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let broker =
        campeer::broker::ManagedBroker::start(inproc_settings(Some(lo(0)), Some(lo(0))), &[])
            .expect("embedded broker");
    let (mqtt, ws) = (
        broker.tcp_addr().expect("tcp").port(),
        broker.ws_addr().expect("ws").port(),
    );
    let page = campeer::web::PageConfig {
        device_id: DEVICE.into(),
        prefix: "campeer".into(),
        ws_url: None,
        ws_port: None,
        ws_path: "/mqtt".into(),
        auth: if config.contains("[[access.keys]]") {
            "signed"
        } else {
            "open"
        }
        .into(),
        ice_servers: Vec::new(),
        own_broker: true,
        claimable: false,
        relay_origin: None,
    };
    let listener = tokio::net::TcpListener::bind(lo(0))
        .await
        .expect("bind http");
    let http = listener.local_addr().expect("the page's address").port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let hooks = campeer::web::Hooks::default();
    tokio::spawn(campeer::web::serve(
        listener,
        page,
        Some(broker.bridge_addr()),
        hooks,
        async move {
            let _ = rx.await;
        },
    ));
    (
        mqtt,
        ws,
        http,
        InProc {
            broker: Some(broker),
            stop: Some(tx),
        },
    )
}

/// CAMPEER_BROWSER_INPROC: an open own broker (anonymous clients are viewers).
fn inproc_settings(
    listen: Option<std::net::SocketAddr>,
    ws: Option<std::net::SocketAddr>,
) -> campeer::broker::BrokerSettings {
    campeer::broker::BrokerSettings {
        device_id: DEVICE.into(),
        prefix: "campeer".into(),
        listen,
        ws_listen: ws,
        mosquitto: None,
        open: true,
        homeassistant: None,
    }
}

/// The daemon's `--mqtt` in CAMPEER_BROWSER_INPROC mode: the broker's
/// device login on its LAN listener.
fn inproc_mqtt_url(b: &campeer::broker::ManagedBroker) -> String {
    let (_, user, password) = b.device_login();
    let port = b.tcp_addr().expect("tcp").port();
    format!("mqtt://{user}:{password}@127.0.0.1:{port}")
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

const LED_CONFIG: &str = r#"
[[gpio]]
name = "led"
line = "mock:0"
direction = "output"
"#;

/// LED_CONFIG on an open device (tests that are not about pairing).
fn open_config() -> String {
    format!("{LED_CONFIG}\n[access]\nopen = true\n")
}

fn signed_config() -> String {
    format!(
        "{LED_CONFIG}\n[[access.keys]]\nid = \"phone\"\nsecret = \"{SECRET}\"\nrole = \"control\"\n\n\
         [[access.keys]]\nid = \"wall\"\nsecret = \"{VIEW_SECRET}\"\nrole = \"view\"\n"
    )
}

const T: Duration = Duration::from_secs(30);

/// Waits until the page plays, and checks that it really does: the right
/// size, frames that keep coming, stamps that move on.
async fn assert_plays(b: &mut Browser, page: u64, what: &str) -> Value {
    b.wait(
        page,
        "window.campeer && window.campeer.state === 'playing'",
        T,
    )
    .await;
    let w = b
        .eval(page, "document.getElementById('video').videoWidth")
        .await;
    assert_eq!(w, json!(640), "{what}: the video element's width");
    assert_eq!(
        b.eval(page, "window.campeer.videoWidth").await,
        json!(640),
        "{what}"
    );
    assert_eq!(
        b.eval(page, "window.campeer.videoHeight").await,
        json!(480),
        "{what}"
    );

    let f1 = b
        .eval(page, "window.campeer.sessionFrames")
        .await
        .as_u64()
        .unwrap_or(0);
    let s1 = b
        .wait(page, "window.campeer.lastStamp", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let f2 = b
        .eval(page, "window.campeer.sessionFrames")
        .await
        .as_u64()
        .unwrap_or(0);
    let s2 = b.eval(page, "window.campeer.lastStamp").await;
    assert!(
        f2 >= f1 + 15,
        "{what}: frames stopped arriving ({f1} then {f2} in 1.5 s)"
    );
    let (c1, c2) = (
        s1["counter"].as_u64().unwrap_or(0),
        s2["counter"].as_u64().unwrap_or(0),
    );
    let (m1, m2) = (
        s1["ms"].as_u64().unwrap_or(0),
        s2["ms"].as_u64().unwrap_or(0),
    );
    assert!(
        c2 > c1,
        "{what}: the stamp counter did not move: {s1} then {s2}"
    );
    let dms = m2.wrapping_sub(m1) % (1 << 32);
    assert!(
        (500..5000).contains(&dms),
        "{what}: stamp times {m1} then {m2}: not live"
    );
    b.eval(page, "window.campeer").await
}

/// Waits until `page` receives video as `codec` (`video/VP8`, `video/H264`).
async fn assert_codec(b: &mut Browser, page: u64, codec: &str) {
    let got = b
        .wait(page, "window.campeer.videoCodec", Duration::from_secs(15))
        .await;
    assert_eq!(got, json!(codec), "the negotiated video codec");
}

/// The page's latency figures, stage by stage (web/src/latency.ts): Chromium
/// and Firefox report every stage of a WebRTC frame's way, and on one clock
/// a frame arrives before the page's callback has it.
async fn assert_latency_stages(b: &mut Browser, page: u64) {
    b.wait(
        page,
        "window.campeer.latencyStages.shown.length >= 10",
        Duration::from_secs(15),
    )
    .await;
    let stages = b.eval(page, "window.campeer.latencyStages").await;
    let median = |stage: &str| {
        let mut v: Vec<f64> = stages[stage]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        assert!(!v.is_empty(), "no {stage} figures: {stages}");
        common::pct(&mut v, 0.5)
    };
    let [received, _composed, shown, _expected] =
        ["received", "composed", "shown", "expected"].map(median);
    assert!(
        received <= shown,
        "frames received ({received} ms) after the page showed them ({shown} ms): {stages}"
    );
    // The figure's tooltip says the same in words.
    b.wait(
        page,
        "document.getElementById('fig-latency').title.startsWith('from capture: last packet in ')",
        Duration::from_secs(5),
    )
    .await;
}

// ---------------------------------------------------------------------------
// The tests

/// Debian's Firefox ESR offers no H.264 (it would download it as a plugin):
/// the device answers VP8, the page plays it with live stamps, switches an
/// output, receives the Opus tone, and a screenshot is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_plays_vp8_switches_an_output_and_receives_audio() {
    let Some(_serial) = firefox_prerequisites().await else {
        return;
    };
    let config = format!("{}\n[audio]\nsource = \"tone:440\"\n", open_config());
    let stack = Stack::start(BrokerKind::Embedded, None, &config).await;
    let mut b = Browser::launch_firefox().await;
    let page = b.open(&stack.url()).await;
    let st = assert_plays(&mut b, page, "Firefox").await;
    assert_codec(&mut b, page, "video/VP8").await;
    assert_latency_stages(&mut b, page).await;
    assert!(
        stack.log_text().contains("VP8 encoder started"),
        "the device encodes VP8 for Firefox; log:\n{}",
        stack.log_text()
    );

    b.wait(
        page,
        "window.campeer.controls.led && window.campeer.controls.led.value !== null",
        Duration::from_secs(10),
    )
    .await;
    b.click(page, "button[data-control=\"led\"]").await;
    b.wait(
        page,
        "document.querySelector('[data-indicator=\"led\"]').dataset.value === 'true'",
        Duration::from_secs(10),
    )
    .await;

    let a1 = b
        .wait(
            page,
            "window.campeer.audioBytes > 0 && window.campeer.audioBytes",
            T,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a2 = b.eval(page, "window.campeer.audioBytes").await;
    assert!(
        a2.as_f64().zip(a1.as_f64()).is_some_and(|(x, y)| x > y),
        "audio stopped arriving: {a1} then {a2} bytes"
    );
    // The page reads totalAudioEnergy from the inbound audio's stats; a
    // browser that reports none fails here rather than passing unchecked.
    let energy = b.eval(page, "window.campeer.audioEnergy").await;
    let e = energy
        .as_f64()
        .unwrap_or_else(|| panic!("the browser reported no audio energy: {energy}"));
    assert!(e > 0.0, "the tone is silent: total audio energy {e}");
    let errors = b.eval(page, "window.campeer.errors").await;
    assert_eq!(errors, json!([]), "the page reported errors");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("viewer-firefox.png");
    b.screenshot(page, &shot).await;
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "screenshot written"
    );
    println!(
        "Firefox figures: first frame {} ms after page load, offer to first frame {} ms, audio energy {energy}; screenshot {}",
        st["firstFrameMs"], st["offerToFirstFrameMs"], shot.display()
    );
    b.quit().await;
}

/// Chromium with H.264 removed from its offer (`?codec=vp8`) plays VP8,
/// while a second page on the same device plays H.264: both live at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_forced_to_vp8_plays_beside_an_h264_page() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    let stack = Stack::start(BrokerKind::Embedded, None, &open_config()).await;
    let mut b = Browser::launch().await;
    let vp8 = b.open(&format!("{}?codec=vp8", stack.url())).await;
    let h264 = b.open(&stack.url()).await;
    // Only the front tab renders at full rate: look at each in turn while
    // both stay connected.
    b.front(vp8).await;
    assert_plays(&mut b, vp8, "VP8 page").await;
    b.front(h264).await;
    assert_plays(&mut b, h264, "H.264 page").await;
    assert_codec(&mut b, vp8, "video/VP8").await;
    assert_codec(&mut b, h264, "video/H264").await;
    // Both still live together.
    b.front(vp8).await;
    assert_plays(&mut b, vp8, "VP8 page beside H.264").await;
    assert_eq!(b.eval(h264, "window.campeer.state").await, json!("playing"));
    let log = stack.log_text();
    assert_eq!(
        log.matches("VP8 encoder started").count(),
        1,
        "one VP8 encoder for the VP8 page; log:\n{log}"
    );
    b.quit().await;
}

/// Chromium's mean jitter-buffer delay per emitted video frame (ms), from
/// the first peer connection's getStats.
const JITTER_BUFFER_MS: &str = "(async () => { const s = await window.__test.pcs[0].getStats(); \
    let d = null; s.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video' && r.jitterBufferEmittedCount) \
    d = Math.round(1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount * 10) / 10; }); return d; })()";

/// Whether an answer's video section negotiates playout-delay.
fn answer_has_playout_delay(sdp: &str) -> bool {
    sdp.split("\r\nm=")
        .filter(|m| m.starts_with("video"))
        .any(|m| {
            m.lines().any(|l| {
                l.starts_with("a=extmap:") && l.ends_with(campeer::rtc::playout_delay::URI)
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_live_video_through_the_embedded_broker() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    // A signed device with its generated admin key (paired by default).
    let stack = Stack::start(BrokerKind::Embedded, None, LED_CONFIG).await;

    // What the page is told.
    let (code, body) = http_get(stack.http, "/config.json")
        .await
        .expect("config.json");
    assert_eq!(code, 200);
    let cfg: Value = serde_json::from_str(&body).expect("config.json is JSON");
    assert_eq!(cfg["device_id"], DEVICE, "{cfg}");
    assert_eq!(cfg["prefix"], "campeer", "{cfg}");
    assert_eq!(cfg["auth"], "signed", "{cfg}");
    // MQTT over WebSocket at /mqtt on the page's own port.
    assert_eq!(cfg["ws_port"], Value::Null, "{cfg}");
    assert_eq!(cfg["own_broker"], true, "{cfg}");
    assert_eq!(cfg["ws_url"], Value::Null, "{cfg}");

    let mut b = Browser::launch().await;
    // The pairing link, from `campeer pair` as the owner gets it: the
    // daemon's log (standard error is no terminal here) says how to pair
    // but holds no secret.
    let pair = common::pair_text(&stack.state_dir());
    assert_eq!(pair, stack.stored_key("admin"));
    let secret = pair.split_once('.').expect("id.secret").1;
    assert!(
        !stack.log_text().contains(secret),
        "the admin secret is in the daemon's log"
    );
    assert!(
        stack.log_text().contains("campeer pair"),
        "the log says how to pair"
    );
    let page = b.open(&format!("{}#pair={pair}", stack.url())).await;
    let st = assert_plays(&mut b, page, "embedded broker").await;
    assert_eq!(
        b.eval(page, "location.hash").await,
        json!(""),
        "the page removes the key from the address bar"
    );
    // Chromium nominates on its first check, which reaches the device
    // before the device has checked that pair: the device answers it as
    // soon as its own check succeeds, not at Chromium's next check
    // (docs/design.md, pitfall 16).
    assert!(
        stack
            .log_text()
            .contains("answering the peer's first nominating check"),
        "the device did not answer Chromium's first nominating check at once:\n{}",
        common::tail(&stack.log_text(), 40)
    );

    // The latency figure needs a ping for the clock mapping (every 2 s).
    let latency = b.wait(page, "window.campeer.latencyMs !== null && window.campeer.bitrateKbps !== null && window.campeer.latencyMs", Duration::from_secs(15)).await;
    let shown = b
        .eval(page, "document.getElementById('fig-latency').textContent")
        .await;
    assert!(
        shown.as_str().is_some_and(|s| s.ends_with("ms")),
        "latency shown as {shown}"
    );
    let lat = latency.as_f64().unwrap_or(f64::NAN);
    assert!(
        lat.is_finite() && (-50.0..2000.0).contains(&lat),
        "implausible latency {lat} ms"
    );
    assert_latency_stages(&mut b, page).await;
    b.wait(
        page,
        "window.campeer.controls.led && window.campeer.controls.led.value !== null",
        Duration::from_secs(10),
    )
    .await;
    let problems = b
        .must(
            json!({"cmd": "problems", "page": page}),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        problems,
        json!([]),
        "console errors or uncaught exceptions (CSP?)"
    );
    let errors = b.eval(page, "window.campeer.errors").await;
    assert_eq!(errors, json!([]), "the page reported errors");

    // The answer asks Chromium to render on arrival (playout delay 0).
    let jitter = b.eval(page, JITTER_BUFFER_MS).await;
    println!("browser jitter buffer delay per frame: {jitter} ms");
    let answer = b.eval(page, "window.__test.remote[0]").await;
    let answer = answer.as_str().expect("the page set the device's answer");
    assert!(
        answer_has_playout_delay(answer),
        "no playout-delay extension in the video section of the answer:\n{answer}"
    );

    let st2 = b.eval(page, "window.campeer").await;
    println!(
        "browser figures (embedded broker): first frame {} ms after page load, offer to first frame {} ms, \
         page latency (capture to display) {} ms, round trip {} ms, {} fps, {} kb/s, {} frames never shown",
        st["firstFrameMs"], st["offerToFirstFrameMs"], st2["latencyMs"], st2["rttMs"], st2["fps"], st2["bitrateKbps"], st2["framesMissed"]
    );
    println!(
        "browser timeline (ms since the page started loading): {}",
        st2["timeline"]
    );
    // The screenshot for the README shows a switched-on output.
    b.click(page, "button[data-control=\"led\"]").await;
    b.wait(
        page,
        "document.querySelector('[data-indicator=\"led\"]').dataset.value === 'true'",
        Duration::from_secs(10),
    )
    .await;
    // Into the target dir, so the test leaves the work tree clean; the
    // README's copy is refreshed only on request (scripts/screenshot.sh).
    let shot = if std::env::var_os("CAMPEER_WRITE_SCREENSHOT").is_some_and(|v| v == "1") {
        root().join("docs/viewer.png")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("viewer.png")
    };
    b.screenshot(page, &shot).await;
    println!("screenshot: {}", shot.display());

    // Leaving the page ends its session at once: its bye goes out as a
    // beacon (POST /bye/{sid}) too, since the MQTT one does not get out
    // before the page's WebSocket closes. Without it the device would
    // stream on until ICE gave up (~10 s).
    b.must(
        json!({"cmd": "close", "page": page}),
        Duration::from_secs(10),
    )
    .await;
    let left = std::time::Instant::now();
    let said = |log: &str| log.contains("bye by HTTP") && log.contains("viewer said bye");
    while !said(&stack.log_text()) && left.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        said(&stack.log_text()),
        "the closed page's session did not end with its bye within 5 s:\n{}",
        common::tail(&stack.log_text(), 30)
    );
    println!(
        "closed page: its session ended {} ms after the tab closed",
        left.elapsed().as_millis()
    );
    b.quit().await;
}

/// HTTPS (http.tls_cert, http.tls_key) with a certificate made at test
/// time: Chromium (told to accept it) loads the page over https, the page
/// reaches MQTT over wss:// at /mqtt, and plays; no console error (a CSP
/// refusal of wss: would be one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_over_https_with_mqtt_over_wss() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    if std::env::var_os("CAMPEER_BROWSER_INPROC").is_some() {
        common::skipped(
            "browser_inproc",
            "CAMPEER_BROWSER_INPROC is set: the in-process page server is plain HTTP",
        );
        return;
    }
    let certs = TempDir::new("browser-tls");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen");
    let (cert, key) = (certs.0.join("cert.pem"), certs.0.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let config = format!(
        "{LED_CONFIG}\n[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let stack = Stack::start(BrokerKind::Embedded, None, &config).await;
    let mut b = Browser::launch().await;
    let pair = stack.stored_key("admin");
    let url = stack.url();
    assert!(url.starts_with("https://"), "{url}");
    let page = b.open(&format!("{url}#pair={pair}")).await;
    let st = assert_plays(&mut b, page, "https").await;
    assert_eq!(b.eval(page, "location.protocol").await, json!("https:"));
    let broker = st["brokerUrl"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        broker,
        format!("wss://127.0.0.1:{}/mqtt", stack.http),
        "the page's MQTT over wss: {st}"
    );
    let problems = b
        .must(
            json!({"cmd": "problems", "page": page}),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(problems, json!([]), "console errors over https");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_switched_on_one_page_follows_on_every_page() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    let stack = Stack::start(BrokerKind::Embedded, None, &open_config()).await;
    let mut b = Browser::launch().await;
    let a = b.open(&stack.url()).await;
    let other = b.open(&stack.url()).await;
    for p in [a, other] {
        b.wait(p, "window.campeer.state === 'playing'", T).await;
        // An open device says so, plainly.
        b.wait(p, "!document.getElementById('open-banner').hidden", T)
            .await;
        b.wait(
            p,
            "window.campeer.controls.led && window.campeer.controls.led.value === false",
            Duration::from_secs(10),
        )
        .await;
        b.wait(
            p,
            "!document.querySelector('button[data-control=\"led\"]').disabled",
            Duration::from_secs(10),
        )
        .await;
    }
    for want in [true, false, true] {
        b.click(a, "button[data-control=\"led\"]").await;
        let sel = format!(
            "document.querySelector('[data-indicator=\"led\"]').dataset.value === '{want}'"
        );
        // The clicking page (from the call's result or the notification) and
        // the other page (from gpio.changed alone) both follow.
        b.wait(a, &sel, Duration::from_secs(10)).await;
        b.wait(other, &sel, Duration::from_secs(10)).await;
        let pressed = b.eval(other, "document.querySelector('button[data-control=\"led\"]').getAttribute('aria-pressed')").await;
        assert_eq!(pressed, json!(want.to_string()));
        assert_eq!(
            b.eval(other, "window.campeer.controls.led.value").await,
            json!(want)
        );
    }
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_recovers_when_the_daemon_restarts_or_crashes() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    let mut stack = Stack::start(BrokerKind::Embedded, None, &open_config()).await;
    let mut b = Browser::launch().await;
    let page = b.open(&stack.url()).await;
    assert_plays(&mut b, page, "before the restart").await;

    for (round, crash) in [(2u64, false), (3u64, true)] {
        let sid_before = b.eval(page, "window.campeer.sid").await;
        let t = Instant::now();
        stack.restart(crash).await;
        let back = t.elapsed();
        b.wait(
            page,
            &format!("window.campeer.sessions >= {round} && window.campeer.state === 'playing' && window.campeer.sessionFrames > 10"),
            Duration::from_secs(60),
        )
        .await;
        let recovered = t.elapsed();
        let st = assert_plays(
            &mut b,
            page,
            if crash {
                "after a crash"
            } else {
                "after a restart"
            },
        )
        .await;
        assert_ne!(st["sid"], sid_before, "a new session was expected");
        println!(
            "browser figures: daemon {} and back online in {} ms; page playing again {} ms after the stop",
            if crash { "killed" } else { "stopped" },
            back.as_millis(),
            recovered.as_millis()
        );
    }
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_through_an_external_mosquitto_over_websocket() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    if std::env::var_os("CAMPEER_BROWSER_INPROC").is_some() {
        common::skipped(
            "browser_inproc",
            "CAMPEER_BROWSER_INPROC is set: the external-broker test needs the daemon's --mqtt-ws-url wiring",
        );
        return;
    }
    let mut mosq = WsMosquitto::start();
    let stack = Stack::start(BrokerKind::Mosquitto, Some(&mosq), &open_config()).await;
    let (_, body) = http_get(stack.http, "/config.json")
        .await
        .expect("config.json");
    let cfg: Value = serde_json::from_str(&body).expect("JSON");
    // The URL as given to --mqtt-ws-url (a trailing slash may be normalized).
    let ws_url = format!("ws://127.0.0.1:{}", mosq.ws);
    assert!(
        cfg["ws_url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&ws_url)),
        "config.json: {cfg}"
    );

    let mut b = Browser::launch().await;
    let page = b.open(&stack.url()).await;
    let st = assert_plays(&mut b, page, "external Mosquitto").await;
    assert!(
        st["brokerUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with(&ws_url)),
        "the page used {}",
        st["brokerUrl"]
    );
    println!(
        "browser figures (Mosquitto over WebSocket): first frame {} ms after page load",
        st["firstFrameMs"]
    );

    // The broker is not on the media path: it goes away, the picture stays.
    mosq.kill();
    b.wait(
        page,
        "window.campeer.mqtt !== 'connected'",
        Duration::from_secs(10),
    )
    .await;
    let f1 = b
        .eval(page, "window.campeer.sessionFrames")
        .await
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let f2 = b
        .eval(page, "window.campeer.sessionFrames")
        .await
        .as_u64()
        .unwrap_or(0);
    assert!(
        f2 > f1 + 20,
        "the picture stopped with the broker ({f1} then {f2})"
    );
    mosq.spawn();
    b.wait(page, "window.campeer.mqtt === 'connected' && window.campeer.device && window.campeer.device.state === 'online'", T)
        .await;
    assert_eq!(
        b.eval(page, "window.campeer.sessions").await,
        json!(1),
        "the session should have survived"
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaired_pages_get_no_video_and_a_revoked_key_stops_at_once() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    let stack = Stack::start(BrokerKind::Embedded, None, &signed_config()).await;
    let mut b = Browser::launch().await;
    let page = b.open(&stack.url()).await;

    // No key: the pairing prompt, no MQTT login, no session, no video.
    b.wait(
        page,
        "window.campeer.state === 'need-key' && !document.getElementById('card-pair').hidden",
        T,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.eval(page, "window.campeer.sessions").await, json!(0));
    assert_eq!(b.eval(page, "window.campeer.framesSeen").await, json!(0));
    assert_eq!(
        b.eval(page, "document.getElementById('video').videoWidth")
            .await,
        json!(0),
        "video without a key"
    );

    // A wrong secret pasted: refused, and not retried in a loop.
    b.fill(page, "#pair-input", "phone.not-the-secret-at-all-0123")
        .await;
    b.click(page, "#pair-submit").await;
    b.wait(page, "window.campeer.keyRefused !== null", T).await;
    assert_eq!(b.eval(page, "window.campeer.framesSeen").await, json!(0));

    // The view key by its pairing link: plays, switches disabled.
    let view_page = b
        .open(&format!("{}#pair=wall.{VIEW_SECRET}", stack.url()))
        .await;
    assert_plays(&mut b, view_page, "view key").await;
    b.wait(view_page, "window.campeer.role === 'view'", T).await;

    // A key made with `campeer keys add` while the daemon runs: plays once
    // the daemon has taken it (it looks at the key file every 250 ms and
    // hands new keys to its broker; a page that came first was refused).
    let taken = "the device's own MQTT broker: access keys updated";
    let before = stack.log_text().matches(taken).count();
    let out = stack.keys(&["add", "tablet", "--role", "control"]);
    assert!(out.contains("#pair=tablet."), "{out}");
    assert!(
        common::wait_count(|| stack.log_text(), taken, before + 1, T).await,
        "the daemon did not take the new key; log:\n{}",
        stack.log_text()
    );
    let pair = stack.stored_key("tablet");
    let tablet = b.open(&format!("{}#pair={pair}", stack.url())).await;
    assert_plays(&mut b, tablet, "a key added while running").await;
    b.wait(tablet, "window.campeer.role === 'control'", T).await;
    // A second visit without the fragment still plays (the page kept the key).
    b.must(
        json!({"cmd": "reload", "page": tablet}),
        Duration::from_secs(30),
    )
    .await;
    assert_plays(&mut b, tablet, "a second visit").await;

    // Revoked: its session ends and the page is refused, without a restart.
    let pid = stack.child.as_ref().map(|c| c.id());
    stack.keys(&["revoke", "tablet"]);
    b.wait(tablet, "window.campeer.keyRefused !== null", T)
        .await;
    assert_eq!(stack.child.as_ref().map(|c| c.id()), pid, "no restart");
    let log = stack.log_text();
    assert!(log.contains("access keys changed; reloaded"), "{log}");
    // The view key's page (a background tab now, so Chromium paints it
    // rarely) kept its session.
    assert_eq!(
        b.eval(
            view_page,
            "[window.campeer.state, window.campeer.keyRefused]"
        )
        .await,
        json!(["playing", null]),
        "the other key's page"
    );
    b.quit().await;
}

/// The id of the `n`th mountpoint the device logged as created.
async fn wait_mountpoints(stack: &Stack, n: usize) -> u64 {
    let t = Instant::now();
    loop {
        let log = stack.log_text();
        let ids: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("mountpoint created"))
            .filter_map(|l| {
                l.split("mountpoint=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        if ids.len() >= n {
            return ids[n - 1];
        }
        assert!(t.elapsed() < T, "no mountpoint #{n}:\n{}", log);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The page handed over to the relay (docs/relay.md) by a signed device in
/// `relay.mode = "all"`, against Debian's Janus with the project's example
/// configuration: it decrypts the PIN, watches through Janus with live
/// stamps, shows that controls are not available there, and after Janus is
/// killed and restarted it comes back by itself through the device to the
/// new mountpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_watches_through_the_janus_relay_and_survives_its_restart() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    if !common::prerequisite("janus", common::janus::missing()) {
        return;
    }
    let mut janus = common::janus::Janus::start();
    let config = format!(
        "{}\n[relay]\nenabled = true\njanus_url = \"{}\"\nadmin_key = \"{}\"\nmode = \"all\"\n",
        signed_config(),
        janus.url(),
        janus.admin_key
    );
    let stack = Stack::start(BrokerKind::Embedded, None, &config).await;
    let mut b = Browser::launch().await;
    let page = b
        .open(&format!("{}#pair=wall.{VIEW_SECRET}", stack.url()))
        .await;
    b.wait(
        page,
        "window.campeer.relay && window.campeer.relay.mountpoint",
        T,
    )
    .await;
    let first = assert_plays(&mut b, page, "through the relay").await;
    let mp1 = first["relay"]["mountpoint"].as_u64().expect("a mountpoint");
    assert!(
        stack
            .log_text()
            .contains("handed the viewer over to the relay"),
        "the device never handed the page over"
    );
    let note = b
        .eval(page, "!document.getElementById('controls-relay').hidden")
        .await;
    assert_eq!(note, json!(true), "the page says controls are not relayed");
    let led = b
        .eval(
            page,
            "document.querySelector('button[data-control=\"led\"]').disabled",
        )
        .await;
    assert_eq!(led, json!(true), "no switch through the relay");

    janus.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    janus.restart();
    let t = Instant::now();
    // While Janus is down the device serves viewers itself (within
    // max_sessions); once it is back, new viewers go to its new mountpoint.
    // The page comes back either way, by itself.
    let cond = format!(
        "window.campeer.state === 'playing' && (!window.campeer.relay || \
         (window.campeer.relay.mountpoint && window.campeer.relay.mountpoint !== {mp1}))"
    );
    b.wait(page, &cond, Duration::from_secs(40)).await;
    let how = b.eval(page, "window.campeer.relay").await;
    eprintln!(
        "page playing again {:.1} s after Janus restarted ({})",
        t.elapsed().as_secs_f64(),
        if how.is_null() {
            "from the device, the relay being down".to_string()
        } else {
            format!("through the new mountpoint: {how}")
        }
    );
    assert_plays(&mut b, page, "after Janus restarted").await;
    let mp2 = wait_mountpoints(&stack, 2).await;
    assert_ne!(mp1, mp2, "the device made a new mountpoint");
    // A second page now is handed over to the new mountpoint.
    let second = b
        .open(&format!("{}#pair=wall.{VIEW_SECRET}", stack.url()))
        .await;
    let cond = format!("window.campeer.relay && window.campeer.relay.mountpoint === {mp2}");
    b.wait(second, &cond, T).await;
    assert_plays(&mut b, second, "a new page through the new mountpoint").await;
    b.quit().await;
}

/// Runs `campeer serve-page` (the page alone) on `port` for `broker`;
/// killed when dropped.
async fn serve_page(port: u16, broker: &str, log: &Path) -> Child {
    let logf = std::fs::File::create(log).expect("serve-page log");
    let child = Command::new(BIN)
        .args(["--log", "debug", "serve-page", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--broker", broker])
        .stdout(Stdio::null())
        .stderr(logf)
        .kill_on_drop(true)
        .spawn()
        .expect("start campeer serve-page");
    wait_port(port);
    child
}

/// A page that lives off the device (issue 25): `campeer serve-page` on
/// another port, so another origin than the device's page server, paired by
/// the link `campeer pair --page-url --broker` prints. The page takes the
/// device and broker from the link, connects to the device's own broker
/// WebSocket (`broker.ws_listen`, whose Origin check admits the page's
/// origin through `http.allowed_origins`), asks for ICE servers over MQTT
/// (minted TURN credentials, sealed for its key), and plays, without one
/// request to the device's HTTP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_served_elsewhere_pairs_by_link_and_plays_through_the_devices_broker() {
    let Some(_serial) = prerequisites().await else {
        return;
    };
    if std::env::var_os("CAMPEER_BROWSER_INPROC").is_some() {
        eprintln!("SKIPPED: needs the daemon's own broker WebSocket listener");
        return;
    }
    let page_port = free_port();
    let turn_port = free_port();
    let secrets = TempDir::new("turn-secret");
    let secret_file = secrets.0.join("turn.secret");
    std::fs::write(&secret_file, "turn-shared-secret\n").expect("write the TURN secret");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the TURN secret");
    }
    let config = format!(
        "device_id = \"{DEVICE}\"\n{LED_CONFIG}\n[http]\nallowed_origins = [\"http://127.0.0.1:{page_port}\"]\n\n\
         [webrtc.turn_rest]\nurls = [\"turn:127.0.0.1:{turn_port}?transport=udp\"]\nsecret_file = \"{}\"\nlifetime_secs = 3600\n",
        secret_file.display()
    );
    let stack = Stack::start(BrokerKind::Embedded, None, &config).await;
    let broker = format!("ws://127.0.0.1:{}/mqtt", stack._ws);
    let page_log = stack.dir.0.join("serve-page.log");
    let _server = serve_page(page_port, &broker, &page_log).await;
    let page_url = format!("http://127.0.0.1:{page_port}/");

    // The link, as `campeer pair` prints it for a hosted page.
    let out = std::process::Command::new(BIN)
        .arg("pair")
        .arg("--config")
        .arg(stack.dir.0.join("campeer.toml"))
        .arg("--state-dir")
        .arg(stack.state_dir())
        .args(["--page-url", &page_url, "--broker", &broker])
        .output()
        .expect("campeer pair");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "campeer pair: {text}");
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with(&page_url) && w.contains("#pair="))
        .unwrap_or_else(|| panic!("no link in: {text}"))
        .to_owned();
    let broker_enc = "ws%3A%2F%2F127.0.0.1%3A";
    assert!(
        link.contains(&format!("&device={DEVICE}&broker={broker_enc}")),
        "{link}"
    );
    assert!(link.contains(&format!("#pair={}", stack.stored_key("admin"))));

    let mut b = Browser::launch().await;
    let page = b.open(&link).await;
    let st = assert_plays(&mut b, page, "a page served elsewhere").await;
    assert_eq!(st["remote"]["device"], json!(DEVICE), "{st}");
    assert_eq!(st["remote"]["broker"], json!(broker), "{st}");
    assert_eq!(st["brokerUrl"], json!(broker), "{st}");
    // The key left the address bar; the camera and broker stay.
    let hash = b.eval(page, "location.hash").await;
    let hash = hash.as_str().unwrap_or_default();
    assert!(
        hash.starts_with(&format!("#device={DEVICE}&broker=")) && !hash.contains("pair="),
        "{hash}"
    );
    // ICE servers from the device over MQTT, verified, with minted TURN
    // credentials that expire in about an hour.
    assert_eq!(st["iceSource"], json!("ice_request"), "{st}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expires = st["iceExpires"].as_u64().unwrap_or(0);
    assert!(
        (now + 3000..=now + 3700).contains(&expires),
        "expires {expires}, now {now}"
    );
    let log = stack.log_text();
    assert!(log.contains("ICE servers handed out"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("ICE servers handed out") && l.contains("key=admin")),
        "{log}"
    );
    // Nothing was asked of the device's page server; everything the page
    // loaded came from serve-page.
    assert!(
        !log.contains("path=/config.json") && !log.contains("path=/ice.json"),
        "the hosted page asked the device's HTTP server: {log}"
    );
    let served = std::fs::read_to_string(&page_log).unwrap_or_default();
    assert!(served.contains("path=/app.js"), "{served}");
    assert!(
        served.contains("connect-src 'self' ws://127.0.0.1:"),
        "serve-page logs its policy: {served}"
    );
    let problems = b
        .must(
            json!({"cmd": "problems", "page": page}),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(problems, json!([]), "console errors on the hosted page");

    // A later visit to the bare page address: the page finds no
    // config.json there and uses the camera and key it kept.
    let again = b.open(&page_url).await;
    let st = assert_plays(&mut b, again, "a later visit without the link").await;
    assert_eq!(st["remote"]["device"], json!(DEVICE), "{st}");
    b.quit().await;
}
