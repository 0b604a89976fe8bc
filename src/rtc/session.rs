//! One viewer's session: a peer connection, its negotiation, its media
//! writer, and its end.
//!
//! Each session is a task that owns its peer connection. It hears from the
//! session table through a bounded channel (`SessionInput`), from the peer
//! connection through another (callbacks only forward, docs/design.md,
//! 9), and talks to the viewer through the `Outbox`. However it ends,
//! it closes the peer connection explicitly (pitfall 8) and reports `Ended`
//! to the table.

use crate::clock::{monotonic_us, sleep_until_opt};
use crate::control::config::Role;
use crate::control::rpc::{binary_refused, notification, ControlContext, RpcSession};
use crate::encode::audio_pipeline::{AudioPipeline, EncodedAudio};
use crate::encode::pipeline::{VideoCodec, VideoPipeline};
use crate::media::EncodedFrame;
use crate::rtc::engine::{self, RtcEngine};
use crate::rtc::keyframe::is_keyframe_request;
use crate::rtc::lifecycle::{Lifecycle, PcState, Step};
use crate::rtc::metrics::Metrics;
use crate::rtc::offer::OfferSummary;
use crate::signaling::auth::SessionKey;
use crate::signaling::messages::{ByeReason, CandidateInit, DeviceMessage, ErrorCode};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

pub use crate::signaling::Outbox;

/// webrtc-rs's connection state as the lifecycle sees it.
fn pc_state(state: RTCPeerConnectionState) -> PcState {
    match state {
        RTCPeerConnectionState::Connected => PcState::Connected,
        RTCPeerConnectionState::Disconnected => PcState::Disconnected,
        RTCPeerConnectionState::Failed => PcState::Failed,
        RTCPeerConnectionState::Closed => PcState::Closed,
        _ => PcState::Other,
    }
}

/// What every session shares.
pub struct SessionContext {
    pub engine: RtcEngine,
    /// The shared Opus encoder output, when the device has a microphone.
    pub audio: Option<Arc<AudioPipeline>>,
    /// The data channel's JSON-RPC methods act on this.
    pub control: Arc<ControlContext>,
    pub video: Option<Arc<VideoPipeline>>,
    pub outbox: Arc<dyn Outbox>,
    pub connect_timeout: Duration,
    pub disconnected_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// Who the viewer is, as settled by offer authorization.
#[derive(Clone, Debug)]
pub struct Access {
    pub role: Role,
    /// The verified access key (`None` on an open device).
    pub key_id: Option<String>,
}

/// Input from the session table.
#[derive(Debug)]
pub enum SessionInput {
    /// A remote candidate, or `None` for end of candidates.
    Candidate(Option<CandidateInit>),
    /// A new offer on a live session (renegotiation, e.g. ICE restart).
    Offer(String),
    /// The viewer said `bye`.
    Bye,
    /// The daemon is stopping.
    Shutdown,
    /// The session is being replaced or evicted.
    Close(ByeReason),
    /// The opening offer arrived again (QoS 1 redelivery): send the same
    /// answer again.
    RepeatAnswer,
}

/// Reported to the session table.
#[derive(Debug)]
pub enum SessionEvent {
    /// The session reached `connected`.
    Connected { id: u64, sid: String },
    /// The session is gone; its resources are freed.
    Ended {
        id: u64,
        sid: String,
        /// Why, or `None` when the offer was refused (no session ever existed).
        reason: Option<ByeReason>,
    },
}

/// The table's handle on a running session.
pub struct SessionHandle {
    /// Unique per session, so a late `Ended` never removes a successor.
    pub id: u64,
    pub sid: String,
    /// The answer, once made; a repeated offer gets it again.
    pub answer: Arc<Mutex<Option<String>>>,
    inputs: mpsc::Sender<SessionInput>,
}

impl SessionHandle {
    /// A handle on a session fed through `inputs`.
    pub fn new(
        id: u64,
        sid: String,
        answer: Arc<Mutex<Option<String>>>,
        inputs: mpsc::Sender<SessionInput>,
    ) -> Self {
        SessionHandle {
            id,
            sid,
            answer,
            inputs,
        }
    }

    /// Hands `input` to the session; false if its queue is full or it is gone.
    pub fn deliver(&self, input: SessionInput) -> bool {
        match self.inputs.try_send(input) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(i)) => {
                warn!(sid = %self.sid, "session input queue full, dropping {i:?}");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The stored answer, if negotiation finished.
    pub fn answer(&self) -> Option<String> {
        // A poisoned lock only means a writer panicked mid-store; the Option is still valid.
        self.answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a new session starts from.
pub struct SessionSpec {
    /// Unique per session.
    pub id: u64,
    pub sid: String,
    /// The opening offer.
    pub offer: String,
    pub summary: OfferSummary,
    pub access: Access,
    /// The session key that macs every message (`None` on an open device).
    pub key: Option<SessionKey>,
    /// Candidates that arrived before the offer, in order.
    pub early: Vec<Option<CandidateInit>>,
}

/// Starts real sessions (a task with a peer connection each).
pub struct TaskSpawner(pub Arc<SessionContext>);

impl crate::rtc::table::Spawn for TaskSpawner {
    fn spawn(&self, spec: SessionSpec, events: mpsc::Sender<SessionEvent>) -> SessionHandle {
        spawn(self.0.clone(), spec, events)
    }
}

/// Starts a session task. The caller has already authorized the offer,
/// enforced the session limit and checked it with `OfferSummary::parse`.
pub fn spawn(
    ctx: Arc<SessionContext>,
    spec: SessionSpec,
    events: mpsc::Sender<SessionEvent>,
) -> SessionHandle {
    let SessionSpec {
        id,
        sid,
        offer,
        summary,
        access,
        key,
        early,
    } = spec;
    let (tx, rx) = mpsc::channel(128);
    for c in early {
        // Capacity 128 exceeds the 64 early candidates held, so this cannot fail.
        let _ = tx.try_send(SessionInput::Candidate(c));
    }
    let answer = Arc::new(Mutex::new(None));
    let task = Session {
        ctx,
        id,
        sid: sid.clone(),
        summary,
        access,
        key,
        answer: answer.clone(),
        events: events.clone(),
        answered: false,
        pending_local: Vec::new(),
        mid: None,
        writer: None,
        video: None,
        audio: None,
        audio_writer: None,
        channels: Vec::new(),
    };
    let run = tokio::spawn(task.run(offer, rx));
    // A session that panics (a bug) still frees its slot.
    let watch_sid = sid.clone();
    tokio::spawn(async move {
        if let Err(e) = run.await {
            if e.is_panic() {
                tracing::error!(sid = %watch_sid, id, "bug: the session task panicked; freeing its slot");
                let _ = events
                    .send(SessionEvent::Ended {
                        id,
                        sid: watch_sid,
                        reason: Some(ByeReason::Closed),
                    })
                    .await;
            }
        }
    });
    SessionHandle::new(id, sid, answer, tx)
}

/// Peer-connection events, forwarded out of the driver's callbacks.
enum PcEvent {
    Candidate(RTCPeerConnectionIceEvent),
    GatheringComplete,
    State(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
}

/// Forwards callbacks into a channel and returns at once.
struct Forwarder(mpsc::Sender<PcEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Forwarder {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let _ = self.0.try_send(PcEvent::Candidate(event));
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.try_send(PcEvent::GatheringComplete);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.try_send(PcEvent::State(state));
    }
    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.0.try_send(PcEvent::DataChannel(data_channel));
    }
}

/// A refused negotiation: the error code and text for the viewer.
struct Refusal(ErrorCode, String);

struct TrackOut {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    /// The video codec it carries (H.264 for audio tracks, unused).
    codec: VideoCodec,
}

struct Session {
    ctx: Arc<SessionContext>,
    id: u64,
    sid: String,
    summary: OfferSummary,
    access: Access,
    key: Option<SessionKey>,
    answer: Arc<Mutex<Option<String>>>,
    events: mpsc::Sender<SessionEvent>,
    answered: bool,
    /// Local candidates gathered before the answer went out (pitfall 5).
    pending_local: Vec<Option<CandidateInit>>,
    /// The answer's transport section (mid, m-line index), for candidates
    /// that lack one.
    mid: Option<(String, u16)>,
    writer: Option<tokio::task::JoinHandle<()>>,
    video: Option<TrackOut>,
    audio: Option<TrackOut>,
    audio_writer: Option<tokio::task::JoinHandle<()>>,
    /// Data-channel tasks, ended with the session.
    channels: Vec<tokio::task::JoinHandle<()>>,
}

impl Session {
    async fn run(mut self, offer: String, mut inputs: mpsc::Receiver<SessionInput>) {
        let (ev_tx, mut ev_rx) = mpsc::channel(256);
        let codec = self.video_codec();
        let t_build = Instant::now();
        let pc = match self
            .ctx
            .engine
            .build_with(Arc::new(Forwarder(ev_tx)), codec)
            .await
        {
            Ok(pc) => pc,
            Err(e) => {
                warn!(sid = %self.sid, "cannot create a peer connection: {e}");
                self.send(DeviceMessage::Error {
                    code: ErrorCode::Internal,
                    message: e.to_string(),
                    relay: None,
                });
                self.ended(None).await;
                return;
            }
        };
        let build_ms = t_build.elapsed().as_millis() as u64;
        let t0 = Instant::now();
        if let Err(Refusal(code, message)) = self.negotiate(&pc, &offer).await {
            info!(sid = %self.sid, ?code, "offer refused: {message}");
            self.send(DeviceMessage::Error {
                code,
                message,
                relay: None,
            });
            let _ = pc.close().await;
            self.ended(None).await;
            return;
        }
        info!(sid = %self.sid, build_ms, ms = t0.elapsed().as_millis() as u64, video = self.video.is_some(),
              audio = self.audio.is_some(), "answer sent");

        let mut life = Lifecycle::new(
            monotonic_us(),
            self.ctx.connect_timeout,
            self.ctx.disconnected_timeout,
        );
        let reason: Option<ByeReason> = loop {
            let deadline = life.deadline_us().map(|d| {
                tokio::time::Instant::now()
                    + Duration::from_micros(d.saturating_sub(monotonic_us()))
            });
            tokio::select! {
                input = inputs.recv() => match input {
                    None | Some(SessionInput::Shutdown) => break Some(ByeReason::Shutdown),
                    Some(SessionInput::Bye) => break None,
                    Some(SessionInput::Close(r)) => break Some(r),
                    Some(SessionInput::RepeatAnswer) => {
                        let answer = self.answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        if let Some(sdp) = answer {
                            self.send(DeviceMessage::Answer { sdp });
                        }
                    }
                    Some(SessionInput::Candidate(c)) => self.add_remote_candidate(&pc, c).await,
                    Some(SessionInput::Offer(sdp)) => {
                        if let Err(Refusal(code, message)) = self.renegotiate(&pc, &sdp).await {
                            info!(sid = %self.sid, "renegotiation refused: {message}");
                            self.send(DeviceMessage::Error { code, message, relay: None });
                        }
                    }
                },
                ev = ev_rx.recv() => match ev {
                    None => break Some(ByeReason::Closed),
                    Some(PcEvent::Candidate(e)) => {
                        match e.candidate.to_json() {
                            Ok(init) => self.local_candidate(Some(CandidateInit {
                                candidate: init.candidate,
                                sdp_mid: init.sdp_mid,
                                sdp_mline_index: init.sdp_mline_index,
                                username_fragment: init.username_fragment,
                            })),
                            Err(err) => debug!(sid = %self.sid, "unusable local candidate: {err}"),
                        }
                    }
                    Some(PcEvent::GatheringComplete) => self.local_candidate(None),
                    Some(PcEvent::DataChannel(dc)) => {
                        if self.channels.len() >= MAX_DATA_CHANNELS {
                            info!(sid = %self.sid, "too many data channels; closing the new one");
                            let _ = dc.close().await;
                        } else {
                            self.channels.push(tokio::spawn(serve_control(
                                self.id,
                                self.sid.clone(),
                                dc,
                                self.ctx.control.clone(),
                                self.access.clone(),
                            )));
                        }
                    }
                    Some(PcEvent::State(state)) => {
                        debug!(sid = %self.sid, %state, "connection state");
                        match life.on_state(pc_state(state), monotonic_us()) {
                            Step::Continue => {}
                            Step::FirstConnected => {
                                let pair = crate::rtc::engine::selected_pair(&pc).await;
                                info!(sid = %self.sid, ms = t0.elapsed().as_millis() as u64, pair = pair.as_deref().unwrap_or("-"), "connected");
                                let _ = self.events.try_send(SessionEvent::Connected { id: self.id, sid: self.sid.clone() });
                                self.start_writer();
                            }
                            Step::End(reason) => break Some(reason),
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => {
                    if let Some(reason) = life.due(monotonic_us()) {
                        break Some(reason);
                    }
                }
            }
        };
        if let Some(w) = self.writer.take() {
            w.abort();
        }
        if let Some(w) = self.audio_writer.take() {
            w.abort();
        }
        for c in self.channels.drain(..) {
            c.abort();
        }
        match reason {
            Some(r) => {
                info!(sid = %self.sid, reason = ?r, "closing session");
                self.send(DeviceMessage::Bye { reason: r });
            }
            None => info!(sid = %self.sid, "viewer said bye"),
        }
        if let Err(e) = pc.close().await {
            debug!(sid = %self.sid, "close: {e}");
        }
        self.ended(Some(reason.unwrap_or(ByeReason::Closed))).await;
    }

    fn send(&self, msg: DeviceMessage) {
        let mac = crate::rtc::table::seal(self.key.as_ref(), &msg);
        self.ctx.outbox.send(&self.sid, msg, mac);
    }

    async fn ended(&self, reason: Option<ByeReason>) {
        // Outputs this session drove last and that have revert_on_end go safe.
        self.ctx.control.gpio.session_ended(self.id);
        // The table always outlives sessions; if it is gone the daemon is exiting anyway.
        let _ = self
            .events
            .send(SessionEvent::Ended {
                id: self.id,
                sid: self.sid.clone(),
                reason,
            })
            .await;
    }

    /// First negotiation: remote offer, tracks, answer.
    async fn negotiate(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        offer: &str,
    ) -> Result<(), Refusal> {
        apply_offer(pc, offer).await?;

        // One track per kind, bound to this connection (a 0.21 track serves
        // one peer connection), fed from the shared encoder output. A kind the
        // offer wants but the device lacks gets no track: its section is
        // answered inactive.
        self.check_passthrough_profile()?;
        // A stream passed through is H.264 in the source's own profile:
        // nothing else (no VP8) can be made of it.
        let passthrough = self.video_codec();
        let codec = self
            .summary
            .video_codec()
            .filter(|_| self.ctx.video.is_some())
            .filter(|c| passthrough.is_none() || *c == VideoCodec::H264);
        let video = match codec {
            Some(c) => {
                let rtp = match (&passthrough, c) {
                    (Some(p), VideoCodec::H264) => p.clone(),
                    _ => video_rtp_codec(c),
                };
                Some((c, self.add_track(pc, RtpCodecKind::Video, rtp).await?))
            }
            None => None,
        };
        let audio = if self.summary.audio_opus && self.ctx.audio.is_some() {
            Some(
                self.add_track(pc, RtpCodecKind::Audio, engine::opus_codec())
                    .await?,
            )
        } else {
            None
        };
        self.decline_unserved(pc, video.is_some(), audio.is_some())
            .await;
        self.answer_offer(pc).await?;
        // The negotiated payload types, not the registered ones (pitfall 3).
        if let Some((c, (track, ssrc, sender))) = video {
            let mime = video_rtp_codec(c).mime_type;
            self.video = negotiated(&self.sid, &mime, track, ssrc, &sender, c).await;
            if self.video.is_some() {
                info!(sid = %self.sid, codec = ?c, "video codec");
            }
        }
        if let Some((track, ssrc, sender)) = audio {
            let mime = engine::opus_codec().mime_type;
            self.audio = negotiated(&self.sid, &mime, track, ssrc, &sender, VideoCodec::H264).await;
        }
        Ok(())
    }

    /// For H.264 passed through: the one video codec to negotiate, with the
    /// offer's format that the stream satisfies, so the answer's
    /// profile-level-id says what the camera really sends. `None` for
    /// openh264's stream (or before the source's first SPS).
    fn video_codec(&self) -> Option<rtc::rtp_transceiver::rtp_sender::RTCRtpCodec> {
        let sent = self.ctx.video.as_ref()?.passthrough_profile()?;
        let profile =
            crate::media::passthrough::answer_profile(&sent, &self.summary.h264_profiles)?;
        Some(engine::h264_codec_with_profile(&profile))
    }

    /// H.264 passed through from the camera is what it is: a viewer whose
    /// offer has video but not in the stream's profile (VP8 only, or
    /// another H.264 profile) is refused rather than sent video it cannot
    /// decode or none at all (`encode::passthrough::offer_refusal`).
    fn check_passthrough_profile(&self) -> Result<(), Refusal> {
        let Some(v) = self.ctx.video.as_ref() else {
            return Ok(());
        };
        let sent = v.passthrough_profile();
        if sent.is_none() && !v.passes_through() {
            return Ok(());
        }
        let s = &self.summary;
        match crate::media::passthrough::offer_refusal(
            sent.as_deref(),
            s.video,
            s.video_h264,
            &s.h264_profiles,
        ) {
            None => Ok(()),
            Some(why) => Err(Refusal(ErrorCode::Unsupported, why)),
        }
    }

    /// Stops the transceivers of media sections the device cannot serve (audio
    /// without a microphone, video without a camera), so the answer rejects
    /// them (port 0) rather than promising media that never comes.
    async fn decline_unserved(&self, pc: &Arc<dyn PeerConnection>, video: bool, audio: bool) {
        for t in pc.get_transceivers().await {
            let Ok(Some(mid)) = t.mid().await else {
                continue;
            };
            let kind = self
                .summary
                .mids
                .iter()
                .find(|(_, m)| *m == mid)
                .map(|(k, _)| k.as_str());
            let unserved = match kind {
                Some("video") => !video,
                Some("audio") => !audio,
                _ => false,
            };
            if unserved {
                debug!(sid = %self.sid, %mid, kind = kind.unwrap_or("?"), "declining a media section");
                if let Err(e) = t.stop().await {
                    debug!(sid = %self.sid, %mid, "cannot stop the transceiver: {e}");
                }
            }
        }
    }

    async fn add_track(
        &self,
        pc: &Arc<dyn PeerConnection>,
        kind: RtpCodecKind,
        codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    ) -> Result<(Arc<TrackLocalStaticSample>, u32, Arc<dyn RtpSender>), Refusal> {
        let ssrc: u32 = rand::random();
        let name = if kind == RtpCodecKind::Video {
            "video"
        } else {
            "audio"
        };
        let track = MediaStreamTrack::new(
            format!("campeer-{}", self.sid),
            name.to_owned(),
            name.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        let track = Arc::new(
            TrackLocalStaticSample::new(Instant::now(), track)
                .map_err(|e| Refusal(ErrorCode::Internal, format!("{name} track: {e}")))?,
        );
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| Refusal(ErrorCode::Internal, format!("add {name} track: {e}")))?;
        Ok((track, ssrc, sender))
    }

    async fn answer_offer(&mut self, pc: &Arc<dyn PeerConnection>) -> Result<(), Refusal> {
        let answer = pc.create_answer(None).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("codec") || text.contains("Codec") {
                Refusal(
                    ErrorCode::Unsupported,
                    format!("no codec in common: {text}"),
                )
            } else {
                Refusal(ErrorCode::BadRequest, format!("cannot answer: {text}"))
            }
        })?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| Refusal(ErrorCode::Internal, format!("set local description: {e}")))?;
        let sdp = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| Refusal(ErrorCode::Internal, "no local description".into()))?;
        self.mid = transport_mid(&sdp);
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(sdp.clone());
        self.send(DeviceMessage::Answer { sdp });
        self.answered = true;
        for c in std::mem::take(&mut self.pending_local) {
            self.local_candidate(c);
        }
        Ok(())
    }

    async fn renegotiate(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        offer: &str,
    ) -> Result<(), Refusal> {
        OfferSummary::parse(offer).map_err(|e| Refusal(ErrorCode::BadRequest, e.to_string()))?;
        apply_offer(pc, offer).await?;
        self.answer_offer(pc).await?;
        info!(sid = %self.sid, "renegotiated");
        Ok(())
    }

    fn local_candidate(&mut self, c: Option<CandidateInit>) {
        if !self.answered {
            self.pending_local.push(c);
            return;
        }
        let c = c.map(|mut c| {
            if c.sdp_mid.as_deref().unwrap_or("").is_empty() {
                if let Some((mid, index)) = &self.mid {
                    c.sdp_mid = Some(mid.clone());
                    c.sdp_mline_index = Some(*index);
                }
            }
            c
        });
        self.send(DeviceMessage::Candidate { candidate: c });
    }

    async fn add_remote_candidate(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        c: Option<CandidateInit>,
    ) {
        let Some(c) = c else {
            debug!(sid = %self.sid, "viewer: end of candidates");
            return;
        };
        if c.candidate.is_empty() {
            return;
        }
        let init = rtc::peer_connection::transport::RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            url: None,
        };
        if let Err(e) = pc.add_ice_candidate(init).await {
            info!(sid = %self.sid, "refused remote candidate: {e}");
            self.send(DeviceMessage::Error {
                code: ErrorCode::BadRequest,
                message: format!("bad candidate: {e}"),
                relay: None,
            });
        }
    }

    fn start_writer(&mut self) {
        if let (Some(audio), Some(pipeline)) = (self.audio.take(), self.ctx.audio.clone()) {
            let packets = pipeline.subscribe();
            let sid = self.sid.clone();
            self.audio_writer = Some(tokio::spawn(write_audio(sid, audio, packets)));
        }
        let (Some(video), Some(pipeline)) = (self.video.take(), self.ctx.video.clone()) else {
            return;
        };
        let frames = pipeline.subscribe_codec(video.codec);
        pipeline.request_keyframe_codec(video.codec);
        let metrics = self.ctx.metrics.clone();
        let sid = self.sid.clone();
        self.writer = Some(tokio::spawn(write_video(
            sid, video, frames, pipeline, metrics,
        )));
    }
}

/// Turns encoded media into samples whose RTP time follows the capture
/// clock (not the send time), the same way for audio and video, so browsers
/// keep lips in sync and gaps in capture show as gaps in RTP time.
#[derive(Default)]
struct SampleTimer {
    last_capture_us: Option<u64>,
}

impl SampleTimer {
    /// The sample for media captured at `capture_us`; `nominal_us` is its
    /// duration when there is no earlier capture to measure from.
    fn sample(&mut self, data: bytes::Bytes, capture_us: u64, nominal_us: u64) -> Sample {
        let duration_us = self.duration_us(capture_us, nominal_us);
        let age = Duration::from_micros(monotonic_us().saturating_sub(capture_us));
        Sample {
            data,
            duration: Duration::from_micros(duration_us),
            ..Sample::new(Instant::now().checked_sub(age).unwrap_or_else(Instant::now))
        }
    }

    fn duration_us(&mut self, capture_us: u64, nominal_us: u64) -> u64 {
        let d = match self.last_capture_us {
            Some(prev) if capture_us > prev => capture_us - prev,
            _ => nominal_us,
        };
        self.last_capture_us = Some(capture_us);
        d
    }
}

/// Feeds one session's audio track from the shared Opus encoder. Audio has
/// no keyframes: after falling behind it simply carries on.
async fn write_audio(
    sid: String,
    out: TrackOut,
    mut packets: broadcast::Receiver<Arc<EncodedAudio>>,
) {
    let mut timer = SampleTimer::default();
    loop {
        let packet = match packets.recv().await {
            Ok(p) => p,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                debug!(%sid, skipped = n, "audio writer fell behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let sample = timer.sample(packet.data.clone(), packet.capture_us, packet.duration_us);
        if let Err(e) = out
            .track
            .sample_writer(out.ssrc, out.payload_type)
            .write_sample(&sample)
            .await
        {
            debug!(%sid, "audio write_sample: {e}");
        }
    }
}

/// Feeds one session's video track from the shared encoder output. Skips to
/// the next keyframe after falling behind; answers PLI/FIR with a keyframe
/// request.
async fn write_video(
    sid: String,
    out: TrackOut,
    mut frames: broadcast::Receiver<Arc<EncodedFrame>>,
    pipeline: Arc<VideoPipeline>,
    metrics: Arc<Metrics>,
) {
    let mut need_keyframe = true;
    let mut timer = SampleTimer::default();
    let mut sent = 0u64;
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let frame = match frame {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        info!(%sid, skipped = n, "viewer fell behind; skipping to the next keyframe");
                        need_keyframe = true;
                        pipeline.request_keyframe_codec(out.codec);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if need_keyframe {
                    if !frame.keyframe {
                        continue;
                    }
                    need_keyframe = false;
                }
                let sample = timer.sample(frame.data.clone(), frame.capture_us, frame.duration_us);
                if let Err(e) = out.track.sample_writer(out.ssrc, out.payload_type).write_sample(&sample).await {
                    debug!(%sid, "write_sample: {e}");
                    continue;
                }
                metrics.record_send(monotonic_us().saturating_sub(frame.capture_us));
                metrics.record_bytes(frame.data.len());
                sent += 1;
                if sent == 1 {
                    debug!(%sid, "first video frame sent");
                }
            }
            ev = out.track.poll() => match ev {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        debug!(%sid, "keyframe requested by viewer (PLI/FIR)");
                        metrics.record_keyframe_request();
                        pipeline.request_keyframe_codec(out.codec);
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// Most data channels one session may open.
const MAX_DATA_CHANNELS: usize = 4;

/// Serves JSON-RPC on a `control` channel (docs/protocol.md#the-control-data-channel) and sends
/// `gpio.changed` notifications; any other label is closed.
async fn serve_control(
    id: u64,
    sid: String,
    dc: Arc<dyn DataChannel>,
    ctx: Arc<ControlContext>,
    access: Access,
) {
    let label = dc.label().await.unwrap_or_default();
    if label != "control" {
        info!(%sid, %label, "closing a data channel that is not `control`");
        let _ = dc.close().await;
        return;
    }
    debug!(%sid, role = access.role.as_str(), "control channel");
    let mut rpc =
        RpcSession::new(sid.clone(), access.key_id, access.role, &ctx.limits).for_session(id);
    let mut changes = ctx.gpio.subscribe();
    loop {
        tokio::select! {
            ev = dc.poll() => match ev {
                Some(DataChannelEvent::OnMessage(msg)) => {
                    let reply = if msg.is_string {
                        match std::str::from_utf8(&msg.data) {
                            Ok(text) => rpc.handle(text, &ctx).await,
                            // Not UTF-8: the parse error, as for any unparsable text.
                            Err(_) => rpc.handle("\u{0}", &ctx).await,
                        }
                    } else {
                        Some(binary_refused())
                    };
                    if let Some(reply) = reply {
                        if let Err(e) = dc.send_text(&reply).await {
                            debug!(%sid, "control reply not sent: {e}");
                            break;
                        }
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break,
                Some(_) => {}
            },
            change = changes.recv() => match change {
                Ok(c) => {
                    if let Err(e) = dc.send_text(&notification(&c)).await {
                        debug!(%sid, "notification not sent: {e}");
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(%sid, missed = n, "control channel missed gpio.changed notifications");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    debug!(%sid, "control channel closed");
}

/// The RTP codec the device sends video as.
fn video_rtp_codec(c: VideoCodec) -> rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
    match c {
        VideoCodec::H264 => engine::h264_codec(),
        VideoCodec::Vp8 => engine::vp8_codec(),
    }
}

/// The negotiated sending parameters of a track (the payload type of codec
/// `mime`), or `None` (logged) when its section negotiated no such codec.
async fn negotiated(
    sid: &str,
    mime: &str,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: &Arc<dyn RtpSender>,
    codec: VideoCodec,
) -> Option<TrackOut> {
    let kind = mime;
    let params = match sender.get_parameters().await {
        Ok(p) => p,
        Err(e) => {
            warn!(%sid, "{kind} sender parameters: {e}; sending no {kind}");
            return None;
        }
    };
    let found = params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime));
    match found {
        Some(c) => Some(TrackOut {
            track,
            ssrc,
            payload_type: c.payload_type,
            codec,
        }),
        None => {
            warn!(%sid, "{kind} section negotiated no codec; sending no {kind}");
            None
        }
    }
}

/// The section of an answer that carries the (bundled) transport: the first
/// mid of its BUNDLE group, or else its first section that is not rejected,
/// as `(mid, m-line index)`. Candidates must name this section: a browser
/// drops a candidate for a rejected section (port 0), and when the offer's
/// first section is video the device cannot send (Firefox without H.264),
/// naming "the first mid" left the browser with no candidate at all and
/// ICE failed (the browser's own host candidates are mDNS names the device
/// cannot resolve, so only the device's candidates can start the checks).
fn transport_mid(sdp: &str) -> Option<(String, u16)> {
    let bundle_first = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=group:BUNDLE "))
        .and_then(|g| g.split_whitespace().next())
        .map(str::to_owned);
    let mut sections: Vec<(bool, Option<String>)> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let rejected = m.split_whitespace().nth(1) == Some("0");
            sections.push((rejected, None));
        } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), sections.last_mut()) {
            last.1.get_or_insert_with(|| mid.trim().to_owned());
        }
    }
    let found = sections
        .iter()
        .enumerate()
        .find(|(_, (rejected, mid))| match &bundle_first {
            Some(b) => mid.as_ref() == Some(b),
            None => !rejected && mid.is_some(),
        });
    let (index, (_, mid)) = found?;
    Some((mid.clone()?, u16::try_from(index).ok()?))
}

/// Sets `offer` as the remote description, trimmed to the codecs the
/// device sends (webrtc-rs applies it faster: `rtc::offer_trim`).
async fn apply_offer(pc: &Arc<dyn PeerConnection>, offer: &str) -> Result<(), Refusal> {
    let desc = RTCSessionDescription::offer(crate::rtc::offer_trim::trim_offer(offer))
        .map_err(|e| Refusal(ErrorCode::BadRequest, format!("unparsable SDP: {e}")))?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| Refusal(ErrorCode::BadRequest, format!("offer not applicable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_time_follows_the_capture_clock() {
        let mut t = SampleTimer::default();
        assert_eq!(t.duration_us(1_000_000, 33_333), 33_333);
        assert_eq!(t.duration_us(1_033_000, 33_333), 33_000);
        // A capture gap (frames skipped) shows as a longer duration.
        assert_eq!(t.duration_us(1_200_000, 33_333), 167_000);
        // A clock that does not advance falls back to the nominal duration.
        assert_eq!(t.duration_us(1_200_000, 33_333), 33_333);
    }

    #[test]
    fn candidates_name_the_bundle_section_not_a_rejected_one() {
        // Firefox without H.264: its first section (video) is rejected and
        // the bundle moves to audio.
        let sdp = "v=0\r\na=group:BUNDLE 1 2\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\nm=application 9 UDP/DTLS/SCTP x\r\na=mid:2\r\n";
        assert_eq!(transport_mid(sdp), Some(("1".to_owned(), 1)));
        // Without a BUNDLE group: the first section that is not rejected.
        let sdp = "v=0\r\nm=video 0 X 1\r\na=mid:v\r\nm=audio 9 X 2\r\na=mid:a\r\n";
        assert_eq!(transport_mid(sdp), Some(("a".to_owned(), 1)));
        let sdp = "v=0\r\na=group:BUNDLE video0 1\r\nm=video 9 X 1\r\na=mid:video0\r\nm=audio 9 X 2\r\na=mid:1\r\n";
        assert_eq!(transport_mid(sdp), Some(("video0".to_owned(), 0)));
        assert_eq!(transport_mid("v=0\r\n"), None);
    }
}
