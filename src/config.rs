//! Configuration: a TOML file (every key has a default, unknown keys are
//! refused) with command-line flags laid over it.
//!
//! TODO(helper): loading, validation, flag overrides, check-config output.

use serde::{Deserialize, Serialize};

/// The whole daemon configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Device id, `[a-z0-9][a-z0-9_-]{0,62}`. Default: the host name,
    /// lower-cased, other characters mapped to `-`.
    pub device_id: String,
    pub mqtt: MqttConfig,
    pub video: VideoConfig,
    pub webrtc: WebRtcConfig,
}

/// The MQTT broker connection and topic root.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL: `mqtt://[user[:pass]@]host[:port]` (mqtts:// reserved for TLS).
    pub url: String,
    /// Topic root; may contain `/`.
    pub prefix: String,
    /// MQTT client id; default `campeer-{device_id}`.
    pub client_id: Option<String>,
    /// Keep-alive interval, seconds.
    pub keepalive_secs: u64,
    /// Largest accepted payload, bytes (PROTOCOL.md: 64 KiB).
    pub max_payload: usize,
    /// Reconnect backoff floor and ceiling, milliseconds.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

/// The camera and the H.264 encoder.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// `test`, `v4l2:/dev/videoN` or `none`.
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Target bitrate, bits per second.
    pub bitrate: u32,
    /// Frames between periodic IDRs.
    pub keyframe_interval: u32,
}

/// WebRTC sessions.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// A session not connected after this many seconds is closed (`timeout`).
    pub connect_timeout_secs: u64,
    /// A connected session whose ICE stays disconnected this long is closed (`failed`).
    pub disconnected_timeout_secs: u64,
    /// STUN/TURN servers offered to the ICE agent.
    pub ice_servers: Vec<IceServer>,
    /// Local UDP sockets to gather from, e.g. `0.0.0.0:0`, `[::]:0`.
    pub udp_bind: Vec<String>,
    /// Also gather loopback candidates (useful for same-host viewers and tests).
    pub include_loopback: bool,
}

/// One STUN or TURN server.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: "campeer".into(),
            mqtt: MqttConfig::default(),
            video: VideoConfig::default(),
            webrtc: WebRtcConfig::default(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            prefix: "campeer".into(),
            client_id: None,
            keepalive_secs: 30,
            max_payload: 64 * 1024,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
        }
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            source: "test".into(),
            width: 640,
            height: 480,
            fps: 30,
            bitrate: 1_000_000,
            keyframe_interval: 60,
        }
    }
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            max_sessions: 4,
            connect_timeout_secs: 30,
            disconnected_timeout_secs: 5,
            ice_servers: Vec::new(),
            udp_bind: vec!["0.0.0.0:0".into()],
            include_loopback: true,
        }
    }
}
