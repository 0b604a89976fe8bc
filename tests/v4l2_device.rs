//! V4L2 capture against a real kernel driver, through the public API.
//!
//! Uses `/dev/video0`, or the device named by `CAMPEER_V4L2_DEVICE`. The
//! device tests are `#[ignore]`d (run them with `-- --ignored` where a camera
//! exists, and there a missing or unusable device fails them); CI, which has
//! no camera, runs the same checks against the vivid driver in the emulated
//! Pi (tests/qemu_pi.rs). The error-path tests need no hardware and always
//! run.
//!
//! Size and rate: `CAMPEER_V4L2_SIZE` (e.g. `1280x720`, default `640x480`)
//! and `CAMPEER_V4L2_FPS` (default 30).

use campeer::clock::{monotonic_us, stamp_ms};
use campeer::encode::decode::H264Decoder;
use campeer::encode::h264::{EncoderSettings, H264Encoder};
use campeer::media::{open_video_source, MediaError, VideoSourceSpec};
use std::path::PathBuf;

fn device() -> PathBuf {
    let path = std::env::var_os("CAMPEER_V4L2_DEVICE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/video0"));
    assert!(
        path.exists(),
        "no V4L2 device: {} does not exist (set CAMPEER_V4L2_DEVICE to use another)",
        path.display()
    );
    path
}

fn requested() -> (u32, u32, u32) {
    let size = std::env::var("CAMPEER_V4L2_SIZE").unwrap_or_else(|_| "640x480".into());
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or((640, 480));
    let fps = std::env::var("CAMPEER_V4L2_FPS")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(30);
    (w, h, fps)
}

#[test]
#[ignore = "needs a V4L2 camera: cargo test --test v4l2_device -- --ignored where one exists; CI checks vivid in the emulated Pi (tests/qemu_pi.rs)"]
fn captures_timestamped_frames_that_encode() {
    let path = device();
    let (w, h, fps) = requested();
    let spec = VideoSourceSpec::V4l2(path.clone());
    let mut src = match open_video_source(&spec, w, h, fps) {
        Ok(s) => s,
        Err(e) => panic!("opening {}: {e}", path.display()),
    };
    let f = src.format().clone();
    println!(
        "{}: {}x{} {} at {} fps (asked {w}x{h}@{fps})",
        path.display(),
        f.width,
        f.height,
        f.pixel_format,
        f.fps
    );
    assert!(f.width > 0 && f.height > 0 && f.width % 2 == 0 && f.height % 2 == 0);
    assert!(["NV12", "YU12", "YUYV", "MJPG"].contains(&f.pixel_format.as_str()));

    let settings = EncoderSettings {
        width: f.width,
        height: f.height,
        fps: f.fps.max(1),
        bitrate: 1_000_000,
        keyframe_interval: 0,
    };
    let mut enc = H264Encoder::new(&settings).unwrap();
    let mut dec = H264Decoder::new().unwrap();
    let mut last_capture = 0u64;
    for expect_seq in 0..20u32 {
        let frame = src.next_frame().expect("a frame");
        let now = monotonic_us();
        assert_eq!(frame.seq, expect_seq, "our own counter, +1 per frame");
        assert_eq!((frame.width, frame.height), (f.width, f.height));
        assert_eq!(frame.data.len(), (f.width * f.height * 3 / 2) as usize);
        // The capture time is on CLOCK_MONOTONIC: recent, never from the future.
        assert!(frame.capture_us <= now, "capture time in the future");
        assert!(
            now - frame.capture_us < 2_000_000,
            "capture time over 2 s old"
        );
        assert!(frame.capture_us >= last_capture, "capture time went back");
        last_capture = frame.capture_us;

        let out = enc.encode(&frame, false).unwrap().expect("encoded");
        let pic = dec.decode(&out.data).unwrap().expect("decoded");
        assert_eq!((pic.width, pic.height), (f.width, f.height));
    }
    println!("last capture stamp_ms {}", stamp_ms(last_capture));
}

#[test]
#[ignore = "needs a V4L2 camera: cargo test --test v4l2_device -- --ignored where one exists; CI checks vivid in the emulated Pi (tests/qemu_pi.rs)"]
fn a_second_open_of_a_streaming_camera_is_busy() {
    let path = device();
    let (w, h, fps) = requested();
    let spec = VideoSourceSpec::V4l2(path.clone());
    let _first = match open_video_source(&spec, w, h, fps) {
        Ok(s) => s,
        Err(e) => panic!("cannot open {} for the busy test: {e}", path.display()),
    };
    match open_video_source(&spec, w, h, fps) {
        Err(e @ MediaError::Busy { .. }) => {
            assert_eq!(
                e.to_string(),
                format!(
                    "camera {} is busy (another program has it open)",
                    path.display()
                )
            );
        }
        // Some drivers (vivid with several opens, loopback devices) allow it.
        Ok(_) => println!("note: {} allows two streams at once", path.display()),
        Err(e) => panic!("expected a busy error, got: {e}"),
    }
}

#[test]
fn a_missing_camera_is_named_in_the_error() {
    let spec = VideoSourceSpec::parse("v4l2:/dev/campeer-absent-video42").unwrap();
    let e = open_video_source(&spec, 640, 480, 30)
        .err()
        .expect("no such device");
    assert_eq!(
        e.to_string(),
        "camera /dev/campeer-absent-video42: no such device"
    );
}

#[test]
fn an_odd_size_is_refused_before_touching_the_device() {
    let spec = VideoSourceSpec::parse("v4l2:/dev/video0").unwrap();
    let e = open_video_source(&spec, 641, 480, 30)
        .err()
        .expect("odd width");
    assert!(matches!(e, MediaError::BadSize { .. }), "{e}");
    assert!(e.to_string().contains("641x480"), "{e}");
}
