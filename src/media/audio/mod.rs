//! Audio sources: ALSA capture devices and a test tone.
//!
//! A source is a blocking, paced producer of 20 ms periods of interleaved
//! signed 16-bit samples ([`AudioSource`]); it runs on the audio pipeline's
//! own OS thread (see `encode::audio_pipeline`). Every period carries the
//! capture time of its first sample on CLOCK_MONOTONIC (`crate::clock`), the
//! clock video frames are stamped with, so audio and video line up.
//!
//! Invariants every source keeps: `format().rate` is within
//! [`MIN_RATE`]..=[`MAX_RATE`], `format().channels` is 1 or 2, and every
//! chunk holds exactly `period_frames(rate) * channels` samples.

pub mod alsa;
pub mod analysis;
pub mod resample;
pub mod tone;

use std::fmt;

/// The rate Opus (and WebRTC's Opus payload) runs at.
pub const OPUS_RATE: u32 = 48_000;
/// Length of one period and of one Opus frame, microseconds.
pub const PERIOD_US: u64 = 20_000;
/// Periods per second.
pub const PERIODS_PER_SECOND: u32 = 50;
/// Lowest capture rate accepted.
pub const MIN_RATE: u32 = 8_000;
/// Highest capture rate accepted.
pub const MAX_RATE: u32 = 192_000;
/// Lowest Opus bitrate accepted (libopus' own floor).
pub const MIN_BITRATE: u32 = 6_000;
/// Highest Opus bitrate accepted (libopus' own ceiling).
pub const MAX_BITRATE: u32 = 510_000;

/// Frames (samples per channel) in one 20 ms period at `rate`.
pub const fn period_frames(rate: u32) -> usize {
    (rate / PERIODS_PER_SECOND) as usize
}

/// Microseconds that `frames` frames last at `rate` (0 for a zero rate).
pub fn frames_to_us(frames: u64, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    (u128::from(frames) * 1_000_000 / u128::from(rate)) as u64
}

/// Which audio source to open, as written in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum AudioSourceSpec {
    /// A sine at this many hertz (tests and demos).
    Tone(f32),
    /// An ALSA capture PCM such as `default`, `hw:1,0` or `plughw:CARD=Device`.
    Alsa(String),
    /// No audio at all.
    None,
}

/// Highest tone `parse` accepts; `open_audio_source` also keeps it below
/// half the sample rate.
pub const MAX_TONE_HZ: f32 = 20_000.0;

impl AudioSourceSpec {
    /// Parses `tone:<hz>`, `alsa:<pcm>` or `none`.
    pub fn parse(s: &str) -> Result<Self, AudioError> {
        let t = s.trim();
        let bad = |reason| AudioError::BadSpec {
            spec: s.to_string(),
            reason,
        };
        if t == "none" {
            return Ok(AudioSourceSpec::None);
        }
        if let Some(hz) = t.strip_prefix("tone:") {
            let hz: f32 = hz
                .trim()
                .parse()
                .map_err(|_| bad("`tone:` needs a frequency in hertz, e.g. `tone:440`"))?;
            if !hz.is_finite() || hz <= 0.0 || hz > MAX_TONE_HZ {
                return Err(bad(
                    "the tone frequency must be above 0 and at most 20000 Hz",
                ));
            }
            return Ok(AudioSourceSpec::Tone(hz));
        }
        if let Some(pcm) = t.strip_prefix("alsa:") {
            let pcm = pcm.trim();
            if pcm.is_empty() {
                return Err(bad(
                    "`alsa:` needs a PCM name, e.g. `alsa:default`, `alsa:hw:1,0` or `alsa:plughw:CARD=Device`",
                ));
            }
            if pcm.chars().any(|c| c.is_control()) {
                return Err(bad("the ALSA PCM name contains a control character"));
            }
            return Ok(AudioSourceSpec::Alsa(pcm.to_string()));
        }
        Err(bad("expected `alsa:<pcm>`, `tone:<hz>` or `none`"))
    }

    /// True for `none`.
    pub fn is_none(&self) -> bool {
        matches!(self, AudioSourceSpec::None)
    }
}

impl fmt::Display for AudioSourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSourceSpec::Tone(hz) => write!(f, "tone:{hz}"),
            AudioSourceSpec::Alsa(pcm) => write!(f, "alsa:{pcm}"),
            AudioSourceSpec::None => f.write_str("none"),
        }
    }
}

/// What a source actually delivers (after the device had its say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioFormat {
    /// Sample rate in hertz.
    pub rate: u32,
    /// Interleaved channels, 1 or 2.
    pub channels: u16,
    /// For logs: the PCM actually opened (e.g. `plughw:1,0`), or `tone 440 Hz`.
    pub name: String,
}

impl AudioFormat {
    /// Frames in one 20 ms period at this rate.
    pub fn period_frames(&self) -> usize {
        period_frames(self.rate)
    }

    /// Samples (all channels) in one 20 ms period.
    pub fn period_samples(&self) -> usize {
        self.period_frames() * usize::from(self.channels)
    }
}

/// One period of captured audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioChunk {
    /// Interleaved samples, `period_frames(rate) * channels` of them (20 ms).
    pub samples: Vec<i16>,
    /// Capture time of the first sample, microseconds of CLOCK_MONOTONIC.
    pub capture_us: u64,
}

/// A blocking producer of 20 ms audio periods.
pub trait AudioSource: Send {
    /// The format of the chunks `read_period` returns.
    fn format(&self) -> &AudioFormat;

    /// Blocks until the next period is complete, paced like a real device.
    fn read_period(&mut self) -> Result<AudioChunk, AudioError>;

    /// Overruns (lost input) recovered from so far.
    fn overruns(&self) -> u64 {
        0
    }
}

/// Audio capture and encoding settings (config keys `audio.rate`,
/// `audio.channels`, `audio.bitrate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioSettings {
    /// Capture rate asked of the device; audio is resampled to 48 kHz for
    /// Opus when the device delivers another rate.
    pub rate: u32,
    /// 1 (mono) or 2 (stereo), for capture and for Opus.
    pub channels: u16,
    /// Opus bitrate, bits per second.
    pub bitrate: u32,
}

impl Default for AudioSettings {
    fn default() -> Self {
        AudioSettings {
            rate: OPUS_RATE,
            channels: 1,
            bitrate: 32_000,
        }
    }
}

impl AudioSettings {
    /// Checks the ranges: rate 8000..=192000 Hz, 1 or 2 channels, bitrate
    /// 6000..=510000 bit/s.
    pub fn validate(&self) -> Result<(), AudioError> {
        let reason = if !(MIN_RATE..=MAX_RATE).contains(&self.rate) {
            Some("the rate must be between 8000 and 192000 Hz")
        } else if !(1..=2).contains(&self.channels) {
            Some("channels must be 1 (mono) or 2 (stereo)")
        } else if !(MIN_BITRATE..=MAX_BITRATE).contains(&self.bitrate) {
            Some("the bitrate must be between 6000 and 510000 bit/s")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(AudioError::BadSettings {
                rate: self.rate,
                channels: self.channels,
                bitrate: self.bitrate,
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// Errors of audio sources. Each names the PCM and what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("unknown audio source {spec:?}: {reason}")]
    BadSpec { spec: String, reason: &'static str },

    #[error("audio source `none` cannot be opened (no audio is configured)")]
    NoSource,

    #[error("audio settings {rate} Hz, {channels} channel(s), {bitrate} bit/s: {reason}")]
    BadSettings {
        rate: u32,
        channels: u16,
        bitrate: u32,
        reason: &'static str,
    },

    #[error("tone of {hz} Hz at {rate} Hz: {reason}")]
    BadTone {
        hz: f32,
        rate: u32,
        reason: &'static str,
    },

    #[error("ALSA PCM {pcm:?}: no such device (list capture devices with `arecord -L`)")]
    Missing { pcm: String },

    #[error("ALSA PCM {pcm:?} is busy (another program is capturing from it)")]
    Busy { pcm: String },

    #[error("ALSA PCM {pcm:?}: permission denied (is this user in the `audio` group?)")]
    PermissionDenied { pcm: String },

    #[error("ALSA PCM {pcm:?}: {reason}")]
    Unsupported { pcm: String, reason: String },

    #[error("ALSA PCM {pcm:?} went away: {source}")]
    Gone {
        pcm: String,
        #[source]
        source: ::alsa::Error,
    },

    #[error("ALSA PCM {pcm:?}: no audio for {ms} ms")]
    Timeout { pcm: String, ms: u64 },

    #[error("ALSA PCM {pcm:?}: {op}: {source}")]
    Alsa {
        pcm: String,
        op: &'static str,
        #[source]
        source: ::alsa::Error,
    },
}

impl AudioError {
    /// Maps an ALSA error from operation `op` on `pcm` to the clearest
    /// variant: missing, busy, permission denied, gone, or a plain error.
    pub fn from_alsa(pcm: &str, op: &'static str, err: ::alsa::Error) -> Self {
        let pcm = pcm.to_string();
        let opening = op == "open";
        match err.errno() {
            libc::ENOENT | libc::ENXIO if opening => AudioError::Missing { pcm },
            libc::ENODEV if opening => AudioError::Missing { pcm },
            libc::EBUSY => AudioError::Busy { pcm },
            libc::EACCES | libc::EPERM => AudioError::PermissionDenied { pcm },
            libc::ENODEV | libc::ENXIO | libc::EBADFD | libc::EIO | libc::ENOENT => {
                AudioError::Gone { pcm, source: err }
            }
            _ => AudioError::Alsa {
                pcm,
                op,
                source: err,
            },
        }
    }

    /// The PCM the error is about, if any.
    pub fn pcm(&self) -> Option<&str> {
        match self {
            AudioError::Missing { pcm }
            | AudioError::Busy { pcm }
            | AudioError::PermissionDenied { pcm }
            | AudioError::Unsupported { pcm, .. }
            | AudioError::Gone { pcm, .. }
            | AudioError::Timeout { pcm, .. }
            | AudioError::Alsa { pcm, .. } => Some(pcm),
            AudioError::BadSpec { .. }
            | AudioError::NoSource
            | AudioError::BadSettings { .. }
            | AudioError::BadTone { .. } => None,
        }
    }
}

/// Opens a source delivering (as near as the device allows) `rate` Hz and
/// `channels` channels. A tone always runs at 48 kHz. `None` is an error:
/// callers handle "no audio" before this.
pub fn open_audio_source(
    spec: &AudioSourceSpec,
    rate: u32,
    channels: u16,
) -> Result<Box<dyn AudioSource>, AudioError> {
    AudioSettings {
        rate,
        channels,
        ..AudioSettings::default()
    }
    .validate()?;
    match spec {
        AudioSourceSpec::Tone(hz) => Ok(Box::new(tone::ToneSource::new(*hz, OPUS_RATE, channels)?)),
        AudioSourceSpec::Alsa(pcm) => Ok(Box::new(alsa::AlsaSource::open(pcm, rate, channels)?)),
        AudioSourceSpec::None => Err(AudioError::NoSource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_the_three_forms() {
        assert_eq!(
            AudioSourceSpec::parse("none").unwrap(),
            AudioSourceSpec::None
        );
        assert_eq!(
            AudioSourceSpec::parse("tone:440").unwrap(),
            AudioSourceSpec::Tone(440.0)
        );
        assert_eq!(
            AudioSourceSpec::parse(" tone: 1000.5 ").unwrap(),
            AudioSourceSpec::Tone(1000.5)
        );
        for pcm in [
            "default",
            "hw:1,0",
            "plughw:CARD=Device",
            "plughw:CARD=Device,DEV=0",
        ] {
            assert_eq!(
                AudioSourceSpec::parse(&format!("alsa:{pcm}")).unwrap(),
                AudioSourceSpec::Alsa(pcm.into())
            );
        }
        assert!(AudioSourceSpec::parse("none").unwrap().is_none());
    }

    #[test]
    fn spec_rejects_bad_input_clearly() {
        let cases = [
            ("", "expected `alsa:<pcm>`"),
            ("Tone:440", "expected `alsa:<pcm>`"),
            ("test", "expected `alsa:<pcm>`"),
            ("v4l2:/dev/video0", "expected `alsa:<pcm>`"),
            ("tone:", "needs a frequency"),
            ("tone:abc", "needs a frequency"),
            ("tone:-5", "above 0"),
            ("tone:0", "above 0"),
            ("tone:NaN", "above 0"),
            ("tone:inf", "above 0"),
            ("tone:30000", "at most 20000"),
            ("alsa:", "needs a PCM name"),
            ("alsa:   ", "needs a PCM name"),
            ("alsa:hw\0:1", "control character"),
        ];
        for (bad, want) in cases {
            let e = AudioSourceSpec::parse(bad).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, AudioError::BadSpec { .. }), "{bad:?}: {msg}");
            assert!(msg.contains(want), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn spec_display_round_trips() {
        for s in [
            "none",
            "tone:440",
            "tone:997.5",
            "alsa:default",
            "alsa:plughw:CARD=Device,DEV=0",
        ] {
            let spec = AudioSourceSpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(AudioSourceSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn settings_default_and_validation() {
        let d = AudioSettings::default();
        assert_eq!((d.rate, d.channels, d.bitrate), (48_000, 1, 32_000));
        assert!(d.validate().is_ok());
        for (rate, channels, bitrate, want) in [
            (7_999, 1, 32_000, "rate"),
            (192_001, 1, 32_000, "rate"),
            (48_000, 0, 32_000, "channels"),
            (48_000, 3, 32_000, "channels"),
            (48_000, 1, 5_999, "bitrate"),
            (48_000, 1, 510_001, "bitrate"),
        ] {
            let s = AudioSettings {
                rate,
                channels,
                bitrate,
            };
            let e = s.validate().unwrap_err();
            assert!(matches!(e, AudioError::BadSettings { .. }));
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn period_math() {
        assert_eq!(period_frames(48_000), 960);
        assert_eq!(period_frames(44_100), 882);
        assert_eq!(period_frames(16_000), 320);
        assert_eq!(frames_to_us(960, 48_000), 20_000);
        assert_eq!(frames_to_us(882, 44_100), 20_000);
        assert_eq!(frames_to_us(1, 0), 0);
        // A century of frames does not overflow.
        let century_s = 100 * 365 * 86_400u64;
        assert_eq!(
            frames_to_us(48_000 * century_s, 48_000),
            century_s * 1_000_000
        );
        let f = AudioFormat {
            rate: 48_000,
            channels: 2,
            name: "x".into(),
        };
        assert_eq!(f.period_samples(), 1920);
    }

    #[test]
    fn alsa_errors_map_to_clear_messages() {
        let e = AudioError::from_alsa(
            "hw:3,0",
            "open",
            ::alsa::Error::new("snd_pcm_open", libc::ENOENT),
        );
        assert!(matches!(e, AudioError::Missing { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("ALSA PCM \"hw:3,0\": no such device"),
            "{e}"
        );
        let e = AudioError::from_alsa(
            "hw:3,0",
            "open",
            ::alsa::Error::new("snd_pcm_open", libc::EBUSY),
        );
        assert!(e.to_string().contains("busy"), "{e}");
        let e = AudioError::from_alsa(
            "hw:3,0",
            "open",
            ::alsa::Error::new("snd_pcm_open", libc::EACCES),
        );
        assert!(e.to_string().contains("`audio` group"), "{e}");
        let e = AudioError::from_alsa(
            "hw:3,0",
            "read",
            ::alsa::Error::new("snd_pcm_readi", libc::ENODEV),
        );
        assert!(matches!(e, AudioError::Gone { .. }), "{e}");
        assert_eq!(e.pcm(), Some("hw:3,0"));
        let e = AudioError::from_alsa(
            "hw:3,0",
            "read",
            ::alsa::Error::new("snd_pcm_readi", libc::EINVAL),
        );
        assert!(
            e.to_string().starts_with("ALSA PCM \"hw:3,0\": read:"),
            "{e}"
        );
        assert_eq!(AudioError::NoSource.pcm(), None);
    }

    #[test]
    fn opening_none_is_an_error() {
        let e = open_audio_source(&AudioSourceSpec::None, 48_000, 1)
            .err()
            .expect("none cannot be opened");
        assert!(matches!(e, AudioError::NoSource));
    }

    #[test]
    fn opening_a_tone_reports_48k() {
        let src = open_audio_source(&AudioSourceSpec::Tone(440.0), 44_100, 2).unwrap();
        assert_eq!(src.format().rate, 48_000);
        assert_eq!(src.format().channels, 2);
        assert!(src.format().name.contains("440"));
    }

    #[test]
    fn opening_a_missing_pcm_names_it() {
        let spec = AudioSourceSpec::Alsa("hw:CARD=campeer_no_such_card".into());
        let e = open_audio_source(&spec, 48_000, 1)
            .err()
            .expect("the card does not exist");
        assert_eq!(e.pcm(), Some("hw:CARD=campeer_no_such_card"), "{e}");
        assert!(
            e.to_string().contains("hw:CARD=campeer_no_such_card"),
            "{e}"
        );
    }
}
