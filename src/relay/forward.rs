//! The relay's upstream: the shared encoders' output packetized into RTP
//! (SRTP when keyed) and sent to the Janus mountpoint's ports, from one
//! UDP socket. The socket also sends a small RTCP receiver report to the
//! video RTCP port every second: Janus learns from it where to send its
//! keyframe requests (a viewer joining, a viewer's PLI), which come back to
//! the same socket and become IDRs. Nothing is encoded for the relay while
//! it is not fed ([`Feed`] is `None`).

use crate::encode::audio_pipeline::{AudioPipeline, EncodedAudio};
use crate::encode::pipeline::VideoPipeline;
use crate::media::frame::EncodedFrame;
use crate::rtc::keyframe::is_keyframe_request;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context as SrtpContext;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

/// RTP payload types the mountpoint is created with.
pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;
/// Payload bytes per RTP packet (as the sessions use).
const MTU: usize = 1200;
/// SRTP master key and salt, AES-CM-128 with HMAC-SHA1-80.
pub const SRTP_KEY_LEN: usize = 30;
/// How often the RTCP report that latches Janus's feedback goes out.
const LATCH_EVERY: Duration = Duration::from_secs(1);

/// Where to send, and how to protect it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    pub video: Option<SocketAddr>,
    pub video_rtcp: Option<SocketAddr>,
    pub audio: Option<SocketAddr>,
    pub srtp_key: Option<[u8; SRTP_KEY_LEN]>,
}

/// What went upstream (for the stats line and the benchmark).
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub packets: AtomicU64,
    /// On the wire (RTP or SRTP).
    pub bytes: AtomicU64,
    /// Encoded media before RTP, as the sessions' `media_bytes`.
    pub payload_bytes: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

/// The media the forwarder reads.
#[derive(Clone)]
pub struct Sources {
    pub video: Option<Arc<VideoPipeline>>,
    pub audio: Option<Arc<AudioPipeline>>,
}

/// One RTP stream: its packetizer and the capture clock behind its
/// timestamps (RTP time follows capture, as the sessions' does).
struct Stream {
    packetizer: Box<dyn Packetizer>,
    clock_rate: u64,
    last_capture_us: Option<u64>,
}

impl Stream {
    fn new(pt: u8, ssrc: u32, clock_rate: u32, video: bool) -> Stream {
        let payloader: Box<dyn rtc::rtp::packetizer::Payloader> = if video {
            Box::<H264Payloader>::default()
        } else {
            Box::new(OpusPayloader)
        };
        Stream {
            packetizer: Box::new(new_packetizer(
                Instant::now(),
                MTU,
                pt,
                ssrc,
                payloader,
                Box::new(new_random_sequencer()),
                clock_rate,
            )),
            clock_rate: clock_rate as u64,
            last_capture_us: None,
        }
    }

    /// RTP packets for one access unit or Opus packet, marshalled.
    fn packets(&mut self, data: &Bytes, capture_us: u64, nominal_us: u64) -> Vec<Bytes> {
        let d = match self.last_capture_us {
            Some(prev) if capture_us > prev => capture_us - prev,
            _ => nominal_us,
        };
        self.last_capture_us = Some(capture_us);
        let samples = (d * self.clock_rate / 1_000_000) as u32;
        match self.packetizer.packetize(Instant::now(), data, samples) {
            Ok(ps) => ps
                .iter()
                .filter_map(|p| p.marshal().ok().map(|b| b.freeze()))
                .collect(),
            Err(e) => {
                debug!("relay packetize: {e}");
                vec![]
            }
        }
    }
}

fn srtp_context(key: &[u8; SRTP_KEY_LEN]) -> Option<SrtpContext> {
    let provider = match rtc::crypto::default_provider() {
        Ok(p) => p,
        Err(e) => {
            warn!("relay: no crypto provider for SRTP: {e}");
            return None;
        }
    };
    match SrtpContext::new(
        &key[..16],
        &key[16..],
        ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
        provider.crypto(),
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!("relay: SRTP context: {e}");
            None
        }
    }
}

/// Where the forwarder sends now, with its SRTP context.
struct Fed {
    feed: Feed,
    srtp: Option<SrtpContext>,
}

/// The encoders' receivers, held only while fed.
#[derive(Default)]
struct Taps {
    frames: Option<broadcast::Receiver<Arc<EncodedFrame>>>,
    packets: Option<broadcast::Receiver<Arc<EncodedAudio>>>,
    need_keyframe: bool,
}

async fn recv_opt<T: Clone>(
    rx: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, broadcast::error::RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The forwarder: its socket, streams and counters.
struct Forwarder {
    socket: UdpSocket,
    sources: Sources,
    stats: Arc<ForwardStats>,
    video: Stream,
    audio: Stream,
    ssrc_v: u32,
    fed: Option<Fed>,
}

/// Runs until `feed`'s sender is dropped. `feed` is `None` while nothing
/// should be sent (the encoders are not held then).
pub async fn run(
    sources: Sources,
    mut feed: watch::Receiver<Option<Feed>>,
    stats: Arc<ForwardStats>,
) {
    let socket = match UdpSocket::bind(("0.0.0.0", 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!("relay: cannot open a UDP socket: {e}");
            return;
        }
    };
    let ssrc_v = rand::random::<u32>();
    let mut fwd = Forwarder {
        socket,
        sources,
        stats,
        video: Stream::new(VIDEO_PT, ssrc_v, 90_000, true),
        audio: Stream::new(AUDIO_PT, rand::random::<u32>(), 48_000, false),
        ssrc_v,
        fed: None,
    };
    let mut taps = Taps::default();
    let mut latch = tokio::time::interval(LATCH_EVERY);
    let mut buf = vec![0u8; 1500];
    loop {
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    break;
                }
                let next = feed.borrow_and_update().clone();
                fwd.refeed(next, &mut taps);
                // Latch at once: Janus asks for a keyframe when a viewer
                // starts only if it knows where to send the request.
                let to = fwd.fed.as_ref().and_then(|f| f.feed.video_rtcp);
                send_latch(&fwd.socket, to, fwd.ssrc_v).await;
            }
            frame = recv_opt(&mut taps.frames) => match frame {
                Ok(f) => fwd.send_frame(&f, &mut taps.need_keyframe).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!(skipped = n, "relay fell behind; skipping to the next keyframe");
                    taps.need_keyframe = true;
                    fwd.request_keyframe();
                }
                Err(broadcast::error::RecvError::Closed) => taps.frames = None,
            },
            packet = recv_opt(&mut taps.packets) => match packet {
                Ok(p) => fwd.send_audio(&p).await,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => taps.packets = None,
            },
            _ = latch.tick() => {
                let to = fwd.fed.as_ref().and_then(|f| f.feed.video_rtcp);
                send_latch(&fwd.socket, to, fwd.ssrc_v).await;
            }
            got = fwd.socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = got {
                    fwd.feedback(&buf[..n], from);
                }
            }
        }
    }
    info!("relay forwarder stopped");
}

/// The RTCP report that tells Janus where its feedback goes.
async fn send_latch(socket: &UdpSocket, to: Option<SocketAddr>, ssrc: u32) {
    let Some(to) = to else { return };
    let rr = rtc::rtcp::receiver_report::ReceiverReport {
        ssrc,
        ..Default::default()
    };
    if let Ok(b) = rr.marshal() {
        if let Err(e) = socket.send_to(&b, to).await {
            debug!("relay: RTCP to {to}: {e}");
        }
    }
}

impl Forwarder {
    fn request_keyframe(&self) {
        if let Some(v) = &self.sources.video {
            v.request_keyframe();
        }
    }

    /// Follows a new feed: subscribes when feeding starts, lets go of the
    /// encoders when it stops, re-keys for a new mountpoint.
    fn refeed(&mut self, next: Option<Feed>, taps: &mut Taps) {
        let Some(next) = next else {
            if self.fed.take().is_some() {
                info!("relay: not feeding Janus (nobody watches there)");
            }
            *taps = Taps::default();
            return;
        };
        if self.fed.as_ref().is_some_and(|f| f.feed == next) {
            return;
        }
        info!(video = ?next.video, audio = ?next.audio, srtp = next.srtp_key.is_some(), "relay: feeding Janus");
        if taps.frames.is_none() {
            if let (Some(v), Some(_)) = (&self.sources.video, next.video) {
                taps.frames = Some(v.subscribe());
            }
        }
        if taps.packets.is_none() {
            if let (Some(a), Some(_)) = (&self.sources.audio, next.audio) {
                taps.packets = Some(a.subscribe());
            }
        }
        taps.need_keyframe = true;
        self.request_keyframe();
        self.fed = Some(Fed {
            srtp: next.srtp_key.as_ref().and_then(srtp_context),
            feed: next,
        });
    }

    async fn send_frame(&mut self, frame: &EncodedFrame, need_keyframe: &mut bool) {
        if *need_keyframe {
            if !frame.keyframe {
                return;
            }
            *need_keyframe = false;
        }
        let to = self.fed.as_ref().and_then(|f| f.feed.video);
        if to.is_some() {
            self.stats
                .payload_bytes
                .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        }
        let packets = self
            .video
            .packets(&frame.data, frame.capture_us, frame.duration_us);
        self.send(to, packets).await;
    }

    async fn send_audio(&mut self, packet: &EncodedAudio) {
        let to = self.fed.as_ref().and_then(|f| f.feed.audio);
        if to.is_some() {
            self.stats
                .payload_bytes
                .fetch_add(packet.data.len() as u64, Ordering::Relaxed);
        }
        let packets = self
            .audio
            .packets(&packet.data, packet.capture_us, packet.duration_us);
        self.send(to, packets).await;
    }

    async fn send(&mut self, to: Option<SocketAddr>, packets: Vec<Bytes>) {
        let (Some(to), Some(fed)) = (to, self.fed.as_mut()) else {
            return;
        };
        for p in packets {
            let wire = match &mut fed.srtp {
                Some(ctx) => match ctx.encrypt_rtp(&p) {
                    Ok(b) => b.freeze(),
                    Err(e) => {
                        debug!("relay SRTP: {e}");
                        continue;
                    }
                },
                None => p,
            };
            match self.socket.send_to(&wire, to).await {
                Ok(n) => {
                    self.stats.packets.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => debug!("relay: RTP to {to}: {e}"),
            }
        }
    }

    /// A datagram on the socket: a keyframe request from the mountpoint's
    /// RTCP port becomes an IDR; anything else is ignored.
    fn feedback(&self, data: &[u8], from: SocketAddr) {
        let expected = self.fed.as_ref().and_then(|f| f.feed.video_rtcp);
        if expected != Some(from) {
            return;
        }
        let mut b = data;
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut b) else {
            return;
        };
        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
            self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            debug!("relay: Janus asks for a keyframe");
            self.request_keyframe();
        }
    }
}
