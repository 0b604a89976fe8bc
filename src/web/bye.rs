//! `POST /bye/{sid}`: a viewer's `bye` as its page goes away.
//!
//! A page that is closing publishes its `bye` over MQTT, but the page's
//! WebSocket closes with it and the message does not get out: the device
//! would send video to a closed page until ICE gave up (~10 s), holding one
//! of its `max_sessions`. The page also sends the same message with
//! `navigator.sendBeacon`, which browsers deliver after the page is gone.
//!
//! The body is the exact message the page publishes on
//! `session/{sid}/in` (docs/protocol.md), and it goes to the same place as
//! that message would: the session table, which checks its `mac` for a
//! signed device. Only `bye` is taken here; offers, candidates and the rest
//! travel over MQTT only. Like `POST /claim`: JSON only (a cross-site form
//! cannot send it without a CORS preflight, never granted) from an allowed
//! origin, with a small body.

use super::{check_origin, header_str, is_json, plain, plain_text};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use std::time::Duration;
use tokio::sync::mpsc;

/// A `bye` is ~120 bytes with its mac.
pub const MAX_BYE_BODY: usize = 1024;
/// How many byes may wait for the daemon's loop.
pub const BYE_QUEUE: usize = 16;

/// Where accepted byes go: (sid, the message's bytes).
pub type ByeSender = mpsc::Sender<(String, Vec<u8>)>;

/// Whether `body` is a JSON object whose `type` is `bye`.
fn is_bye(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("bye"))
}

/// Answers `POST /bye/{sid}` (the route has checked the method).
pub async fn handle(tx: &ByeSender, origins: &[String], req: Request) -> Response {
    let h = req.headers();
    if !is_json(h) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /bye/{sid} takes Content-Type: application/json\n",
        );
    }
    if let Err(why) = check_origin(
        header_str(h, header::ORIGIN),
        header_str(h, header::HOST),
        None,
        origins,
    ) {
        return plain_text(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    let sid = req
        .uri()
        .path()
        .strip_prefix("/bye/")
        .unwrap_or_default()
        .to_owned();
    if !crate::signaling::topics::validate_sid(&sid) {
        return plain(StatusCode::NOT_FOUND, "no such session id\n");
    }
    let body = axum::body::to_bytes(req.into_body(), MAX_BYE_BODY);
    let body = match tokio::time::timeout(Duration::from_secs(5), body).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "body too slow\n"),
    };
    if !is_bye(&body) {
        return plain(
            StatusCode::BAD_REQUEST,
            "only a `bye` message is taken here; the rest goes over MQTT\n",
        );
    }
    match tx.try_send((sid, body.to_vec())) {
        Ok(()) => plain(StatusCode::ACCEPTED, "accepted\n"),
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "busy, try MQTT\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_bye;

    #[test]
    fn only_a_json_bye_is_taken() {
        assert!(is_bye(br#"{"type":"bye"}"#));
        assert!(is_bye(br#"{"type":"bye","mac":"AAAA"}"#));
        for no in [
            &br#"{"type":"offer","sdp":"v=0"}"#[..],
            br#"{"type":1}"#,
            br#"["bye"]"#,
            b"bye",
            b"",
            b"\xff\xfe",
        ] {
            assert!(!is_bye(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
