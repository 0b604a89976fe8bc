//! MQTT over WebSocket, bridged to an MQTT broker's TCP port.
//!
//! Browsers speak MQTT over WebSocket; brokers speak it over TCP. Each
//! WebSocket is bridged, byte for byte, to a fresh TCP connection to the
//! broker, so the broker sees one ordinary MQTT client per browser and
//! applies its own authentication and ACLs. A
//! `Sec-WebSocket-Protocol: mqtt` header is answered only when asked for.
//!
//! The page server (see `super::serve`) admits, checks (Host, Origin) and
//! upgrades the connection; this module only moves bytes. A WebSocket
//! that sends nothing for [`WsTimeouts::ping_after`] is pinged, and one that
//! has not even answered a ping after [`WsTimeouts::close_after`] is closed,
//! so a phone that went away without closing frees its place.

use super::guard::{ws_keepalive, Keepalive};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Largest MQTT packet carried, bytes (a WebSocket message may hold one
/// packet plus its header).
pub const MAX_PACKET: usize = 1 << 20;
/// How long a WebSocket bridge may take to reach the broker.
const BRIDGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive of bridged WebSockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsTimeouts {
    /// Ping a WebSocket quiet this long. Default 20 s.
    pub ping_after: Duration,
    /// Close a WebSocket quiet this long, pings unanswered. Default 60 s
    /// (an MQTT client's own keep-alive is usually 60 s or less).
    pub close_after: Duration,
}

impl Default for WsTimeouts {
    fn default() -> Self {
        WsTimeouts {
            ping_after: Duration::from_secs(20),
            close_after: Duration::from_secs(60),
        }
    }
}

/// Serves only the bridge on `listener` (any path), with the default
/// guards of [`super::Hooks::default`], until the process ends. For a
/// broker running alone (its tests); the daemon serves `broker.ws_listen`
/// through [`super::serve`] with the configured guards.
pub async fn serve_websocket(
    listener: tokio::net::TcpListener,
    target: SocketAddr,
) -> io::Result<()> {
    super::serve_listeners(
        None,
        Some(listener),
        super::PageConfig::default(),
        Some(target),
        super::Hooks::default(),
        std::future::pending(),
    )
    .await
}

/// Where to connect for a broker listening on `addr`: the loopback
/// address of the same family for a wildcard address, else `addr`.
pub fn connect_target(addr: SocketAddr) -> SocketAddr {
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

/// Accepts the upgrade and bridges the socket to `target`.
pub(crate) fn upgrade(
    ws: WebSocketUpgrade,
    target: SocketAddr,
    timeouts: WsTimeouts,
    stop: watch::Receiver<bool>,
) -> Response {
    ws.protocols(["mqtt", "mqttv3.1"])
        .max_message_size(MAX_PACKET + 1024)
        .max_frame_size(MAX_PACKET + 1024)
        .on_upgrade(move |socket| bridge(socket, connect_target(target), timeouts, stop))
}

/// Pipes one WebSocket to a fresh TCP connection to the broker, both ways,
/// until either side closes.
async fn bridge(
    socket: WebSocket,
    target: SocketAddr,
    timeouts: WsTimeouts,
    mut stop: watch::Receiver<bool>,
) {
    let tcp = match tokio::time::timeout(BRIDGE_CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%target, "MQTT WebSocket bridge cannot reach the broker: {e}");
            return;
        }
        Err(_) => {
            warn!(%target, "MQTT WebSocket bridge timed out reaching the broker");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let (mut ws_tx, mut ws_rx) = socket.split();
    // When the browser last sent anything, in ms after `start`.
    let start = Instant::now();
    let heard = AtomicU64::new(0);
    let since_start = || start.elapsed().as_millis() as u64;

    let up = async {
        while let Some(msg) = ws_rx.next().await {
            heard.store(since_start(), Ordering::Relaxed);
            match msg {
                Ok(Message::Binary(data)) => {
                    if tcp_tx.write_all(&data).await.is_err() {
                        break;
                    }
                }
                // MQTT over WebSocket is binary only (MQTT 3.1.1, 6.0).
                Ok(Message::Text(_)) => {
                    debug!("text frame on an MQTT WebSocket, closing");
                    break;
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut tick =
            tokio::time::interval(timeouts.ping_after.max(Duration::from_millis(10)) / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = tcp_rx.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws_tx.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                },
                _ = tick.tick() => {
                    match ws_keepalive(
                        Duration::from_millis(since_start().saturating_sub(heard.load(Ordering::Relaxed))),
                        timeouts.ping_after,
                        timeouts.close_after,
                    ) {
                        Keepalive::Wait => {}
                        Keepalive::Ping => {
                            if ws_tx.send(Message::Ping(Vec::new())).await.is_err() {
                                break;
                            }
                        }
                        Keepalive::Close => {
                            debug!("MQTT WebSocket silent, pings unanswered; closing");
                            break;
                        }
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}
