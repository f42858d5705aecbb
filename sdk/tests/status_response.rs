//! ABI 1.12: final responses given by status (`respond_status`), across versions. A plugin
//! built with this SDK answers by status on a 1.12 host (the host writes the response from the
//! request it holds), as bytes on a host before 1.12 (the entry past the table's size never
//! read) or one that answers "not supported", and as bytes when a To tag of its own is out
//! already; this host's entry writes what it is given and refuses, with an error code and
//! never a panic, what a hostile plugin could pass through the table.
#![allow(unsafe_code)]

mod common;

use std::ffi::c_void;
use std::sync::Mutex;

use huddle_sdk::abi::{self, HuddleHeader, HuddleHostApi, HuddleRequestInfo, HuddleStatusResponse};
use huddle_sdk::fake::FakeHost;
use huddle_sdk::hosting::PluginEntry;
use huddle_sdk::{
    Bytes, Capabilities, Claim, Claims, Config, HeaderName, Host, Message, Plugin, Request, Result,
    TransactionId,
};

const MESSAGE: &str = "MESSAGE sip:replier@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKr1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <sip:replier@example.test>\r\nCall-ID: r1@example.test\r\nCSeq: 9 MESSAGE\r\nSubject: SUBJECT\r\nContent-Length: 0\r\n\r\n";

/// `MESSAGE` asking the plugin to do `what` (its Subject).
fn message(what: &str) -> String {
    MESSAGE.replace("SUBJECT", what)
}

/// What the hand-made tables were handed: `("bytes", the response)` or `("status", "202
/// Accepted")`.
static SENT: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());
/// What each `Host::reply` in the plugin returned.
static RESULTS: Mutex<Vec<Result<()>>> = Mutex::new(Vec::new());
/// The last request the plugin kept (`keep`), with its host.
static KEPT: Mutex<Option<(Host, Request)>> = Mutex::new(None);
/// The table the plugin's `init` was handed (FakeHost's), valid until `destroy`.
static TABLE: Mutex<usize> = Mutex::new(0);
static REAL_INIT: Mutex<Option<usize>> = Mutex::new(None);
/// The tests share the statics: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    SENT.lock().unwrap().clear();
    RESULTS.lock().unwrap().clear();
    *KEPT.lock().unwrap() = None;
    guard
}

/// Answers by what the request's Subject says: `final` (202), `ringing-then-final` (180 then
/// 200: the 180 makes the To tag), `keep` (nothing: the test answers later).
struct Replier;

impl Plugin for Replier {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("replier"));
        Ok(Replier)
    }

    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        let mut results = Vec::new();
        match request.header("Subject").unwrap_or_default() {
            "final" => results.push(host.reply(&request, 202, "Accepted")),
            "busy" => results.push(host.reply(&request, 486, "Busy Here")),
            "bad-event" => results.push(host.reply(&request, 489, "Bad Event")),
            "allow" => results.push(host.reply_with(
                &request,
                405,
                "Method Not Allowed",
                &[("Allow", "MESSAGE")],
            )),
            "ringing-then-final" => {
                results.push(host.reply(&request, 180, "Ringing"));
                results.push(host.reply(&request, 200, "OK"));
            }
            _ => *KEPT.lock().unwrap() = Some((host.clone(), request)),
        }
        RESULTS.lock().unwrap().extend(results);
        Ok(())
    }
}

fn entry() -> PluginEntry {
    huddle_sdk::plugin_entry!(Replier, "replier", "1", Capabilities::NONE)
}

fn results() -> Vec<Result<()>> {
    std::mem::take(&mut *RESULTS.lock().unwrap())
}

fn sent() -> Vec<(&'static str, String)> {
    std::mem::take(&mut *SENT.lock().unwrap())
}

unsafe extern "C" fn bytes_sent(_: *mut c_void, _: u64, msg: *const u8, len: usize) -> i32 {
    // SAFETY: the plugin lends the bytes for the call.
    let bytes = unsafe { std::slice::from_raw_parts(msg, len) };
    SENT.lock()
        .unwrap()
        .push(("bytes", String::from_utf8_lossy(bytes).into_owned()));
    abi::HUDDLE_OK
}

unsafe extern "C" fn status_sent(
    _: *mut c_void,
    _: u64,
    response: *const HuddleStatusResponse,
) -> i32 {
    // SAFETY: the plugin lends the response and what it points to for the call.
    let r = unsafe { &*response };
    assert_eq!(r.struct_size, size_of::<HuddleStatusResponse>());
    // SAFETY: as above.
    let reason = unsafe { std::slice::from_raw_parts(r.reason, r.reason_len) };
    SENT.lock().unwrap().push((
        "status",
        format!("{} {}", r.status, String::from_utf8_lossy(reason)),
    ));
    abi::HUDDLE_OK
}

unsafe extern "C" fn status_not_supported(
    _: *mut c_void,
    _: u64,
    _: *const HuddleStatusResponse,
) -> i32 {
    SENT.lock()
        .unwrap()
        .push(("status", "not supported".into()));
    abi::HUDDLE_ERR_NOT_SUPPORTED
}

/// Delivers `request` to a plugin started by hand on `table` (as `txn` 5, no source).
fn deliver(table: &HuddleHostApi, request: &str) {
    let entry = entry();
    let instance = common::init(&entry, table);
    let info = HuddleRequestInfo {
        struct_size: abi::HUDDLE_REQUEST_INFO_MIN_SIZE,
        transport: abi::HUDDLE_TRANSPORT_UDP,
        source_port: 0,
        source_ip: std::ptr::null(),
        source_ip_len: 0,
        auth_user: std::ptr::null(),
        auth_user_len: 0,
        related_txn: 0,
        source_family: abi::HUDDLE_ADDR_NONE,
        source_addr: [0; 16],
        fields: std::ptr::null(),
        fields_len: 0,
        start_line_end: 0,
        headers_end: 0,
        body_start: 0,
        body_end: 0,
    };
    // SAFETY: the request and the info (1.0 layout by its size) are valid for the call.
    let status = unsafe {
        (entry.raw().handle_request.unwrap())(instance, 5, request.as_ptr(), request.len(), &info)
    };
    common::destroy(&entry, instance);
    assert_eq!(status, abi::HUDDLE_OK);
}

fn table(minor: u32, struct_size: usize) -> HuddleHostApi {
    let mut table = common::bare_table(minor, struct_size);
    table.respond = Some(bytes_sent);
    table.respond_status = Some(status_sent);
    table
}

#[test]
fn a_final_reply_goes_by_status_on_a_1_12_host_and_as_bytes_before() {
    let _serial = serial();
    deliver(&table(12, size_of::<HuddleHostApi>()), &message("final"));
    assert_eq!(sent(), [("status", "202 Accepted".to_owned())]);
    assert!(matches!(results()[..], [Ok(())]));

    // A 1.11 table ends before `respond_status`: the entry there (set, but past the size) is
    // never read, and the bytes go as before.
    let before = std::mem::offset_of!(HuddleHostApi, respond_status);
    deliver(&table(11, before), &message("final"));
    let sent = sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "bytes");
    let response = Message::parse(Bytes::from(sent[0].1.clone())).unwrap();
    assert_eq!(response.status(), Some(202));
    assert_eq!(response.call_id(), Some("r1@example.test"));
    assert!(matches!(results()[..], [Ok(())]));
}

#[test]
fn a_host_that_cannot_write_responses_gets_the_bytes() {
    let _serial = serial();
    let mut table = table(12, size_of::<HuddleHostApi>());
    table.respond_status = Some(status_not_supported);
    deliver(&table, &message("final"));
    let sent = sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], ("status", "not supported".to_owned()));
    assert_eq!(sent[1].0, "bytes");
    assert!(sent[1].1.starts_with("SIP/2.0 202 Accepted\r\n"));
    assert!(matches!(results()[..], [Ok(())]));
}

#[test]
fn a_provisional_response_and_what_follows_it_keep_the_plugins_tag_in_bytes() {
    let _serial = serial();
    deliver(
        &table(12, size_of::<HuddleHostApi>()),
        &message("ringing-then-final"),
    );
    let sent = sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(how, _)| *how == "bytes"), "{sent:?}");
    let tags: Vec<String> = sent
        .iter()
        .map(|(_, bytes)| {
            let m = Message::parse(Bytes::from(bytes.clone())).unwrap();
            m.to_tag().expect("a To tag").to_owned()
        })
        .collect();
    assert_eq!(tags[0], tags[1], "the 200 carries the 180's tag");
    assert!(matches!(results()[..], [Ok(()), Ok(())]));
}

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

/// `entry()` with its `init` wrapped to keep the table it is handed.
fn capturing() -> PluginEntry {
    let descriptor = Box::leak(Box::new(*entry().raw()));
    *REAL_INIT.lock().unwrap() = descriptor.init.map(|f| f as usize);
    descriptor.init = Some(capturing_init);
    // SAFETY: leaked, so valid for the rest of the process; only `init` is wrapped.
    unsafe { PluginEntry::from_raw(descriptor) }.unwrap()
}

fn header(name: &str, value: &str) -> HuddleHeader {
    HuddleHeader {
        name: name.as_ptr(),
        name_len: name.len(),
        value: value.as_ptr(),
        value_len: value.len(),
    }
}

fn status_response(status: u32, reason: &[u8], headers: &[HuddleHeader]) -> HuddleStatusResponse {
    HuddleStatusResponse {
        struct_size: size_of::<HuddleStatusResponse>(),
        status,
        reason: reason.as_ptr(),
        reason_len: reason.len(),
        headers: headers.as_ptr(),
        headers_len: headers.len(),
    }
}

#[test]
fn this_host_writes_the_response_from_the_request_and_refuses_what_cannot_be_written() {
    let _serial = serial();
    let host = FakeHost::new();
    let mut plugin = host.start(&capturing(), "").unwrap();
    let txn = plugin.request(message("keep")).unwrap();
    assert!(
        KEPT.lock().unwrap().is_some(),
        "the plugin kept the request"
    );
    // SAFETY: the table of a live instance (the plugin is stopped at the end).
    let table = unsafe { &*(*TABLE.lock().unwrap() as *const HuddleHostApi) };
    assert_eq!(table.abi_minor, abi::HUDDLE_PLUGIN_ABI_MINOR);
    let respond_status = table.respond_status.expect("never null in a 1.12 table");
    let call = |txn: u64, response: *const HuddleStatusResponse| {
        // SAFETY: the table's own context; `response` is null, or valid for the call with
        // what it points to (the hostile cases below lie only in what the fields say).
        unsafe { respond_status(table.ctx, txn, response) }
    };
    let bad = abi::HUDDLE_ERR_INVALID_ARGUMENT;
    let none: [HuddleHeader; 0] = [];

    assert_eq!(call(txn.0, std::ptr::null()), bad, "null response");
    let mut short = status_response(202, b"Accepted", &none);
    short.struct_size = std::mem::offset_of!(HuddleStatusResponse, headers_len);
    assert_eq!(call(txn.0, &short), bad, "struct smaller than 1.12");
    for status in [0, 100, 180, 199, 700, 1202, u32::MAX] {
        let r = status_response(status, b"Whatever", &none);
        assert_eq!(call(txn.0, &r), bad, "status {status}");
    }
    for reason in [
        &b"OK\r\nX-Injected: 1"[..],
        b"OK\n",
        b"OK\0",
        b"\xff\xfe",
        b"O\x07K",
        b"OK\x7f",
    ] {
        let r = status_response(200, reason, &none);
        assert_eq!(call(txn.0, &r), bad, "reason {reason:?}");
    }
    let mut dangling = status_response(200, b"OK", &none);
    dangling.headers = std::ptr::null();
    dangling.headers_len = 2;
    assert_eq!(call(txn.0, &dangling), bad, "null fields with a length");
    let fields = [header("Expires", "60"), header("Expires", "60")];
    let mut misaligned = status_response(200, b"OK", &fields);
    misaligned.headers = fields.as_ptr().cast::<u8>().wrapping_add(1).cast();
    misaligned.headers_len = 1;
    assert_eq!(call(txn.0, &misaligned), bad, "misaligned fields");
    let many = vec![header("X-Many", "1"); abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS + 1];
    let r = status_response(200, b"OK", &many);
    assert_eq!(
        call(txn.0, &r),
        abi::HUDDLE_ERR_TOO_LARGE,
        "too many fields"
    );
    for name in [
        "Via",
        "v",
        "FROM",
        "f",
        "To",
        "t",
        "Call-ID",
        "i",
        "CSeq",
        "Content-Length",
        "l",
        "Content-Type",
        "c",
        "server",
        "Bad Name",
        "",
        "X:Y",
    ] {
        let fields = [header(name, "1")];
        let r = status_response(200, b"OK", &fields);
        assert_eq!(call(txn.0, &r), bad, "field name {name:?}");
    }
    for value in ["a\r\nb", "a\nb", "a\0b", "a\x1bb"] {
        let fields = [header("Expires", value)];
        let r = status_response(200, b"OK", &fields);
        assert_eq!(call(txn.0, &r), bad, "field value {value:?}");
    }
    let fields = [HuddleHeader {
        name: b"Expires".as_ptr(),
        name_len: 7,
        value: b"\xff".as_ptr(),
        value_len: 1,
    }];
    let r = status_response(200, b"OK", &fields);
    assert_eq!(call(txn.0, &r), bad, "a value that is not UTF-8");
    let ok = status_response(200, b"OK", &none);
    assert_eq!(
        call(txn.0 + 1000, &ok),
        abi::HUDDLE_ERR_UNKNOWN_TRANSACTION,
        "no such transaction"
    );
    // SAFETY: a null context is answered, never dereferenced.
    let status = unsafe { respond_status(std::ptr::null_mut(), txn.0, &ok) };
    assert_eq!(status, bad, "null ctx");
    assert!(
        host.responses_to(txn).is_empty(),
        "nothing refused was sent"
    );

    // What can be written is, from the request the host holds: the transaction is then gone.
    let fields = [header("Expires", "60"), header("X-Note", "stored\ttwice ")];
    let r = status_response(202, b"Accepted - Stored", &fields);
    assert_eq!(call(txn.0, &r), abi::HUDDLE_OK);
    assert_eq!(call(txn.0, &r), abi::HUDDLE_ERR_UNKNOWN_TRANSACTION);
    let responses = host.responses_to(txn);
    assert_eq!(responses.len(), 1);
    let m = &responses[0].message;
    assert_eq!(m.status(), Some(202));
    assert!(m.raw().starts_with(b"SIP/2.0 202 Accepted - Stored\r\n"));
    assert_eq!(m.call_id(), Some("r1@example.test"));
    assert_eq!(m.cseq().unwrap().seq, 9);
    assert!(m.to_tag().is_some(), "the host's To tag");
    assert_eq!(m.header(&HeaderName::parse("Expires")), Some("60"));
    assert_eq!(
        m.header(&HeaderName::parse("X-Note")),
        Some("stored\ttwice")
    );
    assert!(m.body().is_empty());
    let _ = plugin.stop();
}

#[test]
fn the_sdk_checks_what_it_hands_over_and_the_fake_host_answers_by_status() {
    let _serial = serial();
    let host = FakeHost::new();
    let mut plugin = host.start(&entry(), "").unwrap();
    let txn = plugin.request(message("keep")).unwrap();
    let (kept_host, request) = KEPT.lock().unwrap().take().unwrap();
    assert_eq!(request.transaction(), Some(txn));
    let many = vec![("X-Many", "1"); abi::HUDDLE_STATUS_RESPONSE_MAX_FIELDS + 1];
    assert!(matches!(
        kept_host.respond_status(txn, 200, "OK", &many),
        Err(huddle_sdk::Error::TooLarge)
    ));
    assert!(matches!(
        kept_host.respond_status(txn, 200, "OK", &[("Via", "x")]),
        Err(huddle_sdk::Error::InvalidArgument)
    ));
    assert!(matches!(
        kept_host.respond_status(TransactionId(txn.0 + 7), 200, "OK", &[]),
        Err(huddle_sdk::Error::UnknownTransaction)
    ));
    kept_host.reply(&request, 202, "Accepted").unwrap();
    let responses = host.responses_to(txn);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status(), 202);
    assert!(!responses[0].synthetic);
    // Answered finally: the same reply again is refused, as by `respond`.
    assert!(matches!(
        kept_host.reply(&request, 202, "Accepted"),
        Err(huddle_sdk::Error::UnknownTransaction)
    ));
    let _ = plugin.stop();
}

#[test]
fn a_2xx_that_may_start_a_dialog_keeps_the_plugins_tag_and_the_rest_go_by_status() {
    let _serial = serial();
    let table = table(12, size_of::<HuddleHostApi>());
    let method = |m: &str, to_tag: bool| {
        let mut r = message("final").replace("MESSAGE", m);
        if to_tag {
            r = r.replace(
                "To: <sip:replier@example.test>",
                "To: <sip:replier@example.test>;tag=p1",
            );
        }
        r
    };
    // Out of dialog, a 2xx to these starts one: the tag is the plugin's, in the bytes.
    for m in ["INVITE", "SUBSCRIBE", "REFER"] {
        deliver(&table, &method(m, false));
        let sent = sent();
        assert_eq!(sent.len(), 1, "{m}: {sent:?}");
        assert_eq!(sent[0].0, "bytes", "{m}");
        assert!(matches!(results()[..], [Ok(())]));
    }
    // A failure starts no dialog: by status, whatever the method (the conference's, echo's and
    // screenshare's refusals of an INVITE, a 487 after CANCEL).
    for (m, subject, want) in [
        ("INVITE", "busy", "486 Busy Here"),
        ("SUBSCRIBE", "bad-event", "489 Bad Event"),
        ("REFER", "busy", "486 Busy Here"),
    ] {
        deliver(&table, &message(subject).replace("MESSAGE", m));
        assert_eq!(sent(), [("status", want.to_owned())], "{m}");
        assert!(matches!(results()[..], [Ok(())]));
    }
    // In a dialog (a To tag already), or any other method: by status.
    for (m, to_tag) in [
        ("INVITE", true),
        ("SUBSCRIBE", true),
        ("NOTIFY", false),
        ("OPTIONS", false),
        ("INFO", true),
    ] {
        deliver(&table, &method(m, to_tag));
        assert_eq!(sent(), [("status", "202 Accepted".to_owned())], "{m}");
        assert!(matches!(results()[..], [Ok(())]));
    }
}

#[test]
fn extra_fields_go_by_status_or_in_the_bytes() {
    let _serial = serial();
    // As bytes on a 1.11 host: the field is written here.
    let before = std::mem::offset_of!(HuddleHostApi, respond_status);
    deliver(&table(11, before), &message("allow"));
    let sent = sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "bytes");
    let m = Message::parse(Bytes::from(sent[0].1.clone())).unwrap();
    assert_eq!(m.status(), Some(405));
    assert_eq!(m.header(&HeaderName::parse("Allow")), Some("MESSAGE"));
    assert!(matches!(results()[..], [Ok(())]));
    // By status on this host: the host writes it.
    let host = FakeHost::new();
    let mut plugin = host.start(&entry(), "").unwrap();
    let txn = plugin.request(message("allow")).unwrap();
    let response = host.final_response(txn).unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.message.header(&HeaderName::parse("Allow")),
        Some("MESSAGE")
    );
    assert!(matches!(results()[..], [Ok(())]));
    let _ = plugin.stop();
}
