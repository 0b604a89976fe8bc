//! Housekeeping in simulated time: no clock, no broker, no systemd.

use super::*;

const MS: u64 = 1_000;
const S: u64 = 1_000_000;

fn input(now_us: u64) -> TickInput {
    TickInput {
        now_us,
        media: Health::Ok,
        encode: EncodeTotals::default(),
    }
}

#[test]
fn session_changes_are_coalesced_into_one_presence_per_gap() {
    let mut h = Housekeeping::new(0, None, 0, EncodeTotals::default());
    h.connected(10 * S);
    h.presence_changed();
    // Inside the gap since the connect-time publication: held back.
    assert!(!h.tick(&input(10 * S + 250 * MS)).publish_presence);
    h.presence_changed();
    let due = h.tick(&input(10 * S + 500 * MS));
    assert!(due.publish_presence, "{due:?}");
    // Published once; nothing new: nothing more.
    assert!(!h.tick(&input(10 * S + 750 * MS)).publish_presence);
    assert!(!h.tick(&input(20 * S)).publish_presence);
    // A change long after the last one goes out on the next tick.
    h.presence_changed();
    assert!(h.tick(&input(20 * S + 250 * MS)).publish_presence);
}

#[test]
fn a_change_before_the_first_connection_is_published_on_a_tick() {
    let mut h = Housekeeping::new(0, None, 0, EncodeTotals::default());
    h.presence_changed();
    assert!(h.tick(&input(1)).publish_presence);
}

#[test]
fn connecting_clears_what_was_due() {
    let mut h = Housekeeping::new(0, None, 0, EncodeTotals::default());
    h.presence_changed();
    h.connected(5 * S);
    assert!(!h.tick(&input(6 * S)).publish_presence);
}

#[test]
fn the_watchdog_is_fed_on_its_interval_only_while_media_is_healthy() {
    let mut h = Housekeeping::new(0, Some(2 * S), 0, EncodeTotals::default());
    assert!(!h.tick(&input(S)).ping_watchdog);
    assert!(h.tick(&input(2 * S)).ping_watchdog);
    assert!(!h.tick(&input(3 * S)).ping_watchdog);
    let stalled = TickInput {
        media: Health::CaptureStalled(7 * S),
        ..input(4 * S)
    };
    let a = h.tick(&stalled);
    assert!(!a.ping_watchdog);
    assert_eq!(a.withheld, Some(Health::CaptureStalled(7 * S)));
    // Recovered: the overdue ping goes out on the next healthy tick.
    assert!(h.tick(&input(4 * S + 250 * MS)).ping_watchdog);
}

#[test]
fn without_a_watchdog_nothing_is_pinged_or_withheld() {
    let mut h = Housekeeping::new(0, None, 0, EncodeTotals::default());
    let a = h.tick(&TickInput {
        media: Health::EncoderStalled(9 * S),
        ..input(100 * S)
    });
    assert_eq!(a, TickActions::default());
}

#[test]
fn stats_lines_report_the_rate_since_the_last_line() {
    let start = EncodeTotals {
        frames_encoded: 100,
        total_encode_us: 300_000,
    };
    let mut h = Housekeeping::new(0, None, 10 * S, start);
    assert_eq!(h.tick(&input(9 * S)).stats, None);
    let later = TickInput {
        encode: EncodeTotals {
            frames_encoded: 400,
            total_encode_us: 1_200_000,
        },
        ..input(10 * S)
    };
    let line = h.tick(&later).stats.expect("a stats line at 10 s");
    assert!((line.fps - 30.0).abs() < 1e-9, "{line:?}");
    assert!((line.encode_ms - 3.0).abs() < 1e-9, "{line:?}");
    // The next line counts from this one.
    let next = TickInput {
        encode: EncodeTotals {
            frames_encoded: 550,
            total_encode_us: 1_650_000,
        },
        ..input(20 * S)
    };
    let line = h.tick(&next).stats.expect("a stats line at 20 s");
    assert!((line.fps - 15.0).abs() < 1e-9, "{line:?}");
}

#[test]
fn stats_interval_zero_turns_stats_off() {
    let mut h = Housekeeping::new(0, None, 0, EncodeTotals::default());
    assert_eq!(h.tick(&input(3600 * S)).stats, None);
}
