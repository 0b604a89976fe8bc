//! The first-boot claim window against the real daemon (own broker, a
//! state directory kept across restarts): it opens only at the start that
//! made the admin key, a restart does not reopen it, a key added with
//! `campeer keys add` closes it at once, `campeer keys reopen-claim` opens
//! it once more with a new admin secret, a forwarded-address header from a
//! peer not in `http.trusted_proxies` is refused, and the admin secret is
//! never in the daemon's log.

mod common;

use common::{free_port, keys_cmd, wait_page_port, TempDir, BIN, PAGE_ANY_PORT};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Daemon {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str) {
        let t = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "never logged {needle:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }
}

/// `campeer run` with its own broker on `state`; waits for the page.
async fn start(dir: &TempDir, run: usize) -> Daemon {
    // The own broker's port is picked (it does not report one it bound);
    // the page server binds any port and logs it.
    let mqtt = free_port();
    let log = dir.0.join(format!("daemon-{run}.log"));
    let child = Command::new(BIN)
        .args([
            "--log",
            "info,campeer=debug",
            "run",
            "--device-id",
            "claimcam",
        ])
        .args(["--state-dir", &dir.0.join("state").to_string_lossy()])
        .args(["--http", PAGE_ANY_PORT])
        .args(["--broker-listen", &format!("127.0.0.1:{mqtt}")])
        .args(["--broker-ws-listen", ""])
        .args(["--video", "test", "--stats-interval", "0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start campeer");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let http = wait_page_port(log_text, Duration::from_secs(20)).await;
    let d = Daemon {
        child,
        log,
        addr: SocketAddr::from(([127, 0, 0, 1], http)),
    };
    let t = Instant::now();
    while request(d.addr, "GET /healthz", "", "").await.0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the page never answered:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.wait_log("access: signed").await;
    d
}

/// One request on a fresh connection: (status, body).
async fn request(addr: SocketAddr, line: &str, headers: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let raw = format!(
        "{line} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(raw.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// `POST /claim` as the page sends it, with `extra` headers.
async fn claim(d: &Daemon, extra: &str) -> (u16, String) {
    let headers = format!(
        "Content-Type: application/json\r\nOrigin: http://{}\r\n{extra}",
        d.addr
    );
    request(d.addr, "POST /claim", &headers, "{}").await
}

async fn claimable(d: &Daemon) -> bool {
    let (status, body) = request(d.addr, "GET /config.json", "", "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("config.json");
    v["claimable"].as_bool().expect("claimable")
}

fn admin_pair(state: &Path) -> String {
    let text = std::fs::read_to_string(state.join("keys.toml")).expect("keys.toml");
    let doc: toml::Value = toml::from_str(&text).expect("parses");
    let admin = doc["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["id"].as_str() == Some("admin")))
        .expect("an admin key");
    format!("admin.{}", admin["secret"].as_str().expect("secret"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_window_opens_once_and_closes_for_good() {
    let dir = TempDir::new("claim");
    let state = dir.0.join("state");

    // First boot: the admin key is made and the window opens; the journal
    // line says how to pair without the secret.
    let d = start(&dir, 1).await;
    assert!(claimable(&d).await, "the first boot offers the claim");
    let first = admin_pair(&state);
    // A proxy we were not told to trust forwards a LAN address: refused.
    for h in [
        "X-Forwarded-For: 192.168.1.20\r\n",
        "Forwarded: for=192.168.1.20\r\n",
        "X-Real-IP: 192.168.1.20\r\n",
    ] {
        let (s, body) = claim(&d, h).await;
        assert_eq!(s, 403, "{h}: {body}");
        assert!(!body.contains(&first[6..]), "{body}");
    }
    assert!(claimable(&d).await, "refusals do not close it");
    let log = d.stop();
    assert!(!log.contains(&first[6..]), "the admin secret is in the log");
    assert!(
        log.contains("campeer pair"),
        "the log says how to pair:\n{log}"
    );

    // A restart (a power cut) does not reopen it.
    let d = start(&dir, 2).await;
    assert!(!claimable(&d).await, "a restart reopened the claim window");
    assert_eq!(claim(&d, "").await.0, 409);
    d.stop();

    // The owner with root reopens it: a new admin secret, one more window.
    keys_cmd(&state, None, &["reopen-claim"]);
    let second = admin_pair(&state);
    assert_ne!(second, first, "reopening gives the admin key a new secret");
    let d = start(&dir, 3).await;
    assert!(
        claimable(&d).await,
        "reopen-claim opens the next start's window"
    );
    // A key added by other means closes it at once.
    keys_cmd(&state, None, &["add", "phone", "--role", "view"]);
    d.wait_log("access keys changed; reloaded").await;
    assert!(!claimable(&d).await, "keys add left the window open");
    assert_eq!(claim(&d, "").await.0, 409);
    d.stop();

    // Reopened again (after revoking the other key), the claim is taken
    // once, from the local network, and hands over the new secret.
    keys_cmd(&state, None, &["revoke", "phone"]);
    keys_cmd(&state, None, &["reopen-claim"]);
    let third = admin_pair(&state);
    let d = start(&dir, 4).await;
    let (s, body) = claim(&d, "").await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["pair"], third.as_str());
    assert_eq!(claim(&d, "").await.0, 409, "only once");
    assert!(!claimable(&d).await);
    d.stop();

    // Claimed: later starts never offer it.
    let d = start(&dir, 5).await;
    assert!(!claimable(&d).await);
    assert_eq!(claim(&d, "").await.0, 409);
    let log = d.stop();
    for secret in [&first, &second, &third] {
        assert!(!log.contains(&secret[6..]), "a secret in the log");
    }
}

/// A claim that cannot be recorded is refused and hands out nothing: the
/// state directory is made read-only after the window opened. (Root
/// writes anyway; then this says so and checks nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_claim_hands_out_nothing() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("SKIPPED: root writes to a read-only directory");
        return;
    }
    let dir = TempDir::new("claim-ro");
    let state = dir.0.join("state");
    let d = start(&dir, 1).await;
    assert!(claimable(&d).await);
    let admin = admin_pair(&state);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let (s, body) = claim(&d, "").await;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(s, 503, "{body}");
    assert!(!body.contains(&admin[6..]), "{body}");
    // Once the store can be written again, the owner may still claim.
    let (s, body) = claim(&d, "").await;
    assert_eq!(s, 200, "{body}");
    d.stop();
}
