//! Sans-IO SIP for Huddle.
//!
//! This crate owns everything about SIP that can be decided from bytes, parsed values and
//! `Instant`s alone: the message model and parser, stream framing, validation, the four
//! RFC 3261 §17 transaction state machines and digest authentication. It never touches a
//! socket, a task or the clock; Cargo proves it, since tokio is not among its dependencies.
//! The `huddle` crate wraps these cores in thin drivers.
#![forbid(unsafe_code)]
pub mod framing;

pub mod auth;
pub mod build;
pub mod headers;
pub mod idmap;
pub mod message;
pub mod syntax;
pub mod transaction;
pub mod uri;
pub mod validate;

pub use message::{HeaderName, Message, Method};
