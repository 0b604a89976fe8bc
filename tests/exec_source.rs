//! `exec:` video sources end to end: the real daemon runs Debian's ffmpeg
//! (standing in for rpicam-vid) as its camera process, a real Mosquitto
//! carries the signaling, and `campeer view` decodes what arrives.
//! scripts/install-deps.sh installs ffmpeg; without it these tests fail.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// ffmpeg's moving test picture, in real time, at the configured size and
/// rate (the daemon fills in the placeholders).
const TESTSRC: &str = "ffmpeg -hide_banner -nostdin -loglevel error -re -f lavfi -i testsrc2=size={width}x{height}:rate={fps}";

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("report has no {k}: {v}"))
}

/// Writes a config file for an exec source and returns the flags to use it.
fn config(dir: &TempDir, command: &str, format: &str, extra: &str) -> Vec<String> {
    let path = dir.0.join("campeer.toml");
    let text = format!(
        "[video]\nsource = {:?}\nexec_format = {format:?}\nwidth = 320\nheight = 240\nfps = 15\n\
         keyframe_interval = 15\nbitrate = 300000\n{extra}\n",
        format!("exec:{command}")
    );
    std::fs::write(&path, text).expect("write config");
    vec!["--config".into(), path.to_string_lossy().into_owned()]
}

async fn run_with(device: &str, flags: &[String], frames: u32) -> (Daemon, serde_json::Value) {
    let broker = Broker::start();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Daemon::start(&broker, device, &extra).await;
    let n = frames.to_string();
    let r = view(&broker, device, &["--frames", &n, "--timeout", "40"]).await;
    // Keep the broker alive until the report is in.
    drop(broker);
    (d, r)
}

fn assert_live_video(r: &serde_json::Value, frames: u64) {
    assert!(r["error"].is_null(), "viewer error: {r}");
    assert!(u(r, "frames") >= frames, "{r}");
    assert_eq!(u(r, "width"), 320, "{r}");
    assert_eq!(u(r, "height"), 240, "{r}");
    assert!(u(r, "keyframes") >= 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_i420_from_ffmpeg_is_encoded_and_stamped() {
    let dir = TempDir::new("exec-i420");
    let cmd = format!("{TESTSRC} -pix_fmt yuv420p -f rawvideo -");
    let flags = config(&dir, &cmd, "i420", "stamp = true");
    let (d, r) = run_with("exec-i420", &flags, 45).await;
    assert_live_video(&r, 45);
    // campeer had the pixels, so it stamped them: every picture carries one.
    assert_eq!(u(&r, "stamped_frames"), u(&r, "frames"), "{r}");
    assert_eq!(u(&r, "out_of_order"), 0, "{r}");
    assert!(d.log_text().contains("command started"), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nv12_from_ffmpeg_is_converted() {
    let dir = TempDir::new("exec-nv12");
    let cmd = format!("{TESTSRC} -pix_fmt nv12 -f rawvideo -");
    let flags = config(&dir, &cmd, "nv12", "stamp = true");
    let (_d, r) = run_with("exec-nv12", &flags, 30).await;
    assert_live_video(&r, 30);
    assert_eq!(u(&r, "stamped_frames"), u(&r, "frames"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_from_ffmpeg_is_decoded_and_encoded() {
    let dir = TempDir::new("exec-mjpeg");
    let cmd = format!("{TESTSRC} -pix_fmt yuvj420p -c:v mjpeg -q:v 5 -f mjpeg -");
    let flags = config(&dir, &cmd, "mjpeg", "stamp = true");
    let (_d, r) = run_with("exec-mjpeg", &flags, 30).await;
    assert_live_video(&r, 30);
    assert_eq!(u(&r, "stamped_frames"), u(&r, "frames"), "{r}");
}

/// ffmpeg's H.264 encoder standing in for the Pi's hardware encoder:
/// constrained baseline, no B-frames, an IDR every `{keyframe_interval}`.
const H264: &str = "-pix_fmt yuv420p -c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -g {keyframe_interval} -bf 0 -f h264 -";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_from_ffmpeg_is_passed_through_and_decodes() {
    let dir = TempDir::new("exec-h264");
    let cmd = format!("{TESTSRC} {H264}");
    let flags = config(&dir, &cmd, "h264", "");
    let (d, r) = run_with("exec-h264", &flags, 45).await;
    // The viewer decoded ffmpeg's own stream (campeer never had pixels:
    // no stamps, and the picture is checked by decoding it).
    assert_live_video(&r, 45);
    assert_eq!(u(&r, "stamped_frames"), 0, "{r}");
    let log = d.log_text();
    assert!(log.contains("passthrough=true"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_command_is_restarted_and_the_session_survives() {
    let dir = TempDir::new("exec-crash");
    // Exits after 2 s of video every time.
    let cmd = format!("{TESTSRC} -frames:v 30 -pix_fmt yuv420p -f rawvideo -");
    let flags = config(&dir, &cmd, "i420", "stamp = true");
    let (d, r) = run_with("exec-crash", &flags, 120).await;
    // 120 frames at 15 fps outlast three runs of the command.
    assert_live_video(&r, 120);
    assert!(r["bye"].is_null(), "session ended: {r}");
    let log = d.log_text();
    let restarts = log.matches("command exited; restarting it").count();
    assert!(restarts >= 2, "{restarts} restarts:\n{log}");
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: it is gone, only not reaped yet.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn wait_for_pid(path: &Path) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(pid) = read_pid(path) {
            return pid;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_child_behind() {
    let dir = TempDir::new("exec-stop");
    let pidfile = dir.0.join("child.pid");
    // The shell records its pid, then becomes ffmpeg (same pid).
    let cmd = format!(
        "echo $$ > {}; exec {TESTSRC} -pix_fmt yuv420p -f rawvideo -",
        pidfile.display()
    );
    let flags = config(&dir, &cmd, "i420", "");
    let broker = Broker::start();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut d = Daemon::start(&broker, "exec-stop", &extra).await;
    let pid = wait_for_pid(&pidfile).await;
    assert!(alive(pid), "ffmpeg runs");
    let (status, took) = d.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} after {took:?}"
    );
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "ffmpeg {pid} outlived the daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_command_starts_for_the_first_viewer() {
    let dir = TempDir::new("exec-demand");
    let pidfile = dir.0.join("child.pid");
    let cmd = format!(
        "echo $$ > {}; exec {TESTSRC} -pix_fmt yuv420p -f rawvideo -",
        pidfile.display()
    );
    let flags = config(&dir, &cmd, "i420", "exec_start = \"viewer\"");
    let broker = Broker::start();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Daemon::start(&broker, "exec-demand", &extra).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(read_pid(&pidfile).is_none(), "started without a viewer");
    let r = view(
        &broker,
        "exec-demand",
        &["--frames", "30", "--timeout", "40"],
    )
    .await;
    assert_live_video(&r, 30);
    assert!(read_pid(&pidfile).is_some(), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_the_viewer_did_not_offer_is_refused_as_unsupported() {
    let dir = TempDir::new("exec-high");
    // High profile (veryfast keeps CABAC and 8x8 transforms, so x264 does
    // not fall back to baseline): `campeer view` offers only baseline.
    let high = H264
        .replace("baseline", "high")
        .replace("ultrafast", "veryfast");
    let cmd = format!("{TESTSRC} {high}");
    let flags = config(&dir, &cmd, "h264", "");
    let broker = Broker::start();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Daemon::start(&broker, "exec-high", &extra).await;
    // The profile is known from the first keyframe's SPS.
    let t = Instant::now();
    while !d.log_text().contains("passed-through H.264 profile") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = view(&broker, "exec-high", &["--frames", "10", "--timeout", "20"]).await;
    assert_eq!(r["error_code"], "unsupported", "{r}");
    assert_eq!(u(&r, "frames"), 0, "{r}");
    assert!(
        d.log_text().contains("profile-level-id=64"),
        "{}",
        d.log_text()
    );
}

/// A hand-made offer with two H.264 formats: constrained baseline (96) and
/// baseline (98).
fn two_profile_offer() -> String {
    vp8_only_offer().replace(
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 98",
    )
    .replace(
        "a=rtpmap:96 VP8/90000\r\n",
        "a=rtpmap:96 H264/90000\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtpmap:98 H264/90000\r\na=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_names_the_profile_the_source_really_sends() {
    let dir = TempDir::new("exec-answer");
    // x264's baseline sets constraint_set0 and 1 only (42c0xx): plain
    // baseline to a decoder, not constrained baseline (which needs set2).
    let cmd = format!("{TESTSRC} {H264}");
    let flags = config(&dir, &cmd, "h264", "");
    let broker = Broker::start();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Daemon::start(&broker, "exec-answer", &extra).await;
    let t = Instant::now();
    while !d
        .log_text()
        .contains("passed-through H.264 profile profile_level_id=42c0")
    {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = offer_reply(&broker, &d, "exec-answer", &two_profile_offer()).await;
    assert_eq!(answer["type"], "answer", "{answer}");
    let sdp = answer["sdp"].as_str().expect("answer sdp");
    assert!(sdp.contains("profile-level-id=42001f"), "{sdp}");
    assert!(!sdp.contains("profile-level-id=42e01f"), "{sdp}");

    // A VP8-only viewer: nothing but H.264 can be made of a stream that is
    // not re-encoded, so it is refused, not answered without video.
    assert_refused_for_no_h264(&offer_reply(&broker, &d, "exec-answer", &vp8_only_offer()).await);
}

/// Publishes an unsigned offer on a fresh sid; the first reply that is
/// not a candidate.
async fn offer_reply(broker: &Broker, d: &Daemon, device: &str, sdp: &str) -> serde_json::Value {
    let sid = sid();
    let out = out_topic(device, &sid);
    let mut c = RawClient::connect(broker.port, std::slice::from_ref(&out)).await;
    let offer = serde_json::json!({"type": "offer", "sdp": sdp});
    c.publish(&in_topic(device, &sid), offer.to_string()).await;
    c.wait_for(&out, Duration::from_secs(10), |v| v["type"] != "candidate")
        .await
        .unwrap_or_else(|| panic!("no reply; log:\n{}", d.log_text()))
}

fn assert_refused_for_no_h264(reply: &serde_json::Value) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unsupported", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("no H.264")),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_viewer_of_h264_is_refused_even_before_the_first_keyframe() {
    // Started for the first viewer only: when the offer comes, no SPS has
    // been seen, yet the source is known to pass H.264 through.
    let dir = TempDir::new("exec-early");
    let cmd = format!("{TESTSRC} {H264}");
    let flags = config(&dir, &cmd, "h264", "exec_start = \"viewer\"");
    let broker = Broker::start();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = Daemon::start(&broker, "exec-early", &extra).await;
    assert!(!d.log_text().contains("passed-through H.264 profile"));
    assert_refused_for_no_h264(&offer_reply(&broker, &d, "exec-early", &vp8_only_offer()).await);
}
