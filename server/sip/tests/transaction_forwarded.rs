//! A request a proxy forwards as bytes (`send_forwarded`) runs as the same request sent parsed
//! (`send_request_with_branch`): the same datagrams at the same times, the same events, the
//! same matching, over reliable and unreliable transports, for non-INVITE (kept as bytes) and
//! INVITE (parsed by the layer) alike.

#[path = "transaction_support.rs"]
mod support;

use bytes::Bytes;
use huddle_sip::build::Forward;
use huddle_sip::transaction::{ClientKey, Event, TransactionError};
use huddle_sip::Message;
use support::*;

/// `original` as a proxy forwards it: its own Via on top, branch `branch`.
fn forwarded(original: &Message, branch: &str) -> Bytes {
    Forward::new(original)
        .prepend(
            "Via",
            &format!("SIP/2.0/UDP proxy.test:5060;branch={branch};rport"),
        )
        .max_forwards(69)
        .build()
}

/// Events with the client key they carry replaced by a marker, the messages by their bytes:
/// the two layers number their transactions alike, but compare what they carry too.
fn summary(events: Vec<Event<Peer>>, key: ClientKey) -> Vec<String> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Response { key: k, msg } => {
                format!("response {} {:?}", k == key, msg.raw())
            }
            other => format!("{other:?}"),
        })
        .collect()
}

/// Drives `layer` through `responses` (offset ms, status) and its timers to 40 s, recording
/// every datagram and event with its time.
fn run(
    layer: &mut Layer,
    key: ClientKey,
    sent: &Message,
    responses: &[(u64, u16)],
    reliable: bool,
    t0: std::time::Instant,
) -> Vec<String> {
    let mut log: Vec<String> = transmits(layer)
        .iter()
        .map(|t| format!("0 send {:?}", t.payload))
        .collect();
    let mut at = 0;
    for &(when, code) in responses.iter().chain([(40_000, 0)].iter()) {
        for tick in run_timers(layer, t0, ms(t0, when)) {
            for t in &tick.transmits {
                log.push(format!("{} send {:?}", tick.at_ms, t.payload));
            }
            for e in summary(tick.events, key) {
                log.push(format!("{} {e}", tick.at_ms));
            }
        }
        at = at.max(when);
        if code == 0 {
            break;
        }
        layer.receive(response_msg(sent, code, "R"), "bob", reliable, ms(t0, when));
        for t in transmits(layer) {
            log.push(format!("{when} send {:?}", t.payload));
        }
        for e in summary(events(layer), key) {
            log.push(format!("{when} {e}"));
        }
    }
    log.push(format!("left {} at {at}", layer.len()));
    log
}

#[test]
fn a_request_forwarded_as_bytes_runs_as_the_parsed_one() {
    let cases: [(&str, &[(u64, u16)]); 6] = [
        ("BYE", &[(200, 200), (300, 200)]),
        ("MESSAGE", &[(100, 100), (700, 202), (900, 202)]),
        ("OPTIONS", &[]),
        ("REGISTER", &[(2_000, 180), (9_000, 486)]),
        ("INVITE", &[(100, 180), (300, 200), (400, 200)]),
        ("INVITE", &[(50, 100), (600, 486), (700, 486)]),
    ];
    for (i, (method, responses)) in cases.into_iter().enumerate() {
        for reliable in [false, true] {
            let original = request(method, &format!("z9hG4bKc{i}"), &format!("call-{i}"));
            let branch = format!("z9hG4bK-hdf{i}-1");
            let bytes = forwarded(&original, &branch);
            let parsed = Message::parse(bytes.clone()).unwrap();

            let t0 = origin();
            let mut a = layer();
            let ka = a
                .send_request_with_branch(parsed.clone(), &branch, "bob", reliable, t0)
                .unwrap();
            let mut b = layer();
            let kb = b
                .send_forwarded(&original, bytes.clone(), &branch, "bob", reliable, t0)
                .unwrap();
            assert_eq!(ka, kb);
            assert_eq!(
                b.request(kb).is_some(),
                method == "INVITE",
                "only an INVITE keeps a parsed request"
            );
            assert_eq!(a.request_bytes(ka), Some(&bytes));
            assert_eq!(b.request_bytes(kb), Some(&bytes));
            let log_a = run(&mut a, ka, &parsed, responses, reliable, t0);
            let log_b = run(&mut b, kb, &parsed, responses, reliable, t0);
            assert_eq!(log_a, log_b, "{method} reliable={reliable}");
            assert!(log_a.len() > 2, "{log_a:?}");
        }
    }
}

#[test]
fn a_forwarded_request_is_refused_as_the_parsed_one_is() {
    let t0 = origin();
    let mut l = layer();
    let bye = request("BYE", "z9hG4bKx", "call-x");
    let bytes = forwarded(&bye, "z9hG4bK-hdx-1");
    l.send_forwarded(&bye, bytes.clone(), "z9hG4bK-hdx-1", "bob", false, t0)
        .unwrap();
    assert!(matches!(
        l.send_forwarded(&bye, bytes.clone(), "z9hG4bK-hdx-1", "bob", false, t0),
        Err(TransactionError::DuplicateBranch)
    ));
    assert!(matches!(
        l.send_forwarded(&bye, bytes, "rfc2543-branch", "bob", false, t0),
        Err(TransactionError::NoMagicCookie)
    ));
    let ack = request("ACK", "z9hG4bKa", "call-a");
    assert!(matches!(
        l.send_forwarded(
            &ack,
            forwarded(&ack, "z9hG4bK-a"),
            "z9hG4bK-a",
            "bob",
            false,
            t0
        ),
        Err(TransactionError::AckIsNotATransaction)
    ));
}
