//! The daemon: starts the media pipeline, the MQTT link and the session
//! table, and runs until told to stop.
//!
//! One task owns the session table and reacts to three inputs: signaling
//! messages from the link, events from sessions, and a periodic tick (early
//! candidate expiry, nonce rotation, key reloads, presence, watchdog,
//! stats). What the tick decides about presence, the watchdog and stats is
//! [`housekeeping`], pure and tested in simulated time; this module only
//! carries it out. Shutdown closes every session with `bye`, publishes
//! offline presence and stops within about two seconds.

pub mod housekeeping;
mod ice;

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
use crate::media::{open_video_source_with, H264Request, VideoSourceSpec};
use crate::relay::task::{RelayCommand, RelayHandle};
use crate::relay::RelayState;
use crate::rtc::engine::{Role, RtcEngine};
use crate::rtc::metrics::Metrics;
use crate::rtc::session::{Outbox, SessionContext, SessionEvent, TaskSpawner};
use crate::rtc::table::{SessionTable, TableLimits};
use crate::signaling::auth::KeyEntry;
use crate::signaling::messages::ByeReason;
use crate::signaling::mqtt::{LinkEvent, MqttLink};
use crate::signaling::presence::{AudioInfo, AuthMode, Presence, VideoInfo};
use crate::signaling::presence::{ControlDirection, ControlInfo, RelayInfo};
use crate::signaling::topics::Topics;
use crate::supervisor::{Health, MediaHealth, Supervisor};
use crate::web::ClaimOutcome;
use crate::web::{PageConfig, PageIceServer};
use anyhow::Context;
use housekeeping::{EncodeTotals, Housekeeping, TickActions, TickInput};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

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

/// How long shutdown waits for sessions to close.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1200);
/// The housekeeping tick.
const TICK: Duration = Duration::from_millis(250);

/// Checks that need I/O, before anything starts: the MQTT TLS and password
/// files of an external broker can be read and parsed (validation only
/// checked that the settings agree). Key files are read by
/// [`AccessState::start`], GPIO chips opened by the daemon itself; each
/// failure names the file or key it is about.
pub fn startup_checks(config: &Config) -> anyhow::Result<()> {
    if config.broker.embedded {
        return Ok(());
    }
    let target = MqttTarget::parse(&config.mqtt.url).context("mqtt.url")?;
    crate::signaling::mqtt_options::check(&config.mqtt, &target)
        .map_err(|e| anyhow::anyhow!("invalid {}: {}", e.setting.key(), e.message))
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    startup_checks(&config)?;
    let mut daemon = Daemon::start(config, opts).await?;
    daemon.serve(shutdown).await;
    daemon.stop().await;
    Ok(())
}

/// What the presence document says besides the session count and nonce.
struct PresenceInfo {
    device_id: String,
    max_sessions: usize,
    auth: AuthMode,
    video: Option<VideoInfo>,
    audio: Option<AudioInfo>,
    controls: Vec<ControlInfo>,
    /// `Some` while a relay is configured.
    relay: Option<RelayInfo>,
}

impl PresenceInfo {
    fn online(&self, sessions: usize, nonce: Option<&str>) -> Presence {
        Presence::online(
            &self.device_id,
            env!("CARGO_PKG_VERSION"),
            sessions,
            self.max_sessions,
            self.auth,
            self.video.clone(),
            self.audio.clone(),
            self.controls.clone(),
        )
        .with_nonce(nonce)
        .with_relay(self.relay.clone())
    }
}

fn relay_kbytes(stats: &crate::relay::forward::ForwardStats) -> u64 {
    stats
        .payload_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
        / 1000
}

fn relay_info(viewers: u64, up: bool) -> RelayInfo {
    RelayInfo {
        state: if up { "up" } else { "down" }.into(),
        viewers,
    }
}

/// The relay's next state change; never, without a relay.
async fn relay_changed(relay: &mut Option<RelayHandle>) -> RelayState {
    let Some(r) = relay else {
        return std::future::pending().await;
    };
    if r.state.changed().await.is_err() {
        // The relay task ended: nothing will change any more.
        return std::future::pending().await;
    }
    r.state.borrow_and_update().clone()
}

/// The running daemon: everything the loop owns.
struct Daemon {
    config: Config,
    target: MqttTarget,
    gpio: GpioBank,
    access: SharedAccess,
    broker: Option<ManagedBroker>,
    video: Option<Arc<VideoPipeline>>,
    audio: Option<Arc<AudioPipeline>>,
    link: MqttLink,
    link_rx: mpsc::Receiver<LinkEvent>,
    link_task: tokio::task::JoinHandle<()>,
    ha_task: Option<tokio::task::JoinHandle<()>>,
    /// The role of the Home Assistant key, for the bridge.
    ha_role: watch::Sender<Option<crate::control::config::Role>>,
    http_task: Option<tokio::task::JoinHandle<()>>,
    stop_tx: watch::Sender<bool>,
    table: SessionTable,
    ev_rx: mpsc::Receiver<SessionEvent>,
    whep: Arc<crate::web::whep::Whep>,
    whep_rx: mpsc::Receiver<crate::web::whep::Command>,
    /// Byes from pages going away (`POST /bye/{sid}`).
    bye_rx: mpsc::Receiver<(String, Vec<u8>)>,
    metrics: Arc<Metrics>,
    presence: PresenceInfo,
    /// The latest presence document, for `device.info`.
    current: Arc<std::sync::Mutex<String>>,
    offline: Vec<u8>,
    supervisor: Supervisor,
    health: MediaHealth,
    chores: Housekeeping,
    relay: Option<RelayHandle>,
}

impl Daemon {
    /// Outputs, keys, broker, media, page, link and session table, in
    /// that order.
    async fn start(config: Config, opts: RunOptions) -> anyhow::Result<Daemon> {
        // Outputs first, before the broker, the page or the camera: each
        // goes to its safe value, then to its initial one.
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
        // Inputs are polled by their own task for as long as the bank lives.
        drop(gpio.spawn_input_watcher().context("gpio inputs")?);
        let presence = presence_info(&config, authz.is_open(), &video, audio.is_some(), &gpio);

        let (engine, ice_source) = rtc_engine(&config)?;
        let snapshot = video.as_ref().map(|v| {
            Arc::new(crate::snapshot::Snapshotter::new(
                Arc::new(Arc::downgrade(v)) as Arc<dyn crate::snapshot::LatestFrame>,
            ))
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        // WHEP sessions are table sessions: at most max_sessions of them,
        // plus a few being refused at the limit.
        let (whep, whep_rx) = crate::web::whep::Whep::new(config.webrtc.max_sessions + 4);
        drop(whep.spawn_ticker());
        let (bye_tx, bye_rx) = mpsc::channel(crate::web::bye::BYE_QUEUE);
        let http_task = start_http(
            &config,
            broker.as_ref(),
            authz.mode(),
            access.clone(),
            HttpParts {
                whep: whep.clone(),
                snapshot: snapshot.clone(),
                bye: bye_tx,
            },
            stop_rx.clone(),
        )
        .await;
        let offline = Presence::offline(&config.device_id).to_json().into_bytes();
        let (link, link_rx, link_task) = MqttLink::start(
            &mqtt_config,
            &target,
            &client_id,
            topics.clone(),
            offline.clone(),
            stop_rx,
        )
        .context("MQTT connection")?;
        let (ha_role, ha_role_rx) = watch::channel(ha_key_role(&config, lock(&access).keys()));
        let ha_task = start_homeassistant(
            &config,
            ha_role_rx,
            &topics,
            &presence.controls,
            video.is_some(),
            &gpio,
            &snapshot,
            (&mqtt_config, &target, &client_id),
            stop_tx.subscribe(),
        )?;

        let current = Arc::new(std::sync::Mutex::new(
            presence.online(0, authz.nonce()).to_json(),
        ));
        let control = control_context(&gpio, &current, &video, &snapshot);
        let metrics = Arc::new(Metrics::default());
        let outbox = Arc::new(crate::web::whep::RoutingOutbox {
            mqtt: Arc::new(link.clone()),
            whep: whep.clone(),
        }) as Arc<dyn Outbox>;
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
        let (table, ev_rx) = session_table(&config, ctx, outbox, authz, ice_source);
        let relay = start_relay(&config, &video, &audio);
        let supervisor = Supervisor::new();
        let chores = Housekeeping::new(
            crate::clock::monotonic_us(),
            supervisor.ping_every().map(|d| d.as_micros() as u64),
            opts.stats_interval.as_micros() as u64,
            encode_totals(video.as_deref()),
        );
        Ok(Daemon {
            config,
            target,
            gpio,
            access,
            broker,
            video,
            audio,
            link,
            link_rx,
            link_task,
            ha_task,
            ha_role,
            http_task,
            stop_tx,
            table,
            ev_rx,
            whep,
            whep_rx,
            bye_rx,
            metrics,
            presence,
            current,
            offline,
            supervisor,
            health: MediaHealth::default(),
            chores,
            relay,
        })
    }

    /// The loop: link messages, session events and the tick, until
    /// `shutdown` resolves or the link task ends.
    async fn serve(&mut self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                ev = self.link_rx.recv() => match ev {
                    Some(ev) => self.on_link(ev),
                    None => {
                        warn!("MQTT link task ended unexpectedly");
                        return;
                    }
                },
                Some((sid, payload)) = self.bye_rx.recv() => {
                    debug!(%sid, "bye by HTTP, from a page going away");
                    self.on_viewer_message(&sid, &payload);
                }
                Some(cmd) = self.whep_rx.recv() => {
                    let before = self.table.len();
                    crate::web::whep::apply(&mut self.table, cmd, crate::clock::monotonic_us());
                    if self.table.len() != before {
                        self.chores.presence_changed();
                    }
                }
                Some(ev) = self.ev_rx.recv() => {
                    if let SessionEvent::Ended { sid, .. } = &ev {
                        self.whep.ended(sid);
                    }
                    if self.table.handle_event(ev) {
                        self.chores.presence_changed();
                    }
                }
                state = relay_changed(&mut self.relay) => {
                    self.table.set_relay(state.target);
                    self.presence.relay = Some(relay_info(state.viewers, self.table_relay_up()));
                    self.chores.presence_changed();
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn table_relay_up(&self) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.state.borrow().target.is_some())
    }

    /// Tells the relay that a viewer was handed over (it feeds Janus now).
    fn after_message(&mut self) {
        if self.table.take_handed_over() {
            if let Some(r) = &self.relay {
                let _ = r.commands.try_send(RelayCommand::HandedOver);
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                let status = format!("online as {} on {}", self.config.device_id, self.target);
                if !self.supervisor.is_ready() {
                    info!("{status}");
                }
                self.supervisor.ready(&status);
                self.publish_presence();
                self.chores.connected(crate::clock::monotonic_us());
            }
            LinkEvent::Disconnected => {}
            LinkEvent::Message { sid, payload } => self.on_viewer_message(&sid, &payload),
        }
    }

    /// A viewer's message for session `sid`, from MQTT or `POST /bye`.
    fn on_viewer_message(&mut self, sid: &str, payload: &[u8]) {
        let before = self.table.len();
        self.table
            .handle_message(sid, payload, crate::clock::monotonic_us());
        if self.table.len() != before {
            self.chores.presence_changed();
        }
        self.after_message();
    }

    /// Table timers, nonce rotation, key reloads, then what housekeeping
    /// decides.
    fn on_tick(&mut self) {
        let now_us = crate::clock::monotonic_us();
        self.table.expire(now_us);
        if self
            .table
            .rotate_nonce_if_due(now_us, crate::keystore::random_nonce)
        {
            self.chores.presence_changed();
        }
        self.reload_keys();
        let media = match &self.video {
            Some(p) => self.health.check(&p.stats(), now_us),
            None => Health::Ok,
        };
        let actions = self.chores.tick(&TickInput {
            now_us,
            media,
            encode: encode_totals(self.video.as_deref()),
        });
        self.carry_out(actions);
    }

    /// A changed key file: new keys for the table (closing sessions of
    /// revoked keys) and for the own broker's password file.
    fn reload_keys(&mut self) {
        let reloaded = lock(&self.access).reload_if_changed();
        if let Some(keys) = reloaded {
            if let Some(b) = &self.broker {
                if let Err(e) = b.update_keys(&broker_keys(&keys)) {
                    warn!("the own broker did not take the new keys: {e}");
                }
            }
            self.ha_role
                .send_if_modified(|r| replace(r, ha_key_role(&self.config, &keys)));
            let before = self.table.authz().key_ids();
            let closed = self.table.set_keys(keys);
            if closed > 0 {
                info!(closed, "sessions of revoked keys closed");
            }
            let after = self.table.authz().key_ids();
            if before.iter().any(|k| !after.contains(k)) {
                if let Some(r) = &self.relay {
                    let _ = r.commands.try_send(RelayCommand::Revoke);
                }
            }
        }
        if self.table.key_used(crate::keystore::ADMIN_KEY) {
            lock(&self.access).admin_used();
        }
    }

    fn carry_out(&mut self, actions: TickActions) {
        if actions.ping_watchdog {
            self.supervisor.alive();
        }
        if let Some(verdict) = actions.withheld {
            // No ping: systemd's watchdog restarts the daemon.
            warn!(
                ?verdict,
                "media loop stalled; withholding the watchdog ping"
            );
        }
        if actions.publish_presence {
            self.publish_presence();
        }
        if let Some(line) = actions.stats {
            let lat = self.metrics.take_send_latency();
            info!(
                sessions = self.table.len(),
                fps = format!("{:.1}", line.fps),
                encode_ms = format!("{:.2}", line.encode_ms),
                send_p50_us = lat.p50_us,
                send_p95_us = lat.p95_us,
                send_samples = lat.samples,
                keyframe_requests = self.metrics.keyframe_requests(),
                video_kbytes = self.metrics.media_bytes() / 1000,
                relay_kbytes = self.relay.as_ref().map(|r| relay_kbytes(&r.stats)),
                relay_viewers = self.relay.as_ref().map(|r| r.state.borrow().viewers),
                "stats"
            );
        }
    }

    fn publish_presence(&self) {
        let text = self
            .presence
            .online(self.table.len(), self.table.authz().nonce())
            .to_json();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = text.clone();
        self.link.publish_status(text.into_bytes());
    }

    /// Closes every session (`bye`), puts outputs at their safe values,
    /// says offline, then stops the link, the page, the broker and the
    /// pipelines.
    async fn stop(self) {
        let Daemon {
            config,
            gpio,
            broker,
            video,
            audio,
            link,
            link_task,
            ha_task,
            http_task,
            stop_tx,
            mut table,
            mut ev_rx,
            offline,
            supervisor,
            relay,
            ..
        } = self;
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
        if let Some(r) = relay {
            r.stop().await;
        }
        link.publish_status(offline);
        link.disconnect();
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_millis(1000), link_task).await;
        if let Some(t) = ha_task {
            let _ = tokio::time::timeout(Duration::from_millis(600), t).await;
        }
        if let Some(t) = http_task {
            let _ = tokio::time::timeout(Duration::from_millis(300), t).await;
        }
        if let Some(b) = broker {
            // Blocking: SIGTERM to Mosquitto and a wait for it (bounded).
            let _ = tokio::task::spawn_blocking(move || b.stop()).await;
        }
        // Sessions are gone; dropping the table drops the last other
        // references to the pipelines, so their threads can be joined.
        drop(table);
        stop_pipelines(video, audio);
        info!("stopped");
    }
}

fn stop_pipelines(video: Option<Arc<VideoPipeline>>, audio: Option<Arc<AudioPipeline>>) {
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
}

/// The role of the key Home Assistant logs in with, `None` if no key has
/// its id (then Home Assistant may not command).
fn ha_key_role(config: &Config, keys: &[KeyEntry]) -> Option<crate::control::config::Role> {
    keys.iter()
        .find(|k| k.id == config.homeassistant.key)
        .map(|k| k.role)
}

/// Sets `*slot` to `value`; whether that changed it.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// The Home Assistant bridge (its own MQTT connection), when enabled.
#[allow(clippy::too_many_arguments)]
fn start_homeassistant(
    config: &Config,
    role: watch::Receiver<Option<crate::control::config::Role>>,
    topics: &Topics,
    controls: &[ControlInfo],
    has_video: bool,
    gpio: &GpioBank,
    snapshot: &Option<Arc<crate::snapshot::Snapshotter>>,
    (mqtt_config, target, client_id): (&MqttConfig, &MqttTarget, &str),
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !config.homeassistant.enabled {
        return Ok(None);
    }
    let ha = crate::homeassistant::bridge::Bridge {
        discovery: crate::homeassistant::Discovery::new(
            &config.homeassistant,
            topics.base(),
            &config.device_id,
            env!("CARGO_PKG_VERSION"),
            controls
                .iter()
                .map(|c| crate::homeassistant::HaControl {
                    name: c.name.clone(),
                    output: matches!(c.direction, ControlDirection::Output),
                })
                .collect(),
            has_video,
        ),
        config: config.homeassistant.clone(),
        gpio: gpio.clone(),
        snapshot: snapshot.clone(),
        role,
    };
    crate::homeassistant::bridge::start(ha, mqtt_config, target, client_id, stop)
        .map(Some)
        .context("home assistant")
}

fn table_limits(config: &Config) -> TableLimits {
    TableLimits {
        max_sessions: config.webrtc.max_sessions,
        max_pending: config.webrtc.max_pending,
        max_payload: config.mqtt.max_payload,
        offer_rate: config.webrtc.offer_rate,
        offer_burst: config.webrtc.offer_burst,
    }
}

fn encode_totals(video: Option<&VideoPipeline>) -> EncodeTotals {
    video.map_or_else(EncodeTotals::default, |p| {
        let s = p.stats();
        EncodeTotals {
            frames_encoded: s.frames_encoded,
            total_encode_us: s.total_encode_us,
        }
    })
}

fn video_info(p: &VideoPipeline) -> VideoInfo {
    let f = p.format();
    VideoInfo {
        codec: "H264".into(),
        width: f.width,
        height: f.height,
        fps: f.fps,
    }
}

fn control_infos(gpio: &GpioBank) -> Vec<ControlInfo> {
    gpio.controls()
        .into_iter()
        .map(|c| ControlInfo {
            name: c.name,
            direction: match c.direction {
                Direction::Input => ControlDirection::Input,
                Direction::Output => ControlDirection::Output,
            },
        })
        .collect()
}

/// The data channel's context: GPIO, `device.info` (the latest presence
/// document) and keyframe requests.
fn control_context(
    gpio: &GpioBank,
    current: &Arc<std::sync::Mutex<String>>,
    video: &Option<Arc<VideoPipeline>>,
    snapshot: &Option<Arc<crate::snapshot::Snapshotter>>,
) -> Arc<ControlContext> {
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
    Arc::new(
        ControlContext::new(gpio.clone(), presence_fn, keyframe_fn).with_snapshot(snapshot.clone()),
    )
}

fn start_video(config: &Config) -> anyhow::Result<Option<Arc<VideoPipeline>>> {
    let spec = VideoSourceSpec::parse(&config.video.source)?;
    if matches!(spec, VideoSourceSpec::None) {
        info!("no video source configured");
        return Ok(None);
    }
    let v = &config.video;
    if let VideoSourceSpec::Exec(command) = &spec {
        return Ok(Some(Arc::new(start_exec_video(v, command)?)));
    }
    let (w, h, fps) = (v.width, v.height, v.fps);
    let settings = EncoderSettings {
        width: w,
        height: h,
        fps,
        bitrate: v.bitrate,
        keyframe_interval: v.keyframe_interval,
    };
    let h264 = v.v4l2_h264.then_some(H264Request {
        keyframe_interval: v.keyframe_interval,
        bitrate: v.bitrate,
    });
    let reopen_spec = spec.clone();
    let reopen = Box::new(move || open_video_source_with(&reopen_spec, w, h, fps, h264));
    let pipeline = match open_video_source_with(&spec, w, h, fps, h264) {
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

/// An `exec:` source: the command is supervised by the source itself
/// (restarts with backoff), so the pipeline only retries reading from it.
fn start_exec_video(
    v: &crate::config::VideoConfig,
    command: &str,
) -> anyhow::Result<VideoPipeline> {
    use crate::media::exec::{ExecFormat, ExecSettings, ExecSource};
    let format = ExecFormat::parse(&v.exec_format)
        .with_context(|| format!("video.exec_format {:?}", v.exec_format))?;
    let source = ExecSource::start(ExecSettings {
        command: command.to_owned(),
        format,
        on_demand: v.exec_start == "viewer",
        width: v.width,
        height: v.height,
        fps: v.fps,
        keyframe_interval: v.keyframe_interval,
        bitrate: v.bitrate,
    })?;
    info!(source = %format!("exec:{command}"), width = v.width, height = v.height, fps = v.fps,
          format = format.name(), start = %v.exec_start, passthrough = format == ExecFormat::H264,
          "video from a command");
    let settings = EncoderSettings {
        width: v.width,
        height: v.height,
        fps: v.fps,
        bitrate: v.bitrate,
        keyframe_interval: v.keyframe_interval,
    };
    let pipeline = VideoPipeline::start(Box::new(source), settings)?;
    pipeline.set_stamp(v.stamp);
    Ok(pipeline)
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
        homeassistant: config
            .homeassistant
            .enabled
            .then(|| crate::broker::HaRights {
                key_id: config.homeassistant.key.clone(),
                discovery_prefix: config.homeassistant.discovery_prefix.clone(),
            }),
    };
    Ok(Some(ManagedBroker::start(settings, keys)?))
}

/// The keys in force, for the own broker's password and ACL files.
fn broker_keys(keys: &[KeyEntry]) -> Vec<BrokerKey> {
    keys.iter()
        .map(|k| BrokerKey {
            id: k.id.clone(),
            secret: k.secret.clone(),
            role: k.role,
        })
        .collect()
}

/// The device's link to its own broker: its own loopback listener, with the
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
/// What the page server hands to the daemon, or serves from it.
struct HttpParts {
    whep: Arc<crate::web::whep::Whep>,
    snapshot: Option<Arc<crate::snapshot::Snapshotter>>,
    /// `POST /bye/{sid}` (crate::web::bye) into the daemon's loop.
    bye: crate::web::bye::ByeSender,
}

/// The WebRTC engine (its DTLS certificate made now) and the ICE servers
/// it and the viewers get.
fn rtc_engine(
    config: &Config,
) -> anyhow::Result<(RtcEngine, crate::signaling::ice_servers::IceServerSource)> {
    let t = Instant::now();
    let ice_source = ice::ice_source(&config.webrtc)?;
    let engine =
        RtcEngine::new(&config.webrtc, Role::Answerer)?.with_ice_source(ice_source.clone());
    info!(
        ms = t.elapsed().as_millis() as u64,
        "DTLS certificate ready"
    );
    Ok((engine, ice_source))
}

/// What the device says about itself in its status.
fn presence_info(
    config: &Config,
    open: bool,
    video: &Option<Arc<VideoPipeline>>,
    has_audio: bool,
    gpio: &GpioBank,
) -> PresenceInfo {
    PresenceInfo {
        device_id: config.device_id.clone(),
        max_sessions: config.webrtc.max_sessions,
        auth: if open {
            AuthMode::Open
        } else {
            AuthMode::Signed
        },
        video: video.as_ref().map(|p| video_info(p)),
        audio: has_audio.then(|| AudioInfo {
            codec: "opus".into(),
            rate: 48_000,
            channels: config.audio.channels,
        }),
        controls: control_infos(gpio),
        relay: config.relay.enabled.then(|| relay_info(0, false)),
    }
}

/// The session table, its sessions spawned as tasks on `ctx`, handing out
/// `ice_source`'s servers to `ice_request`s; and its event receiver.
fn session_table(
    config: &Config,
    ctx: Arc<SessionContext>,
    outbox: Arc<dyn Outbox>,
    authz: crate::signaling::auth::OfferAuthorizer,
    ice_source: crate::signaling::ice_servers::IceServerSource,
) -> (SessionTable, mpsc::Receiver<SessionEvent>) {
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let mut table = SessionTable::new(
        Arc::new(TaskSpawner(ctx)),
        outbox,
        authz,
        &config.device_id,
        table_limits(config),
        ev_tx,
    );
    table.set_ice_service(crate::rtc::table::IceService {
        source: ice_source,
        ..Default::default()
    });
    (table, ev_rx)
}

/// The relay task, when `[relay]` is enabled.
fn start_relay(
    config: &Config,
    video: &Option<Arc<VideoPipeline>>,
    audio: &Option<Arc<AudioPipeline>>,
) -> Option<RelayHandle> {
    config.relay.enabled.then(|| {
        crate::relay::task::spawn(
            config.relay.clone(),
            &config.device_id,
            crate::relay::forward::Sources {
                video: video.clone(),
                audio: audio.clone(),
            },
            crate::keystore::state_dir(config.access.state_dir.as_deref())
                .ok()
                .map(|d| d.join("relay-mountpoint.json")),
        )
    })
}

async fn start_http(
    config: &Config,
    broker: Option<&ManagedBroker>,
    auth: &str,
    access: SharedAccess,
    parts: HttpParts,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.http.listen.is_empty() {
        return None;
    }
    // With a certificate configured the page is never served in clear: a
    // certificate or key that cannot be used leaves it unserved, and says
    // which file.
    let tls = match config.http.tls_files() {
        Some((cert, key)) => match crate::web::tls::server_config(cert, key) {
            Ok(c) => Some(c),
            Err(e) => {
                error!("viewer page not served: {e}");
                return None;
            }
        },
        None => None,
    };
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
        relay_origin: config
            .relay
            .enabled
            .then(|| crate::web::origin_of(config.relay.viewer_url()))
            .flatten(),
        ..PageConfig::default()
    };
    if page.ws_url.is_none() && mqtt.is_none() {
        warn!(
            "the viewer page has no MQTT WebSocket to use: set http.ws_url for an external broker"
        );
    }
    let mut hooks = crate::web::Hooks::default().with_config(&config.http);
    hooks.whep = Some(parts.whep);
    hooks.snapshot = parts.snapshot;
    hooks.bye = Some(parts.bye);
    let scheme = if tls.is_some() { "https" } else { "http" };
    hooks.tls = tls;
    let device_id = config.device_id.clone();
    let a = access.clone();
    hooks.check_key =
        Arc::new(move |id, password| lock(&a).check_password(&device_id, id, password));
    let a = access.clone();
    hooks.check_token = Arc::new(move |token| lock(&a).check_token(token));
    let a = access.clone();
    hooks.claimable = Arc::new(move || lock(&a).claimable(crate::clock::monotonic_us()));
    hooks.claim =
        Arc::new(
            move |from| match lock(&access).claim(crate::clock::monotonic_us(), from) {
                (ClaimDecision::Grant, Some(pair)) => ClaimOutcome::Claimed { pair },
                (ClaimDecision::Refused, _) => ClaimOutcome::Refused,
                (ClaimDecision::Unrecorded, _) => ClaimOutcome::Unavailable,
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
    info!(url = %format!("{scheme}://{host}:{}/", addr.port()), built = crate::web::page_built(), "viewer page");
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
