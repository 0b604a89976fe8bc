//! `encode-cost W H N FPS BITRATE < frames.yuv`: reads N raw I420 frames of
//! W x H from stdin and encodes them with openh264, configured as campeer's
//! encoder is (src/encode/h264.rs: camera real-time usage, baseline,
//! bitrate control, no frame skipping, one thread). Prints the bytes of
//! each encoded frame. Used to count instructions per frame under qemu.

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;
use std::io::Read;

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: W H N FPS BITRATE"))
        .collect();
    let [w, h, n, fps, bitrate] = args[..] else {
        panic!("usage: encode-cost W H N FPS BITRATE < frames.yuv");
    };
    let config = EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(bitrate))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 2))
        .scene_change_detect(false)
        .num_threads(1);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).expect("encoder");
    let (w, h) = (w as usize, h as usize);
    let mut frame = vec![0u8; w * h * 3 / 2];
    let mut stdin = std::io::stdin().lock();
    for i in 0..n {
        stdin.read_exact(&mut frame).expect("a raw frame on stdin");
        let (y, rest) = frame.split_at(w * h);
        let (u, v) = rest.split_at(w * h / 4);
        let src = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let out = enc.encode(&src).expect("encode");
        println!("frame {i}: {} bytes", out.to_vec().len());
    }
}
