//! `[relay]`: where the Janus relay is and who is sent there, kept here
//! so the configuration owns every type it parses (src/relay uses them).

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// Which viewers are sent to the relay.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// Those that find the device's own sessions full (`max_sessions`).
    #[default]
    Overflow,
    /// Every viewer whose offer has H.264 (others are served directly).
    All,
}

/// A placeholder the example Janus configuration ships; refused as a key.
pub const EXAMPLE_ADMIN_KEY: &str = "change-me-to-a-long-random-string";

/// `[relay]` in the configuration file.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Forward to Janus and hand viewers over. Default off.
    pub enabled: bool,
    /// Janus's HTTP API as the device reaches it, `http://host:port/janus`.
    pub janus_url: String,
    /// Janus's HTTP API as viewers reach it (may be `https://`). Default:
    /// `janus_url`.
    pub public_url: String,
    /// The Streaming plugin's `admin_key` (janus.plugin.streaming.jcfg).
    pub admin_key: String,
    /// `overflow` or `all`. Default `overflow`.
    pub mode: RelayMode,
    /// The host the RTP goes to. Default: the host of `janus_url`.
    pub media_host: String,
    /// Seconds a mountpoint PIN lives before the device replaces it
    /// (viewers already watching stay); 0 = until the mountpoint is
    /// re-created. Default 3600.
    pub pin_lifetime_secs: u64,
    /// Protect the RTP to Janus with SRTP (AES-CM-128, HMAC-SHA1-80, a new
    /// key per mountpoint). Default true.
    pub srtp: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: false,
            janus_url: "http://127.0.0.1:8088/janus".into(),
            public_url: String::new(),
            admin_key: String::new(),
            mode: RelayMode::Overflow,
            media_host: String::new(),
            pin_lifetime_secs: 3600,
            srtp: true,
        }
    }
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("enabled", &self.enabled)
            .field("janus_url", &self.janus_url)
            .field("public_url", &self.public_url)
            .field("admin_key", &crate::config::REDACTED)
            .field("mode", &self.mode)
            .field("media_host", &self.media_host)
            .field("pin_lifetime_secs", &self.pin_lifetime_secs)
            .field("srtp", &self.srtp)
            .finish()
    }
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: format!("relay.{key}"),
        message,
    }
}

fn check_url(key: &str, text: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| invalid(key, format!("{text:?}: {e}")))?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!(
                "{text:?} must be a {} URL with a host",
                schemes.join(" or ")
            ),
        ));
    }
    Ok(url)
}

impl RelayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        check_url("janus_url", &self.janus_url, &["http"])?;
        if !self.public_url.is_empty() {
            check_url("public_url", &self.public_url, &["http", "https"])?;
        }
        if self.admin_key.len() < 16 || self.admin_key == EXAMPLE_ADMIN_KEY {
            return Err(invalid(
                "admin_key",
                "set it to the Streaming plugin's admin_key: at least 16 characters, \
                 not the example's placeholder"
                    .into(),
            ));
        }
        if self.media_host.contains(['/', ' ']) {
            return Err(invalid(
                "media_host",
                format!("{:?} must be a host name or address", self.media_host),
            ));
        }
        Ok(())
    }

    /// The URL viewers are given.
    pub fn viewer_url(&self) -> &str {
        if self.public_url.is_empty() {
            &self.janus_url
        } else {
            &self.public_url
        }
    }

    /// The host RTP is sent to.
    pub fn media_host(&self) -> String {
        if !self.media_host.is_empty() {
            return self.media_host.clone();
        }
        url::Url::parse(&self.janus_url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .unwrap_or_default()
    }
}
