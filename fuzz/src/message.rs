//! `parse_message`: [`Message::parse`] on arbitrary bytes, then every lazy accessor, validation,
//! and the builders that turn a received message into bytes again (a response to it, the
//! forwarded copy, CANCEL/ACK). What the builders write must parse, and must say what the
//! original said.

use bytes::Bytes;
use huddle_sip::build::{self, Forward, ResponseBuilder, Source};
use huddle_sip::headers::{NameAddr, Via};
use huddle_sip::message::StartLine;
use huddle_sip::uri::SipUri;
use huddle_sip::validate::{self, Capabilities};
use huddle_sip::{syntax, HeaderName, Message, Method};

/// Names whose values are read through [`Message::header`] and friends.
const NAMES: [HeaderName; 12] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::Contact,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
    HeaderName::ProxyRequire,
    HeaderName::Authorization,
];

const SOURCE: Source<'static> = Source {
    ip: "192.0.2.1",
    port: 5062,
};

/// Fuzz body of the `parse_message` target.
pub fn check_parse_message(data: &[u8]) {
    let parsed = Message::parse(Bytes::copy_from_slice(data));
    if let Ok(text) = std::str::from_utf8(data) {
        check_parse_text(text, &parsed);
    }
    let Ok(msg) = parsed else {
        return;
    };
    check_structure(&msg);
    exercise_accessors(&msg);
    let validated = if msg.is_request() {
        validate::validate_request(&msg, &Capabilities::default()).is_ok()
    } else {
        validate::validate_response(&msg).is_ok()
    };
    if validated {
        check_validated(&msg);
    }
    check_response(&msg, validated);
    // A proxy forwards only what passed validation.
    if validated {
        check_forward(&msg);
    }
}

/// [`Message::parse_text`] (a WebSocket transport's text handed over) reads UTF-8 bytes as
/// [`Message::parse`] does, whether the bytes are a copy or the text's own allocation.
fn check_parse_text(text: &str, parsed: &Result<Message, huddle_sip::message::ParseError>) {
    struct Shared(std::sync::Arc<str>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    let shared: std::sync::Arc<str> = std::sync::Arc::from(text);
    let copied = Message::parse_text(Bytes::copy_from_slice(text.as_bytes()), shared.clone());
    let own = Message::parse_text(Bytes::from_owner(Shared(shared.clone())), shared);
    for by_text in [copied, own] {
        match (parsed, by_text) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.start_line(), b.start_line());
                assert_eq!(a.headers(), b.headers());
                assert_eq!(a.headers_end(), b.headers_end());
                assert_eq!(a.defect(), b.defect());
                assert_eq!(a.body(), b.body());
                for h in a.headers() {
                    assert_eq!(a.text(h.value), b.text(h.value));
                    assert_eq!(a.text(h.line), b.text(h.line));
                }
                assert_eq!(a.text(a.body_span()), b.text(b.body_span()));
                check_structure(&b);
                exercise_accessors(&b);
            }
            (Err(a), Err(b)) => assert_eq!(*a, b),
            (a, b) => panic!("parse {:?}, parse_text {:?}", a.is_ok(), b.is_ok()),
        }
    }
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Offset of `part` inside `whole`; `part` must be a subslice (both come from one `Bytes`).
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let off = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        off <= whole.len() && part.len() <= whole.len() - off,
        "slice outside the message"
    );
    off
}

/// The offsets a parsed message reports are consistent with each other and with its bytes.
fn check_structure(msg: &Message) {
    let raw = msg.raw();
    let sle = msg.start_line_end();
    let he = msg.headers_end();
    assert!(sle <= he && he < raw.len(), "start {sle} headers_end {he}");
    assert_eq!(raw[sle - 1], b'\n', "start line ends with LF");
    match msg.start_line() {
        StartLine::Request {
            method,
            uri,
            version,
        } => {
            assert!(uri.end <= version.end && (version.end as usize) < sle);
            assert_eq!(msg.request_uri(), Some(msg.text(*uri)));
            assert!(syntax::is_token(method.as_str()), "method {method:?}");
            assert_eq!(&Method::parse(method.as_str()), method);
            assert!(msg.status().is_none() && msg.reason().is_none());
            if msg.defect().is_none() {
                let uri = msg.text(*uri);
                // Only SP and HTAB are a parse defect; other control bytes (a lone CR) are left
                // to validation, where SipUri::parse refuses them.
                assert!(!uri.is_empty() && !uri.contains([' ', '\t']), "uri {uri:?}");
            }
        }
        StartLine::Response { code, reason } => {
            assert!((100..=699).contains(code), "status {code}");
            assert!((reason.end as usize) < sle);
            assert!(msg.method().is_none() && msg.request_uri().is_none());
        }
    }
    let mut prev_end = sle;
    for h in msg.headers() {
        let (line, value) = (h.line.range(), h.value.range());
        assert!(
            prev_end <= line.start && line.end <= he,
            "header line out of order"
        );
        assert!(line.start <= value.start && value.start <= value.end && value.end <= line.end);
        assert_eq!(raw[line.end - 1], b'\n', "header line ends with LF");
        let text = std::str::from_utf8(&raw[line.clone()]).expect("header lines are UTF-8");
        let colon = text.find(':').expect("header line has a colon");
        assert!(
            colon < value.start - line.start,
            "value starts after the colon"
        );
        let name = text[..colon].trim_end_matches([' ', '\t']);
        assert!(h.name.matches(&HeaderName::parse(name)), "{name:?}");
        let v = msg.text(h.value);
        assert!(
            !v.starts_with(|c: char| c.is_ascii() && is_lws(c as u8))
                && !v.ends_with(|c: char| c.is_ascii() && is_lws(c as u8)),
            "value not trimmed: {v:?}"
        );
        prev_end = line.end;
    }
    // The blank line sits at headers_end and the body follows it directly.
    let body = msg.body();
    let body_start = offset_in(raw, body);
    assert!(
        &raw[he..body_start] == b"\r\n" || &raw[he..body_start] == b"\n",
        "blank line {:?}",
        &raw[he..body_start]
    );
    assert_eq!(&msg.body_bytes()[..], body);
    match msg.header(&HeaderName::ContentLength) {
        None => assert_eq!(
            body_start + body.len(),
            raw.len(),
            "no CL: body runs to the end"
        ),
        Some(cl) if msg.defect().is_none() => {
            assert_eq!(
                Some(body.len()),
                cl.parse().ok(),
                "body length is Content-Length"
            );
        }
        Some(_) => {}
    }
}

/// Calls every typed view; they may fail, but not panic, and must agree with each other.
fn exercise_accessors(msg: &Message) {
    for h in msg.headers() {
        let _ = (h.name.as_str(), msg.text(h.value), msg.text(h.line));
    }
    for name in &NAMES {
        let first = msg.header(name);
        let all: Vec<&str> = msg.header_values(name).collect();
        assert_eq!(all.len(), msg.header_count(name));
        assert_eq!(first, all.first().copied());
        for item in msg.header_list(name) {
            let _ = syntax::params(item).count();
            let _ = syntax::unquote(item);
        }
    }
    let _ = (
        msg.call_id(),
        msg.max_forwards(),
        msg.expires(),
        msg.content_type(),
    );
    let _ = msg.defect().map(|d| d.reason());
    if let Ok(cseq) = msg.cseq() {
        assert!(cseq.seq < 1 << 31);
        assert_eq!(Method::parse(cseq.method_text), cseq.method);
    }
    for addr in [msg.from_header(), msg.to_header()].into_iter().flatten() {
        exercise_name_addr(&addr);
    }
    match msg.top_via() {
        Ok(via) => {
            assert_eq!(msg.branch(), via.branch());
            let _ = (via.rport(), via.received(), via.param("maddr"));
        }
        Err(_) => assert_eq!(msg.branch(), None),
    }
    for via in msg.header_list(&HeaderName::Via) {
        if Via::parse(via).is_ok() {
            check_stamp_via(via);
        }
    }
    for name in [
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
    ] {
        for item in msg.header_list(&name) {
            if let Ok(addr) = NameAddr::parse(item) {
                exercise_name_addr(&addr);
            }
        }
    }
    if let Some(uri) = msg.request_uri() {
        exercise_uri(uri);
    }
}

fn exercise_name_addr(addr: &NameAddr<'_>) {
    assert!(!addr.uri.is_empty());
    let _ = (
        addr.display,
        addr.tag(),
        addr.param("expires"),
        addr.bracketed,
    );
    exercise_uri(addr.uri);
}

fn exercise_uri(uri: &str) {
    if let Ok(u) = SipUri::parse(uri) {
        assert!(!u.host.is_empty());
        assert_ne!(u.port, Some(0));
        let _ = (u.transport(), u.is_loose_route(), u.param("lr"), u.headers);
        let _ = (u.user_unescaped(), u.aor());
    }
}

/// `stamp_via` rewrites a Via that parsed into one that still parses and says where the
/// request came from.
fn check_stamp_via(top: &str) {
    let before = Via::parse(top).expect("caller checked");
    let Some(stamped) = build::stamp_via(top, SOURCE) else {
        assert!(before.rport().is_none(), "rport asked for but not stamped");
        return;
    };
    let after = Via::parse(&stamped)
        .unwrap_or_else(|e| panic!("stamped Via {stamped:?} (from {top:?}) does not parse: {e}"));
    assert_eq!(
        after.received(),
        Some(SOURCE.ip),
        "received unreadable in {stamped:?}"
    );
    assert_eq!(
        (after.transport, after.host, after.port),
        (before.transport, before.host, before.port)
    );
    assert_eq!(
        after.branch(),
        before.branch(),
        "branch changed in {stamped:?}"
    );
    if before.rport().is_some() {
        assert_eq!(
            after.rport(),
            Some(Some("5062")),
            "rport unreadable in {stamped:?}"
        );
    }
}

/// What may be relied on once validation passed.
fn check_validated(msg: &Message) {
    let cseq = msg.cseq().expect("validated: CSeq");
    msg.from_header().expect("validated: From");
    msg.to_header().expect("validated: To");
    msg.top_via().expect("validated: Via");
    assert!(msg.call_id().is_some_and(|c| !c.is_empty()));
    let Some(method) = msg.method() else { return };
    assert_eq!(&cseq.method, method);
    assert!(matches!(msg.max_forwards(), None | Some(Ok(_))));
    let uri = SipUri::parse(msg.request_uri().unwrap_or("")).expect("validated: Request-URI");
    assert!(uri.headers.is_none());
    for c in msg.header_list(&HeaderName::Contact).filter(|c| *c != "*") {
        NameAddr::parse(c).expect("validated: Contact");
    }
    for r in msg.header_list(&HeaderName::Route) {
        NameAddr::parse(r).expect("validated: Route");
    }
}

/// Bytes for a panic message, cut short: the fuzzer's artifact file has the whole input.
fn show(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    if bytes.len() > MAX {
        format!("{text:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

fn reparse(what: &str, msg: &Message, out: &Bytes) -> Message {
    match Message::parse(out.clone()) {
        Ok(m) => m,
        Err(e) => panic!(
            "{what} does not parse ({e}): {}\n--- built from ---\n{}",
            show(out),
            show(msg.raw())
        ),
    }
}

fn values<'a>(msg: &'a Message, name: &'a HeaderName) -> Vec<&'a str> {
    msg.header_values(name).collect()
}

/// A response to any message that parsed must parse, and copies the dialog headers.
fn check_response(msg: &Message, validated: bool) {
    let out = ResponseBuilder::new(msg, 400, "x").to_tag("t").build();
    let resp = reparse("response", msg, &out);
    assert_eq!((resp.status(), resp.reason()), (Some(400), Some("x")));
    assert_eq!(resp.defect(), None, "{:?}", show(&out));
    assert!(resp.body().is_empty());
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        assert_eq!(values(&resp, &name), values(msg, &name), "{name}");
    }
    assert_eq!(
        resp.header_count(&HeaderName::To),
        msg.header_count(&HeaderName::To)
    );
    if validated && msg.is_request() {
        validate::validate_response(&resp).unwrap_or_else(|e| {
            panic!(
                "response to a valid request is invalid ({e}): {:?}",
                show(&out)
            )
        });
        let req_tag = msg.to_header().expect("validated").tag();
        let resp_tag = resp.to_header().expect("validated").tag();
        assert!(
            resp_tag == Some(req_tag.unwrap_or("t")),
            "To tag of the response is {resp_tag:?}; request To {:?}, response To {:?}",
            msg.header(&HeaderName::To),
            resp.header(&HeaderName::To)
        );
        if msg.method() == Some(&Method::Invite) {
            check_cancel_ack(msg, &resp);
        }
    }

    // The same with the source stamped into the top Via.
    let out = ResponseBuilder::new(msg, 180, "Ringing")
        .to_tag("t")
        .source(SOURCE)
        .header("Server", "huddle-fuzz")
        .body("text/plain", b"hi")
        .build();
    let resp = reparse("stamped response", msg, &out);
    assert_eq!(resp.body(), b"hi");
    assert_eq!(
        resp.header_list(&HeaderName::Via).count(),
        msg.header_list(&HeaderName::Via).count()
    );
    // The top Via is exactly what stamp_via makes of it; the others are copied.
    let mut before = msg.header_list(&HeaderName::Via);
    let mut after = resp.header_list(&HeaderName::Via);
    if let (Some(top), Some(stamped_top)) = (before.next(), after.next()) {
        let want = build::stamp_via(top, SOURCE);
        assert_eq!(
            stamped_top,
            want.as_deref().unwrap_or(top),
            "stamped top Via"
        );
    }
    assert!(before.eq(after), "Via below the top changed");
    if validated {
        resp.top_via()
            .unwrap_or_else(|e| panic!("stamped top Via does not parse ({e}): {}", show(&out)));
    }
}

/// CANCEL and the ACK for a failure response, built from a valid INVITE, are valid requests.
fn check_cancel_ack(invite: &Message, failure: &Message) {
    let cancel = build::cancel_for(invite).expect("valid INVITE has what CANCEL needs");
    let cancel_msg = reparse("CANCEL", invite, &cancel);
    validate::validate_request(&cancel_msg, &Capabilities::default())
        .unwrap_or_else(|e| panic!("CANCEL invalid ({e:?}): {:?}", show(&cancel)));
    assert_eq!(cancel_msg.branch(), invite.branch());
    let ack = build::ack_for_failure(invite, failure).expect("valid INVITE has what ACK needs");
    let ack_msg = reparse("ACK", invite, &ack);
    validate::validate_request(&ack_msg, &Capabilities::default())
        .unwrap_or_else(|e| panic!("ACK invalid ({e:?}): {:?}", show(&ack)));
    assert_eq!(
        ack_msg.to_header().ok().and_then(|t| t.tag()),
        failure.to_header().ok().and_then(|t| t.tag())
    );
}

/// A message that validated still parses after a proxy's edits, with the same body, and only the
/// edited headers changed.
fn check_forward(msg: &Message) {
    let out = Forward::new(msg)
        .drop_top_via()
        .drop_routes(2)
        .max_forwards(69)
        .build();
    let fwd = reparse("forwarded message", msg, &out);
    assert_eq!(fwd.body(), msg.body(), "body changed by forwarding");
    assert_eq!(
        &out[..fwd.start_line_end()],
        &msg.raw()[..msg.start_line_end()]
    );
    assert_eq!(fwd.max_forwards(), Some(Ok(69)));
    if msg.defect().is_none() {
        assert_eq!(fwd.defect(), None, "forwarding introduced a defect");
    }
    let via: Vec<&str> = msg.header_list(&HeaderName::Via).skip(1).collect();
    assert_eq!(
        fwd.header_list(&HeaderName::Via).collect::<Vec<_>>(),
        via,
        "Via list"
    );
    let route: Vec<&str> = msg.header_list(&HeaderName::Route).skip(2).collect();
    assert_eq!(
        fwd.header_list(&HeaderName::Route).collect::<Vec<_>>(),
        route,
        "Route list"
    );
    let untouched = |m: &Message| -> Vec<(String, String)> {
        m.headers()
            .iter()
            .filter(|h| {
                !matches!(
                    h.name,
                    HeaderName::Via | HeaderName::Route | HeaderName::MaxForwards
                )
            })
            .map(|h| {
                (
                    h.name.as_str().to_ascii_lowercase(),
                    m.text(h.value).to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        untouched(&fwd),
        untouched(msg),
        "headers forwarding must not touch"
    );
}
