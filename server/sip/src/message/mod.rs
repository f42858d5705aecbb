//! The SIP message model: one received (or built) message kept as its original bytes plus the
//! offsets of its start line, header fields and body. Nothing is copied at parse time; typed
//! views (Via, CSeq, name-addr, URI) are parsed on demand from the original text, so a proxy can
//! forward every byte it does not touch unchanged.

mod built;
mod header_name;
mod indexed;
mod parse;

pub use built::{PartsError, RequestParts};
pub use header_name::HeaderName;
pub use indexed::{FieldSpans, MessageIndex};
pub use parse::{ParseError, ParseLimits};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::headers::{CSeq, HeaderError, NameAddr, Via, ViaFound};
use crate::syntax;
use crate::uri::{Scheme, SipUri, UriError};

/// A byte range into a message's raw bytes. `u32` keeps [`Header`] small; messages are far
/// smaller than 4 GiB because transports cap them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    /// The range as `usize` offsets.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    /// Length in bytes.
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// A SIP method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    Ack,
    Bye,
    Cancel,
    Info,
    Invite,
    Message,
    Notify,
    Options,
    Prack,
    Publish,
    Refer,
    Register,
    Subscribe,
    Update,
    /// An extension method, as written.
    Other(Box<str>),
}

impl Method {
    /// Parses a method token (the caller has checked it is a token).
    pub fn parse(s: &str) -> Method {
        match s {
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "INFO" => Method::Info,
            "INVITE" => Method::Invite,
            "MESSAGE" => Method::Message,
            "NOTIFY" => Method::Notify,
            "OPTIONS" => Method::Options,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "UPDATE" => Method::Update,
            other => Method::Other(other.into()),
        }
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Info => "INFO",
            Method::Invite => "INVITE",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
            Method::Options => "OPTIONS",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`.
    Request {
        method: Method,
        uri: Span,
        /// `SIP/x.y` as written; anything but 2.0 is answered 505 by validation.
        version: Span,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response { code: u16, reason: Span },
}

/// One header field line (with its continuation lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    /// The whole field including its line terminator, for byte-exact copying and removal.
    pub line: Span,
    /// The value with surrounding white space trimmed; may contain folded line breaks.
    pub value: Span,
}

/// A syntax problem that still lets Huddle answer: the headers were split, so a `400` with the
/// fault in its reason phrase can be built (RFC 4475 §3.1.2 expects exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Defect {
    /// The Request-Line is not `Method SP Request-URI SP SIP-Version` with single spaces.
    MalformedRequestLine,
    /// The Request-URI is enclosed in `<>` or contains white space.
    MalformedRequestUri,
    /// A header line has no colon or its name is not a token.
    MalformedHeaderLine,
    /// Header text is not UTF-8.
    HeaderNotUtf8,
    /// Content-Length is not a non-negative decimal number.
    BadContentLength,
    /// More than one Content-Length header or value.
    MultipleContentLength,
    /// Content-Length is larger than the bytes received.
    ContentLengthExceedsMessage,
}

impl Defect {
    /// The reason phrase of the `400` this defect is answered with.
    pub fn reason(self) -> &'static str {
        match self {
            Defect::MalformedRequestLine => "Bad Request - Malformed Request-Line",
            Defect::MalformedRequestUri => "Bad Request - Malformed Request-URI",
            Defect::MalformedHeaderLine => "Bad Request - Malformed Header Line",
            Defect::HeaderNotUtf8 => "Bad Request - Header Not UTF-8",
            Defect::BadContentLength => "Bad Request - Invalid Content-Length",
            Defect::MultipleContentLength => "Bad Request - Multiple Content-Length",
            Defect::ContentLengthExceedsMessage => "Bad Request - Content-Length Exceeds Message",
        }
    }
}

/// A parsed SIP message.
///
/// One pointer: what it holds (~400 bytes, most of it the kept views) is boxed. A received
/// message is moved about eight times on its way up (the transaction layer's event queue, the
/// core's handlers, the proxy's context), and each move of the whole struct was a `memcpy` of
/// its size: ~600 instructions a message, against one allocation (~110) for the box.
#[derive(Clone)]
pub struct Message {
    m: Box<Fields>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.m.fmt(f)
    }
}

/// What a [`Message`] holds.
#[derive(Debug, Clone)]
struct Fields {
    raw: Bytes,
    /// `raw[..headers_end]` as text (or all of `raw`, when its reader had it as text already:
    /// [`Message::parse_text`]), validated once when the message was parsed or written, so
    /// that reading a header does not validate its bytes again. `None` when some header field
    /// is not UTF-8 ([`Defect::HeaderNotUtf8`]); spans are then validated one by one.
    head: Option<Arc<str>>,
    start: StartLine,
    /// End of the start line including its terminator.
    start_line_end: u32,
    headers: Vec<Header>,
    /// Where the blank line that ends the header section starts.
    headers_end: u32,
    body: Span,
    defect: Option<Defect>,
    /// The typed views every layer asks for (validation, transactions, registrar, proxy),
    /// parsed on first use and kept as offsets: each used to be parsed again by every caller.
    views: Views,
}

/// Memoised parses of From, To, the top Via, the Request-URI and the first Contact, as offsets
/// into the message.
#[derive(Debug, Clone, Default)]
struct Views {
    /// Where the first field of each known name is.
    first: FirstFields,
    from: Memo<4>,
    to: Memo<4>,
    top_via: Memo<7>,
    request_uri: Memo<5>,
    first_contact: Memo<4>,
    /// Read two or three times a message (validation, the transaction key, the registrar, the
    /// proxy's loop hash, metrics), ~200 instructions a parse.
    cseq: Memo<2>,
    /// The From and To tags (`None` kept too): the transaction key, the proxy's loop hash and
    /// dialog checks and the response builder each looked for `tag` among the parameters.
    from_tag: Memo<1>,
    to_tag: Memo<1>,
}

/// One memoised view, as words written by whichever reader parsed it first.
///
/// Not a `OnceLock`: its first fill (a compare-and-swap, the closure called through `Once`,
/// a swap and a waiter check) cost about 150 instructions, five times per message. Here a
/// fill is plain stores: parsing is a pure function of the message's bytes, so two threads
/// racing to fill a view write the same words, and a reader that sees `ready` (acquire) sees
/// the words stored before it (release). Only `Ok` parses are kept; an error (a malformed
/// message, answered and dropped) is parsed again when asked for again, with the same result.
#[derive(Debug)]
struct Memo<const N: usize> {
    ready: AtomicBool,
    words: [AtomicU64; N],
}

impl<const N: usize> Default for Memo<N> {
    fn default() -> Self {
        Memo {
            ready: AtomicBool::new(false),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const N: usize> Clone for Memo<N> {
    fn clone(&self) -> Self {
        let memo = Memo::default();
        if let Some(words) = self.get() {
            memo.set(words);
        }
        memo
    }
}

impl<const N: usize> Memo<N> {
    fn get(&self) -> Option<[u64; N]> {
        self.ready
            .load(Ordering::Acquire)
            .then(|| std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed)))
    }

    /// One kept word, without loading the others.
    #[inline]
    fn word(&self, i: usize) -> Option<u64> {
        self.ready
            .load(Ordering::Acquire)
            .then(|| self.words[i].load(Ordering::Relaxed))
    }

    fn set(&self, words: [u64; N]) {
        for (slot, word) in self.words.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        self.ready.store(true, Ordering::Release);
    }

    /// The kept view rebuilt by `rebuild`, or what `parse` makes of the message: on the first
    /// read the parsed value itself (rebuilding it from the words just kept cost ~100
    /// instructions a view), its words kept when `Ok`.
    #[inline]
    fn read<T: Words<N>, V, E>(
        &self,
        parse: impl FnOnce() -> Result<(V, T), E>,
        rebuild: impl FnOnce(T) -> V,
    ) -> Result<V, E> {
        if let Some(words) = self.get() {
            return Ok(rebuild(T::from_words(words)));
        }
        let (value, view) = parse()?;
        self.set(view.to_words());
        Ok(value)
    }

    /// The kept view, or what `parse` makes of the message (kept when `Ok`).
    fn get_or_parse<T: Words<N>, E>(&self, parse: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if let Some(words) = self.get() {
            return Ok(T::from_words(words));
        }
        let view = parse()?;
        self.set(view.to_words());
        Ok(view)
    }
}

/// Where the first field of each known header name is, one byte per name ([`HeaderName::slot`]):
/// 0 for none, else one more than its index, 255 for 254 or later (then the search starts
/// there). Made on the first lookup by name, in one pass over the fields: without it every
/// lookup compared each field's name until it found one (about 20 lookups a request, several of
/// names the request does not carry), ~1.5k instructions a REGISTER. Filled as [`Memo`] is.
#[derive(Debug, Clone, Default)]
struct FirstFields {
    words: Memo<FIRST_WORDS>,
    /// A bit per known name ([`HeaderName::slot`]) carried by more than one field, found by
    /// the same pass: validation's check of the fields that must appear once reads it instead
    /// of going through the fields again.
    repeated: Memo<1>,
}

const FIRST_WORDS: usize = HeaderName::KNOWN.div_ceil(8);
// `FirstFields::repeated` has a bit per slot.
const _: () = assert!(HeaderName::KNOWN <= 64);

impl FirstFields {
    /// Where the search for `name` in `headers` starts, `None` when no field carries it.
    #[inline]
    fn start(&self, headers: &[Header], name: &HeaderName) -> Option<usize> {
        let Some(slot) = name.slot() else {
            return Some(0);
        };
        let word = match self.words.word(slot / 8) {
            Some(word) => word,
            None => self.fill(headers).0[slot / 8],
        };
        match (word >> (slot % 8 * 8)) as u8 {
            0 => None,
            at => Some(usize::from(at) - 1),
        }
    }

    /// The bits of [`FirstFields::repeated`].
    fn repeated(&self, headers: &[Header]) -> u64 {
        match self.repeated.word(0) {
            Some(bits) => bits,
            None => self.fill(headers).1,
        }
    }

    /// Goes through the fields once and keeps what it found: the words of `words` and the
    /// bits of `repeated`.
    fn fill(&self, headers: &[Header]) -> ([u64; FIRST_WORDS], u64) {
        let mut first = [0u8; FIRST_WORDS * 8];
        let mut repeated = 0u64;
        for (i, h) in headers.iter().enumerate() {
            if let Some(slot) = h.name.slot() {
                if first[slot] == 0 {
                    first[slot] = u8::try_from(i + 1).unwrap_or(u8::MAX);
                } else {
                    repeated |= 1 << slot;
                }
            }
        }
        let words = std::array::from_fn(|w| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&first[w * 8..w * 8 + 8]);
            u64::from_le_bytes(bytes)
        });
        // The positions first: a reader that sees `repeated` set sees them too (the release
        // of one follows the other's).
        self.words.set(words);
        self.repeated.set([repeated]);
        (words, repeated)
    }
}

/// A view's offsets as `N` words, for [`Memo`].
trait Words<const N: usize>: Sized {
    fn to_words(&self) -> [u64; N];
    fn from_words(words: [u64; N]) -> Self;
}

/// No span of a message (capped far below 4 GiB) starts and ends at `u32::MAX`.
const NO_SPAN: u64 = u64::MAX;

fn span_word(s: Span) -> u64 {
    (u64::from(s.start) << 32) | u64::from(s.end)
}

fn word_span(w: u64) -> Span {
    Span {
        start: (w >> 32) as u32,
        end: w as u32,
    }
}

fn opt_span_word(s: Option<Span>) -> u64 {
    s.map_or(NO_SPAN, span_word)
}

fn word_opt_span(w: u64) -> Option<Span> {
    (w != NO_SPAN).then(|| word_span(w))
}

const HAS_PORT: u64 = 1 << 16;
const FLAG_A: u64 = 1 << 17;

fn port_word(port: Option<u16>) -> u64 {
    port.map_or(0, |p| HAS_PORT | u64::from(p))
}

fn word_port(w: u64) -> Option<u16> {
    (w & HAS_PORT != 0).then_some(w as u16)
}

impl Words<4> for NameAddrSpans {
    fn to_words(&self) -> [u64; 4] {
        [
            opt_span_word(self.display),
            span_word(self.uri),
            span_word(self.params),
            if self.bracketed { FLAG_A } else { 0 },
        ]
    }
    fn from_words(w: [u64; 4]) -> Self {
        NameAddrSpans {
            display: word_opt_span(w[0]),
            uri: word_span(w[1]),
            params: word_span(w[2]),
            bracketed: w[3] & FLAG_A != 0,
        }
    }
}

const FLAG_B: u64 = 1 << 18;

impl Words<7> for ViaSpans {
    fn to_words(&self) -> [u64; 7] {
        let rport = if self.rport.is_some() { FLAG_A } else { 0 };
        let more = if self.more { FLAG_B } else { 0 };
        [
            span_word(self.transport),
            span_word(self.host),
            span_word(self.params),
            opt_span_word(self.branch),
            port_word(self.port) | rport | more,
            opt_span_word(self.rport.flatten()),
            span_word(self.element),
        ]
    }
    fn from_words(w: [u64; 7]) -> Self {
        ViaSpans {
            transport: word_span(w[0]),
            host: word_span(w[1]),
            params: word_span(w[2]),
            branch: word_opt_span(w[3]),
            port: word_port(w[4]),
            rport: (w[4] & FLAG_A != 0).then(|| word_opt_span(w[5])),
            element: word_span(w[6]),
            more: w[4] & FLAG_B != 0,
        }
    }
}

impl Words<5> for UriSpans {
    fn to_words(&self) -> [u64; 5] {
        let sips = match self.scheme {
            Scheme::Sip => 0,
            Scheme::Sips => FLAG_A,
        };
        [
            opt_span_word(self.user),
            span_word(self.host),
            span_word(self.params),
            opt_span_word(self.headers),
            port_word(self.port) | sips,
        ]
    }
    fn from_words(w: [u64; 5]) -> Self {
        UriSpans {
            user: word_opt_span(w[0]),
            host: word_span(w[1]),
            params: word_span(w[2]),
            headers: word_opt_span(w[3]),
            port: word_port(w[4]),
            scheme: if w[4] & FLAG_A != 0 {
                Scheme::Sips
            } else {
                Scheme::Sip
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct UriSpans {
    scheme: Scheme,
    user: Option<Span>,
    host: Span,
    port: Option<u16>,
    params: Span,
    headers: Option<Span>,
}

/// A CSeq as [`Memo`] keeps it: the number, the method as [`method_code`] and where the
/// method's text is.
#[derive(Debug, Clone, Copy)]
struct CSeqSpans {
    seq: u32,
    method: u8,
    method_text: Span,
}

impl Words<2> for CSeqSpans {
    fn to_words(&self) -> [u64; 2] {
        [
            u64::from(self.seq) | (u64::from(self.method) << 32),
            span_word(self.method_text),
        ]
    }
    fn from_words(w: [u64; 2]) -> Self {
        CSeqSpans {
            seq: w[0] as u32,
            method: (w[0] >> 32) as u8,
            method_text: word_span(w[1]),
        }
    }
}

/// A tag as [`Memo`] keeps it: absent is kept too.
#[derive(Debug, Clone, Copy)]
struct TagSpan(Option<Span>);

impl Words<1> for TagSpan {
    fn to_words(&self) -> [u64; 1] {
        [opt_span_word(self.0)]
    }
    fn from_words(w: [u64; 1]) -> Self {
        TagSpan(word_opt_span(w[0]))
    }
}

/// The methods a kept CSeq names by number, in [`method_code`]'s order; any other method is
/// [`OTHER_METHOD`] and read again from its text.
const KNOWN_METHODS: [Method; 14] = [
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Info,
    Method::Invite,
    Method::Message,
    Method::Notify,
    Method::Options,
    Method::Prack,
    Method::Publish,
    Method::Refer,
    Method::Register,
    Method::Subscribe,
    Method::Update,
];

const OTHER_METHOD: u8 = u8::MAX;

fn method_code(method: &Method) -> u8 {
    match method {
        Method::Ack => 0,
        Method::Bye => 1,
        Method::Cancel => 2,
        Method::Info => 3,
        Method::Invite => 4,
        Method::Message => 5,
        Method::Notify => 6,
        Method::Options => 7,
        Method::Prack => 8,
        Method::Publish => 9,
        Method::Refer => 10,
        Method::Register => 11,
        Method::Subscribe => 12,
        Method::Update => 13,
        Method::Other(_) => OTHER_METHOD,
    }
}

/// The method [`method_code`] gave `code`, `text` being its text as written.
fn method_of(code: u8, text: &str) -> Method {
    match KNOWN_METHODS.get(usize::from(code)) {
        Some(method) => method.clone(),
        None => Method::parse(text),
    }
}

#[derive(Debug, Clone, Copy)]
struct NameAddrSpans {
    display: Option<Span>,
    uri: Span,
    bracketed: bool,
    params: Span,
}

#[derive(Debug, Clone, Copy)]
struct ViaSpans {
    transport: Span,
    host: Span,
    port: Option<u16>,
    params: Span,
    /// [`Via::branch`] of the top Via: the transaction layer looks every message up by it.
    branch: Option<Span>,
    /// [`Via::rport`] of the top Via: every response asks for it.
    rport: Option<Option<Span>>,
    /// The top Via element's text, and whether more elements follow it in its field (a comma):
    /// validation, the response builder and the proxy's forwarding of a response each split
    /// that field again to find out.
    element: Span,
    more: bool,
}

/// A message written by [`crate::build`] from a parsed one, with the offsets it recorded while
/// writing, so it need not be parsed again.
pub(crate) struct Built {
    pub raw: Bytes,
    pub start: StartLine,
    pub start_line_end: usize,
    pub headers: Vec<Header>,
    pub headers_end: usize,
    pub body: Span,
    pub defect: Option<Defect>,
}

impl Message {
    /// Assembles a message from what its writer recorded (see [`Built`]).
    pub(crate) fn from_built(b: Built) -> Message {
        Message::from_fields(Fields {
            head: head_text(&b.raw, b.headers_end),
            raw: b.raw,
            start: b.start,
            start_line_end: b.start_line_end as u32,
            headers: b.headers,
            headers_end: b.headers_end as u32,
            body: b.body,
            defect: b.defect,
            views: Views::default(),
        })
    }

    fn from_fields(fields: Fields) -> Message {
        Message {
            m: Box::new(fields),
        }
    }

    /// Parses a Request-Line at `offset` the way the parser does.
    pub(crate) fn request_line(line: &str, offset: usize) -> Option<(StartLine, Option<Defect>)> {
        parse::parse_request_line(line, offset).ok()
    }

    /// Parses one message from a datagram or a frame cut by [`crate::framing`], with default
    /// limits. Trailing bytes after `Content-Length` are ignored (RFC 4475 §3.1.1.8).
    pub fn parse(raw: Bytes) -> Result<Message, ParseError> {
        parse::parse(raw, &ParseLimits::default())
    }

    /// Like [`Message::parse`] with explicit limits.
    pub fn parse_with(raw: Bytes, limits: &ParseLimits) -> Result<Message, ParseError> {
        parse::parse(raw, limits)
    }

    /// [`Message::parse`] of bytes the caller also holds as text: a WebSocket transport checks
    /// a text message to be UTF-8 before it hands it on, and this takes that text instead of
    /// checking and copying the header section again. `text` must be `raw` as text; bytes that
    /// are not are parsed as by [`Message::parse`]. Made from the text's own allocation
    /// (`Bytes::from_owner`), `raw` is recognised by its address; else it is compared in full.
    /// With default limits only: there is no `parse_text_with` (the core uses the defaults).
    pub fn parse_text(raw: Bytes, text: Arc<str>) -> Result<Message, ParseError> {
        parse::parse_text(raw, text, &ParseLimits::default())
    }

    /// The message exactly as received (or built).
    pub fn raw(&self) -> &Bytes {
        &self.m.raw
    }

    /// Text of a span. Header text was checked to be UTF-8 at parse time (or the message carries
    /// [`Defect::HeaderNotUtf8`], in which case the span reads as empty).
    pub fn text(&self, span: Span) -> &str {
        match &self.m.head {
            Some(head) if span.end as usize <= head.len() => head.get(span.range()).unwrap_or(""),
            _ => self
                .m
                .raw
                .get(span.range())
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
        }
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.m.start
    }

    /// Offset just after the start line's terminator.
    pub fn start_line_end(&self) -> usize {
        self.m.start_line_end as usize
    }

    /// Offset of the blank line ending the header section.
    pub fn headers_end(&self) -> usize {
        self.m.headers_end as usize
    }

    /// The syntax defect found while parsing, if any.
    pub fn defect(&self) -> Option<Defect> {
        self.m.defect
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.m.start, StartLine::Request { .. })
    }

    /// The request method, `None` for responses.
    pub fn method(&self) -> Option<&Method> {
        match &self.m.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI text, `None` for responses.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.m.start {
            StartLine::Request { uri, .. } => Some(self.text(*uri)),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, `None` for requests.
    pub fn status(&self) -> Option<u16> {
        match &self.m.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> Option<&str> {
        match &self.m.start {
            StartLine::Response { reason, .. } => Some(self.text(*reason)),
            StartLine::Request { .. } => None,
        }
    }

    /// All header fields in order.
    pub fn headers(&self) -> &[Header] {
        &self.m.headers
    }

    /// Value of the first header field with this name.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.fields_from_first(name)
            .iter()
            .find(|h| h.name.matches(name))
            .map(|h| self.text(h.value))
    }

    /// The fields from the first one named `name` on (none when no field is).
    fn fields_from_first(&self, name: &HeaderName) -> &[Header] {
        match self.m.views.first.start(&self.m.headers, name) {
            Some(at) => self.m.headers.get(at..).unwrap_or_default(),
            None => &[],
        }
    }

    /// Values of every header field with this name, in order (one per field line; use
    /// [`Message::header_list`] to split comma lists).
    pub fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> {
        self.fields_from_first(name)
            .iter()
            .filter(move |h| h.name.matches(name))
            .map(move |h| self.text(h.value))
    }

    /// Every element of a list-valued header (RFC 3261 §7.3.1), across all its field lines.
    pub fn header_list<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> {
        HeaderList {
            msg: self,
            name,
            fields: self.fields_from_first(name).iter(),
            list: None,
        }
    }

    /// How many field lines carry this name.
    pub fn header_count(&self, name: &HeaderName) -> usize {
        self.fields_from_first(name)
            .iter()
            .filter(|h| h.name.matches(name))
            .count()
    }

    /// How many fields carry `name`, as far as it matters for a field that must appear once:
    /// 0, 1, or 2 for more than one. For a known name, from the pass that finds each name's
    /// first field (no pass of its own); others are counted. Inlined: five calls a message
    /// out of line cost ~150 instructions more (callgrind, the call workload).
    #[inline]
    pub(crate) fn noted_count(&self, name: &HeaderName) -> usize {
        let Some(slot) = name.slot() else {
            return self.header_count(name).min(2);
        };
        let first = &self.m.views.first;
        if first.repeated(&self.m.headers) >> slot & 1 != 0 {
            return 2;
        }
        // Set before `repeated`; filled again if a racing reader got here first. Read here
        // directly: calling `FirstFields::start` from here too stopped the compiler inlining
        // it into every lookup by name.
        let word = match first.words.word(slot / 8) {
            Some(word) => word,
            None => first.fill(&self.m.headers).0[slot / 8],
        };
        usize::from((word >> (slot % 8 * 8)) as u8 != 0)
    }

    /// The body (exactly Content-Length bytes when the header is present).
    pub fn body(&self) -> &[u8] {
        &self.m.raw[self.m.body.range()]
    }

    /// The body as a cheap clone of the underlying buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.m.raw.slice(self.m.body.range())
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header(&HeaderName::CallId)
    }

    /// The parsed CSeq.
    pub fn cseq(&self) -> Result<CSeq<'_>, HeaderError> {
        if let Some(words) = self.m.views.cseq.get() {
            let spans = CSeqSpans::from_words(words);
            let method_text = self.text(spans.method_text);
            return Ok(CSeq {
                seq: spans.seq,
                method: method_of(spans.method, method_text),
                method_text,
            });
        }
        self.keep_cseq(
            self.header(&HeaderName::CSeq)
                .ok_or(HeaderError::Missing("CSeq"))?,
        )
    }

    /// [`Message::cseq`] read from the field at `at` of [`Message::headers`], which the caller
    /// knows to be the first CSeq field (a message it wrote).
    pub(crate) fn cseq_of_field(&self, at: usize) -> Result<CSeq<'_>, HeaderError> {
        let field = self
            .m
            .headers
            .get(at)
            .filter(|h| h.name == HeaderName::CSeq);
        match field {
            Some(h) => self.keep_cseq(self.text(h.value)),
            None => self.cseq(),
        }
    }

    /// The first read of the CSeq: parses `value` and keeps what it found for the others.
    fn keep_cseq<'m>(&'m self, value: &'m str) -> Result<CSeq<'m>, HeaderError> {
        let cseq = CSeq::parse(value)?;
        let spans = CSeqSpans {
            seq: cseq.seq,
            method: method_code(&cseq.method),
            method_text: self.span_of(cseq.method_text),
        };
        self.m.views.cseq.set(spans.to_words());
        Ok(cseq)
    }

    /// The From header's tag (`from_header()`'s [`NameAddr::tag`], kept after the first read);
    /// `None` also when From does not parse.
    pub fn from_tag(&self) -> Option<&str> {
        let found = self.m.views.from_tag.get_or_parse(|| {
            let tag = self.from_header().ok().and_then(|f| f.tag());
            Ok::<_, std::convert::Infallible>(TagSpan(tag.map(|t| self.span_of(t))))
        });
        match found {
            Ok(TagSpan(tag)) => tag.map(|t| self.text(t)),
            Err(never) => match never {},
        }
    }

    /// The To header's tag, as [`Message::from_tag`] reads From's.
    pub fn to_tag(&self) -> Option<&str> {
        let found = self.m.views.to_tag.get_or_parse(|| {
            let tag = self.to_header().ok().and_then(|t| t.tag());
            Ok::<_, std::convert::Infallible>(TagSpan(tag.map(|t| self.span_of(t))))
        });
        match found {
            Ok(TagSpan(tag)) => tag.map(|t| self.text(t)),
            Err(never) => match never {},
        }
    }

    /// The parsed From header (parsed once, on first use).
    pub fn from_header(&self) -> Result<NameAddr<'_>, HeaderError> {
        self.m.views.from.read(
            || {
                let (addr, tag) = NameAddr::parse_found(
                    self.header(&HeaderName::From)
                        .ok_or(HeaderError::Missing("From"))?,
                )?;
                // The tag, when the parse found it on its way: the transaction key, the loop
                // hash and dialog checks read it next.
                if let Some(tag) = tag {
                    self.keep_tag(&self.m.views.from_tag, tag);
                }
                Ok((addr, self.name_addr_spans(&addr)))
            },
            |s| self.name_addr_at(s),
        )
    }

    /// The parsed To header (parsed once, on first use).
    pub fn to_header(&self) -> Result<NameAddr<'_>, HeaderError> {
        self.m.views.to.read(
            || {
                let (addr, tag) = NameAddr::parse_found(
                    self.header(&HeaderName::To)
                        .ok_or(HeaderError::Missing("To"))?,
                )?;
                // The tag is kept with the first parse when that parse found it (nearly
                // always), and searched for a request's otherwise: the response to nearly
                // every request asks for it (`to_tag`), which otherwise rebuilt the view to
                // find it (~300 instructions a request). Not searched for a response's: a
                // relayed response's To is parsed by validation and its tag seldom asked for.
                match tag {
                    Some(tag) => self.keep_tag(&self.m.views.to_tag, tag),
                    None if self.is_request() => self.keep_tag(&self.m.views.to_tag, addr.tag()),
                    None => {}
                }
                Ok((addr, self.name_addr_spans(&addr)))
            },
            |s| self.name_addr_at(s),
        )
    }

    /// Keeps `tag` (text of this message, or `None` for no tag) in `memo` unless it holds one.
    fn keep_tag(&self, memo: &Memo<1>, tag: Option<&str>) {
        if memo.get().is_none() {
            memo.set(TagSpan(tag.map(|t| self.span_of(t))).to_words());
        }
    }

    /// The first element of the Contact field(s) (parsed once, on first use: validation and the
    /// registrar both read it), `None` without Contact. The wildcard `*` is an error here, as
    /// [`NameAddr::parse`] makes it; callers that accept it check the text first.
    pub fn first_contact(&self) -> Option<Result<NameAddr<'_>, HeaderError>> {
        let first = self.header_list(&HeaderName::Contact).next()?;
        Some(self.m.views.first_contact.read(
            || NameAddr::parse(first).map(|addr| (addr, self.name_addr_spans(&addr))),
            |s| self.name_addr_at(s),
        ))
    }

    /// The `index`th element of the Contact field(s), whose text is `text`, parsed: the first
    /// through [`Message::first_contact`], any other as it comes.
    pub fn contact_at<'a>(
        &'a self,
        index: usize,
        text: &'a str,
    ) -> Result<NameAddr<'a>, HeaderError> {
        match index {
            // `text` is the first element: parsed into the kept view without finding it again.
            0 => self.m.views.first_contact.read(
                || NameAddr::parse(text).map(|addr| (addr, self.name_addr_spans(&addr))),
                |s| self.name_addr_at(s),
            ),
            _ => NameAddr::parse(text),
        }
    }

    /// The topmost Via (parsed once, on first use).
    pub fn top_via(&self) -> Result<Via<'_>, HeaderError> {
        self.m.views.top_via.read(
            || self.parse_top_via(),
            |s| Via {
                transport: self.text(s.transport),
                host: self.text(s.host),
                port: s.port,
                params: self.text(s.params),
            },
        )
    }

    fn top_via_spans(&self) -> Result<ViaSpans, HeaderError> {
        self.m
            .views
            .top_via
            .get_or_parse(|| self.parse_top_via().map(|(_, spans)| spans))
    }

    /// The top Via element parsed, and its view.
    fn parse_top_via(&self) -> Result<(Via<'_>, ViaSpans), HeaderError> {
        // Nearly every top Via element is written plainly (`Via::parse_plain`): read in one
        // pass, without the list split below (a quote- and bracket-aware scan for a comma,
        // then the element scanned again), ~300 instructions a message. The element is the
        // field up to its first comma (several Vias in one field: SIPp's responses): a plain
        // element holds no quote or `<`, so that comma is the one the split finds.
        // The search start is the first Via field only below the 255th field (positions are
        // capped): past it, the field found there may be another header (hostile input).
        let first_field = self
            .fields_from_first(&HeaderName::Via)
            .first()
            .filter(|h| h.name == HeaderName::Via);
        if let Some(field) = first_field {
            let value = self.text(field.value);
            let (element, more) = match syntax::find_byte(value, b',') {
                Some(comma) => (syntax::trim_lws(&value[..comma]), true),
                None => (value, false),
            };
            if let Some(found) = Via::parse_plain(element) {
                return Ok(self.top_via_found(found, element, more));
            }
        }
        let mut vias = HeaderList {
            msg: self,
            name: &HeaderName::Via,
            fields: self.fields_from_first(&HeaderName::Via).iter(),
            list: None,
        };
        let first = vias.next().ok_or(HeaderError::Missing("Via"))?;
        // The first field's split goes on after its first element only past a comma.
        let more = vias.list.as_ref().is_some_and(|rest| !rest.is_done());
        let found = Via::parse_found(first)?;
        Ok(self.top_via_found(found, first, more))
    }

    /// The top Via `found` in its element `element`, and its view.
    fn top_via_found<'m>(
        &'m self,
        found: ViaFound<'m>,
        element: &'m str,
        more: bool,
    ) -> (Via<'m>, ViaSpans) {
        let via = found.via;
        let spans = ViaSpans {
            element: self.span_of(element),
            more,
            transport: self.span_of(via.transport),
            host: self.span_of(via.host),
            port: via.port,
            params: self.span_of(via.params),
            // An empty value maps to an empty span, which reads as "" again.
            branch: found.branch.flatten().map(|b| self.span_of(b)),
            rport: found.rport.map(|r| r.map(|v| self.span_of(v))),
        };
        (via, spans)
    }

    /// The Request-URI as a SIP URI (parsed once, on first use: validation, routing and the
    /// registrar each read it). `None` for responses.
    pub fn request_sip_uri(&self) -> Option<Result<SipUri<'_>, UriError>> {
        let uri = self.request_uri()?;
        Some(self.m.views.request_uri.read(
            || {
                let u = SipUri::parse(uri)?;
                let spans = UriSpans {
                    scheme: u.scheme,
                    user: u.user.map(|s| self.span_of(s)),
                    host: self.span_of(u.host),
                    port: u.port,
                    params: self.span_of(u.params),
                    headers: u.headers.map(|s| self.span_of(s)),
                };
                Ok((u, spans))
            },
            |s| SipUri {
                scheme: s.scheme,
                user: s.user.map(|u| self.text(u)),
                host: self.text(s.host),
                port: s.port,
                params: self.text(s.params),
                headers: s.headers.map(|h| self.text(h)),
            },
        ))
    }

    /// Where `part`, a slice of text this message handed out (through [`Message::text`]), lies
    /// in the message. An empty slice that did not come from here maps to an empty span.
    fn span_of(&self, part: &str) -> Span {
        let base = match &self.m.head {
            Some(head) => head.as_ptr() as usize,
            None => self.m.raw.as_ptr() as usize,
        };
        let start = (part.as_ptr() as usize).wrapping_sub(base);
        if part.is_empty() || start > self.m.raw.len() {
            return Span::default();
        }
        Span::new(start, start + part.len())
    }

    fn name_addr_spans(&self, addr: &NameAddr<'_>) -> NameAddrSpans {
        NameAddrSpans {
            display: addr.display.map(|d| self.span_of(d)),
            uri: self.span_of(addr.uri),
            bracketed: addr.bracketed,
            params: self.span_of(addr.params),
        }
    }

    fn name_addr_at(&self, s: NameAddrSpans) -> NameAddr<'_> {
        NameAddr {
            display: s.display.map(|d| self.text(d)),
            uri: self.text(s.uri),
            bracketed: s.bracketed,
            params: self.text(s.params),
        }
    }

    /// The Max-Forwards value; `None` when absent.
    pub fn max_forwards(&self) -> Option<Result<u8, HeaderError>> {
        self.header(&HeaderName::MaxForwards).map(|v| {
            syntax::parse_u32(v)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(HeaderError::Invalid("Max-Forwards"))
        })
    }

    /// The Expires header as seconds; `None` when absent.
    pub fn expires(&self) -> Option<Result<u32, HeaderError>> {
        self.header(&HeaderName::Expires)
            .map(|v| syntax::parse_u32(v).ok_or(HeaderError::Invalid("Expires")))
    }

    /// The Content-Type media type without parameters, lowercased comparison left to callers.
    pub fn content_type(&self) -> Option<&str> {
        self.header(&HeaderName::ContentType)
            .map(|v| syntax::trim_lws(v.split(';').next().unwrap_or(v)))
    }

    /// The `branch` parameter of the top Via (whether or not it carries the RFC 3261 magic
    /// cookie), as [`Via::branch`] reads it; found once, when the top Via is parsed.
    pub fn branch(&self) -> Option<&str> {
        word_opt_span(self.top_via_word(3)?).map(|s| self.text(s))
    }

    /// Word `i` of the kept top Via ([`ViaSpans`]' words), parsed first if need be; `None`
    /// when it does not parse. Most readers want one or two of its seven words, several times
    /// a message.
    #[inline]
    fn top_via_word(&self, i: usize) -> Option<u64> {
        match self.m.views.top_via.word(i) {
            Some(word) => Some(word),
            None => {
                self.top_via_spans().ok()?;
                self.m.views.top_via.word(i)
            }
        }
    }

    /// [`Via::rport`] of the top Via, found when it was parsed; `None` when it does not parse.
    /// The top Via element's text and whether more elements follow it in the same field
    /// (`None` when the top Via does not parse): the first Via field is that element alone
    /// when they do not.
    pub(crate) fn top_via_element(&self) -> Option<(&str, bool)> {
        let flags = self.top_via_word(4)?;
        let element = word_span(self.top_via_word(6)?);
        Some((self.text(element), flags & FLAG_B != 0))
    }

    pub(crate) fn top_via_rport(&self) -> Option<Option<Option<&str>>> {
        if self.top_via_word(4)? & FLAG_A == 0 {
            return Some(None);
        }
        let value = word_opt_span(self.top_via_word(5)?);
        Some(Some(value.map(|s| self.text(s))))
    }
}

/// [`Message::header_list`]: what `header_values(name).flat_map(split_list)` yields, written
/// out (the adapters cost ~100 instructions a call, several calls a message).
struct HeaderList<'a> {
    msg: &'a Message,
    name: &'a HeaderName,
    fields: std::slice::Iter<'a, Header>,
    list: Option<syntax::ListIter<'a>>,
}

impl<'a> Iterator for HeaderList<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            if let Some(item) = self.list.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            let name = self.name;
            let field = self.fields.find(|h| h.name.matches(name))?;
            self.list = Some(syntax::split_list(self.msg.text(field.value)));
        }
    }
}

/// The header section (`raw[..headers_end]`) as shared text, `None` when it is not UTF-8.
pub(crate) fn head_text(raw: &[u8], headers_end: usize) -> Option<Arc<str>> {
    let head = raw.get(..headers_end)?;
    std::str::from_utf8(head).ok().map(Arc::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_views_read_back_as_they_were_written() {
        let spans = [
            None,
            Some(Span::default()),
            Some(Span::new(3, 3)),
            Some(Span::new(0, 1)),
            Some(Span::new(70_000, 70_100)),
            Some(Span {
                start: u32::MAX - 1,
                end: u32::MAX,
            }),
        ];
        let ports = [None, Some(0), Some(5060), Some(u16::MAX)];
        for &a in &spans {
            for &b in &spans {
                let (a1, b1) = (a.unwrap_or_default(), b.unwrap_or_default());
                for bracketed in [false, true] {
                    let n = NameAddrSpans {
                        display: a,
                        uri: b1,
                        bracketed,
                        params: a1,
                    };
                    let back = NameAddrSpans::from_words(n.to_words());
                    assert_eq!(format!("{back:?}"), format!("{n:?}"));
                }
                for port in ports {
                    for rport in [None, Some(None), Some(a), Some(b)] {
                        let v = ViaSpans {
                            transport: a1,
                            host: b1,
                            port,
                            params: a1,
                            branch: b,
                            rport,
                            element: b1,
                            more: port.is_some(),
                        };
                        let back = ViaSpans::from_words(v.to_words());
                        assert_eq!(format!("{back:?}"), format!("{v:?}"));
                    }
                    for scheme in [Scheme::Sip, Scheme::Sips] {
                        let u = UriSpans {
                            scheme,
                            user: a,
                            host: b1,
                            port,
                            params: a1,
                            headers: b,
                        };
                        let back = UriSpans::from_words(u.to_words());
                        assert_eq!(format!("{back:?}"), format!("{u:?}"));
                    }
                }
            }
        }
    }

    #[test]
    fn lookups_by_name_find_what_a_scan_of_every_field_finds() {
        let names = [
            "Via",
            "v",
            "From",
            "To",
            "t",
            "Contact",
            "m",
            "Route",
            "Expires",
            "X-Other",
            "x-other",
            "Call-ID",
            "CSeq",
            "Max-Forwards",
            "Require",
        ];
        // Fields in a pseudo-random order, with repeats, some past the 254th field (where the
        // kept position is capped and the search starts at the cap).
        for (count, step) in [(5, 3), (20, 7), (300, 11), (600, 13)] {
            let mut text = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
            for i in 0..count {
                let name = names[(i * step + i / 7) % names.len()];
                let value = match i % 4 {
                    0 => format!("v{i}"),
                    1 => format!("a{i}, b{i}"),
                    2 => format!("\"q,{i}\" <x,{i}>,, c"),
                    _ => String::new(),
                };
                let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{name}: {value}\r\n"));
            }
            if count > 250 {
                text.push_str("Proxy-Require: late\r\n");
            }
            text.push_str("l: 0\r\n\r\n");
            let m =
                Message::parse_with(Bytes::from(text), &ParseLimits { max_headers: 1000 }).unwrap();
            let mut asked: Vec<HeaderName> = names.iter().map(|n| HeaderName::parse(n)).collect();
            asked.extend([
                HeaderName::ProxyRequire,
                HeaderName::Date,
                HeaderName::ContentLength,
                HeaderName::Other("Absent".into()),
            ]);
            for name in &asked {
                let scan: Vec<&str> = m
                    .headers()
                    .iter()
                    .filter(|h| h.name.matches(name))
                    .map(|h| m.text(h.value))
                    .collect();
                assert_eq!(m.header(name), scan.first().copied(), "{name} of {count}");
                assert_eq!(
                    m.header_values(name).collect::<Vec<_>>(),
                    scan,
                    "{name} of {count}"
                );
                assert_eq!(m.header_count(name), scan.len(), "{name} of {count}");
                assert_eq!(m.noted_count(name), scan.len().min(2), "{name} of {count}");
                let split: Vec<&str> = scan.iter().flat_map(|v| syntax::split_list(v)).collect();
                assert_eq!(
                    m.header_list(name).collect::<Vec<_>>(),
                    split,
                    "{name} of {count}"
                );
            }
        }
    }

    #[test]
    fn views_read_alike_from_threads_racing_to_parse_them_and_from_clones() {
        let text = "INVITE sips:bob@[::1]:5061;transport=tls SIP/2.0\r\n\
                    Via: SIP/2.0/TLS h:5061;branch=z9hG4bKr;rport\r\n\
                    From: \"A\" <sip:a@h>;tag=1\r\nTo: sip:b@h\r\nCSeq: 7 INVITE\r\n\
                    Contact: <sip:a@h;ob>;expires=30\r\nl: 0\r\n\r\n";
        let fresh = || Message::parse(Bytes::from_static(text.as_bytes())).unwrap();
        let reference = fresh();
        let read = |m: &Message| {
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                m.top_via(),
                m.branch(),
                m.from_header(),
                m.to_header(),
                m.request_sip_uri(),
                m.first_contact(),
                m.cseq(),
                m.from_tag(),
                m.to_tag()
            )
        };
        let expected = read(&reference);
        assert_eq!(read(&reference), expected, "read again from the kept words");
        assert_eq!(read(&reference.clone()), expected, "a clone keeps them");
        assert_eq!(read(&fresh().clone()), expected, "a clone before any read");
        for _ in 0..20 {
            let m = fresh();
            std::thread::scope(|s| {
                let readers: Vec<_> = (0..4).map(|_| s.spawn(|| read(&m))).collect();
                for r in readers {
                    assert_eq!(r.join().unwrap(), expected);
                }
            });
        }
    }

    #[test]
    fn kept_cseq_and_tags_read_as_fresh_parses() {
        let cseqs = [
            "CSeq: 1 REGISTER\r\n",
            "CSeq:   42   FOO  \r\n",
            "CSeq: 3 ACK\r\n",
            "CSeq: 2147483647 update\r\n",
            "CSeq: 2147483648 BYE\r\n",
            "CSeq: x INVITE\r\n",
            "CSeq: 5\r\n",
            "CSeq: 6 INVITE\r\nCSeq: 7 BYE\r\n",
            "",
        ];
        let methods = [
            "ACK",
            "BYE",
            "CANCEL",
            "INFO",
            "INVITE",
            "MESSAGE",
            "NOTIFY",
            "OPTIONS",
            "PRACK",
            "PUBLISH",
            "REFER",
            "REGISTER",
            "SUBSCRIBE",
            "UPDATE",
            "PING",
            "Invite",
        ];
        let mut fields: Vec<String> = cseqs.iter().map(|c| c.to_string()).collect();
        fields.extend(methods.iter().map(|m| format!("CSeq: 9 {m}\r\n")));
        let tags = [
            "From: <sip:a@h>;tag=1\r\nTo: sip:b@h;tag=2\r\n",
            "f: \"A;tag=x\" <sip:a@h;tag=u>;x=1;TAG=Ab\r\nt: <sip:b@h>\r\n",
            "From: sip:a@h;tag=\r\nTo: sip:b@h;tag\r\n",
            "From: <sip:a@h\r\nTo: b\r\n",
            "To: <sip:b@h>;tag=9\r\n",
            "From: <sip:a@h>;tag=\\xff\r\nTo: <sip:b@h>;tag=2\r\n",
            "From: \"A\" <sip:a@h>;x;Tag=first;tag=second\r\nTo: <sip:b@h>;TAG=T;x=\"q\"\r\n",
            "From: <sip:a@h>;x=1\r\nTo: B <sip:b@h>;lr;tag=b;tag\r\n",
        ];
        for (i, cseq) in fields.iter().enumerate() {
            let tag = tags[i % tags.len()];
            // Requests and responses (only a request's To tag is kept with its To).
            let start = ["OPTIONS sip:h SIP/2.0", "SIP/2.0 200 OK"][i / tags.len() % 2];
            let text =
                format!("{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{tag}{cseq}l: 0\r\n\r\n");
            let mut bytes = text.into_bytes();
            // A header section that is not UTF-8 (the messages without kept text).
            if let Some(at) = bytes.windows(2).position(|w| w == b"\\x") {
                bytes.splice(at..at + 4, [0xff]);
            }
            // The To tag asked for before the To header (the view fills both) and after it.
            let first = Message::parse(Bytes::from(bytes.clone())).unwrap();
            let to_tag_first = first.to_tag().map(str::to_owned);
            let to_after = first.to_header().ok().and_then(|t| t.tag());
            assert_eq!(to_tag_first.as_deref(), to_after, "{tag:?}");
            assert_eq!(first.to_tag(), to_after, "{tag:?}");
            let m = Message::parse(Bytes::from(bytes)).unwrap();
            let fresh_cseq = m
                .header(&HeaderName::CSeq)
                .ok_or(HeaderError::Missing("CSeq"))
                .and_then(CSeq::parse);
            let fresh_from = m.from_header().ok().and_then(|f| f.tag());
            let fresh_to = m.to_header().ok().and_then(|t| t.tag());
            // Twice: the second read comes from what the first kept; a clone keeps it.
            for m in [&m, &m, &m.clone()] {
                assert_eq!(m.cseq(), fresh_cseq, "{cseq:?}");
                assert_eq!(m.from_tag(), fresh_from, "{tag:?}");
                assert_eq!(m.to_tag(), fresh_to, "{tag:?}");
            }
            // And against a parse of the To and From texts alone, without any kept view.
            let alone = |name| {
                m.header(&name)
                    .and_then(|t| NameAddr::parse(t).ok())
                    .and_then(|t| t.tag())
            };
            assert_eq!(m.to_tag(), alone(HeaderName::To), "{tag:?}");
            assert_eq!(to_tag_first.as_deref(), alone(HeaderName::To), "{tag:?}");
            assert_eq!(m.from_tag(), alone(HeaderName::From), "{tag:?}");
        }
    }

    #[test]
    fn a_top_via_past_the_capped_position_is_read_from_the_via_field() {
        // Positions are kept capped at the 255th field (the search starts there): a first Via
        // further on must not be read from the field at the cap, here Via-shaped text in
        // another header (hostile input: it would become the branch and the reply's Via).
        let mut text = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..254 {
            text.push_str(&format!("X-F{i}: v\r\n"));
        }
        text.push_str("X-A: SIP/2.0/UDP 6.6.6.6;branch=z9hG4bKevil\r\n");
        text.push_str("Via: SIP/2.0/UDP real.test;branch=z9hG4bKreal\r\n\r\n");
        let m = Message::parse(Bytes::from(text)).unwrap();
        assert_eq!(m.headers().len(), 256);
        let via = m.top_via().unwrap();
        assert_eq!(via.host, "real.test");
        assert_eq!(m.branch(), Some("z9hG4bKreal"));
        assert_eq!(
            m.top_via_element().map(|(e, _)| e),
            Some("SIP/2.0/UDP real.test;branch=z9hG4bKreal")
        );
        assert_eq!(m.noted_count(&HeaderName::Via), 1);
    }

    #[test]
    fn the_top_via_read_in_one_pass_reads_as_the_list_split_does() {
        let firsts = [
            "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport",
            "sip/2.0/ws df7.invalid;rport=9;branch=z9hG4bKa;received=1.2.3.4",
            "SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/TCP g",
            "SIP/2.0/UDP h;branch=z9hG4bK1 , SIP/2.0/TCP g",
            "SIP/2.0/UDP h;branch=z9hG4bK1,",
            "SIP/2.0/UDP h;branch=\"a,b\"",
            "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1",
            "SIP / 2.0 / UDP h;branch=z9hG4bK1",
            "SIP/2.0/UDP h;BRANCH=x;branch=y;RPORT",
            "SIP/2.0/UDP h;branch",
            "SIP/2.0/UDP h;;branch=1",
            "SIP/2.0/UDP",
            "",
            ",SIP/2.0/UDP h;branch=z9hG4bK1",
            "bad",
        ];
        for first in firsts {
            for rest in ["", "Via: SIP/2.0/TCP later;branch=z9hG4bK2\r\n"] {
                let text = format!(
                    "OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: 70\r\nVia: {first}\r\n{rest}l: 0\r\n\r\n"
                );
                let m = Message::parse(Bytes::from(text)).unwrap();
                // What the list split reads: the first element of all the Via fields.
                let mut list = m.header_list(&HeaderName::Via);
                let element = list.next();
                let parsed = element.map(crate::headers::Via::parse);
                let via = m.top_via();
                match parsed {
                    Some(Ok(want)) => assert_eq!(via, Ok(want), "{first:?} {rest:?}"),
                    _ => assert!(via.is_err(), "{first:?} {rest:?}: {via:?}"),
                }
                let Ok(want) = via else { continue };
                let element = element.unwrap();
                // More elements in the same field as the top one: the field is not it alone.
                let first_field = m.header(&HeaderName::Via).unwrap();
                assert_eq!(
                    m.top_via_element(),
                    Some((element, first_field != element)),
                    "{first:?} {rest:?}"
                );
                assert_eq!(m.branch(), want.branch(), "{first:?}");
                assert_eq!(m.top_via_rport(), Some(want.rport()), "{first:?}");
            }
        }
    }
}
