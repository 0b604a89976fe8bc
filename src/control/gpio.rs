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
//! - At most one pulse per output is pending. A second pulse replaces the
//!   first and keeps the value from before the first; `set`/`toggle` cancel
//!   a pending pulse (the latest explicit command wins). A pulse's restore
//!   runs on a tokio task owned by the bank, so it outlives the session that
//!   started it.
//! - After [`GpioBank::safe_all`] every output is at its `safe` value, no
//!   pulse is pending, and state-changing calls fail with
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

struct Control {
    name: String,
    direction: Direction,
    active_low: bool,
    safe: bool,
    edge: Edge,
}

struct Pulse {
    id: u64,
    restore: bool,
    task: JoinHandle<()>,
}

enum LineState {
    Output {
        pin: Box<dyn OutputLine>,
        pulse: Option<Pulse>,
    },
    Input {
        pin: Box<dyn InputLine>,
        debouncer: Debouncer,
        failing: bool,
    },
}

struct State {
    closed: bool,
    next_pulse: u64,
    lines: Vec<LineState>,
}

struct Inner {
    controls: Vec<Control>,
    by_name: HashMap<String, usize>,
    state: Mutex<State>,
    changes: broadcast::Sender<GpioChange>,
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
    /// its `initial` value.
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
                    pin.drive(config.initial != config.active_low)
                        .map_err(|source| GpioError::Hardware {
                            name: config.name.clone(),
                            source,
                        })?;
                    LineState::Output { pin, pulse: None }
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
                edge: config.edge,
            });
        }
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        Ok(GpioBank {
            inner: Arc::new(Inner {
                controls: infos,
                by_name,
                state: Mutex::new(State {
                    closed: false,
                    next_pulse: 0,
                    lines,
                }),
                changes,
            }),
        })
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

    /// Drives output `name` to logical `value`; cancels a pending pulse.
    /// Returns the new value.
    pub fn set(&self, name: &str, value: bool) -> Result<bool, GpioError> {
        let index = self.inner.output_index(name)?;
        let mut state = self.inner.lock_open()?;
        self.inner.cancel_pulse(&mut state, index);
        let prior = self.inner.driven(&mut state, index).ok();
        self.inner.drive(&mut state, index, value, prior)?;
        Ok(value)
    }

    /// Inverts output `name`; cancels a pending pulse. Returns the new value.
    pub fn toggle(&self, name: &str) -> Result<bool, GpioError> {
        let index = self.inner.output_index(name)?;
        let mut state = self.inner.lock_open()?;
        self.inner.cancel_pulse(&mut state, index);
        let prior = self.inner.driven(&mut state, index)?;
        self.inner.drive(&mut state, index, !prior, Some(prior))?;
        Ok(!prior)
    }

    /// Drives output `name` to the inverse of its value for `ms`, then back.
    /// A pulse while one is pending restarts the timer and keeps the value
    /// from before the first. Returns the value driven now. Must be called
    /// within a tokio runtime.
    pub fn pulse(&self, name: &str, ms: u64) -> Result<bool, GpioError> {
        let index = self.inner.output_index(name)?;
        if !PULSE_MS.contains(&ms) {
            return Err(GpioError::BadPulse { ms });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| GpioError::NoRuntime)?;
        let mut state = self.inner.lock_open()?;
        let (restore, prior) = match self.inner.cancel_pulse(&mut state, index) {
            Some(restore) => (restore, self.inner.driven(&mut state, index).ok()),
            None => {
                let now = self.inner.driven(&mut state, index)?;
                (now, Some(now))
            }
        };
        // On a hardware error the pending pulse (if any) is already
        // cancelled: the line is in an unknown state and no timer should
        // fight whatever a viewer does next.
        self.inner.drive(&mut state, index, !restore, prior)?;
        let id = state.next_pulse;
        state.next_pulse = state.next_pulse.wrapping_add(1);
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if let Some(inner) = weak.upgrade() {
                inner.end_pulse(index, id);
            }
        });
        if let Some(LineState::Output { pulse, .. }) = state.lines.get_mut(index) {
            *pulse = Some(Pulse { id, restore, task });
        }
        Ok(!restore)
    }

    /// Shutdown: cancels every pulse, drives every output to its `safe`
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
            self.inner.cancel_pulse(&mut state, index);
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

    fn notify(&self, index: usize, value: bool) {
        // No receivers is not an error: nobody is watching.
        let _ = self.changes.send(GpioChange {
            name: self.name(index).to_owned(),
            value,
            ts_us: crate::clock::monotonic_us(),
        });
    }

    /// Cancels a pending pulse; returns the value it would have restored.
    fn cancel_pulse(&self, state: &mut State, index: usize) -> Option<bool> {
        match state.lines.get_mut(index) {
            Some(LineState::Output { pulse, .. }) => pulse.take().map(|p| {
                p.task.abort();
                p.restore
            }),
            _ => None,
        }
    }

    /// A pulse's timer fired: restore, unless it was cancelled or replaced.
    fn end_pulse(&self, index: usize, id: u64) {
        let mut state = self.lock();
        let restore = match state.lines.get_mut(index) {
            Some(LineState::Output { pulse, .. }) if pulse.as_ref().is_some_and(|p| p.id == id) => {
                pulse.take().map(|p| p.restore)
            }
            _ => None,
        };
        let Some(restore) = restore else { return };
        if state.closed {
            return;
        }
        let prior = self.driven(&mut state, index).ok();
        if let Err(err) = self.drive(&mut state, index, restore, prior) {
            tracing::warn!(control = %self.name(index), error = %err, "cannot end pulse");
        }
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
        // Pulse tasks hold only a Weak; abort them so none lingers.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for line in &mut state.lines {
            if let LineState::Output { pulse: Some(p), .. } = line {
                p.task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests;
