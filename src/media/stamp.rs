//! The frame stamp of docs/protocol.md#measuring-latency-the-frame-stamp.
//!
//! 64 bits live in the first 16 luma rows: the 32-bit frame counter, then the
//! 32-bit capture time in milliseconds of CLOCK_MONOTONIC. The band holds 64
//! cells of width floor(W/64), most significant bit first; a 1 is luma 235,
//! a 0 luma 16, and the chroma under the band (chroma rows 0..8) is 128.
//! Frames narrower than 256 pixels carry no stamp.
//!
//! The reader survives lossy compression: it averages only the middle of each
//! cell (rows 4..12, the centre half of the cell width), away from the block
//! edges where H.264 ringing and deblocking smear neighbouring cells, and
//! thresholds at 126 (midway between 16 and 235). A cell whose average is
//! nowhere near either level means there is no stamp, and reads as `None`.

use super::I420Frame;

/// Rows of luma the band occupies.
pub const BAND_ROWS: usize = 16;
/// Number of cells (bits) in the band.
pub const CELLS: usize = 64;
/// Narrowest frame that carries a stamp (4 pixels per cell).
pub const MIN_WIDTH: u32 = 256;
/// Luma of a 1 cell.
pub const ONE: u8 = 235;
/// Luma of a 0 cell.
pub const ZERO: u8 = 16;
/// Cell averages at or above this read as 1.
const THRESHOLD: u32 = 126;
/// Cell averages between these bounds are neither a clean 0 nor a clean 1:
/// the picture carries no stamp.
const AMBIGUOUS_LOW: u32 = 96;
const AMBIGUOUS_HIGH: u32 = 156;

fn cell_width(width: u32) -> usize {
    (width / CELLS as u32) as usize
}

/// Writes `counter` and `ms` into the band. Does nothing on frames narrower
/// than 256 pixels, shorter than 16 rows, or whose buffer is too short.
pub fn write_stamp(frame: &mut I420Frame, counter: u32, ms: u32) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    if frame.width < MIN_WIDTH || h < BAND_ROWS || frame.data.len() < w * h + w * h / 2 {
        return;
    }
    let cw = cell_width(frame.width);
    let bits = (u64::from(counter) << 32) | u64::from(ms);
    let (y, u, v) = frame.planes_mut();

    // Build the first row once, then copy it down the band.
    let (row0, rest) = y.split_at_mut(w);
    for (i, cell) in row0[..CELLS * cw].chunks_exact_mut(cw).enumerate() {
        let bit = (bits >> (CELLS - 1 - i)) & 1;
        cell.fill(if bit == 1 { ONE } else { ZERO });
    }
    // The few columns past the last cell are made black so that nothing
    // from the picture bleeds into the last cell after compression.
    row0[CELLS * cw..].fill(ZERO);
    for row in rest.chunks_exact_mut(w).take(BAND_ROWS - 1) {
        row.copy_from_slice(row0);
    }

    let cw2 = w / 2;
    u[..cw2 * (BAND_ROWS / 2)].fill(128);
    v[..cw2 * (BAND_ROWS / 2)].fill(128);
}

/// Reads `(counter, ms)` from a luma plane with the given row stride.
/// `None` when the frame is too small, the buffer too short, or the band does
/// not look like a stamp.
pub fn read_stamp(y: &[u8], stride: usize, width: u32, height: u32) -> Option<(u32, u32)> {
    if width < MIN_WIDTH || (height as usize) < BAND_ROWS || stride < width as usize {
        return None;
    }
    let needed = stride
        .checked_mul(BAND_ROWS - 1)?
        .checked_add(width as usize)?;
    if y.len() < needed {
        return None;
    }
    let cw = cell_width(width);
    // Centre half of the cell: at least one column even for 4-pixel cells.
    let x0 = cw / 4;
    let x1 = (cw - cw / 4).max(x0 + 1);
    let mut bits = 0u64;
    for cell in 0..CELLS {
        let left = cell * cw;
        let mut sum = 0u32;
        let mut n = 0u32;
        for row in 4..12 {
            let start = row * stride + left;
            for &px in &y[start + x0..start + x1] {
                sum += u32::from(px);
                n += 1;
            }
        }
        let mean = sum / n.max(1);
        if mean > AMBIGUOUS_LOW && mean < AMBIGUOUS_HIGH {
            return None;
        }
        bits = (bits << 1) | u64::from(mean >= THRESHOLD);
    }
    Some(((bits >> 32) as u32, bits as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::decode::H264Decoder;
    use crate::encode::h264::{EncoderSettings, H264Encoder};
    use crate::media::test_pattern::TestPattern;

    fn grey(width: u32, height: u32, luma: u8) -> I420Frame {
        let mut f = I420Frame::black(width, height);
        f.y_mut().fill(luma);
        let (_, u, v) = f.planes_mut();
        u.fill(90);
        v.fill(200);
        f
    }

    #[test]
    fn round_trip_at_several_widths() {
        let cases = [
            (256, 16, 0u32, 0u32),
            (320, 240, 1, u32::MAX),
            (640, 480, 0xDEAD_BEEF, 0x0123_4567),
            (1280, 720, u32::MAX, 0),
            (1918, 1080, 0x8000_0001, 0x7FFF_FFFE),
        ];
        for (w, h, counter, ms) in cases {
            let mut f = grey(w, h, 128);
            write_stamp(&mut f, counter, ms);
            assert_eq!(
                read_stamp(f.y(), w as usize, w, h),
                Some((counter, ms)),
                "{w}x{h}"
            );
        }
    }

    #[test]
    fn layout_matches_the_protocol() {
        // counter = 0x80000000 (only the first cell set), ms = 1 (only the last).
        let mut f = grey(640, 480, 128);
        write_stamp(&mut f, 0x8000_0000, 1);
        let cw = 10;
        let y = f.y();
        for row in 0..16 {
            let r = &y[row * 640..(row + 1) * 640];
            assert!(r[..cw].iter().all(|&p| p == 235), "first cell row {row}");
            assert!(r[cw..63 * cw].iter().all(|&p| p == 16), "middle row {row}");
            assert!(r[63 * cw..64 * cw].iter().all(|&p| p == 235), "last cell");
        }
        // Row 16 is untouched picture.
        assert!(y[16 * 640..17 * 640].iter().all(|&p| p == 128));
        let (_, u, v) = f.planes();
        assert!(u[..320 * 8].iter().all(|&p| p == 128));
        assert!(v[..320 * 8].iter().all(|&p| p == 128));
        assert_eq!(u[320 * 8], 90);
        assert_eq!(v[320 * 8], 200);
    }

    #[test]
    fn narrow_frames_carry_no_stamp() {
        let mut f = grey(254, 240, 77);
        let before = f.data.clone();
        write_stamp(&mut f, 5, 6);
        assert_eq!(f.data, before, "a frame under 256 wide must be left alone");
        assert_eq!(read_stamp(f.y(), 254, 254, 240), None);
    }

    #[test]
    fn reader_honours_stride_and_rejects_short_buffers() {
        let mut f = grey(320, 32, 128);
        write_stamp(&mut f, 42, 4242);
        let stride = 384;
        let mut padded = vec![128u8; stride * 32];
        for row in 0..32 {
            padded[row * stride..row * stride + 320]
                .copy_from_slice(&f.y()[row * 320..(row + 1) * 320]);
        }
        assert_eq!(read_stamp(&padded, stride, 320, 32), Some((42, 4242)));
        assert_eq!(read_stamp(&padded[..stride * 15], stride, 320, 32), None);
        assert_eq!(read_stamp(&padded, 100, 320, 32), None, "stride < width");
        assert_eq!(read_stamp(&padded, stride, 320, 8), None, "too short");
    }

    #[test]
    fn reader_tolerates_noise_and_rejects_unstamped_pictures() {
        let mut f = grey(640, 480, 128);
        write_stamp(&mut f, 0x1234_5678, 0x9ABC_DEF0);
        // Deterministic noise of +-40 on every band pixel.
        let mut state = 12345u32;
        for p in f.y_mut()[..640 * 16].iter_mut() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = ((state >> 16) % 81) as i32 - 40;
            *p = (i32::from(*p) + n).clamp(0, 255) as u8;
        }
        assert_eq!(
            read_stamp(f.y(), 640, 640, 480),
            Some((0x1234_5678, 0x9ABC_DEF0))
        );

        let plain = grey(640, 480, 128);
        assert_eq!(read_stamp(plain.y(), 640, 640, 480), None);
    }

    /// Encodes stamped test-pattern frames with the real openh264
    /// encoder, decodes them, and reads every stamp back.
    fn round_trip_through_h264(width: u32, height: u32, bitrate: u32) {
        let settings = EncoderSettings {
            width,
            height,
            fps: 30,
            bitrate,
            keyframe_interval: 60,
        };
        let mut enc = H264Encoder::new(&settings).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let mut pattern = TestPattern::new(width, height, 30).unwrap();
        let mut read = 0;
        for i in 0..40u32 {
            let mut raw = pattern.render(i, 1_000_000 + u64::from(i) * 33_333);
            // Counters and times with many bit transitions.
            let counter = i.wrapping_mul(0x9E37_79B9);
            let ms = 0xA5A5_0000 | i;
            write_stamp(&mut raw, counter, ms);
            let out = enc.encode(&raw, false).unwrap().expect("no frame skipping");
            let pic = dec
                .decode(&out.data)
                .unwrap()
                .expect("one access unit decodes to one picture");
            assert_eq!((pic.width, pic.height), (width, height));
            assert_eq!(
                read_stamp(&pic.y, pic.width as usize, pic.width, pic.height),
                Some((counter, ms)),
                "{width}x{height} frame {i}"
            );
            read += 1;
        }
        assert_eq!(read, 40);
    }

    #[test]
    fn round_trip_through_h264_640x480_at_1mbps() {
        round_trip_through_h264(640, 480, 1_000_000);
    }

    #[test]
    fn round_trip_through_h264_1280x720_at_1mbps() {
        round_trip_through_h264(1280, 720, 1_000_000);
    }

    #[test]
    fn round_trip_through_h264_1280x720_starved_at_200kbps() {
        // Worst cell means seen here: 189 for a 1, 54 for a 0.
        round_trip_through_h264(1280, 720, 200_000);
    }
}
