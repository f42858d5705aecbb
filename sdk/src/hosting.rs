//! The host side of the boundary, for the server's plugin host and for [`crate::fake::FakeHost`]:
//! validate a descriptor, implement the host table in safe Rust, and drive a plugin instance.
//!
//! A host implements [`HostServices`] (one value per plugin instance: it knows whose namespace
//! "own" is) and calls [`PluginInstance::start`]. The SDK builds the `HuddleHostApi` table whose
//! `extern "C"` functions call the services, with every argument checked and every panic
//! caught, and lends and frees [`abi::HuddleHostBuf`]s itself; so a host written in Rust needs
//! no `unsafe` of its own. [`PluginInstance`] then calls the plugin's callbacks with safe
//! arguments and destroys the instance when dropped.
//!
//! What the host must still do itself (the ABI's rules, see [`crate::abi`]):
//!
//! * call one instance from one thread at a time (`PluginInstance` methods take `&mut self`;
//!   typically one task or thread per plugin drains a bounded queue, and a full queue answers
//!   `503` with `Retry-After`);
//! * never call into the instance from inside one of its [`HostServices`] methods (queue the
//!   work instead: a timer, a watch event, a response);
//! * answer a request whose [`PluginInstance::handle_request`] failed and that got no final
//!   response: [`Error::sip_status`] gives 500 or 503;
//! * check claims of different plugins against each other ([`Claim::overlaps`]) after every
//!   plugin's `init`, and route requests with [`Claim::matches_request`];
//! * keep the library loaded for as long as any instance exists (the loader never unloads).
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::net::{IpAddr, Ipv4Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use huddle_sip::message::{PartsError, RequestParts};
use huddle_sip::Message;

use crate::abi::{
    self, HuddleClaim, HuddleField, HuddleHeader, HuddleHostApi, HuddleHostBuf,
    HuddlePluginDescriptor, HuddleRegistrationEvent, HuddleRequestInfo, HuddleRequestParts,
    HuddleScanVisitor, HuddleStatusResponse,
};
use crate::claims::Claim;
use crate::error::{Error, Result};
use crate::export::ExportedDescriptor;
use crate::raw;
use crate::types::{
    BatchOp, Capabilities, HangupReason, Level, MediaSessionId, OutgoingRtp, RegistrationEvent,
    RequestId, RequestInfo, ScanPage, StoreChange, TimerId, TransactionId, WatchId,
};

/// What a host offers one plugin instance, in safe Rust. The SDK turns it into the
/// `HuddleHostApi` table. Methods are called from any thread (the plugin's callbacks run on the
/// host's threads, and plugins may call from their own), so implementations are `Send + Sync`.
///
/// Everything except [`capabilities`](Self::capabilities), [`log`](Self::log) and
/// [`respond`](Self::respond) has a default that answers [`Error::NotSupported`]; the SDK only
/// puts a function in the table when its capability bit is set.
///
/// Namespaces: `ns == ""` is the instance's own namespace (`plugin/<name>/`); anything else is a
/// shared namespace name the plugin asked to read (`location`, `plugin/<other>`), which the host
/// allows or refuses with [`Error::PermissionDenied`]. Keys are relative to the namespace.
pub trait HostServices: Send + Sync + 'static {
    /// The `HUDDLE_CAP_*` bits this host provides to the instance.
    fn capabilities(&self) -> Capabilities;

    /// A log line from the plugin.
    fn log(&self, level: Level, message: &str);

    /// A response on server transaction `txn` (complete bytes, not yet checked by the SDK).
    fn respond(&self, txn: TransactionId, response: &[u8]) -> Result<()>;

    /// (ABI 1.12) A final response on server transaction `txn` given as its status, reason
    /// phrase and extra header fields, for the host to write from the request it holds. The
    /// SDK has checked them ([`check_status_response`]): status 200..=699, no line breaks,
    /// field names that are tokens and not among the fields the host writes, at most
    /// [`abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS`] of them. See [`crate::abi`], "Final responses
    /// by status". The default answers [`Error::NotSupported`]: the plugin then writes the
    /// bytes and calls [`respond`](Self::respond).
    fn respond_status(
        &self,
        txn: TransactionId,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let _ = (txn, status, reason, headers);
        Err(Error::NotSupported)
    }

    /// (ABI 1.4) The plugin gives up server transaction `txn` and asks that its request be
    /// routed again as if its Request-URI were `uri` (not yet checked by the SDK beyond UTF-8).
    /// See [`crate::abi`], "Retargeting". The default answers [`Error::NotSupported`].
    fn retarget(&self, txn: TransactionId, uri: &str) -> Result<()> {
        let _ = (txn, uri);
        Err(Error::NotSupported)
    }

    /// (ABI 1.5) Whether the host has an account named `user` (UTF-8, not yet checked by the
    /// SDK otherwise). Offered with [`Capabilities::LOCATION`]. See [`crate::abi`], "Users".
    /// The default answers [`Error::NotSupported`].
    fn user_exists(&self, user: &str) -> Result<bool> {
        let _ = user;
        Err(Error::NotSupported)
    }

    /// A claim the plugin makes during `init`, already validated by the SDK
    /// ([`Claim::validate`]). Refuse it to make `init` fail; the default accepts. Conflicts
    /// between plugins are checked after every `init`, not here.
    fn check_claim(&self, claim: &Claim) -> Result<()> {
        let _ = claim;
        Ok(())
    }

    /// A request to send (complete bytes without Via).
    fn send_request(&self, request: &[u8]) -> Result<RequestId> {
        let _ = request;
        Err(Error::NotSupported)
    }

    /// (ABI 1.10) A request to send, as its parts (not yet checked by the SDK beyond UTF-8):
    /// see [`crate::abi`], "Requests in parts". The default writes the bytes (refusing, as
    /// [`Message::from_parts`] does, parts that are no request) and calls
    /// [`send_request`](Self::send_request), so a host that implements only the byte form
    /// serves both; a host that can take the written message as it is overrides it.
    fn send_request_parts(&self, parts: &RequestParts<'_>) -> Result<RequestId> {
        let message = Message::from_parts(parts, usize::MAX).map_err(|e| match e {
            PartsError::TooLarge(_) | PartsError::TooManyHeaders(_) => Error::TooLarge,
            _ => Error::InvalidArgument,
        })?;
        self.send_request(message.raw())
    }

    /// Reads a key.
    fn store_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _ = (ns, key);
        Err(Error::NotSupported)
    }

    /// Writes a key in the own namespace.
    fn store_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let _ = (key, value);
        Err(Error::NotSupported)
    }

    /// Deletes a key in the own namespace; `true` if it was present.
    fn store_delete(&self, key: &[u8]) -> Result<bool> {
        let _ = key;
        Err(Error::NotSupported)
    }

    /// (ABI 1.3) Applies `ops` in the own namespace in one durable commit, all or none;
    /// returns once durable. [`Error::TooLarge`] for a batch over the host's limits.
    fn store_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let _ = ops;
        Err(Error::NotSupported)
    }

    /// Compare-and-swap in the own namespace (`None`: absent / delete). The inner `Err` carries
    /// the current value on a mismatch.
    fn store_compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), Option<Vec<u8>>>> {
        let _ = (key, expected, new);
        Err(Error::NotSupported)
    }

    /// One page of a prefix scan; `limit == 0` means the host's maximum page.
    fn store_scan(
        &self,
        ns: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        let _ = (ns, prefix, start_after, limit);
        Err(Error::NotSupported)
    }

    /// Starts a prefix watch; changes go to [`PluginInstance::on_store_change`].
    fn store_watch(&self, ns: &str, prefix: &[u8]) -> Result<WatchId> {
        let _ = (ns, prefix);
        Err(Error::NotSupported)
    }

    /// Ends a watch.
    fn store_unwatch(&self, watch: WatchId) -> Result<()> {
        let _ = watch;
        Err(Error::NotSupported)
    }

    /// Arms a one-shot timer; it fires through [`PluginInstance::on_timer`].
    fn set_timer(&self, delay: Duration, token: u64) -> Result<TimerId> {
        let _ = (delay, token);
        Err(Error::NotSupported)
    }

    /// Cancels a timer ([`Error::NotFound`] if it fired).
    fn cancel_timer(&self, timer: TimerId) -> Result<()> {
        let _ = timer;
        Err(Error::NotSupported)
    }

    /// Answers an SDP offer (`None`: new session).
    fn media_answer(
        &self,
        session: Option<MediaSessionId>,
        offer: &[u8],
    ) -> Result<(MediaSessionId, Vec<u8>)> {
        let _ = (session, offer);
        Err(Error::NotSupported)
    }

    /// Sends an RTP packet.
    fn media_send_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]) -> Result<()> {
        let _ = (session, mid, packet);
        Err(Error::NotSupported)
    }

    /// Sends an RTCP packet.
    fn media_send_rtcp(&self, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        let _ = (session, packet);
        Err(Error::NotSupported)
    }

    /// Requests a key frame.
    fn media_request_keyframe(&self, session: MediaSessionId, mid: &str) -> Result<()> {
        let _ = (session, mid);
        Err(Error::NotSupported)
    }

    /// Forwards a stream inside the host (`src_mid == ""`: stop).
    fn media_forward(
        &self,
        src: MediaSessionId,
        src_mid: &str,
        dst: MediaSessionId,
        dst_mid: &str,
    ) -> Result<()> {
        let _ = (src, src_mid, dst, dst_mid);
        Err(Error::NotSupported)
    }

    /// (ABI 1.3) Taps (`on`) or untaps stream `mid` of any plugin's media session.
    fn media_tap(&self, session: MediaSessionId, mid: &str, on: bool) -> Result<()> {
        let _ = (session, mid, on);
        Err(Error::NotSupported)
    }

    /// Closes a media session.
    fn media_close(&self, session: MediaSessionId) -> Result<()> {
        let _ = session;
        Err(Error::NotSupported)
    }

    /// (ABI 1.7) Registers (`Some`) or clears (`None`) the instance's RTP sink: from then on
    /// incoming RTP for the instance (its sessions and its taps) goes to
    /// [`RegisteredRtpSink::deliver`], called on the media thread, instead of the queued
    /// [`PluginInstance::incoming_rtp`]. Must not return before the previous sink is dropped
    /// and no delivery of it is running: the plugin frees it once this returns. Never called
    /// from inside a delivery (the SDK answers [`Error::BadState`] itself). Drop the sink
    /// before dropping the [`PluginInstance`] (the SDK's `destroy` clears it too).
    fn media_rtp_sink(&self, sink: Option<RegisteredRtpSink>) -> Result<()> {
        let _ = sink;
        Err(Error::NotSupported)
    }

    /// (ABI 1.7) Sends several RTP packets, each as [`media_send_rtp`](Self::media_send_rtp)
    /// would, in one go: entries that fail are skipped and the first failure returned;
    /// [`Error::Busy`] when none could be sent. The default sends them one by one.
    fn media_send_rtp_batch(&self, packets: &[OutgoingRtp<'_>]) -> Result<()> {
        let mut first = Ok(());
        for p in packets {
            if let Err(e) = self.media_send_rtp(p.session, p.mid, p.packet) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// (ABI 1.2) An event for the webhooks: `kind` already checked (`[a-z0-9._-]{1,64}`),
    /// `details` the plugin's JSON text (not yet checked). Must not block.
    fn emit_event(&self, kind: &str, details: &str) -> Result<()> {
        let _ = (kind, details);
        Err(Error::NotSupported)
    }

    /// (ABI 1.8) Whether an event of `kind` (already checked) raised now would go anywhere.
    /// Offered with [`Capabilities::EVENTS`]. See [`crate::abi`], "Events nobody takes". The
    /// default says yes: a host that cannot tell has the plugin build every event, as before.
    fn event_wanted(&self, kind: &str) -> Result<bool> {
        let _ = kind;
        Ok(true)
    }
}

thread_local! {
    /// Set while this thread runs a plugin's RTP sink ([`RegisteredRtpSink::deliver`]): a
    /// `media_rtp_sink` call from inside it would wait for itself.
    static IN_RTP_SINK: Cell<bool> = const { Cell::new(false) };
}

/// (ABI 1.7) A plugin's RTP sink as the host holds it ([`HostServices::media_rtp_sink`]): the
/// function and user pointer the plugin registered. Not `Clone`: the host keeps the one value
/// it was given and drops it when the plugin replaces or clears it.
pub struct RegisteredRtpSink {
    sink: abi::HuddleRtpSinkFn,
    user: *mut c_void,
}

// SAFETY: the plugin promises (abi module docs, "Incoming RTP on the media thread") that its
// sink is callable from any thread, concurrently, with this `user`, until the host drops it.
unsafe impl Send for RegisteredRtpSink {}
// SAFETY: as above: concurrent calls are part of the sink's contract.
unsafe impl Sync for RegisteredRtpSink {}

impl std::fmt::Debug for RegisteredRtpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredRtpSink")
            .field("user", &self.user)
            .finish()
    }
}

impl RegisteredRtpSink {
    /// Delivers one decrypted RTP packet of stream `mid` of `session`, on the calling thread.
    /// [`Error::Panic`] when the plugin's sink panicked (caught in the plugin); any other
    /// outcome is `Ok` (the sink's return carries nothing else).
    pub fn deliver(&self, session: MediaSessionId, mid: &str, packet: &[u8]) -> Result<()> {
        IN_RTP_SINK.with(|s| s.set(true));
        // SAFETY: the plugin registered `sink` and `user` for exactly this, valid until the host
        // drops this value (which it does before `destroy`); the slices are borrowed for the
        // call.
        let code = unsafe {
            (self.sink)(
                self.user,
                session.0,
                mid.as_ptr(),
                mid.len(),
                packet.as_ptr(),
                packet.len(),
            )
        };
        IN_RTP_SINK.with(|s| s.set(false));
        if code == abi::HUDDLE_ERR_PANIC {
            Err(Error::Panic)
        } else {
            Ok(())
        }
    }
}

/// What a plugin says about itself, read from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name (its store namespace is `plugin/<name>/`).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The ABI major version it was built for.
    pub abi_major: u32,
    /// The ABI minor version it was built against.
    pub abi_minor: u32,
    /// What it requires from the host.
    pub capabilities: Capabilities,
}

/// Why a descriptor was refused. The loader wraps it with the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The entry function returned null.
    #[error("the entry function returned no descriptor (null)")]
    Null,
    /// The descriptor is not aligned for its type.
    #[error("the descriptor is misaligned")]
    Misaligned,
    /// Another ABI major version.
    #[error(
        "built for plugin ABI {found_major}.{found_minor}, but this host speaks ABI {expected}.x"
    )]
    AbiMajor {
        /// The descriptor's major.
        found_major: u32,
        /// The descriptor's minor.
        found_minor: u32,
        /// The host's major.
        expected: u32,
    },
    /// `struct_size` smaller than the layout of its version.
    #[error("descriptor struct_size is {struct_size} bytes, smaller than the {minimum} bytes of the ABI 1.0 layout")]
    TooSmall {
        /// The descriptor's `struct_size`.
        struct_size: usize,
        /// The smallest acceptable size.
        minimum: usize,
    },
    /// The name is null, not NUL-terminated within 65 bytes, or not `[A-Za-z0-9_-]+`.
    #[error("invalid plugin name: {0}")]
    BadName(&'static str),
    /// The version is null, not NUL-terminated within 256 bytes, or not UTF-8.
    #[error("invalid plugin version string")]
    BadVersion,
    /// A mandatory callback is null.
    #[error("plugin `{plugin}`: mandatory callback `{callback}` is missing ({why})")]
    MissingCallback {
        /// The plugin's name.
        plugin: String,
        /// The callback's field name.
        callback: &'static str,
        /// Why it is mandatory (always, or which capability requires it).
        why: &'static str,
    },
    /// The plugin requires capabilities the host does not provide.
    #[error("plugin `{plugin}` requires capabilities this host does not provide: {missing} (host provides: {host})")]
    MissingCapabilities {
        /// The plugin's name.
        plugin: String,
        /// What is missing.
        missing: Capabilities,
        /// What the host provides.
        host: Capabilities,
    },
}

/// A plugin's validated descriptor: the entry point for [`PluginInstance::start`]. Made by
/// [`crate::loader::load`] for a shared library, or by `export_plugin!`'s generated `entry()`
/// for a plugin linked into the same process (tests).
#[derive(Debug, Clone)]
pub struct PluginEntry {
    raw: &'static HuddlePluginDescriptor,
    info: PluginInfo,
}

impl PluginEntry {
    /// The entry of a descriptor built by [`crate::export::descriptor`].
    pub fn from_exported(descriptor: &'static ExportedDescriptor) -> Result<Self, DescriptorError> {
        // SAFETY: an `ExportedDescriptor` can only be built by the SDK's `descriptor` function,
        // which fills every field with SDK trampolines and static NUL-terminated strings.
        unsafe { Self::from_raw(descriptor.as_ptr()) }
    }

    /// Validates a raw descriptor: version, size, name, version string and mandatory callbacks
    /// (see [`crate::abi`], "Versioning rules"). Capabilities are checked against a host with
    /// [`PluginEntry::check_capabilities`].
    ///
    /// # Safety
    /// `descriptor` must be null or point to a descriptor (at least its first three fields and
    /// `struct_size` bytes) that, with its strings and callbacks, stays valid for the rest of
    /// the process; this holds for the entry symbol's result in a library that is never
    /// unloaded, if the library honours the ABI.
    pub unsafe fn from_raw(
        descriptor: *const HuddlePluginDescriptor,
    ) -> Result<Self, DescriptorError> {
        if descriptor.is_null() {
            return Err(DescriptorError::Null);
        }
        #[repr(C)]
        struct Header {
            abi_major: u32,
            abi_minor: u32,
            struct_size: usize,
        }
        // SAFETY: the caller's promise covers the three header fields, which every descriptor
        // starts with; reading them first avoids reading past a smaller struct.
        let header = unsafe { std::ptr::read_unaligned(descriptor.cast::<Header>()) };
        if header.abi_major != abi::HUDDLE_PLUGIN_ABI_MAJOR {
            return Err(DescriptorError::AbiMajor {
                found_major: header.abi_major,
                found_minor: header.abi_minor,
                expected: abi::HUDDLE_PLUGIN_ABI_MAJOR,
            });
        }
        if header.struct_size < abi::HUDDLE_PLUGIN_DESCRIPTOR_MIN_SIZE {
            return Err(DescriptorError::TooSmall {
                struct_size: header.struct_size,
                minimum: abi::HUDDLE_PLUGIN_DESCRIPTOR_MIN_SIZE,
            });
        }
        if descriptor.align_offset(std::mem::align_of::<HuddlePluginDescriptor>()) != 0 {
            return Err(DescriptorError::Misaligned);
        }
        // A descriptor of an older minor is smaller than ours: copy the part its `struct_size`
        // covers into a full-size table whose later entries are null ("absent"), rather than
        // reading past its end. The copy lives as long as the library (never unloaded).
        let size = header
            .struct_size
            .min(std::mem::size_of::<HuddlePluginDescriptor>());
        // SAFETY: every field of the descriptor is an integer, a raw pointer or an
        // `Option<fn>`, for which all-zero bytes are valid (0, null, `None`).
        let mut copy: HuddlePluginDescriptor = unsafe { std::mem::zeroed() };
        // SAFETY: non-null and at least `size` readable bytes (the caller's promise, and
        // `size <= struct_size`); the destination is a local of at least `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                descriptor.cast::<u8>(),
                (&mut copy as *mut HuddlePluginDescriptor).cast::<u8>(),
                size,
            );
        }
        let raw: &'static HuddlePluginDescriptor = Box::leak(Box::new(copy));
        // SAFETY: the strings are static per the caller's promise; reads stop at the first NUL
        // or at the bound.
        let name = unsafe { bounded_c_str(raw.name, 65) }.ok_or(DescriptorError::BadName(
            "null or not NUL-terminated within 65 bytes",
        ))?;
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            })
            .ok_or(DescriptorError::BadName(
                "must be 1 to 64 ASCII letters, digits, '-' or '_'",
            ))?;
        // SAFETY: as for the name.
        let version = unsafe { bounded_c_str(raw.version, 256) }
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or(DescriptorError::BadVersion)?;
        let info = PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            abi_major: raw.abi_major,
            abi_minor: raw.abi_minor,
            capabilities: Capabilities::from_bits(raw.capabilities),
        };
        let missing = |callback: &'static str, why: &'static str| {
            Err(DescriptorError::MissingCallback {
                plugin: info.name.clone(),
                callback,
                why,
            })
        };
        let caps = info.capabilities;
        let always = "always required";
        if raw.init.is_none() {
            return missing("init", always);
        }
        if raw.destroy.is_none() {
            return missing("destroy", always);
        }
        if raw.handle_request.is_none() {
            return missing("handle_request", always);
        }
        if caps.contains(Capabilities::SEND_REQUEST) && raw.handle_response.is_none() {
            return missing("handle_response", "required by capability send_request");
        }
        if caps.contains(Capabilities::TIMERS) && raw.on_timer.is_none() {
            return missing("on_timer", "required by capability timers");
        }
        if caps.contains(Capabilities::STORE_WATCH) && raw.on_store_change.is_none() {
            return missing("on_store_change", "required by capability store_watch");
        }
        if caps.contains(Capabilities::REGISTRATION_EVENTS) && raw.on_registration.is_none() {
            return missing(
                "on_registration",
                "required by capability registration_events",
            );
        }
        if caps.contains(Capabilities::MEDIA) {
            let media = "required by capability media";
            if raw.media_ready.is_none() {
                return missing("media_ready", media);
            }
            if raw.incoming_rtp.is_none() {
                return missing("incoming_rtp", media);
            }
            if raw.incoming_rtcp.is_none() {
                return missing("incoming_rtcp", media);
            }
            if raw.media_hangup.is_none() {
                return missing("media_hangup", media);
            }
        }
        Ok(PluginEntry { raw, info })
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The raw descriptor.
    pub fn raw(&self) -> &'static HuddlePluginDescriptor {
        self.raw
    }

    /// Refuses the plugin when it requires a capability `host` lacks (bits unknown to the host
    /// count as lacking).
    pub fn check_capabilities(&self, host: Capabilities) -> Result<(), DescriptorError> {
        let missing = self.info.capabilities.without(host);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DescriptorError::MissingCapabilities {
                plugin: self.info.name.clone(),
                missing,
                host,
            })
        }
    }
}

/// Reads a NUL-terminated string of at most `max` bytes including the NUL.
///
/// # Safety
/// `ptr` must be null or point to readable bytes up to the first NUL or `max` bytes.
unsafe fn bounded_c_str(ptr: *const c_char, max: usize) -> Option<&'static [u8]> {
    if ptr.is_null() {
        return None;
    }
    let p = ptr.cast::<u8>();
    for i in 0..max {
        // SAFETY: within the string up to its NUL (the caller's promise); we stop at the NUL.
        if unsafe { *p.add(i) } == 0 {
            // SAFETY: the `i` bytes before the NUL were just read and are static.
            return Some(unsafe { std::slice::from_raw_parts(p, i) });
        }
    }
    None
}

/// Why a plugin instance did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The descriptor does not fit this host (capabilities).
    #[error(transparent)]
    Incompatible(#[from] DescriptorError),
    /// The plugin's `init` failed (its log says why).
    #[error("plugin `{plugin}` failed to initialise: {error}")]
    Init {
        /// The plugin's name.
        plugin: String,
        /// What `init` returned.
        error: Error,
    },
}

/// The table and services of one instance. Lives at a fixed heap address from `start` until
/// after `destroy` returns; `api.ctx` points back at it.
struct Bridge {
    api: HuddleHostApi,
    services: Arc<dyn HostServices>,
    /// `Some` only while `init` runs: claims are accepted then and only then.
    claims: Mutex<Option<Vec<Claim>>>,
}

/// A started plugin instance. Calls go to the plugin's callbacks; dropping it destroys the
/// instance (the plugin's `destroy`), then frees the host table.
///
/// `Send` but not `Sync`: move it to the thread or task that drives the plugin; `&mut self`
/// keeps calls one at a time, as the ABI requires.
pub struct PluginInstance {
    entry: PluginEntry,
    instance: *mut c_void,
    bridge: NonNull<Bridge>,
    claims: Vec<Claim>,
    /// The index handed with a request (ABI 1.9), kept between calls for its allocation.
    fields: Vec<HuddleField>,
}

// SAFETY: the ABI lets the host call an instance from any thread as long as calls do not
// overlap, which `&mut self` guarantees; the bridge's services are `Send + Sync`.
unsafe impl Send for PluginInstance {}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.entry.info)
            .field("claims", &self.claims)
            .finish()
    }
}

impl PluginInstance {
    /// Checks capabilities, builds the host table over `services` and calls the plugin's
    /// `init` with `config` (the instance's `[plugins.config]` table as TOML text).
    pub fn start(
        entry: &PluginEntry,
        services: Arc<dyn HostServices>,
        config: &str,
    ) -> Result<PluginInstance, StartError> {
        let caps = services.capabilities();
        entry.check_capabilities(caps)?;
        let api = host_table(caps);
        let bridge = NonNull::from(Box::leak(Box::new(Bridge {
            api,
            services,
            claims: Mutex::new(Some(Vec::new())),
        })));
        // SAFETY: freshly allocated and not yet shared: the only reference.
        unsafe { (*bridge.as_ptr()).api.ctx = bridge.as_ptr().cast::<c_void>() };
        let init = entry.raw.init.expect("validated: init is mandatory");
        let mut instance: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table and its ctx live until `Drop` (or the failure path below), after
        // `destroy`; the config is borrowed for the call.
        let code = unsafe {
            init(
                &(*bridge.as_ptr()).api,
                config.as_ptr(),
                config.len(),
                &mut instance,
            )
        };
        // SAFETY: the bridge is alive; claims are only touched under its mutex.
        let claims = unsafe { bridge.as_ref() }
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        if let Err(error) = Error::from_code(code) {
            // SAFETY: `init` failed, so the plugin holds no reference to the table any more
            // (ABI); the bridge came from `Box::leak` above and is freed once.
            drop(unsafe { Box::from_raw(bridge.as_ptr()) });
            return Err(StartError::Init {
                plugin: entry.info.name.clone(),
                error,
            });
        }
        Ok(PluginInstance {
            entry: entry.clone(),
            instance,
            bridge,
            claims,
            fields: Vec::new(),
        })
    }

    /// The plugin's name, version, ABI and capabilities.
    pub fn info(&self) -> &PluginInfo {
        &self.entry.info
    }

    /// What the plugin claimed during `init`, in order.
    pub fn claims(&self) -> &[Claim] {
        &self.claims
    }

    /// Delivers a request (complete bytes). `txn` is `None` for ACK and for CANCEL (with
    /// `info.related` naming the INVITE). On `Err`, answer the request with
    /// [`Error::sip_status`] unless the plugin already sent a final response.
    pub fn handle_request(
        &mut self,
        txn: Option<TransactionId>,
        request: &[u8],
        info: &RequestInfo,
    ) -> Result<()> {
        self.fields.clear();
        self.deliver(txn, request, None, info)
    }

    /// Like [`PluginInstance::handle_request`] for a request the host parsed: its index goes
    /// with the bytes (ABI 1.9, `HuddleRequestInfo::fields`), so the plugin need not split
    /// the header section again.
    pub fn handle_message(
        &mut self,
        txn: Option<TransactionId>,
        request: &Message,
        info: &RequestInfo,
    ) -> Result<()> {
        self.fields.clear();
        let index = request.index_fields().map(|fields| {
            self.fields.extend(fields.map(|f| HuddleField {
                line_start: f.line.start,
                line_end: f.line.end,
                value_start: f.value.start,
                value_end: f.value.end,
            }));
            let body = request.body_span();
            // Offsets fit in `u32`: the message's own spans are `u32`.
            [
                request.start_line_end() as u32,
                request.headers_end() as u32,
                body.start,
                body.end,
            ]
        });
        self.deliver(txn, request.raw(), index, info)
    }

    /// `index`: start line end, headers end, body start and end, with `self.fields`.
    fn deliver(
        &mut self,
        txn: Option<TransactionId>,
        request: &[u8],
        index: Option<[u32; 4]>,
        info: &RequestInfo,
    ) -> Result<()> {
        let f = self.entry.raw.handle_request.ok_or(Error::NotSupported)?;
        let mut ip_buf = [0u8; IP_TEXT_MAX];
        let (source_family, source_addr, ip) = match info.source.map(|s| s.ip()) {
            Some(IpAddr::V4(v4)) => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&v4.octets());
                (abi::HUDDLE_ADDR_IPV4, addr, ipv4_text(v4, &mut ip_buf))
            }
            Some(IpAddr::V6(v6)) => (
                abi::HUDDLE_ADDR_IPV6,
                v6.octets(),
                ip_text(IpAddr::V6(v6), &mut ip_buf),
            ),
            None => (abi::HUDDLE_ADDR_NONE, [0; 16], ""),
        };
        let user = info.auth_user.as_deref().unwrap_or("");
        let [start_line_end, headers_end, body_start, body_end] = index.unwrap_or_default();
        let (fields, fields_len) = match index {
            Some(_) => (self.fields.as_ptr(), self.fields.len()),
            None => (std::ptr::null(), 0),
        };
        let raw_info = HuddleRequestInfo {
            struct_size: std::mem::size_of::<HuddleRequestInfo>(),
            transport: info.transport.code(),
            source_port: info.source.map_or(0, |s| u32::from(s.port())),
            source_ip: ip.as_ptr(),
            source_ip_len: ip.len(),
            auth_user: user.as_ptr(),
            auth_user_len: user.len(),
            related_txn: info.related.map_or(0, |t| t.0),
            source_family,
            source_addr,
            fields,
            fields_len,
            start_line_end,
            headers_end,
            body_start,
            body_end,
        };
        // SAFETY: the instance is alive (not destroyed before `Drop`); every pointer is
        // borrowed for the call.
        Error::from_code(unsafe {
            f(
                self.instance,
                txn.map_or(0, |t| t.0),
                request.as_ptr(),
                request.len(),
                &raw_info,
            )
        })
    }

    /// Delivers a response to a request the plugin sent.
    pub fn handle_response(&mut self, request: RequestId, response: &[u8]) -> Result<()> {
        let f = self.entry.raw.handle_response.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive; slice borrowed for the call.
        Error::from_code(unsafe { f(self.instance, request.0, response.as_ptr(), response.len()) })
    }

    /// Fires a timer.
    pub fn on_timer(&mut self, timer: TimerId, token: u64) -> Result<()> {
        let f = self.entry.raw.on_timer.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive.
        Error::from_code(unsafe { f(self.instance, timer.0, token) })
    }

    /// Delivers a change under a watched prefix.
    pub fn on_store_change(&mut self, change: &StoreChange) -> Result<()> {
        let f = self.entry.raw.on_store_change.ok_or(Error::NotSupported)?;
        let (key, value): (&[u8], &[u8]) = match change {
            StoreChange::Put { key, value, .. } => (key, value),
            StoreChange::Delete { key, .. } => (key, &[]),
            StoreChange::Lagged { .. } => (&[], &[]),
        };
        // SAFETY: instance alive; slices borrowed for the call.
        Error::from_code(unsafe {
            f(
                self.instance,
                change.watch().0,
                change.kind_code(),
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    /// Delivers a registration event (only to plugins that require
    /// [`Capabilities::REGISTRATION_EVENTS`]; others get [`Error::NotSupported`] without a
    /// call).
    pub fn on_registration(&mut self, event: &RegistrationEvent) -> Result<()> {
        if !self
            .entry
            .info
            .capabilities
            .contains(Capabilities::REGISTRATION_EVENTS)
        {
            return Err(Error::NotSupported);
        }
        let f = self.entry.raw.on_registration.ok_or(Error::NotSupported)?;
        let mut keys = String::new();
        for key in &event.binding_keys {
            // A key with a line break cannot be listed unambiguously; keys never have one
            // (they are built from parsed header values).
            if !key.contains('\n') {
                keys.push_str(key);
                keys.push('\n');
            }
        }
        let raw_event = HuddleRegistrationEvent {
            struct_size: std::mem::size_of::<HuddleRegistrationEvent>(),
            kind: event.kind.code(),
            bindings: event.bindings,
            aor: event.aor.as_ptr(),
            aor_len: event.aor.len(),
            binding_keys: keys.as_ptr(),
            binding_keys_len: keys.len(),
        };
        // SAFETY: instance alive; the event and its text are borrowed for the call.
        Error::from_code(unsafe { f(self.instance, &raw_event) })
    }

    /// A media session is connected.
    pub fn media_ready(&mut self, session: MediaSessionId) -> Result<()> {
        let f = self.entry.raw.media_ready.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive.
        Error::from_code(unsafe { f(self.instance, session.0) })
    }

    /// Delivers a decrypted RTP packet.
    pub fn incoming_rtp(
        &mut self,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        let f = self.entry.raw.incoming_rtp.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive; slices borrowed for the call.
        Error::from_code(unsafe {
            f(
                self.instance,
                session.0,
                mid.as_ptr(),
                mid.len(),
                packet.as_ptr(),
                packet.len(),
            )
        })
    }

    /// Delivers a decrypted RTCP packet.
    pub fn incoming_rtcp(&mut self, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        let f = self.entry.raw.incoming_rtcp.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive; slice borrowed for the call.
        Error::from_code(unsafe { f(self.instance, session.0, packet.as_ptr(), packet.len()) })
    }

    /// A bandwidth estimate (ABI 1.1): [`Error::NotSupported`] without a call for a plugin
    /// whose descriptor predates it.
    pub fn media_bitrate(&mut self, session: MediaSessionId, bps: u64) -> Result<()> {
        // Null for a descriptor whose `struct_size` does not cover it (`from_raw` copies).
        let f = self.entry.raw.media_bitrate.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive.
        Error::from_code(unsafe { f(self.instance, session.0, bps) })
    }

    /// (ABI 1.2) Sends an admin request (a JSON object as text) and returns the plugin's JSON
    /// answer. [`Error::NotSupported`] when the plugin takes none (every plugin built before
    /// ABI 1.2 has no `admin_request`).
    pub fn admin_request(&mut self, request: &str) -> Result<Vec<u8>> {
        // Null for a descriptor whose `struct_size` does not cover it (`from_raw` copies).
        let f = self.entry.raw.admin_request.ok_or(Error::NotSupported)?;
        let mut answer: Option<Vec<u8>> = None;
        // SAFETY: instance alive; the request is borrowed for the call; `answer` outlives it
        // and `collect_reply` only runs during it.
        let code = unsafe {
            f(
                self.instance,
                request.as_ptr(),
                request.len(),
                Some(collect_reply),
                (&mut answer as *mut Option<Vec<u8>>).cast::<c_void>(),
            )
        };
        Error::from_code(code)?;
        // A plugin that returned OK without replying broke the contract: say so.
        answer.ok_or(Error::Plugin)
    }

    /// A media session ended.
    pub fn media_hangup(&mut self, session: MediaSessionId, reason: HangupReason) -> Result<()> {
        let f = self.entry.raw.media_hangup.ok_or(Error::NotSupported)?;
        // SAFETY: instance alive.
        Error::from_code(unsafe { f(self.instance, session.0, reason.code()) })
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        if let Some(destroy) = self.entry.raw.destroy {
            // SAFETY: `instance` came from a successful `init` and is destroyed exactly once,
            // with no other call running (`&mut self`).
            unsafe { destroy(self.instance) };
        }
        // SAFETY: after `destroy` returned the plugin no longer uses the table (ABI); the
        // bridge came from `Box::leak` in `start` and is freed exactly once, here.
        drop(unsafe { Box::from_raw(self.bridge.as_ptr()) });
    }
}

/// The writer `admin_request` hands the plugin: keeps the first reply.
///
/// # Safety
/// `user` must be the `&mut Option<Vec<u8>>` [`PluginInstance::admin_request`] passed, and
/// `json[0..len]` readable for the call.
unsafe extern "C" fn collect_reply(user: *mut c_void, json: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's promise: our own slot, alive during the plugin's call.
        let Some(slot) = (unsafe { user.cast::<Option<Vec<u8>>>().as_mut() }) else {
            return;
        };
        // SAFETY: borrowed for this call (ABI).
        if let (None, Some(bytes)) = (slot.as_ref(), unsafe { raw::bytes(json, len) }) {
            *slot = Some(bytes.to_vec());
        }
    }));
}

/// The host table for a host with `caps`: functions present exactly for the capabilities.
fn host_table(caps: Capabilities) -> HuddleHostApi {
    let has = |c: Capabilities| caps.contains(c);
    let store = has(Capabilities::STORE);
    let watch = has(Capabilities::STORE_WATCH);
    let media = has(Capabilities::MEDIA);
    HuddleHostApi {
        abi_major: abi::HUDDLE_PLUGIN_ABI_MAJOR,
        abi_minor: abi::HUDDLE_PLUGIN_ABI_MINOR,
        struct_size: std::mem::size_of::<HuddleHostApi>(),
        host_capabilities: caps.bits(),
        ctx: std::ptr::null_mut(),
        free_buf: Some(h_free_buf),
        log: Some(h_log),
        claim: Some(h_claim),
        respond: Some(h_respond),
        send_request: has(Capabilities::SEND_REQUEST).then_some(h_send_request as _),
        store_get: store.then_some(h_store_get as _),
        store_put: store.then_some(h_store_put as _),
        store_delete: store.then_some(h_store_delete as _),
        store_cas: store.then_some(h_store_cas as _),
        store_scan: store.then_some(h_store_scan as _),
        store_watch: watch.then_some(h_store_watch as _),
        store_unwatch: watch.then_some(h_store_unwatch as _),
        set_timer: has(Capabilities::TIMERS).then_some(h_set_timer as _),
        cancel_timer: has(Capabilities::TIMERS).then_some(h_cancel_timer as _),
        media_answer: media.then_some(h_media_answer as _),
        media_send_rtp: media.then_some(h_media_send_rtp as _),
        media_send_rtcp: media.then_some(h_media_send_rtcp as _),
        media_request_keyframe: media.then_some(h_media_request_keyframe as _),
        media_forward: media.then_some(h_media_forward as _),
        media_close: media.then_some(h_media_close as _),
        emit_event: has(Capabilities::EVENTS).then_some(h_emit_event as _),
        media_tap: media.then_some(h_media_tap as _),
        store_batch: store.then_some(h_store_batch as _),
        retarget: Some(h_retarget),
        user_exists: has(Capabilities::LOCATION).then_some(h_user_exists as _),
        media_rtp_sink: media.then_some(h_media_rtp_sink as _),
        media_send_rtp_batch: media.then_some(h_media_send_rtp_batch as _),
        event_wanted: has(Capabilities::EVENTS).then_some(h_event_wanted as _),
        send_request_parts: has(Capabilities::SEND_REQUEST).then_some(h_send_request_parts as _),
        mem_alloc: has(Capabilities::HOST_ALLOCATOR).then_some(h_mem_alloc as _),
        mem_alloc_zeroed: has(Capabilities::HOST_ALLOCATOR).then_some(h_mem_alloc_zeroed as _),
        mem_dealloc: has(Capabilities::HOST_ALLOCATOR).then_some(h_mem_dealloc as _),
        mem_realloc: has(Capabilities::HOST_ALLOCATOR).then_some(h_mem_realloc as _),
        respond_status: Some(h_respond_status),
    }
}

/// (ABI 1.11) The host's global allocator, lent to plugin libraries (`abi`, "The host's
/// allocator"): whatever `std::alloc` is in the program that hosts (the server's mimalloc).
/// Every request a `Layout` could not hold, and size 0, get null; nothing unwinds.
unsafe extern "C" fn h_mem_alloc(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size, align) {
        // SAFETY: a valid layout of non-zero size.
        Ok(layout) if size != 0 => unsafe { std::alloc::alloc(layout) },
        _ => std::ptr::null_mut(),
    }
}

/// (ABI 1.11) As [`h_mem_alloc`], zeroed.
unsafe extern "C" fn h_mem_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size, align) {
        // SAFETY: a valid layout of non-zero size.
        Ok(layout) if size != 0 => unsafe { std::alloc::alloc_zeroed(layout) },
        _ => std::ptr::null_mut(),
    }
}

/// (ABI 1.11) Releases a block [`h_mem_alloc`] made. A null pointer or an impossible layout is
/// ignored.
///
/// # Safety
/// `ptr` must be null or a block of the host's allocator made with `size` and `align`, not yet
/// released.
unsafe extern "C" fn h_mem_dealloc(ptr: *mut u8, size: usize, align: usize) {
    if ptr.is_null() || size == 0 {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(size, align) {
        // SAFETY: the caller's promise: our allocator's block, with this layout.
        unsafe { std::alloc::dealloc(ptr, layout) };
    }
}

/// (ABI 1.11) Resizes a block [`h_mem_alloc`] made; null (the block untouched) for a null
/// pointer, an impossible layout or a new size of 0 or past `isize::MAX` once aligned.
///
/// # Safety
/// As [`h_mem_dealloc`].
unsafe extern "C" fn h_mem_realloc(
    ptr: *mut u8,
    size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    if ptr.is_null() || size == 0 || new_size == 0 {
        return std::ptr::null_mut();
    }
    match (
        Layout::from_size_align(size, align),
        Layout::from_size_align(new_size, align),
    ) {
        // SAFETY: the caller's promise for the block and its layout; the new size is non-zero
        // and fits `isize` once aligned (the second layout is valid).
        (Ok(layout), Ok(_)) => unsafe { std::alloc::realloc(ptr, layout, new_size) },
        _ => std::ptr::null_mut(),
    }
}

/// Where this copy of the SDK's lent `mem_alloc` is: a plugin built into the same program as
/// its host must not take the allocator it would lend itself (`allocator::lent_by`).
pub(crate) fn lent_alloc_address() -> usize {
    let f: unsafe extern "C" fn(usize, usize) -> *mut u8 = h_mem_alloc;
    f as usize
}

/// This copy of the SDK's lent `mem_alloc`, for tests.
#[cfg(test)]
pub(crate) fn lent_alloc_fn() -> Option<unsafe extern "C" fn(usize, usize) -> *mut u8> {
    Some(h_mem_alloc)
}

/// Runs a host function body on the bridge behind `ctx`, catching panics (a host panic must
/// not unwind into plugin code, which may be C).
///
/// # Safety
/// `ctx` must be null or the `ctx` of a table built by `PluginInstance::start` whose instance
/// has not finished `destroy`.
unsafe fn host_call(ctx: *mut c_void, f: impl FnOnce(&Bridge) -> Result<()>) -> i32 {
    // SAFETY: the caller's promise: the bridge outlives every call the plugin makes.
    let Some(bridge) = (unsafe { ctx.cast::<Bridge>().as_ref() }) else {
        return abi::HUDDLE_ERR_INVALID_ARGUMENT;
    };
    match catch_unwind(AssertUnwindSafe(|| f(bridge))) {
        Ok(Ok(())) => abi::HUDDLE_OK,
        Ok(Err(e)) => e.code(),
        Err(_) => abi::HUDDLE_ERR_INTERNAL,
    }
}

/// Lends `bytes` to the plugin as a host buffer; [`h_free_buf`] takes it back.
fn lend(bytes: Vec<u8>) -> HuddleHostBuf {
    let boxed: Box<[u8]> = bytes.into_boxed_slice();
    let len = boxed.len();
    HuddleHostBuf {
        // A boxed slice's pointer is never null, even when empty: null means "no value".
        ptr: Box::into_raw(boxed).cast::<u8>(),
        len,
        token: std::ptr::null_mut(),
    }
}

/// # Safety
/// `out` must be null or writable.
unsafe fn write_out<T>(out: *mut T, value: T) -> Result<()> {
    if out.is_null() {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: non-null and writable (the caller's promise, from the ABI's out-parameter rule).
    unsafe { out.write(value) };
    Ok(())
}

/// Borrowed bytes or `InvalidArgument`.
///
/// # Safety
/// As [`raw::bytes`].
unsafe fn arg<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8]> {
    // SAFETY: forwarded.
    unsafe { raw::bytes(ptr, len) }.ok_or(Error::InvalidArgument)
}

/// Borrowed UTF-8 or `InvalidArgument`.
///
/// # Safety
/// As [`raw::text`].
unsafe fn text_arg<'a>(ptr: *const u8, len: usize) -> Result<&'a str> {
    // SAFETY: forwarded.
    unsafe { raw::text(ptr, len) }.ok_or(Error::InvalidArgument)
}

/// A borrowed array of `count` entries, or `InvalidArgument` when the pointer cannot be one
/// (null, misaligned, or a length whose bytes overflow `isize`). `count` 0 is the empty slice.
///
/// # Safety
/// When the checks pass, `ptr` must point to `count` initialised entries that stay valid and
/// unchanged for `'a` (the ABI: the plugin lends them for the call).
unsafe fn lent_array<'a, T>(ptr: *const T, count: usize) -> Result<&'a [T]> {
    if count == 0 {
        return Ok(&[]);
    }
    let too_many = count > isize::MAX as usize / std::mem::size_of::<T>().max(1);
    if ptr.is_null() || !ptr.is_aligned() || too_many {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: non-null, aligned, length bounded; validity for 'a is the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

unsafe extern "C" fn h_free_buf(_ctx: *mut c_void, buf: HuddleHostBuf) {
    if buf.ptr.is_null() {
        return;
    }
    // SAFETY: a non-null buffer was made by `lend` from a boxed slice of `len` bytes and is
    // returned exactly once (ABI); rebuilding the box frees it with the same layout.
    drop(unsafe {
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            buf.ptr.cast_mut(),
            buf.len,
        ))
    });
}

unsafe extern "C" fn h_log(ctx: *mut c_void, level: u32, msg: *const u8, len: usize) {
    // SAFETY: ctx from our table; the message is borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            let bytes = arg(msg, len)?;
            b.services
                .log(Level::from_code(level), &String::from_utf8_lossy(bytes));
            Ok(())
        })
    };
}

unsafe extern "C" fn h_claim(ctx: *mut c_void, claim: *const HuddleClaim) -> i32 {
    // SAFETY: ctx from our table; the claim and its strings are borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            let c = claim.as_ref().ok_or(Error::InvalidArgument)?;
            if c.struct_size < abi::HUDDLE_CLAIM_MIN_SIZE {
                return Err(Error::Incompatible);
            }
            let mut claim = Claim::from_parts(
                text_arg(c.method, c.method_len)?,
                text_arg(c.event, c.event_len)?,
                text_arg(c.user, c.user_len)?,
            )?;
            // A 1.0/1.1 plugin's claim ends before `flags`: it has none.
            let has_flags = c.struct_size
                >= std::mem::offset_of!(HuddleClaim, flags) + std::mem::size_of::<u32>();
            if has_flags && c.flags & abi::HUDDLE_CLAIM_GUESTS != 0 {
                claim = claim.open_to_guests();
            }
            let mut slot = b.claims.lock().unwrap_or_else(PoisonError::into_inner);
            let list = slot.as_mut().ok_or(Error::BadState)?;
            b.services.check_claim(&claim)?;
            list.push(claim);
            Ok(())
        })
    }
}

unsafe extern "C" fn h_respond(ctx: *mut c_void, txn: u64, msg: *const u8, len: usize) -> i32 {
    // SAFETY: ctx from our table; the message is borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            b.services.respond(TransactionId(txn), arg(msg, len)?)
        })
    }
}

/// (ABI 1.12) Whether a final response given by status ([`HostServices::respond_status`]) can
/// be written as given: `Err` names what cannot (the SDK answers it
/// [`Error::InvalidArgument`]). A host writing such responses relies on these checks: the
/// status is final, the reason and values hold no control character (HTAB aside: no line break,
/// no NUL), each name is a token and
/// none names a field the host writes itself (those it copies from the request, the body's,
/// and `Server`), compact forms included.
pub fn check_status_response(
    status: u32,
    reason: &str,
    headers: &[(&str, &str)],
) -> std::result::Result<u16, &'static str> {
    // RFC 3261's Reason-Phrase and header values hold no control character but HTAB.
    let breaks = |t: &str| t.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (200..=699).contains(s))
        .ok_or("the status is not a final one (200..=699)")?;
    if breaks(reason) {
        return Err("the reason phrase has a control character");
    }
    for (name, value) in headers {
        if !huddle_sip::syntax::is_token(name) {
            return Err("a field name is not a token");
        }
        let written = matches!(
            huddle_sip::HeaderName::parse(name),
            huddle_sip::HeaderName::Via
                | huddle_sip::HeaderName::From
                | huddle_sip::HeaderName::To
                | huddle_sip::HeaderName::CallId
                | huddle_sip::HeaderName::CSeq
                | huddle_sip::HeaderName::ContentLength
                | huddle_sip::HeaderName::ContentType
        ) || name.eq_ignore_ascii_case("Server");
        if written {
            return Err("a field is one the host writes itself");
        }
        if breaks(value) {
            return Err("a field value has a control character");
        }
    }
    Ok(status)
}

unsafe extern "C" fn h_respond_status(
    ctx: *mut c_void,
    txn: u64,
    response: *const HuddleStatusResponse,
) -> i32 {
    // SAFETY: ctx from our table; the response and all it points to are borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            if response.is_null() {
                return Err(Error::InvalidArgument);
            }
            // The size first: a struct smaller than the 1.12 layout is not read beyond it.
            if std::ptr::addr_of!((*response).struct_size).read_unaligned()
                < abi::HUDDLE_STATUS_RESPONSE_MIN_SIZE
            {
                return Err(Error::InvalidArgument);
            }
            let r = response.read_unaligned();
            if r.headers_len > abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS {
                return Err(Error::TooLarge);
            }
            let fields: &[HuddleHeader] = lent_array(r.headers, r.headers_len)?;
            let mut pairs = [("", ""); abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS];
            let pairs = &mut pairs[..fields.len()];
            for (pair, f) in pairs.iter_mut().zip(fields) {
                *pair = (
                    text_arg(f.name, f.name_len)?,
                    text_arg(f.value, f.value_len)?,
                );
            }
            let reason = text_arg(r.reason, r.reason_len)?;
            let status = check_status_response(r.status, reason, pairs).map_err(|why| {
                b.services
                    .log(Level::Warn, &format!("respond_status refused: {why}"));
                Error::InvalidArgument
            })?;
            b.services
                .respond_status(TransactionId(txn), status, reason, pairs)
        })
    }
}

unsafe extern "C" fn h_retarget(ctx: *mut c_void, txn: u64, uri: *const u8, len: usize) -> i32 {
    // SAFETY: ctx from our table; the URI is borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            b.services.retarget(TransactionId(txn), text_arg(uri, len)?)
        })
    }
}

unsafe extern "C" fn h_user_exists(ctx: *mut c_void, user: *const u8, len: usize) -> i32 {
    // SAFETY: ctx from our table; the name is borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            if b.services.user_exists(text_arg(user, len)?)? {
                Ok(())
            } else {
                Err(Error::NotFound)
            }
        })
    }
}

unsafe extern "C" fn h_send_request(
    ctx: *mut c_void,
    msg: *const u8,
    len: usize,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: ctx from our table; the message is borrowed; `out_id` is the plugin's slot.
    unsafe {
        host_call(ctx, |b| {
            let bytes = arg(msg, len)?;
            if out_id.is_null() {
                return Err(Error::InvalidArgument);
            }
            let id = b.services.send_request(bytes)?;
            write_out(out_id, id.0)
        })
    }
}

unsafe extern "C" fn h_send_request_parts(
    ctx: *mut c_void,
    parts: *const HuddleRequestParts,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: ctx from our table; the parts and all they point to are borrowed for the call;
    // `out_id` is the plugin's slot.
    unsafe {
        host_call(ctx, |b| {
            if parts.is_null() || out_id.is_null() {
                return Err(Error::InvalidArgument);
            }
            // The size first: a struct smaller than the 1.10 layout is not read beyond it.
            if std::ptr::addr_of!((*parts).struct_size).read_unaligned()
                < abi::HUDDLE_REQUEST_PARTS_MIN_SIZE
            {
                return Err(Error::InvalidArgument);
            }
            let p = parts.read_unaligned();
            let fields: &[HuddleHeader] = lent_array(p.headers, p.headers_len)?;
            // On the stack for the usual handful of fields; a long list goes to the heap.
            let mut small = [("", ""); 16];
            let mut large = Vec::new();
            let pairs: &mut [(&str, &str)] = if fields.len() <= small.len() {
                &mut small[..fields.len()]
            } else {
                large.resize(fields.len(), ("", ""));
                &mut large
            };
            for (pair, f) in pairs.iter_mut().zip(fields) {
                *pair = (
                    text_arg(f.name, f.name_len)?,
                    text_arg(f.value, f.value_len)?,
                );
            }
            let parts = RequestParts {
                method: text_arg(p.method, p.method_len)?,
                uri: text_arg(p.uri, p.uri_len)?,
                headers: pairs,
                body: arg(p.body, p.body_len)?,
            };
            let id = b.services.send_request_parts(&parts)?;
            write_out(out_id, id.0)
        })
    }
}

unsafe extern "C" fn h_store_get(
    ctx: *mut c_void,
    ns: *const u8,
    ns_len: usize,
    key: *const u8,
    key_len: usize,
    out: *mut HuddleHostBuf,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed; `out` is the plugin's slot.
    unsafe {
        host_call(ctx, |b| {
            let ns = text_arg(ns, ns_len)?;
            let key = arg(key, key_len)?;
            if out.is_null() {
                return Err(Error::InvalidArgument);
            }
            match b.services.store_get(ns, key)? {
                Some(v) => write_out(out, lend(v)),
                None => Err(Error::NotFound),
            }
        })
    }
}

unsafe extern "C" fn h_store_put(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            b.services
                .store_put(arg(key, key_len)?, arg(value, value_len)?)
        })
    }
}

unsafe extern "C" fn h_store_delete(ctx: *mut c_void, key: *const u8, key_len: usize) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            if b.services.store_delete(arg(key, key_len)?)? {
                Ok(())
            } else {
                Err(Error::NotFound)
            }
        })
    }
}

unsafe extern "C" fn h_store_batch(
    ctx: *mut c_void,
    ops: *const abi::HuddleStoreOp,
    count: usize,
) -> i32 {
    // SAFETY: ctx from our table; `ops[0..count]` and what they point to are borrowed.
    unsafe {
        host_call(ctx, |b| {
            if count == 0 {
                return Ok(());
            }
            // SAFETY: the plugin lends `count` ops for the call (ABI).
            let raw_ops = lent_array(ops, count)?;
            let mut batch = Vec::with_capacity(count);
            for op in raw_ops {
                let key = arg(op.key, op.key_len)?;
                batch.push(match op.op {
                    abi::HUDDLE_STORE_OP_PUT => BatchOp::Put {
                        key,
                        value: arg(op.value, op.value_len)?,
                    },
                    abi::HUDDLE_STORE_OP_DELETE => BatchOp::Delete { key },
                    _ => return Err(Error::InvalidArgument),
                });
            }
            b.services.store_batch(&batch)
        })
    }
}

unsafe extern "C" fn h_store_cas(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    expected: *const u8,
    expected_len: usize,
    new_value: *const u8,
    new_value_len: usize,
    flags: u32,
    out_current: *mut HuddleHostBuf,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed; `out_current` null or the plugin's slot.
    unsafe {
        host_call(ctx, |b| {
            let key = arg(key, key_len)?;
            let expected = if flags & abi::HUDDLE_CAS_EXPECT_ABSENT != 0 {
                None
            } else {
                Some(arg(expected, expected_len)?)
            };
            let new = if flags & abi::HUDDLE_CAS_DELETE != 0 {
                None
            } else {
                Some(arg(new_value, new_value_len)?)
            };
            match b.services.store_compare_and_swap(key, expected, new)? {
                Ok(()) => Ok(()),
                Err(current) => {
                    if !out_current.is_null() {
                        out_current.write(current.map_or(HuddleHostBuf::NONE, lend));
                    }
                    Err(Error::Conflict)
                }
            }
        })
    }
}

unsafe extern "C" fn h_store_scan(
    ctx: *mut c_void,
    ns: *const u8,
    ns_len: usize,
    prefix: *const u8,
    prefix_len: usize,
    start_after: *const u8,
    start_after_len: usize,
    limit: u32,
    visit: Option<HuddleScanVisitor>,
    visit_user: *mut c_void,
    out_more: *mut u8,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed; the visitor is the plugin's function,
    // called with borrowed entries during this call only, as the ABI says.
    unsafe {
        host_call(ctx, |b| {
            let ns = text_arg(ns, ns_len)?;
            let prefix = arg(prefix, prefix_len)?;
            let after = arg(start_after, start_after_len)?;
            let visit = visit.ok_or(Error::InvalidArgument)?;
            if out_more.is_null() {
                return Err(Error::InvalidArgument);
            }
            let after = (!after.is_empty()).then_some(after);
            let page = b.services.store_scan(ns, prefix, after, limit as usize)?;
            let mut more = page.more;
            for (i, (k, v)) in page.entries.iter().enumerate() {
                if visit(visit_user, k.as_ptr(), k.len(), v.as_ptr(), v.len()) != 0 {
                    more = more || i + 1 < page.entries.len();
                    break;
                }
            }
            write_out(out_more, u8::from(more))
        })
    }
}

unsafe extern "C" fn h_store_watch(
    ctx: *mut c_void,
    ns: *const u8,
    ns_len: usize,
    prefix: *const u8,
    prefix_len: usize,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed; `out_id` the plugin's slot.
    unsafe {
        host_call(ctx, |b| {
            let ns = text_arg(ns, ns_len)?;
            let prefix = arg(prefix, prefix_len)?;
            if out_id.is_null() {
                return Err(Error::InvalidArgument);
            }
            let id = b.services.store_watch(ns, prefix)?;
            write_out(out_id, id.0)
        })
    }
}

unsafe extern "C" fn h_store_unwatch(ctx: *mut c_void, watch: u64) -> i32 {
    // SAFETY: ctx from our table.
    unsafe { host_call(ctx, |b| b.services.store_unwatch(WatchId(watch))) }
}

unsafe extern "C" fn h_set_timer(
    ctx: *mut c_void,
    delay_ms: u64,
    token: u64,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: ctx from our table; `out_id` the plugin's slot.
    unsafe {
        host_call(ctx, |b| {
            if out_id.is_null() {
                return Err(Error::InvalidArgument);
            }
            let id = b
                .services
                .set_timer(Duration::from_millis(delay_ms), token)?;
            write_out(out_id, id.0)
        })
    }
}

unsafe extern "C" fn h_cancel_timer(ctx: *mut c_void, timer: u64) -> i32 {
    // SAFETY: ctx from our table.
    unsafe { host_call(ctx, |b| b.services.cancel_timer(TimerId(timer))) }
}

unsafe extern "C" fn h_media_answer(
    ctx: *mut c_void,
    session: u64,
    offer: *const u8,
    offer_len: usize,
    out_session: *mut u64,
    out_answer: *mut HuddleHostBuf,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed; out-parameters the plugin's slots.
    unsafe {
        host_call(ctx, |b| {
            let offer = arg(offer, offer_len)?;
            if out_session.is_null() || out_answer.is_null() {
                return Err(Error::InvalidArgument);
            }
            let session = (session != 0).then_some(MediaSessionId(session));
            let (id, answer) = match b.services.media_answer(session, offer) {
                Ok(answered) => answered,
                Err(Error::Sdp(refusal)) => {
                    // ABI 1.1: the reason goes out with the error code.
                    write_out(out_answer, lend(refusal.to_host()))?;
                    return Err(Error::Sdp(refusal));
                }
                Err(e) => return Err(e),
            };
            write_out(out_session, id.0)?;
            write_out(out_answer, lend(answer))
        })
    }
}

unsafe extern "C" fn h_media_send_rtp(
    ctx: *mut c_void,
    session: u64,
    mid: *const u8,
    mid_len: usize,
    packet: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            b.services.media_send_rtp(
                MediaSessionId(session),
                text_arg(mid, mid_len)?,
                arg(packet, len)?,
            )
        })
    }
}

unsafe extern "C" fn h_media_send_rtcp(
    ctx: *mut c_void,
    session: u64,
    packet: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            b.services
                .media_send_rtcp(MediaSessionId(session), arg(packet, len)?)
        })
    }
}

unsafe extern "C" fn h_media_request_keyframe(
    ctx: *mut c_void,
    session: u64,
    mid: *const u8,
    mid_len: usize,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            b.services
                .media_request_keyframe(MediaSessionId(session), text_arg(mid, mid_len)?)
        })
    }
}

unsafe extern "C" fn h_media_forward(
    ctx: *mut c_void,
    src: u64,
    src_mid: *const u8,
    src_mid_len: usize,
    dst: u64,
    dst_mid: *const u8,
    dst_mid_len: usize,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            b.services.media_forward(
                MediaSessionId(src),
                text_arg(src_mid, src_mid_len)?,
                MediaSessionId(dst),
                text_arg(dst_mid, dst_mid_len)?,
            )
        })
    }
}

unsafe extern "C" fn h_media_tap(
    ctx: *mut c_void,
    session: u64,
    mid: *const u8,
    mid_len: usize,
    on: u32,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            b.services
                .media_tap(MediaSessionId(session), text_arg(mid, mid_len)?, on != 0)
        })
    }
}

unsafe extern "C" fn h_media_rtp_sink(
    ctx: *mut c_void,
    sink: Option<abi::HuddleRtpSinkFn>,
    user: *mut c_void,
) -> i32 {
    // SAFETY: ctx from our table; `sink` and `user` are the plugin's, valid until it replaces
    // them (ABI), which is what `RegisteredRtpSink` is held to.
    unsafe {
        host_call(ctx, |b| {
            if IN_RTP_SINK.with(Cell::get) {
                return Err(Error::BadState);
            }
            b.services
                .media_rtp_sink(sink.map(|sink| RegisteredRtpSink { sink, user }))
        })
    }
}

unsafe extern "C" fn h_media_send_rtp_batch(
    ctx: *mut c_void,
    packets: *const abi::HuddleRtpOut,
    count: usize,
) -> i32 {
    // SAFETY: ctx from our table; `packets[0..count]` and what they point to are borrowed.
    unsafe {
        host_call(ctx, |b| {
            if count == 0 {
                return Ok(());
            }
            // SAFETY: the plugin lends `count` entries for the call (ABI).
            let raw = lent_array(packets, count)?;
            let mut batch = Vec::with_capacity(count);
            let mut first = Ok(());
            for p in raw {
                match (text_arg(p.mid, p.mid_len), arg(p.packet, p.len)) {
                    (Ok(mid), Ok(packet)) => batch.push(OutgoingRtp {
                        session: MediaSessionId(p.session),
                        mid,
                        packet,
                    }),
                    (Err(e), _) | (_, Err(e)) => {
                        if first.is_ok() {
                            first = Err(e);
                        }
                    }
                }
            }
            match b.services.media_send_rtp_batch(&batch) {
                // Nothing went out: say so rather than the skipped entry's error.
                Err(Error::Busy) => Err(Error::Busy),
                sent => first.and(sent),
            }
        })
    }
}

unsafe extern "C" fn h_media_close(ctx: *mut c_void, session: u64) -> i32 {
    // SAFETY: ctx from our table.
    unsafe { host_call(ctx, |b| b.services.media_close(MediaSessionId(session))) }
}

/// Whether `kind` is a valid event name: `[a-z0-9._-]{1,64}`.
pub fn valid_event_kind(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

unsafe extern "C" fn h_event_wanted(ctx: *mut c_void, kind: *const u8, kind_len: usize) -> i32 {
    // SAFETY: ctx from our table; the kind is borrowed for the call.
    unsafe {
        host_call(ctx, |b| {
            let kind = text_arg(kind, kind_len)?;
            if !valid_event_kind(kind) {
                return Err(Error::InvalidArgument);
            }
            if b.services.event_wanted(kind)? {
                Ok(())
            } else {
                Err(Error::NotFound)
            }
        })
    }
}

unsafe extern "C" fn h_emit_event(
    ctx: *mut c_void,
    kind: *const u8,
    kind_len: usize,
    json: *const u8,
    json_len: usize,
) -> i32 {
    // SAFETY: ctx from our table; arguments borrowed.
    unsafe {
        host_call(ctx, |b| {
            let kind = text_arg(kind, kind_len)?;
            if !valid_event_kind(kind) {
                return Err(Error::InvalidArgument);
            }
            b.services.emit_event(kind, text_arg(json, json_len)?)
        })
    }
}

/// The longest IP address text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IP_TEXT_MAX: usize = 45;

/// An IPv4 address as dotted-quad text in `buf`, without the formatting machinery (this text
/// is written for every request a plugin gets).
fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; IP_TEXT_MAX]) -> &str {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// Any IP address as text in `buf`.
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &str {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if write!(cursor, "{ip}").is_err() {
        return "";
    }
    let n = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

#[cfg(test)]
mod ip_tests {
    use super::*;

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut buf = [0u8; IP_TEXT_MAX];
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "192.0.2.1",
            "1.22.3.44",
        ] {
            let v4: Ipv4Addr = ip.parse().unwrap();
            assert_eq!(ipv4_text(v4, &mut buf), ip);
        }
        for ip in [
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let v6: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(v6, &mut buf), v6.to_string());
        }
    }
}
