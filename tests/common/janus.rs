//! Debian's Janus WebRTC Server, started the way its package's unit does
//! (`janus` with a configuration folder), with the project's example
//! configuration (packaging/janus/) on a free HTTP port and a random
//! Streaming `admin_key`.

use super::{free_port, TempDir};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const JANUS: &str = "/usr/bin/janus";

/// Why Janus cannot run here, with the command that installs it; `None`
/// when it can. Tests pass this to `prerequisite("janus", ...)`.
pub fn missing() -> Option<String> {
    if Path::new(JANUS).exists() {
        return None;
    }
    Some(format!(
        "{JANUS} is missing: install it with `sudo apt-get install janus` (scripts/test.sh does)"
    ))
}

pub struct Janus {
    pub port: u16,
    pub admin_key: String,
    child: Option<Child>,
    dir: TempDir,
}

impl Janus {
    pub fn start() -> Janus {
        let dir = TempDir::new("janus");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/janus");
        // Janus reads its port from the configuration and does not say
        // which one it bound, so it gets a picked free port.
        let port = free_port();
        let admin_key = format!("test-{:032x}", rand::random::<u128>());
        for name in [
            "janus.jcfg",
            "janus.plugin.streaming.jcfg",
            "janus.transport.http.jcfg",
        ] {
            let text = std::fs::read_to_string(src.join(name)).expect("read the example");
            let text = text
                .replace("port = 8088", &format!("port = {port}"))
                .replace("change-me-to-a-long-random-string", &admin_key);
            std::fs::write(dir.0.join(name), text).expect("write the Janus configuration");
        }
        let mut j = Janus {
            port,
            admin_key,
            child: None,
            dir,
        };
        j.spawn();
        j
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.0.join("janus.log")).expect("janus.log");
        let folder = self.dir.0.to_string_lossy().into_owned();
        let child = Command::new(JANUS)
            .args(["--configs-folder", &folder, "--config"])
            .arg(self.dir.0.join("janus.jcfg"))
            .args(["--disable-colors", "--log-stdout"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start janus");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "janus did not start; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The HTTP API, as the device and viewers use it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/janus", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("janus.log")).unwrap_or_default()
    }

    /// Kills Janus (as a crash would): every mountpoint and viewer is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with the same configuration.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
    }
}
