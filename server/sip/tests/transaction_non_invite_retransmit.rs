//! Non-INVITE client transaction: Timer E doubles up to T2, Timer F times out at 64*T1, a
//! provisional switches E to T2, a final response moves to Completed until Timer K.

#[path = "transaction_support.rs"]
mod support;

use huddle_sip::transaction::{Event, State, Timer, TransactionKey};
use support::*;

#[test]
fn timer_e_caps_at_t2_and_timer_f_times_out() {
    let t0 = origin();
    let mut l = layer();
    let key = l
        .send_request(request("OPTIONS", "z9hG4bKe1", "c-e1"), "bob", false, t0)
        .unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.state(key), Some(State::Trying));
    let ticks = run_timers(&mut l, t0, ms(t0, 60_000));
    // 0.5, 1, 2, 4, then T2 = 4 s until F.
    assert_eq!(
        transmit_times(&ticks),
        [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    let last = ticks.last().unwrap();
    assert_eq!(last.at_ms, 32_000);
    assert!(matches!(
        last.events.as_slice(),
        [
            Event::Timeout { key: TransactionKey::Client(k), timer: Timer::F },
            Event::Terminated { .. },
        ] if *k == key
    ));
    assert!(l.is_empty());
}

#[test]
fn provisional_switches_timer_e_to_t2() {
    let t0 = origin();
    let mut l = layer();
    let req = request("REGISTER", "z9hG4bKe2", "c-e2");
    let key = l.send_request(req.clone(), "registrar", false, t0).unwrap();
    transmits(&mut l);
    l.receive(
        response_msg(&req, 100, "Trying"),
        "registrar",
        false,
        ms(t0, 200),
    );
    assert!(matches!(events(&mut l).as_slice(), [Event::Response { key: k, .. }] if *k == key));
    assert_eq!(l.state(key), Some(State::Proceeding));
    let ticks = run_timers(&mut l, t0, ms(t0, 60_000));
    // The pending E (0.5 s) still fires, then every T2; F still ends it at 32 s.
    assert_eq!(
        transmit_times(&ticks),
        [500, 4_500, 8_500, 12_500, 16_500, 20_500, 24_500, 28_500]
    );
    assert!(matches!(
        ticks.last().unwrap().events[0],
        Event::Timeout {
            timer: Timer::F,
            ..
        }
    ));
}

#[test]
fn final_response_completes_and_timer_k_terminates() {
    let t0 = origin();
    let mut l = layer();
    let req = request("OPTIONS", "z9hG4bKe3", "c-e3");
    let key = l.send_request(req.clone(), "bob", false, t0).unwrap();
    transmits(&mut l);
    let ticks = run_timers(&mut l, t0, ms(t0, 1_000));
    assert_eq!(
        ticks
            .iter()
            .flat_map(|t| t.transmits.iter().map(|t| t.payload.clone()))
            .collect::<Vec<_>>(),
        [req.raw().clone()],
        "Timer E re-sent the request it keeps"
    );
    assert_eq!(l.request_bytes(key), Some(req.raw()));
    assert!(
        l.request(key).is_none(),
        "a non-INVITE keeps only its bytes"
    );

    l.receive(response_msg(&req, 200, "OK"), "bob", false, ms(t0, 1_000));
    let ev = events(&mut l);
    assert!(
        matches!(ev.as_slice(), [Event::Response { key: k, msg }] if *k == key && msg.status() == Some(200))
    );
    assert_eq!(l.state(key), Some(State::Completed));
    // Completed keeps only what absorbing retransmissions needs: not the request.
    assert!(l.request_bytes(key).is_none());
    assert_eq!(l.poll_timeout(), Some(ms(t0, 6_000)), "Timer K = T4");

    // Retransmitted final responses are absorbed.
    l.receive(response_msg(&req, 200, "OK"), "bob", false, ms(t0, 2_000));
    assert!(events(&mut l).is_empty());
    assert!(transmits(&mut l).is_empty());

    let ticks = run_timers(&mut l, t0, ms(t0, 60_000));
    assert!(
        transmit_times(&ticks).is_empty(),
        "no retransmission in Completed"
    );
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0].at_ms, 6_000);
    assert!(matches!(
        ticks[0].events.as_slice(),
        [Event::Terminated { key: TransactionKey::Client(k) }] if *k == key
    ));
}

#[test]
fn reliable_transport_skips_e_and_k() {
    let t0 = origin();
    let mut l = layer();
    let req = request("OPTIONS", "z9hG4bKe4", "c-e4");
    let key = l.send_request(req.clone(), "bob", true, t0).unwrap();
    transmits(&mut l);
    assert_eq!(l.poll_timeout(), Some(ms(t0, 32_000)), "only Timer F");
    l.receive(
        response_msg(&req, 404, "Not Found"),
        "bob",
        true,
        ms(t0, 300),
    );
    let ev = events(&mut l);
    assert!(matches!(
        ev.as_slice(),
        [Event::Response { .. }, Event::Terminated { key: TransactionKey::Client(k) }] if *k == key
    ));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}
