//! Helpers shared by the `transaction_*` tests, included with `#[path]`. Virtual time only: an
//! origin `Instant` plus offsets; nothing sleeps and nothing touches a socket.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use huddle_sip::build::ResponseBuilder;
use huddle_sip::transaction::{Event, LayerConfig, TransactionLayer, Transmit};
use huddle_sip::Message;

/// Peers are named; the layer never looks inside `D`.
pub type Peer = &'static str;
pub type Layer = TransactionLayer<Peer>;

pub fn layer() -> Layer {
    TransactionLayer::new(LayerConfig::default()).expect("default config is valid")
}

pub fn layer_with(config: LayerConfig) -> Layer {
    TransactionLayer::new(config).expect("valid config")
}

/// The virtual clock's origin.
pub fn origin() -> Instant {
    Instant::now()
}

pub fn ms(origin: Instant, millis: u64) -> Instant {
    origin + Duration::from_millis(millis)
}

pub fn offset_ms(origin: Instant, t: Instant) -> u64 {
    t.duration_since(origin).as_millis() as u64
}

pub fn parse(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes())).expect("test message parses")
}

pub fn parse_bytes(b: &Bytes) -> Message {
    Message::parse(b.clone()).expect("wire message parses")
}

/// A request from `client.test` with the given branch.
pub fn request(method: &str, branch: &str, call_id: &str) -> Message {
    parse(&format!(
        "{method} sip:bob@example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP client.test:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.test>;tag=alice1\r\n\
         To: <sip:bob@example.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

pub fn invite(branch: &str) -> Message {
    request("INVITE", branch, "call-1")
}

/// A response to `req` as the far end would build it.
pub fn response(req: &Message, code: u16, reason: &str) -> Bytes {
    ResponseBuilder::new(req, code, reason)
        .to_tag("bob1")
        .build()
}

pub fn response_msg(req: &Message, code: u16, reason: &str) -> Message {
    parse_bytes(&response(req, code, reason))
}

/// The ACK the client transaction sends for a non-2xx final (built as a peer would).
pub fn ack_for(invite: &Message, final_response: &Message) -> Message {
    parse_bytes(&huddle_sip::build::ack_for_failure(invite, final_response).expect("ack"))
}

pub fn transmits(layer: &mut Layer) -> Vec<Transmit<Peer>> {
    std::iter::from_fn(|| layer.poll_transmit()).collect()
}

pub fn events(layer: &mut Layer) -> Vec<Event<Peer>> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

/// Status line or request line of a transmit, for readable assertions.
pub fn first_line(t: &Transmit<Peer>) -> String {
    let text = String::from_utf8_lossy(&t.payload);
    text.lines().next().unwrap_or("").to_owned()
}

/// What happened when the clock jumped to a deadline.
#[derive(Debug)]
pub struct Tick {
    pub at_ms: u64,
    pub transmits: Vec<Transmit<Peer>>,
    pub events: Vec<Event<Peer>>,
}

/// Advances by jumping to each `poll_timeout()` up to `until` (inclusive), firing timers.
pub fn run_timers(layer: &mut Layer, origin: Instant, until: Instant) -> Vec<Tick> {
    let mut ticks = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > until {
            break;
        }
        layer.handle_timeout(at);
        ticks.push(Tick {
            at_ms: offset_ms(origin, at),
            transmits: transmits(layer),
            events: events(layer),
        });
        assert!(ticks.len() < 10_000, "timers do not converge");
    }
    ticks
}

/// The offsets (ms) at which `ticks` transmitted something.
pub fn transmit_times(ticks: &[Tick]) -> Vec<u64> {
    ticks
        .iter()
        .flat_map(|t| t.transmits.iter().map(move |_| t.at_ms))
        .collect()
}
