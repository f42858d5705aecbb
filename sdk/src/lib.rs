//! The Huddle plugin SDK: the contract between the Huddle server and its plugins.
//!
//! A plugin is a shared library (a Rust `cdylib`, or C) that the server loads at start-up from
//! its configuration. Everything beyond the SIP core — presence, messaging, conferencing, and
//! whatever third parties write — is a plugin. This crate is all a plugin depends on.
//!
//! It has three layers:
//!
//! * [`abi`]: the versioned C ABI — two `#[repr(C)]` tables, one per direction
//!   ([`abi::HuddlePluginDescriptor`], [`abi::HuddleHostApi`]), one exported entry symbol
//!   (`huddle_plugin_entry_v1`), status codes and capability bits. `include/huddle_plugin.h` is
//!   generated from it; C plugins include that header. Its module docs are the rules: versions,
//!   ownership of every pointer, threads, claims, transactions, the store.
//! * The safe layer for Rust plugins: implement [`Plugin`], call [`export_plugin!`], and talk to
//!   the server through the [`Host`] handle. The trampolines the macro generates catch every
//!   panic at the boundary: a panicking callback returns an error code, and the host answers the
//!   request `500` and logs the panic with the plugin's name.
//! * The host side: [`loader::load`] opens and checks a library, [`hosting::PluginInstance`]
//!   drives an instance over a [`hosting::HostServices`] implementation, and [`fake::FakeHost`]
//!   is such an implementation in memory, so a plugin's unit tests run through the real ABI with
//!   no server.
//!
//! # A complete plugin
//!
//! A plugin that answers `OPTIONS sip:counter@…` with how many times it was asked, keeping the
//! count in its store namespace and logging a summary every minute:
//!
//! ```
//! use std::time::Duration;
//! use huddle_sdk::{Capabilities, Claim, Claims, Config, Host, Plugin, Request, Result, TimerId};
//!
//! // The configuration: the `[plugins.config]` table of this plugin's `[[plugins]]` entry.
//! #[derive(serde::Deserialize, Default)]
//! #[serde(default, deny_unknown_fields)]
//! struct CounterConfig {
//!     user: Option<String>,
//! }
//!
//! pub struct Counter {
//!     served: u64,
//! }
//!
//! impl Plugin for Counter {
//!     fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
//!         let config: CounterConfig = config.parse()?;
//!         let user = config.user.as_deref().unwrap_or("counter");
//!         // Route `OPTIONS sip:<user>@<any domain of this server>` to this plugin.
//!         claims.add(Claim::method("OPTIONS").with_user(user));
//!         host.set_timer(Duration::from_secs(60), 0)?;
//!         huddle_sdk::info!(host, "counting OPTIONS to {user}");
//!         Ok(Counter { served: 0 })
//!     }
//!
//!     fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
//!         // Read-modify-write with compare-and-swap: another instance may share the key.
//!         let store = host.store();
//!         let count = loop {
//!             let old = store.get(b"count")?;
//!             let n = old
//!                 .as_deref()
//!                 .and_then(|v| std::str::from_utf8(v).ok())
//!                 .and_then(|s| s.parse::<u64>().ok())
//!                 .unwrap_or(0)
//!                 + 1;
//!             if store
//!                 .compare_and_swap(b"count", old.as_deref(), Some(n.to_string().as_bytes()))?
//!                 .is_ok()
//!             {
//!                 break n;
//!             }
//!         };
//!         self.served += 1;
//!         let body = count.to_string();
//!         let response = request
//!             .response(200, "OK")
//!             .body("text/plain", body.as_bytes())
//!             .build();
//!         // The transaction is answered through the host; `None` only for ACK/CANCEL.
//!         let txn = request.transaction().ok_or(huddle_sdk::Error::UnknownTransaction)?;
//!         host.respond(txn, &response)
//!     }
//!
//!     fn on_timer(&mut self, host: &Host, _timer: TimerId, _token: u64) -> Result<()> {
//!         huddle_sdk::info!(host, "served {} requests", self.served);
//!         host.set_timer(Duration::from_secs(60), 0)?;
//!         Ok(())
//!     }
//! }
//!
//! // The one exported symbol. The capabilities are what the plugin cannot work without.
//! huddle_sdk::export_plugin!(
//!     Counter,
//!     "counter",
//!     "0.1.0",
//!     Capabilities::STORE.with(Capabilities::TIMERS)
//! );
//!
//! // Its unit test: the FakeHost drives it through the C ABI.
//! # fn main() {
//! use huddle_sdk::fake::{sample_request, FakeHost};
//! let host = FakeHost::new();
//! let mut plugin = host.start(&huddle_plugin_export::entry(), "user = \"visits\"").unwrap();
//! for expected in ["1", "2"] {
//!     let txn = plugin.request(sample_request("OPTIONS", "sip:visits@example.test", "")).unwrap();
//!     let response = host.final_response(txn).unwrap();
//!     assert_eq!(response.status(), 200);
//!     assert_eq!(response.message.body(), expected.as_bytes());
//! }
//! assert_eq!(host.get("", b"count").as_deref(), Some(&b"2"[..]));
//! plugin.advance(Duration::from_secs(60)).unwrap();
//! assert!(host.logged(huddle_sdk::Level::Info, "served 2 requests"));
//! # }
//! ```
//!
//! Build it as a `cdylib` (`crate-type = ["cdylib", "rlib"]`: the `rlib` lets its own tests link
//! it), and list it in `huddle.toml`:
//!
//! ```toml
//! [[plugins]]
//! name = "counter"
//! path = "target/release/libhuddle_plugin_counter.so"
//! [plugins.config]
//! user = "visits"
//! ```
//!
//! `sdk/README.md` walks through this from a clean checkout; `plugins/echo` is the template.
//!
//! # The run loop, from the plugin's side
//!
//! The host calls one instance one callback at a time (possibly from different threads over
//! time, hence `Plugin: Send`). The one opt-in exception is incoming RTP: a plugin that
//! registers a thread-safe [`RtpSink`] ([`Host::set_rtp_sink`], ABI 1.7) gets its packets on
//! the host's media thread, concurrently with its callbacks, without the queue. A callback
//! must return quickly: it answers now, or keeps what it
//! needs (the [`Request`], its [`TransactionId`]) and answers later from another callback
//! (a timer, a response, a store change) or from its own thread with a cloned [`Host`]. Host
//! calls never call back into the plugin; their effects (a response to a request the plugin
//! sent, a watch event caused by its own write) arrive as later callbacks.

pub mod abi;
pub mod allocator;
pub mod claims;
mod config;
pub mod dialog;
mod error;
pub mod export;
pub mod fake;
mod host;
pub mod hosting;
pub mod loader;
mod message;
mod raw;
pub mod rtcp;
mod types;

pub use allocator::HostAllocator;
pub use bytes::Bytes;
pub use claims::{Claim, Claims};
pub use config::Config;
pub use error::{ConfigError, Error, Result, SdpRefusal};
pub use host::{Host, RtpSink, SharedStore, Store};
pub use huddle_sip as sip;
pub use huddle_sip::message::RequestParts;
pub use huddle_sip::{HeaderName, Message, Method};
pub use message::{random_token, tagged, NewRequest, Request, Response};
/// Re-exported so plugins can derive `Deserialize` for their configuration without depending on
/// serde themselves: `#[derive(huddle_sdk::serde::Deserialize)]` with
/// `#[serde(crate = "huddle_sdk::serde")]`.
pub use serde;
pub use types::{
    BatchOp, Capabilities, HangupReason, Level, MediaSessionId, OutgoingRtp, RegistrationEvent,
    RegistrationKind, RequestId, RequestInfo, ScanPage, StoreChange, TimerId, TransactionId,
    Transport, WatchId,
};

/// A plugin, in safe Rust. [`export_plugin!`] turns an implementation into the exported C ABI.
///
/// Every method gets the [`Host`] handle; every method but [`init`](Plugin::init) and
/// [`handle_request`](Plugin::handle_request) has a default that does nothing. A returned `Err`
/// is logged by the SDK and passed to the host as its status code; for
/// [`handle_request`](Plugin::handle_request) the host then answers the request (500, or 503
/// for [`Error::Busy`]) unless the plugin already sent a final response. A panic is caught at
/// the boundary and treated like an error ([`Error::Panic`]); the instance stays loaded and
/// keeps receiving calls unless the host's configuration disables panicking plugins.
///
/// Callbacks for a capability arrive only if the plugin required it in `export_plugin!`
/// (registration events) or used it (timers it set, watches it created, requests it sent,
/// media sessions it answered).
pub trait Plugin: Send + Sized + 'static {
    /// Creates the instance from its configuration and says what it handles by adding to
    /// `claims` (see [`claims`] for the rules). An error refuses to start; the SDK logs it, and
    /// the server names the plugin and refuses to start too.
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self>;

    /// A request that matched one of the claims. Answer it through [`Host::respond`] (now or
    /// later) unless [`Request::transaction`] is `None` (ACK, CANCEL).
    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()>;

    /// A response to a request sent with [`Host::send_request`]: provisional ones, then exactly
    /// one final one (a host-made 408/480/503 when nothing answered).
    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        let _ = (host, response);
        Ok(())
    }

    /// A timer set with [`Host::set_timer`] fired.
    fn on_timer(&mut self, host: &Host, timer: TimerId, token: u64) -> Result<()> {
        let _ = (host, timer, token);
        Ok(())
    }

    /// A change under a prefix watched with [`Store::watch`] or [`SharedStore::watch`].
    fn on_store_change(&mut self, host: &Host, change: StoreChange) -> Result<()> {
        let _ = (host, change);
        Ok(())
    }

    /// A user came online, went offline or changed bindings (requires
    /// [`Capabilities::REGISTRATION_EVENTS`]).
    fn on_registration(&mut self, host: &Host, event: RegistrationEvent) -> Result<()> {
        let _ = (host, event);
        Ok(())
    }

    /// A media session created with [`Host::media_answer`] is connected.
    fn media_ready(&mut self, host: &Host, session: MediaSessionId) -> Result<()> {
        let _ = (host, session);
        Ok(())
    }

    /// A decrypted RTP packet arrived on stream `mid`. Called per packet: keep it cheap. Not
    /// called while the plugin has an [`RtpSink`] registered ([`Host::set_rtp_sink`], ABI
    /// 1.7): the host then hands packets to the sink on its media thread instead.
    fn incoming_rtp(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        let _ = (host, session, mid, packet);
        Ok(())
    }

    /// RTCP for a session: the peer's key-frame requests for what the plugin sends, and
    /// receiver reports for streams the host forwards into it ([`rtcp`] tells them apart).
    fn incoming_rtcp(&mut self, host: &Host, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        let _ = (host, session, packet);
        Ok(())
    }

    /// A new estimate of the bandwidth towards the peer of `session`, bits per second
    /// (ABI 1.1; hosts before it never call this).
    fn media_bitrate(&mut self, host: &Host, session: MediaSessionId, bps: u64) -> Result<()> {
        let _ = (host, session, bps);
        Ok(())
    }

    /// A media session ended; its id is no longer valid.
    fn media_hangup(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        reason: HangupReason,
    ) -> Result<()> {
        let _ = (host, session, reason);
        Ok(())
    }

    /// (ABI 1.2) An admin request from the host's admin HTTP API: `request` is a JSON object
    /// (`{"command": "...", ...}`, commands the plugin documents). Return the answer, a JSON
    /// value as text; a command that failed answers `{"error": {"code", "message"}}` with a
    /// code of `not_found`, `bad_request`, `conflict` or `unsupported` (see [`abi`], "Admin
    /// requests and events"). Runs on the plugin's thread like every callback: keep it quick.
    /// The default takes no admin requests ([`Error::NotSupported`]).
    fn admin_request(&mut self, host: &Host, request: &str) -> Result<String> {
        let _ = (host, request);
        Err(Error::NotSupported)
    }

    /// The instance is being destroyed: stop threads, cancel what should not outlive it. The
    /// host is still usable here; after this returns the plugin value is dropped and every
    /// [`Host`] clone fails with [`Error::BadState`].
    fn shutdown(&mut self, host: &Host) {
        let _ = host;
    }
}

/// Exports a [`Plugin`] as a Huddle plugin library:
/// `export_plugin!(Type, "name", "version", capabilities)`.
///
/// * `name`: a string literal of ASCII letters, digits, `-` and `_` (at most 64 bytes): the
///   plugin's store namespace is `plugin/<name>/`. Checked at compile time.
/// * `version`: a string literal (or `env!("CARGO_PKG_VERSION")`).
/// * `capabilities`: a constant [`Capabilities`] expression: what the plugin cannot work
///   without (`Capabilities::SEND_REQUEST.with(Capabilities::TIMERS)`). A host lacking one
///   refuses to load the plugin.
///
/// It generates a module `huddle_plugin_export` holding the static descriptor, the exported
/// `huddle_plugin_entry_v1` symbol and `entry()`, the validated entry for
/// [`fake::FakeHost::start`]. Use it once per crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty, $name:literal, $version:expr, $caps:expr $(,)?) => {
        /// The plugin's ABI export, generated by `huddle_sdk::export_plugin!`.
        // `#[no_mangle]` is what the `unsafe_code` lint flags; the SDK owns the ABI code.
        #[allow(unsafe_code)]
        pub mod huddle_plugin_export {
            #[allow(unused_imports)]
            use super::*;

            static DESCRIPTOR: $crate::export::ExportedDescriptor =
                $crate::export::descriptor::<$plugin>(
                    ::core::concat!($name, "\0"),
                    ::core::concat!($version, "\0"),
                    $caps,
                );

            /// The entry symbol the host looks up: returns the static descriptor.
            #[no_mangle]
            pub extern "C" fn huddle_plugin_entry_v1() -> *const $crate::abi::HuddlePluginDescriptor
            {
                DESCRIPTOR.as_ptr()
            }

            /// The validated entry of this plugin, for starting it on a `FakeHost` in tests.
            pub fn entry() -> $crate::hosting::PluginEntry {
                $crate::hosting::PluginEntry::from_exported(&DESCRIPTOR)
                    .expect("export::descriptor builds only valid descriptors")
            }
        }
    };
}

/// The entry of a [`Plugin`] type without exporting a symbol:
/// `plugin_entry!(Type, "name", "version", capabilities)` evaluates to a
/// [`hosting::PluginEntry`]. For tests that run several plugin types in one process (a symbol
/// can be exported only once); the descriptor and trampolines are the same as
/// [`export_plugin!`]'s.
#[macro_export]
macro_rules! plugin_entry {
    ($plugin:ty, $name:literal, $version:expr, $caps:expr $(,)?) => {{
        static DESCRIPTOR: $crate::export::ExportedDescriptor =
            $crate::export::descriptor::<$plugin>(
                ::core::concat!($name, "\0"),
                ::core::concat!($version, "\0"),
                $caps,
            );
        $crate::hosting::PluginEntry::from_exported(&DESCRIPTOR)
            .expect("export::descriptor builds only valid descriptors")
    }};
}
