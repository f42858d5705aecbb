//! The message parser: start line, header field lines (with folding), Content-Length framing.
//!
//! Fatal problems (no start line, a malformed response status line, no end of headers, too many
//! header fields) are a [`ParseError`]: the message cannot be answered and is dropped, or its
//! connection closed. Problems that still allow an answer are recorded as a
//! [`super::Defect`] and answered `400` by validation.

use std::sync::Arc;

use bytes::Bytes;

use super::{Defect, Header, HeaderName, Message, Method, Span, StartLine};
use crate::syntax;

/// Parser limits; the transports already cap the message size.
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Header field lines accepted before the message is dropped.
    pub max_headers: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_headers: 256 }
    }
}

/// Why a message could not be parsed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but white space.
    #[error("empty message")]
    Empty,
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("start line is neither a request nor a response")]
    BadStartLine,
    /// A Status-Line whose code is not three digits between 100 and 699.
    #[error("malformed Status-Line")]
    BadStatusLine,
    /// No blank line ends the header section.
    #[error("header section is not terminated")]
    Unterminated,
    /// More header fields than [`ParseLimits::max_headers`].
    #[error("too many header fields")]
    TooManyHeaders,
}

fn find_byte(hay: &[u8], from: usize, needle: u8) -> Option<usize> {
    memchr::memchr(needle, hay.get(from..)?).map(|i| i + from)
}

/// Returns (content end, next line start) for the line starting at `pos`.
fn line_at(raw: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = find_byte(raw, pos, b'\n')?;
    let end = if nl > pos && raw[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

pub(super) fn parse(raw: Bytes, limits: &ParseLimits) -> Result<Message, ParseError> {
    // Nearly every message is UTF-8 throughout its header section: check that once, as a whole,
    // and only when it is not go through the fields one by one to find and skip the bad ones.
    // The passes borrow the bytes: cloning a `Bytes` made from a `Vec` (every datagram) would
    // allocate its shared header just for the first pass.
    let (layout, head) = match parse_fields(&raw, limits, false) {
        Ok(layout) => match super::head_text(&raw, layout.headers_end) {
            Some(head) => (layout, Some(head)),
            None => (parse_fields(&raw, limits, true)?, None),
        },
        Err(_) => (parse_fields(&raw, limits, true)?, None),
    };
    let head = head.or_else(|| super::head_text(&raw, layout.headers_end));
    Ok(layout.into_message(raw, head))
}

/// [`parse`] of bytes whose reader already holds them as text (a WebSocket text message, which
/// its transport checks to be UTF-8 before anything else): `text` becomes the message's text,
/// so the header section is neither checked nor copied again. Bytes that are not `text` are
/// parsed by [`parse`]. Bytes made from the text's allocation are recognised by their address;
/// others cost a full comparison, which for a large body can cost more than the check it
/// spares.
pub(super) fn parse_text(
    raw: Bytes,
    text: Arc<str>,
    limits: &ParseLimits,
) -> Result<Message, ParseError> {
    // The same memory is the same bytes (a transport that made `raw` from the text's own
    // allocation); anything else is compared in full before the text is trusted.
    let same =
        (raw.as_ptr() == text.as_ptr() && raw.len() == text.len()) || raw[..] == *text.as_bytes();
    if !same {
        return parse(raw, limits);
    }
    // All of it is UTF-8, so the pass that checks field by field would find what this one does.
    let layout = parse_fields(&raw, limits, false)?;
    Ok(layout.into_message(raw, Some(text)))
}

/// What one parsing pass found: everything of a [`Message`] but its bytes and header text.
struct Layout {
    start: StartLine,
    start_line_end: usize,
    headers: Vec<Header>,
    headers_end: usize,
    body: Span,
    defect: Option<Defect>,
}

impl Layout {
    fn into_message(self, raw: Bytes, head: Option<Arc<str>>) -> Message {
        Message::from_fields(super::Fields {
            head,
            body: self.body,
            raw,
            start: self.start,
            start_line_end: self.start_line_end as u32,
            headers: self.headers,
            headers_end: self.headers_end as u32,
            defect: self.defect,
            views: Default::default(),
        })
    }
}

/// One parsing pass; `check_fields` validates each header field as UTF-8 (skipping and
/// recording [`Defect::HeaderNotUtf8`] for one that is not), for a header section that is not
/// UTF-8 as a whole.
fn parse_fields(
    bytes: &[u8],
    limits: &ParseLimits,
    check_fields: bool,
) -> Result<Layout, ParseError> {
    // Leading CRLFs are keep-alives or stray terminators (RFC 3261 §7.5).
    let mut pos = 0;
    while pos < bytes.len() && (bytes[pos] == b'\r' || bytes[pos] == b'\n') {
        pos += 1;
    }
    if pos == bytes.len() {
        return Err(ParseError::Empty);
    }
    let (line_end, mut next) = line_at(bytes, pos).ok_or(ParseError::Unterminated)?;
    let line = std::str::from_utf8(&bytes[pos..line_end]).map_err(|_| ParseError::BadStartLine)?;
    let mut defect = None;
    let start = if line.starts_with("SIP/") {
        parse_status_line(line, pos)?
    } else {
        let (start, d) = parse_request_line(line, pos)?;
        defect = d;
        start
    };
    let start_line_end = next;

    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let mut content_length: Option<Result<usize, Defect>> = None;
    let body_start;
    loop {
        let (content_end, mut after) = line_at(bytes, next).ok_or(ParseError::Unterminated)?;
        if content_end == next {
            body_start = after;
            break;
        }
        let line_start = next;
        let mut value_end = content_end;
        // Continuation lines start with SP or HTAB (RFC 3261 §7.3.1).
        while after < bytes.len() && (bytes[after] == b' ' || bytes[after] == b'\t') {
            let (cont_end, cont_next) = line_at(bytes, after).ok_or(ParseError::Unterminated)?;
            value_end = cont_end;
            after = cont_next;
        }
        next = after;
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let field = &bytes[line_start..value_end];
        if check_fields && std::str::from_utf8(field).is_err() {
            defect.get_or_insert(Defect::HeaderNotUtf8);
            continue;
        }
        // The name is the token before the colon, white space allowed before the colon only.
        // One pass over the name finds its end and checks it (`:` is not a token character, so
        // this is "up to the first colon, trailing SP/HTAB trimmed, all token characters");
        // token characters are ASCII: the name needs no UTF-8 pass.
        let name_end = field
            .iter()
            .position(|&b| !syntax::is_token_char(b))
            .unwrap_or(field.len());
        let colon = name_end
            + field[name_end..]
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .unwrap_or(field.len() - name_end);
        if name_end == 0 || field.get(colon) != Some(&b':') {
            defect.get_or_insert(Defect::MalformedHeaderLine);
            continue;
        }
        let name_bytes = &field[..name_end];

        let mut value_start = line_start + colon + 1;
        while value_start < value_end && syntax::is_lws(bytes[value_start]) {
            value_start += 1;
        }
        let mut trimmed_end = value_end;
        while trimmed_end > value_start && syntax::is_lws(bytes[trimmed_end - 1]) {
            trimmed_end -= 1;
        }
        let name = HeaderName::known(name_bytes).unwrap_or_else(|| {
            HeaderName::Other(std::str::from_utf8(name_bytes).unwrap_or("").into())
        });
        if name == HeaderName::ContentLength {
            let text = std::str::from_utf8(&bytes[value_start..trimmed_end]).unwrap_or("");
            content_length = Some(match content_length {
                Some(_) => Err(Defect::MultipleContentLength),
                None if text.contains(',') => Err(Defect::MultipleContentLength),
                None => parse_content_length(text),
            });
        }
        headers.push(Header {
            name,
            line: Span::new(line_start, next),
            value: Span::new(value_start, trimmed_end),
        });
    }

    let available = bytes.len() - body_start;
    let body_len = match content_length {
        None => available,
        Some(Ok(n)) if n <= available => n,
        Some(Ok(_)) => {
            defect.get_or_insert(Defect::ContentLengthExceedsMessage);
            available
        }
        Some(Err(d)) => {
            defect.get_or_insert(d);
            available
        }
    };
    let headers_end = body_start - if bytes[body_start - 2] == b'\r' { 2 } else { 1 };
    Ok(Layout {
        start,
        start_line_end,
        headers,
        headers_end,
        body: Span::new(body_start, body_start + body_len),
        defect,
    })
}

fn parse_content_length(text: &str) -> Result<usize, Defect> {
    syntax::parse_u32(text)
        .map(|n| n as usize)
        .ok_or(Defect::BadContentLength)
}

fn parse_status_line(line: &str, offset: usize) -> Result<StartLine, ParseError> {
    let rest = line.get(8..).ok_or(ParseError::BadStatusLine)?;
    if !line[..8].eq_ignore_ascii_case("SIP/2.0 ") {
        return Err(ParseError::BadStatusLine);
    }
    let code_text = rest.get(..3).ok_or(ParseError::BadStatusLine)?;
    let after = &rest[3..];
    if !code_text.bytes().all(|b| b.is_ascii_digit())
        || !(after.is_empty() || after.starts_with(' '))
    {
        return Err(ParseError::BadStatusLine);
    }
    let code: u16 = code_text.parse().map_err(|_| ParseError::BadStatusLine)?;
    if !(100..=699).contains(&code) {
        return Err(ParseError::BadStatusLine);
    }
    let reason_start = offset + 8 + 3 + usize::from(!after.is_empty());
    Ok(StartLine::Response {
        code,
        reason: Span::new(reason_start, offset + line.len()),
    })
}

pub(super) fn parse_request_line(
    line: &str,
    offset: usize,
) -> Result<(StartLine, Option<Defect>), ParseError> {
    // Searched by byte: the separators are ASCII, so every offset found is a character
    // boundary, and `str` patterns (a char searcher per call) cost several hundred
    // instructions per line.
    // The method is the token before the first space: one pass finds its end and checks it
    // (a space is not a token character, so a line whose first non-token byte is not a space
    // has no token before its first space).
    let b = line.as_bytes();
    let first_sp = b
        .iter()
        .position(|&c| !syntax::is_token_char(c))
        .unwrap_or(b.len());
    if first_sp == 0 || b.get(first_sp) != Some(&b' ') {
        return Err(ParseError::BadStartLine);
    }
    let method_text = &line[..first_sp];
    let method = Method::parse(method_text);
    let rest = &line[first_sp + 1..];
    let mut defect = None;
    // Exactly `Method SP Request-URI SP SIP-Version`: extra spaces anywhere are a defect.
    let (uri_text, version_text) = match memchr::memrchr(b' ', rest.as_bytes()) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let version_ok = version_text.len() >= 7
        && version_text.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/")
        && is_version_number(&version_text.as_bytes()[4..]);
    let uri = uri_text.as_bytes();
    if !version_ok || uri.is_empty() || memchr::memchr2(b' ', b'\t', uri).is_some() {
        defect = Some(Defect::MalformedRequestLine);
    } else if uri[0] == b'<' || memchr::memchr(b':', uri).is_none() {
        defect = Some(Defect::MalformedRequestUri);
    }
    let uri_start = offset + first_sp + 1;
    let version_start =
        uri_start + uri_text.len() + usize::from(!version_text.is_empty() || rest.ends_with(' '));
    Ok((
        StartLine::Request {
            method,
            uri: Span::new(uri_start, uri_start + uri_text.len()),
            version: Span::new(version_start.min(offset + line.len()), offset + line.len()),
        },
        defect,
    ))
}

/// `1*DIGIT "." 1*DIGIT`, split at the first dot.
fn is_version_number(v: &[u8]) -> bool {
    match memchr::memchr(b'.', v) {
        Some(dot) => {
            let (major, minor) = (&v[..dot], &v[dot + 1..]);
            !major.is_empty()
                && !minor.is_empty()
                && major.iter().all(u8::is_ascii_digit)
                && minor.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::NameAddr;

    fn parse(text: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn request_with_body_and_folding() {
        let m = parse(
            "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1;rport\r\nSubject: a\r\n  b\r\nl: 5\r\n\r\nhello trailing",
        )
        .unwrap();
        assert_eq!(m.method(), Some(&Method::Message));
        assert_eq!(m.request_uri(), Some("sip:bob@example.test"));
        assert_eq!(m.header(&HeaderName::Subject), Some("a\r\n  b"));
        assert_eq!(m.body(), b"hello");
        assert_eq!(m.defect(), None);
        assert_eq!(m.branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn the_kept_first_contact_reads_as_a_fresh_parse() {
        for contact in [
            "",
            "Contact: \"A, b\" <sip:a@h;transport=ws>;expires=60;+sip.instance=\"<urn:x>\"\r\n",
            "m: sip:a@h;q=0.5, <sip:b@h>\r\nContact: <sip:c@h>\r\n",
            "Contact: *\r\n",
            "Contact: <sip:a@h\r\n",
            "Contact:  <sip:a@h>\r\n  ;expires=5\r\n",
        ] {
            let m = parse(&format!(
                "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{contact}l: 0\r\n\r\n"
            ))
            .unwrap();
            let texts: Vec<&str> = m.header_list(&HeaderName::Contact).collect();
            let fresh = texts.first().map(|t| NameAddr::parse(t));
            // Twice: the second read comes from what the first kept.
            assert_eq!(m.first_contact(), fresh, "{contact:?}");
            assert_eq!(m.first_contact(), fresh, "{contact:?}");
            for (i, text) in texts.iter().enumerate() {
                assert_eq!(
                    m.contact_at(i, text),
                    NameAddr::parse(text),
                    "{contact:?} {i}"
                );
            }
        }
    }

    #[test]
    fn field_names_read_as_the_colon_rule() {
        // The rule the one-pass scan replaces: up to the first colon, trailing SP/HTAB
        // trimmed, a non-empty token.
        fn by_the_colon(field: &str) -> Option<(&str, &str)> {
            let colon = field.find(':')?;
            let name = field[..colon].trim_end_matches([' ', '\t']);
            (!name.is_empty() && name.bytes().all(syntax::is_token_char))
                .then(|| (name, syntax::trim_lws(&field[colon + 1..])))
        }
        let mut fields: Vec<String> = [
            "Via: SIP/2.0/UDP h",
            "Via : x",
            "Via\t \t:x",
            "Via:",
            ":x",
            " : x",
            "V ia: x",
            "Via;: x",
            "Via",
            "Via x",
            "X-Ü: y",
            "ÜVia: y",
            "Via:: y",
            "a:b:c",
            "Call-ID:  id@h  ",
            "!%*_+`'~-.ab09: v",
            "To\x0b: v",
        ]
        .iter()
        .map(|f| f.to_string())
        .collect();
        // Every byte before, in and after a name, then the colon.
        for b in (0u8..0x80).filter(|&b| b != b'\r' && b != b'\n') {
            let c = b as char;
            fields.push(format!("{c}Via: v"));
            fields.push(format!("Vi{c}a: v"));
            fields.push(format!("Via{c}: v"));
            fields.push(format!("Via {c}: v"));
        }
        for field in &fields {
            let m = parse(&format!(
                "OPTIONS sip:a@b SIP/2.0\r\n{field}\r\nl: 0\r\n\r\n"
            ))
            .unwrap();
            let got = m
                .headers()
                .iter()
                .filter(|h| h.name != HeaderName::ContentLength)
                .count();
            match by_the_colon(field) {
                Some((name, value)) => {
                    assert_eq!(m.defect(), None, "{field:?}");
                    assert_eq!(got, 1, "{field:?}");
                    assert_eq!(m.header(&HeaderName::parse(name)), Some(value), "{field:?}");
                }
                None => {
                    assert_eq!(m.defect(), Some(Defect::MalformedHeaderLine), "{field:?}");
                    assert_eq!(got, 0, "{field:?}");
                }
            }
        }
    }

    #[test]
    fn response_lines() {
        let m = parse("SIP/2.0 100 \r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(100));
        assert_eq!(m.reason(), Some(""));
        assert_eq!(
            parse("SIP/2.0 4294967301 better not break\r\n\r\n").unwrap_err(),
            ParseError::BadStatusLine
        );
    }

    #[test]
    fn request_lines_read_as_the_str_rules() {
        // The rules as first written with `str` patterns, against the byte searches.
        fn by_str(line: &str) -> Option<(usize, usize, bool, Option<Defect>)> {
            let first_sp = line.find(' ')?;
            if !syntax::is_token(&line[..first_sp]) {
                return None;
            }
            let rest = &line[first_sp + 1..];
            let (uri_text, version_text) = match rest.rfind(' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let version_ok = version_text.len() >= 7
                && version_text
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
                && version_text
                    .get(4..)
                    .and_then(|v| v.split_once('.'))
                    .is_some_and(|(a, b)| {
                        !a.is_empty()
                            && !b.is_empty()
                            && a.bytes().all(|c| c.is_ascii_digit())
                            && b.bytes().all(|c| c.is_ascii_digit())
                    });
            let defect = if !version_ok || uri_text.is_empty() || uri_text.contains([' ', '\t']) {
                Some(Defect::MalformedRequestLine)
            } else if uri_text.starts_with('<') || !uri_text.contains(':') {
                Some(Defect::MalformedRequestUri)
            } else {
                None
            };
            Some((first_sp, uri_text.len(), version_text.is_empty(), defect))
        }
        let mut lines: Vec<String> = [
            "INVITE sip:a@b SIP/2.0",
            "INVITE sip:a@b sip/2.0",
            "INVITE sip:a@b SIP/2.0.1",
            "INVITE sip:a@b SIP/.0",
            "INVITE sip:a@b SIP/2.",
            "INVITE sip:a@b SIP/22",
            "INVITE sip:a@b SIP/2.x",
            "INVITE sip:a@b SIÜ/2.0",
            "INVITE sip:a@b ÜSIP/2.0",
            "INVITE sip:a@b SIP/2.0Ü",
            "INVITE sip:a@b",
            "INVITE ",
            "INVITE  ",
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b\t SIP/2.0",
            "INVITE <sip:a@b> SIP/2.0",
            "INVITE ab SIP/2.0",
            "INVITE Ü:ab SIP/2.0",
            "IN(VITE sip:a@b SIP/2.0",
            "INVITE",
            "",
            " sip:a@b SIP/2.0",
        ]
        .iter()
        .map(|l| l.to_string())
        .collect();
        for c in ['.', ' ', '\t', ':', '<', 'Ü', '1'] {
            for base in ["INVITE sip:a@b SIP/2.0", "OPTIONS sip:x SIP/10.20"] {
                for i in 0..=base.len() {
                    let mut l = base.to_owned();
                    l.insert(i, c);
                    lines.push(l);
                }
            }
        }
        for line in &lines {
            let got = parse_request_line(line, 3).ok().map(|(start, defect)| {
                let StartLine::Request { uri, version, .. } = start else {
                    panic!("{line:?}");
                };
                (
                    uri.start as usize - 3 - 1,
                    uri.len(),
                    version.is_empty(),
                    defect,
                )
            });
            assert_eq!(got, by_str(line), "{line:?}");
        }
    }

    #[test]
    fn request_line_defects() {
        for (line, defect) in [
            ("INVITE  sip:a@b  SIP/2.0", Defect::MalformedRequestLine),
            ("INVITE sip:a@b; lr SIP/2.0", Defect::MalformedRequestLine),
            ("OPTIONS sip:a@b SIP/2.0 ", Defect::MalformedRequestLine),
            ("INVITE <sip:a@b> SIP/2.0", Defect::MalformedRequestUri),
        ] {
            let m = parse(&format!("{line}\r\nl: 0\r\n\r\n")).unwrap();
            assert_eq!(m.defect(), Some(defect), "{line}");
        }
    }

    #[test]
    fn content_length_defects() {
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n").unwrap();
        assert_eq!(m.defect(), Some(Defect::BadContentLength));
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx").unwrap();
        assert_eq!(m.defect(), Some(Defect::MultipleContentLength));
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nl: 10\r\n\r\nx").unwrap();
        assert_eq!(m.defect(), Some(Defect::ContentLengthExceedsMessage));
    }

    #[test]
    fn header_not_utf8_is_skipped_and_the_rest_still_reads() {
        let mut raw = b"OPTIONS sip:a@b SIP/2.0\r\nSubject: ok\r\nX-Bad: ".to_vec();
        raw.extend_from_slice(&[0xff, 0xfe]);
        raw.extend_from_slice("\r\nTo: <sip:ü@b>\r\nl: 2\r\n\r\nhi".as_bytes());
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.defect(), Some(Defect::HeaderNotUtf8));
        assert_eq!(m.header(&HeaderName::Subject), Some("ok"));
        assert_eq!(m.header(&HeaderName::To), Some("<sip:ü@b>"));
        assert_eq!(m.header_count(&HeaderName::Other("X-Bad".into())), 0);
        assert_eq!(m.body(), b"hi");
        // The same message without the bad field is read through the validated header text.
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:ü@b>\r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(m.defect(), None);
        assert_eq!(m.header(&HeaderName::To), Some("<sip:ü@b>"));
        assert_eq!(m.request_uri(), Some("sip:a@b"));
    }

    #[test]
    fn request_uri_view_reads_as_the_uri_parser() {
        use crate::uri::SipUri;
        for line in [
            "REGISTER sip:example.test SIP/2.0",
            "INVITE sip:bob@example.test:5070;transport=udp?subject=x SIP/2.0",
            "INVITE sips:user;par=u%40example.net@[::1]:5061;lr SIP/2.0",
            "INVITE sip:a@b? SIP/2.0",
            "INVITE tel:+1 SIP/2.0",
            "INVITE sip:@b SIP/2.0",
        ] {
            let m = parse(&format!("{line}\r\nl: 0\r\n\r\n")).unwrap();
            let expected = SipUri::parse(m.request_uri().unwrap());
            assert_eq!(m.request_sip_uri(), Some(expected), "{line}");
            // Read twice: the second comes from the memoised offsets.
            assert_eq!(m.request_sip_uri(), Some(expected), "{line}");
        }
        // Header text that is not UTF-8: offsets are into the raw bytes.
        let mut raw = b"OPTIONS sip:a@b;lr SIP/2.0\r\nX-Bad: ".to_vec();
        raw.extend_from_slice(&[0xff, 0xfe]);
        raw.extend_from_slice(b"\r\nl: 0\r\n\r\n");
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(m.request_sip_uri(), Some(SipUri::parse("sip:a@b;lr")));
        assert_eq!(
            parse("SIP/2.0 200 OK\r\n\r\n").unwrap().request_sip_uri(),
            None
        );
    }

    /// Everything a reader can see of a message, for comparing two parses of one text.
    fn seen(m: &Message) -> String {
        let values: Vec<&str> = m.headers().iter().map(|h| m.text(h.value)).collect();
        let lines: Vec<&str> = m.headers().iter().map(|h| m.text(h.line)).collect();
        let index = m.index_fields().map(|f| f.collect::<Vec<_>>());
        format!(
            "{:?} {:?} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} \
             {:?} {:?} {:?}",
            m.raw(),
            m.start_line(),
            m.start_line_end(),
            m.headers_end(),
            m.headers(),
            m.defect(),
            m.body(),
            m.body_span(),
            values,
            lines,
            m.request_uri(),
            m.reason(),
            m.top_via(),
            m.from_header(),
            m.to_header(),
            m.first_contact(),
            m.cseq(),
            m.request_sip_uri(),
            m.branch(),
            index,
            m.relayed("SIP/2.0/UDP p;branch=z9hG4bKp", Some("sip:x@y"), Some(9)),
        )
    }

    #[test]
    fn text_handed_over_parses_as_the_bytes_do() {
        let register = "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/WSS df7.invalid;branch=z9hG4bK1;rport\r\nMax-Forwards: 70\r\nTo: <sip:a@h>\r\nFrom: \"Ä\" <sip:a@h>;tag=t1\r\nCall-ID: c1\r\nCSeq: 2 REGISTER\r\nContact: <sip:x@df7.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";expires=600\r\nContent-Length: 0\r\n\r\n";
        let mut texts = vec![
            register.to_string(),
            format!("\r\n\r\n{register}"),
            register.replace("\r\n", "\n"),
            "MESSAGE sip:bob@h SIP/2.0\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bK2\r\nSubject: a\r\n  b\r\nl: 7\r\n\r\nhé 😀trailing".into(),
            "MESSAGE sip:bob@h SIP/2.0\r\nl: 3\r\n\r\nh\u{e9}".into(),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bK2\r\nCSeq: 1 MESSAGE\r\n\r\n".into(),
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n: x\r\nbad line\r\nl: 1\r\nl: 1\r\n\r\nx".into(),
            "INVITE  sip:a@b  SIP/2.0\r\nl: 0\r\n\r\n".into(),
            "INVITE sip:a@b SIP/2.0\r\nVia: x\r\n".into(),
            "SIP/2.0 99 no\r\n\r\n".into(),
            "\r\n\r\n".into(),
            String::new(),
            format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "X: y\r\n".repeat(300)),
        ];
        let prefixes: Vec<String> = (0..=register.len())
            .filter_map(|i| register.get(..i).map(String::from))
            .collect();
        texts.extend(prefixes);
        /// Bytes that are the text's own allocation (as the WebSocket transport makes them).
        struct Shared(Arc<str>);
        impl AsRef<[u8]> for Shared {
            fn as_ref(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }
        for text in &texts {
            let raw = Bytes::copy_from_slice(text.as_bytes());
            let by_bytes = Message::parse(raw.clone());
            let shared: Arc<str> = Arc::from(text.as_str());
            let by_text = Message::parse_text(raw, Arc::from(text.as_str()));
            let by_shared =
                Message::parse_text(Bytes::from_owner(Shared(Arc::clone(&shared))), shared);
            for by in [&by_text, &by_shared] {
                match (&by_bytes, by) {
                    (Ok(a), Ok(b)) => assert_eq!(seen(a), seen(b), "{text:?}"),
                    (a, b) => assert_eq!(a.as_ref().err(), b.as_ref().err(), "{text:?}"),
                }
            }
        }
        // Text that is not the bytes: the bytes are what is parsed, whatever the text says.
        let mut bad = register.as_bytes().to_vec();
        bad.splice(30..30, [0xff, 0xfe]);
        for (raw, text) in [
            (Bytes::from(bad), register),
            (
                Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"),
                register,
            ),
            (Bytes::copy_from_slice(register.as_bytes()), "x"),
        ] {
            let by_bytes = Message::parse(raw.clone()).map(|m| seen(&m));
            let by_text = Message::parse_text(raw, Arc::from(text)).map(|m| seen(&m));
            assert_eq!(by_bytes, by_text);
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        let full =
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nl: 3\r\n\r\nabc";
        for i in 0..=full.len() {
            let _ = parse(&full[..i]);
        }
    }
}
