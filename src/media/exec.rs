//! `exec:<command line>`: video from a child process's stdout, such as
//! `rpicam-vid` for a Raspberry Pi Camera Module, or ffmpeg.
//!
//! The child writes raw I420 or NV12 frames of the configured size, MJPEG,
//! or H.264 Annex B (passed through without re-encoding, see
//! `encode::passthrough`). It is run by `/bin/sh -c` in a process group of
//! its own, with `{width}`, `{height}`, `{fps}`, `{keyframe_interval}` and
//! `{bitrate}` in the command line replaced by the configured values.
//!
//! Threads: a supervisor (`campeer-exec`) starts the child (with the daemon
//! or for the first viewer), restarts it with backoff when it exits
//! ([`restart::RestartPolicy`]), and stops it (SIGTERM to the group, SIGKILL
//! after 2 s) on shutdown; a reader drains stdout all the time into a small
//! bounded queue, so a slow consumer makes frames drop, never the child
//! block; a logger copies stderr lines into the log (rate-limited).

pub mod framing;
pub mod restart;

use super::convert::{nv12_to_i420, yu12_to_i420, MjpegDecoder};
use super::{I420Frame, MediaError, SourceUnit, VideoFormat, VideoSource};
use crate::clock;
use crate::media::passthrough::Passthrough;
use framing::{Framer, Framing};
use rand::Rng;
use restart::{Action, RestartPolicy};
use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{debug, info, warn};

/// What the child writes on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecFormat {
    I420,
    Nv12,
    Mjpeg,
    H264,
}

impl ExecFormat {
    /// Parses the `video.exec_format` value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "i420" | "yuv420" => Some(ExecFormat::I420),
            "nv12" => Some(ExecFormat::Nv12),
            "mjpeg" => Some(ExecFormat::Mjpeg),
            "h264" => Some(ExecFormat::H264),
            _ => None,
        }
    }

    /// The name used in logs and `VideoFormat::pixel_format`.
    pub fn name(self) -> &'static str {
        match self {
            ExecFormat::I420 => "YU12",
            ExecFormat::Nv12 => "NV12",
            ExecFormat::Mjpeg => "MJPG",
            ExecFormat::H264 => "H264",
        }
    }
}

/// Everything an `exec:` source needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSettings {
    /// The command line, placeholders not yet replaced.
    pub command: String,
    pub format: ExecFormat,
    /// Start the child for the first viewer (and stop it after the last),
    /// rather than with the daemon.
    pub on_demand: bool,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub keyframe_interval: u32,
    pub bitrate: u32,
}

impl ExecSettings {
    /// The command line with the placeholders replaced.
    pub fn expanded_command(&self) -> String {
        self.command
            .replace("{width}", &self.width.to_string())
            .replace("{height}", &self.height.to_string())
            .replace("{fps}", &self.fps.to_string())
            .replace("{keyframe_interval}", &self.keyframe_interval.to_string())
            .replace("{bitrate}", &self.bitrate.to_string())
    }

    fn framing(&self) -> Framing {
        match self.format {
            ExecFormat::I420 | ExecFormat::Nv12 => {
                Framing::Fixed(self.width as usize * self.height as usize * 3 / 2)
            }
            ExecFormat::Mjpeg => Framing::Jpeg,
            ExecFormat::H264 => Framing::AnnexB,
        }
    }
}

/// Units (frames) waiting for the consumer: decoded formats keep the
/// newest two; H.264 keeps up to this many (dropping one would break the
/// picture until the next keyframe, so on overflow the queue is emptied
/// and refilled from the next keyframe).
const RAW_UNITS: usize = 2;
const H264_UNITS: usize = 64;
/// And never more than this many bytes.
const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// How long `next_unit` waits for a frame before reporting a problem.
const FRAME_WAIT: Duration = Duration::from_secs(2);
/// How long an idle on-demand source waits before saying it is idle.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// SIGTERM, then this long, then SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// stderr lines logged per second at most (the rest are counted).
const STDERR_LINES_PER_SEC: u32 = 20;
/// Longest stderr line logged (bytes; the rest is cut).
const STDERR_LINE_MAX: usize = 300;

#[derive(Default)]
struct State {
    units: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
    stop: bool,
    wanted: bool,
    /// A child is running.
    running: bool,
    /// Units dropped because the consumer was behind.
    dropped: u64,
    /// Children started so far.
    starts: u64,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running `exec:` source.
pub struct ExecSource {
    settings: ExecSettings,
    format: VideoFormat,
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
    seq: u32,
    mjpeg: MjpegDecoder,
    passthrough: Passthrough,
    label: String,
}

impl ExecSource {
    /// Starts the supervisor (and, unless on demand, the child).
    pub fn start(settings: ExecSettings) -> Result<Self, MediaError> {
        super::validate_size(settings.width, settings.height, settings.fps)?;
        if settings.command.trim().is_empty() {
            return Err(MediaError::BadSpec {
                spec: "exec:".into(),
                reason: "`exec:` needs a command line, e.g. `exec:rpicam-vid -t 0 -o -`",
            });
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let label = format!("exec:{}", first_word(&settings.command));
        let supervisor = {
            let (shared, settings, name) = (shared.clone(), settings.clone(), label.clone());
            std::thread::Builder::new()
                .name("campeer-exec".into())
                .spawn(move || supervise(settings, shared, name))
                .map_err(|e| MediaError::Exec {
                    source_name: label.clone(),
                    reason: format!("cannot start the supervisor thread: {e}"),
                })?
        };
        Ok(ExecSource {
            format: VideoFormat {
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
                pixel_format: settings.format.name().into(),
            },
            settings,
            shared,
            supervisor: Some(supervisor),
            seq: 0,
            mjpeg: MjpegDecoder::new(),
            passthrough: Passthrough::new(),
            label,
        })
    }

    /// How many times a child was started.
    pub fn starts(&self) -> u64 {
        self.shared.lock().starts
    }

    /// The profile-level-id the H.264 source sends, once an SPS was seen.
    pub fn profile_level_id(&self) -> Option<String> {
        self.passthrough.profile_level_id()
    }

    fn wait_unit(&mut self) -> Result<(Vec<u8>, u64), MediaError> {
        let st = self.shared.lock();
        let idle = self.settings.on_demand && !st.running && !st.wanted;
        let wait = if idle { IDLE_WAIT } else { FRAME_WAIT };
        let (mut st, _) = self
            .shared
            .cv
            .wait_timeout_while(st, wait, |s| s.units.is_empty() && !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        if let Some((unit, at)) = st.units.pop_front() {
            st.bytes -= unit.len();
            return Ok((unit, at));
        }
        let idle = self.settings.on_demand && !st.running && !st.wanted;
        if idle || st.stop {
            return Err(MediaError::Idle);
        }
        let reason = if st.running {
            format!("no frame within {} ms", wait.as_millis())
        } else {
            "the command is not running (it is restarted with backoff)".into()
        };
        Err(MediaError::Exec {
            source_name: self.label.clone(),
            reason,
        })
    }

    fn decode(&mut self, unit: Vec<u8>, capture_us: u64) -> Result<SourceUnit, MediaError> {
        let (w, h) = (self.settings.width, self.settings.height);
        let seq = self.seq;
        let mut frame = I420Frame {
            capture_us,
            seq,
            ..I420Frame::black(w, h)
        };
        let converted = match self.settings.format {
            ExecFormat::I420 => yu12_to_i420(&unit, 0, &mut frame),
            ExecFormat::Nv12 => nv12_to_i420(&unit, 0, &mut frame),
            ExecFormat::Mjpeg => self.mjpeg.decode_into(&unit, &mut frame),
            ExecFormat::H264 => unreachable!("H.264 is passed through"),
        };
        converted.map_err(|source| MediaError::BadFrame {
            path: self.label.clone().into(),
            fourcc: self.settings.format.name().into(),
            seq,
            source,
        })?;
        Ok(SourceUnit::Raw(frame))
    }
}

impl VideoSource for ExecSource {
    fn format(&self) -> &VideoFormat {
        &self.format
    }

    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        match self.next_unit()? {
            SourceUnit::Raw(f) => Ok(f),
            SourceUnit::Encoded(_) => Err(MediaError::Exec {
                source_name: self.label.clone(),
                reason: "H.264 from a command can only be passed through".into(),
            }),
        }
    }

    fn next_unit(&mut self) -> Result<SourceUnit, MediaError> {
        loop {
            let (unit, capture_us) = self.wait_unit()?;
            if self.settings.format != ExecFormat::H264 {
                let out = self.decode(unit, capture_us);
                self.seq = self.seq.wrapping_add(1);
                return out;
            }
            let duration = 1_000_000 / u64::from(self.settings.fps);
            if let Some(f) = self.passthrough.frame(unit, capture_us, self.seq, duration) {
                self.seq = self.seq.wrapping_add(1);
                return Ok(SourceUnit::Encoded(f));
            }
        }
    }

    fn set_wanted(&mut self, wanted: bool) {
        let mut st = self.shared.lock();
        if st.wanted != wanted {
            st.wanted = wanted;
            drop(st);
            self.shared.cv.notify_all();
        }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

impl Drop for ExecSource {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.supervisor.take() {
            if t.join().is_err() {
                warn!(source = %self.label, "exec supervisor thread panicked");
            }
        }
    }
}

fn first_word(cmd: &str) -> &str {
    cmd.split_whitespace().next().unwrap_or("")
}

/// A started child and the threads draining it.
struct Running {
    child: Child,
    reader: Option<JoinHandle<()>>,
    logger: Option<JoinHandle<()>>,
}

fn supervise(settings: ExecSettings, shared: Arc<Shared>, label: String) {
    let command = settings.expanded_command();
    let mut policy = RestartPolicy::new(settings.on_demand);
    let mut running: Option<Running> = None;
    loop {
        let (stop, wanted) = {
            let st = shared.lock();
            (st.stop, st.wanted)
        };
        if stop {
            break;
        }
        let now = clock::monotonic_us();
        // Reap a child that exited by itself.
        if let Some(r) = running.as_mut() {
            if let Ok(Some(status)) = r.child.try_wait() {
                let r = running.take().expect("checked above");
                finish(r, &shared);
                let d = policy.exited(false, now, rand::thread_rng().gen::<f64>());
                warn!(source = %label, %status, restart_ms = d / 1000, "command exited; restarting it");
                continue;
            }
        }
        let wait_us = match policy.decide(wanted, now) {
            Action::Start => {
                policy.started(now);
                shared.lock().starts += 1;
                match spawn(&command, &settings, &shared, &label) {
                    Ok(r) => {
                        info!(source = %label, pid = r.child.id(), on_demand = settings.on_demand, "command started: {command}");
                        running = Some(r);
                    }
                    Err(e) => {
                        let d = policy.exited(false, now, rand::thread_rng().gen::<f64>());
                        warn!(source = %label, restart_ms = d / 1000, "cannot start `{command}`: {e}");
                    }
                }
                continue;
            }
            Action::Stop => {
                if let Some(r) = running.take() {
                    info!(source = %label, "nobody watching: stopping the command");
                    stop_child(r, &shared, &label);
                }
                policy.exited(true, now, 0.0);
                continue;
            }
            Action::Wait(us) => us,
        };
        // Sleep until told (stop, a viewer) or for a while (reap, decide).
        let st = shared.lock();
        let _ = shared
            .cv
            .wait_timeout_while(
                st,
                Duration::from_micros(wait_us.clamp(1_000, 100_000)),
                |s| !s.stop && s.wanted == wanted,
            )
            .unwrap_or_else(|p| p.into_inner());
    }
    if let Some(r) = running.take() {
        stop_child(r, &shared, &label);
    }
    debug!(source = %label, "exec supervisor done");
}

fn spawn(
    command: &str,
    settings: &ExecSettings,
    shared: &Arc<Shared>,
    label: &str,
) -> std::io::Result<Running> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so stopping it reaches a whole pipeline.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // SIGKILL to the child if this daemon dies without stopping it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    shared.lock().running = true;
    let reader = {
        let (shared, framing, h264) = (
            shared.clone(),
            settings.framing(),
            settings.format == ExecFormat::H264,
        );
        std::thread::Builder::new()
            .name("campeer-exec-out".into())
            .spawn(move || read_stdout(stdout, Framer::new(framing), h264, shared))?
    };
    let logger = {
        let label = label.to_owned();
        std::thread::Builder::new()
            .name("campeer-exec-err".into())
            .spawn(move || log_stderr(stderr, label))?
    };
    Ok(Running {
        child,
        reader: Some(reader),
        logger: Some(logger),
    })
}

/// SIGTERM to the child's group, SIGKILL after the grace time; reaps it.
fn stop_child(mut r: Running, shared: &Shared, label: &str) {
    let pgid = r.child.id() as i32;
    // SAFETY: kill(2) on the process group this daemon created.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = clock::monotonic_us() + KILL_GRACE.as_micros() as u64;
    loop {
        match r.child.try_wait() {
            Ok(Some(status)) => {
                debug!(source = %label, %status, "command stopped");
                break;
            }
            Ok(None) if clock::monotonic_us() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                warn!(source = %label, "command ignored SIGTERM for 2 s: killing it");
                break;
            }
        }
    }
    // Whatever is left of the group (a pipeline's other members) goes too.
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = r.child.wait();
    finish(r, shared);
}

/// Joins the threads of an exited child and marks it gone.
fn finish(mut r: Running, shared: &Shared) {
    // Pipeline members that still hold stdout open would keep the reader
    // waiting: they are in the group, which is gone by now or killed here.
    // SAFETY: kill(2) on the process group this daemon created.
    unsafe { libc::kill(-(r.child.id() as i32), libc::SIGKILL) };
    for t in [r.reader.take(), r.logger.take()].into_iter().flatten() {
        let _ = t.join();
    }
    shared.lock().running = false;
    shared.cv.notify_all();
}

/// Drains stdout into the queue until end of file.
fn read_stdout(mut out: impl Read, mut framer: Framer, h264: bool, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    // After an H.264 overflow: drop units until the next keyframe.
    let mut skip_to_idr = false;
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let units = framer.push(&buf[..n]);
        if !units.is_empty() {
            let now = clock::monotonic_us();
            for unit in units {
                enqueue(&shared, unit, now, h264, &mut skip_to_idr);
            }
        }
    }
    if let Some(last) = framer.finish() {
        enqueue(&shared, last, clock::monotonic_us(), h264, &mut skip_to_idr);
    }
}

fn enqueue(shared: &Shared, unit: Vec<u8>, at: u64, h264: bool, skip_to_idr: &mut bool) {
    let mut st = shared.lock();
    if h264 {
        let idr = framing::nal_units(&unit).iter().any(|n| n[0] & 0x1F == 5);
        if *skip_to_idr && !idr {
            st.dropped += 1;
            return;
        }
        *skip_to_idr = false;
        if st.units.len() >= H264_UNITS || st.bytes + unit.len() > QUEUE_BYTES {
            st.dropped += st.units.len() as u64 + 1;
            st.units.clear();
            st.bytes = 0;
            *skip_to_idr = !idr;
            if !idr {
                return;
            }
        }
    } else {
        while st.units.len() >= RAW_UNITS
            || (!st.units.is_empty() && st.bytes + unit.len() > QUEUE_BYTES)
        {
            if let Some((old, _)) = st.units.pop_front() {
                st.bytes -= old.len();
                st.dropped += 1;
            }
        }
    }
    st.bytes += unit.len();
    st.units.push_back((unit, at));
    drop(st);
    shared.cv.notify_all();
}

/// Copies stderr lines into the log, at most 20 a second.
fn log_stderr(mut err: impl Read, label: String) {
    let mut buf = vec![0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let (mut second, mut this_second, mut suppressed) = (0u64, 0u32, 0u64);
    let mut emit = |line: &[u8]| {
        let text = String::from_utf8_lossy(&line[..line.len().min(STDERR_LINE_MAX)]);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let now_s = clock::monotonic_us() / 1_000_000;
        if now_s != second {
            if suppressed > 0 {
                info!(source = %label, suppressed, "command stderr: lines not logged (too many)");
            }
            (second, this_second, suppressed) = (now_s, 0, 0);
        }
        this_second += 1;
        if this_second <= STDERR_LINES_PER_SEC {
            info!(source = %label, "command stderr: {text}");
        } else {
            suppressed += 1;
        }
    };
    loop {
        let n = match err.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                emit(&line);
                line.clear();
            } else if line.len() < STDERR_LINE_MAX + 1 {
                line.push(b);
            }
        }
    }
    emit(&line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn settings(command: &str, format: ExecFormat) -> ExecSettings {
        ExecSettings {
            command: command.into(),
            format,
            on_demand: false,
            width: 16,
            height: 8,
            fps: 30,
            keyframe_interval: 30,
            bitrate: 500_000,
        }
    }

    #[test]
    fn placeholders_are_replaced() {
        let s = ExecSettings {
            command: "cam --width {width} --height {height} --framerate {fps} --intra {keyframe_interval} -b {bitrate}".into(),
            ..settings("", ExecFormat::H264)
        };
        assert_eq!(
            s.expanded_command(),
            "cam --width 16 --height 8 --framerate 30 --intra 30 -b 500000"
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!(ExecFormat::parse("i420"), Some(ExecFormat::I420));
        assert_eq!(ExecFormat::parse("nv12"), Some(ExecFormat::Nv12));
        assert_eq!(ExecFormat::parse("mjpeg"), Some(ExecFormat::Mjpeg));
        assert_eq!(ExecFormat::parse("h264"), Some(ExecFormat::H264));
        assert_eq!(ExecFormat::parse("H264"), None);
    }

    #[test]
    fn raw_frames_from_a_shell_command_are_read_and_the_child_is_restarted() {
        // 16x8 I420 is 192 bytes; the command writes two frames and exits.
        let cmd = "head -c 384 /dev/zero";
        let mut src = ExecSource::start(settings(cmd, ExecFormat::I420)).unwrap();
        for _ in 0..2 {
            let f = src.next_frame().expect("a frame");
            assert_eq!((f.width, f.height, f.data.len()), (16, 8, 192));
        }
        // It exited; after the 250..500 ms backoff it runs again.
        let t = Instant::now();
        let f = loop {
            match src.next_frame() {
                Ok(f) => break f,
                Err(e) if t.elapsed() < Duration::from_secs(5) => {
                    debug!("waiting: {e}")
                }
                Err(e) => panic!("no restart: {e}"),
            }
        };
        assert_eq!(f.seq, 2, "frame counter continues across restarts");
        assert!(src.starts() >= 2);
    }

    #[test]
    fn dropping_the_source_stops_a_child_that_ignores_sigterm() {
        let dir = std::env::temp_dir().join(format!("campeer-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let cmd = format!(
            "trap '' TERM; echo $$ > {}; while :; do head -c 192 /dev/zero; sleep 0.05; done",
            pidfile.display()
        );
        let mut src = ExecSource::start(settings(&cmd, ExecFormat::I420)).unwrap();
        src.next_frame().expect("a frame");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill with signal 0 only checks that the process exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "child runs");
        let t = Instant::now();
        drop(src);
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "child is gone");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn on_demand_runs_nothing_until_wanted() {
        let mut s = settings(
            "while :; do head -c 192 /dev/zero; sleep 0.02; done",
            ExecFormat::I420,
        );
        s.on_demand = true;
        let mut src = ExecSource::start(s).unwrap();
        assert!(matches!(src.next_frame(), Err(MediaError::Idle)));
        assert_eq!(src.starts(), 0);
        src.set_wanted(true);
        src.next_frame().expect("a frame once wanted");
        assert_eq!(src.starts(), 1);
    }
}
