//! CANCEL (RFC 3261 §9): on the server a CANCEL matching an INVITE transaction is its own
//! non-INVITE transaction and is reported with the INVITE's key; on the client `cancel` holds
//! the CANCEL back until a provisional response arrives.

#[path = "transaction_support.rs"]
mod support;

use huddle_sip::transaction::{Event, State, TransactionError, TransactionKey};
use huddle_sip::Method;
use support::*;

#[test]
fn server_reports_cancel_with_the_invite_it_matches() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKx1");
    l.receive(inv.clone(), "alice", false, t0);
    let Some(Event::Request {
        key: invite_key, ..
    }) = l.poll_event()
    else {
        panic!("no Request");
    };
    transmits(&mut l);
    l.respond(invite_key, response(&inv, 180, "Ringing"), ms(t0, 10))
        .unwrap();
    transmits(&mut l);

    let cancel = parse_bytes(&huddle_sip::build::cancel_for(&inv).unwrap());
    l.receive(cancel.clone(), "alice", false, ms(t0, 1_000));
    let ev = events(&mut l);
    let [Event::Cancel {
        invite,
        cancel: cancel_key,
        msg,
        from,
    }] = ev.as_slice()
    else {
        panic!("expected Cancel, got {ev:?}");
    };
    assert_eq!(*invite, invite_key);
    assert_ne!(*cancel_key, invite_key);
    assert_eq!(msg.method(), Some(&Method::Cancel));
    assert_eq!(*from, "alice");
    assert_eq!(l.state(*cancel_key), Some(State::Trying));
    assert_eq!(
        l.state(invite_key),
        Some(State::Proceeding),
        "the TU answers 487"
    );

    // The TU: 200 for the CANCEL, 487 for the INVITE.
    let ok = response(&cancel, 200, "OK");
    l.respond(*cancel_key, ok.clone(), ms(t0, 1_000)).unwrap();
    let terminated = response_msg(&inv, 487, "Request Terminated");
    l.respond_message(invite_key, &terminated, ms(t0, 1_000))
        .unwrap();
    let out = transmits(&mut l);
    assert_eq!(first_line(&out[0]), "SIP/2.0 200 OK");
    assert_eq!(first_line(&out[1]), "SIP/2.0 487 Request Terminated");

    // A retransmitted CANCEL gets its 200 again and is not reported twice.
    l.receive(cancel, "alice", false, ms(t0, 1_500));
    assert!(events(&mut l).is_empty());
    assert_eq!(transmits(&mut l)[0].payload, ok);

    l.receive(ack_for(&inv, &terminated), "alice", false, ms(t0, 1_600));
    assert!(events(&mut l).is_empty());
    assert_eq!(l.state(invite_key), Some(State::Confirmed));
}

#[test]
fn server_cancel_matching_nothing_is_a_plain_request() {
    let t0 = origin();
    let mut l = layer();
    let cancel = parse_bytes(&huddle_sip::build::cancel_for(&invite("z9hG4bKx2")).unwrap());
    l.receive(cancel, "alice", false, t0);
    // The TU answers 481 Call/Transaction Does Not Exist.
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Request { msg, .. }] if msg.method() == Some(&Method::Cancel)
    ));
}

#[test]
fn server_cancel_with_other_sent_by_does_not_match() {
    let t0 = origin();
    let mut l = layer();
    l.receive(invite("z9hG4bKx3"), "alice", false, t0);
    events(&mut l);
    let cancel = parse(
        &String::from_utf8_lossy(&huddle_sip::build::cancel_for(&invite("z9hG4bKx3")).unwrap())
            .replace("client.test:5060", "intruder.test:5060"),
    );
    l.receive(cancel, "mallory", false, t0);
    assert!(matches!(events(&mut l).as_slice(), [Event::Request { .. }]));
}

#[test]
fn client_cancel_waits_for_a_provisional() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKx4");
    let invite_key = l.send_request(inv.clone(), "bob", false, t0).unwrap();
    transmits(&mut l);

    let cancel_key = l.cancel(invite_key, ms(t0, 100)).unwrap();
    assert!(
        transmits(&mut l).is_empty(),
        "no CANCEL before a provisional (RFC 3261 §9.1)"
    );
    assert_eq!(
        l.cancel(invite_key, ms(t0, 150)),
        Ok(cancel_key),
        "idempotent"
    );
    assert_eq!(l.state(cancel_key), None);

    l.receive(
        response_msg(&inv, 180, "Ringing"),
        "bob",
        false,
        ms(t0, 200),
    );
    let out = transmits(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, "bob");
    assert_eq!(out[0].key, Some(TransactionKey::Client(cancel_key)));
    let cancel = parse_bytes(&out[0].payload);
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.branch(), Some("z9hG4bKx4"));
    assert_eq!(cancel.cseq().unwrap().seq, 1);
    assert_eq!(l.state(cancel_key), Some(State::Trying));
    assert_eq!(l.cancel(invite_key, ms(t0, 250)), Ok(cancel_key));

    // The CANCEL is retransmitted by Timer E like any non-INVITE request.
    let ticks = run_timers(&mut l, t0, ms(t0, 800));
    assert_eq!(transmit_times(&ticks), [700]);

    l.receive(response_msg(&cancel, 200, "OK"), "bob", false, ms(t0, 900));
    l.receive(
        response_msg(&inv, 487, "Request Terminated"),
        "bob",
        false,
        ms(t0, 950),
    );
    let ev = events(&mut l);
    assert!(ev.iter().any(|e| matches!(e, Event::Response { key, msg } if *key == cancel_key && msg.status() == Some(200))));
    assert!(ev.iter().any(|e| matches!(e, Event::Response { key, msg } if *key == invite_key && msg.status() == Some(487))));
    assert_eq!(
        first_line(&transmits(&mut l)[0]),
        "ACK sip:bob@example.test SIP/2.0"
    );
    assert_eq!(
        l.cancel(invite_key, ms(t0, 1_000)),
        Ok(cancel_key),
        "the CANCEL transaction still lives (Timer K)"
    );
}

#[test]
fn client_cancel_is_dropped_when_a_final_comes_first() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKx5");
    let invite_key = l.send_request(inv.clone(), "bob", false, t0).unwrap();
    transmits(&mut l);
    let cancel_key = l.cancel(invite_key, ms(t0, 100)).unwrap();
    l.receive(
        response_msg(&inv, 486, "Busy Here"),
        "bob",
        false,
        ms(t0, 200),
    );
    let ev = events(&mut l);
    assert!(ev.iter().any(
        |e| matches!(e, Event::Terminated { key: TransactionKey::Client(k) } if *k == cancel_key)
    ));
    let out = transmits(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(first_line(&out[0]), "ACK sip:bob@example.test SIP/2.0");
    assert_eq!(
        l.cancel(invite_key, ms(t0, 300)),
        Err(TransactionError::FinalResponseReceived)
    );
}

#[test]
fn client_cancel_errors() {
    let t0 = origin();
    let mut l = layer();
    let opts = l
        .send_request(request("OPTIONS", "z9hG4bKx6", "c-x6"), "bob", false, t0)
        .unwrap();
    assert_eq!(l.cancel(opts, t0), Err(TransactionError::NotInvite));
    let inv = invite("z9hG4bKx7");
    let invite_key = l.send_request(inv.clone(), "bob", false, t0).unwrap();
    l.receive(response_msg(&inv, 200, "OK"), "bob", false, t0);
    assert_eq!(
        l.cancel(invite_key, t0),
        Err(TransactionError::FinalResponseReceived)
    );
}
