//! A small SIP test client for the end-to-end tests, shaped like SIPml5 (see
//! `shared/docs/SIPML5.md`; its traces are the source of truth for every request built here).
//!
//! The message side is sans-IO: [`Ua`] builds requests byte-for-byte in SIPml5's header order,
//! [`response`] answers received requests the way SIPml5 does, [`DigestSession`] computes
//! digest credentials from a challenge with its own MD5/SHA-256 (independent of the server's
//! code, so the two check each other), and [`Dialog`] keeps the RFC 3261 §12 dialog state.
//! [`Conn`] is the thin I/O part: a WebSocket (subprotocol `sip`, text frames out as a browser
//! sends them, and only binary frames accepted in, see SIPML5.md §1) or a UDP socket. Every
//! wait is bounded by [`WAIT`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use huddle_sip::headers::NameAddr;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use crate::DOMAIN;

/// The Via/Contact host every SIPml5 client in the world uses.
pub const SIPML5_HOST: &str = "df7jal23ls0d.invalid";

/// Bound on every single wait for a message.
pub const WAIT: Duration = Duration::from_secs(5);

/// The `Allow` SIPml5 puts in its 180 and 200 to an INVITE.
pub const SIPML5_ALLOW: &str =
    "ACK, BYE, CANCEL, INVITE, MESSAGE, NOTIFY, OPTIONS, PRACK, REFER, UPDATE";

/// The `sip_headers` our imaginary SIPml5 page configures (appended to every request).
pub const USER_AGENT: &str = "sipml5-test";

// ------------------------------------------------------------------------------------------
// Identifiers

fn random_u64() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    // splitmix64 over a counter: distinct values without a random-number dependency.
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[(random_u64() % alphabet.len() as u64) as usize] as char)
        .collect()
}

/// Letters and digits, as SIPml5's `tsk_string_random`.
pub fn random_alnum(len: usize) -> String {
    random_from(
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        len,
    )
}

/// Lowercase hex digits.
pub fn random_hex(len: usize) -> String {
    random_from(b"0123456789abcdef", len)
}

/// `z9hG4bK` and 32 letters/digits.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_alnum(32))
}

/// A 20-character tag.
pub fn new_tag() -> String {
    random_alnum(20)
}

/// A UUID-shaped Call-ID (`232d29cc-d297-5319-b07b-70b08b9e1638`).
pub fn new_call_id() -> String {
    format!(
        "{}-{}-{}-{}-{}",
        random_hex(8),
        random_hex(4),
        random_hex(4),
        random_hex(4),
        random_hex(12)
    )
}

/// A first CSeq below 0xFFFF, as SIPml5 draws it.
pub fn new_cseq() -> u32 {
    (random_u64() % 0xFFFF) as u32
}

// ------------------------------------------------------------------------------------------
// Digest (RFC 7616 §3.4 with qop=auth, RFC 2069 without qop)

/// One `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub opaque: Option<String>,
    pub stale: bool,
}

/// `name=value` pairs of an auth-param list; quoted values are unquoted and unescaped.
pub fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((name, value));
    }
    out
}

impl Challenge {
    /// Parses a `Digest …` challenge value.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim_start();
        let split = value.find(char::is_whitespace)?;
        let (scheme, rest) = value.split_at(split);
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut realm = None;
        let mut nonce = None;
        let mut challenge = Challenge {
            realm: String::new(),
            nonce: String::new(),
            algorithm: None,
            qop: None,
            opaque: None,
            stale: false,
        };
        for (name, value) in auth_params(rest) {
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "algorithm" => challenge.algorithm = Some(value),
                "qop" => challenge.qop = Some(value),
                "opaque" => challenge.opaque = Some(value),
                "stale" => challenge.stale = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        challenge.realm = realm?;
        challenge.nonce = nonce?;
        Some(challenge)
    }

    /// The one challenge of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`);
    /// panics, showing the response, when there is not exactly one or it does not parse.
    pub fn of(resp: &Message) -> Challenge {
        let name = match resp.status() {
            Some(401) => HeaderName::WwwAuthenticate,
            Some(407) => HeaderName::ProxyAuthenticate,
            _ => panic!("expected a 401 or 407 challenge, got:\n{}", text(resp)),
        };
        let values: Vec<&str> = resp.header_values(&name).collect();
        assert_eq!(
            values.len(),
            1,
            "SIPml5 answers every challenge header: send exactly one (SIPML5.md §3); got:\n{}",
            text(resp)
        );
        Challenge::parse(values[0])
            .unwrap_or_else(|| panic!("unparseable challenge in:\n{}", text(resp)))
    }

    fn uses_sha256(&self) -> bool {
        self.algorithm
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("SHA-256"))
    }

    fn offers_auth(&self) -> bool {
        self.qop
            .as_deref()
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_hex(sha256: bool, data: &str) -> String {
    if sha256 {
        hex(&Sha256::digest(data.as_bytes()))
    } else {
        hex(&Md5::digest(data.as_bytes()))
    }
}

/// Credentials answering one challenge; `nc` counts the requests made with its nonce.
#[derive(Debug, Clone)]
pub struct DigestSession {
    pub challenge: Challenge,
    pub username: String,
    password: String,
    pub cnonce: String,
    pub nc: u32,
}

impl DigestSession {
    /// Fresh credentials for `challenge` (new cnonce, nonce count 0).
    pub fn new(challenge: Challenge, username: &str, password: &str) -> DigestSession {
        DigestSession {
            challenge,
            username: username.to_owned(),
            password: password.to_owned(),
            cnonce: random_hex(32),
            nc: 0,
        }
    }

    /// The next `Authorization`/`Proxy-Authorization` value (nonce count + 1), as SIPml5
    /// pre-computes it for every request on the same nonce.
    pub fn authorize(&mut self, method: &str, uri: &str) -> String {
        self.nc += 1;
        self.value(method, uri, self.nc)
    }

    /// The credentials value for an explicit nonce count (to replay one).
    pub fn value(&self, method: &str, uri: &str, nc: u32) -> String {
        let c = &self.challenge;
        let sha = c.uses_sha256();
        let ha1 = hash_hex(
            sha,
            &format!("{}:{}:{}", self.username, c.realm, self.password),
        );
        let ha2 = hash_hex(sha, &format!("{method}:{uri}"));
        let nc_text = format!("{nc:08x}");
        let response = if c.offers_auth() {
            hash_hex(
                sha,
                &format!("{ha1}:{}:{nc_text}:{}:auth:{ha2}", c.nonce, self.cnonce),
            )
        } else {
            hash_hex(sha, &format!("{ha1}:{}:{ha2}", c.nonce))
        };
        let algorithm = c.algorithm.as_deref().unwrap_or("MD5");
        let mut value = format!(
            "Digest username=\"{}\",realm=\"{}\",nonce=\"{}\",uri=\"{uri}\",response=\"{response}\",algorithm={algorithm}",
            self.username, c.realm, c.nonce
        );
        if c.offers_auth() {
            value.push_str(&format!(
                ",cnonce=\"{}\",qop=auth,nc={nc_text}",
                self.cnonce
            ));
        }
        if let Some(opaque) = &c.opaque {
            value.push_str(&format!(",opaque=\"{opaque}\""));
        }
        value
    }
}

/// The IMS-style empty credentials SIPml5 sends on its first REGISTER with
/// `enable_early_ims: false` (SIPML5.md §3).
pub fn empty_authorization(username: &str, realm: &str, uri: &str) -> String {
    format!(
        "Digest username=\"{username}\",realm=\"{realm}\",nonce=\"\",uri=\"{uri}\",response=\"\""
    )
}

// ------------------------------------------------------------------------------------------
// Messages

/// The whole message as text, for failure output.
pub fn text(msg: &Message) -> String {
    String::from_utf8_lossy(msg.raw()).into_owned()
}

/// The URI inside a name-addr header value (`"a"<sip:x>;p` → `sip:x`).
pub fn uri_of(value: &str) -> String {
    NameAddr::parse(value)
        .map(|a| a.uri.to_owned())
        .unwrap_or_else(|_| panic!("not a name-addr: {value}"))
}

/// A name-addr header parameter (`expires`, `tag`, …).
pub fn param_of(value: &str, name: &str) -> Option<String> {
    NameAddr::parse(value)
        .ok()?
        .param(name)
        .map(|v| v.unwrap_or("").to_owned())
}

/// Every Contact element of a message.
pub fn contacts(msg: &Message) -> Vec<String> {
    msg.header_list(&HeaderName::Contact)
        .map(str::to_owned)
        .collect()
}

/// The CSeq number.
pub fn cseq_of(msg: &Message) -> u32 {
    msg.cseq()
        .unwrap_or_else(|_| panic!("no CSeq in:\n{}", text(msg)))
        .seq
}

/// A response to a received request, as SIPml5 writes it: Via, Record-Route (for 1xx/2xx),
/// From, To (with `to_tag` added when the request had none), Call-ID, CSeq, `extra`, body.
pub fn response(
    req: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    let has_tag = req.to_header().ok().and_then(|t| t.tag()).is_some();
    for h in req.headers() {
        let value = req.text(h.value);
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                out.push_str(&format!("{}: {value}\r\n", h.name.as_str()));
            }
            HeaderName::RecordRoute if (101..300).contains(&status) => {
                out.push_str(&format!("Record-Route: {value}\r\n"));
            }
            HeaderName::To => match to_tag {
                Some(tag) if !has_tag && status > 100 => {
                    out.push_str(&format!("To: {value};tag={tag}\r\n"));
                }
                _ => out.push_str(&format!("To: {value}\r\n")),
            },
            _ => {}
        }
    }
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    push_body(&mut out, body);
    out.push_str("\r\n");
    if let Some((_, body)) = body {
        out.push_str(body);
    }
    out
}

fn push_body(out: &mut String, body: Option<(&str, &str)>) {
    match body {
        Some((content_type, body)) => {
            out.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        None => out.push_str("Content-Length: 0\r\n"),
    }
}

/// What one SIPml5 session keeps for its out-of-dialog requests: Call-ID, From tag, CSeq and
/// the credentials from the last challenge.
#[derive(Debug, Clone)]
pub struct Session {
    pub call_id: String,
    pub tag: String,
    pub cseq: u32,
    pub auth: Option<DigestSession>,
    /// Until the first 2xx: SIPml5 sends `Supported: path` only on the initial REGISTER.
    pub initial: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A new session: fresh Call-ID, From tag and CSeq.
    pub fn new() -> Session {
        Session {
            call_id: new_call_id(),
            tag: new_tag(),
            cseq: new_cseq(),
            auth: None,
            initial: true,
        }
    }
}

/// A user agent: identity plus how it appears on the wire.
#[derive(Debug, Clone)]
pub struct Ua {
    pub user: String,
    pub password: String,
    pub domain: String,
    /// Via transport token, `WS` or `UDP`.
    pub transport: &'static str,
    /// Via sent-by.
    pub sent_by: String,
    /// The Contact URI registered.
    pub contact_uri: String,
    /// True for the SIPml5 shape (display names, caps, `User-Agent`).
    pub sipml5: bool,
}

impl Ua {
    /// A SIPml5 page over `ws://` (SIPML5.md §1–§3).
    pub fn sipml5(user: &str, password: &str) -> Ua {
        Ua {
            user: user.to_owned(),
            password: password.to_owned(),
            domain: DOMAIN.to_owned(),
            transport: "WS",
            sent_by: SIPML5_HOST.to_owned(),
            contact_uri: format!("sip:{user}@{SIPML5_HOST};rtcweb-breaker=no;transport=ws"),
            sipml5: true,
        }
    }

    /// A plain RFC 3261 phone on a UDP socket bound at `local`.
    pub fn udp(user: &str, password: &str, local: SocketAddr) -> Ua {
        Ua {
            user: user.to_owned(),
            password: password.to_owned(),
            domain: DOMAIN.to_owned(),
            transport: "UDP",
            sent_by: local.to_string(),
            contact_uri: format!("sip:{user}@{local};transport=udp"),
            sipml5: false,
        }
    }

    /// `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// `sip:domain`, SIPml5's REGISTER Request-URI.
    pub fn registrar_uri(&self) -> String {
        format!("sip:{}", self.domain)
    }

    /// A top Via with a fresh branch.
    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            self.transport,
            self.sent_by,
            new_branch()
        )
    }

    fn name_addr(&self, uri: &str) -> String {
        if self.sipml5 {
            // No space before `<`, as SIPml5 writes it.
            format!("\"{}\"<{uri}>", self.user)
        } else {
            format!("<{uri}>")
        }
    }

    /// The From value with `tag`.
    pub fn from_value(&self, tag: &str) -> String {
        format!("{};tag={tag}", self.name_addr(&self.aor()))
    }

    /// The REGISTER Contact with an `expires` parameter.
    pub fn register_contact(&self, expires: u32) -> String {
        if self.sipml5 {
            format!(
                "{};expires={expires};click2call=no;+g.oma.sip-im;+audio;language=\"en,fr\"",
                self.name_addr(&self.contact_uri)
            )
        } else {
            format!("<{}>;expires={expires}", self.contact_uri)
        }
    }

    /// The Contact URI of dialog-creating requests (SIPML5.md §7 shows `click2call` inside).
    pub fn dialog_contact_uri(&self) -> String {
        if self.sipml5 {
            format!(
                "sip:{}@{SIPML5_HOST};rtcweb-breaker=no;click2call=no;transport=ws",
                self.user
            )
        } else {
            self.contact_uri.clone()
        }
    }

    /// The Contact SIPml5 puts in its 180/200 to an INVITE: `<sip:bob@df7jal23ls0d.invalid;transport=ws>`.
    pub fn answer_contact(&self) -> String {
        if self.sipml5 {
            format!("<sip:{}@{SIPML5_HOST};transport=ws>", self.user)
        } else {
            format!("<{}>", self.contact_uri)
        }
    }

    /// The Contact of dialog-creating requests.
    pub fn dialog_contact(&self) -> String {
        if self.sipml5 {
            format!(
                "{};+g.oma.sip-im;+audio;language=\"en,fr\"",
                self.name_addr(&self.dialog_contact_uri())
            )
        } else {
            format!("<{}>", self.contact_uri)
        }
    }

    fn tail(&self, out: &mut String, authorization: Option<(&str, &str)>) {
        out.push_str("Max-Forwards: 70\r\n");
        if let Some((name, value)) = authorization {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.sipml5 {
            out.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
        }
    }

    /// REGISTER as SIPml5 sends it (SIPML5.md §3) for session `s` at its current CSeq.
    /// `contact: None` makes a binding fetch; `expires_header` adds an `Expires` header
    /// (SIPml5 never does; other clients and the wildcard do).
    pub fn register_request(
        &self,
        s: &Session,
        contact: Option<&str>,
        expires_header: Option<u32>,
        authorization: Option<&str>,
    ) -> String {
        let mut out = format!("REGISTER {} SIP/2.0\r\n", self.registrar_uri());
        out.push_str(&format!("Via: {}\r\n", self.via()));
        out.push_str(&format!("From: {}\r\n", self.from_value(&s.tag)));
        out.push_str(&format!("To: {}\r\n", self.name_addr(&self.aor())));
        if let Some(contact) = contact {
            out.push_str(&format!("Contact: {contact}\r\n"));
        }
        out.push_str(&format!("Call-ID: {}\r\n", s.call_id));
        out.push_str(&format!("CSeq: {} REGISTER\r\n", s.cseq));
        if let Some(e) = expires_header {
            out.push_str(&format!("Expires: {e}\r\n"));
        }
        out.push_str("Content-Length: 0\r\n");
        self.tail(&mut out, authorization.map(|a| ("Authorization", a)));
        if s.initial && self.sipml5 {
            out.push_str("Supported: path\r\n");
        }
        out.push_str("\r\n");
        out
    }

    /// MESSAGE as SIPml5 sends it (SIPML5.md §5).
    pub fn message_request(
        &self,
        to_user: &str,
        s: &Session,
        body: &str,
        proxy_authorization: Option<&str>,
    ) -> String {
        let target = format!("sip:{to_user}@{}", self.domain);
        let mut out = format!("MESSAGE {target} SIP/2.0\r\n");
        out.push_str(&format!("Via: {}\r\n", self.via()));
        out.push_str(&format!("From: {}\r\n", self.from_value(&s.tag)));
        out.push_str(&format!("To: <{target}>\r\n"));
        out.push_str(&format!("Call-ID: {}\r\n", s.call_id));
        out.push_str(&format!("CSeq: {} MESSAGE\r\n", s.cseq));
        push_body(&mut out, Some(("text/plain;charset=utf-8", body)));
        self.tail(
            &mut out,
            proxy_authorization.map(|a| ("Proxy-Authorization", a)),
        );
        out.push_str("\r\n");
        out.push_str(body);
        out
    }

    /// INVITE as SIPml5 sends it (SIPML5.md §4: no Supported/Require/Allow, SDP offer).
    pub fn invite_request(
        &self,
        to_user: &str,
        s: &Session,
        sdp: &str,
        proxy_authorization: Option<&str>,
    ) -> String {
        let target = format!("sip:{to_user}@{}", self.domain);
        let mut out = format!("INVITE {target} SIP/2.0\r\n");
        out.push_str(&format!("Via: {}\r\n", self.via()));
        out.push_str(&format!("From: {}\r\n", self.from_value(&s.tag)));
        out.push_str(&format!("To: <{target}>\r\n"));
        out.push_str(&format!("Contact: {}\r\n", self.dialog_contact()));
        out.push_str(&format!("Call-ID: {}\r\n", s.call_id));
        out.push_str(&format!("CSeq: {} INVITE\r\n", s.cseq));
        push_body(&mut out, Some(("application/sdp", sdp)));
        self.tail(
            &mut out,
            proxy_authorization.map(|a| ("Proxy-Authorization", a)),
        );
        out.push_str("\r\n");
        out.push_str(sdp);
        out
    }
}

/// The ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3): same branch,
/// Request-URI, From, Call-ID and CSeq number; To from the response.
pub fn ack_for_failure(invite: &Message, resp: &Message) -> String {
    let top_via = invite
        .header_list(&HeaderName::Via)
        .next()
        .expect("the INVITE has a Via");
    let mut out = format!(
        "ACK {} SIP/2.0\r\n",
        invite.request_uri().expect("a request")
    );
    out.push_str(&format!("Via: {top_via}\r\n"));
    for route in invite.header_values(&HeaderName::Route) {
        out.push_str(&format!("Route: {route}\r\n"));
    }
    let header = |m: &Message, name: HeaderName| m.header(&name).unwrap_or_default().to_owned();
    out.push_str(&format!("From: {}\r\n", header(invite, HeaderName::From)));
    out.push_str(&format!("To: {}\r\n", header(resp, HeaderName::To)));
    out.push_str(&format!(
        "Call-ID: {}\r\n",
        header(invite, HeaderName::CallId)
    ));
    out.push_str(&format!("CSeq: {} ACK\r\n", cseq_of(invite)));
    out.push_str("Content-Length: 0\r\nMax-Forwards: 70\r\n\r\n");
    out
}

/// One side of a dialog (RFC 3261 §12).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our From value in requests (with our tag).
    pub local: String,
    /// Our To value in requests (with the peer's tag).
    pub remote: String,
    /// The remote target: the Request-URI of our requests.
    pub target: String,
    /// Route values of our requests, in order.
    pub route: Vec<String>,
    /// Our last CSeq number (ACK reuses the INVITE's).
    pub cseq: u32,
    /// SIPml5 re-uses the INVITE's credentials on ACK and BYE (SIPML5.md §4).
    pub auth: Option<DigestSession>,
}

fn parse_own(text: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(text.as_bytes()))
        .unwrap_or_else(|e| panic!("our own message does not parse ({e}):\n{text}"))
}

impl Dialog {
    /// The caller's dialog from the INVITE it sent and the 2xx (§12.1.2): route set =
    /// Record-Route reversed, remote target = the 2xx's Contact.
    pub fn caller(invite: &str, ok: &Message, auth: Option<DigestSession>) -> Dialog {
        let invite = parse_own(invite);
        let mut route: Vec<String> = ok
            .header_list(&HeaderName::RecordRoute)
            .map(str::to_owned)
            .collect();
        route.reverse();
        Dialog {
            call_id: invite.call_id().unwrap_or_default().to_owned(),
            local: invite
                .header(&HeaderName::From)
                .unwrap_or_default()
                .to_owned(),
            remote: ok.header(&HeaderName::To).unwrap_or_default().to_owned(),
            target: uri_of(
                ok.header(&HeaderName::Contact)
                    .unwrap_or_else(|| panic!("no Contact in the 2xx:\n{}", text(ok))),
            ),
            route,
            cseq: cseq_of(&invite),
            auth,
        }
    }

    /// The callee's dialog from a received INVITE and the To tag it answers with (§12.1.1):
    /// route set = Record-Route in order, remote target = the INVITE's Contact.
    pub fn callee(invite: &Message, local_tag: &str) -> Dialog {
        Dialog {
            call_id: invite.call_id().unwrap_or_default().to_owned(),
            local: format!(
                "{};tag={local_tag}",
                invite.header(&HeaderName::To).unwrap_or_default()
            ),
            remote: invite
                .header(&HeaderName::From)
                .unwrap_or_default()
                .to_owned(),
            target: uri_of(
                invite
                    .header(&HeaderName::Contact)
                    .unwrap_or_else(|| panic!("no Contact in the INVITE:\n{}", text(invite))),
            ),
            route: invite
                .header_list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect(),
            cseq: new_cseq(),
            auth: None,
        }
    }

    /// An in-dialog request (§12.2.1.1), credentials pre-computed as SIPml5 does. ACK keeps
    /// the INVITE's CSeq number; every other method takes the next one.
    pub fn request(
        &mut self,
        ua: &Ua,
        method: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> String {
        if method != "ACK" {
            self.cseq += 1;
        }
        let mut out = format!("{method} {} SIP/2.0\r\n", self.target);
        out.push_str(&format!("Via: {}\r\n", ua.via()));
        for route in &self.route {
            out.push_str(&format!("Route: {route}\r\n"));
        }
        out.push_str(&format!("From: {}\r\n", self.local));
        out.push_str(&format!("To: {}\r\n", self.remote));
        out.push_str(&format!("Call-ID: {}\r\n", self.call_id));
        out.push_str(&format!("CSeq: {} {method}\r\n", self.cseq));
        push_body(&mut out, body);
        let target = self.target.clone();
        let auth = self.auth.as_mut().map(|a| a.authorize(method, &target));
        ua.tail(
            &mut out,
            auth.as_deref().map(|a| ("Proxy-Authorization", a)),
        );
        for (name, value) in extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if let Some((_, body)) = body {
            out.push_str(body);
        }
        out
    }
}

/// A Chrome-like JSEP SDP as SIPml5 sends it (SIPML5.md §4: DTLS, BUNDLE, rtcp-mux, all ICE
/// candidates inline), padded with host candidates to at least `min_len` bytes.
pub fn chrome_sdp(setup: &str, min_len: usize) -> String {
    let session = random_u64() >> 2;
    let fingerprint: Vec<String> = (0..32).map(|_| random_hex(2).to_uppercase()).collect();
    let fingerprint = fingerprint.join(":");
    let ufrag = random_alnum(4);
    let pwd = random_alnum(24);
    let stream = random_alnum(36);
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push_str("\r\n");
    };
    line("v=0");
    line(&format!("o=- {session} 2 IN IP4 127.0.0.1"));
    line("s=Doubango Telecom - chrome");
    line("t=0 0");
    line("a=group:BUNDLE 0 1");
    line("a=extmap-allow-mixed");
    line(&format!("a=msid-semantic: WMS {stream}"));
    let common = |s: &mut String, mid: u32| {
        for l in [
            "c=IN IP4 127.0.0.1".to_owned(),
            "a=rtcp:9 IN IP4 0.0.0.0".to_owned(),
            format!("a=candidate:1467250027 1 udp 2122260223 127.0.0.1 5{mid}123 typ host generation 0 network-id 1"),
            format!("a=ice-ufrag:{ufrag}"),
            format!("a=ice-pwd:{pwd}"),
            "a=ice-options:trickle".to_owned(),
            format!("a=fingerprint:sha-256 {fingerprint}"),
            format!("a=setup:{setup}"),
            format!("a=mid:{mid}"),
        ] {
            s.push_str(&l);
            s.push_str("\r\n");
        }
    };
    line("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126");
    common(&mut s, 0);
    let mut line = |l: &str| {
        s.push_str(l);
        s.push_str("\r\n");
    };
    for l in [
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
    ] {
        line(l);
    }
    line(&format!("a=msid:{stream} {}", random_alnum(36)));
    line(&format!(
        "a=ssrc:{} cname:{}",
        random_u64() >> 33,
        random_alnum(16)
    ));
    line("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 118 119 120");
    common(&mut s, 1);
    let mut line = |l: &str| {
        s.push_str(l);
        s.push_str("\r\n");
    };
    for l in [
        "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:13 urn:3gpp:video-orientation",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 transport-cc",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        "a=rtpmap:103 rtx/90000",
        "a=fmtp:103 apt=102",
        "a=rtpmap:45 AV1/90000",
        "a=fmtp:45 level-idx=5;profile=0;tier=0",
        "a=rtpmap:98 VP9/90000",
        "a=fmtp:98 profile-id=0",
        "a=rtpmap:118 red/90000",
        "a=rtpmap:120 ulpfec/90000",
    ] {
        line(l);
    }
    let mut n = 0u32;
    while s.len() < min_len {
        n += 1;
        s.push_str(&format!(
            "a=candidate:{} 1 udp {} 127.0.0.1 {} typ host generation 0 network-id {n} network-cost 10\r\n",
            random_u64() >> 34,
            2_122_260_223u32 - n,
            50_000 + n
        ));
    }
    s
}

// ------------------------------------------------------------------------------------------
// I/O

/// `SIP_TRACE=1` prints every message sent and received.
fn trace(name: &str, dir: &str, message: &str) {
    if std::env::var_os("SIP_TRACE").is_some() {
        println!("{name} {dir}\n{message}\n");
    }
}

#[derive(Debug)]
enum Link {
    // Boxed: the stream is large next to a socket.
    Ws(Box<WebSocketStream<TcpStream>>),
    Udp {
        socket: UdpSocket,
        server: SocketAddr,
    },
}

/// A client connection: WebSocket or UDP, with messages that arrived while waiting for
/// something else kept in order.
#[derive(Debug)]
pub struct Conn {
    link: Link,
    pending: VecDeque<Message>,
    /// Names the connection in failure messages.
    pub name: String,
}

impl Conn {
    /// Opens a WebSocket to `url` (`ws://host:port`) offering the `sip` subprotocol, as
    /// `new WebSocket(url, 'sip')` does, and checks the server selected it.
    pub async fn ws(url: &str, name: &str) -> Conn {
        let mut request = url
            .into_client_request()
            .unwrap_or_else(|e| panic!("bad WebSocket URL {url}: {e}"));
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        let host = url
            .strip_prefix("ws://")
            .unwrap_or_else(|| panic!("not a ws:// URL: {url}"))
            .trim_end_matches('/');
        let tcp = timeout(WAIT, TcpStream::connect(host))
            .await
            .unwrap_or_else(|_| panic!("{name}: TCP connect to {host} timed out"))
            .unwrap_or_else(|e| panic!("{name}: TCP connect to {host}: {e}"));
        let _ = tcp.set_nodelay(true);
        let (ws, resp) = timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
            .await
            .unwrap_or_else(|_| panic!("{name}: WebSocket handshake timed out"))
            .unwrap_or_else(|e| panic!("{name}: WebSocket handshake: {e}"));
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("sip"),
            "{name}: the server must select the `sip` subprotocol (RFC 7118)"
        );
        Conn {
            link: Link::Ws(Box::new(ws)),
            pending: VecDeque::new(),
            name: name.to_owned(),
        }
    }

    /// A UDP socket on 127.0.0.1 talking to `server`.
    pub async fn udp(server: SocketAddr, name: &str) -> Conn {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("UDP bind");
        Conn {
            link: Link::Udp { socket, server },
            pending: VecDeque::new(),
            name: name.to_owned(),
        }
    }

    /// Points a UDP connection at another server address (a restarted server).
    pub fn set_server(&mut self, addr: SocketAddr) {
        match &mut self.link {
            Link::Udp { server, .. } => *server = addr,
            Link::Ws(_) => panic!("{}: not a UDP connection", self.name),
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.link {
            Link::Ws(ws) => ws.get_ref().local_addr(),
            Link::Udp { socket, .. } => socket.local_addr(),
        }
        .expect("local address")
    }

    /// Sends one SIP message: a text frame on WebSocket (SIPml5 calls `ws.send(string)`), a
    /// datagram on UDP.
    pub async fn send(&mut self, message: &str) {
        let name = &self.name;
        trace(name, ">>>", message);
        match &mut self.link {
            Link::Ws(ws) => timeout(WAIT, ws.send(Frame::text(message.to_owned())))
                .await
                .unwrap_or_else(|_| panic!("{name}: send timed out"))
                .unwrap_or_else(|e| panic!("{name}: send failed: {e}")),
            Link::Udp { socket, server } => {
                socket
                    .send_to(message.as_bytes(), *server)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: send failed: {e}"));
            }
        }
    }

    /// Reads one message off the wire before `deadline`. Panics on a text frame: SIPml5
    /// drops non-ASCII bodies that arrive in text frames (SIPML5.md §1).
    async fn read(&mut self, deadline: Instant) -> Option<Message> {
        let name = &self.name;
        let data = match &mut self.link {
            Link::Ws(ws) => loop {
                let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => return None,
                    Ok(None) => panic!("{name}: the server closed the WebSocket"),
                    Ok(Some(Err(e))) => panic!("{name}: WebSocket error: {e}"),
                    Ok(Some(Ok(frame))) => frame,
                };
                match frame {
                    Frame::Binary(data) => break data,
                    Frame::Text(t) => panic!(
                        "{name}: the server sent SIP in a TEXT frame; it must use binary frames \
                         towards SIPml5 (SIPML5.md §1, §9.1):\n{}",
                        t.as_str()
                    ),
                    Frame::Close(c) => panic!("{name}: the server closed the WebSocket: {c:?}"),
                    // tungstenite answers pings itself.
                    Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => continue,
                }
            },
            Link::Udp { socket, .. } => {
                let mut buf = vec![0u8; 65_536];
                match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                    Err(_) => return None,
                    Ok(Err(e)) => panic!("{name}: recv failed: {e}"),
                    Ok(Ok((len, _))) => {
                        buf.truncate(len);
                        Bytes::from(buf)
                    }
                }
            }
        };
        let msg = Message::parse(data.clone()).unwrap_or_else(|e| {
            panic!(
                "{name}: unparseable message from the server ({e}):\n{}",
                String::from_utf8_lossy(&data)
            )
        });
        trace(name, "<<<", &text(&msg));
        assert!(
            msg.defect().is_none(),
            "{name}: the server sent a defective message ({:?}):\n{}",
            msg.defect(),
            text(&msg)
        );
        Some(msg)
    }

    /// The first message (queued or new) that `pred` accepts, within [`WAIT`]; other messages
    /// stay queued. Panics naming `what` on timeout.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).expect("index is in range");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self.read(deadline).await {
                Some(msg) if pred(&msg) => return msg,
                Some(msg) => self.pending.push_back(msg),
                None => panic!(
                    "{}: no {what} within {WAIT:?}; other messages received meanwhile:\n{}",
                    self.name,
                    self.pending
                        .iter()
                        .map(text)
                        .collect::<Vec<_>>()
                        .join("\n---\n")
                ),
            }
        }
    }

    /// The next request with this method.
    pub async fn recv_request(&mut self, method: &str) -> Message {
        self.wait_for(&format!("{method} request"), |m| {
            m.method().is_some_and(|x| x.as_str() == method)
        })
        .await
    }

    /// The next response (any status) to the request with this Call-ID and CSeq number.
    pub async fn next_response(&mut self, call_id: &str, cseq: u32) -> Message {
        self.wait_for(&format!("response to {call_id} CSeq {cseq}"), |m| {
            !m.is_request() && m.call_id() == Some(call_id) && m.cseq().is_ok_and(|c| c.seq == cseq)
        })
        .await
    }

    /// The final response to the request with this Call-ID and CSeq number; provisional
    /// responses to it are dropped.
    pub async fn final_response(&mut self, call_id: &str, cseq: u32) -> Message {
        loop {
            let msg = self.next_response(call_id, cseq).await;
            if msg.status().is_some_and(|s| s >= 200) {
                return msg;
            }
        }
    }

    /// Sends `request` and returns its final response.
    pub async fn request(&mut self, request: &str) -> Message {
        let own = parse_own(request);
        self.send(request).await;
        self.final_response(own.call_id().unwrap_or_default(), cseq_of(&own))
            .await
    }

    /// Closes a WebSocket as a closing browser tab does (close handshake) and waits until the
    /// server has dropped the TCP connection, i.e. its connection task has ended.
    pub async fn close(self) {
        let name = self.name;
        let Link::Ws(mut ws) = self.link else {
            return;
        };
        // The inherent close (sends a Close frame), named outright: with futures' `alloc` feature
        // on (GStreamer's dependencies turn it on), `Box<WebSocketStream>` is a `Sink` too and
        // `ws.close` would resolve to `SinkExt::close`.
        timeout(WAIT, WebSocketStream::close(&mut ws, None))
            .await
            .unwrap_or_else(|_| panic!("{name}: close timed out"))
            .unwrap_or_else(|e| panic!("{name}: close failed: {e}"));
        let drained = timeout(WAIT, async {
            while let Some(Ok(_)) = ws.next().await {}
            let mut tcp = (*ws).into_inner();
            let mut buf = [0u8; 256];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "{name}: the server did not close the TCP connection within {WAIT:?} after the WebSocket close"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Flows

/// SIPml5 accepting an incoming MESSAGE (`e.newSession.accept()`, SIPML5.md §5): 200 OK with a
/// To-tag.
pub async fn accept_message(conn: &mut Conn, req: &Message) {
    conn.send(&response(req, 200, "OK", Some(&new_tag()), &[], None))
        .await;
}

/// SIPml5 receiving an INVITE (SIPML5.md §4): `100 Trying` from the transaction layer, then the
/// automatic `180 Ringing` with To-tag, Contact and Allow. Returns the To-tag.
pub async fn ring(conn: &mut Conn, ua: &Ua, invite: &Message) -> String {
    let tag = new_tag();
    let contact = ua.answer_contact();
    conn.send(&response(invite, 100, "Trying", None, &[], None))
        .await;
    conn.send(&response(
        invite,
        180,
        "Ringing",
        Some(&tag),
        &[("Contact", &contact), ("Allow", SIPML5_ALLOW)],
        None,
    ))
    .await;
    tag
}

/// SIPml5's `accept()` of a ringing call: 200 OK with the answer SDP.
pub async fn answer(conn: &mut Conn, ua: &Ua, invite: &Message, tag: &str, sdp: &str) {
    let contact = ua.answer_contact();
    conn.send(&response(
        invite,
        200,
        "OK",
        Some(tag),
        &[("Contact", &contact), ("Allow", SIPML5_ALLOW)],
        Some(("application/sdp", sdp)),
    ))
    .await;
}

/// Sends REGISTER for session `s` (CSeq + 1, credentials pre-computed when the session has
/// them, as SIPml5 does on refreshes), answers one 401 with fresh credentials, and returns the
/// final response.
pub async fn register(
    conn: &mut Conn,
    ua: &Ua,
    s: &mut Session,
    contact: Option<&str>,
    expires_header: Option<u32>,
) -> Message {
    let uri = ua.registrar_uri();
    let mut challenged = false;
    loop {
        s.cseq += 1;
        let auth = s.auth.as_mut().map(|a| a.authorize("REGISTER", &uri));
        let req = ua.register_request(s, contact, expires_header, auth.as_deref());
        let resp = conn.request(&req).await;
        if resp.status() == Some(401) && !challenged {
            challenged = true;
            s.auth = Some(DigestSession::new(
                Challenge::of(&resp),
                &ua.user,
                &ua.password,
            ));
            continue;
        }
        if resp.status() == Some(200) {
            s.initial = false;
        }
        return resp;
    }
}

/// Registers `ua`'s own Contact with `expires` and asserts the 200.
pub async fn register_ok(conn: &mut Conn, ua: &Ua, expires: u32) -> Session {
    let mut s = Session::new();
    let resp = register(conn, ua, &mut s, Some(&ua.register_contact(expires)), None).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "{}: REGISTER for {} not accepted:\n{}",
        conn.name,
        ua.user,
        text(&resp)
    );
    s
}

/// A binding fetch (REGISTER without Contact, RFC 3261 §10.2.3) on a new session: the
/// Contact elements of the 200.
pub async fn fetch_bindings(conn: &mut Conn, ua: &Ua) -> Vec<String> {
    let mut s = Session::new();
    let resp = register(conn, ua, &mut s, None, None).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "{}: binding fetch for {} not accepted:\n{}",
        conn.name,
        ua.user,
        text(&resp)
    );
    contacts(&resp)
}

/// Sends the first request of session `s` without credentials (as SIPml5 does), expects a
/// 407, ACKs it when the request is an INVITE, and sends the request again with
/// `Proxy-Authorization` (CSeq + 1). Returns the authorized request as sent; its responses
/// are the caller's to await.
pub async fn send_through_407(
    conn: &mut Conn,
    ua: &Ua,
    s: &mut Session,
    method: &str,
    request_uri: &str,
    build: impl Fn(&Session, Option<&str>) -> String,
) -> String {
    let first = build(s, None);
    let challenge = conn.request(&first).await;
    assert_eq!(
        challenge.status(),
        Some(407),
        "{}: a {method} from a local user without credentials must be challenged with 407:\n{}",
        conn.name,
        text(&challenge)
    );
    if method == "INVITE" {
        conn.send(&ack_for_failure(&parse_own(&first), &challenge))
            .await;
    }
    let mut auth = DigestSession::new(Challenge::of(&challenge), &ua.user, &ua.password);
    s.cseq += 1;
    let value = auth.authorize(method, request_uri);
    s.auth = Some(auth);
    let second = build(s, Some(&value));
    conn.send(&second).await;
    second
}

// ------------------------------------------------------------------------------------------
// Proxy-test helpers: header access, a caller's CANCEL, bounded "nothing else came" checks

/// The `branch` of the top Via; panics, showing the message, when there is none.
pub fn top_branch(msg: &Message) -> String {
    msg.branch()
        .unwrap_or_else(|| panic!("no top Via branch in:\n{}", text(msg)))
        .to_owned()
}

/// Every Via element, top first.
pub fn via_list(msg: &Message) -> Vec<String> {
    msg.header_list(&HeaderName::Via)
        .map(str::to_owned)
        .collect()
}

/// The To tag, if any.
pub fn to_tag_of(msg: &Message) -> Option<String> {
    msg.header(&HeaderName::To).and_then(|t| param_of(t, "tag"))
}

/// The From tag, if any.
pub fn from_tag_of(msg: &Message) -> Option<String> {
    msg.header(&HeaderName::From)
        .and_then(|t| param_of(t, "tag"))
}

/// The CSeq method text (`INVITE`, `CANCEL`, …).
pub fn cseq_method_of(msg: &Message) -> String {
    msg.cseq()
        .unwrap_or_else(|_| panic!("no CSeq in:\n{}", text(msg)))
        .method_text
        .to_owned()
}

/// The request method text, `None` for a response.
pub fn method_of(msg: &Message) -> Option<String> {
    msg.method().map(|m| m.as_str().to_owned())
}

/// The CANCEL a UAC sends for an INVITE it sent (RFC 3261 §9.1): the INVITE's top Via (same
/// branch), Request-URI, Route, From, To, Call-ID and CSeq number; no body, no credentials
/// (CANCEL cannot be challenged, §22.1).
pub fn cancel_request(invite: &str) -> String {
    let invite = parse_own(invite);
    let top_via = invite
        .header_list(&HeaderName::Via)
        .next()
        .expect("the INVITE has a Via");
    let mut out = format!(
        "CANCEL {} SIP/2.0\r\n",
        invite.request_uri().expect("a request")
    );
    out.push_str(&format!("Via: {top_via}\r\n"));
    for route in invite.header_values(&HeaderName::Route) {
        out.push_str(&format!("Route: {route}\r\n"));
    }
    let header = |name: HeaderName| invite.header(&name).unwrap_or_default().to_owned();
    out.push_str(&format!("From: {}\r\n", header(HeaderName::From)));
    out.push_str(&format!("To: {}\r\n", header(HeaderName::To)));
    out.push_str(&format!("Call-ID: {}\r\n", header(HeaderName::CallId)));
    out.push_str(&format!("CSeq: {} CANCEL\r\n", cseq_of(&invite)));
    out.push_str("Content-Length: 0\r\nMax-Forwards: 70\r\n\r\n");
    out
}

impl Ua {
    /// MESSAGE as SIPml5 sends it (SIPML5.md §5) to any Request-URI (another domain, an
    /// unknown user); `to_tag` makes it look in-dialog.
    pub fn message_request_to(
        &self,
        target: &str,
        s: &Session,
        body: &str,
        to_tag: Option<&str>,
        proxy_authorization: Option<&str>,
    ) -> String {
        let mut out = format!("MESSAGE {target} SIP/2.0\r\n");
        out.push_str(&format!("Via: {}\r\n", self.via()));
        out.push_str(&format!("From: {}\r\n", self.from_value(&s.tag)));
        match to_tag {
            Some(tag) => out.push_str(&format!("To: <{target}>;tag={tag}\r\n")),
            None => out.push_str(&format!("To: <{target}>\r\n")),
        }
        out.push_str(&format!("Call-ID: {}\r\n", s.call_id));
        out.push_str(&format!("CSeq: {} MESSAGE\r\n", s.cseq));
        push_body(&mut out, Some(("text/plain;charset=utf-8", body)));
        self.tail(
            &mut out,
            proxy_authorization.map(|a| ("Proxy-Authorization", a)),
        );
        out.push_str("\r\n");
        out.push_str(body);
        out
    }
}

impl Conn {
    /// Like [`Conn::wait_for`] with an explicit bound, returning `None` instead of panicking
    /// when nothing matching arrives in time (non-matching messages stay queued).
    pub async fn wait_for_within(
        &mut self,
        within: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            match self.read(deadline).await {
                Some(msg) if pred(&msg) => return Some(msg),
                Some(msg) => self.pending.push_back(msg),
                None => return None,
            }
        }
    }

    /// Removes and returns every queued (received, not yet consumed) message `pred` accepts.
    pub fn take_queued(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept): (Vec<Message>, Vec<Message>) = self.pending.drain(..).partition(pred);
        self.pending = kept.into();
        taken
    }

    /// A round trip with the server over this connection: an out-of-dialog OPTIONS for the
    /// server itself from a foreign (never challenged) identity, answered by the server. The
    /// server writes to one connection in order, so when the answer is here everything it sent
    /// to this connection before is queued: "X did not arrive" then needs no sleep.
    pub async fn barrier(&mut self) {
        let via = match &self.link {
            Link::Ws(_) => format!("SIP/2.0/WS {SIPML5_HOST};branch={};rport", new_branch()),
            Link::Udp { socket, .. } => format!(
                "SIP/2.0/UDP {};branch={};rport",
                socket.local_addr().expect("local address"),
                new_branch()
            ),
        };
        let call_id = new_call_id();
        let req = format!(
            "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: {via}\r\nFrom: <sip:barrier@barrier.invalid>;tag={}\r\n\
             To: <sip:{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\
             Max-Forwards: 70\r\n\r\n",
            new_tag()
        );
        self.send(&req).await;
        let resp = self.final_response(&call_id, 1).await;
        assert!(
            resp.status().is_some_and(|s| s < 300),
            "{}: the server should answer an OPTIONS for itself:\n{}",
            self.name,
            text(&resp)
        );
    }
}

/// The presence requests of SIPML5.md §6–7. SIPml5 adds `Event`/`Accept` only when the
/// application passes them as `sip_headers`, so they are the caller's `headers` lines
/// (`"Event: presence\r\n"`, `"SIP-If-Match: …\r\n"`), possibly none.
impl Ua {
    /// PUBLISH for session `s`: Request-URI and To are the own AOR, `Expires`, no Contact,
    /// a PIDF body when there is one (initial and modify; refresh and remove have none).
    pub fn publish_request(
        &self,
        s: &Session,
        expires: u32,
        headers: &str,
        pidf: Option<&str>,
        proxy_authorization: Option<&str>,
    ) -> String {
        let aor = self.aor();
        let mut out = format!("PUBLISH {aor} SIP/2.0\r\nVia: {}\r\n", self.via());
        out.push_str(&format!(
            "From: {}\r\nTo: <{aor}>\r\nCall-ID: {}\r\nCSeq: {} PUBLISH\r\nExpires: {expires}\r\n{headers}",
            self.from_value(&s.tag),
            s.call_id,
            s.cseq
        ));
        push_body(&mut out, pidf.map(|b| ("application/pidf+xml", b)));
        self.tail(
            &mut out,
            proxy_authorization.map(|a| ("Proxy-Authorization", a)),
        );
        out.push_str("\r\n");
        out.push_str(pidf.unwrap_or_default());
        out
    }

    /// An out-of-dialog SUBSCRIBE to `to_user` of our domain (SIPML5.md §7).
    pub fn subscribe_request(
        &self,
        to_user: &str,
        s: &Session,
        expires: u32,
        headers: &str,
        proxy_authorization: Option<&str>,
    ) -> String {
        let target = format!("sip:{to_user}@{}", self.domain);
        let mut out = format!("SUBSCRIBE {target} SIP/2.0\r\nVia: {}\r\n", self.via());
        out.push_str(&format!(
            "From: {}\r\nTo: <{target}>\r\nContact: {}\r\nCall-ID: {}\r\nCSeq: {} SUBSCRIBE\r\nExpires: {expires}\r\nContent-Length: 0\r\n",
            self.from_value(&s.tag),
            self.dialog_contact(),
            s.call_id,
            s.cseq
        ));
        self.tail(
            &mut out,
            proxy_authorization.map(|a| ("Proxy-Authorization", a)),
        );
        out.push_str(headers);
        out.push_str("\r\n");
        out
    }

    /// An in-dialog SUBSCRIBE of session `s` (refresh, or `expires` 0 to unsubscribe) after
    /// the 2xx `ok`: to its Contact, with the reversed Record-Route set as Route.
    pub fn resubscribe_request(
        &self,
        s: &Session,
        ok: &Message,
        expires: u32,
        headers: &str,
    ) -> String {
        let contact = ok
            .header(&HeaderName::Contact)
            .map(uri_of)
            .expect("the 2xx to a SUBSCRIBE has a Contact");
        let to = ok.header(&HeaderName::To).expect("a response has a To");
        let mut routes: Vec<&str> = ok.header_list(&HeaderName::RecordRoute).collect();
        routes.reverse();
        let mut out = format!("SUBSCRIBE {contact} SIP/2.0\r\nVia: {}\r\n", self.via());
        for r in routes {
            out.push_str(&format!("Route: {r}\r\n"));
        }
        out.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nContact: {}\r\nCall-ID: {}\r\nCSeq: {} SUBSCRIBE\r\nExpires: {expires}\r\nContent-Length: 0\r\nMax-Forwards: 70\r\n{headers}\r\n",
            self.from_value(&s.tag),
            self.dialog_contact(),
            s.call_id,
            s.cseq
        ));
        out
    }
}

impl Conn {
    /// The next NOTIFY of the subscription dialog `call_id`, answered 200 as SIPml5 does
    /// (it matches NOTIFYs on Call-ID only, SIPML5.md §7).
    pub async fn notify_ok(&mut self, call_id: &str) -> Message {
        let n = self
            .wait_for(&format!("NOTIFY of {call_id}"), |m| {
                m.method().is_some_and(|x| x.as_str() == "NOTIFY") && m.call_id() == Some(call_id)
            })
            .await;
        self.send(&response(&n, 200, "OK", None, &[], None)).await;
        n
    }
}

/// A message's body as text (lossy UTF-8).
pub fn body_text(msg: &Message) -> String {
    String::from_utf8_lossy(msg.body()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_rfc_2617_example() {
        let challenge = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("parses");
        let mut auth = DigestSession::new(challenge, "Mufasa", "Circle Of Life");
        auth.cnonce = "0a4f113b".into();
        let value = auth.authorize("GET", "/dir/index.html");
        assert!(
            value.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{value}"
        );
        assert!(value.contains("qop=auth,nc=00000001"), "{value}");
        assert!(value.ends_with(r#",opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
    }

    #[test]
    fn challenge_params_with_quotes_and_stale() {
        let c = Challenge::parse(
            r#"Digest realm="ex\"ample",nonce="n,1",algorithm=SHA-256,qop="auth",stale=true"#,
        )
        .expect("parses");
        assert_eq!(c.realm, "ex\"ample");
        assert_eq!(c.nonce, "n,1");
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert!(c.stale);
        assert!(Challenge::parse("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn sipml5_register_shape() {
        let ua = Ua::sipml5("alice", "pw");
        let s = Session::new();
        let req = ua.register_request(&s, Some(&ua.register_contact(300)), None, None);
        let msg = parse_own(&req);
        assert!(msg
            .header(&HeaderName::From)
            .unwrap()
            .starts_with("\"alice\"<sip:alice@"));
        assert_eq!(
            msg.header(&HeaderName::Contact),
            Some("\"alice\"<sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws>;expires=300;click2call=no;+g.oma.sip-im;+audio;language=\"en,fr\"")
        );
        assert_eq!(contacts(&msg).len(), 1, "the quoted comma does not split");
        assert!(msg.top_via().unwrap().host == SIPML5_HOST);
        assert!(req.ends_with("Supported: path\r\n\r\n"));
        assert!(chrome_sdp("actpass", 6144).len() >= 6144);
    }
}
