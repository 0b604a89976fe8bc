//! Snapshots (`GET /snapshot.jpg` and the `video.snapshot` data-channel
//! method) from a real daemon streaming the 720p test pattern: the bearer
//! check (a token from `campeer keys token add`, not the MQTT password), the JPEG's size, and its frame stamp (docs/protocol.md#measuring-latency-the-frame-stamp)
//! being recent.

mod common;

use base64::Engine as _;
use campeer::signaling::auth::key_password;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICE: &str = "cam-snap";
const SECRET: &str = "0123456789abcdef-phone";

/// One request on a fresh connection: (status, head, body).
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String, Vec<u8>) {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

/// Decodes `jpeg` and checks its size and that its stamp was written less
/// than two seconds ago.
fn check_jpeg(jpeg: &[u8], want: (u32, u32), stamped: bool) {
    let (w, h, luma) = campeer::snapshot::decode_luma(jpeg).expect("a JPEG");
    assert_eq!((w, h), want);
    if stamped {
        let (_, ms) = campeer::media::stamp::read_stamp(&luma, w as usize, w, h)
            .expect("the frame stamp reads");
        let now = campeer::clock::stamp_ms(campeer::clock::monotonic_us());
        let age = now.wrapping_sub(ms);
        eprintln!("snapshot {w}x{h}, {} bytes, stamp {age} ms old", jpeg.len());
        assert!(age < 2000, "stamp is {age} ms old");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_over_http_and_the_data_channel() {
    let dir = TempDir::new("snap");
    let broker = Broker::start();
    let cfg = dir.0.join("campeer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[video]\nsource = \"test\"\nwidth = 1280\nheight = 720\nfps = 15\n\n\
             [http]\nlisten = \"{PAGE_ANY_PORT}\"\n\n\
             [[access.keys]]\nid = \"phone\"\nsecret = \"{SECRET}\"\nrole = \"view\"\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(
        &broker,
        DEVICE,
        &["--signed", "--config", &cfg.to_string_lossy()],
    )
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], d.page_port().await));
    // A token of its own for the key (view only, revocable alone).
    let token = keys_cmd(&d.state_dir(), Some(&cfg), &["token", "add", "phone"]);
    let good = format!("Bearer {}", token.trim());
    assert!(
        d.wait_log(
            "WHEP/snapshot tokens changed; reloaded",
            1,
            Duration::from_secs(10)
        )
        .await,
        "the daemon never took the token"
    );

    // No bearer, the key's MQTT password (no snapshot credential any
    // more), a made-up token: 401, no picture.
    let password = format!("Bearer phone:{}", key_password(SECRET.as_bytes(), DEVICE));
    let made_up = format!("Bearer 0123456789abcdef.{}", "A".repeat(43));
    for auth in [None, Some(password.as_str()), Some(made_up.as_str())] {
        let (status, _, body) = get(addr, "/snapshot.jpg", auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(!body.starts_with(&[0xFF, 0xD8]));
    }

    // Full size: the stamp is readable and recent (nobody watches, so this
    // also shows snapshots work while the encoder idles).
    // 503 (with Retry-After) until the camera's first frame.
    let mut tries = 0;
    let (status, head, body) = loop {
        let r = get(addr, "/snapshot.jpg", Some(&good)).await;
        tries += 1;
        if r.0 != 503 || tries == 50 {
            break r;
        }
        assert!(
            r.1.to_ascii_lowercase().contains("retry-after: 1"),
            "{}",
            r.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{head}\n{}", d.log_text());
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: image/jpeg"),
        "{head}"
    );
    check_jpeg(&body, (1280, 720), true);

    let (status, _, body) = get(addr, "/snapshot.jpg?width=640", Some(&good)).await;
    assert_eq!(status, 200);
    check_jpeg(&body, (640, 360), false);

    for bad in ["?width=0", "?width=1281", "?width=abc", "?height=10"] {
        let (status, _, _) = get(addr, &format!("/snapshot.jpg{bad}"), Some(&good)).await;
        assert_eq!(status, 400, "{bad}");
    }

    // The data channel: video.snapshot at 320 pixels wide.
    let key = dir.0.join("phone.key");
    std::fs::write(&key, format!("{SECRET}\n")).unwrap();
    let r = view(
        &broker,
        DEVICE,
        &[
            "--no-video",
            "--key",
            "phone",
            "--secret-file",
            &key.to_string_lossy(),
            "--role",
            "view",
            "--call",
            "video.snapshot",
            r#"{"width":320}"#,
            "--call",
            "video.snapshot",
            r#"{"width":3}"#,
        ],
    )
    .await;
    let result = &r["calls"][0]["response"]["result"];
    assert_eq!(result["mime"], "image/jpeg", "{r}");
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(320), Some(180)),
        "{r}"
    );
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(result["data"].as_str().expect("data"))
        .expect("base64");
    check_jpeg(&jpeg, (320, 180), false);
    assert_eq!(r["calls"][1]["response"]["error"]["code"], -32602, "{r}");
}
