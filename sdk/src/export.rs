//! The plugin side of the boundary: the descriptor [`crate::export_plugin!`] builds and the
//! `extern "C"` trampolines that turn ABI calls into [`Plugin`] method calls.
//!
//! Every trampoline catches panics (`catch_unwind`): a panic never unwinds into the host. It is
//! logged through the host with the callback's name and the panic message, and the call returns
//! [`abi::HUDDLE_ERR_PANIC`]. An `Err` returned by a plugin method is logged at warning level
//! and returned as its status code. A host that breaks the "one call at a time per instance"
//! rule gets [`abi::HUDDLE_ERR_BAD_STATE`] for the overlapping call instead of undefined
//! behaviour.
//!
//! Plugins must be built with `panic = "unwind"` (Cargo's default): with `panic = "abort"` a
//! panic ends the whole server.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::abi::{self, HuddleHostApi, HuddlePluginDescriptor, HuddleRegistrationEvent};
use crate::claims::Claims;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::message::{Request, Response};
use crate::raw;
use crate::types::{
    Capabilities, HangupReason, Level, MediaSessionId, RegistrationEvent, RegistrationKind,
    RequestId, RequestInfo, StoreChange, TimerId, TransactionId, Transport, WatchId,
};
use crate::Plugin;
use huddle_sip::message::{FieldSpans, MessageIndex, Span};
use huddle_sip::Message;
use std::net::{IpAddr, SocketAddr};

/// A descriptor built by [`descriptor`] for a [`Plugin`] type, and so known to point at this
/// SDK's trampolines and static strings. Only the SDK can make one; [`crate::export_plugin!`]
/// puts it in a `static`.
#[derive(Debug)]
pub struct ExportedDescriptor(HuddlePluginDescriptor);

impl ExportedDescriptor {
    /// The raw descriptor, as the entry symbol returns it.
    pub const fn as_ptr(&'static self) -> *const HuddlePluginDescriptor {
        &self.0
    }

    /// The raw descriptor.
    pub const fn raw(&'static self) -> &'static HuddlePluginDescriptor {
        &self.0
    }
}

/// Builds the descriptor of plugin type `P`. `name` and `version` must end in a NUL byte
/// (`export_plugin!` appends it); an invalid name is a compile-time error when this runs in a
/// `static` initializer.
pub const fn descriptor<P: Plugin>(
    name: &'static str,
    version: &'static str,
    capabilities: Capabilities,
) -> ExportedDescriptor {
    check_name(name.as_bytes());
    check_version(version.as_bytes());
    ExportedDescriptor(HuddlePluginDescriptor {
        abi_major: abi::HUDDLE_PLUGIN_ABI_MAJOR,
        abi_minor: abi::HUDDLE_PLUGIN_ABI_MINOR,
        struct_size: std::mem::size_of::<HuddlePluginDescriptor>(),
        name: name.as_ptr() as *const c_char,
        version: version.as_ptr() as *const c_char,
        capabilities: capabilities.bits(),
        init: Some(init::<P>),
        destroy: Some(destroy::<P>),
        handle_request: Some(handle_request::<P>),
        handle_response: Some(handle_response::<P>),
        on_timer: Some(on_timer::<P>),
        on_store_change: Some(on_store_change::<P>),
        on_registration: Some(on_registration::<P>),
        media_ready: Some(media_ready::<P>),
        incoming_rtp: Some(incoming_rtp::<P>),
        incoming_rtcp: Some(incoming_rtcp::<P>),
        media_hangup: Some(media_hangup::<P>),
        media_bitrate: Some(media_bitrate::<P>),
        admin_request: Some(admin_request::<P>),
    })
}

const fn check_name(name: &[u8]) {
    let n = name.len();
    assert!(
        n >= 2 && name[n - 1] == 0,
        "plugin name must be non-empty (and NUL-terminated)"
    );
    assert!(n - 1 <= 64, "plugin name must be at most 64 bytes");
    let mut i = 0;
    while i < n - 1 {
        let c = name[i];
        assert!(
            c.is_ascii_alphanumeric() || c == b'-' || c == b'_',
            "plugin name may contain only ASCII letters, digits, '-' and '_'"
        );
        i += 1;
    }
}

const fn check_version(version: &[u8]) {
    let n = version.len();
    assert!(
        n >= 2 && version[n - 1] == 0,
        "plugin version must be non-empty (and NUL-terminated)"
    );
    let mut i = 0;
    while i < n - 1 {
        assert!(version[i] != 0, "plugin version must not contain NUL");
        i += 1;
    }
}

/// One plugin instance as the host sees it: the pointer `init` hands out.
struct Instance<P> {
    /// Set while a callback runs, to turn a host's concurrent call into an error.
    busy: AtomicBool,
    host: Host,
    plugin: UnsafeCell<P>,
}

/// Runs `f` on the instance behind `instance`, catching panics and turning the outcome into a
/// status code.
///
/// # Safety
/// `instance` must be null or a pointer returned by `init::<P>` and not yet destroyed.
unsafe fn call<P: Plugin>(
    instance: *mut c_void,
    what: &str,
    f: impl FnOnce(&mut P, &Host) -> Result<()>,
) -> i32 {
    // SAFETY: the caller's promise; shared access only, the plugin itself is behind the cell.
    let Some(inst) = (unsafe { instance.cast::<Instance<P>>().as_ref() }) else {
        return abi::HUDDLE_ERR_INVALID_ARGUMENT;
    };
    if inst.busy.swap(true, Ordering::Acquire) {
        inst.host.log(
            Level::Error,
            &format!("{what}: the host called this instance while another call was running"),
        );
        return abi::HUDDLE_ERR_BAD_STATE;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `busy` was false and is now true, so no other `&mut P` exists until we reset
        // it below.
        let plugin = unsafe { &mut *inst.plugin.get() };
        f(plugin, &inst.host)
    }));
    inst.busy.store(false, Ordering::Release);
    report(&inst.host, what, outcome)
}

fn report(host: &Host, what: &str, outcome: std::thread::Result<Result<()>>) -> i32 {
    match outcome {
        Ok(Ok(())) => abi::HUDDLE_OK,
        Ok(Err(e)) => {
            host.log(Level::Warn, &format!("{what} failed: {e}"));
            e.code()
        }
        Err(payload) => {
            host.log(
                Level::Error,
                &format!("panic in {what}: {}", raw::panic_message(&*payload)),
            );
            abi::HUDDLE_ERR_PANIC
        }
    }
}

unsafe extern "C" fn init<P: Plugin>(
    api: *const HuddleHostApi,
    config: *const u8,
    config_len: usize,
    out_instance: *mut *mut c_void,
) -> i32 {
    // First, before anything is allocated: a library on `HostAllocator` takes the host's
    // allocator only if nothing was allocated before (`allocator` module docs).
    // SAFETY: `api` is null or the host's table, `struct_size` bytes (ABI).
    unsafe { crate::allocator::offered(api) };
    if out_instance.is_null() {
        return abi::HUDDLE_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: the ABI promises that `api` stays valid until `destroy` returns, or until this
    // call returns if it fails; `host.shutdown()` below ends our use of it in that case.
    let host = match unsafe { Host::from_raw(api) } {
        Ok(host) => host,
        Err(e) => return e.code(),
    };
    // SAFETY: `config` is borrowed for this call (ABI).
    let config = unsafe { raw::bytes(config, config_len) };
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<P> {
        let config = Config::from_bytes(config.ok_or(Error::InvalidArgument)?)?;
        let mut claims = Claims::new();
        let plugin = P::init(&host, &config, &mut claims)?;
        for claim in claims.iter() {
            if let Err(e) = claim.validate() {
                host.log(Level::Error, &format!("invalid claim {claim}: {e}"));
                return Err(e.into());
            }
            if let Err(e) = host.claim(claim) {
                host.log(
                    Level::Error,
                    &format!("the host refused claim {claim}: {e}"),
                );
                return Err(e);
            }
        }
        Ok(plugin)
    }));
    match outcome {
        Ok(Ok(plugin)) => {
            let instance = Box::new(Instance {
                busy: AtomicBool::new(false),
                host,
                plugin: UnsafeCell::new(plugin),
            });
            // SAFETY: checked non-null above; the host provides a writable pointer slot.
            unsafe { *out_instance = Box::into_raw(instance).cast::<c_void>() };
            abi::HUDDLE_OK
        }
        other => {
            let code = report(&host, "init", other.map(|r| r.map(drop)));
            host.shutdown();
            if code == abi::HUDDLE_OK {
                abi::HUDDLE_ERR_INTERNAL
            } else {
                code
            }
        }
    }
}

unsafe extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `Box::into_raw` in `init::<P>`, and the host calls `destroy`
    // exactly once, with no other call running or following (ABI).
    let inst = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    let host = inst.host.clone();
    // The RTP sink (ABI 1.7) is not called during or after the plugin's shutdown.
    host.drop_rtp_sink();
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        let mut inst = inst;
        inst.plugin.get_mut().shutdown(&inst.host);
        drop(inst);
        Ok(())
    }));
    let _ = report(&host, "destroy", outcome);
    host.shutdown();
}

unsafe extern "C" fn handle_request<P: Plugin>(
    instance: *mut c_void,
    txn: u64,
    msg: *const u8,
    len: usize,
    info: *const HuddleRequestInfo,
) -> i32 {
    // Read inside the call, so that a panic on a hostile index (there should be none:
    // `Message::from_index` checks every span) is caught like one in the plugin.
    let f = move |p: &mut P, host: &Host| {
        // SAFETY: `msg` and `info` are borrowed for this call (ABI), which is still running.
        let parsed = unsafe { request_from_raw(txn, msg, len, info) };
        p.handle_request(host, parsed?)
    };
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe { call::<P>(instance, "handle_request", f) }
}

use crate::abi::{HuddleField, HuddleRequestInfo};

/// # Safety
/// `msg[0..len]` and `*info` (with what it points to) must be valid for the call.
unsafe fn request_from_raw(
    txn: u64,
    msg: *const u8,
    len: usize,
    info: *const HuddleRequestInfo,
) -> Result<Request> {
    // SAFETY: the caller's promise.
    let bytes = unsafe { raw::bytes(msg, len) }.ok_or(Error::InvalidArgument)?;
    // SAFETY: the caller's promise.
    let request_info = unsafe { request_info_from_raw(info) }?;
    let txn = (txn != 0).then_some(TransactionId(txn));
    let bytes = Bytes::copy_from_slice(bytes);
    // SAFETY: the caller's promise (`request_info_from_raw` checked that `info` is not null).
    match unsafe { indexed_message(&bytes, info) } {
        Some(message) => Request::from_message(txn, message, request_info),
        None => Request::parse(txn, bytes, request_info),
    }
}

/// Index entries read into a buffer on the stack; a request with more fields has its index
/// copied to the heap.
const STACK_FIELDS: usize = 32;

/// (ABI 1.9) The request built from the host's index of it (module docs of [`abi`], "The
/// request's index and binary source"); `None` when the info has no index (a host before 1.9,
/// or a request it has none for) or the index does not fit the bytes: parse them then.
///
/// # Safety
/// `info` must point to a valid `HuddleRequestInfo` of at least `struct_size` bytes, and
/// `fields[0..fields_len]` must be valid for the call when `struct_size` covers them and
/// `fields` is not null.
unsafe fn indexed_message(bytes: &Bytes, info: *const HuddleRequestInfo) -> Option<Message> {
    const NEEDED: usize =
        std::mem::offset_of!(HuddleRequestInfo, body_end) + std::mem::size_of::<u32>();
    // SAFETY: the caller's promise; `struct_size` is the first field.
    if unsafe { *info.cast::<usize>() } < NEEDED {
        return None;
    }
    // SAFETY: the whole struct is there (checked above).
    let info = unsafe { &*info };
    if info.fields.is_null() || info.fields_len > 256 {
        return None;
    }
    // SAFETY: non-null, at most 256 entries, borrowed for the call (ABI).
    let raw_fields: &[HuddleField] =
        unsafe { std::slice::from_raw_parts(info.fields, info.fields_len) };
    let spans = |f: &HuddleField| FieldSpans {
        line: Span {
            start: f.line_start,
            end: f.line_end,
        },
        value: Span {
            start: f.value_start,
            end: f.value_end,
        },
    };
    let mut stack = [FieldSpans::default(); STACK_FIELDS];
    let heap: Vec<FieldSpans>;
    let fields = match stack.get_mut(..raw_fields.len()) {
        Some(buf) => {
            for (slot, f) in buf.iter_mut().zip(raw_fields) {
                *slot = spans(f);
            }
            &*buf
        }
        None => {
            heap = raw_fields.iter().map(spans).collect();
            &heap
        }
    };
    Message::from_index(
        bytes.clone(),
        &MessageIndex {
            start_line_end: info.start_line_end,
            fields,
            headers_end: info.headers_end,
            body: Span {
                start: info.body_start,
                end: info.body_end,
            },
        },
    )
}

/// Reads a `HuddleRequestInfo`, using only the fields its `struct_size` covers: a host before
/// ABI 1.9 passes the 1.0 layout.
///
/// # Safety
/// `info` must be null or point to a valid `HuddleRequestInfo` of at least `struct_size` bytes.
pub(crate) unsafe fn request_info_from_raw(info: *const HuddleRequestInfo) -> Result<RequestInfo> {
    // SAFETY: the caller's promise; `struct_size` is the first field.
    let Some(&size) = (unsafe { info.cast::<usize>().as_ref() }) else {
        return Err(Error::InvalidArgument);
    };
    if size < abi::HUDDLE_REQUEST_INFO_MIN_SIZE {
        return Err(Error::Incompatible);
    }
    // SAFETY: at least the 1.0 layout is there (checked above); later fields are read only
    // through `binary_source`, which checks `size` first.
    let info = info.cast::<Info10>();
    // SAFETY: as above.
    let info = unsafe { &*info };
    // SAFETY: borrowed for the call (ABI).
    let user =
        unsafe { raw::text(info.auth_user, info.auth_user_len) }.ok_or(Error::InvalidArgument)?;
    // SAFETY: `size` is the info's `struct_size` (the caller's promise).
    let source = match unsafe { binary_source(info, size) } {
        Some(source) => source,
        None => {
            // SAFETY: borrowed for the call (ABI).
            let ip = unsafe { raw::text(info.source_ip, info.source_ip_len) }
                .ok_or(Error::InvalidArgument)?;
            RequestInfo::parse_source(ip, info.source_port)
        }
    };
    Ok(RequestInfo {
        transport: Transport::from_code(info.transport),
        source,
        auth_user: (!user.is_empty()).then(|| user.to_owned()),
        related: (info.related_txn != 0).then_some(TransactionId(info.related_txn)),
    })
}

/// The 1.0 layout of [`HuddleRequestInfo`]: what a reference to an info from a host before 1.9
/// may cover (a `&HuddleRequestInfo` would claim bytes past its `struct_size`).
#[repr(C)]
struct Info10 {
    struct_size: usize,
    transport: u32,
    source_port: u32,
    source_ip: *const u8,
    source_ip_len: usize,
    auth_user: *const u8,
    auth_user_len: usize,
    related_txn: u64,
}

const _: () = assert!(std::mem::size_of::<Info10>() == abi::HUDDLE_REQUEST_INFO_MIN_SIZE);

/// (ABI 1.9) The source from `source_family`/`source_addr`, when `size` covers them and the
/// host knew it: `Some(None)` for a host that says it does not know, `None` for a host before
/// 1.9 (read the text then).
///
/// # Safety
/// `info` must point to a `HuddleRequestInfo` of at least `size` bytes.
unsafe fn binary_source(info: &Info10, size: usize) -> Option<Option<SocketAddr>> {
    const NEEDED: usize = std::mem::offset_of!(HuddleRequestInfo, source_addr) + 16;
    if size < NEEDED {
        return None;
    }
    let full = (info as *const Info10).cast::<HuddleRequestInfo>();
    // SAFETY: `size` covers both fields (checked above; the caller's promise); read through
    // the pointer, as the struct past them may be absent.
    let (family, addr) = unsafe {
        (
            std::ptr::addr_of!((*full).source_family).read(),
            std::ptr::addr_of!((*full).source_addr).read(),
        )
    };
    let port = u16::try_from(info.source_port).unwrap_or(0);
    let ip = match family {
        abi::HUDDLE_ADDR_IPV4 => {
            let [a, b, c, d, ..] = addr;
            IpAddr::from([a, b, c, d])
        }
        abi::HUDDLE_ADDR_IPV6 => IpAddr::from(addr),
        abi::HUDDLE_ADDR_NONE => return Some(None),
        // A family this SDK does not know: the text still says it.
        _ => return None,
    };
    Some(Some(SocketAddr::new(ip, port)))
}

unsafe extern "C" fn handle_response<P: Plugin>(
    instance: *mut c_void,
    request_id: u64,
    msg: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: borrowed for this call (ABI).
    let bytes = unsafe { raw::bytes(msg, len) }.map(Bytes::copy_from_slice);
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "handle_response", move |p, host| {
            let bytes = bytes.ok_or(Error::InvalidArgument)?;
            p.handle_response(host, Response::parse(RequestId(request_id), bytes)?)
        })
    }
}

unsafe extern "C" fn on_timer<P: Plugin>(instance: *mut c_void, timer: u64, token: u64) -> i32 {
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "on_timer", move |p, host| {
            p.on_timer(host, TimerId(timer), token)
        })
    }
}

unsafe extern "C" fn on_store_change<P: Plugin>(
    instance: *mut c_void,
    watch: u64,
    kind: u32,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32 {
    let watch = WatchId(watch);
    // SAFETY: borrowed for this call (ABI).
    let (key, value) = unsafe { (raw::bytes(key, key_len), raw::bytes(value, value_len)) };
    let change = match (kind, key, value) {
        (abi::HUDDLE_STORE_PUT, Some(k), Some(v)) => Ok(StoreChange::Put {
            watch,
            key: k.to_vec(),
            value: v.to_vec(),
        }),
        (abi::HUDDLE_STORE_DELETE, Some(k), _) => Ok(StoreChange::Delete {
            watch,
            key: k.to_vec(),
        }),
        (abi::HUDDLE_STORE_LAGGED, _, _) => Ok(StoreChange::Lagged { watch }),
        _ => Err(Error::InvalidArgument),
    };
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "on_store_change", move |p, host| {
            p.on_store_change(host, change?)
        })
    }
}

unsafe extern "C" fn on_registration<P: Plugin>(
    instance: *mut c_void,
    event: *const HuddleRegistrationEvent,
) -> i32 {
    // SAFETY: borrowed for this call (ABI).
    let event = unsafe { registration_from_raw(event) };
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "on_registration", move |p, host| {
            p.on_registration(host, event?)
        })
    }
}

/// # Safety
/// `event` must be null or point to a valid event of at least its `struct_size` bytes.
unsafe fn registration_from_raw(
    event: *const HuddleRegistrationEvent,
) -> Result<RegistrationEvent> {
    // SAFETY: the caller's promise; `struct_size` is the first field.
    let Some(size) = (unsafe { event.cast::<usize>().as_ref() }) else {
        return Err(Error::InvalidArgument);
    };
    let v1_0 = std::mem::offset_of!(HuddleRegistrationEvent, binding_keys);
    if *size < v1_0 {
        return Err(Error::Incompatible);
    }
    // SAFETY: the 1.0 fields lie within the first `v1_0` bytes (checked above); each is read
    // through its place, without a reference to the whole struct, which a 1.1 host's shorter
    // one would not fill.
    let (kind, bindings, aor_ptr, aor_len) = unsafe {
        (
            (&raw const (*event).kind).read(),
            (&raw const (*event).bindings).read(),
            (&raw const (*event).aor).read(),
            (&raw const (*event).aor_len).read(),
        )
    };
    // SAFETY: borrowed for the call (ABI).
    let aor = unsafe { raw::text(aor_ptr, aor_len) }.ok_or(Error::InvalidArgument)?;
    let binding_keys = if *size >= std::mem::size_of::<HuddleRegistrationEvent>() {
        // SAFETY: a 1.2 host's struct (size checked); the list is borrowed for the call.
        let keys = unsafe {
            let e = &*event;
            raw::text(e.binding_keys, e.binding_keys_len)
        }
        .ok_or(Error::InvalidArgument)?;
        keys.lines().map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    Ok(RegistrationEvent {
        kind: RegistrationKind::from_code(kind),
        aor: aor.to_owned(),
        bindings,
        binding_keys,
    })
}

unsafe extern "C" fn media_ready<P: Plugin>(instance: *mut c_void, session: u64) -> i32 {
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "media_ready", move |p, host| {
            p.media_ready(host, MediaSessionId(session))
        })
    }
}

unsafe extern "C" fn incoming_rtp<P: Plugin>(
    instance: *mut c_void,
    session: u64,
    mid: *const u8,
    mid_len: usize,
    packet: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: borrowed for this call (ABI); used only inside it.
    let (mid, packet) = unsafe { (raw::text(mid, mid_len), raw::bytes(packet, len)) };
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "incoming_rtp", move |p, host| {
            match (mid, packet) {
                (Some(mid), Some(packet)) => {
                    p.incoming_rtp(host, MediaSessionId(session), mid, packet)
                }
                _ => Err(Error::InvalidArgument),
            }
        })
    }
}

unsafe extern "C" fn incoming_rtcp<P: Plugin>(
    instance: *mut c_void,
    session: u64,
    packet: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: borrowed for this call (ABI); used only inside it.
    let packet = unsafe { raw::bytes(packet, len) };
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "incoming_rtcp", move |p, host| {
            p.incoming_rtcp(
                host,
                MediaSessionId(session),
                packet.ok_or(Error::InvalidArgument)?,
            )
        })
    }
}

unsafe extern "C" fn media_hangup<P: Plugin>(
    instance: *mut c_void,
    session: u64,
    reason: u32,
) -> i32 {
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "media_hangup", move |p, host| {
            p.media_hangup(
                host,
                MediaSessionId(session),
                HangupReason::from_code(reason),
            )
        })
    }
}

unsafe extern "C" fn media_bitrate<P: Plugin>(
    instance: *mut c_void,
    session: u64,
    bps: u64,
) -> i32 {
    // SAFETY: `instance` came from `init::<P>` (ABI).
    unsafe {
        call::<P>(instance, "media_bitrate", move |p, host| {
            p.media_bitrate(host, MediaSessionId(session), bps)
        })
    }
}

unsafe extern "C" fn admin_request<P: Plugin>(
    instance: *mut c_void,
    request: *const u8,
    len: usize,
    reply: Option<unsafe extern "C" fn(user: *mut c_void, json: *const u8, json_len: usize)>,
    reply_user: *mut c_void,
) -> i32 {
    // SAFETY: borrowed for this call (ABI); used only inside it.
    let request = unsafe { raw::text(request, len) };
    // "Takes no admin requests" is an answer, not a failure: not logged as one.
    let mut unsupported = false;
    // SAFETY: `instance` came from `init::<P>` (ABI).
    let code = unsafe {
        call::<P>(instance, "admin_request", |p, host| {
            let (Some(request), Some(reply)) = (request, reply) else {
                return Err(Error::InvalidArgument);
            };
            match p.admin_request(host, request) {
                Err(Error::NotSupported) => {
                    unsupported = true;
                    Ok(())
                }
                Err(e) => Err(e),
                Ok(answer) => {
                    // SAFETY: the host's writer, valid during this call; the answer is
                    // borrowed for it.
                    reply(reply_user, answer.as_ptr(), answer.len());
                    Ok(())
                }
            }
        })
    };
    if unsupported {
        abi::HUDDLE_ERR_NOT_SUPPORTED
    } else {
        code
    }
}
