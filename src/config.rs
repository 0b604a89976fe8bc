//! Configuration: a TOML file (every key has a default, unknown keys are
//! refused) with command-line flags laid over it (see `cli::RunArgs`).
//!
//! Loading and validation are separate steps: [`Config::load`] /
//! [`Config::from_toml_str`] only parse (so a flag may still fix a value
//! the file got wrong), and [`Config::validate`] checks the result. Every
//! error names the file (with line and column for parse errors) or the
//! dotted key (`video.width`) it is about, and never prints a secret: the
//! MQTT password is shown as `***` in errors, in [`MqttTarget`]'s
//! `Display`, and in [`Config::to_toml_string`].
//!
//! See docs/configuration.md for every key, and examples/campeer.toml.
//!
//! Configuration is data: validation reads no file and opens no socket,
//! and this module depends on no part of the daemon that uses it (no
//! signaling, WebRTC or web code). Checks that need I/O (TLS and password
//! files, key files) run at start-up in `daemon::startup_checks`.

pub mod homeassistant;
pub mod mqtt;
pub mod proxy_net;
pub mod relay;

use crate::control::config::{
    validate_gpio, AccessConfig, ConfigError as ControlConfigError, GpioConfig,
};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What stands in for a secret in anything printed.
pub const REDACTED: &str = "***";

/// The device id used when the host name yields none.
pub const FALLBACK_DEVICE_ID: &str = "campeer";

/// Everything that can be wrong with a configuration.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// The configuration file does not exist.
    #[error("config file {} does not exist", .path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The configuration file exists but cannot be read.
    #[error("cannot read config file {}: {error}", .path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// Why. (Not a `#[source]`: the message already includes it, and
        /// `{:#}` would print it twice.)
        error: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{}: {message}", location(.origin, .line, .column))]
    Parse {
        /// Where the text came from (usually the file path).
        origin: String,
        /// 1-based line of the offending text, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the offending text, when known.
        column: Option<usize>,
        /// The parser's message; names the key for unknown keys.
        message: String,
    },
    /// A value outside what the daemon accepts.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `video.width` or `webrtc.udp_bind[1]`.
        key: String,
        /// What is wrong, quoting the value.
        message: String,
    },
    /// An MQTT broker URL that cannot be used.
    #[error("invalid MQTT URL `{url}`: {message}")]
    MqttUrl {
        /// The URL, password replaced by `***`.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// An error about a value that came from a file.
    #[error("{}: {error}", .path.display())]
    InFile {
        /// The configuration file.
        path: PathBuf,
        /// The error (part of the message, so not a `#[source]`).
        error: Box<ConfigError>,
    },
    /// A bad `[[gpio]]` or `[access]` entry (the message names it).
    #[error("{0}")]
    Control(ControlConfigError),
    /// The configuration cannot be rendered as TOML (a bug).
    #[error("cannot render the configuration as TOML: {0}")]
    Render(String),
}

fn location(origin: &str, line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{origin}:{l}:{c}"),
        (Some(l), None) => format!("{origin}:{l}"),
        _ => origin.to_owned(),
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole daemon configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A built-in board profile (`rpi-zero2w`, `rpi3`, `rpi4`, `rpi5`,
    /// `qemu-raspi3b`) this file lays over; `--board` overrides it. Default
    /// none.
    pub board: Option<String>,
    /// Device id, `[a-z0-9][a-z0-9_-]{0,62}`. Default: the host name,
    /// lower-cased, other characters mapped to `-` (see [`default_device_id`]).
    pub device_id: String,
    /// The broker connection and topic root (`[mqtt]`).
    pub mqtt: MqttConfig,
    /// The camera and the encoder (`[video]`).
    pub video: VideoConfig,
    /// The microphone and the Opus encoder (`[audio]`).
    pub audio: AudioConfig,
    /// The device's own MQTT broker (`[broker]`).
    pub broker: BrokerConfig,
    /// The viewer page's HTTP server (`[http]`).
    pub http: HttpConfig,
    /// WebRTC sessions (`[webrtc]`).
    pub webrtc: WebRtcConfig,
    /// Named GPIO controls offered on the `control` data channel
    /// (`[[gpio]]`, see `control::config`). Default none.
    pub gpio: Vec<GpioConfig>,
    /// Access keys that sign offers (`[access]`); with no keys the device is
    /// `open`. Default none.
    pub access: AccessConfig,
    /// Home Assistant MQTT discovery (`[homeassistant]`).
    pub homeassistant: homeassistant::HomeAssistantConfig,
    /// Relaying to a Janus server for more viewers (`[relay]`).
    pub relay: relay::RelayConfig,
}

/// The device's own MQTT broker: a Mosquitto that the daemon configures,
/// runs and supervises, so one install is a whole appliance (see
/// `broker`). Off when an external broker is used.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Run the device's own broker, and connect the device to it
    /// (`mqtt.url` is then ignored). `--mqtt` turns it off. Default `true`.
    pub embedded: bool,
    /// MQTT (TCP) listen address for other machines; empty for none (the
    /// broker then serves only this host, the page's WebSocket included).
    /// Default `0.0.0.0:1883`.
    pub listen: String,
    /// MQTT-over-WebSocket listen address, for browsers; empty for none.
    /// Default `0.0.0.0:8083`.
    pub ws_listen: String,
    /// The Mosquitto binary. Default none: `mosquitto` on `PATH`, else
    /// `/usr/sbin/mosquitto`.
    pub mosquitto: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            embedded: true,
            listen: "0.0.0.0:1883".into(),
            ws_listen: "0.0.0.0:8083".into(),
            mosquitto: None,
        }
    }
}

/// The viewer page and its HTTP server.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of the viewer page; empty for none. Default
    /// `0.0.0.0:8080`.
    pub listen: String,
    /// With an external broker: its MQTT-over-WebSocket URL as browsers
    /// must use it, e.g. `ws://broker.lan:9001`. Default none (with the
    /// device's own broker the page uses `/mqtt` on its own server).
    pub ws_url: Option<String>,
    /// Most open connections to the page server, WebSockets included
    /// (1 to 4096). Default 128.
    pub max_connections: usize,
    /// Most open connections from one address (1 to `max_connections`).
    /// Default 16.
    pub max_connections_per_ip: usize,
    /// Origins besides the page's own that may open the MQTT WebSocket and
    /// claim the device, exactly as browsers send them, e.g.
    /// `https://ha.example:8123`. Default none.
    pub allowed_origins: Vec<String>,
    /// Host names the page server answers to besides its own (host name,
    /// device id, each with `.local`, `localhost`, IP addresses), e.g. a
    /// name in your DNS or a reverse proxy's. Default none.
    pub hosts: Vec<String>,
    /// Reverse proxies (IP addresses or CIDR blocks, e.g. `127.0.0.1`,
    /// `10.0.0.0/8`) whose `X-Forwarded-For`, `Forwarded` and `X-Real-IP`
    /// headers name the client. From any other peer such a header makes a
    /// claim fail. Default none.
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain for HTTPS on the page server (the page,
    /// `/mqtt`, WHEP, snapshots and `broker.ws_listen`); with `tls_key`.
    /// Default none: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default none.
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
            ws_url: None,
            max_connections: 128,
            max_connections_per_ip: 16,
            allowed_origins: Vec::new(),
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpConfig {
    /// The certificate and key files, when HTTPS is configured.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_listen("http.listen", &self.listen, true)?;
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        if empty(&self.tls_cert) || empty(&self.tls_key) {
            return Err(invalid(
                "http.tls_cert",
                "an empty path; leave it out for plain HTTP".to_owned(),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "http.tls_key",
                    "missing: http.tls_cert needs its key".to_owned(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.tls_cert",
                    "missing: http.tls_key needs its certificate".to_owned(),
                ))
            }
            _ => {}
        }
        if let Some(u) = &self.ws_url {
            if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                return Err(invalid(
                    "http.ws_url",
                    format!("{u:?} must start with ws:// or wss://"),
                ));
            }
        }
        if !(1..=4096).contains(&self.max_connections) {
            return Err(invalid(
                "http.max_connections",
                format!("{} is not between 1 and 4096", self.max_connections),
            ));
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_ip) {
            return Err(invalid(
                "http.max_connections_per_ip",
                format!(
                    "{} is not between 1 and http.max_connections ({})",
                    self.max_connections_per_ip, self.max_connections
                ),
            ));
        }
        for (i, o) in self.allowed_origins.iter().enumerate() {
            normalize_origin(o).map_err(|e| invalid(format!("http.allowed_origins[{i}]"), e))?;
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            proxy_net::ProxyNet::parse(p)
                .map_err(|e| invalid(format!("http.trusted_proxies[{i}]"), e))?;
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let ok = h.len() <= 253
                && !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !ok {
                return Err(invalid(
                    format!("http.hosts[{i}]"),
                    format!("{h:?} is not a host name (letters, digits, `-`, `_` and `.`)"),
                ));
            }
        }
        Ok(())
    }
}

fn validate_listen(key: &str, v: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if v.is_empty() && may_be_empty {
        return Ok(());
    }
    v.parse::<std::net::SocketAddr>().map(|_| ()).map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not an address:port such as 0.0.0.0:8080"),
        )
    })
}

/// The microphone and the Opus encoder.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// `none`, `tone:<hz>` (a sine, for tests and demos) or an ALSA capture
    /// PCM: `alsa:default`, `alsa:hw:1,0`, `alsa:plughw:CARD=Device`.
    /// Default `none`.
    pub source: String,
    /// Capture rate asked of the device, Hz; anything else is resampled to
    /// Opus's 48000. Default `48000`.
    pub rate: u32,
    /// Channels captured and sent: 1 (mono) or 2. Default `1`.
    pub channels: u16,
    /// Opus target bitrate, bits per second, 6000..=256000. Default `32000`.
    pub bitrate: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            source: "none".into(),
            rate: 48_000,
            channels: 1,
            bitrate: 32_000,
        }
    }
}

impl AudioConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        crate::media::audio::AudioSourceSpec::parse(&self.source)
            .map_err(|e| invalid("audio.source", e.to_string()))?;
        if !(8_000..=192_000).contains(&self.rate) {
            return Err(invalid(
                "audio.rate",
                format!("{} is outside 8000..=192000", self.rate),
            ));
        }
        if !(1..=2).contains(&self.channels) {
            return Err(invalid(
                "audio.channels",
                format!("{} is not 1 or 2", self.channels),
            ));
        }
        if !(6_000..=256_000).contains(&self.bitrate) {
            return Err(invalid(
                "audio.bitrate",
                format!("{} is outside 6000..=256000", self.bitrate),
            ));
        }
        Ok(())
    }
}

/// The MQTT broker connection and topic root.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL: `mqtt://[user[:pass]@]host[:port]` (default port 1883),
    /// or `mqtts://` (TLS, default port 8883; the host is the TLS server
    /// name). User and password are percent-decoded. Default
    /// `mqtt://127.0.0.1:1883`.
    pub url: String,
    /// Topic root; may contain `/`. Default `campeer`.
    pub prefix: String,
    /// MQTT client id; default (`None`) is `campeer-{device_id}`.
    pub client_id: Option<String>,
    /// Keep-alive interval, seconds (5..=65535). Default 30.
    pub keepalive_secs: u64,
    /// Largest accepted payload, bytes (docs/protocol.md: 64 KiB). Default 65536.
    pub max_payload: usize,
    /// Reconnect backoff floor, milliseconds. Default 250.
    pub reconnect_min_ms: u64,
    /// Reconnect backoff ceiling, milliseconds (>= the floor). Default 4000, so a broker that comes back is used within ~4 s.
    pub reconnect_max_ms: u64,
    /// User name, when the URL has none (the same name in both is
    /// accepted). Default none.
    pub username: Option<String>,
    /// File whose first line is the broker password (instead of a password
    /// in the URL, which must then have none). Needs a user name. Default
    /// none.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that may sign the broker's
    /// certificate (`mqtts://` only); replaces the system's CA
    /// certificates. Default none: the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS (`mqtts://` only,
    /// with `client_key`). Default none.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1). Default
    /// none.
    pub client_key: Option<PathBuf>,
}

/// The camera and the H.264 encoder.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// `test` (a generated pattern with frame stamps), `v4l2:/dev/videoN`
    /// (a camera) or `none` (no video). Default `test`.
    pub source: String,
    /// Picture width in pixels: even, 16..=4096, and >= 256 for `test`.
    /// Default 640.
    pub width: u32,
    /// Picture height in pixels: even, 16..=4096. Default 480.
    pub height: u32,
    /// Frames per second, 1..=120. Default 30.
    pub fps: u32,
    /// Target bitrate, bits per second, 50_000..=50_000_000. Default 1_000_000.
    pub bitrate: u32,
    /// Draw the frame stamp (docs/protocol.md#measuring-latency-the-frame-stamp: frame counter and
    /// capture time in the top 16 rows) on camera frames too, for measuring
    /// latency and loss end to end. The test source always stamps. Needs a
    /// width of at least 256. Default `false`.
    pub stamp: bool,
    /// Frames between periodic IDRs (>= 1). Default 60.
    pub keyframe_interval: u32,
    /// For an `exec:` source: what the command writes on stdout, `i420`,
    /// `nv12` (raw frames of width x height), `mjpeg`, or `h264` (Annex B,
    /// passed through without re-encoding). Default `i420`.
    pub exec_format: String,
    /// For an `exec:` source: start the command with the daemon (`daemon`)
    /// or for the first viewer, stopping it 10 s after the last (`viewer`).
    /// Default `daemon`.
    pub exec_start: String,
    /// Target bitrate of the VP8 encoder (for browsers without H.264), bits
    /// per second, 50_000..=50_000_000. Default: `bitrate`.
    pub vp8_bitrate: Option<u32>,
    /// For a `v4l2:` camera that offers H.264 itself (many UVC webcams):
    /// take its H.264 and pass it through instead of encoding raw frames.
    /// A camera without H.264 at the size falls back to raw. Default
    /// `false`.
    pub v4l2_h264: bool,
}

/// WebRTC sessions.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Most concurrent sessions, 1..=64. Default 4.
    pub max_sessions: usize,
    /// Most sessions still negotiating (offer answered, not yet connected),
    /// 1..=64. Further offers get `busy`. Default 8.
    pub max_pending: usize,
    /// New offers accepted per second, sustained (token bucket), 1..=1000.
    /// Faster offers get `busy`. Default 5.
    pub offer_rate: u32,
    /// New offers accepted in a burst, 1..=1000. Default 10.
    pub offer_burst: u32,
    /// A session not connected after this many seconds is closed
    /// (`timeout`). At least 1. Default 30.
    pub connect_timeout_secs: u64,
    /// A connected session whose ICE stays disconnected this long is closed
    /// (`failed`). At least 1. Default 5.
    pub disconnected_timeout_secs: u64,
    /// STUN/TURN servers offered to the ICE agent. Default none.
    pub ice_servers: Vec<IceServer>,
    /// TURN credentials minted per request from a shared secret (coturn's
    /// `use-auth-secret`): for the device's own connections and for
    /// viewers that ask with `ice_request`. Default none.
    pub turn_rest: Option<TurnRestConfig>,
    /// Local UDP sockets to gather from, e.g. `0.0.0.0:0`, `[::]:0`. At
    /// least one. Default `["0.0.0.0:0"]`.
    pub udp_bind: Vec<String>,
    /// Also gather loopback candidates (useful for same-host viewers and
    /// tests). Default true.
    pub include_loopback: bool,
}

/// `[webrtc.turn_rest]`: a TURN server that checks time-limited
/// credentials made from a shared secret (coturn: `use-auth-secret`,
/// `static-auth-secret`). The secret stays on the device; every viewer
/// and every session gets credentials of its own.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TurnRestConfig {
    /// The TURN server's URLs (`turn:` or `turns:`).
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// A file holding the shared secret (mode 0600 or stricter; one line).
    pub secret_file: PathBuf,
    /// How long minted credentials work, seconds, 60..=604800. Default
    /// 86400: longer than any session is likely to last, since a TURN
    /// allocation is refreshed with the credentials it was made with.
    #[serde(default = "default_turn_rest_lifetime")]
    pub lifetime_secs: u64,
}

fn default_turn_rest_lifetime() -> u64 {
    86_400
}

impl TurnRestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(invalid(
                "webrtc.turn_rest.urls",
                "needs at least one turn: URL",
            ));
        }
        for (i, url) in self.urls.iter().enumerate() {
            let host = url
                .strip_prefix("turn:")
                .or_else(|| url.strip_prefix("turns:"));
            if host.is_none_or(str::is_empty) {
                return Err(invalid(
                    format!("webrtc.turn_rest.urls[{i}]"),
                    format!("{url:?} must be a turn: or turns: URL with a host"),
                ));
            }
        }
        if !(60..=604_800).contains(&self.lifetime_secs) {
            return Err(invalid(
                "webrtc.turn_rest.lifetime_secs",
                "must be 60..=604800 (one minute to one week)",
            ));
        }
        Ok(())
    }
}

/// One STUN or TURN server, shaped like the browser's `RTCIceServer`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// One or more URLs (`stun:`, `stuns:`, `turn:` or `turns:`). The file
    /// may give a single string or an array.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// TURN user name (required for `turn:`/`turns:` URLs).
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential (required for `turn:`/`turns:` URLs).
    #[serde(default)]
    pub credential: Option<String>,
}

// Hand-written so a logged configuration never shows the broker password.
impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("client_id", &self.client_id)
            .field("keepalive_secs", &self.keepalive_secs)
            .field("max_payload", &self.max_payload)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

// Hand-written so a logged configuration never shows a TURN credential.
impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// Accepts `"url"` as well as `["url", ...]`, like `RTCIceServer.urls`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a URL string or an array of URL strings")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            board: None,
            device_id: default_device_id(),
            mqtt: MqttConfig::default(),
            video: VideoConfig::default(),
            audio: AudioConfig::default(),
            broker: BrokerConfig::default(),
            http: HttpConfig::default(),
            webrtc: WebRtcConfig::default(),
            gpio: Vec::new(),
            access: AccessConfig::default(),
            homeassistant: Default::default(),
            relay: Default::default(),
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
            reconnect_max_ms: 4_000,
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
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
            stamp: false,
            exec_format: "i420".into(),
            exec_start: "daemon".into(),
            vp8_bitrate: None,
            v4l2_h264: false,
        }
    }
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            max_sessions: 4,
            max_pending: 8,
            offer_rate: 5,
            offer_burst: 10,
            connect_timeout_secs: 30,
            disconnected_timeout_secs: 5,
            ice_servers: Vec::new(),
            turn_rest: None,
            udp_bind: vec!["0.0.0.0:0".into()],
            include_loopback: true,
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` (usually the file path) prefixes errors,
    /// which carry the line and column. Missing keys take their defaults;
    /// unknown keys are errors naming the key. Does not validate.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .and_then(|span| line_column(text, span.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            ConfigError::Parse {
                origin: origin.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })
    }

    /// Reads and parses a configuration file. Does not validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    error,
                }
            }
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Reads `file` (if any) laid over a board profile: `board` (the
    /// `--board` flag) or else the file's own `board` key. Keys the file
    /// sets replace the profile's (tables merge, arrays such as `[[gpio]]`
    /// are replaced whole). Does not validate.
    pub fn load_layered(file: Option<&Path>, board: Option<&str>) -> Result<Config, ConfigError> {
        let from_file = file.map(Config::load).transpose()?;
        let board = board
            .map(str::to_owned)
            .or_else(|| from_file.as_ref().and_then(|c| c.board.clone()));
        let Some(name) = board else {
            return Ok(from_file.unwrap_or_default());
        };
        let profile = crate::board::profile(&name).ok_or_else(|| {
            invalid(
                "board",
                format!(
                    "{name:?} is not a known board; known: {}",
                    crate::board::names().join(", ")
                ),
            )
        })?;
        let origin = format!("board/{name}.toml");
        // Parse alone first, for errors with a line number.
        Config::from_toml_str(profile, &origin)?;
        let render = |e: toml::de::Error, origin: &str| ConfigError::Parse {
            origin: origin.to_owned(),
            line: None,
            column: None,
            message: e.message().trim_end().to_owned(),
        };
        let mut merged: toml::Table = toml::from_str(profile).map_err(|e| render(e, &origin))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.to_owned(),
                error,
            })?;
            let over: toml::Table =
                toml::from_str(&text).map_err(|e| render(e, &path.display().to_string()))?;
            crate::board::merge(&mut merged, over);
        }
        merged.insert("board".into(), toml::Value::String(name));
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| render(e, &origin))?;
        if config.device_id.is_empty() {
            config.device_id = default_device_id();
        }
        Ok(config)
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(b) = &self.board {
            if crate::board::profile(b).is_none() {
                return Err(invalid(
                    "board",
                    format!(
                        "{b:?} is not a known board; known: {}",
                        crate::board::names().join(", ")
                    ),
                ));
            }
        }
        if !validate_device_id(&self.device_id) {
            return Err(invalid(
                "device_id",
                format!(
                    "{:?} does not match [a-z0-9][a-z0-9_-]{{0,62}} (lower-case letters, digits, `_` and `-`, starting with a letter or digit, at most 63)",
                    self.device_id
                ),
            ));
        }
        self.mqtt.validate()?;
        self.video.validate()?;
        self.audio.validate()?;
        validate_listen("broker.listen", &self.broker.listen, true)?;
        validate_listen("broker.ws_listen", &self.broker.ws_listen, true)?;
        self.http.validate()?;
        self.webrtc.validate()?;
        validate_gpio(&self.gpio).map_err(ConfigError::Control)?;
        self.homeassistant.validate()?;
        self.relay.validate()?;
        self.access.validate().map_err(ConfigError::Control)
    }

    /// The MQTT client id: `mqtt.client_id`, or `campeer-{device_id}`.
    pub fn effective_client_id(&self) -> String {
        match &self.mqtt.client_id {
            Some(id) => id.clone(),
            None => format!("campeer-{}", self.device_id),
        }
    }

    /// The configuration as TOML, with secrets (the MQTT password, TURN
    /// credentials, inline access-key secrets) replaced by `***`. Parses
    /// back with [`Config::load`] (but a `***` access secret is too short
    /// to validate, on purpose).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        shown.mqtt.url = redact_url(&shown.mqtt.url);
        for server in &mut shown.webrtc.ice_servers {
            if server.credential.is_some() {
                server.credential = Some(REDACTED.to_owned());
            }
        }
        for key in &mut shown.access.keys {
            if key.secret.is_some() {
                key.secret = Some(REDACTED.to_owned());
            }
        }
        if !shown.relay.admin_key.is_empty() {
            shown.relay.admin_key = REDACTED.to_owned();
        }
        toml::to_string(&shown).map_err(|e| ConfigError::Render(e.to_string()))
    }
}

impl MqttConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let target =
            MqttTarget::parse(&self.url).map_err(|e| invalid("mqtt.url", e.to_string()))?;
        validate_prefix(&self.prefix).map_err(|m| invalid("mqtt.prefix", m))?;
        if let Some(id) = &self.client_id {
            if id.is_empty()
                || id.len() > 65535
                || id.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(invalid(
                    "mqtt.client_id",
                    format!("{id:?}: must be 1 to 65535 bytes without spaces or control characters (leave it out for campeer-{{device_id}})"),
                ));
            }
        }
        if !(5..=65535).contains(&self.keepalive_secs) {
            return Err(invalid(
                "mqtt.keepalive_secs",
                format!("{} is outside 5..=65535", self.keepalive_secs),
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.max_payload) {
            return Err(invalid(
                "mqtt.max_payload",
                format!(
                    "{} is outside 1024..=1048576 (the protocol says 65536)",
                    self.max_payload
                ),
            ));
        }
        if self.reconnect_min_ms == 0 {
            return Err(invalid("mqtt.reconnect_min_ms", "must be at least 1"));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(invalid(
                "mqtt.reconnect_max_ms",
                format!(
                    "{} is below mqtt.reconnect_min_ms ({})",
                    self.reconnect_max_ms, self.reconnect_min_ms
                ),
            ));
        }
        // The TLS and password settings agree with each other and the URL.
        // Whether the files they name can be read is a start-up check
        // (`daemon::startup_checks`): validation reads no file.
        mqtt::check_consistency(self, &target).map_err(|e| invalid(e.setting.key(), e.message))
    }
}

/// Whether `id` is a valid device id: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_device_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Longest origin text looked at, bytes.
const MAX_ORIGIN_LEN: usize = 300;

/// An origin in its serialized form (`https://ha.example:8123`, default
/// port left out), or why the text is not one. Accepts `http` and `https`
/// only, and no user, path, query or fragment (a lone `/` is tolerated).
pub fn normalize_origin(text: &str) -> Result<String, String> {
    if text.len() > MAX_ORIGIN_LEN {
        return Err("too long".into());
    }
    let u = url::Url::parse(text).map_err(|e| format!("{text:?} is not an origin: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{text:?}: the scheme must be http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if !u.username().is_empty()
        || u.password().is_some()
        || u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(format!(
            "{text:?} must be only scheme://host[:port], e.g. https://ha.example:8123"
        ));
    }
    Ok(u.origin().ascii_serialization())
}

/// Checks a topic prefix: non-empty, no wildcards, no leading or trailing
/// `/`, no empty levels.
fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".into());
    }
    if prefix.contains(['+', '#']) {
        return Err(format!("{prefix:?} contains an MQTT wildcard (`+` or `#`)"));
    }
    if prefix.contains('\0') {
        return Err(format!("{prefix:?} contains a NUL character"));
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Err(format!("{prefix:?} must not start or end with `/`"));
    }
    if prefix.split('/').any(str::is_empty) {
        return Err(format!("{prefix:?} has an empty level (`//`)"));
    }
    Ok(())
}

impl VideoConfig {
    /// The `exec:` keys; `video.stamp` needs pixels, which H.264 passed
    /// through does not give campeer.
    fn validate_exec(&self) -> Result<(), ConfigError> {
        if self.source["exec:".len()..].trim().is_empty() {
            return Err(invalid(
                "video.source",
                "`exec:` needs a command line, e.g. `exec:rpicam-vid -t 0 -o -`",
            ));
        }
        let Some(format) = crate::media::exec::ExecFormat::parse(&self.exec_format) else {
            return Err(invalid(
                "video.exec_format",
                format!(
                    "{:?}: expected `i420`, `nv12`, `mjpeg` or `h264`",
                    self.exec_format
                ),
            ));
        };
        if !matches!(self.exec_start.as_str(), "daemon" | "viewer") {
            return Err(invalid(
                "video.exec_start",
                format!("{:?}: expected `daemon` or `viewer`", self.exec_start),
            ));
        }
        if self.stamp && format == crate::media::exec::ExecFormat::H264 {
            return Err(invalid(
                "video.stamp",
                "H.264 passed through from the command is never decoded, so it cannot be stamped",
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.v4l2_h264 && !self.source.starts_with("v4l2:") {
            return Err(invalid(
                "video.v4l2_h264",
                "is for `v4l2:` cameras; an `exec:` command gives H.264 with `video.exec_format = \"h264\"`",
            ));
        }
        if self.v4l2_h264 && self.stamp {
            return Err(invalid(
                "video.stamp",
                "H.264 passed through from the camera is never decoded, so it cannot be stamped",
            ));
        }
        let is_test = match self.source.as_str() {
            "test" => true,
            "none" => false,
            s if s.starts_with("exec:") => {
                self.validate_exec()?;
                false
            }
            s => match s.strip_prefix("v4l2:") {
                Some(path) if !path.is_empty() && path.trim() == path => false,
                Some(_) => {
                    return Err(invalid(
                        "video.source",
                        format!("{s:?}: `v4l2:` needs a device path, e.g. `v4l2:/dev/video0`"),
                    ))
                }
                None => {
                    return Err(invalid(
                        "video.source",
                        format!("{s:?}: expected `test`, `none`, `v4l2:/dev/videoN` or `exec:<command line>`"),
                    ))
                }
            },
        };
        for (key, v) in [("video.width", self.width), ("video.height", self.height)] {
            if !(16..=4096).contains(&v) {
                return Err(invalid(key, format!("{v} is outside 16..=4096")));
            }
            if v % 2 != 0 {
                return Err(invalid(
                    key,
                    format!("{v} is odd; width and height must be even (chroma is subsampled 2x2)"),
                ));
            }
        }
        if is_test && self.width < 256 {
            return Err(invalid(
                "video.width",
                format!(
                    "{} is below 256, which the test source's frame stamp needs",
                    self.width
                ),
            ));
        }
        if !(1..=120).contains(&self.fps) {
            return Err(invalid(
                "video.fps",
                format!("{} is outside 1..=120", self.fps),
            ));
        }
        if !(50_000..=50_000_000).contains(&self.bitrate) {
            return Err(invalid(
                "video.bitrate",
                format!(
                    "{} is outside 50000..=50000000 bits per second",
                    self.bitrate
                ),
            ));
        }
        if self.keyframe_interval == 0 {
            return Err(invalid("video.keyframe_interval", "must be at least 1"));
        }
        if let Some(b) = self
            .vp8_bitrate
            .filter(|b| !(50_000..=50_000_000).contains(b))
        {
            return Err(invalid(
                "video.vp8_bitrate",
                format!("{b} is outside 50000..=50000000 bits per second"),
            ));
        }
        Ok(())
    }
}

impl WebRtcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.max_sessions) {
            return Err(invalid(
                "webrtc.max_sessions",
                format!("{} is outside 1..=64", self.max_sessions),
            ));
        }
        if !(1..=64).contains(&self.max_pending) {
            return Err(invalid(
                "webrtc.max_pending",
                format!("{} is outside 1..=64", self.max_pending),
            ));
        }
        for (key, v) in [
            ("webrtc.offer_rate", self.offer_rate),
            ("webrtc.offer_burst", self.offer_burst),
        ] {
            if !(1..=1000).contains(&v) {
                return Err(invalid(key, format!("{v} is outside 1..=1000")));
            }
        }
        if self.connect_timeout_secs == 0 {
            return Err(invalid("webrtc.connect_timeout_secs", "must be at least 1"));
        }
        if self.disconnected_timeout_secs == 0 {
            return Err(invalid(
                "webrtc.disconnected_timeout_secs",
                "must be at least 1",
            ));
        }
        for (i, server) in self.ice_servers.iter().enumerate() {
            server.validate(&format!("webrtc.ice_servers[{i}]"))?;
        }
        if let Some(rest) = &self.turn_rest {
            rest.validate()?;
        }
        if self.udp_bind.is_empty() {
            return Err(invalid(
                "webrtc.udp_bind",
                "needs at least one address, e.g. \"0.0.0.0:0\"",
            ));
        }
        for (i, addr) in self.udp_bind.iter().enumerate() {
            if let Err(e) = addr.parse::<SocketAddr>() {
                return Err(invalid(
                    format!("webrtc.udp_bind[{i}]"),
                    format!("{addr:?} is not an IP:port socket address ({e}); e.g. \"0.0.0.0:0\" or \"[::]:0\""),
                ));
            }
        }
        Ok(())
    }
}

impl IceServer {
    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(invalid(format!("{key}.urls"), "needs at least one URL"));
        }
        for (i, url) in self.urls.iter().enumerate() {
            let scheme = ["stun:", "stuns:", "turn:", "turns:"]
                .into_iter()
                .find(|s| url.starts_with(s));
            let Some(scheme) = scheme else {
                return Err(invalid(
                    format!("{key}.urls[{i}]"),
                    format!("{url:?} must start with stun:, stuns:, turn: or turns:"),
                ));
            };
            if url.len() == scheme.len() {
                return Err(invalid(
                    format!("{key}.urls[{i}]"),
                    format!("{url:?} has no host"),
                ));
            }
            if scheme.starts_with("turn") {
                let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
                if !has(&self.username) {
                    return Err(invalid(
                        format!("{key}.username"),
                        format!("TURN server {url:?} needs a username"),
                    ));
                }
                if !has(&self.credential) {
                    return Err(invalid(
                        format!("{key}.credential"),
                        format!("TURN server {url:?} needs a credential"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `campeer check-config FILE`: loads and validates `path` and returns the
/// effective configuration as TOML (defaults filled in, secrets as `***`),
/// headed by comments naming the file and the MQTT client id.
pub fn check_config(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load_layered(Some(path), None)?;
    config.validate().map_err(|e| ConfigError::InFile {
        path: path.to_owned(),
        error: Box::new(e),
    })?;
    let body = config.to_toml_string()?;
    Ok(format!(
        "# Effective campeer configuration from {} (defaults filled in, secrets shown as {REDACTED}).\n\
         # MQTT client id: {}\n\n{body}",
        path.display(),
        config.effective_client_id()
    ))
}

/// The default device id: the host name, lower-cased, characters outside
/// `[a-z0-9_-]` mapped to `-`, leading `-`/`_` dropped, at most 63
/// characters; `campeer` when that leaves nothing.
pub fn default_device_id() -> String {
    read_host_name()
        .and_then(|h| sanitize_device_id(&h))
        .unwrap_or_else(|| FALLBACK_DEVICE_ID.to_owned())
}

/// Turns a host name into a valid device id, or `None` if nothing usable
/// is left (see [`default_device_id`]).
pub fn sanitize_device_id(raw: &str) -> Option<String> {
    let mapped: String = raw
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    // Every char is ASCII now, so chars and bytes agree.
    let id: String = mapped
        .trim_start_matches(['-', '_'])
        .chars()
        .take(63)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The machine's host name, if it has one.
pub(crate) fn read_host_name() -> Option<String> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        if !s.trim().is_empty() {
            return Some(s.trim().to_owned());
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and
    // gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves truncated names unterminated: take up to the first NUL or all.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// Where the broker is, parsed from `mqtt.url` (or the viewer's `--mqtt`).
#[derive(Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// `mqtts://`: the connection must use TLS.
    pub tls: bool,
    /// Host name or address, ready for `format!("{host}:{port}")`: IPv6
    /// addresses keep their brackets (`[::1]`).
    pub host: String,
    /// TCP port (1883 / 8883 when the URL has none).
    pub port: u16,
    /// Percent-decoded user name, if the URL has one.
    pub username: Option<String>,
    /// Percent-decoded password, if the URL has one. Never printed.
    pub password: Option<String>,
}

impl MqttTarget {
    /// Parses `mqtt://[user[:pass]@]host[:port][/]` or the same with
    /// `mqtts://`. Errors quote the URL with the password redacted.
    pub fn parse(url: &str) -> Result<MqttTarget, ConfigError> {
        let fail = |message: String| ConfigError::MqttUrl {
            url: redact_url(url),
            message,
        };
        if !url.contains("://") {
            return Err(fail(
                "expected mqtt://host[:port] or mqtts://host[:port]".into(),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| fail(e.to_string()))?;
        let tls = match parsed.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            other => {
                return Err(fail(format!(
                    "unsupported scheme `{other}`; use mqtt:// or mqtts://"
                )))
            }
        };
        let host = match parsed.host() {
            None => return Err(fail("no host".into())),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Domain(d)) => {
                if d.is_empty() {
                    return Err(fail("no host".into()));
                }
                if !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                {
                    return Err(fail(format!("bad host name {d:?}")));
                }
                d.to_owned()
            }
        };
        let port = match parsed.port() {
            Some(0) => return Err(fail("port 0 is not a broker port".into())),
            Some(p) => p,
            None if tls => 8883,
            None => 1883,
        };
        if !matches!(parsed.path(), "" | "/") {
            return Err(fail(format!("unexpected path {:?}", parsed.path())));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(fail("unexpected query or fragment".into()));
        }
        let username = match parsed.username() {
            "" => None,
            u => Some(percent_decode(u).map_err(|m| fail(format!("user name: {m}")))?),
        };
        let password = match parsed.password() {
            None => None,
            Some(p) => Some(percent_decode(p).map_err(|m| fail(format!("password: {m}")))?),
        };
        if password.is_some() && username.is_none() {
            return Err(fail("a password needs a user name (MQTT 3.1.1)".into()));
        }
        Ok(MqttTarget {
            tls,
            host,
            port,
            username,
            password,
        })
    }
}

/// `mqtt://user:***@host:port`: never shows the password.
impl fmt::Display for MqttTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "mqtts://" } else { "mqtt://" })?;
        if let Some(user) = &self.username {
            f.write_str(&percent_encode_userinfo(user))?;
            if self.password.is_some() {
                write!(f, ":{REDACTED}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Like `Display`, so a `{:?}` in a log line cannot leak the password.
impl fmt::Debug for MqttTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MqttTarget({self})")
    }
}

/// `url` with the password (between `user:` and the last `@` of the part
/// after `://`) replaced by `***`. Works on text that does not parse, so
/// error messages can quote it; errs towards hiding too much.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:{REDACTED}{}",
            &url[..start],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// `%XX` escapes decoded; a `%` without two hex digits after it is an
/// error (percent-encoding itself would keep it as is).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err("bad percent-escape (expected %XX)".into());
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "not UTF-8 after percent-decoding".into())
}

/// What stays as it is in a URL's user name: RFC 3986's unreserved set.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode_userinfo(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, USERINFO).to_string()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Some((line, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/campeer.toml");
    const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml")
    }

    fn valid() -> Config {
        Config {
            device_id: "cam1".into(),
            ..Config::default()
        }
    }

    /// Asserts `c` is refused and the error names `key`.
    fn refused(c: &Config, key: &str) -> String {
        match c.validate() {
            Err(ConfigError::Invalid { key: k, message }) => {
                assert_eq!(k, key, "{message}");
                format!("invalid {k}: {message}")
            }
            other => panic!("expected an invalid {key}, got {other:?}"),
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "campeer-config-test-{}-{}-{name}",
            std::process::id(),
            rand::random::<u32>()
        ))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn keys_override_defaults() {
        let c = parse(
            r#"
            device_id = "cam7"
            [mqtt]
            url = "mqtt://broker:1884"
            prefix = "site/cams"
            [video]
            width = 1280
            height = 720
            [webrtc]
            max_sessions = 2
            udp_bind = ["0.0.0.0:5000", "[::]:5000"]
            [[webrtc.ice_servers]]
            urls = "stun:stun.example.org:3478"
            [[webrtc.ice_servers]]
            urls = ["turn:turn.example.org", "turns:turn.example.org:5349"]
            username = "u"
            credential = "c"
            "#,
        )
        .unwrap();
        assert_eq!(c.device_id, "cam7");
        assert_eq!(c.mqtt.url, "mqtt://broker:1884");
        assert_eq!(c.mqtt.prefix, "site/cams");
        assert_eq!(c.mqtt.keepalive_secs, 30);
        assert_eq!(
            (c.video.width, c.video.height, c.video.fps),
            (1280, 720, 30)
        );
        assert_eq!(c.webrtc.max_sessions, 2);
        assert_eq!(c.webrtc.udp_bind, ["0.0.0.0:5000", "[::]:5000"]);
        assert_eq!(c.webrtc.ice_servers[0].urls, ["stun:stun.example.org:3478"]);
        assert_eq!(c.webrtc.ice_servers[1].urls.len(), 2);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_top_level_key_names_key_file_and_line() {
        let err = parse("device_id = \"cam1\"\ncolour = \"red\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:2:1: "), "{msg}");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
        assert!(matches!(
            err,
            ConfigError::Parse {
                line: Some(2),
                column: Some(1),
                ..
            }
        ));
    }

    #[test]
    fn unknown_nested_key_names_key_file_and_line() {
        let msg = parse("[video]\nwidth = 640\n  widht = 640\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("test.toml:3:3: "), "{msg}");
        assert!(msg.contains("`widht`"), "{msg}");
        let msg = parse("[[webrtc.ice_servers]]\nurls = \"stun:x\"\npassword = \"p\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("test.toml:3:"), "{msg}");
        assert!(msg.contains("`password`"), "{msg}");
    }

    #[test]
    fn wrong_type_and_syntax_errors_have_a_location() {
        let msg = parse("[video]\nfps = \"30\"\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:2:"), "{msg}");
        let msg = parse("[video]\nfps = -1\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:2:"), "{msg}");
        let msg = parse("device_id = \n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:1:"), "{msg}");
        let msg = parse("[[webrtc.ice_servers]]\nurls = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("a URL string or an array of URL strings"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let path = temp_path("absent.toml");
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn unreadable_file_is_named() {
        // A directory cannot be read as a file.
        let dir = std::env::temp_dir();
        let err = Config::load(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Read { .. }), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        // The cause is in the message; a source chain would repeat it
        // under anyhow's `{:#}`.
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn load_reports_the_path_in_parse_errors() {
        let path = temp_path("bad.toml");
        std::fs::write(&path, "[mqtt]\nurl = \"mqtt://h\"\nbogus = 1\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            msg.starts_with(&format!("{}:3:1: ", path.display())),
            "{msg}"
        );
        assert!(msg.contains("`bogus`"), "{msg}");
    }

    #[test]
    fn device_id_validation() {
        let mut c = valid();
        for ok in ["a", "0cam", "cam_1-x", &"a".repeat(63)] {
            c.device_id = ok.to_string();
            c.validate().unwrap();
        }
        for bad in ["", "-cam", "Cam", "cam.1", "cam/1", "cam+", &"a".repeat(64)] {
            c.device_id = bad.to_string();
            refused(&c, "device_id");
        }
    }

    #[test]
    fn exec_source_validation() {
        let mut c = valid();
        c.video.source = "exec:rpicam-vid -t 0 --codec yuv420 -o -".into();
        c.validate().unwrap();
        c.video.source = "exec:  ".into();
        refused(&c, "video.source");
        c.video.source = "exec:cam".into();
        c.video.exec_format = "rgb".into();
        refused(&c, "video.exec_format");
        c.video.exec_format = "h264".into();
        c.validate().unwrap();
        c.video.stamp = true;
        refused(&c, "video.stamp");
        c.video.exec_format = "mjpeg".into();
        c.validate().unwrap();
        c.video.exec_start = "later".into();
        refused(&c, "video.exec_start");
        c.video.exec_start = "viewer".into();
        c.validate().unwrap();
    }

    #[test]
    fn v4l2_h264_is_for_cameras_and_cannot_be_stamped() {
        let mut c = valid();
        c.video.v4l2_h264 = true;
        refused(&c, "video.v4l2_h264");
        c.video.source = "exec:cam".into();
        refused(&c, "video.v4l2_h264");
        c.video.source = "v4l2:/dev/video0".into();
        c.validate().unwrap();
        c.video.stamp = true;
        refused(&c, "video.stamp");
    }

    #[test]
    fn prefix_validation() {
        let mut c = valid();
        for ok in ["campeer", "site/a/cams", "a b"] {
            c.mqtt.prefix = ok.into();
            c.validate().unwrap();
        }
        for bad in ["", "a/+", "a/#", "/a", "a/", "a//b", "/"] {
            c.mqtt.prefix = bad.into();
            refused(&c, "mqtt.prefix");
        }
    }

    #[test]
    fn mqtt_numbers_validation() {
        let mut c = valid();
        c.mqtt.keepalive_secs = 4;
        refused(&c, "mqtt.keepalive_secs");
        c.mqtt.keepalive_secs = 65536;
        refused(&c, "mqtt.keepalive_secs");
        c = valid();
        c.mqtt.max_payload = 10;
        refused(&c, "mqtt.max_payload");
        c = valid();
        c.mqtt.reconnect_min_ms = 0;
        refused(&c, "mqtt.reconnect_min_ms");
        c = valid();
        c.mqtt.reconnect_max_ms = 100;
        refused(&c, "mqtt.reconnect_max_ms");
        c = valid();
        c.mqtt.client_id = Some(String::new());
        refused(&c, "mqtt.client_id");
        c.mqtt.client_id = Some(" x".into());
        refused(&c, "mqtt.client_id");
        c.mqtt.client_id = Some("viewer-1".into());
        c.validate().unwrap();
    }

    #[test]
    fn mqtt_url_validation_does_not_leak_the_password() {
        let mut c = valid();
        c.mqtt.url = "http://u:hunter2@h".into();
        let msg = refused(&c, "mqtt.url");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("u:***@h"), "{msg}");
    }

    #[test]
    fn video_source_validation() {
        let mut c = valid();
        for ok in ["test", "none", "v4l2:/dev/video0"] {
            c.video.source = ok.into();
            c.validate().unwrap();
        }
        for bad in [
            "",
            "Test",
            "v4l2:",
            "v4l2: /dev/video0",
            "/dev/video0",
            "file:x.mp4",
        ] {
            c.video.source = bad.into();
            refused(&c, "video.source");
        }
    }

    #[test]
    fn video_size_validation() {
        let mut c = valid();
        c.video.source = "none".into();
        for (w, h) in [(16, 16), (4096, 4096), (128, 96)] {
            (c.video.width, c.video.height) = (w, h);
            c.validate().unwrap();
        }
        for (w, h, key) in [
            (641, 480, "video.width"),
            (640, 481, "video.height"),
            (14, 480, "video.width"),
            (4098, 480, "video.width"),
            (640, 0, "video.height"),
            (640, 4100, "video.height"),
        ] {
            (c.video.width, c.video.height) = (w, h);
            refused(&c, key);
        }
    }

    #[test]
    fn test_source_needs_width_256() {
        let mut c = valid();
        (c.video.width, c.video.height) = (254, 240);
        let msg = refused(&c, "video.width");
        assert!(msg.contains("stamp"), "{msg}");
        c.video.width = 256;
        c.validate().unwrap();
        c.video.source = "v4l2:/dev/video0".into();
        c.video.width = 160;
        c.validate().unwrap();
    }

    #[test]
    fn video_rate_validation() {
        let mut c = valid();
        for fps in [0, 121] {
            c.video.fps = fps;
            refused(&c, "video.fps");
        }
        c = valid();
        for fps in [1, 120] {
            c.video.fps = fps;
            c.validate().unwrap();
        }
        for b in [49_999, 50_000_001] {
            c.video.bitrate = b;
            refused(&c, "video.bitrate");
        }
        for b in [50_000, 50_000_000] {
            c.video.bitrate = b;
            c.validate().unwrap();
        }
        c.video.keyframe_interval = 0;
        refused(&c, "video.keyframe_interval");
        c.video.keyframe_interval = 1;
        c.validate().unwrap();
        c.video.vp8_bitrate = Some(49_999);
        refused(&c, "video.vp8_bitrate");
        c.video.vp8_bitrate = Some(600_000);
        c.validate().unwrap();
    }

    #[test]
    fn webrtc_limits_validation() {
        let mut c = valid();
        for n in [0, 65] {
            c.webrtc.max_sessions = n;
            refused(&c, "webrtc.max_sessions");
        }
        for n in [1, 64] {
            c.webrtc.max_sessions = n;
            c.validate().unwrap();
        }
        c.webrtc.connect_timeout_secs = 0;
        refused(&c, "webrtc.connect_timeout_secs");
        c = valid();
        c.webrtc.disconnected_timeout_secs = 0;
        refused(&c, "webrtc.disconnected_timeout_secs");
    }

    #[test]
    fn udp_bind_validation() {
        let mut c = valid();
        c.webrtc.udp_bind = vec![
            "0.0.0.0:0".into(),
            "[::]:0".into(),
            "192.168.1.5:5000".into(),
        ];
        c.validate().unwrap();
        c.webrtc.udp_bind = vec![];
        refused(&c, "webrtc.udp_bind");
        c.webrtc.udp_bind = vec!["0.0.0.0:0".into(), "localhost:0".into()];
        refused(&c, "webrtc.udp_bind[1]");
        c.webrtc.udp_bind = vec!["0.0.0.0".into()];
        refused(&c, "webrtc.udp_bind[0]");
    }

    #[test]
    fn ice_server_validation() {
        let stun = |u: &str| IceServer {
            urls: vec![u.into()],
            ..IceServer::default()
        };
        let mut c = valid();
        c.webrtc.ice_servers = vec![stun("stun:stun.l.google.com:19302"), stun("stuns:x")];
        c.validate().unwrap();
        c.webrtc.ice_servers = vec![stun("stun:ok"), stun("http://x")];
        refused(&c, "webrtc.ice_servers[1].urls[0]");
        c.webrtc.ice_servers = vec![stun("stun:")];
        refused(&c, "webrtc.ice_servers[0].urls[0]");
        c.webrtc.ice_servers = vec![IceServer::default()];
        refused(&c, "webrtc.ice_servers[0].urls");
        c.webrtc.ice_servers = vec![stun("turn:t")];
        refused(&c, "webrtc.ice_servers[0].username");
        c.webrtc.ice_servers[0].username = Some("u".into());
        refused(&c, "webrtc.ice_servers[0].credential");
        c.webrtc.ice_servers[0].credential = Some(String::new());
        refused(&c, "webrtc.ice_servers[0].credential");
        c.webrtc.ice_servers[0].credential = Some("c".into());
        c.validate().unwrap();
        c.webrtc.ice_servers = vec![stun("turns:t")];
        refused(&c, "webrtc.ice_servers[0].username");
    }

    #[test]
    fn mqtt_tls_and_password_settings_are_validated_without_reading_files() {
        let mut c = valid();
        c.mqtt.ca_file = Some("/etc/campeer/ca.pem".into());
        let msg = refused(&c, "mqtt.ca_file");
        assert!(msg.contains("mqtts://"), "{msg}");
        c.mqtt.url = "mqtts://u:hunter2@h".into();
        // Consistent settings pass: whether the file exists is a start-up
        // check (daemon::startup_checks), not validation.
        c.validate().unwrap();
        c.mqtt.ca_file = None;
        c.mqtt.client_cert = Some("/etc/campeer/cam1.crt".into());
        refused(&c, "mqtt.client_key");
        c.mqtt.client_cert = None;
        c.mqtt.password_file = Some("/etc/campeer/mqtt.pass".into());
        let msg = refused(&c, "mqtt.password_file");
        assert!(
            msg.contains("one place") && !msg.contains("hunter2"),
            "{msg}"
        );
        c.mqtt.url = "mqtts://h".into();
        refused(&c, "mqtt.password_file");
        c.mqtt.username = Some("cam1".into());
        c.validate().unwrap();
        c.mqtt.username = Some("other".into());
        c.mqtt.url = "mqtts://cam1@h".into();
        refused(&c, "mqtt.username");
    }

    #[test]
    fn effective_client_id() {
        let mut c = valid();
        assert_eq!(c.effective_client_id(), "campeer-cam1");
        c.mqtt.client_id = Some("mine".into());
        assert_eq!(c.effective_client_id(), "mine");
    }

    #[test]
    fn sanitize_host_names() {
        assert_eq!(
            sanitize_device_id("raspberrypi").as_deref(),
            Some("raspberrypi")
        );
        assert_eq!(
            sanitize_device_id("Pi-Kitchen.local\n").as_deref(),
            Some("pi-kitchen-local")
        );
        assert_eq!(sanitize_device_id("my_cam 2").as_deref(), Some("my_cam-2"));
        assert_eq!(sanitize_device_id("-_-cam").as_deref(), Some("cam"));
        assert_eq!(sanitize_device_id("Café").as_deref(), Some("caf-"));
        assert_eq!(sanitize_device_id(&"A".repeat(100)), Some("a".repeat(63)));
        assert_eq!(sanitize_device_id(""), None);
        assert_eq!(sanitize_device_id("..."), None);
        assert_eq!(sanitize_device_id("   "), None);
    }

    #[test]
    fn sanitized_ids_are_always_valid() {
        for raw in [
            "x",
            "ÄÖÜ.x",
            "1.2.3.4",
            "_",
            "a/b+c#d",
            "\u{0}z",
            "é",
            &"-".repeat(70),
            &"é".repeat(70),
        ] {
            if let Some(id) = sanitize_device_id(raw) {
                assert!(validate_device_id(&id), "{raw:?} -> {id:?}");
            }
        }
    }

    #[test]
    fn default_device_id_is_valid_and_used_by_default() {
        let id = default_device_id();
        assert!(validate_device_id(&id), "{id:?}");
        assert_eq!(Config::default().device_id, id);
    }

    #[test]
    fn mqtt_target_defaults() {
        let t = MqttTarget::parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, &t.username, &t.password),
            (false, "broker.local", 1883, &None, &None)
        );
        let t = MqttTarget::parse("mqtts://broker.local/").unwrap();
        assert_eq!((t.tls, t.port), (true, 8883));
        let t = MqttTarget::parse("mqtt://127.0.0.1:11883").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 11883));
        let t = MqttTarget::parse("MQTT://Broker:1").unwrap();
        assert_eq!((t.tls, t.port), (false, 1));
    }

    #[test]
    fn mqtt_target_ipv6_is_connectable() {
        let t = MqttTarget::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 1884));
        // rumqttc connects to format!("{host}:{port}"), which must parse.
        let addr: SocketAddr = format!("{}:{}", t.host, t.port).parse().unwrap();
        assert_eq!(addr, "[::1]:1884".parse::<SocketAddr>().unwrap());
        let t = MqttTarget::parse("mqtts://[fe80::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[fe80::1]", 8883));
    }

    #[test]
    fn mqtt_target_credentials_are_percent_decoded() {
        let t = MqttTarget::parse("mqtt://us%40er:p%3Aa%2Fss%20w@h:1883").unwrap();
        assert_eq!(t.username.as_deref(), Some("us@er"));
        assert_eq!(t.password.as_deref(), Some("p:a/ss w"));
        let t = MqttTarget::parse("mqtt://user@h").unwrap();
        assert_eq!(
            (t.username.as_deref(), t.password.as_deref()),
            (Some("user"), None)
        );
        let t = MqttTarget::parse("mqtt://j%C3%BCrgen:x@h").unwrap();
        assert_eq!(t.username.as_deref(), Some("jürgen"));
    }

    #[test]
    fn mqtt_target_refusals() {
        for bad in [
            "",
            "localhost:1883",
            "127.0.0.1",
            "tcp://h:1883",
            "http://h",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:65536",
            "mqtt://h:port",
            "mqtt://h/topic",
            "mqtt://h?x=1",
            "mqtt://h#f",
            "mqtt://:pw@h",
            "mqtt://u:%ZZ@h",
            "mqtt://u:%ff@h",
            "mqtt://bad%20host",
            "mqtt://[::1",
        ] {
            let err = MqttTarget::parse(bad).expect_err(bad);
            assert!(matches!(err, ConfigError::MqttUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn mqtt_target_display_hides_the_password() {
        let t = MqttTarget::parse("mqtt://alice:s3cret@h:1884").unwrap();
        assert_eq!(t.to_string(), "mqtt://alice:***@h:1884");
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = MqttTarget::parse("mqtts://a%40b@[::1]").unwrap();
        assert_eq!(t.to_string(), "mqtts://a%40b@[::1]:8883");
        assert_eq!(
            MqttTarget::parse("mqtt://h").unwrap().to_string(),
            "mqtt://h:1883"
        );
        // Display output parses back to the same target (minus the password).
        let t = MqttTarget::parse("mqtt://us%40er@h:2").unwrap();
        assert_eq!(MqttTarget::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn mqtt_target_errors_hide_the_password() {
        for bad in [
            "mqtt://u:hunter2@h:0",
            "mqtt://u:hunter2@h/x",
            "tcp://u:hunter2@h",
            "mqtt://u:hun@ter2@h:x",
        ] {
            let msg = MqttTarget::parse(bad).unwrap_err().to_string();
            assert!(!msg.contains("hunter2") && !msg.contains("ter2"), "{msg}");
            assert!(msg.contains(REDACTED), "{msg}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut c = valid();
        c.mqtt.url = "mqtt://u:hunter2@h".into();
        c.webrtc.ice_servers = vec![IceServer {
            urls: vec!["turn:t".into()],
            username: Some("tu".into()),
            credential: Some("swordfish".into()),
        }];
        let dbg = format!("{c:?} {c:#?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("swordfish"),
            "{dbg}"
        );
        assert!(
            dbg.contains("u:***@h") && dbg.contains("keepalive_secs"),
            "{dbg}"
        );
    }

    #[test]
    fn url_handling_never_panics() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "mqts:/@[]%0aF9.-_?#é€ \0".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5000 {
            let len = rng.gen_range(0..24);
            let mut s: String = "mqtt://".chars().take(rng.gen_range(0..8)).collect();
            s.extend((0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())]));
            let redacted = redact_url(&s);
            if let Ok(t) = MqttTarget::parse(&s) {
                let shown = t.to_string();
                if let Some(p) = t.password.as_deref().filter(|p| p.len() > 3) {
                    assert!(!shown.contains(p), "{s:?} -> {shown:?}");
                    assert!(
                        !redacted.contains(&format!(":{p}@")),
                        "{s:?} -> {redacted:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn redact_url_cases() {
        assert_eq!(redact_url("mqtt://h:1883"), "mqtt://h:1883");
        assert_eq!(redact_url("mqtt://u@h"), "mqtt://u@h");
        assert_eq!(redact_url("mqtt://u:p@h"), "mqtt://u:***@h");
        assert_eq!(redact_url("mqtt://u:p@x@h:1"), "mqtt://u:***@h:1");
        assert_eq!(redact_url("u:p@h"), "u:***@h");
        assert_eq!(redact_url(""), "");
        assert_eq!(redact_url("mqtt://ü:ö@é"), "mqtt://ü:***@é");
    }

    #[test]
    fn toml_output_round_trips_and_redacts() {
        let mut c = valid();
        c.mqtt.url = "mqtt://u:pw@h:1883".into();
        c.mqtt.client_id = Some("cid".into());
        c.webrtc.ice_servers = vec![
            IceServer {
                urls: vec!["stun:s".into()],
                ..IceServer::default()
            },
            IceServer {
                urls: vec!["turn:t".into()],
                username: Some("tu".into()),
                credential: Some("tc".into()),
            },
        ];
        let text = c.to_toml_string().unwrap();
        assert!(!text.contains("pw@") && !text.contains("\"tc\""), "{text}");
        let back = Config::from_toml_str(&text, "out").unwrap();
        let mut expected = c.clone();
        expected.mqtt.url = "mqtt://u:***@h:1883".into();
        expected.webrtc.ice_servers[1].credential = Some(REDACTED.into());
        assert_eq!(back, expected);
        // Without secrets the output is the configuration itself.
        let plain = valid();
        assert_eq!(
            Config::from_toml_str(&plain.to_toml_string().unwrap(), "out").unwrap(),
            plain
        );
    }

    #[test]
    fn check_config_prints_effective_config() {
        let path = temp_path("check.toml");
        std::fs::write(
            &path,
            "device_id = \"cam9\"\n[mqtt]\nurl = \"mqtt://u:pw@h\"\n",
        )
        .unwrap();
        let out = check_config(&path);
        let _ = std::fs::remove_file(&path);
        let out = out.unwrap();
        assert!(out.contains("# MQTT client id: campeer-cam9"), "{out}");
        assert!(out.contains("keepalive_secs = 30"), "{out}");
        assert!(!out.contains("pw"), "{out}");
        let back = Config::from_toml_str(&out, "out").unwrap();
        assert_eq!(back.device_id, "cam9");
        assert_eq!(back.mqtt.url, "mqtt://u:***@h");
    }

    #[test]
    fn check_config_names_the_file_for_invalid_values() {
        let path = temp_path("invalid.toml");
        std::fs::write(&path, "[video]\nwidth = 641\n").unwrap();
        let err = check_config(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        let msg = err.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("invalid video.width: 641"), "{msg}");
        assert_eq!(msg.matches("641").count(), 1, "{msg}");
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn example_file_loads_and_is_all_defaults() {
        let c = Config::load(Path::new(EXAMPLE)).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    /// A configuration with every optional key set, so all keys serialize.
    fn everything_set() -> Config {
        let text = r#"
            board = "rpi4"
            [http]
            ws_url = "ws://b:9001"
            allowed_origins = ["https://ha.example:8123"]
            hosts = ["cam.example.org"]
            [mqtt]
            client_id = "x"
            username = "cam1"
            password_file = "/etc/campeer/mqtt.pass"
            ca_file = "/etc/campeer/ca.pem"
            client_cert = "/etc/campeer/cam1.crt"
            client_key = "/etc/campeer/cam1.key"
            [[webrtc.ice_servers]]
            urls = "turn:t"
            username = "u"
            credential = "c"
            [[gpio]]
            name = "led"
            line = "GPIO17"
            direction = "output"
            [[access.keys]]
            id = "phone"
            secret = "0123456789abcdef"
            secret_file = "/etc/campeer/phone.key"
            role = "view"
        "#;
        Config::from_toml_str(text, "everything").unwrap()
    }

    /// Every key as a dotted path (`webrtc.ice_servers.urls` for the
    /// members of a list of tables), tables themselves left out.
    fn all_keys() -> Vec<String> {
        fn walk(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
            for (k, v) in table {
                let full = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => walk(&full, t, keys),
                    toml::Value::Array(items) => {
                        keys.push(full.clone());
                        if let Some(toml::Value::Table(item)) = items.first() {
                            walk(&full, item, keys);
                        }
                    }
                    _ => keys.push(full),
                }
            }
        }
        let toml::Value::Table(top) = toml::Value::try_from(everything_set()).unwrap() else {
            panic!("a config serializes as a table")
        };
        let mut keys = Vec::new();
        walk("", &top, &mut keys);
        keys
    }

    #[test]
    fn all_keys_sees_nested_keys() {
        let keys = all_keys();
        for k in [
            "device_id",
            "mqtt.client_id",
            "webrtc.ice_servers.credential",
            "gpio.debounce_ms",
            "access.keys.secret_file",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
    }

    #[test]
    fn every_key_is_documented() {
        let docs = std::fs::read_to_string(DOCS).unwrap();
        for key in all_keys() {
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/configuration.md lacks `{key}`"
            );
        }
    }

    #[test]
    fn every_key_is_in_the_example() {
        let example = std::fs::read_to_string(EXAMPLE).unwrap();
        for key in all_keys() {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            let present = example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{leaf} =")) || l.trim_end() == format!("[[{key}]]")
            });
            assert!(present, "examples/campeer.toml lacks {key}");
        }
    }

    #[test]
    fn control_sections_are_validated() {
        let mut c = everything_set();
        c.access.keys[0].secret_file = None;
        c.device_id = "cam1".into();
        // everything_set's TLS files do not exist; mqtt_settings_are_validated covers them.
        c.mqtt = MqttConfig::default();
        c.validate().unwrap();
        c.gpio[0].name = "Bad Name".into();
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("gpio[0]") && msg.contains("Bad Name"), "{msg}");
        c.gpio[0].name = "led".into();
        c.access.keys[0].secret = Some("short".into());
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::Control(_)), "{err}");
        assert!(!err.to_string().contains("short\""), "{err}");
    }

    #[test]
    fn access_secrets_are_redacted_in_toml_output() {
        let c = everything_set();
        let text = c.to_toml_string().unwrap();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        let back = Config::from_toml_str(&text, "out").unwrap();
        assert_eq!(back.access.keys[0].secret.as_deref(), Some(REDACTED));
        assert_eq!(back.gpio, c.gpio);
    }

    #[test]
    fn http_guard_settings_are_validated() {
        let c = Config {
            device_id: "cam1".into(),
            http: HttpConfig {
                allowed_origins: vec!["https://HA.example:8123".into()],
                hosts: vec!["cam.example.org".into()],
                ..HttpConfig::default()
            },
            ..Config::default()
        };
        c.validate().unwrap();
        for (origin, key) in [
            ("ha.example", "http.allowed_origins[1]"),
            ("https://ha.example/app", "http.allowed_origins[1]"),
        ] {
            let mut bad = c.clone();
            bad.http.allowed_origins.push(origin.into());
            let msg = bad.validate().unwrap_err().to_string();
            assert!(msg.contains(key), "{msg}");
        }
        let mut bad = c.clone();
        bad.http.hosts.push("evil example".into());
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.hosts[1]"));
        let mut bad = c.clone();
        bad.http.max_connections = 0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.max_connections"));
        let mut bad = c.clone();
        bad.http.max_connections_per_ip = 129;
        let msg = bad.validate().unwrap_err().to_string();
        assert!(msg.contains("http.max_connections_per_ip: 129"), "{msg}");
    }

    #[test]
    fn tls_needs_both_files() {
        let c = parse(
            "device_id = \"cam1\"\n[http]\ntls_cert = \"/etc/campeer/tls.crt\"\n\
             tls_key = \"/etc/campeer/tls.key\"\n",
        )
        .expect("both files");
        c.validate().expect("valid");
        assert_eq!(
            c.http.tls_files(),
            Some((
                Path::new("/etc/campeer/tls.crt"),
                Path::new("/etc/campeer/tls.key")
            ))
        );
        assert_eq!(HttpConfig::default().tls_files(), None);
        for (text, key) in [
            ("tls_cert = \"/c.pem\"\n", "http.tls_key"),
            ("tls_key = \"/k.pem\"\n", "http.tls_cert"),
            ("tls_cert = \"\"\ntls_key = \"/k.pem\"\n", "http.tls_cert"),
        ] {
            let c = parse(&format!("device_id = \"cam1\"\n[http]\n{text}")).expect("parses");
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
    }

    #[test]
    fn line_column_counts_characters() {
        let text = "a\nbé c\n";
        assert_eq!(line_column(text, 0), Some((1, 1)));
        assert_eq!(line_column(text, 2), Some((2, 1)));
        assert_eq!(line_column(text, 6), Some((2, 4)));
        assert_eq!(line_column(text, 4), None); // inside 'é'
        assert_eq!(line_column(text, 100), None);
    }
}
