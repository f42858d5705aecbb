//! The SIP core: one task that owns the transaction layer, the registrar, the proxy and the
//! digest state, fed by the transports. It is the thin driver of STYLE.md: every decision is
//! made by a sans-IO part (parser, validator, transactions, digest, location); this module
//! reads events, calls them with the current `Instant`, and sends what they return.
//!
//! Requests go, after validation: REGISTER for our domain to the registrar; a request a
//! plugin claimed to that plugin ([`plugins`], which also drains what plugins ask of the core
//! through the command channel in the select loop); everything else to the proxy.

mod digest;
mod limits;
mod plugins;
mod proxy;
mod quiet;
mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use huddle_sip::build::{ResponseBuilder, Source};
use huddle_sip::message::HeaderName;
use huddle_sip::transaction::{
    ClientKey, Event, LayerConfig, ServerKey, TimerConfig, TransactionKey, TransactionLayer,
};
use huddle_sip::uri::SipUri;
use huddle_sip::validate::{validate_request, validate_response, Capabilities};
use huddle_sip::{Message, Method};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::plugins::mailbox::HeldWakes;
use crate::plugins::{CorePlugins, HostCommand};
use crate::registrar::{Change, ContactList, Location, Reach, Rejection};
use crate::transport::{
    Destination, FlowId, Inbound, Stop, Transport, TransportEvent, TransportHandle, UdpBatch,
    UdpReceiver,
};
use crate::users::UserRecord;

pub use digest::{Digest, Verdict};
pub use limits::RateLimiter;
pub use plugins::PluginRouting;
pub use proxy::ProxyState;
pub use tokens::FlowTokens;

/// Who authenticates a request: the registrar (401) or the proxy (407).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Registrar,
    Proxy,
}

/// Where a message came from or goes to, as the transaction layer carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub transport: Transport,
    pub flow: Option<FlowId>,
    pub remote: SocketAddr,
    /// UDP: our listening socket the peer's datagrams came to (its bound address), which is
    /// where ours to it leave from (see [`Destination::UdpFrom`]); `None` for a peer we have
    /// not heard from (a Request-URI's address), where the family's first socket sends.
    pub local: Option<SocketAddr>,
}

impl Peer {
    /// The transport destination.
    pub fn destination(&self) -> Destination {
        match (self.flow, self.local) {
            (Some(flow), _) => Destination::Flow(flow),
            (None, Some(local)) if self.transport == Transport::Udp => Destination::UdpFrom {
                local,
                addr: self.remote,
            },
            (None, _) => Destination::Address {
                transport: self.transport,
                addr: self.remote,
            },
        }
    }

    /// Where a binding is reached: over its connection, or (UDP) from the socket its
    /// REGISTER came to.
    pub fn reaching(reach: Reach) -> Peer {
        match reach {
            Reach::Flow {
                flow,
                transport,
                remote,
            } => Peer {
                transport,
                flow: Some(flow),
                remote,
                local: None,
            },
            Reach::Address {
                transport,
                addr,
                local,
            } => Peer {
                transport,
                flow: None,
                remote: addr,
                local,
            },
        }
    }
}

/// Everything the core task owns.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Arc<Config>,
    pub(crate) transports: TransportHandle,
    /// The UDP datagrams of the current turn, sent together at its end (`flush_udp`), each
    /// with the transaction that sent it.
    udp_out: UdpBatch<Option<TransactionKey>>,
    pub(crate) local: HashMap<Transport, SocketAddr>,
    /// Each listening address and its text (`ip:port`), for [`Core::push_local`].
    local_text: Vec<(SocketAddr, String)>,
    pub(crate) identities: Identities,
    pub(crate) txn: TransactionLayer<Peer>,
    pub(crate) location: Location,
    /// Looked up for every authenticated request; the names are the configuration's.
    pub(crate) users: HashMap<String, UserRecord, foldhash::fast::RandomState>,
    pub(crate) digest: Digest,
    pub(crate) tokens: FlowTokens,
    pub(crate) proxy: ProxyState,
    pub(crate) plugins: PluginRouting,
    plugin_commands: Option<mpsc::Receiver<HostCommand>>,
    /// Keeps the command channel open while the core runs, plugins or not.
    _plugin_commands_tx: mpsc::Sender<HostCommand>,
    rate: RateLimiter,
    caps: Capabilities,
    /// When the bindings changed since the last write-back go to the store writer (`None`:
    /// nothing waiting); `[registrar] persist_interval_ms` after the first change.
    persist_at: Option<Instant>,
    persist_interval: Duration,
    persist: std::sync::mpsc::Sender<Vec<Change>>,
    tag_seed: u64,
    // Seeded per process (a looping request comes back to this process). foldhash, not SipHash:
    // a collision can only make a sender's own request look like a loop, and SipHash cost
    // ~1.4 k instructions per relayed request (bench/NOTES.md, session 13).
    loop_hasher: foldhash::quality::RandomState,
    counter: u64,
    /// The text of the last source IP a response was stamped with (`received=`): most
    /// responses go to the same few peers, and formatting an address is not free.
    last_ip: (Option<std::net::IpAddr>, String),
    /// The buffer every 401/407 challenge is written into.
    challenge: String,
    /// The buffer every REGISTER's AOR is built in.
    aor: String,
    /// The Contact values of every 200 to a REGISTER, written into one reused list.
    contacts: ContactList,
    /// `[sip] domain` in lower case, the host part of every AOR.
    pub(crate) domain: String,
}

/// Transactions the core's tables are sized for at start (at most `limits.max_transactions`):
/// 2,000 requests a second over UDP keep about this many live (Timer J holds each 32 s). Up to
/// that load the tables never grow, so no request pays for copying every live transaction
/// (which a bench's first half minute otherwise measures, and which is a latency spike).
const RESERVED_TRANSACTIONS: usize = 65_536;

/// The core's timers fire on a grid of this step: a deadline waits for the next grid point, so
/// every deadline within one step is handled in one wake-up. Under load each transaction ends
/// on a timer of its own (Timers I, J, K, L, M, D), thousands of distinct instants per second,
/// and waking for each cost a sleep and a context switch (for calls, more wake-ups than
/// datagrams). RFC 3261 timers are hundreds of milliseconds or more; 10 ms late is nothing.
const TIMER_GRAIN: Duration = Duration::from_millis(10);

/// `at` rounded up to the next point of the [`TIMER_GRAIN`] grid that starts at `origin`
/// (`origin` itself for a deadline before it).
fn on_timer_grid(at: Instant, origin: Instant) -> Instant {
    let grain = TIMER_GRAIN.as_nanos();
    let steps = at
        .saturating_duration_since(origin)
        .as_nanos()
        .div_ceil(grain);
    // Deadlines are at most days away: the product fits a u64 of nanoseconds (584 years).
    let offset = u64::try_from(steps * grain).unwrap_or(u64::MAX);
    origin
        .checked_add(Duration::from_nanos(offset))
        .unwrap_or(at)
}

/// Polls the UDP receivers for one with something to read, starting at `first` (the caller
/// rotates it, so that one busy socket cannot starve another), each through its quiet waker:
/// its index and readiness.
fn poll_udp(
    udp: &[UdpReceiver],
    wakes: &mut [quiet::QuietWake],
    first: usize,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(usize, std::io::Result<()>)> {
    let n = udp.len();
    for k in 0..n {
        let i = (first + k) % n;
        if let (Some(receiver), Some(wake)) = (udp.get(i), wakes.get_mut(i)) {
            if let std::task::Poll::Ready(ready) = wake.poll(cx, |cx| receiver.poll_ready(cx)) {
                return std::task::Poll::Ready((i, ready));
            }
        }
    }
    std::task::Poll::Pending
}

/// A core turn (one batch of events, or the timers) longer than this is logged.
const SLOW_TURN: std::time::Duration = std::time::Duration::from_millis(50);

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system's random generator works");
    u64::from_le_bytes(b)
}

impl Core {
    /// Builds the core. `local` maps each transport to the address Huddle listens on for it;
    /// `plugins` are the started plugin instances ([`CorePlugins::none`] for none).
    pub fn new(
        config: Arc<Config>,
        transports: TransportHandle,
        local: HashMap<Transport, SocketAddr>,
        users: HashMap<String, UserRecord>,
        location: Location,
        persist: std::sync::mpsc::Sender<Vec<Change>>,
        plugins: CorePlugins,
    ) -> Core {
        let (plugins, plugin_commands, plugin_commands_tx) = PluginRouting::new(plugins);
        let algorithm =
            huddle_sip::auth::Algorithm::parse(&config.auth.algorithm).unwrap_or_default();
        let mut identities = Identities::default();
        identities.add(config.sip.domain.to_ascii_lowercase());
        for alias in &config.sip.aliases {
            identities.add(alias.to_ascii_lowercase());
        }
        // Every listening address, not only each transport's first: a request may come to,
        // and a Via or Route name, any of them (a UDP peer's datagrams leave from the socket
        // they came to, `Peer::local`).
        let mut listening: Vec<SocketAddr> = local.values().copied().collect();
        for spec in transports.local_addrs() {
            if !listening.contains(&spec.addr) {
                listening.push(spec.addr);
            }
        }
        for addr in &listening {
            identities.add(addr.to_string());
            identities.add(addr.ip().to_string());
        }
        let timers = TimerConfig {
            t1: Duration::from_millis(config.timers.t1_ms),
            t2: Duration::from_millis(config.timers.t2_ms),
            t4: Duration::from_millis(config.timers.t4_ms),
            ..TimerConfig::default()
        };
        let layer = LayerConfig {
            timers,
            max_transactions: config.limits.max_transactions,
            // The core sends its own 100 Trying, with received/rport stamped.
            send_100_trying: false,
            reserved_transactions: config.limits.max_transactions.min(RESERVED_TRANSACTIONS),
            ..LayerConfig::default()
        };
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random generator works");
        Core {
            txn: TransactionLayer::new(layer).expect("config checked the timers"),
            digest: Digest::new(config.realm(), algorithm, config.auth.nonce_lifetime_secs),
            rate: RateLimiter::new(
                config.limits.requests_per_second_per_ip,
                config.limits.request_burst_per_ip,
                100_000,
            ),
            caps: Capabilities::default(),
            tokens: FlowTokens::new(key),
            proxy: ProxyState::default(),
            plugins,
            plugin_commands: Some(plugin_commands),
            _plugin_commands_tx: plugin_commands_tx,
            persist_at: None,
            persist_interval: Duration::from_millis(config.registrar.persist_interval_ms),
            tag_seed: random_u64(),
            loop_hasher: foldhash::quality::RandomState::default(),
            counter: 0,
            last_ip: (None, String::new()),
            challenge: String::new(),
            aor: String::new(),
            contacts: ContactList::default(),
            domain: config.sip.domain.to_ascii_lowercase(),
            config,
            transports,
            udp_out: UdpBatch::default(),
            local_text: listening.iter().map(|a| (*a, a.to_string())).collect(),
            local,
            identities,
            location,
            users: users.into_iter().collect(),
            persist,
        }
    }

    /// Runs until `shutdown` flips to true or the transports go away. `udp` are the UDP
    /// sockets' receiving ends ([`Transports::bind_with_udp`](crate::transport::Transports::bind_with_udp)),
    /// read here: a datagram is handled where it is read, with no event, no channel and no
    /// second task woken for it (the reader task and the channel receive were ~10 k of a
    /// call's ~208 k instructions: bench/NOTES.md, sipcut6). `events` brings the other
    /// transports' messages.
    pub async fn run(
        mut self,
        events: mpsc::Receiver<TransportEvent>,
        mut udp: Vec<UdpReceiver>,
        shutdown: watch::Receiver<bool>,
    ) {
        let Some(commands) = self.plugin_commands.take() else {
            return;
        };
        // Polled on every turn, and mostly empty: cheap to poll while nothing was sent.
        let mut commands = quiet::QuietReceiver::new(commands);
        let mut events = quiet::QuietReceiver::new(events);
        // One timer for the whole loop, re-armed only when the earliest deadline moves: under
        // load it rarely does (new transactions time out later than old ones), and registering
        // a fresh timer on every turn cost a timer-wheel insert and removal per batch of events.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let grid = Instant::now();
        // One shutdown future for the whole loop, cheap to poll on every turn (`Stop`): a fresh
        // `changed()` per turn registered and removed a waiter on the watch (two lock round
        // trips, ~4 k instructions a call). A dropped sender (the server handle is gone) is
        // shutdown too.
        let mut stop = Stop::new(&shutdown);
        // The receiver polled first next turn: the one after the last read, so that a socket
        // that is always ready does not starve another.
        let mut udp_first = 0;
        // Polled on every turn, and mostly not readable under a stream load.
        let mut udp_wakes: Vec<quiet::QuietWake> =
            udp.iter().map(|_| quiet::QuietWake::new()).collect();
        loop {
            let deadline = [
                self.txn.poll_timeout(),
                self.location.poll_timeout(),
                self.persist_at,
                self.proxy.poll_timeout(),
                self.plugin_poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|at| on_timer_grid(at, grid));
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at.into());
                }
                armed = deadline;
            }
            // Plugin threads this turn hands jobs to are woken once, when it ends.
            let held;
            let started = tokio::select! {
                (index, ready) = std::future::poll_fn(|cx| {
                    poll_udp(&udp, &mut udp_wakes, udp_first, cx)
                }), if !udp.is_empty() =>
                {
                    if ready.is_err() {
                        // The reactor is gone: the runtime is shutting down, and the core
                        // with it (as the transports' own UDP tasks stop then).
                        tracing::warn!(
                            local = %udp[index].local_addr(),
                            "UDP socket's reactor gone; SIP core stopping"
                        );
                        break;
                    }
                    udp_first = index + 1;
                    held = HeldWakes::begin();
                    let now = Instant::now();
                    udp[index].read(|datagram| {
                        self.on_inbound(datagram.to_inbound(), now);
                        self.drain(now);
                    });
                    now
                }
                event = events.recv() => {
                    let Some(event) = event else { break };
                    held = HeldWakes::begin();
                    let now = Instant::now();
                    self.on_transport_event(event, now);
                    // Drain what is already queued before polling timers again.
                    for _ in 0..64 {
                        match events.try_recv() {
                            Ok(event) => self.on_transport_event(event, now),
                            Err(_) => break,
                        }
                    }
                    now
                }
                command = commands.recv() => {
                    // Never `None`: the core holds a sender.
                    let Some(command) = command else { break };
                    held = HeldWakes::begin();
                    let now = Instant::now();
                    self.on_plugin_command(command, now);
                    for _ in 0..64 {
                        match commands.try_recv() {
                            Ok(command) => self.on_plugin_command(command, now),
                            Err(_) => break,
                        }
                    }
                    now
                }
                () = &mut sleep, if armed.is_some() => {
                    // Fired: re-armed next turn even if the earliest deadline is unchanged.
                    armed = None;
                    held = HeldWakes::begin();
                    let now = Instant::now();
                    self.txn.handle_timeout(now);
                    self.config.ops.metrics.transaction_layer(self.txn.stats());
                    let aors = self.location.expire(now);
                    self.registrations_lost(aors);
                    self.proxy_timer_c(now);
                    self.plugin_handle_timeout(now);
                    now
                }
                () = &mut stop => break,
            };
            // The turn's instant: what follows is the tail of the same turn (a clock read per
            // turn saved; under load a turn is one or a few messages).
            let now = started;
            self.drain(now);
            self.flush_udp(now);
            self.write_back(now);
            drop(held);
            // One turn handles at most 65 events; one that takes this long stalls every
            // flow behind it (a wall-clock figure: it includes time preempted by the OS).
            let took = started.elapsed();
            if took >= SLOW_TURN {
                tracing::warn!(ms = took.as_millis() as u64, "slow SIP core turn");
            }
        }
        // A clean stop writes what the interval held.
        self.persist_changes();
    }

    /// Feeds one transport event.
    pub fn on_transport_event(&mut self, event: TransportEvent, now: Instant) {
        match event {
            TransportEvent::Message(inbound) => self.on_inbound(inbound, now),
            TransportEvent::FlowClosed { flow, .. } => {
                let aors = self.location.remove_flow(flow);
                if !aors.is_empty() {
                    tracing::debug!(%flow, ?aors, "connection closed, bindings removed");
                    self.registrations_lost(aors);
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.drain(now);
    }

    fn on_inbound(&mut self, inbound: Inbound, now: Instant) {
        let peer = Peer {
            transport: inbound.transport,
            flow: inbound.flow,
            remote: inbound.remote,
            // Only UDP sends by it: a stream peer is its flow.
            local: (inbound.transport == Transport::Udp).then_some(inbound.local),
        };
        let parsed = match inbound.text {
            Some(text) => Message::parse_text(inbound.data, text),
            None => Message::parse(inbound.data),
        };
        let msg = match parsed {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(remote = %peer.remote, error = %e, "unparseable message dropped");
                return;
            }
        };
        if msg.is_request() {
            let is_ack = msg.method() == Some(&Method::Ack);
            if !is_ack && !self.rate.allow(peer.remote.ip(), now) {
                self.reply_stateless(
                    &msg,
                    &peer,
                    503,
                    "Service Unavailable - Rate Limited",
                    &[("Retry-After", "1")],
                );
                return;
            }
            if let Err(rejection) = validate_request(&msg, &self.caps) {
                if !is_ack {
                    let mut extra = Vec::new();
                    if let Some(u) = rejection.unsupported.as_deref() {
                        extra.push(("Unsupported", u));
                    }
                    self.reply_stateless(&msg, &peer, rejection.status, rejection.reason, &extra);
                }
                return;
            }
        } else if let Err(why) = validate_response(&msg) {
            tracing::debug!(remote = %peer.remote, why, "invalid response dropped");
            return;
        }
        let reliable = peer.transport.is_reliable();
        self.txn.receive(msg, peer, reliable, now);
        self.config.ops.metrics.transaction_layer(self.txn.stats());
    }

    /// Sends the UDP datagrams held during the turn, all in one system call. A transaction
    /// whose datagram could not go out is told, which may send more (held again, sent by the
    /// next round here or at the end of the next turn).
    fn flush_udp(&mut self, now: Instant) {
        for _ in 0..4 {
            if self.udp_out.is_empty() {
                return;
            }
            let mut failed = Vec::new();
            self.transports.flush(&mut self.udp_out, |key, e| {
                tracing::debug!(error = %e, "send failed");
                failed.extend(key);
            });
            if failed.is_empty() {
                return;
            }
            for key in failed {
                self.txn.transport_error(key, now);
            }
            self.drain(now);
        }
    }

    /// At the end of a turn: starts the write-back interval at the first binding change, and
    /// hands the changes over when it is up (also checked here, not only when the timer
    /// fires: under load the loop may not go idle for the timer's turn).
    fn write_back(&mut self, now: Instant) {
        match self.persist_at {
            Some(at) if now >= at => self.persist_changes(),
            Some(_) => {}
            None if self.location.has_changes() => {
                if self.persist_interval.is_zero() {
                    self.persist_changes();
                } else {
                    self.persist_at = Some(now + self.persist_interval);
                }
            }
            None => {}
        }
    }

    /// Hands the bindings changed since the last call to the store writer, as one batch: each
    /// binding once, as it stands now, encoded now (see `registrar`'s module docs).
    fn persist_changes(&mut self) {
        self.persist_at = None;
        if !self.location.has_changes() {
            return;
        }
        let mut batch = Vec::new();
        self.location.take_changes(&mut batch);
        if self.persist.send(batch).is_err() {
            tracing::warn!("store writer has stopped; bindings not persisted");
        }
    }

    /// Sends everything the sans-IO parts produced (registrar changes wait for the write-back
    /// interval, [`Core::write_back`]).
    fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.txn.poll_transmit() {
                progressed = true;
                if let Err(e) = self.transports.send_batched(
                    &mut self.udp_out,
                    transmit.to.destination(),
                    transmit.payload,
                    transmit.key,
                ) {
                    tracing::debug!(error = %e, "send failed");
                    if let Some(key) = transmit.key {
                        self.txn.transport_error(key, now);
                    }
                }
            }
            while let Some(event) = self.txn.poll_event() {
                progressed = true;
                self.on_txn_event(event, now);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_txn_event(&mut self, event: Event<Peer>, now: Instant) {
        match event {
            Event::Request { key, msg, from } => self.on_request(key, msg, from, now),
            Event::Cancel {
                invite,
                cancel,
                msg,
                from,
            } => {
                self.respond(cancel, &msg, &from, 200, "OK", &[]);
                if !self.plugin_cancel(invite, &msg, &from) {
                    self.proxy_cancel(invite, now);
                }
            }
            Event::Ack { invite, msg, from } => self.on_ack(invite, msg, from, now),
            Event::Response { key, msg } => self.on_client_outcome(key, Some(msg), 0, now),
            Event::Timeout {
                key: TransactionKey::Client(key),
                ..
            } => self.on_client_outcome(key, None, 408, now),
            Event::TransportError {
                key: TransactionKey::Client(key),
            } => self.on_client_outcome(key, None, 503, now),
            Event::Terminated { key } => {
                match &key {
                    TransactionKey::Server(k) => self.plugin_server_terminated(k),
                    TransactionKey::Client(k) => self.plugin_client_terminated(k),
                }
                self.proxy.terminated(&key);
            }
            Event::Rejected { msg, from, error } if msg.method() != Some(&Method::Ack) => {
                let status = error.status().unwrap_or(500);
                self.reply_stateless(&msg, &from, status, error.reason(), &[("Retry-After", "5")]);
            }
            _ => {}
        }
    }

    /// An ACK the transaction layer passed up: a plugin's, or relayed by the proxy.
    fn on_ack(&mut self, invite: Option<ServerKey>, msg: Message, from: Peer, now: Instant) {
        if self.plugin_ack(invite, &msg, &from) || invite.is_some() {
            return;
        }
        self.route_stateless(msg, from, now);
    }

    /// A response on a client transaction, or (`None`) its timeout (`failure` 408) or
    /// transport failure (503): for the plugin that sent the request, or the proxy.
    fn on_client_outcome(
        &mut self,
        key: ClientKey,
        response: Option<Message>,
        failure: u16,
        now: Instant,
    ) {
        if self.is_plugin_branch(&key) {
            self.plugin_branch_response(key, response, failure, now);
        } else {
            self.on_branch_response(key, response, now);
        }
    }

    pub(crate) fn new_tag(&mut self) -> String {
        self.next_tag(&mut TagBuf::default()).to_owned()
    }

    /// A new To tag written into `buf`: the low half of the seed and the counter, in hex.
    fn next_tag<'b>(&mut self, buf: &'b mut TagBuf) -> &'b str {
        self.counter += 1;
        buf.write(self.tag_seed & 0xffff_ffff, self.counter)
    }

    /// The Via this proxy adds to a request it forwards over `transport` from `local`, written
    /// into one string, with a new branch `z9hG4bK-hd<loop hash>-<counter>`: `loop_prefix` is
    /// [`Core::loop_prefix`] of the request, whose hash covers what stays the same when the very
    /// same request comes back to us (RFC 3261 §16.6 step 8 and §16.3 step 4), so a loop is
    /// recognised and a spiral (new Request-URI) is not; the counter makes the branch unique.
    pub(crate) fn via_with_branch(
        &mut self,
        transport: Transport,
        local: SocketAddr,
        loop_prefix: &str,
    ) -> ViaText {
        self.counter += 1;
        let mut via = ViaText::new();
        via.push_str("SIP/2.0/");
        via.push_str(transport.via_token());
        via.push(' ');
        self.push_local(&mut via, local);
        via.push_str(";branch=");
        via.push_str(loop_prefix);
        via.push_str(hex(self.counter, &mut [0; 16]));
        via.push_str(";rport");
        via
    }

    /// The listening address a request to `out` leaves from, for its Via: a UDP peer's own
    /// socket (`Peer::local`), else the first UDP listener of its address family; for other
    /// transports the transport's first listener.
    pub(crate) fn sending_from(&self, out: &Peer) -> Option<SocketAddr> {
        if out.transport != Transport::Udp {
            return self.local.get(&out.transport).copied();
        }
        // As `transport::udp` picks the socket: the peer's own, else the first of the
        // destination's address family, else the first.
        let udp = || {
            self.transports
                .local_addrs()
                .iter()
                .filter(|s| s.transport == Transport::Udp)
                .map(|s| s.addr)
        };
        out.local
            .or_else(|| udp().find(|a| a.is_ipv4() == out.remote.is_ipv4()))
            .or_else(|| udp().next())
            .or_else(|| self.local.get(&Transport::Udp).copied())
    }

    /// Appends a listening address as `ip:port`: its text is kept from the start, since
    /// formatting an address costs more than the rest of a Via or Record-Route.
    fn push_local(&self, out: &mut impl std::fmt::Write, addr: SocketAddr) {
        // Either has room for any address (see `ViaText`).
        let _ = match self.local_text.iter().find(|(a, _)| *a == addr) {
            Some((_, text)) => out.write_str(text),
            None => write!(out, "{addr}"),
        };
    }

    pub(crate) fn loop_prefix(&self, msg: &Message) -> LoopPrefix {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.loop_hasher.build_hasher();
        msg.request_uri().hash(&mut h);
        msg.call_id().hash(&mut h);
        msg.cseq().ok().map(|c| c.seq).hash(&mut h);
        msg.from_tag().hash(&mut h);
        msg.to_tag().hash(&mut h);
        for name in [
            HeaderName::ProxyRequire,
            HeaderName::ProxyAuthorization,
            HeaderName::Route,
        ] {
            for v in msg.header_values(&name) {
                v.hash(&mut h);
            }
        }
        let mut prefix = LoopPrefix::new();
        prefix.push_str("z9hG4bK-hd");
        prefix.push_str(hex(h.finish(), &mut [0; 16]));
        prefix.push('-');
        prefix
    }

    /// The branch prefix of a request relayed without state ([`Core::route_stateless`]): as
    /// [`Core::loop_prefix`] writes it, with this process's seed for the hash.
    pub(crate) fn stateless_prefix(&self) -> LoopPrefix {
        let mut prefix = LoopPrefix::new();
        prefix.push_str("z9hG4bK-hd");
        prefix.push_str(hex(self.tag_seed >> 32, &mut [0; 16]));
        prefix.push('-');
        prefix
    }

    /// True when `msg`, whose [`Core::loop_prefix`] is `prefix`, already passed through this
    /// proxy unchanged (a loop, answered 482).
    pub(crate) fn is_loop(&self, msg: &Message, prefix: &str) -> bool {
        // A branch is part of its Via's text: only a Via containing the prefix is parsed.
        msg.header_list(&HeaderName::Via).any(|v| {
            v.contains(prefix)
                && huddle_sip::headers::Via::parse(v).is_ok_and(|via| {
                    via.branch().is_some_and(|b| b.starts_with(prefix))
                        && self.local_text.iter().any(|(a, _)| {
                            via.port == Some(a.port())
                                && via.host.trim_start_matches('[').trim_end_matches(']')
                                    == a.ip().to_string()
                        })
                })
        })
    }

    fn response_bytes(
        &mut self,
        req: &Message,
        peer: &Peer,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Bytes {
        const SERVER: &[(&str, &str)] =
            &[("Server", concat!("Huddle/", env!("CARGO_PKG_VERSION")))];
        let mut tag = TagBuf::default();
        let tag = self.next_tag(&mut tag);
        let remote_ip = peer.remote.ip();
        if self.last_ip.0 != Some(remote_ip) {
            self.last_ip = (Some(remote_ip), remote_ip.to_string());
        }
        let ip = &self.last_ip.1;
        ResponseBuilder::new(req, status, reason)
            .to_tag(tag)
            .source(Source {
                ip,
                port: peer.remote.port(),
            })
            .headers(extra)
            .headers(SERVER)
            .build()
    }

    /// Answers a request within its server transaction.
    pub(crate) fn respond(
        &mut self,
        key: ServerKey,
        req: &Message,
        peer: &Peer,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let bytes = self.response_bytes(req, peer, status, reason, extra);
        match self.txn.respond_built(key, status, bytes, Instant::now()) {
            // Counted once sent, as relayed finals are (`relay_final`).
            Ok(()) => self.config.ops.metrics.final_response(req.method(), status),
            Err(e) => tracing::debug!(error = %e, "response for a finished transaction dropped"),
        }
    }

    /// Counts a final response sent upstream that the core did not build itself (a plugin's, or
    /// one the proxy relays), by its CSeq method.
    pub(crate) fn count_final(&self, response: &Message) {
        if let (Some(status), Ok(cseq)) = (response.status(), response.cseq()) {
            self.config
                .ops
                .metrics
                .final_response(Some(&cseq.method), status);
        }
    }

    /// Sends the final response of a proxied transaction upstream, `received` relayed as
    /// `bytes` (less our Via, which leaves its status and CSeq as they are), and counts it.
    pub(crate) fn relay_final(
        &mut self,
        server: ServerKey,
        received: &Message,
        bytes: Bytes,
        now: Instant,
    ) {
        let Some(status) = received.status() else {
            return;
        };
        if self.txn.respond_built(server, status, bytes, now).is_ok() {
            self.count_final(received);
        }
    }

    /// Answers a request that never became a transaction (invalid, rate limited, overloaded).
    fn reply_stateless(
        &mut self,
        req: &Message,
        peer: &Peer,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let bytes = self.response_bytes(req, peer, status, reason, extra);
        let dest = peer.destination();
        if let Err(e) = self
            .transports
            .send_batched(&mut self.udp_out, dest, bytes, None)
        {
            tracing::debug!(error = %e, "stateless response not sent");
        }
    }

    /// Digest-authenticates `msg` (RFC 3261 §22) for the registrar (401, Authorization, the To
    /// user is the identity) or the proxy (407, Proxy-Authorization, the From user). Returns
    /// the user when the request may go on; otherwise it has been answered.
    pub(crate) fn authenticate(
        &mut self,
        key: ServerKey,
        msg: &Message,
        from: &Peer,
        role: Role,
    ) -> Option<String> {
        let mut user = String::new();
        self.authenticate_into(key, msg, from, role, &mut user)
            .then_some(user)
    }

    /// [`Core::authenticate`] writing the user into `user` (cleared first) instead of a new
    /// `String`: the registrar reuses one buffer for the AOR it builds from the user. True when
    /// the request may go on.
    fn authenticate_into(
        &mut self,
        key: ServerKey,
        msg: &Message,
        from: &Peer,
        role: Role,
        user_out: &mut String,
    ) -> bool {
        let (credentials, status, reason, challenge_header) = match role {
            Role::Registrar => (
                HeaderName::Authorization,
                401,
                "Unauthorized",
                "WWW-Authenticate",
            ),
            Role::Proxy => (
                HeaderName::ProxyAuthorization,
                407,
                "Proxy Authentication Required",
                "Proxy-Authenticate",
            ),
        };
        let identities = &self.identities;
        let names_us = |uri: &str| SipUri::parse(uri).is_ok_and(|u| uri_names_us(identities, &u));
        match self.digest.check(msg, &credentials, &self.users, names_us) {
            Verdict::Accept(user) => {
                let identity = match role {
                    Role::Registrar => msg.to_header(),
                    Role::Proxy => msg.from_header(),
                };
                let claimed = identity
                    .ok()
                    .and_then(|a| SipUri::parse(a.uri).ok().and_then(|u| u.user_decoded()));
                if claimed.as_deref() == Some(user) {
                    user_out.clear();
                    user_out.push_str(user);
                    return true;
                }
                self.respond(key, msg, from, 403, "Forbidden - Identity Mismatch", &[]);
            }
            Verdict::Challenge { stale } => {
                let mut challenge = std::mem::take(&mut self.challenge);
                self.digest.challenge_into(stale, &mut challenge);
                self.respond(
                    key,
                    msg,
                    from,
                    status,
                    reason,
                    &[(challenge_header, &challenge)],
                );
                self.challenge = challenge;
            }
            Verdict::BadRequest(reason) => self.respond(key, msg, from, 400, reason, &[]),
        }
        false
    }

    /// True when a URI host (and port) names this server.
    pub(crate) fn is_local(&self, uri: &SipUri<'_>) -> bool {
        uri_names_us(&self.identities, uri)
    }

    fn on_request(&mut self, key: ServerKey, msg: Message, from: Peer, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        // Draining (admin API): new out-of-dialog requests and registrations go elsewhere.
        if self.config.ops.is_draining() && msg.to_header().is_ok() && msg.to_tag().is_none() {
            self.config.ops.metrics.drain_refused();
            let retry = [("Retry-After", "30")];
            self.respond(
                key,
                &msg,
                &from,
                503,
                "Service Unavailable - Draining",
                &retry,
            );
            return;
        }
        // The registrar is where a REGISTER for our domain ends, so Max-Forwards does not
        // apply to it (RFC 3261 §16.3 step 3 is a proxy's check).
        if method == Method::Register {
            let local = msg
                .request_sip_uri()
                .and_then(Result::ok)
                .is_some_and(|u| self.is_local(&u));
            if local {
                self.on_register(key, msg, from, now);
                return;
            }
        }
        // A plugin is where a request it claimed ends (it is the UAS), so, like REGISTER,
        // Max-Forwards does not apply.
        if let Some(plugin) = self.plugin_for(&msg, None) {
            self.hand_to_plugin(plugin, key, msg, from);
            return;
        }
        if let Some(packages) = self.missing_event_packages(&msg) {
            let allow = [("Allow-Events", packages.as_str())];
            self.respond(
                key,
                &msg,
                &from,
                489,
                "Bad Event - Missing Event Header",
                &allow,
            );
            return;
        }
        if let Some(Ok(0)) = msg.max_forwards() {
            self.respond(key, &msg, &from, 483, "Too Many Hops", &[]);
            return;
        }
        self.proxy_request(key, msg, from, now);
    }

    fn on_register(&mut self, key: ServerKey, msg: Message, from: Peer, now: Instant) {
        let require: Vec<&str> = msg
            .header_list(&HeaderName::Require)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("outbound")
                    && !t.eq_ignore_ascii_case("path")
            })
            .collect();
        if !require.is_empty() {
            let unsupported = require.join(", ");
            self.respond(
                key,
                &msg,
                &from,
                420,
                "Bad Extension",
                &[("Unsupported", &unsupported)],
            );
            return;
        }
        // The AOR is built in a buffer kept across REGISTERs (taken out while in use).
        let mut aor = std::mem::take(&mut self.aor);
        if self.authenticate_into(key, &msg, &from, Role::Registrar, &mut aor) {
            aor.push('@');
            aor.push_str(&self.domain);
            self.register_binding(key, &msg, &from, &aor, now);
        }
        self.aor = aor;
    }

    /// The registrar's part of an authenticated REGISTER for `aor`: update the bindings and
    /// answer with every current one.
    fn register_binding(
        &mut self,
        key: ServerKey,
        msg: &Message,
        from: &Peer,
        aor: &str,
        now: Instant,
    ) {
        let reach = match from.flow {
            Some(flow) => Reach::Flow {
                flow,
                transport: from.transport,
                remote: from.remote,
            },
            None => Reach::Address {
                transport: from.transport,
                addr: from.remote,
                local: from.local,
            },
        };
        let before = (self.registration_events_wanted() || self.config.ops.webhooks_on())
            .then(|| self.location.binding_keys(aor));
        // The 200's Contact values go into a list kept across REGISTERs.
        let mut contacts = std::mem::take(&mut self.contacts);
        let outcome = self.location.register_into(
            msg,
            aor,
            reach,
            now,
            &self.config.registrar,
            &mut contacts,
        );
        if let Some(before) = before {
            self.registration_changed(aor, &before);
        }
        match outcome {
            Ok(()) => {
                let mut all = contacts.iter();
                match (all.next(), all.next()) {
                    // One binding is the usual answer: no list of headers built for it.
                    (Some(one), None) => {
                        self.respond(key, msg, from, 200, "OK", &[("Contact", one)]);
                    }
                    _ => {
                        let extra: Vec<(&str, &str)> =
                            contacts.iter().map(|c| ("Contact", c)).collect();
                        self.respond(key, msg, from, 200, "OK", &extra);
                    }
                }
            }
            Err(Rejection {
                status,
                reason,
                min_expires,
            }) => {
                let min = min_expires.map(|m| m.to_string());
                let extra: Vec<(&str, &str)> =
                    min.iter().map(|m| ("Min-Expires", m.as_str())).collect();
                self.respond(key, msg, from, status, reason, &extra);
            }
        }
        self.contacts = contacts;
    }
}

/// Room for a To tag: two 64-bit numbers in hex.
/// The branch of a Via [`Core::via_with_branch`] wrote (nothing in the address before it
/// contains `;`).
pub(crate) fn via_branch(via: &str) -> &str {
    via.split_once(";branch=")
        .and_then(|(_, rest)| rest.split(';').next())
        .unwrap_or_default()
}

/// A Via this proxy writes ([`Core::via_with_branch`]), on the stack: `SIP/2.0/` and a
/// transport token, a listening address (at most 65 bytes as `[IPv6%scope]:port`), the branch
/// (a [`LoopPrefix`] and a counter, 16 hex digits at most) and `;rport`: well under the
/// capacity, whatever the request (none of it comes from the peer).
pub(crate) type ViaText = arrayvec::ArrayString<192>;

/// [`Core::loop_prefix`]: `z9hG4bK-hd`, a 64-bit hash in hex, `-` (27 bytes at most).
pub(crate) type LoopPrefix = arrayvec::ArrayString<32>;

#[derive(Debug, Default)]
struct TagBuf([u8; 32]);

impl TagBuf {
    /// `high` then `low` in lower-case hex without leading zeros, as `format!("{high:x}{low:x}")`.
    fn write(&mut self, high: u64, low: u64) -> &str {
        let (a, b) = (hex_digits(high), hex_digits(low));
        let (a, b) = (&a[hex_skip(high)..], &b[hex_skip(low)..]);
        self.0[..a.len()].copy_from_slice(a);
        self.0[a.len()..a.len() + b.len()].copy_from_slice(b);
        // Nothing but ASCII hex digits.
        std::str::from_utf8(&self.0[..a.len() + b.len()]).unwrap_or("0")
    }
}

/// `n` as 16 lower-case hex digits, leading zeros included: a loop of fixed length, which the
/// compiler unrolls (per digit of a variable length it cost ~8 instructions and a bounds check,
/// for the tags and branches of every message).
fn hex_digits(n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = b"0123456789abcdef"[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// How many of [`hex_digits`]'s leading zeros `format!("{n:x}")` leaves out (all but one for 0).
fn hex_skip(n: u64) -> usize {
    (n.leading_zeros() / 4).min(15) as usize
}

/// `n` in lower-case hex without leading zeros, as `format!("{n:x}")`, written into `buf` (the
/// formatting machinery costs more than the digits for the tags and branches of every message).
fn hex(n: u64, buf: &mut [u8; 16]) -> &str {
    *buf = hex_digits(n);
    // Nothing but ASCII hex digits.
    std::str::from_utf8(&buf[hex_skip(n)..]).unwrap_or("0")
}

/// The names this server answers to, lower case: the domain, aliases, and each listening
/// address as `ip:port` and as a bare IP. A handful of entries, so a list: it is checked for
/// nearly every request (Request-URI, digest URI, Route) and needs no allocation that way.
#[derive(Debug, Default)]
pub(crate) struct Identities {
    names: Vec<String>,
    /// Each name that reads as `host:port` (at any of its colons) as its host and port number:
    /// [`Identities::contains_with_port`] compares numbers instead of parsing each name's port
    /// for every Request-URI with a port (~600 instructions a lookup).
    with_port: Vec<(String, u16)>,
}

impl Identities {
    fn add(&mut self, name: String) {
        if self.names.contains(&name) {
            return;
        }
        for (i, _) in name.match_indices(':') {
            if let Ok(port) = name[i + 1..].parse::<u16>() {
                self.with_port.push((name[..i].to_owned(), port));
            }
        }
        self.names.push(name);
    }

    /// True when `host` (any case) is one of the names.
    fn contains(&self, host: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// True when `host:port` (host in any case) is one of the names: some name has a colon
    /// after a prefix equal to `host` and a port number equal to `port` after that colon.
    fn contains_with_port(&self, host: &str, port: u16) -> bool {
        self.with_port
            .iter()
            .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(host))
    }
}

/// True when a URI's host (and port, for addresses) is one of this server's identities: the
/// domain, an alias, or a listening address. A bare IP without port names us only if it is a
/// listening IP; an IP with a port must match a listening address exactly.
fn uri_names_us(identities: &Identities, uri: &SipUri<'_>) -> bool {
    let host = uri.host;
    match uri.port {
        Some(port) => {
            identities.contains_with_port(host, port)
                || (identities.contains(host)
                    && !host
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_digit() || c == '['))
        }
        None => identities.contains(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_peer_is_sent_to_from_its_own_socket_others_as_before() {
        let remote: SocketAddr = "192.0.2.7:5062".parse().unwrap();
        let local: SocketAddr = "127.0.0.2:5070".parse().unwrap();
        let peer = |transport, flow, local| Peer {
            transport,
            flow,
            remote,
            local,
        };
        assert_eq!(
            peer(Transport::Udp, None, Some(local)).destination(),
            Destination::UdpFrom {
                local,
                addr: remote
            }
        );
        // Not heard from (a URI's address): the transports pick the family's first socket.
        assert_eq!(
            peer(Transport::Udp, None, None).destination(),
            Destination::Address {
                transport: Transport::Udp,
                addr: remote
            }
        );
        // A stream peer is its flow, or its address; `local` never applies to it.
        let flow = FlowId::from_raw(7);
        assert_eq!(
            peer(Transport::Tcp, Some(flow), Some(local)).destination(),
            Destination::Flow(flow)
        );
        assert_eq!(
            peer(Transport::Tcp, None, Some(local)).destination(),
            Destination::Address {
                transport: Transport::Tcp,
                addr: remote
            }
        );
        // A binding reached by address keeps its socket; by flow, its flow.
        let reach = Reach::Address {
            transport: Transport::Udp,
            addr: remote,
            local: Some(local),
        };
        assert_eq!(
            Peer::reaching(reach),
            peer(Transport::Udp, None, Some(local))
        );
    }

    #[test]
    fn hex_is_format_hex() {
        let mut numbers = vec![0, 1, 0xf, 0x10, 0xdead_beef, u64::MAX, 1 << 63];
        for shift in 0..64 {
            numbers.extend([1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift]);
            numbers.push(0x0123_4567_89ab_cdef_u64.rotate_left(shift));
        }
        for n in numbers {
            assert_eq!(hex(n, &mut [0; 16]), format!("{n:x}"));
            assert_eq!(
                TagBuf::default().write(n, n.rotate_left(7)),
                format!("{n:x}{:x}", n.rotate_left(7))
            );
        }
    }

    #[test]
    fn names_with_ports_are_found_as_parsing_each_name_finds_them() {
        // What `contains_with_port` did before the ports were kept as numbers.
        fn parsing(names: &[&str], host: &str, port: u16) -> bool {
            names.iter().any(|n| {
                n.len() > host.len()
                    && n.as_bytes()[host.len()] == b':'
                    && n.as_bytes()[..host.len()].eq_ignore_ascii_case(host.as_bytes())
                    && n.get(host.len() + 1..)
                        .is_some_and(|p| p.parse::<u16>() == Ok(port))
            })
        }
        let names = [
            "example.test",
            "Example.Test:5070",
            "127.0.0.1:5060",
            "127.0.0.1",
            "[::1]:5061",
            "[::1]",
            "a:b:7",
            "host:+80",
            "host:65536",
            "host:",
            "x:0",
        ];
        let mut identities = Identities::default();
        for name in names {
            identities.add(name.to_owned());
        }
        identities.add("127.0.0.1".to_owned());
        assert_eq!(identities.names.len(), names.len());
        let hosts = [
            "example.test",
            "EXAMPLE.TEST",
            "127.0.0.1",
            "127.0.0.2",
            "[::1]",
            "[",
            "[:",
            "a",
            "a:b",
            "A:B",
            "host",
            "x",
            "",
            "127.0.0",
            "ü",
        ];
        let ports = [0, 1, 7, 80, 5060, 5061, 5070, 65535];
        for host in hosts {
            for port in ports {
                assert_eq!(
                    identities.contains_with_port(host, port),
                    parsing(&names, host, port),
                    "{host}:{port}"
                );
            }
        }
    }

    #[test]
    fn tags_are_both_numbers_in_hex() {
        for (high, low) in [(0, 0), (0xffff_ffff, 1), (0x1234_abcd, u64::MAX), (9, 0x10)] {
            assert_eq!(
                TagBuf::default().write(high, low),
                format!("{high:x}{low:x}")
            );
        }
    }

    /// A loopback UDP receiver as the transports make one.
    async fn udp_receiver() -> UdpReceiver {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let reader = socket2::SockRef::from(&socket).try_clone().unwrap();
        UdpReceiver::new(socket, reader.into(), local, 1024)
    }

    #[tokio::test]
    async fn udp_polls_start_at_first_and_find_every_ready_socket() {
        let udp = vec![udp_receiver().await, udp_receiver().await];
        let mut wakes: Vec<quiet::QuietWake> =
            udp.iter().map(|_| quiet::QuietWake::new()).collect();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for r in &udp {
            client.send_to(b"OPTIONS", r.local_addr()).unwrap();
        }
        // Both readable (bounded wait for the reactor to see each).
        for r in &udp {
            tokio::time::timeout(
                Duration::from_secs(5),
                std::future::poll_fn(|cx| r.poll_ready(cx)),
            )
            .await
            .expect("readable in time")
            .unwrap();
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let index = |p: std::task::Poll<(usize, std::io::Result<()>)>| match p {
            std::task::Poll::Ready((i, Ok(()))) => Some(i),
            _ => None,
        };
        assert_eq!(index(poll_udp(&udp, &mut wakes, 0, &mut cx)), Some(0));
        assert_eq!(index(poll_udp(&udp, &mut wakes, 1, &mut cx)), Some(1));
        assert_eq!(index(poll_udp(&udp, &mut wakes, 2, &mut cx)), Some(0));
        // Reading the first empties it: the second is found from either start.
        let mut udp = udp;
        let mut read = 0;
        udp[0].read(|_| read += 1);
        assert_eq!(read, 1);
        assert_eq!(index(poll_udp(&udp, &mut wakes, 0, &mut cx)), Some(1));
        udp[1].read(|_| read += 1);
        assert_eq!(read, 2);
        assert!(poll_udp(&udp, &mut wakes, 0, &mut cx).is_pending());
    }

    #[test]
    fn timers_round_up_to_the_grid() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(on_timer_grid(origin, origin), origin);
        assert_eq!(on_timer_grid(origin + ms(1), origin), origin + ms(10));
        assert_eq!(on_timer_grid(origin + ms(10), origin), origin + ms(10));
        assert_eq!(
            on_timer_grid(origin + ms(10) + Duration::from_nanos(1), origin),
            origin + ms(20)
        );
        assert_eq!(
            on_timer_grid(origin + ms(32_004), origin),
            origin + ms(32_010)
        );
        // A deadline from before the grid started is due at once.
        let later = origin + ms(500);
        assert_eq!(on_timer_grid(origin, later), later);
    }
}
