//! `[homeassistant]`: the Home Assistant bridge's settings, kept here so
//! the configuration owns every type it parses (src/homeassistant.rs uses
//! them).

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// `[homeassistant]` in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish discovery and accept Home Assistant's commands. Default off.
    pub enabled: bool,
    /// Home Assistant's discovery prefix. Default `homeassistant`.
    pub discovery_prefix: String,
    /// The access key Home Assistant logs in to the device's own broker
    /// with: that key's broker user gets Home Assistant's rights (see
    /// docs/homeassistant.md) instead of a viewer's. Its role decides, on
    /// any broker, whether Home Assistant may command outputs (`control`)
    /// or only sees states (`view`). Default `homeassistant`.
    pub key: String,
    /// Length of the pulse a `button` press gives, milliseconds (an
    /// output's `max_on_ms` still caps it). Default 500.
    pub pulse_ms: u64,
    /// Seconds between two camera pictures published for Home Assistant;
    /// 0 publishes none. Default 10.
    pub image_interval_secs: u64,
    /// Width of those pictures, pixels; 0 for the camera's own. Default 640.
    pub image_width: u32,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            discovery_prefix: "homeassistant".into(),
            key: "homeassistant".into(),
            pulse_ms: 500,
            image_interval_secs: 10,
            image_width: 640,
        }
    }
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: format!("homeassistant.{key}"),
        message,
    }
}

impl HomeAssistantConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.discovery_prefix;
        if p.is_empty()
            || p.len() > 64
            || p.contains(['+', '#', '\0'])
            || p.starts_with('/')
            || p.ends_with('/')
        {
            return Err(invalid(
                "discovery_prefix",
                format!("{p:?} must be 1-64 characters without +, #, or a leading or trailing /"),
            ));
        }
        if !crate::control::config::is_valid_key_id(&self.key) {
            return Err(invalid(
                "key",
                format!("{:?} is not a valid key id", self.key),
            ));
        }
        if !crate::control::gpio::PULSE_MS.contains(&self.pulse_ms) {
            return Err(invalid(
                "pulse_ms",
                format!(
                    "{} is outside {:?}",
                    self.pulse_ms,
                    crate::control::gpio::PULSE_MS
                ),
            ));
        }
        if self.image_interval_secs != 0 && !(1..=3600).contains(&self.image_interval_secs) {
            return Err(invalid(
                "image_interval_secs",
                format!("{} is outside 0..=3600", self.image_interval_secs),
            ));
        }
        Ok(())
    }
}
