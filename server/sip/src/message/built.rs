//! A request written from its parts (method, Request-URI, header fields, body) with the offsets
//! recorded as they are written, so the [`Message`] needs no parse: how the plugin host takes a
//! request a plugin hands over in parts (ABI 1.10) instead of as bytes it would parse again.
//!
//! The parts come from a plugin, which is untrusted input: everything the parser would have
//! found wrong, or would have read differently from what was meant, is refused here with a
//! [`PartsError`] saying what, never written. The message written is one the parser reads back
//! exactly as recorded (a test holds the two to each other): names are tokens, values carry no
//! line break (so no field can be smuggled into another), the Request-Line has no defect.

use std::sync::Arc;

use super::{Header, HeaderName, Message, Method, ParseLimits, Span, StartLine, Views};
use crate::syntax;

/// A request as parts. `headers` are `(name, value)` pairs written in order as `name: value`;
/// the writer adds `Content-Length` itself (from `body`), and a request sent through a proxy
/// gets its `Via` from the proxy, so neither may be among them.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Why parts were refused. Header fields are numbered from 0 in the order given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartsError {
    #[error("the method is not a token")]
    Method,
    #[error("the Request-URI is empty, has white space or a line break, or has no scheme")]
    RequestUri,
    #[error("header field {0}: the name is not a token")]
    HeaderName(usize),
    #[error("header field {0} ({1}): the value has a line break or a NUL")]
    HeaderValue(usize, String),
    #[error("header field {0}: {1} is written by the host, not given")]
    Reserved(usize, &'static str),
    #[error("the request has no {0}")]
    Missing(&'static str),
    #[error("the request has more than one {0}")]
    Repeated(&'static str),
    #[error("the CSeq is not a number and the request's method")]
    CSeq,
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("the request would be larger than {0} bytes")]
    TooLarge(usize),
}

/// The fields a request must have exactly once, by name.
const MANDATORY: [(HeaderName, &str); 4] = [
    (HeaderName::From, "From"),
    (HeaderName::To, "To"),
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
];

impl Message {
    /// Writes `parts` as a request (`Content-Length` added after the given fields) and returns
    /// it with the offsets recorded while writing: what `Message::parse` of the same bytes
    /// gives, without the parse. Refused with a [`PartsError`] when the parts are not a request
    /// the parser would read back as given, when From, To, Call-ID or CSeq is missing or
    /// repeated, when the CSeq does not name `method`, or over `max_len` bytes or the parser's
    /// header limit.
    pub fn from_parts(parts: &RequestParts<'_>, max_len: usize) -> Result<Message, PartsError> {
        Message::from_parts_leaving_out(parts, max_len, |_, _| false)
    }

    /// [`Message::from_parts`], except that the extension fields (names the parser does not
    /// know) for which `leave_out(name, value)` says true are not written: a host's control
    /// fields, which it takes as instructions instead of sending them. `leave_out` is asked
    /// about every field, in order, before anything is checked or written (so that the buffer
    /// is allocated at the size written): what it keeps of a field counts only when the result
    /// is `Ok`. A known name is written whatever it says, and so is every field past the
    /// 256th. A field left out is checked as every field is and counts towards `max_len` and
    /// the field limit, so the parts refused are exactly those `from_parts` refuses.
    pub fn from_parts_leaving_out(
        parts: &RequestParts<'_>,
        max_len: usize,
        mut leave_out: impl FnMut(&str, &str) -> bool,
    ) -> Result<Message, PartsError> {
        let max_headers = ParseLimits::default().max_headers;
        // Content-Length is one of the fields.
        if parts.headers.len() + 1 > max_headers {
            return Err(PartsError::TooManyHeaders(max_headers));
        }
        if !syntax::is_token(parts.method) {
            return Err(PartsError::Method);
        }
        let uri = parts.uri.as_bytes();
        if !plain_request_uri(parts.uri) {
            return Err(PartsError::RequestUri);
        }
        // The size as `from_parts` would write it (the limit), and the size written here (the
        // buffer), computed before anything is written or regrown.
        let mut len = parts.method.len() + 1 + uri.len() + " SIP/2.0\r\n".len();
        let mut left_out = 0;
        let mut out_bits = [0u64; 4];
        for (i, (name, value)) in parts.headers.iter().enumerate() {
            let size = name.len() + 2 + value.len() + 2;
            len += size;
            if i < 256 && leave_out(name, value) {
                out_bits[i / 64] |= 1 << (i % 64);
                left_out += size;
            }
        }
        // A body past u32::MAX is refused by the size check below whatever its digits say.
        let mut digits = [0u8; 10];
        let body_len = crate::build::decimal(
            u32::try_from(parts.body.len()).unwrap_or(u32::MAX),
            &mut digits,
        );
        len += "Content-Length: \r\n\r\n".len() + body_len.len() + parts.body.len();
        if len > max_len || len > u32::MAX as usize {
            return Err(PartsError::TooLarge(max_len.min(u32::MAX as usize)));
        }

        // The body goes after the header text in the same buffer: one allocation, none regrown
        // (and `Bytes::from` a full `Vec` takes it as it is).
        let mut head = String::with_capacity(len - left_out);
        head.push_str(parts.method);
        head.push(' ');
        head.push_str(parts.uri);
        head.push_str(" SIP/2.0\r\n");
        let start_line_end = head.len();
        let uri_start = parts.method.len() + 1;
        let start = StartLine::Request {
            method: Method::parse(parts.method),
            uri: Span::new(uri_start, uri_start + uri.len()),
            version: Span::new(start_line_end - 9, start_line_end - 2),
        };

        let mut headers = Vec::with_capacity(parts.headers.len() + 1);
        let mut seen = [0u8; MANDATORY.len()];
        let mut cseq_at = None;
        for (i, &(name, value)) in parts.headers.iter().enumerate() {
            // Every name `known` accepts is a token (a test holds it to that), so only the
            // others are checked byte by byte: ~60 instructions a field.
            let known = HeaderName::known(name.as_bytes());
            debug_assert!(known.is_none() || syntax::is_token(name), "{name:?}");
            if known.is_none() && !syntax::is_token(name) {
                return Err(PartsError::HeaderName(i));
            }
            if has_any(value.as_bytes(), |b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(PartsError::HeaderValue(i, name.to_owned()));
            }
            if i < 256 && out_bits[i / 64] >> (i % 64) & 1 == 1 && known.is_none() {
                continue;
            }
            match known {
                Some(HeaderName::Via) => return Err(PartsError::Reserved(i, "Via")),
                Some(HeaderName::ContentLength) => {
                    return Err(PartsError::Reserved(i, "Content-Length"))
                }
                _ => {}
            }
            let header_name = known.unwrap_or_else(|| HeaderName::Other(name.into()));
            if let Some(k) = MANDATORY.iter().position(|(m, _)| *m == header_name) {
                seen[k] += 1;
                if seen[k] > 1 {
                    return Err(PartsError::Repeated(MANDATORY[k].1));
                }
                if header_name == HeaderName::CSeq {
                    cseq_at = Some(headers.len());
                }
            }
            let line_start = head.len();
            head.push_str(name);
            head.push_str(": ");
            let value_start = head.len();
            head.push_str(value);
            // The parser leaves white space around a value out of it.
            let (lead, trail) = blank_ends(value.as_bytes());
            head.push_str("\r\n");
            headers.push(Header {
                name: header_name,
                line: Span::new(line_start, head.len()),
                value: Span::new(value_start + lead, value_start + value.len() - trail),
            });
        }
        if let Some(k) = seen.iter().position(|&n| n == 0) {
            return Err(PartsError::Missing(MANDATORY[k].1));
        }
        let line_start = head.len();
        head.push_str("Content-Length: ");
        let value_start = head.len();
        head.push_str(body_len);
        headers.push(Header {
            name: HeaderName::ContentLength,
            line: Span::new(line_start, head.len() + 2),
            value: Span::new(value_start, head.len()),
        });
        head.push_str("\r\n");
        let headers_end = head.len();
        head.push_str("\r\n");

        let head_text: Arc<str> = Arc::from(&head[..headers_end]);
        let mut raw = head.into_bytes();
        raw.extend_from_slice(parts.body);
        let body = Span::new(raw.len() - parts.body.len(), raw.len());
        let message = Message::from_fields(super::Fields {
            raw: raw.into(),
            head: Some(head_text),
            start,
            start_line_end: start_line_end as u32,
            headers,
            headers_end: headers_end as u32,
            body,
            defect: None,
            views: Views::default(),
        });
        // The CSeq's number and method, read as every later reader reads them (from the one
        // CSeq field, found above: no lookup by name).
        let cseq_ok = cseq_at.is_some_and(|at| {
            message
                .cseq_of_field(at)
                .is_ok_and(|c| c.method.as_str() == parts.method)
        });
        if !cseq_ok {
            return Err(PartsError::CSeq);
        }
        Ok(message)
    }
}

impl Message {
    /// This request as a proxy sends it on: `Via: via` above every field, the Request-URI
    /// replaced by `request_uri` when given, `Max-Forwards: <max_forwards>` after the fields
    /// when given, everything else copied. The same message as
    /// `build::Forward::new(self).prepend("Via", via)` with those edits and `build_message`
    /// (a test holds the two to each other), written with one copy of the header section
    /// instead of a field-by-field rewrite and no second reading of the Request-Line: the way
    /// the host sends a request a plugin gave in parts ([`Message::from_parts`]), whose fields
    /// it knows to be plain.
    ///
    /// `None` when this message is not one that can be written so (a response, a message with
    /// a defect or a header section that is not UTF-8, fields that do not follow each other
    /// line by line, a Max-Forwards field while `max_forwards` is given, a `via` or
    /// `request_uri` the parser would not read back as given, more fields than the parser's
    /// limit): the caller writes it with `Forward` then.
    pub fn relayed(
        &self,
        via: &str,
        request_uri: Option<&str>,
        max_forwards: Option<u8>,
    ) -> Option<Message> {
        let (StartLine::Request { method, .. }, None, Some(head)) =
            (&self.m.start, &self.m.defect, &self.m.head)
        else {
            return None;
        };
        if via.is_empty()
            || has_any(via.as_bytes(), |b| matches!(b, b'\r' | b'\n'))
            || via.starts_with([' ', '\t'])
            || via.ends_with([' ', '\t'])
            || request_uri.is_some_and(|u| !plain_request_uri(u))
        {
            return None;
        }
        let old_start_end = self.m.start_line_end as usize;
        let old_headers_end = self.m.headers_end as usize;
        // The fields must tile the header section, so that one copy of it is every line.
        let mut at = old_start_end;
        for h in &self.m.headers {
            if h.line.start as usize != at {
                return None;
            }
            at = h.line.end as usize;
            if max_forwards.is_some() && h.name == HeaderName::MaxForwards {
                return None;
            }
        }
        if at != old_headers_end
            || self.m.headers.len() + 1 + usize::from(max_forwards.is_some())
                > ParseLimits::default().max_headers
        {
            return None;
        }
        let raw = &self.m.raw[..];
        let blank = if raw.get(old_headers_end) == Some(&b'\r') {
            2
        } else {
            1
        };
        if raw.len() < old_headers_end + blank {
            return None;
        }
        let body_end = (old_headers_end + blank + self.m.body.len()).min(raw.len());
        let mut mf_digits = [0u8; 10];
        let mf = max_forwards.map(|n| crate::build::decimal(u32::from(n), &mut mf_digits));

        let start_len = match request_uri {
            Some(uri) => method.as_str().len() + 1 + uri.len() + " SIP/2.0\r\n".len(),
            None => old_start_end,
        };
        let via_len = "Via: ".len() + via.len() + 2;
        let mf_len = mf.map_or(0, |v| "Max-Forwards: ".len() + v.len() + 2);
        let headers_end = start_len + via_len + (old_headers_end - old_start_end) + mf_len;
        let len = headers_end + (body_end - old_headers_end);

        let mut out = String::with_capacity(len);
        let start = match request_uri {
            Some(uri) => {
                out.push_str(method.as_str());
                out.push(' ');
                out.push_str(uri);
                out.push_str(" SIP/2.0\r\n");
                let uri_start = method.as_str().len() + 1;
                StartLine::Request {
                    method: Method::parse(method.as_str()),
                    uri: Span::new(uri_start, uri_start + uri.len()),
                    version: Span::new(start_len - 9, start_len - 2),
                }
            }
            None => {
                out.push_str(head.get(..old_start_end)?);
                self.m.start.clone()
            }
        };
        let mut headers = Vec::with_capacity(self.m.headers.len() + 2);
        out.push_str("Via: ");
        out.push_str(via);
        out.push_str("\r\n");
        headers.push(Header {
            name: HeaderName::Via,
            line: Span::new(start_len, start_len + via_len),
            value: Span::new(start_len + 5, start_len + via_len - 2),
        });
        out.push_str(head.get(old_start_end..old_headers_end)?);
        // Every old offset moves by the same amount: the fields were copied as one block.
        let shift = (start_len + via_len) as i64 - old_start_end as i64;
        let moved = |s: Span| {
            Span::new(
                (i64::from(s.start) + shift) as usize,
                (i64::from(s.end) + shift) as usize,
            )
        };
        headers.extend(self.m.headers.iter().map(|h| Header {
            name: h.name.clone(),
            line: moved(h.line),
            value: moved(h.value),
        }));
        if let Some(v) = mf {
            let line_start = out.len();
            out.push_str("Max-Forwards: ");
            let value_start = out.len();
            out.push_str(v);
            out.push_str("\r\n");
            headers.push(Header {
                name: HeaderName::MaxForwards,
                line: Span::new(line_start, out.len()),
                value: Span::new(value_start, value_start + v.len()),
            });
        }
        debug_assert_eq!(out.len(), headers_end);
        let head_text: Arc<str> = Arc::from(out.as_str());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&raw[old_headers_end..body_end]);
        let body_start = headers_end + blank;
        Some(Message::from_fields(super::Fields {
            body: Span::new(body_start, bytes.len()),
            raw: bytes.into(),
            head: Some(head_text),
            start,
            start_line_end: start_len as u32,
            headers,
            headers_end: headers_end as u32,
            defect: None,
            views: Views::default(),
        }))
    }
}

/// A Request-URI the parser reads back exactly as written, with no defect: not empty, not a
/// name-addr, with a scheme's colon, and no white space, line break or NUL.
fn plain_request_uri(uri: &str) -> bool {
    let b = uri.as_bytes();
    !b.is_empty()
        && b[0] != b'<'
        && memchr::memchr(b':', b).is_some()
        && !has_any(b, |c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0))
}

/// Whether some byte of `b` is one of `bad`'s. Every byte is looked at (no early exit), which
/// the compiler turns into a vector loop: for values of a few dozen bytes that costs less than
/// `memchr`'s dispatch, called once per value.
#[inline(always)]
fn has_any(b: &[u8], bad: impl Fn(u8) -> bool) -> bool {
    b.iter().fold(false, |found, &c| found | bad(c))
}

/// How many SP and HTAB start and end `v` (all of it counted once, as leading).
fn blank_ends(v: &[u8]) -> (usize, usize) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    // Nearly every value starts and ends with something else.
    if !v.first().is_some_and(blank) && !v.last().is_some_and(blank) {
        return (0, 0);
    }
    let lead = v.iter().take_while(|b| blank(b)).count();
    let trail = v[lead..].iter().rev().take_while(|b| blank(b)).count();
    (lead, trail)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const HEADERS: &[(&str, &str)] = &[
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.test>;tag=a1"),
        ("To", "<sip:bob@example.test>"),
        ("Call-ID", "c1@h"),
        ("CSeq", "1 MESSAGE"),
        ("Date", "  Fri, 27 Nov 2026 17:00:00 GMT\t"),
        ("X-Empty", ""),
        ("Content-Type", "text/plain"),
    ];

    fn parts<'a>(headers: &'a [(&'a str, &'a str)], body: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            method: "MESSAGE",
            uri: "sip:bob@example.test",
            headers,
            body,
        }
    }

    /// Everything a reader can see of a message, for comparing a built one with a parsed one.
    fn seen(m: &Message) -> String {
        let headers: Vec<_> = m
            .headers()
            .iter()
            .map(|h| (h.name.clone(), h.line, m.text(h.value).to_owned()))
            .collect();
        format!(
            "{:?} {:?} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            m.raw(),
            m.start_line(),
            m.start_line_end(),
            m.headers_end(),
            headers,
            m.body(),
            m.defect(),
            m.cseq(),
            m.from_header(),
            m.to_header(),
            m.request_sip_uri(),
        )
    }

    #[test]
    fn a_built_request_reads_as_its_parse() {
        for body in [&b""[..], b"hello", b"\r\n\r\nbinary\0"] {
            let built = Message::from_parts(&parts(HEADERS, body), 65_535).unwrap();
            let parsed = Message::parse(Bytes::copy_from_slice(built.raw())).unwrap();
            assert_eq!(seen(&built), seen(&parsed));
            assert_eq!(built.body(), body);
            assert_eq!(
                built.header(&HeaderName::parse("Date")),
                Some("Fri, 27 Nov 2026 17:00:00 GMT")
            );
        }
    }

    #[test]
    fn compact_and_extension_names_are_recorded_as_the_parser_names_them() {
        let headers = [
            ("f", "<sip:a@h>;tag=1"),
            ("t", "sip:b@h"),
            ("i", "x"),
            ("CSeq", "9 NOTIFY"),
            ("Huddle-Binding", "b@h/1"),
            ("Event", "presence"),
        ];
        let p = RequestParts {
            method: "NOTIFY",
            uri: "sip:b@h;transport=tcp",
            headers: &headers,
            body: b"",
        };
        let built = Message::from_parts(&p, 65_535).unwrap();
        let parsed = Message::parse(Bytes::copy_from_slice(built.raw())).unwrap();
        assert_eq!(seen(&built), seen(&parsed));
        assert_eq!(built.call_id(), Some("x"));
    }

    fn refused(p: RequestParts<'_>) -> PartsError {
        Message::from_parts(&p, 4096).unwrap_err()
    }

    fn with(i: usize, field: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
        let mut h = HEADERS.to_vec();
        h[i] = field;
        h
    }

    #[test]
    fn hostile_parts_are_refused_saying_what() {
        let ok = parts(HEADERS, b"");
        for method in ["", "MES SAGE", "MESSAGE\r\nX: y", "MES\u{e9}"] {
            assert_eq!(refused(RequestParts { method, ..ok }), PartsError::Method);
        }
        for uri in [
            "",
            "<sip:b@h>",
            "sip:b@h SIP/2.0\r\nVia: x",
            "sip:b@h\n",
            "sip:b @h",
            "nocolon",
            "sip:b@h\0",
        ] {
            assert_eq!(
                refused(RequestParts { uri, ..ok }),
                PartsError::RequestUri,
                "{uri:?}"
            );
        }
        for name in ["", "X Y", "X:", "X\r\nY", "Sub\u{e9}ct"] {
            let h = with(5, (name, "v"));
            assert_eq!(
                refused(parts(&h, b"")),
                PartsError::HeaderName(5),
                "{name:?}"
            );
        }
        for value in ["a\r\nVia: SIP/2.0/UDP evil", "a\nb", "a\rb", "a\0"] {
            let h = with(5, ("Date", value));
            assert_eq!(
                refused(parts(&h, b"")),
                PartsError::HeaderValue(5, "Date".into())
            );
        }
        for (name, what) in [
            ("Via", "Via"),
            ("v", "Via"),
            ("Content-Length", "Content-Length"),
            ("l", "Content-Length"),
        ] {
            let h = with(5, (name, "1"));
            assert_eq!(refused(parts(&h, b"")), PartsError::Reserved(5, what));
        }
        for (i, what) in [(1, "From"), (2, "To"), (3, "Call-ID"), (4, "CSeq")] {
            let mut h = HEADERS.to_vec();
            h.remove(i);
            assert_eq!(refused(parts(&h, b"")), PartsError::Missing(what));
            let mut h = HEADERS.to_vec();
            h.push(HEADERS[i]);
            assert_eq!(refused(parts(&h, b"")), PartsError::Repeated(what));
        }
        for cseq in ["1 INVITE", "MESSAGE", "x MESSAGE", "1 message", ""] {
            let h = with(4, ("CSeq", cseq));
            assert_eq!(refused(parts(&h, b"")), PartsError::CSeq, "{cseq:?}");
        }
        let many: Vec<_> = HEADERS
            .iter()
            .copied()
            .chain(std::iter::repeat_n(("X", "y"), 300))
            .collect();
        assert_eq!(refused(parts(&many, b"")), PartsError::TooManyHeaders(256));
        let body = vec![b'x'; 4096];
        assert_eq!(refused(parts(HEADERS, &body)), PartsError::TooLarge(4096));
    }

    const VIA: &str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-hd00ff-1c;rport";

    /// What the core wrote before `relayed`: `Forward` with the same edits.
    fn forwarded(m: &Message, uri: Option<&str>, mf: Option<u8>) -> Message {
        let mut f = crate::build::Forward::new(m).prepend("Via", VIA);
        if let Some(n) = mf {
            f = f.max_forwards(n);
        }
        if let Some(u) = uri {
            f = f.request_uri(u);
        }
        f.build_message().unwrap()
    }

    #[test]
    fn a_relayed_request_is_the_one_forward_writes() {
        let no_mf: Vec<_> = HEADERS
            .iter()
            .copied()
            .filter(|(n, _)| *n != "Max-Forwards")
            .collect();
        let mut messages = Vec::new();
        for headers in [HEADERS, &no_mf[..]] {
            for body in [&b""[..], b"hello\r\n\r\nthere"] {
                messages.push((
                    Message::from_parts(&parts(headers, body), 65_535).unwrap(),
                    true,
                ));
            }
        }
        // Received messages too: LF line ends, compact names, a folded field, bytes past the
        // body, an extension method, an extension field.
        for raw in [
            &b"MESSAGE sip:bob@example.test SIP/2.0\r\nf: <sip:a@h>;tag=1\r\nt: <sip:bob@example.test>\r\ni: c9\r\nCSeq: 2 MESSAGE\r\nSubject: one\r\n two\r\nl: 2\r\n\r\nhiEXTRA"[..],
            b"MESSAGE sip:bob@example.test SIP/2.0\nFrom: <sip:a@h>;tag=1\nTo: <sip:bob@example.test>\nCall-ID: c9\nCSeq: 2 MESSAGE\nMax-Forwards: 9\nContent-Length: 2\n\nhi",
            b"FOO sip:bob@example.test SIP/2.0\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c9\r\nCSeq: 2 FOO\r\nX-Thing:   spaced  \r\nContent-Length: 0\r\n\r\n",
        ] {
            messages.push((Message::parse(Bytes::from_static(raw)).unwrap(), false));
        }
        let long = format!("sip:{}@192.0.2.9:5070;transport=tcp", "u".repeat(300));
        let mut fast = 0;
        for (m, built) in &messages {
            for uri in [
                None,
                Some("sip:bob@192.0.2.7:5070;transport=tcp;ob"),
                Some("sips:b@h"),
                Some(long.as_str()),
            ] {
                for mf in [None, Some(70)] {
                    let relayed = m.relayed(VIA, uri, mf);
                    if mf.is_some() && m.max_forwards().is_some() {
                        assert!(relayed.is_none(), "a Max-Forwards is never written twice");
                        continue;
                    }
                    if *built {
                        assert!(relayed.is_some(), "parts are always relayed so");
                    }
                    if let Some(r) = relayed {
                        fast += 1;
                        assert_eq!(seen(&r), seen(&forwarded(m, uri, mf)), "{uri:?} {mf:?}");
                        let parsed = Message::parse(Bytes::copy_from_slice(r.raw())).unwrap();
                        assert_eq!(seen(&r), seen(&parsed));
                    }
                }
            }
        }
        assert!(fast >= 24, "{fast}");
        // What it does not write, `Forward` does: each is `None`.
        let (m, _) = &messages[0];
        for uri in ["", "<sip:b@h>", "sip:b @h", "sip:b@h\r\nX: y", "nocolon"] {
            assert!(m.relayed(VIA, Some(uri), None).is_none(), "{uri:?}");
        }
        for via in [
            "",
            " SIP/2.0/UDP h",
            "SIP/2.0/UDP h\r\nX: y",
            "SIP/2.0/UDP h\t",
        ] {
            assert!(m.relayed(via, None, None).is_none(), "{via:?}");
        }
        let response = Message::parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert!(response.relayed(VIA, None, None).is_none());
    }

    #[test]
    fn fields_left_out_are_those_forward_dropped_and_count_towards_the_limits() {
        let control = ["Huddle-Binding", "Huddle-Answer", "Huddle-Report"];
        let is_control = |n: &str| control.iter().any(|c| c.eq_ignore_ascii_case(n));
        let mut fields = HEADERS.to_vec();
        fields.insert(2, ("Huddle-Binding", "bob@example.test/b1"));
        fields.insert(6, ("huddle-answer", " 7 "));
        fields.push(("HUDDLE-REPORT", "failures"));
        let p = parts(&fields, b"hello");
        let all = Message::from_parts(&p, 65_535).unwrap();
        let mut taken = Vec::new();
        let kept = Message::from_parts_leaving_out(&p, 65_535, |n, v| {
            let c = is_control(n);
            if c {
                taken.push((n.to_owned(), v.to_owned()));
            }
            c
        })
        .unwrap();
        assert_eq!(
            taken,
            [
                (
                    "Huddle-Binding".to_owned(),
                    "bob@example.test/b1".to_owned()
                ),
                ("huddle-answer".to_owned(), " 7 ".to_owned()),
                ("HUDDLE-REPORT".to_owned(), "failures".to_owned())
            ]
        );
        let parsed = Message::parse(Bytes::copy_from_slice(kept.raw())).unwrap();
        assert_eq!(seen(&kept), seen(&parsed));
        let control_len: usize = taken.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        assert_eq!(kept.raw().len(), all.raw().len() - control_len);
        // The wire as before: `Forward` dropping the control fields from the whole request.
        let uri = "sip:bob@192.0.2.7:5070;transport=ws";
        let mut old = crate::build::Forward::new(&all).prepend("Via", VIA);
        for c in control {
            old = old.drop_header(HeaderName::parse(c));
        }
        let old = old.request_uri(uri).build_message().unwrap();
        let new = kept.relayed(VIA, Some(uri), None).unwrap();
        assert_eq!(seen(&new), seen(&old));

        // Only extension fields are left out: a known name is written whatever the answer.
        let kept_all = Message::from_parts_leaving_out(&p, 65_535, |_, _| true).unwrap();
        let parsed = Message::parse(Bytes::copy_from_slice(kept_all.raw())).unwrap();
        assert_eq!(seen(&kept_all), seen(&parsed));
        assert_eq!(kept_all.headers().len(), 8, "{:?}", kept_all.raw());
        assert_eq!(kept_all.header(&HeaderName::parse("X-Empty")), None);

        // Refused as `from_parts` refuses: a control value with a line break, and the limits
        // count the fields left out.
        let mut bad = fields.clone();
        bad[2].1 = "b1\r\nVia: SIP/2.0/UDP evil";
        assert_eq!(
            Message::from_parts_leaving_out(&parts(&bad, b""), 65_535, |n, _| is_control(n))
                .unwrap_err(),
            PartsError::HeaderValue(2, "Huddle-Binding".into())
        );
        let len = all.raw().len();
        assert!(Message::from_parts_leaving_out(&p, len, |n, _| is_control(n)).is_ok());
        assert_eq!(
            Message::from_parts_leaving_out(&p, len - 1, |n, _| is_control(n)).unwrap_err(),
            PartsError::TooLarge(len - 1)
        );
        let many: Vec<_> = HEADERS
            .iter()
            .copied()
            .chain(std::iter::repeat_n(("Huddle-Report", "failures"), 250))
            .collect();
        assert_eq!(
            Message::from_parts_leaving_out(&parts(&many, b""), 65_535, |n, _| is_control(n))
                .unwrap_err(),
            PartsError::TooManyHeaders(256)
        );
    }

    #[test]
    fn the_size_limit_is_the_written_size() {
        let len = Message::from_parts(&parts(HEADERS, b"abc"), 65_535)
            .unwrap()
            .raw()
            .len();
        assert!(Message::from_parts(&parts(HEADERS, b"abc"), len).is_ok());
        assert_eq!(
            Message::from_parts(&parts(HEADERS, b"abc"), len - 1).unwrap_err(),
            PartsError::TooLarge(len - 1)
        );
    }

    #[test]
    fn random_parts_never_panic_and_what_is_built_reads_as_its_parse() {
        // Small alphabets with every separator the parser cares about, so that many
        // combinations are both accepted and refused.
        const BYTES: &[u8] = b"aZ09 -:;<>@\t\r\n\0\",.%~=";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let word = |next: &mut dyn FnMut(usize) -> usize| -> String {
            let len = next(6);
            (0..len).map(|_| BYTES[next(BYTES.len())] as char).collect()
        };
        let mut built = 0;
        for _ in 0..20_000 {
            let mut fields: Vec<(String, String)> = HEADERS
                .iter()
                .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            let i = next(fields.len());
            match next(3) {
                0 => fields[i].0 = word(&mut next),
                1 => fields[i].1 = word(&mut next),
                _ => fields.insert(i, (word(&mut next), word(&mut next))),
            }
            let uri = if next(4) == 0 {
                word(&mut next)
            } else {
                "sip:b@h".to_owned()
            };
            let pairs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let p = RequestParts {
                method: "MESSAGE",
                uri: &uri,
                headers: &pairs,
                body: b"x",
            };
            if let Ok(m) = Message::from_parts(&p, 65_535) {
                built += 1;
                let parsed = Message::parse(Bytes::copy_from_slice(m.raw())).unwrap();
                assert_eq!(seen(&m), seen(&parsed), "{pairs:?} {uri:?}");
            }
        }
        assert!(
            built > 1000,
            "only {built} of the random requests were built"
        );
    }
}
