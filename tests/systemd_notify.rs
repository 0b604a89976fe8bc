//! The sd_notify protocol as systemd speaks it: the daemon, started with a
//! NOTIFY_SOCKET and WATCHDOG_USEC, says READY=1 once the camera and the
//! broker are up, pings WATCHDOG=1 while media flows, and STOPPING=1 on
//! SIGTERM.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn collect(
    sock: &UnixDatagram,
    until: impl Fn(&[String]) -> bool,
    timeout: Duration,
) -> Vec<String> {
    let mut got = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < timeout && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_watchdog_and_stopping_are_notified() {
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let broker = Broker::start();
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the
    // shell's pid, so $$ is the daemon's.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ exec {BIN} run --mqtt {} --device-id cam-sd --size 320x240",
            broker.url()
        ))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let msgs = collect(
        &sock,
        |m| m.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 2,
        Duration::from_secs(15),
    );
    let ready = msgs.iter().position(|m| m.contains("READY=1"));
    assert!(ready.is_some(), "no READY=1: {msgs:?}");
    assert!(
        msgs[ready.unwrap()].contains("STATUS=online as cam-sd"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "watchdog not fed: {msgs:?}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest = collect(
        &sock,
        |m| m.iter().any(|s| s.contains("STOPPING=1")),
        Duration::from_secs(5),
    );
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
    assert!(child.wait().unwrap().success());
}
