//! Software H.264 for WebRTC: openh264 configured as a constrained-baseline
//! (profile_idc 66 with constraint_set1, level 3.1 or what the size needs),
//! single-slice, real-time camera encoder in bitrate mode.
//!
//! Output is one Annex B access unit per raw frame. Every IDR carries SPS
//! and PPS in front of it, so any IDR is a starting point for a new viewer.
//! Frame skipping is off: each raw frame yields exactly one access unit, so
//! the frame counter has no gaps (docs/design.md, pitfall 12).

use super::EncodeError;
use crate::media::{EncodedFrame, I420Frame};
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    QpRange, RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};
use openh264_sys2::{ENCODER_OPTION_TRACE_LEVEL, WELS_LOG_ERROR};

/// Quantiser bounds: openh264's usual floor, and H.264's ceiling.
const MIN_QP: u8 = 12;
const MAX_QP: u8 = 51;

/// What the encoder is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Target bitrate in bit/s.
    pub bitrate: u32,
    /// Frames between periodic IDRs (0: only the first frame and on demand).
    pub keyframe_interval: u32,
}

impl EncoderSettings {
    /// Checks the settings against what openh264 and WebRTC accept.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let reason = if self.width == 0 || self.height == 0 {
            Some("width and height must be non-zero")
        } else if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            Some("width and height must be even")
        } else if self.width.max(self.height) > 3840 || self.width.min(self.height) > 2160 {
            Some("openh264 encodes at most 3840x2160")
        } else if self.fps == 0 || self.fps > 120 {
            Some("frame rate must be between 1 and 120")
        } else if self.bitrate < 10_000 || self.bitrate > 100_000_000 {
            Some("bitrate must be between 10 kbit/s and 100 Mbit/s")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(EncodeError::BadSettings {
                width: self.width,
                height: self.height,
                fps: self.fps,
                bitrate: self.bitrate,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Nominal frame duration in microseconds.
    pub fn duration_us(&self) -> u64 {
        1_000_000 / u64::from(self.fps.max(1))
    }
}

/// An [`I420Frame`] seen through openh264's source trait. Only built after
/// the frame's buffer length was checked against its size.
struct I420View<'a>(&'a I420Frame);

impl YUVSource for I420View<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width as usize, self.0.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let w = self.0.width as usize;
        (w, w / 2, w / 2)
    }

    fn y(&self) -> &[u8] {
        self.0.planes().0
    }

    fn u(&self) -> &[u8] {
        self.0.planes().1
    }

    fn v(&self) -> &[u8] {
        self.0.planes().2
    }
}

/// The openh264 encoder with campeer's settings.
pub struct H264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    frames: u64,
}

impl H264Encoder {
    pub fn new(settings: &EncoderSettings) -> Result<Self, EncodeError> {
        settings.validate()?;
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ))
            // A scene cut would otherwise insert unscheduled I frames: the
            // bitrate spike is not worth it for a fixed camera.
            .scene_change_detect(false)
            // openh264 replaces a minimum QP of 0 (the crate's default) by
            // its own range 12..=42, and at QP 42 a noisy picture (a dark
            // scene with sensor gain) still takes many times the target
            // bitrate. Allowing up to 51 keeps such scenes near the target.
            .qp(QpRange::new(MIN_QP, MAX_QP))
            // One thread: the pipeline already runs capture and encode on
            // separate threads, and single-slice output is what we send.
            .num_threads(1);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| EncodeError::Encoder(format!("cannot create the encoder: {e}")))?;
        // openh264 initialises on the first frame and then warns on stderr
        // that frame skipping is off (which is deliberate). Only errors may
        // print; the crate sets its own (quiet) level after initialising.
        let mut level: std::os::raw::c_int = WELS_LOG_ERROR;
        // SAFETY: ENCODER_OPTION_TRACE_LEVEL is accepted before
        // initialisation, reads one int through the pointer, which is valid
        // for the duration of the call, and changes no encoding parameter.
        let rc = unsafe {
            encoder
                .raw_api()
                .set_option(ENCODER_OPTION_TRACE_LEVEL, (&raw mut level).cast())
        };
        if rc != 0 {
            tracing::debug!(rc, "openh264 refused the trace level");
        }
        Ok(H264Encoder {
            encoder,
            settings: settings.clone(),
            frames: 0,
        })
    }

    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Encodes one frame; `force_idr` makes it an IDR. Returns `None` only
    /// if the encoder produced nothing for this frame (it should not, with
    /// frame skipping off).
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        force_idr: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        check_frame(frame)?;
        // Before the first frame the encoder is not initialised (it
        // initialises from the first frame's size), and the first frame is
        // an IDR anyway.
        if force_idr && self.frames > 0 {
            self.encoder.force_intra_frame();
        }
        let ts = Timestamp::from_millis(frame.capture_us / 1_000);
        let bitstream = self
            .encoder
            .encode_at(&I420View(frame), ts)
            .map_err(|e| EncodeError::Encoder(format!("frame {}: {e}", frame.seq)))?;
        let frame_type = bitstream.frame_type();
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = bitstream.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        self.frames += 1;
        Ok(Some(EncodedFrame {
            data: Bytes::from(data),
            keyframe: frame_type == FrameType::IDR,
            capture_us: frame.capture_us,
            seq: frame.seq,
            duration_us: self.settings.duration_us(),
        }))
    }
}

fn check_frame(frame: &I420Frame) -> Result<(), EncodeError> {
    let (w, h) = (frame.width, frame.height);
    let reason = if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        Some("width and height must be even and non-zero")
    } else if w.max(h) > 3840 || w.min(h) > 2160 {
        Some("larger than 3840x2160")
    } else if frame.data.len() != (w as usize) * (h as usize) * 3 / 2 {
        Some("the buffer is not width*height*3/2 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EncodeError::BadFrame {
            seq: frame.seq,
            width: w,
            height: h,
            len: frame.data.len(),
            reason,
        }),
        None => Ok(()),
    }
}

/// NAL unit types in an Annex B byte stream, in order.
pub fn nal_types(annexb: &[u8]) -> Vec<u8> {
    nal_units(annexb)
        .filter_map(|n| n.first().map(|b| b & 0x1F))
        .collect()
}

/// The NAL units (without start codes) of an Annex B byte stream.
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = annexb;
    std::iter::from_fn(move || loop {
        // Find the next 00 00 01 start code.
        let start = rest.windows(3).position(|w| w == [0, 0, 1])? + 3;
        let body = &rest[start..];
        let end = body
            .windows(3)
            .position(|w| w == [0, 0, 1] || w == [0, 0, 0])
            .unwrap_or(body.len());
        rest = &body[end..];
        if end > 0 {
            return Some(&body[..end]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::decode::H264Decoder;
    use crate::media::test_pattern::TestPattern;

    fn settings(width: u32, height: u32, keyframe_interval: u32) -> EncoderSettings {
        EncoderSettings {
            width,
            height,
            fps: 30,
            bitrate: 1_000_000,
            keyframe_interval,
        }
    }

    fn frames(width: u32, height: u32) -> impl FnMut(u32) -> I420Frame {
        let mut tp = TestPattern::new(width, height, 30).expect("valid size");
        move |i| tp.render(i, 10_000_000 + u64::from(i) * 33_333)
    }

    #[test]
    fn output_decodes_and_carries_frame_metadata() {
        let mut enc = H264Encoder::new(&settings(320, 240, 0)).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let mut next = frames(320, 240);
        for i in 0..10 {
            let raw = next(i);
            let out = enc.encode(&raw, false).unwrap().expect("a frame per input");
            assert_eq!(out.seq, i);
            assert_eq!(out.capture_us, raw.capture_us);
            assert_eq!(out.duration_us, 33_333);
            assert_eq!(out.keyframe, i == 0, "only the first frame is IDR");
            assert!(out.data.starts_with(&[0, 0, 0, 1]), "Annex B start code");
            let pic = dec.decode(&out.data).unwrap().expect("a picture");
            assert_eq!((pic.width, pic.height), (320, 240));
            // Luma survives within compression error (mean abs diff).
            let diff: u64 = pic
                .y
                .iter()
                .zip(raw.y())
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            let mad = diff as f64 / pic.y.len() as f64;
            assert!(mad < 6.0, "frame {i}: mean abs luma error {mad:.2}");
        }
    }

    #[test]
    fn idr_carries_sps_and_pps_and_p_frames_do_not() {
        let mut enc = H264Encoder::new(&settings(320, 240, 0)).unwrap();
        let mut next = frames(320, 240);
        let first = enc.encode(&next(0), false).unwrap().unwrap();
        assert_eq!(nal_types(&first.data), vec![7, 8, 5], "SPS, PPS, IDR slice");
        let second = enc.encode(&next(1), false).unwrap().unwrap();
        assert_eq!(nal_types(&second.data), vec![1], "one non-IDR slice");
        assert!(!second.keyframe);
    }

    #[test]
    fn forced_idr_is_immediate() {
        let mut enc = H264Encoder::new(&settings(320, 240, 0)).unwrap();
        let mut next = frames(320, 240);
        for i in 0..5 {
            enc.encode(&next(i), false).unwrap();
        }
        let forced = enc.encode(&next(5), true).unwrap().unwrap();
        assert!(forced.keyframe);
        assert_eq!(nal_types(&forced.data), vec![7, 8, 5]);
        let after = enc.encode(&next(6), false).unwrap().unwrap();
        assert!(!after.keyframe);
        // Forcing on the very first frame is harmless.
        let mut fresh = H264Encoder::new(&settings(320, 240, 0)).unwrap();
        assert!(fresh.encode(&next(0), true).unwrap().unwrap().keyframe);
    }

    #[test]
    fn periodic_idr_follows_the_interval() {
        let mut enc = H264Encoder::new(&settings(320, 240, 10)).unwrap();
        let mut next = frames(320, 240);
        let keys: Vec<u32> = (0..35)
            .filter(|&i| enc.encode(&next(i), false).unwrap().unwrap().keyframe)
            .collect();
        assert_eq!(keys, vec![0, 10, 20, 30]);
    }

    #[test]
    fn sps_is_constrained_baseline_level_3_1() {
        for (w, h) in [(640, 480), (1280, 720)] {
            let mut enc = H264Encoder::new(&settings(w, h, 0)).unwrap();
            let out = enc.encode(&frames(w, h)(0), false).unwrap().unwrap();
            let sps = nal_units(&out.data)
                .find(|n| n[0] & 0x1F == 7)
                .expect("an SPS");
            assert_eq!(sps[1], 66, "profile_idc Baseline");
            assert_ne!(
                sps[2] & 0x40,
                0,
                "constraint_set1_flag (constrained baseline)"
            );
            assert_eq!(sps[3], 31, "level 3.1");
        }
    }

    /// Bits per second over 3 s of 640x480 video at a target bitrate: the
    /// test pattern with fresh noise of +-`amplitude` over its lower half.
    fn noisy_bitrate(target: u32, amplitude: u32) -> f64 {
        let s = EncoderSettings {
            bitrate: target,
            ..settings(640, 480, 0)
        };
        let mut enc = H264Encoder::new(&s).unwrap();
        let mut next = frames(640, 480);
        let mut state = 1u32;
        let mut bytes = 0usize;
        for i in 0..90 {
            let mut raw = next(i);
            for p in raw.y_mut()[640 * 240..].iter_mut() {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let n = ((state >> 16) % (2 * amplitude + 1)) as i32 - amplitude as i32;
                *p = (i32::from(*p) + n).clamp(16, 235) as u8;
            }
            bytes += enc.encode(&raw, false).unwrap().unwrap().data.len();
        }
        bytes as f64 * 8.0 / 3.0
    }

    #[test]
    fn bitrate_follows_the_target() {
        let low = noisy_bitrate(500_000, 16);
        let high = noisy_bitrate(2_000_000, 16);
        // Rate control without frame skipping is not a hard cap, but it
        // must track the target.
        assert!(low < 750_000.0, "{low:.0} bit/s for a 500 kbit/s target");
        assert!(high > 1.5 * low, "{high:.0} vs {low:.0} bit/s");
        assert!(high < 3_000_000.0, "{high:.0} bit/s for a 2 Mbit/s target");
    }

    #[test]
    fn even_white_noise_stays_near_the_target() {
        // With openh264's default QP ceiling of 42 this took ~9.5 Mbit/s.
        let bps = noisy_bitrate(500_000, 110);
        assert!(bps < 1_500_000.0, "{bps:.0} bit/s for a 500 kbit/s target");
    }

    #[test]
    fn bad_settings_and_frames_are_errors() {
        for s in [
            settings(641, 480, 0),
            settings(0, 480, 0),
            EncoderSettings {
                fps: 0,
                ..settings(640, 480, 0)
            },
            EncoderSettings {
                bitrate: 0,
                ..settings(640, 480, 0)
            },
            settings(4096, 2304, 0),
        ] {
            let e = H264Encoder::new(&s).err().expect("bad settings");
            assert!(matches!(e, EncodeError::BadSettings { .. }), "{e}");
        }
        let mut enc = H264Encoder::new(&settings(320, 240, 0)).unwrap();
        let mut short = I420Frame::black(320, 240);
        short.data.truncate(1000);
        let e = enc.encode(&short, false).unwrap_err();
        assert!(matches!(e, EncodeError::BadFrame { len: 1000, .. }), "{e}");
        let odd = I420Frame {
            width: 321,
            height: 240,
            data: vec![0; 321 * 240 * 3 / 2],
            capture_us: 0,
            seq: 9,
        };
        let e = enc.encode(&odd, false).unwrap_err();
        assert!(e.to_string().contains("raw frame 9 is 321x240"), "{e}");
    }

    #[test]
    fn a_size_change_restarts_with_an_idr() {
        let mut enc = H264Encoder::new(&settings(320, 240, 0)).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let a = enc.encode(&frames(320, 240)(0), false).unwrap().unwrap();
        assert_eq!(dec.decode(&a.data).unwrap().unwrap().width, 320);
        let b = enc.encode(&frames(640, 480)(1), false).unwrap().unwrap();
        assert!(b.keyframe);
        assert_eq!(dec.decode(&b.data).unwrap().unwrap().width, 640);
    }

    #[test]
    fn nal_splitter_handles_3_and_4_byte_start_codes() {
        let s = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let units: Vec<&[u8]> = nal_units(&s).collect();
        assert_eq!(
            units,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert_eq!(nal_types(&s), vec![7, 8, 5]);
        assert!(nal_types(&[1, 2, 3]).is_empty());
        assert!(nal_types(&[]).is_empty());
    }

    /// Prints encode time per frame (not a pass/fail check). Run with
    /// `cargo test --lib encode_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn encode_speed_report() {
        for (w, h) in [(640, 480), (1280, 720)] {
            let mut enc = H264Encoder::new(&settings(w, h, 60)).unwrap();
            let mut next = frames(w, h);
            let raws: Vec<I420Frame> = (0..150).map(&mut next).collect();
            let t = std::time::Instant::now();
            for (i, raw) in raws.iter().enumerate() {
                enc.encode(raw, i == 75).unwrap();
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0 / raws.len() as f64;
            let mut tp = TestPattern::new(w, h, 30).unwrap();
            let t = std::time::Instant::now();
            for i in 0..150 {
                std::hint::black_box(tp.render(i, u64::from(i) * 33_333));
            }
            let pattern_ms = t.elapsed().as_secs_f64() * 1000.0 / 150.0;
            // Camera-like content: sensor noise of +-8 over the whole picture.
            let mut state = 1u32;
            let noisy: Vec<I420Frame> = raws
                .into_iter()
                .map(|mut f| {
                    for p in f.y_mut() {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        *p = (i32::from(*p) + ((state >> 16) % 17) as i32 - 8).clamp(16, 235) as u8;
                    }
                    f
                })
                .collect();
            let mut enc = H264Encoder::new(&settings(w, h, 60)).unwrap();
            let t = std::time::Instant::now();
            for (i, raw) in noisy.iter().enumerate() {
                enc.encode(raw, i == 75).unwrap();
            }
            let noisy_ms = t.elapsed().as_secs_f64() * 1000.0 / noisy.len() as f64;
            println!(
                "{w}x{h}: encode {ms:.2} ms/frame (test pattern), {noisy_ms:.2} ms/frame (noisy); \
                 rendering the test pattern {pattern_ms:.3} ms/frame"
            );
        }
    }
}
