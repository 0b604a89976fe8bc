//! `application/trickle-ice-sdpfrag` bodies (RFC 8840), as WHEP clients
//! send them in `PATCH`: candidates, end of candidates, and whether the
//! fragment asks for an ICE restart (new `ice-ufrag`/`ice-pwd`).

use crate::signaling::messages::CandidateInit;

/// Most candidate lines one fragment may carry.
pub const FRAG_CANDIDATES_MAX: usize = 64;

/// What a fragment asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Candidates in order; `None` for `a=end-of-candidates`.
    pub candidates: Vec<Option<CandidateInit>>,
    /// Its `a=ice-ufrag` (another than the offer's: an ICE restart).
    pub ufrag: Option<String>,
}

/// Parses a fragment, or says why it is not one.
pub fn parse(body: &str) -> Result<Fragment, String> {
    let mut f = Fragment::default();
    let mut mid: Option<String> = None;
    let mut ufrag: Option<String> = None;
    let mut mline: Option<u16> = None;
    for (n, line) in body.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "line {}: {:?} is not an SDP attribute or media line",
                n + 1,
                clip(line)
            )
        };
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.trim().to_owned());
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(u.trim().to_owned());
            f.ufrag = ufrag.clone();
        } else if line.starts_with("m=") {
            mline = Some(mline.map_or(0, |i| i.saturating_add(1)));
        } else if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                if f.candidates.len() >= FRAG_CANDIDATES_MAX {
                    return Err(format!("more than {FRAG_CANDIDATES_MAX} candidates"));
                }
                f.candidates.push(Some(CandidateInit {
                    candidate: c.to_owned(),
                    sdp_mid: mid.clone(),
                    sdp_mline_index: if mid.is_some() {
                        None
                    } else {
                        Some(mline.unwrap_or(0))
                    },
                    username_fragment: ufrag.clone(),
                }));
            } else if c == "end-of-candidates" {
                f.candidates.push(None);
            }
            // Other attributes (ice-options, group...) carry nothing for us.
        } else if !matches!(line.as_bytes().get(1), Some(b'=')) {
            return Err(bad());
        }
    }
    Ok(f)
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_with_their_mid_and_ufrag() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-options:trickle\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                    a=end-of-candidates\r\n";
        let f = parse(body).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates.len(), 2);
        let c = f.candidates[0].as_ref().unwrap();
        assert_eq!(
            c.candidate,
            "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0"
        );
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.username_fragment.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates[1], None);
    }

    #[test]
    fn the_ufrag_is_kept() {
        let f = parse(
            "a=ice-ufrag:x
a=ice-pwd:y
",
        )
        .unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("x"));
        assert!(f.candidates.is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse("hello world").unwrap_err().contains("line 1"));
        let many: String = (0..=FRAG_CANDIDATES_MAX)
            .map(|i| format!("a=candidate:{i} 1 udp 1 10.0.0.1 {i} typ host\n"))
            .collect();
        assert!(parse(&many).is_err());
        assert_eq!(parse("").unwrap(), Fragment::default());
    }
}
