//! Audio end to end: the daemon's Opus stream decoded by a real WebRTC viewer,
//! and offers with any mix of audio, video and data channel.

mod common;

use common::*;
use serde_json::Value;

fn media(r: &Value) -> Vec<String> {
    r["answer_media"]
        .as_array()
        .unwrap_or_else(|| panic!("no answer_media: {r}"))
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

fn has(r: &Value, prefix: &str) -> bool {
    media(r).iter().any(|m| m.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_440_hz_tone_arrives_as_440_hz_without_gaps() {
    let broker = Broker::start();
    let _d = Daemon::start(
        &broker,
        "cam-tone",
        &["--size", "320x240", "--audio", "tone:440"],
    )
    .await;
    let st = wait_status(
        broker.port,
        "campeer",
        "cam-tone",
        |v| v["state"] == "online",
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        st["audio"],
        serde_json::json!({"codec": "opus", "rate": 48000, "channels": 1})
    );
    let r = view(
        &broker,
        "cam-tone",
        &["--frames", "30", "--audio-secs", "5", "--timeout", "30"],
    )
    .await;
    assert!(r["error"].is_null(), "{r}");
    let a = &r["audio"];
    let hz = a["dominant_hz"]
        .as_f64()
        .unwrap_or_else(|| panic!("no frequency: {r}"));
    assert!(
        (hz - 440.0).abs() <= 440.0 * 0.02,
        "dominant frequency {hz} Hz: {r}"
    );
    assert!(a["decoded_ms"].as_f64().unwrap() >= 5000.0, "{r}");
    let gap = a["max_arrival_gap_ms"].as_f64().unwrap();
    assert!(gap <= 60.0, "audio gap of {gap} ms: {r}");
    assert_eq!(a["decode_errors"], 0, "{r}");
    assert!(
        r["frames"].as_u64() >= Some(30),
        "video alongside audio: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mix_of_audio_video_and_data_is_answered_with_what_was_asked() {
    let broker = Broker::start();
    let dev = "cam-mix";
    let _d = Daemon::start(&broker, dev, &["--size", "320x240", "--audio", "tone:1000"]).await;

    let audio_only = view(
        &broker,
        dev,
        &[
            "--no-video",
            "--no-data",
            "--audio-secs",
            "1",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert!(audio_only["error"].is_null(), "{audio_only}");
    assert_eq!(media(&audio_only), ["audio:9:sendonly"], "{audio_only}");
    assert!(
        audio_only["audio"]["packets"].as_u64() > Some(20),
        "{audio_only}"
    );
    assert_eq!(audio_only["frames"], 0);

    let video_only = view(
        &broker,
        dev,
        &[
            "--no-audio",
            "--no-data",
            "--frames",
            "20",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert_eq!(media(&video_only), ["video:9:sendonly"], "{video_only}");
    assert!(video_only["frames"].as_u64() >= Some(20), "{video_only}");
    assert!(video_only["audio"].is_null(), "{video_only}");

    let mixed = view(
        &broker,
        dev,
        &["--frames", "20", "--audio-secs", "1", "--timeout", "20"],
    )
    .await;
    assert!(
        has(&mixed, "video:9:sendonly")
            && has(&mixed, "audio:9:sendonly")
            && has(&mixed, "application:"),
        "{mixed}"
    );
    assert!(
        mixed["frames"].as_u64() >= Some(20) && mixed["audio"]["packets"].as_u64() > Some(20),
        "{mixed}"
    );
    let hz = mixed["audio"]["dominant_hz"].as_f64().unwrap();
    assert!((hz - 1000.0).abs() < 20.0, "{mixed}");

    let data_only = view(
        &broker,
        dev,
        &[
            "--no-video",
            "--no-audio",
            "--call",
            "ping",
            "-",
            "--timeout",
            "20",
        ],
    )
    .await;
    assert_eq!(media(&data_only).len(), 1, "{data_only}");
    assert!(has(&data_only, "application:9:"), "{data_only}");
    assert!(
        data_only["calls"][0]["response"]["result"]["now_us"]
            .as_u64()
            .is_some(),
        "{data_only}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_asked_of_a_device_without_a_microphone_is_declined_not_an_error() {
    let broker = Broker::start();
    let dev = "cam-mute";
    let _d = Daemon::start(&broker, dev, &["--size", "320x240"]).await;
    let st = wait_status(
        broker.port,
        "campeer",
        dev,
        |v| v["state"] == "online",
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(st["audio"].is_null(), "{st}");
    let r = view(&broker, dev, &["--frames", "20", "--timeout", "20"]).await;
    assert!(r["error"].is_null() && r["error_code"].is_null(), "{r}");
    assert!(r["frames"].as_u64() >= Some(20), "{r}");
    let audio: Vec<String> = media(&r)
        .into_iter()
        .filter(|m| m.starts_with("audio:"))
        .collect();
    assert_eq!(audio.len(), 1, "{r}");
    assert!(
        audio[0].starts_with("audio:0:") || audio[0].ends_with(":inactive"),
        "the audio section should be rejected or inactive: {r}"
    );
    assert!(r["audio"].is_null() || r["audio"]["packets"] == 0, "{r}");
}
