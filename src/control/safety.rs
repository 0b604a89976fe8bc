//! The fail-safe rules of one output, as a pure state machine: every call
//! takes `now` (any monotonic microsecond clock) and returns what to drive;
//! [`GpioBank`](super::gpio::GpioBank) does the I/O and runs one timer per
//! output for [`OutputGuard::deadline`].
//!
//! Rules (per output, from its `[[gpio]]` entry):
//! - `max_on_ms`: once the output leaves its `safe` value it returns to it
//!   at most this long later, whoever drove it (`gpio.set`, `gpio.toggle`,
//!   a pulse). The time counts from the moment it left `safe`: setting the
//!   same non-safe value again does not extend it. A pulse to the non-safe
//!   value is cut to what is left of it ([`PulsePlan::capped_ms`]).
//! - `revert_on_end`: when the session that last drove the output ends, the
//!   output returns to `safe` (and a pending pulse is dropped). A later
//!   command by anyone else (another session, or the device itself) takes
//!   the ownership over; ownership is not kept when the rule is off.
//! - Pulses: at most one pending; a second replaces the first and keeps the
//!   value from before the first; a set or toggle cancels it.
//!
//! Invariant: whenever the value is not `safe` and `max_on` is set,
//! [`OutputGuard::deadline`] is at most `left_safe_at + max_on`.

/// What one output's guard enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The logical safe value.
    pub safe: bool,
    /// Longest time away from `safe`, microseconds.
    pub max_on_us: Option<u64>,
    /// Return to `safe` when the owning session ends.
    pub revert_on_end: bool,
}

/// Why a guard wants the line driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A pulse's time is up: its former value comes back.
    PulseEnd,
    /// `max_on_ms` ran out.
    MaxOn,
    /// The owning session ended (`revert_on_end`).
    SessionEnded,
}

/// Drive the output to logical `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drive {
    pub value: bool,
    pub reason: Reason,
}

/// What a pulse does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PulsePlan {
    /// The value to drive now.
    pub value: bool,
    /// When the pulse ends, µs.
    pub until_us: u64,
    /// `Some(ms)` when `max_on_ms` cut the pulse to `ms` (rounded up).
    pub capped_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingPulse {
    restore: bool,
    until_us: u64,
}

/// One output's fail-safe state.
#[derive(Clone, Debug)]
pub struct OutputGuard {
    rules: Rules,
    value: bool,
    /// When the value left `safe` (None while at `safe`).
    left_safe_at: Option<u64>,
    /// The session that last drove it, when `revert_on_end` is on.
    owner: Option<u64>,
    pulse: Option<PendingPulse>,
}

impl OutputGuard {
    /// A guard for an output that is at its safe value.
    pub fn new(rules: Rules) -> Self {
        OutputGuard {
            rules,
            value: rules.safe,
            left_safe_at: None,
            owner: None,
            pulse: None,
        }
    }

    /// The rules.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The value the guard believes is driven.
    pub fn value(&self) -> bool {
        self.value
    }

    /// The session that owns the output, if `revert_on_end` tracks one.
    pub fn owner(&self) -> Option<u64> {
        self.owner
    }

    /// Whether a pulse is pending.
    pub fn pulse_pending(&self) -> bool {
        self.pulse.is_some()
    }

    /// When [`OutputGuard::due`] next has something to do, µs.
    pub fn deadline(&self) -> Option<u64> {
        let pulse = self.pulse.map(|p| p.until_us);
        let max_on = match (self.left_safe_at, self.rules.max_on_us) {
            (Some(since), Some(max)) => Some(since.saturating_add(max)),
            _ => None,
        };
        match (pulse, max_on) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether driving `value` would need a timer (so a runtime).
    pub fn needs_timer(&self, value: bool) -> bool {
        value != self.rules.safe && self.rules.max_on_us.is_some()
    }

    fn record(&mut self, value: bool, now_us: u64) {
        if value == self.rules.safe {
            self.left_safe_at = None;
        } else if self.value == self.rules.safe || self.left_safe_at.is_none() {
            self.left_safe_at = Some(now_us);
        }
        self.value = value;
    }

    fn take_owner(&mut self, owner: Option<u64>) {
        self.owner = if self.rules.revert_on_end {
            owner
        } else {
            None
        };
    }

    /// A set or toggle drove `value` for `owner`: a pending pulse is
    /// cancelled and `owner` takes the output over.
    pub fn command(&mut self, value: bool, owner: Option<u64>, now_us: u64) {
        self.pulse = None;
        self.record(value, now_us);
        self.take_owner(owner);
    }

    /// Drops a pending pulse (e.g. its first drive failed); returns the value
    /// it would have restored.
    pub fn cancel_pulse(&mut self) -> Option<bool> {
        self.pulse.take().map(|p| p.restore)
    }

    /// A pulse of `ms` for `owner`; `current` is the value driven now (used
    /// when no pulse is pending). The caller drives `plan.value`.
    pub fn pulse(&mut self, ms: u64, current: bool, owner: Option<u64>, now_us: u64) -> PulsePlan {
        let restore = match self.pulse.take() {
            Some(p) => p.restore,
            None => {
                self.value = current;
                current
            }
        };
        let value = !restore;
        self.record(value, now_us);
        self.take_owner(owner);
        let mut until_us = now_us.saturating_add(ms.saturating_mul(1000));
        let mut capped_ms = None;
        if let (Some(since), Some(max)) = (self.left_safe_at, self.rules.max_on_us) {
            let limit = since.saturating_add(max);
            if until_us > limit {
                until_us = limit.max(now_us);
                capped_ms = Some((until_us - now_us).div_ceil(1000));
            }
        }
        self.pulse = Some(PendingPulse { restore, until_us });
        PulsePlan {
            value,
            until_us,
            capped_ms,
        }
    }

    /// Time passed: what to drive now, if anything. Call again after
    /// driving: at most one action is returned per call.
    pub fn due(&mut self, now_us: u64) -> Option<Drive> {
        if let Some(p) = self.pulse.filter(|p| p.until_us <= now_us) {
            self.pulse = None;
            self.record(p.restore, now_us);
            return Some(Drive {
                value: p.restore,
                reason: Reason::PulseEnd,
            });
        }
        let since = self.left_safe_at?;
        let max = self.rules.max_on_us?;
        if since.saturating_add(max) > now_us {
            return None;
        }
        // A pending pulse here drives the safe value and would restore the
        // unsafe one: it goes too.
        self.pulse = None;
        self.record(self.rules.safe, now_us);
        Some(Drive {
            value: self.rules.safe,
            reason: Reason::MaxOn,
        })
    }

    /// Session `session` ended: with `revert_on_end`, and if it owns the
    /// output, the output returns to safe (a pending pulse is dropped).
    pub fn session_ended(&mut self, session: u64, now_us: u64) -> Option<Drive> {
        if !self.rules.revert_on_end || self.owner != Some(session) {
            return None;
        }
        self.owner = None;
        self.pulse = None;
        if self.value == self.rules.safe {
            return None;
        }
        self.record(self.rules.safe, now_us);
        Some(Drive {
            value: self.rules.safe,
            reason: Reason::SessionEnded,
        })
    }

    /// Shutdown (or start-up): the output is at its safe value, nothing is
    /// pending, nobody owns it.
    pub fn reset_safe(&mut self) {
        self.pulse = None;
        self.owner = None;
        self.left_safe_at = None;
        self.value = self.rules.safe;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn guard(max_on_ms: Option<u64>, revert_on_end: bool) -> OutputGuard {
        OutputGuard::new(Rules {
            safe: false,
            max_on_us: max_on_ms.map(|m| m * MS),
            revert_on_end,
        })
    }

    fn max_on(value: bool) -> Option<Drive> {
        Some(Drive {
            value,
            reason: Reason::MaxOn,
        })
    }

    #[test]
    fn no_rules_no_deadline() {
        let mut g = guard(None, false);
        g.command(true, Some(1), 0);
        assert_eq!(g.deadline(), None);
        assert_eq!(g.due(u64::MAX / 2), None);
        assert_eq!(g.session_ended(1, 10), None);
        assert!(g.value());
        assert!(!g.needs_timer(true));
    }

    #[test]
    fn max_on_returns_a_set_output_to_safe() {
        let mut g = guard(Some(500), false);
        assert!(g.needs_timer(true));
        assert!(!g.needs_timer(false));
        g.command(true, None, 1_000 * MS);
        assert_eq!(g.deadline(), Some(1_500 * MS));
        assert_eq!(g.due(1_499 * MS), None);
        assert_eq!(g.due(1_500 * MS), max_on(false));
        assert!(!g.value());
        assert_eq!(g.deadline(), None);
        assert_eq!(g.due(9_000 * MS), None);
    }

    #[test]
    fn setting_the_same_unsafe_value_again_does_not_extend_max_on() {
        let mut g = guard(Some(500), false);
        g.command(true, None, 0);
        g.command(true, None, 400 * MS);
        assert_eq!(g.deadline(), Some(500 * MS));
        // Back to safe and out again: a new period.
        g.command(false, None, 450 * MS);
        assert_eq!(g.deadline(), None);
        g.command(true, None, 460 * MS);
        assert_eq!(g.deadline(), Some(960 * MS));
    }

    #[test]
    fn safe_true_outputs_time_out_when_false() {
        let mut g = OutputGuard::new(Rules {
            safe: true,
            max_on_us: Some(100 * MS),
            revert_on_end: false,
        });
        g.command(true, None, 0);
        assert_eq!(g.deadline(), None);
        g.command(false, None, 10 * MS);
        assert_eq!(g.due(110 * MS), max_on(true));
    }

    #[test]
    fn pulses_longer_than_max_on_are_capped() {
        let mut g = guard(Some(300), false);
        let plan = g.pulse(1_000, false, None, 0);
        assert_eq!(
            plan,
            PulsePlan {
                value: true,
                until_us: 300 * MS,
                capped_ms: Some(300)
            }
        );
        assert_eq!(g.deadline(), Some(300 * MS));
        assert_eq!(g.due(299 * MS), None);
        assert_eq!(
            g.due(300 * MS),
            Some(Drive {
                value: false,
                reason: Reason::PulseEnd
            })
        );
        assert_eq!(g.due(300 * MS), None);
        // A pulse within the limit is not capped.
        let plan = g.pulse(200, false, None, 1_000 * MS);
        assert_eq!(plan.capped_ms, None);
        assert_eq!(plan.until_us, 1_200 * MS);
    }

    #[test]
    fn a_replacing_pulse_is_capped_to_what_is_left() {
        let mut g = guard(Some(300), false);
        g.pulse(250, false, None, 0);
        // 200 ms later, a 250 ms pulse would keep it on 450 ms in all.
        let plan = g.pulse(250, true, None, 200 * MS);
        assert!(plan.value);
        assert_eq!(plan.until_us, 300 * MS);
        assert_eq!(plan.capped_ms, Some(100));
        assert_eq!(g.due(300 * MS).map(|d| d.value), Some(false));
    }

    #[test]
    fn pulse_from_unsafe_to_safe_restarts_the_period_on_return() {
        let mut g = guard(Some(1_000), false);
        g.command(true, None, 0);
        let plan = g.pulse(100, true, None, 500 * MS);
        assert!(!plan.value);
        assert_eq!(plan.capped_ms, None);
        assert_eq!(g.deadline(), Some(600 * MS));
        assert_eq!(g.due(600 * MS).map(|d| d.value), Some(true));
        assert_eq!(g.deadline(), Some(1_600 * MS));
        assert_eq!(g.due(1_600 * MS), max_on(false));
    }

    #[test]
    fn set_cancels_a_pulse_and_second_pulse_keeps_the_first_former_value() {
        let mut g = guard(None, false);
        g.pulse(100, false, None, 0);
        let plan = g.pulse(100, true, None, 50 * MS);
        assert!(plan.value);
        assert_eq!(plan.until_us, 150 * MS);
        assert_eq!(g.due(150 * MS).map(|d| d.value), Some(false));
        g.pulse(100, false, None, 200 * MS);
        g.command(true, None, 250 * MS);
        assert!(!g.pulse_pending());
        assert_eq!(g.due(10_000 * MS), None);
        assert!(g.value());
    }

    #[test]
    fn revert_on_end_follows_the_last_session_that_drove_it() {
        let mut g = guard(None, true);
        g.command(true, Some(7), 0);
        assert_eq!(g.owner(), Some(7));
        // Another session's end changes nothing.
        assert_eq!(g.session_ended(8, 10), None);
        let reverted = g.session_ended(7, 20);
        assert_eq!(
            reverted,
            Some(Drive {
                value: false,
                reason: Reason::SessionEnded
            })
        );
        assert!(!g.value());
        assert_eq!(g.owner(), None);
        // Taken over: 7 set it, 8 set it after, 7 ends: stays.
        g.command(true, Some(7), 30);
        g.command(true, Some(8), 40);
        assert_eq!(g.session_ended(7, 50), None);
        assert!(g.value());
        // The device itself (no session) takes it over too.
        g.command(true, None, 60);
        assert_eq!(g.session_ended(8, 70), None);
    }

    #[test]
    fn revert_on_end_drops_a_pending_pulse() {
        let mut g = guard(None, true);
        g.command(true, Some(1), 0);
        // The pulse drives safe and would restore the unsafe value later.
        let plan = g.pulse(1_000, true, Some(1), 10 * MS);
        assert!(!plan.value);
        assert_eq!(g.session_ended(1, 20 * MS), None);
        assert!(!g.pulse_pending());
        assert_eq!(g.due(5_000 * MS), None);
        assert!(!g.value());
        // A pulse to the unsafe value: its session's end reverts at once.
        g.pulse(1_000, false, Some(2), 6_000 * MS);
        assert_eq!(
            g.session_ended(2, 6_100 * MS).map(|d| d.reason),
            Some(Reason::SessionEnded)
        );
        assert_eq!(g.deadline(), None);
    }

    #[test]
    fn ownership_is_not_kept_without_revert_on_end() {
        let mut g = guard(Some(100), false);
        g.command(true, Some(3), 0);
        assert_eq!(g.owner(), None);
        assert_eq!(g.session_ended(3, 10), None);
        assert!(g.value());
    }

    #[test]
    fn max_on_fires_even_during_a_long_replacement_chain() {
        let mut g = guard(Some(1_000), false);
        let mut now = 0;
        let mut fired = None;
        // Every 100 ms another 500 ms pulse to the unsafe value.
        while now < 5_000 * MS {
            if let Some(d) = g.due(now) {
                fired = Some((now, d));
                break;
            }
            g.pulse(500, g.value(), None, now);
            now += 100 * MS;
        }
        let (at, drive) = fired.expect("the output came back to safe");
        assert!(at <= 1_000 * MS, "came back only after {at} us");
        assert!(!drive.value);
    }

    #[test]
    fn reset_safe_clears_everything() {
        let mut g = guard(Some(100), true);
        g.pulse(50, false, Some(1), 0);
        g.reset_safe();
        assert_eq!(g.deadline(), None);
        assert_eq!(g.owner(), None);
        assert!(!g.value());
    }
}
