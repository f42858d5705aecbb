//! A client layer and a server layer wired through an in-memory network that loses, delays,
//! reorders and duplicates datagrams by a seeded pattern. Virtual time jumps to the next
//! deadline (a layer's `poll_timeout`, a delivery, a TU timer). Every exchange completes, each
//! request reaches the server TU exactly once, and both layers end empty.

#[path = "transaction_support.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use huddle_sip::build::ResponseBuilder;
use huddle_sip::transaction::{ClientKey, Event, ServerKey};
use huddle_sip::{Message, Method};
use support::*;

/// xorshift64*: enough randomness for a loss pattern, and reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Packet {
    at: Instant,
    seq: u64,
    from: Peer,
    to: Peer,
    payload: Bytes,
}

struct Net {
    rng: XorShift,
    loss_percent: u64,
    /// After this many consecutive drops in one direction of one call the next datagram gets
    /// through. With 2, a non-INVITE request (11 attempts in 64*T1) reaches the server at least
    /// 3 times and one of the 3 answers gets back: every exchange must complete in time.
    max_burst: u32,
    burst: HashMap<(Peer, String), u32>,
    in_flight: Vec<Packet>,
    seq: u64,
    dropped: u64,
    duplicated: u64,
}

impl Net {
    fn new(seed: u64, loss_percent: u64, max_burst: u32) -> Net {
        Net {
            rng: XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            loss_percent,
            max_burst,
            burst: HashMap::new(),
            in_flight: Vec::new(),
            seq: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    fn send(&mut self, from: Peer, to: Peer, payload: Bytes, now: Instant) {
        let call_id = Message::parse(payload.clone())
            .ok()
            .and_then(|m| m.call_id().map(str::to_owned))
            .unwrap_or_default();
        let burst = self.burst.entry((to, call_id)).or_insert(0);
        if self.rng.below(100) < self.loss_percent && *burst < self.max_burst {
            *burst += 1;
            self.dropped += 1;
            return;
        }
        *burst = 0;
        let copies = if self.rng.below(100) < 10 { 2 } else { 1 };
        self.duplicated += copies - 1;
        for _ in 0..copies {
            // 5–300 ms: later datagrams often overtake earlier ones.
            let latency = Duration::from_millis(5 + self.rng.below(296));
            self.seq += 1;
            self.in_flight.push(Packet {
                at: now + latency,
                seq: self.seq,
                from,
                to,
                payload: payload.clone(),
            });
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.iter().map(|p| p.at).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<Packet> {
        let (mut due, rest): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|p| p.at <= now);
        self.in_flight = rest;
        due.sort_by_key(|p| (p.at, p.seq));
        due
    }
}

/// What the UAC's TU saw.
#[derive(Default)]
struct Uac {
    finals: HashMap<ClientKey, Vec<u16>>,
}

/// The UAS's TU: rings, then answers INVITE 486 a second later; answers others 200 at once.
#[derive(Default)]
struct Uas {
    requests: HashMap<Method, u32>,
    later: Vec<(Instant, ServerKey, Bytes)>,
}

#[derive(Default)]
struct Outcome {
    dropped: u64,
    duplicated: u64,
    timeouts: u32,
    strays: u32,
    acks_to_tu: u32,
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (x, None) | (None, x) => x,
    }
}

fn run(seed: u64, loss_percent: u64, max_burst: u32) -> Outcome {
    let t0 = origin();
    let mut now = t0;
    let mut net = Net::new(seed, loss_percent, max_burst);
    let mut uac_layer = layer();
    let mut uas_layer = layer();
    let mut uac = Uac::default();
    let mut uas = Uas::default();
    let mut outcome = Outcome::default();

    let inv = request("INVITE", &format!("z9hG4bK-inv-{seed}"), "lossy-call");
    let opts = request("OPTIONS", &format!("z9hG4bK-opt-{seed}"), "lossy-opt");
    let msg = request("MESSAGE", &format!("z9hG4bK-msg-{seed}"), "lossy-msg");
    let inv_key = uac_layer.send_request(inv, "uas", false, now).unwrap();
    let opt_key = uac_layer.send_request(opts, "uas", false, now).unwrap();
    let msg_key = uac_layer.send_request(msg, "uas", false, now).unwrap();

    for step in 0.. {
        assert!(step < 100_000, "seed {seed}: simulation does not converge");
        // Drain both layers until quiet.
        loop {
            let mut busy = false;
            while let Some(t) = uac_layer.poll_transmit() {
                busy = true;
                net.send("uac", t.to, t.payload, now);
            }
            while let Some(t) = uas_layer.poll_transmit() {
                busy = true;
                net.send("uas", t.to, t.payload, now);
            }
            while let Some(e) = uac_layer.poll_event() {
                busy = true;
                match e {
                    Event::Response { key, msg } => {
                        let code = msg.status().unwrap();
                        if code >= 200 {
                            uac.finals.entry(key).or_default().push(code);
                        }
                    }
                    Event::Timeout { .. } => outcome.timeouts += 1,
                    Event::StrayResponse { msg, .. } => {
                        eprintln!(
                            "seed {seed} stray at {:?}: {}",
                            now - t0,
                            String::from_utf8_lossy(msg.raw())
                        );
                        outcome.strays += 1
                    }
                    _ => {}
                }
            }
            while let Some(e) = uas_layer.poll_event() {
                busy = true;
                match e {
                    Event::Request { key, msg, .. } => {
                        let method = msg.method().unwrap().clone();
                        *uas.requests.entry(method.clone()).or_default() += 1;
                        if method == Method::Invite {
                            let ringing = ResponseBuilder::new(&msg, 180, "Ringing")
                                .to_tag("uas-tag")
                                .build();
                            uas_layer.respond(key, ringing, now).unwrap();
                            let busy_here = ResponseBuilder::new(&msg, 486, "Busy Here")
                                .to_tag("uas-tag")
                                .build();
                            uas.later
                                .push((now + Duration::from_secs(1), key, busy_here));
                        } else {
                            let ok = ResponseBuilder::new(&msg, 200, "OK")
                                .to_tag("uas-tag")
                                .build();
                            uas_layer.respond(key, ok, now).unwrap();
                        }
                    }
                    Event::Timeout { .. } => outcome.timeouts += 1,
                    Event::Ack { .. } => outcome.acks_to_tu += 1,
                    _ => {}
                }
            }
            if !busy {
                break;
            }
        }

        let next = [
            uac_layer.poll_timeout(),
            uas_layer.poll_timeout(),
            net.next_delivery(),
            uas.later.iter().map(|l| l.0).min(),
        ]
        .into_iter()
        .fold(None, min_opt);
        let Some(next) = next else { break };
        assert!(next >= now, "time never runs backwards");
        now = next;

        for p in net.take_due(now) {
            let msg = Message::parse(p.payload).expect("datagram parses");
            let reliable = false;
            match p.to {
                "uac" => uac_layer.receive(msg, p.from, reliable, now),
                _ => uas_layer.receive(msg, p.from, reliable, now),
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = uas.later.drain(..).partition(|l| l.0 <= now);
        uas.later = later;
        for (_, key, resp) in due {
            uas_layer.respond(key, resp, now).unwrap();
        }
        uac_layer.handle_timeout(now);
        uas_layer.handle_timeout(now);
    }

    assert_eq!(
        uac.finals.get(&inv_key),
        Some(&vec![486]),
        "seed {seed}: INVITE final once"
    );
    assert_eq!(
        uac.finals.get(&opt_key),
        Some(&vec![200]),
        "seed {seed}: OPTIONS final once"
    );
    assert_eq!(
        uac.finals.get(&msg_key),
        Some(&vec![200]),
        "seed {seed}: MESSAGE"
    );
    for method in [Method::Invite, Method::Options, Method::Message] {
        assert_eq!(
            uas.requests.get(&method),
            Some(&1),
            "seed {seed}: {method} reached the server TU exactly once"
        );
    }
    assert!(
        uac_layer.is_empty() && uas_layer.is_empty(),
        "seed {seed}: memory released"
    );
    assert!(
        now - t0 < Duration::from_secs(64),
        "seed {seed}: finished by the RFC timers"
    );
    outcome.dropped = net.dropped;
    outcome.duplicated = net.duplicated;
    outcome
}

#[test]
fn exchanges_complete_despite_loss_and_reordering() {
    let mut dropped = 0;
    let mut duplicated = 0;
    for seed in 1..=24 {
        let o = run(seed, 30, 2);
        assert_eq!(o.timeouts, 0, "seed {seed}: no transaction timed out");
        assert_eq!(
            o.acks_to_tu, 0,
            "seed {seed}: the ACK for the 486 stays in the transaction"
        );
        assert_eq!(o.strays, 0, "seed {seed}: nothing outlived its transaction");
        dropped += o.dropped;
        duplicated += o.duplicated;
    }
    assert!(dropped > 50, "the network did lose datagrams ({dropped})");
    assert!(
        duplicated > 5,
        "the network did duplicate datagrams ({duplicated})"
    );
}

#[test]
fn heavy_loss_still_completes() {
    for seed in 100..=107 {
        let o = run(seed, 60, 2);
        assert_eq!(o.timeouts, 0, "seed {seed}");
        assert!(o.dropped > 0);
    }
}
