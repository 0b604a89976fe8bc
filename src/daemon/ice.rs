//! The ICE servers the daemon uses and hands out (`webrtc.ice_servers`,
//! `webrtc.turn_rest`), read once at start.

use crate::config::WebRtcConfig;
use crate::rtc::engine::static_servers;
use crate::signaling::ice_servers::{IceServerSource, TurnRest};
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tracing::info;

/// The configured servers and, with `webrtc.turn_rest`, its shared secret
/// read from `secret_file` (refused when group or others may read it, or
/// when it is empty).
pub fn ice_source(cfg: &WebRtcConfig) -> anyhow::Result<IceServerSource> {
    let statics = static_servers(cfg);
    let Some(rest) = &cfg.turn_rest else {
        return Ok(IceServerSource::new(statics, None));
    };
    let path = &rest.secret_file;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("webrtc.turn_rest.secret_file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "webrtc.turn_rest.secret_file {} is readable by group or other (mode {mode:o}); run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("webrtc.turn_rest.secret_file {}", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("webrtc.turn_rest.secret_file {} is empty", path.display());
    }
    info!(urls = ?rest.urls, lifetime_secs = rest.lifetime_secs, "TURN credentials are minted per session and per ice_request");
    Ok(IceServerSource::new(
        statics,
        Some(TurnRest {
            urls: rest.urls.clone(),
            secret: secret.as_bytes().to_vec(),
            lifetime: Duration::from_secs(rest.lifetime_secs),
        }),
    ))
}
