//! `messaging`: Huddle's message store for SIP MESSAGE (RFC 3428).
//!
//! It claims MESSAGE to the domain's users (the `users` globs in its config) and owns, for
//! each message: delivery to every registered device, one at a time per device and in order;
//! the sender's answer (`200` when a device accepted, `202 Accepted` once the message is
//! durable in the store when no device could take it in time, `404` for an unknown user, `413`
//! for a body over the limit, `486` for a full mailbox); retries with backoff of devices that
//! failed; delivery of stored messages when a device registers (or a WebSocket client comes
//! back), with the original From, Date and Content-Type; expiry; positive-delivery notices
//! (RFC 5438 IMDN) when the sender asks; the pass-through of is-composing indications (RFC
//! 3994), which are never stored; and a history of every accepted message, kept for a
//! configurable time and listed by `huddle messages list`.
//!
//! The decisions are made by the sans-IO [`engine::Engine`]; this file is the glue that carries
//! its [`engine::Effect`]s out through the host and feeds it requests, responses, binding
//! changes (registration events and a watch on the `location` namespace), timers, and, for a
//! message to a user with no device, whether the host has an account of that name
//! (`Host::user_exists`, ABI 1.5: a known user's message is stored at once, an unknown user
//! gets `404`, with no request to the user's address to find out).
//!
//! # Store layout (namespace `plugin/<name>/`)
//!
//! | key | value |
//! |---|---|
//! | `q/<seq, 16 hex>` | an undelivered message ([`engine::Stored`]), written before its `202`, rewritten with its per-device progress when one of several devices accepted it |
//! | `h/<unix ms, 16 hex>-<seq, 16 hex>` | a batch of [`HistoryEntry`]s, in time order |
//!
//! Values are records: a format byte (1), then JSON. The history is flushed in batches (one
//! write per `history_flush_ms`), so a crash may lose the last batch of history, never an
//! acknowledged message.
//!
//! # Events (webhooks)
//!
//! Raised with `Host::emit_event`, best effort, never with a body: `message.stored` once an
//! undelivered message is durable (`id`, the 16-hex sequence number of its store key; `from`,
//! `to`, `content_type`, `size` in bytes), and `message.delivered` each time a device accepts
//! one (`id`, `from`, `to`, `binding`: the device's `location/` key, or `null` when the host
//! forked it to the user's devices). On a host of ABI 1.8 or later the plugin asks first
//! (`Host::wants_event`) and builds neither when no webhook takes it.
//!
//! # Reaching one device
//!
//! Each delivery names the binding it is for in a `Huddle-Binding` header (its `location/`
//! key); the host sends the request to that binding only and strips the header (see the
//! host's `core/plugins.rs`). On a host of ABI 1.6 or later a delivery (or an is-composing
//! relay) for a sender still waiting also names the sender's transaction in `Huddle-Answer`:
//! the host answers the sender `200 OK` itself on the first 2xx, so the sender's answer does
//! not wait for a round trip through this plugin's thread; the 2xx still arrives here and
//! settles the message as before (without a second answer).

pub mod engine;
pub mod wire;
pub mod writer;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huddle_sdk::abi::HUDDLE_ANSWER_HEADER;
use huddle_sdk::serde::{Deserialize, Serialize};
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, ConfigError, Error, HeaderName, Host, Method, NewRequest,
    Plugin, RegistrationEvent, Request, RequestId, RequestParts, Response, Result, StoreChange,
    TimerId, TransactionId, WatchId,
};

use engine::{
    user_of_binding, Effect, Engine, Incoming, Limits, Recipient, SenderFrom, Stored, Target,
};
use wire::{Body, ImdnForm};
use writer::{Gather, Job, Writers, TOKEN_FAILED};

/// The plugin's maps hash with foldhash (seeded per process), as the engine's.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The header that pins a request to one binding (the host strips it).
pub const BINDING_HEADER: &str = "Huddle-Binding";

const TOKEN_WAKE: u64 = 1;
const TOKEN_FLUSH: u64 = 2;
const TOKEN_SWEEP: u64 = 3;
const TOKEN_START: u64 = 4;
/// History entries buffered before a flush is forced.
const HISTORY_BATCH: usize = 512;
/// History keys deleted per sweep; the next sweep follows soon when more are due.
const SWEEP_BATCH: usize = 1024;

/// The `[plugins.config]` table. Every key has a default.
#[derive(Debug, Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// Request-URI users whose MESSAGEs this plugin handles (globs, `*` = any run).
    pub users: Vec<String>,
    /// Largest body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Undelivered messages one user may hold (486 beyond).
    pub quota_messages: usize,
    /// Undelivered body bytes one user may hold (486 beyond).
    pub quota_bytes: usize,
    /// How long an undelivered message is kept, in seconds.
    pub lifetime_secs: u64,
    /// How long a sender waits for a device to accept before the message is stored and
    /// answered 202, in milliseconds (SIPml5 answers only when its application accepts).
    pub answer_timeout_ms: u64,
    /// First retry delay for a device that failed, in milliseconds (doubles per failure).
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Attempts per message and device.
    pub max_attempts: u32,
    /// Deliveries in flight per device (1: strict order even across failures).
    pub device_window: usize,
    /// Where a delivery-notice request is read from: `cpim`, `header`, `both` or `off`.
    pub imdn: ImdnForm,
    /// How long history is kept, in seconds (0: no history).
    pub history_retention_secs: u64,
    /// How often buffered history is written, in milliseconds.
    pub history_flush_ms: u64,
    /// Threads that write messages to the store (each gathers writes into batches, one disk
    /// sync per batch); 0: write on the plugin's thread, one sync per write.
    pub store_writers: usize,
    /// How long a writer holds a batch for more writes to share its commit, in milliseconds
    /// (default 40). Each commit costs about the same CPU whatever it holds (a disk sync: the
    /// sleep, the wake-up and the device flush, not the bytes; bench/messaging/NOTES.md), so
    /// under load the window sets the commits per second: at 500 stored messages/s a 40 ms hold
    /// makes about 20 messages per commit (2-3 with no hold). A held batch commits earlier once
    /// 20 ms (`writer::QUIET`, or the window if shorter) pass with no new write: a lone message
    /// waits 20 ms, as with the earlier 20 ms default, and a window of 20 ms or less holds as a
    /// plain window. A 202 waits for a commit in flight, its batch's hold and its own commit
    /// (bench/NOTES.md, branch msgonline: p50/p99 by rate). 0: no hold; a writer commits what
    /// is queued at once, and what arrives during a commit makes the next one.
    pub store_batch_window_ms: u64,
    /// Writes in one commit at most (a full batch commits at once). Batches over the host's
    /// `[store] plugin_batch_max_*` are split.
    pub store_batch_max: usize,
}

/// The longest `store_batch_window_ms` accepted.
pub const MAX_BATCH_WINDOW_MS: u64 = 1000;
/// The largest `store_batch_max` accepted.
pub const MAX_BATCH: usize = 65_536;

impl Default for MessagingConfig {
    fn default() -> Self {
        let l = Limits::default();
        MessagingConfig {
            users: vec!["*".to_owned()],
            max_body_bytes: l.max_body_bytes,
            quota_messages: l.quota_messages,
            quota_bytes: l.quota_bytes,
            lifetime_secs: l.lifetime_ms / 1000,
            answer_timeout_ms: l.answer_timeout_ms,
            retry_base_ms: l.retry_base_ms,
            retry_max_ms: l.retry_max_ms,
            max_attempts: l.max_attempts,
            device_window: l.device_window,
            imdn: ImdnForm::Both,
            history_retention_secs: 30 * 24 * 3600,
            history_flush_ms: 200,
            store_writers: 1,
            store_batch_window_ms: 40,
            store_batch_max: 256,
        }
    }
}

/// One message in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct HistoryEntry {
    /// The message's sequence number.
    pub seq: u64,
    /// Arrival, unix milliseconds.
    pub ts_ms: u64,
    /// Sender URI.
    pub from: String,
    /// Recipient URI.
    pub to: String,
    /// Content-Type.
    pub content_type: String,
    /// Body.
    pub body: Body,
}

/// A [`HistoryEntry`] borrowed from the request it records: it serializes as the entry does
/// (same fields, same order, the body as [`Body`] writes it).
#[derive(Serialize)]
#[serde(crate = "huddle_sdk::serde")]
struct HistoryRef<'a> {
    seq: u64,
    ts_ms: u64,
    from: &'a str,
    to: &'a str,
    content_type: &'a str,
    body: BodyRef<'a>,
}

/// [`Body`] borrowed where it is text.
#[derive(Serialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
enum BodyRef<'a> {
    Text(&'a str),
    Hex(String),
}

impl HistoryRef<'_> {
    /// Appends the entry as `serde_json` writes it (by hand: see `wire::json`).
    fn write_json(&self, out: &mut Vec<u8>) {
        use wire::json;
        let (body_key, body): (&[u8], &str) = match &self.body {
            BodyRef::Text(t) => (b",\"body\":{\"text\":", t),
            BodyRef::Hex(h) => (b",\"body\":{\"hex\":", h.as_str()),
        };
        // Room for the entry as written unescaped (the keys and punctuation ~80 bytes, two
        // numbers of up to 20 digits), so that it grows the buffer once at most; the keys go
        // in with the punctuation around them, one copy each (a call per key, comma and quote
        // cost ~400 instructions an entry).
        out.reserve(120 + self.from.len() + self.to.len() + self.content_type.len() + body.len());
        out.extend_from_slice(b"{\"seq\":");
        json::number(out, self.seq);
        out.extend_from_slice(b",\"ts_ms\":");
        json::number(out, self.ts_ms);
        out.extend_from_slice(b",\"from\":");
        json::string(out, self.from);
        out.extend_from_slice(b",\"to\":");
        json::string(out, self.to);
        out.extend_from_slice(b",\"content_type\":");
        json::string(out, self.content_type);
        out.extend_from_slice(body_key);
        json::string(out, body);
        out.extend_from_slice(b"}}");
    }
}

impl<'a> BodyRef<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => BodyRef::Text(text),
            Err(_) => match Body::of(bytes) {
                Body::Hex(hex) | Body::Text(hex) => BodyRef::Hex(hex),
            },
        }
    }
}

/// Buffered history, kept as the record it will be written as ([`wire::encode`] of a
/// `Vec<HistoryEntry>`: the format byte, then the JSON array) and written into as each message
/// is accepted, from the request's borrowed fields: owned entries cost four copies and a
/// `Body` per message, dropped again at the flush.
#[derive(Debug, Default)]
struct HistoryBuffer {
    record: Vec<u8>,
    entries: usize,
    /// The first entry's arrival and sequence number (the batch's key).
    first: (u64, u64),
    /// The last batch's size, reserved for the next one.
    last_len: usize,
}

impl HistoryBuffer {
    fn push(&mut self, entry: &HistoryRef<'_>) {
        if self.entries == 0 {
            self.record.clear();
            self.record.reserve(self.last_len.max(256));
            self.record.extend_from_slice(&[wire::RECORD_FORMAT, b'[']);
            self.first = (entry.ts_ms, entry.seq);
        } else {
            self.record.push(b',');
        }
        entry.write_json(&mut self.record);
        self.entries += 1;
    }

    fn len(&self) -> usize {
        self.entries
    }

    /// The batch's key fields, its number of entries and its record; empty afterwards.
    fn take(&mut self) -> Option<((u64, u64), usize, Vec<u8>)> {
        if self.entries == 0 {
            return None;
        }
        self.record.push(b']');
        self.last_len = self.record.len();
        let entries = std::mem::take(&mut self.entries);
        Some((self.first, entries, std::mem::take(&mut self.record)))
    }
}

/// The plugin instance.
#[derive(Debug)]
pub struct Messaging {
    config: MessagingConfig,
    engine: Engine,
    /// Senders waiting for an answer, by the engine's transaction number.
    waiting: HashMap<u64, Request>,
    next_txn: u64,
    /// Deliveries in flight: request → engine attempt.
    attempts: HashMap<RequestId, u64>,
    /// Whether the host answers a waiting sender itself when a delivery naming it succeeds
    /// (ABI 1.6, `Huddle-Answer`): the sender's 200 then needs no round trip through here.
    host_answers: bool,
    /// Deliveries and relays in flight that name a waiting sender in `Huddle-Answer`: request
    /// → the sender's transaction (the engine's number).
    answering: HashMap<RequestId, u64>,
    /// Senders the host answered 200 for us (a delivery naming them succeeded); the engine's
    /// answer to them is not sent again.
    answered_by_host: HashSet<u64>,
    /// Relayed is-composing indications: request → the sender's request.
    relays: HashMap<RequestId, Request>,
    /// Notices sent, for the log.
    notices: HashSet<RequestId>,
    /// Bindings known from `location/`.
    devices: HashSet<String>,
    location_watch: Option<WatchId>,
    wake: Option<(TimerId, u64)>,
    history: HistoryBuffer,
    flush_armed: bool,
    history_seq: u64,
    writers: Option<Writers>,
    /// `Date` of the current second, for messages that came without one (formatting it cost
    /// about as much as the rest of the engine's work on a message).
    date: Option<(u64, String)>,
    /// Call-IDs of the requests this plugin sends.
    call_ids: CallIds,
    /// Text written for each delivery (its Call-ID, To and `Huddle-Answer`), kept between
    /// deliveries: three strings allocated and freed per delivery otherwise.
    scratch: String,
}

/// Call-IDs for the requests this plugin sends: a random prefix drawn once per instance and a
/// counter, unique as a random one would be, without a draw from the OS (a system call) and
/// its hex formatting per request.
#[derive(Debug)]
struct CallIds {
    prefix: String,
    next: u64,
}

impl CallIds {
    fn new() -> Self {
        CallIds {
            prefix: huddle_sdk::random_token(8),
            next: 0,
        }
    }

    fn next(&mut self) -> String {
        let mut id = String::new();
        self.write_next(&mut id);
        id
    }

    /// The next Call-ID, appended to `out` (the counter in lowercase hex, written by hand:
    /// `write!` cost ~300 instructions a delivery).
    fn write_next(&mut self, out: &mut String) {
        self.next += 1;
        out.push_str(&self.prefix);
        out.push('-');
        push_hex(out, self.next);
        out.push_str("@huddle.invalid");
    }
}

/// Appends `n` in lowercase hex without leading zeros (`format!("{n:x}")`).
fn push_hex(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = HEX[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[at..].iter().map(|&b| char::from(b)));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A stored message's key, `q/` and its sequence number in 16 lowercase hex digits (written
/// by hand: `format!` cost ~900 instructions a stored message).
fn queue_key(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(b"q/");
    push_hex16(&mut key, seq);
    key
}

/// A history batch's key, `h/<first arrival>-<first sequence number>`, both in 16 lowercase
/// hex digits.
fn history_key(ts_ms: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(35);
    key.extend_from_slice(b"h/");
    push_hex16(&mut key, ts_ms);
    key.push(b'-');
    push_hex16(&mut key, seq);
    key
}

/// Appends `n` as 16 lowercase hex digits (`format!("{n:016x}")`).
fn push_hex16(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((n >> (shift * 4)) & 15) as usize]);
    }
}

/// The part of a `location/` record this plugin reads.
#[derive(Debug, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
struct BindingView {
    #[serde(default)]
    expires_unix: u64,
}

impl Plugin for Messaging {
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        huddle_sdk::debug!(
            host,
            "allocator: {}",
            if huddle_sdk::HostAllocator::is_lent() {
                "the host's (ABI 1.11)"
            } else {
                "the system's"
            }
        );
        let config: MessagingConfig = config.parse()?;
        if config.store_batch_window_ms > MAX_BATCH_WINDOW_MS
            || !(1..=MAX_BATCH).contains(&config.store_batch_max)
        {
            return Err(Error::InvalidConfig(ConfigError::custom(format!(
                "store_batch_window_ms must be 0-{MAX_BATCH_WINDOW_MS} and store_batch_max \
                 1-{MAX_BATCH}"
            ))));
        }
        for user in &config.users {
            claims.add(Claim::method("MESSAGE").with_user(user));
        }
        let limits = Limits {
            max_body_bytes: config.max_body_bytes,
            quota_messages: config.quota_messages,
            quota_bytes: config.quota_bytes,
            lifetime_ms: config.lifetime_secs.saturating_mul(1000),
            answer_timeout_ms: config.answer_timeout_ms,
            retry_base_ms: config.retry_base_ms.max(1),
            retry_max_ms: config.retry_max_ms.max(1),
            max_attempts: config.max_attempts.max(1),
            device_window: config.device_window.clamp(1, 1024),
        };
        let location_watch = Some(host.namespace("location").watch(b"")?);
        let gather = Gather {
            window: Duration::from_millis(config.store_batch_window_ms),
            max: config.store_batch_max,
        };
        let writers = Writers::start(host, config.store_writers.min(64), gather);
        // Stored messages and bindings are read on the first timer, outside `init`, so the
        // deliveries they start run like any other.
        host.set_timer(Duration::ZERO, TOKEN_START)?;
        huddle_sdk::info!(host, "storing MESSAGEs to users {:?}", config.users);
        Ok(Messaging {
            engine: Engine::new(limits),
            config,
            waiting: HashMap::default(),
            next_txn: 0,
            attempts: HashMap::default(),
            host_answers: host.abi_version() >= (1, 6),
            answering: HashMap::default(),
            answered_by_host: HashSet::default(),
            relays: HashMap::default(),
            notices: HashSet::default(),
            devices: HashSet::default(),
            location_watch,
            wake: None,
            history: HistoryBuffer::default(),
            flush_armed: false,
            history_seq: 0,
            writers,
            date: None,
            call_ids: CallIds::new(),
            scratch: String::new(),
        })
    }

    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        if request.method() != &Method::Message {
            // RFC 3261 §8.2.1: a 405 lists the methods that are allowed.
            return host.reply_with(&request, 405, "Method Not Allowed", &[("Allow", "MESSAGE")]);
        }
        let Some(user) = request.uri_user().map(str::to_owned) else {
            return host.reply(&request, 404, "Not Found - No User In Request-URI");
        };
        let Some(from_uri) = request.from_uri().map(str::to_owned) else {
            return host.reply(&request, 400, "Bad Request - No Usable From");
        };
        let body = request.body().to_vec();
        let content_type = match request.content_type_full() {
            Some(ct) => ct.to_owned(),
            None if body.is_empty() => "text/plain".to_owned(),
            None => return host.reply(&request, 400, "Bad Request - Body Without Content-Type"),
        };
        if body.len() > self.config.max_body_bytes {
            let reason = format!(
                "Request Entity Too Large - Body Over {} Bytes",
                self.config.max_body_bytes
            );
            return host.reply(&request, 413, &reason);
        }
        let bare = request.content_type().unwrap_or("");
        if bare.eq_ignore_ascii_case(wire::ISCOMPOSING) {
            return self.relay(host, request, &content_type);
        }
        let imdn = match self.config.imdn {
            ImdnForm::Off => None,
            form => {
                let cpim = (bare.eq_ignore_ascii_case(wire::CPIM) && form != ImdnForm::Header)
                    .then(|| wire::cpim_imdn(&body))
                    .flatten();
                cpim.or_else(|| {
                    (form != ImdnForm::Cpim)
                        .then(|| {
                            wire::header_imdn(
                                unknown_header(&request, "Disposition-Notification"),
                                unknown_header(&request, "Message-ID"),
                            )
                        })
                        .flatten()
                })
            }
        };
        // Read (and kept) by `from_uri` above: whether it has a tag is free here, where each
        // delivery read the value again to find out (`huddle_sdk::tagged`).
        let from = SenderFrom::received(request.message())
            .unwrap_or_else(|| SenderFrom::unknown(format!("<{from_uri}>")));
        let to = request
            .to_uri()
            .filter(|t| t.contains('@'))
            .unwrap_or(request.uri())
            .to_owned();
        let recipient = self.recipient(host, &user);
        let now = now_ms();
        let date = match request.header("Date") {
            Some(date) => date.to_owned(),
            None => self.date_of(now),
        };
        self.next_txn += 1;
        let txn = self.next_txn;
        let incoming = Incoming {
            txn,
            user,
            to,
            from,
            from_uri,
            content_type,
            date: Some(date),
            body,
            imdn,
            recipient,
        };
        self.waiting.insert(txn, request);
        let effects = self.engine.on_message(incoming, now);
        self.run(host, effects);
        Ok(())
    }

    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        if !response.is_final() {
            return Ok(());
        }
        let id = response.request_id();
        let status = response.status();
        if let Some(sender) = self.answering.remove(&id) {
            // Still unanswered here: the host answered it 200 on this 2xx.
            if (200..300).contains(&status) && self.waiting.contains_key(&sender) {
                self.answered_by_host.insert(sender);
            }
        }
        if let Some(attempt) = self.attempts.remove(&id) {
            if (200..300).contains(&status) {
                if let Some((stored, target)) = self
                    .engine
                    .attempt(attempt)
                    .filter(|_| host.wants_event(EVENT_DELIVERED))
                {
                    let _ = host.emit_event(EVENT_DELIVERED, &delivered_event(stored, target));
                }
            }
            let effects = self.engine.on_result(attempt, status, now_ms());
            self.run(host, effects);
        } else if let Some(request) = self.relays.remove(&id) {
            // Sent naming the sender in `Huddle-Answer`: the host answered it 200 on this 2xx.
            if self.host_answers && request.transaction().is_some() && (200..300).contains(&status)
            {
                return Ok(());
            }
            let status = if (200..300).contains(&status) {
                200
            } else {
                status
            };
            let reason = response.message().reason().unwrap_or("Relayed").to_owned();
            host.reply(&request, status, if status == 200 { "OK" } else { &reason })?;
        } else if self.notices.remove(&id) && status >= 300 {
            huddle_sdk::debug!(host, "delivery notice not delivered: {status}");
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &Host, _timer: TimerId, token: u64) -> Result<()> {
        match token {
            TOKEN_WAKE => {
                self.wake = None;
                let effects = self.engine.on_tick(now_ms());
                self.run(host, effects);
            }
            TOKEN_FLUSH => {
                self.flush_armed = false;
                self.flush(host);
            }
            TOKEN_SWEEP => self.sweep(host),
            TOKEN_START => self.start(host)?,
            TOKEN_FAILED => {
                let failed = self
                    .writers
                    .as_ref()
                    .map(Writers::take_failed)
                    .unwrap_or_default();
                for seq in failed {
                    let effects = self.engine.store_failed(seq, None);
                    self.run(host, effects);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn shutdown(&mut self, host: &Host) {
        // Buffered history is written on the way out; queued writes finish (their 202s go
        // out) before the host goes away.
        self.flush(host);
        if let Some(writers) = &mut self.writers {
            writers.stop();
        }
    }

    /// The host announces binding changes in order with the requests that follow them, while
    /// `location/` is written behind (up to its window later): a device that registered just
    /// before a MESSAGE must be known when that MESSAGE arrives, or it would miss it.
    fn on_registration(&mut self, host: &Host, event: RegistrationEvent) -> Result<()> {
        let Some(user) = event
            .aor
            .strip_prefix("sip:")
            .and_then(|aor| user_of_binding(aor))
            .map(str::to_owned)
        else {
            return Ok(());
        };
        // Hosts before ABI 1.2 list no keys; the watch alone tells about devices then.
        if event.binding_keys.is_empty() && event.bindings > 0 {
            return Ok(());
        }
        let now = now_ms();
        let current: HashSet<String> = event.binding_keys.into_iter().collect();
        // Only this user's devices: a registration must not cost a walk over every device.
        let gone: Vec<String> = self
            .engine
            .devices_of(&user)
            .filter(|k| !current.contains(*k))
            .map(str::to_owned)
            .collect();
        let mut effects = Vec::new();
        for key in gone {
            self.devices.remove(&key);
            effects.extend(self.engine.device_down(&key));
        }
        for key in current {
            if self.devices.insert(key.clone()) {
                effects.extend(self.engine.device_up(&key, now));
            }
        }
        self.run(host, effects);
        Ok(())
    }

    fn on_store_change(&mut self, host: &Host, change: StoreChange) -> Result<()> {
        if Some(change.watch()) != self.location_watch {
            return Ok(());
        }
        let now = now_ms();
        let effects = match change {
            StoreChange::Put { key, value, .. } => {
                let Ok(key) = String::from_utf8(key) else {
                    return Ok(());
                };
                if expired(&value, now) {
                    return Ok(());
                }
                self.devices.insert(key.clone());
                self.engine.device_up(&key, now)
            }
            StoreChange::Delete { key, .. } => {
                let Ok(key) = String::from_utf8(key) else {
                    return Ok(());
                };
                self.devices.remove(&key);
                self.engine.device_down(&key)
            }
            StoreChange::Lagged { .. } => return self.rescan(host),
        };
        self.run(host, effects);
        Ok(())
    }
}

/// Whether a location record says its binding has expired.
fn expired(record: &[u8], now_ms: u64) -> bool {
    wire::decode::<BindingView>(record)
        .is_some_and(|b| b.expires_unix != 0 && b.expires_unix.saturating_mul(1000) <= now_ms)
}

impl Messaging {
    /// Whether the recipient has an account, asked of the host (a store read, ABI 1.5) only
    /// when it matters: for a user with no known device. Bindings need no asking: they come
    /// from registration events, in order with the requests that follow them. An escaped user
    /// part (the host's accounts have plain names), a host before ABI 1.5 or a failed call
    /// leave it to the engine, which then asks by routing to the address of record.
    fn recipient(&self, host: &Host, user: &str) -> Recipient {
        if self.engine.devices_of(user).next().is_some() || user.contains('%') {
            return Recipient::Unknown;
        }
        match host.user_exists(user) {
            Ok(true) => Recipient::Exists,
            Ok(false) => Recipient::NoSuchUser,
            Err(_) => Recipient::Unknown,
        }
    }

    /// Start-up: stored messages first, then the bindings that can take them.
    fn start(&mut self, host: &Host) -> Result<()> {
        let now = now_ms();
        let mut effects = Vec::new();
        for (key, value) in host.store().scan_all(b"q/")? {
            match wire::decode::<Stored>(&value) {
                Some(stored) => effects.extend(self.engine.restore(stored, now)),
                None => {
                    huddle_sdk::warn!(
                        host,
                        "unreadable stored message {}; left in place",
                        String::from_utf8_lossy(&key)
                    );
                }
            }
        }
        if !self.engine.is_empty() {
            huddle_sdk::info!(host, "{} stored messages to deliver", self.engine.len());
        }
        self.run(host, effects);
        self.rescan(host)?;
        self.sweep(host);
        Ok(())
    }

    /// Reads every binding and brings the device set up to date.
    fn rescan(&mut self, host: &Host) -> Result<()> {
        let now = now_ms();
        let current: HashSet<String> = host
            .namespace("location")
            .scan_all(b"")?
            .into_iter()
            .filter(|(_, v)| !expired(v, now))
            .filter_map(|(k, _)| String::from_utf8(k).ok())
            .collect();
        let gone: Vec<String> = self.devices.difference(&current).cloned().collect();
        let mut effects = Vec::new();
        for key in gone {
            effects.extend(self.engine.device_down(&key));
        }
        for key in &current {
            effects.extend(self.engine.device_up(key, now));
        }
        self.devices = current;
        self.run(host, effects);
        Ok(())
    }

    /// Relays an is-composing indication to the user's devices through the host (forked);
    /// the sender gets the outcome. Never stored, never in the history.
    fn relay(&mut self, host: &Host, request: Request, content_type: &str) -> Result<()> {
        let from = request.header("From").unwrap_or_default().to_owned();
        let mut out = NewRequest::new(Method::Message, request.uri())
            .call_id(&self.call_ids.next())
            .from(&from)
            .to(&format!("<{}>", request.to_uri().unwrap_or(request.uri())));
        let answer = request.transaction().filter(|_| self.host_answers);
        if let Some(txn) = answer {
            out = out.header(HUDDLE_ANSWER_HEADER, &txn.0.to_string());
        }
        let out = out.body(content_type, request.body());
        match host.send(&out) {
            Ok(id) => {
                self.relays.insert(id, request);
                Ok(())
            }
            Err(_) => host.reply(&request, 503, "Service Unavailable - Relay Failed"),
        }
    }

    /// Carries out effects in order (some produce more).
    fn run(&mut self, host: &Host, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Respond {
                    txn,
                    status,
                    reason,
                } => {
                    if let Some(request) = self.waiting.remove(&txn) {
                        if self.answered_by_host.remove(&txn) {
                            // The host answered 200 already (`Huddle-Answer`).
                        } else if let Err(e) = host.reply(&request, status, &reason) {
                            huddle_sdk::debug!(host, "answer {status} not sent: {e}");
                        }
                        if status == 200 || status == 202 {
                            self.log_history(host, &request);
                        }
                    }
                }
                Effect::Persist { seq, then } if self.writers.is_some() => {
                    let Some(stored) = self.engine.message(seq) else {
                        continue;
                    };
                    let value = stored.record();
                    let event = host.wants_event(EVENT_STORED).then(|| stored_event(stored));
                    let reply = then.and_then(|txn| self.waiting.remove(&txn)).map(Box::new);
                    if let Some(request) = &reply {
                        // Answered 202 by the writer once durable (500 if the write fails).
                        self.log_history(host, request);
                    }
                    if let Some(writers) = &self.writers {
                        let key = queue_key(seq);
                        writers.submit(
                            host,
                            seq,
                            Job::Put {
                                seq,
                                key,
                                value,
                                reply,
                                event,
                            },
                        );
                    }
                }
                Effect::Persist { seq, then } => {
                    let written = match self.engine.message(seq) {
                        Some(stored) => host
                            .store()
                            .put(&queue_key(seq), &stored.record())
                            .map(|()| host.wants_event(EVENT_STORED).then(|| stored_event(stored))),
                        None => Err(Error::NotFound),
                    };
                    match written {
                        Ok(event) => {
                            if let Some(event) = event {
                                let _ = host.emit_event(EVENT_STORED, &event);
                            }
                            if let Some(txn) = then {
                                queue.push_back(Effect::Respond {
                                    txn,
                                    status: 202,
                                    reason: "Accepted - Stored For Delivery".into(),
                                });
                            }
                        }
                        Err(e) => {
                            huddle_sdk::error!(host, "storing message {seq} failed: {e}");
                            queue.extend(self.engine.store_failed(seq, then));
                        }
                    }
                }
                Effect::Progress { seq } => {
                    // Same key and (by sequence number) the same writer as the message's put,
                    // so the rewrite lands after it and before its delete.
                    let Some(stored) = self.engine.message(seq) else {
                        continue;
                    };
                    let (key, value) = (queue_key(seq), stored.record());
                    match &self.writers {
                        Some(writers) => writers.submit(host, seq, Job::Rewrite { key, value }),
                        None => {
                            if let Err(e) = host.store().put(&key, &value) {
                                huddle_sdk::warn!(
                                    host,
                                    "progress of message {seq} not written: {e}"
                                );
                            }
                        }
                    }
                }
                Effect::Unstore { seq } if self.writers.is_some() => {
                    if let Some(writers) = &self.writers {
                        let key = queue_key(seq);
                        writers.submit(host, seq, Job::Delete { key });
                    }
                }
                Effect::Unstore { seq } => {
                    if let Err(e) = host.store().delete(&queue_key(seq)) {
                        huddle_sdk::warn!(host, "deleting stored message {seq} failed: {e}");
                    }
                }
                Effect::Send {
                    attempt,
                    seq,
                    target,
                } => {
                    // The waiting sender, for the host to answer on success (ABI 1.6).
                    let answer = self
                        .engine
                        .sender(seq)
                        .filter(|_| self.host_answers)
                        .and_then(|sender| {
                            let txn = self.waiting.get(&sender)?.transaction()?;
                            Some((sender, txn))
                        });
                    let scratch = &mut self.scratch;
                    scratch.clear();
                    self.call_ids.write_next(scratch);
                    let from_tagged = self.engine.from_tagged(seq);
                    let sent = self
                        .engine
                        .message(seq)
                        .ok_or(Error::NotFound)
                        .and_then(|m| {
                            let answer = answer.map(|(_, t)| t);
                            send_delivery(host, m, from_tagged, &target, answer, scratch)
                        });
                    match sent {
                        Ok(id) => {
                            self.attempts.insert(id, attempt);
                            if let Some((sender, _)) = answer {
                                self.answering.insert(id, sender);
                            }
                        }
                        Err(e) => {
                            huddle_sdk::debug!(host, "delivery of {seq} not sent: {e}");
                            queue.extend(self.engine.on_result(attempt, 503, now_ms()));
                        }
                    }
                }
                Effect::Notify { stored, .. } => self.notify(host, &stored),
                Effect::Expired { seq } => {
                    huddle_sdk::info!(host, "message {seq} expired undelivered");
                }
            }
        }
        self.rearm(host);
    }

    fn notify(&mut self, host: &Host, m: &Stored) {
        let Some(ask) = &m.imdn else {
            return;
        };
        let (ct, body) = wire::imdn_notice(ask, &m.to, &m.from_uri, now_ms());
        let notice = NewRequest::new(Method::Message, &m.from_uri)
            .call_id(&self.call_ids.next())
            .from(&format!("<{}>", m.to))
            .to(&format!("<{}>", m.from_uri))
            .header("Date", &wire::sip_date(now_ms()))
            .body(&ct, &body);
        match host.send(&notice) {
            Ok(id) => {
                self.notices.insert(id);
            }
            Err(e) => huddle_sdk::debug!(host, "delivery notice not sent: {e}"),
        }
    }

    /// The `Date` value for `now_ms`, formatted once per second.
    fn date_of(&mut self, now_ms: u64) -> String {
        let second = now_ms / 1000;
        match &self.date {
            Some((at, date)) if *at == second => date.clone(),
            _ => {
                let date = wire::sip_date(now_ms);
                self.date = Some((second, date.clone()));
                date
            }
        }
    }

    /// Keeps one host timer at the engine's next wake-up.
    fn rearm(&mut self, host: &Host) {
        let Some(at) = self.engine.next_wake() else {
            return;
        };
        if let Some((timer, armed)) = self.wake {
            if armed <= at {
                return;
            }
            let _ = host.cancel_timer(timer);
        }
        let delay = Duration::from_millis(at.saturating_sub(now_ms()));
        match host.set_timer(delay, TOKEN_WAKE) {
            Ok(timer) => self.wake = Some((timer, at)),
            Err(e) => {
                self.wake = None;
                huddle_sdk::error!(host, "no timer for retries and expiry: {e}");
            }
        }
    }

    fn log_history(&mut self, host: &Host, request: &Request) {
        if self.config.history_retention_secs == 0 {
            return;
        }
        self.history_seq += 1;
        self.history.push(&HistoryRef {
            seq: self.history_seq,
            ts_ms: now_ms(),
            from: request.from_uri().unwrap_or_default(),
            to: request
                .to_uri()
                .filter(|t| t.contains('@'))
                .unwrap_or(request.uri()),
            content_type: request.content_type_full().unwrap_or(""),
            body: BodyRef::of(request.body()),
        });
        if self.history.len() >= HISTORY_BATCH {
            self.flush(host);
        } else if !self.flush_armed {
            let delay = Duration::from_millis(self.config.history_flush_ms);
            self.flush_armed = host.set_timer(delay, TOKEN_FLUSH).is_ok();
        }
    }

    /// Writes buffered history as one record (on a writer when there are writers).
    fn flush(&mut self, host: &Host) {
        let Some(((ts_ms, seq), entries, value)) = self.history.take() else {
            return;
        };
        let key = history_key(ts_ms, seq);
        if let Some(writers) = &self.writers {
            // Off this thread, sharing a commit with the messages being written.
            let job = Job::Rewrite { key, value };
            writers.submit(host, 0, job);
            return;
        }
        if let Err(e) = host.store().put(&key, &value) {
            huddle_sdk::warn!(host, "history of {entries} messages not written: {e}");
        }
    }

    /// Deletes history older than the retention, a bounded number at a time.
    fn sweep(&mut self, host: &Host) {
        let retention = self.config.history_retention_secs;
        if retention == 0 {
            return;
        }
        let cutoff = now_ms().saturating_sub(retention.saturating_mul(1000));
        let cutoff_key = format!("h/{cutoff:016x}");
        let mut deleted = 0;
        if let Ok(page) = host.store().scan(b"h/", None, SWEEP_BATCH) {
            for (key, _) in page.entries {
                if key.as_slice() >= cutoff_key.as_bytes() {
                    break;
                }
                if host.store().delete(&key).is_ok() {
                    deleted += 1;
                }
            }
        }
        let next = if deleted == SWEEP_BATCH { 1 } else { 600 };
        let _ = host.set_timer(Duration::from_secs(next), TOKEN_SWEEP);
    }
}

/// The first value of a field whose name the SIP parser does not know
/// (`Disposition-Notification`, `Message-ID`): what `Request::header` gives, found by the
/// name's text, where `header` makes an owned name to look it up (an allocation per lookup,
/// two per message).
fn unknown_header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    let message = request.message();
    message
        .headers()
        .iter()
        .find(|h| matches!(&h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(name)))
        .map(|h| message.text(h.value))
}

/// The webhook event of a message made durable.
pub(crate) const EVENT_STORED: &str = "message.stored";
/// The webhook event of a message a device accepted.
const EVENT_DELIVERED: &str = "message.delivered";

/// The `message.stored` event of a message made durable: who, what kind, how big; never the
/// body. Written straight from borrowed fields (a `json!` value cost a dozen allocations per
/// message where this costs one), and only when a webhook takes it (ABI 1.8; a host before
/// that cannot tell, and gets it for every stored message).
fn stored_event(m: &Stored) -> String {
    #[derive(Serialize)]
    #[serde(crate = "huddle_sdk::serde")]
    struct Event<'a> {
        id: Hex16,
        from: &'a str,
        to: &'a str,
        content_type: &'a str,
        size: usize,
    }
    to_json(&Event {
        id: Hex16(m.seq),
        from: &m.from_uri,
        to: &m.to,
        content_type: &m.content_type,
        size: m.body.len(),
    })
}

/// The `message.delivered` event of a message a device accepted: `binding` is the device's
/// `location/` key, `null` when the host forked the message to the user's devices and one
/// accepted.
fn delivered_event(m: &Stored, target: &Target) -> String {
    #[derive(Serialize)]
    #[serde(crate = "huddle_sdk::serde")]
    struct Event<'a> {
        id: Hex16,
        from: &'a str,
        to: &'a str,
        binding: Option<&'a str>,
    }
    let binding = match target {
        Target::Device(key) => Some(key.as_str()),
        Target::Aor => None,
    };
    to_json(&Event {
        id: Hex16(m.seq),
        from: &m.from_uri,
        to: &m.to,
        binding,
    })
}

/// A sequence number as the 16 lowercase hex digits of its store key, serialized as a string
/// without an intermediate `String`.
struct Hex16(u64);

impl Serialize for Hex16 {
    fn serialize<S: huddle_sdk::serde::Serializer>(
        &self,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:016x}", self.0))
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Structs of strings and numbers always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// Sends the MESSAGE that delivers `m` to `target`: the original From, Date and Content-Type.
/// `scratch` holds its Call-ID, and is written on (see [`delivery_parts`]).
fn send_delivery(
    host: &Host,
    m: &Stored,
    from_tagged: bool,
    target: &Target,
    answer: Option<TransactionId>,
    scratch: &mut String,
) -> Result<RequestId> {
    delivery_parts(m, from_tagged, target, answer, scratch, |parts| {
        host.send_parts(parts)
    })
}

/// Hands `f` the delivery of `m` to `target` in parts, borrowed from `m`: the fields
/// `NewRequest` would write, in its order, without copying them into one first (this runs for
/// every delivery). `scratch` holds the Call-ID; the To and `Huddle-Answer` values are
/// written after it, so that a delivery allocates nothing of its own once `scratch` has grown
/// (the fields' array lives on the stack).
fn delivery_parts<R>(
    m: &Stored,
    from_tagged: bool,
    target: &Target,
    answer: Option<TransactionId>,
    scratch: &mut String,
    f: impl FnOnce(&RequestParts<'_>) -> R,
) -> R {
    let call_id_end = scratch.len();
    scratch.push('<');
    scratch.push_str(&m.to);
    scratch.push('>');
    let to_end = scratch.len();
    if let Some(txn) = answer {
        scratch.push_str(itoa::Buffer::new().format(txn.0));
    }
    let (call_id, rest) = scratch.split_at(call_id_end);
    let (to, answer_value) = rest.split_at(to_end - call_id_end);
    // `from_tagged` is the engine's (`Engine::from_tagged`): true only when the arrival's
    // `SenderFrom::received` read a tag in this very value.
    let from = if from_tagged {
        std::borrow::Cow::Borrowed(m.from.as_str())
    } else {
        huddle_sdk::tagged(&m.from)
    };
    let fields = [
        ("Max-Forwards", "70"),
        ("From", &*from),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", "1 MESSAGE"),
        ("Date", &*m.date),
    ];
    let binding = match target {
        Target::Device(key) => Some((BINDING_HEADER, key.as_str())),
        Target::Aor => None,
    };
    let answer = answer.map(|_| (HUDDLE_ANSWER_HEADER, answer_value));
    let mut headers = [("", ""); 9];
    let mut n = 0;
    for field in fields
        .into_iter()
        .chain(binding)
        .chain(answer)
        .chain([("Content-Type", m.content_type.as_str())])
    {
        headers[n] = field;
        n += 1;
    }
    let body = m.body.as_bytes();
    f(&RequestParts {
        method: "MESSAGE",
        uri: &m.to,
        headers: &headers[..n],
        body: &body,
    })
}

// Its allocations go to the host's allocator (ABI 1.11; the system's on an older host): glibc's
// malloc and free were 8–11.5 k instructions of each online message. Only the library's: the
// crate is also linked as an rlib, by its own tests (which get the system's allocator through
// it) and never by a program with an allocator of its own.
huddle_sdk::use_host_allocator!();

// Capabilities: it sends requests, keeps messages in its store, watches bindings and times
// retries and expiry.
huddle_sdk::export_plugin!(
    Messaging,
    "messaging",
    env!("CARGO_PKG_VERSION"),
    Capabilities::SEND_REQUEST
        .with(Capabilities::STORE)
        .with(Capabilities::STORE_WATCH)
        .with(Capabilities::LOCATION)
        .with(Capabilities::TIMERS)
        .with(Capabilities::REGISTRATION_EVENTS)
);

#[cfg(test)]
mod tests;
