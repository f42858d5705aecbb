//! Stream framing for SIP over TCP and TLS (RFC 3261 §18.3), with RFC 5626 §3.5.1 keep-alives.
//!
//! A byte stream carries SIP messages back to back. A message ends after its header block
//! (terminated by an empty line) plus exactly `Content-Length` body bytes, so over a stream
//! `Content-Length` is mandatory. [`StreamDecoder`] is sans-IO: the driver appends whatever it
//! read ([`StreamDecoder::push`], or reads straight into [`StreamDecoder::buffer_mut`]) and then
//! calls [`StreamDecoder::next_frame`] until it returns `Ok(None)`:
//!
//! ```
//! use huddle_sip::framing::{Frame, StreamDecoder};
//!
//! let mut decoder = StreamDecoder::new(65_535);
//! decoder.push(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhi");
//! assert_eq!(decoder.next_frame(), Ok(Some(Frame::KeepAlive { pong_needed: true })));
//! let Ok(Some(Frame::Message(msg))) = decoder.next_frame() else { panic!() };
//! assert!(msg.ends_with(b"\r\n\r\nhi"));
//! assert_eq!(decoder.next_frame(), Ok(None));
//! ```
//!
//! Invariants:
//! - Only framing is decided here. The start line and the other headers are not validated; the
//!   message parser does that. The decoder only reads header lines to find `Content-Length`.
//! - Memory is bounded: as soon as the message being assembled provably exceeds
//!   `max_message_size` (a header block without its end within the limit, or headers plus the
//!   declared body over it) [`FramingError::TooLarge`] is returned. A driver that drains
//!   `next_frame` after every read therefore never holds more than the limit plus one read.
//! - Header scanning resumes where it stopped, so a message trickling in byte by byte costs
//!   linear time; completed messages are split off the buffer without copying.
//! - Errors are sticky: once the stream is out of sync nothing later in it can be trusted, and
//!   every further call returns the same error. The driver closes the connection.

use bytes::{Bytes, BytesMut};

/// What a stream decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole SIP message: start line, headers, empty line and exactly `Content-Length`
    /// body bytes. Not validated beyond that.
    Message(Bytes),
    /// An RFC 5626 §3.5.1 keep-alive between messages. A double CRLF is a ping and must be
    /// answered with a single CRLF (`pong_needed`); a lone CRLF is a pong, or a stray line end
    /// RFC 3261 §7.5 says to ignore.
    KeepAlive {
        /// The peer sent a ping (CRLFCRLF) and waits for a CRLF pong.
        pong_needed: bool,
    },
}

/// Why a byte stream cannot be framed. The connection cannot be resynchronised after any of
/// these; the driver closes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The header block, or the header block plus the declared body, is larger than the
    /// configured limit. Maps to `513 Message Too Large` where the caller can still answer.
    #[error("message larger than the {limit} byte limit")]
    TooLarge {
        /// The configured maximum message size.
        limit: usize,
        /// Header block plus declared body, when the headers were complete.
        declared: Option<usize>,
    },
    /// The header block has no `Content-Length` (or `l`) header, which a stream requires.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// More than one `Content-Length` header.
    #[error("more than one Content-Length header")]
    DuplicateContentLength,
    /// A `Content-Length` header carrying a comma-separated list of values.
    #[error("Content-Length holds a list of values")]
    ContentLengthList,
    /// A `Content-Length` value that is not `1*DIGIT` (empty, signed, or with other characters).
    #[error("Content-Length is not a non-negative decimal number")]
    InvalidContentLength,
    /// A `Content-Length` value too big to represent.
    #[error("Content-Length overflows")]
    ContentLengthOverflow,
}

/// Incremental decoder for one direction of one SIP stream connection.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    max_message_size: usize,
    state: State,
    failed: Option<FramingError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: leading CR/LF are keep-alives.
    Idle,
    /// Inside a header block; everything before `scanned` holds no complete terminator.
    Headers { scanned: usize },
    /// Headers parsed; the message is complete once `total` bytes are buffered.
    Body { total: usize },
}

impl StreamDecoder {
    /// A decoder that refuses messages (header block plus body) longer than `max_message_size`.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_message_size,
            state: State::Idle,
            failed: None,
        }
    }

    /// The configured limit.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, so a driver can read into it without an intermediate copy. Only
    /// append to it (e.g. `AsyncReadExt::read_buf`); consumed bytes are removed by
    /// [`next_frame`](Self::next_frame).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when no partial message is buffered (a clean place for the stream to end).
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle && self.buf.is_empty()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn decode(&mut self) -> Result<Option<Frame>, FramingError> {
        loop {
            match self.state {
                State::Idle => {
                    if let Some(frame) = self.skip_keepalive() {
                        return Ok(frame);
                    }
                    // A message starts here.
                    self.state = State::Headers { scanned: 0 };
                }
                State::Headers { scanned } => match find_header_end(&self.buf, scanned) {
                    Scan::Incomplete { resume } => {
                        if self.buf.len() >= self.max_message_size {
                            // The terminator, wherever it is, ends past the limit.
                            return Err(self.too_large(None));
                        }
                        self.state = State::Headers { scanned: resume };
                        return Ok(None);
                    }
                    Scan::Found { end } => {
                        if end > self.max_message_size {
                            return Err(self.too_large(None));
                        }
                        let body = content_length(&self.buf[..end])?;
                        let total = end
                            .checked_add(body)
                            .ok_or(FramingError::ContentLengthOverflow)?;
                        if total > self.max_message_size {
                            return Err(self.too_large(Some(total)));
                        }
                        self.state = State::Body { total };
                    }
                },
                State::Body { total } => {
                    if self.buf.len() < total {
                        return Ok(None);
                    }
                    self.state = State::Idle;
                    let message = self.buf.split_to(total).freeze();
                    return Ok(Some(Frame::Message(message)));
                }
            }
        }
    }

    /// Consumes line ends before a message. `None` means a message starts at the front of the
    /// buffer; `Some(None)` means more bytes are needed to tell.
    fn skip_keepalive(&mut self) -> Option<Option<Frame>> {
        loop {
            match *self.buf {
                [] => return Some(None),
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    let _ = self.buf.split_to(4);
                    return Some(Some(Frame::KeepAlive { pong_needed: true }));
                }
                // Could still become a CRLFCRLF ping.
                [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Some(None),
                [b'\r', b'\n', ..] => {
                    let _ = self.buf.split_to(2);
                    return Some(Some(Frame::KeepAlive { pong_needed: false }));
                }
                // Bare LF or CR: tolerated and ignored (RFC 3261 §7.5).
                [b'\n' | b'\r', ..] => {
                    let _ = self.buf.split_to(1);
                }
                _ => return None,
            }
        }
    }

    fn too_large(&self, declared: Option<usize>) -> FramingError {
        FramingError::TooLarge {
            limit: self.max_message_size,
            declared,
        }
    }
}

enum Scan {
    /// Index just past the empty line that ends the header block.
    Found { end: usize },
    /// No terminator yet; resume scanning at this index.
    Incomplete { resume: usize },
}

/// Finds the end of the header block: a line end followed by an empty line. CRLF is the rule,
/// bare LF is tolerated (`\n\n`, `\n\r\n`, which also covers `\r\n\r\n`).
fn find_header_end(buf: &[u8], from: usize) -> Scan {
    let mut pos = from;
    while let Some(i) = find_byte(b'\n', &buf[pos..]).map(|i| pos + i) {
        match buf.get(i + 1) {
            None => return Scan::Incomplete { resume: i },
            Some(b'\n') => return Scan::Found { end: i + 2 },
            Some(b'\r') => match buf.get(i + 2) {
                None => return Scan::Incomplete { resume: i },
                Some(b'\n') => return Scan::Found { end: i + 3 },
                Some(_) => pos = i + 1,
            },
            Some(_) => pos = i + 1,
        }
    }
    Scan::Incomplete { resume: buf.len() }
}

/// Position of the first `needle` in `haystack`, a word at a time (no `memchr` dependency in
/// this crate, and the header scan is the hot loop of a stream connection).
fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = LO.wrapping_mul(u64::from(needle));
    let mut chunks = haystack.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks_exact yields 8 bytes"));
        let x = word ^ pattern;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            // Some byte in this word matches; find which.
            return chunk.iter().position(|&b| b == needle).map(|i| offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| offset + i)
}

/// Extracts the body length from a complete header block (start line included).
fn content_length(block: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    let mut lines = Lines {
        rest: block,
        skipped_start: false,
    };
    while let Some((first, continuation)) = lines.next_header() {
        let Some(colon) = find_byte(b':', first) else {
            continue; // Not a header line; the message parser will say so.
        };
        let name = trim_end(&first[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        if found.is_some() {
            return Err(FramingError::DuplicateContentLength);
        }
        found = Some(parse_length(&first[colon + 1..], continuation)?);
    }
    found.ok_or(FramingError::MissingContentLength)
}

/// Header lines of a header block, unfolded: each item is a header's first line and the raw
/// bytes of its continuation lines (lines starting with SP or HTAB).
struct Lines<'a> {
    rest: &'a [u8],
    skipped_start: bool,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match find_byte(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn next_header(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        if !self.skipped_start {
            self.skipped_start = true;
            self.next_line()?;
        }
        loop {
            let line = self.next_line()?;
            if line.is_empty() {
                return None; // The empty line ending the block.
            }
            if matches!(line[0], b' ' | b'\t') {
                continue; // Folded onto a header we are not interested in (or the start line).
            }
            let continuation_start = self.rest;
            let mut consumed = 0;
            while matches!(self.rest.first(), Some(b' ' | b'\t')) {
                let before = self.rest.len();
                self.next_line();
                consumed += before - self.rest.len();
            }
            return Some((line, &continuation_start[..consumed]));
        }
    }
}

/// Parses `SWS 1*DIGIT SWS` where the value may continue on folded lines (folding is LWS).
fn parse_length(first: &[u8], continuation: &[u8]) -> Result<usize, FramingError> {
    let mut value: Option<usize> = None;
    let mut digits_done = false;
    for &b in first.iter().chain(continuation) {
        match b {
            b'0'..=b'9' if !digits_done => {
                let digit = usize::from(b - b'0');
                let next = value
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(digit))
                    .ok_or(FramingError::ContentLengthOverflow)?;
                value = Some(next);
            }
            b' ' | b'\t' | b'\r' | b'\n' => digits_done = value.is_some(),
            b',' => return Err(FramingError::ContentLengthList),
            _ => return Err(FramingError::InvalidContentLength),
        }
    }
    value.ok_or(FramingError::InvalidContentLength)
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65_535;

    fn msg(body: &str) -> String {
        format!(
            "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/TCP a.test;branch=z9hG4bK1\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn drain(d: &mut StreamDecoder) -> Result<Vec<Frame>, FramingError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    fn decode_all(input: &[u8], max: usize) -> Result<Vec<Frame>, FramingError> {
        let mut d = StreamDecoder::new(max);
        d.push(input);
        drain(&mut d)
    }

    fn message(s: &str) -> Frame {
        Frame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Feeds `input` split at every offset, and byte by byte, and checks the frames are the
    /// same as decoding it in one piece.
    fn check_every_split(input: &[u8], expected: &[Frame]) {
        assert_eq!(decode_all(input, MAX).unwrap(), expected);
        for split in 0..=input.len() {
            let mut d = StreamDecoder::new(MAX);
            d.push(&input[..split]);
            let mut frames = drain(&mut d).unwrap();
            d.push(&input[split..]);
            frames.extend(drain(&mut d).unwrap());
            assert_eq!(frames, expected, "split at {split}");
        }
        let mut d = StreamDecoder::new(MAX);
        let mut frames = Vec::new();
        for b in input {
            d.push(std::slice::from_ref(b));
            frames.extend(drain(&mut d).unwrap());
        }
        assert_eq!(frames, expected, "byte by byte");
        assert!(d.is_idle());
    }

    #[test]
    fn single_message_every_split() {
        let m = msg("hello");
        check_every_split(m.as_bytes(), &[message(&m)]);
    }

    #[test]
    fn pipelined_messages_every_split() {
        let a = msg("first");
        let b = msg("");
        let c = msg("third body\r\n\r\nwith blank lines inside");
        let all = format!("{a}{b}{c}");
        check_every_split(all.as_bytes(), &[message(&a), message(&b), message(&c)]);
    }

    #[test]
    fn keepalives_between_messages() {
        let a = msg("x");
        let input = format!("\r\n\r\n{a}\r\n\r\n\r\n{a}\r\n");
        let ping = Frame::KeepAlive { pong_needed: true };
        let pong = Frame::KeepAlive { pong_needed: false };
        let mut d = StreamDecoder::new(MAX);
        d.push(input.as_bytes());
        assert_eq!(
            drain(&mut d).unwrap(),
            [ping.clone(), message(&a), ping, pong, message(&a)]
        );
        // The trailing lone CRLF waits: it could be the first half of a ping.
        assert_eq!(d.buffered(), 2);
        d.push(b"INVITE");
        assert_eq!(
            d.next_frame(),
            Ok(Some(Frame::KeepAlive { pong_needed: false }))
        );
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn keepalive_every_split() {
        let a = msg("x");
        let input = format!("\r\n\r\n\r\n\r\n{a}");
        let ping = Frame::KeepAlive { pong_needed: true };
        check_every_split(input.as_bytes(), &[ping.clone(), ping, message(&a)]);
    }

    #[test]
    fn bare_line_ends_are_tolerated() {
        let m = "OPTIONS sip:a@b SIP/2.0\nl: 3\n\nabc";
        assert_eq!(decode_all(m.as_bytes(), MAX).unwrap(), [message(m)]);
        let m = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\n\r\n";
        assert_eq!(decode_all(m.as_bytes(), MAX).unwrap(), [message(m)]);
        // Stray LF before a message is skipped silently.
        let m = "OPTIONS sip:a@b SIP/2.0\nl: 0\n\n";
        let input = format!("\n\n{m}");
        assert_eq!(decode_all(input.as_bytes(), MAX).unwrap(), [message(m)]);
        check_every_split(m.as_bytes(), &[message(m)]);
    }

    #[test]
    fn content_length_spellings() {
        for header in [
            "Content-Length: 4",
            "content-length:4",
            "CONTENT-LENGTH   :   4   ",
            "l: 4",
            "L:\t4",
            "Content-Length:\r\n 4",
            "Content-Length: \r\n\t  4 \r\n ",
            "Content-Length: 0004",
        ] {
            let m = format!(
                "MESSAGE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n{header}\r\nCall-ID: x\r\n\r\nbody"
            );
            assert_eq!(
                decode_all(m.as_bytes(), MAX).unwrap(),
                [message(&m)],
                "{header:?}"
            );
        }
    }

    #[test]
    fn lookalike_headers_do_not_count() {
        let m = "MESSAGE sip:a@b SIP/2.0\r\nX-Content-Length: 9\r\nLength: 9\r\n\
                 Subject: a\r\n l: 9\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(decode_all(m.as_bytes(), MAX).unwrap(), [message(m)]);
        // The start line is not a header even when it looks like one.
        let m = "l: 9\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(decode_all(m.as_bytes(), MAX).unwrap(), [message(m)]);
    }

    #[test]
    fn content_length_errors() {
        let cases: &[(&str, FramingError)] = &[
            ("Call-ID: x", FramingError::MissingContentLength),
            (
                "Content-Length: 1\r\nl: 1",
                FramingError::DuplicateContentLength,
            ),
            (
                "Content-Length: 1\r\nContent-Length: 1",
                FramingError::DuplicateContentLength,
            ),
            ("Content-Length: 1, 1", FramingError::ContentLengthList),
            ("Content-Length: 1,2", FramingError::ContentLengthList),
            ("Content-Length: -1", FramingError::InvalidContentLength),
            ("Content-Length: +1", FramingError::InvalidContentLength),
            ("Content-Length: 1a", FramingError::InvalidContentLength),
            ("Content-Length: 0x10", FramingError::InvalidContentLength),
            ("Content-Length: 1 2", FramingError::InvalidContentLength),
            (
                "Content-Length: 1\r\n 2",
                FramingError::InvalidContentLength,
            ),
            ("Content-Length:", FramingError::InvalidContentLength),
            ("Content-Length: ", FramingError::InvalidContentLength),
            (
                "Content-Length: 99999999999999999999999999",
                FramingError::ContentLengthOverflow,
            ),
        ];
        for (header, expected) in cases {
            let m = format!("INVITE sip:a@b SIP/2.0\r\n{header}\r\n\r\n");
            let mut d = StreamDecoder::new(MAX);
            d.push(m.as_bytes());
            assert_eq!(d.next_frame().as_ref(), Err(expected), "{header:?}");
            // Sticky.
            d.push(msg("").as_bytes());
            assert_eq!(d.next_frame().as_ref(), Err(expected), "{header:?}");
        }
        // Nothing but a start line and the empty line.
        assert_eq!(
            decode_all(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", MAX),
            Err(FramingError::MissingContentLength)
        );
    }

    #[test]
    fn too_large_declared_body() {
        let m = "INVITE sip:a@b SIP/2.0\r\nContent-Length: 1000\r\n\r\n";
        assert_eq!(
            decode_all(m.as_bytes(), 1000),
            Err(FramingError::TooLarge {
                limit: 1000,
                declared: Some(m.len() + 1000)
            })
        );
        // Exactly at the limit is fine.
        // A three-digit length makes the header block one byte shorter.
        let body = "b".repeat(1000 - (m.len() - 1));
        let m = format!(
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(m.len(), 1000);
        assert_eq!(decode_all(m.as_bytes(), 1000).unwrap(), [message(&m)]);
        // Overflow of header length + body length.
        let m = format!(
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n",
            usize::MAX
        );
        assert_eq!(
            decode_all(m.as_bytes(), 1000),
            Err(FramingError::ContentLengthOverflow)
        );
    }

    #[test]
    fn too_large_header_block_is_detected_without_buffering_more() {
        let max = 1024;
        let mut d = StreamDecoder::new(max);
        d.push(b"INVITE sip:a@b SIP/2.0\r\n");
        let filler = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut result = Ok(None);
        while d.buffered() < 10 * max {
            d.push(filler);
            result = d.next_frame();
            if result.is_err() {
                break;
            }
            assert_eq!(result, Ok(None));
        }
        assert_eq!(
            result,
            Err(FramingError::TooLarge {
                limit: max,
                declared: None
            })
        );
        assert!(d.buffered() <= max + filler.len());
    }

    #[test]
    fn header_block_ending_exactly_at_limit() {
        let m = "OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n";
        assert_eq!(decode_all(m.as_bytes(), m.len()).unwrap(), [message(m)]);
        assert_eq!(
            decode_all(m.as_bytes(), m.len() - 1),
            Err(FramingError::TooLarge {
                limit: m.len() - 1,
                declared: None
            })
        );
    }

    #[test]
    fn big_invite_body() {
        // SIPml5 INVITEs carry 5-7 KB of SDP.
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        let mut i = 0;
        while sdp.len() < 6500 {
            sdp.push_str(&format!(
                "a=candidate:{i} 1 udp 2122260223 192.0.2.{} 5{i:04} typ host generation 0\r\n",
                i % 250
            ));
            i += 1;
        }
        let invite = format!(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/TCP a.invalid;branch=z9hG4bKx\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let two = format!("{invite}{invite}");
        check_every_split(two.as_bytes(), &[message(&invite), message(&invite)]);
        // Too big for a small limit, refused before the body arrives.
        let mut d = StreamDecoder::new(4096);
        d.push(&invite.as_bytes()[..200]);
        assert!(matches!(
            d.next_frame(),
            Err(FramingError::TooLarge { declared: Some(n), .. }) if n == invite.len()
        ));
    }

    #[test]
    fn messages_share_the_buffer_without_copying() {
        let a = msg("abc");
        let mut d = StreamDecoder::new(MAX);
        d.push(format!("{a}{a}").as_bytes());
        let Ok(Some(Frame::Message(first))) = d.next_frame() else {
            panic!("expected a message")
        };
        assert_eq!(&first[..], a.as_bytes());
        assert_eq!(d.buffered(), a.len());
    }

    #[test]
    fn find_byte_matches_naive() {
        let hay: Vec<u8> = (0..=255u8).cycle().take(600).collect();
        for needle in [0u8, 1, 10, 13, 127, 128, 255] {
            for start in 0..40 {
                let naive = hay[start..].iter().position(|&b| b == needle);
                assert_eq!(find_byte(needle, &hay[start..]), naive);
            }
        }
        assert_eq!(find_byte(b'\n', b""), None);
        assert_eq!(find_byte(b'\n', b"abcdefghijklmnop"), None);
        assert_eq!(
            find_byte(b'\x80', b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x80"),
            Some(8)
        );
    }
}
