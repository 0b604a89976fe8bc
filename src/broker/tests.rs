use super::*;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Incoming, LastWill, MqttOptions, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn settings(open: bool, listen: Option<SocketAddr>, ws: Option<SocketAddr>) -> BrokerSettings {
    BrokerSettings {
        device_id: "cam1".into(),
        prefix: "campeer".into(),
        listen,
        ws_listen: ws,
        mosquitto: None,
        open,
        homeassistant: None,
    }
}

#[test]
fn key_password_is_the_documented_hmac() {
    // Python: base64.urlsafe_b64encode(hmac.new(secret, b"campeer-mqtt-v2\ncam1",
    // hashlib.sha256).digest()).rstrip(b"=")
    assert_eq!(
        key_password(b"0123456789abcdef0123456789abcdef", "cam1"),
        "hQ3po-A95248-sqqLBYdQkGA0KHJ7XD0CVSnak63nx0"
    );
    assert_ne!(
        key_password(b"0123456789abcdef0123456789abcdef", "cam2"),
        key_password(b"0123456789abcdef0123456789abcdef", "cam1")
    );
}

#[test]
fn password_entries_are_mosquitto_sha512() {
    let salt = [7u8; 12];
    let line = password_entry("alice", "pw", &salt);
    let (user, hash) = line.trim_end().split_once(':').expect("user:hash");
    assert_eq!(user, "alice");
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 4, "{hash}");
    assert_eq!((parts[0], parts[1]), ("", "6"));
    assert_eq!(STANDARD.decode(parts[2]).expect("salt b64"), salt);
    let mut h = Sha512::new();
    h.update(b"pw");
    h.update(salt);
    assert_eq!(
        STANDARD.decode(parts[3]).expect("hash b64"),
        h.finalize().to_vec()
    );
}

#[test]
fn key_ids_that_could_break_the_files_are_refused() {
    for ok in ["alice", "a", "phone-1", "x_", &"a".repeat(63)] {
        assert!(valid_key_id(ok), "{ok}");
    }
    for bad in [
        "",
        "Alice",
        "a b",
        "a:b",
        "a\nuser x",
        DEVICE_USER,
        "a.b",
        "_x",
        &"a".repeat(64),
    ] {
        assert!(!valid_key_id(bad), "{bad:?}");
    }
}

#[test]
fn acl_gives_viewers_status_out_and_in_only() {
    let closed = acl_text(
        "campeer/cam1",
        false,
        &[("alice", Role::View), ("bob", Role::Control)],
        None,
    );
    let want_alice = "\nuser alice\ntopic read campeer/cam1/status\ntopic read campeer/cam1/session/+/out\ntopic write campeer/cam1/session/+/in\n";
    assert!(closed.contains(want_alice), "{closed}");
    assert!(closed.contains("\nuser bob\n"), "{closed}");
    assert!(closed.contains("\nuser campeer.device\ntopic readwrite campeer/cam1/#\n"));
    // Nothing before the first user line: anonymous clients get no rights.
    let first_rule = closed
        .lines()
        .position(|l| l.starts_with("topic"))
        .expect("rules");
    let first_user = closed
        .lines()
        .position(|l| l.starts_with("user"))
        .expect("users");
    assert!(first_user < first_rule, "{closed}");

    let open = acl_text("campeer/cam1", true, &[], None);
    let anon: Vec<&str> = open
        .lines()
        .take_while(|l| !l.starts_with("user"))
        .filter(|l| l.starts_with("topic"))
        .collect();
    assert_eq!(
        anon,
        [
            "topic read campeer/cam1/status",
            "topic read campeer/cam1/session/+/out",
            "topic write campeer/cam1/session/+/in"
        ]
    );
}

#[test]
fn conf_lists_limits_and_the_loopback_listeners_last() {
    let layout = Layout {
        dir: "/run/x".into(),
        conf: "/run/x/mosquitto.conf".into(),
        passwd: "/run/x/passwd".into(),
        acl: "/run/x/acl".into(),
        owner: None,
    };
    let text = conf_text(
        &layout,
        false,
        Some("0.0.0.0:1883".parse().expect("addr")),
        loopback(40000),
        loopback(40001),
    );
    for want in [
        "allow_anonymous false\n",
        "password_file /run/x/passwd\n",
        "acl_file /run/x/acl\n",
        "persistence false\n",
        "message_size_limit 65536\n",
        "max_packet_size 66560\n",
        "retain_available true\n",
        "max_queued_messages 100\n",
        "max_queued_bytes 262144\n",
        "memory_limit 33554432\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    let lan = text.find("listener 1883 0.0.0.0").expect("LAN listener");
    let bridge = text
        .find("listener 40000 127.0.0.1\nmax_connections 64\n")
        .expect("the bridge's loopback listener");
    let device = text
        .find("listener 40001 127.0.0.1\nmax_connections 4\n")
        .expect("the device's loopback listener");
    assert!(lan < bridge && bridge < device, "{text}");
    assert_eq!(text.matches("max_connections 64\n").count(), 2);
    assert_eq!(text.matches("max_qos 1\n").count(), 3);
    assert!(!text.contains("\nuser "), "no user switch when not root");
}

#[test]
fn restarts_back_off_and_reset_after_a_stable_run() {
    let mut p = RestartPolicy::new();
    assert_eq!(p.after_exit(Duration::from_millis(10), 1.0), RESTART_MIN);
    assert_eq!(
        p.after_exit(Duration::from_millis(10), 1.0),
        RESTART_MIN * 2
    );
    assert_eq!(
        p.after_exit(Duration::from_millis(10), 0.0),
        RESTART_MIN * 2
    );
    for _ in 0..20 {
        p.after_exit(Duration::from_secs(1), 1.0);
    }
    assert_eq!(p.after_exit(Duration::from_secs(1), 1.0), RESTART_MAX);
    // A child that ran a while before dying: from the floor again.
    assert_eq!(p.after_exit(STABLE_RUN, 1.0), RESTART_MIN);
}

#[test]
fn log_lines_are_bounded_and_lose_their_timestamp() {
    let long = format!("{}\nshort\n", "x".repeat(2000));
    let mut r = io::BufReader::with_capacity(64, long.as_bytes());
    let mut out = Vec::new();
    assert_eq!(read_line_capped(&mut r, &mut out, 100).expect("read"), 2001);
    assert_eq!(out.len(), 100);
    out.clear();
    read_line_capped(&mut r, &mut out, 100).expect("read");
    assert_eq!(out, b"short\n");
    out.clear();
    assert_eq!(read_line_capped(&mut r, &mut out, 100).expect("read"), 0);

    assert_eq!(
        strip_timestamp("1795888683: Note: It is recommended"),
        "Note: It is recommended"
    );
    assert_eq!(
        strip_timestamp("Error: Address in use"),
        "Error: Address in use"
    );
    assert_eq!(strip_timestamp("Client x: y"), "Client x: y");
}

#[test]
fn a_missing_binary_names_the_package() {
    let e = find_mosquitto(Some(Path::new("/nonexistent/mosquitto"))).expect_err("missing");
    let text = e.to_string();
    assert!(
        text.contains("apt install mosquitto") && text.contains("/nonexistent/mosquitto"),
        "{text}"
    );
    let mut s = settings(true, None, None);
    s.mosquitto = Some("/nonexistent/mosquitto".into());
    let e = ManagedBroker::start(s, &[]).expect_err("missing");
    assert!(matches!(e, BrokerError::NotInstalled { .. }), "{e:?}");
}

#[test]
fn a_topic_root_that_would_break_the_acl_is_refused() {
    let mut s = settings(true, None, None);
    s.prefix = "camp eer".into();
    let e = ManagedBroker::start(s, &[]).expect_err("space");
    assert!(matches!(e, BrokerError::BadTopicRoot(_)), "{e:?}");
}

fn options(id: &str, addr: SocketAddr, login: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_max_packet_size(2 * MAX_PACKET, 2 * MAX_PACKET);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    o
}

/// Polls `el` in a task; publishes, SUBACKs and CONNACKs come out.
fn drive(
    mut el: EventLoop,
) -> (
    mpsc::UnboundedReceiver<Incoming>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(
                    i @ (Incoming::Publish(_) | Incoming::SubAck(_) | Incoming::ConnAck(_)),
                )) => {
                    if tx.send(i).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (rx, task)
}

async fn next_publish(rx: &mut mpsc::UnboundedReceiver<Incoming>) -> rumqttc::Publish {
    loop {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(Incoming::Publish(p))) => return p,
            Ok(Some(_)) => {}
            other => panic!("no publish: {other:?}"),
        }
    }
}

async fn suback(rx: &mut mpsc::UnboundedReceiver<Incoming>) {
    loop {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(Incoming::SubAck(_))) => return,
            Ok(Some(_)) => {}
            other => panic!("no suback: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_retained_status_will_and_stop() {
    let b = ManagedBroker::start(settings(false, Some(loopback(0)), None), &[])
        .expect("mosquitto starts (apt install mosquitto)");
    let lan = b.tcp_addr().expect("LAN listener");
    assert_ne!(lan.port(), 0);
    assert_eq!(b.local_url(), format!("mqtt://{}", b.device_addr()));
    assert_ne!(b.device_addr(), b.bridge_addr());
    let dir = b.shared.layout.dir.clone();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir)
        .expect("runtime dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "runtime dir mode");

    let (cid, user, pass) = b.device_login();
    assert_eq!(user, DEVICE_USER);
    assert!(cid.len() > 30, "{cid}");
    let mut o = options(&cid, b.bridge_addr(), Some((user.as_str(), pass.as_str())));
    o.set_last_will(LastWill::new(
        "campeer/cam1/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (dev, el) = AsyncClient::new(o, 16);
    let (_dev_rx, dev_task) = drive(el);
    dev.publish("campeer/cam1/status", QoS::AtLeastOnce, true, "online")
        .await
        .expect("publish");

    // The device itself, through the LAN listener, sees its retained status.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (watcher, el) = AsyncClient::new(
        options("watch", lan, Some((user.as_str(), pass.as_str()))),
        16,
    );
    let (mut rx, _t) = drive(el);
    watcher
        .subscribe("campeer/cam1/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    suback(&mut rx).await;
    let p = next_publish(&mut rx).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("campeer/cam1/status", &b"online"[..], true)
    );

    dev_task.abort();
    drop(dev);
    let p = next_publish(&mut rx).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("campeer/cam1/status", &b"offline"[..])
    );

    let pid = b.mosquitto_pid().expect("a running mosquitto");
    let bridge = b.bridge_addr();
    tokio::task::spawn_blocking(move || b.stop())
        .await
        .expect("stop");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "mosquitto {pid} still runs"
    );
    assert!(!dir.exists(), "runtime dir left behind");
    assert!(
        tokio::net::TcpStream::connect(bridge).await.is_err(),
        "still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind(loopback(0)).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let e =
        ManagedBroker::start(settings(true, Some(addr), None), &[]).expect_err("the port is taken");
    let text = e.to_string();
    assert!(matches!(e, BrokerError::Exited { .. }), "{e:?}");
    assert!(
        text.contains(&addr.to_string()) && text.contains("Address already in use"),
        "{text}"
    );

    let e = ManagedBroker::start(settings(true, None, Some(addr)), &[])
        .expect_err("the ws port is taken");
    assert!(
        e.to_string().contains(&addr.to_string()) && e.to_string().contains("WebSocket"),
        "{e}"
    );
}

/// One WebSocket frame from the client: FIN + binary, masked.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x82];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server frame; returns (opcode, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.expect("frame header");
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.expect("len16");
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.expect("len64");
        len = u64::from_be_bytes(b);
    }
    let mut p = vec![0u8; len as usize];
    s.read_exact(&mut p).await.expect("frame payload");
    (h[0] & 0x0f, p)
}

/// Completes a WebSocket handshake on `ws`; returns the open socket.
async fn ws_handshake(ws: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(ws).await.expect("connect");
    s.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut c = [0u8; 1];
        tokio::time::timeout(T, s.read_exact(&mut c))
            .await
            .expect("in time")
            .expect("read");
        head.push(c[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: mqtt\r\n"), "{head}");
    s
}

/// MQTT 3.1.1 CONNECT, clean session, keep-alive 30 s, client id "w",
/// with a user name and password when given.
fn connect_packet(login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if login.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&[0, 30, 0, 1, b'w']);
    if let Some((u, p)) = login {
        for s in [u, p] {
            body.extend_from_slice(&(s.len() as u16).to_be_bytes());
            body.extend_from_slice(s.as_bytes());
        }
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_needs_a_key_and_reaches_tcp_clients() {
    let key = BrokerKey {
        id: "alice".into(),
        secret: b"0123456789abcdef".to_vec(),
        role: Role::View,
    };
    let b = ManagedBroker::start(
        settings(false, None, Some(loopback(0))),
        std::slice::from_ref(&key),
    )
    .expect("broker starts");
    let ws = b.ws_addr().expect("a ws listener");
    assert_ne!(ws.port(), 0);

    // No key: CONNACK "not authorised" (5).
    let mut s = ws_handshake(ws).await;
    s.write_all(&ws_frame(&connect_packet(None)))
        .await
        .expect("send connect");
    let (op, p) = tokio::time::timeout(T, read_frame(&mut s))
        .await
        .expect("connack in time");
    assert_eq!((op, &p[..]), (2, &[0x20, 2, 0, 5][..]), "CONNACK refused");

    let password = key_password(&key.secret, "cam1");
    let mut s = ws_handshake(ws).await;
    s.write_all(&ws_frame(&connect_packet(Some((
        "alice",
        password.as_str(),
    )))))
    .await
    .expect("send connect");
    let (op, p) = tokio::time::timeout(T, read_frame(&mut s))
        .await
        .expect("connack in time");
    assert_eq!((op, &p[..]), (2, &[0x20, 2, 0, 0][..]), "CONNACK accepted");
    // SUBSCRIBE packet id 1 to "campeer/cam1/status" at QoS 0.
    let topic = b"campeer/cam1/status";
    let mut sub = vec![
        0x82,
        (2 + 2 + topic.len() + 1) as u8,
        0,
        1,
        0,
        topic.len() as u8,
    ];
    sub.extend_from_slice(topic);
    sub.push(0);
    s.write_all(&ws_frame(&sub)).await.expect("send subscribe");
    let (_, p) = tokio::time::timeout(T, read_frame(&mut s))
        .await
        .expect("suback in time");
    assert_eq!(&p[..], &[0x90, 3, 0, 1, 0], "SUBACK");

    // The device publishes; the browser-side socket receives it.
    let (cid, user, pass) = b.device_login();
    let (c, el) = AsyncClient::new(
        options(&cid, b.bridge_addr(), Some((user.as_str(), pass.as_str()))),
        16,
    );
    let (_rx, _task) = drive(el);
    c.publish("campeer/cam1/status", QoS::AtMostOnce, false, "hello")
        .await
        .expect("publish");
    let (_, p) = tokio::time::timeout(T, read_frame(&mut s))
        .await
        .expect("publish in time");
    let mut want = vec![0x30, (2 + topic.len() + 5) as u8, 0, topic.len() as u8];
    want.extend_from_slice(topic);
    want.extend_from_slice(b"hello");
    assert_eq!(p, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_client_blocks_no_one() {
    let b =
        ManagedBroker::start(settings(true, None, Some(loopback(0))), &[]).expect("broker starts");
    let ws = b.ws_addr().expect("ws");
    // Opens a socket and never says anything.
    let _stalled = TcpStream::connect(ws).await.expect("connect");
    let mut s = TcpStream::connect(ws).await.expect("connect");
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
        .await
        .expect("the second client is answered while the first stalls")
        .expect("read");
    assert_eq!(&buf, b"HTTP/1.1 101");
}

/// The HA key's block in `acl`.
fn ha_block(acl: &str) -> Vec<&str> {
    acl.split("\nuser homeassistant\n")
        .nth(1)
        .expect("a block for the HA key")
        .lines()
        .take_while(|l| l.starts_with("topic"))
        .collect()
}

#[test]
fn acl_gives_a_control_home_assistant_key_commands_states_and_discovery_only() {
    let ha = HaRights {
        key_id: "homeassistant".into(),
        discovery_prefix: "homeassistant".into(),
    };
    let acl = acl_text(
        "campeer/cam1",
        false,
        &[("alice", Role::Control), ("homeassistant", Role::Control)],
        Some(&ha),
    );
    let block = ha_block(&acl);
    assert_eq!(
        block,
        [
            "topic read campeer/cam1/status",
            "topic read campeer/cam1/ha/+/state",
            "topic read campeer/cam1/ha/camera",
            "topic write campeer/cam1/ha/+/set",
            "topic write campeer/cam1/ha/+/pulse",
            "topic read homeassistant/#",
            "topic write homeassistant/status",
        ]
    );
    assert!(
        !block.iter().any(|l| l.contains("session")),
        "no viewer rights"
    );
    // The device writes its own discovery configs and reads HA's birth.
    assert!(acl.contains(
        "\nuser campeer.device\ntopic readwrite campeer/cam1/#\n\
         topic readwrite homeassistant/+/campeer_cam1/+/config\ntopic read homeassistant/status\n"
    ));
    // Other keys stay viewers, whatever their role.
    assert!(acl.contains(
        "\nuser alice\ntopic read campeer/cam1/status\ntopic read campeer/cam1/session/+/out\n"
    ));
}

#[test]
fn acl_gives_a_view_home_assistant_key_states_but_no_commands() {
    let ha = HaRights {
        key_id: "homeassistant".into(),
        discovery_prefix: "homeassistant".into(),
    };
    let acl = acl_text(
        "campeer/cam1",
        false,
        &[("homeassistant", Role::View)],
        Some(&ha),
    );
    assert_eq!(
        ha_block(&acl),
        [
            "topic read campeer/cam1/status",
            "topic read campeer/cam1/ha/+/state",
            "topic read campeer/cam1/ha/camera",
            "topic read homeassistant/#",
            "topic write homeassistant/status",
        ]
    );
    // No write anywhere under the device's topics: not set, not pulse.
    let writes: Vec<&str> = ha_block(&acl)
        .into_iter()
        .filter(|l| l.starts_with("topic write") || l.starts_with("topic readwrite"))
        .collect();
    assert_eq!(writes, ["topic write homeassistant/status"], "{acl}");
}
