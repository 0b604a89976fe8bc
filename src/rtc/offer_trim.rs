//! Leaves out of a remote offer the codecs the device never sends, before
//! webrtc-rs reads it.
//!
//! Chromium offers ~40 payload types (VP9, AV1, H.265, RED, ULPFEC, G.722,
//! PCMU...). webrtc-rs 0.21 re-parses a section's codec lines for each
//! payload type it matches, so applying such an offer cost 8.5-9 ms on the
//! build machine (2-core Xeon; perf: `MediaDescription::codecs`,
//! `parse_rtpmap`, `merge_codecs`), most of the time the device takes to
//! answer; trimmed to H.264, VP8, Opus and their RTX it takes ~2 ms. The
//! answer is the same: it can only name codecs both sides have.
//!
//! A media section keeps its payload types named H264, VP8 or opus, and
//! the RTX types whose `apt` is one of them; a section with none of those
//! is left whole, so it is refused exactly as before.

use std::collections::HashSet;

/// Codec names (rtpmap, case-insensitive) the device can send.
const SENT: [&str; 3] = ["h264", "vp8", "opus"];

/// The offer without the payload types the device never sends.
pub fn trim_offer(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out: Vec<String> = Vec::new();
    let mut section: Vec<&str> = Vec::new();
    for line in sdp.split(eol) {
        if line.starts_with("m=") {
            out.extend(trim_section(&section));
            section.clear();
        }
        section.push(line);
    }
    out.extend(trim_section(&section));
    out.join(eol)
}

/// One section (the session part, or an m= line with its attributes).
fn trim_section(lines: &[&str]) -> Vec<String> {
    let keep = kept_payload_types(lines);
    let media = lines
        .first()
        .is_some_and(|l| l.starts_with("m=audio") || l.starts_with("m=video"));
    if !media || keep.is_empty() {
        return lines.iter().map(|l| l.to_string()).collect();
    }
    lines
        .iter()
        .filter(|l| payload_attribute(l).is_none_or(|pt| keep.contains(pt)))
        .map(|l| {
            if l.starts_with("m=") {
                let mut f = l.split(' ');
                let head: Vec<&str> = f.by_ref().take(3).collect();
                let formats = f.filter(|pt| keep.contains(pt));
                head.into_iter()
                    .chain(formats)
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// The payload types of a section the device can use.
fn kept_payload_types<'a>(lines: &[&'a str]) -> HashSet<&'a str> {
    let mut keep: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|r| {
            let (pt, rest) = r.split_once(' ')?;
            let name = rest.split('/').next()?;
            SENT.iter()
                .any(|s| s.eq_ignore_ascii_case(name))
                .then_some(pt)
        })
        .collect();
    let rtx: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter_map(|r| {
            let (pt, params) = r.split_once(' ')?;
            let apt = params
                .split(';')
                .find_map(|p| p.trim().strip_prefix("apt="))?;
            keep.contains(apt).then_some(pt)
        })
        .collect();
    keep.extend(rtx);
    keep
}

/// The payload type an `a=rtpmap`, `a=fmtp` or `a=rtcp-fb` line is about
/// (`None` for other lines and for `a=rtcp-fb:*`).
fn payload_attribute(line: &str) -> Option<&str> {
    let rest = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
        .iter()
        .find_map(|p| line.strip_prefix(p))?;
    let pt = rest.split(' ').next()?;
    pt.bytes().all(|b| b.is_ascii_digit()).then_some(pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103 35\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=extmap:12 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\na=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:98 VP9/90000\r\na=rtcp-fb:98 nack\r\na=fmtp:98 profile-id=0\r\n\
a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
a=rtpmap:35 AV1/90000\r\na=rtcp-fb:* transport-cc\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:0 PCMU/8000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n";

    #[test]
    fn keeps_only_what_the_device_sends_and_its_rtx() {
        let t = trim_offer(OFFER);
        assert!(
            t.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\n"),
            "{t}"
        );
        assert!(t.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"), "{t}");
        for gone in [
            "VP9",
            "AV1",
            ":98 ",
            ":99 ",
            "apt=98",
            "red/",
            "PCMU",
            "a=fmtp:63",
        ] {
            assert!(!t.contains(gone), "{gone} left in\n{t}");
        }
        for kept in [
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack pli",
            "a=fmtp:97 apt=96",
            "profile-level-id=42e01f",
            "a=fmtp:103 apt=102",
            "a=rtcp-fb:* transport-cc",
            "playout-delay",
            "a=recvonly",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n",
            "a=group:BUNDLE 0 1 2\r\n",
        ] {
            assert!(t.contains(kept), "{kept} missing from\n{t}");
        }
    }

    #[test]
    fn a_section_with_nothing_the_device_sends_is_left_whole() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98 35\r\na=mid:0\r\n\
a=rtpmap:98 VP9/90000\r\na=rtpmap:35 AV1/90000\r\n";
        assert_eq!(trim_offer(offer), offer);
    }

    #[test]
    fn plain_newlines_and_an_offer_without_media_survive() {
        let offer =
            "v=0\ns=-\nm=video 9 RTP/SAVPF 96 98\na=rtpmap:96 vp8/90000\na=rtpmap:98 VP9/90000\n";
        assert_eq!(
            trim_offer(offer),
            "v=0\ns=-\nm=video 9 RTP/SAVPF 96\na=rtpmap:96 vp8/90000\n"
        );
        assert_eq!(trim_offer("v=0\r\ns=-\r\n"), "v=0\r\ns=-\r\n");
        assert_eq!(trim_offer(""), "");
    }
}
