//! WHEP against the real daemon: `campeer view --whep` pulls stamped frames
//! from `/whep`; a missing or wrong bearer gets 401; the session limit
//! (`max_sessions = 1`) holds for WHEP sessions, `DELETE` frees the slot, and
//! so does a session that never connects (connect timeout); malformed
//! requests get their 4xx with a message. The Chromium test with a
//! third-party WHEP client is in tests/browser.rs.

mod common;

use common::{free_port, TempDir, BIN};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICE: &str = "whepcam";
const SECRET: &str = "0123456789abcdef-phone";

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    dir: TempDir,
    addr: SocketAddr,
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
async fn start_daemon() -> Daemon {
    let dir = TempDir::new("whep");
    let (mqtt, http) = (free_port(), free_port());
    let config = format!(
        "device_id = \"{DEVICE}\"\n\
         [video]\nsource = \"test\"\nwidth = 320\nheight = 240\nfps = 15\n\
         [webrtc]\nmax_sessions = 1\nconnect_timeout_secs = 4\n\
         [broker]\nembedded = true\nlisten = \"127.0.0.1:{mqtt}\"\nws_listen = \"\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n\
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
        .args(["--stats-interval", "0"])
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("start campeer");
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().expect("addr");
    let d = Daemon {
        child,
        log,
        dir,
        addr,
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
    d
}

fn token() -> String {
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
    let d = start_daemon().await;
    let secret = d.dir.0.join("secret");
    let secret = secret.to_str().expect("path");
    let token = token();

    // The project's own client pulls stamped frames with the key.
    let r = view_whep(
        &d,
        &[
            "--key",
            "phone",
            "--secret-file",
            secret,
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

    // Missing and wrong tokens.
    let (status, head, body) = post(&d, None, &dead_offer()).await;
    assert_eq!(status, 401, "{body}");
    assert!(header(&head, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    let wrong = format!(
        "phone:{}",
        campeer::signaling::auth::key_password(b"not-the-secret", DEVICE)
    );
    assert_eq!(post(&d, Some(&wrong), &dead_offer()).await.0, 401);
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
            "--key",
            "phone",
            "--secret-file",
            secret,
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
    // and frees the slot and its resource.
    let (s, head, body) = post(&d, Some(&token), &dead_offer()).await;
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
}
