//! The page server's guards, against the real daemon: connection caps
//! under a flood of idle sockets, the header deadline against a slow-loris
//! client, the Host and Origin checks, and the TURN credentials kept out of
//! `config.json`.

mod common;

use common::{free_port, wait_page_port, ChildDaemon, TempDir, BIN, PAGE_ANY_PORT};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DEVICE: &str = "guardcam";
/// The daemon's header deadline (web::Limits::default).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_SOCKETS: usize = 2000;
/// http.max_connections_per_ip's default.
const PER_IP: usize = 16;

/// `campeer run` with its own broker (the bridge's TCP target), a signed
/// device (so ice.json needs a key), a TURN server with credentials.
async fn start_daemon() -> (ChildDaemon, SocketAddr) {
    let dir = TempDir::new("http-guard");
    // The own broker does not report a port it bound: a picked one. The
    // page server binds any port and logs it.
    let mqtt = free_port();
    let config = format!(
        "device_id = \"{DEVICE}\"\n\
         [video]\nsource = \"none\"\n\
         [broker]\nembedded = true\nlisten = \"127.0.0.1:{mqtt}\"\nws_listen = \"\"\n\
         [http]\nlisten = \"{PAGE_ANY_PORT}\"\n\
         [[webrtc.ice_servers]]\nurls = \"stun:stun.example.org:3478\"\n\
         [[webrtc.ice_servers]]\nurls = \"turn:turn.example.org:3478\"\nusername = \"turnuser\"\ncredential = \"turnsecret-xyz\"\n\
         [[access.keys]]\nid = \"phone\"\nsecret = \"0123456789abcdef-phone\"\nrole = \"control\"\n"
    );
    let path = dir.0.join("campeer.toml");
    std::fs::write(&path, config).expect("write config");
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
    let d = ChildDaemon {
        child,
        log,
        dir: Some(dir),
    };
    let http = wait_page_port(|| d.log_text(), Duration::from_secs(20)).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    let t = Instant::now();
    loop {
        if let Some((200, _)) = http_get(addr, "/healthz", "127.0.0.1").await {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the page server never answered; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (d, addr)
}

/// A connection from `ip` (any 127.x address is this machine).
async fn connect_from(ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{ip}:0").parse().expect("addr"))?;
    s.connect(to).await
}

/// One request on a fresh connection: (status, body).
async fn http_request(addr: SocketAddr, raw: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(raw.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn http_get(addr: SocketAddr, path: &str, host: &str) -> Option<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A WebSocket handshake on /mqtt: the status and the open stream.
async fn ws_open(addr: SocketAddr, origin: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\nOrigin: {origin}\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut c = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut c))
            .await
            .expect("a reply in time")
            .expect("read");
        head.push(c[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (status, s)
}

/// MQTT CONNECT over the WebSocket; returns the broker's first packet.
async fn mqtt_connect(s: &mut TcpStream) -> Vec<u8> {
    let connect = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 3, b'w', b's', b'1',
    ];
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x82, 0x80 | connect.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(connect.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.expect("send CONNECT");
    let mut h = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
        .await
        .expect("a frame in time")
        .expect("frame header");
    assert_eq!(h[0] & 0x0f, 2, "a binary frame");
    let mut p = vec![0u8; usize::from(h[1] & 0x7f)];
    s.read_exact(&mut p).await.expect("frame payload");
    p
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Raises this process's open-file limit to its hard limit.
fn raise_nofile(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = r.rlim_max.min(want.max(r.rlim_cur));
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    assert!(
        r.rlim_cur >= want,
        "need {want} open files, the hard limit is {}",
        r.rlim_max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_server_guards_itself() {
    raise_nofile(IDLE_SOCKETS as u64 + 256);
    let (daemon, addr) = start_daemon().await;
    let own_origin = format!("http://127.0.0.1:{}", addr.port());

    // 2,000 idle sockets from another address.
    let mut idle = Vec::with_capacity(IDLE_SOCKETS);
    for _ in 0..IDLE_SOCKETS {
        idle.push(connect_from("127.0.0.2", addr).await.expect("connect"));
    }

    // The page and MQTT over WebSocket still work.
    let (status, body) = http_get(addr, "/", "127.0.0.1")
        .await
        .expect("the page under a flood");
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    let (status, mut ws) = ws_open(addr, &own_origin).await;
    assert_eq!(status, 101, "the page's own origin opens the WebSocket");
    let connack = mqtt_connect(&mut ws).await;
    assert_eq!(connack.first(), Some(&0x20), "a CONNACK: {connack:?}");
    drop(ws);

    // All but the per-address allowance were closed at once.
    let mut closed = 0;
    for s in &mut idle {
        if closed_by_server(s, Duration::from_millis(20)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= IDLE_SOCKETS - PER_IP,
        "only {closed} of {IDLE_SOCKETS} idle sockets were closed"
    );
    drop(idle);

    // A foreign Host (DNS rebinding) is refused.
    let (status, body) = http_get(addr, "/config.json", "evil.example")
        .await
        .expect("a reply");
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    assert_eq!(
        http_get(addr, "/healthz", &format!("{DEVICE}.local"))
            .await
            .map(|r| r.0),
        Some(200)
    );

    // A foreign Origin may not open the WebSocket.
    let (status, _) = ws_open(addr, "http://evil.example").await;
    assert_eq!(status, 403);

    // config.json has the STUN server and no TURN credential.
    let (status, body) = http_get(addr, "/config.json", "127.0.0.1")
        .await
        .expect("config.json");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ice_servers"][0]["urls"][0], "stun:stun.example.org:3478");
    assert_eq!(v["own_broker"], true);
    assert_eq!(v["claimable"], false);
    for secret in ["turnsecret-xyz", "turnuser", "credential"] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }

    // ice.json needs the bearer (this daemon accepts no key yet: the check
    // is wired by the daemon's key store).
    for auth in ["", "Authorization: Bearer phone:not-the-password\r\n"] {
        let (status, body) = http_request(
            addr,
            &format!(
                "GET /ice.json HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
            ),
        )
        .await
        .expect("a reply");
        assert_eq!(status, 401, "{auth}: {body}");
        assert!(!body.contains("turnsecret-xyz"));
    }

    // A slow-loris client, trickling a header line a second and never
    // ending its head, is cut off after the header deadline.
    let mut slow = connect_from("127.0.0.3", addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    let mut cut = false;
    while t.elapsed() < HEADER_TIMEOUT * 3 {
        if closed_by_server(&mut slow, Duration::from_secs(1)).await {
            cut = true;
            break;
        }
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut, "a never-ending head kept its connection");
    eprintln!("slow-loris connection closed after {:?}", t.elapsed());
    drop(daemon);
}

/// Idle sockets in the crowd, and how many addresses they come from.
const CROWD: usize = 1500;
const CROWD_HOSTS: usize = 30;

/// 1,500 idle sockets from 30 addresses (127.0.0.2–31, 50 each) fill the
/// global cap (128) without tripping any per-address cap (16): the page is
/// still served, because a newcomer takes the place of the connection that
/// has waited longest without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_from_many_addresses_leaves_the_page_loadable() {
    raise_nofile(CROWD as u64 + 256);
    let (daemon, addr) = start_daemon().await;
    let run = async {
        let mut crowd = Vec::with_capacity(CROWD);
        for i in 0..CROWD {
            let ip = format!("127.0.0.{}", 2 + i % CROWD_HOSTS);
            crowd.push(connect_from(&ip, addr).await.expect("connect"));
        }
        // Let the server take them all in (each admission may evict).
        tokio::time::sleep(Duration::from_millis(300)).await;

        let t = Instant::now();
        let (status, body) = http_get(addr, "/", "127.0.0.1")
            .await
            .expect("the page under a crowd");
        let took = t.elapsed();
        eprintln!(
            "page served under a {CROWD}-socket crowd from {CROWD_HOSTS} addresses in {took:?}"
        );
        assert_eq!(status, 200);
        assert!(body.contains("<html"), "{body}");
        assert!(took < Duration::from_secs(1), "the page took {took:?}");

        // The crowd still holds places (the cap is full of it), and most of
        // it was closed.
        let mut open = 0;
        for s in &mut crowd {
            if !closed_by_server(s, Duration::from_millis(2)).await {
                open += 1;
            }
        }
        eprintln!("{open} of {CROWD} crowd sockets still open");
        assert!(open > 0 && open <= 128, "{open} crowd sockets open");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the crowd test ran over a minute");
    drop(daemon);
}
