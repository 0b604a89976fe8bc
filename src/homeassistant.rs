//! Home Assistant MQTT discovery: what the daemon publishes so that Home
//! Assistant shows the device, and what it accepts back.
//!
//! Pure: [`Discovery::new`] turns the configuration's controls into
//! retained discovery messages, and [`Discovery::command`] turns a message
//! on a command topic into a [`Command`]; the MQTT side is `bridge`.
//!
//! One Home Assistant device per campeer device (`identifiers`
//! `campeer_<device_id>`), every entity available while the device's
//! retained status (`<prefix>/<device_id>/status`, whose last will says
//! `offline`) says `online`. Entities, with `B = <prefix>/<device_id>`:
//!
//! | entity | for | topics |
//! | --- | --- | --- |
//! | `switch` | each output, `control` key | state `B/ha/<name>/state`, command `B/ha/<name>/set` (`ON`/`OFF`) |
//! | `button` | each output, `control` key | command `B/ha/<name>/pulse` (`PRESS`): a pulse of `pulse_ms` |
//! | `binary_sensor` | each output, `view` key | state `B/ha/<name>/state` (read-only) |
//! | `binary_sensor` | each input | state `B/ha/<name>/state` |
//! | `sensor` | viewers | `B/status`, `{{ value_json.sessions }}` |
//! | `camera` | video | `B/ha/camera`: a JPEG |
//!
//! Discovery topics are `<discovery_prefix>/<component>/campeer_<device_id>/<object_id>/config`.
//!
//! Outputs are commandable only while the Home Assistant key
//! (`homeassistant.key`) has the role `control`
//! ([`Discovery::set_commandable`]); otherwise Home Assistant is shown
//! them as read-only `binary_sensor`s, with no command topic at all, so
//! its interface offers no switch that could not work.

pub mod bridge;

use serde_json::{json, Value};

pub use crate::config::homeassistant::HomeAssistantConfig;

/// A control as discovery sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaControl {
    pub name: String,
    pub output: bool,
}

/// One retained message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retained {
    pub topic: String,
    /// Empty removes the entity.
    pub payload: Vec<u8>,
}

/// What a command topic asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Set { name: String, value: bool },
    Pulse { name: String, ms: u64 },
}

/// The device's discovery: its entities, topics and commands.
#[derive(Clone, Debug)]
pub struct Discovery {
    base: String,
    node: String,
    discovery_prefix: String,
    device_id: String,
    version: String,
    pulse_ms: u64,
    controls: Vec<HaControl>,
    video: bool,
    /// Outputs are advertised with command topics (the key may command).
    commandable: bool,
}

/// The longest command payload looked at, bytes.
pub const MAX_COMMAND: usize = 16;

impl Discovery {
    /// `base` is `<prefix>/<device_id>`. Outputs start read-only: see
    /// [`Discovery::set_commandable`].
    pub fn new(
        cfg: &HomeAssistantConfig,
        base: &str,
        device_id: &str,
        version: &str,
        controls: Vec<HaControl>,
        video: bool,
    ) -> Self {
        Discovery {
            base: base.to_owned(),
            node: format!("campeer_{device_id}"),
            discovery_prefix: cfg.discovery_prefix.clone(),
            device_id: device_id.to_owned(),
            version: version.to_owned(),
            pulse_ms: cfg.pulse_ms,
            controls,
            video,
            commandable: false,
        }
    }

    /// Whether outputs are advertised as commandable (`switch` and
    /// `button`) or read-only (`binary_sensor`). Returns the configs the
    /// change makes stale (empty, to be published), none if unchanged.
    pub fn set_commandable(&mut self, commandable: bool) -> Vec<Retained> {
        if self.commandable == commandable {
            return Vec::new();
        }
        let before: Vec<String> = self.configs().into_iter().map(|r| r.topic).collect();
        self.commandable = commandable;
        self.removals(before.iter().map(String::as_str))
    }

    pub fn commandable(&self) -> bool {
        self.commandable
    }

    pub fn status_topic(&self) -> String {
        format!("{}/status", self.base)
    }

    pub fn state_topic(&self, name: &str) -> String {
        format!("{}/ha/{name}/state", self.base)
    }

    pub fn camera_topic(&self) -> String {
        format!("{}/ha/camera", self.base)
    }

    /// What the device subscribes to: `B/ha/+/set` and `B/ha/+/pulse`.
    pub fn command_filters(&self) -> [String; 2] {
        [
            format!("{}/ha/+/set", self.base),
            format!("{}/ha/+/pulse", self.base),
        ]
    }

    /// Every discovery config topic of this device (for finding stale ones).
    pub fn config_filter(&self) -> String {
        format!("{}/+/{}/+/config", self.discovery_prefix, self.node)
    }

    /// Home Assistant's birth topic (`online` when it (re)starts).
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    fn config_topic(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.discovery_prefix, self.node
        )
    }

    fn device(&self) -> Value {
        json!({
            "identifiers": [self.node],
            "name": self.device_id,
            "manufacturer": "campeer",
            "model": "campeer camera",
            "sw_version": self.version,
        })
    }

    fn entity(&self, object: &str, name: &str) -> Value {
        json!({
            "name": name,
            "object_id": format!("{}_{object}", self.node),
            "unique_id": format!("{}_{object}", self.node),
            "device": self.device(),
            "availability": [{
                "topic": self.status_topic(),
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }],
        })
    }

    /// Every entity's retained config, in a stable order.
    pub fn configs(&self) -> Vec<Retained> {
        let mut out = Vec::new();
        let mut push = |topic: String, mut v: Value, extra: Value| {
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            out.push(Retained {
                topic,
                payload: v.to_string().into_bytes(),
            });
        };
        for c in &self.controls {
            let state = self.state_topic(&c.name);
            if c.output && self.commandable {
                push(
                    self.config_topic("switch", &c.name),
                    self.entity(&c.name, &c.name),
                    json!({
                        "state_topic": state,
                        "command_topic": format!("{}/ha/{}/set", self.base, c.name),
                        "payload_on": "ON", "payload_off": "OFF",
                        "state_on": "ON", "state_off": "OFF",
                    }),
                );
                let object = format!("{}_pulse", c.name);
                push(
                    self.config_topic("button", &object),
                    self.entity(&object, &format!("{} pulse", c.name)),
                    json!({
                        "command_topic": format!("{}/ha/{}/pulse", self.base, c.name),
                        "payload_press": "PRESS",
                    }),
                );
            } else {
                push(
                    self.config_topic("binary_sensor", &c.name),
                    self.entity(&c.name, &c.name),
                    json!({"state_topic": state, "payload_on": "ON", "payload_off": "OFF"}),
                );
            }
        }
        push(
            self.config_topic("sensor", "viewers"),
            self.entity("viewers", "Viewers"),
            json!({
                "state_topic": self.status_topic(),
                "value_template": "{{ value_json.sessions | default(0) }}",
                "state_class": "measurement",
                "icon": "mdi:eye",
            }),
        );
        if self.video {
            push(
                self.config_topic("camera", "camera"),
                self.entity("camera", "Camera"),
                json!({"topic": self.camera_topic()}),
            );
        }
        out
    }

    /// Empty retained configs for every config topic in `seen` (retained
    /// configs found on the broker) that this device no longer has.
    pub fn removals<'a>(&self, seen: impl IntoIterator<Item = &'a str>) -> Vec<Retained> {
        let current: Vec<String> = self.configs().into_iter().map(|r| r.topic).collect();
        let prefix = format!("{}/", self.discovery_prefix);
        let node = format!("/{}/", self.node);
        seen.into_iter()
            .filter(|t| t.starts_with(&prefix) && t.contains(&node) && t.ends_with("/config"))
            .filter(|t| !current.iter().any(|c| c == t))
            .map(|t| Retained {
                topic: t.to_owned(),
                payload: Vec::new(),
            })
            .collect()
    }

    /// The retained state message of control `name`.
    pub fn state(&self, name: &str, value: bool) -> Retained {
        Retained {
            topic: self.state_topic(name),
            payload: if value {
                b"ON".to_vec()
            } else {
                b"OFF".to_vec()
            },
        }
    }

    /// The command a message on `topic` carries: `None` for anything that
    /// is not a valid command for a known output.
    pub fn command(&self, topic: &str, payload: &[u8]) -> Option<Command> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/ha/")?;
        let (name, verb) = rest.split_once('/')?;
        let output = self.controls.iter().any(|c| c.output && c.name == name);
        if !output || payload.len() > MAX_COMMAND {
            return None;
        }
        let text = std::str::from_utf8(payload).ok()?.trim();
        let name = name.to_owned();
        match (verb, text) {
            ("set", "ON") => Some(Command::Set { name, value: true }),
            ("set", "OFF") => Some(Command::Set { name, value: false }),
            ("pulse", "PRESS") => Some(Command::Pulse {
                name,
                ms: self.pulse_ms,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
