//! Raw and encoded frame types shared by sources, encoders and sessions.

use bytes::Bytes;

/// A raw picture in I420 (YUV 4:2:0 planar): the full Y plane, then U, then V,
/// each tightly packed (strides = width, width/2, width/2). Width and height
/// are even.
#[derive(Clone, Debug)]
pub struct I420Frame {
    pub width: u32,
    pub height: u32,
    /// Y plane (width*height) followed by U and V (width/2*height/2 each).
    pub data: Vec<u8>,
    /// Capture time, microseconds of CLOCK_MONOTONIC (see `crate::clock`).
    pub capture_us: u64,
    /// Frame counter as produced by the source (starts at 0, +1 per frame).
    pub seq: u32,
}

impl I420Frame {
    /// A black frame of the given size.
    pub fn black(width: u32, height: u32) -> Self {
        let y = (width * height) as usize;
        let mut data = vec![16u8; y + y / 2];
        data[y..].fill(128);
        I420Frame {
            width,
            height,
            data,
            capture_us: 0,
            seq: 0,
        }
    }

    pub fn y_len(&self) -> usize {
        (self.width * self.height) as usize
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.y_len()]
    }

    pub fn y_mut(&mut self) -> &mut [u8] {
        let n = self.y_len();
        &mut self.data[..n]
    }

    /// (Y, U, V) planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let y = self.y_len();
        let c = y / 4;
        (
            &self.data[..y],
            &self.data[y..y + c],
            &self.data[y + c..y + 2 * c],
        )
    }

    /// Mutable (Y, U, V) planes.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let y = self.y_len();
        let c = y / 4;
        let (ys, rest) = self.data.split_at_mut(y);
        let (us, vs) = rest.split_at_mut(c);
        (ys, us, &mut vs[..c])
    }
}

/// One encoded H.264 access unit in Annex B form (start codes included),
/// shared by every session through an `Arc`.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    pub data: Bytes,
    /// True for an IDR access unit (SPS and PPS included before it).
    pub keyframe: bool,
    /// Capture time of the raw frame, microseconds of CLOCK_MONOTONIC.
    pub capture_us: u64,
    /// Source frame counter of the raw frame.
    pub seq: u32,
    /// Nominal frame duration in microseconds (1e6 / fps).
    pub duration_us: u64,
}
