//! Cuts a child's stdout byte stream into frames, without trusting it:
//! every buffer is bounded, and garbage is skipped, never a panic.
//!
//! - raw I420/NV12: fixed-size frames of `w*h*3/2` bytes;
//! - MJPEG: JPEG images from SOI (`FF D8`) to EOI (`FF D9`);
//! - H.264 Annex B: access units (all NAL units of one picture, with the
//!   SPS/PPS/SEI before it). An access unit is known to be complete when
//!   the next one starts, so this costs one frame interval of latency
//!   unless the stream carries access unit delimiters (then none).

/// Longest MJPEG image or H.264 access unit accepted (bytes). A stream that
/// goes further without a boundary is resynchronised.
pub const MAX_UNIT: usize = 8 * 1024 * 1024;

/// Which cutter to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Fixed-size frames of this many bytes.
    Fixed(usize),
    Jpeg,
    AnnexB,
}

/// The stream cutter: `push` bytes in, take complete units out.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    buf: Vec<u8>,
    /// Start of the current unit in `buf` (Jpeg: SOI found; AnnexB: the
    /// access unit's first start code).
    unit_start: Option<usize>,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// AnnexB: the current access unit has a picture (VCL NAL) already.
    has_vcl: bool,
    /// Bytes thrown away while resynchronising.
    pub discarded: u64,
}

impl Framer {
    pub fn new(framing: Framing) -> Self {
        Framer {
            framing,
            buf: Vec::new(),
            unit_start: None,
            scanned: 0,
            has_vcl: false,
            discarded: 0,
        }
    }

    /// Appends bytes and returns every unit they complete, in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let out = match self.framing {
            Framing::Fixed(n) => self.cut_fixed(n),
            Framing::Jpeg => self.cut_jpeg(),
            Framing::AnnexB => self.cut_annexb(),
        };
        if self.buf.len() > MAX_UNIT + data.len() {
            // No boundary in far too much data: start over.
            self.discarded += self.buf.len() as u64;
            self.buf.clear();
            self.unit_start = None;
            self.scanned = 0;
            self.has_vcl = false;
        }
        out
    }

    /// At end of stream: the last H.264 access unit (it has no successor to
    /// mark its end). Raw and JPEG leftovers are incomplete and dropped.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let unit = match (self.framing, self.unit_start) {
            (Framing::AnnexB, Some(s)) if self.has_vcl => Some(self.buf[s..].to_vec()),
            _ => None,
        };
        *self = Framer {
            discarded: self.discarded,
            ..Framer::new(self.framing)
        };
        unit
    }

    fn cut_fixed(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while n > 0 && self.buf.len() >= n {
            let rest = self.buf.split_off(n);
            out.push(std::mem::replace(&mut self.buf, rest));
        }
        out
    }

    fn cut_jpeg(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = self.scanned;
        while i + 1 < self.buf.len() {
            let (a, b) = (self.buf[i], self.buf[i + 1]);
            if a == 0xFF && b == 0xD8 && self.unit_start.is_none() {
                self.unit_start = Some(i);
                i += 2;
                continue;
            }
            if a == 0xFF && b == 0xD9 {
                i += 2;
                if let Some(s) = self.unit_start.take() {
                    out.push(self.buf[s..i].to_vec());
                    self.discarded += s as u64;
                    self.buf.drain(..i);
                } else {
                    self.drop_front(i);
                }
                i = 0;
                continue;
            }
            i += 1;
        }
        if self.unit_start.is_none() {
            // Nothing started: keep only a possible half marker.
            let keep = usize::from(self.buf.last() == Some(&0xFF));
            self.drop_front(self.buf.len() - keep);
            i = 0;
        }
        self.scanned = i;
        out
    }

    /// Drops `buf[..n]`, counting bytes that were not part of a unit.
    fn drop_front(&mut self, n: usize) {
        let unit_bytes = self.unit_start.map_or(0, |s| n.saturating_sub(s));
        self.discarded += (n - unit_bytes.min(n)) as u64;
        self.buf.drain(..n);
        self.unit_start = self.unit_start.map(|s| s.saturating_sub(n));
    }

    fn cut_annexb(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        // A start code needs 3 bytes plus the NAL header byte.
        let mut i = self.scanned;
        while i + 3 < self.buf.len() {
            if !(self.buf[i] == 0 && self.buf[i + 1] == 0 && self.buf[i + 2] == 1) {
                i += 1;
                continue;
            }
            // Include a 4-byte start code's leading zero.
            let sc = if i > 0 && self.buf[i - 1] == 0 {
                i - 1
            } else {
                i
            };
            let header = self.buf[i + 3];
            let nal_type = header & 0x1F;
            let vcl = nal_type == 1 || nal_type == 5;
            // The slice header's first_mb_in_slice is ue(v): a leading 1
            // bit means 0, the first slice of a new picture.
            let first_slice = vcl && self.buf.get(i + 4).is_some_and(|b| b & 0x80 != 0);
            if vcl && self.buf.len() < i + 5 {
                break; // need one more byte to decide
            }
            let starts_new_unit = match self.unit_start {
                None => true,
                Some(_) if !self.has_vcl => false,
                Some(_) => matches!(nal_type, 6..=9) || first_slice,
            };
            if starts_new_unit {
                if let Some(s) = self.unit_start {
                    out.push(self.buf[s..sc].to_vec());
                } else if sc > 0 {
                    self.discarded += sc as u64;
                }
                self.buf.drain(..sc);
                i -= sc;
                self.unit_start = Some(0);
                self.has_vcl = false;
            }
            self.has_vcl |= vcl;
            i += 3;
        }
        if self.unit_start.is_none() {
            // A 4-byte start code whose NAL header has not arrived yet.
            let keep = self.buf.len().min(4);
            self.discarded += (self.buf.len() - keep) as u64;
            self.buf.drain(..self.buf.len() - keep);
            i = 0;
        }
        self.scanned = i;
        out
    }
}

/// The NAL unit types in an Annex B buffer, in order.
pub fn nal_units(annexb: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= annexb.len() {
        if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(annexb.len(), |n| n - 3);
        // Trailing zeros belong to the next 4-byte start code.
        while end > s && annexb[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > s {
            out.push(&annexb[s..end]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_in_pieces(f: &mut Framer, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        data.chunks(piece).flat_map(|c| f.push(c)).collect()
    }

    #[test]
    fn fixed_frames_come_out_whole_whatever_the_read_sizes() {
        let data: Vec<u8> = (0..60u8).collect();
        for piece in [1, 7, 15, 60] {
            let mut f = Framer::new(Framing::Fixed(15));
            let out = feed_in_pieces(&mut f, &data, piece);
            assert_eq!(out.len(), 4, "piece {piece}");
            assert_eq!(out[1], (15..30u8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn jpegs_are_cut_at_soi_and_eoi_and_garbage_is_skipped() {
        let a = [0xFF, 0xD8, 1, 2, 0xFF, 0x00, 3, 0xFF, 0xD9];
        let b = [0xFF, 0xD8, 9, 0xFF, 0xD9];
        let mut data = vec![7, 7, 0xFF];
        data.extend_from_slice(&a);
        data.extend_from_slice(&[5, 5]);
        data.extend_from_slice(&b);
        for piece in [1, 2, 3, 100] {
            let mut f = Framer::new(Framing::Jpeg);
            let out = feed_in_pieces(&mut f, &data, piece);
            assert_eq!(out, vec![a.to_vec(), b.to_vec()], "piece {piece}");
            assert_eq!(f.discarded, 5, "piece {piece}");
        }
    }

    fn nal(t: u8, first_slice: bool) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x60 | t];
        if t == 1 || t == 5 {
            v.push(if first_slice { 0x88 } else { 0x40 });
        }
        v.extend_from_slice(&[0x11, 0x22]);
        v
    }

    #[test]
    fn annexb_access_units_group_parameter_sets_with_their_picture() {
        let au1 = [nal(7, false), nal(8, false), nal(5, true), nal(5, false)].concat();
        let au2 = nal(1, true);
        let au3 = [nal(9, false), nal(1, true), nal(1, false)].concat();
        let au4 = [nal(6, false), nal(1, true)].concat();
        let data = [
            vec![0xAB],
            au1.clone(),
            au2.clone(),
            au3.clone(),
            au4.clone(),
        ]
        .concat();
        for piece in [1, 2, 5, 1000] {
            let mut f = Framer::new(Framing::AnnexB);
            let mut out = feed_in_pieces(&mut f, &data, piece);
            out.extend(f.finish());
            assert_eq!(
                out,
                vec![au1.clone(), au2.clone(), au3.clone(), au4.clone()],
                "piece {piece}"
            );
            assert_eq!(f.discarded, 1);
        }
    }

    #[test]
    fn an_endless_unit_is_dropped_not_buffered() {
        let mut f = Framer::new(Framing::Jpeg);
        f.push(&[0xFF, 0xD8]);
        let chunk = vec![0x55u8; 1024 * 1024];
        for _ in 0..10 {
            assert!(f.push(&chunk).is_empty());
        }
        assert!(f.buf.len() <= MAX_UNIT + chunk.len());
        assert!(f.discarded > 0);
        let out = f.push(&[0xFF, 0xD8, 1, 0xFF, 0xD9]);
        assert_eq!(out, vec![vec![0xFF, 0xD8, 1, 0xFF, 0xD9]]);
    }

    #[test]
    fn nal_units_are_listed() {
        let au = [nal(7, false), nal(8, false), nal(5, true)].concat();
        let types: Vec<u8> = nal_units(&au).iter().map(|n| n[0] & 0x1F).collect();
        assert_eq!(types, vec![7, 8, 5]);
    }
}
