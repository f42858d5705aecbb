//! INVITE server transaction after the TU's final response: Timer G retransmits a 3xx–6xx
//! (capped at T2) until the ACK, Timer H gives up, ACK → Confirmed → Timer I → Terminated; a 2xx
//! moves to Accepted (RFC 6026) until Timer L. Reliable transports retransmit nothing and I is
//! zero.

#[path = "transaction_support.rs"]
mod support;

use huddle_sip::transaction::{Event, ServerKey, State, Timer, TransactionError, TransactionKey};
use std::time::Instant;

use support::*;

fn start(l: &mut Layer, inv: &huddle_sip::Message, reliable: bool, t0: Instant) -> ServerKey {
    l.receive(inv.clone(), "alice", reliable, t0);
    let key = match events(l).as_slice() {
        [Event::Request { key, .. }] => *key,
        other => panic!("expected a Request, got {other:?}"),
    };
    transmits(l); // 100 Trying
    key
}

#[test]
fn timer_g_doubles_to_t2_until_timer_h() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKg1");
    let key = start(&mut l, &inv, false, t0);
    let busy = response(&inv, 486, "Busy Here");
    l.respond(key, busy.clone(), t0).unwrap();
    assert_eq!(transmits(&mut l)[0].payload, busy);
    assert_eq!(l.state(key), Some(State::Completed));

    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert_eq!(
        transmit_times(&ticks),
        [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert!(ticks
        .iter()
        .flat_map(|t| &t.transmits)
        .all(|t| t.payload == busy));
    let last = ticks.last().unwrap();
    assert_eq!(last.at_ms, 32_000);
    assert!(matches!(
        last.events.as_slice(),
        [
            Event::Timeout { key: TransactionKey::Server(k), timer: Timer::H },
            Event::Terminated { key: TransactionKey::Server(k2) },
        ] if *k == key && *k2 == key
    ));
    assert!(l.is_empty());
}

#[test]
fn ack_confirms_then_timer_i_terminates() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKg2");
    let key = start(&mut l, &inv, false, t0);
    let busy = response_msg(&inv, 486, "Busy Here");
    l.respond_message(key, &busy, t0).unwrap();
    transmits(&mut l);
    assert_eq!(transmit_times(&run_timers(&mut l, t0, ms(t0, 600))), [500]);

    // An INVITE retransmission in Completed gets the final again.
    l.receive(inv.clone(), "alice", false, ms(t0, 650));
    assert_eq!(transmits(&mut l)[0].payload, *busy.raw());

    l.receive(ack_for(&inv, &busy), "alice", false, ms(t0, 700));
    assert!(events(&mut l).is_empty());
    assert_eq!(l.state(key), Some(State::Confirmed));
    assert_eq!(l.poll_timeout(), Some(ms(t0, 5_700)), "Timer I = T4");
    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert!(transmit_times(&ticks).is_empty(), "G stopped by the ACK");
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0].at_ms, 5_700);
    assert!(matches!(
        ticks[0].events.as_slice(),
        [Event::Terminated { .. }]
    ));
}

#[test]
fn reliable_transport_no_retransmits_and_zero_timer_i() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKg3");
    let key = start(&mut l, &inv, true, t0);
    let busy = response_msg(&inv, 603, "Decline");
    l.respond_message(key, &busy, t0).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)), "only Timer H");
    l.receive(ack_for(&inv, &busy), "alice", true, ms(t0, 50));
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Terminated { key: TransactionKey::Server(k) }] if *k == key
    ));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn reliable_transport_without_ack_times_out_at_h() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKg4");
    let key = start(&mut l, &inv, true, t0);
    l.respond(key, response(&inv, 480, "Temporarily Unavailable"), t0)
        .unwrap();
    transmits(&mut l);
    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert!(transmit_times(&ticks).is_empty());
    assert!(matches!(
        ticks[0].events[0],
        Event::Timeout {
            timer: Timer::H,
            ..
        }
    ));
}

#[test]
fn two_xx_moves_to_accepted_until_timer_l() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKg5");
    let key = start(&mut l, &inv, false, t0);
    let ok = response(&inv, 200, "OK");
    l.respond(key, ok.clone(), t0).unwrap();
    transmits(&mut l);
    assert_eq!(l.state(key), Some(State::Accepted));

    // INVITE retransmissions are absorbed: the UAS core retransmits its 2xx itself.
    l.receive(inv.clone(), "alice", false, ms(t0, 500));
    assert!(transmits(&mut l).is_empty());
    assert!(events(&mut l).is_empty());
    // The core's 2xx retransmission passes through the transaction.
    l.respond(key, ok.clone(), ms(t0, 500)).unwrap();
    assert_eq!(transmits(&mut l)[0].payload, ok);
    // A non-2xx after a 2xx is refused.
    assert_eq!(
        l.respond(key, response(&inv, 486, "Busy"), ms(t0, 600)),
        Err(TransactionError::FinalResponseSent)
    );

    // An ACK matching the transaction goes to the TU (RFC 6026 §8.7) ...
    let ack_same_branch = request("ACK", "z9hG4bKg5", "call-1");
    l.receive(ack_same_branch, "alice", false, ms(t0, 700));
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Ack { invite: Some(k), .. }] if *k == key
    ));
    // ... and so does the usual end-to-end ACK with its own branch, matching nothing.
    l.receive(
        request("ACK", "z9hG4bKg5-ack", "call-1"),
        "alice",
        false,
        ms(t0, 800),
    );
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Ack { invite: None, .. }]
    ));
    assert_eq!(l.state(key), Some(State::Accepted));

    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0].at_ms, 32_000, "Timer L = 64*T1");
    assert!(transmit_times(&ticks).is_empty());
    assert_eq!(
        l.respond(key, ok, ms(t0, 33_000)),
        Err(TransactionError::UnknownTransaction)
    );
}

#[test]
fn two_xx_on_reliable_transport_still_waits_for_timer_l() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKg6");
    let key = start(&mut l, &inv, true, t0);
    l.respond(key, response(&inv, 200, "OK"), t0).unwrap();
    assert_eq!(l.state(key), Some(State::Accepted));
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)));
}
