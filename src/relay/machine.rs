//! When the relay task creates, checks, re-keys or re-creates its Janus
//! mountpoint, and whether it feeds it: decided from `now` and what
//! happened, nothing else, so it is tested in simulated time.

use crate::backoff::Backoff;
use std::time::Duration;

/// How often a live mountpoint is checked (`info`: it exists, its viewer
/// count; the request also keeps the Janus session alive).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long the mountpoint is fed after a viewer was handed over, before
/// Janus reports it watching (its handshake takes a moment).
pub const HANDOVER_GRACE: Duration = Duration::from_secs(20);
/// Retry delays after Janus failed or refused.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create a mountpoint (destroying the previous one first, if known).
    Create,
    /// Ask Janus about the mountpoint.
    Check,
    /// Give the mountpoint a new PIN.
    Rekey,
    /// Nothing until this time (µs), or until something happens.
    Wait(u64),
}

/// See the module documentation.
#[derive(Debug)]
pub struct RelayMachine {
    up: bool,
    recreate: bool,
    backoff: Backoff,
    /// Next create attempt (down) or next check (up).
    next_us: u64,
    rekey_at_us: Option<u64>,
    pin_lifetime_us: u64,
    feed_until_us: u64,
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl RelayMachine {
    /// Down, creating at once; `pin_lifetime` zero keeps a PIN for the
    /// mountpoint's life.
    pub fn new(now_us: u64, pin_lifetime: Duration) -> Self {
        RelayMachine {
            up: false,
            recreate: false,
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            next_us: now_us,
            rekey_at_us: None,
            pin_lifetime_us: us(pin_lifetime),
            feed_until_us: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn step(&self, now_us: u64) -> Step {
        if !self.up {
            return if now_us >= self.next_us {
                Step::Create
            } else {
                Step::Wait(self.next_us)
            };
        }
        if self.recreate {
            return Step::Create;
        }
        if let Some(at) = self.rekey_at_us {
            if now_us >= at {
                return Step::Rekey;
            }
        }
        if now_us >= self.next_us {
            return Step::Check;
        }
        Step::Wait(
            self.rekey_at_us
                .map_or(self.next_us, |r| r.min(self.next_us)),
        )
    }

    /// A mountpoint was created (with a fresh PIN).
    pub fn created(&mut self, now_us: u64) {
        self.up = true;
        self.recreate = false;
        self.backoff.reset();
        self.next_us = now_us + us(CHECK_EVERY);
        self.rekey_at_us = (self.pin_lifetime_us > 0).then(|| now_us + self.pin_lifetime_us);
    }

    /// Janus failed, refused, or lost the mountpoint: down until the
    /// returned delay (drawn with `unit` in [0, 1) as jitter) has passed.
    pub fn failed(&mut self, now_us: u64, unit: f64) -> Duration {
        self.up = false;
        self.rekey_at_us = None;
        let d = self.backoff.next_delay(unit);
        self.next_us = now_us + us(d);
        d
    }

    /// A check found the mountpoint well.
    pub fn checked(&mut self, now_us: u64) {
        self.next_us = now_us + us(CHECK_EVERY);
    }

    /// The PIN was replaced.
    pub fn rekeyed(&mut self, now_us: u64) {
        self.rekey_at_us = Some(now_us + self.pin_lifetime_us);
    }

    /// Every current PIN holder must lose access (a key was revoked):
    /// re-create the mountpoint, which ends every relayed stream; viewers
    /// still authorized come back through the device.
    pub fn revoke(&mut self) {
        if self.up {
            self.recreate = true;
        }
    }

    /// A viewer was just handed over.
    pub fn handed_over(&mut self, now_us: u64) {
        self.feed_until_us = now_us + us(HANDOVER_GRACE);
    }

    /// Whether the encoders' output goes to Janus now: only while up and
    /// someone watches there or is about to.
    pub fn feeding(&self, now_us: u64, viewers: u64) -> bool {
        self.up && (viewers > 0 || now_us < self.feed_until_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn creates_then_checks_on_a_period() {
        let mut m = RelayMachine::new(0, Duration::ZERO);
        assert_eq!(m.step(0), Step::Create);
        m.created(0);
        assert_eq!(m.step(1), Step::Wait(2 * S));
        assert_eq!(m.step(2 * S), Step::Check);
        m.checked(2 * S);
        assert_eq!(m.step(3 * S), Step::Wait(4 * S));
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let mut m = RelayMachine::new(0, Duration::ZERO);
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..9 {
            assert_eq!(m.step(now), Step::Create);
            let d = m.failed(now, 1.0);
            delays.push(d);
            assert_eq!(m.step(now + 1), Step::Wait(now + us(d)));
            now += us(d);
        }
        assert_eq!(delays[0], RETRY_MIN);
        assert_eq!(delays[1], RETRY_MIN * 2);
        assert_eq!(*delays.last().unwrap(), RETRY_MAX);
        m.created(now);
        assert!(m.is_up());
        assert_eq!(
            m.failed(now, 1.0),
            RETRY_MIN,
            "a success resets the backoff"
        );
    }

    #[test]
    fn a_lost_mountpoint_is_recreated_after_the_delay() {
        let mut m = RelayMachine::new(0, Duration::ZERO);
        m.created(0);
        assert_eq!(m.step(2 * S), Step::Check);
        let d = m.failed(2 * S, 0.0);
        assert_eq!(d, RETRY_MIN / 2);
        assert!(!m.is_up());
        assert_eq!(m.step(2 * S + us(d)), Step::Create);
    }

    #[test]
    fn pins_are_replaced_on_their_lifetime() {
        let mut m = RelayMachine::new(0, Duration::from_secs(10));
        m.created(0);
        assert_eq!(m.step(9 * S), Step::Check);
        m.checked(9 * S);
        assert_eq!(m.step(10 * S), Step::Rekey);
        m.rekeyed(10 * S);
        assert_eq!(m.step(10 * S), Step::Wait(11 * S));
        assert_eq!(m.step(20 * S), Step::Rekey);
    }

    #[test]
    fn revocation_recreates_only_a_live_mountpoint() {
        let mut m = RelayMachine::new(0, Duration::ZERO);
        m.revoke();
        assert_eq!(m.step(0), Step::Create);
        m.created(0);
        m.revoke();
        assert_eq!(m.step(1), Step::Create);
        m.created(1);
        assert_eq!(m.step(2), Step::Wait(1 + 2 * S));
    }

    #[test]
    fn feeds_only_while_watched_or_just_handed_over() {
        let mut m = RelayMachine::new(0, Duration::ZERO);
        assert!(!m.feeding(0, 5), "down: nothing to feed");
        m.created(0);
        assert!(!m.feeding(1, 0), "nobody watches, nobody handed over");
        m.handed_over(S);
        assert!(m.feeding(S, 0));
        assert!(m.feeding(S + us(HANDOVER_GRACE) - 1, 0));
        assert!(!m.feeding(S + us(HANDOVER_GRACE), 0));
        assert!(m.feeding(100 * S, 1));
    }
}
