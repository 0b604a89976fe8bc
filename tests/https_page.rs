//! HTTPS on the page server (`http.tls_cert`, `http.tls_key`), against the
//! real daemon: a self-signed certificate made at test time, the page and
//! the MQTT WebSocket bridge fetched over TLS by a client that trusts only
//! that certificate, plain HTTP to the same port getting no HTTP answer,
//! and a key file that cannot be read named in the log.

mod common;

use common::{free_port, wait_page_port, ChildDaemon, TempDir, BIN, PAGE_ANY_PORT};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DEVICE: &str = "tlscam";
const T: Duration = Duration::from_secs(10);

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem,
/// key.pem, the certificate's DER).
fn make_cert(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key, ck.cert.der().clone())
}

/// The daemon with its page on `http` (a listen address), and the address
/// of its broker's WebSocket listener. The broker's two listeners read
/// their ports from the configuration and do not report them: picked free
/// ports.
fn start_daemon(dir: &Path, cert: &Path, key: &Path, http: &str) -> (ChildDaemon, SocketAddr) {
    let (mqtt, ws) = (free_port(), free_port());
    let config = format!(
        "device_id = \"{DEVICE}\"\n\
         [video]\nsource = \"none\"\n\
         [broker]\nembedded = true\nlisten = \"127.0.0.1:{mqtt}\"\nws_listen = \"127.0.0.1:{ws}\"\n\
         [http]\nlisten = \"{http}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [[access.keys]]\nid = \"phone\"\nsecret = \"0123456789abcdef-phone\"\nrole = \"control\"\n",
        cert.display(),
        key.display()
    );
    let path = dir.join("campeer.toml");
    std::fs::write(&path, config).expect("write config");
    let log = dir.join("daemon.log");
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
        dir: None,
    };
    (d, SocketAddr::from(([127, 0, 0, 1], ws)))
}

fn connector(trusted: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    tls: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tls.connect(name, tcp).await
}

/// Sends `raw` and reads the whole reply (the request says `Connection: close`).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, raw: &str) -> String {
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    // A TLS peer may end without close_notify after the reply: keep what came.
    let _ = tokio::time::timeout(T, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// A WebSocket handshake on /mqtt then an MQTT CONNECT without a login:
/// the broker's first packet (a CONNACK refusing it).
async fn mqtt_over_wss<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, addr: SocketAddr) -> Vec<u8> {
    s.write_all(
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut c = [0u8; 1];
        tokio::time::timeout(T, s.read_exact(&mut c))
            .await
            .expect("a reply in time")
            .expect("read");
        head.push(c[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let connect = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 3, b'w', b's', b'1',
    ];
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x82, 0x80 | connect.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(connect.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.expect("send CONNECT");
    let mut h = [0u8; 2];
    tokio::time::timeout(T, s.read_exact(&mut h))
        .await
        .expect("a frame in time")
        .expect("frame header");
    let mut p = vec![0u8; usize::from(h[1] & 0x7f)];
    s.read_exact(&mut p).await.expect("frame payload");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_websocket_are_served_over_tls_only() {
    let dir = TempDir::new("https-page");
    let (cert, key, der) = make_cert(&dir.0);
    let (daemon, ws_addr) = start_daemon(&dir.0, &cert, &key, PAGE_ANY_PORT);
    let port = wait_page_port(|| daemon.log_text(), Duration::from_secs(20)).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tls = connector(der);

    // The page over HTTPS, once the daemon is up.
    let t = Instant::now();
    let page = loop {
        if let Ok(mut s) = tls_connect(&tls, addr).await {
            let reply = exchange(&mut s, &get("/")).await;
            if !reply.is_empty() {
                break reply;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no HTTPS page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<html"), "{page}");
    let log = daemon.log_text();
    assert!(
        log.contains(&format!("https://127.0.0.1:{}/", addr.port())),
        "{log}"
    );

    // The MQTT WebSocket bridge over wss://, on the page's port and on
    // broker.ws_listen: the broker answers (and refuses a login-less CONNECT).
    for a in [addr, ws_addr] {
        let mut s = tls_connect(&tls, a).await.expect("TLS to the WebSocket");
        let connack = mqtt_over_wss(&mut s, a).await;
        assert_eq!(
            connack.first(),
            Some(&0x20),
            "a CONNACK on {a}: {connack:?}"
        );
        assert_ne!(connack.get(3), Some(&0), "a refusal without a key on {a}");
    }

    // Plain HTTP to the TLS ports gets no HTTP answer.
    for a in [addr, ws_addr] {
        let mut plain = TcpStream::connect(a).await.expect("connect");
        let reply = exchange(&mut plain, &get("/")).await;
        assert!(
            !reply.contains("HTTP/1.1"),
            "plain HTTP answered on {a}: {reply:?}"
        );
    }

    // A client that does not trust the certificate does not get through.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
    let stranger = connector(other.cert.der().clone());
    assert!(tls_connect(&stranger, addr).await.is_err());
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_key_is_named_and_nothing_is_served_in_clear() {
    let dir = TempDir::new("https-badkey");
    let (cert, _key, _) = make_cert(&dir.0);
    let missing = dir.0.join("no-such-key.pem");
    // A port of its own that the page would take, to show that nothing
    // answers there; the daemon cannot report it, as it binds nothing.
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (daemon, _) = start_daemon(&dir.0, &cert, &missing, &addr.to_string());
    let t = Instant::now();
    let log = loop {
        let log = daemon.log_text();
        if log.contains("viewer page not served") {
            break log;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no error logged:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        log.contains("http.tls_key")
            && log.contains("no-such-key.pem")
            && log.contains("cannot read"),
        "{log}"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "something listens on the page port"
    );
    drop(daemon);
}
