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

/// Whether the encoder should encode a frame taken from its queue. A
/// captured frame always is: the capture thread queues frames in the order
/// it takes them, so only the re-queued one can be out of order, and no
/// source's timestamps need to be trusted for the rest. The kept frame, queued again for a first
/// viewer, races with the encoder: the encoder may have encoded that very
/// frame, or a newer one, between the viewer subscribing and the kept frame
/// being queued. Encoding it then would repeat a frame or send one out of
/// order, so it is encoded only if it is newer than the last encoded frame.
pub fn encode_queued(kept: bool, captured_us: u64, last_encoded_us: Option<u64>) -> bool {
    !kept || last_encoded_us.is_none_or(|last| captured_us > last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_frame_is_encoded_only_if_newer_than_the_last_encoded() {
        assert!(encode_queued(true, 100, None), "nothing encoded yet");
        assert!(encode_queued(true, 100, Some(66)), "encoded before idling");
        assert!(!encode_queued(true, 100, Some(100)), "the same frame");
        assert!(
            !encode_queued(true, 100, Some(133)),
            "a newer one went first"
        );
        assert!(
            encode_queued(false, 100, Some(133)),
            "captured frames always"
        );
    }

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
