//! The viewer's side of MQTT signaling.

use crate::cli::ViewArgs;
use crate::config::{MqttConfig, MqttTarget};
use crate::signaling::auth::{Direction, SessionKey};
use crate::signaling::messages::{parse_device_envelope, DeviceMessage, RelayOffer, ViewerMessage};
use crate::signaling::mqtt_options::mqtt_options;
use crate::signaling::presence::Presence;
use crate::signaling::topics::Topics;
use anyhow::{anyhow, bail, Context};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// MQTT login for the device's own broker: the key id and its password.
pub struct KeyLogin {
    pub username: String,
    pub password: String,
}

pub struct ViewerSignal {
    client: AsyncClient,
    in_topic: String,
    rx: mpsc::Receiver<(DeviceMessage, Option<String>)>,
    /// Messages on the device's other session topics this viewer asked
    /// on (an `ice_request`'s sid): (topic, message, mac).
    side_rx: mpsc::Receiver<(String, DeviceMessage, Option<String>)>,
    topics: Topics,
    status: tokio::sync::watch::Receiver<Option<Presence>>,
    /// Set once the offer is signed: macs go out and are checked coming in.
    key: Option<SessionKey>,
    task: tokio::task::JoinHandle<()>,
}

impl ViewerSignal {
    /// Connects and subscribes to the session's `out` topic.
    pub async fn connect(
        args: &ViewArgs,
        target: &MqttTarget,
        topics: &Topics,
        sid: &str,
        login: Option<KeyLogin>,
    ) -> anyhow::Result<Self> {
        let cfg = MqttConfig {
            keepalive_secs: 15,
            password_file: args.password_file.clone(),
            ca_file: args.ca_file.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
            ..MqttConfig::default()
        };
        let mut opts = mqtt_options(&cfg, target, &format!("campeer-view-{sid}"))
            .map_err(|e| anyhow!("{}: {}", e.setting.flag(), e.message))?;
        // Without credentials of its own, log in with the key (the
        // device's own broker admits key holders only).
        if let (Some(l), None, None) = (login, &target.username, &args.password_file) {
            opts.set_credentials(l.username, l.password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        crate::signaling::mqtt_options::send_without_delay(&mut eventloop);
        let out_topic = topics.session_out(sid);
        let status_topic = topics.status();
        client
            .subscribe(out_topic.clone(), QoS::AtLeastOnce)
            .await?;
        client
            .subscribe(status_topic.clone(), QoS::AtLeastOnce)
            .await?;
        // Wait for both subscriptions before offering, so no answer is missed.
        let connect = async {
            let mut acks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        acks += 1;
                        if acks == 2 {
                            return Ok(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::ConnAck(c)))
                        if c.code != rumqttc::ConnectReturnCode::Success =>
                    {
                        bail!("the broker at {target} refused the login: {:?} (wrong or revoked key?)", c.code)
                    }
                    Ok(_) => {}
                    Err(e) => bail!("cannot reach the broker at {target}: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .context("timed out connecting to the broker")??;
        let (tx, rx) = mpsc::channel(256);
        let (side_tx, side_rx) = mpsc::channel(16);
        let (status_tx, status) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == out_topic => {
                        match parse_device_envelope(&p.payload) {
                            Ok(m) => {
                                if tx.send(m).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => warn!("unparsable message from the device: {e}"),
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic.ends_with("/out") => {
                        // Only topics this viewer subscribed to arrive.
                        match parse_device_envelope(&p.payload) {
                            Ok((m, mac)) => {
                                let _ = side_tx.try_send((p.topic.to_string(), m, mac));
                            }
                            Err(e) => warn!("unparsable message from the device: {e}"),
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == status_topic => {
                        match Presence::from_json(&p.payload) {
                            Ok(presence) => {
                                let _ = status_tx.send(Some(presence));
                            }
                            Err(e) => warn!("unparsable device status: {e}"),
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        debug!("viewer MQTT: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(ViewerSignal {
            client,
            in_topic: topics.session_in(sid),
            rx,
            side_rx,
            topics: topics.clone(),
            status,
            key: None,
            task,
        })
    }

    /// The device's status once one arrives (it is retained), or `None`
    /// after `wait`.
    pub async fn status(&mut self, wait: Duration) -> Option<Presence> {
        let mut status = self.status.clone();
        let got = tokio::time::timeout(wait, status.wait_for(|s| s.is_some())).await;
        match got {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        }
    }

    /// From now on, macs go out with every message and are checked on
    /// every message that comes in.
    pub fn set_key(&mut self, key: SessionKey) {
        self.key = Some(key);
    }

    /// Whether a device message verifies under the session key (always
    /// true without one: an open device).
    pub fn verifies(&self, msg: &DeviceMessage, mac: Option<&str>) -> bool {
        match &self.key {
            None => true,
            Some(k) => {
                let (kind, body) = msg.mac_input();
                k.verify(Direction::Out, kind, &body, mac)
            }
        }
    }

    /// Publishes one message to the device (QoS 1), with its mac when the
    /// session is signed.
    /// The PIN of a relay the device sent, if the relay verifies: sealed
    /// under the session key on a signed device, in clear on an open one.
    pub fn open_relay(&self, sid: &str, r: &RelayOffer) -> Option<String> {
        match &self.key {
            None => r.pin.clone(),
            Some(k) => {
                let pin_x = r.pin_x.as_deref()?;
                k.verify_relay(&r.janus, r.mountpoint, pin_x, r.mac.as_deref()?)
                    .then(|| k.open_pin(sid, pin_x))?
            }
        }
    }

    pub fn publish(&self, msg: &ViewerMessage) {
        let mac = match (&self.key, msg.mac_input()) {
            (Some(k), Some((kind, body))) => Some(k.mac(Direction::In, kind, &body)),
            _ => None,
        };
        self.publish_raw(msg.to_json_with_mac(mac.as_deref()).into_bytes());
    }

    /// Publishes `payload` as is (tests use it to send forged messages).
    pub fn publish_raw(&self, payload: Vec<u8>) {
        if let Err(e) =
            self.client
                .try_publish(self.in_topic.clone(), QoS::AtLeastOnce, false, payload)
        {
            warn!("cannot queue a message to the device: {e}");
        }
    }

    /// Sends `msg` on session `sid` of its own (an `ice_request`) and
    /// waits up to `wait` for the device's first reply there. The
    /// subscription goes out before the request on the same connection,
    /// so the broker has it before the reply can exist.
    pub async fn ask_on_side_sid(
        &mut self,
        sid: &str,
        msg: &ViewerMessage,
        wait: Duration,
    ) -> Option<(DeviceMessage, Option<String>)> {
        let out = self.topics.session_out(sid);
        if let Err(e) = self.client.subscribe(out.clone(), QoS::AtLeastOnce).await {
            warn!("cannot subscribe to {out}: {e}");
            return None;
        }
        let payload = msg.to_json().into_bytes();
        let in_topic = self.topics.session_in(sid);
        if let Err(e) = self
            .client
            .publish(in_topic, QoS::AtLeastOnce, false, payload)
            .await
        {
            warn!("cannot send to the device: {e}");
            return None;
        }
        let got = tokio::time::timeout(wait, async {
            while let Some((topic, m, mac)) = self.side_rx.recv().await {
                if topic == out {
                    return Some((m, mac));
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let _ = self.client.unsubscribe(out).await;
        got
    }

    /// The next message from the device, with its `mac`.
    pub async fn next(&mut self) -> Option<(DeviceMessage, Option<String>)> {
        self.rx.recv().await
    }

    /// Flushes and disconnects.
    pub async fn close(self) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), self.task).await;
    }
}
