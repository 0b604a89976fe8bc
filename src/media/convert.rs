//! Conversions from the camera's wire formats to tightly packed I420.
//!
//! Every converter writes into an existing [`I420Frame`] whose width and
//! height say what is expected; the source buffer is checked against them
//! first, so a short or odd buffer is an error, never a panic. `stride` is
//! V4L2's `bytesperline` for the first plane (0 means "tightly packed"); it
//! may exceed the row size when the driver pads rows.
//!
//! Chroma is averaged where the source has more of it than I420 keeps
//! (YUYV's every-row chroma, JPEG's 4:2:2 or 4:4:4). JPEG is full-range
//! YCbCr (JFIF); it is mapped to the limited range (16-235, 16-240) the
//! other formats and the H.264 stream use.

use super::I420Frame;
use std::panic::{catch_unwind, AssertUnwindSafe};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Why a buffer could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "{width}x{height} is not a valid I420 size (width and height must be even and non-zero)"
    )]
    BadSize { width: u32, height: u32 },

    #[error("stride {stride} is smaller than a row of {row} bytes")]
    Stride { stride: usize, row: usize },

    #[error("buffer holds {got} bytes, {need} are needed")]
    Short { got: usize, need: usize },

    #[error("output buffer holds {got} bytes, {need} are needed for {width}x{height}")]
    OutputSize {
        width: u32,
        height: u32,
        got: usize,
        need: usize,
    },

    #[error("the driver flagged the buffer as corrupt")]
    Corrupt,

    #[error("not a JPEG (no start-of-image marker)")]
    NotJpeg,

    #[error("JPEG: {0}")]
    Jpeg(String),

    #[error("JPEG is {got_w}x{got_h}, expected {width}x{height}")]
    JpegSize {
        width: u32,
        height: u32,
        got_w: usize,
        got_h: usize,
    },
}

/// Checks the output frame and returns (width, height) as usize.
fn check_out(out: &I420Frame) -> Result<(usize, usize), ConvertError> {
    let (w, h) = (out.width, out.height);
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        return Err(ConvertError::BadSize {
            width: w,
            height: h,
        });
    }
    let (w, h) = (w as usize, h as usize);
    let need = w * h + w * h / 2;
    if out.data.len() != need {
        return Err(ConvertError::OutputSize {
            width: out.width,
            height: out.height,
            got: out.data.len(),
            need,
        });
    }
    Ok((w, h))
}

fn effective_stride(stride: usize, row: usize) -> Result<usize, ConvertError> {
    match stride {
        0 => Ok(row),
        s if s < row => Err(ConvertError::Stride { stride: s, row }),
        s => Ok(s),
    }
}

fn check_len(src: &[u8], need: usize) -> Result<(), ConvertError> {
    if src.len() < need {
        Err(ConvertError::Short {
            got: src.len(),
            need,
        })
    } else {
        Ok(())
    }
}

fn avg2(a: u8, b: u8) -> u8 {
    (u16::from(a) + u16::from(b)).div_ceil(2) as u8
}

/// Packed YUYV 4:2:2 (Y0 U Y1 V) to I420.
pub fn yuyv_to_i420(src: &[u8], stride: usize, out: &mut I420Frame) -> Result<(), ConvertError> {
    let (w, h) = check_out(out)?;
    let stride = effective_stride(stride, 2 * w)?;
    check_len(src, stride * (h - 1) + 2 * w)?;
    let (y, u, v) = out.planes_mut();
    let cw = w / 2;
    for cy in 0..h / 2 {
        let r0 = &src[2 * cy * stride..2 * cy * stride + 2 * w];
        let r1 = &src[(2 * cy + 1) * stride..(2 * cy + 1) * stride + 2 * w];
        let y0 = &mut y[2 * cy * w..(2 * cy + 1) * w];
        for (dst, px) in y0.chunks_exact_mut(2).zip(r0.chunks_exact(4)) {
            dst[0] = px[0];
            dst[1] = px[2];
        }
        let y1 = &mut y[(2 * cy + 1) * w..(2 * cy + 2) * w];
        for (dst, px) in y1.chunks_exact_mut(2).zip(r1.chunks_exact(4)) {
            dst[0] = px[0];
            dst[1] = px[2];
        }
        let ur = &mut u[cy * cw..(cy + 1) * cw];
        let vr = &mut v[cy * cw..(cy + 1) * cw];
        for (x, (a, b)) in r0.chunks_exact(4).zip(r1.chunks_exact(4)).enumerate() {
            ur[x] = avg2(a[1], b[1]);
            vr[x] = avg2(a[3], b[3]);
        }
    }
    Ok(())
}

/// NV12 (Y plane, then interleaved Cb Cr at half resolution) to I420. The
/// chroma plane starts `stride * height` bytes in and has the same stride.
pub fn nv12_to_i420(src: &[u8], stride: usize, out: &mut I420Frame) -> Result<(), ConvertError> {
    let (w, h) = check_out(out)?;
    let stride = effective_stride(stride, w)?;
    let uv_off = stride * h;
    check_len(src, uv_off + stride * (h / 2 - 1) + w)?;
    let (y, u, v) = out.planes_mut();
    copy_plane(src, stride, y, w, h);
    let cw = w / 2;
    for cy in 0..h / 2 {
        let row = &src[uv_off + cy * stride..uv_off + cy * stride + w];
        let ur = &mut u[cy * cw..(cy + 1) * cw];
        let vr = &mut v[cy * cw..(cy + 1) * cw];
        for (x, pair) in row.chunks_exact(2).enumerate() {
            ur[x] = pair[0];
            vr[x] = pair[1];
        }
    }
    Ok(())
}

/// YU12 (planar I420, V4L2 `YUV420`) with padded rows to packed I420. The
/// chroma planes follow the luma plane, each with half the luma stride.
pub fn yu12_to_i420(src: &[u8], stride: usize, out: &mut I420Frame) -> Result<(), ConvertError> {
    let (w, h) = check_out(out)?;
    let stride = effective_stride(stride, w)?;
    let cstride = stride / 2;
    let u_off = stride * h;
    let v_off = u_off + cstride * (h / 2);
    check_len(src, v_off + cstride * (h / 2 - 1) + w / 2)?;
    let (y, u, v) = out.planes_mut();
    copy_plane(src, stride, y, w, h);
    copy_plane(&src[u_off..], cstride, u, w / 2, h / 2);
    copy_plane(&src[v_off..], cstride, v, w / 2, h / 2);
    Ok(())
}

/// Copies `h` rows of `w` bytes from a strided source into a packed plane.
/// Callers have checked the source length.
fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], w: usize, h: usize) {
    if stride == w {
        dst[..w * h].copy_from_slice(&src[..w * h]);
        return;
    }
    for (row, d) in dst.chunks_exact_mut(w).take(h).enumerate() {
        d.copy_from_slice(&src[row * stride..row * stride + w]);
    }
}

/// An APP0 segment reading "AVI1": it tells zune-jpeg to supply the standard
/// Huffman tables (JPEG Annex K.3) that MJPEG cameras usually leave out. The
/// defaults only fill tables the frame does not define itself.
const APP0_AVI1: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];

/// Decodes MJPEG frames to I420, reusing its buffers from frame to frame.
pub struct MjpegDecoder {
    patched: Vec<u8>,
    decoded: Vec<u8>,
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl Default for MjpegDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MjpegDecoder {
    pub fn new() -> Self {
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for i in 0..256usize {
            // Full range to limited range (BT.601): Y 16..235, C 16..240.
            luma[i] = (16 + (i * 219 + 127) / 255) as u8;
            chroma[i] = (16 + (i * 224 + 127) / 255) as u8;
        }
        MjpegDecoder {
            patched: Vec::new(),
            decoded: Vec::new(),
            luma,
            chroma,
        }
    }

    /// Decodes one JPEG frame into `out`, which must match its size.
    pub fn decode_into(&mut self, jpeg: &[u8], out: &mut I420Frame) -> Result<(), ConvertError> {
        let (w, h) = check_out(out)?;
        if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
            return Err(ConvertError::NotJpeg);
        }
        self.patched.clear();
        self.patched.extend_from_slice(&jpeg[..2]);
        self.patched.extend_from_slice(&APP0_AVI1);
        self.patched.extend_from_slice(&jpeg[2..]);

        let (patched, decoded) = (&self.patched, &mut self.decoded);
        // zune-jpeg is written not to panic on bad data; the camera is an
        // outside input all the same, so a panic becomes a frame error.
        let grey = catch_unwind(AssertUnwindSafe(|| decode_jpeg(patched, w, h, decoded)))
            .map_err(|_| ConvertError::Jpeg("decoder panicked on this frame".into()))??;

        let (y, u, v) = out.planes_mut();
        let src = &self.decoded;
        if grey {
            for (d, s) in y.iter_mut().zip(src.iter()) {
                *d = self.luma[usize::from(*s)];
            }
            u.fill(128);
            v.fill(128);
            return Ok(());
        }
        for (d, s) in y.iter_mut().zip(src.chunks_exact(3)) {
            *d = self.luma[usize::from(s[0])];
        }
        let cw = w / 2;
        for cy in 0..h / 2 {
            let r0 = &src[2 * cy * w * 3..(2 * cy + 1) * w * 3];
            let r1 = &src[(2 * cy + 1) * w * 3..(2 * cy + 2) * w * 3];
            for cx in 0..cw {
                let (a, b) = (&r0[cx * 6..cx * 6 + 6], &r1[cx * 6..cx * 6 + 6]);
                let cb =
                    (u32::from(a[1]) + u32::from(a[4]) + u32::from(b[1]) + u32::from(b[4]) + 2) / 4;
                let cr =
                    (u32::from(a[2]) + u32::from(a[5]) + u32::from(b[2]) + u32::from(b[5]) + 2) / 4;
                u[cy * cw + cx] = self.chroma[cb as usize];
                v[cy * cw + cx] = self.chroma[cr as usize];
            }
        }
        Ok(())
    }
}

/// Decodes to interleaved YCbCr (or plain luma for greyscale JPEGs, then
/// returns true) into `out`, checking the size is `w`x`h`.
fn decode_jpeg(jpeg: &[u8], w: usize, h: usize, out: &mut Vec<u8>) -> Result<bool, ConvertError> {
    // The size is checked against the expected one right after the headers,
    // before anything image-sized is allocated.
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    dec.decode_headers()
        .map_err(|e| ConvertError::Jpeg(format!("{e:?}")))?;
    let info = dec
        .info()
        .ok_or_else(|| ConvertError::Jpeg("no image information after the headers".into()))?;
    let (gw, gh) = (usize::from(info.width), usize::from(info.height));
    if (gw, gh) != (w, h) {
        return Err(ConvertError::JpegSize {
            width: w as u32,
            height: h as u32,
            got_w: gw,
            got_h: gh,
        });
    }
    let grey = matches!(dec.input_colorspace(), Some(ColorSpace::Luma));
    if grey {
        dec.set_options(opts.jpeg_set_out_colorspace(ColorSpace::Luma));
    }
    let need = w * h * if grey { 1 } else { 3 };
    out.resize(need, 0);
    dec.decode_into(out)
        .map_err(|e| ConvertError::Jpeg(format!("{e:?}")))?;
    Ok(grey)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of the given size filled with a marker value, so tests see
    /// which bytes the converter wrote.
    fn out(w: u32, h: u32) -> I420Frame {
        let mut f = I420Frame::black(w, h);
        f.data.fill(0xEE);
        f
    }

    /// Pixel (x, y) of a synthetic picture: distinct Y per pixel, distinct
    /// chroma per 2x2 block... with row-varying chroma for formats that carry
    /// chroma on every row.
    fn luma_at(x: usize, y: usize) -> u8 {
        ((x * 7 + y * 13) % 220 + 16) as u8
    }
    fn cb_at(x: usize, y: usize) -> u8 {
        ((x * 5 + y * 3) % 200 + 20) as u8
    }
    fn cr_at(x: usize, y: usize) -> u8 {
        ((x * 11 + y * 17) % 200 + 30) as u8
    }

    #[test]
    fn yuyv_splits_luma_and_averages_chroma_rows() {
        let (w, h, stride) = (8usize, 4usize, 20usize); // 4 bytes of row padding
        let mut src = vec![0x55u8; stride * h];
        for y in 0..h {
            for px in 0..w / 2 {
                let o = y * stride + px * 4;
                src[o] = luma_at(2 * px, y);
                src[o + 1] = cb_at(px, y);
                src[o + 2] = luma_at(2 * px + 1, y);
                src[o + 3] = cr_at(px, y);
            }
        }
        let mut f = out(w as u32, h as u32);
        yuyv_to_i420(&src, stride, &mut f).unwrap();
        let (yp, u, v) = f.planes();
        for y in 0..h {
            for x in 0..w {
                assert_eq!(yp[y * w + x], luma_at(x, y), "Y({x},{y})");
            }
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let eu = avg2(cb_at(cx, 2 * cy), cb_at(cx, 2 * cy + 1));
                let ev = avg2(cr_at(cx, 2 * cy), cr_at(cx, 2 * cy + 1));
                assert_eq!(u[cy * w / 2 + cx], eu, "U({cx},{cy})");
                assert_eq!(v[cy * w / 2 + cx], ev, "V({cx},{cy})");
            }
        }
        // The last row needs no padding after it.
        yuyv_to_i420(&src[..stride * (h - 1) + 2 * w], stride, &mut f).unwrap();
    }

    #[test]
    fn yuyv_rejects_short_buffers_and_small_strides() {
        let mut f = out(8, 4);
        let e = yuyv_to_i420(&[0u8; 63], 16, &mut f).unwrap_err();
        assert!(
            matches!(e, ConvertError::Short { got: 63, need: 64 }),
            "{e}"
        );
        let e = yuyv_to_i420(&[0u8; 64], 15, &mut f).unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::Stride {
                    stride: 15,
                    row: 16
                }
            ),
            "{e}"
        );
        assert!(yuyv_to_i420(&[0u8; 64], 0, &mut f).is_ok(), "0 = packed");
    }

    #[test]
    fn nv12_deinterleaves_chroma_with_padding() {
        let (w, h, stride) = (6usize, 4usize, 8usize);
        let mut src = vec![0x99u8; stride * h + stride * h / 2];
        for y in 0..h {
            for x in 0..w {
                src[y * stride + x] = luma_at(x, y);
            }
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                src[stride * h + cy * stride + 2 * cx] = cb_at(cx, cy);
                src[stride * h + cy * stride + 2 * cx + 1] = cr_at(cx, cy);
            }
        }
        let mut f = out(w as u32, h as u32);
        nv12_to_i420(&src, stride, &mut f).unwrap();
        let (yp, u, v) = f.planes();
        for y in 0..h {
            for x in 0..w {
                assert_eq!(yp[y * w + x], luma_at(x, y));
            }
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                assert_eq!(u[cy * 3 + cx], cb_at(cx, cy));
                assert_eq!(v[cy * 3 + cx], cr_at(cx, cy));
            }
        }
        let need = stride * h + stride + w;
        let e = nv12_to_i420(&src[..need - 1], stride, &mut f).unwrap_err();
        assert!(matches!(e, ConvertError::Short { .. }), "{e}");
        assert!(nv12_to_i420(&src[..need], stride, &mut f).is_ok());
    }

    #[test]
    fn yu12_copies_planes_and_drops_row_padding() {
        let (w, h, stride) = (8usize, 4usize, 12usize);
        let cs = stride / 2;
        let mut src = vec![0x77u8; stride * h + 2 * cs * h / 2];
        for y in 0..h {
            for x in 0..w {
                src[y * stride + x] = luma_at(x, y);
            }
        }
        let (uo, vo) = (stride * h, stride * h + cs * h / 2);
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                src[uo + cy * cs + cx] = cb_at(cx, cy);
                src[vo + cy * cs + cx] = cr_at(cx, cy);
            }
        }
        let mut f = out(w as u32, h as u32);
        yu12_to_i420(&src, stride, &mut f).unwrap();
        let (yp, u, v) = f.planes();
        for y in 0..h {
            for x in 0..w {
                assert_eq!(yp[y * w + x], luma_at(x, y));
            }
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                assert_eq!(u[cy * 4 + cx], cb_at(cx, cy));
                assert_eq!(v[cy * 4 + cx], cr_at(cx, cy));
            }
        }
        // Packed input (stride == width) is a straight copy.
        let mut packed = Vec::new();
        packed.extend_from_slice(yp);
        packed.extend_from_slice(u);
        packed.extend_from_slice(v);
        let mut g = out(w as u32, h as u32);
        yu12_to_i420(&packed, w, &mut g).unwrap();
        assert_eq!(g.data, f.data);
        assert!(yu12_to_i420(&packed[..packed.len() - 1], w, &mut g).is_err());
    }

    #[test]
    fn odd_or_mismatched_output_is_refused() {
        let mut odd = I420Frame {
            width: 7,
            height: 4,
            data: vec![0; 7 * 4 * 3 / 2],
            capture_us: 0,
            seq: 0,
        };
        let e = yuyv_to_i420(&[0u8; 1000], 0, &mut odd).unwrap_err();
        assert!(matches!(
            e,
            ConvertError::BadSize {
                width: 7,
                height: 4
            }
        ));
        let mut short = I420Frame::black(8, 4);
        short.data.truncate(10);
        let e = nv12_to_i420(&[0u8; 1000], 0, &mut short).unwrap_err();
        assert!(matches!(e, ConvertError::OutputSize { .. }), "{e}");
    }

    /// Encodes a YCbCr (full range) picture as a baseline JPEG.
    fn jpeg(w: u16, h: u16, ycbcr: &[u8], sampling: jpeg_encoder::SamplingFactor) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut buf, 100);
        enc.set_sampling_factor(sampling);
        enc.set_optimized_huffman_tables(false);
        enc.encode(ycbcr, w, h, jpeg_encoder::ColorType::Ycbcr)
            .unwrap();
        buf
    }

    /// Two flat halves: left (Y, Cb, Cr) = (200, 60, 180), right (40, 170, 100).
    fn halves(w: usize, h: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(w * h * 3);
        for _y in 0..h {
            for x in 0..w {
                p.extend_from_slice(if x < w / 2 {
                    &[200, 60, 180]
                } else {
                    &[40, 170, 100]
                });
            }
        }
        p
    }

    fn limited_y(v: u8) -> i32 {
        16 + (i32::from(v) * 219 + 127) / 255
    }
    fn limited_c(v: u8) -> i32 {
        16 + (i32::from(v) * 224 + 127) / 255
    }

    fn assert_halves(f: &I420Frame) {
        let (w, h) = (f.width as usize, f.height as usize);
        let (y, u, v) = f.planes();
        let near = |got: u8, want: i32, what: &str| {
            assert!(
                (i32::from(got) - want).abs() <= 2,
                "{what}: got {got}, want {want}"
            );
        };
        // Away from the edge between the halves (JPEG blurs a block or two).
        for row in 0..h {
            near(y[row * w + 2], limited_y(200), "left Y");
            near(y[row * w + w - 3], limited_y(40), "right Y");
        }
        for row in 0..h / 2 {
            near(u[row * w / 2 + 1], limited_c(60), "left U");
            near(v[row * w / 2 + 1], limited_c(180), "left V");
            near(u[row * w / 2 + w / 2 - 2], limited_c(170), "right U");
            near(v[row * w / 2 + w / 2 - 2], limited_c(100), "right V");
        }
    }

    #[test]
    fn mjpeg_420_and_422_decode_to_limited_range_i420() {
        use jpeg_encoder::SamplingFactor;
        let (w, h) = (64usize, 32usize);
        for sampling in [
            SamplingFactor::R_4_2_0,
            SamplingFactor::R_4_2_2,
            SamplingFactor::R_4_4_4,
        ] {
            let data = jpeg(w as u16, h as u16, &halves(w, h), sampling);
            let mut f = out(w as u32, h as u32);
            let mut dec = MjpegDecoder::new();
            dec.decode_into(&data, &mut f).unwrap();
            assert_halves(&f);
        }
    }

    /// Removes every DHT segment, as MJPEG cameras do.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while i + 4 <= jpeg.len() {
            let marker = jpeg[i + 1];
            let len = usize::from(jpeg[i + 2]) << 8 | usize::from(jpeg[i + 3]);
            if marker == 0xDA {
                out.extend_from_slice(&jpeg[i..]);
                return out;
            }
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        panic!("test JPEG has no SOS");
    }

    #[test]
    fn mjpeg_without_huffman_tables_uses_the_standard_ones() {
        let (w, h) = (64usize, 32usize);
        let full = jpeg(
            w as u16,
            h as u16,
            &halves(w, h),
            jpeg_encoder::SamplingFactor::R_4_2_2,
        );
        let bare = strip_dht(&full);
        assert!(bare.len() < full.len() - 100, "DHT segments were removed");
        assert!(!bare.windows(2).any(|m| m == [0xFF, 0xC4]), "no DHT left");
        let mut f = out(w as u32, h as u32);
        MjpegDecoder::new().decode_into(&bare, &mut f).unwrap();
        assert_halves(&f);
    }

    #[test]
    fn mjpeg_greyscale_has_neutral_chroma() {
        let (w, h) = (32u16, 16u16);
        let grey: Vec<u8> = (0..usize::from(w) * usize::from(h))
            .map(|i| if i % 32 < 16 { 255 } else { 0 })
            .collect();
        let mut buf = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut buf, 100);
        enc.encode(&grey, w, h, jpeg_encoder::ColorType::Luma)
            .unwrap();
        let mut f = out(32, 16);
        MjpegDecoder::new().decode_into(&buf, &mut f).unwrap();
        let (y, u, v) = f.planes();
        assert!(
            (i32::from(y[2]) - 235).abs() <= 2,
            "white -> 235, got {}",
            y[2]
        );
        assert!(
            (i32::from(y[29]) - 16).abs() <= 2,
            "black -> 16, got {}",
            y[29]
        );
        assert!(u.iter().chain(v.iter()).all(|&c| c == 128));
    }

    #[test]
    fn mjpeg_errors_are_reported_not_panicked() {
        let (w, h) = (64usize, 32usize);
        let good = jpeg(
            w as u16,
            h as u16,
            &halves(w, h),
            jpeg_encoder::SamplingFactor::R_4_2_0,
        );
        let mut dec = MjpegDecoder::new();

        let mut f = out(64, 32);
        assert!(matches!(
            dec.decode_into(b"hello world", &mut f),
            Err(ConvertError::NotJpeg)
        ));
        assert!(matches!(
            dec.decode_into(&[], &mut f),
            Err(ConvertError::NotJpeg)
        ));

        let mut wrong = out(32, 32);
        let e = dec.decode_into(&good, &mut wrong).unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::JpegSize {
                    got_w: 64,
                    got_h: 32,
                    ..
                }
            ),
            "{e}"
        );

        // Truncations and corruptions anywhere: an error or a picture, never a panic.
        for cut in (4..good.len()).step_by(7) {
            let _ = dec.decode_into(&good[..cut], &mut f);
        }
        let mut state = 7u32;
        for _ in 0..200 {
            let mut bad = good.clone();
            for _ in 0..4 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = 2 + (state as usize >> 8) % (bad.len() - 2);
                bad[i] = (state >> 24) as u8;
            }
            let _ = dec.decode_into(&bad, &mut f);
        }
        // The decoder still works after all that.
        dec.decode_into(&good, &mut f).unwrap();
        assert_halves(&f);
    }
}
