//! The embedded MQTT broker: `campeer run` without an external broker still
//! gives viewers, the page included, something to talk to.
//!
//! MQTT 3.1.1 over TCP is served by rumqttd's own server. MQTT over
//! WebSocket (what a browser speaks) is served here: each WebSocket is
//! bridged, byte for byte, to the TCP listener. rumqttd has a WebSocket
//! listener of its own, but it performs every handshake inline in its accept
//! loop with no time limit, so one client that opens a socket and stalls
//! (a phone going to sleep mid-handshake) blocks every other browser. Here
//! each handshake runs in its own task with a deadline, and a
//! `Sec-WebSocket-Protocol: mqtt` header is answered only when asked for.
//!
//! Limits: payloads up to [`MAX_PAYLOAD`]; retained messages, last will and
//! QoS 0/1 work as MQTT 3.1.1 says (QoS 2 is accepted by rumqttd too).
//!
//! Threads: the servers run on one OS thread (`mqtt-broker`) with its own
//! tokio runtime; rumqttd's router runs on another (`router-0`). Dropping
//! the [`EmbeddedBroker`] stops the servers and closes every connection.
//! rumqttd gives no way to stop its router thread: it stays parked, idle,
//! until the process exits. rumqttd also keeps one in-memory log per topic
//! filter ever used, for the life of the broker (each session's `out` topic
//! costs a few KiB); the embedded broker suits a device with a handful of
//! viewers, and a busy site should run Mosquitto instead.

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Largest MQTT packet payload the broker accepts, bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Most concurrent MQTT connections (TCP and WebSocket together).
pub const MAX_CONNECTIONS: usize = 256;
/// How long the broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listener could not be bound (address in use, not local, no permission).
    #[error("embedded MQTT broker: cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `MQTT (TCP)` or `MQTT over WebSocket`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The broker's thread or runtime could not be created.
    #[error("embedded MQTT broker: cannot start: {0}")]
    Start(io::Error),
    /// The broker did not report that it listens in time.
    #[error("embedded MQTT broker: not listening after {0:?}")]
    Timeout(Duration),
}

const WHAT_TCP: &str = "MQTT (TCP)";
const WHAT_WS: &str = "MQTT over WebSocket";

/// A running MQTT broker inside this process. Stops when dropped.
pub struct EmbeddedBroker {
    tcp: SocketAddr,
    ws: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("tcp", &self.tcp)
            .field("ws", &self.ws)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a broker listening for MQTT on `tcp` and, when given, for
    /// MQTT over WebSocket on `ws` (any path). Port 0 picks a free port;
    /// [`tcp_addr`](Self::tcp_addr) and [`ws_addr`](Self::ws_addr) tell
    /// which. Returns once both listeners accept connections. Must not be
    /// called from inside an async function without `block_in_place` or
    /// `spawn_blocking`: it waits (briefly) on a thread.
    pub fn start(tcp: SocketAddr, ws: Option<SocketAddr>) -> Result<EmbeddedBroker, BrokerError> {
        // rumqttd binds its own listener and cannot say which port it got:
        // a port-0 request is resolved here first. (A fixed port is left to
        // rumqttd; a failure to bind it is caught below either way.)
        let tcp_probe = if tcp.port() == 0 {
            let probe = std::net::TcpListener::bind(tcp).map_err(|source| BrokerError::Bind {
                what: WHAT_TCP,
                addr: tcp,
                source,
            })?;
            Some(probe)
        } else {
            None
        };
        let tcp = match &tcp_probe {
            Some(p) => p.local_addr().map_err(BrokerError::Start)?,
            None => tcp,
        };
        // The WebSocket listener is ours: bind it now, so its errors and its
        // port are known before anything starts. (The probe is still held,
        // so a port-0 request here cannot be handed the same port.)
        let ws_listener = match ws {
            Some(addr) => {
                let l = listen_reusable(addr).map_err(|source| BrokerError::Bind {
                    what: WHAT_WS,
                    addr,
                    source,
                })?;
                Some(l)
            }
            None => None,
        };
        drop(tcp_probe);
        let ws_addr = match &ws_listener {
            Some(l) => Some(l.local_addr().map_err(BrokerError::Start)?),
            None => None,
        };

        let router_tx = Router::new(0, router_config()).spawn();
        let server = Server::new(server_settings("campeer-v4", tcp), router_tx, V4);

        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), BrokerError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let bridge_target = connect_target(tcp);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || run_servers(server, tcp, ws_listener, bridge_target, ready_tx, stop_rx))
            .map_err(BrokerError::Start)?;

        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {
                info!(tcp = %tcp, ws = ?ws_addr, "embedded MQTT broker listening");
                Ok(EmbeddedBroker {
                    tcp,
                    ws: ws_addr,
                    stop: Some(stop_tx),
                    thread: Some(thread),
                })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                let _ = stop_tx.send(());
                Err(BrokerError::Timeout(START_TIMEOUT))
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                Err(BrokerError::Start(io::Error::other(
                    "the broker thread ended while starting",
                )))
            }
        }
    }

    /// The address the MQTT (TCP) listener is bound to.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The address the MQTT-over-WebSocket listener is bound to, if any.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws
    }

    /// A URL a local client can connect to: `mqtt://127.0.0.1:PORT` (or
    /// the bound address when it is not a wildcard).
    pub fn local_url(&self) -> String {
        let a = connect_target(self.tcp);
        match a.ip() {
            IpAddr::V6(ip) => format!("mqtt://[{ip}]:{}", a.port()),
            IpAddr::V4(ip) => format!("mqtt://{ip}:{}", a.port()),
        }
    }

    /// Stops the listeners and closes every connection. Same as dropping.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A non-blocking listener with SO_REUSEADDR, as tokio's own `bind` makes
/// them: a restarted daemon must get its port back at once, even while the
/// connections its previous run closed linger in TIME_WAIT.
fn listen_reusable(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn router_config() -> RouterConfig {
    RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: 200,
        // One segment holds at least one whole packet, however large.
        max_segment_size: MAX_PAYLOAD,
        max_segment_count: 2,
        ..RouterConfig::default()
    }
}

fn server_settings(name: &str, listen: SocketAddr) -> ServerSettings {
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            // rumqttd disconnects a client that publishes to a topic no one
            // subscribes to unless filters may be created on the fly: a
            // device publishing presence before any viewer is the normal case.
            dynamic_filters: true,
        },
    }
}

/// Where a local client reaches a listener bound to `addr`: the loopback
/// address of the same family for a wildcard bind, else `addr` itself.
fn connect_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The body of the `mqtt-broker` thread.
fn run_servers(
    mut server: Server<V4>,
    tcp: SocketAddr,
    ws_listener: Option<std::net::TcpListener>,
    bridge_target: SocketAddr,
    ready: std_mpsc::Sender<Result<(), BrokerError>>,
    stop: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(BrokerError::Start(e)));
            return;
        }
    };
    rt.block_on(async move {
        let ws = match ws_listener.map(tokio::net::TcpListener::from_std).transpose() {
            Ok(ws) => ws,
            Err(e) => {
                let _ = ready.send(Err(BrokerError::Start(e)));
                return;
            }
        };
        let tcp_server = server.start(LinkType::Remote);
        tokio::pin!(tcp_server);
        // rumqttd's server binds in its first poll, then waits in accept:
        // still pending after one poll means it listens.
        let first = tokio::select! {
            biased;
            r = &mut tcp_server => Some(r),
            _ = std::future::ready(()) => None,
        };
        if let Some(r) = first {
            let source = match r {
                Err(e) => {
                    // rumqttd's error type is private; its I/O cause is not.
                    let kind = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<io::Error>())
                        .map_or(io::ErrorKind::Other, io::Error::kind);
                    io::Error::new(kind, e.to_string())
                }
                Ok(()) => io::Error::other("the server stopped at once"),
            };
            let _ = ready.send(Err(BrokerError::Bind {
                what: WHAT_TCP,
                addr: tcp,
                source,
            }));
            return;
        }
        let ws_server = async move {
            match ws {
                Some(l) => crate::web::ws_bridge::serve_websocket(l, bridge_target).await,
                None => std::future::pending().await,
            }
        };
        let _ = ready.send(Ok(()));
        tokio::select! {
            r = &mut tcp_server => warn!(error = ?r.err(), "embedded MQTT broker: TCP server ended"),
            r = ws_server => warn!(error = ?r.err(), "embedded MQTT broker: WebSocket server ended"),
            _ = stop => debug!("embedded MQTT broker stopping"),
        }
    });
    // Dropping the runtime here cancels every connection task.
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    const T: Duration = Duration::from_secs(10);

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn options(id: &str, port: u16) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(2 * MAX_PAYLOAD, 2 * MAX_PAYLOAD);
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// Polls `el` in a task; publishes and SUBACKs come out of the channel.
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
                    Ok(Event::Incoming(
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
    async fn retained_will_qos1_and_large_payloads_over_tcp() {
        let b = EmbeddedBroker::start(loopback(0), None).expect("broker starts");
        let port = b.tcp_addr().port();
        assert_ne!(port, 0);
        assert!(b.ws_addr().is_none());
        assert_eq!(b.local_url(), format!("mqtt://127.0.0.1:{port}"));

        // The device: a last will, a retained presence.
        let mut o = options("dev", port);
        o.set_last_will(LastWill::new(
            "c/dev/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (dev, el) = AsyncClient::new(o, 16);
        let (_dev_rx, dev_task) = drive(el);
        dev.publish("c/dev/status", QoS::AtLeastOnce, true, "online")
            .await
            .expect("publish");

        // A viewer arriving later gets the retained message, flagged retained.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (viewer, el) = AsyncClient::new(options("viewer", port), 16);
        let (mut rx, _viewer_task) = drive(el);
        viewer
            .subscribe("c/dev/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        suback(&mut rx).await;
        let p = next_publish(&mut rx).await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.retain),
            ("c/dev/status", &b"online"[..], true)
        );

        // A 900 KiB QoS 1 payload goes through whole.
        let big: Vec<u8> = (0..900 * 1024).map(|i| (i % 251) as u8).collect();
        dev.publish("c/dev/blob", QoS::AtLeastOnce, false, big.clone())
            .await
            .expect("publish");
        let p = next_publish(&mut rx).await;
        assert_eq!(p.topic, "c/dev/blob");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(p.payload[..] == big[..], "payload changed on the way");

        // The device vanishes without DISCONNECT: its will is published.
        dev_task.abort();
        drop(dev);
        let p = next_publish(&mut rx).await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("c/dev/status", &b"offline"[..])
        );

        // Stopping closes the listener.
        b.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            tokio::net::TcpStream::connect(loopback(port))
                .await
                .is_err(),
            "still listening after stop"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_address_is_a_clear_error() {
        let taken = std::net::TcpListener::bind(loopback(0)).expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = EmbeddedBroker::start(addr, None).expect_err("the port is taken");
        let text = e.to_string();
        assert!(
            matches!(e, BrokerError::Bind { what: WHAT_TCP, .. }),
            "{e:?}"
        );
        assert!(
            text.contains(&addr.to_string()) && text.contains("MQTT (TCP)"),
            "{text}"
        );

        let e = EmbeddedBroker::start(loopback(0), Some(addr)).expect_err("the ws port is taken");
        assert!(
            e.to_string().contains(&addr.to_string()) && e.to_string().contains("WebSocket"),
            "{e}"
        );

        // An address that is not this machine's.
        let foreign: SocketAddr = "192.0.2.1:0".parse().expect("addr");
        let e = EmbeddedBroker::start(foreign, None).expect_err("not a local address");
        assert!(e.to_string().contains("192.0.2.1"), "{e}");
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_over_websocket_reaches_tcp_clients() {
        let b = EmbeddedBroker::start(loopback(0), Some(loopback(0))).expect("broker starts");
        let ws = b.ws_addr().expect("a ws listener");
        assert_ne!(ws.port(), 0);

        let mut s = TcpStream::connect(ws).await.expect("connect");
        s.write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
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

        // CONNECT (MQTT 3.1.1, clean session, keep-alive 30 s, client id "w").
        let connect = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 1, b'w',
        ];
        s.write_all(&ws_frame(&connect))
            .await
            .expect("send connect");
        let (op, p) = tokio::time::timeout(T, read_frame(&mut s))
            .await
            .expect("connack in time");
        assert_eq!((op, &p[..]), (2, &[0x20, 2, 0, 0][..]), "CONNACK accepted");
        // SUBSCRIBE packet id 1 to "a/b" at QoS 0.
        let sub = [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 0];
        s.write_all(&ws_frame(&sub)).await.expect("send subscribe");
        let (_, p) = tokio::time::timeout(T, read_frame(&mut s))
            .await
            .expect("suback in time");
        assert_eq!(&p[..], &[0x90, 3, 0, 1, 0], "SUBACK");

        // A TCP client publishes; the browser-side socket receives it.
        let (c, el) = AsyncClient::new(options("tcp-pub", b.tcp_addr().port()), 16);
        let (_rx, _task) = drive(el);
        c.publish("a/b", QoS::AtMostOnce, false, "hello")
            .await
            .expect("publish");
        let (_, p) = tokio::time::timeout(T, read_frame(&mut s))
            .await
            .expect("publish in time");
        assert_eq!(
            &p[..],
            &[0x30, 10, 0, 3, b'a', b'/', b'b', b'h', b'e', b'l', b'l', b'o'][..]
        );
    }

    /// Completes a WebSocket handshake on `ws`; returns the open socket.
    async fn ws_handshake(ws: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(ws).await.expect("connect");
        s.write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
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
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_broker_gets_its_ports_back_at_once() {
        let b = EmbeddedBroker::start(loopback(0), Some(loopback(0))).expect("broker starts");
        let (tcp, ws) = (b.tcp_addr(), b.ws_addr().expect("ws"));
        // Connections that the broker closes first leave TIME_WAIT behind.
        let _w = ws_handshake(ws).await;
        let (c, el) = AsyncClient::new(options("lingering", tcp.port()), 16);
        let (mut rx, _task) = drive(el);
        c.subscribe("x", QoS::AtMostOnce).await.expect("subscribe");
        suback(&mut rx).await;
        drop(b);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = EmbeddedBroker::start(tcp, Some(ws)).expect("the same ports again");
        assert_eq!((b.tcp_addr(), b.ws_addr()), (tcp, Some(ws)));
        drop(ws_handshake(ws).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_websocket_client_blocks_no_one() {
        let b = EmbeddedBroker::start(loopback(0), Some(loopback(0))).expect("broker starts");
        let ws = b.ws_addr().expect("ws");
        // Opens a socket and never says anything.
        let _stalled = TcpStream::connect(ws).await.expect("connect");
        let mut s = TcpStream::connect(ws).await.expect("connect");
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
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
}
