//! What VP8 costs next to H.264: encode time per frame of the test pattern
//! at 640x480 and 1280x720, 30 fps targets, one thread each (as the
//! pipeline runs them); and what Opus costs per 20 ms frame. Prints
//! figures; asserts nothing.
//!
//! `cargo bench --bench codec_cost`

use campeer::encode::h264::{EncoderSettings, H264Encoder};
use campeer::encode::opus::{OpusEncoder, COMPLEXITY};
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
    opus_cost();
}

/// Opus, mono 32 kbit/s: two seconds of a 440 Hz tone, per 20 ms frame.
fn opus_cost() {
    let settings = campeer::media::audio::AudioSettings {
        rate: 48_000,
        channels: 1,
        bitrate: 32_000,
    };
    let mut enc = OpusEncoder::new(&settings).expect("opus");
    let input: Vec<i16> = (0..48_000 * 2)
        .map(|k| (9_830.0 * (std::f64::consts::TAU * 440.0 * k as f64 / 48_000.0).sin()) as i16)
        .collect();
    let started = Instant::now();
    let mut n = 0u32;
    for f in input.chunks(960) {
        enc.encode(f).expect("encode");
        n += 1;
    }
    let per = started.elapsed().as_micros() / u128::from(n);
    println!("Opus encode, mono 32 kbit/s, complexity {COMPLEXITY}: {per} us per 20 ms frame");
}
