//! H.264 passthrough: a source that already delivers H.264 (rpicam-vid
//! with the Pi's hardware encoder, a webcam offering H264) is packetized as
//! it is, never decoded or re-encoded; the pipeline publishes its access
//! units to every viewer exactly as it publishes openh264's.
//!
//! What passthrough cannot do is make an IDR on demand: a joining viewer,
//! or one that sent a PLI, waits for the source's next keyframe. So the
//! source's keyframe interval should be short (the board profiles ask
//! rpicam-vid for one a second), and this module makes sure every keyframe
//! a viewer may start at is decodable on its own: an IDR that arrives
//! without SPS and PPS gets the latest ones put in front of it.

use crate::media::exec::framing::nal_units;
use crate::media::EncodedFrame;
use bytes::Bytes;

/// NAL unit types used here.
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// Turns access units from a source into [`EncodedFrame`]s.
#[derive(Debug, Default)]
pub struct Passthrough {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// IDRs that had no parameter sets (in the unit or before it).
    pub idr_without_headers: u64,
}

impl Passthrough {
    pub fn new() -> Self {
        Self::default()
    }

    /// The profile-level-id (six hex digits: profile_idc, constraint flags,
    /// level_idc) of the latest SPS, if one was seen.
    pub fn profile_level_id(&self) -> Option<String> {
        self.sps.as_deref().and_then(profile_level_id)
    }

    /// One access unit in Annex B form. `None` for a unit with no picture.
    pub fn frame(
        &mut self,
        au: Vec<u8>,
        capture_us: u64,
        seq: u32,
        duration_us: u64,
    ) -> Option<EncodedFrame> {
        let (mut has_sps, mut has_pps, mut idr, mut picture) = (false, false, false, false);
        for nal in nal_units(&au) {
            match nal[0] & 0x1F {
                NAL_SPS => {
                    has_sps = true;
                    self.sps = Some(nal.to_vec());
                }
                NAL_PPS => {
                    has_pps = true;
                    self.pps = Some(nal.to_vec());
                }
                NAL_IDR => {
                    idr = true;
                    picture = true;
                }
                1 => picture = true,
                _ => {}
            }
        }
        if !picture {
            return None;
        }
        let mut keyframe = idr;
        let data = if idr && !(has_sps && has_pps) {
            match (&self.sps, &self.pps) {
                (Some(sps), Some(pps)) => {
                    let mut v = Vec::with_capacity(au.len() + sps.len() + pps.len() + 8);
                    for ps in [sps, pps] {
                        v.extend_from_slice(&[0, 0, 0, 1]);
                        v.extend_from_slice(ps);
                    }
                    v.extend_from_slice(&au);
                    v
                }
                _ => {
                    // Nobody can start here: not a keyframe for viewers.
                    self.idr_without_headers += 1;
                    keyframe = false;
                    au
                }
            }
        } else {
            au
        };
        Some(EncodedFrame {
            data: Bytes::from(data),
            keyframe,
            capture_us,
            seq,
            duration_us,
        })
    }
}

/// Whether a viewer that offered `offered` (profile-level-ids) can decode
/// what a passthrough source sends (`sent`): the same profile_idc, and
/// every constraint the offer's format requires is met by the stream (a
/// decoder for constrained baseline `42e0` cannot take plain baseline
/// `4200`, but one for baseline can take constrained baseline). Levels are
/// not compared: campeer answers with level-asymmetry-allowed.
pub fn profile_accepted(sent: &str, offered: &[String]) -> bool {
    answer_profile(sent, offered).is_some()
}

/// Why an offer is refused for a passthrough stream of profile `sent`
/// (`None` before the source's first SPS), or `None` when it can be
/// answered: an offer without video (audio or data only) always can; one
/// with video must accept H.264, in the stream's profile once that is
/// known, since nothing else (no VP8, no other profile) can be made of a
/// stream that is not re-encoded.
pub fn offer_refusal(
    sent: Option<&str>,
    video: bool,
    video_h264: bool,
    offered: &[String],
) -> Option<String> {
    if !video {
        return None;
    }
    let named = |s: Option<&str>| match s {
        Some(p) => format!("H.264 profile-level-id={p}"),
        None => "H.264".to_string(),
    };
    if !video_h264 {
        return Some(format!(
            "the camera sends {} (passed through, not re-encoded); the offer has no H.264 with packetization-mode=1",
            named(sent)
        ));
    }
    let sent = sent?;
    (!profile_accepted(sent, offered)).then(|| {
        format!(
            "the camera sends {} (passed through, not re-encoded); the offer accepts only {}",
            named(Some(sent)),
            offered.join(", ")
        )
    })
}

/// The offered profile-level-id the answer should carry for a stream of
/// profile `sent`: the offer's own format whose profile (and constraints)
/// the stream satisfies, preferring one with exactly the stream's profile
/// and constraints. `None`: the viewer cannot decode the stream.
pub fn answer_profile(sent: &str, offered: &[String]) -> Option<String> {
    let parse = |s: &str| -> Option<(u8, u8)> {
        let b = s.as_bytes();
        if b.len() != 6 || !s.is_ascii() {
            return None;
        }
        let idc = u8::from_str_radix(&s[0..2], 16).ok()?;
        let iop = u8::from_str_radix(&s[2..4], 16).ok()?;
        Some((idc, iop))
    };
    let (idc, iop) = parse(sent)?;
    // Constraint flags the offer sets must be set in the stream too
    // (constraint_set0..5; the low two bits are reserved).
    let fits =
        |o: &&String| parse(o).is_some_and(|(oidc, oiop)| oidc == idc && (oiop & 0xFC) & !iop == 0);
    let exact = |o: &&String| parse(o).is_some_and(|(_, oiop)| oiop & 0xFC == iop & 0xFC);
    let mut fitting = offered.iter().filter(fits);
    let first = fitting.clone().next()?;
    Some(fitting.find(exact).unwrap_or(first).clone())
}

/// The profile-level-id of an SPS NAL unit (header byte first).
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    if sps.len() < 4 || sps[0] & 0x1F != NAL_SPS {
        return None;
    }
    Some(format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(bytes: &[u8]) -> Vec<u8> {
        [&[0, 0, 0, 1][..], bytes].concat()
    }

    #[test]
    fn an_idr_without_headers_gets_the_latest_ones() {
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xAA];
        let pps = [0x68, 0xCE, 0x3C];
        let mut p = Passthrough::new();
        let first = [nal(&sps), nal(&pps), nal(&[0x65, 0x88, 1])].concat();
        let f = p.frame(first.clone(), 10, 0, 33_333).unwrap();
        assert!(f.keyframe);
        assert_eq!(&f.data[..], &first[..], "complete units pass unchanged");
        assert_eq!(p.profile_level_id().as_deref(), Some("42c01f"));

        let delta = nal(&[0x41, 0x9a, 2]);
        let f = p.frame(delta.clone(), 20, 1, 33_333).unwrap();
        assert!(!f.keyframe);
        assert_eq!(&f.data[..], &delta[..]);

        let bare_idr = nal(&[0x65, 0x88, 3]);
        let f = p.frame(bare_idr.clone(), 30, 2, 33_333).unwrap();
        assert!(f.keyframe);
        assert_eq!(&f.data[..], &[nal(&sps), nal(&pps), bare_idr].concat()[..]);
        assert_eq!(p.idr_without_headers, 0);
    }

    #[test]
    fn an_idr_before_any_headers_is_no_starting_point() {
        let mut p = Passthrough::new();
        let f = p.frame(nal(&[0x65, 0x88]), 0, 0, 1).unwrap();
        assert!(!f.keyframe);
        assert_eq!(p.idr_without_headers, 1);
        assert!(p.profile_level_id().is_none());
    }

    #[test]
    fn a_unit_without_a_picture_is_not_a_frame() {
        let mut p = Passthrough::new();
        assert!(p.frame(nal(&[0x06, 5, 1]), 0, 0, 1).is_none());
        assert!(p.frame(nal(&[0x67, 0x64, 0x00, 0x28]), 0, 0, 1).is_none());
        assert_eq!(p.profile_level_id().as_deref(), Some("640028"));
    }

    #[test]
    fn profiles_are_accepted_only_when_the_viewer_can_decode_them() {
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Chrome-like offer: baseline, constrained baseline, main, high.
        let chrome = offer(&["42001f", "42e01f", "4d001f", "64001f"]);
        for sent in ["42c01e", "42e01f", "4d4028", "640028", "42001f"] {
            assert!(profile_accepted(sent, &chrome), "{sent}");
        }
        // Constrained baseline only: a High or plain baseline stream is refused.
        let cb = offer(&["42e01f"]);
        assert!(profile_accepted("42e01f", &cb));
        assert!(profile_accepted("42e028", &cb), "levels are not compared");
        assert!(!profile_accepted("640028", &cb));
        assert!(!profile_accepted("42001f", &cb));
        assert!(!profile_accepted("zz", &cb));
        assert!(!profile_accepted("42e01f", &[]));
    }

    #[test]
    fn the_answer_names_an_offered_format_the_stream_satisfies() {
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let chrome = offer(&["42001f", "42e01f", "4d001f", "64001f"]);
        assert_eq!(answer_profile("42e01e", &chrome).unwrap(), "42e01f");
        assert_eq!(answer_profile("42c01e", &chrome).unwrap(), "42001f");
        assert_eq!(answer_profile("640028", &chrome).unwrap(), "64001f");
        assert_eq!(answer_profile("4d4028", &chrome).unwrap(), "4d001f");
        assert_eq!(answer_profile("640028", &offer(&["42e01f"])), None);
    }

    #[test]
    fn an_offer_with_video_must_take_the_stream_as_it_is() {
        let cb = vec!["42e01f".to_owned()];
        // Audio or data only: nothing to refuse.
        assert_eq!(offer_refusal(Some("42e01f"), false, false, &[]), None);
        // VP8 only (no H.264): refused, named, even before the first SPS.
        let why = offer_refusal(Some("42e01f"), true, false, &[]).expect("refused");
        assert!(why.contains("no H.264"), "{why}");
        let why = offer_refusal(None, true, false, &[]).expect("refused");
        assert!(why.contains("no H.264"), "{why}");
        // H.264 in another profile: refused with what it accepts.
        let why = offer_refusal(Some("640028"), true, true, &cb).expect("refused");
        assert!(why.contains("640028") && why.contains("42e01f"), "{why}");
        assert_eq!(offer_refusal(Some("42e01f"), true, true, &cb), None);
        // Any H.264 before the profile is known: answered.
        assert_eq!(offer_refusal(None, true, true, &cb), None);
    }

    #[test]
    fn profile_level_id_needs_an_sps() {
        assert_eq!(profile_level_id(&[0x68, 1, 2, 3]), None);
        assert_eq!(profile_level_id(&[0x67, 0x4d]), None);
        assert_eq!(
            profile_level_id(&[0x67, 0x4d, 0x40, 0x29]).unwrap(),
            "4d4029"
        );
    }
}
