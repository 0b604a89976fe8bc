//! What the viewer measures of the audio it receives.
//!
//! [`AudioAnalyzer`] is pure: it is fed the decoded samples of each packet
//! with the packet's RTP timestamp and arrival time, and reports packets
//! received, decoded duration, the largest gaps between consecutive packets
//! (by arrival and by RTP timestamp), and the dominant frequency of the
//! latest second of audio. [`AudioReceiver`] adds the Opus decoder in front
//! of it, for the viewer's audio track.

use crate::encode::opus::{OpusDecoder, OpusError};
use crate::media::audio::analysis::dominant_frequency_hz;
use crate::media::audio::OPUS_RATE;
use serde::Serialize;
use std::collections::VecDeque;

/// Mono samples kept for the frequency measurement (one second).
pub const ANALYSIS_WINDOW: usize = OPUS_RATE as usize;
/// RTP ticks per millisecond for Opus (48 kHz clock).
const TICKS_PER_MS: f64 = 48.0;

/// The audio part of the viewer's report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AudioReport {
    pub packets: u64,
    /// Audio decoded, milliseconds (48 kHz samples per channel / 48).
    pub decoded_ms: f64,
    /// Largest time between two consecutive packets' arrivals.
    pub max_arrival_gap_ms: f64,
    /// Largest step between two consecutive packets' RTP timestamps.
    pub max_rtp_gap_ms: f64,
    /// Packets whose RTP timestamp was not after the previous one.
    pub out_of_order: u64,
    /// Packets the decoder refused.
    pub decode_errors: u64,
    /// Dominant frequency of the latest second of audio.
    pub dominant_hz: Option<f64>,
}

/// Bookkeeping and signal analysis of received audio (48 kHz).
#[derive(Clone, Debug, Default)]
pub struct AudioAnalyzer {
    packets: u64,
    decoded_frames: u64,
    last_arrival_us: Option<u64>,
    max_arrival_gap_us: u64,
    last_rtp: Option<u32>,
    max_rtp_gap: u32,
    out_of_order: u64,
    window: VecDeque<i16>,
}

impl AudioAnalyzer {
    pub fn new() -> Self {
        Self::default()
    }

    /// One packet's decoded audio: `pcm` is interleaved with `channels`
    /// channels at 48 kHz (channels beyond the first are mixed in for the
    /// frequency measurement). `arrival_us` is any monotonic microsecond
    /// clock.
    pub fn push(&mut self, pcm: &[i16], channels: u16, rtp_timestamp: u32, arrival_us: u64) {
        self.packets += 1;
        if let Some(prev) = self.last_arrival_us {
            self.max_arrival_gap_us = self.max_arrival_gap_us.max(arrival_us.saturating_sub(prev));
        }
        self.last_arrival_us = Some(arrival_us);
        match self.last_rtp {
            None => self.last_rtp = Some(rtp_timestamp),
            Some(prev) => {
                let step = rtp_timestamp.wrapping_sub(prev) as i32;
                if step > 0 {
                    self.max_rtp_gap = self.max_rtp_gap.max(step as u32);
                    self.last_rtp = Some(rtp_timestamp);
                } else {
                    // A duplicate or a late packet: it does not move the clock.
                    self.out_of_order += 1;
                }
            }
        }

        let ch = usize::from(channels.max(1));
        let frames = pcm.chunks_exact(ch);
        self.decoded_frames += frames.len() as u64;
        for f in frames {
            let sum: i32 = f.iter().map(|&s| i32::from(s)).sum();
            self.window.push_back((sum / ch as i32) as i16);
        }
        let excess = self.window.len().saturating_sub(ANALYSIS_WINDOW);
        self.window.drain(..excess);
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Audio decoded so far, milliseconds.
    pub fn decoded_ms(&self) -> f64 {
        self.decoded_frames as f64 * 1_000.0 / f64::from(OPUS_RATE)
    }

    /// Largest time between consecutive arrivals, milliseconds.
    pub fn max_arrival_gap_ms(&self) -> f64 {
        self.max_arrival_gap_us as f64 / 1_000.0
    }

    /// Largest step between consecutive RTP timestamps, milliseconds.
    pub fn max_rtp_gap_ms(&self) -> f64 {
        f64::from(self.max_rtp_gap) / TICKS_PER_MS
    }

    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Dominant frequency of the latest second of audio (`None` before
    /// there is enough, or in silence).
    pub fn dominant_frequency_hz(&self) -> Option<f64> {
        let (a, b) = self.window.as_slices();
        if b.is_empty() {
            dominant_frequency_hz(a, OPUS_RATE)
        } else {
            let v: Vec<i16> = self.window.iter().copied().collect();
            dominant_frequency_hz(&v, OPUS_RATE)
        }
    }

    pub fn report(&self) -> AudioReport {
        AudioReport {
            packets: self.packets,
            decoded_ms: self.decoded_ms(),
            max_arrival_gap_ms: self.max_arrival_gap_ms(),
            max_rtp_gap_ms: self.max_rtp_gap_ms(),
            out_of_order: self.out_of_order,
            decode_errors: 0,
            dominant_hz: self.dominant_frequency_hz(),
        }
    }
}

/// Decodes the viewer's Opus packets and analyses them.
#[derive(Debug)]
pub struct AudioReceiver {
    decoder: OpusDecoder,
    analyzer: AudioAnalyzer,
    decode_errors: u64,
}

impl AudioReceiver {
    /// Decodes to stereo (WebRTC's Opus is `opus/48000/2`; mono packets
    /// decode into both channels).
    pub fn new() -> Result<Self, OpusError> {
        Ok(AudioReceiver {
            decoder: OpusDecoder::new(2)?,
            analyzer: AudioAnalyzer::new(),
            decode_errors: 0,
        })
    }

    /// One RTP packet's payload. A payload the decoder refuses is counted
    /// (and returned as the error); nothing else changes.
    pub fn on_packet(
        &mut self,
        payload: &[u8],
        rtp_timestamp: u32,
        arrival_us: u64,
    ) -> Result<(), OpusError> {
        match self.decoder.decode(payload) {
            Ok(pcm) => {
                let ch = self.decoder.channels();
                self.analyzer.push(&pcm, ch, rtp_timestamp, arrival_us);
                Ok(())
            }
            Err(e) => {
                self.decode_errors += 1;
                Err(e)
            }
        }
    }

    pub fn analyzer(&self) -> &AudioAnalyzer {
        &self.analyzer
    }

    pub fn report(&self) -> AudioReport {
        AudioReport {
            decode_errors: self.decode_errors,
            ..self.analyzer.report()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::opus::OpusEncoder;
    use crate::media::audio::AudioSettings;

    fn sine(hz: f64, n: usize, channels: usize) -> Vec<i16> {
        (0..n)
            .flat_map(|k| {
                let v = (9_830.0 * (std::f64::consts::TAU * hz * k as f64 / 48_000.0).sin()) as i16;
                std::iter::repeat_n(v, channels)
            })
            .collect()
    }

    #[test]
    fn clean_sines_are_measured_within_half_a_percent() {
        for hz in [440.0, 1000.0] {
            let mut a = AudioAnalyzer::new();
            let s = sine(hz, 48_000 * 2, 1);
            for (i, p) in s.chunks(960).enumerate() {
                a.push(p, 1, i as u32 * 960, i as u64 * 20_000);
            }
            let got = a.dominant_frequency_hz().unwrap();
            assert!((got - hz).abs() < hz * 0.005, "{hz}: {got}");
            assert!((got - hz).abs() < 0.1, "{hz}: {got}");
            assert_eq!(a.packets(), 100);
            assert_eq!(a.decoded_ms(), 2_000.0);
            assert_eq!(a.max_arrival_gap_ms(), 20.0);
            assert_eq!(a.max_rtp_gap_ms(), 20.0);
        }
    }

    #[test]
    fn sines_through_real_opus_are_measured_within_half_a_percent() {
        for (hz, channels) in [(440.0, 1u16), (1000.0, 1), (440.0, 2)] {
            let mut enc = OpusEncoder::new(&AudioSettings {
                channels,
                ..AudioSettings::default()
            })
            .unwrap();
            let mut rx = AudioReceiver::new().unwrap();
            let s = sine(hz, 48_000 * 2, usize::from(channels));
            for (i, f) in s.chunks(960 * usize::from(channels)).enumerate() {
                let pkt = enc.encode(f).unwrap();
                rx.on_packet(&pkt, 1_000 + i as u32 * 960, 5_000_000 + i as u64 * 20_000)
                    .unwrap();
            }
            let r = rx.report();
            let got = r.dominant_hz.unwrap();
            assert!(
                (got - hz).abs() < hz * 0.005,
                "{hz} Hz, {channels} ch: {got}"
            );
            assert_eq!(r.packets, 100);
            assert_eq!(r.decoded_ms, 2_000.0);
            assert_eq!(r.decode_errors, 0);
        }
    }

    #[test]
    fn gaps_are_measured_by_arrival_and_rtp_timestamp() {
        let mut a = AudioAnalyzer::new();
        let p = [0i16; 1920];
        a.push(&p, 2, u32::MAX - 959, 1_000_000);
        // RTP wraps; 20 ms on both clocks.
        a.push(&p, 2, 0, 1_020_000);
        // Two packets lost: 60 ms of RTP, and they arrive 75 ms apart.
        a.push(&p, 2, 2_880, 1_095_000);
        // A late duplicate.
        a.push(&p, 2, 960, 1_096_000);
        a.push(&p, 2, 3_840, 1_110_000);
        assert_eq!(a.packets(), 5);
        assert_eq!(a.decoded_ms(), 100.0);
        assert_eq!(a.max_arrival_gap_ms(), 75.0);
        assert_eq!(a.max_rtp_gap_ms(), 60.0);
        assert_eq!(a.out_of_order(), 1);
        // Silence has no dominant frequency.
        assert_eq!(a.dominant_frequency_hz(), None);
    }

    #[test]
    fn the_window_follows_the_latest_second() {
        let mut a = AudioAnalyzer::new();
        for (i, p) in sine(440.0, 48_000 * 2, 1).chunks(960).enumerate() {
            a.push(p, 1, i as u32 * 960, 0);
        }
        for (i, p) in sine(1000.0, 48_000, 1).chunks(960).enumerate() {
            a.push(p, 1, (100 + i) as u32 * 960, 0);
        }
        let got = a.dominant_frequency_hz().unwrap();
        assert!((got - 1000.0).abs() < 1.0, "{got}");
    }

    #[test]
    fn garbage_packets_are_counted_not_fatal() {
        let mut rx = AudioReceiver::new().unwrap();
        assert!(rx.on_packet(&[], 0, 0).is_err());
        let r = rx.report();
        assert_eq!((r.packets, r.decode_errors), (0, 1));
        let _ = rx.on_packet(&[0xff, 0xff, 0xff], 960, 1);
        let _ = rx.on_packet(&[0x03], 1_920, 2);
        let json = serde_json::to_string(&rx.report()).unwrap();
        assert!(json.contains("\"dominant_hz\":null"), "{json}");
    }
}
