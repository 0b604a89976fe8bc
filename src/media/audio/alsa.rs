//! `alsa:<pcm>`: microphone capture with alsa-lib.
//!
//! The PCM is opened non-blocking (a blocking open would wait forever for a
//! device another program holds) and read with `snd_pcm_wait` + `readi`, so
//! a stalled device turns into a [`AudioError::Timeout`] instead of a hung
//! thread. S16_LE interleaved, 20 ms periods, a buffer of about 4 periods.
//!
//! Rate: the device is first asked for the rate without alsa-lib's
//! resampler, to learn what the hardware gives. If that is not the wanted
//! rate, alsa-lib's rate plugin is allowed (it exists in `plughw:`,
//! `default` and most configured PCMs); a bare `hw:` device has none, so it
//! is re-opened as `plughw:`. Only when no plug layer can do it does the PCM
//! deliver its own rate, and the audio pipeline resamples in software. The
//! log says which of these happened.
//!
//! Timestamps: with the PCM's timestamps switched to CLOCK_MONOTONIC, a
//! period's first sample was captured at `htstamp - (avail + period)/rate`;
//! otherwise the same is computed from `monotonic_us()` after the read.
//! Either measurement is smoothed by [`CaptureClock`], which follows the
//! sound card's sample clock and slews towards the measurements, so stamps
//! advance by (almost exactly) 20 ms per period.

use super::resample::convert_channels;
use super::{
    frames_to_us, period_frames, AudioChunk, AudioError, AudioFormat, AudioSource, OPUS_RATE,
};
use crate::clock;
use ::alsa::pcm::{Access, Format, Frames, HwParams, TstampType, PCM};
use ::alsa::{Direction, ValueOr};
use tracing::{debug, info, warn};

/// A read that sees no audio for this long fails with `Timeout`.
pub const READ_TIMEOUT_MS: u32 = 2_000;
/// The same for the first period after opening: some PCMs (PulseAudio's,
/// for one) take a second or two to deliver their first samples.
pub const FIRST_READ_TIMEOUT_MS: u32 = 5_000;
/// Overruns are logged at most once per this many microseconds.
pub const OVERRUN_LOG_INTERVAL_US: u64 = 10_000_000;
/// Most channels a device may deliver (they are mixed down or dropped).
const MAX_DEVICE_CHANNELS: u32 = 64;
/// Ring buffer length asked for, in periods.
const BUFFER_PERIODS: Frames = 4;

/// True for a bare hardware PCM (`hw:1,0`, `hw:CARD=Device`), which has no
/// plug layer to convert rate, format or channels.
pub fn is_bare_hw(pcm: &str) -> bool {
    pcm == "hw" || pcm.starts_with("hw:")
}

/// The `plughw:` twin of a bare `hw:` PCM name.
pub fn plug_name(pcm: &str) -> String {
    format!("plug{pcm}")
}

/// Follows a capture device's sample clock on CLOCK_MONOTONIC.
///
/// Each period is expected one period after the previous stamp; the stamp
/// moves towards the measurement by a sixteenth of the difference, which
/// smooths jitter and follows a card whose clock drifts. A measurement more
/// than [`CaptureClock::RESYNC_US`] away (input lost without an overrun
/// being reported, or after [`CaptureClock::reset`]) is taken as it is.
/// Whatever the measurements do, stamps advance by at least three quarters
/// of a period, so packet timestamps derived from them stay sane even when
/// a plugin (PulseAudio's, PipeWire's) hides a backlog from `avail`.
#[derive(Clone, Debug)]
pub struct CaptureClock {
    rate: u32,
    last: Option<u64>,
    resync: bool,
}

impl CaptureClock {
    /// Measurement error beyond which the clock follows the measurement.
    pub const RESYNC_US: i64 = 10_000;

    pub fn new(rate: u32) -> Self {
        CaptureClock {
            rate,
            last: None,
            resync: true,
        }
    }

    /// Input was lost (an overrun): follow the next measurement.
    pub fn reset(&mut self) {
        self.resync = true;
    }

    /// The stamp of a period of `frames` frames whose first frame was
    /// measured at `measured_us`.
    pub fn stamp(&mut self, measured_us: u64, frames: usize) -> u64 {
        let measured = i64::try_from(measured_us).unwrap_or(i64::MAX);
        let stamp = match self.last {
            None => measured,
            Some(last) => {
                let last = i64::try_from(last).unwrap_or(i64::MAX);
                let period = frames_to_us(frames as u64, self.rate) as i64;
                let predicted = last.saturating_add(period);
                let err = measured.saturating_sub(predicted);
                let target = if self.resync || err.abs() > Self::RESYNC_US {
                    measured
                } else {
                    predicted + err / 16
                };
                target.max(last.saturating_add((period * 3 / 4).max(1)))
            }
        };
        let stamp = stamp.max(0) as u64;
        self.resync = false;
        self.last = Some(stamp);
        stamp
    }
}

/// Lets a repeated event be logged at most once per interval, counting the
/// occurrences in between.
#[derive(Clone, Debug, Default)]
pub struct LogLimiter {
    last_us: Option<u64>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)`: log now, `n` occurrences were not logged since the last
    /// time. `None`: stay quiet.
    pub fn check(&mut self, now_us: u64, interval_us: u64) -> Option<u64> {
        match self.last_us {
            Some(t) if now_us < t.saturating_add(interval_us) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_us = Some(now_us);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the device agreed to.
#[derive(Clone, Copy, Debug)]
struct Negotiated {
    rate: u32,
    channels: u32,
    period: Frames,
    buffer: Frames,
}

/// An open, running ALSA capture PCM.
pub struct AlsaSource {
    pcm: PCM,
    format: AudioFormat,
    /// Channels the device delivers (converted to `format.channels`).
    dev_channels: u16,
    /// Frames per chunk.
    period: usize,
    buf: Vec<i16>,
    clock: CaptureClock,
    /// The PCM's timestamps are CLOCK_MONOTONIC.
    htstamp: bool,
    overruns: u64,
    overrun_log: LogLimiter,
    bad_stamp_logged: bool,
    /// No period has been read yet.
    first: bool,
}

impl AlsaSource {
    /// Opens `pcm` for capture at `rate` Hz with `channels` channels (see the
    /// module documentation for what happens when the device cannot).
    pub fn open(pcm: &str, rate: u32, channels: u16) -> Result<Self, AudioError> {
        let want_ch = u32::from(channels);
        let (dev, name, got) = choose(pcm, rate, want_ch)?;
        if got.rate != rate && got.rate != OPUS_RATE {
            info!(
                pcm = %name,
                "ALSA capture: the device gives {} Hz and no plug layer converts; campeer resamples to 48000 Hz in software",
                got.rate
            );
        } else if got.rate != rate {
            info!(pcm = %name, "ALSA capture: the device gives 48000 Hz instead of {rate} Hz");
        }
        let dev_channels = u16::try_from(got.channels).unwrap_or(u16::MAX);
        if got.channels != want_ch {
            info!(
                pcm = %name,
                "ALSA capture: the device gives {} channel(s); campeer converts to {channels}",
                got.channels
            );
        }
        let period = period_frames(got.rate);
        let htstamp = setup_sw(&dev, &name, period)?;
        start(&dev, &name)?;
        debug!(
            pcm = %name,
            rate = got.rate,
            hw_period = got.period,
            hw_buffer = got.buffer,
            htstamp,
            "ALSA capture running"
        );
        Ok(AlsaSource {
            pcm: dev,
            format: AudioFormat {
                rate: got.rate,
                channels,
                name,
            },
            dev_channels,
            period,
            buf: Vec::with_capacity(period * usize::from(dev_channels)),
            clock: CaptureClock::new(got.rate),
            htstamp,
            overruns: 0,
            overrun_log: LogLimiter::default(),
            bad_stamp_logged: false,
            first: true,
        })
    }

    fn err(&self, op: &'static str, e: ::alsa::Error) -> AudioError {
        AudioError::from_alsa(&self.format.name, op, e)
    }

    /// Handles a failed wait or read: recovers from an overrun (or a
    /// suspend) and returns Ok to carry on, or the error to give up with.
    fn recover(&mut self, op: &'static str, e: ::alsa::Error) -> Result<(), AudioError> {
        match e.errno() {
            libc::EAGAIN | libc::EINTR => Ok(()),
            libc::EPIPE => {
                self.overruns += 1;
                if let Some(missed) = self
                    .overrun_log
                    .check(clock::monotonic_us(), OVERRUN_LOG_INTERVAL_US)
                {
                    warn!(
                        pcm = %self.format.name,
                        total = self.overruns,
                        "ALSA capture overrun (input was lost); recovered ({missed} more since the last report)"
                    );
                }
                self.buf.clear();
                self.clock.reset();
                self.pcm.prepare().map_err(|e| self.err("prepare", e))?;
                self.pcm.start().map_err(|e| self.err("start", e))
            }
            libc::ESTRPIPE => {
                warn!(pcm = %self.format.name, "ALSA capture was suspended; resuming");
                self.buf.clear();
                self.clock.reset();
                self.pcm
                    .try_recover(e, true)
                    .map_err(|e| self.err("resume", e))?;
                self.pcm.start().or_else(|e| {
                    // Already running after a resume is fine.
                    if e.errno() == libc::EBADFD {
                        Ok(())
                    } else {
                        Err(self.err("start", e))
                    }
                })
            }
            _ => Err(self.err(op, e)),
        }
    }

    /// When the first frame of the period just read was captured, measured.
    fn measure(&mut self) -> u64 {
        let now = clock::monotonic_us();
        let period_us = frames_to_us(self.period as u64, self.format.rate);
        let Ok(status) = self.pcm.status() else {
            return now.saturating_sub(period_us);
        };
        let avail = u64::try_from(status.get_avail()).unwrap_or(0);
        let back = frames_to_us(avail + self.period as u64, self.format.rate);
        if self.htstamp {
            let ts = status.get_htstamp();
            let ts_us = timespec_us(ts.tv_sec, ts.tv_nsec);
            // Trust the device's stamp only when it is recent.
            if ts_us > 0 && (now as i64 - ts_us).abs() < 500_000 {
                // A period's first sample is at least a period old.
                return (ts_us as u64)
                    .saturating_sub(back)
                    .min(now.saturating_sub(period_us));
            }
            if !self.bad_stamp_logged {
                self.bad_stamp_logged = true;
                debug!(pcm = %self.format.name, ts_us, now, "ALSA timestamps look wrong; using the read time");
            }
        }
        now.saturating_sub(back)
    }
}

impl AudioSource for AlsaSource {
    fn format(&self) -> &AudioFormat {
        &self.format
    }

    fn read_period(&mut self) -> Result<AudioChunk, AudioError> {
        let ch = usize::from(self.dev_channels);
        let want = self.period * ch;
        let timeout_ms = if self.first {
            FIRST_READ_TIMEOUT_MS
        } else {
            READ_TIMEOUT_MS
        };
        while self.buf.len() < want {
            match self.pcm.wait(Some(timeout_ms)) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(AudioError::Timeout {
                        pcm: self.format.name.clone(),
                        ms: u64::from(timeout_ms),
                    })
                }
                Err(e) => {
                    self.recover("wait", e)?;
                    continue;
                }
            }
            let have = self.buf.len();
            self.buf.resize(want, 0);
            let read = match self.pcm.io_i16() {
                Ok(io) => io.readi(&mut self.buf[have..]),
                Err(e) => Err(e),
            };
            match read {
                Ok(frames) => self.buf.truncate(have + frames * ch),
                Err(e) => {
                    self.buf.truncate(have);
                    self.recover("read", e)?;
                }
            }
        }
        self.first = false;
        let measured = self.measure();
        let capture_us = self.clock.stamp(measured, self.period);
        let samples = if self.dev_channels == self.format.channels {
            std::mem::replace(&mut self.buf, Vec::with_capacity(want))
        } else {
            let s = convert_channels(&self.buf, self.dev_channels, self.format.channels);
            self.buf.clear();
            s
        };
        Ok(AudioChunk {
            samples,
            capture_us,
        })
    }

    fn overruns(&self) -> u64 {
        self.overruns
    }
}

/// Opens `pcm` (or its `plughw:` twin) and sets it up as near to `rate` Hz
/// and `channels` channels as it goes: natively if the device can, else
/// through alsa-lib's plug layer, else as the device is (the caller
/// converts). Returns the PCM, the name actually opened, and the settings.
fn choose(pcm: &str, rate: u32, channels: u32) -> Result<(PCM, String, Negotiated), AudioError> {
    let fits = |n: &Negotiated| n.rate == rate && n.channels == channels;
    let dev = open_pcm(pcm)?;
    let native = negotiate(&dev, pcm, rate, channels, false);
    let what = match &native {
        Ok(n) if fits(n) => {
            info!(
                pcm,
                rate, channels, "ALSA capture: the device gives {rate} Hz natively"
            );
            return Ok((dev, pcm.to_string(), *n));
        }
        Ok(n) => format!("it gives {} Hz, {} channel(s)", n.rate, n.channels),
        Err(e) => e.to_string(),
    };
    match negotiate(&dev, pcm, rate, channels, true) {
        Ok(n) if fits(&n) => {
            info!(
                pcm,
                "ALSA capture: the device itself cannot ({what}); alsa-lib's plug layer converts to {rate} Hz, {channels} channel(s)"
            );
            return Ok((dev, pcm.to_string(), n));
        }
        Ok(_) => {}
        Err(e) => debug!(pcm, "ALSA capture: with alsa-lib's resampler: {e}"),
    }
    let dev = if is_bare_hw(pcm) {
        // A hw: device is exclusive: close it before opening its plug twin.
        drop(dev);
        let plug = plug_name(pcm);
        let twin = open_pcm(&plug).and_then(|d| {
            let n = negotiate(&d, &plug, rate, channels, true)?;
            Ok((d, n))
        });
        match twin {
            Ok((d, n)) => {
                info!(
                    pcm,
                    "ALSA capture: {pcm} cannot give {rate} Hz S16_LE with {channels} channel(s) ({what}); re-opened as {plug} so the ALSA plug layer converts"
                );
                return Ok((d, plug, n));
            }
            Err(e) => debug!(pcm, "ALSA capture: {plug}: {e}"),
        }
        open_pcm(pcm)?
    } else {
        dev
    };
    // No plug layer does it: take what the device gives; campeer converts.
    let n = negotiate(&dev, pcm, rate, channels, false)
        .or_else(|_| negotiate(&dev, pcm, rate, channels, true))?;
    Ok((dev, pcm.to_string(), n))
}

/// Microseconds of a timespec's fields (generic because `time_t` and
/// `long` are 32-bit on armhf and 64-bit elsewhere).
fn timespec_us(sec: impl Into<i64>, nsec: impl Into<i64>) -> i64 {
    sec.into()
        .saturating_mul(1_000_000)
        .saturating_add(nsec.into() / 1_000)
}

fn open_pcm(pcm: &str) -> Result<PCM, AudioError> {
    if pcm.contains('\0') {
        // PCM::new would panic on an interior NUL.
        return Err(AudioError::BadSpec {
            spec: format!("alsa:{pcm}"),
            reason: "the ALSA PCM name contains a NUL character",
        });
    }
    PCM::new(pcm, Direction::Capture, true).map_err(|e| AudioError::from_alsa(pcm, "open", e))
}

/// Sets the hardware parameters; `resample` allows alsa-lib's rate plugin.
fn negotiate(
    pcm: &PCM,
    name: &str,
    rate: u32,
    channels: u32,
    resample: bool,
) -> Result<Negotiated, AudioError> {
    let alsa_err = |op| move |e| AudioError::from_alsa(name, op, e);
    let unsupported = |what: &str| AudioError::Unsupported {
        pcm: name.to_string(),
        reason: what.to_string(),
    };
    let hwp = HwParams::any(pcm).map_err(alsa_err("hw_params_any"))?;
    // Not every PCM knows the resample switch; its absence is no error.
    let _ = hwp.set_rate_resample(resample);
    hwp.set_access(Access::RWInterleaved)
        .map_err(|_| unsupported("no interleaved read access"))?;
    hwp.set_format(Format::S16LE)
        .map_err(|_| unsupported("no S16_LE sample format"))?;
    hwp.set_channels_near(channels)
        .map_err(|_| unsupported("no usable channel count"))?;
    hwp.set_rate_near(rate, ValueOr::Nearest)
        .map_err(|_| unsupported("no usable sample rate"))?;
    let got_rate = hwp.get_rate().map_err(alsa_err("hw_params_get_rate"))?;
    let period = Frames::try_from(period_frames(got_rate).max(1)).unwrap_or(Frames::MAX);
    let hw_period = hwp
        .set_period_size_near(period, ValueOr::Nearest)
        .map_err(|_| unsupported("no usable period size"))?;
    // Ask for ~4 of our periods (and at least 2 hardware periods); the
    // device picks the nearest it can.
    let _ = hwp.set_buffer_size_near((BUFFER_PERIODS * period).max(2 * hw_period));
    pcm.hw_params(&hwp).map_err(alsa_err("hw_params"))?;
    let cur = pcm
        .hw_params_current()
        .map_err(alsa_err("hw_params_current"))?;
    let got = Negotiated {
        rate: cur.get_rate().map_err(alsa_err("get_rate"))?,
        channels: cur.get_channels().map_err(alsa_err("get_channels"))?,
        period: cur.get_period_size().unwrap_or(0),
        buffer: cur.get_buffer_size().unwrap_or(0),
    };
    if !(1..=MAX_DEVICE_CHANNELS).contains(&got.channels)
        || !(super::MIN_RATE..=super::MAX_RATE).contains(&got.rate)
    {
        return Err(unsupported(&format!(
            "the device settled on {} Hz with {} channel(s), which campeer cannot use",
            got.rate, got.channels
        )));
    }
    Ok(got)
}

/// Sets wake-up and timestamp parameters. Returns whether the PCM's
/// timestamps are CLOCK_MONOTONIC.
fn setup_sw(pcm: &PCM, name: &str, period: usize) -> Result<bool, AudioError> {
    let build = |tstamps: bool| -> Result<(), ::alsa::Error> {
        let swp = pcm.sw_params_current()?;
        swp.set_avail_min(Frames::try_from(period).unwrap_or(Frames::MAX))?;
        if tstamps {
            swp.set_tstamp_mode(true)?;
            swp.set_tstamp_type(TstampType::Monotonic)?;
        }
        pcm.sw_params(&swp)
    };
    match build(true) {
        Ok(()) => Ok(true),
        Err(e) => {
            debug!(
                pcm = name,
                "ALSA capture: no monotonic timestamps ({e}); stamping reads instead"
            );
            build(false).map_err(|e| AudioError::from_alsa(name, "sw_params", e))?;
            Ok(false)
        }
    }
}

fn start(pcm: &PCM, name: &str) -> Result<(), AudioError> {
    pcm.prepare()
        .map_err(|e| AudioError::from_alsa(name, "prepare", e))?;
    pcm.start()
        .map_err(|e| AudioError::from_alsa(name, "start", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hw_names_get_a_plug_twin() {
        assert!(is_bare_hw("hw:1,0"));
        assert!(is_bare_hw("hw:CARD=Device,DEV=0"));
        assert!(is_bare_hw("hw"));
        assert!(!is_bare_hw("plughw:1,0"));
        assert!(!is_bare_hw("default"));
        assert!(!is_bare_hw("dsnoop:1"));
        assert!(!is_bare_hw("hwmix"));
        assert_eq!(plug_name("hw:1,0"), "plughw:1,0");
        assert_eq!(plug_name("hw:CARD=Device"), "plughw:CARD=Device");
    }

    #[test]
    fn capture_clock_follows_the_sample_clock_and_ignores_jitter() {
        let mut c = CaptureClock::new(48_000);
        let mut stamps = Vec::new();
        // Measurements with +-3 ms jitter around a perfect 20 ms schedule.
        let jitter = [0i64, 3_000, -2_000, 1_500, -3_000, 2_500, 0, -1_000];
        for n in 0..400u64 {
            let m = 1_000_000 + n * 20_000;
            let m = (m as i64 + jitter[n as usize % jitter.len()]) as u64;
            stamps.push(c.stamp(m, 960));
        }
        assert_eq!(stamps[0], 1_000_000);
        for w in stamps.windows(2) {
            let d = w[1] - w[0];
            assert!((19_700..=20_300).contains(&d), "step {d}");
        }
        let last = stamps[399] as i64 - (1_000_000 + 399 * 20_000);
        assert!(last.abs() < 1_000, "off by {last} us");
    }

    #[test]
    fn capture_clock_tracks_a_drifting_card() {
        // The card runs 100 ppm fast against CLOCK_MONOTONIC.
        let mut c = CaptureClock::new(48_000);
        let mut last = 0;
        for n in 0..3_000u64 {
            let m = 5_000_000 + (n as f64 * 20_000.0 / 1.0001) as u64;
            last = c.stamp(m, 960);
            let err = last as i64 - m as i64;
            assert!(err.abs() < 2_000, "period {n}: off by {err} us");
        }
        assert!(last > 5_000_000);
    }

    #[test]
    fn capture_clock_resyncs_after_a_gap_and_never_goes_back() {
        let mut c = CaptureClock::new(48_000);
        assert_eq!(c.stamp(100_000, 960), 100_000);
        assert_eq!(c.stamp(120_000, 960), 120_000);
        // 500 ms lost: follow the measurement.
        assert_eq!(c.stamp(640_000, 960), 640_000);
        assert_eq!(c.stamp(660_000, 960), 660_000);
        // A measurement far in the past moves stamps by 3/4 period only.
        assert_eq!(c.stamp(10_000, 960), 675_000);
        c.reset();
        assert_eq!(c.stamp(2_000_000, 960), 2_000_000);
        // After a reset, a measurement in the past still cannot go back.
        c.reset();
        assert_eq!(c.stamp(1_000_000, 960), 2_015_000);
    }

    #[test]
    fn capture_clock_spreads_a_hidden_backlog() {
        // A plugin hides a 200 ms backlog: ten periods are read at once and
        // all measure the same, then reads are paced again.
        let mut c = CaptureClock::new(48_000);
        let mut t = 1_000_000u64;
        for _ in 0..5 {
            c.stamp(t, 960);
            t += 20_000;
        }
        let stall_end = t + 400_000;
        let mut stamps = vec![c.stamp(stall_end, 960)];
        for _ in 0..9 {
            stamps.push(c.stamp(stall_end + 50, 960));
        }
        for k in 1..100u64 {
            stamps.push(c.stamp(stall_end + k * 20_000, 960));
        }
        for w in stamps.windows(2) {
            let d = w[1] - w[0];
            assert!((15_000..=30_000).contains(&d), "step {d}");
        }
        // It has converged on the measurements again.
        let last = stamps[stamps.len() - 1];
        assert!(last.abs_diff(stall_end + 99 * 20_000) < 1_000, "{last}");
    }

    #[test]
    fn timespecs_convert_on_any_width() {
        assert_eq!(timespec_us(2i64, 500_000_999i64), 2_500_000);
        assert_eq!(timespec_us(2i32, 1_000i32), 2_000_001);
        assert_eq!(timespec_us(i64::MAX, 0i64), i64::MAX);
    }

    #[test]
    fn log_limiter_allows_one_per_interval() {
        let mut l = LogLimiter::default();
        assert_eq!(l.check(1_000, 10_000_000), Some(0));
        assert_eq!(l.check(2_000, 10_000_000), None);
        assert_eq!(l.check(9_000_000, 10_000_000), None);
        assert_eq!(l.check(10_001_000, 10_000_000), Some(2));
        assert_eq!(l.check(10_002_000, 10_000_000), None);
        assert_eq!(l.check(30_000_000, 10_000_000), Some(1));
    }

    #[test]
    fn opening_a_name_with_nul_is_an_error_not_a_panic() {
        let e = open_pcm("hw\0:1").expect_err("NUL is refused");
        assert!(matches!(e, AudioError::BadSpec { .. }), "{e}");
    }

    #[test]
    fn opening_a_missing_card_says_so() {
        let e = AlsaSource::open("hw:CARD=campeer_no_such_card", 48_000, 1)
            .err()
            .expect("no such card");
        assert!(
            matches!(e, AudioError::Missing { .. } | AudioError::Alsa { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("campeer_no_such_card"), "{e}");
    }
}
