//! H.264 decoding with openh264, for the viewer client and tests. Only the
//! luma plane is kept: it is what the frame stamp lives in.

use super::EncodeError;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

/// A decoded picture's luma plane, tightly packed (stride == width).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedPicture {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
}

/// An openh264 decoder fed whole Annex B access units.
pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, EncodeError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| EncodeError::Decoder(format!("cannot create the decoder: {e}")))?;
        Ok(H264Decoder { decoder })
    }

    /// Decodes one access unit (one or more NAL units with start codes).
    /// `Ok(None)` when it completes no picture (parameter sets only, or
    /// empty input); an error when the data is not decodable, after which
    /// the decoder needs the next IDR.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<DecodedPicture>, EncodeError> {
        if annexb.is_empty() {
            // openh264 reads a zero length as "end of stream".
            return Ok(None);
        }
        if i32::try_from(annexb.len()).is_err() {
            return Err(EncodeError::Decoder(format!(
                "access unit of {} bytes is too large",
                annexb.len()
            )));
        }
        match self.decoder.decode(annexb) {
            Ok(Some(yuv)) => Ok(copy_luma(&yuv)),
            Ok(None) => Ok(None),
            Err(e) => Err(EncodeError::Decoder(e.to_string())),
        }
    }
}

/// Copies the luma plane row by row (openh264 pads its rows). `None` if the
/// decoder reports a geometry its buffer cannot hold.
fn copy_luma(yuv: &DecodedYUV<'_>) -> Option<DecodedPicture> {
    let (w, h) = yuv.dimensions();
    let stride = yuv.strides().0;
    let src = yuv.y();
    if w == 0 || h == 0 || stride < w || src.len() < stride * (h - 1) + w {
        return None;
    }
    let mut y = Vec::with_capacity(w * h);
    for row in src.chunks(stride).take(h) {
        y.extend_from_slice(&row[..w]);
    }
    Some(DecodedPicture {
        width: u32::try_from(w).ok()?,
        height: u32::try_from(h).ok()?,
        y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::h264::{EncoderSettings, H264Encoder};
    use crate::media::test_pattern::TestPattern;

    fn stream(n: u32) -> Vec<Vec<u8>> {
        let s = EncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate: 500_000,
            keyframe_interval: 0,
        };
        let mut enc = H264Encoder::new(&s).unwrap();
        let mut tp = TestPattern::new(320, 240, 30).unwrap();
        (0..n)
            .map(|i| {
                let raw = tp.render(i, u64::from(i) * 33_333);
                enc.encode(&raw, false).unwrap().unwrap().data.to_vec()
            })
            .collect()
    }

    #[test]
    fn decodes_a_stream_to_packed_luma() {
        let mut dec = H264Decoder::new().unwrap();
        let mut tp = TestPattern::new(320, 240, 30).unwrap();
        for (i, au) in stream(5).iter().enumerate() {
            let pic = dec
                .decode(au)
                .unwrap()
                .expect("one picture per access unit");
            assert_eq!((pic.width, pic.height, pic.y.len()), (320, 240, 320 * 240));
            // The stamp band (16 rows of 16/235 cells) proves rows are not skewed.
            let raw = tp.render(i as u32, i as u64 * 33_333);
            let row_err = |r: usize| -> u32 {
                (0..320)
                    .map(|x| u32::from(pic.y[r * 320 + x].abs_diff(raw.y()[r * 320 + x])))
                    .sum::<u32>()
                    / 320
            };
            assert!(row_err(8) < 8 && row_err(200) < 8, "frame {i}");
        }
    }

    #[test]
    fn empty_input_is_no_picture() {
        let mut dec = H264Decoder::new().unwrap();
        assert_eq!(dec.decode(&[]).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let mut dec = H264Decoder::new().unwrap();
        let mut state = 99u32;
        let mut rnd = move || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        };
        for len in [1usize, 3, 4, 5, 17, 100, 1000, 5000] {
            let junk: Vec<u8> = (0..len).map(|_| rnd()).collect();
            let _ = dec.decode(&junk);
            let mut with_start = vec![0, 0, 0, 1];
            with_start.extend_from_slice(&junk);
            let _ = dec.decode(&with_start);
        }
        // A P frame without its IDR cannot make a picture.
        let s = stream(3);
        let mut fresh = H264Decoder::new().unwrap();
        assert!(!matches!(fresh.decode(&s[2]), Ok(Some(_))));

        // Corrupted real access units, then the decoder recovers on an IDR.
        for round in 0..50 {
            let mut au = s[round % 3].clone();
            for _ in 0..8 {
                let i = 4 + usize::from(rnd()) * 7 % (au.len() - 4);
                au[i] = rnd();
            }
            let _ = dec.decode(&au);
            let _ = dec.decode(&au[..au.len() / 2]);
        }
        let mut after = H264Decoder::new().unwrap();
        let pic = after.decode(&s[0]).unwrap().expect("an IDR decodes");
        assert_eq!(pic.width, 320);
        let again = dec.decode(&s[0]);
        assert!(
            matches!(again, Ok(Some(_))),
            "the battered decoder recovers on an IDR: {again:?}"
        );
    }
}
