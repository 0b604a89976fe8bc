//! The device's own broker (docs/protocol.md#authorization-protocol-version-2): a real Mosquitto, run
//! and configured by `campeer::broker::ManagedBroker` or by the daemon
//! binary, probed with real MQTT clients.
//!
//! Needs Mosquitto (scripts/install-deps.sh).

mod common;

use campeer::broker::{
    key_password, BrokerKey, BrokerSettings, HaRights, ManagedBroker, DEVICE_USER, MAX_CONNECTIONS,
};
use campeer::control::config::Role;
use common::*;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const DEVICE: &str = "cam1";
const B: &str = "campeer/cam1";
const T: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(700);

fn alice() -> BrokerKey {
    BrokerKey {
        id: "alice".into(),
        secret: b"alice-secret-0123456789".to_vec(),
        role: Role::View,
    }
}

fn bob() -> BrokerKey {
    BrokerKey {
        id: "bob".into(),
        secret: b"bob-secret-0123456789ab".to_vec(),
        role: Role::View,
    }
}

fn settings(open: bool) -> BrokerSettings {
    BrokerSettings {
        device_id: DEVICE.into(),
        prefix: "campeer".into(),
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        ws_listen: None,
        mosquitto: None,
        open,
        homeassistant: None,
    }
}

fn start(open: bool, keys: &[BrokerKey]) -> ManagedBroker {
    ManagedBroker::start(settings(open), keys).expect("own broker starts (apt install mosquitto)")
}

fn lan(b: &ManagedBroker) -> SocketAddr {
    b.tcp_addr().expect("a LAN listener")
}

/// What a client saw: messages, and whether its connection ended.
enum Seen {
    Msg(String, Vec<u8>, bool),
    SubAck(Vec<rumqttc::SubscribeReasonCode>),
    PubAck,
    Closed(String),
}

struct Client {
    c: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options(addr: SocketAddr, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    o
}

/// Connects; `Err` with the reason if the broker refuses or closes.
async fn connect(o: MqttOptions) -> Result<Client, String> {
    let (c, mut el): (AsyncClient, EventLoop) = AsyncClient::new(o, 64);
    loop {
        match tokio::time::timeout(T, el.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK in time".into()),
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send(Seen::Msg(p.topic.clone(), p.payload.to_vec(), p.retain));
                }
                Ok(Event::Incoming(Incoming::SubAck(a))) => {
                    let _ = tx.send(Seen::SubAck(a.return_codes));
                }
                Ok(Event::Incoming(Incoming::PubAck(_))) => {
                    let _ = tx.send(Seen::PubAck);
                }
                Ok(_) => {}
                Err(e) => {
                    // No reconnects: a closed connection is what tests look for.
                    let _ = tx.send(Seen::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(Client { c, rx, task })
}

/// [`key_client`] until it succeeds, for up to 5 s (a reload in progress).
async fn retry_key_client(
    addr: SocketAddr,
    key: &BrokerKey,
    client_id: &str,
) -> Result<Client, String> {
    let t = std::time::Instant::now();
    loop {
        match key_client(addr, key, client_id).await {
            Err(_) if t.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

async fn key_client(addr: SocketAddr, key: &BrokerKey, client_id: &str) -> Result<Client, String> {
    let pw = key_password(&key.secret, DEVICE);
    connect(options(
        addr,
        client_id,
        Some((key.id.as_str(), pw.as_str())),
    ))
    .await
}

/// The device's own connection (the broker's device login), with its will.
async fn device_client(b: &ManagedBroker) -> Client {
    let (cid, user, pw) = b.device_login();
    let mut o = options(b.device_addr(), &cid, Some((user.as_str(), pw.as_str())));
    o.set_last_will(LastWill::new(
        format!("{B}/status"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    connect(o).await.expect("the device logs in")
}

impl Client {
    async fn sub(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.c
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Seen::SubAck(codes))) => return codes,
                Ok(Some(Seen::Msg(..) | Seen::PubAck)) => {}
                Ok(Some(Seen::Closed(e))) => panic!("closed while subscribing to {filter}: {e}"),
                _ => panic!("no SUBACK for {filter}"),
            }
        }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.c
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish queued");
    }

    /// Publishes and waits for the broker's PUBACK: a retained message is
    /// stored by then, so a later subscriber gets the retained copy rather
    /// than the live one (other messages seen meanwhile are dropped).
    async fn publish_acked(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.publish(topic, payload, retain).await;
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Seen::PubAck)) => return,
                Ok(Some(Seen::Msg(..) | Seen::SubAck(_))) => {}
                _ => panic!("no PUBACK for {topic}"),
            }
        }
    }

    /// The next message within `within`; `None` if none (or closed).
    async fn next_msg(&mut self, within: Duration) -> Option<(String, Vec<u8>, bool)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Seen::Msg(t, p, r))) => return Some((t, p, r)),
                Ok(Some(Seen::SubAck(_) | Seen::PubAck)) => {}
                _ => return None,
            }
        }
    }

    /// Waits for the connection to end; returns the reason.
    async fn closed(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Seen::Closed(e))) => return Some(e),
                Ok(Some(_)) => {}
                Ok(None) => return Some("event loop ended".into()),
                Err(_) => return None,
            }
        }
    }
}

fn mosquitto_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaired_client_cannot_connect() {
    let b = start(false, &[alice()]);
    for addr in [lan(&b), b.bridge_addr()] {
        let e = connect(options(addr, "anon", None)).await.err();
        assert!(e.is_some(), "anonymous client connected on {addr}");
        let wrong = connect(options(addr, "wrong", Some(("alice", "not-the-password")))).await;
        assert!(wrong.is_err(), "wrong password accepted on {addr}");
        // A key's password is bound to the device id: cam2's does not open cam1.
        let other = key_password(&alice().secret, "cam2");
        let e = connect(options(addr, "other", Some(("alice", &other)))).await;
        assert!(e.is_err(), "another device's password accepted on {addr}");
        // The device's user name without its password.
        let e = connect(options(addr, "dev", Some((DEVICE_USER, "guess")))).await;
        assert!(e.is_err(), "device user with a guessed password accepted");
    }
    // The right key does connect: the refusals above are about credentials.
    key_client(lan(&b), &alice(), "alice-1")
        .await
        .expect("alice logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_status_and_out_writes_in_and_nothing_else() {
    let b = start(false, &[alice(), bob()]);
    let mut dev = device_client(&b).await;
    dev.sub(&format!("{B}/session/+/in")).await;
    dev.publish_acked(&format!("{B}/status"), "online", true)
        .await;

    let mut viewer = key_client(lan(&b), &alice(), "alice-1")
        .await
        .expect("alice");
    viewer.sub(&format!("{B}/status")).await;
    let (t, p, retained) = viewer.next_msg(T).await.expect("retained status");
    assert_eq!(
        (t.as_str(), &p[..], retained),
        (&*format!("{B}/status"), &b"online"[..], true)
    );
    viewer.sub(&format!("{B}/session/s1234567/out")).await;

    // in: viewer -> device.
    viewer
        .publish(&format!("{B}/session/s1234567/in"), "offer", false)
        .await;
    let (t, p, _) = dev
        .next_msg(T)
        .await
        .expect("the device gets the viewer's in");
    assert_eq!(
        (t.as_str(), &p[..]),
        (&*format!("{B}/session/s1234567/in"), &b"offer"[..])
    );
    // out: device -> viewer.
    dev.publish(&format!("{B}/session/s1234567/out"), "answer", false)
        .await;
    let (t, p, _) = viewer.next_msg(T).await.expect("the viewer gets out");
    assert_eq!(
        (t.as_str(), &p[..]),
        (&*format!("{B}/session/s1234567/out"), &b"answer"[..])
    );

    // A second viewer (another key) watches everything it can.
    let mut other = key_client(lan(&b), &bob(), "bob-1").await.expect("bob");
    other.sub(&format!("{B}/session/+/out")).await;
    other.sub(&format!("{B}/status")).await;
    assert!(
        other.next_msg(T).await.is_some(),
        "bob sees the retained status"
    );
    // Its subscription to other sids' `in` (and to everything) gets nothing.
    other.sub(&format!("{B}/session/+/in")).await;
    other.sub("#").await;
    // `#` matches the retained status again, which bob may read.
    let (t, _, retained) = other
        .next_msg(T)
        .await
        .expect("the status again, through #");
    assert_eq!((t.as_str(), retained), (&*format!("{B}/status"), true));
    assert!(
        other.next_msg(QUIET).await.is_none(),
        "bob got more than the status"
    );

    // The viewer forges the device's status and another session's answer:
    // nobody receives either, and the retained status is unchanged.
    viewer.publish(&format!("{B}/status"), "forged", true).await;
    viewer
        .publish(&format!("{B}/session/s7654321/out"), "forged", false)
        .await;
    viewer.publish("elsewhere/topic", "x", false).await;
    // And a real `in` from alice that bob must not see.
    viewer
        .publish(&format!("{B}/session/s7654321/in"), "secret offer", false)
        .await;
    let (t, _, _) = dev
        .next_msg(T)
        .await
        .expect("the device gets the second in");
    assert_eq!(t, format!("{B}/session/s7654321/in"));
    // A marker from the device proves bob's connection delivers.
    dev.publish(&format!("{B}/session/s7654321/out"), "marker", false)
        .await;
    let mut got = Vec::new();
    while let Some((t, p, _)) = other.next_msg(QUIET).await {
        got.push((t, String::from_utf8_lossy(&p).into_owned()));
    }
    assert_eq!(
        got,
        [(format!("{B}/session/s7654321/out"), "marker".to_owned())],
        "bob saw more than the device's out"
    );
    assert!(
        dev.next_msg(QUIET).await.is_none(),
        "the device got a forged message"
    );
    let mut late = key_client(lan(&b), &bob(), "bob-2")
        .await
        .expect("bob again");
    late.sub(&format!("{B}/status")).await;
    let (_, p, _) = late.next_msg(T).await.expect("retained status");
    assert_eq!(&p[..], b"online", "the retained status was overwritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_takes_over_the_devices_connection() {
    let b = start(true, &[alice()]);
    let mut dev = device_client(&b).await;
    dev.publish(&format!("{B}/status"), "online", true).await;
    let (cid, _, _) = b.device_login();

    let guesses = [
        "campeer-cam1".to_owned(),
        "cam1".to_owned(),
        DEVICE_USER.to_owned(),
        format!("{DEVICE_USER}.cam1"),
        "campeer".to_owned(),
        String::new(),
    ];
    for g in &guesses {
        for addr in [lan(&b), b.bridge_addr()] {
            let _keyed = key_client(addr, &alice(), g).await;
            let _anon = connect(options(addr, g, None)).await;
        }
    }
    tokio::time::sleep(QUIET).await;
    assert!(
        dev.closed(Duration::from_millis(10)).await.is_none(),
        "the device's connection dropped"
    );
    let mut w = key_client(lan(&b), &alice(), "watch").await.expect("alice");
    w.sub(&format!("{B}/status")).await;
    let (_, p, _) = w.next_msg(T).await.expect("status");
    assert_eq!(&p[..], b"online");

    // The client id is what protects it: the same id would take over.
    let (_, user, pw) = b.device_login();
    let _thief = connect(options(
        b.bridge_addr(),
        &cid,
        Some((user.as_str(), pw.as_str())),
    ))
    .await
    .expect("same login");
    assert!(
        dev.closed(T).await.is_some(),
        "a takeover with the real id did not happen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_64_kib_are_refused() {
    let b = start(false, &[alice()]);
    let mut dev = device_client(&b).await;
    dev.sub(&format!("{B}/session/+/in")).await;
    let viewer = key_client(lan(&b), &alice(), "alice-1")
        .await
        .expect("alice");

    let topic = format!("{B}/session/s1234567/in");
    viewer.publish(&topic, vec![b'a'; 60 * 1024], false).await;
    let (_, p, _) = dev.next_msg(T).await.expect("60 KiB delivered");
    assert_eq!(p.len(), 60 * 1024);

    // Just over the limit: dropped (the connection may stay).
    viewer
        .publish(&topic, vec![b'b'; 64 * 1024 + 1], false)
        .await;
    // 1 MiB: dropped, and the connection closed.
    let mut big = key_client(lan(&b), &alice(), "alice-2")
        .await
        .expect("alice");
    big.publish(&topic, vec![b'c'; 1 << 20], false).await;
    assert!(
        big.closed(T).await.is_some(),
        "a 1 MiB packet did not close its connection"
    );
    viewer.publish(&topic, "small", false).await;
    let (_, p, _) = dev.next_msg(T).await.expect("the small one");
    assert_eq!(&p[..], b"small", "an oversized payload was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_change_while_running() {
    let b = start(false, &[alice()]);
    let mut dev = device_client(&b).await;
    assert!(
        key_client(lan(&b), &bob(), "bob-0").await.is_err(),
        "bob before his key"
    );
    let mut a = key_client(lan(&b), &alice(), "alice-1")
        .await
        .expect("alice");

    b.update_keys(&[bob()]).expect("update keys");
    // Mosquitto rereads its password file on SIGHUP: retry until it has.
    let mut bb = retry_key_client(lan(&b), &bob(), "bob-1")
        .await
        .expect("bob's new key works");
    bb.sub(&format!("{B}/session/+/out")).await;
    assert!(
        key_client(lan(&b), &alice(), "alice-2").await.is_err(),
        "a removed key still connects"
    );
    // Mosquitto closes the removed key's open connection on reload.
    assert!(
        a.closed(T).await.is_some(),
        "alice's old connection survived her key's removal"
    );
    // The device's own connection stays up.
    assert!(
        dev.closed(Duration::from_millis(10)).await.is_none(),
        "the device was dropped"
    );
    dev.publish(&format!("{B}/session/s1234567/out"), "hi", false)
        .await;
    let (_, p, _) = bb.next_msg(T).await.expect("bob receives");
    assert_eq!(&p[..], b"hi");
}

fn ha_key(role: Role) -> BrokerKey {
    BrokerKey {
        id: "homeassistant".into(),
        secret: b"ha-secret-0123456789abcd".to_vec(),
        role,
    }
}

/// Whether a command the HA key publishes reaches the device, retried for
/// a few seconds when `want` (a reload may be under way).
async fn ha_command_arrives(ha: &Client, dev: &mut Client, want: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        ha.publish(&format!("{B}/ha/gate/set"), "ON", false).await;
        let got = dev.next_msg(QUIET).await.is_some();
        if got == want || Instant::now() > deadline {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_assistant_key_commands_only_while_its_role_is_control() {
    let mut s = settings(false);
    s.homeassistant = Some(HaRights {
        key_id: "homeassistant".into(),
        discovery_prefix: "homeassistant".into(),
    });
    let b = ManagedBroker::start(s, &[ha_key(Role::View)]).expect("own broker starts");
    let mut dev = device_client(&b).await;
    dev.sub(&format!("{B}/ha/+/set")).await;
    dev.sub(&format!("{B}/ha/+/state")).await;
    let mut ha = key_client(lan(&b), &ha_key(Role::View), "ha-1")
        .await
        .expect("the HA key logs in");
    ha.sub(&format!("{B}/ha/+/state")).await;

    // A view key reads states...
    dev.publish(&format!("{B}/ha/gate/state"), "OFF", true)
        .await;
    let (t, p, _) = ha.next_msg(T).await.expect("the view key reads a state");
    assert_eq!(
        (t.as_str(), &p[..]),
        (format!("{B}/ha/gate/state").as_str(), &b"OFF"[..])
    );
    let _ = dev.next_msg(QUIET).await; // the device's own state, back
                                       // ...but its commands never reach the device.
    assert!(
        !ha_command_arrives(&ha, &mut dev, false).await,
        "a view key's command was delivered"
    );

    // The same connection, once the key's role is control: delivered.
    b.update_keys(&[ha_key(Role::Control)])
        .expect("update keys");
    assert!(
        ha_command_arrives(&ha, &mut dev, true).await,
        "a control key's command never arrived"
    );
    // And back to view: refused again, without reconnecting.
    b.update_keys(&[ha_key(Role::View)]).expect("update keys");
    assert!(
        !ha_command_arrives(&ha, &mut dev, false).await,
        "a key turned view still commands"
    );
    assert!(ha.closed(Duration::from_millis(10)).await.is_none());
}

/// Retained messages a fresh subscriber to `filter` gets within `within`.
async fn retained_under(port: u16, filter: &str, within: Duration) -> Vec<String> {
    let mut c = connect(options(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &format!("probe-{}", rand::random::<u32>()),
        None,
    ))
    .await
    .expect("probe connects");
    c.sub(filter).await;
    let mut got = Vec::new();
    while let Some((t, _, retained)) = c.next_msg(within).await {
        if retained {
            got.push(t);
        }
    }
    got
}

/// Retained junk parked on made-up session topics is emptied by the
/// device. Observed on an anonymous Mosquitto (a key of the own broker may
/// write `B/session/+/in` but not read it back); the device's side is the
/// same on either broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_on_session_topics_are_emptied_by_the_device() {
    let broker = Broker::start();
    let dev = "cam-junk";
    let d = common::Daemon::start(&broker, dev, &["--signed"]).await;
    let root = format!("campeer/{dev}/session");
    let mut junk = anon_client(broker.port).await;
    for i in 0..20 {
        junk.publish_acked(
            &format!("{root}/madeup{i:04}/in"),
            vec![b'j'; 60 * 1024],
            true,
        )
        .await;
    }
    // The probe sees retained messages where the device leaves them alone.
    junk.publish_acked(&format!("campeer/{dev}/elsewhere"), "kept", true)
        .await;
    assert_eq!(
        retained_under(broker.port, &format!("campeer/{dev}/elsewhere"), QUIET).await,
        [format!("campeer/{dev}/elsewhere")]
    );

    let t = Instant::now();
    loop {
        let left = retained_under(broker.port, &format!("{root}/#"), QUIET).await;
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} retained session messages left after {:?}: {left:?}",
            left.len(),
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "20 retained session messages emptied within {:?}",
        t.elapsed()
    );
    assert!(
        d.wait_log("emptied retained messages on session topics", 1, T)
            .await,
        "no log line for the emptied messages"
    );
    // And the device is still there for real sessions.
    assert!(
        wait_status(broker.port, "campeer", dev, |v| v["state"] == "online", T)
            .await
            .is_some()
    );
}

async fn anon_client(port: u16) -> Client {
    connect(options(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &format!("junk-{}", rand::random::<u32>()),
        None,
    ))
    .await
    .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_is_restarted_after_kill_9_and_gone_after_stop() {
    let b = start(false, &[alice()]);
    let first = b.mosquitto_pid().expect("running");
    let addr = lan(&b);
    // SAFETY: kill(2) on the broker's child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let t = Instant::now();
    let second = loop {
        if let Some(p) = b.mosquitto_pid().filter(|&p| p != first) {
            if key_client(addr, &alice(), "alice-again").await.is_ok() {
                break p;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(15), "mosquitto not back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(b.starts(), 2);
    assert!(!mosquitto_alive(first));
    println!(
        "mosquitto back {} ms after kill -9",
        t.elapsed().as_millis()
    );
    tokio::task::spawn_blocking(move || b.stop())
        .await
        .expect("stop");
    assert!(
        !mosquitto_alive(second),
        "mosquitto {second} left after stop"
    );
}

/// Opens raw TCP connections (no MQTT CONNECT, as a browser's WebSocket
/// bridged before any login) to `addr` until the listener is full: a key
/// holder's login there then fails.
async fn fill(addr: SocketAddr) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 8 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // Let Mosquitto take them all in (the surplus is closed by it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        key_client(addr, &alice(), "alice-crowded").await.is_err(),
        "the bridge listener is not full after {} sockets",
        held.len()
    );
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_listener_full_leaves_the_device_its_own() {
    let b = start(false, &[alice()]);
    assert_ne!(b.bridge_addr(), b.device_addr());
    assert_eq!(b.local_url(), format!("mqtt://{}", b.device_addr()));
    let crowd = fill(b.bridge_addr()).await;
    let mut dev = device_client(&b).await;
    dev.sub(&format!("{B}/session/+/in")).await;
    // A second connection on the device's listener (another client id).
    let (_, user, pw) = b.device_login();
    let second = connect(options(
        b.device_addr(),
        "campeer.device.second",
        Some((user.as_str(), pw.as_str())),
    ))
    .await;
    assert!(second.is_ok(), "{:?}", second.err());
    drop(second);

    // Mosquitto dies and comes back; the crowd is back at once; the
    // device reconnects all the same.
    let first = b.mosquitto_pid().expect("running");
    drop(crowd);
    // SAFETY: kill(2) on the broker's child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    assert!(
        dev.closed(T).await.is_some(),
        "the device saw the broker go"
    );
    let t = Instant::now();
    while b.mosquitto_pid().is_none_or(|p| p == first)
        || tokio::net::TcpStream::connect(b.bridge_addr())
            .await
            .is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(15), "mosquitto not back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _crowd = fill(b.bridge_addr()).await;
    let mut dev = device_client(&b).await;
    dev.sub(&format!("{B}/session/+/in")).await;
    eprintln!(
        "the device reconnected {} ms after kill -9, beside {} sockets on the bridge listener",
        t.elapsed().as_millis(),
        _crowd.len()
    );
    tokio::task::spawn_blocking(move || b.stop())
        .await
        .expect("stop");
}

/// Mosquitto children of `pid` (by their parent pid).
fn mosquitto_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = &stat[stat.find('(').map_or(0, |i| i + 1)..close];
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if name == "mosquitto" && ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn signed_config(dir: &TempDir) -> std::path::PathBuf {
    let conf = dir.0.join("campeer.toml");
    std::fs::write(
        &conf,
        format!(
            "[[access.keys]]\nid = \"alice\"\nsecret = \"{}\"\nrole = \"view\"\n",
            String::from_utf8(alice().secret).expect("utf8")
        ),
    )
    .expect("write config");
    conf
}

/// Runs `campeer run` with its own broker on 127.0.0.1:port.
fn run_daemon(conf: &std::path::Path, port: u16, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(["--log", "info,campeer=debug", "run", "--config"])
        .arg(conf)
        .args(["--device-id", DEVICE, "--video", "none", "--http", ""])
        .args([
            "--broker-listen",
            &format!("127.0.0.1:{port}"),
            "--broker-ws-listen",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start campeer")
}

async fn wait_online(addr: SocketAddr, log: &std::path::Path) -> Client {
    let t = Instant::now();
    loop {
        if let Ok(mut c) = key_client(addr, &alice(), "watch").await {
            c.sub(&format!("{B}/status")).await;
            if let Some((_, p, _)) = c.next_msg(Duration::from_secs(2)).await {
                if String::from_utf8_lossy(&p).contains("\"online\"") {
                    return c;
                }
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the daemon never came online; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_its_broker_and_keeps_its_connection() {
    let dir = TempDir::new("own-broker");
    let conf = signed_config(&dir);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = dir.0.join("daemon.log");
    let mut child = run_daemon(&conf, port, &log);
    let mut watch = wait_online(addr, &log).await;

    // Anonymous clients are refused by the daemon's broker.
    assert!(connect(options(addr, "anon", None)).await.is_err());
    // Takeover attempts with every id one might guess.
    for g in [
        "campeer-cam1",
        "cam1",
        DEVICE_USER,
        "campeer.device.cam1",
        "",
    ] {
        let _ = key_client(addr, &alice(), g).await;
    }
    tokio::time::sleep(QUIET).await;
    // An offer from alice still gets the device's answer (here: refused,
    // unsigned), so the device is still subscribed and connected.
    let sid = sid();
    let mut v = key_client(addr, &alice(), "alice-offer")
        .await
        .expect("alice");
    v.sub(&format!("{B}/session/{sid}/out")).await;
    v.publish(
        &format!("{B}/session/{sid}/in"),
        format!("{{\"type\":\"offer\",\"sdp\":{:?}}}", vp8_only_offer()),
        false,
    )
    .await;
    let (_, p, _) = v.next_msg(T).await.expect("the device answers");
    let text = String::from_utf8_lossy(&p);
    assert!(text.contains("unauthorized"), "{text}");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        log_text.matches("connected to broker").count(),
        1,
        "{log_text}"
    );
    assert!(!log_text.contains("lost the broker"), "{log_text}");
    // Nothing but online status was published meanwhile.
    while let Some((_, p, _)) = watch.next_msg(Duration::from_millis(100)).await {
        assert!(
            !String::from_utf8_lossy(&p).contains("offline"),
            "went offline"
        );
    }

    // SIGKILL the daemon: its Mosquitto goes too.
    let pid = child.id();
    let kids = mosquitto_children(pid);
    assert_eq!(kids.len(), 1, "one mosquitto child of the daemon");
    child.kill().expect("kill");
    child.wait().expect("wait");
    let t = Instant::now();
    while mosquitto_alive(kids[0]) {
        assert!(t.elapsed() < Duration::from_secs(5), "mosquitto orphaned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM: a clean stop leaves no Mosquitto either.
    let mut child = run_daemon(&conf, port, &log);
    let _w = wait_online(addr, &log).await;
    let kids = mosquitto_children(child.id());
    assert_eq!(kids.len(), 1);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().expect("wait");
    assert!(st.success(), "{st}");
    assert!(
        !mosquitto_alive(kids[0]),
        "mosquitto left after a clean stop"
    );
}
