//! Relay mode (`[relay]`): the device's one encoded stream is forwarded
//! into a Janus WebRTC Server's Streaming plugin, and viewers beyond the
//! device's own limit (or all of them, by configuration) are told to watch
//! there (docs/relay.md, docs/protocol.md "Watching through a relay").
//!
//! Why RTP forwarding into a Streaming mountpoint rather than publishing
//! into a VideoRoom: the device already has the encoded H.264 and Opus, and
//! a mountpoint takes them as plain (here SRTP-protected) RTP with no
//! second WebRTC peer connection, no DTLS and no renegotiation on the Pi;
//! it is receive-only for viewers by construction, and its PIN is the
//! access control Janus enforces. The device creates the mountpoint through
//! Janus's HTTP API with the plugin's `admin_key`, a fresh PIN and a fresh
//! SRTP key each time, and hands the PIN only to viewers whose offer it
//! authorized.
//!
//! - [`machine`] decides when to create, check, re-key and re-create
//!   (pure, simulated time);
//! - [`janus`] speaks the Janus HTTP API (the device's side and `campeer
//!   view`'s);
//! - [`forward`] packetizes the shared encoders' output into (S)RTP and
//!   listens for Janus's keyframe requests;
//! - [`task`] runs the three together and publishes [`RelayState`].

pub mod forward;
pub mod janus;
pub mod machine;
pub mod task;

pub use crate::config::relay::{RelayConfig, RelayMode, EXAMPLE_ADMIN_KEY};

pub use crate::rtc::table::RelayTarget;

/// What the relay task tells the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayState {
    /// `Some` while a mountpoint exists and is fed.
    pub target: Option<RelayTarget>,
    /// Viewers watching through Janus, as of the last check.
    pub viewers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> RelayConfig {
        RelayConfig {
            enabled: true,
            admin_key: "0123456789abcdef0123".into(),
            ..RelayConfig::default()
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert!(enabled().validate().is_ok());
        assert!(
            RelayConfig::default().validate().is_ok(),
            "off: not checked"
        );
        let cases = [
            RelayConfig {
                admin_key: "short".into(),
                ..enabled()
            },
            RelayConfig {
                admin_key: EXAMPLE_ADMIN_KEY.into(),
                ..enabled()
            },
            RelayConfig {
                janus_url: "https://janus/janus".into(),
                ..enabled()
            },
            RelayConfig {
                public_url: "ftp://x/".into(),
                ..enabled()
            },
            RelayConfig {
                media_host: "a b".into(),
                ..enabled()
            },
        ];
        for c in cases {
            let e = c.validate().expect_err("must be refused").to_string();
            assert!(e.starts_with("invalid relay."), "{e}");
        }
    }

    #[test]
    fn defaults_follow_janus_url() {
        let c = RelayConfig {
            janus_url: "http://[::1]:8088/janus".into(),
            ..enabled()
        };
        assert_eq!(c.media_host(), "::1");
        assert_eq!(c.viewer_url(), "http://[::1]:8088/janus");
        let c = RelayConfig {
            public_url: "https://relay.example/janus".into(),
            media_host: "10.0.0.2".into(),
            ..enabled()
        };
        assert_eq!(c.viewer_url(), "https://relay.example/janus");
        assert_eq!(c.media_host(), "10.0.0.2");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
