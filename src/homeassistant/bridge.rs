//! The MQTT side of Home Assistant discovery: a connection of its own to
//! the device's broker (the daemon's signaling link is left alone), which
//!
//! - publishes every entity's retained config and every control's retained
//!   state when it connects and when Home Assistant announces itself
//!   (`<discovery_prefix>/status` = `online`);
//! - empties the retained config of every entity of this device that no
//!   longer exists (a control removed from the configuration);
//! - pushes a control's state on every change (inputs and outputs alike);
//! - turns commands into GPIO calls through the same `GpioBank` rules as
//!   the data channel (safe values, `max_on_ms`, one `audit` log line per
//!   command, allowed or not), but only while the Home Assistant key
//!   (`homeassistant.key`) has the role `control`: with a `view` key, or
//!   none of that id, every command is refused here too, whatever the
//!   broker let through (an external broker knows nothing of our roles);
//!   refusals are logged at most every [`REFUSAL_LOG_EVERY_US`] with a count;
//! - follows that key's role while running: outputs are advertised as
//!   `switch` and `button` for a `control` key, as read-only
//!   `binary_sensor`s otherwise, and a change re-publishes discovery;
//! - publishes a camera picture every `image_interval_secs` (retained, at
//!   `image_width`), bounded by the snapshotter's concurrency cap.
//!
//! Availability needs nothing here: entities follow the device's status,
//! whose last will the signaling link sets.

use super::{Command, Discovery, HomeAssistantConfig, Retained};
use crate::backoff::Backoff;
use crate::config::{MqttConfig, MqttTarget};
use crate::control::config::Role;
use crate::control::gpio::GpioBank;
use crate::ratelimit::TokenBucket;
use crate::snapshot::Snapshotter;
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

/// Largest camera picture published, bytes: the own broker's payload cap
/// (64 KiB) less room for the topic.
pub const MAX_IMAGE: usize = 63 * 1024;
/// Commands accepted per second (a token bucket with this burst, too).
const COMMAND_RATE: u32 = 10;
/// Refused commands are logged at most once in this long, microseconds.
pub const REFUSAL_LOG_EVERY_US: u64 = 10_000_000;

/// Everything the bridge acts on.
pub struct Bridge {
    pub discovery: Discovery,
    pub config: HomeAssistantConfig,
    pub gpio: GpioBank,
    pub snapshot: Option<Arc<Snapshotter>>,
    /// The role of the key `config.key` names, kept current by the daemon
    /// as keys change; `None` while no key has that id.
    pub role: watch::Receiver<Option<Role>>,
}

/// What becomes of a message on a command topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Retained: stale by definition, never replayed.
    Retained,
    /// Over [`COMMAND_RATE`].
    RateLimited,
    /// Not a valid command for a known output.
    NotACommand,
    /// A valid command, but the Home Assistant key may not command.
    Refused(Command),
    /// Carry it out.
    Run(Command),
}

/// Decides what to do with `payload` on command topic `topic`, given the
/// Home Assistant key's current `role`. Pure but for the bucket.
pub fn verdict(
    d: &Discovery,
    role: Option<Role>,
    topic: &str,
    payload: &[u8],
    retained: bool,
    bucket: &mut TokenBucket,
    now_us: u64,
) -> Verdict {
    if retained {
        return Verdict::Retained;
    }
    if !bucket.try_take(now_us) {
        return Verdict::RateLimited;
    }
    match d.command(topic, payload) {
        None => Verdict::NotACommand,
        Some(cmd) if role == Some(Role::Control) => Verdict::Run(cmd),
        Some(cmd) => Verdict::Refused(cmd),
    }
}

/// Paces a repeated log line: the first at once, then at most one per
/// `every_us`, each saying how many were held back since the last.
#[derive(Debug)]
pub struct LogPacer {
    every_us: u64,
    last_us: Option<u64>,
    held: u64,
}

impl LogPacer {
    pub fn new(every_us: u64) -> Self {
        LogPacer {
            every_us,
            last_us: None,
            held: 0,
        }
    }

    /// `Some(held back since the last line)` when a line is due at `now_us`.
    pub fn due(&mut self, now_us: u64) -> Option<u64> {
        let due = self
            .last_us
            .is_none_or(|t| now_us.saturating_sub(t) >= self.every_us);
        if !due {
            self.held += 1;
            return None;
        }
        self.last_us = Some(now_us);
        Some(std::mem::take(&mut self.held))
    }
}

/// The name of a role for the log: `none` when no key has the id.
fn role_name(role: Option<Role>) -> &'static str {
    role.map_or("none", Role::as_str)
}

/// Starts the bridge's connection with the daemon's MQTT settings (its own
/// client id: `client_id` + `-ha`); it runs until `stop` changes.
pub fn start(
    bridge: Bridge,
    cfg: &MqttConfig,
    target: &MqttTarget,
    client_id: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let opts =
        crate::signaling::mqtt_options::mqtt_options(cfg, target, &format!("{client_id}-ha"))?;
    let (client, eventloop) = AsyncClient::new(opts, 256);
    let backoff = Backoff::new(
        Duration::from_millis(cfg.reconnect_min_ms),
        Duration::from_millis(cfg.reconnect_max_ms),
    );
    Ok(tokio::spawn(run(bridge, client, eventloop, backoff, stop)))
}

fn publish(client: &AsyncClient, r: Retained) {
    if let Err(e) = client.try_publish(r.topic, QoS::AtLeastOnce, true, r.payload) {
        warn!("home assistant: message not queued: {e}");
    }
}

fn announce(b: &Bridge, client: &AsyncClient) {
    for r in b.discovery.configs() {
        publish(client, r);
    }
    match b.gpio.list() {
        Ok(list) => {
            for c in list {
                publish(client, b.discovery.state(&c.name, c.value));
            }
        }
        Err(e) => warn!("home assistant: cannot read the controls: {e}"),
    }
}

async fn run(
    mut b: Bridge,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = b.gpio.subscribe();
    let every = Duration::from_secs(b.config.image_interval_secs.max(1));
    let mut image = tokio::time::interval(every);
    image.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let images = b.snapshot.is_some() && b.config.image_interval_secs > 0;
    let mut bucket = TokenBucket::new(COMMAND_RATE, COMMAND_RATE);
    let mut refusals = LogPacer::new(REFUSAL_LOG_EVERY_US);
    let mut role_open = true;
    let role = *b.role.borrow_and_update();
    let _ = b.discovery.set_commandable(role == Some(Role::Control));
    info!(key = %b.config.key, role = role_name(role), "home assistant: outputs {}", if b.discovery.commandable() { "commandable" } else { "read-only (the key's role is not control)" });
    loop {
        tokio::select! {
            changed = b.role.changed(), if role_open => match changed {
                Ok(()) => role_changed(&mut b, &client),
                Err(_) => role_open = false,
            },
            _ = stop.changed() => {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
                return;
            }
            ch = changes.recv() => match ch {
                Ok(c) => publish(&client, b.discovery.state(&c.name, c.value)),
                Err(broadcast::error::RecvError::Lagged(_)) => announce(&b, &client),
                Err(broadcast::error::RecvError::Closed) => changes = b.gpio.subscribe(),
            },
            _ = image.tick(), if images => publish_image(&b, &client).await,
            polled = eventloop.poll() => match polled {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    info!(prefix = %b.config.discovery_prefix, "home assistant: publishing discovery");
                    backoff.reset();
                    let mut filters: Vec<String> = b.discovery.command_filters().into();
                    filters.push(b.discovery.config_filter());
                    filters.push(b.discovery.birth_topic());
                    for f in filters {
                        if let Err(e) = client.try_subscribe(f, QoS::AtLeastOnce) {
                            warn!("home assistant: subscribe not queued: {e}");
                        }
                    }
                    announce(&b, &client);
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let now = crate::clock::monotonic_us();
                    let limits = (&mut bucket, &mut refusals);
                    handle(&b, &client, &p.topic, &p.payload, p.retain, limits, now);
                }
                Ok(_) => {}
                Err(e) => {
                    debug!("home assistant: broker connection: {e}");
                    let delay = backoff.next_delay(rand::random::<f64>());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                }
            },
        }
    }
}

/// The key's role changed: re-publish discovery for it (stale entities
/// emptied first) when that changes what outputs are.
fn role_changed(b: &mut Bridge, client: &AsyncClient) {
    let role = *b.role.borrow_and_update();
    let stale = b.discovery.set_commandable(role == Some(Role::Control));
    if stale.is_empty() {
        return;
    }
    info!(key = %b.config.key, role = role_name(role), "home assistant: the key's role changed; publishing discovery again");
    for r in stale {
        publish(client, r);
    }
    announce(b, client);
}

fn handle(
    b: &Bridge,
    client: &AsyncClient,
    topic: &str,
    payload: &[u8],
    retained: bool,
    (bucket, refusals): (&mut TokenBucket, &mut LogPacer),
    now_us: u64,
) {
    let d = &b.discovery;
    if topic == d.birth_topic() {
        if payload == b"online" {
            info!("home assistant (re)started: publishing discovery again");
            announce(b, client);
        }
        return;
    }
    if topic.ends_with("/config") {
        if !payload.is_empty() {
            for r in d.removals([topic]) {
                info!(topic = %r.topic, "home assistant: removing an entity that no longer exists");
                publish(client, r);
            }
        }
        return;
    }
    let role = *b.role.borrow();
    match verdict(d, role, topic, payload, retained, bucket, now_us) {
        Verdict::Retained => info!(%topic, "home assistant: ignoring a retained command"),
        Verdict::RateLimited => warn!(%topic, "home assistant: command rate limited"),
        Verdict::NotACommand => {
            info!(%topic, "home assistant: not a command for a known output; ignored")
        }
        Verdict::Refused(cmd) => {
            if let Some(held) = refusals.due(now_us) {
                let (method, params) = describe(&cmd);
                warn!(
                    key = %b.config.key,
                    role = role_name(role),
                    held_back = held,
                    "home assistant: command refused: the Home Assistant key's role is not control \
                     (give it role control to let Home Assistant drive outputs)"
                );
                audit(b, role, method, &params, "refused: role is not control");
            }
        }
        Verdict::Run(cmd) => run_command(b, role, &cmd),
    }
}

/// A command as the audit log names it: (method, params).
fn describe(cmd: &Command) -> (&'static str, String) {
    match cmd {
        Command::Set { name, value } => (
            "gpio.set",
            format!("{{\"name\":{name:?},\"value\":{value}}}"),
        ),
        Command::Pulse { name, ms } => ("gpio.pulse", format!("{{\"name\":{name:?},\"ms\":{ms}}}")),
    }
}

/// The audit line of a Home Assistant command, with the key's real id
/// and role.
fn audit(b: &Bridge, role: Option<Role>, method: &str, params: &str, result: &str) {
    tracing::info!(
        target: "audit",
        sid = "homeassistant",
        key = %b.config.key,
        role = role_name(role),
        method,
        params = %params,
        result = %result,
        "control call"
    );
}

/// Drives the GPIO as the data channel does, with an audit line.
fn run_command(b: &Bridge, role: Option<Role>, cmd: &Command) {
    let (method, params) = describe(cmd);
    let result = match cmd {
        Command::Set { name, value } => b.gpio.set_by(None, name, *value).map(|v| v.to_string()),
        Command::Pulse { name, ms } => b
            .gpio
            .pulse_by(None, name, *ms)
            .map(|o| format!("{} for {} ms", o.value, o.ms)),
    };
    let result = result.unwrap_or_else(|e| format!("error {e}"));
    audit(b, role, method, &params, &result);
}

async fn publish_image(b: &Bridge, client: &AsyncClient) {
    let Some(snap) = &b.snapshot else { return };
    let mut width = (b.config.image_width != 0).then_some(b.config.image_width);
    for _ in 0..3 {
        match snap.jpeg(width).await {
            Ok(s) if s.jpeg.len() <= MAX_IMAGE => {
                let topic = b.discovery.camera_topic();
                if let Err(e) = client.try_publish(topic, QoS::AtMostOnce, true, s.jpeg) {
                    debug!("home assistant: picture not queued: {e}");
                }
                return;
            }
            // Too large for the broker: half as wide.
            Ok(s) => width = Some((s.width / 2).max(crate::snapshot::MIN_WIDTH) & !1),
            Err(e) => {
                debug!("home assistant: no picture this time: {e}");
                return;
            }
        }
    }
    warn!("home assistant: camera picture still above {MAX_IMAGE} bytes at a quarter width; none published");
}

#[cfg(test)]
mod tests;
