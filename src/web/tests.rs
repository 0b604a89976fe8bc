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
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
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
        ice_servers: vec![PageIceServer {
            urls: vec!["stun:stun.example.org:3478".into()],
            username: None,
            credential: None,
        }],
    }
}

async fn start() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(l, page(), async move {
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
        &format!("GET /index.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    let r = get(addr, "/config.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let back: PageConfig = serde_json::from_slice(&r.body).expect("config.json parses");
    assert_eq!(back, page());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["ws_url"], serde_json::Value::Null);
    assert_eq!(v["ice_servers"][0]["urls"][0], "stun:stun.example.org:3478");
    assert!(v["ice_servers"][0].get("username").is_none());

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
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    let r = request(
        addr,
        "HEAD /config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
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
