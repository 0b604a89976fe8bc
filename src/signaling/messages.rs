//! Signaling messages (docs/protocol.md#opening-a-session), both directions.
//!
//! Every type here serializes to, and parses from, exactly the JSON of the
//! protocol, so the device and the project's viewer share one definition.
//!
//! Parsing is done by hand on a `serde_json::Value` rather than by serde's
//! derived, internally tagged enums, for two reasons:
//! - the protocol's `candidate` field is required but may be `null`
//!   (`null` = end of candidates, missing = `bad_request`), which derived
//!   `Option` fields cannot express;
//! - a refused message gets an `error` whose `message` a person reads, so
//!   it has to say plainly what is wrong (`missing field \`sdp\``,
//!   `` `sdp` must be a string, not a number``) rather than serde's internals.
//!
//! The `Deserialize` impls go through the same code (`try_from = Value`),
//! so there is one parser per type. Unknown fields are ignored everywhere
//! (forward compatibility); parsing never panics, whatever the bytes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Largest signaling payload the device accepts, in bytes (64 KiB). Larger
/// payloads on a valid sid get [`ErrorCode::TooLarge`]; the caller checks
/// this before parsing.
pub const MAX_PAYLOAD: usize = 65536;

/// Longest piece of a refused value quoted back in an error message.
const QUOTE_MAX: usize = 64;

/// The `code` of an `error` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, a missing or mistyped field, unparsable SDP, or a bad sid.
    BadRequest,
    /// Missing or wrong `auth`, or a role the key may not have.
    Unauthorized,
    /// Session limit reached, or offers arriving too fast.
    Busy,
    /// The offer has nothing the device can send.
    Unsupported,
    /// The payload is larger than [`MAX_PAYLOAD`].
    TooLarge,
    /// The device failed; not the viewer's fault.
    Internal,
}

impl ErrorCode {
    /// Every code, in protocol order.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Busy,
        ErrorCode::Unsupported,
        ErrorCode::TooLarge,
        ErrorCode::Internal,
    ];

    /// The wire spelling, e.g. `bad_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Busy => "busy",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code spelled `s` on the wire.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `reason` of a device's `bye`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// The daemon is stopping.
    Shutdown,
    /// The session did not connect in time.
    Timeout,
    /// ICE failed, or stayed disconnected too long.
    Failed,
    /// Another session took this one's place.
    Replaced,
    /// The session ended normally (the viewer said `bye`, or the peer
    /// connection closed).
    Closed,
}

impl ByeReason {
    /// Every reason, in protocol order.
    pub const ALL: [ByeReason; 5] = [
        ByeReason::Shutdown,
        ByeReason::Timeout,
        ByeReason::Failed,
        ByeReason::Replaced,
        ByeReason::Closed,
    ];

    /// The wire spelling, e.g. `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::Shutdown => "shutdown",
            ByeReason::Timeout => "timeout",
            ByeReason::Failed => "failed",
            ByeReason::Replaced => "replaced",
            ByeReason::Closed => "closed",
        }
    }

    /// The reason spelled `s` on the wire.
    pub fn from_wire(s: &str) -> Option<ByeReason> {
        ByeReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for ByeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `auth` object of an offer (docs/protocol.md#authorization-protocol-version-2). Parsing checks
/// shapes only (three strings): whether the key exists, the role is
/// `view`/`control` and allowed, and the signature is right is decided by
/// `signaling::auth`, and answered with `unauthorized`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct OfferAuth {
    /// The access key's id.
    pub key: String,
    /// The role asked for, exactly as sent (it is covered by the
    /// signature): `view` or `control` for a valid offer.
    pub role: String,
    /// The device nonce the offer is signed over (version 2). A version-1
    /// `auth` has none; it parses, and authorization refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// base64url (no padding) HMAC-SHA256 over the offer, see section 5.
    pub sig: String,
}

/// An ICE candidate, shaped like the browser's `RTCIceCandidateInit`.
///
/// On the wire, `candidate` is required; `sdpMid` and `sdpMLineIndex` may
/// be missing or `null` (and are written as `null` when absent);
/// `usernameFragment` may be missing or `null` (and is left out when
/// absent). An empty `candidate` string is accepted as browsers send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct CandidateInit {
    /// The `candidate:` attribute line, without `a=`.
    pub candidate: String,
    /// The media stream id the candidate belongs to.
    #[serde(rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    /// The index of the m-line the candidate belongs to.
    #[serde(rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    /// The ICE ufrag the candidate belongs to.
    #[serde(rename = "usernameFragment", skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A message from a viewer, on `B/session/{sid}/in`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "Value")]
pub enum ViewerMessage {
    /// Start session `sid`, or renegotiate it.
    Offer {
        /// The viewer's SDP offer.
        sdp: String,
        /// Required when the device has access keys; left out when `None`.
        #[serde(skip_serializing_if = "Option::is_none")]
        auth: Option<OfferAuth>,
    },
    /// A trickled candidate; `None` (JSON `null`) ends the candidates.
    Candidate {
        /// The candidate, or `None` for end of candidates.
        candidate: Option<CandidateInit>,
    },
    /// End the session now.
    Bye,
    /// Ask for ICE servers (section 8); not a session.
    IceRequest {
        /// Required on a signed device; left out when `None`.
        #[serde(skip_serializing_if = "Option::is_none")]
        auth: Option<IceAuth>,
    },
}

/// The `auth` of an `ice_request`: key, nonce and signature, no role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceAuth {
    /// The access key's id.
    pub key: String,
    /// The device nonce the request is signed over.
    pub nonce: String,
    /// b64u HMAC-SHA256 over the request (section 8).
    pub sig: String,
}

/// One STUN or TURN server as a browser's `RTCIceServer` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerEntry {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
}

/// A message from the device, on `B/session/{sid}/out`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "Value")]
pub enum DeviceMessage {
    /// The device's SDP answer.
    Answer {
        /// The answer.
        sdp: String,
    },
    /// A trickled candidate; `None` (JSON `null`) when gathering is complete.
    Candidate {
        /// The candidate, or `None` when gathering is complete.
        candidate: Option<CandidateInit>,
    },
    /// The device ended the session.
    Bye {
        /// Why.
        reason: ByeReason,
    },
    /// The last message was refused; a refused offer leaves no session.
    Error {
        /// What kind of refusal.
        code: ErrorCode,
        /// For people.
        message: String,
        /// With `busy`: where to watch instead (the relay extension,
        /// docs/protocol.md "Watching through a relay").
        #[serde(skip_serializing_if = "Option::is_none", default)]
        relay: Option<Box<RelayOffer>>,
    },
    /// The viewer's ICE servers (section 8): sealed for its key on a
    /// signed device (`servers_x`), in clear on an open one (`servers`).
    Ice {
        /// b64u of the servers' JSON XOR the reply's keystream.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        servers_x: Option<String>,
        /// The servers in clear (open devices only).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        servers: Option<Vec<IceServerEntry>>,
        /// Unix time after which the credentials stop working; 0: never.
        expires: u64,
    },
}

/// Where to watch instead of the device: a Janus Streaming mountpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOffer {
    /// Janus's HTTP API for viewers.
    pub janus: String,
    /// The mountpoint id.
    pub mountpoint: u64,
    /// The PIN in clear (open devices only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pin: Option<String>,
    /// The PIN encrypted under the session key (signed devices).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pin_x: Option<String>,
    /// The relay object's own mac (signed devices).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<String>,
}

impl DeviceMessage {
    /// An error with no relay.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> DeviceMessage {
        DeviceMessage::Error {
            code,
            message: message.into(),
            relay: None,
        }
    }
}

/// Fallback JSON if encoding ever failed (it cannot for these types: no
/// maps with non-string keys, no fallible custom serializers).
const ENCODE_FAILED: &str =
    r#"{"type":"error","code":"internal","message":"cannot encode the message"}"#;

impl DeviceMessage {
    /// The message as one line of JSON, ready to publish.
    pub fn to_json(&self) -> String {
        to_json_or_internal(self)
    }
}

impl ViewerMessage {
    /// The message as one line of JSON, ready to publish.
    pub fn to_json(&self) -> String {
        to_json_or_internal(self)
    }
}

impl DeviceMessage {
    /// The message as JSON with `mac` added when there is one (docs/protocol.md
    /// section 5: every message of a signed session after the offer).
    pub fn to_json_with_mac(&self, mac: Option<&str>) -> String {
        with_mac(self, mac)
    }

    /// `type` and `body` of the message's `mac` (docs/protocol.md#authorization-protocol-version-2).
    pub fn mac_input(&self) -> (&'static str, String) {
        match self {
            DeviceMessage::Answer { sdp } => ("answer", sdp.clone()),
            DeviceMessage::Candidate { candidate } => {
                ("candidate", candidate_body(candidate.as_ref()))
            }
            DeviceMessage::Bye { reason } => ("bye", reason.as_str().to_owned()),
            DeviceMessage::Error { code, .. } => ("error", code.as_str().to_owned()),
            DeviceMessage::Ice {
                servers_x, expires, ..
            } => (
                "ice",
                format!("{}\n{expires}", servers_x.as_deref().unwrap_or("")),
            ),
        }
    }
}

impl ViewerMessage {
    /// The message as JSON with `mac` added when there is one.
    pub fn to_json_with_mac(&self, mac: Option<&str>) -> String {
        with_mac(self, mac)
    }

    /// `type` and `body` of the message's `mac`; `None` for an offer, which
    /// is signed instead (its `auth`).
    pub fn mac_input(&self) -> Option<(&'static str, String)> {
        match self {
            ViewerMessage::Offer { .. } => None,
            ViewerMessage::Candidate { candidate } => {
                Some(("candidate", candidate_body(candidate.as_ref())))
            }
            ViewerMessage::Bye => Some(("bye", String::new())),
            ViewerMessage::IceRequest { .. } => None,
        }
    }
}

/// The `mac` body of a candidate: `candidate + "\n" + sdpMid + "\n" +
/// sdpMLineIndex`, absent members as empty text; `end` for `null`.
pub fn candidate_body(c: Option<&CandidateInit>) -> String {
    match c {
        None => "end".to_owned(),
        Some(c) => format!(
            "{}\n{}\n{}",
            c.candidate,
            c.sdp_mid.as_deref().unwrap_or(""),
            c.sdp_mline_index.map(|i| i.to_string()).unwrap_or_default()
        ),
    }
}

fn with_mac<T: Serialize>(msg: &T, mac: Option<&str>) -> String {
    let Some(mac) = mac else {
        return to_json_or_internal(msg);
    };
    // Appended last, keeping the message's own field order.
    let text = to_json_or_internal(msg);
    match (text.strip_suffix('}'), serde_json::to_string(mac)) {
        (Some(head), Ok(mac)) if head.len() > 1 => format!("{head},\"mac\":{mac}}}"),
        _ => ENCODE_FAILED.to_owned(),
    }
}

/// The `mac` member of a parsed message: a string, or `None` when it is
/// missing or not a string (either way the message does not verify).
fn mac_field(value: &Value) -> Option<String> {
    value.get("mac").and_then(Value::as_str).map(str::to_owned)
}

fn to_json_or_internal<T: Serialize>(msg: &T) -> String {
    match serde_json::to_string(msg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot encode a signaling message: {e}");
            ENCODE_FAILED.to_owned()
        }
    }
}

/// A message that does not follow the protocol. `Display` is the human
/// message alone, suitable for the `message` of an `error` reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    /// The code to reply with (always [`ErrorCode::BadRequest`] from the
    /// parsers here).
    pub code: ErrorCode,
    /// What is wrong, e.g. ``missing field `sdp` ``.
    pub message: String,
}

impl ProtocolError {
    /// A `bad_request` saying `message`.
    pub fn bad_request(message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    /// The `error` reply for this refusal.
    pub fn to_device_message(&self) -> DeviceMessage {
        DeviceMessage::Error {
            code: self.code,
            message: self.message.clone(),
            relay: None,
        }
    }
}

/// Parses one viewer message (the payload of an `in` topic). The caller
/// has already checked the size against [`MAX_PAYLOAD`].
pub fn parse_viewer_message(payload: &[u8]) -> Result<ViewerMessage, ProtocolError> {
    ViewerMessage::try_from(parse_json(payload)?)
}

/// Parses one viewer message and its `mac`, if any.
pub fn parse_viewer_envelope(
    payload: &[u8],
) -> Result<(ViewerMessage, Option<String>), ProtocolError> {
    let value = parse_json(payload)?;
    let mac = mac_field(&value);
    Ok((ViewerMessage::try_from(value)?, mac))
}

/// Parses one device message and its `mac`, if any.
pub fn parse_device_envelope(
    payload: &[u8],
) -> Result<(DeviceMessage, Option<String>), ProtocolError> {
    let value = parse_json(payload)?;
    let mac = mac_field(&value);
    Ok((DeviceMessage::try_from(value)?, mac))
}

/// Parses one device message (the payload of an `out` topic).
pub fn parse_device_message(payload: &[u8]) -> Result<DeviceMessage, ProtocolError> {
    DeviceMessage::try_from(parse_json(payload)?)
}

fn parse_json(payload: &[u8]) -> Result<Value, ProtocolError> {
    serde_json::from_slice(payload)
        .map_err(|e| ProtocolError::bad_request(format!("not JSON: {e}")))
}

impl TryFrom<Value> for ViewerMessage {
    type Error = ProtocolError;

    fn try_from(value: Value) -> Result<Self, ProtocolError> {
        let obj = message_object(&value)?;
        match message_type(obj)? {
            "offer" => Ok(ViewerMessage::Offer {
                sdp: required_string(obj, "sdp", "")?,
                auth: match obj.get("auth") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(OfferAuth::from_value(v, "auth")?),
                },
            }),
            "candidate" => Ok(ViewerMessage::Candidate {
                candidate: candidate_field(obj)?,
            }),
            "bye" => Ok(ViewerMessage::Bye),
            "ice_request" => Ok(ViewerMessage::IceRequest {
                auth: match obj.get("auth") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        let a = field_object(v, "auth")?;
                        Some(IceAuth {
                            key: required_string(a, "key", "auth.")?,
                            nonce: required_string(a, "nonce", "auth.")?,
                            sig: required_string(a, "sig", "auth.")?,
                        })
                    }
                },
            }),
            other => Err(unknown_type(other)),
        }
    }
}

impl TryFrom<Value> for DeviceMessage {
    type Error = ProtocolError;

    fn try_from(value: Value) -> Result<Self, ProtocolError> {
        let obj = message_object(&value)?;
        match message_type(obj)? {
            "answer" => Ok(DeviceMessage::Answer {
                sdp: required_string(obj, "sdp", "")?,
            }),
            "candidate" => Ok(DeviceMessage::Candidate {
                candidate: candidate_field(obj)?,
            }),
            "bye" => {
                let reason = required_string(obj, "reason", "")?;
                let reason = ByeReason::from_wire(&reason).ok_or_else(|| {
                    ProtocolError::bad_request(format!("unknown bye reason {}", quote(&reason)))
                })?;
                Ok(DeviceMessage::Bye { reason })
            }
            "error" => {
                let code = required_string(obj, "code", "")?;
                let code = ErrorCode::from_wire(&code).ok_or_else(|| {
                    ProtocolError::bad_request(format!("unknown error code {}", quote(&code)))
                })?;
                // A relay that does not parse is no relay: the refusal stands.
                let relay = obj
                    .get("relay")
                    .and_then(|r| serde_json::from_value::<RelayOffer>(r.clone()).ok())
                    .map(Box::new);
                Ok(DeviceMessage::Error {
                    code,
                    message: required_string(obj, "message", "")?,
                    relay,
                })
            }
            "ice" => Ok(DeviceMessage::Ice {
                servers_x: optional_string(obj, "servers_x", "")?,
                servers: match obj.get("servers") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        serde_json::from_value(v.clone())
                            .map_err(|e| ProtocolError::bad_request(format!("`servers`: {e}")))?,
                    ),
                },
                expires: obj.get("expires").and_then(Value::as_u64).ok_or_else(|| {
                    ProtocolError::bad_request("`expires` must be a whole number of seconds")
                })?,
            }),
            other => Err(unknown_type(other)),
        }
    }
}

impl TryFrom<Value> for OfferAuth {
    type Error = ProtocolError;

    fn try_from(value: Value) -> Result<Self, ProtocolError> {
        OfferAuth::from_value(&value, "auth")
    }
}

impl OfferAuth {
    /// Parses the object at `path` (used in error messages).
    fn from_value(value: &Value, path: &str) -> Result<OfferAuth, ProtocolError> {
        let obj = field_object(value, path)?;
        let prefix = format!("{path}.");
        Ok(OfferAuth {
            key: required_string(obj, "key", &prefix)?,
            role: required_string(obj, "role", &prefix)?,
            nonce: optional_string(obj, "nonce", &prefix)?,
            sig: required_string(obj, "sig", &prefix)?,
        })
    }
}

impl TryFrom<Value> for CandidateInit {
    type Error = ProtocolError;

    fn try_from(value: Value) -> Result<Self, ProtocolError> {
        CandidateInit::from_value(&value, "candidate")
    }
}

impl CandidateInit {
    /// Parses the object at `path` (used in error messages).
    fn from_value(value: &Value, path: &str) -> Result<CandidateInit, ProtocolError> {
        let obj = field_object(value, path)?;
        let prefix = format!("{path}.");
        let sdp_mline_index = match obj.get("sdpMLineIndex") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        ProtocolError::bad_request(format!(
                            "`{prefix}sdpMLineIndex` must be an integer from 0 to 65535 or null, not {}",
                            describe(v)
                        ))
                    })?,
            ),
        };
        Ok(CandidateInit {
            candidate: required_string(obj, "candidate", &prefix)?,
            sdp_mid: optional_string(obj, "sdpMid", &prefix)?,
            sdp_mline_index,
            username_fragment: optional_string(obj, "usernameFragment", &prefix)?,
        })
    }
}

/// The top-level object of a message.
fn message_object(value: &Value) -> Result<&Map<String, Value>, ProtocolError> {
    match value {
        Value::Object(obj) => Ok(obj),
        Value::Array(_) => Err(ProtocolError::bad_request(
            "expected one JSON object, got an array (batches are not supported)",
        )),
        other => Err(ProtocolError::bad_request(format!(
            "expected a JSON object, got {}",
            describe(other)
        ))),
    }
}

fn message_type(obj: &Map<String, Value>) -> Result<&str, ProtocolError> {
    match obj.get("type") {
        None => Err(ProtocolError::bad_request("missing field `type`")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ProtocolError::bad_request(format!(
            "`type` must be a string, not {}",
            describe(other)
        ))),
    }
}

fn unknown_type(t: &str) -> ProtocolError {
    ProtocolError::bad_request(format!("unknown type {}", quote(t)))
}

/// The `candidate` field: required, an object or `null`.
fn candidate_field(obj: &Map<String, Value>) -> Result<Option<CandidateInit>, ProtocolError> {
    match obj.get("candidate") {
        None => Err(ProtocolError::bad_request(
            "missing field `candidate` (use null for end of candidates)",
        )),
        Some(Value::Null) => Ok(None),
        Some(v) => CandidateInit::from_value(v, "candidate").map(Some),
    }
}

fn field_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ProtocolError> {
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(ProtocolError::bad_request(format!(
            "`{path}` must be an object, not {}",
            describe(other)
        ))),
    }
}

/// A required string field; `prefix` names the enclosing object in messages.
fn required_string(
    obj: &Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<String, ProtocolError> {
    match obj.get(name) {
        None => Err(ProtocolError::bad_request(format!(
            "missing field `{prefix}{name}`"
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ProtocolError::bad_request(format!(
            "`{prefix}{name}` must be a string, not {}",
            describe(other)
        ))),
    }
}

/// An optional string field that may also be `null`.
fn optional_string(
    obj: &Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<Option<String>, ProtocolError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ProtocolError::bad_request(format!(
            "`{prefix}{name}` must be a string or null, not {}",
            describe(other)
        ))),
    }
}

/// "a number", "an array", ... for error messages.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` quoted and escaped for an error message, cut to [`QUOTE_MAX`] chars
/// so a hostile viewer cannot make the device echo a whole payload.
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(QUOTE_MAX).collect();
        format!("{cut:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn viewer(v: Value) -> Result<ViewerMessage, ProtocolError> {
        parse_viewer_message(v.to_string().as_bytes())
    }

    fn device(v: Value) -> Result<DeviceMessage, ProtocolError> {
        parse_device_message(v.to_string().as_bytes())
    }

    fn viewer_err(v: Value) -> String {
        let e = viewer(v.clone()).expect_err(&format!("{v} must be refused"));
        assert_eq!(e.code, ErrorCode::BadRequest);
        e.message
    }

    fn cand() -> CandidateInit {
        CandidateInit {
            candidate: "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: Some("abcd".into()),
        }
    }

    #[test]
    fn offer_without_auth() {
        let m = viewer(json!({"type": "offer", "sdp": "v=0\r\n"})).unwrap();
        assert_eq!(
            m,
            ViewerMessage::Offer {
                sdp: "v=0\r\n".into(),
                auth: None
            }
        );
    }

    #[test]
    fn offer_with_auth() {
        let m = viewer(json!({"type": "offer", "sdp": "v=0",
            "auth": {"key": "k1", "role": "control", "sig": "AbC_-"}}))
        .unwrap();
        assert_eq!(
            m,
            ViewerMessage::Offer {
                sdp: "v=0".into(),
                auth: Some(OfferAuth {
                    key: "k1".into(),
                    role: "control".into(),
                    nonce: None,
                    sig: "AbC_-".into()
                })
            }
        );
    }

    #[test]
    fn offer_auth_role_is_kept_as_sent() {
        // An unknown role is for the authorizer to refuse (`unauthorized`),
        // and the exact text is what the signature covers.
        let m = viewer(json!({"type": "offer", "sdp": "x",
            "auth": {"key": "k", "role": "Admin ", "sig": "s"}}))
        .unwrap();
        let ViewerMessage::Offer {
            auth: Some(auth), ..
        } = m
        else {
            panic!("expected an offer with auth, got {m:?}")
        };
        assert_eq!(auth.role, "Admin ");
    }

    #[test]
    fn offer_auth_null_is_absent() {
        let m = viewer(json!({"type": "offer", "sdp": "x", "auth": null})).unwrap();
        assert!(matches!(m, ViewerMessage::Offer { auth: None, .. }));
    }

    #[test]
    fn offer_auth_shape_errors() {
        assert_eq!(
            viewer_err(json!({"type": "offer", "sdp": "x", "auth": "secret"})),
            "`auth` must be an object, not a string"
        );
        assert_eq!(
            viewer_err(json!({"type": "offer", "sdp": "x", "auth": {"key": "k", "role": "view"}})),
            "missing field `auth.sig`"
        );
        assert_eq!(
            viewer_err(
                json!({"type": "offer", "sdp": "x", "auth": {"key": "k", "role": 2, "sig": "s"}})
            ),
            "`auth.role` must be a string, not a number"
        );
        assert_eq!(
            viewer_err(
                json!({"type": "offer", "sdp": "x", "auth": {"key": 1, "role": "view", "sig": "s"}})
            ),
            "`auth.key` must be a string, not a number"
        );
    }

    #[test]
    fn offer_missing_or_mistyped_sdp() {
        assert_eq!(viewer_err(json!({"type": "offer"})), "missing field `sdp`");
        assert_eq!(
            viewer_err(json!({"type": "offer", "sdp": 5})),
            "`sdp` must be a string, not a number"
        );
        assert_eq!(
            viewer_err(json!({"type": "offer", "sdp": null})),
            "`sdp` must be a string, not null"
        );
    }

    #[test]
    fn candidate_object() {
        let m = viewer(json!({"type": "candidate", "candidate": {
            "candidate": "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}))
        .unwrap();
        assert_eq!(
            m,
            ViewerMessage::Candidate {
                candidate: Some(cand())
            }
        );
    }

    #[test]
    fn candidate_optional_members_may_be_missing_or_null() {
        for v in [
            json!({"type": "candidate", "candidate": {"candidate": "c"}}),
            json!({"type": "candidate", "candidate": {"candidate": "c",
                "sdpMid": null, "sdpMLineIndex": null, "usernameFragment": null}}),
        ] {
            let m = viewer(v).unwrap();
            assert_eq!(
                m,
                ViewerMessage::Candidate {
                    candidate: Some(CandidateInit {
                        candidate: "c".into(),
                        sdp_mid: None,
                        sdp_mline_index: None,
                        username_fragment: None
                    })
                }
            );
        }
    }

    #[test]
    fn candidate_null_ends_candidates() {
        let m = viewer(json!({"type": "candidate", "candidate": null})).unwrap();
        assert_eq!(m, ViewerMessage::Candidate { candidate: None });
    }

    #[test]
    fn candidate_missing_is_bad_request_not_end() {
        let msg = viewer_err(json!({"type": "candidate"}));
        assert!(msg.starts_with("missing field `candidate`"), "{msg}");
        // The same rule holds for the serde Deserialize impl.
        assert!(serde_json::from_str::<ViewerMessage>(r#"{"type":"candidate"}"#).is_err());
        assert!(serde_json::from_str::<DeviceMessage>(r#"{"type":"candidate"}"#).is_err());
    }

    #[test]
    fn candidate_member_errors() {
        assert_eq!(
            viewer_err(json!({"type": "candidate", "candidate": "candidate:1 ..."})),
            "`candidate` must be an object, not a string"
        );
        assert_eq!(
            viewer_err(json!({"type": "candidate", "candidate": {"sdpMid": "0"}})),
            "missing field `candidate.candidate`"
        );
        assert_eq!(
            viewer_err(json!({"type": "candidate", "candidate": {"candidate": "c", "sdpMid": 0}})),
            "`candidate.sdpMid` must be a string or null, not a number"
        );
        for idx in [json!(-1), json!(65536), json!(1.5), json!("0")] {
            let msg = viewer_err(json!({"type": "candidate",
                "candidate": {"candidate": "c", "sdpMLineIndex": idx}}));
            assert!(
                msg.starts_with("`candidate.sdpMLineIndex` must be an integer"),
                "{msg}"
            );
        }
        let ok = viewer(json!({"type": "candidate",
            "candidate": {"candidate": "c", "sdpMLineIndex": 65535}}))
        .unwrap();
        assert!(matches!(
            ok,
            ViewerMessage::Candidate {
                candidate: Some(CandidateInit {
                    sdp_mline_index: Some(65535),
                    ..
                })
            }
        ));
    }

    #[test]
    fn bye() {
        assert_eq!(viewer(json!({"type": "bye"})).unwrap(), ViewerMessage::Bye);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = viewer(json!({"type": "bye", "reason": "whatever", "x": [1, 2]})).unwrap();
        assert_eq!(m, ViewerMessage::Bye);
        let m = viewer(json!({"type": "offer", "sdp": "s", "extra": {"a": 1}})).unwrap();
        assert!(matches!(m, ViewerMessage::Offer { .. }));
        let m = viewer(json!({"type": "candidate",
            "candidate": {"candidate": "c", "future": true}}))
        .unwrap();
        assert!(matches!(m, ViewerMessage::Candidate { candidate: Some(_) }));
    }

    #[test]
    fn not_json() {
        for p in [
            &b""[..],
            b"{",
            b"offer",
            b"\xff\xfe",
            b"{\"type\":\"bye\"} trailing",
        ] {
            let e = parse_viewer_message(p).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.starts_with("not JSON: "), "{p:?}: {}", e.message);
        }
    }

    #[test]
    fn not_an_object() {
        assert_eq!(
            viewer_err(json!([{"type": "bye"}])),
            "expected one JSON object, got an array (batches are not supported)"
        );
        assert_eq!(
            viewer_err(json!("bye")),
            "expected a JSON object, got a string"
        );
        assert_eq!(viewer_err(json!(null)), "expected a JSON object, got null");
        assert_eq!(viewer_err(json!(3)), "expected a JSON object, got a number");
    }

    #[test]
    fn type_errors() {
        assert_eq!(viewer_err(json!({"sdp": "x"})), "missing field `type`");
        assert_eq!(
            viewer_err(json!({"type": 1})),
            "`type` must be a string, not a number"
        );
        assert_eq!(viewer_err(json!({"type": "foo"})), "unknown type \"foo\"");
        // Types are case-sensitive, and device-only types are unknown here.
        assert_eq!(
            viewer_err(json!({"type": "Offer", "sdp": "x"})),
            "unknown type \"Offer\""
        );
        assert_eq!(
            viewer_err(json!({"type": "answer", "sdp": "x"})),
            "unknown type \"answer\""
        );
    }

    #[test]
    fn quoted_values_are_escaped_and_bounded() {
        let long = "x".repeat(10_000);
        let msg = viewer_err(json!({"type": long}));
        assert!(msg.len() < 100, "{msg}");
        assert!(msg.ends_with("..."));
        let msg = viewer_err(json!({"type": "a\nb\u{1b}"}));
        assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg:?}");
    }

    #[test]
    fn hostile_payloads_do_not_panic() {
        let deep = "[".repeat(10_000);
        assert!(parse_viewer_message(deep.as_bytes()).is_err());
        let deep_obj = format!("{}{}", "{\"a\":".repeat(10_000), "1");
        assert!(parse_viewer_message(deep_obj.as_bytes()).is_err());
        assert!(parse_device_message(b"\0\0\0").is_err());
    }

    #[test]
    fn mutated_messages_never_panic() {
        use rand::{Rng, SeedableRng};
        let seeds = [
            r#"{"type":"offer","sdp":"v=0","auth":{"key":"k","role":"view","nonce":"n","sig":"s"}}"#,
            r#"{"type":"candidate","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#,
            r#"{"type":"bye","reason":"closed"}"#,
            r#"{"type":"error","code":"busy","message":"m"}"#,
        ];
        let noise = br#"{}[]":,0-9enul\ "#;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let mut b = seeds[rng.gen_range(0..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = noise[rng.gen_range(0..noise.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, rng.gen()),
                }
                if b.is_empty() {
                    break;
                }
            }
            if let Err(e) = parse_viewer_message(&b) {
                assert_eq!(e.code, ErrorCode::BadRequest);
                assert!(!e.message.is_empty());
            }
            let _ = parse_device_message(&b);
        }
    }

    #[test]
    fn viewer_messages_serialize_exactly() {
        let offer = ViewerMessage::Offer {
            sdp: "v=0".into(),
            auth: None,
        };
        assert_eq!(offer.to_json(), r#"{"type":"offer","sdp":"v=0"}"#);
        let offer = ViewerMessage::Offer {
            sdp: "v=0".into(),
            auth: Some(OfferAuth {
                key: "k".into(),
                role: "view".into(),
                nonce: Some("n".into()),
                sig: "s".into(),
            }),
        };
        assert_eq!(
            offer.to_json(),
            r#"{"type":"offer","sdp":"v=0","auth":{"key":"k","role":"view","nonce":"n","sig":"s"}}"#
        );
        assert_eq!(
            ViewerMessage::Candidate { candidate: None }.to_json(),
            r#"{"type":"candidate","candidate":null}"#
        );
        assert_eq!(ViewerMessage::Bye.to_json(), r#"{"type":"bye"}"#);
    }

    #[test]
    fn device_messages_serialize_exactly() {
        assert_eq!(
            DeviceMessage::Answer { sdp: "v=0".into() }.to_json(),
            r#"{"type":"answer","sdp":"v=0"}"#
        );
        assert_eq!(
            DeviceMessage::Candidate { candidate: None }.to_json(),
            r#"{"type":"candidate","candidate":null}"#
        );
        assert_eq!(
            DeviceMessage::Candidate {
                candidate: Some(cand())
            }
            .to_json(),
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#
        );
        assert_eq!(
            DeviceMessage::Bye {
                reason: ByeReason::Replaced
            }
            .to_json(),
            r#"{"type":"bye","reason":"replaced"}"#
        );
        assert_eq!(
            DeviceMessage::Error {
                code: ErrorCode::TooLarge,
                message: "big".into(),
                relay: None,
            }
            .to_json(),
            r#"{"type":"error","code":"too_large","message":"big"}"#
        );
    }

    #[test]
    fn absent_candidate_members_serialize_like_a_browser() {
        let c = CandidateInit {
            candidate: "c".into(),
            sdp_mid: None,
            sdp_mline_index: None,
            username_fragment: None,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"candidate":"c","sdpMid":null,"sdpMLineIndex":null}"#
        );
    }

    #[test]
    fn wire_spellings() {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            codes,
            [
                "bad_request",
                "unauthorized",
                "busy",
                "unsupported",
                "too_large",
                "internal"
            ]
        );
        let reasons: Vec<&str> = ByeReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            reasons,
            ["shutdown", "timeout", "failed", "replaced", "closed"]
        );
        // serde's spelling agrees with as_str.
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
            assert_eq!(ErrorCode::from_wire(c.as_str()), Some(c));
        }
        for r in ByeReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
            assert_eq!(ByeReason::from_wire(r.as_str()), Some(r));
        }
        assert_eq!(ErrorCode::from_wire("BadRequest"), None);
        assert_eq!(ByeReason::from_wire("Shutdown"), None);
    }

    #[test]
    fn a_relay_rides_on_busy_and_a_bad_one_is_no_relay() {
        let text = r#"{"type":"error","code":"busy","message":"watch through the relay",
            "relay":{"janus":"http://j:8088/janus","mountpoint":77,"pin_x":"abc","mac":"m"}}"#;
        let DeviceMessage::Error { code, relay, .. } =
            parse_device_message(text.as_bytes()).unwrap()
        else {
            panic!("not an error");
        };
        assert_eq!(code, ErrorCode::Busy);
        let r = relay.expect("a relay");
        assert_eq!(
            (r.janus.as_str(), r.mountpoint),
            ("http://j:8088/janus", 77)
        );
        assert_eq!((r.pin_x.as_deref(), r.pin.as_deref()), (Some("abc"), None));
        for bad in [
            r#"{"type":"error","code":"busy","message":"x","relay":{"janus":"http://j/","mountpoint":"77"}}"#,
            r#"{"type":"error","code":"busy","message":"x","relay":{"mountpoint":77}}"#,
            r#"{"type":"error","code":"busy","message":"x","relay":"http://j/"}"#,
        ] {
            match parse_device_message(bad.as_bytes()) {
                Ok(DeviceMessage::Error {
                    relay: None,
                    code: ErrorCode::Busy,
                    ..
                }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Without a relay, the wire form is unchanged.
        assert!(!DeviceMessage::error(ErrorCode::Busy, "full")
            .to_json()
            .contains("relay"));
    }

    #[test]
    fn device_messages_round_trip() {
        let all = [
            DeviceMessage::Answer {
                sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n".into(),
            },
            DeviceMessage::Candidate {
                candidate: Some(cand()),
            },
            DeviceMessage::Candidate { candidate: None },
            DeviceMessage::Error {
                code: ErrorCode::Busy,
                message: "full \"now\"".into(),
                relay: None,
            },
        ]
        .into_iter()
        .chain(ByeReason::ALL.map(|reason| DeviceMessage::Bye { reason }))
        .chain(ErrorCode::ALL.map(|code| DeviceMessage::Error {
            code,
            message: String::new(),
            relay: None,
        }));
        for m in all {
            let json = m.to_json();
            assert_eq!(parse_device_message(json.as_bytes()).unwrap(), m, "{json}");
            assert_eq!(
                serde_json::from_str::<DeviceMessage>(&json).unwrap(),
                m,
                "{json}"
            );
        }
    }

    #[test]
    fn viewer_messages_round_trip() {
        let all = [
            ViewerMessage::Offer {
                sdp: "v=0".into(),
                auth: None,
            },
            ViewerMessage::Offer {
                sdp: "v=0".into(),
                auth: Some(OfferAuth {
                    key: "k".into(),
                    role: "control".into(),
                    nonce: Some("n".into()),
                    sig: "s".into(),
                }),
            },
            ViewerMessage::Candidate {
                candidate: Some(cand()),
            },
            ViewerMessage::Candidate { candidate: None },
            ViewerMessage::Bye,
        ];
        for m in all {
            let json = m.to_json();
            assert_eq!(parse_viewer_message(json.as_bytes()).unwrap(), m, "{json}");
            assert_eq!(
                serde_json::from_str::<ViewerMessage>(&json).unwrap(),
                m,
                "{json}"
            );
        }
    }

    #[test]
    fn device_message_errors() {
        let e = device(json!({"type": "bye", "reason": "bored"})).unwrap_err();
        assert_eq!(e.message, "unknown bye reason \"bored\"");
        let e = device(json!({"type": "bye"})).unwrap_err();
        assert_eq!(e.message, "missing field `reason`");
        let e = device(json!({"type": "error", "code": "nope", "message": "m"})).unwrap_err();
        assert_eq!(e.message, "unknown error code \"nope\"");
        let e = device(json!({"type": "error", "code": "busy"})).unwrap_err();
        assert_eq!(e.message, "missing field `message`");
        let e = device(json!({"type": "offer", "sdp": "x"})).unwrap_err();
        assert_eq!(e.message, "unknown type \"offer\"");
        let e = device(json!({"type": "answer"})).unwrap_err();
        assert_eq!(e.message, "missing field `sdp`");
    }

    #[test]
    fn protocol_error_becomes_error_reply() {
        let e = parse_viewer_message(b"{}").unwrap_err();
        assert_eq!(e.to_string(), "missing field `type`");
        assert_eq!(
            e.to_device_message().to_json(),
            r#"{"type":"error","code":"bad_request","message":"missing field `type`"}"#
        );
    }

    #[test]
    fn max_payload_is_64_kib() {
        assert_eq!(MAX_PAYLOAD, 64 * 1024);
    }

    #[test]
    fn mac_bodies_follow_the_protocol_table() {
        let c = CandidateInit {
            candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: Some("u".into()),
        };
        assert_eq!(
            candidate_body(Some(&c)),
            "candidate:1 1 udp 1 127.0.0.1 5000 typ host\n0\n0"
        );
        let bare = CandidateInit {
            sdp_mid: None,
            sdp_mline_index: None,
            ..c.clone()
        };
        assert_eq!(
            candidate_body(Some(&bare)),
            "candidate:1 1 udp 1 127.0.0.1 5000 typ host\n\n"
        );
        assert_eq!(candidate_body(None), "end");
        assert_eq!(ViewerMessage::Bye.mac_input(), Some(("bye", String::new())));
        let offer = ViewerMessage::Offer {
            sdp: "v=0".into(),
            auth: None,
        };
        assert_eq!(offer.mac_input(), None);
        let err = DeviceMessage::Error {
            code: ErrorCode::Unauthorized,
            message: "no".into(),
            relay: None,
        };
        assert_eq!(err.mac_input(), ("error", "unauthorized".to_owned()));
        let bye = DeviceMessage::Bye {
            reason: ByeReason::Timeout,
        };
        assert_eq!(bye.mac_input(), ("bye", "timeout".to_owned()));
    }

    #[test]
    fn mac_travels_with_the_message() {
        let bye = DeviceMessage::Bye {
            reason: ByeReason::Closed,
        };
        let text = bye.to_json_with_mac(Some("M"));
        assert_eq!(text, r#"{"type":"bye","reason":"closed","mac":"M"}"#);
        assert_eq!(
            parse_device_envelope(text.as_bytes()),
            Ok((bye.clone(), Some("M".to_owned())))
        );
        assert_eq!(bye.to_json_with_mac(None), bye.to_json());
        let (msg, mac) = parse_viewer_envelope(br#"{"type":"bye","mac":7}"#).expect("parses");
        assert_eq!((msg, mac), (ViewerMessage::Bye, None));
        let (_, mac) = parse_viewer_envelope(br#"{"type":"bye","mac":"x"}"#).expect("parses");
        assert_eq!(mac.as_deref(), Some("x"));
    }
}
