//! The systemd unit and what the Debian package installs with it:
//! `systemd-analyze verify` accepts the unit, `systemd-analyze security`
//! rates it (printed, and held to "OK" or better), systemd-sysusers creates
//! the campeer user in the video, audio and gpio groups from
//! systemd/campeer.sysusers, and the packaged /etc/campeer/campeer.toml is
//! a valid configuration.
//!
//! The systemd tools are Debian's `systemd` package (bookworm's has
//! `systemd-analyze security --offline`); the test command installs it, and
//! a missing tool fails these tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_campeer");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn say(line: &str) {
    // Past the harness's capture, so CI logs show the score.
    let _ = writeln!(std::io::stderr().lock(), "systemd_unit: {line}");
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn unit_text() -> String {
    std::fs::read_to_string(root().join("systemd/campeer.service")).expect("read the unit")
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "campeer-systemd-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The unit with ExecStart pointing at the binary under test (verify
/// insists that the command exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let text = unit_text().replace("/usr/bin/campeer ", &format!("{BIN} "));
    let path = dir.join("campeer.service");
    std::fs::write(&path, text).unwrap();
    path
}

/// The values of `key=` lines in the [Service] section.
fn service_values(key: &str) -> Vec<String> {
    let text = unit_text();
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    out.push(v.trim().to_owned());
                }
            }
        }
    }
    out
}

#[test]
fn unit_has_the_settings_the_daemon_relies_on() {
    assert_eq!(service_values("Type"), ["notify"]);
    assert_eq!(service_values("NotifyAccess"), ["main"]);
    assert_eq!(service_values("Restart"), ["on-failure"]);
    assert_eq!(service_values("User"), ["campeer"]);
    let watchdog = service_values("WatchdogSec");
    assert_eq!(watchdog.len(), 1, "one WatchdogSec");
    // The daemon withholds pings after 6 s of no media progress
    // (supervisor::STALL_AFTER_US): the watchdog must be longer.
    let secs: u64 = watchdog[0].trim_end_matches('s').parse().unwrap();
    assert!(
        secs > 6,
        "WatchdogSec={secs}s must exceed the 6 s stall limit"
    );
    let exec = service_values("ExecStart");
    assert_eq!(
        exec,
        ["/usr/bin/campeer run --config /etc/campeer/campeer.toml"]
    );
    let groups = service_values("SupplementaryGroups").join(" ");
    for g in ["video", "audio", "gpio"] {
        assert!(groups.split_whitespace().any(|x| x == g), "{g} in {groups}");
    }
    let devices = service_values("DeviceAllow");
    for d in ["char-video4linux rw", "char-alsa rw", "char-gpiochip rw"] {
        assert!(devices.iter().any(|x| x == d), "DeviceAllow={d}");
    }
    assert_eq!(service_values("DevicePolicy"), ["closed"]);
    assert_eq!(service_values("ProtectSystem"), ["strict"]);
    assert_eq!(service_values("NoNewPrivileges"), ["yes"]);
    assert_eq!(service_values("CapabilityBoundingSet"), [""]);
    assert_eq!(service_values("MemoryDenyWriteExecute"), ["yes"]);
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    assert!(
        have("systemd-analyze"),
        "systemd-analyze is not installed (Debian package `systemd`; scripts/install-cross-deps.sh installs it)"
    );
    let dir = scratch("verify");
    let unit = unit_for_test(&dir);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Only lines about our unit count: verify also loads the system's units.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("campeer")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
    say("systemd-analyze verify: no complaints");
}

#[test]
fn systemd_analyze_security_rates_the_unit_ok() {
    assert!(
        have("systemd-analyze"),
        "systemd-analyze is not installed (Debian package `systemd`; scripts/install-cross-deps.sh installs it)"
    );
    let dir = scratch("security");
    let unit = unit_for_test(&dir);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && text.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        panic!("systemd-analyze security failed: {err}");
    }
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    say(line.trim());
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    // systemd calls 0-1.9 "OK", 2-4.9 "MEDIUM", 5-6.9 "EXPOSED", 7+ "UNSAFE".
    assert!(score < 2.0, "exposure {score} is not OK any more:\n{text}");
}

#[test]
fn sysusers_creates_the_user_in_its_groups() {
    assert!(
        have("systemd-sysusers"),
        "systemd-sysusers is not installed (Debian package `systemd`; scripts/install-cross-deps.sh installs it)"
    );
    let dir = scratch("sysusers");
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    // A Raspberry Pi OS-like starting point: video and audio exist, gpio
    // does not (as on plain Debian).
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("group"),
        "root:x:0:\naudio:x:29:\nvideo:x:44:\nnogroup:x:65534:\n",
    )
    .unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", dir.display()))
        .arg(root().join("systemd/campeer.sysusers"))
        .output()
        .expect("run systemd-sysusers");
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = passwd
        .lines()
        .find(|l| l.starts_with("campeer:"))
        .unwrap_or_else(|| panic!("no campeer user:\n{passwd}"));
    assert!(user.ends_with(":/nonexistent:/usr/sbin/nologin"), "{user}");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    for g in ["video", "audio", "gpio"] {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{g}:")))
            .unwrap_or_else(|| panic!("no {g} group:\n{group}"));
        let members = line.rsplit(':').next().unwrap();
        assert!(
            members.split(',').any(|m| m == "campeer"),
            "campeer is not in {g}: {line}"
        );
    }
    say(&format!("sysusers: {user}"));
}

#[test]
fn packaged_config_is_valid() {
    let path = root().join("packaging/campeer.toml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run campeer check-config");
    assert!(
        out.status.success(),
        "campeer check-config {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("v4l2:/dev/video0"), "{text}");
}
