//! Counters and latency samples for the stats log line and the benchmark.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How many recent capture-to-sent samples are kept.
const WINDOW: usize = 4096;

/// Shared session metrics.
#[derive(Default)]
pub struct Metrics {
    frames_sent: AtomicU64,
    media_bytes: AtomicU64,
    keyframe_requests: AtomicU64,
    send_us: Mutex<VecDeque<u64>>,
}

/// A summary of recent capture-to-packet-sent times.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_us: u64,
    pub p95_us: u64,
    pub max_us: u64,
}

impl Metrics {
    /// A frame went out; `us` is capture to `write_sample` returning.
    pub fn record_send(&self, us: u64) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        let mut v = self.send_us.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= WINDOW {
            v.pop_front();
        }
        v.push_back(us);
    }

    /// Encoded media (video access units, Opus packets) handed to a
    /// session's track, bytes: what viewers cost upstream, before RTP.
    pub fn record_bytes(&self, n: usize) {
        self.media_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn media_bytes(&self) -> u64 {
        self.media_bytes.load(Ordering::Relaxed)
    }

    pub fn record_keyframe_request(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frames_sent(&self) -> u64 {
        self.frames_sent.load(Ordering::Relaxed)
    }

    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Summarises and clears the window.
    pub fn take_send_latency(&self) -> LatencySummary {
        let taken = std::mem::take(&mut *self.send_us.lock().unwrap_or_else(|p| p.into_inner()));
        summarize(&mut Vec::from(taken))
    }
}

/// Percentiles of `v` (sorted in place).
pub fn summarize(v: &mut [u64]) -> LatencySummary {
    if v.is_empty() {
        return LatencySummary::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    LatencySummary {
        samples: v.len(),
        p50_us: at(0.50),
        p95_us: at(0.95),
        max_us: v[v.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).collect();
        let s = summarize(&mut v);
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_us, 51);
        assert_eq!(s.p95_us, 95);
        assert_eq!(s.max_us, 100);
        assert_eq!(summarize(&mut []), LatencySummary::default());
    }

    #[test]
    fn window_is_taken_and_cleared() {
        let m = Metrics::default();
        m.record_send(10);
        m.record_send(30);
        assert_eq!(m.take_send_latency().samples, 2);
        assert_eq!(m.take_send_latency().samples, 0);
        assert_eq!(m.frames_sent(), 2);
    }
}
