//! The device's MQTT link: connect, subscribe, presence, last will, and
//! reconnect with backoff. Publishing never blocks: when the broker is away,
//! messages queue in a bounded buffer and the overflow is dropped with a log
//! line, so media and live sessions never wait on the broker.
//!
//! Retained messages on session topics are emptied (see `retained`): the
//! link subscribes again after session traffic, at most every two
//! seconds, so the broker hands them over with the retain flag set.

use super::Outbox;
use crate::backoff::Backoff;
use crate::config::{MqttConfig, MqttTarget};
use crate::signaling::messages::{DeviceMessage, ErrorCode, MAX_PAYLOAD};
use crate::signaling::mqtt_options::{connection_hint, mqtt_options, MqttSetupError};
use crate::signaling::retained::{RetainedSweep, SWEEP_GAP_US};
use crate::signaling::topics::{InTopic, Topics};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, QoS};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Largest packet accepted from the broker. Bigger than MAX_PAYLOAD so an
/// oversized offer can still be answered with `too_large` rather than
/// costing the connection.
pub const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest packet sent (answers with many candidates stay far below this).
pub const MAX_OUTGOING_PACKET: usize = 256 * 1024;
/// Requests buffered while the broker is unreachable.
const REQUEST_QUEUE: usize = 512;

/// What the link reports to the daemon.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected (or reconnected) and subscribed: publish presence now.
    Connected,
    /// Lost the broker; retrying.
    Disconnected,
    /// A message on `B/session/{sid}/in`.
    Message { sid: String, payload: Vec<u8> },
}

/// Publishing side of the link.
#[derive(Clone)]
pub struct MqttLink {
    client: AsyncClient,
    topics: Topics,
}

impl MqttLink {
    /// Starts the connection task. `will` is the offline presence payload.
    pub fn start(
        cfg: &MqttConfig,
        target: &MqttTarget,
        client_id: &str,
        topics: Topics,
        will: Vec<u8>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<
        (
            MqttLink,
            mpsc::Receiver<LinkEvent>,
            tokio::task::JoinHandle<()>,
        ),
        MqttSetupError,
    > {
        // Config validation has checked the files already; this fails only
        // if one changed since.
        let mut opts = mqtt_options(cfg, target, client_id)?;
        opts.set_last_will(LastWill::new(topics.status(), will, QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
        crate::signaling::mqtt_options::send_without_delay(&mut eventloop);
        let (tx, rx) = mpsc::channel(1024);
        let link = MqttLink {
            client: client.clone(),
            topics: topics.clone(),
        };
        let backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect_min_ms),
            Duration::from_millis(cfg.reconnect_max_ms),
        );
        let broker = target.to_string();
        let task = tokio::spawn(run_loop(
            eventloop, client, topics, tx, backoff, broker, shutdown,
        ));
        Ok((link, rx, task))
    }

    /// Publishes the retained presence document.
    pub fn publish_status(&self, payload: Vec<u8>) {
        if let Err(e) =
            self.client
                .try_publish(self.topics.status(), QoS::AtLeastOnce, true, payload)
        {
            warn!("status not queued: {e}");
        }
    }

    /// Asks the broker connection to close cleanly (after queued messages).
    pub fn disconnect(&self) {
        let _ = self.client.try_disconnect();
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }
}

impl Outbox for MqttLink {
    fn send(&self, sid: &str, msg: DeviceMessage, mac: Option<String>) {
        let topic = self.topics.session_out(sid);
        let payload = msg.to_json_with_mac(mac.as_deref());
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            warn!(%sid, "message to viewer dropped (broker unreachable, queue full): {e}");
        }
    }
}

async fn run_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    tx: mpsc::Sender<LinkEvent>,
    mut backoff: Backoff,
    broker: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connected = false;
    let mut failures = 0u32;
    let mut sweep = RetainedSweep::default();
    let mut sweep_tick = tokio::time::interval(Duration::from_micros(SWEEP_GAP_US / 2));
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let polled = tokio::select! {
            p = eventloop.poll() => p,
            _ = sweep_tick.tick() => {
                sweep_if_due(&client, &topics, &mut sweep, connected);
                continue;
            }
            _ = shutdown.changed() => {
                // Give queued messages (offline status, byes) a moment to leave.
                let _ = tokio::time::timeout(Duration::from_millis(800), async {
                    loop {
                        // Past the Disconnect event rumqttc may still hold the
                        // last packets in its write buffer: poll on until the
                        // connection is closed, so they reach the broker.
                        if eventloop.poll().await.is_err() {
                            break;
                        }
                    }
                }).await;
                return;
            }
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                info!(%broker, resumed = ack.session_present, "connected to broker");
                connected = true;
                failures = 0;
                backoff.reset();
                if !ack.session_present {
                    if let Err(e) =
                        client.try_subscribe(topics.session_in_filter(), QoS::AtLeastOnce)
                    {
                        warn!("subscribe not queued: {e}");
                    }
                    sweep.subscribed(crate::clock::monotonic_us());
                } else {
                    // Away for a while: look for retained messages soon.
                    sweep.traffic();
                }
                let _ = tx.try_send(LinkEvent::Connected);
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    warn!(filter = %topics.session_in_filter(), "broker refused the subscription (ACL?)");
                } else {
                    debug!("subscribed to {}", topics.session_in_filter());
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if p.retain {
                    clear_retained(&client, &p.topic, &mut sweep);
                    continue;
                }
                if p.payload.is_empty() {
                    // Never a message; what a cleared retained one looks like.
                    continue;
                }
                sweep.traffic();
                match topics.classify(&p.topic) {
                    InTopic::Session(sid) => {
                        if tx
                            .try_send(LinkEvent::Message {
                                sid,
                                payload: p.payload.to_vec(),
                            })
                            .is_err()
                        {
                            warn!(topic = %p.topic, "signaling queue full; message dropped");
                        }
                    }
                    InTopic::BadSid(raw) => {
                        info!(topic = %p.topic, "message with an invalid session id");
                        if is_single_level(&raw) {
                            let msg = DeviceMessage::Error {
                                code: ErrorCode::BadRequest,
                                message: format!(
                                    "invalid session id {raw:?}: need 8-64 of [A-Za-z0-9_-]"
                                ),
                                relay: None,
                            };
                            let _ = client.try_publish(
                                topics.session_out(&raw),
                                QoS::AtLeastOnce,
                                false,
                                msg.to_json(),
                            );
                        }
                    }
                    InTopic::Other => debug!(topic = %p.topic, "ignoring message"),
                }
                let _ = MAX_PAYLOAD; // the size limit is enforced by the session table
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if connected {
                    warn!(%broker, "lost the broker: {}; sessions keep running, retrying", explain(&e));
                    connected = false;
                    let _ = tx.try_send(LinkEvent::Disconnected);
                } else if failures == 1 || failures.is_power_of_two() {
                    warn!(%broker, attempt = failures, "cannot reach the broker: {}; retrying", explain(&e));
                } else {
                    debug!(%broker, attempt = failures, "cannot reach the broker: {e}");
                }
                let delay = backoff.next_delay(rand::random::<f64>());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// A retained message on a session topic: stale by definition, never used;
/// emptied on the broker (within the sweep's budget).
fn clear_retained(client: &AsyncClient, topic: &str, sweep: &mut RetainedSweep) {
    if !sweep.may_clear(crate::clock::monotonic_us()) {
        debug!(%topic, "retained message on a session topic left for the next sweep");
        return;
    }
    debug!(%topic, "dropping a retained message on a session topic (stale by definition) and emptying it");
    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, Vec::new()) {
        debug!(%topic, "retained message not emptied (queue full): {e}");
    }
}

/// Subscribes to the session filter again when a sweep is due (the broker
/// then sends retained session messages with the flag set), and logs what
/// the last second's sweeps cleared.
fn sweep_if_due(client: &AsyncClient, topics: &Topics, sweep: &mut RetainedSweep, connected: bool) {
    let cleared = sweep.take_cleared();
    if cleared > 0 {
        info!(
            cleared,
            "emptied retained messages on session topics (stale by definition; nobody's to keep)"
        );
    }
    if connected && sweep.due(crate::clock::monotonic_us()) {
        if let Err(e) = client.try_subscribe(topics.session_in_filter(), QoS::AtLeastOnce) {
            debug!("sweep subscribe not queued: {e}");
        }
    }
}

/// A connection error, with plain words for the common refusals.
fn explain(e: &rumqttc::ConnectionError) -> String {
    match connection_hint(e) {
        Some(hint) => format!("{e} ({hint})"),
        None => e.to_string(),
    }
}

/// Whether `s` can stand as one MQTT topic level of our own.
fn is_single_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_level() {
        assert!(is_single_level("short"));
        assert!(!is_single_level(""));
        assert!(!is_single_level("a/b"));
        assert!(!is_single_level("a+"));
        assert!(!is_single_level("#"));
    }
}
