//! The layer is bounded: past `max_transactions` new requests are rejected for a 503 while
//! existing transactions keep working, and terminated transactions give their room back.

#[path = "transaction_support.rs"]
mod support;

use std::time::Duration;

use huddle_sip::transaction::{Event, LayerConfig, Timer, TransactionError};
use support::*;

#[test]
fn full_table_rejects_new_requests_with_503() {
    let t0 = origin();
    let mut l = layer_with(LayerConfig {
        max_transactions: 2,
        ..LayerConfig::default()
    });
    let a = request("OPTIONS", "z9hG4bKo1", "c-o1");
    l.receive(a.clone(), "x", false, t0);
    l.receive(request("OPTIONS", "z9hG4bKo2", "c-o2"), "x", false, t0);
    assert_eq!(events(&mut l).len(), 2);
    l.receive(request("OPTIONS", "z9hG4bKo3", "c-o3"), "x", false, t0);
    let ev = events(&mut l);
    let [Event::Rejected { error, msg, from }] = ev.as_slice() else {
        panic!("expected Rejected, got {ev:?}");
    };
    assert_eq!(*error, TransactionError::Overloaded);
    assert_eq!(error.status(), Some(503));
    assert_eq!(
        msg.branch(),
        Some("z9hG4bKo3"),
        "the TU gets the request to answer"
    );
    assert_eq!(*from, "x");
    assert_eq!(l.len(), 2);

    // Our own requests are refused too.
    assert_eq!(
        l.send_request(request("OPTIONS", "z9hG4bKo4", "c-o4"), "y", false, t0),
        Err(TransactionError::Overloaded)
    );
    // Retransmissions of existing transactions are still absorbed, not rejected.
    l.receive(a, "x", false, t0);
    assert!(events(&mut l).is_empty());
}

#[test]
fn terminated_transactions_release_their_room() {
    let t0 = origin();
    let mut l = layer_with(LayerConfig {
        max_transactions: 1,
        ..LayerConfig::default()
    });
    for i in 0..100u64 {
        let now = ms(t0, i);
        let req = request("OPTIONS", &format!("z9hG4bKr{i}"), "c-r");
        l.receive(req.clone(), "x", true, now);
        let Some(Event::Request { key, .. }) = l.poll_event() else {
            panic!("request {i} refused");
        };
        // Reliable transport: Timer J is zero, the transaction ends with the final response.
        l.respond(key, response(&req, 200, "OK"), now).unwrap();
        assert!(matches!(
            events(&mut l).as_slice(),
            [Event::Terminated { .. }]
        ));
        assert!(l.is_empty());
    }
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn unanswered_server_transactions_are_dropped_by_the_safety_net() {
    let t0 = origin();
    let mut l = layer_with(LayerConfig {
        unanswered_non_invite: Some(Duration::from_secs(32)),
        unanswered_invite: Some(Duration::from_secs(180)),
        ..LayerConfig::default()
    });
    l.receive(request("OPTIONS", "z9hG4bKu1", "c-u1"), "x", false, t0);
    l.receive(invite("z9hG4bKu2"), "x", false, t0);
    events(&mut l);
    transmits(&mut l);
    let ticks = run_timers(&mut l, t0, ms(t0, 1_000_000));
    let at: Vec<u64> = ticks.iter().map(|t| t.at_ms).collect();
    assert_eq!(at, [32_000, 180_000]);
    for t in &ticks {
        assert!(matches!(
            t.events.as_slice(),
            [
                Event::Timeout {
                    timer: Timer::Unanswered,
                    ..
                },
                Event::Terminated { .. }
            ]
        ));
    }
    assert!(l.is_empty());
}

#[test]
fn many_transactions_keep_the_earliest_deadline() {
    let t0 = origin();
    let mut l = layer();
    // 5000 client transactions started 1 ms apart, in reverse so the heap has work to do.
    for i in (0..5_000u64).rev() {
        l.send_request(
            request("OPTIONS", &format!("z9hG4bKn{i}"), "c-n"),
            "peer",
            false,
            ms(t0, i),
        )
        .unwrap();
    }
    transmits(&mut l);
    assert_eq!(
        l.poll_timeout(),
        Some(ms(t0, 500)),
        "Timer E of the first one"
    );
    let mut fired = 0;
    let mut last = t0;
    while let Some(at) = l.poll_timeout() {
        assert!(at >= last, "deadlines come in order");
        last = at;
        l.handle_timeout(at);
        fired += transmits(&mut l).len();
        while l.poll_event().is_some() {}
    }
    assert_eq!(fired, 5_000 * 10, "ten E retransmissions each before F");
    assert!(l.is_empty());
    assert_eq!(last, ms(t0, 4_999 + 32_000));
}
