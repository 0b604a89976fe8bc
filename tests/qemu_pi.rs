//! Emulated Raspberry Pis: qemu boots Debian's kernel as a Raspberry Pi 3
//! Model B (`-M raspi3b`, bcm2837-rpi-3-b.dtb, the arm64 kernel, the
//! aarch64 build) and as a Raspberry Pi 2 Model B (`-M raspi2b`,
//! bcm2836-rpi-2-b.dtb, the armhf kernel, the armv7 build), each with an
//! initramfs holding the cross-built daemon and viewer, and real kernel
//! drivers behind them: vivid (camera), snd-aloop (microphone, a 1 kHz tone
//! played into it) and pinctrl-bcm2835 (the Pi's GPIO). The guest's /init
//! (scripts/qemu/init) runs the checks and prints `CHECK <name> ok|FAIL`
//! lines and `CAMPEER-QEMU-RESULT: PASS|FAIL`; these tests boot it, read the
//! serial console, print what they saw and fail on anything missing.
//!
//! Needs scripts/install-cross-deps.sh (cross toolchains, arm64 and armhf
//! libraries, qemu-system-arm) and the Debian package lists for
//! `apt-get download` (the kernels, busybox and aplay are fetched once into
//! target/qemu/debs). The release binaries are (re)built by
//! scripts/cross-build.sh, a no-op when they are up to date. Set
//! CAMPEER_SKIP=qemu to skip; without that, a missing tool is a failure,
//! not a skip. The two guests run one after the other (a lock), never side
//! by side on the two cores.
//!
//! Time: the cross builds are the long part (about 8 and 6.5 minutes from
//! scratch on two cores); each guest reaches /init in a few seconds of its
//! own time and finishes its checks in about a minute under TCG.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every check the guest must report `ok`.
const CHECKS: &[&str] = &[
    "board",
    "camera",
    "microphone",
    "gpio",
    "online",
    "video",
    "stamps",
    "audio",
    "gpio-set",
    "camera-gone",
    "survived",
    "resumed",
    "video-after",
    "gpio-safe",
    "exec",
];

/// From qemu's start to the guest's result line, at most.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);

/// One guest at a time: two TCG guests on two cores would starve each other.
static ONE_GUEST: Mutex<()> = Mutex::new(());

fn say(line: &str) {
    // Straight to stderr, past the test harness's capture: CI logs show what
    // the guest did even when the test passes.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "qemu_pi: {line}");
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first of `tools` not on PATH, with the command that installs it.
fn missing_tool(tools: &[&str]) -> Option<String> {
    let found = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    let tool = tools.iter().find(|t| !found(t))?;
    Some(format!(
        "{tool} is not installed: run scripts/install-cross-deps.sh"
    ))
}

/// Runs the initramfs builder (which cross-builds the binary when needed)
/// and returns its boot.env as (key, value) pairs.
fn build_image(target: &str, machine: &str) -> Vec<(String, String)> {
    let t = Instant::now();
    // Always ask cargo: a stale binary would test old code.
    let out = common::cargo_script(&root().join("scripts/cross-build.sh"))
        .arg(target)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/cross-build.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/cross-build.sh {target} failed:\n{}",
        common::tail(&text, 40)
    );
    for l in text.lines().filter(|l| l.starts_with("cross-build:")) {
        say(l);
    }
    let out = common::cargo_script(&root().join("scripts/qemu/build-initramfs.sh"))
        .arg(machine)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/qemu/build-initramfs.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/qemu/build-initramfs.sh failed:\n{}",
        common::tail(&text, 40)
    );
    for l in text.lines().filter(|l| l.starts_with("build-initramfs:")) {
        say(l);
    }
    say(&format!(
        "image ready in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let env_path = text
        .lines()
        .rev()
        .find(|l| l.ends_with("boot.env"))
        .expect("build-initramfs.sh prints the boot.env path last");
    std::fs::read_to_string(env_path.trim())
        .expect("read boot.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// What the guest printed that matters.
#[derive(Default)]
struct Seen {
    checks: Vec<(String, bool, String)>,
    result: Option<bool>,
    booted_after: Option<Duration>,
    console: Vec<String>,
}

#[test]
fn emulated_raspberry_pi_3_aarch64() {
    run_guest(
        "aarch64",
        "raspi3b",
        "Raspberry Pi 3 Model B",
        "",
        &[
            "qemu-system-aarch64",
            "qemu-aarch64-static",
            "aarch64-linux-gnu-gcc",
        ],
    );
}

#[test]
fn emulated_raspberry_pi_2_armv7() {
    run_guest(
        "armv7",
        "raspi2b",
        "Raspberry Pi 2 Model B",
        // The armv7 kernel write-protects each module's memory and, when
        // it frees a module's init code, flushes the TLB page by page over
        // the whole span from the module area to vmalloc space. Under TCG
        // every one of those flushes is emulated: the guest locked up for
        // minutes at a time (soft lockups, RCU stalls) at a random moment,
        // and once that was while the daemon started (CI, session 3).
        // rodata=off skips the write protection, so nothing is flushed.
        "rodata=off",
        &[
            "qemu-system-arm",
            "qemu-arm-static",
            "arm-linux-gnueabihf-gcc",
        ],
    );
}

/// Builds the image for `machine` from the `target` build, boots it, and
/// fails unless every check passed on a board whose model starts `model`.
fn run_guest(target: &str, machine: &str, model: &str, cmdline: &str, tools: &[&str]) {
    let tools: Vec<&str> = tools.iter().chain(&["cpio", "depmod"]).copied().collect();
    if !common::prerequisite("qemu", missing_tool(&tools)) {
        return;
    }
    // A failed guest must not poison the other test's lock.
    let _one = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let env = build_image(target, machine);
    let get = |k: &str| -> String {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("boot.env lacks {k}"))
    };
    let (kernel, dtb, initrd) = (get("KERNEL"), get("DTB"), get("INITRD"));
    for p in [&kernel, &dtb, &initrd] {
        assert!(Path::new(p).is_file(), "{p} is missing");
    }

    let mut cmd = Command::new(get("QEMU"));
    cmd.args(["-M", &get("MACHINE"), "-m", "1G"])
        .args(["-kernel", &kernel, "-dtb", &dtb, "-initrd", &initrd])
        .args([
            "-append",
            format!("console=ttyAMA0,115200 rdinit=/init loglevel=4 panic=-1 {cmdline}").trim_end(),
        ])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-no-reboot")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    say(&format!("{machine}: booting: {cmd:?}"));
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start qemu-system-aarch64");
    let pid = child.id();

    // Read stdout and stderr on threads; lines arrive on one channel.
    let rx = common::output_lines(&mut child);

    let mut seen = Seen::default();
    let deadline = started + GUEST_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => break, // timed out, or qemu closed its output
        };
        let line = line.replace('\r', "");
        if line.contains("CAMPEER-QEMU:") && line.contains("booted:") && seen.booted_after.is_none()
        {
            seen.booted_after = Some(started.elapsed());
        }
        if let Some(rest) = line.strip_prefix("CHECK ") {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next().unwrap_or_default().to_owned();
            let ok = parts.next() == Some("ok");
            let detail = parts.next().unwrap_or_default().to_owned();
            say(&format!(
                "{machine} [{:6.1}s] CHECK {name} {} {detail}",
                started.elapsed().as_secs_f64(),
                if ok { "ok" } else { "FAIL" }
            ));
            seen.checks.push((name, ok, detail));
        } else if line.starts_with("CAMPEER-QEMU")
            || line.starts_with("VIEW")
            || line.starts_with("DAEMON-LOG")
            || line.starts_with("GPIO-SAFE")
            || line.starts_with("TRACE")
        {
            say(&format!(
                "{machine} [{:6.1}s] {line}",
                started.elapsed().as_secs_f64()
            ));
        }
        if let Some(r) = line.strip_prefix("CAMPEER-QEMU-RESULT: ") {
            seen.result = Some(r.trim() == "PASS");
            seen.console.push(line);
            break;
        }
        seen.console.push(line);
    }
    let elapsed = started.elapsed();
    // The emulated Pis cannot power off: end qemu (our own child) now.
    let _ = child.kill();
    let _ = child.wait();
    say(&format!(
        "{machine}: qemu (pid {pid}) ran {:.1} s; guest reached /init after {}",
        elapsed.as_secs_f64(),
        seen.booted_after
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into())
    ));

    let mut problems = Vec::new();
    for want in CHECKS {
        match seen.checks.iter().find(|(n, _, _)| n == want) {
            None => problems.push(format!("no `{want}` check reported")),
            Some((_, false, detail)) => problems.push(format!("`{want}` failed: {detail}")),
            Some(_) => {}
        }
    }
    for (name, ok, detail) in &seen.checks {
        if !ok && !CHECKS.contains(&name.as_str()) {
            problems.push(format!("`{name}` failed: {detail}"));
        }
    }
    if let Some((_, true, detail)) = seen.checks.iter().find(|(n, _, _)| n == "board") {
        if !detail.contains(model) {
            problems.push(format!("the guest is not a {model}: {detail}"));
        }
    }
    match seen.result {
        Some(true) => {}
        Some(false) => problems.push("the guest reported FAIL".into()),
        None => problems.push(format!(
            "no result line within {} s",
            GUEST_TIMEOUT.as_secs()
        )),
    }
    say(&format!(
        "{machine}: {} of {} checks ok",
        CHECKS
            .iter()
            .filter(|w| seen.checks.iter().any(|(n, ok, _)| n == *w && *ok))
            .count(),
        CHECKS.len()
    ));
    assert!(
        problems.is_empty(),
        "the emulated {model} failed:\n  {}\n--- last console lines ---\n{}",
        problems.join("\n  "),
        common::tail(&seen.console.join("\n"), 80)
    );
}
