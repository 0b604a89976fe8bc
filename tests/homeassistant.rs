//! A real Home Assistant (PyPI `homeassistant`, installed by
//! scripts/install-homeassistant.sh into a cached venv) against a real
//! daemon with its own Mosquitto: HA is onboarded and its MQTT integration
//! set up through its REST API with the `homeassistant` key's login, then
//! the discovered entities appear, HA's switch drives a GPIO output (mock
//! line) and its button pulses it, an input's change (a mock jumper wire
//! from another output) shows in HA's state, and the camera entity returns
//! a JPEG. A second run on an external Mosquitto, which outlives the
//! daemon, shows the device's entities going `unavailable` through the
//! MQTT last will alone when the daemon is killed.
//!
//! Without the venv the tests fail with the install command, unless the
//! developer opted out with `CAMPEER_SKIP=homeassistant`.

mod common;

use campeer::signaling::auth::key_password;
use common::{free_port, wait_status, Broker, TempDir, BIN};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICE: &str = "camha";
const HA_SECRET: &str = "0123456789abcdef-homeassistant";
const DEFAULT_VENV: &str = "/var/cache/campeer-tests/homeassistant";

struct Proc {
    child: Child,
    log: std::path::PathBuf,
    what: &'static str,
}

impl Proc {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether a log line satisfying `want` appears within 30 s.
    async fn wait_line(&self, want: impl Fn(&str) -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if self.log_text().lines().any(&want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("---- {} log (last lines) ----", self.what);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.map(|(ctype, b)| {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            b.len()
        ));
        b
    });
    req.push_str("\r\n");
    req.push_str(&body.unwrap_or_default());
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Some((status, body))
}

/// A chunked body decoded; a chunk size that does not parse, a chunk cut
/// short or a missing last chunk fails the test rather than truncating
/// the body.
fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("chunked body without its last chunk: {out:?}"));
        let line = String::from_utf8_lossy(&b[..eol]);
        let digits = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(digits, 16)
            .unwrap_or_else(|e| panic!("chunk size {line:?} ({e})"));
        if size == 0 {
            return out;
        }
        let data = &b[eol + 2..];
        assert!(
            data.len() >= size + 2,
            "a {size}-byte chunk cut short at {} bytes",
            data.len()
        );
        out.extend_from_slice(&data[..size]);
        b = &data[size + 2..];
    }
}

async fn json_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let (status, b) = http(
        addr,
        method,
        path,
        token,
        Some(("application/json", body.to_string())),
    )
    .await
    .unwrap_or_else(|| panic!("{method} {path}: no reply"));
    assert!(
        status < 300,
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).unwrap_or(Value::Null)
}

/// The state of `entity`, polled until `want` holds or `timeout` passes.
async fn wait_state(
    addr: SocketAddr,
    token: &str,
    entity: &str,
    want: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Option<String> {
    let t = Instant::now();
    let mut last = None;
    while t.elapsed() < timeout {
        if let Some((200, b)) = http(
            addr,
            "GET",
            &format!("/api/states/{entity}"),
            Some(token),
            None,
        )
        .await
        {
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            if let Some(s) = v["state"].as_str() {
                if want(s) {
                    return Some(s.to_owned());
                }
                last = Some(s.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{entity}: last state {last:?}");
    None
}

fn venv() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CAMPEER_HA_VENV")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_VENV));
    dir.join("bin/python").is_file().then_some(dir)
}

/// Where the daemon meets Home Assistant.
enum Link {
    /// Its own Mosquitto listens on this port; HA logs in with its key.
    OwnBroker(u16),
    /// An external Mosquitto (anonymous) at this URL.
    External(String),
}

/// Starts the daemon; `ha_role`: the HA key in the configuration file with
/// this role, or (`None`) none there (the test writes keys.toml).
fn start_daemon(dir: &TempDir, link: &Link, ha_role: Option<&str>) -> Proc {
    let cfg = dir.0.join("campeer.toml");
    let ha_key = ha_role.map_or(String::new(), |role| {
        format!("[[access.keys]]\nid = \"homeassistant\"\nsecret = \"{HA_SECRET}\"\nrole = \"{role}\"\n")
    });
    let broker = match link {
        Link::OwnBroker(port) => {
            format!("[broker]\nembedded = true\nlisten = \"127.0.0.1:{port}\"\nws_listen = \"\"\n")
        }
        Link::External(url) => format!("[broker]\nembedded = false\n[mqtt]\nurl = \"{url}\"\n"),
    };
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"{DEVICE}\"\n\
             [video]\nsource = \"test\"\nwidth = 640\nheight = 360\nfps = 10\n\
             {broker}\
             [http]\nlisten = \"\"\n\
             [homeassistant]\nenabled = true\nimage_interval_secs = 1\n\
             [[gpio]]\nname = \"gate\"\nline = \"mock:gate\"\ndirection = \"output\"\nmax_on_ms = 60000\n\
             [[gpio]]\nname = \"door\"\nline = \"mock:door\"\ndirection = \"input\"\n\
             [[gpio]]\nname = \"door_jumper\"\nline = \"mock:door\"\ndirection = \"output\"\n\
             {ha_key}"
        ),
    )
    .unwrap();
    let log = dir.0.join("daemon.log");
    let child = Command::new(BIN)
        .args(["--log", "info,campeer=debug", "run", "--config"])
        .arg(&cfg)
        .args(["--state-dir"])
        .arg(dir.0.join("state"))
        .args(["--stats-interval", "0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start campeer");
    Proc {
        child,
        log,
        what: "campeer",
    }
}

fn start_ha(venv: &std::path::Path, dir: &TempDir, port: u16) -> Proc {
    let conf = dir.0.join("ha");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("configuration.yaml"),
        format!(
            "homeassistant:\n  name: campeer-test\n  latitude: 0\n  longitude: 0\n  elevation: 0\n  \
             unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: DE\n\
             http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
             onboarding:\nconfig:\n"
        ),
    )
    .unwrap();
    let log = dir.0.join("ha.log");
    let child = Command::new(venv.join("bin/python"))
        .args(["-m", "homeassistant", "--skip-pip", "-c"])
        .arg(&conf)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start home assistant");
    Proc {
        child,
        log,
        what: "home assistant",
    }
}

/// Onboards HA and returns an access token.
async fn onboard(addr: SocketAddr) -> String {
    let client_id = format!("http://{addr}/");
    let r = json_call(
        addr,
        "POST",
        "/api/onboarding/users",
        None,
        json!({"client_id": client_id, "name": "Test", "username": "test",
               "password": "campeer-test-pass", "language": "en"}),
    )
    .await;
    let code = r["auth_code"].as_str().expect("auth_code").to_owned();
    let form = format!(
        "grant_type=authorization_code&code={code}&client_id={}",
        url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>()
    );
    let (status, b) = http(
        addr,
        "POST",
        "/auth/token",
        None,
        Some(("application/x-www-form-urlencoded", form)),
    )
    .await
    .expect("token reply");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    v["access_token"].as_str().expect("access_token").to_owned()
}

/// A running Home Assistant with its MQTT integration set up.
struct Ha {
    proc: Proc,
    addr: SocketAddr,
    token: String,
}

impl Ha {
    /// The entity's state once `want` holds (within a minute).
    async fn state(&self, entity: &str, want: impl Fn(&str) -> bool) -> Option<String> {
        wait_state(self.addr, &self.token, entity, want, LONG).await
    }

    async fn call(&self, service: &str, entity: &str) {
        json_call(
            self.addr,
            "POST",
            &format!("/api/services/{service}"),
            Some(&self.token),
            json!({"entity_id": entity}),
        )
        .await;
    }
}

const LONG: Duration = Duration::from_secs(60);
const SWITCH: &str = "switch.campeer_camha_gate";
/// The same output, read-only (the HA key's role is view).
const GATE_RO: &str = "binary_sensor.campeer_camha_gate";
const BUTTON: &str = "button.campeer_camha_gate_pulse";
const SET: &str = "campeer/camha/ha/gate/set";
const PULSE: &str = "campeer/camha/ha/gate/pulse";
const DOOR: &str = "binary_sensor.campeer_camha_door";

/// The venv; without it the test fails with the install command, or, when
/// the developer opted out (`CAMPEER_SKIP=homeassistant`), `None`.
fn require_venv() -> Option<std::path::PathBuf> {
    let venv = venv();
    let missing = venv.is_none().then(|| {
        format!("Home Assistant is not installed ({DEFAULT_VENV} or CAMPEER_HA_VENV): run scripts/install-homeassistant.sh")
    });
    if !common::prerequisite("homeassistant", missing) {
        return None;
    }
    venv
}

/// Starts HA, onboards it and sets up its MQTT integration on `port`
/// (with the `homeassistant` key's login when `login`).
async fn start_home_assistant(venv: &std::path::Path, dir: &TempDir, port: u16, login: bool) -> Ha {
    let ha_port = free_port();
    let proc = start_ha(venv, dir, ha_port);
    let addr: SocketAddr = format!("127.0.0.1:{ha_port}").parse().unwrap();
    let t = Instant::now();
    while !matches!(
        http(addr, "GET", "/api/onboarding", None, None).await,
        Some((200, _))
    ) {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "Home Assistant never answered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("home assistant up after {:?}", t.elapsed());
    let token = onboard(addr).await;
    let flow = json_call(
        addr,
        "POST",
        "/api/config/config_entries/flow",
        Some(&token),
        json!({"handler": "mqtt"}),
    )
    .await;
    let flow_id = flow["flow_id"].as_str().expect("flow_id");
    let mut entry = json!({"broker": "127.0.0.1", "port": port});
    if login {
        entry["username"] = json!("homeassistant");
        entry["password"] = json!(key_password(HA_SECRET.as_bytes(), DEVICE));
    }
    let done = json_call(
        addr,
        "POST",
        &format!("/api/config/config_entries/flow/{flow_id}"),
        Some(&token),
        entry,
    )
    .await;
    assert_eq!(done["type"], "create_entry", "{done}");
    Ha { proc, addr, token }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovers_and_drives_the_device_on_its_own_broker() {
    let Some(venv) = require_venv() else {
        return;
    };
    let dir = TempDir::new("ha");
    let mqtt = free_port();
    let t0 = Instant::now();
    let daemon = start_daemon(&dir, &Link::OwnBroker(mqtt), Some("control"));
    let ha = start_home_assistant(&venv, &dir, mqtt, true).await;

    assert_eq!(
        ha.state(SWITCH, |s| s == "off").await.as_deref(),
        Some("off")
    );
    assert_eq!(ha.state(DOOR, |s| s == "off").await.as_deref(), Some("off"));
    let viewers = "sensor.campeer_camha_viewers";
    assert_eq!(ha.state(viewers, |s| s == "0").await.as_deref(), Some("0"));
    let button = BUTTON;
    assert!(ha.state(button, |s| s != "unavailable").await.is_some());

    // HA's switch drives the line: the device's state topic comes back on.
    ha.call("switch/turn_on", SWITCH).await;
    assert_eq!(ha.state(SWITCH, |s| s == "on").await.as_deref(), Some("on"));
    let log = daemon.log_text();
    assert!(
        log.lines().any(|l| l.contains("control call")
            && l.contains("gpio.set")
            && l.contains("key=homeassistant")
            && l.contains("control")),
        "no audit line naming HA's key and role for its command"
    );
    ha.call("switch/turn_off", SWITCH).await;
    assert_eq!(
        ha.state(SWITCH, |s| s == "off").await.as_deref(),
        Some("off")
    );

    // An input change: `door_jumper` drives the mock wire `door` reads,
    // the daemon's input watcher sees the edge and pushes it.
    ha.call("switch/turn_on", "switch.campeer_camha_door_jumper")
        .await;
    assert_eq!(
        ha.state(DOOR, |s| s == "on").await.as_deref(),
        Some("on"),
        "the input's change never reached Home Assistant"
    );
    ha.call("switch/turn_off", "switch.campeer_camha_door_jumper")
        .await;
    assert_eq!(ha.state(DOOR, |s| s == "off").await.as_deref(), Some("off"));

    // The button pulses the output: the audit log shows the pulse.
    ha.call("button/press", button).await;
    assert!(
        daemon
            .wait_line(|l| l.contains("control call")
                && l.contains("gpio.pulse")
                && l.contains("homeassistant"))
            .await,
        "no audit line for HA's button press"
    );

    // The camera entity returns a JPEG of the configured width.
    let camera = "camera.campeer_camha_camera";
    assert!(ha.state(camera, |s| s != "unavailable").await.is_some());
    let t = Instant::now();
    let jpeg = loop {
        if let Some((200, b)) = http(
            ha.addr,
            "GET",
            &format!("/api/camera_proxy/{camera}"),
            Some(&ha.token),
            None,
        )
        .await
        {
            break b;
        }
        assert!(t.elapsed() < LONG, "no camera picture");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (w, h, _) = campeer::snapshot::decode_luma(&jpeg).expect("a JPEG");
    assert_eq!((w, h), (640, 360));
    drop(daemon);
    eprintln!("home assistant test took {:?}", t0.elapsed());
}

/// How long "the output did not change" is watched for.
const QUIET: Duration = Duration::from_secs(3);

/// A raw MQTT client on 127.0.0.1:`port`, as Home Assistant's own would
/// be, connected (its event loop polled in the background).
async fn mqtt_client(port: u16, login: Option<(&str, String)>) -> AsyncClient {
    let mut o = MqttOptions::new(format!("raw-{}", rand::random::<u32>()), "127.0.0.1", port);
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    let (c, mut el) = AsyncClient::new(o, 16);
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => {
                assert!(t.elapsed() < LONG, "raw MQTT client: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    c
}

/// Writes the state directory's keys.toml with the HA key at `role`
/// (atomically: the daemon reloads it when it changes).
fn write_keys(dir: &TempDir, role: &str) {
    use std::os::unix::fs::PermissionsExt;
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tmp = state.join("keys.toml.new");
    std::fs::write(
        &tmp,
        format!(
            "claimed = true\n[[keys]]\nid = \"homeassistant\"\nrole = \"{role}\"\nsecret = \"{HA_SECRET}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, state.join("keys.toml")).unwrap();
}

/// A view key: Home Assistant shows the outputs' states, read-only, and a
/// command published as that key (as HA would) changes nothing; once the
/// key's role is control (keys.toml changed while running) the same
/// connection's command drives the output and HA gets a switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_key_shows_states_but_commands_nothing_until_its_role_is_control() {
    let Some(venv) = require_venv() else {
        return;
    };
    let dir = TempDir::new("ha-view");
    write_keys(&dir, "view");
    let mqtt = free_port();
    let daemon = start_daemon(&dir, &Link::OwnBroker(mqtt), None);
    let ha = start_home_assistant(&venv, &dir, mqtt, true).await;

    // States: the output read-only, the input as before.
    assert_eq!(
        ha.state(GATE_RO, |s| s == "off").await.as_deref(),
        Some("off")
    );
    assert_eq!(ha.state(DOOR, |s| s == "off").await.as_deref(), Some("off"));
    for absent in [SWITCH, BUTTON] {
        let got = http(
            ha.addr,
            "GET",
            &format!("/api/states/{absent}"),
            Some(&ha.token),
            None,
        )
        .await;
        assert_eq!(
            got.map(|(s, _)| s),
            Some(404),
            "{absent} exists for a view key"
        );
    }

    // Commands as the HA key: the broker drops them (its ACL).
    let password = key_password(HA_SECRET.as_bytes(), DEVICE);
    let raw = mqtt_client(mqtt, Some(("homeassistant", password))).await;
    for (topic, payload) in [(SET, "ON"), (PULSE, "PRESS")] {
        raw.publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    assert_eq!(
        wait_state(ha.addr, &ha.token, GATE_RO, |s| s == "on", QUIET).await,
        None,
        "a view key's command changed the output"
    );
    assert!(
        !daemon.log_text().contains("control call"),
        "a view key's command reached the device"
    );

    // The role changes while running: the ACL and the bridge follow.
    write_keys(&dir, "control");
    assert_eq!(
        ha.state(SWITCH, |s| s == "off").await.as_deref(),
        Some("off"),
        "no switch once the key may command"
    );
    let t = Instant::now();
    while wait_state(
        ha.addr,
        &ha.token,
        SWITCH,
        |s| s == "on",
        Duration::from_secs(1),
    )
    .await
    .is_none()
    {
        assert!(
            t.elapsed() < LONG,
            "a control key's command never drove the output"
        );
        raw.publish(SET, QoS::AtLeastOnce, false, "ON")
            .await
            .unwrap();
    }
    assert!(
        daemon.log_text().lines().any(|l| l.contains("control call")
            && l.contains("gpio.set")
            && l.contains("key=homeassistant")
            && l.contains("control")),
        "no audit line naming the key and its role"
    );
}

/// The last will, apart from the broker: on an external Mosquitto that
/// outlives the daemon, a `kill -9` leaves only the will to say offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_device_turns_unavailable_through_its_last_will() {
    let Some(venv) = require_venv() else {
        return;
    };
    let dir = TempDir::new("ha-will");
    let broker = Broker::start();
    let mut daemon = start_daemon(&dir, &Link::External(broker.url()), Some("view"));
    let ha = start_home_assistant(&venv, &dir, broker.port, false).await;
    assert_eq!(
        ha.state(GATE_RO, |s| s == "off").await.as_deref(),
        Some("off")
    );

    // An external broker has no ACL of ours: anyone may publish commands
    // there. With a view key the bridge itself refuses them.
    let raw = mqtt_client(broker.port, None).await;
    for (topic, payload) in [(SET, "ON"), (PULSE, "PRESS")] {
        raw.publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    assert!(
        daemon
            .wait_line(|l| l.contains("command refused") && l.contains("role"))
            .await,
        "the bridge did not refuse a view key's command"
    );
    assert_eq!(
        wait_state(ha.addr, &ha.token, GATE_RO, |s| s == "on", QUIET).await,
        None,
        "a command ran on a view key"
    );
    assert!(
        !daemon
            .log_text()
            .lines()
            .any(|l| l.contains("control call") && l.contains("gpio.") && !l.contains("refused")),
        "a command ran on a view key"
    );

    daemon.child.kill().unwrap();
    let _ = daemon.child.wait();
    // The broker lives on (wait_status connects to it), so nothing but the
    // will can have told HA: the daemon had no time to say goodbye.
    let status = wait_status(
        broker.port,
        "campeer",
        DEVICE,
        |v| v["state"] == "offline",
        LONG,
    )
    .await;
    assert!(status.is_some(), "the broker never published the last will");
    assert_eq!(
        ha.state(GATE_RO, |s| s == "unavailable").await.as_deref(),
        Some("unavailable"),
        "{}",
        ha.proc.log_text()
    );
}
