#![no_main]
use campeer::rtc::offer::OfferSummary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = OfferSummary::parse(text);
    }
});
