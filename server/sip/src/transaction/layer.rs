//! [`TransactionLayer`]: every transaction of one element, the matching indexes, the deadline
//! queue and the output queues.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

use bytes::Bytes;

use crate::build::cancel_for;
use crate::headers::HeaderError;
use crate::idmap::IdMap;
use crate::message::{Message, Method};

use super::client_invite::ClientInvite;
use super::client_non_invite::ClientNonInvite;
use super::common::{Action, State};
use super::key::{ClientMatch, ClientMatchRef, ServerMatch, ServerMatchRef};
use super::server_invite::{AckDisposition, ServerInvite};
use super::server_non_invite::ServerNonInvite;
use super::timers::DeadlineQueue;
use super::{ClientKey, LayerConfig, ServerKey, Timer, TransactionError, TransactionKey};

/// Bytes to send. `to` is the destination the TU gave (client transactions) or the source the
/// request came from (server transactions); the driver resolves it to a socket or flow.
#[derive(Debug, Clone)]
pub struct Transmit<D> {
    pub to: D,
    pub payload: Bytes,
    /// The transaction that sends it (`None` for [`TransactionLayer::send_stateless`]), so
    /// the driver can report a failure with [`TransactionLayer::transport_error`].
    pub key: Option<TransactionKey>,
}

/// What the layer tells the TU.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<D> {
    /// A new request opened server transaction `key`. The TU answers with
    /// [`TransactionLayer::respond`]. Retransmissions are never reported again.
    Request {
        key: ServerKey,
        msg: Message,
        from: D,
    },
    /// A CANCEL matched the live INVITE server transaction `invite` (RFC 3261 §9.2). The CANCEL
    /// has its own non-INVITE server transaction `cancel`, which the TU answers `200`; if the
    /// INVITE has no final response yet ([`TransactionLayer::state`] is Proceeding) the TU
    /// answers it `487`. A CANCEL matching nothing arrives as a plain [`Event::Request`]
    /// (answer `481`).
    Cancel {
        invite: ServerKey,
        cancel: ServerKey,
        msg: Message,
        from: D,
    },
    /// An ACK that is not the transaction layer's business: the ACK for a 2xx (end to end,
    /// RFC 3261 §13.3.1.4; `invite` is set when it matched an Accepted INVITE transaction, RFC
    /// 6026 §8.7) or a stray ACK matching nothing.
    Ack {
        invite: Option<ServerKey>,
        msg: Message,
        from: D,
    },
    /// A response for client transaction `key` (provisional, final, and in Accepted further
    /// 2xx). Retransmitted non-2xx finals are absorbed.
    Response { key: ClientKey, msg: Message },
    /// A response matching no client transaction. RFC 6026 §7.3 has proxies drop these.
    StrayResponse { msg: Message, from: D },
    /// A timer ended the transaction: B or F (client; the TU acts as if it received 408), H
    /// (server INVITE: no ACK came), or [`Timer::Unanswered`] (server: the TU never sent a
    /// final response).
    Timeout { key: TransactionKey, timer: Timer },
    /// The driver reported a transport failure for this transaction (RFC 3261 §17.1.4,
    /// §17.2.4); for a client transaction the TU acts as if it received 503.
    TransportError { key: TransactionKey },
    /// A received request the layer could not take: the TU answers `error.status()` (503
    /// when [`TransactionError::Overloaded`], 400 when it cannot be identified) statelessly.
    Rejected {
        msg: Message,
        from: D,
        error: TransactionError,
    },
    /// The transaction is gone; the TU can drop whatever it keeps for it. Sent exactly once
    /// per key, after every other event for that key.
    Terminated { key: TransactionKey },
}

#[derive(Debug)]
#[allow(clippy::enum_variant_names)] // named after the RFC 3261 figures
enum Machine {
    // A client machine keeps its request (a `Message` is one pointer) only until the final
    // response: entries live 32 s over UDP (Timers J, M, D) and most are server ones.
    ClientInvite(ClientInvite),
    ClientNonInvite(ClientNonInvite),
    ServerInvite(ServerInvite),
    ServerNonInvite(ServerNonInvite),
}

impl Machine {
    fn state(&self) -> State {
        match self {
            Machine::ClientInvite(m) => m.state(),
            Machine::ClientNonInvite(m) => m.state(),
            Machine::ServerInvite(m) => m.state(),
            Machine::ServerNonInvite(m) => m.state(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Machine::ClientInvite(m) => m.deadline(),
            Machine::ClientNonInvite(m) => m.deadline(),
            Machine::ServerInvite(m) => m.deadline(),
            Machine::ServerNonInvite(m) => m.deadline(),
        }
    }

    fn key(&self, id: u64) -> TransactionKey {
        match self {
            Machine::ClientInvite(_) | Machine::ClientNonInvite(_) => {
                TransactionKey::Client(ClientKey(id))
            }
            Machine::ServerInvite(_) | Machine::ServerNonInvite(_) => {
                TransactionKey::Server(ServerKey(id))
            }
        }
    }

    fn on_transport_error(&mut self) {
        match self {
            Machine::ClientInvite(m) => m.on_transport_error(),
            Machine::ClientNonInvite(m) => m.on_transport_error(),
            Machine::ServerInvite(m) => m.on_transport_error(),
            Machine::ServerNonInvite(m) => m.on_transport_error(),
        }
    }
}

#[derive(Debug)]
enum Index {
    Client(ClientMatch),
    Server(ServerMatch),
}

#[derive(Debug)]
struct Entry<D> {
    machine: Machine,
    peer: D,
    reliable: bool,
    /// The deadline the queue holds for this transaction.
    scheduled: Option<Instant>,
    index: Index,
}

/// Transactions by their matching key ([`ServerMatch`] or [`ClientMatch`]), as ids only: the
/// key lives in the transaction's [`Entry`], so a new transaction's key is moved there instead
/// of being cloned (an allocation per transaction) and kept twice for the transaction's life
/// (32 s over UDP).
#[derive(Debug, Default)]
struct KeyIndex {
    /// Seeded per process: keys are what peers write.
    hasher: foldhash::fast::RandomState,
    /// (hash of the key, transaction id).
    table: hashbrown::HashTable<(u64, u64)>,
}

impl KeyIndex {
    fn with_capacity(capacity: usize) -> Self {
        KeyIndex {
            hasher: foldhash::fast::RandomState::default(),
            table: hashbrown::HashTable::with_capacity(capacity),
        }
    }

    /// The transaction indexed under `key`: one with its hash for which `holds_key(id)`.
    fn get(&self, key: &impl Hash, holds_key: impl Fn(u64) -> bool) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&(h, id)| h == hash && holds_key(id))
            .map(|&(_, id)| id)
    }

    /// Indexes transaction `id` under `key`, which the caller checked is not indexed yet.
    fn insert(&mut self, key: &impl Hash, id: u64) {
        let hash = self.hasher.hash_one(key);
        self.table.insert_unique(hash, (hash, id), |&(h, _)| h);
    }

    /// Forgets transaction `id`, indexed under `key`.
    fn remove(&mut self, key: &impl Hash, id: u64) {
        let hash = self.hasher.hash_one(key);
        if let Ok(found) = self.table.find_entry(hash, |&(_, i)| i == id) {
            found.remove();
        }
    }
}

/// A request a client transaction starts with: parsed, or (non-INVITE only, see
/// [`TransactionLayer::send_forwarded`]) as bytes.
#[derive(Debug)]
enum Outgoing {
    Message(Message),
    Bytes(Bytes),
}

impl From<Message> for Outgoing {
    fn from(request: Message) -> Self {
        Outgoing::Message(request)
    }
}

/// A CANCEL asked for while its INVITE is still Calling: RFC 3261 §9.1 holds it back until a
/// provisional response arrives, and drops it if a final one comes first.
#[derive(Debug)]
struct PendingCancel {
    id: u64,
    key: ClientMatch,
    request: Message,
}

/// All RFC 3261 §17 transactions of one element, sans I/O.
///
/// `D` is the driver's opaque destination (a socket address, a connection id, a flow); the
/// layer clones it into [`Transmit`]s and events and never looks inside.
///
/// Feed it with [`receive`](Self::receive), [`send_request`](Self::send_request),
/// [`respond`](Self::respond), [`cancel`](Self::cancel),
/// [`transport_error`](Self::transport_error) and [`handle_timeout`](Self::handle_timeout);
/// after each input drain [`poll_transmit`](Self::poll_transmit) and
/// [`poll_event`](Self::poll_event), then sleep until [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct TransactionLayer<D> {
    config: LayerConfig,
    /// Boxed: over UDP a completed transaction stays 32 s (Timer J), so under load the table
    /// grows through the first half minute and is copied whole at each doubling. With the
    /// entries inline each doubling moved and freshly touched a whole entry per live
    /// transaction (the first source of page faults under a REGISTER load); boxed, a slot is
    /// 16 bytes.
    entries: IdMap<u64, Box<Entry<D>>>,
    /// Keyed by what peers write (branches, hosts): a hasher seeded at random per process,
    /// faster than SipHash on these short keys and still not predictable from outside.
    clients: KeyIndex,
    servers: KeyIndex,
    /// Keyed by the INVITE's id.
    pending_cancels: IdMap<u64, PendingCancel>,
    /// RFC 2543 server INVITEs only: the To tag of our final response, which their ACK
    /// carries. Kept aside (by transaction id), not in every entry: entries live 32 s over UDP,
    /// and without this field an entry fits a smaller allocation.
    final_to_tags: IdMap<u64, Box<str>>,
    deadlines: DeadlineQueue,
    transmits: VecDeque<Transmit<D>>,
    events: VecDeque<Event<D>>,
    next_id: u64,
    /// Reused buffers, so steady-state input handling does not allocate for them.
    scratch: Vec<Action>,
    due: Vec<u64>,
    stats: LayerStats,
}

/// Counters of what the layer did on its own, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    /// Messages re-sent because a timer fired (Timers A, E, G: requests and responses over
    /// unreliable transports).
    pub retransmitted: u64,
    /// Retransmitted requests that matched a live server transaction and were absorbed (its
    /// last response re-sent, never passed up).
    pub absorbed: u64,
}

impl<D: Clone + Debug> TransactionLayer<D> {
    /// A layer with no transactions. Fails when the timer values are unusable.
    pub fn new(config: LayerConfig) -> Result<Self, TransactionError> {
        config.timers.validate()?;
        let reserved = config.reserved_transactions.min(config.max_transactions);
        Ok(TransactionLayer {
            config,
            entries: IdMap::with_capacity_and_hasher(reserved, Default::default()),
            clients: KeyIndex::with_capacity(reserved),
            servers: KeyIndex::with_capacity(reserved),
            pending_cancels: IdMap::default(),
            final_to_tags: IdMap::default(),
            deadlines: DeadlineQueue::with_capacity(reserved),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            scratch: Vec::new(),
            due: Vec::new(),
            stats: LayerStats::default(),
        })
    }

    /// The live server transaction matching `key`.
    fn server_id(&self, key: &ServerMatch) -> Option<u64> {
        self.servers.get(key, |id| {
            self.entries
                .get(&id)
                .is_some_and(|e| matches!(&e.index, Index::Server(k) if k == key))
        })
    }

    /// The live server transaction matching a borrowed key.
    fn server_id_ref(&self, key: &ServerMatchRef<'_>) -> Option<u64> {
        self.servers.get(key, |id| {
            self.entries
                .get(&id)
                .is_some_and(|e| matches!(&e.index, Index::Server(k) if k.matches(key)))
        })
    }

    /// The live client transaction matching `key`.
    fn client_id(&self, key: &ClientMatch) -> Option<u64> {
        self.clients.get(key, |id| {
            self.entries
                .get(&id)
                .is_some_and(|e| matches!(&e.index, Index::Client(k) if k == key))
        })
    }

    /// The live client transaction matching a borrowed key.
    fn client_id_ref(&self, key: &ClientMatchRef<'_>) -> Option<u64> {
        self.clients.get(key, |id| {
            self.entries
                .get(&id)
                .is_some_and(|e| matches!(&e.index, Index::Client(k) if k.matches(key)))
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// Live transactions (a CANCEL held back for a Calling INVITE is not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of a live transaction; `None` once it has terminated.
    pub fn state(&self, key: impl Into<TransactionKey>) -> Option<State> {
        let key = key.into();
        let id = id_of(key);
        self.entries
            .get(&id)
            .filter(|e| e.machine.key(id) == key)
            .map(|e| e.machine.state())
    }

    /// The INVITE a live INVITE client transaction sends, until it has a final response: then
    /// only what matching and the ACK need is kept. A non-INVITE client transaction keeps only
    /// its request's bytes ([`ClientNonInvite::request`]): `None` for one.
    pub fn request(&self, key: ClientKey) -> Option<&Message> {
        match &self.entries.get(&key.0)?.machine {
            Machine::ClientInvite(m) => m.request(),
            _ => None,
        }
    }

    /// The bytes a live client transaction sends (INVITE or not), until it has a final
    /// response.
    pub fn request_bytes(&self, key: ClientKey) -> Option<&Bytes> {
        match &self.entries.get(&key.0)?.machine {
            Machine::ClientInvite(m) => m.request().map(Message::raw),
            Machine::ClientNonInvite(m) => m.request(),
            _ => None,
        }
    }

    /// The peer of a live transaction: where its requests or responses go.
    pub fn peer(&self, key: impl Into<TransactionKey>) -> Option<&D> {
        let key = key.into();
        let id = id_of(key);
        self.entries
            .get(&id)
            .filter(|e| e.machine.key(id) == key)
            .map(|e| &e.peer)
    }

    /// A message arrived from `from` over a reliable (stream) or unreliable (datagram)
    /// transport. The caller has parsed it (and, for requests, normally validated it).
    pub fn receive(&mut self, msg: Message, from: D, reliable: bool, now: Instant) {
        if msg.is_request() {
            self.receive_request(msg, from, reliable, now);
        } else {
            self.receive_response(msg, from, now);
        }
    }

    /// Starts a client transaction for `request`, which the TU has completed, including our
    /// top Via with a unique `z9hG4bK` branch. The request is queued for `to` at once.
    pub fn send_request(
        &mut self,
        request: Message,
        to: D,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientKey, TransactionError> {
        if request.method() == Some(&Method::Ack) {
            return Err(TransactionError::AckIsNotATransaction);
        }
        let key = ClientMatch::of_request(&request)?;
        self.start_request(key, request, to, reliable, now)
    }

    /// [`TransactionLayer::send_request`] for a request whose top Via the TU has just written
    /// itself, with branch `branch`: the key is made from that instead of parsing the Via
    /// again. `branch` must be the top Via's (checked in debug builds), or responses would
    /// not match.
    pub fn send_request_with_branch(
        &mut self,
        request: Message,
        branch: &str,
        to: D,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientKey, TransactionError> {
        if request.method() == Some(&Method::Ack) {
            return Err(TransactionError::AckIsNotATransaction);
        }
        let key = ClientMatch::of_request_with_branch(&request, branch)?;
        debug_assert_eq!(
            ClientMatch::of_request(&request).ok().as_ref(),
            Some(&key),
            "{branch} is not the top Via's branch"
        );
        self.start_request(key, request, to, reliable, now)
    }

    /// [`TransactionLayer::send_request_with_branch`] for a request the TU forwards as bytes:
    /// `request` is `original` as the TU rewrote it, with the same method and CSeq and a top
    /// Via of its own whose branch is `branch`. A non-INVITE transaction keeps only the bytes,
    /// so the TU needs no parsed copy of what it forwards; an INVITE, whose CANCEL and ACK are
    /// built from it, is parsed here.
    pub fn send_forwarded(
        &mut self,
        original: &Message,
        request: Bytes,
        branch: &str,
        to: D,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientKey, TransactionError> {
        match original.method() {
            Some(Method::Ack) => return Err(TransactionError::AckIsNotATransaction),
            Some(Method::Invite) => {
                let request = Message::parse(request)?;
                return self.send_request_with_branch(request, branch, to, reliable, now);
            }
            _ => {}
        }
        let key = ClientMatch::of_request_with_branch(original, branch)?;
        #[cfg(debug_assertions)]
        {
            let sent = Message::parse(request.clone()).ok();
            debug_assert_eq!(
                sent.as_ref().and_then(|m| ClientMatch::of_request(m).ok()),
                Some(key.clone()),
                "{branch} is not the top Via's branch, or the method or CSeq changed"
            );
        }
        self.start_request(key, Outgoing::Bytes(request), to, reliable, now)
    }

    fn start_request(
        &mut self,
        key: ClientMatch,
        request: impl Into<Outgoing>,
        to: D,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientKey, TransactionError> {
        if self.client_id(&key).is_some() {
            return Err(TransactionError::DuplicateBranch);
        }
        if self.entries.len() >= self.config.max_transactions {
            return Err(TransactionError::Overloaded);
        }
        let id = self.alloc_id();
        self.start_client(id, key, request.into(), to, reliable, now);
        Ok(ClientKey(id))
    }

    /// Cancels INVITE client transaction `invite` (RFC 3261 §9.1): builds the CANCEL and runs
    /// it as its own non-INVITE client transaction to the same destination. While the INVITE
    /// is still Calling the CANCEL is held back until a provisional response arrives; if a
    /// final response comes first the held CANCEL is dropped and reported
    /// [`Event::Terminated`]. Calling it again returns the same key.
    pub fn cancel(
        &mut self,
        invite: ClientKey,
        now: Instant,
    ) -> Result<ClientKey, TransactionError> {
        let entry = self
            .entries
            .get(&invite.0)
            .ok_or(TransactionError::UnknownTransaction)?;
        let (Machine::ClientInvite(m), Index::Client(invite_key)) = (&entry.machine, &entry.index)
        else {
            return Err(match entry.machine {
                Machine::ClientNonInvite(_) => TransactionError::NotInvite,
                _ => TransactionError::UnknownTransaction,
            });
        };
        let key = invite_key.with_method(Method::Cancel);
        if let Some(id) = self.client_id(&key) {
            return Ok(ClientKey(id));
        }
        if let Some(p) = self.pending_cancels.get(&invite.0) {
            return Ok(ClientKey(p.id));
        }
        let calling = match m.state() {
            State::Calling => true,
            State::Proceeding => false,
            _ => return Err(TransactionError::FinalResponseReceived),
        };
        let request = m.request().ok_or(TransactionError::FinalResponseReceived)?;
        let bytes = cancel_for(request).ok_or(HeaderError::Invalid("CSeq"))?;
        let request = Message::parse(bytes)?;
        let (peer, reliable) = (entry.peer.clone(), entry.reliable);
        let id = self.alloc_id();
        if calling {
            self.pending_cancels
                .insert(invite.0, PendingCancel { id, key, request });
        } else {
            self.start_client(id, key, request.into(), peer, reliable, now);
        }
        Ok(ClientKey(id))
    }

    /// The TU answers server transaction `key` with a response it built (e.g. with
    /// [`crate::build::ResponseBuilder`]). 1xx may be sent several times; one final response
    /// ends the exchange, except that an INVITE transaction in Accepted keeps passing 2xx
    /// (the TU's own 2xx retransmissions, or other branches' 2xx in a proxy).
    pub fn respond(
        &mut self,
        key: ServerKey,
        response: Bytes,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let msg = Message::parse(response)?;
        self.respond_message(key, &msg, now)
    }

    /// [`TransactionLayer::respond`] with an already parsed response (its raw bytes are sent).
    pub fn respond_message(
        &mut self,
        key: ServerKey,
        response: &Message,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let code = response.status().ok_or(TransactionError::NotAResponse)?;
        self.respond_with(
            key,
            code,
            response.raw().clone(),
            || to_tag_of(response),
            now,
        )
    }

    /// [`TransactionLayer::respond`] for a response the TU has just built itself with status
    /// `code` (e.g. with [`crate::build::ResponseBuilder`]): the bytes are trusted and parsed
    /// only when the transaction must remember the final response's To tag (RFC 2543 peers),
    /// which saves re-parsing every response the TU writes.
    pub fn respond_built(
        &mut self,
        key: ServerKey,
        code: u16,
        response: Bytes,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let raw = response.clone();
        self.respond_with(
            key,
            code,
            raw,
            || Message::parse(response).ok().and_then(|m| to_tag_of(&m)),
            now,
        )
    }

    fn respond_with(
        &mut self,
        key: ServerKey,
        code: u16,
        raw: Bytes,
        to_tag: impl FnOnce() -> Option<Box<str>>,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let entry = self
            .entries
            .get_mut(&key.0)
            .ok_or(TransactionError::UnknownTransaction)?;
        let mut out = std::mem::take(&mut self.scratch);
        let timers = &self.config.timers;
        let result = match &mut entry.machine {
            Machine::ServerInvite(m) => m.respond(code, raw, timers, now, &mut out),
            Machine::ServerNonInvite(m) => m.respond(code, raw, timers, now, &mut out),
            _ => Err(TransactionError::UnknownTransaction),
        };
        let rfc2543 = matches!(&entry.index, Index::Server(k) if k.is_rfc2543());
        self.scratch = out;
        result?;
        if code >= 200 && rfc2543 {
            match to_tag() {
                Some(tag) => self.final_to_tags.insert(key.0, tag),
                None => self.final_to_tags.remove(&key.0),
            };
        }
        self.apply(key.0);
        self.settle(key.0, now);
        Ok(())
    }

    /// Queues bytes outside any transaction: the ACK for a 2xx, a 2xx retransmitted by the UAS
    /// core after Timer L, a stateless response or forward.
    pub fn send_stateless(&mut self, payload: Bytes, to: D) {
        self.transmits.push_back(Transmit {
            to,
            payload,
            key: None,
        });
    }

    /// The driver could not send a [`Transmit`] of transaction `key`: the transaction ends and
    /// the TU gets [`Event::TransportError`]. Unknown keys are ignored.
    pub fn transport_error(&mut self, key: TransactionKey, now: Instant) {
        let id = id_of(key);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.machine.key(id) != key {
            return;
        }
        entry.machine.on_transport_error();
        self.events.push_back(Event::TransportError { key });
        self.settle(id, now);
    }

    /// What the layer re-sent and absorbed since it was made.
    pub fn stats(&self) -> LayerStats {
        self.stats
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        let entries = &self.entries;
        self.deadlines.pop_due(
            now,
            |id| entries.get(&id).and_then(|e| e.scheduled),
            &mut due,
        );
        for id in due.drain(..) {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            // Its queue entry was just consumed; `settle` re-queues the next deadline.
            entry.scheduled = None;
            if entry.machine.deadline().is_some_and(|d| d <= now) {
                let mut out = std::mem::take(&mut self.scratch);
                let timers = &self.config.timers;
                match &mut entry.machine {
                    Machine::ClientInvite(m) => m.on_timeout(now, &mut out),
                    Machine::ClientNonInvite(m) => m.on_timeout(timers, now, &mut out),
                    Machine::ServerInvite(m) => m.on_timeout(timers, now, &mut out),
                    Machine::ServerNonInvite(m) => m.on_timeout(now, &mut out),
                }
                self.stats.retransmitted += out
                    .iter()
                    .filter(|a| matches!(a, Action::Transmit(_)))
                    .count() as u64;
                self.scratch = out;
                self.apply(id);
            }
            self.settle(id, now);
        }
        self.due = due;
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<D>> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event<D>> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] must next be called; `None` when no timer
    /// runs. Amortized O(log n) in the number of transactions.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let entries = &self.entries;
        self.deadlines
            .peek(|id| entries.get(&id).and_then(|e| e.scheduled))
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn start_client(
        &mut self,
        id: u64,
        key: ClientMatch,
        request: Outgoing,
        to: D,
        reliable: bool,
        now: Instant,
    ) {
        let mut out = std::mem::take(&mut self.scratch);
        let timers = &self.config.timers;
        let machine = match request {
            Outgoing::Message(request) if request.method() == Some(&Method::Invite) => {
                Machine::ClientInvite(ClientInvite::start(
                    request, reliable, timers, now, &mut out,
                ))
            }
            Outgoing::Message(request) => Machine::ClientNonInvite(ClientNonInvite::start(
                request.raw().clone(),
                reliable,
                timers,
                now,
                &mut out,
            )),
            Outgoing::Bytes(request) => Machine::ClientNonInvite(ClientNonInvite::start(
                request, reliable, timers, now, &mut out,
            )),
        };
        self.scratch = out;
        self.clients.insert(&key, id);
        self.entries.insert(
            id,
            Box::new(Entry {
                machine,
                peer: to,
                reliable,
                scheduled: None,
                index: Index::Client(key),
            }),
        );
        self.apply(id);
        self.settle(id, now);
    }

    fn receive_response(&mut self, msg: Message, from: D, now: Instant) {
        let id = ClientMatch::of_response(&msg).and_then(|k| self.client_id_ref(&k));
        let Some(entry) = id.and_then(|id| self.entries.get_mut(&id).map(|e| (id, e))) else {
            self.events.push_back(Event::StrayResponse { msg, from });
            return;
        };
        let (id, entry) = entry;
        let mut out = std::mem::take(&mut self.scratch);
        let timers = &self.config.timers;
        match &mut entry.machine {
            Machine::ClientInvite(m) => m.on_response(msg, timers, now, &mut out),
            Machine::ClientNonInvite(m) => m.on_response(msg, timers, now, &mut out),
            Machine::ServerInvite(_) | Machine::ServerNonInvite(_) => {}
        }
        self.scratch = out;
        self.apply(id);
        self.settle(id, now);
    }

    fn receive_request(&mut self, msg: Message, from: D, reliable: bool, now: Instant) {
        let is_ack = msg.method() == Some(&Method::Ack);
        // Most requests have an RFC 3261 branch: they are matched by the key borrowed from
        // them, and only a new transaction builds its key (once, from the same view).
        let (existing, key, cancelled) = match ServerMatch::view(&msg) {
            Some(view) => match self.server_id_ref(&view) {
                Some(id) => (Some(id), None, None),
                None if is_ack => (None, None, None),
                None => {
                    let cancelled = (msg.method() == Some(&Method::Cancel))
                        .then(|| self.server_id_ref(&view.with_method(Method::Invite)))
                        .flatten();
                    (None, Some(Ok(view.to_key())), cancelled)
                }
            },
            None => {
                let key = ServerMatch::of_request(&msg);
                let existing = key.as_ref().ok().and_then(|key| self.server_id(key));
                (existing, Some(key), None)
            }
        };
        if is_ack {
            let id = existing.or_else(|| {
                // RFC 2543 ACK for an INVITE without To tag: the ACK carries our final's tag.
                let key = key?.ok()?;
                let invite = self.server_id(&key.for_ack()?)?;
                self.entries.get(&invite)?;
                (self.final_to_tags.get(&invite).map(|t| &**t) == key.to_tag()).then_some(invite)
            });
            self.receive_ack(id, msg, from, now);
            return;
        }
        if let Some(id) = existing {
            self.retransmitted_request(id, from, now);
            return;
        }
        let key = match key {
            Some(Ok(key)) => key,
            Some(Err(error)) => {
                self.events.push_back(Event::Rejected { msg, from, error });
                return;
            }
            // Only for an ACK, handled above.
            None => return,
        };
        if self.entries.len() >= self.config.max_transactions {
            self.events.push_back(Event::Rejected {
                msg,
                from,
                error: TransactionError::Overloaded,
            });
            return;
        }
        let id = self.alloc_id();
        let mut out = std::mem::take(&mut self.scratch);
        let method = msg.method().cloned();
        let machine = if method == Some(Method::Invite) {
            Machine::ServerInvite(ServerInvite::start(
                &msg,
                reliable,
                self.config.send_100_trying,
                self.config.unanswered_invite,
                now,
                &mut out,
            ))
        } else {
            Machine::ServerNonInvite(ServerNonInvite::start(
                reliable,
                self.config.unanswered_non_invite,
                now,
            ))
        };
        self.scratch = out;
        let invite = match method {
            Some(Method::Cancel) if !key.is_rfc2543() => cancelled,
            Some(Method::Cancel) => self.server_id(&key.with_method(Method::Invite)),
            _ => None,
        };
        self.servers.insert(&key, id);
        self.entries.insert(
            id,
            Box::new(Entry {
                machine,
                peer: from.clone(),
                reliable,
                scheduled: None,
                index: Index::Server(key),
            }),
        );
        self.events.push_back(match invite {
            Some(invite) => Event::Cancel {
                invite: ServerKey(invite),
                cancel: ServerKey(id),
                msg,
                from,
            },
            None => Event::Request {
                key: ServerKey(id),
                msg,
                from,
            },
        });
        self.apply(id);
        self.settle(id, now);
    }

    /// A request matching a live server transaction: re-send its last response, never pass it
    /// up again. Responses follow the latest source (a reconnected stream).
    fn retransmitted_request(&mut self, id: u64, from: D, now: Instant) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.peer = from;
        self.stats.absorbed += 1;
        let mut out = std::mem::take(&mut self.scratch);
        match &mut entry.machine {
            Machine::ServerInvite(m) => m.on_invite(&mut out),
            Machine::ServerNonInvite(m) => m.on_request(&mut out),
            Machine::ClientInvite(_) | Machine::ClientNonInvite(_) => {}
        }
        self.scratch = out;
        self.apply(id);
        self.settle(id, now);
    }

    /// An ACK, matching server transaction `id` if any.
    fn receive_ack(&mut self, id: Option<u64>, msg: Message, from: D, now: Instant) {
        let entry = id.and_then(|id| self.entries.get_mut(&id).map(|e| (id, &mut **e)));
        let Some((
            id,
            Entry {
                machine: Machine::ServerInvite(m),
                ..
            },
        )) = entry
        else {
            self.events.push_back(Event::Ack {
                invite: None,
                msg,
                from,
            });
            return;
        };
        match m.on_ack(msg, &self.config.timers, now) {
            AckDisposition::Absorbed => {}
            AckDisposition::ToTu(msg) => self.events.push_back(Event::Ack {
                invite: Some(ServerKey(id)),
                msg,
                from,
            }),
        }
        self.settle(id, now);
    }

    /// Turns the machine's actions into transmits and events.
    fn apply(&mut self, id: u64) {
        let Some(entry) = self.entries.get(&id) else {
            self.scratch.clear();
            return;
        };
        let key = entry.machine.key(id);
        for action in self.scratch.drain(..) {
            match action {
                Action::Transmit(payload) => self.transmits.push_back(Transmit {
                    to: entry.peer.clone(),
                    payload,
                    key: Some(key),
                }),
                Action::Deliver(msg) => {
                    if let TransactionKey::Client(key) = key {
                        self.events.push_back(Event::Response { key, msg });
                    }
                }
                Action::Timeout(timer) => self.events.push_back(Event::Timeout { key, timer }),
            }
        }
    }

    /// After any input: forget a terminated transaction, re-queue a changed deadline, and
    /// release or drop a held-back CANCEL.
    fn settle(&mut self, id: u64, now: Instant) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let state = entry.machine.state();
        if state == State::Terminated {
            let key = entry.machine.key(id);
            if let Some(entry) = self.entries.remove(&id) {
                match entry.index {
                    Index::Client(k) => self.clients.remove(&k, id),
                    Index::Server(k) => {
                        if k.is_rfc2543() {
                            self.final_to_tags.remove(&id);
                        }
                        self.servers.remove(&k, id);
                    }
                }
            }
            self.events.push_back(Event::Terminated { key });
            if let Some(p) = self.pending_cancels.remove(&id) {
                self.events.push_back(Event::Terminated {
                    key: TransactionKey::Client(ClientKey(p.id)),
                });
            }
            return;
        }
        let deadline = entry.machine.deadline();
        if deadline != entry.scheduled {
            entry.scheduled = deadline;
            if let Some(at) = deadline {
                self.deadlines.push(at, id);
                let live = self.entries.len();
                self.deadlines.compact_if_needed(
                    live,
                    self.entries
                        .iter()
                        .filter_map(|(id, e)| e.scheduled.map(|at| (*id, at))),
                );
            }
        }
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        if let Machine::ClientInvite(_) = entry.machine {
            match state {
                State::Calling => {}
                State::Proceeding => {
                    if let Some(p) = self.pending_cancels.remove(&id) {
                        let (peer, reliable) = (entry.peer.clone(), entry.reliable);
                        self.start_client(p.id, p.key, p.request.into(), peer, reliable, now);
                    }
                }
                _ => {
                    if let Some(p) = self.pending_cancels.remove(&id) {
                        self.events.push_back(Event::Terminated {
                            key: TransactionKey::Client(ClientKey(p.id)),
                        });
                    }
                }
            }
        }
    }

    #[cfg(test)]
    #[allow(dead_code)] // for tests that inspect the queue
    pub(crate) fn queued_deadlines(&self) -> usize {
        self.deadlines.len()
    }
}

/// The To tag of a response, kept for matching an RFC 2543 ACK.
fn to_tag_of(response: &Message) -> Option<Box<str>> {
    response
        .to_header()
        .ok()
        .and_then(|t| t.tag())
        .map(Into::into)
}

fn id_of(key: TransactionKey) -> u64 {
    match key {
        TransactionKey::Client(k) => k.0,
        TransactionKey::Server(k) => k.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::ResponseBuilder;

    fn options(i: u32) -> Message {
        Message::parse(Bytes::from(format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKu{i}\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )))
        .unwrap()
    }

    /// Receives OPTIONS number `i` and answers it 200, draining what that produced.
    fn answer_options(l: &mut TransactionLayer<()>, i: u32, reliable: bool, now: Instant) {
        let req = options(i);
        l.receive(req.clone(), (), reliable, now);
        let Some(Event::Request { key, .. }) = l.poll_event() else {
            panic!("no request");
        };
        l.respond(key, ResponseBuilder::new(&req, 200, "OK").build(), now)
            .unwrap();
        while l.poll_event().is_some() {}
        while l.poll_transmit().is_some() {}
    }

    #[test]
    fn stale_deadlines_do_not_accumulate() {
        // Each transaction queues its safety-net deadline and ends long before it: without
        // compaction the heap would hold one stale entry per transaction ever seen.
        let now = Instant::now();
        let mut l: TransactionLayer<()> = TransactionLayer::new(LayerConfig::default()).unwrap();
        for i in 0..10_000 {
            answer_options(&mut l, i, true, now);
            assert!(l.queued_deadlines() <= 65, "{}", l.queued_deadlines());
        }
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn reserved_tables_hold_that_many_transactions_without_growing() {
        let now = Instant::now();
        let config = LayerConfig {
            reserved_transactions: 3_000,
            ..LayerConfig::default()
        };
        let mut l: TransactionLayer<()> = TransactionLayer::new(config).unwrap();
        let before = (
            l.entries.capacity(),
            l.servers.table.capacity(),
            l.clients.table.capacity(),
            l.deadlines.capacity(),
        );
        assert!(before.0 >= 3_000 && before.1 >= 3_000 && before.2 >= 3_000 && before.3 >= 3_000);
        // Answered over UDP, each stays (Timer J) and keeps its deadline queued.
        for i in 0..3_000 {
            answer_options(&mut l, i, false, now);
        }
        assert_eq!(l.len(), 3_000);
        let after = (
            l.entries.capacity(),
            l.servers.table.capacity(),
            l.clients.table.capacity(),
            l.deadlines.capacity(),
        );
        assert_eq!(before, after, "a table grew");
    }

    #[test]
    fn an_entry_fits_a_224_byte_allocation() {
        // The core's peer (transport, flow, socket address) is 56 bytes; mimalloc's size
        // classes around there are 192, 224 and 256 bytes. Entries live 32 s over UDP.
        assert!(std::mem::size_of::<Entry<[u64; 7]>>() <= 224);
    }

    #[test]
    fn an_rfc2543_final_tag_matches_its_ack_and_goes_with_the_transaction() {
        let now = Instant::now();
        let mut l: TransactionLayer<()> = TransactionLayer::new(LayerConfig::default()).unwrap();
        let invite = Message::parse(Bytes::from_static(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=old1\r\n\
              From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c2543\r\n\
              CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        l.receive(invite.clone(), (), false, now);
        let Some(Event::Request { key, .. }) = l.poll_event() else {
            panic!("no request");
        };
        let busy = ResponseBuilder::new(&invite, 486, "Busy Here")
            .to_tag("t486")
            .build();
        l.respond(key, busy, now).unwrap();
        assert_eq!(l.final_to_tags.len(), 1);
        while l.poll_transmit().is_some() {}
        while l.poll_event().is_some() {}
        let ack = |tag: &str| {
            Message::parse(Bytes::from(format!(
                "ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=old1\r\n\
                 From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag={tag}\r\nCall-ID: c2543\r\n\
                 CSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n"
            )))
            .unwrap()
        };
        // An ACK with another tag is not ours: up to the TU, unmatched.
        l.receive(ack("other"), (), false, now);
        assert!(matches!(
            l.poll_event(),
            Some(Event::Ack { invite: None, .. })
        ));
        l.receive(ack("t486"), (), false, now);
        assert!(l.poll_event().is_none(), "absorbed by the transaction");
        assert_eq!(l.state(key), Some(State::Confirmed));
        // Timer I ends it, and the tag kept for it goes too.
        while let Some(at) = l.poll_timeout() {
            l.handle_timeout(at);
        }
        assert!(l.is_empty());
        assert!(l.final_to_tags.is_empty());
    }

    #[test]
    fn no_reservation_beyond_the_transaction_limit() {
        let config = LayerConfig {
            reserved_transactions: 1 << 20,
            max_transactions: 100,
            ..LayerConfig::default()
        };
        let l: TransactionLayer<()> = TransactionLayer::new(config).unwrap();
        assert!(l.entries.capacity() < 1_000, "{}", l.entries.capacity());
    }
}
