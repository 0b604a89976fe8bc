//! The daemon's periodic decisions, without I/O: when to publish presence
//! (session changes are coalesced to at most one publication per
//! [`PRESENCE_MIN_GAP_US`]), when to feed systemd's watchdog (only while
//! the media loop is healthy) and when to log a stats line. The daemon loop
//! gives it the time and the pipeline's counters and carries out what it
//! returns; the unit tests drive it in simulated time.

use crate::supervisor::Health;

/// Shortest gap between two presence publications caused by session
/// changes, µs.
pub const PRESENCE_MIN_GAP_US: u64 = 500_000;

/// The encoder's running totals, as the video pipeline counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncodeTotals {
    pub frames_encoded: u64,
    pub total_encode_us: u64,
}

/// What one tick sees.
#[derive(Clone, Copy, Debug)]
pub struct TickInput {
    /// CLOCK_MONOTONIC, µs.
    pub now_us: u64,
    /// The media loop's health, if there is a video pipeline.
    pub media: Health,
    /// The encoder's totals (zero without video).
    pub encode: EncodeTotals,
}

/// A stats line to log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatsLine {
    /// Frames encoded per second since the last line.
    pub fps: f64,
    /// Mean encode time over the pipeline's life, ms.
    pub encode_ms: f64,
}

/// What the daemon does after a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TickActions {
    /// Publish the presence document now.
    pub publish_presence: bool,
    /// Send WATCHDOG=1.
    pub ping_watchdog: bool,
    /// The ping is due but withheld: the media loop is stalled (logged, and
    /// systemd restarts the daemon when its watchdog runs out).
    pub withheld: Option<Health>,
    /// Log a stats line.
    pub stats: Option<StatsLine>,
}

/// The periodic state: timestamps of the last presence, ping and stats.
#[derive(Debug)]
pub struct Housekeeping {
    presence_dirty: bool,
    presence_at_us: Option<u64>,
    watchdog_every_us: Option<u64>,
    pinged_at_us: u64,
    stats_every_us: u64,
    stats_at_us: u64,
    last: EncodeTotals,
}

impl Housekeeping {
    /// `watchdog_every_us`: systemd's ping interval, if it asked for one;
    /// `stats_every_us`: 0 turns stats lines off.
    pub fn new(
        now_us: u64,
        watchdog_every_us: Option<u64>,
        stats_every_us: u64,
        encode: EncodeTotals,
    ) -> Self {
        Housekeeping {
            presence_dirty: false,
            presence_at_us: None,
            watchdog_every_us,
            pinged_at_us: now_us,
            stats_every_us,
            stats_at_us: now_us,
            last: encode,
        }
    }

    /// The session count or the nonce changed: presence is due (coalesced).
    pub fn presence_changed(&mut self) {
        self.presence_dirty = true;
    }

    /// The link (re)connected: presence is published at once, whatever the
    /// gap, since the broker may have lost the retained copy.
    pub fn connected(&mut self, now_us: u64) {
        self.presence_dirty = false;
        self.presence_at_us = Some(now_us);
    }

    /// Decides what is due at `input.now_us`.
    pub fn tick(&mut self, input: &TickInput) -> TickActions {
        let now = input.now_us;
        let mut actions = TickActions::default();
        if let Some(every) = self.watchdog_every_us {
            if now.saturating_sub(self.pinged_at_us) >= every {
                if input.media == Health::Ok {
                    actions.ping_watchdog = true;
                    self.pinged_at_us = now;
                } else {
                    actions.withheld = Some(input.media);
                }
            }
        }
        let gap_ok = self
            .presence_at_us
            .is_none_or(|at| now.saturating_sub(at) >= PRESENCE_MIN_GAP_US);
        if self.presence_dirty && gap_ok {
            actions.publish_presence = true;
            self.presence_dirty = false;
            self.presence_at_us = Some(now);
        }
        let since = now.saturating_sub(self.stats_at_us);
        if self.stats_every_us != 0 && since >= self.stats_every_us {
            actions.stats = Some(self.stats_line(since, input.encode));
            self.stats_at_us = now;
        }
        actions
    }

    fn stats_line(&mut self, since_us: u64, totals: EncodeTotals) -> StatsLine {
        let frames = totals
            .frames_encoded
            .saturating_sub(self.last.frames_encoded);
        self.last = totals;
        let encode_ms = if totals.frames_encoded > 0 {
            totals.total_encode_us as f64 / totals.frames_encoded as f64 / 1000.0
        } else {
            0.0
        };
        StatsLine {
            fps: frames as f64 * 1e6 / since_us.max(1) as f64,
            encode_ms,
        }
    }
}

#[cfg(test)]
mod tests;
