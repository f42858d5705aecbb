//! INVITE client transaction and final responses: 3xx–6xx are ACKed by the transaction (and
//! the ACK re-sent for retransmitted finals) until Timer D; 2xx moves to Accepted (RFC 6026)
//! where further 2xx are passed up until Timer M.

#[path = "transaction_support.rs"]
mod support;

use huddle_sip::transaction::{Event, State, TransactionKey};
use huddle_sip::Method;
use support::*;

#[test]
fn failure_is_acked_and_the_ack_resent_for_retransmissions() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKc1");
    let key = l.send_request(inv.clone(), "bob", false, t0).unwrap();
    transmits(&mut l);
    l.receive(
        response_msg(&inv, 180, "Ringing"),
        "bob",
        false,
        ms(t0, 100),
    );
    events(&mut l);
    // Proceeding: the request is kept (a CANCEL or the ACK for a failure is built from it).
    assert_eq!(l.request(key).map(|r| r.raw()), Some(inv.raw()));

    l.receive(
        response_msg(&inv, 486, "Busy Here"),
        "bob",
        false,
        ms(t0, 200),
    );
    let ev = events(&mut l);
    assert!(
        matches!(ev.as_slice(), [Event::Response { key: k, msg }] if *k == key && msg.status() == Some(486))
    );
    let acks = transmits(&mut l);
    assert_eq!(acks.len(), 1);
    let ack = parse_bytes(&acks[0].payload);
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri(), inv.request_uri());
    assert_eq!(ack.branch(), Some("z9hG4bKc1"), "same branch as the INVITE");
    assert_eq!(
        ack.to_header().unwrap().tag(),
        Some("bob1"),
        "To tag from the response"
    );
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    assert_eq!(l.state(key), Some(State::Completed));
    // Completed keeps the ACK, not the INVITE it was built from.
    assert!(l.request(key).is_none());

    // The ACK was lost; the server retransmits its final: ACK again, TU not bothered.
    l.receive(
        response_msg(&inv, 486, "Busy Here"),
        "bob",
        false,
        ms(t0, 700),
    );
    assert!(events(&mut l).is_empty());
    assert_eq!(transmits(&mut l)[0].payload, acks[0].payload);

    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0].at_ms, 32_200, "Timer D = 32 s");
    assert!(
        matches!(ticks[0].events.as_slice(), [Event::Terminated { key: TransactionKey::Client(k) }] if *k == key)
    );
}

#[test]
fn failure_on_reliable_transport_terminates_at_once() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKc2");
    let key = l.send_request(inv.clone(), "bob", true, t0).unwrap();
    transmits(&mut l);
    l.receive(
        response_msg(&inv, 404, "Not Found"),
        "bob",
        true,
        ms(t0, 100),
    );
    assert_eq!(transmits(&mut l).len(), 1, "the ACK");
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Response { .. }, Event::Terminated { key: TransactionKey::Client(k) }] if *k == key
    ));
    assert!(l.is_empty());
}

#[test]
fn success_moves_to_accepted_and_passes_every_2xx_until_timer_m() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKc3");
    let key = l.send_request(inv.clone(), "proxy", false, t0).unwrap();
    transmits(&mut l);
    l.receive(response_msg(&inv, 200, "OK"), "proxy", false, ms(t0, 300));
    assert!(matches!(events(&mut l).as_slice(), [Event::Response { key: k, .. }] if *k == key));
    assert!(
        transmits(&mut l).is_empty(),
        "the TU ACKs a 2xx, not the transaction"
    );
    assert_eq!(l.state(key), Some(State::Accepted));
    assert!(l.request(key).is_none(), "Accepted keeps no request");

    // A retransmission and a 2xx from another fork both reach the TU.
    l.receive(response_msg(&inv, 200, "OK"), "proxy", false, ms(t0, 800));
    let forked =
        parse(&String::from_utf8_lossy(&response(&inv, 200, "OK")).replace("tag=bob1", "tag=bob2"));
    l.receive(forked, "proxy", false, ms(t0, 900));
    let ev = events(&mut l);
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| matches!(e, Event::Response { key: k, .. } if *k == key)));
    // Failures and provisionals after a 2xx carry nothing for the TU.
    l.receive(
        response_msg(&inv, 180, "Ringing"),
        "proxy",
        false,
        ms(t0, 950),
    );
    l.receive(response_msg(&inv, 486, "Busy"), "proxy", false, ms(t0, 960));
    assert!(events(&mut l).is_empty());
    assert!(transmits(&mut l).is_empty());

    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0].at_ms, 32_300, "Timer M = 64*T1");
    // After M, a late 2xx is stray (RFC 6026: a proxy drops it).
    l.receive(
        response_msg(&inv, 200, "OK"),
        "proxy",
        false,
        ms(t0, 40_000),
    );
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::StrayResponse { from: "proxy", .. }]
    ));
}
