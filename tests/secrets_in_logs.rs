//! No secret in any log line or process list: a whole signed run of the
//! daemon with its own broker, at debug level for every crate, with every
//! kind of credential in use (the admin key, a view key, their MQTT
//! passwords, a WHEP/snapshot token, a bad login and a wrong token, a
//! session opened and ended, a key revoked),
//! then every line the daemon, its Mosquitto and the viewers logged is
//! searched for each secret, and so is every process's command line while
//! it ran.
//!
//! Needs Mosquitto (scripts/install-deps.sh).

mod common;

use campeer::broker::key_password;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEVICE: &str = "secretcam";

fn keys_file(state: &Path) -> toml::Value {
    let text = std::fs::read_to_string(state.join("keys.toml")).expect("keys.toml");
    toml::from_str(&text).expect("keys.toml parses")
}

/// The stored secret of key `id`.
fn secret_of(state: &Path, id: &str) -> String {
    let file = keys_file(state);
    let keys = file["keys"].as_array().expect("keys");
    let k = keys
        .iter()
        .find(|k| k["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("key {id} in keys.toml: {file:?}"));
    k["secret"].as_str().expect("secret").to_owned()
}

fn campeer(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run campeer")
}

/// Runs `campeer view` with key `id` and returns its JSON report and log.
fn view(
    broker: u16,
    key: &str,
    secret_file: &Path,
    role: &str,
    extra: &[&str],
) -> (String, String) {
    let url = format!("mqtt://127.0.0.1:{broker}");
    let mut args = vec![
        "--log",
        "debug",
        "view",
        "--mqtt",
        &url,
        "--device",
        DEVICE,
        "--key",
        key,
        "--role",
        role,
        "--json",
        "--timeout",
        "20",
    ];
    let sf = secret_file.to_string_lossy().into_owned();
    args.extend(["--secret-file", &sf]);
    args.extend(extra);
    let out = campeer(&args);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every process's command line and environment that mentions the test's
/// state directory or device: the daemon, its Mosquitto, the viewers.
fn process_texts(needles: &[&str]) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if needles.iter().any(|n| text.contains(n)) {
            found.push((pid, text));
        }
    }
    found
}

fn assert_no_secret(what: &str, text: &str, secrets: &[(String, String)]) {
    for (name, secret) in secrets {
        assert!(secret.len() >= 16, "{name} is a real secret");
        if let Some(at) = text.find(secret.as_str()) {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "{what} holds {name}, in this line:\n{}",
                &text[line_start..line_end]
            );
        }
    }
}

fn write_private(path: &PathBuf, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_or_a_command_line() {
    let dir = TempDir::new("secrets");
    let state = dir.0.join("state");
    let log = dir.0.join("daemon.log");
    // The own broker's LAN listener: Mosquitto reads port 0 as a Unix
    // socket, so this one port is picked here.
    let broker = free_port();
    let state_arg = state.to_string_lossy().into_owned();
    let mut daemon = Command::new(BIN)
        .args([
            "--log",
            "debug",
            "run",
            "--device-id",
            DEVICE,
            "--video",
            "test",
        ])
        .args(["--state-dir", &state_arg])
        .args(["--broker-listen", &format!("127.0.0.1:{broker}")])
        .args(["--http", PAGE_ANY_PORT])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.0.join("daemon.out")).expect("out"))
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start campeer");
    let t = Instant::now();
    while !state.join("keys.toml").exists() || !read(&log).contains("connected to broker") {
        assert!(
            t.elapsed() < Duration::from_secs(30) && daemon.try_wait().ok().flatten().is_none(),
            "the daemon did not start; log:\n{}",
            tail(&read(&log), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let http = wait_page_port(|| read(&log), Duration::from_secs(10)).await;
    // Keys: the admin key the daemon made, and a view key added now.
    let admin = secret_of(&state, "admin");
    let out = campeer(&[
        "keys",
        "add",
        "kitchen",
        "--role",
        "view",
        "--state-dir",
        &state_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kitchen = secret_of(&state, "kitchen");
    let admin_file = dir.0.join("admin.secret");
    let kitchen_file = dir.0.join("kitchen.secret");
    write_private(&admin_file, &admin);
    write_private(&kitchen_file, &kitchen);
    let wrong_file = dir.0.join("wrong.secret");
    write_private(&wrong_file, "a-wrong-secret-of-enough-length-123");

    // Sessions: the admin watches and controls, the view key watches, a
    // wrong secret is refused.
    let mut logs = Vec::new();
    let (report, vlog) = view(
        broker,
        "admin",
        &admin_file,
        "control",
        &["--frames", "20", "--call", "ping", "-"],
    );
    assert!(
        frames(&report) >= 20,
        "admin's view failed:\n{report}\n{}",
        tail(&vlog, 30)
    );
    logs.push(("the admin's viewer".to_owned(), format!("{report}\n{vlog}")));
    let (report, vlog) = view(
        broker,
        "kitchen",
        &kitchen_file,
        "view",
        &["--frames", "20"],
    );
    assert!(
        frames(&report) >= 20,
        "kitchen's view failed:\n{report}\n{}",
        tail(&vlog, 30)
    );
    logs.push((
        "the view key's viewer".to_owned(),
        format!("{report}\n{vlog}"),
    ));
    let (report, vlog) = view(
        broker,
        "kitchen",
        &wrong_file,
        "view",
        &["--frames", "5", "--timeout", "5"],
    );
    logs.push((
        "the wrong secret's viewer".to_owned(),
        format!("{report}\n{vlog}"),
    ));

    // A WHEP/snapshot token of the view key, used once, and a wrong one.
    let out = campeer(&["keys", "--state-dir", &state_arg, "token", "add", "kitchen"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let t = Instant::now();
    while !read(&log).contains("tokens changed; reloaded") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the token was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = url::Url::parse(&format!("http://127.0.0.1:{http}/snapshot.jpg")).unwrap();
    let wrong_token = format!(
        "{}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &token[..16]
    );
    for (bearer, want) in [
        (token.as_str(), [200, 503]),
        (wrong_token.as_str(), [401, 401]),
    ] {
        let r = campeer::http_client::Exchange {
            bearer: Some(bearer),
            max_body: 1 << 20,
            ..campeer::http_client::Exchange::new(hyper::Method::GET, &snap)
        }
        .send()
        .await
        .expect("GET /snapshot.jpg");
        assert!(want.contains(&r.status.as_u16()), "{}", r.status);
    }

    // While it runs: no secret on any command line.
    let procs = process_texts(&[&state_arg, DEVICE, "mosquitto"]);
    assert!(
        procs.iter().any(|(p, _)| *p == daemon.id()),
        "the daemon's own command line was found: {procs:?}"
    );

    // A key revoked while running.
    let out = campeer(&["keys", "revoke", "kitchen", "--state-dir", &state_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    while !read(&log).contains("access keys changed") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the revocation was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    let secrets = vec![
        ("the admin key's secret".to_owned(), admin.clone()),
        ("the view key's secret".to_owned(), kitchen.clone()),
        (
            "the admin key's MQTT password".to_owned(),
            key_password(admin.as_bytes(), DEVICE),
        ),
        (
            "the view key's MQTT password".to_owned(),
            key_password(kitchen.as_bytes(), DEVICE),
        ),
        (
            "the wrong secret".to_owned(),
            "a-wrong-secret-of-enough-length-123".to_owned(),
        ),
        ("the view key's WHEP token".to_owned(), token.clone()),
        ("a wrong WHEP token".to_owned(), wrong_token.clone()),
    ];
    let daemon_log = read(&log) + &read(&dir.0.join("daemon.out"));
    assert!(
        daemon_log.lines().count() > 50 && daemon_log.contains("mosquitto"),
        "a debug run logs plenty, its broker included:\n{}",
        tail(&daemon_log, 20)
    );
    assert_no_secret("the daemon's log", &daemon_log, &secrets);
    for (what, text) in &logs {
        assert_no_secret(what, text, &secrets);
    }
    for (pid, cmdline) in &procs {
        assert_no_secret(
            &format!("the command line of process {pid}"),
            cmdline,
            &secrets,
        );
    }
    println!(
        "secrets_in_logs: {} daemon log lines, {} viewer log lines, {} command lines searched for {} secrets",
        daemon_log.lines().count(),
        logs.iter().map(|(_, t)| t.lines().count()).sum::<usize>(),
        procs.len(),
        secrets.len()
    );
}

/// The frame count of a `campeer view --json` report (0 when it has none).
fn frames(report: &str) -> u64 {
    report
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["frames"].as_u64())
        .unwrap_or(0)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
