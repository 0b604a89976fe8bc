//! Sends TURN-relayed packets when they are written, not at the peer
//! connection's next wake-up (docs/benchmarks.md, "Through two symmetric
//! NATs and TURN").
//!
//! webrtc-rs 0.21's driver loop drains the TURN relayer's output before the
//! core's: a packet the core writes through a relay candidate (an ICE check,
//! a DTLS flight, RTP) is handed to the TURN client in one pass and only
//! leaves the socket in the next one, when a timer or a datagram next wakes
//! the loop. During the DTLS handshake nothing else wakes it for up to a
//! second (the retransmission timer), so each relayed flight waited
//! 300-800 ms in the lab and the first frame came ~1.2 s after the
//! connection was up; with media flowing each relayed frame waited for the
//! next one.
//!
//! The fix sits in the runtime the driver sleeps on: after every wake-up of
//! the driver the next [`PASSES`] sleeps are cut to [`FOLLOW_UP`], so the
//! loop makes the passes that carry a relayed datagram's answer from the
//! core to the TURN client and out. Then it sleeps as long as it asked.
//! Only connections with a TURN server configured pay the extra pass.
//!
//! [`FlushTimer`] decides (pure, `now` passed in); [`in_driver`] marks the
//! driver task so only its sleeps are cut (a `close()` timeout is not).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long after a wake-up the driver makes its extra passes.
pub const FOLLOW_UP: Duration = Duration::from_millis(1);
/// Extra passes after a wake-up: a datagram read in one pass reaches the
/// core at its end, the core's answer reaches the TURN client in the next
/// pass and leaves the socket in the one after.
pub const PASSES: u8 = 2;

/// Whether the next driver sleep is a follow-up pass or what it asked for.
#[derive(Debug, Default)]
pub struct FlushTimer {
    /// When the follow-up sleep handed out last ends, while one is out.
    follow_up_until: Option<Instant>,
    /// Follow-up passes still to come after the current one.
    left: u8,
}

impl FlushTimer {
    /// The sleep to use when the driver asks for `requested` at `now`.
    pub fn sleep_for(&mut self, now: Instant, requested: Duration) -> Duration {
        let in_follow_up = self.follow_up_until.is_some_and(|t| now >= t);
        if !in_follow_up {
            // A real wake-up (a datagram, an event, a timer).
            self.left = PASSES;
        }
        if self.left == 0 || requested <= FOLLOW_UP {
            // The passes are done (or the driver wakes soon anyway).
            self.follow_up_until = (self.left > 0).then(|| now + requested);
            return requested;
        }
        self.left -= 1;
        self.follow_up_until = Some(now + FOLLOW_UP);
        FOLLOW_UP
    }
}

thread_local! {
    static IN_DRIVER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current code runs inside a future wrapped by [`in_driver`].
pub fn is_driver() -> bool {
    IN_DRIVER.with(Cell::get)
}

/// Marks `fut` (the peer connection's driver task) while it is polled.
pub fn in_driver(
    fut: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(Driver(fut))
}

struct Driver(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for Driver {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let was = IN_DRIVER.with(|f| f.replace(true));
        let out = self.0.as_mut().poll(cx);
        IN_DRIVER.with(|f| f.set(was));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_wake_up_gets_two_follow_up_passes_then_the_asked_sleep() {
        let t0 = Instant::now();
        let mut f = FlushTimer::default();
        // Woken (a datagram): two follow-up passes.
        assert_eq!(f.sleep_for(t0, 800 * MS), FOLLOW_UP);
        assert_eq!(f.sleep_for(t0 + MS, 799 * MS), FOLLOW_UP);
        // Then the driver sleeps as it asked.
        assert_eq!(f.sleep_for(t0 + 2 * MS, 798 * MS), 798 * MS);
        // Woken early by a datagram at +100 ms: two follow-ups again.
        assert_eq!(f.sleep_for(t0 + 100 * MS, 700 * MS), FOLLOW_UP);
        assert_eq!(f.sleep_for(t0 + 101 * MS, 699 * MS), FOLLOW_UP);
        assert_eq!(f.sleep_for(t0 + 102 * MS, 698 * MS), 698 * MS);
    }

    #[test]
    fn a_wake_up_during_a_follow_up_starts_over() {
        let t0 = Instant::now();
        let mut f = FlushTimer::default();
        assert_eq!(f.sleep_for(t0, 500 * MS), FOLLOW_UP);
        // A datagram came before the follow-up fired: it gets its own two.
        let early = t0 + Duration::from_micros(300);
        assert_eq!(f.sleep_for(early, 500 * MS), FOLLOW_UP);
        assert_eq!(f.sleep_for(early + MS, 500 * MS), FOLLOW_UP);
        assert_eq!(f.sleep_for(early + 2 * MS, 500 * MS), 500 * MS);
    }

    #[test]
    fn short_sleeps_are_left_alone() {
        let t0 = Instant::now();
        let mut f = FlushTimer::default();
        assert_eq!(f.sleep_for(t0, Duration::ZERO), Duration::ZERO);
        assert_eq!(f.sleep_for(t0, FOLLOW_UP), FOLLOW_UP);
        // A long sleep after them is a wake-up's first follow-up.
        assert_eq!(f.sleep_for(t0 + 5 * MS, 300 * MS), FOLLOW_UP);
    }

    #[test]
    fn only_the_marked_task_is_the_driver() {
        assert!(!is_driver());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = seen.clone();
        let mut fut = in_driver(Box::pin(async move {
            s.store(is_driver(), std::sync::atomic::Ordering::SeqCst);
        }));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
        assert!(seen.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!is_driver());
    }
}
