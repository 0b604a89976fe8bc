//! The README's first command on a fresh machine: `scripts/run.sh` in a new
//! Debian bookworm root must install what it needs, build the page and the
//! daemon, and serve the page; a second run with nothing changed must start
//! in seconds.
//!
//! The root is made by mmdebstrap (variant minbase, from this machine's own
//! Debian mirror lines) under /var/tmp and removed afterwards. Inside a
//! private mount and PID namespace (`unshare`), it gets /proc, this
//! machine's rustup toolchain (read-only), cargo's registry cache, and a
//! persistent release target directory under the test target dir; then
//! `scripts/run.sh` runs in a chroot as root, on the host's network (apt,
//! npm and the daemon's loopback ports). Everything else the run command
//! needs (compilers, libclang, Node.js and npm from Debian, Mosquitto, the
//! page's npm packages) it installs itself: that is the point.
//!
//! Success means: `GET /` on CAMPEER_HTTP returns the real viewer page (not
//! the placeholder), `GET /config.json` answers JSON, and the daemon logs
//! "online as". The second run must not recompile anything.
//!
//! Sharing the release target between test runs keeps later runs from
//! compiling the dependencies again, but then their build scripts (bindgen
//! with libclang, pkg-config) are not rerun in the new root; the test prints
//! whether the build was cold. CI starts from a fresh clone, so its build is
//! cold; CAMPEER_FRESH_COLD=1 empties the shared target first.
//!
//! The build in the root is `scripts/run.sh`'s own `cargo build --release`
//! with two of the profile's knobs turned down through cargo's environment
//! (`CARGO_PROFILE_RELEASE_OPT_LEVEL=1`, `..._LTO=off`): the test proves
//! that the run command installs everything the build and the daemon need
//! (compilers, libclang for bindgen, pkg-config's libraries, Node.js),
//! which no optimisation setting changes, and a cold CI run saves minutes
//! of optimising a binary whose speed nobody measures here.
//!
//! Needs root, mmdebstrap, unshare, chroot, git and access to the Debian
//! mirror, crates.io's cache (already filled by the host's build) and npm's
//! registry. Without mmdebstrap or root it fails, saying how to get them,
//! unless the developer opted out with `CAMPEER_SKIP=fresh_machine`.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT_PREFIX: &str = "/var/tmp/campeer-fresh-";
/// Where the repository copy lives inside the fresh root.
const SRC_IN_ROOT: &str = "src/campeer";
const COLD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const WARM_TIMEOUT: Duration = Duration::from_secs(180);
/// "Starts in seconds": a relink of the release binary alone takes minutes
/// on the project's 2-core machines.
const WARM_LIMIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn say(msg: impl AsRef<str>) {
    eprintln!("fresh-machine: {}", msg.as_ref());
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "not root (mmdebstrap --mode=root, mount and chroot need it): run the test as root, e.g. sudo -E cargo test --test fresh_machine".into(),
        );
    }
    for tool in ["mmdebstrap", "unshare", "chroot", "git"] {
        if !have(tool) {
            return Some(format!(
                "{tool} is not installed: sudo apt-get install mmdebstrap util-linux coreutils git (scripts/test.sh installs mmdebstrap)"
            ));
        }
    }
    None
}

/// The fresh root and what was made for it; unmounted (the mounts live in
/// the run's own mount namespace) and removed on drop.
struct FreshRoot {
    dir: PathBuf,
    run: Option<Child>,
}

impl FreshRoot {
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for FreshRoot {
    fn drop(&mut self) {
        if let Some(mut c) = self.run.take() {
            kill_group(&c);
            let _ = c.wait();
        }
        // Never remove a tree with something mounted in it: a bound
        // registry or toolchain would be deleted on the host.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy().into_owned();
        if !dir.starts_with(ROOT_PREFIX) || mounts.lines().any(|l| l.contains(&dir)) {
            say(format!("NOT removing {dir}: something is mounted in it"));
            return;
        }
        let t = Instant::now();
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => say(format!("removed {dir} in {}", secs(t.elapsed()))),
            Err(e) => say(format!("removing {dir}: {e}")),
        }
    }
}

fn kill_group(c: &Child) {
    // SAFETY: kill(2) with a negative pid signals the process group the
    // child leads (it was spawned with process_group(0)).
    unsafe {
        libc::kill(-(c.id() as i32), libc::SIGKILL);
    }
}

/// This machine's Debian sources (the fresh root uses the same mirror), and
/// apt settings the mirror needs (proxies, validity checks of snapshots).
fn host_apt() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut sources = Vec::new();
    let mut candidates = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(d) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = d.flatten().map(|e| e.path()).collect();
        v.sort();
        candidates.extend(v);
    }
    for p in candidates {
        let name = p.to_string_lossy().into_owned();
        if !(name.ends_with(".list") || name.ends_with(".sources")) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let debian = text.lines().any(|l| {
            let l = l.trim();
            !l.starts_with('#') && l.contains("/debian") && l.contains("://")
        });
        if debian {
            sources.push(p);
        } else if !text.trim().is_empty() {
            say(format!("not using {name} (not a Debian mirror)"));
        }
    }
    let mut opts = Vec::new();
    if let Ok(d) = std::fs::read_dir("/etc/apt/apt.conf.d") {
        let mut v: Vec<PathBuf> = d.flatten().map(|e| e.path()).collect();
        v.sort();
        for p in v {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if text.contains("Proxy") || text.contains("Check-Valid-Until") {
                opts.push(p);
            }
        }
    }
    (sources, opts)
}

fn mmdebstrap(root: &Path) {
    let (sources, opts) = host_apt();
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=minbase", "--quiet"]);
    for o in &opts {
        cmd.arg(format!("--aptopt={}", o.display()));
    }
    cmd.arg("bookworm").arg(root);
    if sources.is_empty() {
        cmd.arg("http://deb.debian.org/debian");
    } else {
        cmd.args(&sources);
    }
    say(format!("{cmd:?}"));
    let out = cmd.output().expect("run mmdebstrap");
    assert!(
        out.status.success(),
        "mmdebstrap failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the work tree's files (tracked and untracked, not ignored: what a
/// clone plus local edits holds), keeping their modes and mtimes so that a
/// shared target sees unchanged sources as unchanged.
fn copy_repo(dest: &Path) -> usize {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .expect("run git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    let mut n = 0;
    for rel in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).expect("UTF-8 file names"));
        let from = repo().join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue; // deleted in the work tree
        };
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().expect("a file has a parent")).expect("mkdir");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from).expect("read link");
            std::os::unix::fs::symlink(target, &to).expect("copy symlink");
        } else if meta.is_file() {
            std::fs::copy(&from, &to).expect("copy file");
            let f = File::options().write(true).open(&to).expect("open copy");
            f.set_modified(meta.modified().expect("mtime"))
                .expect("set mtime");
        } else {
            continue;
        }
        n += 1;
    }
    n
}

/// The machine's network setup, which a fresh machine on the same network
/// would have too: proxies and the CA variables (as NAME=value).
fn network_env() -> Vec<String> {
    let names = [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok().map(|v| format!("{n}={v}")))
        .collect()
}

/// Local CA certificates (a network's TLS-inspecting proxy) and npm's
/// global settings (Debian's npm reads /etc/npmrc, e.g. `cafile`): site
/// setup, not something the run command should install.
fn copy_site_setup(root: &Path) {
    let local_ca = Path::new("/usr/local/share/ca-certificates");
    if let Ok(d) = std::fs::read_dir(local_ca) {
        let to = root.join("usr/local/share/ca-certificates");
        std::fs::create_dir_all(&to).expect("mkdir ca-certificates");
        for e in d.flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a local CA");
                say(format!("site setup: {}", e.path().display()));
            }
        }
    }
    if Path::new("/etc/npmrc").is_file() {
        std::fs::copy("/etc/npmrc", root.join("etc/npmrc")).expect("copy /etc/npmrc");
        say("site setup: /etc/npmrc");
    }
}

/// Starts `scripts/run.sh` in the root, in new mount and PID namespaces.
/// Output goes to `log`.
fn start_run(root: &Path, target: &Path, http: &str, log: &Path) -> Child {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.rustup"));
    // Runs as PID 1 of the new namespace; the mounts vanish with it.
    let script = r#"
set -eu
R=$1 TARGET=$2 CARGO_HOME_HOST=$3 RUSTUP_HOME_HOST=$4 HTTP=$5
ro_bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }
mount -t proc proc "$R/proc"
mount -t tmpfs tmpfs "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ro_bind "$RUSTUP_HOME_HOST" "$R/root/.rustup"
ro_bind "$CARGO_HOME_HOST/bin" "$R/root/.cargo/bin"
mkdir -p "$R/root/.cargo/registry" "$R/SRC/target"
mount --bind "$CARGO_HOME_HOST/registry" "$R/root/.cargo/registry"
mount --bind "$TARGET" "$R/SRC/target"
shift 5
exec chroot "$R" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CAMPEER_HTTP="$HTTP" CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off "$@" \
    /bin/bash -c 'cd /SRC && exec bash scripts/run.sh'
"#
    .replace("SRC", SRC_IN_ROOT);
    let log = File::create(log).expect("create the run log");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        "bash",
        "-c",
        &script,
        "fresh-root",
    ])
    .arg(root)
    .arg(target)
    .arg(&cargo_home)
    .arg(&rustup_home)
    .arg(http)
    .args(network_env())
    .stdin(Stdio::null())
    .stdout(log.try_clone().expect("dup log"))
    .stderr(log)
    .process_group(0);
    cmd.spawn().expect("spawn unshare")
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.take(4 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the page and config.json are served and the daemon said it
/// is online; returns how long that took from `start`.
fn wait_ready(
    child: &mut Child,
    start: Instant,
    addr: &str,
    log: &Path,
    limit: Duration,
) -> Duration {
    let mut page_ok = false;
    let mut config_ok = false;
    let mut online = false;
    loop {
        if let Some(status) = child.try_wait().expect("poll the run") {
            panic!(
                "scripts/run.sh ended ({status}) before serving the page; its log ends with:\n{}",
                log_tail(log, 80)
            );
        }
        if !online {
            online = std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("online as");
        }
        if !page_ok {
            if let Some((200, body)) = http_get(addr, "/") {
                assert!(
                    !body.contains("campeer-placeholder"),
                    "the run command serves the placeholder page, not the viewer"
                );
                assert!(
                    body.contains("app.js"),
                    "GET / is not the viewer page:\n{body}"
                );
                page_ok = true;
            }
        }
        if page_ok && !config_ok {
            if let Some((status, body)) = http_get(addr, "/config.json") {
                assert_eq!(status, 200, "GET /config.json: {body}");
                let v: serde_json::Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("config.json is not JSON ({e}): {body}"));
                assert!(v.is_object(), "config.json is not an object: {v}");
                config_ok = true;
            }
        }
        if page_ok && config_ok && online {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no page/config/online (page {page_ok}, config.json {config_ok}, online {online}) after {}; log:\n{}",
            secs(limit),
            log_tail(log, 80)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// SIGTERM to the daemon (PID 1 of the namespace), then SIGKILL for the
/// whole process group if it has not ended within 20 s.
fn stop(mut child: Child) -> Duration {
    let t = Instant::now();
    let pid = child.id();
    let inner =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for c in inner
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        // SAFETY: kill(2) on a child of ours that we have not reaped.
        unsafe {
            libc::kill(c, libc::SIGTERM);
        }
    }
    while t.elapsed() < Duration::from_secs(20) {
        if child.try_wait().expect("poll the run").is_some() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say("the daemon did not stop within 20 s of SIGTERM: killing it");
    kill_group(&child);
    let _ = child.wait();
    t.elapsed()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn run_command_on_a_fresh_bookworm_root() {
    if !common::prerequisite("fresh_machine", missing_prerequisite()) {
        return;
    }
    let total = Instant::now();

    // Kept outside the clone (CI clones afresh) so a machine that ran the
    // suite before reuses the dependencies' release build.
    let shared = std::env::var_os("CAMPEER_FRESH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/campeer-tests/fresh-machine"));
    let target = shared.join("target");
    if std::env::var_os("CAMPEER_FRESH_COLD").is_some() && target.exists() {
        std::fs::remove_dir_all(&target).expect("empty the shared release target");
    }
    std::fs::create_dir_all(&target).expect("create the shared release target");
    let reused = count_files(&target.join("release/deps"));

    let dir = PathBuf::from(format!(
        "{ROOT_PREFIX}{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("create the root's directory");
    let mut fresh = FreshRoot { dir, run: None };
    let root = fresh.root();

    let t = Instant::now();
    mmdebstrap(&root);
    let t_debootstrap = t.elapsed();
    say(format!(
        "mmdebstrap bookworm minbase: {}",
        secs(t_debootstrap)
    ));

    copy_site_setup(&root);
    let t = Instant::now();
    let n = copy_repo(&root.join(SRC_IN_ROOT));
    say(format!(
        "copied {n} repository files: {}",
        secs(t.elapsed())
    ));

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr = format!("127.0.0.1:{port}");

    // Run 1: installs, builds, serves.
    let cold = reused == 0;
    say(format!(
        "run 1: release target {}",
        if cold {
            "cold (empty)".to_owned()
        } else {
            format!(
                "warm ({reused} artifacts from an earlier run; CAMPEER_FRESH_COLD=1 empties it)"
            )
        }
    ));
    let log1 = shared.join("run1.log");
    let t = Instant::now();
    fresh.run = Some(start_run(&root, &target, &addr, &log1));
    let d1 = wait_ready(
        fresh.run.as_mut().expect("just set"),
        t,
        &addr,
        &log1,
        COLD_TIMEOUT,
    );
    let text1 = std::fs::read_to_string(&log1).unwrap_or_default();
    for l in text1.lines().filter(|l| {
        l.starts_with("install-deps:") || l.starts_with("build-web:") || l.contains("Finished")
    }) {
        say(format!("  run 1| {l}"));
    }
    say(format!(
        "run 1 ({}): page served and online after {}",
        if cold { "cold" } else { "warm" },
        secs(d1)
    ));
    let ds = stop(fresh.run.take().expect("running"));
    say(format!("run 1 stopped in {}", secs(ds)));

    // Run 2: nothing changed, so nothing is installed or rebuilt.
    let log2 = shared.join("run2.log");
    let t = Instant::now();
    fresh.run = Some(start_run(&root, &target, &addr, &log2));
    let d2 = wait_ready(
        fresh.run.as_mut().expect("just set"),
        t,
        &addr,
        &log2,
        WARM_TIMEOUT,
    );
    let ds = stop(fresh.run.take().expect("running"));
    say(format!(
        "run 2: page served and online after {} (stopped in {})",
        secs(d2),
        secs(ds)
    ));
    let text2 = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(
        !text2.contains("Compiling "),
        "the second run recompiled something:\n{}",
        text2
            .lines()
            .filter(|l| l.contains("Compiling "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        text2.contains("web/dist is up to date"),
        "the second run rebuilt the page:\n{}",
        log_tail(&log2, 40)
    );
    assert!(
        !text2.contains("install-deps: installing"),
        "the second run installed packages again:\n{}",
        log_tail(&log2, 40)
    );
    assert!(
        d2 < WARM_LIMIT,
        "the second run took {} to serve the page (limit {})",
        secs(d2),
        secs(WARM_LIMIT)
    );

    drop(fresh);
    say(format!(
        "summary: mmdebstrap {}, run 1 ({}) {}, run 2 {}, whole test {}",
        secs(t_debootstrap),
        if cold { "cold" } else { "warm target" },
        secs(d1),
        secs(d2),
        secs(total.elapsed())
    ));
}
