use super::*;
use crate::media::stamp::{read_stamp, write_stamp};
use crate::media::test_pattern::TestPattern;
use std::sync::Mutex;

fn pattern(w: u32, h: u32, seq: u32, capture_us: u64) -> I420Frame {
    let mut p = TestPattern::new(w, h, 30).unwrap();
    let mut f = p.render(seq, capture_us);
    write_stamp(&mut f, seq, 123_456);
    f
}

#[test]
fn target_size_keeps_the_aspect_and_even_heights() {
    assert_eq!(target_size(1280, 720, None), Ok((1280, 720)));
    assert_eq!(target_size(1280, 720, Some(640)), Ok((640, 360)));
    assert_eq!(target_size(1280, 720, Some(320)), Ok((320, 180)));
    // 100 * 720 / 1280 = 56.25 -> 56.
    assert_eq!(target_size(1280, 720, Some(100)), Ok((100, 56)));
    // 30 * 720 / 1280 = 16.9 -> 17 -> 18 (even).
    assert_eq!(target_size(1280, 720, Some(30)), Ok((30, 18)));
    assert_eq!(
        target_size(1280, 720, Some(1281)),
        Err(SnapshotError::BadWidth { max: 1280 })
    );
    assert_eq!(
        target_size(1280, 720, Some(15)),
        Err(SnapshotError::BadWidth { max: 1280 })
    );
}

#[test]
fn parse_width_refuses_junk_and_out_of_range() {
    assert_eq!(parse_width("640", 1280), Ok(640));
    for bad in ["", "-1", "0", "abc", "1281", "99999999999", "6.5"] {
        assert!(parse_width(bad, 1280).is_err(), "{bad:?}");
    }
}

#[test]
fn full_size_jpeg_carries_the_frame_stamp() {
    let f = pattern(1280, 720, 77, 5_000_000);
    let s = encode(&f, None, QUALITY).unwrap();
    assert_eq!((s.width, s.height, s.seq), (1280, 720, 77));
    assert_eq!(&s.jpeg[..2], &[0xFF, 0xD8], "SOI marker");
    let (w, h, luma) = decode_luma(&s.jpeg).unwrap();
    assert_eq!((w, h), (1280, 720));
    assert_eq!(read_stamp(&luma, w as usize, w, h), Some((77, 123_456)));
}

#[test]
fn scaled_jpeg_has_the_asked_size() {
    let f = pattern(1280, 720, 9, 0);
    let s = encode(&f, Some(640), QUALITY).unwrap();
    let (w, h, _) = decode_luma(&s.jpeg).unwrap();
    assert_eq!((w, h), (640, 360));
    let small = encode(&f, Some(64), QUALITY).unwrap();
    assert_eq!(decode_luma(&small.jpeg).unwrap().0, 64);
}

#[test]
fn video_range_becomes_full_range() {
    let mut f = I420Frame::black(64, 64);
    f.y_mut().fill(235);
    let s = encode(&f, None, 95).unwrap();
    let (_, _, luma) = decode_luma(&s.jpeg).unwrap();
    assert!(luma.iter().all(|&v| v >= 250), "white is 255, not 235");
    let s = encode(&I420Frame::black(64, 64), None, 95).unwrap();
    let (_, _, luma) = decode_luma(&s.jpeg).unwrap();
    assert!(luma.iter().all(|&v| v <= 4), "black is 0, not 16");
}

#[test]
fn a_short_buffer_is_an_error_not_a_panic() {
    let mut f = I420Frame::black(64, 64);
    f.data.truncate(100);
    assert!(matches!(
        encode(&f, None, QUALITY),
        Err(SnapshotError::Encode(_))
    ));
}

struct Slot(Mutex<Option<Arc<I420Frame>>>);

impl LatestFrame for Slot {
    fn latest_frame(&self) -> Option<Arc<I420Frame>> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn no_frame_or_a_stale_one_is_no_snapshot() {
    let slot = Arc::new(Slot(Mutex::new(None)));
    let snap = Snapshotter::new(slot.clone());
    assert_eq!(
        snap.jpeg_blocking(None).unwrap_err(),
        SnapshotError::NoFrame
    );
    let now = crate::clock::monotonic_us();
    *slot.0.lock().unwrap() = Some(Arc::new(pattern(320, 240, 1, now)));
    assert_eq!(snap.jpeg_blocking(None).unwrap().width, 320);
    let stale = now.saturating_sub(MAX_FRAME_AGE_US + 1_000_000);
    *slot.0.lock().unwrap() = Some(Arc::new(pattern(320, 240, 2, stale)));
    assert_eq!(
        snap.jpeg_blocking(None).unwrap_err(),
        SnapshotError::NoFrame
    );
}

#[tokio::test]
async fn requests_beyond_the_bound_are_refused_at_once() {
    let now = crate::clock::monotonic_us();
    let slot = Arc::new(Slot(Mutex::new(Some(Arc::new(pattern(320, 240, 1, now))))));
    let snap = Snapshotter::new(slot);
    let held: Vec<_> = (0..MAX_CONCURRENT)
        .map(|_| snap.permits.clone().try_acquire_owned().unwrap())
        .collect();
    assert_eq!(snap.jpeg(None).await.unwrap_err(), SnapshotError::Busy);
    drop(held);
    assert_eq!(snap.jpeg(Some(160)).await.unwrap().height, 120);
}
