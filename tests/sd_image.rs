//! The SD-card image (scripts/build-image.sh), built twice and booted.
//!
//! `image_builds_reproducibly_and_boots_into_a_paired_camera` builds the
//! arm64 image, builds it again from the same commit and compares the two
//! root file systems file by file (the manifests: path, type, mode, owner,
//! size, sha256), then does what an owner does: writes campeer.toml and
//! campeer-wifi.txt onto the image's FAT partition, "flashes" it to a 2 GiB
//! card, and boots the image itself in qemu `-M raspi3b` (Debian's kernel,
//! initrd and device tree taken from the image's own boot partition, since
//! qemu cannot run the Pi's boot firmware), with vivid loaded as the camera
//! (modules-load= on the kernel command line, as an owner would add to
//! cmdline.txt). Everything it checks comes from the guest: the first-boot
//! lines on the serial console (root grown, named campeer-XXXX, config and
//! Wi-Fi file consumed), the daemon's own log lines (keys made, online),
//! the page and the claim over the guest's forwarded HTTP port, and stamped
//! video in a `campeer view` that pairs with the claimed admin key.
//!
//! The guest's network is qemu's user-mode network; the test runs qemu and
//! its viewers in a network namespace of its own that holds only a loopback
//! interface, so the viewer's ICE checks toward the guest's private address
//! cannot leave the machine. The guest's address is an address of that
//! loopback too, where qemu forwards the device's media port
//! (webrtc.udp_bind = 0.0.0.0:5000): the viewer reaches the device's own
//! host candidate.
//!
//! Set CAMPEER_SKIP=image to skip; without it a missing tool or a failed
//! unshare is a failure. Needs root (mmdebstrap, unshare).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// From qemu's start to a viewer's report, at most.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// The card qemu gets: a power of two, bigger than the image, so the first
/// boot has something to grow into.
const CARD_BYTES: u64 = 2 << 30;
const FAT_OFFSET: u64 = 4 << 20;
const MEDIA_PORT: u16 = 5000;
/// The guest's address on qemu's user network (its DHCP hands out .15).
const GUEST_ADDR: &str = "10.0.2.15";
/// The viewer's own address in the test's network namespace (TEST-NET-1).
const VIEWER_ADDR: &str = "192.0.2.1";

fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "sd_image: {line}");
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        common::tail(&text, 60)
    );
    text
}

/// A build of the image running in the background.
struct Build {
    child: std::process::Child,
    out: PathBuf,
    started: Instant,
}

/// Starts scripts/build-image.sh into `out` (a folder of its own, with its
/// own package cache), compressed or not, putting the package `deb` in it.
fn start_build(out: &Path, deb: &Path, compress: bool) -> Build {
    std::fs::create_dir_all(out).unwrap();
    let child = common::cargo_script(&root().join("scripts/build-image.sh"))
        .arg("arm64")
        .env("CAMPEER_IMAGE_DIR", out)
        .env("CAMPEER_IMAGE_DEB", deb)
        .env("CAMPEER_IMAGE_DEBS", out.join("debs"))
        .env("CAMPEER_IMAGE_XZ", if compress { "1" } else { "0" })
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out.join("build.log")).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(out.join("build.err")).unwrap(),
        ))
        .spawn()
        .expect("start scripts/build-image.sh");
    Build {
        child,
        out: out.to_owned(),
        started: Instant::now(),
    }
}

/// Waits for a build and returns (image path, manifest text, seconds).
fn finish_build(mut b: Build) -> (PathBuf, String, f64) {
    let status = b.child.wait().expect("wait for scripts/build-image.sh");
    let secs = b.started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(b.out.join("build.log")).unwrap_or_default();
    let err = std::fs::read_to_string(b.out.join("build.err")).unwrap_or_default();
    let tag = b.out.file_name().unwrap().to_string_lossy().into_owned();
    for l in text.lines().filter(|l| l.starts_with("build-image:")) {
        say(&format!("[{tag}] {l}"));
    }
    assert!(
        status.success(),
        "scripts/build-image.sh ({tag}) failed: {status}\n{}",
        common::tail(&(text.clone() + &err), 60)
    );
    // The image's path is the last line on stdout.
    let img = printed_path(&text, ".img").expect("build-image.sh printed no image path");
    assert!(img.is_file(), "{} is missing", img.display());
    let manifest = std::fs::read_to_string(img.with_extension("manifest")).expect("manifest");
    (img, manifest, secs)
}

/// The last line of a script's output that names a file ending in `ext`
/// (the scripts print what they made last), under the work tree when
/// relative.
fn printed_path(text: &str, ext: &str) -> Option<PathBuf> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(ext))
        .map(|l| root().join(l))
}

/// Builds both images at once: mmdebstrap runs the arm64 maintainer
/// scripts through qemu-user one at a time, so each build keeps about one
/// core busy and two side by side take little longer than one.
fn build_twice(top: &Path) -> [(PathBuf, String, f64); 2] {
    let deb = run_ok(
        common::cargo_script(&root().join("scripts/build-deb.sh"))
            .arg("arm64")
            .current_dir(root()),
        "scripts/build-deb.sh arm64",
    );
    let deb = printed_path(&deb, ".deb").expect("build-deb.sh printed no package path");
    say(&format!("package: {}", deb.display()));
    let mut a = start_build(&top.join("a"), &deb, true);
    // The first build installs any tool the script lacks and registers
    // qemu-user: the second starts once the first has got to mmdebstrap.
    let log = top.join("a/mmdebstrap.log");
    let until = Instant::now() + Duration::from_secs(600);
    while !log.exists() && matches!(a.child.try_wait(), Ok(None)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The second build only has to be compared: no need to compress it.
    let b = start_build(&top.join("b"), &deb, false);
    [finish_build(a), finish_build(b)]
}

/// Lines of `a` not in `b`, at most `n`.
fn only_in<'a>(a: &'a str, b: &str, n: usize) -> Vec<&'a str> {
    let b: std::collections::HashSet<&str> = b.lines().collect();
    a.lines().filter(|l| !b.contains(l)).take(n).collect()
}

/// The image's boot partition as mtools sees it inside `card`.
fn fat(card: &Path) -> String {
    format!("{}@@{FAT_OFFSET}", card.display())
}

/// Copies `from` to `to` with mtools; `::NAME` is a file on the card's
/// boot partition.
fn mcopy(card: &Path, from: &Path, to: &Path) {
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-n", "-o", "-i", &fat(card)])
            .arg(from)
            .arg(to),
        &format!("mcopy {} {}", from.display(), to.display()),
    );
}

fn mcopy_out(card: &Path, name: &str, to: &Path) {
    mcopy(card, Path::new(&format!("::{name}")), to);
}

fn mcopy_in(card: &Path, from: &Path, name: &str) {
    mcopy(card, from, Path::new(&format!("::{name}")));
}

/// What the owner writes on the boot partition before the first boot: the
/// emulated board's camera (vivid) at its small size, stamped frames, no
/// microphone, the media port fixed so it can be forwarded.
const OWNER_CONFIG: &str = r#"# written by tests/sd_image.rs, as an owner would
[video]
source = "v4l2:/dev/video0"
width = 320
height = 180
fps = 10
bitrate = 250000
keyframe_interval = 10
stamp = true

[audio]
source = "none"

[webrtc]
max_sessions = 2
udp_bind = ["0.0.0.0:5000"]
include_loopback = true
connect_timeout_secs = 60
disconnected_timeout_secs = 10
"#;

const OWNER_WIFI: &str = "ssid=campeer test net\r\npsk=correct horse battery\r\ncountry=gb\r\n";

/// The flashed card and what qemu boots from its boot partition.
struct Card {
    image: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    dtb: PathBuf,
    cmdline: String,
}

/// Lays out the card as an owner would.
fn prepare_card(img: &Path, dir: &Path) -> Card {
    let card = dir.join("card.img");
    std::fs::copy(img, &card).expect("copy the image to the card");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&card)
        .expect("open the card");
    assert!(
        f.metadata().unwrap().len() < CARD_BYTES,
        "the image is larger than the 2 GiB card"
    );
    f.set_len(CARD_BYTES).expect("grow the card to 2 GiB");
    drop(f);
    let cfg = dir.join("campeer.toml");
    std::fs::write(&cfg, OWNER_CONFIG).unwrap();
    mcopy_in(&card, &cfg, "campeer.toml");
    let wifi = dir.join("campeer-wifi.txt");
    std::fs::write(&wifi, OWNER_WIFI).unwrap();
    mcopy_in(&card, &wifi, "campeer-wifi.txt");
    // What the Pi's firmware would load: config.txt names the kernel and
    // the initrd (raspi-firmware writes `kernel=` and `initramfs`).
    let config_txt = dir.join("config.txt");
    mcopy_out(&card, "config.txt", &config_txt);
    let config_txt = std::fs::read_to_string(&config_txt).unwrap();
    let named = |key: &str| -> String {
        config_txt
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("the image's config.txt has no `{key}` line:\n{config_txt}"))
    };
    let mut got = Vec::new();
    for name in [
        named("kernel="),
        named("initramfs "),
        "bcm2837-rpi-3-b.dtb".into(),
        "cmdline.txt".into(),
    ] {
        let to = dir.join(&name);
        mcopy_out(&card, &name, &to);
        got.push(to);
    }
    let cmdline = std::fs::read_to_string(&got[3]).expect("cmdline.txt");
    Card {
        image: card,
        kernel: got[0].clone(),
        initrd: got[1].clone(),
        dtb: got[2].clone(),
        cmdline,
    }
}

/// The test thread (and every process it starts) moves to a network
/// namespace with only a loopback interface.
fn enter_private_network() {
    // SAFETY: unshare(2) takes no pointers; it changes this thread's
    // network namespace only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed: {} (the test needs root)",
        std::io::Error::last_os_error()
    );
    run_ok(
        Command::new("ip").args(["link", "set", "lo", "up"]),
        "ip link set lo up",
    );
    // The guest's own address (qemu's user network gives it 10.0.2.15) is
    // also an address of this namespace, where qemu forwards the media
    // port: the viewer's checks to the device's host candidate reach the
    // guest, and nothing addressed to it can leave the namespace.
    run_ok(
        Command::new("ip").args(["addr", "add", GUEST_ADDR, "dev", "lo"]),
        "ip addr add (the guest's address) dev lo",
    );
    // And an address outside qemu's network for the viewer to send from:
    // from 10.0.2.15 the guest would see its own address as the source and
    // drop the packet (a martian).
    run_ok(
        Command::new("ip").args(["addr", "add", VIEWER_ADDR, "dev", "lo"]),
        "ip addr add (the viewer's address) dev lo",
    );
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; (status, body).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // As the page sends it: a claim is a JSON POST.
    let body = if method == "POST" { "{}" } else { "" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// The serial console, line by line, with the time since qemu started.
struct Console {
    rx: mpsc::Receiver<String>,
    started: Instant,
    lines: Vec<String>,
    /// Every line, for reading after a failure.
    log: std::fs::File,
    /// qemu closed its output (it exited).
    closed: bool,
}

impl Console {
    /// Reads until a line contains `needle`; returns it, or None at the
    /// deadline.
    fn wait_for(&mut self, needle: &str, deadline: Instant) -> Option<String> {
        if let Some(l) = self.lines.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.rx.recv_timeout(left) {
                Ok(l) => l.replace('\r', ""),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return None;
                }
            };
            let _ = writeln!(
                self.log,
                "[{:7.2}] {line}",
                self.started.elapsed().as_secs_f64()
            );
            if line.contains("campeer-setup:")
                || line.contains("campeer[")
                || line.contains("watchdog")
            {
                say(&format!(
                    "[{:6.1}s] {line}",
                    self.started.elapsed().as_secs_f64()
                ));
            }
            self.lines.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

fn start_qemu(
    dir: &Path,
    card: &Card,
    http_port: u16,
    mqtt_port: u16,
) -> (std::process::Child, Console) {
    // The image's own command line, with the console on the first UART
    // (qemu's -serial), the journal on it too, and vivid as the camera.
    let mut args: Vec<&str> = card
        .cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .collect();
    args.extend([
        "console=ttyAMA0,115200",
        "systemd.journald.forward_to_console=1",
        "modules-load=vivid",
        "vivid.n_devs=1",
        "vivid.node_types=0x1",
        "vivid.multiplanar=1",
        "loglevel=4",
        // qemu's model of the Pi's power-management block resets the board
        // as soon as a watchdog is armed (it has no countdown): without
        // this, systemd's RuntimeWatchdogSec reset the emulated Pi a second
        // after bcm2835_wdt loaded. A real Pi counts down and is fed.
        "modprobe.blacklist=bcm2835_wdt",
    ]);
    let net = format!(
        "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:{http_port}-:8080,hostfwd=tcp:127.0.0.1:{mqtt_port}-:1883,hostfwd=udp:{GUEST_ADDR}:{MEDIA_PORT}-:{MEDIA_PORT}"
    );
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(["-M", "raspi3b", "-m", "1G"])
        .arg("-kernel")
        .arg(&card.kernel)
        .arg("-initrd")
        .arg(&card.initrd)
        .arg("-dtb")
        .arg(&card.dtb)
        .args(["-append", &args.join(" ")])
        .arg("-drive")
        .arg(format!("if=sd,format=raw,file={}", card.image.display()))
        .args(["-netdev", &net, "-device", "usb-net,netdev=net0"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-no-reboot")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    say(&format!("booting: {cmd:?}"));
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start qemu-system-aarch64");
    let rx = common::output_lines(&mut child);
    let log_path = dir.join("console.log");
    say(&format!("the guest's console: {}", log_path.display()));
    let console = Console {
        rx,
        started,
        lines: Vec::new(),
        log: std::fs::File::create(&log_path).expect("create console.log"),
        closed: false,
    };
    (child, console)
}

/// Kills qemu when the test ends, however it ends.
struct Guest(std::process::Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn image_builds_reproducibly_and_boots_into_a_paired_camera() {
    if !common::prerequisite("image", None) {
        return;
    }
    let top = root().join("target/image-test");
    let t = Instant::now();
    let [(img, manifest, first_secs), (img_b, manifest_b, second_secs)] = build_twice(&top);
    say(&format!(
        "built twice side by side in {:.0} s: {first_secs:.0} s (compressed) and {second_secs:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let (a_only, b_only) = (
        only_in(&manifest, &manifest_b, 20),
        only_in(&manifest_b, &manifest, 20),
    );
    assert!(
        a_only.is_empty() && b_only.is_empty(),
        "two builds of one commit differ in their root file systems:\n first only:\n  {}\n second only:\n  {}",
        a_only.join("\n  "),
        b_only.join("\n  ")
    );
    say(&format!(
        "root file systems identical: {} entries; the images themselves are {}",
        manifest.lines().filter(|l| !l.contains("  ./")).count(),
        if std::fs::read(&img).unwrap() == std::fs::read(&img_b).unwrap() {
            "byte-identical"
        } else {
            "not byte-identical"
        }
    ));
    let raw = std::fs::metadata(&img).unwrap().len();
    let xz = std::fs::metadata(img.with_extension("img.xz"))
        .unwrap()
        .len();
    say(&format!(
        "sizes: {} MiB raw, {} MiB xz",
        raw >> 20,
        xz >> 20
    ));
    assert!(raw <= 1 << 30, "the image is over 1 GiB raw: {raw} bytes");
    assert!(
        xz <= 300 << 20,
        "the image is over 300 MiB compressed: {xz} bytes"
    );

    boot_and_check(&img, &top.join("boot"));
}

fn boot_and_check(img: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let card = prepare_card(img, dir);
    let (http_port, mqtt_port) = (18080, 11883);
    enter_private_network();
    let (child, mut console) = start_qemu(dir, &card, http_port, mqtt_port);
    let _guest = Guest(child);
    let deadline = console.started + BOOT_TIMEOUT;
    let mut problems = Vec::new();
    let mut need = |console: &mut Console, what: &str, needle: &str| -> Option<String> {
        let got = console.wait_for(needle, deadline);
        if got.is_none() {
            problems.push(format!("{what}: no console line with `{needle}`"));
        }
        got
    };

    let grown = need(
        &mut console,
        "grow",
        "campeer-setup: grow: root file system",
    );
    let name = need(&mut console, "hostname", "campeer-setup: name: campeer-");
    need(
        &mut console,
        "config",
        "campeer-setup: config: applied campeer.toml",
    );
    need(
        &mut console,
        "wifi",
        "campeer-setup: wifi: wlan0 joins \"campeer test net\"",
    );
    let left = need(
        &mut console,
        "boot partition",
        "campeer-setup: boot partition:",
    );
    let keys = need(&mut console, "keys", "no access key yet: made key");
    let online = need(&mut console, "online", "online as");
    let online_after = console.started.elapsed();
    if let Some(g) = &grown {
        // "grown from A MiB to B MiB": B must be more than A, near 2 GiB.
        let nums: Vec<u64> = g
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if !(nums.len() >= 2 && nums[1] > nums[0] && nums[1] > 1500) {
            problems.push(format!(
                "the root file system did not grow to the card: {g}"
            ));
        }
    }
    if let Some(l) = &left {
        if l.contains("campeer.toml") || l.contains("campeer-wifi.txt") {
            problems.push(format!(
                "the owner's files are still on the boot partition: {l}"
            ));
        }
    }
    let device = name
        .as_deref()
        .and_then(|l| l.split("name: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned);
    if let Some(d) = &device {
        let hex = d.trim_start_matches("campeer-");
        if hex.len() != 4 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!("the camera's name is not campeer-XXXX: {d}"));
        }
    }
    say(&format!(
        "online after {:.1} s of emulation (keys: {})",
        online_after.as_secs_f64(),
        keys.is_some()
    ));

    if console.closed {
        problems.push(format!(
            "qemu exited after {:.1} s",
            console.started.elapsed().as_secs_f64()
        ));
    }
    if let (Some(device), Some(_)) = (&device, &online) {
        if let Some(secret) =
            owner_claims_and_watches(http_port, mqtt_port, device, dir, &mut problems)
        {
            // The unit's journal is forwarded to the console: neither the
            // admin key's secret nor its MQTT password may be in it, from
            // the first boot through the claim and a session.
            let journal = console.text();
            let password = campeer::broker::key_password(secret.as_bytes(), device);
            for (what, s) in [("secret", secret.as_str()), ("MQTT password", &password)] {
                if journal.contains(s) {
                    problems.push(format!("the journal holds the admin key's {what}"));
                }
            }
            say(&format!(
                "journal: {} lines searched for the admin key's secret and password",
                journal.lines().count()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the image did not boot into a working camera:\n  {}\n--- last console lines ---\n{}",
        problems.join("\n  "),
        common::tail(&console.text(), 100)
    );
}

/// The page answers, the first claim gets the admin key, and a viewer that
/// signs with it gets stamped video; one without a key is refused. Returns
/// the admin key's secret.
fn owner_claims_and_watches(
    http_port: u16,
    mqtt_port: u16,
    device: &str,
    dir: &Path,
    problems: &mut Vec<String>,
) -> Option<String> {
    match http(http_port, "GET", "/") {
        Ok((200, body)) if body.contains("<html") || body.contains("<!doctype") => {
            say(&format!("the page: {} bytes", body.len()))
        }
        other => problems.push(format!("GET / on the guest: {other:?}")),
    }
    let pair = match http(http_port, "POST", "/claim") {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["pair"].as_str().map(str::to_owned)),
        other => {
            problems.push(format!("POST /claim on the guest: {other:?}"));
            None
        }
    };
    let Some(pair) = pair else {
        problems.push("the claim gave no key".into());
        return None;
    };
    let (id, secret) = pair.split_once('.').expect("pair is id.secret");
    let secret_file = dir.join("admin.secret");
    std::fs::write(&secret_file, secret).unwrap();
    say(&format!("claimed: key `{id}`"));
    match http(http_port, "POST", "/claim") {
        Ok((409, _)) => {}
        other => problems.push(format!("a second claim was not refused: {other:?}")),
    }
    let mqtt = format!("mqtt://127.0.0.1:{mqtt_port}");
    let report = view(
        &mqtt,
        device,
        &[
            "--key",
            id,
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--frames",
            "30",
            "--timeout",
            "180",
        ],
    );
    say(&format!("viewer: {report}"));
    let frames = report["frames"].as_u64().unwrap_or(0);
    let stamped = report["stamped_frames"].as_u64().unwrap_or(0);
    let (first, last) = (
        report["first_counter"].as_u64(),
        report["last_counter"].as_u64(),
    );
    // Most frames carry a readable stamp (at 250 kbit/s a few lose it to
    // the encoder), and the counters advance: live video from the camera.
    if !(frames >= 30
        && stamped * 3 >= frames * 2
        && matches!((first, last), (Some(a), Some(b)) if b > a))
    {
        problems.push(format!(
            "the paired viewer got no live stamped video: {report}"
        ));
    }
    // A viewer without a key is refused by the device's broker: it must
    // say so, not merely show no frames (a crashed viewer shows none too).
    let stranger = view(&mqtt, device, &["--frames", "5", "--timeout", "30"]);
    let refused = stranger["error"].is_string() && stranger.to_string().contains("refused");
    if !refused || stranger["frames"].as_u64().is_some_and(|f| f > 0) {
        problems.push(format!(
            "a viewer without a key was not refused: {stranger}"
        ));
    }
    Some(secret.to_owned())
}

fn view(mqtt: &str, device: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_campeer"))
        .args([
            "--log", "warn", "view", "--json", "--mqtt", mqtt, "--device", device,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run campeer view");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        serde_json::json!({
            "error": "no JSON report",
            "stderr": common::tail(&String::from_utf8_lossy(&out.stderr), 10),
        })
    })
}
