use super::*;

fn disc(controls: &[(&str, bool)], video: bool) -> Discovery {
    let controls = controls
        .iter()
        .map(|(n, o)| HaControl {
            name: n.to_string(),
            output: *o,
        })
        .collect();
    let mut d = Discovery::new(
        &HomeAssistantConfig::default(),
        "campeer/cam1",
        "cam1",
        "1.2.3",
        controls,
        video,
    );
    // As with a `control` key; read-only discovery has its own test.
    let _ = d.set_commandable(true);
    d
}

fn topics(d: &Discovery) -> Vec<String> {
    d.configs().into_iter().map(|r| r.topic).collect()
}

#[test]
fn outputs_are_read_only_until_the_key_may_command() {
    let mut d = Discovery::new(
        &HomeAssistantConfig::default(),
        "campeer/cam1",
        "cam1",
        "1.2.3",
        vec![
            HaControl {
                name: "gate".into(),
                output: true,
            },
            HaControl {
                name: "door".into(),
                output: false,
            },
        ],
        false,
    );
    assert!(!d.commandable(), "read-only by default");
    let read_only = [
        "homeassistant/binary_sensor/campeer_cam1/gate/config",
        "homeassistant/binary_sensor/campeer_cam1/door/config",
        "homeassistant/sensor/campeer_cam1/viewers/config",
    ];
    assert_eq!(topics(&d), read_only);
    for r in d.configs() {
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert!(v.get("command_topic").is_none(), "{}: {v}", r.topic);
    }
    let gate = config_of(&d, read_only[0]);
    assert_eq!(gate["state_topic"], "campeer/cam1/ha/gate/state");

    // To control: the read-only output's config is emptied, switch and
    // button appear; the input is untouched.
    let stale = d.set_commandable(true);
    assert_eq!(
        stale,
        [Retained {
            topic: read_only[0].into(),
            payload: Vec::new()
        }]
    );
    assert!(
        d.set_commandable(true).is_empty(),
        "no change, nothing stale"
    );
    assert!(topics(&d).contains(&"homeassistant/switch/campeer_cam1/gate/config".to_owned()));

    // And back: the switch and button go.
    let mut stale: Vec<String> = d
        .set_commandable(false)
        .into_iter()
        .map(|r| r.topic)
        .collect();
    stale.sort();
    assert_eq!(
        stale,
        [
            "homeassistant/button/campeer_cam1/gate_pulse/config",
            "homeassistant/switch/campeer_cam1/gate/config",
        ]
    );
    assert_eq!(topics(&d), read_only);
}

fn config_of(d: &Discovery, topic: &str) -> Value {
    let r = d
        .configs()
        .into_iter()
        .find(|r| r.topic == topic)
        .unwrap_or_else(|| panic!("no config on {topic}"));
    serde_json::from_slice(&r.payload).unwrap()
}

#[test]
fn one_entity_per_control_plus_viewers_and_camera() {
    let d = disc(&[("gate", true), ("door", false)], true);
    let topics: Vec<String> = d.configs().into_iter().map(|r| r.topic).collect();
    assert_eq!(
        topics,
        [
            "homeassistant/switch/campeer_cam1/gate/config",
            "homeassistant/button/campeer_cam1/gate_pulse/config",
            "homeassistant/binary_sensor/campeer_cam1/door/config",
            "homeassistant/sensor/campeer_cam1/viewers/config",
            "homeassistant/camera/campeer_cam1/camera/config",
        ]
    );
    let no_video = disc(&[], false);
    assert_eq!(no_video.configs().len(), 1, "only the viewers sensor");
}

#[test]
fn switch_config_has_the_topics_device_and_availability() {
    let d = disc(&[("gate", true)], false);
    let v = config_of(&d, "homeassistant/switch/campeer_cam1/gate/config");
    assert_eq!(v["command_topic"], "campeer/cam1/ha/gate/set");
    assert_eq!(v["state_topic"], "campeer/cam1/ha/gate/state");
    assert_eq!(v["unique_id"], "campeer_cam1_gate");
    assert_eq!(v["device"]["identifiers"][0], "campeer_cam1");
    assert_eq!(v["device"]["sw_version"], "1.2.3");
    let a = &v["availability"][0];
    assert_eq!(a["topic"], "campeer/cam1/status");
    assert_eq!(a["value_template"], "{{ value_json.state }}");
    assert_eq!(a["payload_available"], "online");
    assert_eq!(a["payload_not_available"], "offline");
    let b = config_of(&d, "homeassistant/button/campeer_cam1/gate_pulse/config");
    assert_eq!(b["command_topic"], "campeer/cam1/ha/gate/pulse");
    assert_eq!(b["payload_press"], "PRESS");
}

#[test]
fn inputs_sensor_and_camera_configs() {
    let d = disc(&[("door", false)], true);
    let s = config_of(&d, "homeassistant/binary_sensor/campeer_cam1/door/config");
    assert_eq!(s["state_topic"], "campeer/cam1/ha/door/state");
    assert!(s.get("command_topic").is_none());
    let v = config_of(&d, "homeassistant/sensor/campeer_cam1/viewers/config");
    assert_eq!(v["state_topic"], "campeer/cam1/status");
    let c = config_of(&d, "homeassistant/camera/campeer_cam1/camera/config");
    assert_eq!(c["topic"], "campeer/cam1/ha/camera");
}

#[test]
fn commands_only_for_known_outputs_and_exact_payloads() {
    let d = disc(&[("gate", true), ("door", false)], false);
    assert_eq!(
        d.command("campeer/cam1/ha/gate/set", b"ON"),
        Some(Command::Set {
            name: "gate".into(),
            value: true
        })
    );
    assert_eq!(
        d.command("campeer/cam1/ha/gate/set", b"OFF"),
        Some(Command::Set {
            name: "gate".into(),
            value: false
        })
    );
    assert_eq!(
        d.command("campeer/cam1/ha/gate/pulse", b"PRESS"),
        Some(Command::Pulse {
            name: "gate".into(),
            ms: 500
        })
    );
    for (topic, payload) in [
        ("campeer/cam1/ha/door/set", &b"ON"[..]),    // an input
        ("campeer/cam1/ha/nope/set", b"ON"),         // unknown
        ("campeer/cam1/ha/gate/set", b"on"),         // case
        ("campeer/cam1/ha/gate/set", b"TOGGLE"),     // verb
        ("campeer/cam1/ha/gate/state", b"ON"),       // not a command topic
        ("campeer/cam2/ha/gate/set", b"ON"),         // another device
        ("campeer/cam1/ha/gate/set", &[0xFF, 0xFE]), // not UTF-8
        ("campeer/cam1/ha/gate/set", &[b'O'; 100]),  // oversized
    ] {
        assert_eq!(d.command(topic, payload), None, "{topic} {payload:?}");
    }
}

#[test]
fn removed_controls_get_empty_configs() {
    let d = disc(&[("gate", true)], false);
    let seen = [
        "homeassistant/switch/campeer_cam1/gate/config",
        "homeassistant/switch/campeer_cam1/old/config",
        "homeassistant/binary_sensor/campeer_cam1/gone/config",
        "homeassistant/switch/campeer_other/old/config",
    ];
    let r = d.removals(seen);
    let topics: Vec<&str> = r.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "homeassistant/switch/campeer_cam1/old/config",
            "homeassistant/binary_sensor/campeer_cam1/gone/config"
        ]
    );
    assert!(r.iter().all(|r| r.payload.is_empty()));
}

#[test]
fn states_are_on_off() {
    let d = disc(&[("gate", true)], false);
    assert_eq!(d.state("gate", true).payload, b"ON");
    assert_eq!(d.state("gate", false).payload, b"OFF");
    assert_eq!(d.state("gate", false).topic, "campeer/cam1/ha/gate/state");
}

#[test]
fn config_is_checked() {
    assert!(HomeAssistantConfig::default().validate().is_ok());
    for bad in [
        HomeAssistantConfig {
            discovery_prefix: "ha/#".into(),
            ..Default::default()
        },
        HomeAssistantConfig {
            discovery_prefix: String::new(),
            ..Default::default()
        },
        HomeAssistantConfig {
            key: "Bad Key".into(),
            ..Default::default()
        },
        HomeAssistantConfig {
            pulse_ms: 0,
            ..Default::default()
        },
        HomeAssistantConfig {
            image_interval_secs: 99_999,
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}
