//! What an offer asks for, decided before any peer connection exists.
//!
//! docs/protocol.md#opening-a-session: garbage SDP is `bad_request`; an offer with nothing
//! the device can send (no H.264 packetization-mode=1 or VP8, no Opus, no data
//! channel) is `unsupported`. Deciding this up front keeps refused offers
//! cheap and leaves no peer connection behind.

use crate::encode::pipeline::VideoCodec;
use rtc::peer_connection::sdp::RTCSessionDescription;

/// Largest SDP the device will parse (bytes).
pub const MAX_SDP_LEN: usize = 32 * 1024;

/// The parts of an offer the device cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferSummary {
    /// There is a video section (port != 0).
    pub video: bool,
    /// The video section offers H.264 with packetization-mode=1.
    pub video_h264: bool,
    /// The profile-level-id of every such H.264 format (RFC 6184's default
    /// `42000a` where the offer names none), lower case.
    pub h264_profiles: Vec<String>,
    /// The video section offers VP8 (the fallback when there is no H.264).
    pub video_vp8: bool,
    /// There is an audio section (port != 0).
    pub audio: bool,
    /// The audio section offers Opus at 48 kHz.
    pub audio_opus: bool,
    /// There is an SCTP (data channel) section.
    pub data_channel: bool,
    /// `(kind, mid)` of every media section, in order.
    pub mids: Vec<(String, String)>,
}

/// Why an offer was refused before negotiation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP is {0} bytes, more than the {MAX_SDP_LEN} allowed")]
    TooLong(usize),
    #[error("SDP does not parse: {0}")]
    Syntax(String),
    #[error("the offer has no section the device can answer (needs H.264 packetization-mode=1 or VP8 video, Opus audio or a data channel)")]
    NothingToSend,
}

impl OfferSummary {
    /// The video codec to answer with: H.264 whenever offered (cheaper to
    /// encode, and what the device always encodes), else VP8.
    pub fn video_codec(&self) -> Option<VideoCodec> {
        if self.video_h264 {
            Some(VideoCodec::H264)
        } else if self.video_vp8 {
            Some(VideoCodec::Vp8)
        } else {
            None
        }
    }

    /// Parses `sdp` and summarises it.
    pub fn parse(sdp: &str) -> Result<OfferSummary, OfferError> {
        if sdp.trim().is_empty() {
            return Err(OfferError::Empty);
        }
        if sdp.len() > MAX_SDP_LEN {
            return Err(OfferError::TooLong(sdp.len()));
        }
        let desc = RTCSessionDescription::offer(sdp.to_owned())
            .map_err(|e| OfferError::Syntax(e.to_string()))?;
        let parsed = desc
            .unmarshal()
            .map_err(|e| OfferError::Syntax(e.to_string()))?;
        if parsed.media_descriptions.is_empty() {
            return Err(OfferError::Syntax("no media sections (m= lines)".into()));
        }
        let mut s = OfferSummary::default();
        for m in &parsed.media_descriptions {
            let rejected = m.media_name.port.value == 0;
            let rtpmaps: Vec<(&str, &str)> = m
                .attributes
                .iter()
                .filter(|a| a.key == "rtpmap")
                .filter_map(|a| a.value.as_deref())
                .filter_map(|v| v.split_once(' '))
                .collect();
            let fmtp_of = |pt: &str| -> Option<&str> {
                m.attributes
                    .iter()
                    .filter(|a| a.key == "fmtp")
                    .filter_map(|a| a.value.as_deref())
                    .find_map(|v| v.split_once(' ').filter(|(p, _)| *p == pt).map(|(_, f)| f))
            };
            if let Some(mid) = m
                .attributes
                .iter()
                .find(|a| a.key == "mid")
                .and_then(|a| a.value.clone())
            {
                s.mids.push((m.media_name.media.clone(), mid));
            }
            match m.media_name.media.as_str() {
                "video" if !rejected => {
                    s.video = true;
                    for (pt, codec) in &rtpmaps {
                        let Some(fmtp) = fmtp_of(pt) else { continue };
                        let mode1 = fmtp
                            .split(';')
                            .any(|kv| kv.trim().eq_ignore_ascii_case("packetization-mode=1"));
                        if codec.to_ascii_uppercase().starts_with("H264/90000") && mode1 {
                            s.video_h264 = true;
                            s.h264_profiles.push(fmtp_profile(fmtp));
                        }
                    }
                    s.video_vp8 |= rtpmaps
                        .iter()
                        .any(|(_, codec)| codec.to_ascii_uppercase().starts_with("VP8/90000"));
                }
                "audio" if !rejected => {
                    s.audio = true;
                    s.audio_opus |= rtpmaps
                        .iter()
                        .any(|(_, codec)| codec.to_ascii_lowercase().starts_with("opus/48000"));
                }
                "application" if !rejected => {
                    s.data_channel |= m
                        .media_name
                        .protos
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case("SCTP"));
                }
                _ => {}
            }
        }
        if !(s.video_h264 || s.video_vp8 || s.audio_opus || s.data_channel) {
            return Err(OfferError::NothingToSend);
        }
        Ok(s)
    }
}

/// The profile-level-id of an H.264 fmtp line (RFC 6184's default if absent).
fn fmtp_profile(fmtp: &str) -> String {
    fmtp.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("profile-level-id"))
        .map_or_else(|| "42000a".into(), |(_, v)| v.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    fn video(fmtp: &str, codec: &str) -> String {
        format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
             a=rtpmap:102 {codec}\r\na=fmtp:102 {fmtp}\r\n"
        )
    }

    #[test]
    fn h264_mode1_video_is_accepted() {
        let sdp = format!(
            "{HEAD}{}",
            video(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                "H264/90000"
            )
        );
        let s = OfferSummary::parse(&sdp).unwrap();
        assert!(s.video && s.video_h264 && !s.audio && !s.data_channel);
        assert_eq!(s.mids, [("video".to_owned(), "0".to_owned())]);
    }

    #[test]
    fn h264_mode0_only_is_unsupported() {
        let sdp = format!(
            "{HEAD}{}",
            video("packetization-mode=0;profile-level-id=42e01f", "H264/90000")
        );
        assert_eq!(OfferSummary::parse(&sdp), Err(OfferError::NothingToSend));
    }

    #[test]
    fn vp8_only_is_accepted_as_vp8() {
        let sdp = format!("{HEAD}{}", video("x=1", "VP8/90000"));
        let s = OfferSummary::parse(&sdp).unwrap();
        assert!(s.video && s.video_vp8 && !s.video_h264);
    }

    #[test]
    fn h264_is_preferred_when_both_are_offered() {
        let both = format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
             a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n"
        );
        let s = OfferSummary::parse(&both).unwrap();
        assert_eq!(s.video_codec(), Some(VideoCodec::H264));
        let vp8 = format!("{HEAD}{}", video("x=1", "VP8/90000"));
        let s = OfferSummary::parse(&vp8).unwrap();
        assert_eq!(s.video_codec(), Some(VideoCodec::Vp8));
        let audio = OfferSummary {
            audio_opus: true,
            ..Default::default()
        };
        assert_eq!(audio.video_codec(), None);
    }

    #[test]
    fn vp9_only_is_unsupported() {
        let sdp = format!("{HEAD}{}", video("profile-id=0", "VP9/90000"));
        assert_eq!(OfferSummary::parse(&sdp), Err(OfferError::NothingToSend));
    }

    #[test]
    fn data_channel_only_is_accepted() {
        let sdp = format!(
            "{HEAD}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:5000\r\n"
        );
        let s = OfferSummary::parse(&sdp).unwrap();
        assert!(s.data_channel && !s.video);
    }

    #[test]
    fn opus_audio_is_seen() {
        let sdp = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
        );
        let s = OfferSummary::parse(&sdp).unwrap();
        assert!(s.audio && s.audio_opus);
    }

    #[test]
    fn rejected_video_section_does_not_count() {
        let sdp = format!(
            "{HEAD}{}",
            video("packetization-mode=1", "H264/90000").replace("m=video 9", "m=video 0")
        );
        assert_eq!(OfferSummary::parse(&sdp), Err(OfferError::NothingToSend));
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        assert!(matches!(
            OfferSummary::parse("hello world"),
            Err(OfferError::Syntax(_))
        ));
        assert_eq!(OfferSummary::parse("  "), Err(OfferError::Empty));
        let long = "a".repeat(MAX_SDP_LEN + 1);
        assert!(matches!(
            OfferSummary::parse(&long),
            Err(OfferError::TooLong(_))
        ));
    }
}
