//! The daemon: starts the media pipeline, the MQTT link and the session
//! table, and runs until told to stop.
//!
//! One task owns the session table and reacts to three inputs: signaling
//! messages from the link, events from sessions, and a periodic tick (early
//! candidate expiry, presence, stats). Shutdown closes every session with
//! `bye`, publishes offline presence and stops within about two seconds.

use crate::access::AccessState;
use crate::broker::{BrokerKey, BrokerSettings, ManagedBroker};
use crate::config::{Config, MqttConfig, MqttTarget};
use crate::control::cdev;
use crate::control::config::Direction;
use crate::control::gpio::GpioBank;
use crate::control::rpc::ControlContext;
use crate::encode::audio_pipeline::AudioPipeline;
use crate::encode::h264::EncoderSettings;
use crate::encode::pipeline::VideoPipeline;
use crate::keystore::ClaimDecision;
use crate::media::audio::{open_audio_source, AudioSettings, AudioSourceSpec};
use crate::media::{open_video_source, VideoSourceSpec};
use crate::rtc::engine::{Role, RtcEngine};
use crate::rtc::metrics::Metrics;
use crate::rtc::session::{Outbox, SessionContext, SessionEvent, TaskSpawner};
use crate::rtc::table::{SessionTable, TableLimits};
use crate::signaling::auth::KeyEntry;
use crate::signaling::messages::ByeReason;
use crate::signaling::mqtt::{LinkEvent, MqttLink};
use crate::signaling::presence::{AudioInfo, AuthMode, Presence, VideoInfo};
use crate::signaling::presence::{ControlDirection, ControlInfo};
use crate::signaling::topics::Topics;
use crate::supervisor::{Health, MediaHealth, Supervisor};
use crate::web::ClaimOutcome;
use crate::web::{PageConfig, PageIceServer};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Options that are not part of the configuration file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How often a stats line is logged (0 = never).
    pub stats_interval: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            stats_interval: Duration::from_secs(10),
        }
    }
}

/// Shortest gap between two presence publications caused by session changes.
const PRESENCE_MIN_GAP: Duration = Duration::from_millis(500);
/// How long shutdown waits for sessions to close.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1200);

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Outputs first, before the broker, the page or the camera: each goes to
    // its safe value, then to its initial one.
    let gpio = if config.gpio.is_empty() {
        GpioBank::empty()
    } else {
        cdev::open_bank(&config.gpio).context("gpio")?
    };
    // Keys before the broker: its password file is made from them.
    let (authz, access) =
        AccessState::start(&config, crate::clock::monotonic_us()).context("access")?;
    let access = Arc::new(std::sync::Mutex::new(access));
    let broker = start_broker(&config, &broker_keys(lock(&access).keys()))?;
    let (mqtt_config, target, client_id) = match &broker {
        Some(b) => own_broker_link(&config.mqtt, b)?,
        None => (
            config.mqtt.clone(),
            MqttTarget::parse(&config.mqtt.url).context("mqtt url")?,
            config.effective_client_id(),
        ),
    };
    let topics = Topics::new(&config.mqtt.prefix, &config.device_id);
    info!(device = %config.device_id, broker = %target, prefix = %config.mqtt.prefix,
          video = %config.video.source, max_sessions = config.webrtc.max_sessions, "campeer starting");

    let video = start_video(&config)?;
    let audio = start_audio(&config)?;
    let audio_info = audio.as_ref().map(|_| AudioInfo {
        codec: "opus".into(),
        rate: 48_000,
        channels: config.audio.channels,
    });
    let video_info = video.as_ref().map(|p| {
        let f = p.format();
        VideoInfo {
            codec: "H264".into(),
            width: f.width,
            height: f.height,
            fps: f.fps,
        }
    });

    let _input_watcher = gpio.spawn_input_watcher().context("gpio inputs")?;
    let controls: Vec<ControlInfo> = gpio
        .controls()
        .into_iter()
        .map(|c| ControlInfo {
            name: c.name,
            direction: match c.direction {
                Direction::Input => ControlDirection::Input,
                Direction::Output => ControlDirection::Output,
            },
        })
        .collect();
    let auth_mode = if authz.is_open() {
        AuthMode::Open
    } else {
        AuthMode::Signed
    };

    let t = Instant::now();
    let engine = RtcEngine::new(&config.webrtc, Role::Answerer)?;
    info!(
        ms = t.elapsed().as_millis() as u64,
        "DTLS certificate ready"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let http_task = start_http(
        &config,
        broker.as_ref(),
        authz.mode(),
        access.clone(),
        stop_rx.clone(),
    )
    .await;
    let offline = Presence::offline(&config.device_id).to_json().into_bytes();
    let (link, mut link_rx, link_task) = MqttLink::start(
        &mqtt_config,
        &target,
        &client_id,
        topics.clone(),
        offline.clone(),
        stop_rx,
    )
    .context("MQTT connection")?;

    let presence = |sessions: usize, nonce: Option<&str>| {
        Presence::online(
            &config.device_id,
            env!("CARGO_PKG_VERSION"),
            sessions,
            config.webrtc.max_sessions,
            auth_mode,
            video_info.clone(),
            audio_info.clone(),
            controls.clone(),
        )
        .with_nonce(nonce)
    };
    // device.info answers with the latest presence document.
    let current = Arc::new(std::sync::Mutex::new(presence(0, authz.nonce()).to_json()));
    let presence_fn = {
        let current = current.clone();
        Arc::new(move || {
            let text = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
        })
    };
    let keyframe_fn = {
        let video = video.clone();
        Arc::new(move || {
            if let Some(v) = &video {
                v.request_keyframe();
            }
        })
    };
    let control = Arc::new(ControlContext::new(gpio.clone(), presence_fn, keyframe_fn));
    let publish_presence = |table: &SessionTable| {
        let text = presence(table.len(), table.authz().nonce()).to_json();
        *current.lock().unwrap_or_else(|p| p.into_inner()) = text.clone();
        link.publish_status(text.into_bytes());
    };

    let metrics = Arc::new(Metrics::default());
    let outbox = Arc::new(link.clone()) as Arc<dyn Outbox>;
    let ctx = Arc::new(SessionContext {
        engine,
        audio: audio.clone(),
        control,
        video: video.clone(),
        outbox: outbox.clone(),
        connect_timeout: Duration::from_secs(config.webrtc.connect_timeout_secs),
        disconnected_timeout: Duration::from_secs(config.webrtc.disconnected_timeout_secs),
        metrics: metrics.clone(),
    });
    let (ev_tx, mut ev_rx) = mpsc::channel(256);
    let mut table = SessionTable::new(
        Arc::new(TaskSpawner(ctx)),
        outbox,
        authz,
        &config.device_id,
        TableLimits {
            max_sessions: config.webrtc.max_sessions,
            max_pending: config.webrtc.max_pending,
            max_payload: config.mqtt.max_payload,
            offer_rate: config.webrtc.offer_rate,
            offer_burst: config.webrtc.offer_burst,
        },
        ev_tx,
    );

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut supervisor = Supervisor::new();
    let mut health = MediaHealth::default();
    let mut pinged_at = Instant::now();
    let mut presence_dirty = false;
    let mut presence_at = Instant::now() - PRESENCE_MIN_GAP;
    let mut stats_at = Instant::now();
    let mut last_frames = video
        .as_ref()
        .map(|p| p.stats().frames_encoded)
        .unwrap_or(0);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ev = link_rx.recv() => match ev {
                Some(LinkEvent::Connected) => {
                    let status = format!("online as {} on {}", config.device_id, target);
                    if !supervisor.is_ready() {
                        info!("{status}");
                    }
                    supervisor.ready(&status);
                    publish_presence(&table);
                    presence_at = Instant::now();
                    presence_dirty = false;
                }
                Some(LinkEvent::Disconnected) => {}
                Some(LinkEvent::Message { sid, payload }) => {
                    let before = table.len();
                    table.handle_message(&sid, &payload, crate::clock::monotonic_us());
                    presence_dirty |= table.len() != before;
                }
                None => {
                    warn!("MQTT link task ended unexpectedly");
                    break;
                }
            },
            Some(ev) = ev_rx.recv() => {
                if let SessionEvent::Ended { .. } = ev {
                    presence_dirty |= table.handle_event(ev);
                } else {
                    table.handle_event(ev);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let now_us = crate::clock::monotonic_us();
                table.expire(now_us);
                if table.rotate_nonce_if_due(now_us, crate::keystore::random_nonce) {
                    presence_dirty = true;
                }
                let reloaded = lock(&access).reload_if_changed();
                if let Some(keys) = reloaded {
                    if let Some(b) = &broker {
                        if let Err(e) = b.update_keys(&broker_keys(&keys)) {
                            warn!("the own broker did not take the new keys: {e}");
                        }
                    }
                    let closed = table.set_keys(keys);
                    if closed > 0 {
                        info!(closed, "sessions of revoked keys closed");
                    }
                }
                if table.key_used(crate::keystore::ADMIN_KEY) {
                    lock(&access).admin_used();
                }
                if let Some(every) = supervisor.ping_every() {
                    if now.duration_since(pinged_at) >= every {
                        let verdict = video
                            .as_ref()
                            .map(|p| health.check(&p.stats(), crate::clock::monotonic_us()))
                            .unwrap_or(Health::Ok);
                        if verdict == Health::Ok {
                            supervisor.alive();
                            pinged_at = now;
                        } else {
                            // No ping: systemd's watchdog restarts the daemon.
                            warn!(?verdict, "media loop stalled; withholding the watchdog ping");
                        }
                    }
                }
                if presence_dirty && now.duration_since(presence_at) >= PRESENCE_MIN_GAP {
                    publish_presence(&table);
                    presence_at = now;
                    presence_dirty = false;
                }
                if !opts.stats_interval.is_zero() && now.duration_since(stats_at) >= opts.stats_interval {
                    let secs = now.duration_since(stats_at).as_secs_f64();
                    stats_at = now;
                    let lat = metrics.take_send_latency();
                    let (fps, encode_ms) = match &video {
                        Some(p) => {
                            let s = p.stats();
                            let fps = (s.frames_encoded - last_frames) as f64 / secs;
                            last_frames = s.frames_encoded;
                            let avg = if s.frames_encoded > 0 { s.total_encode_us as f64 / s.frames_encoded as f64 / 1000.0 } else { 0.0 };
                            (fps, avg)
                        }
                        None => (0.0, 0.0),
                    };
                    info!(sessions = table.len(), fps = format!("{fps:.1}"), encode_ms = format!("{encode_ms:.2}"),
                          send_p50_us = lat.p50_us, send_p95_us = lat.p95_us, send_samples = lat.samples,
                          keyframe_requests = metrics.keyframe_requests(), "stats");
                }
            }
        }
    }

    info!(sessions = table.len(), "shutting down");
    supervisor.stopping();
    table.close_all(ByeReason::Shutdown);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !table.is_empty() {
        match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
            Ok(Some(ev)) => {
                table.handle_event(ev);
            }
            _ => break,
        }
    }
    match gpio.safe_all() {
        Ok(()) if !config.gpio.is_empty() => info!("every output is at its safe value"),
        Ok(()) => {}
        Err(e) => warn!("could not put every output in its safe state: {e}"),
    }
    link.publish_status(offline);
    link.disconnect();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_millis(1000), link_task).await;
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_millis(300), t).await;
    }
    if let Some(b) = broker {
        // Blocking: SIGTERM to Mosquitto and a wait for it (bounded).
        let _ = tokio::task::spawn_blocking(move || b.stop()).await;
    }
    // Sessions are gone; dropping the table drops the last other references
    // to the pipelines, so their threads can be joined.
    drop(table);
    if let Some(v) = video {
        match Arc::try_unwrap(v) {
            Ok(p) => p.stop(),
            Err(_) => {
                warn!("video pipeline still referenced at exit; threads end with the process")
            }
        }
    }
    if let Some(a) = audio {
        match Arc::try_unwrap(a) {
            Ok(p) => p.stop(),
            Err(_) => {
                warn!("audio pipeline still referenced at exit; its thread ends with the process")
            }
        }
    }
    info!("stopped");
    Ok(())
}

fn start_video(config: &Config) -> anyhow::Result<Option<Arc<VideoPipeline>>> {
    let spec = VideoSourceSpec::parse(&config.video.source)?;
    if matches!(spec, VideoSourceSpec::None) {
        info!("no video source configured");
        return Ok(None);
    }
    let v = &config.video;
    let (w, h, fps) = (v.width, v.height, v.fps);
    let settings = EncoderSettings {
        width: w,
        height: h,
        fps,
        bitrate: v.bitrate,
        keyframe_interval: v.keyframe_interval,
    };
    let reopen_spec = spec.clone();
    let reopen = Box::new(move || open_video_source(&reopen_spec, w, h, fps));
    let pipeline = match open_video_source(&spec, w, h, fps) {
        Ok(source) => {
            let f = source.format().clone();
            info!(source = %spec, width = f.width, height = f.height, fps = f.fps, format = %f.pixel_format, "video source open");
            let settings = EncoderSettings {
                width: f.width,
                height: f.height,
                fps: f.fps,
                ..settings
            };
            VideoPipeline::start_with_reopen(source, reopen, settings)?
        }
        // A camera unplugged at boot may come later: keep trying, stay up.
        Err(e) if matches!(spec, VideoSourceSpec::V4l2(_)) => {
            warn!(source = %spec, "camera not available yet: {e}; retrying in the background");
            VideoPipeline::start_without_source(reopen, settings)?
        }
        Err(e) => return Err(e.into()),
    };
    pipeline.set_stamp(v.stamp);
    pipeline.set_vp8_bitrate(v.vp8_bitrate.unwrap_or(v.bitrate));
    Ok(Some(Arc::new(pipeline)))
}

fn start_broker(config: &Config, keys: &[BrokerKey]) -> anyhow::Result<Option<ManagedBroker>> {
    if !config.broker.embedded {
        return Ok(None);
    }
    let listen: Option<SocketAddr> = match config.broker.listen.as_str() {
        "" => None,
        a => Some(a.parse().context("broker.listen")?),
    };
    let settings = BrokerSettings {
        device_id: config.device_id.clone(),
        prefix: config.mqtt.prefix.clone(),
        listen,
        // broker.ws_listen is served by the page server (start_http),
        // under its guards.
        ws_listen: None,
        mosquitto: config.broker.mosquitto.clone(),
        open: config.access.is_open(),
    };
    Ok(Some(ManagedBroker::start(settings, keys)?))
}

/// The keys in force, for the own broker's password file.
fn broker_keys(keys: &[KeyEntry]) -> Vec<BrokerKey> {
    keys.iter()
        .map(|k| BrokerKey {
            id: k.id.clone(),
            secret: k.secret.clone(),
        })
        .collect()
}

/// The device's link to its own broker: the loopback listener, with the
/// broker's random device login replacing whatever `[mqtt]` says about an
/// external broker's credentials and TLS.
fn own_broker_link(
    mqtt: &MqttConfig,
    broker: &ManagedBroker,
) -> anyhow::Result<(MqttConfig, MqttTarget, String)> {
    let (client_id, user, password) = broker.device_login();
    let mut target = MqttTarget::parse(&broker.local_url()).context("own broker URL")?;
    target.username = Some(user);
    target.password = Some(password);
    let mut cfg = mqtt.clone();
    cfg.username = None;
    cfg.password_file = None;
    cfg.ca_file = None;
    cfg.client_cert = None;
    cfg.client_key = None;
    Ok((cfg, target, client_id))
}

/// The access state, shared by the daemon loop and the page server.
type SharedAccess = Arc<std::sync::Mutex<AccessState>>;

/// The access state; a poisoned lock only means a panic mid-update of
/// plain data, which stays usable.
fn lock(a: &SharedAccess) -> std::sync::MutexGuard<'_, AccessState> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the viewer page; a port that cannot be bound is logged, and the
/// daemon streams on without the page.
async fn start_http(
    config: &Config,
    broker: Option<&ManagedBroker>,
    auth: &str,
    access: SharedAccess,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.http.listen.is_empty() {
        return None;
    }
    let listener = match tokio::net::TcpListener::bind(&config.http.listen).await {
        Ok(l) => l,
        Err(e) => {
            warn!(listen = %config.http.listen, "viewer page not served: cannot listen: {e}");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    // The page reaches the broker at /mqtt on its own server.
    let mqtt = broker.map(|b| b.bridge_addr());
    let page = PageConfig {
        device_id: config.device_id.clone(),
        prefix: config.mqtt.prefix.clone(),
        ws_url: config.http.ws_url.clone(),
        ws_port: None,
        auth: auth.to_owned(),
        ice_servers: config
            .webrtc
            .ice_servers
            .iter()
            .map(PageIceServer::from)
            .collect(),
        own_broker: broker.is_some(),
        ..PageConfig::default()
    };
    if page.ws_url.is_none() && mqtt.is_none() {
        warn!(
            "the viewer page has no MQTT WebSocket to use: set http.ws_url for an external broker"
        );
    }
    let mut hooks = crate::web::Hooks::default().with_config(&config.http);
    let device_id = config.device_id.clone();
    let a = access.clone();
    hooks.check_key =
        Arc::new(move |id, password| lock(&a).check_password(&device_id, id, password));
    let a = access.clone();
    hooks.claimable = Arc::new(move || lock(&a).claimable(crate::clock::monotonic_us()));
    hooks.claim =
        Arc::new(
            move |from| match lock(&access).claim(crate::clock::monotonic_us(), from) {
                (ClaimDecision::Grant, Some(pair)) => ClaimOutcome::Claimed { pair },
                (ClaimDecision::Refused, _) => ClaimOutcome::Refused,
                _ => ClaimOutcome::Closed,
            },
        );
    if broker.is_some() && !config.broker.ws_listen.is_empty() {
        match tokio::net::TcpListener::bind(&config.broker.ws_listen).await {
            Ok(l) => hooks.ws_listener = Some(l),
            Err(e) => {
                warn!(listen = %config.broker.ws_listen, "MQTT over WebSocket not served there: cannot listen: {e}")
            }
        }
    }
    let host = if addr.ip().is_unspecified() {
        crate::config::default_device_id()
    } else {
        addr.ip().to_string()
    };
    info!(url = %format!("http://{host}:{}/", addr.port()), built = crate::web::page_built(), "viewer page");
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    Some(tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, page, mqtt, hooks, shutdown).await {
            warn!("viewer page server stopped: {e}");
        }
    }))
}

fn start_audio(config: &Config) -> anyhow::Result<Option<Arc<AudioPipeline>>> {
    let spec = AudioSourceSpec::parse(&config.audio.source)?;
    if spec.is_none() {
        info!("no audio source configured");
        return Ok(None);
    }
    let a = &config.audio;
    let settings = AudioSettings {
        rate: a.rate,
        channels: a.channels,
        bitrate: a.bitrate,
    };
    let (rate, channels) = (a.rate, a.channels);
    let reopen_spec = spec.clone();
    let reopen = Box::new(move || open_audio_source(&reopen_spec, rate, channels));
    let pipeline = match open_audio_source(&spec, rate, channels) {
        Ok(source) => {
            info!(source = %spec, pcm = %source.format().name, rate = source.format().rate,
                  channels = source.format().channels, "audio source open");
            AudioPipeline::start(source, reopen, settings)?
        }
        Err(e) => {
            // A USB microphone may be plugged in later: keep retrying.
            warn!(source = %spec, "audio source not available yet: {e}; retrying in the background");
            AudioPipeline::start_without_source(reopen, settings)?
        }
    };
    Ok(Some(Arc::new(pipeline)))
}
