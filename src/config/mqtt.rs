//! The MQTT settings on their own, without reading a file: do the URL,
//! the user name, the TLS files and the password file agree with each
//! other? Reading and parsing the files named here happens when the
//! connection options are built (`signaling::mqtt_options`) and in the
//! daemon's start-up checks, never during validation.

use super::{MqttConfig, MqttTarget};
use rustls::pki_types::ServerName;
use std::fmt;

/// The setting an error is about, so each front end can name it its own
/// way: the daemon by config key, the viewer by flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `mqtt.url` / `--mqtt`.
    Url,
    /// `mqtt.username` (the viewer takes it from the URL).
    Username,
    /// `mqtt.password_file` / `--password-file`.
    PasswordFile,
    /// `mqtt.ca_file` / `--ca-file`.
    CaFile,
    /// `mqtt.client_cert` / `--client-cert`.
    ClientCert,
    /// `mqtt.client_key` / `--client-key`.
    ClientKey,
}

impl Setting {
    /// The configuration key, e.g. `mqtt.ca_file`.
    pub fn key(self) -> &'static str {
        match self {
            Setting::Url => "mqtt.url",
            Setting::Username => "mqtt.username",
            Setting::PasswordFile => "mqtt.password_file",
            Setting::CaFile => "mqtt.ca_file",
            Setting::ClientCert => "mqtt.client_cert",
            Setting::ClientKey => "mqtt.client_key",
        }
    }

    /// The `campeer view` flag, e.g. `--ca-file`.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Url => "--mqtt",
            Setting::Username => "--mqtt (user name)",
            Setting::PasswordFile => "--password-file",
            Setting::CaFile => "--ca-file",
            Setting::ClientCert => "--client-cert",
            Setting::ClientKey => "--client-key",
        }
    }
}

/// Why the options cannot be built. The message names the file it is
/// about and never contains a password or key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSetupError {
    /// The setting at fault.
    pub setting: Setting,
    /// What is wrong, naming the file.
    pub message: String,
}

impl fmt::Display for MqttSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting.key(), self.message)
    }
}

impl std::error::Error for MqttSetupError {}

pub(crate) fn fail(setting: Setting, message: impl Into<String>) -> MqttSetupError {
    MqttSetupError {
        setting,
        message: message.into(),
    }
}

/// Settings that contradict each other or the URL.
pub(crate) fn check_consistency(
    cfg: &MqttConfig,
    target: &MqttTarget,
) -> Result<(), MqttSetupError> {
    if target.tls && ServerName::try_from(unbracketed(&target.host)).is_err() {
        return Err(fail(
            Setting::Url,
            format!(
                "{:?} cannot be checked against a TLS certificate (not a valid DNS name or IP address)",
                target.host
            ),
        ));
    }
    if !target.tls {
        for (setting, given) in [
            (Setting::CaFile, cfg.ca_file.is_some()),
            (Setting::ClientCert, cfg.client_cert.is_some()),
            (Setting::ClientKey, cfg.client_key.is_some()),
        ] {
            if given {
                return Err(fail(
                    setting,
                    format!("is set, but the broker URL {target} is mqtt:// (no TLS): use mqtts:// (or drop the setting)"),
                ));
            }
        }
    }
    match (&cfg.client_cert, &cfg.client_key) {
        (Some(_), None) => {
            return Err(fail(
                Setting::ClientKey,
                "missing: a client certificate needs its private key",
            ))
        }
        (None, Some(_)) => {
            return Err(fail(
                Setting::ClientCert,
                "missing: a client key needs its certificate",
            ))
        }
        _ => {}
    }
    if let Some(user) = &cfg.username {
        if let Some(problem) = user_name_problem(user) {
            return Err(fail(Setting::Username, format!("{user:?} {problem}")));
        }
        if let Some(url_user) = &target.username {
            if url_user != user {
                return Err(fail(
                    Setting::Username,
                    format!("{user:?} differs from the user name in the broker URL ({url_user:?}): give it once"),
                ));
            }
        }
    }
    if cfg.password_file.is_some() {
        if target.password.is_some() {
            return Err(fail(
                Setting::PasswordFile,
                "is set, but the broker URL has a password too: give it in one place (preferably the file)",
            ));
        }
        if target.username.is_none() && cfg.username.is_none() {
            return Err(fail(
                Setting::PasswordFile,
                "a password needs a user name: put it in the URL (mqtts://user@host) or in mqtt.username",
            ));
        }
    }
    Ok(())
}

fn user_name_problem(user: &str) -> Option<&'static str> {
    if user.is_empty() {
        Some("is empty")
    } else if user.len() > 65_535 {
        Some("is longer than 65535 bytes")
    } else if user.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    }
}

/// `[::1]` -> `::1`; anything else unchanged.
pub(crate) fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}
