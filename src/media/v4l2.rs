//! V4L2 camera capture (single-planar, mmap streaming with 4 buffers).
//!
//! Opening negotiates the wire format: among the formats the device offers,
//! each of NV12, YU12, YUYV and MJPG (in that order of preference) is tried
//! at the requested size and rate, and the first that the driver grants at
//! exactly that size and at least that rate wins; failing that, the one
//! closest in size (see [`choose_format`]). What the driver finally granted
//! is logged and reported by `format()`.
//!
//! With `video.v4l2_h264` a camera that offers `H264` (Annex B, start
//! codes) at the requested size is asked for that first: its access units
//! are passed through (`encode::passthrough`), never decoded, and its
//! encoder gets campeer's keyframe interval and bitrate where the driver
//! has the controls ([`h264`]). Without it the raw formats apply.
//!
//! Opening also waits for the first frame (up to 5 s), so a camera that opens
//! but never delivers fails at once with a clear error instead of later.
//!
//! Frames carry the V4L2 buffer timestamp (CLOCK_MONOTONIC) as `capture_us`
//! when the driver says it is monotonic and it is plausible; otherwise the
//! dequeue time. `seq` is our own count of delivered frames; frames the
//! driver dropped show as gaps in its sequence numbers and are logged.

pub mod h264;

use super::convert::{self, MjpegDecoder};
use super::{H264Request, I420Frame, MediaError, SourceUnit, VideoFormat, VideoSource};
use crate::clock;
use crate::media::passthrough::Passthrough;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{debug, info, warn};
use v4l::buffer::{Flags as BufFlags, Type as BufType};
use v4l::capability::Flags as CapFlags;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::prelude::MmapStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

/// Buffers in the mmap ring.
const BUFFERS: u32 = 4;
/// How long the first frame may take (cameras warm up).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any later frame may take before the source reports an error.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive undecodable or flagged frames tolerated before erroring.
const MAX_BAD_FRAMES: u32 = 30;

/// The wire formats campeer converts, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    Nv12,
    Yu12,
    Yuyv,
    Mjpg,
    /// H.264 Annex B, passed through (only with `video.v4l2_h264`).
    H264,
}

impl WireFormat {
    pub const PREFERENCE: [WireFormat; 4] = [
        WireFormat::Nv12,
        WireFormat::Yu12,
        WireFormat::Yuyv,
        WireFormat::Mjpg,
    ];

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            WireFormat::Nv12 => *b"NV12",
            WireFormat::Yu12 => *b"YU12",
            WireFormat::Yuyv => *b"YUYV",
            WireFormat::Mjpg => *b"MJPG",
            WireFormat::H264 => *b"H264",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WireFormat::Nv12 => "NV12",
            WireFormat::Yu12 => "YU12",
            WireFormat::Yuyv => "YUYV",
            WireFormat::Mjpg => "MJPG",
            WireFormat::H264 => "H264",
        }
    }

    /// The wire format for a V4L2 fourcc (`JPEG` is read as MJPG).
    pub fn from_fourcc(code: &[u8; 4]) -> Option<Self> {
        match code {
            b"NV12" => Some(WireFormat::Nv12),
            b"YU12" => Some(WireFormat::Yu12),
            b"YUYV" => Some(WireFormat::Yuyv),
            b"MJPG" | b"JPEG" => Some(WireFormat::Mjpg),
            b"H264" => Some(WireFormat::H264),
            _ => None,
        }
    }
}

/// What the driver granted for one wire format during negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub wire: WireFormat,
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// 0 when the driver does not report a frame interval.
    pub fps: u32,
}

/// Picks the candidate to use for a request of `width`x`height` at `fps`.
/// Candidates are in preference order. Odd sizes are never chosen. The first
/// candidate at the exact size with at least the requested rate wins; then
/// the exact size at any rate; then the smallest difference in area, the
/// higher rate, the earlier in preference.
pub fn choose_format(width: u32, height: u32, fps: u32, candidates: &[Candidate]) -> Option<usize> {
    let want_area = u64::from(width) * u64::from(height);
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.width > 0 && c.height > 0 && c.width % 2 == 0 && c.height % 2 == 0)
        .min_by_key(|(i, c)| {
            let exact = c.width == width && c.height == height;
            let fast_enough = c.fps == 0 || c.fps >= fps;
            let area = u64::from(c.width) * u64::from(c.height);
            (
                !exact,
                !(exact && fast_enough),
                area.abs_diff(want_area),
                !fast_enough,
                *i,
            )
        })
        .map(|(i, _)| i)
}

/// The capture time for a buffer: its timestamp when the driver stamps with
/// CLOCK_MONOTONIC and the stamp is within the last second, else `now_us`.
pub fn capture_time_us(sec: i64, usec: i64, monotonic: bool, now_us: u64) -> u64 {
    if !monotonic || sec < 0 || !(0..1_000_000).contains(&usec) || (sec == 0 && usec == 0) {
        return now_us;
    }
    let ts = (sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(usec as u64);
    if ts > now_us || now_us - ts > 1_000_000 {
        now_us
    } else {
        ts
    }
}

fn fourcc_name(code: &[u8; 4]) -> String {
    code.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end_matches('?')
        .to_string()
}

fn fps_of(p: &Parameters) -> u32 {
    let (n, d) = (p.interval.numerator, p.interval.denominator);
    // Rounded; 0 when the driver reports no interval.
    d.saturating_add(n / 2).checked_div(n).unwrap_or(0)
}

/// A V4L2 camera.
pub struct V4l2Source {
    // Declared before `device` so the stream (buffers) goes first on drop.
    stream: Option<MmapStream<'static>>,
    device: Device,
    path: PathBuf,
    format: VideoFormat,
    wire: WireFormat,
    stride: usize,
    mjpeg: MjpegDecoder,
    /// Set when the camera's own H.264 is passed through.
    h264: Option<Passthrough>,
    /// Whether the camera took a FORCE_KEY_FRAME (until it refuses one).
    force_keyframe: bool,
    seq: u32,
    pending: Option<SourceUnit>,
    last_driver_seq: Option<u32>,
    driver_dropped: u64,
}

impl V4l2Source {
    /// Opens `path`, negotiates a format near `width`x`height` at `fps`,
    /// starts streaming and waits for the first frame.
    pub fn open(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        Self::open_with(path, width, height, fps, None)
    }

    /// [`V4l2Source::open`], taking the camera's own H.264 first when
    /// `h264` is given and the camera offers it at that size.
    pub fn open_with(
        path: &Path,
        width: u32,
        height: u32,
        fps: u32,
        h264: Option<H264Request>,
    ) -> Result<Self, MediaError> {
        super::validate_size(width, height, fps)?;
        let device = Device::with_path(path).map_err(|e| MediaError::from_io(path, "open", e))?;
        let caps = check_caps(&device, path)?;
        let (candidates, no_usable) = candidates(&device, path, h264, width, height, fps)?;
        let Some(pick) = choose_format(width, height, fps, &candidates) else {
            // Every candidate had an odd size.
            let c = &candidates[0];
            return Err(MediaError::OddSize {
                path: path.to_path_buf(),
                width: c.width,
                height: c.height,
                fourcc: fourcc_name(&c.fourcc),
            });
        };
        let chosen = candidates[pick].clone();
        let (fmt, granted_fps) = apply_format(&device, path, &chosen, fps, no_usable)?;
        info!(
            device = %path.display(),
            card = %caps.card,
            driver = %caps.driver,
            requested = %format!("{width}x{height}@{fps}"),
            width = fmt.width,
            height = fmt.height,
            fourcc = %fourcc_name(&fmt.fourcc.repr),
            fps = granted_fps,
            bytesperline = fmt.stride,
            "camera format"
        );

        let passthrough = match (chosen.wire, h264) {
            (WireFormat::H264, Some(req)) => {
                h264::apply(&device, path, req);
                Some(Passthrough::new())
            }
            _ => None,
        };
        let mut stream = MmapStream::with_buffers(&device, BufType::VideoCapture, BUFFERS)
            .map_err(|e| MediaError::from_io(path, "VIDIOC_REQBUFS", e))?;
        stream.set_timeout(FIRST_FRAME_TIMEOUT);

        let mut src = V4l2Source {
            stream: Some(stream),
            device,
            path: path.to_path_buf(),
            format: VideoFormat {
                width: fmt.width,
                height: fmt.height,
                fps: granted_fps,
                pixel_format: chosen.wire.name().to_string(),
            },
            wire: chosen.wire,
            stride: fmt.stride as usize,
            mjpeg: MjpegDecoder::new(),
            force_keyframe: passthrough.is_some(),
            h264: passthrough,
            seq: 0,
            pending: None,
            last_driver_seq: None,
            driver_dropped: 0,
        };
        let first = src.capture(FIRST_FRAME_TIMEOUT)?;
        if let Some(s) = src.stream.as_mut() {
            s.set_timeout(FRAME_TIMEOUT);
        }
        src.pending = Some(first);
        Ok(src)
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames the driver dropped (gaps in its sequence numbers) so far.
    pub fn driver_dropped(&self) -> u64 {
        self.driver_dropped
    }

    /// Dequeues buffers until one converts (or, for H.264, holds a
    /// picture), skipping flagged or undecodable ones (up to
    /// `MAX_BAD_FRAMES` in a row).
    fn capture(&mut self, timeout: Duration) -> Result<SourceUnit, MediaError> {
        let V4l2Source {
            stream,
            path,
            format,
            wire,
            stride,
            mjpeg,
            h264,
            seq,
            last_driver_seq,
            driver_dropped,
            ..
        } = self;
        let stream = stream.as_mut().ok_or_else(|| MediaError::Io {
            path: path.clone(),
            op: "capture",
            source: io::Error::other("stream already closed"),
        })?;
        let mut bad = 0u32;
        loop {
            let (buf, meta) = match stream.next() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(MediaError::Timeout {
                        path: path.clone(),
                        ms: timeout.as_millis() as u64,
                    })
                }
                Err(e) => return Err(MediaError::from_io(path, "VIDIOC_DQBUF", e)),
            };
            let now = clock::monotonic_us();
            if let Some(prev) = *last_driver_seq {
                let gap = meta.sequence.wrapping_sub(prev).wrapping_sub(1);
                if gap > 0 && gap < 1_000_000 {
                    *driver_dropped += u64::from(gap);
                    debug!(device = %path.display(), dropped = gap, "driver dropped frames");
                }
            }
            *last_driver_seq = Some(meta.sequence);

            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            let data = &buf[..used];
            let monotonic = (meta.flags.bits() & BufFlags::TIMESTAMP_MASK.bits())
                == BufFlags::TIMESTAMP_MONOTONIC.bits();
            // time_t is 32 bits on 32-bit ARM (Pi 0/1/2/3 images): the
            // conversion is only a no-op on 64-bit targets.
            #[allow(clippy::useless_conversion)]
            let (sec, usec) = (
                i64::from(meta.timestamp.sec),
                i64::from(meta.timestamp.usec),
            );
            let capture_us = capture_time_us(sec, usec, monotonic, now);
            if let Some(pt) = h264.as_mut() {
                if meta.flags.contains(BufFlags::ERROR) {
                    bad += 1;
                    if bad >= MAX_BAD_FRAMES {
                        return Err(MediaError::BadFrame {
                            path: path.clone(),
                            fourcc: wire.name().to_string(),
                            seq: *seq,
                            source: convert::ConvertError::Corrupt,
                        });
                    }
                    continue;
                }
                let duration = 1_000_000 / u64::from(format.fps.max(1));
                // A buffer without a picture (parameter sets alone) waits
                // for the next; the passthrough keeps its SPS/PPS.
                if let Some(f) = pt.frame(data.to_vec(), capture_us, *seq, duration) {
                    *seq = seq.wrapping_add(1);
                    return Ok(SourceUnit::Encoded(f));
                }
                continue;
            }
            let mut frame = I420Frame {
                width: format.width,
                height: format.height,
                data: vec![0u8; (format.width * format.height) as usize * 3 / 2],
                capture_us: 0,
                seq: *seq,
            };
            let converted = if meta.flags.contains(BufFlags::ERROR) {
                Err(convert::ConvertError::Corrupt)
            } else {
                match *wire {
                    WireFormat::Nv12 => convert::nv12_to_i420(data, *stride, &mut frame),
                    WireFormat::Yu12 => convert::yu12_to_i420(data, *stride, &mut frame),
                    WireFormat::Yuyv => convert::yuyv_to_i420(data, *stride, &mut frame),
                    WireFormat::Mjpg => mjpeg.decode_into(data, &mut frame),
                    WireFormat::H264 => unreachable!("H.264 is passed through above"),
                }
            };
            match converted {
                Ok(()) => {
                    frame.capture_us = capture_us;
                    *seq = seq.wrapping_add(1);
                    return Ok(SourceUnit::Raw(frame));
                }
                Err(e) => {
                    bad += 1;
                    if bad == 1 {
                        warn!(device = %path.display(), fourcc = wire.name(), "skipping bad frame: {e}");
                    }
                    if bad >= MAX_BAD_FRAMES {
                        return Err(MediaError::BadFrame {
                            path: path.clone(),
                            fourcc: wire.name().to_string(),
                            seq: *seq,
                            source: e,
                        });
                    }
                }
            }
        }
    }
}

/// The device's capabilities, refused unless it is a single-planar
/// capture device with streaming I/O.
fn check_caps(device: &Device, path: &Path) -> Result<v4l::Capabilities, MediaError> {
    let caps = device
        .query_caps()
        .map_err(|e| MediaError::from_io(path, "VIDIOC_QUERYCAP", e))?;
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
        let reason = if caps.capabilities.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
            "is a multi-planar capture device, which campeer cannot read yet".to_string()
        } else {
            "is not a video capture device (is it a metadata or codec node?)".to_string()
        };
        return Err(MediaError::NotCapture {
            path: path.to_path_buf(),
            reason: format!("{} ({}) {reason}", caps.card, caps.driver),
        });
    }
    if !caps.capabilities.contains(CapFlags::STREAMING) {
        return Err(MediaError::NotCapture {
            path: path.to_path_buf(),
            reason: format!(
                "{} ({}) does not support streaming I/O",
                caps.card, caps.driver
            ),
        });
    }
    Ok(caps)
}

/// What the device offers that campeer can use, as the driver adjusts
/// each to the request: the camera's own H.264 first, when asked for and
/// offered at the exact size; otherwise each usable raw format, in
/// preference order. Also the error to give when none is usable.
fn candidates(
    device: &Device,
    path: &Path,
    h264: Option<H264Request>,
    width: u32,
    height: u32,
    fps: u32,
) -> Result<(Vec<Candidate>, MediaError), MediaError> {
    let offered = device
        .enum_formats()
        .map_err(|e| MediaError::from_io(path, "VIDIOC_ENUM_FMT", e))?;
    let offered_codes: Vec<[u8; 4]> = offered.iter().map(|d| d.fourcc.repr).collect();
    let no_usable = MediaError::NoUsableFormat {
        path: path.to_path_buf(),
        offered: if offered.is_empty() {
            "nothing".into()
        } else {
            offered
                .iter()
                .map(|d| format!("{} ({})", fourcc_name(&d.fourcc.repr), d.description))
                .collect::<Vec<_>>()
                .join(", ")
        },
    };
    let mut candidates = Vec::new();
    if let Some(c) = try_h264(device, path, &offered_codes, h264, width, height, fps)? {
        candidates.push(c);
        return Ok((candidates, no_usable));
    }
    for wire in WireFormat::PREFERENCE {
        let Some(code) = offered_codes
            .iter()
            .find(|c| WireFormat::from_fourcc(c) == Some(wire))
        else {
            continue;
        };
        match try_format(device, path, *code, width, height, fps)? {
            Some(c) => candidates.push(c),
            None => {
                debug!(device = %path.display(), fourcc = %fourcc_name(code), "format refused by the driver")
            }
        }
    }
    if candidates.is_empty() {
        return Err(no_usable);
    }
    Ok((candidates, no_usable))
}

/// Sets `chosen` for real and reads back what the driver holds, with the
/// frame rate it granted.
fn apply_format(
    device: &Device,
    path: &Path,
    chosen: &Candidate,
    fps: u32,
    no_usable: MediaError,
) -> Result<(Format, u32), MediaError> {
    let fmt = device
        .set_format(&Format::new(
            chosen.width,
            chosen.height,
            FourCC::new(&chosen.fourcc),
        ))
        .map_err(|e| MediaError::from_io(path, "VIDIOC_S_FMT", e))?;
    let granted_fps = match device.set_params(&Parameters::with_fps(fps)) {
        Ok(p) if fps_of(&p) > 0 => fps_of(&p),
        _ => fps,
    };
    if fmt.fourcc.repr != chosen.fourcc {
        return Err(no_usable);
    }
    if fmt.width == 0 || fmt.height == 0 || fmt.width % 2 != 0 || fmt.height % 2 != 0 {
        return Err(MediaError::OddSize {
            path: path.to_path_buf(),
            width: fmt.width,
            height: fmt.height,
            fourcc: fourcc_name(&fmt.fourcc.repr),
        });
    }
    Ok((fmt, granted_fps))
}

/// The camera's own H.264 as a candidate, when `h264` asks for it and the
/// driver grants it at exactly the requested size; logs why not otherwise.
fn try_h264(
    device: &Device,
    path: &Path,
    offered: &[[u8; 4]],
    h264: Option<H264Request>,
    width: u32,
    height: u32,
    fps: u32,
) -> Result<Option<Candidate>, MediaError> {
    if h264.is_none() {
        return Ok(None);
    }
    let code = WireFormat::H264.fourcc();
    if !offered.contains(&code) {
        warn!(device = %path.display(), "video.v4l2_h264: the camera offers no H.264; encoding its raw frames instead");
        return Ok(None);
    }
    match try_format(device, path, code, width, height, fps)? {
        Some(c) if c.width == width && c.height == height => {
            info!(device = %path.display(), "the camera encodes H.264 itself: passed through, not re-encoded");
            Ok(Some(c))
        }
        other => {
            let got = other.map_or("refused".to_string(), |c| {
                format!("{}x{}", c.width, c.height)
            });
            warn!(device = %path.display(), granted = %got, "video.v4l2_h264: the camera has no H.264 at {width}x{height}; encoding its raw frames instead");
            Ok(None)
        }
    }
}

/// Asks the driver for `code` at the requested size and rate and reports
/// what it granted; `None` if it substituted another format or refused.
fn try_format(
    device: &Device,
    path: &Path,
    code: [u8; 4],
    width: u32,
    height: u32,
    fps: u32,
) -> Result<Option<Candidate>, MediaError> {
    let Some(wire) = WireFormat::from_fourcc(&code) else {
        return Ok(None);
    };
    let granted = match device.set_format(&Format::new(width, height, FourCC::new(&code))) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(MediaError::from_io(path, "VIDIOC_S_FMT", e)),
    };
    if granted.fourcc.repr != code {
        return Ok(None);
    }
    let fps = match device.set_params(&Parameters::with_fps(fps)) {
        Ok(p) => fps_of(&p),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(MediaError::from_io(path, "VIDIOC_S_PARM", e))
        }
        Err(_) => 0,
    };
    Ok(Some(Candidate {
        wire,
        fourcc: code,
        width: granted.width,
        height: granted.height,
        fps,
    }))
}

impl VideoSource for V4l2Source {
    fn format(&self) -> &VideoFormat {
        &self.format
    }

    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        match self.next_unit()? {
            SourceUnit::Raw(f) => Ok(f),
            SourceUnit::Encoded(_) => Err(MediaError::BadSpec {
                spec: format!("v4l2:{}", self.path.display()),
                reason: "H.264 from the camera can only be passed through",
            }),
        }
    }

    fn next_unit(&mut self) -> Result<SourceUnit, MediaError> {
        if let Some(first) = self.pending.take() {
            return Ok(first);
        }
        self.capture(FRAME_TIMEOUT)
    }

    fn request_keyframe(&mut self) -> bool {
        if !self.force_keyframe {
            return false;
        }
        match h264::force_keyframe(&self.device) {
            Ok(()) => true,
            Err(e) => {
                // Asked once per debounce window at most; say it once.
                self.force_keyframe = false;
                warn!(device = %self.path.display(), "the camera cannot make a keyframe on demand ({e}): viewers wait for its next periodic one");
                false
            }
        }
    }

    fn describe(&self) -> String {
        format!("camera {}", self.path.display())
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        // The v4l stream panics in its own Drop when VIDIOC_STREAMOFF fails
        // with anything but ENODEV. Stop it here first; in the unexpected
        // case that fails, leak the stream (and with it the open descriptor)
        // rather than panic on the capture thread.
        if let Some(mut stream) = self.stream.take() {
            match stream.stop() {
                Ok(()) => drop(stream),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => drop(stream),
                Err(e) => {
                    warn!(device = %self.path.display(), "VIDIOC_STREAMOFF failed, leaking the stream: {e}");
                    std::mem::forget(stream);
                }
            }
        }
        debug!(device = %self.path.display(), fd = self.device.handle().fd(), "camera closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(wire: WireFormat, width: u32, height: u32, fps: u32) -> Candidate {
        Candidate {
            wire,
            fourcc: wire.fourcc(),
            width,
            height,
            fps,
        }
    }

    #[test]
    fn preference_order_wins_when_everything_fits() {
        let c = [
            cand(WireFormat::Nv12, 640, 480, 30),
            cand(WireFormat::Yuyv, 640, 480, 30),
            cand(WireFormat::Mjpg, 640, 480, 30),
        ];
        assert_eq!(choose_format(640, 480, 30, &c), Some(0));
    }

    #[test]
    fn exact_size_and_rate_beat_preference() {
        // Typical UVC webcam: YUYV 720p only at 10 fps, MJPG at 30.
        let c = [
            cand(WireFormat::Yuyv, 1280, 720, 10),
            cand(WireFormat::Mjpg, 1280, 720, 30),
        ];
        assert_eq!(choose_format(1280, 720, 30, &c), Some(1));
        // At 10 fps YUYV is preferred again.
        assert_eq!(choose_format(1280, 720, 10, &c), Some(0));
    }

    #[test]
    fn exact_size_beats_rate_and_closest_size_is_the_fallback() {
        let c = [
            cand(WireFormat::Yuyv, 640, 480, 30),
            cand(WireFormat::Mjpg, 1280, 720, 15),
        ];
        // 720p asked: MJPG has the size, though slower.
        assert_eq!(choose_format(1280, 720, 30, &c), Some(1));
        // 800x600 asked: nobody has it; 640x480 is closer in area.
        assert_eq!(choose_format(800, 600, 30, &c), Some(0));
        // Unknown rate (0) counts as fast enough.
        let c = [cand(WireFormat::Yuyv, 640, 480, 0)];
        assert_eq!(choose_format(640, 480, 30, &c), Some(0));
    }

    #[test]
    fn odd_sizes_are_never_chosen() {
        let c = [
            cand(WireFormat::Nv12, 641, 480, 30),
            cand(WireFormat::Yuyv, 320, 240, 30),
        ];
        assert_eq!(choose_format(640, 480, 30, &c), Some(1));
        assert_eq!(choose_format(640, 480, 30, &c[..1]), None);
        assert_eq!(choose_format(640, 480, 30, &[]), None);
    }

    #[test]
    fn fourccs_map_to_wire_formats() {
        for w in WireFormat::PREFERENCE {
            assert_eq!(WireFormat::from_fourcc(&w.fourcc()), Some(w));
            assert_eq!(fourcc_name(&w.fourcc()), w.name());
        }
        assert_eq!(WireFormat::from_fourcc(b"JPEG"), Some(WireFormat::Mjpg));
        assert_eq!(WireFormat::from_fourcc(b"H264"), Some(WireFormat::H264));
        assert!(!WireFormat::PREFERENCE.contains(&WireFormat::H264));
        assert_eq!(fourcc_name(b"Y10\0"), "Y10");
        assert_eq!(fourcc_name(&[0x01, b'A', b'B', b'C']), "?ABC");
    }

    #[test]
    fn buffer_timestamps_are_used_when_monotonic_and_plausible() {
        let now = 10_000_000_000; // 10 000 s after boot
        assert_eq!(capture_time_us(9_999, 990_000, true, now), 9_999_990_000);
        // Not monotonic (e.g. TIMESTAMP_COPY or unknown): dequeue time.
        assert_eq!(capture_time_us(9_999, 990_000, false, now), now);
        // Zero, negative, in the future, or more than a second old: dequeue time.
        assert_eq!(capture_time_us(0, 0, true, now), now);
        assert_eq!(capture_time_us(-1, 0, true, now), now);
        assert_eq!(capture_time_us(10_000, 1, true, now), now);
        assert_eq!(capture_time_us(9_998, 0, true, now), now);
        assert_eq!(
            capture_time_us(9_999, 1_000_000, true, now),
            now,
            "bad usec"
        );
    }

    #[test]
    fn frame_rate_is_read_from_the_interval() {
        let p = |n, d| Parameters::new(v4l::Fraction::new(n, d));
        assert_eq!(fps_of(&p(1, 30)), 30);
        assert_eq!(fps_of(&p(1001, 30000)), 30);
        assert_eq!(fps_of(&p(2, 15)), 8);
        assert_eq!(fps_of(&p(0, 30)), 0);
    }

    #[test]
    fn a_missing_device_is_named() {
        let e = V4l2Source::open(Path::new("/dev/campeer-test-missing"), 640, 480, 30)
            .err()
            .expect("no such device");
        assert!(matches!(e, MediaError::Missing { .. }));
        assert_eq!(
            e.to_string(),
            "camera /dev/campeer-test-missing: no such device"
        );
    }

    #[test]
    fn a_non_video_node_is_refused_clearly() {
        // /dev/null opens fine but answers no V4L2 ioctl.
        let e = V4l2Source::open(Path::new("/dev/null"), 640, 480, 30)
            .err()
            .expect("not a camera");
        let msg = e.to_string();
        assert!(msg.starts_with("camera /dev/null"), "{msg}");
        assert!(msg.contains("VIDIOC_QUERYCAP"), "{msg}");
    }
}
