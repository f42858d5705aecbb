//! Server transactions absorb request retransmissions: the TU sees each request once, and the
//! peer gets the last response again (RFC 3261 §17.2.1, §17.2.2).

#[path = "transaction_support.rs"]
mod support;

use huddle_sip::transaction::{
    Event, LayerConfig, ServerKey, State, TransactionError, TransactionKey,
};
use support::*;

fn new_request(l: &mut Layer, msg: huddle_sip::Message, now: std::time::Instant) -> ServerKey {
    l.receive(msg, "alice", false, now);
    match events(l).as_slice() {
        [Event::Request { key, from, .. }] => {
            assert_eq!(*from, "alice");
            *key
        }
        other => panic!("expected one Request, got {other:?}"),
    }
}

#[test]
fn non_invite_retransmissions_resend_the_last_response() {
    let t0 = origin();
    let mut l = layer();
    let req = request("MESSAGE", "z9hG4bKs1", "c-s1");
    let key = new_request(&mut l, req.clone(), t0);
    assert_eq!(l.state(key), Some(State::Trying));
    assert!(transmits(&mut l).is_empty(), "no 100 for non-INVITE");

    // Trying: retransmissions are absorbed silently.
    l.receive(req.clone(), "alice", false, ms(t0, 500));
    assert!(events(&mut l).is_empty());
    assert!(transmits(&mut l).is_empty());

    // Proceeding: the last provisional is re-sent.
    let trying = response(&req, 100, "Trying");
    l.respond(key, trying.clone(), ms(t0, 600)).unwrap();
    assert_eq!(transmits(&mut l)[0].payload, trying);
    assert_eq!(l.state(key), Some(State::Proceeding));
    l.receive(req.clone(), "alice", false, ms(t0, 1_500));
    let again = transmits(&mut l);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].payload, trying);
    assert_eq!(again[0].to, "alice");
    assert!(events(&mut l).is_empty());

    // Completed: the final is re-sent, for as long as Timer J (64*T1) runs.
    let ok = response(&req, 200, "OK");
    l.respond(key, ok.clone(), ms(t0, 2_000)).unwrap();
    assert_eq!(transmits(&mut l)[0].payload, ok);
    assert_eq!(l.state(key), Some(State::Completed));
    for at in [3_500, 7_500, 11_500] {
        l.receive(req.clone(), "alice", false, ms(t0, at));
        let t = transmits(&mut l);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].payload, ok);
        assert!(events(&mut l).is_empty());
    }
    assert_eq!(
        l.respond(key, response(&req, 500, "Oops"), ms(t0, 12_000)),
        Err(TransactionError::FinalResponseSent)
    );
    let ticks = run_timers(&mut l, t0, ms(t0, 100_000));
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0].at_ms, 34_000, "Timer J");
    assert!(
        transmit_times(&ticks).is_empty(),
        "servers never retransmit on their own for non-INVITE"
    );
    assert!(l.is_empty());
}

#[test]
fn invite_retransmission_resends_100_then_the_last_provisional() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKs2");
    let key = new_request(&mut l, inv.clone(), t0);
    let trying = transmits(&mut l);
    assert_eq!(trying.len(), 1);
    assert_eq!(first_line(&trying[0]), "SIP/2.0 100 Trying");
    assert_eq!(trying[0].key, Some(TransactionKey::Server(key)));
    let msg = parse_bytes(&trying[0].payload);
    assert_eq!(msg.branch(), Some("z9hG4bKs2"));
    assert_eq!(
        msg.to_header().unwrap().tag(),
        None,
        "100 carries no To tag"
    );

    l.receive(inv.clone(), "alice", false, ms(t0, 500));
    assert!(events(&mut l).is_empty(), "retransmission not passed up");
    assert_eq!(transmits(&mut l)[0].payload, trying[0].payload);

    let ringing = response(&inv, 180, "Ringing");
    l.respond(key, ringing.clone(), ms(t0, 700)).unwrap();
    transmits(&mut l);
    l.receive(inv.clone(), "alice", false, ms(t0, 1_500));
    assert_eq!(transmits(&mut l)[0].payload, ringing);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.state(key), Some(State::Proceeding));
}

#[test]
fn without_automatic_100_an_early_retransmission_gets_nothing() {
    let t0 = origin();
    let mut l = layer_with(LayerConfig {
        send_100_trying: false,
        ..LayerConfig::default()
    });
    let inv = invite("z9hG4bKs3");
    new_request(&mut l, inv.clone(), t0);
    assert!(transmits(&mut l).is_empty());
    l.receive(inv, "alice", false, ms(t0, 500));
    assert!(transmits(&mut l).is_empty());
    assert!(events(&mut l).is_empty());
}

#[test]
fn ack_for_a_non_2xx_final_is_absorbed() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKs4");
    let key = new_request(&mut l, inv.clone(), t0);
    let busy = response_msg(&inv, 486, "Busy Here");
    l.respond_message(key, &busy, ms(t0, 100)).unwrap();
    transmits(&mut l);
    l.receive(ack_for(&inv, &busy), "alice", false, ms(t0, 200));
    assert!(
        events(&mut l).is_empty(),
        "the ACK belongs to the transaction"
    );
    assert_eq!(l.state(key), Some(State::Confirmed));
    // Retransmitted INVITE and ACK in Confirmed: absorbed without a response.
    l.receive(inv, "alice", false, ms(t0, 300));
    l.receive(
        ack_for(&invite("z9hG4bKs4"), &busy),
        "alice",
        false,
        ms(t0, 400),
    );
    assert!(events(&mut l).is_empty());
    assert!(transmits(&mut l).is_empty());
}

#[test]
fn responses_follow_the_latest_source_of_the_request() {
    // Over TCP a retransmission can arrive on a new connection; answer there.
    let t0 = origin();
    let mut l = layer();
    let req = request("OPTIONS", "z9hG4bKs5", "c-s5");
    let key = new_request(&mut l, req.clone(), t0);
    l.respond(key, response(&req, 200, "OK"), t0).unwrap();
    assert_eq!(transmits(&mut l)[0].to, "alice");
    l.receive(req, "alice-reconnected", false, ms(t0, 100));
    assert_eq!(transmits(&mut l)[0].to, "alice-reconnected");
}
