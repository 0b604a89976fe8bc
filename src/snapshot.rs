//! Still pictures: the latest raw frame as a JPEG, made on demand.
//!
//! The video pipeline keeps its latest raw frame (moved, not copied, into a
//! slot after each frame: see `VideoPipeline::latest_frame`), so nothing is
//! encoded while nobody asks. A request takes that frame, scales it to the
//! asked width (nearest neighbour: cheap; the frame stamp is only readable
//! at full size, its band being 16 rows), converts BT.601 video range to JPEG's full range on the
//! way, and encodes it with the `jpeg-encoder` crate on a blocking thread.
//! At most [`MAX_CONCURRENT`] encodes run at once; a request beyond that is
//! refused at once ([`SnapshotError::Busy`]) rather than queued, so a burst
//! of requests costs neither memory nor a backlog of CPU work.
//!
//! Served as `GET /snapshot.jpg` (`web`), the `video.snapshot` data-channel
//! method (`control::rpc`) and the Home Assistant camera image
//! (`homeassistant`).

use crate::media::I420Frame;
use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Encodes running at once; more are refused with [`SnapshotError::Busy`].
pub const MAX_CONCURRENT: usize = 2;
/// JPEG quality (1..=100) of every snapshot.
pub const QUALITY: u8 = 80;
/// Narrowest snapshot that may be asked for, pixels.
pub const MIN_WIDTH: u32 = 16;
/// A latest frame older than this is not served: the camera is gone.
pub const MAX_FRAME_AGE_US: u64 = 5_000_000;

/// Why there is no snapshot.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The asked width is out of range or not a number.
    #[error("width must be a whole number from {MIN_WIDTH} to {max}")]
    BadWidth { max: u32 },
    /// [`MAX_CONCURRENT`] snapshots are being made already.
    #[error("too many snapshots at once; try again shortly")]
    Busy,
    /// No frame yet, or none for [`MAX_FRAME_AGE_US`].
    #[error("no recent video frame")]
    NoFrame,
    /// The encoder failed.
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// A JPEG of one frame.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The frame's source counter.
    pub seq: u32,
    /// The frame's capture time, CLOCK_MONOTONIC microseconds.
    pub capture_us: u64,
}

/// Where the latest raw frame comes from (the video pipeline).
pub trait LatestFrame: Send + Sync {
    fn latest_frame(&self) -> Option<Arc<I420Frame>>;
}

/// The daemon's pipeline, held weakly so that snapshots never keep it from
/// stopping.
impl LatestFrame for std::sync::Weak<crate::encode::pipeline::VideoPipeline> {
    fn latest_frame(&self) -> Option<Arc<I420Frame>> {
        self.upgrade()?.latest_frame()
    }
}

/// Makes snapshots from a frame source, a bounded number at a time.
pub struct Snapshotter {
    source: Arc<dyn LatestFrame>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("free_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Snapshotter {
    pub fn new(source: Arc<dyn LatestFrame>) -> Self {
        Snapshotter {
            source,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        }
    }

    /// The latest frame as a JPEG `width` pixels wide (`None`: the frame's
    /// own width), encoded on a blocking thread.
    pub async fn jpeg(&self, width: Option<u32>) -> Result<Snapshot, SnapshotError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| SnapshotError::Busy)?;
        let frame = self.fresh_frame()?;
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            encode(&frame, width, QUALITY)
        });
        job.await
            .map_err(|e| SnapshotError::Encode(e.to_string()))?
    }

    /// [`Snapshotter::jpeg`] on the calling thread (for callers outside a
    /// runtime, and tests).
    pub fn jpeg_blocking(&self, width: Option<u32>) -> Result<Snapshot, SnapshotError> {
        let _permit = self
            .permits
            .try_acquire()
            .map_err(|_| SnapshotError::Busy)?;
        let frame = self.fresh_frame()?;
        encode(&frame, width, QUALITY)
    }

    fn fresh_frame(&self) -> Result<Arc<I420Frame>, SnapshotError> {
        let frame = self.source.latest_frame().ok_or(SnapshotError::NoFrame)?;
        let age = crate::clock::monotonic_us().saturating_sub(frame.capture_us);
        if age > MAX_FRAME_AGE_US {
            return Err(SnapshotError::NoFrame);
        }
        Ok(frame)
    }
}

/// Parses a `width` query value against a frame `src_width` wide.
pub fn parse_width(text: &str, src_width: u32) -> Result<u32, SnapshotError> {
    let bad = SnapshotError::BadWidth { max: src_width };
    let w: u32 = text.trim().parse().map_err(|_| bad.clone())?;
    if !(MIN_WIDTH..=src_width).contains(&w) {
        return Err(bad);
    }
    Ok(w)
}

/// The output size for a `src_w`×`src_h` frame asked at `width`: the
/// aspect ratio kept, the height rounded to the nearest even number (at
/// least 2).
pub fn target_size(
    src_w: u32,
    src_h: u32,
    width: Option<u32>,
) -> Result<(u32, u32), SnapshotError> {
    let Some(w) = width else {
        return Ok((src_w, src_h));
    };
    if !(MIN_WIDTH..=src_w).contains(&w) {
        return Err(SnapshotError::BadWidth { max: src_w });
    }
    let h = (u64::from(src_h) * u64::from(w) + u64::from(src_w) / 2) / u64::from(src_w);
    let h = ((h as u32 + 1) & !1).max(2);
    Ok((w, h.min(src_h)))
}

/// Encodes `frame`, scaled to `width`, as a baseline 4:2:0 JPEG.
pub fn encode(
    frame: &I420Frame,
    width: Option<u32>,
    quality: u8,
) -> Result<Snapshot, SnapshotError> {
    let (w, h) = target_size(frame.width, frame.height, width)?;
    if frame.data.len() < frame.y_len() * 3 / 2
        || w > u32::from(u16::MAX)
        || h > u32::from(u16::MAX)
    {
        return Err(SnapshotError::Encode(
            "frame buffer does not match its size".into(),
        ));
    }
    let view = ScaledI420::new(frame, w, h);
    let mut jpeg = Vec::with_capacity((w * h / 4) as usize);
    let mut encoder = Encoder::new(&mut jpeg, quality);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode_image(view)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok(Snapshot {
        jpeg,
        width: w,
        height: h,
        seq: frame.seq,
        capture_us: frame.capture_us,
    })
}

/// Decodes a JPEG's luma plane: `(width, height, luma)`. For checking
/// snapshots (their size and frame stamp) in tests and benchmarks.
pub fn decode_luma(jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    let luma = dec.decode().map_err(|e| format!("{e:?}"))?;
    let info = dec.info().ok_or("no image information")?;
    Ok((u32::from(info.width), u32::from(info.height), luma))
}

/// Video-range (16..235 luma, 16..240 chroma) to full-range lookup tables.
struct RangeTables {
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl RangeTables {
    fn new() -> Self {
        let map = |v: usize, lo: f32, span: f32, centre: f32| {
            let x = (v as f32 - lo) * 255.0 / span + centre;
            x.round().clamp(0.0, 255.0) as u8
        };
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for v in 0..256 {
            luma[v] = map(v, 16.0, 219.0, 0.0);
            chroma[v] = map(v, 128.0, 224.0, 128.0);
        }
        RangeTables { luma, chroma }
    }
}

/// An I420 frame seen at another size, row by row, for the encoder.
struct ScaledI420<'a> {
    frame: &'a I420Frame,
    width: u16,
    height: u16,
    /// Source column of each output column.
    xs: Vec<usize>,
    tables: RangeTables,
}

impl<'a> ScaledI420<'a> {
    fn new(frame: &'a I420Frame, w: u32, h: u32) -> Self {
        let xs = (0..w)
            .map(|x| (u64::from(x) * u64::from(frame.width) / u64::from(w)) as usize)
            .collect();
        ScaledI420 {
            frame,
            width: w as u16,
            height: h as u16,
            xs,
            tables: RangeTables::new(),
        }
    }
}

impl ImageBuffer for ScaledI420<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let f = self.frame;
        let sy = (u64::from(y) * u64::from(f.height) / u64::from(self.height)) as usize;
        let (yp, up, vp) = f.planes();
        let (w, cw) = (f.width as usize, f.width as usize / 2);
        let row = &yp[sy * w..sy * w + w];
        let (urow, vrow) = (
            &up[(sy / 2) * cw..(sy / 2) * cw + cw],
            &vp[(sy / 2) * cw..(sy / 2) * cw + cw],
        );
        let t = &self.tables;
        for &sx in &self.xs {
            buffers[0].push(t.luma[usize::from(row[sx])]);
            buffers[1].push(t.chroma[usize::from(urow[sx / 2])]);
            buffers[2].push(t.chroma[usize::from(vrow[sx / 2])]);
        }
    }
}

#[cfg(test)]
mod tests;
