//! The stateful proxy (RFC 3261 §16): target selection from Route headers, flow tokens and the
//! location service, parallel forking with first-2xx-wins and CANCEL of the other branches,
//! best-response selection, double Record-Route with flow tokens, and stateless relay of ACK
//! for 2xx.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use huddle_sip::build::Forward;
use huddle_sip::headers::NameAddr;
use huddle_sip::idmap::IdMap;
use huddle_sip::message::HeaderName;
use huddle_sip::transaction::{ClientKey, ServerKey};
use huddle_sip::uri::SipUri;
use huddle_sip::{Message, Method};

use super::{Core, Peer, Role};
use crate::transport::{Destination, Transport};

/// One forwarded copy of a request.
#[derive(Debug)]
struct Branch {
    key: ClientKey,
    final_status: Option<u16>,
    final_response: Option<Message>,
}

/// One proxied server transaction and its branches.
#[derive(Debug)]
struct Context {
    request: Message,
    from: Peer,
    invite: bool,
    branches: Vec<Branch>,
    final_sent: bool,
    /// RFC 3261 §16.6 step 11: when a ringing INVITE is given up.
    timer_c: Option<Instant>,
}

/// The proxy's per-transaction state, owned by the core.
#[derive(Debug, Default)]
pub struct ProxyState {
    contexts: IdMap<ServerKey, Context>,
    branches: IdMap<ClientKey, (ServerKey, usize)>,
    /// Timer C deadlines; entries whose context moved on are skipped when they fire.
    timer_c: BTreeSet<(Instant, ServerKey)>,
    /// The Record-Route values this proxy writes without a flow token, one per listening
    /// transport (see [`Core::our_routes`]); made at first use.
    flowless_routes: std::cell::OnceCell<Vec<FlowlessRoute>>,
}

/// Our own Record-Route text for a peer without a flow, kept with the UDP listener it names:
/// an in-dialog request carrying it back pops it and learns its socket without parsing it or
/// looking the listener up per request.
#[derive(Debug)]
pub(super) struct FlowlessRoute {
    transport: Transport,
    text: Box<str>,
    udp_local: Option<SocketAddr>,
}

/// Timer C: "greater than 3 minutes" (RFC 3261 §16.6 step 11).
const TIMER_C: Duration = Duration::from_secs(181);

impl ProxyState {
    /// Forgets a transaction that ended.
    pub fn terminated(&mut self, key: &huddle_sip::transaction::TransactionKey) {
        match key {
            huddle_sip::transaction::TransactionKey::Server(k) => {
                if let Some(ctx) = self.contexts.remove(k) {
                    if let Some(at) = ctx.timer_c {
                        self.timer_c.remove(&(at, *k));
                    }
                    for b in ctx.branches {
                        self.branches.remove(&b.key);
                    }
                }
            }
            huddle_sip::transaction::TransactionKey::Client(k) => {
                self.branches.remove(k);
            }
        }
    }

    /// Drops the context of a non-INVITE request once its final response went upstream: nothing
    /// after that reaches the caller (later branch responses are dropped, RFC 3261 §16.7), and
    /// the server transaction, which absorbs retransmissions for another 32 s over UDP (Timer
    /// J), does not need the request or the branch responses kept alive that long.
    fn forget_answered_non_invite(&mut self, server: ServerKey) {
        let done = self
            .contexts
            .get(&server)
            .is_some_and(|ctx| !ctx.invite && ctx.final_sent);
        if done {
            self.terminated(&huddle_sip::transaction::TransactionKey::Server(server));
        }
    }

    /// The earliest Timer C deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_c.first().map(|(t, _)| *t)
    }

    fn arm_timer_c(&mut self, key: ServerKey, now: Instant) {
        if let Some(ctx) = self.contexts.get_mut(&key) {
            if ctx.invite && !ctx.final_sent {
                if let Some(old) = ctx.timer_c {
                    self.timer_c.remove(&(old, key));
                }
                let at = now + TIMER_C;
                ctx.timer_c = Some(at);
                self.timer_c.insert((at, key));
            }
        }
    }

    /// Proxied transactions in flight.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// True when none are in flight.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }
}

/// A request's Route elements as the proxy reads them: how many name us (popped), the flow
/// token of the last of those, and the first that does not (the next hop's).
#[derive(Debug, Clone, Copy)]
struct Route<'m> {
    popped: usize,
    token_peer: Option<Peer>,
    next: Option<&'m str>,
    /// The UDP listener the last of ours names (see [`Core::routes`]).
    local: Option<SocketAddr>,
}

/// Where one branch goes.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) peer: Peer,
    pub(super) request_uri: Option<String>,
}

pub(super) fn dialog_creating(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
    )
}

fn peer_for_uri(uri: &SipUri<'_>) -> Option<Peer> {
    let transport = match uri.transport() {
        Some(t) => Transport::from_token(t)?,
        None if uri.scheme == huddle_sip::uri::Scheme::Sips => Transport::Tls,
        None => Transport::Udp,
    };
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    let port = uri.port.unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    Some(Peer {
        transport,
        flow: None,
        remote: SocketAddr::new(ip, port),
        local: None,
    })
}

impl Core {
    /// Counts the leading Route elements that name this server, and the flow token of the
    /// last one (the hop after us, RFC 5626 §5.3).
    pub(super) fn our_routes(&self, msg: &Message) -> (usize, Option<Peer>) {
        let route = self.routes(msg);
        (route.popped, route.token_peer)
    }

    /// [`Core::our_routes`], and the first Route element after ours (`header_list(Route)
    /// .nth(count)`, the next hop's), found by the same pass: splitting a Route list costs a
    /// scan per element, and the proxy asked for it again in [`Core::select_targets`].
    ///
    /// Also the UDP listener the last of ours names: we Record-Route a UDP dialog with the
    /// socket each side talks to (`Core::record_route`), so an in-dialog request leaves from
    /// the socket its next hop knows (a NAT or a phone bound to one address takes nothing
    /// else).
    fn routes<'m>(&self, msg: &'m Message) -> Route<'m> {
        let flowless = self.flowless_routes();
        let mut route = Route {
            popped: 0,
            token_peer: None,
            next: None,
            local: None,
        };
        for element in msg.header_list(&HeaderName::Route) {
            // Every in-dialog request of a dialog we Record-Routed without a flow token (all
            // of a UDP call's) carries our own text back: known without parsing it.
            let (peer, udp_local) = match flowless.iter().find(|own| *own.text == *element) {
                Some(own) => (None, own.udp_local),
                None => match self.route_to_us(element) {
                    Some((peer, named)) => (peer, named.filter(|addr| self.is_udp_listener(*addr))),
                    None => {
                        route.next = Some(element);
                        return route;
                    }
                },
            };
            route.popped += 1;
            route.token_peer = peer;
            route.local = udp_local;
        }
        route
    }

    /// True when `addr` is one of our UDP listening sockets.
    fn is_udp_listener(&self, addr: SocketAddr) -> bool {
        self.transports
            .local_addrs()
            .iter()
            .any(|spec| spec.transport == Transport::Udp && spec.addr == addr)
    }

    /// For a Route element naming this server, the connection its flow token names, if it has
    /// a valid one, and the address it names (`host:port` as an IP address, when it is one);
    /// `None` when it names someone else (or does not parse).
    fn route_to_us(&self, route: &str) -> Option<(Option<Peer>, Option<SocketAddr>)> {
        let addr = NameAddr::parse(route).ok()?;
        let uri = SipUri::parse(addr.uri).ok()?;
        if !self.is_local(&uri) {
            return None;
        }
        let named = uri
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, uri.port.unwrap_or(5060)));
        let peer = uri
            .user
            .and_then(|u| self.tokens.decode(u))
            .and_then(|flow| {
                self.transports.flow_info(flow).map(|info| Peer {
                    transport: info.transport,
                    flow: Some(flow),
                    remote: info.remote,
                    local: None,
                })
            });
        Some((peer, named))
    }

    /// What [`Core::record_route`] writes for a peer without a flow, per listening transport,
    /// kept only where [`Core::route_to_us`] reads it back as naming us without a flow, so
    /// that matching one by its text is the same as parsing it.
    fn flowless_routes(&self) -> &[FlowlessRoute] {
        self.proxy.flowless_routes.get_or_init(|| {
            self.local
                .keys()
                .map(|&transport| {
                    let peer = Peer {
                        transport,
                        flow: None,
                        remote: SocketAddr::from(([0, 0, 0, 0], 0)),
                        local: None,
                    };
                    (transport, self.write_record_route(&peer))
                })
                .filter_map(|(transport, route)| match self.route_to_us(&route) {
                    Some((None, _)) => Some(FlowlessRoute {
                        transport,
                        udp_local: self
                            .local
                            .get(&transport)
                            .copied()
                            .filter(|addr| self.is_udp_listener(*addr)),
                        text: route.into_boxed_str(),
                    }),
                    _ => None,
                })
                .collect()
        })
    }

    /// `<sip:[flow token@]host;transport=…;lr>` (a Record-Route pair per proxied INVITE):
    /// without a flow token the same text every time, written once.
    pub(super) fn record_route(&self, peer: &Peer) -> Cow<'_, str> {
        if peer.flow.is_none() && self.record_route_local(peer).is_none() {
            if let Some(own) = self
                .flowless_routes()
                .iter()
                .find(|own| own.transport == peer.transport)
            {
                return Cow::Borrowed(&own.text);
            }
        }
        Cow::Owned(self.write_record_route(peer))
    }

    /// The UDP socket a Record-Route for `peer` names when it is not the transport's first
    /// listener: the one that peer talks to (`Peer::local`), so that its in-dialog requests
    /// come to that socket and ours to it leave from there ([`Core::routes`]).
    fn record_route_local(&self, peer: &Peer) -> Option<SocketAddr> {
        peer.local.filter(|l| {
            peer.flow.is_none()
                && peer.transport == Transport::Udp
                && self.local.get(&Transport::Udp) != Some(l)
        })
    }

    /// [`Core::record_route`], written into one string.
    fn write_record_route(&self, peer: &Peer) -> String {
        let local = self
            .record_route_local(peer)
            .or_else(|| self.local.get(&peer.transport).copied())
            .or_else(|| self.local.values().next().copied());
        let mut out = String::with_capacity(96);
        out.push_str("<sip:");
        if let Some(flow) = peer.flow {
            self.tokens.encode_into(flow, &mut out);
            out.push('@');
        }
        match local {
            Some(addr) => self.push_local(&mut out, addr),
            None => out.push_str(&self.config.sip.domain),
        }
        out.push_str(";transport=");
        out.push_str(peer.transport.name());
        out.push_str(";lr>");
        out
    }

    pub(super) fn proxy_request(&mut self, key: ServerKey, msg: Message, from: Peer, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let in_dialog = msg.to_tag().is_some();
        let route = self.routes(&msg);
        let popped = route.popped;

        if !in_dialog && method != Method::Ack && method != Method::Cancel {
            let from_local = msg
                .from_header()
                .ok()
                .and_then(|f| SipUri::parse(f.uri).ok())
                .is_some_and(|u| self.is_local(&u));
            if from_local && self.authenticate(key, &msg, &from, Role::Proxy).is_none() {
                return;
            }
        }

        // Computed once: the loop check and every branch of this request use it.
        let loop_prefix = self.loop_prefix(&msg);
        if self.is_loop(&msg, &loop_prefix) {
            self.respond(key, &msg, &from, 482, "Loop Detected", &[]);
            return;
        }
        let targets = match self.route_targets(&msg, in_dialog, route, now, false) {
            Ok(targets) => targets,
            Err((status, reason)) => {
                self.respond(key, &msg, &from, status, reason, &[("Allow", ALLOW)]);
                return;
            }
        };
        if method == Method::Invite {
            self.respond(key, &msg, &from, 100, "Trying", &[]);
        }
        let record = dialog_creating(&method) && !in_dialog;
        let max_forwards = match msg.max_forwards() {
            Some(Ok(n)) => n.saturating_sub(1),
            _ => 69,
        };
        // What `Forward::build_message` checks beyond writing (see `Forwarded`): the fields
        // added (a Via, two Record-Route, Max-Forwards) stay within the parser's limit.
        let within_limit =
            msg.headers().len() + 4 <= huddle_sip::message::ParseLimits::default().max_headers;
        let mut ctx = Context {
            request: msg,
            from,
            invite: method == Method::Invite,
            branches: Vec::with_capacity(targets.len()),
            final_sent: false,
            timer_c: None,
        };
        for target in targets {
            let out = target.peer;
            let local = self.sending_from(&out);
            let Some(local) = local else {
                continue;
            };
            let via = self.via_with_branch(out.transport, local, &loop_prefix);
            let built = {
                let mut fwd = Forward::new(&ctx.request)
                    .prepend("Via", &via)
                    .drop_routes(popped)
                    .max_forwards(max_forwards);
                let rr_out;
                let rr_in;
                let mut plain = true;
                if record {
                    rr_out = self.record_route(&out);
                    rr_in = self.record_route(&from);
                    plain = plain_value(&rr_out) && plain_value(&rr_in);
                    fwd = fwd
                        .prepend("Record-Route", &rr_out)
                        .prepend("Record-Route", &rr_in);
                }
                if let Some(uri) = target.request_uri.as_deref() {
                    plain &= huddle_sip::syntax::is_one_line(uri);
                    fwd = fwd.request_uri(uri);
                }
                if plain && !ctx.invite && ctx.request.defect().is_none() && within_limit {
                    Forwarded::Bytes(fwd.build())
                } else {
                    Forwarded::Message(fwd.build_message())
                }
            };
            let reliable = out.transport.is_reliable();
            let branch = super::via_branch(&via);
            let started = match built {
                Forwarded::Bytes(bytes) => {
                    self.txn
                        .send_forwarded(&ctx.request, bytes, branch, out, reliable, now)
                }
                Forwarded::Message(Ok(request)) => self
                    .txn
                    .send_request_with_branch(request, branch, out, reliable, now),
                Forwarded::Message(Err(_)) => continue,
            };
            match started {
                Ok(client) => ctx.branches.push(Branch {
                    key: client,
                    final_status: None,
                    final_response: None,
                }),
                Err(e) => tracing::debug!(error = %e, "branch not started"),
            }
        }
        if ctx.branches.is_empty() {
            let (req, from) = (ctx.request, ctx.from);
            self.respond(
                key,
                &req,
                &from,
                480,
                "Temporarily Unavailable - No Reachable Contact",
                &[],
            );
            return;
        }
        for (i, b) in ctx.branches.iter().enumerate() {
            self.proxy.branches.insert(b.key, (key, i));
        }
        self.proxy.contexts.insert(key, ctx);
        self.proxy.arm_timer_c(key, now);
    }

    /// Timer C fired for ringing INVITEs: cancel their pending branches, whose 487s then
    /// complete the transaction (RFC 3261 §16.8).
    pub(super) fn proxy_timer_c(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.proxy.timer_c.first() {
            if at > now {
                break;
            }
            self.proxy.timer_c.pop_first();
            let current = self.proxy.contexts.get(&key).and_then(|c| c.timer_c);
            if current == Some(at) {
                tracing::debug!(?key, "Timer C fired, cancelling pending branches");
                self.proxy_cancel(key, now);
            }
        }
    }

    /// Where a request goes. `trusted` is for requests the host itself originates (from
    /// plugins): the relay rule for foreign domains does not apply to them.
    pub(super) fn select_targets(
        &self,
        msg: &Message,
        in_dialog: bool,
        popped: usize,
        token_peer: Option<Peer>,
        now: Instant,
        trusted: bool,
    ) -> Result<Vec<Target>, (u16, &'static str)> {
        // Plugins' in-dialog requests: sent from the family's first UDP socket (the Route's
        // socket is not looked for here).
        let route = Route {
            popped,
            token_peer,
            next: msg.header_list(&HeaderName::Route).nth(popped),
            local: None,
        };
        self.route_targets(msg, in_dialog, route, now, trusted)
    }

    /// [`Core::select_targets`] with the Route elements already read ([`Core::routes`]).
    fn route_targets(
        &self,
        msg: &Message,
        in_dialog: bool,
        route: Route<'_>,
        now: Instant,
        trusted: bool,
    ) -> Result<Vec<Target>, (u16, &'static str)> {
        let Route {
            popped,
            token_peer,
            next: remaining_route,
            local: route_local,
        } = route;
        // A UDP next hop found by URI is sent to from the socket our last Route names.
        let peer_for_uri = |uri: &SipUri<'_>| {
            peer_for_uri(uri).map(|mut peer| {
                if peer.transport == Transport::Udp {
                    peer.local = route_local;
                }
                peer
            })
        };
        if let Some(peer) = token_peer {
            // The flow token names the connection the next hop registered over.
            return Ok(vec![Target {
                peer,
                request_uri: None,
            }]);
        }
        if let Some(route) = remaining_route {
            let uri = NameAddr::parse(route).ok().map(|a| a.uri);
            let peer = uri
                .and_then(|u| SipUri::parse(u).ok())
                .and_then(|u| peer_for_uri(&u));
            return peer
                .map(|peer| {
                    vec![Target {
                        peer,
                        request_uri: None,
                    }]
                })
                .ok_or((404, "Not Found - Unroutable Route"));
        }
        let ruri = msg
            .request_sip_uri()
            .unwrap_or(Err(huddle_sip::uri::UriError::Malformed))
            .map_err(|_| (416, "Unsupported URI Scheme"))?;
        if self.is_local(&ruri) {
            let Some(user) = ruri.user_decoded() else {
                return Err(match msg.method() {
                    Some(Method::Options) => (200, "OK"),
                    _ => (405, "Method Not Allowed"),
                });
            };
            if !self.users.contains_key(&*user) {
                return Err((404, "Not Found"));
            }
            let mut aor = String::with_capacity(user.len() + 1 + self.domain.len());
            aor.push_str(&user);
            aor.push('@');
            aor.push_str(&self.domain);
            let targets: Vec<Target> = self
                .location
                .lookup(&aor, now)
                .map(|b| Target {
                    peer: Peer::reaching(b.reach),
                    request_uri: Some(b.contact.clone()),
                })
                .collect();
            if targets.is_empty() {
                return Err((480, "Temporarily Unavailable"));
            }
            return Ok(targets);
        }
        // A To tag alone does not make a request in-dialog for us: a dialog we proxied always
        // routes through us (we Record-Route), so one that named no Route of ours is treated
        // as out-of-dialog here, or a forged tag would open a relay.
        if !trusted && (!in_dialog || popped == 0) && !self.config.sip.allow_foreign_domains {
            return Err((403, "Forbidden - Relaying Denied"));
        }
        peer_for_uri(&ruri)
            .map(|peer| {
                vec![Target {
                    peer,
                    request_uri: None,
                }]
            })
            .ok_or((404, "Not Found - Unresolvable Request-URI"))
    }

    /// Relays ACK for 2xx and other requests outside any transaction, without state.
    pub(super) fn route_stateless(&mut self, msg: Message, _from: Peer, now: Instant) {
        let in_dialog = msg.to_tag().is_some();
        let route = self.routes(&msg);
        let popped = route.popped;
        let Ok(mut targets) = self.route_targets(&msg, in_dialog, route, now, false) else {
            return;
        };
        let Some(target) = targets.pop() else { return };
        let out = target.peer;
        let Some(local) = self.sending_from(&out) else {
            return;
        };
        // Nothing here checks for loops (a looping ACK ends with Max-Forwards), so the branch
        // needs no hash of the request: unique by the counter, and across restarts by the seed.
        let prefix = self.stateless_prefix();
        let via = self.via_with_branch(out.transport, local, &prefix);
        let max_forwards = match msg.max_forwards() {
            Some(Ok(n)) if n > 0 => n - 1,
            Some(Ok(_)) => return,
            _ => 69,
        };
        let mut fwd = Forward::new(&msg)
            .prepend("Via", &via)
            .drop_routes(popped)
            .max_forwards(max_forwards);
        if let Some(uri) = target.request_uri.as_deref() {
            fwd = fwd.request_uri(uri);
        }
        let dest: Destination = out.destination();
        // Held with the turn's other UDP datagrams (one `sendmmsg` at its end); no transaction
        // to tell if it fails, so no tag.
        if let Err(e) = self
            .transports
            .send_batched(&mut self.udp_out, dest, fwd.build(), None)
        {
            tracing::debug!(error = %e, "stateless relay failed");
        }
    }

    /// Cancels every branch still pending (the transaction layer holds a CANCEL back until
    /// the branch has a provisional response, RFC 3261 §9.1).
    pub(super) fn proxy_cancel(&mut self, invite: ServerKey, now: Instant) {
        let Some(ctx) = self.proxy.contexts.get(&invite) else {
            return;
        };
        let pending: Vec<ClientKey> = ctx
            .branches
            .iter()
            .filter(|b| b.final_status.is_none())
            .map(|b| b.key)
            .collect();
        for key in pending {
            if let Err(e) = self.txn.cancel(key, now) {
                tracing::debug!(error = %e, "branch not cancelled");
            }
        }
    }

    /// A response (or, with `None`, a timeout or transport failure) on one branch.
    pub(super) fn on_branch_response(
        &mut self,
        key: ClientKey,
        response: Option<Message>,
        now: Instant,
    ) {
        let Some(&(server, _)) = self.proxy.branches.get(&key) else {
            return;
        };
        self.branch_outcome(key, response, now);
        self.proxy.forget_answered_non_invite(server);
    }

    fn branch_outcome(&mut self, key: ClientKey, response: Option<Message>, now: Instant) {
        let Some(&(server, index)) = self.proxy.branches.get(&key) else {
            return;
        };
        let Some(ctx) = self.proxy.contexts.get_mut(&server) else {
            return;
        };
        let status = response.as_ref().and_then(Message::status).unwrap_or(408);
        if status == 100 {
            return;
        }
        let Some(branch) = ctx.branches.get_mut(index) else {
            return;
        };
        if branch.final_status.is_some() {
            // RFC 6026: 2xx retransmissions of an accepted INVITE still go upstream.
            if (200..300).contains(&status) {
                if let Some(r) = response.as_ref() {
                    let _ = self.txn.respond_built(server, status, relayed(r), now);
                }
            }
            return;
        }
        if status < 200 {
            let rearm = ctx.invite && !ctx.final_sent;
            if rearm {
                self.proxy.arm_timer_c(server, now);
            }
            let Some(ctx) = self.proxy.contexts.get(&server) else {
                return;
            };
            if !ctx.final_sent {
                if let Some(r) = response.as_ref() {
                    let _ = self.txn.respond_built(server, status, relayed(r), now);
                }
            }
            return;
        }
        branch.final_status = Some(status);
        if (200..300).contains(&status) {
            let first = !ctx.final_sent;
            ctx.final_sent = true;
            let others: Vec<ClientKey> = if first && ctx.invite {
                ctx.branches
                    .iter()
                    .filter(|b| b.final_status.is_none())
                    .map(|b| b.key)
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(r) = response.as_ref() {
                let bytes = relayed(r);
                if first {
                    self.relay_final(server, r, bytes, now);
                } else {
                    let _ = self.txn.respond_built(server, status, bytes, now);
                }
            }
            for other in others {
                let _ = self.txn.cancel(other, now);
            }
            return;
        }
        branch.final_response = response;
        if status >= 600 && ctx.invite && !ctx.final_sent {
            // RFC 3261 §16.7 step 5: a 6xx ends the search; the others are cancelled and
            // their 487s complete the response context.
            let pending: Vec<ClientKey> = ctx
                .branches
                .iter()
                .filter(|b| b.final_status.is_none())
                .map(|b| b.key)
                .collect();
            for other in pending {
                let _ = self.txn.cancel(other, now);
            }
            let Some(ctx) = self.proxy.contexts.get_mut(&server) else {
                return;
            };
            if ctx.branches.iter().any(|b| b.final_status.is_none()) {
                return;
            }
        }
        let Some(ctx) = self.proxy.contexts.get_mut(&server) else {
            return;
        };
        if ctx.final_sent || ctx.branches.iter().any(|b| b.final_status.is_none()) {
            return;
        }
        // Every branch failed: forward the best response (RFC 3261 §16.7 step 6).
        ctx.final_sent = true;
        let best = ctx
            .branches
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.final_status.map(|s| (i, s)))
            .min_by_key(|&(i, s)| best_response_rank(s, i))
            .map(|(i, s)| {
                // A 503 is not passed upstream as is: it would make the caller's element think
                // *we* are unavailable (RFC 3261 §16.7 step 6). The context sends no other
                // final response, so the chosen one is taken out of it.
                let forward = match s {
                    503 => None,
                    _ => ctx.branches[i].final_response.take(),
                };
                (forward, if s == 503 { 500 } else { s })
            });
        match best {
            Some((Some(r), _)) => {
                let bytes = relayed(&r);
                self.relay_final(server, &r, bytes, now);
            }
            Some((None, status)) => {
                let (req, from) = (ctx.request.clone(), ctx.from);
                let reason = match status {
                    408 => "Request Timeout",
                    500 => "Server Internal Error - Downstream Unavailable",
                    _ => "Server Error",
                };
                self.respond(server, &req, &from, status, reason, &[]);
            }
            None => {}
        }
    }
}

/// A request forwarded on one branch. A non-INVITE one goes as bytes
/// ([`huddle_sip::transaction::TransactionLayer::send_forwarded`]): its transaction keeps
/// nothing else, and the offsets `build_message` recorded for a parsed copy were made and
/// dropped for every BYE and MESSAGE. Only where `build_message` could not fail: the received
/// request has no defect, the added fields and the Request-URI are plain one-line text (else
/// it parses what it wrote) and they stay within the parser's limit of fields; otherwise the
/// `Message` path as before, which skips the branch when the result does not parse.
enum Forwarded {
    Bytes(bytes::Bytes),
    Message(Result<Message, huddle_sip::message::ParseError>),
}

/// A value `Forward` writes as the parser reads it back: no line break, no white space at
/// either end (what it calls a plain field, for our own Record-Route values).
fn plain_value(value: &str) -> bool {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    huddle_sip::syntax::is_one_line(value)
        && !edge(value.as_bytes().first())
        && !edge(value.as_bytes().last())
}

/// A response relayed upstream: as received, less our Via (RFC 3261 §16.7 step 3). Written as
/// bytes only: nothing reads the relayed copy again (the transaction layer keeps its bytes, the
/// metrics read the received response), so the offsets `build_message` records for a `Message`
/// were made and dropped for every 1xx and 2xx of a call. Removing one Via element of a valid
/// response leaves a message that parses (`build_message` would have parsed the same bytes).
fn relayed(response: &Message) -> bytes::Bytes {
    Forward::new(response).drop_top_via().build()
}

/// Orders final responses for RFC 3261 §16.7 step 6: any 6xx; then the lowest class among
/// 3xx–5xx; within 4xx the codes that let the caller act (401, 407, 415, 420, 484) first; ties
/// go to the earliest branch (the first registered contact).
pub(super) fn best_response_rank(status: u16, branch: usize) -> (u8, u8, usize) {
    let class = match status {
        600..=699 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    };
    let preferred = u8::from(!matches!(status, 401 | 407 | 415 | 420 | 484));
    (class, preferred, branch)
}

/// Methods the proxy passes on.
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, REFER, INFO, UPDATE, PRACK, REGISTER";

#[cfg(test)]
mod tests {
    use super::best_response_rank;

    fn best(codes: &[u16]) -> u16 {
        let (i, _) = codes
            .iter()
            .enumerate()
            .min_by_key(|&(i, &s)| best_response_rank(s, i))
            .expect("non-empty");
        codes[i]
    }

    #[test]
    fn best_response_follows_rfc3261_16_7() {
        assert_eq!(best(&[486, 603]), 603);
        assert_eq!(best(&[500, 480]), 480);
        assert_eq!(best(&[404, 484]), 484);
        assert_eq!(best(&[404, 407]), 407);
        assert_eq!(best(&[404, 302]), 302);
        assert_eq!(best(&[486, 404]), 486);
        assert_eq!(best(&[503, 408]), 408);
    }
}
