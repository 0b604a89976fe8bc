//! WHEP (RFC 9725 style): `POST /whep` with an SDP offer opens a `view`
//! session and answers `201 Created` with the SDP answer and the resource's
//! `Location`; `PATCH` there carries trickled candidates; `DELETE` ends it.
//! docs/whep.md says how clients use it.
//!
//! A WHEP session is an ordinary session of the table (the same limits,
//! encode-once media, revocation, timeouts); only its signaling differs.
//! Its sid is `whep:<resource id>`, which no MQTT topic can name. The
//! table's messages for such sids come to [`Whep`] through
//! [`RoutingOutbox`] instead of MQTT; the HTTP side (`http`) sends
//! [`Command`]s to the task that owns the table (the daemon's loop), which
//! applies them with [`apply`]. What happens when is decided by the pure
//! [`resources::Resources`].

pub mod http;
pub mod resources;
pub mod sdpfrag;

use crate::rtc::session::Outbox;
use crate::rtc::table::SessionTable;
use crate::signaling::messages::{CandidateInit, DeviceMessage, ErrorCode};
use resources::{id_of, sid_of, OpenRefusal, Outcome, ResourceRefusal, Resources};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

/// What the HTTP side asks of the session table.
#[derive(Debug)]
pub enum Command {
    Open {
        sid: String,
        sdp: String,
        key_id: Option<String>,
    },
    Candidates {
        sid: String,
        candidates: Vec<Option<CandidateInit>>,
    },
    Close {
        sid: String,
    },
}

/// Applies `cmd` to the table (in the task that owns it).
pub fn apply(table: &mut SessionTable, cmd: Command, now_us: u64) {
    match cmd {
        Command::Open { sid, sdp, key_id } => table.open_direct(&sid, sdp, key_id, now_us),
        Command::Candidates { sid, candidates } => {
            table.candidates_direct(&sid, candidates, now_us)
        }
        Command::Close { sid } => table.close_direct(&sid),
    }
}

/// Most commands queued for the table; more is answered 503.
const COMMAND_QUEUE: usize = 64;
/// How often time-driven outcomes are checked.
const TICK: Duration = Duration::from_millis(100);

/// The WHEP resources and the `POST`s waiting for their answers.
pub struct Whep {
    resources: Mutex<Resources>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    commands: mpsc::Sender<Command>,
}

/// Why a WHEP request failed.
#[derive(Debug, PartialEq, Eq)]
pub enum WhepError {
    /// Refused by the session table or the session.
    Refused(ErrorCode, String),
    /// Too many resources or queued commands.
    Busy(String),
    Resource(ResourceRefusal),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic mid-update leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Whep {
    /// At most `max_resources` at once; commands come out of the receiver.
    pub fn new(max_resources: usize) -> (Arc<Whep>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let w = Arc::new(Whep {
            resources: Mutex::new(Resources::new(max_resources)),
            waiters: Mutex::new(HashMap::new()),
            commands: tx,
        });
        (w, rx)
    }

    /// Checks timed outcomes until the last other reference is gone.
    pub fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(w) = weak.upgrade() else { return };
                let due = lock(&w.resources).due(crate::clock::monotonic_us());
                for (id, outcome) in due {
                    w.deliver(&id, outcome);
                }
            }
        })
    }

    fn deliver(&self, id: &str, outcome: Outcome) {
        if let Some(tx) = lock(&self.waiters).remove(id) {
            let _ = tx.send(outcome);
        }
    }

    fn command(&self, cmd: Command) -> Result<(), WhepError> {
        self.commands
            .try_send(cmd)
            .map_err(|_| WhepError::Busy("the device is busy; try again shortly".into()))
    }

    /// Opens a session for `sdp`; the resource id and the answer.
    pub async fn offer(
        &self,
        sdp: String,
        key_id: Option<String>,
    ) -> Result<(String, String), WhepError> {
        let id = random_id();
        let sid = sid_of(&id);
        let now = crate::clock::monotonic_us();
        lock(&self.resources)
            .open(&id, key_id.clone(), offer_ufrag(&sdp), now)
            .map_err(|OpenRefusal::Full(n)| {
                WhepError::Busy(format!("{n} WHEP sessions are starting or open"))
            })?;
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id.clone(), tx);
        if let Err(e) = self.command(Command::Open { sid, sdp, key_id }) {
            lock(&self.resources).forget(&id);
            lock(&self.waiters).remove(&id);
            return Err(e);
        }
        // The resource's own timeout answers first; this is a backstop.
        let wait = resources::ANSWER_TIMEOUT + resources::GATHER_WAIT + Duration::from_secs(1);
        let outcome = tokio::time::timeout(wait, rx).await;
        match outcome {
            Ok(Ok(Outcome::Answer(sdp))) => Ok((id, sdp)),
            Ok(Ok(Outcome::Refused(code, message))) => Err(WhepError::Refused(code, message)),
            _ => {
                lock(&self.waiters).remove(&id);
                if lock(&self.resources).forget(&id) {
                    let _ = self.command(Command::Close { sid: sid_of(&id) });
                }
                Err(WhepError::Refused(
                    ErrorCode::Internal,
                    "no answer in time".into(),
                ))
            }
        }
    }

    /// Trickled candidates for resource `id`.
    pub fn patch(
        &self,
        id: &str,
        key_id: Option<&str>,
        candidates: Vec<Option<CandidateInit>>,
    ) -> Result<(), WhepError> {
        if candidates.is_empty() {
            return Ok(());
        }
        self.command(Command::Candidates {
            sid: sid_of(id),
            candidates,
        })?;
        debug!(resource = %id, key = key_id.unwrap_or("-"), "WHEP candidates");
        Ok(())
    }

    /// Whether a `PATCH` of `len` bytes with ICE ufrag `ufrag` may go to
    /// resource `id` now.
    pub fn admit_patch(
        &self,
        id: &str,
        key_id: Option<&str>,
        len: usize,
        ufrag: Option<&str>,
    ) -> Result<(), WhepError> {
        lock(&self.resources)
            .admit_patch(id, key_id, len, ufrag, crate::clock::monotonic_us())
            .map_err(WhepError::Resource)
    }

    /// Ends resource `id` (`DELETE`).
    pub fn delete(&self, id: &str, key_id: Option<&str>) -> Result<(), WhepError> {
        lock(&self.resources)
            .delete(id, key_id)
            .map_err(WhepError::Resource)?;
        lock(&self.waiters).remove(id);
        info!(resource = %id, "WHEP session deleted by its client");
        // Queue full: the session still ends by its own timeouts.
        let _ = self.command(Command::Close { sid: sid_of(id) });
        Ok(())
    }

    /// The session of `sid` ended (from the table's `Ended` event).
    pub fn ended(&self, sid: &str) {
        if let Some(id) = id_of(sid) {
            if lock(&self.resources).forget(id) {
                debug!(resource = %id, "WHEP resource freed: its session ended");
            }
            lock(&self.waiters).remove(id);
        }
    }

    /// Open resources.
    pub fn len(&self) -> usize {
        lock(&self.resources).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn on_device(&self, sid: &str, msg: DeviceMessage) {
        let Some(id) = id_of(sid) else { return };
        let outcome = lock(&self.resources).on_device(id, msg, crate::clock::monotonic_us());
        if let Some(o) = outcome {
            self.deliver(id, o);
        }
    }
}

/// The offer's first `a=ice-ufrag`.
fn offer_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}

/// 128 random bits, hex: the resource id (unguessable; it is in the URL).
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` looks like a resource id (before any lookup).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Sends WHEP sessions' messages to [`Whep`] and the rest to MQTT.
pub struct RoutingOutbox {
    pub mqtt: Arc<dyn Outbox>,
    pub whep: Arc<Whep>,
}

impl Outbox for RoutingOutbox {
    fn send(&self, sid: &str, msg: DeviceMessage, mac: Option<String>) {
        if id_of(sid).is_some() {
            self.whep.on_device(sid, msg);
        } else {
            self.mqtt.send(sid, msg, mac);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_recognised() {
        let a = random_id();
        let b = random_id();
        assert_ne!(a, b);
        assert!(valid_id(&a));
        assert!(!valid_id("../etc"));
        assert!(!valid_id(&a.to_uppercase()));
        assert!(!valid_id(&a[1..]));
    }
}
