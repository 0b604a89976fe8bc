//! MQTT over WebSocket, bridged to an MQTT broker's TCP port.
//!
//! Browsers speak MQTT over WebSocket; brokers speak it over TCP. Each
//! WebSocket is bridged, byte for byte, to a fresh TCP connection to the
//! broker. Each handshake runs in its own task, and a
//! `Sec-WebSocket-Protocol: mqtt` header is answered only when asked for.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::broker::MAX_PAYLOAD;

/// How long a WebSocket bridge may take to reach the TCP listener.
const BRIDGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve_websocket(
    listener: tokio::net::TcpListener,
    target: SocketAddr,
) -> io::Result<()> {
    let app = axum::Router::new().fallback(upgrade).with_state(target);
    axum::serve(listener, app).await
}

async fn upgrade(State(target): State<SocketAddr>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["mqtt", "mqttv3.1"])
        .max_message_size(MAX_PAYLOAD + 1024)
        .max_frame_size(MAX_PAYLOAD + 1024)
        .on_upgrade(move |socket| bridge(socket, target))
}

/// Pipes one WebSocket to a fresh TCP connection to the broker, both ways,
/// until either side closes.
async fn bridge(socket: WebSocket, target: SocketAddr) {
    let tcp = match tokio::time::timeout(BRIDGE_CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%target, "embedded MQTT broker: WebSocket bridge cannot reach the TCP listener: {e}");
            return;
        }
        Err(_) => {
            warn!(%target, "embedded MQTT broker: WebSocket bridge timed out reaching the TCP listener");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let (mut ws_tx, mut ws_rx) = socket.split();

    let up = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(data)) => {
                    if tcp_tx.write_all(&data).await.is_err() {
                        break;
                    }
                }
                // MQTT over WebSocket is binary only (MQTT 3.1.1, 6.0).
                Ok(Message::Text(_)) => {
                    debug!("embedded MQTT broker: text frame on an MQTT WebSocket, closing");
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
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
