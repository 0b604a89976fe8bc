//! Retained messages on session topics: nobody's business to keep.
//!
//! A session topic (`B/session/<sid>/in`) carries one viewer's signaling;
//! nothing on it is ever meant to be retained, and the device publishes
//! none itself. But any client allowed to write there may set the retain
//! flag, and every retained message (up to the broker's 64 KiB payload
//! limit, on as many made-up session ids as it likes) stays in the
//! broker's memory until someone empties it. The device empties them: a
//! zero-length retained publish on the same topic deletes the stored one.
//! Its content is never used (a retained offer replayed later would fail
//! protocol v2's nonce anyway).
//!
//! MQTT 3.1.1 (section 3.3.1.3) clears the retain flag on a message
//! delivered to a subscription that already exists, so the device sees
//! `retain` set only when it (re)subscribes. Hence the sweep: after
//! session traffic, at most every [`SWEEP_GAP_US`], the link subscribes to
//! the session filter again (which replaces its subscription, losing
//! nothing) and the broker sends every retained session message with the
//! flag set; each is cleared, at most [`CLEAR_RATE`] a second (a burst of
//! [`CLEAR_BURST`]), and those over the budget wait for the next sweep.
//!
//! Pure: time is an argument.

use crate::ratelimit::TokenBucket;

/// Shortest time between two sweeps, microseconds.
pub const SWEEP_GAP_US: u64 = 2_000_000;
/// Retained messages cleared per second.
pub const CLEAR_RATE: u32 = 64;
/// And at once.
pub const CLEAR_BURST: u32 = 128;

/// When to sweep and how many to clear.
#[derive(Debug)]
pub struct RetainedSweep {
    /// Traffic (or a clear left over) since the last sweep.
    dirty: bool,
    last_us: Option<u64>,
    clears: TokenBucket,
    /// Cleared since the last [`RetainedSweep::take_cleared`].
    cleared: u64,
}

impl Default for RetainedSweep {
    fn default() -> Self {
        RetainedSweep {
            dirty: false,
            last_us: None,
            clears: TokenBucket::new(CLEAR_RATE, CLEAR_BURST),
            cleared: 0,
        }
    }
}

impl RetainedSweep {
    /// A message arrived on a session topic: one may have been retained.
    pub fn traffic(&mut self) {
        self.dirty = true;
    }

    /// A (re)subscription was just made: it counts as a sweep.
    pub fn subscribed(&mut self, now_us: u64) {
        self.dirty = false;
        self.last_us = Some(now_us);
    }

    /// Whether to subscribe again now; if so, the sweep is counted as made.
    pub fn due(&mut self, now_us: u64) -> bool {
        let gap_over = self
            .last_us
            .is_none_or(|t| now_us.saturating_sub(t) >= SWEEP_GAP_US);
        if self.dirty && gap_over {
            self.subscribed(now_us);
            return true;
        }
        false
    }

    /// A retained message arrived: whether to clear it now (within the
    /// budget). One left standing makes the next sweep due.
    pub fn may_clear(&mut self, now_us: u64) -> bool {
        if self.clears.try_take(now_us) {
            self.cleared += 1;
            true
        } else {
            self.dirty = true;
            false
        }
    }

    /// How many were cleared since the last call (for one log line).
    pub fn take_cleared(&mut self) -> u64 {
        std::mem::take(&mut self.cleared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn no_sweep_without_traffic() {
        let mut s = RetainedSweep::default();
        s.subscribed(0);
        for t in 0..100 {
            assert!(!s.due(t * S));
        }
    }

    #[test]
    fn traffic_sweeps_once_per_gap() {
        let mut s = RetainedSweep::default();
        s.subscribed(0);
        s.traffic();
        assert!(!s.due(SWEEP_GAP_US - 1), "not before the gap");
        assert!(s.due(SWEEP_GAP_US));
        assert!(!s.due(SWEEP_GAP_US + 1), "swept: clean until more traffic");
        s.traffic();
        assert!(!s.due(SWEEP_GAP_US + S), "gap since the last sweep");
        assert!(s.due(2 * SWEEP_GAP_US));
    }

    #[test]
    fn the_first_sweep_needs_no_gap() {
        let mut s = RetainedSweep::default();
        s.traffic();
        assert!(s.due(0));
    }

    #[test]
    fn clears_are_bounded_and_the_rest_wait_for_the_next_sweep() {
        let mut s = RetainedSweep::default();
        s.subscribed(0);
        let cleared = (0..1000).filter(|_| s.may_clear(0)).count();
        assert_eq!(cleared, CLEAR_BURST as usize);
        assert_eq!(s.take_cleared(), u64::from(CLEAR_BURST));
        assert_eq!(s.take_cleared(), 0);
        // Left over: the next sweep is due without new traffic.
        assert!(s.due(SWEEP_GAP_US));
        // Refilled at CLEAR_RATE a second.
        let t = SWEEP_GAP_US;
        let again = (0..1000).filter(|_| s.may_clear(t)).count();
        assert_eq!(again, CLEAR_BURST as usize);
        let t = t + S;
        let later = (0..1000).filter(|_| s.may_clear(t)).count();
        assert_eq!(later, CLEAR_RATE as usize);
    }
}
