//! Reassembles H.264 access units (or VP8 frames) from RTP packets (the
//! viewer side).

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Reassembles H.264 access units.
pub type AccessUnitAssembler = FrameAssembler<H264Packet>;
/// Reassembles VP8 frames.
pub type Vp8FrameAssembler = FrameAssembler<Vp8Packet>;

/// Collects depacketized payloads until the RTP marker bit ends a frame.
#[derive(Default)]
pub struct FrameAssembler<D: Depacketizer + Default> {
    depacketizer: D,
    current: BytesMut,
    current_ts: Option<u32>,
    last_seq: Option<u16>,
    /// Packets lost (sequence gaps) so far.
    pub lost_packets: u64,
    broken: bool,
}

impl<D: Depacketizer + Default> FrameAssembler<D> {
    /// Feeds one RTP packet; returns a complete Annex B access unit when the
    /// frame ends. A frame that lost a packet is dropped (the decoder would
    /// only produce garbage from it).
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
    ) -> Option<Bytes> {
        let gap = match self.last_seq {
            Some(prev) => {
                let gap = seq.wrapping_sub(prev);
                if gap == 0 || gap > 0x8000 {
                    return None; // duplicate, or late after reordering
                }
                gap
            }
            None => 1,
        };
        self.last_seq = Some(seq);
        if self.current_ts != Some(timestamp) {
            // A new frame; whatever was left of the previous one never saw its marker.
            self.current.clear();
            self.current_ts = Some(timestamp);
            self.broken = false;
            self.depacketizer = D::default();
        }
        if gap > 1 {
            self.lost_packets += u64::from(gap - 1);
            self.broken = true;
        }
        match self.depacketizer.depacketize(payload) {
            Ok(nals) => self.current.extend_from_slice(&nals),
            Err(_) => self.broken = true,
        }
        if !marker {
            return None;
        }
        let au = std::mem::take(&mut self.current).freeze();
        self.current_ts = None;
        let broken = std::mem::replace(&mut self.broken, false);
        if broken || au.is_empty() {
            None
        } else {
            Some(au)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single_nal(nal: &[u8]) -> Bytes {
        Bytes::copy_from_slice(nal)
    }

    #[test]
    fn single_nal_frames_come_out_with_start_codes() {
        let mut a = AccessUnitAssembler::default();
        assert!(a.push(1, 100, false, &single_nal(&[0x67, 1, 2])).is_none());
        let au = a.push(2, 100, true, &single_nal(&[0x65, 9, 9])).unwrap();
        assert_eq!(&au[..], &[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 9, 9]);
    }

    #[test]
    fn vp8_frames_are_joined_from_their_packets() {
        let mut a = Vp8FrameAssembler::default();
        // Payload descriptor: S=1 (start of partition) on the first packet,
        // then a continuation; the frame ends at the marker.
        let first = Bytes::from_static(&[0x10, 0xaa, 0xbb, 0xbc]);
        let rest = Bytes::from_static(&[0x00, 0xcc, 0xcd, 0xce]);
        assert!(a.push(7, 900, false, &first).is_none());
        let frame = a.push(8, 900, true, &rest).unwrap();
        assert_eq!(&frame[..], &[0xaa, 0xbb, 0xbc, 0xcc, 0xcd, 0xce]);
    }

    #[test]
    fn a_frame_with_a_lost_packet_is_dropped_and_the_next_one_is_kept() {
        let mut a = AccessUnitAssembler::default();
        assert!(a.push(1, 100, false, &single_nal(&[0x67, 1])).is_none());
        assert!(a.push(3, 100, true, &single_nal(&[0x65, 2])).is_none());
        assert_eq!(a.lost_packets, 1);
        assert!(a.push(4, 200, true, &single_nal(&[0x41, 3, 4])).is_some());
    }
}
