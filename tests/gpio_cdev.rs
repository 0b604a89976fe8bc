//! The production GPIO back end on real character devices.
//!
//! `#[ignore]`d: run with `-- --ignored` where `/dev/gpiochip*` exists and
//! the line named by `CAMPEER_GPIO_LINE` (default `GPIO17`; a name or
//! `chip:offset`) is found; there anything missing fails. CI checks the
//! Pi's GPIO driver in the emulated Pi (tests/qemu_pi.rs). Lines are opened as
//! inputs (harmless on any board); driving the line as an output also needs
//! `CAMPEER_GPIO_OUTPUT=1`, because on real hardware something may be wired
//! to it.

use std::path::Path;
use std::time::Duration;

use campeer::control::cdev::{self, CdevError, LineError};
use campeer::control::config::{Bias, Direction, Edge, GpioConfig, LineSpec};

fn line_spec_text() -> String {
    std::env::var("CAMPEER_GPIO_LINE").unwrap_or_else(|_| "GPIO17".to_owned())
}

/// The configured line if this machine has it, or why it cannot be used.
fn available_line() -> Result<String, String> {
    let chips = cdev::chip_paths(Path::new(cdev::DEV_DIR)).map_err(|e| e.to_string())?;
    if chips.is_empty() {
        return Err(format!("no {}/gpiochip* on this machine", cdev::DEV_DIR));
    }
    let text = line_spec_text();
    let spec = LineSpec::parse(&text)
        .ok_or_else(|| format!("CAMPEER_GPIO_LINE={text:?} is not a line"))?;
    match cdev::find_line(&spec) {
        Ok(found) => {
            eprintln!("using {text} = {found:?}");
            Ok(text)
        }
        Err(err) => Err(format!("{text}: {err}")),
    }
}

fn config(name: &str, line: &str, direction: Direction) -> GpioConfig {
    GpioConfig {
        name: name.into(),
        line: line.into(),
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

#[test]
#[ignore = "needs a GPIO chip: cargo test --test gpio_cdev -- --ignored where one exists; CI checks the Pi's GPIO driver in the emulated Pi (tests/qemu_pi.rs)"]
fn input_is_found_read_and_held_exclusively() {
    let line = match available_line() {
        Ok(line) => line,
        Err(why) => panic!("{why}"),
    };
    let bank =
        cdev::open_bank(&[config("probe", &line, Direction::Input)]).expect("line opens as input");
    let value = bank.get("probe").expect("input reads");
    let list = bank.list().expect("list reads");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].direction, Direction::Input);
    eprintln!("{line} reads {value}");

    // While the bank holds it, the line is busy, and the error says so.
    let err =
        cdev::open_bank(&[config("again", &line, Direction::Input)]).expect_err("line is taken");
    let text = err.to_string();
    assert!(
        matches!(&err, CdevError::Line { source, .. } if matches!(**source, LineError::Busy { .. })),
        "{text}"
    );
    assert!(text.contains("campeer") && text.contains("again"), "{text}");
    drop(bank);

    // Released on drop: it opens again.
    cdev::open_bank(&[config("again", &line, Direction::Input)])
        .expect("released line opens again");
}

#[test]
#[ignore = "needs a GPIO chip: cargo test --test gpio_cdev -- --ignored where one exists; CI checks the Pi's GPIO driver in the emulated Pi (tests/qemu_pi.rs)"]
fn missing_line_names_the_chips_searched() {
    if let Err(why) = available_line() {
        panic!("{why}");
    }
    let err = cdev::open_bank(&[config("ghost", "CAMPEER_NO_SUCH_LINE", Direction::Input)])
        .expect_err("no such line");
    let text = err.to_string();
    assert!(
        text.contains("CAMPEER_NO_SUCH_LINE") && text.contains("gpiochip"),
        "{text}"
    );
}

#[tokio::test]
#[ignore = "needs a GPIO chip: cargo test --test gpio_cdev -- --ignored where one exists; CI checks the Pi's GPIO driver in the emulated Pi (tests/qemu_pi.rs)"]
async fn output_is_driven_pulsed_and_left_safe() {
    let line = match available_line() {
        Ok(line) => line,
        Err(why) => panic!("{why}"),
    };
    assert_eq!(
        std::env::var("CAMPEER_GPIO_OUTPUT").as_deref(),
        Ok("1"),
        "set CAMPEER_GPIO_OUTPUT=1 to let this test drive {line} as an output"
    );
    let bank = cdev::open_bank(&[config("probe", &line, Direction::Output)])
        .expect("line opens as output");
    let mut changes = bank.subscribe();
    assert_eq!(bank.get("probe"), Ok(false));
    assert_eq!(bank.set("probe", true), Ok(true));
    assert_eq!(bank.get("probe"), Ok(true));
    assert_eq!(bank.toggle("probe"), Ok(false));
    assert_eq!(bank.pulse("probe", 20), Ok(true));
    // The pulse ends on its own: wait for the line to drop (bounded).
    let t = std::time::Instant::now();
    while bank.get("probe") == Ok(true) && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bank.get("probe"), Ok(false));
    let mut values = Vec::new();
    while let Ok(change) = changes.try_recv() {
        values.push(change.value);
    }
    assert_eq!(values, [true, false, true, false]);
    bank.safe_all().expect("safe state");
    assert_eq!(bank.get("probe"), Ok(false));
}
