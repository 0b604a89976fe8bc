//! The daemon: wires the media pipeline, the MQTT signaling and the sessions.
