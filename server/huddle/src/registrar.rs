//! The registrar and location service (RFC 3261 §10, RFC 5626): bindings of addresses-of-record
//! to the places a user can be reached.
//!
//! This module is sans-IO: it takes parsed REGISTER requests, where they came from and an
//! `Instant`, and returns what to answer; it drives expiry from [`Location::poll_timeout`].
//!
//! Persistence is write-back, as Kamailio's usrloc `db_mode=2`: a change only marks its
//! binding, and the core takes the marked bindings as they then stand
//! ([`Location::take_changes`]) once per `[registrar] persist_interval_ms` and hands them to
//! the store writer as one batch, each binding once however often it was refreshed in
//! between. A clean stop writes the last batch; a crash (`kill -9`, power loss) loses at most
//! the changes of the last interval (and of the commit in flight), which for the usual
//! change, a refresh, costs nothing: the client refreshes again, and until then the restored
//! binding (its previous refresh) still routes.
//!
//! How bindings are told apart matters for browsers: every SIPml5 client on earth registers the
//! same `sip:alice@df7jal23ls0d.invalid` Contact, so a binding that arrived over a connection is
//! keyed by (Contact, connection), and two tabs stay two bindings. RFC 5626 clients (JsSIP) are
//! keyed by `+sip.instance` and `reg-id`. Datagram bindings follow RFC 3261: keyed by Contact.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use huddle_sip::headers::NameAddr;
use huddle_sip::idmap::IdMap;
use huddle_sip::message::HeaderName;
use huddle_sip::{syntax, Message};
use serde::{Deserialize, Serialize};

use crate::config::RegistrarConfig;
use crate::store::Record;
use crate::transport::{FlowId, Transport};

/// How to reach a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Over the connection the REGISTER came in on (WS, WSS, TCP, TLS).
    Flow {
        flow: FlowId,
        transport: Transport,
        remote: SocketAddr,
    },
    /// To the address the REGISTER came from (UDP), or a persisted stream binding after restart.
    Address {
        transport: Transport,
        addr: SocketAddr,
        /// UDP: our listening socket the REGISTER came to, which requests to the binding are
        /// sent from (a NAT or a client bound to one address takes them from there only).
        /// Stored with the binding (`BindingRecord::local`), so a restart keeps it; `None`
        /// (records written before it was stored): sent from the family's first socket.
        local: Option<SocketAddr>,
    },
}

impl Reach {
    /// The flow, if connection-bound.
    pub fn flow(&self) -> Option<FlowId> {
        match self {
            Reach::Flow { flow, .. } => Some(*flow),
            Reach::Address { .. } => None,
        }
    }
}

/// One binding.
#[derive(Clone)]
pub struct Binding {
    /// The Contact URI (without `<>`).
    pub contact: String,
    /// The whole Contact header element as registered, echoed in 200 responses.
    pub contact_header: String,
    pub reach: Reach,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub expires_at: Instant,
    /// Wall-clock expiry, for persistence.
    pub expires_unix: u64,
    /// Registration order, to replace the oldest binding when an AOR is full.
    pub serial: u64,
    /// The stored record up to its `cseq` (all but the two numbers a refresh changes), as
    /// [`Location::take_changes`] last wrote it: a refresh on the same connection changes
    /// only those, and this spares escaping and copying the rest again (~1.3k instructions
    /// a WebSocket refresh). Empty until written; emptied by every change to what it holds
    /// (the refresh in [`Location::register_into`] is the only place fields change).
    record_head: Vec<u8>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kept record head is the fields again, as JSON bytes: its length says enough.
        f.debug_struct("Binding")
            .field("contact", &self.contact)
            .field("contact_header", &self.contact_header)
            .field("reach", &self.reach)
            .field("instance", &self.instance)
            .field("reg_id", &self.reg_id)
            .field("call_id", &self.call_id)
            .field("cseq", &self.cseq)
            .field("expires_at", &self.expires_at)
            .field("expires_unix", &self.expires_unix)
            .field("serial", &self.serial)
            .field("record_head_len", &self.record_head.len())
            .finish()
    }
}

impl Binding {
    /// The UDP socket its REGISTER came to ([`Reach::Address`]'s `local`).
    fn local(&self) -> Option<SocketAddr> {
        match self.reach {
            Reach::Address { local, .. } => local,
            Reach::Flow { .. } => None,
        }
    }

    /// Seconds left at `now`.
    pub fn remaining(&self, now: Instant) -> u32 {
        self.expires_at
            .saturating_duration_since(now)
            .as_secs()
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// True when a binding with this key (RFC 5626 instance and reg-id, else Contact and
    /// connection) is this one.
    fn has_key(&self, key: &BindingKey<'_>) -> bool {
        match (&self.instance, self.reg_id, key.instance, key.reg_id) {
            (Some(a), Some(ra), Some(b), Some(rb)) => a == b && ra == rb,
            (Some(_), Some(_), _, _) | (_, _, Some(_), Some(_)) => false,
            _ => self.contact == key.contact && self.reach.flow() == key.flow,
        }
    }

    /// The stored form, under `location/<aor>/…`. Every binding is written, so plugins can see
    /// who is registered and over which connection; a restart restores UDP and TCP bindings and
    /// drops WebSocket ones (their connection is gone).
    pub fn record(&self, aor: &str) -> BindingRecord {
        let (transport, addr, flow) = match self.reach {
            Reach::Address {
                transport, addr, ..
            } => (transport, addr, None),
            Reach::Flow {
                flow,
                transport,
                remote,
            } => (transport, remote, Some(flow.get())),
        };
        BindingRecord {
            local: self.local().map(|l| l.to_string()),
            aor: aor.to_owned(),
            key: self.store_key(aor),
            contact: self.contact.clone(),
            contact_header: self.contact_header.clone(),
            transport: transport.name().to_owned(),
            addr: addr.to_string(),
            flow,
            instance: self.instance.clone(),
            reg_id: self.reg_id,
            call_id: self.call_id.clone(),
            cseq: self.cseq,
            expires_unix: self.expires_unix,
        }
    }

    /// The stored value of this binding (keyed `key`, its [`Binding::store_key`]): byte for
    /// byte what [`Record::encode`] makes of [`Binding::record`] (serde_json's field order,
    /// escaping and number forms), written straight from the binding's fields. Plugins and
    /// older builds read these records as JSON, so the format stays; serde_json's generic
    /// writer cost ~4k instructions a binding, most of the registrar's share of persisting.
    pub fn encode_record(&self, aor: &str, key: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.record_capacity(aor, key));
        self.encode_head(aor, key, &mut out);
        self.encode_tail(&mut out);
        out
    }

    /// [`Binding::encode_record`], the part before the `cseq` taken from the last one written
    /// when nothing in it changed since (see `record_head`).
    fn encode_record_kept(&mut self, aor: &str, key: &str) -> Vec<u8> {
        if self.record_head.is_empty() {
            let mut head = std::mem::take(&mut self.record_head);
            head.reserve(self.record_capacity(aor, key));
            self.encode_head(aor, key, &mut head);
            self.record_head = head;
        }
        // The two numbers take at most 10 + 20 digits.
        let mut out = Vec::with_capacity(self.record_head.len() + 48);
        out.extend_from_slice(&self.record_head);
        self.encode_tail(&mut out);
        // The head is right only while every change to a binding empties it: every test and
        // debug build holds it to a fresh encoding.
        debug_assert_eq!(out, self.encode_record(aor, key), "stale record head");
        out
    }

    /// A size the record fits in: the field names and numbers take under 192 bytes; escapes
    /// (rare) may grow it.
    fn record_capacity(&self, aor: &str, key: &str) -> usize {
        let strings = [
            aor,
            key,
            &self.contact,
            &self.contact_header,
            &self.call_id,
            self.instance.as_deref().unwrap_or_default(),
        ];
        // The address's text: at most 47 bytes (a scoped IPv6 address and port); the local
        // socket's the same, with its name.
        192 + 48 + 60 + strings.iter().map(|s| s.len()).sum::<usize>()
    }

    /// The record up to and including `"cseq":`.
    fn encode_head(&self, aor: &str, key: &str, out: &mut Vec<u8>) {
        let (transport, addr, flow) = match self.reach {
            Reach::Address {
                transport, addr, ..
            } => (transport, addr, None),
            Reach::Flow {
                flow,
                transport,
                remote,
            } => (transport, remote, Some(flow.get())),
        };
        let mut v4 = arrayvec::ArrayString::<21>::new();
        let addr = addr_text(addr, &mut v4);
        out.push(Record::FORMAT_VERSION);
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(b"{\"aor\":");
        push_json_str(out, aor);
        out.extend_from_slice(b",\"key\":");
        push_json_str(out, key);
        out.extend_from_slice(b",\"contact\":");
        push_json_str(out, &self.contact);
        out.extend_from_slice(b",\"contact_header\":");
        push_json_str(out, &self.contact_header);
        out.extend_from_slice(b",\"transport\":");
        push_json_plain(out, transport.name());
        out.extend_from_slice(b",\"addr\":");
        push_json_plain(out, &addr);
        out.extend_from_slice(b",\"flow\":");
        match flow {
            Some(f) => out.extend_from_slice(digits.format(f).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        // Only when known, as serde leaves it out (`skip_serializing_if`).
        if let Some(local) = self.local() {
            let mut v4 = arrayvec::ArrayString::<21>::new();
            out.extend_from_slice(b",\"local\":");
            push_json_plain(out, &addr_text(local, &mut v4));
        }
        out.extend_from_slice(b",\"instance\":");
        match &self.instance {
            Some(i) => push_json_str(out, i),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"reg_id\":");
        match self.reg_id {
            Some(r) => out.extend_from_slice(digits.format(r).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"call_id\":");
        push_json_str(out, &self.call_id);
        out.extend_from_slice(b",\"cseq\":");
    }

    /// The record from its `cseq` value on.
    fn encode_tail(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(digits.format(self.cseq).as_bytes());
        out.extend_from_slice(b",\"expires_unix\":");
        out.extend_from_slice(digits.format(self.expires_unix).as_bytes());
        out.push(b'}');
    }

    /// The store key of this binding under `location/`: RFC 5626 bindings by instance and
    /// reg-id, connection-bound ones by Contact and connection (two SIPml5 tabs share a
    /// Contact), the rest by Contact.
    pub fn store_key(&self, aor: &str) -> String {
        // Sized up front: format! would grow the string as it writes.
        let mut key = String::with_capacity(aor.len() + self.contact.len() + 32);
        self.write_store_key(aor, &mut key);
        key
    }

    /// [`Binding::store_key`] written into `key` (cleared first), a buffer the caller reuses.
    fn write_store_key(&self, aor: &str, key: &mut String) {
        key.clear();
        key.push_str(aor);
        key.push('/');
        match (&self.instance, self.reg_id, self.reach) {
            (Some(i), Some(r), _) => {
                key.push_str(i);
                key.push('#');
                key.push_str(itoa::Buffer::new().format(r));
            }
            (_, _, Reach::Flow { flow, .. }) => {
                key.push_str(&self.contact);
                key.push_str("@flow");
                key.push_str(itoa::Buffer::new().format(flow.get()));
            }
            _ => key.push_str(&self.contact),
        }
    }
}

/// A binding as stored under `location/<aor>/<binding>` (versioned by the store's record
/// encoding).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindingRecord {
    pub aor: String,
    /// Its own key under `location/` (records written before this field existed have none).
    #[serde(default)]
    pub key: String,
    pub contact: String,
    pub contact_header: String,
    pub transport: String,
    pub addr: String,
    /// The connection it is bound to, for connection-bound bindings (as in the flow token).
    #[serde(default)]
    pub flow: Option<u64>,
    /// UDP: our listening socket (`ip:port`) the REGISTER came to, which requests to the
    /// binding leave from. Absent from records written before it was kept, and for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub expires_unix: u64,
}

/// A write the store writer makes, from [`Location::take_changes`]: `value` is the encoded
/// [`BindingRecord`] (format byte and JSON, see [`Record`]), made on the SIP thread from the
/// binding itself; `key` is relative to `location/`.
#[derive(Debug, Clone)]
pub enum Change {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// Appends `s` to `out` as a JSON string, escaped as serde_json escapes it: `"` and `\\`,
/// the control characters (`\\b \\t \\n \\f \\r` by name, the rest as `\\u00xx`), nothing
/// else. The whole string is tested first (a test without early exit, which the compiler turns
/// into vector instructions) and copied at once when nothing needs escaping, which is nearly
/// always: a byte at a time cost ~10 instructions a byte, a copy per 16-byte chunk ~1 k a
/// record.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    fn needs_escape(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }
    fn push_escaped(out: &mut Vec<u8>, b: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x0D => out.extend_from_slice(b"\\r"),
            0x00..=0x1F => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0F)]);
            }
            _ => out.push(b),
        }
    }
    // Escaping only ever touches ASCII bytes, so bytes can be copied through one by one even
    // where a chunk cuts a character.
    fn push_part(out: &mut Vec<u8>, part: &[u8]) {
        if part.iter().fold(false, |any, &b| any | needs_escape(b)) {
            for &b in part {
                push_escaped(out, b);
            }
        } else {
            out.extend_from_slice(part);
        }
    }
    // A string with something to escape (a Contact with a quoted `+sip.instance`) goes by
    // 16-byte chunks, so that only the chunks holding escapes are written byte by byte.
    let bytes = s.as_bytes();
    out.push(b'"');
    if bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        let mut chunks = bytes.chunks_exact(16);
        for chunk in &mut chunks {
            push_part(out, chunk);
        }
        push_part(out, chunks.remainder());
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

/// A JSON string of text that never needs escaping (a transport's name, a socket address's
/// `Display` form: letters, digits, `.:[]%`), without [`push_json_str`]'s scan for escapes
/// (~90 instructions for a two-letter name, ~190 for an address, in every record).
fn push_json_plain(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `addr` as its `Display` form writes it: an IPv4 address (every UDP binding here) is written
/// into `v4` digit by digit, since the formatting machinery cost more than the rest of the
/// record; any other goes through `Display`.
fn addr_text(addr: SocketAddr, v4: &mut arrayvec::ArrayString<21>) -> Cow<'_, str> {
    let SocketAddr::V4(a) = addr else {
        return Cow::Owned(addr.to_string());
    };
    let mut digits = itoa::Buffer::new();
    for (i, octet) in a.ip().octets().into_iter().enumerate() {
        if i > 0 {
            v4.push('.');
        }
        v4.push_str(digits.format(octet));
    }
    v4.push(':');
    v4.push_str(digits.format(a.port()));
    Cow::Borrowed(v4.as_str())
}

/// What tells one binding of an AOR from another, borrowed from a REGISTER's Contact.
struct BindingKey<'a> {
    contact: &'a str,
    instance: Option<&'a str>,
    reg_id: Option<u32>,
    flow: Option<FlowId>,
}

/// One Contact of a REGISTER, checked, before anything changes.
struct Update<'m> {
    expires: u32,
    contact: &'m str,
    /// The Contact element as the 200 echoes it (see [`write_contact_header`]).
    addr: NameAddr<'m>,
    instance: Option<Cow<'m, str>>,
    reg_id: Option<u32>,
}

/// The Contact parameters the registrar reads, each as [`NameAddr::param`] finds it (the first
/// of its name, `Some(None)` when it has no value), from one pass over the parameters instead
/// of a search per name: browsers' Contacts carry half a dozen feature tags.
struct ContactParams<'m> {
    expires: Option<Option<&'m str>>,
    instance: Option<Option<&'m str>>,
    reg_id: Option<Option<&'m str>>,
}

impl<'m> ContactParams<'m> {
    fn of(addr: &NameAddr<'m>) -> Self {
        let mut found = ContactParams {
            expires: None,
            instance: None,
            reg_id: None,
        };
        for p in syntax::params(addr.params) {
            let slot = if p.name.eq_ignore_ascii_case("expires") {
                &mut found.expires
            } else if p.name.eq_ignore_ascii_case("+sip.instance") {
                &mut found.instance
            } else if p.name.eq_ignore_ascii_case("reg-id") {
                &mut found.reg_id
            } else {
                continue;
            };
            slot.get_or_insert(p.value);
        }
        found
    }
}

/// Writes a Contact element into `out` without its expires parameter (the 200 adds the
/// remaining time), `<>` always.
fn write_contact_header(out: &mut String, addr: &NameAddr<'_>) {
    out.clear();
    if addr.bracketed {
        if let Some(d) = addr.display {
            out.push_str(d);
        }
    }
    out.push('<');
    out.push_str(addr.uri);
    out.push('>');
    syntax::push_params_except(out, addr.params, |name| {
        name.eq_ignore_ascii_case("expires")
    });
}

/// Replaces `slot`'s text with `text`, keeping its allocation when it has room; true when the
/// text changed.
fn set_text(slot: &mut String, text: &str) -> bool {
    if slot == text {
        return false;
    }
    slot.clear();
    slot.push_str(text);
    true
}

/// A REGISTER refused: the status, reason and (for 423) the Min-Expires to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub min_expires: Option<u32>,
}

/// The Contact values of a 200 to REGISTER (each `<uri>;params;expires=N`), written one after
/// another into one buffer that the caller keeps from one REGISTER to the next: a `Vec` of
/// `String`s was two allocations per REGISTER.
#[derive(Debug, Default)]
pub struct ContactList {
    text: String,
    /// Where each value ends in `text`.
    ends: Vec<usize>,
}

impl ContactList {
    /// Every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let value = self.text.get(start..end).unwrap_or_default();
            start = end;
            value
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is none (the answer to a wildcard removal, or to an AOR left empty).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Appends `contact_header` with `;expires=` the seconds left.
    fn push(&mut self, contact_header: &str, expires: u32) {
        let mut digits = itoa::Buffer::new();
        self.text.push_str(contact_header);
        self.text.push_str(";expires=");
        self.text.push_str(digits.format(expires));
        self.ends.push(self.text.len());
    }
}

/// The answer to a REGISTER.
#[derive(Debug)]
pub enum RegisterOutcome {
    /// 200 OK listing every current binding as `Contact` values.
    Ok { contacts: Vec<String> },
    /// Any other answer.
    Reject {
        status: u16,
        reason: &'static str,
        min_expires: Option<u32>,
    },
}

/// The location service.
#[derive(Debug, Default)]
pub struct Location {
    /// Keyed by AOR: only authenticated users (or records the store held) get an entry; a
    /// seeded fast hasher all the same.
    bindings: HashMap<String, Vec<Binding>, foldhash::fast::RandomState>,
    by_flow: IdMap<FlowId, Vec<String>>,
    expiries: BTreeMap<(Instant, u64), String>,
    serial: u64,
    /// The store keys of the bindings changed (added, refreshed, removed) since the last
    /// [`Location::take_changes`], each with the length of its AOR, the key's first part.
    /// The store is written from here in one batch per persist interval, each key once as it
    /// then stands: a binding refreshed many times within the interval is one write.
    dirty: HashMap<String, usize, foldhash::fast::RandomState>,
    /// A store key being built or compared, reused; also the Contact header a refresh writes
    /// before comparing it with the binding's (the two swap allocations when it changed).
    scratch: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Location {
    /// An empty location service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live binding of an AOR.
    pub fn lookup(&self, aor: &str, now: Instant) -> impl Iterator<Item = &Binding> {
        self.bindings
            .get(aor)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// Number of AORs with bindings.
    pub fn aor_count(&self) -> usize {
        self.bindings.len()
    }

    /// Handles a REGISTER for `aor` that has passed authentication.
    pub fn register(
        &mut self,
        req: &Message,
        aor: &str,
        reach: Reach,
        now: Instant,
        cfg: &RegistrarConfig,
    ) -> RegisterOutcome {
        let mut contacts = ContactList::default();
        match self.register_into(req, aor, reach, now, cfg, &mut contacts) {
            Ok(()) => RegisterOutcome::Ok {
                contacts: contacts.iter().map(str::to_owned).collect(),
            },
            Err(Rejection {
                status,
                reason,
                min_expires,
            }) => RegisterOutcome::Reject {
                status,
                reason,
                min_expires,
            },
        }
    }

    /// [`Location::register`] with the 200's Contact values written into `contacts` (cleared
    /// first; left empty on a rejection), a list the caller reuses.
    pub fn register_into(
        &mut self,
        req: &Message,
        aor: &str,
        reach: Reach,
        now: Instant,
        cfg: &RegistrarConfig,
        contacts: &mut ContactList,
    ) -> Result<(), Rejection> {
        contacts.clear();
        let reject = |status, reason| {
            Err(Rejection {
                status,
                reason,
                min_expires: None,
            })
        };
        let Some(call_id) = req.call_id() else {
            return reject(400, "Bad Request - Missing Call-ID");
        };
        let Ok(cseq) = req.cseq() else {
            return reject(400, "Bad Request - Invalid CSeq");
        };
        let header_expires = match req.expires() {
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return reject(400, "Bad Request - Invalid Expires"),
            None => None,
        };
        // Nearly every REGISTER has one Contact: it goes in `first`, no Vec allocated for it.
        let mut first: Option<Update<'_>> = None;
        let mut more: Vec<Update<'_>> = Vec::new();
        for (i, text) in req.header_list(&HeaderName::Contact).enumerate() {
            if text == "*" {
                if req.header_list(&HeaderName::Contact).nth(1).is_some()
                    || header_expires != Some(0)
                {
                    return reject(400, "Bad Request - Wildcard Contact Needs Expires 0");
                }
                for b in self.bindings.remove(aor).unwrap_or_default() {
                    self.forget_index(aor, &b);
                }
                return Ok(());
            }
            // Validation parsed the first one already (the message keeps it).
            let Ok(addr) = req.contact_at(i, text) else {
                return reject(400, "Bad Request - Malformed Contact");
            };
            let params = ContactParams::of(&addr);
            let requested = match params.expires {
                Some(Some(v)) => match syntax::parse_u32(v) {
                    Some(n) => n,
                    None => return reject(400, "Bad Request - Invalid Contact expires"),
                },
                Some(None) => return reject(400, "Bad Request - Invalid Contact expires"),
                None => header_expires.unwrap_or(cfg.default_expires),
            };
            if requested != 0 && requested < cfg.min_expires {
                return Err(Rejection {
                    status: 423,
                    reason: "Interval Too Brief",
                    min_expires: Some(cfg.min_expires),
                });
            }
            let update = Update {
                expires: requested.min(cfg.max_expires),
                contact: addr.uri,
                instance: params.instance.flatten().map(syntax::unquote),
                reg_id: params.reg_id.flatten().and_then(syntax::parse_u32),
                addr,
            };
            match first {
                None => first = Some(update),
                Some(_) => more.push(update),
            }
        }
        let flow = reach.flow();
        for update in first.into_iter().chain(more) {
            let key = BindingKey {
                contact: update.contact,
                instance: update.instance.as_deref(),
                reg_id: update.reg_id,
                flow,
            };
            // The binding this Contact refreshes, taken out of its AOR's list with its expiry
            // entry (whose AOR text the new entry reuses).
            let mut previous = None;
            if let Some(list) = self.bindings.get_mut(aor) {
                if let Some(pos) = list.iter().position(|b| b.has_key(&key)) {
                    let old = &list[pos];
                    // RFC 3261 §10.3 step 7: an out-of-order refresh within one Call-ID.
                    if old.call_id == call_id && cseq.seq <= old.cseq {
                        continue;
                    }
                    let old = list.remove(pos);
                    let aor_text = self.expiries.remove(&(old.expires_at, old.serial));
                    previous = Some((old, aor_text));
                }
            }
            if update.expires == 0 {
                if let Some((old, _)) = previous {
                    self.unlink_flow(aor, &old);
                    self.touch(aor, &old);
                }
                continue;
            }
            self.serial += 1;
            let expires_at = now + Duration::from_secs(u64::from(update.expires));
            let expires_unix = unix_now() + u64::from(update.expires);
            let (binding, aor_text) = match previous {
                // A refresh: the binding keeps its strings, rewritten in place.
                Some((mut b, aor_text)) => {
                    if b.reach.flow() != flow {
                        self.unlink_flow(aor, &b);
                        self.link_flow(aor, flow);
                    }
                    // What the kept record head holds, each compared as it is written.
                    let mut changed = set_text(&mut b.contact, update.contact);
                    write_contact_header(&mut self.scratch, &update.addr);
                    if b.contact_header != self.scratch {
                        std::mem::swap(&mut b.contact_header, &mut self.scratch);
                        changed = true;
                    }
                    match (&mut b.instance, update.instance) {
                        (Some(old), Some(new)) => changed |= set_text(old, &new),
                        (slot, new) => {
                            changed |= slot.is_some() || new.is_some();
                            *slot = new.map(Cow::into_owned);
                        }
                    }
                    changed |= b.reg_id != update.reg_id || b.reach != reach;
                    b.reg_id = update.reg_id;
                    b.reach = reach;
                    changed |= set_text(&mut b.call_id, call_id);
                    if changed {
                        b.record_head.clear();
                    }
                    b.cseq = cseq.seq;
                    b.expires_at = expires_at;
                    b.expires_unix = expires_unix;
                    b.serial = self.serial;
                    (b, aor_text)
                }
                None => {
                    if self.binding_count(aor) >= cfg.max_bindings_per_aor {
                        if let Some(list) = self.bindings.get_mut(aor) {
                            let oldest = list.iter().enumerate().min_by_key(|(_, b)| b.serial);
                            if let Some((oldest, _)) = oldest {
                                let old = list.remove(oldest);
                                self.forget_index(aor, &old);
                            }
                        }
                    }
                    self.link_flow(aor, flow);
                    let mut contact_header = String::with_capacity(update.contact.len() + 64);
                    write_contact_header(&mut contact_header, &update.addr);
                    let binding = Binding {
                        contact: update.contact.to_owned(),
                        contact_header,
                        reach,
                        instance: update.instance.map(Cow::into_owned),
                        reg_id: update.reg_id,
                        call_id: call_id.to_owned(),
                        cseq: cseq.seq,
                        expires_at,
                        expires_unix,
                        serial: self.serial,
                        record_head: Vec::new(),
                    };
                    (binding, None)
                }
            };
            self.insert(aor, binding, aor_text);
        }
        for b in self.lookup(aor, now) {
            contacts.push(&b.contact_header, b.remaining(now));
        }
        if self.bindings.get(aor).is_some_and(Vec::is_empty) {
            self.bindings.remove(aor);
        }
        Ok(())
    }

    /// Adds `binding` (its flow already linked) to its AOR, its expiry and the store.
    /// `aor_text` is an owned copy of `aor` to reuse for the expiry entry.
    fn insert(&mut self, aor: &str, binding: Binding, aor_text: Option<String>) {
        self.touch(aor, &binding);
        self.insert_quietly(aor, binding, aor_text);
    }

    /// [`Location::insert`] of a binding the store already holds as it is.
    fn insert_quietly(&mut self, aor: &str, binding: Binding, aor_text: Option<String>) {
        self.expiries.insert(
            (binding.expires_at, binding.serial),
            aor_text.unwrap_or_else(|| aor.to_owned()),
        );
        match self.bindings.get_mut(aor) {
            Some(list) => list.push(binding),
            None => {
                self.bindings.insert(aor.to_owned(), vec![binding]);
            }
        }
    }

    /// Notes that `aor` has a binding on `flow`, for [`Location::remove_flow`].
    fn link_flow(&mut self, aor: &str, flow: Option<FlowId>) {
        if let Some(flow) = flow {
            let aors = self.by_flow.entry(flow).or_default();
            if !aors.iter().any(|a| a == aor) {
                aors.push(aor.to_owned());
            }
        }
    }

    /// Undoes [`Location::link_flow`] for a binding removed from its AOR's list, unless
    /// another binding of the AOR still uses that flow.
    fn unlink_flow(&mut self, aor: &str, b: &Binding) {
        let Some(flow) = b.reach.flow() else {
            return;
        };
        let still_used = self
            .bindings
            .get(aor)
            .is_some_and(|list| list.iter().any(|o| o.reach.flow() == Some(flow)));
        if still_used {
            return;
        }
        if let Some(aors) = self.by_flow.get_mut(&flow) {
            if let Some(i) = aors.iter().position(|a| a == aor) {
                aors.swap_remove(i);
            }
            if aors.is_empty() {
                self.by_flow.remove(&flow);
            }
        }
    }

    /// Drops the indexes of a binding already removed from its AOR's list and deletes it from
    /// the store.
    fn forget_index(&mut self, aor: &str, b: &Binding) {
        self.expiries.remove(&(b.expires_at, b.serial));
        self.unlink_flow(aor, b);
        self.touch(aor, b);
    }

    /// Notes that `b`'s stored form (present or not) must be written back.
    fn touch(&mut self, aor: &str, b: &Binding) {
        b.write_store_key(aor, &mut self.scratch);
        // A refresh within the interval finds its key already there: no allocation.
        if !self.dirty.contains_key(self.scratch.as_str()) {
            self.dirty.insert(self.scratch.clone(), aor.len());
        }
    }

    /// Whether any binding changed since the last [`Location::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Appends to `out` what the store must do to hold every binding changed since the last
    /// call as it is now: a put of its record for each changed binding that is still here,
    /// a delete for each one that is gone, one per key whatever happened to it in between.
    /// The records are encoded here, once per key and call, not at every change.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        let Location {
            bindings,
            dirty,
            scratch,
            ..
        } = self;
        out.reserve(dirty.len());
        for (key, aor_len) in dirty.drain() {
            let aor = key.get(..aor_len).unwrap_or_default();
            let current = bindings.get_mut(aor).and_then(|list| {
                list.iter_mut().find(|b| {
                    b.write_store_key(aor, scratch);
                    *scratch == key
                })
            });
            match current {
                Some(b) => {
                    let value = b.encode_record_kept(aor, &key);
                    out.push(Change::Put { key, value });
                }
                None => out.push(Change::Delete { key }),
            }
        }
    }

    /// Removes every binding that lives on a connection that closed. Returns the AORs touched.
    pub fn remove_flow(&mut self, flow: FlowId) -> Vec<String> {
        let aors = self.by_flow.remove(&flow).unwrap_or_default();
        for aor in &aors {
            if let Some(list) = self.bindings.get_mut(aor) {
                let (gone, kept): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|b| b.reach.flow() == Some(flow));
                *list = kept;
                if list.is_empty() {
                    self.bindings.remove(aor);
                }
                for b in gone {
                    self.expiries.remove(&(b.expires_at, b.serial));
                    self.touch(aor, &b);
                }
            }
        }
        aors
    }

    /// The next expiry deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.keys().next().map(|(t, _)| *t)
    }

    /// Bindings an AOR has (expired ones not yet removed by [`Location::expire`] included).
    pub fn binding_count(&self, aor: &str) -> usize {
        self.bindings.get(aor).map_or(0, Vec::len)
    }

    /// The `location/` keys of an AOR's bindings (as [`Location::binding_count`] counts them),
    /// sorted.
    pub fn binding_keys(&self, aor: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .bindings
            .get(aor)
            .into_iter()
            .flatten()
            .map(|b| b.store_key(aor))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Removes bindings that expired by `now`. Returns the AORs that lost bindings (once
    /// each).
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut touched: Vec<String> = Vec::new();
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, serial), aor) = entry.remove_entry();
            if let Some(list) = self.bindings.get_mut(&aor) {
                if let Some(pos) = list.iter().position(|b| b.serial == serial) {
                    let b = list.remove(pos);
                    if list.is_empty() {
                        self.bindings.remove(&aor);
                    }
                    self.forget_index(&aor, &b);
                    if !touched.contains(&aor) {
                        touched.push(aor);
                    }
                }
            }
        }
        touched
    }

    /// Restores a persisted binding at start-up; expired records are deleted from the store
    /// with the next [`Location::take_changes`].
    pub fn restore(&mut self, record: BindingRecord, now: Instant) {
        let left = record.expires_unix.saturating_sub(unix_now());
        let transport = Transport::from_token(&record.transport);
        let addr = record.addr.parse::<SocketAddr>().ok();
        let old_key = if record.key.is_empty() {
            match (&record.instance, record.reg_id) {
                (Some(i), Some(r)) => format!("{}/{i}#{r}", record.aor),
                _ => format!("{}/{}", record.aor, record.contact),
            }
        } else {
            record.key.clone()
        };
        let usable = transport.filter(|t| !t.is_websocket());
        let (Some(transport), Some(addr), true) = (usable, addr, left > 0) else {
            self.touch_key(old_key, record.aor.len());
            return;
        };
        self.serial += 1;
        let binding = Binding {
            contact: record.contact,
            contact_header: record.contact_header,
            reach: Reach::Address {
                transport,
                addr,
                local: record.local.as_deref().and_then(|l| l.parse().ok()),
            },
            instance: record.instance,
            reg_id: record.reg_id,
            call_id: record.call_id,
            cseq: record.cseq,
            expires_at: now + Duration::from_secs(left),
            expires_unix: record.expires_unix,
            serial: self.serial,
            record_head: Vec::new(),
        };
        // A TCP binding comes back reachable by address, under that key.
        if binding.store_key(&record.aor) != old_key {
            self.touch_key(old_key, record.aor.len());
            self.insert(&record.aor, binding, None);
        } else {
            self.insert_quietly(&record.aor, binding, None);
        }
    }

    /// [`Location::touch`] by key, for a stored key no binding here has (any more).
    fn touch_key(&mut self, key: String, aor_len: usize) {
        // Keys of records are `<aor>/…`; one that is not (damaged) is written back whole.
        let aor_len = if key.is_char_boundary(aor_len) {
            aor_len
        } else {
            0
        };
        self.dirty.entry(key).or_insert(aor_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn register(call_id: &str, cseq: u32, contact: &str, expires: Option<u32>) -> Message {
        let expires = expires
            .map(|e| format!("Expires: {e}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK{call_id}{cseq};rport\r\n\
             From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: {contact}\r\n{expires}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    fn ws(flow: u64) -> Reach {
        Reach::Flow {
            flow: FlowId::from_raw(flow),
            transport: Transport::Ws,
            remote: "127.0.0.1:40000".parse().unwrap(),
        }
    }

    const SIPML5: &str = "\"alice\"<sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws>;expires=300;click2call=no";

    #[test]
    fn a_bindings_debug_gives_the_kept_heads_length_not_its_bytes() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let mut list = ContactList::default();
        let req = register("a", 1, SIPML5, Some(600));
        loc.register_into(&req, "alice@example.test", ws(1), now, &cfg, &mut list)
            .unwrap();
        loc.take_changes(&mut Vec::new());
        let b = &loc.bindings["alice@example.test"][0];
        assert!(!b.record_head.is_empty());
        let shown = format!("{b:?}");
        assert!(
            shown.contains(&format!("record_head_len: {}", b.record_head.len())),
            "{shown}"
        );
        assert!(shown.contains("call_id: \"a\""), "{shown}");
        assert!(shown.len() < 600, "{shown}");
    }

    #[test]
    fn kept_record_heads_write_what_a_fresh_encoding_writes() {
        // Refreshes that change each part of the record in turn (and none), on one flow and
        // across flows, with and without instance and reg-id: after each, every record
        // written is the binding's record encoded afresh.
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let mut list = ContactList::default();
        let inst = "<sip:alice@h;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1";
        let steps: Vec<(&str, u32, String, Reach)> = vec![
            ("a", 1, SIPML5.into(), ws(1)),
            ("a", 2, SIPML5.into(), ws(1)),
            ("a", 3, SIPML5.into(), ws(1)),
            (
                "a",
                4,
                SIPML5.replace("click2call=no", "click2call=yes"),
                ws(1),
            ),
            (
                "a",
                5,
                SIPML5.replace("click2call=no", "click2call=yes"),
                ws(1),
            ),
            (
                "b",
                1,
                SIPML5.replace("click2call=no", "click2call=yes"),
                ws(1),
            ),
            ("b", 2, SIPML5.replace("\"alice\"", "\"Alice\""), ws(1)),
            ("b", 3, SIPML5.into(), ws(2)),
            ("c", 1, inst.into(), ws(3)),
            ("c", 2, inst.into(), ws(3)),
            (
                "c",
                3,
                inst.replace("reg-id=1", "reg-id=1;x=\"q\\\"\""),
                ws(3),
            ),
            ("c", 4, inst.into(), ws(4)),
            ("c", 5, inst.into(), ws(4)),
            ("d", 1, "<sip:alice@10.0.0.1:5070>".into(), udp()),
            ("d", 2, "<sip:alice@10.0.0.1:5070>".into(), udp()),
            ("e", 1, "<sip:alice@10.0.0.1:5070>".into(), udp()),
            (
                "e",
                2,
                "<sip:alice@10.0.0.1:5070>;expires=100".into(),
                udp(),
            ),
        ];
        let mut written = 0;
        for (call_id, cseq, contact, reach) in steps {
            let req = register(call_id, cseq, &contact, Some(600));
            loc.register_into(&req, aor, reach, now, &cfg, &mut list)
                .unwrap();
            let mut changes = Vec::new();
            loc.take_changes(&mut changes);
            for change in &changes {
                let Change::Put { key, value } = change else {
                    continue;
                };
                let b = loc.bindings[aor]
                    .iter()
                    .find(|b| b.store_key(aor) == *key)
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(&Record::encode(&b.record(aor)).unwrap()),
                    "{call_id} {cseq} {contact}"
                );
                written += 1;
            }
        }
        assert!(written >= 17, "{written}");
    }

    #[test]
    fn a_reused_contact_list_holds_only_the_latest_answer() {
        let cfg = RegistrarConfig::default();
        let (mut loc, mut twin) = (Location::new(), Location::new());
        let now = Instant::now();
        let aor = "alice@example.test";
        let mut list = ContactList::default();
        // Two Contacts in one REGISTER, then a third binding, a refresh, a rejection, a
        // wildcard removal: the list, reused throughout, says what `register` says each time.
        let steps: [(&str, u32, &str, Option<u32>, Reach); 6] = [
            (
                "a",
                1,
                "<sip:a@h1>, <sip:a@h2>;expires=200",
                Some(120),
                udp(),
            ),
            ("b", 1, SIPML5, None, ws(1)),
            ("a", 2, "<sip:a@h1>", Some(3600), udp()),
            ("c", 1, "<sip:a@h3>", Some(10), udp()),
            ("b", 2, SIPML5, Some(0), ws(1)),
            ("a", 3, "*", Some(0), udp()),
        ];
        for (call_id, cseq, contact, expires, reach) in steps {
            let req = register(call_id, cseq, contact, expires);
            let got = loc.register_into(&req, aor, reach, now, &cfg, &mut list);
            let want = twin.register(&req, aor, reach, now, &cfg);
            match want {
                RegisterOutcome::Ok { contacts } => {
                    assert_eq!(got, Ok(()), "{contact}");
                    assert_eq!(list.iter().collect::<Vec<_>>(), contacts, "{contact}");
                    assert_eq!(list.len(), contacts.len());
                }
                RegisterOutcome::Reject {
                    status,
                    reason,
                    min_expires,
                } => {
                    let rejection = Rejection {
                        status,
                        reason,
                        min_expires,
                    };
                    assert_eq!(got, Err(rejection), "{contact}");
                    assert!(list.is_empty(), "a rejection lists nothing");
                }
            }
        }
        assert!(list.is_empty(), "the wildcard removed every binding");
        assert_eq!(loc.binding_count(aor), 0);
    }

    #[test]
    fn contact_values_carry_the_seconds_left() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let mut list = ContactList::default();
        let req = register("a", 1, "<sip:a@h1>;expires=300, <sip:a@h2>", Some(120));
        assert_eq!(
            loc.register_into(&req, aor, udp(), now, &cfg, &mut list),
            Ok(())
        );
        let later = now + Duration::from_secs(100);
        let req = register("a", 2, "<sip:a@h2>", Some(600));
        assert_eq!(
            loc.register_into(&req, aor, udp(), later, &cfg, &mut list),
            Ok(())
        );
        let mut values: Vec<&str> = list.iter().collect();
        values.sort_unstable();
        assert_eq!(values, ["<sip:a@h1>;expires=200", "<sip:a@h2>;expires=600"]);
    }

    #[test]
    fn records_are_written_byte_for_byte_as_serde_json_writes_them() {
        // Every byte serde_json escapes, the ones it does not (DEL, `/`, non-ASCII), and each
        // optional field present and absent.
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        let texts = [
            String::from("sip:a@h"),
            String::from("\"Al \\\"A\\\"\" <sip:a@h;transport=ws>;x=\"a\\b\""),
            all_controls,
            String::from("\u{7f}/é😀\u{80}"),
            String::new(),
            // Characters and escapes across the sixteen-byte chunks push_json_str tests.
            format!(
                "{}é{}\"\n{}",
                "a".repeat(15),
                "b".repeat(20),
                "😀".repeat(9)
            ),
        ];
        let reaches = [
            ws(u64::MAX),
            Reach::Address {
                transport: Transport::Udp,
                addr: "[2001:db8::7]:5060".parse().unwrap(),
                local: None,
            },
            Reach::Address {
                transport: Transport::Tcp,
                addr: "10.0.0.2:5062".parse().unwrap(),
                local: None,
            },
            // Every transport's name and a scoped IPv6 address: written without the escape
            // scan, so they must come out as serde_json writes them.
            Reach::Address {
                transport: Transport::Tls,
                addr: "[fe80::1%7]:65535".parse().unwrap(),
                local: None,
            },
            Reach::Address {
                transport: Transport::Wss,
                addr: "255.255.255.255:0".parse().unwrap(),
                local: None,
            },
        ];
        let mut checked = 0;
        for (i, text) in texts.iter().enumerate() {
            for (j, reach) in reaches.into_iter().enumerate() {
                let binding = Binding {
                    contact: text.clone(),
                    contact_header: format!("<{text}>"),
                    reach,
                    instance: (j != 1).then(|| text.clone()),
                    reg_id: (j == 0).then_some(u32::MAX),
                    call_id: texts[(i + 1) % texts.len()].clone(),
                    cseq: u32::try_from(i).unwrap(),
                    expires_unix: u64::MAX - j as u64,
                    expires_at: Instant::now(),
                    serial: 1,
                    record_head: Vec::new(),
                };
                let aor = format!("u{i}@example.test{text}");
                let key = binding.store_key(&aor);
                let ours = binding.encode_record(&aor, &key);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&Record::encode(&binding.record(&aor)).unwrap()),
                );
                let back: BindingRecord = Record::decode(&ours).unwrap();
                assert_eq!(back, binding.record(&aor));
                checked += 1;
            }
        }
        assert_eq!(checked, 30);
    }

    #[test]
    fn contact_params_are_found_as_param_finds_them() {
        for text in [
            SIPML5,
            "<sip:a@h>;EXPIRES=5;expires=7;Reg-Id=2;+SIP.INSTANCE=\"<urn:uuid:1>\";reg-id=3",
            "<sip:a@h;expires=9>;+sip.instance;reg-id;expires",
            "sip:a@h",
            "<sip:a@h>;x=\";expires=1\";expires=2",
        ] {
            let addr = NameAddr::parse(text).unwrap();
            let found = ContactParams::of(&addr);
            assert_eq!(found.expires, addr.param("expires"), "{text}");
            assert_eq!(found.instance, addr.param("+sip.instance"), "{text}");
            assert_eq!(found.reg_id, addr.param("reg-id"), "{text}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0:1",
            "127.0.0.1:5060",
            "255.255.255.255:65535",
            "10.20.30.4:0",
            "[::1]:5060",
            "[2001:db8::7]:65535",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut v4 = arrayvec::ArrayString::<21>::new();
            assert_eq!(addr_text(addr, &mut v4), addr.to_string());
            assert_eq!(addr_text(addr, &mut arrayvec::ArrayString::new()), text);
        }
    }

    #[test]
    fn two_sipml5_tabs_stay_two_bindings_and_close_removes_one() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let mut changes = Vec::new();
        let aor = "alice@example.test";
        loc.register(&register("tab1", 1, SIPML5, None), aor, ws(1), now, &cfg);
        loc.register(&register("tab2", 1, SIPML5, None), aor, ws(2), now, &cfg);
        assert_eq!(loc.lookup(aor, now).count(), 2);
        // A refresh on tab 1 replaces its own binding only.
        loc.register(&register("tab1", 2, SIPML5, None), aor, ws(1), now, &cfg);
        assert_eq!(loc.lookup(aor, now).count(), 2);
        // Every binding is in the store, each tab under its own key (Contact + connection).
        loc.take_changes(&mut changes);
        let keys: std::collections::HashSet<&str> = puts(&changes).iter().map(|p| p.0).collect();
        assert_eq!((keys.len(), changes.len()), (2, 2), "{changes:?}");
        changes.clear();
        loc.remove_flow(FlowId::from_raw(1));
        let left: Vec<_> = loc.lookup(aor, now).map(|b| b.call_id.clone()).collect();
        assert_eq!(left, vec!["tab2"]);
        loc.take_changes(&mut changes);
        assert!(
            matches!(&changes[..], [Change::Delete { key }] if key.ends_with("@flow1")),
            "{changes:?}"
        );
    }

    #[test]
    fn expiry_min_expires_wildcard_and_outbound_keys() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let mut changes = Vec::new();
        let aor = "alice@example.test";
        let out = loc.register(
            &register("c", 1, "<sip:a@h>", Some(10)),
            aor,
            ws(1),
            now,
            &cfg,
        );
        assert!(matches!(
            out,
            RegisterOutcome::Reject {
                status: 423,
                min_expires: Some(60),
                ..
            }
        ));
        let udp = Reach::Address {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
            local: None,
        };
        loc.register(
            &register("c", 2, "<sip:a@127.0.0.1:5070>", Some(120)),
            aor,
            udp,
            now,
            &cfg,
        );
        loc.take_changes(&mut changes);
        assert!(matches!(changes.as_slice(), [Change::Put { .. }]));
        let jssip =
            "<sip:x@y.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600";
        loc.register(&register("j", 1, jssip, None), aor, ws(3), now, &cfg);
        loc.register(&register("j2", 1, jssip, None), aor, ws(4), now, &cfg);
        assert_eq!(
            loc.lookup(aor, now).count(),
            2,
            "same instance+reg-id replaces"
        );
        assert_eq!(loc.poll_timeout(), Some(now + Duration::from_secs(120)));
        loc.expire(now + Duration::from_secs(121));
        assert_eq!(loc.lookup(aor, now).count(), 1);
        let out = loc.register(&register("j2", 2, "*", Some(0)), aor, ws(4), now, &cfg);
        assert!(matches!(out, RegisterOutcome::Ok { ref contacts } if contacts.is_empty()));
        assert_eq!(loc.lookup(aor, now).count(), 0);
    }

    #[test]
    fn the_socket_a_udp_binding_registered_through_is_stored_and_restored() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let mut list = ContactList::default();
        let contact = "<sip:alice@10.0.0.1:5070>";
        let via = |local: &str| Reach::Address {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
            local: Some(local.parse().unwrap()),
        };
        // A refresh that came to another socket: requests leave from the new one, and the
        // record says so (encoded by hand as serde would: `encode_record_kept` asserts it).
        for (cseq, local) in [
            (1, "127.0.0.1:5060"),
            (2, "127.0.0.2:5070"),
            (3, "127.0.0.2:5070"),
        ] {
            let req = register("a", cseq, contact, Some(600));
            loc.register_into(&req, aor, via(local), now, &cfg, &mut list)
                .unwrap();
            assert_eq!(loc.bindings[aor][0].reach, via(local));
            let mut changes = Vec::new();
            loc.take_changes(&mut changes);
            let records = puts(&changes);
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].1.local.as_deref(), Some(local));
            // Byte for byte what serde writes of the record.
            let Change::Put { value, .. } = &changes[0] else {
                panic!("a put")
            };
            let b = &loc.bindings[aor][0];
            assert_eq!(
                String::from_utf8_lossy(value),
                String::from_utf8_lossy(&Record::encode(&b.record(aor)).unwrap())
            );
            // A restart brings the socket back.
            let mut restored = Location::new();
            restored.restore(records[0].1.clone(), now);
            assert_eq!(restored.bindings[aor][0].reach, via(local));
        }
        // Records without it (older ones, streams) read as before, and are written without it.
        let mut old = Location::new();
        let req = register("b", 1, contact, Some(600));
        old.register_into(&req, aor, udp(), now, &cfg, &mut list)
            .unwrap();
        let mut changes = Vec::new();
        old.take_changes(&mut changes);
        let Change::Put { value, .. } = &changes[0] else {
            panic!("a put")
        };
        assert!(!String::from_utf8_lossy(value).contains("\"local\""));
    }

    fn udp() -> Reach {
        Reach::Address {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
            local: None,
        }
    }

    fn puts(changes: &[Change]) -> Vec<(&str, BindingRecord)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Put { key, value } => Some((
                    key.as_str(),
                    Record::decode::<BindingRecord>(value).unwrap(),
                )),
                Change::Delete { .. } => None,
            })
            .collect()
    }

    #[test]
    fn stored_value_is_the_binding_record_json_older_builds_and_plugins_read() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let contact = "\"Al \\\"A\\\"\" <sip:a@h;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600";
        for reach in [ws(7), udp()] {
            let mut changes = Vec::new();
            loc.register(&register("x", 1, contact, None), aor, reach, now, &cfg);
            loc.take_changes(&mut changes);
            let Some(Change::Put { key, value }) = changes.last() else {
                panic!("no Put: {changes:?}");
            };
            let binding = loc.lookup(aor, now).next().unwrap();
            // Byte for byte what serialising the owned record (the old write path) gives.
            assert_eq!(value, &Record::encode(&binding.record(aor)).unwrap());
            let record: BindingRecord = Record::decode(value).unwrap();
            assert_eq!(key, "alice@example.test/<urn:uuid:1>#1");
            assert_eq!(&record.key, key);
            assert_eq!(record.flow, reach.flow().map(FlowId::get));
            loc.remove_flow(FlowId::from_raw(7));
            loc.register(&register("x", 9, "*", Some(0)), aor, reach, now, &cfg);
            loc.take_changes(&mut Vec::new());
        }
    }

    #[test]
    fn records_written_by_older_builds_still_restore() {
        // As the JSON-writing build stored them: no `key`, no `flow` (before those fields).
        let old = br#"{"aor":"bob@example.test","contact":"sip:bob@10.0.0.2:5062","contact_header":"<sip:bob@10.0.0.2:5062>","transport":"UDP","addr":"10.0.0.2:5062","instance":null,"reg_id":null,"call_id":"c1","cseq":3,"expires_unix":99999999999}"#;
        let mut value = vec![Record::FORMAT_VERSION];
        value.extend_from_slice(old);
        let record: BindingRecord = Record::decode(&value).unwrap();
        let now = Instant::now();
        let mut loc = Location::new();
        let mut changes = Vec::new();
        loc.restore(record, now);
        loc.take_changes(&mut changes);
        assert!(changes.is_empty(), "{changes:?}");
        let b = loc.lookup("bob@example.test", now).next().unwrap();
        assert_eq!(b.contact, "sip:bob@10.0.0.2:5062");
        assert_eq!(b.cseq, 3);
        assert_eq!(
            b.reach,
            Reach::Address {
                transport: Transport::Udp,
                addr: "10.0.0.2:5062".parse().unwrap(),
                local: None
            }
        );
    }

    #[test]
    fn refresh_rewrites_the_binding_in_place_and_stores_it_under_its_key() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let mut changes = Vec::new();
        loc.register(&register("tab", 1, SIPML5, None), aor, ws(1), now, &cfg);
        loc.take_changes(&mut Vec::new());
        let later = now + Duration::from_secs(100);
        let out = loc.register(
            &register("tab", 2, SIPML5, Some(600)),
            aor,
            ws(1),
            later,
            &cfg,
        );
        loc.take_changes(&mut changes);
        // One Put under the same key, no Delete; the 200 lists the one binding, expires kept
        // from the Contact parameter (300), the expiry index moved with it.
        let [(key, record)] = &puts(&changes)[..] else {
            panic!("{changes:?}");
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(
            *key,
            "alice@example.test/sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws@flow1"
        );
        assert_eq!(record.cseq, 2);
        let RegisterOutcome::Ok { contacts } = out else {
            panic!("{out:?}");
        };
        assert_eq!(
            contacts,
            vec!["\"alice\"<sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws>;click2call=no;expires=300"]
        );
        assert_eq!(loc.poll_timeout(), Some(later + Duration::from_secs(300)));
        assert!(loc.expire(later + Duration::from_secs(299)).is_empty());
        // The connection still owns it: closing it removes the binding.
        assert_eq!(loc.remove_flow(FlowId::from_raw(1)), vec![aor.to_owned()]);
        assert_eq!(loc.binding_count(aor), 0);
        assert_eq!(loc.poll_timeout(), None);
        // A stale refresh (same Call-ID, lower CSeq) after a new one changes nothing.
        loc.register(&register("tab", 5, SIPML5, None), aor, ws(2), now, &cfg);
        loc.take_changes(&mut Vec::new());
        changes.clear();
        loc.register(&register("tab", 4, SIPML5, None), aor, ws(2), now, &cfg);
        assert!(!loc.has_changes());
        // Expires 0 on the Contact removes it and deletes its record.
        loc.register(
            &register(
                "tab",
                6,
                "<sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws>;expires=0",
                None,
            ),
            aor,
            ws(2),
            now,
            &cfg,
        );
        loc.take_changes(&mut changes);
        assert!(
            matches!(changes.as_slice(), [Change::Delete { .. }]),
            "{changes:?}"
        );
        assert_eq!(loc.binding_count(aor), 0);
        assert!(loc.remove_flow(FlowId::from_raw(2)).is_empty());
    }

    #[test]
    fn outbound_binding_moving_to_a_new_connection_follows_it() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let jssip =
            "<sip:x@y.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600";
        loc.register(&register("j", 1, jssip, None), aor, ws(3), now, &cfg);
        loc.register(&register("j", 2, jssip, None), aor, ws(4), now, &cfg);
        assert_eq!(loc.binding_count(aor), 1);
        assert!(loc.remove_flow(FlowId::from_raw(3)).is_empty());
        assert_eq!(loc.binding_count(aor), 1);
        assert_eq!(loc.remove_flow(FlowId::from_raw(4)), vec![aor.to_owned()]);
        assert_eq!(loc.binding_count(aor), 0);
    }

    #[test]
    fn refreshes_within_an_interval_are_one_write_of_the_last_state() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let aor = "alice@example.test";
        let phone = "<sip:alice@127.0.0.1:5070>";
        for cseq in 1..=5 {
            loc.register(
                &register("c", cseq, phone, Some(600)),
                aor,
                udp(),
                now,
                &cfg,
            );
        }
        let mut changes = Vec::new();
        loc.take_changes(&mut changes);
        let [(key, record)] = &puts(&changes)[..] else {
            panic!("{changes:?}");
        };
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(*key, "alice@example.test/sip:alice@127.0.0.1:5070");
        assert_eq!(record.cseq, 5, "the last refresh is what is written");
        // Taken: the next interval starts empty.
        assert!(!loc.has_changes());
        changes.clear();
        loc.take_changes(&mut changes);
        assert!(changes.is_empty(), "{changes:?}");

        // Added and removed within one interval: a delete (the store may hold an older record
        // of the key), never the record that no longer exists.
        let desk = "<sip:alice@127.0.0.1:5080>";
        loc.register(&register("d", 1, desk, Some(600)), aor, udp(), now, &cfg);
        let gone = "<sip:alice@127.0.0.1:5080>;expires=0";
        loc.register(&register("d", 2, gone, None), aor, udp(), now, &cfg);
        loc.take_changes(&mut changes);
        assert!(
            matches!(&changes[..], [Change::Delete { key }] if key.ends_with(":5080")),
            "{changes:?}"
        );

        // Removed and added again: the new record.
        changes.clear();
        loc.register(&register("e", 1, "*", Some(0)), aor, udp(), now, &cfg);
        loc.register(&register("e", 2, phone, Some(600)), aor, udp(), now, &cfg);
        loc.take_changes(&mut changes);
        let [(_, record)] = &puts(&changes)[..] else {
            panic!("{changes:?}");
        };
        assert_eq!((record.call_id.as_str(), changes.len()), ("e", 1));
    }

    #[test]
    fn restoring_writes_back_only_what_must_change() {
        let now = Instant::now();
        let mut loc = Location::new();
        let record = |contact: &str, expires_unix: u64, transport: &str| BindingRecord {
            aor: "bob@example.test".into(),
            key: format!("bob@example.test/{contact}"),
            contact: contact.into(),
            contact_header: format!("<{contact}>"),
            transport: transport.into(),
            addr: "10.0.0.2:5062".into(),
            flow: None,
            local: None,
            instance: None,
            reg_id: None,
            call_id: "c1".into(),
            cseq: 3,
            expires_unix,
        };
        let later = unix_now() + 600;
        loc.restore(record("sip:bob@10.0.0.2:5062", later, "UDP"), now);
        loc.restore(record("sip:bob@10.0.0.2:5063", 1, "UDP"), now);
        loc.restore(
            record("sip:bob@10.0.0.2:5064;transport=ws", later, "WS"),
            now,
        );
        let mut changes = Vec::new();
        loc.take_changes(&mut changes);
        let mut deleted: Vec<&str> = changes
            .iter()
            .map(|c| match c {
                Change::Delete { key } => key.as_str(),
                Change::Put { key, .. } => panic!("{key} rewritten as it was"),
            })
            .collect();
        deleted.sort_unstable();
        assert_eq!(
            deleted,
            [
                "bob@example.test/sip:bob@10.0.0.2:5063",
                "bob@example.test/sip:bob@10.0.0.2:5064;transport=ws"
            ]
        );
        assert_eq!(loc.binding_count("bob@example.test"), 1);
    }

    #[test]
    fn a_stored_address_is_written_as_its_display_form_as_the_owned_record_holds_it() {
        let scoped = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 65535, 0, 7);
        for addr in [
            "10.0.0.1:5060".parse().unwrap(),
            SocketAddr::V6(scoped),
            "[::ffff:1.2.3.4]:1".parse().unwrap(),
        ] {
            assert_eq!(
                serde_json::to_string(&addr).unwrap(),
                serde_json::to_string(&addr.to_string()).unwrap()
            );
        }
    }
}
