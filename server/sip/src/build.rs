//! Writing messages: responses to a received request, edits of a request or response that a
//! proxy forwards (every untouched byte copied as received), and new requests (CANCEL, ACK for
//! a non-2xx final response, requests Huddle originates).

use std::fmt::Write as _;

use bytes::Bytes;

use crate::headers::Via;
use crate::message::{
    Built, Defect, Header, HeaderName, Message, ParseError, ParseLimits, Span, StartLine,
};
use crate::syntax;

/// `n` in decimal, written into `buf` (the formatting machinery costs more than the digits for
/// the few numbers every response carries).
fn decimal_digits(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// [`decimal_digits`] as text.
pub(crate) fn decimal(n: u32, buf: &mut [u8; 10]) -> &str {
    // Nothing but ASCII digits.
    std::str::from_utf8(decimal_digits(n, buf)).unwrap_or("0")
}

fn push_decimal(out: &mut Vec<u8>, n: u32) {
    // The digits as bytes: no UTF-8 check of them, as a `&str` needs.
    out.extend_from_slice(decimal_digits(n, &mut [0; 10]));
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Where the request came from, to fill in the top Via's `received` and `rport` (RFC 3261
/// §18.2.1, RFC 3581) in responses.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub ip: &'a str,
    pub port: u16,
}

/// Rewrites the top Via element: `received` when the sent-by host differs from the source
/// address (always when `rport` was asked for), and `rport` filled in.
pub fn stamp_via(top: &str, src: Source<'_>) -> Option<String> {
    let via = Via::parse(top).ok()?;
    let mut out = String::new();
    push_stamped_via(&mut out, top, &via, via.rport(), src).then_some(out)
}

/// Writes [`stamp_via`] of `top`, already parsed into `via` (whose parameters end where `top`
/// ends) with its `rport` ([`Via::rport`]), into `out`; false, writing nothing, when the Via
/// needs no stamp.
fn push_stamped_via(
    out: &mut impl syntax::PushText,
    top: &str,
    via: &Via<'_>,
    rport: Option<Option<&str>>,
    src: Source<'_>,
) -> bool {
    let wants_rport = rport.is_some();
    let host_differs = via.host.trim_start_matches('[').trim_end_matches(']') != src.ip;
    if !wants_rport && !host_differs {
        return false;
    }
    let params_at = top.len() - via.params.len();
    out.push_text(syntax::trim_lws(&top[..params_at]));
    syntax::push_params_except(out, via.params, |name| {
        name.eq_ignore_ascii_case("received") || (name.eq_ignore_ascii_case("rport") && wants_rport)
    });
    out.push_text(";received=");
    out.push_text(src.ip);
    if wants_rport {
        out.push_text(";rport=");
        out.push_text(decimal(u32::from(src.port), &mut [0; 10]));
    }
    true
}

/// Builds a response to a received request (RFC 3261 §8.2.6).
#[derive(Debug)]
pub struct ResponseBuilder<'a> {
    req: &'a Message,
    status: u16,
    reason: &'a str,
    to_tag: Option<&'a str>,
    source: Option<Source<'a>>,
    /// Header lists given with [`ResponseBuilder::headers`], written in order before `extra`.
    lists: [&'a [(&'a str, &'a str)]; 2],
    extra: Vec<u8>,
    body: Option<(&'a str, &'a [u8])>,
}

impl<'a> ResponseBuilder<'a> {
    /// Starts a response with the given status and reason phrase.
    pub fn new(req: &'a Message, status: u16, reason: &'a str) -> Self {
        ResponseBuilder {
            req,
            status,
            reason,
            to_tag: None,
            source: None,
            lists: [&[]; 2],
            extra: Vec::new(),
            body: None,
        }
    }

    /// Adds a To tag unless the request already has one (ignored for 100 Trying).
    pub fn to_tag(mut self, tag: &'a str) -> Self {
        self.to_tag = Some(tag);
        self
    }

    /// Records where the request came from so the top Via gets `received`/`rport`.
    pub fn source(mut self, source: Source<'a>) -> Self {
        self.source = Some(source);
        self
    }

    /// Appends the headers of `list` (name, value), borrowed until [`ResponseBuilder::build`]
    /// writes them: unlike [`ResponseBuilder::header`], nothing is copied before.
    pub fn headers(mut self, list: &'a [(&'a str, &'a str)]) -> Self {
        if list.is_empty() {
            return self;
        }
        // Written in call order: once a header was copied, or both slots are taken, the list
        // is copied behind it.
        match self.lists.iter_mut().find(|l| l.is_empty()) {
            Some(slot) if self.extra.is_empty() => *slot = list,
            _ => {
                for (name, value) in list {
                    self = self.header(name, value);
                }
            }
        }
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        // Room for the usual few (Server, a Contact or a challenge) at once, rather than
        // growing from nothing with each.
        if self.extra.capacity() == 0 {
            self.extra.reserve(name.len() + value.len() + 256);
        }
        push_header(&mut self.extra, name, value);
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// How many bytes [`ResponseBuilder::build`] writes at most (plus a little for a split
    /// Via list's separators): the response is allocated at that size, since over UDP the
    /// transaction keeps it for 32 s (Timer J), slack and all.
    fn size_hint(&self) -> usize {
        let listed: usize = self
            .lists
            .iter()
            .flat_map(|l| l.iter())
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        let copied: usize = self
            .req
            .headers()
            .iter()
            .filter(|h| {
                matches!(
                    h.name,
                    HeaderName::Via
                        | HeaderName::From
                        | HeaderName::CallId
                        | HeaderName::CSeq
                        | HeaderName::To
                )
            })
            .map(|h| h.line.len() + 3)
            .sum();
        let stamp = self
            .source
            .map_or(0, |s| ";received=;rport=65535".len() + s.ip.len());
        let tag = self.to_tag.map_or(0, |t| ";tag=".len() + t.len());
        let body = self.body.map_or(0, |(ct, body)| {
            "Content-Type: \r\n".len() + ct.len() + body.len()
        });
        "SIP/2.0 200 \r\nContent-Length: 4294967295\r\n\r\n".len()
            + self.reason.len()
            + copied
            + stamp
            + tag
            + listed
            + self.extra.len()
            + body
            + 64
    }

    /// Writes the response.
    pub fn build(self) -> Bytes {
        let req = self.req;
        let raw = req.raw();
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(b"SIP/2.0 ");
        push_decimal(&mut out, u32::from(self.status));
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut via_done = false;
        for h in req.headers() {
            match h.name {
                HeaderName::Via if !via_done && self.source.is_some() => {
                    via_done = true;
                    // The kept view knows the top element and whether the field holds more:
                    // a field of one element is not split again.
                    let (top, mut items) = match req.top_via_element() {
                        Some((top, false)) => (top, None),
                        _ => {
                            let mut items = syntax::split_list(req.text(h.value));
                            (items.next().unwrap_or(""), Some(items))
                        }
                    };
                    out.extend_from_slice(b"Via: ");
                    // The request's memoised top Via is this element when its parameters
                    // end where the element ends, in the same buffer: no second parse.
                    let parsed = req.top_via().ok().filter(|v| {
                        v.params.as_ptr() as usize + v.params.len()
                            == top.as_ptr() as usize + top.len()
                            && top.len() >= v.params.len()
                    });
                    let stamped = self.source.is_some_and(|src| match &parsed {
                        // Its `rport` was found when it was parsed.
                        Some(via) => {
                            let rport = req.top_via_rport().unwrap_or_else(|| via.rport());
                            push_stamped_via(&mut out, top, via, rport, src)
                        }
                        None => Via::parse(top).is_ok_and(|via| {
                            push_stamped_via(&mut out, top, &via, via.rport(), src)
                        }),
                    });
                    if !stamped {
                        out.extend_from_slice(top.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    // The rest of that field stays one line: one line per element would turn a
                    // long Via list into more header fields than a parser accepts.
                    let mut rest = items.take().into_iter().flatten().peekable();
                    if rest.peek().is_some() {
                        out.extend_from_slice(b"Via: ");
                        for (i, item) in rest.enumerate() {
                            if i > 0 {
                                out.extend_from_slice(b", ");
                            }
                            out.extend_from_slice(item.as_bytes());
                        }
                        out.extend_from_slice(b"\r\n");
                    }
                }
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    out.extend_from_slice(&raw[h.line.range()]);
                }
                HeaderName::To => {
                    let value = req.text(h.value);
                    let has_tag = req.to_tag().is_some();
                    match self.to_tag {
                        Some(tag) if !has_tag && self.status > 100 => {
                            out.extend_from_slice(b"To: ");
                            out.extend_from_slice(value.as_bytes());
                            out.extend_from_slice(b";tag=");
                            out.extend_from_slice(tag.as_bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                        _ => out.extend_from_slice(&raw[h.line.range()]),
                    }
                }
                _ => {}
            }
        }
        for (name, value) in self.lists.iter().flat_map(|l| l.iter()) {
            push_header(&mut out, name, value);
        }
        out.extend_from_slice(&self.extra);
        match self.body {
            Some((ct, body)) => {
                push_header(&mut out, "Content-Type", ct);
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(&mut out, u32::try_from(body.len()).unwrap_or(u32::MAX));
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
            }
            None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        Bytes::from(out)
    }
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Edits a received message for forwarding (RFC 3261 §16.6 and §16.7): everything not named
/// here is copied byte for byte, the body included.
#[derive(Debug)]
pub struct Forward<'a> {
    msg: &'a Message,
    request_uri: Option<&'a str>,
    top: Vec<u8>,
    max_forwards: Option<u8>,
    drop_routes: usize,
    drop_top_via: bool,
    drop_headers: Vec<HeaderName>,
    append: Vec<u8>,
    /// True while every field added to `top` and `append` is one the parser reads back as
    /// written ([`plain_field`]): `build_message` then records their offsets as it copies
    /// them, without scanning them again.
    plain: bool,
}

impl<'a> Forward<'a> {
    /// Starts from `msg`.
    pub fn new(msg: &'a Message) -> Self {
        Forward {
            msg,
            request_uri: None,
            top: Vec::new(),
            max_forwards: None,
            drop_routes: 0,
            drop_top_via: false,
            drop_headers: Vec::new(),
            append: Vec::new(),
            plain: true,
        }
    }

    /// Replaces the Request-URI.
    pub fn request_uri(mut self, uri: &'a str) -> Self {
        self.request_uri = Some(uri);
        self
    }

    /// Inserts a header above all others (Via, then Record-Route, in call order).
    pub fn prepend(mut self, name: &str, value: &str) -> Self {
        // Room for a Via and a Record-Route pair at once, rather than growing with each.
        if self.top.capacity() == 0 {
            self.top.reserve(name.len() + value.len() + 256);
        }
        self.plain &= plain_field(name, value);
        push_header(&mut self.top, name, value);
        self
    }

    /// Appends a header after all others.
    pub fn append(mut self, name: &str, value: &str) -> Self {
        self.plain &= plain_field(name, value);
        push_header(&mut self.append, name, value);
        self
    }

    /// Sets Max-Forwards (added when absent).
    pub fn max_forwards(mut self, value: u8) -> Self {
        self.max_forwards = Some(value);
        self
    }

    /// Removes the first Route element (it named this proxy).
    pub fn drop_top_route(self) -> Self {
        self.drop_routes(1)
    }

    /// Removes the first `n` Route elements (they named this proxy).
    pub fn drop_routes(mut self, n: usize) -> Self {
        self.drop_routes = n;
        self
    }

    /// Removes the first Via element (a response passing back through this proxy).
    pub fn drop_top_via(mut self) -> Self {
        self.drop_top_via = true;
        self
    }

    /// Removes every header with this name.
    pub fn drop_header(mut self, name: HeaderName) -> Self {
        self.drop_headers.push(name);
        self
    }

    /// Writes the edited message.
    pub fn build(self) -> Bytes {
        Bytes::from(self.write(&mut None))
    }

    /// Writes the edited message and returns it parsed, without parsing it again: the same
    /// result as `Message::parse(self.build())` (which it falls back to for the rare inputs
    /// whose offsets it does not track: a message with a defect, or an added header that is
    /// not a plain one-line field).
    pub fn build_message(self) -> Result<Message, ParseError> {
        let msg = self.msg;
        if msg.defect().is_some() || !self.plain {
            return Message::parse(self.build());
        }
        let mut track = Some(Track::default());
        let out = self.write(&mut track);
        let Some((t, start)) = track.and_then(|mut t| t.start.take().map(|s| (t, s))) else {
            return Message::parse(Bytes::from(out));
        };
        if t.headers.len() > ParseLimits::default().max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let body_start = t.headers_end + t.blank;
        let body_len = out.len() - body_start;
        Ok(Message::from_built(Built {
            raw: Bytes::from(out),
            start,
            start_line_end: t.start_line_end,
            headers: t.headers,
            headers_end: t.headers_end,
            body: Span::new(body_start, body_start + body_len),
            defect: t.defect,
        }))
    }

    /// Writes the message; with `track`, records the offsets `build_message` needs (or sets
    /// it to `None` when something is not tracked, to fall back to parsing).
    fn write(self, track: &mut Option<Track>) -> Vec<u8> {
        let msg = self.msg;
        let raw = msg.raw();
        let body_end = msg.headers_end() + {
            // Blank line length plus body: everything after the header section up to the
            // end of the Content-Length body (trailing datagram bytes are not forwarded).
            let body = msg.body();
            let blank = if raw.get(msg.headers_end()) == Some(&b'\r') {
                2
            } else {
                1
            };
            blank + body.len()
        };
        let mut out = Vec::with_capacity(
            raw.len()
                + self.top.len()
                + self.append.len()
                + self.request_uri.map_or(0, str::len)
                + 32,
        );
        if let Some(t) = track.as_mut() {
            // Every header of the original and the added ones, without regrowing.
            t.headers.reserve(msg.headers().len() + 8);
        }
        match (self.request_uri, msg.start_line()) {
            (Some(uri), crate::message::StartLine::Request { method, .. }) => {
                for part in [method.as_str(), " ", uri, " SIP/2.0\r\n"] {
                    out.extend_from_slice(part.as_bytes());
                }
                if let Some(t) = track.as_mut() {
                    let line = std::str::from_utf8(&out[..out.len() - 2]).unwrap_or("");
                    match Message::request_line(line, 0) {
                        Some((start, defect)) if !uri.contains(['\r', '\n']) => {
                            t.start = Some(start);
                            t.defect = defect;
                        }
                        _ => *track = None,
                    }
                }
            }
            _ => {
                out.extend_from_slice(&raw[..msg.start_line_end()]);
                if let Some(t) = track.as_mut() {
                    t.start = Some(msg.start_line().clone());
                }
            }
        }
        if let Some(t) = track.as_mut() {
            t.start_line_end = out.len();
            track_plain(t, &out, &self.top);
        }
        out.extend_from_slice(&self.top);
        let mut routes_to_drop = self.drop_routes;
        let mut via_done = !self.drop_top_via;
        let mut saw_max_forwards = false;
        // Fields copied as they are: consecutive lines of `raw` (the parser's fields tile the
        // header section) go out with one copy per run instead of one per field.
        let mut run = 0..0;
        for h in msg.headers() {
            if self.drop_headers.iter().any(|d| d.matches(&h.name)) {
                continue;
            }
            let skip = match h.name {
                HeaderName::Route if routes_to_drop > 0 => {
                    let n = routes_to_drop;
                    routes_to_drop = routes_to_drop
                        .saturating_sub(syntax::split_list(msg.text(h.value)).count());
                    n
                }
                HeaderName::Via if !via_done => {
                    via_done = true;
                    // The top Via alone in its field (the kept view says so): the field goes.
                    if msg.top_via_element().is_some_and(|(_, more)| !more) {
                        continue;
                    }
                    1
                }
                _ => 0,
            };
            if skip > 0 {
                out.extend_from_slice(&raw[std::mem::take(&mut run)]);
                if let Some(rest) = list_after(msg.text(h.value), skip) {
                    push_tracked(&mut out, track, h.name.clone(), rest);
                }
                continue;
            }
            if h.name == HeaderName::MaxForwards {
                saw_max_forwards = true;
                if let Some(mf) = self.max_forwards {
                    out.extend_from_slice(&raw[std::mem::take(&mut run)]);
                    let mut buf = [0; 10];
                    let value = decimal(u32::from(mf), &mut buf);
                    push_tracked(&mut out, track, HeaderName::MaxForwards, value);
                    continue;
                }
            }
            let line = h.line.range();
            if run.end != line.start {
                out.extend_from_slice(&raw[std::mem::take(&mut run)]);
                run = line.start..line.start;
            }
            // Where this line lands once the run is written.
            let at = out.len() + (line.start - run.start);
            run.end = line.end;
            if let Some(t) = track.as_mut() {
                let shift = |i: u32| (i as usize + at) - h.line.start as usize;
                t.headers.push(Header {
                    name: h.name.clone(),
                    line: Span::new(at, at + line.len()),
                    value: Span::new(shift(h.value.start), shift(h.value.end)),
                });
            }
        }
        out.extend_from_slice(&raw[run]);
        if let (Some(mf), false) = (self.max_forwards, saw_max_forwards) {
            let mut buf = [0; 10];
            let value = decimal(u32::from(mf), &mut buf);
            push_tracked(&mut out, track, HeaderName::MaxForwards, value);
        }
        if let Some(t) = track.as_mut() {
            track_plain(t, &out, &self.append);
        }
        out.extend_from_slice(&self.append);
        if let Some(t) = track.as_mut() {
            t.headers_end = out.len();
            t.blank = if raw.get(msg.headers_end()) == Some(&b'\r') {
                2
            } else {
                1
            };
        }
        out.extend_from_slice(&raw[msg.headers_end()..body_end.min(raw.len())]);
        if let Some(t) = track.as_mut() {
            if out.len() < t.headers_end + t.blank {
                *track = None;
            }
        }
        out
    }
}

/// What [`Forward::build_message`] records while writing.
#[derive(Default)]
struct Track {
    start: Option<StartLine>,
    start_line_end: usize,
    headers: Vec<Header>,
    headers_end: usize,
    blank: usize,
    defect: Option<Defect>,
}

/// True when `push_header(name, value)` writes a field the parser reads back with exactly
/// this name and value: a token name other than Content-Length (which the parser checks
/// against the body), a value without line breaks or white space at its ends (which the
/// parser would trim). Anything else makes `build_message` parse what it wrote.
fn plain_field(name: &str, value: &str) -> bool {
    syntax::is_token(name)
        && HeaderName::known(name.as_bytes()) != Some(HeaderName::ContentLength)
        && memchr::memchr2(b'\r', b'\n', value.as_bytes()).is_none()
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
}

/// Records the fields of `buf`, about to be appended to `out`: `push_header` wrote each as
/// `name: value\r\n`, and [`plain_field`] held for all of them, so the first `:` ends the
/// name (a token has none) and the first `\n` the line (the value has none).
fn track_plain(t: &mut Track, out: &[u8], buf: &[u8]) {
    let base = out.len();
    let mut pos = 0;
    while pos < buf.len() {
        let (Some(colon), Some(nl)) = (
            memchr::memchr(b':', &buf[pos..]),
            memchr::memchr(b'\n', &buf[pos..]),
        ) else {
            break;
        };
        let (name_end, line_end) = (pos + colon, pos + nl + 1);
        let name = &buf[pos..name_end];
        let name = HeaderName::known(name).unwrap_or_else(|| {
            // A token: ASCII.
            HeaderName::parse(std::str::from_utf8(name).unwrap_or_default())
        });
        t.headers.push(Header {
            name,
            line: Span::new(base + pos, base + line_end),
            value: Span::new(base + name_end + 2, base + line_end - 2),
        });
        pos = line_end;
    }
}

/// The text of list `value` from its element number `skip` (counting from 0) to its end, as
/// received; `None` when it has no more elements.
fn list_after(value: &str, skip: usize) -> Option<&str> {
    let mut rest = syntax::split_list(value).skip(skip);
    let first = rest.next()?;
    let last = rest.last().unwrap_or(first);
    // Both are slices of `value`.
    let start = first.as_ptr() as usize - value.as_ptr() as usize;
    let end = last.as_ptr() as usize - value.as_ptr() as usize + last.len();
    value.get(start..end)
}

/// `push_header`, recording the field when tracking (values with line breaks or edge white
/// space are not tracked: the parser would read them differently).
fn push_tracked(out: &mut Vec<u8>, track: &mut Option<Track>, name: HeaderName, value: &str) {
    let at = out.len();
    push_header(out, name.as_str(), value);
    if let Some(t) = track.as_mut() {
        let plain = memchr::memchr2(b'\r', b'\n', value.as_bytes()).is_none()
            && !value.starts_with([' ', '\t'])
            && !value.ends_with([' ', '\t']);
        if plain {
            let start = at + name.as_str().len() + 2;
            t.headers.push(Header {
                name,
                line: Span::new(at, out.len()),
                value: Span::new(start, start + value.len()),
            });
        } else {
            *track = None;
        }
    }
}

/// Builds a new request from scratch.
#[derive(Debug)]
pub struct RequestBuilder {
    out: Vec<u8>,
}

impl RequestBuilder {
    /// Starts `METHOD uri SIP/2.0`.
    pub fn new(method: &str, uri: &str) -> Self {
        let mut out = Vec::with_capacity(512);
        let _ = write!(VecWriter(&mut out), "{method} {uri} SIP/2.0\r\n");
        RequestBuilder { out }
    }

    /// Appends a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        push_header(&mut self.out, name, value);
        self
    }

    /// Copies a header line of `msg` as written, for every field with this name.
    pub fn copy(mut self, msg: &Message, name: &HeaderName) -> Self {
        for h in msg.headers().iter().filter(|h| h.name.matches(name)) {
            self.out.extend_from_slice(&msg.raw()[h.line.range()]);
        }
        self
    }

    /// Finishes without a body.
    pub fn build(mut self) -> Bytes {
        self.out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Bytes::from(self.out)
    }

    /// Finishes with a body.
    pub fn build_with_body(mut self, content_type: &str, body: &[u8]) -> Bytes {
        push_header(&mut self.out, "Content-Type", content_type);
        push_header(&mut self.out, "Content-Length", &body.len().to_string());
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        Bytes::from(self.out)
    }
}

/// The CANCEL for a client INVITE transaction (RFC 3261 §9.1): same Request-URI, Call-ID,
/// From, To, CSeq number and top Via, and the request's Route headers.
pub fn cancel_for(invite: &Message) -> Option<Bytes> {
    let uri = invite.request_uri()?;
    let cseq = invite.cseq().ok()?;
    let top_via = invite.header_list(&HeaderName::Via).next()?;
    Some(
        RequestBuilder::new("CANCEL", uri)
            .header("Via", top_via)
            .copy(invite, &HeaderName::Route)
            .copy(invite, &HeaderName::From)
            .copy(invite, &HeaderName::To)
            .copy(invite, &HeaderName::CallId)
            .header("CSeq", &format!("{} CANCEL", cseq.seq))
            .header("Max-Forwards", "70")
            .build(),
    )
}

/// The ACK a client INVITE transaction sends for a non-2xx final response (RFC 3261
/// §17.1.1.3): To from the response (with its tag), the rest from the INVITE.
pub fn ack_for_failure(invite: &Message, response: &Message) -> Option<Bytes> {
    let uri = invite.request_uri()?;
    let cseq = invite.cseq().ok()?;
    let top_via = invite.header_list(&HeaderName::Via).next()?;
    Some(
        RequestBuilder::new("ACK", uri)
            .header("Via", top_via)
            .copy(invite, &HeaderName::Route)
            .copy(invite, &HeaderName::From)
            .copy(response, &HeaderName::To)
            .copy(invite, &HeaderName::CallId)
            .header("CSeq", &format!("{} ACK", cseq.seq))
            .header("Max-Forwards", "70")
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKa;rport\r\nRoute: <sip:proxy.example.test;lr>, <sip:other;lr>\r\nMax-Forwards: 70\r\nFrom: \"alice\"<sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn response_copies_and_stamps() {
        let req = msg(INVITE);
        let resp = ResponseBuilder::new(&req, 180, "Ringing")
            .to_tag("t9")
            .source(Source {
                ip: "127.0.0.1",
                port: 40000,
            })
            .build();
        let text = std::str::from_utf8(&resp).unwrap();
        assert!(text.starts_with("SIP/2.0 180 Ringing\r\n"));
        assert!(text.contains("Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKa;received=127.0.0.1;rport=40000\r\n"));
        assert!(text.contains("To: <sip:bob@example.test>;tag=t9\r\n"));
        let parsed = msg(text);
        assert_eq!(parsed.status(), Some(180));
    }

    #[test]
    fn response_size_hint_covers_what_is_written() {
        // Compact names, a long Via list split over two lines with separators, an IPv6
        // source, a body: the hint (the allocation) is never short of the bytes written.
        let vias: Vec<String> = (0..40)
            .map(|i| format!("SIP/2.0/UDP h{i},SIP/2.0/UDP g{i}"))
            .collect();
        let req = msg(&format!(
            "INVITE sip:h SIP/2.0\r\nv: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx;rport,{}\r\nf: <sip:a@h>;tag=f\r\nt: <sip:h>\r\ni: c\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
            vias.join(",")
        ));
        let src = Source {
            ip: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            port: 65535,
        };
        for status in [100, 180, 200, 401] {
            let builder = ResponseBuilder::new(&req, status, "Some Reason")
                .to_tag("a-fairly-long-tag-0123456789abcdef")
                .source(src)
                .headers(&[("Contact", "<sip:a@b>"), ("Expires", "60")])
                .header("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\"")
                .body("application/sdp", b"v=0\r\n");
            let hint = builder.size_hint();
            let written = builder.build().len();
            assert!(written <= hint, "{status}: {written} > {hint}");
            // Not wildly over either: the point is to keep no slack for 32 s.
            assert!(hint - written <= 160, "{status}: {written} of {hint}");
        }
    }

    #[test]
    fn response_writes_the_via_list_and_headers_in_call_order() {
        // Two Via elements in the top field, a second Via field, a Via sent-by equal to the
        // source (no rport: left as it is), and an unparseable top Via (copied as it is).
        let req = msg("OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx ;rport, SIP/2.0/UDP b;branch=z9hG4bKy\r\nVia: SIP/2.0/TCP c;branch=z9hG4bKz\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        let src = Source {
            ip: "10.0.0.9",
            port: 5070,
        };
        let list = [("Contact", "<sip:a@b>"), ("Expires", "60")];
        let resp = ResponseBuilder::new(&req, 200, "OK")
            .to_tag("t")
            .source(src)
            .headers(&list)
            .header("Supported", "path")
            .headers(&[("Server", "S")])
            .build();
        assert_eq!(
            std::str::from_utf8(&resp).unwrap(),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;received=10.0.0.9;rport=5070\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKy\r\nVia: SIP/2.0/TCP c;branch=z9hG4bKz\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:h>;tag=t\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContact: <sip:a@b>\r\nExpires: 60\r\nSupported: path\r\nServer: S\r\nContent-Length: 0\r\n\r\n"
        );
        // The same headers given one by one write the same bytes.
        let one_by_one = ResponseBuilder::new(&req, 200, "OK")
            .to_tag("t")
            .source(src)
            .header("Contact", "<sip:a@b>")
            .header("Expires", "60")
            .header("Supported", "path")
            .header("Server", "S")
            .build();
        assert_eq!(resp, one_by_one);
        // More lists than slots still come out in order.
        let three = ResponseBuilder::new(&req, 200, "OK")
            .headers(&list[..1])
            .headers(&list[1..])
            .headers(&[("Supported", "path")])
            .headers(&[("Server", "S")])
            .build();
        let text = std::str::from_utf8(&three).unwrap();
        assert!(
            text.contains("Contact: <sip:a@b>\r\nExpires: 60\r\nSupported: path\r\nServer: S\r\n")
        );
        assert!(
            text.contains("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx ;rport, SIP/2.0/UDP b")
        );

        let same_host = msg("OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        let resp = ResponseBuilder::new(&same_host, 200, "OK")
            .source(src)
            .build();
        assert!(std::str::from_utf8(&resp)
            .unwrap()
            .contains("\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx\r\n"));
    }

    #[test]
    fn forward_touches_only_what_it_must() {
        let req = msg(INVITE);
        let out = Forward::new(&req)
            .prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp")
            .prepend("Record-Route", "<sip:127.0.0.1;lr>")
            .drop_top_route()
            .max_forwards(69)
            .request_uri("sip:bob@127.0.0.1:5070")
            .build();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp\r\nRecord-Route: <sip:127.0.0.1;lr>\r\nVia: SIP/2.0/WS"));
        assert!(text.contains("Route: <sip:other;lr>\r\n"));
        assert!(text.contains("Max-Forwards: 69\r\n"));
        assert!(text.ends_with("\r\n\r\nv=0\n"));
        let back = msg(text);
        assert_eq!(back.body(), b"v=0\n");
    }

    #[test]
    fn cancel_and_ack() {
        let req = msg(INVITE);
        let cancel = msg(std::str::from_utf8(&cancel_for(&req).unwrap()).unwrap());
        assert_eq!(cancel.cseq().unwrap().seq, 2);
        assert_eq!(cancel.branch(), Some("z9hG4bKa"));
        let resp = msg("SIP/2.0 486 Busy\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKa\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>;tag=b\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n");
        let ack = msg(std::str::from_utf8(&ack_for_failure(&req, &resp).unwrap()).unwrap());
        assert_eq!(ack.to_header().unwrap().tag(), Some("b"));
    }

    #[test]
    fn build_message_equals_parsing_the_build() {
        let texts = [
            INVITE.to_owned(),
            "\r\nMESSAGE sip:bob@example.test SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g;branch=z9hG4bK0\nSubject: a\n  b\nRoute: <sip:a;lr>\nRoute: <sip:b;lr>,<sip:c;lr>\nl: 5\n\nhello trailing".to_owned(),
            "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nX-Odd :  spaced value  \r\n\r\n".to_owned(),
            "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 9\r\n\r\nx".to_owned(),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKp, SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n".to_owned(),
            // Lists whose rest after the first element is odd: empty elements, folds, a
            // trailing comma.
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKp , ,SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP q,\r\nRoute: <sip:a;lr>,\r\n <sip:b;lr>  ,  <sip:c;lr>\r\nContent-Length: 0\r\n\r\n".to_owned(),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKp,\r\nRoute: <sip:a;lr>, \"x,y\" <sip:b;lr>\r\nContent-Length: 0\r\n\r\n".to_owned(),
        ];
        for text in &texts {
            let m = msg(text);
            let forwards = |m| {
                vec![
                    Forward::new(m),
                    Forward::new(m).drop_top_via(),
                    Forward::new(m)
                        .prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp;rport")
                        .prepend("Record-Route", "<sip:127.0.0.1;lr>")
                        .prepend("Record-Route", "<sip:127.0.0.2;lr>")
                        .drop_routes(2)
                        .max_forwards(69)
                        .append("X-Empty", "")
                        .drop_header(HeaderName::Subject),
                    Forward::new(m)
                        .request_uri("sip:bob@127.0.0.1:5070")
                        .drop_top_route(),
                    Forward::new(m).request_uri("<sip:bad uri>"),
                    Forward::new(m).request_uri("sip:a\r\nX: y"),
                    Forward::new(m).prepend("X-Fold", "a\r\n b").max_forwards(1),
                    Forward::new(m).prepend("l", "3"),
                    Forward::new(m).append("Bad Name", "v"),
                    Forward::new(m).drop_top_via().drop_routes(1),
                    Forward::new(m).drop_routes(2),
                    Forward::new(m)
                        .prepend("X-Pad", " padded")
                        .append("X-Tail", "tail\t"),
                    Forward::new(m)
                        .prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp;rport")
                        .append("X-Other-Name", "a: b")
                        .drop_top_via(),
                ]
            };
            for (a, b) in forwards(&m).into_iter().zip(forwards(&m)) {
                let fast = a.build_message();
                let slow = Message::parse(b.build());
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text:?}");
            }
        }
    }

    #[test]
    fn fields_are_copied_as_received_around_the_edited_ones() {
        // A line the parser skipped (no colon) breaks the run of copied lines; dropped,
        // replaced and cut fields sit between runs.
        let text = "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nX-A: 1\r\nno colon here\r\nX-B:  2 \r\nSubject: s\r\nX-C: 3\r\nMax-Forwards: 70\r\nRoute: <sip:r1;lr>, <sip:r2;lr>\r\nX-D: 4\r\n  folded\r\nl: 0\r\n\r\n";
        let m = msg(text);
        assert!(m.defect().is_some());
        let out = Forward::new(&m)
            .prepend("Via", "SIP/2.0/UDP p;branch=z9hG4bKp")
            .drop_header(HeaderName::Subject)
            .max_forwards(69)
            .drop_routes(1)
            .build();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nX-A: 1\r\nX-B:  2 \r\nX-C: 3\r\nMax-Forwards: 69\r\nRoute: <sip:r2;lr>\r\nX-D: 4\r\n  folded\r\nl: 0\r\n\r\n"
        );
        let out = Forward::new(&m).build();
        let without_bad = text.replace("no colon here\r\n", "");
        assert_eq!(std::str::from_utf8(&out).unwrap(), without_bad);
    }

    /// First Via fields of one element or more (quoted commas, empty elements, a trailing
    /// comma, an unparseable top element), alone or before a second Via field.
    fn via_layouts() -> Vec<String> {
        let a = "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport";
        let b = "SIP/2.0/TCP b;branch=z9hG4bK2";
        let firsts = [
            a.to_owned(),
            format!("{a}, {b}"),
            format!("{a} ,{b}"),
            format!("{a},"),
            format!("{a} , , {b}"),
            format!("{a};x=\"p,q\""),
            format!("{a};x=\"p,q\", {b}"),
            format!("SIP/2.0/UDP h;branch=z9hG4bK1;rport=x, {b}"),
            "SIP/2.0/UDP h;rport=5061;branch=".to_owned(),
            "SIP/2.0/UDP h;rport;branch".to_owned(),
            "SIP/2.0/UDP".to_owned(),
            "SIP/2.0/UDP, ".to_owned() + b,
            format!("{a},\r\n {b}"),
        ];
        let mut out = Vec::new();
        for first in firsts {
            for second in ["", "Via: SIP/2.0/SCTP c;branch=z9hG4bK3\r\n"] {
                out.push(format!("Via: {first}\r\n{second}"));
            }
        }
        out
    }

    #[test]
    fn the_kept_top_via_element_spares_splitting_the_field_again() {
        let src = Source {
            ip: "10.0.0.9",
            port: 5070,
        };
        for vias in via_layouts() {
            for start in ["OPTIONS sip:h SIP/2.0", "SIP/2.0 200 OK"] {
                let text = format!("{start}\r\n{vias}From: <sip:a@h>;tag=f\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
                let m = msg(&text);
                let first_field = m.header_values(&HeaderName::Via).next().unwrap();
                let mut split = syntax::split_list(first_field);
                let top = split.next().unwrap();
                let more = split.next().is_some();
                let rest: Vec<&str> = syntax::split_list(first_field).skip(1).collect();
                let parsed = Via::parse(top).is_ok();
                assert_eq!(
                    m.top_via_element(),
                    parsed.then_some((top, more)),
                    "{vias:?}"
                );
                assert_eq!(
                    m.top_via_rport(),
                    Via::parse(top).ok().map(|v| v.rport()),
                    "{vias:?}"
                );
                assert_eq!(
                    m.branch(),
                    Via::parse(top).ok().and_then(|v| v.branch()),
                    "{vias:?}"
                );
                let others: String = m.headers()[1..]
                    .iter()
                    .filter(|h| h.name == HeaderName::Via)
                    .map(|h| m.text(h.line).to_owned())
                    .collect();
                // What the builder wrote before it asked the kept view.
                let stamped = Via::parse(top)
                    .ok()
                    .and_then(|_| stamp_via(top, src))
                    .unwrap_or_else(|| top.to_owned());
                let mut expected = format!("Via: {stamped}\r\n");
                if !rest.is_empty() {
                    expected += &format!("Via: {}\r\n", rest.join(", "));
                }
                expected += &others;
                let built = ResponseBuilder::new(&m, 200, "OK").source(src).build();
                let built = std::str::from_utf8(&built).unwrap();
                assert!(
                    built.starts_with(&format!("SIP/2.0 200 OK\r\n{expected}From: ")),
                    "{vias:?}\n{built}"
                );
                // A forwarded response less its top Via: the field goes, or what follows
                // the first element stays.
                let dropped =
                    String::from_utf8(Forward::new(&m).drop_top_via().build().to_vec()).unwrap();
                let line = m.text(m.headers()[0].line);
                let kept = match list_after(first_field, 1) {
                    Some(rest) => format!("Via: {rest}\r\n"),
                    None => String::new(),
                };
                assert_eq!(dropped, text.replacen(line, &kept, 1), "{vias:?}");
            }
        }
    }
}
