//! SIP messages as plugins see them: a [`Request`] to answer, a [`Response`] to a request the
//! plugin sent, and [`NewRequest`] to build one. Parsing and writing are `huddle-sip`'s (the
//! same code the server runs); this module fills in what a plugin should not hand-write: To
//! tags, Via `received`/`rport`, Call-IDs, CSeq, Max-Forwards, Content-Length.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use huddle_sip::build::{RequestBuilder, ResponseBuilder, Source};
use huddle_sip::headers::NameAddr;
use huddle_sip::message::RequestParts;
use huddle_sip::{HeaderName, Message, Method};

use crate::error::Error;
use crate::types::{RequestId, RequestInfo, TransactionId};

/// A request the host routed to the plugin.
#[derive(Debug)]
pub struct Request {
    txn: Option<TransactionId>,
    message: Message,
    info: RequestInfo,
    /// The source address as text and the To tag, made on first use: a request the plugin
    /// never answers itself (a message the host answers on the delivery's 2xx) needs neither,
    /// and the tag costs a system call (`getrandom`). The tag is shared with clones, so every
    /// copy of the request answers with the same one: the cell holding it is shared, made on
    /// the first clone or the first tag (most requests are never cloned, and the cell was an
    /// allocation per request).
    source_ip: OnceLock<String>,
    local_tag: OnceLock<Arc<OnceLock<String>>>,
}

impl Clone for Request {
    fn clone(&self) -> Self {
        Request {
            txn: self.txn,
            message: self.message.clone(),
            info: self.info.clone(),
            source_ip: self.source_ip.clone(),
            local_tag: OnceLock::from(Arc::clone(self.tag_cell())),
        }
    }
}

impl Request {
    /// Parses a request as the host delivers it. `txn` is `None` for requests that expect no
    /// response (ACK, and a CANCEL the host already answered).
    pub fn parse(
        txn: Option<TransactionId>,
        bytes: Bytes,
        info: RequestInfo,
    ) -> Result<Request, Error> {
        let message = Message::parse(bytes).map_err(|_| Error::InvalidArgument)?;
        Request::from_message(txn, message, info)
    }

    /// A request from a message parsed already (by the host's index of it, ABI 1.9).
    pub fn from_message(
        txn: Option<TransactionId>,
        message: Message,
        info: RequestInfo,
    ) -> Result<Request, Error> {
        if !message.is_request() {
            return Err(Error::InvalidArgument);
        }
        Ok(Request {
            txn,
            source_ip: OnceLock::new(),
            message,
            info,
            local_tag: OnceLock::new(),
        })
    }

    /// The cell of the To tag, shared with every clone (made on first use).
    fn tag_cell(&self) -> &Arc<OnceLock<String>> {
        self.local_tag.get_or_init(|| Arc::new(OnceLock::new()))
    }

    /// The server transaction to answer, `None` when nothing is to be answered.
    pub fn transaction(&self) -> Option<TransactionId> {
        self.txn
    }

    /// The parsed message (every header, the raw bytes).
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// What the host knows about where the request came from.
    pub fn info(&self) -> &RequestInfo {
        &self.info
    }

    /// The method.
    pub fn method(&self) -> &Method {
        // A `Request` is only built from a message that `is_request()`.
        self.message.method().unwrap_or(&Method::Ack)
    }

    /// The Request-URI as written.
    pub fn uri(&self) -> &str {
        self.message.request_uri().unwrap_or("")
    }

    /// The Request-URI's user part, if any (up to a `;`).
    pub fn uri_user(&self) -> Option<&str> {
        crate::claims::RouteKey::of(&self.message).and_then(|k| k.user)
    }

    /// The value of the first header with this name (`"Subject"`, `"Event"`; any case,
    /// compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message.header(&HeaderName::parse(name))
    }

    /// The From header's URI.
    pub fn from_uri(&self) -> Option<&str> {
        self.message.from_header().ok().map(|a| a.uri)
    }

    /// The To header's URI.
    pub fn to_uri(&self) -> Option<&str> {
        self.message.to_header().ok().map(|a| a.uri)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.message.body()
    }

    /// The Content-Type without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.message.content_type()
    }

    /// The Content-Type as written, parameters included (`text/plain;charset=UTF-8`).
    pub fn content_type_full(&self) -> Option<&str> {
        self.message.header(&HeaderName::ContentType)
    }

    /// Starts a response: status line, Via (stamped with `received`/`rport` from the source),
    /// From, To (with this request's local tag), Call-ID and CSeq. Add headers and a body, then
    /// `build()` and pass the bytes to [`crate::Host::respond`].
    pub fn response<'a>(&'a self, status: u16, reason: &'a str) -> ResponseBuilder<'a> {
        let mut b = ResponseBuilder::new(&self.message, status, reason).to_tag(self.local_tag());
        if let Some(src) = self.info.source {
            b = b.source(Source {
                ip: self.source_ip.get_or_init(|| self.info.source_ip_text()),
                port: src.port(),
            });
        }
        b
    }

    /// A complete response without a body.
    pub fn reply(&self, status: u16, reason: &str) -> Bytes {
        self.response(status, reason).build()
    }

    /// The To tag this plugin uses in responses it writes to this request (made on the first
    /// call, shared with clones). A final response sent by status ([`crate::Host::reply`] when
    /// no response carried this tag yet, or [`crate::Host::respond_status`]) carries the host's
    /// tag instead, which the plugin never learns: call this *before* replying when the tag is
    /// needed later (a [`crate::dialog::UasDialog`], a log), and `Host::reply` then writes the bytes
    /// with it. Reply to one request from one thread at a time: a reply by status on one
    /// thread racing a response written with this tag on another would carry two tags.
    pub fn local_tag(&self) -> &str {
        self.tag_cell().get_or_init(|| random_token(8))
    }

    /// Whether a final response with `status` may carry a To tag the host chooses (ABI 1.12,
    /// [`crate::Host::respond_status`]): not when [`Request::local_tag`] was made already (a
    /// response written here carried it, so later ones must too), nor for a 2xx that may
    /// start a dialog (INVITE, SUBSCRIBE, REFER without a To tag), whose tag the plugin's own
    /// in-dialog requests would then have to name.
    pub(crate) fn host_may_tag(&self, status: u16) -> bool {
        let starts_dialog = status < 300
            && self.message.to_tag().is_none()
            && matches!(
                self.method(),
                Method::Invite | Method::Subscribe | Method::Refer
            );
        self.local_tag.get().is_none_or(|cell| cell.get().is_none()) && !starts_dialog
    }
}

/// A response to a request the plugin sent.
///
/// Its status is read from the status line as it arrives; the rest is parsed on the first
/// [`Response::message`]: most plugins look at the status alone, and parsing the callee's
/// `200` cost the messaging plugin about 2.6 k instructions per delivered MESSAGE.
#[derive(Debug, Clone)]
pub struct Response {
    request: RequestId,
    status: u16,
    bytes: Bytes,
    message: OnceLock<Message>,
}

impl Response {
    /// Reads a response as the host delivers it: the status line now, the rest when
    /// [`Response::message`] is first asked for. A response whose status line does not read
    /// as the parser reads one (leading blank lines, say), or whose header section has no end,
    /// is parsed whole at once, and refused as before when it is not a response.
    pub fn parse(request: RequestId, bytes: Bytes) -> Result<Response, Error> {
        let (status, message) = match plain_status(&bytes) {
            Some(status) => (status, OnceLock::new()),
            None => {
                let message = Message::parse(bytes.clone()).map_err(|_| Error::InvalidArgument)?;
                let status = message.status().ok_or(Error::InvalidArgument)?;
                (status, OnceLock::from(message))
            }
        };
        Ok(Response {
            request,
            status,
            bytes,
            message,
        })
    }

    /// The id [`crate::Host::send_request`] returned.
    pub fn request_id(&self) -> RequestId {
        self.request
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether this is the final response (`>= 200`).
    pub fn is_final(&self) -> bool {
        self.status() >= 200
    }

    /// The parsed message, parsed on the first call. The host delivers responses it parsed
    /// itself; one that still fails to parse here (more header fields than the parser takes)
    /// reads as its status line alone: same status and reason, no fields, no body.
    pub fn message(&self) -> &Message {
        self.message.get_or_init(|| {
            Message::parse(self.bytes.clone())
                .unwrap_or_else(|_| status_line_alone(&self.bytes, self.status))
        })
    }
}

/// The status of a response the parser reads without error as far as its header section's
/// end: `SIP/` at the very start, `2.0 ` in any case, three digits from 100 to 699, then the
/// end of the line or a space and a reason, the line UTF-8, ended by LF or CRLF, and a blank
/// line further on. `None` for anything else, which is parsed whole instead (the same checks
/// as the parser's `parse_status_line`; only the field count is left to the full parse).
fn plain_status(bytes: &[u8]) -> Option<u16> {
    let line_end = memchr::memchr(b'\n', bytes)?;
    let line = bytes[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&bytes[..line_end]);
    let (version, rest) = line.split_at_checked(8)?;
    if !version.starts_with(b"SIP/") || !version.eq_ignore_ascii_case(b"SIP/2.0 ") {
        return None;
    }
    let (&[a, b, c], after) = rest.split_first_chunk::<3>()?;
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit())
        || !(after.is_empty() || after.first() == Some(&b' '))
        || std::str::from_utf8(after).is_err()
    {
        return None;
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    if !(100..=699).contains(&code) {
        return None;
    }
    // The header section ends at the first empty line (LF or CRLF alone) after the status
    // line: without one the parser refuses the message.
    let mut pos = line_end;
    loop {
        match bytes.get(pos + 1..)? {
            [b'\n', ..] | [b'\r', b'\n', ..] => return Some(code),
            rest => pos += 1 + memchr::memchr(b'\n', rest)?,
        }
    }
}

/// A response that did not parse, as its status line alone (see [`Response::message`]).
fn status_line_alone(bytes: &Bytes, status: u16) -> Message {
    let line_end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
    let mut head = bytes.slice(..line_end).to_vec();
    if head.last() == Some(&b'\r') {
        head.pop();
    }
    head.extend_from_slice(b"\r\n\r\n");
    // `plain_status` read this line as the parser does, so it parses; if not, the bare line
    // of the same status does (`a_response_that_fails_to_parse_reads_as_its_status_line`).
    Message::parse(Bytes::from(head)).unwrap_or_else(|_| {
        Message::parse(Bytes::from(format!("SIP/2.0 {status} \r\n\r\n")))
            .expect("a bare status line of a code from 100 to 699 parses")
    })
}

/// Builds a new out-of-dialog request for [`crate::Host::send_request`]: the plugin names the
/// method, the target and the parties; Call-ID, From tag, CSeq, Max-Forwards and
/// Content-Length are filled in. No Via: the host adds its own.
///
/// ```
/// use huddle_sdk::{Method, NewRequest};
/// let bytes = NewRequest::new(Method::Message, "sip:alice@example.test")
///     .from("<sip:echo@example.test>")
///     .body("text/plain", b"hello")
///     .build();
/// let text = std::str::from_utf8(&bytes).unwrap();
/// assert!(text.starts_with("MESSAGE sip:alice@example.test SIP/2.0\r\n"));
/// assert!(text.contains("To: <sip:alice@example.test>\r\n"));
/// assert!(text.ends_with("\r\n\r\nhello"));
/// ```
#[derive(Debug, Clone)]
pub struct NewRequest {
    method: Method,
    uri: String,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: u32,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl NewRequest {
    /// `METHOD uri SIP/2.0`. To defaults to `<uri>`.
    pub fn new(method: Method, uri: &str) -> Self {
        NewRequest {
            method,
            uri: uri.to_owned(),
            from: None,
            to: None,
            call_id: None,
            cseq: 1,
            headers: Vec::new(),
            body: None,
        }
    }

    /// The From header (a name-addr such as `"Echo" <sip:echo@example.test>`). A tag is added
    /// when it has none. Without it, From is `<sip:anonymous@anonymous.invalid>` (RFC 3261
    /// §8.1.1.3) with a tag.
    pub fn from(mut self, from: &str) -> Self {
        self.from = Some(from.to_owned());
        self
    }

    /// The To header (defaults to `<Request-URI>`).
    pub fn to(mut self, to: &str) -> Self {
        self.to = Some(to.to_owned());
        self
    }

    /// A Call-ID (generated when not set).
    pub fn call_id(mut self, call_id: &str) -> Self {
        self.call_id = Some(call_id.to_owned());
        self
    }

    /// The CSeq number (1 when not set).
    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = seq;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.body = Some((content_type.to_owned(), body.to_vec()));
        self
    }

    /// Hands `f` the request as parts ([`crate::Host::send_parts`]): the fields
    /// [`NewRequest::build`] writes, in the same order, Content-Length left to the writer.
    pub fn with_parts<R>(&self, f: impl FnOnce(&RequestParts<'_>) -> R) -> R {
        let method = self.method.as_str();
        let from = tagged(
            self.from
                .as_deref()
                .unwrap_or("<sip:anonymous@anonymous.invalid>"),
        );
        let to;
        let to = match &self.to {
            Some(t) => t.as_str(),
            None => {
                to = format!("<{}>", self.uri);
                to.as_str()
            }
        };
        let call_id;
        let call_id = match &self.call_id {
            Some(c) => c.as_str(),
            None => {
                call_id = format!("{}@huddle.invalid", random_token(12));
                call_id.as_str()
            }
        };
        // itoa: the formatting machinery costs more than the digits.
        let mut cseq = String::with_capacity(11 + method.len());
        cseq.push_str(itoa::Buffer::new().format(self.cseq));
        cseq.push(' ');
        cseq.push_str(method);
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(6 + self.headers.len());
        headers.extend([
            ("Max-Forwards", "70"),
            ("From", &from),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", cseq.as_str()),
        ]);
        headers.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let body: &[u8] = match &self.body {
            Some((ct, body)) => {
                headers.push(("Content-Type", ct.as_str()));
                body
            }
            None => b"",
        };
        f(&RequestParts {
            method,
            uri: &self.uri,
            headers: &headers,
            body,
        })
    }

    /// Writes the request.
    pub fn build(self) -> Bytes {
        let method = self.method.as_str();
        let from = tagged(
            self.from
                .as_deref()
                .unwrap_or("<sip:anonymous@anonymous.invalid>"),
        );
        let to = self.to.unwrap_or_else(|| format!("<{}>", self.uri));
        let call_id = self
            .call_id
            .unwrap_or_else(|| format!("{}@huddle.invalid", random_token(12)));
        let mut b = RequestBuilder::new(method, &self.uri)
            .header("Max-Forwards", "70")
            .header("From", &from)
            .header("To", &to)
            .header("Call-ID", &call_id)
            .header("CSeq", &format!("{} {method}", self.cseq));
        for (name, value) in &self.headers {
            b = b.header(name, value);
        }
        match &self.body {
            Some((ct, body)) => b.build_with_body(ct, body),
            None => b.build(),
        }
    }
}

/// A From value with a tag (what [`NewRequest`] sends): `addr` itself when it has one, else
/// `addr` with a fresh one (bracketed first when it is a bare URI with parameters, so the tag
/// is the header's and not the URI's). For a plugin that sends a request in parts
/// ([`crate::Host::send_parts`]) with a From it did not write.
pub fn tagged(addr: &str) -> Cow<'_, str> {
    match NameAddr::parse(addr) {
        Ok(a) if a.tag().is_some() => Cow::Borrowed(addr),
        Ok(a) if !a.bracketed => {
            Cow::Owned(format!("<{}>{};tag={}", a.uri, a.params, random_token(8)))
        }
        _ => Cow::Owned(format!("{addr};tag={}", random_token(8))),
    }
}

/// `2 * bytes` lowercase hex characters (`bytes` up to 64) from the operating system's random
/// source; suitable for tags, Call-IDs and branch parameters (RFC 3261 wants tags
/// cryptographically random: these are the OS's bytes, not a generator seeded from them).
///
/// The bytes come from a per-thread pool filled by one `getrandom` call for
/// 256 bytes (`RANDOM_POOL`), so a tag costs a system call only once per 32: the messaging
/// plugin's store writer made one per `202` (bench/NOTES.md, branch msgonline). Each byte is
/// handed out once. Not to be called in a child forked without exec: its copy of the pool
/// would repeat the parent's next tags. Should the OS source ever fail, up to 64 bytes come
/// from a clock-and-counter mix instead (unique, not secret) and the next call asks the OS
/// again.
pub fn random_token(bytes: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.min(64);
    let mut buf = [0u8; 64];
    POOL.with(|pool| pool.borrow_mut().take(&mut buf[..n]));
    let mut out = String::with_capacity(n * 2);
    for &b in &buf[..n] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Bytes of OS randomness one thread draws at a time for `random_token`.
pub(crate) const RANDOM_POOL: usize = 256;
// A token takes at most 64 bytes from one pool.
const _: () = assert!(RANDOM_POOL >= 64);

/// A thread's unread OS random bytes (`bytes[used..]`).
struct RandomPool {
    bytes: [u8; RANDOM_POOL],
    used: usize,
}

impl RandomPool {
    /// Fills `out` with bytes never handed out before, drawing a new pool when this one runs
    /// short (what is left of the old one is dropped, never reused).
    fn take(&mut self, out: &mut [u8]) {
        let mut from_os = true;
        if out.len() > RANDOM_POOL - self.used {
            from_os = self.refill();
        }
        let end = self.used + out.len();
        out.copy_from_slice(&self.bytes[self.used..end]);
        // A pool from the fallback serves this call only: the next asks the OS again.
        self.used = if from_os { end } else { RANDOM_POOL };
    }

    /// A fresh pool; `false` when the OS source failed and the fallback filled it.
    fn refill(&mut self) -> bool {
        self.used = 0;
        if getrandom::fill(&mut self.bytes).is_ok() {
            return true;
        }
        // The OS source failing is all but unheard of; then a clock-and-counter mix keeps
        // the tokens of this one call unique, though not secret (`take` asks the OS again next).
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        for b in &mut self.bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        false
    }
}

thread_local! {
    static POOL: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool { bytes: [0; RANDOM_POOL], used: RANDOM_POOL })
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Transport;

    const MESSAGE: &str = "MESSAGE sip:echo@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <sip:echo@example.test>\r\nCall-ID: m1\r\nCSeq: 7 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";

    /// Responses read lazily give what the whole parse gave: the same status, the same
    /// refusals, the same message; mutations of them never disagree with the parser on the
    /// status nor panic.
    #[test]
    fn a_response_read_from_its_status_line_is_the_parsed_one() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        let mut cases: Vec<Vec<u8>> = vec![
            ok.as_bytes().to_vec(),
            ok.replace("\r\n", "\n").into_bytes(),
            ok.replace("200 OK", "486 Busy Here").into_bytes(),
            ok.replace("200 OK", "180").into_bytes(),
            ok.replace("200 OK", "180 ").into_bytes(),
            ok.replacen("SIP/2.0 ", "sip/2.0 ", 1).into_bytes(),
            ok.replacen("SIP/2.0 ", "SIP/2.0\t", 1).into_bytes(),
            ok.replacen("SIP/2.0 ", "SIP/2.O ", 1).into_bytes(),
            ok.replacen("SIP/2.0 ", "Sip/2.0 ", 1).into_bytes(),
            ok.replacen("SIP/2.0 ", "SIP/2.0  ", 1).into_bytes(),
            ok.replace("200 OK", "099 Low").into_bytes(),
            ok.replace("200 OK", "700 High").into_bytes(),
            ok.replace("200 OK", "2000 OK").into_bytes(),
            ok.replace("200 OK", "20 OK").into_bytes(),
            ok.replace("200 OK", "200\tOK").into_bytes(),
            ok.replace("200 OK", "200\rOK").into_bytes(),
            format!("\r\n{ok}").into_bytes(),
            ok.trim_end().as_bytes().to_vec(),
            ok.replace("\r\n\r\n", "\r\n").into_bytes(),
            b"SIP/2.0 200 \xff\xfe\r\n\r\n".to_vec(),
            b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
            b"SIP/2.0 200 OK\r\n".to_vec(),
            b"SIP/2.0 200".to_vec(),
            MESSAGE.as_bytes().to_vec(),
            b"".to_vec(),
        ];
        // Every byte of the status line and the header section's end, changed.
        let base = ok.as_bytes();
        for i in (0..20).chain(base.len() - 6..base.len()) {
            for b in [b' ', b'\r', b'\n', b'0', b'9', b'x', 0x80] {
                let mut m = base.to_vec();
                m[i] = b;
                cases.push(m);
            }
        }
        for bytes in cases {
            let bytes = Bytes::from(bytes);
            let whole = Message::parse(bytes.clone())
                .ok()
                .filter(|m| m.status().is_some());
            let lazy = Response::parse(RequestId(1), bytes.clone());
            match (&whole, &lazy) {
                (Some(m), Ok(r)) => {
                    assert_eq!(Some(r.status()), m.status(), "{bytes:?}");
                    assert_eq!(r.message().raw(), m.raw());
                    assert_eq!(r.message().reason(), m.reason());
                    assert_eq!(r.message().headers().len(), m.headers().len());
                }
                (None, Err(e)) => assert_eq!(*e, Error::InvalidArgument),
                _ => panic!(
                    "{bytes:?}: parsed {:?}, read {:?}",
                    whole.is_some(),
                    lazy.is_ok()
                ),
            }
        }
    }

    /// A response whose header section the parser refuses after a good status line (more
    /// fields than it takes) has that status and reads as its status line alone.
    #[test]
    fn a_response_that_fails_to_parse_reads_as_its_status_line() {
        let mut text = String::from("SIP/2.0 404 Not Here\r\n");
        for i in 0..2000 {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        let bytes = Bytes::from(text);
        assert!(Message::parse(bytes.clone()).is_err());
        let r = Response::parse(RequestId(1), bytes).unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.message().status(), Some(404));
        assert_eq!(r.message().reason(), Some("Not Here"));
        assert!(r.message().headers().is_empty());
        for code in 100..=699u16 {
            let mut line = format!("SIP/2.0 {code} ").into_bytes();
            line.push(0xff);
            let m = status_line_alone(&Bytes::from(line), code);
            assert_eq!(m.status(), Some(code));
        }
    }

    #[test]
    fn clones_made_before_the_first_answer_share_its_tag() {
        let info = RequestInfo::new(Transport::Udp, Some("192.0.2.7:40000".parse().unwrap()));
        let req = Request::parse(
            Some(TransactionId(3)),
            Bytes::from_static(MESSAGE.as_bytes()),
            info,
        )
        .unwrap();
        let copy = req.clone();
        let first = Message::parse(copy.reply(180, "Ringing")).unwrap();
        let tag = first.to_header().unwrap().tag().map(str::to_owned);
        assert!(tag.as_deref().is_some_and(|t| t.len() == 16));
        assert_eq!(tag.as_deref(), Some(req.local_tag()));
    }

    /// The tag's cell is made lazily, but a tag made through any clone still binds every
    /// copy: none of them may then leave the tag to the host.
    #[test]
    fn a_tag_made_on_a_clone_keeps_every_copy_from_replying_by_status() {
        let info = RequestInfo::new(Transport::Udp, Some("192.0.2.7:40000".parse().unwrap()));
        let req = Request::parse(
            Some(TransactionId(3)),
            Bytes::from_static(MESSAGE.as_bytes()),
            info,
        )
        .unwrap();
        // The cell itself (not the tag in it): made by the first clone, shared by the copy.
        let cell = |r: &Request| r.local_tag.get().map(Arc::as_ptr);
        assert_eq!(cell(&req), None, "no cell until needed");
        assert!(req.host_may_tag(200));
        let copy = req.clone();
        assert!(cell(&req).is_some(), "the clone made the shared cell");
        assert_eq!(cell(&req), cell(&copy));
        assert!(req.host_may_tag(200) && copy.host_may_tag(200));
        let tag = copy.local_tag().to_owned();
        assert!(!req.host_may_tag(200), "the clone's tag is the original's");
        assert!(!copy.host_may_tag(200));
        assert_eq!(req.local_tag(), tag);
    }

    #[test]
    fn request_reply_stamps_via_and_tags_to() {
        let info = RequestInfo::new(Transport::Udp, Some("192.0.2.7:40000".parse().unwrap()));
        let req = Request::parse(
            Some(TransactionId(3)),
            Bytes::from_static(MESSAGE.as_bytes()),
            info,
        )
        .unwrap();
        assert_eq!(req.uri_user(), Some("echo"));
        assert_eq!(req.from_uri(), Some("sip:alice@example.test"));
        let resp = Message::parse(req.reply(200, "OK")).unwrap();
        assert_eq!(resp.status(), Some(200));
        assert_eq!(resp.to_header().unwrap().tag(), Some(req.local_tag()));
        let again = Message::parse(req.clone().reply(180, "Ringing")).unwrap();
        assert_eq!(
            again.to_header().unwrap().tag(),
            Some(req.local_tag()),
            "one tag for every response, from a clone too"
        );
        let via = resp.top_via().unwrap();
        assert_eq!(via.received(), Some("192.0.2.7"));
        assert_eq!(resp.cseq().unwrap().seq, 7);
    }

    #[test]
    fn new_request_fills_in_the_rest() {
        let bytes = NewRequest::new(Method::Message, "sip:alice@example.test")
            .from("sip:echo@example.test")
            .header("Subject", "re")
            .body("text/plain", b"hi")
            .build();
        let msg = Message::parse(bytes).unwrap();
        assert!(msg.from_header().unwrap().tag().is_some());
        assert_eq!(msg.to_header().unwrap().uri, "sip:alice@example.test");
        assert_eq!(msg.cseq().unwrap().method, Method::Message);
        assert!(msg.call_id().unwrap().ends_with("@huddle.invalid"));
        assert_eq!(msg.body(), b"hi");
        assert_eq!(msg.header(&HeaderName::parse("Subject")), Some("re"));
    }

    #[test]
    fn the_parts_are_the_request_build_writes() {
        for seq in [0, 7, 10, 2_147_483_647] {
            for body in [None, Some(&b"hi\r\n"[..])] {
                let mut r = NewRequest::new(Method::Notify, "sip:alice@example.test")
                    .from("<sip:echo@example.test>;tag=e1")
                    .call_id("c@h")
                    .cseq(seq)
                    .header("Event", "presence");
                if let Some(body) = body {
                    r = r.body("text/plain", body);
                }
                let written = r
                    .with_parts(|p| Message::from_parts(p, usize::MAX))
                    .unwrap();
                assert_eq!(written.raw(), &r.build());
            }
        }
    }

    #[test]
    fn tokens_are_hex_and_differ() {
        let a = random_token(8);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_token(8));
        assert_eq!(random_token(0), "");
        assert_eq!(random_token(100).len(), 128, "64 bytes at most");
    }

    #[test]
    fn the_pool_hands_out_its_bytes_in_order_once_and_draws_again_when_short() {
        let mut pool = RandomPool {
            bytes: std::array::from_fn(|i| i as u8),
            used: 0,
        };
        let mut a = [0u8; 8];
        pool.take(&mut a);
        assert_eq!(a, [0, 1, 2, 3, 4, 5, 6, 7]);
        pool.take(&mut a);
        assert_eq!(a, [8, 9, 10, 11, 12, 13, 14, 15]);
        pool.used = RANDOM_POOL - 4;
        let before = pool.bytes;
        pool.take(&mut a);
        assert_eq!(pool.used, 8, "a fresh pool, its first 8 bytes taken");
        assert_ne!(&pool.bytes[8..], &before[8..], "drawn again from the OS");
    }

    #[test]
    fn tokens_keep_differing_across_many_pools() {
        let tokens: std::collections::HashSet<String> =
            (0..10 * RANDOM_POOL).map(|_| random_token(8)).collect();
        assert_eq!(tokens.len(), 10 * RANDOM_POOL);
        let bits: u32 = tokens
            .iter()
            .flat_map(|t| t.bytes())
            .map(|b| u32::from(b - if b >= b'a' { b'a' - 10 } else { b'0' }).count_ones())
            .sum();
        let all = (10 * RANDOM_POOL * 16 * 4) as f64;
        let share = f64::from(bits) / all;
        assert!(
            (0.45..0.55).contains(&share),
            "about half the bits set: {share}"
        );
    }
}
