//! The messaging store's sans-IO core: which message goes to which device when, what the
//! sender is told, what must be made durable first. No host, no clock, no store: every input
//! carries the wall-clock time in milliseconds, and every decision comes out as an [`Effect`]
//! that the glue (`lib.rs`) carries out in order. Tests drive it in virtual time.
//!
//! # Model
//!
//! * A **message** is addressed to a local user. It is *delivered* once one device accepted it
//!   (2xx); it is *done* when delivered and no device it was sent to still waits for a retry,
//!   or when its lifetime ends (*expired*).
//! * A **device** is one binding of the user (its `location/` key). Each device has a queue of
//!   message ids in arrival order and sends them in that order with at most `device_window`
//!   in flight (1: strictly one at a time, so not even a retry can reorder). A device that answers an error or times out is *failed*: it is retried
//!   after an exponential backoff, up to `max_attempts` times per message, then that message is
//!   given up for that device (it stays for devices that register later if nobody got it).
//! * A message the sender is still waiting on is answered `200` by the first device to accept
//!   it; if no device accepted it within `answer_timeout_ms` (SIPml5 answers only when its
//!   application calls `accept()`), or every device failed, it is made durable and answered
//!   `202 Accepted`. A user with no device: when the host said whether the user exists
//!   ([`Recipient`], from its account list), an unknown user is answered `404` and a known one
//!   has the message stored at once (`202` after the write), with no SIP round trip. A host that
//!   cannot tell (before plugin ABI 1.5) is asked to deliver to the address of record
//!   ([`Target::Aor`]) instead — it answers `404` for an unknown user and `480` when nobody is
//!   registered, and only then is the message stored.
//! * Devices registering later get every undelivered message of their user, in order.
//!
//! State is bounded by config: the store holds at most `quota_messages` messages and
//! `quota_bytes` bytes of bodies per user (beyond: `486` with a reason), each body at most
//! `max_body_bytes` (`413`); messages in flight to a user's live devices (not stored, their
//! senders waiting) are capped at four times the quota.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// The engine's maps hash with foldhash (seeded per process, as the host's maps): SipHash was
/// a visible part of the per-message bookkeeping (several lookups per message and device).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use crate::wire::{Body, ImdnAsk};

/// Limits and timings, from the plugin's config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Messages one user may hold undelivered (486 beyond).
    pub quota_messages: usize,
    /// Body bytes one user may hold undelivered (486 beyond).
    pub quota_bytes: usize,
    /// How long an undelivered message is kept.
    pub lifetime_ms: u64,
    /// How long the sender waits for a device before the message is stored and answered 202.
    pub answer_timeout_ms: u64,
    /// First retry delay after a device failed; doubled per failure.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Attempts per message and device before it is given up for that device.
    pub max_attempts: u32,
    /// Messages in flight per device. 1 keeps strict order even across a failure; more keep
    /// the sending order (a stream or loss-free datagrams preserve it) at a higher rate.
    pub device_window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024,
            quota_messages: 1000,
            quota_bytes: 4 * 1024 * 1024,
            lifetime_ms: 7 * 24 * 3600 * 1000,
            answer_timeout_ms: 8_000,
            retry_base_ms: 2_000,
            retry_max_ms: 300_000,
            max_attempts: 8,
            device_window: 16,
        }
    }
}

/// The content of a message, as received and as stored.
#[derive(
    Debug, Clone, PartialEq, Eq, huddle_sdk::serde::Serialize, huddle_sdk::serde::Deserialize,
)]
#[serde(crate = "huddle_sdk::serde")]
pub struct Stored {
    /// Arrival order, unique (also the store key).
    pub seq: u64,
    /// The recipient's user part.
    pub user: String,
    /// The recipient's address (`sip:bob@example.test`), used as Request-URI and To.
    pub to: String,
    /// The From header as received (name-addr with its parameters).
    pub from: String,
    /// The From URI (where notices go).
    pub from_uri: String,
    /// The Content-Type as received, parameters included.
    pub content_type: String,
    /// The Date header as received, or the arrival time.
    pub date: String,
    /// The body.
    pub body: Body,
    /// Arrival time, unix milliseconds.
    pub received_ms: u64,
    /// End of life, unix milliseconds.
    pub expires_ms: u64,
    /// The sender's request for a delivery notice.
    #[serde(default)]
    pub imdn: Option<ImdnAsk>,
    /// Delivery progress, kept in the record so that a restart neither repeats a message to
    /// a device that accepted it nor forgets one still owed (see [`Progress`]).
    #[serde(default, skip_serializing_if = "Progress::is_undelivered")]
    pub progress: Progress,
}

impl Stored {
    /// About the size of its record ([`crate::wire::encode`]): the text fields as they are
    /// (JSON escapes a few characters of some), the field names, numbers and punctuation.
    pub fn record_size_hint(&self) -> usize {
        const FIXED: usize = 256;
        let owed: usize = self.progress.owed.iter().map(|k| k.len() + 3).sum();
        let imdn = self.imdn.as_ref().map_or(0, |a| a.message_id.len() + 48);
        let body = match &self.body {
            Body::Text(t) | Body::Hex(t) => t.len(),
        };
        FIXED
            + self.user.len()
            + self.to.len()
            + self.from.len()
            + self.from_uri.len()
            + self.content_type.len()
            + self.date.len()
            + body
            + owed
            + imdn
    }

    /// Its record ([`crate::wire::encode`] of it, the same bytes), written by hand into a
    /// buffer of about its size.
    pub fn record(&self) -> Vec<u8> {
        use crate::wire::json;
        let mut out = Vec::with_capacity(self.record_size_hint());
        out.extend_from_slice(&[crate::wire::RECORD_FORMAT, b'{']);
        json::key(&mut out, true, "seq");
        json::number(&mut out, self.seq);
        for (key, value) in [
            ("user", &self.user),
            ("to", &self.to),
            ("from", &self.from),
            ("from_uri", &self.from_uri),
            ("content_type", &self.content_type),
            ("date", &self.date),
        ] {
            json::key(&mut out, false, key);
            json::string(&mut out, value);
        }
        json::key(&mut out, false, "body");
        self.body.write_json(&mut out);
        json::key(&mut out, false, "received_ms");
        json::number(&mut out, self.received_ms);
        json::key(&mut out, false, "expires_ms");
        json::number(&mut out, self.expires_ms);
        json::key(&mut out, false, "imdn");
        match &self.imdn {
            None => out.extend_from_slice(b"null"),
            Some(ask) => {
                out.push(b'{');
                json::key(&mut out, true, "message_id");
                json::string(&mut out, &ask.message_id);
                json::key(&mut out, false, "cpim");
                out.extend_from_slice(if ask.cpim { b"true" } else { b"false" });
                out.push(b'}');
            }
        }
        if !self.progress.is_undelivered() {
            json::key(&mut out, false, "progress");
            out.push(b'{');
            json::key(&mut out, true, "delivered");
            out.extend_from_slice(if self.progress.delivered {
                b"true"
            } else {
                b"false"
            });
            if !self.progress.owed.is_empty() {
                json::key(&mut out, false, "owed");
                out.push(b'[');
                for (i, key) in self.progress.owed.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::string(&mut out, key);
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        out.push(b'}');
        out
    }
}

/// How far a stored message got. Undelivered, it goes to every device of its user, those that
/// register later included; once a device accepted it, only to the devices it was queued on
/// then (the engine's rule within a run, which the record carries across a restart).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    huddle_sdk::serde::Serialize,
    huddle_sdk::serde::Deserialize,
)]
#[serde(crate = "huddle_sdk::serde")]
pub struct Progress {
    /// Some device accepted it (the sender got its 200 or 202 and any notice went out).
    pub delivered: bool,
    /// Devices (`location/` keys) that still get it, when `delivered`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<String>,
}

impl Progress {
    /// True for a message no device accepted yet (the record then carries no progress).
    pub fn is_undelivered(&self) -> bool {
        !self.delivered
    }
}

/// A message as it arrives (the glue has parsed it).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The transaction to answer (opaque to the engine).
    pub txn: u64,
    /// The recipient's user part.
    pub user: String,
    /// The recipient's address.
    pub to: String,
    /// The From header value, with whether it carries a tag.
    pub from: SenderFrom,
    /// The From URI.
    pub from_uri: String,
    /// The Content-Type, parameters included.
    pub content_type: String,
    /// The Date header, if any.
    pub date: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// A delivery notice request.
    pub imdn: Option<ImdnAsk>,
    /// What the host said about the recipient.
    pub recipient: Recipient,
}

/// A sender's From value and whether it carries a tag, made together so that they cannot
/// disagree: a delivery sends a tagged one as it is, without reading it again (see
/// [`Engine::from_tagged`]), and reads any other one with `huddle_sdk::tagged`, which adds a
/// tag when it finds none. Only [`SenderFrom::received`] can say "tagged".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderFrom {
    value: String,
    tagged: bool,
}

impl SenderFrom {
    /// The first From field of `message` as received, tagged when its parsed header has a tag:
    /// the field, parser and `tag()` that `huddle_sdk::tagged` reads, through
    /// [`huddle_sdk::Message::from_tag`] (kept from the request's first read of its From).
    /// `None` when the message has no From.
    pub fn received(message: &huddle_sdk::Message) -> Option<Self> {
        let value = message.header(&huddle_sdk::HeaderName::From)?;
        Some(SenderFrom {
            value: value.to_owned(),
            tagged: message.from_tag().is_some(),
        })
    }

    /// A From value not known to carry a tag: its delivery reads it again.
    pub fn unknown(value: String) -> Self {
        SenderFrom {
            value,
            tagged: false,
        }
    }

    /// The value, as received.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Whether the value is known to carry a tag.
    pub fn is_tagged(&self) -> bool {
        self.tagged
    }
}

/// What the host said about a message's recipient when it arrived. Only consulted when the
/// user has no device: bindings are known from registration events, which come in order
/// with the messages that follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// Not asked, or the host cannot tell: with no device, the host is asked by routing the
    /// message to the address of record.
    Unknown,
    /// The host has an account of that name.
    Exists,
    /// The host has no such account.
    NoSuchUser,
}

/// Where an attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One binding, by its `location/` key.
    Device(String),
    /// The address of record, routed by the host (used when no device is known).
    Aor,
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer a sender's transaction.
    Respond {
        /// The transaction.
        txn: u64,
        /// Status code.
        status: u16,
        /// Reason phrase, saying why (most are constants: no allocation per answer).
        reason: Cow<'static, str>,
    },
    /// Write message `seq` durably; on success answer `then` (if any) 202, on failure tell
    /// [`Engine::store_failed`].
    Persist {
        /// The message.
        seq: u64,
        /// The transaction to answer `202 Accepted` once it is durable.
        then: Option<u64>,
    },
    /// Rewrite stored message `seq` (same key, same writer as its [`Effect::Persist`]): its
    /// [`Stored::progress`] changed.
    Progress {
        /// The message.
        seq: u64,
    },
    /// Delete stored message `seq`.
    Unstore {
        /// The message.
        seq: u64,
    },
    /// Send message `seq` to a target; report the final status with [`Engine::on_result`].
    Send {
        /// The attempt, to report back.
        attempt: u64,
        /// The message.
        seq: u64,
        /// Where.
        target: Target,
    },
    /// Send a positive-delivery notice for message `seq` to its sender.
    Notify {
        /// The message (still readable through [`Engine::message`] until the effects are
        /// carried out, or passed along: see [`Effect::Notify::stored`]).
        seq: u64,
        /// A copy of the message, since it may be done (and forgotten) already.
        stored: Box<Stored>,
    },
    /// A message ended without delivery (expired, or given up for every device).
    Expired {
        /// The message.
        seq: u64,
    },
}

/// One device's queue.
#[derive(Debug, Default)]
struct Device {
    queue: BTreeSet<u64>,
    /// Attempts in flight: attempt → message (at most `device_window`).
    in_flight: BTreeMap<u64, u64>,
    failures: u32,
    retry_at: Option<u64>,
}

/// One user's messages and devices.
#[derive(Debug, Default)]
struct User {
    messages: BTreeSet<u64>,
    /// Messages (and their body bytes) in the store: what the quota limits.
    stored: usize,
    stored_bytes: usize,
    devices: BTreeMap<String, Device>,
}

/// How many more messages than its quota a user may have in flight to live devices (not
/// stored: their senders wait), so that memory stays bounded when a device falls behind.
const IN_FLIGHT_FACTOR: usize = 4;

#[derive(Debug)]
struct Msg {
    data: Stored,
    stored: bool,
    delivered: bool,
    notified: bool,
    /// The sender's transaction while it waits.
    sender: Option<u64>,
    /// Failed attempts per device.
    attempts: HashMap<String, u32>,
    /// An attempt to the address of record in flight.
    aor_attempt: Option<u64>,
    /// Whether `data.from` is known to carry a tag ([`SenderFrom`]); false for a message read
    /// back from the store.
    from_tagged: bool,
}

/// What a pending wake-up is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Retry(String, String),
    Answer(u64),
    Expire(u64),
}

/// Users remembered as existing without a binding (see `Engine::offline`).
const OFFLINE_CACHE: usize = 65_536;
/// How long that is remembered: a user deleted meanwhile could get messages stored this long.
const OFFLINE_TTL_MS: u64 = 60_000;

/// The messaging core.
#[derive(Debug)]
pub struct Engine {
    limits: Limits,
    /// Users the host recently answered "no binding" (480) for, until when: their next
    /// messages are stored without asking again. A binding that appears shows up as a device.
    offline: HashMap<String, u64>,
    users: HashMap<String, User>,
    msgs: HashMap<u64, Msg>,
    attempts: HashMap<u64, (u64, Target)>,
    wakes: BTreeSet<(u64, Wake)>,
    next_attempt: u64,
    last_seq: u64,
}

/// A notice's own id: the original id and the time, so two notices never share one.
pub fn notice_id(message_id: &str, now_ms: u64) -> String {
    format!("{message_id}.{now_ms:x}.dlv")
}

/// The user part of a `location/` key (`bob@example.test/…`).
pub fn user_of_binding(key: &str) -> Option<&str> {
    // Up to the first `@` or `/`, whichever comes first (what splitting at `/` and then at `@`
    // gives), by one scan of the bytes: `str::split` cost ~320 instructions an answer here.
    let end = key
        .bytes()
        .position(|b| b == b'/' || b == b'@')
        .unwrap_or(key.len());
    // Both are ASCII: `end` is a character boundary.
    Some(&key[..end]).filter(|u| !u.is_empty())
}

/// Deliveries in flight to one device up to which [`Engine::pump`] scans them rather than
/// building a set.
const SCAN_IN_FLIGHT: usize = 32;

/// What a device's pump reads and writes besides the device: borrowed apart from
/// `Engine::users`, so that every device of a user can be pumped where it is.
struct Sends<'a> {
    msgs: &'a HashMap<u64, Msg>,
    attempts: &'a mut HashMap<u64, (u64, Target)>,
    next_attempt: &'a mut u64,
}

impl Sends<'_> {
    /// Sends the next queued messages to device `key`, in order, up to `window` in flight,
    /// unless it is backing off.
    fn pump(
        &mut self,
        key: &str,
        dev: &mut Device,
        window: usize,
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) {
        if dev.retry_at.is_some_and(|t| t > now_ms) {
            return;
        }
        // What is in flight is skipped. A small window (16 by default) is scanned: a set built
        // on every call cost an allocation per delivery and per answer.
        let busy: Option<BTreeSet<u64>> = (dev.in_flight.len() > SCAN_IN_FLIGHT)
            .then(|| dev.in_flight.values().copied().collect());
        let mut dead = Vec::new();
        let mut next = Vec::new();
        for &seq in &dev.queue {
            if dev.in_flight.len() + next.len() >= window {
                break;
            }
            let in_flight = match &busy {
                Some(busy) => busy.contains(&seq),
                None => dev.in_flight.values().any(|&s| s == seq),
            };
            if in_flight {
                continue;
            }
            if self
                .msgs
                .get(&seq)
                .is_some_and(|m| m.data.expires_ms > now_ms)
            {
                next.push(seq);
            } else {
                dead.push(seq);
            }
        }
        for seq in dead {
            dev.queue.remove(&seq);
        }
        for seq in next {
            *self.next_attempt += 1;
            let attempt = *self.next_attempt;
            dev.in_flight.insert(attempt, seq);
            self.attempts
                .insert(attempt, (seq, Target::Device(key.to_owned())));
            out.push(Effect::Send {
                attempt,
                seq,
                target: Target::Device(key.to_owned()),
            });
        }
    }
}

impl Engine {
    /// An empty engine.
    pub fn new(limits: Limits) -> Self {
        Engine {
            limits,
            offline: HashMap::default(),
            users: HashMap::default(),
            msgs: HashMap::default(),
            attempts: HashMap::default(),
            wakes: BTreeSet::new(),
            next_attempt: 0,
            last_seq: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A message still held.
    pub fn message(&self, seq: u64) -> Option<&Stored> {
        self.msgs.get(&seq).map(|m| &m.data)
    }

    /// Whether the From of `seq` is known to carry a tag (its delivery may send it as it is):
    /// the glue said so when it arrived. False when not known (a message read back from the
    /// store): the delivery reads it then.
    pub fn from_tagged(&self, seq: u64) -> bool {
        self.msgs.get(&seq).is_some_and(|m| m.from_tagged)
    }

    /// The sender's transaction (the plugin's number) while the sender of `seq` waits.
    pub fn sender(&self, seq: u64) -> Option<u64> {
        self.msgs.get(&seq).and_then(|m| m.sender)
    }

    /// The message and target of an attempt in flight.
    pub fn attempt(&self, attempt: u64) -> Option<(&Stored, &Target)> {
        let (seq, target) = self.attempts.get(&attempt)?;
        Some((self.message(*seq)?, target))
    }

    /// How many messages are held (all users).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The earliest time [`Engine::on_tick`] has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        self.wakes.first().map(|(t, _)| *t)
    }

    fn new_seq(&mut self, now_ms: u64) -> u64 {
        // Time-based, so sequence numbers keep rising across restarts (history keys and
        // per-user order depend on it); strictly increasing within a run.
        self.last_seq = (now_ms << 12).max(self.last_seq + 1);
        self.last_seq
    }

    /// A message from the store, at start-up (in key order).
    pub fn restore(&mut self, data: Stored, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.last_seq = self.last_seq.max(data.seq);
        if data.expires_ms <= now_ms {
            out.push(Effect::Unstore { seq: data.seq });
            out.push(Effect::Expired { seq: data.seq });
            return out;
        }
        let seq = data.seq;
        let user = self.users.entry(data.user.clone()).or_default();
        user.messages.insert(seq);
        user.stored += 1;
        user.stored_bytes += data.body.len();
        self.wakes.insert((data.expires_ms, Wake::Expire(seq)));
        let delivered = data.progress.delivered;
        self.msgs.insert(
            seq,
            Msg {
                data,
                stored: true,
                delivered,
                // The notice went out with the first delivery, before the restart.
                notified: delivered,
                sender: None,
                attempts: HashMap::default(),
                aor_attempt: None,
                from_tagged: false,
            },
        );
        out
    }

    /// The `location/` keys of `user`'s known devices.
    pub fn devices_of(&self, user: &str) -> impl Iterator<Item = &str> {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|u| u.devices.keys().map(String::as_str))
    }

    /// A binding appeared or was refreshed: queue the user's undelivered messages on it and
    /// start sending. A refreshed device that was failing is retried now.
    pub fn device_up(&mut self, key: &str, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(user_name) = user_of_binding(key).map(str::to_owned) else {
            return out;
        };
        let undelivered: Vec<u64> = self
            .users
            .get(&user_name)
            .map(|u| {
                u.messages
                    .iter()
                    .copied()
                    // A message being offered to the address of record may reach this
                    // device that way; it is queued here only if that attempt fails.
                    .filter(|s| {
                        self.msgs.get(s).is_some_and(|m| {
                            m.aor_attempt.is_none()
                                && (!m.delivered || m.data.progress.owed.iter().any(|k| k == key))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let user = self.users.entry(user_name.clone()).or_default();
        let device = user.devices.entry(key.to_owned()).or_default();
        device.queue.extend(undelivered);
        device.failures = 0;
        if device.retry_at.take().is_some() {
            self.wakes
                .retain(|(_, w)| !matches!(w, Wake::Retry(u, k) if *u == user_name && k == key));
        }
        self.pump(&user_name, key, now_ms, &mut out);
        out
    }

    /// A binding went away: its queue is dropped; messages nobody else holds stay with the user.
    pub fn device_down(&mut self, key: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(user_name) = user_of_binding(key).map(str::to_owned) else {
            return out;
        };
        let Some(device) = self
            .users
            .get_mut(&user_name)
            .and_then(|u| u.devices.remove(key))
        else {
            return out;
        };
        let in_flight: BTreeSet<u64> = device.in_flight.values().copied().collect();
        for seq in device.queue {
            if !in_flight.contains(&seq) {
                self.settle(seq, &mut out);
            }
        }
        out
    }

    /// A message arrived.
    pub fn on_message(&mut self, m: Incoming, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let respond = |status: u16, reason: Cow<'static, str>| Effect::Respond {
            txn: m.txn,
            status,
            reason,
        };
        if m.body.len() > self.limits.max_body_bytes {
            out.push(respond(
                413,
                format!(
                    "Request Entity Too Large - Body Over {} Bytes",
                    self.limits.max_body_bytes
                )
                .into(),
            ));
            return out;
        }
        let (held, stored, bytes, has_devices) =
            self.users.get(&m.user).map_or((0, 0, 0, false), |u| {
                (
                    u.messages.len(),
                    u.stored,
                    u.stored_bytes,
                    !u.devices.is_empty(),
                )
            });
        if m.recipient == Recipient::NoSuchUser && !has_devices {
            // The host has no account of that name (now; messages held from before the
            // account went stay until delivered or expired): nothing is kept.
            out.push(respond(404, "Not Found - No Such User".into()));
            return out;
        }
        if held >= self.limits.quota_messages.saturating_mul(IN_FLIGHT_FACTOR) {
            out.push(respond(
                486,
                "Busy Here - Too Many Messages In Flight To This User".into(),
            ));
            return out;
        }
        if stored >= self.limits.quota_messages {
            out.push(respond(
                486,
                format!(
                    "Busy Here - Message Store Full ({} Messages)",
                    self.limits.quota_messages
                )
                .into(),
            ));
            return out;
        }
        if bytes + m.body.len() > self.limits.quota_bytes {
            out.push(respond(
                486,
                format!(
                    "Busy Here - Message Store Full ({} Bytes)",
                    self.limits.quota_bytes
                )
                .into(),
            ));
            return out;
        }
        let seq = self.new_seq(now_ms);
        let from_tagged = m.from.tagged;
        let user_name = m.user;
        // A user seen before (every online one) is found without a copy of the name.
        if !self.users.contains_key(&user_name) {
            self.users.insert(user_name.clone(), User::default());
        }
        let Some(user) = self.users.get_mut(&user_name) else {
            return out;
        };
        user.messages.insert(seq);
        // Queued on every device; whether there are any decides below (their keys are not
        // copied: `pump_all` walks the devices where they are).
        for dev in user.devices.values_mut() {
            dev.queue.insert(seq);
        }
        let has_devices = !user.devices.is_empty();
        let data = Stored {
            seq,
            user: user_name.clone(),
            to: m.to,
            from: m.from.value,
            from_uri: m.from_uri,
            content_type: m.content_type,
            date: m.date.unwrap_or_else(|| crate::wire::sip_date(now_ms)),
            body: Body::from_vec(m.body),
            received_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.limits.lifetime_ms),
            imdn: m.imdn,
            progress: Progress::default(),
        };
        self.msgs.insert(
            seq,
            Msg {
                data,
                stored: false,
                delivered: false,
                notified: false,
                sender: Some(m.txn),
                attempts: HashMap::default(),
                aor_attempt: None,
                from_tagged,
            },
        );
        self.wakes.insert((
            now_ms.saturating_add(self.limits.lifetime_ms),
            Wake::Expire(seq),
        ));
        let known_offline = match m.recipient {
            // The host's account list says so, now.
            Recipient::Exists => true,
            Recipient::NoSuchUser => false,
            // Messages are held for them, or the host's routing said so a moment ago.
            Recipient::Unknown => {
                held > 0
                    || self
                        .offline
                        .get(&user_name)
                        .is_some_and(|&until| until > now_ms)
            }
        };
        if !has_devices && known_offline {
            // The user exists and has no device: store it without asking the host.
            self.persist(seq, true, &mut out);
        } else if !has_devices {
            let attempt = self.new_attempt(seq, Target::Aor);
            if let Some(msg) = self.msgs.get_mut(&seq) {
                msg.aor_attempt = Some(attempt);
            }
            out.push(Effect::Send {
                attempt,
                seq,
                target: Target::Aor,
            });
        } else {
            self.wakes
                .insert((now_ms + self.limits.answer_timeout_ms, Wake::Answer(seq)));
            self.pump_all(&user_name, now_ms, &mut out);
            // A device with a full window takes the message soon; when every device is
            // backing off after failures, nobody will before the retry: store it and answer.
            if self.all_failing(&user_name, now_ms) {
                self.settle(seq, &mut out);
            }
        }
        out
    }

    fn new_attempt(&mut self, seq: u64, target: Target) -> u64 {
        self.next_attempt += 1;
        self.attempts.insert(self.next_attempt, (seq, target));
        self.next_attempt
    }

    /// The final status of an attempt (`408` when nobody answered).
    pub fn on_result(&mut self, attempt: u64, status: u16, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some((seq, target)) = self.attempts.remove(&attempt) else {
            return out;
        };
        let ok = (200..300).contains(&status);
        match target {
            Target::Aor => {
                let Some(msg) = self.msgs.get_mut(&seq) else {
                    return out;
                };
                msg.aor_attempt = None;
                if ok {
                    self.delivered(seq, &mut out);
                } else if status == 404 || status == 403 {
                    self.offline.remove(&msg.data.user);
                    // The host knows no such user: nothing is kept.
                    if let Some(txn) = msg.sender.take() {
                        out.push(Effect::Respond {
                            txn,
                            status: 404,
                            reason: "Not Found - No Such User".into(),
                        });
                    }
                    self.forget(seq, &mut out);
                } else {
                    self.note_offline(seq, now_ms);
                    // Devices that appeared meanwhile get it now; the sender waits for them
                    // (up to the answer deadline) or, with none, is answered once it is stored.
                    let user_name = self.msgs.get(&seq).map(|m| m.data.user.clone());
                    let has_devices = user_name
                        .as_ref()
                        .and_then(|u| self.users.get_mut(u))
                        .is_some_and(|u| {
                            for d in u.devices.values_mut() {
                                d.queue.insert(seq);
                            }
                            !u.devices.is_empty()
                        });
                    if let (Some(user_name), true) = (user_name, has_devices) {
                        self.wakes
                            .insert((now_ms + self.limits.answer_timeout_ms, Wake::Answer(seq)));
                        self.pump_all(&user_name, now_ms, &mut out);
                    }
                    self.settle(seq, &mut out);
                }
                self.finish_if_done(seq, &mut out);
            }
            Target::Device(key) => {
                // Borrowed from the key: a copy of the name per answer is not needed.
                let Some(user_name) = user_of_binding(&key) else {
                    return out;
                };
                let max_attempts = self.limits.max_attempts;
                let (base, cap) = (self.limits.retry_base_ms, self.limits.retry_max_ms);
                let mut retry = None;
                if let Some(dev) = self
                    .users
                    .get_mut(user_name)
                    .and_then(|u| u.devices.get_mut(&key))
                {
                    dev.in_flight.remove(&attempt);
                    if ok {
                        dev.queue.remove(&seq);
                        dev.failures = 0;
                    } else {
                        dev.failures = dev.failures.saturating_add(1);
                        let tries = self.msgs.get_mut(&seq).map_or(max_attempts, |m| {
                            let n = m.attempts.entry(key.clone()).or_insert(0);
                            *n += 1;
                            *n
                        });
                        if tries >= max_attempts {
                            dev.queue.remove(&seq);
                        }
                        let shift = dev.failures.saturating_sub(1).min(20);
                        let delay = base.saturating_mul(1 << shift).min(cap);
                        dev.retry_at = Some(now_ms + delay);
                        retry = Some(now_ms + delay);
                    }
                }
                if let Some(at) = retry {
                    self.wakes
                        .insert((at, Wake::Retry(user_name.to_owned(), key.clone())));
                }
                if ok {
                    self.delivered(seq, &mut out);
                    self.record_progress(seq, &mut out);
                } else if retry.is_some() && self.queued_on(seq, user_name, &key) {
                    // Retried later from the store: durable now, whoever else delivers it.
                    let answer =
                        !self.msgs.get(&seq).is_some_and(|m| m.delivered) && !self.in_flight(seq);
                    self.persist(seq, answer, &mut out);
                } else {
                    self.settle(seq, &mut out);
                }
                self.finish_if_done(seq, &mut out);
                if retry.is_some() && self.all_failing(user_name, now_ms) {
                    // Nobody will take the messages queued behind this one before a retry:
                    // their senders are answered once they are durable.
                    let queued: Vec<u64> = self
                        .users
                        .get(user_name)
                        .map(|u| u.messages.iter().copied().collect())
                        .unwrap_or_default();
                    for q in queued {
                        if self.msgs.get(&q).is_some_and(|m| m.sender.is_some()) {
                            self.settle(q, &mut out);
                        }
                    }
                }
                self.pump(user_name, &key, now_ms, &mut out);
            }
        }
        out
    }

    /// The write of `seq` failed: answer the sender 500 and drop the message.
    pub fn store_failed(&mut self, seq: u64, txn: Option<u64>) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(txn) = txn {
            out.push(Effect::Respond {
                txn,
                status: 500,
                reason: "Server Internal Error - Message Store Failed".into(),
            });
        }
        if let Some(m) = self.msgs.get_mut(&seq) {
            if m.stored {
                m.stored = false;
                if let Some(u) = self.users.get_mut(&m.data.user) {
                    u.stored = u.stored.saturating_sub(1);
                    u.stored_bytes = u.stored_bytes.saturating_sub(m.data.body.len());
                }
            }
            if !m.delivered {
                self.forget(seq, &mut out);
            }
        }
        out
    }

    /// Time passed: retries, answer deadlines, expiries up to `now_ms`.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.wakes.first() {
            if *at > now_ms {
                break;
            }
            let Some((_, wake)) = self.wakes.pop_first() else {
                break;
            };
            match wake {
                Wake::Retry(user, key) => {
                    if let Some(dev) = self
                        .users
                        .get_mut(&user)
                        .and_then(|u| u.devices.get_mut(&key))
                    {
                        if dev.retry_at.is_some_and(|t| t <= now_ms) {
                            dev.retry_at = None;
                        }
                    }
                    self.pump(&user, &key, now_ms, &mut out);
                }
                Wake::Answer(seq) => {
                    if self.msgs.get(&seq).is_some_and(|m| m.sender.is_some()) {
                        self.persist(seq, true, &mut out);
                    }
                }
                Wake::Expire(seq) => {
                    if self.msgs.contains_key(&seq) {
                        if let Some(txn) = self.msgs.get_mut(&seq).and_then(|m| m.sender.take()) {
                            out.push(Effect::Respond {
                                txn,
                                status: 480,
                                reason: "Temporarily Unavailable - Message Expired".into(),
                            });
                        }
                        let delivered = self.msgs.get(&seq).is_some_and(|m| m.delivered);
                        if !delivered {
                            out.push(Effect::Expired { seq });
                        }
                        self.forget(seq, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Finds device `key` of `user_name`, then [`Sends::pump`] with `device_window`.
    fn pump(&mut self, user_name: &str, key: &str, now_ms: u64, out: &mut Vec<Effect>) {
        let window = self.limits.device_window.max(1);
        let Some(dev) = self
            .users
            .get_mut(user_name)
            .and_then(|u| u.devices.get_mut(key))
        else {
            return;
        };
        let mut sends = Sends {
            msgs: &self.msgs,
            attempts: &mut self.attempts,
            next_attempt: &mut self.next_attempt,
        };
        sends.pump(key, dev, window, now_ms, out);
    }

    /// [`Engine::pump`] for every device of the user, found in place: a new message to an
    /// online user used to copy every device's key to pump them one by one.
    fn pump_all(&mut self, user_name: &str, now_ms: u64, out: &mut Vec<Effect>) {
        let window = self.limits.device_window.max(1);
        let Some(user) = self.users.get_mut(user_name) else {
            return;
        };
        let mut sends = Sends {
            msgs: &self.msgs,
            attempts: &mut self.attempts,
            next_attempt: &mut self.next_attempt,
        };
        for (key, dev) in &mut user.devices {
            sends.pump(key, dev, window, now_ms, out);
        }
    }

    /// Remembers for a while that the recipient of `seq` exists but has no binding.
    fn note_offline(&mut self, seq: u64, now_ms: u64) {
        let Some(user) = self.msgs.get(&seq).map(|m| m.data.user.clone()) else {
            return;
        };
        if self.offline.len() >= OFFLINE_CACHE {
            // Bounded: forgetting only costs one more question to the host per user.
            self.offline.retain(|_, &mut until| until > now_ms);
            if self.offline.len() >= OFFLINE_CACHE {
                self.offline.clear();
            }
        }
        self.offline.insert(user, now_ms + OFFLINE_TTL_MS);
    }

    /// Whether every device of the user is backing off after a failure.
    fn all_failing(&self, user_name: &str, now_ms: u64) -> bool {
        self.users.get(user_name).is_some_and(|u| {
            u.devices
                .values()
                .all(|d| d.retry_at.is_some_and(|t| t > now_ms))
        })
    }

    /// Whether `seq` is still queued on device `key` of `user_name`.
    fn queued_on(&self, seq: u64, user_name: &str, key: &str) -> bool {
        self.users
            .get(user_name)
            .and_then(|u| u.devices.get(key))
            .is_some_and(|d| d.queue.contains(&seq))
    }

    /// Whether some device (or the address of record) has an attempt for `seq` in flight.
    fn in_flight(&self, seq: u64) -> bool {
        let Some(m) = self.msgs.get(&seq) else {
            return false;
        };
        m.aor_attempt.is_some()
            || self.users.get(&m.data.user).is_some_and(|u| {
                u.devices
                    .values()
                    .any(|d| d.in_flight.values().any(|&s| s == seq))
            })
    }

    /// A message nobody is delivering right now must be durable; its waiting sender is then
    /// answered 202.
    fn settle(&mut self, seq: u64, out: &mut Vec<Effect>) {
        let Some(m) = self.msgs.get(&seq) else {
            return;
        };
        if m.delivered || self.in_flight(seq) {
            return;
        }
        self.persist(seq, true, out);
    }

    fn persist(&mut self, seq: u64, answer: bool, out: &mut Vec<Effect>) {
        let Some(m) = self.msgs.get_mut(&seq) else {
            return;
        };
        let then = if answer { m.sender.take() } else { None };
        if m.stored {
            if let Some(txn) = then {
                out.push(Effect::Respond {
                    txn,
                    status: 202,
                    reason: "Accepted - Stored For Delivery".into(),
                });
            }
        } else {
            m.stored = true;
            if let Some(u) = self.users.get_mut(&m.data.user) {
                u.stored += 1;
                u.stored_bytes += m.data.body.len();
            }
            self.refresh_progress(seq);
            out.push(Effect::Persist { seq, then });
        }
    }

    /// Brings `seq`'s [`Progress`] up to date: whether it was delivered, and the devices that
    /// still have it queued or in flight. True when that changed.
    fn refresh_progress(&mut self, seq: u64) -> bool {
        let Some(m) = self.msgs.get(&seq) else {
            return false;
        };
        let owed: Vec<String> = if m.delivered {
            self.users
                .get(&m.data.user)
                .map(|u| {
                    u.devices
                        .iter()
                        .filter(|(_, d)| {
                            d.queue.contains(&seq) || d.in_flight.values().any(|&s| s == seq)
                        })
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let progress = Progress {
            delivered: m.delivered,
            owed,
        };
        match self.msgs.get_mut(&seq) {
            Some(m) if m.data.progress != progress => {
                m.data.progress = progress;
                true
            }
            _ => false,
        }
    }

    /// After a device accepted `seq`: a stored message that other devices still get has its
    /// progress rewritten, so that a restart delivers it to each of them once (one that is
    /// done is deleted by [`Engine::finish_if_done`] instead).
    fn record_progress(&mut self, seq: u64, out: &mut Vec<Effect>) {
        let stored_and_owed = self.msgs.get(&seq).is_some_and(|m| m.stored)
            && self.msgs.get(&seq).is_some_and(|m| {
                self.users.get(&m.data.user).is_some_and(|u| {
                    u.devices
                        .values()
                        .any(|d| d.queue.contains(&seq) || d.in_flight.values().any(|&s| s == seq))
                })
            });
        if stored_and_owed && self.refresh_progress(seq) {
            out.push(Effect::Progress { seq });
        }
    }

    fn delivered(&mut self, seq: u64, out: &mut Vec<Effect>) {
        let Some(m) = self.msgs.get_mut(&seq) else {
            return;
        };
        m.delivered = true;
        if let Some(txn) = m.sender.take() {
            out.push(Effect::Respond {
                txn,
                status: 200,
                reason: "OK".into(),
            });
        }
        if m.data.imdn.is_some() && !m.notified {
            m.notified = true;
            out.push(Effect::Notify {
                seq,
                stored: Box::new(m.data.clone()),
            });
        }
    }

    /// Forgets a delivered message once no device still has it queued or in flight; forgets
    /// an undelivered one when every device gave up on it and none remain.
    fn finish_if_done(&mut self, seq: u64, out: &mut Vec<Effect>) {
        let Some(m) = self.msgs.get(&seq) else {
            return;
        };
        let queued = self.users.get(&m.data.user).is_some_and(|u| {
            u.devices
                .values()
                .any(|d| d.queue.contains(&seq) || d.in_flight.values().any(|&s| s == seq))
        });
        if m.delivered && !queued && m.aor_attempt.is_none() {
            self.forget(seq, out);
        }
    }

    fn forget(&mut self, seq: u64, out: &mut Vec<Effect>) {
        let Some(m) = self.msgs.remove(&seq) else {
            return;
        };
        if m.stored {
            out.push(Effect::Unstore { seq });
        }
        if let Some(txn) = m.sender {
            // Unreachable in practice (every path answers first); never leave a sender hanging.
            out.push(Effect::Respond {
                txn,
                status: 500,
                reason: "Server Internal Error - Message Dropped".into(),
            });
        }
        if let Some(u) = self.users.get_mut(&m.data.user) {
            u.messages.remove(&seq);
            if m.stored {
                u.stored = u.stored.saturating_sub(1);
                u.stored_bytes = u.stored_bytes.saturating_sub(m.data.body.len());
            }
            for d in u.devices.values_mut() {
                d.queue.remove(&seq);
            }
            if u.messages.is_empty() && u.devices.is_empty() {
                self.users.remove(&m.data.user);
            }
        }
        self.wakes.remove(&(m.data.expires_ms, Wake::Expire(seq)));
        self.wakes.remove(&(
            m.data.received_ms + self.limits.answer_timeout_ms,
            Wake::Answer(seq),
        ));
    }
}

#[cfg(test)]
mod tests {
    //! Virtual time: every call gets `now` explicitly; nothing sleeps.

    use super::*;

    const BOB1: &str = "bob@example.test/dev1";
    const BOB2: &str = "bob@example.test/dev2";

    fn limits() -> Limits {
        Limits {
            max_body_bytes: 100,
            quota_messages: 3,
            quota_bytes: 1000,
            lifetime_ms: 60_000,
            answer_timeout_ms: 5_000,
            retry_base_ms: 1_000,
            retry_max_ms: 4_000,
            max_attempts: 3,
            device_window: 1,
        }
    }

    fn msg(txn: u64, body: &str) -> Incoming {
        Incoming {
            txn,
            user: "bob".into(),
            to: "sip:bob@example.test".into(),
            from: from_of("<sip:alice@example.test>;tag=a"),
            from_uri: "sip:alice@example.test".into(),
            content_type: "text/plain;charset=UTF-8".into(),
            date: None,
            body: body.as_bytes().to_vec(),
            imdn: None,
            recipient: Recipient::Unknown,
        }
    }

    /// `from` as [`SenderFrom::received`] reads it from a request.
    fn from_of(from: &str) -> SenderFrom {
        received(&format!("From: {from}\r\n")).unwrap()
    }

    /// What [`SenderFrom::received`] reads from a request with these From `fields` (each
    /// ending with CRLF).
    fn received(fields: &str) -> Option<SenderFrom> {
        let text = format!(
            "MESSAGE sip:bob@example.test SIP/2.0\r\n{fields}To: <sip:bob@example.test>\r\n\
             Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        let message = huddle_sdk::Message::parse(text.into_bytes().into()).unwrap();
        SenderFrom::received(&message)
    }

    /// A From is said to be tagged exactly when `huddle_sdk::tagged` would send it as it is,
    /// and its value is the first From field's, as received.
    #[test]
    fn a_received_from_is_tagged_exactly_when_tagged_leaves_it_alone() {
        for (fields, value) in [
            ("From: <sip:a@x>;tag=1\r\n", "<sip:a@x>;tag=1"),
            (
                "From: \"A\" <sip:a@x>;p=q;tag=1;r\r\n",
                "\"A\" <sip:a@x>;p=q;tag=1;r",
            ),
            ("f: <sip:a@x>;tag=1\r\n", "<sip:a@x>;tag=1"),
            ("FROM: <sip:a@x>;TAG=1\r\n", "<sip:a@x>;TAG=1"),
            ("From: sip:a@x;tag=1\r\n", "sip:a@x;tag=1"),
            ("From: <sip:a@x;tag=1>\r\n", "<sip:a@x;tag=1>"),
            ("From: <sip:a@x>;p=q\r\n", "<sip:a@x>;p=q"),
            ("From: sip:a@x\r\n", "sip:a@x"),
            (
                r#"From: "A \"x;tag=y\"" <sip:a@x>"#,
                r#""A \"x;tag=y\"" <sip:a@x>"#,
            ),
            ("From: \"a;tag=y\" <sip:a@x>\r\n", "\"a;tag=y\" <sip:a@x>"),
            ("From: <sip:a@x>;tag=\r\n", "<sip:a@x>;tag="),
            ("From: <sip:a@x>;tag\r\n", "<sip:a@x>;tag"),
            ("From: <sip:a@x\r\n", "<sip:a@x"),
            (
                "From: <sip:a@x>;tag=1\r\nFrom: <sip:b@x>\r\n",
                "<sip:a@x>;tag=1",
            ),
            ("From: <sip:a@x>\r\nFrom: <sip:b@x>;tag=1\r\n", "<sip:a@x>"),
        ] {
            let fields = if fields.ends_with("\r\n") {
                fields.to_owned()
            } else {
                format!("{fields}\r\n")
            };
            let from = received(&fields).unwrap();
            assert_eq!(from.as_str(), value, "{fields:?}");
            let as_is = matches!(huddle_sdk::tagged(value), Cow::Borrowed(_));
            assert_eq!(from.is_tagged(), as_is, "{fields:?}");
        }
        assert_eq!(received(""), None);
        assert!(!SenderFrom::unknown("<sip:a@x>;tag=1".into()).is_tagged());
    }

    /// A message to bob, about whom the host said `recipient`.
    fn msg_to(txn: u64, body: &str, recipient: Recipient) -> Incoming {
        Incoming {
            recipient,
            ..msg(txn, body)
        }
    }

    /// Leaves an offline message, whether the engine asks the host first or not; its seq.
    fn store_offline(e: &mut Engine, txn: u64, body: &str, now: u64) -> u64 {
        let out = e.on_message(msg(txn, body), now);
        let out = match sends(&out).first() {
            Some((attempt, _, Target::Aor)) => e.on_result(*attempt, 480, now),
            _ => out,
        };
        match &out[..] {
            [Effect::Persist { seq, then }] if *then == Some(txn) => *seq,
            other => panic!("not stored with a 202: {other:?}"),
        }
    }

    fn sends(effects: &[Effect]) -> Vec<(u64, u64, Target)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send {
                    attempt,
                    seq,
                    target,
                } => Some((*attempt, *seq, target.clone())),
                _ => None,
            })
            .collect()
    }

    fn responses(effects: &[Effect]) -> Vec<(u64, u16)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Respond { txn, status, .. } => Some((*txn, *status)),
                Effect::Persist { then: Some(t), .. } => Some((*t, 202)),
                _ => None,
            })
            .collect()
    }

    /// The user part of a binding key, as splitting at `/` then at `@` gives it.
    #[test]
    fn the_user_of_a_binding_key_is_what_the_splits_give() {
        fn split(key: &str) -> Option<&str> {
            key.split('/')
                .next()
                .and_then(|aor| aor.split('@').next())
                .filter(|u| !u.is_empty())
        }
        for key in [
            "bob@example.test/k1",
            "bob@example.test",
            "bob/k1@x",
            "bob",
            "@example.test/k",
            "/k",
            "",
            "b\u{e9}b@h/k",
            "a@b@c/d/e",
            "@",
            "/",
        ] {
            assert_eq!(user_of_binding(key), split(key), "{key:?}");
        }
    }

    /// What the glue read of the From is kept with the message; a message read back from the
    /// store has it read again at its delivery.
    #[test]
    fn whether_the_from_is_tagged_is_kept_until_a_restart() {
        let mut e = Engine::new(Limits {
            device_window: 16,
            ..limits()
        });
        e.device_up(BOB1, 0);
        let untagged = Incoming {
            from: from_of("<sip:alice@example.test>"),
            ..msg(2, "b")
        };
        let out = [e.on_message(msg(1, "a"), 0), e.on_message(untagged, 0)].concat();
        let s = sends(&out);
        assert_eq!(s.len(), 2, "{out:?}");
        assert!(e.from_tagged(s[0].1));
        assert!(!e.from_tagged(s[1].1));
        let stored = e.message(s[0].1).cloned().unwrap();
        let mut again = Engine::new(limits());
        again.restore(stored.clone(), 0);
        assert!(!again.from_tagged(stored.seq), "read back: not known");
        assert!(!e.from_tagged(u64::MAX));
    }

    #[test]
    fn online_message_goes_to_every_device_and_200_on_first_accept() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        e.device_up(BOB2, 0);
        let out = e.on_message(msg(1, "hi"), 10);
        let s = sends(&out);
        assert_eq!(s.len(), 2);
        assert!(responses(&out).is_empty(), "nobody accepted yet");
        let out = e.on_result(s[0].0, 200, 20);
        assert_eq!(responses(&out), vec![(1, 200)]);
        let out = e.on_result(s[1].0, 200, 30);
        assert!(responses(&out).is_empty());
        assert!(e.is_empty(), "delivered everywhere: forgotten");
        assert!(!out.iter().any(|e| matches!(e, Effect::Persist { .. })));
    }

    #[test]
    fn a_known_user_without_a_device_is_stored_at_once_without_asking_the_host() {
        let mut e = Engine::new(limits());
        for txn in 1..=2 {
            let out = e.on_message(msg_to(txn, "later", Recipient::Exists), 10);
            assert!(sends(&out).is_empty(), "no probe: {out:?}");
            match &out[..] {
                [Effect::Persist { then, .. }] => assert_eq!(*then, Some(txn)),
                other => panic!("not stored with a 202: {other:?}"),
            }
        }
        // A device that registers later gets them, in order.
        let r = sends(&e.device_up(BOB1, 20));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].2, Target::Device(BOB1.into()));
    }

    #[test]
    fn an_unknown_user_is_answered_404_at_once_and_nothing_is_kept() {
        let mut e = Engine::new(limits());
        let out = e.on_message(msg_to(1, "hi", Recipient::NoSuchUser), 10);
        assert_eq!(
            out,
            vec![Effect::Respond {
                txn: 1,
                status: 404,
                reason: "Not Found - No Such User".into()
            }]
        );
        assert!(e.is_empty());
        assert_eq!(e.next_wake(), None);
    }

    #[test]
    fn a_removed_user_gets_404_while_what_was_stored_before_stays() {
        let mut e = Engine::new(limits());
        let out = e.on_message(msg_to(1, "before", Recipient::Exists), 10);
        assert!(matches!(&out[..], [Effect::Persist { .. }]));
        // Held messages no longer vouch for the user: the host's answer does.
        let out = e.on_message(msg_to(2, "after", Recipient::NoSuchUser), 20);
        assert_eq!(responses(&out), vec![(2, 404)]);
        assert_eq!(e.len(), 1, "the stored one is kept until it expires");
        // Added again (or the host cannot tell): stored as before.
        let out = e.on_message(msg_to(3, "again", Recipient::Exists), 30);
        assert_eq!(responses(&out), vec![(3, 202)]);
    }

    #[test]
    fn a_user_with_a_device_is_not_refused_on_the_account_answer_alone() {
        // The glue asks only when no device is known; a device the user still has (an account
        // removed while registered) keeps receiving, as the host's routing would.
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        let out = e.on_message(msg_to(1, "hi", Recipient::NoSuchUser), 10);
        assert_eq!(sends(&out).len(), 1);
        assert!(responses(&out).is_empty());
    }

    #[test]
    fn failed_device_is_retried_with_backoff_from_the_store() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        e.device_up(BOB2, 0);
        let s = sends(&e.on_message(msg(1, "hi"), 0));
        let out = e.on_result(s[0].0, 200, 1);
        assert_eq!(responses(&out), vec![(1, 200)]);
        // Device 2 times out: the message becomes durable (no response: the sender has one).
        let out = e.on_result(s[1].0, 408, 2);
        assert!(out.contains(&Effect::Persist {
            seq: s[1].1,
            then: None
        }));
        assert_eq!(e.next_wake(), Some(1002));
        assert!(sends(&e.on_tick(1001)).is_empty(), "backing off");
        let r = sends(&e.on_tick(1002));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].2, Target::Device(BOB2.into()));
        // Fails again: the delay doubles.
        e.on_result(r[0].0, 500, 1003);
        assert!(sends(&e.on_tick(3002)).is_empty());
        let r = sends(&e.on_tick(3003));
        let out = e.on_result(r[0].0, 200, 3004);
        assert!(out.contains(&Effect::Unstore { seq: s[1].1 }));
        assert!(e.is_empty());
    }

    #[test]
    fn offline_user_is_asked_of_the_host_then_stored_before_202() {
        let mut e = Engine::new(limits());
        let out = e.on_message(msg(7, "later"), 0);
        let s = sends(&out);
        assert_eq!(s[0].2, Target::Aor);
        let out = e.on_result(s[0].0, 480, 1);
        assert_eq!(
            out,
            vec![Effect::Persist {
                seq: s[0].1,
                then: Some(7)
            }]
        );
        // The device registers: delivered, then deleted from the store.
        let r = sends(&e.device_up(BOB1, 5));
        assert_eq!(r[0].1, s[0].1);
        let out = e.on_result(r[0].0, 200, 6);
        assert!(out.contains(&Effect::Unstore { seq: s[0].1 }));
    }

    #[test]
    fn a_user_known_to_be_offline_is_not_asked_again_for_a_while() {
        let mut e = Engine::new(limits());
        let first = sends(&e.on_message(msg(1, "a"), 0));
        e.on_result(first[0].0, 480, 0);
        let out = e.on_message(msg(2, "b"), 1);
        assert!(sends(&out).is_empty(), "stored directly: {out:?}");
        assert_eq!(responses(&out), vec![(2, 202)]);
        // Once nothing is held and the memory has faded, the host is asked again.
        let mut e = Engine::new(limits());
        let first = sends(&e.on_message(msg(1, "a"), 0));
        e.on_result(first[0].0, 480, 0);
        e.on_tick(60_000);
        assert!(e.is_empty(), "expired");
        let again = sends(&e.on_message(msg(3, "c"), OFFLINE_TTL_MS + 1));
        assert_eq!(again[0].2, Target::Aor);
    }

    #[test]
    fn unknown_user_is_404_and_nothing_kept() {
        let mut e = Engine::new(limits());
        let s = sends(&e.on_message(msg(7, "x"), 0));
        let out = e.on_result(s[0].0, 404, 1);
        assert_eq!(responses(&out), vec![(7, 404)]);
        assert!(e.is_empty());
        assert_eq!(e.next_wake(), None);
    }

    #[test]
    fn stored_messages_reach_a_new_device_in_order_one_at_a_time() {
        let mut e = Engine::new(limits());
        let mut seqs = Vec::new();
        for (i, body) in ["one", "two", "three"].iter().enumerate() {
            seqs.push(store_offline(&mut e, i as u64, body, i as u64));
        }
        let mut got = Vec::new();
        let mut next = sends(&e.device_up(BOB1, 10));
        while let Some((attempt, seq, _)) = next.pop() {
            got.push(seq);
            next = sends(&e.on_result(attempt, 200, 11));
        }
        assert_eq!(got, seqs);
        assert!(e.is_empty());
    }

    #[test]
    fn a_window_sends_several_in_order_and_refills() {
        let mut e = Engine::new(Limits {
            device_window: 2,
            ..limits()
        });
        let mut seqs = Vec::new();
        for i in 0..3 {
            seqs.push(store_offline(&mut e, i, "m", i));
        }
        let first = sends(&e.device_up(BOB1, 10));
        assert_eq!(
            first.iter().map(|s| s.1).collect::<Vec<_>>(),
            seqs[..2].to_vec()
        );
        let next = sends(&e.on_result(first[0].0, 200, 11));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1, seqs[2]);
    }

    #[test]
    fn a_busy_device_keeps_the_sender_waiting_a_failing_one_does_not() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        let first = sends(&e.on_message(msg(1, "a"), 0));
        let out = e.on_message(msg(2, "b"), 1);
        assert!(out.is_empty(), "queued behind the first: {out:?}");
        // The device fails the first: it backs off, and the second is stored and answered.
        let out = e.on_result(first[0].0, 500, 2);
        assert_eq!(responses(&out), vec![(1, 202), (2, 202)]);
        let out = e.on_message(msg(3, "c"), 3);
        assert_eq!(responses(&out), vec![(3, 202)], "all devices failing");
    }

    #[test]
    fn messages_waiting_for_a_live_device_do_not_fill_the_mailbox() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        // Quota 3, window 1: five messages queue for the device, none is stored.
        for i in 0..5 {
            let out = e.on_message(msg(i, "m"), 0);
            assert!(responses(&out).is_empty(), "message {i}: {out:?}");
        }
        // The in-flight cap (4 x quota) still bounds memory.
        for i in 5..12 {
            e.on_message(msg(i, "m"), 0);
        }
        let out = e.on_message(msg(12, "m"), 0);
        assert_eq!(responses(&out), vec![(12, 486)]);
    }

    #[test]
    fn quota_and_size_limits_answer_with_reasons() {
        let mut e = Engine::new(limits());
        let out = e.on_message(msg(1, &"x".repeat(101)), 0);
        assert_eq!(responses(&out), vec![(1, 413)]);
        for i in 0..3 {
            store_offline(&mut e, i, "m", 0);
        }
        let out = e.on_message(msg(9, "m"), 0);
        match &out[..] {
            [Effect::Respond {
                status: 486,
                reason,
                ..
            }] => assert!(reason.contains("Full")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_device_that_never_answers_gets_the_sender_202_at_the_deadline() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        let s = sends(&e.on_message(msg(1, "accept me"), 0));
        assert!(e.on_tick(4_999).is_empty());
        let out = e.on_tick(5_000);
        assert_eq!(
            out,
            vec![Effect::Persist {
                seq: s[0].1,
                then: Some(1)
            }]
        );
        // SIPml5's user accepts late: delivered once, removed from the store.
        let out = e.on_result(s[0].0, 200, 9_000);
        assert_eq!(out, vec![Effect::Unstore { seq: s[0].1 }]);
    }

    #[test]
    fn messages_expire() {
        let mut e = Engine::new(limits());
        let s = sends(&e.on_message(msg(1, "old"), 0));
        e.on_result(s[0].0, 480, 0);
        let out = e.on_tick(60_000);
        assert!(out.contains(&Effect::Unstore { seq: s[0].1 }));
        assert!(out.contains(&Effect::Expired { seq: s[0].1 }));
        assert!(sends(&e.device_up(BOB1, 60_001)).is_empty());
    }

    #[test]
    fn restored_messages_are_delivered_once_and_expired_ones_dropped() {
        let mut e = Engine::new(limits());
        let mk = |seq, expires_ms| Stored {
            seq,
            user: "bob".into(),
            to: "sip:bob@example.test".into(),
            from: "<sip:alice@example.test>;tag=a".into(),
            from_uri: "sip:alice@example.test".into(),
            content_type: "text/plain".into(),
            date: "Thu, 01 Jan 1970 00:00:00 GMT".into(),
            body: Body::of(b"x"),
            received_ms: 0,
            expires_ms,
            imdn: None,
            progress: Progress::default(),
        };
        assert!(e.restore(mk(5, 100), 50).is_empty());
        assert_eq!(
            e.restore(mk(6, 10), 50),
            vec![Effect::Unstore { seq: 6 }, Effect::Expired { seq: 6 }]
        );
        let r = sends(&e.device_up(BOB1, 60));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, 5);
        // A second REGISTER refresh while in flight sends nothing twice.
        assert!(sends(&e.device_up(BOB1, 61)).is_empty());
        let out = e.on_result(r[0].0, 200, 62);
        assert_eq!(out, vec![Effect::Unstore { seq: 5 }]);
        // New sequence numbers never reuse a restored one.
        let s = sends(&e.on_message(msg(1, "n"), 0));
        assert!(s[0].1 > 5);
    }

    #[test]
    fn per_device_progress_survives_a_restart() {
        let mut e = Engine::new(limits());
        let seq = store_offline(&mut e, 1, "hi", 0);
        let first = sends(&e.device_up(BOB1, 10));
        let second = sends(&e.device_up(BOB2, 10));
        assert_eq!((first.len(), second.len()), (1, 1));
        // The first device accepts: the stored record is rewritten with who still gets it.
        let out = e.on_result(first[0].0, 200, 20);
        assert!(out.contains(&Effect::Progress { seq }), "{out:?}");
        let record = e
            .message(seq)
            .expect("still owed to the second device")
            .clone();
        assert_eq!(
            record.progress,
            Progress {
                delivered: true,
                owed: vec![BOB2.to_owned()]
            }
        );
        // What the store holds, read back after a restart.
        let record: Stored =
            crate::wire::decode(&crate::wire::encode(&record)).expect("the record reads back");
        let mut e = Engine::new(limits());
        assert!(e.restore(record, 30).is_empty());
        assert!(
            sends(&e.device_up(BOB1, 40)).is_empty(),
            "the first device had it already"
        );
        assert!(
            sends(&e.device_up("bob@example.test/dev3", 40)).is_empty(),
            "a device that registered after the delivery does not get it, as within a run"
        );
        let again = sends(&e.device_up(BOB2, 40));
        assert_eq!(again.len(), 1, "the second device still gets it");
        let out = e.on_result(again[0].0, 200, 50);
        assert!(out.contains(&Effect::Unstore { seq }), "{out:?}");
        assert!(
            !out.iter().any(|x| matches!(x, Effect::Notify { .. })),
            "no second notice: {out:?}"
        );
    }

    #[test]
    fn delivered_to_one_device_and_failed_on_another_is_stored_with_its_progress() {
        let mut e = Engine::new(Limits {
            device_window: 16,
            max_attempts: 8,
            ..limits()
        });
        e.device_up(BOB1, 0);
        e.device_up(BOB2, 0);
        let out = e.on_message(msg(1, "hi"), 0);
        let s = sends(&out);
        assert_eq!(s.len(), 2, "{out:?}");
        let (first, second) = if s[0].2 == Target::Device(BOB1.into()) {
            (s[0].0, s[1].0)
        } else {
            (s[1].0, s[0].0)
        };
        let out = e.on_result(first, 200, 10);
        assert_eq!(responses(&out), vec![(1, 200)]);
        let out = e.on_result(second, 500, 20);
        let seq = s[0].1;
        assert!(
            out.contains(&Effect::Persist { seq, then: None }),
            "{out:?}"
        );
        assert_eq!(
            e.message(seq).map(|m| m.progress.clone()),
            Some(Progress {
                delivered: true,
                owed: vec![BOB2.to_owned()]
            })
        );
    }

    #[test]
    fn an_undelivered_record_carries_no_progress() {
        let mut e = Engine::new(limits());
        let seq = store_offline(&mut e, 1, "hi", 0);
        let record = crate::wire::encode(e.message(seq).expect("stored"));
        assert!(!String::from_utf8_lossy(&record).contains("progress"));
    }

    /// The record written into a buffer of its hinted size is the record, and the hint holds
    /// it without growing for plain fields (a stored message, one with progress and a notice).
    #[test]
    fn a_record_is_written_whole_into_its_hinted_buffer() {
        let mut e = Engine::new(limits());
        let seq = store_offline(&mut e, 1, "hi \"there\"", 0);
        let mut m = e.message(seq).expect("stored").clone();
        for _ in 0..2 {
            let record = m.record();
            assert_eq!(record, crate::wire::encode(&m));
            assert!(record.len() <= m.record_size_hint(), "{}", record.len());
            m.progress = Progress {
                delivered: true,
                owed: vec![BOB1.to_owned(), BOB2.to_owned()],
            };
            m.imdn = Some(ImdnAsk {
                message_id: "id-1".into(),
                cpim: true,
            });
            m.body = Body::of(&[0xff; 40]);
        }
        // Fields with characters JSON escapes, an empty progress list, a notice not asked in
        // CPIM, a body of text.
        m.user = "b\"o\\b\u{1}".into();
        m.from = "\"Al\tice\" <sip:a@h>;tag=x\r\n".into();
        m.date = String::new();
        m.progress.owed.clear();
        m.imdn = Some(ImdnAsk {
            message_id: "\u{7f}é😀".into(),
            cpim: false,
        });
        m.body = Body::of("line\nline\u{0}".as_bytes());
        assert_eq!(m.record(), crate::wire::encode(&m));
        m.progress.delivered = false;
        assert_eq!(m.record(), crate::wire::encode(&m));
    }

    #[test]
    fn imdn_is_sent_once_on_first_delivery() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        e.device_up(BOB2, 0);
        let mut m = msg(1, "notify me");
        m.imdn = Some(ImdnAsk {
            message_id: "id1".into(),
            cpim: false,
        });
        let s = sends(&e.on_message(m, 0));
        let a = e.on_result(s[0].0, 200, 1);
        let b = e.on_result(s[1].0, 200, 2);
        let notices = a
            .iter()
            .chain(&b)
            .filter(|e| matches!(e, Effect::Notify { .. }))
            .count();
        assert_eq!(notices, 1);
    }

    #[test]
    fn a_device_seen_while_the_host_is_asked_gets_the_message_once() {
        let mut e = Engine::new(limits());
        let s = sends(&e.on_message(msg(1, "race"), 0));
        assert_eq!(s[0].2, Target::Aor);
        // The binding shows up in the store while the host is already delivering.
        assert!(sends(&e.device_up(BOB1, 1)).is_empty());
        let out = e.on_result(s[0].0, 200, 2);
        assert_eq!(responses(&out), vec![(1, 200)]);
        assert!(e.is_empty());
        // Had the host found nobody, the devices seen meanwhile get it.
        let mut e = Engine::new(limits());
        let s = sends(&e.on_message(msg(2, "race 2"), 3));
        let _ = e.device_up(BOB1, 4);
        let _ = e.device_up(BOB2, 4);
        let out = e.on_result(s[0].0, 480, 5);
        let r = sends(&out);
        assert_eq!(r.len(), 2, "both known devices: {out:?}");
        assert!(responses(&out).is_empty(), "the sender waits for them");
    }

    #[test]
    fn a_device_going_away_leaves_the_message_for_later() {
        let mut e = Engine::new(limits());
        e.device_up(BOB1, 0);
        let s = sends(&e.on_message(msg(1, "hi"), 0));
        e.device_down(BOB1);
        // The in-flight attempt fails afterwards (the host answers 480: binding gone).
        let out = e.on_result(s[0].0, 480, 2);
        assert_eq!(responses(&out), vec![(1, 202)]);
        let r = sends(&e.device_up(BOB2, 3));
        assert_eq!(r[0].1, s[0].1);
    }
}
