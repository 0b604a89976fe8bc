//! Configuration of the named GPIO controls (`[[gpio]]`) and of the access
//! keys that sign offers (`[access]`, docs/protocol.md#authorization-protocol-version-2).
//!
//! Invariants established by [`validate`]: control names and key ids match
//! `[a-z0-9_-]{1,32}` and are unique, every `line` parses as a
//! [`LineSpec`], and every key has exactly one secret source; an inline
//! secret has at least [`MIN_SECRET_LEN`] bytes (a `secret_file` is checked
//! when it is read, by `signaling::auth::OfferAuthorizer`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Shortest accepted HMAC secret, bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest accepted control name or key id, bytes.
pub const MAX_NAME_LEN: usize = 32;

/// Longest accepted debounce time, milliseconds.
pub const MAX_DEBOUNCE_MS: u64 = 10_000;

/// Accepted `max_on_ms`: 1 ms to 24 hours.
pub const MAX_ON_MS: std::ops::RangeInclusive<u64> = 1..=86_400_000;

/// One named GPIO control, `[[gpio]]` in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// The only name a viewer can use for this control, `[a-z0-9_-]{1,32}`.
    pub name: String,
    /// The line: a name as the kernel reports it (`GPIO17`, which finds the
    /// right chip on every Pi including the Pi 5), or `chip:offset`
    /// (`gpiochip0:17` or `0:17`).
    pub line: String,
    /// `input` or `output`.
    pub direction: Direction,
    /// Outputs: the logical value driven at start-up. Ignored for inputs.
    #[serde(default)]
    pub initial: bool,
    /// The line is active when electrically low: every value a viewer sees
    /// or sends is logical (true = active).
    #[serde(default)]
    pub active_low: bool,
    /// Outputs: the logical value driven on shutdown. Ignored for inputs.
    #[serde(default)]
    pub safe: bool,
    /// Inputs: the bias resistor to request (needs Linux 5.5 or later).
    #[serde(default)]
    pub bias: Bias,
    /// Inputs: which debounced logical edges are notified as `gpio.changed`.
    #[serde(default)]
    pub edge: Edge,
    /// Inputs: a new level counts once it has been stable this long.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Outputs: the longest time the output may stay away from `safe`,
    /// whoever drove it; then it returns to `safe`. Pulses are cut to it.
    /// Unset: no limit.
    #[serde(default)]
    pub max_on_ms: Option<u64>,
    /// Outputs: when the session that last drove the output ends (bye,
    /// failure, timeout, shutdown), the output returns to `safe`.
    #[serde(default)]
    pub revert_on_end: bool,
}

fn default_debounce_ms() -> u64 {
    20
}

/// Whether a control is read or driven.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Read by the device; viewers may get it and are notified of edges.
    Input,
    /// Driven by the device; `control` viewers may set, toggle and pulse it.
    Output,
}

impl Direction {
    /// The wire name, as in presence and `gpio.list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// Bias resistor of an input line.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Leave the bias as the firmware or device tree set it.
    #[default]
    AsIs,
    /// Explicitly no bias.
    Disabled,
    /// Pull up.
    PullUp,
    /// Pull down.
    PullDown,
}

/// Which logical edges of an input are notified.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// Both edges.
    #[default]
    Both,
    /// Inactive to active only.
    Rising,
    /// Active to inactive only.
    Falling,
    /// No notifications; the input is still readable with `gpio.get`.
    None,
}

impl Edge {
    /// Whether a debounced logical change to `value` is notified.
    pub fn notifies(self, value: bool) -> bool {
        match self {
            Edge::Both => true,
            Edge::Rising => value,
            Edge::Falling => !value,
            Edge::None => false,
        }
    }
}

/// What a session may do. `Control` > `View`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watch, and call read-only methods.
    View,
    /// Also change outputs.
    Control,
}

impl Role {
    /// The wire name, as signed in offers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Control => "control",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    /// Exactly `view` or `control`, as on the wire.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "view" => Ok(Role::View),
            "control" => Ok(Role::Control),
            _ => Err(()),
        }
    }
}

/// Offer authorization, `[access]` (docs/protocol.md#authorization-protocol-version-2). The device is
/// `signed` unless `open = true`; with no key anywhere, the first start
/// creates an admin key in the state directory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Open access: anyone who can reach the broker may watch and control.
    /// Only for isolated networks; the page shows a warning banner.
    pub open: bool,
    /// Where generated keys live (`keys.toml`). Default: systemd's
    /// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/campeer`.
    pub state_dir: Option<PathBuf>,
    /// How long after start the page may claim the unclaimed admin key
    /// (headless first boot), seconds; 0 turns claiming off.
    pub claim_window_secs: u64,
    /// The keys viewers may sign offers with, `[[access.keys]]`.
    pub keys: Vec<AccessKey>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            open: false,
            state_dir: None,
            claim_window_secs: 600,
            keys: Vec::new(),
        }
    }
}

/// One access key, `[[access.keys]]`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// The id viewers send as `auth.key`, `[a-z0-9][a-z0-9_-]{0,62}`.
    pub id: String,
    /// The HMAC secret, at least 16 bytes of UTF-8 text. Exactly one of
    /// `secret` and `secret_file` is set.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the secret (at least 16 bytes; one trailing newline is
    /// ignored), so the configuration file itself may be world-readable.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The highest role an offer signed with this key may claim.
    pub role: Role,
}

// Hand-written so a logged or printed configuration never shows a secret.
impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("role", &self.role)
            .finish()
    }
}

/// Where a `line` is: by kernel name, or by chip and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineSpec {
    /// A line name as the kernel reports it, searched across every chip.
    Name(String),
    /// `gpiochipN:offset` or `N:offset`; `chip` is the device name
    /// (`gpiochipN`).
    Offset {
        /// `gpiochipN`.
        chip: String,
        /// Line offset within the chip.
        offset: u32,
    },
    /// `mock:NAME`: a simulated line with no hardware behind it, for demos
    /// and tests on machines without GPIO. Never use it on a real board.
    /// Controls naming the same mock line share it, like a jumper wire:
    /// one output and any number of inputs, which read what it drives.
    Mock(String),
}

impl LineSpec {
    /// Parses a configured `line`. `None` for an empty or malformed value
    /// (e.g. `gpiochip0:x`, `gpiochip:3`).
    pub fn parse(line: &str) -> Option<LineSpec> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        if let Some(name) = line.strip_prefix("mock:") {
            return (!name.is_empty()).then(|| LineSpec::Mock(name.to_owned()));
        }
        if let Some((chip, offset)) = line.rsplit_once(':') {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let chip_number = chip.strip_prefix("gpiochip").unwrap_or(chip);
            if chip.starts_with("gpiochip") || digits(chip) {
                if !digits(chip_number) || !digits(offset) {
                    return None;
                }
                let offset = offset.parse().ok()?;
                let number: u32 = chip_number.parse().ok()?;
                return Some(LineSpec::Offset {
                    chip: format!("gpiochip{number}"),
                    offset,
                });
            }
        }
        Some(LineSpec::Name(line.to_owned()))
    }
}

impl fmt::Display for LineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineSpec::Name(name) => write!(f, "line \"{name}\""),
            LineSpec::Offset { chip, offset } => write!(f, "{chip}:{offset}"),
            LineSpec::Mock(name) => write!(f, "simulated line {name:?}"),
        }
    }
}

/// A configuration the control subsystem refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("gpio[{index}]: name {name:?} must match [a-z0-9_-]{{1,32}}")]
    BadControlName { index: usize, name: String },
    #[error("gpio: name {name:?} is used twice")]
    DuplicateControl { name: String },
    #[error("gpio {name:?}: line {line:?} is neither a line name nor chip:offset")]
    BadLine { name: String, line: String },
    #[error("gpio {name:?}: line {line:?} is also used by control {other:?}")]
    DuplicateLine {
        name: String,
        line: String,
        other: String,
    },
    #[error(
        "gpio {name:?}: debounce_ms {debounce_ms} is above {}",
        MAX_DEBOUNCE_MS
    )]
    DebounceTooLong { name: String, debounce_ms: u64 },
    #[error(
        "gpio {name:?}: max_on_ms {max_on_ms} is outside {}..={}",
        MAX_ON_MS.start(),
        MAX_ON_MS.end()
    )]
    BadMaxOn { name: String, max_on_ms: u64 },
    #[error("gpio {name:?}: {key} applies to outputs only")]
    OutputOnly { name: String, key: &'static str },
    #[error("access.keys[{index}]: id {id:?} must match [a-z0-9][a-z0-9_-]{{0,62}}")]
    BadKeyId { index: usize, id: String },
    #[error("access.keys: id {id:?} is used twice")]
    DuplicateKey { id: String },
    #[error("access key {id:?}: set exactly one of secret and secret_file")]
    SecretSource { id: String },
    #[error("access key {id:?}: secret must be at least {} bytes", MIN_SECRET_LEN)]
    SecretTooShort { id: String },
}

/// Whether `name` is a valid control name or key id: `[a-z0-9_-]{1,32}`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `id` is a valid access key id: `[a-z0-9][a-z0-9_-]{0,62}`
/// (docs/protocol.md#authorization-protocol-version-2).
pub fn is_valid_key_id(id: &str) -> bool {
    let b = id.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Checks the `[[gpio]]` list; see the module invariants.
pub fn validate_gpio(gpio: &[GpioConfig]) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, LineSpec, Direction)> = Vec::with_capacity(gpio.len());
    for (index, control) in gpio.iter().enumerate() {
        if !is_valid_name(&control.name) {
            return Err(ConfigError::BadControlName {
                index,
                name: control.name.clone(),
            });
        }
        let Some(spec) = LineSpec::parse(&control.line) else {
            return Err(ConfigError::BadLine {
                name: control.name.clone(),
                line: control.line.clone(),
            });
        };
        if control.debounce_ms > MAX_DEBOUNCE_MS {
            return Err(ConfigError::DebounceTooLong {
                name: control.name.clone(),
                debounce_ms: control.debounce_ms,
            });
        }
        if let Some(max_on_ms) = control.max_on_ms {
            if !MAX_ON_MS.contains(&max_on_ms) {
                return Err(ConfigError::BadMaxOn {
                    name: control.name.clone(),
                    max_on_ms,
                });
            }
        }
        if control.direction == Direction::Input {
            let key = if control.max_on_ms.is_some() {
                Some("max_on_ms")
            } else if control.revert_on_end {
                Some("revert_on_end")
            } else {
                None
            };
            if let Some(key) = key {
                return Err(ConfigError::OutputOnly {
                    name: control.name.clone(),
                    key,
                });
            }
        }
        for (other, other_spec, other_direction) in &seen {
            if *other == control.name {
                return Err(ConfigError::DuplicateControl {
                    name: control.name.clone(),
                });
            }
            // Only identical specs are caught here; `GPIO17` and `0:17` are
            // the same line on a Pi 4, which opening reports as busy. Mock
            // lines of one name are a jumper wire: inputs may share it
            // with one output (which drives what they read).
            let wire = matches!(spec, LineSpec::Mock(_))
                && (control.direction == Direction::Input || *other_direction == Direction::Input);
            if *other_spec == spec && !wire {
                return Err(ConfigError::DuplicateLine {
                    name: control.name.clone(),
                    line: control.line.clone(),
                    other: (*other).to_owned(),
                });
            }
        }
        seen.push((&control.name, spec, control.direction));
    }
    Ok(())
}

impl AccessConfig {
    /// Checks the keys; see the module invariants.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, key) in self.keys.iter().enumerate() {
            if !is_valid_key_id(&key.id) {
                return Err(ConfigError::BadKeyId {
                    index,
                    id: key.id.clone(),
                });
            }
            if self.keys[..index].iter().any(|k| k.id == key.id) {
                return Err(ConfigError::DuplicateKey { id: key.id.clone() });
            }
            match (&key.secret, &key.secret_file) {
                (Some(secret), None) => {
                    if secret.len() < MIN_SECRET_LEN {
                        return Err(ConfigError::SecretTooShort { id: key.id.clone() });
                    }
                }
                (None, Some(_)) => {}
                _ => return Err(ConfigError::SecretSource { id: key.id.clone() }),
            }
        }
        Ok(())
    }

    /// Open access, set explicitly: every session may view and control.
    pub fn is_open(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        gpio: Vec<GpioConfig>,
        #[serde(default)]
        access: AccessConfig,
    }

    fn output(name: &str, line: &str) -> GpioConfig {
        GpioConfig {
            name: name.into(),
            line: line.into(),
            direction: Direction::Output,
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

    fn key(id: &str, secret: Option<&str>, file: Option<&str>) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: secret.map(Into::into),
            secret_file: file.map(Into::into),
            role: Role::Control,
        }
    }

    #[test]
    fn parses_the_issue_example_with_defaults() {
        let doc: Doc = toml::from_str(
            r#"
            [[gpio]]
            name = "gate"
            line = "GPIO17"
            direction = "output"
            initial = false
            active_low = false
            safe = false

            [[gpio]]
            name = "door"
            line = "gpiochip0:27"
            direction = "input"
            bias = "pull-up"
            edge = "falling"

            [[access.keys]]
            id = "phone"
            secret = "0123456789abcdef"
            role = "control"

            [[access.keys]]
            id = "wall"
            secret_file = "/etc/campeer/wall.key"
            role = "view"
            "#,
        )
        .expect("valid document");
        assert_eq!(doc.gpio[0], output("gate", "GPIO17"));
        assert_eq!(doc.gpio[1].bias, Bias::PullUp);
        assert_eq!(doc.gpio[1].edge, Edge::Falling);
        assert_eq!(doc.gpio[1].debounce_ms, 20);
        assert_eq!(doc.access.keys[1].role, Role::View);
        validate_gpio(&doc.gpio).expect("valid gpio");
        doc.access.validate().expect("valid access");
        assert!(!doc.access.is_open());
    }

    #[test]
    fn refuses_unknown_fields_and_values() {
        let unknown = r#"[[gpio]]
            name = "a"
            line = "GPIO1"
            direction = "output"
            colour = "red""#;
        assert!(toml::from_str::<Doc>(unknown).is_err());
        let bad_direction = r#"[[gpio]]
            name = "a"
            line = "GPIO1"
            direction = "both""#;
        assert!(toml::from_str::<Doc>(bad_direction).is_err());
        let bad_role = r#"[[access.keys]]
            id = "a"
            secret = "0123456789abcdef"
            role = "admin""#;
        assert!(toml::from_str::<Doc>(bad_role).is_err());
        let unknown_access = "[access]\nwide_open = true";
        assert!(toml::from_str::<Doc>(unknown_access).is_err());
    }

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Control > Role::View);
        assert_eq!("view".parse(), Ok(Role::View));
        assert_eq!("control".parse(), Ok(Role::Control));
        assert_eq!("Control".parse::<Role>(), Err(()));
        assert_eq!(Role::Control.to_string(), "control");
    }

    #[test]
    fn line_specs() {
        assert_eq!(
            LineSpec::parse("GPIO17"),
            Some(LineSpec::Name("GPIO17".into()))
        );
        let chip0 = Some(LineSpec::Offset {
            chip: "gpiochip0".into(),
            offset: 17,
        });
        assert_eq!(LineSpec::parse("gpiochip0:17"), chip0);
        assert_eq!(LineSpec::parse("0:17"), chip0);
        assert_eq!(LineSpec::parse("gpiochip0:x"), None);
        assert_eq!(LineSpec::parse("gpiochip:3"), None);
        assert_eq!(LineSpec::parse("1:"), None);
        assert_eq!(LineSpec::parse(""), None);
        assert_eq!(LineSpec::parse("  "), None);
        assert_eq!(
            LineSpec::parse("mock:led"),
            Some(LineSpec::Mock("led".into()))
        );
        assert_eq!(LineSpec::parse("mock:"), None);
        // A colon in something that is not a chip is part of a name.
        assert_eq!(
            LineSpec::parse("ID_SD:A"),
            Some(LineSpec::Name("ID_SD:A".into()))
        );
    }

    #[test]
    fn gpio_validation() {
        assert!(validate_gpio(&[]).is_ok());
        assert!(matches!(
            validate_gpio(&[output("Gate", "GPIO1")]),
            Err(ConfigError::BadControlName { index: 0, .. })
        ));
        assert!(matches!(
            validate_gpio(&[output("", "GPIO1")]),
            Err(ConfigError::BadControlName { .. })
        ));
        assert!(matches!(
            validate_gpio(&[output(&"a".repeat(33), "GPIO1")]),
            Err(ConfigError::BadControlName { .. })
        ));
        assert!(validate_gpio(&[output(&"a".repeat(32), "GPIO1")]).is_ok());
        assert!(matches!(
            validate_gpio(&[output("a", "GPIO1"), output("a", "GPIO2")]),
            Err(ConfigError::DuplicateControl { .. })
        ));
        assert!(matches!(
            validate_gpio(&[output("a", "0:1"), output("b", "gpiochip0:1")]),
            Err(ConfigError::DuplicateLine { .. })
        ));
        // A mock line is a jumper wire: one output and inputs may share it.
        let mut door = output("door", "mock:wire");
        door.direction = Direction::Input;
        assert!(validate_gpio(&[output("a", "mock:wire"), door.clone()]).is_ok());
        assert!(matches!(
            validate_gpio(&[output("a", "mock:wire"), output("b", "mock:wire")]),
            Err(ConfigError::DuplicateLine { .. })
        ));
        let mut real = door.clone();
        real.line = "GPIO1".into();
        assert!(matches!(
            validate_gpio(&[output("a", "GPIO1"), real]),
            Err(ConfigError::DuplicateLine { .. })
        ));
        assert!(matches!(
            validate_gpio(&[output("a", "gpiochip0:z")]),
            Err(ConfigError::BadLine { .. })
        ));
        let mut slow = output("a", "GPIO1");
        slow.debounce_ms = MAX_DEBOUNCE_MS + 1;
        assert!(matches!(
            validate_gpio(&[slow]),
            Err(ConfigError::DebounceTooLong { .. })
        ));
    }

    #[test]
    fn max_on_and_revert_on_end() {
        let doc: Doc = toml::from_str(
            r#"
            [[gpio]]
            name = "strike"
            line = "GPIO22"
            direction = "output"
            max_on_ms = 5000
            revert_on_end = true
            "#,
        )
        .expect("valid document");
        assert_eq!(doc.gpio[0].max_on_ms, Some(5000));
        assert!(doc.gpio[0].revert_on_end);
        validate_gpio(&doc.gpio).expect("valid gpio");
        let defaults = output("a", "GPIO1");
        assert_eq!((defaults.max_on_ms, defaults.revert_on_end), (None, false));
        for bad in [0, MAX_ON_MS.end() + 1] {
            let mut c = output("a", "GPIO1");
            c.max_on_ms = Some(bad);
            assert!(matches!(
                validate_gpio(&[c]),
                Err(ConfigError::BadMaxOn { .. })
            ));
        }
        let mut input = output("b", "GPIO2");
        input.direction = Direction::Input;
        input.revert_on_end = true;
        let err = validate_gpio(&[input.clone()]).expect_err("input");
        assert!(err.to_string().contains("revert_on_end"), "{err}");
        input.revert_on_end = false;
        input.max_on_ms = Some(10);
        let err = validate_gpio(&[input]).expect_err("input");
        assert!(err.to_string().contains("max_on_ms"), "{err}");
    }

    #[test]
    fn access_validation() {
        let ok = AccessConfig {
            keys: vec![
                key("phone", Some("0123456789abcdef"), None),
                key("wall", None, Some("/k")),
            ],
            ..AccessConfig::default()
        };
        assert!(ok.validate().is_ok());
        assert!(!AccessConfig::default().is_open(), "signed unless set open");
        let cases = [
            (vec![key("phone", Some("short"), None)], "SecretTooShort"),
            (vec![key("phone", None, None)], "SecretSource"),
            (
                vec![key("phone", Some("0123456789abcdef"), Some("/k"))],
                "SecretSource",
            ),
            (
                vec![key("Phone", Some("0123456789abcdef"), None)],
                "BadKeyId",
            ),
            (
                vec![key("a", None, Some("/k")), key("a", None, Some("/j"))],
                "DuplicateKey",
            ),
        ];
        for (keys, want) in cases {
            let err = AccessConfig {
                keys,
                ..AccessConfig::default()
            }
            .validate()
            .expect_err(want);
            assert!(
                format!("{err:?}").starts_with(want),
                "{err:?} is not {want}"
            );
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let k = key("phone", Some("very-secret-value-123"), None);
        let shown = format!("{k:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
