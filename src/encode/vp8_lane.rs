//! The VP8 side of the pipeline: one libvpx encoder for every VP8 viewer,
//! running only while at least one is subscribed.
//!
//! ```text
//! campeer-capture --raw frame (slot of 1, only while a VP8 viewer exists)--> campeer-vp8
//!     campeer-vp8 --Arc<EncodedFrame>--> tokio broadcast --> every VP8 session
//! ```
//!
//! The capture thread hands each raw frame to the H.264 queue as before,
//! and a copy to this lane only when it has subscribers ([`Vp8Lane::offer`]).
//! The encoder is created on the first frame with a subscriber (so its first
//! frame is a keyframe) and dropped, with its memory, when the last one
//! leaves. Keyframe requests (join, PLI/FIR) are debounced like H.264's.

use super::h264::EncoderSettings;
use super::pipeline::{KeyframeDebounce, KEYFRAME_MIN_GAP_US};
use super::vp8::Vp8Encoder;
use super::EncodeError;
use crate::clock;
use crate::media::{EncodedFrame, I420Frame};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Counters of the VP8 lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Stats {
    pub frames_encoded: u64,
    pub keyframes: u64,
    /// Raw frames replaced in the slot before the encoder took them.
    pub frames_dropped_before_encode: u64,
    /// Sum of all encode durations, microseconds.
    pub total_encode_us: u64,
    /// Encoders created (one per stretch of time with VP8 viewers).
    pub encoders_started: u64,
}

#[derive(Default)]
struct Slot {
    frame: Option<I420Frame>,
    /// No subscriber any more: the encoder should stop.
    idle: bool,
    closed: bool,
}

struct Inner {
    slot: Mutex<Slot>,
    cv: Condvar,
    debounce: Mutex<KeyframeDebounce>,
    settings: Mutex<EncoderSettings>,
    frames_encoded: AtomicU64,
    keyframes: AtomicU64,
    dropped: AtomicU64,
    total_encode_us: AtomicU64,
    encoders_started: AtomicU64,
    /// An encoder exists (so the capture side knows to tell it to stop).
    running: AtomicBool,
}

impl Inner {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        // Poisoned only if a thread panicked holding it; the slot is still valid.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn debounce(&self) -> MutexGuard<'_, KeyframeDebounce> {
        self.debounce.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn settings(&self) -> EncoderSettings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The VP8 encoder thread and its output channel.
pub struct Vp8Lane {
    inner: Arc<Inner>,
    tx: broadcast::Sender<Arc<EncodedFrame>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Vp8Lane {
    /// Starts the (idle) lane; `stamp` is the pipeline's stamp switch.
    pub fn start(settings: EncoderSettings, stamp: Arc<AtomicBool>) -> Result<Self, EncodeError> {
        settings.validate()?;
        let (tx, _) = broadcast::channel((settings.fps as usize * 2).max(8));
        let inner = Arc::new(Inner {
            slot: Mutex::new(Slot::default()),
            cv: Condvar::new(),
            debounce: Mutex::new(KeyframeDebounce::new(KEYFRAME_MIN_GAP_US)),
            settings: Mutex::new(settings),
            frames_encoded: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            total_encode_us: AtomicU64::new(0),
            encoders_started: AtomicU64::new(0),
            running: AtomicBool::new(false),
        });
        let thread = {
            let (inner, tx) = (inner.clone(), tx.clone());
            std::thread::Builder::new()
                .name("campeer-vp8".into())
                .spawn(move || encode_loop(inner, tx, stamp))
                .map_err(|source| EncodeError::Thread {
                    name: "campeer-vp8",
                    source,
                })?
        };
        Ok(Vp8Lane {
            inner,
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The VP8 target bitrate (bit/s) of the next encoder started.
    pub fn set_bitrate(&self, bitrate: u32) {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bitrate = bitrate;
    }

    /// True while some VP8 viewer is subscribed.
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Hands a raw frame to the encoder (replacing one it has not taken
    /// yet). Copies it only while a VP8 viewer exists.
    pub fn offer(&self, frame: &I420Frame) {
        if !self.wanted() {
            if self.inner.running.load(Ordering::Relaxed) {
                self.inner.slot().idle = true;
                self.inner.cv.notify_one();
            }
            return;
        }
        let mut slot = self.inner.slot();
        if slot.frame.replace(frame.clone()).is_some() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(slot);
        self.inner.cv.notify_one();
    }

    /// A receiver of every VP8 frame from now on; asks for a keyframe, so
    /// a joining viewer starts soon even when the encoder was running.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedFrame>> {
        let rx = self.tx.subscribe();
        self.request_keyframe();
        rx
    }

    pub fn request_keyframe(&self) {
        self.inner.debounce().request();
    }

    pub fn stats(&self) -> Vp8Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let i = &self.inner;
        Vp8Stats {
            frames_encoded: get(&i.frames_encoded),
            keyframes: get(&i.keyframes),
            frames_dropped_before_encode: get(&i.dropped),
            total_encode_us: get(&i.total_encode_us),
            encoders_started: get(&i.encoders_started),
        }
    }

    /// Stops the encoder thread and waits for it.
    pub fn shutdown(&self) {
        self.inner.slot().closed = true;
        self.inner.cv.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                warn!("VP8 encoder thread panicked");
            }
        }
    }
}

impl Drop for Vp8Lane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The next raw frame to encode, `Some(None)` when the encoder should stop
/// for lack of viewers, `None` once closed.
fn next_frame(inner: &Inner) -> Option<Option<I420Frame>> {
    let mut slot = inner.slot();
    loop {
        if slot.closed {
            return None;
        }
        if std::mem::take(&mut slot.idle) {
            return Some(None);
        }
        if let Some(f) = slot.frame.take() {
            return Some(Some(f));
        }
        slot = inner.cv.wait(slot).unwrap_or_else(|p| p.into_inner());
    }
}

fn encode_loop(
    inner: Arc<Inner>,
    tx: broadcast::Sender<Arc<EncodedFrame>>,
    stamp: Arc<AtomicBool>,
) {
    let mut encoder: Option<Vp8Encoder> = None;
    while let Some(next) = next_frame(&inner) {
        let Some(mut frame) = next.filter(|_| tx.receiver_count() > 0) else {
            if encoder.take().is_some() {
                inner.running.store(false, Ordering::Relaxed);
                info!("last VP8 viewer gone: VP8 encoder stopped");
            }
            continue;
        };
        let enc = match encoder.as_mut() {
            Some(e) => e,
            None => {
                let mut s = inner.settings();
                // The source decides the size (it may differ from the
                // configured one after a re-open).
                (s.width, s.height) = (frame.width, frame.height);
                match Vp8Encoder::new(&s) {
                    Ok(e) => {
                        info!(
                            width = s.width,
                            height = s.height,
                            bitrate = s.bitrate,
                            "VP8 viewer present: VP8 encoder started"
                        );
                        inner.encoders_started.fetch_add(1, Ordering::Relaxed);
                        inner.running.store(true, Ordering::Relaxed);
                        encoder.insert(e)
                    }
                    Err(e) => {
                        warn!("cannot start the VP8 encoder: {e}");
                        continue;
                    }
                }
            }
        };
        let now = clock::monotonic_us();
        let ticket = inner.debounce().begin_frame(now);
        if stamp.load(Ordering::Relaxed) {
            let (seq, ms) = (frame.seq, clock::stamp_ms(frame.capture_us));
            crate::media::stamp::write_stamp(&mut frame, seq, ms);
        }
        match enc.encode(&frame, ticket.force_idr) {
            Ok(Some(out)) => {
                inner.debounce().end_frame(ticket, out.keyframe, now);
                let took = clock::monotonic_us().saturating_sub(now);
                inner.frames_encoded.fetch_add(1, Ordering::Relaxed);
                inner.total_encode_us.fetch_add(took, Ordering::Relaxed);
                if out.keyframe {
                    inner.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send(Arc::new(out));
            }
            Ok(None) => debug!(
                seq = frame.seq,
                "VP8 encoder produced no output for a frame"
            ),
            Err(e) => {
                // A fresh encoder (whose first frame is a keyframe) after a
                // failure or a change of frame size.
                warn!(
                    seq = frame.seq,
                    "VP8 encode failed, restarting the encoder: {e}"
                );
                encoder = None;
            }
        }
    }
    debug!("VP8 encoder thread done");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_pattern::TestPattern;
    use crate::media::VideoSource;
    use std::time::{Duration, Instant};

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate: 400_000,
            keyframe_interval: 0,
        }
    }

    fn recv(rx: &mut broadcast::Receiver<Arc<EncodedFrame>>) -> Arc<EncodedFrame> {
        let t = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(f) => return f,
                Err(broadcast::error::TryRecvError::Empty)
                    if t.elapsed() < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("no VP8 frame: {e:?}"),
            }
        }
    }

    #[test]
    fn encodes_only_while_subscribed_and_starts_with_a_keyframe() {
        let lane = Vp8Lane::start(settings(), Arc::new(AtomicBool::new(false))).unwrap();
        let mut src = TestPattern::new(320, 240, 30).unwrap();
        // Nobody subscribed: frames are not even copied.
        for _ in 0..5 {
            lane.offer(&src.next_frame().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(lane.stats().frames_encoded, 0);
        assert_eq!(lane.stats().encoders_started, 0);

        let mut rx = lane.subscribe();
        lane.offer(&src.next_frame().unwrap());
        let first = recv(&mut rx);
        assert!(
            first.keyframe,
            "a new VP8 viewer's first frame is a keyframe"
        );
        lane.offer(&src.next_frame().unwrap());
        assert!(!recv(&mut rx).keyframe);
        // After the debounce window of the join keyframe.
        std::thread::sleep(Duration::from_micros(KEYFRAME_MIN_GAP_US + 10_000));
        lane.request_keyframe();
        lane.offer(&src.next_frame().unwrap());
        assert!(recv(&mut rx).keyframe, "a keyframe request is served");
        assert_eq!(lane.stats().encoders_started, 1);

        // The last viewer leaves: the encoder stops; a new one restarts it.
        drop(rx);
        lane.offer(&src.next_frame().unwrap());
        let t = Instant::now();
        while lane.inner.running.load(Ordering::Relaxed) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the encoder kept running"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut rx = lane.subscribe();
        let t = Instant::now();
        let frame = loop {
            lane.offer(&src.next_frame().unwrap());
            if let Ok(f) = rx.try_recv() {
                break f;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no frame after re-subscribing"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(frame.keyframe);
        assert_eq!(lane.stats().encoders_started, 2);
    }
}
