//! Capture once, encode once, fan out: the audio half.
//!
//! ```text
//! campeer-audio: source.read_period() -> [channels, 48 kHz, 20 ms framing]
//!     -> Opus -> Arc<EncodedAudio> -> tokio broadcast -> every session
//! ```
//!
//! One OS thread does it all (Opus at 20 ms costs well under a millisecond).
//! Every packet is 20 ms and carries the capture time of its first sample on
//! CLOCK_MONOTONIC, the clock video frames carry, so the two stay in sync.
//!
//! A failing source is logged once, dropped (closing the device), and
//! re-opened with backoff from 250 ms doubling to 5 s, with jitter; nothing
//! is published while it is away (no made-up audio), and the loop never
//! spins. `stop` (or drop) ends the thread within one period (or one ALSA
//! read timeout, if the device hangs).

use super::opus::{OpusEncoder, OpusError, FRAME_SAMPLES};
use super::pipeline::{media_backoff, StopSignal};
use crate::backoff::Backoff;
use crate::clock;
use crate::media::audio::alsa::LogLimiter;
use crate::media::audio::resample::{convert_channels, LinearResampler};
use crate::media::audio::{
    frames_to_us, AudioChunk, AudioError, AudioFormat, AudioSettings, AudioSource, OPUS_RATE,
    PERIOD_US,
};
use bytes::Bytes;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Packets the broadcast holds for a slow subscriber (one second).
pub const BROADCAST_CAPACITY: usize = 50;
/// `format().name` while no source has been opened.
pub const NOT_OPEN: &str = "(not open)";
/// Name of the pipeline's thread.
pub const THREAD_NAME: &str = "campeer-audio";
/// A jump of more than this between where the stream was and where the
/// source's stamps say it is counts as a gap.
const GAP_US: u64 = 10_000;

/// Re-opens the audio source after it failed.
pub type AudioReopen = Box<dyn FnMut() -> Result<Box<dyn AudioSource>, AudioError> + Send>;

/// One Opus packet, shared by every session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedAudio {
    pub data: Bytes,
    /// Capture time of the first sample, microseconds of CLOCK_MONOTONIC.
    pub capture_us: u64,
    /// Always 20 000 (20 ms, 960 samples at 48 kHz).
    pub duration_us: u64,
    /// Packet counter from 0, +1 per packet (gaps in `capture_us`, not in
    /// `seq`, show an outage).
    pub seq: u64,
}

/// Counters of the audio pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioStats {
    /// Packets published.
    pub packets: u64,
    /// Source read errors and encode errors.
    pub errors: u64,
    /// Successful re-opens of the source.
    pub reopens: u64,
    /// Overruns the sources recovered from (input lost, stream went on).
    pub overruns: u64,
    /// Duration of the latest encode, microseconds.
    pub last_encode_us: u64,
    /// Sum of all encode durations, microseconds.
    pub total_encode_us: u64,
    /// CLOCK_MONOTONIC microseconds of the latest publish (0 before it).
    pub last_packet_at_us: u64,
}

#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    errors: AtomicU64,
    reopens: AtomicU64,
    overruns: AtomicU64,
    last_encode_us: AtomicU64,
    total_encode_us: AtomicU64,
    last_packet_at_us: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> AudioStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AudioStats {
            packets: get(&self.packets),
            errors: get(&self.errors),
            reopens: get(&self.reopens),
            overruns: get(&self.overruns),
            last_encode_us: get(&self.last_encode_us),
            total_encode_us: get(&self.total_encode_us),
            last_packet_at_us: get(&self.last_packet_at_us),
        }
    }
}

/// Errors starting the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum AudioPipelineError {
    #[error(transparent)]
    Settings(#[from] AudioError),

    #[error(transparent)]
    Opus(#[from] OpusError),

    #[error("cannot start thread {THREAD_NAME}: {0}")]
    Thread(#[source] std::io::Error),
}

/// Turns source periods (any rate, any channels) into 20 ms frames of
/// 48 kHz audio with the encoder's channels, each with the capture time of
/// its first sample. Pure: no clock, no I/O.
#[derive(Debug)]
pub struct Framer {
    src_channels: u16,
    out_channels: u16,
    resampler: Option<LinearResampler>,
    /// 48 kHz interleaved samples waiting for a whole frame.
    fifo: Vec<i16>,
    /// Capture time of `fifo[0]`.
    fifo_start_us: u64,
}

impl Framer {
    /// For a source delivering `src`, feeding an encoder of `out_channels`.
    pub fn new(src: &AudioFormat, out_channels: u16) -> Self {
        let out_channels = out_channels.max(1);
        Framer {
            src_channels: src.channels.max(1),
            out_channels,
            resampler: (src.rate != OPUS_RATE)
                .then(|| LinearResampler::new(src.rate, OPUS_RATE, out_channels)),
            fifo: Vec::new(),
            fifo_start_us: 0,
        }
    }

    /// True when the source's rate is converted to 48 kHz here.
    pub fn resamples(&self) -> bool {
        self.resampler.is_some()
    }

    /// Forgets partial audio (after the source failed).
    pub fn reset(&mut self) {
        self.fifo.clear();
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
    }

    fn fifo_frames(&self) -> u64 {
        (self.fifo.len() / usize::from(self.out_channels)) as u64
    }

    /// Adds one period; calls `emit(frame, capture_us)` for every whole
    /// 20 ms frame (`960 * out_channels` samples) now available.
    pub fn push(&mut self, chunk: &AudioChunk, mut emit: impl FnMut(&[i16], u64)) {
        let pending = frames_to_us(self.fifo_frames(), OPUS_RATE);
        if !self.fifo.is_empty() {
            let expected = self.fifo_start_us + pending;
            if expected.abs_diff(chunk.capture_us) > GAP_US {
                // Input was lost in between: what is left belongs before the
                // gap and would not line up with what follows.
                self.reset();
            }
        }
        // Follow the source's stamps: the leftover ends where this chunk begins.
        let pending = frames_to_us(self.fifo_frames(), OPUS_RATE);
        self.fifo_start_us = chunk.capture_us.saturating_sub(pending);

        let converted;
        let samples: &[i16] = if self.src_channels == self.out_channels {
            &chunk.samples
        } else {
            converted = convert_channels(&chunk.samples, self.src_channels, self.out_channels);
            &converted
        };
        match &mut self.resampler {
            Some(r) => r.process(samples, &mut self.fifo),
            None => {
                let whole = samples.len() - samples.len() % usize::from(self.out_channels);
                self.fifo.extend_from_slice(&samples[..whole]);
            }
        }
        let frame_len = FRAME_SAMPLES * usize::from(self.out_channels);
        let mut used = 0;
        while self.fifo.len() - used >= frame_len {
            emit(&self.fifo[used..used + frame_len], self.fifo_start_us);
            used += frame_len;
            self.fifo_start_us += PERIOD_US;
        }
        self.fifo.drain(..used);
    }
}

struct Shared {
    stop: StopSignal,
    counters: Counters,
    format: Mutex<AudioFormat>,
}

impl Shared {
    fn format(&self) -> MutexGuard<'_, AudioFormat> {
        self.format.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running audio capture and encode thread.
pub struct AudioPipeline {
    shared: Arc<Shared>,
    tx: broadcast::Sender<Arc<EncodedAudio>>,
    thread: Option<JoinHandle<()>>,
    settings: AudioSettings,
}

impl AudioPipeline {
    /// Starts capturing from `source` and encoding with `settings`; after a
    /// source error the source is dropped and `reopen` makes a new one.
    pub fn start(
        source: Box<dyn AudioSource>,
        reopen: AudioReopen,
        settings: AudioSettings,
    ) -> Result<Self, AudioPipelineError> {
        Self::spawn(Some(source), reopen, settings, media_backoff())
    }

    /// Like `start` for a source that could not be opened yet (a USB
    /// microphone not plugged in at boot): the thread calls `reopen` with
    /// the usual backoff until it succeeds (counted in `stats().reopens`),
    /// publishing nothing until then.
    pub fn start_without_source(
        reopen: AudioReopen,
        settings: AudioSettings,
    ) -> Result<Self, AudioPipelineError> {
        Self::spawn(None, reopen, settings, media_backoff())
    }

    /// `backoff` paces the re-opening: `media_backoff()`, or in unit tests
    /// one long enough that only `stop` can end its sleep.
    fn spawn(
        source: Option<Box<dyn AudioSource>>,
        reopen: AudioReopen,
        settings: AudioSettings,
        backoff: Backoff,
    ) -> Result<Self, AudioPipelineError> {
        settings.validate()?;
        let encoder = OpusEncoder::new(&settings)?;
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let format = match &source {
            Some(s) => {
                log_format(s.format(), &settings);
                s.format().clone()
            }
            None => AudioFormat {
                rate: settings.rate,
                channels: settings.channels,
                name: NOT_OPEN.into(),
            },
        };
        let shared = Arc::new(Shared {
            stop: StopSignal::default(),
            counters: Counters::default(),
            format: Mutex::new(format),
        });
        let thread = {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    Worker {
                        source,
                        reopen,
                        encoder,
                        settings,
                        shared,
                        tx,
                        backoff,
                    }
                    .run()
                })
                .map_err(AudioPipelineError::Thread)?
        };
        Ok(AudioPipeline {
            shared,
            tx,
            thread: Some(thread),
            settings,
        })
    }

    /// A receiver of every packet from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedAudio>> {
        self.tx.subscribe()
    }

    /// What the current (or last) source delivers.
    pub fn format(&self) -> AudioFormat {
        self.shared.format().clone()
    }

    /// The settings the pipeline runs with (Opus is 48 kHz, these channels).
    pub fn settings(&self) -> AudioSettings {
        self.settings
    }

    pub fn stats(&self) -> AudioStats {
        self.shared.counters.snapshot()
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                warn!("{THREAD_NAME} thread panicked");
            }
        }
    }
}

impl Drop for AudioPipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn log_format(f: &AudioFormat, settings: &AudioSettings) {
    let resample = if f.rate == OPUS_RATE {
        String::new()
    } else {
        format!(", resampled in software from {} Hz", f.rate)
    };
    info!(
        source = %f.name,
        "audio: {} Hz, {} channel(s) -> Opus 48000 Hz, {} channel(s), {} bit/s, 20 ms, in-band FEC{resample}",
        f.rate, f.channels, settings.channels, settings.bitrate
    );
}

struct Worker {
    source: Option<Box<dyn AudioSource>>,
    reopen: AudioReopen,
    encoder: OpusEncoder,
    settings: AudioSettings,
    shared: Arc<Shared>,
    tx: broadcast::Sender<Arc<EncodedAudio>>,
    backoff: Backoff,
}

impl Worker {
    fn run(mut self) {
        let c = &self.shared.counters;
        let mut framer = Framer::new(&self.shared.format().clone(), self.settings.channels);
        let mut backoff = self.backoff.clone();
        // Set while the source is failing (or not open yet); cleared by the
        // first good period.
        let mut outage = self.source.is_none();
        let mut attempts = 0u64;
        let mut seq = 0u64;
        let mut overruns_before = 0u64;
        let mut encode_log = LogLimiter::default();
        while !self.shared.stop.is_stopped() {
            let Some(src) = self.source.as_mut() else {
                let delay = backoff.next_delay(rand::thread_rng().gen::<f64>());
                if self.shared.stop.sleep(delay) {
                    break;
                }
                attempts += 1;
                match (self.reopen)() {
                    Ok(s) => {
                        c.reopens.fetch_add(1, Ordering::Relaxed);
                        info!(
                            source = %s.format().name,
                            "audio source opened after {attempts} attempt(s)"
                        );
                        log_format(s.format(), &self.settings);
                        framer = Framer::new(s.format(), self.settings.channels);
                        *self.shared.format() = s.format().clone();
                        self.source = Some(s);
                    }
                    Err(e) => debug!("audio source still unavailable (attempt {attempts}): {e}"),
                }
                continue;
            };
            match src.read_period() {
                Ok(chunk) => {
                    if outage {
                        outage = false;
                        attempts = 0;
                        backoff.reset();
                    }
                    c.overruns
                        .store(overruns_before + src.overruns(), Ordering::Relaxed);
                    let (encoder, tx) = (&mut self.encoder, &self.tx);
                    framer.push(&chunk, |frame, capture_us| {
                        let started = clock::monotonic_us();
                        match encoder.encode(frame) {
                            Ok(data) => {
                                let now = clock::monotonic_us();
                                let took = now.saturating_sub(started);
                                c.last_encode_us.store(took, Ordering::Relaxed);
                                c.total_encode_us.fetch_add(took, Ordering::Relaxed);
                                let pkt = Arc::new(EncodedAudio {
                                    data,
                                    capture_us,
                                    duration_us: PERIOD_US,
                                    seq,
                                });
                                seq += 1;
                                // No subscriber is fine: nobody is watching.
                                // Counted before it is visible, so a
                                // receiver never sees more than the count.
                                c.packets.fetch_add(1, Ordering::Relaxed);
                                let _ = tx.send(pkt);
                                c.last_packet_at_us.store(now, Ordering::Relaxed);
                            }
                            Err(e) => {
                                c.errors.fetch_add(1, Ordering::Relaxed);
                                if encode_log.check(started, 10_000_000).is_some() {
                                    warn!("opus encode failed: {e}");
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    if outage {
                        debug!("audio source failed again: {e}");
                    } else {
                        outage = true;
                        warn!(
                            "audio source {} failed: {e}; re-opening with backoff (no audio until it is back)",
                            src.format().name
                        );
                    }
                    overruns_before += src.overruns();
                    // Dropping the source closes the device before re-opening.
                    self.source = None;
                    framer.reset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::opus::OpusDecoder;
    use crate::media::audio::analysis::dominant_frequency_hz;
    use crate::media::audio::tone::ToneSource;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::sync::broadcast::error::TryRecvError;

    fn fmt(rate: u32, channels: u16) -> AudioFormat {
        AudioFormat {
            rate,
            channels,
            name: "test".into(),
        }
    }

    fn chunk(rate: u32, channels: u16, capture_us: u64, v: i16) -> AudioChunk {
        AudioChunk {
            samples: vec![v; crate::media::audio::period_frames(rate) * usize::from(channels)],
            capture_us,
        }
    }

    fn frames(f: &mut Framer, c: &AudioChunk) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        f.push(c, |s, t| out.push((s.len(), t)));
        out
    }

    #[test]
    fn framer_passes_48k_periods_through_with_their_stamps() {
        let mut f = Framer::new(&fmt(48_000, 1), 1);
        assert!(!f.resamples());
        for n in 0..10u64 {
            let t = 7_000_000 + n * 20_000;
            assert_eq!(frames(&mut f, &chunk(48_000, 1, t, 5)), vec![(960, t)]);
        }
    }

    #[test]
    fn framer_converts_channels() {
        let mut f = Framer::new(&fmt(48_000, 2), 1);
        let mut got = Vec::new();
        f.push(&chunk(48_000, 2, 0, 100), |s, _| got.extend_from_slice(s));
        assert_eq!(got, vec![100; 960]);
        let mut f = Framer::new(&fmt(48_000, 1), 2);
        assert_eq!(frames(&mut f, &chunk(48_000, 1, 0, 1)), vec![(1920, 0)]);
    }

    #[test]
    fn framer_resamples_44k1_into_20ms_frames_on_the_source_clock() {
        let mut f = Framer::new(&fmt(44_100, 1), 1);
        assert!(f.resamples());
        let mut all = Vec::new();
        for n in 0..500u64 {
            all.extend(frames(&mut f, &chunk(44_100, 1, 1_000_000 + n * 20_000, 3)));
        }
        // 10 s in, 10 s out (less what waits in the FIFO), 20 ms apart.
        assert!((498..=500).contains(&all.len()), "{}", all.len());
        assert!(all.iter().all(|&(len, _)| len == 960));
        for w in all.windows(2) {
            assert_eq!(w[1].1 - w[0].1, 20_000);
        }
        // Each frame's stamp is within a period of the source's schedule.
        let (_, last) = all[all.len() - 1];
        let ideal = 1_000_000 + (all.len() as u64 - 1) * 20_000;
        assert!(last.abs_diff(ideal) < 1_000, "{last} vs {ideal}");
    }

    #[test]
    fn framer_drops_leftovers_across_a_gap() {
        let mut f = Framer::new(&fmt(16_000, 1), 1);
        frames(&mut f, &chunk(16_000, 1, 0, 1));
        assert!(!f.fifo.is_empty(), "the resampler keeps a tail");
        // 1 s later: the leftover is dropped, the stamps restart there.
        let out = frames(&mut f, &chunk(16_000, 1, 1_000_000, 1));
        assert!(out.iter().all(|&(_, t)| t >= 1_000_000), "{out:?}");
    }

    /// A source that plays a tone for `ok` periods, then fails (or runs
    /// forever with `ok == usize::MAX`).
    struct Scripted {
        inner: ToneSource,
        ok: usize,
    }

    impl AudioSource for Scripted {
        fn format(&self) -> &AudioFormat {
            self.inner.format()
        }
        fn read_period(&mut self) -> Result<AudioChunk, AudioError> {
            if self.ok == 0 {
                return Err(AudioError::Timeout {
                    pcm: "scripted".into(),
                    ms: 0,
                });
            }
            self.ok -= 1;
            self.inner.read_period()
        }
    }

    fn scripted(ok: usize) -> Box<dyn AudioSource> {
        Box::new(Scripted {
            inner: ToneSource::new(440.0, 48_000, 1).unwrap(),
            ok,
        })
    }

    fn drain(rx: &mut broadcast::Receiver<Arc<EncodedAudio>>) -> Vec<Arc<EncodedAudio>> {
        let mut v = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(p) => v.push(p),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => return v,
            }
        }
    }

    #[test]
    fn tone_pipeline_publishes_50_packets_a_second_that_decode_to_440hz() {
        let src = ToneSource::new(440.0, 48_000, 1).unwrap();
        let p = AudioPipeline::start(
            Box::new(src),
            Box::new(|| Err(AudioError::NoSource)),
            AudioSettings::default(),
        )
        .unwrap();
        let mut rx = p.subscribe();
        let mut dec = OpusDecoder::new(1).unwrap();
        let mut pcm = Vec::new();
        let mut last: Option<(u64, u64, u64)> = None;
        let mut max_gap_us = 0;
        let started = clock::monotonic_us();
        while pcm.len() < 48_000 * 2 {
            let pkt = rx.blocking_recv().unwrap();
            let now = clock::monotonic_us();
            if let Some((seq, cap, at)) = last {
                assert_eq!(pkt.seq, seq + 1);
                assert_eq!(pkt.capture_us, cap + 20_000);
                max_gap_us = max_gap_us.max(now - at);
            }
            assert_eq!(pkt.duration_us, 20_000);
            last = Some((pkt.seq, pkt.capture_us, now));
            pcm.extend(dec.decode(&pkt.data).unwrap());
        }
        let elapsed = clock::monotonic_us() - started;
        let s = p.stats();
        p.stop();
        assert!(s.packets >= 100 && s.errors == 0 && s.reopens == 0, "{s:?}");
        // Paced: 100 packets take ~2 s, not less.
        assert!(elapsed > 1_800_000, "{elapsed} us");
        // The stamps above are exactly 20 ms apart; arrival depends on the
        // scheduler of a busy test machine, so only a stall fails here.
        assert!(max_gap_us < 250_000, "gap {max_gap_us} us");
        let hz = dominant_frequency_hz(&pcm, 48_000).unwrap();
        assert!((hz - 440.0).abs() < 440.0 * 0.005, "{hz} Hz");
        println!(
            "opus encode: {} us per 20 ms frame on average; largest arrival gap {} ms",
            s.total_encode_us / s.packets.max(1),
            max_gap_us / 1_000
        );
    }

    #[test]
    fn a_failing_source_is_reopened_with_backoff_and_publishes_nothing_meanwhile() {
        let opens = Arc::new(AtomicUsize::new(0));
        let reopen: AudioReopen = {
            let opens = opens.clone();
            // Fails twice, then gives a source that runs on.
            let mut script: VecDeque<bool> = [false, false, true].into();
            Box::new(move || {
                opens.fetch_add(1, Ordering::SeqCst);
                match script.pop_front() {
                    Some(true) => Ok(scripted(usize::MAX)),
                    _ => Err(AudioError::Missing {
                        pcm: "hw:9,0".into(),
                    }),
                }
            })
        };
        let p = AudioPipeline::start(scripted(5), reopen, AudioSettings::default()).unwrap();
        let mut rx = p.subscribe();
        let mut got: Vec<Arc<EncodedAudio>> = Vec::new();
        let deadline = clock::monotonic_us() + 5_000_000;
        while p.stats().reopens == 0 && clock::monotonic_us() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            got.extend(drain(&mut rx));
        }
        let before = got.len();
        assert_eq!(before, 5, "five periods, then nothing during the outage");
        // Three attempts: 250 + 500 + 1000 ms of backoff, each jittered
        // down by up to half.
        let s = p.stats();
        assert_eq!((s.reopens, s.errors), (1, 1), "{s:?}");
        assert_eq!(opens.load(Ordering::SeqCst), 3);
        // Audio flows again: wait for it (a bound, not a guess of how many
        // packets a busy machine makes in some time).
        let deadline = clock::monotonic_us() + 5_000_000;
        while got.len() <= before + 5 && clock::monotonic_us() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            got.extend(drain(&mut rx));
        }
        let s = p.stats();
        p.stop();
        assert!(got.len() > before + 5, "audio flows again: {}", got.len());
        // Sequence numbers run on; the stamps show the outage (>= 875 ms).
        for w in got.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
        }
        let gap = got[before].capture_us - got[before - 1].capture_us;
        assert!(gap > 850_000, "gap {gap} us");
        assert_eq!(s.errors, 1, "{s:?}");
    }

    #[test]
    fn a_source_missing_at_start_is_opened_later() {
        let mut tries = 0;
        let reopen: AudioReopen = Box::new(move || {
            tries += 1;
            if tries < 2 {
                Err(AudioError::Missing {
                    pcm: "hw:1,0".into(),
                })
            } else {
                Ok(scripted(usize::MAX))
            }
        });
        let p = AudioPipeline::start_without_source(reopen, AudioSettings::default()).unwrap();
        assert_eq!(p.format().name, NOT_OPEN);
        let mut rx = p.subscribe();
        // 250 + 500 ms of backoff (+-20%), then packets.
        let first = rx.blocking_recv().unwrap();
        assert_eq!(first.seq, 0);
        let s = p.stats();
        assert_eq!((s.reopens, s.errors), (1, 0), "{s:?}");
        assert!(p.format().name.contains("440"), "{:?}", p.format());
        p.stop();
    }

    /// Stop ends the backoff's sleep: with an hour-long backoff the worker
    /// sleeps after the source's first failure, and `stop` still returns
    /// (within a bound 100 times shorter than the sleep), with no re-open
    /// tried.
    #[test]
    fn stop_interrupts_the_backoff() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let reopen: AudioReopen = {
            let attempts = attempts.clone();
            Box::new(move || {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(AudioError::NoSource)
            })
        };
        let hour = Duration::from_secs(3_600);
        let p = AudioPipeline::spawn(
            Some(scripted(0)),
            reopen,
            AudioSettings::default(),
            Backoff::new(hour, hour),
        )
        .unwrap();
        // The source fails on its first read; then the worker sleeps.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.stats().errors == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the source never failed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = p.stats();
            p.stop();
            let _ = done_tx.send(s);
        });
        let s = done_rx
            .recv_timeout(Duration::from_secs(36))
            .expect("stop did not end the backoff's sleep");
        assert!(s.errors == 1 && s.reopens == 0, "{s:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 0, "a re-open was tried");
    }

    #[test]
    fn a_44k1_source_is_resampled_before_encoding() {
        let src = ToneSource::new(1000.0, 44_100, 2).unwrap();
        let p = AudioPipeline::start(
            Box::new(src),
            Box::new(|| Err(AudioError::NoSource)),
            AudioSettings {
                rate: 44_100,
                channels: 1,
                bitrate: 24_000,
            },
        )
        .unwrap();
        assert_eq!(p.format().rate, 44_100);
        let mut rx = p.subscribe();
        let mut dec = OpusDecoder::new(1).unwrap();
        let mut pcm = Vec::new();
        while pcm.len() < 48_000 {
            let pkt = rx.blocking_recv().unwrap();
            pcm.extend(dec.decode(&pkt.data).unwrap());
        }
        p.stop();
        let hz = dominant_frequency_hz(&pcm, 48_000).unwrap();
        assert!((hz - 1000.0).abs() < 5.0, "{hz} Hz");
    }

    #[test]
    fn bad_settings_are_refused_before_any_thread_starts() {
        let e = AudioPipeline::start(
            scripted(1),
            Box::new(|| Err(AudioError::NoSource)),
            AudioSettings {
                channels: 3,
                ..AudioSettings::default()
            },
        )
        .err()
        .expect("3 channels");
        assert!(e.to_string().contains("channels"), "{e}");
    }
}
