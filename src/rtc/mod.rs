//! WebRTC sessions on webrtc-rs 0.21, kept behind this module so a move to
//! another WebRTC stack stays local.

pub mod dtls_resend;
pub mod engine;
pub mod keyframe;
pub mod lifecycle;
pub mod metrics;
pub mod nomination;
pub mod offer;
pub mod offer_trim;
pub mod playout_delay;
pub mod relay_flush;
pub mod session;
pub mod table;
