//! The `test` source: colour bars with a moving checkered box, and the frame
//! stamp of docs/protocol.md#measuring-latency-the-frame-stamp on every frame.
//!
//! The background is rendered once. Each frame only restores the background
//! under the box's previous position, draws the box at its new position and
//! rewrites the stamp band, then copies the working picture out: one memcpy
//! of the frame plus a few kilobytes of drawing, whatever the size.
//!
//! Frames are paced on CLOCK_MONOTONIC against absolute deadlines, so the
//! rate does not drift; a source that fell behind by a whole frame interval
//! or more starts a new schedule from now instead of bursting to catch up.

use super::{stamp, validate_size, I420Frame, MediaError, VideoFormat, VideoSource};
use crate::clock;
use std::time::Duration;

/// Absolute-deadline frame pacing, with time passed in (no clock reads).
#[derive(Clone, Debug)]
pub struct Pacer {
    interval_us: u64,
    next_us: Option<u64>,
}

impl Pacer {
    /// A pacer for `fps` frames per second (`fps` of 0 is taken as 1).
    pub fn new(fps: u32) -> Self {
        Pacer {
            interval_us: 1_000_000 / u64::from(fps.max(1)),
            next_us: None,
        }
    }

    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// The time at which the next frame is due, given that it is `now_us`.
    /// The first frame is due at once; then every interval after the
    /// previous deadline. Lateness under one interval keeps the schedule (no
    /// drift); lateness of a whole interval or more re-anchors it at `now_us`
    /// (no burst of catch-up frames).
    pub fn next_deadline(&mut self, now_us: u64) -> u64 {
        let deadline = match self.next_us {
            Some(due) if now_us < due.saturating_add(self.interval_us) => due,
            _ => now_us,
        };
        self.next_us = Some(deadline + self.interval_us);
        deadline
    }
}

/// A rectangle on even coordinates (so it maps onto whole chroma samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x: usize,
    y: usize,
    size: usize,
}

/// The moving test pattern source.
pub struct TestPattern {
    format: VideoFormat,
    background: Vec<u8>,
    current: Vec<u8>,
    drawn_box: Option<Rect>,
    pacer: Pacer,
    seq: u32,
}

// 75% colour bars, BT.601 limited range (Y, Cb, Cr).
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128), // white
    (162, 44, 142),  // yellow
    (131, 156, 44),  // cyan
    (112, 72, 58),   // green
    (84, 184, 198),  // magenta
    (65, 100, 212),  // red
    (35, 212, 114),  // blue
    (16, 128, 128),  // black
];

/// Side of one checker square inside the box.
const CHECKER: usize = 8;
/// Box travel per frame, in pixels (even).
const STEP_X: usize = 8;
const STEP_Y: usize = 4;

impl TestPattern {
    /// A pattern of the given size (even, at most 3840x2160) and rate.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        validate_size(width, height, fps)?;
        let background = render_background(width as usize, height as usize);
        Ok(TestPattern {
            format: VideoFormat {
                width,
                height,
                fps,
                pixel_format: "test".into(),
            },
            current: background.clone(),
            background,
            drawn_box: None,
            pacer: Pacer::new(fps),
            seq: 0,
        })
    }

    /// Renders frame `seq` as captured at `capture_us` (stamp included),
    /// without pacing. `next_frame` is this plus the clock.
    pub fn render(&mut self, seq: u32, capture_us: u64) -> I420Frame {
        let (w, h) = (self.format.width as usize, self.format.height as usize);
        if let Some(old) = self.drawn_box.take() {
            copy_rect(&self.background, &mut self.current, w, h, old);
        }
        let rect = box_position(w, h, seq);
        draw_box(&mut self.current, w, h, rect, seq);
        self.drawn_box = Some(rect);

        let mut frame = I420Frame {
            width: self.format.width,
            height: self.format.height,
            data: self.current.clone(),
            capture_us,
            seq,
        };
        stamp::write_stamp(&mut frame, seq, clock::stamp_ms(capture_us));
        frame
    }
}

impl VideoSource for TestPattern {
    fn format(&self) -> &VideoFormat {
        &self.format
    }

    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        let now = clock::monotonic_us();
        let deadline = self.pacer.next_deadline(now);
        if deadline > now {
            std::thread::sleep(Duration::from_micros(deadline - now));
        }
        let capture_us = clock::monotonic_us();
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Ok(self.render(seq, capture_us))
    }

    fn describe(&self) -> String {
        "test pattern".into()
    }
}

fn render_background(w: usize, h: usize) -> Vec<u8> {
    let (cw, ch) = (w / 2, h / 2);
    let mut data = vec![0u8; w * h + 2 * cw * ch];
    let (y, uv) = data.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut(cw * ch);
    // Bars over the top two thirds, a luma ramp below.
    let bars_end = (h * 2 / 3) & !1;
    for row in 0..h {
        let line = &mut y[row * w..(row + 1) * w];
        for (x, px) in line.iter_mut().enumerate() {
            *px = if row < bars_end {
                BARS[x * 8 / w].0
            } else {
                (16 + x * 219 / w.max(1)) as u8
            };
        }
    }
    for row in 0..ch {
        for x in 0..cw {
            let (cb, cr) = if row * 2 < bars_end {
                let bar = BARS[(x * 2) * 8 / w];
                (bar.1, bar.2)
            } else {
                (128, 128)
            };
            u[row * cw + x] = cb;
            v[row * cw + x] = cr;
        }
    }
    data
}

/// Where the box is in frame `seq`: bouncing on both axes below the stamp band.
fn box_position(w: usize, h: usize, seq: u32) -> Rect {
    let top = stamp::BAND_ROWS + 8;
    let size = ((w.min(h) / 5) & !1).clamp(2, h.saturating_sub(top).max(2) & !1);
    let range_x = w.saturating_sub(size);
    let range_y = h.saturating_sub(size + top);
    let x = bounce(seq as usize * STEP_X, range_x) & !1;
    let y = if range_y == 0 {
        h.saturating_sub(size) & !1
    } else {
        (top + bounce(seq as usize * STEP_Y, range_y)) & !1
    };
    Rect { x, y, size }
}

/// A triangle wave: 0 up to `range`, back down to 0, and so on.
fn bounce(travel: usize, range: usize) -> usize {
    if range == 0 {
        return 0;
    }
    let t = travel % (2 * range);
    if t <= range {
        t
    } else {
        2 * range - t
    }
}

/// Visits every luma row span and every chroma row span of `r`, clipped to
/// the frame: `f(offset, len, is_luma)`.
fn for_each_span(w: usize, h: usize, r: Rect, mut f: impl FnMut(usize, usize, bool)) {
    let x1 = (r.x + r.size).min(w);
    let y1 = (r.y + r.size).min(h);
    if r.x >= x1 || r.y >= y1 {
        return;
    }
    for row in r.y..y1 {
        f(row * w + r.x, x1 - r.x, true);
    }
    let (cw, ch) = (w / 2, h / 2);
    for plane in 0..2 {
        let base = w * h + plane * cw * ch;
        for row in r.y / 2..y1 / 2 {
            f(base + row * cw + r.x / 2, (x1 - r.x) / 2, false);
        }
    }
}

fn copy_rect(from: &[u8], to: &mut [u8], w: usize, h: usize, r: Rect) {
    for_each_span(w, h, r, |off, len, _| {
        to[off..off + len].copy_from_slice(&from[off..off + len]);
    });
}

/// A black-and-white checkerboard whose squares shift by one per 8 frames,
/// so the encoder sees both translation and texture change.
fn draw_box(data: &mut [u8], w: usize, h: usize, r: Rect, seq: u32) {
    let phase = (seq / 8) as usize;
    for_each_span(w, h, r, |off, len, luma| {
        let line = &mut data[off..off + len];
        if luma {
            let row = (off / w).saturating_sub(r.y);
            for (i, px) in line.iter_mut().enumerate() {
                let on = ((i / CHECKER) + (row / CHECKER) + phase).is_multiple_of(2);
                *px = if on { 235 } else { 16 };
            }
        } else {
            line.fill(128);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stamp::read_stamp;

    #[test]
    fn pacer_spaces_frames_evenly() {
        let mut p = Pacer::new(25);
        assert_eq!(p.interval_us(), 40_000);
        assert_eq!(p.next_deadline(1_000), 1_000, "first frame at once");
        assert_eq!(p.next_deadline(1_500), 41_000);
        assert_eq!(p.next_deadline(30_000), 81_000);
    }

    #[test]
    fn pacer_keeps_phase_when_slightly_late() {
        let mut p = Pacer::new(25);
        p.next_deadline(0);
        // Woke 300 us late for the 40 ms frame: it is due now (in the past)
        // and the one after stays on the 80 ms grid: no drift.
        assert_eq!(p.next_deadline(40_300), 40_000);
        assert_eq!(p.next_deadline(40_400), 80_000);
        // 39 ms late for the 120 ms frame is still inside one interval.
        assert_eq!(p.next_deadline(159_000), 120_000);
        assert_eq!(p.next_deadline(159_500), 160_000);
    }

    #[test]
    fn pacer_reanchors_instead_of_bursting() {
        let mut p = Pacer::new(25);
        p.next_deadline(0);
        // Stalled for 300 ms: 7 frames missed. The next frame is now, and the
        // one after is a full interval later, not another immediate one.
        assert_eq!(p.next_deadline(300_000), 300_000);
        assert_eq!(p.next_deadline(300_010), 340_000);
        assert_eq!(p.next_deadline(340_050), 380_000);
    }

    #[test]
    fn bounce_is_a_triangle_wave() {
        let got: Vec<usize> = (0..9).map(|t| bounce(t, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 2, 1, 0, 1, 2]);
        assert_eq!(bounce(17, 0), 0);
    }

    #[test]
    fn frames_are_stamped_with_seq_and_capture_ms() {
        let mut tp = TestPattern::new(640, 480, 30).unwrap();
        for seq in [0u32, 1, 2, 1000] {
            let capture_us = 5_000_000_123 + u64::from(seq) * 33_333;
            let f = tp.render(seq, capture_us);
            assert_eq!((f.seq, f.capture_us), (seq, capture_us));
            assert_eq!(f.data.len(), 640 * 480 * 3 / 2);
            assert_eq!(
                read_stamp(f.y(), 640, 640, 480),
                Some((seq, clock::stamp_ms(capture_us)))
            );
        }
    }

    #[test]
    fn the_box_moves_and_leaves_no_trail() {
        let (w, h) = (320usize, 240usize);
        let mut tp = TestPattern::new(w as u32, h as u32, 30).unwrap();
        let bg = render_background(w, h);
        let a = tp.render(0, 0);
        let b = tp.render(1, 0);
        assert_ne!(
            a.data[w * 16..],
            b.data[w * 16..],
            "consecutive frames differ"
        );

        // Every pixel outside the current box (and below the band) equals
        // the background: the previous box was erased.
        let r = box_position(w, h, 1);
        for row in stamp::BAND_ROWS..h {
            for x in 0..w {
                let inside = x >= r.x && x < r.x + r.size && row >= r.y && row < r.y + r.size;
                if !inside {
                    assert_eq!(b.data[row * w + x], bg[row * w + x], "({x},{row})");
                }
            }
        }
        // And the chroma planes outside the box too.
        let c0 = w * h;
        for row in stamp::BAND_ROWS / 2..h / 2 {
            for x in 0..w / 2 {
                let inside = x * 2 >= r.x
                    && x * 2 < r.x + r.size
                    && row * 2 >= r.y
                    && row * 2 < r.y + r.size;
                if !inside {
                    let i = c0 + row * (w / 2) + x;
                    assert_eq!(b.data[i], bg[i]);
                }
            }
        }
    }

    #[test]
    fn box_stays_inside_small_and_large_frames() {
        for (w, h) in [
            (2usize, 2usize),
            (64, 20),
            (320, 240),
            (1920, 1080),
            (2160, 3840),
        ] {
            for seq in [0u32, 1, 57, 1000, u32::MAX] {
                let r = box_position(w, h, seq);
                assert!(
                    r.x.is_multiple_of(2) && r.y.is_multiple_of(2),
                    "{w}x{h} {r:?}"
                );
                // Drawing must not panic even when the box is clipped.
                let mut data = render_background(w, h);
                draw_box(&mut data, w, h, r, seq);
                if w >= 64 && h >= 64 {
                    assert!(r.x + r.size <= w && r.y + r.size <= h, "{w}x{h} {r:?}");
                    assert!(r.y >= stamp::BAND_ROWS, "box must not cover the stamp");
                }
            }
        }
    }

    #[test]
    fn next_frame_is_paced_and_counts() {
        let mut tp = TestPattern::new(320, 240, 100).unwrap();
        let start = clock::monotonic_us();
        let mut last_capture = 0;
        for expect_seq in 0..6u32 {
            let f = tp.next_frame().unwrap();
            assert_eq!(f.seq, expect_seq);
            assert!(f.capture_us >= last_capture);
            last_capture = f.capture_us;
            assert_eq!(
                read_stamp(f.y(), 320, 320, 240),
                Some((expect_seq, clock::stamp_ms(f.capture_us)))
            );
        }
        // Six frames at 100 fps take at least five intervals: no burst.
        assert!(last_capture - start >= 5 * 10_000 - 1_000);
    }

    #[test]
    fn rejects_odd_sizes() {
        assert!(matches!(
            TestPattern::new(321, 240, 30),
            Err(MediaError::BadSize { .. })
        ));
    }
}
