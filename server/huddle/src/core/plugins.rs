//! The core's side of the plugin host (`crate::plugins` is the plugins' side): which requests
//! go to a plugin, the transactions handed to plugins, what plugins ask of the core, the
//! requests plugins send, and registration events. Everything here runs in the core task and
//! never waits for a plugin: requests are offered to a plugin's mailbox with `try_request`
//! (full: 503 with `Retry-After`), and plugins talk back through the command channel the
//! core's select loop drains.
//!
//! # Routing
//!
//! After validation, a request whose Request-URI names this server, that carries no Route
//! beyond our own, and that matches a plugin's claim goes to that plugin (REGISTER for our
//! domain stays with the registrar). Out-of-dialog requests from a local user are
//! authenticated first, exactly as the proxy does (407), and the plugin learns the user, unless
//! a claim open to guests matches and the request carries no credentials: then the plugin gets
//! it with no user, as it gets callers from other domains (a public conference room). The
//! plugin gets a transaction id mapped to the server transaction; its responses pass through
//! the transaction layer, which absorbs retransmissions. A CANCEL of a plugin's INVITE is
//! answered 200 here and delivered with the INVITE's transaction id as `related`; an ACK for
//! a plugin's 2xx (one that names the INVITE's transaction, or any ACK whose Request-URI the
//! plugin claims for INVITE) is delivered without a transaction.
//!
//! A plugin may *retarget* an out-of-dialog request it has not answered finally (ABI 1.4,
//! `HostCommand::Retarget`): its transaction id is retired, and the request, with the new
//! Request-URI and otherwise unchanged, is routed again as above to whichever plugin claims
//! it, under a new transaction id, with the same caller (authenticated user or none) and
//! Record-Route values; the server transaction stays the same, so a later CANCEL reaches the
//! new owner. The host answers itself when that cannot be done: 404 when no claim matches the
//! new URI (or it does not name us), 482 after [`MAX_RETARGETS`], 487 when a CANCEL came
//! meanwhile, 407 when the new claim is closed to guests and the caller (a local From) did not
//! authenticate.
//!
//! A dialog-creating request that arrived over a connection (a browser's WebSocket) is handed
//! over with two Record-Route values naming this server, the second carrying the connection's
//! flow token, as the proxy would add them: a plugin that keeps the Record-Route set as its
//! route set (RFC 3261 §12.1.1) then reaches that connection with its in-dialog requests
//! (a NOTIFY to a browser whose Contact is `*.invalid`).
//!
//! # Requests plugins send
//!
//! Routed like the proxy routes: a flow token or remaining Route first, else the location
//! service for a local user (every binding, in parallel), else the Request-URI (a plugin is
//! trusted: the relay rule for foreign domains does not apply). The host adds its Via (and
//! Max-Forwards if missing) and runs one client transaction per target. The plugin gets the
//! provisional responses (not 100) and exactly one final response: the first 2xx, else the
//! best failure (RFC 3261 §16.7), else one the host makes up (408 on timeout, 503 on a
//! transport failure, 480/404/403 when there is nowhere to send it), always with the host's
//! Via removed.
//!
//! A plugin that tracks delivery per device (the messaging store) pins a request to one
//! binding with a [`BINDING_HEADER`](crate::plugins::BINDING_HEADER) naming the binding's key under `location/`
//! (`BindingRecord::key`): the host sends it to that binding only (its flow for a WebSocket or
//! TCP client), strips the header, and answers 480 itself when the binding is gone.
//!
//! A plugin that only cares whether a request failed (the presence agent's NOTIFYs, thousands
//! per change) sends it with `Huddle-Report: failures` ([`REPORT_HEADER`](crate::plugins::REPORT_HEADER)): the host strips it
//! and, when the request succeeds, hands the plugin no response (its request id is simply
//! retired); a failure is delivered as usual. That saves a response build, a hand-off to the
//! plugin's thread and a parse per successful request.
//!
//! A plugin that answers its caller `200 OK` as soon as the request it sends on succeeds (the
//! messaging store delivering to an online device) names the caller's transaction in an
//! [`ANSWER_HEADER`](crate::plugins::ANSWER_HEADER) (ABI 1.6, `huddle_sdk::abi::HUDDLE_ANSWER_HEADER`): the host strips it and,
//! on the first 2xx, answers that transaction `200 OK` itself when the plugin has not answered
//! it finally yet (never an INVITE). The caller's answer then costs no round trip through the
//! plugin's thread (a hand-off there, a `respond` and a hand-off back). The 2xx is still
//! delivered, but without urgency: it waits in the plugin's mailbox for the next job that
//! wakes the plugin's thread, at most [`UNHURRIED_DEADLINE`] (a sleeping thread is woken for
//! it then), so an online message costs the plugin's thread one wake-up instead of two.
//!
//! # Registration events
//!
//! Plugins that require `REGISTRATION_EVENTS` get `online` when an address-of-record gains its
//! first binding, `offline` when it loses its last (unregister, expiry, a closed connection),
//! and `updated` when the number of its bindings changes in between. Bindings restored from
//! the store at start-up produce no events (a plugin reads `location` at `init` instead).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use huddle_sdk::claims::RouteKey;
use huddle_sdk::{
    Error, RegistrationEvent, RegistrationKind, RequestId, RequestInfo, TransactionId,
};
use huddle_sip::build::{Forward, ResponseBuilder};
use huddle_sip::idmap::IdMap;
use huddle_sip::message::HeaderName;
use huddle_sip::transaction::{ClientKey, ServerKey};
use huddle_sip::uri::SipUri;
use huddle_sip::{Message, Method};

use super::proxy::{best_response_rank, dialog_creating, Target};
use super::{Core, Peer, Role};
use crate::plugins::mailbox::Job;
use crate::plugins::services::OpenTxn;
use crate::plugins::{CorePlugins, HostCommand, PluginHandle, SendControl};
use crate::transport::Transport;

/// How long a 2xx the host answered for (module docs) may wait in a plugin's mailbox for
/// another job to wake the plugin's thread before that thread is woken for it.
pub(crate) const UNHURRIED_DEADLINE: Duration = Duration::from_millis(20);

/// `Retry-After` (seconds) when a plugin's queue is full.
const QUEUE_FULL_RETRY_AFTER: &str = "1";
/// `Retry-After` (seconds) when a plugin said it is busy.
const BUSY_RETRY_AFTER: &str = "5";

/// How many times one request may be retargeted (ABI 1.4); one more is answered `482`.
pub(crate) const MAX_RETARGETS: u8 = 3;

/// A server transaction handed to a plugin, until the transaction layer forgets it.
#[derive(Debug)]
struct PluginTxn {
    plugin: usize,
    key: ServerKey,
    /// Shared with the plugin's job, and with the host's answers made for the plugin.
    request: Arc<Message>,
    from: Peer,
    /// Who the plugin was told the caller is (kept for a retarget).
    auth_user: Option<String>,
    /// Retargets so far.
    retargets: u8,
    /// A CANCEL for it arrived (a retarget after that is answered `487`).
    cancelled: bool,
}

/// One client transaction of a plugin's request.
#[derive(Debug)]
struct OutBranch {
    key: ClientKey,
    final_status: Option<u16>,
    final_response: Option<Message>,
    live: bool,
}

/// A request a plugin sent, possibly forked to several bindings.
#[derive(Debug)]
struct Outgoing {
    plugin: usize,
    id: RequestId,
    request: Message,
    invite: bool,
    branches: Vec<OutBranch>,
    final_sent: bool,
    /// `Huddle-Report: failures`: a 2xx is not delivered.
    failures_only: bool,
    /// `Huddle-Answer`: the plugin's transaction the host answers `200 OK` on a 2xx.
    answer: Option<u64>,
}

/// The plugin host's state inside the core.
#[derive(Debug)]
pub struct PluginRouting {
    handles: Vec<PluginHandle>,
    txns: IdMap<u64, PluginTxn>,
    by_key: IdMap<ServerKey, u64>,
    next_txn: u64,
    outgoing: IdMap<u64, Outgoing>,
    branches: IdMap<ClientKey, (u64, usize)>,
    next_out: u64,
    /// Plugins whose thread sleeps with an unhurried job queued, and when the first of them
    /// is to be woken anyway ([`UNHURRIED_DEADLINE`]).
    unhurried: Vec<usize>,
    unhurried_due: Option<Instant>,
}

impl PluginRouting {
    /// Splits the host's core end into routing state and the command receiver.
    pub(super) fn new(
        plugins: CorePlugins,
    ) -> (
        PluginRouting,
        tokio::sync::mpsc::Receiver<HostCommand>,
        tokio::sync::mpsc::Sender<HostCommand>,
    ) {
        let CorePlugins {
            handles,
            commands,
            _commands_tx,
        } = plugins;
        (
            PluginRouting {
                handles,
                txns: IdMap::default(),
                by_key: IdMap::default(),
                next_txn: 0,
                outgoing: IdMap::default(),
                branches: IdMap::default(),
                next_out: 0,
                unhurried: Vec::new(),
                unhurried_due: None,
            },
            commands,
            _commands_tx,
        )
    }

    fn deliver(&self, plugin: usize, job: Job) -> bool {
        self.handles
            .get(plugin)
            .is_some_and(|h| h.shared.mailbox.push(job))
    }

    /// Queues `job` for `plugin` without waking its thread; owes that thread a wake-up by
    /// [`UNHURRIED_DEADLINE`] from `now` when it sleeps.
    fn deliver_unhurried(&mut self, plugin: usize, job: Job, now: Instant) {
        let Some(handle) = self.handles.get(plugin) else {
            return;
        };
        if handle.shared.mailbox.push_unhurried(job) == Some(true) {
            if !self.unhurried.contains(&plugin) {
                self.unhurried.push(plugin);
            }
            self.unhurried_due.get_or_insert(now + UNHURRIED_DEADLINE);
        }
    }

    fn name(&self, plugin: usize) -> &str {
        self.handles.get(plugin).map_or("?", PluginHandle::name)
    }
}

fn sdk_transport(t: Transport) -> huddle_sdk::Transport {
    match t {
        Transport::Udp => huddle_sdk::Transport::Udp,
        Transport::Tcp => huddle_sdk::Transport::Tcp,
        Transport::Tls => huddle_sdk::Transport::Tls,
        Transport::Ws => huddle_sdk::Transport::Ws,
        Transport::Wss => huddle_sdk::Transport::Wss,
    }
}

fn info_for(from: &Peer, auth_user: Option<String>, related: Option<u64>) -> RequestInfo {
    RequestInfo {
        transport: sdk_transport(from.transport),
        source: Some(from.remote),
        auth_user,
        related: related.map(TransactionId),
    }
}

fn in_dialog(msg: &Message) -> bool {
    msg.to_tag().is_some()
}

impl Core {
    /// The plugin that claims `msg` (routed as if its method were `as_method`, for ACKs), if
    /// it is a request for us with no Route beyond our own.
    pub(super) fn plugin_for(&self, msg: &Message, as_method: Option<&str>) -> Option<usize> {
        let key = self.plugin_route_key(msg)?;
        // REGISTER, ACK and CANCEL cannot be claimed, not even by a claim that names no
        // method: a stray CANCEL (one matching no transaction) stays with the proxy.
        if as_method.is_none() && matches!(key.method, "REGISTER" | "ACK" | "CANCEL") {
            return None;
        }
        let method = as_method.unwrap_or(key.method);
        self.plugins.handles.iter().position(|h| {
            h.claims
                .iter()
                .any(|c| c.matches(method, key.event, key.user))
        })
    }

    /// The route key of `msg` when plugins could take it: plugins are loaded, the Request-URI
    /// names us and no Route goes beyond our own.
    fn plugin_route_key<'m>(&self, msg: &'m Message) -> Option<RouteKey<'m>> {
        if self.plugins.handles.is_empty() {
            return None;
        }
        let ruri = msg.request_sip_uri()?.ok()?;
        if !self.is_local(&ruri) {
            return None;
        }
        let (popped, token_peer) = self.our_routes(msg);
        if token_peer.is_some() || msg.header_list(&HeaderName::Route).nth(popped).is_some() {
            return None;
        }
        RouteKey::of(msg)
    }

    /// For a request for us without an Event header whose method and Request-URI some plugin
    /// claims only together with Event packages (SUBSCRIBE for `presence`): those packages,
    /// for the `489 Bad Event` the core answers with them as `Allow-Events`. The Event header
    /// is mandatory in SUBSCRIBE and NOTIFY (RFC 6665 §8.2.1) and PUBLISH (RFC 3903 §6
    /// answers a missing one with 489, as Kamailio's presence module does for both), and
    /// SIPml5 leaves it out unless the application adds it (SIPML5.md §6–7): without this
    /// the request would go to the proxy and on to the user's own devices, which answer `481`
    /// (SIPml5) or nothing useful. `None` when a plugin claims the request as it is, or no
    /// claim names a package for it (then it is routed as before).
    pub(super) fn missing_event_packages(&self, msg: &Message) -> Option<String> {
        // Cheap tests first: this runs for every request no plugin takes (INVITE, MESSAGE…).
        let method = msg.method()?.as_str();
        let packages_for_method = self.plugins.handles.iter().any(|h| {
            h.claims
                .iter()
                .any(|c| c.event_package().is_some() && c.method_name().is_none_or(|m| m == method))
        });
        if !packages_for_method || msg.header(&HeaderName::Event).is_some() {
            return None;
        }
        let key = self.plugin_route_key(msg)?;
        if key.event.is_some() || matches!(key.method, "REGISTER" | "ACK" | "CANCEL") {
            return None;
        }
        let claims = || self.plugins.handles.iter().flat_map(|h| h.claims.iter());
        if claims().any(|c| c.matches(key.method, None, key.user)) {
            return None;
        }
        let mut packages: Vec<&str> = claims()
            .filter_map(|c| {
                c.event_package()
                    .filter(|p| c.matches(key.method, Some(p), key.user))
            })
            .collect();
        packages.sort_unstable_by_key(|p| p.to_ascii_lowercase());
        packages.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        (!packages.is_empty()).then(|| packages.join(", "))
    }

    /// Whether plugin `index` takes `msg` without authentication: a claim open to guests
    /// matches it and it carries no credentials (a caller who sends some is checked, so that a
    /// member reaches the plugin as themselves).
    fn admits_guest(&self, index: usize, msg: &Message) -> bool {
        let Some(key) = RouteKey::of(msg) else {
            return false;
        };
        msg.header(&HeaderName::ProxyAuthorization).is_none()
            && self.plugins.handles[index]
                .claims
                .iter()
                .any(|c| c.admits_guests() && c.matches(key.method, key.event, key.user))
    }

    /// Hands a claimed request to plugin `index` (see the module docs).
    pub(super) fn hand_to_plugin(
        &mut self,
        index: usize,
        key: ServerKey,
        msg: Message,
        from: Peer,
    ) {
        let auth_user = if in_dialog(&msg) {
            None
        } else {
            match self.caller_for(index, key, &msg, &from, None) {
                Some(user) => user,
                None => return,
            }
        };
        self.offer_to_plugin(index, key, msg, from, auth_user, 0);
    }

    /// Who the caller of out-of-dialog `msg` is for plugin `index`: `known` when the host
    /// authenticated them already, else the digest user for a local From that no claim open
    /// to guests admits (a 407 when the request carries no credentials: `None`, answered),
    /// else nobody (a guest, a caller from another domain).
    fn caller_for(
        &mut self,
        index: usize,
        key: ServerKey,
        msg: &Message,
        from: &Peer,
        known: Option<String>,
    ) -> Option<Option<String>> {
        if known.is_some() {
            return Some(known);
        }
        let from_local = msg
            .from_header()
            .ok()
            .and_then(|f| SipUri::parse(f.uri).ok())
            .is_some_and(|u| self.is_local(&u));
        if from_local && !self.admits_guest(index, msg) {
            return self.authenticate(key, msg, from, Role::Proxy).map(Some);
        }
        Some(None)
    }

    /// Gives `msg` (server transaction `key`) to plugin `index` as a new plugin transaction;
    /// `retargets` says how often it was retargeted before (then the 100 Trying went already).
    fn offer_to_plugin(
        &mut self,
        index: usize,
        key: ServerKey,
        msg: Message,
        from: Peer,
        auth_user: Option<String>,
        retargets: u8,
    ) {
        let dialog = in_dialog(&msg);
        let shared = self.plugins.handles[index].shared.clone();
        if shared.is_disabled() {
            self.respond(
                key,
                &msg,
                &from,
                503,
                "Service Unavailable - Plugin Disabled",
                &[],
            );
            return;
        }
        let (Some(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return;
        };
        let open = OpenTxn {
            call_id: call_id.to_owned(),
            cseq: cseq.seq,
            out_of_dialog: !dialog,
        };
        let method = msg.method().cloned().unwrap_or(Method::Options);
        // Shared by the plugin's job (its index goes across the ABI, 1.9) and the transaction.
        let msg = Arc::new(msg);
        let request = if dialog_creating(&method) && !dialog && from.flow.is_some() {
            let ours = self.record_route(&Peer { flow: None, ..from });
            let theirs = self.record_route(&from);
            let built = Forward::new(&msg)
                .prepend("Record-Route", &ours)
                .prepend("Record-Route", &theirs)
                .build_message();
            let Ok(built) = built else {
                // Two more header fields than the parser's limit: the plugin could not have
                // parsed it either.
                self.respond(key, &msg, &from, 500, "Server Internal Error", &[]);
                return;
            };
            Arc::new(built)
        } else {
            Arc::clone(&msg)
        };
        self.plugins.next_txn += 1;
        let txn = self.plugins.next_txn;
        crate::plugins::services::lock(&shared.open).insert(txn, open);
        let job = Job::Request {
            txn: Some(TransactionId(txn)),
            request,
            info: info_for(&from, auth_user.clone(), None),
            counted: true,
        };
        if !shared.mailbox.try_request(job) {
            shared.close_txn(txn);
            tracing::debug!(plugin = %shared.name, "plugin queue full; request answered 503");
            self.respond(
                key,
                &msg,
                &from,
                503,
                "Service Unavailable - Plugin Busy",
                &[("Retry-After", QUEUE_FULL_RETRY_AFTER)],
            );
            return;
        }
        if method == Method::Invite && retargets == 0 {
            self.respond(key, &msg, &from, 100, "Trying", &[]);
        }
        self.plugins.by_key.insert(key, txn);
        self.plugins.txns.insert(
            txn,
            PluginTxn {
                plugin: index,
                key,
                request: msg,
                from,
                auth_user,
                retargets,
                cancelled: false,
            },
        );
    }

    /// (ABI 1.4) Plugin `plugin` gave up `txn`: route its request again as if its Request-URI
    /// were `uri`, to whichever plugin claims that (see `huddle_sdk::abi`, "Retargeting").
    fn plugin_retarget(&mut self, plugin: usize, txn: u64, uri: &str) {
        if self.plugins.txns.get(&txn).map(|t| t.plugin) != Some(plugin) {
            tracing::debug!(plugin = %self.plugins.name(plugin), txn, "retarget of a transaction that ended");
            return;
        }
        let Some(t) = self.plugins.txns.remove(&txn) else {
            return;
        };
        self.plugins.by_key.remove(&t.key);
        let PluginTxn {
            key,
            request,
            from,
            auth_user,
            retargets,
            cancelled,
            ..
        } = t;
        let refuse = |core: &mut Core, status: u16, reason: &str| {
            tracing::debug!(plugin = %core.plugins.name(plugin), uri, status, "retarget answered by the host");
            core.respond(key, &request, &from, status, reason, &[]);
        };
        let target = Forward::new(&request).request_uri(uri).build_message();
        let index = target.as_ref().ok().and_then(|m| self.plugin_for(m, None));
        let (Ok(target), Some(index)) = (target, index) else {
            let (status, reason) =
                retarget_refusal(cancelled, retargets, false).unwrap_or(NOT_CLAIMED);
            return refuse(self, status, reason);
        };
        if let Some((status, reason)) = retarget_refusal(cancelled, retargets, true) {
            return refuse(self, status, reason);
        }
        let Some(auth_user) = self.caller_for(index, key, &target, &from, auth_user) else {
            return;
        };
        tracing::debug!(
            from = %self.plugins.name(plugin),
            to = %self.plugins.name(index),
            uri,
            "request retargeted"
        );
        self.offer_to_plugin(index, key, target, from, auth_user, retargets + 1);
    }

    /// A CANCEL for server transaction `invite`: delivered to the plugin that has it (the
    /// CANCEL itself is answered already). False when the INVITE is not a plugin's.
    pub(super) fn plugin_cancel(&mut self, invite: ServerKey, msg: &Message, from: &Peer) -> bool {
        let Some(&txn) = self.plugins.by_key.get(&invite) else {
            return false;
        };
        let Some(t) = self.plugins.txns.get_mut(&txn) else {
            return false;
        };
        t.cancelled = true;
        let handle = &self.plugins.handles[t.plugin];
        let open = crate::plugins::services::lock(&handle.shared.open).contains_key(&txn);
        if open && !handle.shared.is_disabled() {
            handle.shared.mailbox.push(Job::Request {
                txn: None,
                request: Arc::new(msg.clone()),
                info: info_for(from, None, Some(txn)),
                counted: false,
            });
        }
        true
    }

    /// An ACK outside any transaction: to the plugin whose INVITE it acknowledges (by its
    /// transaction, or by the plugin's INVITE claims). False when no plugin takes it.
    pub(super) fn plugin_ack(
        &mut self,
        invite: Option<ServerKey>,
        msg: &Message,
        from: &Peer,
    ) -> bool {
        let plugin = match invite {
            Some(key) => self
                .plugins
                .by_key
                .get(&key)
                .and_then(|txn| self.plugins.txns.get(txn))
                .map(|t| t.plugin),
            None => self.plugin_for(msg, Some(Method::Invite.as_str())),
        };
        let Some(plugin) = plugin else {
            return false;
        };
        if !self.plugins.handles[plugin].shared.is_disabled() {
            self.plugins.deliver(
                plugin,
                Job::Request {
                    txn: None,
                    request: Arc::new(msg.clone()),
                    info: info_for(from, None, None),
                    counted: false,
                },
            );
        }
        true
    }

    /// The transaction layer forgot a server transaction: forget its plugin mapping too.
    pub(super) fn plugin_server_terminated(&mut self, key: &ServerKey) {
        let Some(txn) = self.plugins.by_key.remove(key) else {
            return;
        };
        if let Some(t) = self.plugins.txns.remove(&txn) {
            let handle = &self.plugins.handles[t.plugin];
            if handle.shared.close_txn(txn) {
                tracing::warn!(
                    plugin = %handle.name(),
                    method = %t.request.method().map_or("?", Method::as_str),
                    "the plugin never answered a request; its transaction ended"
                );
            }
        }
    }

    /// One command from a plugin instance.
    pub(super) fn on_plugin_command(&mut self, command: HostCommand, now: Instant) {
        match command {
            HostCommand::Respond {
                plugin,
                txn,
                response,
            } => {
                let Some(t) = self.plugins.txns.get(&txn).filter(|t| t.plugin == plugin) else {
                    tracing::debug!(plugin = %self.plugins.name(plugin), txn, "response for a transaction that ended");
                    return;
                };
                match self.txn.respond_message(t.key, &response, now) {
                    Ok(()) => self.count_final(&response),
                    Err(e) => {
                        tracing::debug!(plugin = %self.plugins.name(plugin), error = %e, "plugin response not sent");
                    }
                }
            }
            HostCommand::Answer {
                plugin,
                txn,
                answer,
            } => answer.with_parts(|status, reason, extra| {
                self.plugin_answer(plugin, txn, status, reason, extra);
            }),
            HostCommand::Fail { plugin, txn, error } => {
                let (status, reason, extra): (u16, &str, &[(&str, &str)]) = match error {
                    Error::Busy => (
                        503,
                        "Service Unavailable - Plugin Busy",
                        &[("Retry-After", BUSY_RETRY_AFTER)],
                    ),
                    _ => (500, "Server Internal Error - Plugin Failed", &[]),
                };
                tracing::debug!(plugin = %self.plugins.name(plugin), status, "answering for the plugin");
                self.plugin_answer(plugin, txn, status, reason, extra);
            }
            HostCommand::Disabled { plugin, txn } => {
                tracing::debug!(plugin = %self.plugins.name(plugin), "answering 503 for the disabled plugin");
                self.plugin_answer(
                    plugin,
                    txn,
                    503,
                    "Service Unavailable - Plugin Disabled",
                    &[],
                );
            }
            HostCommand::Send {
                plugin,
                id,
                request,
                control,
            } => self.plugin_send(plugin, id, request, control, now),
            HostCommand::Retarget { plugin, txn, uri } => self.plugin_retarget(plugin, txn, &uri),
        }
    }

    /// Answers a plugin's transaction on its behalf.
    fn plugin_answer(
        &mut self,
        plugin: usize,
        txn: u64,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let Some(t) = self.plugins.txns.get(&txn).filter(|t| t.plugin == plugin) else {
            tracing::debug!(plugin = %self.plugins.name(plugin), txn, status, "answer for a transaction that ended");
            return;
        };
        let (key, request, from) = (t.key, t.request.clone(), t.from);
        self.respond(key, &request, &from, status, reason, extra);
    }

    /// Routes and sends a request a plugin built. `control`: its control fields, when they
    /// were taken out of it already (`None`: read them from its fields and drop those).
    fn plugin_send(
        &mut self,
        plugin: usize,
        id: RequestId,
        request: Message,
        control: Option<SendControl>,
        now: Instant,
    ) {
        let dialog = in_dialog(&request);
        let (popped, token_peer) = self.our_routes(&request);
        let (control, strip) = match control {
            Some(control) => (control, false),
            None => {
                let control = SendControl::of(&request);
                let strip = control.any();
                (control, strip)
            }
        };
        let selected = match control.binding.as_deref() {
            Some(key) => self.binding_target(key, now),
            None => self.select_targets(&request, dialog, popped, token_peer, now, true),
        };
        let targets = match selected {
            Ok(targets) => targets,
            Err((status, reason)) => {
                self.plugin_synthetic(plugin, id, &request, status, reason);
                return;
            }
        };
        let invite = request.method() == Some(&Method::Invite);
        let max_forwards = request.max_forwards().is_none().then_some(70);
        let mut out = Outgoing {
            plugin,
            id,
            request,
            invite,
            branches: Vec::with_capacity(targets.len()),
            final_sent: false,
            failures_only: control.failures_only,
            answer: control.answer,
        };
        for target in targets {
            let peer = target.peer;
            let Some(local) = self.sending_from(&peer) else {
                continue;
            };
            let loop_prefix = self.loop_prefix(&out.request);
            let via = self.via_with_branch(peer.transport, local, &loop_prefix);
            let uri = target.request_uri.as_deref();
            // Written once, the fields copied as one block, unless something in them is to be
            // removed (control fields in a request given as bytes, our own Route entries) or
            // the message is not one `relayed` writes: then `Forward` edits it field by field.
            let relayed = (!strip && popped == 0)
                .then(|| out.request.relayed(&via, uri, max_forwards))
                .flatten();
            let message = match relayed {
                Some(message) => message,
                None => {
                    let mut fwd = Forward::new(&out.request)
                        .prepend("Via", &via)
                        .drop_routes(popped);
                    if strip {
                        for name in control.names() {
                            fwd = fwd.drop_header(name.clone());
                        }
                    }
                    if let Some(n) = max_forwards {
                        fwd = fwd.max_forwards(n);
                    }
                    if let Some(uri) = uri {
                        fwd = fwd.request_uri(uri);
                    }
                    let Ok(message) = fwd.build_message() else {
                        continue;
                    };
                    message
                }
            };
            match self
                .txn
                .send_request(message, peer, peer.transport.is_reliable(), now)
            {
                Ok(key) => out.branches.push(OutBranch {
                    key,
                    final_status: None,
                    final_response: None,
                    live: true,
                }),
                Err(e) => tracing::debug!(error = %e, "plugin request branch not started"),
            }
        }
        if out.branches.is_empty() {
            let request = out.request;
            self.plugin_synthetic(
                plugin,
                id,
                &request,
                480,
                "Temporarily Unavailable - No Reachable Contact",
            );
            return;
        }
        self.plugins.next_out += 1;
        let ctx = self.plugins.next_out;
        for (i, b) in out.branches.iter().enumerate() {
            self.plugins.branches.insert(b.key, (ctx, i));
        }
        self.plugins.outgoing.insert(ctx, out);
    }

    /// The one live binding whose `location/` key is `key` (see [`BINDING_HEADER`](crate::plugins::BINDING_HEADER)).
    fn binding_target(&self, key: &str, now: Instant) -> Result<Vec<Target>, (u16, &'static str)> {
        let aor = key.split('/').next().unwrap_or_default();
        self.location
            .lookup(aor, now)
            .find(|b| b.store_key(aor) == key)
            .map(|b| {
                let peer = Peer::reaching(b.reach);
                vec![Target {
                    peer,
                    request_uri: Some(b.contact.clone()),
                }]
            })
            .ok_or((480, "Temporarily Unavailable - Binding Gone"))
    }

    /// Delivers a final response the host made up for a plugin's request.
    fn plugin_synthetic(
        &mut self,
        plugin: usize,
        id: RequestId,
        request: &Message,
        status: u16,
        reason: &str,
    ) {
        let tag = self.new_tag();
        let bytes = ResponseBuilder::new(request, status, reason)
            .to_tag(&tag)
            .header("Server", concat!("Huddle/", env!("CARGO_PKG_VERSION")))
            .build();
        self.plugins.deliver(
            plugin,
            Job::Response {
                id,
                bytes,
                is_final: true,
            },
        );
    }

    /// Whether a client transaction carries a request a plugin sent.
    pub(super) fn is_plugin_branch(&self, key: &ClientKey) -> bool {
        self.plugins.branches.contains_key(key)
    }

    /// A response (or, with `None`, `failure` for a timeout or transport error) on a client
    /// transaction of a plugin's request.
    pub(super) fn plugin_branch_response(
        &mut self,
        key: ClientKey,
        response: Option<Message>,
        failure: u16,
        now: Instant,
    ) {
        let Some(&(ctx_id, index)) = self.plugins.branches.get(&key) else {
            return;
        };
        let Some(ctx) = self.plugins.outgoing.get_mut(&ctx_id) else {
            return;
        };
        let status = response
            .as_ref()
            .and_then(Message::status)
            .unwrap_or(failure);
        let Some(branch) = ctx.branches.get_mut(index) else {
            return;
        };
        if status == 100 || branch.final_status.is_some() {
            return;
        }
        let relay = |r: &Message| Forward::new(r).drop_top_via().build();
        if status < 200 {
            if !ctx.final_sent {
                if let Some(r) = response.as_ref() {
                    let job = Job::Response {
                        id: ctx.id,
                        bytes: relay(r),
                        is_final: false,
                    };
                    let plugin = ctx.plugin;
                    self.plugins.deliver(plugin, job);
                }
            }
            return;
        }
        branch.final_status = Some(status);
        let mut cancel = Vec::new();
        let mut deliver: Option<(usize, RequestId, Option<Bytes>, u16)> = None;
        let mut answer = None;
        if (200..300).contains(&status) {
            if !ctx.final_sent {
                ctx.final_sent = true;
                answer = ctx.answer.map(|txn| (ctx.plugin, txn));
                if ctx.invite {
                    cancel = pending(ctx);
                }
                if ctx.failures_only {
                    // Retired without a response: the plugin's count of requests in flight
                    // goes down here instead of on its thread.
                    if let Some(h) = self.plugins.handles.get(ctx.plugin) {
                        h.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                } else {
                    deliver = Some((ctx.plugin, ctx.id, response.as_ref().map(relay), status));
                }
            }
        } else {
            branch.final_response = response;
            if status >= 600 && ctx.invite && !ctx.final_sent {
                cancel = pending(ctx);
            }
            if !ctx.final_sent && ctx.branches.iter().all(|b| b.final_status.is_some()) {
                ctx.final_sent = true;
                let best = ctx
                    .branches
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| b.final_status.map(|s| (i, b, s)))
                    .min_by_key(|&(i, _, s)| best_response_rank(s, i))
                    .map(|(_, b, s)| (b.final_response.as_ref().map(relay), s));
                if let Some((bytes, s)) = best {
                    deliver = Some((ctx.plugin, ctx.id, bytes, s));
                }
            }
        }
        // The request is needed only for a response the host makes up (rare): cloning it for
        // every final response cost an allocation and a copy of its header table per NOTIFY.
        let synthetic = deliver
            .as_ref()
            .is_some_and(|(_, _, bytes, _)| bytes.is_none())
            .then(|| ctx.request.clone());
        for other in cancel {
            let _ = self.txn.cancel(other, now);
        }
        let answered = answer.is_some_and(|(plugin, txn)| self.answer_for_plugin(plugin, txn));
        if let Some((plugin, id, bytes, status)) = deliver {
            match bytes {
                Some(bytes) => {
                    let job = Job::Response {
                        id,
                        bytes,
                        is_final: true,
                    };
                    if answered {
                        self.plugins.deliver_unhurried(plugin, job, now);
                    } else {
                        self.plugins.deliver(plugin, job);
                    }
                }
                None => {
                    let reason = match status {
                        408 => "Request Timeout",
                        503 => "Service Unavailable - Transport Failure",
                        _ => "Server Error",
                    };
                    if let Some(request) = synthetic {
                        self.plugin_synthetic(plugin, id, &request, status, reason);
                    }
                }
            }
        }
    }

    /// A request plugin `plugin` sent with [`ANSWER_HEADER`](crate::plugins::ANSWER_HEADER) naming `txn` succeeded: answer
    /// `txn` `200 OK` for the plugin unless it is not the plugin's, is an INVITE, or was
    /// answered finally already (then nothing: the plugin answers as it sees fit). True when
    /// answered.
    fn answer_for_plugin(&mut self, plugin: usize, txn: u64) -> bool {
        // A 200 to an INVITE needs the plugin's Contact and session: never made up here.
        let ours = self
            .plugins
            .txns
            .get(&txn)
            .is_some_and(|t| t.plugin == plugin && t.request.method() != Some(&Method::Invite));
        if !ours {
            return false;
        }
        let Some(handle) = self.plugins.handles.get(plugin) else {
            return false;
        };
        // Closed here, as `respond` closes it on the plugin's side: whichever comes first
        // answers, the other is told the transaction is not open.
        if !handle.shared.close_txn(txn) {
            return false;
        }
        // Taken out for the call and put back: the core needs it until the transaction layer
        // forgets the transaction (and a clone would copy its header table).
        let Some(t) = self.plugins.txns.remove(&txn) else {
            return false;
        };
        self.respond(t.key, &t.request, &t.from, 200, "OK", &[]);
        self.plugins.txns.insert(txn, t);
        true
    }

    /// When a plugin's thread that sleeps with an unhurried job queued is to be woken.
    pub(super) fn plugin_poll_timeout(&self) -> Option<Instant> {
        self.plugins.unhurried_due
    }

    /// Wakes the plugin threads still sleeping with unhurried jobs once their deadline passed.
    pub(super) fn plugin_handle_timeout(&mut self, now: Instant) {
        if self.plugins.unhurried_due.is_none_or(|due| due > now) {
            return;
        }
        self.plugins.unhurried_due = None;
        for plugin in std::mem::take(&mut self.plugins.unhurried) {
            if let Some(handle) = self.plugins.handles.get(plugin) {
                handle.shared.mailbox.wake_if_waiting();
            }
        }
    }

    /// The transaction layer forgot a client transaction: forget the plugin's branch, and the
    /// whole request once every branch is gone.
    pub(super) fn plugin_client_terminated(&mut self, key: &ClientKey) {
        let Some((ctx_id, index)) = self.plugins.branches.remove(key) else {
            return;
        };
        let Some(ctx) = self.plugins.outgoing.get_mut(&ctx_id) else {
            return;
        };
        if let Some(b) = ctx.branches.get_mut(index) {
            b.live = false;
        }
        if ctx.branches.iter().any(|b| b.live) {
            return;
        }
        let Some(ctx) = self.plugins.outgoing.remove(&ctx_id) else {
            return;
        };
        if !ctx.final_sent {
            // Every transaction ends with a final response or a timeout first; this is only
            // the safety net for the plugin's "exactly one final response".
            self.plugin_synthetic(ctx.plugin, ctx.id, &ctx.request, 408, "Request Timeout");
        }
    }

    /// Whether any plugin takes registration events (the keys they carry are computed only
    /// then).
    pub(super) fn registration_events_wanted(&self) -> bool {
        self.plugins
            .handles
            .iter()
            .any(|h| h.wants_registrations() && !h.shared.is_disabled())
    }

    /// Registration events for `aor` (without `sip:`), whose binding keys were `before` (sorted,
    /// as [`crate::registrar::Location::binding_keys`] gives them).
    pub(super) fn registration_changed(&mut self, aor: &str, before: &[String]) {
        let after = self.location.binding_keys(aor);
        let kind = match (before.len(), after.len()) {
            (0, 0) => return,
            (0, _) => RegistrationKind::Online,
            (_, 0) => RegistrationKind::Offline,
            // A refresh changes nothing; a binding replaced by another (a reconnected tab, a
            // new flow) is an update even though the count stayed.
            _ if before != after.as_slice() => RegistrationKind::Updated,
            _ => return,
        };
        self.announce_registration(aor, kind, after);
    }

    fn announce_registration(&mut self, aor: &str, kind: RegistrationKind, keys: Vec<String>) {
        let hook = match kind {
            RegistrationKind::Online => Some("user.registered"),
            RegistrationKind::Offline => Some("user.unregistered"),
            _ => None,
        };
        if let (Some(hook), true) = (hook, self.config.ops.webhooks_on()) {
            let data = serde_json::json!({ "aor": format!("sip:{aor}"), "bindings": keys.len() });
            self.config.ops.event(hook, "huddle", &data.to_string());
        }
        let mut event = None;
        for handle in &self.plugins.handles {
            if !handle.wants_registrations() || handle.shared.is_disabled() {
                continue;
            }
            let event = event
                .get_or_insert_with(|| RegistrationEvent {
                    kind,
                    aor: format!("sip:{aor}"),
                    bindings: u32::try_from(keys.len()).unwrap_or(u32::MAX),
                    binding_keys: keys.clone(),
                })
                .clone();
            if !handle.shared.mailbox.push_registration(event) {
                tracing::warn!(plugin = %handle.name(), aor, "registration event dropped: the plugin is not keeping up");
            }
        }
    }

    /// Registration events for AORs that lost bindings (a closed connection, expiry).
    pub(super) fn registrations_lost(&mut self, mut aors: Vec<String>) {
        if !self.registration_events_wanted() && !self.config.ops.webhooks_on() {
            return;
        }
        aors.sort_unstable();
        aors.dedup();
        for aor in aors {
            let keys = self.location.binding_keys(&aor);
            let kind = if keys.is_empty() {
                RegistrationKind::Offline
            } else {
                RegistrationKind::Updated
            };
            self.announce_registration(&aor, kind, keys);
        }
    }
}

/// The host's answer to a retarget whose target no plugin claims.
const NOT_CLAIMED: (u16, &str) = (404, "Not Found - Retarget Claimed By No Plugin");

/// The answer the host gives instead of handing a retargeted request on, if any: a request
/// cancelled meanwhile is over (487), one retargeted [`MAX_RETARGETS`] times already is a loop
/// (482), and one whose new Request-URI no plugin `claimed` has nowhere to go (404).
fn retarget_refusal(cancelled: bool, retargets: u8, claimed: bool) -> Option<(u16, &'static str)> {
    if cancelled {
        Some((487, "Request Terminated"))
    } else if retargets >= MAX_RETARGETS {
        Some((482, "Loop Detected - Retargeted Too Often"))
    } else if !claimed {
        Some(NOT_CLAIMED)
    } else {
        None
    }
}

/// The client transactions of `ctx` without a final response.
fn pending(ctx: &Outgoing) -> Vec<ClientKey> {
    ctx.branches
        .iter()
        .filter(|b| b.final_status.is_none())
        .map(|b| b.key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{ANSWER_HEADER, BINDING_HEADER, REPORT_HEADER};

    #[test]
    fn the_hosts_own_headers_are_found_in_any_case_and_dropped_when_forwarded() {
        let request = Message::parse(Bytes::from_static(
            b"NOTIFY sip:alice@192.0.2.1 SIP/2.0\r\n\
              From: <sip:bob@example.test>;tag=1\r\n\
              To: <sip:alice@example.test>;tag=2\r\n\
              Call-ID: c1\r\n\
              CSeq: 1 NOTIFY\r\n\
              huddle-REPORT: failures\r\n\
              HUDDLE-binding: alice@example.test/b1\r\n\
              huddle-answer: 7\r\n\
              Event: presence\r\n\
              Content-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let control = SendControl::of(&request);
        assert_eq!(control.binding.as_deref(), Some("alice@example.test/b1"));
        assert!(control.failures_only);
        assert_eq!(control.answer, Some(7));
        let mut forwarded = Forward::new(&request);
        for name in control.names() {
            forwarded = forwarded.drop_header(name.clone());
        }
        let forwarded = forwarded.build_message().unwrap();
        for name in [BINDING_HEADER, REPORT_HEADER, ANSWER_HEADER] {
            assert_eq!(forwarded.header(&HeaderName::parse(name)), None);
        }
        assert_eq!(forwarded.header(&HeaderName::Event), Some("presence"));
    }

    #[test]
    fn control_fields_taken_out_of_parts_mean_what_they_meant_as_fields() {
        let cases: &[&[(&str, &str)]] = &[
            &[("Huddle-Binding", " alice@example.test/b1\t")],
            &[("huddle-report", "FAILURES "), ("Huddle-Report", "all")],
            &[("Huddle-Report", "all"), ("Huddle-Report", "failures")],
            &[("Huddle-Answer", "12"), ("HUDDLE-ANSWER", "13")],
            &[("Huddle-Answer", "x")],
            &[("Huddle-Binding", "")],
            &[
                ("Huddle-Other", "1"),
                ("X-Huddle-Binding", "2"),
                ("Huddle-Report", ""),
            ],
            &[],
        ];
        for fields in cases {
            let mut headers = vec![
                ("From", "<sip:kit@example.test>;tag=1"),
                ("To", "<sip:alice@example.test>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 MESSAGE"),
            ];
            headers.extend_from_slice(fields);
            headers.push(("Content-Type", "text/plain"));
            let parts = huddle_sip::message::RequestParts {
                method: "MESSAGE",
                uri: "sip:alice@example.test",
                headers: &headers,
                body: b"hi",
            };
            let whole = Message::from_parts(&parts, 65_535).unwrap();
            let mut taken = SendControl::default();
            let kept =
                Message::from_parts_leaving_out(&parts, 65_535, |n, v| taken.take(n, v)).unwrap();
            assert_eq!(taken, SendControl::of(&whole), "{fields:?}");
            // The request sent is the one the fields were dropped from.
            let mut fwd = Forward::new(&whole);
            for name in taken.names() {
                fwd = fwd.drop_header(name.clone());
            }
            assert_eq!(kept.raw(), &fwd.build(), "{fields:?}");
        }
    }

    #[test]
    fn a_retarget_is_refused_when_cancelled_looping_or_unclaimed() {
        assert_eq!(retarget_refusal(false, 0, true), None);
        assert_eq!(retarget_refusal(false, MAX_RETARGETS - 1, true), None);
        assert_eq!(
            retarget_refusal(false, MAX_RETARGETS, true).map(|r| r.0),
            Some(482)
        );
        assert_eq!(retarget_refusal(false, 0, false).map(|r| r.0), Some(404));
        // A cancelled request is over, wherever it was going; a loop beats a missing claim.
        assert_eq!(retarget_refusal(true, 0, true).map(|r| r.0), Some(487));
        assert_eq!(
            retarget_refusal(true, MAX_RETARGETS, false).map(|r| r.0),
            Some(487)
        );
        assert_eq!(
            retarget_refusal(false, MAX_RETARGETS, false).map(|r| r.0),
            Some(482)
        );
    }
}
