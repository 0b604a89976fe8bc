//! VP8 for browsers that offer no H.264 (Debian's Firefox ESR without its
//! downloaded H.264 plugin, say): libvpx through the `env-libvpx-sys`
//! bindings, configured as a real-time camera encoder (one pass, constant
//! bitrate, no look-ahead, error resilient, one token partition), and its
//! decoder for `campeer view --codec vp8` and tests.
//!
//! Like the H.264 encoder, each raw frame yields one compressed frame (frame
//! dropping is off), a keyframe is made on demand, and the frame stamp drawn
//! on the raw frame survives because it is drawn before encoding.

use super::decode::DecodedPicture;
use super::h264::EncoderSettings;
use super::EncodeError;
use crate::media::{EncodedFrame, I420Frame};
use bytes::Bytes;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use vpx_sys as vpx;

/// RTP's video clock, used as the encoder's time base.
const TIMEBASE_HZ: u64 = 90_000;

/// libvpx's speed for VP8 in real time (`VP8E_SET_CPUUSED`): negative is
/// "real time, at least this fast". -6 keeps a desktop core well ahead of
/// 30 fps at 720p; on ARM boards the cheapest useful setting, -12.
#[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
pub const CPU_USED: c_int = -12;
#[cfg(not(any(target_arch = "arm", target_arch = "aarch64")))]
pub const CPU_USED: c_int = -6;

/// The libvpx rate-control settings for `s`, applied to a default
/// configuration (pure, so it is unit-tested).
fn configure(cfg: &mut vpx::vpx_codec_enc_cfg_t, s: &EncoderSettings) {
    cfg.g_w = s.width;
    cfg.g_h = s.height;
    cfg.g_timebase = vpx::vpx_rational {
        num: 1,
        den: TIMEBASE_HZ as c_int,
    };
    cfg.g_threads = 1;
    cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
    // No look-ahead: a frame leaves the encoder with the call that took it.
    cfg.g_lag_in_frames = 0;
    cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
    cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
    cfg.rc_target_bitrate = (s.bitrate / 1000).max(1);
    // Never drop a frame: the stamp counter and RTP time stay gap-free.
    cfg.rc_dropframe_thresh = 0;
    cfg.rc_resize_allowed = 0;
    cfg.rc_min_quantizer = 2;
    cfg.rc_max_quantizer = 56;
    cfg.rc_undershoot_pct = 100;
    cfg.rc_overshoot_pct = 15;
    // A short buffer (in ms) keeps frame sizes near the target: what a
    // low-latency link wants.
    cfg.rc_buf_initial_sz = 500;
    cfg.rc_buf_optimal_sz = 600;
    cfg.rc_buf_sz = 1000;
    if s.keyframe_interval == 0 {
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_DISABLED;
    } else {
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = s.keyframe_interval;
    }
}

/// libvpx's default VP8 encoder configuration.
fn default_config() -> Result<vpx::vpx_codec_enc_cfg_t, EncodeError> {
    let mut cfg = MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit();
    // SAFETY: vpx_codec_vp8_cx returns a static interface; the config
    // pointer is valid for writes of one vpx_codec_enc_cfg_t, which the call
    // fills completely when it succeeds.
    let rc =
        unsafe { vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0) };
    if rc != vpx::vpx_codec_err_t::VPX_CODEC_OK {
        return Err(EncodeError::Encoder(format!(
            "libvpx default VP8 config: {rc:?}"
        )));
    }
    // SAFETY: initialised by the successful call above.
    Ok(unsafe { cfg.assume_init() })
}

fn vpx_error(ctx: &mut vpx::vpx_codec_ctx_t, what: &str) -> EncodeError {
    // SAFETY: `ctx` is an initialised context; libvpx returns a pointer to a
    // static or context-owned NUL-terminated string (or null).
    let text = unsafe {
        let p = vpx::vpx_codec_error(ctx);
        if p.is_null() {
            "unknown error".to_owned()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    EncodeError::Encoder(format!("libvpx {what}: {text}"))
}

/// A libvpx VP8 encoder with campeer's settings.
pub struct Vp8Encoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
    settings: EncoderSettings,
    frames: u64,
}

// SAFETY: the context is owned by this value and only used through `&mut
// self`; libvpx keeps no thread-affine state in it.
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    pub fn new(settings: &EncoderSettings) -> Result<Self, EncodeError> {
        settings.validate()?;
        let mut cfg = default_config()?;
        configure(&mut cfg, settings);
        // SAFETY: an all-zero context is what vpx_codec_enc_init expects to fill.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: ctx and cfg are valid; the ABI version is the one the
        // bindings were generated for (checked by the library).
        let rc = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_cx(),
                &cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if rc != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(EncodeError::Encoder(format!(
                "libvpx VP8 encoder init: {rc:?}"
            )));
        }
        let mut enc = Vp8Encoder {
            ctx,
            settings: settings.clone(),
            frames: 0,
        };
        enc.control(
            vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
            CPU_USED,
        )?;
        // Skip unchanged blocks cheaply (a fixed camera's background).
        enc.control(
            vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD as c_int,
            1,
        )?;
        enc.control(
            vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY as c_int,
            0,
        )?;
        enc.control(
            vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS as c_int,
            0,
        )?;
        // A keyframe may take at most three average frames' worth of bits,
        // so a viewer's first picture does not stall the link.
        enc.control(
            vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT as c_int,
            300,
        )?;
        Ok(enc)
    }

    fn control(&mut self, id: c_int, value: c_int) -> Result<(), EncodeError> {
        // SAFETY: the context is initialised; these controls take one int.
        let rc = unsafe { vpx::vpx_codec_control_(&mut *self.ctx, id, value) };
        if rc != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(vpx_error(&mut self.ctx, &format!("control {id}")));
        }
        Ok(())
    }

    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Encodes one frame; `force_keyframe` makes it a keyframe (the first
    /// frame always is). `None` only if libvpx produced nothing.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        let (w, h) = (frame.width, frame.height);
        let need = (w as usize) * (h as usize) * 3 / 2;
        if w != self.settings.width || h != self.settings.height || frame.data.len() < need {
            return Err(EncodeError::BadFrame {
                seq: frame.seq,
                width: w,
                height: h,
                len: frame.data.len(),
                reason: "not an I420 frame of the encoder's size",
            });
        }
        let mut img = MaybeUninit::<vpx::vpx_image_t>::zeroed();
        // SAFETY: vpx_img_wrap only records the pointer and geometry; the
        // buffer holds a full I420 picture (checked above) and outlives the
        // encode call, which only reads it.
        let wrapped = unsafe {
            vpx::vpx_img_wrap(
                img.as_mut_ptr(),
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                w as c_uint,
                h as c_uint,
                1,
                frame.data.as_ptr().cast_mut(),
            )
        };
        if wrapped.is_null() {
            return Err(EncodeError::Encoder(
                "libvpx refused the frame geometry".into(),
            ));
        }
        let pts = (frame.capture_us.saturating_mul(TIMEBASE_HZ) / 1_000_000) as i64;
        let duration = (self.settings.duration_us() * TIMEBASE_HZ / 1_000_000) as c_ulong;
        let flags = if force_keyframe {
            vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: context initialised, image wrapped above.
        let rc = unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx,
                wrapped,
                pts,
                duration,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        };
        if rc != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(vpx_error(
                &mut self.ctx,
                &format!("encode frame {}", frame.seq),
            ));
        }
        let mut data = Vec::new();
        let mut keyframe = false;
        let mut iter: vpx::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: iterating the packets of the last encode call.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-null packets are valid until the next encode call.
            let pkt = unsafe { &*pkt };
            if pkt.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: a frame packet's union member is `frame`; buf/sz
            // describe bytes owned by the encoder until the next call.
            let f = unsafe { pkt.data.frame };
            let bytes = unsafe { std::slice::from_raw_parts(f.buf.cast::<u8>(), f.sz as usize) };
            data.extend_from_slice(bytes);
            keyframe |= f.flags & vpx::VPX_FRAME_IS_KEY != 0;
        }
        if data.is_empty() {
            return Ok(None);
        }
        self.frames += 1;
        Ok(Some(EncodedFrame {
            data: Bytes::from(data),
            keyframe,
            capture_us: frame.capture_us,
            seq: frame.seq,
            duration_us: self.settings.duration_us(),
        }))
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// True when `frame` (a whole VP8 frame) is a keyframe: bit 0 of its first
/// byte is 0 (RFC 6386, 9.1).
pub fn is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// A libvpx VP8 decoder fed whole frames; keeps the luma plane (where the
/// frame stamp lives), like the H.264 decoder.
pub struct Vp8Decoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: as for the encoder.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    pub fn new() -> Result<Self, EncodeError> {
        // SAFETY: an all-zero context is what vpx_codec_dec_init expects to fill.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        let cfg = vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: valid context and config; ABI version of the bindings.
        let rc = unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx::vpx_codec_vp8_dx(),
                &cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if rc != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(EncodeError::Decoder(format!(
                "libvpx VP8 decoder init: {rc:?}"
            )));
        }
        Ok(Vp8Decoder { ctx })
    }

    /// Decodes one frame. `Ok(None)` when no picture comes out; an error
    /// when the data is not decodable (the next keyframe recovers).
    pub fn decode(&mut self, frame: &[u8]) -> Result<Option<DecodedPicture>, EncodeError> {
        if frame.is_empty() {
            return Ok(None);
        }
        let len = c_uint::try_from(frame.len()).map_err(|_| {
            EncodeError::Decoder(format!("frame of {} bytes is too large", frame.len()))
        })?;
        // SAFETY: the context is initialised; libvpx reads `len` bytes.
        let rc = unsafe {
            vpx::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), len, std::ptr::null_mut(), 0)
        };
        if rc != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(EncodeError::Decoder(format!("libvpx VP8 decode: {rc:?}")));
        }
        let mut iter: vpx::vpx_codec_iter_t = std::ptr::null();
        let mut out = None;
        loop {
            // SAFETY: iterating the pictures of the last decode call.
            let img = unsafe { vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: a non-null image is valid until the next decode call.
            out = copy_luma(unsafe { &*img });
        }
        Ok(out)
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// Copies a decoded picture's luma plane, rows packed.
fn copy_luma(img: &vpx::vpx_image_t) -> Option<DecodedPicture> {
    let (w, h) = (img.d_w as usize, img.d_h as usize);
    let stride = usize::try_from(img.stride[0]).ok()?;
    if w == 0 || h == 0 || stride < w || img.planes[0].is_null() {
        return None;
    }
    let mut y = Vec::with_capacity(w * h);
    for row in 0..h {
        // SAFETY: libvpx's plane 0 holds `h` rows of `stride` bytes.
        let line = unsafe { std::slice::from_raw_parts(img.planes[0].add(row * stride), w) };
        y.extend_from_slice(line);
    }
    Some(DecodedPicture {
        width: img.d_w,
        height: img.d_h,
        y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stamp::read_stamp;
    use crate::media::test_pattern::TestPattern;
    use crate::media::VideoSource;

    fn settings(interval: u32) -> EncoderSettings {
        EncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate: 500_000,
            keyframe_interval: interval,
        }
    }

    #[test]
    fn config_is_real_time_constant_bitrate_and_never_drops() {
        let mut cfg = default_config().unwrap();
        configure(&mut cfg, &settings(0));
        assert_eq!(cfg.g_lag_in_frames, 0);
        assert_eq!(cfg.rc_end_usage, vpx::vpx_rc_mode::VPX_CBR);
        assert_eq!(cfg.rc_target_bitrate, 500);
        assert_eq!(cfg.rc_dropframe_thresh, 0);
        assert_eq!(cfg.kf_mode, vpx::vpx_kf_mode::VPX_KF_DISABLED);
        configure(&mut cfg, &settings(60));
        assert_eq!(
            (cfg.kf_mode, cfg.kf_max_dist),
            (vpx::vpx_kf_mode::VPX_KF_AUTO, 60)
        );
    }

    #[test]
    fn first_frame_and_forced_frames_are_keyframes_and_stamps_survive() {
        let s = settings(0);
        let mut src = TestPattern::new(s.width, s.height, s.fps).unwrap();
        let mut enc = Vp8Encoder::new(&s).unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        let mut kinds = Vec::new();
        for i in 0..10 {
            let frame = src.next_frame().unwrap();
            let out = enc
                .encode(&frame, i == 6)
                .unwrap()
                .expect("one frame out per frame in");
            assert_eq!(out.keyframe, is_keyframe(&out.data));
            kinds.push(out.keyframe);
            let pic = dec.decode(&out.data).unwrap().expect("a picture");
            assert_eq!((pic.width, pic.height), (320, 240));
            let stamp = read_stamp(&pic.y, pic.width as usize, pic.width, pic.height)
                .expect("the stamp reads back");
            assert_eq!(stamp.0, frame.seq, "the stamp counter survives VP8");
        }
        assert_eq!(
            kinds,
            [true, false, false, false, false, false, true, false, false, false]
        );
    }

    #[test]
    fn a_frame_of_the_wrong_size_is_an_error_not_a_crash() {
        let mut enc = Vp8Encoder::new(&settings(0)).unwrap();
        let bad = I420Frame::black(64, 64);
        assert!(matches!(
            enc.encode(&bad, false),
            Err(EncodeError::BadFrame { .. })
        ));
        let mut dec = Vp8Decoder::new().unwrap();
        assert!(dec.decode(&[0xff; 20]).is_err());
    }
}
