//! A real ALSA capture device through the audio pipeline.
//!
//! `#[ignore]`d: run it with `-- --ignored` where a capture PCM exists
//! (`CAMPEER_ALSA_PCM` names it, default `default`); there a PCM that cannot
//! be opened fails it. CI, which has no sound card, checks capture through
//! snd-aloop in the emulated Pi (tests/qemu_pi.rs).
//!
//! Without a sound card, a paced PCM can come from PulseAudio (Debian
//! packages pulseaudio, libasound2-plugins): start a daemon with a null
//! sink, then capture its monitor through ALSA's `pulse` PCM:
//!
//! ```text
//! pulseaudio -n --daemonize=yes --exit-idle-time=-1 \
//!   --load="module-null-sink sink_name=campeer" \
//!   --load="module-native-protocol-unix socket=/tmp/campeer-pulse.sock auth-anonymous=1"
//! CAMPEER_ALSA_PCM=pulse PULSE_SERVER=unix:/tmp/campeer-pulse.sock \
//!   PULSE_SOURCE=campeer.monitor cargo test --test alsa_device -- --nocapture
//! ```
//!
//! (ALSA's `null` PCM is no substitute: it is not paced, and this test
//! rightly fails on it.)

use campeer::encode::audio_pipeline::{AudioPipeline, EncodedAudio};
use campeer::encode::opus::OpusDecoder;
use campeer::media::audio::{open_audio_source, AudioSettings, AudioSourceSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::TryRecvError;

/// Waits up to `timeout` for the next packet.
fn next_packet(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<EncodedAudio>>,
    timeout: Duration,
) -> Option<Arc<EncodedAudio>> {
    let deadline = Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(p) => return Some(p),
            Err(TryRecvError::Lagged(n)) => panic!("the test fell {n} packets behind"),
            Err(TryRecvError::Closed) => return None,
            Err(TryRecvError::Empty) if Instant::now() >= deadline => return None,
            Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[test]
#[ignore = "needs a microphone: cargo test --test alsa_device -- --ignored where one exists; CI checks snd-aloop in the emulated Pi (tests/qemu_pi.rs)"]
fn a_real_capture_pcm_gives_50_opus_packets_a_second() {
    let pcm = std::env::var("CAMPEER_ALSA_PCM").unwrap_or_else(|_| "default".into());
    let settings = AudioSettings::default();
    let spec = AudioSourceSpec::Alsa(pcm.clone());
    let source = match open_audio_source(&spec, settings.rate, settings.channels) {
        Ok(s) => s,
        Err(e) => {
            panic!("no ALSA capture PCM {pcm:?} here ({e}); set CAMPEER_ALSA_PCM to test one")
        }
    };
    let format = source.format().clone();
    println!(
        "capturing from {} at {} Hz, {} channel(s)",
        format.name, format.rate, format.channels
    );
    let reopen = {
        let spec = spec.clone();
        Box::new(move || open_audio_source(&spec, settings.rate, settings.channels))
    };
    let pipeline = AudioPipeline::start(source, reopen, settings).expect("pipeline starts");
    let mut rx = pipeline.subscribe();

    // Let the device settle: the first packet, then one second of them.
    let first = next_packet(&mut rx, Duration::from_secs(3)).expect("a first packet within 3 s");
    let t0 = Instant::now();
    let mut packets = vec![first];
    while t0.elapsed() < Duration::from_secs(1) {
        match next_packet(&mut rx, Duration::from_secs(1)) {
            Some(p) => packets.push(p),
            None => break,
        }
    }
    let stats = pipeline.stats();
    pipeline.stop();

    let n = packets.len();
    println!("{n} packets in 1 s; {stats:?}");
    assert!(
        (45..=56).contains(&n),
        "{n} packets in one second, expected ~50"
    );
    let mut dec = OpusDecoder::new(settings.channels).expect("decoder");
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "no packet missing");
    }
    for p in &packets {
        assert_eq!(p.duration_us, 20_000);
        let pcm = dec.decode(&p.data).expect("the packet decodes");
        assert_eq!(pcm.len(), 960 * usize::from(settings.channels));
    }
    check_capture_steps(&packets, stats.overruns);
}

/// The capture stamps step by 20 ms (15 to 25 ms each) and add up: each
/// overrun the pipeline counted may explain one step outside that (the
/// samples the device dropped), no more, and the regular steps still span
/// their count times 20 ms within one packet.
fn check_capture_steps(packets: &[Arc<EncodedAudio>], overruns: u64) {
    let steps: Vec<u64> = packets
        .windows(2)
        .map(|w| w[1].capture_us.saturating_sub(w[0].capture_us))
        .collect();
    let (regular, irregular): (Vec<u64>, Vec<u64>) =
        steps.iter().partition(|s| (15_000..=25_000).contains(*s));
    assert!(
        irregular.len() as u64 <= overruns,
        "capture stamps step by {irregular:?} us, with {overruns} overrun(s) to explain them"
    );
    let span: u64 = regular.iter().sum();
    let expected = regular.len() as u64 * 20_000;
    assert!(
        span.abs_diff(expected) <= 20_000,
        "{} regular steps span {span} us, expected {expected} us",
        regular.len()
    );
}
