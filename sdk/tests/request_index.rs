//! ABI 1.9: the request's index and binary source in `HuddleRequestInfo`, across versions. A
//! plugin built with this SDK on a host before 1.9 (a 1.0-sized info, whatever lies past it),
//! on this host (the index used, a wrong one parsed instead), and a plugin built before 1.9 on
//! this host (it reads the 1.0 part, the source as text, as it always did).
#![allow(unsafe_code)]

mod common;

use std::ffi::c_void;
use std::net::SocketAddr;
use std::sync::Mutex;

use huddle_sdk::abi::{
    self, HuddleField, HuddlePluginDescriptor, HuddleRequestInfo, HUDDLE_REQUEST_INFO_MIN_SIZE,
};
use huddle_sdk::fake::FakeHost;
use huddle_sdk::hosting::PluginEntry;
use huddle_sdk::{
    Bytes, Capabilities, Claim, Claims, Config, Host, Message, Plugin, Request, RequestInfo,
    Result, Transport,
};

const MESSAGE: &str = "MESSAGE sip:seen@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <sip:seen@example.test>\r\nSubject: hello there\r\nCall-ID: m1\r\nCSeq: 7 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";

/// What the plugin saw of the last request: Subject, body, source.
type Seen = (Option<String>, Vec<u8>, Option<SocketAddr>);

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

struct Records;

impl Plugin for Records {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("seen"));
        Ok(Records)
    }

    fn handle_request(&mut self, _: &Host, req: Request) -> Result<()> {
        *SEEN.lock().unwrap() = Some((
            req.header("Subject").map(str::to_owned),
            req.body().to_vec(),
            req.info().source,
        ));
        Ok(())
    }
}

/// The tests share `SEEN`: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Calls the plugin's `handle_request` with `info` as a host would, returning what it saw.
fn deliver(entry: &PluginEntry, info: &HuddleRequestInfo) -> Seen {
    // Started by hand, not through `FakeHost`: the info is what is under test here.
    let mut table = common::bare_table(abi::HUDDLE_PLUGIN_ABI_MINOR, abi::HUDDLE_HOST_API_MIN_SIZE);
    table.emit_event = Some(common::noop::emit_event);
    let instance = common::init(entry, &table);
    *SEEN.lock().unwrap() = None;
    // SAFETY: the message and the info (with what it points to) are valid for the call.
    let status = unsafe {
        (entry.raw().handle_request.unwrap())(instance, 5, MESSAGE.as_ptr(), MESSAGE.len(), info)
    };
    common::destroy(entry, instance);
    assert_eq!(status, abi::HUDDLE_OK);
    SEEN.lock()
        .unwrap()
        .take()
        .expect("the plugin saw the request")
}

/// A full 1.9 info for `MESSAGE` from 192.0.2.7:40000 (text and binary), with `fields`.
fn info_1_9(fields: Option<(&[HuddleField], [u32; 4])>) -> HuddleRequestInfo {
    let ip = "192.0.2.7";
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[192, 0, 2, 7]);
    let (ptr, len, [sle, he, bs, be]) = match fields {
        Some((f, rest)) => (f.as_ptr(), f.len(), rest),
        None => (std::ptr::null(), 0, [0; 4]),
    };
    HuddleRequestInfo {
        struct_size: size_of::<HuddleRequestInfo>(),
        transport: abi::HUDDLE_TRANSPORT_UDP,
        source_port: 40000,
        source_ip: ip.as_ptr(),
        source_ip_len: ip.len(),
        auth_user: std::ptr::null(),
        auth_user_len: 0,
        related_txn: 0,
        source_family: abi::HUDDLE_ADDR_IPV4,
        source_addr: addr,
        fields: ptr,
        fields_len: len,
        start_line_end: sle,
        headers_end: he,
        body_start: bs,
        body_end: be,
    }
}

/// The index the host would hand over with `MESSAGE`.
fn index() -> (Vec<HuddleField>, [u32; 4]) {
    let msg = Message::parse(Bytes::from_static(MESSAGE.as_bytes())).unwrap();
    let fields = msg
        .index_fields()
        .unwrap()
        .map(|f| HuddleField {
            line_start: f.line.start,
            line_end: f.line.end,
            value_start: f.value.start,
            value_end: f.value.end,
        })
        .collect();
    let body = msg.body_span();
    (
        fields,
        [
            msg.start_line_end() as u32,
            msg.headers_end() as u32,
            body.start,
            body.end,
        ],
    )
}

fn entry() -> PluginEntry {
    huddle_sdk::plugin_entry!(Records, "records", "1", Capabilities::NONE)
}

fn source() -> Option<SocketAddr> {
    Some("192.0.2.7:40000".parse().unwrap())
}

#[test]
fn a_1_8_host_passes_the_1_0_info_and_the_plugin_parses() {
    let _serial = SERIAL.lock().unwrap();
    let (fields, rest) = index();
    let mut info = info_1_9(Some((&fields, rest)));
    // What lies past a 1.8 host's info is not the plugin's to read: make it wrong, so that a
    // plugin that read it would see another source and a Subject cut short.
    info.struct_size = HUDDLE_REQUEST_INFO_MIN_SIZE;
    info.source_family = abi::HUDDLE_ADDR_IPV6;
    info.source_addr = [0x20; 16];
    let mut lying = fields.clone();
    lying[4].value_end -= 3;
    info.fields = lying.as_ptr();
    let seen = deliver(&entry(), &info);
    assert_eq!(seen.0.as_deref(), Some("hello there"));
    assert_eq!(seen.1, b"hi");
    assert_eq!(seen.2, source(), "the source read from the text");
}

#[test]
fn a_1_9_host_hands_its_index_and_the_plugin_uses_it() {
    let _serial = SERIAL.lock().unwrap();
    let (fields, rest) = index();
    let seen = deliver(&entry(), &info_1_9(Some((&fields, rest))));
    assert_eq!(seen, (Some("hello there".into()), b"hi".to_vec(), source()));
    // A value cut short inside its line is refused (a value is the trimmed rest of its line:
    // module docs of `huddle_sip::message::indexed`), and the plugin parses the bytes instead.
    let mut moved = fields.clone();
    assert_eq!(&MESSAGE[moved[4].line_start as usize..][..8], "Subject:");
    moved[4].value_end -= 6;
    let seen = deliver(&entry(), &info_1_9(Some((&moved, rest))));
    assert_eq!(seen.0.as_deref(), Some("hello there"));
    // The binary source wins over the text (the text of a 1.9 host says the same).
    let mut info = info_1_9(Some((&fields, rest)));
    info.source_ip_len = 0;
    assert_eq!(deliver(&entry(), &info).2, source());
    info.source_family = abi::HUDDLE_ADDR_NONE;
    assert_eq!(deliver(&entry(), &info).2, None);
}

#[test]
fn an_index_that_does_not_fit_is_parsed() {
    let _serial = SERIAL.lock().unwrap();
    let (fields, rest) = index();
    let cases: Vec<(Vec<HuddleField>, [u32; 4])> = vec![
        (fields[1..].to_vec(), rest),
        (fields.clone(), [rest[0], rest[1], rest[2], rest[3] + 5]),
        (fields.clone(), [u32::MAX; 4]),
        (
            {
                let mut f = fields.clone();
                f[2].line_end = u32::MAX;
                f
            },
            rest,
        ),
        (
            {
                let mut f = fields.clone();
                f[3].value_start = f[3].line_start;
                f
            },
            rest,
        ),
    ];
    for (i, (f, r)) in cases.iter().enumerate() {
        let seen = deliver(&entry(), &info_1_9(Some((f, *r))));
        assert_eq!(
            seen,
            (Some("hello there".into()), b"hi".to_vec(), source()),
            "case {i}"
        );
    }
    // More entries than any parse makes: not read at all.
    let mut info = info_1_9(Some((&fields, rest)));
    info.fields_len = 100_000;
    assert_eq!(deliver(&entry(), &info).0.as_deref(), Some("hello there"));
    // No index: parsed, as before 1.9.
    assert_eq!(deliver(&entry(), &info_1_9(None)).1, b"hi");
}

// --- a plugin built before 1.9 on this host --------------------------------------------------

/// The 1.0 layout, which is all a plugin built before 1.9 knows of the info.
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

static OLD_SAW: Mutex<Option<(usize, String, u32)>> = Mutex::new(None);

/// A 1.8 plugin's `handle_request`: reads the 1.0 part of the info only.
unsafe extern "C" fn old_handle_request(
    _: *mut c_void,
    _: u64,
    _: *const u8,
    _: usize,
    info: *const HuddleRequestInfo,
) -> i32 {
    // SAFETY: the host passes at least the 1.0 layout (ABI), borrowed for the call.
    let info = unsafe { &*info.cast::<Info10>() };
    // SAFETY: as above.
    let ip = unsafe { std::slice::from_raw_parts(info.source_ip, info.source_ip_len) };
    *OLD_SAW.lock().unwrap() = Some((
        info.struct_size,
        String::from_utf8_lossy(ip).into_owned(),
        info.source_port,
    ));
    abi::HUDDLE_OK
}

#[test]
fn a_1_8_plugin_reads_the_1_0_part_on_this_host() {
    let descriptor: &'static mut HuddlePluginDescriptor = Box::leak(Box::new(*entry().raw()));
    descriptor.abi_minor = 8;
    descriptor.handle_request = Some(old_handle_request);
    // SAFETY: leaked, so valid for the rest of the process, with the callbacks of a valid
    // descriptor (but one).
    let old = unsafe { PluginEntry::from_raw(descriptor) }.unwrap();
    let host = FakeHost::new();
    let mut plugin = host.start(&old, "").unwrap();
    let info = RequestInfo::new(Transport::Udp, source());
    for ip in [source(), Some("[2001:db8::7]:40000".parse().unwrap())] {
        let info = RequestInfo {
            source: ip,
            ..info.clone()
        };
        plugin.request_with(MESSAGE, &info).unwrap();
        let (size, text, port) = OLD_SAW.lock().unwrap().take().unwrap();
        assert!(size >= HUDDLE_REQUEST_INFO_MIN_SIZE);
        assert_eq!(text, ip.unwrap().ip().to_string());
        assert_eq!(port, 40000);
    }
}
