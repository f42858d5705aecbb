//! INVITE client transaction over UDP: Timer A doubles (T1, 2T1, 4T1, … uncapped) until Timer B
//! (64*T1) times the transaction out; a provisional stops both; reliable transports never
//! retransmit.

#[path = "transaction_support.rs"]
mod support;

use std::time::Duration;

use huddle_sip::transaction::{
    ClientKey, Event, LayerConfig, State, Timer, TimerConfig, TransactionKey,
};
use support::*;

#[test]
fn timer_a_doubles_until_timer_b() {
    let t0 = origin();
    let mut l = layer();
    let key = l
        .send_request(invite("z9hG4bKa1"), "bob", false, t0)
        .unwrap();
    let first = transmits(&mut l);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].to, "bob");
    assert_eq!(first[0].key, Some(TransactionKey::Client(key)));
    assert_eq!(l.state(key), Some(State::Calling));

    let ticks = run_timers(&mut l, t0, ms(t0, 60_000));
    // 0.5, 1, 2, 4, 8, 16 s intervals.
    assert_eq!(
        transmit_times(&ticks),
        [500, 1_500, 3_500, 7_500, 15_500, 31_500]
    );
    for t in ticks.iter().flat_map(|t| &t.transmits) {
        assert_eq!(
            t.payload, first[0].payload,
            "retransmission is byte-identical"
        );
    }
    let last = ticks.last().unwrap();
    assert_eq!(last.at_ms, 32_000);
    assert!(matches!(
        last.events.as_slice(),
        [
            Event::Timeout { key: TransactionKey::Client(k), timer: Timer::B },
            Event::Terminated { key: TransactionKey::Client(k2) },
        ] if *k == key && *k2 == key
    ));
    assert_eq!(l.state(key), None);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn timers_follow_the_configured_t1() {
    let t0 = origin();
    let mut l = layer_with(LayerConfig {
        timers: TimerConfig {
            t1: Duration::from_millis(100),
            ..TimerConfig::default()
        },
        ..LayerConfig::default()
    });
    let key = l
        .send_request(invite("z9hG4bKa2"), "bob", false, t0)
        .unwrap();
    transmits(&mut l);
    let ticks = run_timers(&mut l, t0, ms(t0, 60_000));
    assert_eq!(transmit_times(&ticks), [100, 300, 700, 1_500, 3_100, 6_300]);
    let last = ticks.last().unwrap();
    assert_eq!(last.at_ms, 6_400, "Timer B = 64*T1");
    assert!(matches!(
        last.events[0],
        Event::Timeout { key: TransactionKey::Client(k), timer: Timer::B } if k == key
    ));
}

#[test]
fn provisional_stops_timer_a_and_timer_b() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKa3");
    let key = l.send_request(inv.clone(), "bob", false, t0).unwrap();
    transmits(&mut l);
    let ticks = run_timers(&mut l, t0, ms(t0, 1_000));
    assert_eq!(transmit_times(&ticks), [500]);

    l.receive(
        response_msg(&inv, 180, "Ringing"),
        "bob",
        false,
        ms(t0, 1_200),
    );
    let ev = events(&mut l);
    assert!(matches!(
        ev.as_slice(),
        [Event::Response { key: k, msg }] if *k == key && msg.status() == Some(180)
    ));
    assert_eq!(l.state(key), Some(State::Proceeding));
    // Proceeding runs no timer: the TU (CANCEL, a proxy's Timer C) decides.
    assert_eq!(l.poll_timeout(), None);
    assert!(run_timers(&mut l, t0, ms(t0, 120_000)).is_empty());
    assert!(transmits(&mut l).is_empty());

    // Further provisionals are passed up too.
    l.receive(
        response_msg(&inv, 183, "Session Progress"),
        "bob",
        false,
        ms(t0, 2_000),
    );
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Response { .. }]
    ));
}

#[test]
fn reliable_transport_never_retransmits() {
    let t0 = origin();
    let mut l = layer();
    let key: ClientKey = l
        .send_request(invite("z9hG4bKa4"), "bob", true, t0)
        .unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)), "only Timer B runs");
    let ticks = run_timers(&mut l, t0, ms(t0, 60_000));
    assert!(transmit_times(&ticks).is_empty());
    assert_eq!(ticks.len(), 1);
    assert!(matches!(
        ticks[0].events[0],
        Event::Timeout { key: TransactionKey::Client(k), timer: Timer::B } if k == key
    ));
}

#[test]
fn late_driver_fires_once_per_call() {
    // A driver that wakes late must not get a burst of retransmissions.
    let t0 = origin();
    let mut l = layer();
    l.send_request(invite("z9hG4bKa5"), "bob", false, t0)
        .unwrap();
    transmits(&mut l);
    l.handle_timeout(ms(t0, 5_000));
    assert_eq!(transmits(&mut l).len(), 1);
    // The next interval counts from when it fired.
    assert_eq!(l.poll_timeout(), Some(ms(t0, 6_000)));
    l.handle_timeout(ms(t0, 40_000));
    let ev = events(&mut l);
    assert!(matches!(
        ev[0],
        Event::Timeout {
            timer: Timer::B,
            ..
        }
    ));
    assert!(transmits(&mut l).is_empty(), "B wins over a due A");
}
