//! Asks the viewer to show video on arrival: the playout-delay RTP header
//! extension with min = max = 0 on every video packet the device sends.
//!
//! Chromium offers the extension and, when a stream carries it with a zero
//! maximum, renders each frame as soon as it is decoded instead of holding
//! it in its jitter buffer (~20 ms on a loopback link). The extension is
//! registered only for the device's media engine, so it is negotiated only
//! when the offer has it; this interceptor learns the negotiated id per
//! stream when the stream is bound and adds nothing to a stream without one
//! (audio, or an offer without the extension).

use bytes::Bytes;
use rtc::interceptor::{Interceptor, Packet, RTPHeaderExtension, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use tracing::debug;

/// The extension's URI, as offers name it.
pub const URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// Interceptor slot: after every default interceptor, so NACK
/// retransmissions (buffered nearer the wire) carry the extension too.
pub const SLOT: usize = 15_000;

/// The extension's payload: 12 bits of minimum and 12 bits of maximum
/// delay in 10 ms units, both zero.
pub const ZERO_DELAY: [u8; 3] = [0, 0, 0];

/// The negotiated one-byte id of the extension among a stream's extensions,
/// if it is a video stream that negotiated it with a usable id.
pub fn negotiated_id(info: &StreamInfo) -> Option<u8> {
    if !info.mime_type.to_ascii_lowercase().starts_with("video/") {
        return None;
    }
    extension_id(&info.rtp_header_extensions)
}

/// The id of the playout-delay extension in `exts`, if present and in the
/// one-byte range webrtc-rs writes (1..=14).
pub fn extension_id(exts: &[RTPHeaderExtension]) -> Option<u8> {
    exts.iter()
        .find(|e| e.uri == URI)
        .and_then(|e| u8::try_from(e.id).ok())
        .filter(|id| (1..=14).contains(id))
}

/// See the module documentation.
#[derive(Default)]
pub struct PlayoutDelayZero {
    /// Local (sent) video SSRC -> negotiated extension id.
    streams: HashMap<u32, u8>,
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
}

impl PlayoutDelayZero {
    /// How many local streams get the extension (for tests).
    pub fn stamped_streams(&self) -> usize {
        self.streams.len()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PlayoutDelayZero {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inbound.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            if let Some(&id) = self.streams.get(&p.header.ssrc) {
                // Only fails for an id outside the header's range, which
                // `extension_id` excludes: the packet then goes as it is.
                if let Err(e) = p.header.set_extension(id, Bytes::from_static(&ZERO_DELAY)) {
                    debug!("playout-delay not added: {e}");
                }
            }
        }
        self.outbound.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.outbound.pop_front()
    }
}

impl Interceptor for PlayoutDelayZero {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(id) = negotiated_id(info) {
            self.streams.insert(info.ssrc, id);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    fn ext(uri: &str, id: u16) -> RTPHeaderExtension {
        RTPHeaderExtension {
            uri: uri.to_owned(),
            id,
        }
    }

    fn stream(ssrc: u32, mime: &str, exts: Vec<RTPHeaderExtension>) -> StreamInfo {
        StreamInfo {
            ssrc,
            mime_type: mime.to_owned(),
            rtp_header_extensions: exts,
            ..Default::default()
        }
    }

    fn rtp(ssrc: u32) -> TaggedPacket {
        let mut p = rtc::rtp::Packet::default();
        p.header.ssrc = ssrc;
        p.header.version = 2;
        p.payload = Bytes::from_static(&[1, 2, 3]);
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket {
                attributes: vec![],
                packet: Packet::Rtp(p),
            },
        }
    }

    fn sent(i: &mut PlayoutDelayZero, ssrc: u32) -> rtc::rtp::Packet {
        i.handle_write(rtp(ssrc)).expect("write");
        match i.poll_write().expect("packet passes").message.packet {
            Packet::Rtp(p) => p,
            other => panic!("not RTP: {other:?}"),
        }
    }

    #[test]
    fn finds_the_negotiated_id_only_in_the_one_byte_range() {
        let other = ext("urn:ietf:params:rtp-hdrext:sdes:mid", 4);
        assert_eq!(extension_id(&[other.clone(), ext(URI, 9)]), Some(9));
        assert_eq!(extension_id(&[other]), None);
        assert_eq!(extension_id(&[ext(URI, 15)]), None);
        assert_eq!(extension_id(&[ext(URI, 0)]), None);
    }

    #[test]
    fn only_video_streams_that_negotiated_it_are_stamped() {
        assert_eq!(
            negotiated_id(&stream(1, "video/H264", vec![ext(URI, 6)])),
            Some(6)
        );
        assert_eq!(
            negotiated_id(&stream(1, "video/VP8", vec![ext(URI, 6)])),
            Some(6)
        );
        assert_eq!(
            negotiated_id(&stream(2, "audio/opus", vec![ext(URI, 6)])),
            None
        );
        assert_eq!(negotiated_id(&stream(3, "video/H264", vec![])), None);
    }

    #[test]
    fn bound_video_gets_a_zero_delay_and_other_streams_nothing() {
        let mut i = PlayoutDelayZero::default();
        i.bind_local_stream(&stream(10, "video/H264", vec![ext(URI, 5)]));
        i.bind_local_stream(&stream(11, "audio/opus", vec![ext(URI, 5)]));
        i.bind_local_stream(&stream(12, "video/VP8", vec![]));
        assert_eq!(i.stamped_streams(), 1);

        let p = sent(&mut i, 10);
        assert_eq!(p.header.get_extension(5).as_deref(), Some(&ZERO_DELAY[..]));
        assert_eq!(p.payload.as_ref(), &[1, 2, 3]);
        for ssrc in [11, 12, 13] {
            assert!(sent(&mut i, ssrc).header.get_extension(5).is_none());
        }

        i.unbind_local_stream(&stream(10, "video/H264", vec![ext(URI, 5)]));
        assert!(sent(&mut i, 10).header.get_extension(5).is_none());
    }

    #[test]
    fn reads_pass_untouched() {
        let mut i = PlayoutDelayZero::default();
        i.bind_local_stream(&stream(10, "video/H264", vec![ext(URI, 5)]));
        i.handle_read(rtp(10)).expect("read");
        match i.poll_read().expect("passes").message.packet {
            Packet::Rtp(p) => assert!(p.header.get_extension(5).is_none()),
            other => panic!("not RTP: {other:?}"),
        }
    }
}
