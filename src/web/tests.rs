//! The HTTP server over a real socket, with hand-written requests.

use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn request(addr: std::net::SocketAddr, raw: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Reply {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn page() -> PageConfig {
    PageConfig {
        device_id: "cam1".into(),
        prefix: "home/cams".into(),
        ws_url: None,
        ws_port: Some(9001),
        ws_path: "/mqtt".into(),
        auth: "signed".into(),
        ice_servers: vec![
            PageIceServer {
                urls: vec!["stun:stun.example.org:3478".into()],
                username: None,
                credential: None,
            },
            PageIceServer {
                urls: vec!["turn:turn.example.org:3478".into()],
                username: Some("turnuser".into()),
                credential: Some("turnsecret".into()),
            },
        ],
        own_broker: true,
        claimable: false,
        relay_origin: None,
    }
}

async fn start() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    start_with(page(), None, Hooks::default()).await
}

async fn start_with(
    page: PageConfig,
    mqtt: Option<SocketAddr>,
    hooks: Hooks,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(l, page, mqtt, hooks, async move {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

#[tokio::test]
async fn serves_the_page_config_and_health() {
    let (addr, stop, task) = start().await;

    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(r.header("content-security-policy").is_some());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.contains("<html"), "{html}");
    let etag = r.header("etag").expect("an ETag").to_owned();

    // Same ETag: 304, no body.
    let r = request(
        addr,
        &format!("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    let r = get(addr, "/config.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let back: PageConfig = serde_json::from_slice(&r.body).expect("config.json parses");
    let mut want = page();
    want.ice_servers.truncate(1);
    assert_eq!(back, want);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["ws_url"], serde_json::Value::Null);
    assert_eq!(v["ice_servers"][0]["urls"][0], "stun:stun.example.org:3478");
    assert_eq!(v["ice_servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["own_broker"], true);
    assert_eq!(v["claimable"], false);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        !text.contains("turnsecret") && !text.contains("turnuser") && !text.contains("turn:"),
        "{text}"
    );

    let r = get(addr, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");

    // Every embedded file is served with its own type.
    for a in assets::ASSETS {
        let r = get(addr, &format!("/{}", a.path)).await;
        assert_eq!(r.status, 200, "{}", a.path);
        assert_eq!(r.header("content-type"), Some(a.content_type), "{}", a.path);
        assert_eq!(r.body, a.body, "{}", a.path);
    }

    let _ = stop.send(());
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after shutdown");
    assert!(res.expect("no panic").is_ok());
}

#[tokio::test]
async fn bad_requests_get_errors_not_files() {
    let (addr, stop, _task) = start().await;
    for path in [
        "/nope",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "//etc/passwd",
        "/index.html/",
        "/config.json/x",
        "/%00",
        "/a%ZZb",
        "/src/main.ts",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = request(
        addr,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = get(addr, "/claim").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));

    let r = request(
        addr,
        "HEAD /config.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.header("content-length").is_some_and(|n| n != "0"));

    // Garbage instead of HTTP: the connection is answered or closed, the server lives on.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(b"\x00\x01\x02 not http at all\r\n\r\n").await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    let _ = stop.send(());
}

#[test]
fn defaults_point_at_the_embedded_broker() {
    let d = PageConfig::default();
    assert_eq!(d.prefix, "campeer");
    assert_eq!(d.ws_path, "/mqtt");
    assert_eq!(d.auth, "open");
    assert!(d.ws_url.is_none());
}

#[tokio::test]
async fn only_the_device_names_are_served() {
    let (addr, _stop, _task) = start().await;
    for host in [
        "127.0.0.1",
        "localhost:8080",
        "cam1",
        "cam1.local",
        "[::1]:80",
        "10.9.8.7",
    ] {
        let r = request(
            addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 200, "{host}");
    }
    let r = request(
        addr,
        "GET /config.json HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 421);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("evil.example") && text.contains("http.hosts"),
        "{text}"
    );
    let r = request(addr, "GET /config.json HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn configured_host_names_are_served() {
    let hooks = Hooks {
        hosts: vec!["cam.example.org".into()],
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), None, hooks).await;
    let r = request(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: CAM.example.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
}

fn get_with(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn ice_json_needs_a_key_unless_open() {
    let hooks = Hooks {
        check_key: Arc::new(|id, pw| id == "phone" && pw == "right"),
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), None, hooks).await;
    for auth in [
        "",
        "Authorization: Bearer phone:wrong\r\n",
        "Authorization: Bearer phone\r\n",
        "Authorization: Basic cGhvbmU6cmlnaHQ=\r\n",
        "Authorization: Bearer other:right\r\n",
    ] {
        let r = request(addr, &get_with("/ice.json", auth)).await;
        assert_eq!(r.status, 401, "{auth}");
        assert!(r.header("www-authenticate").is_some());
        assert!(!String::from_utf8_lossy(&r.body).contains("turnsecret"));
    }
    let r = request(
        addr,
        &get_with("/ice.json", "Authorization: Bearer phone:right\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["ice_servers"][1]["username"], "turnuser");
    assert_eq!(v["ice_servers"][1]["credential"], "turnsecret");
    assert_eq!(v["ice_servers"][0]["urls"][0], "stun:stun.example.org:3478");

    // An open device gives them to anyone who can load the page.
    let mut open = page();
    open.auth = "open".into();
    let (addr, _stop, _task) = start_with(open, None, Hooks::default()).await;
    let r = get(addr, "/ice.json").await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("turnsecret"));
}

fn post_claim(content_type: &str, origin: &str, body: &str) -> String {
    format!(
        "POST /claim HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{content_type}{origin}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn claim_answers_json_only_from_allowed_origins() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let open = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let hooks = Hooks {
        claim: {
            let (open, calls) = (open.clone(), calls.clone());
            Arc::new(move |ip: IpAddr| {
                calls.fetch_add(1, Ordering::SeqCst);
                if !ip.is_loopback() {
                    ClaimOutcome::Refused
                } else if open.swap(false, Ordering::SeqCst) {
                    ClaimOutcome::Claimed {
                        pair: "owner.s3cret".into(),
                    }
                } else {
                    ClaimOutcome::Closed
                }
            })
        },
        claimable: {
            let open = open.clone();
            Arc::new(move || open.load(Ordering::SeqCst))
        },
        allowed_origins: vec!["https://ha.example:8123".into()],
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), None, hooks).await;
    let json = "Content-Type: application/json\r\n";
    let claimable = |r: Reply| {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        v["claimable"].as_bool().expect("a bool")
    };
    assert!(claimable(get(addr, "/config.json").await));

    // Refused before the callback: not JSON, a foreign or null origin, a big body.
    let r = request(addr, &post_claim("Content-Type: text/plain\r\n", "", "{}")).await;
    assert_eq!(r.status, 415);
    let r = request(addr, &post_claim("", "", "")).await;
    assert_eq!(r.status, 415);
    for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
        let r = request(
            addr,
            &post_claim(json, &format!("Origin: {origin}\r\n"), "{}"),
        )
        .await;
        assert_eq!(r.status, 403, "{origin}");
    }
    let r = request(addr, &post_claim(json, "", &"x".repeat(5000))).await;
    assert_eq!(r.status, 413);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // The page's own origin claims it once.
    let r = request(
        addr,
        &post_claim(json, "Origin: http://127.0.0.1:8080\r\n", "{}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v, serde_json::json!({"pair": "owner.s3cret"}));
    assert!(!claimable(get(addr, "/config.json").await));

    // Then it is closed, for a listed origin as for any.
    let r = request(
        addr,
        &post_claim(
            "Content-Type: application/json; charset=utf-8\r\n",
            "Origin: https://ha.example:8123\r\n",
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A stand-in broker: echoes every byte back.
async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Sends a WebSocket handshake for `path`; returns the status code and the
/// stream (positioned after the response head).
async fn ws_open(addr: SocketAddr, path: &str, host: &str, extra: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut c = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut c))
            .await
            .expect("in time")
            .expect("read");
        head.push(c[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, s)
}

fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x82, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.expect("frame header");
    let len = usize::from(h[1] & 0x7f);
    assert!(len < 126, "short frames only here");
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.expect("frame payload");
    (h[0] & 0x0f, p)
}

#[tokio::test]
async fn mqtt_websocket_only_from_allowed_origins() {
    let broker = echo_server().await;
    let (addr, _stop, _task) = start_with(page(), Some(broker), Hooks::default()).await;
    let host = format!("127.0.0.1:{}", addr.port());

    let (status, _) = ws_open(addr, "/mqtt", &host, "Origin: http://evil.example\r\n").await;
    assert_eq!(status, 403);
    let (status, _) = ws_open(addr, "/mqtt", &host, "Origin: http://127.0.0.1:1\r\n").await;
    assert_eq!(status, 403);
    let (status, _) = ws_open(addr, "/mqtt", "evil.example", "").await;
    assert_eq!(status, 421);
    let (status, _) = ws_open(addr, "/other", &host, "").await;
    assert_eq!(status, 404);

    let own = format!("Origin: http://{host}\r\n");
    let (status, mut s) = ws_open(addr, "/mqtt", &host, &own).await;
    assert_eq!(status, 101);
    s.write_all(&ws_frame(b"\x10hello")).await.expect("send");
    let (op, p) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut s))
        .await
        .expect("echo in time");
    assert_eq!((op, &p[..]), (2, &b"\x10hello"[..]));

    // No Origin: a program, not a browser.
    let (status, _) = ws_open(addr, "/mqtt", &host, "").await;
    assert_eq!(status, 101);

    // Without a broker to bridge to, a clear 503.
    let (addr, _stop, _task) = start_with(page(), None, Hooks::default()).await;
    let (status, _) = ws_open(addr, "/mqtt", "127.0.0.1", "").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn the_extra_websocket_listener_takes_the_page_origin() {
    let broker = echo_server().await;
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ws_addr = ws.local_addr().expect("addr");
    let hooks = Hooks {
        ws_listener: Some(ws),
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), Some(broker), hooks).await;
    let host = format!("127.0.0.1:{}", ws_addr.port());
    let page_origin = format!("Origin: http://127.0.0.1:{}\r\n", addr.port());
    let (status, _) = ws_open(ws_addr, "/", &host, &page_origin).await;
    assert_eq!(status, 101);
    let (status, _) = ws_open(ws_addr, "/", &host, &format!("Origin: http://{host}\r\n")).await;
    assert_eq!(status, 403);
    let (status, _) = ws_open(ws_addr, "/", "evil.example", "").await;
    assert_eq!(status, 421);
}

/// Whether the server closes `s` within `within` (EOF or reset).
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_over_the_caps_make_room_or_are_closed() {
    let hooks = Hooks {
        limits: Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        },
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), None, hooks).await;
    let mut a1 = TcpStream::connect(addr).await.expect("connect");
    let mut a2 = TcpStream::connect(addr).await.expect("connect");
    let mut a3 = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_by_server(&mut a3, Duration::from_secs(5)).await);
    // Another address still gets in (127.0.0.2 is loopback too).
    let from = |ip: &str| {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{ip}:0").parse().expect("addr"))
            .expect("bind");
        sock.connect(addr)
    };
    let mut b = from("127.0.0.2").await.expect("connect");
    b.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut reply = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), b.read_exact(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&reply, b"HTTP/1.1 200");
    // Three are open (b is kept alive): a third address takes the place
    // of the one that has waited longest without a request, a1.
    let mut c = from("127.0.0.3").await.expect("connect");
    assert!(closed_by_server(&mut a1, Duration::from_secs(5)).await);
    assert!(!closed_by_server(&mut c, Duration::from_millis(200)).await);
    assert!(!closed_by_server(&mut a2, Duration::from_millis(50)).await);
    // Then a2 (accepted before b's request was answered).
    let _d = from("127.0.0.4").await.expect("connect");
    assert!(closed_by_server(&mut a2, Duration::from_secs(5)).await);
    drop((b, c));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn slow_heads_and_silent_websockets_are_dropped() {
    let broker = echo_server().await;
    let hooks = Hooks {
        limits: Limits {
            header_timeout: Duration::from_millis(300),
            ws: WsTimeouts {
                ping_after: Duration::from_millis(100),
                close_after: Duration::from_millis(500),
            },
            ..Limits::default()
        },
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), Some(broker), hooks).await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n")
        .await
        .expect("write");
    assert!(closed_by_server(&mut slow, Duration::from_secs(5)).await);

    // A WebSocket that never answers pings: pinged, then closed.
    let (status, mut s) = ws_open(addr, "/mqtt", "127.0.0.1", "").await;
    assert_eq!(status, 101);
    let (op, _) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut s))
        .await
        .expect("a ping in time");
    assert_eq!(op, 9, "a ping");
    assert!(closed_by_server(&mut s, Duration::from_secs(5)).await);
}

#[test]
fn the_csp_lets_the_page_call_only_its_relay() {
    assert_eq!(
        origin_of("http://relay.example:8088/janus").as_deref(),
        Some("http://relay.example:8088")
    );
    assert_eq!(
        origin_of("https://relay.example/janus").as_deref(),
        Some("https://relay.example")
    );
    assert_eq!(origin_of("not a url"), None);
    let with = csp(None, Some("http://relay.example:8088"));
    assert!(
        with.contains("connect-src 'self' http://relay.example:8088;"),
        "{with}"
    );
    assert!(
        !csp(None, None).contains("http"),
        "no relay, no other origin"
    );
    assert!(csp(None, None).contains("connect-src 'self';"));
}

#[test]
fn the_csp_names_the_broker_websocket_and_no_other() {
    let own = |ws_port, host| {
        let p = PageConfig {
            ws_port,
            ..PageConfig::default()
        };
        broker_source(&p, host)
    };
    // Own broker behind /mqtt on the page's own origin: 'self' covers it.
    assert_eq!(own(None, Some("cam1:8080")), None);
    // Own broker on another port of the page's host, as the browser names it.
    assert_eq!(
        own(Some(9001), Some("CAM1.local:8080")).as_deref(),
        Some("ws://cam1.local:9001")
    );
    assert_eq!(
        own(Some(9001), Some("[::1]:8080")).as_deref(),
        Some("ws://[::1]:9001")
    );
    assert_eq!(own(Some(9001), None), None);
    // A configured broker URL: its origin, port always written.
    let ext = |url: &str| {
        let p = PageConfig {
            ws_url: Some(url.into()),
            ws_port: Some(9001),
            ..PageConfig::default()
        };
        broker_source(&p, Some("cam1:8080"))
    };
    assert_eq!(
        ext("ws://broker.lan/mqtt").as_deref(),
        Some("ws://broker.lan:80")
    );
    assert_eq!(
        ext("wss://Broker.lan:8884/mqtt").as_deref(),
        Some("wss://broker.lan:8884")
    );
    assert_eq!(
        ext("ws://[fe80::1]:9001").as_deref(),
        Some("ws://[fe80::1]:9001")
    );
    let policy = csp(Some("wss://broker.lan:8884"), Some("https://relay.example"));
    let connect = policy
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("connect-src"))
        .expect("a connect-src");
    assert_eq!(
        connect,
        "connect-src 'self' wss://broker.lan:8884 https://relay.example"
    );
    for bare in ["ws:", "wss:"] {
        assert!(!connect.split(' ').any(|s| s == bare), "{connect}");
    }
}

#[tokio::test]
async fn the_page_header_names_its_broker_websocket() {
    let (addr, _stop, _task) = start_with(page(), None, Hooks::default()).await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    let csp = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-security-policy"))
        .map(|(_, v)| v.clone())
        .expect("a CSP on the page");
    assert!(
        csp.contains("connect-src 'self' ws://127.0.0.1:9001;"),
        "{csp}"
    );
}

fn post_bye(path: &str, content_type: &str, origin: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{content_type}{origin}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_page_going_away_says_bye_by_post() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let hooks = Hooks {
        bye: Some(tx),
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), None, hooks).await;
    let json = "Content-Type: application/json\r\n";
    let own = "Origin: http://127.0.0.1:8080\r\n";
    let bye = r#"{"type":"bye","mac":"AAAA"}"#;
    let sid = "abcdefgh12345678";
    let path = format!("/bye/{sid}");

    // Refused, and nothing reaches the daemon: not JSON, a foreign origin,
    // a bad session id, another message, a big body, another method.
    let refused = [
        (
            post_bye(&path, "Content-Type: text/plain\r\n", own, bye),
            415,
        ),
        (
            post_bye(&path, json, "Origin: http://evil.example\r\n", bye),
            403,
        ),
        (post_bye("/bye/a/b", json, own, bye), 404),
        (post_bye("/bye/", json, own, bye), 404),
        (
            post_bye(&path, json, own, r#"{"type":"offer","sdp":"v=0"}"#),
            400,
        ),
        (post_bye(&path, json, own, "not json"), 400),
        (post_bye(&path, json, own, &"x".repeat(5000)), 413),
        (
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"),
            405,
        ),
    ];
    for (raw, status) in &refused {
        let r = request(addr, raw).await;
        assert_eq!(r.status, *status, "{raw}");
    }
    assert!(rx.try_recv().is_err(), "a refused bye reached the daemon");

    // The page's own bye goes to the daemon as sent, with its session id.
    let r = request(addr, &post_bye(&path, json, own, bye)).await;
    assert_eq!(r.status, 202);
    let (got_sid, got) = rx.try_recv().expect("the bye reached the daemon");
    assert_eq!(got_sid, sid);
    assert_eq!(got, bye.as_bytes());

    // A full queue is answered 503 (the MQTT bye may still arrive).
    for _ in 0..2 {
        let r = request(addr, &post_bye(&path, json, own, bye)).await;
        assert_eq!(r.status, 202);
    }
    let r = request(addr, &post_bye(&path, json, own, bye)).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn without_a_bye_hook_the_route_is_not_there() {
    let (addr, _stop, _task) = start().await;
    let r = request(
        addr,
        &post_bye(
            "/bye/abcdefgh12345678",
            "Content-Type: application/json\r\n",
            "",
            r#"{"type":"bye"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn wrong_bearers_are_rate_limited_per_address_across_paths() {
    let hooks = Hooks {
        check_key: Arc::new(|id, pw| id == "phone" && pw == "right"),
        check_token: Arc::new(|t| (t == "0123456789abcdef.tok").then(|| "phone".into())),
        ..Hooks::default()
    };
    let (addr, _stop, _task) = start_with(page(), None, hooks).await;
    // The snapshot takes tokens only: the MQTT password is refused there.
    let r = request(
        addr,
        &get_with("/snapshot.jpg", "Authorization: Bearer phone:right\r\n"),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request(
        addr,
        &get_with(
            "/snapshot.jpg",
            "Authorization: Bearer 0123456789abcdef.tok\r\n",
        ),
    )
    .await;
    assert_eq!(r.status, 404, "past the token: this device has no video");
    for i in 0..9 {
        let path = if i % 2 == 0 {
            "/ice.json"
        } else {
            "/snapshot.jpg"
        };
        let r = request(
            addr,
            &get_with(path, "Authorization: Bearer guess:wrong\r\n"),
        )
        .await;
        assert_eq!(r.status, 401, "failure {i}");
    }
    // Ten failures in all (one above): now even the right bearer waits.
    let r = request(
        addr,
        &get_with("/ice.json", "Authorization: Bearer phone:right\r\n"),
    )
    .await;
    assert_eq!(r.status, 429);
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&secs), "{secs}");
    assert!(!String::from_utf8_lossy(&r.body).contains("turnsecret"));
}

#[tokio::test]
async fn claims_behind_proxies_use_only_trusted_forwarded_addresses() {
    use std::sync::Mutex;
    let seen = Arc::new(Mutex::new(Vec::<IpAddr>::new()));
    let hooks = |trusted: Vec<String>, unrecorded: bool| Hooks {
        claim: {
            let seen = seen.clone();
            Arc::new(move |ip: IpAddr| {
                seen.lock().expect("lock").push(ip);
                if unrecorded {
                    ClaimOutcome::Unavailable
                } else if crate::keystore::is_local_address(ip) {
                    ClaimOutcome::Claimed {
                        pair: "admin.s3cret".into(),
                    }
                } else {
                    ClaimOutcome::Refused
                }
            })
        },
        trusted_proxies: trusted,
        ..Hooks::default()
    };
    let json = "Content-Type: application/json\r\nOrigin: http://127.0.0.1:8080\r\n";
    let with = |h: &str| post_claim(json, h, "{}");
    // No proxy trusted: any forwarded header refuses the claim before it is tried.
    let (addr, _stop, _task) = start_with(page(), None, hooks(Vec::new(), false)).await;
    for h in [
        "X-Forwarded-For: 192.168.1.4\r\n",
        "Forwarded: for=192.168.1.4\r\n",
        "X-Real-IP: 192.168.1.4\r\n",
    ] {
        let r = request(addr, &with(h)).await;
        assert_eq!(r.status, 403, "{h}");
    }
    assert!(seen.lock().expect("lock").is_empty());
    // Loopback trusted (a proxy on the same host): the Internet client it
    // forwards is not local; a LAN client it forwards is.
    let trusted = vec!["127.0.0.0/8".to_owned()];
    let (addr, _stop2, _task2) = start_with(page(), None, hooks(trusted.clone(), false)).await;
    let r = request(addr, &with("X-Forwarded-For: 192.168.1.4, 203.0.113.9\r\n")).await;
    assert_eq!(r.status, 403);
    let r = request(addr, &with("X-Forwarded-For: 192.168.1.4\r\n")).await;
    assert_eq!(r.status, 200);
    let ips: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(ips, ["203.0.113.9", "192.168.1.4"]);
    // A claim that cannot be recorded hands out nothing.
    let (addr, _stop3, _task3) = start_with(page(), None, hooks(trusted, true)).await;
    let r = request(addr, &with("")).await;
    assert_eq!(r.status, 503);
    assert!(!String::from_utf8_lossy(&r.body).contains("s3cret"));
}
