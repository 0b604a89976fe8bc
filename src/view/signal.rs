//! The viewer's side of MQTT signaling.

use crate::cli::ViewArgs;
use crate::config::{MqttConfig, MqttTarget};
use crate::signaling::messages::{parse_device_message, DeviceMessage, ViewerMessage};
use crate::signaling::mqtt_options::mqtt_options;
use crate::signaling::topics::Topics;
use anyhow::{anyhow, bail, Context};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub struct ViewerSignal {
    client: AsyncClient,
    in_topic: String,
    rx: mpsc::Receiver<DeviceMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl ViewerSignal {
    /// Connects and subscribes to the session's `out` topic.
    pub async fn connect(
        args: &ViewArgs,
        target: &MqttTarget,
        topics: &Topics,
        sid: &str,
    ) -> anyhow::Result<Self> {
        let cfg = MqttConfig {
            keepalive_secs: 15,
            password_file: args.password_file.clone(),
            ca_file: args.ca_file.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
            ..MqttConfig::default()
        };
        let opts = mqtt_options(&cfg, target, &format!("campeer-view-{sid}"))
            .map_err(|e| anyhow!("{}: {}", e.setting.flag(), e.message))?;
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let out_topic = topics.session_out(sid);
        client
            .subscribe(out_topic.clone(), QoS::AtLeastOnce)
            .await?;
        // Wait for the subscription before offering, so no answer is missed.
        let connect = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => bail!("cannot reach the broker at {target}: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .context("timed out connecting to the broker")??;
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == out_topic => {
                        match parse_device_message(&p.payload) {
                            Ok(m) => {
                                if tx.send(m).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => warn!("unparsable message from the device: {e}"),
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
            task,
        })
    }

    /// Publishes one message to the device (QoS 1).
    pub fn publish(&self, msg: &ViewerMessage) {
        let payload = match serde_json::to_vec(msg) {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot encode {msg:?}: {e}");
                return;
            }
        };
        if let Err(e) =
            self.client
                .try_publish(self.in_topic.clone(), QoS::AtLeastOnce, false, payload)
        {
            warn!("cannot queue a message to the device: {e}");
        }
    }

    /// The next message from the device.
    pub async fn next(&mut self) -> Option<DeviceMessage> {
        self.rx.recv().await
    }

    /// Flushes and disconnects.
    pub async fn close(self) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), self.task).await;
    }
}
