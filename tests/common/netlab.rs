//! A small emulated Internet made of real kernel parts, for tests that
//! need NATs and a TURN server: network namespaces joined by veth pairs,
//! nftables symmetric NAT, Debian's coturn and Mosquitto. Needs root.
//!
//! ```text
//!   home ns            home router ns            internet ns              viewer router ns        viewer ns
//!  10.0.1.2/24 ──veth── 10.0.1.1 | 198.18.1.2 ──veth── 198.18.1.1            198.18.2.2 | 10.0.2.1 ──veth── 10.0.2.2/24
//!  (the device)        masquerade fully-random       198.18.0.1 (lo):  ──veth── 198.18.2.1   masquerade fully-random  (the viewer)
//!                                                    coturn :3478, Mosquitto :1883 (TCP), :8083 (websockets)
//! ```
//!
//! Every name carries the test process's pid and a counter, so tests in
//! parallel (and test binaries in parallel) never meet; everything is torn
//! down on drop, also when the test panics. The addresses exist only inside
//! the lab's own namespaces: nothing is routed to the host's interfaces.
//! docs/testing.md describes the design.

#![allow(dead_code)]

use super::TempDir;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The "public" address of the Internet side's servers.
pub const SERVER_ADDR: &str = "198.18.0.1";
pub const TURN_PORT: u16 = 3478;
pub const MQTT_PORT: u16 = 1883;
pub const WS_PORT: u16 = 8083;
/// The TURN realm.
pub const REALM: &str = "campeer.lab";
/// The home router's and the viewer router's public (WAN) addresses.
pub const HOME_WAN: &str = "198.18.1.2";
pub const VIEWER_WAN: &str = "198.18.2.2";
/// The device's and the viewer's first LAN addresses.
pub const HOME_LAN: &str = "10.0.1.2";
pub const VIEWER_LAN: &str = "10.0.2.2";

/// The packages the lab needs, as the install scripts name them.
pub const INSTALL: &str = "apt-get install coturn nftables mosquitto iproute2 util-linux";

/// One of the lab's namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    /// The Internet: coturn and Mosquitto.
    Inet,
    /// The home router (symmetric NAT).
    HomeRouter,
    /// The device's LAN.
    Home,
    /// The viewer's router (symmetric NAT).
    ViewerRouter,
    /// The viewer's LAN.
    Viewer,
}

impl Ns {
    const ALL: [Ns; 5] = [
        Ns::Inet,
        Ns::HomeRouter,
        Ns::Home,
        Ns::ViewerRouter,
        Ns::Viewer,
    ];

    fn short(self) -> &'static str {
        match self {
            Ns::Inet => "inet",
            Ns::HomeRouter => "hrtr",
            Ns::Home => "home",
            Ns::ViewerRouter => "vrtr",
            Ns::Viewer => "view",
        }
    }
}

/// Whether the lab can run here. `false` (after saying so) when the
/// developer opted out with `CAMPEER_SKIP=netlab` (a comma- or
/// space-separated list); a missing tool or missing root panics with the
/// install command: a test that needs the lab never passes without it.
pub fn available(test: &str) -> bool {
    let skip = std::env::var("CAMPEER_SKIP").unwrap_or_default();
    if skip
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|w| w == "netlab")
    {
        eprintln!("{test}: SKIPPED (CAMPEER_SKIP=netlab): not run, not passed");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "{test} needs root (network namespaces); set CAMPEER_SKIP=netlab to skip it"
    );
    for tool in ["ip", "nft", "tc", "turnserver", "setpriv", "mosquitto"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).exists());
        assert!(
            found,
            "{test}: `{tool}` is missing: run scripts/install-web-deps.sh ({INSTALL}), \
             or set CAMPEER_SKIP=netlab to skip"
        );
    }
    true
}

/// Runs `cmd`, panicking with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS...`.
fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

static LABS: AtomicU32 = AtomicU32::new(0);
/// Every lab's names start with this.
const PREFIX: &str = "cpl";

/// Options for [`Lab::start_with`].
#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// Run coturn with one static long-term user instead of the REST
    /// shared secret (coturn takes one or the other).
    pub static_user: Option<(String, String)>,
}

/// A running lab.
pub struct Lab {
    /// `cpl<pid>x<n>`: the prefix of every name.
    pub tag: String,
    made: Vec<String>,
    children: Vec<Child>,
    pub dir: TempDir,
    /// coturn's REST shared secret (`static-auth-secret`).
    pub turn_secret: String,
    viewer_addr: String,
    viewer_n: u8,
}

impl Lab {
    /// Builds the lab with coturn on the REST shared secret.
    pub fn start() -> Lab {
        Self::start_with(LabOptions::default())
    }

    pub fn start_with(opts: LabOptions) -> Lab {
        remove_stale();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            tag,
            made: Vec::new(),
            children: Vec::new(),
            dir: TempDir::new("netlab"),
            turn_secret: format!("{:032x}", rand::random::<u128>()),
            viewer_addr: VIEWER_LAN.to_owned(),
            viewer_n: 2,
        };
        lab.build_network();
        lab.start_mosquitto();
        lab.start_coturn(&opts);
        lab
    }

    /// The namespace's name.
    pub fn ns(&self, ns: Ns) -> String {
        format!("{}-{}", self.tag, ns.short())
    }

    /// A command that runs `program` inside `ns` (`ip netns exec`, which
    /// execs it: the child's pid is the program's).
    pub fn cmd(&self, ns: Ns, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns), program]);
        c
    }

    /// The same, for tokio.
    pub fn tokio_cmd(&self, ns: Ns, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns), program]);
        c
    }

    /// Runs `program args...` in `ns`; panics when it fails.
    pub fn exec(&self, ns: Ns, program: &str, args: &[&str]) -> String {
        let out = run(self.cmd(ns, program).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread inside `ns` (setns(2) moves only that
    /// thread; sockets it opens stay in `ns`), and returns its result.
    pub fn in_ns<T: Send + 'static>(&self, ns: Ns, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns(ns));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on an open namespace file; affects this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in a lab namespace")
    }

    /// Keeps `child` (started in one of the lab's namespaces) to be killed
    /// with the lab.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }

    fn add_ns(&mut self, ns: Ns) {
        let name = self.ns(ns);
        ip(&["netns", "add", &name]);
        self.made.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
    }

    /// A veth pair between two namespaces, with an address on each end.
    fn link(&self, a: Ns, a_addr: &str, b: Ns, b_addr: &str) -> (String, String) {
        let an = format!("{}{}", short_tag(&self.tag), b.short());
        let bn = format!("{}{}", short_tag(&self.tag), a.short());
        let (na, nb) = (self.ns(a), self.ns(b));
        ip(&[
            "link", "add", &an, "netns", &na, "type", "veth", "peer", "name", &bn, "netns", &nb,
        ]);
        for (ns, dev, addr) in [(&na, &an, a_addr), (&nb, &bn, b_addr)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        (an, bn)
    }

    fn build_network(&mut self) {
        for ns in Ns::ALL {
            self.add_ns(ns);
        }
        let inet = self.ns(Ns::Inet);
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{SERVER_ADDR}/32"),
            "dev",
            "lo",
        ]);
        let (_, home_wan) = self.link(Ns::Inet, "198.18.1.1/24", Ns::HomeRouter, "198.18.1.2/24");
        let (_, viewer_wan) =
            self.link(Ns::Inet, "198.18.2.1/24", Ns::ViewerRouter, "198.18.2.2/24");
        self.link(Ns::HomeRouter, "10.0.1.1/24", Ns::Home, "10.0.1.2/24");
        self.link(Ns::ViewerRouter, "10.0.2.1/24", Ns::Viewer, "10.0.2.2/24");
        for (ns, gw) in [
            (Ns::HomeRouter, "198.18.1.1"),
            (Ns::ViewerRouter, "198.18.2.1"),
            (Ns::Home, "10.0.1.1"),
            (Ns::Viewer, "10.0.2.1"),
        ] {
            ip(&["-n", &self.ns(ns), "route", "add", "default", "via", gw]);
        }
        // The Internet drops what it cannot route (the LANs' private
        // addresses) silently. Without a default route the kernel would
        // refuse such sends at once (ENETUNREACH), and coturn closes an
        // allocation whose relay socket sees that error: a permission for a
        // peer's private host candidate would kill the relay.
        // The default route leads into a veth pair whose far end drops
        // everything (frames for a MAC address nobody has).
        ip(&[
            "-n", &inet, "link", "add", "void0", "type", "veth", "peer", "name", "void1",
        ]);
        for dev in ["void0", "void1"] {
            ip(&["-n", &inet, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n",
            &inet,
            "route",
            "add",
            "default",
            "via",
            "198.18.255.254",
            "dev",
            "void0",
            "onlink",
        ]);
        ip(&[
            "-n",
            &inet,
            "neigh",
            "add",
            "198.18.255.254",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "void0",
            "nud",
            "permanent",
        ]);
        for ns in [Ns::Inet, Ns::HomeRouter, Ns::ViewerRouter] {
            self.exec(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        }
        self.nat(Ns::HomeRouter, &home_wan);
        self.nat(Ns::ViewerRouter, &viewer_wan);
    }

    /// Symmetric NAT on `wan`: every new flow gets a random source port
    /// (endpoint-dependent mapping), and conntrack lets in only replies
    /// from the address and port the flow went to (address- and
    /// port-dependent filtering). Nothing unsolicited is forwarded in.
    fn nat(&self, router: Ns, wan: &str) {
        let rules = format!(
            "table ip nat {{\n\
               chain postrouting {{ type nat hook postrouting priority srcnat; oifname \"{wan}\" masquerade fully-random; }}\n\
             }}\n\
             table ip filter {{\n\
               chain forward {{ type filter hook forward priority filter; policy accept;\n\
                 iifname \"{wan}\" ct state established,related accept;\n\
                 iifname \"{wan}\" drop; }}\n\
             }}\n"
        );
        self.nft(router, &rules);
    }

    /// Loads an nftables ruleset into `ns`.
    pub fn nft(&self, ns: Ns, rules: &str) {
        let path = self
            .dir
            .0
            .join(format!("{}-{}.nft", ns.short(), rand::random::<u32>()));
        std::fs::write(&path, rules).expect("write nft rules");
        self.exec(ns, "nft", &["-f", &path.to_string_lossy()]);
    }

    /// A directory the unprivileged servers may write in.
    fn nobody_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.0.join(name);
        std::fs::create_dir_all(&d).expect("create dir");
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).expect("chown to nobody");
        d
    }

    /// Starts `program` in the Internet namespace as `nobody`, its output
    /// to `log`.
    fn spawn_server(&mut self, program: &str, args: &[String], log: &str) {
        let logf = std::fs::File::create(self.dir.0.join(log)).expect("create log");
        let child = self
            .cmd(Ns::Inet, "setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        self.children.push(child);
    }

    fn start_mosquitto(&mut self) {
        let conf = self.dir.0.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\n\
                 set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n\
                 listener {MQTT_PORT} {SERVER_ADDR}\n\
                 listener {WS_PORT} {SERVER_ADDR}\nprotocol websockets\n"
            ),
        )
        .expect("write mosquitto.conf");
        let mosquitto = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("mosquitto");
        self.spawn_server(
            mosquitto,
            &["-c".into(), conf.to_string_lossy().into_owned()],
            "mosquitto.log",
        );
        for port in [MQTT_PORT, WS_PORT] {
            self.wait_tcp(port, "mosquitto.log");
        }
    }

    fn start_coturn(&mut self, opts: &LabOptions) {
        let db = self.nobody_dir("turndb").join("turndb");
        let mut args: Vec<String> = [
            "-n",
            "--listening-ip",
            SERVER_ADDR,
            "--relay-ip",
            SERVER_ADDR,
            "--listening-port",
            &TURN_PORT.to_string(),
            "--realm",
            REALM,
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-tcp-relay",
            "--no-multicast-peers",
            "--fingerprint",
            "--log-file",
            "stdout",
            "--simple-log",
            "--verbose",
            "--userdb",
            &db.to_string_lossy(),
            "--pidfile",
            &db.with_file_name("turnserver.pid").to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &opts.static_user {
            Some((user, pass)) => args.extend([
                "--lt-cred-mech".into(),
                "--user".into(),
                format!("{user}:{pass}"),
            ]),
            None => args.extend([
                "--use-auth-secret".into(),
                "--static-auth-secret".into(),
                self.turn_secret.clone(),
            ]),
        }
        self.spawn_server("turnserver", &args, "coturn.log");
        self.wait_tcp(TURN_PORT, "coturn.log");
    }

    /// Waits until a server listens on `port` in the Internet namespace
    /// (the test itself cannot connect there: it asks `ss`). Mosquitto's
    /// websockets listener binds every address of the namespace, which
    /// are all the lab's own.
    fn wait_tcp(&self, port: u16, log: &str) {
        let t = Instant::now();
        let want = format!(":{port} ");
        loop {
            let out = self.exec(Ns::Inet, "ss", &["-Htln"]);
            if out.lines().any(|l| l.contains(&want)) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nothing listens on {want}; {log}:\n{}",
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// A server's log: `coturn.log` or `mosquitto.log`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default()
    }

    pub fn mqtt_url(&self) -> String {
        format!("mqtt://{SERVER_ADDR}:{MQTT_PORT}")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{SERVER_ADDR}:{WS_PORT}")
    }

    pub fn turn_url(&self) -> String {
        format!("turn:{SERVER_ADDR}:{TURN_PORT}?transport=udp")
    }

    pub fn stun_url(&self) -> String {
        format!("stun:{SERVER_ADDR}:{TURN_PORT}")
    }

    /// A TURN REST credential for `name`, valid for `ttl` from now.
    pub fn rest_credential(&self, name: &str, ttl: Duration) -> (String, String) {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + ttl.as_secs();
        rest_credential(&self.turn_secret, expiry, name)
    }

    /// The viewer's current LAN address.
    pub fn viewer_addr(&self) -> &str {
        &self.viewer_addr
    }

    /// Moves the viewer to a new LAN address, as a phone that changes
    /// network would: the new address is added, the old one removed (and
    /// with it every socket's route), and the default route put back.
    /// Returns the new address.
    pub fn viewer_change_address(&mut self) -> String {
        self.viewer_n = self.viewer_n.wrapping_add(1).max(3);
        let new = format!("10.0.2.{}", self.viewer_n);
        let ns = self.ns(Ns::Viewer);
        let dev = format!("{}{}", short_tag(&self.tag), Ns::ViewerRouter.short());
        // Removing the primary address would take the new (secondary) one
        // with it unless secondaries are promoted.
        for conf in ["all", dev.as_str()] {
            self.exec(
                Ns::Viewer,
                "sysctl",
                &[
                    "-qw",
                    &format!("net.ipv4.conf.{conf}.promote_secondaries=1"),
                ],
            );
        }
        ip(&["-n", &ns, "addr", "add", &format!("{new}/24"), "dev", &dev]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "del",
            &format!("{}/24", self.viewer_addr),
            "dev",
            &dev,
        ]);
        ip(&[
            "-n", &ns, "route", "replace", "default", "via", "10.0.2.1", "src", &new,
        ]);
        // Flows the router had for the old address are gone for good.
        let _ = self
            .cmd(Ns::ViewerRouter, "conntrack")
            .args(["-D", "-s", &self.viewer_addr])
            .output();
        self.viewer_addr = new.clone();
        new
    }

    /// The interface in `ns` that faces the Internet (for a router) or the
    /// router (for a LAN).
    pub fn uplink(&self, ns: Ns) -> String {
        let peer = match ns {
            Ns::Home => Ns::HomeRouter,
            Ns::Viewer => Ns::ViewerRouter,
            Ns::HomeRouter | Ns::ViewerRouter => Ns::Inet,
            Ns::Inet => panic!("the Internet namespace has two links"),
        };
        format!("{}{}", short_tag(&self.tag), peer.short())
    }

    /// Limits what `ns` sends up its uplink to `kbit` kbit/s with a token
    /// bucket (tbf): `burst_bytes` of burst, packets queued at most
    /// `latency_ms` before they are dropped.
    pub fn shape(&self, ns: Ns, kbit: u32, burst_bytes: u32, latency_ms: u32) {
        let dev = self.uplink(ns);
        self.exec(
            ns,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &dev,
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                &burst_bytes.to_string(),
                "latency",
                &format!("{latency_ms}ms"),
            ],
        );
    }

    /// Drops `percent` of the UDP packets `ns` sends or receives on its
    /// uplink, at random (nftables `numgen random`).
    pub fn udp_loss(&self, ns: Ns, percent: u32) {
        let dev = self.uplink(ns);
        let _ = self
            .cmd(ns, "nft")
            .args(["delete", "table", "inet", "loss"])
            .output();
        if percent == 0 {
            return;
        }
        let verdict = if percent >= 100 {
            "drop".to_owned()
        } else {
            format!("numgen random mod 100 < {percent} drop")
        };
        self.nft(
            ns,
            &format!(
                "table inet loss {{\n\
                   chain out {{ type filter hook postrouting priority 300; oifname \"{dev}\" meta l4proto udp {verdict}; }}\n\
                   chain in {{ type filter hook prerouting priority -300; iifname \"{dev}\" meta l4proto udp {verdict}; }}\n\
                 }}\n"
            ),
        );
    }

    /// Whether the host's own network namespace is free of the lab's
    /// interfaces, addresses and routes (all live in the lab's namespaces).
    pub fn host_untouched(&self) -> bool {
        let st = short_tag(&self.tag);
        let links = run(Command::new("ip").args(["-o", "link"]));
        let addrs = run(Command::new("ip").args(["-o", "addr"]));
        let routes = run(Command::new("ip").args(["route"]));
        !String::from_utf8_lossy(&links.stdout).contains(&st)
            && !String::from_utf8_lossy(&addrs.stdout).contains("198.18.")
            && !String::from_utf8_lossy(&routes.stdout).contains("198.18.")
    }

    /// Whether a TCP connection from `ns` to `addr:port` succeeds within
    /// 3 s (the Internet drops what it cannot route, silently).
    pub fn can_connect(&self, ns: Ns, addr: &str, port: u16) -> bool {
        self.cmd(ns, "timeout")
            .args([
                "3",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{addr}/{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- coturn log (tail) ----\n{}",
                super::tail(&self.log("coturn.log"), 40)
            );
        }
        for name in self.made.iter().rev() {
            teardown(name);
        }
    }
}

/// Kills what is left in a lab namespace (processes its test started
/// there) and deletes it; veth pairs go with it.
fn teardown(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a process inside the test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Deletes the namespaces of labs whose test process is gone (killed
/// before its drop could run).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            teardown(name);
        }
    }
}

/// Interface names must fit 15 bytes: the tag's last digits stand in for
/// it (`<pid mod 10^5><n>`, then the far end's short name).
fn short_tag(tag: &str) -> String {
    let rest = tag.strip_prefix(PREFIX).unwrap_or(tag);
    let (pid, n) = rest.split_once('x').unwrap_or((rest, "0"));
    let pid: u64 = pid.parse().unwrap_or(0);
    format!("c{}x{n}", pid % 100_000)
}

/// TURN REST credential (coturn's `use-auth-secret`): user
/// `<expiry>:<name>`, password base64(HMAC-SHA1(secret, user)).
pub fn rest_credential(secret: &str, expiry_unix: u64, name: &str) -> (String, String) {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let user = format!("{expiry_unix}:{name}");
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(user.as_bytes());
    let pass = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (user, pass)
}
