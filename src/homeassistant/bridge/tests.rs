use super::*;
use crate::homeassistant::HaControl;

fn disc() -> Discovery {
    Discovery::new(
        &HomeAssistantConfig::default(),
        "campeer/cam1",
        "cam1",
        "1.2.3",
        vec![HaControl {
            name: "gate".into(),
            output: true,
        }],
        false,
    )
}

const SET: &str = "campeer/cam1/ha/gate/set";
const PULSE: &str = "campeer/cam1/ha/gate/pulse";

fn on() -> Command {
    Command::Set {
        name: "gate".into(),
        value: true,
    }
}

#[test]
fn only_a_control_key_commands() {
    let d = disc();
    let mut bucket = TokenBucket::new(COMMAND_RATE, COMMAND_RATE);
    let mut v =
        |role, topic, payload: &[u8]| verdict(&d, role, topic, payload, false, &mut bucket, 0);
    assert_eq!(v(Some(Role::Control), SET, b"ON"), Verdict::Run(on()));
    assert_eq!(v(Some(Role::View), SET, b"ON"), Verdict::Refused(on()));
    assert_eq!(v(None, SET, b"ON"), Verdict::Refused(on()));
    let press = Command::Pulse {
        name: "gate".into(),
        ms: 500,
    };
    assert_eq!(
        v(Some(Role::View), PULSE, b"PRESS"),
        Verdict::Refused(press.clone())
    );
    assert_eq!(v(Some(Role::Control), PULSE, b"PRESS"), Verdict::Run(press));
    // Junk stays junk, whatever the role.
    assert_eq!(v(Some(Role::Control), SET, b"MAYBE"), Verdict::NotACommand);
    assert_eq!(v(Some(Role::View), SET, b"MAYBE"), Verdict::NotACommand);
}

#[test]
fn retained_commands_are_never_run_and_cost_no_token() {
    let d = disc();
    let mut bucket = TokenBucket::new(1, 1);
    let role = Some(Role::Control);
    for _ in 0..5 {
        assert_eq!(
            verdict(&d, role, SET, b"ON", true, &mut bucket, 0),
            Verdict::Retained
        );
    }
    assert_eq!(
        verdict(&d, role, SET, b"ON", false, &mut bucket, 0),
        Verdict::Run(on())
    );
}

#[test]
fn commands_beyond_the_rate_are_dropped_refused_or_not() {
    let d = disc();
    let mut bucket = TokenBucket::new(COMMAND_RATE, COMMAND_RATE);
    let mut now = 0;
    let mut count = |role, now| {
        (0..100)
            .filter(|_| {
                !matches!(
                    verdict(&d, role, SET, b"ON", false, &mut bucket, now),
                    Verdict::RateLimited
                )
            })
            .count()
    };
    assert_eq!(count(Some(Role::View), now), COMMAND_RATE as usize);
    now += 1_000_000;
    assert_eq!(count(Some(Role::Control), now), COMMAND_RATE as usize);
    now += 100_000;
    assert_eq!(count(Some(Role::Control), now), 1);
}

#[test]
fn refusals_are_logged_once_per_period_with_a_count() {
    let mut p = LogPacer::new(REFUSAL_LOG_EVERY_US);
    assert_eq!(p.due(5), Some(0), "the first at once");
    for t in 1..=9 {
        assert_eq!(p.due(5 + t * 1_000_000), None, "at {t} s");
    }
    assert_eq!(p.due(5 + REFUSAL_LOG_EVERY_US), Some(9));
    assert_eq!(p.due(6 + REFUSAL_LOG_EVERY_US), None);
    assert_eq!(p.due(5 + 3 * REFUSAL_LOG_EVERY_US), Some(1));
}

#[test]
fn role_names_for_the_log() {
    assert_eq!(role_name(Some(Role::Control)), "control");
    assert_eq!(role_name(Some(Role::View)), "view");
    assert_eq!(role_name(None), "none");
}
