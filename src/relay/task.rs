//! The relay task: carries out what [`RelayMachine`] decides against the
//! Janus HTTP API, feeds the forwarder, and publishes [`RelayState`] for
//! the session table and the presence document.

use super::forward::{self, Feed, ForwardStats, Sources, AUDIO_PT, SRTP_KEY_LEN, VIDEO_PT};
use super::janus::{Handle, Janus, JanusError};
use super::machine::{RelayMachine, Step};
use super::{RelayConfig, RelayState, RelayTarget};
use crate::clock::monotonic_us;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// What the daemon tells the relay.
#[derive(Debug)]
pub enum RelayCommand {
    /// A viewer was just handed over: feed the mountpoint.
    HandedOver,
    /// A key was revoked: every current PIN must stop working.
    Revoke,
}

/// The running relay.
pub struct RelayHandle {
    pub state: watch::Receiver<RelayState>,
    pub commands: mpsc::Sender<RelayCommand>,
    pub stats: Arc<ForwardStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Destroys the mountpoint (best effort, bounded) and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .is_err()
        {
            warn!("relay: Janus did not answer the clean-up in time");
        }
        // The forwarder ends with the task (its feed closes); it holds the
        // pipelines, which the daemon stops next.
        self.forwarder.abort();
        let _ = self.forwarder.await;
    }
}

/// Starts the relay task; `device` names the mountpoint. `record` is a
/// file in the state directory where the live mountpoint's id and secret
/// are kept, so a restarted daemon destroys the one it left behind (a
/// crash, a power cut) instead of leaving Janus holding its ports.
pub fn spawn(
    cfg: RelayConfig,
    device: &str,
    sources: Sources,
    record: Option<std::path::PathBuf>,
) -> RelayHandle {
    let (state_tx, state) = watch::channel(RelayState::default());
    let (commands, cmd_rx) = mpsc::channel(64);
    let (stop, stop_rx) = watch::channel(false);
    let stats = Arc::new(ForwardStats::default());
    let (feed_tx, feed_rx) = watch::channel(None);
    let has = (sources.video.is_some(), sources.audio.is_some());
    let forwarder = tokio::spawn(forward::run(sources, feed_rx, stats.clone()));
    let relay = Relay {
        janus: Janus::new(&cfg.janus_url).expect("validated"),
        description: format!("campeer {device}"),
        has_video: has.0,
        has_audio: has.1,
        machine: RelayMachine::new(monotonic_us(), Duration::from_secs(cfg.pin_lifetime_secs)),
        cfg,
        record,
        remote: None,
        viewers: 0,
        state_tx,
        feed_tx,
    };
    let task = tokio::spawn(relay.run(cmd_rx, stop_rx));
    RelayHandle {
        state,
        commands,
        stats,
        stop,
        task,
        forwarder,
    }
}

/// The mountpoint the device made, as far as it knows.
struct Remote {
    handle: Handle,
    id: u64,
    secret: String,
    pin: String,
    feed: Feed,
}

struct Relay {
    cfg: RelayConfig,
    record: Option<std::path::PathBuf>,
    janus: Janus,
    description: String,
    has_video: bool,
    has_audio: bool,
    machine: RelayMachine,
    remote: Option<Remote>,
    viewers: u64,
    state_tx: watch::Sender<RelayState>,
    feed_tx: watch::Sender<Option<Feed>>,
}

fn random_text(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

impl Relay {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<RelayCommand>,
        mut stop: watch::Receiver<bool>,
    ) {
        info!(janus = %self.cfg.janus_url, mode = ?self.cfg.mode, srtp = self.cfg.srtp, "relay: starting");
        self.destroy_left_behind().await;
        loop {
            let now = monotonic_us();
            self.publish(now);
            match self.machine.step(now) {
                Step::Create => self.create(now).await,
                Step::Check => self.check(now).await,
                Step::Rekey => self.rekey(now).await,
                Step::Wait(until) => {
                    let sleep = Duration::from_micros(until.saturating_sub(now));
                    tokio::select! {
                        _ = tokio::time::sleep(sleep) => {}
                        cmd = commands.recv() => match cmd {
                            Some(RelayCommand::HandedOver) => self.machine.handed_over(monotonic_us()),
                            Some(RelayCommand::Revoke) => {
                                info!("relay: a key was revoked; re-creating the mountpoint so its PIN stops working");
                                self.machine.revoke();
                            }
                            None => break,
                        },
                        _ = stop.changed() => break,
                    }
                }
            }
        }
        let _ = self.feed_tx.send(None);
        if let Some(r) = self.remote.take() {
            self.destroy(r).await;
        }
        info!("relay: stopped");
    }

    /// Tells the table and the forwarder what is true now.
    fn publish(&self, now: u64) {
        let target = self
            .remote
            .as_ref()
            .filter(|_| self.machine.is_up())
            .map(|r| RelayTarget {
                janus: self.cfg.viewer_url().to_owned(),
                mountpoint: r.id,
                pin: r.pin.clone(),
                mode: self.cfg.mode,
            });
        let state = RelayState {
            target,
            viewers: if self.machine.is_up() {
                self.viewers
            } else {
                0
            },
        };
        self.state_tx.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
        let feed = self
            .remote
            .as_ref()
            .filter(|_| self.machine.feeding(now, self.viewers))
            .map(|r| r.feed.clone());
        self.feed_tx.send_if_modified(|f| {
            let changed = *f != feed;
            *f = feed;
            changed
        });
    }

    fn failed(&mut self, now: u64, what: &str, e: &JanusError) {
        if e.is_gone() {
            // Nothing left to destroy.
            self.remote = None;
        }
        let delay = self.machine.failed(now, rand::random::<f64>());
        self.viewers = 0;
        warn!(janus = %self.cfg.janus_url, "relay: {what} failed: {e}; relayed viewers must wait; retrying in {} ms", delay.as_millis());
    }

    async fn create(&mut self, now: u64) {
        if let Some(old) = self.remote.take() {
            self.destroy(old).await;
        }
        match self.create_mountpoint().await {
            Ok(r) => {
                info!(mountpoint = r.id, video = ?r.feed.video, audio = ?r.feed.audio,
                      "relay: mountpoint created on Janus; viewers can be handed over");
                self.remember(&r);
                self.remote = Some(r);
                self.viewers = 0;
                self.machine.created(monotonic_us());
            }
            Err(e) => self.failed(now, "creating the mountpoint", &e),
        }
    }

    async fn create_mountpoint(&self) -> Result<Remote, JanusError> {
        let handle = self.janus.attach("janus.plugin.streaming").await?;
        let secret = random_text(32);
        let pin = random_text(18);
        let srtp_key = self.cfg.srtp.then(|| {
            let mut k = [0u8; SRTP_KEY_LEN];
            rand::thread_rng().fill_bytes(&mut k);
            k
        });
        let mut media = vec![];
        if self.has_video {
            media.push(
                json!({"type": "video", "mid": "v", "port": 0, "rtcpport": 0,
                "pt": VIDEO_PT, "codec": "h264",
                "fmtp": "profile-level-id=42e01f;packetization-mode=1"}),
            );
        }
        if self.has_audio {
            media.push(
                json!({"type": "audio", "mid": "a", "port": 0, "pt": AUDIO_PT,
                "codec": "opus", "fmtp": "minptime=10;useinbandfec=1"}),
            );
        }
        let mut body = json!({
            "request": "create", "admin_key": self.cfg.admin_key, "type": "rtp",
            "description": self.description, "is_private": true, "permanent": false,
            "secret": secret, "pin": pin, "media": media,
        });
        if let Some(k) = &srtp_key {
            body["srtpsuite"] = json!(80);
            body["srtpcrypto"] = json!(STANDARD.encode(k));
        }
        let data = match self.janus.request(handle, body).await {
            Ok(d) => d,
            Err(e) => {
                let _ = self.janus.destroy(handle.session).await;
                return Err(e);
            }
        };
        let id = data["stream"]["id"].as_u64().ok_or_else(|| bad(&data))?;
        let feed = self.feed_from(&data["stream"]["ports"], srtp_key).await?;
        Ok(Remote {
            handle,
            id,
            secret,
            pin,
            feed,
        })
    }

    /// The ports Janus bound, as addresses on the media host.
    async fn feed_from(
        &self,
        ports: &Value,
        srtp_key: Option<[u8; SRTP_KEY_LEN]>,
    ) -> Result<Feed, JanusError> {
        let host = self.cfg.media_host();
        let ip = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip())
            .ok_or_else(|| {
                JanusError::Transport(anyhow::anyhow!("cannot resolve the media host {host:?}"))
            })?;
        let port = |kind: &str, key: &str| -> Option<SocketAddr> {
            ports.as_array()?.iter().find(|p| p["type"] == kind)?[key]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .map(|p| SocketAddr::new(ip, p))
        };
        let feed = Feed {
            video: port("video", "port"),
            video_rtcp: port("video", "rtcp_port"),
            audio: port("audio", "port"),
            srtp_key,
        };
        if (self.has_video && feed.video.is_none()) || (self.has_audio && feed.audio.is_none()) {
            return Err(bad(ports));
        }
        Ok(feed)
    }

    async fn check(&mut self, now: u64) {
        let Some(r) = &self.remote else {
            self.machine.failed(now, 0.0);
            return;
        };
        let body = json!({"request": "info", "id": r.id, "secret": r.secret});
        match self.janus.request(r.handle, body).await {
            Ok(data) => {
                let viewers = data["info"]["viewers"].as_u64().unwrap_or(0);
                if viewers != self.viewers {
                    info!(viewers, "relay: viewers watching through Janus");
                }
                self.viewers = viewers;
                self.machine.checked(monotonic_us());
            }
            Err(e) => self.failed(now, "checking the mountpoint", &e),
        }
    }

    async fn rekey(&mut self, now: u64) {
        let Some(r) = &mut self.remote else {
            self.machine.failed(now, 0.0);
            return;
        };
        let pin = random_text(18);
        let body = json!({"request": "edit", "id": r.id, "secret": r.secret, "new_pin": pin});
        match self.janus.request(r.handle, body).await {
            Ok(_) => {
                info!(
                    mountpoint = r.id,
                    "relay: PIN replaced (its lifetime ended); viewers watching stay"
                );
                r.pin = pin;
                self.machine.rekeyed(monotonic_us());
            }
            Err(e) => self.failed(now, "replacing the PIN", &e),
        }
    }

    async fn destroy(&self, r: Remote) {
        self.destroy_mountpoint(r.handle, r.id, &r.secret).await;
        let _ = self.janus.destroy(r.handle.session).await;
        if let Some(path) = &self.record {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn destroy_mountpoint(&self, h: Handle, id: u64, secret: &str) {
        let body = json!({"request": "destroy", "id": id, "secret": secret});
        match self.janus.request(h, body).await {
            Ok(_) => info!(mountpoint = id, "relay: mountpoint destroyed"),
            Err(e) => info!(mountpoint = id, "relay: destroying the old mountpoint: {e}"),
        }
    }

    /// Keeps the live mountpoint's id and secret in the state directory.
    fn remember(&self, r: &Remote) {
        let Some(path) = &self.record else { return };
        let text = json!({"janus": self.cfg.janus_url, "id": r.id, "secret": r.secret}).to_string();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = crate::private_file::write_private(path, text.as_bytes(), None) {
            warn!(path = %path.display(), "relay: cannot record the mountpoint (a crash would leave it on Janus): {e}");
        }
    }

    /// Destroys the mountpoint an earlier run recorded, if it is on this
    /// Janus (best effort: Janus may have restarted since).
    async fn destroy_left_behind(&self) {
        let Some(path) = &self.record else { return };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let _ = std::fs::remove_file(path);
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let (Some(id), Some(secret)) = (v["id"].as_u64(), v["secret"].as_str()) else {
            return;
        };
        if v["janus"] != self.cfg.janus_url.as_str() {
            return;
        }
        info!(
            mountpoint = id,
            "relay: destroying the mountpoint an earlier run left on Janus"
        );
        if let Ok(h) = self.janus.attach("janus.plugin.streaming").await {
            self.destroy_mountpoint(h, id, secret).await;
            let _ = self.janus.destroy(h.session).await;
        }
    }
}

fn bad(v: &Value) -> JanusError {
    JanusError::Transport(anyhow::anyhow!("unexpected reply from Janus: {v}"))
}
