#![no_main]
use campeer::signaling::messages::{parse_device_message, parse_viewer_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_viewer_message(data) {
        // Whatever parses must survive a round trip.
        assert_eq!(parse_viewer_message(m.to_json().as_bytes()).ok(), Some(m));
    }
    let _ = parse_device_message(data);
});
