//! WHEP against the real daemon: `campeer view --whep` pulls stamped frames
//! from `/whep`; a missing or wrong bearer gets 401; the session limit
//! (`max_sessions = 1`) holds for WHEP sessions, `DELETE` frees the slot, and
//! so does a session that never connects (connect timeout); malformed
//! requests get their 4xx with a message.
//!
//! And a WHEP client that is not ours: the `whip-whep` npm package, bundled
//! into a player page (tests/browser/whep/) served from another origin,
//! in Debian's Chromium driven by tests/browser/driver.mjs: 401 without or
//! with a wrong token, stamped frames read from the decoded video, the
//! session limit, and the slot freed by the client's DELETE. It needs
//! chromium, node and web/node_modules (scripts/install-web-deps.sh);
//! without them it fails with the install command, unless the developer
//! opted out with `CAMPEER_SKIP=browser`. Figures: `-- --nocapture`.

mod common;

use common::{free_port, wait_page_port, TempDir, BIN, PAGE_ANY_PORT};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;

/// One daemon at a time: two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEVICE: &str = "whepcam";
const SECRET: &str = "0123456789abcdef-phone";

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    dir: TempDir,
    addr: SocketAddr,
    /// A WHEP token of key `phone` (`campeer keys token add`), also in
    /// `dir/token`.
    token: String,
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log_text());
        }
    }
}

/// A signed device with its own broker, the test pattern, one session at
/// most, and a short connect timeout.
async fn start_daemon(width: u32, height: u32) -> Daemon {
    let dir = TempDir::new("whep");
    // The own broker does not report a port it bound: a picked one. The
    // page server binds any port and logs it.
    let mqtt = free_port();
    let config = format!(
        "device_id = \"{DEVICE}\"\n\
         [video]\nsource = \"test\"\nwidth = {width}\nheight = {height}\nfps = 15\n\
         [webrtc]\nmax_sessions = 1\nconnect_timeout_secs = 4\n\
         [broker]\nembedded = true\nlisten = \"127.0.0.1:{mqtt}\"\nws_listen = \"\"\n\
         [http]\nlisten = \"{PAGE_ANY_PORT}\"\n\
         [[access.keys]]\nid = \"phone\"\nsecret = \"{SECRET}\"\nrole = \"control\"\n"
    );
    let path = dir.0.join("campeer.toml");
    std::fs::write(&path, config).expect("write config");
    std::fs::write(dir.0.join("secret"), SECRET).expect("write secret");
    let log = dir.0.join("daemon.log");
    let logf = std::fs::File::create(&log).expect("create log");
    let child = Command::new(BIN)
        .args(["--log", "info,campeer=debug", "run", "--config"])
        .arg(&path)
        .args(["--stats-interval", "0", "--state-dir"])
        .arg(dir.0.join("state"))
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("start campeer");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let http = wait_page_port(log_text, Duration::from_secs(20)).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    let mut d = Daemon {
        child,
        log,
        dir,
        addr,
        token: String::new(),
    };
    let t = Instant::now();
    loop {
        if let Some((200, _, _)) = request(addr, "GET", "/healthz", &[], "").await {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the page server never answered; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.token = keys_cmd(&d, &["token", "add", "phone"]).trim().to_owned();
    std::fs::write(d.dir.0.join("token"), &d.token).expect("write token");
    wait_log(&d, "WHEP/snapshot tokens changed; reloaded", 1).await;
    d
}

/// `campeer keys ARGS` on the daemon's store; its standard output.
fn keys_cmd(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(d.dir.0.join("campeer.toml"))
        .arg("--state-dir")
        .arg(d.dir.0.join("state"))
        .output()
        .expect("run campeer keys");
    assert!(
        out.status.success(),
        "campeer keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `needle` is in the daemon's log `n` times.
async fn wait_log(d: &Daemon, needle: &str, n: usize) {
    let t = Instant::now();
    while d.log_text().matches(needle).count() < n {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never logged {needle:?}:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The key's MQTT password as a bearer: what WHEP took before it had
/// tokens of its own, refused now.
fn mqtt_password_bearer() -> String {
    format!(
        "phone:{}",
        campeer::signaling::auth::key_password(SECRET.as_bytes(), DEVICE)
    )
}

/// One request on a fresh connection: (status, head, body).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    s.write_all(raw.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status, head.to_owned(), body.to_owned()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A valid H.264 recvonly offer whose ICE never completes (nobody behind
/// it): the device answers it and holds the session until its connect
/// timeout.
fn dead_offer() -> String {
    "v=0\r\no=- 4 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
     m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
     a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
     a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
     a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n\
     a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        .to_owned()
}

async fn post(d: &Daemon, token: Option<&str>, sdp: &str) -> (u16, String, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/sdp")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    request(d.addr, "POST", "/whep", &h, sdp)
        .await
        .expect("POST /whep answered")
}

/// `campeer view --whep` with `extra` flags; its JSON report.
async fn view_whep(d: &Daemon, extra: &[&str]) -> serde_json::Value {
    let url = format!("http://{}/whep", d.addr);
    let out = tokio::process::Command::new(BIN)
        .args([
            "--log", "warn", "view", "--json", "--device", DEVICE, "--whep", &url,
        ])
        .args(extra)
        .output()
        .await
        .expect("run campeer view");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_plays_limits_and_frees_its_slot() {
    let _serial = SERIAL.lock().await;
    let d = start_daemon(320, 240).await;
    let token = d.token.clone();
    let token_file = d.dir.0.join("token");
    let token_file = token_file.to_str().expect("path");

    // The project's own client pulls stamped frames with the token.
    let r = view_whep(
        &d,
        &[
            "--token-file",
            token_file,
            "--frames",
            "30",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert_eq!(r["http_status"], 201, "{r}");
    assert!(r["error"].is_null(), "{r}");
    assert!(r["frames"].as_u64().expect("frames") >= 30, "{r}");
    assert!(r["stamped_frames"].as_u64().expect("stamps") >= 30, "{r}");
    assert_eq!(r["lost_frames"], 0, "{r}");
    eprintln!(
        "WHEP: answer {} ms, connected {} ms, first frame {} ms after the POST",
        r["answer_ms"], r["connected_ms"], r["first_frame_ms"]
    );

    // `campeer keys token list` names it by its public id, never whole.
    let listed = keys_cmd(&d, &["token", "list", "phone"]);
    let id = token.split('.').next().expect("id");
    assert!(listed.contains(id) && listed.contains("phone"), "{listed}");
    assert!(!listed.contains(&token[id.len()..]), "{listed}");

    // Missing and wrong tokens.
    let (status, head, body) = post(&d, None, &dead_offer()).await;
    assert_eq!(status, 401, "{body}");
    assert!(header(&head, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    let wrong = format!("{id}.{}", "A".repeat(43));
    assert_eq!(post(&d, Some(&wrong), &dead_offer()).await.0, 401);
    // The key's MQTT password is no WHEP credential.
    assert_eq!(
        post(&d, Some(&mqtt_password_bearer()), &dead_offer())
            .await
            .0,
        401
    );
    assert_eq!(post(&d, Some("ghost:abc"), &dead_offer()).await.0, 401);
    std::fs::write(d.dir.0.join("bad-token"), &wrong).expect("write");
    let bad = d.dir.0.join("bad-token");
    let r = view_whep(
        &d,
        &[
            "--token-file",
            bad.to_str().expect("path"),
            "--timeout",
            "10",
        ],
    )
    .await;
    assert_eq!(r["http_status"], 401, "{r}");
    assert_eq!(r["frames"], 0, "{r}");

    // Malformed requests: clear 4xx, no session.
    let (s, _, body) = post(&d, Some(&token), "v=0\r\nthis is not sdp").await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("bad SDP offer"), "{body}");
    let big = "a".repeat(70 * 1024);
    assert_eq!(post(&d, Some(&token), &big).await.0, 413);
    let auth = format!("Bearer {token}");
    let (s, _, _) = request(
        d.addr,
        "POST",
        "/whep",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        "x",
    )
    .await
    .expect("answer");
    assert_eq!(s, 415);
    let (s, head, _) = request(d.addr, "GET", "/whep", &[], "")
        .await
        .expect("answer");
    assert_eq!(s, 405, "{head}");

    // CORS preflight from another origin (a player page elsewhere).
    let (s, head, _) = request(
        d.addr,
        "OPTIONS",
        "/whep",
        &[
            ("Origin", "https://ha.example:8123"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        "",
    )
    .await
    .expect("answer");
    assert_eq!(s, 204);
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&head, "access-control-allow-headers").is_some_and(|v| v.contains("Authorization"))
    );

    // One session at most: a WHEP session holds the slot...
    let (s, head, answer) = post(&d, Some(&token), &dead_offer()).await;
    assert_eq!(s, 201, "{answer}");
    assert!(
        answer.contains("a=candidate:"),
        "the answer carries the device's candidates: {answer}"
    );
    assert_eq!(header(&head, "content-type"), Some("application/sdp"));
    let location = header(&head, "location").expect("Location").to_owned();
    assert!(
        location.starts_with("/whep/") && location.len() == 6 + 32,
        "{location}"
    );
    let (s, _, body) = post(&d, Some(&token), &dead_offer()).await;
    assert_eq!(s, 503, "the slot is taken: {body}");
    assert!(body.contains("session limit"), "{body}");
    // ...takes trickled candidates, refuses restarts and other keys...
    let frag_h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/trickle-ice-sdpfrag"),
    ];
    let frag = "a=ice-ufrag:abcd\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let (s, _, body) = request(d.addr, "PATCH", &location, &frag_h, frag)
        .await
        .expect("answer");
    assert_eq!(s, 204, "{body}");
    let restart = "a=ice-ufrag:efgh\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n";
    let (s, _, _) = request(d.addr, "PATCH", &location, &frag_h, restart)
        .await
        .expect("answer");
    assert_eq!(s, 422);
    let (s, _, _) = request(d.addr, "DELETE", &location, &[], "")
        .await
        .expect("answer");
    assert_eq!(s, 401, "DELETE needs the token too");
    let (s, _, _) = request(
        d.addr,
        "DELETE",
        "/whep/00000000000000000000000000000000",
        &[("Authorization", &auth)],
        "",
    )
    .await
    .expect("answer");
    assert_eq!(s, 404);
    // ...and DELETE frees it: a new session plays at max_sessions = 1.
    let (s, _, body) = request(d.addr, "DELETE", &location, &[("Authorization", &auth)], "")
        .await
        .expect("answer");
    assert_eq!(s, 200, "{body}");
    let (s, _, _) = request(d.addr, "DELETE", &location, &[("Authorization", &auth)], "")
        .await
        .expect("answer");
    assert_eq!(s, 404, "gone");
    let r = view_whep(
        &d,
        &[
            "--token-file",
            token_file,
            "--frames",
            "10",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    assert!(r["stamped_frames"].as_u64().expect("stamps") >= 10, "{r}");

    // A session that never connects ends at the connect timeout (4 s)
    // and frees the slot and its resource. (The viewer above DELETEd its
    // session as it left; the slot is free once the daemon has closed it,
    // which may be a moment after the viewer exits: a refused POST leaves
    // nothing behind, so it is simply asked again.)
    let t = Instant::now();
    let (s, head, body) = loop {
        let r = post(&d, Some(&token), &dead_offer()).await;
        if r.0 != 503 || t.elapsed() > Duration::from_secs(5) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s, 201, "{body}");
    let location = header(&head, "location").expect("Location").to_owned();
    assert_eq!(post(&d, Some(&token), &dead_offer()).await.0, 503);
    let t = Instant::now();
    loop {
        let (s, _, body) = request(d.addr, "PATCH", &location, &frag_h, frag)
            .await
            .expect("answer");
        if s == 404 {
            break;
        }
        assert_eq!(s, 204, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the dead session was never freed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, head, body) = post(&d, Some(&token), &dead_offer()).await;
    assert_eq!(s, 201, "the slot is free again: {body}");
    let location = header(&head, "location").expect("Location").to_owned();
    let (s, _, _) = request(d.addr, "DELETE", &location, &[("Authorization", &auth)], "")
        .await
        .expect("answer");
    assert_eq!(s, 200);

    // Revoking the token leaves the key; the daemon refuses the token
    // once it has reloaded the store. A new token works.
    keys_cmd(&d, &["token", "revoke", id]);
    wait_log(&d, "WHEP/snapshot tokens changed; reloaded", 2).await;
    assert_eq!(post(&d, Some(&token), &dead_offer()).await.0, 401);
    assert!(keys_cmd(&d, &["list"]).contains("phone"), "the key stays");
    let fresh = keys_cmd(&d, &["token", "add", "phone"]).trim().to_owned();
    wait_log(&d, "WHEP/snapshot tokens changed; reloaded", 3).await;

    // Wrong tokens from one address: five so far; at the tenth in a
    // minute the address is refused with 429, even with a good token.
    let mut tries = 0;
    loop {
        let (s, _, body) = post(&d, Some(&wrong), &dead_offer()).await;
        tries += 1;
        if s == 429 {
            break;
        }
        assert_eq!(s, 401, "{body}");
        assert!(tries <= 5, "still 401 after {tries} more wrong tokens");
    }
    let (s, head, _) = post(&d, Some(&fresh), &dead_offer()).await;
    assert_eq!(s, 429);
    let wait: u64 = header(&head, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{head}");
    assert!(
        !d.log_text().contains(&fresh) && !d.log_text().contains(&token),
        "no token in the log"
    );
}

// ---------------------------------------------------------------------------
// A third-party client in Chromium

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CAMPEER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !chromium_path().exists() {
        return Some(format!("{} not found", chromium_path().display()));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.map(|o| o.status.success()).unwrap_or(false) {
        return Some("node not found".into());
    }
    for m in ["playwright-core", "esbuild", "whip-whep"] {
        if !root().join("web/node_modules").join(m).is_dir() {
            return Some(format!("web/node_modules/{m} missing"));
        }
    }
    None
}

/// tests/browser/driver.mjs: one JSON command a line, one reply a line.
struct Driver {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
    next: u64,
    log: PathBuf,
}

impl Driver {
    async fn launch(dir: &TempDir) -> Driver {
        let log = dir.0.join("browser.log");
        let logf = std::fs::File::create(&log).expect("create browser log");
        let mut child = tokio::process::Command::new("node")
            .arg(root().join("tests/browser/driver.mjs"))
            .env("CAMPEER_CHROMIUM", chromium_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(logf)
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/browser/driver.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Driver {
            child,
            stdin,
            lines,
            next: 1,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn must(&mut self, mut c: Value, limit: Duration) -> Value {
        let id = self.next;
        self.next += 1;
        c["id"] = json!(id);
        self.stdin
            .write_all(format!("{c}\n").as_bytes())
            .await
            .expect("driver stdin");
        let deadline = tokio::time::Instant::now() + limit + Duration::from_secs(15);
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                other => panic!(
                    "driver gave no answer to {c} ({other:?}); log:\n{}",
                    self.log_text()
                ),
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["id"] != json!(id) {
                continue;
            }
            assert_eq!(
                v["ok"],
                json!(true),
                "browser command {c}: {}\n---- browser log ----\n{}",
                v["error"],
                self.log_text()
            );
            return v["value"].clone();
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        self.must(
            json!({"cmd": "eval", "page": 0, "expr": expr}),
            Duration::from_secs(30),
        )
        .await
    }

    async fn wait(&mut self, expr: &str, timeout: Duration) -> Value {
        let ms = timeout.as_millis() as u64;
        self.must(
            json!({"cmd": "wait", "page": 0, "expr": expr, "timeout": ms}),
            timeout,
        )
        .await
    }

    async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.stdin.write_all(b"{\"id\":0,\"cmd\":\"quit\"}\n"),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Serves the files of `dir` (GET only) on 127.0.0.1: the player's own
/// origin, not the device's.
async fn serve_dir(dir: PathBuf) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (ctype, name) = match path {
                    "/" | "/index.html" => ("text/html", "index.html"),
                    "/player.js" => ("text/javascript", "player.js"),
                    _ => ("text/plain", ""),
                };
                let body = if name.is_empty() {
                    None
                } else {
                    std::fs::read(dir.join(name)).ok()
                };
                let resp = match body {
                    Some(b) => {
                        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()).into_bytes();
                        r.extend_from_slice(&b);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_whep_client_plays_in_chromium() {
    let missing = missing_prerequisite().map(|why| format!("{why} (scripts/install-web-deps.sh)"));
    if !common::prerequisite("browser", missing) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let d = start_daemon(320, 240).await;
    let out = TempDir::new("whep-player");
    let built = std::process::Command::new("node")
        .arg(root().join("tests/browser/whep/build.mjs"))
        .arg(&out.0)
        .output()
        .expect("run node build.mjs");
    assert!(
        built.status.success(),
        "bundling the player: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let page_port = serve_dir(out.0.clone()).await;
    let mut b = Driver::launch(&out).await;
    b.must(
        json!({"cmd": "open", "url": format!("http://127.0.0.1:{page_port}/")}),
        Duration::from_secs(30),
    )
    .await;
    let url = format!("http://{}/whep", d.addr);
    let start = |token: &str| format!("window.whepTest.start({:?}, {:?})", url, token);

    // No token, a wrong one: the client's POST is refused with 401.
    let r = b.eval(&start("")).await;
    assert!(r.as_str().is_some_and(|s| s.contains("401")), "{r}");
    let r = b.eval(&start(&mqtt_password_bearer())).await;
    assert!(r.as_str().is_some_and(|s| s.contains("401")), "{r}");

    // The key's token: it plays, and the stamps in the decoded frames move.
    assert_eq!(b.eval(&start(&d.token)).await, json!("ok"));
    b.wait(
        "window.whepTest.st.stampsRead >= 5",
        Duration::from_secs(30),
    )
    .await;
    let s1 = b.eval("window.whepTest.st").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s2 = b.eval("window.whepTest.st").await;
    assert_eq!(s2["width"], 320, "{s2}");
    assert_eq!(s2["height"], 240, "{s2}");
    let frames = |s: &Value| s["frames"].as_u64().expect("frames");
    assert!(
        frames(&s2) >= frames(&s1) + 10,
        "frames stopped: {s1} then {s2}"
    );
    let counter = |s: &Value| s["lastStamp"]["counter"].as_u64().expect("a stamp");
    assert!(
        counter(&s2) > counter(&s1),
        "stamps did not move: {s1} then {s2}"
    );
    let ms = |s: &Value| s["lastStamp"]["ms"].as_u64().expect("a stamp time");
    let dms = ms(&s2).wrapping_sub(ms(&s1)) % (1 << 32);
    assert!(
        (500..5000).contains(&dms),
        "stamp times not live: {s1} then {s2}"
    );
    eprintln!(
        "whip-whep in Chromium: first frame {} ms after the POST started",
        s2["postToFirstFrameMs"]
    );

    // It holds the only slot (max_sessions = 1)...
    let token_file = d.dir.0.join("token");
    let token_file = token_file.to_str().expect("path");
    let viewer = [
        "--token-file",
        token_file,
        "--frames",
        "10",
        "--timeout",
        "20",
    ];
    let r = view_whep(&d, &viewer).await;
    assert_eq!(r["http_status"], 503, "{r}");
    // ...until the client stops: its DELETE frees the slot.
    assert_eq!(b.eval("window.whepTest.stop()").await, json!("stopped"));
    assert!(
        d.log_text().contains("WHEP session deleted by its client"),
        "the client's DELETE reached the device"
    );
    let r = view_whep(&d, &viewer).await;
    assert_eq!(r["http_status"], 201, "{r}");
    assert!(r["stamped_frames"].as_u64().expect("stamps") >= 10, "{r}");
    b.quit().await;
}
