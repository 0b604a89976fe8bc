//! Opus for WebRTC: 48 kHz, 20 ms frames, in-band FEC.
//!
//! Application: `VOIP`. A camera's microphone mostly carries voices (someone
//! at the door, a room), and VOIP is what libwebrtc uses by default; it
//! favours the SILK and hybrid modes, which are the modes whose in-band FEC
//! (LBRR) actually protects against loss. `AUDIO` would pick CELT for most
//! signals at these bitrates, where FEC does nothing. DTX stays off: viewers
//! get a packet every 20 ms, silence included.
//!
//! [`OpusDecoder`] is the viewer's side (and the tests').

use crate::media::audio::{period_frames, AudioSettings, MAX_BITRATE, MIN_BITRATE, OPUS_RATE};
use ::opus::{Application, Bitrate, Channels};
use bytes::Bytes;

/// Largest Opus packet for one frame (RFC 6716: 1275 bytes, plus slack).
pub const MAX_PACKET: usize = 1_500;
/// Loss the encoder plans its FEC for, percent.
pub const PACKET_LOSS_PERC: i32 = 5;
/// Encoder complexity, 0 (cheapest) to 10. 5 costs about half of 10 and
/// sounds the same at these bitrates; small boards need the headroom.
pub const COMPLEXITY: i32 = 5;
/// Frames (per channel) in one 20 ms Opus frame at 48 kHz.
pub const FRAME_SAMPLES: usize = period_frames(OPUS_RATE);
/// The longest Opus packet lasts 120 ms.
const MAX_DECODED_FRAMES: usize = 5_760;

/// Errors of the Opus encoder and decoder.
#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    #[error("opus settings {channels} channel(s), {bitrate} bit/s: {reason}")]
    BadSettings {
        channels: u16,
        bitrate: u32,
        reason: &'static str,
    },

    #[error(
        "opus encoder: got {got} samples, but 20 ms of {channels} channel(s) at 48 kHz is {want}"
    )]
    BadFrame {
        got: usize,
        want: usize,
        channels: u16,
    },

    #[error("opus decoder: an empty packet (use `conceal` for a lost one)")]
    EmptyPacket,

    #[error("opus: {0}")]
    Codec(#[from] ::opus::Error),
}

fn channels_of(channels: u16, bitrate: u32) -> Result<Channels, OpusError> {
    match channels {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(OpusError::BadSettings {
            channels,
            bitrate,
            reason: "channels must be 1 or 2",
        }),
    }
}

/// One Opus encoder, shared (through the audio pipeline) by every session.
pub struct OpusEncoder {
    enc: ::opus::Encoder,
    channels: u16,
    bitrate: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("channels", &self.channels)
            .field("bitrate", &self.bitrate)
            .finish()
    }
}

impl OpusEncoder {
    /// A 48 kHz VOIP encoder with `settings.channels` and `settings.bitrate`,
    /// in-band FEC on for 5% loss, VBR, DTX off. (`settings.rate` is the
    /// capture rate; audio reaches the encoder at 48 kHz.)
    pub fn new(settings: &AudioSettings) -> Result<Self, OpusError> {
        let (channels, bitrate) = (settings.channels, settings.bitrate);
        let ch = channels_of(channels, bitrate)?;
        if !(MIN_BITRATE..=MAX_BITRATE).contains(&bitrate) {
            return Err(OpusError::BadSettings {
                channels,
                bitrate,
                reason: "the bitrate must be between 6000 and 510000 bit/s",
            });
        }
        let mut enc = ::opus::Encoder::new(OPUS_RATE, ch, Application::Voip)?;
        enc.set_bitrate(Bitrate::Bits(bitrate as i32))?;
        enc.set_inband_fec(true)?;
        enc.set_packet_loss_perc(PACKET_LOSS_PERC)?;
        enc.set_complexity(COMPLEXITY)?;
        enc.set_vbr(true)?;
        enc.set_dtx(false)?;
        Ok(OpusEncoder {
            enc,
            channels,
            bitrate,
            buf: vec![0; MAX_PACKET],
        })
    }

    /// Encodes exactly 20 ms: `960 * channels` interleaved samples.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Bytes, OpusError> {
        let want = self.frame_len();
        if pcm.len() != want {
            return Err(OpusError::BadFrame {
                got: pcm.len(),
                want,
                channels: self.channels,
            });
        }
        let n = self.enc.encode(pcm, &mut self.buf)?;
        Ok(Bytes::copy_from_slice(&self.buf[..n.min(self.buf.len())]))
    }

    /// Samples (all channels) `encode` takes.
    pub fn frame_len(&self) -> usize {
        FRAME_SAMPLES * usize::from(self.channels)
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Whether in-band FEC is on (it always is; for tests and logs).
    pub fn inband_fec(&mut self) -> Result<bool, OpusError> {
        Ok(self.enc.get_inband_fec()?)
    }
}

/// A 48 kHz Opus decoder producing interleaved i16 with a fixed channel
/// count; mono and stereo packets both decode into it.
pub struct OpusDecoder {
    dec: ::opus::Decoder,
    channels: u16,
    buf: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .finish()
    }
}

impl OpusDecoder {
    /// A decoder that outputs `channels` (1 or 2) channels.
    pub fn new(channels: u16) -> Result<Self, OpusError> {
        let ch = channels_of(channels, 0)?;
        Ok(OpusDecoder {
            dec: ::opus::Decoder::new(OPUS_RATE, ch)?,
            channels,
            buf: vec![0; MAX_DECODED_FRAMES * usize::from(channels)],
        })
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Decodes one packet into interleaved samples.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, OpusError> {
        if packet.is_empty() {
            return Err(OpusError::EmptyPacket);
        }
        let frames = self.dec.decode(packet, &mut self.buf, false)?;
        Ok(self.take(frames))
    }

    /// Recovers a lost packet of `frames` frames from the FEC data in the
    /// packet that followed it (or conceals it when that has none).
    pub fn decode_fec(&mut self, next_packet: &[u8], frames: usize) -> Result<Vec<i16>, OpusError> {
        if next_packet.is_empty() {
            return Err(OpusError::EmptyPacket);
        }
        let n = self.limit(frames);
        let frames = self.dec.decode(next_packet, &mut self.buf[..n], true)?;
        Ok(self.take(frames))
    }

    /// Conceals a lost packet of `frames` frames (packet loss concealment).
    pub fn conceal(&mut self, frames: usize) -> Result<Vec<i16>, OpusError> {
        let n = self.limit(frames);
        let frames = self.dec.decode(&[], &mut self.buf[..n], false)?;
        Ok(self.take(frames))
    }

    fn limit(&self, frames: usize) -> usize {
        frames.clamp(1, MAX_DECODED_FRAMES) * usize::from(self.channels)
    }

    fn take(&self, frames: usize) -> Vec<i16> {
        let n = (frames * usize::from(self.channels)).min(self.buf.len());
        self.buf[..n].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, frames: usize, channels: usize) -> Vec<i16> {
        (0..frames)
            .flat_map(|k| {
                let v = (9_830.0 * (std::f64::consts::TAU * hz * k as f64 / 48_000.0).sin()) as i16;
                std::iter::repeat_n(v, channels)
            })
            .collect()
    }

    fn settings(channels: u16, bitrate: u32) -> AudioSettings {
        AudioSettings {
            rate: 48_000,
            channels,
            bitrate,
        }
    }

    #[test]
    fn rejects_bad_settings_and_frames() {
        for (ch, br) in [(0, 32_000), (3, 32_000), (1, 1_000), (1, 600_000)] {
            let e = OpusEncoder::new(&settings(ch, br)).unwrap_err();
            assert!(matches!(e, OpusError::BadSettings { .. }), "{e}");
        }
        let mut enc = OpusEncoder::new(&settings(1, 32_000)).unwrap();
        assert!(enc.inband_fec().unwrap());
        for len in [0, 959, 961, 1920] {
            let e = enc.encode(&vec![0; len]).unwrap_err();
            assert!(e.to_string().contains("is 960"), "{e}");
        }
        let mut enc = OpusEncoder::new(&settings(2, 64_000)).unwrap();
        assert_eq!(enc.frame_len(), 1920);
        assert!(enc.encode(&[0; 960]).is_err());
        assert!(OpusDecoder::new(3).is_err());
        let mut dec = OpusDecoder::new(1).unwrap();
        assert!(matches!(dec.decode(&[]), Err(OpusError::EmptyPacket)));
        // Garbage must not panic (libopus may or may not accept it).
        let _ = dec.decode(&[0xff; 3]);
        let _ = dec.decode(&[0x00]);
    }

    #[test]
    fn round_trip_keeps_the_signal() {
        for (channels, bitrate) in [(1u16, 32_000u32), (2, 64_000)] {
            let mut enc = OpusEncoder::new(&settings(channels, bitrate)).unwrap();
            let mut dec = OpusDecoder::new(channels).unwrap();
            let ch = usize::from(channels);
            let input = sine(440.0, 48_000, ch);
            let mut out = Vec::new();
            let mut bytes = 0;
            for frame in input.chunks(960 * ch) {
                let pkt = enc.encode(frame).unwrap();
                assert!(!pkt.is_empty() && pkt.len() <= MAX_PACKET);
                bytes += pkt.len();
                let pcm = dec.decode(&pkt).unwrap();
                assert_eq!(pcm.len(), 960 * ch);
                out.extend(pcm);
            }
            // About the configured bitrate (VBR): within a factor of 2.
            let bps = bytes * 8;
            assert!(
                bps as u32 > bitrate / 2 && (bps as u32) < bitrate * 2,
                "{bps} bit/s"
            );
            // The decoder delays by the encoder's lookahead (6.5 ms = 312
            // frames); find the best alignment and compare energies.
            let mono = |v: &[i16]| {
                v.iter()
                    .step_by(ch)
                    .map(|&s| f64::from(s))
                    .collect::<Vec<_>>()
            };
            let (a, b) = (mono(&input), mono(&out));
            let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
            let (best_err, _) = (250..400)
                .map(|lag| {
                    let n = 24_000;
                    let err: Vec<f64> = (0..n)
                        .map(|k| b[k + lag + 12_000] - a[k + 12_000])
                        .collect();
                    (rms(&err), lag)
                })
                .fold((f64::MAX, 0), |m, x| if x.0 < m.0 { x } else { m });
            let snr = 20.0 * (rms(&a) / best_err).log10();
            assert!(snr > 15.0, "{channels} ch: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn a_stereo_decoder_takes_mono_packets() {
        let mut enc = OpusEncoder::new(&settings(1, 32_000)).unwrap();
        let mut dec = OpusDecoder::new(2).unwrap();
        let pkt = enc.encode(&sine(1000.0, 960, 1)).unwrap();
        assert_eq!(dec.decode(&pkt).unwrap().len(), 1920);
    }

    #[test]
    fn fec_and_concealment_fill_a_lost_packet() {
        let mut enc = OpusEncoder::new(&settings(1, 32_000)).unwrap();
        let mut dec = OpusDecoder::new(1).unwrap();
        let input = sine(440.0, 960 * 20, 1);
        let pkts: Vec<Bytes> = input.chunks(960).map(|f| enc.encode(f).unwrap()).collect();
        for p in &pkts[..10] {
            dec.decode(p).unwrap();
        }
        // Packet 10 is lost: recover it from packet 11's FEC.
        assert_eq!(dec.decode_fec(&pkts[11], 960).unwrap().len(), 960);
        assert_eq!(dec.decode(&pkts[11]).unwrap().len(), 960);
        assert_eq!(dec.conceal(960).unwrap().len(), 960);
        assert!(dec.decode_fec(&[], 960).is_err());
    }

    /// Two seconds of a tone at 32 kbit/s: 100 packets, none empty, and
    /// their sizes add up to the bitrate asked for, within a quarter (what
    /// the encoder costs is a figure of benches/codec_cost.rs).
    #[test]
    fn two_seconds_of_a_tone_come_out_at_the_bitrate_asked_for() {
        let mut enc = OpusEncoder::new(&settings(1, 32_000)).unwrap();
        let input = sine(440.0, 48_000 * 2, 1);
        let pkts: Vec<Bytes> = input.chunks(960).map(|f| enc.encode(f).unwrap()).collect();
        assert_eq!(pkts.len(), 100);
        assert!(pkts.iter().all(|p| !p.is_empty()), "an empty packet");
        let kbps = pkts.iter().map(Bytes::len).sum::<usize>() as f64 * 8.0 / 2.0 / 1000.0;
        assert!((24.0..=40.0).contains(&kbps), "{kbps:.1} kbit/s for 32");
    }
}
