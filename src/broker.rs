//! The device's own MQTT broker: Debian's Mosquitto, run as a child process
//! that the daemon configures, supervises and stops (docs/protocol.md#authorization-protocol-version-2,
//! "The device's own broker").
//!
//! # What runs
//!
//! [`ManagedBroker::start`] writes three files into a private runtime
//! directory (mode 0700, removed on stop): `mosquitto.conf`, `passwd` and
//! `acl`. The directory is a fresh subdirectory of `$RUNTIME_DIRECTORY`
//! (systemd's `RuntimeDirectory=`), else of `$XDG_RUNTIME_DIR`, else of the
//! temporary directory. It then runs `mosquitto -c mosquitto.conf` on a
//! supervisor thread (`mosquitto`), which restarts it with backoff and
//! jitter if it dies (the daemon's MQTT link reconnects by itself), and on
//! [`ManagedBroker::stop`] sends SIGTERM, then SIGKILL after
//! [`STOP_GRACE`]. The child gets `PR_SET_PDEATHSIG(SIGKILL)`, tied to the
//! supervisor thread, which lives as long as the broker: a daemon killed
//! with SIGKILL leaves no Mosquitto behind. Mosquitto's log (stderr) is
//! read line by line into this process's log, each line prefixed
//! `mosquitto:`; errors and warnings at `warn`, the rest at `debug`.
//!
//! When the daemon runs as root, the child is started as the `mosquitto`
//! user (`nobody` where that does not exist) and the runtime directory and
//! its files are handed to that user. The switch is made here, before
//! exec, rather than by Mosquitto itself: a process that changes its user
//! loses its parent-death signal. Under the systemd unit the daemon and its
//! broker both run as `campeer`.
//!
//! # Listeners
//!
//! `broker.listen` (TCP, for the LAN; may be absent) and two loopback
//! listeners on 127.0.0.1, each on a free port:
//! [`ManagedBroker::bridge_addr`] for the page's WebSocket bridges (`/mqtt`
//! and `broker.ws_listen`), and [`ManagedBroker::device_addr`] for the
//! daemon's own connection only. Browsers take a bridge slot before any
//! MQTT login, so however many of them connect, the device's listener
//! keeps its places for the device's reconnects. The loopback ports are
//! chosen once per start and kept across restarts of the child. The LAN and
//! bridge listeners take at most [`MAX_CONNECTIONS`] clients each, the
//! device's [`DEVICE_CONNECTIONS`]; all take QoS 0/1 (a QoS 2 publish
//! closes the connection).
//!
//! # Who may connect
//!
//! Anonymous clients are refused unless `open` is set (the device's access
//! mode is `open`), in which case they get a viewer's rights. Clients
//! holding an access key log in with user name = key id and password =
//! [`key_password`]; the password file holds Mosquitto's `$6$` hashes
//! (salted SHA-512), written here rather than by `mosquitto_passwd` so no
//! secret ever appears on a command line. Mosquitto 2.0 also reads `$7$`
//! (PBKDF2); its iterations add nothing for a password that is itself 256
//! bits of HMAC output, and `$6$` keeps each connection cheap on a Pi Zero.
//!
//! The daemon's own connection logs in as [`DEVICE_USER`], a name no key id
//! can have (key ids never contain `.`), with a random password and a
//! random client id, both new at every start ([`ManagedBroker::device_login`]).
//! MQTT lets any client take over a connection by connecting with the same
//! client id, and Mosquitto cannot reserve a client id for one user (its
//! `use_username_as_clientid` would also make two viewers sharing a key
//! throw each other off), so the device's client id is a 128-bit secret:
//! no ACL grants `$SYS`, the status carries no client id, and the only place
//! it appears is this process's own log.
//!
//! # What each one may do (the ACL)
//!
//! With `B = prefix/device_id`: a key user (and, when open, an anonymous
//! client) may read `B/status` and `B/session/+/out` and write only
//! `B/session/+/in`; the device user reads and writes `B/#`. The Home
//! Assistant key (`homeassistant.key`, when discovery is on) reads states
//! instead, and writes commands only if its role is `control`. Mosquitto
//! checks the ACL at every delivery, so a subscription to `#` is accepted
//! but delivers only what the ACL allows.
//!
//! # Keys that change while running
//!
//! [`ManagedBroker::update_keys`] rewrites `passwd` and `acl` (each written
//! to a temporary name, then renamed over the old one) and sends SIGHUP.
//! Mosquitto 2.0.11 then re-checks every connected client against the new
//! password file and closes the connections of users that no longer log in
//! (a removed key, or one whose secret changed); other connections, the
//! daemon's own included, stay up. `tests/own_broker.rs` checks both.
//!
//! # Limits
//!
//! Payloads over [`MAX_PAYLOAD`] are dropped (`message_size_limit`; QoS 1
//! is still acknowledged), and a packet over [`MAX_PACKET`] closes its
//! connection (`max_packet_size`). No persistence; at most
//! [`MAX_QUEUED_MESSAGES`] QoS 1 messages and [`MAX_QUEUED_BYTES`] queued
//! per client; retained messages are available (the device's status is
//! retained). Mosquitto's heap is capped at [`MEMORY_LIMIT`]
//! (`memory_limit`), sized for a Pi Zero: past it a message is dropped and
//! the client that sent or was to receive it is disconnected, instead of
//! the broker growing until the kernel kills something.
//!
//! The MQTT-over-WebSocket listener (`ws_listen`) is served in this process
//! and bridged, byte for byte, to the bridge's loopback listener: Mosquitto sees a
//! browser as one more TCP client and asks it for a key like any other.
//! Each handshake runs in its own task with a deadline, so a client that
//! stalls mid-handshake blocks no one.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha512};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::control::config::Role;

/// Largest publish payload the broker forwards, bytes (docs/protocol.md: 64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest MQTT packet a client may send before it is disconnected: a
/// [`MAX_PAYLOAD`] payload plus room for its topic and header.
pub const MAX_PACKET: usize = MAX_PAYLOAD + 1024;
/// Most concurrent clients on the LAN listener, and on the bridge's.
pub const MAX_CONNECTIONS: usize = 64;
/// Most concurrent clients on the device's own loopback listener: its one
/// connection, a reconnect overlapping the old one, the start-up probe.
pub const DEVICE_CONNECTIONS: usize = 4;
/// Most QoS 1 messages queued for one client beyond those in flight.
pub const MAX_QUEUED_MESSAGES: usize = 100;
/// Most bytes queued for one client: four largest payloads.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;
/// Most heap Mosquitto may use, bytes. 129 clients at
/// [`MAX_QUEUED_BYTES`] could ask for more; this is the hard cap.
pub const MEMORY_LIMIT: usize = 32 * 1024 * 1024;
/// The user name of the daemon's own connection. Key ids are
/// `[a-z0-9_-]`, so none can be this.
pub const DEVICE_USER: &str = "campeer.device";
/// What a key's MQTT password is computed over (before the device id).
/// How long Mosquitto may take to listen at start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Mosquitto has to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Restart backoff after the child dies.
const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long before dying restarts from the backoff floor.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Longest Mosquitto log line passed on; the rest is cut.
const LOG_LINE_MAX: usize = 512;
/// Mosquitto log lines kept for a start-up error message.
const LOG_TAIL: usize = 12;
/// Where Debian installs Mosquitto, when it is not on `PATH`.
const DEFAULT_MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// One access key as the broker needs it: its id (the MQTT user name), its
/// secret (the HMAC key of the MQTT password) and its role (what the Home
/// Assistant key may write).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerKey {
    /// Key id, `[a-z0-9][a-z0-9_-]{0,62}` (a leading `_` or `-` is accepted
    /// too); any other id is left out of the broker's files with a warning.
    pub id: String,
    /// The secret's bytes (the UTF-8 of the configured text).
    pub secret: Vec<u8>,
    /// The key's role. Viewers' rights do not depend on it (a session's
    /// role is checked by the daemon on its signed offer); the Home
    /// Assistant key may write commands only with [`Role::Control`].
    pub role: Role,
}

// Hand-written: a secret never reaches a log.
impl fmt::Debug for BrokerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerKey")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How to run the device's own broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    /// The device id: topics are under `prefix/device_id`.
    pub device_id: String,
    /// The topic root (`mqtt.prefix`); may contain `/`.
    pub prefix: String,
    /// MQTT (TCP) listener for other machines (`broker.listen`); `None`
    /// for none. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// MQTT-over-WebSocket listener served in this process and bridged to
    /// the loopback listener (`broker.ws_listen`); `None` for none.
    pub ws_listen: Option<SocketAddr>,
    /// The Mosquitto binary (`broker.mosquitto`); `None`: `mosquitto` on
    /// `PATH`, else `/usr/sbin/mosquitto`.
    pub mosquitto: Option<PathBuf>,
    /// Open access: anonymous clients connect, with a viewer's rights.
    pub open: bool,
    /// Home Assistant discovery is on: the key with this id gets Home
    /// Assistant's rights instead of a viewer's, and the device may write
    /// its discovery configs.
    pub homeassistant: Option<HaRights>,
}

/// Who Home Assistant is on the own broker, and where its discovery lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaRights {
    /// The access key Home Assistant logs in with (`homeassistant.key`).
    pub key_id: String,
    /// `homeassistant.discovery_prefix`.
    pub discovery_prefix: String,
}

/// Home Assistant's rights under `base` (ACL `topic` lines): read the
/// status, states, camera picture and discovery, write its own birth
/// message; with a `control` key also write commands (`set`, `pulse`).
/// Nothing else: a `view` key gets states only.
fn ha_rules(base: &str, ha: &HaRights, role: Role) -> String {
    let d = &ha.discovery_prefix;
    let commands = match role {
        Role::Control => format!("topic write {base}/ha/+/set\ntopic write {base}/ha/+/pulse\n"),
        Role::View => String::new(),
    };
    format!(
        "topic read {base}/status\ntopic read {base}/ha/+/state\ntopic read {base}/ha/camera\n\
         {commands}topic read {d}/#\ntopic write {d}/status\n"
    )
}

/// Why the device's own broker could not start or be updated.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No Mosquitto binary.
    #[error("the device's own MQTT broker needs Mosquitto, which is not installed (looked for {looked}): apt install mosquitto, or set broker.mosquitto to its path")]
    NotInstalled {
        /// Where it was looked for.
        looked: String,
    },
    /// A prefix or device id that cannot be written into the ACL.
    #[error("the device's own MQTT broker: topic root {0:?} contains a space, control character, + or #")]
    BadTopicRoot(String),
    /// The runtime directory could not be made.
    #[error("the device's own MQTT broker: cannot create its runtime directory {}: {source}", path.display())]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A configuration, password or ACL file could not be written.
    #[error("the device's own MQTT broker: cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A listener of ours could not be bound (the WebSocket one, or a
    /// port-0 request resolved before Mosquitto starts).
    #[error("the device's own MQTT broker: cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `MQTT (TCP)` or `MQTT over WebSocket`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Mosquitto could not be executed.
    #[error("the device's own MQTT broker: cannot run {}: {source}", exe.display())]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Mosquitto exited before it listened; `log` is the end of its log
    /// (e.g. `Error: Address already in use`).
    #[error("the device's own MQTT broker: mosquitto exited while starting ({status}; listeners {listeners}): {log}")]
    Exited {
        /// How it ended.
        status: String,
        /// The listeners it was asked for.
        listeners: String,
        /// Its last log lines.
        log: String,
    },
    /// Mosquitto did not listen in time.
    #[error("the device's own MQTT broker: mosquitto not listening after {after:?}: {log}")]
    Timeout {
        /// How long it was given.
        after: Duration,
        /// Its last log lines.
        log: String,
    },
    /// A thread could not be started.
    #[error("the device's own MQTT broker: cannot start: {0}")]
    Start(io::Error),
}

const WHAT_TCP: &str = "MQTT (TCP)";
const WHAT_WS: &str = "MQTT over WebSocket";

/// The MQTT password of a key on this device (docs/protocol.md#authorization-protocol-version-2).
pub use crate::signaling::auth::key_password;

/// Whether `id` can be a key user: the protocol's key ids,
/// `[a-z0-9][a-z0-9_-]{0,62}`, which keeps every user name free of what
/// the password and ACL files treat specially (`:`, spaces, line ends) and
/// apart from [`DEVICE_USER`].
fn valid_key_id(id: &str) -> bool {
    crate::control::config::is_valid_key_id(id)
}

/// Finds the Mosquitto binary: `configured`, else `mosquitto` on `PATH`,
/// else `/usr/sbin/mosquitto` (Debian's place, not on a user's `PATH`).
pub fn find_mosquitto(configured: Option<&Path>) -> Result<PathBuf, BrokerError> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(BrokerError::NotInstalled {
                looked: p.display().to_string(),
            })
        };
    }
    let mut looked = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("mosquitto");
            if p.is_file() {
                return Ok(p);
            }
        }
        looked.push("PATH".to_owned());
    }
    let p = PathBuf::from(DEFAULT_MOSQUITTO);
    if p.is_file() {
        return Ok(p);
    }
    looked.push(DEFAULT_MOSQUITTO.to_owned());
    Err(BrokerError::NotInstalled {
        looked: looked.join(", "),
    })
}

/// A Mosquitto `$6$` password-file entry: salted SHA-512, the salt and the
/// digest in standard base64, as `mosquitto_passwd -H sha512` writes them.
fn password_entry(user: &str, password: &str, salt: &[u8; 12]) -> String {
    let mut h = Sha512::new();
    h.update(password.as_bytes());
    h.update(salt);
    format!(
        "{user}:$6${}${}\n",
        STANDARD.encode(salt),
        STANDARD.encode(h.finalize())
    )
}

/// The viewer's rights under `base` (ACL `topic` lines).
fn viewer_rules(base: &str) -> String {
    format!(
        "topic read {base}/status\ntopic read {base}/session/+/out\ntopic write {base}/session/+/in\n"
    )
}

/// The ACL file: the anonymous section (open mode only), the device user,
/// then one block per key (id and role).
fn acl_text(base: &str, open: bool, keys: &[(&str, Role)], ha: Option<&HaRights>) -> String {
    let mut s =
        String::from("# Written by campeer for its own broker; rewritten when keys change.\n");
    if open {
        s.push_str("# Open access: anonymous clients are viewers.\n");
        s.push_str(&viewer_rules(base));
    }
    s.push_str(&format!("\nuser {DEVICE_USER}\ntopic readwrite {base}/#\n"));
    if let Some(ha) = ha {
        let (d, node) = (
            &ha.discovery_prefix,
            base.rsplit('/').next().unwrap_or(base),
        );
        s.push_str(&format!(
            "topic readwrite {d}/+/campeer_{node}/+/config\ntopic read {d}/status\n"
        ));
    }
    for &(id, role) in keys {
        s.push_str(&format!("\nuser {id}\n"));
        match ha {
            Some(ha) if ha.key_id == id => s.push_str(&ha_rules(base, ha, role)),
            _ => s.push_str(&viewer_rules(base)),
        }
    }
    s
}

/// What the broker's files say, apart from the keys.
struct Layout {
    dir: PathBuf,
    conf: PathBuf,
    passwd: PathBuf,
    acl: PathBuf,
    /// The user Mosquitto runs as when we are root: (name, uid, gid).
    owner: Option<(String, u32, u32)>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        Layout {
            conf: dir.join("mosquitto.conf"),
            passwd: dir.join("passwd"),
            acl: dir.join("acl"),
            dir,
            owner: mosquitto_owner(),
        }
    }

    /// Writes `text` to `path` atomically: a temporary file (0600, handed
    /// to Mosquitto's user when we are root), then a rename over `path`.
    fn write(&self, path: &Path, text: &str) -> Result<(), BrokerError> {
        let fail = |source| BrokerError::WriteFile {
            path: path.to_owned(),
            source,
        };
        let owner = self.owner.as_ref().map(|(_, uid, gid)| (*uid, *gid));
        crate::private_file::write_private(path, text.as_bytes(), owner).map_err(fail)
    }
}

/// When this process is root, the user Mosquitto will switch to.
fn mosquitto_owner() -> Option<(String, u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in ["mosquitto", "nobody"] {
        let c = std::ffi::CString::new(name).expect("no NUL in a literal");
        // SAFETY: getpwnam with a valid C string; the result is read at
        // once, before any other getpw* call on this thread. It is only
        // called at start, from one thread.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null result of getpwnam points to a valid passwd.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Some((name.to_owned(), uid, gid));
        }
    }
    None
}

/// A fresh 0700 directory for the broker's files.
fn make_runtime_dir() -> Result<PathBuf, BrokerError> {
    let base = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).next())
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut rnd = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut rnd);
    let dir = base.join(format!(
        "campeer-broker-{}-{}",
        std::process::id(),
        URL_SAFE_NO_PAD.encode(rnd)
    ));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| BrokerError::RuntimeDir {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

/// The child that is running now, so signals never reach a recycled pid.
struct ChildHandle {
    pid: i32,
    /// False once the child has exited (before it is reaped): signals are
    /// sent only under this lock and only while it is true.
    alive: Mutex<bool>,
}

impl ChildHandle {
    fn signal(&self, sig: i32) -> bool {
        let alive = self.alive.lock().unwrap_or_else(|p| p.into_inner());
        if *alive {
            // SAFETY: kill(2) on a child we have not reaped yet.
            unsafe { libc::kill(self.pid, sig) == 0 }
        } else {
            false
        }
    }
}

/// State shared by the broker handle, its supervisor and log threads.
struct Shared {
    layout: Layout,
    base: String,
    device_id: String,
    device_password: String,
    open: bool,
    homeassistant: Option<HaRights>,
    /// Serializes writers of `passwd` and `acl`.
    keys: Mutex<()>,
    current: Mutex<Option<Arc<ChildHandle>>>,
    log_tail: Mutex<VecDeque<String>>,
    starts: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn tail(&self) -> String {
        let t = self.log_tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_empty() {
            "(it logged nothing)".into()
        } else {
            t.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }

    fn current(&self) -> Option<Arc<ChildHandle>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hands the runtime directory to Mosquitto's user (when we are root)
    /// and writes the password, ACL and configuration files. Returns how
    /// many keys may log in.
    fn write_files(&self, keys: &[BrokerKey], conf: &str) -> Result<usize, BrokerError> {
        if let Some((_, uid, gid)) = &self.layout.owner {
            std::os::unix::fs::chown(&self.layout.dir, Some(*uid), Some(*gid)).map_err(
                |source| BrokerError::RuntimeDir {
                    path: self.layout.dir.clone(),
                    source,
                },
            )?;
        }
        let n = self.write_keys(keys)?;
        self.layout.write(&self.layout.conf, conf)?;
        Ok(n)
    }

    /// Rewrites the password and ACL files for `keys`.
    fn write_keys(&self, keys: &[BrokerKey]) -> Result<usize, BrokerError> {
        let _guard = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = rand::thread_rng();
        let mut salt = [0u8; 12];
        rng.fill_bytes(&mut salt);
        let mut passwd = password_entry(DEVICE_USER, &self.device_password, &salt);
        let mut ids: Vec<(&str, Role)> = Vec::with_capacity(keys.len());
        for k in keys {
            if !valid_key_id(&k.id) {
                warn!(key = %k.id.escape_debug(), "access key left out of the broker: its id is not [a-z0-9_-]{{1,63}}");
                continue;
            }
            if ids.iter().any(|(id, _)| *id == k.id) {
                warn!(key = %k.id, "access key listed twice; the broker uses the first");
                continue;
            }
            rng.fill_bytes(&mut salt);
            passwd.push_str(&password_entry(
                &k.id,
                &key_password(&k.secret, &self.device_id),
                &salt,
            ));
            ids.push((&k.id, k.role));
        }
        // The ACL first: a user that can log in before its rules exist
        // could do nothing anyway, but a removed user's rules go last.
        self.layout.write(
            &self.layout.acl,
            &acl_text(&self.base, self.open, &ids, self.homeassistant.as_ref()),
        )?;
        self.layout.write(&self.layout.passwd, &passwd)?;
        Ok(ids.len())
    }
}

/// Restart pacing for the child: backoff with jitter, from the floor again
/// after a run of [`STABLE_RUN`]. Pure: the caller measures the run.
#[derive(Debug)]
struct RestartPolicy {
    backoff: Backoff,
}

impl RestartPolicy {
    fn new() -> RestartPolicy {
        RestartPolicy {
            backoff: Backoff::new(RESTART_MIN, RESTART_MAX),
        }
    }

    /// The delay before the next start, after a child that ran for `ran`;
    /// `unit` in [0, 1) is the jitter.
    fn after_exit(&mut self, ran: Duration, unit: f64) -> Duration {
        if ran >= STABLE_RUN {
            self.backoff.reset();
        }
        self.backoff.next_delay(unit)
    }
}

/// What the supervisor thread hears.
enum Event {
    Stop,
    Exited(ExitStatus),
}

/// The device's own MQTT broker: a supervised Mosquitto child. Stops when
/// dropped.
pub struct ManagedBroker {
    shared: Arc<Shared>,
    tcp: Option<SocketAddr>,
    bridge: SocketAddr,
    device: SocketAddr,
    ws: Option<SocketAddr>,
    client_id: String,
    events: std_mpsc::Sender<Event>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    ws_stop: Option<oneshot::Sender<()>>,
    ws_thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for ManagedBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedBroker")
            .field("tcp", &self.tcp)
            .field("bridge", &self.bridge)
            .field("device", &self.device)
            .field("ws", &self.ws)
            .field("dir", &self.shared.layout.dir)
            .finish()
    }
}

/// Two different free loopback ports: the bridge's and the device's.
fn two_loopback_ports() -> Result<(SocketAddr, SocketAddr), BrokerError> {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let bridge = resolve_port(any)?;
    for _ in 0..8 {
        let device = resolve_port(any)?;
        if device != bridge {
            return Ok((bridge, device));
        }
    }
    Err(BrokerError::Bind {
        what: WHAT_TCP,
        addr: any,
        source: io::Error::other("no second free loopback port"),
    })
}

/// A concrete port for a port-0 request (Mosquitto reads port 0 as a Unix
/// socket), found by binding and releasing it.
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let fail = |source| BrokerError::Bind {
        what: WHAT_TCP,
        addr,
        source,
    };
    let probe = std::net::TcpListener::bind(addr).map_err(fail)?;
    probe.local_addr().map_err(fail)
}

fn conf_text(
    layout: &Layout,
    open: bool,
    listen: Option<SocketAddr>,
    bridge: SocketAddr,
    device: SocketAddr,
) -> String {
    let mut s = format!(
        "# Written by campeer for its own broker; rewritten at every start.\n\
         per_listener_settings false\n\
         allow_anonymous {open}\n\
         password_file {}\n\
         acl_file {}\n\
         persistence false\n\
         retain_available true\n\
         message_size_limit {MAX_PAYLOAD}\n\
         max_packet_size {MAX_PACKET}\n\
         max_queued_messages {MAX_QUEUED_MESSAGES}\n\
         max_queued_bytes {MAX_QUEUED_BYTES}\n\
         max_inflight_messages 20\n\
         memory_limit {MEMORY_LIMIT}\n\
         set_tcp_nodelay true\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_timestamp false\n",
        layout.passwd.display(),
        layout.acl.display(),
    );
    // The device's listener comes last: once it accepts, Mosquitto has
    // bound every listener before it.
    let listeners = listen
        .into_iter()
        .map(|a| (a, MAX_CONNECTIONS))
        .chain([(bridge, MAX_CONNECTIONS), (device, DEVICE_CONNECTIONS)]);
    for (addr, max) in listeners {
        s.push_str(&format!(
            "\nlistener {} {}\nmax_connections {max}\nmax_qos 1\n",
            addr.port(),
            addr.ip()
        ));
    }
    s
}

/// `prefix/device_id`, refused when it could not be written into the ACL.
fn topic_root(settings: &BrokerSettings) -> Result<String, BrokerError> {
    let base = format!("{}/{}", settings.prefix, settings.device_id);
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '+' || c == '#';
    if settings.prefix.is_empty() || settings.device_id.is_empty() || base.chars().any(bad) {
        return Err(BrokerError::BadTopicRoot(base));
    }
    Ok(base)
}

/// The device's own login, new at every start: a random password and a
/// random 128-bit client id (see the module documentation).
fn new_device_login() -> (String, String) {
    let mut rng = rand::thread_rng();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let mut cid = [0u8; 16];
    rng.fill_bytes(&mut cid);
    (
        URL_SAFE_NO_PAD.encode(secret),
        format!("{DEVICE_USER}.{}", URL_SAFE_NO_PAD.encode(cid)),
    )
}

/// Runs the supervisor thread and waits until Mosquitto listens (or
/// could not start).
fn start_supervisor(
    exe: PathBuf,
    shared: Arc<Shared>,
    device: SocketAddr,
    listeners: String,
    (events_tx, events_rx): (std_mpsc::Sender<Event>, std_mpsc::Receiver<Event>),
) -> Result<std::thread::JoinHandle<()>, BrokerError> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), BrokerError>>();
    let supervisor = std::thread::Builder::new()
        .name("mosquitto".into())
        .spawn(move || {
            supervise(
                exe, shared, device, listeners, events_tx, events_rx, ready_tx,
            )
        })
        .map_err(BrokerError::Start)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(supervisor),
        Ok(Err(e)) => {
            let _ = supervisor.join();
            Err(e)
        }
        Err(_) => {
            let _ = supervisor.join();
            Err(BrokerError::Start(io::Error::other(
                "the supervisor thread ended while starting",
            )))
        }
    }
}

impl ManagedBroker {
    /// Writes the broker's files, starts Mosquitto and returns once it
    /// listens. Blocks for that long (typically tens of milliseconds; at
    /// most about ten seconds), so call it before the async work starts or
    /// from a blocking context.
    pub fn start(
        settings: BrokerSettings,
        keys: &[BrokerKey],
    ) -> Result<ManagedBroker, BrokerError> {
        let base = topic_root(&settings)?;
        let exe = find_mosquitto(settings.mosquitto.as_deref())?;
        let tcp = settings.listen.map(resolve_port).transpose()?;
        let (bridge, device) = two_loopback_ports()?;
        let ws_listener = match settings.ws_listen {
            Some(addr) => Some(listen_reusable(addr).map_err(|source| BrokerError::Bind {
                what: WHAT_WS,
                addr,
                source,
            })?),
            None => None,
        };
        let ws = match &ws_listener {
            Some(l) => Some(l.local_addr().map_err(BrokerError::Start)?),
            None => None,
        };

        let (device_password, client_id) = new_device_login();
        let shared = Arc::new(Shared {
            layout: Layout::new(make_runtime_dir()?),
            base,
            device_id: settings.device_id.clone(),
            device_password,
            open: settings.open,
            homeassistant: settings.homeassistant.clone(),
            keys: Mutex::new(()),
            current: Mutex::new(None),
            log_tail: Mutex::new(VecDeque::new()),
            starts: std::sync::atomic::AtomicU64::new(0),
        });
        let cleanup = |e: BrokerError| {
            let _ = std::fs::remove_dir_all(&shared.layout.dir);
            e
        };
        let conf = conf_text(&shared.layout, settings.open, tcp, bridge, device);
        let n = shared.write_files(keys, &conf).map_err(cleanup)?;

        let (events_tx, events_rx) = std_mpsc::channel::<Event>();
        let listeners = match tcp {
            Some(t) => format!("{t}, {bridge} and {device}"),
            None => format!("{bridge} and {device}"),
        };
        let supervisor = start_supervisor(
            exe,
            shared.clone(),
            device,
            listeners,
            (events_tx.clone(), events_rx),
        )
        .map_err(cleanup)?;
        let (ws_stop, ws_thread) = match ws_listener {
            Some(l) => {
                let (tx, rx) = oneshot::channel();
                let t = std::thread::Builder::new()
                    .name("mqtt-ws-bridge".into())
                    .spawn(move || run_ws_bridge(l, bridge, rx));
                match t {
                    Ok(t) => (Some(tx), Some(t)),
                    Err(e) => {
                        let _ = events_tx.send(Event::Stop);
                        let _ = supervisor.join();
                        return Err(cleanup(BrokerError::Start(e)));
                    }
                }
            }
            None => (None, None),
        };
        info!(tcp = ?tcp, bridge = %bridge, device = %device, ws = ?ws, keys = n, open = settings.open,
              dir = %shared.layout.dir.display(), "the device's own MQTT broker (mosquitto) is listening");
        Ok(ManagedBroker {
            shared,
            tcp,
            bridge,
            device,
            ws,
            client_id,
            events: events_tx,
            supervisor: Some(supervisor),
            ws_stop,
            ws_thread,
        })
    }

    /// The LAN listener (`broker.listen`), with its port resolved.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The bridge's loopback listener (127.0.0.1): the page's WebSocket
    /// bridges (`/mqtt`, `broker.ws_listen`) connect here.
    pub fn bridge_addr(&self) -> SocketAddr {
        self.bridge
    }

    /// The device's loopback listener (127.0.0.1), for the daemon's own
    /// connection only.
    pub fn device_addr(&self) -> SocketAddr {
        self.device
    }

    /// The MQTT-over-WebSocket listener served in this process, if any.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws
    }

    /// `mqtt://127.0.0.1:PORT`, the device's loopback listener (no
    /// credentials: those are [`device_login`](Self::device_login)).
    pub fn local_url(&self) -> String {
        format!("mqtt://{}", self.device)
    }

    /// The daemon's own login: (client id, user name, password). The
    /// client id and password are random, new at every start.
    pub fn device_login(&self) -> (String, String, String) {
        (
            self.client_id.clone(),
            DEVICE_USER.to_owned(),
            self.shared.device_password.clone(),
        )
    }

    /// The pid of the running Mosquitto, if one runs now.
    pub fn mosquitto_pid(&self) -> Option<u32> {
        self.shared.current().map(|c| c.pid as u32)
    }

    /// How many times Mosquitto was started (1 + restarts).
    pub fn starts(&self) -> u64 {
        self.shared
            .starts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the keys that may log in: rewrites the password and ACL
    /// files and makes Mosquitto reload them (SIGHUP). Connections of keys
    /// that are gone (or whose secret changed) are closed by Mosquitto;
    /// all others stay up, under the new ACL (Mosquitto checks it at every
    /// publish and delivery, so a Home Assistant key turned `view` can no
    /// longer command from its next message on). A child that is restarting reads the new files
    /// when it starts.
    pub fn update_keys(&self, keys: &[BrokerKey]) -> Result<(), BrokerError> {
        let n = self.shared.write_keys(keys)?;
        let reloaded = self
            .shared
            .current()
            .is_some_and(|c| c.signal(libc::SIGHUP));
        info!(
            keys = n,
            reloaded, "the device's own MQTT broker: access keys updated"
        );
        Ok(())
    }

    /// Stops Mosquitto (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and
    /// the WebSocket bridge, and removes the runtime directory. Same as
    /// dropping.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.ws_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.ws_thread.take() {
            let _ = t.join();
        }
        let _ = self.events.send(Event::Stop);
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
            let _ = std::fs::remove_dir_all(&self.shared.layout.dir);
            debug!("the device's own MQTT broker stopped");
        }
    }
}

impl Drop for ManagedBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts one Mosquitto child, with its log reader and exit waiter.
fn spawn_child(
    exe: &Path,
    shared: &Arc<Shared>,
    events: &std_mpsc::Sender<Event>,
) -> Result<Arc<ChildHandle>, BrokerError> {
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(exe);
    cmd.arg("-c")
        .arg(&shared.layout.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((_, uid, gid)) = &shared.layout.owner {
        // std drops the supplementary groups too when it switches from root.
        cmd.uid(*uid).gid(*gid);
    }
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Dies with the thread that started it (the supervisor, which
            // lives as long as the broker), even if we are SIGKILLed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child: Child = cmd.spawn().map_err(|source| BrokerError::Spawn {
        exe: exe.to_owned(),
        source,
    })?;
    shared
        .starts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = Arc::new(ChildHandle {
        pid: child.id() as i32,
        alive: Mutex::new(true),
    });
    if let Some(stderr) = child.stderr.take() {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("mosquitto-log".into())
            .spawn(move || forward_log(io::BufReader::new(stderr), &shared));
    }
    let waiter = {
        let handle = handle.clone();
        let events = events.clone();
        std::thread::Builder::new()
            .name("mosquitto-wait".into())
            .spawn(move || {
                let status = wait_child(child, &handle);
                let _ = events.send(Event::Exited(status));
            })
    };
    if let Err(e) = waiter {
        // Without a waiter nobody would reap it: kill it here.
        handle.signal(libc::SIGKILL);
        return Err(BrokerError::Start(e));
    }
    *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.clone());
    Ok(handle)
}

/// Waits for `child` to exit, marks it dead (under the lock signals are
/// sent under), then reaps it.
fn wait_child(mut child: Child, handle: &ChildHandle) -> ExitStatus {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own unreaped child; WNOWAIT leaves it
        // unreaped, so its pid cannot be recycled before `alive` is false.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                handle.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    *handle.alive.lock().unwrap_or_else(|p| p.into_inner()) = false;
    match child.wait() {
        Ok(s) => s,
        // Only if it was already reaped, which nothing else does.
        Err(_) => std::os::unix::process::ExitStatusExt::from_raw(0),
    }
}

/// Reads Mosquitto's log into ours, one bounded line at a time.
fn forward_log(mut r: impl BufRead, shared: &Shared) {
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match read_line_capped(&mut r, &mut line, LOG_LINE_MAX) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = strip_timestamp(text.trim_end());
        if text.is_empty() {
            continue;
        }
        if text.starts_with("Error") || text.starts_with("Warning") {
            warn!("mosquitto: {text}");
        } else {
            debug!("mosquitto: {text}");
        }
        let mut tail = shared.log_tail.lock().unwrap_or_else(|p| p.into_inner());
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(text.to_owned());
    }
}

/// Mosquitto prints a few lines before `log_timestamp false` takes effect;
/// drops their `1234567890: ` prefix.
fn strip_timestamp(s: &str) -> &str {
    match s.split_once(": ") {
        Some((t, rest)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => s,
    }
}

/// Reads up to and including `\n`, keeping at most `cap` bytes of it (the
/// rest of a longer line is read and dropped). Returns the bytes consumed.
fn read_line_capped(r: &mut impl BufRead, out: &mut Vec<u8>, cap: usize) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        r.consume(n);
        consumed += n;
        if done {
            return Ok(consumed);
        }
    }
}

/// Waits until the device's loopback listener (the last one) accepts, or
/// the child exits.
fn wait_listening(
    bridge: SocketAddr,
    events: &std_mpsc::Receiver<Event>,
    shared: &Shared,
    listeners: &str,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match events.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Exited(status)) => {
                // Let the log reader catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                let mut log = shared.tail();
                if log.contains("Address already in use") {
                    log.push_str(" (another broker, such as the system's mosquitto.service, may hold the port: `systemctl disable --now mosquitto`, or change broker.listen)");
                }
                return Err(BrokerError::Exited {
                    status: status.to_string(),
                    listeners: listeners.to_owned(),
                    log,
                });
            }
            Ok(Event::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                return Err(BrokerError::Start(io::Error::other(
                    "stopped while starting",
                )));
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
        }
        if std::net::TcpStream::connect_timeout(&bridge, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::Timeout {
                after: START_TIMEOUT,
                log: shared.tail(),
            });
        }
    }
}

/// Stops the child: SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for it.
fn terminate(child: &ChildHandle, events: &std_mpsc::Receiver<Event>) {
    child.signal(libc::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Exited(_)) | Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Event::Stop) => {}
            Err(std_mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    warn!("mosquitto did not stop within {STOP_GRACE:?} of SIGTERM; killing it");
    child.signal(libc::SIGKILL);
    loop {
        match events.recv_timeout(Duration::from_secs(5)) {
            Ok(Event::Exited(_)) | Err(_) => return,
            Ok(Event::Stop) => {}
        }
    }
}

/// The body of the `mosquitto` thread: starts the child, reports the first
/// start to `ready`, restarts it with backoff whenever it dies, and stops
/// it on [`Event::Stop`].
fn supervise(
    exe: PathBuf,
    shared: Arc<Shared>,
    bridge: SocketAddr,
    listeners: String,
    events_tx: std_mpsc::Sender<Event>,
    events: std_mpsc::Receiver<Event>,
    ready: std_mpsc::Sender<Result<(), BrokerError>>,
) {
    let mut ready = Some(ready);
    let mut policy = RestartPolicy::new();
    loop {
        let started = Instant::now();
        let child = match spawn_child(&exe, &shared, &events_tx) {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                let delay = policy.after_exit(Duration::ZERO, rand::random::<f64>());
                warn!("{e}; trying again in {delay:?}");
                match events.recv_timeout(delay) {
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        };
        if let Some(r) = ready.take() {
            if let Err(e) = wait_listening(bridge, &events, &shared, &listeners) {
                if !matches!(e, BrokerError::Exited { .. }) {
                    terminate(&child, &events);
                }
                let _ = r.send(Err(e));
                return;
            }
            let _ = r.send(Ok(()));
        } else {
            info!(pid = child.pid, "mosquitto restarted");
        }
        let status = match events.recv() {
            Ok(Event::Exited(status)) => status,
            Ok(Event::Stop) | Err(_) => {
                terminate(&child, &events);
                *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return;
            }
        };
        *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let delay = policy.after_exit(started.elapsed(), rand::random::<f64>());
        warn!(%status, "mosquitto exited; restarting it in {delay:?}");
        match events.recv_timeout(delay) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// A non-blocking listener with SO_REUSEADDR, as tokio's own `bind` makes
/// them: a restarted daemon must get its port back at once, even while the
/// connections its previous run closed linger in TIME_WAIT.
fn listen_reusable(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The body of the `mqtt-ws-bridge` thread.
fn run_ws_bridge(listener: std::net::TcpListener, target: SocketAddr, stop: oneshot::Receiver<()>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!("MQTT over WebSocket not served: cannot start its runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                warn!("MQTT over WebSocket not served: {e}");
                return;
            }
        };
        tokio::select! {
            r = serve_websocket(listener, target) => warn!(error = ?r.err(), "MQTT over WebSocket server ended"),
            _ = stop => debug!("MQTT over WebSocket bridge stopping"),
        }
    });
    // Dropping the runtime here cancels every connection task.
}

/// The bridge itself is the page server's (web::ws_bridge): one copy,
/// with its guards.
async fn serve_websocket(listener: tokio::net::TcpListener, target: SocketAddr) -> io::Result<()> {
    crate::web::ws_bridge::serve_websocket(listener, target).await
}

#[cfg(test)]
mod tests;
