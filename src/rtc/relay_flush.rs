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
//! [`FlushTimer`] decides (pure: no clock, it is told which sleep fired);
//! [`in_driver`] marks the
//! driver task so only its sleeps are cut (a `close()` timeout is not).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long after a wake-up the driver makes its extra passes.
pub const FOLLOW_UP: Duration = Duration::from_millis(1);
/// Extra passes after a wake-up: a datagram read in one pass reaches the
/// core at its end, the core's answer reaches the TURN client in the next
/// pass and leaves the socket in the one after.
pub const PASSES: u8 = 2;

/// Whether the next driver sleep is a follow-up pass or what it asked for.
///
/// A pass is a follow-up only when the follow-up sleep before it fired: a
/// datagram that woke the driver instead (even after that sleep's time,
/// when both were ready) is a real wake-up and gets its own passes.
#[derive(Debug, Default)]
pub struct FlushTimer {
    /// Follow-up passes still to come after the current one.
    left: u8,
    /// The sleep handed out last, when it was a follow-up, by number.
    pending: Option<u64>,
    /// Whether that sleep fired.
    fired: bool,
    next: u64,
}

impl FlushTimer {
    /// The sleep to use when the driver asks for `requested`, and the
    /// follow-up's number to report to [`FlushTimer::fired`] when it ends.
    pub fn sleep_for(&mut self, requested: Duration) -> (Duration, Option<u64>) {
        let in_follow_up = std::mem::take(&mut self.fired);
        if !in_follow_up {
            // A real wake-up (a datagram, an event, a timer of the driver's).
            self.left = PASSES;
        }
        self.pending = None;
        if self.left == 0 {
            return (requested, None);
        }
        self.next += 1;
        self.pending = Some(self.next);
        if requested <= FOLLOW_UP {
            // The driver wakes this soon anyway: the pass counts as none.
            return (requested, self.pending);
        }
        self.left -= 1;
        (FOLLOW_UP, self.pending)
    }

    /// The sleep numbered `n` ended (it was not cut short by a wake-up).
    pub fn fired(&mut self, n: u64) {
        if self.pending == Some(n) {
            self.fired = true;
        }
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

    /// Hands out a sleep and, when `fires`, reports it fired.
    fn step(f: &mut FlushTimer, requested: Duration, fires: bool) -> Duration {
        let (d, n) = f.sleep_for(requested);
        if let (true, Some(n)) = (fires, n) {
            f.fired(n);
        }
        d
    }

    #[test]
    fn a_wake_up_gets_two_follow_up_passes_then_the_asked_sleep() {
        let mut f = FlushTimer::default();
        // Woken (a datagram): two follow-up passes.
        assert_eq!(step(&mut f, 800 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 799 * MS, true), FOLLOW_UP);
        // Then the driver sleeps as it asked.
        assert_eq!(step(&mut f, 798 * MS, false), 798 * MS);
        // Woken early by a datagram: two follow-ups again.
        assert_eq!(step(&mut f, 700 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 699 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 698 * MS, true), 698 * MS);
        // The driver's own timer fired: a real wake-up, two passes.
        assert_eq!(step(&mut f, 500 * MS, true), FOLLOW_UP);
    }

    #[test]
    fn a_wake_up_during_a_follow_up_starts_over() {
        let mut f = FlushTimer::default();
        assert_eq!(step(&mut f, 500 * MS, true), FOLLOW_UP);
        // A datagram woke the driver before the second follow-up fired (or
        // when both were ready): that pass is a wake-up, with its own two.
        assert_eq!(step(&mut f, 500 * MS, false), FOLLOW_UP);
        assert_eq!(step(&mut f, 500 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 500 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 500 * MS, true), 500 * MS);
    }

    #[test]
    fn a_stale_sleep_firing_counts_for_nothing() {
        let mut f = FlushTimer::default();
        let (_, first) = f.sleep_for(500 * MS);
        let (_, second) = f.sleep_for(500 * MS);
        f.fired(first.unwrap());
        // Only the latest sleep's end makes a follow-up pass.
        assert_eq!(f.sleep_for(500 * MS).0, FOLLOW_UP);
        f.fired(second.unwrap());
        assert_eq!(step(&mut f, 500 * MS, true), FOLLOW_UP);
    }

    #[test]
    fn short_sleeps_are_left_alone() {
        let mut f = FlushTimer::default();
        assert_eq!(step(&mut f, Duration::ZERO, true), Duration::ZERO);
        assert_eq!(step(&mut f, FOLLOW_UP, true), FOLLOW_UP);
        // ...and do not use up the passes.
        assert_eq!(step(&mut f, 300 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 300 * MS, true), FOLLOW_UP);
        assert_eq!(step(&mut f, 300 * MS, true), 300 * MS);
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
