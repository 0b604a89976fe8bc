//! What the viewer observed, printed for people or as JSON for tests.

use crate::cli::ViewArgs;
use crate::rtc::metrics::summarize;
use crate::signaling::messages::{ByeReason, ErrorCode};
use serde::Serialize;
use std::time::Instant;

/// One decoded picture.
#[derive(Clone, Debug)]
pub struct FrameObservation {
    pub at: Instant,
    pub width: u32,
    pub height: u32,
    /// The stamp's frame counter, when the picture carries a stamp.
    pub counter: Option<u32>,
    /// Capture-to-decode latency (same-host clocks), when stamped.
    pub latency_ms: Option<f64>,
    pub lost_packets: u64,
    /// The access unit was an IDR.
    pub keyframe: bool,
}

/// The viewer's findings.
/// One return to the device after the relay was lost.
#[derive(Clone, Debug, Serialize)]
pub struct Rejoin {
    pub relay_mountpoint: Option<u64>,
    pub frames: u64,
    pub stamped_frames: u64,
    pub first_frame_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct ViewReport {
    pub sid: String,
    /// The Janus mountpoint watched, when the device handed the viewer
    /// over to its relay (or `--janus` was given).
    pub relay_mountpoint: Option<u64>,
    /// Janus's URL then.
    pub relay_janus: Option<String>,
    /// The relayed stream ended under the viewer (Janus hung up, went
    /// away or the connection failed).
    pub relay_lost: bool,
    /// Each time the viewer went back to the device after losing the
    /// relay, and what it got then.
    pub rejoins: Vec<Rejoin>,
    /// With `--whep`: the HTTP status of the `POST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub mqtt_ms: f64,
    /// How long the `ice_request` took, and how many servers it gave
    /// (`None`: not asked, or no answer).
    pub ice_ms: Option<f64>,
    pub ice_servers: Option<usize>,
    /// When the device's minted TURN credentials stop working (Unix s).
    pub ice_expires: Option<u64>,
    pub answer_ms: Option<f64>,
    pub connected_ms: Option<f64>,
    /// The selected candidate pair's types when connected, local/remote
    /// (e.g. `relay/relay` through TURN on both sides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub first_frame_ms: Option<f64>,
    pub frames: u64,
    pub stamped_frames: u64,
    /// Frames missing between the first and last stamp counter seen.
    pub lost_frames: u64,
    /// Stamp counters that went backwards (never expected).
    pub out_of_order: u64,
    pub lost_packets: u64,
    pub first_counter: Option<u32>,
    pub last_counter: Option<u32>,
    pub width: u32,
    pub height: u32,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub answers: u32,
    /// A repeated answer was not byte-identical to the first.
    pub answers_differ: bool,
    pub remote_candidates: u32,
    pub plis_sent: u32,
    /// Keyframes (IDR) decoded.
    pub keyframes: u64,
    /// The frame count when `--pli-at` sent its PLI.
    pub pli_sent_at_frame: Option<u64>,
    /// Frames from that PLI to the next keyframe.
    pub pli_to_keyframe_frames: Option<u64>,
    /// Decoded audio so far (ms), while running.
    pub audio_decoded_ms: f64,
    /// What the audio analysis found (packets, gaps, dominant frequency).
    pub audio: Option<crate::view::audio::AudioReport>,
    /// The control channel opened.
    pub control_open: bool,
    /// `--call`s and their responses.
    pub calls: Vec<crate::view::control::Call>,
    /// Notifications (`gpio.changed`, ...) received on the control channel.
    pub notifications: Vec<serde_json::Value>,
    /// Other control messages (replies to unknown ids, garbage).
    pub control_other: Vec<serde_json::Value>,
    pub bye: Option<ByeReason>,
    pub error_code: Option<ErrorCode>,
    pub error: Option<String>,
    /// The `error` above carried no valid mac (a refused offer cannot).
    pub unverified_error: bool,
    /// Messages on the session's topic ignored because their mac did not
    /// verify (someone else's forgeries).
    pub unverified: u32,
    /// Errors on the live session (a refused renegotiation or candidate).
    pub late_errors: u32,
    #[serde(skip)]
    pub answer_sdp: Option<String>,
    /// The answer's media sections as `kind:port:direction`, e.g.
    /// `video:9:sendonly`, `audio:0:inactive`, `application:9:-`.
    pub answer_media: Vec<String>,
}

impl ViewReport {
    pub fn new(sid: &str) -> Self {
        ViewReport {
            sid: sid.to_owned(),
            ..Default::default()
        }
    }

    /// Adds one decoded frame of a session whose offer left at `offer_at`:
    /// the first one sets the time to first frame and the picture size;
    /// every stamped one adds its capture-to-decode latency to `latencies`.
    pub fn observe_frame(
        &mut self,
        obs: &FrameObservation,
        offer_at: std::time::Instant,
        latencies: &mut Vec<f64>,
    ) {
        if self.frames == 0 {
            self.first_frame_ms = Some(obs.at.duration_since(offer_at).as_secs_f64() * 1e3);
            self.width = obs.width;
            self.height = obs.height;
            tracing::info!(
                width = obs.width,
                height = obs.height,
                "first frame decoded"
            );
        }
        self.observe(obs);
        if let Some(l) = obs.latency_ms {
            latencies.push(l);
        }
    }

    /// Adds one decoded frame.
    pub fn observe(&mut self, obs: &FrameObservation) {
        self.frames += 1;
        self.lost_packets = obs.lost_packets;
        if let Some(c) = obs.counter {
            self.stamped_frames += 1;
            if self.first_counter.is_none() {
                self.first_counter = Some(c);
            }
            if let Some(last) = self.last_counter {
                if c <= last {
                    self.out_of_order += 1;
                    return;
                }
                self.lost_frames += u64::from(c - last - 1);
            }
            self.last_counter = Some(c);
        }
    }

    /// Files one message from the control channel.
    pub fn control_message(&mut self, v: serde_json::Value) {
        let id = v.get("id").and_then(|i| i.as_u64());
        match id {
            Some(n) if n >= 1 && (n as usize) <= self.calls.len() => {
                self.calls[n as usize - 1].response = Some(v);
            }
            _ if v.get("method").is_some() && v.get("id").is_none() => self.notifications.push(v),
            _ => self.control_other.push(v),
        }
    }

    /// Every `--call` has its response.
    pub fn calls_done(&self) -> bool {
        self.calls.iter().all(|c| c.response.is_some())
    }

    /// Records the answer and summarises its media sections.
    pub fn set_answer(&mut self, sdp: &str) {
        self.answer_sdp = Some(sdp.to_owned());
        self.answer_media = media_sections(sdp);
    }

    /// Computes the latency percentiles.
    pub fn finish(&mut self, latencies_ms: &mut [f64]) {
        let mut us: Vec<u64> = latencies_ms.iter().map(|l| (l * 1000.0) as u64).collect();
        if !us.is_empty() {
            let s = summarize(&mut us);
            self.latency_p50_ms = Some(s.p50_us as f64 / 1000.0);
            self.latency_p95_ms = Some(s.p95_us as f64 / 1000.0);
            self.latency_max_ms = Some(s.max_us as f64 / 1000.0);
        }
    }

    /// Whether the run met what was asked.
    /// Records a later run after the relay was lost; its outcome is the
    /// run's outcome.
    pub fn rejoin(&mut self, next: ViewReport) {
        self.rejoins.push(Rejoin {
            relay_mountpoint: next.relay_mountpoint,
            frames: next.frames,
            stamped_frames: next.stamped_frames,
            first_frame_ms: next.first_frame_ms,
            error: next.error.clone(),
        });
        self.relay_lost = next.relay_lost;
        self.error = next.error;
        self.error_code = next.error_code;
    }

    pub fn success(&self, args: &ViewArgs) -> bool {
        if self.error.is_some() || self.error_code.is_some() {
            return false;
        }
        if args.offer_file.is_some() {
            return self.answer_ms.is_some();
        }
        if args.no_video {
            return self.connected_ms.is_some();
        }
        args.hold || self.frames >= args.frames
    }

    /// A few lines for a person.
    pub fn human(&self) -> String {
        let ms = |v: Option<f64>| {
            v.map(|v| format!("{v:.1} ms"))
                .unwrap_or_else(|| "-".into())
        };
        let mut s = format!(
            "session {}\n  answer after {}, connected after {}, first frame after {}\n  \
             frames decoded {} ({}x{}), stamped {}, lost frames {}, lost packets {}\n  \
             capture-to-decode latency p50 {} p95 {} max {}",
            self.sid,
            ms(self.answer_ms),
            ms(self.connected_ms),
            ms(self.first_frame_ms),
            self.frames,
            self.width,
            self.height,
            self.stamped_frames,
            self.lost_frames,
            self.lost_packets,
            ms(self.latency_p50_ms),
            ms(self.latency_p95_ms),
            ms(self.latency_max_ms),
        );
        if let Some(a) = &self.audio {
            s += &format!(
                "\n  audio: {} packets, {:.0} ms decoded, largest gap {:.0} ms, dominant frequency {}",
                a.packets,
                a.decoded_ms,
                a.max_arrival_gap_ms,
                a.dominant_hz.map(|f| format!("{f:.1} Hz")).unwrap_or_else(|| "-".into())
            );
        }
        for c in &self.calls {
            let reply = c
                .response
                .as_ref()
                .map(|r| r.get("result").or(r.get("error")).unwrap_or(r).to_string())
                .unwrap_or_else(|| "no reply".into());
            s += &format!("\n  {} {} -> {reply}", c.method, c.params);
        }
        for n in &self.notifications {
            s += &format!("\n  notification: {n}");
        }
        if let Some(b) = &self.bye {
            s += &format!("\n  device ended the session: {b:?}");
        }
        if let Some(c) = &self.error_code {
            s += &format!("\n  device refused: {c:?}");
        }
        if let Some(e) = &self.error {
            s += &format!("\n  error: {e}");
        }
        s
    }
}

/// `kind:port:direction` for each m= section of an SDP.
pub fn media_sections(sdp: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_whitespace();
            let kind = f.next().unwrap_or("?");
            let port = f.next().unwrap_or("?");
            out.push(format!("{kind}:{port}:-"));
        } else if let Some(last) = out.last_mut() {
            let dir = ["sendrecv", "sendonly", "recvonly", "inactive"]
                .into_iter()
                .find(|d| line == format!("a={d}"));
            if let Some(d) = dir {
                if let Some(i) = last.rfind(':') {
                    last.replace_range(i + 1.., d);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(counter: u32) -> FrameObservation {
        FrameObservation {
            at: Instant::now(),
            width: 640,
            height: 480,
            counter: Some(counter),
            latency_ms: Some(1.0),
            lost_packets: 0,
            keyframe: false,
        }
    }

    #[test]
    fn media_sections_are_summarised() {
        let sdp = "v=0\r\nm=video 9 UDP 102\r\na=sendonly\r\nm=audio 0 UDP 111\r\na=inactive\r\nm=application 9 DTLS webrtc\r\n";
        assert_eq!(
            media_sections(sdp),
            ["video:9:sendonly", "audio:0:inactive", "application:9:-"]
        );
    }

    #[test]
    fn gaps_in_counters_are_lost_frames() {
        let mut r = ViewReport::new("abcdefgh");
        for c in [10, 11, 14, 15] {
            r.observe(&obs(c));
        }
        assert_eq!(r.frames, 4);
        assert_eq!(r.lost_frames, 2);
        assert_eq!(r.first_counter, Some(10));
        assert_eq!(r.last_counter, Some(15));
        r.observe(&obs(12));
        assert_eq!(r.out_of_order, 1);
    }
}
