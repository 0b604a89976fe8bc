//! What VP8 costs next to H.264: encode time per frame of the test pattern
//! at 640x480 and 1280x720, 30 fps targets, one thread each (as the
//! pipeline runs them). Prints figures; asserts nothing.
//!
//! `cargo bench --bench codec_cost`

use campeer::encode::h264::{EncoderSettings, H264Encoder};
use campeer::encode::vp8::Vp8Encoder;
use campeer::media::test_pattern::TestPattern;
use campeer::media::VideoSource;
use std::time::Instant;

const FRAMES: usize = 150;

fn settings(width: u32, height: u32) -> EncoderSettings {
    EncoderSettings {
        width,
        height,
        fps: 30,
        bitrate: if width > 640 { 2_500_000 } else { 1_000_000 },
        keyframe_interval: 60,
    }
}

fn frames(width: u32, height: u32) -> Vec<campeer::media::I420Frame> {
    let mut src = TestPattern::new(width, height, 30).expect("test pattern");
    (0..FRAMES)
        .map(|_| src.next_frame().expect("frame"))
        .collect()
}

fn report(name: &str, times_us: &mut [u64], bytes: usize) {
    times_us.sort_unstable();
    let p = |q: f64| times_us[((times_us.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let mean = times_us.iter().sum::<u64>() as f64 / times_us.len() as f64 / 1000.0;
    println!(
        "{name}: encode mean {mean:.2} ms, p50 {:.2} ms, p95 {:.2} ms per frame; \
         one core at 30 fps: {:.0}%; {:.0} kbit/s",
        p(0.5),
        p(0.95),
        mean * 30.0 / 10.0,
        bytes as f64 * 8.0 / (FRAMES as f64 / 30.0) / 1000.0
    );
}

fn main() {
    for (w, h) in [(640, 480), (1280, 720)] {
        let input = frames(w, h);
        let s = settings(w, h);
        let mut h264 = H264Encoder::new(&s).expect("openh264");
        let (mut t, mut bytes) = (Vec::new(), 0);
        for f in &input {
            let start = Instant::now();
            let out = h264.encode(f, false).expect("encode");
            t.push(start.elapsed().as_micros() as u64);
            bytes += out.map_or(0, |o| o.data.len());
        }
        report(&format!("H.264 {w}x{h}"), &mut t, bytes);
        let mut vp8 = Vp8Encoder::new(&s).expect("libvpx");
        let (mut t, mut bytes) = (Vec::new(), 0);
        for f in &input {
            let start = Instant::now();
            let out = vp8.encode(f, false).expect("encode");
            t.push(start.elapsed().as_micros() as u64);
            bytes += out.map_or(0, |o| o.data.len());
        }
        report(
            &format!("VP8 {w}x{h} (cpu-used {})", campeer::encode::vp8::CPU_USED),
            &mut t,
            bytes,
        );
    }
}
