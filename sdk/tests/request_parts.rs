//! ABI 1.10: requests sent as parts (`send_request_parts`), across versions. A plugin built
//! with this SDK on a host before 1.10 (the bytes written in the plugin and sent with
//! `send_request`, the entry past the table's size never read), on a 1.10 host (the parts
//! handed over, the same request), a plugin built before 1.10 on this host (its bytes still
//! served), and parts a hostile plugin could pass through the table (refused, never a panic).
#![allow(unsafe_code)]

mod common;

use std::ffi::c_void;
use std::sync::Mutex;

use huddle_sdk::abi::{self, HuddleHeader, HuddleHostApi, HuddleRequestParts};
use huddle_sdk::fake::FakeHost;
use huddle_sdk::hosting::PluginEntry;
use huddle_sdk::sip::message::RequestParts;
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Host, Message, Method, NewRequest, Plugin, Request,
    RequestId, Result,
};

fn request() -> NewRequest {
    NewRequest::new(Method::Message, "sip:bob@example.test")
        .from("\"Alice\" <sip:alice@example.test>;tag=a1")
        .call_id("c1@example.test")
        .cseq(4)
        .header("Subject", "hi there")
        .header("Huddle-Answer", "12")
        .body("text/plain;charset=UTF-8", b"hello\r\n\r\nagain")
}

/// What the tables below were handed: `("bytes" | "parts", the request as written)`.
static SENT: Mutex<Vec<(&'static str, Vec<u8>)>> = Mutex::new(Vec::new());
/// What the plugin's `send` returned in its `init`.
static RESULT: Mutex<Option<Result<RequestId>>> = Mutex::new(None);
/// The tests share the statics: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Sends [`request`] from `init` with [`Host::send`] (parts when the host takes them).
struct Sender;

impl Plugin for Sender {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("sender"));
        *RESULT.lock().unwrap() = Some(host.send(&request()));
        Ok(Sender)
    }

    fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
        Ok(())
    }
}

/// Sends [`request`] from `init` as bytes, as a plugin built before 1.10 does.
struct OldSender;

impl Plugin for OldSender {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("old-sender"));
        *RESULT.lock().unwrap() = Some(host.send_request(&request().build()));
        Ok(OldSender)
    }

    fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
        Ok(())
    }
}

fn entry() -> PluginEntry {
    huddle_sdk::plugin_entry!(Sender, "sender", "1", Capabilities::SEND_REQUEST)
}

unsafe extern "C" fn bytes_sent(
    _: *mut c_void,
    msg: *const u8,
    len: usize,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: the plugin lends the bytes for the call and passes its id slot.
    let bytes = unsafe { std::slice::from_raw_parts(msg, len) };
    SENT.lock().unwrap().push(("bytes", bytes.to_vec()));
    // SAFETY: as above.
    unsafe { *out_id = 7 };
    abi::HUDDLE_OK
}

/// A 1.10 host's `send_request_parts` that writes the parts as the server's host does.
unsafe extern "C" fn parts_sent(
    _: *mut c_void,
    parts: *const HuddleRequestParts,
    out_id: *mut u64,
) -> i32 {
    // SAFETY: the plugin lends the parts and all they point to for the call.
    let p = unsafe { &*parts };
    assert_eq!(p.struct_size, std::mem::size_of::<HuddleRequestParts>());
    let text = |ptr: *const u8, len: usize| {
        // SAFETY: as above; the SDK hands over UTF-8.
        std::str::from_utf8(unsafe { std::slice::from_raw_parts(ptr, len) }).unwrap()
    };
    // SAFETY: as above.
    let fields = unsafe { std::slice::from_raw_parts(p.headers, p.headers_len) };
    let headers: Vec<(&str, &str)> = fields
        .iter()
        .map(|f: &HuddleHeader| (text(f.name, f.name_len), text(f.value, f.value_len)))
        .collect();
    let parts = RequestParts {
        method: text(p.method, p.method_len),
        uri: text(p.uri, p.uri_len),
        headers: &headers,
        // SAFETY: as above.
        body: unsafe { std::slice::from_raw_parts(p.body, p.body_len) },
    };
    let message = Message::from_parts(&parts, 65_535).unwrap();
    SENT.lock().unwrap().push(("parts", message.raw().to_vec()));
    // SAFETY: as above.
    unsafe { *out_id = 8 };
    abi::HUDDLE_OK
}

/// A host table of ABI 1.`minor`, `struct_size` bytes, that sends requests both ways.
fn table(minor: u32, struct_size: usize) -> HuddleHostApi {
    let mut table = common::bare_table(minor, struct_size);
    table.host_capabilities = Capabilities::SEND_REQUEST.bits();
    table.send_request = Some(bytes_sent);
    // Past a 1.9 table's `struct_size`: a plugin that read it anyway would call it.
    table.send_request_parts = Some(parts_sent);
    table
}

fn run(table: &HuddleHostApi) -> (Result<RequestId>, Vec<(&'static str, Vec<u8>)>) {
    SENT.lock().unwrap().clear();
    common::init_and_destroy(&entry(), table);
    let result = RESULT.lock().unwrap().take().expect("init ran");
    (result, std::mem::take(&mut *SENT.lock().unwrap()))
}

#[test]
fn a_1_9_host_gets_the_bytes_the_plugin_writes() {
    let _serial = SERIAL.lock().unwrap();
    let size = std::mem::offset_of!(HuddleHostApi, send_request_parts);
    let (result, sent) = run(&table(9, size));
    assert_eq!(result, Ok(RequestId(7)));
    assert_eq!(sent, vec![("bytes", request().build().to_vec())]);
}

#[test]
fn a_1_10_host_gets_the_parts_of_the_same_request() {
    let _serial = SERIAL.lock().unwrap();
    let (result, sent) = run(&table(10, std::mem::size_of::<HuddleHostApi>()));
    assert_eq!(result, Ok(RequestId(8)));
    assert_eq!(sent, vec![("parts", request().build().to_vec())]);
}

#[test]
fn this_host_serves_the_bytes_of_an_older_plugin_and_the_parts_of_a_newer_one() {
    let _serial = SERIAL.lock().unwrap();
    let host = FakeHost::new();
    let old = huddle_sdk::plugin_entry!(OldSender, "old", "1", Capabilities::SEND_REQUEST);
    let new = entry();
    for entry in [&old, &new] {
        let plugin = host.start(entry, "").unwrap();
        assert!(RESULT.lock().unwrap().take().unwrap().is_ok());
        drop(plugin);
    }
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 2);
    for s in &sent {
        assert_eq!(s.message.raw(), &request().build());
    }
}

// --- parts a hostile plugin passes through this host's table ---------------------------------

/// The table this host handed the capturing plugin's `init`, valid until its `destroy`.
static TABLE: Mutex<usize> = Mutex::new(0);
static REAL_INIT: Mutex<Option<usize>> = Mutex::new(None);

unsafe extern "C" fn capturing_init(
    host: *const HuddleHostApi,
    config: *const u8,
    config_len: usize,
    out: *mut *mut c_void,
) -> i32 {
    *TABLE.lock().unwrap() = host as usize;
    let real = REAL_INIT.lock().unwrap().unwrap();
    // SAFETY: the address of the SDK's own `init` trampoline, saved below.
    let real: unsafe extern "C" fn(
        *const HuddleHostApi,
        *const u8,
        usize,
        *mut *mut c_void,
    ) -> i32 = unsafe { std::mem::transmute(real) };
    // SAFETY: forwarded as the host called us.
    unsafe { real(host, config, config_len, out) }
}

fn header(name: &[u8], value: &[u8]) -> HuddleHeader {
    HuddleHeader {
        name: name.as_ptr(),
        name_len: name.len(),
        value: value.as_ptr(),
        value_len: value.len(),
    }
}

#[test]
fn hostile_parts_through_the_table_are_refused_without_a_panic() {
    let _serial = SERIAL.lock().unwrap();
    let descriptor = Box::leak(Box::new(*entry().raw()));
    *REAL_INIT.lock().unwrap() = descriptor.init.map(|f| f as usize);
    descriptor.init = Some(capturing_init);
    // SAFETY: leaked, so valid for the rest of the process; only `init` is wrapped.
    let wrapped = unsafe { PluginEntry::from_raw(descriptor) }.unwrap();
    let host = FakeHost::new();
    let plugin = host.start(&wrapped, "").unwrap();
    RESULT.lock().unwrap().take();
    host.take_sent_requests();
    // SAFETY: the table of a live instance (the plugin is dropped at the end).
    let table = unsafe { &*(*TABLE.lock().unwrap() as *const HuddleHostApi) };
    let send = table.send_request_parts.expect("a 1.10 host has it");

    let good: Vec<HuddleHeader> = [
        (&b"From"[..], &b"<sip:a@h>;tag=1"[..]),
        (b"To", b"<sip:b@h>"),
        (b"Call-ID", b"x"),
        (b"CSeq", b"1 MESSAGE"),
    ]
    .iter()
    .map(|(n, v)| header(n, v))
    .collect();
    let parts = |headers: &[HuddleHeader], method: &'static [u8]| HuddleRequestParts {
        struct_size: std::mem::size_of::<HuddleRequestParts>(),
        method: method.as_ptr(),
        method_len: method.len(),
        uri: b"sip:b@h".as_ptr(),
        uri_len: 7,
        headers: headers.as_ptr(),
        headers_len: headers.len(),
        body: std::ptr::null(),
        body_len: 0,
    };
    let call = |p: *const HuddleRequestParts| {
        let mut id = 0u64;
        // SAFETY: the table's function with its ctx; what `p` points to lives for the call.
        unsafe { send(table.ctx, p, &mut id) }
    };
    assert_eq!(call(&parts(&good, b"MESSAGE")), abi::HUDDLE_OK);
    assert_eq!(host.take_sent_requests().len(), 1);

    let invalid = abi::HUDDLE_ERR_INVALID_ARGUMENT;
    assert_eq!(call(std::ptr::null()), invalid);
    // SAFETY: as above, with a null id slot.
    let null_out = unsafe { send(table.ctx, &parts(&good, b"MESSAGE"), std::ptr::null_mut()) };
    assert_eq!(null_out, invalid);
    let mut small = parts(&good, b"MESSAGE");
    small.struct_size = 8;
    assert_eq!(call(&small), invalid);
    let mut dangling = parts(&good, b"MESSAGE");
    dangling.headers = std::ptr::null();
    assert_eq!(call(&dangling), invalid);
    let mut null_body = parts(&good, b"MESSAGE");
    null_body.body_len = 3;
    assert_eq!(call(&null_body), invalid);
    assert_eq!(call(&parts(&good, b"MES SAGE")), invalid);
    assert_eq!(call(&parts(&good, b"\xffMESSAGE")), invalid, "not UTF-8");
    assert_eq!(call(&parts(&good, b"ACK")), invalid, "CSeq names MESSAGE");
    let bad_fields: [(&[u8], &[u8]); 7] = [
        (b"Subject", b"a\r\nVia: SIP/2.0/UDP evil"),
        (b"Subject", b"\xfe"),
        (b"Sub ject", b"a"),
        (b"Via", b"SIP/2.0/UDP h"),
        (b"Content-Length", b"0"),
        (b"CSeq", b"2 MESSAGE"),
        (b"", b"a"),
    ];
    for (name, value) in bad_fields {
        let mut fields = good.clone();
        fields.push(header(name, value));
        assert_eq!(
            call(&parts(&fields, b"MESSAGE")),
            invalid,
            "{name:?}: {value:?}"
        );
    }
    let mut null_name = good.clone();
    null_name.push(HuddleHeader {
        name: std::ptr::null(),
        name_len: 4,
        value: b"a".as_ptr(),
        value_len: 1,
    });
    assert_eq!(call(&parts(&null_name, b"MESSAGE")), invalid);
    for missing in 0..good.len() {
        let mut fields = good.clone();
        fields.remove(missing);
        assert_eq!(call(&parts(&fields, b"MESSAGE")), invalid);
    }
    // Many fields (past the SDK's stack array) are read too, and the host's limit holds.
    let mut many = good.clone();
    many.extend(std::iter::repeat_n(header(b"X", b"y"), 40));
    assert_eq!(call(&parts(&many, b"MESSAGE")), abi::HUDDLE_OK);
    many.extend(std::iter::repeat_n(header(b"X", b"y"), 300));
    assert_eq!(call(&parts(&many, b"MESSAGE")), abi::HUDDLE_ERR_TOO_LARGE);
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1, "only the good ones were sent");
    assert_eq!(sent[0].message.headers().len(), 45);
    drop(plugin);
}
