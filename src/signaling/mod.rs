//! The wire protocol (docs/protocol.md) and its MQTT transport.
pub mod auth;
pub mod ice_servers;

pub mod messages;
pub mod mqtt;
pub mod mqtt_options;
pub mod presence;
pub mod retained;
pub mod topics;
