//! Command-line interface: `campeer run`, `campeer check-config FILE`,
//! `campeer view`, `campeer pair`, `campeer keys`, `campeer gpio-safe` and
//! `campeer serve-page`.
//!
//! Flags of `run` lay over the configuration file key by key (see
//! [`RunArgs::resolve`]); the result is validated once, after the overlay, so
//! a flag can fix a value the file got wrong. A validation error about a key
//! that a flag set names the flag.

use crate::config::{Config, ConfigError, IceServer};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The default log filter: info for campeer, and only real trouble from the
/// WebRTC stack, whose warnings on normal ICE/DTLS start-up are noise.
pub const DEFAULT_LOG: &str =
    "info,rtc=warn,rtc_ice=error,rtc_dtls=error,rtc::peer_connection::handler=error";

/// campeer: a WebRTC camera that answers offers over MQTT.
#[derive(Debug, Parser)]
#[command(name = "campeer", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter, RUST_LOG style: `info`, `debug`, `campeer=debug,webrtc=warn`.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = DEFAULT_LOG,
        value_name = "FILTER"
    )]
    pub log: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the camera daemon.
    Run(RunArgs),
    /// Check a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Connect to a device as a viewer, receive video, and report.
    View(ViewArgs),
    /// Print the pairing link (and QR code) of the admin key again.
    Pair(PairArgs),
    /// Manage access keys in the state directory; a running daemon picks
    /// changes up without a restart.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Drive every configured GPIO output to its safe value and exit (the
    /// service's stop step; the daemon must not be running).
    GpioSafe(GpioSafeArgs),
    /// Serve the viewer page alone (no device, no broker) on a machine the
    /// viewers can reach; pair it with `campeer pair --page-url`.
    ServePage(ServePageArgs),
}

/// `campeer pair`: the admin key's link, for the device's own page or for
/// a page hosted elsewhere.
#[derive(Debug, Args, Default, Clone, PartialEq)]
pub struct PairArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A page hosted off the device (`campeer serve-page`, any static
    /// HTTPS host): the link opens it there, naming the device and
    /// `--broker` in its fragment.
    #[arg(long, value_name = "URL", requires = "broker")]
    pub page_url: Option<String>,
    /// The broker's MQTT-over-WebSocket URL as the viewers' browsers reach
    /// it (`wss://broker.example.org:8884/mqtt`); with `--page-url`.
    #[arg(long, value_name = "URL", requires = "page_url")]
    pub broker: Option<String>,
}

/// `campeer serve-page`.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct ServePageArgs {
    /// Address to listen on, e.g. `0.0.0.0:8443`.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The broker's MQTT-over-WebSocket URL the page may connect to
    /// (`wss://...`); the only other origin its CSP allows.
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// PEM certificate chain: serve HTTPS (browsers need it for a page
    /// on the Internet, and an https: page can only use a wss: broker).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `campeer gpio-safe`: the configuration is resolved as for `campeer run`.
#[derive(Debug, Args, Default, Clone, PartialEq)]
pub struct GpioSafeArgs {
    /// Configuration file (TOML), as given to `campeer run`.
    #[arg(long, short = 'c', value_name = "FILE", env = "CAMPEER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Board profile, as given to `campeer run`.
    #[arg(long, value_name = "NAME")]
    pub board: Option<String>,
}

impl GpioSafeArgs {
    /// The configuration `campeer run` would use with these two flags.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        RunArgs {
            config: self.config.clone(),
            board: self.board.clone(),
            ..RunArgs::default()
        }
        .resolve()
    }
}

/// Where the keys are: the daemon's configuration and state directory.
#[derive(Debug, Args, Default, Clone, PartialEq)]
pub struct StoreArgs {
    /// The daemon's configuration file (for access.state_dir and the
    /// page's address). Default: $CAMPEER_CONFIG, else
    /// /etc/campeer/campeer.toml when it exists.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "CAMPEER_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// The state directory holding keys.toml (overrides the configuration).
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

/// `campeer keys ...`
#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum KeysAction {
    /// Add a key with a generated secret and print its pairing link.
    Add {
        /// The key id: [a-z0-9][a-z0-9_-]{0,62}.
        name: String,
        /// The highest role the key may take.
        #[arg(long, value_parser = ["view", "control"], default_value = "view")]
        role: String,
    },
    /// List the keys (ids and roles; never secrets).
    List,
    /// Remove a key; its sessions end and it stops working at once.
    Revoke {
        /// The key id.
        name: String,
    },
    /// Change a key's highest role; its live sessions above the new role
    /// end at once (its secret, tokens and pairing link stay).
    SetRole {
        /// The key id.
        name: String,
        /// The new highest role.
        #[arg(value_parser = ["view", "control"])]
        role: String,
    },
    /// WHEP and snapshot tokens: view-only bearer tokens of their own,
    /// several per key, each revocable without revoking the key.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Let the next start open the claim window once more (the owner lost
    /// the admin key and has no terminal on the device). The admin key
    /// gets a new secret; refused while other keys exist. Needs write
    /// access to the state directory (root or the campeer user).
    ReopenClaim,
}

/// `campeer keys token ...`
#[derive(Debug, Subcommand, Clone, PartialEq)]
pub enum TokenAction {
    /// Make a token for a key and print it (shown only now; the store
    /// keeps its hash). Use as `Authorization: Bearer <token>`.
    Add {
        /// The key id.
        name: String,
    },
    /// List tokens (ids, keys, dates; never the tokens), of one key or all.
    List {
        /// Only this key's tokens.
        name: Option<String>,
    },
    /// Revoke one token by its id; the key keeps working.
    Revoke {
        /// The token id (the part before the dot; `keys token list`).
        token_id: String,
    },
}

/// `campeer run`: every flag overrides the key named in its help.
#[derive(Debug, Args, Default, Clone, PartialEq)]
pub struct RunArgs {
    /// Configuration file (TOML). Without it, every key has its default.
    #[arg(long, short = 'c', value_name = "FILE", env = "CAMPEER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Board profile to start from: rpi-zero2w, rpi3, rpi4, rpi5,
    /// rpi-cam-v2, rpi-cam-v3, rpi-cam-hq, qemu-raspi3b, qemu-raspi2b (`board`). The file and the other flags lay over it.
    #[arg(long, value_name = "NAME")]
    pub board: Option<String>,
    /// Device id (`device_id`).
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// Broker URL, mqtt://user:pass@host:port, user, pass and port optional
    /// (`mqtt.url`). Prefer the
    /// environment variable for passwords: the command line is visible to
    /// every user of the machine.
    #[arg(
        long,
        value_name = "URL",
        env = "CAMPEER_MQTT_URL",
        hide_env_values = true
    )]
    pub mqtt: Option<String>,
    /// Topic root (`mqtt.prefix`).
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Video source: test, none or v4l2:/dev/videoN (`video.source`).
    #[arg(long, value_name = "SOURCE")]
    pub video: Option<String>,
    /// Viewer page listen address, e.g. 0.0.0.0:8080; "" for none (`http.listen`).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// With an external broker: its WebSocket URL for browsers (`http.ws_url`).
    #[arg(long, value_name = "URL")]
    pub mqtt_ws_url: Option<String>,
    /// Embedded broker's MQTT listen address (`broker.listen`).
    #[arg(long, value_name = "ADDR")]
    pub broker_listen: Option<String>,
    /// Embedded broker's WebSocket listen address, "" for none (`broker.ws_listen`).
    #[arg(long, value_name = "ADDR")]
    pub broker_ws_listen: Option<String>,
    /// Audio source: none, tone:HZ or alsa:PCM (`audio.source`).
    #[arg(long, value_name = "SOURCE")]
    pub audio: Option<String>,
    /// Picture size, e.g. 1280x720 (`video.width`, `video.height`).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Frames per second (`video.fps`).
    #[arg(long, value_name = "N")]
    pub fps: Option<u32>,
    /// Target bitrate in bits per second (`video.bitrate`).
    #[arg(long, value_name = "BPS")]
    pub bitrate: Option<u32>,
    /// Most concurrent sessions (`webrtc.max_sessions`).
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Frames between periodic IDRs (`video.keyframe_interval`).
    #[arg(long, value_name = "N")]
    pub keyframe_interval: Option<u32>,
    /// Seconds a session may take to connect (`webrtc.connect_timeout_secs`).
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// Seconds a connected session may stay ICE-disconnected before it is
    /// closed (`webrtc.disconnected_timeout_secs`).
    #[arg(long, value_name = "SECS")]
    pub disconnected_timeout: Option<u64>,
    /// A STUN server URL, e.g. stun:stun.example.org:3478; repeatable. Added
    /// after the file's `webrtc.ice_servers`.
    #[arg(long, value_name = "URL")]
    pub stun: Vec<String>,
    /// Open access: anyone who can reach the broker may watch and control
    /// (`access.open = true`). Only for isolated networks and tests.
    #[arg(long)]
    pub open_access: bool,
    /// Where generated keys live (`access.state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds between stats log lines; 0 turns them off. Not a config key.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stats_interval: u64,
}

impl RunArgs {
    /// The configuration to run with: the file (or the defaults when there
    /// is none), the flags laid over it, validated.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load_layered(self.config.as_deref(), self.board.as_deref())?;
        let file_ice_servers = config.webrtc.ice_servers.len();
        self.apply(&mut config);
        config
            .validate()
            .map_err(|e| self.attribute(e, file_ice_servers))?;
        Ok(config)
    }

    /// Lays the flags that were given over `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.device_id {
            config.device_id = v.clone();
        }
        if let Some(v) = &self.mqtt {
            config.mqtt.url = v.clone();
            // An explicit broker: the embedded one is not needed.
            config.broker.embedded = false;
        }
        if let Some(v) = &self.http {
            config.http.listen = v.clone();
        }
        if let Some(v) = &self.mqtt_ws_url {
            config.http.ws_url = Some(v.clone());
        }
        if let Some(v) = &self.broker_listen {
            config.broker.listen = v.clone();
        }
        if let Some(v) = &self.broker_ws_listen {
            config.broker.ws_listen = v.clone();
        }
        if self.open_access {
            config.access.open = true;
        }
        if let Some(v) = &self.state_dir {
            config.access.state_dir = Some(v.clone());
        }
        if let Some(v) = &self.prefix {
            config.mqtt.prefix = v.clone();
        }
        if let Some(v) = &self.video {
            config.video.source = v.clone();
        }
        if let Some(v) = &self.audio {
            config.audio.source = v.clone();
        }
        if let Some((w, h)) = self.size {
            config.video.width = w;
            config.video.height = h;
        }
        if let Some(v) = self.fps {
            config.video.fps = v;
        }
        if let Some(v) = self.bitrate {
            config.video.bitrate = v;
        }
        if let Some(v) = self.max_sessions {
            config.webrtc.max_sessions = v;
        }
        if let Some(v) = self.keyframe_interval {
            config.video.keyframe_interval = v;
        }
        if let Some(v) = self.connect_timeout {
            config.webrtc.connect_timeout_secs = v;
        }
        if let Some(v) = self.disconnected_timeout {
            config.webrtc.disconnected_timeout_secs = v;
        }
        config
            .webrtc
            .ice_servers
            .extend(self.stun.iter().map(|url| IceServer {
                urls: vec![url.clone()],
                username: None,
                credential: None,
            }));
    }

    /// Says which flag set a refused key, or which file it came from.
    fn attribute(&self, err: ConfigError, file_ice_servers: usize) -> ConfigError {
        let ConfigError::Invalid { key, message } = err else {
            return err;
        };
        match self.flag_for(&key, file_ice_servers) {
            Some(flag) => ConfigError::Invalid {
                key,
                message: format!("{message} (from {flag})"),
            },
            None => {
                let err = ConfigError::Invalid { key, message };
                match &self.config {
                    Some(path) => ConfigError::InFile {
                        path: path.clone(),
                        error: Box::new(err),
                    },
                    None => err,
                }
            }
        }
    }

    /// The flag that set `key`, if one did.
    fn flag_for(&self, key: &str, file_ice_servers: usize) -> Option<&'static str> {
        let set = |given: bool, flag: &'static str| given.then_some(flag);
        match key {
            "device_id" => set(self.device_id.is_some(), "--device-id"),
            "board" => set(self.board.is_some(), "--board"),
            "mqtt.url" => set(self.mqtt.is_some(), "--mqtt"),
            "http.listen" => set(self.http.is_some(), "--http"),
            "http.ws_url" => set(self.mqtt_ws_url.is_some(), "--mqtt-ws-url"),
            "broker.listen" => set(self.broker_listen.is_some(), "--broker-listen"),
            "broker.ws_listen" => set(self.broker_ws_listen.is_some(), "--broker-ws-listen"),
            "mqtt.prefix" => set(self.prefix.is_some(), "--prefix"),
            "video.source" => set(self.video.is_some(), "--video"),
            "audio.source" => set(self.audio.is_some(), "--audio"),
            "video.width" | "video.height" => set(self.size.is_some(), "--size"),
            "video.fps" => set(self.fps.is_some(), "--fps"),
            "video.bitrate" => set(self.bitrate.is_some(), "--bitrate"),
            "video.keyframe_interval" => {
                set(self.keyframe_interval.is_some(), "--keyframe-interval")
            }
            "webrtc.max_sessions" => set(self.max_sessions.is_some(), "--max-sessions"),
            "webrtc.connect_timeout_secs" => {
                set(self.connect_timeout.is_some(), "--connect-timeout")
            }
            "webrtc.disconnected_timeout_secs" => set(
                self.disconnected_timeout.is_some(),
                "--disconnected-timeout",
            ),
            _ => {
                let index = key
                    .strip_prefix("webrtc.ice_servers[")
                    .and_then(|rest| rest.split(']').next())
                    .and_then(|n| n.parse::<usize>().ok())?;
                set(index >= file_ice_servers, "--stun")
            }
        }
    }
}

/// Parses `WxH` (also `WXH`) into (width, height).
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a size; expected WIDTHxHEIGHT, e.g. 1280x720");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    Ok((w, h))
}

/// `campeer view`: the project's own viewer. It offers recvonly video and a
/// `control` data channel, decodes what arrives, and reports frame count,
/// losses and latency.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct ViewArgs {
    /// Broker URL, mqtt://user:pass@host:port, user, pass and port optional.
    #[arg(
        long,
        value_name = "URL",
        env = "CAMPEER_MQTT_URL",
        hide_env_values = true,
        default_value = "mqtt://127.0.0.1:1883"
    )]
    pub mqtt: String,
    /// Topic root the device uses.
    #[arg(long, value_name = "P", default_value = "campeer")]
    pub prefix: String,
    /// The device id to view (not needed with --janus).
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "janus",
        default_value = ""
    )]
    pub device: String,
    /// Stop after this many decoded frames.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub frames: u64,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Session id to use (default: random). Sent as given, not validated, so
    /// tests can try invalid ones.
    #[arg(long, value_name = "SID")]
    pub sid: Option<String>,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Offer no video; succeed once connected.
    #[arg(long)]
    pub no_video: bool,
    /// The video codec to offer: `h264` (with VP8 as the device's second
    /// choice, as browsers do) or `vp8` alone (what a browser without H.264
    /// offers).
    #[arg(long, value_name = "CODEC", default_value = "h264", value_parser = ["h264", "vp8"])]
    pub codec: String,
    /// Offer no audio.
    #[arg(long)]
    pub no_audio: bool,
    /// Open no data channel.
    #[arg(long)]
    pub no_data: bool,
    /// With audio: stop only after this many seconds of decoded audio.
    #[arg(long, value_name = "SECS")]
    pub audio_secs: Option<f64>,
    /// Send this SDP as the offer instead of generating one (for testing);
    /// the answer is the result.
    #[arg(long, value_name = "FILE")]
    pub offer_file: Option<PathBuf>,
    /// Stay connected until killed (or --timeout), ignoring --frames.
    #[arg(long)]
    pub hold: bool,
    /// Publish the offer twice, as a QoS 1 redelivery would (for testing).
    #[arg(long)]
    pub repeat_offer: bool,
    /// Access key id, for a device that requires signed offers.
    #[arg(long, value_name = "ID", requires = "secret_file")]
    pub key: Option<String>,
    /// File holding the access key's secret (never pass secrets as flags).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub secret_file: Option<PathBuf>,
    /// Role to ask for when signing: view or control.
    #[arg(long, value_name = "ROLE", default_value = "control")]
    pub role: String,
    /// Call a data-channel method once connected, e.g.
    /// `--call gpio.toggle '{"name":"gate"}'` (`-` for no params); repeatable.
    #[arg(long, num_args = 2, value_names = ["METHOD", "PARAMS"])]
    pub call: Vec<String>,
    /// Send this text on the control channel as is, before any --call
    /// (for testing malformed requests); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub send_raw: Vec<String>,
    /// Send a keyframe request (PLI) after this many decoded frames and
    /// report how many frames the keyframe took (for testing).
    #[arg(long, value_name = "N")]
    pub pli_at: Option<u64>,
    /// With mqtts://: PEM file of the CA that signed the broker's
    /// certificate (default: the system's CA certificates).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// With mqtts://: PEM client certificate, for brokers that require one.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// File whose first line is the broker password (the user name comes
    /// from the --mqtt URL); keeps it off the command line.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Pull the stream over WHEP from this URL (e.g.
    /// `http://cam1.local:8080/whep`) instead of MQTT signaling, with the
    /// bearer token in --token-file. The session is DELETEd at the end.
    #[arg(long, value_name = "URL")]
    pub whep: Option<String>,
    /// With --whep: file whose first line is the bearer token (as
    /// `campeer keys token add NAME` prints it).
    #[arg(long, value_name = "FILE", requires = "whep")]
    pub token_file: Option<PathBuf>,
    /// When the device hands the viewer over to its Janus relay, report
    /// the refusal instead of watching there.
    #[arg(long)]
    pub no_relay: bool,
    /// Do not ask the device for ICE servers (`ice_request`) before the
    /// offer; by default the viewer asks and uses what it gets (STUN, and
    /// TURN credentials made for it).
    #[arg(long)]
    pub no_ice_request: bool,
    /// Watch a Janus Streaming mountpoint directly, with --mountpoint and
    /// --pin, without asking the device (diagnostics: is the relay fed?
    /// is a PIN refused?).
    #[arg(long, value_name = "URL", requires = "mountpoint")]
    pub janus: Option<String>,
    /// With --janus: the mountpoint id.
    #[arg(long, value_name = "ID", requires = "janus")]
    pub mountpoint: Option<u64>,
    /// With --janus: the mountpoint's PIN (none if left out).
    #[arg(long, value_name = "PIN", requires = "janus")]
    pub pin: Option<String>,
    /// File with the STUN/TURN servers to use, as JSON: an array of
    /// `{"urls": ..., "username": ..., "credential": ...}` (the browser's
    /// `RTCIceServer`, the page's `ice_servers`). Kept in a file so TURN
    /// credentials stay off the command line.
    #[arg(long, value_name = "FILE")]
    pub ice_servers: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("campeer").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match cli(&[&["run"], args].concat()).unwrap().command {
            Command::Run(a) => a,
            other => panic!("expected run, got {other:?}"),
        }
    }

    fn view_args(args: &[&str]) -> ViewArgs {
        match cli(&[&["view"], args].concat()).unwrap().command {
            Command::View(a) => a,
            other => panic!("expected view, got {other:?}"),
        }
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "campeer-cli-test-{}-{}-{name}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn size_parsing() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert_eq!(parse_size("640X480"), Ok((640, 480)));
        for bad in [
            "",
            "1280",
            "x720",
            "1280x",
            "1280*720",
            "-2x4",
            "axb",
            "1x2x3",
            "99999999999x1",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("WIDTHxHEIGHT"), "{bad}: {e}");
        }
        let e = cli(&["run", "--size", "big"]).unwrap_err().to_string();
        assert!(e.contains("WIDTHxHEIGHT"), "{e}");
    }

    #[test]
    fn run_without_flags_is_defaults() {
        let a = run_args(&[]);
        assert_eq!(a.config, None);
        assert_eq!(a.stats_interval, 10);
        let c = a.resolve().unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn run_flags_override_everything_they_name() {
        let a = run_args(&[
            "--device-id",
            "cam3",
            "--mqtt",
            "mqtt://b:1884",
            "--prefix",
            "x/y",
            "--video",
            "none",
            "--size",
            "320x240",
            "--fps",
            "15",
            "--bitrate",
            "300000",
            "--max-sessions",
            "2",
            "--keyframe-interval",
            "30",
            "--connect-timeout",
            "9",
            "--stun",
            "stun:a",
            "--stun",
            "stun:b",
            "--stats-interval",
            "0",
        ]);
        assert_eq!(a.stats_interval, 0);
        let c = a.resolve().unwrap();
        assert_eq!(c.device_id, "cam3");
        assert_eq!(c.mqtt.url, "mqtt://b:1884");
        assert_eq!(c.mqtt.prefix, "x/y");
        assert_eq!(c.video.source, "none");
        assert_eq!((c.video.width, c.video.height), (320, 240));
        assert_eq!(c.video.fps, 15);
        assert_eq!(c.video.bitrate, 300_000);
        assert_eq!(c.webrtc.max_sessions, 2);
        assert_eq!(c.video.keyframe_interval, 30);
        assert_eq!(c.webrtc.connect_timeout_secs, 9);
        let urls: Vec<_> = c
            .webrtc
            .ice_servers
            .iter()
            .map(|s| s.urls[0].as_str())
            .collect();
        assert_eq!(urls, ["stun:a", "stun:b"]);
    }

    #[test]
    fn flags_lay_over_the_file() {
        let path = temp_file(
            "over.toml",
            "device_id = \"filecam\"\n[video]\nfps = 10\nbitrate = 200000\n\
             [[webrtc.ice_servers]]\nurls = \"stun:file\"\n",
        );
        let a = run_args(&[
            "--config",
            path.to_str().unwrap(),
            "--fps",
            "25",
            "--stun",
            "stun:flag",
        ]);
        let c = a.resolve();
        let _ = std::fs::remove_file(&path);
        let c = c.unwrap();
        assert_eq!(c.device_id, "filecam");
        assert_eq!(c.video.fps, 25);
        assert_eq!(c.video.bitrate, 200_000);
        let urls: Vec<_> = c
            .webrtc
            .ice_servers
            .iter()
            .map(|s| s.urls[0].as_str())
            .collect();
        assert_eq!(urls, ["stun:file", "stun:flag"]);
    }

    #[test]
    fn a_flag_can_fix_a_bad_file_value() {
        let path = temp_file("fix.toml", "[video]\nwidth = 641\n");
        let fixed = run_args(&["-c", path.to_str().unwrap(), "--size", "640x480"]).resolve();
        let broken = run_args(&["-c", path.to_str().unwrap()]).resolve();
        let _ = std::fs::remove_file(&path);
        fixed.unwrap();
        let msg = broken.unwrap_err().to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("invalid video.width"), "{msg}");
    }

    #[test]
    fn errors_name_the_flag_that_set_the_key() {
        let msg = run_args(&["--size", "641x480"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("video.width") && msg.contains("(from --size)"),
            "{msg}"
        );
        let msg = run_args(&["--fps", "0"]).resolve().unwrap_err().to_string();
        assert!(msg.contains("(from --fps)"), "{msg}");
        let msg = run_args(&["--device-id", "Bad"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("(from --device-id)"), "{msg}");
        let msg = run_args(&["--stun", "turn:x"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("(from --stun)"), "{msg}");
        let msg = run_args(&["--mqtt", "mqtt://u:pw@h:0"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("(from --mqtt)") && !msg.contains("pw"),
            "{msg}"
        );
        // --video test needs width >= 256: the width came from --size.
        let msg = run_args(&["--video", "test", "--size", "200x200"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("(from --size)"), "{msg}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let msg = run_args(&["--config", "/nonexistent/campeer.toml"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/nonexistent/campeer.toml") && msg.contains("does not exist"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_flag_and_bad_numbers_are_refused() {
        assert!(cli(&["run", "--bogus"]).is_err());
        assert!(cli(&["run", "--fps", "fast"]).is_err());
        assert!(cli(&["run", "--max-sessions", "-1"]).is_err());
        assert!(cli(&[]).is_err());
    }

    #[test]
    fn gpio_safe_resolves_like_run() {
        let file = temp_file(
            "gpio-safe.toml",
            "[[gpio]]\nname = \"strike\"\nline = \"mock:strike\"\ndirection = \"output\"\nmax_on_ms = 3000\n",
        );
        let path = file.to_str().expect("utf-8 path");
        let args = match cli(&["gpio-safe", "--config", path, "--board", "rpi4"]) {
            Ok(Cli {
                command: Command::GpioSafe(a),
                ..
            }) => a,
            other => panic!("not gpio-safe: {other:?}"),
        };
        assert_eq!(args.board.as_deref(), Some("rpi4"));
        let config = args.resolve().expect("valid");
        let run = run_args(&["--config", path, "--board", "rpi4"])
            .resolve()
            .expect("valid");
        assert_eq!(config.gpio, run.gpio);
        assert_eq!(config.gpio[0].max_on_ms, Some(3000));
        let bad = GpioSafeArgs {
            board: Some("no-such-board".into()),
            ..GpioSafeArgs::default()
        };
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn check_config_takes_a_file() {
        match cli(&["check-config", "/etc/campeer.toml"]).unwrap().command {
            Command::CheckConfig { file } => assert_eq!(file, Path::new("/etc/campeer.toml")),
            other => panic!("{other:?}"),
        }
        assert!(cli(&["check-config"]).is_err());
    }

    #[test]
    fn log_is_global_with_a_default() {
        let c = cli(&["run", "--log", "debug"]).unwrap();
        assert_eq!(c.log, "debug");
        let c = cli(&["--log", "campeer=trace", "check-config", "f"]).unwrap();
        assert_eq!(c.log, "campeer=trace");
        if std::env::var_os("RUST_LOG").is_none() {
            assert_eq!(cli(&["run"]).unwrap().log, DEFAULT_LOG);
        }
    }

    #[test]
    fn view_defaults() {
        let v = view_args(&["--device", "cam1"]);
        if std::env::var_os("CAMPEER_MQTT_URL").is_none() {
            assert_eq!(v.mqtt, "mqtt://127.0.0.1:1883");
        }
        assert_eq!(v.prefix, "campeer");
        assert_eq!(v.device, "cam1");
        assert_eq!(v.frames, 300);
        assert_eq!(v.timeout, 30);
        assert_eq!(v.sid, None);
        assert!(!v.json && !v.no_video && !v.hold && !v.repeat_offer);
        assert_eq!(v.offer_file, None);
    }

    #[test]
    fn view_flags() {
        let v = view_args(&[
            "--device",
            "cam1",
            "--mqtt",
            "mqtt://h:1",
            "--prefix",
            "p/q",
            "--frames",
            "5",
            "--timeout",
            "7",
            "--sid",
            "abcdefgh",
            "--json",
            "--no-video",
            "--offer-file",
            "/tmp/o.sdp",
            "--hold",
            "--repeat-offer",
            "--key",
            "phone",
            "--secret-file",
            "/tmp/s",
            "--role",
            "view",
            "--call",
            "gpio.toggle",
            r#"{"name":"gate"}"#,
            "--call",
            "ping",
            "-",
            "--pli-at",
            "30",
        ]);
        assert_eq!(v.key.as_deref(), Some("phone"));
        assert_eq!(v.role, "view");
        assert_eq!(v.call, ["gpio.toggle", r#"{"name":"gate"}"#, "ping", "-"]);
        assert_eq!(v.pli_at, Some(30));
        assert_eq!(v.mqtt, "mqtt://h:1");
        assert_eq!(v.prefix, "p/q");
        assert_eq!((v.frames, v.timeout), (5, 7));
        assert_eq!(v.sid.as_deref(), Some("abcdefgh"));
        assert!(v.json && v.no_video && v.hold && v.repeat_offer);
        assert_eq!(v.offer_file.as_deref(), Some(Path::new("/tmp/o.sdp")));
    }

    #[test]
    fn view_key_and_secret_file_go_together() {
        assert!(cli(&["view", "--device", "c", "--key", "k"]).is_err());
        assert!(cli(&["view", "--device", "c", "--secret-file", "/f"]).is_err());
        assert!(cli(&["view", "--device", "c", "--call", "ping"]).is_err());
    }

    #[test]
    fn view_requires_a_device() {
        assert!(cli(&["view"]).is_err());
    }

    #[test]
    fn pair_for_a_hosted_page_takes_the_page_and_the_broker_together() {
        let c = cli(&[
            "pair",
            "--page-url",
            "https://cams.example.org/",
            "--broker",
            "wss://broker.example.org/mqtt",
        ])
        .expect("both");
        match c.command {
            Command::Pair(a) => {
                assert_eq!(a.page_url.as_deref(), Some("https://cams.example.org/"));
                assert_eq!(a.broker.as_deref(), Some("wss://broker.example.org/mqtt"));
            }
            other => panic!("expected pair, got {other:?}"),
        }
        assert!(cli(&["pair", "--page-url", "https://cams.example.org/"]).is_err());
        assert!(cli(&["pair", "--broker", "wss://broker.example.org/"]).is_err());
        assert!(
            matches!(cli(&["pair"]).expect("plain").command, Command::Pair(a) if a.page_url.is_none())
        );
    }

    #[test]
    fn serve_page_needs_a_listen_address_a_broker_and_both_tls_files() {
        let c = cli(&[
            "serve-page",
            "--listen",
            "0.0.0.0:8443",
            "--broker",
            "wss://b/",
        ])
        .expect("plain");
        assert!(matches!(c.command, Command::ServePage(a) if a.tls_cert.is_none()));
        assert!(cli(&["serve-page", "--broker", "wss://b/"]).is_err());
        assert!(cli(&["serve-page", "--listen", "0.0.0.0:8443"]).is_err());
        let half = [
            "serve-page",
            "--listen",
            "0.0.0.0:8443",
            "--broker",
            "wss://b/",
            "--tls-cert",
            "c.pem",
        ];
        assert!(cli(&half).is_err());
    }
}
