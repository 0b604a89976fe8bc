//! H.264 from the camera itself (`video.v4l2_h264`): the encoder controls
//! campeer sets where the driver has them, and the keyframe request.
//!
//! Many UVC webcams offer an `H264` capture format; some V4L2 drivers
//! expose the codec controls below (the stateful encoder API's names), most
//! UVC ones do not. Each control is set on its own and a missing one is
//! only logged: the stream is passed through whatever the camera does, and
//! a viewer then waits for the camera's own next keyframe.
//!
//! Untested here: no camera on the build machine, and vivid (the virtual
//! driver the emulated Pi uses) offers no H.264.

use crate::media::H264Request;
use std::io;
use std::path::Path;
use tracing::{info, warn};
use v4l::control::{Control, Value};
use v4l::Device;

/// V4L2_CID_CODEC_BASE (linux/v4l2-controls.h).
const CODEC_BASE: u32 = 0x0099_0900;
/// V4L2_CID_MPEG_VIDEO_GOP_SIZE.
pub const GOP_SIZE: u32 = CODEC_BASE + 203;
/// V4L2_CID_MPEG_VIDEO_BITRATE.
pub const BITRATE: u32 = CODEC_BASE + 207;
/// V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER: SPS/PPS before every IDR.
pub const REPEAT_SEQ_HEADER: u32 = CODEC_BASE + 226;
/// V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME (a button).
pub const FORCE_KEY_FRAME: u32 = CODEC_BASE + 229;
/// V4L2_CID_MPEG_VIDEO_H264_I_PERIOD.
pub const H264_I_PERIOD: u32 = CODEC_BASE + 358;

/// The controls to set for `req`, as (id, value, name): a keyframe every
/// `keyframe_interval` frames (both the generic GOP size and H.264's I
/// period, since drivers implement one or the other), SPS/PPS repeated
/// with every IDR (a joining viewer can start at any of them), and the
/// bitrate.
pub fn encoder_controls(req: H264Request) -> Vec<(u32, i64, &'static str)> {
    let gop = i64::from(req.keyframe_interval.max(1));
    vec![
        (GOP_SIZE, gop, "gop_size"),
        (H264_I_PERIOD, gop, "h264_i_period"),
        (REPEAT_SEQ_HEADER, 1, "repeat_sequence_header"),
        (BITRATE, i64::from(req.bitrate), "video_bitrate"),
    ]
}

/// Sets what the driver has of [`encoder_controls`]; logs what took.
pub fn apply(device: &Device, path: &Path, req: H264Request) {
    let mut set = Vec::new();
    let mut missing = Vec::new();
    for (id, value, name) in encoder_controls(req) {
        let c = Control {
            id,
            value: Value::Integer(value),
        };
        match device.set_control(c) {
            Ok(()) => set.push(format!("{name}={value}")),
            Err(e) => missing.push(format!("{name} ({})", short(&e))),
        }
    }
    info!(device = %path.display(), set = %set.join(" "), "camera H.264 encoder controls");
    if !missing.is_empty() {
        warn!(device = %path.display(), missing = %missing.join(", "),
              "the camera's H.264 encoder lacks these controls: its own keyframe interval and bitrate apply (a joining viewer waits for its next keyframe)");
    }
}

/// Asks the camera's encoder for an IDR now.
pub fn force_keyframe(device: &Device) -> io::Result<()> {
    device.set_control(Control {
        id: FORCE_KEY_FRAME,
        value: Value::None,
    })
}

fn short(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EINVAL) => "not offered".into(),
        Some(libc::EACCES) => "read-only".into(),
        Some(libc::ERANGE) => "out of range".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_the_kernel_ones() {
        // linux/v4l2-controls.h: V4L2_CID_CODEC_BASE = 0x00990900.
        assert_eq!(GOP_SIZE, 0x0099_09cb);
        assert_eq!(BITRATE, 0x0099_09cf);
        assert_eq!(REPEAT_SEQ_HEADER, 0x0099_09e2);
        assert_eq!(FORCE_KEY_FRAME, 0x0099_09e5);
        assert_eq!(H264_I_PERIOD, 0x0099_0a66);
    }

    #[test]
    fn controls_follow_the_request() {
        let c = encoder_controls(H264Request {
            keyframe_interval: 15,
            bitrate: 800_000,
        });
        assert!(c.contains(&(GOP_SIZE, 15, "gop_size")));
        assert!(c.contains(&(H264_I_PERIOD, 15, "h264_i_period")));
        assert!(c.contains(&(REPEAT_SEQ_HEADER, 1, "repeat_sequence_header")));
        assert!(c.contains(&(BITRATE, 800_000, "video_bitrate")));
        // A zero interval would mean "never": at least every frame.
        let z = encoder_controls(H264Request {
            keyframe_interval: 0,
            bitrate: 1,
        });
        assert!(z.contains(&(GOP_SIZE, 1, "gop_size")));
    }
}
