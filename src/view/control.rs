//! The viewer's side of the `control` data channel: calls the methods given
//! on the command line, in order, and collects replies and notifications.

use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// One `--call METHOD PARAMS` and what came back.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Value,
    /// The whole JSON-RPC response (`result` or `error`), once it arrived.
    pub response: Option<Value>,
}

/// Parses `--call` pairs: method, then params as JSON (`-` or empty for none).
pub fn parse_calls(raw: &[String]) -> anyhow::Result<Vec<Call>> {
    if !raw.len().is_multiple_of(2) {
        anyhow::bail!("--call takes two values: METHOD PARAMS");
    }
    raw.chunks(2)
        .map(|pair| {
            let params = match pair[1].trim() {
                "" | "-" => Value::Null,
                text => serde_json::from_str(text)
                    .map_err(|e| anyhow::anyhow!("--call {}: params are not JSON: {e}", pair[0]))?,
            };
            Ok(Call {
                method: pair[0].clone(),
                params,
                response: None,
            })
        })
        .collect()
}

/// Messages from the channel task to the viewer's main loop.
#[derive(Debug)]
pub enum ControlEvent {
    Open,
    Message(Value),
    Closed,
}

/// Runs the channel: sends the calls once open (ids 1..=n), forwards every
/// message that arrives.
pub async fn run_channel(
    dc: Arc<dyn DataChannel>,
    raw: Vec<String>,
    calls: Vec<Call>,
    tx: mpsc::Sender<ControlEvent>,
) {
    while let Some(ev) = dc.poll().await {
        match ev {
            DataChannelEvent::OnOpen => {
                let _ = tx.send(ControlEvent::Open).await;
                for text in &raw {
                    if let Err(e) = dc.send_text(text).await {
                        warn!("cannot send raw text: {e}");
                    }
                }
                for (i, c) in calls.iter().enumerate() {
                    let mut req = json!({"jsonrpc": "2.0", "id": i + 1, "method": c.method});
                    if !c.params.is_null() {
                        req["params"] = c.params.clone();
                    }
                    if let Err(e) = dc.send_text(&req.to_string()).await {
                        warn!("cannot send {}: {e}", c.method);
                    }
                }
            }
            DataChannelEvent::OnMessage(m) => {
                let v = serde_json::from_slice(&m.data).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&m.data).into_owned())
                });
                debug!("control: {v}");
                if tx.send(ControlEvent::Message(v)).await.is_err() {
                    break;
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = tx.send(ControlEvent::Closed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_in_pairs() {
        let raw: Vec<String> = ["gpio.toggle", r#"{"name":"gate"}"#, "ping", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let calls = parse_calls(&raw).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].params["name"], "gate");
        assert!(calls[1].params.is_null());
        assert!(parse_calls(&raw[..1]).is_err());
        assert!(parse_calls(&["x".into(), "{bad".into()]).is_err());
    }
}
