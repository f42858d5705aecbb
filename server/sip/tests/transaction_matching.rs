//! What the layer does with messages matching no transaction, with requests it cannot identify,
//! and with TU mistakes: stray responses and ACKs go up as such, unidentifiable requests are
//! rejected for a 400, TU errors are precise.

#[path = "transaction_support.rs"]
mod support;

use huddle_sip::headers::HeaderError;
use huddle_sip::transaction::{Event, LayerConfig, TimerConfig, TransactionError, TransactionKey};
use std::time::Duration;
use support::*;

#[test]
fn responses_match_by_branch_and_cseq_method() {
    let t0 = origin();
    let mut l = layer();
    let inv = invite("z9hG4bKt1");
    let key = l.send_request(inv.clone(), "bob", false, t0).unwrap();
    // A response to some other transaction is stray.
    l.receive(
        response_msg(&invite("z9hG4bKt-other"), 200, "OK"),
        "bob",
        false,
        t0,
    );
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::StrayResponse { from: "bob", .. }]
    ));
    // Same branch, CSeq method CANCEL: the CANCEL's response, not ours.
    let cancel = parse_bytes(&huddle_sip::build::cancel_for(&inv).unwrap());
    l.receive(response_msg(&cancel, 200, "OK"), "bob", false, t0);
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::StrayResponse { .. }]
    ));
    // A response without Via cannot be matched.
    l.receive(
        parse("SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"),
        "bob",
        false,
        t0,
    );
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::StrayResponse { .. }]
    ));
    l.receive(response_msg(&inv, 100, "Trying"), "bob", false, t0);
    assert!(matches!(events(&mut l).as_slice(), [Event::Response { key: k, .. }] if *k == key));
}

#[test]
fn unidentifiable_requests_are_rejected_for_400() {
    let t0 = origin();
    let mut l = layer();
    let no_via = parse(
        "OPTIONS sip:a@b SIP/2.0\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    l.receive(no_via, "x", false, t0);
    let ev = events(&mut l);
    let [Event::Rejected { error, .. }] = ev.as_slice() else {
        panic!("{ev:?}");
    };
    assert_eq!(
        *error,
        TransactionError::Header(HeaderError::Missing("Via"))
    );
    assert_eq!(error.status(), Some(400));
    assert_eq!(error.reason(), "Bad Request - Missing Via");

    // An RFC 2543 request needs CSeq, Call-ID, From and To to be identified.
    let no_cseq = parse(
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: q\r\nContent-Length: 0\r\n\r\n",
    );
    l.receive(no_cseq, "x", false, t0);
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Rejected {
            error: TransactionError::Header(HeaderError::Missing("CSeq")),
            ..
        }]
    ));
    // An unidentifiable ACK is just an ACK for the TU (never answered).
    let ack = parse("ACK sip:a@b SIP/2.0\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    l.receive(ack, "x", false, t0);
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::Ack { invite: None, .. }]
    ));
    assert!(l.is_empty());
}

#[test]
fn send_request_errors_are_precise() {
    let t0 = origin();
    let mut l = layer();
    assert_eq!(
        l.send_request(request("OPTIONS", "abc", "c"), "x", false, t0),
        Err(TransactionError::NoMagicCookie)
    );
    assert_eq!(
        l.send_request(request("OPTIONS", "z9hG4bK", "c"), "x", false, t0),
        Err(TransactionError::NoMagicCookie),
        "the cookie alone identifies nothing"
    );
    assert_eq!(
        l.send_request(request("ACK", "z9hG4bKq", "c"), "x", false, t0),
        Err(TransactionError::AckIsNotATransaction)
    );
    assert_eq!(
        l.send_request(response_msg(&invite("z9hG4bKq"), 200, "OK"), "x", false, t0),
        Err(TransactionError::NotARequest)
    );
    let mismatched = parse(
        &String::from_utf8_lossy(request("OPTIONS", "z9hG4bKq", "c").raw())
            .replace("CSeq: 1 OPTIONS", "CSeq: 1 INFO"),
    );
    assert_eq!(
        l.send_request(mismatched, "x", false, t0),
        Err(TransactionError::Header(HeaderError::Invalid("CSeq")))
    );
    l.send_request(request("OPTIONS", "z9hG4bKq", "c"), "x", false, t0)
        .unwrap();
    assert_eq!(
        l.send_request(request("OPTIONS", "z9hG4bKq", "c"), "x", false, t0),
        Err(TransactionError::DuplicateBranch)
    );
    // Same branch, other method is another transaction (as the CANCEL for an INVITE is).
    assert!(l
        .send_request(request("INVITE", "z9hG4bKq", "c"), "x", false, t0)
        .is_ok());
}

#[test]
fn respond_errors_are_precise() {
    let t0 = origin();
    let mut l = layer();
    let client = l
        .send_request(request("OPTIONS", "z9hG4bKw1", "c"), "x", false, t0)
        .unwrap();
    let req = request("OPTIONS", "z9hG4bKw2", "c");
    l.receive(req.clone(), "x", false, t0);
    let Some(Event::Request { key, .. }) = l.poll_event() else {
        panic!()
    };
    assert!(matches!(
        l.respond(key, bytes::Bytes::from_static(b"garbage"), t0),
        Err(TransactionError::Parse(_))
    ));
    assert_eq!(
        l.respond(key, req.raw().clone(), t0),
        Err(TransactionError::NotAResponse)
    );
    assert_eq!(l.state(key), Some(huddle_sip::transaction::State::Trying));
    assert_eq!(
        l.state(TransactionKey::Client(client)),
        Some(huddle_sip::transaction::State::Trying),
        "keys of both kinds live side by side"
    );
    // Reliable transport: the final response ends the transaction at once.
    let reliable = request("OPTIONS", "z9hG4bKw3", "c");
    l.receive(reliable.clone(), "x", true, t0);
    let Some(Event::Request { key, .. }) = l.poll_event() else {
        panic!()
    };
    l.respond(key, response(&reliable, 200, "OK"), t0).unwrap();
    assert_eq!(
        l.respond(key, response(&reliable, 200, "OK"), t0),
        Err(TransactionError::UnknownTransaction)
    );
}

#[test]
fn transport_errors_end_the_transaction() {
    let t0 = origin();
    let mut l = layer();
    let key = l
        .send_request(invite("z9hG4bKv1"), "gone", false, t0)
        .unwrap();
    let t = transmits(&mut l);
    let failed = t[0].key.unwrap();
    assert_eq!(failed, TransactionKey::Client(key));
    l.transport_error(failed, ms(t0, 1));
    assert!(matches!(
        events(&mut l).as_slice(),
        [Event::TransportError { key: k }, Event::Terminated { key: k2 }] if *k == failed && *k2 == failed
    ));
    assert!(l.is_empty());
    // Reporting again, or for an unknown key, does nothing.
    l.transport_error(failed, ms(t0, 2));
    assert!(events(&mut l).is_empty());
}

#[test]
fn invalid_timer_configuration_is_refused() {
    for timers in [
        TimerConfig {
            t1: Duration::ZERO,
            ..TimerConfig::default()
        },
        TimerConfig {
            t1: Duration::from_secs(5),
            t2: Duration::from_secs(4),
            ..TimerConfig::default()
        },
        TimerConfig {
            t4: Duration::from_secs(1_000_000),
            ..TimerConfig::default()
        },
    ] {
        let r = huddle_sip::transaction::TransactionLayer::<Peer>::new(LayerConfig {
            timers,
            ..LayerConfig::default()
        });
        assert_eq!(r.err(), Some(TransactionError::InvalidTimers));
    }
}

#[test]
fn derived_timers_follow_rfc_3261_table_4_and_rfc_6026() {
    let t = TimerConfig::default();
    let s = Duration::from_secs;
    assert_eq!(t.timer_a(), Duration::from_millis(500));
    assert_eq!(
        [
            t.timer_b(),
            t.timer_f(),
            t.timer_h(),
            t.timer_j(false),
            t.timer_l(),
            t.timer_m()
        ],
        [s(32); 6]
    );
    assert_eq!(t.timer_d(false), s(32));
    assert_eq!([t.timer_i(false), t.timer_k(false)], [s(5); 2]);
    assert_eq!(
        [
            t.timer_d(true),
            t.timer_i(true),
            t.timer_j(true),
            t.timer_k(true)
        ],
        [Duration::ZERO; 4]
    );
}
