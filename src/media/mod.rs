//! Video sources: the stamped test pattern and V4L2 cameras.
//!
//! A source is a blocking, paced producer of I420 frames ([`VideoSource`]);
//! it runs on its own OS thread (see `encode::pipeline`). Every frame carries
//! its capture time on CLOCK_MONOTONIC (`crate::clock`) and a frame counter
//! that starts at 0 and grows by one per delivered frame.
//!
//! Invariants every source keeps: width and height are even and non-zero,
//! `I420Frame::data` is exactly `w*h*3/2` bytes, and `format()` describes the
//! frames `next_frame` returns.

pub mod audio;
pub mod convert;
pub mod exec;
pub mod frame;
pub mod passthrough;
pub mod stamp;
pub mod test_pattern;
pub mod v4l2;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use convert::ConvertError;
pub use frame::{EncodedFrame, I420Frame};

/// Largest frame any source produces (openh264's own limit).
pub const MAX_WIDTH: u32 = 3840;
/// Largest frame any source produces (openh264's own limit).
pub const MAX_HEIGHT: u32 = 2160;
/// Highest frame rate a source is asked for.
pub const MAX_FPS: u32 = 120;

/// Which video source to open, as written in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoSourceSpec {
    /// The moving test pattern with the frame stamp (docs/protocol.md#measuring-latency-the-frame-stamp).
    Test,
    /// A V4L2 capture device such as `/dev/video0`.
    V4l2(PathBuf),
    /// A command whose stdout is the video (`exec:<command line>`; see
    /// [`exec`]). Opened with `exec::ExecSource::start`, which needs the
    /// `video.exec_*` settings too.
    Exec(String),
    /// No video at all.
    None,
}

impl VideoSourceSpec {
    /// Parses `test`, `none` or `v4l2:<device path>`.
    pub fn parse(s: &str) -> Result<Self, MediaError> {
        let t = s.trim();
        match t {
            "test" => Ok(VideoSourceSpec::Test),
            "none" => Ok(VideoSourceSpec::None),
            _ if t.starts_with("exec:") => match t["exec:".len()..].trim() {
                "" => Err(MediaError::BadSpec {
                    spec: s.to_string(),
                    reason: "`exec:` needs a command line, e.g. `exec:rpicam-vid -t 0 -o -`",
                }),
                cmd => Ok(VideoSourceSpec::Exec(cmd.to_string())),
            },
            _ => match t.strip_prefix("v4l2:") {
                Some(path) if !path.trim().is_empty() => {
                    Ok(VideoSourceSpec::V4l2(PathBuf::from(path.trim())))
                }
                Some(_) => Err(MediaError::BadSpec {
                    spec: s.to_string(),
                    reason: "`v4l2:` needs a device path, e.g. `v4l2:/dev/video0`",
                }),
                None => Err(MediaError::BadSpec {
                    spec: s.to_string(),
                    reason: "expected `test`, `v4l2:/dev/videoN` or `none`",
                }),
            },
        }
    }
}

impl fmt::Display for VideoSourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoSourceSpec::Test => f.write_str("test"),
            VideoSourceSpec::V4l2(p) => write!(f, "v4l2:{}", p.display()),
            VideoSourceSpec::Exec(cmd) => write!(f, "exec:{cmd}"),
            VideoSourceSpec::None => f.write_str("none"),
        }
    }
}

/// What a source actually delivers (after the driver had its say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The wire format before conversion to I420: "NV12", "YU12", "YUYV",
    /// "MJPG", or "test" for the test pattern.
    pub pixel_format: String,
}

/// A blocking producer of raw frames.
pub trait VideoSource: Send {
    /// The format of the frames `next_frame` returns.
    fn format(&self) -> &VideoFormat;

    /// Blocks until the next frame, paced at the source's rate.
    fn next_frame(&mut self) -> Result<I420Frame, MediaError>;

    /// A short name for logs: the device path, or "test".
    fn describe(&self) -> String {
        format!("{} source", self.format().pixel_format)
    }

    /// The next frame, raw or (from a source that delivers H.264 itself)
    /// already encoded, to be passed through. Raw unless overridden.
    fn next_unit(&mut self) -> Result<SourceUnit, MediaError> {
        self.next_frame().map(SourceUnit::Raw)
    }

    /// Told before every frame whether anyone watches (a source may start
    /// or stop a camera process on demand). Ignored unless overridden.
    fn set_wanted(&mut self, _wanted: bool) {}

    /// For a source that encodes itself: asks it for a keyframe soon.
    /// `true` if it took the request; `false` (the default) if it cannot,
    /// and viewers wait for its next periodic one.
    fn request_keyframe(&mut self) -> bool {
        false
    }
}

/// H.264 asked of a camera that can encode it itself (`video.v4l2_h264`),
/// with the encoder settings to give it where it has the controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H264Request {
    /// Frames between IDRs.
    pub keyframe_interval: u32,
    /// Bits per second.
    pub bitrate: u32,
}

/// What a source delivers: pixels to encode, or H.264 to pass through.
#[derive(Debug)]
pub enum SourceUnit {
    Raw(I420Frame),
    Encoded(EncodedFrame),
}

/// Errors of video sources. Each names the device and what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("unknown video source {spec:?}: {reason}")]
    BadSpec { spec: String, reason: &'static str },

    #[error("video source `none` cannot be opened (no video is configured)")]
    NoSource,

    /// An on-demand source with nobody watching: not an error, nothing to do.
    #[error("video source idle (nobody watching)")]
    Idle,

    #[error("video source {source_name}: {reason}")]
    Exec { source_name: String, reason: String },

    #[error("video size {width}x{height} at {fps} fps: {reason}")]
    BadSize {
        width: u32,
        height: u32,
        fps: u32,
        reason: &'static str,
    },

    #[error("camera {}: no such device", path.display())]
    Missing { path: PathBuf },

    #[error("camera {} is busy (another program has it open)", path.display())]
    Busy { path: PathBuf },

    #[error("camera {}: permission denied (is this user in the `video` group?)", path.display())]
    PermissionDenied { path: PathBuf },

    #[error("camera {}: {reason}", path.display())]
    NotCapture { path: PathBuf, reason: String },

    #[error(
        "camera {}: no usable pixel format (the device offers: {offered}; campeer reads NV12, YU12, YUYV and MJPG)",
        path.display()
    )]
    NoUsableFormat { path: PathBuf, offered: String },

    #[error(
        "camera {}: the driver chose {width}x{height} {fourcc}, but campeer needs an even width and height",
        path.display()
    )]
    OddSize {
        path: PathBuf,
        width: u32,
        height: u32,
        fourcc: String,
    },

    #[error("camera {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("camera {}: no frame within {ms} ms", path.display())]
    Timeout { path: PathBuf, ms: u64 },

    #[error("camera {}: bad {fourcc} frame {seq}: {source}", path.display())]
    BadFrame {
        path: PathBuf,
        fourcc: String,
        seq: u32,
        #[source]
        source: ConvertError,
    },
}

impl MediaError {
    /// Maps an OS error from operation `op` on device `path` to the clearest
    /// variant: missing, busy, permission denied, or a plain I/O error.
    pub fn from_io(path: &Path, op: &'static str, err: io::Error) -> Self {
        let path = path.to_path_buf();
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                MediaError::Missing { path }
            }
            Some(libc::EBUSY) => MediaError::Busy { path },
            Some(libc::EACCES) | Some(libc::EPERM) => MediaError::PermissionDenied { path },
            _ => MediaError::Io {
                path,
                op,
                source: err,
            },
        }
    }

    /// The device the error is about, if any.
    pub fn device(&self) -> Option<&Path> {
        match self {
            MediaError::Missing { path }
            | MediaError::Busy { path }
            | MediaError::PermissionDenied { path }
            | MediaError::NotCapture { path, .. }
            | MediaError::NoUsableFormat { path, .. }
            | MediaError::OddSize { path, .. }
            | MediaError::Io { path, .. }
            | MediaError::Timeout { path, .. }
            | MediaError::BadFrame { path, .. } => Some(path),
            MediaError::BadSpec { .. }
            | MediaError::NoSource
            | MediaError::Idle
            | MediaError::Exec { .. }
            | MediaError::BadSize { .. } => None,
        }
    }
}

/// Checks a requested size and rate against what sources and the encoder
/// accept: non-zero even sizes up to 3840x2160, 1 to 120 fps.
pub fn validate_size(width: u32, height: u32, fps: u32) -> Result<(), MediaError> {
    let reason = if width == 0 || height == 0 {
        Some("width and height must be non-zero")
    } else if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        Some("width and height must be even (I420 halves both for chroma)")
    } else if width.max(height) > MAX_WIDTH || width.min(height) > MAX_HEIGHT {
        Some("larger than 3840x2160, the encoder's limit")
    } else if fps == 0 || fps > MAX_FPS {
        Some("frame rate must be between 1 and 120")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MediaError::BadSize {
            width,
            height,
            fps,
            reason,
        }),
        None => Ok(()),
    }
}

/// Opens a source at (or as near as the device allows to) the given size
/// and rate. `None` is an error: callers handle "no video" before this.
pub fn open_video_source(
    spec: &VideoSourceSpec,
    width: u32,
    height: u32,
    fps: u32,
) -> Result<Box<dyn VideoSource>, MediaError> {
    open_video_source_with(spec, width, height, fps, None)
}

/// [`open_video_source`], asking a V4L2 camera for its own H.264 when
/// `h264` is given (passed through; raw frames if it has none).
pub fn open_video_source_with(
    spec: &VideoSourceSpec,
    width: u32,
    height: u32,
    fps: u32,
    h264: Option<H264Request>,
) -> Result<Box<dyn VideoSource>, MediaError> {
    validate_size(width, height, fps)?;
    match spec {
        VideoSourceSpec::Test => Ok(Box::new(test_pattern::TestPattern::new(
            width, height, fps,
        )?)),
        VideoSourceSpec::V4l2(path) => {
            Ok(Box::new(v4l2::V4l2Source::open_with(
                path, width, height, fps, h264,
            )?))
        }
        VideoSourceSpec::Exec(_) => Err(MediaError::BadSpec {
            spec: spec.to_string(),
            reason: "an `exec:` source is started with its `video.exec_*` settings (exec::ExecSource::start)",
        }),
        VideoSourceSpec::None => Err(MediaError::NoSource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_the_three_forms() {
        assert_eq!(
            VideoSourceSpec::parse("test").unwrap(),
            VideoSourceSpec::Test
        );
        assert_eq!(
            VideoSourceSpec::parse("none").unwrap(),
            VideoSourceSpec::None
        );
        assert_eq!(
            VideoSourceSpec::parse("v4l2:/dev/video3").unwrap(),
            VideoSourceSpec::V4l2(PathBuf::from("/dev/video3"))
        );
        assert_eq!(
            VideoSourceSpec::parse(" v4l2:/dev/v4l/by-id/usb-cam ").unwrap(),
            VideoSourceSpec::V4l2(PathBuf::from("/dev/v4l/by-id/usb-cam"))
        );
    }

    #[test]
    fn spec_rejects_unknown_and_empty_path() {
        for bad in [
            "",
            "Test",
            "v4l2:",
            "v4l2:  ",
            "alsa:default",
            "/dev/video0",
        ] {
            let e = VideoSourceSpec::parse(bad).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, MediaError::BadSpec { .. }), "{bad:?}: {msg}");
            assert!(msg.contains("v4l2:"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn spec_display_round_trips() {
        for s in [
            "test",
            "none",
            "v4l2:/dev/video0",
            "exec:rpicam-vid -t 0 -o -",
        ] {
            let spec = VideoSourceSpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(VideoSourceSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn os_errors_map_to_clear_messages() {
        let p = Path::new("/dev/video3");
        let e = MediaError::from_io(p, "open", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.to_string(), "camera /dev/video3: no such device");
        let e = MediaError::from_io(p, "open", io::Error::from_raw_os_error(libc::ENODEV));
        assert!(matches!(e, MediaError::Missing { .. }));
        let e = MediaError::from_io(
            Path::new("/dev/video0"),
            "VIDIOC_S_FMT",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert_eq!(
            e.to_string(),
            "camera /dev/video0 is busy (another program has it open)"
        );
        let e = MediaError::from_io(p, "open", io::Error::from_raw_os_error(libc::EACCES));
        assert!(e.to_string().contains("permission denied"), "{e}");
        let e = MediaError::from_io(p, "VIDIOC_DQBUF", io::Error::from_raw_os_error(libc::EIO));
        let msg = e.to_string();
        assert!(
            msg.starts_with("camera /dev/video3: VIDIOC_DQBUF:"),
            "{msg}"
        );
        assert_eq!(e.device(), Some(p));
    }

    #[test]
    fn sizes_are_validated() {
        assert!(validate_size(640, 480, 30).is_ok());
        assert!(validate_size(3840, 2160, 30).is_ok());
        assert!(validate_size(2160, 3840, 30).is_ok());
        for (w, h, fps) in [
            (641, 480, 30),
            (640, 481, 30),
            (0, 480, 30),
            (640, 480, 0),
            (640, 480, 121),
            (4096, 2160, 30),
        ] {
            let e = validate_size(w, h, fps).unwrap_err();
            assert!(matches!(e, MediaError::BadSize { .. }), "{w}x{h}@{fps}");
            assert!(e.to_string().contains(&format!("{w}x{h}")));
        }
    }

    #[test]
    fn opening_none_is_an_error() {
        let e = open_video_source(&VideoSourceSpec::None, 640, 480, 30)
            .err()
            .expect("none cannot be opened");
        assert!(matches!(e, MediaError::NoSource));
    }

    #[test]
    fn opening_a_missing_camera_names_it() {
        let spec = VideoSourceSpec::V4l2(PathBuf::from("/dev/campeer-no-such-video9"));
        let e = open_video_source(&spec, 640, 480, 30)
            .err()
            .expect("device does not exist");
        assert_eq!(
            e.to_string(),
            "camera /dev/campeer-no-such-video9: no such device"
        );
    }

    #[test]
    fn opening_the_test_pattern_reports_its_format() {
        let src = open_video_source(&VideoSourceSpec::Test, 320, 240, 15).unwrap();
        assert_eq!(
            src.format(),
            &VideoFormat {
                width: 320,
                height: 240,
                fps: 15,
                pixel_format: "test".into()
            }
        );
    }
}
