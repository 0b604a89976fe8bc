//! Presence (docs/protocol.md#finding-devices-presence): the retained document on `B/status`.
//!
//! Online documents carry every field, with `video`/`audio` as `null` when
//! the device has none; the offline document (also the last will) carries
//! only `state` and `device`. Field order on the wire follows the protocol's
//! example. Parsing (for viewers) ignores unknown fields and treats a
//! missing `video`, `audio` or `controls` as absent/empty, so a newer
//! device stays readable.

use serde::{Deserialize, Serialize};

/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Whether offers must be signed (docs/protocol.md#authorization-protocol-version-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No access keys: every session may view and control.
    Open,
    /// Access keys configured: every offer carries a valid `auth`.
    Signed,
}

/// The video the device sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Codec name as SDP spells it, e.g. `H264`.
    pub codec: String,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

/// The audio the device sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Codec name, e.g. `opus`.
    pub codec: String,
    /// Sample rate in Hz, e.g. 48000.
    pub rate: u32,
    /// Channel count.
    pub channels: u16,
}

/// Which way a control line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlDirection {
    /// The device reads it (a button, a door contact).
    Input,
    /// The device drives it (a LED, a relay).
    Output,
}

impl From<crate::control::config::Direction> for ControlDirection {
    fn from(d: crate::control::config::Direction) -> Self {
        match d {
            crate::control::config::Direction::Input => ControlDirection::Input,
            crate::control::config::Direction::Output => ControlDirection::Output,
        }
    }
}

/// One named control (GPIO line) the device offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlInfo {
    /// The configured name, e.g. `led`.
    pub name: String,
    /// Input or output.
    pub direction: ControlDirection,
}

/// The presence document.
/// The relay's part of the presence document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// `up` while the mountpoint exists and viewers can be handed over.
    pub state: String,
    /// Viewers watching through Janus, as it last said.
    pub viewers: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Presence {
    /// The device is up and answering offers.
    Online {
        /// The device id.
        device: String,
        /// The daemon's version.
        version: String,
        /// Live sessions.
        sessions: usize,
        /// The session limit.
        max_sessions: usize,
        /// Whether offers must be signed.
        auth: AuthMode,
        /// The wire protocol version (2).
        #[serde(default)]
        protocol: u32,
        /// The nonce offers are signed over (signed devices, section 5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// The video sent, or `null` when there is none.
        #[serde(default)]
        video: Option<VideoInfo>,
        /// The audio sent, or `null` when there is none.
        #[serde(default)]
        audio: Option<AudioInfo>,
        /// The controls offered on the data channel.
        #[serde(default)]
        controls: Vec<ControlInfo>,
        /// Only while a relay is configured (docs/protocol.md, "Watching
        /// through a relay").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<RelayInfo>,
    },
    /// The device is gone (clean shutdown, or the broker published its will).
    Offline {
        /// The device id.
        device: String,
    },
}

impl Presence {
    /// An online document. (One argument per protocol field, in wire order,
    /// which reads better at the call site than a builder.)
    #[allow(clippy::too_many_arguments)]
    pub fn online(
        device: &str,
        version: &str,
        sessions: usize,
        max_sessions: usize,
        auth: AuthMode,
        video: Option<VideoInfo>,
        audio: Option<AudioInfo>,
        controls: Vec<ControlInfo>,
    ) -> Presence {
        Presence::Online {
            device: device.to_owned(),
            version: version.to_owned(),
            sessions,
            max_sessions,
            auth,
            protocol: PROTOCOL_VERSION,
            nonce: None,
            video,
            audio,
            controls,
            relay: None,
        }
    }

    /// The same document with the relay's state.
    pub fn with_relay(mut self, value: Option<RelayInfo>) -> Presence {
        if let Presence::Online { relay, .. } = &mut self {
            *relay = value;
        }
        self
    }

    /// The same document carrying `nonce` (online documents only).
    pub fn with_nonce(mut self, value: Option<&str>) -> Presence {
        if let Presence::Online { nonce, .. } = &mut self {
            *nonce = value.map(str::to_owned);
        }
        self
    }

    /// The nonce of an online document.
    pub fn nonce(&self) -> Option<&str> {
        match self {
            Presence::Online { nonce, .. } => nonce.as_deref(),
            Presence::Offline { .. } => None,
        }
    }

    /// The offline document: the last will, and the clean-shutdown message.
    pub fn offline(device: &str) -> Presence {
        Presence::Offline {
            device: device.to_owned(),
        }
    }

    /// The device id, whatever the state.
    pub fn device(&self) -> &str {
        match self {
            Presence::Online { device, .. } | Presence::Offline { device } => device,
        }
    }

    /// Whether this is an online document.
    pub fn is_online(&self) -> bool {
        matches!(self, Presence::Online { .. })
    }

    /// The document as one line of JSON, ready to publish.
    pub fn to_json(&self) -> String {
        match serde_json::to_string(self) {
            Ok(s) => s,
            // Cannot happen for these types (no maps, no fallible
            // serializers); if it did, a minimal offline document is still
            // valid presence and better than publishing nothing.
            Err(e) => {
                tracing::error!("cannot encode presence: {e}");
                format!(
                    r#"{{"state":"offline","device":{}}}"#,
                    serde_json::Value::String(self.device().to_owned())
                )
            }
        }
    }

    /// Parses a document read from `B/status`.
    pub fn from_json(payload: &[u8]) -> Result<Presence, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn example() -> Presence {
        Presence::online(
            "cam1",
            "0.3.0",
            1,
            4,
            AuthMode::Signed,
            Some(VideoInfo {
                codec: "H264".into(),
                width: 1280,
                height: 720,
                fps: 30,
            }),
            Some(AudioInfo {
                codec: "opus".into(),
                rate: 48000,
                channels: 1,
            }),
            vec![
                ControlInfo {
                    name: "led".into(),
                    direction: ControlDirection::Output,
                },
                ControlInfo {
                    name: "door".into(),
                    direction: ControlDirection::Input,
                },
            ],
        )
        .with_nonce(Some("n0nce"))
    }

    #[test]
    fn online_matches_protocol_example_byte_for_byte() {
        assert_eq!(example().nonce(), Some("n0nce"));
        assert_eq!(
            example().to_json(),
            concat!(
                r#"{"state":"online","device":"cam1","version":"0.3.0","sessions":1,"#,
                r#""max_sessions":4,"auth":"signed","protocol":2,"nonce":"n0nce","#,
                r#""video":{"codec":"H264","width":1280,"height":720,"fps":30},"#,
                r#""audio":{"codec":"opus","rate":48000,"channels":1},"#,
                r#""controls":[{"name":"led","direction":"output"},"#,
                r#"{"name":"door","direction":"input"}]}"#
            )
        );
    }

    #[test]
    fn absent_media_are_null_and_controls_empty() {
        let p = Presence::online("cam1", "0.1.0", 0, 4, AuthMode::Open, None, None, vec![]);
        let v: Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"state": "online", "device": "cam1", "version": "0.1.0", "sessions": 0,
                   "max_sessions": 4, "auth": "open", "protocol": 2, "video": null, "audio": null,
                   "controls": []})
        );
    }

    #[test]
    fn offline_has_only_state_and_device() {
        assert_eq!(
            Presence::offline("cam1").to_json(),
            r#"{"state":"offline","device":"cam1"}"#
        );
    }

    #[test]
    fn round_trips() {
        for p in [
            example(),
            Presence::offline("cam-2"),
            Presence::online("c", "1", 0, 1, AuthMode::Open, None, None, vec![]),
        ] {
            assert_eq!(Presence::from_json(p.to_json().as_bytes()).unwrap(), p);
        }
    }

    #[test]
    fn parsing_is_lenient_about_additions_and_omissions() {
        let p = Presence::from_json(
            br#"{"state":"online","device":"cam1","version":"9.0","sessions":2,
                 "max_sessions":8,"auth":"open","future":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            Presence::Online {
                device: "cam1".into(),
                version: "9.0".into(),
                sessions: 2,
                max_sessions: 8,
                auth: AuthMode::Open,
                protocol: 0,
                nonce: None,
                video: None,
                audio: None,
                controls: vec![],
                relay: None,
            }
        );
        let p = Presence::from_json(br#"{"state":"offline","device":"cam1","at":5}"#).unwrap();
        assert_eq!(p, Presence::offline("cam1"));
    }

    #[test]
    fn parsing_refuses_wrong_documents() {
        for bad in [
            &br#"{"state":"asleep","device":"cam1"}"#[..],
            br#"{"device":"cam1"}"#,
            br#"{"state":"offline"}"#,
            br#"{"state":"online","device":"cam1"}"#,
            br#"{"state":"online","device":"cam1","version":"1","sessions":-1,"max_sessions":1,"auth":"open"}"#,
            br#"{"state":"online","device":"cam1","version":"1","sessions":0,"max_sessions":1,"auth":"maybe"}"#,
            b"not json",
        ] {
            assert!(
                Presence::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn config_directions_map_to_the_same_wire_names() {
        use crate::control::config::Direction;
        for d in [Direction::Input, Direction::Output] {
            let ours = ControlDirection::from(d);
            assert_eq!(serde_json::to_value(ours).unwrap(), json!(d.as_str()));
        }
    }

    #[test]
    fn accessors() {
        assert_eq!(example().device(), "cam1");
        assert!(example().is_online());
        assert_eq!(Presence::offline("x").device(), "x");
        assert!(!Presence::offline("x").is_online());
    }
}
