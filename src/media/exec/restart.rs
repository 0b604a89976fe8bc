//! When to (re)start the child of an `exec:` source. Pure: time and jitter
//! are passed in, so every rule is unit-tested in simulated time.
//!
//! - A child that exits is restarted after a backoff: 500 ms doubling to
//!   30 s (with jitter), so a camera that is missing does not make the
//!   daemon fork a process every few milliseconds.
//! - A child that had run for at least [`HEALTHY_AFTER_US`] before exiting
//!   counts as having worked: its restart starts again from 500 ms.
//! - In on-demand mode (`video.exec_start = "viewer"`) the child runs while
//!   someone watches, and is stopped [`LINGER_US`] after the last viewer
//!   left (a viewer reloading the page does not restart the camera).

use crate::backoff::Backoff;
use std::time::Duration;

/// First restart delay.
pub const RESTART_MIN: Duration = Duration::from_millis(500);
/// Longest restart delay.
pub const RESTART_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long had worked (µs).
pub const HEALTHY_AFTER_US: u64 = 10_000_000;
/// On demand: how long the child outlives the last viewer (µs).
pub const LINGER_US: u64 = 10_000_000;

/// What the supervisor should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the child (none is running).
    Start,
    /// Keep things as they are; look again after at most this many µs.
    Wait(u64),
    /// Stop the running child: nobody has watched for the linger time.
    Stop,
}

/// The restart and demand decisions of one `exec:` source.
#[derive(Debug)]
pub struct RestartPolicy {
    on_demand: bool,
    backoff: Backoff,
    /// No start before this time (µs), after an exit.
    not_before_us: u64,
    /// When the running child was started (µs), if one runs.
    started_us: Option<u64>,
    /// Last time a viewer was seen (µs).
    wanted_at_us: Option<u64>,
}

impl RestartPolicy {
    pub fn new(on_demand: bool) -> Self {
        RestartPolicy {
            on_demand,
            backoff: Backoff::new(RESTART_MIN, RESTART_MAX),
            not_before_us: 0,
            started_us: None,
            wanted_at_us: None,
        }
    }

    /// Decides at `now_us`; `wanted` says whether a viewer is watching.
    pub fn decide(&mut self, wanted: bool, now_us: u64) -> Action {
        if wanted {
            self.wanted_at_us = Some(now_us);
        }
        let demand = !self.on_demand
            || self
                .wanted_at_us
                .is_some_and(|t| now_us.saturating_sub(t) < LINGER_US);
        match (self.started_us.is_some(), demand) {
            (true, true) => Action::Wait(1_000_000),
            (true, false) => Action::Stop,
            (false, false) => Action::Wait(1_000_000),
            (false, true) if now_us >= self.not_before_us => Action::Start,
            (false, true) => Action::Wait(self.not_before_us - now_us),
        }
    }

    /// The child was started at `now_us`.
    pub fn started(&mut self, now_us: u64) {
        self.started_us = Some(now_us);
    }

    /// The child ended at `now_us` (by itself, or stopped by `Stop`);
    /// returns the delay before the next start is allowed (µs). `unit` in
    /// [0, 1) is the jitter.
    pub fn exited(&mut self, stopped_by_us: bool, now_us: u64, unit: f64) -> u64 {
        let ran = self
            .started_us
            .take()
            .map_or(0, |t| now_us.saturating_sub(t));
        if ran >= HEALTHY_AFTER_US || stopped_by_us {
            self.backoff.reset();
        }
        let delay = if stopped_by_us {
            0
        } else {
            self.backoff.next_delay(unit).as_micros() as u64
        };
        self.not_before_us = now_us + delay;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn with_the_daemon_starts_at_once_and_waits_while_running() {
        let mut p = RestartPolicy::new(false);
        assert_eq!(p.decide(false, 0), Action::Start);
        p.started(0);
        assert_eq!(p.decide(false, 5 * S), Action::Wait(S));
    }

    #[test]
    fn a_crashing_child_is_restarted_with_growing_delays_then_reset() {
        let mut p = RestartPolicy::new(false);
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..8 {
            assert_eq!(p.decide(false, now), Action::Start);
            p.started(now);
            now += 100_000; // crashes after 100 ms
            let d = p.exited(false, now, 1.0);
            delays.push(d / 1000);
            // Too early: wait exactly the rest of the delay.
            assert_eq!(p.decide(false, now + 1), Action::Wait(d - 1));
            now += d;
        }
        assert_eq!(
            delays,
            vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        // A run of more than 10 s counts as success: back to 500 ms.
        assert_eq!(p.decide(false, now), Action::Start);
        p.started(now);
        now += 11 * S;
        assert_eq!(p.exited(false, now, 1.0), 500_000);
    }

    #[test]
    fn jitter_keeps_delays_between_half_and_full() {
        let mut p = RestartPolicy::new(false);
        p.started(0);
        assert_eq!(p.exited(false, 1, 0.0), 250_000);
    }

    #[test]
    fn on_demand_starts_with_a_viewer_and_stops_after_the_linger() {
        let mut p = RestartPolicy::new(true);
        assert_eq!(p.decide(false, 0), Action::Wait(S), "nobody watches");
        assert_eq!(p.decide(true, 2 * S), Action::Start);
        p.started(2 * S);
        assert_eq!(p.decide(true, 3 * S), Action::Wait(S));
        // The viewer leaves at 3 s: the child lingers 10 s.
        assert_eq!(p.decide(false, 12 * S), Action::Wait(S));
        assert_eq!(p.decide(false, 13 * S), Action::Stop);
        // Stopping on purpose is no failure: the next viewer starts it at once.
        assert_eq!(p.exited(true, 13 * S, 1.0), 0);
        assert_eq!(p.decide(false, 14 * S), Action::Wait(S));
        assert_eq!(p.decide(true, 20 * S), Action::Start);
    }

    #[test]
    fn a_viewer_returning_within_the_linger_keeps_the_child() {
        let mut p = RestartPolicy::new(true);
        assert_eq!(p.decide(true, 0), Action::Start);
        p.started(0);
        assert_eq!(p.decide(false, 5 * S), Action::Wait(S));
        assert_eq!(p.decide(true, 9 * S), Action::Wait(S));
        assert_eq!(p.decide(false, 18 * S), Action::Wait(S));
        assert_eq!(p.decide(false, 19 * S), Action::Stop);
    }
}
