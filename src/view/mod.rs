//! `campeer view`: the project's own viewer client.
//!
//! It speaks docs/protocol.md as any viewer would: offers recvonly video and a
//! `control` data channel over MQTT, trickles candidates, decodes the H.264
//! it receives with openh264, reads the frame stamps, and reports frame
//! count, lost frames, time to first frame and capture-to-decode latency.
//! Users run it to check a device from a shell; tests and benchmarks use it.

pub mod assemble;
pub mod audio;
pub mod control;
mod ice;
mod relay;
pub mod report;
mod signal;
mod whep;

use crate::cli::ViewArgs;
use crate::clock::{monotonic_us, sleep_until_opt};
use crate::config::{IceServer, MqttTarget, WebRtcConfig};
use crate::encode::decode::{DecodedPicture, H264Decoder};
use crate::encode::pipeline::VideoCodec;
use crate::encode::vp8::Vp8Decoder;
use crate::media::stamp::read_stamp;
use crate::rtc::engine::{Role, RtcEngine};
use crate::signaling::auth::sign;
use crate::signaling::auth::{key_password, SessionKey};
use crate::signaling::ice_servers::IceServerSource;
use crate::signaling::messages::IceServerEntry;
use crate::signaling::messages::{
    CandidateInit, DeviceMessage, ErrorCode, OfferAuth, ViewerMessage,
};
use crate::signaling::topics::Topics;
use anyhow::Context;
use assemble::{AccessUnitAssembler, Vp8FrameAssembler};
use audio::AudioReceiver;
use control::{parse_calls, ControlEvent};
use report::{FrameObservation, ViewReport};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState,
};

/// What the peer connection and the media task tell the main loop.
enum Event {
    LocalCandidate(Option<CandidateInit>),
    State(RTCPeerConnectionState),
    Frame(FrameObservation),
    Control(ControlEvent),
    /// Decoded audio so far, ms.
    AudioProgress(f64),
    /// The far end ended the stream (the relay: Janus hung up).
    Ended(String),
}

struct Handler {
    tx: mpsc::Sender<Event>,
    started: Instant,
    /// The video codec offered alone (`--codec vp8`), else H.264.
    codec: VideoCodec,
    audio: Arc<std::sync::Mutex<Option<AudioReceiver>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.tx.try_send(Event::LocalCandidate(Some(CandidateInit {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid.filter(|m| !m.is_empty()).or(Some("0".into())),
                sdp_mline_index: init.sdp_mline_index.or(Some(0)),
                username_fragment: init.username_fragment,
            })));
        }
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.try_send(Event::LocalCandidate(None));
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.try_send(Event::State(state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        match track.kind().await {
            RtpCodecKind::Video => {
                tokio::spawn(receive_video(track, tx, self.started, self.codec));
            }
            RtpCodecKind::Audio => {
                tokio::spawn(receive_audio(track, tx, self.audio.clone()));
            }
            _ => {}
        }
    }
}

/// Runs the viewer; prints the report; exit code 0 when it saw what it was asked to.
pub async fn run(args: ViewArgs) -> anyhow::Result<ExitCode> {
    let report = match (&args.whep, &args.janus, args.mountpoint) {
        (Some(url), _, _) => whep::view(&args, url).await?,
        (None, Some(janus), Some(id)) => {
            relay::watch(&args, janus, id, args.pin.as_deref(), ViewReport::new("")).await?
        }
        _ => view_rejoining(&args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.human());
    }
    Ok(if report.success(&args) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A viewer's peer connection, its events and its audio receiver.
struct ViewerPc {
    pc: Arc<dyn PeerConnection>,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    audio: Arc<std::sync::Mutex<Option<AudioReceiver>>>,
}

/// Builds the viewer's peer connection (loopback candidates included, the
/// ICE servers of `--ice-servers` and `from_device`), receiving `codec`
/// only when it is VP8 (`--codec vp8`), else H.264.
async fn viewer_pc(
    args: &ViewArgs,
    started: Instant,
    codec: VideoCodec,
    from_device: Vec<IceServerEntry>,
) -> anyhow::Result<ViewerPc> {
    let cfg = WebRtcConfig {
        include_loopback: true,
        ice_servers: ice_servers(args)?,
        ..WebRtcConfig::default()
    };
    // `--ice-servers` first, then what the device handed out.
    let mut servers = crate::rtc::engine::static_servers(&cfg);
    servers.extend(from_device);
    let engine = RtcEngine::new(&cfg, Role::Offerer)?
        .with_only_video_codec((codec == VideoCodec::Vp8).then_some(codec))
        .with_ice_source(IceServerSource::new(servers, None));
    let (tx, rx) = mpsc::channel(1024);
    let audio = Arc::new(std::sync::Mutex::new(None));
    let pc = engine
        .build(Arc::new(Handler {
            tx: tx.clone(),
            started,
            codec,
            audio: audio.clone(),
        }))
        .await?;
    Ok(ViewerPc { pc, tx, rx, audio })
}

/// The STUN/TURN servers of `--ice-servers`, checked as the device checks
/// its own (`webrtc.ice_servers`).
fn ice_servers(args: &ViewArgs) -> anyhow::Result<Vec<IceServer>> {
    let Some(path) = &args.ice_servers else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --ice-servers {}", path.display()))?;
    let servers: Vec<IceServer> = serde_json::from_str(&text).with_context(|| {
        format!(
            "--ice-servers {}: not a JSON array of ICE servers",
            path.display()
        )
    })?;
    for (i, s) in servers.iter().enumerate() {
        s.validate(&format!("--ice-servers[{i}]"))?;
    }
    Ok(servers)
}

/// The local description with the candidates gathered within `wait`, for
/// signaling without trickle (WHEP, the relay).
async fn local_sdp_gathered(v: &mut ViewerPc, wait: Duration) -> anyhow::Result<String> {
    let mut candidates = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, v.rx.recv()).await {
            Ok(Some(Event::LocalCandidate(Some(c)))) => candidates.push(c.candidate),
            Ok(Some(Event::LocalCandidate(None))) | Err(_) => break,
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("peer connection events ended"),
        }
    }
    let sdp =
        v.pc.local_description()
            .await
            .map(|d| d.sdp)
            .context("no local description")?;
    Ok(crate::web::whep::resources::with_candidates(
        &sdp,
        &candidates,
    ))
}

fn audio_report(
    state: &std::sync::Mutex<Option<AudioReceiver>>,
) -> Option<crate::view::audio::AudioReport> {
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|a| a.report())
}

/// Pause before going back to the device after losing the relay.
const REJOIN_PAUSE: Duration = Duration::from_secs(1);

/// [`view`], going back to the device whenever the relay is lost (Janus
/// restarted, say) while time remains: the device then answers directly
/// or hands over to its new mountpoint, as the page does.
async fn view_rejoining(args: &ViewArgs) -> anyhow::Result<ViewReport> {
    let end = Instant::now() + Duration::from_secs(args.timeout);
    let mut report = view(args).await?;
    // Busy while rejoining: the relay is not back yet; keep trying.
    let again = |r: &ViewReport| {
        r.relay_lost || (!r.rejoins.is_empty() && r.error_code == Some(ErrorCode::Busy))
    };
    while again(&report) && !args.no_relay {
        tokio::time::sleep(REJOIN_PAUSE).await;
        let left = end.saturating_duration_since(Instant::now()).as_secs();
        if left == 0 {
            break;
        }
        info!(
            left_s = left,
            why = report.error.as_deref().unwrap_or("-"),
            "the relay was lost; going back to the device"
        );
        let again = ViewArgs {
            timeout: left,
            ..args.clone()
        };
        let next = view(&again).await?;
        report.rejoin(next);
    }
    Ok(report)
}

/// The whole viewer session, returning what was observed.
pub async fn view(args: &ViewArgs) -> anyhow::Result<ViewReport> {
    let target = MqttTarget::parse(&args.mqtt).context("--mqtt")?;
    // Under a per-viewer broker ACL (examples/mosquitto) the sid must be the
    // viewer's user name; without one, a random sid.
    let sid = args
        .sid
        .clone()
        .or_else(|| {
            target
                .username
                .clone()
                .filter(|u| crate::signaling::topics::validate_sid(u))
        })
        .unwrap_or_else(random_sid);
    let topics = Topics::new(&args.prefix, &args.device);
    let mut report = ViewReport::new(&sid);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);

    let secret = match (&args.key, &args.secret_file) {
        (Some(key), Some(file)) => {
            let bytes = std::fs::read(file)
                .with_context(|| format!("reading the secret file {}", file.display()))?;
            Some((key.clone(), strip_line_end(&bytes).to_vec()))
        }
        _ => None,
    };
    let login = secret.as_ref().map(|(key, s)| signal::KeyLogin {
        username: key.clone(),
        password: key_password(s, &args.device),
    });
    let mut sig = signal::ViewerSignal::connect(args, &target, &topics, &sid, login).await?;
    report.mqtt_ms = started.elapsed().as_secs_f64() * 1e3;
    // A signed offer needs the device's current nonce, from its status.
    let nonce = match &secret {
        Some(_) => sig
            .status(Duration::from_secs(5))
            .await
            .and_then(|p| p.nonce().map(str::to_owned)),
        None => None,
    };

    let ice_servers = ask_ice_servers(args, &mut sig, &secret, &nonce, &mut report).await;

    let codec = if args.codec == "vp8" {
        VideoCodec::Vp8
    } else {
        VideoCodec::H264
    };
    let ViewerPc {
        pc,
        tx,
        mut rx,
        audio: audio_state,
    } = viewer_pc(args, started, codec, ice_servers).await?;

    let calls = parse_calls(&args.call)?;
    report.calls = calls.clone();
    let offer_sdp = match &args.offer_file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => local_offer(args, &pc, &calls, &tx).await?,
    };
    let auth = match (&secret, &nonce) {
        (Some((key, secret)), Some(nonce)) => {
            let signature = sign(secret, &args.device, &sid, &args.role, nonce, &offer_sdp);
            sig.set_key(SessionKey::derive(secret, &signature));
            Some(OfferAuth {
                key: key.clone(),
                role: args.role.clone(),
                nonce: Some(nonce.clone()),
                sig: signature,
            })
        }
        (Some(_), None) => {
            warn!("the device's status carries no nonce (offline, open, or protocol 1?): offering unsigned");
            None
        }
        _ => None,
    };
    let offer_at = Instant::now();
    let offer = ViewerMessage::Offer {
        sdp: offer_sdp,
        auth,
    };
    sig.publish(&offer);
    if args.repeat_offer {
        sig.publish(&offer);
    }

    let mut have_answer = false;
    let mut pending_remote: Vec<CandidateInit> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let mut pli = tokio::time::interval(Duration::from_millis(1000));
    let mut answers = 0u32;
    let mut break_to_relay: Option<(String, u64, String)> = None;

    // Once everything asked for is seen, linger briefly for notifications
    // (only when control calls were made; plain video runs end at once).
    let mut finish: Option<tokio::time::Instant> = None;
    let outcome: anyhow::Result<()> = loop {
        if let Some(f) = finish {
            if calls.is_empty() || tokio::time::Instant::now() >= f {
                break Ok(());
            }
        }
        tokio::select! {
            _ = sleep_until_opt(finish) => continue,
            _ = tokio::time::sleep_until(deadline) => {
                if !args.hold {
                    report.error = Some(format!("timeout after {} s", args.timeout));
                }
                break Ok(());
            }
            msg = sig.next() => {
                let Some((msg, mac)) = msg else { break Err(anyhow::anyhow!("MQTT connection ended")); };
                if !sig.verifies(&msg, mac.as_deref()) {
                    // An error refusing the offer cannot carry a mac; anything
                    // else that does not verify is someone else's forgery.
                    let refusal = matches!(msg, DeviceMessage::Error { .. }) && !have_answer;
                    if !refusal {
                        report.unverified += 1;
                        warn!(?msg, "ignored a message from the device topic whose mac does not verify");
                        continue;
                    }
                    report.unverified_error = true;
                }
                match msg {
                    DeviceMessage::Answer { sdp } => {
                        answers += 1;
                        report.answers = answers;
                        if have_answer {
                            debug!("repeated answer");
                            if report.answer_sdp.as_deref() != Some(sdp.as_str()) {
                                report.answers_differ = true;
                            }
                            continue;
                        }
                        report.answer_ms = Some(offer_at.elapsed().as_secs_f64() * 1e3);
                        report.set_answer(&sdp);
                        if args.offer_file.is_some() {
                            // A hand-made offer cannot be completed; the answer is the result.
                            break Ok(());
                        }
                        let desc = RTCSessionDescription::answer(sdp)?;
                        pc.set_remote_description(desc).await?;
                        have_answer = true;
                        for c in pending_remote.drain(..) {
                            add_candidate(&pc, c).await;
                        }
                    }
                    DeviceMessage::Candidate { candidate: Some(c) } => {
                        debug!(candidate = %c.candidate, "device candidate");
                        report.remote_candidates += 1;
                        if have_answer { add_candidate(&pc, c).await } else { pending_remote.push(c) }
                    }
                    DeviceMessage::Candidate { candidate: None } => debug!("device: end of candidates"),
                    DeviceMessage::Bye { reason } => {
                        report.bye = Some(reason);
                        break Ok(());
                    }
                    DeviceMessage::Error { code, message, .. } if have_answer => {
                        // A refused renegotiation or candidate: the session
                        // itself goes on (someone may be forging them).
                        warn!(?code, "the device refused a message: {message}");
                        report.late_errors += 1;
                    }
                    // A relay is followed only if its own mac verifies, and
                    // the refusal's too when it carries one.
                    DeviceMessage::Error { relay: Some(r), .. }
                        if !(args.no_relay || mac.is_some() && report.unverified_error) =>
                    {
                        match sig.open_relay(&sid, &r) {
                            Some(pin) => break_to_relay = Some((r.janus, r.mountpoint, pin)),
                            None => {
                                warn!("ignored a relay whose mac does not verify");
                                report.unverified += 1;
                                continue;
                            }
                        }
                        break Ok(());
                    }
                    DeviceMessage::Error { code, message, .. } => {
                        report.error_code = Some(code);
                        report.error = Some(message);
                        break Ok(());
                    }
                    // Asked for on a sid of its own, before the offer.
                    DeviceMessage::Ice { .. } => debug!("ignored an ice reply on the session's sid"),
                }
            }
            ev = rx.recv() => match ev {
                None => break Err(anyhow::anyhow!("peer connection events ended")),
                Some(Event::Ended(why)) => break Err(anyhow::anyhow!(why)),
                Some(Event::LocalCandidate(c)) => {
                    debug!(candidate = ?c.as_ref().map(|c| &c.candidate), "local candidate");
                    sig.publish(&ViewerMessage::Candidate { candidate: c })
                }
                Some(Event::State(s)) => {
                    debug!(state = %s, "connection state");
                    match s {
                        RTCPeerConnectionState::Connected => {
                            report.connected_ms = Some(offer_at.elapsed().as_secs_f64() * 1e3);
                            report.pair = crate::rtc::engine::selected_pair(&pc).await;
                            if !args.hold && video_done(args, &report) && report.calls_done() {
                                finish.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                            }
                        }
                        RTCPeerConnectionState::Failed => {
                            report.error = Some("connection failed".into());
                            break Ok(());
                        }
                        _ => {}
                    }
                }
                Some(Event::AudioProgress(ms)) => {
                    report.audio_decoded_ms = ms;
                    if !args.hold && video_done(args, &report) && report.calls_done() {
                        finish.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                    }
                }
                Some(Event::Control(ev)) => {
                    match ev {
                        ControlEvent::Open => report.control_open = true,
                        ControlEvent::Closed => {}
                        ControlEvent::Message(v) => report.control_message(v),
                    }
                    if !args.hold && report.calls_done() && video_done(args, &report) {
                        finish.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                    }
                }
                Some(Event::Frame(obs)) => {
                    if obs.keyframe {
                        report.keyframes += 1;
                        if let Some(at) = report.pli_sent_at_frame {
                            if report.pli_to_keyframe_frames.is_none() {
                                // This frame is not counted yet: the next
                                // frame after the PLI is 1.
                                report.pli_to_keyframe_frames = Some(report.frames + 1 - at);
                            }
                        }
                    }
                    report.observe_frame(&obs, offer_at, &mut latencies);
                    if args.pli_at == Some(report.frames) && report.pli_sent_at_frame.is_none() {
                        report.plis_sent += send_pli(&pc).await;
                        report.pli_sent_at_frame = Some(report.frames);
                    }
                    if !args.hold && video_done(args, &report) && report.calls_done() {
                        finish.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                    }
                }
            },
            _ = pli.tick(), if report.frames == 0 && have_answer => {
                // Until the first picture decodes, ask for a keyframe now and then.
                report.plis_sent += send_pli(&pc).await;
            }
        }
    };
    if let Err(e) = &outcome {
        report.error = Some(e.to_string());
    }
    if let Some((janus, id, pin)) = break_to_relay {
        let _ = pc.close().await;
        sig.close().await;
        return relay::watch(args, &janus, id, Some(&pin), report).await;
    }
    report.finish(&mut latencies);
    report.audio = audio_report(&audio_state);
    if report.bye.is_none() {
        sig.publish(&ViewerMessage::Bye);
    }
    let _ = pc.close().await;
    sig.close().await;
    Ok(report)
}

/// Receives media on a connected (or connecting) peer connection that has
/// no signaling left to do (WHEP, the relay) until the run is complete,
/// the deadline passes or the connection fails; then fills in `report`.
/// ICE servers from the device (`ice_request`), unless `--no-ice-request`;
/// none when it does not answer, refuses, or its reply does not verify.
async fn ask_ice_servers(
    args: &ViewArgs,
    sig: &mut signal::ViewerSignal,
    secret: &Option<(String, Vec<u8>)>,
    nonce: &Option<String>,
    report: &mut ViewReport,
) -> Vec<IceServerEntry> {
    if args.no_ice_request {
        return Vec::new();
    }
    let key = match (secret, nonce) {
        (Some((id, s)), Some(n)) => Some((id.as_str(), s.as_slice(), n.as_str())),
        _ => None,
    };
    if secret.is_some() && key.is_none() {
        return Vec::new(); // signed, but no nonce: the offer will say so
    }
    let asked = Instant::now();
    let got = ice::request(sig, &args.device, key).await;
    report.ice_ms = Some(asked.elapsed().as_secs_f64() * 1e3);
    report.ice_servers = got.as_ref().map(|r| r.servers.len());
    report.ice_expires = got.as_ref().map(|r| r.expires);
    got.map(|r| r.servers).unwrap_or_default()
}

/// Adds a receive-only transceiver of `kind`.
async fn add_recvonly(pc: &Arc<dyn PeerConnection>, kind: RtpCodecKind) -> anyhow::Result<()> {
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Recvonly,
        streams: vec![],
        send_encodings: vec![],
    };
    pc.add_transceiver_from_kind(kind, Some(init)).await?;
    Ok(())
}

/// The viewer's offer: receive-only video and audio (unless left out),
/// the `control` channel (unless `--no-data`), set as the local
/// description.
async fn local_offer(
    args: &ViewArgs,
    pc: &Arc<dyn PeerConnection>,
    calls: &[control::Call],
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<String> {
    if !args.no_video {
        add_recvonly(pc, RtpCodecKind::Video).await?;
    }
    if !args.no_audio {
        add_recvonly(pc, RtpCodecKind::Audio).await?;
    }
    if !args.no_data {
        open_control(pc, args, calls, tx).await?;
    }
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .context("no local description after set_local_description")
}

/// Opens the `control` data channel on `pc`, makes `calls` on it once it
/// is open, and forwards what it hears to the viewer's events.
async fn open_control(
    pc: &Arc<dyn PeerConnection>,
    args: &ViewArgs,
    calls: &[control::Call],
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let dc = pc.create_data_channel("control", None).await?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel(256);
    tokio::spawn(control::run_channel(
        dc,
        args.send_raw.clone(),
        calls.to_vec(),
        ctl_tx,
    ));
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Some(ev) = ctl_rx.recv().await {
            if tx.send(Event::Control(ev)).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Receives media (and control answers, when calls were made) until the
/// run is done, the deadline passes or the connection ends.
async fn receive(
    args: &ViewArgs,
    v: &mut ViewerPc,
    report: &mut ViewReport,
    offer_at: Instant,
    deadline: tokio::time::Instant,
) {
    let (pc, rx, audio_state) = (&v.pc, &mut v.rx, &v.audio);
    let mut latencies = Vec::new();
    let mut pli = tokio::time::interval(Duration::from_millis(1000));
    loop {
        if !args.hold && video_done(args, report) && report.calls_done() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if !args.hold {
                    report.error = Some(format!("timeout after {} s", args.timeout));
                }
                break;
            }
            ev = rx.recv() => match ev {
                None => { report.error = Some("peer connection events ended".into()); break; }
                Some(Event::State(s)) => match s {
                    RTCPeerConnectionState::Connected => {
                        report.connected_ms.get_or_insert(offer_at.elapsed().as_secs_f64() * 1e3);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        report.error = Some(format!("connection {s}"));
                        break;
                    }
                    _ => {}
                },
                Some(Event::AudioProgress(ms)) => report.audio_decoded_ms = ms,
                Some(Event::Frame(obs)) => {
                    if obs.keyframe {
                        report.keyframes += 1;
                    }
                    report.observe_frame(&obs, offer_at, &mut latencies);
                }
                Some(Event::Ended(why)) => {
                    report.error = Some(why);
                    break;
                }
                Some(Event::Control(ev)) => match ev {
                    ControlEvent::Open => report.control_open = true,
                    ControlEvent::Closed => {}
                    ControlEvent::Message(v) => report.control_message(v),
                },
                Some(_) => {}
            },
            _ = pli.tick(), if report.frames == 0 => {
                report.plis_sent += send_pli(pc).await;
            }
        }
    }
    report.finish(&mut latencies);
    report.audio = audio_report(audio_state);
}

/// How long the viewer stays after its calls were answered, for notifications.
const LINGER: Duration = Duration::from_millis(400);

/// Whether the video part of the run is complete.
fn video_done(args: &ViewArgs, report: &ViewReport) -> bool {
    let audio = args
        .audio_secs
        .is_none_or(|s| report.audio_decoded_ms >= s * 1000.0);
    let video = if args.no_video {
        report.connected_ms.is_some()
    } else {
        report.frames >= args.frames
    };
    audio && video
}

/// Sends a PLI on every receiving track; returns how many were sent.
async fn send_pli(pc: &Arc<dyn PeerConnection>) -> u32 {
    let mut sent = 0;
    for r in pc.get_receivers().await {
        let track = r.track();
        if track.kind().await != RtpCodecKind::Video {
            continue;
        }
        if let Some(ssrc) = track.ssrcs().await.first().copied() {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// A secret file's bytes without one trailing newline.
fn strip_line_end(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

async fn add_candidate(pc: &Arc<dyn PeerConnection>, c: CandidateInit) {
    let init = RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
        url: None,
    };
    if let Err(e) = pc.add_ice_candidate(init).await {
        warn!("device candidate refused: {e}");
    }
}

/// One codec's reassembly and decoding, for `receive_video`.
enum VideoDecoding {
    H264(AccessUnitAssembler, H264Decoder),
    Vp8(Vp8FrameAssembler, Vp8Decoder),
}

impl VideoDecoding {
    fn new(codec: VideoCodec) -> Result<Self, crate::encode::EncodeError> {
        Ok(match codec {
            VideoCodec::H264 => {
                VideoDecoding::H264(AccessUnitAssembler::default(), H264Decoder::new()?)
            }
            VideoCodec::Vp8 => VideoDecoding::Vp8(Vp8FrameAssembler::default(), Vp8Decoder::new()?),
        })
    }

    /// Feeds one RTP packet: a decoded picture (with whether it was a
    /// keyframe) when it completes one.
    fn push(
        &mut self,
        h: &rtc::rtp::header::Header,
        payload: &bytes::Bytes,
    ) -> Option<(DecodedPicture, bool)> {
        let (seq, ts, m) = (h.sequence_number, h.timestamp, h.marker);
        let decoded = match self {
            VideoDecoding::H264(a, d) => {
                let au = a.push(seq, ts, m, payload)?;
                let key = crate::encode::h264::nal_types(&au).contains(&5);
                d.decode(&au).map(|p| p.map(|p| (p, key)))
            }
            VideoDecoding::Vp8(a, d) => {
                let frame = a.push(seq, ts, m, payload)?;
                let key = crate::encode::vp8::is_keyframe(&frame);
                d.decode(&frame).map(|p| p.map(|p| (p, key)))
            }
        };
        match decoded {
            Ok(p) => p,
            Err(e) => {
                debug!("decode error: {e}");
                None
            }
        }
    }

    fn lost_packets(&self) -> u64 {
        match self {
            VideoDecoding::H264(a, _) => a.lost_packets,
            VideoDecoding::Vp8(a, _) => a.lost_packets,
        }
    }
}

/// Receives RTP, reassembles frames, decodes them, and reads their stamps.
async fn receive_video(
    track: Arc<dyn TrackRemote>,
    tx: mpsc::Sender<Event>,
    _started: Instant,
    codec: VideoCodec,
) {
    let mut decoding = match VideoDecoding::new(codec) {
        Ok(d) => d,
        Err(e) => {
            warn!("cannot create the {codec:?} decoder: {e}");
            return;
        }
    };
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        let Some((pic, keyframe)) = decoding.push(&pkt.header, &pkt.payload) else {
            continue;
        };
        let now_us = monotonic_us();
        let stamp = read_stamp(&pic.y, pic.width as usize, pic.width, pic.height);
        let obs = FrameObservation {
            at: Instant::now(),
            width: pic.width,
            height: pic.height,
            counter: stamp.map(|(c, _)| c),
            latency_ms: stamp
                .map(|(_, ms)| f64::from(crate::clock::stamp_ms(now_us).wrapping_sub(ms))),
            lost_packets: decoding.lost_packets(),
            keyframe,
        };
        if tx.send(Event::Frame(obs)).await.is_err() {
            break;
        }
    }
}

/// Receives Opus RTP, decodes it and analyses the sound.
async fn receive_audio(
    track: Arc<dyn TrackRemote>,
    tx: mpsc::Sender<Event>,
    state: Arc<std::sync::Mutex<Option<AudioReceiver>>>,
) {
    match AudioReceiver::new() {
        Ok(r) => *state.lock().unwrap_or_else(|p| p.into_inner()) = Some(r),
        Err(e) => {
            warn!("cannot create the Opus decoder: {e}");
            return;
        }
    }
    let mut n = 0u64;
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
            continue;
        };
        let decoded_ms = {
            let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(r) = guard.as_mut() else { break };
            if let Err(e) = r.on_packet(&pkt.payload, pkt.header.timestamp, monotonic_us()) {
                debug!("audio decode: {e}");
            }
            r.analyzer().decoded_ms()
        };
        n += 1;
        if n.is_multiple_of(25) && tx.send(Event::AudioProgress(decoded_ms)).await.is_err() {
            break;
        }
    }
}

/// A random session id: 16 chars of [A-Za-z0-9] (~95 bits).
pub fn random_sid() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args_with(file: Option<&std::path::Path>) -> ViewArgs {
        let mut argv = vec!["campeer", "view", "--device", "cam1"];
        let path;
        if let Some(f) = file {
            path = f.to_string_lossy().into_owned();
            argv.extend(["--ice-servers", &path]);
        }
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::View(a) => a,
            other => panic!("expected view, got {other:?}"),
        }
    }

    fn file(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "campeer-view-ice-{}-{}.json",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn ice_servers_come_from_a_json_file_and_are_checked() {
        assert!(ice_servers(&args_with(None)).unwrap().is_empty());
        let ok = file(
            r#"[{"urls": "stun:198.18.0.1:3478"},
                {"urls": ["turn:198.18.0.1:3478?transport=udp"], "username": "1:v", "credential": "c"}]"#,
        );
        let s = ice_servers(&args_with(Some(&ok))).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].urls, ["stun:198.18.0.1:3478"]);
        assert_eq!(s[1].username.as_deref(), Some("1:v"));
        // A TURN server without credentials, or no JSON array: refused, in words.
        let bad = file(r#"[{"urls": "turn:198.18.0.1:3478"}]"#);
        let e = format!("{:#}", ice_servers(&args_with(Some(&bad))).unwrap_err());
        assert!(e.contains("username"), "{e}");
        let junk = file("turn:x");
        let e = format!("{:#}", ice_servers(&args_with(Some(&junk))).unwrap_err());
        assert!(e.contains("not a JSON array"), "{e}");
        for p in [ok, bad, junk] {
            let _ = std::fs::remove_file(p);
        }
    }
}
