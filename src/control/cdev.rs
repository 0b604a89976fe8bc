//! Production GPIO: Linux character-device lines (`/dev/gpiochipN`) through
//! linux-embedded-hal's `CdevPin` (gpio-cdev, the v1 uAPI).
//!
//! A configured `line` is found by the name the kernel reports (`GPIO17` on
//! every Pi, whichever chip carries it: gpiochip0 on a Pi 4, the RP1 chip
//! on a Pi 5), searching chips in numeric order, or by `chip:offset`.
//!
//! Invariants: lines are requested *without* the kernel's ACTIVE_LOW flag,
//! so pins speak electrical levels and `GpioBank` alone applies
//! `active_low` (linux-embedded-hal would otherwise invert a second time);
//! outputs are requested at their *safe* level, so the first thing a line
//! does at start-up is go safe (the bank then drives `initial` when it
//! differs); inputs get the configured bias (v1 uAPI flags, Linux 5.5 and
//! later).
//!
//! [`drive_safe`] is `campeer gpio-safe`: the stop step that puts every
//! output at its safe level after the daemon is gone, however it ended.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use embedded_hal::digital::{ErrorType, OutputPin, StatefulOutputPin};
use linux_embedded_hal::gpio_cdev::{self, Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, CdevPinError};

use super::config::{validate_gpio, Bias, ConfigError, Direction, GpioConfig, LineSpec};
use super::gpio::{GpioBank, GpioError, Pin};

/// The consumer label the kernel shows for our lines (`gpioinfo`).
pub const CONSUMER: &str = "campeer";

/// Where the chips are.
pub const DEV_DIR: &str = "/dev";

// GPIOHANDLE_REQUEST_BIAS_* (include/uapi/linux/gpio.h, Linux 5.5); gpio-cdev
// 0.6 does not name them, but passes the bits through.
const BIAS_PULL_UP: u32 = 1 << 5;
const BIAS_PULL_DOWN: u32 = 1 << 6;
const BIAS_DISABLE: u32 = 1 << 7;

/// Why one line could not be found or opened.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("no GPIO chips ({DEV_DIR}/gpiochip*) on this system")]
    NoChips,
    #[error("cannot list {}: {source}", dir.display())]
    ListDev {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    OpenChip {
        path: PathBuf,
        source: gpio_cdev::Error,
    },
    #[error("no line named {line:?} on {searched}")]
    NotFound { line: String, searched: String },
    #[error("{chip} ({label}) has {lines} lines; there is no offset {offset}")]
    NoOffset {
        chip: String,
        label: String,
        lines: u32,
        offset: u32,
    },
    #[error("cannot read the info of {chip}:{offset}: {source}")]
    Info {
        chip: String,
        offset: u32,
        source: gpio_cdev::Error,
    },
    #[error("{line} ({chip}:{offset}) is busy: in use by {consumer:?}")]
    Busy {
        line: String,
        chip: String,
        offset: u32,
        consumer: String,
    },
    #[error("cannot request {line} ({chip}:{offset}) as {what}: {source}")]
    Request {
        line: String,
        chip: String,
        offset: u32,
        what: String,
        source: gpio_cdev::Error,
    },
}

/// Why the configured controls could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CdevError {
    #[error("gpio configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("gpio {control:?}: {source}")]
    Line {
        control: String,
        source: Box<LineError>,
    },
    #[error(transparent)]
    Bank(#[from] GpioError),
}

/// A line located on a chip, not yet requested.
pub struct FoundLine {
    /// `gpiochipN`.
    pub chip: String,
    /// The chip's label, e.g. `pinctrl-bcm2835`.
    pub label: String,
    /// Offset within the chip.
    pub offset: u32,
    /// The kernel's name for the line, if it has one.
    pub name: Option<String>,
    line: gpio_cdev::Line,
}

impl fmt::Debug for FoundLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoundLine")
            .field("chip", &self.chip)
            .field("label", &self.label)
            .field("offset", &self.offset)
            .field("name", &self.name)
            .finish()
    }
}

/// `/dev/gpiochipN` paths, in numeric order of N.
pub fn chip_paths(dev_dir: &Path) -> Result<Vec<PathBuf>, LineError> {
    let entries = std::fs::read_dir(dev_dir).map_err(|source| LineError::ListDev {
        dir: dev_dir.to_owned(),
        source,
    })?;
    let mut chips: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix("gpiochip")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    chips.sort();
    Ok(chips.into_iter().map(|(_, path)| path).collect())
}

fn open_chip(path: &Path) -> Result<Chip, LineError> {
    Chip::new(path).map_err(|source| LineError::OpenChip {
        path: path.to_owned(),
        source,
    })
}

fn chip_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Finds a line under [`DEV_DIR`] by name (first match in chip order) or by
/// chip and offset.
pub fn find_line(spec: &LineSpec) -> Result<FoundLine, LineError> {
    find_line_in(Path::new(DEV_DIR), spec)
}

/// [`find_line`] under another directory.
pub fn find_line_in(dev_dir: &Path, spec: &LineSpec) -> Result<FoundLine, LineError> {
    match spec {
        LineSpec::Mock(name) => Err(LineError::NotFound {
            line: format!("mock:{name}"),
            searched: "nothing (a simulated line has no chip)".into(),
        }),
        LineSpec::Offset { chip, offset } => {
            let path = dev_dir.join(chip);
            let mut opened = open_chip(&path)?;
            let label = opened.label().to_owned();
            let lines = opened.num_lines();
            let line = opened.get_line(*offset).map_err(|_| LineError::NoOffset {
                chip: chip.clone(),
                label: label.clone(),
                lines,
                offset: *offset,
            })?;
            let info = line.info().map_err(|source| LineError::Info {
                chip: chip.clone(),
                offset: *offset,
                source,
            })?;
            Ok(FoundLine {
                chip: chip.clone(),
                label,
                offset: *offset,
                name: info.name().map(str::to_owned),
                line,
            })
        }
        LineSpec::Name(wanted) => {
            let paths = chip_paths(dev_dir)?;
            if paths.is_empty() {
                return Err(LineError::NoChips);
            }
            let mut searched = Vec::with_capacity(paths.len());
            let mut found: Option<FoundLine> = None;
            for path in &paths {
                let chip = open_chip(path)?;
                let chip_id = chip_name(path);
                searched.push(format!("{chip_id} ({})", chip.label()));
                for line in chip.lines() {
                    let Ok(info) = line.info() else { continue };
                    if info.name() != Some(wanted.as_str()) {
                        continue;
                    }
                    match &found {
                        None => {
                            found = Some(FoundLine {
                                chip: chip_id.clone(),
                                label: chip.label().to_owned(),
                                offset: line.offset(),
                                name: Some(wanted.clone()),
                                line: line.clone(),
                            });
                        }
                        Some(first) => tracing::warn!(
                            line = %wanted,
                            using = %format!("{}:{}", first.chip, first.offset),
                            also = %format!("{chip_id}:{}", line.offset()),
                            "line name is not unique; using the first"
                        ),
                    }
                }
            }
            found.ok_or_else(|| LineError::NotFound {
                line: wanted.clone(),
                searched: searched.join(", "),
            })
        }
    }
}

/// An output `CdevPin` that remembers what it drives: a requested output
/// is ours alone, and reading back an output is undefined on some drivers.
pub struct CdevOutput {
    pin: CdevPin,
    high: bool,
}

impl ErrorType for CdevOutput {
    type Error = CdevPinError;
}

impl OutputPin for CdevOutput {
    fn set_low(&mut self) -> Result<(), CdevPinError> {
        self.pin.set_low()?;
        self.high = false;
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), CdevPinError> {
        self.pin.set_high()?;
        self.high = true;
        Ok(())
    }
}

impl StatefulOutputPin for CdevOutput {
    fn is_set_high(&mut self) -> Result<bool, CdevPinError> {
        Ok(self.high)
    }

    fn is_set_low(&mut self) -> Result<bool, CdevPinError> {
        Ok(!self.high)
    }
}

fn request_flags(config: &GpioConfig) -> LineRequestFlags {
    match config.direction {
        Direction::Output => LineRequestFlags::OUTPUT,
        Direction::Input => {
            let bias = match config.bias {
                Bias::AsIs => 0,
                Bias::Disabled => BIAS_DISABLE,
                Bias::PullUp => BIAS_PULL_UP,
                Bias::PullDown => BIAS_PULL_DOWN,
            };
            LineRequestFlags::from_bits_retain(LineRequestFlags::INPUT.bits() | bias)
        }
    }
}

/// Finds and requests the line of one control. A mock line is taken from
/// `wires` (made there on first use), so controls naming one share it.
pub fn open_line(
    config: &GpioConfig,
    wires: &mut HashMap<String, super::gpio::SimPin>,
) -> Result<Pin, LineError> {
    let spec = LineSpec::parse(&config.line).ok_or_else(|| LineError::NotFound {
        line: config.line.clone(),
        searched: "nothing (not a line name nor chip:offset)".into(),
    })?;
    if let LineSpec::Mock(name) = spec {
        tracing::warn!(line = %config.line, "simulated GPIO line: no hardware is driven");
        let pin = wires.entry(name).or_default().clone();
        if config.direction == Direction::Output {
            pin.force(config.safe != config.active_low);
        }
        return Ok(match config.direction {
            Direction::Output => Pin::Output(Box::new(pin)),
            Direction::Input => Pin::Input(Box::new(pin)),
        });
    }
    let found = find_line(&spec)?;
    request(config, &found)
}

/// Requests a found line for `config`'s direction, bias and initial value.
pub fn request(config: &GpioConfig, found: &FoundLine) -> Result<Pin, LineError> {
    let info = found.line.info().map_err(|source| LineError::Info {
        chip: found.chip.clone(),
        offset: found.offset,
        source,
    })?;
    if info.is_kernel() {
        return Err(LineError::Busy {
            line: config.line.clone(),
            chip: found.chip.clone(),
            offset: found.offset,
            consumer: info.consumer().unwrap_or("the kernel").to_owned(),
        });
    }
    let flags = request_flags(config);
    let high = config.safe != config.active_low;
    let what = match (config.direction, config.bias) {
        (Direction::Output, _) => {
            format!(
                "output, at its safe level {}",
                if high { "high" } else { "low" }
            )
        }
        (Direction::Input, Bias::AsIs) => "input".to_owned(),
        (Direction::Input, bias) => format!("input with bias {bias:?} (needs Linux 5.5)"),
    };
    let request_error = |source| LineError::Request {
        line: config.line.clone(),
        chip: found.chip.clone(),
        offset: found.offset,
        what: what.clone(),
        source,
    };
    let handle = found
        .line
        .request(flags, u8::from(high), CONSUMER)
        .map_err(request_error)?;
    let pin = CdevPin::new(handle).map_err(request_error)?;
    Ok(match config.direction {
        Direction::Output => Pin::Output(Box::new(CdevOutput { pin, high })),
        Direction::Input => Pin::Input(Box::new(pin)),
    })
}

/// Opens every configured control and builds the bank (outputs at their
/// safe values, then at their initial values). Lines opened before a
/// failure are released.
pub fn open_bank(configs: &[GpioConfig]) -> Result<GpioBank, CdevError> {
    validate_gpio(configs)?;
    let mut controls = Vec::with_capacity(configs.len());
    let mut wires = HashMap::new();
    for config in configs {
        let pin = open_line(config, &mut wires).map_err(|source| CdevError::Line {
            control: config.name.clone(),
            source: Box::new(source),
        })?;
        tracing::info!(control = %config.name, line = %config.line, direction = config.direction.as_str(), "gpio line opened");
        controls.push((config.clone(), pin));
    }
    Ok(GpioBank::new(controls)?)
}

/// What [`drive_safe`] did with one output.
#[derive(Debug)]
pub struct SafeOutcome {
    /// The control's name.
    pub control: String,
    /// Where its line is and what it was driven to, or why it could not be.
    pub result: Result<String, CdevError>,
}

/// `campeer gpio-safe`: requests every configured output at its safe level
/// and releases it again; inputs are left alone. Tries every output, in
/// configuration order, and reports each. Meant for after the daemon has
/// stopped (systemd's `ExecStopPost=`): while it runs, its lines are busy.
///
/// What a released line does next is the driver's: on Raspberry Pi OS
/// kernels (`pinctrl_bcm2835.persist_gpio_outputs=y`) it keeps the level;
/// kernels without that return it to an input, and the board's pull
/// resistors decide (see docs/raspberry-pi.md).
pub fn drive_safe(configs: &[GpioConfig]) -> Result<Vec<SafeOutcome>, ConfigError> {
    validate_gpio(configs)?;
    Ok(configs
        .iter()
        .filter(|c| c.direction == Direction::Output)
        .map(|config| {
            let level = if config.safe != config.active_low {
                "high"
            } else {
                "low"
            };
            let result = match LineSpec::parse(&config.line) {
                Some(LineSpec::Mock(_)) => {
                    Ok(format!("{}: simulated, nothing to drive", config.line))
                }
                spec => spec
                    .ok_or_else(|| LineError::NotFound {
                        line: config.line.clone(),
                        searched: "nothing (not a line name nor chip:offset)".into(),
                    })
                    .and_then(|spec| find_line(&spec))
                    .and_then(|found| {
                        // Requested at the safe level; dropped (released) at once.
                        request(config, &found)?;
                        Ok(format!(
                            "{} ({}:{}) driven {level} (safe = {})",
                            config.line, found.chip, found.offset, config.safe
                        ))
                    })
                    .map_err(|source| CdevError::Line {
                        control: config.name.clone(),
                        source: Box::new(source),
                    }),
            };
            SafeOutcome {
                control: config.name.clone(),
                result,
            }
        })
        .collect())
}

/// Runs [`drive_safe`] and prints one line per output (failures to
/// stderr). Exit status 0 only when every output was driven.
pub fn gpio_safe_command(configs: &[GpioConfig]) -> std::process::ExitCode {
    let outcomes = match drive_safe(configs) {
        Ok(o) => o,
        Err(err) => {
            eprintln!("campeer gpio-safe: gpio configuration: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    for o in &outcomes {
        match &o.result {
            Ok(what) => println!("gpio-safe: {}: {what}", o.control),
            Err(err) => {
                failed += 1;
                eprintln!(
                    "campeer gpio-safe: {}: NOT driven to its safe value: {err}",
                    o.control
                );
            }
        }
    }
    if outcomes.is_empty() {
        println!("gpio-safe: no outputs configured");
    }
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!(
            "campeer gpio-safe: {failed} of {} outputs could not be driven to their safe value",
            outcomes.len()
        );
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output, low at start and when safe.
    fn mock_output(name: &str, line: &str) -> GpioConfig {
        GpioConfig {
            name: name.into(),
            line: line.into(),
            direction: Direction::Output,
            initial: false,
            active_low: false,
            safe: false,
            bias: Bias::AsIs,
            edge: Default::default(),
            debounce_ms: 20,
            max_on_ms: None,
            revert_on_end: false,
        }
    }

    #[test]
    fn drive_safe_reports_every_output_and_skips_inputs() {
        let mut out = mock_output("sim", "mock:sim");
        out.initial = true;
        let mut missing = out.clone();
        missing.name = "missing".into();
        missing.line = "NO_SUCH_LINE_ANYWHERE".into();
        let mut input = out.clone();
        input.name = "door".into();
        input.line = "mock:door".into();
        input.direction = Direction::Input;
        out.max_on_ms = Some(10);
        let got = drive_safe(&[out, missing, input]).expect("valid configuration");
        assert_eq!(got.len(), 2, "inputs are not touched: {got:?}");
        assert_eq!(got[0].control, "sim");
        assert!(
            got[0]
                .result
                .as_ref()
                .is_ok_and(|w| w.contains("simulated")),
            "{got:?}"
        );
        assert_eq!(got[1].control, "missing");
        let err = got[1].result.as_ref().expect_err("no such line");
        // No chips here, or chips without that line: either way, named.
        assert!(err.to_string().contains("\"missing\""), "{err}");
    }

    #[test]
    fn mock_lines_of_one_name_are_a_wire_from_the_output_to_its_inputs() {
        let out = mock_output("gate", "mock:wire");
        let mut sense = out.clone();
        sense.name = "sense".into();
        sense.direction = Direction::Input;
        let mut other = sense.clone();
        other.name = "other".into();
        other.line = "mock:elsewhere".into();
        // The input first: the output's level still reaches it.
        let bank = open_bank(&[sense, out, other]).expect("mock bank");
        assert!(!bank.get("sense").unwrap());
        bank.set("gate", true).unwrap();
        assert!(bank.get("sense").unwrap());
        assert!(!bank.get("other").unwrap(), "another wire is not driven");
        bank.set("gate", false).unwrap();
        assert!(!bank.get("sense").unwrap());
    }

    #[test]
    fn chip_paths_sort_numerically_and_ignore_others() {
        let dir = std::env::temp_dir().join(format!("campeer-cdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for name in ["gpiochip10", "gpiochip2", "gpiochipx", "tty0", "gpiochip0"] {
            std::fs::write(dir.join(name), b"").expect("touch");
        }
        let names: Vec<String> = chip_paths(&dir)
            .expect("listable")
            .iter()
            .map(|p| chip_name(p))
            .collect();
        assert_eq!(names, ["gpiochip0", "gpiochip2", "gpiochip10"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_chips_are_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("campeer-cdev-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = find_line_in(&dir, &LineSpec::Name("GPIO17".into())).expect_err("no chips");
        assert!(matches!(err, LineError::NoChips), "{err}");
        let spec = LineSpec::parse("gpiochip7:3").expect("valid spec");
        let err = find_line_in(&dir, &spec).expect_err("no such chip");
        assert!(err.to_string().contains("gpiochip7"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bias_flags_are_the_kernel_bits() {
        let mut config = GpioConfig {
            name: "door".into(),
            line: "GPIO27".into(),
            direction: Direction::Input,
            initial: false,
            active_low: true,
            safe: false,
            bias: Bias::PullUp,
            edge: Default::default(),
            debounce_ms: 20,
            max_on_ms: None,
            revert_on_end: false,
        };
        let bits = |c: &GpioConfig| request_flags(c).bits();
        assert_eq!(bits(&config), 1 | (1 << 5));
        config.bias = Bias::PullDown;
        assert_eq!(bits(&config), 1 | (1 << 6));
        config.bias = Bias::Disabled;
        assert_eq!(bits(&config), 1 | (1 << 7));
        config.bias = Bias::AsIs;
        assert_eq!(bits(&config), 1);
        // Never the kernel's ACTIVE_LOW (bit 2): GpioBank applies it.
        config.direction = Direction::Output;
        assert_eq!(bits(&config), 2);
    }
}
