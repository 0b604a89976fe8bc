//! A secured broker: the real Mosquitto running examples/mosquitto/campeer.conf
//! and campeer.acl (TLS only; one listener with client certificates, one
//! with passwords; per-device and per-viewer ACLs), certificates made at
//! test time with the `openssl` command, the password file with
//! `mosquitto_passwd`. The daemon and the viewer are the real binaries.
//!
//! What is checked: mutual TLS and passwords both carry a video session;
//! a wrong CA, a wrong password and a certificate that is not valid yet
//! (a wrong clock) are each a clear log line and a retry with backoff, not
//! a crash or a busy loop; bad TLS files stop the daemon at start-up naming
//! the file; and the ACL keeps viewers to their own sessions. Mosquitto 2.0
//! grants every SUBSCRIBE and filters on delivery, and drops a denied
//! PUBLISH silently under MQTT 3.1.1 (PUBACK as usual), so a denial is
//! visible only in the broker's log and in what never arrives: that is
//! what the ACL test observes.

mod common;

use campeer::config::{MqttConfig, MqttTarget};
use campeer::signaling::mqtt_options::mqtt_options;
use common::{free_port, TempDir, BIN};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const DEVICE: &str = "cam1";
const DEVICE_PASSWORD: &str = "dev-Pa55word-cam1";
/// A viewer on the password listener: user name = sid.
const VIEWER_PW: &str = "viewer0001";
const VIEWER_PASSWORD: &str = "view-Pa55word-0001";
/// A viewer on the mutual-TLS listener: certificate CN = sid.
const VIEWER_CERT: &str = "viewer0002";

fn run_tool(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): apt-get install openssl mosquitto")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    run_tool(dir, "openssl", &args);
}

/// Certificates, keys and the password file, in `dir`:
/// `certs/ca.crt` (+ `ca.key`), `certs/server.crt`/`.key` (SAN localhost
/// and 127.0.0.1), `certs/future.crt` (the same key, valid only from 2099),
/// `cam1`, `viewer0002` client certificates, `other-ca.crt` (an unrelated
/// CA), `campeer.passwd`, and one-line password files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("mqtt-pki");
        let d = dir.0.clone();
        std::fs::create_dir_all(d.join("certs")).unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let ca_ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
        openssl(
            &d,
            &format!("req -x509 {ec} -keyout ca.key -out certs/ca.crt -days 3 -subj /CN=campeer-test-ca {ca_ext}"),
        );
        openssl(
            &d,
            &format!("req -x509 {ec} -keyout other-ca.key -out other-ca.crt -days 3 -subj /CN=other-ca {ca_ext}"),
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        openssl(
            &d,
            &format!("req {ec} -keyout certs/server.key -out server.csr -subj /CN=localhost"),
        );
        openssl(
            &d,
            "x509 -req -in server.csr -CA certs/ca.crt -CAkey ca.key -set_serial 2 -days 3 \
             -extfile server.ext -out certs/server.crt",
        );
        // The same server key, certified only from 2099: to this machine's
        // clock it is not valid yet, as every certificate is to a Pi that
        // booted without network time.
        std::fs::create_dir_all(d.join("db")).unwrap();
        std::fs::write(d.join("db/index.txt"), "").unwrap();
        std::fs::write(d.join("db/serial"), "03\n").unwrap();
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = db/index.txt\nserial = db/serial\n\
             new_certs_dir = db\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
        )
        .unwrap();
        openssl(
            &d,
            "ca -batch -config ca.cnf -cert certs/ca.crt -keyfile ca.key -in server.csr \
             -startdate 20990101000000Z -enddate 20991231000000Z -extfile server.ext -notext \
             -out certs/future.crt",
        );
        for (serial, cn) in [(10, DEVICE), (11, VIEWER_CERT)] {
            openssl(
                &d,
                &format!("req {ec} -keyout {cn}.key -out {cn}.csr -subj /CN={cn}"),
            );
            openssl(
                &d,
                &format!(
                    "x509 -req -in {cn}.csr -CA certs/ca.crt -CAkey ca.key -set_serial {serial} \
                     -days 3 -extfile client.ext -out {cn}.crt"
                ),
            );
        }
        run_tool(
            &d,
            "mosquitto_passwd",
            &["-b", "-c", "campeer.passwd", DEVICE, DEVICE_PASSWORD],
        );
        run_tool(
            &d,
            "mosquitto_passwd",
            &["-b", "campeer.passwd", VIEWER_PW, VIEWER_PASSWORD],
        );
        std::fs::write(d.join("device.pass"), format!("{DEVICE_PASSWORD}\n")).unwrap();
        std::fs::write(d.join("viewer.pass"), format!("{VIEWER_PASSWORD}\n")).unwrap();
        std::fs::write(d.join("wrong.pass"), "Wr0ng-pa55word-zz\n").unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Mosquitto running examples/mosquitto/campeer.conf, its paths and ports
/// rewritten for the test.
struct TlsBroker {
    /// The mutual-TLS listener (the example's 8883).
    mtls_port: u16,
    /// The password listener (the example's 8884).
    pw_port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl TlsBroker {
    /// `server_cert`: `server.crt`, or `future.crt` for a certificate that
    /// is not valid yet.
    fn start(pki: &Pki, server_cert: &str) -> TlsBroker {
        let dir = TempDir::new("tls-broker");
        let d = &dir.0;
        std::fs::create_dir_all(d.join("certs")).unwrap();
        for f in ["ca.crt", "server.key"] {
            std::fs::copy(pki.path(&format!("certs/{f}")), d.join("certs").join(f)).unwrap();
        }
        std::fs::copy(
            pki.path(&format!("certs/{server_cert}")),
            d.join("certs/server.crt"),
        )
        .unwrap();
        std::fs::copy(pki.path("campeer.passwd"), d.join("campeer.passwd")).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mosquitto");
        std::fs::copy(examples.join("campeer.acl"), d.join("campeer.acl")).unwrap();
        // Mosquitto started as root reads its files as the `mosquitto` user.
        for f in [
            "certs/ca.crt",
            "certs/server.crt",
            "certs/server.key",
            "campeer.passwd",
            "campeer.acl",
        ] {
            set_mode(&d.join(f), 0o644);
        }
        set_mode(d, 0o755);
        set_mode(&d.join("certs"), 0o755);

        let (mtls_port, pw_port) = (free_port(), free_port());
        let example = std::fs::read_to_string(examples.join("campeer.conf")).unwrap();
        let mut conf = String::new();
        for line in example.lines() {
            let line = match line.trim() {
                "listener 8883" => format!("listener {mtls_port} 127.0.0.1"),
                "listener 8884" => format!("listener {pw_port} 127.0.0.1"),
                _ => line.replace("/etc/mosquitto/", &format!("{}/", d.display())),
            };
            conf.push_str(&line);
            conf.push('\n');
        }
        conf.push_str("persistence false\nlog_dest stderr\nlog_type all\n");
        assert!(
            conf.contains(&format!("listener {mtls_port} "))
                && conf.contains(&format!("listener {pw_port} ")),
            "the example config no longer has listeners 8883 and 8884:\n{conf}"
        );
        let conf_path = d.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = d.join("mosquitto.log");
        let child = Command::new(mosquitto_path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start mosquitto");
        let mut b = TlsBroker {
            mtls_port,
            pw_port,
            child: Some(child),
            log,
            _dir: dir,
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", mtls_port)).is_err()
            || TcpStream::connect(("127.0.0.1", pw_port)).is_err()
        {
            if let Some(Ok(Some(st))) = b.child.as_mut().map(|c| c.try_wait()) {
                panic!("mosquitto exited ({st}):\n{}", b.log_text());
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "mosquitto did not start:\n{}",
                b.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- mosquitto log (last lines) ----\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn mosquitto_path() -> &'static str {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto is not installed: run scripts/install-deps.sh")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `campeer run` with a configuration file.
struct SecureDaemon {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl SecureDaemon {
    /// `mqtt` is the body of the `[mqtt]` table. Its `url` line is passed
    /// as `--mqtt` instead, which also keeps the daemon from starting its
    /// embedded broker; everything else comes from the file.
    fn spawn(mqtt: &str, extra: &[&str]) -> SecureDaemon {
        let dir = TempDir::new("secure-daemon");
        let config = dir.0.join("campeer.toml");
        let mut url = None;
        let table: String = mqtt
            .lines()
            .filter(|l| match l.strip_prefix("url = ") {
                Some(v) => {
                    url = Some(v.trim_matches('"').to_owned());
                    false
                }
                None => true,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let url = url.expect("the [mqtt] table needs a url line");
        std::fs::write(
            &config,
            format!("device_id = \"{DEVICE}\"\n\n[mqtt]\n{table}"),
        )
        .unwrap();
        let log = dir.0.join("daemon.log");
        let child = Command::new(BIN)
            .args(["--log", "info,campeer=debug", "run", "--config"])
            .arg(&config)
            .args(["--mqtt", &url, "--stats-interval", "0"])
            // These tests are about the broker's TLS, passwords and ACL,
            // not offer signing (tests/attacks.rs covers that).
            .arg("--open-access")
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start campeer");
        SecureDaemon {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for the daemon to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let c = self.child.as_ref()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = self.wait_exit(Duration::from_secs(10));
        if st.is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
            }
        }
        st
    }

    /// SIGTERM; the daemon must be running then and exit cleanly.
    fn stop_cleanly(&mut self) {
        assert!(self.is_running(), "the daemon died:\n{}", self.log_text());
        let st = self.terminate();
        assert!(
            st.is_some_and(|s| s.success()),
            "{st:?}\n{}",
            self.log_text()
        );
    }

    /// The log after `window`, in which the daemon must not have died (a
    /// broker it cannot use is retried, never fatal).
    fn log_after(&mut self, window: Duration) -> String {
        std::thread::sleep(window);
        assert!(self.is_running(), "the daemon died:\n{}", self.log_text());
        self.log_text()
    }

    /// Waits until the log contains `needle`.
    fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for SecureDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log_text());
        }
    }
}

/// The `[mqtt]` table of a device on the mutual-TLS listener.
fn mtls_device(pki: &Pki, broker: &TlsBroker, ca: &str) -> String {
    format!(
        "url = \"mqtts://localhost:{}\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        broker.mtls_port,
        pki.p(ca),
        pki.p(&format!("{DEVICE}.crt")),
        pki.p(&format!("{DEVICE}.key")),
    )
}

/// Runs `campeer view --json`; returns the report (Null if none) and stderr.
async fn view(args: &[String]) -> (Value, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["--log", "warn", "view", "--json", "--device", DEVICE])
        .args(args)
        .output()
        .await
        .expect("run campeer view");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (report, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// An MQTT client over TLS, built with campeer's own option builder.
struct TlsClient {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsClient {
    async fn connect(url: &str, cfg: MqttConfig, id: &str, filters: &[&str]) -> TlsClient {
        let target = MqttTarget::parse(url).unwrap();
        let opts = mqtt_options(&cfg, &target, id).expect("client options");
        let (client, mut el) = AsyncClient::new(opts, 64);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        }
        let mut acks = 0;
        while acks < filters.len() {
            match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => acks += 1,
                Ok(Ok(_)) => {}
                other => panic!("TLS test client cannot connect: {other:?}"),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        TlsClient { client, rx, task }
    }

    /// Waits for a message on `topic` satisfying `pred`.
    async fn wait_for(
        &mut self,
        topic: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (t, p) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
            if t == topic && pred(&v) {
                return Some(v);
            }
        }
    }

    /// Every topic received so far.
    fn drain_topics(&mut self) -> Vec<String> {
        let mut topics = Vec::new();
        while let Ok((t, _)) = self.rx.try_recv() {
            topics.push(t);
        }
        topics
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

/// A client on the password listener as the viewer user.
async fn password_viewer(pki: &Pki, broker: &TlsBroker, filters: &[&str]) -> TlsClient {
    let cfg = MqttConfig {
        ca_file: Some(pki.path("certs/ca.crt")),
        password_file: Some(pki.path("viewer.pass")),
        ..MqttConfig::default()
    };
    let url = format!("mqtts://{VIEWER_PW}@localhost:{}", broker.pw_port);
    TlsClient::connect(&url, cfg, VIEWER_PW, filters).await
}

/// Seconds since midnight of a log line's RFC 3339 timestamp.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.get(11..)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The connection attempts in a daemon log (the link logs each failed
/// attempt once, at warn or debug level), as times.
fn attempts(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("cannot reach the broker"))
        .filter_map(log_time)
        .collect()
}

/// Asserts a failing daemon retries with backoff: at least 2 attempts,
/// fewer than 20 in the `window`, spaced by at least the backoff floor's
/// lower jitter bound (125 ms), and the gaps growing.
fn assert_backoff(log: &str, window: Duration) {
    let times = attempts(log);
    assert!(
        times.len() >= 2,
        "fewer than 2 attempts in {window:?}:\n{log}"
    );
    assert!(
        times.len() < 20,
        "{} attempts in {window:?}: a busy loop?\n{log}",
        times.len()
    );
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).rem_euclid(86_400.0))
        .collect();
    assert!(
        gaps.iter().all(|&g| g >= 0.12),
        "attempts closer than the backoff floor: {gaps:?}\n{log}"
    );
    if gaps.len() >= 3 {
        assert!(
            gaps[gaps.len() - 1] > gaps[0],
            "the backoff does not grow: {gaps:?}\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_passwords_carry_video_under_the_acl() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, "server.crt");
    let mut daemon = SecureDaemon::spawn(&mtls_device(&pki, &broker, "certs/ca.crt"), &[]);

    // A viewer may read every device's presence.
    let status = format!("campeer/{DEVICE}/status");
    let mut watcher = password_viewer(&pki, &broker, &[&status]).await;
    let online = watcher
        .wait_for(&status, Duration::from_secs(20), |v| v["state"] == "online")
        .await;
    assert!(
        online.is_some(),
        "the device never came online over mutual TLS"
    );
    // The broker forces client id = user name, so one connection per
    // account: the viewer below would take over this one's session.
    drop(watcher);
    let log = daemon.log_text();
    assert!(log.contains("connected to broker"), "{log}");
    assert!(
        log.contains(&format!("mqtts://localhost:{}", broker.mtls_port)),
        "{log}"
    );

    // A viewer with a password (user name = sid), over TLS.
    let (report, stderr) = view(&strings(&[
        "--mqtt",
        &format!("mqtts://{VIEWER_PW}@localhost:{}", broker.pw_port),
        "--password-file",
        &pki.p("viewer.pass"),
        "--ca-file",
        &pki.p("certs/ca.crt"),
        "--sid",
        VIEWER_PW,
        "--frames",
        "20",
        "--no-audio",
    ]))
    .await;
    assert!(
        report["frames"].as_u64().unwrap_or(0) >= 20,
        "password viewer: {report}\n{stderr}"
    );
    assert!(!stderr.contains(VIEWER_PASSWORD), "{stderr}");

    // A viewer with its own certificate (CN = sid), by IP address.
    let (report, stderr) = view(&strings(&[
        "--mqtt",
        &format!("mqtts://127.0.0.1:{}", broker.mtls_port),
        "--ca-file",
        &pki.p("certs/ca.crt"),
        "--client-cert",
        &pki.p(&format!("{VIEWER_CERT}.crt")),
        "--client-key",
        &pki.p(&format!("{VIEWER_CERT}.key")),
        "--sid",
        VIEWER_CERT,
        "--frames",
        "20",
        "--no-audio",
    ]))
    .await;
    assert!(
        report["frames"].as_u64().unwrap_or(0) >= 20,
        "certificate viewer: {report}\n{stderr}"
    );

    // Without its certificate the mutual-TLS listener turns a viewer away,
    // and the viewer says why.
    let (report, stderr) = view(&strings(&[
        "--mqtt",
        &format!("mqtts://localhost:{}", broker.mtls_port),
        "--ca-file",
        &pki.p("certs/ca.crt"),
        "--sid",
        VIEWER_CERT,
        "--timeout",
        "5",
    ]))
    .await;
    assert_eq!(report, Value::Null, "{stderr}");
    assert!(
        stderr.contains("asks for a client certificate, but none is configured"),
        "{stderr}"
    );

    daemon.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_a_clear_error_retried_with_backoff() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, "server.crt");
    let mut daemon = SecureDaemon::spawn(&mtls_device(&pki, &broker, "other-ca.crt"), &[]);
    let window = Duration::from_secs(5);
    let log = daemon.log_after(window);
    assert!(
        log.contains("TLS: the broker's certificate is not signed by a CA in")
            && log.contains("other-ca.crt (mqtt.ca_file)"),
        "no clear TLS error line:\n{log}"
    );
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(!log.contains("connected to broker"), "{log}");
    assert_backoff(&log, window);
    daemon.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_before_the_certificate_is_a_clear_error_retried_with_backoff() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, "future.crt");
    let mut daemon = SecureDaemon::spawn(&mtls_device(&pki, &broker, "certs/ca.crt"), &[]);
    let window = Duration::from_secs(5);
    let log = daemon.log_after(window);
    assert!(
        log.contains("TLS: certificate not valid yet (valid from Thu, 01 Jan 2099 00:00:00 GMT): is the clock right?"),
        "no clear clock hint:\n{log}"
    );
    assert_backoff(&log, window);
    daemon.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_retried_with_backoff() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, "server.crt");
    let mqtt = format!(
        "url = \"mqtts://{DEVICE}@localhost:{}\"\nca_file = \"{}\"\npassword_file = \"{}\"\n",
        broker.pw_port,
        pki.p("certs/ca.crt"),
        pki.p("wrong.pass"),
    );
    let mut daemon = SecureDaemon::spawn(&mqtt, &[]);
    let window = Duration::from_secs(5);
    let log = daemon.log_after(window);
    assert!(
        log.lines().any(|l| l.contains("cannot reach the broker")
            && l.contains("Connection refused")
            && (l.contains("NotAuthorized") || l.contains("BadUserNamePassword"))),
        "no clear refusal line:\n{log}"
    );
    assert!(
        !log.contains("Wr0ng-pa55word"),
        "the password leaked into the log:\n{log}"
    );
    assert_backoff(&log, window);

    // The right password gets in (same listener, same user).
    daemon.terminate();
    let mqtt = mqtt.replace("wrong.pass", "device.pass");
    let daemon = SecureDaemon::spawn(&mqtt, &[]);
    assert!(
        daemon.wait_log("connected to broker", Duration::from_secs(20)),
        "{}",
        daemon.log_text()
    );
    assert!(!daemon.log_text().contains(DEVICE_PASSWORD));
    drop(daemon);

    // A password inside the --mqtt URL works, with a warning that the
    // command line is visible to every local user.
    let mqtt = format!(
        "url = \"mqtts://{DEVICE}:{DEVICE_PASSWORD}@localhost:{}\"\nca_file = \"{}\"\n",
        broker.pw_port,
        pki.p("certs/ca.crt"),
    );
    let daemon = SecureDaemon::spawn(&mqtt, &[]);
    assert!(
        daemon.wait_log("connected to broker", Duration::from_secs(20)),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(
        log.contains("the MQTT password is part of the --mqtt URL on the command line"),
        "{log}"
    );
    assert!(!log.contains(DEVICE_PASSWORD), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_the_daemon_at_start_naming_the_file() {
    let pki = Pki::new();
    let cases = [
        (
            format!(
                "url = \"mqtts://localhost:1\"\nca_file = \"{}\"\n",
                pki.p("missing-ca.crt")
            ),
            vec!["invalid mqtt.ca_file", "missing-ca.crt"],
        ),
        (
            format!(
                "url = \"mqtts://localhost:1\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                pki.p(&format!("{DEVICE}.crt")),
                pki.p(&format!("{VIEWER_CERT}.key")),
            ),
            vec![
                "invalid mqtt.client_key",
                "viewer0002.key does not belong to the certificate in",
                "cam1.crt",
            ],
        ),
        (
            format!(
                "url = \"mqtts://localhost:1\"\nca_file = \"{}\"\n",
                pki.p("client.ext")
            ),
            vec![
                "invalid mqtt.ca_file",
                "client.ext holds no PEM certificate",
            ],
        ),
        (
            format!(
                "url = \"mqtt://localhost:1\"\nca_file = \"{}\"\n",
                pki.p("certs/ca.crt")
            ),
            vec!["invalid mqtt.ca_file", "mqtts://"],
        ),
    ];
    for (mqtt, expected) in cases {
        let mut daemon = SecureDaemon::spawn(&mqtt, &[]);
        let st = daemon.wait_exit(Duration::from_secs(10));
        let log = daemon.log_text();
        assert!(st.is_some_and(|s| !s.success()), "{st:?}: {mqtt}\n{log}");
        for e in expected {
            assert!(log.contains(e), "{e:?} missing for {mqtt}:\n{log}");
        }
    }
    // The viewer too, by flag.
    let (report, stderr) = view(&strings(&[
        "--mqtt",
        "mqtts://localhost:1",
        "--ca-file",
        &pki.p("missing-ca.crt"),
    ]))
    .await;
    assert_eq!(report, Value::Null);
    assert!(
        stderr.contains("--ca-file: cannot read") && stderr.contains("missing-ca.crt"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_keeps_viewers_to_their_own_sessions() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, "server.crt");
    let mut daemon = SecureDaemon::spawn(&mtls_device(&pki, &broker, "certs/ca.crt"), &[]);
    let status = format!("campeer/{DEVICE}/status");

    // An eavesdropper (a valid viewer account) subscribes to everything:
    // Mosquitto grants the subscription but delivers only what the ACL lets
    // it read, i.e. presence.
    let mut eavesdropper = password_viewer(&pki, &broker, &["campeer/#"]).await;
    let online = eavesdropper
        .wait_for(&status, Duration::from_secs(20), |v| v["state"] == "online")
        .await;
    assert!(online.is_some(), "no presence for a viewer");

    // Another viewer's session runs, unseen by the eavesdropper.
    let (report, stderr) = view(&strings(&[
        "--mqtt",
        &format!("mqtts://localhost:{}", broker.mtls_port),
        "--ca-file",
        &pki.p("certs/ca.crt"),
        "--client-cert",
        &pki.p(&format!("{VIEWER_CERT}.crt")),
        "--client-key",
        &pki.p(&format!("{VIEWER_CERT}.key")),
        "--sid",
        VIEWER_CERT,
        "--frames",
        "10",
        "--no-audio",
    ]))
    .await;
    assert!(
        report["frames"].as_u64().unwrap_or(0) >= 10,
        "{report}\n{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = eavesdropper.drain_topics();
    assert!(
        seen.iter().all(|t| *t == status),
        "the eavesdropper read more than presence: {seen:?}"
    );

    drop(eavesdropper); // one connection per account (client id = user name)

    // The viewer account speaking for a session that is not its own: the
    // broker drops the offer (silently, under MQTT 3.1.1), so the device
    // never hears of it and the viewer gets no answer.
    let stranger = "viewer0003";
    let (report, stderr) = view(&strings(&[
        "--mqtt",
        &format!("mqtts://{VIEWER_PW}@localhost:{}", broker.pw_port),
        "--password-file",
        &pki.p("viewer.pass"),
        "--ca-file",
        &pki.p("certs/ca.crt"),
        "--sid",
        stranger,
        "--timeout",
        "4",
    ]))
    .await;
    assert_eq!(report["frames"].as_u64(), Some(0), "{report}\n{stderr}");
    assert!(report["answer_ms"].is_null(), "{report}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("timeout")),
        "{report}"
    );
    assert!(
        !daemon.log_text().contains(stranger),
        "{}",
        daemon.log_text()
    );
    let blog = broker.log_text();
    assert!(
        blog.contains(&format!("Denied PUBLISH from {VIEWER_PW}"))
            && blog.contains(&format!("campeer/{DEVICE}/session/{stranger}/in")),
        "the broker did not log the denial"
    );
    assert!(daemon.is_running());
    daemon.terminate();

    // A device configured outside its ACL (another prefix): it connects,
    // its presence is dropped by the broker, and it keeps running; with
    // MQTT 3.1.1 only the broker's log shows the denial.
    let mut outside = SecureDaemon::spawn(
        &mtls_device(&pki, &broker, "certs/ca.crt"),
        &["--prefix", "elsewhere"],
    );
    assert!(
        outside.wait_log("connected to broker", Duration::from_secs(20)),
        "{}",
        outside.log_text()
    );
    let t = Instant::now();
    while !broker.log_text().contains("'elsewhere/cam1/status'")
        && t.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let blog = broker.log_text();
    assert!(
        blog.contains(&format!("Denied PUBLISH from {DEVICE}"))
            && blog.contains("'elsewhere/cam1/status'"),
        "the broker did not log the denied presence"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    outside.stop_cleanly();
}

#[test]
fn log_times_parse() {
    let line =
        "2026-05-01T12:34:56.250000Z  WARN campeer::signaling::mqtt: cannot reach the broker";
    assert_eq!(log_time(line), Some(12.0 * 3600.0 + 34.0 * 60.0 + 56.25));
    assert_eq!(attempts(line).len(), 1);
    assert_eq!(log_time("garbage"), None);
}
