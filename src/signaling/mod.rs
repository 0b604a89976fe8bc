//! The wire protocol (PROTOCOL.md) and its MQTT transport.
