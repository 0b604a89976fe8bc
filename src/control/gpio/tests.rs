//! GpioBank with embedded-hal-mock pins: every expected hardware call is
//! scripted, so a test also proves nothing else touched the line.

use std::io::ErrorKind;
use std::time::Duration;

use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use embedded_hal_mock::eh1::MockError;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::control::config::Bias;

fn config(name: &str, direction: Direction) -> GpioConfig {
    GpioConfig {
        name: name.into(),
        line: format!("LINE_{name}"),
        direction,
        initial: false,
        active_low: false,
        safe: false,
        bias: Bias::AsIs,
        edge: Edge::Both,
        debounce_ms: 20,
        max_on_ms: None,
        revert_on_end: false,
    }
}

fn output(name: &str) -> GpioConfig {
    config(name, Direction::Output)
}

fn input(name: &str) -> GpioConfig {
    config(name, Direction::Input)
}

/// A bank of one output whose mock expects `script` after the start-up
/// sets (safe, then initial when it differs).
fn one_output(cfg: GpioConfig, script: &[T]) -> (GpioBank, Mock) {
    let level = |logical: bool| {
        if logical != cfg.active_low {
            State::High
        } else {
            State::Low
        }
    };
    let mut all = vec![T::set(level(cfg.safe))];
    if cfg.initial != cfg.safe {
        all.push(T::set(level(cfg.initial)));
    }
    all.extend_from_slice(script);
    let mock = Mock::new(&all);
    let bank = GpioBank::new(vec![(cfg, Pin::Output(Box::new(mock.clone())))]).expect("valid bank");
    (bank, mock)
}

fn one_input(cfg: GpioConfig, script: &[T]) -> (GpioBank, Mock) {
    let mock = Mock::new(script);
    let bank = GpioBank::new(vec![(cfg, Pin::Input(Box::new(mock.clone())))]).expect("valid bank");
    (bank, mock)
}

fn changes(rx: &mut broadcast::Receiver<GpioChange>) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(change) => out.push((change.name, change.value)),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("receiver failed: {e}"),
        }
    }
}

fn io_error() -> MockError {
    MockError::Io(ErrorKind::Other)
}

#[test]
fn debouncer_needs_a_stable_level() {
    let mut d = Debouncer::new(Duration::from_millis(20));
    assert_eq!(d.sample(false, 0), None, "first sample only sets the level");
    assert_eq!(d.stable(), Some(false));
    assert_eq!(d.sample(true, 10_000), None);
    assert_eq!(d.sample(false, 20_000), None, "bounce back resets");
    assert_eq!(d.sample(true, 30_000), None);
    assert_eq!(d.sample(true, 40_000), None);
    assert_eq!(d.sample(true, 50_000), Some(true), "20 ms stable");
    assert_eq!(d.sample(true, 60_000), None);
    assert_eq!(d.sample(false, 70_000), None);
    assert_eq!(d.sample(false, 90_000), Some(false));
    // Zero debounce reports at once; a clock going back does not underflow.
    let mut d = Debouncer::new(Duration::ZERO);
    d.sample(false, 100);
    assert_eq!(d.sample(true, 50), Some(true));
}

#[test]
fn new_drives_initial_values_through_active_low() {
    let mut cfg = output("gate");
    cfg.initial = true;
    let (_, mut mock) = one_output(cfg.clone(), &[]);
    mock.done();
    cfg.active_low = true;
    // Logical true on an active-low line is electrically low; safe (false)
    // comes first.
    let mock = Mock::new(&[T::set(State::High), T::set(State::Low)]);
    GpioBank::new(vec![(cfg, Pin::Output(Box::new(mock.clone())))]).expect("valid bank");
    let mut mock = mock;
    mock.done();
}

#[test]
fn new_refuses_bad_banks() {
    let pin = || Pin::Input(Box::new(SimPin::new(false)));
    let err = GpioBank::new(vec![(output("gate"), pin())]).expect_err("direction");
    assert!(matches!(err, GpioError::DirectionMismatch { .. }), "{err}");
    let err = GpioBank::new(vec![(input("a"), pin()), (input("a"), pin())]).expect_err("dup");
    assert!(matches!(err, GpioError::Config(_)), "{err}");
    let failing = Mock::new(&[T::set(State::Low).with_error(io_error())]);
    let err = GpioBank::new(vec![(
        output("gate"),
        Pin::Output(Box::new(failing.clone())),
    )])
    .expect_err("hardware");
    assert!(matches!(err, GpioError::Hardware { .. }), "{err}");
    let mut failing = failing;
    failing.done();
}

#[test]
fn list_get_and_unknown_names() {
    let out_mock = Mock::new(&[
        T::set(State::Low),
        T::get_state(State::Low),
        T::get_state(State::High),
    ]);
    let in_mock = Mock::new(&[T::get(State::High), T::get(State::Low)]);
    let mut door = input("door");
    door.active_low = true;
    let bank = GpioBank::new(vec![
        (output("gate"), Pin::Output(Box::new(out_mock.clone()))),
        (door, Pin::Input(Box::new(in_mock.clone()))),
    ])
    .expect("valid bank");
    let list = bank.list().expect("readable");
    assert_eq!(
        list,
        vec![
            ControlValue {
                name: "gate".into(),
                direction: Direction::Output,
                value: false
            },
            // High on an active-low input is logically inactive.
            ControlValue {
                name: "door".into(),
                direction: Direction::Input,
                value: false
            },
        ]
    );
    assert_eq!(bank.get("gate"), Ok(true));
    assert_eq!(bank.get("door"), Ok(true));
    assert_eq!(
        bank.get("nope"),
        Err(GpioError::UnknownControl {
            name: "nope".into()
        })
    );
    assert_eq!(bank.direction("door"), Some(Direction::Input));
    assert_eq!(bank.controls().len(), 2);
    let (mut a, mut b) = (out_mock, in_mock);
    a.done();
    b.done();
}

#[test]
fn set_and_toggle_notify_only_changes() {
    let (bank, mut mock) = one_output(
        output("gate"),
        &[
            T::get_state(State::Low),
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::Low),
        ],
    );
    let mut rx = bank.subscribe();
    assert_eq!(bank.set("gate", true), Ok(true));
    assert_eq!(bank.set("gate", true), Ok(true));
    assert_eq!(bank.toggle("gate"), Ok(false));
    assert_eq!(
        changes(&mut rx),
        [("gate".into(), true), ("gate".into(), false)]
    );
    mock.done();
}

#[test]
fn active_low_outputs_are_logical() {
    let mut cfg = output("lamp");
    cfg.active_low = true;
    let (bank, mut mock) = one_output(
        cfg,
        &[
            T::get_state(State::High),
            T::set(State::Low),
            T::get_state(State::Low),
        ],
    );
    assert_eq!(bank.set("lamp", true), Ok(true));
    assert_eq!(bank.get("lamp"), Ok(true));
    mock.done();
}

#[test]
fn inputs_cannot_be_driven() {
    let (bank, mut mock) = one_input(input("door"), &[]);
    let not_output = Err(GpioError::NotAnOutput {
        name: "door".into(),
    });
    assert_eq!(bank.set("door", true), not_output);
    assert_eq!(bank.toggle("door"), not_output);
    assert_eq!(bank.pulse("door", 10), not_output);
    mock.done();
}

#[test]
fn hardware_errors_name_the_control() {
    let (bank, mut mock) = one_output(
        output("gate"),
        &[
            T::get_state(State::Low),
            T::set(State::High).with_error(io_error()),
            T::get_state(State::Low).with_error(io_error()),
        ],
    );
    let err = bank.set("gate", true).expect_err("set fails");
    assert!(
        matches!(&err, GpioError::Hardware { name, .. } if name == "gate"),
        "{err}"
    );
    assert!(matches!(
        bank.toggle("gate"),
        Err(GpioError::Hardware { .. })
    ));
    mock.done();
}

#[test]
fn pulse_outside_a_runtime_is_an_error() {
    let (bank, mut mock) = one_output(output("gate"), &[]);
    assert_eq!(bank.pulse("gate", 100), Err(GpioError::NoRuntime));
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn pulse_restores_after_ms() {
    let (bank, mut mock) = one_output(
        output("gate"),
        &[
            T::get_state(State::Low),
            T::set(State::High),
            // The restore.
            T::get_state(State::High),
            T::set(State::Low),
        ],
    );
    let mut rx = bank.subscribe();
    assert_eq!(bank.pulse("gate", 500), Ok(true));
    assert_eq!(changes(&mut rx), [("gate".into(), true)]);
    tokio::time::sleep(Duration::from_millis(499)).await;
    assert!(changes(&mut rx).is_empty(), "not yet");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(changes(&mut rx), [("gate".into(), false)]);
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn second_pulse_replaces_the_first_and_keeps_the_first_former_value() {
    let (bank, mut mock) = one_output(
        output("gate"),
        &[
            // First pulse: former value false.
            T::get_state(State::Low),
            T::set(State::High),
            // Second pulse, 300 ms later: already high, timer restarted.
            T::get_state(State::High),
            T::set(State::High),
            // Only one restore, 1000 ms after the second pulse, to false.
            T::get_state(State::High),
            T::set(State::Low),
        ],
    );
    let mut rx = bank.subscribe();
    assert_eq!(bank.pulse("gate", 500), Ok(true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bank.pulse("gate", 1000), Ok(true));
    tokio::time::sleep(Duration::from_millis(900)).await;
    // The first pulse's 500 ms have long passed: still high.
    assert_eq!(changes(&mut rx), [("gate".into(), true)]);
    tokio::time::sleep(Duration::from_millis(101)).await;
    assert_eq!(changes(&mut rx), [("gate".into(), false)]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(changes(&mut rx).is_empty());
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn pulse_from_high_goes_low_and_back() {
    let mut cfg = output("gate");
    cfg.initial = true;
    let (bank, mut mock) = one_output(
        cfg,
        &[
            T::get_state(State::High),
            T::set(State::Low),
            T::get_state(State::Low),
            T::set(State::High),
        ],
    );
    assert_eq!(bank.pulse("gate", 20), Ok(false));
    tokio::time::sleep(Duration::from_millis(21)).await;
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn set_cancels_a_pending_pulse() {
    let (bank, mut mock) = one_output(
        output("gate"),
        &[
            T::get_state(State::Low),
            T::set(State::High),
            T::get_state(State::High),
            T::set(State::High),
        ],
    );
    assert_eq!(bank.pulse("gate", 100), Ok(true));
    assert_eq!(bank.set("gate", true), Ok(true));
    // No restore: the mock would panic on an unexpected call.
    tokio::time::sleep(Duration::from_millis(200)).await;
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn pulse_range_is_checked() {
    let (bank, mut mock) = one_output(output("gate"), &[]);
    assert_eq!(bank.pulse("gate", 0), Err(GpioError::BadPulse { ms: 0 }));
    assert_eq!(
        bank.pulse("gate", 60_001),
        Err(GpioError::BadPulse { ms: 60_001 })
    );
    assert!(matches!(
        bank.pulse("nope", 10),
        Err(GpioError::UnknownControl { .. })
    ));
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn safe_all_cancels_pulses_drives_safe_values_and_refuses_changes() {
    let mut gate = output("gate");
    gate.safe = false;
    let mut lamp = output("lamp");
    lamp.safe = true;
    lamp.active_low = true;
    let gate_mock = Mock::new(&[
        T::set(State::Low),
        // pulse
        T::get_state(State::Low),
        T::set(State::High),
        // safe_all
        T::get_state(State::High),
        T::set(State::Low),
    ]);
    let lamp_mock = Mock::new(&[
        // Start-up: safe (true, active-low: low), then initial (false).
        T::set(State::Low),
        T::set(State::High),
        // safe_all: logical true on active-low is electrically low.
        T::get_state(State::High),
        T::set(State::Low),
    ]);
    let bank = GpioBank::new(vec![
        (gate, Pin::Output(Box::new(gate_mock.clone()))),
        (lamp, Pin::Output(Box::new(lamp_mock.clone()))),
        (input("door"), Pin::Input(Box::new(SimPin::new(false)))),
    ])
    .expect("valid bank");
    let mut rx = bank.subscribe();
    assert_eq!(bank.pulse("gate", 1000), Ok(true));
    bank.safe_all().expect("all safe");
    assert_eq!(
        changes(&mut rx),
        [
            ("gate".into(), true),
            ("gate".into(), false),
            ("lamp".into(), true)
        ]
    );
    // The pulse never restores, and changes are refused.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(changes(&mut rx).is_empty());
    assert_eq!(bank.set("gate", true), Err(GpioError::ShutDown));
    assert_eq!(bank.toggle("gate"), Err(GpioError::ShutDown));
    assert_eq!(bank.pulse("gate", 10), Err(GpioError::ShutDown));
    assert!(!bank.sample_inputs(0), "watcher stops");
    let (mut a, mut b) = (gate_mock, lamp_mock);
    a.done();
    b.done();
}

#[test]
fn safe_all_tries_every_output_despite_errors() {
    let first = Mock::new(&[
        T::set(State::Low),
        T::get_state(State::Low),
        T::set(State::Low).with_error(io_error()),
    ]);
    let mut second_cfg = output("second");
    second_cfg.safe = true;
    let second = Mock::new(&[
        T::set(State::High),
        T::set(State::Low),
        T::get_state(State::Low),
        T::set(State::High),
    ]);
    let bank = GpioBank::new(vec![
        (output("first"), Pin::Output(Box::new(first.clone()))),
        (second_cfg, Pin::Output(Box::new(second.clone()))),
    ])
    .expect("valid bank");
    let err = bank.safe_all().expect_err("first fails");
    assert!(
        matches!(&err, GpioError::Hardware { name, .. } if name == "first"),
        "{err}"
    );
    let (mut a, mut b) = (first, second);
    a.done();
    b.done();
}

#[test]
fn inputs_notify_debounced_edges() {
    // Samples every 10 ms: low, high (bounce), low, high, high, high.
    let (bank, mut mock) = one_input(
        input("door"),
        &[
            T::get(State::Low),
            T::get(State::High),
            T::get(State::Low),
            T::get(State::High),
            T::get(State::High),
            T::get(State::High),
            T::get(State::Low),
            T::get(State::Low),
            T::get(State::Low),
        ],
    );
    let mut rx = bank.subscribe();
    let mut seen = Vec::new();
    for step in 0..9u64 {
        assert!(bank.sample_inputs(step * 10_000));
        seen.push(changes(&mut rx));
    }
    let none: Vec<(String, bool)> = Vec::new();
    let rise = vec![("door".to_owned(), true)];
    let fall = vec![("door".to_owned(), false)];
    assert_eq!(
        seen,
        [
            none.clone(),
            none.clone(),
            none.clone(),
            none.clone(),
            none.clone(),
            rise,
            none.clone(),
            none,
            fall
        ]
    );
    mock.done();
}

#[test]
fn edge_filters_logical_edges() {
    for (edge, active_low, want) in [
        (Edge::Rising, false, vec![true]),
        (Edge::Falling, false, vec![false]),
        // On an active-low line, electrical low-high-low is logical
        // true-false-true: the falling edge comes first.
        (Edge::Falling, true, vec![false]),
        (Edge::Rising, true, vec![true]),
        (Edge::Both, true, vec![false, true]),
    ] {
        let mut cfg = input("door");
        cfg.edge = edge;
        cfg.active_low = active_low;
        cfg.debounce_ms = 0;
        let (bank, mut mock) = one_input(
            cfg,
            &[T::get(State::Low), T::get(State::High), T::get(State::Low)],
        );
        let mut rx = bank.subscribe();
        for t in 0..3 {
            bank.sample_inputs(t);
        }
        let got: Vec<bool> = changes(&mut rx).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, want, "{edge:?} active_low={active_low}");
        mock.done();
    }
}

#[test]
fn unwatched_inputs_are_not_sampled() {
    let mut cfg = input("door");
    cfg.edge = Edge::None;
    // No get expected: sampling must not touch the line.
    let (bank, mut mock) = one_input(cfg, &[]);
    assert!(!bank.sample_inputs(0), "nothing to watch");
    mock.done();
}

#[test]
fn input_read_errors_do_not_stop_sampling() {
    let mut cfg = input("door");
    cfg.debounce_ms = 0;
    let (bank, mut mock) = one_input(
        cfg,
        &[
            T::get(State::Low),
            T::get(State::Low).with_error(io_error()),
            T::get(State::Low).with_error(io_error()),
            T::get(State::High),
        ],
    );
    let mut rx = bank.subscribe();
    for t in 0..4 {
        assert!(bank.sample_inputs(t));
    }
    assert_eq!(changes(&mut rx), [("door".into(), true)]);
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn watcher_polls_inputs_until_shutdown() {
    let sim = SimPin::new(false);
    let bank = GpioBank::new(vec![(input("door"), Pin::Input(Box::new(sim.clone())))])
        .expect("valid bank");
    let mut rx = bank.subscribe();
    let watcher = bank.spawn_input_watcher().expect("in a runtime");
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.force(true);
    let change = tokio::time::timeout(Duration::from_millis(100), rx.recv())
        .await
        .expect("edge within debounce + poll")
        .expect("open channel");
    assert_eq!((change.name.as_str(), change.value), ("door", true));
    bank.safe_all().expect("no outputs");
    tokio::time::timeout(Duration::from_millis(100), watcher)
        .await
        .expect("watcher ends after shutdown")
        .expect("no panic");
}

#[tokio::test(start_paused = true)]
async fn pulse_outlives_its_caller_but_not_the_bank() {
    let sim = SimPin::new(false);
    let bank = GpioBank::new(vec![(output("gate"), Pin::Output(Box::new(sim.clone())))])
        .expect("valid bank");
    let caller = bank.clone();
    assert_eq!(caller.pulse("gate", 50), Ok(true));
    drop(caller);
    assert!(sim.is_high_now());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(!sim.is_high_now(), "restored after the caller went away");

    assert_eq!(bank.pulse("gate", 50), Ok(true));
    drop(bank);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(sim.is_high_now(), "a dropped bank restores nothing");
}

// A mock's panic inside the pulse task would be swallowed by tokio, so the
// "nothing happens later" cases are also checked on a SimPin's level.
#[tokio::test(start_paused = true)]
async fn cancelled_pulses_never_restore() {
    let sim = SimPin::new(false);
    let mut cfg = output("gate");
    cfg.safe = true;
    let bank = GpioBank::new(vec![(cfg, Pin::Output(Box::new(sim.clone())))]).expect("valid bank");
    assert_eq!(bank.pulse("gate", 100), Ok(true));
    assert_eq!(bank.toggle("gate"), Ok(false));
    assert_eq!(bank.set("gate", true), Ok(true));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sim.is_high_now(), "set cancelled the pulse");

    assert_eq!(bank.pulse("gate", 100), Ok(false));
    assert!(!sim.is_high_now());
    bank.safe_all().expect("safe");
    assert!(sim.is_high_now(), "safe value");
    sim.force(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sim.is_high_now(), "no restore after shutdown");
}

// --- fail-safe rules: max_on_ms, revert_on_end (simulated time) -----------

fn guarded(max_on_ms: Option<u64>, revert_on_end: bool) -> (GpioBank, SimPin) {
    let sim = SimPin::new(false);
    let mut cfg = output("strike");
    cfg.max_on_ms = max_on_ms;
    cfg.revert_on_end = revert_on_end;
    let bank = GpioBank::new(vec![(cfg, Pin::Output(Box::new(sim.clone())))]).expect("valid bank");
    (bank, sim)
}

#[test]
fn start_up_drives_safe_before_initial() {
    let mut cfg = output("gate");
    cfg.safe = true;
    cfg.initial = false;
    let mock = Mock::new(&[T::set(State::High), T::set(State::Low)]);
    GpioBank::new(vec![(cfg.clone(), Pin::Output(Box::new(mock.clone())))]).expect("valid bank");
    let mut mock = mock;
    mock.done();
    // Same values: driven once.
    cfg.initial = true;
    let mock = Mock::new(&[T::set(State::High)]);
    GpioBank::new(vec![(cfg, Pin::Output(Box::new(mock.clone())))]).expect("valid bank");
    let mut mock = mock;
    mock.done();
}

#[test]
fn an_unbounded_unsafe_value_needs_a_runtime() {
    let (bank, sim) = guarded(Some(100), false);
    // No timer could bring it back: refused, line untouched.
    assert_eq!(bank.set("strike", true), Err(GpioError::NoRuntime));
    assert!(!sim.is_high_now());
    // Going safe needs no timer.
    assert_eq!(bank.set("strike", false), Ok(false));
    let mut cfg = output("gate");
    cfg.initial = true;
    cfg.max_on_ms = Some(100);
    let err = GpioBank::new(vec![(cfg, Pin::Output(Box::new(SimPin::new(false))))])
        .expect_err("initial needs a timer");
    assert_eq!(err, GpioError::NoRuntime);
}

#[tokio::test(start_paused = true)]
async fn max_on_returns_a_set_output_to_safe() {
    let (bank, sim) = guarded(Some(500), false);
    let mut rx = bank.subscribe();
    assert_eq!(bank.set_by(Some(1), "strike", true), Ok(true));
    tokio::time::sleep(Duration::from_millis(499)).await;
    assert!(sim.is_high_now(), "not yet");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(!sim.is_high_now(), "back to safe after max_on_ms");
    assert_eq!(
        changes(&mut rx),
        [("strike".into(), true), ("strike".into(), false)]
    );
    // Setting it again while on does not extend the period.
    assert_eq!(bank.set("strike", true), Ok(true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bank.set("strike", true), Ok(true));
    tokio::time::sleep(Duration::from_millis(201)).await;
    assert!(!sim.is_high_now(), "500 ms after it first left safe");
}

#[tokio::test(start_paused = true)]
async fn max_on_applies_to_toggle_and_initial() {
    let (bank, sim) = guarded(Some(200), false);
    assert_eq!(bank.toggle("strike"), Ok(true));
    tokio::time::sleep(Duration::from_millis(201)).await;
    assert!(!sim.is_high_now());

    let sim = SimPin::new(false);
    let mut cfg = output("lamp");
    cfg.initial = true;
    cfg.max_on_ms = Some(1000);
    let bank = GpioBank::new(vec![(cfg, Pin::Output(Box::new(sim.clone())))]).expect("valid");
    assert!(sim.is_high_now(), "initial");
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert!(!sim.is_high_now(), "initial is bounded too");
    assert_eq!(bank.get("lamp"), Ok(false));
}

#[tokio::test(start_paused = true)]
async fn pulses_longer_than_max_on_are_capped() {
    let (bank, sim) = guarded(Some(300), false);
    let outcome = bank.pulse_by(Some(4), "strike", 5000).expect("pulse");
    assert_eq!(
        outcome,
        PulseOutcome {
            value: true,
            ms: 300,
            capped: true
        }
    );
    tokio::time::sleep(Duration::from_millis(299)).await;
    assert!(sim.is_high_now());
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(!sim.is_high_now(), "cut at max_on_ms");
    let short = bank.pulse_by(None, "strike", 100).expect("pulse");
    assert_eq!((short.ms, short.capped), (100, false));
    tokio::time::sleep(Duration::from_millis(101)).await;
    assert!(!sim.is_high_now());
}

#[tokio::test(start_paused = true)]
async fn max_on_with_mock_lines_drives_exactly_once() {
    let mut cfg = output("gate");
    cfg.max_on_ms = Some(1000);
    let (bank, mut mock) = one_output(
        cfg,
        &[
            // set true
            T::get_state(State::Low),
            T::set(State::High),
            // max_on_ms: back to low, once.
            T::get_state(State::High),
            T::set(State::Low),
        ],
    );
    assert_eq!(bank.set("gate", true), Ok(true));
    tokio::time::sleep(Duration::from_millis(5000)).await;
    mock.done();
}

#[tokio::test(start_paused = true)]
async fn revert_on_end_reverts_what_the_ended_session_drove_last() {
    let (bank, sim) = guarded(None, true);
    let mut rx = bank.subscribe();
    assert_eq!(bank.set_by(Some(1), "strike", true), Ok(true));
    bank.session_ended(2);
    assert!(sim.is_high_now(), "another session's end changes nothing");
    bank.session_ended(1);
    assert!(!sim.is_high_now(), "reverted");
    assert_eq!(
        changes(&mut rx),
        [("strike".into(), true), ("strike".into(), false)]
    );
    // A call racing its session's end cannot take the output over.
    assert_eq!(
        bank.set_by(Some(1), "strike", true),
        Err(GpioError::SessionEnded)
    );
    assert!(!sim.is_high_now());
    // Taken over by session 3: session 4's end (it drove it first) leaves it.
    assert_eq!(bank.set_by(Some(4), "strike", true), Ok(true));
    assert_eq!(bank.toggle_by(Some(3), "strike"), Ok(false));
    assert_eq!(bank.toggle_by(Some(3), "strike"), Ok(true));
    bank.session_ended(4);
    assert!(sim.is_high_now());
    bank.session_ended(3);
    assert!(!sim.is_high_now());
}

#[tokio::test(start_paused = true)]
async fn revert_on_end_drops_a_pending_pulse() {
    let (bank, sim) = guarded(None, true);
    assert_eq!(bank.set_by(Some(7), "strike", true), Ok(true));
    // The pulse drives safe now and would restore "on" in 1 s.
    assert_eq!(
        bank.pulse_by(Some(7), "strike", 1000).map(|p| p.value),
        Ok(false)
    );
    bank.session_ended(7);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        !sim.is_high_now(),
        "the pulse did not restore after the session ended"
    );
    // A pulse to "on" by a session that then ends: safe at once.
    assert_eq!(
        bank.pulse_by(Some(8), "strike", 1000).map(|p| p.value),
        Ok(true)
    );
    bank.session_ended(8);
    assert!(!sim.is_high_now());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!sim.is_high_now());
}

#[tokio::test(start_paused = true)]
async fn without_revert_on_end_a_session_end_changes_nothing() {
    let (bank, sim) = guarded(None, false);
    assert_eq!(bank.set_by(Some(1), "strike", true), Ok(true));
    bank.session_ended(1);
    assert!(sim.is_high_now());
}

#[tokio::test(start_paused = true)]
async fn max_on_and_revert_on_end_together_and_shutdown() {
    let (bank, sim) = guarded(Some(1000), true);
    assert_eq!(bank.set_by(Some(1), "strike", true), Ok(true));
    tokio::time::sleep(Duration::from_millis(400)).await;
    bank.session_ended(1);
    assert!(!sim.is_high_now(), "session end first");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!sim.is_high_now());
    assert_eq!(bank.set_by(Some(2), "strike", true), Ok(true));
    bank.safe_all().expect("safe");
    assert!(!sim.is_high_now());
    sim.force(true);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(sim.is_high_now(), "no timer acts after shutdown");
    bank.session_ended(2);
    assert!(sim.is_high_now(), "nor a session's end");
}
