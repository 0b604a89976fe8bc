//! JSON-RPC 2.0 on the `control` data channel (docs/protocol.md#the-control-data-channel).
//!
//! One [`RpcSession`] per WebRTC session turns each text message into at
//! most one reply. Checks run in this order, and the first failure is the
//! answer: rate (every message takes a token; when none is left a request
//! gets -32003, anything else is dropped unanswered), size (-32600), JSON
//! (-32700), envelope (-32600: one object, `"jsonrpc":"2.0"`, string
//! `method`, `id` a string, number or null), method (-32601), role
//! (-32001), params (-32602), control name (-32002), hardware (-32004).
//!
//! Invariants: a message without `id` is never answered (except an
//! envelope error, where JSON-RPC cannot tell and answers with `id` null);
//! every call to a state-changing method, allowed or not, writes one
//! `audit` line; no input panics. Time comes in as an argument
//! ([`RpcSession::handle_at`]), so the rate limit is tested without sleeps.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::config::Role;
use super::gpio::{GpioBank, GpioChange, GpioError, PULSE_MS};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a single JSON-RPC 2.0 request object (batches included).
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Missing or mistyped params.
pub const INVALID_PARAMS: i64 = -32602;
/// The session's role may not call the method.
pub const FORBIDDEN: i64 = -32001;
/// No control has that name.
pub const UNKNOWN_CONTROL: i64 = -32002;
/// Too many requests.
pub const RATE_LIMITED: i64 = -32003;
/// The line could not be read or driven.
pub const HARDWARE_ERROR: i64 = -32004;

/// Per-session limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcLimits {
    /// Largest accepted message, bytes.
    pub max_message_bytes: usize,
    /// Sustained messages per second.
    pub rate_per_sec: u32,
    /// Messages accepted at once after a quiet spell.
    pub burst: u32,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_message_bytes: 16 * 1024,
            rate_per_sec: 20,
            burst: 40,
        }
    }
}

pub use crate::ratelimit::TokenBucket;

/// Returns the presence object (docs/protocol.md#finding-devices-presence) for `device.info`.
pub type PresenceFn = Arc<dyn Fn() -> Value + Send + Sync>;
/// Asks the encoder for a keyframe, for `video.keyframe`.
pub type KeyframeFn = Arc<dyn Fn() + Send + Sync>;

/// What every session's methods act on. Cheap to clone.
#[derive(Clone)]
pub struct ControlContext {
    /// The GPIO controls.
    pub gpio: GpioBank,
    /// The current presence object.
    pub presence: PresenceFn,
    /// Requests a keyframe from the encoder.
    pub keyframe: KeyframeFn,
    /// Limits for every session.
    pub limits: RpcLimits,
    /// Makes `video.snapshot` (`None`: no video).
    pub snapshot: Option<Arc<crate::snapshot::Snapshotter>>,
}

impl fmt::Debug for ControlContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlContext")
            .field("gpio", &self.gpio)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ControlContext {
    /// A context with the default [`RpcLimits`].
    pub fn new(gpio: GpioBank, presence: PresenceFn, keyframe: KeyframeFn) -> Self {
        ControlContext {
            gpio,
            presence,
            keyframe,
            limits: RpcLimits::default(),
            snapshot: None,
        }
    }

    /// Serves `video.snapshot` from `snapshot`.
    pub fn with_snapshot(mut self, snapshot: Option<Arc<crate::snapshot::Snapshotter>>) -> Self {
        self.snapshot = snapshot;
        self
    }
}

/// Largest JPEG a `video.snapshot` reply carries (base64 makes it 4/3 as
/// large; the data channel takes messages up to 256 KiB).
pub const MAX_RPC_JPEG: usize = 180 * 1024;

/// What `prepare` made of a message: a reply now, or a snapshot to make.
enum Prepared {
    Done(Option<String>),
    Snapshot { id: Value, width: Option<u32> },
}

#[derive(Deserialize)]
struct SnapshotParams {
    #[serde(default)]
    width: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Ping,
    DeviceInfo,
    GpioList,
    GpioGet,
    GpioSet,
    GpioToggle,
    GpioPulse,
    VideoKeyframe,
}

impl Method {
    fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "ping" => Method::Ping,
            "device.info" => Method::DeviceInfo,
            "gpio.list" => Method::GpioList,
            "gpio.get" => Method::GpioGet,
            "gpio.set" => Method::GpioSet,
            "gpio.toggle" => Method::GpioToggle,
            "gpio.pulse" => Method::GpioPulse,
            "video.keyframe" => Method::VideoKeyframe,
            _ => return None,
        })
    }

    fn changes_state(self) -> bool {
        matches!(
            self,
            Method::GpioSet | Method::GpioToggle | Method::GpioPulse
        )
    }

    fn role(self) -> Role {
        if self.changes_state() {
            Role::Control
        } else {
            Role::View
        }
    }
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn params(message: impl fmt::Display) -> Self {
        RpcError::new(INVALID_PARAMS, format!("invalid params: {message}"))
    }
}

#[derive(Deserialize)]
struct NameParams {
    name: String,
}

#[derive(Deserialize)]
struct SetParams {
    name: String,
    value: bool,
}

#[derive(Deserialize)]
struct PulseParams {
    name: String,
    ms: u64,
}

/// One session's side of the `control` channel.
#[derive(Debug)]
pub struct RpcSession {
    role: Role,
    sid: String,
    key_id: Option<String>,
    limiter: TokenBucket,
    /// The session (its table id) that owns what this channel drives, for
    /// `revert_on_end`; `None` drives as the device itself.
    owner: Option<u64>,
}

impl RpcSession {
    /// `key_id` is the verified access key (`None` in open mode).
    pub fn new(
        sid: impl Into<String>,
        key_id: Option<String>,
        role: Role,
        limits: &RpcLimits,
    ) -> Self {
        RpcSession {
            role,
            sid: sid.into(),
            key_id,
            limiter: TokenBucket::new(limits.rate_per_sec, limits.burst),
            owner: None,
        }
    }

    /// Outputs this channel drives belong to session `id` (its unique table
    /// id): [`GpioBank::session_ended`](super::gpio::GpioBank::session_ended)
    /// with it reverts those with `revert_on_end`.
    pub fn for_session(mut self, id: u64) -> Self {
        self.owner = Some(id);
        self
    }

    /// The session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Handles one text message; returns the reply to send, if any.
    pub async fn handle(&mut self, text: &str, ctx: &ControlContext) -> Option<String> {
        match self.prepare(text, ctx, crate::clock::monotonic_us()) {
            Prepared::Done(reply) => reply,
            Prepared::Snapshot { id, width } => {
                let made = match &ctx.snapshot {
                    Some(s) => Some(s.jpeg(width).await),
                    None => None,
                };
                Some(snapshot_reply(&id, made))
            }
        }
    }

    /// [`RpcSession::handle`] at device time `now_us` (CLOCK_MONOTONIC µs:
    /// it is also what `ping` reports). Must run within a tokio runtime for
    /// `gpio.pulse` (which otherwise answers -32004).
    /// `video.snapshot` is encoded on the calling thread here.
    pub fn handle_at(&mut self, text: &str, ctx: &ControlContext, now_us: u64) -> Option<String> {
        match self.prepare(text, ctx, now_us) {
            Prepared::Done(reply) => reply,
            Prepared::Snapshot { id, width } => {
                let made = ctx.snapshot.as_ref().map(|s| s.jpeg_blocking(width));
                Some(snapshot_reply(&id, made))
            }
        }
    }

    fn prepare(&mut self, text: &str, ctx: &ControlContext, now_us: u64) -> Prepared {
        let allowed = self.limiter.try_take(now_us);
        if text.len() > ctx.limits.max_message_bytes {
            if !allowed {
                return Prepared::Done(None);
            }
            let message = format!(
                "message of {} bytes is above the {}-byte limit",
                text.len(),
                ctx.limits.max_message_bytes
            );
            return Prepared::Done(Some(error_reply(
                &Value::Null,
                &RpcError::new(INVALID_REQUEST, message),
            )));
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(err) if allowed => {
                let error = RpcError::new(PARSE_ERROR, format!("parse error: {err}"));
                return Prepared::Done(Some(error_reply(&Value::Null, &error)));
            }
            Err(_) => return Prepared::Done(None),
        };
        let request = match Envelope::parse(&value) {
            Ok(request) => request,
            Err((id, error)) => {
                return Prepared::Done(allowed.then(|| error_reply(&id, &error)));
            }
        };
        if !allowed {
            let error = RpcError::new(RATE_LIMITED, "rate limited: too many requests");
            return Prepared::Done(request.id.map(|id| error_reply(id, &error)));
        }
        if request.method == "video.snapshot" {
            // Read-only, for every role; a notification makes nothing.
            let Some(id) = request.id else {
                return Prepared::Done(None);
            };
            return match snapshot_params(request.params) {
                Ok(width) => Prepared::Snapshot {
                    id: id.clone(),
                    width,
                },
                Err(error) => Prepared::Done(Some(error_reply(id, &error))),
            };
        }
        let outcome = self.call(&request, ctx, now_us);
        let Some(id) = request.id else {
            return Prepared::Done(None);
        };
        Prepared::Done(Some(match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
            Err(error) => error_reply(id, &error),
        }))
    }

    fn call(
        &self,
        request: &Envelope<'_>,
        ctx: &ControlContext,
        now_us: u64,
    ) -> Result<Value, RpcError> {
        let Some(method) = Method::parse(request.method) else {
            let message = format!("unknown method {:?}", truncate(request.method, 64));
            return Err(RpcError::new(METHOD_NOT_FOUND, message));
        };
        let outcome = self.call_method(method, request.params, ctx, now_us);
        if method.changes_state() {
            self.audit(request, &outcome);
        }
        outcome
    }

    fn call_method(
        &self,
        method: Method,
        params: Option<&Value>,
        ctx: &ControlContext,
        now_us: u64,
    ) -> Result<Value, RpcError> {
        if self.role < method.role() {
            return Err(RpcError::new(
                FORBIDDEN,
                format!(
                    "forbidden: a {} session may not call this method",
                    self.role
                ),
            ));
        }
        let gpio = &ctx.gpio;
        match method {
            Method::Ping => {
                no_params(params)?;
                Ok(json!({ "now_us": now_us }))
            }
            Method::DeviceInfo => {
                no_params(params)?;
                Ok((ctx.presence)())
            }
            Method::VideoKeyframe => {
                no_params(params)?;
                (ctx.keyframe)();
                Ok(json!({}))
            }
            Method::GpioList => {
                no_params(params)?;
                let list = gpio.list().map_err(gpio_error)?;
                serde_json::to_value(list).map_err(|e| RpcError::new(HARDWARE_ERROR, e.to_string()))
            }
            Method::GpioGet => {
                let p: NameParams = object_params(params)?;
                let value = gpio.get(&p.name).map_err(gpio_error)?;
                Ok(json!({"name": p.name, "value": value}))
            }
            Method::GpioSet => {
                let p: SetParams = object_params(params)?;
                let value = gpio
                    .set_by(self.owner, &p.name, p.value)
                    .map_err(gpio_error)?;
                Ok(json!({"name": p.name, "value": value}))
            }
            Method::GpioToggle => {
                let p: NameParams = object_params(params)?;
                let value = gpio.toggle_by(self.owner, &p.name).map_err(gpio_error)?;
                Ok(json!({"name": p.name, "value": value}))
            }
            Method::GpioPulse => {
                let p: PulseParams = object_params(params)?;
                if !PULSE_MS.contains(&p.ms) {
                    return Err(RpcError::params(format_args!(
                        "ms must be {}..={}",
                        PULSE_MS.start(),
                        PULSE_MS.end()
                    )));
                }
                let outcome = gpio
                    .pulse_by(self.owner, &p.name, p.ms)
                    .map_err(gpio_error)?;
                let mut result = json!({"name": p.name, "value": outcome.value});
                if outcome.capped {
                    // The output's max_on_ms cut the pulse to this.
                    result["capped_ms"] = json!(outcome.ms);
                }
                Ok(result)
            }
        }
    }

    fn audit(&self, request: &Envelope<'_>, outcome: &Result<Value, RpcError>) {
        let params = request.params.map_or_else(
            || "null".to_owned(),
            |p| truncate(&p.to_string(), 256).to_owned(),
        );
        let result = match outcome {
            Ok(value) => value.to_string(),
            Err(error) => format!("error {} {}", error.code, error.message),
        };
        tracing::info!(
            target: "audit",
            sid = %self.sid,
            key = %self.key_id.as_deref().unwrap_or("-"),
            role = %self.role,
            method = %crate::logtext::clip(request.method),
            params = %params,
            result = %truncate(&result, 256),
            "control call"
        );
    }
}

/// A parsed request or notification.
struct Envelope<'a> {
    /// `None` for a notification.
    id: Option<&'a Value>,
    method: &'a str,
    params: Option<&'a Value>,
}

impl<'a> Envelope<'a> {
    fn parse(value: &'a Value) -> Result<Envelope<'a>, (Value, RpcError)> {
        let invalid = |id: &Value, message: &str| {
            Err((
                id.clone(),
                RpcError::new(INVALID_REQUEST, format!("invalid request: {message}")),
            ))
        };
        let object: &Map<String, Value> = match value {
            Value::Object(object) => object,
            Value::Array(_) => return invalid(&Value::Null, "batches are not supported"),
            _ => return invalid(&Value::Null, "not a JSON-RPC object"),
        };
        let id = match object.get("id") {
            None => None,
            Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
            Some(_) => return invalid(&Value::Null, "id must be a string, a number or null"),
        };
        let reply_id = id.unwrap_or(&Value::Null);
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return invalid(reply_id, "jsonrpc must be \"2.0\"");
        }
        let Some(method) = object.get("method").and_then(Value::as_str) else {
            return invalid(reply_id, "method must be a string");
        };
        Ok(Envelope {
            id,
            method,
            params: object.get("params"),
        })
    }
}

/// `video.snapshot` params: none, or an object with an optional `width`.
fn snapshot_params(params: Option<&Value>) -> Result<Option<u32>, RpcError> {
    match params {
        None | Some(Value::Null) => Ok(None),
        Some(_) => Ok(object_params::<SnapshotParams>(params)?.width),
    }
}

/// The reply to `video.snapshot`: `made` is `None` without video.
fn snapshot_reply(
    id: &Value,
    made: Option<Result<crate::snapshot::Snapshot, crate::snapshot::SnapshotError>>,
) -> String {
    use crate::snapshot::SnapshotError;
    use base64::Engine as _;
    let error = match made {
        None => RpcError::new(HARDWARE_ERROR, "this device has no video"),
        Some(Ok(s)) if s.jpeg.len() > MAX_RPC_JPEG => RpcError::params(format_args!(
            "a {}-pixel-wide JPEG is {} bytes, above the {MAX_RPC_JPEG}-byte limit: ask for a smaller width",
            s.width,
            s.jpeg.len()
        )),
        Some(Ok(s)) => {
            let result = json!({
                "mime": "image/jpeg",
                "width": s.width,
                "height": s.height,
                "seq": s.seq,
                "capture_us": s.capture_us,
                "data": base64::engine::general_purpose::STANDARD.encode(&s.jpeg),
            });
            return json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        }
        Some(Err(e @ SnapshotError::BadWidth { .. })) => RpcError::params(e),
        Some(Err(e @ SnapshotError::Busy)) => RpcError::new(RATE_LIMITED, e.to_string()),
        Some(Err(e)) => RpcError::new(HARDWARE_ERROR, e.to_string()),
    };
    error_reply(id, &error)
}

/// A `gpio.changed` notification.
pub fn notification(change: &GpioChange) -> String {
    json!({"jsonrpc": "2.0", "method": "gpio.changed", "params": change}).to_string()
}

/// The reply to a binary message on the `control` channel.
pub fn binary_refused() -> String {
    let error = RpcError::new(
        INVALID_REQUEST,
        "invalid request: binary messages are not accepted",
    );
    error_reply(&Value::Null, &error)
}

fn error_reply(id: &Value, error: &RpcError) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": error.code, "message": error.message},
    })
    .to_string()
}

/// Methods without params accept none, null, or any object or array
/// (unknown fields are ignored, docs/protocol.md conventions).
fn no_params(params: Option<&Value>) -> Result<(), RpcError> {
    match params {
        None | Some(Value::Null | Value::Object(_) | Value::Array(_)) => Ok(()),
        Some(_) => Err(RpcError::params("params must be an object")),
    }
}

fn object_params<T: for<'de> Deserialize<'de>>(params: Option<&Value>) -> Result<T, RpcError> {
    match params {
        Some(value @ Value::Object(_)) => T::deserialize(value).map_err(RpcError::params),
        _ => Err(RpcError::params("params must be an object")),
    }
}

fn gpio_error(err: GpioError) -> RpcError {
    match &err {
        GpioError::UnknownControl { .. } => RpcError::new(UNKNOWN_CONTROL, err.to_string()),
        GpioError::NotAnOutput { .. } | GpioError::BadPulse { .. } => RpcError::params(&err),
        GpioError::Hardware { name, .. } => {
            // The details (driver, errno) go to the log, not to viewers.
            tracing::warn!(error = %err, "gpio hardware error");
            RpcError::new(
                HARDWARE_ERROR,
                format!("hardware error on control {name:?}"),
            )
        }
        GpioError::ShutDown
        | GpioError::SessionEnded
        | GpioError::NoRuntime
        | GpioError::Config(_)
        | GpioError::DirectionMismatch { .. } => {
            RpcError::new(HARDWARE_ERROR, format!("hardware error: {err}"))
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
