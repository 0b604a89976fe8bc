//! `tone:<hz>`: a sine, paced on CLOCK_MONOTONIC like a real device.
//!
//! Period `n` holds the samples captured in `[start + n*20 ms, start +
//! (n+1)*20 ms)`; it is handed out when that interval is over, stamped with
//! its first sample's time. Times are computed from the period index, never
//! accumulated, so the tone does not drift from the monotonic clock. The
//! phase runs on across periods, so the signal has no seams.

use super::{
    frames_to_us, period_frames, AudioChunk, AudioError, AudioFormat, AudioSource, MAX_RATE,
    MIN_RATE,
};
use crate::clock;
use std::time::Duration;

/// Peak amplitude, as a fraction of full scale.
pub const TONE_AMPLITUDE: f64 = 0.3;

/// When the reader is this far behind the schedule, the tone skips ahead
/// (as a real device would overrun) instead of bursting out stale periods.
pub const MAX_LAG_US: u64 = 200_000;

/// The time a paced source reads and sleeps on. Real sources use
/// [`MonotonicClock`]; tests pass a fake one so pacing needs no sleeping.
pub trait PaceClock: Send {
    /// Now, microseconds of CLOCK_MONOTONIC.
    fn now_us(&mut self) -> u64;
    /// Returns at or after `t_us`.
    fn sleep_until_us(&mut self, t_us: u64);
}

/// CLOCK_MONOTONIC and `thread::sleep`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl PaceClock for MonotonicClock {
    fn now_us(&mut self) -> u64 {
        clock::monotonic_us()
    }

    fn sleep_until_us(&mut self, t_us: u64) {
        loop {
            let now = clock::monotonic_us();
            if now >= t_us {
                return;
            }
            std::thread::sleep(Duration::from_micros(t_us - now));
        }
    }
}

/// When period `n` of a source started at `start_us` was captured (its first
/// sample) and when it is complete: `(capture_us, ready_us)`.
pub fn period_times(start_us: u64, n: u64, rate: u32) -> (u64, u64) {
    let frames = period_frames(rate) as u64;
    let capture = start_us + frames_to_us(n * frames, rate);
    let ready = start_us + frames_to_us((n + 1) * frames, rate);
    (capture, ready)
}

/// A sine generator paced like a capture device.
pub struct ToneSource {
    hz: f32,
    format: AudioFormat,
    /// Phase in cycles, in [0, 1).
    phase: f64,
    /// Phase advance per frame, cycles.
    step: f64,
    amplitude: f64,
    start_us: u64,
    /// Index of the next period.
    n: u64,
    overruns: u64,
    clock: Box<dyn PaceClock>,
}

impl ToneSource {
    /// A tone of `hz` at `rate` Hz with `channels` identical channels, paced
    /// on CLOCK_MONOTONIC from now.
    pub fn new(hz: f32, rate: u32, channels: u16) -> Result<Self, AudioError> {
        Self::with_clock(hz, rate, channels, Box::new(MonotonicClock))
    }

    /// Like `new`, on the given clock.
    pub fn with_clock(
        hz: f32,
        rate: u32,
        channels: u16,
        mut clock: Box<dyn PaceClock>,
    ) -> Result<Self, AudioError> {
        let bad = |reason| AudioError::BadTone { hz, rate, reason };
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(bad("the rate must be between 8000 and 192000 Hz"));
        }
        if !(1..=2).contains(&channels) {
            return Err(bad("channels must be 1 or 2"));
        }
        if !hz.is_finite() || hz <= 0.0 || f64::from(hz) >= f64::from(rate) / 2.0 {
            return Err(bad("the frequency must be above 0 and below half the rate"));
        }
        let start_us = clock.now_us();
        Ok(ToneSource {
            hz,
            format: AudioFormat {
                rate,
                channels,
                name: format!("tone {hz} Hz"),
            },
            phase: 0.0,
            step: f64::from(hz) / f64::from(rate),
            amplitude: TONE_AMPLITUDE * f64::from(i16::MAX),
            start_us,
            n: 0,
            overruns: 0,
            clock,
        })
    }

    /// The frequency, hertz.
    pub fn hz(&self) -> f32 {
        self.hz
    }

    /// Fills `out` with the next frames of the sine (all channels equal).
    fn synthesize(&mut self, out: &mut Vec<i16>, frames: usize) {
        let ch = usize::from(self.format.channels);
        out.reserve(frames * ch);
        for _ in 0..frames {
            let v = (self.amplitude * (std::f64::consts::TAU * self.phase).sin()).round() as i16;
            for _ in 0..ch {
                out.push(v);
            }
            self.phase += self.step;
            if self.phase >= 1.0 {
                self.phase -= 1.0;
            }
        }
    }
}

impl AudioSource for ToneSource {
    fn format(&self) -> &AudioFormat {
        &self.format
    }

    fn read_period(&mut self) -> Result<AudioChunk, AudioError> {
        let rate = self.format.rate;
        let (mut capture_us, mut ready_us) = period_times(self.start_us, self.n, rate);
        let now = self.clock.now_us();
        if now > ready_us + MAX_LAG_US {
            // The reader stalled: start a fresh schedule whose current period
            // is complete now, as a device that overran would.
            self.overruns += 1;
            let frames = period_frames(rate) as u64;
            self.start_us = now - frames_to_us(frames, rate);
            self.n = 0;
            (capture_us, ready_us) = period_times(self.start_us, 0, rate);
        }
        self.clock.sleep_until_us(ready_us);
        let mut samples = Vec::new();
        self.synthesize(&mut samples, period_frames(rate));
        self.n += 1;
        Ok(AudioChunk {
            samples,
            capture_us,
        })
    }

    fn overruns(&self) -> u64 {
        self.overruns
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A clock that only moves when slept on (or when told to).
    #[derive(Clone, Default)]
    pub(crate) struct FakeClock {
        pub now: Arc<Mutex<u64>>,
        pub sleeps: Arc<Mutex<Vec<u64>>>,
    }

    impl FakeClock {
        pub fn at(t: u64) -> Self {
            let c = FakeClock::default();
            *c.now.lock().unwrap() = t;
            c
        }
        pub fn advance(&self, d: u64) {
            *self.now.lock().unwrap() += d;
        }
    }

    impl PaceClock for FakeClock {
        fn now_us(&mut self) -> u64 {
            *self.now.lock().unwrap()
        }
        fn sleep_until_us(&mut self, t_us: u64) {
            let mut now = self.now.lock().unwrap();
            self.sleeps.lock().unwrap().push(t_us);
            *now = (*now).max(t_us);
        }
    }

    #[test]
    fn period_times_do_not_drift() {
        assert_eq!(period_times(1_000, 0, 48_000), (1_000, 21_000));
        assert_eq!(period_times(1_000, 3, 48_000), (61_000, 81_000));
        // One hour of periods lands exactly on the hour.
        let n = 3600 * 50;
        assert_eq!(period_times(7, n, 48_000).0, 7 + 3_600_000_000);
        assert_eq!(period_times(7, n, 44_100).0, 7 + 3_600_000_000);
        assert_eq!(period_times(7, n, 16_000).0, 7 + 3_600_000_000);
    }

    #[test]
    fn rejects_bad_tones() {
        for (hz, rate, ch) in [
            (0.0, 48_000, 1),
            (-1.0, 48_000, 1),
            (f32::NAN, 48_000, 1),
            (24_000.0, 48_000, 1),
            (440.0, 4_000, 1),
            (440.0, 48_000, 3),
        ] {
            let e = ToneSource::with_clock(hz, rate, ch, Box::new(FakeClock::at(0)))
                .err()
                .expect("bad tone");
            assert!(matches!(e, AudioError::BadTone { .. }), "{e}");
        }
    }

    #[test]
    fn paces_on_the_clock_and_stamps_first_samples() {
        let clock = FakeClock::at(5_000_000);
        let mut t = ToneSource::with_clock(440.0, 48_000, 1, Box::new(clock.clone())).unwrap();
        for n in 0..100u64 {
            let c = t.read_period().unwrap();
            assert_eq!(c.samples.len(), 960);
            assert_eq!(c.capture_us, 5_000_000 + n * 20_000);
            // Handed out when the period is complete, not before.
            assert_eq!(*clock.now.lock().unwrap(), 5_000_000 + (n + 1) * 20_000);
        }
        assert_eq!(t.overruns(), 0);
    }

    #[test]
    fn a_slow_reader_catches_up_without_drift() {
        let clock = FakeClock::at(0);
        let mut t = ToneSource::with_clock(440.0, 48_000, 2, Box::new(clock.clone())).unwrap();
        t.read_period().unwrap();
        // The reader is 50 ms late: the next periods come at once, on schedule.
        clock.advance(50_000);
        assert_eq!(t.read_period().unwrap().capture_us, 20_000);
        assert_eq!(t.read_period().unwrap().capture_us, 40_000);
        assert_eq!(t.read_period().unwrap().capture_us, 60_000);
        assert_eq!(*clock.now.lock().unwrap(), 80_000);
        assert_eq!(t.overruns(), 0);
    }

    #[test]
    fn a_stalled_reader_skips_ahead() {
        let clock = FakeClock::at(0);
        let mut t = ToneSource::with_clock(440.0, 48_000, 1, Box::new(clock.clone())).unwrap();
        t.read_period().unwrap();
        clock.advance(1_000_000);
        let c = t.read_period().unwrap();
        assert_eq!(t.overruns(), 1);
        // The period handed out ends now.
        assert_eq!(c.capture_us, 1_020_000 - 20_000);
        assert_eq!(t.read_period().unwrap().capture_us, 1_020_000);
    }

    #[test]
    fn the_sine_is_continuous_across_periods() {
        let mut t = ToneSource::with_clock(440.0, 48_000, 2, Box::new(FakeClock::at(0))).unwrap();
        let mut all = Vec::new();
        for _ in 0..50 {
            let c = t.read_period().unwrap();
            assert_eq!(c.samples.len(), 1920);
            all.extend(c.samples.chunks(2).map(|f| {
                assert_eq!(f[0], f[1]);
                f[0]
            }));
        }
        let peak = all.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((9_700..=9_831).contains(&peak), "peak {peak}");
        // Largest step between neighbours is what a 440 Hz sine allows:
        // A * 2*pi*f/rate ~= 566; a phase seam would be far larger.
        let max_step = all
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(max_step <= 570, "max step {max_step}");
        // One second of 440 Hz: 880 zero crossings (+-1).
        let crossings = all.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((879..=881).contains(&crossings), "{crossings}");
    }
}
