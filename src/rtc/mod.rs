//! WebRTC sessions on webrtc-rs 0.21.
