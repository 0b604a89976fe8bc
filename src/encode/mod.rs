//! Encoders and the capture/encode pipeline.
//!
//! `h264` wraps openh264 as a constrained-baseline WebRTC encoder, `decode`
//! wraps its decoder (for the viewer and tests), and `pipeline` runs one
//! capture thread and one encoder thread whose output every session shares.

pub mod audio_pipeline;
pub mod decode;
pub mod first_frame;
pub mod h264;
pub mod opus;
pub mod pipeline;
pub mod vp8;
pub mod vp8_lane;

use crate::media::MediaError;

/// Errors of encoding, decoding and the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("encoder settings {width}x{height} at {fps} fps, {bitrate} bit/s: {reason}")]
    BadSettings {
        width: u32,
        height: u32,
        fps: u32,
        bitrate: u32,
        reason: &'static str,
    },

    #[error("raw frame {seq} is {width}x{height} with {len} bytes: {reason}")]
    BadFrame {
        seq: u32,
        width: u32,
        height: u32,
        len: usize,
        reason: &'static str,
    },

    #[error("openh264 encoder: {0}")]
    Encoder(String),

    #[error("openh264 decoder: {0}")]
    Decoder(String),

    #[error(transparent)]
    Source(#[from] MediaError),

    #[error("cannot start thread {name}: {source}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}
