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
        let max_headers = ParseLimits::default().max_headers;
        // Content-Length is one of the fields.
        if parts.headers.len() + 1 > max_headers {
            return Err(PartsError::TooManyHeaders(max_headers));
        }
        if !syntax::is_token(parts.method) {
            return Err(PartsError::Method);
        }
        let uri = parts.uri.as_bytes();
        if uri.is_empty()
            || uri[0] == b'<'
            || memchr::memchr(b':', uri).is_none()
            || has_any(uri, |b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0))
        {
            return Err(PartsError::RequestUri);
        }
        // The exact size, so nothing is written (or regrown) before the size check.
        let mut len = parts.method.len() + 1 + uri.len() + " SIP/2.0\r\n".len();
        for (name, value) in parts.headers {
            len += name.len() + 2 + value.len() + 2;
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
        let mut head = String::with_capacity(len);
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
            if !syntax::is_token(name) {
                return Err(PartsError::HeaderName(i));
            }
            if has_any(value.as_bytes(), |b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(PartsError::HeaderValue(i, name.to_owned()));
            }
            let known = HeaderName::known(name.as_bytes());
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
        let message = Message {
            raw: raw.into(),
            head: Some(head_text),
            start,
            start_line_end: start_line_end as u32,
            headers,
            headers_end: headers_end as u32,
            body,
            defect: None,
            views: Views::default(),
        };
        // The CSeq's number and method, read as every later reader reads them.
        let cseq_ok = cseq_at.is_some()
            && message
                .cseq()
                .is_ok_and(|c| c.method.as_str() == parts.method);
        if !cseq_ok {
            return Err(PartsError::CSeq);
        }
        Ok(message)
    }
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
