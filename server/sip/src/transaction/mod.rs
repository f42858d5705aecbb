//! RFC 3261 §17 transactions, with the RFC 6026 corrections (Accepted state, Timers L and M),
//! as state machines without I/O.
//!
//! This module owns retransmission, response absorption, transaction matching (§17.1.3,
//! §17.2.3 and the RFC 2543 fallback), CANCEL matching (§9.2) and transaction timeouts. It
//! does not own dialogs, routing, 2xx retransmission by a UAS core (§13.3.1.4) or the ACK for
//! a 2xx: those belong to the TU above.
//!
//! # Shape
//!
//! The four machines — [`ClientInvite`], [`ClientNonInvite`], [`ServerInvite`],
//! [`ServerNonInvite`] — each have their RFC figure's states and emit [`Action`]s. The
//! [`TransactionLayer`] owns all of them, matches incoming messages to them, and turns their
//! actions into [`Transmit`]s (bytes plus the driver's opaque destination `D`) and [`Event`]s
//! for the TU. Every input carries the current `Instant`; nothing reads a clock.
//!
//! # Run loop
//!
//! A driver (one tokio task in the `huddle` crate) does, in a loop:
//!
//! ```text
//! select! {
//!     datagram/frame from flow `d` => layer.receive(Message::parse(bytes)?, d, reliable, now),
//!     command from the TU          => layer.send_request(..) / layer.respond(..) / layer.cancel(..),
//!     sleep_until(deadline)        => layer.handle_timeout(now),
//! }
//! while let Some(t) = layer.poll_transmit() { send t.payload to t.to; on failure
//!                                             layer.transport_error(t.key?, now) }
//! while let Some(e) = layer.poll_event()    { hand e to the TU }
//! deadline = layer.poll_timeout();          // None: no timer runs
//! ```
//!
//! A complete exchange, driven by hand:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use huddle_sip::Message;
//! use huddle_sip::build::ResponseBuilder;
//! use huddle_sip::transaction::{Event, LayerConfig, TransactionLayer};
//!
//! let now = Instant::now(); // the driver's clock; the layer never reads one
//! let mut client: TransactionLayer<&str> = TransactionLayer::new(LayerConfig::default()).unwrap();
//! let mut server: TransactionLayer<&str> = TransactionLayer::new(LayerConfig::default()).unwrap();
//! let options = Message::parse(Bytes::from_static(
//!     b"OPTIONS sip:bob@example.test SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP client.test;branch=z9hG4bKdoc1\r\n\
//!       From: <sip:alice@example.test>;tag=a\r\nTo: <sip:bob@example.test>\r\n\
//!       Call-ID: doc1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
//! )).unwrap();
//! let key = client.send_request(options, "server", false, now).unwrap();
//! let out = client.poll_transmit().unwrap();
//! server.receive(Message::parse(out.payload).unwrap(), "client", false, now);
//! let Some(Event::Request { key: skey, msg, .. }) = server.poll_event() else { panic!() };
//! server.respond(skey, ResponseBuilder::new(&msg, 200, "OK").to_tag("b").build(), now).unwrap();
//! let out = server.poll_transmit().unwrap();
//! client.receive(Message::parse(out.payload).unwrap(), "server", false, now);
//! let Some(Event::Response { key: k, msg }) = client.poll_event() else { panic!() };
//! assert_eq!((k, msg.status()), (key, Some(200)));
//! // Timer K (client) and Timer J (server) now keep the transactions to absorb retransmissions.
//! assert!(client.poll_timeout().is_some() && server.poll_timeout().is_some());
//! ```
//!
//! # Invariants
//!
//! - Every transaction ends ([`Event::Terminated`], memory released): by an RFC timer, by a
//!   transport error, or — for a server transaction the TU never answers — by the
//!   configurable [`Timer::Unanswered`] safety net.
//! - The number of live transactions never exceeds [`LayerConfig::max_transactions`]; past it
//!   new requests are [`Event::Rejected`] with [`TransactionError::Overloaded`] (answer 503).
//! - No input panics; malformed messages become [`Event::Rejected`], [`Event::StrayResponse`]
//!   or [`Event::Ack`] with no transaction.
//! - The output queues grow only between drains; drain them after every input.

mod client_invite;
mod client_non_invite;
mod common;
mod config;
mod error;
mod key;
mod layer;
mod server_invite;
mod server_non_invite;
mod timers;

pub use client_invite::ClientInvite;
pub use client_non_invite::ClientNonInvite;
pub use common::{Action, State};
pub use config::{LayerConfig, Timer, TimerConfig};
pub use error::TransactionError;
pub use key::{is_rfc3261_branch, ClientKey, ServerKey, TransactionKey, MAGIC_COOKIE};
pub use layer::{Event, LayerStats, TransactionLayer, Transmit};
pub use server_invite::{AckDisposition, ServerInvite};
pub use server_non_invite::ServerNonInvite;
