//! The plugin's handle on its host: a safe wrapper around the host's [`HuddleHostApi`] table.
//!
//! A [`Host`] is cheap to clone, `Send` and `Sync`: a plugin may keep one and use it from its
//! own threads. It stays usable until the plugin instance is destroyed; after that every call
//! returns [`Error::BadState`] instead of touching the host's (by then freed) table. A call
//! that is running when `destroy` starts finishes first: `destroy` waits for it.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use crate::abi::{
    self, HuddleClaim, HuddleHeader, HuddleHostApi, HuddleHostBuf, HuddleRequestParts,
    HuddleRtpOut, HuddleStatusResponse, HuddleStoreOp,
};
use crate::claims::Claim;
use crate::error::{Error, Result};
use crate::message::{NewRequest, Request};
use crate::raw;
use crate::types::{
    BatchOp, Capabilities, Level, MediaSessionId, OutgoingRtp, RequestId, ScanPage, TimerId,
    TransactionId, WatchId,
};
use huddle_sip::message::RequestParts;

/// The plugin's handle on the host.
///
/// Cheap to clone, `Send` and `Sync`: a plugin may keep one and use it from its own threads. It
/// stays usable until the plugin instance is destroyed; after that every call returns
/// [`Error::BadState`] instead of touching the host's (by then freed) table. A call that is
/// running when `destroy` starts finishes first: `destroy` waits for it.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    /// A copy of the host's table, taken at `init`. Its function pointers and `ctx` stay valid
    /// until `destroy` returns, which is after `alive` is set to false.
    api: HuddleHostApi,
    alive: RwLock<bool>,
    /// (ABI 1.7) The RTP sink registered with the host, if any: the `user` pointer the host
    /// holds points into this box, so it is freed only once the host has let go of it.
    rtp_sink: Mutex<Option<Box<SinkCell>>>,
}

/// What the host's `user` pointer of a registered RTP sink points to.
struct SinkCell {
    sink: Arc<dyn RtpSink>,
    /// For logging a panic (weak: the cell lives inside the `Inner` it points to).
    host: Weak<Inner>,
}

/// (ABI 1.7) A plugin's thread-safe receiver of incoming RTP, registered with
/// [`Host::set_rtp_sink`]: the host then calls [`RtpSink::incoming_rtp`] directly on its media
/// thread for every RTP packet it would have delivered to [`crate::Plugin::incoming_rtp`],
/// instead of queueing it for the instance's thread (see [`crate::abi`], "Incoming RTP on the
/// media thread").
///
/// It runs concurrently with the plugin's callbacks and its own threads (hence `Send + Sync`),
/// possibly concurrently with itself, and on the thread that moves every leg's media: keep it
/// short and never block (hand the packet to a queue: a GStreamer `appsrc`, a channel). It may
/// see a packet of a session before `media_ready` or after `media_hangup` reached the plugin:
/// ignore sessions it does not know. A panic is caught at the boundary and counted by the
/// host as a panic in a callback.
pub trait RtpSink: Send + Sync + 'static {
    /// One decrypted RTP packet (header and payload) received on stream `mid` of `session`.
    fn incoming_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]);
}

// SAFETY: the ABI requires every host function to be callable from any thread at any time
// between `init` and the return of `destroy` (abi module docs, "Threads and re-entrancy"), and
// `alive` keeps calls from happening after that. The table itself is never written after `init`.
unsafe impl Send for Inner {}
// SAFETY: as above; shared access only reads the copied table.
unsafe impl Sync for Inner {}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("abi_major", &self.inner.api.abi_major)
            .field("abi_minor", &self.inner.api.abi_minor)
            .field("capabilities", &self.capabilities())
            .finish()
    }
}

const EMPTY_HEADER: HuddleHeader = HuddleHeader {
    name: std::ptr::null(),
    name_len: 0,
    value: std::ptr::null(),
    value_len: 0,
};

/// The three fields every table starts with.
#[repr(C)]
struct TableHeader {
    abi_major: u32,
    abi_minor: u32,
    struct_size: usize,
}

impl Host {
    /// Wraps a host table after checking its version, size and mandatory functions.
    ///
    /// # Safety
    /// `api` must be null or point to a host table (at least its first three fields, and
    /// `struct_size` bytes in all) that, with its `ctx` and functions, stays valid until
    /// [`Host::shutdown`] is called.
    pub(crate) unsafe fn from_raw(api: *const HuddleHostApi) -> Result<Host> {
        if api.is_null() {
            return Err(Error::InvalidArgument);
        }
        // SAFETY: every table starts with these three fields (abi module docs); reading them
        // first means a table smaller than ours is never over-read.
        let header = unsafe { std::ptr::read_unaligned(api.cast::<TableHeader>()) };
        if header.abi_major != abi::HUDDLE_PLUGIN_ABI_MAJOR
            || header.struct_size < abi::HUDDLE_HOST_API_MIN_SIZE
        {
            return Err(Error::Incompatible);
        }
        // A table of an older minor is smaller than ours: copy the part its `struct_size`
        // covers into a full-size table whose later entries are null ("absent"); entries a
        // newer host appends beyond ours are ignored.
        let size = header.struct_size.min(std::mem::size_of::<HuddleHostApi>());
        // SAFETY: every field is an integer, a raw pointer or an `Option<fn>`, for which
        // all-zero bytes are valid (0, null, `None`).
        let mut copy: HuddleHostApi = unsafe { std::mem::zeroed() };
        // SAFETY: `api` points to at least `struct_size >= size` readable bytes (the caller's
        // promise); the destination is a local of at least `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                api.cast::<u8>(),
                (&mut copy as *mut HuddleHostApi).cast::<u8>(),
                size,
            );
        }
        let api = copy;
        if api.free_buf.is_none()
            || api.log.is_none()
            || api.claim.is_none()
            || api.respond.is_none()
        {
            return Err(Error::Incompatible);
        }
        Ok(Host {
            inner: Arc::new(Inner {
                api,
                alive: RwLock::new(true),
                rtp_sink: Mutex::new(None),
            }),
        })
    }

    /// Marks the table as gone: takes back a registered RTP sink, waits for calls in progress,
    /// then makes every later call fail with [`Error::BadState`]. Called by the `destroy`
    /// trampoline (and by `init` on failure) before returning to the host.
    pub(crate) fn shutdown(&self) {
        self.drop_rtp_sink();
        *self
            .inner
            .alive
            .write()
            .unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// Runs `f` on the table if the instance is still alive, holding the read side of the
    /// liveness lock so `destroy` cannot complete meanwhile.
    fn with<R>(&self, f: impl FnOnce(&HuddleHostApi) -> Result<R>) -> Result<R> {
        let alive = self
            .inner
            .alive
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if !*alive {
            return Err(Error::BadState);
        }
        f(&self.inner.api)
    }

    /// What the host provides to this instance.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::from_bits(self.inner.api.host_capabilities)
    }

    /// The host's ABI version, `(major, minor)`.
    pub fn abi_version(&self) -> (u32, u32) {
        (self.inner.api.abi_major, self.inner.api.abi_minor)
    }

    /// Writes a line to the host's log, tagged with the plugin's name. Silently dropped after
    /// the instance was destroyed. The [`crate::info!`] family of macros formats and calls this.
    pub fn log(&self, level: Level, message: &str) {
        let _ = self.with(|api| {
            if let Some(log) = api.log {
                // SAFETY: `log` and `ctx` are valid while alive (held by `with`); the message is
                // borrowed for the call, as the ABI says.
                unsafe { log(api.ctx, level.code(), message.as_ptr(), message.len()) };
            }
            Ok(())
        });
    }

    pub(crate) fn claim(&self, claim: &Claim) -> Result<()> {
        let part = |s: Option<&str>| s.map_or((std::ptr::null(), 0), |s| (s.as_ptr(), s.len()));
        let (method, method_len) = part(claim.method_name());
        let (event, event_len) = part(claim.event_package());
        let (user, user_len) = part(claim.user_pattern());
        let raw = HuddleClaim {
            struct_size: std::mem::size_of::<HuddleClaim>(),
            method,
            method_len,
            event,
            event_len,
            user,
            user_len,
            flags: if claim.admits_guests() {
                abi::HUDDLE_CLAIM_GUESTS
            } else {
                0
            },
        };
        self.with(|api| {
            let f = api.claim.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; `raw` and the strings it points to outlive the call.
            Error::from_code(unsafe { f(api.ctx, &raw) })
        })
    }

    /// Sends a response (complete bytes, as [`Request::response`] builds them) on a server
    /// transaction: provisional responses any number of times, then one final response.
    pub fn respond(&self, txn: TransactionId, response: &[u8]) -> Result<()> {
        self.with(|api| {
            let f = api.respond.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; the bytes are borrowed for the call.
            Error::from_code(unsafe { f(api.ctx, txn.0, response.as_ptr(), response.len()) })
        })
    }

    /// (ABI 1.4) Retargets: gives up the server transaction `txn` (an out-of-dialog request
    /// not answered finally, typically an INVITE) and has the host route its request again as
    /// if its Request-URI were `uri` (`sip:screen-team@example.com`). The plugin whose claim
    /// matches gets it, Request-URI rewritten, everything else as it arrived; from here on
    /// `txn` is not this plugin's (its CANCEL goes to the new owner). When nothing claims
    /// `uri`, the host answers `404` itself; see [`crate::abi`], "Retargeting", for the rest.
    /// [`Error::InvalidArgument`] for a URI that is not `sip:`/`sips:`,
    /// [`Error::UnknownTransaction`] for a transaction that is not open,
    /// [`Error::NotSupported`] from hosts before ABI 1.4.
    pub fn retarget(&self, txn: TransactionId, uri: &str) -> Result<()> {
        self.with(|api| {
            let f = api.retarget.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; the URI is borrowed for the call.
            Error::from_code(unsafe { f(api.ctx, txn.0, uri.as_ptr(), uri.len()) })
        })
    }

    /// (ABI 1.5, with [`crate::Capabilities::LOCATION`]) Whether the host has an account named
    /// `user` (a Request-URI user part): the host's accounts as they are at the moment of the
    /// call (Huddle answers from the names it holds in memory, kept current by a watch on its
    /// store), with no SIP round trip. Says nothing about bindings (registration events and the
    /// `location` namespace do). [`Error::NotSupported`] from hosts before ABI 1.5 or without
    /// the capability: the plugin then learns it some other way (routing to the address of
    /// record: `404` for no such user).
    pub fn user_exists(&self, user: &str) -> Result<bool> {
        self.with(|api| {
            let f = api.user_exists.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; the name is borrowed for the call.
            match Error::from_code(unsafe { f(api.ctx, user.as_ptr(), user.len()) }) {
                Ok(()) => Ok(true),
                Err(Error::NotFound) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// Answers `request` with a bodiless response. [`Error::UnknownTransaction`] for a request
    /// that expects no answer (ACK, CANCEL).
    ///
    /// A final response goes by status (ABI 1.12, [`Host::respond_status`]: the host writes
    /// it from the request it holds, instead of the bytes being written here and parsed again
    /// there) when the host may choose its To tag: the request's own
    /// ([`Request::local_tag`]) was not made yet (no response written here carried it), and
    /// it is no 2xx that may start a dialog (INVITE, SUBSCRIBE, REFER out of dialog).
    /// Otherwise, and from hosts before 1.12, the bytes are written here. After a reply by
    /// status the response's tag is the host's: a plugin that needs the tag later asks for
    /// [`Request::local_tag`] before replying (see there).
    pub fn reply(&self, request: &Request, status: u16, reason: &str) -> Result<()> {
        self.reply_with(request, status, reason, &[])
    }

    /// [`Host::reply`] with extra header fields (name, value), written after the ones copied
    /// from the request (a 405's `Allow`); by status or as bytes by the same rule. None of
    /// the fields the host writes itself ([`Host::respond_status`]).
    pub fn reply_with(
        &self,
        request: &Request,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let txn = request.transaction().ok_or(Error::UnknownTransaction)?;
        if status >= 200 && request.host_may_tag(status) {
            match self.respond_status(txn, status, reason, headers) {
                Err(Error::NotSupported) => {}
                done => return done,
            }
        }
        let response = request.response(status, reason).headers(headers).build();
        self.respond(txn, &response)
    }

    /// (ABI 1.12) Answers server transaction `txn` finally with `status` (200..=699), `reason`
    /// and `headers` (name, value; none of the fields the host writes: Via, From, To, Call-ID,
    /// CSeq, Content-Length, Content-Type, Server), written by the host from the request it
    /// holds, with a To tag of its own and no body. [`Error::InvalidArgument`] for what cannot
    /// be written as given ([`crate::hosting::check_status_response`]), [`Error::TooLarge`]
    /// for more than [`abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS`] fields,
    /// [`Error::UnknownTransaction`] as for [`Host::respond`], and [`Error::NotSupported`] from
    /// hosts before 1.12 or that cannot: write the bytes then ([`Request::response`]).
    pub fn respond_status(
        &self,
        txn: TransactionId,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        if headers.len() > abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS {
            return Err(Error::TooLarge);
        }
        self.with(|api| {
            let f = api.respond_status.ok_or(Error::NotSupported)?;
            // On the stack for a few fields; a longer list goes to the heap.
            let mut small = [EMPTY_HEADER; 4];
            let mut large = Vec::new();
            let fields: &mut [HuddleHeader] = if headers.len() <= small.len() {
                &mut small[..headers.len()]
            } else {
                large.resize(headers.len(), EMPTY_HEADER);
                &mut large
            };
            for (field, (name, value)) in fields.iter_mut().zip(headers) {
                *field = HuddleHeader {
                    name: name.as_ptr(),
                    name_len: name.len(),
                    value: value.as_ptr(),
                    value_len: value.len(),
                };
            }
            let raw = HuddleStatusResponse {
                struct_size: std::mem::size_of::<HuddleStatusResponse>(),
                status: u32::from(status),
                reason: reason.as_ptr(),
                reason_len: reason.len(),
                headers: fields.as_ptr(),
                headers_len: headers.len(),
            };
            // SAFETY: valid while alive; `raw` and everything it points to outlive the call.
            Error::from_code(unsafe { f(api.ctx, txn.0, &raw) })
        })
    }

    /// Sends a request (complete bytes without Via, as [`crate::NewRequest`] builds them). Its
    /// responses reach [`crate::Plugin::handle_response`] with the returned id.
    pub fn send_request(&self, request: &[u8]) -> Result<RequestId> {
        self.with(|api| {
            let f = api.send_request.ok_or(Error::NotSupported)?;
            let mut id = 0u64;
            // SAFETY: valid while alive; the bytes are borrowed, `id` outlives the call.
            Error::from_code(unsafe { f(api.ctx, request.as_ptr(), request.len(), &mut id) })?;
            Ok(RequestId(id))
        })
    }

    /// (ABI 1.10) Sends a request given as its parts (method, Request-URI, header fields
    /// without Via or Content-Length, body): the host writes it once with its Via, where the
    /// bytes of [`Host::send_request`] are written here and parsed again there. From a host
    /// before 1.10 the bytes are written here and sent as before. Refused as the host refuses
    /// it ([`crate::abi`], "Requests in parts"): [`Error::InvalidArgument`] for a method,
    /// URI, name or value that cannot be written as given (a line break in a value), a Via or
    /// Content-Length among the fields, From, To, Call-ID or CSeq missing or twice, or a CSeq
    /// that does not name the method.
    pub fn send_parts(&self, parts: &RequestParts<'_>) -> Result<RequestId> {
        let written = self.with(|api| {
            let Some(f) = api.send_request_parts else {
                return Ok(None);
            };
            // On the stack for the usual handful of fields; a long list goes to the heap.
            let mut small = [EMPTY_HEADER; 16];
            let mut large = Vec::new();
            let fields: &mut [HuddleHeader] = if parts.headers.len() <= small.len() {
                &mut small[..parts.headers.len()]
            } else {
                large.resize(parts.headers.len(), EMPTY_HEADER);
                &mut large
            };
            for (field, (name, value)) in fields.iter_mut().zip(parts.headers) {
                *field = HuddleHeader {
                    name: name.as_ptr(),
                    name_len: name.len(),
                    value: value.as_ptr(),
                    value_len: value.len(),
                };
            }
            let raw = HuddleRequestParts {
                struct_size: std::mem::size_of::<HuddleRequestParts>(),
                method: parts.method.as_ptr(),
                method_len: parts.method.len(),
                uri: parts.uri.as_ptr(),
                uri_len: parts.uri.len(),
                headers: fields.as_ptr(),
                headers_len: fields.len(),
                body: parts.body.as_ptr(),
                body_len: parts.body.len(),
            };
            let mut id = 0u64;
            // SAFETY: valid while alive; `raw` and everything it points to (the caller's
            // strings and body, `fields`) outlive the call, `id` too.
            Error::from_code(unsafe { f(api.ctx, &raw, &mut id) })?;
            Ok(Some(RequestId(id)))
        })?;
        match written {
            Some(id) => Ok(id),
            None => {
                // A host before 1.10: the same bytes, written here.
                let message = huddle_sip::Message::from_parts(parts, usize::MAX)
                    .map_err(|_| Error::InvalidArgument)?;
                self.send_request(message.raw())
            }
        }
    }

    /// Sends `request` ([`Host::send_parts`] of its parts; the same request as
    /// `send_request(&request.build())`, written once, by the host, when it is 1.10 or newer).
    pub fn send(&self, request: &NewRequest) -> Result<RequestId> {
        request.with_parts(|parts| self.send_parts(parts))
    }

    /// The plugin's own namespace, readable and writable.
    pub fn store(&self) -> Store<'_> {
        Store { host: self }
    }

    /// A shared namespace the host lets plugins read (`"location"`, `"plugin/presence"`).
    pub fn namespace<'h>(&'h self, name: &'h str) -> SharedStore<'h> {
        SharedStore {
            host: self,
            ns: name,
        }
    }

    /// Ends a watch created by [`Store::watch`] or [`SharedStore::watch`].
    pub fn unwatch(&self, watch: WatchId) -> Result<()> {
        self.with(|api| {
            let f = api.store_unwatch.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive.
            Error::from_code(unsafe { f(api.ctx, watch.0) })
        })
    }

    /// Arms a one-shot timer; [`crate::Plugin::on_timer`] gets the id and `token` after
    /// `delay` (millisecond resolution).
    pub fn set_timer(&self, delay: Duration, token: u64) -> Result<TimerId> {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.with(|api| {
            let f = api.set_timer.ok_or(Error::NotSupported)?;
            let mut id = 0u64;
            // SAFETY: valid while alive; `id` outlives the call.
            Error::from_code(unsafe { f(api.ctx, ms, token, &mut id) })?;
            Ok(TimerId(id))
        })
    }

    /// Cancels a timer; [`Error::NotFound`] if it already fired.
    pub fn cancel_timer(&self, timer: TimerId) -> Result<()> {
        self.with(|api| {
            let f = api.cancel_timer.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive.
            Error::from_code(unsafe { f(api.ctx, timer.0) })
        })
    }

    /// Answers an SDP offer with the host's media engine: `None` creates a media session,
    /// `Some` renegotiates one. Returns the session and the SDP answer for the SIP response.
    pub fn media_answer(
        &self,
        session: Option<MediaSessionId>,
        offer: &[u8],
    ) -> Result<(MediaSessionId, Vec<u8>)> {
        self.with(|api| {
            let f = api.media_answer.ok_or(Error::NotSupported)?;
            let mut id = session.map_or(0, |s| s.0);
            let mut out = HuddleHostBuf::NONE;
            // SAFETY: valid while alive; `offer` borrowed, out-parameters outlive the call.
            let code = unsafe { f(api.ctx, id, offer.as_ptr(), offer.len(), &mut id, &mut out) };
            if code == abi::HUDDLE_ERR_SDP_MALFORMED || code == abi::HUDDLE_ERR_SDP_NOT_ACCEPTABLE {
                // ABI 1.1: the reason comes in `out` even though the call failed.
                let text = take_buf(api, out);
                return Err(Error::Sdp(Box::new(crate::SdpRefusal::from_host(
                    code,
                    text.as_deref(),
                ))));
            }
            Error::from_code(code)?;
            let answer = take_buf(api, out).unwrap_or_default();
            Ok((MediaSessionId(id), answer))
        })
    }

    /// Sends an RTP packet on stream `mid` of a media session.
    pub fn send_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]) -> Result<()> {
        self.with(|api| {
            let f = api.media_send_rtp.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slices borrowed for the call.
            Error::from_code(unsafe {
                f(
                    api.ctx,
                    session.0,
                    mid.as_ptr(),
                    mid.len(),
                    packet.as_ptr(),
                    packet.len(),
                )
            })
        })
    }

    /// (ABI 1.7) Sends several RTP packets, each as [`Host::send_rtp`] would, in one crossing
    /// into the host's media engine (one command, one wake-up of its thread, where `send_rtp`
    /// costs one per packet): an MCU sends each composite packet to every receiver this way.
    /// Entries that fail (a session that just ended: [`Error::NotFound`]) are skipped, the
    /// others still sent, and the first failure is returned; [`Error::Busy`] when none was
    /// sent. A host before ABI 1.7 gets the packets one by one through `send_rtp`.
    pub fn send_rtp_batch(&self, packets: &[OutgoingRtp<'_>]) -> Result<()> {
        if packets.is_empty() {
            return Ok(());
        }
        self.with(|api| {
            let Some(f) = api.media_send_rtp_batch else {
                let mut first = Ok(());
                for p in packets {
                    let f = api.media_send_rtp.ok_or(Error::NotSupported)?;
                    // SAFETY: valid while alive; slices borrowed for the call.
                    let code = unsafe {
                        f(
                            api.ctx,
                            p.session.0,
                            p.mid.as_ptr(),
                            p.mid.len(),
                            p.packet.as_ptr(),
                            p.packet.len(),
                        )
                    };
                    if let (Err(e), true) = (Error::from_code(code), first.is_ok()) {
                        first = Err(e);
                    }
                }
                return first;
            };
            let raw: Vec<HuddleRtpOut> = packets
                .iter()
                .map(|p| HuddleRtpOut {
                    session: p.session.0,
                    mid: p.mid.as_ptr(),
                    mid_len: p.mid.len(),
                    packet: p.packet.as_ptr(),
                    len: p.packet.len(),
                })
                .collect();
            // SAFETY: valid while alive; `raw` and the slices it points to outlive the call.
            Error::from_code(unsafe { f(api.ctx, raw.as_ptr(), raw.len()) })
        })
    }

    /// (ABI 1.7) Registers `sink` as this instance's receiver of incoming RTP, called on the
    /// host's media thread instead of [`crate::Plugin::incoming_rtp`] on the instance's thread
    /// (see [`RtpSink`] for what that asks of it); `None` goes back to `incoming_rtp`. Once
    /// this returns the previous sink is not running and will not be called again; it is then
    /// dropped. Do not call it while holding a lock the sink takes (it waits for a delivery in
    /// progress), nor from inside the sink ([`Error::BadState`]). The SDK clears the sink when
    /// the instance is destroyed. [`Error::NotSupported`] from hosts before ABI 1.7 or without
    /// media: keep handling `incoming_rtp` then.
    pub fn set_rtp_sink(&self, sink: Option<Arc<dyn RtpSink>>) -> Result<()> {
        let mut slot = self
            .inner
            .rtp_sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cell = sink.map(|sink| {
            Box::new(SinkCell {
                sink,
                host: Arc::downgrade(&self.inner),
            })
        });
        let user = cell.as_deref().map_or(std::ptr::null_mut(), |c| {
            (c as *const SinkCell).cast_mut().cast::<c_void>()
        });
        let trampoline: Option<abi::HuddleRtpSinkFn> =
            cell.as_ref().map(|_| rtp_sink_trampoline as _);
        self.with(|api| {
            let f = api.media_rtp_sink.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; `user` points into `cell`, which is kept in the slot
            // below until the host has let go of it (a later call, or `shutdown`).
            Error::from_code(unsafe { f(api.ctx, trampoline, user) })
        })?;
        // The host no longer calls the previous sink: it may go.
        *slot = cell;
        Ok(())
    }

    /// Takes a registered RTP sink back from the host (if there is one) and frees it.
    pub(crate) fn drop_rtp_sink(&self) {
        let registered = self
            .inner
            .rtp_sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if registered {
            let _ = self.set_rtp_sink(None);
            // A host that refused to let go keeps the box alive in the slot: leaked, never
            // freed under its feet.
        }
    }

    /// Sends an RTCP packet on a media session.
    pub fn send_rtcp(&self, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        self.with(|api| {
            let f = api.media_send_rtcp.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slice borrowed for the call.
            Error::from_code(unsafe { f(api.ctx, session.0, packet.as_ptr(), packet.len()) })
        })
    }

    /// Asks the sender of stream `mid` for a key frame.
    pub fn request_keyframe(&self, session: MediaSessionId, mid: &str) -> Result<()> {
        self.with(|api| {
            let f = api.media_request_keyframe.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slice borrowed for the call.
            Error::from_code(unsafe { f(api.ctx, session.0, mid.as_ptr(), mid.len()) })
        })
    }

    /// Forwards stream `src_mid` of `src` to stream `dst_mid` of `dst` inside the host;
    /// `src_mid == ""` stops forwarding to `dst_mid`.
    pub fn forward_stream(
        &self,
        src: MediaSessionId,
        src_mid: &str,
        dst: MediaSessionId,
        dst_mid: &str,
    ) -> Result<()> {
        self.with(|api| {
            let f = api.media_forward.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slices borrowed for the call.
            Error::from_code(unsafe {
                f(
                    api.ctx,
                    src.0,
                    src_mid.as_ptr(),
                    src_mid.len(),
                    dst.0,
                    dst_mid.as_ptr(),
                    dst_mid.len(),
                )
            })
        })
    }

    /// (ABI 1.3) Taps (`on`) or untaps the incoming stream `mid` of `session`, any plugin's
    /// media session (another plugin's, found in its shared state): its packets then also
    /// reach [`crate::Plugin::incoming_rtp`] with `session` as theirs, and
    /// [`Host::request_keyframe`] works on it. The tap ends when `session` ends.
    /// [`Error::NotFound`] when the session or stream does not exist (or is gone);
    /// [`Error::NotSupported`] from hosts before ABI 1.3 or without media.
    pub fn tap_stream(&self, session: MediaSessionId, mid: &str, on: bool) -> Result<()> {
        self.with(|api| {
            let f = api.media_tap.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slice borrowed for the call.
            Error::from_code(unsafe {
                f(api.ctx, session.0, mid.as_ptr(), mid.len(), u32::from(on))
            })
        })
    }

    /// Closes a media session.
    pub fn close_media(&self, session: MediaSessionId) -> Result<()> {
        self.with(|api| {
            let f = api.media_close.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive.
            Error::from_code(unsafe { f(api.ctx, session.0) })
        })
    }

    /// (ABI 1.2) Raises webhook event `kind` (`[a-z0-9._-]{1,64}`, dotted: `room.created`)
    /// with `details`, a JSON object as text. Never blocks: the host queues it (and drops it,
    /// counted, when its queue is full). [`Error::NotSupported`] when the host has no
    /// [`Capabilities::EVENTS`] (hosts before ABI 1.2). A host without webhooks accepts and
    /// drops events.
    pub fn emit_event(&self, kind: &str, details: &str) -> Result<()> {
        self.with(|api| {
            let f = api.emit_event.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slices borrowed for the call.
            Error::from_code(unsafe {
                f(
                    api.ctx,
                    kind.as_ptr(),
                    kind.len(),
                    details.as_ptr(),
                    details.len(),
                )
            })
        })
    }

    /// (ABI 1.8) Whether an event of `kind` raised now would go anywhere: ask before building
    /// the details of an event raised per message or per call, and skip it when nobody takes
    /// it. `false` when the host has no [`Capabilities::EVENTS`] (nothing would take it);
    /// `true` from a host before ABI 1.8, which cannot tell (build and raise it as before),
    /// and on any failure of the call (an event too many is harmless, one too few is not).
    /// The answer holds for the moment of the call: webhooks start after `init`.
    pub fn wants_event(&self, kind: &str) -> bool {
        self.with(|api| {
            if api.emit_event.is_none() {
                return Ok(false);
            }
            let Some(f) = api.event_wanted else {
                return Ok(true);
            };
            // SAFETY: valid while alive; the kind is borrowed for the call.
            Ok(!matches!(
                Error::from_code(unsafe { f(api.ctx, kind.as_ptr(), kind.len()) }),
                Err(Error::NotFound)
            ))
        })
        .unwrap_or(false)
    }

    fn get_in(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|api| {
            let f = api.store_get.ok_or(Error::NotSupported)?;
            let mut out = HuddleHostBuf::NONE;
            // SAFETY: valid while alive; slices borrowed, `out` outlives the call.
            let code = unsafe {
                f(
                    api.ctx,
                    ns.as_ptr(),
                    ns.len(),
                    key.as_ptr(),
                    key.len(),
                    &mut out,
                )
            };
            match Error::from_code(code) {
                Ok(()) => Ok(Some(take_buf(api, out).unwrap_or_default())),
                Err(Error::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn scan_in(
        &self,
        ns: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        self.with(|api| {
            let f = api.store_scan.ok_or(Error::NotSupported)?;
            let after = start_after.unwrap_or(&[]);
            let mut page = ScanPage::default();
            let mut more = 0u8;
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            // SAFETY: valid while alive; slices borrowed; `visit_user` points to `page`, which
            // outlives the call and is only touched by `collect_entry` during it.
            let code = unsafe {
                f(
                    api.ctx,
                    ns.as_ptr(),
                    ns.len(),
                    prefix.as_ptr(),
                    prefix.len(),
                    after.as_ptr(),
                    after.len(),
                    limit,
                    Some(collect_entry),
                    (&mut page as *mut ScanPage).cast::<c_void>(),
                    &mut more,
                )
            };
            Error::from_code(code)?;
            page.more = more != 0;
            Ok(page)
        })
    }

    fn watch_in(&self, ns: &str, prefix: &[u8]) -> Result<WatchId> {
        self.with(|api| {
            let f = api.store_watch.ok_or(Error::NotSupported)?;
            let mut id = 0u64;
            // SAFETY: valid while alive; slices borrowed, `id` outlives the call.
            Error::from_code(unsafe {
                f(
                    api.ctx,
                    ns.as_ptr(),
                    ns.len(),
                    prefix.as_ptr(),
                    prefix.len(),
                    &mut id,
                )
            })?;
            Ok(WatchId(id))
        })
    }
}

/// Copies a host buffer and gives it back to the host.
fn take_buf(api: &HuddleHostApi, buf: HuddleHostBuf) -> Option<Vec<u8>> {
    if buf.ptr.is_null() {
        return None;
    }
    // SAFETY: the host lends `ptr[0..len]` until `free_buf`, which follows right after the copy.
    let copy = unsafe { raw::bytes(buf.ptr, buf.len) }.map(<[u8]>::to_vec);
    if let Some(free) = api.free_buf {
        // SAFETY: the buffer came from this table and is returned exactly once.
        unsafe { free(api.ctx, buf) };
    }
    copy
}

/// The scan visitor: appends one entry to the `ScanPage` behind `user`.
unsafe extern "C" fn collect_entry(
    user: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `user` is the `ScanPage` that `scan_in` passed for this call; key and value are
        // borrowed for the duration of this visit (ABI).
        let (page, key, value) = unsafe {
            (
                user.cast::<ScanPage>().as_mut(),
                raw::bytes(key, key_len),
                raw::bytes(value, value_len),
            )
        };
        match (page, key, value) {
            (Some(page), Some(k), Some(v)) => {
                page.entries.push((k.to_vec(), v.to_vec()));
                abi::HUDDLE_OK
            }
            _ => abi::HUDDLE_ERR_INVALID_ARGUMENT,
        }
    }));
    result.unwrap_or(abi::HUDDLE_ERR_PANIC)
}

/// The plugin's own namespace: keys are relative to `plugin/<name>/`.
#[derive(Debug, Clone, Copy)]
pub struct Store<'h> {
    host: &'h Host,
}

impl Store<'_> {
    /// The value at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.host.get_in("", key)
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.host.with(|api| {
            let f = api.store_put.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slices borrowed for the call.
            Error::from_code(unsafe {
                f(
                    api.ctx,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                )
            })
        })
    }

    /// Deletes `key`; `true` if it was present.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let code = self.host.with(|api| {
            let f = api.store_delete.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; slice borrowed for the call.
            Ok(unsafe { f(api.ctx, key.as_ptr(), key.len()) })
        })?;
        match Error::from_code(code) {
            Ok(()) => Ok(true),
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// (ABI 1.3) Applies `ops` in order in ONE durable commit, all or none; returns once they
    /// are on disk. [`Error::TooLarge`] when the batch is over the host's limits (nothing is
    /// written: split it), [`Error::NotSupported`] on a host before ABI 1.3 (write the ops one
    /// by one instead). An empty batch is `Ok` at once.
    pub fn apply_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let raw: Vec<HuddleStoreOp> = ops
            .iter()
            .map(|op| {
                let (code, key, value) = match op {
                    BatchOp::Put { key, value } => (abi::HUDDLE_STORE_OP_PUT, *key, *value),
                    BatchOp::Delete { key } => (abi::HUDDLE_STORE_OP_DELETE, *key, &[][..]),
                };
                HuddleStoreOp {
                    op: code,
                    key: key.as_ptr(),
                    key_len: key.len(),
                    value: value.as_ptr(),
                    value_len: value.len(),
                }
            })
            .collect();
        self.host.with(|api| {
            let f = api.store_batch.ok_or(Error::NotSupported)?;
            // SAFETY: valid while alive; `raw` and the slices it points to outlive the call.
            Error::from_code(unsafe { f(api.ctx, raw.as_ptr(), raw.len()) })
        })
    }

    /// Atomically replaces `key`'s value with `new` if it currently equals `expected`
    /// (`None`: must be absent; `new: None`: delete). A mismatch is the inner `Err`, carrying the
    /// value found (`None`: absent).
    pub fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), Option<Vec<u8>>>> {
        let mut flags = 0;
        if expected.is_none() {
            flags |= abi::HUDDLE_CAS_EXPECT_ABSENT;
        }
        if new.is_none() {
            flags |= abi::HUDDLE_CAS_DELETE;
        }
        let expected = expected.unwrap_or(&[]);
        let new = new.unwrap_or(&[]);
        self.host.with(|api| {
            let f = api.store_cas.ok_or(Error::NotSupported)?;
            let mut current = HuddleHostBuf::NONE;
            // SAFETY: valid while alive; slices borrowed, `current` outlives the call.
            let code = unsafe {
                f(
                    api.ctx,
                    key.as_ptr(),
                    key.len(),
                    expected.as_ptr(),
                    expected.len(),
                    new.as_ptr(),
                    new.len(),
                    flags,
                    &mut current,
                )
            };
            match Error::from_code(code) {
                Ok(()) => Ok(Ok(())),
                Err(Error::Conflict) => Ok(Err(take_buf(api, current))),
                Err(e) => Err(e),
            }
        })
    }

    /// One page (at most `limit` entries; the host may cap it) of keys starting with `prefix`,
    /// after `start_after`. Continue with [`ScanPage::resume_after`].
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        self.host.scan_in("", prefix, start_after, limit)
    }

    /// Every entry under `prefix`, read page by page (pages are separate reads).
    pub fn scan_all(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        scan_all(|after| self.host.scan_in("", prefix, after, 0))
    }

    /// Watches writes under `prefix`; see [`crate::Plugin::on_store_change`].
    pub fn watch(&self, prefix: &[u8]) -> Result<WatchId> {
        self.host.watch_in("", prefix)
    }
}

/// A read-only shared namespace (`location`, another plugin's documented keyspace).
#[derive(Debug, Clone, Copy)]
pub struct SharedStore<'h> {
    host: &'h Host,
    ns: &'h str,
}

impl SharedStore<'_> {
    /// The value at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.host.get_in(self.ns, key)
    }

    /// One page of keys starting with `prefix`, after `start_after`.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        self.host.scan_in(self.ns, prefix, start_after, limit)
    }

    /// Every entry under `prefix`, read page by page.
    pub fn scan_all(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        scan_all(|after| self.host.scan_in(self.ns, prefix, after, 0))
    }

    /// Watches writes under `prefix`.
    pub fn watch(&self, prefix: &[u8]) -> Result<WatchId> {
        self.host.watch_in(self.ns, prefix)
    }
}

fn scan_all(
    mut page: impl FnMut(Option<&[u8]>) -> Result<ScanPage>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let p = page(after.as_deref())?;
        let next = p.resume_after().map(<[u8]>::to_vec);
        let progressed = !p.entries.is_empty();
        all.extend(p.entries);
        match next {
            // A host that says "more" without returning anything would loop forever.
            Some(k) if progressed => after = Some(k),
            _ => return Ok(all),
        }
    }
}

/// Logs through a [`Host`] at a level, `format!`-style: `huddle_sdk::log!(host, Level::Info,
/// "joined {}", user)`.
#[macro_export]
macro_rules! log {
    ($host:expr, $level:expr, $($arg:tt)+) => {
        $crate::Host::log(&$host, $level, &::std::format!($($arg)+))
    };
}

/// Logs an error through a [`Host`]: `huddle_sdk::error!(host, "bad {}", x)`.
#[macro_export]
macro_rules! error {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Error, $($arg)+) };
}

/// Logs a warning through a [`Host`].
#[macro_export]
macro_rules! warn {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Warn, $($arg)+) };
}

/// Logs information through a [`Host`].
#[macro_export]
macro_rules! info {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Info, $($arg)+) };
}

/// Logs debugging detail through a [`Host`].
#[macro_export]
macro_rules! debug {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Debug, $($arg)+) };
}

/// Logs tracing detail through a [`Host`].
#[macro_export]
macro_rules! trace {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Trace, $($arg)+) };
}

/// The `HuddleRtpSinkFn` the SDK registers: calls the plugin's [`RtpSink`] behind `user`,
/// catching a panic (logged through the host) so it never unwinds into the host.
///
/// # Safety
/// `user` must be the [`SinkCell`] pointer [`Host::set_rtp_sink`] registered, not yet taken
/// back; `mid[0..mid_len]` and `packet[0..len]` readable for the call.
unsafe extern "C" fn rtp_sink_trampoline(
    user: *mut c_void,
    session: u64,
    mid: *const u8,
    mid_len: usize,
    packet: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller's promise: the cell stays in its slot until the host lets go of it.
    let Some(cell) = (unsafe { user.cast::<SinkCell>().as_ref() }) else {
        return abi::HUDDLE_ERR_INVALID_ARGUMENT;
    };
    // SAFETY: borrowed for this call (ABI).
    let (Some(mid), Some(packet)) = (unsafe { (raw::text(mid, mid_len), raw::bytes(packet, len)) })
    else {
        return abi::HUDDLE_ERR_INVALID_ARGUMENT;
    };
    match catch_unwind(AssertUnwindSafe(|| {
        cell.sink.incoming_rtp(MediaSessionId(session), mid, packet);
    })) {
        Ok(()) => abi::HUDDLE_OK,
        Err(payload) => {
            if let Some(inner) = cell.host.upgrade() {
                let host = Host { inner };
                host.log(
                    Level::Error,
                    &format!("panic in the RTP sink: {}", raw::panic_message(&*payload)),
                );
            }
            abi::HUDDLE_ERR_PANIC
        }
    }
}
