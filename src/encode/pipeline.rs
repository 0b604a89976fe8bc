//! Capture once, encode once, fan out.
//!
//! ```text
//! campeer-capture --raw frames (slot of 2, oldest dropped)--> campeer-h264
//!     campeer-h264 --Arc<EncodedFrame>--> tokio broadcast --> every session
//! ```
//!
//! The capture thread never waits for the encoder: when the encoder is
//! behind, the oldest raw frame waiting for it is dropped (and counted). The
//! encoder publishes on a broadcast channel holding about two seconds of
//! frames; a session that falls further behind sees `Lagged` and skips to a
//! keyframe. Keyframe requests are debounced ([`KeyframeDebounce`]).
//!
//! A failing source is logged, and re-opened (or retried, without a re-open
//! closure) with backoff from 250 ms doubling to 2 s, with jitter; the loop
//! never spins and always listens for stop. `stop` (or drop) ends both
//! threads within about one frame interval plus one encode.

use super::first_frame;
use super::h264::{EncoderSettings, H264Encoder};
use super::vp8_lane::{Vp8Lane, Vp8Stats};
use super::EncodeError;
use crate::backoff::Backoff;
use crate::clock;
use crate::media::{EncodedFrame, I420Frame, MediaError, SourceUnit, VideoFormat, VideoSource};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Raw frames waiting for the encoder (oldest dropped beyond this).
const RAW_QUEUE: usize = 2;
/// Shortest gap between two forced IDRs: bounds a PLI storm to ten IDRs a
/// second while keeping a new viewer's first picture within ~3 frames.
pub const KEYFRAME_MIN_GAP_US: u64 = 100_000;
/// Source retry backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Short enough that video resumes within ~2.5 s of a camera returning.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The video codecs the pipeline encodes: H.264 always, VP8 on demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Vp8,
}

/// Re-opens the video source after it failed.
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn VideoSource>, MediaError> + Send>;

/// Counters of the pipeline, for the stats log, benches and a watchdog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub frames_captured: u64,
    pub frames_encoded: u64,
    /// Raw frames dropped because the encoder was behind.
    pub frames_dropped_before_encode: u64,
    pub keyframes: u64,
    /// Duration of the latest encode, microseconds.
    pub last_encode_us: u64,
    /// Sum of all encode durations, microseconds.
    pub total_encode_us: u64,
    /// CLOCK_MONOTONIC microseconds when the latest frame was published
    /// (0 before the first).
    pub last_frame_at_us: u64,
    /// Source errors (each followed by a backoff and a retry or re-open).
    pub source_errors: u64,
    /// CLOCK_MONOTONIC microseconds when the capture thread last made
    /// progress (a frame, or a retry); a stale value means it is stuck.
    pub capture_heartbeat_us: u64,
}

#[derive(Default)]
struct Counters {
    frames_captured: AtomicU64,
    frames_encoded: AtomicU64,
    frames_dropped_before_encode: AtomicU64,
    keyframes: AtomicU64,
    last_encode_us: AtomicU64,
    total_encode_us: AtomicU64,
    last_frame_at_us: AtomicU64,
    source_errors: AtomicU64,
    capture_heartbeat_us: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> PipelineStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PipelineStats {
            frames_captured: get(&self.frames_captured),
            frames_encoded: get(&self.frames_encoded),
            frames_dropped_before_encode: get(&self.frames_dropped_before_encode),
            keyframes: get(&self.keyframes),
            last_encode_us: get(&self.last_encode_us),
            total_encode_us: get(&self.total_encode_us),
            last_frame_at_us: get(&self.last_frame_at_us),
            source_errors: get(&self.source_errors),
            capture_heartbeat_us: get(&self.capture_heartbeat_us),
        }
    }
}

/// Debounces keyframe requests: at most one forced IDR per `min_gap_us`.
/// Requests inside the window coalesce into one IDR at the first frame after
/// it; an IDR the encoder makes anyway (first frame, periodic) answers every
/// request made before that frame. Pure: time is passed in.
#[derive(Clone, Debug)]
pub struct KeyframeDebounce {
    min_gap_us: u64,
    requested: u64,
    served: u64,
    last_forced_us: Option<u64>,
}

/// What `begin_frame` decided for one frame; hand it back to `end_frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTicket {
    pub force_idr: bool,
    requests_seen: u64,
}

impl KeyframeDebounce {
    pub fn new(min_gap_us: u64) -> Self {
        KeyframeDebounce {
            min_gap_us,
            requested: 0,
            served: 0,
            last_forced_us: None,
        }
    }

    /// Someone wants a keyframe.
    pub fn request(&mut self) {
        self.requested += 1;
    }

    /// True while a request has not been answered by an IDR.
    pub fn pending(&self) -> bool {
        self.requested > self.served
    }

    /// Called before encoding a frame at `now_us`.
    pub fn begin_frame(&self, now_us: u64) -> FrameTicket {
        let window_over = self
            .last_forced_us
            .is_none_or(|t| now_us >= t.saturating_add(self.min_gap_us));
        FrameTicket {
            force_idr: self.pending() && window_over,
            requests_seen: self.requested,
        }
    }

    /// Called after encoding the frame `ticket` was issued for.
    pub fn end_frame(&mut self, ticket: FrameTicket, was_idr: bool, now_us: u64) {
        if was_idr {
            self.served = self.served.max(ticket.requests_seen);
            if ticket.force_idr {
                self.last_forced_us = Some(now_us);
            }
        }
    }
}

/// The media retry backoff: 250 ms doubling to 2 s, with jitter.
pub fn media_backoff() -> Backoff {
    Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
}

/// A stop flag that sleepers can wait on (shared by the media threads).
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // A poisoned lock only means a thread panicked holding it; the flag
        // is still meaningful.
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stop(&self) {
        *self.lock() = true;
        self.cv.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.lock()
    }

    /// Sleeps for `d` or until stopped; returns true if stopped.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// A raw frame waiting for the encoder: `kept` when it is the kept frame
/// queued again for a first viewer (`encode::first_frame`), which the
/// encoder may have taken already.
struct Queued {
    frame: I420Frame,
    kept: bool,
}

/// The bounded raw-frame queue between capture and encoder.
struct RawQueue {
    frames: Mutex<(VecDeque<Queued>, bool)>,
    cv: Condvar,
}

impl RawQueue {
    fn new() -> Self {
        RawQueue {
            frames: Mutex::new((VecDeque::with_capacity(RAW_QUEUE), false)),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (VecDeque<Queued>, bool)> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a captured frame; returns how many old frames were dropped.
    fn push(&self, frame: I420Frame) -> u64 {
        self.push_queued(Queued { frame, kept: false })
    }

    /// Queues the kept frame again for a first viewer.
    fn push_kept(&self, frame: I420Frame) {
        self.push_queued(Queued { frame, kept: true });
    }

    fn push_queued(&self, frame: Queued) -> u64 {
        let mut g = self.lock();
        let mut dropped = 0;
        while g.0.len() >= RAW_QUEUE {
            g.0.pop_front();
            dropped += 1;
        }
        g.0.push_back(frame);
        drop(g);
        self.cv.notify_one();
        dropped
    }

    /// Waits for the next frame; `None` once closed.
    fn pop(&self) -> Option<Queued> {
        let mut g = self.lock();
        loop {
            if g.1 {
                return None;
            }
            if let Some(f) = g.0.pop_front() {
                return Some(f);
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lock().1 = true;
        self.cv.notify_all();
    }
}

struct Shared {
    stop: StopSignal,
    queue: RawQueue,
    counters: Counters,
    debounce: Mutex<KeyframeDebounce>,
    format: Mutex<VideoFormat>,
    encoder_alive: AtomicBool,
    /// Stamp frames before encoding.
    stamp: Arc<AtomicBool>,
    /// The latest raw frame (stamped when `stamp` is on), for snapshots.
    latest: Mutex<Option<Arc<I420Frame>>>,
    /// The profile-level-id of H.264 passed through, once seen.
    passthrough_profile: Mutex<Option<String>>,
    /// VP8 for browsers without H.264: encodes only while subscribed.
    vp8: Vp8Lane,
}

impl Shared {
    fn debounce(&self) -> MutexGuard<'_, KeyframeDebounce> {
        self.debounce.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running capture and encoder threads.
pub struct VideoPipeline {
    shared: Arc<Shared>,
    tx: broadcast::Sender<Arc<EncodedFrame>>,
    capture: Option<JoinHandle<()>>,
    encoder: Option<JoinHandle<()>>,
}

impl VideoPipeline {
    /// Starts capturing from `source` and encoding with `settings`. A source
    /// error is retried on the same source with backoff.
    pub fn start(
        source: Box<dyn VideoSource>,
        settings: EncoderSettings,
    ) -> Result<Self, EncodeError> {
        let format = source.format().clone();
        Self::spawn(Some(source), None, settings, format, media_backoff())
    }

    /// Like `start`, but after a source error the source is dropped and
    /// `reopen` makes a new one (with backoff between attempts).
    pub fn start_with_reopen(
        source: Box<dyn VideoSource>,
        reopen: Reopen,
        settings: EncoderSettings,
    ) -> Result<Self, EncodeError> {
        let format = source.format().clone();
        Self::spawn(
            Some(source),
            Some(reopen),
            settings,
            format,
            media_backoff(),
        )
    }

    /// Like `start_with_reopen` for a camera that could not be opened yet
    /// (unplugged at boot): the capture thread keeps re-opening it with
    /// backoff, and nothing is published until it succeeds.
    pub fn start_without_source(
        reopen: Reopen,
        settings: EncoderSettings,
    ) -> Result<Self, EncodeError> {
        let format = VideoFormat {
            width: settings.width,
            height: settings.height,
            fps: settings.fps,
            pixel_format: "not open".into(),
        };
        Self::spawn(None, Some(reopen), settings, format, media_backoff())
    }

    /// Draw the frame stamp (docs/protocol.md#measuring-latency-the-frame-stamp) on every frame before
    /// encoding, as the test source always does (the `video.stamp` key).
    pub fn set_stamp(&self, on: bool) {
        self.shared.stamp.store(on, Ordering::Relaxed);
    }

    /// `backoff`: between a source error and the next try
    /// ([`media_backoff`]; tests give a long one to see `stop` cut it).
    fn spawn(
        source: Option<Box<dyn VideoSource>>,
        reopen: Option<Reopen>,
        settings: EncoderSettings,
        format: VideoFormat,
        backoff: Backoff,
    ) -> Result<Self, EncodeError> {
        let encoder = H264Encoder::new(&settings)?;
        let (tx, _) = broadcast::channel((settings.fps as usize * 2).max(8));
        let stamp = Arc::new(AtomicBool::new(false));
        let vp8 = Vp8Lane::start(settings.clone(), stamp.clone())?;
        let shared = Arc::new(Shared {
            stop: StopSignal::default(),
            queue: RawQueue::new(),
            counters: Counters::default(),
            debounce: Mutex::new(KeyframeDebounce::new(KEYFRAME_MIN_GAP_US)),
            format: Mutex::new(format),
            encoder_alive: AtomicBool::new(true),
            stamp,
            latest: Mutex::new(None),
            passthrough_profile: Mutex::new(None),
            vp8,
        });

        let enc_thread = {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("campeer-h264".into())
                .spawn(move || encode_loop(encoder, shared, tx))
                .map_err(|source| EncodeError::Thread {
                    name: "campeer-h264",
                    source,
                })?
        };
        let cap_thread = {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("campeer-capture".into())
                .spawn(move || capture_loop(source, reopen, shared, tx, backoff))
        };
        let cap_thread = match cap_thread {
            Ok(t) => t,
            Err(source) => {
                shared.stop.stop();
                shared.queue.close();
                let _ = enc_thread.join();
                return Err(EncodeError::Thread {
                    name: "campeer-capture",
                    source,
                });
            }
        };
        Ok(VideoPipeline {
            shared,
            tx,
            capture: Some(cap_thread),
            encoder: Some(enc_thread),
        })
    }

    /// A receiver of every encoded frame from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedFrame>> {
        let was_idle = self.tx.receiver_count() == 0;
        let rx = self.tx.subscribe();
        self.wake_with_kept_frame(was_idle);
        rx
    }

    /// The first viewer's IDR from the kept frame, now (`encode::first_frame`).
    fn wake_with_kept_frame(&self, was_idle: bool) {
        let Some(kept) = self.latest_frame() else {
            return;
        };
        let queue_empty = self.shared.queue.lock().0.is_empty();
        let now = clock::monotonic_us();
        if first_frame::encode_kept_frame(was_idle, queue_empty, Some(kept.capture_us), now) {
            debug!(seq = kept.seq, "first viewer: encoding the kept frame now");
            self.shared.queue.push_kept(I420Frame::clone(&kept));
        }
    }

    /// The latest raw frame, whether or not anyone watches (snapshots). It
    /// is moved into its slot after use, never copied.
    pub fn latest_frame(&self) -> Option<Arc<I420Frame>> {
        self.shared
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks for an IDR soon (debounced; see [`KeyframeDebounce`]).
    pub fn request_keyframe(&self) {
        self.shared.debounce().request();
    }

    /// A receiver of encoded frames of `codec` from now on (VP8 is encoded
    /// only while someone holds such a receiver).
    pub fn subscribe_codec(&self, codec: VideoCodec) -> broadcast::Receiver<Arc<EncodedFrame>> {
        match codec {
            VideoCodec::H264 => self.subscribe(),
            VideoCodec::Vp8 => self.shared.vp8.subscribe(),
        }
    }

    /// Asks the encoder of `codec` for a keyframe soon (debounced).
    pub fn request_keyframe_codec(&self, codec: VideoCodec) {
        match codec {
            VideoCodec::H264 => self.request_keyframe(),
            VideoCodec::Vp8 => self.shared.vp8.request_keyframe(),
        }
    }

    /// The VP8 target bitrate (bit/s), from the next VP8 encoder on.
    pub fn set_vp8_bitrate(&self, bitrate: u32) {
        self.shared.vp8.set_bitrate(bitrate);
    }

    pub fn vp8_stats(&self) -> Vp8Stats {
        self.shared.vp8.stats()
    }

    /// The format the source delivers (updated when it is re-opened).
    pub fn format(&self) -> VideoFormat {
        self.shared
            .format
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the source delivers H.264 that is passed through (an
    /// `exec:` command's `h264`, a camera's own H.264), known from its
    /// format before its first keyframe.
    pub fn passes_through(&self) -> bool {
        self.format().pixel_format.eq_ignore_ascii_case("h264")
    }

    /// For a source whose H.264 is passed through: the profile-level-id of
    /// its latest SPS (`None` for openh264's own stream, or before the
    /// source's first keyframe).
    pub fn passthrough_profile(&self) -> Option<String> {
        self.shared
            .passthrough_profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> PipelineStats {
        self.shared.counters.snapshot()
    }

    /// False once the encoder thread has ended (it only ends on stop).
    pub fn is_running(&self) -> bool {
        self.shared.encoder_alive.load(Ordering::Relaxed) && !self.shared.stop.is_stopped()
    }

    /// Stops both threads and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.stop();
        if let Some(t) = self.capture.take() {
            if t.join().is_err() {
                warn!("capture thread panicked");
            }
        }
        // The capture thread is gone: nothing more will be queued.
        self.shared.queue.close();
        self.shared.vp8.shutdown();
        if let Some(t) = self.encoder.take() {
            if t.join().is_err() {
                warn!("encoder thread panicked");
            }
        }
    }
}

impl Drop for VideoPipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn jitter() -> f64 {
    rand::thread_rng().gen::<f64>()
}

fn capture_loop(
    initial: Option<Box<dyn VideoSource>>,
    mut reopen: Option<Reopen>,
    shared: Arc<Shared>,
    tx: broadcast::Sender<Arc<EncodedFrame>>,
    mut backoff: Backoff,
) {
    let mut source = initial;
    let mut name = source
        .as_ref()
        .map(|s| s.describe())
        .unwrap_or_else(|| "camera (not open yet)".into());
    while !shared.stop.is_stopped() {
        shared
            .counters
            .capture_heartbeat_us
            .store(clock::monotonic_us(), Ordering::Relaxed);
        let Some(src) = source.as_mut() else {
            // Only reached with a re-open closure.
            let Some(open) = reopen.as_mut() else { break };
            match open() {
                Ok(s) => {
                    name = s.describe();
                    let f = s.format().clone();
                    info!(device = %name, width = f.width, height = f.height, fps = f.fps,
                          format = %f.pixel_format, "video source re-opened");
                    *shared.format.lock().unwrap_or_else(|p| p.into_inner()) = f;
                    // The encoder's references belong to the old source.
                    shared.debounce().request();
                    source = Some(s);
                }
                Err(e) => {
                    shared
                        .counters
                        .source_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let d = backoff.next_delay(jitter());
                    warn!(device = %name, retry_ms = d.as_millis() as u64, "cannot re-open video source: {e}");
                    if shared.stop.sleep(d) {
                        break;
                    }
                }
            }
            continue;
        };
        src.set_wanted(tx.receiver_count() > 0);
        forward_keyframe_request(&shared, src.as_mut());
        match src.next_unit() {
            // An on-demand source with nobody watching (it waited a little).
            Err(MediaError::Idle) => continue,
            Ok(SourceUnit::Encoded(frame)) => {
                backoff.reset();
                publish_passthrough(&shared, &tx, frame);
            }
            Ok(SourceUnit::Raw(frame)) => {
                backoff.reset();
                shared
                    .counters
                    .frames_captured
                    .fetch_add(1, Ordering::Relaxed);
                shared.vp8.offer(&frame);
                let dropped = shared.queue.push(frame);
                if dropped > 0 {
                    shared
                        .counters
                        .frames_dropped_before_encode
                        .fetch_add(dropped, Ordering::Relaxed);
                }
            }
            Err(e) => {
                shared
                    .counters
                    .source_errors
                    .fetch_add(1, Ordering::Relaxed);
                let d = backoff.next_delay(jitter());
                if reopen.is_some() {
                    warn!(device = %name, retry_ms = d.as_millis() as u64, "video source failed, re-opening: {e}");
                    // Close the device before waiting, so it is free to re-open.
                    source = None;
                } else {
                    warn!(device = %name, retry_ms = d.as_millis() as u64, "video source failed, retrying: {e}");
                }
                if shared.stop.sleep(d) {
                    break;
                }
            }
        }
    }
    debug!(device = %name, "capture thread done");
}

/// A pending keyframe request goes to a source that encodes itself and can
/// make one on demand (a V4L2 camera's FORCE_KEY_FRAME), under the same
/// debounce as openh264's forced IDRs. A source that cannot leaves the
/// request to its next periodic keyframe (or, raw, to the encoder).
fn forward_keyframe_request(shared: &Shared, src: &mut dyn VideoSource) {
    let now = clock::monotonic_us();
    let mut d = shared.debounce();
    let ticket = d.begin_frame(now);
    if ticket.force_idr && src.request_keyframe() {
        d.end_frame(ticket, true, now);
    }
}

/// H.264 the source encoded itself goes to every viewer as it is
/// (`encode::passthrough`): no raw queue, no encoder, no forced IDRs.
fn publish_passthrough(
    shared: &Shared,
    tx: &broadcast::Sender<Arc<EncodedFrame>>,
    frame: EncodedFrame,
) {
    let c = &shared.counters;
    c.frames_captured.fetch_add(1, Ordering::Relaxed);
    c.frames_encoded.fetch_add(1, Ordering::Relaxed);
    if frame.keyframe {
        c.keyframes.fetch_add(1, Ordering::Relaxed);
        let sps = crate::media::exec::framing::nal_units(&frame.data)
            .into_iter()
            .find_map(crate::media::passthrough::profile_level_id);
        if let Some(p) = sps {
            let mut slot = shared
                .passthrough_profile
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if slot.as_deref() != Some(p.as_str()) {
                info!(profile_level_id = %p, "passed-through H.264 profile");
                *slot = Some(p);
            }
        }
        // Any request so far is answered by this keyframe.
        let mut d = shared.debounce();
        let ticket = d.begin_frame(frame.capture_us);
        d.end_frame(ticket, true, frame.capture_us);
    }
    c.last_frame_at_us
        .store(clock::monotonic_us(), Ordering::Relaxed);
    let _ = tx.send(Arc::new(frame));
}

fn encode_loop(
    mut encoder: H264Encoder,
    shared: Arc<Shared>,
    tx: broadcast::Sender<Arc<EncodedFrame>>,
) {
    let mut failures = 0u32;
    let mut idle = false;
    let mut last_encoded_us = None;
    while let Some(Queued { mut frame, kept }) = shared.queue.pop() {
        let now = clock::monotonic_us();
        if !first_frame::encode_queued(kept, frame.capture_us, last_encoded_us) {
            debug!(
                seq = frame.seq,
                "the kept frame was encoded already or is older: skipped"
            );
            continue;
        }
        if tx.receiver_count() == 0 {
            // Nobody is watching: capture goes on (the camera stays warm and
            // the watchdog sees frames), encoding does not.
            if !idle {
                debug!("no viewers: encoder idle");
                idle = true;
            }
            shared
                .counters
                .last_frame_at_us
                .store(now, Ordering::Relaxed);
            keep_latest(&shared, frame);
            continue;
        }
        let ticket = shared.debounce().begin_frame(now);
        // The first frame after idling must be decodable on its own.
        let force_idr = ticket.force_idr || std::mem::take(&mut idle);
        if shared.stamp.load(Ordering::Relaxed) {
            let (seq, ms) = (frame.seq, clock::stamp_ms(frame.capture_us));
            crate::media::stamp::write_stamp(&mut frame, seq, ms);
        }
        let result = encoder.encode(&frame, force_idr);
        last_encoded_us = Some(frame.capture_us);
        let took = clock::monotonic_us().saturating_sub(now);
        let seq = frame.seq;
        // Stamped already (encoded path): stored as is.
        *shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(frame));
        match result {
            Ok(Some(out)) => {
                failures = 0;
                shared.debounce().end_frame(ticket, out.keyframe, now);
                let c = &shared.counters;
                c.frames_encoded.fetch_add(1, Ordering::Relaxed);
                c.last_encode_us.store(took, Ordering::Relaxed);
                c.total_encode_us.fetch_add(took, Ordering::Relaxed);
                if out.keyframe {
                    c.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                c.last_frame_at_us
                    .store(clock::monotonic_us(), Ordering::Relaxed);
                // No receivers is fine: nobody is watching.
                let _ = tx.send(Arc::new(out));
            }
            Ok(None) => debug!(seq, "encoder produced no output for a frame"),
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(100) {
                    warn!(seq, failures, "encode failed: {e}");
                }
                // A fresh encoder after a failure, so a bad internal state
                // cannot persist; its first frame is an IDR.
                match H264Encoder::new(encoder.settings()) {
                    Ok(fresh) => encoder = fresh,
                    Err(e) => warn!("cannot re-create the encoder: {e}"),
                }
            }
        }
    }
    shared.encoder_alive.store(false, Ordering::Relaxed);
    debug!("encoder thread done");
}

/// Keeps an idle frame as the latest one, stamped like an encoded frame
/// would be, so snapshots look the same whether or not anyone watches.
fn keep_latest(shared: &Shared, mut frame: I420Frame) {
    if shared.stamp.load(Ordering::Relaxed) {
        let (seq, ms) = (frame.seq, clock::stamp_ms(frame.capture_us));
        crate::media::stamp::write_stamp(&mut frame, seq, ms);
    }
    *shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(frame));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::stamp::read_stamp;
    use crate::media::test_pattern::TestPattern;
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    #[test]
    fn debounce_forces_at_once_then_waits_out_the_window() {
        let mut d = KeyframeDebounce::new(250_000);
        assert!(!d.begin_frame(0).force_idr, "nothing requested");
        d.request();
        let t = d.begin_frame(1_000_000);
        assert!(t.force_idr);
        d.end_frame(t, true, 1_000_000);
        assert!(!d.pending());

        // Three requests 50 ms later, inside the window: no IDR yet...
        for _ in 0..3 {
            d.request();
        }
        for now in [1_050_000, 1_100_000, 1_249_999] {
            let t = d.begin_frame(now);
            assert!(!t.force_idr, "at {now}");
            d.end_frame(t, false, now);
        }
        // ...then exactly one at the first frame after it.
        let t = d.begin_frame(1_250_000);
        assert!(t.force_idr);
        d.end_frame(t, true, 1_250_000);
        let t = d.begin_frame(1_283_000);
        assert!(!t.force_idr, "the three requests coalesced into one IDR");
    }

    #[test]
    fn debounce_counts_natural_idrs_as_answers() {
        let mut d = KeyframeDebounce::new(250_000);
        d.request();
        let t = d.begin_frame(0);
        assert!(t.force_idr);
        d.end_frame(t, true, 0);
        // A request inside the window, answered by a periodic IDR.
        d.request();
        let t = d.begin_frame(100_000);
        assert!(!t.force_idr);
        d.end_frame(t, true, 100_000);
        assert!(!d.pending());
        // A periodic IDR does not open a new window.
        d.request();
        let t = d.begin_frame(260_000);
        assert!(t.force_idr);
    }

    #[test]
    fn debounce_keeps_requests_made_during_an_encode() {
        let mut d = KeyframeDebounce::new(250_000);
        d.request();
        let t = d.begin_frame(0);
        d.request(); // arrives while frame 0 is being encoded
        d.end_frame(t, true, 0);
        assert!(d.pending(), "the late request still needs an IDR");
        assert!(!d.begin_frame(100_000).force_idr);
        assert!(d.begin_frame(250_000).force_idr);
    }

    #[test]
    fn debounce_retries_when_a_forced_frame_was_not_idr() {
        let mut d = KeyframeDebounce::new(250_000);
        d.request();
        let t = d.begin_frame(0);
        d.end_frame(t, false, 0);
        assert!(d.begin_frame(33_000).force_idr);
    }

    #[test]
    fn media_backoff_doubles_to_two_seconds_and_resets() {
        let mut b = media_backoff();
        let got: Vec<u128> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(0.0).as_millis(), 125);
    }

    #[test]
    fn raw_queue_drops_the_oldest_and_never_blocks() {
        let q = RawQueue::new();
        let f = |seq| I420Frame {
            seq,
            ..I420Frame::black(2, 2)
        };
        assert_eq!(q.push(f(0)), 0);
        assert_eq!(q.push(f(1)), 0);
        assert_eq!(q.push(f(2)), 1);
        assert_eq!(q.push(f(3)), 1);
        q.push_kept(f(4));
        assert_eq!(q.pop().map(|q| (q.frame.seq, q.kept)), Some((3, false)));
        assert_eq!(q.pop().map(|q| (q.frame.seq, q.kept)), Some((4, true)));
        q.close();
        assert!(q.pop().is_none());
    }

    fn settings(w: u32, h: u32) -> EncoderSettings {
        EncoderSettings {
            width: w,
            height: h,
            fps: 30,
            bitrate: 500_000,
            keyframe_interval: 0,
        }
    }

    fn recv(rx: &mut broadcast::Receiver<Arc<EncodedFrame>>) -> Arc<EncodedFrame> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match rx.try_recv() {
                Ok(f) => return f,
                Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("no frame within 5 s: {e:?}"),
            }
        }
    }

    /// A source that "encodes" itself: every 20 ms one access unit, an IDR
    /// only when asked (`request_keyframe`), counting the requests.
    struct SelfEncoding {
        format: VideoFormat,
        asked: Arc<AtomicU64>,
        idr_next: bool,
        seq: u32,
    }

    impl VideoSource for SelfEncoding {
        fn format(&self) -> &VideoFormat {
            &self.format
        }
        fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
            unreachable!("passed through")
        }
        fn next_unit(&mut self) -> Result<SourceUnit, MediaError> {
            std::thread::sleep(Duration::from_millis(20));
            let keyframe = std::mem::take(&mut self.idr_next);
            self.seq += 1;
            Ok(SourceUnit::Encoded(EncodedFrame {
                data: bytes::Bytes::from_static(&[0, 0, 0, 1, 0x65]),
                keyframe,
                capture_us: clock::monotonic_us(),
                seq: self.seq,
                duration_us: 20_000,
            }))
        }
        fn request_keyframe(&mut self) -> bool {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.idr_next = true;
            true
        }
    }

    #[test]
    fn keyframe_requests_reach_a_self_encoding_source_debounced() {
        let asked = Arc::new(AtomicU64::new(0));
        let source = Box::new(SelfEncoding {
            format: VideoFormat {
                width: 320,
                height: 240,
                fps: 50,
                pixel_format: "H264".into(),
            },
            asked: asked.clone(),
            idr_next: false,
            seq: 0,
        });
        let p = VideoPipeline::start(source, settings(320, 240)).unwrap();
        let mut rx = p.subscribe();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(asked.load(Ordering::SeqCst), 0, "nobody asked yet");
        // Three requests at once are one request to the camera ...
        for _ in 0..3 {
            p.request_keyframe();
        }
        let got = (0..10).map(|_| recv(&mut rx)).position(|f| f.keyframe);
        assert!(got.is_some(), "no keyframe within 10 frames of asking");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // ... and a later one, after the debounce window, is another.
        std::thread::sleep(Duration::from_micros(KEYFRAME_MIN_GAP_US));
        p.request_keyframe();
        let got = (0..10).map(|_| recv(&mut rx)).position(|f| f.keyframe);
        assert!(got.is_some(), "no second keyframe");
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        p.stop();
    }

    /// The race the kept frame loses: a viewer subscribes while the encoder
    /// takes the next captured frame, so the kept (older) frame is queued
    /// behind it. The encoder must not send it: a viewer would see a frame
    /// repeated or out of order.
    #[test]
    fn a_kept_frame_behind_a_newer_one_is_not_encoded() {
        let reopen: Reopen = Box::new(|| Err(MediaError::NoSource));
        let p = VideoPipeline::start_without_source(reopen, settings(64, 48)).unwrap();
        let mut rx = p.subscribe();
        let f = |seq, capture_us| I420Frame {
            seq,
            capture_us,
            ..I420Frame::black(64, 48)
        };
        // At most two at a time: the queue holds two.
        let mut seqs = Vec::new();
        for pair in [
            [(1, 200, false), (0, 100, true)],
            [(1, 200, true), (2, 300, false)],
        ] {
            for (seq, at, kept) in pair {
                p.shared.queue.push_queued(Queued {
                    frame: f(seq, at),
                    kept,
                });
            }
            seqs.push(recv(&mut rx).seq);
        }
        p.shared.queue.push_kept(f(3, 400));
        seqs.push(recv(&mut rx).seq);
        assert_eq!(
            seqs,
            vec![1, 2, 3],
            "older and repeated kept frames skipped"
        );
        p.stop();
    }

    #[test]
    fn test_pattern_flows_through_with_stamps_and_keyframes() {
        let source = Box::new(TestPattern::new(320, 240, 30).unwrap());
        let p = VideoPipeline::start(source, settings(320, 240)).unwrap();
        assert_eq!(p.format().pixel_format, "test");
        let mut rx = p.subscribe();
        let mut dec = crate::encode::decode::H264Decoder::new().unwrap();

        let first = recv(&mut rx);
        // The subscriber may join after frame 0 was published: it still
        // needs an IDR to start, so ask like a session does.
        if !first.keyframe {
            p.request_keyframe();
        }
        let mut frames = vec![first];
        while frames.len() < 25 {
            frames.push(recv(&mut rx));
        }
        let start = frames.iter().position(|f| f.keyframe).expect("a keyframe");
        assert!(
            start <= 3,
            "keyframe within 3 frames of asking, got {start}"
        );
        let mut last: Option<(u32, u32)> = None;
        for f in &frames[start..] {
            let pic = dec.decode(&f.data).unwrap().expect("a picture");
            let (counter, ms) = read_stamp(&pic.y, 320, 320, 240).expect("a stamp");
            assert_eq!(counter, f.seq, "stamp counter is the frame seq");
            assert_eq!(ms, clock::stamp_ms(f.capture_us));
            if let Some((c0, m0)) = last {
                assert!(
                    counter > c0 && ms >= m0,
                    "increasing: {c0}->{counter}, {m0}->{ms}"
                );
            }
            last = Some((counter, ms));
        }

        // On demand: a keyframe within 3 frames of the request (the
        // frames above took well over the 250 ms debounce window).
        p.request_keyframe();
        let got = (0..3).map(|_| recv(&mut rx)).position(|f| f.keyframe);
        assert!(got.is_some(), "no keyframe within 3 frames of asking");

        let s = p.stats();
        assert!(s.frames_encoded >= 25 && s.frames_captured >= s.frames_encoded);
        assert!(s.keyframes >= 2);
        assert!(s.total_encode_us >= s.last_encode_us && s.last_encode_us > 0);
        assert!(s.last_frame_at_us > 0 && s.last_frame_at_us <= clock::monotonic_us());
        assert_eq!(s.source_errors, 0);
        // Stop returns (joining both threads): bounded only against a hang.
        let t = Instant::now();
        p.stop();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "stop took {:?}",
            t.elapsed()
        );
    }

    /// A source that fails after a few frames, to exercise re-opening.
    struct Flaky {
        inner: TestPattern,
        left: u32,
    }

    impl VideoSource for Flaky {
        fn format(&self) -> &VideoFormat {
            self.inner.format()
        }
        fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
            if self.left == 0 {
                return Err(MediaError::Timeout {
                    path: "/dev/flaky".into(),
                    ms: 0,
                });
            }
            self.left -= 1;
            self.inner.next_frame()
        }
    }

    #[test]
    fn a_failing_source_is_reopened_with_backoff() {
        let opens = Arc::new(AtomicU32::new(0));
        let make = |left| -> Box<dyn VideoSource> {
            Box::new(Flaky {
                inner: TestPattern::new(320, 240, 60).unwrap(),
                left,
            })
        };
        let counter = opens.clone();
        let reopen: Reopen = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(make(3))
        });
        let p = VideoPipeline::start_with_reopen(make(3), reopen, settings(320, 240)).unwrap();
        let mut rx = p.subscribe();
        // 3 frames, fail, ~250 ms, reopen, 3 frames (the first an IDR).
        let mut keyframes = 0;
        for _ in 0..5 {
            if recv(&mut rx).keyframe {
                keyframes += 1;
            }
        }
        assert!(opens.load(Ordering::SeqCst) >= 1, "re-opened");
        assert!(keyframes >= 1);
        let s = p.stats();
        assert!(s.source_errors >= 1);
        // Backoff, not a spin: far fewer errors than elapsed milliseconds.
        assert!(s.source_errors < 10, "{} errors", s.source_errors);
        drop(p); // Drop stops and joins too.
    }

    #[test]
    fn stop_is_prompt_even_while_backing_off() {
        let reopen: Reopen = Box::new(|| {
            Err(MediaError::Missing {
                path: "/dev/video7".into(),
            })
        });
        let src = Box::new(Flaky {
            inner: TestPattern::new(320, 240, 30).unwrap(),
            left: 0,
        });
        // An hour between tries: a stop that waited for the backoff to
        // run out would hang here, far past the bound below.
        let hour = Duration::from_secs(3600);
        let format = src.format().clone();
        let p = VideoPipeline::spawn(
            Some(src),
            Some(reopen),
            settings(320, 240),
            format,
            Backoff::new(hour, hour),
        )
        .unwrap();
        // The source fails on its first frame: wait for that, not a guess.
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.stats().source_errors == 0 {
            assert!(Instant::now() < deadline, "the source never failed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(p.is_running());
        let t = Instant::now();
        p.stop();
        // Generous for a loaded machine, yet a hundredth of the backoff.
        assert!(
            t.elapsed() < Duration::from_secs(36),
            "stop took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn bad_settings_fail_to_start() {
        let src = Box::new(TestPattern::new(320, 240, 30).unwrap());
        let e = VideoPipeline::start(
            src,
            EncoderSettings {
                bitrate: 0,
                ..settings(320, 240)
            },
        )
        .err()
        .expect("bad bitrate");
        assert!(matches!(e, EncodeError::BadSettings { .. }));
    }
}
