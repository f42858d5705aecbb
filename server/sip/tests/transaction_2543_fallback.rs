//! RFC 2543 matching (RFC 3261 §17.2.3) for requests whose top Via branch lacks the magic
//! cookie or is nothing but the cookie: RFC 4475 `inv2543.dat` and `badbranch.dat`.

#[path = "transaction_support.rs"]
mod support;

use bytes::Bytes;
use huddle_sip::build::ResponseBuilder;
use huddle_sip::transaction::{Event, ServerKey, State};
use huddle_sip::{Message, Method};
use support::*;

fn corpus(name: &str) -> Message {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/rfc4475")
        .join(name);
    Message::parse(Bytes::from(std::fs::read(path).expect("corpus file"))).expect("parses")
}

fn opened(l: &mut Layer) -> ServerKey {
    match events(l).as_slice() {
        [Event::Request { key, .. }] => *key,
        other => panic!("expected a new transaction, got {other:?}"),
    }
}

#[test]
fn inv2543_retransmission_ack_and_cancel_match_without_branch() {
    let t0 = origin();
    let mut l = layer();
    let inv = corpus("inv2543.dat");
    assert_eq!(inv.branch(), None);
    l.receive(inv.clone(), "gw", false, t0);
    let key = opened(&mut l);
    assert_eq!(first_line(&transmits(&mut l)[0]), "SIP/2.0 100 Trying");

    // Byte-identical retransmission: absorbed, 100 re-sent.
    l.receive(inv.clone(), "gw", false, ms(t0, 500));
    assert!(events(&mut l).is_empty());
    assert_eq!(transmits(&mut l).len(), 1);

    // A CANCEL for it: same Request-URI, Via, From, To, Call-ID, CSeq number.
    let cancel = parse_bytes(&huddle_sip::build::cancel_for(&inv).unwrap());
    l.receive(cancel.clone(), "gw", false, ms(t0, 600));
    let ev = events(&mut l);
    let [Event::Cancel {
        invite, cancel: ck, ..
    }] = ev.as_slice()
    else {
        panic!("expected Cancel, got {ev:?}");
    };
    assert_eq!(*invite, key);
    l.respond(
        *ck,
        ResponseBuilder::new(&cancel, 200, "OK").build(),
        ms(t0, 600),
    )
    .unwrap();

    let final_resp = parse_bytes(
        &ResponseBuilder::new(&inv, 487, "Request Terminated")
            .to_tag("uas77")
            .build(),
    );
    l.respond_message(key, &final_resp, ms(t0, 600)).unwrap();
    transmits(&mut l);

    // An ACK whose To tag is not our response's does not belong to the transaction.
    let wrong = parse(
        &String::from_utf8_lossy(&huddle_sip::build::ack_for_failure(&inv, &final_resp).unwrap())
            .replace("tag=uas77", "tag=other"),
    );
    l.receive(wrong, "gw", false, ms(t0, 700));
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Ack { invite: None, .. }]
    ));
    assert_eq!(l.state(key), Some(State::Completed));

    // The real ACK carries the tag of our 487: absorbed, Confirmed.
    let ack = parse_bytes(&huddle_sip::build::ack_for_failure(&inv, &final_resp).unwrap());
    assert_eq!(ack.method(), Some(&Method::Ack));
    l.receive(ack, "gw", false, ms(t0, 800));
    assert!(events(&mut l).is_empty());
    assert_eq!(l.state(key), Some(State::Confirmed));
}

#[test]
fn inv2543_other_cseq_is_another_transaction() {
    let t0 = origin();
    let mut l = layer();
    let inv = corpus("inv2543.dat");
    l.receive(inv.clone(), "gw", false, t0);
    let first = opened(&mut l);
    let text = String::from_utf8_lossy(inv.raw()).replace("CSeq: 56 INVITE", "CSeq: 57 INVITE");
    l.receive(parse(&text), "gw", false, t0);
    assert_ne!(opened(&mut l), first);
}

#[test]
fn badbranch_bare_cookie_falls_back_to_2543() {
    let t0 = origin();
    let mut l = layer();
    let opts = corpus("badbranch.dat");
    assert_eq!(opts.branch(), Some("z9hG4bK"));
    l.receive(opts.clone(), "c", false, t0);
    let key = opened(&mut l);
    l.respond(
        key,
        ResponseBuilder::new(&opts, 200, "OK").to_tag("t").build(),
        t0,
    )
    .unwrap();
    transmits(&mut l);

    // Its retransmission still matches...
    l.receive(opts.clone(), "c", false, ms(t0, 500));
    assert!(events(&mut l).is_empty());
    assert_eq!(transmits(&mut l).len(), 1, "the 200 again");

    // ...but another request with the same bare cookie is not mistaken for it.
    let other = String::from_utf8_lossy(opts.raw())
        .replace("badbranch.sadonfo23i420jv0as0derf3j3n", "another-call");
    l.receive(parse(&other), "c", false, ms(t0, 600));
    assert_ne!(opened(&mut l), key);
}

#[test]
fn rfc3261_matching_uses_branch_sent_by_and_method() {
    let t0 = origin();
    let mut l = layer();
    l.receive(request("OPTIONS", "z9hG4bKm1", "c-m1"), "a", false, t0);
    let key = opened(&mut l);
    // Same branch, other Call-ID: still the same transaction (the branch is the identity).
    l.receive(request("OPTIONS", "z9hG4bKm1", "c-other"), "a", false, t0);
    assert!(events(&mut l).is_empty());
    // Same branch, other method: another transaction.
    l.receive(request("MESSAGE", "z9hG4bKm1", "c-m1"), "a", false, t0);
    assert_ne!(opened(&mut l), key);
    // Same branch, other sent-by: another transaction.
    let text = String::from_utf8_lossy(request("OPTIONS", "z9hG4bKm1", "c-m1").raw())
        .replace("client.test:5060", "client.test:5070");
    l.receive(parse(&text), "a", false, t0);
    assert_ne!(opened(&mut l), key);
    // sent-by host compares case-insensitively.
    let text = String::from_utf8_lossy(request("OPTIONS", "z9hG4bKm1", "c-m1").raw())
        .replace("client.test", "CLIENT.test");
    l.receive(parse(&text), "a", false, t0);
    assert!(events(&mut l).is_empty());
}
