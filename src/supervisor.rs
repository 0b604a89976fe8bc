//! systemd integration: READY=1 once the camera and the broker are up,
//! STOPPING=1 on shutdown, and WATCHDOG=1 only while the media loop makes
//! progress, so a stalled camera or encoder gets the daemon restarted.
//!
//! Outside systemd (no NOTIFY_SOCKET) every call here is a no-op.

use crate::encode::pipeline::PipelineStats;
use std::time::Duration;
use tracing::{debug, warn};

/// How long the capture thread may go without a heartbeat, or the encoder
/// without taking a captured frame, before the media loop counts as stalled.
pub const STALL_AFTER_US: u64 = 6_000_000;

/// Media health, judged from pipeline counters. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct MediaHealth {
    last_captured: u64,
    captured_at_us: u64,
}

/// What `MediaHealth::check` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The capture thread has not looped for this long (µs): a hung driver.
    CaptureStalled(u64),
    /// Frames were captured but none reached the encoder for this long (µs).
    EncoderStalled(u64),
}

impl MediaHealth {
    /// Judges the pipeline at `now_us` (CLOCK_MONOTONIC). A camera that is
    /// away is healthy as long as the capture thread keeps retrying.
    pub fn check(&mut self, stats: &PipelineStats, now_us: u64) -> Health {
        if stats.frames_captured != self.last_captured {
            self.last_captured = stats.frames_captured;
            self.captured_at_us = now_us;
        }
        let beat_age = now_us.saturating_sub(stats.capture_heartbeat_us);
        if stats.capture_heartbeat_us != 0 && beat_age > STALL_AFTER_US {
            return Health::CaptureStalled(beat_age);
        }
        // Frames keep arriving but the encoder thread has not taken one.
        let encoder_age = now_us.saturating_sub(stats.last_frame_at_us);
        let capturing = now_us.saturating_sub(self.captured_at_us) < STALL_AFTER_US;
        if capturing
            && stats.frames_captured > 0
            && stats.last_frame_at_us != 0
            && encoder_age > STALL_AFTER_US
        {
            return Health::EncoderStalled(encoder_age);
        }
        Health::Ok
    }
}

/// Talks to systemd.
pub struct Supervisor {
    watchdog: Option<Duration>,
    ready: bool,
}

impl Supervisor {
    /// Reads the watchdog interval systemd set, if any.
    pub fn new() -> Self {
        let mut usec = 0u64;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
        if let Some(w) = watchdog {
            debug!(
                interval_ms = w.as_millis() as u64,
                "systemd watchdog enabled"
            );
        }
        Supervisor {
            watchdog,
            ready: false,
        }
    }

    /// How often to ping the watchdog (half its interval), if enabled.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Whether READY=1 was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// READY=1, once.
    pub fn ready(&mut self, status: &str) {
        if self.ready {
            return;
        }
        self.ready = true;
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    /// WATCHDOG=1.
    pub fn alive(&self) {
        if self.watchdog.is_some() {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }

    /// STATUS=... for `systemctl status`.
    pub fn status(&self, status: &str) {
        notify(&[sd_notify::NotifyState::Status(status)]);
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        notify(&[sd_notify::NotifyState::Stopping]);
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        warn!("cannot notify systemd: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(captured: u64, heartbeat: u64, encoded_at: u64) -> PipelineStats {
        PipelineStats {
            frames_captured: captured,
            capture_heartbeat_us: heartbeat,
            last_frame_at_us: encoded_at,
            ..Default::default()
        }
    }

    #[test]
    fn a_flowing_pipeline_is_healthy() {
        let mut h = MediaHealth::default();
        for i in 1..100u64 {
            let now = i * 33_000;
            assert_eq!(h.check(&stats(i, now, now), now), Health::Ok);
        }
    }

    #[test]
    fn a_stuck_capture_thread_is_a_stall() {
        let mut h = MediaHealth::default();
        assert_eq!(
            h.check(&stats(10, 1_000_000, 1_000_000), 1_000_000),
            Health::Ok
        );
        assert_eq!(
            h.check(&stats(10, 1_000_000, 1_000_000), 8_000_000),
            Health::CaptureStalled(7_000_000)
        );
    }

    #[test]
    fn a_camera_being_reopened_is_not_a_stall() {
        // No frames for 20 s, but the capture thread keeps retrying.
        let mut h = MediaHealth::default();
        h.check(&stats(10, 1_000_000, 1_000_000), 1_000_000);
        for t in 2..20u64 {
            let now = t * 1_000_000;
            assert_eq!(
                h.check(&stats(10, now - 500_000, 1_000_000), now),
                Health::Ok
            );
        }
    }

    #[test]
    fn frames_captured_but_never_encoded_is_an_encoder_stall() {
        let mut h = MediaHealth::default();
        let mut verdict = Health::Ok;
        for t in 1..=10u64 {
            let now = t * 1_000_000;
            verdict = h.check(&stats(t * 30, now, 1_000_000), now);
        }
        assert_eq!(verdict, Health::EncoderStalled(9_000_000));
    }
}
