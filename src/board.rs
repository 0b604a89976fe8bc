//! Board profiles (board/*.toml), built into the binary: a board's camera,
//! microphone, picture size its CPU can encode, GPIO line names and session
//! limit. `campeer run --board rpi4` (or `board = "rpi4"` in the config
//! file) uses one as the base that the file and the flags lay over.

/// Every built-in profile: (name, TOML text).
pub const BOARDS: &[(&str, &str)] = &[
    ("rpi-zero2w", include_str!("../board/rpi-zero2w.toml")),
    ("rpi3", include_str!("../board/rpi3.toml")),
    ("rpi4", include_str!("../board/rpi4.toml")),
    ("rpi5", include_str!("../board/rpi5.toml")),
    ("rpi-cam-v2", include_str!("../board/rpi-cam-v2.toml")),
    ("rpi-cam-v3", include_str!("../board/rpi-cam-v3.toml")),
    ("rpi-cam-hq", include_str!("../board/rpi-cam-hq.toml")),
    ("qemu-raspi3b", include_str!("../board/qemu-raspi3b.toml")),
    ("qemu-raspi2b", include_str!("../board/qemu-raspi2b.toml")),
];

/// The profile called `name`.
pub fn profile(name: &str) -> Option<&'static str> {
    BOARDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The names of all profiles, for error messages.
pub fn names() -> Vec<&'static str> {
    BOARDS.iter().map(|(n, _)| *n).collect()
}

/// Lays `over` onto `base`: tables merge key by key, anything else in
/// `over` (values, arrays such as `[[gpio]]`) replaces what `base` had.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_profile_is_a_valid_config() {
        for (name, text) in BOARDS {
            let c = Config::from_toml_str(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn merge_replaces_values_and_arrays_and_merges_tables() {
        let mut base: toml::Table =
            toml::from_str("a = 1\n[video]\nwidth = 640\nfps = 30\n[[gpio]]\nname = \"x\"\n")
                .unwrap();
        let over: toml::Table =
            toml::from_str("a = 2\n[video]\nfps = 15\n[[gpio]]\nname = \"y\"\n").unwrap();
        merge(&mut base, over);
        assert_eq!(base["a"].as_integer(), Some(2));
        assert_eq!(base["video"]["width"].as_integer(), Some(640));
        assert_eq!(base["video"]["fps"].as_integer(), Some(15));
        let gpio = base["gpio"].as_array().unwrap();
        assert_eq!(gpio.len(), 1);
        assert_eq!(gpio[0]["name"].as_str(), Some("y"));
    }

    #[test]
    fn unknown_boards_are_none() {
        assert!(profile("rpi4").is_some());
        assert!(profile("rpi9").is_none());
        assert!(names().contains(&"qemu-raspi3b"));
    }
}

#[cfg(test)]
mod layering_tests {
    use crate::config::Config;

    #[test]
    fn a_file_lays_over_its_board() {
        let dir = std::env::temp_dir().join(format!("campeer-board-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "board = \"rpi4\"\ndevice_id = \"porch\"\n[video]\nfps = 10\n",
        )
        .unwrap();
        let c = Config::load_layered(Some(&path), None).unwrap();
        assert_eq!(c.board.as_deref(), Some("rpi4"));
        assert_eq!(c.device_id, "porch");
        assert_eq!(c.video.fps, 10);
        // Kept from the profile.
        assert_eq!((c.video.width, c.video.height), (1280, 720));
        assert!(c.gpio.iter().any(|g| g.line == "GPIO17"));
        // --board wins over the file's key.
        let c = Config::load_layered(Some(&path), Some("rpi-zero2w")).unwrap();
        assert_eq!(c.board.as_deref(), Some("rpi-zero2w"));
        assert!(Config::load_layered(Some(&path), Some("nope")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
