//! When a session ends by itself, decided without I/O or a clock: a
//! session that has not connected within the connect timeout ends with
//! `timeout`; one that connected and then stays `disconnected` for the
//! grace period, or goes `failed`, ends with `failed`; `closed` ends it
//! with `closed`. A `disconnected` that recovers (ICE found its way again)
//! clears the grace timer. The session task feeds it peer-connection
//! states and the time, sleeps until [`Lifecycle::deadline_us`], and
//! carries out what it returns.

use crate::signaling::messages::ByeReason;
use std::time::Duration;

/// The peer connection's states that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcState {
    Connected,
    Disconnected,
    Failed,
    Closed,
    /// `new`, `connecting`: nothing to decide.
    Other,
}

/// What the session does after a state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep going.
    Continue,
    /// The first `connected`: start sending media, tell the table.
    FirstConnected,
    /// End the session with this reason.
    End(ByeReason),
}

/// See the module documentation. Times are µs of one monotonic clock.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    connect_deadline_us: u64,
    grace_us: u64,
    connected: bool,
    disconnected_since_us: Option<u64>,
}

impl Lifecycle {
    /// A session whose answer went out at `now_us`.
    pub fn new(now_us: u64, connect_timeout: Duration, disconnected_grace: Duration) -> Self {
        Lifecycle {
            connect_deadline_us: now_us.saturating_add(connect_timeout.as_micros() as u64),
            grace_us: disconnected_grace.as_micros() as u64,
            connected: false,
            disconnected_since_us: None,
        }
    }

    /// Whether the session has connected at least once.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// The peer connection reached `state` at `now_us`.
    pub fn on_state(&mut self, state: PcState, now_us: u64) -> Step {
        match state {
            PcState::Connected => {
                self.disconnected_since_us = None;
                if self.connected {
                    Step::Continue
                } else {
                    self.connected = true;
                    Step::FirstConnected
                }
            }
            PcState::Disconnected => {
                self.disconnected_since_us.get_or_insert(now_us);
                Step::Continue
            }
            PcState::Failed => Step::End(ByeReason::Failed),
            PcState::Closed => Step::End(ByeReason::Closed),
            PcState::Other => Step::Continue,
        }
    }

    /// When the session ends unless something happens first: the connect
    /// deadline before the first `connected`, then the end of the grace
    /// period while `disconnected`; `None` while connected.
    pub fn deadline_us(&self) -> Option<u64> {
        if !self.connected {
            Some(self.connect_deadline_us)
        } else {
            self.disconnected_since_us
                .map(|t| t.saturating_add(self.grace_us))
        }
    }

    /// The end due at `now_us`, if the deadline has passed.
    pub fn due(&self, now_us: u64) -> Option<ByeReason> {
        let deadline = self.deadline_us()?;
        (now_us >= deadline).then_some(if self.connected {
            ByeReason::Failed
        } else {
            ByeReason::Timeout
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn machine() -> Lifecycle {
        Lifecycle::new(10 * S, Duration::from_secs(30), Duration::from_secs(5))
    }

    #[test]
    fn a_session_that_never_connects_times_out_at_its_deadline() {
        let m = machine();
        assert_eq!(m.deadline_us(), Some(40 * S));
        assert_eq!(m.due(40 * S - 1), None);
        assert_eq!(m.due(40 * S), Some(ByeReason::Timeout));
    }

    #[test]
    fn connecting_clears_the_connect_deadline_once() {
        let mut m = machine();
        assert_eq!(m.on_state(PcState::Other, 11 * S), Step::Continue);
        assert_eq!(m.on_state(PcState::Connected, 12 * S), Step::FirstConnected);
        assert!(m.connected());
        assert_eq!(m.deadline_us(), None);
        assert_eq!(m.due(1000 * S), None, "connected: nothing is due, ever");
        assert_eq!(m.on_state(PcState::Connected, 13 * S), Step::Continue);
    }

    #[test]
    fn a_disconnection_longer_than_the_grace_fails_the_session() {
        let mut m = machine();
        m.on_state(PcState::Connected, 12 * S);
        m.on_state(PcState::Disconnected, 20 * S);
        // A second `disconnected` does not restart the grace period.
        m.on_state(PcState::Disconnected, 22 * S);
        assert_eq!(m.deadline_us(), Some(25 * S));
        assert_eq!(m.due(24 * S), None);
        assert_eq!(m.due(25 * S), Some(ByeReason::Failed));
    }

    #[test]
    fn a_disconnection_that_recovers_clears_the_grace_timer() {
        let mut m = machine();
        m.on_state(PcState::Connected, 12 * S);
        m.on_state(PcState::Disconnected, 20 * S);
        assert_eq!(m.on_state(PcState::Connected, 23 * S), Step::Continue);
        assert_eq!(m.deadline_us(), None);
        assert_eq!(m.due(100 * S), None);
        // A later disconnection gets a full grace period of its own.
        m.on_state(PcState::Disconnected, 50 * S);
        assert_eq!(m.deadline_us(), Some(55 * S));
    }

    #[test]
    fn failed_and_closed_end_at_once_connected_or_not() {
        let mut m = machine();
        assert_eq!(
            m.on_state(PcState::Failed, 11 * S),
            Step::End(ByeReason::Failed)
        );
        let mut m = machine();
        m.on_state(PcState::Connected, 12 * S);
        assert_eq!(
            m.on_state(PcState::Closed, 13 * S),
            Step::End(ByeReason::Closed)
        );
    }

    #[test]
    fn a_disconnection_before_connecting_keeps_the_connect_deadline() {
        let mut m = machine();
        m.on_state(PcState::Disconnected, 11 * S);
        assert_eq!(m.deadline_us(), Some(40 * S));
        assert_eq!(m.due(40 * S), Some(ByeReason::Timeout));
    }
}
