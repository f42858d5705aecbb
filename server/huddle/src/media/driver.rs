//! The driver: one tokio task owning the UDP socket and every leg's `Rtc` (str0m's run loop,
//! STYLE.md's "thin driver"). Each wake-up it reads every datagram waiting, applying the
//! queued commands after each read and before its datagrams (a command queued before a
//! datagram arrived is in place for it), fires the expired deadlines, then drains the
//! `poll_output` of every leg it touched until each says `Timeout`. A leg's events are
//! handled as its drain produces them; those that touch other legs (RTP to forward, key-frame
//! requests) mark them for draining too, so draining repeats until nothing is left to do.
//!
//! # Passes per forwarded packet
//!
//! str0m moves a leg's clock only through `handle_input`, and sends a packet written with
//! `write_rtp` only once its clock has moved past the write. Every receive runs that timer
//! pass itself; a leg written into from outside (a forwarded packet, a key-frame request, a
//! command) needs one more pass (`Input::Timeout`) before its `poll_output` shows the change.
//! So each datagram's events are handled as soon as its leg's drain yields them — the packets
//! it carries are written into their egress legs right away — and a leg written into gets its
//! extra pass only at the end of the turn, and only if no datagram of its own arrived after
//! the write (`Leg::unreleased`): a leg forwarded into and then receiving within one wake-up
//! (a conference where everyone speaks, once batches grow under load) pays one pass for both.
//! The echo (a leg written into by its own events) keeps the same rule: ticking it within
//! the drain, before the poll that ends it in `Timeout`, saves one `poll_output` walk per
//! packet but loses the receive passes that release it for free once batches grow, and
//! measured more passes per echoed packet (bench/NOTES.md, "Media: passes per echoed packet").
//!
//! # System calls
//!
//! The socket is read [`RECV_BATCH`](super::udp::RECV_BATCH) datagrams per `recvmmsg`, and
//! what the legs transmit during a turn (the echoes of a receive batch, a composite packet's
//! copies for every receiver, RTCP) is held in an [`Outbox`] and written with `sendmmsg` at the
//! end of the turn, or as soon as a system call's worth is held. Datagrams leave in the order
//! the legs produced them. If the socket's buffer is full the rest waits, in order, for the
//! socket to become writable (bounded: beyond [`OUTBOX_LIMIT`](super::udp::OUTBOX_LIMIT) newer
//! datagrams are dropped, as a full network queue would drop them).
//!
//! # Timer slack
//!
//! Besides its packets, each leg asks for timer passes of its own: NACK reports every 33 ms,
//! TWCC feedback every 50 ms, RR/SR, stats and the pause check. Each would be a pass (and often
//! a wake-up) between two packets of the leg, although the next packet's receive runs the
//! same timer work. So these periodic timeouts fire up to [`TIMER_SLACK`] late: a leg that
//! receives media meanwhile does the work in its receive pass and its timer never fires; a
//! quiet leg reports a few milliseconds late. Timeouts str0m asks for "now" (a key-frame
//! request, a packet to send), DTLS and ICE timers, and every timer of a leg whose `Rtc` paces
//! (bandwidth estimation on) fire on time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_sdk::HangupReason;
use str0m::bwe::BweKind;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Reason, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::keytap::{KeySlot, LegKeys};
use super::rtp::{self, KeyframeGate, Rewriter, SeqExtender};
use super::srtp::{LegSrtp, SrtpRx, SrtpTx};
use super::udp::{Outbox, RecvBuffers, SEND_BATCH};
use super::{Command, MediaEngine, MediaEvents};

/// The driver's maps, looked up several times per packet: keys are ids, addresses and small
/// values the driver controls or the peer's SSRCs, so a fast non-DoS-hardened hash is enough
/// (an attacker choosing SSRCs only slows its own leg's map).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Datagrams read per wake-up before deadlines and timers get their turn.
const READ_BATCH: usize = 256;
/// Commands applied per wake-up.
const COMMAND_BATCH: usize = 1024;
/// Receivers' key-frame requests passed to the sender of a forwarded stream at most this often
/// ([`KeyframeGate`]).
pub(crate) const FORWARDED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// How much later than str0m asks a leg's periodic report timers may fire (module docs,
/// "Timer slack"): longer than the 8 ms between two packets of a 1 Mbit/s video stream.
pub(crate) const TIMER_SLACK: Duration = Duration::from_millis(10);

/// One leg: its `Rtc` and what the host keeps around it.
pub(crate) struct Leg {
    id: u64,
    rtc: Rtc,
    ufrag: String,
    /// Where the `Rtc`'s DTLS leaves the SRTP keys ([`keytap`](super::keytap)).
    keys: Arc<KeySlot>,
    /// Our own SRTP contexts, from the keys in `keys` once DTLS is up ([`Leg::own_srtp`]).
    srtp: Option<OwnSrtp>,
    events: Arc<dyn MediaEvents>,
    /// Torn down if not connected by then.
    connect_by: Option<Instant>,
    /// When the last datagram from the peer arrived (ICE consent checks come every few
    /// seconds even on hold, so silence means the peer is gone).
    last_rx: Instant,
    /// Silence after which a connected leg is torn down.
    idle_timeout: Duration,
    /// The `Rtc`'s next timeout.
    timeout: Option<Instant>,
    /// `timeout` is a periodic report (NACK, TWCC, RR/SR, stats, pause check) that may fire
    /// up to `timer_slack` late: the leg's next datagram usually does its work first.
    lenient: bool,
    /// How late lenient timeouts may fire; zero when str0m paces (bandwidth estimation on).
    timer_slack: Duration,
    /// The last instant fed to the `Rtc` (`handle_input`).
    clock: Instant,
    /// The deadline registered in the driver's set.
    deadline: Option<Instant>,
    addrs: Vec<SocketAddr>,
    /// The mid of each incoming SSRC.
    rx_mids: FastMap<u32, Mid>,
    /// Where each incoming stream is forwarded: (leg, mid).
    /// Shared so that each packet takes the list with a reference count, not a copy.
    forwards: FastMap<Mid, Arc<[(u64, Mid)]>>,
    /// What feeds each outgoing stream, for key-frame requests passed back.
    fed_by: FastMap<Mid, (u64, Mid)>,
    /// Per incoming stream: the plugins tapping it.
    taps: FastMap<Mid, Vec<Tapper>>,
    /// Per incoming stream that is forwarded: the rate limit of receivers' key-frame requests.
    keyframe_gates: FastMap<Mid, KeyframeGate>,
    /// Per outgoing stream: the sequence extender of plugin-sent packets and the rewriter of
    /// forwarded ones.
    tx: FastMap<Mid, TxState>,
    /// Set by `Close`: the hang-up reason is NORMAL.
    closing: bool,
    /// The `Rtc` was changed from outside (a packet written, a key frame requested, a command)
    /// since its last input: its clock must advance through `handle_input` before
    /// `poll_output` shows the change (str0m releases what `write_rtp` queued only then). Any
    /// input clears it, so a leg that receives a datagram after a forwarded packet was written
    /// into it needs no pass of its own to send that packet (module docs).
    unreleased: bool,
    /// The latest cumulative (NACKs, PLIs) of each stream's stats, keyed by (mid, rid,
    /// egress), so that each stats event adds only what is new to the engine's totals.
    rtcp_seen: FastMap<(Mid, Option<str0m::media::Rid>, bool), (u64, u64)>,
}

/// A plugin tapping a stream: its index and where its events go.
type Tapper = (usize, Arc<dyn MediaEvents>);

#[derive(Default)]
struct TxState {
    plugin_seq: SeqExtender,
    rewriter: Rewriter,
}

/// A leg's SRTP contexts of our own, next to str0m's: the same keys, for the forwarding fast
/// path (bench/NOTES.md, "Media: a forwarding fast path outside str0m"). Built once per leg;
/// for now only debug builds use them, to check each inbound packet ([`verify_inbound`]).
#[derive(Debug)]
pub(crate) struct OwnSrtp {
    /// The key slot's generation these were built from.
    generation: u32,
    profile: super::srtp::SrtpProfile,
    /// Seals what the fast path will send outside str0m (step 2 of the plan).
    #[allow(dead_code)]
    tx: SrtpTx,
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    rx: SrtpRx,
}

impl OwnSrtp {
    /// The contexts for `keys`; `None` for a profile or material our SRTP does not take.
    pub(crate) fn new(keys: &LegKeys) -> Option<OwnSrtp> {
        let profile = super::srtp::SrtpProfile::from_dtls(keys.profile)?;
        let LegSrtp { tx, rx } =
            LegSrtp::from_keying_material(profile, &keys.material, keys.dtls_client).ok()?;
        Some(OwnSrtp {
            generation: keys.generation,
            profile,
            tx,
            rx,
        })
    }
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg").field("id", &self.id).finish()
    }
}

impl Leg {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        rtc: Rtc,
        ufrag: String,
        keys: Arc<KeySlot>,
        events: Arc<dyn MediaEvents>,
        now: Instant,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Leg {
        Leg {
            id,
            rtc,
            ufrag,
            keys,
            srtp: None,
            events,
            connect_by: Some(now + connect_timeout),
            last_rx: now,
            idle_timeout,
            timeout: None,
            lenient: false,
            timer_slack: TIMER_SLACK,
            clock: now,
            deadline: None,
            addrs: Vec::new(),
            rx_mids: FastMap::default(),
            forwards: FastMap::default(),
            fed_by: FastMap::default(),
            taps: FastMap::default(),
            keyframe_gates: FastMap::default(),
            tx: FastMap::default(),
            closing: false,
            // A new leg's first drain advances its clock once.
            unreleased: true,
            rtcp_seen: FastMap::default(),
        }
    }

    /// Lets every timeout fire when str0m asks: for legs whose `Rtc` paces its sending
    /// (bandwidth estimation), where a late timer would delay packets.
    pub(crate) fn without_timer_slack(mut self) -> Leg {
        self.timer_slack = Duration::ZERO;
        self
    }

    /// Our SRTP contexts, current with the keys DTLS exported last. A second export (a rekey)
    /// moves the slot's generation: the old contexts are dropped and the new keys read, with
    /// fresh receive state, so nothing is ever sealed or opened with stale keys. `None` before
    /// DTLS is up or when the keys are unusable.
    fn own_srtp(&mut self) -> Option<&mut OwnSrtp> {
        let generation = self.keys.generation();
        if self.srtp.as_ref().map_or(0, |s| s.generation) != generation {
            self.srtp = self.keys.take().as_ref().and_then(OwnSrtp::new);
        }
        self.srtp.as_mut()
    }

    fn next_deadline(&self) -> Option<Instant> {
        // Until connected the connect deadline guards the leg, afterwards the idle one.
        let guard = self.connect_by.unwrap_or(self.last_rx + self.idle_timeout);
        let timeout = match self.timeout {
            Some(t) if self.lenient => Some(t + self.timer_slack),
            t => t,
        };
        Some(timeout.map_or(guard, |t| t.min(guard)))
    }

    /// Notes the `Rtc`'s next timeout: lenient if it is a periodic report due in the future
    /// (never a pending key-frame request or a packet to send, which str0m asks for "now").
    fn set_timeout(&mut self, t: Instant) {
        self.timeout = Some(t);
        self.lenient = t > self.clock
            && matches!(
                self.rtc.last_timeout_reason(),
                Reason::Nack | Reason::Twcc | Reason::Feedback | Reason::PauseCheck | Reason::Stats
            );
    }

    /// Why the leg must go now, if it must.
    fn expired(&self, now: Instant) -> Option<&'static str> {
        match self.connect_by {
            Some(by) if by <= now => Some("did not connect in time (ICE/DTLS)"),
            None if self.last_rx + self.idle_timeout <= now => {
                Some("peer silent too long (no ICE consent, no media)")
            }
            _ => None,
        }
    }
}

struct Driver {
    socket: UdpSocket,
    candidate: SocketAddr,
    engine: MediaEngine,
    legs: FastMap<u64, Leg>,
    by_ufrag: FastMap<String, u64>,
    by_addr: FastMap<SocketAddr, u64>,
    deadlines: BTreeSet<(Instant, u64)>,
    dirty: FastSet<u64>,
    /// What the legs transmitted this turn, written with `sendmmsg` (module docs, "System
    /// calls").
    outbox: Outbox,
}

/// Runs the engine until `Shutdown` (or every handle is gone).
pub(crate) async fn run(
    socket: UdpSocket,
    candidate: SocketAddr,
    mut commands: mpsc::Receiver<Command>,
    engine: MediaEngine,
) {
    let mut d = Driver {
        socket,
        candidate,
        engine,
        legs: FastMap::default(),
        by_ufrag: FastMap::default(),
        by_addr: FastMap::default(),
        deadlines: BTreeSet::new(),
        dirty: FastSet::default(),
        outbox: Outbox::default(),
    };
    let mut buf = RecvBuffers::new();
    // One timer for the whole run, moved only when the earliest deadline changes (a new
    // `Sleep` per turn would register and cancel a timer-wheel entry on every wake-up).
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let next = d.deadlines.first().map(|(t, _)| *t);
        if next != armed {
            if let Some(t) = next {
                sleep.as_mut().reset(t.into());
            }
            armed = next;
        }
        let mut stop = false;
        let mut readable = false;
        tokio::select! {
            r = d.socket.readable() => readable = r.is_ok(),
            command = commands.recv() => {
                match command {
                    Some(c) => stop = d.apply(c),
                    None => stop = true,
                }
            }
            () = &mut sleep, if armed.is_some() => {}
            // Only while datagrams wait for room in the socket's buffer (the flush below).
            r = d.socket.writable(), if d.outbox.blocked() => {
                let _ = r;
            }
        }
        if readable && !stop {
            stop = d.read_batch(&mut buf, &mut commands);
        } else if !stop {
            stop = d.apply_queued(&mut commands);
        }
        if stop {
            d.shutdown();
            d.flush();
            return;
        }
        d.fire_deadlines(Instant::now());
        d.settle();
        d.flush();
    }
}

impl Driver {
    /// Reads and handles what waits on the socket; true when a command said stop.
    fn read_batch(
        &mut self,
        buf: &mut RecvBuffers,
        commands: &mut mpsc::Receiver<Command>,
    ) -> bool {
        let mut read = 0;
        while read < READ_BATCH {
            // A short batch (the socket ran dry) ends the read: no system call to find it
            // empty (`RecvBuffers::read`).
            let more = match buf.read(&self.socket) {
                Ok(full) => full,
                // ICMP errors (port unreachable) surface here on Linux; nothing to do.
                Err(_) => {
                    read += 1;
                    continue;
                }
            };
            // Commands queued before these datagrams arrived go first: a plugin that sets up
            // a forward and then has its peer send relies on the forward being in place for
            // the first packet. Applied after the read, so none queued earlier is missed.
            if self.apply_queued(commands) {
                return true;
            }
            read += buf.len();
            for i in 0..buf.len() {
                let (bytes, source) = buf.datagram(i);
                self.engine.counters().received(bytes.len());
                if let Some(source) = source {
                    self.datagram(bytes, source);
                }
            }
            if !more {
                break;
            }
        }
        false
    }

    /// Applies up to [`COMMAND_BATCH`] queued commands; true for `Shutdown`.
    fn apply_queued(&mut self, commands: &mut mpsc::Receiver<Command>) -> bool {
        for _ in 0..COMMAND_BATCH {
            match commands.try_recv() {
                Ok(c) => {
                    if self.apply(c) {
                        return true;
                    }
                }
                Err(_) => break,
            }
        }
        false
    }

    /// Holds a datagram for the end of the turn; a full system call's worth is written at
    /// once, so that a long turn does not hold back what it produced first.
    fn transmit(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        // UDP: what does not fit (the socket's buffer and the outbox full) is dropped, as the
        // network would drop it.
        self.outbox.push(to, datagram);
        if self.outbox.len() >= SEND_BATCH && !self.outbox.blocked() {
            self.flush();
        }
    }

    /// Writes out what the legs transmitted, as far as the socket takes it.
    fn flush(&mut self) {
        let counters = self.engine.counters();
        self.outbox.flush(&self.socket, |n| counters.sent(n));
    }

    /// Routes one datagram to its leg (see the module docs of `media`).
    fn datagram(&mut self, bytes: &[u8], source: SocketAddr) {
        let id = match stun_ufrag(bytes).and_then(|u| self.by_ufrag.get(u).copied()) {
            Some(id) => {
                if let Some(leg) = self.legs.get_mut(&id) {
                    if !leg.addrs.contains(&source) && leg.addrs.len() < 8 {
                        leg.addrs.push(source);
                        self.by_addr.insert(source, id);
                    }
                }
                id
            }
            None => match self.by_addr.get(&source) {
                Some(id) => *id,
                None => {
                    return;
                }
            },
        };
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        leg.last_rx = now;
        leg.clock = now;
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.candidate, bytes) else {
            return;
        };
        #[cfg(debug_assertions)]
        verify_inbound(leg, bytes, self.engine.counters());
        if let Err(e) = leg.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(session = id, error = %e, "media input refused");
        }
        leg.unreleased = false;
        // Drained right away, not batched: in RTP mode str0m holds one received packet for
        // the next `poll_output`, and a second input before it would overwrite the first. The
        // receive itself advanced the leg's clock; its events are handled as they come out, so
        // a packet forwarded now is written into its egress leg at once (module docs).
        self.drain(id, false);
    }

    /// Marks a leg changed from outside: drained (and its clock advanced) before the turn ends.
    fn touch(&mut self, id: u64) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.unreleased = true;
        }
        self.dirty.insert(id);
    }

    fn fire_deadlines(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(leg) = self.legs.get_mut(&id) else {
                continue;
            };
            leg.deadline = None;
            if let Some(why) = leg.expired(now) {
                tracing::info!(session = id, "media leg torn down: {why}");
                self.remove(id, HangupReason::Transport);
                continue;
            }
            leg.clock = now;
            if let Err(e) = leg.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(session = id, error = %e, "media timeout handling failed");
            }
            leg.unreleased = false;
            self.drain(id, false);
        }
    }

    /// Applies a command; true for `Shutdown`.
    fn apply(&mut self, command: Command) -> bool {
        match command {
            Command::Insert(leg) => {
                let id = leg.id;
                self.by_ufrag.insert(leg.ufrag.clone(), id);
                self.legs.insert(id, *leg);
                self.touch(id);
            }
            Command::Renegotiate {
                session,
                offer,
                reply,
            } => {
                let result = match self.legs.get_mut(&session) {
                    Some(leg) => super::sdp::answer(&mut leg.rtc, *offer),
                    None => Err(super::SdpError::NotAcceptable),
                };
                let _ = reply.try_send(result);
                self.touch(session);
            }
            Command::SendRtp {
                session,
                mid,
                packet,
            } => {
                if let Some(leg) = self.legs.get_mut(&session) {
                    send_plugin_rtp(leg, mid, &packet);
                    self.touch(session);
                }
            }
            Command::SendRtpBatch {
                targets,
                packets,
                ends,
            } => {
                let mut start = 0;
                for ((session, mid), end) in targets.into_iter().zip(ends) {
                    if let Some(leg) = self.legs.get_mut(&session) {
                        send_plugin_rtp(leg, mid, &packets[start..end]);
                        self.touch(session);
                    }
                    start = end;
                }
            }
            Command::Keyframe {
                session,
                mid,
                ssrcs,
            } => {
                if let Some(leg) = self.legs.get_mut(&session) {
                    if let Some(mid) = mid {
                        leg.keyframe_gates
                            .entry(mid)
                            .or_default()
                            .note(Instant::now());
                    }
                    let mut api = leg.rtc.direct_api();
                    if let Some(mid) = mid {
                        if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                            rx.request_keyframe(KeyframeRequestKind::Pli);
                        }
                    }
                    for ssrc in ssrcs {
                        if let Some(rx) = api.stream_rx(&Ssrc::from(ssrc)) {
                            rx.request_keyframe(KeyframeRequestKind::Pli);
                        }
                    }
                    self.touch(session);
                }
            }
            Command::Forward { src, dst, dst_mid } => self.set_forward(src, dst, dst_mid),
            Command::Tap {
                session,
                mid,
                owner,
                tapper,
            } => {
                if let Some(leg) = self.legs.get_mut(&session) {
                    let taps = leg.taps.entry(mid).or_default();
                    taps.retain(|(o, _)| *o != owner);
                    if let Some(events) = tapper {
                        taps.push((owner, events));
                    }
                    if taps.is_empty() {
                        leg.taps.remove(&mid);
                    }
                }
            }
            Command::Close { session } => {
                if let Some(leg) = self.legs.get_mut(&session) {
                    leg.closing = true;
                    let _ = leg.rtc.close();
                    self.touch(session);
                }
            }
            Command::Shutdown => return true,
        }
        false
    }

    fn set_forward(&mut self, src: Option<(u64, Mid)>, dst: u64, dst_mid: Mid) {
        // Whatever fed `dst_mid` before stops.
        let old = self
            .legs
            .get_mut(&dst)
            .and_then(|l| l.fed_by.remove(&dst_mid));
        if let Some((old_leg, old_mid)) = old {
            if let Some(targets) = self
                .legs
                .get_mut(&old_leg)
                .and_then(|l| l.forwards.get_mut(&old_mid))
            {
                *targets = targets
                    .iter()
                    .copied()
                    .filter(|t| *t != (dst, dst_mid))
                    .collect();
            }
        }
        let Some((src_leg, src_mid)) = src else {
            return;
        };
        if !self.legs.contains_key(&dst) {
            return;
        }
        if let Some(leg) = self.legs.get_mut(&src_leg) {
            let targets = leg.forwards.entry(src_mid).or_insert_with(|| Arc::from([]));
            *targets = targets.iter().copied().chain([(dst, dst_mid)]).collect();
            // A new receiver needs a picture now.
            if let Some(rx) = leg.rtc.direct_api().stream_rx_by_mid(src_mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
            self.touch(src_leg);
        }
        if let Some(leg) = self.legs.get_mut(&dst) {
            leg.fed_by.insert(dst_mid, (src_leg, src_mid));
        }
    }

    /// Drains every touched leg, until quiet (draining one may touch others).
    fn settle(&mut self) {
        let mut dirty = Vec::new();
        while !self.dirty.is_empty() {
            dirty.extend(self.dirty.drain());
            for id in dirty.drain(..) {
                self.drain(id, true);
            }
        }
    }

    /// Polls one leg until `Timeout`: sends what it transmits and handles its events as they
    /// come (an event may write into this leg or others, marking them). `tick` first advances
    /// its clock if the leg was changed since its last input, which releases packets written
    /// since then. A leg written into by its own events (the echo) is not ticked within the
    /// same drain: a later datagram of its own in this turn may still release the packet with
    /// its receive pass (module docs).
    fn drain(&mut self, id: u64, tick: bool) {
        if let Some(leg) = self.legs.get_mut(&id) {
            // Time moves forward only through `handle_input`: packets written since the last
            // input are released to `poll_output` by it (str0m's `write_rtp` enqueues them for
            // "now").
            if tick && leg.unreleased && leg.rtc.is_alive() {
                leg.clock = Instant::now();
                let _ = leg.rtc.handle_input(Input::Timeout(leg.clock));
                leg.unreleased = false;
            }
        }
        loop {
            let Some(leg) = self.legs.get_mut(&id) else {
                return;
            };
            if !leg.rtc.is_alive() {
                self.remove(id, HangupReason::Normal);
                return;
            }
            match leg.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.transmit(t.destination, t.contents.into()),
                Ok(Output::Timeout(t)) => {
                    leg.set_timeout(t);
                    break;
                }
                Ok(Output::Event(e)) => self.event(id, e),
                Err(e) => {
                    tracing::debug!(session = id, error = %e, "media leg failed");
                    self.remove(id, HangupReason::Transport);
                    return;
                }
            }
        }
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let next = leg.next_deadline();
        if next != leg.deadline {
            if let Some(old) = leg.deadline {
                self.deadlines.remove(&(old, id));
            }
            if let Some(new) = next {
                self.deadlines.insert((new, id));
            }
            leg.deadline = next;
        }
    }

    fn event(&mut self, id: u64, event: Event) {
        match event {
            Event::Connected => {
                if let Some(leg) = self.legs.get_mut(&id) {
                    // DTLS handed its keying material to the tap in the drain that emits this.
                    let profile = leg.own_srtp().map(|s| s.profile);
                    self.engine.counters().srtp_profile(profile);
                    tracing::debug!(session = id, srtp = ?profile, "media leg connected");
                    leg.connect_by = None;
                    leg.events.ready(id);
                    self.touch(id);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(session = id, "media leg lost ICE connectivity");
                self.remove(id, HangupReason::Transport);
            }
            Event::RtpPacket(packet) => self.rtp_in(id, packet),
            // Egress: what the peer asked of us; ingress: what we asked of the peer.
            Event::MediaEgressStats(st) => {
                self.rtcp_stats(id, (st.mid, st.rid, true), st.nacks, st.plis);
                self.report_forwarded_loss(id, &st);
            }
            Event::MediaIngressStats(st) => {
                self.rtcp_stats(id, (st.mid, st.rid, false), st.nacks, st.plis)
            }
            Event::KeyframeRequest(req) => {
                let Some(leg) = self.legs.get_mut(&id) else {
                    return;
                };
                if let Some(&(src, src_mid)) = leg.fed_by.get(&req.mid) {
                    if let Some(src_leg) = self.legs.get_mut(&src) {
                        let passed = src_leg
                            .keyframe_gates
                            .entry(src_mid)
                            .or_default()
                            .allow(Instant::now(), FORWARDED_KEYFRAME_INTERVAL);
                        if passed {
                            if let Some(rx) =
                                src_leg.rtc.direct_api().stream_rx_by_mid(src_mid, None)
                            {
                                rx.request_keyframe(req.kind);
                            }
                            self.touch(src);
                        }
                    }
                } else {
                    let ssrc = leg
                        .rtc
                        .direct_api()
                        .stream_tx_by_mid(req.mid, None)
                        .map_or(0, |s| *s.ssrc());
                    leg.events.rtcp(id, rtp::pli(0, ssrc));
                }
            }
            Event::EgressBitrateEstimate(kind) => {
                let estimate = match kind {
                    BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. } => estimate,
                    _ => return,
                };
                if let Some(leg) = self.legs.get(&id) {
                    leg.events.bitrate(id, estimate.as_u64());
                }
            }
            _ => {}
        }
    }

    /// An incoming packet: forwarded in the fast path, else handed to the plugin.
    fn rtp_in(&mut self, id: u64, mut packet: RtpPacket) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let ssrc = *packet.header.ssrc;
        let mid = match leg.rx_mids.get(&ssrc) {
            Some(mid) => *mid,
            None => {
                let Some(mid) = leg
                    .rtc
                    .direct_api()
                    .stream_rx(&packet.header.ssrc)
                    .map(|s| s.mid())
                else {
                    return;
                };
                leg.rx_mids.insert(ssrc, mid);
                mid
            }
        };
        let targets = leg.forwards.get(&mid).cloned();
        let targets: &[(u64, Mid)] = targets.as_deref().unwrap_or(&[]);
        // Per packet: skip hashing the mid when nothing is tapped at all (the usual case).
        let taps = if leg.taps.is_empty() {
            None
        } else {
            leg.taps.get(&mid)
        };
        if targets.is_empty() || taps.is_some() {
            let bytes = rtp::serialize(
                &rtp::Rtp {
                    pt: *packet.header.payload_type,
                    marker: packet.header.marker,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    ssrc,
                    payload: &packet.payload,
                },
                &packet.header.csrc[..packet.header.csrc_count.min(15)],
            );
            for (_, tapper) in taps.into_iter().flatten() {
                tapper.rtp(id, &mid, bytes.clone());
            }
            if targets.is_empty() {
                leg.events.rtp(id, &mid, bytes);
                return;
            }
        }
        let kind = leg.rtc.media(mid).map(|m| m.kind());
        let src_pt = packet.header.payload_type;
        let codec = leg
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == src_pt)
            .map(|p| p.spec());
        let last = targets.len().saturating_sub(1);
        for (i, &(dst, dst_mid)) in targets.iter().enumerate() {
            let Some(dst_leg) = self.legs.get_mut(&dst) else {
                continue;
            };
            // The same codec may have another payload type on the other leg.
            let pt = if dst == id {
                src_pt
            } else {
                match codec.and_then(|c| {
                    dst_leg
                        .rtc
                        .codec_config()
                        .params()
                        .iter()
                        .find(|p| p.spec().codec == c.codec && p.spec().clock_rate == c.clock_rate)
                        .map(|p| p.pt())
                }) {
                    Some(pt) => pt,
                    None => continue,
                }
            };
            let step = if kind == Some(MediaKind::Audio) {
                960
            } else {
                3000
            };
            let state = dst_leg.tx.entry(dst_mid).or_default();
            let (seq, ts, switched) =
                state
                    .rewriter
                    .rewrite(ssrc, *packet.seq_no, packet.header.timestamp, step);
            let mut api = dst_leg.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(dst_mid, None) else {
                continue;
            };
            // The last target takes the packet's payload and extension values; only the
            // others need copies (none in an echo or a one-to-one forward).
            let (payload, ext_vals) = if i == last {
                (
                    std::mem::take(&mut packet.payload),
                    std::mem::take(&mut packet.header.ext_vals),
                )
            } else {
                (packet.payload.clone(), packet.header.ext_vals.clone())
            };
            let write = RtpWrite::new(pt, SeqNo::from(seq), ts, packet.timestamp, payload)
                .marker(packet.header.marker)
                .ext_vals(ext_vals)
                .nackable(kind != Some(MediaKind::Audio));
            tx.write_rtp(write);
            dst_leg.unreleased = true;
            self.dirty.insert(dst);
            if switched && kind == Some(MediaKind::Video) {
                if let Some(src_leg) = self.legs.get_mut(&id) {
                    if let Some(rx) = src_leg.rtc.direct_api().stream_rx_by_mid(mid, None) {
                        rx.request_keyframe(KeyframeRequestKind::Pli);
                    }
                    src_leg.unreleased = true;
                    self.dirty.insert(id);
                }
            }
        }
    }

    /// What the peer reported about a stream the host forwards into its leg (a relay's viewer)
    /// goes to the plugin as one receiver report per stats interval: the plugin never sees that
    /// stream's packets, so this is how it learns the viewer's loss. Streams the plugin sends
    /// itself are not reported (their peers' reports shape only what the host sends them).
    fn report_forwarded_loss(&mut self, id: u64, st: &str0m::stats::MediaEgressStats) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        if !leg.fed_by.contains_key(&st.mid) || (st.loss.is_none() && st.remote.is_none()) {
            return;
        }
        let Some(source) = leg
            .rtc
            .direct_api()
            .stream_tx_by_mid(st.mid, None)
            .map(|s| *s.ssrc())
        else {
            return;
        };
        let remote = st.remote.as_ref();
        let report = rtp::ReceptionReport {
            source,
            fraction_lost: st
                .loss
                .map_or(0, |f| (f.clamp(0.0, 1.0) * 256.0).min(255.0) as u8),
            cumulative_lost: remote
                .map_or(0, |r| u32::try_from(r.packets_lost).unwrap_or(u32::MAX)),
            highest_seq: remote.map_or(0, |r| *r.maximum_sequence_number as u32),
            jitter: remote.map_or(0, |r| r.jitter),
        };
        leg.events.rtcp(id, rtp::receiver_report(&report));
    }

    /// Adds what is new in a stream's cumulative NACK and PLI counts to the engine's totals.
    fn rtcp_stats(
        &mut self,
        id: u64,
        key: (Mid, Option<str0m::media::Rid>, bool),
        nacks: u64,
        plis: u64,
    ) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let egress = key.2;
        let seen = leg.rtcp_seen.entry(key).or_default();
        let (new_nacks, new_plis) = (nacks.saturating_sub(seen.0), plis.saturating_sub(seen.1));
        *seen = (nacks.max(seen.0), plis.max(seen.1));
        self.engine.counters().rtcp(egress, new_nacks, new_plis);
    }

    /// Removes a leg and tells its plugin.
    fn remove(&mut self, id: u64, reason: HangupReason) {
        let Some(mut leg) = self.legs.remove(&id) else {
            return;
        };
        if leg.rtc.is_alive() {
            let _ = leg.rtc.close();
            // Flush what closing produced (DTLS close_notify, RTCP BYE) once.
            while let Ok(Output::Transmit(t)) = leg.rtc.poll_output() {
                self.transmit(t.destination, t.contents.into());
            }
        }
        if let Some(d) = leg.deadline {
            self.deadlines.remove(&(d, id));
        }
        self.by_ufrag.remove(&leg.ufrag);
        for a in &leg.addrs {
            self.by_addr.remove(a);
        }
        // Unhook forwards in both directions.
        for (dst_mid, (src, src_mid)) in leg.fed_by.drain() {
            if let Some(t) = self
                .legs
                .get_mut(&src)
                .and_then(|l| l.forwards.get_mut(&src_mid))
            {
                *t = t.iter().copied().filter(|x| *x != (id, dst_mid)).collect();
            }
        }
        for (_, targets) in leg.forwards.drain() {
            for &(dst, dst_mid) in targets.iter() {
                if let Some(l) = self.legs.get_mut(&dst) {
                    l.fed_by.remove(&dst_mid);
                }
            }
        }
        self.engine.forget(id);
        let reason = if leg.closing {
            HangupReason::Normal
        } else {
            reason
        };
        leg.events.hangup(id, reason);
    }

    fn shutdown(&mut self) {
        let ids: Vec<u64> = self.legs.keys().copied().collect();
        for id in ids {
            self.remove(id, HangupReason::Shutdown);
        }
    }
}

/// A packet from a plugin, on stream `mid`: its own sequence numbers, extended.
fn send_plugin_rtp(leg: &mut Leg, mid: Mid, packet: &[u8]) {
    let Some(p) = rtp::parse(packet) else {
        return;
    };
    let kind = leg.rtc.media(mid).map(|m| m.kind());
    let seq = leg.tx.entry(mid).or_default().plugin_seq.extend(p.seq);
    let mut api = leg.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return;
    };
    let write = RtpWrite::new(
        p.pt.into(),
        SeqNo::from(seq),
        p.timestamp,
        Instant::now(),
        p.payload.to_vec(),
    )
    .marker(p.marker)
    .nackable(kind != Some(MediaKind::Audio));
    tx.write_rtp(write);
}

/// Debug builds: opens a copy of each inbound SRTP/SRTCP datagram with our own receive context
/// and counts what opened (`/metrics` has no place for it: [`MediaEngine::srtp_verify`]). After
/// DTLS every packet str0m accepts must open here too; a shortfall means our keys, index
/// estimate or replay window disagree with str0m's.
#[cfg(debug_assertions)]
fn verify_inbound(leg: &mut Leg, bytes: &[u8], counters: &super::MediaCounters) {
    // RFC 7983: RTP and RTCP start with 128..=191; RFC 5761: RTCP's packet type is 192..=223.
    if !bytes.first().is_some_and(|b| (128..=191).contains(b)) {
        return;
    }
    let rtcp = bytes.get(1).is_some_and(|b| (192..=223).contains(b));
    let id = leg.id;
    let Some(srtp) = leg.own_srtp() else {
        return;
    };
    let mut copy = bytes.to_vec();
    let opened = if rtcp {
        srtp.rx.unprotect_rtcp(&mut copy).map(|_| ())
    } else {
        srtp.rx.unprotect_rtp(&mut copy).map(|_| ())
    };
    if let Err(e) = opened {
        tracing::warn!(session = id, rtcp, error = %e, "our SRTP context did not open an inbound packet");
    }
    counters.srtp_verified(rtcp, opened.is_ok());
}

/// The local username fragment of a STUN binding request (`USERNAME = ours:theirs`).
fn stun_ufrag(bytes: &[u8]) -> Option<&str> {
    // STUN: first two bits 0, magic cookie at 4..8 (RFC 5389 §6).
    if bytes.len() < 20 || bytes[0] & 0xc0 != 0 || bytes[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut attrs = &bytes[20..];
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        let padded = (len + 3) & !3;
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::{new_leg, CodecName, LegSettings};
    use str0m::crypto::dtls::SrtpProfile;

    struct Quiet;

    impl MediaEvents for Quiet {
        fn ready(&self, _: u64) {}
        fn rtp(&self, _: u64, _: &str, _: Vec<u8>) {}
        fn rtcp(&self, _: u64, _: Vec<u8>) {}
        fn hangup(&self, _: u64, _: HangupReason) {}
        fn bitrate(&self, _: u64, _: u64) {}
    }

    #[test]
    fn our_srtp_follows_the_key_slot_and_a_rekey_replaces_it() {
        crate::media::install_crypto();
        let now = Instant::now();
        let settings = LegSettings {
            candidate: "127.0.0.1:40000".parse().unwrap(),
            codecs: vec![CodecName::Opus],
            bandwidth_estimation: false,
        };
        let (rtc, ufrag, keys) = new_leg(&settings, now);
        let t = Duration::from_secs(10);
        let mut leg = Leg::new(1, rtc, ufrag, keys.clone(), Arc::new(Quiet), now, t, t);
        assert!(leg.own_srtp().is_none(), "no keys before DTLS");
        keys.put(&[1; 88], SrtpProfile::AEAD_AES_256_GCM, false);
        let first = leg.own_srtp().map(|s| (s.generation, s.profile));
        assert_eq!(
            first,
            Some((1, super::super::srtp::SrtpProfile::AeadAes256Gcm))
        );
        // Read once: the slot is empty now, the contexts stay.
        assert_eq!(leg.own_srtp().map(|s| s.generation), Some(1));
        // A second export: new contexts from the new keys.
        keys.put(&[2; 56], SrtpProfile::AEAD_AES_128_GCM, true);
        let second = leg.own_srtp().map(|s| (s.generation, s.profile));
        assert_eq!(
            second,
            Some((2, super::super::srtp::SrtpProfile::AeadAes128Gcm))
        );
        // Keys we cannot use: the old contexts go too, nothing is left to seal with.
        keys.put(&[3; 10], SrtpProfile::AEAD_AES_128_GCM, true);
        assert!(leg.own_srtp().is_none());
        assert_eq!(keys.generation(), 3);
    }

    #[test]
    fn the_local_ufrag_is_read_from_a_binding_request() {
        let mut m = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
        m.extend([0u8; 12]);
        m.extend([0x00, 0x06, 0x00, 0x09]);
        m.extend(b"abcd:wxyz\0\0\0");
        assert_eq!(stun_ufrag(&m), Some("abcd"));
        assert_eq!(stun_ufrag(&m[..22]), None);
        assert_eq!(stun_ufrag(&[0x80; 40]), None, "RTP is not STUN");
    }
}
