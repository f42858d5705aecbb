//! A message assembled from bytes and an index of them made by another parse of the same bytes
//! (the plugin host hands its index across the plugin ABI with the request, so the plugin does
//! not split the header section again).
//!
//! The index is not trusted: every span is checked to lie inside the bytes, in order, on the
//! boundaries a parse would have found (each field line ends with a line feed, starts where
//! the previous one ended, names a token before its colon; the blank line ends the header
//! section; each value is the trimmed rest of its line; the body is what Content-Length says).
//! An index that fails any check gives `None` and the caller parses the bytes instead, so a
//! wrong index costs a parse, never a panic or a message that reads outside its bytes. What is
//! not checked again is the inside of each value (folded continuation lines are taken as the
//! index says): the host that made the index parsed these bytes with this parser.

use bytes::Bytes;

use super::{parse, Header, HeaderName, Message, Span, StartLine};
use crate::syntax;

/// One header field as an index gives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSpans {
    /// The whole field, continuation lines and line terminator included.
    pub line: Span,
    /// The value with surrounding white space trimmed.
    pub value: Span,
}

/// Where a request's parts lie in its bytes, as a parse found them.
#[derive(Debug, Clone, Copy)]
pub struct MessageIndex<'a> {
    /// Just after the start line's terminator.
    pub start_line_end: u32,
    /// Every header field, in order.
    pub fields: &'a [FieldSpans],
    /// Where the blank line that ends the header section starts.
    pub headers_end: u32,
    /// The body.
    pub body: Span,
}

/// More fields than [`super::ParseLimits`]' default is no index a parse made.
const MAX_FIELDS: usize = 256;

impl Message {
    /// A request from its bytes and an index of them (see the module docs); `None` when the
    /// index does not fit the bytes, or they are not a request without defects: parse them then.
    pub fn from_index(raw: Bytes, index: &MessageIndex<'_>) -> Option<Message> {
        let len = raw.len();
        let start_line_end = index.start_line_end as usize;
        let headers_end = index.headers_end as usize;
        let (body_start, body_end) = (index.body.start as usize, index.body.end as usize);
        if index.fields.len() > MAX_FIELDS
            || start_line_end > headers_end
            || body_start > body_end
            || body_end > len
        {
            return None;
        }
        // The blank line: CRLF (or a bare LF, as the parser accepts) right before the body.
        match raw.get(headers_end..body_start)? {
            b"\r\n" | b"\n" => {}
            _ => return None,
        }
        let head = super::head_text(&raw, headers_end)?;

        // The Request-Line, after the keep-alive line breaks a parse skips.
        let pos = head.bytes().position(|b| b != b'\r' && b != b'\n')?;
        if start_line_end <= pos || head.as_bytes()[start_line_end - 1] != b'\n' {
            return None;
        }
        let line = head.get(pos..start_line_end - 1)?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\n') {
            return None;
        }
        let (start @ StartLine::Request { .. }, None) =
            parse::parse_request_line(line, pos).ok()?
        else {
            return None;
        };

        let bytes = head.as_bytes();
        let mut headers = Vec::with_capacity(index.fields.len());
        let mut next = start_line_end;
        let mut content_length = None;
        for field in index.fields {
            let (line_start, line_end) = (field.line.start as usize, field.line.end as usize);
            let (value_start, value_end) = (field.value.start as usize, field.value.end as usize);
            if line_start != next
                || line_end > headers_end
                || value_start > value_end
                || value_end > line_end
                || line_end <= line_start
                || bytes[line_end - 1] != b'\n'
            {
                return None;
            }
            // `line_start < value_start`: the name and its colon come before the value.
            let before = bytes.get(line_start..value_start)?;
            // A name and its colon: a few bytes, where a plain search costs less than
            // `memchr`'s dispatch (~130 instructions a field).
            let colon = before.iter().position(|&b| b == b':')?;
            if !before[colon + 1..].iter().all(|&b| syntax::is_lws(b)) {
                return None;
            }
            // The value is the trimmed rest of the line, as a parse cuts it: white space (the
            // line terminator included) after it and none at either of its ends. Otherwise
            // an index could cut `Content-Length: 25` to `2`, or hand on a value with its CRLF.
            let value = &bytes[value_start..value_end];
            if !bytes[value_end..line_end]
                .iter()
                .all(|&b| syntax::is_lws(b))
                || value.first().is_some_and(|&b| syntax::is_lws(b))
                || value.last().is_some_and(|&b| syntax::is_lws(b))
            {
                return None;
            }
            let name_bytes = &before[..colon];
            let name_len = name_bytes
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(0, |i| i + 1);
            let name_bytes = &name_bytes[..name_len];
            // Every name `known` accepts is a token (a test holds it to that): only the others
            // are checked byte by byte.
            let known = HeaderName::known(name_bytes);
            debug_assert!(
                known.is_none() || name_bytes.iter().all(|&b| syntax::is_token_char(b)),
                "{name_bytes:?}"
            );
            if name_bytes.is_empty()
                || (known.is_none() && !name_bytes.iter().all(|&b| syntax::is_token_char(b)))
            {
                return None;
            }
            let name = known.unwrap_or_else(|| {
                HeaderName::Other(std::str::from_utf8(name_bytes).unwrap_or("").into())
            });
            if name == HeaderName::ContentLength {
                if content_length.is_some() {
                    return None;
                }
                let text = head.get(value_start..value_end)?;
                content_length = Some(syntax::parse_u32(text)? as usize);
            }
            headers.push(Header {
                name,
                line: field.line,
                value: field.value,
            });
            next = line_end;
        }
        if next != headers_end {
            return None;
        }
        let body_len = content_length.unwrap_or(len - body_start);
        if Some(body_end) != body_start.checked_add(body_len) {
            return None;
        }
        Some(Message::from_fields(super::Fields {
            head: Some(head),
            raw,
            start,
            start_line_end: start_line_end as u32,
            headers,
            headers_end: headers_end as u32,
            body: index.body,
            defect: None,
            views: Default::default(),
        }))
    }

    /// The body's place in the bytes.
    pub fn body_span(&self) -> Span {
        self.m.body
    }

    /// This message's header fields as an index, for [`Message::from_index`] on another copy
    /// of its bytes (with [`Message::start_line_end`], [`Message::headers_end`] and
    /// [`Message::body_span`]); `None` for a response or a message with a defect (those are
    /// parsed).
    pub fn index_fields(&self) -> Option<impl ExactSizeIterator<Item = FieldSpans> + '_> {
        if !self.is_request() || self.m.defect.is_some() || self.m.head.is_none() {
            return None;
        }
        Some(self.m.headers.iter().map(|h| FieldSpans {
            line: h.line,
            value: h.value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "\r\nMESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nSubject: a\r\n folded\r\nX-Thing:  v \r\nCall-ID: m1\r\nCSeq: 7 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhitrailing";

    fn index_of(msg: &Message) -> (Vec<FieldSpans>, u32, u32, Span) {
        (
            msg.index_fields().unwrap().collect(),
            msg.start_line_end() as u32,
            msg.headers_end() as u32,
            msg.m.body,
        )
    }

    fn rebuild(
        raw: &'static [u8],
        fields: &[FieldSpans],
        sle: u32,
        he: u32,
        body: Span,
    ) -> Option<Message> {
        Message::from_index(
            Bytes::from_static(raw),
            &MessageIndex {
                start_line_end: sle,
                fields,
                headers_end: he,
                body,
            },
        )
    }

    #[test]
    fn an_index_gives_the_message_a_parse_gives() {
        let parsed = Message::parse(Bytes::from_static(MESSAGE.as_bytes())).unwrap();
        let (fields, sle, he, body) = index_of(&parsed);
        let m = rebuild(MESSAGE.as_bytes(), &fields, sle, he, body).unwrap();
        assert_eq!(m.start_line(), parsed.start_line());
        assert_eq!(m.headers(), parsed.headers());
        assert_eq!(m.body(), b"hi");
        assert_eq!(m.request_uri(), Some("sip:bob@example.test"));
        assert_eq!(
            m.header(&HeaderName::parse("subject")),
            parsed.header(&HeaderName::Subject)
        );
        assert_eq!(m.header(&HeaderName::parse("x-thing")), Some("v"));
        assert_eq!(m.from_header().unwrap().tag(), Some("a1"));
        assert_eq!(m.cseq().unwrap().seq, 7);
        assert_eq!(m.headers_end(), parsed.headers_end());
    }

    #[test]
    fn names_are_checked_whether_known_or_not() {
        let parsed = Message::parse(Bytes::from_static(MESSAGE.as_bytes())).unwrap();
        let (fields, sle, he, body) = index_of(&parsed);
        // The same layout with the name written otherwise: a known name in another case, an
        // unknown token, and names that are not tokens.
        for (name, ok) in [
            ("SUBJECT", true),
            ("sUbJeCt", true),
            ("X-Subjx", true),
            ("Subj@ct", false),
            ("Sub ect", false),
            ("Subje\u{e9}", false),
        ] {
            let text = MESSAGE.replacen("Subject", name, 1);
            assert_eq!(text.len(), MESSAGE.len());
            let raw: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
            let rebuilt = rebuild(raw, &fields, sle, he, body);
            assert_eq!(rebuilt.is_some(), ok, "{name}");
            if let Some(m) = rebuilt {
                let fresh = Message::parse(Bytes::from_static(raw)).unwrap();
                assert_eq!(m.headers(), fresh.headers(), "{name}");
            }
        }
    }

    #[test]
    fn a_wrong_index_is_refused_never_read() {
        let parsed = Message::parse(Bytes::from_static(MESSAGE.as_bytes())).unwrap();
        let (fields, sle, he, body) = index_of(&parsed);
        let raw = MESSAGE.as_bytes();
        let len = raw.len() as u32;
        let refused = |f: &[FieldSpans], sle: u32, he: u32, body: Span| {
            rebuild(raw, f, sle, he, body).is_none()
        };
        // Every span moved by one byte either way, one at a time.
        for i in 0..fields.len() {
            for delta in [-1i64, 1] {
                let shift = |v: u32| (i64::from(v) + delta).clamp(0, i64::from(u32::MAX)) as u32;
                let mut f = fields.clone();
                f[i].line.start = shift(f[i].line.start);
                assert!(
                    refused(&f, sle, he, body),
                    "line start of field {i} {delta:+}"
                );
                let mut f = fields.clone();
                f[i].line.end = shift(f[i].line.end);
                assert!(
                    refused(&f, sle, he, body),
                    "line end of field {i} {delta:+}"
                );
                let mut f = fields.clone();
                f[i].value.start = shift(f[i].value.start);
                f[i].value.end = shift(f[i].value.end);
                assert!(refused(&f, sle, he, body), "value of field {i} {delta:+}");
            }
        }
        assert!(refused(&fields[1..], sle, he, body), "a field left out");
        assert!(
            refused(&fields[..fields.len() - 1], sle, he, body),
            "the last field left out"
        );
        assert!(refused(&fields, sle + 1, he, body));
        assert!(refused(&fields, sle - 1, he, body));
        assert!(refused(&fields, sle, he + 1, body));
        assert!(refused(&fields, sle, he - 2, body));
        assert!(
            refused(
                &fields,
                sle,
                he,
                Span {
                    start: body.start,
                    end: len
                }
            ),
            "body beyond Content-Length"
        );
        assert!(refused(
            &fields,
            sle,
            he,
            Span {
                start: body.start,
                end: len + 1
            }
        ));
        assert!(refused(
            &fields,
            sle,
            he,
            Span {
                start: u32::MAX,
                end: u32::MAX
            }
        ));
        assert!(refused(&fields, u32::MAX, u32::MAX, body));
        let wild = [FieldSpans {
            line: Span {
                start: sle,
                end: u32::MAX,
            },
            value: Span {
                start: u32::MAX - 1,
                end: u32::MAX,
            },
        }];
        assert!(refused(&wild, sle, he, body));
        assert!(refused(&[], sle, he, body));
        assert!(
            rebuild(raw, &fields, sle, he, body).is_some(),
            "the right index still fits"
        );
    }

    #[test]
    fn a_value_cut_short_is_refused() {
        const RAW: &str = "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKy\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 12\r\n\r\nhello world!";
        let parsed = Message::parse(Bytes::from_static(RAW.as_bytes())).unwrap();
        let (fields, sle, he, body) = index_of(&parsed);
        assert!(rebuild(RAW.as_bytes(), &fields, sle, he, body)
            .is_some_and(|m| m.body() == b"hello world!"));
        // `Content-Length: 12` read as `1`, the body cut to one byte to match.
        let last = fields.len() - 1;
        let mut cut = fields.clone();
        cut[last].value.end -= 1;
        let one = Span {
            start: body.start,
            end: body.start + 1,
        };
        assert!(rebuild(RAW.as_bytes(), &cut, sle, he, one).is_none());
        // A value that takes its line terminator along.
        let mut with_crlf = fields.clone();
        with_crlf[last].value.end += 2;
        assert!(rebuild(RAW.as_bytes(), &with_crlf, sle, he, body).is_none());
    }

    #[test]
    fn random_indexes_never_panic() {
        let parsed = Message::parse(Bytes::from_static(MESSAGE.as_bytes())).unwrap();
        let (good, sle, he, body) = index_of(&parsed);
        let len = MESSAGE.len() as u64 + 3;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % bound) as u32
        };
        for _ in 0..20_000 {
            let mut f = good.clone();
            // Mostly the right index with a few spans replaced, so that checks deep in the
            // loop are reached too.
            for _ in 0..=next(3) {
                let i = next(f.len() as u64) as usize;
                let s = &mut f[i];
                match next(4) {
                    0 => s.line.start = next(len),
                    1 => s.line.end = next(len),
                    2 => s.value.start = next(len),
                    _ => s.value.end = next(len),
                }
            }
            let b = Span {
                start: body.start,
                end: if next(8) == 0 { next(len) } else { body.end },
            };
            if let Some(m) = rebuild(MESSAGE.as_bytes(), &f, sle, he, b) {
                let _ = m
                    .headers()
                    .iter()
                    .map(|h| m.text(h.value).len())
                    .sum::<usize>();
                let _ = (
                    m.body().len(),
                    m.from_header().is_ok(),
                    m.to_header().is_ok(),
                    m.top_via().is_ok(),
                );
            }
        }
    }

    #[test]
    fn responses_and_defective_messages_have_no_index() {
        let resp = Message::parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert!(resp.index_fields().is_none());
        let bad = Message::parse(Bytes::from_static(
            b"MESSAGE sip:b@x SIP/2.0\r\nbad line\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert!(bad.defect().is_some());
        assert!(bad.index_fields().is_none());
    }

    #[test]
    fn a_message_without_content_length_runs_to_the_end() {
        let raw: &'static [u8] =
            b"OPTIONS sip:b@x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\nbody";
        let parsed = Message::parse(Bytes::from_static(raw)).unwrap();
        let (fields, sle, he, body) = index_of(&parsed);
        let m = rebuild(raw, &fields, sle, he, body).unwrap();
        assert_eq!(m.body(), b"body");
        assert_eq!(m.headers(), parsed.headers());
    }
}
