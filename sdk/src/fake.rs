//! `FakeHost`: an in-process host for unit-testing a plugin with no server.
//!
//! It implements [`HostServices`] in memory and starts the plugin through the same path the
//! server uses: [`PluginInstance::start`] with the plugin's validated descriptor, so every call
//! crosses the real C ABI and the real trampolines (panic catching included). What it
//! emulates of the real host:
//!
//! * **Transactions**: [`FakePlugin::request`] delivers a request (only if one of the plugin's
//!   claims matches it, as the router would) and records every response the plugin sends.
//!   Responses must parse, match the request's Call-ID and CSeq, and come before the final one.
//!   When the plugin's callback fails without a final response, the fake answers 500 (503 with
//!   `Retry-After` for [`Error::Busy`]) and marks it [`SentResponse::synthetic`], as the host
//!   does.
//! * **Requests the plugin sends** are recorded ([`FakeHost::sent_requests`]); they must parse
//!   and carry no Via. Answer them with [`FakePlugin::answer`] or [`FakePlugin::response`].
//!   A 2xx to one carrying [`HUDDLE_ANSWER_HEADER`] (ABI 1.6) first answers the transaction it
//!   names `200 OK` when that is open and not an INVITE, as the host does (marked
//!   [`SentResponse::synthetic`]).
//! * **Store**: one namespace per name (`""` is the plugin's own), `location` readable with
//!   [`Capabilities::LOCATION`], other shared namespaces readable once
//!   [`FakeHost::allow_namespace`] names them; writes only to the own namespace. Watches are
//!   delivered after the call that caused them returns, never from inside a host call.
//! * **Timers** run on a virtual clock: [`FakePlugin::advance`] fires what is due, in order.
//! * **Logs** are captured ([`FakeHost::logs`]).
//! * **Retargets** (ABI 1.4): [`crate::Host::retarget`] on an open out-of-dialog transaction
//!   takes it from the plugin (no response may follow) and is recorded
//!   ([`FakeHost::retargets`]); the fake routes nothing further, so a test checks where the
//!   request was sent.
//! * **Users** (ABI 1.5): [`crate::Host::user_exists`] answers from the accounts added with
//!   [`FakeHost::add_user`] (none at first) and taken away with [`FakeHost::remove_user`];
//!   [`FakeHost::set_user_lookup`]`(false)` makes it [`Error::NotSupported`], as a host before
//!   1.5 (and, through the table, a host without [`Capabilities::LOCATION`]).
//! * **Events** (with [`Capabilities::EVENTS`]) are recorded ([`FakeHost::events`]); with
//!   [`FakeHost::set_events_taken`] only some kinds are taken (ABI 1.8,
//!   [`crate::Host::wants_event`]) and the others dropped, as by a host whose webhooks filter
//!   them out.
//! * **Media** (only with [`Capabilities::MEDIA`]): `media_answer` returns a canned SDP answer
//!   ([`FAKE_SDP_ANSWER`]: audio mid `0`, video mid `1`), or refuses an offer that is not SDP
//!   (400) or is plain RTP/AVP (488), as the host does; every media call is recorded
//!   ([`FakeHost::media_calls`]; a `send_rtp_batch` as its packets, counted by
//!   [`FakeHost::rtp_batches`]). An RTP sink (ABI 1.7, [`crate::Host::set_rtp_sink`]) is
//!   kept, and [`FakePlugin::incoming_rtp`] then calls it on the calling thread instead of
//!   the instance's `incoming_rtp`, as the server calls it on its media thread;
//!   [`FakeHost::set_rtp_sinks`]`(false)` refuses sinks, as a host before 1.7.
//!
//! ```
//! # use huddle_sdk::{Claims, Claim, Config, Host, Plugin, Request, Result, Capabilities};
//! # use huddle_sdk::fake::FakeHost;
//! struct Ping;
//! impl Plugin for Ping {
//!     fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
//!         claims.add(Claim::method("OPTIONS").with_user("ping"));
//!         Ok(Ping)
//!     }
//!     fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
//!         host.reply(&req, 200, "OK")
//!     }
//! }
//! let entry = huddle_sdk::plugin_entry!(Ping, "ping", "1.0.0", Capabilities::NONE);
//! let host = FakeHost::new();
//! let mut plugin = host.start(&entry, "").unwrap();
//! let txn = plugin.request(huddle_sdk::fake::sample_request("OPTIONS", "sip:ping@example.test", "")).unwrap();
//! assert_eq!(host.final_response(txn).unwrap().status(), 200);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use huddle_sip::build::ResponseBuilder;
use huddle_sip::{HeaderName, Message, Method};

use crate::abi::HUDDLE_ANSWER_HEADER;
use crate::claims::{Claim, RouteKey};
use crate::error::{Error, Result};
use crate::hosting::{
    HostServices, PluginEntry, PluginInfo, PluginInstance, RegisteredRtpSink, StartError,
};
use crate::types::{
    BatchOp, Capabilities, HangupReason, Level, MediaSessionId, OutgoingRtp, RegistrationEvent,
    RequestId, RequestInfo, ScanPage, StoreChange, TimerId, TransactionId, Transport, WatchId,
};

/// The largest scan page the fake returns (the server's limit too).
pub const MAX_SCAN_PAGE: usize = 1024;
/// The fake's default `store_batch` limit on operations (the server's default too).
pub const DEFAULT_BATCH_OPS: usize = 1024;
/// The fake's default `store_batch` limit on bytes of keys and values (the server's default).
pub const DEFAULT_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How many watch events one call may cause before the fake stops delivering (a plugin that
/// writes on every change of its own namespace would otherwise loop forever).
pub const MAX_CHAIN: usize = 10_000;

/// A response the plugin sent (or the fake sent for it).
#[derive(Debug, Clone)]
pub struct SentResponse {
    /// The transaction it answers.
    pub txn: TransactionId,
    /// The response.
    pub message: Message,
    /// True when the fake host generated it: the plugin's callback failed, or (ABI 1.6) a
    /// request naming the transaction in [`HUDDLE_ANSWER_HEADER`] succeeded.
    pub synthetic: bool,
}

impl SentResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.message.status().unwrap_or(0)
    }
}

/// A request the plugin sent through `send_request`.
#[derive(Debug, Clone)]
pub struct SentRequest {
    /// The id the plugin got back.
    pub id: RequestId,
    /// The request, as the plugin built it (without the Via a real host adds).
    pub message: Message,
}

/// A captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The level.
    pub level: Level,
    /// The text.
    pub message: String,
}

/// A media call the plugin made (only with [`Capabilities::MEDIA`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaCall {
    /// `media_answer`.
    Answer {
        /// The session.
        session: MediaSessionId,
        /// The offer.
        offer: Vec<u8>,
    },
    /// `media_send_rtp`.
    Rtp {
        /// The session.
        session: MediaSessionId,
        /// The stream.
        mid: String,
        /// The packet.
        packet: Vec<u8>,
    },
    /// `media_send_rtcp`.
    Rtcp {
        /// The session.
        session: MediaSessionId,
        /// The packet.
        packet: Vec<u8>,
    },
    /// `media_request_keyframe`.
    Keyframe {
        /// The session.
        session: MediaSessionId,
        /// The stream.
        mid: String,
    },
    /// `media_forward`.
    Forward {
        /// Source session.
        src: MediaSessionId,
        /// Source stream.
        src_mid: String,
        /// Destination session.
        dst: MediaSessionId,
        /// Destination stream.
        dst_mid: String,
    },
    /// `media_close`.
    Close {
        /// The session.
        session: MediaSessionId,
    },
    /// (ABI 1.3) `media_tap`.
    Tap {
        /// The tapped session (any plugin's).
        session: MediaSessionId,
        /// The stream.
        mid: String,
        /// Tap (true) or untap.
        on: bool,
    },
}

/// The SDP answer the fake's `media_answer` returns: an audio stream (mid `0`) and a video
/// stream (mid `1`), as a host answering a browser's audio+video offer would.
pub const FAKE_SDP_ANSWER: &[u8] = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fake\r\nt=0 0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n";

#[derive(Debug)]
struct Txn {
    request: Message,
    final_sent: bool,
}

#[derive(Debug)]
struct State {
    caps: Capabilities,
    namespaces: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    readable: BTreeSet<String>,
    txns: BTreeMap<TransactionId, Txn>,
    next_id: u64,
    responses: Vec<SentResponse>,
    requests: Vec<SentRequest>,
    timers: BTreeMap<TimerId, (Duration, u64)>,
    now: Duration,
    watches: BTreeMap<WatchId, (String, Vec<u8>)>,
    pending: VecDeque<StoreChange>,
    logs: Vec<LogLine>,
    media: Vec<MediaCall>,
    refused_claims: Vec<Claim>,
    events: Vec<(String, String)>,
    retargets: Vec<(TransactionId, String)>,
    /// `store_batch` limits (operations, bytes of keys and values); `None`: batches refused
    /// as by a host before ABI 1.3.
    batch_limit: Option<(usize, usize)>,
    /// Batches committed.
    batches: usize,
    /// Accounts `user_exists` knows.
    users: BTreeSet<String>,
    /// Whether `user_exists` answers (false: not supported, as by a host before ABI 1.5).
    user_lookup: bool,
    /// (ABI 1.6) Requests sent with [`HUDDLE_ANSWER_HEADER`], by id: the transaction named.
    answers: BTreeMap<RequestId, TransactionId>,
    /// (ABI 1.7) Whether RTP sinks are accepted (false: not supported, as by a host before).
    rtp_sinks: bool,
    /// (ABI 1.7) `send_rtp_batch` calls.
    rtp_batches: usize,
    /// (ABI 1.8) The event kinds a webhook takes; `None`: every kind.
    events_taken: Option<BTreeSet<String>>,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn readable(&self, ns: &str) -> Result<()> {
        if ns.is_empty()
            || (ns == "location" && self.caps.contains(Capabilities::LOCATION))
            || self.readable.contains(ns)
        {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    /// Writes `key` in `ns` (None: delete) and queues the changes watches see. Returns whether
    /// the key was present before.
    fn write(&mut self, ns: &str, key: &[u8], value: Option<&[u8]>) -> bool {
        let map = self.namespaces.entry(ns.to_owned()).or_default();
        let existed = match value {
            Some(v) => map.insert(key.to_vec(), v.to_vec()).is_some(),
            None => map.remove(key).is_some(),
        };
        if value.is_none() && !existed {
            return false;
        }
        for (&watch, (wns, prefix)) in &self.watches {
            if wns == ns && key.starts_with(prefix) {
                self.pending.push_back(match value {
                    Some(v) => StoreChange::Put {
                        watch,
                        key: key.to_vec(),
                        value: v.to_vec(),
                    },
                    None => StoreChange::Delete {
                        watch,
                        key: key.to_vec(),
                    },
                });
            }
        }
        existed
    }
}

/// The fake host. Clones share state; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct FakeHost {
    state: Arc<Mutex<State>>,
    /// (ABI 1.7) The plugin's RTP sink; apart from `state` so that a sink calling the host
    /// does not wait for itself.
    rtp_sink: Arc<RwLock<Option<RegisteredRtpSink>>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost::new()
    }
}

impl FakeHost {
    /// A host that provides everything except media (like the server today).
    pub fn new() -> FakeHost {
        FakeHost::with_capabilities(Capabilities::ALL.without(Capabilities::MEDIA))
    }

    /// A host that provides exactly `caps`.
    pub fn with_capabilities(caps: Capabilities) -> FakeHost {
        FakeHost {
            state: Arc::new(Mutex::new(State {
                caps,
                namespaces: BTreeMap::new(),
                readable: BTreeSet::new(),
                txns: BTreeMap::new(),
                next_id: 0,
                responses: Vec::new(),
                requests: Vec::new(),
                timers: BTreeMap::new(),
                now: Duration::ZERO,
                watches: BTreeMap::new(),
                pending: VecDeque::new(),
                logs: Vec::new(),
                media: Vec::new(),
                refused_claims: Vec::new(),
                events: Vec::new(),
                retargets: Vec::new(),
                batch_limit: Some((DEFAULT_BATCH_OPS, DEFAULT_BATCH_BYTES)),
                batches: 0,
                users: BTreeSet::new(),
                user_lookup: true,
                answers: BTreeMap::new(),
                rtp_sinks: true,
                rtp_batches: 0,
                events_taken: None,
            })),
            rtp_sink: Arc::new(RwLock::new(None)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets the plugin read (and watch) the shared namespace `ns` (`plugin/presence`).
    pub fn allow_namespace(&self, ns: &str) -> &Self {
        self.lock().readable.insert(ns.to_owned());
        self
    }

    /// Sets the `store_batch` limits (`None`: answer [`Error::NotSupported`], as a host before
    /// ABI 1.3). The default is [`DEFAULT_BATCH_OPS`] operations and [`DEFAULT_BATCH_BYTES`].
    pub fn set_batch_limit(&self, limit: Option<(usize, usize)>) -> &Self {
        self.lock().batch_limit = limit;
        self
    }

    /// Adds an account named `name`: [`crate::Host::user_exists`] says yes from now on.
    pub fn add_user(&self, name: &str) -> &Self {
        self.lock().users.insert(name.to_owned());
        self
    }

    /// Removes the account named `name` (as `huddle user remove` does).
    pub fn remove_user(&self, name: &str) -> &Self {
        self.lock().users.remove(name);
        self
    }

    /// `false`: [`crate::Host::user_exists`] answers [`Error::NotSupported`], as a host before
    /// ABI 1.5; `true` (the default): it answers from the accounts added.
    pub fn set_user_lookup(&self, supported: bool) -> &Self {
        self.lock().user_lookup = supported;
        self
    }

    /// `false`: [`crate::Host::set_rtp_sink`] answers [`Error::NotSupported`], as a host
    /// before ABI 1.7; `true` (the default): the sink is kept and called.
    pub fn set_rtp_sinks(&self, supported: bool) -> &Self {
        self.lock().rtp_sinks = supported;
        self
    }

    /// (ABI 1.7) Whether the plugin has an RTP sink registered.
    pub fn has_rtp_sink(&self) -> bool {
        self.rtp_sink
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// (ABI 1.7) How many `send_rtp_batch` calls reached the host (their packets are in
    /// [`FakeHost::media_calls`]).
    pub fn rtp_batches(&self) -> usize {
        self.lock().rtp_batches
    }

    /// How many `store_batch` calls committed (each one commit).
    pub fn batch_commits(&self) -> usize {
        self.lock().batches
    }

    /// Makes the host refuse this claim during `init` (as a host's configuration might).
    pub fn refuse_claim(&self, claim: Claim) -> &Self {
        self.lock().refused_claims.push(claim);
        self
    }

    /// Starts `entry` on this host with `config` (TOML text), through the C ABI.
    pub fn start(&self, entry: &PluginEntry, config: &str) -> Result<FakePlugin, StartError> {
        let instance = PluginInstance::start(entry, Arc::new(self.clone()), config)?;
        let mut plugin = FakePlugin {
            host: self.clone(),
            instance: Some(instance),
        };
        let _ = plugin.deliver_changes();
        Ok(plugin)
    }

    /// Every response sent, in order.
    pub fn responses(&self) -> Vec<SentResponse> {
        self.lock().responses.clone()
    }

    /// The responses sent on one transaction, in order.
    pub fn responses_to(&self, txn: TransactionId) -> Vec<SentResponse> {
        self.lock()
            .responses
            .iter()
            .filter(|r| r.txn == txn)
            .cloned()
            .collect()
    }

    /// The final response sent on one transaction, if any.
    pub fn final_response(&self, txn: TransactionId) -> Option<SentResponse> {
        self.responses_to(txn)
            .into_iter()
            .find(|r| r.status() >= 200)
    }

    /// Every request the plugin sent, in order.
    pub fn sent_requests(&self) -> Vec<SentRequest> {
        self.lock().requests.clone()
    }

    /// Removes and returns the requests the plugin sent so far.
    pub fn take_sent_requests(&self) -> Vec<SentRequest> {
        std::mem::take(&mut self.lock().requests)
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.lock().logs.clone()
    }

    /// Whether some log line at `level` contains `needle`.
    pub fn logged(&self, level: Level, needle: &str) -> bool {
        self.lock()
            .logs
            .iter()
            .any(|l| l.level == level && l.message.contains(needle))
    }

    /// Every media call, in order.
    pub fn media_calls(&self) -> Vec<MediaCall> {
        self.lock().media.clone()
    }

    /// (ABI 1.8) The event kinds the host's webhooks take: [`crate::Host::wants_event`] says
    /// yes to these only, and events of other kinds are accepted and dropped (not in
    /// [`FakeHost::events`]), as a host whose webhooks filter them out. `None` (the default):
    /// every kind is taken.
    pub fn set_events_taken(&self, kinds: Option<&[&str]>) -> &Self {
        self.lock().events_taken = kinds.map(|k| k.iter().map(|kind| (*kind).to_owned()).collect());
        self
    }

    /// The requests the plugin retargeted (ABI 1.4), in order: the transaction and the URI.
    pub fn retargets(&self) -> Vec<(TransactionId, String)> {
        self.lock().retargets.clone()
    }

    /// Events the plugin raised with [`crate::Host::emit_event`] (needs
    /// [`Capabilities::EVENTS`]), in order: `(kind, details)`.
    pub fn events(&self) -> Vec<(String, String)> {
        self.lock().events.clone()
    }

    /// Reads `key` in `ns` (`""`: the plugin's own namespace), as the host.
    pub fn get(&self, ns: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().namespaces.get(ns)?.get(key).cloned()
    }

    /// Writes `key` in `ns` as the host (the registrar writing `location`, another plugin
    /// writing its namespace). Watches see it at the plugin's next call or
    /// [`FakePlugin::deliver_changes`].
    pub fn put(&self, ns: &str, key: &[u8], value: &[u8]) {
        self.lock().write(ns, key, Some(value));
    }

    /// Deletes `key` in `ns` as the host.
    pub fn delete(&self, ns: &str, key: &[u8]) {
        self.lock().write(ns, key, None);
    }

    /// Every key and value in `ns`, in key order.
    pub fn entries(&self, ns: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.lock()
            .namespaces
            .get(ns)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Armed timers: id, due time on the virtual clock, token.
    pub fn timers(&self) -> Vec<(TimerId, Duration, u64)> {
        self.lock()
            .timers
            .iter()
            .map(|(&id, &(due, token))| (id, due, token))
            .collect()
    }

    /// The virtual clock (starts at zero).
    pub fn now(&self) -> Duration {
        self.lock().now
    }

    /// Queues a lagged marker for a watch, as a host whose watcher fell behind does.
    pub fn lag_watch(&self, watch: WatchId) {
        self.lock().pending.push_back(StoreChange::Lagged { watch });
    }

    /// The live watches: id, namespace, prefix.
    pub fn watches(&self) -> Vec<(WatchId, String, Vec<u8>)> {
        self.lock()
            .watches
            .iter()
            .map(|(&id, (ns, p))| (id, ns.clone(), p.clone()))
            .collect()
    }
}

impl HostServices for FakeHost {
    fn capabilities(&self) -> Capabilities {
        self.lock().caps
    }

    fn log(&self, level: Level, message: &str) {
        self.lock().logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    }

    fn check_claim(&self, claim: &Claim) -> Result<()> {
        if self.lock().refused_claims.contains(claim) {
            Err(Error::PermissionDenied)
        } else {
            Ok(())
        }
    }

    fn respond(&self, txn: TransactionId, response: &[u8]) -> Result<()> {
        let message =
            Message::parse(Bytes::copy_from_slice(response)).map_err(|_| Error::InvalidArgument)?;
        let status = message.status().ok_or(Error::InvalidArgument)?;
        let mut st = self.lock();
        let t = st.txns.get_mut(&txn).ok_or(Error::UnknownTransaction)?;
        if t.final_sent {
            return Err(Error::UnknownTransaction);
        }
        let same_call = message.call_id() == t.request.call_id()
            && message.cseq().ok().map(|c| c.seq) == t.request.cseq().ok().map(|c| c.seq);
        if !same_call {
            drop(st);
            self.log(
                Level::Error,
                "fake host: response Call-ID/CSeq do not match the request",
            );
            return Err(Error::InvalidArgument);
        }
        t.final_sent = status >= 200;
        st.responses.push(SentResponse {
            txn,
            message,
            synthetic: false,
        });
        Ok(())
    }

    fn respond_status(
        &self,
        txn: TransactionId,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let mut st = self.lock();
        let t = st.txns.get_mut(&txn).ok_or(Error::UnknownTransaction)?;
        if t.final_sent {
            return Err(Error::UnknownTransaction);
        }
        // Written from the request held, as a host does; the SDK checked the parts.
        let bytes = ResponseBuilder::new(&t.request, status, reason)
            .to_tag(&crate::message::random_token(8))
            .headers(headers)
            .build();
        let message = Message::parse(bytes).map_err(|_| Error::InvalidArgument)?;
        t.final_sent = true;
        st.responses.push(SentResponse {
            txn,
            message,
            synthetic: false,
        });
        Ok(())
    }

    fn retarget(&self, txn: TransactionId, uri: &str) -> Result<()> {
        huddle_sip::uri::SipUri::parse(uri).map_err(|_| Error::InvalidArgument)?;
        let mut st = self.lock();
        let t = st.txns.get_mut(&txn).ok_or(Error::UnknownTransaction)?;
        if t.final_sent {
            return Err(Error::UnknownTransaction);
        }
        if t.request.to_header().ok().and_then(|to| to.tag()).is_some() {
            return Err(Error::BadState);
        }
        // The transaction is the new owner's now: nothing more from this plugin.
        t.final_sent = true;
        st.retargets.push((txn, uri.to_owned()));
        Ok(())
    }

    fn user_exists(&self, user: &str) -> Result<bool> {
        let st = self.lock();
        if !st.user_lookup {
            return Err(Error::NotSupported);
        }
        Ok(st.users.contains(user))
    }

    fn send_request(&self, request: &[u8]) -> Result<RequestId> {
        let message =
            Message::parse(Bytes::copy_from_slice(request)).map_err(|_| Error::InvalidArgument)?;
        if !message.is_request() || message.header(&HeaderName::Via).is_some() {
            self.log(
                Level::Error,
                "fake host: send_request needs a request without Via (the host adds it)",
            );
            return Err(Error::InvalidArgument);
        }
        let answer = message
            .header(&HeaderName::parse(HUDDLE_ANSWER_HEADER))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut st = self.lock();
        let id = RequestId(st.id());
        if let Some(txn) = answer {
            st.answers.insert(id, TransactionId(txn));
        }
        st.requests.push(SentRequest { id, message });
        Ok(id)
    }

    fn store_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let st = self.lock();
        st.readable(ns)?;
        Ok(st.namespaces.get(ns).and_then(|m| m.get(key)).cloned())
    }

    fn store_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.lock().write("", key, Some(value));
        Ok(())
    }

    fn store_delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.lock().write("", key, None))
    }

    fn store_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let mut st = self.lock();
        let (max_ops, max_bytes) = st.batch_limit.ok_or(Error::NotSupported)?;
        let bytes: usize = ops.iter().map(BatchOp::byte_len).sum();
        if ops.len() > max_ops || bytes > max_bytes {
            return Err(Error::TooLarge);
        }
        for op in ops {
            match op {
                BatchOp::Put { key, value } => st.write("", key, Some(value)),
                BatchOp::Delete { key } => st.write("", key, None),
            };
        }
        st.batches += 1;
        Ok(())
    }

    fn store_compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), Option<Vec<u8>>>> {
        let mut st = self.lock();
        let current = st.namespaces.get("").and_then(|m| m.get(key)).cloned();
        if current.as_deref() != expected {
            return Ok(Err(current));
        }
        st.write("", key, new);
        Ok(Ok(()))
    }

    fn store_scan(
        &self,
        ns: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        let st = self.lock();
        st.readable(ns)?;
        let limit = if limit == 0 {
            MAX_SCAN_PAGE
        } else {
            limit.min(MAX_SCAN_PAGE)
        };
        let Some(map) = st.namespaces.get(ns) else {
            return Ok(ScanPage::default());
        };
        let mut matching = map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|a| k.as_slice() > a));
        let entries: Vec<_> = matching
            .by_ref()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let more = matching.next().is_some();
        Ok(ScanPage { entries, more })
    }

    fn store_watch(&self, ns: &str, prefix: &[u8]) -> Result<WatchId> {
        let mut st = self.lock();
        st.readable(ns)?;
        let id = WatchId(st.id());
        st.watches.insert(id, (ns.to_owned(), prefix.to_vec()));
        Ok(id)
    }

    fn store_unwatch(&self, watch: WatchId) -> Result<()> {
        self.lock()
            .watches
            .remove(&watch)
            .map(drop)
            .ok_or(Error::NotFound)
    }

    fn set_timer(&self, delay: Duration, token: u64) -> Result<TimerId> {
        let mut st = self.lock();
        let id = TimerId(st.id());
        let due = st.now + delay;
        st.timers.insert(id, (due, token));
        Ok(id)
    }

    fn cancel_timer(&self, timer: TimerId) -> Result<()> {
        self.lock()
            .timers
            .remove(&timer)
            .map(drop)
            .ok_or(Error::NotFound)
    }

    fn media_answer(
        &self,
        session: Option<MediaSessionId>,
        offer: &[u8],
    ) -> Result<(MediaSessionId, Vec<u8>)> {
        // Refusals shaped like the real host's: not SDP → 400, plain RTP → 488 with advice.
        if !offer.starts_with(b"v=") {
            return Err(Error::Sdp(Box::new(crate::SdpRefusal {
                status: 400,
                reason: "Bad Request - Malformed SDP".into(),
                warning: None,
            })));
        }
        if offer.windows(8).any(|w| w == b"RTP/AVP ") {
            return Err(Error::Sdp(Box::new(crate::SdpRefusal {
                status: 488,
                reason: "Not Acceptable Here - WebRTC Media Only".into(),
                warning: Some("plain RTP (RTP/AVP) is not supported".into()),
            })));
        }
        let mut st = self.lock();
        let session = match session {
            Some(s) => s,
            None => MediaSessionId(st.id()),
        };
        st.media.push(MediaCall::Answer {
            session,
            offer: offer.to_vec(),
        });
        Ok((session, FAKE_SDP_ANSWER.to_vec()))
    }

    fn media_send_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]) -> Result<()> {
        self.lock().media.push(MediaCall::Rtp {
            session,
            mid: mid.to_owned(),
            packet: packet.to_vec(),
        });
        Ok(())
    }

    fn media_send_rtcp(&self, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        self.lock().media.push(MediaCall::Rtcp {
            session,
            packet: packet.to_vec(),
        });
        Ok(())
    }

    fn media_request_keyframe(&self, session: MediaSessionId, mid: &str) -> Result<()> {
        self.lock().media.push(MediaCall::Keyframe {
            session,
            mid: mid.to_owned(),
        });
        Ok(())
    }

    fn media_forward(
        &self,
        src: MediaSessionId,
        src_mid: &str,
        dst: MediaSessionId,
        dst_mid: &str,
    ) -> Result<()> {
        self.lock().media.push(MediaCall::Forward {
            src,
            src_mid: src_mid.to_owned(),
            dst,
            dst_mid: dst_mid.to_owned(),
        });
        Ok(())
    }

    fn media_tap(&self, session: MediaSessionId, mid: &str, on: bool) -> Result<()> {
        self.lock().media.push(MediaCall::Tap {
            session,
            mid: mid.to_owned(),
            on,
        });
        Ok(())
    }

    fn media_close(&self, session: MediaSessionId) -> Result<()> {
        self.lock().media.push(MediaCall::Close { session });
        Ok(())
    }

    fn media_rtp_sink(&self, sink: Option<RegisteredRtpSink>) -> Result<()> {
        if !self.lock().rtp_sinks {
            return Err(Error::NotSupported);
        }
        // The write lock waits for a delivery in progress; the old sink is dropped under it.
        *self
            .rtp_sink
            .write()
            .unwrap_or_else(PoisonError::into_inner) = sink;
        Ok(())
    }

    fn media_send_rtp_batch(&self, packets: &[OutgoingRtp<'_>]) -> Result<()> {
        let mut st = self.lock();
        st.rtp_batches += 1;
        for p in packets {
            st.media.push(MediaCall::Rtp {
                session: p.session,
                mid: p.mid.to_owned(),
                packet: p.packet.to_vec(),
            });
        }
        Ok(())
    }

    fn emit_event(&self, kind: &str, details: &str) -> Result<()> {
        let mut state = self.lock();
        if state.events_taken.as_ref().is_none_or(|k| k.contains(kind)) {
            state.events.push((kind.to_owned(), details.to_owned()));
        }
        Ok(())
    }

    fn event_wanted(&self, kind: &str) -> Result<bool> {
        Ok(self
            .lock()
            .events_taken
            .as_ref()
            .is_none_or(|k| k.contains(kind)))
    }
}

/// A plugin instance running on a [`FakeHost`]. Dropping it destroys the instance.
#[derive(Debug)]
pub struct FakePlugin {
    host: FakeHost,
    instance: Option<PluginInstance>,
}

impl FakePlugin {
    /// The host it runs on.
    pub fn host(&self) -> &FakeHost {
        &self.host
    }

    fn instance(&mut self) -> &mut PluginInstance {
        // Only `stop` takes the instance, and it consumes `self`.
        self.instance
            .as_mut()
            .expect("the instance lives until stop")
    }

    /// Name, version, ABI and capabilities from the descriptor.
    pub fn info(&self) -> Option<&PluginInfo> {
        self.instance.as_ref().map(PluginInstance::info)
    }

    /// What the plugin claimed at `init`.
    pub fn claims(&self) -> &[Claim] {
        self.instance.as_ref().map_or(&[], |i| i.claims())
    }

    /// Whether one of the plugin's claims matches `request`, i.e. whether the host would route
    /// it here.
    pub fn claims_request(&self, request: &[u8]) -> bool {
        match Message::parse(Bytes::copy_from_slice(request)) {
            Ok(m) => self.claims().iter().any(|c| c.matches_request(&m)),
            Err(_) => false,
        }
    }

    /// Sends an admin request (ABI 1.2) and returns the plugin's JSON answer as text.
    pub fn admin_request(&mut self, request: &str) -> Result<String> {
        let answer = self.instance().admin_request(request)?;
        String::from_utf8(answer).map_err(|_| Error::Plugin)
    }

    /// Delivers a request from `192.0.2.10:5060` over UDP, unauthenticated. See
    /// [`FakePlugin::request_with`].
    pub fn request(&mut self, request: impl AsRef<[u8]>) -> Result<TransactionId> {
        let info = RequestInfo::new(Transport::Udp, Some(([192, 0, 2, 10], 5060).into()));
        self.request_with(request, &info)
    }

    /// Delivers a request with a new transaction, as the host would: only if a claim matches
    /// ([`Error::NotFound`] otherwise, without calling the plugin). Returns the transaction, or
    /// the plugin's error, in which case the fake has answered 500/503 unless the plugin had
    /// sent a final response.
    pub fn request_with(
        &mut self,
        request: impl AsRef<[u8]>,
        info: &RequestInfo,
    ) -> Result<TransactionId> {
        let bytes = request.as_ref();
        let message =
            Message::parse(Bytes::copy_from_slice(bytes)).map_err(|_| Error::InvalidArgument)?;
        let routed = RouteKey::of(&message).is_some_and(|k| {
            self.claims()
                .iter()
                .any(|c| c.matches(k.method, k.event, k.user))
        });
        if !routed {
            return Err(Error::NotFound);
        }
        self.deliver_with_transaction(message, info)
    }

    /// Delivers a request with a new transaction whether or not one of the plugin's claims
    /// matches it, as a host does when its configuration replaced the plugin's claims
    /// (`claims = [...]` in a `[[plugins]]` entry): what the plugin does with a request it
    /// did not ask for. Otherwise as [`FakePlugin::request`].
    pub fn request_unclaimed(&mut self, request: impl AsRef<[u8]>) -> Result<TransactionId> {
        let info = RequestInfo::new(Transport::Udp, Some(([192, 0, 2, 10], 5060).into()));
        let message = Message::parse(Bytes::copy_from_slice(request.as_ref()))
            .map_err(|_| Error::InvalidArgument)?;
        self.deliver_with_transaction(message, &info)
    }

    fn deliver_with_transaction(
        &mut self,
        message: Message,
        info: &RequestInfo,
    ) -> Result<TransactionId> {
        let txn = {
            let mut st = self.host.lock();
            let txn = TransactionId(st.id());
            st.txns.insert(
                txn,
                Txn {
                    request: message.clone(),
                    final_sent: false,
                },
            );
            txn
        };
        // With its index, as the server hands it over (ABI 1.9).
        let result = self.instance().handle_message(Some(txn), &message, info);
        if let Err(e) = &result {
            self.answer_failure(txn, e);
        }
        self.settle(result.map(|()| txn))
    }

    /// Delivers a request that expects no response (an ACK, or a CANCEL with
    /// `info.related` set), without a transaction and without a claim check.
    pub fn request_without_transaction(
        &mut self,
        request: impl AsRef<[u8]>,
        info: &RequestInfo,
    ) -> Result<()> {
        let result = self.instance().handle_request(None, request.as_ref(), info);
        self.settle(result)
    }

    fn answer_failure(&mut self, txn: TransactionId, error: &Error) {
        let mut st = self.host.lock();
        let Some(t) = st.txns.get_mut(&txn) else {
            return;
        };
        if t.final_sent {
            return;
        }
        t.final_sent = true;
        let (status, reason) = error.sip_status();
        let mut b = ResponseBuilder::new(&t.request, status, reason).to_tag("fakehost");
        if status == 503 {
            b = b.header("Retry-After", "5");
        }
        let message = Message::parse(b.build()).expect("the builder writes a valid response");
        st.responses.push(SentResponse {
            txn,
            message,
            synthetic: true,
        });
    }

    /// Delivers a response to a request the plugin sent (after answering the transaction its
    /// [`HUDDLE_ANSWER_HEADER`] names, for a final 2xx, as the host does).
    pub fn response(&mut self, id: RequestId, response: impl AsRef<[u8]>) -> Result<()> {
        let status = Message::parse(Bytes::copy_from_slice(response.as_ref()))
            .ok()
            .and_then(|m| m.status());
        if let Some(status) = status.filter(|s| *s >= 200) {
            self.answer_for_plugin(id, (200..300).contains(&status));
        }
        let result = self.instance().handle_response(id, response.as_ref());
        self.settle(result)
    }

    /// The host's `200 OK` on the transaction `id`'s [`HUDDLE_ANSWER_HEADER`] named, if it
    /// `succeeded` and the transaction is open and not an INVITE.
    fn answer_for_plugin(&mut self, id: RequestId, succeeded: bool) {
        let mut st = self.host.lock();
        let Some(txn) = st.answers.remove(&id).filter(|_| succeeded) else {
            return;
        };
        let Some(t) = st.txns.get_mut(&txn) else {
            return;
        };
        if t.final_sent || t.request.method() == Some(&Method::Invite) {
            return;
        }
        t.final_sent = true;
        let bytes = ResponseBuilder::new(&t.request, 200, "OK")
            .to_tag("fakehost")
            .build();
        let message = Message::parse(bytes).expect("the builder writes a valid response");
        st.responses.push(SentResponse {
            txn,
            message,
            synthetic: true,
        });
    }

    /// Answers a request the plugin sent with `status`, as its target would.
    pub fn answer(&mut self, request: &SentRequest, status: u16, reason: &str) -> Result<()> {
        let bytes = ResponseBuilder::new(&request.message, status, reason)
            .to_tag("remote")
            .build();
        self.response(request.id, bytes)
    }

    /// Advances the virtual clock by `by`, firing every timer that falls due, in due order
    /// (timers armed meanwhile that fall due too). Returns how many fired, or the first error
    /// a timer callback returned (the rest still fire).
    pub fn advance(&mut self, by: Duration) -> Result<usize> {
        let target = self.host.now() + by;
        let mut fired = 0;
        let mut first_error = None;
        loop {
            let next = {
                let mut st = self.host.lock();
                let due = st
                    .timers
                    .iter()
                    .filter(|(_, (d, _))| *d <= target)
                    .min_by_key(|(id, (d, _))| (*d, **id))
                    .map(|(&id, &(d, token))| (id, d, token));
                if let Some((id, d, _)) = due {
                    st.timers.remove(&id);
                    st.now = d;
                }
                due
            };
            let Some((id, _, token)) = next else { break };
            fired += 1;
            let r = self.instance().on_timer(id, token);
            if let Err(e) = self.settle(r) {
                first_error.get_or_insert(e);
            }
        }
        self.host.lock().now = target;
        match first_error {
            Some(e) => Err(e),
            None => Ok(fired),
        }
    }

    /// Fires one armed timer now, whatever its due time.
    pub fn fire_timer(&mut self, timer: TimerId) -> Result<()> {
        let token = self
            .host
            .lock()
            .timers
            .remove(&timer)
            .ok_or(Error::NotFound)?
            .1;
        let r = self.instance().on_timer(timer, token);
        self.settle(r)
    }

    /// Delivers a registration event (if the plugin asked for them).
    pub fn registration(&mut self, event: &RegistrationEvent) -> Result<()> {
        let r = self.instance().on_registration(event);
        self.settle(r)
    }

    /// Media: the session is connected.
    pub fn media_ready(&mut self, session: MediaSessionId) -> Result<()> {
        let r = self.instance().media_ready(session);
        self.settle(r)
    }

    /// Media: an incoming RTP packet. With an RTP sink registered (ABI 1.7) it goes to the
    /// sink, on this thread, instead of the instance's `incoming_rtp`; [`Error::Panic`] when
    /// the sink panicked.
    pub fn incoming_rtp(
        &mut self,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        let delivered = {
            let sink = self
                .host
                .rtp_sink
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            sink.as_ref().map(|s| s.deliver(session, mid, packet))
        };
        let r = match delivered {
            Some(r) => r,
            None => self.instance().incoming_rtp(session, mid, packet),
        };
        self.settle(r)
    }

    /// Media: an incoming RTCP packet.
    pub fn incoming_rtcp(&mut self, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        let r = self.instance().incoming_rtcp(session, packet);
        self.settle(r)
    }

    /// Media: the session ended.
    pub fn media_hangup(&mut self, session: MediaSessionId, reason: HangupReason) -> Result<()> {
        let r = self.instance().media_hangup(session, reason);
        self.settle(r)
    }

    /// Delivers queued watch changes (the fake does this after every call). Returns how many
    /// were delivered, or the first error (the rest are still delivered).
    pub fn deliver_changes(&mut self) -> Result<usize> {
        let mut delivered = 0;
        let mut first_error = None;
        loop {
            let next = self.host.lock().pending.pop_front();
            let Some(change) = next else { break };
            if delivered == MAX_CHAIN {
                self.host.log(
                    Level::Error,
                    "fake host: too many chained watch changes; dropping the rest",
                );
                self.host.lock().pending.clear();
                break;
            }
            delivered += 1;
            if let Err(e) = self.instance().on_store_change(&change) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Delivers what the last call caused, keeping the call's own result.
    fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        let _ = self.deliver_changes();
        result
    }

    /// Destroys the instance now (as dropping does), and returns the host for inspection.
    pub fn stop(mut self) -> FakeHost {
        self.instance.take();
        self.host.clone()
    }
}

/// The shared library a plugin package built, for its integration tests: Cargo puts the
/// `cdylib` next to the test binary (`target/<profile>/deps/`) or one folder up. Pass
/// `env!("CARGO_PKG_NAME")`; the library is named after the package (`-` → `_`).
pub fn built_cdylib(package: &str) -> std::path::PathBuf {
    let name = format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    );
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps");
    [
        deps.join(&name),
        deps.parent().expect("target/<profile>").join(&name),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("{name} was not built next to {}", deps.display()))
}

/// A small valid request for tests: `method` to `uri`, From `sip:alice@example.test`, with
/// `body` as `text/plain` when not empty.
pub fn sample_request(method: &str, uri: &str, body: &str) -> Bytes {
    let method = Method::parse(method);
    let mut out = format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a{}\r\nTo: <{uri}>\r\nCall-ID: {}@192.0.2.10\r\nCSeq: 1 {method}\r\n",
        crate::message::random_token(6),
        crate::message::random_token(3),
        crate::message::random_token(8),
    );
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    Bytes::from(out)
}
