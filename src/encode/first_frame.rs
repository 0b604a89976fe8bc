//! The first frame for the first viewer without waiting for the camera.
//!
//! While nobody watches, capture goes on and the encoder idles, keeping the
//! latest raw frame. When the first viewer subscribes, the encoder would
//! otherwise wait for the next capture (up to one frame interval, 33 ms at
//! 30 fps, 17 ms on average) before making the IDR that viewer needs;
//! encoding the kept frame at once saves that wait. Only a recent frame is
//! used: an older one means the source is slow or stalled, and a frame
//! already queued will be encoded at once anyway.

/// The oldest kept frame worth encoding for a new first viewer.
pub const MAX_AGE_US: u64 = 100_000;

/// Whether to queue the kept frame now: the encoder was idle (no viewer
/// before this one), nothing is queued, and the kept frame, captured at
/// `captured_us`, is at most [`MAX_AGE_US`] older than `now_us`.
pub fn encode_kept_frame(
    was_idle: bool,
    queue_empty: bool,
    captured_us: Option<u64>,
    now_us: u64,
) -> bool {
    was_idle && queue_empty && captured_us.is_some_and(|t| now_us.saturating_sub(t) <= MAX_AGE_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recent_kept_frame_for_the_first_viewer() {
        let now = 5_000_000;
        assert!(encode_kept_frame(true, true, Some(now - 20_000), now));
        assert!(encode_kept_frame(true, true, Some(now - MAX_AGE_US), now));
        assert!(
            !encode_kept_frame(true, true, Some(now - MAX_AGE_US - 1), now),
            "stale"
        );
        assert!(
            !encode_kept_frame(true, true, None, now),
            "nothing kept (passthrough)"
        );
        assert!(
            !encode_kept_frame(false, true, Some(now), now),
            "the encoder is running"
        );
        assert!(
            !encode_kept_frame(true, false, Some(now), now),
            "a frame is queued"
        );
        // A capture clock ahead of `now` (read on another thread) is recent.
        assert!(encode_kept_frame(true, true, Some(now + 10), now));
    }
}
