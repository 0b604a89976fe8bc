//! The wire protocol (docs/protocol.md) and its MQTT transport.
pub mod auth;
pub mod ice_servers;

pub mod messages;
pub mod mqtt;
pub mod mqtt_options;
pub mod presence;
pub mod retained;
pub mod topics;

/// Where a session's messages to its viewer go (the MQTT link in the
/// daemon, or a WHEP resource).
pub trait Outbox: Send + Sync + 'static {
    /// Queues `msg` (with its `mac` on a signed session) for the viewer of
    /// `sid`. Never blocks.
    fn send(&self, sid: &str, msg: messages::DeviceMessage, mac: Option<String>);
}
