//! The device clock: CLOCK_MONOTONIC, the clock V4L2 stamps buffers with and
//! the clock the frame stamp (docs/protocol.md#measuring-latency-the-frame-stamp) carries.

use std::time::Duration;

/// Microseconds of CLOCK_MONOTONIC.
pub fn monotonic_us() -> u64 {
    // CLOCK_MONOTONIC always exists on Linux; the zero is never used.
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000
}

/// CLOCK_MONOTONIC as a Duration since an arbitrary (boot-time) origin.
pub fn monotonic() -> Duration {
    Duration::from_micros(monotonic_us())
}

/// Seconds since the Unix epoch by the wall clock (0 if it reads before
/// 1970): what TURN credentials are dated by.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds of CLOCK_MONOTONIC modulo 2^32, as carried in the frame stamp.
pub fn stamp_ms(capture_us: u64) -> u32 {
    (capture_us / 1_000) as u32
}

/// Sleeps until `deadline`, or forever when there is none (for `select!`).
pub async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic_us();
        let b = monotonic_us();
        assert!(b >= a);
        assert!(a > 0);
    }

    #[test]
    fn stamp_ms_wraps_at_32_bits() {
        let us = (u32::MAX as u64 + 5) * 1_000;
        assert_eq!(stamp_ms(us), 4);
    }
}
