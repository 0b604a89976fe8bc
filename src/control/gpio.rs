//! The named GPIO controls: what viewers read, drive and are notified of.
//!
//! Hardware sits behind two narrow object-safe traits, [`OutputLine`] and
//! [`InputLine`], implemented for every embedded-hal 1.0
//! `StatefulOutputPin` / `InputPin` (linux-embedded-hal's cdev pins in
//! production, see `control::cdev`; embedded-hal-mock pins and [`SimPin`]
//! in tests). Those traits speak electrical levels; [`GpioBank`] applies
//! `active_low`, so every value above it is logical (true = active).
//!
//! Invariants:
//! - Every output change, whoever caused it (a viewer, a pulse ending,
//!   shutdown), and every debounced input edge allowed by `edge` is sent
//!   once on the bank's broadcast channel, in the order it happened (sent
//!   under the bank's lock).
//! - At start-up every output is driven to its `safe` value first, then to
//!   `initial` when that differs.
//! - At most one pulse per output is pending. A second pulse replaces the
//!   first and keeps the value from before the first; `set`/`toggle` cancel
//!   a pending pulse (the latest explicit command wins).
//! - The fail-safe rules (`max_on_ms`, `revert_on_end`) and pulse timing
//!   are decided by each output's [`OutputGuard`] (pure, `control::safety`);
//!   the bank drives what it decides and keeps at most one timer per output,
//!   a tokio task owned by the bank, set to the guard's next deadline, so a
//!   pulse's restore or an auto-off outlives the session that caused it.
//!   Every state-changing call names its owner (a session id, or `None` for
//!   the device itself); [`GpioBank::session_ended`] reverts what an ended
//!   session owned.
//! - After [`GpioBank::safe_all`] every output is at its `safe` value, no
//!   timer is pending, and state-changing calls fail with
//!   [`GpioError::ShutDown`].
//!
//! Inputs are sampled every [`POLL_INTERVAL`] by one task
//! ([`GpioBank::spawn_input_watcher`]) and debounced by [`Debouncer`].
//! Alternatives considered: a blocking thread per line on gpio-cdev's
//! line-event API. It would catch shorter pulses and kernel timestamps, but
//! takes the line as an event handle (not an embedded-hal `InputPin`), needs
//! a poll(2) loop with timeouts for debounce and shutdown, and cannot be
//! tested with mock pins. Polling 100 times a second costs a few
//! microsecond-long ioctls per input and is well inside the default 20 ms
//! debounce, which rejects anything shorter anyway.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, StatefulOutputPin};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::config::{validate_gpio, ConfigError, Direction, Edge, GpioConfig};
use super::safety::{OutputGuard, Reason, Rules};

/// How often inputs are sampled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Shortest and longest `gpio.pulse`, milliseconds.
pub const PULSE_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

/// Notifications buffered per subscriber before it starts losing them.
pub const CHANGE_CAPACITY: usize = 256;

/// A pin driver's error, as text (embedded-hal errors only promise `Debug`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HwError(pub String);

impl HwError {
    fn from_pin<E: embedded_hal::digital::Error>(err: &E) -> Self {
        HwError(format!("{err:?} ({:?})", err.kind()))
    }
}

/// An output line, object-safe. Levels are electrical (true = high).
pub trait OutputLine: Send {
    /// Drives the line high (`true`) or low.
    fn drive(&mut self, high: bool) -> Result<(), HwError>;
    /// Whether the line is driven high.
    fn driven(&mut self) -> Result<bool, HwError>;
}

impl<T> OutputLine for T
where
    T: StatefulOutputPin + Send,
{
    fn drive(&mut self, high: bool) -> Result<(), HwError> {
        let result = if high {
            OutputPin::set_high(self)
        } else {
            OutputPin::set_low(self)
        };
        result.map_err(|e| HwError::from_pin(&e))
    }

    fn driven(&mut self) -> Result<bool, HwError> {
        StatefulOutputPin::is_set_high(self).map_err(|e| HwError::from_pin(&e))
    }
}

/// An input line, object-safe. Levels are electrical (true = high).
pub trait InputLine: Send {
    /// Whether the line reads high.
    fn level(&mut self) -> Result<bool, HwError>;
}

impl<T> InputLine for T
where
    T: InputPin + Send,
{
    fn level(&mut self) -> Result<bool, HwError> {
        InputPin::is_high(self).map_err(|e| HwError::from_pin(&e))
    }
}

/// A hardware line, opened for its direction.
pub enum Pin {
    Output(Box<dyn OutputLine>),
    Input(Box<dyn InputLine>),
}

impl Pin {
    fn direction(&self) -> Direction {
        match self {
            Pin::Output(_) => Direction::Output,
            Pin::Input(_) => Direction::Input,
        }
    }
}

/// A pin with no hardware: one shared level, usable as output and input
/// (clones see the same level, so a test can drive what the bank reads).
#[derive(Clone, Debug, Default)]
pub struct SimPin {
    level: Arc<AtomicBool>,
}

impl SimPin {
    /// A pin at the given electrical level.
    pub fn new(high: bool) -> Self {
        SimPin {
            level: Arc::new(AtomicBool::new(high)),
        }
    }

    /// The electrical level.
    pub fn is_high_now(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }

    /// Sets the electrical level (as the outside world would for an input).
    pub fn force(&self, high: bool) {
        self.level.store(high, Ordering::SeqCst);
    }
}

impl ErrorType for SimPin {
    type Error = Infallible;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.force(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.force(true);
        Ok(())
    }
}

impl StatefulOutputPin for SimPin {
    fn is_set_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.is_high_now())
    }

    fn is_set_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.is_high_now())
    }
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.is_high_now())
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.is_high_now())
    }
}

/// One `gpio.changed` notification's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpioChange {
    /// The control's configured name.
    pub name: String,
    /// The new logical value.
    pub value: bool,
    /// When it changed (or, for inputs, was confirmed), CLOCK_MONOTONIC µs.
    pub ts_us: u64,
}

/// A control as listed in presence: `{"name","direction"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControlInfo {
    pub name: String,
    pub direction: Direction,
}

/// A control and its value, as in `gpio.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControlValue {
    pub name: String,
    pub direction: Direction,
    pub value: bool,
}

/// Why a GPIO operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpioError {
    #[error("no control named {name:?}")]
    UnknownControl { name: String },
    #[error("control {name:?} is an input")]
    NotAnOutput { name: String },
    #[error("pulse of {ms} ms is outside 1..=60000")]
    BadPulse { ms: u64 },
    #[error("control {name:?}: hardware error: {source}")]
    Hardware { name: String, source: HwError },
    #[error("outputs are in their safe state for shutdown")]
    ShutDown,
    #[error("the session has ended")]
    SessionEnded,
    #[error("no tokio runtime to run timers on")]
    NoRuntime,
    #[error("gpio configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("control {name:?} is configured as {configured} but opened as {opened}")]
    DirectionMismatch {
        name: String,
        configured: &'static str,
        opened: &'static str,
    },
}

/// Turns raw samples into stable levels: a new level counts once every
/// sample for `debounce` has agreed. Pure: time is an argument.
#[derive(Clone, Debug)]
pub struct Debouncer {
    debounce_us: u64,
    stable: Option<bool>,
    candidate: Option<(bool, u64)>,
}

impl Debouncer {
    /// A debouncer that has seen nothing yet.
    pub fn new(debounce: Duration) -> Self {
        Debouncer {
            debounce_us: u64::try_from(debounce.as_micros()).unwrap_or(u64::MAX),
            stable: None,
            candidate: None,
        }
    }

    /// The stable level, once there is one.
    pub fn stable(&self) -> Option<bool> {
        self.stable
    }

    /// Feeds one sample taken at `now_us`; returns the new stable level when
    /// it changes. The first sample sets the level without reporting it.
    pub fn sample(&mut self, level: bool, now_us: u64) -> Option<bool> {
        let Some(stable) = self.stable else {
            self.stable = Some(level);
            return None;
        };
        if level == stable {
            self.candidate = None;
            return None;
        }
        let since = match self.candidate {
            Some((candidate, since)) if candidate == level => since,
            _ => {
                self.candidate = Some((level, now_us));
                now_us
            }
        };
        if now_us.saturating_sub(since) >= self.debounce_us {
            self.stable = Some(level);
            self.candidate = None;
            Some(level)
        } else {
            None
        }
    }
}

/// What a pulse did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PulseOutcome {
    /// The value driven now.
    pub value: bool,
    /// How long the pulse lasts, ms: the asked `ms`, or less when the
    /// output's `max_on_ms` cut it.
    pub ms: u64,
    /// Whether `max_on_ms` cut it.
    pub capped: bool,
}

struct Control {
    name: String,
    direction: Direction,
    active_low: bool,
    safe: bool,
    initial: bool,
    edge: Edge,
}

/// The one pending timer of an output: fires at the guard's deadline.
struct Timer {
    id: u64,
    at_us: u64,
    task: JoinHandle<()>,
}

enum LineState {
    Output {
        pin: Box<dyn OutputLine>,
        guard: OutputGuard,
        timer: Option<Timer>,
    },
    Input {
        pin: Box<dyn InputLine>,
        debouncer: Debouncer,
        failing: bool,
    },
}

/// Ended sessions remembered, so a call racing its session's end cannot
/// take an output over after [`GpioBank::session_ended`].
const ENDED_SESSIONS: usize = 64;

struct State {
    closed: bool,
    next_timer: u64,
    lines: Vec<LineState>,
    ended: std::collections::VecDeque<u64>,
}

impl State {
    fn refuse_ended(&self, owner: Option<u64>) -> Result<(), GpioError> {
        match owner {
            Some(id) if self.ended.contains(&id) => Err(GpioError::SessionEnded),
            _ => Ok(()),
        }
    }
}

struct Inner {
    controls: Vec<Control>,
    by_name: HashMap<String, usize>,
    state: Mutex<State>,
    changes: broadcast::Sender<GpioChange>,
    /// The guards' clock: µs since this instant (tokio's clock, so tests
    /// can run it paused).
    epoch: tokio::time::Instant,
    /// Itself, for the timer tasks (which must not keep the bank alive).
    me: Weak<Inner>,
}

/// The configured controls. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct GpioBank {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GpioBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioBank")
            .field("controls", &self.controls())
            .finish()
    }
}

impl GpioBank {
    /// A bank with no controls.
    pub fn empty() -> Self {
        match GpioBank::new(Vec::new()) {
            Ok(bank) => bank,
            // An empty list has nothing to validate or drive.
            Err(_) => unreachable!("an empty bank cannot fail"),
        }
    }

    /// Takes the controls in configuration order and drives every output to
    /// its `safe` value, then each whose `initial` differs to `initial`
    /// (which needs a tokio runtime when `max_on_ms` then applies).
    pub fn new(controls: Vec<(GpioConfig, Pin)>) -> Result<Self, GpioError> {
        let configs: Vec<GpioConfig> = controls.iter().map(|(c, _)| c.clone()).collect();
        validate_gpio(&configs)?;
        let mut infos = Vec::with_capacity(controls.len());
        let mut lines = Vec::with_capacity(controls.len());
        let mut by_name = HashMap::with_capacity(controls.len());
        for (index, (config, pin)) in controls.into_iter().enumerate() {
            if pin.direction() != config.direction {
                return Err(GpioError::DirectionMismatch {
                    name: config.name,
                    configured: config.direction.as_str(),
                    opened: pin.direction().as_str(),
                });
            }
            let line = match pin {
                Pin::Output(mut pin) => {
                    pin.drive(config.safe != config.active_low)
                        .map_err(|source| GpioError::Hardware {
                            name: config.name.clone(),
                            source,
                        })?;
                    let guard = OutputGuard::new(Rules {
                        safe: config.safe,
                        max_on_us: config.max_on_ms.map(|ms| ms.saturating_mul(1000)),
                        revert_on_end: config.revert_on_end,
                    });
                    LineState::Output {
                        pin,
                        guard,
                        timer: None,
                    }
                }
                Pin::Input(pin) => LineState::Input {
                    pin,
                    debouncer: Debouncer::new(Duration::from_millis(config.debounce_ms)),
                    failing: false,
                },
            };
            by_name.insert(config.name.clone(), index);
            lines.push(line);
            infos.push(Control {
                name: config.name,
                direction: config.direction,
                active_low: config.active_low,
                safe: config.safe,
                initial: config.initial,
                edge: config.edge,
            });
        }
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let bank = GpioBank {
            inner: Arc::new_cyclic(|me| Inner {
                controls: infos,
                by_name,
                state: Mutex::new(State {
                    closed: false,
                    next_timer: 0,
                    lines,
                    ended: std::collections::VecDeque::with_capacity(ENDED_SESSIONS),
                }),
                changes,
                epoch: tokio::time::Instant::now(),
                me: me.clone(),
            }),
        };
        for (index, control) in bank.inner.controls.iter().enumerate() {
            if control.direction == Direction::Output && control.initial != control.safe {
                bank.inner.start_initial(index, control.initial)?;
            }
        }
        Ok(bank)
    }

    /// A receiver of every change from now on. A slow receiver gets
    /// `RecvError::Lagged` after [`CHANGE_CAPACITY`] and then resumes.
    pub fn subscribe(&self) -> broadcast::Receiver<GpioChange> {
        self.inner.changes.subscribe()
    }

    /// The controls, in configuration order, for presence.
    pub fn controls(&self) -> Vec<ControlInfo> {
        self.inner
            .controls
            .iter()
            .map(|c| ControlInfo {
                name: c.name.clone(),
                direction: c.direction,
            })
            .collect()
    }

    /// The direction of `name`, if it exists.
    pub fn direction(&self, name: &str) -> Option<Direction> {
        let index = self.inner.by_name.get(name)?;
        self.inner.controls.get(*index).map(|c| c.direction)
    }

    /// Every control with its current logical value.
    pub fn list(&self) -> Result<Vec<ControlValue>, GpioError> {
        let mut state = self.inner.lock();
        let mut out = Vec::with_capacity(self.inner.controls.len());
        for (index, control) in self.inner.controls.iter().enumerate() {
            let value = self.inner.read(&mut state, index)?;
            out.push(ControlValue {
                name: control.name.clone(),
                direction: control.direction,
                value,
            });
        }
        Ok(out)
    }

    /// The logical value of `name`: an input's live level (not debounced),
    /// or the value an output is driven to.
    pub fn get(&self, name: &str) -> Result<bool, GpioError> {
        let index = self.inner.index(name)?;
        let mut state = self.inner.lock();
        self.inner.read(&mut state, index)
    }

    /// Drives output `name` to logical `value` for the device itself (no
    /// session); see [`GpioBank::set_by`].
    pub fn set(&self, name: &str, value: bool) -> Result<bool, GpioError> {
        self.set_by(None, name, value)
    }

    /// Drives output `name` to logical `value` for `owner` (a session id);
    /// cancels a pending pulse. Returns the new value. A non-safe value on
    /// an output with `max_on_ms` needs a tokio runtime for its timer.
    pub fn set_by(&self, owner: Option<u64>, name: &str, value: bool) -> Result<bool, GpioError> {
        let index = self.inner.output_index(name)?;
        self.inner.command(owner, index, Some(value))
    }

    /// Inverts output `name` for the device itself; see
    /// [`GpioBank::toggle_by`].
    pub fn toggle(&self, name: &str) -> Result<bool, GpioError> {
        self.toggle_by(None, name)
    }

    /// Inverts output `name` for `owner`; cancels a pending pulse. Returns
    /// the new value.
    pub fn toggle_by(&self, owner: Option<u64>, name: &str) -> Result<bool, GpioError> {
        let index = self.inner.output_index(name)?;
        self.inner.command(owner, index, None)
    }

    /// A pulse for the device itself; returns the value driven now. See
    /// [`GpioBank::pulse_by`].
    pub fn pulse(&self, name: &str, ms: u64) -> Result<bool, GpioError> {
        self.pulse_by(None, name, ms).map(|p| p.value)
    }

    /// Drives output `name` to the inverse of its value for `ms`, then back,
    /// for `owner`. A pulse while one is pending restarts the timer and
    /// keeps the value from before the first. A pulse to the non-safe value
    /// lasts at most what is left of the output's `max_on_ms` (the outcome
    /// says so, and it is logged). Must be called within a tokio runtime.
    pub fn pulse_by(
        &self,
        owner: Option<u64>,
        name: &str,
        ms: u64,
    ) -> Result<PulseOutcome, GpioError> {
        let index = self.inner.output_index(name)?;
        if !PULSE_MS.contains(&ms) {
            return Err(GpioError::BadPulse { ms });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| GpioError::NoRuntime)?;
        let inner = &self.inner;
        let mut state = inner.lock_open()?;
        state.refuse_ended(owner)?;
        let pending = inner.guard(&mut state, index)?.pulse_pending();
        let prior = if pending {
            inner.driven(&mut state, index).ok()
        } else {
            Some(inner.driven(&mut state, index)?)
        };
        let now_us = inner.now_us();
        let guard = inner.guard(&mut state, index)?;
        let current = prior.unwrap_or(guard.value());
        let plan = guard.pulse(ms, current, owner, now_us);
        let driven = inner.drive(&mut state, index, plan.value, prior);
        if driven.is_err() {
            // The line is in an unknown state: no restore should fight
            // whatever comes next (a max_on_ms auto-off still applies).
            inner.guard(&mut state, index)?.cancel_pulse();
        }
        inner.reschedule(&mut state, index, Some(&runtime));
        driven?;
        if let Some(capped) = plan.capped_ms {
            tracing::warn!(control = %inner.name(index), asked_ms = ms, capped_ms = capped, "pulse cut to max_on_ms");
        }
        Ok(PulseOutcome {
            value: plan.value,
            ms: plan.capped_ms.unwrap_or(ms),
            capped: plan.capped_ms.is_some(),
        })
    }

    /// Session `session` ended: every output with `revert_on_end` that it
    /// drove last goes back to its `safe` value (a pending pulse of it is
    /// dropped). Errors are logged; nothing is returned to a session that
    /// is gone.
    pub fn session_ended(&self, session: u64) {
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.closed {
            return;
        }
        if state.ended.len() >= ENDED_SESSIONS {
            state.ended.pop_front();
        }
        state.ended.push_back(session);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let now_us = inner.now_us();
        for index in 0..inner.controls.len() {
            let Ok(guard) = inner.guard(&mut state, index) else {
                continue;
            };
            let action = guard.session_ended(session, now_us);
            if let Some(drive) = action {
                inner.apply(&mut state, index, drive.value, drive.reason);
            }
            inner.reschedule(&mut state, index, runtime.as_ref());
        }
    }

    /// Shutdown: cancels every timer, drives every output to its `safe`
    /// value, and refuses further changes. Tries every output; returns the
    /// first error.
    pub fn safe_all(&self) -> Result<(), GpioError> {
        let mut state = self.inner.lock();
        state.closed = true;
        let mut first_error = None;
        for (index, control) in self.inner.controls.iter().enumerate() {
            if control.direction != Direction::Output {
                continue;
            }
            self.inner.stop_timer(&mut state, index);
            if let Ok(guard) = self.inner.guard(&mut state, index) {
                guard.reset_safe();
            }
            let prior = self.inner.driven(&mut state, index).ok();
            if let Err(err) = self.inner.drive(&mut state, index, control.safe, prior) {
                tracing::error!(control = %control.name, error = %err, "cannot drive output to its safe value");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Samples every input whose `edge` is not `none` once, at `now_us` (any
    /// monotonic microsecond clock), and notifies debounced edges. Returns
    /// false once there is nothing left to watch (no such input, or shut
    /// down).
    pub fn sample_inputs(&self, now_us: u64) -> bool {
        self.inner.sample_inputs(now_us)
    }

    /// Starts the task that samples inputs every [`POLL_INTERVAL`]. It ends
    /// when the bank is dropped or shut down, or at once if no input is
    /// watched.
    pub fn spawn_input_watcher(&self) -> Result<JoinHandle<()>, GpioError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| GpioError::NoRuntime)?;
        let weak = Arc::downgrade(&self.inner);
        Ok(runtime.spawn(async move {
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let now_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                if !inner.sample_inputs(now_us) {
                    break;
                }
            }
        }))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves pins in a consistent state
        // (each call is one hardware operation), so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_open(&self) -> Result<MutexGuard<'_, State>, GpioError> {
        let state = self.lock();
        if state.closed {
            return Err(GpioError::ShutDown);
        }
        Ok(state)
    }

    fn index(&self, name: &str) -> Result<usize, GpioError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| GpioError::UnknownControl { name: name.into() })
    }

    fn output_index(&self, name: &str) -> Result<usize, GpioError> {
        let index = self.index(name)?;
        match self.controls.get(index) {
            Some(c) if c.direction == Direction::Output => Ok(index),
            _ => Err(GpioError::NotAnOutput { name: name.into() }),
        }
    }

    fn hw(&self, index: usize, source: HwError) -> GpioError {
        GpioError::Hardware {
            name: self.name(index).to_owned(),
            source,
        }
    }

    fn name(&self, index: usize) -> &str {
        self.controls.get(index).map_or("?", |c| c.name.as_str())
    }

    fn active_low(&self, index: usize) -> bool {
        self.controls.get(index).is_some_and(|c| c.active_low)
    }

    /// Logical value of any control.
    fn read(&self, state: &mut State, index: usize) -> Result<bool, GpioError> {
        let active_low = self.active_low(index);
        let level = match state.lines.get_mut(index) {
            Some(LineState::Output { pin, .. }) => pin.driven(),
            Some(LineState::Input { pin, .. }) => pin.level(),
            None => return Err(self.hw(index, HwError("no such line".into()))),
        };
        level
            .map(|high| high != active_low)
            .map_err(|e| self.hw(index, e))
    }

    /// Logical value an output is driven to.
    fn driven(&self, state: &mut State, index: usize) -> Result<bool, GpioError> {
        let active_low = self.active_low(index);
        match state.lines.get_mut(index) {
            Some(LineState::Output { pin, .. }) => pin
                .driven()
                .map(|high| high != active_low)
                .map_err(|e| self.hw(index, e)),
            _ => Err(GpioError::NotAnOutput {
                name: self.name(index).to_owned(),
            }),
        }
    }

    /// Drives an output to logical `value`; notifies unless `prior` shows it
    /// was already there.
    fn drive(
        &self,
        state: &mut State,
        index: usize,
        value: bool,
        prior: Option<bool>,
    ) -> Result<(), GpioError> {
        let active_low = self.active_low(index);
        match state.lines.get_mut(index) {
            Some(LineState::Output { pin, .. }) => pin
                .drive(value != active_low)
                .map_err(|e| self.hw(index, e))?,
            _ => {
                return Err(GpioError::NotAnOutput {
                    name: self.name(index).to_owned(),
                })
            }
        }
        if prior != Some(value) {
            self.notify(index, value);
        }
        Ok(())
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn guard<'a>(
        &self,
        state: &'a mut State,
        index: usize,
    ) -> Result<&'a mut OutputGuard, GpioError> {
        match state.lines.get_mut(index) {
            Some(LineState::Output { guard, .. }) => Ok(guard),
            _ => Err(GpioError::NotAnOutput {
                name: self.name(index).to_owned(),
            }),
        }
    }

    /// A set (`Some(value)`) or toggle (`None`) of output `index` for
    /// `owner`. Returns the value driven.
    fn command(
        &self,
        owner: Option<u64>,
        index: usize,
        value: Option<bool>,
    ) -> Result<bool, GpioError> {
        let mut state = self.lock_open()?;
        state.refuse_ended(owner)?;
        let (value, prior) = match value {
            Some(value) => (value, self.driven(&mut state, index).ok()),
            None => {
                let prior = self.driven(&mut state, index)?;
                (!prior, Some(prior))
            }
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        let guard = self.guard(&mut state, index)?;
        if guard.needs_timer(value) && runtime.is_none() {
            // Never leave an output unsafe with nothing to bring it back.
            return Err(GpioError::NoRuntime);
        }
        guard.command(value, owner, self.now_us());
        let driven = self.drive(&mut state, index, value, prior);
        self.reschedule(&mut state, index, runtime.as_ref());
        driven.map(|()| value)
    }

    /// Start-up: output `index`, at its safe value, goes to `initial`.
    fn start_initial(&self, index: usize, initial: bool) -> Result<(), GpioError> {
        let mut state = self.lock();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let guard = self.guard(&mut state, index)?;
        if guard.needs_timer(initial) && runtime.is_none() {
            return Err(GpioError::NoRuntime);
        }
        guard.command(initial, None, self.now_us());
        // Nobody is subscribed yet: no notification.
        self.drive(&mut state, index, initial, Some(initial))?;
        self.reschedule(&mut state, index, runtime.as_ref());
        Ok(())
    }

    /// Drives what a guard decided on its own (a timer, a session's end),
    /// logging instead of returning errors.
    fn apply(&self, state: &mut State, index: usize, value: bool, reason: Reason) {
        let prior = self.driven(state, index).ok();
        match self.drive(state, index, value, prior) {
            Ok(()) => match reason {
                Reason::PulseEnd => {}
                Reason::MaxOn => {
                    tracing::info!(control = %self.name(index), value, "max_on_ms ran out: output back to its safe value")
                }
                Reason::SessionEnded => {
                    tracing::info!(control = %self.name(index), value, "its session ended: output back to its safe value")
                }
            },
            Err(err) => {
                tracing::warn!(control = %self.name(index), error = %err, ?reason, "cannot drive output")
            }
        }
    }

    fn stop_timer(&self, state: &mut State, index: usize) {
        if let Some(LineState::Output { timer, .. }) = state.lines.get_mut(index) {
            if let Some(t) = timer.take() {
                t.task.abort();
            }
        }
    }

    /// Sets output `index`'s timer to its guard's deadline (none, the same,
    /// or a new one).
    fn reschedule(
        &self,
        state: &mut State,
        index: usize,
        runtime: Option<&tokio::runtime::Handle>,
    ) {
        let id = state.next_timer;
        let Some(LineState::Output { guard, timer, .. }) = state.lines.get_mut(index) else {
            return;
        };
        let deadline = guard.deadline();
        if deadline == timer.as_ref().map(|t| t.at_us) {
            return;
        }
        if let Some(t) = timer.take() {
            t.task.abort();
        }
        let Some(at_us) = deadline else { return };
        let Some(runtime) = runtime else {
            // Callers that can create a deadline check for a runtime first.
            tracing::error!(control = %self.name(index), "no runtime for an output timer");
            return;
        };
        let weak = self.me.clone();
        let wake = self.epoch + Duration::from_micros(at_us);
        let task = runtime.spawn(async move {
            tokio::time::sleep_until(wake).await;
            if let Some(inner) = weak.upgrade() {
                inner.on_timer(index, id);
            }
        });
        *timer = Some(Timer { id, at_us, task });
        state.next_timer = state.next_timer.wrapping_add(1);
    }

    /// An output's timer fired: do what its guard says is due, unless the
    /// timer was replaced or the bank shut down.
    fn on_timer(&self, index: usize, id: u64) {
        let mut state = self.lock();
        match state.lines.get_mut(index) {
            Some(LineState::Output { timer, .. }) if timer.as_ref().is_some_and(|t| t.id == id) => {
                *timer = None;
            }
            _ => return,
        }
        if state.closed {
            return;
        }
        let now_us = self.now_us();
        // At most two actions (a pulse's end, then max_on_ms); bounded anyway.
        for _ in 0..4 {
            let Ok(guard) = self.guard(&mut state, index) else {
                return;
            };
            let Some(drive) = guard.due(now_us) else {
                break;
            };
            self.apply(&mut state, index, drive.value, drive.reason);
        }
        self.reschedule(
            &mut state,
            index,
            tokio::runtime::Handle::try_current().ok().as_ref(),
        );
    }

    fn notify(&self, index: usize, value: bool) {
        // No receivers is not an error: nobody is watching.
        let _ = self.changes.send(GpioChange {
            name: self.name(index).to_owned(),
            value,
            ts_us: crate::clock::monotonic_us(),
        });
    }

    fn sample_inputs(&self, now_us: u64) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let mut watched = false;
        for (index, control) in self.controls.iter().enumerate() {
            if control.direction != Direction::Input || control.edge == Edge::None {
                continue;
            }
            watched = true;
            let Some(LineState::Input {
                pin,
                debouncer,
                failing,
            }) = state.lines.get_mut(index)
            else {
                continue;
            };
            match pin.level() {
                Ok(high) => {
                    if *failing {
                        tracing::info!(control = %control.name, "input readable again");
                        *failing = false;
                    }
                    let value = high != control.active_low;
                    if let Some(value) = debouncer.sample(value, now_us) {
                        if control.edge.notifies(value) {
                            self.notify(index, value);
                        }
                    }
                }
                Err(err) => {
                    // Logged once per failure, not 100 times a second.
                    if !*failing {
                        tracing::warn!(control = %control.name, error = %err, "cannot read input");
                        *failing = true;
                    }
                }
            }
        }
        watched
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Timer tasks hold only a Weak; abort them so none lingers.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for line in &mut state.lines {
            if let LineState::Output { timer: Some(t), .. } = line {
                t.task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests;
