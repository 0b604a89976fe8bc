#![no_main]
use campeer::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Config::from_toml_str(text, "fuzz.toml") {
        let _ = c.validate();
        let _ = c.to_toml_string();
    }
});
