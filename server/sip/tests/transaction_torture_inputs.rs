//! Every RFC 4475 torture message, and mangled variants of them, fed to a layer as requests
//! and responses: nothing panics, and every transaction the garbage opened is eventually
//! released.

#[path = "transaction_support.rs"]
mod support;

use bytes::Bytes;
use huddle_sip::build::ResponseBuilder;
use huddle_sip::transaction::Event;
use huddle_sip::Message;
use support::*;

fn corpus() -> Vec<Vec<u8>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn torture_messages_never_panic_and_never_leak() {
    let t0 = origin();
    let mut l = layer();
    let mut msgs = Vec::new();
    for raw in corpus() {
        // The message, and truncations of it (cut header lines, lost bodies).
        for cut in [raw.len(), raw.len() * 3 / 4, raw.len() / 2] {
            let mut bytes = raw[..cut].to_vec();
            bytes.extend_from_slice(b"\r\n\r\n");
            if let Ok(m) = Message::parse(Bytes::from(bytes)) {
                msgs.push(m);
            }
        }
    }
    assert!(msgs.len() > 60);
    for (i, m) in msgs.iter().enumerate() {
        let now = ms(t0, i as u64);
        // Twice: as new, then as a retransmission.
        l.receive(m.clone(), "t", i % 2 == 0, now);
        l.receive(m.clone(), "t", i % 2 == 0, now);
        // Answer whatever opened a transaction, sometimes badly.
        while let Some(e) = l.poll_event() {
            if let Event::Request { key, msg, .. } = e {
                let code = [100, 180, 200, 486][i % 4];
                let _ = l.respond(key, ResponseBuilder::new(&msg, code, "X").build(), now);
                let _ = l.respond(key, ResponseBuilder::new(&msg, 500, "X").build(), now);
                let _ = l.respond(key, msg.raw().clone(), now);
            }
        }
        // And send it, when it is a request, as a client.
        let _ = l.send_request(m.clone(), "t", i % 3 == 0, now);
        let _ = transmits(&mut l);
    }
    // Responses against whatever is live.
    for (i, m) in msgs.iter().enumerate() {
        l.receive(m.clone(), "t", false, ms(t0, 1_000 + i as u64));
    }
    while l.poll_event().is_some() {}
    // Everything ends within the RFC timers and the unanswered safety net.
    let ticks = run_timers(&mut l, t0, ms(t0, 3_600_000));
    assert!(!ticks.is_empty());
    assert!(l.is_empty(), "{} transactions leaked", l.len());
    assert_eq!(l.poll_timeout(), None);
}
